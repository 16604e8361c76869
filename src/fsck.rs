//! `cmkfs fsck`: verifies a volume end to end — the volume header's MAC, every file
//! header, every block tag and every encrypted extended attribute — and reports what is
//! damaged precisely (file and byte ranges), so that an operator knows which files to
//! restore from backup.
//!
//! It needs the key (it unwraps the volume key through the provider like a mount does) and
//! never writes to the volume: a damaged file is only *moved* out of it with `--quarantine`,
//! and only offline. Against a mounted volume it runs read-only; blocks being rewritten at
//! that moment may look damaged, so every damaged block found online is re-read once before
//! it is reported.
//!
//! Exit codes follow fsck(8): 0 clean, 1 damage found and every damaged file quarantined,
//! 4 damage left in place, 8 operational error (cannot unlock, cannot read).

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::util::read_full_at;

use crate::format::layout::BlockRead;
use crate::format::volume_header::is_reserved_root_name;
use crate::format::{FileHeader, VolumeKeys, BLOCK_SIZE, FILE_HEADER_LEN};
use crate::store::{Backing, ReadError};

/// Exit code: nothing damaged.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code: damage found, and all of it quarantined.
pub const EXIT_CORRECTED: i32 = 1;
/// Exit code: damage found and left in place.
pub const EXIT_DAMAGED: i32 = 4;
/// Exit code: fsck itself could not run.
pub const EXIT_ERROR: i32 = 8;

/// What kind of damage a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// The file header is truncated, garbled or fails authentication: nothing in the file
    /// can be read.
    Header,
    /// Some blocks fail their tag check; the rest of the file reads fine.
    Blocks,
    /// An extended attribute value fails authentication.
    Xattr,
    /// Format 3: a backing name that does not decrypt (planted, damaged, or a long name
    /// whose side file is missing or does not match): hidden from the mount.
    Name,
    /// Format 3: a directory without a usable IV: none of its names can be read.
    DirIv,
    /// Format 3: a symlink target that fails authentication (readlink returns EIO).
    Symlink,
}

/// One damaged file.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    /// Path relative to the volume root (as seen through the mount).
    pub path: String,
    /// What is damaged.
    pub kind: DamageKind,
    /// Human-readable detail.
    pub detail: String,
    /// Damaged plaintext byte ranges `[start, end)` (for `blocks`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub byte_ranges: Vec<(u64, u64)>,
    /// Where the file was moved, with `--quarantine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_to: Option<String>,
    /// Its backing path (differs from `path` in format 3).
    #[serde(skip)]
    pub backing: PathBuf,
}

/// The result of a check.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Volume id.
    pub volume_id: String,
    /// Whether the volume was mounted during the check.
    pub online: bool,
    /// Regular files checked.
    pub files: u64,
    /// Directories walked.
    pub directories: u64,
    /// Symlinks and other non-regular entries seen (nothing to verify in them).
    pub other: u64,
    /// Data blocks whose tag was checked (holes excluded).
    pub blocks: u64,
    /// Holes (all-zero stored blocks) seen.
    pub holes: u64,
    /// Blocks whose last write was interrupted (layout 2): the previous content is on disk
    /// and authenticates, so they read as that content. Not damage.
    pub interrupted_writes: u64,
    /// Encrypted extended attributes checked.
    pub xattrs: u64,
    /// Ciphertext bytes read.
    pub bytes: u64,
    /// Damaged files.
    pub damaged: Vec<Damage>,
    /// Entries that could not be read at all (permission, I/O error).
    pub unreadable: Vec<String>,
}

impl Report {
    /// The fsck(8)-style exit code.
    pub fn exit_code(&self) -> i32 {
        if !self.unreadable.is_empty() {
            EXIT_ERROR
        } else if self.damaged.is_empty() {
            EXIT_CLEAN
        } else if self.damaged.iter().all(|d| d.quarantined_to.is_some()) {
            EXIT_CORRECTED
        } else {
            EXIT_DAMAGED
        }
    }
}

/// Why `--quarantine` was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The volume is mounted.
    #[error("--quarantine moves files and runs offline only: unmount {} first", .0.display())]
    Online(PathBuf),
    /// The quarantine directory is inside the cipher directory.
    #[error("the quarantine directory must be outside the cipher directory {}", .0.display())]
    Inside(PathBuf),
    /// A path could not be resolved.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Checks that damaged files of the volume in `dir` may be moved to `quarantine`: only
