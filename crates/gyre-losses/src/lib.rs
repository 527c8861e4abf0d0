//! Self-supervised losses as pure functions on candle tensors, one file per loss, each citing its
//! paper. Nothing here owns parameters, queues or state: callers pass tensors in and get a scalar
//! loss (with autograd) back.
//!
//! Conventions: embeddings are rows (`[N, D]`); every loss returns the **mean over rows**, and each
//! file says which reference convention that matches.

pub mod auto_pair;
pub mod barlow_twins;
pub mod byol;
pub mod circulation;
pub mod crw;
pub mod densecl;
pub mod dino;
pub mod info_nce;
pub mod interclr;
pub mod nnclr;
pub mod normalize;
pub mod nt_xent;
pub mod pixpro;
pub mod reco;
pub mod ressl;
pub mod simsiam;
pub mod softmax;
pub mod swav;
#[cfg(test)]
pub(crate) mod testing;
pub mod vicreg;

pub use auto_pair::{auto_pair, auto_pair_blocks, AutoPairOptions, AutoPairs, Balance};
pub use barlow_twins::{barlow_twins_loss, cross_correlation, standardize_columns};
pub use byol::{byol_loss, cosine_rows};
pub use circulation::{
    circulation_loss, circulation_loss_blocks, circulation_loss_composed, circulation_loss_dense,
    Circulation, CirculationOptions,
};
pub use crw::{crw_loss, CrwOutput, EdgeDropout};
pub use dino::{dino_loss, teacher_targets, update_center};
pub use info_nce::{info_nce, logits_ce_first};
pub use interclr::inter_loss;
pub use nnclr::{nearest_neighbours, nnclr_loss};
pub use normalize::l2_normalize;
pub use nt_xent::{nt_xent, nt_xent_extra_positives};
pub use reco::{cutmix_kept_fraction, interpolation_target, local_relation_loss};
pub use ressl::{ressl_loss, soft_cross_entropy};
pub use simsiam::simsiam_loss;
pub use softmax::softmax_rows;
pub use swav::{sinkhorn_knopp, swapped_prediction};
pub use vicreg::{vicreg_loss, VicRegTerms, VicRegWeights};
