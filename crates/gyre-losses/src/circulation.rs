//! The IRC circulation loss: a random walk across feature groups with no known pairing (Task C),
//! closed into a cycle by a known pairing π (Task S); the walker must come back to π(i).
//!
//! Pang, Wei, Lin, Lu. "Implicit Relation Circulation", IEEE TPAMI 2025
//! (DOI 10.1109/TPAMI.2025.3526802); released code `BoPang1996/IRC`, `pretrain/criterion.py`
//! (`cycle_matching`); the generic form of `shared/spec/methods.md` §3.3 and §9.5.
//!
//! For groups `G_0 … G_L` (rows L2-normalised, `[n_l, d]`) and temperature τ:
//! `A_l = softmax_row(G_l G_{l+1}ᵀ / τ)`, `C = A_0 A_1 ⋯ A_{L−1}` (`[n_0, n_L]`),
//! `L = −mean_i log C[i, π(i)]`.
//!
//! Three ways to compute it, all equal (tests):
//! - [`circulation_loss`] on the CPU for two hops (`L = 2`): one fused op with its own backward
//!   that works in row chunks of `G_0` and never forms more than `chunk × max(n_1, n_L)` values,
//!   in log space throughout: `log C[i, π(i)] = lse_j(log A_0[i, j] + log A_1[j, π(i)])`, where
//!   `log A_1[j, π(i)] = G_1[j]·G_L[π(i)]/τ − lse_m(G_1[j]·G_L[m]/τ)` needs only a vector of row
//!   normalisers. Its backward is the closed form with the walk's posterior
//!   `ρ_ij = A_0[i,j] A_1[j,π(i)] / C[i,π(i)]`: `∂L/∂S_0 = (A_0 − ρ)/n_0` and
//!   `∂L/∂S_1 = (diag(Σ_i ρ_i·) A_1 − ρᵀ Π)/n_0` for the logit matrices `S_l = G_l G_{l+1}ᵀ/τ`.
//! - the candle composition (any device, any number of hops; [`circulation_loss_composed`]): the
//!   first hop in log space, the later hops as products of row-stochastic matrices.
//! - [`circulation_loss_dense`]: the released code's form, `C` materialised and
//!   `−mean log(C[i, π(i)] + 1e−20)`; the naive baseline of the benchmark.
//!
//! Convention: the mean over the rows of `G_0` (the code's `CE(log(C + ε), arange)`, which equals it
//! up to `n·1e−20`, docs/spec/test-vectors.md TV16). No ε is needed in log space.

use crate::softmax::softmax_rows;
use gyre_kernels::candle::{bail, CpuStorage, CustomOp3, Layout, Shape};
use gyre_kernels::{DType, Device, Result, Tensor, D};
use std::sync::{Arc, Mutex};

/// Options of the circulation loss.
#[derive(Debug, Clone, Copy)]
pub struct CirculationOptions {
    /// Temperature τ_c of every hop (the IRC code uses 0.1).
    pub tau: f64,
    /// Rows of `G_0` per chunk in the fused op (memory is `chunk × max(n_1, n_L)` floats).
    pub chunk: usize,
}

impl Default for CirculationOptions {
    fn default() -> Self {
        Self {
            tau: 0.1,
            chunk: 256,
        }
    }
}

/// The loss with the walk's diagnostics (computed without gradient).
#[derive(Debug, Clone)]
pub struct Circulation {
    /// Scalar: `−mean_i log C[i, π(i)]`.
    pub loss: Tensor,
    /// Fraction of rows whose walk ends most likely at the right node: `argmax_j C[i, j] = π(i)`.
    pub cycle_accuracy: f64,
    /// Mean return probability `mean_i C[i, π(i)]`.
    pub return_probability: f64,
}

/// The closure map π as indices into the last group; `None` means the identity (`n_0 = n_L`).
fn closure_indices(closure: Option<&[u32]>, n0: usize, nl: usize) -> Result<Vec<u32>> {
    match closure {
        None => {
            if n0 != nl {
                bail!("circulation: identity closure needs n_0 = n_L, got {n0} and {nl}");
            }
            Ok((0..n0 as u32).collect())
        }
        Some(p) => {
            if p.len() != n0 {
                bail!(
                    "circulation: closure has {} entries for n_0 = {n0} rows",
                    p.len()
                );
            }
            if let Some(&bad) = p.iter().find(|&&j| j as usize >= nl) {
                bail!("circulation: closure index {bad} out of range for n_L = {nl}");
            }
            Ok(p.to_vec())
        }
    }
}

