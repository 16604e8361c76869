//! The encrypted data path of one regular file.
//!
//! Reading: map the plaintext range to whole blocks, `pread` their ciphertext in one call,
//! open each block (tag check; all-zero blocks are holes), copy out the requested bytes.
//!
//! Writing: seal every touched block and `pwrite` them in one call. A block the write covers
//! entirely is sealed straight from the caller's data; only a partially covered block is
//! read, opened and merged first (read-modify-write). Writing past the end first pads an
//! old partial last block to a full block, so that every block but the last is full.
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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use fuser::Errno;
use parking_lot::RwLock;

use crate::format::content::{block_offset, cipher_size, plain_size};
use crate::format::file::HeaderError;
use crate::format::{
    ContentCipher, FileHeader, VolumeKeys, BLOCK_OVERHEAD, BLOCK_SIZE, CIPHER_BLOCK_SIZE, FILE_HEADER_LEN,
};
use crate::util::read_full_at;

use super::sys;

const BS: u64 = BLOCK_SIZE;
const CB: u64 = CIPHER_BLOCK_SIZE;
const OVH: usize = BLOCK_OVERHEAD as usize;

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

#[derive(Default)]
struct State {
    backing: Option<Arc<File>>,
    writable: bool,
    opens: u32,
    cipher: CipherState,
}

/// Content state of one inode.
pub struct FileData {
    inner: RwLock<State>,
    /// Backing file length while open ([`UNKNOWN`] when it must be read with fstat). Every
    /// length change goes through this file's exclusive lock, so reads need no fstat.
    clen: AtomicU64,
}

