//! Locks that say "this volume is mounted" and "this header is being rewritten".
//!
//! They are not kept in the cipher directory: anyone who can write there could plant a
//! symlink under the lock's name (and have the daemon create its target) or simply hold the
//! lock forever. They live in the daemon user's private runtime directory
//! ([`crate::util::runtime_dir`], 0700), named after the cipher root's device and inode, so
//! that only that user (or root) can take them, every path to the same directory (bind mounts
//! included) maps to the same lock, and a killed daemon's `flock` goes away with it.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::root::CipherRoot;
use crate::sys::process::try_flock;
use crate::util;

fn lock_path(root: &CipherRoot, kind: &str) -> io::Result<PathBuf> {
    let dir = util::runtime_dir().join("volumes");
    util::ensure_private_dir(&dir)?;
    let (dev, ino) = root.identity()?;
    Ok(dir.join(format!("{dev}-{ino}.{kind}")))
}

fn open_lock(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Held by a mount daemon for its whole life: a second mount of the same volume on this host
/// is refused (two daemons each trusting their own cached file lengths lose acknowledged
/// writes).
pub struct MountLock {
    _file: File,
}

/// Takes the mount lock of the volume at `root` for a daemon serving `mountpoint`. A
/// second mount gets an error naming the first one's mountpoint and pid.
pub fn acquire_mount(root: &CipherRoot, mountpoint: &Path) -> io::Result<MountLock> {
    let path = lock_path(root, "mount")?;
    let mut f = open_lock(&path)?;
    if !try_flock(&f)? {
        let mut who = String::new();
        let _ = f.read_to_string(&mut who);
        let who = who.trim();
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "the volume in {} is already mounted on this host ({}); a second mount would lose acknowledged writes. Unmount it first",
                root.path().display(),
                if who.is_empty() { "by a daemon that is starting".to_string() } else { who.to_string() }
            ),
        ));
    }
    f.set_len(0)?;
    f.rewind()?;
    writeln!(f, "at {} by daemon pid {}", mountpoint.display(), std::process::id())?;
    Ok(MountLock { _file: f })
}

/// Held while the header is rewritten (rotation, keyslot changes, automatic rewrap).
pub struct HeaderLock {
    _file: File,
}

/// Takes an exclusive `flock` on `f`, waiting at most `timeout`; false when it stayed taken.
pub fn flock_within(f: &File, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if try_flock(f)? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Takes the header lock, waiting at most `timeout`.
pub fn lock_header(root: &CipherRoot, timeout: Duration) -> io::Result<HeaderLock> {
    let path = lock_path(root, "header")?;
    let f = open_lock(&path)?;
    if flock_within(&f, timeout)? {
        return Ok(HeaderLock { _file: f });
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "another cmkfs process has been rewriting the header of {} for more than {timeout:?} ({} is locked)",
            root.path().display(),
            path.display()
        ),
    ))
}
