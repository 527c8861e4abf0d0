//! What a loader does with a sample it cannot use (a corrupt or truncated file, a non-image, an
//! empty class folder, an image with the wrong channel count): the recipe's
//! `data.on_bad_sample` decides between stopping and skipping, and skipped samples are counted
//! and reported by path.

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
