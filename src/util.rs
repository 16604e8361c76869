//! Small filesystem helpers shared by the key store and the volume header.

use std::fs::{self, File};
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// Writes `path` atomically and durably, with exactly `mode` whatever the umask: a new
/// temporary file beside it (`O_EXCL|O_NOFOLLOW`), fsync, rename over `path`, fsync of the
/// directory. At every instant either the old or the new content is at `path`. The one
/// implementation is [`crate::store::root::CipherRoot::write_atomic`], relative to the directory's
/// descriptor.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    crate::store::root::CipherRoot::open(dir)?.write_atomic(name, data, mode)
}

/// Test hook, debug builds only: dies on the spot (SIGKILL, like a crash) when
/// `CMKFS_TEST_CRASH_AT` names this point, so tests can prove that every intermediate state
/// on disk is recoverable.
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if crate::config::env().test.crash_at.as_deref() == Some(name) {
        crate::sys::process::kill_self();
    }
    let _ = name;
}

/// fsyncs a directory so that renames and creations in it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a directory (and parents) and sets its mode.
pub fn create_private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// Now, as RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Now, as RFC 3339 with milliseconds.
pub fn now_rfc3339_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// True when the effective uid is root.
pub fn is_root() -> bool {
    euid() == 0
}

/// The effective uid.
pub fn euid() -> u32 {
    crate::sys::process::euid()
}

/// Where a daemon keeps its sockets and locks: `/run/cmkfs` for root; for other users
/// `$XDG_RUNTIME_DIR/cmkfs`, else `/run/user/UID/cmkfs`, else `~/.cache/cmkfs/run`. Never a
/// predictable name in a shared directory such as /tmp, which another user could create first.
pub fn runtime_dir() -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;
    if is_root() {
        return PathBuf::from("/run/cmkfs");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("cmkfs");
    }
    let run_user = PathBuf::from(format!("/run/user/{}", euid()));
    if std::fs::metadata(&run_user).is_ok_and(|m| m.is_dir() && m.uid() == euid()) {
        return run_user.join("cmkfs");
    }
    home_dir()
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
        .join(".cache/cmkfs/run")
}

/// Creates `dir` (and parents) as a private directory (0700), or checks that an existing one
/// is owned by the effective user and open to no one else: a directory someone else made or
/// can write is refused, not used.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    match fs::symlink_metadata(dir) {
        Ok(md) => {
            if !md.is_dir() {
                return Err(io::Error::other(format!("{} is not a directory", dir.display())));
            }
            if md.uid() != euid() {
                return Err(io::Error::other(format!(
                    "{} is owned by uid {}, not by you (uid {}): refusing to use it; remove it",
                    dir.display(),
                    md.uid(),
                    euid()
                )));
            }
            if md.mode() & 0o077 != 0 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

/// The invoking user's home directory.
pub fn home_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(Into::into)
}

/// Moved to [`crate::sys::read_full_at`]; this path stays for callers not yet updated.
pub use crate::sys::read_full_at;
