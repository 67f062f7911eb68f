//! [`LayerStack`]: a connection's layers, their handshakes, and the bytes between them.

use super::guard::{self, LayerPanic};
use super::{Frames, Layer};
use std::io;

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