impl Default for FileData {
    fn default() -> Self {
        FileData {
            inner: RwLock::new(State::default()),
            clen: AtomicU64::new(UNKNOWN),
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

/// Logs a block that fails authentication once per (file, block), not once per read: a
/// database retrying a damaged page must not flood the log. Repeats are counted and
/// summarised every 1000 occurrences.
fn report_bad_block(f: &File, block: u64, e: crate::format::content::BlockError) {
    use std::os::unix::fs::MetadataExt;
    /// (backing dev, backing inode, block) -> failures seen.
    type Seen = lru::LruCache<(u64, u64, u64), u64>;
    static SEEN: parking_lot::Mutex<Option<Seen>> = parking_lot::Mutex::new(None);
    let (dev, ino) = f.metadata().map(|m| (m.dev(), m.ino())).unwrap_or((0, 0));
    let mut g = SEEN.lock();
    let seen = g.get_or_insert_with(|| lru::LruCache::new(std::num::NonZeroUsize::new(4096).unwrap()));
    let n = {
        let c = seen.get_or_insert_mut((dev, ino, block), || 0);
        *c += 1;
        *c
    };
    drop(g);
    let start = block * BS;
    if n == 1 {
        tracing::error!(file = %describe(f.as_fd()), block, bytes = %format_args!("{start}..{}", start + BS), error = ?e,
            "block failed authentication (corrupted or tampered); reads of this range return EIO (logged once; run cmkfs fsck)");
    } else if n % 1000 == 0 {
        tracing::warn!(file = %describe(f.as_fd()), block, failures = n, "block still fails authentication");
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
    /// the file header.
    pub fn open(&self, path_fd: BorrowedFd<'_>, keys: &VolumeKeys, want_write: bool) -> Result<(), Errno> {
        let mut st = self.inner.write();
        if st.backing.is_none() || (want_write && !st.writable) {
            let (f, writable) = match sys::reopen(path_fd, libc::O_RDWR) {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EACCES) && !want_write => {
                    (sys::reopen(path_fd, libc::O_RDONLY).map_err(errno)?, false)
                }
                Err(e) => return Err(errno(e)),
            };
            st.backing = Some(Arc::new(File::from(f)));
            st.writable = writable;
            st.cipher = CipherState::Unknown;
            self.clen.store(UNKNOWN, Relaxed);
        }
        if matches!(st.cipher, CipherState::Unknown) {
            let f = st.backing.clone().unwrap();
            st.cipher = load_cipher(&f, keys).map_err(errno)?;
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
        st.opens = st.opens.saturating_sub(1);
        if st.opens == 0 {
            st.backing = None;
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

    /// Reads up to `len` plaintext bytes at `off`.
    pub fn read(&self, keys: &VolumeKeys, off: u64, len: u32) -> Result<Vec<u8>, Errno> {
        if matches!(self.inner.read().cipher, CipherState::Unknown) {
            self.reload_if_dropped(keys)?;
        }
        let st = self.inner.read();
        let f = st.backing.as_ref().ok_or(Errno::EBADF)?;
        let cipher = match &st.cipher {
            CipherState::Ready(c) => c,
            CipherState::Empty => return Ok(vec![]),
            // A damaged header is an error even where the size says "nothing to read":
            // an empty answer would be wrong plaintext.
            CipherState::Bad(_) | CipherState::Unknown => return Err(Errno::EIO),
        };
        let clen = self.cached_len(f)?;
        let size = plain_size(clen);
        if off >= size || len == 0 {
            return Ok(vec![]);
        }
        let end = (off + len as u64).min(size);
        let first = off / BS;
        let last = (end - 1) / BS;
        let cstart = block_offset(first);
        let cend = block_offset(last + 1).min(clen);
        let mut cbuf = vec![0u8; (cend - cstart) as usize];
        let n = read_full_at(f, &mut cbuf, cstart).map_err(errno)?;
        if n < cbuf.len() {
            tracing::error!(file = %describe(f.as_fd()), "short read of backing file");
            return Err(Errno::EIO);
        }
        let plain_end = ((last + 1) * BS).min(size);
        let mut plain = vec![0u8; (plain_end - first * BS) as usize];
        for (i, stored) in cbuf.chunks(CB as usize).enumerate() {
            let b = first + i as u64;
            let p0 = i * BS as usize;
            let p1 = (p0 + stored.len().saturating_sub(OVH)).min(plain.len());
            if let Err(e) = cipher.open_block(b, stored, &mut plain[p0..p1]) {
                report_bad_block(f, b, e);
                return Err(Errno::EIO);
            }
        }
        let s = (off - first * BS) as usize;
        let e = (end - first * BS) as usize;
        plain.truncate(e);
        plain.drain(..s);
        Ok(plain)
    }

    /// Reads and opens block `b` whose stored plaintext length is `len` into `out[..len]`.
    fn read_block(f: &File, cipher: &ContentCipher, b: u64, len: usize, out: &mut [u8]) -> Result<(), Errno> {
        let mut stored = vec![0u8; len + OVH];
        let n = read_full_at(f, &mut stored, block_offset(b)).map_err(errno)?;
        if n < stored.len() {
            tracing::error!(file = %describe(f.as_fd()), block = b, "block is truncated");
            return Err(Errno::EIO);
        }
        cipher.open_block(b, &stored, &mut out[..len]).map_err(|e| {
            report_bad_block(f, b, e);
            Errno::EIO
        })
    }

    /// Re-seals block `b` changing its plaintext length from `old_len` to `new_len` (zero
    /// padded or cut).
    fn resize_block(f: &File, cipher: &ContentCipher, b: u64, old_len: usize, new_len: usize) -> Result<(), Errno> {
        let mut p = [0u8; BS as usize];
        Self::read_block(f, cipher, b, old_len, &mut p)?;
        if new_len > old_len {
            p[old_len..new_len].fill(0);
        }
        let mut out = vec![0u8; new_len + OVH];
        cipher.seal_block(b, &p[..new_len], &mut out);
        zeroize::Zeroize::zeroize(&mut p);
        f.write_all_at(&out, block_offset(b)).map_err(errno)
    }

    /// After a failed write: puts the old partial last block back and cuts the backing file
    /// to its old length, so that a write that ran out of space leaves neither a torn block
    /// past the old end nor a changed size. (Blocks inside the old length are rewritten in
    /// place, which needs no new space on a non-copy-on-write backing filesystem.)
    fn undo_growth(
        f: &File,
        cipher: &ContentCipher,
        before: u64,
        old_tail: Option<&(u64, usize, zeroize::Zeroizing<[u8; BS as usize]>)>,
    ) {
        if let Some((b, l, keep)) = old_tail {
            let mut out = vec![0u8; l + OVH];
            cipher.seal_block(*b, &keep[..*l], &mut out);
            if let Err(e) = f.write_all_at(&out, block_offset(*b)) {
                tracing::error!(file = %describe(f.as_fd()), block = b, error = %e, "cannot restore the last block after a failed write");
            }
        }
        if f.metadata().map(|m| m.len() > before).unwrap_or(true) {
            if let Err(e) = f.set_len(before) {
                tracing::error!(file = %describe(f.as_fd()), error = %e, "cannot cut the file back after a failed write");
            }
        }
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
            CipherState::Bad(_) | CipherState::Unknown => Err(Errno::EIO),
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

    /// Replaces the file's DEK and file id and re-encrypts its content through a redo journal
    /// (see [`super::rekey`]). Holds the file exclusively throughout. Returns the bytes
    /// re-encrypted (ciphertext length).
    pub fn rekey(&self, keys: &VolumeKeys, journal: &super::rekey::Journal, rel_path: &str) -> Result<u64, Errno> {
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
        let root = journal.done.parent().expect("journal is in the cipher root");
        crate::util::atomic_write(&journal.path_file, format!("{rel_path}\n").as_bytes(), 0o600).map_err(errno)?;
        let j = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&journal.tmp)
            .map_err(errno)?;
        j.write_all_at(&hdr, 0).map_err(errno)?;
        let mut stored = vec![0u8; CB as usize];
        let mut plain = vec![0u8; BS as usize];
        let mut b = 0u64;
        while block_offset(b) < clen {
            let off = block_offset(b);
            let n = (clen - off).min(CB) as usize;
            if n <= OVH {
                break; // a torn fragment: not part of the plaintext
            }
            let got = read_full_at(&f, &mut stored[..n], off).map_err(errno)?;
            if got < n {
                return Err(Errno::EIO);
            }
            if !crate::format::content::is_zero(&stored[..n]) {
                let p = &mut plain[..n - OVH];
                old.open_block(b, &stored[..n], p).map_err(|e| {
                    tracing::error!(file = %describe(f.as_fd()), block = b, error = ?e, "cannot rekey: block fails authentication");
                    Errno::EIO
                })?;
                new.seal_block(b, p, &mut stored[..n]);
                j.write_all_at(&stored[..n], off).map_err(errno)?;
            }
            b += 1;
        }
        zeroize::Zeroize::zeroize(&mut plain[..]);
        j.set_len(clen).map_err(errno)?;
        j.sync_all().map_err(errno)?;
        std::fs::rename(&journal.tmp, &journal.done).map_err(errno)?;
        crate::util::fsync_dir(root).map_err(errno)?;
        crate::util::crash_point("rekey:journal-committed");
        super::rekey::replay(&j, &f).map_err(errno)?;
        st.cipher = CipherState::Ready(new);
        drop(st);
        std::fs::remove_file(&journal.done).map_err(errno)?;
        let _ = std::fs::remove_file(&journal.path_file);
        crate::util::fsync_dir(root).map_err(errno)?;
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
        let before = self.cached_len(&f)?;
        let size = plain_size(before);
        // Anything below may change the length; on success it is set to the exact new one.
        self.clen.store(UNKNOWN, Relaxed);
        let cipher = Self::ensure_cipher(&mut st, keys)?;
        let end = off.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        let first = off / BS;
        let last = (end - 1) / BS;
        // An old partial last block that now ends up in the middle becomes a full block. Its
        // old content is kept so that a failed write (ENOSPC, EDQUOT) can put it back.
        let mut old_tail = None;
        if size % BS != 0 && size / BS < first {
            let (b, l) = (size / BS, (size % BS) as usize);
            let mut keep = zeroize::Zeroizing::new([0u8; BS as usize]);
            Self::read_block(&f, &cipher, b, l, &mut keep[..])?;
            old_tail = Some((b, l, keep));
            if let Err(e) = Self::resize_block(&f, &cipher, b, l, BS as usize) {
                Self::undo_growth(&f, &cipher, before, old_tail.as_ref());
                return Err(e);
            }
        }
        let new_size = size.max(end);
        let last_len = (new_size - last * BS).min(BS);
        let out_len = (last - first) * CB + last_len + OVH as u64;
        let mut out = vec![0u8; out_len as usize];
        let mut p = [0u8; BS as usize];
        // Fresh random nonces for every block of the request, from one getrandom call.
        let mut nonces = vec![0u8; 12 * (last - first + 1) as usize];
        crate::crypto::fill_random(&mut nonces);
        for b in first..=last {
            let nonce: &[u8; 12] = nonces[12 * (b - first) as usize..][..12].try_into().unwrap();
            let bstart = b * BS;
            let blen = (new_size - bstart).min(BS) as usize;
            let ws = (off.max(bstart) - bstart) as usize;
            let we = ((end.min(bstart + BS)) - bstart) as usize;
            let src = &data[(bstart + ws as u64 - off) as usize..(bstart + we as u64 - off) as usize];
            let o0 = ((b - first) * CB) as usize;
            let dst = &mut out[o0..o0 + blen + OVH];
            if ws == 0 && we == blen {
                cipher.seal_block_with_nonce(b, nonce, src, dst);
            } else {
                let old_len = if bstart < size {
                    (size - bstart).min(BS) as usize
                } else {
                    0
                };
                p[..blen].fill(0);
                if old_len > 0 {
                    Self::read_block(&f, &cipher, b, old_len, &mut p)?;
                }
                p[ws..we].copy_from_slice(src);
                cipher.seal_block_with_nonce(b, nonce, &p[..blen], dst);
            }
        }
        zeroize::Zeroize::zeroize(&mut p);
        if let Err(e) = f.write_all_at(&out, block_offset(first)) {
            Self::undo_growth(&f, &cipher, before, old_tail.as_ref());
            return Err(errno(e));
        }
        self.clen
            .store(before.max(block_offset(first) + out.len() as u64), Relaxed);
        Ok(data.len())
    }

    /// Sets the plaintext size. Caller must have opened the file (see [`FileData::open`]).
    pub fn truncate(&self, keys: &VolumeKeys, new_size: u64) -> Result<(), Errno> {
        let mut st = self.inner.write();
        let f = st.backing.clone().ok_or(Errno::EBADF)?;
        if !st.writable {
            return Err(Errno::EACCES);
        }
        let before = self.cached_len(&f)?;
        let size = plain_size(before);
        if new_size == size && new_size != 0 {
            return Ok(());
        }
        self.clen.store(UNKNOWN, Relaxed);
        if new_size == 0 {
            // Dropping the header too: the next write starts a new file id and DEK.
            f.set_len(0).map_err(errno)?;
            st.cipher = CipherState::Empty;
            self.clen.store(0, Relaxed);
            return Ok(());
        }
        let cipher = Self::ensure_cipher(&mut st, keys)?;
        if new_size < size {
            if new_size % BS != 0 {
                let b = new_size / BS;
                let old_len = (size - b * BS).min(BS) as usize;
                Self::resize_block(&f, &cipher, b, old_len, (new_size % BS) as usize)?;
            }
        } else if size % BS != 0 {
            let b = size / BS;
            let new_len = (new_size - b * BS).min(BS) as usize;
            Self::resize_block(&f, &cipher, b, (size % BS) as usize, new_len)?;
        }
        // Growing leaves the new range unwritten: a hole that reads as zeros.
        f.set_len(cipher_size(new_size)).map_err(errno)?;
        self.clen.store(cipher_size(new_size), Relaxed);
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
        let f = self.backing().ok_or(Errno::EBADF)?;
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let cstart = block_offset(off / BS);
        let cend = block_offset(end.div_ceil(BS));
        sys::fallocate(f.as_fd(), libc::FALLOC_FL_KEEP_SIZE, cstart, cend - cstart).map_err(errno)?;
        let size = plain_size(f.metadata().map_err(errno)?.len());
        if mode == 0 && end > size {
            self.truncate(keys, end)?;
        }
        Ok(())
    }

    fn punch_hole(&self, keys: &VolumeKeys, off: u64, end: u64) -> Result<(), Errno> {
        let f = self.backing().ok_or(Errno::EBADF)?;
        let size = plain_size(f.metadata().map_err(errno)?.len());
        let end = end.min(size);
        if off >= end {
            return Ok(());
        }
        // Only the first and the last touched block can be partially covered: those are
        // rewritten with zeros in the range; the whole blocks between become backing holes.
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
            let c0 = block_offset(full.start);
            let c1 = block_offset(full.end).min(clen);
            if c1 > c0 {
                sys::fallocate(
                    f.as_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    c0,
                    c1 - c0,
                )
                .map_err(errno)?;
            }
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE in plaintext offsets. A block is a hole when its stored range
    /// is a backing hole or all zeros (the same rule reads use), so results agree with what
    /// reads return; backing SEEK_DATA/SEEK_HOLE skip long runs without reading them.
    pub fn seek(&self, off: u64, whence: i32) -> Result<u64, Errno> {
        let st = self.inner.read();
        let f = st.backing.as_ref().ok_or(Errno::EBADF)?;
        let clen = f.metadata().map_err(errno)?.len();
        let size = plain_size(clen);
        if off >= size {
            return Err(Errno::ENXIO);
        }
        let fd = f.as_fd();
        let block_of = |c: u64| c.saturating_sub(FILE_HEADER_LEN) / CB;
        let is_hole = |b: u64| -> Result<bool, Errno> {
            let (s, e) = (block_offset(b), block_offset(b + 1).min(clen));
            if s >= e {
                return Ok(true);
            }
            match sys::lseek(fd, s, libc::SEEK_DATA).map_err(errno)? {
                None => Ok(true),
                Some(d) if d >= e => Ok(true),
                Some(_) => {
                    let mut buf = vec![0u8; (e - s) as usize];
                    let n = read_full_at(f, &mut buf, s).map_err(errno)?;
                    Ok(crate::format::content::is_zero(&buf[..n]))
                }
            }
        };
        let mut b = off / BS;
        match whence {
            libc::SEEK_DATA => loop {
                if b * BS >= size {
                    return Err(Errno::ENXIO);
                }
                let d = match sys::lseek(fd, block_offset(b), libc::SEEK_DATA).map_err(errno)? {
                    Some(d) if d < clen => d,
                    _ => return Err(Errno::ENXIO),
                };
                let db = block_of(d).max(b);
                if db * BS >= size {
                    return Err(Errno::ENXIO);
                }
                if !is_hole(db)? {
                    return Ok((db * BS).max(off));
                }
                b = db + 1;
            },
            libc::SEEK_HOLE => loop {
                if b * BS >= size {
                    return Ok(size);
                }
                if is_hole(b)? {
                    return Ok((b * BS).max(off));
                }
                match sys::lseek(fd, block_offset(b), libc::SEEK_HOLE).map_err(errno)? {
                    Some(h) if h < clen => b = block_of(h).max(b + 1),
                    _ => return Ok(size),
                }
            },
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
        let pfd = File::from(
            sys::openat(
                unsafe { std::os::fd::BorrowedFd::borrow_raw(libc::AT_FDCWD) },
                &sys::cstr(path.as_os_str()).unwrap(),
                libc::O_PATH,
                0,
            )
            .unwrap(),
        );
        let d = FileData::default();
        d.open(pfd.as_fd(), keys, true).unwrap();
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
        let keys = VolumeKeys::derive(&SecretKey::random(), [7; 16]);
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
                        assert_eq!(got, &model[s..e], "seed {seed} op {op}: read {off}+{len}");
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
                    assert_eq!(all(&d, &keys), model, "seed {seed} op {op}: whole file after reopen");
                }
            }
            assert_eq!(all(&d, &keys), model, "seed {seed}: final content");
            d.release();
        }
        assert_eq!(total_ops, 12 * 400);
    }
}
