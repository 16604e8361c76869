//! Layout 2 (format 2), built so that an interrupted block write leaves the old or the new
//! content readable:
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
//! works. Every mount that writes picks a random session stamp ([`WriterStamps`]), stored in
//! each entry it writes, and leaves a marker file in the cipher directory that a clean
//! unmount removes (see `crate::store::session`). Markers left behind name sessions that
//! crashed. An entry stamped by a crashed session is checked (ciphertext read, tag verified)
//! before its first overwrite; every other entry is trusted, so normal writes pay nothing for
//! this.
//!
//! What this does not cover: after a power loss (not a process crash), pages written since
//! the last `fsync` can reach the disk in any order; a ciphertext page that arrives without
//! its entry fails both slots (EIO until overwritten). Synced data is never affected.
//!
//! Pure: offsets, entries, slot choice and the opening of buffers; the store does the I/O.

use crate::crypto::{NONCE_LEN, TAG_LEN, XNONCE_LEN};
use crate::format::content::{is_zero, BlockError, ContentCipher, BLOCK_SIZE};

use super::BlockRead;

/// Backing page size that layouts 2 and 3 align ciphertext to.
pub const PAGE: u64 = 4096;
/// Bytes at the start of every entry page before the first entry (the file header in page 0).
pub const ENTRY_AREA: u64 = 128;
/// Longest slot: a 24-byte XAES nonce and a tag.
const MAX_SLOT: usize = XNONCE_LEN + TAG_LEN;

/// Stamp of entries whose ciphertext write failed (never a session stamp): always checked.
pub const UNSURE_STAMP: u32 = u32::MAX;

/// The shape of a slotted layout: layout 2 (12-byte nonces, 64-byte entries, 62 blocks per
/// group) and layout 3 (24-byte XAES nonces, 88-byte entries, 45 blocks per group) differ only
/// in these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geo {
    /// Nonce bytes per slot.
    pub nonce_len: usize,
    /// Bytes per entry.
    pub entry_len: u64,
}

/// Layout 2.
pub const GEO2: Geo = Geo {
    nonce_len: NONCE_LEN,
    entry_len: 64,
};
/// Layout 3.
pub const GEO3: Geo = Geo {
    nonce_len: XNONCE_LEN,
    entry_len: 88,
};

impl Geo {
    /// Bytes per slot (nonce and tag).
    pub const fn slot_len(self) -> usize {
        self.nonce_len + TAG_LEN
    }
    /// Blocks per group (entries per entry page).
    pub const fn group_blocks(self) -> u64 {
        (PAGE - ENTRY_AREA) / self.entry_len
    }
    /// Backing pages per group: the entry page and one page per block.
    pub const fn group_pages(self) -> u64 {
        self.group_blocks() + 1
    }
    /// (group, index in group) of block `b`.
    pub fn group(self, b: u64) -> (u64, u64) {
        (b / self.group_blocks(), b % self.group_blocks())
    }
    /// Offset of group `g`'s entry page.
    pub fn group_offset(self, g: u64) -> u64 {
        g * self.group_pages() * PAGE
    }
    /// Offset of block `b`'s ciphertext page.
    pub fn data_offset(self, b: u64) -> u64 {
        let (g, i) = self.group(b);
        (g * self.group_pages() + 1 + i) * PAGE
    }
    /// Offset of block `b`'s entry.
    pub fn entry_offset(self, b: u64) -> u64 {
        let (g, i) = self.group(b);
        self.group_offset(g) + ENTRY_AREA + i * self.entry_len
    }
    /// Last block of the group holding `b`.
    pub fn group_last(self, b: u64) -> u64 {
        self.group(b).0 * self.group_blocks() + self.group_blocks() - 1
    }
    /// Plaintext size of a file whose backing file is `clen` bytes long.
    pub fn plain_size(self, clen: u64) -> u64 {
        if clen <= PAGE {
            return 0;
        }
        let page = (clen - 1) / PAGE;
        let (g, r) = (page / self.group_pages(), page % self.group_pages());
        if r == 0 {
            // Ends in an entry page: entries of an unfinished append, no block yet.
            g * self.group_blocks() * BLOCK_SIZE
        } else {
            (g * self.group_blocks() + r - 1) * BLOCK_SIZE + (clen - page * PAGE)
        }
    }
    /// Backing length for a plaintext size (0 stays 0: an empty file has no header).
    pub fn cipher_size(self, plain: u64) -> u64 {
        if plain == 0 {
            return 0;
        }
        let last = (plain - 1) / BLOCK_SIZE;
        self.data_offset(last) + (plain - last * BLOCK_SIZE)
    }
    /// Parses one entry (any bytes parse; the tags decide what is valid).
    pub fn parse(self, b: &[u8]) -> Entry {
        let sl = self.slot_len();
        let mut e = Entry {
            slot_len: sl,
            ..Entry::default()
        };
        e.slots[0][..sl].copy_from_slice(&b[..sl]);
        e.slots[1][..sl].copy_from_slice(&b[sl..2 * sl]);
        e.stamp = u32::from_be_bytes(b[2 * sl..2 * sl + 4].try_into().unwrap());
        e.cur = (b[2 * sl + 4] & 1) as usize;
        e
    }
    /// An empty entry (a hole) of this geometry.
    pub fn empty(self) -> Entry {
        Entry {
            slot_len: self.slot_len(),
            ..Entry::default()
        }
    }
}

