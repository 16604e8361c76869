//! What the kernel is shown of a backing inode: its `stat` turned into a FUSE [`FileAttr`]
//! (plaintext size for regular files), and the mount's root shown as [`RootAttr`] says.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

use super::inode::{Inode, ROOT_ID};
use super::{io, CmkFs, R};
use crate::store::root::RootAttr;
use crate::sys;
use std::os::fd::AsFd;

impl CmkFs {
    /// The attributes the kernel sees: the backing inode's, with the root directory shown as
    /// [`ROOT_ATTR`] says.
    pub(super) fn attr(&self, id: u64, st: &sys::Stat) -> FileAttr {
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

    /// Whether chmod/chown of inode `i` change how the mount's root is shown rather than the
    /// private cipher root (the root, once it has a [`ROOT_ATTR`]).
    pub(super) fn shows_root_attr(&self, i: &Inode) -> bool {
        i.id == ROOT_ID && self.root_attr.lock().is_some()
    }

    /// chmod/chown of the mount's root change how it is shown, not the private cipher root.
    pub(super) fn set_root_attr(&self, i: &Inode, mode: Option<u32>, uid: Option<u32>, gid: Option<u32>) -> R<()> {
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
}

/// A backing `stat` as FUSE attributes of node `id`: the plaintext size for regular files
/// (by the volume's `layout`), everything else as is.
pub(super) fn attr(layout: crate::format::Layout, id: u64, st: &sys::Stat) -> FileAttr {
    let kind = file_type(st.st_mode);
    let size = if kind == FileType::RegularFile {
        layout.plain_size(st.st_size as u64)
    } else if kind == FileType::Symlink && layout == crate::format::Layout::V3 {
        // Format 3 symlink targets are sealed: show the plaintext target's length.
        crate::format::names::symlink_plain_len(st.st_size as u64)
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

/// The file type of a directory entry (`d_type`).
pub(super) fn dt_type(dt: u8) -> FileType {
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

/// A time from setattr as the `timespec` utimensat wants (UTIME_OMIT when not set).
pub(super) fn to_timespec(t: Option<TimeOrNow>) -> libc::timespec {
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
