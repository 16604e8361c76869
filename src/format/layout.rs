//! Where a file's blocks live in its backing file, and how they are read and written there.
//!
//! Two layouts exist; the volume's format version picks one for every file of the volume.
//!
//! **Layout 1** (format 1): the 84-byte file header, then the stored blocks back to back,
//! each `nonce (12) || ciphertext || tag (16)`, 4,124 bytes for a full block. A stored block
//! spans two or three pages of the backing file. The kernel copies a write into the page
//! cache one page at a time, and a process killed in the middle of a `pwrite` stops between
//! two pages; after a power loss, pages reach the disk in any order. Either way a block can
//! end up half old and half new: it fails its tag check and reads as EIO until it is
//! overwritten.
//!
//! **Layout 2** (format 2) is built so that an interrupted block write leaves the old or the
//! new content readable:
//!
//! ```text
//! page 0          file header (84 bytes), zero to byte 128, entries of blocks 0..62
//! pages 1..=62    ciphertext of blocks 0..62, one block per page, page aligned
//! page 63         zero to byte 128, entries of blocks 62..124
//! pages 64..=125  ciphertext of blocks 62..124
//! ...             (a group = 1 entry page + 62 data pages)
//! ```
//!
//! - A block's ciphertext is exactly one page of the backing file, so it is never torn
//!   within itself by a killed writer: the page holds the old or the new ciphertext.
//! - The nonce and tag live in the block's 64-byte *entry*: two slots of `nonce || tag`,
//!   the writer's session stamp, and which slot is current. A write puts the new nonce and tag
//!   into the slot that does *not* authenticate the current ciphertext, marks it current,
//!   writes the entries (one `pwrite`, within one page), and only then writes the ciphertext
//!   pages. A reader tries the current slot and, if the tag fails, the other one. So a write
//!   interrupted after the entries leaves the old ciphertext, which the other slot still
//!   authenticates: the old content reads back.
//! - An entry of all zeros is a hole (reads as zeros). If the current slot fails and the other
//!   slot is empty, the block was a hole before an unfinished write: it reads as zeros only if
//!   its ciphertext page is still all zeros, otherwise EIO.
//!
//! **Which slot to write.** Normally the current slot authenticates the ciphertext, so the
//! writer takes the other. After a crash the current slot may belong to a write that never
//! reached the ciphertext; writing the other slot then would overwrite the only slot that
//! works. Every mount that writes picks a random session stamp, stored in each entry it
//! writes, and leaves a marker file in the cipher directory that a clean unmount removes
//! (see `crate::fs::session`). Markers left behind name sessions that crashed. An entry
//! stamped by a crashed session is checked (ciphertext read, tag verified) before its first
//! overwrite; every other entry is trusted, so normal writes pay nothing for this.
//!
//! What this does not cover: after a power loss (not a process crash), pages written since
//! the last `fsync` can reach the disk in any order; a ciphertext page that arrives without
//! its entry fails both slots (EIO until overwritten). Synced data is never affected.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::util::read_full_at;

use super::content::{block_offset, is_zero, BlockError, ContentCipher, BLOCK_OVERHEAD, BLOCK_SIZE, CIPHER_BLOCK_SIZE};
use super::file::FILE_HEADER_LEN;

const BS: u64 = BLOCK_SIZE;
const CB: u64 = CIPHER_BLOCK_SIZE;
const OVH: usize = BLOCK_OVERHEAD as usize;
/// Backing page size that layout 2 aligns ciphertext to.
pub const PAGE: u64 = 4096;
/// Bytes at the start of every entry page before the first entry (the file header in page 0).
pub const ENTRY_AREA: u64 = 128;
/// Bytes per entry.
pub const ENTRY_LEN: u64 = 64;
/// Blocks per group (entries per entry page).
pub const GROUP_BLOCKS: u64 = (PAGE - ENTRY_AREA) / ENTRY_LEN;
const GROUP_PAGES: u64 = GROUP_BLOCKS + 1;
const SLOT_LEN: usize = NONCE_LEN + TAG_LEN;
const EL: usize = ENTRY_LEN as usize;

/// How a volume lays out file content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Format 1: header, then `nonce || ciphertext || tag` blocks back to back.
    V1,
    /// Format 2: page-aligned ciphertext, nonce and tag in two-slot entries.
    V2,
}

