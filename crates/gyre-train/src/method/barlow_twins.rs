//! Barlow Twins (Zbontar et al., ICML 2021): one encoder and projector for both views, the
//! cross-correlation of their batch-standardised projections driven to the identity
//! ([`barlow_twins_loss`]); no negatives, no predictor, no momentum encoder. Each view is its own
//! forward pass (its own BatchNorm statistics, as the reference's two calls). The paper's
//! projector is three layers of 8192 with BatchNorm and ReLU between (`[head] layers = 3`); the
//! recipes scale it to the small images, and train with LARS as the paper.
//!
//! As the IRC pair: both views' features; the memory keeps the view-2 projections standardised
//! with their batch's statistics (detached), and an auto-paired positive is one more term of the
//! loss's diagonal: `Σ_j (1 − mean_p z̃1_pj z̃+_pj)²` over the paired rows, `z̃1` standardised
//! with this batch's statistics — the invariance half of the objective on the extra pairs.

use super::{check, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError};
use crate::step::{PairHooks, StepContext, StepOutput};
use gyre_data::Batch;
use gyre_encoders::{Backbone, ParamStore};
use gyre_kernels::{Result, Tensor};
use gyre_losses::barlow_twins::{standardize_columns, BARLOW_TWINS_EPS, BARLOW_TWINS_LAMBDA};
use gyre_losses::barlow_twins_loss;
use serde::{Deserialize, Serialize};

/// `[method] name = "barlowtwins"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BarlowTwinsSettings {
    /// λ, the weight of the off-diagonal terms (5e-3; solo-learn's `lamb`, lightly's
    /// `lambda_param`).
    pub lambda: f64,
    /// A factor on the whole loss (solo-learn's `scale_loss`: 0.1 in its CIFAR recipes; 1 in the
    /// paper's final code).
    pub scale: f64,
}

impl Default for BarlowTwinsSettings {
    fn default() -> Self {
        Self {
            lambda: BARLOW_TWINS_LAMBDA,
            scale: 1.0,
        }
    }
}

impl MethodSettings for BarlowTwinsSettings {
    const NAME: &'static str = "barlowtwins";

    fn check(&self, env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        check::non_negative("lambda", self.lambda)?;
        check::positive("scale", self.scale)?;
        if env.batch_size < 2 {
            return Err(SettingsError::new(
                "name",
                format!(
                    "barlowtwins standardises over the batch: train.batch_size must be ≥ 2, got {}",
                    env.batch_size
                ),
            ));
        }
        Ok(())
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(BarlowTwins {
            online: Online::new(ctx)?,
            lambda: self.lambda,
            scale: self.scale,
        }))
    }
}

pub struct BarlowTwins {
    /// The backbone and projector.
    online: Online,
    lambda: f64,
    scale: f64,
}

impl Method for BarlowTwins {
    fn name(&self) -> &'static str {
        BarlowTwinsSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.online.params
    }

    fn backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, _ctx: StepContext) -> Result<StepOutput> {
        let ([f1, f2], [z1, z2]) = self.online.each_view(views)?;
        let loss = (barlow_twins_loss(&z1, &z2, self.lambda)? * self.scale)?;
        let s1 = standardize_columns(&z1, BARLOW_TWINS_EPS)?;
        let s2 = standardize_columns(&z2, BARLOW_TWINS_EPS)?.detach();
        let scale = self.scale;
        Ok(StepOutput {
            loss,
            logs: Vec::new(),
            embeddings: z1,
            pair: Some(PairHooks {
                view1: f1,
                view2: f2,
                view2_index: 1,
                base_v2: s2,
                keep_base_scale: true,
                pair_loss: Box::new(move |p| {
                    let q = p.queries(&s1)?;
                    let agree = (q * &p.positives)?.mean(0)?;
                    agree.affine(-1.0, 1.0)?.sqr()?.sum_all()? * scale
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

    /// With every row paired to its own view-2 projection, the pair loss is the loss's diagonal
    /// half: the whole loss when λ = 0.
    #[test]
    fn pairs_on_their_own_partners_give_the_diagonal_term() -> anyhow::Result<()> {
        let s = BarlowTwinsSettings {
            lambda: 0.0,
            scale: 0.5,
        };
        let (out, got) = step_and_own_pair_loss(&s, &Fixture::new(16), 3)?;
        let loss = out.loss.to_scalar::<f32>()? as f64;
        assert!(loss > 0.0);
        assert!((got - loss).abs() <= 1e-5 * loss, "{got} vs {loss}");
        Ok(())
    }
}
