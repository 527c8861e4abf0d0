//! Device choice from a user string: `cpu`, `cuda`, `cuda:N`, `metal`, or `auto`.

use candle_core::Device;

/// A device string that cannot be honoured by this build or machine.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}': expected cpu, cuda, cuda:N, metal or auto")]
    Unknown(String),
    #[error("device '{0}' needs a build with the `{1}` feature (this binary has CPU only)")]
    NotBuilt(String, &'static str),
    #[error("device '{spec}' could not be opened: {source}")]
    Open {
        spec: String,
        #[source]
        source: candle_core::Error,
    },
}

/// Parses a device string and opens the device. `auto` picks CUDA, then Metal, then the CPU.
pub fn select_device(spec: &str) -> Result<Device, DeviceError> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                return Err(DeviceError::NotBuilt(spec, "metal"));
            }
            Device::new_metal(0).map_err(|source| DeviceError::Open { spec, source })
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| DeviceError::Unknown(spec.clone()))?,
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(DeviceError::NotBuilt(spec, "cuda"));
            }
            Device::new_cuda(ordinal).map_err(|source| DeviceError::Open { spec, source })
        }
        _ => Err(DeviceError::Unknown(spec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_auto() {
        assert!(select_device("cpu").unwrap().is_cpu());
        assert!(select_device(" CPU ").unwrap().is_cpu());
        // This build has no GPU feature in CI, so auto falls back to the CPU.
        if !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available() {
            assert!(select_device("auto").unwrap().is_cpu());
        }
    }

    #[test]
    fn rejects_unknown_and_unbuilt() {
        let e = select_device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device 'tpu'"), "{e}");
        assert!(select_device("cuda:x").is_err());
        if !candle_core::utils::cuda_is_available() {
            let e = select_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("`cuda` feature"), "{e}");
        }
    }
}
