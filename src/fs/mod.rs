//! The FUSE filesystem: plaintext view of a cipher directory.
//!
//! Structure: [`inode`] maps FUSE node ids to backing inodes (held by `O_PATH` descriptors),
//! [`data`] is the encrypted content path of a regular file; [`crate::sys`] wraps the syscalls.
//! This module translates FUSE requests into those, one small method per operation, each
//! returning `Result<_, Errno>`; the `fuser::Filesystem` impl at the bottom only replies.
//!
//! Metadata (names, modes, owners, times, links) lives in the backing filesystem as is; the
//! kernel checks permissions (`default_permissions`). File content and extended attribute
//! values are encrypted. Sizes shown are plaintext sizes.

pub mod data;
pub mod inode;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use crate::access::Access;
use crate::format::volume_header::is_reserved_root_name;
use crate::format::layout::WriterStamps;
use crate::sys;
use data::MountData;
use inode::{Inode, InodeTable, ROOT_ID};

/// How long the kernel may cache attributes and entries. Everything changes only through
/// this mount, so a short positive TTL is safe and saves a round trip per stat.
const TTL: Duration = Duration::from_secs(1);
/// Largest write request; the kernel caps it at max_pages (256 pages = 1 MiB here).
pub const MAX_WRITE: u32 = 1 << 20;

enum Handle {
    File {
        inode: Arc<Inode>,
        flags: i32,
    },
    Dir {
        inode: Arc<Inode>,
        fd: OwnedFd,
        entries: Mutex<Option<Arc<Vec<sys::DirEntry>>>>,
    },
}

/// The mounted filesystem.
pub struct CmkFs {
    root: std::path::PathBuf,
    inodes: Arc<InodeTable>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
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

/// The extended attribute of the cipher root that holds how the mount's root directory is
/// shown: `"MODE UID GID"` (octal mode). The cipher root itself stays private (0700, see
/// `cmkfs init`) while the mount's root can be 0755, owned by a service user, and changed with
/// chmod/chown through the mount as usual. Without it, the cipher root's own attributes are
/// shown. Not encrypted (modes are metadata, in clear like every other mode), and hidden from
/// the plaintext view's xattrs.
pub const ROOT_ATTR: &str = "user.cmkfs.root";

/// How the mount's root is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootAttr {
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl RootAttr {
    /// Parses the attribute's value.
    pub fn parse(v: &[u8]) -> Option<RootAttr> {
        let s = std::str::from_utf8(v).ok()?;
        let mut it = s.split_ascii_whitespace();
        let mode = u32::from_str_radix(it.next()?, 8).ok()? & 0o7777;
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        Some(RootAttr { mode, uid, gid })
    }
    /// The attribute's value.
    pub fn encode(&self) -> String {
        format!("{:o} {} {}", self.mode, self.uid, self.gid)
    }
    /// Reads it from the cipher root.
    pub fn read(root: std::os::fd::BorrowedFd<'_>) -> Option<RootAttr> {
        let mut buf = [0u8; 64];
        let n = sys::getxattr(root, &sys::cstr(OsStr::new(ROOT_ATTR)).ok()?, &mut buf).ok()?;
        RootAttr::parse(&buf[..n])
    }
    /// Stores it on the cipher root.
    pub fn write(&self, root: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
        sys::setxattr(root, &sys::cstr(OsStr::new(ROOT_ATTR))?, self.encode().as_bytes(), 0)
    }
}

type R<T> = Result<T, Errno>;

/// Who asked, as far as clearing set-ID bits needs to know (FUSE passes uid, primary gid and
/// pid; supplementary groups are read from /proc when needed).
#[derive(Clone, Copy)]
struct Caller {
    uid: u32,
    gid: u32,
    pid: u32,
}

impl Caller {
    fn of(req: &Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }
}

fn io(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dt_type(dt: u8) -> FileType {
    match dt {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new((-sec) as u64, 0) + Duration::from_nanos(nsec as u64)
    }
}

fn to_timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut n) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if n < 0 {
                    s -= 1;
                    n += 1_000_000_000;
                }
                libc::timespec { tv_sec: s, tv_nsec: n }
            }
        },
    }
}

