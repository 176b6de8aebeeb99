//! Devices: `cuda` and `metal` are cargo features of this crate, forwarded to candle. Asking
//! for a device whose feature is off is an error saying which feature to enable.

use candle_core::Device;
use sdeflow_kernel::{DeviceSpec, Error, Result};

/// The candle device for `spec`.
pub fn resolve(spec: DeviceSpec) -> Result<Device> {
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => cuda(n),
        DeviceSpec::Metal(n) => metal(n),
    }
}

#[cfg(not(all(feature = "cuda", feature = "metal")))]
fn feature_off(spec: &str, feature: &str) -> Error {
    Error::invalid(
        "device",
        "device",
        format!(
            "`{spec}` needs sdeflow built with the `{feature}` feature \
             (cargo run --release -p sdeflow-cli --features {feature} -- ...); this build has only `cpu`"
        ),
    )
}

#[cfg(feature = "cuda")]
fn cuda(n: usize) -> Result<Device> {
    Ok(Device::new_cuda(n)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda(n: usize) -> Result<Device> {
    Err(feature_off(&format!("cuda({n})"), "cuda"))
}

#[cfg(feature = "metal")]
fn metal(n: usize) -> Result<Device> {
    Ok(Device::new_metal(n)?)
}

#[cfg(not(feature = "metal"))]
fn metal(n: usize) -> Result<Device> {
    Err(feature_off(&format!("metal({n})"), "metal"))
}
