//! Optimisers over a `ParamStore`: SGD with momentum (optionally Nesterov), LARS and AdamW, with
//! weight decay that can exempt BatchNorm parameters and biases. Semantics match `torch.optim`
//! (SGD, AdamW) and solo-learn's `LARS` (`solo/utils/lars.py`).

use gyre_encoders::{Param, ParamStore};
use gyre_kernels::candle::backprop::GradStore;
use gyre_kernels::ops::fused_kernels_enabled;
use gyre_kernels::optim_step::{adamw_update, like, sgd_update, AdamwStep, CpuF32, SgdStep};
use gyre_kernels::{Result, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Sgd,
    /// SGD momentum with a layer-wise trust ratio (You et al. 2017, as solo-learn): the decayed
    /// gradient `g + wd·w` is scaled by `η‖w‖ / (‖g‖ + wd‖w‖ + ε)` (clipped to `min(·/lr, 1)` with
    /// `clip_lr`); BatchNorm parameters and biases skip the scaling and the decay when
    /// `exclude_bn_bias`.
    Lars,
    Adamw,
}

/// Hyper-parameters shared by the optimisers (unused ones are ignored).
#[derive(Debug, Clone, Copy)]
pub struct OptimSettings {
    pub kind: OptimKind,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub exclude_bn_bias: bool,
    pub betas: (f64, f64),
    pub eps: f64,
    /// LARS trust coefficient η.
    pub eta: f64,
    /// LARS: clip the layer-wise rate at the global one.
    pub clip_lr: bool,
}

impl OptimSettings {
    /// `torch.optim.AdamW`'s defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on every
    /// parameter (the reference step of `shared/reference/step_bench.py`).
    pub fn torch_adamw() -> Self {
        Self {
            kind: OptimKind::Adamw,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.01,
            exclude_bn_bias: false,
            betas: (0.9, 0.999),
            eps: 1e-8,
            eta: 0.02,
            clip_lr: false,
        }
    }
}

/// An optimiser with its per-parameter state, keyed by parameter name.
pub struct Optimizer {
    settings: OptimSettings,
    params: Vec<Param>,
    /// SGD momentum buffer or Adam first moment.
    m: HashMap<String, Tensor>,
    /// Adam second moment.
    v: HashMap<String, Tensor>,
    steps: u64,
}

