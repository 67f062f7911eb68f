//! The lock-free connection map: `ConnectionId -> Arc<V>`, on crossbeam-epoch.
//!
//! # Design
//!
//! A fixed array of buckets (a power of two, at least [`MIN_BUCKETS`], sized from
//! [`ConnMap::with_capacity`]); each bucket is a lock-free singly linked list in the style of
//! Harris and Michael. The bucket of an id is `id & mask`: ids come from one process-wide
//! counter, so consecutive ids land in consecutive buckets and spread evenly without hashing.
//!
//! Each list is kept sorted by **descending** id. Ids are handed out mostly in increasing
//! order, so a new id nearly always belongs at the head of its list: an insert is one CAS on
//! the bucket head, without walking the list. A lookup stops at the first node whose id is
//! not greater than the one it looks for. The bucket array is never resized; it is sized for
//! the expected number of live connections, and lists only grow (gracefully) beyond that.
//!
//! Removal is two steps. First the node's `next` pointer is tagged with 1 (a `fetch_or`):
//! that is the logical delete, the moment the id stops resolving, and exactly one remover wins
//! it. Then the node is unlinked with a CAS on its predecessor's `next`. Traversals that
//! modify the list (insert, remove) help unlink marked nodes they meet; [`ConnMap::get`]
//! and [`ConnMap::for_each`] only read and skip marked nodes. A `remove` does not return
//! before its node is unlinked (by itself or by a helper), so removed nodes never linger in
//! the lists. The thread whose CAS unlinks a node hands it to `guard.defer_destroy`, so it is
//! freed once no pinned thread can still see it.
//!
//! # Values and reclamation
//!
//! A node owns one `Arc<V>` and drops it when the node is freed, which may happen later, on
//! any thread, when crossbeam-epoch collects garbage. If that is the last reference, `V` is
//! dropped there. So the values stored here must only own memory: a socket, a pool buffer or
//! anything else whose release has to happen at a known time and place must be owned
//! elsewhere (the event loop keeps them). `V: 'static` because the drop can happen after the
//! map itself is gone.
//!
//! No guard outlives a call: [`ConnMap::get`] returns a cloned `Arc`. Only
//! [`ConnMap::for_each`] runs caller code while pinned (see there).
//!
//! # Model checking
//!
//! The map reaches crossbeam-epoch and its atomics only through the private `sync` module:
//! re-exports in a normal build, a stand-in on loom's atomics under `--cfg loom`, so the loom
//! models (`map/loom_models.rs`, run by `ci/loom.sh`) check this very code.

use self::sync::{self as epoch, Atomic, AtomicUsize, Guard, Owned, Shared};
use crate::id::ConnectionId;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

// crossbeam-epoch, or under `cfg(loom)` a stand-in on loom's atomics (see there).
mod sync;

#[cfg(all(test, loom))]
mod loom_models;
// Not under loom: loom's atomics work only inside a loom model.
#[cfg(all(test, not(loom)))]
mod tests;

/// Fewest buckets a map has.
pub const MIN_BUCKETS: usize = 64;
/// Most buckets a map has, whatever capacity it is asked for (lists just grow beyond it).
pub const MAX_BUCKETS: usize = 1 << 22;

/// Tag on a node's `next` pointer marking the node as removed.
const REMOVED: usize = 1;

struct Node<V> {
    id: u64,
    value: Arc<V>,
    /// Successor; tagged [`REMOVED`] once this node is logically deleted, and never changed
    /// after that.
    next: Atomic<Node<V>>,
}

/// A lock-free map from connection id to shared connection state.
///
/// `Send + Sync` when `V` is (derived: every field is).
pub struct ConnMap<V> {
    buckets: Box<[Atomic<Node<V>>]>,
    mask: u64,
    len: AtomicUsize,
}

