//! Learning-rate schedules, per iteration: linear warm-up from 0, then cosine to a final value.

use serde::{Deserialize, Serialize};

/// Shape of the decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Cosine,
    Constant,
}

/// A per-iteration schedule (ReSSL / ReCo `adjust_learning_rate` semantics).
#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    pub base: f64,
    pub final_lr: f64,
    pub warmup_iters: u64,
    pub total_iters: u64,
    pub decay: Decay,
}

impl LrSchedule {
    /// Learning rate at iteration `it` (0-based).
    pub fn at(&self, it: u64) -> f64 {
        if it < self.warmup_iters {
            return self.base * it as f64 / self.warmup_iters as f64;
        }
        match self.decay {
            Decay::Constant => self.base,
            Decay::Cosine => {
                let span = self.total_iters.saturating_sub(self.warmup_iters).max(1) as f64;
                let t = ((it - self.warmup_iters) as f64 / span).min(1.0);
                self.final_lr
                    + (self.base - self.final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tv14_warmup_then_cosine() {
        // docs/spec/test-vectors.md TV14: base 0.05, 200 epochs, 5 warm-up epochs, 100 iterations
        // per epoch.
        let s = LrSchedule {
            base: 0.05,
            final_lr: 0.0,
            warmup_iters: 500,
            total_iters: 20_000,
            decay: Decay::Cosine,
        };
        assert!((s.at(250) - 0.025).abs() < 1e-12);
        assert!((s.at(500) - 0.05).abs() < 1e-12);
        assert!((s.at(10_250) - 0.025).abs() < 1e-12);
        assert!(
            s.at(19_999) < 1e-9 && s.at(19_999) > 0.0,
            "{}",
            s.at(19_999)
        );
        assert!((s.at(19_999) - 3.2e-10).abs() < 1e-11);
    }

    #[test]
    fn no_warmup_starts_at_base() {
        let s = LrSchedule {
            base: 0.06,
            final_lr: 0.0,
            warmup_iters: 0,
            total_iters: 100,
            decay: Decay::Cosine,
        };
        assert_eq!(s.at(0), 0.06);
        assert!((s.at(50) - 0.03).abs() < 1e-12);
    }
}
