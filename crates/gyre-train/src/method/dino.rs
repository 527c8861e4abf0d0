//! DINO (Caron et al., ICCV 2021): self-distillation without labels. A student (backbone + the
//! `[head]` MLP, GELU and no BatchNorm in the paper's head, then L2 normalisation and a
//! weight-normalised last layer of `prototypes` outputs) matches an EMA teacher of itself: the
//! teacher's outputs on the two global crops, centred (an EMA of their batch mean, momentum 0.9)
//! and sharpened (temperature 0.04 → 0.07 over the first 30 epochs), are soft targets for the
//! student's softmax (τ 0.1) on every other crop ([`dino_loss`]). Multi-crop: two global crops,
//! then any number of local crops (`views = ["global", "global", "local", …]`); the teacher sees
//! the global crops only; crops of one size share a forward pass.
//!
//! The update order of a step: the teacher's EMA update (momentum 0.996 → 1, cosine), the
//! teacher's forward pass, the loss with the centre as it was; after the optimiser step, the
//! centre's update with this step's teacher outputs (the reference updates it right after the
//! loss; nothing reads it in between, so the two orders are the same). The last layer gets no
//! gradient for the first `freeze_last_layer_epochs` epochs; with `norm_last_layer` (default)
//! its rows keep unit norm (`weight_g` fixed at 1).
//!
//! As the IRC pair: both global crops' student features; the memory keeps the teacher's targets
//! for view 2, and an auto-paired positive is one more target for the student's view 1.

