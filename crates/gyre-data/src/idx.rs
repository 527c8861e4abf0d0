//! Reader for the IDX format of MNIST and Fashion-MNIST (raw or gzip): a big-endian header
//! `0x00 0x00 <type> <ndim>`, `ndim` u32 sizes, then the data row-major.

use crate::error::DataError;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// A decoded u8 IDX array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type 0x08), gzip-compressed or not.
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let raw =
        std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    parse_idx(&raw, path)
}

/// Parses IDX bytes; `path` is only used in error messages.
pub fn parse_idx(raw: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let bytes: std::borrow::Cow<[u8]> = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw)
            .read_to_end(&mut out)
            .map_err(|e| DataError::file(path, format!("corrupt or truncated gzip stream: {e}")))?;
        out.into()
    } else {
        raw.into()
    };
    if bytes.len() < 4 {
        return Err(DataError::file(
            path,
            format!("too short for an IDX header ({} bytes)", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::file(
            path,
            format!(
                "wrong magic number 0x{:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::file(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err(DataError::file(path, "IDX header declares zero dimensions"));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::file(
            path,
            format!(
                "truncated header: {ndim} dimensions need {header} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::file(path, "dimensions overflow"))?;
    let have = bytes.len() - header;
    if have != n {
        let what = if have < n {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(DataError::file(
            path,
            format!("{what}: dimensions {dims:?} need {n} data bytes, found {have}"),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_raw_and_gzip() {
        let raw = idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let p = Path::new("x.idx");
        let a = parse_idx(&raw, p).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&raw).unwrap();
        assert_eq!(parse_idx(&enc.finish().unwrap(), p).unwrap(), a);
    }

    #[test]
    fn errors_name_the_file_and_problem() {
        let p = Path::new("data/t10k-images-idx3-ubyte");
        let e = parse_idx(&idx(&[2, 3], &[0; 5]), p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "data/t10k-images-idx3-ubyte: truncated: dimensions [2, 3] need 6 data bytes, found 5"
        );
        let mut bad = idx(&[1], &[0]);
        bad[0] = 0x50;
        let e = parse_idx(&bad, p).unwrap_err().to_string();
        assert!(e.contains("wrong magic number 0x5000"), "{e}");
        let e = parse_idx(&[0x1f, 0x8b, 8, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("corrupt or truncated gzip"), "{e}");
        let e = parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("element type 0x0d"), "{e}");
    }
}
