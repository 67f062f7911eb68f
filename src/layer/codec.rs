//! Framing codecs: [`LengthPrefixed`] and [`LineDelimited`].

use super::{Frames, Layer};
use std::fmt;
use std::io;

/// A buffer that held a large frame is dropped rather than kept, so an idle connection
/// does not hold a burst's worth of memory.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The error inside the [`io::Error`] (kind [`InvalidData`](io::ErrorKind::InvalidData)
/// inbound, [`InvalidInput`](io::ErrorKind::InvalidInput) outbound) that a codec fails with
/// when a frame is over its cap. The connection is then closed; frames before it were
/// delivered, and what was queued before it is still written.
///
/// ```
/// use ringmill::layer::FrameTooLarge;
/// use ringmill::errors::NetworkError;
///
/// fn too_large(e: &NetworkError) -> Option<&FrameTooLarge> {
///     match e {
///         NetworkError::Io(_) => e.io_error()?.get_ref()?.downcast_ref::<FrameTooLarge>(),
///         _ => None,
///     }
/// }
/// # let e = NetworkError::Io(Box::new(std::io::Error::new(
/// #     std::io::ErrorKind::InvalidData,
/// #     FrameTooLarge { len: 11, max: 10 },
/// # )));
/// # assert_eq!(too_large(&e).map(|f| f.len), Some(11));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The frame's length: announced by its prefix, or (for a line still without its
    /// newline) how many bytes had come when the cap was passed.
    pub len: usize,
    /// The codec's cap.
    pub max: usize,
}

impl fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frame of {} bytes exceeds the {}-byte cap",
            self.len, self.max
        )
    }
}

impl std::error::Error for FrameTooLarge {}

fn too_large(kind: io::ErrorKind, len: usize, max: usize) -> io::Error {
    io::Error::new(kind, FrameTooLarge { len, max })
}

/// A codec's [`Layer::decode`]: its [`Layer::decode_frames`], with the frames passed up as
/// plain bytes (boundaries dropped). What was decoded before an error is still passed up.
fn decode_unframed(
    codec: &mut impl Layer,
    input: &[u8],
    up: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let mut frames = Frames::new();
    let result = codec.decode_frames(input, &mut frames, out);
    up.extend_from_slice(frames.bytes());
    result
}

/// Frames as a big-endian `u32` length followed by that many bytes.
///
/// Inbound, `on_data` gets one whole frame per call (the prefix removed), however the
/// bytes were split on the wire. A prefix above the cap fails the connection with
/// [`FrameTooLarge`] at once, before any of that frame is buffered. Outbound, each frame
/// given to `send` gets its prefix; one above the cap fails the connection the same way,
/// so set the connection's `max_frame` to the same cap to have such sends refused instead
/// ([`SendError::FrameTooLarge`](crate::tcp::SendError::FrameTooLarge)).
///
/// Memory per connection: the partial frame being received (at most the cap).
///
/// ```
/// use ringmill::layer::{Frames, Layer, LengthPrefixed, Piece};
///
/// let mut codec = LengthPrefixed::new(1024);
/// let mut wire = Vec::new();
/// codec.encode(b"hello", &mut wire).unwrap();
/// assert_eq!(wire, b"\0\0\0\x05hello");
///
/// let mut up = Frames::new();
/// codec.decode_frames(&wire[..3], &mut up, &mut Vec::new()).unwrap();
/// assert!(up.is_empty(), "not a whole frame yet");
/// codec.decode_frames(&wire[3..], &mut up, &mut Vec::new()).unwrap();
/// assert_eq!(up.get(0), Some(Piece::Frame(b"hello")));
/// ```
#[derive(Debug, Clone)]
pub struct LengthPrefixed {
    max: usize,
    /// The partial frame: prefix first.
    buf: Vec<u8>,
    /// The length announced by the prefix in `buf`, once it is whole.
    want: usize,
}

impl LengthPrefixed {
    /// A codec for frames of at most `max_frame` bytes (capped at `u32::MAX`).
    pub fn new(max_frame: usize) -> Self {
        Self {
            max: max_frame.min(u32::MAX as usize),
            buf: Vec::new(),
            want: 0,
        }
    }