/// What reading one block found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRead {
    /// The block's current content.
    Data,
    /// A hole: zeros.
    Hole,
    /// Layout 2: the current slot did not authenticate but the previous one did: a write of
    /// this block was interrupted and the old content is what is on disk.
    Previous,
}

/// Why a run of blocks could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The backing file could not be read.
    Io(io::Error),
    /// The backing file ends before the block does.
    Short(u64),
    /// Block `.0` failed authentication.
    Bad(u64, BlockError),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// One layout-2 entry: two `nonce || tag` slots, the session stamp of its last writer and
/// the current slot.
///
/// ```text
/// 0..28   slot 0 (nonce 12, tag 16)     56..60  stamp, u32 big-endian
/// 28..56  slot 1                        60      current slot (0 or 1)   61..64 zero
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// The two slots; all zeros is an empty slot.
    pub slots: [[u8; SLOT_LEN]; 2],
    /// Session stamp of the write that set the current slot.
    pub stamp: u32,
    /// Index of the current slot.
    pub cur: usize,
}

impl Entry {
    /// Parses 64 entry bytes (any bytes parse; the tags decide what is valid).
    pub fn parse(b: &[u8]) -> Entry {
        let mut e = Entry::default();
        e.slots[0].copy_from_slice(&b[..SLOT_LEN]);
        e.slots[1].copy_from_slice(&b[SLOT_LEN..2 * SLOT_LEN]);
        e.stamp = u32::from_be_bytes(b[56..60].try_into().unwrap());
        e.cur = (b[60] & 1) as usize;
        e
    }

    /// Serialises into 64 bytes.
    pub fn encode(&self, out: &mut [u8]) {
        out[..SLOT_LEN].copy_from_slice(&self.slots[0]);
        out[SLOT_LEN..2 * SLOT_LEN].copy_from_slice(&self.slots[1]);
        out[56..60].copy_from_slice(&self.stamp.to_be_bytes());
        out[60] = self.cur as u8;
        out[61..64].fill(0);
    }

    /// An entry with both slots empty: a hole.
    pub fn is_hole(&self) -> bool {
        slot_empty(&self.slots[0]) && slot_empty(&self.slots[1])
    }
}

fn slot_empty(s: &[u8; SLOT_LEN]) -> bool {
    s.iter().all(|&b| b == 0)
}

fn split_slot(s: &[u8; SLOT_LEN]) -> (&[u8; NONCE_LEN], &[u8; TAG_LEN]) {
    (s[..NONCE_LEN].try_into().unwrap(), s[NONCE_LEN..].try_into().unwrap())
}

/// Session stamps (layout 2). See the module documentation.
mod session {
    use parking_lot::RwLock;

    pub(super) struct Session {
        pub stamp: u32,
        pub crashed: Vec<u32>,
    }

    pub(super) static SESSION: RwLock<Session> = parking_lot::const_rwlock(Session {
        stamp: 0,
        crashed: Vec::new(),
    });
}

/// Sets this process's session stamp and the stamps of sessions that crashed; done once by
/// the mount before it serves writes. Without it the stamp is 0 and nothing is suspect.
pub fn set_session(stamp: u32, crashed: Vec<u32>) {
    let mut s = session::SESSION.write();
    s.stamp = stamp;
    s.crashed = crashed;
}

/// This process's session stamp.
pub fn session_stamp() -> u32 {
    session::SESSION.read().stamp
}

/// Stamp of entries whose ciphertext write failed (never a session stamp): always checked.
pub const UNSURE_STAMP: u32 = u32::MAX;

/// True when an entry stamped `stamp` may belong to an unfinished write.
fn suspect(stamp: u32) -> bool {
    if stamp == UNSURE_STAMP {
        return true;
    }
    let s = session::SESSION.read();
    stamp != s.stamp && s.crashed.contains(&stamp)
}

/// Layout-2 group arithmetic: (group, index in group).
fn group(b: u64) -> (u64, u64) {
    (b / GROUP_BLOCKS, b % GROUP_BLOCKS)
}

/// Layout 2: offset of block `b`'s ciphertext page.
pub fn data_offset(b: u64) -> u64 {
    let (g, i) = group(b);
    (g * GROUP_PAGES + 1 + i) * PAGE
}

