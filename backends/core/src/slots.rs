//! The one slot table: per-connection state indexed by [`Slot`], with generations.
//!
//! A [`Slot`] names a table index *and* the generation of the use it belongs to. The core
//! allocates slots with [`SlotTable::alloc`]: a free index is reused, and every
//! [`remove`](SlotTable::remove) bumps the index's generation, so a [`Slot`] kept from an
//! earlier use of the index no longer finds anything. A driver keeps its per-connection
//! state in a table of its own, filled with [`insert`](SlotTable::insert) at the slot the
//! core chose: it takes the generation from the slot and tags the kernel operations it
//! issues with [`Slot::generation`] (or its low bits), with no counter of its own.
//!
//! Every lookup by [`Slot`] checks the generation. Drivers, whose completions carry only
//! an index and the low bits of a generation, look the index up with
//! [`get_at`](SlotTable::get_at) and compare the bits against the returned slot's
//! generation.
//!
//! Generations are 32 bits and wrap around: a slot would have to be reused 2^32 times
//! while a stale reference to it is still around to be mistaken for a live one (and
//! 2^24 times for the io_uring driver, whose `user_data` carries 24 bits).

use crate::driver::Slot;

/// One index of the table.
#[derive(Debug)]
struct Entry<T> {
    /// The generation of the occupant, or of the next one while vacant.
    generation: u32,
    /// Whether the index is on the free list (it then is vacant, or was filled by
    /// [`SlotTable::insert`] since and is skipped when popped).
    listed: bool,
    value: Option<T>,
}

/// Values indexed by [`Slot`], generation-checked. See the [module docs](self).
#[derive(Debug)]
pub struct SlotTable<T> {
    entries: Vec<Entry<T>>,
    /// Vacant indices for [`alloc`](Self::alloc), most recently freed last. An index is
    /// listed at most once; one that [`insert`](Self::insert) filled meanwhile is skipped.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for SlotTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> SlotTable<T> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// An empty table with room for `capacity` slots before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Number of occupied slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is occupied.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the highest index ever used: every slot's [`index`](Slot::index) is below.
    #[inline]
    pub fn bound(&self) -> usize {
        self.entries.len()
    }

    /// Stores `value` in a free slot (the most recently freed index, else a new one) and
    /// returns the slot, carrying the index's current generation.
    ///
    /// # Panics
    ///
    /// If the table already holds 2^32 - 1 indices.
    pub fn alloc(&mut self, value: T) -> Slot {
        self.alloc_with(|_| value)
    }

    /// Like [`alloc`](Self::alloc), for a value that needs to know its own slot.
    pub fn alloc_with(&mut self, make: impl FnOnce(Slot) -> T) -> Slot {
        let slot = self.vacant();
        let entry = &mut self.entries[slot.index()];
        entry.value = Some(make(slot));
        self.len += 1;
        slot
    }

    /// The slot [`alloc`](Self::alloc) would return next, without taking it. Taking it
    /// later with [`insert`](Self::insert) is how a caller reserves a slot before it has
    /// the value.
    pub fn next_slot(&mut self) -> Slot {
        let slot = self.vacant();
        // Leave the index listed: `insert` or the next `alloc` takes it.
        let entry = &mut self.entries[slot.index()];
        if !entry.listed {
            entry.listed = true;
            self.free.push(slot.index() as u32);
        }
        slot
    }

