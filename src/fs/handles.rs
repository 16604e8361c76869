//! The file handle table: what a FUSE file handle (`fh`) of an open file or directory stands
//! for. Handles are numbered from 1 and never reused within a mount.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fuser::{Errno, FileHandle};
use parking_lot::Mutex;

use super::inode::Inode;
use super::R;
use crate::sys;

/// An open file or directory.
pub(super) enum Handle {
    /// A regular file, with the flags it was opened with.
    File { inode: Arc<Inode>, flags: i32 },
    /// A directory: its descriptor (for fsyncdir) and the listing readdir pages through.
    Dir {
        inode: Arc<Inode>,
        fd: OwnedFd,
        entries: Mutex<Option<Arc<Vec<sys::DirEntry>>>>,
    },
}

/// Open handles by number.
pub(super) struct HandleTable {
    map: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl Default for HandleTable {
    fn default() -> Self {
        HandleTable {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl HandleTable {
    /// Registers an open file or directory; returns its number.
    pub(super) fn add(&self, h: Handle) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.lock().insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    /// The handle behind a number; EBADF if there is none.
    pub(super) fn get(&self, fh: FileHandle) -> R<Arc<Handle>> {
        self.map.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// The file behind a number and its open flags; EISDIR for a directory handle.
    pub(super) fn file(&self, fh: FileHandle) -> R<(Arc<Inode>, i32)> {
        match &*self.get(fh)? {
            Handle::File { inode, flags } => Ok((inode.clone(), *flags)),
            Handle::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Forgets a handle (release, releasedir), running `then` on it if it was known, still
    /// under the table's lock (so a release finishes before another handle is added).
    pub(super) fn remove(&self, fh: FileHandle, then: impl FnOnce(&Handle)) {
        let mut map = self.map.lock();
        if let Some(h) = map.remove(&fh.0) {
            then(&h);
        }
    }
}