/// Layout 2: offset of block `b`'s entry.
pub fn entry_offset(b: u64) -> u64 {
    let (g, i) = group(b);
    g * GROUP_PAGES * PAGE + ENTRY_AREA + i * ENTRY_LEN
}

/// Layout 2: last block of the group holding `b`.
fn group_last(b: u64) -> u64 {
    group(b).0 * GROUP_BLOCKS + GROUP_BLOCKS - 1
}

/// Reads `buf.len()` bytes at `off`; what lies past the end of the file reads as zeros.
fn read_or_zero(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let n = read_full_at(f, buf, off)?;
    buf[n..].fill(0);
    Ok(())
}

impl Layout {
    /// The layout of a volume format version.
    pub fn for_format(version: u32) -> Layout {
        if version <= 1 {
            Layout::V1
        } else {
            Layout::V2
        }
    }

    /// The version field of file headers in this layout.
    pub fn file_version(self) -> u16 {
        match self {
            Layout::V1 => 1,
            Layout::V2 => 2,
        }
    }

    /// Plaintext size of a file whose backing file is `clen` bytes long.
    pub fn plain_size(self, clen: u64) -> u64 {
        match self {
            Layout::V1 => super::content::plain_size(clen),
            Layout::V2 => {
                if clen <= PAGE {
                    return 0;
                }
                let page = (clen - 1) / PAGE;
                let (g, r) = (page / GROUP_PAGES, page % GROUP_PAGES);
                if r == 0 {
                    // Ends in an entry page: entries of an unfinished append, no block yet.
                    g * GROUP_BLOCKS * BS
                } else {
                    (g * GROUP_BLOCKS + r - 1) * BS + (clen - page * PAGE)
                }
            }
        }
    }

    /// Backing length for a plaintext size (0 stays 0: an empty file has no header).
    pub fn cipher_size(self, plain: u64) -> u64 {
        match self {
            Layout::V1 => super::content::cipher_size(plain),
            Layout::V2 => {
                if plain == 0 {
                    return 0;
                }
                let last = (plain - 1) / BS;
                data_offset(last) + (plain - last * BS)
            }
        }
    }

    /// Backing byte range to preallocate for blocks `first..end`.
    pub fn span(self, first: u64, end: u64) -> (u64, u64) {
        match self {
            Layout::V1 => (block_offset(first), block_offset(end)),
            Layout::V2 => (group(first).0 * GROUP_PAGES * PAGE, data_offset(end - 1) + PAGE),
        }
    }

    /// Reads and opens the blocks that `out` covers, starting at block `first`, of a file of
    /// plaintext size `size` (`out.len()` is `min(size, end of the last block) - first*4096`).
    pub fn read_run(self, f: &File, c: &ContentCipher, first: u64, out: &mut [u8]) -> Result<(), ReadError> {
        if out.is_empty() {
            return Ok(());
        }
        let nb = (out.len() as u64).div_ceil(BS);
        let last = first + nb - 1;
        let last_len = out.len() - ((nb - 1) * BS) as usize;
        match self {
            Layout::V1 => {
                let cstart = block_offset(first);
                let cend = block_offset(last) + (last_len + OVH) as u64;
                let mut cbuf = vec![0u8; (cend - cstart) as usize];
                if read_full_at(f, &mut cbuf, cstart)? < cbuf.len() {
                    return Err(ReadError::Short(last));
                }
                for (i, stored) in cbuf.chunks(CB as usize).enumerate() {
                    let b = first + i as u64;
                    let p0 = i * BS as usize;
                    let p1 = p0 + stored.len() - OVH;
                    c.open_block(b, stored, &mut out[p0..p1])
                        .map_err(|e| ReadError::Bad(b, e))?;
                }
                Ok(())
            }
            Layout::V2 => {
                let mut ents = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
                let mut b = first;
                while b <= last {
                    let gl = last.min(group_last(b));
                    let n = (gl - b + 1) as usize;
                    read_or_zero(f, &mut ents[..n * EL], entry_offset(b))?;
                    let o0 = ((b - first) * BS) as usize;
                    let o1 = (((gl + 1 - first) * BS) as usize).min(out.len());
                    if read_full_at(f, &mut out[o0..o1], data_offset(b))? < o1 - o0 {
                        return Err(ReadError::Short(gl));
                    }
                    for k in 0..n {
                        let bb = b + k as u64;
                        let p0 = o0 + k * BS as usize;
                        let p1 = (p0 + BS as usize).min(o1);
                        let e = Entry::parse(&ents[k * EL..][..EL]);
                        open_v2(f, c, bb, &e, &mut out[p0..p1]).map_err(|err| match err {
                            ReadError::Bad(_, x) => ReadError::Bad(bb, x),
                            other => other,
                        })?;
                    }
                    b = gl + 1;
                }
                Ok(())
            }
        }
    }

