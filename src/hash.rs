//! A fast hasher for keys the program makes itself: the tracker's query ids and the
//! simulation's answers. `SipHash`, the standard one, resists keys chosen by an attacker;
//! neither of these can be chosen from outside, and at scale `SipHash` was a visible share of
//! the cost of counting a reply and of keeping an answer.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `HashSet` with [`FastHasher`].
pub type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;

/// Mixes each word in with a rotation, an xor and a multiplication (the scheme of the Rust
/// compiler's own "Fx" hasher).
#[derive(Default)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.add(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
        let mut last = [0; 8];
        last[..words.remainder().len()].copy_from_slice(words.remainder());
        self.add(u64::from_le_bytes(last));
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // hashbrown takes the bucket from the low bits: ids in a row must not share them.
        let buckets: HashSet<u64> = (1..=1024u64)
            .map(|id| {
                let mut h = FastHasher::default();
                h.write_u64(id);
                h.finish() & 1023
            })
            .collect();
        assert_eq!(buckets.len(), 1024);
    }

    #[test]
    fn bytes_that_differ_hash_apart() {
        let hash = |bytes: &[u8]| {
            let mut h = FastHasher::default();
            h.write(bytes);
            h.finish()
        };
        assert_ne!(hash(b"S1 S2"), hash(b"S1 S3"));
        assert_ne!(hash(b"abcdefgh1"), hash(b"abcdefgh2"));
    }
}
