//! Device choice from a user string: `cpu`, `cuda`, `cuda:N`, `metal`, or `auto`.

use candle_core::Device;

/// A device string that cannot be honoured by this build or machine.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}': expected cpu, cuda, cuda:N, metal or auto")]
    Unknown(String),
    #[error("device '{0}' needs a build with the `{1}` feature (this binary has CPU only)")]
    NotBuilt(String, &'static str),
    #[error(
        "device '{spec}': the CUDA library {missing} could not be loaded (searched the system \
         library path and LD_LIBRARY_PATH): install the NVIDIA driver and the CUDA 13 libraries, \
         or add their folder to LD_LIBRARY_PATH"
    )]
    NoCudaLibrary { spec: String, missing: String },
    #[error("device '{spec}' could not be opened: {reason}")]
    Failed { spec: String, reason: String },
    #[error("device '{spec}' could not be opened: {source}")]
    Open {
        spec: String,
        #[source]
        source: candle_core::Error,
    },
}

/// A device string, parsed without opening anything (recipes are checked with this).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// CUDA, then Metal, then the CPU.
    Auto,
    Metal,
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let spec = s.trim().to_ascii_lowercase();
        match spec.as_str() {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "metal" => Ok(Self::Metal),
            "cuda" => Ok(Self::Cuda(0)),
            s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(DeviceError::Unknown(spec)),
            },
        }
    }
}

/// Parses a device string and opens the device. `auto` picks CUDA, then Metal, then the CPU.
pub fn select_device(spec: &str) -> Result<Device, DeviceError> {
    let parsed: DeviceSpec = spec.parse()?;
    let spec = spec.trim().to_ascii_lowercase();
    match parsed {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = open_cuda("auto", 0) {
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
        DeviceSpec::Metal => {
            if !candle_core::utils::metal_is_available() {
                return Err(DeviceError::NotBuilt(spec, "metal"));
            }
            Device::new_metal(0).map_err(|e| DeviceError::Open {
                spec,
                source: without_backtrace(e),
            })
        }
        DeviceSpec::Cuda(ordinal) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(DeviceError::NotBuilt(spec, "cuda"));
            }
            open_cuda(&spec, ordinal)
        }
    }
}

/// Opens CUDA device `ordinal`. A binary from `cargo xtask cuda-build` loads the CUDA libraries on
/// first use (so that it also runs on machines without them); the loader panics when a library is
/// missing, so the libraries are looked for first and a missing one is a [`DeviceError`].
fn open_cuda(spec: &str, ordinal: usize) -> Result<Device, DeviceError> {
    if let Some(missing) = missing_cuda_library() {
        return Err(DeviceError::NoCudaLibrary {
            spec: spec.into(),
            missing,
        });
    }
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(r) => r.map_err(|e| DeviceError::Open {
            spec: spec.into(),
            source: without_backtrace(e),
        }),
        Err(p) => Err(DeviceError::Failed {
            spec: spec.into(),
            reason: p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA loader panicked".into()),
        }),
    }
}

/// The error without the backtrace candle attaches under `RUST_BACKTRACE` (a device that does not
/// open is the user's setup, reported in one line).
fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        e => e,
    }
}

/// The first CUDA library that candle needs to open a device (driver, cuBLAS, cuBLASLt, cuRAND,
/// and cuDNN in a `cudnn` build) and that cannot be loaded, by the names cudarc's loader tries.
#[cfg(all(feature = "cuda", unix))]
fn missing_cuda_library() -> Option<String> {
    let mut libs = vec!["cuda", "cublas", "cublasLt", "curand"];
    if cfg!(feature = "cudnn") {
        libs.push("cudnn");
    }
    libs.into_iter()
        .find(|lib| {
            let names =
                ["", ".1", ".13", ".12", ".11", ".10", ".9"].map(|v| format!("lib{lib}.so{v}"));
            !names.iter().any(|n| loadable(n))
        })
        .map(|lib| format!("lib{lib}.so"))
}

#[cfg(not(all(feature = "cuda", unix)))]
fn missing_cuda_library() -> Option<String> {
    None
}

/// Whether the dynamic loader finds and loads the shared library `name`.
#[cfg(all(feature = "cuda", unix))]
fn loadable(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: dlopen with a valid C string; the handle is closed at once. Loading runs the
    // library's initialisers, which the CUDA libraries keep free of side effects until used.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if h.is_null() {
            return false;
        }
        libc::dlclose(h);
    }
    true
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
    fn parses_specs_without_opening() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(
            " CUDA:3".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(3)
        );
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert!("cuda:".parse::<DeviceSpec>().is_err());
        assert!("cuda:-1".parse::<DeviceSpec>().is_err());
        assert!("gpu".parse::<DeviceSpec>().is_err());
    }

    /// A CUDA build on a machine without a GPU or without the CUDA libraries: a clear error that
    /// names the device, never a panic (the binary of `cargo xtask cuda-build` in CPU mode).
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_gpu_is_an_error_not_a_panic() {
        if let Err(e) = select_device("cuda:0") {
            let e = e.to_string();
            assert!(e.starts_with("device 'cuda:0'"), "{e}");
        }
        // auto never fails: it falls back to the CPU.
        assert!(select_device("auto").is_ok());
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
