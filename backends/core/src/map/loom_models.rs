//! loom models of the connection map: `map.rs` itself, compiled against loom's atomics and
//! the reclamation stand-in of [`super::sync`]. Run by `ci/loom.sh`
//! (`RUSTFLAGS="--cfg loom"`); compiled out otherwise.
//!
//! Every model puts its ids in one bucket (multiples of the bucket count), so they share
//! one list and race on the same links. Besides each model's own assertions, the stand-in
//! fails a model if a node is retired twice, retired while still linked, or leaked; and the
//! values carry a drop ledger, so each is checked to be dropped exactly once.

use super::sync::{self as epoch, model};
use super::{ConnMap, MIN_BUCKETS};
use crate::id::ConnectionId;
use loom::sync::Mutex;
use loom::thread;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The id of key `k`: all keys land in bucket 0.
fn id(k: u64) -> ConnectionId {
    ConnectionId(k * MIN_BUCKETS as u64)
}

/// Drops of each key's value (plain atomics: bookkeeping loom need not see).
#[derive(Default)]
struct Ledger {
    drops: [AtomicUsize; 8],
}

impl Ledger {
    fn drops(&self, k: u64) -> usize {
        self.drops[k as usize].load(Ordering::SeqCst)
    }
}

struct Value {
    key: u64,
    ledger: Arc<Ledger>,
}

impl Drop for Value {
    fn drop(&mut self) {
        self.ledger.drops[self.key as usize].fetch_add(1, Ordering::SeqCst);
    }
}

fn insert(map: &ConnMap<Value>, ledger: &Arc<Ledger>, k: u64) {
    map.insert(
        id(k),
        Arc::new(Value {
            key: k,
            ledger: Arc::clone(ledger),
        }),
    );
}

fn get(map: &ConnMap<Value>, k: u64) -> Option<u64> {
    map.get(id(k)).map(|v| v.key)
}

fn remove(map: &ConnMap<Value>, k: u64) -> Option<u64> {
    map.remove(id(k)).map(|v| v.key)
}

/// Unremoved keys in list order (bucket 0 only holds ours).
fn keys<V: Send + Sync + 'static>(map: &ConnMap<V>) -> Vec<u64> {
    map.snapshot()
        .iter()
        .map(|(i, _)| i.0 / MIN_BUCKETS as u64)
        .collect()
}

/// Nodes still linked in any list, removed or not: a removed node must be unlinked once
/// its `remove` has returned.
fn linked<V>(map: &ConnMap<V>) -> usize {
    // SAFETY: the model's threads have all been joined, so nothing else uses the map.
    let guard = unsafe { epoch::unprotected() };
    let mut n = 0;
    for head in map.buckets.iter() {
        let mut curr = head.load(Ordering::Relaxed, guard);
        // SAFETY: nodes linked from the heads are allocated, and nobody frees them while
        // the map is only read here.
        while let Some(c) = unsafe { curr.as_ref() } {
            n += 1;
            curr = c.next.load(Ordering::Relaxed, guard);
        }
    }
    n
}

/// Frees the retired nodes (what crossbeam-epoch does once no thread is pinned), drops the
/// map, and checks every value was dropped exactly once.
fn finish(map: Arc<ConnMap<Value>>, ledger: &Ledger, keys: &[u64]) {
    drop(Arc::into_inner(map).expect("threads joined"));
    epoch::collect();
    for &k in keys {
        assert_eq!(
            ledger.drops(k),
            1,
            "value {k} dropped {} times",
            ledger.drops(k)
        );
    }
}

/// insert / get / remove: a remover, an inserter and a reader. A removed id never resolves
/// after its remove returned; an id never removed always resolves to its own value; an
/// insert is never lost; the removed node is unlinked and retired exactly once.
#[test]
fn insert_get_remove() {
    model(|| {
        let map = Arc::new(ConnMap::with_capacity(0));
        let ledger = Arc::new(Ledger::default());
        for k in [1, 2, 3] {
            insert(&map, &ledger, k);
        }
        let m = Arc::clone(&map);
        let remover = thread::spawn(move || {
            assert_eq!(remove(&m, 2), Some(2));
            assert_eq!(get(&m, 2), None, "resolved after its remove returned");
            assert_eq!(get(&m, 3), Some(3));
        });
        let (m, l) = (Arc::clone(&map), Arc::clone(&ledger));
        let inserter = thread::spawn(move || {
            insert(&m, &l, 4);
            assert_eq!(get(&m, 4), Some(4));
            assert_eq!(get(&m, 1), Some(1));
        });
        match get(&map, 2) {
            None | Some(2) => {}
            Some(other) => panic!("id 2 resolved to {other}"),
        }
        remover.join().unwrap();
        inserter.join().unwrap();
        assert_eq!(keys(&map), vec![4, 3, 1]);
        assert_eq!(get(&map, 2), None);
        assert_eq!(linked(&map), 3, "the removed node is still linked");
        assert_eq!(map.len(), 3);
        assert_eq!(ledger.drops(2), 0, "dropped while retired");
        finish(map, &ledger, &[1, 2, 3, 4]);
    });
}