/// Checks the groups and τ, and resolves the closure: `(hops, π)`.
fn walk_setup(groups: &[&Tensor], closure: Option<&[u32]>, tau: f64) -> Result<(usize, Vec<u32>)> {
    check_groups(groups, tau)?;
    let hops = groups.len() - 1;
    let (n0, nl) = (groups[0].dim(0)?, groups[hops].dim(0)?);
    Ok((hops, closure_indices(closure, n0, nl)?))
}

fn check_groups(groups: &[&Tensor], tau: f64) -> Result<()> {
    if groups.len() < 2 {
        bail!(
            "circulation: needs at least two groups, got {}",
            groups.len()
        );
    }
    if !(tau > 0.0 && tau.is_finite()) {
        bail!("circulation: τ must be positive and finite, got {tau}");
    }
    let d = groups[0].dims2()?.1;
    for (l, g) in groups.iter().enumerate() {
        let (n, dl) = g.dims2()?;
        if dl != d || n == 0 {
            bail!("circulation: group {l} is [{n}, {dl}], expected [n > 0, {d}]");
        }
    }
    Ok(())
}

/// `log Σ_dim exp(x)` with the max shift outside the graph.
fn lse(x: &Tensor, dim: usize) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    x.broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(dim)?
        .log()?
        .add(&m)?
        .squeeze(dim)
}

/// The circulation loss over `groups` (`G_0 … G_L`, each `[n_l, d]`, L2-normalised by the caller)
/// closed by `closure` (π; `None` = identity). Any group may be detached by the caller (an EMA
/// middle group); gradients flow to the others. Two hops on the CPU take the fused chunked op.
pub fn circulation_loss(
    groups: &[&Tensor],
    closure: Option<&[u32]>,
    opts: CirculationOptions,
) -> Result<Circulation> {
    let (hops, pi) = walk_setup(groups, closure, opts.tau)?;
    if hops == 2 && groups.iter().all(|g| gyre_kernels::ops::fused(g)) {
        let g0 = groups[0];
        let stash = Arc::new(Mutex::new(Forward::default()));
        let op = CirculationOp {
            pi,
            tau: opts.tau,
            chunk: opts.chunk.max(1),
            stash: stash.clone(),
        };
        let loss =
            g0.contiguous()?
                .apply_op3(&groups[1].contiguous()?, &groups[2].contiguous()?, op)?;
        let fwd = stash.lock().expect("circulation stash");
        return Ok(Circulation {
            loss: loss.squeeze(0)?,
            cycle_accuracy: fwd.cycle_accuracy,
            return_probability: fwd.return_probability,
        });
    }
    circulation_loss_composed(groups, closure, opts.tau)
}

/// The candle composition (any device, any number of hops): `log A_0` exactly, the later hops as
/// a product `R = A_1 ⋯ A_{L−1}` of row-stochastic matrices, `log C[i, π(i)] =
/// lse_j(log A_0[i,j] + log R[j, π(i)])`. Memory `O(n_0 n_1 + n_1 n_L)`.
pub fn circulation_loss_composed(
    groups: &[&Tensor],
    closure: Option<&[u32]>,
    tau: f64,
) -> Result<Circulation> {
    let (hops, pi) = walk_setup(groups, closure, tau)?;
    let dev = groups[0].device();
    let pi_t = Tensor::from_vec(pi.clone(), pi.len(), dev)?;
    let logits = |l: usize| groups[l].matmul(&groups[l + 1].t()?)? / tau;
    let log_a0 = gyre_kernels::nn::ops::log_softmax(&logits(0)?, D::Minus1)?;
    // log R[j, π(i)], as [n_0, n_1] (row i holds column π(i) of log R).
    let log_r_pi = if hops == 1 {
        // One hop: C = A_0, so "R" is the identity on the last group.
        None
    } else if hops == 2 {
        let log_a1 = gyre_kernels::nn::ops::log_softmax(&logits(1)?, D::Minus1)?;
        Some(log_a1.index_select(&pi_t, 1)?.t()?)
    } else {
        let mut r = softmax_rows(&logits(1)?)?;
        for l in 2..hops {
            r = r.matmul(&softmax_rows(&logits(l)?)?)?;
        }
        // Underflowed products give log(tiny) = −69, finite: they carry no weight in the lse.
        Some((r.index_select(&pi_t, 1)?.t()? + 1e-30)?.log()?)
    };
    let log_c_pi = match &log_r_pi {
        None => log_a0.gather(&pi_t.unsqueeze(1)?, 1)?.squeeze(1)?,
        Some(lr) => lse(&log_a0.add(lr)?, 1)?,
    };
    let loss = log_c_pi.mean_all()?.neg()?;
    // Diagnostics on the full C (no gradient).
    let mut c = log_a0.detach().exp()?;
    for l in 1..hops {
        c = c.matmul(&softmax_rows(&logits(l)?.detach())?)?;
    }
    let (acc, ret) = diagnostics(&c, &pi, &log_c_pi.detach())?;
    Ok(Circulation {
        loss,
        cycle_accuracy: acc,
        return_probability: ret,
    })
}

