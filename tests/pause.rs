//! Contract 5: reads can be paused and resumed per connection; while paused, no `on_data`
//! comes and TCP flow control pushes the peer back; after resuming, everything arrives in
//! order.

mod common;

use common::*;
use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Writes from a non-blocking socket until the kernel refuses (`WouldBlock`): the peer is
/// pushed back. Returns everything written. Fails if the peer keeps taking data past
/// `limit` bytes.
fn write_until_pushed_back(stream: &mut TcpStream, rng: &mut Rng, limit: usize) -> Vec<u8> {
    stream.set_nonblocking(true).unwrap();
    let mut written = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        rng.fill(&mut chunk);
        match stream.write(&chunk) {
            Ok(n) => written.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("write failed after {} bytes: {e}", written.len()),
        }
        assert!(
            written.len() <= limit,
            "the peer took {} bytes without pushing back: reads are not paused",
            written.len()
        );
    }
    stream.set_nonblocking(false).unwrap();
    written
}

backend_matrix! {
    /// Reads paused in `on_connect`: no `on_data` at all while the client writes until
    /// the kernel pushes it back; after `resume_reads` from another thread, every byte
    /// arrives in order, followed by the end of stream.
    fn paused_from_connect(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let handler = Recording::new(&rec).on_connect(|ctx, id| {
            ctx.sender(id).expect("sender in on_connect").pause_reads();
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let written = write_until_pushed_back(&mut client, &mut Rng::new(1), 256 << 20);
        assert!(!written.is_empty());
        assert_eq!(
            rec.trace(id).bytes,
            0,
            "on_data while reads were paused"
        );
        shutdown_write(&client);
        let sender = server.context().sender(id).unwrap();
        sender.resume_reads();
        rec.wait_closed(id, WAIT);
        let trace = rec.trace(id);
        assert_bytes_eq(&trace.data, &written, "bytes after resume");
        assert_eq!(trace.events.first(), Some(&Ev::Connect));
        assert_eq!(trace.events.last(), Some(&Ev::Disconnect));
        rec.assert_all_closed_once();
    }

    /// Reads paused from inside `on_data` once 100 KiB have arrived: no `on_data` comes
    /// while paused (a chunk that was already read is held back, not delivered), the peer
    /// is pushed back, and after `resume_reads` everything arrives in order. Done twice on
    /// the same connection.
    fn paused_mid_stream(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let paused = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicBool::new(false));
        let (p, l) = (Arc::clone(&paused), Arc::clone(&late));
        let next_pause = Arc::new(Shared::new(100 * 1024usize));
        let np = Arc::clone(&next_pause);
        let rec2 = Arc::clone(&rec);
        let handler = Recording::new(&rec).on_data(move |ctx, id, _data| {
            if p.load(Ordering::SeqCst) {
                l.store(true, Ordering::SeqCst);
            }
            let have = rec2.with(|r| r.conns.get(&id).map_or(0, |t| t.bytes));
            if have >= np.with(|n| *n) {
                np.update(|n| *n = usize::MAX);
                p.store(true, Ordering::SeqCst);
                ctx.sender(id).unwrap().pause_reads();
            }
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut client = connect(addr_of(&server));
        let id = rec.wait_peer(client.local_addr().unwrap(), WAIT);
        let sender = server.context().sender(id).unwrap();
        let mut rng = Rng::new(2);
        let mut sent = Vec::new();
        for round in 0..2 {
            let chunk = write_until_pushed_back(&mut client, &mut rng, 256 << 20);
            sent.extend_from_slice(&chunk);
            assert!(paused.load(Ordering::SeqCst), "round {round}: the handler paused");
            let held = rec.trace(id).bytes;
            assert!(held < sent.len(), "round {round}: the paused server cannot have it all");
            assert!(
                !late.load(Ordering::SeqCst),
                "round {round}: on_data while reads were paused"
            );
            // Resume, pausing again 100 KiB further on.
            next_pause.update(|n| *n = held + 100 * 1024);
            paused.store(false, Ordering::SeqCst);
            sender.resume_reads();
            if round == 0 {
                rec.wait_bytes(id, held + 100 * 1024, WAIT);
            }
        }
        assert!(!late.load(Ordering::SeqCst), "on_data while reads were paused");
        next_pause.update(|n| *n = usize::MAX);
        paused.store(false, Ordering::SeqCst);
        sender.resume_reads();
        shutdown_write(&client);
        rec.wait_closed(id, WAIT);
        assert_bytes_eq(&rec.received(id), &sent, "bytes after pause/resume");
        rec.assert_all_closed_once();
    }

    /// Pausing one connection does not stop another on the same server, and the paused
    /// one gets nothing until resumed.
    fn pause_is_per_connection(backend: Backend) {
        let event_loop = event_loop(backend);
        let rec = Recorder::shared();
        let pause_next = Arc::new(AtomicBool::new(true));
        let pn = Arc::clone(&pause_next);
        let handler = Recording::echo(&rec).on_connect(move |ctx, id| {
            if pn.swap(false, Ordering::SeqCst) {
                ctx.sender(id).unwrap().pause_reads();
            }
            Ok(())
        });
        let server = start_server(&event_loop, server_config().build(), handler);
        let mut a = connect(addr_of(&server));
        let a_id = rec.wait_peer(a.local_addr().unwrap(), WAIT);
        let mut b = connect(addr_of(&server));
        let b_id = rec.wait_peer(b.local_addr().unwrap(), WAIT);
        a.write_all(b"held").unwrap();
        for i in 0..20u8 {
            b.write_all(&[i; 100]).unwrap();
            assert_eq!(read_exact_within(&mut b, 100, WAIT), vec![i; 100]);
        }
        assert_eq!(rec.trace(a_id).bytes, 0, "the paused connection got on_data");
        server.context().sender(a_id).unwrap().resume_reads();
        assert_eq!(read_exact_within(&mut a, 4, WAIT), b"held");
        assert_eq!(rec.received(a_id), b"held");
        assert_eq!(rec.trace(b_id).bytes, 2000);
    }
}
