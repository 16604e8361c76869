//! Names: lookup, readlink, mknod, mkdir, symlink, link, unlink/rmdir, rename, and create
//! (which makes an entry and opens it). New entries are given to the caller, as a local
//! filesystem does; the volume header's names are reserved in the root.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use fuser::{Errno, FileAttr, FileHandle, FopenFlags, INodeNo, RenameFlags, Request};

use crate::format::volume_header::is_reserved_root_name;
use crate::fs::attrs::attr;
use crate::fs::handles::Handle;
use crate::fs::inode::{Inode, ROOT_ID};
use crate::fs::{io, open_child, CmkFs, R};
use crate::sys;

/// Whether a name may be used in `parent`: the volume header's names are reserved in the root.
fn check_name(parent: &Inode, name: &OsStr) -> R<()> {
    if parent.id == ROOT_ID && is_reserved_root_name(name.as_bytes()) {
        return Err(Errno::EPERM);
    }
    Ok(())
}

impl CmkFs {
    pub(super) fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> R<FileAttr> {
        // Test hook, debug builds only: proves that a panicking handler answers EIO and the
        // mount stays up (tests/bad_input.rs).
        #[cfg(debug_assertions)]
        if crate::config::env().test.panic_on_lookup.as_deref() == Some(name) {
            panic!("test panic requested for lookup of {name:?}");
        }
        let p = self.inode(parent)?;
        if p.id == ROOT_ID && is_reserved_root_name(name.as_bytes()) {
            return Err(Errno::ENOENT);
        }
        let fd = open_child(self.pfd(&p)?.as_fd(), name)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    pub(super) fn do_readlink(&self, ino: INodeNo) -> R<Vec<u8>> {
        sys::readlink(self.pfd(&*self.inode(ino)?)?.as_fd()).map_err(io)
    }

    pub(super) fn do_mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, rdev: u32) -> R<FileAttr> {
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        let c = sys::cstr(name).map_err(io)?;
        sys::mknodat(self.pfd(&p)?.as_fd(), &c, mode, rdev as libc::dev_t).map_err(io)?;
        self.new_entry(req, &p, name, mode)
    }

    pub(super) fn do_mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> R<FileAttr> {
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        sys::mkdirat(self.pfd(&p)?.as_fd(), &sys::cstr(name).map_err(io)?, mode & 0o7777).map_err(io)?;
        self.new_entry(req, &p, name, libc::S_IFDIR | mode)
    }

