//! Extended attributes: only `user.*` names. Formats 1 and 2 keep names in clear and seal
//! values with the volume's xattr key (the name is the associated data); the root's
//! [`ROOT_ATTR`] is hidden. Format 3 encrypts names too and binds each value to its file: the
//! file id of a regular file (its header is written first if the file has none yet), the
//! directory IV of a directory (see `format::names`).

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo};

use crate::format::names::NameError;
use crate::format::VolumeKeys;
use crate::fs::inode::{Inode, ROOT_ID};
use crate::fs::{data, io, CmkFs, R, ROOT_ATTR};
use crate::sys;

/// Whether the plaintext view of a format-1/2 volume shows (and lets callers set) xattr
/// `name` of node `id`.
fn xattr_allowed(id: u64, name: &OsStr) -> bool {
    name.as_bytes().starts_with(b"user.") && !(id == ROOT_ID && name.as_bytes() == ROOT_ATTR.as_bytes())
}

fn xattr_aad(name: &OsStr) -> Vec<u8> {
    crate::format::xattr_aad(name.as_bytes())
}

impl CmkFs {
    /// Format 3: what a value of inode `i` is bound to (see the module documentation);
    /// `None` for a regular file without a header when `create` is false (it has no values).
    fn xattr_binding(&self, keys: &VolumeKeys, i: &Inode, create: bool) -> R<Option<[u8; 16]>> {
        if i.is_dir() {
            return self.dir_iv(i).map(Some);
        }
        if !i.is_file() {
            return Err(Errno::EPERM);
        }
        i.data.file_id(self.pfd(i)?.as_fd(), keys, &self.mount_data, create)
    }

    /// Format 3: the backing name of xattr `name`.
    fn backing_xattr_name(keys: &VolumeKeys, name: &OsStr) -> R<CString> {
        let nk = keys.names().expect("format 3");
        match nk.xattr_name(name.as_bytes()) {
            Ok(n) => Ok(CString::new(n).unwrap()),
            Err(NameError::TooLong) => Err(Errno::ERANGE),
            Err(_) => Err(Errno::EOPNOTSUPP),
        }
    }

    pub(super) fn do_getxattr(&self, ino: INodeNo, name: &OsStr) -> R<Vec<u8>> {
        let keys = self.access.keys()?;
        let i = self.inode(ino)?;
        let v3 = keys.names().is_some();
        if !name.as_bytes().starts_with(b"user.") || (!v3 && !xattr_allowed(i.id, name)) {
            return Err(Errno::NO_XATTR);
        }
        let c = if v3 {
            match Self::backing_xattr_name(&keys, name) {
                Ok(c) => c,
                Err(Errno::ERANGE) => return Err(Errno::NO_XATTR),
                Err(e) => return Err(e),
            }
        } else {
            sys::cstr(name).map_err(io)?
        };
        let mut buf = vec![0u8; 65536];
        let fd = self.pfd(&i)?;
        let n = sys::getxattr(fd.as_fd(), &c, &mut buf).map_err(io)?;
        buf.truncate(n);
        let fail = || {
            tracing::error!(file = %data::describe(fd.as_fd()), xattr = %name.to_string_lossy(), "extended attribute failed authentication; returning EIO");
            Errno::EIO
        };
        let plain = match keys.names() {
            None => keys.xattr().open_message(&xattr_aad(name), &buf).map_err(|_| fail())?,
            Some(nk) => {
                let binding = self.xattr_binding(&keys, &i, false)?.ok_or_else(fail)?;
                nk.open_xattr(&binding, name.as_bytes(), &buf).ok_or_else(fail)?
            }
        };
        Ok(plain.to_vec())
    }

    pub(super) fn do_setxattr(&self, ino: INodeNo, name: &OsStr, value: &[u8], flags: i32) -> R<()> {
        let keys = self.access.keys()?;
        let i = self.inode(ino)?;
        let Some(nk) = keys.names() else {
            if !xattr_allowed(i.id, name) {
                return Err(if name.as_bytes().starts_with(b"user.") {
                    Errno::EPERM
                } else {
                    Errno::EOPNOTSUPP
                });
            }
            let sealed = keys.xattr().seal_message(&xattr_aad(name), value);
            return sys::setxattr(self.pfd(&i)?.as_fd(), &sys::cstr(name).map_err(io)?, &sealed, flags).map_err(io);
        };
        if !name.as_bytes().starts_with(b"user.") {
            return Err(Errno::EOPNOTSUPP);
        }
        let c = Self::backing_xattr_name(&keys, name)?;
        let binding = self.xattr_binding(&keys, &i, true)?.ok_or(Errno::EIO)?;
        let sealed = nk.seal_xattr(&binding, name.as_bytes(), value);
        sys::setxattr(self.pfd(&i)?.as_fd(), &c, &sealed, flags).map_err(io)
    }

    /// The NUL-separated names the plaintext view shows.
    pub(super) fn do_listxattr(&self, ino: INodeNo) -> R<Vec<u8>> {
        let keys = self.access.keys()?;
        let i = self.inode(ino)?;
        let list = sys::listxattr(self.pfd(&i)?.as_fd()).map_err(io)?;
        let mut out = vec![];
        for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            match keys.names() {
                None if xattr_allowed(i.id, OsStr::from_bytes(n)) => out.extend_from_slice(n),
                None => continue,
                Some(nk) => match nk.xattr_plain_name(n) {
                    Some(p) => out.extend_from_slice(&p),
                    None => continue,
                },
            }
            out.push(0);
        }
        Ok(out)
    }

    pub(super) fn do_removexattr(&self, ino: INodeNo, name: &OsStr) -> R<()> {
        let keys = self.access.keys()?;
        let i = self.inode(ino)?;
        let c = if keys.names().is_some() {
            if !name.as_bytes().starts_with(b"user.") {
                return Err(Errno::NO_XATTR);
            }
            match Self::backing_xattr_name(&keys, name) {
                Ok(c) => c,
                Err(Errno::ERANGE) => return Err(Errno::NO_XATTR),
                Err(e) => return Err(e),
            }
        } else {
            if !xattr_allowed(i.id, name) {
                return Err(Errno::NO_XATTR);
            }
            sys::cstr(name).map_err(io)?
        };
        sys::removexattr(self.pfd(&i)?.as_fd(), &c).map_err(io)
    }
}
