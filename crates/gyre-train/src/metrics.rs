//! Run bookkeeping: the `metrics.jsonl` log (one JSON object per logged step and per evaluation),
//! peak memory, and UTC timestamps for run names.

use gyre_kernels::{Result, Tensor};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// Appends JSON lines to a file, flushing each so a killed run keeps its log.
pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        })
    }

    pub fn write(&mut self, v: &Value) -> std::io::Result<()> {
        writeln!(self.file, "{v}")?;
        self.file.flush()
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// The collapse gauge of lightly and solo-learn: the standard deviation over the batch (`n − 1`
/// in the denominator) of the L2-normalised embeddings `z: [B, D]`, averaged over the `D`
/// dimensions. About `1/√D` for embeddings spread over the sphere, 0 when every row is the same
/// vector (a collapsed representation).
pub fn embedding_std(z: &Tensor) -> Result<f64> {
    let z = gyre_losses::l2_normalize(&z.detach())?;
    let b = z.dim(0)?;
    if b < 2 {
        return Ok(0.0);
    }
    let centred = z.broadcast_sub(&z.mean_keepdim(0)?)?;
    let var = (centred.sqr()?.sum(0)? / (b - 1) as f64)?;
    Ok(var.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64)
}

/// `YYYYmmdd-HHMMSS` in UTC for the current time.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    stamp_of(secs)
}

fn stamp_of(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use gyre_kernels::{Device, Tensor};

    #[test]
    fn embedding_std_closed_forms() -> gyre_kernels::Result<()> {
        let dev = Device::Cpu;
        // Two orthogonal rows: each column is (1, 0) or (0, 1), std (n − 1) = √0.5.
        let z = Tensor::new(&[[3f32, 0.0], [0.0, 0.5]], &dev)?;
        assert!((super::embedding_std(&z)? - 0.5f64.sqrt()).abs() < 1e-6);
        // The same direction at different lengths: collapsed, 0.
        let z = Tensor::new(&[[1f32, 2.0], [2.0, 4.0], [0.5, 1.0]], &dev)?;
        assert!(super::embedding_std(&z)?.abs() < 1e-6);
        // ±e1, ±e2: columns (1, −1, 0, 0) and (0, 0, 1, −1), std = √(2/3).
        let z = Tensor::new(&[[1f32, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], &dev)?;
        assert!((super::embedding_std(&z)? - (2.0f64 / 3.0).sqrt()).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn stamps() {
        assert_eq!(super::stamp_of(0), "19700101-000000");
        assert_eq!(super::stamp_of(1_795_000_000), "20261118-110640");
        assert!(super::peak_rss_mb() > 0.0);
    }
}