/// Cycle accuracy from the rows of `c` (`[n, n_L]`) and the mean of `exp(log_c_pi)`.
fn diagnostics(c: &Tensor, pi: &[u32], log_c_pi: &Tensor) -> Result<(f64, f64)> {
    let arg = c.argmax(1)?.to_vec1::<u32>()?;
    let hits = arg.iter().zip(pi).filter(|(a, p)| a == p).count();
    let ret = log_c_pi
        .to_dtype(DType::F64)?
        .exp()?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok((hits as f64 / pi.len().max(1) as f64, ret))
}

/// The released code's form: `C = A_0 ⋯ A_{L−1}` materialised, `L = −mean log(C[i, π(i)] + 1e−20)`.
/// The naive baseline (memory `O(n_0 n_1)` plus every hop's matrix); equal to the others within
/// `n·1e−20` (docs/spec/test-vectors.md TV16).
pub fn circulation_loss_dense(
    groups: &[&Tensor],
    closure: Option<&[u32]>,
    tau: f64,
) -> Result<Tensor> {
    let (hops, pi) = walk_setup(groups, closure, tau)?;
    let pi_t = Tensor::from_vec(pi.clone(), (pi.len(), 1), groups[0].device())?;
    let mut c: Option<Tensor> = None;
    for l in 0..hops {
        let a = softmax_rows(&(groups[l].matmul(&groups[l + 1].t()?)? / tau)?)?;
        c = Some(match c {
            None => a,
            Some(c) => c.matmul(&a)?,
        });
    }
    let c = c.expect("at least one hop");
    (c.gather(&pi_t, 1)? + 1e-20)?.log()?.mean_all()?.neg()
}

/// Many independent circulations (per-sample blocks), averaged over all their rows: each block is
/// `(groups, closure)`. Returns the pooled loss and row-weighted diagnostics.
pub fn circulation_loss_blocks(
    blocks: &[(Vec<&Tensor>, Option<&[u32]>)],
    opts: CirculationOptions,
) -> Result<Circulation> {
    if blocks.is_empty() {
        bail!("circulation: no blocks");
    }
    let mut total: Option<Tensor> = None;
    let (mut rows, mut acc, mut ret) = (0usize, 0f64, 0f64);
    for (groups, closure) in blocks {
        let c = circulation_loss(groups, *closure, opts)?;
        let n = groups[0].dim(0)?;
        let weighted = (c.loss * n as f64)?;
        total = Some(match total {
            None => weighted,
            Some(t) => (t + weighted)?,
        });
        rows += n;
        acc += c.cycle_accuracy * n as f64;
        ret += c.return_probability * n as f64;
    }
    Ok(Circulation {
        loss: (total.expect("non-empty") / rows as f64)?,
        cycle_accuracy: acc / rows as f64,
        return_probability: ret / rows as f64,
    })
}

// ---------------------------------------------------------------------------------------------
// The fused two-hop op (CPU, f32): chunked over the rows of G_0, candle ops on detached chunks.

struct CirculationOp {
    pi: Vec<u32>,
    tau: f64,
    chunk: usize,
    /// What the forward found, for the caller and for the backward.
    stash: Arc<Mutex<Forward>>,
}

/// The forward's diagnostics and the second hop's row normalisers (`[n_1]`, kept so that the
/// backward does not recompute the `n_1 × n_2` product behind them).
#[derive(Default)]
struct Forward {
    cycle_accuracy: f64,
    return_probability: f64,
    r: Option<Tensor>,
}

fn tensor_of(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    let v = gyre_kernels::ops::cpu_f32(s, l, "circulation", "group")?;
    Tensor::from_slice(v, l.shape(), &Device::Cpu)
}

