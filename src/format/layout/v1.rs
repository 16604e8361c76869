//! Layout 1 (format 1): the 84-byte file header, then the stored blocks back to back, each
//! `nonce (12) || ciphertext || tag (16)`, 4,124 bytes for a full block.
//!
//! A stored block spans two or three pages of the backing file. The kernel copies a write
//! into the page cache one page at a time, and a process killed in the middle of a `pwrite`
//! stops between two pages; after a power loss, pages reach the disk in any order. Either way
//! a block can end up half old and half new: it fails its tag check and reads as EIO until it
//! is overwritten. Layout 2 exists because of that; layout 1 stays readable and writable for
//! volumes created as format 1.
//!
//! Pure: offsets and the opening of buffers the store has read.

use crate::format::content::{is_zero, BlockError, ContentCipher, BLOCK_OVERHEAD, BLOCK_SIZE, CIPHER_BLOCK_SIZE};
use crate::format::file_header::FILE_HEADER_LEN;

const BS: u64 = BLOCK_SIZE;
const CB: u64 = CIPHER_BLOCK_SIZE;
const OVH: usize = BLOCK_OVERHEAD as usize;

/// Plaintext size of a file whose backing file is `cipher_len` bytes long.
///
/// A trailing fragment too short to hold a sealed byte (at most 28 bytes, only left by an
/// interrupted write) is ignored rather than failing the whole file.
pub fn plain_size(cipher_len: u64) -> u64 {
    if cipher_len <= FILE_HEADER_LEN {
        return 0;
    }
    let body = cipher_len - FILE_HEADER_LEN;
    let full = body / CB;
    let rem = body % CB;
    full * BS + rem.saturating_sub(BLOCK_OVERHEAD)
}

/// Backing file length for a plaintext size (0 stays 0: an empty file has no header).
pub fn cipher_size(plain_len: u64) -> u64 {
    if plain_len == 0 {
        return 0;
    }
    let full = plain_len / BS;
    let rem = plain_len % BS;
    FILE_HEADER_LEN + full * CB + if rem > 0 { rem + BLOCK_OVERHEAD } else { 0 }
}

/// Offset in the backing file where block `index` starts.
pub fn block_offset(index: u64) -> u64 {
    FILE_HEADER_LEN + index * CB
}

/// The block whose stored bytes hold backing offset `off`.
pub fn block_at(off: u64) -> u64 {
    off.saturating_sub(FILE_HEADER_LEN) / CB
}

/// Backing range `(start, end)` of blocks `first..=last` when the last one holds `last_len`
/// plaintext bytes.
pub fn run_span(first: u64, last: u64, last_len: usize) -> (u64, u64) {
    (block_offset(first), block_offset(last) + (last_len + OVH) as u64)
}

/// Opens the stored blocks in `stored` (read from [`run_span`]), block `first` onwards, into
/// `out`. A failing block is returned with its index; `out` then holds no plaintext of it.
pub fn open_run(c: &ContentCipher, first: u64, stored: &[u8], out: &mut [u8]) -> Result<(), (u64, BlockError)> {
    for (i, s) in stored.chunks(CB as usize).enumerate() {
        let b = first + i as u64;
        let p0 = i * BS as usize;
        let p1 = p0 + s.len() - OVH;
        c.open_block(b, s, &mut out[p0..p1]).map_err(|e| (b, e))?;
    }
    Ok(())
}

/// A stored block is a hole when every stored byte is zero.
pub fn is_hole(stored: &[u8]) -> bool {
    is_zero(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_roundtrip() {
        for p in [0u64, 1, 100, 4095, 4096, 4097, 8192, 123_456_789] {
            assert_eq!(plain_size(cipher_size(p)), p, "plain {p}");
        }
        assert_eq!(cipher_size(1), FILE_HEADER_LEN + 29);
        assert_eq!(cipher_size(4096), FILE_HEADER_LEN + 4124);
        // A torn fragment too short to be a block is ignored.
        assert_eq!(plain_size(FILE_HEADER_LEN + 4124 + 10), 4096);
        assert_eq!(plain_size(10), 0);
        assert_eq!(block_at(block_offset(5) + 100), 5);
        assert_eq!(block_at(3), 0);
    }
}
