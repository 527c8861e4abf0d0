//! `gyre embed`: a run's backbone features of every image of a split, with labels, for use
//! elsewhere: `<out>.safetensors` (`features` f32 `[n, d]`, `labels` u32 `[n]`) and NumPy's
//! `<out>.features.npy` / `<out>.labels.npy` (format 1.0, little-endian; written here because the
//! format is a 10-line header and a crate would add more than it saves).

use anyhow::Context;
use gyre_kernels::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The bytes of a `.npy` file holding `data` (little-endian) of `shape`; `descr` is NumPy's dtype
/// string (`<f4`, `<u4`).
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    let used = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - used % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

/// Writes features `[n, dim]` and labels to `<out>.safetensors` and the two `.npy` files.
pub fn write_embeddings(
    out: &Path,
    features: &[f32],
    labels: &[u32],
    dim: usize,
) -> anyhow::Result<()> {
    let n = labels.len();
    let mut t = HashMap::new();
    t.insert(
        "features".to_string(),
        Tensor::from_slice(features, (n, dim), &Device::Cpu)?,
    );
    t.insert(
        "labels".to_string(),
        Tensor::from_slice(labels, n, &Device::Cpu)?,
    );
    let st = out.with_extension("safetensors");
    gyre_encoders::weights::save_tensors_atomic(&t, &st)?;
    let fb: Vec<u8> = features.iter().flat_map(|x| x.to_le_bytes()).collect();
    let lb: Vec<u8> = labels.iter().flat_map(|x| x.to_le_bytes()).collect();
    for (suffix, bytes) in [
        ("features.npy", npy_bytes("<f4", &[n, dim], &fb)),
        ("labels.npy", npy_bytes("<u4", &[n], &lb)),
    ] {
        let p = out.with_extension(suffix);
        std::fs::write(&p, bytes).with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_exact() {
        let b = npy_bytes("<u4", &[3], &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.starts_with("{'descr': '<u4', 'fortran_order': False, 'shape': (3,), }"));
        assert!(header.ends_with('\n'));
        assert_eq!(b.len(), 10 + hlen + 12);
        let h2 = npy_bytes("<f4", &[2, 5], &[0; 40]);
        assert!(std::str::from_utf8(&h2[10..80])
            .unwrap()
            .contains("'shape': (2, 5)"));
    }
}
