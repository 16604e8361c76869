//! The encrypted data path of one regular file.
//!
//! Reading: map the plaintext range to whole blocks, have the store read and open them
//! ([`Backing::read_run`]: one `pread` of ciphertext per run, or per group in layout 2),
//! copy out the requested bytes.
//!
//! Writing: the layout plans the run of touched blocks ([`Layout::plan_write`]); each block's
//! plaintext goes into the plan — straight from the caller's data for a block the write
//! covers entirely, read, opened and merged first for a partially covered one
//! (read-modify-write); the store seals the plan and writes it ([`Backing::write`]: one
//! `pwrite` in layout 1; entries, then ciphertext, in layout 2). Writing past the end first
//! pads an old partial last block to a full block, so that every block but the last is full.
//! Blocks between the old end and the write stay unwritten: holes on disk, zeros when read.
//!
//! Locking: reads share the file's lock, writes, truncates and fallocates hold it
//! exclusively, so a read never sees half a write. The backing descriptor is opened once per
//! inode on the first `open` and closed on the last `release`; the file's DEK is unwrapped at
//! that first open and dropped (zeroized) with it.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use fuser::Errno;
use parking_lot::RwLock;

use crate::format::file_header::HeaderError;
use crate::format::layout::{BlockRead, WritePlan, WriterStamps};
use crate::format::{ContentCipher, FileHeader, Layout, VolumeKeys, BLOCK_SIZE, FILE_HEADER_LEN};
use crate::store::{Backing, ReadError};
use crate::sys::read_full_at;

use crate::sys;

const BS: u64 = BLOCK_SIZE;

#[derive(Default)]
enum CipherState {
    /// Not loaded (no open handle).
    #[default]
    Unknown,
    /// Backing file is empty: no header yet; the first write creates one.
    Empty,
    /// Header authenticated; the file's content cipher.
    Ready(Arc<ContentCipher>),
    /// Header unusable; every read and write is EIO until the file is truncated to 0.
    Bad(#[allow(dead_code)] HeaderError),
}

struct State {
    /// The backing file, for writes and every other operation. It has no readahead
    /// ([`sys::no_backing_readahead`]): the write path's own small reads must not fill the
    /// backing page cache with the large folios that make later small writes slow.
    backing: Option<Arc<File>>,
    /// A second descriptor of the same backing file for user reads, opened at the first read:
    /// it keeps the backing filesystem's usual readahead, so reads through the mount are
    /// read ahead the way reads of a plain file are (cold random reads 14.5k IOPS without,
    /// 20k with, docs/PERFORMANCE.md). The backing descriptor itself when a second one
    /// could not be opened.
    reader: Option<Arc<File>>,
    writable: bool,
    opens: u32,
    cipher: CipherState,
    /// The volume's content layout (set on open).
    layout: Layout,
    /// Layout 2: entries past the end of the file are known to be zero (checked before the
    /// first growth after open; see [`Backing::clear_entries_past`]).
    tail_clean: bool,
    /// The mount's shared state (writer session stamps, bad-block log, counters), set on
    /// open. Not made up for the inode table's many never-opened inodes.
    mount: Option<Arc<MountData>>,
}

impl State {
    /// The mount's shared state; EBADF before the first open, like the backing file.
    fn mount(&self) -> Result<&Arc<MountData>, Errno> {
        self.mount.as_ref().ok_or(Errno::EBADF)
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            backing: None,
            reader: None,
            writable: false,
            opens: 0,
            cipher: CipherState::Unknown,
            layout: Layout::V2,
            tail_clean: false,
            mount: None,
        }
    }
}

/// Content state of one inode.
pub struct FileData {
    inner: RwLock<State>,
    /// Backing file length while open ([`UNKNOWN`] when it must be read with fstat). Every
    /// length change goes through this file's exclusive lock, so reads need no fstat.
    clen: AtomicU64,
    /// Set by an fsync, cleared by the next write: that write follows an fsync, as every write
    /// to a file written and synced in turn does (a database's log). Such a write starts the
    /// backing file's writeback at once, so the disk already works while the FSYNC request
    /// that will follow makes its round trip. Writes in a batch before one fsync (data files
    /// at a checkpoint) do not: the first clears the flag, and the rest stay buffered.
    after_sync: AtomicBool,
}

impl Default for FileData {
    fn default() -> Self {
        FileData {
            inner: RwLock::new(State::default()),
            clen: AtomicU64::new(UNKNOWN),
            after_sync: AtomicBool::new(false),
        }
    }
}

const UNKNOWN: u64 = u64::MAX;

/// The backing path of an fd, for log messages.
pub fn describe(fd: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| format!("fd {}", fd.as_raw_fd()))
}