/// offline (a mounted volume's files may be open, and the daemon does not expect files to
/// vanish under it), and only out of the cipher directory (inside it, moved files would be
/// walked again, and would stay where the volume's users see them).
pub fn check_quarantine(dir: &Path, quarantine: &Path, online: bool) -> Result<(), QuarantineError> {
    if online {
        return Err(QuarantineError::Online(dir.to_path_buf()));
    }
    let q = std::path::absolute(quarantine)?;
    if q.starts_with(dir.canonicalize()?) || q.starts_with(dir) {
        return Err(QuarantineError::Inside(dir.to_path_buf()));
    }
    Ok(())
}

/// Options of a check.
pub struct Options<'a> {
    /// The volume is mounted: read-only, re-read damaged blocks before reporting them.
    pub online: bool,
    /// Move damaged files (their ciphertext) here, keeping their relative paths.
    pub quarantine: Option<&'a Path>,
    /// Called after each file with (files done, total files).
    pub progress: &'a mut dyn FnMut(u64, u64),
}

/// Checks every file under `dir` with the volume's `keys`.
pub fn check(dir: &Path, keys: &VolumeKeys, volume_id: &str, opts: Options<'_>) -> Report {
    let mut report = Report {
        volume_id: volume_id.to_string(),
        online: opts.online,
        ..Default::default()
    };
    let mut entries = vec![];
    let mut walk = Walk {
        keys,
        out: &mut entries,
        report: &mut report,
    };
    walk.dir(dir, Path::new(""), true);
    let total = entries.iter().filter(|e| e.kind == Kind::File).count() as u64;
    let mut done = 0;
    for e in entries {
        let rel = e.rel.to_string_lossy().into_owned();
        let path = e.backing;
        let file_id = if e.kind == Kind::File {
            file_id_of(&path, keys)
        } else {
            None
        };
        let binding = if e.kind == Kind::Dir { e.diriv } else { file_id };
        check_xattrs(&path, &rel, keys, binding, &mut report);
        if e.kind == Kind::Symlink {
            check_symlink(&path, &rel, keys, &mut report);
        }
        if e.kind != Kind::File {
            continue;
        }
        report.files += 1;
        match check_file(&path, &rel, keys, opts.online, &mut report) {
            Ok(Some(d)) => report.damaged.push(d),
            Ok(None) => {}
            // A file removed while an online check runs is not damage.
            Err(e) if opts.online && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.unreadable.push(format!("{rel}: {e}")),
        }
        done += 1;
        (opts.progress)(done, total);
    }
    if let Some(q) = opts.quarantine {
        for d in report.damaged.iter_mut() {
            let target = q.join(&d.path);
            let moved = target
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| move_file(&d.backing, &target));
            match moved {
                Ok(()) => d.quarantined_to = Some(target.display().to_string()),
                Err(e) => d
                    .detail
                    .push_str(&format!(" (quarantine to {} failed: {e})", target.display())),
            }
        }
    }
    report
}

#[derive(PartialEq, Clone, Copy)]
enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry found by the walk.
struct Entry {
    backing: PathBuf,
    /// Plaintext path relative to the volume's root.
    rel: PathBuf,
    kind: Kind,
    /// Format 3 directories: their IV.
    diriv: Option<[u8; 16]>,
}

fn damage_at(rel: &Path, backing: &Path, kind: DamageKind, detail: String) -> Damage {
    Damage {
        path: rel.to_string_lossy().into_owned(),
        kind,
        detail,
        byte_ranges: vec![],
        quarantined_to: None,
        backing: backing.to_path_buf(),
    }
}

