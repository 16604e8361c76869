//! Where a file's blocks live in its backing file: offsets, sizes, entries, slot choice, and
//! the sealing and opening of buffers. Pure: no I/O, no globals; the volume's format version
//! picks a [`Layout`] and the store (`crate::store`) does the reads and writes these plans
//! describe.
//!
//! - [`v1`]: layout 1 (format 1), stored blocks back to back after the file header.
//! - [`v2`]: layout 2 (format 2), page-aligned ciphertext with nonce and tag in two-slot
//!   entries, so an interrupted write leaves every block old or new.
//!
//! Writing a run of blocks goes: [`Layout::plan_write`] sizes a buffer mirroring the backing
//! range; the store reads the entries the plan asks for ([`WritePlan::entry_regions`]) and
//! checks the suspect ones ([`WritePlan::suspects`]); the caller puts each block's plaintext
//! into [`WritePlan::body_mut`]; [`WritePlan::seal`] encrypts in place and fills in nonces,
//! tags and entries; the store writes [`WritePlan::entries`] and then [`WritePlan::data`].

pub mod v1;
pub mod v2;

use crate::crypto::{NONCE_LEN, TAG_LEN};

use super::content::{ContentCipher, BLOCK_OVERHEAD, BLOCK_SIZE, CIPHER_BLOCK_SIZE};
use super::file_header::FILE_HEADER_LEN;

pub use v2::{Entry, Geo, WriterStamps, UNSURE_STAMP};

const BS: u64 = BLOCK_SIZE;
const CB: u64 = CIPHER_BLOCK_SIZE;
const OVH: usize = BLOCK_OVERHEAD as usize;

/// How a volume lays out file content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Format 1: header, then `nonce || ciphertext || tag` blocks back to back.
    V1,
    /// Format 2: page-aligned ciphertext, nonce and tag in two-slot entries.
    V2,
    /// Format 3: layout 2's shape with XAES-256-GCM's 24-byte nonces (88-byte entries, 45
    /// blocks per group).
    V3,
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

/// One step of making blocks holes: zero some entries (layout 2; first, so that the blocks
/// read as holes whatever their pages hold), then deallocate a backing range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Punch {
    /// Entry bytes to overwrite with zeros: `(offset, length)`.
    pub zero: Option<(u64, usize)>,
    /// Backing range `(start, end)` to deallocate (cut at the backing length).
    pub dealloc: (u64, u64),
}

impl Layout {
    /// The layout of a volume format version.
    pub fn for_format(version: u32) -> Layout {
        match version {
            0 | 1 => Layout::V1,
            2 => Layout::V2,
            _ => Layout::V3,
        }
    }

    /// The version field of file headers in this layout.
    pub fn file_version(self) -> u16 {
        match self {
            Layout::V1 => 1,
            Layout::V2 => 2,
            Layout::V3 => 3,
        }
    }

    /// Layouts 2 and 3 keep nonces and tags in two-slot entries.
    pub fn slotted(self) -> bool {
        self != Layout::V1
    }

    /// The entry geometry of a slotted layout (layout 1 has none; layout 2's is returned).
    pub fn geo(self) -> Geo {
        if self == Layout::V3 {
            v2::GEO3
        } else {
            v2::GEO2
        }
    }

    /// Length of the content nonces: 12 bytes (AES-256-GCM), 24 in layout 3 (XAES-256-GCM).
    pub fn nonce_len(self) -> usize {
        self.geo().nonce_len
    }

    /// Plaintext size of a file whose backing file is `clen` bytes long.
    pub fn plain_size(self, clen: u64) -> u64 {
        let g = self.geo();
        match self {
            Layout::V1 => v1::plain_size(clen),
            Layout::V2 | Layout::V3 => g.plain_size(clen),
        }
    }

    /// Backing length for a plaintext size (0 stays 0: an empty file has no header).
    pub fn cipher_size(self, plain: u64) -> u64 {
        let g = self.geo();
        match self {
            Layout::V1 => v1::cipher_size(plain),
            Layout::V2 | Layout::V3 => g.cipher_size(plain),
        }
    }

    /// Backing byte range to preallocate for blocks `first..end`.
    pub fn span(self, first: u64, end: u64) -> (u64, u64) {
        let g = self.geo();
        match self {
            Layout::V1 => (v1::block_offset(first), v1::block_offset(end)),
            Layout::V2 | Layout::V3 => (g.group_offset(g.group(first).0), g.data_offset(end - 1) + v2::PAGE),
        }
    }

