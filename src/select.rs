//! Backend selection: the one place that decides between io_uring and mio.
//!
//! `Backend::Auto` (the default, or `RINGMILL_BACKEND=auto`) builds the real io_uring
//! ring on every loop thread and falls back to mio for the whole event loop if any of them
//! fails, recording why. `Backend::Uring` (or `RINGMILL_BACKEND=uring`) turns that failure
//! into an error. `Backend::Mio` (or `RINGMILL_BACKEND=mio`) never tries io_uring.

use ringmill_core::driver::Driver;
use ringmill_core::engine::{self, LoopSettings, LoopThread};
use ringmill_core::error::{Backend, ConfigError, NetworkError};
use ringmill_core::DriverConfig;

/// The environment variable that overrides `Backend::Auto`.
pub(crate) const BACKEND_ENV: &str = "RINGMILL_BACKEND";

/// Loops running on the chosen backend, and why it was chosen.
pub(crate) struct Selected {
    pub(crate) backend: Backend,
    pub(crate) reason: String,
    pub(crate) description: String,
    pub(crate) loops: Vec<LoopThread>,
}

/// What the builder asked for, with the environment applied to `Auto`.
fn requested(builder: Backend) -> Result<(Backend, &'static str), NetworkError> {
    if builder != Backend::Auto {
        return Ok((builder, "set by EventLoopBuilder::backend"));
    }
    match std::env::var(BACKEND_ENV) {
        Err(std::env::VarError::NotPresent) => Ok((Backend::Auto, "")),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok((Backend::Auto, "")),
            "uring" | "io_uring" | "io-uring" => Ok((Backend::Uring, "forced by RINGMILL_BACKEND")),
            "mio" | "epoll" => Ok((Backend::Mio, "forced by RINGMILL_BACKEND")),
            other => Err(NetworkError::Configuration(ConfigError::OutOfRange {
                option: BACKEND_ENV,
                reason: format!("{other:?} is not one of auto, uring, mio"),
            })),
        },
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(NetworkError::Configuration(ConfigError::OutOfRange {
                option: BACKEND_ENV,
                reason: "not valid unicode".into(),
            }))
        }
    }
}

pub(crate) fn start(
    builder: Backend,
    threads: usize,
    driver: &DriverConfig,
    settings: &LoopSettings,
) -> Result<Selected, NetworkError> {
    let (backend, why) = requested(builder)?;
    let selected = match backend {
        Backend::Mio => Selected {
            backend: Backend::Mio,
            reason: why.to_string(),
            description: String::new(),
            loops: start_mio(threads, driver, settings)?,
        },
        Backend::Uring => match start_uring(threads, driver, settings) {
            Ok(loops) => Selected {
                backend: Backend::Uring,
                reason: why.to_string(),
                description: String::new(),
                loops,
            },
            Err(reason) => {
                return Err(NetworkError::BackendUnavailable {
                    backend: Backend::Uring,
                    reason,
                })
            }
        },
        Backend::Auto => match start_uring(threads, driver, settings) {
            Ok(loops) => Selected {
                backend: Backend::Uring,
                reason: "io_uring available".to_string(),
                description: String::new(),
                loops,
            },
            Err(reason) => Selected {
                backend: Backend::Mio,
                reason,
                description: String::new(),
                loops: start_mio(threads, driver, settings)?,
            },
        },
    };
    let description = selected
        .loops
        .first()
        .map(|l| l.description().to_string())
        .unwrap_or_default();
    log::info!(
        "ringmill: {} loop thread(s) on {} ({}): {}",
        threads,
        selected.backend,
        selected.reason,
        description
    );
    Ok(Selected {
        description,
        ..selected
    })
}

fn start_mio(
    threads: usize,
    driver: &DriverConfig,
    settings: &LoopSettings,
) -> Result<Vec<LoopThread>, NetworkError> {
    spawn_all(threads, driver, settings, ringmill_mio::MioDriver::new).map_err(|reason| {
        NetworkError::BackendUnavailable {
            backend: Backend::Mio,
            reason,
        }
    })
}

#[cfg(all(target_os = "linux", feature = "uring"))]
fn start_uring(
    threads: usize,
    driver: &DriverConfig,
    settings: &LoopSettings,
) -> Result<Vec<LoopThread>, String> {
    spawn_all(threads, driver, settings, ringmill_uring::UringDriver::new)
}

/// Starts `threads` loops, each building its driver with `make` on its own thread; if one
/// cannot, stops those already started and returns its error.
fn spawn_all<D, E>(
    threads: usize,
    driver: &DriverConfig,
    settings: &LoopSettings,
    make: fn(&DriverConfig) -> Result<D, E>,
) -> Result<Vec<LoopThread>, String>
where
    D: Driver,
    E: std::fmt::Display + Send + 'static,
{
    let mut loops = Vec::with_capacity(threads);
    for index in 0..threads {
        let config = driver.clone();
        match engine::spawn(index, settings.clone(), move || make(&config)) {
            Ok(handle) => loops.push(handle),
            Err(e) => {
                engine::shutdown(loops);
                return Err(e.to_string());
            }
        }
    }
    Ok(loops)
}

#[cfg(not(all(target_os = "linux", feature = "uring")))]
fn start_uring(
    _threads: usize,
    _driver: &DriverConfig,
    _settings: &LoopSettings,
) -> Result<Vec<LoopThread>, String> {
    Err(if cfg!(target_os = "linux") {
        "io_uring unavailable: driver not built (cargo feature `uring` is off)".to_string()
    } else {
        "io_uring unavailable: io_uring exists only on Linux".to_string()
    })
}