/// The walk of the cipher directory: every entry with its plaintext path (format 3 names
/// decrypted; names that do not decrypt and directories without an IV reported).
struct Walk<'a> {
    keys: &'a VolumeKeys,
    out: &'a mut Vec<Entry>,
    report: &'a mut Report,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: &Path, is_root: bool) {
        let rd = match std::fs::read_dir(dir) {
            Ok(r) => r,
            Err(e) => {
                self.report.unreadable.push(format!("{}: {e}", dir.display()));
                return;
            }
        };
        let mut names: Vec<_> = rd.filter_map(Result::ok).collect();
        names.sort_by_key(|e| e.file_name());
        let nk = self.keys.names();
        let (dfd, iv) = match nk {
            None => (None, None),
            Some(_) => {
                let dfd = crate::sys::openat(
                    crate::sys::cwd(),
                    &std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .ok();
                let iv = dfd
                    .as_ref()
                    .and_then(|d| crate::store::names::read_diriv(std::os::fd::AsFd::as_fd(d)));
                if iv.is_none() {
                    self.report.damaged.push(damage_at(
                        rel,
                        dir,
                        DamageKind::DirIv,
                        "directory IV (cmkfs.diriv) missing or damaged: no name in this directory can be read (EIO)"
                            .into(),
                    ));
                    return;
                }
                (dfd, iv)
            }
        };
        if let Some(e) = self.out.last_mut().filter(|e| e.backing == dir) {
            e.diriv = iv;
        }
        for e in names {
            let name = e.file_name();
            let path = e.path();
            let plain = match (nk, &dfd, &iv) {
                (None, ..) => {
                    if is_root && is_reserved_root_name(name.as_bytes()) {
                        continue;
                    }
                    name.clone()
                }
                (Some(nk), Some(dfd), Some(iv)) => {
                    if crate::format::names::kind(name.as_bytes()) == crate::format::names::Kind::Other {
                        continue; // cmkfs's own: IV, side files, the volume header
                    }
                    match crate::store::names::plain_name(nk, iv, std::os::fd::AsFd::as_fd(dfd), name.as_bytes()) {
                        Some(p) => std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&p)),
                        None => {
                            self.report.damaged.push(damage_at(
                                &rel.join(&name),
                                &path,
                                DamageKind::Name,
                                "backing name does not decrypt in its directory (planted, renamed outside the mount, or a long name without its side file): hidden from the mount".into(),
                            ));
                            continue;
                        }
                    }
                }
                _ => continue,
            };
            let prel = rel.join(&plain);
            let kind = match e.file_type() {
                Ok(t) if t.is_file() => Kind::File,
                Ok(t) if t.is_dir() => Kind::Dir,
                Ok(t) if t.is_symlink() => Kind::Symlink,
                Ok(_) => Kind::Other,
                Err(err) => {
                    self.report.unreadable.push(format!("{}: {err}", path.display()));
                    continue;
                }
            };
            match kind {
                Kind::Dir => self.report.directories += 1,
                Kind::File => {}
                _ => self.report.other += 1,
            }
            self.out.push(Entry {
                backing: path.clone(),
                rel: prel.clone(),
                kind,
                diriv: None,
            });
            if kind == Kind::Dir {
                self.dir(&path, &prel, false);
            }
        }
    }
}

/// Format 3: the authenticated file id of a regular file (what its xattr values are bound to).
fn file_id_of(path: &Path, keys: &VolumeKeys) -> Option<[u8; 16]> {
    keys.names()?;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut hdr = [0u8; FILE_HEADER_LEN as usize];
    let n = read_full_at(&f, &mut hdr, 0).ok()?;
    FileHeader::open(&hdr[..n], keys).ok().map(|c| *c.file_id())
}

/// Format 3: a symlink's target must authenticate.
fn check_symlink(path: &Path, rel: &str, keys: &VolumeKeys, report: &mut Report) {
    let Some(nk) = keys.names() else { return };
    let Ok(t) = std::fs::read_link(path) else { return };
    if nk.open_symlink(t.as_os_str().as_bytes()).is_err() {
        report.damaged.push(damage_at(
            Path::new(rel),
            path,
            DamageKind::Symlink,
            "symlink target fails authentication; readlink returns EIO".into(),
        ));
    }
}

