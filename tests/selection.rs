//! Backend selection and configuration validation (contract line 12): the builder and
//! `RINGMILL_BACKEND` pick the backend, the choice and its reason are readable, and
//! nonsensical settings are refused with a clear `Configuration` error before anything
//! starts.
//!
//! These tests are not per backend: they test the choosing itself. Tests that set
//! `RINGMILL_BACKEND` run in a child process, since the environment is process-wide.

mod common_child;

use common_child::ChildTest;
use ringmill::errors::{ConfigError, NetworkError};
use ringmill::tcp::{TcpClientConfig, TcpServer, TcpServerConfig};
use ringmill::{Backend, DriverConfig, EventLoop};
use std::time::Duration;

const CHILD_DEADLINE: Duration = Duration::from_secs(60);

struct Sink;

impl ringmill::tcp::NetworkHandler for Sink {
    fn on_data(
        &self,
        _: &ringmill::tcp::ServerContext,
        _: ringmill::tcp::ConnectionId,
        _: &[u8],
    ) -> ringmill::errors::Result<()> {
        Ok(())
    }
}

/// The `NetworkError` inside a boxed error, or a panic naming what was found instead.
fn network_error<'a>(e: &'a (dyn std::error::Error + Send + Sync + 'static)) -> &'a NetworkError {
    e.downcast_ref::<NetworkError>()
        .unwrap_or_else(|| panic!("expected a NetworkError, got {e:?}"))
}

fn config_error<'a>(e: &'a (dyn std::error::Error + Send + Sync + 'static)) -> &'a ConfigError {
    match network_error(e) {
        NetworkError::Configuration(c) => c,
        other => panic!("expected NetworkError::Configuration, got {other:?}"),
    }
}

/// A small one-thread loop on `backend`.
fn small_loop(backend: Backend) -> ringmill::errors::Result<EventLoop> {
    EventLoop::builder()
        .threads(1)
        .backend(backend)
        .buffer_count(16)
        .buffer_size(4096)
        .build()
}

#[test]
fn builder_mio_reports_mio() {
    let event_loop = small_loop(Backend::Mio).expect("a mio loop builds everywhere");
    assert_eq!(event_loop.backend(), Backend::Mio);
    assert!(
        !event_loop.backend_reason().is_empty(),
        "a forced backend must say why it was chosen"
    );
    assert_eq!(event_loop.threads(), 1);
    event_loop.stop();
}

#[test]
#[cfg_attr(
    not(all(target_os = "linux", feature = "uring")),
    ignore = "uring: the io_uring backend is not built (feature `uring` off or not Linux)"
)]
fn builder_uring_reports_uring() {
    let event_loop = match small_loop(Backend::Uring) {
        Ok(l) => l,
        Err(e) => panic!(
            "Backend::Uring must build on this machine (kernel {}): {e}",
            std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
        ),
    };
    assert_eq!(event_loop.backend(), Backend::Uring);
    assert!(
        !event_loop.backend_reason().is_empty(),
        "a forced backend must say why it was chosen"
    );
    assert!(
        !event_loop.backend_description().is_empty(),
        "the io_uring loop must describe its ring setup"
    );
    event_loop.stop();
}

#[test]
fn backend_is_never_auto() {
    let event_loop = match small_loop(Backend::Auto) {
        Ok(l) => l,
        Err(e) => panic!("Backend::Auto must always build (mio is the fallback): {e}"),
    };
    assert_ne!(event_loop.backend(), Backend::Auto);
    assert!(!event_loop.backend_reason().is_empty());
    event_loop.stop();
}

/// `RINGMILL_BACKEND=mio` turns `Auto` into mio; it does not override an explicit
/// builder choice.
#[test]
fn env_mio_overrides_auto() {
    if common_child::role().as_deref() == Some("env-mio") {
        let auto = small_loop(Backend::Auto).expect("Auto with RINGMILL_BACKEND=mio");
        assert_eq!(
            auto.backend(),
            Backend::Mio,
            "RINGMILL_BACKEND=mio must pick mio"
        );
        assert!(
            auto.backend_reason().contains("RINGMILL_BACKEND"),
            "the reason must name the variable, got {:?}",
            auto.backend_reason()
        );
        common_child::report("auto", auto.backend());
        auto.stop();
        if cfg!(all(target_os = "linux", feature = "uring")) {
            let explicit = small_loop(Backend::Uring).expect("Backend::Uring on this machine");
            assert_eq!(
                explicit.backend(),
                Backend::Uring,
                "the variable overrides Auto only"
            );
            common_child::report("explicit", explicit.backend());
        } else {
            common_child::report("explicit", "skipped");
        }
        return;
    }
    let mut child = ChildTest::spawn(
        "env_mio_overrides_auto",
        "env-mio",
        &[("RINGMILL_BACKEND", "mio")],
    );
    assert_eq!(child.expect("auto", CHILD_DEADLINE), "mio");
    let explicit = child.expect("explicit", CHILD_DEADLINE);
    assert!(
        explicit == "io_uring" || explicit == "skipped",
        "{explicit}"
    );
    child.wait_success(CHILD_DEADLINE);
}