/// Chunked evaluation shared by forward and backward.
struct Walk<'a> {
    g0: &'a Tensor,
    g1: &'a Tensor,
    g2: &'a Tensor,
    pi: &'a [u32],
    tau: f64,
    chunk: usize,
    /// `lse_m(G_1[j]·G_2[m]/τ)`, `[n_1]`: the row normalisers of the second hop.
    r: Tensor,
}

/// One chunk of rows `I` of G_0: `log A_0[I, :]`, `log A_1[:, π(I)]ᵀ` and `log C[I, π(I)]`.
struct ChunkTerms {
    log_a0: Tensor,
    log_m: Tensor,
    log_c: Tensor,
    pi: Tensor,
}

impl<'a> Walk<'a> {
    fn new(
        g0: &'a Tensor,
        g1: &'a Tensor,
        g2: &'a Tensor,
        pi: &'a [u32],
        tau: f64,
        chunk: usize,
        r: Option<Tensor>,
    ) -> Result<Self> {
        let r = match r {
            Some(r) => r,
            None => {
                let n1 = g1.dim(0)?;
                let mut parts = Vec::new();
                for start in (0..n1).step_by(chunk) {
                    let len = chunk.min(n1 - start);
                    let s = (g1.narrow(0, start, len)?.matmul(&g2.t()?)? / tau)?;
                    parts.push(lse(&s, 1)?);
                }
                Tensor::cat(&parts, 0)?
            }
        };
        Ok(Self {
            g0,
            g1,
            g2,
            pi,
            tau,
            chunk,
            r,
        })
    }

    fn chunks(&self) -> Result<Vec<(usize, usize)>> {
        let n0 = self.g0.dim(0)?;
        Ok((0..n0)
            .step_by(self.chunk)
            .map(|s| (s, self.chunk.min(n0 - s)))
            .collect())
    }

    fn terms(&self, start: usize, len: usize) -> Result<ChunkTerms> {
        let pi = Tensor::from_slice(&self.pi[start..start + len], len, &Device::Cpu)?;
        let s0 = (self.g0.narrow(0, start, len)?.matmul(&self.g1.t()?)? / self.tau)?;
        let log_a0 = gyre_kernels::nn::ops::log_softmax(&s0, 1)?;
        let g2_pi = self.g2.index_select(&pi, 0)?;
        let v = (g2_pi.matmul(&self.g1.t()?)? / self.tau)?.broadcast_sub(&self.r.unsqueeze(0)?)?;
        let log_m = (&log_a0 + v)?;
        let log_c = lse(&log_m, 1)?;
        Ok(ChunkTerms {
            log_a0,
            log_m,
            log_c,
            pi,
        })
    }

    /// `A_1` rows `start..start+len`: `[len, n_2]`.
    fn a1_rows(&self, start: usize, len: usize) -> Result<Tensor> {
        let s = (self.g1.narrow(0, start, len)?.matmul(&self.g2.t()?)? / self.tau)?;
        s.broadcast_sub(&self.r.narrow(0, start, len)?.unsqueeze(1)?)?
            .exp()
    }

    /// Rows `I` of `C = A_0 A_1`, built over chunks of the middle group.
    fn c_rows(&self, log_a0: &Tensor) -> Result<Tensor> {
        let a0 = log_a0.exp()?;
        let n1 = self.g1.dim(0)?;
        let mut c: Option<Tensor> = None;
        for start in (0..n1).step_by(self.chunk) {
            let len = self.chunk.min(n1 - start);
            let part = a0
                .narrow(1, start, len)?
                .matmul(&self.a1_rows(start, len)?)?;
            c = Some(match c {
                None => part,
                Some(c) => (c + part)?,
            });
        }
        Ok(c.expect("n_1 > 0"))
    }
}