    /// A vacant index, taken off the free list (or new), as a slot of its generation.
    fn vacant(&mut self) -> Slot {
        while let Some(index) = self.free.pop() {
            let entry = &mut self.entries[index as usize];
            entry.listed = false;
            if entry.value.is_none() {
                return Slot::new(index, entry.generation);
            }
        }
        let index = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i != u32::MAX)
            .expect("slot table full");
        self.entries.push(Entry {
            generation: 0,
            listed: false,
            value: None,
        });
        Slot::new(index, 0)
    }

    /// Stores `value` at `slot`, which someone else chose (the core, for a driver): the
    /// index takes the slot's generation. Gives `value` back if the index is occupied.
    pub fn insert(&mut self, slot: Slot, value: T) -> Result<(), T> {
        let index = slot.index();
        if index >= u32::MAX as usize {
            return Err(value);
        }
        if index >= self.entries.len() {
            self.entries.resize_with(index + 1, || Entry {
                generation: 0,
                listed: false,
                value: None,
            });
        }
        let entry = &mut self.entries[index];
        if entry.value.is_some() {
            return Err(value);
        }
        entry.generation = slot.generation();
        entry.value = Some(value);
        self.len += 1;
        Ok(())
    }

    /// The value at `slot`, if the index is occupied in the slot's generation.
    #[inline]
    pub fn get(&self, slot: Slot) -> Option<&T> {
        match self.entries.get(slot.index()) {
            Some(e) if e.generation == slot.generation() => e.value.as_ref(),
            _ => None,
        }
    }

    /// The value at `slot`, mutably, if the index is occupied in the slot's generation.
    #[inline]
    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut T> {
        match self.entries.get_mut(slot.index()) {
            Some(e) if e.generation == slot.generation() => e.value.as_mut(),
            _ => None,
        }
    }

    /// Whether `slot` is occupied in its generation.
    #[inline]
    pub fn contains(&self, slot: Slot) -> bool {
        self.get(slot).is_some()
    }

    /// The occupant of `index`, whatever its generation, with its full slot: for a caller
    /// that knows only the index (and perhaps some bits of the generation) and checks the
    /// generation itself.
    #[inline]
    pub fn get_at(&self, index: usize) -> Option<(Slot, &T)> {
        let e = self.entries.get(index)?;
        let value = e.value.as_ref()?;
        Some((Slot::new(index as u32, e.generation), value))
    }

    /// Like [`get_at`](Self::get_at), mutably.
    #[inline]
    pub fn get_at_mut(&mut self, index: usize) -> Option<(Slot, &mut T)> {
        let e = self.entries.get_mut(index)?;
        let value = e.value.as_mut()?;
        Some((Slot::new(index as u32, e.generation), value))
    }

    /// Takes the value out of `slot` if the index is occupied in the slot's generation;
    /// the index's generation moves on and the index becomes free for
    /// [`alloc`](Self::alloc).
    pub fn remove(&mut self, slot: Slot) -> Option<T> {
        let entry = self.entries.get_mut(slot.index())?;
        if entry.generation != slot.generation() {
            return None;
        }
        let value = entry.value.take()?;
        entry.generation = entry.generation.wrapping_add(1);
        if !entry.listed {
            entry.listed = true;
            self.free.push(slot.index() as u32);
        }
        self.len -= 1;
        Some(value)
    }

    /// The occupied slots and their values, by index.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> + '_ {
        self.entries.iter().enumerate().filter_map(|(i, e)| {
            e.value
                .as_ref()
                .map(|v| (Slot::new(i as u32, e.generation), v))
        })
    }

    /// The occupied slots and their values, mutably, by index.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut T)> + '_ {
        self.entries.iter_mut().enumerate().filter_map(|(i, e)| {
            let generation = e.generation;
            e.value
                .as_mut()
                .map(|v| (Slot::new(i as u32, generation), v))
        })
    }

    /// The occupied slots, by index (a snapshot, so the table may change meanwhile).
    pub fn slots(&self) -> Vec<Slot> {
        self.iter().map(|(slot, _)| slot).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_packs_index_and_generation() {
        let s = Slot::new(7, 3);
        assert_eq!(s.index(), 7);
        assert_eq!(s.generation(), 3);
        assert_eq!(Slot(7).index(), 7);
        assert_eq!(Slot(7).generation(), 0);
        let max = Slot::new(u32::MAX, u32::MAX);
        assert_eq!(max.index(), u32::MAX as usize);
        assert_eq!(max.generation(), u32::MAX);
    }

    #[test]
    fn alloc_get_remove() {
        let mut t = SlotTable::new();
        let a = t.alloc("a");
        let b = t.alloc("b");
        assert_ne!(a, b);
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(a), Some(&"a"));
        *t.get_mut(b).unwrap() = "B";
        assert_eq!(t.get(b), Some(&"B"));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.remove(a), None, "removed twice");
        assert_eq!(t.len(), 1);
        assert!(!t.contains(a));
        assert!(t.contains(b));
    }

    #[test]
    fn stale_generation_is_refused() {
        let mut t = SlotTable::new();
        let old = t.alloc(1);
        t.remove(old);
        let new = t.alloc(2);
        assert_eq!(new.index(), old.index(), "the freed index is reused");
        assert_eq!(
            new.generation(),
            old.generation() + 1,
            "reuse bumps the generation"
        );
        assert_eq!(t.get(old), None);
        assert_eq!(t.get_mut(old), None);
        assert_eq!(
            t.remove(old),
            None,
            "a stale slot cannot remove the new occupant"
        );
        assert_eq!(t.get(new), Some(&2));
        assert_eq!(t.get_at(old.index()), Some((new, &2)));
    }

    #[test]
    fn generation_wraps_around() {
        let mut t = SlotTable::new();
        let s = Slot::new(0, u32::MAX);
        t.insert(s, ()).unwrap();
        t.remove(s).unwrap();
        let next = t.alloc(());
        assert_eq!(next, Slot::new(0, 0), "the generation after u32::MAX is 0");
        assert!(!t.contains(s));
        assert!(t.contains(next));
    }

    #[test]
    fn insert_at_a_chosen_slot() {
        let mut t = SlotTable::new();
        let s = Slot::new(5, 9);
        t.insert(s, "x").unwrap();
        assert_eq!(t.bound(), 6);
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(s), Some(&"x"));
        assert_eq!(t.get(Slot::new(5, 8)), None);
        assert_eq!(t.insert(Slot::new(5, 10), "y"), Err("y"), "occupied");
        assert_eq!(t.remove(s), Some("x"));
        // The core may hand the index back in any generation.
        t.insert(Slot::new(5, 100), "z").unwrap();
        assert_eq!(t.get(Slot::new(5, 100)), Some(&"z"));
        assert_eq!(t.insert(Slot::new(u32::MAX, 0), "w"), Err("w"));
    }

    #[test]
    fn inserted_and_allocated_slots_do_not_collide() {
        let mut t = SlotTable::new();
        let a = t.alloc('a');
        t.remove(a);
        // Index 0 is listed as free; fill it by insert, then alloc must skip it.
        t.insert(Slot::new(0, 7), 'i').unwrap();
        let b = t.alloc('b');
        assert_ne!(b.index(), 0);
        assert_eq!(t.get(Slot::new(0, 7)), Some(&'i'));
        // Removing and inserting the same index many times lists it once.
        for g in 0..100 {
            let s = Slot::new(3, g);
            t.insert(s, 'r').unwrap();
            t.remove(s).unwrap();
        }
        assert!(
            t.free.len() <= t.bound(),
            "free list bounded: {}",
            t.free.len()
        );
    }

    #[test]
    fn next_slot_reserves_without_taking() {
        let mut t = SlotTable::new();
        let s = t.next_slot();
        assert_eq!(t.next_slot(), s, "asking twice names the same slot");
        assert!(t.is_empty());
        t.insert(s, 1).unwrap();
        let other = t.alloc(2);
        assert_ne!(other.index(), s.index());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn iteration_sees_occupied_slots_in_index_order() {
        let mut t = SlotTable::new();
        let slots: Vec<Slot> = (0..5).map(|i| t.alloc(i)).collect();
        t.remove(slots[1]);
        t.remove(slots[3]);
        let seen: Vec<(Slot, i32)> = t.iter().map(|(s, v)| (s, *v)).collect();
        assert_eq!(seen, vec![(slots[0], 0), (slots[2], 2), (slots[4], 4)]);
        for (_, v) in t.iter_mut() {
            *v *= 10;
        }
        assert_eq!(t.slots(), vec![slots[0], slots[2], slots[4]]);
        assert_eq!(t.get(slots[4]), Some(&40));
        let again = t.alloc(9);
        assert_eq!(again.index(), 3, "most recently freed first");
        assert_eq!(again.generation(), 1);
    }
}
