//! Token encoding: which object a readiness event is about.
//!
//! A [`mio::Token`] is one `usize`. Its two low bits name the kind of object, the next 32
//! bits its id (a [`ListenerId`] or a [`Slot`]), and, for connections, the bits above carry
//! the low bits of the slot's generation (30 bits on 64-bit targets, none on 32-bit ones),
//! so an event meant for an earlier use of a slot is recognised and dropped. On 32-bit
//! targets ids must stay below 2^30 to fit.

use mio::Token;
use ringmill_core::driver::{ListenerId, Slot};

const KIND_BITS: u32 = 2;
const KIND_MASK: usize = (1 << KIND_BITS) - 1;
const KIND_WAKER: usize = 0;
const KIND_LISTENER: usize = 1;
const KIND_CONN: usize = 2;
const ID_MASK: usize = u32::MAX as usize;
const GEN_SHIFT: u32 = KIND_BITS + u32::BITS;
/// Generation bits that fit above the kind and the id.
const GEN_BITS: u32 = usize::BITS.saturating_sub(GEN_SHIFT);

/// The waker's token.
pub(crate) const WAKER: Token = Token(KIND_WAKER);

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The loop's waker.
    Waker,
    /// A listening socket.
    Listener(ListenerId),
    /// A connection: its slot's index and the low bits of its generation (see
    /// [`generation_bits`]).
    Conn {
        /// The slot's index.
        index: u32,
        /// [`generation_bits`] of the slot's generation.
        generation: u32,
    },
}

/// The part of a generation a token can carry.
pub(crate) fn generation_bits(generation: u32) -> u32 {
    if GEN_BITS >= u32::BITS {
        generation
    } else {
        generation & ((1u32 << GEN_BITS) - 1)
    }
}

/// The token of listener `id`, if the id fits.
pub(crate) fn listener(id: ListenerId) -> Option<Token> {
    encode(KIND_LISTENER, id.0, 0)
}

/// The token of connection `slot` (its index and its generation's low bits), if the slot
/// fits.
pub(crate) fn conn(slot: Slot) -> Option<Token> {
    encode(
        KIND_CONN,
        slot.index() as u32,
        generation_bits(slot.generation()),
    )
}

/// Whether `slot` is the one a token of `index` and `generation` bits names.
pub(crate) fn names(slot: Slot, index: u32, generation: u32) -> bool {
    slot.index() == index as usize && generation_bits(slot.generation()) == generation
}

fn encode(kind: usize, id: u32, generation: u32) -> Option<Token> {
    let low = usize::try_from(id).ok()?.checked_mul(1 << KIND_BITS)? | kind;
    let high = usize::try_from(generation)
        .ok()?
        .checked_shl(GEN_SHIFT)
        .unwrap_or(0);
    Some(Token(low | high))
}

/// What `token` names; `None` for a token this driver never hands out.
pub(crate) fn decode(token: Token) -> Option<Target> {
    let raw = token.0;
    let id = ((raw >> KIND_BITS) & ID_MASK) as u32;
    match raw & KIND_MASK {
        KIND_WAKER if raw == KIND_WAKER => Some(Target::Waker),
        KIND_LISTENER => Some(Target::Listener(ListenerId(id))),
        KIND_CONN => Some(Target::Conn {
            index: id,
            generation: raw.checked_shr(GEN_SHIFT).unwrap_or(0) as u32,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(decode(WAKER), Some(Target::Waker));
        for id in [0, 1, 7, 1 << 20, (1 << 30) - 1] {
            let t = listener(ListenerId(id)).unwrap();
            assert_eq!(decode(t), Some(Target::Listener(ListenerId(id))));
            for generation in [0, 1, 5, u32::MAX] {
                let slot = Slot::new(id, generation);
                let t = conn(slot).unwrap();
                assert_eq!(
                    decode(t),
                    Some(Target::Conn {
                        index: id,
                        generation: generation_bits(generation),
                    })
                );
                assert!(names(slot, id, generation_bits(generation)));
            }
        }
    }

    #[test]
    fn kinds_do_not_collide() {
        let l = listener(ListenerId(3)).unwrap();
        let c = conn(Slot(3)).unwrap();
        assert_ne!(l, c);
        assert_ne!(l, WAKER);
        assert_ne!(c, WAKER);
        assert_ne!(conn(Slot(0)).unwrap(), WAKER);
        assert_eq!(decode(Token(3)), None);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn generations_differ_in_tokens() {
        assert_eq!(GEN_BITS, 30);
        let a = conn(Slot::new(u32::MAX, 1)).unwrap();
        let b = conn(Slot::new(u32::MAX, 2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(
            decode(a),
            Some(Target::Conn {
                index: u32::MAX,
                generation: 1
            })
        );
        assert!(!names(Slot::new(u32::MAX, 2), u32::MAX, 1));
    }
}
