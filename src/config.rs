//! Every `CMKFS_*` environment knob, read once per process into one typed struct.
//!
//! Behaviour is configured by the command line and the local volume configuration
//! (`crate::volume::trust`); the environment only holds where things are (for tests and
//! per-user setups), measurement switches that A/B one optimisation, and test hooks. Reading
//! them here, once, means a knob is documented in one place and cannot change under a running
//! daemon. This [`Env`] is the process's one piece of global configuration state (immutable
//! after first use); PKCS#11's module registry (`crate::kms::pkcs11`) is the one mutable one.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Variable naming the audit log file (also a `--audit-log` default).
pub const AUDIT_LOG: &str = "CMKFS_AUDIT_LOG";
/// Variable naming the local configuration directory (instead of /etc/cmkfs or
/// ~/.config/cmkfs).
pub const CONFIG_DIR: &str = "CMKFS_CONFIG_DIR";
/// Variable naming the local key store directory (also a `--store` default).
pub const KEYSTORE: &str = "CMKFS_KEYSTORE";
/// Variable naming the PKCS#11 module when a `pkcs11:` URI has no `module-path`.
pub const PKCS11_MODULE: &str = "CMKFS_PKCS11_MODULE";
/// Variable holding the log filter (`tracing` syntax, e.g. `debug`).
pub const LOG: &str = "CMKFS_LOG";

/// The environment knobs of this process.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CMKFS_AUDIT_LOG`: the audit log file.
    pub audit_log: Option<PathBuf>,
    /// `CMKFS_CONFIG_DIR`: the local configuration directory (empty means unset).
    pub config_dir: Option<PathBuf>,
    /// `CMKFS_KEYSTORE`: the local key store directory.
    pub keystore: Option<PathBuf>,
    /// `CMKFS_PKCS11_MODULE`: the default PKCS#11 module.
    pub pkcs11_module: Option<String>,
    /// `CMKFS_UNLOCK_TIMEOUT` (e.g. `2m`): how long unlocking waits for a provider's unwrap;
    /// 60 s when unset or unparsable.
    pub unlock_timeout: Duration,
    /// `CMKFS_WRITEBACK_CACHE=1`: the kernel's writeback cache (off by default: see
    /// docs/PERFORMANCE.md for why revocation needs it off).
    pub writeback_cache: bool,
    /// `CMKFS_BACKING_READAHEAD=1`: keep readahead on the descriptor the daemon writes
    /// through (an A/B switch; off is faster, docs/PERFORMANCE.md).
    pub backing_readahead: bool,
    /// `CMKFS_NO_EARLY_WRITEBACK=1`: do not start backing writeback on a write that follows
    /// an fsync (an A/B switch).
    pub no_early_writeback: bool,
    /// `CMKFS_NO_KILLPRIV`: do not ask the kernel to clear set-ID bits on write (an A/B
    /// switch for the set-ID semantics tests).
    pub no_killpriv: bool,
    /// Test hooks: only tests set these.
    pub test: TestHooks,
}

/// Knobs that make the daemon misbehave on purpose, for tests of what must survive it.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// `CMKFS_TEST_CRASH_AT=NAME`: the process kills itself at crash point NAME.
    pub crash_at: Option<String>,
    /// `CMKFS_TEST_PANIC_ON_LOOKUP=NAME`: a lookup of NAME panics (the mount must stay up).
    pub panic_on_lookup: Option<OsString>,
    /// `CMKFS_TEST_STALL_CHECK_WHILE=FILE`: debug builds only: a key check hangs while FILE
    /// exists (the watchdog must revoke anyway).
    pub stall_check_while: Option<PathBuf>,
}

fn flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

fn path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

impl Env {
    /// Reads the knobs from this process's environment.
    pub fn from_process() -> Env {
        Env {
            audit_log: path(AUDIT_LOG),
            config_dir: path(CONFIG_DIR),
            keystore: path(KEYSTORE),
            pkcs11_module: std::env::var(PKCS11_MODULE).ok(),
            unlock_timeout: std::env::var("CMKFS_UNLOCK_TIMEOUT")
                .ok()
                .and_then(|v| humantime::parse_duration(&v).ok())
                .unwrap_or(Duration::from_secs(60)),
            writeback_cache: flag("CMKFS_WRITEBACK_CACHE"),
            backing_readahead: flag("CMKFS_BACKING_READAHEAD"),
            no_early_writeback: flag("CMKFS_NO_EARLY_WRITEBACK"),
            no_killpriv: std::env::var_os("CMKFS_NO_KILLPRIV").is_some(),
            test: TestHooks {
                crash_at: std::env::var("CMKFS_TEST_CRASH_AT").ok(),
                panic_on_lookup: std::env::var_os("CMKFS_TEST_PANIC_ON_LOOKUP"),
                stall_check_while: std::env::var_os("CMKFS_TEST_STALL_CHECK_WHILE").map(PathBuf::from),
            },
        }
    }
}

/// This process's knobs, read on first use.
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(Env::from_process)
}