impl CustomOp3 for CirculationOp {
    fn name(&self) -> &'static str {
        "gyre-circulation"
    }

    fn cpu_fwd(
        &self,
        s0: &CpuStorage,
        l0: &Layout,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g0, g1, g2) = (tensor_of(s0, l0)?, tensor_of(s1, l1)?, tensor_of(s2, l2)?);
        let walk = Walk::new(&g0, &g1, &g2, &self.pi, self.tau, self.chunk, None)?;
        let n0 = g0.dim(0)?;
        let (mut sum, mut ret, mut hits) = (0f64, 0f64, 0usize);
        for (start, len) in walk.chunks()? {
            let t = walk.terms(start, len)?;
            let lc = t.log_c.to_dtype(DType::F64)?;
            sum += lc.sum_all()?.to_scalar::<f64>()?;
            ret += lc.exp()?.sum_all()?.to_scalar::<f64>()?;
            let arg = walk.c_rows(&t.log_a0)?.argmax(1)?.to_vec1::<u32>()?;
            hits += arg
                .iter()
                .zip(&self.pi[start..start + len])
                .filter(|(a, p)| a == p)
                .count();
        }
        *self.stash.lock().expect("circulation stash") = Forward {
            cycle_accuracy: hits as f64 / n0 as f64,
            return_probability: ret / n0 as f64,
            r: Some(walk.r.clone()),
        };
        Ok((
            CpuStorage::F32(vec![(-sum / n0 as f64) as f32]),
            Shape::from(1),
        ))
    }

    fn bwd(
        &self,
        g0: &Tensor,
        g1: &Tensor,
        g2: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (g0, g1, g2) = (g0.detach(), g1.detach(), g2.detach());
        let r = self.stash.lock().expect("circulation stash").r.clone();
        let walk = Walk::new(&g0, &g1, &g2, &self.pi, self.tau, self.chunk, r)?;
        let (n0, n1, n2) = (g0.dim(0)?, g1.dim(0)?, g2.dim(0)?);
        let d = g0.dim(1)?;
        let seed = grad.detach().flatten_all()?.to_vec1::<f32>()?[0] as f64;
        // Every gradient below carries the factor seed / (n_0 τ).
        let k = seed / (n0 as f64 * self.tau);
        let mut dg0 = Vec::new();
        let mut dg1 = Tensor::zeros((n1, d), DType::F32, &Device::Cpu)?;
        let mut dg2 = Tensor::zeros((n2, d), DType::F32, &Device::Cpu)?;
        let mut rho_bar = Tensor::zeros(n1, DType::F32, &Device::Cpu)?;
        for (start, len) in walk.chunks()? {
            let t = walk.terms(start, len)?;
            let rho = t.log_m.broadcast_sub(&t.log_c.unsqueeze(1)?)?.exp()?;
            let ds = (t.log_a0.exp()? - &rho)?; // ∂ℓ/∂S_0 for this chunk, before k·τ
            let g0c = g0.narrow(0, start, len)?;
            dg0.push((ds.matmul(&g1)? * k)?);
            dg1 = (dg1 + (ds.t()?.matmul(&g0c)? * k)?)?;
            // The −ρᵀΠ part of ∂L/∂S_1, pushed to G_1 and to the rows π(I) of G_2.
            let g2_pi = g2.index_select(&t.pi, 0)?;
            dg1 = (dg1 - (rho.t()?.matmul(&g2_pi)? * k)?)?;
            dg2 = dg2.index_add(&t.pi, &(rho.matmul(&g1)? * (-k))?, 0)?;
            rho_bar = (rho_bar + rho.sum(0)?)?;
        }
        // The diag(ρ̄) A_1 part, over chunks of the middle group.
        let mut dg1_parts = Vec::new();
        for start in (0..n1).step_by(self.chunk) {
            let len = self.chunk.min(n1 - start);
            let a1 = walk.a1_rows(start, len)?;
            let rb = rho_bar.narrow(0, start, len)?.unsqueeze(1)?;
            dg1_parts.push(a1.matmul(&g2)?.broadcast_mul(&rb)?);
            let weighted = g1.narrow(0, start, len)?.broadcast_mul(&rb)?;
            dg2 = (dg2 + (a1.t()?.matmul(&weighted)? * k)?)?;
        }
        let dg1 = (dg1 + (Tensor::cat(&dg1_parts, 0)? * k)?)?;
        Ok((Some(Tensor::cat(&dg0, 0)?), Some(dg1), Some(dg2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_close, check_gradient, n3, rows};
    use gyre_kernels::Var;

    /// docs/spec/test-vectors.md TV10: P = [n(1,0.1,0), n(0,1,0.2)], Q = [e1, e2, e3],
    /// R = [n(0.9,0,0.1), n(0.1,0.9,0)], π = id.
    fn tv10() -> Result<(Tensor, Tensor, Tensor)> {
        Ok((
            rows(&[n3([1.0, 0.1, 0.0]), n3([0.0, 1.0, 0.2])])?,
            rows(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])?,
            rows(&[n3([0.9, 0.0, 0.1]), n3([0.1, 0.9, 0.0])])?,
        ))
    }

    fn all_forms(g: &[&Tensor], pi: Option<&[u32]>, tau: f64) -> Result<[f64; 3]> {
        let opts = CirculationOptions { tau, chunk: 1 };
        Ok([
            circulation_loss(g, pi, opts)?.loss.to_scalar::<f32>()? as f64,
            circulation_loss_composed(g, pi, tau)?
                .loss
                .to_scalar::<f32>()? as f64,
            circulation_loss_dense(g, pi, tau)?.to_scalar::<f32>()? as f64,
        ])
    }

    #[test]
    fn tv10_two_hop_circulation_both_temperatures() -> Result<()> {
        let (p, q, r) = tv10()?;
        for l in all_forms(&[&p, &q, &r], None, 0.5)? {
            assert_close(l, 0.3114680, 1e-5);
        }
        for l in all_forms(&[&p, &q, &r], None, 0.1)? {
            assert_close(l, 3.4205e-4, 1e-3);
        }
        // And C itself at τ = 0.5: C[0,0] = 0.7288465, C[1,1] = 0.7359126.
        let c = circulation_loss(
            &[&p, &q, &r],
            None,
            CirculationOptions { tau: 0.5, chunk: 1 },
        )?;
        assert_close(c.return_probability, (0.7288465 + 0.7359126) / 2.0, 1e-5);
        assert_eq!(c.cycle_accuracy, 1.0);
        Ok(())
    }

    #[test]
    fn c4_closed_form_for_identical_orthonormal_groups() -> Result<()> {
        // Identical groups of N orthonormal nodes: A has eigenvalues 1 and a − b, and for a walk of
        // m hops W[i,i] = (1 + (N−1)(a−b)^m)/N, L = −ln W[i,i].
        let e = rows(&[
            [1f32, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ])?;
        let nn = 4f64;
        for (tau, hops) in [(1.0f64, 2usize), (0.5, 2), (1.0, 3), (0.7, 4)] {
            let a = (1.0 / tau).exp() / ((1.0 / tau).exp() + nn - 1.0);
            let b = 1.0 / ((1.0 / tau).exp() + nn - 1.0);
            let want = -((1.0 + (nn - 1.0) * (a - b).powi(hops as i32)) / nn).ln();
            let g: Vec<&Tensor> = (0..=hops).map(|_| &e).collect();
            let got = circulation_loss(&g, None, CirculationOptions { tau, chunk: 3 })?;
            assert_close(got.loss.to_scalar::<f32>()? as f64, want, 1e-5);
            let dense = circulation_loss_dense(&g, None, tau)?.to_scalar::<f32>()? as f64;
            assert_close(dense, want, 1e-5);
        }
        Ok(())
    }

    #[test]
    fn tv16_dense_form_matches_log_space_within_epsilon() -> Result<()> {
        // TV16: CE(log(C + ε), i) = −ln(C[i,i] + ε) + ln Σ_j (C[i,j] + ε) ≈ −ln C[i,i]; the dense
        // (ε) and log-space forms agree to float precision on random groups.
        let g: Vec<Tensor> = (0..3)
            .map(|s| random_groups(5 + s, 6, 40 + s as u64))
            .collect::<Result<_>>()?;
        let pi = [0u32, 3, 1, 6, 2];
        let refs: Vec<&Tensor> = g.iter().collect();
        let [fused, composed, dense] = all_forms(&refs, Some(&pi), 0.2)?;
        assert_close(fused, dense, 1e-5);
        assert_close(composed, dense, 1e-5);
        Ok(())
    }

    fn random_groups(n: usize, d: usize, seed: u64) -> Result<Tensor> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v: Vec<f32> = (0..n * d)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        crate::l2_normalize(&Tensor::from_vec(v, (n, d), &Device::Cpu)?)
    }

    #[test]
    fn three_hops_equal_the_brute_force_matrix_product() -> Result<()> {
        let g: Vec<Tensor> = [4usize, 7, 5, 4]
            .iter()
            .enumerate()
            .map(|(l, &n)| random_groups(n, 3, l as u64))
            .collect::<Result<_>>()?;
        let tau = 0.3;
        // Brute force in f64 with plain loops.
        let v: Vec<Vec<Vec<f64>>> = g
            .iter()
            .map(|t| t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap())
            .collect();
        let hop = |a: &Vec<Vec<f64>>, b: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
            a.iter()
                .map(|x| {
                    let e: Vec<f64> = b
                        .iter()
                        .map(|y| (x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>() / tau).exp())
                        .collect();
                    let s: f64 = e.iter().sum();
                    e.iter().map(|v| v / s).collect()
                })
                .collect()
        };
        let mut c = hop(&v[0], &v[1]);
        for l in 1..3 {
            let a = hop(&v[l], &v[l + 1]);
            c = c
                .iter()
                .map(|row| {
                    (0..a[0].len())
                        .map(|j| row.iter().zip(&a).map(|(r, ar)| r * ar[j]).sum())
                        .collect()
                })
                .collect();
        }
        let pi = [2u32, 0, 3, 1];
        let want = -(0..4).map(|i| c[i][pi[i] as usize].ln()).sum::<f64>() / 4.0;
        let refs: Vec<&Tensor> = g.iter().collect();
        let got = circulation_loss(&refs, Some(&pi), CirculationOptions { tau, chunk: 2 })?;
        assert_close(got.loss.to_scalar::<f32>()? as f64, want, 1e-5);
        let hits = (0..4)
            .filter(|&i| {
                let row = &c[i];
                let best = (0..row.len())
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap();
                best == pi[i] as usize
            })
            .count();
        assert_close(got.cycle_accuracy, hits as f64 / 4.0, 1e-12);
        // Gradients of the three-hop composition and of the dense form, by finite differences.
        let d: Vec<Tensor> = g
            .iter()
            .map(|t| t.to_dtype(DType::F64))
            .collect::<Result<_>>()?;
        check_gradient(
            &g[1],
            |x| Ok(circulation_loss_composed(&[&d[0], x, &d[2], &d[3]], Some(&pi), tau)?.loss),
            1e-4,
        )?;
        check_gradient(
            &g[2],
            |x| circulation_loss_dense(&[&d[0], &d[1], x, &d[3]], Some(&pi), tau),
            1e-4,
        )
    }

    #[test]
    fn fused_gradients_equal_composed_and_finite_differences() -> Result<()> {
        let g0 = random_groups(9, 5, 1)?;
        let g1 = random_groups(13, 5, 2)?;
        let g2 = random_groups(7, 5, 3)?;
        let pi = [0u32, 1, 2, 3, 4, 5, 6, 0, 3];
        let tau = 0.25;
        let vars: Vec<Var> = [&g0, &g1, &g2]
            .iter()
            .map(|t| Var::from_tensor(t))
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        // Chunks of 4 rows: three chunks of G_0 and four of G_1, the last ones short.
        let fused = circulation_loss(&refs, Some(&pi), CirculationOptions { tau, chunk: 4 })?;
        let composed = circulation_loss_composed(&refs, Some(&pi), tau)?;
        let gf = fused.loss.backward()?;
        let gc = composed.loss.backward()?;
        for v in &vars {
            let a = gf
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let b = gc
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?;
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
            }
        }
        // Finite differences of the composed form in f64, each group in turn.
        let (g0d, g1d, g2d) = (
            g0.to_dtype(DType::F64)?,
            g1.to_dtype(DType::F64)?,
            g2.to_dtype(DType::F64)?,
        );
        let f = |a: &Tensor, b: &Tensor, c: &Tensor| {
            circulation_loss_composed(&[a, b, c], Some(&pi), tau).map(|c| c.loss)
        };
        check_gradient(&g0, |x| f(x, &g1d, &g2d), 1e-4)?;
        check_gradient(&g1, |x| f(&g0d, x, &g2d), 1e-4)?;
        check_gradient(&g2, |x| f(&g0d, &g1d, x), 1e-4)
    }

    #[test]
    fn detached_middle_group_gets_no_gradient_and_the_rest_does() -> Result<()> {
        let v0 = Var::from_tensor(&random_groups(6, 4, 5)?)?;
        // An EMA-encoded middle group: its encoder must get no gradient through the walk.
        let ema = Var::from_tensor(&random_groups(10, 4, 6)?)?;
        let bank = ema.as_tensor().affine(1.0, 0.0)?.detach();
        let v2 = Var::from_tensor(&random_groups(6, 4, 7)?)?;
        let c = circulation_loss(
            &[v0.as_tensor(), &bank, v2.as_tensor()],
            None,
            CirculationOptions::default(),
        )?;
        let g = c.loss.backward()?;
        assert!(g.get(ema.as_tensor()).is_none());
        assert!(g.get(v0.as_tensor()).is_some() && g.get(v2.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn invariant_to_permuting_a_middle_group() -> Result<()> {
        let g0 = random_groups(6, 4, 11)?;
        let g1 = random_groups(9, 4, 12)?;
        let g2 = random_groups(6, 4, 13)?;
        let perm = Tensor::from_vec(vec![4u32, 8, 0, 2, 7, 1, 3, 6, 5], 9, &Device::Cpu)?;
        let g1p = g1.index_select(&perm, 0)?;
        let a = circulation_loss(&[&g0, &g1, &g2], None, CirculationOptions::default())?;
        let b = circulation_loss(&[&g0, &g1p, &g2], None, CirculationOptions::default())?;
        assert_close(
            a.loss.to_scalar::<f32>()? as f64,
            b.loss.to_scalar::<f32>()? as f64,
            1e-5,
        );
        Ok(())
    }

    #[test]
    fn no_nan_for_equal_similarities_or_small_tau() -> Result<()> {
        // Every row of the middle group identical: all similarities in a row are equal.
        let g0 = random_groups(5, 3, 21)?;
        let same = rows(&[[0.0f32, 0.0, 1.0]; 6])?;
        let c = circulation_loss(&[&g0, &same, &g0], None, CirculationOptions::default())?;
        let l = c.loss.to_scalar::<f32>()?;
        // C = A_0 A_1 with A_0 uniform over identical nodes and A_1 rows all equal: C[i,·] = that
        // row, so the loss is finite and the gradient too.
        assert!(l.is_finite());
        let v = Var::from_tensor(&g0)?;
        let c = circulation_loss(
            &[v.as_tensor(), &same, v.as_tensor()],
            None,
            CirculationOptions::default(),
        )?;
        let gr = c.loss.backward()?.get(v.as_tensor()).unwrap().clone();
        assert!(gr
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|x| x.is_finite()));
        // τ = 0.05 with nearly opposite nodes: logits of ±20 stay finite in log space.
        let a = random_groups(8, 3, 31)?;
        let b = random_groups(8, 3, 32)?;
        let v = Var::from_tensor(&a)?;
        for form in 0..2 {
            let opts = CirculationOptions {
                tau: 0.05,
                chunk: 3,
            };
            let c = if form == 0 {
                circulation_loss(&[v.as_tensor(), &b, &b.neg()?], None, opts)?
            } else {
                circulation_loss_composed(&[v.as_tensor(), &b, &b.neg()?], None, 0.05)?
            };
            let l = c.loss.to_scalar::<f32>()?;
            assert!(l.is_finite(), "form {form}: {l}");
            let gr = c.loss.backward()?.get(v.as_tensor()).unwrap().clone();
            assert!(gr
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .all(|x| x.is_finite()));
        }
        Ok(())
    }

    #[test]
    fn blocks_average_over_all_rows() -> Result<()> {
        let (p, q, r) = tv10()?;
        let g0 = random_groups(4, 3, 41)?;
        let g1 = random_groups(5, 3, 42)?;
        let one = circulation_loss(&[&p, &q, &r], None, CirculationOptions::default())?;
        let two = circulation_loss(&[&g0, &g1, &g0], None, CirculationOptions::default())?;
        let both = circulation_loss_blocks(
            &[(vec![&p, &q, &r], None), (vec![&g0, &g1, &g0], None)],
            CirculationOptions::default(),
        )?;
        let want = (2.0 * one.loss.to_scalar::<f32>()? as f64
            + 4.0 * two.loss.to_scalar::<f32>()? as f64)
            / 6.0;
        assert_close(both.loss.to_scalar::<f32>()? as f64, want, 1e-6);
        Ok(())
    }

    #[test]
    fn rejects_bad_closure_and_shapes() -> Result<()> {
        let (p, q, r) = tv10()?;
        let opts = CirculationOptions::default();
        assert!(circulation_loss(&[&p, &q, &r], Some(&[0, 5]), opts).is_err());
        assert!(circulation_loss(&[&p, &q, &r], Some(&[0]), opts).is_err());
        assert!(circulation_loss(&[&p], None, opts).is_err());
        assert!(circulation_loss(&[&p, &q, &q], None, opts).is_err()); // identity, n_0 ≠ n_L
        let zero_tau = CirculationOptions { tau: 0.0, chunk: 4 };
        assert!(circulation_loss(&[&p, &q, &r], None, zero_tau).is_err());
        Ok(())
    }
}
