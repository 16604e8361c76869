//! Names as the FUSE layer sees them: a plaintext name in a directory resolved to its backing
//! entry, and a backing directory listed as plaintext names.
//!
//! Formats 1 and 2 store names as they are (the volume header's names are reserved in the
//! root). Format 3 encrypts them ([`crate::format::names`]): every directory has a random IV
//! in its `cmkfs.diriv` file, read once per directory inode and cached on it; names longer
//! than an encoding allows get a long-name entry and a side file. This module does that I/O,
//! always relative to the parent's descriptor, with `O_NOFOLLOW`, and never believing a
//! side file or an IV file that is not a small regular file.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;

use crate::format::names::{self as fmt, Kind, NameError, NameKeys, DIRIV_LEN, DIRIV_NAME};
use crate::format::volume_header::is_reserved_root_name;
use crate::format::VolumeKeys;
use crate::fs::inode::{Inode, ROOT_ID};
use crate::fs::{io, CmkFs, R};
use crate::store::names::{create_diriv, plain_name, read_diriv, write_small};
use crate::sys;

/// A plaintext name resolved to its backing entry.
pub(crate) struct Resolved {
    /// The backing entry's name.
    pub name: CString,
    /// Format 3 long names: the side file's name and content.
    pub record: Option<(CString, Vec<u8>)>,
}

impl Resolved {
    fn plain(name: &OsStr) -> R<Self> {
        Ok(Resolved {
            name: sys::cstr(name).map_err(io)?,
            record: None,
        })
    }

    /// Writes the long name's side file (before the entry is made).
    pub fn write_record(&self, dir: BorrowedFd<'_>) -> R<()> {
        if let Some((rn, content)) = &self.record {
            write_small(dir, rn, content).map_err(io)?;
        }
        Ok(())
    }

    /// Removes the long name's side file (after the entry is gone).
    pub fn remove_record(&self, dir: BorrowedFd<'_>) {
        if let Some((rn, _)) = &self.record {
            if let Err(e) = sys::unlinkat(dir, rn, 0) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    tracing::warn!(error = %e, "could not remove a long name's side file");
                }
            }
        }
    }
}

fn name_errno(e: NameError) -> Errno {
    match e {
        NameError::Invalid => Errno::EINVAL,
        NameError::TooLong => Errno::ENAMETOOLONG,
        NameError::Undecryptable => Errno::EIO,
    }
}

/// The IV of directory inode `dir` (format 3; `pfd` is its descriptor), cached on the inode.
pub(crate) fn dir_iv(dir: &Inode, pfd: BorrowedFd<'_>) -> R<[u8; DIRIV_LEN]> {
    if let Some(iv) = dir.diriv.get() {
        return Ok(*iv);
    }
    let d = sys::openat(pfd, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(io)?;
    let iv = read_diriv(d.as_fd()).ok_or_else(|| {
        tracing::error!(dir = %crate::fs::data::describe(pfd), "directory IV (cmkfs.diriv) missing or damaged; names in this directory cannot be read or made (EIO)");
        Errno::EIO
    })?;
    let _ = dir.diriv.set(iv);
    Ok(iv)
}

/// The backing entry of plaintext `name` in directory `dir` (`pfd` its descriptor). Formats 1
/// and 2: the name itself, with the volume header's names reserved in the root (answered with
/// `reserved`: EPERM, or ENOENT for a lookup).
pub(crate) fn resolve(
    keys: &VolumeKeys,
    dir: &Inode,
    pfd: BorrowedFd<'_>,
    name: &OsStr,
    reserved: Errno,
) -> R<Resolved> {
    let Some(nk) = keys.names() else {
        if dir.id == ROOT_ID && is_reserved_root_name(name.as_bytes()) {
            return Err(reserved);
        }
        return Resolved::plain(name);
    };
    if name.len() > fmt::NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    let iv = dir_iv(dir, pfd)?;
    let b = nk.encrypt(&iv, name.as_bytes()).map_err(name_errno)?;
    let record = b
        .record()
        .map(|(rn, content)| (CString::new(rn).unwrap(), content.to_vec()));
    Ok(Resolved {
        name: CString::new(b.name()).unwrap(),
        record,
    })
}

/// Format 3: the extended attributes of a regular file re-sealed from binding `old` to `new`
/// (a rekey gave the file a new id). Values that do not open under `old` are left alone.
pub(crate) fn reseal_xattrs(nk: &NameKeys, pfd: BorrowedFd<'_>, old: &[u8; 16], new: &[u8; 16]) -> std::io::Result<()> {
    let list = sys::listxattr(pfd)?;
    for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let Some(plain) = nk.xattr_plain_name(n) else { continue };
        let c = CString::new(n).unwrap();
        let mut buf = vec![0u8; 65536];
        let len = sys::getxattr(pfd, &c, &mut buf)?;
        buf.truncate(len);
        if let Some(v) = nk.open_xattr(old, &plain, &buf) {
            sys::setxattr(pfd, &c, &nk.seal_xattr(new, &plain, &v), 0)?;
        }
    }
    Ok(())
}

impl CmkFs {
    /// [`dir_iv`] of a directory inode.
    pub(crate) fn dir_iv(&self, dir: &Inode) -> R<[u8; DIRIV_LEN]> {
        dir_iv(dir, self.pfd(dir)?.as_fd())
    }

    /// [`resolve`] in a directory inode.
    pub(crate) fn resolve(&self, keys: &VolumeKeys, dir: &Inode, name: &OsStr, reserved: Errno) -> R<Resolved> {
        resolve(keys, dir, self.pfd(dir)?.as_fd(), name, reserved)
    }

