//! Counter-based randomness: a ChaCha8 stream whose key is (seed, epoch, sample index, view), so
//! any draw can be recomputed from its coordinates alone, in any order, on any thread.

use gyre_rng::ChaCha8Rng;

/// The view number used for per-epoch draws that belong to no sample (the shuffle).
pub const EPOCH_STREAM: u64 = u64::MAX;

/// An RNG stream for one (seed, epoch, index, view) coordinate. It implements `rand::RngCore`.
pub struct SampleRng;

impl SampleRng {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(seed: u64, epoch: u64, index: u64, view: u64) -> ChaCha8Rng {
        gyre_rng::stream([seed, epoch, index, view])
    }
}

/// A permutation of `0..n` for `epoch`, from the epoch's own stream (Fisher–Yates).
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    use rand::Rng;
    let mut rng = SampleRng::new(seed, epoch, EPOCH_STREAM, 0);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.gen_range(0..=i);
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn streams_depend_on_every_coordinate() {
        let a = SampleRng::new(1, 2, 3, 0).next_u64();
        assert_eq!(a, SampleRng::new(1, 2, 3, 0).next_u64());
        assert_ne!(a, SampleRng::new(0, 2, 3, 0).next_u64());
        assert_ne!(a, SampleRng::new(1, 1, 3, 0).next_u64());
        assert_ne!(a, SampleRng::new(1, 2, 4, 0).next_u64());
        assert_ne!(a, SampleRng::new(1, 2, 3, 1).next_u64());
    }

    #[test]
    fn permutation_is_a_permutation_and_changes_per_epoch() {
        let p0 = epoch_permutation(5, 0, 1000);
        let mut s = p0.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(p0, epoch_permutation(5, 1, 1000));
        assert_eq!(p0, epoch_permutation(5, 0, 1000));
    }
}