    /// The cap on a frame's length.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    fn check(&self, len: usize) -> io::Result<()> {
        if len > self.max {
            return Err(too_large(io::ErrorKind::InvalidData, len, self.max));
        }
        Ok(())
    }
}

fn prefix(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

impl Layer for LengthPrefixed {
    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        decode_unframed(self, input, up, out)
    }

    fn decode_frames(
        &mut self,
        mut input: &[u8],
        up: &mut Frames,
        _out: &mut Vec<u8>,
    ) -> io::Result<()> {
        while !input.is_empty() {
            if self.buf.is_empty() {
                // Whole frames straight from the input, without a copy into `buf`.
                if input.len() >= 4 {
                    let len = prefix(input);
                    self.check(len)?;
                    if input.len() - 4 >= len {
                        up.push_frame(&input[4..4 + len]);
                        input = &input[4 + len..];
                        continue;
                    }
                }
            }
            if self.buf.len() < 4 {
                let take = (4 - self.buf.len()).min(input.len());
                self.buf.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.buf.len() < 4 {
                    return Ok(());
                }
                self.want = prefix(&self.buf);
                self.check(self.want)?;
            }
            let have = self.buf.len() - 4;
            let take = (self.want - have).min(input.len());
            self.buf.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.buf.len() - 4 == self.want {
                up.push_frame(&self.buf[4..]);
                self.buf.clear();
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
            }
        }
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if frame.len() > self.max {
            return Err(too_large(
                io::ErrorKind::InvalidInput,
                frame.len(),
                self.max,
            ));
        }
        out.reserve(4 + frame.len());
        out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        out.extend_from_slice(frame);
        Ok(())
    }
}

/// Frames as lines ending in `\n`.
///
/// Inbound, `on_data` gets one whole line per call, without its `\n` (nor a `\r` right
/// before it, so CRLF lines work too); an empty line is an empty frame. A line longer than
/// the cap fails the connection with [`FrameTooLarge`] as soon as the cap is passed,
/// newline or not. Outbound, a frame that already ends in `\n` is sent as it is, any
/// other gets a `\n`; a frame with a `\n` elsewhere, or longer than the cap, fails the
/// connection (`InvalidInput`).
///
/// ```
/// use ringmill::layer::{Frames, Layer, LineDelimited, Piece};
///
/// let mut codec = LineDelimited::new(80);
/// let mut up = Frames::new();
/// codec.decode_frames(b"hel", &mut up, &mut Vec::new()).unwrap();
/// codec.decode_frames(b"lo\r\n\nbye\n", &mut up, &mut Vec::new()).unwrap();
/// let lines: Vec<_> = up.iter().collect();
/// assert_eq!(lines, [Piece::Frame(b"hello"), Piece::Frame(b""), Piece::Frame(b"bye")]);
///
/// let mut wire = Vec::new();
/// codec.encode(b"hi", &mut wire).unwrap();
/// codec.encode(b"there\n", &mut wire).unwrap();
/// assert_eq!(wire, b"hi\nthere\n");
/// ```
#[derive(Debug, Clone)]
pub struct LineDelimited {
    max: usize,
    /// The partial line.
    buf: Vec<u8>,
}

impl LineDelimited {
    /// A codec for lines of at most `max_line` bytes (not counting the line ending).
    pub fn new(max_line: usize) -> Self {
        Self {
            max: max_line,
            buf: Vec::new(),
        }
    }

    /// The cap on a line's length.
    pub fn max_line(&self) -> usize {
        self.max
    }

    fn push_line(&self, line: &[u8], up: &mut Frames) -> io::Result<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max {
            return Err(too_large(io::ErrorKind::InvalidData, line.len(), self.max));
        }
        up.push_frame(line);
        Ok(())
    }
}

