//! Where the tensor contracts run: the CPU in f64 (the default, and the reference every claim
//! is measured against), or a device (CUDA, Metal) in f32 (Metal has no f64). On a device the
//! same contracts run with the plugins' tensors there, and each tolerance comes from the
//! dtype's epsilon; the truths they are compared with (closed forms, the RK4 reference, the
//! SW2 floors) are computed on the host in f64. Convergence orders are fitted on the host's
//! f64 error curves, and the target's curves must equal them up to rounding (N ε per step
//! count N). The SDE and weighting contracts are scalar f64 arithmetic on the host wherever
//! the run is.

use candle_core::{DType, Device, Tensor};
use sdeflow_kernel::Result;

/// A device and the dtype the plugins' tensors take there.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where the plugins' tensors live.
    pub device: Device,
    /// Their dtype.
    pub dtype: DType,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F64,
        }
    }
}

impl Target {
    /// `dtype` on `device`.
    pub fn new(device: Device, dtype: DType) -> Self {
        Self { device, dtype }
    }

    /// The CPU in f64: where every tolerance of the suite was set.
    pub fn is_reference(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F64
    }

    /// "cpu f64", "cuda f32", …
    pub fn label(&self) -> String {
        let device = match &self.device {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            Device::Metal(_) => "metal",
        };
        format!("{device} {}", self.dtype.as_str())
    }

    /// The dtype's machine epsilon.
    pub fn epsilon(&self) -> f64 {
        match self.dtype {
            DType::F64 => f64::EPSILON,
            DType::F32 => f32::EPSILON as f64,
            DType::F16 => 9.765_625e-4,
            DType::BF16 => 7.812_5e-3,
            _ => f64::EPSILON,
        }
    }

    /// A tolerance: `f64_tol` on the reference target, else `eps_units` epsilons of the dtype
    /// (but never tighter than the f64 one).
    pub fn tol(&self, f64_tol: f64, eps_units: f64) -> f64 {
        if self.dtype == DType::F64 {
            f64_tol
        } else {
            (eps_units * self.epsilon()).max(f64_tol)
        }
    }

    /// A host tensor moved to the target's device and dtype.
    pub fn put(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// A tensor brought back to the host in f64.
    pub fn host(t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?)
    }
}
