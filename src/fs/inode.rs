//! The inode table: which backing inodes the kernel currently knows, by FUSE node id.
//!
//! Every known inode is identified by its kernel *file handle* (`name_to_handle_at`, about 20
//! bytes), and a bounded LRU cache holds `O_PATH` descriptors for the recently used ones; a
//! descriptor that was evicted is reopened from the handle (`open_by_handle_at`). So the number
//! of open descriptors stays bounded however many inodes the kernel caches (a tree of a
//! million files needs no million descriptors), while operations on hot inodes cost no extra
//! syscall. Where file handles are not available (no CAP_DAC_READ_SEARCH, or a backing
//! filesystem without export support), each inode keeps its descriptor pinned instead, as
//! libfuse's passthrough_hp does, and the descriptor limit is raised as far as allowed.
//!
//! The backing inode number is the FUSE node id: our descriptor or handle pins the backing
//! inode, so the number cannot be reused while the kernel knows it, and `stat` and `readdir`
//! inode numbers agree. Inodes on another device (a mount inside the cipher directory) and a
//! collision with the root id get synthetic ids from the top half of the id space.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::data::FileData;
use crate::sys;

/// FUSE's root node id.
pub const ROOT_ID: u64 = 1;
const SYNTHETIC_BASE: u64 = 1 << 63;

/// A shared `O_PATH` descriptor of an inode.
pub type PathFd = Arc<OwnedFd>;

/// One inode the kernel knows.
pub struct Inode {
    /// FUSE node id.
    pub id: u64,
    /// Backing (device, inode).
    pub key: (u64, u64),
    /// File type bits (`S_IFMT`) of the backing inode; never changes.
    pub fmt: u32,
    /// Kernel file handle, when the table reopens descriptors on demand.
    handle: Option<Box<[u8]>>,
    /// Descriptor held for the inode's lifetime, when there is no handle.
    pinned: Option<PathFd>,
    lookups: AtomicU64,
    /// Content state (used for regular files only).
    pub data: FileData,
    /// Format 3 directories: the directory IV, read once (see `fs::names`).
    pub diriv: std::sync::OnceLock<[u8; crate::format::names::DIRIV_LEN]>,
}

impl Inode {
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
    fds: Mutex<LruCache<u64, PathFd>>,
    root: Arc<Inode>,
    root_dev: u64,
    root_ino: u64,
    use_handles: bool,
    mount_fd: OwnedFd,
    next_synthetic: AtomicU64,
}

impl InodeTable {
    /// A table whose root is the cipher directory opened as `root_fd` (O_PATH), caching at
    /// most `max_fds` descriptors of other inodes.
    pub fn new(root_fd: OwnedFd, max_fds: usize) -> std::io::Result<Self> {
        let st = sys::fstat(root_fd.as_fd())?;
        // open_by_handle_at wants a real (not O_PATH) descriptor on the filesystem.
        let mount_fd = sys::reopen(root_fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        // File handles are used only if a round trip works here (privilege and filesystem).
        let use_handles = sys::name_to_handle(root_fd.as_fd())
            .and_then(|h| sys::open_by_handle(mount_fd.as_fd(), &h, libc::O_PATH))
            .is_ok();
        let key = (st.st_dev, st.st_ino);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            key,
            fmt: st.st_mode & libc::S_IFMT,
            handle: None,
            pinned: Some(Arc::new(root_fd)),
            lookups: AtomicU64::new(1),
            data: FileData::default(),
            diriv: std::sync::OnceLock::new(),
        });
        let mut maps = Maps::default();
        maps.by_id.insert(ROOT_ID, root.clone());
        maps.by_key.insert(key, ROOT_ID);
        tracing::info!(
            use_handles,
            max_fds,
            "inode table: descriptors {}",
            if use_handles {
                "cached, reopened from file handles"
            } else {
                "pinned per inode"
            }
        );
        Ok(InodeTable {
            maps: Mutex::new(maps),
            fds: Mutex::new(LruCache::new(NonZeroUsize::new(max_fds.max(16)).unwrap())),
            root,
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            use_handles,
            mount_fd,
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
        })
    }

    /// The inode for a node id the kernel sent.
    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.maps.lock().by_id.get(&id).cloned()
    }

    /// The root inode.
    pub fn root(&self) -> Arc<Inode> {
        self.root.clone()
    }

    /// An `O_PATH` descriptor of the inode: pinned, cached, or reopened from its handle.
    pub fn fd(&self, inode: &Inode) -> std::io::Result<PathFd> {
        if let Some(p) = &inode.pinned {
            return Ok(p.clone());
        }
        if let Some(fd) = self.fds.lock().get(&inode.id) {
            return Ok(fd.clone());
        }
        let handle = inode
            .handle
            .as_deref()
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ESTALE))?;
        let fd = sys::open_by_handle(self.mount_fd.as_fd(), handle, libc::O_PATH | libc::O_NOFOLLOW)?;
        let st = sys::fstat(fd.as_fd())?;
        if (st.st_dev, st.st_ino) != inode.key {
            return Err(std::io::Error::from_raw_os_error(libc::ESTALE));
        }
        let fd = Arc::new(fd);
        self.fds.lock().put(inode.id, fd.clone());
        Ok(fd)
    }

    /// Registers a lookup of the backing inode behind `fd` (which was just opened O_PATH and
    /// stat'ed as `st`): returns the known inode with its lookup count raised, or a new one.
    pub fn lookup_insert(&self, fd: OwnedFd, st: &sys::Stat) -> Arc<Inode> {
        let key = (st.st_dev, st.st_ino);
        let mut maps = self.maps.lock();
        if let Some(id) = maps.by_key.get(&key) {
            let ino = maps.by_id[id].clone();
            ino.lookups.fetch_add(1, Ordering::Relaxed);
            if ino.pinned.is_none() {
                // Keep the fresh descriptor: it is likely to be used right away.
                self.fds.lock().put(ino.id, Arc::new(fd));
            }
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
        // Symlinks and special files are rare and cheap to keep; a handle is taken for files
        // and directories.
        let handle = if self.use_handles {
            sys::name_to_handle(fd.as_fd()).ok().map(Vec::into_boxed_slice)
        } else {
            None
        };
        let fd = Arc::new(fd);
        let pinned = if handle.is_some() { None } else { Some(fd.clone()) };
        let ino = Arc::new(Inode {
            id,
            key,
            fmt: st.st_mode & libc::S_IFMT,
            handle,
            pinned,
            lookups: AtomicU64::new(1),
            data: FileData::default(),
            diriv: std::sync::OnceLock::new(),
        });
        if ino.pinned.is_none() {
            self.fds.lock().put(id, fd);
        }
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
        let Some(ino) = maps.by_id.get(&id) else { return };
        let prev = ino
            .lookups
            .fetch_sub(n.min(ino.lookups.load(Ordering::Relaxed)), Ordering::Relaxed);
        if prev <= n {
            let key = ino.key;
            maps.by_id.remove(&id);
            maps.by_key.remove(&key);
            self.fds.lock().pop(&id);
        }
    }

    /// A snapshot of every known inode (for cache invalidation and shutdown).
    pub fn all(&self) -> Vec<Arc<Inode>> {
        self.maps.lock().by_id.values().cloned().collect()
    }
}
