//! Reads paused in `on_connect` hold back the bytes that arrived with the last handshake
//! byte of a layered connection until `resume_reads` (found by the seeded simulation,
//! seed 587: the frame behind the handshake reached `on_data` although the handler had
//! paused reads in `on_connect`).

mod common;

use common::*;
use ringmill::layer::Layer;
use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// A one-byte handshake: sends `H` when started, is ready once `H` came, then passes
/// bytes through.
#[derive(Default)]
struct Hello {
    ready: bool,
}

impl Layer for Hello {
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        out.push(b'H');
        Ok(())
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
        let mut input = input;
        if !self.ready {
            match input.split_first() {
                None => return Ok(()),
                Some((b'H', rest)) => input = rest,
                Some(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "no hello")),
            }
            self.ready = true;
        }
        up.extend_from_slice(input);
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(frame);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ready
    }
}

#[derive(Default)]
struct Seen {
    data: Vec<u8>,
    sender: Option<ConnSender>,
}

struct PauseOnConnect(Arc<Mutex<Seen>>);

impl NetworkHandler for PauseOnConnect {
    fn on_connect(&self, ctx: &ServerContext, id: ConnectionId) -> Result<()> {
        let sender = ctx.sender(id).expect("open in on_connect");
        sender.pause_reads();
        self.0.lock().unwrap().sender = Some(sender);
        Ok(())
    }

    fn on_data(&self, _: &ServerContext, _: ConnectionId, data: &[u8]) -> Result<()> {
        self.0.lock().unwrap().data.extend_from_slice(data);
        Ok(())
    }
}

backend_matrix! {
    fn bytes_behind_the_handshake_wait_for_resume_after_a_pause_in_on_connect(backend: Backend) {
        let event_loop = event_loop(backend);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let server = TcpServer::new(server_config().build(), PauseOnConnect(Arc::clone(&seen)))
            .expect("TcpServer::new")
            .with_layer(|| Box::new(Hello::default()) as Box<dyn Layer>);
        server.start(&event_loop).expect("TcpServer::start");
        let mut client = connect(addr_of(&server));
        let mut hello = [0u8; 1];
        client.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"H");
        // The last handshake byte and data behind it, in one write.
        client.write_all(b"Hdata").unwrap();
        poll_until(WAIT, "on_connect", || seen.lock().unwrap().sender.is_some());
        // A closure posted now runs after the turn that delivered `on_connect`, and so
        // after the rest of that read was handled.
        let sender = seen.lock().unwrap().sender.clone().unwrap();
        let (done, turned) = mpsc::channel();
        sender
            .loop_handle()
            .expect("attached")
            .post(move || {
                let _ = done.send(());
            })
            .unwrap();
        turned.recv_timeout(WAIT).expect("the loop ran the posted closure");
        assert_eq!(
            seen.lock().unwrap().data,
            b"",
            "on_data while reads were paused (paused in on_connect)"
        );
        sender.resume_reads();
        poll_until(WAIT, "the data after the resume", || seen.lock().unwrap().data.len() >= 4);
        assert_eq!(seen.lock().unwrap().data, b"data");
    }
}