/// `RINGMILL_BACKEND=uring` with `Auto` must give io_uring here (this machine has it).
#[test]
#[cfg_attr(
    not(all(target_os = "linux", feature = "uring")),
    ignore = "uring: the io_uring backend is not built (feature `uring` off or not Linux)"
)]
fn env_uring_overrides_auto() {
    if common_child::role().as_deref() == Some("env-uring") {
        let auto = small_loop(Backend::Auto).expect("Auto with RINGMILL_BACKEND=uring");
        assert_eq!(auto.backend(), Backend::Uring);
        assert!(auto.backend_reason().contains("RINGMILL_BACKEND"));
        common_child::report("auto", auto.backend());
        return;
    }
    let mut child = ChildTest::spawn(
        "env_uring_overrides_auto",
        "env-uring",
        &[("RINGMILL_BACKEND", "uring")],
    );
    assert_eq!(child.expect("auto", CHILD_DEADLINE), "io_uring");
    child.wait_success(CHILD_DEADLINE);
}

/// An unknown `RINGMILL_BACKEND` is a clear configuration error, not a silent default.
#[test]
fn env_bogus_is_a_configuration_error() {
    if common_child::role().as_deref() == Some("env-bogus") {
        let err = small_loop(Backend::Auto).expect_err("RINGMILL_BACKEND=bogus must not build");
        match config_error(err.as_ref()) {
            ConfigError::OutOfRange { option, reason } => {
                assert_eq!(*option, "RINGMILL_BACKEND");
                assert!(
                    reason.contains("bogus"),
                    "the error must quote the value: {reason}"
                );
            }
            other => panic!("expected OutOfRange for RINGMILL_BACKEND, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("RINGMILL_BACKEND") && text.contains("bogus"),
            "the message must name the variable and the value: {text}"
        );
        // An explicit builder choice does not read the variable.
        let mio = small_loop(Backend::Mio).expect("Backend::Mio ignores RINGMILL_BACKEND");
        assert_eq!(mio.backend(), Backend::Mio);
        common_child::report("error", text);
        return;
    }
    let mut child = ChildTest::spawn(
        "env_bogus_is_a_configuration_error",
        "env-bogus",
        &[("RINGMILL_BACKEND", "bogus")],
    );
    let message = child.expect("error", CHILD_DEADLINE);
    assert!(message.contains("bogus"), "{message}");
    child.wait_success(CHILD_DEADLINE);
}

#[test]
fn zero_threads_rejected() {
    let err = EventLoop::builder()
        .threads(0)
        .backend(Backend::Mio)
        .build()
        .expect_err("threads(0) must be refused");
    assert_eq!(config_error(err.as_ref()), &ConfigError::Zero("threads"));
}

#[test]
fn invalid_driver_config_rejected() {
    let err = EventLoop::builder()
        .threads(1)
        .backend(Backend::Mio)
        .buffer_count(3)
        .build()
        .expect_err("buffer_count 3 (not a power of two) must be refused");
    match config_error(err.as_ref()) {
        ConfigError::OutOfRange { option, .. } => assert_eq!(*option, "buffer_count"),
        other => panic!("expected OutOfRange(buffer_count), got {other:?}"),
    }

    let err = EventLoop::builder()
        .threads(1)
        .backend(Backend::Mio)
        .driver_config(DriverConfig {
            buffer_size: 0,
            ..DriverConfig::default()
        })
        .build()
        .expect_err("buffer_size 0 must be refused");
    assert_eq!(
        config_error(err.as_ref()),
        &ConfigError::Zero("buffer_size")
    );

    // The same settings are refused for a forced io_uring too: validation comes first.
    let err = EventLoop::builder()
        .threads(1)
        .backend(Backend::Uring)
        .buffer_count(3)
        .build()
        .expect_err("buffer_count 3 must be refused on any backend");
    assert!(matches!(
        config_error(err.as_ref()),
        ConfigError::OutOfRange {
            option: "buffer_count",
            ..
        }
    ));
}

#[test]
fn inverted_watermarks_rejected() {
    let config = TcpServerConfig::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .high_watermark(1000)
        .low_watermark(2000)
        .build();
    let err = TcpServer::new(config.clone(), Sink).expect_err("low > high must be refused");
    assert_eq!(
        config_error(err.as_ref()),
        &ConfigError::WatermarksInverted {
            low: 2000,
            high: 1000
        }
    );
    assert_eq!(
        TcpServerConfig::builder()
            .high_watermark(1000)
            .low_watermark(2000)
            .try_build()
            .expect_err("try_build validates"),
        ConfigError::WatermarksInverted {
            low: 2000,
            high: 1000
        }
    );
    // Equal watermarks are fine.
    let ok = TcpServerConfig::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .high_watermark(1000)
        .low_watermark(1000)
        .build();
    TcpServer::new(ok, Sink).expect("low == high is valid");
}

#[test]
fn max_frame_above_high_watermark_rejected() {
    let config = TcpServerConfig::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .high_watermark(4096)
        .low_watermark(1024)
        .max_frame(4097)
        .build();
    let err = TcpServer::new(config, Sink).expect_err("max_frame > high must be refused");
    assert_eq!(
        config_error(err.as_ref()),
        &ConfigError::MaxFrameAboveHighWatermark {
            max_frame: 4097,
            high: 4096
        }
    );
    let ok = TcpServerConfig::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .high_watermark(4096)
        .low_watermark(1024)
        .max_frame(4096)
        .build();
    TcpServer::new(ok, Sink).expect("max_frame == high is valid");

    // The client checks the same rules.
    let client = TcpClientConfig {
        high_watermark: 4096,
        low_watermark: 8192,
        ..TcpClientConfig::default()
    };
    let err = ringmill::tcp::TcpClient::connect("127.0.0.1:9".parse().unwrap(), client, Sink)
        .expect_err("client low > high must be refused");
    assert!(matches!(
        config_error(err.as_ref()),
        ConfigError::WatermarksInverted { .. }
    ));
}
