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

mod guard;

pub(crate) use guard::panic_of;
use guard::LayerPanic;
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

/// Bytes a layer passes up, with the message boundaries it knows of: a sequence of
/// [`Piece`]s, each a whole frame or a run of stream bytes.
///
/// ```
/// use ringmill_core::layer::{Frames, Piece};
///
/// let mut up = Frames::new();
/// up.push_frame(b"one");
/// up.push_stream(b"ab");
/// up.push_stream(b"cd"); // joins the stream run before it
/// up.push_frame(b"");    // an empty frame is a frame too
/// let pieces: Vec<Piece<'_>> = up.iter().collect();
/// assert_eq!(
///     pieces,
///     [Piece::Frame(b"one"), Piece::Stream(b"abcd"), Piece::Frame(b"")]
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frames {
    data: Vec<u8>,
    pieces: Vec<Mark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    end: usize,
    frame: bool,
}

/// One piece of [`Frames`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole message.
    Frame(&'a [u8]),
    /// Stream bytes with no boundary promised at either end.
    Stream(&'a [u8]),
}

impl<'a> Piece<'a> {
    /// The piece's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Piece::Frame(b) | Piece::Stream(b) => b,
        }
    }

    /// Whether the piece is a whole frame.
    pub fn is_frame(&self) -> bool {
        matches!(self, Piece::Frame(_))
    }
}

impl Frames {
    /// No pieces.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one whole frame (possibly empty).
    pub fn push_frame(&mut self, frame: &[u8]) {
        self.data.extend_from_slice(frame);
        self.pieces.push(Mark {
            end: self.data.len(),
            frame: true,
        });
    }

    /// Appends stream bytes; they join a stream run that ends the sequence.
    pub fn push_stream(&mut self, bytes: &[u8]) {
        self.stream_with(|buf| buf.extend_from_slice(bytes));
    }

    /// Lets `f` append stream bytes straight into the buffer (as [`push_stream`]
    /// does, without the copy). Bytes already there must be left alone.
    ///
    /// [`push_stream`]: Self::push_stream
    pub fn stream_with<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let start = self.data.len();
        let result = f(&mut self.data);
        if self.data.len() < start {
            // Bytes of earlier pieces were removed: keep the marks within the data.
            self.data.resize(start, 0);
        }
        if self.data.len() > start {
            match self.pieces.last_mut() {
                Some(last) if !last.frame && last.end == start => last.end = self.data.len(),
                _ => self.pieces.push(Mark {
                    end: self.data.len(),
                    frame: false,
                }),
            }
        }
        result
    }

    /// How many pieces there are.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether there is no piece.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The number of bytes in all pieces.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// Piece `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Piece<'_>> {
        let mark = *self.pieces.get(index)?;
        let start = match index {
            0 => 0,
            i => self.pieces[i - 1].end,
        };
        let bytes = &self.data[start..mark.end];
        Some(if mark.frame {
            Piece::Frame(bytes)
        } else {
            Piece::Stream(bytes)
        })
    }

    /// The pieces, in order.
    pub fn iter(&self) -> impl Iterator<Item = Piece<'_>> + '_ {
        (0..self.pieces.len()).filter_map(move |i| self.get(i))
    }

    /// All bytes, boundaries dropped.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Removes every piece, keeping the allocation.
    pub fn clear(&mut self) {
        self.data.clear();
        self.pieces.clear();
    }
}

/// Buffers of one level of the stack, kept between calls.
#[derive(Default)]
struct Level {
    up: Frames,
    out: Vec<u8>,
}

/// A connection's layers, bottom first, and where their handshakes stand. Lives on the
/// loop thread that owns the connection.
pub(crate) struct LayerStack {
    layers: Vec<Box<dyn Layer>>,
    /// Layers `0..started` have had `start` called.
    started: usize,
    /// Every layer was ready once (layers do not go back).
    ready: bool,
    /// `on_connect` was already reported as due.
    announced: bool,
    levels: Vec<Level>,
    encode_a: Vec<u8>,
    encode_b: Vec<u8>,
    /// A layer method panicked: no layer method runs again, every call fails with this.
    poison: Option<LayerPanic>,
}

impl LayerStack {
    pub(crate) fn new(layers: Vec<Box<dyn Layer>>) -> Self {
        let levels = layers.iter().map(|_| Level::default()).collect();
        Self {
            layers,
            started: 0,
            ready: false,
            announced: false,
            levels,
            encode_a: Vec::new(),
            encode_b: Vec::new(),
            poison: None,
        }
    }

