//! What every FUSE operation shares: the access gate, the panic guard, and the reply.
//!
//! [`CmkFs::run`] is the one path from a request to its reply: check the gate ([`Gate`]),
//! run the operation's method under [`guard`], and answer its value or its errno through
//! [`Answer`], which knows how each reply type sends a value.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{
    Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};

use super::attrs::dt_type;
use super::{CmkFs, R, TTL};
use crate::sys;

/// Which check against the volume's access gate ([`crate::access::Access`]) an operation
/// passes before its method runs.
#[derive(Clone, Copy)]
pub(super) enum Gate {
    /// Names and metadata: EACCES unless the volume is Available (`Access::check`).
    Available,
    /// The method applies its own rule: it takes the keys it needs (`Access::keys`, or
    /// `keys_for_write`, which lets the kernel's write-back through while a revocation
    /// drains), or checks later (getattr shows the root regardless, lseek answers ENXIO
    /// first), or needs no keys at all (readlink, statfs, release).
    InMethod,
}

impl CmkFs {
    /// Answers one request: the gate, then `op` under the panic guard, then the reply.
    pub(super) fn run<T, A: Answer<T>>(&self, name: &'static str, gate: Gate, reply: A, op: impl FnOnce() -> R<T>) {
        let res = match gate {
            Gate::Available => self.access.check(),
            Gate::InMethod => Ok(()),
        }
        .and_then(|()| guard(name, op));
        match res {
            Ok(v) => reply.answer(v),
            Err(e) => reply.fail(e),
        }
    }
}

/// Runs a handler, turning a panic into EIO so that one bad request never takes the mount
/// down (fuser's event loop would otherwise end with the panicking thread).
pub(super) fn guard<T>(op: &'static str, f: impl FnOnce() -> R<T>) -> R<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(op, "handler panicked; answered EIO, mount stays up");
            Err(Errno::EIO)
        }
    }
}

/// How a reply type sends an operation's value (and its errno).
pub(super) trait Answer<T> {
    fn answer(self, v: T);
    fn fail(self, e: Errno);
}

macro_rules! answer {
    ($reply:ty, $t:ty, |$r:ident, $v:pat_param| $send:expr) => {
        impl Answer<$t> for $reply {
            fn answer(self, v: $t) {
                let ($r, $v) = (self, v);
                $send
            }
            fn fail(self, e: Errno) {
                self.error(e)
            }
        }
    };
}

answer!(ReplyEntry, FileAttr, |r, a| r.entry(&TTL, &a, Generation(0)));
answer!(ReplyAttr, FileAttr, |r, a| r.attr(&TTL, &a));
answer!(ReplyEmpty, (), |r, ()| r.ok());
answer!(ReplyData, Vec<u8>, |r, d| r.data(&d));
answer!(ReplyOpen, (FileHandle, FopenFlags), |r, (fh, f)| r.opened(fh, f));
answer!(ReplyWrite, u32, |r, n| r.written(n));
answer!(ReplyLseek, u64, |r, o| r.offset(o as i64));
answer!(ReplyCreate, (FileAttr, FileHandle, FopenFlags), |r, (a, fh, f)| r
    .created(&TTL, &a, Generation(0), fh, f));
answer!(ReplyStatfs, sys::StatVfs, |r, s| r.statfs(
    s.f_blocks,
    s.f_bfree,
    s.f_bavail,
    s.f_files,
    s.f_ffree,
    s.f_bsize as u32,
    s.f_namemax as u32,
    s.f_frsize as u32,
));

/// A getxattr/listxattr reply with the buffer size the caller gave: 0 asks for the size only,
/// a value larger than the buffer is ERANGE.
pub(super) struct XattrReply(pub ReplyXattr, pub u32);

impl Answer<Vec<u8>> for XattrReply {
    fn answer(self, d: Vec<u8>) {
        let XattrReply(reply, size) = self;
        if size == 0 {
            reply.size(d.len() as u32)
        } else if d.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&d)
        }
    }
    fn fail(self, e: Errno) {
        self.0.error(e)
    }
}

/// A directory's listing from `offset` on, for a readdir reply.
pub(super) struct DirPage {
    /// The directory's node id (what `.` is shown as).
    pub dir_id: u64,
    /// The whole listing (cached in the handle).
    pub entries: Arc<Vec<sys::DirEntry>>,
    /// Where the kernel asked to continue (entry `i` has offset `i + 1`).
    pub offset: u64,
}

impl Answer<DirPage> for ReplyDirectory {
    fn answer(mut self, p: DirPage) {
        for (i, e) in p.entries.iter().enumerate().skip(p.offset as usize) {
            let ino = if e.name == b"." { p.dir_id } else { e.ino };
            if self.add(
                INodeNo(ino),
                (i + 1) as u64,
                dt_type(e.kind),
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        self.ok();
    }
    fn fail(self, e: Errno) {
        self.error(e)
    }
}