/// What every file of a mount shares: made once by the filesystem, handed to each
/// [`FileData`] on open.
pub struct MountData {
    /// The mount's writer session stamps (layout 2's slot choice; see
    /// [`crate::store::session`]).
    pub stamps: WriterStamps,
    /// Blocks that failed authentication: (backing dev, backing inode, block) -> failures
    /// seen, so each is logged once, not once per read.
    bad_blocks: parking_lot::Mutex<lru::LruCache<(u64, u64, u64), u64>>,
    /// Counters for metrics.
    pub stats: IoStats,
}

/// Counters of a mount's data path, for `cmkfs metrics`.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Plaintext bytes returned by reads.
    pub bytes_read: AtomicU64,
    /// Plaintext bytes written.
    pub bytes_written: AtomicU64,
    /// EIO because a block failed authentication (damaged or tampered).
    pub eio_block_auth: AtomicU64,
    /// EIO because the backing file ends inside a block (truncated).
    pub eio_truncated: AtomicU64,
    /// EIO because a file header does not authenticate.
    pub eio_file_header: AtomicU64,
    /// Files (inodes) open now.
    pub open_files: AtomicU64,
}

impl MountData {
    /// Shared state for the files of a mount writing with `stamps`.
    pub fn new(stamps: WriterStamps) -> Self {
        MountData {
            stamps,
            bad_blocks: parking_lot::Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(4096).unwrap())),
            stats: IoStats::default(),
        }
    }

    /// Logs a block that fails authentication once per (file, block), not once per read: a
    /// database retrying a damaged page must not flood the log. Repeats are counted and
    /// summarised every 1000 occurrences.
    fn report_bad_block(&self, f: &File, block: u64, e: crate::format::BlockError) {
        use std::os::unix::fs::MetadataExt;
        let (dev, ino) = f.metadata().map(|m| (m.dev(), m.ino())).unwrap_or((0, 0));
        let n = {
            let mut seen = self.bad_blocks.lock();
            let c = seen.get_or_insert_mut((dev, ino, block), || 0);
            *c += 1;
            *c
        };
        let start = block * BS;
        if n == 1 {
            tracing::error!(file = %describe(f.as_fd()), block, bytes = %format_args!("{start}..{}", start + BS), error = ?e,
                "block failed authentication (corrupted or tampered); reads of this range return EIO (logged once; run cmkfs fsck)");
        } else if n % 1000 == 0 {
            tracing::warn!(file = %describe(f.as_fd()), block, failures = n, "block still fails authentication");
        }
    }

    /// EIO for a block that cannot be read (logged once per block), or the I/O error.
    fn read_err(&self, f: &File, e: ReadError) -> Errno {
        match e {
            ReadError::Io(e) => errno(e),
            ReadError::Short(b) => {
                self.stats.eio_truncated.fetch_add(1, Relaxed);
                tracing::error!(file = %describe(f.as_fd()), block = b, "backing file ends inside a block (truncated)");
                Errno::EIO
            }
            ReadError::Bad(b, x) => {
                self.stats.eio_block_auth.fetch_add(1, Relaxed);
                self.report_bad_block(f, b, x);
                Errno::EIO
            }
        }
    }
}

impl Default for MountData {
    fn default() -> Self {
        MountData::new(WriterStamps::default())
    }
}

/// One file's blocks while its lock is held: backing file, layout, content cipher and the
/// mount's shared state, for the read-modify-write steps of writes and truncates.
struct Blocks<'a> {
    f: &'a File,
    layout: Layout,
    cipher: &'a ContentCipher,
    mount: &'a MountData,
}

