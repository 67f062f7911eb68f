//! The simulator's randomness: one seeded generator, no dependency.
//!
//! SplitMix64 (Steele, Lea, Flood, 2014): a 64-bit state advanced by a constant and mixed
//! by two multiply-xorshift rounds. Small, fast, and every seed gives a full-period,
//! well-mixed stream, which is all a simulation needs (nothing here is cryptographic).

/// A seeded pseudo-random generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; equal seeds give equal streams.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (`0` for `n == 0`), without modulo bias worth speaking of
    /// (Lemire's multiply-shift).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// A `usize` in `lo..=hi`.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        self.range(lo as u64, hi as u64) as usize
    }

    /// `true` with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A generator of its own, independent of this one's later numbers.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Byte `index` of the pattern stream named `key`: what a simulated peer (or handler)
/// sends at that offset, so a receiver can check every byte without keeping a copy.
pub fn pattern_byte(key: u64, index: u64) -> u8 {
    (mix(key ^ (index / 8).wrapping_mul(0x2545_F491_4F6C_DD1D)) >> ((index % 8) * 8)) as u8
}

/// Bytes `start..start + len` of the pattern stream named `key`.
pub fn pattern(key: u64, start: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| pattern_byte(key, start + i))
        .collect()
}

/// The first offset where `data` differs from the pattern `key` at `start`.
pub fn pattern_mismatch(key: u64, start: u64, data: &[u8]) -> Option<usize> {
    data.iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern_byte(key, start + i as u64))
        .map(|(i, _)| i)
}

/// A 64-bit FNV-1a hash, fed piece by piece: the trace of a run.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xCBF2_9CE4_8422_2325)
    }
}

impl Fnv {
    /// Feeds `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn below_stays_below() {
        let mut r = Rng::new(1);
        for n in 1..200 {
            assert!(r.below(n) < n);
            let x = r.range(3, 3 + n);
            assert!((3..=3 + n).contains(&x));
        }
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn pattern_checks_itself() {
        let p = pattern(42, 5, 100);
        assert_eq!(pattern_mismatch(42, 5, &p), None);
        assert_eq!(pattern_mismatch(42, 6, &p[1..]), None);
        let mut q = p.clone();
        q[17] ^= 1;
        assert_eq!(pattern_mismatch(42, 5, &q), Some(17));
    }
}