    pub(super) fn do_symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path) -> R<FileAttr> {
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        sys::symlinkat(
            &sys::cstr(target.as_os_str()).map_err(io)?,
            self.pfd(&p)?.as_fd(),
            &sys::cstr(name).map_err(io)?,
        )
        .map_err(io)?;
        self.new_entry(req, &p, name, libc::S_IFLNK)
    }

    /// Looks up the entry `name` just made in `p`, after giving it to the caller
    /// ([`Self::set_owner`]).
    fn new_entry(&self, req: &Request, p: &Inode, name: &OsStr, mode: u32) -> R<FileAttr> {
        let fd = open_child(self.pfd(p)?.as_fd(), name)?;
        self.set_owner(req, p, &fd, mode)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    pub(super) fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> R<FileAttr> {
        let i = self.inode(ino)?;
        let np = self.inode(newparent)?;
        check_name(&np, newname)?;
        sys::link_fd(
            self.pfd(&i)?.as_fd(),
            self.pfd(&np)?.as_fd(),
            &sys::cstr(newname).map_err(io)?,
        )
        .map_err(io)?;
        let fd = open_child(self.pfd(&np)?.as_fd(), newname)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    /// unlink (`flags` 0) or rmdir (`AT_REMOVEDIR`).
    pub(super) fn do_remove(&self, parent: INodeNo, name: &OsStr, flags: i32) -> R<()> {
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        sys::unlinkat(self.pfd(&p)?.as_fd(), &sys::cstr(name).map_err(io)?, flags).map_err(io)
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        check_name(&p, name)?;
        check_name(&np, newname)?;
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        sys::renameat2(
            self.pfd(&p)?.as_fd(),
            &sys::cstr(name).map_err(io)?,
            self.pfd(&np)?.as_fd(),
            &sys::cstr(newname).map_err(io)?,
            flags.bits(),
        )
        .map_err(io)
    }

    /// Creates (or, without `O_EXCL`, opens) a regular file and opens it (see
    /// [`Self::do_open`] for what a damaged header does).
    pub(super) fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> R<(FileAttr, FileHandle, FopenFlags)> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        let c = sys::cstr(name).map_err(io)?;
        let created = sys::openat(
            self.pfd(&p)?.as_fd(),
            &c,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW,
            mode & 0o7777,
        );
        let (fd, new) = match created {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                (open_child(self.pfd(&p)?.as_fd(), name)?, false)
            }
            Err(e) => return Err(io(e)),
        };
        let path_fd = sys::reopen(fd.as_fd(), libc::O_PATH).map_err(io)?;
        drop(fd);
        if new {
            self.set_owner(req, &p, &path_fd, libc::S_IFREG | mode)?;
        }
        let (inode, _) = self.lookup_fd(path_fd)?;
        if !inode.is_file() {
            self.inodes.forget(inode.id, 1);
            return Err(if inode.is_dir() { Errno::EISDIR } else { Errno::EEXIST });
        }
        let want_write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if let Err(e) = inode
            .data
            .open(self.pfd(&inode)?.as_fd(), &keys, &self.mount_data, want_write || new)
        {
            self.inodes.forget(inode.id, 1);
            return Err(e);
        }
        if !new && flags & libc::O_TRUNC != 0 {
            inode.data.truncate(&keys, 0)?;
        } else if inode.data.is_damaged() {
            inode.data.release();
            self.inodes.forget(inode.id, 1);
            return Err(Errno::EIO);
        }
        let a = attr(
            self.layout,
            inode.id,
            &sys::fstat(self.pfd(&inode)?.as_fd()).map_err(io)?,
        );
        let fh = self.handles.add(Handle::File { inode, flags });
        Ok((a, fh, Self::open_flags(flags)))
    }

    /// Finishes a new entry: gives it to the requesting user (when running as root), with the
    /// group of a set-group-id parent directory, as a local filesystem does, and gives it the
    /// permission bits the caller asked for. The daemon runs with umask 077 (nothing it creates
    /// for itself is open to others); the kernel has already applied the caller's own umask
    /// to `mode`, so the group/other bits that 077 took away are put back here.
    fn set_owner(&self, req: &Request, parent: &Inode, fd: &OwnedFd, mode: u32) -> R<()> {
        if self.as_root {
            self.chown_new(req, parent, fd, mode)?;
        }
        if mode & libc::S_IFMT != libc::S_IFLNK && mode & 0o077 != 0 {
            let st = sys::fstat(fd.as_fd()).map_err(io)?;
            if mode & 0o077 & !st.st_mode != 0 {
                sys::chmod_fd(fd.as_fd(), (st.st_mode & 0o7777) | (mode & 0o077)).map_err(io)?;
            }
        }
        Ok(())
    }

    fn chown_new(&self, req: &Request, parent: &Inode, fd: &OwnedFd, mode: u32) -> R<()> {
        let pst = sys::fstat(self.pfd(parent)?.as_fd()).map_err(io)?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            req.gid()
        };
        sys::chown_fd(fd.as_fd(), req.uid(), gid).map_err(io)?;
        // chown clears set-id bits of non-directories; put back what the caller asked for.
        let fmt = mode & libc::S_IFMT;
        if mode & (libc::S_ISUID | libc::S_ISGID) != 0 && fmt != libc::S_IFDIR && fmt != libc::S_IFLNK {
            sys::chmod_fd(fd.as_fd(), mode & 0o7777).map_err(io)?;
        }
        Ok(())
    }
}
