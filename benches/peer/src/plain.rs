//! `plain-mio`: the reference loop the libraries are held against. One thread, one
//! `mio::Poll` (epoll, edge-triggered), one 64 KiB read buffer shared by every connection.
//!
//! A read is written straight back from the read buffer; only what the socket did not take
//! is copied, into that connection's `tail`. A connection with a tail is not read again
//! until the tail is written (so it never holds more than one read's worth), and is read
//! again at once when it is, since the readiness edges that came meanwhile were passed by.
//!
//! A read that returns less than the buffer holds drained the socket: epoll raises a new
//! edge for anything that arrives after it, so no read is spent on `EAGAIN` (unless the
//! event already reported the peer's hang-up, which raises no further edge). A connection
//! that keeps filling the buffer is left after `READ_BUDGET` bytes and taken up again after
//! the other ready connections, so one fast peer cannot starve the rest.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// The one read buffer.
const BUF: usize = 64 * 1024;
/// Bytes read from one connection before the others get their turn: four buffers' worth.
const READ_BUDGET_BUFFERS: usize = 4;

/// The read buffer's size: [`BUF`], or `PEER_PLAIN_BUF` bytes when that is set (for
/// profiling: how the size of one read changes the overlap of reading and answering).
fn buf_size() -> Result<usize, String> {
    match std::env::var("PEER_PLAIN_BUF") {
        Err(_) => Ok(BUF),
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("PEER_PLAIN_BUF={v}: a size in bytes, above 0")),
        },
    }
}
/// The listener's token; connections use their slot index.
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Echo bytes the socket did not take yet; reused, so it allocates once at most.
    tail: Vec<u8>,
    /// How much of `tail` is written.
    tail_at: usize,
    /// Left with data possibly unread (budget used up): read again after this round.
    requeued: bool,
}

enum Step {
    /// Nothing more to do until the next edge.
    Idle,
    /// Read budget used up with more to read.
    Again,
    /// Peer closed or an error: drop the connection.
    Close,
}

