//! File content: open, read, write, fsync, release, fallocate, lseek. Each goes from the
//! handle to the file's [`FileData`](crate::fs::data::FileData), which plans the blocks with
//! the format and does the I/O through the store.

use std::os::fd::AsFd;

use fuser::{Errno, FileHandle, FopenFlags, INodeNo, OpenFlags};

use super::attr::Caller;
use crate::fs::handles::Handle;
use crate::fs::{io, CmkFs, R};

impl CmkFs {
    /// How the kernel is to cache an open file.
    pub(super) fn open_flags(flags: i32) -> FopenFlags {
        // O_DIRECT is honoured: the kernel page cache is bypassed for this handle, every read
        // and write comes to us and goes to the backing file before it is answered.
        if flags & libc::O_DIRECT != 0 {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            // Every change to a file goes through this mount, so its page cache stays valid
            // across opens (revocation invalidates it explicitly).
            FopenFlags::FOPEN_KEEP_CACHE
        }
    }

    pub(super) fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> R<(FileHandle, FopenFlags)> {
        let i = self.inode(ino)?;
        if !i.is_file() {
            return Err(if i.is_dir() { Errno::EISDIR } else { Errno::EINVAL });
        }
        let want_write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let keys = self.access.keys()?;
        i.data
            .open(self.pfd(&i)?.as_fd(), &keys, &self.mount_data, want_write)?;
        // A file whose header cannot be used is EIO at a read-only open: its size may show
        // as 0, so the kernel would never ask us for a read. An open for writing goes through,
        // so that `O_TRUNC` (the kernel's truncate to 0, which needs no header) can replace
        // it with a fresh one; reads and writes of the damaged content stay EIO.
        //
        // FUSE_ATOMIC_O_TRUNC is deliberately not negotiated: with it, the kernel skipped
        // its ETXTBSY check for `O_RDONLY|O_TRUNC` of a running executable on some lookup
        // paths (pjdfstest open::etxtbsy, under load). Without it, O_TRUNC is a setattr the
        // kernel guards like on any local filesystem.
        if i.data.is_damaged() && !want_write {
            i.data.release();
            return Err(Errno::EIO);
        }
        let fh = self.handles.add(Handle::File {
            inode: i,
            flags: flags.0,
        });
        Ok((fh, Self::open_flags(flags.0)))
    }

    pub(super) fn do_read(&self, fh: FileHandle, offset: u64, size: u32) -> R<Vec<u8>> {
        let keys = self.access.keys()?;
        self.handles.file(fh)?.0.data.read(&keys, offset, size)
    }

    /// A write, clearing set-ID bits first when the kernel asks (`kill_suidgid`); writes
    /// pass while a revocation drains (`keys_for_write`).
    pub(super) fn do_write(&self, fh: FileHandle, offset: u64, data: &[u8], kill_suidgid: Option<Caller>) -> R<u32> {
        let (i, flags) = self.handles.file(fh)?;
        if let Some(caller) = kill_suidgid {
            self.kill_suidgid(&i, caller)?;
        }
        let n = i.data.write(&*self.access.keys_for_write()?, offset, data)?;
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            i.data.sync(flags & libc::O_SYNC != libc::O_SYNC)?;
        }
        Ok(n as u32)
    }

    /// fsync of a file or (fsyncdir) a directory handle.
    pub(super) fn do_fsync(&self, fh: FileHandle, datasync: bool) -> R<()> {
        match &*self.handles.get(fh)? {
            Handle::File { inode, .. } => inode.data.fsync(datasync),
            Handle::Dir { fd, .. } => {
                // SAFETY: fsync on a descriptor borrowed for the duration of the call.
                if unsafe { libc::fsync(std::os::fd::AsRawFd::as_raw_fd(fd)) } != 0 {
                    return Err(io(std::io::Error::last_os_error()));
                }
                Ok(())
            }
        }
    }

    pub(super) fn do_release(&self, fh: FileHandle) {
        self.handles.remove(fh, |h| {
            if let Handle::File { inode, .. } = h {
                inode.data.release();
            }
        });
    }

    pub(super) fn do_fallocate(&self, fh: FileHandle, offset: u64, length: u64, mode: i32) -> R<()> {
        self.handles
            .file(fh)?
            .0
            .data
            .fallocate(&*self.access.keys()?, mode, offset, length)
    }

    pub(super) fn do_lseek(&self, fh: FileHandle, offset: i64, whence: i32) -> R<u64> {
        if offset < 0 {
            return Err(Errno::ENXIO);
        }
        self.access.check()?;
        let (i, _) = self.handles.file(fh)?;
        // With the writeback cache, data may still be dirty in the kernel's page cache,
        // invisible in the backing file: have the kernel write this inode back first.
        if self.writeback_cache && (whence == libc::SEEK_DATA || whence == libc::SEEK_HOLE) {
            if let Some(n) = self.notifier.get() {
                let _ = n.inval_inode(INodeNo(i.id), 0, 0);
            }
        }
        i.data.seek(offset as u64, whence)
    }
}