    /// Reads and opens block `b`, whose plaintext length is `len`, into `out[..len]`.
    pub fn read_block(
        self,
        f: &File,
        c: &ContentCipher,
        b: u64,
        len: usize,
        out: &mut [u8],
    ) -> Result<BlockRead, ReadError> {
        let out = &mut out[..len];
        match self {
            Layout::V1 => {
                let mut stored = vec![0u8; len + OVH];
                if read_full_at(f, &mut stored, block_offset(b))? < stored.len() {
                    return Err(ReadError::Short(b));
                }
                if is_zero(&stored) {
                    out.fill(0);
                    return Ok(BlockRead::Hole);
                }
                c.open_block(b, &stored, out).map_err(|e| ReadError::Bad(b, e))?;
                Ok(BlockRead::Data)
            }
            Layout::V2 => {
                let mut ent = [0u8; EL];
                read_or_zero(f, &mut ent, entry_offset(b))?;
                if read_full_at(f, out, data_offset(b))? < len {
                    return Err(ReadError::Short(b));
                }
                open_v2(f, c, b, &Entry::parse(&ent), out)
            }
        }
    }

    /// Seals and writes blocks `first..=last`. `fill(b, buf)` puts block `b`'s plaintext
    /// into `buf` (its length follows from `new_size`); it is called for a block before
    /// anything of that block is written, so it may read the block's old content.
    /// `old_size` is the plaintext size before this write: blocks at or past it get fresh
    /// entries (layout 2).
    #[allow(clippy::too_many_arguments)] // the run and both sizes are all needed; a struct would only rename them
    pub fn write_run(
        self,
        f: &File,
        c: &ContentCipher,
        first: u64,
        last: u64,
        new_size: u64,
        old_size: u64,
        fill: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let blen = |b: u64| (new_size - b * BS).min(BS) as usize;
        let nb = (last - first + 1) as usize;
        let mut nonces = vec![0u8; NONCE_LEN * nb];
        crate::crypto::fill_random(&mut nonces);
        let nonce = |b: u64| -> &[u8; NONCE_LEN] {
            nonces[NONCE_LEN * (b - first) as usize..][..NONCE_LEN]
                .try_into()
                .unwrap()
        };
        match self {
            Layout::V1 => {
                let out_len = (last - first) * CB + (blen(last) + OVH) as u64;
                // Holds only ciphertext once every block is sealed; zeroized on an early error,
                // when a block's plaintext may still be in it. (A zeroize-on-drop buffer cost
                // about 20% of sequential write throughput: volatile byte writes.)
                let mut out = vec![0u8; out_len as usize];
                for b in first..=last {
                    let o0 = ((b - first) * CB) as usize;
                    let l = blen(b);
                    let body = &mut out[o0 + NONCE_LEN..o0 + NONCE_LEN + l];
                    if let Err(e) = fill(b, body) {
                        zeroize::Zeroize::zeroize(&mut out);
                        return Err(e);
                    }
                    let tag = c.seal_detached(b, nonce(b), body);
                    out[o0..o0 + NONCE_LEN].copy_from_slice(nonce(b));
                    out[o0 + NONCE_LEN + l..o0 + NONCE_LEN + l + TAG_LEN].copy_from_slice(&tag);
                }
                f.write_all_at(&out, block_offset(first))
            }
            Layout::V2 => {
                // One buffer mirrors the backing range from the first block's page to the
                // end of the last block: its ciphertext pages and, for every later group the
                // run reaches, that group's entry page, which lies in between. The first
                // group's entries go out in a write of their own before it; the later groups'
                // entry pages precede their data pages inside the one write, which the kernel
                // copies in file order. So every block's entry lands before its ciphertext,
                // with two writes per request however many groups it spans.
                let stamp = session_stamp();
                let old_blocks = old_size.div_ceil(BS);
                let start = data_offset(first);
                let end = data_offset(last) + blen(last) as u64;
                // Only ciphertext once every block is sealed: zeroized on an early error only.
                let mut buf = vec![0u8; (end - start) as usize];
                let gl0 = last.min(group_last(first));
                let n0 = (gl0 - first + 1) as usize;
                let mut ents0 = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
                read_or_zero(f, &mut ents0[..n0 * EL], entry_offset(first))?;
                for g in group(first).0 + 1..=group(last).0 {
                    let page = g * GROUP_PAGES * PAGE;
                    let at = (page - start) as usize;
                    read_or_zero(f, &mut buf[at..at + PAGE as usize], page)?;
                }
                // Where block b's entry is: in ents0 (first group) or in buf.
                let entry_at = |b: u64| -> (bool, usize) {
                    if b <= gl0 {
                        (true, (b - first) as usize * EL)
                    } else {
                        (false, (entry_offset(b) - start) as usize)
                    }
                };
                for bb in first..=last {
                    let (in0, at) = entry_at(bb);
                    let old = Entry::parse(if in0 { &ents0[at..at + EL] } else { &buf[at..at + EL] });
                    let (mut e, target) = if bb >= old_blocks || old.is_hole() {
                        (Entry::default(), 0)
                    } else if !suspect(old.stamp) {
                        (old, 1 - old.cur)
                    } else {
                        let old_len = (old_size - bb * BS).min(BS) as usize;
                        match valid_slot(f, c, bb, old_len, &old)? {
                            Some(s) => (old, 1 - s),
                            // Neither authenticates: the old content is lost already (or
                            // was a hole); keep the other slot as it is.
                            None => (old, old.cur),
                        }
                    };
                    let body = &mut buf[(data_offset(bb) - start) as usize..][..blen(bb)];
                    if let Err(e) = fill(bb, body) {
                        zeroize::Zeroize::zeroize(&mut buf);
                        return Err(e);
                    }
                    let tag = c.seal_detached(bb, nonce(bb), body);
                    e.slots[target][..NONCE_LEN].copy_from_slice(nonce(bb));
                    e.slots[target][NONCE_LEN..].copy_from_slice(&tag);
                    e.cur = target;
                    e.stamp = stamp;
                    e.encode(if in0 {
                        &mut ents0[at..at + EL]
                    } else {
                        &mut buf[at..at + EL]
                    });
                }
                // Entries first: until the ciphertext lands, the other slot still
                // authenticates the old ciphertext.
                f.write_all_at(&ents0[..n0 * EL], entry_offset(first))?;
                crate::util::crash_point("layout:entries-written");
                if let Err(err) = f.write_all_at(&buf, start) {
                    // ENOSPC on a copy-on-write backing filesystem, EIO: some pages may have
                    // landed, others still match the previous slot. Readers cope either way;
                    // mark the entries so the next writer checks which slot works instead of
                    // assuming the current one does.
                    for bb in first..=last {
                        let (in0, at) = entry_at(bb);
                        let slot = if in0 {
                            &mut ents0[at..at + EL]
                        } else {
                            &mut buf[at..at + EL]
                        };
                        let mut e = Entry::parse(slot);
                        e.stamp = UNSURE_STAMP;
                        e.encode(slot);
                        if !in0 {
                            let _ = f.write_all_at(&buf[at..at + EL], entry_offset(bb));
                        }
                    }
                    let _ = f.write_all_at(&ents0[..n0 * EL], entry_offset(first));
                    return Err(err);
                }
                Ok(())
            }
        }
    }

