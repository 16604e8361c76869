//! The mount daemon: what runs while a volume is mounted, above the filesystem.
//!
//! - [`mount`]: unlocking, mounting, daemonizing, the signal thread, unmounting.
//! - [`revalidation`]: the key check loop ([`revalidation::policy`] is its pure state
//!   machine; [`revalidation::Checker`] runs it): revoke, restore, lock/unlock, automatic
//!   rewrap.
//! - [`metrics`]: `cmkfs metrics`, the state and counters as Prometheus text.
//! - [`notify`]: the systemd notification protocol (READY, STATUS, WATCHDOG).
//! - [`control`]: the control socket `cmkfs status`, `lock`, `unlock`, `rekey` talk to.

pub mod control;
pub mod metrics;
pub mod mount;
pub mod notify;
pub mod revalidation;
