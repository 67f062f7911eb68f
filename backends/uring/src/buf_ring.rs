//! The provided buffer ring (`IORING_REGISTER_PBUF_RING`) over the core's buffer pool.
//!
//! The ring is an array of [`BufRingEntry`] in page-aligned anonymous memory, shared with
//! the kernel: the driver appends buffers at the tail, the kernel takes them from the head
//! for multishot receives and reports the buffer id in each CQE. Every buffer of the pool
//! is lent to the ring at start; a buffer comes back to the driver with a receive
//! completion and goes back to the ring once its bytes were delivered (or dropped).

use crate::error::SetupError;
use io_uring::types::BufRingEntry;
use io_uring::IoUring;
use ringmill_core::pool::{BufId, BufferPool};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

/// Buffer group id of the ring.
pub(crate) const BGID: u16 = 0;

/// The provided buffer ring and the pool whose buffers it lends to the kernel.
pub(crate) struct BufRing {
    /// `entries` ring entries, shared with the kernel.
    ring: NonNull<BufRingEntry>,
    /// Bytes mapped at `ring`.
    map_len: usize,
    /// Ring entries (a power of two).
    entries: u16,
    /// The driver's tail; published to the kernel through entry 0's `resv` field.
    tail: u16,
    /// The buffers' memory.
    pool: BufferPool,
    /// Buffers the driver believes are in the ring: lent minus those reported by
    /// completions. The kernel may have taken some whose completions are not reaped yet.
    in_ring: usize,
}

impl BufRing {
    /// Maps a ring of `pool.count()` entries, fills it with every buffer of the pool and
    /// registers it with `ring` as buffer group [`BGID`]. The pool's regions are not
    /// registered as fixed buffers: no operation would read them as such (receives pick
    /// them through the ring, sends never come from them), so registering would only lock
    /// memory.
    pub(crate) fn new(ring: &IoUring, mut pool: BufferPool) -> Result<Self, SetupError> {
        let count = pool.count();
        if !count.is_power_of_two() || count > usize::from(u16::MAX / 2 + 1) {
            return Err(SetupError::new(
                format!("provided buffer ring: {count} entries is not a power of two up to 32768"),
                io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let entries = count as u16;
        let map_len = count * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the result is checked
        // against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(SetupError::new("provided buffer ring: mmap failed", e));
        }
        let ring_ptr = NonNull::new(addr.cast::<BufRingEntry>()).expect("mmap returned null");
        // Take every buffer: from now on the pool is only memory, and the ring decides who
        // holds which buffer.
        let mut ids = Vec::with_capacity(count);
        while let Some(id) = pool.take() {
            ids.push(id);
        }
        let mut this = BufRing {
            ring: ring_ptr,
            map_len,
            entries,
            tail: 0,
            pool,
            in_ring: 0,
        };
        for id in ids {
            this.write_entry(id.0);
        }
        this.publish();
        // SAFETY: `ring_ptr` points to `entries` entries of page-aligned memory that stays
        // mapped until `self` is dropped, and the driver unregisters the group (or drops
        // the ring) before that; the buffers the entries point to live in `self.pool`,
        // which is dropped with `self` too.
        let reg = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr as u64, entries, BGID, 0)
        };
        if let Err(e) = reg {
            return Err(SetupError::new(
                "registering the provided buffer ring (IORING_REGISTER_PBUF_RING) failed",
                e,
            ));
        }
        Ok(this)
    }

    /// Buffers in the ring.
    pub(crate) fn count(&self) -> usize {
        self.pool.count()
    }

    /// Bytes per buffer.
    pub(crate) fn buf_size(&self) -> usize {
        self.pool.buf_size()
    }

    /// Buffers the driver believes the kernel can still pick from.
    pub(crate) fn in_ring(&self) -> usize {
        self.in_ring
    }

    /// Notes that a completion handed one buffer of the ring to the driver.
    pub(crate) fn taken(&mut self) {
        self.in_ring = self.in_ring.saturating_sub(1);
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed to the driver.
    pub(crate) fn slice(&self, bid: u16, len: usize) -> &[u8] {
        self.pool.slice(BufId(bid), len)
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.write_entry(bid);
        self.publish();
    }

    /// Writes buffer `bid` at the local tail without publishing it.
    fn write_entry(&mut self, bid: u16) {
        assert!(
            usize::from(bid) < self.pool.count(),
            "buffer id {bid} out of range"
        );
        let index = usize::from(self.tail & (self.entries - 1));
        // SAFETY: `index < entries`, so the entry lies inside the mapping. The kernel only
        // reads entries between its head and the published tail; this one is past the
        // published tail, so no one else accesses its fields now. The setters touch
        // `addr`, `len` and `bid` only, never the `resv` field that doubles as the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        entry.set_addr(self.pool.as_ptr(BufId(bid)) as u64);
        entry.set_len(self.pool.buf_size() as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.in_ring += 1;
    }

    /// Makes every written entry visible to the kernel.
    fn publish(&self) {
        // SAFETY: the mapping starts with initialised entries; `tail` returns the address
        // of entry 0's `resv` field, which the kernel reads as the ring's tail. It is a
        // naturally aligned `u16` inside our mapping, so viewing it as an `AtomicU16` is
        // sound; the release store orders the entry writes before the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: `ring` and `map_len` are exactly the mapping made in `new`; the driver
        // drops the io_uring (or leaks this ring) before this runs, so the kernel no longer
        // uses it.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.map_len);
        }
    }
}