    /// Units a rekey journal is copied in: `(offset, length)` over a backing file of `len`
    /// bytes, after the file header. A unit that is all zeros in the journal is a hole in
    /// both files and is skipped.
    pub fn units(self, len: u64) -> Vec<(u64, usize)> {
        let (start, step) = match self {
            Layout::V1 => (FILE_HEADER_LEN, CB),
            Layout::V2 | Layout::V3 => (0, v2::PAGE),
        };
        let mut v = vec![];
        let mut off = start;
        while off < len {
            v.push((off, (len - off).min(step) as usize));
            off += step;
        }
        v
    }

    /// Largest unit of [`Layout::units`].
    pub fn max_unit(self) -> usize {
        match self {
            Layout::V1 => CB as usize,
            Layout::V2 | Layout::V3 => v2::PAGE as usize,
        }
    }

    /// How to make blocks `first..end` holes: layout 1 deallocates their stored bytes;
    /// layout 2 zeroes their entries and deallocates their ciphertext pages, group by group.
    pub fn punch(self, first: u64, end: u64) -> Vec<Punch> {
        let g = self.geo();
        let el = g.entry_len as usize;
        match self {
            Layout::V1 => vec![Punch {
                zero: None,
                dealloc: (v1::block_offset(first), v1::block_offset(end)),
            }],
            Layout::V2 | Layout::V3 => {
                let mut v = vec![];
                let mut b = first;
                while b < end {
                    let gl = (end - 1).min(g.group_last(b));
                    let n = (gl - b + 1) as usize;
                    v.push(Punch {
                        zero: Some((g.entry_offset(b), n * el)),
                        dealloc: (g.data_offset(b), g.data_offset(gl) + v2::PAGE),
                    });
                    b = gl + 1;
                }
                v
            }
        }
    }

    /// Layout 2: the entries of blocks at or past `nblocks` left in the last entry page (by a
    /// shrink, or an append that did not finish) of a backing file `clen` bytes long, as
    /// `(offset, length to read, length to zero)`. Blocks that come into existence later as
    /// holes must not inherit their stale tags. `None` when there is nothing to check.
    pub fn stale_entries(self, nblocks: u64, clen: u64) -> Option<(u64, usize, usize)> {
        let g = self.geo();
        let el = g.entry_len as usize;
        if !self.slotted() {
            return None;
        }
        let off = g.entry_offset(nblocks);
        if off >= clen {
            return None;
        }
        let n = (g.group_last(nblocks) - nblocks + 1) as usize * el;
        Some((off, n, (n as u64).min(clen - off) as usize))
    }

    /// Plans writing blocks `first..=last` of a file whose plaintext size goes from
    /// `old_size` to `new_size` (blocks at or past the old end get fresh entries).
    pub fn plan_write(self, first: u64, last: u64, new_size: u64, old_size: u64) -> WritePlan {
        let g = self.geo();
        let el = g.entry_len as usize;
        debug_assert!(first <= last && last * BS < new_size);
        let blen_last = (new_size - last * BS).min(BS) as usize;
        let (start, len, gl0) = match self {
            Layout::V1 => (
                v1::block_offset(first),
                (last - first) * CB + (blen_last + OVH) as u64,
                last,
            ),
            Layout::V2 | Layout::V3 => {
                let start = g.data_offset(first);
                (
                    start,
                    g.data_offset(last) + blen_last as u64 - start,
                    last.min(g.group_last(first)),
                )
            }
        };
        let n0 = if self.slotted() { (gl0 - first + 1) as usize } else { 0 };
        WritePlan {
            layout: self,
            first,
            last,
            new_size,
            old_size,
            start,
            buf: vec![0u8; len as usize],
            ents0: vec![0u8; n0 * el],
            gl0,
            verified: vec![],
        }
    }
}

