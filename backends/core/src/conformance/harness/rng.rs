//! A deterministic generator and random payloads.

/// A small deterministic pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Random payloads: one of each of `sizes`, then `random` more of up to `max` bytes.
pub fn payloads(seed: u64, sizes: &[usize], random: usize, max: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut out: Vec<Vec<u8>> = sizes.iter().map(|&n| rng.bytes(n)).collect();
    for _ in 0..random {
        let n = 1 + rng.below(max);
        out.push(rng.bytes(n));
    }
    out
}
