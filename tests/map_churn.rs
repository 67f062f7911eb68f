//! Issue 5, item 9 (memory): the connection map under 1,000,000 connect/disconnect
//! cycles (insert, then remove, ids never reused, as the loops do) by two writer threads,
//! with two threads looking ids up all the while (live, just removed, never inserted).
//!
//! Pass criteria: lookups of a live id find its own value, lookups of a removed id find
//! nothing; every value is dropped exactly once; resident memory (taken with the
//! allocator's free pages handed back) stays flat from the first 100,000 cycles to the
//! end: removed entries do not pile up, epoch garbage is collected as it goes.
//!
//! The single-process, unit-level ledger and racing-remove stress tests live next to the
//! map (`backends/core/src/map.rs`); the loom models in `tests/map_loom.rs`.

mod common;
mod rel_support;

use ringmill_core::engine::ConnMap;
use ringmill_core::id::ConnectionId;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

const CYCLES: u64 = 1_000_000;
const WRITERS: u64 = 2;
/// Connections open at once per writer.
const WINDOW: u64 = 2_000;

struct Value {
    id: u64,
    drops: Arc<Vec<AtomicU8>>,
}

impl Drop for Value {
    fn drop(&mut self) {
        self.drops[self.id as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// RSS in KiB with the allocator's free pages returned first.
fn live_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
    rel_support::rss_kib()
}

#[test]
fn map_memory_flat_under_a_million_connects_with_lookups() {
    let map = Arc::new(ConnMap::<Value>::with_capacity(4096));
    let drops: Arc<Vec<AtomicU8>> = Arc::new((0..=CYCLES).map(|_| AtomicU8::new(0)).collect());
    // Per writer: ids below `removed` are gone; from `removed` up to `inserted` are live.
    let inserted: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let removed: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let key = |w: u64, k: u64| k * WRITERS + w + 1; // ids start at 1, never reused
    let rss = Arc::new(std::sync::Mutex::new((0u64, 0u64)));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (map, drops, inserted, removed, rss) = (
                Arc::clone(&map),
                Arc::clone(&drops),
                Arc::clone(&inserted),
                Arc::clone(&removed),
                Arc::clone(&rss),
            );
            std::thread::spawn(move || {
                let per = CYCLES / WRITERS;
                for k in 0..per {
                    let id = key(w, k);
                    map.insert(
                        ConnectionId(id),
                        Arc::new(Value {
                            id,
                            drops: Arc::clone(&drops),
                        }),
                    );
                    inserted[w as usize].store(k + 1, Ordering::Release);
                    if k >= WINDOW {
                        let old = k - WINDOW;
                        let v = map.remove(ConnectionId(key(w, old))).expect("own live id");
                        assert_eq!(v.id, key(w, old));
                        removed[w as usize].store(old + 1, Ordering::Release);
                    }
                    if w == 0 && k == 100_000 / WRITERS {
                        rss.lock().unwrap().0 = live_kib();
                    }
                }
                // Disconnect the rest.
                for old in per.saturating_sub(WINDOW)..per {
                    map.remove(ConnectionId(key(w, old))).expect("own live id");
                    removed[w as usize].store(old + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (map, inserted, removed, done) = (
                Arc::clone(&map),
                Arc::clone(&inserted),
                Arc::clone(&removed),
                Arc::clone(&done),
            );
            std::thread::spawn(move || {
                let mut rng = common::Rng::new(r);
                let mut lookups = 0u64;
                while !done.load(Ordering::Acquire) {
                    let w = rng.next_u64() % WRITERS;
                    let gone = removed[w as usize].load(Ordering::Acquire);
                    if gone > 0 {
                        let k = rng.next_u64() % gone;
                        assert!(
                            map.get(ConnectionId(key(w, k))).is_none(),
                            "removed id resolved"
                        );
                    }
                    let live_to = inserted[w as usize].load(Ordering::Acquire);
                    // An id may be removed between reading `removed` and the lookup, so
                    // only check the value when found.
                    if live_to > gone {
                        let k = gone + rng.next_u64() % (live_to - gone);
                        if let Some(v) = map.get(ConnectionId(key(w, k))) {
                            assert_eq!(v.id, key(w, k), "a lookup found another id's value");
                        }
                    }
                    assert!(map.get(ConnectionId(u64::MAX - r)).is_none());
                    lookups += 3;
                }
                lookups
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Release);
    let lookups: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    assert!(map.is_empty());
    // Let epoch collection catch up, then measure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dropped = || {
        (1..=CYCLES)
            .filter(|i| drops[*i as usize].load(Ordering::Relaxed) > 0)
            .count() as u64
    };
    while dropped() < CYCLES {
        assert!(
            std::time::Instant::now() < deadline,
            "values not dropped: {} of {CYCLES}",
            dropped()
        );
        crossbeam_flush(&map);
    }
    let early = rss.lock().unwrap().0;
    let end = live_kib();
    for i in 1..=CYCLES {
        assert_eq!(
            drops[i as usize].load(Ordering::Relaxed),
            1,
            "value {i} dropped once"
        );
    }
    println!("{CYCLES} connect/disconnect cycles, {lookups} concurrent lookups; RSS {early} KiB after 100,000 cycles, {end} KiB at the end");
    assert!(
        end <= early + early / 4 + 8 * 1024,
        "RSS grew from {early} KiB (100,000 cycles) to {end} KiB ({CYCLES} cycles)"
    );
}

/// Lets crossbeam-epoch run deferred destructors: every lookup pins the thread, and
/// pinning now and then collects the garbage whose epoch has passed.
fn crossbeam_flush(map: &ConnMap<Value>) {
    for _ in 0..4096 {
        let _ = map.get(ConnectionId(0));
    }
    std::thread::yield_now();
}
