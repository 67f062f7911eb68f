//! Issue 5, item 9: loom models of the connection map's algorithm and of a send racing a
//! close. Run by `ci/loom.sh` (`RUSTFLAGS="--cfg loom"`); compiled out otherwise.
//!
//! loom cannot see through crossbeam-epoch (its atomics are not loom's), so these models
//! run a **test-only copy** of `backends/core/src/map.rs`'s list algorithm — the same
//! Harris-Michael list sorted by descending id, with the same loads, stores, CASes and
//! orderings: the logical delete by tagging `next` (`fetch_or`), unlinking by CAS on the
//! predecessor, traversals that help unlink marked nodes and restart when their CAS
//! fails, inserts that CAS the predecessor link. What the copy does not model is memory
//! reclamation: unlinked nodes are put on a retired list (where the map calls
//! `defer_destroy`) and freed when the model ends, so the models check that every unlinked
//! node is retired exactly once (the map's "dropped exactly once"), not crossbeam-epoch
//! itself. If `map.rs` changes its algorithm, this copy must change with it.
#![allow(unexpected_cfgs)]
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const REMOVED: usize = 1;

struct Node {
    id: u64,
    value: u64,
    /// Successor pointer, tagged `REMOVED` once this node is logically deleted.
    next: AtomicUsize,
}

/// One bucket of the map: a list sorted by descending id.
struct List {
    head: AtomicUsize,
    /// Nodes unlinked (where the map defers their destruction).
    retired: Mutex<Vec<usize>>,
    /// Every node allocated, freed when the list is dropped.
    allocated: Mutex<Vec<usize>>,
}

/// The node `p` points to (tag ignored), if any.
fn node<'a>(p: usize) -> Option<&'a Node> {
    let p = p & !REMOVED;
    // SAFETY: non-null pointers in the list come from `Box::into_raw` in `insert` and are
    // freed only in `List::drop`, after every thread of the model has finished.
    (p != 0).then(|| unsafe { &*(p as *const Node) })
}

