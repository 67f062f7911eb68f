//! The loop driven by a scripted driver: what the loop asks of its driver, and when, seen
//! without a socket's timing in the way.

use super::{shutdown, spawn, ClientConn, LoopSettings};
use crate::config::TcpClientConfig;
use crate::context::ServerContext;
use crate::driver::{Completion, Driver, DriverCounters, Flow, ListenerId, Slot, Waker};
use crate::error::Result;
use crate::handler::NetworkHandler;
use crate::id::ConnectionId;
use crate::loop_handle::LoopHandle;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

/// What the scripted driver saw, shared with the test.
#[derive(Default)]
struct Script {
    /// Polls so far: the loop's turn number.
    polls: AtomicUsize,
    /// Each send issued: the turn it was issued in, and its bytes.
    sends: Mutex<Vec<(usize, Vec<u8>)>>,
    sent: Condvar,
    /// The slots the loop connected, in order.
    connects: Mutex<Vec<Slot>>,
    /// Completions for the driver to deliver at its next poll (a test's injections).
    inject: Mutex<Vec<(Slot, Vec<u8>)>>,
}

impl Script {
    /// Waits until `n` sends were issued.
    fn wait_sends(&self, n: usize) -> Vec<(usize, Vec<u8>)> {
        let deadline = Instant::now() + DEADLINE;
        let mut sends = self.sends.lock().unwrap();
        while sends.len() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("only {} of {n} sends issued in time", sends.len()));
            sends = self.sent.wait_timeout(sends, left).unwrap().0;
        }
        sends.clone()
    }
}

