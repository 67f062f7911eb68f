//! Why the io_uring driver could not be set up.

use std::fmt;
use std::io;

/// Why [`UringDriver::new`](crate::UringDriver::new) failed: a human-readable reason and the
/// underlying [`io::Error`].
///
/// Typical causes, by the error's OS code:
///
/// | code | meaning |
/// |---|---|
/// | `EPERM` | io_uring is denied: a seccomp filter, or `kernel.io_uring_disabled` |
/// | `ENOSYS` | the kernel has no io_uring at all |
/// | `ENOMEM` | the ring or its buffers could not be allocated or locked (`RLIMIT_MEMLOCK`) |
/// | `EINVAL` | the kernel rejected every setup flag combination or the buffer ring |
/// | `EOPNOTSUPP` | a required feature or opcode is missing (the reason names it) |
///
/// Any of these means "use another backend"; the reason says which part was missing.
#[derive(Debug)]
pub struct SetupError {
    reason: String,
    source: io::Error,
}

impl SetupError {
    /// An error with a reason and its cause.
    pub(crate) fn new(reason: impl Into<String>, source: io::Error) -> Self {
        Self {
            reason: reason.into(),
            source,
        }
    }

    /// A required feature or opcode the kernel lacks (`EOPNOTSUPP`).
    pub(crate) fn unsupported(reason: impl Into<String>) -> Self {
        Self::new(reason, io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }

    /// What was being set up and what went wrong, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The underlying error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }

    /// The underlying error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The underlying OS error code, if there is one (`EPERM`, `ENOSYS`, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "io_uring unavailable: {}: {}", self.reason, self.source)
    }
}

impl std::error::Error for SetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<SetupError> for io::Error {
    /// An `io::Error` of the same kind whose message carries the reason.
    fn from(err: SetupError) -> Self {
        io::Error::new(err.kind(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_carries_reason_and_cause() {
        let err = SetupError::new(
            "io_uring_setup denied",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        let text = err.to_string();
        assert!(text.contains("io_uring_setup denied"), "{text}");
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        assert!(io.to_string().contains("denied"));
    }

    #[test]
    fn unsupported_is_eopnotsupp() {
        let err = SetupError::unsupported("no multishot receive");
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP));
        assert_eq!(err.reason(), "no multishot receive");
    }
}