    /// The error of a stack whose layer panicked.
    pub(crate) fn poisoned(&self) -> io::Result<()> {
        match &self.poison {
            Some(panic) => Err(panic.clone().into_io()),
            None => Ok(()),
        }
    }

    /// Settles a guarded layer call: a panic poisons the stack.
    fn settle<T>(&mut self, result: Result<io::Result<T>, LayerPanic>) -> io::Result<T> {
        match result {
            Ok(result) => result,
            Err(panic) => {
                let e = panic.clone().into_io();
                self.poison = Some(panic);
                Err(e)
            }
        }
    }

    /// Layer `index`'s `is_ready`, guarded: a panic poisons the stack and reads as not
    /// ready.
    fn layer_ready(&mut self, index: usize) -> bool {
        if self.poison.is_some() {
            return false;
        }
        let layer = &self.layers[index];
        match guard::call("is_ready", || layer.is_ready()) {
            Ok(ready) => ready,
            Err(panic) => {
                self.poison = Some(panic);
                false
            }
        }
    }

    pub(crate) fn is_ready(&mut self) -> bool {
        if !self.ready && self.poison.is_none() {
            self.ready = self.started == self.layers.len()
                && (0..self.layers.len()).all(|i| self.layer_ready(i));
        }
        self.ready
    }

    /// True once, the first time every layer is ready.
    pub(crate) fn take_ready(&mut self) -> bool {
        if !self.announced && self.is_ready() {
            self.announced = true;
            true
        } else {
            false
        }
    }

    /// Starts every layer whose lower neighbours are ready; their output goes to `wire`.
    pub(crate) fn advance(&mut self, wire: &mut Vec<u8>) -> io::Result<()> {
        self.poisoned()?;
        while self.started < self.layers.len() {
            let below_ready = (0..self.started).all(|i| self.layer_ready(i));
            self.poisoned()?;
            if !below_ready {
                break;
            }
            let index = self.started;
            let mut out = std::mem::take(&mut self.levels[index].out);
            out.clear();
            let layer = &mut self.layers[index];
            let result = guard::call("start", || layer.start(&mut out));
            let result = self.settle(result);
            self.started += 1;
            let result = result.and_then(|()| self.encode_below(index, &out, wire));
            out.clear();
            self.levels[index].out = out;
            result?;
        }
        Ok(())
    }