#[derive(Default)]
struct Wake {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Waker for Wake {
    fn wake(&self) -> io::Result<()> {
        *self.woken.lock().unwrap() = true;
        self.cv.notify_all();
        Ok(())
    }
}

/// A driver whose connects succeed at the next poll and whose sends are taken whole at
/// the next poll; it records every send with the turn it was issued in.
struct Scripted {
    script: Arc<Script>,
    wake: Arc<Wake>,
    due: VecDeque<Due>,
}

enum Due {
    Received(Slot, Vec<u8>),
    Connected(Slot),
    Sent(Slot, usize),
    Closed(Slot),
}

impl Driver for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn waker(&self) -> Arc<dyn Waker> {
        self.wake.clone()
    }
    fn listen(&mut self, _: ListenerId, _: TcpListener) -> io::Result<()> {
        Ok(())
    }
    fn resume_accept(&mut self, _: ListenerId) {}
    fn unlisten(&mut self, _: ListenerId) {}
    fn register(&mut self, _: Slot, _: TcpStream) -> io::Result<()> {
        Ok(())
    }
    fn connect(&mut self, slot: Slot, _: socket2::Socket, _: SocketAddr) -> io::Result<()> {
        self.script.connects.lock().unwrap().push(slot);
        self.due.push_back(Due::Connected(slot));
        Ok(())
    }
    fn recv(&mut self, _: Slot) {}
    fn pause_recv(&mut self, _: Slot) {}
    unsafe fn send(&mut self, slot: Slot, bufs: &[IoSlice<'_>]) {
        let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        self.due.push_back(Due::Sent(slot, bytes.len()));
        let turn = self.script.polls.load(Ordering::SeqCst);
        self.script.sends.lock().unwrap().push((turn, bytes));
        self.script.sent.notify_all();
    }
    fn shutdown_write(&mut self, _: Slot) {}
    fn close(&mut self, slot: Slot) {
        self.due.push_back(Due::Closed(slot));
    }
    fn poll<F>(&mut self, timeout: Option<Duration>, mut sink: F) -> io::Result<()>
    where
        F: FnMut(Completion<'_>) -> Flow,
    {
        self.script.polls.fetch_add(1, Ordering::SeqCst);
        for (slot, bytes) in std::mem::take(&mut *self.script.inject.lock().unwrap()) {
            self.due.push_back(Due::Received(slot, bytes));
        }
        if self.due.is_empty() {
            let mut woken = self.wake.woken.lock().unwrap();
            let until = timeout.map(|t| Instant::now() + t.min(DEADLINE));
            while !*woken {
                let left = match until {
                    Some(until) => match until.checked_duration_since(Instant::now()) {
                        Some(left) => left,
                        None => break,
                    },
                    None => DEADLINE,
                };
                woken = self.wake.cv.wait_timeout(woken, left).unwrap().0;
            }
            *woken = false;
        }
        for due in std::mem::take(&mut self.due) {
            let _ = match due {
                Due::Received(slot, bytes) => sink(Completion::Received {
                    slot,
                    result: Ok(&bytes),
                    direct: None,
                }),
                Due::Connected(slot) => sink(Completion::Connected {
                    slot,
                    result: Ok(()),
                }),
                Due::Sent(slot, n) => sink(Completion::Sent {
                    slot,
                    result: Ok(n),
                }),
                Due::Closed(slot) => sink(Completion::Closed { slot }),
            };
        }
        Ok(())
    }
    fn counters(&self) -> DriverCounters {
        DriverCounters::default()
    }
}

/// A client whose `on_connect` posts `work` to its own loop, with a sender for it and
/// the turn the closure ran in.
struct PostOnConnect {
    script: Arc<Script>,
    ran_in: Arc<Mutex<Vec<usize>>>,
}

impl NetworkHandler for PostOnConnect {
    fn on_connect(&self, ctx: &ServerContext, conn: ConnectionId) -> Result<()> {
        let sender = ctx.sender(conn).expect("open");
        let (script, ran_in) = (Arc::clone(&self.script), Arc::clone(&self.ran_in));
        LoopHandle::current().expect("on a loop").post(move || {
            ran_in
                .lock()
                .unwrap()
                .push(script.polls.load(Ordering::SeqCst));
            sender.send(b"from the loop").expect("accepted");
        })
    }

    fn on_data(&self, _: &ServerContext, _: ConnectionId, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

#[test]
fn a_send_from_the_loop_thread_leaves_in_the_same_turn() {
    let script = Arc::new(Script::default());
    let driver_script = Arc::clone(&script);
    let lp = spawn(0, LoopSettings::default(), move || {
        Ok::<_, io::Error>(Scripted {
            script: driver_script,
            wake: Arc::default(),
            due: VecDeque::new(),
        })
    })
    .expect("loop");
    let ran_in = Arc::new(Mutex::new(Vec::new()));
    let handler = PostOnConnect {
        script: Arc::clone(&script),
        ran_in: Arc::clone(&ran_in),
    };
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let client = ClientConn::new(
        "127.0.0.1:9".parse().unwrap(),
        TcpClientConfig::default(),
        socket,
        Arc::new(handler),
    );
    client.start(lp.shared()).expect("start");
    let sends = script.wait_sends(1);
    let ran_in = ran_in.lock().unwrap().clone();
    assert_eq!(sends[0].1, b"from the loop");
    assert_eq!(
        ran_in,
        [sends[0].0],
        "the send made by a closure on the loop thread was issued in a later turn \
         (it went through the inbox)"
    );
    assert!(shutdown(vec![lp]));
}

/// Records each connection's bytes.
#[derive(Default)]
struct Bytes {
    got: Mutex<Vec<(ConnectionId, Vec<u8>)>>,
    arrived: Condvar,
}

impl NetworkHandler for Arc<Bytes> {
    fn on_data(&self, _: &ServerContext, conn: ConnectionId, data: &[u8]) -> Result<()> {
        self.got.lock().unwrap().push((conn, data.to_vec()));
        self.arrived.notify_all();
        Ok(())
    }
}

fn scripted_loop(script: &Arc<Script>) -> super::LoopThread {
    let script = Arc::clone(script);
    spawn(0, LoopSettings::default(), move || {
        Ok::<_, io::Error>(Scripted {
            script,
            wake: Arc::default(),
            due: VecDeque::new(),
        })
    })
    .expect("loop")
}

/// A client on `lp`, connected (the scripted driver connects at once).
fn client(lp: &super::LoopThread, handler: &Arc<Bytes>) -> ClientConn {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let client = ClientConn::new(
        "127.0.0.1:9".parse().unwrap(),
        TcpClientConfig::default(),
        socket,
        Arc::new(Arc::clone(handler)),
    );
    client.start(lp.shared()).expect("start");
    let deadline = Instant::now() + DEADLINE;
    while !client.is_connected() {
        assert!(Instant::now() < deadline, "the client did not connect");
        std::thread::yield_now();
    }
    client
}

#[test]
fn a_completion_for_an_earlier_use_of_a_slot_reaches_nobody() {
    let script = Arc::new(Script::default());
    let lp = scripted_loop(&script);
    let bytes = Arc::new(Bytes::default());
    // Three clients in turn on the same index: generations 0, 1 and 2.
    for _ in 0..2 {
        client(&lp, &bytes).sender().close();
    }
    let last = client(&lp, &bytes);
    let slots = script.connects.lock().unwrap().clone();
    assert_eq!(slots.len(), 3);
    assert!(
        slots.iter().all(|s| s.index() == slots[0].index()),
        "the freed index is reused: {slots:?}"
    );
    // A late `Received` for the second use of the index, then one for the current use.
    script
        .inject
        .lock()
        .unwrap()
        .extend([(slots[1], b"stale".to_vec()), (slots[2], b"fresh".to_vec())]);
    lp.shared().handle().post(|| {}).expect("wake the loop");
    let deadline = Instant::now() + DEADLINE;
    let mut got = bytes.got.lock().unwrap();
    while !got.iter().any(|(_, b)| b == b"fresh") {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("the current connection's bytes did not arrive");
        got = bytes.arrived.wait_timeout(got, left).unwrap().0;
    }
    assert_eq!(
        *got,
        [(last.id(), b"fresh".to_vec())],
        "bytes for an earlier use of the slot reached the connection that holds it now"
    );
    drop(got);
    assert!(shutdown(vec![lp]));
}
