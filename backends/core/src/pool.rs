//! The receive buffer pool: fixed-size buffers carved from a few large page-aligned regions.
//!
//! One pool per loop thread (it is not shared). The io_uring driver lends every buffer of
//! its pool to the kernel as its provided buffer ring; the mio driver reads every
//! connection into one buffer of a pool of one (it delivers each read before the next).
//! An idle connection holds no buffer.
//!
//! # Layout
//!
//! Buffers are laid out back to back with a stride of `buf_size` rounded up to
//! [`BUF_ALIGN`] bytes, so every buffer starts on a cache line of its own (and on a page when
//! `buf_size` is a multiple of the page size). They are grouped into regions of at most
//! [`REGION_MAX`] bytes (a region always holds at least one buffer, so a buffer larger than
//! that gets a region of its own). Each region is one allocation aligned to [`PAGE_SIZE`]
//! with a length that is a multiple of it, which is what `IORING_REGISTER_BUFFERS` wants.
//! A buffer never straddles two regions. The memory is zeroed at allocation, so every
//! buffer is always initialised and [`BufferPool::slice`] never exposes uninitialised bytes.
//!
//! # Free list
//!
//! Free buffers sit on a stack (last returned, first taken), so the buffers that were used
//! most recently, and are most likely still in cache, are reused first. A bitset of taken
//! buffers catches a buffer returned twice or returned without being taken.

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ptr::NonNull;

/// Alignment and length granularity of every region.
pub const PAGE_SIZE: usize = 4096;
/// Largest region the pool allocates, unless one buffer alone is larger.
pub const REGION_MAX: usize = 2 * 1024 * 1024;
/// Every buffer starts at a multiple of this many bytes.
pub const BUF_ALIGN: usize = 64;
/// Most buffers a pool can hold (buffer ids are `u16`, and io_uring's provided buffer rings
/// hold at most this many entries).
pub const MAX_BUFFERS: usize = 32768;

/// Index of one buffer in a [`BufferPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u16);

/// One page-aligned allocation holding some of the pool's buffers.
struct Region {
    ptr: NonNull<u8>,
    layout: Layout,
}

/// Fixed-size buffers in page-aligned regions. See the module docs.
pub struct BufferPool {
    buf_size: usize,
    count: usize,
    /// Distance between the starts of two neighbouring buffers of one region.
    stride: usize,
    /// Buffers per region (the last region may hold fewer).
    per_region: usize,
    regions: Vec<Region>,
    /// Free buffer ids; the top of the stack is taken first.
    free: Vec<u16>,
    /// One bit per buffer, set while the buffer is taken.
    taken: Vec<u64>,
}