/// Two threads remove the same id while a third removes its neighbour: exactly one wins
/// each id, the losers see it gone, and both nodes are unlinked and retired exactly once
/// (helping unlinks included).
#[test]
fn racing_removes() {
    model(|| {
        let map = Arc::new(ConnMap::with_capacity(0));
        let ledger = Arc::new(Ledger::default());
        for k in [1, 2, 3] {
            insert(&map, &ledger, k);
        }
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let m = Arc::clone(&map);
                thread::spawn(move || {
                    let got = remove(&m, 2);
                    assert_eq!(get(&m, 2), None);
                    got
                })
            })
            .collect();
        assert_eq!(remove(&map, 3), Some(3));
        let wins: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(
            wins.iter().filter(|w| **w == Some(2)).count(),
            1,
            "{wins:?}"
        );
        assert_eq!(keys(&map), vec![1]);
        assert_eq!(linked(&map), 1, "a removed node is still linked");
        assert_eq!(map.len(), 1);
        finish(map, &ledger, &[1, 2, 3]);
    });
}

/// Inserts of neighbouring ids race a remove between them: no insert is lost, the list
/// stays sorted, the removed node is unlinked.
#[test]
fn inserts_race_a_remove() {
    model(|| {
        let map = Arc::new(ConnMap::with_capacity(0));
        let ledger = Arc::new(Ledger::default());
        insert(&map, &ledger, 2);
        let (m, l) = (Arc::clone(&map), Arc::clone(&ledger));
        let a = thread::spawn(move || insert(&m, &l, 3));
        let (m, l) = (Arc::clone(&map), Arc::clone(&ledger));
        let b = thread::spawn(move || insert(&m, &l, 1));
        assert_eq!(remove(&map, 2), Some(2));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(keys(&map), vec![3, 1]);
        assert_eq!(linked(&map), 2, "the removed node is still linked");
        finish(map, &ledger, &[1, 2, 3]);
    });
}

/// The shared half of a connection, as far as a send and a close care: the queue and its
/// `closed` flag under one lock (`ConnShared::send` and the loop's close).
#[derive(Default)]
struct Queue {
    closed: bool,
    frames: Vec<u64>,
}

/// A send from another thread (look the id up in the map, then queue under the lock unless
/// closed) races the loop closing the connection (mark closed under the lock, take what is
/// queued, then remove the id from the map). Every send that returned `Ok` is in what the
/// close took (nothing is accepted and then dropped unseen), a send after the close is
/// refused, and once the remove returned the id no longer resolves.
#[test]
fn remove_races_a_cross_thread_send() {
    model(|| {
        let map = Arc::new(ConnMap::<Mutex<Queue>>::with_capacity(0));
        let conn = Arc::new(Mutex::new(Queue::default()));
        map.insert(id(7), Arc::clone(&conn));
        let m = Arc::clone(&map);
        let sender = thread::spawn(move || {
            let mut accepted = Vec::new();
            for frame in 1..=2u64 {
                let Some(conn) = m.get(id(7)) else {
                    break; // ConnectionNotFound
                };
                let mut queue = conn.lock().unwrap();
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
            let mut queue = conn.lock().unwrap();
            queue.closed = true;
            std::mem::take(&mut queue.frames)
        };
        let removed = map
            .remove(id(7))
            .expect("present until the close removes it");
        assert!(Arc::ptr_eq(&removed, &conn));
        assert!(map.get(id(7)).is_none());
        let accepted = sender.join().unwrap();
        assert_eq!(
            accepted, taken,
            "an accepted frame was lost, or one taken was refused"
        );
        assert!(
            conn.lock().unwrap().frames.is_empty(),
            "a frame queued after the close"
        );
        assert_eq!(linked(&map), 0, "the removed node is still linked");
        drop(removed);
        drop(map);
        epoch::collect();
        assert_eq!(Arc::strong_count(&conn), 1, "the map still holds the value");
    });
}

/// A snapshot races an insert and a remove: every entry present for the whole call is seen
/// exactly once, the others at most once, each with its own value.
#[test]
fn snapshot_races_insert_and_remove() {
    model(|| {
        let map = Arc::new(ConnMap::with_capacity(0));
        let ledger = Arc::new(Ledger::default());
        for k in [1, 2, 3] {
            insert(&map, &ledger, k);
        }
        let m = Arc::clone(&map);
        let remover = thread::spawn(move || assert_eq!(remove(&m, 2), Some(2)));
        let (m, l) = (Arc::clone(&map), Arc::clone(&ledger));
        let inserter = thread::spawn(move || insert(&m, &l, 4));
        let seen: Vec<u64> = map
            .snapshot()
            .iter()
            .map(|(i, v)| {
                assert_eq!(i.0, id(v.key).0, "snapshot pairs");
                v.key
            })
            .collect();
        for k in [1, 3] {
            assert_eq!(seen.iter().filter(|s| **s == k).count(), 1, "{seen:?}");
        }
        for k in [2, 4] {
            assert!(seen.iter().filter(|s| **s == k).count() <= 1, "{seen:?}");
        }
        remover.join().unwrap();
        inserter.join().unwrap();
        assert_eq!(keys(&map), vec![4, 3, 1]);
        assert_eq!(linked(&map), 3, "the removed node is still linked");
        finish(map, &ledger, &[1, 2, 3, 4]);
    });
}
