//! The 64-bit `user_data` every SQE carries: slot index (32 bits), the low 24 bits of the
//! slot's generation (the core's, carried by the [`Slot`]) and operation kind (8 bits), so
//! a completion finds its connection and operation, and a completion for an earlier use
//! of a slot is recognised by its generation.

use ringmill_core::driver::Slot;

/// Bits of the generation field.
const GEN_BITS: u32 = 24;
/// Mask of the generation field.
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// What an operation is, so its completion is routed to the right handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Multishot receive of a connection.
    Recv = 1,
    /// `SEND` or `SENDMSG` of a connection.
    Send = 2,
    /// `CONNECT` of a connection.
    Connect = 3,
    /// An `ASYNC_CANCEL` aimed at a connection's operations.
    Cancel = 4,
    /// Multishot accept of a listener (the slot field holds the listener id).
    Accept = 5,
    /// An `ASYNC_CANCEL` aimed at a listener's accept.
    AcceptCancel = 6,
    /// The waker's eventfd read.
    Wake = 7,
    /// The cancel-everything request issued when the driver is dropped.
    Drain = 8,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Recv,
            2 => Kind::Send,
            3 => Kind::Connect,
            4 => Kind::Cancel,
            5 => Kind::Accept,
            6 => Kind::AcceptCancel,
            7 => Kind::Wake,
            8 => Kind::Drain,
            _ => return None,
        })
    }
}

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UserData {
    /// Slot or listener id.
    pub index: u32,
    /// Generation of the slot when the operation was issued.
    pub gen: u32,
    /// The operation.
    pub kind: Kind,
}

impl UserData {
    /// A `user_data` for `kind` on `index` at generation `gen` (truncated to 24 bits).
    pub(crate) fn new(index: u32, gen: u32, kind: Kind) -> Self {
        Self {
            index,
            gen: gen & GEN_MASK,
            kind,
        }
    }

    /// The packed form for an SQE.
    pub(crate) fn encode(self) -> u64 {
        u64::from(self.index) | (u64::from(self.gen & GEN_MASK) << 32) | ((self.kind as u64) << 56)
    }

    /// Unpacks a CQE's `user_data`; `None` for a value this driver never issued.
    pub(crate) fn decode(raw: u64) -> Option<Self> {
        let kind = Kind::from_u8((raw >> 56) as u8)?;
        Some(Self {
            index: raw as u32,
            gen: ((raw >> 32) as u32) & GEN_MASK,
            kind,
        })
    }
}

impl UserData {
    /// A `user_data` for `kind` on connection `slot`: its index and the low 24 bits of
    /// its generation.
    pub(crate) fn of(slot: Slot, kind: Kind) -> Self {
        Self::new(slot.index() as u32, slot.generation(), kind)
    }

    /// Whether this `user_data` names `slot` (its index and generation bits), rather than
    /// an earlier use of the slot's index.
    pub(crate) fn names(self, slot: Slot) -> bool {
        self.index as usize == slot.index() && self.gen == slot.generation() & GEN_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for kind in [
            Kind::Recv,
            Kind::Send,
            Kind::Connect,
            Kind::Cancel,
            Kind::Accept,
            Kind::AcceptCancel,
            Kind::Wake,
            Kind::Drain,
        ] {
            for (index, gen) in [(0, 0), (u32::MAX, GEN_MASK), (7, 12345), (1 << 31, 1)] {
                let ud = UserData::new(index, gen, kind);
                assert_eq!(UserData::decode(ud.encode()), Some(ud));
            }
        }
    }

    #[test]
    fn generation_is_truncated() {
        let ud = UserData::new(1, GEN_MASK + 5, Kind::Recv);
        assert_eq!(ud.gen, 4);
        let slot = Slot::new(9, GEN_MASK + 5);
        let ud = UserData::of(slot, Kind::Send);
        assert_eq!((ud.index, ud.gen), (9, 4));
        assert!(ud.names(slot));
        assert!(!ud.names(Slot::new(9, 5)), "another generation");
        assert!(!ud.names(Slot::new(8, GEN_MASK + 5)), "another index");
        assert!(UserData::decode(ud.encode()).unwrap().names(slot));
    }

    #[test]
    fn foreign_values_are_rejected() {
        assert_eq!(UserData::decode(0), None);
        assert_eq!(UserData::decode(0xff << 56), None);
    }

    #[test]
    fn fields_do_not_overlap() {
        let a = UserData::new(u32::MAX, 0, Kind::Recv).encode();
        let b = UserData::new(0, GEN_MASK, Kind::Recv).encode();
        assert_eq!(a & b, (Kind::Recv as u64) << 56);
    }
}
