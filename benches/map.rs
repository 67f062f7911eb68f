//! The shared data structures: the lock-free connection map against a `Mutex<HashMap>`
//! baseline (one thread and two threads), and the receive buffer pool.
//!
//! ```text
//! cargo bench --bench map
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmill_core::engine::ConnMap;
use ringmill_core::pool::BufferPool;
use ringmill_core::ConnectionId;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Live entries in each map while it is measured (a busy server's connections).
const LIVE: u64 = 1000;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

/// The operations both maps offer.
trait Map: Sync {
    fn insert(&self, id: ConnectionId, v: Arc<u64>);
    fn get(&self, id: ConnectionId) -> Option<Arc<u64>>;
    fn remove(&self, id: ConnectionId) -> Option<Arc<u64>>;
}

impl Map for ConnMap<u64> {
    fn insert(&self, id: ConnectionId, v: Arc<u64>) {
        ConnMap::insert(self, id, v)
    }
    fn get(&self, id: ConnectionId) -> Option<Arc<u64>> {
        ConnMap::get(self, id)
    }
    fn remove(&self, id: ConnectionId) -> Option<Arc<u64>> {
        ConnMap::remove(self, id)
    }
}

/// The baseline: what a straightforward server uses.
struct Locked(Mutex<HashMap<ConnectionId, Arc<u64>>>);

impl Map for Locked {
    fn insert(&self, id: ConnectionId, v: Arc<u64>) {
        self.0.lock().unwrap().insert(id, v);
    }
    fn get(&self, id: ConnectionId) -> Option<Arc<u64>> {
        self.0.lock().unwrap().get(&id).cloned()
    }
    fn remove(&self, id: ConnectionId) -> Option<Arc<u64>> {
        self.0.lock().unwrap().remove(&id)
    }
}

fn filled<M: Map>(map: M) -> M {
    for i in 1..=LIVE {
        map.insert(ConnectionId(i), Arc::new(i));
    }
    map
}

/// Fresh ids above the prefilled ones, never reused (as the library hands them out).
static NEXT: AtomicU64 = AtomicU64::new(LIVE + 1);

/// `iters` operations of `op` on each of `threads` threads at once; the time of the slowest.
fn run<M: Map>(map: &M, threads: usize, iters: u64, op: fn(&M, u64, u64)) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        op(map, 0, iters);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    op(map, t as u64, iters);
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

/// Lookups of live ids, each thread walking the ids from its own offset.
fn gets<M: Map>(map: &M, thread: u64, iters: u64) {
    let mut id = 1 + thread * 397 % LIVE;
    for _ in 0..iters {
        black_box(map.get(ConnectionId(id)));
        id = if id == LIVE { 1 } else { id + 1 };
    }
}

/// Insert a fresh id, look it up, remove it (a connection's lifetime in the map).
fn churns<M: Map>(map: &M, _thread: u64, iters: u64) {
    let v = Arc::new(0);
    for _ in 0..iters {
        let id = ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed));
        map.insert(id, Arc::clone(&v));
        black_box(map.get(id));
        black_box(map.remove(id));
    }
}

fn map_benches(c: &mut Criterion) {
    let conn_map = filled(ConnMap::<u64>::with_capacity(LIVE as usize));
    let locked = filled(Locked(Mutex::new(HashMap::with_capacity(LIVE as usize))));
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("map_get_{threads}thread"));
        // Every thread does one operation per iteration: throughput is the total.
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(BenchmarkId::from_parameter("ConnMap"), |b| {
            b.iter_custom(|iters| run(&conn_map, threads, iters, gets))
        });
        group.bench_function(BenchmarkId::from_parameter("Mutex<HashMap>"), |b| {
            b.iter_custom(|iters| run(&locked, threads, iters, gets))
        });
        group.finish();

        let mut group = c.benchmark_group(format!("map_insert_get_remove_{threads}thread"));
        // Every thread does one operation per iteration: throughput is the total.
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_function(BenchmarkId::from_parameter("ConnMap"), |b| {
            b.iter_custom(|iters| run(&conn_map, threads, iters, churns))
        });
        group.bench_function(BenchmarkId::from_parameter("Mutex<HashMap>"), |b| {
            b.iter_custom(|iters| run(&locked, threads, iters, churns))
        });
        group.finish();
    }
}

fn pool_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    let mut pool = BufferPool::new(64 * 1024, 256).expect("pool");
    group.bench_function("take_give", |b| {
        b.iter(|| {
            let id = pool.take().expect("a free buffer");
            pool.give(black_box(id));
        })
    });
    // Half the pool out at once, returned in the order taken (not stack order).
    let mut held = Vec::with_capacity(128);
    group.throughput(Throughput::Elements(128));
    group.bench_function("take128_give128", |b| {
        b.iter(|| {
            for _ in 0..128 {
                held.push(pool.take().expect("a free buffer"));
            }
            for id in held.drain(..) {
                pool.give(id);
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = map_benches, pool_benches
}
criterion_main!(benches);