/// The write of a run of blocks, from plaintext to the bytes to store (see the module
/// documentation for the steps). `buf` mirrors the backing range from the first block to
/// the end of the last one: layout 1's stored blocks, or layout 2's ciphertext pages with the
/// entry page of every later group the run reaches in between. Layout 2's first group's
/// entries are a buffer of their own, written before the data.
///
/// The buffer holds plaintext between [`WritePlan::body_mut`] and [`WritePlan::seal`]; a
/// caller that gives up in between calls [`WritePlan::zeroize`]. (A zeroize-on-drop buffer
/// cost about 20% of sequential write throughput: volatile byte writes.)
pub struct WritePlan {
    layout: Layout,
    first: u64,
    last: u64,
    new_size: u64,
    old_size: u64,
    /// Backing offset of `buf`.
    start: u64,
    buf: Vec<u8>,
    /// Layout 2: entries of blocks `first..=gl0`.
    ents0: Vec<u8>,
    gl0: u64,
    /// Layout 2: suspect blocks the store checked, with the slot that authenticates their
    /// ciphertext on disk (if any).
    verified: Vec<(u64, Option<usize>)>,
}

impl WritePlan {
    /// The blocks of the run.
    pub fn blocks(&self) -> std::ops::RangeInclusive<u64> {
        self.first..=self.last
    }

    /// Plaintext length of block `b` after the write.
    pub fn block_len(&self, b: u64) -> usize {
        (self.new_size - b * BS).min(BS) as usize
    }

    /// Offset of block `b`'s body (its plaintext, then ciphertext) in `buf`.
    fn body_at(&self, b: u64) -> usize {
        let g = self.layout.geo();
        match self.layout {
            Layout::V1 => ((b - self.first) * CB) as usize + NONCE_LEN,
            Layout::V2 | Layout::V3 => (g.data_offset(b) - self.start) as usize,
        }
    }

    /// Where block `b`'s plaintext goes (exactly [`WritePlan::block_len`] bytes).
    pub fn body_mut(&mut self, b: u64) -> &mut [u8] {
        let (at, len) = (self.body_at(b), self.block_len(b));
        &mut self.buf[at..at + len]
    }

    /// Layout 2: where block `b`'s entry is, in `ents0` (true) or in `buf`.
    fn entry_at(&self, b: u64) -> (bool, usize) {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        if b <= self.gl0 {
            (true, (b - self.first) as usize * el)
        } else {
            (false, (g.entry_offset(b) - self.start) as usize)
        }
    }

    fn entry(&self, b: u64) -> Entry {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        let (in0, at) = self.entry_at(b);
        g.parse(if in0 {
            &self.ents0[at..at + el]
        } else {
            &self.buf[at..at + el]
        })
    }

    fn put_entry(&mut self, b: u64, e: &Entry) {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        let (in0, at) = self.entry_at(b);
        e.encode(if in0 {
            &mut self.ents0[at..at + el]
        } else {
            &mut self.buf[at..at + el]
        });
    }

    /// Layout 2: the backing ranges the store must read (what lies past the end of the file
    /// reads as zeros) before sealing: the first group's entries and the entry page of every
    /// later group, which the data write covers whole. Empty for layout 1.
    pub fn entry_regions(&mut self) -> Vec<(u64, &mut [u8])> {
        let g = self.layout.geo();
        if !self.layout.slotted() {
            return vec![];
        }
        let mut v: Vec<(u64, &mut [u8])> = vec![(g.entry_offset(self.first), &mut self.ents0[..])];
        let mut rest: &mut [u8] = &mut self.buf;
        let mut base = self.start;
        for grp in g.group(self.first).0 + 1..=g.group(self.last).0 {
            let page = g.group_offset(grp);
            let (_, tail) = std::mem::take(&mut rest).split_at_mut((page - base) as usize);
            let (p, tail) = tail.split_at_mut(v2::PAGE as usize);
            v.push((page, p));
            rest = tail;
            base = page + v2::PAGE;
        }
        v
    }

    /// Layout 2, after [`WritePlan::entry_regions`] are read: the blocks whose entry was
    /// stamped by a session that crashed (or by a failed write), as `(block, entry, old
    /// plaintext length)`. The store finds which slot authenticates each one's ciphertext on
    /// disk and reports it with [`WritePlan::set_verified`] before [`WritePlan::seal`].
    pub fn suspects(&self, stamps: &WriterStamps) -> Vec<(u64, Entry, usize)> {
        if !self.layout.slotted() {
            return vec![];
        }
        let old_blocks = self.old_size.div_ceil(BS);
        self.blocks()
            .filter(|&b| b < old_blocks)
            .map(|b| (b, self.entry(b)))
            .filter(|(_, e)| !e.is_hole() && stamps.suspect(e.stamp))
            .map(|(b, e)| (b, e, (self.old_size - b * BS).min(BS) as usize))
            .collect()
    }