impl Blocks<'_> {
    fn backing(&self) -> Backing<'_> {
        Backing::new(self.f, self.layout)
    }

    /// Reads and opens block `b` whose stored plaintext length is `len` into `out[..len]`.
    fn read_block(&self, b: u64, len: usize, out: &mut [u8]) -> Result<BlockRead, Errno> {
        self.backing()
            .read_block(self.cipher, b, len, out)
            .map_err(|e| self.mount.read_err(self.f, e))
    }

    /// Seals and writes a planned run whose bodies are filled.
    fn write(&self, plan: &mut WritePlan) -> Result<(), Errno> {
        self.backing()
            .write(self.cipher, &self.mount.stamps, plan)
            .map_err(errno)
    }

    /// Puts the plaintext of every block of `plan` into it: `data` written at `off` over a
    /// file of plaintext size `size`. A block `data` covers entirely is copied straight from
    /// it; a partly covered one is read, opened and merged first (read-modify-write). On
    /// failure the plan's plaintext is wiped.
    fn merge(&self, plan: &mut WritePlan, off: u64, data: &[u8], size: u64) -> Result<(), Errno> {
        let end = off + data.len() as u64;
        for b in plan.blocks() {
            let bstart = b * BS;
            let ws = (off.max(bstart) - bstart) as usize;
            let we = (end.min(bstart + BS) - bstart) as usize;
            let src = &data[(bstart + ws as u64 - off) as usize..(bstart + we as u64 - off) as usize];
            let body = plan.body_mut(b);
            // The old content of a partly covered block, if it has any (the plan's buffer
            // starts zeroed).
            let old_len = if bstart < size {
                (size - bstart).min(BS) as usize
            } else {
                0
            };
            if (ws > 0 || we < body.len()) && old_len > 0 {
                if let Err(e) = self.read_block(b, old_len, body) {
                    plan.zeroize();
                    return Err(e);
                }
            }
            body[ws..we].copy_from_slice(src);
        }
        Ok(())
    }

    /// Re-seals block `b` changing its plaintext length from `old_len` to `new_len` (zero
    /// padded or cut).
    fn resize_block(&self, b: u64, old_len: usize, new_len: usize) -> Result<(), Errno> {
        let bstart = b * BS;
        let mut plan = self
            .layout
            .plan_write(b, b, bstart + new_len as u64, bstart + old_len as u64);
        let mut p = zeroize::Zeroizing::new([0u8; BS as usize]);
        self.read_block(b, old_len, &mut p[..])?;
        plan.body_mut(b).copy_from_slice(&p[..new_len]);
        self.write(&mut plan)
    }

    /// After a failed write: puts the old partial last block back and cuts the backing file
    /// to its old length, so that a write that ran out of space leaves neither a torn block
    /// past the old end nor a changed size. (Blocks inside the old length are rewritten in
    /// place, which needs no new space on a non-copy-on-write backing filesystem.)
    fn undo_growth(&self, before: u64, old_tail: Option<&(u64, usize, zeroize::Zeroizing<[u8; BS as usize]>)>) {
        let f = self.f;
        if let Some((b, l, keep)) = old_tail {
            let bstart = b * BS;
            let mut plan = self.layout.plan_write(*b, *b, bstart + *l as u64, bstart + BS);
            plan.body_mut(*b).copy_from_slice(&keep[..*l]);
            if let Err(e) = self.backing().write(self.cipher, &self.mount.stamps, &mut plan) {
                tracing::error!(file = %describe(f.as_fd()), block = b, error = %e, "cannot restore the last block after a failed write");
            }
        }
        if f.metadata().map(|m| m.len() > before).unwrap_or(true) {
            if let Err(e) = f.set_len(before) {
                tracing::error!(file = %describe(f.as_fd()), error = %e, "cannot cut the file back after a failed write");
            }
        }
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn load_cipher(f: &File, keys: &VolumeKeys) -> io::Result<CipherState> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(CipherState::Empty);
    }
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    let n = read_full_at(f, &mut h, 0)?;
    Ok(match FileHeader::open(&h[..n], keys) {
        Ok(c) => CipherState::Ready(Arc::new(c)),
        Err(e) => {
            tracing::error!(file = %describe(f.as_fd()), error = %e, "file header unusable; reads and writes of this file return EIO");
            CipherState::Bad(e)
        }
    })
}

