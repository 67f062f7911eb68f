//! The receive buffer pool: fixed-size buffers carved from a few large page-aligned regions.
//!
//! One pool per loop thread (it is not shared). The io_uring driver builds its provided
//! buffer ring from it and registers its regions with the ring; the mio driver uses it as a
//! free list. An idle connection holds no buffer.

use std::io;

/// Index of one buffer in a [`BufferPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u16);

/// Fixed-size buffers in page-aligned regions. See the module docs.
pub struct BufferPool {
    _todo: (),
}

impl BufferPool {
    /// `count` buffers of `buf_size` bytes each (`count` at most 32768).
    pub fn new(buf_size: usize, count: usize) -> io::Result<Self> {
        let _ = (buf_size, count);
        todo!()
    }
    /// Bytes per buffer.
    pub fn buf_size(&self) -> usize {
        todo!()
    }
    /// Buffers in the pool.
    pub fn count(&self) -> usize {
        todo!()
    }
    /// Buffers not taken.
    pub fn available(&self) -> usize {
        todo!()
    }
    /// Takes a free buffer; `None` when every buffer is taken (backpressure).
    pub fn take(&mut self) -> Option<BufId> {
        todo!()
    }
    /// Gives a buffer back. Panics if it was not taken (a double return is a bug).
    pub fn give(&mut self, id: BufId) {
        let _ = id;
        todo!()
    }
    /// Start of buffer `id`; stable for the pool's lifetime.
    pub fn as_ptr(&self, id: BufId) -> *mut u8 {
        let _ = id;
        todo!()
    }
    /// The first `len` bytes of buffer `id`.
    pub fn slice(&self, id: BufId, len: usize) -> &[u8] {
        let _ = (id, len);
        todo!()
    }
    /// Buffer `id`, writable.
    pub fn slice_mut(&mut self, id: BufId) -> &mut [u8] {
        let _ = id;
        todo!()
    }
    /// The memory regions `(start, len)` backing the pool, for registration with a kernel.
    pub fn regions(&self) -> Vec<(*mut u8, usize)> {
        todo!()
    }
}