    /// The plaintext view of a backing directory listing (`dir` is its inode, `fd` the open
    /// directory): cmkfs's own names hidden, format 3 names decrypted.
    pub(crate) fn plain_listing(
        &self,
        dir: &Inode,
        fd: BorrowedFd<'_>,
        list: Vec<sys::DirEntry>,
    ) -> R<Vec<sys::DirEntry>> {
        let keys = self.access.keys()?;
        let Some(nk) = keys.names() else {
            let mut list = list;
            if dir.id == ROOT_ID {
                list.retain(|d| !is_reserved_root_name(&d.name));
            }
            return Ok(list);
        };
        let iv = self.dir_iv(dir)?;
        let mut out = Vec::with_capacity(list.len());
        let mut hidden = 0u64;
        for mut d in list {
            if d.name == b"." || d.name == b".." {
                out.push(d);
                continue;
            }
            match plain_name(nk, &iv, fd, &d.name) {
                Some(n) => {
                    d.name = n;
                    out.push(d);
                }
                None if fmt::kind(&d.name) != Kind::Other => hidden += 1,
                None => {}
            }
        }
        if hidden > 0 {
            tracing::warn!(dir = %crate::fs::data::describe(fd), hidden, "entries whose names do not decrypt are hidden (planted or damaged)");
        }
        Ok(out)
    }

    /// Format 3 mkdir: the directory is made under a temporary name with its IV inside, then
    /// renamed into place (`RENAME_NOREPLACE`), so no directory without an IV is ever visible
    /// under a real name, even after a crash.
    pub(crate) fn mkdir_v3(&self, parent: BorrowedFd<'_>, r: &Resolved, mode: u32) -> R<()> {
        let mut rnd = [0u8; 8];
        crate::crypto::fill_random(&mut rnd);
        let tmp = CString::new(format!("{}{}", fmt::TMP_PREFIX, crate::crypto::hex(&rnd))).unwrap();
        sys::mkdirat(parent, &tmp, mode & 0o7777).map_err(io)?;
        let made = (|| -> R<()> {
            let d = sys::openat(parent, &tmp, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0).map_err(io)?;
            create_diriv(d.as_fd()).map_err(io)?;
            r.write_record(parent)?;
            sys::renameat2(parent, &tmp, parent, &r.name, libc::RENAME_NOREPLACE).map_err(io)
        })();
        if let Err(e) = made {
            if let Ok(d) = sys::openat(parent, &tmp, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) {
                let _ = sys::unlinkat(d.as_fd(), &CString::new(DIRIV_NAME).unwrap(), 0);
            }
            let _ = sys::unlinkat(parent, &tmp, libc::AT_REMOVEDIR);
            return Err(e);
        }
        Ok(())
    }

    /// Format 3 rmdir: refuses a directory holding any entry but cmkfs's own, removes those
    /// (its IV, side files left by a crash), then the directory; if that fails the IV is put
    /// back. The kernel holds the directory locked throughout, so nothing is created in it
    /// through the mount meanwhile.
    pub(crate) fn rmdir_v3(&self, parent: BorrowedFd<'_>, r: &Resolved) -> R<()> {
        let d = sys::openat(
            parent,
            &r.name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(io)?;
        let dup = d.try_clone().map_err(io)?;
        let list = sys::read_dir(dup).map_err(io)?;
        let mut internal = vec![];
        for e in list {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            if fmt::kind(&e.name) != Kind::Other || !fmt::is_internal(&e.name) {
                return Err(Errno::ENOTEMPTY);
            }
            if e.kind == libc::DT_DIR {
                return Err(Errno::ENOTEMPTY); // a leftover temporary directory: let fsck decide
            }
            internal.push(e.name);
        }
        let iv = read_diriv(d.as_fd());
        for n in &internal {
            let _ = sys::unlinkat(d.as_fd(), &CString::new(n.clone()).unwrap(), 0);
        }
        if let Err(e) = sys::unlinkat(parent, &r.name, libc::AT_REMOVEDIR) {
            if let Some(iv) = iv {
                let c = CString::new(DIRIV_NAME).unwrap();
                let _ = write_small(d.as_fd(), &c, &iv);
            }
            return Err(io(e));
        }
        r.remove_record(parent);
        Ok(())
    }

    /// The plaintext target of a symlink whose backing target is `backing`.
    pub(crate) fn plain_target(&self, keys: &VolumeKeys, fd: BorrowedFd<'_>, backing: Vec<u8>) -> R<Vec<u8>> {
        match keys.names() {
            None => Ok(backing),
            Some(nk) => nk.open_symlink(&backing).map_err(|_| {
                tracing::error!(link = %crate::fs::data::describe(fd), "symlink target failed authentication; returning EIO");
                Errno::EIO
            }),
        }
    }

    /// The backing target of a new symlink to `target`.
    pub(crate) fn backing_target(&self, keys: &VolumeKeys, target: &OsStr) -> R<CString> {
        match keys.names() {
            None => sys::cstr(target).map_err(io),
            Some(nk) => Ok(CString::new(nk.seal_symlink(target.as_bytes()).map_err(name_errno)?).unwrap()),
        }
    }
}

/// Opens `parent/name` (a resolved backing name) as O_PATH without following a final symlink.
pub(crate) fn open_resolved(parent: BorrowedFd<'_>, r: &Resolved) -> R<OwnedFd> {
    sys::openat(parent, &r.name, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(io)
}
