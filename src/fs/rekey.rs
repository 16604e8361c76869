//! Rekeying a file: replacing its DEK (and file id) and re-encrypting its content, on a live
//! mount, crash-safely.
//!
//! The new ciphertext is written in full to a journal in the cipher root
//! (`cmkfs.volume.rekey.<dev>-<ino>`, a reserved name the plaintext view never shows) with the
//! file's path beside it (`....path`), fsynced, and made visible by rename: that rename is the
//! commit point. Then the journal's blocks are copied over the file in place (so the inode,
//! hard links and open handles stay what they were), the file is fsynced, and the journal is
//! removed. A crash before the commit point leaves the old file untouched (the temporary
//! journal is discarded at the next mount); a crash after it is finished by replaying the
//! journal at the next mount, which is idempotent. Holes stay holes: only data blocks are
//! written.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::format::content::is_zero;
use crate::format::layout::{self, Layout};
use crate::format::volume::VOLUME_HEADER_NAME;
use crate::format::{CIPHER_BLOCK_SIZE, FILE_HEADER_LEN};
use crate::util;

/// Journal file names of one rekey.
pub struct Journal {
    /// The journal while being written.
    pub tmp: PathBuf,
    /// The committed journal.
    pub done: PathBuf,
    /// The file's path relative to the cipher root.
    pub path_file: PathBuf,
}

const PREFIX: &str = "rekey.";

impl Journal {
    /// Journal names for the backing inode `(dev, ino)`.
    pub fn new(cipher_root: &Path, dev: u64, ino: u64) -> Self {
        let base = format!("{VOLUME_HEADER_NAME}.{PREFIX}{dev}-{ino}");
        Journal {
            tmp: cipher_root.join(format!("{base}.tmp")),
            done: cipher_root.join(&base),
            path_file: cipher_root.join(format!("{base}.path")),
        }
    }
}

/// Copies the data blocks (and header and length) of a committed journal over the file.
pub fn replay(layout: Layout, journal: &File, target: &File) -> io::Result<()> {
    let len = journal.metadata()?.len();
    let mut hdr = vec![0u8; FILE_HEADER_LEN as usize];
    journal.read_exact_at(&mut hdr, 0)?;
    let mut buf = vec![0u8; CIPHER_BLOCK_SIZE.max(layout::PAGE) as usize];
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

/// Finishes (or discards) rekeys interrupted by a crash. Runs at mount, before serving.
/// Returns the paths it completed.
pub fn recover(cipher_root: &Path, layout: Layout) -> io::Result<Vec<String>> {
    let mut done = vec![];
    let prefix = format!("{VOLUME_HEADER_NAME}.{PREFIX}");
    for e in std::fs::read_dir(cipher_root)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix(&prefix) else { continue };
        if id.ends_with(".tmp") {
            // Never committed: the file itself was not touched.
            std::fs::remove_file(e.path())?;
            continue;
        }
        if id.ends_with(".path") {
            continue;
        }
        let (dev, ino) = match id.split_once('-').map(|(d, i)| (d.parse::<u64>(), i.parse::<u64>())) {
            Some((Ok(d), Ok(i))) => (d, i),
            _ => continue,
        };
        let j = Journal::new(cipher_root, dev, ino);
        let rel = std::fs::read_to_string(&j.path_file)?;
        let target_path = cipher_root.join(rel.trim_end_matches('\n'));
        let target = std::fs::OpenOptions::new().read(true).write(true).open(&target_path)?;
        let md = target.metadata()?;
        if (md.dev(), md.ino()) != (dev, ino) {
            return Err(io::Error::other(format!(
                "rekey journal {} belongs to inode {dev}-{ino} but {} is another file; left in place",
                j.done.display(),
                target_path.display()
            )));
        }
        replay(layout, &File::open(&j.done)?, &target)?;
        std::fs::remove_file(&j.done)?;
        let _ = std::fs::remove_file(&j.path_file);
        util::fsync_dir(cipher_root)?;
        done.push(rel);
    }
    Ok(done)
}
