//! The variables' source: a `candle_nn` [`SimpleBackend`] that draws each variable the first
//! time a constructor asks for it, from Philox under `Stream::Init`, so that candle-nn's and
//! candle-transformers' constructors build the network and the same seed gives the same
//! weights on every machine, or hands out the stored variables detached (the frozen copy).

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::{
    Init, VarMap,
    init::NormalOrUniform,
    var_builder::{SimpleBackend, VarBuilder},
};
use sdeflow_kernel::noise::{Stream, fill_uniforms, philox_key};

/// A stable 64-bit hash of a variable's path (FNV-1a): the Philox sample index of its draws.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `n` uniforms on (0, 1): indices 0 … n − 1 of sample `sample` under `key`.
fn uniforms(key: [u32; 2], sample: u64, n: usize) -> Vec<f64> {
    let mut u = vec![0.0; n];
    fill_uniforms(key, sample, 0, &mut u);
    u
}

/// `n` standard normals by Box–Muller from uniforms 2j and 2j + 1 (cosine, then sine).
fn normals(key: [u32; 2], sample: u64, n: usize) -> Vec<f64> {
    uniforms(key, sample, n + n % 2)
        .chunks_exact(2)
        .flat_map(|p| {
            let r = (-2.0 * p[0].ln()).sqrt();
            let (s, c) = (std::f64::consts::TAU * p[1]).sin_cos();
            [r * c, r * s]
        })
        .take(n)
        .collect()
}

/// The values of a variable of `shape` named `name` under `init` (candle-nn's meaning of each
/// [`Init`], which is PyTorch's), in f64.
pub(crate) fn draw(key: [u32; 2], name: &str, shape: &Shape, init: Init) -> Vec<f64> {
    let (n, sample) = (shape.elem_count(), name_hash(name));
    let scaled = |u: Vec<f64>, a: f64, b: f64| u.into_iter().map(|v| a + b * v).collect();
    match init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => scaled(uniforms(key, sample, n), lo, up - lo),
        Init::Randn { mean, stdev } => scaled(normals(key, sample, n), mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    scaled(uniforms(key, sample, n), -bound, 2.0 * bound)
                }
                NormalOrUniform::Normal => scaled(normals(key, sample, n), 0.0, std),
            }
        }
    }
}

/// The variables' source: with a key, it draws a missing variable from Philox (key of `seed`,
/// `Stream::Init`; sample index the hash of its path), registers it in the map and returns
/// the stored ones as they are; without one (the frozen copy) it hands out the stored
/// variables detached from autograd, sharing their storage.
struct Store {
    varmap: VarMap,
    draw: Option<[u32; 2]>,
}

impl SimpleBackend for Store {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let poisoned = || candle_core::Error::Msg("unet: variable map poisoned".into());
        let mut data = self.varmap.data().lock().map_err(|_| poisoned())?;
        match (data.get(name), self.draw) {
            (Some(v), _) if v.shape() != &s => candle_core::bail!(
                "unet: variable {name} has shape {:?}, the network asks for {s:?}",
                v.shape()
            ),
            (Some(v), Some(_)) => Ok(v.as_tensor().clone()),
            (Some(v), None) => Ok(v.as_tensor().detach()),
            (None, Some(key)) => {
                let values = draw(key, name, &s, h);
                let t = Tensor::from_vec(values, s, &Device::Cpu)?
                    .to_dtype(dtype)?
                    .to_device(dev)?;
                let var = Var::from_tensor(&t)?;
                let t = var.as_tensor().clone();
                data.insert(name.to_string(), var);
                Ok(t)
            }
            (None, None) => {
                candle_core::bail!("unet: the frozen copy asks for {name}, which is not stored")
            }
        }
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("unet: variable {name} asked for without a shape")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .is_ok_and(|d| d.contains_key(name))
    }
}

/// A builder that draws every variable it is asked for from `seed` into `varmap`.
pub(crate) fn seeded(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> VarBuilder<'static> {
    let backend = Store {
        varmap: varmap.clone(),
        draw: Some(philox_key(seed, Stream::Init)),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, dev.clone())
}

/// A builder that hands out `varmap`'s variables detached.
pub(crate) fn detached(varmap: &VarMap, dtype: DType, dev: &Device) -> VarBuilder<'static> {
    let backend = Store {
        varmap: varmap.clone(),
        draw: None,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, dev.clone())
}
