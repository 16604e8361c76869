//! Directories: opendir and readdir (fsyncdir is `do_fsync` in file.rs, releasedir forgets
//! the handle). The volume header's names are hidden from the root's listing.

use std::sync::Arc;

use fuser::{Errno, FileHandle, INodeNo};
use parking_lot::Mutex;
use std::os::fd::AsFd;

use crate::fs::handles::Handle;
use crate::fs::reply::DirPage;
use crate::fs::{io, CmkFs, R};
use crate::sys;

impl CmkFs {
    pub(super) fn do_opendir(&self, ino: INodeNo) -> R<FileHandle> {
        let i = self.inode(ino)?;
        let fd = sys::openat(self.pfd(&i)?.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(io)?;
        Ok(self.handles.add(Handle::Dir {
            inode: i,
            fd,
            entries: Mutex::new(None),
        }))
    }

    /// The listing from `offset` on: read afresh at offset 0, else from the handle's copy (so
    /// offsets stay stable while the kernel pages through).
    pub(super) fn do_readdir(&self, fh: FileHandle, offset: u64) -> R<DirPage> {
        let h = self.handles.get(fh)?;
        let Handle::Dir { inode, entries, .. } = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let mut e = entries.lock();
        if offset == 0 || e.is_none() {
            let fd = sys::openat(self.pfd(inode)?.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(io)?;
            let dup = fd.try_clone().map_err(io)?;
            let list = sys::read_dir(dup).map_err(io)?;
            let list = self.plain_listing(inode, fd.as_fd(), list)?;
            *e = Some(Arc::new(list));
        }
        Ok(DirPage {
            dir_id: inode.id,
            entries: e.clone().unwrap(),
            offset,
        })
    }
}
