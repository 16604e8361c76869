//! Format 3's names on disk: directory IV files, long names' side files, and the plaintext
//! names of backing entries (the cryptography is `crate::format::names`). Every file is
//! opened relative to its directory's descriptor, with `O_NOFOLLOW` and `O_NONBLOCK`, and
//! believed only if it is a small regular file.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use crate::format::names::{self as fmt, Kind, NameKeys, DIRIV_LEN, DIRIV_NAME};
use crate::sys;

/// Largest side file or IV file read (a long name's encoding is under 400 bytes).
const SMALL_FILE_MAX: u64 = 4096;

/// Writes a small internal file (`O_EXCL` is not used: a side file left by a crash with the
/// same name has the same content, as names encrypt deterministically).
pub fn write_small(dir: BorrowedFd<'_>, name: &CStr, content: &[u8]) -> io::Result<()> {
    let fd = sys::openat(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0o400,
    )?;
    let f = std::fs::File::from(fd);
    f.write_all_at(content, 0)
}

/// Reads a small internal file: a regular file of at most [`SMALL_FILE_MAX`] bytes, opened
/// without following a symlink or blocking on a FIFO; anything else is `None`.
pub fn read_small(dir: BorrowedFd<'_>, name: &[u8]) -> Option<Vec<u8>> {
    let c = CString::new(name).ok()?;
    let fd = sys::openat(dir, &c, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0).ok()?;
    let st = sys::fstat(fd.as_fd()).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size as u64 > SMALL_FILE_MAX {
        return None;
    }
    let mut buf = vec![0u8; st.st_size as usize];
    let n = sys::read_full_at(&std::fs::File::from(fd), &mut buf, 0).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Creates a directory IV file with fresh random bytes in the directory `dir`.
pub fn create_diriv(dir: BorrowedFd<'_>) -> io::Result<[u8; DIRIV_LEN]> {
    let mut iv = [0u8; DIRIV_LEN];
    crate::crypto::fill_random(&mut iv);
    let c = CString::new(DIRIV_NAME).unwrap();
    let fd = sys::openat(
        dir,
        &c,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o400,
    )?;
    let f = std::fs::File::from(fd);
    f.write_all_at(&iv, 0)?;
    f.sync_all()?;
    Ok(iv)
}

/// Reads the directory IV of the directory `dir` (`None`: missing or not a 16-byte regular file).
pub fn read_diriv(dir: BorrowedFd<'_>) -> Option<[u8; DIRIV_LEN]> {
    read_small(dir, DIRIV_NAME.as_bytes()).and_then(|b| b.try_into().ok())
}

/// The plaintext name of backing entry `backing` in a directory with IV `iv` (`dir` is the
/// directory, for long names' side files); `None` for cmkfs's own names and for names that
/// do not decrypt (planted or damaged: hidden, not shown as something else).
pub fn plain_name(nk: &NameKeys, iv: &[u8; DIRIV_LEN], dir: BorrowedFd<'_>, backing: &[u8]) -> Option<Vec<u8>> {
    match fmt::kind(backing) {
        Kind::Short(enc) => nk.decrypt(iv, enc).ok(),
        Kind::Long => {
            let rec = read_small(dir, &fmt::record_name(backing))?;
            if !fmt::record_matches(backing, &rec) {
                return None;
            }
            nk.decrypt(iv, &rec).ok()
        }
        Kind::Other => None,
    }
}

fn open_dir(parent: BorrowedFd<'_>, name: &CStr) -> io::Result<std::os::fd::OwnedFd> {
    sys::openat(parent, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
}

/// The backing path, relative to the cipher root `root`, of plaintext path `rel` (relative
/// to the volume's root) in a format-3 volume: each component encrypted under its parent's
/// IV. Fails if a directory on the way has no IV or the path does not exist as a directory
/// (the last component need not exist).
pub fn encrypt_path(root: BorrowedFd<'_>, nk: &NameKeys, rel: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut dir = sys::openat(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let comps: Vec<_> = rel.components().filter(|c| *c != Component::CurDir).collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain path inside the volume",
            ));
        };
        let iv = read_diriv(dir.as_fd()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: directory IV missing or damaged", out.display()),
            )
        })?;
        let b = nk
            .encrypt(&iv, name.as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e:?}")))?;
        let bn = CString::new(b.name()).unwrap();
        out.push(OsStr::from_bytes(b.name()));
        if i + 1 < comps.len() {
            dir = open_dir(dir.as_fd(), &bn)?;
        }
    }
    Ok(out)
}

/// The plaintext path of backing path `rel` (relative to the cipher root) in a format-3 volume.
pub fn decrypt_path(root: BorrowedFd<'_>, nk: &NameKeys, rel: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut dir = sys::openat(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let comps: Vec<_> = rel.components().filter(|c| *c != Component::CurDir).collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a plain path inside the cipher directory",
            ));
        };
        let bytes = name.as_bytes();
        let iv = read_diriv(dir.as_fd()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: directory IV missing or damaged", out.display()),
            )
        })?;
        let p = plain_name(nk, &iv, dir.as_fd(), bytes).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name:?} is not an encrypted name of this directory"),
            )
        })?;
        out.push(OsStr::from_bytes(&p));
        if i + 1 < comps.len() {
            dir = open_dir(dir.as_fd(), &CString::new(bytes).unwrap())?;
        }
    }
    Ok(out)
}
