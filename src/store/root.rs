//! The cipher directory's root, treated as untrusted input.
//!
//! Whoever can write the cipher directory (a storage administrator, a backup target, a sync
//! service) can plant anything under the names cmkfs keeps there: a symlink to a file outside
//! the volume, a FIFO that blocks every reader, a file of a gigabyte, a directory. So every
//! file cmkfs itself keeps in the root (the header, session markers, rekey journals) is
//! reached only relative to one directory descriptor, never by a path: opens use `O_NOFOLLOW`
//! and `O_NONBLOCK` and accept regular files only, reads are capped, new files are created
//! with `O_EXCL` and an explicit mode, and replacement is `renameat` of such a new file. The
//! path is kept for messages only.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// The root of a cipher directory, opened once.
pub struct CipherRoot {
    fd: OwnedFd,
    path: PathBuf,
}

impl std::fmt::Debug for CipherRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CipherRoot").field(&self.path).finish()
    }
}

fn name_c(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{name}' is not a plain file name"),
        ));
    }
    sys::cstr(OsStr::new(name))
}

/// What went wrong with a file in the root, for messages that say what to do.
fn describe(e: io::Error, path: &Path) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a symbolic link; cmkfs never follows links in the cipher directory (remove it)",
                path.display()
            ),
        ),
        _ => e,
    }
}

