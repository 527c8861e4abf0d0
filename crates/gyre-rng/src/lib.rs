//! Keyed random streams: a ChaCha8 stream whose 256-bit key is four 64-bit words — a seed and
//! three coordinates or tags — so that every random draw in gyre (data augmentation, initial
//! weights, noise-initialised queues, k-means, Shuffle-BN permutations, CutMix boxes) can be
//! recomputed from its coordinates alone, in any order, on any thread.
//!
//! The words are laid out little-endian in order (`key[0..8]` = word 0, …). Eight-byte tags name
//! the purpose of a stream (`tag(b"gyreinit")`), so that two uses of the same seed and
//! coordinates never share a stream.

use rand_chacha::rand_core::SeedableRng;
pub use rand_chacha::ChaCha8Rng;

/// The stream keyed by `words`.
pub fn stream(words: [u64; 4]) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, w) in key.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// An eight-byte tag as a key word (its bytes in order).
pub const fn tag(name: &[u8; 8]) -> u64 {
    u64::from_le_bytes(*name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn every_word_keys_the_stream_and_tags_are_their_bytes() {
        let a = stream([1, 2, 3, 4]).next_u64();
        assert_eq!(a, stream([1, 2, 3, 4]).next_u64());
        for w in 0..4 {
            let mut k = [1, 2, 3, 4];
            k[w] += 1;
            assert_ne!(a, stream(k).next_u64(), "word {w}");
        }
        // The key is the words' bytes in order: a tag word is its eight bytes verbatim.
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&7u64.to_le_bytes());
        key[16..24].copy_from_slice(b"gyreinit");
        assert_eq!(
            ChaCha8Rng::from_seed(key).next_u64(),
            stream([7, 0, tag(b"gyreinit"), 0]).next_u64()
        );
    }
}
