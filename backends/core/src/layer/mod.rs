//! Stream layers: byte transforms between the socket and the handler, such as framing,
//! SOCKS5 or TLS.
//!
//! A connection has a stack of layers, bottom (next to the socket) first:
//!
//! ```text
//! socket <-> layer 0 <-> layer 1 <-> ... <-> handler (on_data / ConnSender::send)
//! ```
//!
//! - **Handshake.** Layer 0 is started when the TCP connection is up (on accept for a
//!   server, on connect for a client). Each layer above is started once the one below
//!   reports [`Layer::is_ready`]. `on_connect` fires only when every layer is ready.
//! - **Inbound.** Bytes read from the socket go up through [`Layer::decode_frames`] (which
//!   calls [`Layer::decode`] unless a layer overrides it). What the top layer passes up
//!   reaches `on_data`: a whole frame per call for a frame a layer marked as one
//!   ([`Frames::push_frame`]), stream bytes in chunks of at most the configured
//!   `buffer_size` otherwise.
//! - **Outbound.** Every frame given to `send` is encoded whole, by [`Layer::encode`] of
//!   each layer from the top down. A frame sent before the stack is ready is held whole
//!   (raw, and counted against the watermarks), then encoded once `on_connect` is due.
//!   Bytes a layer emits on its own (handshake messages, replies) are encoded by the
//!   layers below it only.
//! - **Close.** When a connection closes gracefully (or with `close()`, which makes one
//!   last send before closing), after the last frame was encoded, each started layer's
//!   [`Layer::finish`] runs, top first (TLS sends its `close_notify` there).
//! - **Errors.** An error from any method closes the connection (what was already encoded
//!   is still written, and what was decoded before the error is still delivered, so a bad
//!   frame costs nothing that came before it) and is reported through `on_error`: as
//!   [`NetworkError::Connect`](crate::NetworkError::Connect) for a client whose handshake
//!   had not finished, as [`NetworkError::Io`](crate::NetworkError::Io) otherwise. The
//!   peer leaving before the handshake finished is `Io` on both sides, as mill-net
//!   reports it: `UnexpectedEof` for its end of stream, or the read error. With no
//!   `on_connect` yet, there is no `on_disconnect`.
//!
//! Layer methods run on the loop thread that owns the connection, one at a time, never
//! under a lock; they must not block. A method that panics is caught like a handler
//! callback: its connection is aborted and the panic reported as
//! [`NetworkError::HandlerPanic`](crate::NetworkError::HandlerPanic) (then
//! `on_disconnect`, if `on_connect` ran); no layer method of that connection runs again,
//! and the loop goes on. Connections without layers skip all of this.
//!
//! # Example
//!
//! A layer that prefixes every frame with a one-byte tag and checks it on the way in:
//!
//! ```
//! use ringmill_core::layer::Layer;
//! use std::io;
//!
//! struct Tagged;
//!
//! impl Layer for Tagged {
//!     fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
//!         // This toy assumes one frame per read; see `Frames` for real framing.
//!         match input.split_first() {
//!             Some((b'T', rest)) => {
//!                 up.extend_from_slice(rest);
//!                 Ok(())
//!             }
//!             _ => Err(io::Error::new(io::ErrorKind::InvalidData, "untagged frame")),
//!         }
//!     }
//!
//!     fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
//!         out.push(b'T');
//!         out.extend_from_slice(frame);
//!         Ok(())
//!     }
//! }
//!
//! let mut out = Vec::new();
//! Tagged.encode(b"hi", &mut out).unwrap();
//! assert_eq!(out, b"Thi");
//! ```

mod frames;
mod guard;
mod stack;
#[cfg(test)]
mod tests;

pub use frames::{Frames, Piece};
pub(crate) use guard::panic_of;
pub(crate) use stack::LayerStack;
use std::io;
use std::sync::Arc;

/// One stage of a connection's stream transform. See the [module docs](self).
///
/// The required methods and their meaning are those of mill-net's `Layer`, so a layer
/// written for it works here unchanged. Two provided methods go further:
/// [`decode_frames`](Self::decode_frames), for layers that cut the stream into messages,
/// and [`finish`](Self::finish), for layers that say goodbye on a graceful close.
///
/// Every method *appends* to the buffers it is given; they may already hold bytes.
pub trait Layer: Send + 'static {
    /// Called once, when the layer below is ready. Bytes appended to `out` go to the peer.
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let _ = out;
        Ok(())
    }

    /// Takes bytes from the peer. Appends bytes for the layer above to `up` (only once
    /// [`is_ready`](Self::is_ready) is true after this call) and bytes to send back to `out`.
    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()>;

    /// Turns a frame from above into bytes for the layer below. Only called once ready,
    /// and never with an empty frame.
    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()>;

    /// True once the handshake is done and the layer passes data through.
    fn is_ready(&self) -> bool {
        true
    }

    /// Like [`decode`](Self::decode), but keeps message boundaries: a layer that cuts the
    /// stream into frames appends each whole frame with [`Frames::push_frame`], and the
    /// handler then gets it in one `on_data` call. The default passes what `decode` produces
    /// up as stream bytes, without boundaries.
    fn decode_frames(
        &mut self,
        input: &[u8],
        up: &mut Frames,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        up.stream_with(|up| self.decode(input, up, out))
    }

    /// Called once when the connection closes gracefully, after the last frame was
    /// encoded (only for a started layer). Bytes appended to `out` go to the peer before
    /// the socket closes.
    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let _ = out;
        Ok(())
    }

    /// Called once when the peer ends the stream, after every byte it sent went through
    /// [`decode`](Self::decode) (only for a started layer, and not after a layer failed).
    /// An error says the stream must not end here (TLS: the peer did not send
    /// `close_notify`, so what it sent may have been cut short by an attacker); it is
    /// reported to `on_error`, and the connection closes as it would anyway.
    fn end_of_stream(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<L: Layer + ?Sized> Layer for Box<L> {
    fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        (**self).start(out)
    }

    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        (**self).decode(input, up, out)
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        (**self).encode(frame, out)
    }

    fn is_ready(&self) -> bool {
        (**self).is_ready()
    }

    fn decode_frames(
        &mut self,
        input: &[u8],
        up: &mut Frames,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        (**self).decode_frames(input, up, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        (**self).finish(out)
    }

    fn end_of_stream(&mut self) -> io::Result<()> {
        (**self).end_of_stream()
    }
}

/// Builds one layer for each accepted connection of a server.
pub type LayerFactory = Arc<dyn Fn() -> Box<dyn Layer> + Send + Sync>;