use super::swav::strip;
use super::{
    check, epoch_of, BuildContext, Method, MethodEnv, MethodSettings, Online, SettingsError,
};
use crate::ema::{copy_state, load_copy_state, EmaTeacher};
use crate::step::{PairHooks, StepContext, StepOutput};
use crate::teacher::MomentumEncoder;
use gyre_data::Batch;
use gyre_encoders::{init::Init, Backbone, ParamStore, WeightNormLinear};
use gyre_kernels::{DType, Result, Tensor};
use gyre_losses::dino::{teacher_temperature, DINO_CENTER_MOMENTUM, DINO_STUDENT_TEMPERATURE};
use gyre_losses::{dino_loss, l2_normalize, teacher_targets, update_center};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `[method] name = "dino"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DinoSettings {
    /// Outputs of the last layer `K` (65536 in the paper; solo-learn's CIFAR recipe 4096).
    pub prototypes: usize,
    /// The student's temperature τ_s.
    pub student_temperature: f64,
    /// The teacher's temperature after the warm-up.
    pub teacher_temperature: f64,
    /// The teacher's temperature at epoch 0.
    pub warmup_teacher_temperature: f64,
    /// Epochs of the linear warm-up (0: `teacher_temperature` from the start).
    pub warmup_teacher_epochs: usize,
    /// The centre's EMA momentum.
    pub center_momentum: f64,
    /// Teacher momentum at the start, and at the end (cosine schedule); none: constant.
    pub momentum: f64,
    pub momentum_final: Option<f64>,
    /// Epochs during which the last layer gets no gradient.
    pub freeze_last_layer_epochs: usize,
    /// Keep the last layer's rows at unit norm (`weight_g` fixed); false trains `weight_g`.
    pub norm_last_layer: bool,
}

impl Default for DinoSettings {
    fn default() -> Self {
        Self {
            prototypes: 65536,
            student_temperature: DINO_STUDENT_TEMPERATURE,
            teacher_temperature: 0.07,
            warmup_teacher_temperature: 0.04,
            warmup_teacher_epochs: 30,
            center_momentum: DINO_CENTER_MOMENTUM,
            momentum: 0.996,
            momentum_final: Some(1.0),
            freeze_last_layer_epochs: 1,
            norm_last_layer: true,
        }
    }
}

impl MethodSettings for DinoSettings {
    const NAME: &'static str = "dino";
    const VIEWS: (usize, &'static str) = (2, "two global crops, then any local crops");
    const MULTI_CROP: bool = true;

    fn check(&self, _env: &MethodEnv) -> std::result::Result<(), SettingsError> {
        if self.prototypes == 0 {
            return Err(SettingsError::new(
                "prototypes",
                "the head's output dimension must be at least 1, got 0",
            ));
        }
        check::rows("prototypes", self.prototypes)?;
        check::positive("student_temperature", self.student_temperature)?;
        check::positive("teacher_temperature", self.teacher_temperature)?;
        check::positive(
            "warmup_teacher_temperature",
            self.warmup_teacher_temperature,
        )?;
        if !(0.0..1.0).contains(&self.center_momentum) {
            return Err(SettingsError::new(
                "center_momentum",
                format!("must be in [0, 1), got {}", self.center_momentum),
            ));
        }
        check::momentum(self.momentum, self.momentum_final)
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Method>> {
        Ok(Box::new(self.make(ctx)?))
    }
}

impl DinoSettings {
    fn make(&self, ctx: &BuildContext) -> anyhow::Result<Dino> {
        let mut online = Online::new(ctx)?;
        let d = online.head_cfg.output;
        let init = Init::new(ctx.env.seed, ctx.device);
        let train_g = !self.norm_last_layer;
        let (mut s_store, mut t_store) = (ParamStore::new(), ParamStore::new());
        let last = WeightNormLinear::new(
            &mut s_store,
            &init,
            "last_layer",
            d,
            self.prototypes,
            train_g,
        )?;
        let teacher_last = WeightNormLinear::new(
            &mut t_store,
            &init,
            "last_layer",
            d,
            self.prototypes,
            train_g,
        )?;
        online
            .params
            .extend_prefixed("last_layer", &strip(&s_store, "last_layer"));
        let teacher = online.teacher(self.momentum, self.momentum_final, false, ctx)?;
        let teacher_last_ema = EmaTeacher::new(&s_store, &t_store)?;
        let center = Tensor::zeros((1, self.prototypes), DType::F32, ctx.device)?;
        Ok(Dino {
            online,
            last,
            teacher,
            teacher_last,
            teacher_last_ema,
            teacher_last_store: t_store,
            center,
            pending: None,
            s: self.clone(),
        })
    }
}

pub struct Dino {
    online: Online,
    last: WeightNormLinear,
    teacher: MomentumEncoder,
    teacher_last: WeightNormLinear,
    teacher_last_ema: EmaTeacher,
    teacher_last_store: ParamStore,
    /// The centre `[1, K]` of the teacher's outputs.
    center: Tensor,
    /// This step's teacher outputs, for the centre after the optimiser step.
    pending: Option<Vec<Tensor>>,
    s: DinoSettings,
}

impl Dino {
    /// The teacher's raw outputs on the global crops, in one forward pass.
    fn teacher_outputs(&self, globals: &[Tensor], ctx: StepContext) -> Result<Vec<Tensor>> {
        let b = globals[0].dim(0)?;
        let x = Tensor::cat(globals, 0)?;
        let z = self.teacher.encode(&x, ctx, 0)?.embeddings;
        let t = self.teacher_last.forward(&l2_normalize(&z)?, true)?;
        (0..globals.len()).map(|i| t.narrow(0, i * b, b)).collect()
    }

    /// The centre `[1, K]` (for tests and diagnostics).
    pub fn center(&self) -> &Tensor {
        &self.center
    }
}

impl Method for Dino {
    fn name(&self) -> &'static str {
        DinoSettings::NAME
    }

    fn params(&self) -> &ParamStore {
        &self.online.params
    }

    fn backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn pair_base_dim(&self) -> Option<usize> {
        Some(self.s.prototypes)
    }

    fn step(&mut self, views: &[Tensor], _batch: &Batch, ctx: StepContext) -> Result<StepOutput> {
        let epoch = epoch_of(ctx);
        // 1. The EMA update of the teacher, its last layer with the same momentum.
        self.teacher.update(ctx)?;
        self.teacher_last_ema.update(self.teacher.last_momentum)?;
        // 2. The teacher on the global crops.
        let t = self.teacher_outputs(&views[..2], ctx)?;
        // 3. The student on every crop; the loss with the centre as it was.
        let frozen = epoch < self.s.freeze_last_layer_epochs;
        let (f, z) = self.online.crops(views)?;
        let student: Vec<Tensor> = z
            .iter()
            .map(|z| self.last.forward(&l2_normalize(z)?, frozen))
            .collect::<Result<_>>()?;
        let tau_t = teacher_temperature(
            epoch,
            self.s.warmup_teacher_temperature,
            self.s.teacher_temperature,
            self.s.warmup_teacher_epochs,
        );
        let targets: Vec<Tensor> = t
            .iter()
            .map(|t| teacher_targets(t, &self.center, tau_t))
            .collect::<Result<_>>()?;
        let loss = dino_loss(&student, &targets, self.s.student_temperature)?;
        self.pending = Some(t);
        let tau_s = self.s.student_temperature;
        let log_p1 = gyre_kernels::nn::ops::log_softmax(&(&student[0] / tau_s)?, 1)?;
        Ok(StepOutput {
            loss,
            logs: vec![
                ("momentum", self.teacher.last_momentum),
                ("teacher_temperature", tau_t),
            ],
            embeddings: z[0].clone(),
            pair: Some(PairHooks {
                view1: f[0].clone(),
                view2: f[1].clone(),
                view2_index: 1,
                base_v2: targets[1].clone(),
                keep_base_scale: true,
                pair_loss: Box::new(move |p| {
                    (&p.positives * p.queries(&log_p1)?)?
                        .sum(1)?
                        .mean_all()?
                        .neg()
                }),
                dense: None,
            }),
        })
    }

    fn after_step(&mut self, _ctx: StepContext) -> Result<()> {
        if let Some(t) = self.pending.take() {
            self.center = update_center(&self.center, &t, self.s.center_momentum)?;
        }
        Ok(())
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = self.teacher.state();
        out.extend(copy_state(&self.teacher_last_store, "teacher"));
        out.push(("dino.center".into(), self.center.clone()));
        Ok(out)
    }

    fn load_state(&mut self, t: &HashMap<String, Tensor>) -> Result<()> {
        self.teacher.load_state(t)?;
        load_copy_state(&self.teacher_last_store, "teacher", t)?;
        let Some(c) = t.get("dino.center") else {
            gyre_kernels::candle::bail!("checkpoint lacks dino.center")
        };
        if c.dims() != self.center.dims() {
            gyre_kernels::candle::bail!(
                "dino.center: {:?} in the checkpoint, {:?} in the model",
                c.dims(),
                self.center.dims()
            );
        }
        self.center = c.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::testing::{batch, ctx, random_views, step_and_own_pair_loss, Fixture};

    fn small() -> DinoSettings {
        DinoSettings {
            prototypes: 12,
            warmup_teacher_epochs: 3,
            momentum: 0.9,
            momentum_final: None,
            ..DinoSettings::default()
        }
    }

    /// Every row paired with its own view-2 target: the pair loss is the loss's term of
    /// student view 1 against teacher view 2.
    #[test]
    fn pairs_on_their_own_partners_give_one_term_of_the_loss() -> anyhow::Result<()> {
        let (out, got) = step_and_own_pair_loss(&small(), &Fixture::new(8), 3)?;
        let loss = out.loss.to_scalar::<f32>()? as f64;
        assert!(got > 0.0 && got.is_finite() && loss > 0.0);
        Ok(())
    }

    /// The centre is updated after the step: the step leaves it alone, and after it the centre
    /// is 0.1 × the batch mean of that step's teacher outputs on both global crops.
    #[test]
    fn centre_follows_the_teacher_after_the_loss() -> anyhow::Result<()> {
        let f = Fixture::new(8);
        let mut dino = small().make(&f.build_context())?;
        let v = random_views(3, 8, 5)?;
        let t = dino.teacher_outputs(&v[..2], ctx(0));
        // The teacher refuses a forward pass before its update (the update comes first).
        assert!(t.is_err());
        let out = dino.step(&v, &batch(8), ctx(0))?;
        assert!(out.loss.to_scalar::<f32>()?.is_finite());
        assert_eq!(dino.center().abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        dino.after_step(ctx(0))?;
        let c1 = dino.center().clone();
        let t0 = dino.teacher_outputs(&v[..2], ctx(0))?;
        let want = update_center(
            &Tensor::zeros((1, 12), DType::F32, &f.device)?,
            &t0,
            DINO_CENTER_MOMENTUM,
        )?;
        let d = (c1 - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        Ok(())
    }

    /// The last layer gets a gradient from the second epoch only; the teacher temperature
    /// warms up per epoch.
    #[test]
    fn last_layer_frozen_for_the_first_epoch_and_temperature_warms_up() -> anyhow::Result<()> {
        let f = Fixture::new(8);
        let mut m = small().build(&f.build_context())?;
        let v = random_views(2, 8, 1)?;
        let last = m
            .params()
            .get("last_layer.weight_v")
            .expect("registered")
            .clone();
        assert!(m.params().get("last_layer.weight_g").is_some());
        for (step, wants, tau) in [(0u64, false, 0.04), (4, true, 0.055), (8, true, 0.07)] {
            let out = m.step(&v, &batch(8), ctx(step))?;
            let g = out.loss.backward()?;
            assert_eq!(g.get(last.var.as_tensor()).is_some(), wants, "step {step}");
            let logged = out
                .logs
                .iter()
                .find(|(k, _)| *k == "teacher_temperature")
                .unwrap()
                .1;
            assert!((logged - tau).abs() < 1e-12, "{logged} vs {tau}");
        }
        Ok(())
    }

    #[test]
    fn an_output_dimension_of_zero_is_refused() {
        let f = Fixture::new(8);
        let s = DinoSettings {
            prototypes: 0,
            ..small()
        };
        let e = s.check(&f.env()).unwrap_err();
        assert_eq!(e.key, "prototypes");
        assert!(e.problem.contains("0"), "{}", e.problem);
    }

    #[test]
    fn state_round_trips_the_centre() -> anyhow::Result<()> {
        let f = Fixture::new(8);
        let mut m = small().build(&f.build_context())?;
        m.step(&random_views(2, 8, 1)?, &batch(8), ctx(0))?;
        m.after_step(ctx(0))?;
        let st: HashMap<String, Tensor> = m.state()?.into_iter().collect();
        assert!(st.contains_key("teacher.last_layer.weight_v"));
        let mut fresh = small().build(&f.build_context())?;
        fresh.load_state(&st)?;
        let a = st["dino.center"].flatten_all()?.to_vec1::<f32>()?;
        let b: HashMap<String, Tensor> = fresh.state()?.into_iter().collect();
        assert_eq!(a, b["dino.center"].flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}