    /// Makes blocks `first..end` holes (`clen` is the backing length): their stored bytes
    /// are deallocated (layout 1), their entries zeroed and ciphertext deallocated (layout 2).
    pub fn punch(self, f: &File, first: u64, end: u64, clen: u64) -> io::Result<()> {
        let punch = |s: u64, e: u64| -> io::Result<()> {
            let e = e.min(clen);
            if e > s {
                crate::sys::fallocate(
                    f.as_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    s,
                    e - s,
                )?;
            }
            Ok(())
        };
        match self {
            Layout::V1 => punch(block_offset(first), block_offset(end)),
            Layout::V2 => {
                let zeros = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
                let mut b = first;
                while b < end {
                    let gl = (end - 1).min(group_last(b));
                    let n = (gl - b + 1) as usize;
                    // Entries first: a zero entry is a hole whatever the page holds.
                    f.write_all_at(&zeros[..n * EL], entry_offset(b))?;
                    punch(data_offset(b), data_offset(gl) + PAGE)?;
                    b = gl + 1;
                }
                Ok(())
            }
        }
    }

    /// Layout 2: zeroes the entries of blocks at or past `nblocks` left in the last entry
    /// page (by a shrink, or an append that did not finish), so that blocks which come into
    /// existence later as holes do not inherit stale tags. Reads first and writes only if
    /// something is there. Layout 1 has nothing to do.
    pub fn clear_entries_past(self, f: &File, nblocks: u64, clen: u64) -> io::Result<()> {
        if self == Layout::V1 {
            return Ok(());
        }
        let off = entry_offset(nblocks);
        if off >= clen {
            return Ok(());
        }
        let n = (group_last(nblocks) - nblocks + 1) as usize;
        let mut ents = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
        read_or_zero(f, &mut ents[..n * EL], off)?;
        if !is_zero(&ents[..n * EL]) {
            let zeros = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
            let len = ((n * EL) as u64).min(clen - off) as usize;
            f.write_all_at(&zeros[..len], off)?;
        }
        Ok(())
    }

