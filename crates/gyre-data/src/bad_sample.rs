//! What a loader does with a sample it cannot use (a corrupt or truncated file, a non-image, an
//! empty class folder, an image with the wrong channel count): the recipe's
//! `data.on_bad_sample` decides between stopping and skipping, and skipped samples are counted
//! and reported by path. [`LoadReport`] adds what a load converted or warns about.

use crate::error::DataError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The recipe's choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadSample {
    /// Stop with the file's path and the reason.
    #[default]
    Fail,
    /// Go on without it; the count and the first paths go into the run summary.
    Skip,
}

/// Paths reported in full; the rest are counted.
pub const REPORTED: usize = 5;

/// Skipped samples of one load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BadSamples {
    pub count: usize,
    /// `path: reason` of the first [`REPORTED`] ones.
    pub first: Vec<String>,
}

impl BadSamples {
    /// Applies `policy` to one bad sample: an error under `Fail`, a count under `Skip`.
    pub fn handle(
        &mut self,
        policy: OnBadSample,
        path: &Path,
        reason: impl Into<String>,
    ) -> Result<(), DataError> {
        let reason = reason.into();
        match policy {
            OnBadSample::Fail => Err(DataError::file(path, reason)),
            OnBadSample::Skip => {
                self.count += 1;
                if self.first.len() < REPORTED {
                    self.first.push(format!("{}: {reason}", path.display()));
                }
                Ok(())
            }
        }
    }

    /// Adds another load's report.
    pub fn merge(&mut self, other: BadSamples) {
        self.count += other.count;
        for f in other.first {
            if self.first.len() < REPORTED {
                self.first.push(f);
            }
        }
    }
}

/// Everything a load reports besides its images: what it skipped, what it converted, and
/// warnings (each names what it is about); the run summary carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoadReport {
    pub bad_samples: BadSamples,
    /// Grey images converted to RGB because the dataset is RGB (torchvision's loader does the
    /// same), and the first paths.
    pub grey_to_rgb: usize,
    pub grey_to_rgb_first: Vec<String>,
    pub warnings: Vec<String>,
}

impl LoadReport {
    /// A report of skipped samples only.
    pub fn from_bad(bad_samples: BadSamples) -> Self {
        Self {
            bad_samples,
            ..Self::default()
        }
    }

    /// Counts one grey image converted to RGB.
    pub fn converted(&mut self, path: &Path) {
        self.grey_to_rgb += 1;
        if self.grey_to_rgb_first.len() < REPORTED {
            self.grey_to_rgb_first.push(path.display().to_string());
        }
    }

    /// Adds another load's report.
    pub fn merge(&mut self, other: LoadReport) {
        self.bad_samples.merge(other.bad_samples);
        self.grey_to_rgb += other.grey_to_rgb;
        for f in other.grey_to_rgb_first {
            if self.grey_to_rgb_first.len() < REPORTED {
                self.grey_to_rgb_first.push(f);
            }
        }
        self.warnings.extend(other.warnings);
    }
}