impl Optimizer {
    pub fn new(store: &ParamStore, settings: OptimSettings) -> Self {
        let params = store.trainable().cloned().collect();
        Self {
            settings,
            params,
            m: HashMap::new(),
            v: HashMap::new(),
            steps: 0,
        }
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets the weight decay of the next steps (a weight-decay schedule, DINO's).
    pub fn set_weight_decay(&mut self, wd: f64) {
        self.settings.weight_decay = wd;
    }

    fn decay_for(&self, p: &Param) -> f64 {
        if self.settings.exclude_bn_bias && p.kind.is_bn_or_bias() {
            0.0
        } else {
            self.settings.weight_decay
        }
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    /// f32 parameters on the CPU take the fused one-pass update (`gyre_kernels::optim_step`);
    /// others the composed candle update, which gives bit-identical results.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_with(grads, lr, fused_kernels_enabled())
    }

    /// [`Self::step`] with the path chosen: `fused = false` forces the composed update.
    pub fn step_with(&mut self, grads: &GradStore, lr: f64, fused: bool) -> Result<()> {
        self.steps += 1;
        let s = self.settings;
        for p in &self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let wd = self.decay_for(p);
            let fusable = s.kind != OptimKind::Lars;
            if fused
                && fusable
                && fused_update(s, self.steps, &mut self.m, &mut self.v, p, g, lr, wd)?
            {
                continue;
            }
            let w = p.var.as_tensor();
            match s.kind {
                OptimKind::Sgd | OptimKind::Lars => {
                    let mut g_dec = if wd > 0.0 {
                        (g + (w * wd)?)?
                    } else {
                        g.clone()
                    };
                    if s.kind == OptimKind::Lars && !(s.exclude_bn_bias && p.kind.is_bn_or_bias()) {
                        let pn = w.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
                        let gn = g.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
                        if pn > 0.0 && gn > 0.0 {
                            let mut r = s.eta * pn / (gn + wd * pn + s.eps);
                            if s.clip_lr {
                                r = (r / lr).min(1.0);
                            }
                            g_dec = (g_dec * r)?;
                        }
                    }
                    let g = g_dec;
                    let d = if s.momentum > 0.0 {
                        let buf = match self.m.get(&p.name) {
                            Some(b) => ((b * s.momentum)? + &g)?,
                            None => g.clone(),
                        };
                        let d = if s.nesterov {
                            (&g + (&buf * s.momentum)?)?
                        } else {
                            buf.clone()
                        };
                        self.m.insert(p.name.clone(), buf.detach());
                        d
                    } else {
                        g
                    };
                    p.var.set(&(w - (d * lr)?)?)?;
                }
                OptimKind::Adamw => {
                    let (b1, b2) = s.betas;
                    let t = self.steps as i32;
                    let m = match self.m.get(&p.name) {
                        Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
                        None => (g * (1.0 - b1))?,
                    };
                    let v = match self.v.get(&p.name) {
                        Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                        None => (g.sqr()? * (1.0 - b2))?,
                    };
                    let mhat = (&m / (1.0 - b1.powi(t)))?;
                    let denom = ((&v / (1.0 - b2.powi(t)))?.sqrt()? + s.eps)?;
                    let w_decayed = if wd > 0.0 {
                        (w * (1.0 - lr * wd))?
                    } else {
                        w.clone()
                    };
                    p.var
                        .set(&(w_decayed - (mhat / denom)?.affine(lr, 0.0)?)?)?;
                    self.m.insert(p.name.clone(), m.detach());
                    self.v.insert(p.name.clone(), v.detach());
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`optim.m.<param>`, `optim.v.<param>`) for checkpoints.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (k, t) in &self.m {
            out.insert(format!("optim.m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            out.insert(format!("optim.v.{k}"), t.clone());
        }
        out
    }

    /// Restores the state written by [`Self::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) {
        self.m.clear();
        self.v.clear();
        for (k, t) in tensors {
            if let Some(name) = k.strip_prefix("optim.m.") {
                self.m.insert(name.to_string(), t.clone());
            } else if let Some(name) = k.strip_prefix("optim.v.") {
                self.v.insert(name.to_string(), t.clone());
            }
        }
        self.steps = steps;
    }
}

/// The fused update of one parameter; `false` when its tensors are not CPU f32 (or the grad
/// is not contiguous), leaving the composed update to run.
#[allow(clippy::too_many_arguments)]
fn fused_update(
    s: OptimSettings,
    steps: u64,
    m_state: &mut HashMap<String, Tensor>,
    v_state: &mut HashMap<String, Tensor>,
    p: &Param,
    g: &Tensor,
    lr: f64,
    wd: f64,
) -> Result<bool> {
    let w = p.var.as_tensor();
    let (Some(wv), Some(gv)) = (CpuF32::of(w), CpuF32::of(g)) else {
        return Ok(false);
    };
    let m = m_state.get(&p.name);
    let mv = m.and_then(CpuF32::of);
    if m.is_some() && mv.is_none() {
        return Ok(false);
    }
    match s.kind {
        OptimKind::Lars => return Ok(false),
        OptimKind::Sgd => {
            let step = SgdStep {
                lr,
                momentum: s.momentum,
                nesterov: s.nesterov,
                weight_decay: wd,
            };
            let (nw, nb) = sgd_update(
                wv.slice(),
                gv.slice(),
                mv.as_ref().map(|v| v.slice()),
                &step,
            );
            drop((wv, gv, mv));
            if let Some(nb) = nb {
                m_state.insert(p.name.clone(), like(w, nb)?);
            }
            p.var.set(&like(w, nw)?)?;
        }
        OptimKind::Adamw => {
            let v = v_state.get(&p.name);
            let vv = v.and_then(CpuF32::of);
            if v.is_some() && vv.is_none() {
                return Ok(false);
            }
            let t = steps as i32;
            let step = AdamwStep {
                lr,
                beta1: s.betas.0,
                beta2: s.betas.1,
                eps: s.eps,
                weight_decay: wd,
                bias_correction1: 1.0 - s.betas.0.powi(t),
                bias_correction2: 1.0 - s.betas.1.powi(t),
            };
            let (nw, nm, nv) = adamw_update(
                wv.slice(),
                gv.slice(),
                mv.as_ref().map(|v| v.slice()),
                vv.as_ref().map(|v| v.slice()),
                &step,
            );
            drop((wv, gv, mv, vv));
            m_state.insert(p.name.clone(), like(w, nm)?);
            v_state.insert(p.name.clone(), like(w, nv)?);
            p.var.set(&like(w, nw)?)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gyre_encoders::ParamKind;
    use gyre_kernels::{Device, Var};

    fn one_param(kind: ParamKind) -> (ParamStore, Var) {
        let mut s = ParamStore::new();
        let v = s
            .add(
                "w",
                Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap(),
                kind,
            )
            .unwrap();
        (s, v)
    }

    fn settings(kind: OptimKind) -> OptimSettings {
        OptimSettings {
            kind,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.1,
            exclude_bn_bias: true,
            betas: (0.9, 0.999),
            eps: 1e-8,
            eta: 0.02,
            clip_lr: false,
        }
    }

    fn grad_of_sum_sq(v: &Var) -> GradStore {
        // d/dw Σ w² = 2w
        v.as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn sgd_momentum_matches_torch() {
        // torch: w=[1,-2], g=2w+wd·w, buf=g, w-=lr·buf; step 2: buf=m·buf+g.
        let (s, v) = one_param(ParamKind::Weight);
        let mut o = Optimizer::new(&s, settings(OptimKind::Sgd));
        o.step(&grad_of_sum_sq(&v), 0.1).unwrap();
        let w1 = v.to_vec1::<f32>().unwrap();
        assert!((w1[0] - (1.0 - 0.1 * 2.1)).abs() < 1e-6, "{w1:?}");
        o.step(&grad_of_sum_sq(&v), 0.1).unwrap();
        let g2 = 2.1 * 0.79;
        let buf2 = 0.9 * 2.1 + g2;
        assert!((v.to_vec1::<f32>().unwrap()[0] - (0.79 - 0.1 * buf2)).abs() < 1e-6);
    }

    #[test]
    fn lars_scales_by_the_trust_ratio_like_solo_learn() {
        // w = [1, −2], g = 2w = [2, −4], wd 0.1: ‖w‖ = √5, ‖g‖ = 2√5,
        // ratio = η‖w‖/(‖g‖ + wd‖w‖ + ε) = 0.02·√5/(2√5 + 0.1√5) = 0.02/2.1;
        // d = (g + wd·w)·ratio = 2.1·w·0.02/2.1 = 0.02·w; w ← w − lr·d (first step: buf = d).
        let (s, v) = one_param(ParamKind::Weight);
        let mut o = Optimizer::new(&s, settings(OptimKind::Lars));
        o.step(&grad_of_sum_sq(&v), 0.5).unwrap();
        let w = v.to_vec1::<f32>().unwrap();
        assert!((w[0] - (1.0 - 0.5 * 0.02)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 + 0.5 * 0.04)).abs() < 1e-6, "{w:?}");
        // With clip_lr the ratio is min(ratio/lr, 1): 0.02/2.1/0.5 < 1, so d = 0.04·w.
        let (s, v) = one_param(ParamKind::Weight);
        let mut st = settings(OptimKind::Lars);
        st.clip_lr = true;
        let mut o = Optimizer::new(&s, st);
        o.step(&grad_of_sum_sq(&v), 0.5).unwrap();
        assert!((v.to_vec1::<f32>().unwrap()[0] - (1.0 - 0.5 * 0.04)).abs() < 1e-6);
        // BatchNorm parameters skip the ratio and the decay: plain SGD on g.
        let (s, v) = one_param(ParamKind::NormWeight);
        let mut o = Optimizer::new(&s, settings(OptimKind::Lars));
        o.step(&grad_of_sum_sq(&v), 0.1).unwrap();
        assert!((v.to_vec1::<f32>().unwrap()[0] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn bn_params_can_skip_decay() {
        let (s, v) = one_param(ParamKind::NormWeight);
        let mut o = Optimizer::new(&s, settings(OptimKind::Sgd));
        o.step(&grad_of_sum_sq(&v), 0.1).unwrap();
        assert!((v.to_vec1::<f32>().unwrap()[0] - 0.8).abs() < 1e-6);
    }

    /// The fused update equals the composed candle update bit for bit over several steps, for
    /// every optimiser variant.
    #[test]
    fn fused_update_is_bit_identical_to_the_composed_one() {
        let variants = [
            (OptimKind::Sgd, 0.9, false, 0.1),
            (OptimKind::Sgd, 0.9, true, 0.0),
            (OptimKind::Sgd, 0.0, false, 0.05),
            (OptimKind::Adamw, 0.0, false, 0.1),
            (OptimKind::Adamw, 0.0, false, 0.0),
        ];
        for (kind, momentum, nesterov, wd) in variants {
            let st = OptimSettings {
                momentum,
                nesterov,
                weight_decay: wd,
                exclude_bn_bias: false,
                ..settings(kind)
            };
            let init: Vec<f32> = (0..40_000)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
                .collect();
            let run = |fused: bool| {
                let mut s = ParamStore::new();
                let v = s
                    .add(
                        "w",
                        Tensor::from_vec(init.clone(), (200, 200), &Device::Cpu).unwrap(),
                        ParamKind::Weight,
                    )
                    .unwrap();
                let mut o = Optimizer::new(&s, st);
                for k in 0..4 {
                    let g = v
                        .as_tensor()
                        .sin()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    o.step_with(&g, 0.01 * (k + 1) as f64, fused).unwrap();
                }
                let m =
                    o.m.get("w")
                        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                (v.flatten_all().unwrap().to_vec1::<f32>().unwrap(), m)
            };
            let (a, b) = (run(true), run(false));
            assert_eq!(
                a.0, b.0,
                "{kind:?} momentum {momentum} nesterov {nesterov} wd {wd}: weights"
            );
            assert_eq!(a.1, b.1, "{kind:?}: first state");
            assert_ne!(a.0, init, "the update must move the weights");
        }
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // First Adam step: mhat/sqrt(vhat) = sign(g), so w ← w(1 − lr·wd) − lr·sign(g).
        let (s, v) = one_param(ParamKind::Weight);
        let mut o = Optimizer::new(&s, settings(OptimKind::Adamw));
        o.step(&grad_of_sum_sq(&v), 0.01).unwrap();
        let w = v.to_vec1::<f32>().unwrap();
        assert!((w[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-6, "{w:?}");
    }
}
