//! VICReg (Bardes et al., ICLR 2022): one encoder and expander for both views; the invariance
//! (MSE), variance (a hinge on each dimension's standard deviation) and covariance (off-diagonal)
//! terms of [`vicreg_loss`], weighted 25 / 25 / 1. Each view is its own forward pass. The paper's
//! expander is three layers of 8192 with BatchNorm and ReLU between (`[head] layers = 3`); the
//! recipes scale it to the small images. The step logs the three unweighted terms.
//!
//! As the IRC pair: both views' features; the memory keeps the view-2 projections (detached),
//! and an auto-paired positive is one more invariance term, `λ mean((z1_p − z+_p)²)` over the
//! paired rows (the variance and covariance terms are the batch's, already in the loss).

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::step::{PairHooks, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore};
use gyre_kernels::{Result, Tensor};
use gyre_losses::{vicreg_loss, VicRegWeights};
use serde::{Deserialize, Serialize};

/// `[method] name = "vicreg"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VicRegSettings {
    /// λ, on the invariance term (solo-learn's `sim_loss_weight`, lightly's `lambda_param`).
    pub invariance_weight: f64,
    /// μ, on the variance term (`var_loss_weight`, `mu_param`).
    pub variance_weight: f64,
    /// ν, on the covariance term (`cov_loss_weight`, `nu_param`).
    pub covariance_weight: f64,
    /// γ, the standard deviation asked of each dimension.
    pub gamma: f64,
}

impl Default for VicRegSettings {
    fn default() -> Self {
        let w = VicRegWeights::default();
        Self {
            invariance_weight: w.invariance,
            variance_weight: w.variance,
            covariance_weight: w.covariance,
            gamma: w.gamma,
        }
    }
}

impl VicRegSettings {
    fn weights(&self) -> VicRegWeights {
        VicRegWeights {
            invariance: self.invariance_weight,
            variance: self.variance_weight,
            covariance: self.covariance_weight,
            gamma: self.gamma,
        }
    }
}

impl MethodSettings for VicRegSettings {
    const NAME: &'static str = "vicreg";

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::non_negative("invariance_weight", self.invariance_weight)?;
        check::non_negative("variance_weight", self.variance_weight)?;
        check::non_negative("covariance_weight", self.covariance_weight)?;
        check::positive("gamma", self.gamma)?;
        if env.batch_size < 2 {
            return Err(SettingsError::new(
                "name",
                format!(
                    "vicreg's variance and covariance are over the batch: train.batch_size must be ≥ 2, got {}",
                    env.batch_size
                ),
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(VicReg {
            online: Online::new(ctx)?,
            weights: self.weights(),
        }))
    }
}

pub struct VicReg {
    /// The backbone and expander (the `[head]` projector).
    online: Online,
    weights: VicRegWeights,
}

impl Method for VicReg {
    fn name(&self) -> &'static str {
        VicRegSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.online.params
    }

    fn backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, _ctx: StepContext) -> Result<StepOutput> {
        let ([f1, f2], [z1, z2]) = self.online.each_view(views)?;
        let t = vicreg_loss(&z1, &z2, self.weights)?;
        let logs = vec![
            ("invariance_loss", t.invariance.to_scalar::<f32>()? as f64),
            ("variance_loss", t.variance.to_scalar::<f32>()? as f64),
            ("covariance_loss", t.covariance.to_scalar::<f32>()? as f64),
        ];
        let (q, lambda) = (z1.clone(), self.weights.invariance);
        Ok(StepOutput {
            loss: t.loss,
            logs,
            embeddings: z1,
            pair: Some(PairHooks {
                view1: f1,
                view2: f2,
                view2_index: 1,
                base_v2: z2.detach(),
                keep_base_scale: true,
                pair_loss: Box::new(move |p| {
                    (p.queries(&q)? - &p.positives)?.sqr()?.mean_all()? * lambda
                }),
                dense: None,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{step_and_own_pair_loss, Fixture};

    /// The loss is its logged terms weighted; every row paired with its own view-2 projection
    /// gives λ times the logged invariance term.
    #[test]
    fn the_loss_is_its_weighted_terms_and_pairs_add_invariance() -> anyhow::Result<()> {
        let s = VicRegSettings {
            invariance_weight: 3.0,
            variance_weight: 5.0,
            covariance_weight: 7.0,
            gamma: 1.0,
        };
        let (out, got) = step_and_own_pair_loss(&s, &Fixture::new(16), 5)?;
        let loss = out.loss.to_scalar::<f32>()? as f64;
        let term = |k: &str| out.logs.iter().find(|(n, _)| *n == k).unwrap().1;
        let [inv, var, cov] = ["invariance_loss", "variance_loss", "covariance_loss"].map(term);
        assert!(inv > 0.0 && var > 0.0 && cov > 0.0, "{:?}", out.logs);
        let want = 3.0 * inv + 5.0 * var + 7.0 * cov;
        assert!((loss - want).abs() <= 1e-5 * want, "{loss} vs {want}");
        assert!((got - 3.0 * inv).abs() <= 1e-5 * got, "{got} vs λ·{inv}");
        Ok(())
    }
}