impl<V: Send + Sync + 'static> ConnMap<V> {
    /// A map sized for about `capacity` live entries.
    ///
    /// It has `capacity` rounded up to a power of two buckets, at least [`MIN_BUCKETS`] and
    /// at most [`MAX_BUCKETS`]; it never resizes, and holds any number of entries.
    pub fn with_capacity(capacity: usize) -> Self {
        let n = capacity
            .checked_next_power_of_two()
            .unwrap_or(MAX_BUCKETS)
            .clamp(MIN_BUCKETS, MAX_BUCKETS);
        ConnMap {
            buckets: (0..n).map(|_| Atomic::null()).collect(),
            mask: n as u64 - 1,
            len: AtomicUsize::new(0),
        }
    }

    /// Inserts `value` under `id`; ids are unique, so it must not be present.
    ///
    /// Panics if `id` is present (ids are never reused, so this is a bug in the caller).
    pub fn insert(&self, id: ConnectionId, value: Arc<V>) {
        // Counted before the node is visible, so a racing `remove` can never make the
        // count dip below zero.
        self.len.fetch_add(1, Ordering::Relaxed);
        let head = self.bucket(id);
        let guard = &epoch::pin();
        let mut node = Owned::new(Node {
            id: id.0,
            value,
            next: Atomic::null(),
        });
        loop {
            let (pred, curr) = Self::find(head, id.0, guard);
            // SAFETY: `curr` was loaded while `guard` is pinned, so it is null or points to a
            // node that is not freed before `guard` is dropped.
            if let Some(c) = unsafe { curr.as_ref() } {
                if c.id == id.0 {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    panic!("ConnMap::insert: {id} is already present (ids are never reused)");
                }
            }
            node.next.store(curr, Ordering::Relaxed);
            match pred.compare_exchange(curr, node, Ordering::Release, Ordering::Relaxed, guard) {
                Ok(_) => return,
                Err(e) => node = e.new,
            }
        }
    }

    /// The value under `id`, if present.
    ///
    /// Once a [`remove`](Self::remove) of `id` has begun to return, `get` never finds it
    /// again.
    pub fn get(&self, id: ConnectionId) -> Option<Arc<V>> {
        let guard = &epoch::pin();
        let mut curr = self.bucket(id).load(Ordering::Acquire, guard);
        // SAFETY: every pointer followed here was loaded while `guard` is pinned, from the
        // bucket head or from the `next` of a node reached that way. A node is only freed
        // after it is unlinked and every thread pinned at that time has unpinned; a node we
        // reach is either still linked or was unlinked after we pinned (its successor cannot
        // be unlinked before it, as its frozen `next` is the successor's only link), so it
        // stays allocated while `guard` lives.
        while let Some(c) = unsafe { curr.as_ref() } {
            if c.id <= id.0 {
                let next = c.next.load(Ordering::Acquire, guard);
                return (c.id == id.0 && next.tag() != REMOVED).then(|| Arc::clone(&c.value));
            }
            curr = c.next.load(Ordering::Acquire, guard);
        }
        None
    }

    /// Removes and returns the value under `id`.
    ///
    /// If several threads remove the same id, exactly one gets the value.
    pub fn remove(&self, id: ConnectionId) -> Option<Arc<V>> {
        let head = self.bucket(id);
        let guard = &epoch::pin();
        let (pred, curr) = Self::find(head, id.0, guard);
        // SAFETY: `curr` was loaded while `guard` is pinned (see `find`).
        let c = unsafe { curr.as_ref() }?;
        if c.id != id.0 {
            return None;
        }
        // The logical delete: exactly one `fetch_or` sees the tag still clear.
        let next = c.next.fetch_or(REMOVED, Ordering::AcqRel, guard);
        if next.tag() == REMOVED {
            return None;
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
        let value = Arc::clone(&c.value);
        // Unlink it now if nothing changed around it; otherwise the next traversal that
        // meets it does.
        if pred
            .compare_exchange(
                curr,
                next.with_tag(0),
                Ordering::AcqRel,
                Ordering::Relaxed,
                guard,
            )
            .is_ok()
        {
            // SAFETY: the CAS unlinked the node, so it is no longer reachable from the bucket
            // head, and only the thread whose CAS unlinks a node destroys it (once). Threads
            // still holding a pointer to it are pinned, and the epoch defers the free until
            // they have all unpinned.
            unsafe { guard.defer_destroy(curr) };
        } else {
            // Finish the unlink (ours or someone else's) before returning, so the list does
            // not keep removed nodes around.
            Self::find(head, id.0, guard);
        }
        Some(value)
    }

    /// Entries present.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no entry is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` for every entry present (a weakly consistent snapshot).
    ///
    /// Every entry present for the whole call is seen exactly once; entries inserted or
    /// removed during the call may or may not be seen. `f` runs while an epoch guard is
    /// pinned (released between buckets), so it must be quick and must not block: do not
    /// call user callbacks from inside `f`; collect the `Arc`s (see
    /// [`snapshot`](Self::snapshot)) and call them after.
    pub fn for_each(&self, mut f: impl FnMut(ConnectionId, &Arc<V>)) {
        for head in self.buckets.iter() {
            let guard = &epoch::pin();
            let mut curr = head.load(Ordering::Acquire, guard);
            // SAFETY: as in `get`: every node reached was loaded while `guard` is pinned.
            while let Some(c) = unsafe { curr.as_ref() } {
                let next = c.next.load(Ordering::Acquire, guard);
                if next.tag() != REMOVED {
                    f(ConnectionId(c.id), &c.value);
                }
                curr = next;
            }
        }
    }

    /// Every entry present, as a weakly consistent snapshot (see
    /// [`for_each`](Self::for_each)), in no particular order.
    pub fn snapshot(&self) -> Vec<(ConnectionId, Arc<V>)> {
        let mut out = Vec::with_capacity(self.len());
        self.for_each(|id, v| out.push((id, Arc::clone(v))));
        out
    }

    fn bucket(&self, id: ConnectionId) -> &Atomic<Node<V>> {
        &self.buckets[(id.0 & self.mask) as usize]
    }

    /// The first unremoved node of the list at `head` with an id not greater than `id`
    /// (or null), and the link pointing to it. Unlinks the removed nodes it passes.
    ///
    /// The returned link is either `head` or the `next` of a node that was unremoved when
    /// it was read; a CAS on it expecting the returned node fails if that node has been
    /// removed since (its `next` then carries the tag).
    fn find<'g>(
        head: &'g Atomic<Node<V>>,
        id: u64,
        guard: &'g Guard,
    ) -> (&'g Atomic<Node<V>>, Shared<'g, Node<V>>) {
        'retry: loop {
            let mut pred = head;
            let mut curr = pred.load(Ordering::Acquire, guard);
            loop {
                // SAFETY: `curr` was loaded while `guard` is pinned, from `head` or from the
                // `next` of a node reached that way, so it is not freed before `guard` is
                // dropped (see `get`).
                let Some(c) = (unsafe { curr.as_ref() }) else {
                    return (pred, curr);
                };
                let next = c.next.load(Ordering::Acquire, guard);
                if next.tag() == REMOVED {
                    // Help unlink it. If `pred` changed (an insert before `curr`, or `pred`
                    // itself removed), start again from the head.
                    match pred.compare_exchange(
                        curr,
                        next.with_tag(0),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                        guard,
                    ) {
                        Ok(_) => {
                            // SAFETY: this CAS unlinked `curr`; only the unlinking thread
                            // destroys a node, after every thread that may still see it has
                            // unpinned (see `remove`).
                            unsafe { guard.defer_destroy(curr) };
                            curr = next.with_tag(0);
                            continue;
                        }
                        Err(_) => continue 'retry,
                    }
                }
                if c.id <= id {
                    return (pred, curr);
                }
                pred = &c.next;
                curr = next;
            }
        }
    }
}

impl<V> Drop for ConnMap<V> {
    fn drop(&mut self) {
        // SAFETY: `&mut self` means no other thread is using the map, so nothing can change
        // the lists or hold pointers into them obtained from this map; the unprotected guard
        // is sound for reading nodes nobody else accesses.
        let guard = unsafe { epoch::unprotected() };
        for head in self.buckets.iter() {
            let mut curr = head.load(Ordering::Relaxed, guard);
            while !curr.is_null() {
                // SAFETY: `curr` is a node still linked into the list (unlinked nodes are
                // not reachable from the heads; they belong to the epoch's deferred
                // destructors). It is freed exactly once, here, and not used afterwards.
                let node = unsafe { curr.into_owned() };
                curr = node.next.load(Ordering::Relaxed, guard).with_tag(0);
            }
        }
    }
}

impl<V> fmt::Debug for ConnMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnMap")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("buckets", &self.buckets.len())
            .finish()
    }
}
