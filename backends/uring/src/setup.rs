//! Building the ring: setup flags, required features, opcode probe and kernel version.

use crate::buf_ring::BufRing;
use crate::error::SetupError;
use io_uring::{opcode, IoUring, Probe};
use ringmill_core::DriverConfig;
use std::ffi::CStr;
use std::io;

/// How the ring runs completion task work, the part of the setup flags that varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskRun {
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1): completions are
    /// processed only when the loop thread enters the kernel to wait.
    Deferred,
    /// `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG` (5.19).
    Cooperative,
    /// No task-run flags.
    Plain,
}

impl TaskRun {
    /// The flag names, for `describe()`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            TaskRun::Deferred => "SINGLE_ISSUER|DEFER_TASKRUN",
            TaskRun::Cooperative => "COOP_TASKRUN|TASKRUN_FLAG",
            TaskRun::Plain => "plain",
        }
    }
}

/// A ring that passed every check.
pub(crate) struct Setup {
    /// The ring.
    pub ring: IoUring,
    /// Which flags it was built with.
    pub taskrun: TaskRun,
    /// `IORING_FEAT_SUBMIT_STABLE`: the kernel copied everything an SQE points to at submit.
    pub submit_stable: bool,
    /// The kernel version, if `uname` could be read.
    pub kernel: Option<(u32, u32)>,
}

/// The driver's one-line description: ring flags and sizes, buffers, kernel.
pub(crate) fn describe(setup: &Setup, bufs: &BufRing) -> String {
    format!(
        "io_uring ({}, sq {}, cq {}, multishot accept+recv, provided buffer ring {}x{}, \
         submit stable: {}{})",
        setup.taskrun.label(),
        setup.ring.params().sq_entries(),
        setup.ring.params().cq_entries(),
        bufs.count(),
        human_size(bufs.buf_size()),
        if setup.submit_stable { "yes" } else { "no" },
        setup
            .kernel
            .map(|(a, b)| format!(", kernel {a}.{b}"))
            .unwrap_or_default(),
    )
}

/// `65536` -> `"64KiB"`, `1000` -> `"1000B"`.
pub(crate) fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{}MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
        format!("{}KiB", bytes >> 10)
    } else {
        format!("{bytes}B")
    }
}

/// Opcodes the driver uses, each with its name for the error message.
const REQUIRED_OPCODES: [(u8, &str); 7] = [
    (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
    (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
    (opcode::Send::CODE, "IORING_OP_SEND"),
    (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
    (opcode::Connect::CODE, "IORING_OP_CONNECT"),
    (opcode::AsyncCancel2::CODE, "IORING_OP_ASYNC_CANCEL"),
    (opcode::Read::CODE, "IORING_OP_READ"),
];

/// Oldest kernel with every feature the driver needs: multishot accept (5.19), provided
/// buffer rings (5.19), cancel by fd with `IORING_ASYNC_CANCEL_ALL` (5.19) and multishot
/// receive (6.0).
pub(crate) const MIN_KERNEL: (u32, u32) = (6, 0);

/// Every flag combination, from the most to the least capable.
pub(crate) const ALL_TASKRUN: [TaskRun; 3] =
    [TaskRun::Deferred, TaskRun::Cooperative, TaskRun::Plain];

/// Builds the ring for `config` with the first of `modes` the kernel accepts and checks
/// that it has everything the driver needs.
pub(crate) fn build(config: &DriverConfig, modes: &[TaskRun]) -> Result<Setup, SetupError> {
    let kernel = kernel_version();
    if let Some(version) = kernel {
        if version < MIN_KERNEL {
            return Err(SetupError::unsupported(format!(
                "kernel {}.{} lacks multishot receive (needs {}.{} or later)",
                version.0, version.1, MIN_KERNEL.0, MIN_KERNEL.1
            )));
        }
    }
    let (ring, taskrun) = build_ring(config, modes)?;
    let params = ring.params();
    if !params.is_feature_nodrop() {
        return Err(SetupError::unsupported(
            "kernel lacks IORING_FEAT_NODROP (completions could be lost on overflow)",
        ));
    }
    if !params.is_feature_ext_arg() {
        return Err(SetupError::unsupported(
            "kernel lacks IORING_FEAT_EXT_ARG (no timed wait in io_uring_enter)",
        ));
    }
    let submit_stable = params.is_feature_submit_stable();
    probe(&ring)?;
    Ok(Setup {
        ring,
        taskrun,
        submit_stable,
        kernel,
    })
}

/// Tries the setup flag combinations from the most to the least capable. Only `EINVAL`
/// (flags this kernel does not know) moves on to the next; any other error ends the search.
fn build_ring(config: &DriverConfig, modes: &[TaskRun]) -> Result<(IoUring, TaskRun), SetupError> {
    let mut last = None;
    for &taskrun in modes {
        let mut builder = IoUring::builder();
        builder
            .setup_cqsize(config.cq_entries)
            .setup_clamp()
            .setup_submit_all();
        match taskrun {
            TaskRun::Deferred => {
                builder.setup_single_issuer().setup_defer_taskrun();
            }
            TaskRun::Cooperative => {
                builder.setup_coop_taskrun().setup_taskrun_flag();
            }
            TaskRun::Plain => {}
        }
        match builder.build(config.ring_entries) {
            Ok(ring) => return Ok((ring, taskrun)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                log::debug!("io_uring_setup with {} failed: {e}", taskrun.label());
                last = Some(e);
            }
            Err(e) => return Err(SetupError::new(setup_reason(&e), e)),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL));
    Err(SetupError::new(
        format!(
            "io_uring_setup rejected every flag combination (sq {}, cq {})",
            config.ring_entries, config.cq_entries
        ),
        e,
    ))
}

/// A reason for a failed `io_uring_setup`, by errno.
fn setup_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            "io_uring_setup denied (seccomp filter or kernel.io_uring_disabled)".into()
        }
        Some(libc::ENOSYS) => "the kernel has no io_uring (io_uring_setup: ENOSYS)".into(),
        Some(libc::ENOMEM) => {
            "io_uring_setup could not allocate the ring (ENOMEM; RLIMIT_MEMLOCK?)".into()
        }
        _ => "io_uring_setup failed".into(),
    }
}

/// Checks every opcode the driver uses with `IORING_REGISTER_PROBE`.
fn probe(ring: &IoUring) -> Result<(), SetupError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| SetupError::new("IORING_REGISTER_PROBE failed", e))?;
    let missing: Vec<&str> = REQUIRED_OPCODES
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SetupError::unsupported(format!(
            "kernel lacks opcode(s) {}",
            missing.join(", ")
        )))
    }
}

/// The running kernel's `(major, minor)` from `uname(2)`.
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: `utsname` is plain old data; all-zero bytes are a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable `utsname` for the duration of the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: the kernel NUL-terminates `release` within the array.
    let release = unsafe { CStr::from_ptr(uts.release.as_ptr()) };
    parse_release(release.to_str().ok()?)
}

/// `"6.18.44-foo"` -> `(6, 18)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.19.0"), Some((5, 19)));
        assert_eq!(parse_release("6.1-rc3"), Some((6, 1)));
        assert_eq!(parse_release("garbage"), None);
        assert!(kernel_version().is_some());
    }

    #[test]
    fn version_order_gates_multishot() {
        assert!((5, 19) < MIN_KERNEL);
        assert!((6, 0) >= MIN_KERNEL);
        assert!((6, 18) >= MIN_KERNEL);
    }
}