impl Layer for LineDelimited {
    fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        decode_unframed(self, input, up, out)
    }

    fn decode_frames(
        &mut self,
        mut input: &[u8],
        up: &mut Frames,
        _out: &mut Vec<u8>,
    ) -> io::Result<()> {
        while let Some(at) = input.iter().position(|&b| b == b'\n') {
            if self.buf.is_empty() {
                self.push_line(&input[..at], up)?;
            } else {
                self.buf.extend_from_slice(&input[..at]);
                let line = std::mem::take(&mut self.buf);
                let result = self.push_line(&line, up);
                self.buf = line;
                self.buf.clear();
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
                result?;
            }
            input = &input[at + 1..];
        }
        // A partial line: one byte over the cap may still be the `\r` of a CRLF.
        let partial = self.buf.len() + input.len();
        let last = input.last().or(self.buf.last());
        // (`partial - max`, not `max + 1`: a cap of `usize::MAX` means no cap.)
        let over = partial.saturating_sub(self.max);
        if over > 1 || (over == 1 && last != Some(&b'\r')) {
            return Err(too_large(io::ErrorKind::InvalidData, partial, self.max));
        }
        self.buf.extend_from_slice(input);
        Ok(())
    }

    fn encode(&mut self, frame: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let body = frame.strip_suffix(b"\n").unwrap_or(frame);
        if body.contains(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "line-delimited frame contains a newline before its end",
            ));
        }
        if body.len() > self.max {
            return Err(too_large(io::ErrorKind::InvalidInput, body.len(), self.max));
        }
        out.reserve(body.len() + 1);
        out.extend_from_slice(body);
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Piece;

    /// Frames decoded, and the error that stopped decoding with the frames before it.
    type Decoded = Result<Vec<Vec<u8>>, (Vec<Vec<u8>>, io::Error)>;

    /// Feeds `wire` to a fresh codec from `make` cut at every split point (one cut, and
    /// byte by byte), and checks the frames (or the error) are always the same.
    fn every_split<L: Layer>(make: impl Fn() -> L, wire: &[u8]) -> Decoded {
        let run = |cuts: &[usize]| {
            let mut codec = make();
            let mut up = Frames::new();
            let mut from = 0;
            let mut result = Ok(());
            for &cut in cuts.iter().chain(std::iter::once(&wire.len())) {
                if let Err(e) = codec.decode_frames(&wire[from..cut], &mut up, &mut Vec::new()) {
                    result = Err(e);
                    break;
                }
                from = cut;
            }
            let frames: Vec<Vec<u8>> = up
                .iter()
                .map(|p| {
                    assert!(p.is_frame(), "a codec passes up whole frames only");
                    p.bytes().to_vec()
                })
                .collect();
            (frames, result)
        };
        let (whole, whole_result) = run(&[]);
        let bytewise: Vec<usize> = (1..wire.len()).collect();
        let mut variants = vec![bytewise];
        for cut in 1..wire.len() {
            variants.push(vec![cut]);
        }
        for cuts in variants {
            let (frames, result) = run(&cuts);
            assert_eq!(frames, whole, "frames differ when cut at {cuts:?}");
            assert_eq!(
                result.as_ref().map_err(|e| e.to_string()),
                whole_result.as_ref().map_err(|e| e.to_string()),
                "outcome differs when cut at {cuts:?}"
            );
        }
        match whole_result {
            Ok(()) => Ok(whole),
            Err(e) => Err((whole, e)),
        }
    }

    fn length_prefixed(frames: &[&[u8]]) -> Vec<u8> {
        let mut codec = LengthPrefixed::new(1 << 20);
        let mut wire = Vec::new();
        for f in frames {
            codec.encode(f, &mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn length_prefixed_round_trips_at_every_split() {
        let frames: [&[u8]; 5] = [b"hello", b"", b"x", &[0u8; 300], b"last one"];
        let wire = length_prefixed(&frames);
        let got = every_split(|| LengthPrefixed::new(300), &wire).unwrap();
        assert_eq!(got, frames.map(<[u8]>::to_vec));
    }

    #[test]
    fn length_prefixed_over_the_cap_fails_after_the_frames_before_it() {
        let mut wire = length_prefixed(&[b"ok", b"fine"]);
        wire.extend_from_slice(&length_prefixed(&[&[7u8; 11]]));
        wire.extend_from_slice(&length_prefixed(&[b"never"]));
        let (got, e) = every_split(|| LengthPrefixed::new(10), &wire).unwrap_err();
        assert_eq!(got, [b"ok".to_vec(), b"fine".to_vec()]);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<FrameTooLarge>());
        assert_eq!(inner, Some(&FrameTooLarge { len: 11, max: 10 }));
        assert_eq!(e.to_string(), "frame of 11 bytes exceeds the 10-byte cap");
    }

    #[test]
    fn length_prefixed_refuses_a_huge_prefix_without_buffering() {
        let mut codec = LengthPrefixed::new(1024);
        let e = codec
            .decode_frames(
                &[0xff, 0xff, 0xff, 0xff, 1, 2],
                &mut Frames::new(),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(codec.buf.capacity() < 1024, "nothing was reserved for it");
    }

    #[test]
    fn length_prefixed_encode_refuses_over_the_cap() {
        let mut codec = LengthPrefixed::new(3);
        let mut out = Vec::new();
        let e = codec.encode(b"four", &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty(), "nothing of it was written");
        codec.encode(b"abc", &mut out).unwrap();
        assert_eq!(out, b"\0\0\0\x03abc");
    }

    #[test]
    fn length_prefixed_flat_decode_concatenates() {
        let mut codec = LengthPrefixed::new(16);
        let mut up = Vec::new();
        codec
            .decode(&length_prefixed(&[b"ab", b"cd"]), &mut up, &mut Vec::new())
            .unwrap();
        assert_eq!(up, b"abcd");
    }

    #[test]
    fn line_delimited_round_trips_at_every_split() {
        let wire = b"first\nsecond\r\n\n\r\nexactly ten\n";
        let got = every_split(|| LineDelimited::new(11), wire).unwrap();
        assert_eq!(
            got,
            [
                b"first".to_vec(),
                b"second".to_vec(),
                Vec::new(),
                Vec::new(),
                b"exactly ten".to_vec()
            ]
        );
    }

    #[test]
    fn line_delimited_without_a_cap_takes_partial_lines() {
        // `usize::MAX` is no cap: the check on a partial line must not compute `cap + 1`.
        let mut codec = LineDelimited::new(usize::MAX);
        let mut up = Frames::new();
        codec
            .decode_frames(b"par", &mut up, &mut Vec::new())
            .expect("a partial line");
        codec
            .decode_frames(b"tial\r\n", &mut up, &mut Vec::new())
            .expect("its end");
        assert_eq!(up.iter().collect::<Vec<_>>(), [Piece::Frame(b"partial")]);
    }

    #[test]
    fn line_delimited_over_the_cap_fails_after_the_lines_before_it() {
        // The cap is 4: "12345" fails whether or not its newline came yet.
        for wire in [
            &b"ab\ncd\n12345\nnever\n"[..],
            b"ab\ncd\n12345",
            b"ab\ncd\n1234\r5",
        ] {
            let (got, e) = every_split(|| LineDelimited::new(4), wire).unwrap_err();
            assert_eq!(got, [b"ab".to_vec(), b"cd".to_vec()], "{wire:?}");
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(
                e.get_ref()
                    .is_some_and(|e| e.downcast_ref::<FrameTooLarge>().is_some()),
                "{e}"
            );
        }
        // A CRLF line exactly at the cap is fine, however it is split.
        let got = every_split(|| LineDelimited::new(4), b"1234\r\n").unwrap();
        assert_eq!(got, [b"1234".to_vec()]);
    }

    #[test]
    fn line_delimited_encode_rules() {
        let mut codec = LineDelimited::new(5);
        let mut out = Vec::new();
        codec.encode(b"abc", &mut out).unwrap();
        codec.encode(b"def\n", &mut out).unwrap();
        codec.encode(b"\n", &mut out).unwrap();
        assert_eq!(out, b"abc\ndef\n\n");
        assert_eq!(
            codec.encode(b"a\nb", &mut out).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            codec.encode(b"123456", &mut out).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(out, b"abc\ndef\n\n", "a refused frame writes nothing");
    }

    #[test]
    fn codecs_pass_up_whole_frames_only() {
        let mut up = Frames::new();
        LineDelimited::new(8)
            .decode_frames(b"a\nb", &mut up, &mut Vec::new())
            .unwrap();
        assert_eq!(up.iter().collect::<Vec<_>>(), [Piece::Frame(b"a")]);
    }
}
