//! Weights on disk: safetensors with torchvision key names, written to a temp file and renamed so a
//! crash never leaves a half-written file, and loaded only when every name, shape and dtype matches.

use crate::error::EncoderError;
use crate::params::ParamStore;
use gyre_kernels::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

fn werr(path: &Path, problem: impl Into<String>) -> EncoderError {
    EncoderError::Weights {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

/// Writes named tensors to `path` atomically (temp file in the same folder, fsync, rename).
pub fn save_tensors_atomic(
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), EncoderError> {
    let tmp = path.with_extension("safetensors.tmp");
    gyre_kernels::candle::safetensors::save(tensors, &tmp)
        .map_err(|e| werr(&tmp, e.to_string()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| werr(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| werr(path, format!("rename from {}: {e}", tmp.display())))?;
    Ok(())
}

/// The store's tensors keyed `prefix + name` (prefix may be empty).
pub fn named_tensors(store: &ParamStore, prefix: &str) -> HashMap<String, Tensor> {
    store
        .all()
        .iter()
        .map(|p| (format!("{prefix}{}", p.name), p.var.as_tensor().clone()))
        .collect()
}

/// Reads a safetensors file (never a pickle).
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, EncoderError> {
    if !path.is_file() {
        return Err(werr(path, "no such file"));
    }
    gyre_kernels::candle::safetensors::load(path, device)
        .map_err(|e| werr(path, format!("not a readable safetensors file: {e}")))
}

/// Copies `tensors[prefix + name]` into every entry of `store`. Refuses, naming the first
/// mismatch, a missing name, a wrong shape or a wrong dtype; extra tensors under `prefix` are an
/// error too (a file for another architecture).
pub fn load_into(
    store: &ParamStore,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<(), EncoderError> {
    for p in store.all() {
        let key = format!("{prefix}{}", p.name);
        let t = tensors
            .get(&key)
            .ok_or_else(|| werr(path, format!("tensor '{key}' is missing")))?;
        if t.dims() != p.var.dims() {
            return Err(werr(
                path,
                format!(
                    "tensor '{key}' has shape {:?}, the model needs {:?}",
                    t.dims(),
                    p.var.dims()
                ),
            ));
        }
        if t.dtype() != p.var.dtype() {
            return Err(werr(
                path,
                format!(
                    "tensor '{key}' has dtype {:?}, the model needs {:?}",
                    t.dtype(),
                    p.var.dtype()
                ),
            ));
        }
    }
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| k.starts_with(prefix) && store.get(&k[prefix.len()..]).is_none())
        .collect();
    extra.sort();
    if let Some(k) = extra.first() {
        return Err(werr(
            path,
            format!(
                "tensor '{k}' is not part of this model ({} unexpected)",
                extra.len()
            ),
        ));
    }
    for p in store.all() {
        let t = &tensors[&format!("{prefix}{}", p.name)];
        p.var
            .set(&t.to_device(p.var.device()).map_err(EncoderError::Tensor)?)
            .map_err(EncoderError::Tensor)?;
    }
    Ok(())
}

/// Loads a torchvision `ResNet` state dict into a backbone: like [`load_into`] with no prefix,
/// but the classifier (`fc.weight`, `fc.bias`) is dropped, since a backbone has none.
pub fn load_torchvision(
    store: &ParamStore,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), EncoderError> {
    let body: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("fc."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    load_into(store, &body, "", path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resnet::{ResNet, ResNetConfig};

    #[test]
    fn round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("gyre-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let a = ResNet::new(
            ResNetConfig::preset("resnet-mini", 1).unwrap(),
            1,
            &Device::Cpu,
        )
        .unwrap();
        let b = ResNet::new(
            ResNetConfig::preset("resnet-mini", 1).unwrap(),
            2,
            &Device::Cpu,
        )
        .unwrap();
        save_tensors_atomic(&named_tensors(a.params(), ""), &path).unwrap();
        assert!(!path.with_extension("safetensors.tmp").exists());
        let t = read_tensors(&path, &Device::Cpu).unwrap();
        load_into(b.params(), &t, "", &path).unwrap();
        let wa = a
            .params()
            .get("layer3.0.conv2.weight")
            .unwrap()
            .var
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let wb = b
            .params()
            .get("layer3.0.conv2.weight")
            .unwrap()
            .var
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(wa, wb);

        // A 3-channel model refuses the 1-channel file, naming the tensor and both shapes.
        let c = ResNet::new(
            ResNetConfig::preset("resnet-mini", 3).unwrap(),
            2,
            &Device::Cpu,
        )
        .unwrap();
        let e = load_into(c.params(), &t, "", &path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'conv1.weight' has shape [32, 1, 3, 3], the model needs [32, 3, 3, 3]"),
            "{e}"
        );
        // A missing tensor and an unexpected one.
        let mut t2 = t.clone();
        t2.remove("layer4.0.bn2.bias");
        let e = load_into(b.params(), &t2, "", &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'layer4.0.bn2.bias' is missing"), "{e}");
        let mut t3 = t.clone();
        t3.insert(
            "fc.weight".into(),
            Tensor::zeros((2, 2), gyre_kernels::DType::F32, &Device::Cpu).unwrap(),
        );
        let e = load_into(b.params(), &t3, "", &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'fc.weight' is not part of this model"), "{e}");
        let e = read_tensors(&dir.join("nope.safetensors"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.safetensors: no such file"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
