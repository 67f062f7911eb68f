//! [`Frames`] and [`Piece`]: bytes a layer passes up, with their message boundaries.

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