/// Verifies one file; `Ok(None)` when it is intact.
fn check_file(
    path: &Path,
    rel: &str,
    keys: &VolumeKeys,
    online: bool,
    report: &mut Report,
) -> io::Result<Option<Damage>> {
    // The cipher directory is untrusted: a file listed as regular may have been replaced by a
    // link or a FIFO since; never follow the one, never block on the other.
    let f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?
    };
    let md = f.metadata()?;
    if !md.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "no longer a regular file"));
    }
    let len = md.len();
    if len == 0 {
        return Ok(None);
    }
    let damage = |kind, detail: String, byte_ranges| Damage {
        path: rel.to_string(),
        kind,
        detail,
        byte_ranges,
        quarantined_to: None,
        backing: path.to_path_buf(),
    };
    let mut hdr = [0u8; FILE_HEADER_LEN as usize];
    let n = read_full_at(&f, &mut hdr, 0)?;
    report.bytes += n as u64;
    let cipher = match FileHeader::open(&hdr[..n], keys) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Some(damage(
                DamageKind::Header,
                format!(
                    "{e}; the whole file ({} bytes) is unreadable",
                    keys.layout().plain_size(len)
                ),
                vec![(0, keys.layout().plain_size(len))],
            )))
        }
    };
    let plain_len = keys.layout().plain_size(len);
    let nblocks = plain_len.div_ceil(BLOCK_SIZE);
    let layout = keys.layout();
    let mut plain = zeroize::Zeroizing::new(vec![0u8; BLOCK_SIZE as usize]);
    let mut bad: Vec<u64> = vec![];
    let mut check = |i: u64, report: &mut Report, count: bool| -> io::Result<bool> {
        let block_plain = (plain_len - i * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
        match Backing::new(&f, layout).read_block(&cipher, i, block_plain, &mut plain) {
            Ok(found) => {
                if count {
                    report.bytes += block_plain as u64;
                    match found {
                        BlockRead::Hole => report.holes += 1,
                        BlockRead::Data => report.blocks += 1,
                        BlockRead::Previous => {
                            report.blocks += 1;
                            report.interrupted_writes += 1;
                        }
                    }
                }
                Ok(true)
            }
            Err(ReadError::Io(e)) => Err(e),
            Err(ReadError::Short(_) | ReadError::Bad(..)) => Ok(false),
        }
    };
    for i in 0..nblocks {
        if !check(i, report, true)? {
            bad.push(i);
        }
    }
    if online && !bad.is_empty() {
        // A block being rewritten right now can look torn: read each again once.
        let mut still = vec![];
        for &i in &bad {
            if !check(i, report, false)? {
                still.push(i);
            }
        }
        bad = still;
    }
    if bad.is_empty() {
        return Ok(None);
    }
    // Coalesce block indexes into plaintext byte ranges.
    let mut ranges: Vec<(u64, u64)> = vec![];
    for &i in &bad {
        let (s, e) = (i * BLOCK_SIZE, ((i + 1) * BLOCK_SIZE).min(plain_len));
        match ranges.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => ranges.push((s, e)),
        }
    }
    let desc = ranges
        .iter()
        .map(|(s, e)| format!("{s}..{e}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Some(damage(
        DamageKind::Blocks,
        format!(
            "{} of {nblocks} blocks fail authentication (bytes {desc}); reads there return EIO, the rest of the file is intact",
            bad.len()
        ),
        ranges,
    )))
}

fn check_xattrs(path: &Path, rel: &str, keys: &VolumeKeys, binding: Option<[u8; 16]>, report: &mut Report) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let Ok(names) = crate::sys::llistxattr(&c) else {
        return;
    };
    for name in names.split(|&b| b == 0).filter(|n| n.starts_with(b"user.")) {
        // Format 3 names that are not ours (the root's `user.cmkfs.root`) are not values.
        let plain = match keys.names() {
            None => name.to_vec(),
            Some(nk) => match nk.xattr_plain_name(name) {
                Some(p) => p,
                None => continue,
            },
        };
        let ok = |v: &[u8]| match keys.names() {
            None => keys.xattr().open_message(&crate::format::xattr_aad(name), v).is_ok(),
            Some(nk) => binding.is_some_and(|b| nk.open_xattr(&b, &plain, v).is_some()),
        };
        let Ok(cn) = std::ffi::CString::new(name) else { continue };
        let Ok(val) = crate::sys::lgetxattr(&c, &cn) else {
            continue;
        };
        report.xattrs += 1;
        if !ok(&val) {
            report.damaged.push(damage_at(
                Path::new(rel),
                path,
                DamageKind::Xattr,
                format!(
                    "extended attribute {} fails authentication; reading it returns EIO",
                    String::from_utf8_lossy(&plain)
                ),
            ));
        }
    }
}

/// Moves a file, across filesystems too (copy, fsync, then remove).
fn move_file(from: &Path, to: &Path) -> io::Result<()> {
    if to.exists() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "target exists"));
    }
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(from, to)?;
            File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        }
        Err(e) => Err(e),
    }
}