impl FileData {
    /// Called on every open of the inode: opens the backing file on the first one and loads
    /// the file header. `mount` is what the files of the mount share.
    pub fn open(
        &self,
        path_fd: BorrowedFd<'_>,
        keys: &VolumeKeys,
        mount: &Arc<MountData>,
        want_write: bool,
    ) -> Result<(), Errno> {
        let mut st = self.inner.write();
        if st.backing.is_none() || (want_write && !st.writable) {
            let (f, writable) = match sys::reopen(path_fd, libc::O_RDWR) {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EACCES) && !want_write => {
                    (sys::reopen(path_fd, libc::O_RDONLY).map_err(errno)?, false)
                }
                Err(e) => return Err(errno(e)),
            };
            if !crate::config::env().backing_readahead {
                sys::no_backing_readahead(f.as_fd());
            }
            st.backing = Some(Arc::new(File::from(f)));
            st.writable = writable;
            st.cipher = CipherState::Unknown;
            st.tail_clean = false;
            self.clen.store(UNKNOWN, Relaxed);
        }
        st.layout = keys.layout();
        st.mount = Some(mount.clone());
        if matches!(st.cipher, CipherState::Unknown) {
            let f = st.backing.clone().unwrap();
            st.cipher = load_cipher(&f, keys).map_err(errno)?;
        }
        if st.opens == 0 {
            mount.stats.open_files.fetch_add(1, Relaxed);
        }
        st.opens += 1;
        Ok(())
    }

    /// The backing file's length: cached, or read once with fstat.
    fn cached_len(&self, f: &File) -> Result<u64, Errno> {
        let v = self.clen.load(Relaxed);
        if v != UNKNOWN {
            return Ok(v);
        }
        let l = f.metadata().map_err(errno)?.len();
        self.clen.store(l, Relaxed);
        Ok(l)
    }

    /// Called on every release; the last one closes the backing file and drops the DEK.
    pub fn release(&self) {
        let mut st = self.inner.write();
        if let (1, Some(m)) = (st.opens, &st.mount) {
            m.stats.open_files.fetch_sub(1, Relaxed);
        }
        st.opens = st.opens.saturating_sub(1);
        if st.opens == 0 {
            st.backing = None;
            st.reader = None;
            st.cipher = CipherState::Unknown;
            self.clen.store(UNKNOWN, Relaxed);
        }
    }

    /// True when the file header is unusable (only meaningful while open).
    pub fn is_damaged(&self) -> bool {
        matches!(self.inner.read().cipher, CipherState::Bad(_))
    }

    /// True while some handle has the file open.
    pub fn is_open(&self) -> bool {
        self.inner.read().opens > 0
    }

    /// The backing file, for fsync.
    pub fn backing(&self) -> Option<Arc<File>> {
        self.inner.read().backing.clone()
    }

    /// Drops the file's DEK (revocation). Open handles keep their backing descriptor; the
    /// DEK is unwrapped again from the file header on the next use after access returns.
    pub fn drop_keys(&self) {
        let mut st = self.inner.write();
        if matches!(st.cipher, CipherState::Ready(_) | CipherState::Bad(_)) {
            st.cipher = CipherState::Unknown;
        }
    }

    /// Loads the header again if the DEK was dropped while the file stayed open.
    fn reload_if_dropped(&self, keys: &VolumeKeys) -> Result<(), Errno> {
        let mut st = self.inner.write();
        if matches!(st.cipher, CipherState::Unknown) {
            let f = st.backing.clone().ok_or(Errno::EBADF)?;
            st.cipher = load_cipher(&f, keys).map_err(errno)?;
        }
        Ok(())
    }

    /// Opens [`State::reader`] if it is not open yet.
    fn open_reader(&self) {
        let mut st = self.inner.write();
        if st.reader.is_some() {
            return;
        }
        let Some(b) = st.backing.clone() else { return };
        st.reader = Some(match sys::reopen(b.as_fd(), libc::O_RDONLY) {
            Ok(fd) => Arc::new(File::from(fd)),
            Err(e) => {
                // EMFILE and the like: reads still work, only without readahead.
                tracing::debug!(file = %describe(b.as_fd()), error = %e, "no second descriptor for reads");
                b
            }
        });
    }

    /// Reads up to `len` plaintext bytes at `off`.
    pub fn read(&self, keys: &VolumeKeys, off: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let (dropped, no_reader) = {
            let st = self.inner.read();
            (matches!(st.cipher, CipherState::Unknown), st.reader.is_none())
        };
        if dropped {
            self.reload_if_dropped(keys)?;
        }
        if no_reader {
            self.open_reader();
        }
        let st = self.inner.read();
        let f = st.reader.as_ref().or(st.backing.as_ref()).ok_or(Errno::EBADF)?;
        let mount = st.mount()?;
        let cipher = match &st.cipher {
            CipherState::Ready(c) => c,
            CipherState::Empty => return Ok(vec![]),
            // A damaged header is an error even where the size says "nothing to read":
            // an empty answer would be wrong plaintext.
            CipherState::Bad(_) | CipherState::Unknown => {
                mount.stats.eio_file_header.fetch_add(1, Relaxed);
                return Err(Errno::EIO);
            }
        };
        let layout = st.layout;
        let clen = self.cached_len(f)?;
        let size = layout.plain_size(clen);
        if off >= size || len == 0 {
            return Ok(vec![]);
        }
        let end = (off + len as u64).min(size);
        let first = off / BS;
        let last = (end - 1) / BS;
        let plain_end = ((last + 1) * BS).min(size);
        let mut plain = vec![0u8; (plain_end - first * BS) as usize];
        Backing::new(f, layout)
            .read_run(cipher, first, &mut plain)
            .map_err(|e| mount.read_err(f, e))?;
        let s = (off - first * BS) as usize;
        let e = (end - first * BS) as usize;
        plain.truncate(e);
        plain.drain(..s);
        mount.stats.bytes_read.fetch_add(plain.len() as u64, Relaxed);
        Ok(plain)
    }

    /// Makes sure the file has a header, creating one (new file id and DEK) for an empty
    /// file. Caller holds the write lock.
    fn ensure_cipher(st: &mut State, keys: &VolumeKeys) -> Result<Arc<ContentCipher>, Errno> {
        if matches!(st.cipher, CipherState::Unknown) {
            let f = st.backing.clone().ok_or(Errno::EBADF)?;
            st.cipher = load_cipher(&f, keys).map_err(errno)?;
        }
        match &st.cipher {
            CipherState::Ready(c) => Ok(c.clone()),
            CipherState::Bad(_) | CipherState::Unknown => {
                if let Some(m) = &st.mount {
                    m.stats.eio_file_header.fetch_add(1, Relaxed);
                }
                Err(Errno::EIO)
            }
            CipherState::Empty => {
                let f = st.backing.as_ref().ok_or(Errno::EBADF)?;
                let (h, c) = FileHeader::create(keys);
                if let Err(e) = f.write_all_at(&h, 0) {
                    // No half-written header left behind (it would make the file unreadable).
                    let _ = f.set_len(0);
                    return Err(errno(e));
                }
                let c = Arc::new(c);
                st.cipher = CipherState::Ready(c.clone());
                Ok(c)
            }
        }
    }

    /// Format 3: the file's id from its authenticated header (what its extended attribute
    /// values are bound to). With `create`, an empty file without a header gets one first;
    /// without, such a file has no id (`None`). Opens and releases the file around the check,
    /// under the same lock every write takes, so a header is never made twice.
    pub fn file_id(
        &self,
        path_fd: BorrowedFd<'_>,
        keys: &VolumeKeys,
        mount: &Arc<MountData>,
        create: bool,
    ) -> Result<Option<[u8; 16]>, Errno> {
        self.open(path_fd, keys, mount, create)?;
        let r = {
            let mut st = self.inner.write();
            match &st.cipher {
                CipherState::Ready(c) => Ok(Some(*c.file_id())),
                CipherState::Empty if !create => Ok(None),
                _ => Self::ensure_cipher(&mut st, keys).map(|c| Some(*c.file_id())),
            }
        };
        self.release();
        r
    }

    /// Replaces the file's DEK and file id and re-encrypts its content through a redo journal
    /// (see [`crate::store::journal`]). Holds the file exclusively throughout. Returns the bytes
    /// re-encrypted (ciphertext length).
    pub fn rekey(&self, keys: &VolumeKeys, root: &crate::store::root::CipherRoot) -> Result<u64, Errno> {
        use crate::store::journal::{Binding, Journal};
        let mut st = self.inner.write();
        let f = st.backing.clone().ok_or(Errno::EBADF)?;
        if !st.writable {
            return Err(Errno::EACCES);
        }
        let clen = f.metadata().map_err(errno)?.len();
        if clen == 0 {
            return Ok(0); // no header, no DEK: nothing to replace
        }
        let old = Self::ensure_cipher(&mut st, keys)?;
        let (hdr, new) = FileHeader::create(keys);
        let new = Arc::new(new);
        let journal = Journal::new(new.file_id());
        let (dev, ino) = crate::store::journal::identity(&f).map_err(errno)?;
        let binding = Binding {
            old_file_id: *old.file_id(),
            new_file_id: *new.file_id(),
            dev,
            ino,
            len: clen,
        };
        // The new file id is random, so nothing can be waiting under these names; O_EXCL makes
        // a planted file or link there an error rather than a target.
        let j = root.create_new(&journal.tmp, 0o600).map_err(errno)?;
        j.write_all_at(&hdr, 0).map_err(errno)?;
        let layout = st.layout;
        let size = layout.plain_size(clen);
        let mut plain = vec![0u8; BS as usize];
        for b in 0..size.div_ceil(BS) {
            let len = (size - b * BS).min(BS) as usize;
            let found = Backing::new(&f, layout).read_block(&old, b, len, &mut plain).map_err(|e| {
                tracing::error!(file = %describe(f.as_fd()), block = b, error = ?e, "cannot rekey: block unreadable");
                Errno::EIO
            })?;
            if found == BlockRead::Hole {
                continue;
            }
            // Into the journal: a fresh file, so every block gets a fresh entry.
            let mut plan = layout.plan_write(b, b, b * BS + len as u64, 0);
            plan.body_mut(b).copy_from_slice(&plain[..len]);
            Backing::new(&j, layout)
                .write(&new, &st.mount()?.stamps, &mut plan)
                .map_err(errno)?;
        }
        zeroize::Zeroize::zeroize(&mut plain[..]);
        j.set_len(clen).map_err(errno)?;
        j.sync_all().map_err(errno)?;
        root.write_atomic(&journal.bind, &binding.seal(keys), 0o600)
            .map_err(errno)?;
        root.rename(&journal.tmp, &journal.done).map_err(errno)?;
        root.sync().map_err(errno)?;
        crate::util::crash_point("rekey:journal-committed");
        crate::store::journal::replay(layout, &j, &f).map_err(errno)?;
        st.cipher = CipherState::Ready(new);
        drop(st);
        root.remove(&journal.done).map_err(errno)?;
        let _ = root.remove(&journal.bind);
        root.sync().map_err(errno)?;
        Ok(clen)
    }

    /// Writes `data` at `off`; returns the bytes written (all of them, or an error).
    pub fn write(&self, keys: &VolumeKeys, off: u64, data: &[u8]) -> Result<usize, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut st = self.inner.write();
        if !st.writable {
            return Err(Errno::EBADF);
        }
        let f = st.backing.clone().ok_or(Errno::EBADF)?;
        let layout = st.layout;
        let mount = st.mount()?.clone();
        let before = self.cached_len(&f)?;
        let size = layout.plain_size(before);
        // Anything below may change the length; on success it is set to the exact new one.
        self.clen.store(UNKNOWN, Relaxed);
        let cipher = Self::ensure_cipher(&mut st, keys)?;
        let blocks = Blocks {
            f: &f,
            layout,
            cipher: &cipher,
            mount: &mount,
        };
        let end = off.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        let first = off / BS;
        let last = (end - 1) / BS;
        if end > size && !st.tail_clean {
            blocks
                .backing()
                .clear_entries_past(size.div_ceil(BS), before)
                .map_err(errno)?;
            st.tail_clean = true;
        }
        // An old partial last block that now ends up in the middle becomes a full block. Its
        // old content is kept so that a failed write (ENOSPC, EDQUOT) can put it back.
        let mut old_tail = None;
        if size % BS != 0 && size / BS < first {
            let (b, l) = (size / BS, (size % BS) as usize);
            let mut keep = zeroize::Zeroizing::new([0u8; BS as usize]);
            blocks.read_block(b, l, &mut keep[..])?;
            old_tail = Some((b, l, keep));
            if let Err(e) = blocks.resize_block(b, l, BS as usize) {
                st.tail_clean = false;
                blocks.undo_growth(before, old_tail.as_ref());
                return Err(e);
            }
        }
        let new_size = size.max(end);
        let mut plan = layout.plan_write(first, last, new_size, size);
        let r = blocks
            .merge(&mut plan, off, data, size)
            .and_then(|()| blocks.write(&mut plan));
        if let Err(e) = r {
            st.tail_clean = false;
            blocks.undo_growth(before, old_tail.as_ref());
            return Err(e);
        }
        self.clen.store(before.max(layout.cipher_size(new_size)), Relaxed);
        if self.after_sync.swap(false, Relaxed) && !crate::config::env().no_early_writeback {
            sys::start_writeback(f.as_fd());
        }
        mount.stats.bytes_written.fetch_add(data.len() as u64, Relaxed);
        Ok(data.len())
    }

    /// fsync / fdatasync of the backing file (an O_SYNC / O_DSYNC write's own sync).
    pub fn sync(&self, datasync: bool) -> Result<(), Errno> {
        let f = self.backing().ok_or(Errno::EBADF)?;
        if datasync { f.sync_data() } else { f.sync_all() }.map_err(errno)
    }

    /// An fsync request: [`FileData::sync`], after which the next write starts the backing
    /// writeback at once (see `after_sync`).
    pub fn fsync(&self, datasync: bool) -> Result<(), Errno> {
        self.sync(datasync)?;
        self.after_sync.store(true, Relaxed);
        Ok(())
    }

    /// Sets the plaintext size. Caller must have opened the file (see [`FileData::open`]).
    pub fn truncate(&self, keys: &VolumeKeys, new_size: u64) -> Result<(), Errno> {
        let mut st = self.inner.write();
        let f = st.backing.clone().ok_or(Errno::EBADF)?;
        if !st.writable {
            return Err(Errno::EACCES);
        }
        let layout = st.layout;
        let mount = st.mount()?.clone();
        let before = self.cached_len(&f)?;
        let size = layout.plain_size(before);
        if new_size == size && new_size != 0 {
            return Ok(());
        }
        self.clen.store(UNKNOWN, Relaxed);
        if new_size == 0 && layout == Layout::V3 {
            // Format 3 keeps a good header: its file id binds the file's extended attribute
            // values, and XAES nonces need no fresh DEK.
            if matches!(st.cipher, CipherState::Unknown) {
                st.cipher = load_cipher(&f, keys).map_err(errno)?;
            }
            if matches!(st.cipher, CipherState::Ready(_)) {
                f.set_len(FILE_HEADER_LEN).map_err(errno)?;
                st.tail_clean = true;
                self.clen.store(FILE_HEADER_LEN, Relaxed);
                return Ok(());
            }
        }
        if new_size == 0 {
            // Dropping the header too: the next write starts a new file id and DEK.
            f.set_len(0).map_err(errno)?;
            st.cipher = CipherState::Empty;
            st.tail_clean = true;
            self.clen.store(0, Relaxed);
            return Ok(());
        }
        let cipher = Self::ensure_cipher(&mut st, keys)?;
        let blocks = Blocks {
            f: &f,
            layout,
            cipher: &cipher,
            mount: &mount,
        };
        if new_size < size {
            if new_size % BS != 0 {
                let b = new_size / BS;
                let old_len = (size - b * BS).min(BS) as usize;
                blocks.resize_block(b, old_len, (new_size % BS) as usize)?;
            }
            f.set_len(layout.cipher_size(new_size)).map_err(errno)?;
            // Entries of the cut blocks left in the last entry page must not come back with
            // a later growth.
            st.tail_clean = false;
            blocks
                .backing()
                .clear_entries_past(new_size.div_ceil(BS), layout.cipher_size(new_size))
                .map_err(errno)?;
            st.tail_clean = true;
        } else {
            if !st.tail_clean {
                blocks
                    .backing()
                    .clear_entries_past(size.div_ceil(BS), before)
                    .map_err(errno)?;
                st.tail_clean = true;
            }
            if size % BS != 0 {
                let b = size / BS;
                let new_len = (new_size - b * BS).min(BS) as usize;
                blocks.resize_block(b, (size % BS) as usize, new_len)?;
            }
            // Growing leaves the new range unwritten: a hole that reads as zeros.
            f.set_len(layout.cipher_size(new_size)).map_err(errno)?;
        }
        self.clen.store(layout.cipher_size(new_size), Relaxed);
        Ok(())
    }

    /// fallocate(2): mode 0 and KEEP_SIZE preallocate (and mode 0 grows the file),
    /// PUNCH_HOLE|KEEP_SIZE zeroes a range leaving holes. Other modes are EOPNOTSUPP.
    pub fn fallocate(&self, keys: &VolumeKeys, mode: i32, off: u64, len: u64) -> Result<(), Errno> {
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        const KEEP: i32 = libc::FALLOC_FL_KEEP_SIZE;
        const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        if mode == PUNCH {
            return self.punch_hole(keys, off, end);
        }
        if mode != 0 && mode != KEEP {
            return Err(Errno::EOPNOTSUPP);
        }
        let (f, layout) = {
            let st = self.inner.read();
            (st.backing.clone().ok_or(Errno::EBADF)?, st.layout)
        };
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let (cstart, cend) = layout.span(off / BS, end.div_ceil(BS));
        sys::fallocate(f.as_fd(), libc::FALLOC_FL_KEEP_SIZE, cstart, cend - cstart).map_err(errno)?;
        let size = layout.plain_size(f.metadata().map_err(errno)?.len());
        if mode == 0 && end > size {
            self.truncate(keys, end)?;
        }
        Ok(())
    }

    fn punch_hole(&self, keys: &VolumeKeys, off: u64, end: u64) -> Result<(), Errno> {
        let (f, layout) = {
            let st = self.inner.read();
            (st.backing.clone().ok_or(Errno::EBADF)?, st.layout)
        };
        let size = layout.plain_size(f.metadata().map_err(errno)?.len());
        let end = end.min(size);
        if off >= end {
            return Ok(());
        }
        // Only the first and the last touched block can be partially covered: those are
        // rewritten with zeros in the range; the whole blocks between become holes.
        let first = off / BS;
        let last = (end - 1) / BS;
        let is_partial = |b: u64| {
            let (bs, be) = (b * BS, ((b + 1) * BS).min(size));
            off.max(bs) != bs || end.min(be) != be
        };
        let mut full = first..last + 1;
        for b in [first, last] {
            if is_partial(b) {
                let (zs, ze) = (off.max(b * BS), end.min((b + 1) * BS));
                self.write(keys, zs, &vec![0u8; (ze - zs) as usize])?;
                if b == first {
                    full.start = b + 1;
                }
                if b == last {
                    full.end = full.end.min(b);
                }
            }
        }
        if full.end > full.start {
            let _excl = self.inner.write();
            let clen = f.metadata().map_err(errno)?.len();
            Backing::new(&f, layout)
                .punch(full.start, full.end, clen)
                .map_err(errno)?;
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE in plaintext offsets. A block is a hole by the same rule reads
    /// use (see [`Backing::next_data`]), so results agree with what reads return.
    pub fn seek(&self, off: u64, whence: i32) -> Result<u64, Errno> {
        let st = self.inner.read();
        let f = st.backing.as_ref().ok_or(Errno::EBADF)?;
        let layout = st.layout;
        let clen = f.metadata().map_err(errno)?.len();
        let size = layout.plain_size(clen);
        if off >= size {
            return Err(Errno::ENXIO);
        }
        let nblocks = size.div_ceil(BS);
        match whence {
            libc::SEEK_DATA => match Backing::new(f, layout)
                .next_data(off / BS, nblocks, clen)
                .map_err(errno)?
            {
                Some(b) => Ok((b * BS).max(off)),
                None => Err(Errno::ENXIO),
            },
            libc::SEEK_HOLE => {
                let h = Backing::new(f, layout)
                    .next_hole(off / BS, nblocks, clen)
                    .map_err(errno)?;
                Ok(if h >= nblocks { size } else { (h * BS).max(off) })
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

#[cfg(test)]
mod model_tests {
    //! Property test of the block layer against an in-memory model: random writes (block
    //! aligned and not, zero-filled ones that become holes), truncates up and down, hole
    //! punches, fallocate, reads at random ranges, compared byte for byte, and the whole
    //! file compared again after reopening it from disk with a fresh state.

    use std::os::fd::AsFd;

    use super::*;
    use crate::crypto::SecretKey;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn open(path: &std::path::Path, keys: &VolumeKeys) -> FileData {
        let pfd = File::from(sys::openat(sys::cwd(), &sys::cstr(path.as_os_str()).unwrap(), libc::O_PATH, 0).unwrap());
        let d = FileData::default();
        d.open(pfd.as_fd(), keys, &Arc::default(), true).unwrap();
        d
    }

    fn all(d: &FileData, keys: &VolumeKeys) -> Vec<u8> {
        let mut out = vec![];
        loop {
            let chunk = d.read(keys, out.len() as u64, 1 << 20).unwrap();
            if chunk.is_empty() {
                return out;
            }
            out.extend_from_slice(&chunk);
        }
    }

    #[test]
    fn random_operations_match_a_byte_model() {
        for format in [1, 2, 3] {
            random_operations_in_format(format);
        }
    }

    fn random_operations_in_format(format: u32) {
        let keys = VolumeKeys::derive(&SecretKey::random(), [7; 16]).for_format(format);
        let dir = tempfile::tempdir().unwrap();
        let mut total_ops = 0;
        for seed in 1..=12u64 {
            let path = dir.path().join(format!("f{seed}"));
            std::fs::write(&path, b"").unwrap();
            let mut d = open(&path, &keys);
            let mut model: Vec<u8> = vec![];
            let mut rng = Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
            const MAX: u64 = 300_000;
            for op in 0..400 {
                total_ops += 1;
                match rng.below(10) {
                    0..=3 => {
                        let aligned = rng.below(3) == 0;
                        let mut off = rng.below(MAX);
                        let big = rng.below(4) == 0;
                        let mut len = 1 + rng.below(if big { 70_000 } else { 9000 });
                        if aligned {
                            off -= off % BS;
                            len = (len / BS + 1) * BS;
                        }
                        let zero = rng.below(5) == 0;
                        let data: Vec<u8> = (0..len).map(|_| if zero { 0 } else { rng.next() as u8 }).collect();
                        assert_eq!(d.write(&keys, off, &data).unwrap(), data.len());
                        let end = (off + len) as usize;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&data);
                    }
                    4..=6 => {
                        let off = rng.below(model.len() as u64 + 5000);
                        let len = 1 + rng.below(20_000) as u32;
                        let got = d.read(&keys, off, len).unwrap();
                        let s = (off as usize).min(model.len());
                        let e = (off as usize + len as usize).min(model.len());
                        assert_eq!(
                            got,
                            &model[s..e],
                            "format {format} seed {seed} op {op}: read {off}+{len}"
                        );
                    }
                    7 => {
                        let size = rng.below(MAX);
                        d.truncate(&keys, size).unwrap();
                        model.resize(size as usize, 0);
                    }
                    8 => {
                        let off = rng.below(model.len() as u64 + 1);
                        let len = 1 + rng.below(40_000);
                        d.fallocate(&keys, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len)
                            .unwrap();
                        let s = (off as usize).min(model.len());
                        let e = ((off + len) as usize).min(model.len());
                        model[s..e].fill(0);
                    }
                    _ => {
                        let off = rng.below(MAX);
                        let len = 1 + rng.below(30_000);
                        d.fallocate(&keys, 0, off, len).unwrap();
                        let end = (off + len) as usize;
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                    }
                }
                if op % 100 == 99 {
                    // From disk, with no cached state.
                    d.release();
                    d = open(&path, &keys);
                    assert_eq!(
                        all(&d, &keys),
                        model,
                        "format {format} seed {seed} op {op}: whole file after reopen"
                    );
                }
            }
            assert_eq!(all(&d, &keys), model, "seed {seed}: final content");
            d.release();
        }
        assert_eq!(total_ops, 12 * 400);
    }
}
