//! Tests of [`ConnMap`](super::ConnMap) (not under loom: loom's atomics work only inside a
//! loom model; the loom models are in `loom_models.rs`).

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

fn id(n: u64) -> ConnectionId {
    ConnectionId(n)
}

#[test]
fn insert_get_remove() {
    let map = ConnMap::with_capacity(16);
    assert!(map.is_empty());
    assert!(map.get(id(1)).is_none());
    map.insert(id(1), Arc::new("one"));
    map.insert(id(2), Arc::new("two"));
    assert_eq!(map.len(), 2);
    assert_eq!(*map.get(id(1)).unwrap(), "one");
    assert_eq!(*map.get(id(2)).unwrap(), "two");
    assert!(map.get(id(3)).is_none());
    assert_eq!(*map.remove(id(1)).unwrap(), "one");
    assert_eq!(map.len(), 1);
    assert!(map.get(id(1)).is_none(), "get after remove");
    assert!(map.remove(id(1)).is_none(), "second remove");
    assert!(map.remove(id(3)).is_none(), "remove of an absent id");
    assert_eq!(map.len(), 1);
    assert_eq!(*map.get(id(2)).unwrap(), "two");
}

#[test]
fn get_returns_the_stored_arc() {
    let map = ConnMap::with_capacity(0);
    let v = Arc::new(5u32);
    map.insert(id(9), Arc::clone(&v));
    let got = map.get(id(9)).unwrap();
    assert!(Arc::ptr_eq(&got, &v));
    assert_eq!(Arc::strong_count(&v), 3, "caller, map, result");
    drop(got);
    let removed = map.remove(id(9)).unwrap();
    assert!(Arc::ptr_eq(&removed, &v));
}

#[test]
fn bucket_count() {
    assert_eq!(ConnMap::<u8>::with_capacity(0).buckets.len(), MIN_BUCKETS);
    assert_eq!(ConnMap::<u8>::with_capacity(100).buckets.len(), 128);
    assert_eq!(ConnMap::<u8>::with_capacity(1024).buckets.len(), 1024);
    assert_eq!(
        ConnMap::<u8>::with_capacity(usize::MAX).buckets.len(),
        MAX_BUCKETS
    );
}

#[test]
fn colliding_ids_in_one_bucket() {
    const CAP: u64 = 64;
    let map = ConnMap::with_capacity(CAP as usize);
    // All in bucket 3, inserted in a mixed order (mostly increasing, some not).
    let mut order: Vec<u64> = (0..200).collect();
    order.swap(10, 150);
    order.swap(0, 199);
    order.reverse();
    order.swap(5, 100);
    for &i in &order {
        map.insert(id(i * CAP + 3), Arc::new(i));
    }
    assert_eq!(map.len(), 200);
    for i in 0..200 {
        assert_eq!(*map.get(id(i * CAP + 3)).unwrap(), i);
        assert!(map.get(id(i * CAP + 4)).is_none());
    }
    // Sorted descending, as the lookup relies on.
    let ids: Vec<u64> = map.snapshot().iter().map(|(k, _)| k.0).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    for i in (0..200).filter(|i| i % 3 == 0) {
        assert_eq!(*map.remove(id(i * CAP + 3)).unwrap(), i);
    }
    for i in 0..200 {
        let got = map.get(id(i * CAP + 3)).map(|v| *v);
        assert_eq!(got, (i % 3 != 0).then_some(i), "id {}", i * CAP + 3);
    }
    assert_eq!(map.len(), 200 - 67);
    assert_eq!(map.snapshot().len(), 200 - 67);
}

#[test]
#[should_panic(expected = "already present")]
fn duplicate_insert_panics() {
    let map = ConnMap::with_capacity(8);
    map.insert(id(7), Arc::new(1));
    map.insert(id(7), Arc::new(2));
}

#[test]
fn for_each_and_snapshot() {
    let map = ConnMap::with_capacity(4);
    for i in 0..500u64 {
        map.insert(id(i), Arc::new(i * 10));
    }
    for i in (0..500u64).step_by(2) {
        map.remove(id(i));
    }
    let mut seen = Vec::new();
    map.for_each(|k, v| {
        assert_eq!(**v, k.0 * 10);
        seen.push(k.0);
    });
    seen.sort();
    assert_eq!(seen, (1..500).step_by(2).collect::<Vec<_>>());
    let mut snap: Vec<u64> = map
        .snapshot()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(*v, k.0 * 10);
            k.0
        })
        .collect();
    snap.sort();
    assert_eq!(snap, seen);
}