/// The session stamps a writer needs to choose slots: its own, stored in every entry it
/// writes, and those of earlier sessions that ended without unmounting. The mount makes one
/// (`crate::store::session::begin`) and hands it to every file it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStamps {
    /// This session's stamp (0 when nothing is suspect, as in tests and offline tools).
    pub own: u32,
    /// Stamps of sessions that crashed.
    pub crashed: Vec<u32>,
}

impl WriterStamps {
    /// True when an entry stamped `stamp` may belong to an unfinished write.
    pub fn suspect(&self, stamp: u32) -> bool {
        stamp == UNSURE_STAMP || (stamp != self.own && self.crashed.contains(&stamp))
    }
}

/// One entry: two `nonce || tag` slots, the session stamp of its last writer and the
/// current slot. With slots of `s` bytes (28 in layout 2, 40 in layout 3):
///
/// ```text
/// 0..s     slot 0 (nonce, tag 16)          2s..2s+4  stamp, u32 big-endian
/// s..2s    slot 1                          2s+4      current slot (0 or 1), then zeros
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The two slots (the first `slot_len` bytes of each); all zeros is an empty slot.
    pub slots: [[u8; MAX_SLOT]; 2],
    slot_len: usize,
    /// Session stamp of the write that set the current slot.
    pub stamp: u32,
    /// Index of the current slot.
    pub cur: usize,
}

impl Default for Entry {
    fn default() -> Self {
        Entry {
            slots: [[0; MAX_SLOT]; 2],
            slot_len: GEO2.slot_len(),
            stamp: 0,
            cur: 0,
        }
    }
}

impl Entry {
    /// Parses a layout-2 entry (64 bytes).
    pub fn parse(b: &[u8]) -> Entry {
        GEO2.parse(b)
    }

    /// Serialises into the entry's length (64 or 88 bytes).
    pub fn encode(&self, out: &mut [u8]) {
        let sl = self.slot_len;
        out[..sl].copy_from_slice(&self.slots[0][..sl]);
        out[sl..2 * sl].copy_from_slice(&self.slots[1][..sl]);
        out[2 * sl..2 * sl + 4].copy_from_slice(&self.stamp.to_be_bytes());
        out[2 * sl + 4] = self.cur as u8;
        out[2 * sl + 5..].fill(0);
    }

    /// An entry with both slots empty: a hole.
    pub fn is_hole(&self) -> bool {
        self.slot_empty(0) && self.slot_empty(1)
    }

    fn slot_empty(&self, s: usize) -> bool {
        self.slots[s].iter().all(|&b| b == 0)
    }

    fn split_slot(&self, s: usize) -> (&[u8], &[u8; TAG_LEN]) {
        let n = self.slot_len - TAG_LEN;
        (&self.slots[s][..n], self.slots[s][n..self.slot_len].try_into().unwrap())
    }

    /// Puts `nonce || tag` into slot `s`, makes it current and stamps the entry.
    pub fn set(&mut self, s: usize, nonce: &[u8], tag: &[u8; TAG_LEN], stamp: u32) {
        debug_assert_eq!(nonce.len() + TAG_LEN, self.slot_len);
        self.slots[s][..nonce.len()].copy_from_slice(nonce);
        self.slots[s][nonce.len()..self.slot_len].copy_from_slice(tag);
        self.cur = s;
        self.stamp = stamp;
    }
}