/// Writes `data` and keeps in `c.tail` what the socket did not take. Returns false on an
/// error (the connection is done).
fn echo(c: &mut Conn, data: &[u8]) -> bool {
    let mut at = 0;
    while at < data.len() {
        match c.stream.write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    if at < data.len() {
        c.tail.extend_from_slice(&data[at..]);
    }
    true
}

/// Writes what is left of `c.tail`. Ok(true) when it is all written.
fn flush_tail(c: &mut Conn) -> Result<bool, ()> {
    while c.tail_at < c.tail.len() {
        match c.stream.write(&c.tail[c.tail_at..]) {
            Ok(n) => c.tail_at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    c.tail.clear();
    c.tail_at = 0;
    Ok(true)
}

/// Reads and echoes until the socket is drained, the budget is used up or a write leaves a
/// tail. `hup`: the event reported the peer's hang-up, so a short read is not the end.
fn serve(c: &mut Conn, buf: &mut [u8], hup: bool) -> Step {
    let mut read = 0;
    loop {
        match c.stream.read(buf) {
            Ok(0) => return Step::Close,
            Ok(n) => {
                if !echo(c, &buf[..n]) {
                    return Step::Close;
                }
                if !c.tail.is_empty() {
                    // Blocked: the writable edge takes it up again.
                    return Step::Idle;
                }
                read += n;
                if n < buf.len() && !hup {
                    return Step::Idle;
                }
                if read >= READ_BUDGET_BUFFERS * buf.len() {
                    return Step::Again;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Idle,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
}

/// The reference echo server on `addr`; `ready` is called with the bound address once it
/// accepts.
pub fn run(addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> Result<(), String> {
    let mut poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
    let mut listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| e.to_string())?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut again: Vec<usize> = Vec::new();
    let mut again_next: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; buf_size()?];
    let mut events = Events::with_capacity(1024);
    ready(listener.local_addr().map_err(|e| e.to_string())?);
    loop {
        // Connections left with data to read: look at new events without waiting.
        let timeout = if again.is_empty() {
            None
        } else {
            Some(Duration::ZERO)
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {e}"));
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let slot = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    Token(slot),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_err()
                            {
                                free.push(slot);
                                continue;
                            }
                            conns[slot] = Some(Conn {
                                stream,
                                tail: Vec::new(),
                                tail_at: 0,
                                requeued: false,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        // Out of descriptors or a connection reset before accept: go on
                        // with the others (the listener's next edge retries).
                        Err(_) => break,
                    }
                }
                continue;
            }
            let slot = ev.token().0;
            let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            if c.requeued {
                // Already queued to be read after this round.
                continue;
            }
            let step = if !c.tail.is_empty() {
                if !ev.is_writable() && !ev.is_error() && !ev.is_write_closed() {
                    continue;
                }
                match flush_tail(c) {
                    // Readable edges were passed by while blocked: read now.
                    Ok(true) => serve(c, &mut buf, true),
                    Ok(false) => Step::Idle,
                    Err(()) => Step::Close,
                }
            } else if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                serve(c, &mut buf, ev.is_read_closed() || ev.is_error())
            } else {
                Step::Idle
            };
            match step {
                Step::Idle => {}
                Step::Again => {
                    c.requeued = true;
                    again_next.push(slot);
                }
                Step::Close => {
                    conns[slot] = None;
                    free.push(slot);
                }
            }
        }
        // Then the connections that used up their budget last round.
        for slot in again.drain(..) {
            let Some(c) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            c.requeued = false;
            match serve(c, &mut buf, true) {
                Step::Idle => {}
                Step::Again => {
                    c.requeued = true;
                    again_next.push(slot);
                }
                Step::Close => {
                    conns[slot] = None;
                    free.push(slot);
                }
            }
        }
        std::mem::swap(&mut again, &mut again_next);
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{self, Cell, Snap};
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Starts the plain loop on an ephemeral port; it runs until the test process ends.
    fn start() -> SocketAddr {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            super::run(([127, 0, 0, 1], 0).into(), |a| tx.send(a).unwrap())
                .expect("plain loop failed");
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("plain loop did not start within 10 s")
    }

    fn measure(addr: SocketAddr, cell: Cell) -> u64 {
        let m = load::run(
            addr,
            cell,
            Duration::from_millis(100),
            Duration::from_millis(300),
            &mut || Ok(Snap::default()),
            &[],
        )
        .unwrap_or_else(|e| panic!("{cell:?}: {e}"));
        m.msgs
    }

    #[test]
    fn echoes_every_byte_in_order_when_writes_leave_a_tail() {
        let addr = start();
        // Windows far beyond the socket buffers: the loop's writes come back short, it
        // queues tails and stops reading those connections; the load generator checks
        // every byte of every connection.
        for cell in [
            Cell {
                conns: 8,
                size: 65536,
                depth: 32,
                blocking: false,
            },
            Cell {
                conns: 1,
                size: 1 << 20,
                depth: 8,
                blocking: false,
            },
            Cell {
                conns: 4,
                size: 300_000,
                depth: 3,
                blocking: true,
            },
            Cell {
                conns: 64,
                size: 64,
                depth: 16,
                blocking: false,
            },
        ] {
            assert!(measure(addr, cell) > 0, "{cell:?}: nothing echoed");
        }
    }

    #[test]
    fn echoes_what_came_before_a_half_close_then_closes() {
        let addr = start();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let writer = {
            let mut w = s.try_clone().unwrap();
            let sent = sent.clone();
            std::thread::spawn(move || {
                w.write_all(&sent).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        s.read_to_end(&mut back)
            .expect("no end of stream within 10 s of the last byte");
        writer.join().unwrap();
        assert_eq!(back.len(), sent.len(), "echoed length");
        assert!(back == sent, "echoed bytes differ from those sent");
    }
}
