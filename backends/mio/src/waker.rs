//! The cross-thread waker.

use ringmill_core::driver::Waker;
use std::io;

/// Wakes the loop's `Poll` through a [`mio::Waker`] registered with the waker token.
#[derive(Debug)]
pub(crate) struct MioWaker {
    inner: mio::Waker,
}

impl MioWaker {
    /// Wraps a registered [`mio::Waker`].
    pub(crate) fn new(inner: mio::Waker) -> Self {
        Self { inner }
    }
}

impl Waker for MioWaker {
    fn wake(&self) -> io::Result<()> {
        loop {
            match self.inner.wake() {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }
}