fn attr(layout: crate::format::Layout, id: u64, st: &sys::Stat) -> FileAttr {
    let kind = file_type(st.st_mode);
    let size = if kind == FileType::RegularFile {
        layout.plain_size(st.st_size as u64)
    } else {
        st.st_size as u64
    };
    FileAttr {
        ino: INodeNo(id),
        size,
        blocks: st.st_blocks as u64,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind,
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// Whether a name may be used in `parent`: the volume header's names are reserved in the root.
fn check_name(parent: &Inode, name: &OsStr) -> R<()> {
    if parent.id == ROOT_ID && is_reserved_root_name(name.as_bytes()) {
        return Err(Errno::EPERM);
    }
    Ok(())
}

fn xattr_allowed(id: u64, name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"user.") && !(id == ROOT_ID && name.as_bytes() == ROOT_ATTR.as_bytes())
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
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            access,
            // Opt-in: with it, a write acknowledged into the page cache can still be dirty when
            // revocation closes the gate, and its write-back is then refused (the revocation test
            // caught an acknowledged write lost that way). Off until the drain handles it.
            writeback_cache: std::env::var_os("CMKFS_WRITEBACK_CACHE").is_some_and(|v| v == "1"),
            notifier: Arc::new(std::sync::OnceLock::new()),
            as_root: crate::util::is_root(),
        })
    }

    /// A handle for dropping cached keys from outside the FUSE session (revocation).
    pub fn cache_control(&self) -> CacheControl {
        CacheControl {
            inodes: self.inodes.clone(),
            root: self.root.clone(),
            notifier: self.notifier.clone(),
            mount_data: self.mount_data.clone(),
        }
    }

    /// An `O_PATH` descriptor for an inode (see [`inode::InodeTable::fd`]).
    fn pfd(&self, i: &Inode) -> R<inode::PathFd> {
        self.inodes.fd(i).map_err(io)
    }

    fn inode(&self, ino: INodeNo) -> R<Arc<Inode>> {
        self.inodes.get(ino.0).ok_or(Errno::ESTALE)
    }

    fn handle(&self, fh: FileHandle) -> R<Arc<Handle>> {
        self.handles.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(h));
        FileHandle(fh)
    }

    fn file_handle(&self, fh: FileHandle) -> R<(Arc<Inode>, i32)> {
        match &*self.handle(fh)? {
            Handle::File { inode, flags } => Ok((inode.clone(), *flags)),
            Handle::Dir { .. } => Err(Errno::EISDIR),
        }
    }

    /// Runs `f` with the file open for writing (for truncate without a handle).
    fn with_open<T>(&self, inode: &Inode, f: impl FnOnce(&data::FileData) -> R<T>) -> R<T> {
        inode.data.open(self.pfd(inode)?.as_fd(), &*self.access.keys()?, &self.mount_data, true)?;
        let r = f(&inode.data);
        inode.data.release();
        r
    }

    fn lookup_fd(&self, fd: OwnedFd) -> R<(Arc<Inode>, FileAttr)> {
        let st = sys::fstat(fd.as_fd()).map_err(io)?;
        let inode = self.inodes.lookup_insert(fd, &st);
        let a = self.attr(inode.id, &st);
        Ok((inode, a))
    }

    /// The attributes the kernel sees: the backing inode's, with the root directory shown as
    /// [`ROOT_ATTR`] says.
    fn attr(&self, id: u64, st: &sys::Stat) -> FileAttr {
        let mut a = attr(self.layout, id, st);
        if id == ROOT_ID {
            if let Some(r) = *self.root_attr.lock() {
                a.perm = r.mode as u16;
                a.uid = r.uid;
                a.gid = r.gid;
            }
        }
        a
    }

    /// chmod/chown of the mount's root change how it is shown, not the private cipher root.
    fn set_root_attr(&self, i: &Inode, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>) -> R<()> {
        let mut cur = self.root_attr.lock();
        let st = sys::fstat(self.pfd(i)?.as_fd()).map_err(io)?;
        let base = cur.unwrap_or(RootAttr {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        });
        let new = RootAttr {
            mode: mode.map(|m| m & 0o7777).unwrap_or(base.mode),
            uid: uid.unwrap_or(base.uid),
            gid: gid.unwrap_or(base.gid),
        };
        new.write(self.pfd(i)?.as_fd()).map_err(io)?;
        *cur = Some(new);
        Ok(())
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

    fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> R<FileAttr> {
        self.access.check()?;
        // Test hook, debug builds only: proves that a panicking handler answers EIO and the
        // mount stays up (tests/bad_input.rs).
        #[cfg(debug_assertions)]
        if std::env::var_os("CMKFS_TEST_PANIC_ON_LOOKUP").is_some_and(|n| n == name) {
            panic!("test panic requested for lookup of {name:?}");
        }
        let p = self.inode(parent)?;
        if p.id == ROOT_ID && is_reserved_root_name(name.as_bytes()) {
            return Err(Errno::ENOENT);
        }
        let fd = open_child(self.pfd(&p)?.as_fd(), name)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    fn do_getattr(&self, ino: INodeNo) -> R<FileAttr> {
        // The root stays visible (unmounting needs it); everything else is refused while
        // the volume is Inaccessible.
        if ino.0 != ROOT_ID {
            self.access.check()?;
        }
        let i = self.inode(ino)?;
        Ok(self.attr(i.id, &sys::fstat(self.pfd(&i)?.as_fd()).map_err(io)?))
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
        caller: Caller,
    ) -> R<FileAttr> {
        self.access.check()?;
        let i = self.inode(ino)?;
        if i.id == ROOT_ID && self.root_attr.lock().is_some() && (mode.is_some() || uid.is_some() || gid.is_some()) {
            self.set_root_attr(&i, mode, uid, gid)?;
        } else if uid.is_some() || gid.is_some() {
            sys::chown_fd(self.pfd(&i)?.as_fd(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)).map_err(io)?;
        }
        if let (Some(m), false) = (mode, i.id == ROOT_ID && self.root_attr.lock().is_some()) {
            sys::chmod_fd(self.pfd(&i)?.as_fd(), m & 0o7777).map_err(io)?;
        }
        if let Some(sz) = size {
            if i.is_dir() {
                return Err(Errno::EISDIR);
            }
            if !i.is_file() {
                return Err(Errno::EINVAL);
            }
            let via_handle = fh.and_then(|fh| self.file_handle(fh).ok()).is_some() && i.data.is_open();
            let keys = self.access.keys()?;
            if via_handle {
                i.data.truncate(&keys, sz)?;
            } else {
                self.with_open(&i, |d| d.truncate(&keys, sz))?;
            }
            // A truncate by an unprivileged process clears set-ID bits (FUSE_HANDLE_KILLPRIV_V2
            // leaves this to us, and fuser does not pass FATTR_KILL_SUIDGID: uid 0 stands in for
            // CAP_FSETID). A mode set in the same call wins.
            if caller.uid != 0 && mode.is_none() {
                self.kill_suidgid(&i, caller)?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            sys::utimens_fd(self.pfd(&i)?.as_fd(), &[to_timespec(atime), to_timespec(mtime)]).map_err(io)?;
        }
        Ok(self.attr(i.id, &sys::fstat(self.pfd(&i)?.as_fd()).map_err(io)?))
    }

    fn do_mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, rdev: u32) -> R<FileAttr> {
        self.access.check()?;
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        let c = sys::cstr(name).map_err(io)?;
        sys::mknodat(self.pfd(&p)?.as_fd(), &c, mode, rdev as libc::dev_t).map_err(io)?;
        let fd = open_child(self.pfd(&p)?.as_fd(), name)?;
        self.set_owner(req, &p, &fd, mode)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    fn do_mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32) -> R<FileAttr> {
        self.access.check()?;
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        sys::mkdirat(self.pfd(&p)?.as_fd(), &sys::cstr(name).map_err(io)?, mode & 0o7777).map_err(io)?;
        let fd = open_child(self.pfd(&p)?.as_fd(), name)?;
        self.set_owner(req, &p, &fd, libc::S_IFDIR | mode)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    fn do_symlink(&self, req: &Request, parent: INodeNo, name: &OsStr, target: &Path) -> R<FileAttr> {
        self.access.check()?;
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        sys::symlinkat(
            &sys::cstr(target.as_os_str()).map_err(io)?,
            self.pfd(&p)?.as_fd(),
            &sys::cstr(name).map_err(io)?,
        )
        .map_err(io)?;
        let fd = open_child(self.pfd(&p)?.as_fd(), name)?;
        self.set_owner(req, &p, &fd, libc::S_IFLNK)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    fn do_remove(&self, parent: INodeNo, name: &OsStr, flags: i32) -> R<()> {
        self.access.check()?;
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        sys::unlinkat(self.pfd(&p)?.as_fd(), &sys::cstr(name).map_err(io)?, flags).map_err(io)
    }

    fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> R<()> {
        self.access.check()?;
        let p = self.inode(parent)?;
        let np = self.inode(newparent)?;
        check_name(&p, name)?;
        check_name(&np, newname)?;
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        sys::renameat2(
            self.pfd(&p)?.as_fd(),
            &sys::cstr(name).map_err(io)?,
            self.pfd(&np)?.as_fd(),
            &sys::cstr(newname).map_err(io)?,
            flags.bits(),
        )
        .map_err(io)
    }

    fn do_link(&self, ino: INodeNo, newparent: INodeNo, newname: &OsStr) -> R<FileAttr> {
        self.access.check()?;
        let i = self.inode(ino)?;
        let np = self.inode(newparent)?;
        check_name(&np, newname)?;
        sys::link_fd(
            self.pfd(&i)?.as_fd(),
            self.pfd(&np)?.as_fd(),
            &sys::cstr(newname).map_err(io)?,
        )
        .map_err(io)?;
        let fd = open_child(self.pfd(&np)?.as_fd(), newname)?;
        Ok(self.lookup_fd(fd)?.1)
    }

    fn open_flags(flags: i32) -> FopenFlags {
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

    fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> R<(FileHandle, FopenFlags)> {
        let i = self.inode(ino)?;
        if !i.is_file() {
            return Err(if i.is_dir() { Errno::EISDIR } else { Errno::EINVAL });
        }
        let want_write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let keys = self.access.keys()?;
        i.data.open(self.pfd(&i)?.as_fd(), &keys, &self.mount_data, want_write)?;
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
        let fh = self.add_handle(Handle::File {
            inode: i,
            flags: flags.0,
        });
        Ok((fh, Self::open_flags(flags.0)))
    }

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> R<(FileAttr, FileHandle, FopenFlags)> {
        let keys = self.access.keys()?;
        let p = self.inode(parent)?;
        check_name(&p, name)?;
        let c = sys::cstr(name).map_err(io)?;
        let created = sys::openat(
            self.pfd(&p)?.as_fd(),
            &c,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW,
            mode & 0o7777,
        );
        let (fd, new) = match created {
            Ok(fd) => (fd, true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {
                (open_child(self.pfd(&p)?.as_fd(), name)?, false)
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
        if let Err(e) = inode.data.open(self.pfd(&inode)?.as_fd(), &keys, &self.mount_data, want_write || new) {
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
        let fh = self.add_handle(Handle::File { inode, flags });
        Ok((a, fh, Self::open_flags(flags)))
    }

    fn do_write(&self, fh: FileHandle, offset: u64, data: &[u8], kill_suidgid: Option<Caller>) -> R<u32> {
        let (i, flags) = self.file_handle(fh)?;
        if let Some(caller) = kill_suidgid {
            self.kill_suidgid(&i, caller)?;
        }
        let n = i.data.write(&*self.access.keys_for_write()?, offset, data)?;
        if flags & (libc::O_SYNC | libc::O_DSYNC) != 0 {
            i.data.sync(flags & libc::O_SYNC != libc::O_SYNC)?;
        }
        Ok(n as u32)
    }

    /// Clears the set-ID bits a write or truncate by a process without CAP_FSETID must
    /// clear, by the kernel's rule (`setattr_should_drop_suidgid`): set-user-ID always;
    /// set-group-ID if group execute is set or the caller is not in the file's group.
    /// FUSE_HANDLE_KILLPRIV_V2 leaves this to us, and our own writes to the backing file run
    /// as root, which would keep the bits.
    fn kill_suidgid(&self, i: &Inode, caller: Caller) -> R<()> {
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

    fn do_release(&self, fh: FileHandle) {
        if let Some(h) = self.handles.lock().remove(&fh.0) {
            if let Handle::File { inode, .. } = &*h {
                inode.data.release();
            }
        }
    }

    fn do_fsync(&self, fh: FileHandle, datasync: bool) -> R<()> {
        self.access.check()?;
        match &*self.handle(fh)? {
            Handle::File { inode, .. } => inode.data.fsync(datasync),
            Handle::Dir { fd, .. } => {
                sys::fsync(fd.as_fd()).map_err(io)
            }
        }
    }

    fn do_opendir(&self, ino: INodeNo) -> R<FileHandle> {
        self.access.check()?;
        let i = self.inode(ino)?;
        let fd = sys::openat(self.pfd(&i)?.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(io)?;
        Ok(self.add_handle(Handle::Dir {
            inode: i,
            fd,
            entries: Mutex::new(None),
        }))
    }

    fn dir_entries(&self, fh: FileHandle, offset: u64) -> R<(u64, Arc<Vec<sys::DirEntry>>)> {
        self.access.check()?;
        let h = self.handle(fh)?;
        let Handle::Dir { inode, entries, .. } = &*h else {
            return Err(Errno::ENOTDIR);
        };
        let mut e = entries.lock();
        if offset == 0 || e.is_none() {
            let fd = sys::openat(self.pfd(inode)?.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0).map_err(io)?;
            let mut list = sys::read_dir(fd).map_err(io)?;
            if inode.id == ROOT_ID {
                list.retain(|d| !is_reserved_root_name(&d.name));
            }
            *e = Some(Arc::new(list));
        }
        Ok((inode.id, e.clone().unwrap()))
    }

    fn do_statfs(&self) -> R<sys::StatVfs> {
        sys::statvfs(self.pfd(&self.inodes.root())?.as_fd()).map_err(io)
    }

    fn xattr_aad(name: &OsStr) -> Vec<u8> {
        crate::format::xattr_aad(name.as_bytes())
    }

    fn do_getxattr(&self, ino: INodeNo, name: &OsStr) -> R<Vec<u8>> {
        let keys = self.access.keys()?;
        let i = self.inode(ino)?;
        if !xattr_allowed(i.id, name) {
            return Err(Errno::NO_XATTR);
        }
        let c = sys::cstr(name).map_err(io)?;
        let mut buf = vec![0u8; 65536];
        let fd = self.pfd(&i)?;
        let n = sys::getxattr(fd.as_fd(), &c, &mut buf).map_err(io)?;
        buf.truncate(n);
        let plain = keys.xattr().open_message(&Self::xattr_aad(name), &buf).map_err(|_| {
            tracing::error!(file = %data::describe(fd.as_fd()), xattr = %name.to_string_lossy(), "extended attribute failed authentication; returning EIO");
            Errno::EIO
        })?;
        Ok(plain.to_vec())
    }

    fn do_setxattr(&self, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32) -> R<()> {
        self.access.check()?;
        let i = self.inode(ino)?;
        if !xattr_allowed(i.id, name) {
            return Err(if name.as_bytes().starts_with(b"user.") {
                Errno::EPERM
            } else {
                Errno::EOPNOTSUPP
            });
        }
        let sealed = self.access.keys()?.xattr().seal_message(&Self::xattr_aad(name), value);
        sys::setxattr(self.pfd(&i)?.as_fd(), &sys::cstr(name).map_err(io)?, &sealed, flags).map_err(io)
    }

    fn do_listxattr(&self, ino: INodeNo) -> R<Vec<u8>> {
        self.access.check()?;
        let i = self.inode(ino)?;
        let list = sys::listxattr(self.pfd(&i)?.as_fd()).map_err(io)?;
        let mut out = vec![];
        for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if xattr_allowed(i.id, OsStr::from_bytes(n)) {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        Ok(out)
    }

    fn do_removexattr(&self, ino: INodeNo, name: &OsStr) -> R<()> {
        self.access.check()?;
        let i = self.inode(ino)?;
        if !xattr_allowed(i.id, name) {
            return Err(Errno::NO_XATTR);
        }
        sys::removexattr(self.pfd(&i)?.as_fd(), &sys::cstr(name).map_err(io)?).map_err(io)
    }
}

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
                if cur.id == ROOT_ID && is_reserved_root_name(name.as_bytes()) {
                    return Err(format!("{}: no such file", rel.display()));
                }
                let fd = open_child(self.inodes.fd(&cur).map_err(|e| e.to_string())?.as_fd(), name).map_err(errs)?;
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
            let root = crate::volume::CipherRoot::open(&self.root).map_err(|e| e.to_string())?;
            cur.data
                .open(self.inodes.fd(&cur).map_err(|e| e.to_string())?.as_fd(), keys, &self.mount_data, true)
                .map_err(errs)?;
            let r = cur.data.rekey(keys, &root);
            cur.data.release();
            r.map_err(errs)
        })();
        for id in taken {
            self.inodes.forget(id, 1);
        }
        res
    }

    /// Drops every cached file DEK. Waits for operations in flight on each file.
    pub fn drop_keys(&self) {
        for i in self.inodes.all() {
            i.data.drop_keys();
        }
    }
}

/// Opens `parent/name` as O_PATH without following a final symlink.
fn open_child(parent: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> R<OwnedFd> {
    sys::openat(
        parent,
        &sys::cstr(name).map_err(io)?,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
    .map_err(io)
}

/// How many O_PATH descriptors the inode table may cache: a quarter of the descriptor limit
/// (the rest is for open files and directories), at most 100,000.
fn fd_cache_size() -> usize {
    let lim = sys::process::nofile_limit().map_or(usize::MAX, |n| n as usize);
    (lim / 4).clamp(64, 100_000)
}

/// Runs a handler, turning a panic into EIO so that one bad request never takes the mount
/// down (fuser's event loop would otherwise end with the panicking thread).
fn guard<T>(op: &'static str, f: impl FnOnce() -> R<T>) -> R<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(op, "handler panicked; answered EIO, mount stays up");
            Err(Errno::EIO)
        }
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: R<Vec<u8>>) {
    match data {
        Ok(d) if size == 0 => reply.size(d.len() as u32),
        Ok(d) if d.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(d) => reply.data(&d),
        Err(e) => reply.error(e),
    }
}

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
        if std::env::var_os("CMKFS_NO_KILLPRIV").is_none() {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        }
        // Writeback cache (opt-in, CMKFS_WRITEBACK_CACHE=1): small writes land in the kernel
        // page cache and reach us as large page-aligned flushes. Not the default: it breaks the
        // "no acknowledged write lost" promise of revocation (see `writeback_cache` above).
        if self.writeback_cache {
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match guard("lookup", || self.do_lookup(parent, name)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match guard("getattr", || self.do_getattr(ino)) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
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
        match guard("setattr", || {
            self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh, Caller::of(req))
        }) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match guard("readlink", || {
            sys::readlink(self.pfd(&*self.inode(ino)?)?.as_fd()).map_err(io)
        }) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
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
        match guard("mknod", || self.do_mknod(req, parent, name, mode, rdev)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        match guard("mkdir", || self.do_mkdir(req, parent, name, mode)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("unlink", || self.do_remove(parent, name, 0)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("rmdir", || self.do_remove(parent, name, libc::AT_REMOVEDIR)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        match guard("symlink", || self.do_symlink(req, parent, link_name, target)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
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
        match guard("rename", || self.do_rename(parent, name, newparent, newname, flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match guard("link", || self.do_link(ino, newparent, newname)) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match guard("open", || self.do_open(ino, flags)) {
            Ok((fh, f)) => reply.opened(fh, f),
            Err(e) => reply.error(e),
        }
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
        match guard("read", || {
            let keys = self.access.keys()?;
            self.file_handle(fh)?.0.data.read(&keys, offset, size)
        }) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
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
        match guard("write", || self.do_write(fh, offset, data, kill)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: ReplyEmpty) {
        // Writes reach the backing file before they are acknowledged; nothing is buffered.
        reply.ok();
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
        let _ = guard("release", || {
            self.do_release(fh);
            Ok(())
        });
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        match guard("fsync", || self.do_fsync(fh, datasync)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match guard("opendir", || self.do_opendir(ino)) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match guard("readdir", || self.dir_entries(fh, offset)) {
            Ok((dir_id, entries)) => {
                for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                    let ino = if e.name == b"." { dir_id } else { e.ino };
                    if reply.add(
                        INodeNo(ino),
                        (i + 1) as u64,
                        dt_type(e.kind),
                        OsStr::from_bytes(&e.name),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        match guard("fsyncdir", || self.do_fsync(fh, datasync)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match guard("statfs", || self.do_statfs()) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

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
        match guard("setxattr", || self.do_setxattr(ino, name, value, flags)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, guard("getxattr", || self.do_getxattr(ino, name)));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, guard("listxattr", || self.do_listxattr(ino)));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match guard("removexattr", || self.do_removexattr(ino, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (default_permissions).
        match self.access.check() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        match guard("create", || self.do_create(req, parent, name, mode, flags)) {
            Ok((a, fh, f)) => reply.created(&TTL, &a, Generation(0), fh, f),
            Err(e) => reply.error(e),
        }
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
        match guard("fallocate", || {
            self.file_handle(fh)?
                .0
                .data
                .fallocate(&*self.access.keys()?, mode, offset, length)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        match guard("lseek", || {
            if offset < 0 {
                return Err(Errno::ENXIO);
            }
            self.access.check()?;
            let (i, _) = self.file_handle(fh)?;
            // With the writeback cache, data may still be dirty in the kernel's page cache,
            // invisible in the backing file: have the kernel write this inode back first.
            if self.writeback_cache && (whence == libc::SEEK_DATA || whence == libc::SEEK_HOLE) {
                if let Some(n) = self.notifier.get() {
                    let _ = n.inval_inode(INodeNo(i.id), 0, 0);
                }
            }
            i.data.seek(offset as u64, whence)
        }) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(e),
        }
    }
}