    /// Feeds bytes read from the socket. What reaches the top goes to `app`; bytes for the
    /// peer go to `wire`.
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        app: &mut Frames,
        wire: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.decode_at(0, input, app, wire)
    }

    fn decode_at(
        &mut self,
        index: usize,
        input: &[u8],
        app: &mut Frames,
        wire: &mut Vec<u8>,
    ) -> io::Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        self.poisoned()?;
        if index == self.layers.len() {
            app.push_stream(input);
            return Ok(());
        }
        if index >= self.started {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "layer passed data up before the layer above it was started",
            ));
        }
        let mut level = std::mem::take(&mut self.levels[index]);
        level.up.clear();
        level.out.clear();
        let result = self.decode_level(index, input, &mut level, app, wire);
        level.up.clear();
        level.out.clear();
        self.levels[index] = level;
        result
    }

    fn decode_level(
        &mut self,
        index: usize,
        input: &[u8],
        level: &mut Level,
        app: &mut Frames,
        wire: &mut Vec<u8>,
    ) -> io::Result<()> {
        // The top layer writes straight into `app`; the others into their own level.
        let top = index + 1 == self.layers.len();
        let up = if top { &mut *app } else { &mut level.up };
        let before = (up.len(), up.byte_len());
        let layer = &mut self.layers[index];
        let out = &mut level.out;
        let result = guard::call("decode", || layer.decode_frames(input, up, out));
        let passed_up = (up.len(), up.byte_len()) != before;
        let result = self.settle(result);
        // Bytes a layer produced before an error (a TLS alert) still go to the peer, and
        // what it passed up still goes up.
        self.encode_below(index, &level.out, wire)?;
        if passed_up && !self.layer_ready(index) {
            self.poisoned()?;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "layer passed data up before its handshake finished",
            ));
        }
        if result.is_ok() {
            self.advance(wire)?;
        }
        if !top {
            for piece in level.up.iter() {
                self.decode_at(index + 1, piece.bytes(), app, wire)?;
            }
        }
        result
    }

    /// Encodes a frame from the handler through every layer. Only once ready.
    pub(crate) fn encode(&mut self, frame: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        self.encode_below(self.layers.len(), frame, wire)
    }

    /// Runs every started layer's `finish`, top first, each encoded by the layers below.
    pub(crate) fn finish(&mut self, wire: &mut Vec<u8>) -> io::Result<()> {
        for index in (0..self.started).rev() {
            let mut out = std::mem::take(&mut self.levels[index].out);
            out.clear();
            let layer = &mut self.layers[index];
            let result = guard::call("finish", || layer.finish(&mut out));
            let result = self
                .settle(result)
                .and_then(|()| self.encode_below(index, &out, wire));
            out.clear();
            self.levels[index].out = out;
            result?;
        }
        Ok(())
    }

    /// The peer ended the stream: tells every started layer, bottom first, and returns the
    /// first error.
    pub(crate) fn end_of_stream(&mut self) -> io::Result<()> {
        self.poisoned()?;
        let mut first = Ok(());
        for index in 0..self.started {
            let layer = &mut self.layers[index];
            let result = guard::call("end_of_stream", || layer.end_of_stream());
            let result = self.settle(result);
            if first.is_ok() {
                first = result;
            }
            if self.poison.is_some() {
                break;
            }
        }
        first
    }

    /// Encodes `bytes` emitted above layer `top` through layers `top - 1` down to 0.
    fn encode_below(&mut self, top: usize, bytes: &[u8], wire: &mut Vec<u8>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.poisoned()?;
        if top == 0 {
            wire.extend_from_slice(bytes);
            return Ok(());
        }
        if top == 1 {
            let layer = &mut self.layers[0];
            let result = guard::call("encode", || layer.encode(bytes, wire));
            return self.settle(result);
        }
        let mut cur = std::mem::take(&mut self.encode_a);
        let mut next = std::mem::take(&mut self.encode_b);
        cur.clear();
        let result = guard::call("encode", || {
            self.layers[top - 1].encode(bytes, &mut cur)?;
            for index in (1..top - 1).rev() {
                if cur.is_empty() {
                    return Ok(());
                }
                next.clear();
                self.layers[index].encode(&cur, &mut next)?;
                std::mem::swap(&mut cur, &mut next);
            }
            if cur.is_empty() {
                return Ok(());
            }
            self.layers[0].encode(&cur, wire)
        });
        let result = self.settle(result);
        cur.clear();
        next.clear();
        self.encode_a = cur;
        self.encode_b = next;
        result
    }
}

impl Drop for LayerStack {
    /// A layer whose `Drop` panics must not take the loop with it either.
    fn drop(&mut self) {
        for layer in self.layers.drain(..) {
            if let Err(panic) = guard::call("drop", move || drop(layer)) {
                log::error!("ringmill: {panic}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds `tag` to every byte, after a one-byte hello that must be answered.
    struct Shift {
        tag: u8,
        greeted: bool,
    }

    impl Layer for Shift {
        fn start(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
            out.push(self.tag);
            Ok(())
        }

        fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _out: &mut Vec<u8>) -> io::Result<()> {
            let mut input = input;
            if !self.greeted {
                self.greeted = true;
                input = &input[1..];
            }
            up.extend(input.iter().map(|b| b.wrapping_sub(self.tag)));
            Ok(())
        }

        fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
            out.extend(frame.iter().map(|b| b.wrapping_add(self.tag)));
            Ok(())
        }

        fn is_ready(&self) -> bool {
            self.greeted
        }

        fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
            out.push(0xff);
            Ok(())
        }
    }

    fn shift(tag: u8) -> Box<dyn Layer> {
        Box::new(Shift {
            tag,
            greeted: false,
        })
    }

    /// How a test framing layer cuts the stream into frames and marks a frame on the wire.
    trait Framing: Default + Send + 'static {
        /// Appends to `up` every frame that `input` completes; keeps a partial one.
        fn cut(&mut self, input: &[u8], up: &mut Frames);

        /// Appends `frame`, marked, to `out`.
        fn wrap(frame: &[u8], out: &mut Vec<u8>);
    }

    /// The layer of a [`Framing`]: `decode_frames` keeps the frame boundaries, `decode`
    /// passes the same bytes up without them.
    struct Framed<F>(F);

