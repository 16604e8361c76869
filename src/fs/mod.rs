//! The FUSE filesystem: plaintext view of a cipher directory.
//!
//! A request reads top to bottom through these files:
//! - `ops`: the `fuser::Filesystem` impl, one line per operation: which access gate it
//!   passes, which method answers it, how the answer is replied (`reply`: the panic guard
//!   and the reply of each answer type). The methods are grouped by family:
//!   `ops::entry` (names: lookup, mknod, mkdir, create, symlink, link, unlink, rmdir, rename),
//!   `ops::attr` (getattr, setattr with truncate and set-ID bit clearing, statfs),
//!   `ops::file` (open, read, write, fsync, release, fallocate, lseek),
//!   `ops::dir` (opendir, readdir) and `ops::xattr`.
//! - [`inode`] maps FUSE node ids to backing inodes (held by `O_PATH` descriptors),
//!   `handles` maps FUSE file handles to open files and directories.
//! - [`data`] is the encrypted content path of a regular file (it plans with
//!   [`crate::format`](mod@crate::format) and does the I/O through [`crate::store`]).
//! - `attrs` turns a backing `stat` into what the kernel is shown, including how the
//!   mount's root is shown ([`RootAttr`]).
//! - `control` ([`CacheControl`]) is not a FUSE operation: it is what the daemon's other threads
//!   (revalidation, the control socket) call on the mounted filesystem.
//! - [`crate::sys`] wraps the syscalls.
//!
//! Metadata (names, modes, owners, times, links) lives in the backing filesystem as is; the
//! kernel checks permissions (`default_permissions`). File content and extended attribute
//! values are encrypted. Sizes shown are plaintext sizes.

mod attrs;
mod control;
pub mod data;
mod handles;
pub mod inode;
mod names;
mod ops;
mod reply;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{Errno, FileAttr, INodeNo};
use parking_lot::Mutex;

use crate::access::Access;
use crate::format::layout::WriterStamps;
pub use crate::store::root::{RootAttr, ROOT_ATTR};
use crate::sys;
pub use control::CacheControl;
use data::MountData;
use handles::HandleTable;
use inode::{Inode, InodeTable};

/// How long the kernel may cache attributes and entries. Everything changes only through
/// this mount, so a short positive TTL is safe and saves a round trip per stat.
const TTL: Duration = Duration::from_secs(1);
/// Largest write request; the kernel caps it at max_pages (256 pages = 1 MiB here).
pub const MAX_WRITE: u32 = 1 << 20;

/// The mounted filesystem.
pub struct CmkFs {
    root: std::path::PathBuf,
    inodes: Arc<InodeTable>,
    handles: HandleTable,
    access: Arc<Access>,
    as_root: bool,
    /// The volume's content layout (decides how backing sizes map to plaintext sizes).
    layout: crate::format::Layout,
    /// What the mount's files share: writer session stamps, the bad-block log.
    mount_data: Arc<MountData>,
    writeback_cache: bool,
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// How the mount's root directory is shown (mode, owner, group), when it differs from
    /// the cipher root's own; see [`ROOT_ATTR`].
    root_attr: Mutex<Option<RootAttr>>,
}

/// What every operation returns: a value to reply, or the errno to answer.
type R<T> = Result<T, Errno>;

fn io(e: std::io::Error) -> Errno {
    Errno::from(e)
}

impl CmkFs {
    /// A filesystem over `cipher_dir` with an unlocked volume's keys, writing with the
    /// mount's session `stamps` (see [`crate::store::session`]).
    pub fn new(cipher_dir: &Path, access: Arc<Access>, stamps: WriterStamps) -> std::io::Result<Self> {
        let root = sys::openat(
            sys::cwd(),
            &sys::cstr(cipher_dir.as_os_str())?,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let layout = access
            .keys()
            .map_err(|_| std::io::Error::other("the volume is locked"))?
            .layout();
        let root_attr = RootAttr::read(root.as_fd());
        Ok(CmkFs {
            root: cipher_dir.to_path_buf(),
            root_attr: Mutex::new(root_attr),
            layout,
            mount_data: Arc::new(MountData::new(stamps)),
            inodes: Arc::new(InodeTable::new(root, fd_cache_size())?),
            handles: HandleTable::default(),
            access,
            // Opt-in: with it, a write acknowledged into the page cache can still be dirty when
            // revocation closes the gate, and its write-back is then refused (the revocation test
            // caught an acknowledged write lost that way). Off until the drain handles it.
            writeback_cache: crate::config::env().writeback_cache,
            notifier: Arc::new(std::sync::OnceLock::new()),
            as_root: crate::util::is_root(),
        })
    }

    /// A handle for dropping cached keys from outside the FUSE session (revocation).
    pub fn cache_control(&self) -> CacheControl {
        CacheControl::new(
            self.inodes.clone(),
            self.root.clone(),
            self.notifier.clone(),
            self.mount_data.clone(),
        )
    }

    /// An `O_PATH` descriptor for an inode (see [`inode::InodeTable::fd`]).
    fn pfd(&self, i: &Inode) -> R<inode::PathFd> {
        self.inodes.fd(i).map_err(io)
    }

    /// The inode of a node id the kernel sent; ESTALE if the kernel forgot it.
    fn inode(&self, ino: INodeNo) -> R<Arc<Inode>> {
        self.inodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// Registers the inode behind a freshly opened `O_PATH` descriptor and returns it with the
    /// attributes the kernel is shown.
    fn lookup_fd(&self, fd: OwnedFd) -> R<(Arc<Inode>, FileAttr)> {
        let st = sys::fstat(fd.as_fd()).map_err(io)?;
        let inode = self.inodes.lookup_insert(fd, &st);
        let a = self.attr(inode.id, &st);
        Ok((inode, a))
    }
}

/// How many O_PATH descriptors the inode table may cache: a quarter of the descriptor limit
/// (the rest is for open files and directories), at most 100,000.
fn fd_cache_size() -> usize {
    let lim = sys::process::nofile_limit().map_or(usize::MAX, |n| n as usize);
    (lim / 4).clamp(64, 100_000)
}
