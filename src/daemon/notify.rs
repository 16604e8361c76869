//! The systemd notification protocol (`sd_notify(3)`), for `Type=notify` units.
//!
//! When systemd starts the daemon it passes `NOTIFY_SOCKET` (a datagram socket: a path, or
//! `@name` in the abstract namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC` (and
//! `WATCHDOG_PID`). The daemon sends newline-separated `KEY=VALUE` datagrams:
//!
//! - `READY=1` once the mount is live (so `After=cmkfs@pgdata.service` really means mounted),
//!   with `STATUS=` the volume's state;
//! - `STATUS=Available` / `STATUS=Inaccessible: REASON` whenever the state changes, which
//!   `systemctl status` shows;
//! - `WATCHDOG=1` at half the watchdog interval, **only while the key check loop is alive**
//!   (a check completed within interval + provider timeout + 1 s): a daemon whose checks
//!   stalled stops pinging and systemd restarts it, rather than keeping a mount whose key is
//!   no longer being checked;
//! - `STOPPING=1` when it unmounts.
//!
//! The environment is trusted (it is the daemon's own); a socket that cannot be reached only
//! loses notifications, never stops the mount.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct SdNotify {
    sock: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

impl SdNotify {
    /// From `NOTIFY_SOCKET` / `WATCHDOG_USEC` / `WATCHDOG_PID` of this process; `None` when
    /// not started by a service manager that listens.
    pub fn from_env() -> Option<SdNotify> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0)
            .filter(|_| {
                // The interval is meant for this process only when WATCHDOG_PID is unset or ours.
                std::env::var("WATCHDOG_PID")
                    .ok()
                    .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()))
            })
            .map(Duration::from_micros);
        Self::connect(&path, watchdog)
    }

    /// A notifier for socket `path` (`@name` for the abstract namespace).
    pub fn connect(path: &std::ffi::OsStr, watchdog: Option<Duration>) -> Option<SdNotify> {
        use std::os::unix::ffi::OsStrExt;
        let b = path.as_bytes();
        let addr = match b.first() {
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(&b[1..]).ok()?
            }
            Some(b'/') => SocketAddr::from_pathname(path).ok()?,
            _ => {
                tracing::warn!(socket = ?path, "NOTIFY_SOCKET is neither an absolute path nor @abstract; not notifying");
                return None;
            }
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(SdNotify { sock, addr, watchdog })
    }

    /// The watchdog interval systemd expects pings within, if it asked for them.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`KEY=VALUE` lines). Failures are logged at debug level only:
    /// notifications are advisory.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

/// `STATUS=` text for a state and its reason: one line, as systemd shows it.
pub fn status_line(state: &str, reason: Option<&str>) -> String {
    let s = match reason {
        Some(r) if !r.is_empty() => format!("{state}: {r}"),
        _ => state.to_string(),
    };
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket_and_an_abstract_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        let n = SdNotify::connect(p.as_os_str(), None).unwrap();
        n.send("READY=1\nSTATUS=Available");
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=Available");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("cmkfs-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = SdNotify::connect(std::ffi::OsStr::new(&format!("@{name}")), None).unwrap();
        n.send("WATCHDOG=1");
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");

        assert!(SdNotify::connect(std::ffi::OsStr::new("relative"), None).is_none());
        assert_eq!(
            status_line("Inaccessible", Some("key\ndisabled")),
            "Inaccessible: key disabled"
        );
        assert_eq!(status_line("Available", None), "Available");
    }
}