    /// Records which slot of suspect block `b` authenticates its ciphertext on disk.
    pub fn set_verified(&mut self, b: u64, slot: Option<usize>) {
        self.verified.push((b, slot));
    }

    /// Encrypts every block's body in place under a fresh random nonce and stores nonces and
    /// tags: inline (layout 1), or in the slot of each entry that does not authenticate the
    /// ciphertext on disk (layouts 2 and 3).
    pub fn seal(&mut self, c: &ContentCipher, stamps: &WriterStamps) {
        let nb = (self.last - self.first + 1) as usize;
        let nl = c.nonce_len();
        debug_assert!(!self.layout.slotted() || nl == self.layout.nonce_len());
        let mut nonces = vec![0u8; nl * nb];
        crate::crypto::fill_random(&mut nonces);
        let old_blocks = self.old_size.div_ceil(BS);
        for b in self.blocks() {
            let nonce = &nonces[nl * (b - self.first) as usize..][..nl];
            let (at, len) = (self.body_at(b), self.block_len(b));
            let tag = c.seal_detached(b, nonce, &mut self.buf[at..at + len]);
            match self.layout {
                Layout::V1 => {
                    self.buf[at - NONCE_LEN..at].copy_from_slice(nonce);
                    self.buf[at + len..at + len + TAG_LEN].copy_from_slice(&tag);
                }
                Layout::V2 | Layout::V3 => {
                    let old = self.entry(b);
                    let (mut e, target) = if b >= old_blocks || old.is_hole() {
                        (self.layout.geo().empty(), 0)
                    } else if !stamps.suspect(old.stamp) {
                        (old, 1 - old.cur)
                    } else {
                        let v = self.verified.iter().find(|(x, _)| *x == b);
                        debug_assert!(v.is_some(), "suspect block {b} was not verified");
                        match v.and_then(|(_, s)| *s) {
                            Some(s) => (old, 1 - s),
                            // Neither authenticates: the old content is lost already (or
                            // was a hole); keep the other slot as it is.
                            None => (old, old.cur),
                        }
                    };
                    e.set(target, nonce, &tag, stamps.own);
                    self.put_entry(b, &e);
                }
            }
        }
    }

    /// Wipes the buffer (plaintext may be in it when a caller gives up before sealing).
    pub fn zeroize(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.buf);
    }

    /// Layout 2: the first group's entries, `(offset, bytes)`, written before the data:
    /// until the ciphertext lands, the other slot still authenticates the old ciphertext.
    pub fn entries(&self) -> Option<(u64, &[u8])> {
        let g = self.layout.geo();
        (self.layout.slotted()).then(|| (g.entry_offset(self.first), &self.ents0[..]))
    }

    /// The data write, `(offset, bytes)`: stored blocks (layout 1), or ciphertext pages with
    /// the later groups' entry pages in between (layout 2, which the kernel copies in file
    /// order, so each later block's entry lands before its ciphertext).
    pub fn data(&self) -> (u64, &[u8]) {
        (self.start, &self.buf)
    }

    /// Layout 2, after the data write failed (ENOSPC on a copy-on-write backing filesystem,
    /// EIO): some pages may have landed, others still match the previous slot. Readers cope
    /// either way; this marks every entry of the run so the next writer checks which slot
    /// works instead of assuming the current one does, and returns the entry bytes to write
    /// again, `(offset, bytes)` per group.
    pub fn mark_unsure(&mut self) -> Vec<(u64, &[u8])> {
        let g = self.layout.geo();
        let el = g.entry_len as usize;
        if !self.layout.slotted() {
            return vec![];
        }
        for b in self.blocks() {
            let mut e = self.entry(b);
            e.stamp = UNSURE_STAMP;
            self.put_entry(b, &e);
        }
        let mut v: Vec<(u64, &[u8])> = vec![(g.entry_offset(self.first), &self.ents0[..])];
        let mut b = self.gl0 + 1;
        while b <= self.last {
            let gl = self.last.min(g.group_last(b));
            let at = (g.entry_offset(b) - self.start) as usize;
            v.push((g.entry_offset(b), &self.buf[at..at + (gl - b + 1) as usize * el]));
            b = gl + 1;
        }
        v
    }
}
