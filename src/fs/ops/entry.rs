//! Names: lookup, readlink, mknod, mkdir, symlink, link, unlink/rmdir, rename, and create
//! (which makes an entry and opens it). New entries are given to the caller, as a local
//! filesystem does. Every plaintext name goes through [`CmkFs::resolve`] (`fs::names`): as
//! is in formats 1 and 2 (the volume header's names reserved in the root), encrypted in
//! format 3 (long names with their side file written before the entry and removed after it).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use fuser::{Errno, FileAttr, FileHandle, FopenFlags, INodeNo, RenameFlags, Request};

use crate::fs::attrs::attr;
use crate::fs::handles::Handle;
use crate::fs::inode::Inode;
use crate::fs::names::open_resolved;
use crate::fs::{io, CmkFs, R};
use crate::sys;

impl CmkFs {
    pub(super) fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> R<FileAttr> {
        // Test hook, debug builds only: proves that a panicking handler answers EIO and the
        // mount stays up (tests/bad_input.rs).
        #[cfg(debug_assertions)]
        if crate::config::env().test.panic_on_lookup.as_deref() == Some(name) {
            panic!("test panic requested for lookup of {name:?}");
        }
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        let r = self.resolve(&keys, &p, name, Errno::ENOENT)?;
        let fd = open_resolved(self.pfd(&p)?.as_fd(), &r)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    pub(super) fn do_readlink(&self, ino: INodeNo) -> R<Vec<u8>> {
        let keys = self.access.keys()?;
        let fd = self.pfd(&*self.inode(ino)?)?;
        let backing = sys::readlink(fd.as_fd()).map_err(io)?;
        self.plain_target(&keys, fd.as_fd(), backing)
    }

    pub(super) fn do_mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, rdev: u32) -> R<FileAttr> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        let r = self.resolve(&keys, &p, name, Errno::EPERM)?;
        let pfd = self.pfd(&p)?;
        r.write_record(pfd.as_fd())?;
        if let Err(e) = sys::mknodat(pfd.as_fd(), &r.name, mode, rdev as libc::dev_t) {
            return Err(io(e));
        }
        self.new_entry(req, &p, &r, mode)
    }

    pub(super) fn do_mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> R<FileAttr> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        let r = self.resolve(&keys, &p, name, Errno::EPERM)?;
        let pfd = self.pfd(&p)?;
        if keys.names().is_some() {
            self.mkdir_v3(pfd.as_fd(), &r, mode)?;
        } else {
            sys::mkdirat(pfd.as_fd(), &r.name, mode & 0o7777).map_err(io)?;
        }
        self.new_entry(req, &p, &r, libc::S_IFDIR | mode)
    }

    pub(super) fn do_symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path) -> R<FileAttr> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        let r = self.resolve(&keys, &p, name, Errno::EPERM)?;
        let t = self.backing_target(&keys, target.as_os_str())?;
        let pfd = self.pfd(&p)?;
        r.write_record(pfd.as_fd())?;
        sys::symlinkat(&t, pfd.as_fd(), &r.name).map_err(io)?;
        self.new_entry(req, &p, &r, libc::S_IFLNK)
    }

    /// Looks up the entry just made in `p`, after giving it to the caller
    /// ([`Self::set_owner`]).
    fn new_entry(&self, req: &Request, p: &Inode, r: &crate::fs::names::Resolved, mode: u32) -> R<FileAttr> {
        let fd = open_resolved(self.pfd(p)?.as_fd(), r)?;
        self.set_owner(req, p, &fd, mode)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    pub(super) fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> R<FileAttr> {
        let keys = self.access.keys()?;
        let i = self.inode(ino)?;
        let np = self.inode(newparent)?;
        let r = self.resolve(&keys, &np, newname, Errno::EPERM)?;
        let npfd = self.pfd(&np)?;
        r.write_record(npfd.as_fd())?;
        sys::link_fd(self.pfd(&i)?.as_fd(), npfd.as_fd(), &r.name).map_err(io)?;
        let fd = open_resolved(npfd.as_fd(), &r)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    /// unlink (`flags` 0) or rmdir (`AT_REMOVEDIR`).
    pub(super) fn do_remove(&self, parent: INodeNo, name: &OsStr, flags: i32) -> R<()> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        let r = self.resolve(&keys, &p, name, Errno::EPERM)?;
        let pfd = self.pfd(&p)?;
        if flags == libc::AT_REMOVEDIR && keys.names().is_some() {
            return self.rmdir_v3(pfd.as_fd(), &r);
        }
        sys::unlinkat(pfd.as_fd(), &r.name, flags).map_err(io)?;
        r.remove_record(pfd.as_fd());
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        let from = self.resolve(&keys, &p, name, Errno::EPERM)?;
        let to = self.resolve(&keys, &np, newname, Errno::EPERM)?;
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let (pfd, npfd) = (self.pfd(&p)?, self.pfd(&np)?);
        to.write_record(npfd.as_fd())?;
        sys::renameat2(pfd.as_fd(), &from.name, npfd.as_fd(), &to.name, flags.bits()).map_err(io)?;
        // The old name is gone (unless the two were exchanged, or were the same entry).
        let same = p.id == np.id && from.name == to.name;
        if !flags.contains(RenameFlags::RENAME_EXCHANGE) && !same {
            from.remove_record(pfd.as_fd());
        }
        Ok(())
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
        let r = self.resolve(&keys, &p, name, Errno::EPERM)?;
        let pfd = self.pfd(&p)?;
        r.write_record(pfd.as_fd())?;
        let created = sys::openat(
            pfd.as_fd(),
            &r.name,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW,
            mode & 0o7777,
        );
        let (fd, new) = match created {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                (open_resolved(pfd.as_fd(), &r)?, false)
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
