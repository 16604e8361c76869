//! Attributes: getattr, setattr (chmod, chown, truncate, utimens) with the set-ID bit
//! clearing that writes and truncates owe, and statfs.

use std::os::fd::AsFd;

use fuser::{Errno, FileAttr, FileHandle, INodeNo, Request, TimeOrNow};

use crate::fs::attrs::to_timespec;
use crate::fs::data::FileData;
use crate::fs::inode::{Inode, ROOT_ID};
use crate::fs::{io, CmkFs, R};
use crate::sys;

/// Who asked, as far as clearing set-ID bits needs to know (FUSE passes uid, primary gid and
/// pid; supplementary groups are read from /proc when needed).
#[derive(Clone, Copy)]
pub struct Caller {
    uid: u32,
    gid: u32,
    pid: u32,
}

impl Caller {
    /// The caller of a request.
    pub fn of(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }
}

/// What a setattr asks to change (`None`: leave as is).
pub struct SetAttr {
    /// chmod.
    pub mode: Option<u32>,
    /// chown: owner.
    pub uid: Option<u32>,
    /// chown: group.
    pub gid: Option<u32>,
    /// truncate.
    pub size: Option<u64>,
    /// utimens: access time.
    pub atime: Option<TimeOrNow>,
    /// utimens: modification time.
    pub mtime: Option<TimeOrNow>,
    /// The handle the change came through (ftruncate), if any.
    pub fh: Option<FileHandle>,
}

impl CmkFs {
    pub(super) fn do_getattr(&self, ino: INodeNo) -> R<FileAttr> {
        // The root stays visible (unmounting needs it); everything else is refused while
        // the volume is Inaccessible.
        if ino.0 != ROOT_ID {
            self.access.check()?;
        }
        let i = self.inode(ino)?;
        Ok(self.attr(i.id, &sys::fstat(self.pfd(&i)?.as_fd()).map_err(io)?))
    }

    pub(super) fn do_setattr(&self, ino: INodeNo, set: &SetAttr, caller: Caller) -> R<FileAttr> {
        let i = self.inode(ino)?;
        let root_shown = self.shows_root_attr(&i);
        if root_shown && (set.mode.is_some() || set.uid.is_some() || set.gid.is_some()) {
            self.set_root_attr(&i, set.mode, set.uid, set.gid)?;
        } else if set.uid.is_some() || set.gid.is_some() {
            let (uid, gid) = (set.uid.unwrap_or(u32::MAX), set.gid.unwrap_or(u32::MAX));
            sys::chown_fd(self.pfd(&i)?.as_fd(), uid, gid).map_err(io)?;
        }
        if let (Some(m), false) = (set.mode, root_shown) {
            sys::chmod_fd(self.pfd(&i)?.as_fd(), m & 0o7777).map_err(io)?;
        }
        if let Some(sz) = set.size {
            if i.is_dir() {
                return Err(Errno::EISDIR);
            }
            if !i.is_file() {
                return Err(Errno::EINVAL);
            }
            let via_handle = set.fh.and_then(|fh| self.handles.file(fh).ok()).is_some() && i.data.is_open();
            let keys = self.access.keys()?;
            if via_handle {
                i.data.truncate(&keys, sz)?;
            } else {
                self.with_open(&i, |d| d.truncate(&keys, sz))?;
            }
            // A truncate by an unprivileged process clears set-ID bits (FUSE_HANDLE_KILLPRIV_V2
            // leaves this to us, and fuser does not pass FATTR_KILL_SUIDGID: uid 0 stands in for
            // CAP_FSETID). A mode set in the same call wins.
            if caller.uid != 0 && set.mode.is_none() {
                self.kill_suidgid(&i, caller)?;
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = [to_timespec(set.atime), to_timespec(set.mtime)];
            sys::utimens_fd(self.pfd(&i)?.as_fd(), &times).map_err(io)?;
        }
        Ok(self.attr(i.id, &sys::fstat(self.pfd(&i)?.as_fd()).map_err(io)?))
    }

    /// Runs `f` with the file open for writing (for truncate without a handle).
    fn with_open<T>(&self, inode: &Inode, f: impl FnOnce(&FileData) -> R<T>) -> R<T> {
        inode
            .data
            .open(self.pfd(inode)?.as_fd(), &*self.access.keys()?, &self.mount_data, true)?;
        let r = f(&inode.data);
        inode.data.release();
        r
    }

    /// Clears the set-ID bits a write or truncate by a process without CAP_FSETID must
    /// clear, by the kernel's rule (`setattr_should_drop_suidgid`): set-user-ID always;
    /// set-group-ID if group execute is set or the caller is not in the file's group.
    /// FUSE_HANDLE_KILLPRIV_V2 leaves this to us, and our own writes to the backing file run
    /// as root, which would keep the bits.
    pub(super) fn kill_suidgid(&self, i: &Inode, caller: Caller) -> R<()> {
        let pfd = self.pfd(i)?;
        let st = sys::fstat(pfd.as_fd()).map_err(io)?;
        let mode = st.st_mode;
        let mut kill = mode & libc::S_ISUID;
        if mode & libc::S_ISGID != 0
            && (mode & libc::S_IXGRP != 0 || !sys::caller_in_group(caller.gid, caller.pid, st.st_gid))
        {
            kill |= libc::S_ISGID;
        }
        if kill != 0 {
            sys::chmod_fd(pfd.as_fd(), mode & 0o7777 & !kill).map_err(io)?;
        }
        Ok(())
    }

    /// The backing filesystem's statistics.
    pub(super) fn do_statfs(&self) -> R<sys::StatVfs> {
        sys::statvfs(self.pfd(&self.inodes.root())?.as_fd()).map_err(io)
    }
}
