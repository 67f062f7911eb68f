//! The loop threads, and the operations servers and clients perform on them.
//!
//! [`spawn`] starts one loop thread around a driver built *on that thread* (io_uring's
//! `SINGLE_ISSUER` requires the ring to be used by the thread that made it) and reports
//! whether the driver could be built. Everything else here sends commands to loops.

mod accept;
mod callback;
mod client;
mod close;
mod command;
mod connect;
mod dead;
mod deadlines;
mod dispatch;
mod doors;
mod establish;
mod housekeeping;
mod inbound;
mod layer_failure;
mod phase;
mod receive;
mod send;
mod settings;
pub(crate) mod shared;
mod stack;
mod state;
mod stop;
#[cfg(test)]
mod tests;
pub(crate) mod timer;
mod worker;

pub(crate) use callback::panic_message;
pub use client::ClientConn;
pub use settings::LoopSettings;
pub use shared::LoopShared;

use crate::context::ServerContext;
use crate::driver::Driver;
use crate::error::NetworkEvent;
use crate::service::Service;
pub(crate) use command::Command;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a caller waits for a loop to acknowledge a command before giving up.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// A running loop thread.
pub struct LoopThread {
    shared: Arc<LoopShared>,
    thread: JoinHandle<()>,
    description: String,
}

impl LoopThread {
    /// The part of the loop other threads use.
    pub fn shared(&self) -> &Arc<LoopShared> {
        &self.shared
    }

    /// The driver's description of its setup.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// Why a loop thread could not be started.
#[derive(Debug)]
pub enum SpawnError<E> {
    /// The driver could not be built (the thread has exited).
    Driver(E),
    /// The OS refused the thread (out of memory for its stack, thread limits).
    Thread(io::Error),
    /// Building the driver panicked (the thread has exited).
    Panicked(String),
}

impl<E: std::fmt::Display> std::fmt::Display for SpawnError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Driver(e) => e.fmt(f),
            SpawnError::Thread(e) => write!(f, "cannot start a loop thread: {e}"),
            SpawnError::Panicked(msg) => {
                write!(f, "building the driver of a loop thread panicked: {msg}")
            }
        }
    }
}

/// Starts loop thread `index`, building its driver on the new thread with `make`.
///
/// Fails if the OS refuses the thread, or with the driver's error if it could not be built
/// (the thread has then exited).
pub fn spawn<D, E, F>(
    index: usize,
    settings: LoopSettings,
    make: F,
) -> std::result::Result<LoopThread, SpawnError<E>>
where
    D: Driver,
    E: Send + 'static,
    F: FnOnce() -> std::result::Result<D, E> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(format!("ringmill-loop-{index}"))
        .spawn(move || {
            let driver = match make() {
                Ok(driver) => driver,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let shared = LoopShared::with_clock(
                index,
                driver.waker(),
                settings.dispatch_on_run,
                driver.clock(),
            );
            let _ = tx.send(Ok((Arc::clone(&shared), driver.describe())));
            // A held loop waits here, before its first poll, for `release` (or a stop).
            let open = shared.wait_gate();
            let mut worker = worker::Worker::new(driver, Arc::clone(&shared), settings);
            if !open {
                worker.never_ran();
                drop(worker);
                shared.mark_stopped();
                return;
            }
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
            if let Err(payload) = run {
                // Something no callback guard covers panicked: the loop cannot go on, but
                // nothing may go on believing it runs.
                log::error!(
                    "ringmill: loop {index} died: {}",
                    panic_message(payload.as_ref())
                );
                worker.died();
            }
            drop(worker);
            shared.mark_stopped();
        })
        .map_err(SpawnError::Thread)?;
    match rx.recv() {
        Ok(Ok((shared, description))) => Ok(LoopThread {
            shared,
            thread,
            description,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(SpawnError::Driver(e))
        }
        Err(_) => {
            // The thread panicked while building its driver.
            let message = match thread.join() {
                Err(payload) => panic_message(payload.as_ref()),
                Ok(()) => "the loop thread exited".to_string(),
            };
            Err(SpawnError::Panicked(message))
        }
    }
}

/// Stops the loops and joins their threads; `false` if any of them panicked.
pub fn shutdown(loops: Vec<LoopThread>) -> bool {
    for l in &loops {
        l.shared.request_stop();
    }
    let mut clean = true;
    for l in loops {
        if l.thread.thread().id() == std::thread::current().id() {
            continue;
        }
        clean &= l.thread.join().is_ok();
    }
    clean
}

/// Hands `listener` to the loop and waits until it accepts on it (unless called from a
/// loop thread, which must never block on another loop, or the loop is held: it takes the
/// listener once released).
pub fn listen(
    shared: &Arc<LoopShared>,
    service: &Arc<Service>,
    listener: TcpListener,
) -> io::Result<()> {
    let (ack, done) = mpsc::sync_channel(1);
    let Some(held) = shared.push_held(Command::Listen {
        service: Arc::clone(service),
        listener,
        ack,
    }) else {
        return Err(io::Error::other("event loop has stopped"));
    };
    // A held loop takes the listener when it is released; if it cannot then, the
    // server's `on_error` hears of it (nobody waits on `done` any more).
    if held || LoopShared::on_any_loop() {
        return Ok(());
    }
    match done.recv_timeout(ACK_TIMEOUT) {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "event loop did not take the listener",
        )),
    }
}

/// Stops `service` on `loops`: no more accepts, its connections closed (after writing what
/// is queued, up to the close linger, without waiting for peers). Waits until no loop
/// accepts for it any more and every one of its connections is closed, its
/// `on_disconnect` delivered; unless called from a loop thread, which must never block
/// (its own loop delivers those disconnects): then the close is only under way. On a held
/// loop (one waiting for `EventLoop::run`) there is nothing to wait for: it has accepted
/// nothing, and the listeners it has not taken yet are closed here.
pub fn stop_service(loops: &[Arc<LoopShared>], service: &Arc<Service>) {
    service
        .stopped
        .store(true, std::sync::atomic::Ordering::Release);
    let mut waits = Vec::new();
    for l in loops {
        // A held loop has accepted nothing: closing the listeners it has not taken yet
        // is the whole stop there, done now (the port is free when this returns).
        let withdrawn = l.withdraw_if_held(
            |c| matches!(c, Command::Listen { service: s, .. } if Arc::ptr_eq(s, service)),
        );
        if let Some(listeners) = withdrawn {
            drop(listeners);
            continue;
        }
        let (ack, done) = mpsc::sync_channel(1);
        if l.push(Command::StopService {
            service: Arc::clone(service),
            ack,
        }) {
            waits.push(done);
        }
    }
    if LoopShared::on_any_loop() {
        return;
    }
    for done in waits {
        let _ = done.recv_timeout(ACK_TIMEOUT);
    }
}

/// Tells the service's handler that it listens on `addr`.
pub fn notify_listening(service: &Arc<Service>, addr: SocketAddr) {
    let ctx = context(service);
    if let Err(e) = service
        .handler
        .on_event(&ctx, NetworkEvent::Listening(addr))
    {
        log::debug!("ringmill: on_event(Listening) failed: {e}");
    }
}

/// A context for `service`.
pub fn context(service: &Arc<Service>) -> ServerContext {
    service.context()
}