    /// The first block in `from..nblocks` holding data (not a hole), if any.
    pub fn next_data(self, f: &File, from: u64, nblocks: u64, clen: u64) -> io::Result<Option<u64>> {
        let fd = f.as_fd();
        let mut b = from;
        match self {
            Layout::V1 => loop {
                if b >= nblocks {
                    return Ok(None);
                }
                let d = match crate::sys::lseek(fd, block_offset(b), libc::SEEK_DATA)? {
                    Some(d) if d < clen => d,
                    _ => return Ok(None),
                };
                let db = v1_block_at(d).max(b);
                if db >= nblocks {
                    return Ok(None);
                }
                if !v1_is_hole(f, db, clen)? {
                    return Ok(Some(db));
                }
                b = db + 1;
            },
            Layout::V2 => {
                let mut ents = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
                while b < nblocks {
                    let page = group(b).0 * GROUP_PAGES * PAGE;
                    // Skip groups whose entry page is a backing hole.
                    match crate::sys::lseek(fd, page, libc::SEEK_DATA)? {
                        Some(d) if d < clen => {
                            let dg = d / PAGE / GROUP_PAGES;
                            if dg > group(b).0 {
                                b = dg * GROUP_BLOCKS;
                                continue;
                            }
                        }
                        _ => return Ok(None),
                    }
                    let gl = (nblocks - 1).min(group_last(b));
                    let n = (gl - b + 1) as usize;
                    read_or_zero(f, &mut ents[..n * EL], entry_offset(b))?;
                    if let Some(k) = (0..n).find(|&k| !Entry::parse(&ents[k * EL..][..EL]).is_hole()) {
                        return Ok(Some(b + k as u64));
                    }
                    b = gl + 1;
                }
                Ok(None)
            }
        }
    }

    /// The first hole in `from..nblocks`, or `nblocks` when there is none.
    pub fn next_hole(self, f: &File, from: u64, nblocks: u64, clen: u64) -> io::Result<u64> {
        let mut b = from;
        match self {
            Layout::V1 => loop {
                if b >= nblocks {
                    return Ok(nblocks);
                }
                if v1_is_hole(f, b, clen)? {
                    return Ok(b);
                }
                match crate::sys::lseek(f.as_fd(), block_offset(b), libc::SEEK_HOLE)? {
                    Some(h) if h < clen => b = v1_block_at(h).max(b + 1),
                    _ => return Ok(nblocks),
                }
            },
            Layout::V2 => {
                let mut ents = [0u8; (GROUP_BLOCKS * ENTRY_LEN) as usize];
                while b < nblocks {
                    let gl = (nblocks - 1).min(group_last(b));
                    let n = (gl - b + 1) as usize;
                    read_or_zero(f, &mut ents[..n * EL], entry_offset(b))?;
                    if let Some(k) = (0..n).find(|&k| Entry::parse(&ents[k * EL..][..EL]).is_hole()) {
                        return Ok(b + k as u64);
                    }
                    b = gl + 1;
                }
                Ok(nblocks)
            }
        }
    }

