//! The inode table: which backing inodes the kernel currently knows, by FUSE node id.
//!
//! Every known inode holds an `O_PATH` descriptor to its backing inode, which pins it: the
//! backing inode number cannot be reused while we hold the descriptor, so using it as the
//! FUSE node id is safe and keeps `stat` and `readdir` inode numbers consistent. Inodes on
//! another device (a mount inside the cipher directory) and the rare collision with the
//! root id get synthetic ids from the top half of the id space.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::data::FileData;
use super::sys;

/// FUSE's root node id.
pub const ROOT_ID: u64 = 1;
const SYNTHETIC_BASE: u64 = 1 << 63;

/// One inode the kernel knows.
pub struct Inode {
    /// FUSE node id.
    pub id: u64,
    fd: OwnedFd,
    /// Backing (device, inode).
    pub key: (u64, u64),
    /// File type bits (`S_IFMT`) of the backing inode; never changes.
    pub fmt: u32,
    lookups: AtomicU64,
    /// Content state (used for regular files only).
    pub data: FileData,
}

impl Inode {
    /// The O_PATH descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// True for directories.
    pub fn is_dir(&self) -> bool {
        self.fmt == libc::S_IFDIR
    }
    /// True for regular files.
    pub fn is_file(&self) -> bool {
        self.fmt == libc::S_IFREG
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

/// All inodes the kernel holds references to.
pub struct InodeTable {
    maps: Mutex<Maps>,
    root_dev: u64,
    root_ino: u64,
    next_synthetic: AtomicU64,
}

impl InodeTable {
    /// A table whose root is the cipher directory opened as `root_fd` (O_PATH).
    pub fn new(root_fd: OwnedFd) -> std::io::Result<Self> {
        let st = sys::fstat(root_fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            fd: root_fd,
            key,
            fmt: st.st_mode & libc::S_IFMT,
            lookups: AtomicU64::new(1),
            data: FileData::default(),
        });
        let mut maps = Maps::default();
        maps.by_id.insert(ROOT_ID, root);
        maps.by_key.insert(key, ROOT_ID);
        Ok(InodeTable {
            maps: Mutex::new(maps),
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
        })
    }

    /// The inode for a node id the kernel sent.
    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.maps.lock().by_id.get(&id).cloned()
    }

    /// The root inode.
    pub fn root(&self) -> Arc<Inode> {
        self.get(ROOT_ID).expect("root is never forgotten")
    }

    /// Registers a lookup of the backing inode behind `fd` (which was just opened O_PATH and
    /// stat'ed as `st`): returns the known inode with its lookup count raised, or a new one.
    pub fn lookup_insert(&self, fd: OwnedFd, st: &sys::Stat) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        let mut maps = self.maps.lock();
        if let Some(id) = maps.by_key.get(&key) {
            let ino = maps.by_id[id].clone();
            ino.lookups.fetch_add(1, Ordering::Relaxed);
            return ino;
        }
        let id = if st.st_dev == self.root_dev
            && st.st_ino != ROOT_ID
            && st.st_ino != self.root_ino
            && st.st_ino < SYNTHETIC_BASE
        {
            st.st_ino
        } else {
            self.next_synthetic.fetch_add(1, Ordering::Relaxed)
        };
        let ino = Arc::new(Inode {
            id,
            fd,
            key,
            fmt: st.st_mode & libc::S_IFMT,
            lookups: AtomicU64::new(1),
            data: FileData::default(),
        });
        maps.by_id.insert(id, ino.clone());
        maps.by_key.insert(key, id);
        ino
    }

    /// The kernel dropped `n` references.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut maps = self.maps.lock();
        let Some(ino) = maps.by_id.get(&id) else {
            return;
        };
        let prev = ino
            .lookups
            .fetch_sub(n.min(ino.lookups.load(Ordering::Relaxed)), Ordering::Relaxed);
        if prev <= n {
            let key = ino.key;
            maps.by_id.remove(&id);
            maps.by_key.remove(&key);
        }
    }

    /// Number of inodes known (for status).
    pub fn len(&self) -> usize {
        self.maps.lock().by_id.len()
    }

    /// True when only the root is known.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// A snapshot of every known inode (for cache invalidation and shutdown).
    pub fn all(&self) -> Vec<Arc<Inode>> {
        self.maps.lock().by_id.values().cloned().collect()
    }
}
