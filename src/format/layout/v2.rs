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

use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::format::content::{is_zero, BlockError, ContentCipher, BLOCK_SIZE};

use super::BlockRead;

/// Backing page size that layout 2 aligns ciphertext to.
pub const PAGE: u64 = 4096;
/// Bytes at the start of every entry page before the first entry (the file header in page 0).
pub const ENTRY_AREA: u64 = 128;
/// Bytes per entry.
pub const ENTRY_LEN: u64 = 64;
/// Blocks per group (entries per entry page).
pub const GROUP_BLOCKS: u64 = (PAGE - ENTRY_AREA) / ENTRY_LEN;
/// Backing pages per group: the entry page and one page per block.
pub const GROUP_PAGES: u64 = GROUP_BLOCKS + 1;
const SLOT_LEN: usize = NONCE_LEN + TAG_LEN;
pub(super) const EL: usize = ENTRY_LEN as usize;

/// Stamp of entries whose ciphertext write failed (never a session stamp): always checked.
pub const UNSURE_STAMP: u32 = u32::MAX;

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
/// current slot.
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

    /// Puts `nonce || tag` into slot `s`, makes it current and stamps the entry.
    pub fn set(&mut self, s: usize, nonce: &[u8; NONCE_LEN], tag: &[u8; TAG_LEN], stamp: u32) {
        self.slots[s][..NONCE_LEN].copy_from_slice(nonce);
        self.slots[s][NONCE_LEN..].copy_from_slice(tag);
        self.cur = s;
        self.stamp = stamp;
    }
}

fn slot_empty(s: &[u8; SLOT_LEN]) -> bool {
    s.iter().all(|&b| b == 0)
}

fn split_slot(s: &[u8; SLOT_LEN]) -> (&[u8; NONCE_LEN], &[u8; TAG_LEN]) {
    (s[..NONCE_LEN].try_into().unwrap(), s[NONCE_LEN..].try_into().unwrap())
}

/// (group, index in group) of block `b`.
pub fn group(b: u64) -> (u64, u64) {
    (b / GROUP_BLOCKS, b % GROUP_BLOCKS)
}

/// Offset of group `g`'s entry page.
pub fn group_offset(g: u64) -> u64 {
    g * GROUP_PAGES * PAGE
}

/// Offset of block `b`'s ciphertext page.
pub fn data_offset(b: u64) -> u64 {
    let (g, i) = group(b);
    (g * GROUP_PAGES + 1 + i) * PAGE
}

/// Offset of block `b`'s entry.
pub fn entry_offset(b: u64) -> u64 {
    let (g, i) = group(b);
    group_offset(g) + ENTRY_AREA + i * ENTRY_LEN
}

/// Last block of the group holding `b`.
pub fn group_last(b: u64) -> u64 {
    group(b).0 * GROUP_BLOCKS + GROUP_BLOCKS - 1
}

/// Plaintext size of a file whose backing file is `clen` bytes long.
pub fn plain_size(clen: u64) -> u64 {
    if clen <= PAGE {
        return 0;
    }
    let page = (clen - 1) / PAGE;
    let (g, r) = (page / GROUP_PAGES, page % GROUP_PAGES);
    if r == 0 {
        // Ends in an entry page: entries of an unfinished append, no block yet.
        g * GROUP_BLOCKS * BLOCK_SIZE
    } else {
        (g * GROUP_BLOCKS + r - 1) * BLOCK_SIZE + (clen - page * PAGE)
    }
}

/// Backing length for a plaintext size (0 stays 0: an empty file has no header).
pub fn cipher_size(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    let last = (plain - 1) / BLOCK_SIZE;
    data_offset(last) + (plain - last * BLOCK_SIZE)
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
    if slot_empty(&e.slots[e.cur]) {
        return Err(TryPrevious { reread: false });
    }
    let (n, t) = split_slot(&e.slots[e.cur]);
    match c.open_detached(b, n, t, buf) {
        Ok(()) => Ok(BlockRead::Data),
        Err(_) => Err(TryPrevious { reread: true }),
    }
}

/// After [`open_current`] failed: opens block `b` in `buf` (its ciphertext, read again if
/// asked) with the other slot. An empty other slot means the block was a hole before an
/// unfinished write: zeros if the page still is, otherwise a failure (never plaintext).
pub fn open_previous(c: &ContentCipher, b: u64, e: &Entry, buf: &mut [u8]) -> Result<BlockRead, BlockError> {
    let other = &e.slots[1 - e.cur];
    if slot_empty(other) {
        if is_zero(buf) {
            return Ok(BlockRead::Hole);
        }
        buf.fill(0);
        return Err(BlockError::Auth);
    }
    let (n, t) = split_slot(other);
    c.open_detached(b, n, t, buf).map(|()| BlockRead::Previous)
}

/// The slots worth trying, current first, to find which one authenticates a ciphertext.
pub fn filled_slots(e: &Entry) -> impl Iterator<Item = usize> + '_ {
    [e.cur, 1 - e.cur].into_iter().filter(|&s| !slot_empty(&e.slots[s]))
}

/// True when slot `s` of `e` authenticates `buf` as block `b` (decrypted in place; on
/// `false` `buf` is zeroed and must be read again before another try).
pub fn slot_opens(c: &ContentCipher, b: u64, e: &Entry, s: usize, buf: &mut [u8]) -> bool {
    let (n, t) = split_slot(&e.slots[s]);
    c.open_detached(b, n, t, buf).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_roundtrip() {
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
            assert_eq!(plain_size(cipher_size(p)), p, "plain {p}");
        }
        assert_eq!(cipher_size(1), 4097);
        assert_eq!(data_offset(61), 62 * 4096);
        assert_eq!(data_offset(62), 64 * 4096);
        assert_eq!(entry_offset(62), 63 * 4096 + 128);
        // A file ending in an entry page (an append whose ciphertext never landed).
        assert_eq!(plain_size(63 * 4096 + 192), 62 * 4096);
        assert_eq!(plain_size(84), 0);
        assert_eq!(plain_size(4096 + 128), 128);
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