    /// Units a rekey journal is copied in: `(offset, length)` over a backing file of `len`
    /// bytes, after the file header. A unit that is all zeros in the journal is a hole in
    /// both files and is skipped.
    pub fn units(self, len: u64) -> Vec<(u64, usize)> {
        let (start, step) = match self {
            Layout::V1 => (FILE_HEADER_LEN, CB),
            Layout::V2 => (0, PAGE),
        };
        let mut v = vec![];
        let mut off = start;
        while off < len {
            v.push((off, (len - off).min(step) as usize));
            off += step;
        }
        v
    }
}

/// Layout 1: the block whose stored bytes hold backing offset `off`.
fn v1_block_at(off: u64) -> u64 {
    off.saturating_sub(FILE_HEADER_LEN) / CB
}

/// Layout 1: a block is a hole when its stored range is a backing hole or all zeros.
fn v1_is_hole(f: &File, b: u64, clen: u64) -> io::Result<bool> {
    let (s, e) = (block_offset(b), block_offset(b + 1).min(clen));
    if s >= e {
        return Ok(true);
    }
    match crate::sys::lseek(f.as_fd(), s, libc::SEEK_DATA)? {
        None => Ok(true),
        Some(d) if d >= e => Ok(true),
        Some(_) => {
            let mut buf = vec![0u8; (e - s) as usize];
            let n = read_full_at(f, &mut buf, s)?;
            Ok(is_zero(&buf[..n]))
        }
    }
}

/// Layout 2: opens block `b` in place in `buf` (its ciphertext) with entry `e`. When the
/// current slot fails, the ciphertext is read again from disk (the failed attempt left `buf`
/// unspecified) and the other slot is tried.
fn open_v2(f: &File, c: &ContentCipher, b: u64, e: &Entry, buf: &mut [u8]) -> Result<BlockRead, ReadError> {
    if e.is_hole() {
        buf.fill(0);
        return Ok(BlockRead::Hole);
    }
    let cur = e.cur;
    if !slot_empty(&e.slots[cur]) {
        let (n, t) = split_slot(&e.slots[cur]);
        if c.open_detached(b, n, t, buf).is_ok() {
            return Ok(BlockRead::Data);
        }
        if read_full_at(f, buf, data_offset(b))? < buf.len() {
            return Err(ReadError::Short(b));
        }
    }
    let other = &e.slots[1 - cur];
    if slot_empty(other) {
        // A hole before a write that did not finish: zeros, if the page still is.
        if is_zero(buf) {
            return Ok(BlockRead::Hole);
        }
        buf.fill(0);
        return Err(ReadError::Bad(b, BlockError::Auth));
    }
    let (n, t) = split_slot(other);
    match c.open_detached(b, n, t, buf) {
        Ok(()) => Ok(BlockRead::Previous),
        Err(x) => Err(ReadError::Bad(b, x)),
    }
}