// SAFETY: the regions are plain heap memory owned exclusively by the pool (no thread-local
// or thread-affine state), so moving the pool to another thread and freeing them there is
// sound. The raw pointers are the only reason the auto trait is not derived.
unsafe impl Send for BufferPool {}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl BufferPool {
    /// `count` buffers of `buf_size` bytes each (`count` at most 32768).
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when `buf_size` is zero or above
    /// `u32::MAX` (the kernel's buffer length field is 32-bit), when `count` is zero or above
    /// [`MAX_BUFFERS`], or when the sizes overflow; with [`io::ErrorKind::OutOfMemory`] when
    /// the allocator refuses a region.
    pub fn new(buf_size: usize, count: usize) -> io::Result<Self> {
        if buf_size == 0 {
            return Err(invalid("buffer pool: buffer size must not be zero".into()));
        }
        if buf_size > u32::MAX as usize {
            return Err(invalid(format!(
                "buffer pool: buffer size {buf_size} exceeds the maximum of {}",
                u32::MAX
            )));
        }
        if count == 0 || count > MAX_BUFFERS {
            return Err(invalid(format!(
                "buffer pool: buffer count {count} is outside 1..={MAX_BUFFERS}"
            )));
        }
        let overflow = || {
            invalid(format!(
                "buffer pool: {count} buffers of {buf_size} bytes overflow the address space"
            ))
        };
        let stride = buf_size
            .checked_next_multiple_of(BUF_ALIGN)
            .ok_or_else(overflow)?;
        // The total must be addressable even though it is split into regions.
        stride
            .checked_mul(count)
            .filter(|&total| total <= isize::MAX as usize)
            .ok_or_else(overflow)?;
        let per_region = (REGION_MAX / stride).clamp(1, count);
        let region_count = count.div_ceil(per_region);

        let mut regions = Vec::with_capacity(region_count);
        for r in 0..region_count {
            let bufs = per_region.min(count - r * per_region);
            // `stride * bufs <= stride * count`, checked above.
            let len = (stride * bufs)
                .checked_next_multiple_of(PAGE_SIZE)
                .ok_or_else(overflow)?;
            let layout = Layout::from_size_align(len, PAGE_SIZE).map_err(|_| overflow())?;
            // SAFETY: `layout` has a non-zero size (`len >= stride >= BUF_ALIGN`).
            let raw = unsafe { alloc::alloc_zeroed(layout) };
            let Some(ptr) = NonNull::new(raw) else {
                // Hand the regions allocated so far to a pool with no buffers, whose
                // `Drop` frees them.
                drop(BufferPool {
                    buf_size,
                    count: 0,
                    stride,
                    per_region,
                    regions,
                    free: Vec::new(),
                    taken: Vec::new(),
                });
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!("buffer pool: cannot allocate a region of {len} bytes"),
                ));
            };
            regions.push(Region { ptr, layout });
        }

        // Pushed in reverse so that buffer 0 is taken first.
        let free = (0..count).rev().map(|i| i as u16).collect();
        let taken = vec![0u64; count.div_ceil(64)];
        Ok(BufferPool {
            buf_size,
            count,
            stride,
            per_region,
            regions,
            free,
            taken,
        })
    }

    /// Bytes per buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Buffers in the pool.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Buffers not taken.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Whether buffer `id` is currently taken. Panics if `id` is out of range.
    pub fn is_taken(&self, id: BufId) -> bool {
        let i = self.check(id);
        self.taken[i / 64] & (1 << (i % 64)) != 0
    }

    /// Takes a free buffer; `None` when every buffer is taken (backpressure).
    pub fn take(&mut self) -> Option<BufId> {
        let id = self.free.pop()?;
        let i = id as usize;
        debug_assert!(self.taken[i / 64] & (1 << (i % 64)) == 0);
        self.taken[i / 64] |= 1 << (i % 64);
        Some(BufId(id))
    }

    /// Gives a buffer back. Panics if it was not taken (a double return is a bug).
    pub fn give(&mut self, id: BufId) {
        let i = self.check(id);
        let bit = 1u64 << (i % 64);
        assert!(
            self.taken[i / 64] & bit != 0,
            "buffer pool: buffer {} given back but it is not taken (double return?)",
            id.0
        );
        self.taken[i / 64] &= !bit;
        self.free.push(id.0);
    }

    /// Start of buffer `id`; stable for the pool's lifetime. Panics if `id` is out of range.
    ///
    /// The pointer is valid for reads and writes of [`buf_size`](Self::buf_size) bytes until
    /// the pool is dropped. Writing through it while a slice of the same buffer is alive is
    /// undefined behaviour, as usual.
    pub fn as_ptr(&self, id: BufId) -> *mut u8 {
        let i = self.check(id);
        let region = &self.regions[i / self.per_region];
        let offset = (i % self.per_region) * self.stride;
        // SAFETY: `offset + buf_size <= per_region * stride <= region length`, so the result
        // stays inside the region's allocation.
        unsafe { region.ptr.as_ptr().add(offset) }
    }

    /// Index into [`regions`](Self::regions) of the region holding buffer `id` (the buffer
    /// index to use with fixed-buffer operations). Panics if `id` is out of range.
    pub fn region_index(&self, id: BufId) -> usize {
        self.check(id) / self.per_region
    }

    /// The first `len` bytes of buffer `id`. Panics if `id` is out of range or `len`
    /// exceeds the buffer size.
    pub fn slice(&self, id: BufId, len: usize) -> &[u8] {
        assert!(
            len <= self.buf_size,
            "buffer pool: slice of {len} bytes from a buffer of {} bytes",
            self.buf_size
        );
        let ptr = self.as_ptr(id);
        // SAFETY: `ptr` is valid for `buf_size >= len` bytes of initialised (zeroed at
        // allocation) memory owned by the pool; the shared borrow of `self` keeps the pool
        // alive and prevents `slice_mut` from aliasing it.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Buffer `id`, writable. Panics if `id` is out of range.
    pub fn slice_mut(&mut self, id: BufId) -> &mut [u8] {
        let ptr = self.as_ptr(id);
        // SAFETY: `ptr` is valid for `buf_size` bytes of initialised memory owned by the
        // pool, and buffers never overlap; the exclusive borrow of `self` guarantees no other
        // slice of the pool is alive.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.buf_size) }
    }

    /// The memory regions `(start, len)` backing the pool: the tests check their layout.
    /// Nothing registers them with a kernel (the io_uring driver hands its buffers to a
    /// provided-buffer ring, which needs no registration of the memory).
    ///
    /// Every start is aligned to [`PAGE_SIZE`] and every length is a multiple of it.
    #[cfg(test)]
    pub(crate) fn regions(&self) -> Vec<(*mut u8, usize)> {
        self.regions
            .iter()
            .map(|r| (r.ptr.as_ptr(), r.layout.size()))
            .collect()
    }

    /// The index of `id`, checked against the pool size.
    fn check(&self, id: BufId) -> usize {
        let i = id.0 as usize;
        assert!(
            i < self.count,
            "buffer pool: buffer id {} out of range (pool of {})",
            id.0,
            self.count
        );
        i
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("buf_size", &self.buf_size)
            .field("count", &self.count)
            .field("available", &self.free.len())
            .field("regions", &self.regions.len())
            .finish()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        for region in self.regions.drain(..) {
            // SAFETY: `region.ptr` was returned by `alloc_zeroed(region.layout)` and is freed
            // exactly once, here (the region is drained out of the vector).
            unsafe { alloc::dealloc(region.ptr.as_ptr(), region.layout) };
        }
    }
}

#[cfg(test)]
mod tests;
