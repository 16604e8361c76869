//! The control plane of a mounted filesystem: not FUSE operations, but what the daemon's
//! other threads call on it through a [`CacheControl`] (from [`CmkFs::cache_control`]):
//! revalidation drops cached keys and invalidates the kernel's caches of every known inode,
//! and the control socket rekeys a file while the volume stays mounted.
//!
//! [`CmkFs::cache_control`]: super::CmkFs::cache_control

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use fuser::Errno;

use super::data::MountData;
use super::inode::InodeTable;
use crate::sys;

/// Lets the daemon's other threads (revalidation, control socket) reach the filesystem's
/// caches and files without its internals.
#[derive(Clone)]
pub struct CacheControl {
    inodes: Arc<InodeTable>,
    root: std::path::PathBuf,
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    mount_data: Arc<MountData>,
}

impl CacheControl {
    pub(super) fn new(
        inodes: Arc<InodeTable>,
        root: std::path::PathBuf,
        notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
        mount_data: Arc<MountData>,
    ) -> Self {
        CacheControl {
            inodes,
            root,
            notifier,
            mount_data,
        }
    }

    /// Gives the filesystem the session's notifier (available only once mounted).
    pub fn set_notifier(&self, n: fuser::Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Node ids the kernel currently references (whose page cache may hold plaintext).
    pub fn inode_ids(&self) -> Vec<u64> {
        self.inodes.all().iter().map(|i| i.id).collect()
    }

    /// Rekeys the regular file at `rel` (relative to the volume root; no `..`, no symlinks):
    /// new DEK and file id, content re-encrypted, crash-safe, while the volume stays mounted.
    /// The file is reached through the inode table, so concurrent FUSE operations on it wait.
    pub fn rekey(&self, keys: &crate::format::VolumeKeys, rel: &Path) -> Result<u64, String> {
        use std::path::Component;
        let errs = |e: Errno| format!("{}: {}", rel.display(), std::io::Error::from_raw_os_error(e.code()));
        let mut cur = self.inodes.root();
        let comps: Vec<_> = rel.components().collect();
        if comps.is_empty() || comps.iter().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("{}: not a plain path inside the volume", rel.display()));
        }
        let mut taken = vec![];
        let res = (|| {
            for (i, c) in comps.iter().enumerate() {
                let name = c.as_os_str();
                let pfd = self.inodes.fd(&cur).map_err(|e| e.to_string())?;
                let r = super::names::resolve(keys, &cur, pfd.as_fd(), name, Errno::ENOENT).map_err(errs)?;
                let fd = super::names::open_resolved(pfd.as_fd(), &r).map_err(errs)?;
                let st = sys::fstat(fd.as_fd()).map_err(|e| e.to_string())?;
                let next = self.inodes.lookup_insert(fd, &st);
                taken.push(next.id);
                if i + 1 < comps.len() && !next.is_dir() {
                    return Err(format!("{}: not a directory on the way", rel.display()));
                }
                cur = next;
            }
            if !cur.is_file() {
                return Err(format!("{}: not a regular file", rel.display()));
            }
            let root = crate::store::root::CipherRoot::open(&self.root).map_err(|e| e.to_string())?;
            cur.data
                .open(
                    self.inodes.fd(&cur).map_err(|e| e.to_string())?.as_fd(),
                    keys,
                    &self.mount_data,
                    true,
                )
                .map_err(errs)?;
            let fd = self.inodes.fd(&cur).map_err(|e| e.to_string())?;
            let old_id = match keys.names() {
                Some(_) => cur
                    .data
                    .file_id(fd.as_fd(), keys, &self.mount_data, false)
                    .map_err(errs)?,
                None => None,
            };
            let r = cur.data.rekey(keys, &root);
            // Format 3: the file's xattr values are bound to its id, which the rekey replaced.
            if let (Ok(_), Some(nk), Some(old)) = (&r, keys.names(), old_id) {
                let new = cur
                    .data
                    .file_id(fd.as_fd(), keys, &self.mount_data, false)
                    .map_err(errs)?;
                if let Some(new) = new {
                    super::names::reseal_xattrs(nk, fd.as_fd(), &old, &new).map_err(|e| e.to_string())?;
                }
            }
            cur.data.release();
            r.map_err(errs)
        })();
        for id in taken {
            self.inodes.forget(id, 1);
        }
        res
    }

    /// The mount's data-path counters.
    pub fn io_stats(&self) -> &super::data::IoStats {
        &self.mount_data.stats
    }

    /// Drops every cached file DEK. Waits for operations in flight on each file.
    pub fn drop_keys(&self) {
        for i in self.inodes.all() {
            i.data.drop_keys();
        }
    }
}