/// Layout 2: which slot of `e` authenticates block `b`'s ciphertext on disk (`len` bytes).
fn valid_slot(f: &File, c: &ContentCipher, b: u64, len: usize, e: &Entry) -> io::Result<Option<usize>> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; len]);
    for s in [e.cur, 1 - e.cur] {
        if slot_empty(&e.slots[s]) {
            continue;
        }
        if read_full_at(f, &mut buf, data_offset(b))? < len {
            return Ok(None);
        }
        let (n, t) = split_slot(&e.slots[s]);
        if c.open_detached(b, n, t, &mut buf).is_ok() {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_sizes_roundtrip() {
        let l = Layout::V2;
        assert_eq!(GROUP_BLOCKS, 62);
        for p in [
            0u64,
            1,
            100,
            4095,
            4096,
            4097,
            8192,
            62 * 4096 - 1,
            62 * 4096,
            62 * 4096 + 1,
            123_456_789,
        ] {
            assert_eq!(l.plain_size(l.cipher_size(p)), p, "plain {p}");
        }
        assert_eq!(l.cipher_size(1), 4097);
        assert_eq!(data_offset(61), 62 * 4096);
        assert_eq!(data_offset(62), 64 * 4096);
        assert_eq!(entry_offset(62), 63 * 4096 + 128);
        // A file ending in an entry page (an append whose ciphertext never landed).
        assert_eq!(l.plain_size(63 * 4096 + 192), 62 * 4096);
        assert_eq!(l.plain_size(84), 0);
        assert_eq!(l.plain_size(4096 + 128), 128);
    }

    /// Every mix of old and new ciphertext pages under the new entries (what a writer killed
    /// between pages leaves) reads block by block as old or new, matching the page.
    #[test]
    fn any_mix_of_landed_pages_reads_old_or_new() {
        use crate::crypto::SecretKey;
        let c = ContentCipher::new(&SecretKey::random(), [1; 16]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        const N: u64 = 200; // four groups
        let content =
            |b: u64, v: u8| -> Vec<u8> { (0..BS).map(|i| (i as u8) ^ (b as u8) ^ v.wrapping_mul(77)).collect() };
        let write = |v: u8, old_size: u64| {
            Layout::V2
                .write_run(&f, &c, 0, N - 1, N * BS, old_size, &mut |b, buf| {
                    buf.copy_from_slice(&content(b, v));
                    Ok(())
                })
                .unwrap()
        };
        write(0, 0);
        let s0 = std::fs::read(&path).unwrap();
        write(1, N * BS);
        let s1 = std::fs::read(&path).unwrap();
        assert_eq!(s0.len(), s1.len());
        let mut rng = 0x1234_5678_9abc_def1u64;
        for round in 0..20 {
            let mut mixed = s1.clone();
            let mut new = vec![];
            for b in 0..N {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let landed = round == 0 || rng % 2 == 0;
                if !landed {
                    let o = data_offset(b) as usize;
                    mixed[o..o + PAGE as usize].copy_from_slice(&s0[o..o + PAGE as usize]);
                }
                new.push(landed);
            }
            f.write_all_at(&mixed, 0).unwrap();
            let mut out = vec![0u8; BS as usize];
            for b in 0..N {
                let r = Layout::V2.read_block(&f, &c, b, BS as usize, &mut out).unwrap();
                let v = if new[b as usize] { 1 } else { 0 };
                assert_eq!(out, content(b, v), "round {round} block {b}");
                assert_eq!(r, if v == 1 { BlockRead::Data } else { BlockRead::Previous });
            }
            let mut all = vec![0u8; (N * BS) as usize];
            Layout::V2.read_run(&f, &c, 0, &mut all).unwrap();
            for b in 0..N {
                let v = if new[b as usize] { 1 } else { 0 };
                assert_eq!(&all[(b * BS) as usize..][..BS as usize], &content(b, v)[..]);
            }
        }
        // Entries of neither write (all zero) with data pages: zero entries are holes; the
        // first write's entries with its pages: the old content.
        f.write_all_at(&s0, 0).unwrap();
        let mut out = vec![0u8; BS as usize];
        assert_eq!(
            Layout::V2.read_block(&f, &c, 7, BS as usize, &mut out).unwrap(),
            BlockRead::Data
        );
        assert_eq!(out, content(7, 0));
        // A flipped bit in a page fails both slots: EIO, never plaintext.
        let mut bad = s1.clone();
        bad[data_offset(5) as usize + 9] ^= 4;
        f.write_all_at(&bad, 0).unwrap();
        assert!(matches!(
            Layout::V2.read_block(&f, &c, 5, BS as usize, &mut out),
            Err(ReadError::Bad(5, BlockError::Auth))
        ));
        assert!(out.iter().all(|&x| x == 0), "no plaintext left behind on failure");
    }

    #[test]
    fn entry_roundtrip() {
        let mut e = Entry::default();
        assert!(e.is_hole());
        e.slots[1] = [7; SLOT_LEN];
        e.stamp = 0xdeadbeef;
        e.cur = 1;
        let mut b = [0u8; EL];
        e.encode(&mut b);
        assert_eq!(Entry::parse(&b), e);
        assert!(!e.is_hole());
    }
}
