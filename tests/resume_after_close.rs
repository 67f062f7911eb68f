//! A connection closed from its own `on_data` gets no more `on_data`, even when reads were
//! paused with bytes left over and two `resume_reads` reach the loop in one turn (found by
//! the seeded simulation, seed 8383: the second resume armed receiving again before the
//! close was processed, and the next bytes reached the handler after its close, with the
//! paused bytes skipped).

mod common;

use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seen {
    calls: Vec<Vec<u8>>,
    sender: Option<ConnSender>,
}

struct PauseThenClose(Arc<Mutex<Seen>>);

impl NetworkHandler for PauseThenClose {
    fn on_connect(&self, ctx: &ServerContext, id: ConnectionId) -> Result<()> {
        self.0.lock().unwrap().sender = ctx.sender(id);
        Ok(())
    }

    fn on_data(&self, ctx: &ServerContext, id: ConnectionId, data: &[u8]) -> Result<()> {
        let n = {
            let mut seen = self.0.lock().unwrap();
            seen.calls.push(data.to_vec());
            seen.calls.len()
        };
        match n {
            // The first 4-byte chunk: pause, the rest of the read waits.
            1 => ctx.sender(id).expect("open").pause_reads(),
            // The first chunk after the resume: close from the callback.
            2 => ctx.close_connection(id)?,
            _ => {}
        }
        Ok(())
    }
}

backend_matrix! {
    fn no_on_data_after_a_close_from_on_data_between_two_resumes(backend: Backend) {
        let event_loop = event_loop(backend);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let rec_seen = Arc::clone(&seen);
        let server = start_server(
            &event_loop,
            server_config().buffer_size(4).build(),
            PauseThenClose(Arc::clone(&seen)),
        );
        let mut client = connect(addr_of(&server));
        client.write_all(b"AAAABBBBCCCC").unwrap();
        poll_until(WAIT, "the first on_data", || rec_seen.lock().unwrap().calls.len() == 1);
        // More bytes wait in the kernel while reads are paused.
        client.write_all(b"DDDD").unwrap();
        let sender = rec_seen.lock().unwrap().sender.clone().expect("on_connect ran");
        let twice = sender.clone();
        // Two resumes pushed by one closure on the loop: both reach it in the same turn.
        sender
            .loop_handle()
            .expect("attached")
            .post(move || {
                twice.resume_reads();
                twice.resume_reads();
            })
            .unwrap();
        poll_until(WAIT, "the close", || sender.is_closed() && rec_seen.lock().unwrap().calls.len() >= 2);
        // The close is done once the peer sees the end of the connection.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut client, &mut rest);
        let calls = seen.lock().unwrap().calls.clone();
        assert_eq!(
            calls,
            vec![b"AAAA".to_vec(), b"BBBB".to_vec()],
            "on_data after the handler closed the connection"
        );
    }
}