    impl<F: Framing> Layer for Framed<F> {
        fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
            let mut frames = Frames::new();
            self.decode_frames(input, &mut frames, out)?;
            up.extend_from_slice(frames.bytes());
            Ok(())
        }

        fn decode_frames(
            &mut self,
            input: &[u8],
            up: &mut Frames,
            _out: &mut Vec<u8>,
        ) -> io::Result<()> {
            self.0.cut(input, up);
            Ok(())
        }

        fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
            F::wrap(frame, out);
            Ok(())
        }
    }

    /// A fresh framing layer for `F`.
    fn framed<F: Framing>() -> Box<dyn Layer> {
        Box::new(Framed(F::default()))
    }

    /// Cuts the stream at every `;` into frames (without the `;`).
    #[derive(Default)]
    struct Semicolons {
        partial: Vec<u8>,
    }

    impl Framing for Semicolons {
        fn cut(&mut self, input: &[u8], up: &mut Frames) {
            for &b in input {
                if b == b';' {
                    up.push_frame(&self.partial);
                    self.partial.clear();
                } else {
                    self.partial.push(b);
                }
            }
        }

        fn wrap(frame: &[u8], out: &mut Vec<u8>) {
            out.extend_from_slice(frame);
            out.push(b';');
        }
    }

    #[test]
    fn stacked_handshakes_run_bottom_up() {
        let mut stack = LayerStack::new(vec![shift(1), shift(10)]);
        let mut wire = Vec::new();
        stack.advance(&mut wire).unwrap();
        assert_eq!(wire, [1], "only the bottom layer starts");
        assert!(!stack.is_ready());

        let mut app = Frames::new();
        wire.clear();
        // The peer's bottom hello, then its top hello encoded by its bottom layer, then data.
        stack
            .decode(&[1, 11, 1 + 10 + 5], &mut app, &mut wire)
            .unwrap();
        assert_eq!(wire, [11], "the top hello goes through the bottom layer");
        assert_eq!(app.bytes(), [5]);
        assert!(stack.take_ready());
        assert!(!stack.take_ready());

        wire.clear();
        stack.encode(&[7], &mut wire).unwrap();
        assert_eq!(wire, [18]);

        wire.clear();
        stack.finish(&mut wire).unwrap();
        assert_eq!(
            wire,
            [0xff_u8.wrapping_add(1), 0xff],
            "top finish goes through the bottom layer, then the bottom's own"
        );
    }

    #[test]
    fn data_before_the_handshake_is_an_error() {
        struct Eager;
        impl Layer for Eager {
            fn decode(
                &mut self,
                input: &[u8],
                up: &mut Vec<u8>,
                _: &mut Vec<u8>,
            ) -> io::Result<()> {
                up.extend_from_slice(input);
                Ok(())
            }
            fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
                out.extend_from_slice(frame);
                Ok(())
            }
            fn is_ready(&self) -> bool {
                false
            }
        }
        let mut stack = LayerStack::new(vec![Box::new(Eager)]);
        stack.advance(&mut Vec::new()).unwrap();
        let err = stack
            .decode(b"x", &mut Frames::new(), &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn frames_survive_a_stream_layer_below_and_reach_the_top() {
        // Shift (stream) at the bottom, Semicolons (frames) on top.
        let mut stack = LayerStack::new(vec![shift(3), framed::<Semicolons>()]);
        let mut wire = Vec::new();
        stack.advance(&mut wire).unwrap();
        assert_eq!(wire, [3]);
        let mut app = Frames::new();
        let bytes: Vec<u8> = b"ab;c".iter().map(|b| b + 3).collect();
        let mut input = vec![9];
        input.extend_from_slice(&bytes);
        stack.decode(&input, &mut app, &mut wire).unwrap();
        assert!(stack.take_ready());
        assert_eq!(app.iter().collect::<Vec<_>>(), [Piece::Frame(b"ab")]);
        app.clear();
        let more: Vec<u8> = b"d;;e;".iter().map(|b| b + 3).collect();
        stack.decode(&more, &mut app, &mut wire).unwrap();
        assert_eq!(
            app.iter().collect::<Vec<_>>(),
            [Piece::Frame(b"cd"), Piece::Frame(b""), Piece::Frame(b"e")]
        );

        wire.clear();
        stack.encode(b"xy", &mut wire).unwrap();
        let want: Vec<u8> = b"xy;".iter().map(|b| b + 3).collect();
        assert_eq!(wire, want, "encoded top down");
    }

    #[test]
    fn a_stream_layer_above_frames_sees_each_frame_as_input() {
        let mut stack = LayerStack::new(vec![framed::<Semicolons>(), shift(1)]);
        let mut wire = Vec::new();
        stack.advance(&mut wire).unwrap();
        assert_eq!(wire, [1, b';'], "the top hello is framed by the bottom");
        let mut app = Frames::new();
        stack
            .decode(&[1, b';', 3, 4, b';'], &mut app, &mut wire)
            .unwrap();
        assert!(stack.take_ready());
        assert_eq!(app.iter().collect::<Vec<_>>(), [Piece::Stream(&[2, 3])]);
    }

    #[test]
    fn empty_encoder_output_stops_there() {
        /// Swallows everything it is asked to encode.
        struct Sink;
        impl Layer for Sink {
            fn decode(&mut self, _: &[u8], _: &mut Vec<u8>, _: &mut Vec<u8>) -> io::Result<()> {
                Ok(())
            }
            fn encode(&mut self, _: &[u8], _: &mut Vec<u8>) -> io::Result<()> {
                Ok(())
            }
        }
        let mut stack = LayerStack::new(vec![
            framed::<Semicolons>(),
            framed::<Semicolons>(),
            Box::new(Sink),
        ]);
        let mut wire = Vec::new();
        stack.advance(&mut wire).unwrap();
        stack.encode(b"x", &mut wire).unwrap();
        assert!(
            wire.is_empty(),
            "no empty frame was made up below: {wire:?}"
        );
    }

    /// One length byte before each frame.
    #[derive(Default)]
    struct LenByte {
        partial: Vec<u8>,
    }

    impl Framing for LenByte {
        fn cut(&mut self, input: &[u8], up: &mut Frames) {
            self.partial.extend_from_slice(input);
            while let Some(&len) = self.partial.first() {
                let len = usize::from(len);
                if self.partial.len() < 1 + len {
                    break;
                }
                up.push_frame(&self.partial[1..1 + len]);
                self.partial.drain(..1 + len);
            }
        }

        fn wrap(frame: &[u8], out: &mut Vec<u8>) {
            out.push(frame.len() as u8);
            out.extend_from_slice(frame);
        }
    }

    #[test]
    fn three_layers_encode_and_decode_in_order() {
        let mut stack = LayerStack::new(vec![
            framed::<LenByte>(),
            framed::<LenByte>(),
            framed::<LenByte>(),
        ]);
        let mut wire = Vec::new();
        stack.advance(&mut wire).unwrap();
        assert!(stack.take_ready());
        stack.encode(b"a", &mut wire).unwrap();
        assert_eq!(wire, [3, 2, 1, b'a']);
        let mut app = Frames::new();
        // Two nested frames, "b" and "cd", the second split across two reads.
        let input = [3, 2, 1, b'b', 4, 3, 2, b'c', b'd'];
        for (i, cut) in [0, 1, 4, 6, 9].into_iter().enumerate() {
            if i > 0 {
                let from = [0, 1, 4, 6, 9][i - 1];
                stack
                    .decode(&input[from..cut], &mut app, &mut wire)
                    .unwrap();
            }
        }
        assert_eq!(
            app.iter().collect::<Vec<_>>(),
            [Piece::Frame(b"b"), Piece::Frame(b"cd")]
        );
    }

    #[test]
    fn frames_keep_stream_runs_together_and_marks_in_range() {
        let mut f = Frames::new();
        f.push_stream(b"");
        assert!(f.is_empty(), "no bytes, no piece");
        f.push_stream(b"ab");
        f.push_frame(b"c");
        f.push_stream(b"d");
        f.stream_with(|buf| buf.push(b'e'));
        assert_eq!(f.len(), 3);
        assert_eq!(f.byte_len(), 5);
        assert_eq!(f.get(2), Some(Piece::Stream(b"de")));
        assert_eq!(f.get(3), None);
        // A misbehaving closure that removes bytes cannot break the earlier pieces.
        f.stream_with(|buf| buf.clear());
        assert_eq!(f.byte_len(), 5);
        assert_eq!(f.get(2).map(|p| p.bytes().len()), Some(2));
        f.clear();
        assert!(f.is_empty());
    }
}