impl CipherRoot {
    /// Opens the cipher directory given on the command line or in the local configuration
    /// (trusted: a symlink in that path is the administrator's choice).
    pub fn open(path: &Path) -> io::Result<CipherRoot> {
        let c = sys::cstr(path.as_os_str())?;
        let fd = sys::openat(sys::cwd(), &c, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(CipherRoot {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path the root was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Device and inode of the root directory: identifies this cipher directory on this host
    /// whatever path (or bind mount) reaches it.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        let st = sys::fstat(self.fd.as_fd())?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Mode bits of the root directory.
    pub fn mode(&self) -> io::Result<u32> {
        Ok(sys::fstat(self.fd.as_fd())?.st_mode & 0o7777)
    }

    /// Opens `name` for reading: a regular file only (a symlink, FIFO, device or directory
    /// is refused without blocking), no larger than `cap` bytes.
    pub fn open_regular(&self, name: &str, write: bool, cap: u64) -> io::Result<File> {
        let path = self.path.join(name);
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let fd = sys::openat(
            self.fd.as_fd(),
            &name_c(name)?,
            flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            0,
        )
        .map_err(|e| describe(e, &path))?;
        let f = File::from(fd);
        let md = f.metadata()?;
        if !md.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a regular file; remove it", path.display()),
            ));
        }
        if md.len() > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {} bytes, more than the {cap} bytes it can be; remove it",
                    path.display(),
                    md.len()
                ),
            ));
        }
        Ok(f)
    }

    /// Reads a whole regular file of at most `cap` bytes (see [`CipherRoot::open_regular`]).
    pub fn read_regular(&self, name: &str, cap: u64) -> io::Result<Vec<u8>> {
        let f = self.open_regular(name, false, cap)?;
        let mut out = Vec::new();
        // The cap holds even if the file grows between fstat and read.
        f.take(cap + 1).read_to_end(&mut out)?;
        if out.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} grew beyond {cap} bytes while being read",
                    self.path.join(name).display()
                ),
            ));
        }
        Ok(out)
    }

    /// Creates `name`, which must not exist (a planted file or link there is an error), with
    /// exactly `mode` whatever the umask.
    pub fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let fd = sys::openat(
            self.fd.as_fd(),
            &name_c(name)?,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY,
            mode as libc::mode_t,
        )
        .map_err(|e| describe(e, &self.path.join(name)))?;
        let f = File::from(fd);
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(f)
    }

    /// Replaces `name` atomically and durably with `data`: a new temporary file (O_EXCL),
    /// fsync, `renameat` over `name` (which replaces whatever is there, a planted link
    /// included, without following it), fsync of the directory.
    pub fn write_atomic(&self, name: &str, data: &[u8], mode: u32) -> io::Result<()> {
        let mut r = [0u8; 6];
        crate::crypto::fill_random(&mut r);
        let tmp = format!("{name}.tmp.{}.{}", std::process::id(), crate::crypto::hex(&r));
        let res = (|| {
            let mut f = self.create_new(&tmp, mode)?;
            f.write_all(data)?;
            crate::util::crash_point("atomic-write:written");
            f.sync_all()?;
            crate::util::crash_point("atomic-write:synced");
            self.rename(&tmp, name)?;
            crate::util::crash_point("atomic-write:renamed");
            self.sync()
        })();
        if res.is_err() {
            let _ = self.remove(&tmp);
        }
        res
    }

    /// `renameat` within the root.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        sys::renameat2(self.fd.as_fd(), &name_c(from)?, self.fd.as_fd(), &name_c(to)?, 0)
    }

    /// Removes a file (never a directory) from the root.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        sys::unlinkat(self.fd.as_fd(), &name_c(name)?, 0)
    }

    /// True when something (of any type) exists at `name`.
    pub fn exists(&self, name: &str) -> io::Result<bool> {
        match sys::openat(self.fd.as_fd(), &name_c(name)?, libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names in the root.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let dup = sys::openat(self.fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(sys::read_dir(dup)?
            .into_iter()
            .map(|e| OsStr::from_bytes(&e.name).to_os_string())
            .filter(|n| n != "." && n != "..")
            .collect())
    }

    /// fsyncs the root directory (renames and creations in it become durable).
    pub fn sync(&self) -> io::Result<()> {
        let dup = sys::openat(self.fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        File::from(dup).sync_all()
    }

    /// Owner uid of the root directory.
    pub fn owner(&self) -> io::Result<u32> {
        let dup = sys::openat(self.fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(File::from(dup).metadata()?.uid())
    }
}

/// The extended attribute of the cipher root that holds how the mount's root directory is
/// shown: `"MODE UID GID"` (octal mode). The cipher root itself stays private (0700, see
/// `cmkfs init`) while the mount's root can be 0755, owned by a service user, and changed with
/// chmod/chown through the mount as usual. Without it, the cipher root's own attributes are
/// shown. Not encrypted (modes are metadata, in clear like every other mode), and hidden from
/// the plaintext view's xattrs.
pub const ROOT_ATTR: &str = "user.cmkfs.root";

/// How the mount's root is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootAttr {
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl RootAttr {
    /// Parses the attribute's value.
    pub fn parse(v: &[u8]) -> Option<RootAttr> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.split_ascii_whitespace();
        let mode = u32::from_str_radix(it.next()?, 8).ok()? & 0o7777;
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        Some(RootAttr { mode, uid, gid })
    }
    /// The attribute's value.
    pub fn encode(&self) -> String {
        format!("{:o} {} {}", self.mode, self.uid, self.gid)
    }
    /// Reads it from the cipher root.
    pub fn read(root: std::os::fd::BorrowedFd<'_>) -> Option<RootAttr> {
        let mut buf = [0u8; 64];
        let n = sys::getxattr(root, &sys::cstr(OsStr::new(ROOT_ATTR)).ok()?, &mut buf).ok()?;
        RootAttr::parse(&buf[..n])
    }
    /// Stores it on the cipher root.
    pub fn write(&self, root: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
        sys::setxattr(root, &sys::cstr(OsStr::new(ROOT_ATTR))?, self.encode().as_bytes(), 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_fifos_and_huge_files() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"secret").unwrap();
        let root_dir = d.path().join("root");
        std::fs::create_dir(&root_dir).unwrap();
        std::os::unix::fs::symlink(&outside, root_dir.join("link")).unwrap();
        let fifo = CString::new(root_dir.join("fifo").as_os_str().as_bytes()).unwrap();
        rustix::fs::mkfifoat(sys::cwd(), &fifo, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
        std::fs::write(root_dir.join("big"), vec![1u8; 100]).unwrap();
        let r = CipherRoot::open(&root_dir).unwrap();
        let e = r.read_regular("link", 1000).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = r.read_regular("fifo", 1000).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = r.read_regular("big", 99).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
        assert_eq!(r.read_regular("big", 100).unwrap().len(), 100);
        // Creation never goes through a planted link; replacement replaces the link itself.
        assert!(r.create_new("link", 0o600).is_err());
        r.write_atomic("link", b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"secret");
        assert_eq!(std::fs::read(root_dir.join("link")).unwrap(), b"new");
        let mode = std::fs::metadata(root_dir.join("link")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(r.read_regular("../outside", 100).is_err());
    }
}
