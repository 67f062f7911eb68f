//! Tests of the layer stack and of [`Frames`](super::Frames).

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
        fn decode(&mut self, input: &[u8], up: &mut Vec<u8>, _: &mut Vec<u8>) -> io::Result<()> {
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
