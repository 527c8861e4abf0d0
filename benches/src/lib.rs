//! Shared set-up of the criterion benchmarks (in `benches/`) and the memory probes (in
//! `examples/`), so that both measure exactly the same work.

use gyre_kernels::{Device, Result, Tensor, Var};

/// A `/proc/self/status` field in kB (`"VmRSS:"`, `"VmHWM:"`: the memory probes' readings);
/// NaN where there is none (not Linux).
pub fn status_kb(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// `n` L2-normalised rows of dimension `d` from a fixed pseudo-random fill keyed by `seed`
/// (candle's CPU `randn` cannot be seeded), so every run measures the same numbers.
fn fill(n: usize, d: usize, seed: u64) -> Tensor {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n * d)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    gyre_losses::l2_normalize(&Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()).unwrap()
}

/// Three L2-normalised random groups `[n0, d]`, `[n1, d]`, `[n0, d]` (the instance-level IRC walk:
/// view 1 → memory → view 2), the first and last as variables (the same fill: results §3.2 was
/// measured so).
pub fn circulation_groups(n0: usize, n1: usize, d: usize) -> (Var, Tensor, Var) {
    let g = |n: usize| fill(n, d, n as u64);
    (
        Var::from_tensor(&g(n0)).unwrap(),
        g(n1),
        Var::from_tensor(&g(n0)).unwrap(),
    )
}

/// IRC dense's three groups of cells for a batch of `b` image pairs, `cells` cells per view
/// (`[b, cells, d]`, each cell L2-normalised): view a's (a variable), the partner's (the EMA
/// teacher's, no gradient) and view a′'s (a variable) — the shapes `irc::dense` walks.
pub fn dense_circulation_groups(b: usize, cells: usize, d: usize) -> (Var, Tensor, Var) {
    let g = |seed: u64| fill(b * cells, d, seed).reshape((b, cells, d)).unwrap();
    (
        Var::from_tensor(&g(1)).unwrap(),
        g(2),
        Var::from_tensor(&g(3)).unwrap(),
    )
}

/// How IRC dense's pixel circulation is formed, for [`dense_circulation_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseForm {
    /// One walk per image pair through the fused chunked op (`circulation_loss_blocks`, as
    /// `irc::dense` calls it): memory `chunk × cells` per block, blocks one after another.
    Blocks,
    /// One walk over all `b × cells` cells of the batch through the fused chunked op.
    FlatFused,
    /// One walk over all cells with `C` materialised (`n × n` with `n = b × cells`), the form
    /// of the released code before its block-diagonal mask.
    FlatDense,
}

/// One forward + backward of IRC dense's pixel circulation (τ = 0.1, π = identity within each
/// image pair) in the given form. Returns the loss.
pub fn dense_circulation_step(g0: &Var, g1: &Tensor, g2: &Var, form: DenseForm) -> Result<f32> {
    let (b, cells, d) = g0.as_tensor().dims3()?;
    let loss = match form {
        DenseForm::Blocks => {
            let parts = |t: &Tensor| -> Result<Vec<Tensor>> { (0..b).map(|k| t.get(k)).collect() };
            let (p0, p1, p2) = (parts(g0.as_tensor())?, parts(g1)?, parts(g2.as_tensor())?);
            let blocks: Vec<(Vec<&Tensor>, Option<&[u32]>)> = (0..b)
                .map(|k| (vec![&p0[k], &p1[k], &p2[k]], None))
                .collect();
            gyre_losses::circulation_loss_blocks(&blocks, Default::default())?.loss
        }
        DenseForm::FlatFused | DenseForm::FlatDense => {
            let flat = |t: &Tensor| t.reshape((b * cells, d));
            let groups = [flat(g0.as_tensor())?, flat(g1)?, flat(g2.as_tensor())?];
            walk_loss(
                &groups.iter().collect::<Vec<_>>(),
                form == DenseForm::FlatDense,
            )?
        }
    };
    backward_and_value(&loss)
}

/// The circulation loss of one walk over `groups` (π = identity, τ = 0.1): the fused chunked
/// op, or the dense form with `C` materialised.
fn walk_loss(groups: &[&Tensor], dense: bool) -> Result<Tensor> {
    if dense {
        gyre_losses::circulation_loss_dense(groups, None, 0.1)
    } else {
        Ok(gyre_losses::circulation_loss(groups, None, Default::default())?.loss)
    }
}

/// Runs the backward of a scalar loss and returns its value.
fn backward_and_value(loss: &Tensor) -> Result<f32> {
    loss.backward()?;
    loss.to_scalar::<f32>()
}

/// One forward + backward of the circulation loss (π = identity, τ = 0.1): the fused chunked op,
/// or the dense form with `C` materialised. Returns the loss.
pub fn circulation_step(g0: &Var, g1: &Tensor, g2: &Var, dense: bool) -> Result<f32> {
    backward_and_value(&walk_loss(&[g0.as_tensor(), g1, g2.as_tensor()], dense)?)
}
