//! Extended attributes: only `user.*` names, values sealed with the volume's xattr key (the
//! name is the associated data). The root's [`ROOT_ATTR`] is hidden.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo};

use crate::fs::inode::ROOT_ID;
use crate::fs::{data, io, CmkFs, R, ROOT_ATTR};
use crate::sys;

/// Whether the plaintext view shows (and lets callers set) xattr `name` of node `id`.
fn xattr_allowed(id: u64, name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"user.") && !(id == ROOT_ID && name.as_bytes() == ROOT_ATTR.as_bytes())
}

fn xattr_aad(name: &OsStr) -> Vec<u8> {
    crate::format::xattr_aad(name.as_bytes())
}

impl CmkFs {
    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr) -> R<Vec<u8>> {
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
        let plain = keys.xattr().open_message(&xattr_aad(name), &buf).map_err(|_| {
            tracing::error!(file = %data::describe(fd.as_fd()), xattr = %name.to_string_lossy(), "extended attribute failed authentication; returning EIO");
            Errno::EIO
        })?;
        Ok(plain.to_vec())
    }

    pub(super) fn do_setxattr(&self, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32) -> R<()> {
        let i = self.inode(ino)?;
        if !xattr_allowed(i.id, name) {
            return Err(if name.as_bytes().starts_with(b"user.") {
                Errno::EPERM
            } else {
                Errno::EOPNOTSUPP
            });
        }
        let sealed = self.access.keys()?.xattr().seal_message(&xattr_aad(name), value);
        sys::setxattr(self.pfd(&i)?.as_fd(), &sys::cstr(name).map_err(io)?, &sealed, flags).map_err(io)
    }

    /// The NUL-separated names the plaintext view shows.
    pub(super) fn do_listxattr(&self, ino: INodeNo) -> R<Vec<u8>> {
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

    pub(super) fn do_removexattr(&self, ino: INodeNo, name: &OsStr) -> R<()> {
        let i = self.inode(ino)?;
        if !xattr_allowed(i.id, name) {
            return Err(Errno::NO_XATTR);
        }
        sys::removexattr(self.pfd(&i)?.as_fd(), &sys::cstr(name).map_err(io)?).map_err(io)
    }
}
