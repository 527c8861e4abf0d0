//! What one training step of a method takes and gives: where in training it is
//! ([`StepContext`]), the loss and log scalars ([`StepOutput`]), and the hooks a plug-in such as
//! IRC needs from any method ([`PairHooks`], [`AutoPositives`]). Everything the methods and the
//! machinery below them share lives here, so that none of it imports from `method`.

use gyre_kernels::{Result, Tensor};

/// Where in training a step is (schedules inside methods: ramps, momentum, warm-ups).
#[derive(Debug, Clone, Copy)]
pub struct StepContext {
    /// Steps done before this one.
    pub step: u64,
    /// Steps in the whole run.
    pub total_steps: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
}

impl StepContext {
    /// Epochs done before this step, fractional.
    pub fn epoch_progress(&self) -> f64 {
        self.step as f64 / self.steps_per_epoch.max(1) as f64
    }
}

/// What one step of a method produced.
pub struct StepOutput {
    /// The scalar to minimise.
    pub loss: Tensor,
    /// Extra scalars for the step log (loss terms, plug-in diagnostics).
    pub logs: Vec<(&'static str, f64)>,
    /// The online embeddings `[B, D]` of one view, whose spread the trainer logs on each step line
    /// as `embed_std` ([`crate::metrics::embedding_std`]).
    pub embeddings: Tensor,
    /// The Task S pair for a plug-in (IRC): every two-view method exposes it.
    pub pair: Option<PairHooks>,
}

/// A method's two views of each image as a plug-in sees them: their backbone features, the
/// view-2 embeddings its memory keeps, and the method's own loss for extra positives.
pub struct PairHooks {
    /// View-1 backbone features `[B, F]`, with gradient (the walk starts here).
    pub view1: Tensor,
    /// View-2 backbone features `[B, F]` (online or the teacher's, as the method computes them).
    pub view2: Tensor,
    /// Which of the step's views is view 2 (an EMA memory encodes its images).
    pub view2_index: usize,
    /// View-2 base-head embeddings `[B, D]`: the memory's base entries (auto-paired positives).
    pub base_v2: Tensor,
    /// Whether the memory keeps `base_v2` as it is; otherwise (the cosine and InfoNCE methods)
    /// it keeps each row L2-normalised. Codes and targets that are distributions (SwAV, DINO),
    /// and projections standardised over the batch (Barlow Twins, VICReg), keep their scale: a
    /// unit row would change what their pair loss computes.
    pub keep_base_scale: bool,
    /// The method's loss for auto-paired positives: each row of [`AutoPositives::rows`] (a view-1
    /// image) gets its positive, in the method's own objective (each method file says how).
    pub pair_loss: PairLoss,
    /// The cells behind the pair, for IRC's dense level: methods with a momentum teacher that
    /// encodes view 2 give them; `None` otherwise.
    pub dense: Option<DenseHooks>,
}

/// The backbone maps of a method's pair, for a walk over their cells.
pub struct DenseHooks {
    /// View 1's last-stage map `[B, F, h, w]`, online, with gradient (its mean is `view1`).
    pub view1_map: Tensor,
    /// The momentum teacher's map of view 2 `[B, F, h, w]`, detached.
    pub view2_map: Tensor,
    /// The teacher's momentum this step (a plug-in's EMA heads follow it).
    pub momentum: f64,
}

/// A method's loss for auto-paired positives (see [`PairHooks::pair_loss`]).
pub type PairLoss = Box<dyn FnOnce(&AutoPositives) -> Result<Tensor>>;

/// Auto-paired positives of one step, ready for a method's pair loss.
pub struct AutoPositives {
    /// View-1 rows that get an extra positive.
    pub rows: Vec<u32>,
    /// Their positives: the matched memory entries' base embeddings, `[rows, D]`, detached.
    pub positives: Tensor,
    /// The ramp weight times `auto_pair_weight`.
    pub weight: f64,
}

impl AutoPositives {
    /// The paired rows of `x` (the batch's view-1 embeddings, `[B, D]`), aligned with
    /// `positives`: the queries of a method's pair loss.
    pub fn queries(&self, x: &Tensor) -> Result<Tensor> {
        let rows = Tensor::from_slice(&self.rows, self.rows.len(), x.device())?;
        x.index_select(&rows, 0)
    }
}
