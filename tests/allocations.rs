//! Allocations per message on the loop thread: a plain connection's receive and send
//! paths (through its empty layer stack, a send from `on_data` straight onto the loop's
//! flush list) allocate nothing per message once warmed up.

mod common;
use common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

thread_local! {
    /// Whether this thread counts its allocations (the loop thread, once it serves).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// This thread's allocations since it started counting.
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread may be tearing its locals down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

/// The system allocator, counting the allocations of the threads that ask it to.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; counting touches only `const` thread-locals, which
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Echoes, and publishes how many allocations its loop thread made so far.
#[derive(Clone, Default)]
struct CountingEcho {
    allocations: Arc<AtomicU64>,
}

impl NetworkHandler for CountingEcho {
    fn on_connect(&self, _: &ServerContext, _: ConnectionId) -> Result<()> {
        COUNTING.with(|on| on.set(true));
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        ctx.send_to(conn, data)?;
        self.allocations
            .store(COUNT.with(Cell::get), Ordering::Relaxed);
        Ok(())
    }
}

const WARM_UP: usize = 200;
const MESSAGES: usize = 2000;

backend_matrix! {
    /// Echo round trips on a plain connection, one message at a time: after a warm-up,
    /// the loop thread allocates nothing for them (a few stray allocations allowed).
    fn plain_echo_allocates_nothing_per_message(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.threads(1));
        let handler = CountingEcho::default();
        let allocations = Arc::clone(&handler.allocations);
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut client = connect(addr_of(&server));
        let message = [7u8; 64];
        let mut echo = [0u8; 64];
        let mut round_trip = |client: &mut std::net::TcpStream| {
            client.write_all(&message).expect("write");
            client.read_exact(&mut echo).expect("echo within the deadline");
            assert_eq!(echo, message);
        };
        for _ in 0..WARM_UP {
            round_trip(&mut client);
        }
        let before = allocations.load(Ordering::Relaxed);
        for _ in 0..MESSAGES {
            round_trip(&mut client);
        }
        let during = allocations.load(Ordering::Relaxed) - before;
        assert!(
            during <= (MESSAGES / 100) as u64,
            "the loop thread allocated {during} times for {MESSAGES} echoed messages"
        );
        server.stop().expect("server stop");
        event_loop.stop();
    }
}
