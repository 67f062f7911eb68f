//! `connection_count()` counts a connection until its `on_disconnect` has returned, so a
//! caller that sees the count fall knows every disconnect was delivered (mill-net's
//! `dropping_a_client_closes_its_connection` relies on it).

mod common;
use common::*;

use std::sync::mpsc;
use std::sync::Mutex;

/// Reports the server's connection count as `on_disconnect` sees it.
struct CountInDisconnect(Mutex<mpsc::Sender<usize>>);

impl NetworkHandler for CountInDisconnect {
    fn on_data(&self, _ctx: &ServerContext, _conn: ConnectionId, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    fn on_disconnect(&self, ctx: &ServerContext, _conn: ConnectionId) -> Result<()> {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(ctx.connection_count());
        Ok(())
    }
}

backend_matrix! {
    fn a_connection_is_counted_until_its_on_disconnect_returns(backend: Backend) {
        let event_loop = event_loop(backend);
        let (tx, rx) = mpsc::channel();
        let server = start_server(
            &event_loop,
            server_config().build(),
            CountInDisconnect(Mutex::new(tx)),
        );
        let client = connect(addr_of(&server));
        poll_until(WAIT, "the server counts the connection", || {
            server.connection_count() == 1
        });
        drop(client);
        let seen = rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no on_disconnect within {WAIT:?}"));
        assert_eq!(seen, 1, "on_disconnect saw the connection uncounted already");
        poll_until(WAIT, "the count falls after on_disconnect returned", || {
            server.connection_count() == 0
        });
        event_loop.stop();
    }
}