/// Why the current slot did not open a block: try [`open_previous`] next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryPrevious {
    /// The failed attempt left the buffer unspecified: read the ciphertext again first.
    pub reread: bool,
}

/// Opens block `b` in place in `buf` (its ciphertext) with the current slot of `e`.
pub fn open_current(c: &ContentCipher, b: u64, e: &Entry, buf: &mut [u8]) -> Result<BlockRead, TryPrevious> {
    if e.is_hole() {
        buf.fill(0);
        return Ok(BlockRead::Hole);
    }
    if e.slot_empty(e.cur) {
        return Err(TryPrevious { reread: false });
    }
    let (n, t) = e.split_slot(e.cur);
    match c.open_detached(b, n, t, buf) {
        Ok(()) => Ok(BlockRead::Data),
        Err(_) => Err(TryPrevious { reread: true }),
    }
}

/// After [`open_current`] failed: opens block `b` in `buf` (its ciphertext, read again if
/// asked) with the other slot. An empty other slot means the block was a hole before an
/// unfinished write: zeros if the page still is, otherwise a failure (never plaintext).
pub fn open_previous(c: &ContentCipher, b: u64, e: &Entry, buf: &mut [u8]) -> Result<BlockRead, BlockError> {
    if e.slot_empty(1 - e.cur) {
        if is_zero(buf) {
            return Ok(BlockRead::Hole);
        }
        buf.fill(0);
        return Err(BlockError::Auth);
    }
    let (n, t) = e.split_slot(1 - e.cur);
    c.open_detached(b, n, t, buf).map(|()| BlockRead::Previous)
}

/// The slots worth trying, current first, to find which one authenticates a ciphertext.
pub fn filled_slots(e: &Entry) -> impl Iterator<Item = usize> + '_ {
    [e.cur, 1 - e.cur].into_iter().filter(|&s| !e.slot_empty(s))
}

/// True when slot `s` of `e` authenticates `buf` as block `b` (decrypted in place; on
/// `false` `buf` is zeroed and must be read again before another try).
pub fn slot_opens(c: &ContentCipher, b: u64, e: &Entry, s: usize, buf: &mut [u8]) -> bool {
    let (n, t) = e.split_slot(s);
    c.open_detached(b, n, t, buf).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_roundtrip() {
        let g = GEO2;
        assert_eq!(g.group_blocks(), 62);
        assert_eq!(GEO3.group_blocks(), 45);
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
            assert_eq!(g.plain_size(g.cipher_size(p)), p, "plain {p}");
            assert_eq!(GEO3.plain_size(GEO3.cipher_size(p)), p, "plain {p}, layout 3");
        }
        assert_eq!(g.cipher_size(1), 4097);
        assert_eq!(g.data_offset(61), 62 * 4096);
        assert_eq!(g.data_offset(62), 64 * 4096);
        assert_eq!(g.entry_offset(62), 63 * 4096 + 128);
        assert_eq!(GEO3.data_offset(45), 47 * 4096);
        assert_eq!(GEO3.entry_offset(46), 46 * 4096 + 128 + 88);
        // A file ending in an entry page (an append whose ciphertext never landed).
        assert_eq!(g.plain_size(63 * 4096 + 192), 62 * 4096);
        assert_eq!(g.plain_size(84), 0);
        assert_eq!(g.plain_size(4096 + 128), 128);
    }

    #[test]
    fn entry_roundtrip() {
        for g in [GEO2, GEO3] {
            let mut e = g.empty();
            assert!(e.is_hole());
            e.set(1, &vec![7; g.nonce_len], &[8; 16], 0xdeadbeef);
            let mut b = vec![0u8; g.entry_len as usize];
            e.encode(&mut b);
            assert_eq!(g.parse(&b), e);
            assert!(!e.is_hole());
            assert_eq!(e.cur, 1);
        }
    }

    #[test]
    fn only_crashed_or_unsure_stamps_are_suspect() {
        let s = WriterStamps {
            own: 5,
            crashed: vec![7, 5],
        };
        assert!(s.suspect(7));
        assert!(s.suspect(UNSURE_STAMP));
        assert!(!s.suspect(5), "our own entries are trusted");
        assert!(!s.suspect(9));
        assert!(!WriterStamps::default().suspect(0));
    }
}
