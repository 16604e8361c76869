//! The `fuser::Filesystem` impl: a dispatcher. Each operation names its gate, calls the
//! method of its family that answers it, and replies through `CmkFs::run` (in
//! `fs/reply.rs`: the access gate, the panic guard, the reply of each answer type). The
//! families:
//! - [`entry`]: names (lookup, forget, readlink, mknod, mkdir, symlink, link, unlink, rmdir,
//!   rename, create);
//! - [`attr`]: getattr, setattr (chmod, chown, truncate, utimens; set-ID bit clearing), statfs;
//! - [`file`](mod@file): open, read, write, flush, fsync, release, fallocate, lseek;
//! - [`dir`]: opendir, readdir, releasedir, fsyncdir;
//! - [`xattr`]: extended attributes (values encrypted).

mod attr;
mod dir;
mod entry;
mod file;
mod xattr;

use std::ffi::OsStr;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, FileHandle, Filesystem, FopenFlags, INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::reply::{guard, Gate, XattrReply};
use super::{CmkFs, MAX_WRITE};
use attr::{Caller, SetAttr};

impl Filesystem for CmkFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        // More requests in flight: writeback and readahead of large files overlap with our
        // encryption instead of waiting for each other.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // We clear set-user/group-ID bits ourselves on write and truncate. In exchange the
        // kernel stops asking for `security.capability` (a GETXATTR round trip) before every
        // write: it marks inodes S_NOSEC after the first check.
        if !crate::config::env().no_killpriv {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        }
        // Writeback cache (opt-in, CMKFS_WRITEBACK_CACHE=1): small writes land in the kernel
        // page cache and reach us as large page-aligned flushes. Not the default: it breaks the
        // "no acknowledged write lost" promise of revocation (see `writeback_cache` in CmkFs).
        if self.writeback_cache {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        }
        Ok(())
    }

    // Names (entry.rs).

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.run("lookup", Gate::Available, reply, || self.do_lookup(parent, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.run("readlink", Gate::InMethod, reply, || self.do_readlink(ino));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.run("mknod", Gate::Available, reply, || {
            self.do_mknod(req, parent, name, mode, rdev)
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        self.run("mkdir", Gate::Available, reply, || {
            self.do_mkdir(req, parent, name, mode)
        });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.run("symlink", Gate::Available, reply, || {
            self.do_symlink(req, parent, link_name, target)
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.run("link", Gate::Available, reply, || self.do_link(ino, newparent, newname));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.run("unlink", Gate::Available, reply, || self.do_remove(parent, name, 0));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.run("rmdir", Gate::Available, reply, || {
            self.do_remove(parent, name, libc::AT_REMOVEDIR)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.run("rename", Gate::Available, reply, || {
            self.do_rename(parent, name, newparent, newname, flags)
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.run("create", Gate::InMethod, reply, || {
            self.do_create(req, parent, name, mode, flags)
        });
    }

    // Attributes (attr.rs).

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.run("getattr", Gate::InMethod, reply, || self.do_getattr(ino));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh,
        };
        self.run("setattr", Gate::Available, reply, || {
            self.do_setattr(ino, &set, Caller::of(req))
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.run("statfs", Gate::InMethod, reply, || self.do_statfs());
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions); only the gate is ours.
        self.run("access", Gate::Available, reply, || Ok(()));
    }

    // File content (file.rs).

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.run("open", Gate::InMethod, reply, || self.do_open(ino, flags));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.run("read", Gate::InMethod, reply, || self.do_read(fh, offset, size));
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = wf
            .contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            .then(|| Caller::of(req));
        self.run("write", Gate::InMethod, reply, || self.do_write(fh, offset, data, kill));
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        // Writes reach the backing file before they are acknowledged; nothing is buffered.
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.run("fsync", Gate::Available, reply, || self.do_fsync(fh, datasync));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Guarded, but always answered ok: the handle is gone either way.
        let _ = guard("release", || {
            self.do_release(fh);
            Ok(())
        });
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.run("fallocate", Gate::InMethod, reply, || {
            self.do_fallocate(fh, offset, length, mode)
        });
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        self.run("lseek", Gate::InMethod, reply, || self.do_lseek(fh, offset, whence));
    }

    // Directories (dir.rs).

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.run("opendir", Gate::Available, reply, || {
            Ok((self.do_opendir(ino)?, FopenFlags::empty()))
        });
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.run("readdir", Gate::Available, reply, || self.do_readdir(fh, offset));
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.handles.remove(fh, |_| ());
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.run("fsyncdir", Gate::Available, reply, || self.do_fsync(fh, datasync));
    }

    // Extended attributes (xattr.rs).

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.run("setxattr", Gate::Available, reply, || {
            self.do_setxattr(ino, name, value, flags)
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.run("getxattr", Gate::InMethod, XattrReply(reply, size), || {
            self.do_getxattr(ino, name)
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.run("listxattr", Gate::Available, XattrReply(reply, size), || {
            self.do_listxattr(ino)
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.run("removexattr", Gate::Available, reply, || self.do_removexattr(ino, name));
    }
}