#[test]
fn map_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ConnMap<Mutex<Vec<u8>>>>();
}

/// Counts drops of each value by id; a value dropped twice is recorded, not hidden.
struct Ledger {
    drops: Vec<AtomicU8>,
    total: AtomicUsize,
}

impl Ledger {
    fn new(n: usize) -> Arc<Ledger> {
        Arc::new(Ledger {
            drops: (0..n).map(|_| AtomicU8::new(0)).collect(),
            total: AtomicUsize::new(0),
        })
    }

    fn drops_of(&self, i: u64) -> u8 {
        self.drops[i as usize].load(Ordering::SeqCst)
    }

    /// Waits until `n` values have been dropped, letting crossbeam-epoch run deferred
    /// destructors. Every deferred destructor runs once every thread pinned at its
    /// retirement has unpinned; the workers have exited, so only other tests running
    /// at the same time can delay it, briefly. The deadline is generous on purpose.
    fn wait_for_drops(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.total.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} values dropped after 60 s of epoch flushing",
                self.total.load(Ordering::SeqCst)
            );
            epoch::pin().flush();
            thread::yield_now();
        }
    }
}

struct Tracked {
    id: u64,
    ledger: Arc<Ledger>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.ledger.drops[self.id as usize].fetch_add(1, Ordering::SeqCst);
        self.ledger.total.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn values_dropped_exactly_once_single_thread() {
    let ledger = Ledger::new(100);
    let map = ConnMap::with_capacity(8);
    for i in 0..100 {
        map.insert(
            id(i),
            Arc::new(Tracked {
                id: i,
                ledger: Arc::clone(&ledger),
            }),
        );
    }
    for i in 0..50 {
        drop(map.remove(id(i)).unwrap());
    }
    assert_eq!(ledger.drops_of(60), 0, "present value not dropped");
    drop(map);
    ledger.wait_for_drops(100);
    for i in 0..100 {
        assert_eq!(ledger.drops_of(i), 1, "value {i}");
    }
}

/// Small deterministic generator for the stress test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Four writers insert and remove their own ids (interleaved, so they share buckets);
/// four readers check, while they churn, that:
/// - an id whose removal had finished before the reader looked never resolves;
/// - an id inserted before the reader looked resolves to its own value, unless its
///   removal had started by the time `get` returned.
///
/// Afterwards every value is dropped exactly once.
#[test]
fn concurrent_churn() {
    const WRITERS: u64 = 4;
    const PER_WRITER: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        100_000
    };
    const WINDOW: u64 = 100; // live ids per writer
    const TOTAL: u64 = WRITERS * PER_WRITER;
    let map = Arc::new(ConnMap::with_capacity(64));
    let ledger = Ledger::new(TOTAL as usize);
    // Per writer: its ids below `inserted` have been inserted; its ids below `removing`
    // may have been (or be being) removed; its ids below `removed` have been removed.
    let inserted: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let removing: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let removed: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let key = |w: u64, k: u64| k * WRITERS + w;

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (map, ledger) = (Arc::clone(&map), Arc::clone(&ledger));
            let (inserted, removing, removed) = (
                Arc::clone(&inserted),
                Arc::clone(&removing),
                Arc::clone(&removed),
            );
            thread::spawn(move || {
                for k in 0..PER_WRITER {
                    let i = key(w, k);
                    map.insert(
                        id(i),
                        Arc::new(Tracked {
                            id: i,
                            ledger: Arc::clone(&ledger),
                        }),
                    );
                    inserted[w as usize].store(k + 1, Ordering::SeqCst);
                    if k >= WINDOW {
                        let old = k - WINDOW;
                        removing[w as usize].store(old + 1, Ordering::SeqCst);
                        let v = map.remove(id(key(w, old))).expect("own live id");
                        assert_eq!(v.id, key(w, old));
                        assert!(map.get(id(key(w, old))).is_none(), "resolved after remove");
                        assert!(map.remove(id(key(w, old))).is_none(), "removed twice");
                        removed[w as usize].store(old + 1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    let readers: Vec<_> = (0..4u64)
        .map(|r| {
            let map = Arc::clone(&map);
            let (inserted, removing, removed, done) = (
                Arc::clone(&inserted),
                Arc::clone(&removing),
                Arc::clone(&removed),
                Arc::clone(&done),
            );
            thread::spawn(move || {
                let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (r + 1));
                let (mut hits, mut gone) = (0u64, 0u64);
                while !done.load(Ordering::SeqCst) {
                    let w = rng.next() % WRITERS;
                    let rem = removed[w as usize].load(Ordering::SeqCst);
                    let ins = inserted[w as usize].load(Ordering::SeqCst);
                    if rem > 0 {
                        let k = rng.next() % rem;
                        assert!(
                            map.get(id(key(w, k))).is_none(),
                            "removed id {} resolved again",
                            key(w, k)
                        );
                        gone += 1;
                    }
                    if ins > rem {
                        let k = rem + rng.next() % (ins - rem);
                        match map.get(id(key(w, k))) {
                            Some(v) => {
                                assert_eq!(v.id, key(w, k), "wrong value");
                                hits += 1;
                            }
                            None => assert!(
                                removing[w as usize].load(Ordering::SeqCst) > k,
                                "live id {} not found",
                                key(w, k)
                            ),
                        }
                    }
                    if r == 0 && rng.next() % 64 == 0 {
                        for (k, v) in map.snapshot() {
                            assert_eq!(v.id, k.0, "snapshot pairs");
                        }
                    }
                }
                (hits, gone)
            })
        })
        .collect();

    for w in writers {
        w.join().expect("writer panicked");
    }
    done.store(true, Ordering::SeqCst);
    let mut checks = (0, 0);
    for r in readers {
        let (h, g) = r.join().expect("reader panicked");
        checks.0 += h;
        checks.1 += g;
    }
    assert!(
        checks.0 > 0 && checks.1 > 0,
        "readers checked nothing: {checks:?}"
    );

    let live = (WRITERS * WINDOW) as usize;
    assert_eq!(map.len(), live);
    let snap = map.snapshot();
    assert_eq!(snap.len(), live);
    for (k, v) in &snap {
        assert_eq!(k.0, v.id);
        assert!(
            k.0 / WRITERS >= PER_WRITER - WINDOW,
            "only the last window is left"
        );
    }
    drop(snap);
    // No value was dropped twice, whatever epoch has collected so far.
    assert!((0..TOTAL).all(|i| ledger.drops_of(i) <= 1));
    // Present values are not dropped while the map holds them.
    assert!((0..WRITERS).all(|w| ledger.drops_of(key(w, PER_WRITER - 1)) == 0));
    let map = Arc::try_unwrap(map).expect("threads joined");
    drop(map);
    ledger.wait_for_drops(TOTAL as usize);
    for i in 0..TOTAL {
        assert_eq!(ledger.drops_of(i), 1, "value {i} dropped once");
    }
}

/// Threads race to remove the same ids, in the same order from a common start: exactly
/// one wins each, and a loser never sees the id again.
#[test]
fn racing_removes_have_one_winner() {
    const N: u64 = 100_000;
    const THREADS: usize = 4;
    let map = Arc::new(ConnMap::with_capacity(N as usize));
    for i in 0..N {
        map.insert(id(i), Arc::new(i));
    }
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let wins: Vec<_> = (0..THREADS)
        .map(|_| {
            let (map, start) = (Arc::clone(&map), Arc::clone(&start));
            thread::spawn(move || {
                let mut won = Vec::new();
                start.wait();
                for i in 0..N {
                    match map.remove(id(i)) {
                        Some(v) => {
                            assert_eq!(*v, i);
                            won.push(i);
                        }
                        None => assert!(
                            map.get(id(i)).is_none(),
                            "id {i} resolved after a remove found it gone"
                        ),
                    }
                }
                won
            })
        })
        .collect();
    let mut all: Vec<u64> = wins
        .into_iter()
        .flat_map(|h| h.join().expect("remover panicked"))
        .collect();
    all.sort();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "each id removed exactly once"
    );
    assert!(map.is_empty());
    assert!(map.snapshot().is_empty());
}
