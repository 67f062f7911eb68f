//! Helpers the fuzz targets share: cutting the input into the pieces a socket could
//! deliver, and feeding them to a layer.

use ringmill::layer::{Frames, Layer, Piece};

/// A fuzz input: one byte of parameters, then the bytes "from the peer", which
/// [`Input::chunks`] cuts into pieces of 1 to 64 bytes chosen by a seed.
pub struct Input<'a> {
    /// A parameter byte for the target (a cap, a choice of handshake).
    pub param: u8,
    seed: u8,
    /// The bytes from the peer.
    pub data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `raw` into its parameters and data (`None` if too short).
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        match raw {
            [param, seed, data @ ..] => Some(Self {
                param: *param,
                seed: *seed,
                data,
            }),
            _ => None,
        }
    }

    /// The data cut into pieces of 1 to 64 bytes, sizes from a small generator seeded by
    /// the input, so the fuzzer controls the cuts too.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut state = u32::from(self.seed) | 0x100;
        let mut rest = self.data;
        let mut out = Vec::new();
        while !rest.is_empty() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = ((state >> 16) as usize % 64 + 1).min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(head);
            rest = tail;
        }
        out
    }
}

/// What feeding a layer produced: the pieces passed up, in order, and whether it failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Fed {
    /// Whole frames (`true`) and stream runs (`false`) passed up.
    pub pieces: Vec<(bool, Vec<u8>)>,
    /// Bytes the layer wanted sent back.
    pub out: Vec<u8>,
    /// It returned an error (and was fed nothing more).
    pub failed: bool,
}

/// Feeds `chunks` to `layer` through `decode_frames`, stopping at the first error.
pub fn feed(layer: &mut impl Layer, chunks: &[&[u8]]) -> Fed {
    let mut fed = Fed {
        pieces: Vec::new(),
        out: Vec::new(),
        failed: false,
    };
    for chunk in chunks {
        let mut up = Frames::new();
        let result = layer.decode_frames(chunk, &mut up, &mut fed.out);
        for piece in up.iter() {
            match piece {
                Piece::Frame(b) => fed.pieces.push((true, b.to_vec())),
                Piece::Stream(b) => match fed.pieces.last_mut() {
                    Some((false, run)) => run.extend_from_slice(b),
                    _ => fed.pieces.push((false, b.to_vec())),
                },
            }
        }
        if result.is_err() {
            fed.failed = true;
            break;
        }
    }
    fed
}