impl List {
    fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
            retired: Mutex::new(Vec::new()),
            allocated: Mutex::new(Vec::new()),
        }
    }

    fn retire(&self, p: usize) {
        self.retired.lock().unwrap().push(p);
    }

    /// `map.rs`'s `find`: the first unremoved node with an id not greater than `id`, and
    /// the link pointing to it; unlinks the removed nodes it passes.
    fn find(&self, id: u64) -> (&AtomicUsize, usize) {
        'retry: loop {
            let mut pred = &self.head;
            let mut curr = pred.load(Ordering::Acquire);
            loop {
                let Some(c) = node(curr) else {
                    return (pred, curr);
                };
                let next = c.next.load(Ordering::Acquire);
                if next & REMOVED != 0 {
                    match pred.compare_exchange(
                        curr,
                        next & !REMOVED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            self.retire(curr);
                            curr = next & !REMOVED;
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

    fn insert(&self, id: u64, value: u64) {
        let new = Box::into_raw(Box::new(Node {
            id,
            value,
            next: AtomicUsize::new(0),
        })) as usize;
        self.allocated.lock().unwrap().push(new);
        loop {
            let (pred, curr) = self.find(id);
            if let Some(c) = node(curr) {
                assert_ne!(c.id, id, "duplicate insert");
            }
            node(new).unwrap().next.store(curr, Ordering::Relaxed);
            if pred
                .compare_exchange(curr, new, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    fn get(&self, id: u64) -> Option<u64> {
        let mut curr = self.head.load(Ordering::Acquire);
        while let Some(c) = node(curr) {
            if c.id <= id {
                let next = c.next.load(Ordering::Acquire);
                return (c.id == id && next & REMOVED == 0).then_some(c.value);
            }
            curr = c.next.load(Ordering::Acquire);
        }
        None
    }

    fn remove(&self, id: u64) -> Option<u64> {
        let (pred, curr) = self.find(id);
        let c = node(curr)?;
        if c.id != id {
            return None;
        }
        let next = c.next.fetch_or(REMOVED, Ordering::AcqRel);
        if next & REMOVED != 0 {
            return None;
        }
        let value = c.value;
        if pred
            .compare_exchange(curr, next & !REMOVED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.retire(curr);
        } else {
            self.find(id);
        }
        Some(value)
    }

    /// Ids reachable from the head and not removed, in list order.
    fn ids(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut curr = self.head.load(Ordering::Acquire);
        while let Some(c) = node(curr) {
            let next = c.next.load(Ordering::Acquire);
            if next & REMOVED == 0 {
                out.push(c.id);
            }
            curr = next;
        }
        out
    }

    /// Every node retired once at most, and the removed ids' nodes are no longer linked.
    fn check_retired(&self, removed: &[u64]) {
        let retired = self.retired.lock().unwrap().clone();
        let mut unique = retired.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), retired.len(), "a node was retired twice");
        let mut ids: Vec<u64> = retired.iter().map(|p| node(*p).unwrap().id).collect();
        ids.sort();
        let mut want = removed.to_vec();
        want.sort();
        assert_eq!(ids, want, "removed nodes must all be unlinked and retired");
    }
}

impl Drop for List {
    fn drop(&mut self) {
        for p in self.allocated.lock().unwrap().drain(..) {
            // SAFETY: allocated by `Box::into_raw` in `insert`, freed once, here, when no
            // thread of the model uses the list any more.
            drop(unsafe { Box::from_raw(p as *mut Node) });
        }
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// insert / get / remove: a remover, an inserter and readers. A removed id never resolves
/// after its remove returned; an id never removed always resolves to its own value; an
/// insert is never lost; each removed node is unlinked and retired exactly once.
#[test]
fn insert_get_remove() {
    model(|| {
        let list = Arc::new(List::new());
        for id in [1, 2, 3] {
            list.insert(id, id * 10);
        }
        let l1 = Arc::clone(&list);
        let remover = thread::spawn(move || {
            assert_eq!(l1.remove(2), Some(20));
            assert_eq!(l1.get(2), None, "resolved after its remove returned");
            assert_eq!(l1.get(3), Some(30));
        });
        let l2 = Arc::clone(&list);
        let inserter = thread::spawn(move || {
            l2.insert(4, 40);
            assert_eq!(l2.get(4), Some(40));
            assert_eq!(l2.get(1), Some(10));
        });
        match list.get(2) {
            None | Some(20) => {}
            Some(other) => panic!("id 2 resolved to {other}"),
        }
        remover.join().unwrap();
        inserter.join().unwrap();
        assert_eq!(list.ids(), vec![4, 3, 1]);
        assert_eq!(list.get(2), None);
        list.check_retired(&[2]);
    });
}

/// Two threads remove the same id while a third removes its neighbour: exactly one wins
/// each id, the losers see it gone, and both nodes are retired exactly once (helping
/// unlinks included).
#[test]
fn racing_removes() {
    model(|| {
        let list = Arc::new(List::new());
        for id in [1, 2, 3] {
            list.insert(id, id * 10);
        }
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let l = Arc::clone(&list);
                thread::spawn(move || {
                    let got = l.remove(2);
                    assert_eq!(l.get(2), None);
                    got
                })
            })
            .collect();
        assert_eq!(list.remove(3), Some(30));
        let wins: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            wins.iter().filter(|w| **w == Some(20)).count(),
            1,
            "{wins:?}"
        );
        assert_eq!(list.ids(), vec![1]);
        list.check_retired(&[2, 3]);
    });
}

/// Inserts of neighbouring ids race a remove between them: no insert is lost, the list
/// stays sorted.
#[test]
fn inserts_race_a_remove() {
    model(|| {
        let list = Arc::new(List::new());
        list.insert(2, 20);
        let l1 = Arc::clone(&list);
        let a = thread::spawn(move || l1.insert(3, 30));
        let l2 = Arc::clone(&list);
        let b = thread::spawn(move || l2.insert(1, 10));
        assert_eq!(list.remove(2), Some(20));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(list.ids(), vec![3, 1]);
        list.check_retired(&[2]);
    });
}

/// The shared half of a connection, as far as a send and a close care: the queue and its
/// `closed` flag under one lock (`ConnShared::send` and the loop's close).
#[derive(Default)]
struct Queue {
    closed: bool,
    frames: Vec<u64>,
}

/// A send from another thread (look the id up, then queue under the lock unless closed)
/// races the loop closing the connection (mark closed under the lock, take what is
/// queued, then remove the id from the map). Every send that returned `Ok` is in what the
/// close took (nothing is accepted and then dropped unseen), a send after the close is
/// refused, and once the remove returned the id no longer resolves.
#[test]
fn remove_races_a_cross_thread_send() {
    model(|| {
        let list = Arc::new(List::new());
        let queues = Arc::new(Mutex::new(vec![Queue::default()]));
        list.insert(7, 0); // value: the connection's index in `queues`
        let (l, q) = (Arc::clone(&list), Arc::clone(&queues));
        let sender = thread::spawn(move || {
            let mut accepted = Vec::new();
            for frame in 1..=2u64 {
                let Some(index) = l.get(7) else {
                    break; // ConnectionNotFound
                };
                let mut queues = q.lock().unwrap();
                let queue = &mut queues[index as usize];
                if queue.closed {
                    break; // SendError::Closed
                }
                queue.frames.push(frame);
                accepted.push(frame);
            }
            accepted
        });
        // The loop closes the connection.
        let taken = {
            let mut queues = queues.lock().unwrap();
            queues[0].closed = true;
            std::mem::take(&mut queues[0].frames)
        };
        assert_eq!(list.remove(7), Some(0));
        assert_eq!(list.get(7), None);
        let accepted = sender.join().unwrap();
        assert_eq!(
            accepted, taken,
            "an accepted frame was lost, or one taken was refused"
        );
        assert!(
            queues.lock().unwrap()[0].frames.is_empty(),
            "a frame queued after the close"
        );
        list.check_retired(&[7]);
    });
}
