//! Graceful close while the peer is still sending: the server queues a last answer and
//! closes; the peer must receive every byte of that answer and then a clean end of stream,
//! not a reset that throws away the answer's tail.
//!
//! (`close_connection_gracefully`; `close_connection` discards, as mill-net's does.)
//!
//! A plain `close(2)` of a socket with unread input makes the kernel send RST and discard
//! what is still in the send buffer. So a graceful close shuts the write side down (FIN
//! after the last byte), then keeps reading and discarding until the peer's end of stream
//! or the close linger, and only then closes.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Size of the last answer: larger than the socket buffers of both ends together, so part
/// of it is still in the server's send buffer when the server's queue is empty.
const ANSWER: usize = 4 * 1024 * 1024;

/// Writes until the connection refuses more or `stop` is set; returns what it wrote.
fn keep_writing(mut stream: std::net::TcpStream, stop: Arc<AtomicBool>) -> usize {
    let chunk = pattern(7, 16 * 1024);
    let mut written = 0;
    stream
        .set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while !stop.load(Ordering::SeqCst) {
        match stream.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    written
}

backend_matrix! {
    /// The peer never stops sending until it has the whole answer: it still gets every
    /// byte of the answer, then end of stream; the server closes once.
    fn answer_survives_close_with_unread_input(backend: Backend) {
        // A linger far beyond any wait here: only the peer's end of stream ends the close.
        let event_loop = event_loop_with(backend, |b| b.close_linger(Duration::from_secs(600)));
        let rec = Recorder::shared();
        let answer = pattern(3, ANSWER);
        let answered = AtomicBool::new(false);
        let to_send = answer.clone();
        // Answers the first bytes of the connection, then closes it gracefully.
        let handler = Recording::new(&rec).on_data(move |ctx, id, _| {
            if !answered.swap(true, Ordering::SeqCst) {
                ctx.send_to(id, &to_send)?;
                ctx.close_connection_gracefully(id)?;
            }
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut stream = connect(addr_of(&server));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let stream = stream.try_clone().unwrap();
            let stop = stop.clone();
            thread::spawn(move || keep_writing(stream, stop))
        };
        // The writer keeps the server's receive queue non-empty the whole time, so a
        // plain close would reset the connection.
        let mut got = Vec::with_capacity(ANSWER);
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + WAIT;
        let outcome = loop {
            assert!(
                Instant::now() < deadline,
                "{backend}: the answer did not arrive within {WAIT:?} ({} of {ANSWER} bytes)",
                got.len()
            );
            match stream.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        stop.store(true, Ordering::SeqCst);
        writer.join().expect("writer thread");
        if let Err(e) = outcome {
            panic!(
                "{backend}: reading the answer failed after {} of {ANSWER} bytes: {e} \
                 (the close reset the connection)",
                got.len()
            );
        }
        assert_bytes_eq(&got, &answer, "the answer before end of stream");
        // The server waits for our end of stream before it lets go of the connection.
        let id = rec.wait_peer(stream.local_addr().unwrap(), WAIT);
        assert!(!rec.trace(id).closed(), "{backend}: closed before the peer's end of stream");
        shutdown_write(&stream);
        rec.wait_closed(id, WAIT);
        rec.assert_all_closed_once();
    }

    /// A peer that never closes its side: after the answer and the server's end of stream,
    /// the server gives up at the close linger and closes anyway.
    fn linger_ends_a_close_the_peer_never_answers(backend: Backend) {
        let event_loop = event_loop_with(backend, |b| b.close_linger(Duration::from_millis(200)));
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_data(|ctx, id, _| {
            ctx.send_to(id, b"bye")?;
            ctx.close_connection_gracefully(id)
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut stream = connect(addr_of(&server));
        stream.write_all(b"hello").unwrap();
        let got = read_to_eof(&mut stream, WAIT);
        assert_eq!(got, b"bye", "{backend}: the answer before end of stream");
        // Neither reading nor closing: only the linger can end it.
        let id = rec.wait_peer(stream.local_addr().unwrap(), WAIT);
        rec.wait_closed(id, WAIT);
        rec.assert_all_closed_once();
        drop(stream);
    }
}
