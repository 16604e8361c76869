//! Rekeying a file: replacing its DEK (and file id) and re-encrypting its content, on a live
//! mount, crash-safely.
//!
//! The new ciphertext is written in full to a journal in the cipher root,
//! `cmkfs.volume.rekey.<new file id>` (a reserved name the plaintext view never shows), beside
//! a binding record `....bind` that says which file the journal belongs to: the old and new
//! file ids, the backing file's device and inode and the ciphertext length, MACed with a key
//! derived from the volume key. The journal is fsynced and made visible by rename: that rename
//! is the commit point. Then the journal's blocks are copied over the file in place (so the
//! inode, hard links and open handles stay what they were), the file is fsynced, and the
//! journal is removed. A crash before the commit point leaves the old file untouched (the
//! temporary journal is discarded at the next mount); a crash after it is finished by
//! replaying the journal at the next mount, which is idempotent. Holes stay holes: only data
//! blocks are written.
//!
//! Everything in the cipher root is untrusted, so recovery believes a journal only when its
//! binding record authenticates under the volume key, its own file header authenticates and
//! carries the new file id, and the file it is copied over is found by that binding: a regular
//! file inside the cipher directory (walked from the root with `O_NOFOLLOW`, never by a path
//! read from disk) with the recorded device and inode whose authenticated header holds the old
//! or the new file id. A planted or damaged journal is left in place and reported, never
//! applied.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::crypto;
use crate::format::content::is_zero;
use crate::format::file_header::FileHeader;
use crate::format::journal::PREFIX;
pub use crate::format::journal::{Binding, Journal};
use crate::format::layout::Layout;
use crate::format::volume_header::{is_reserved_root_name, VOLUME_HEADER_NAME};
use crate::format::{VolumeKeys, FILE_HEADER_LEN};
use crate::store::root::CipherRoot;
use crate::sys;
use crate::util;

/// Copies the data blocks (and header and length) of a committed journal over the file.
pub fn replay(layout: Layout, journal: &File, target: &File) -> io::Result<()> {
    let len = journal.metadata()?.len();
    let mut hdr = vec![0u8; FILE_HEADER_LEN as usize];
    journal.read_exact_at(&mut hdr, 0)?;
    let mut buf = vec![0u8; layout.max_unit()];
    let mut first = true;
    for (off, n) in layout.units(len) {
        journal.read_exact_at(&mut buf[..n], off)?;
        if !is_zero(&buf[..n]) {
            target.write_all_at(&buf[..n], off)?;
            if first {
                util::crash_point("rekey:copying");
                first = false;
            }
        }
    }
    target.write_all_at(&hdr, 0)?;
    target.set_len(len)?;
    target.sync_all()
}

/// What recovery did.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Files whose interrupted rekey was completed, as `dev-ino` of their backing file.
    pub completed: Vec<String>,
    /// Journals that were not applied (planted, damaged, or whose file is gone), with why.
    pub ignored: Vec<String>,
}

fn file_id_of(f: &File, keys: &VolumeKeys) -> Option<[u8; 16]> {
    let mut h = vec![0u8; FILE_HEADER_LEN as usize];
    f.read_exact_at(&mut h, 0).ok()?;
    FileHeader::open(&h, keys).ok().map(|c| *c.file_id())
}

/// Finds the regular file with backing `(dev, ino)` under `dir`, without following links.
fn find_inode(dir: BorrowedFd<'_>, at_root: bool, dev: u64, ino: u64, depth: usize) -> io::Result<Option<OwnedFd>> {
    if depth > 256 {
        return Ok(None);
    }
    let dup = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for e in sys::read_dir(dup)? {
        if e.name == b"." || e.name == b".." || (at_root && is_reserved_root_name(&e.name)) {
            continue;
        }
        let name = sys::cstr(OsStr::from_bytes(&e.name))?;
        match e.kind {
            libc::DT_DIR => {
                let Ok(sub) = sys::openat(dir, &name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0) else {
                    continue;
                };
                if let Some(fd) = find_inode(sub.as_fd(), false, dev, ino, depth + 1)? {
                    return Ok(Some(fd));
                }
            }
            libc::DT_REG | libc::DT_UNKNOWN if e.ino == ino => {
                let Ok(fd) = sys::openat(dir, &name, libc::O_PATH | libc::O_NOFOLLOW, 0) else {
                    continue;
                };
                let st = sys::fstat(fd.as_fd())?;
                if st.st_mode & libc::S_IFMT == libc::S_IFREG && (st.st_dev, st.st_ino) == (dev, ino) {
                    return Ok(Some(fd));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// Finishes (or discards) rekeys interrupted by a crash. Runs at mount, after unlocking and
/// before serving.
pub fn recover(root: &CipherRoot, keys: &VolumeKeys) -> io::Result<Recovered> {
    let layout = keys.layout();
    let mut out = Recovered::default();
    let prefix = format!("{VOLUME_HEADER_NAME}.{PREFIX}");
    for name in root.names()? {
        let name = name.to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix(&prefix) else { continue };
        if id.ends_with(".tmp") {
            // Never committed: the file itself was not touched. (Removing a planted link
            // removes the link, not its target.)
            root.remove(&name)?;
            continue;
        }
        if id.ends_with(".bind") {
            continue;
        }
        let mut ignore = |why: String| {
            tracing::warn!(journal = %name, "rekey journal not applied: {why}; left in place");
            out.ignored.push(format!("{name}: {why}"));
        };
        if id.len() != 32 || crypto::unhex(id).is_none() {
            ignore("not a journal of this cmkfs (an older build's journals named the file by a path, which is never trusted)".into());
            continue;
        }
        let j = Journal::new(&crypto::unhex(id).unwrap().try_into().unwrap());
        let binding = match root.read_regular(&j.bind, 1024) {
            Ok(b) => Binding::open(&b, keys),
            Err(_) => None,
        };
        let Some(binding) = binding.filter(|b| crypto::hex(&b.new_file_id) == id) else {
            ignore(
                "its binding record is missing or does not authenticate with the volume key (planted or damaged)"
                    .into(),
            );
            continue;
        };
        let journal = match root.open_regular(&j.done, false, binding.len) {
            Ok(f) if f.metadata()?.len() == binding.len => f,
            _ => {
                ignore("not a regular file of the recorded length".into());
                continue;
            }
        };
        if file_id_of(&journal, keys) != Some(binding.new_file_id) {
            ignore("its file header does not authenticate or carries another file id".into());
            continue;
        }
        let Some(pfd) = find_inode(root.fd(), true, binding.dev, binding.ino, 0)? else {
            ignore(format!(
                "no file with backing inode {}-{} in the volume (deleted since?)",
                binding.dev, binding.ino
            ));
            continue;
        };
        let target = File::from(sys::reopen(pfd.as_fd(), libc::O_RDWR)?);
        let current = file_id_of(&target, keys);
        if current != Some(binding.old_file_id) && current != Some(binding.new_file_id) {
            ignore(format!(
                "the file with backing inode {}-{} no longer holds the file this journal was made for",
                binding.dev, binding.ino
            ));
            continue;
        }
        replay(layout, &journal, &target)?;
        root.remove(&j.done)?;
        let _ = root.remove(&j.bind);
        root.sync()?;
        out.completed.push(format!("{}-{}", binding.dev, binding.ino));
    }
    Ok(out)
}

/// The backing `(dev, ino)` of a file.
pub fn identity(f: &File) -> io::Result<(u64, u64)> {
    let md = f.metadata()?;
    Ok((md.dev(), md.ino()))
}
