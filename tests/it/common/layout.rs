//! Where format 2 (docs/FORMAT.md) puts a file's blocks in its backing file, and the byte
//! surgery the tampering tests do on it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Vol;

/// Block size, plaintext and ciphertext page alike.
pub const BS: u64 = 4096;

/// Block `i`'s ciphertext page: after the header page, groups of 63 pages, an entry page and
/// 62 data pages.
pub fn data_off(i: u64) -> u64 {
    (i / 62 * 63 + 1 + i % 62) * BS
}

/// Block `i`'s 64-byte entry (two nonce/tag slots, stamp, current slot) in the entry page of
/// its group of 62.
pub fn entry_off(i: u64) -> u64 {
    i / 62 * 63 * BS + 128 + i % 62 * 64
}

/// XORs the byte at `off` of `path` with `mask`.
pub fn flip(path: &Path, off: u64, mask: u8) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, off).unwrap();
}

/// Block `b` of file `name` through `v`'s mount, with one read (short for a short last block).
pub fn read_block(v: &Vol, name: &str, b: u64) -> std::io::Result<Vec<u8>> {
    let f = File::open(v.p(name))?;
    let mut buf = vec![0u8; BS as usize];
    let n = f.read_at(&mut buf, b * BS)?;
    buf.truncate(n);
    Ok(buf)
}
