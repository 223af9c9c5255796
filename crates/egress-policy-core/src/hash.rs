//! The hash of every lookup table of the core (list entries, host tables, path prefixes): a
//! multiply-rotate hash over eight bytes at a time, several times cheaper per lookup than the
//! standard library's SipHash.
//!
//! Not a library's: rustc-hash 2 and foldhash were measured in its place (issue 21). Both cut
//! the native instructions per request by ≈ 2% but grew the wasm module by 7 KB and 10 KB,
//! because their string hashing multiplies 64 by 64 bits into 128, which wasm32 emulates; this
//! one multiplies within 64 bits.
//!
//! SipHash defends a table whose keys an attacker chooses. These tables are filled only from the
//! configuration and the list provider; a request only looks its value up and inserts nothing, so
//! no request can make entries collide. (A provider that served entries crafted to collide would
//! slow its own list's lookups; it is trusted to serve the list at all.)

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
pub type FastSet<T> = HashSet<T, BuildHasherDefault<FastHasher>>;

/// The rustc-hash ("Fx") step: rotate, mix in a word, multiply by an odd constant.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word.get_mut(..rest.len())
                .unwrap_or_default()
                .copy_from_slice(rest);
            // The length keeps "a" and "a\0" apart.
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_u128(&mut self, value: u128) {
        // Both halves: the truncation is the point.
        self.add(value as u64);
        self.add((value >> 64) as u64);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits, which the multiply leaves dependent on
        // the low bits of the input only (IPv4 networks all ending in `.0` would share them):
        // the rotation brings the well-mixed high bits down.
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_differ_anywhere_hash_apart() {
        let hash = |s: &str| {
            let mut h = FastHasher::default();
            std::hash::Hash::hash(s, &mut h);
            h.finish()
        };
        let samples = [
            "",
            "a",
            "a\0",
            "b",
            "/sport",
            "/sport/",
            "/sporu",
            "edition.cnn.com",
            "edition.cnn.con",
        ];
        for (i, a) in samples.iter().enumerate() {
            for b in samples.iter().skip(i + 1) {
                assert_ne!(hash(a), hash(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_set_finds_what_it_holds_and_nothing_else() {
        let set: FastSet<Box<str>> = (0..10_000).map(|i| format!("/p/{i}").into()).collect();
        assert!((0..10_000).all(|i| set.contains(format!("/p/{i}").as_str())));
        assert!(!set.contains("/p/10000") && !set.contains("/p/"));
    }
}
