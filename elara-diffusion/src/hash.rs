//! A fast seeded hash for the crate's hash tables, keyed mostly by 32-byte [`NodeId`]s.
//!
//! Node ids are hashes of public keys, so their bytes are already well mixed; what the tables
//! need is a cheap function of all 32 bytes whose low and high bits are both good (std's
//! hashbrown takes the bucket from the low bits and a 7-bit tag from the top; the interest
//! map's node table takes its slot from the low bits of the low 32 and its tag from their top
//! 7). [`hash_id`] xors each of
//! the four 8-byte words of an id with a key derived from the seed and folds them pairwise with
//! a multiply (the 128-bit product's halves xored), then folds once more: three multiplies,
//! about a dozen instructions, against ~150 for a general byte-stream hash. Both operands of
//! every multiply are keyed, so no choice of id word zeroes a product (which would make the
//! other word irrelevant). The streaming [`IdHasher`] folds word by word into a seeded state.
//! The seed comes from the owner's configuration, so ids cannot be ground to collide in a
//! given node's tables.

use std::hash::{BuildHasher, Hasher};

use elara_core::NodeId;

const K: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];
const FINAL: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a).wrapping_mul(u128::from(b));
    (m as u64) ^ ((m >> 64) as u64)
}

/// The secret keys of [`hash_id`], derived once from a table's seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdKeys([u64; 4]);

impl IdKeys {
    pub(crate) fn new(seed: u64) -> Self {
        IdKeys(std::array::from_fn(|j| {
            fold(seed ^ K[j], FINAL ^ K[(j + 1) & 3])
        }))
    }
}

/// Hash of a node id under `keys`: two folded multiplies, each of two id words xored with
/// keys, so both operands of every multiply are secret (an id word that zeroes one operand
/// would make the other word irrelevant, and the keys keep anyone from choosing it), then one
/// more to mix the result.
#[inline(always)]
pub(crate) fn hash_id(keys: &IdKeys, id: &NodeId) -> u64 {
    let b = id.as_bytes();
    let w = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_le_bytes(x)
    };
    let k = &keys.0;
    let h = fold(w(0) ^ k[0], w(1) ^ k[1]) ^ fold(w(2) ^ k[2], w(3) ^ k[3]);
    // Mixes the high product bits down, so that the low bits are good for structured ids too.
    fold(h, FINAL)
}

/// A [`BuildHasher`] for std hash maps keyed by [`NodeId`] (or small integer keys).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHashBuilder {
    seed: u64,
}

impl IdHashBuilder {
    pub(crate) fn new(seed: u64) -> Self {
        IdHashBuilder { seed }
    }
}

impl BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher {
            state: self.seed ^ K[0],
            words: 0,
        }
    }
}

/// The streaming form of [`hash_id`]: folds every 8-byte word written into the state.
pub(crate) struct IdHasher {
    state: u64,
    words: u64,
}

impl IdHasher {
    #[inline(always)]
    fn word(&mut self, w: u64) {
        let k = K[(self.words & 3) as usize];
        self.state = fold(self.state ^ w, k ^ self.words);
        self.words += 1;
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut x = [0u8; 8];
            x.copy_from_slice(c);
            self.word(u64::from_le_bytes(x));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut x = [0u8; 8];
            x[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(x) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.word(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.word(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.state, FINAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn buckets_and_tags_spread_for_sequential_and_random_ids() {
        for seed in [0, 7] {
            let mut low = HashSet::new();
            let mut tags = HashSet::new();
            for i in 0..4096u64 {
                let h = hash_id(&IdKeys::new(seed), &NodeId::from_u64(i));
                low.insert(h & 4095);
                tags.insert(h >> 57);
            }
            // A random function fills about 63 % of 4096 buckets with 4096 keys.
            assert!(low.len() > 2400, "{}", low.len());
            assert_eq!(tags.len(), 128);
        }
        let (k1, k2) = (IdKeys::new(1), IdKeys::new(2));
        let id = NodeId::from_u64(5);
        assert_ne!(hash_id(&k1, &id), hash_id(&k2, &id), "the seed matters");
        let a = IdHashBuilder::new(1).hash_one(NodeId::from_u64(5));
        let b = IdHashBuilder::new(2).hash_one(NodeId::from_u64(5));
        assert_ne!(a, b, "the seed matters");
    }

    #[test]
    fn no_public_word_value_makes_another_word_irrelevant() {
        // With a key in one operand only, an id whose second word equals the public constant
        // zeroes the product: every first word would then give the same hash.
        let keys = IdKeys::new(9);
        let mut seen = HashSet::new();
        for i in 0..256u64 {
            for zeroing in [0, K[1], K[3]] {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&i.to_le_bytes());
                b[8..16].copy_from_slice(&zeroing.to_le_bytes());
                b[16..24].copy_from_slice(&i.to_le_bytes());
                b[24..].copy_from_slice(&zeroing.to_le_bytes());
                seen.insert((zeroing, hash_id(&keys, &NodeId::from_bytes(b))));
            }
        }
        assert_eq!(seen.len(), 3 * 256);
    }
}
