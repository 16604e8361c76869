//! Where format 3 (docs/FORMAT.md; layout 2's shape with 24-byte XAES nonces) puts a file's
//! blocks in its backing file, and the byte surgery the tampering tests do on it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::Vol;

/// Block size, plaintext and ciphertext page alike.
pub const BS: u64 = 4096;

/// Blocks per group (entries per entry page): (4096 - 128) / 88.
pub const GROUP: u64 = 45;
/// Bytes per entry: two slots of nonce (24) and tag (16), stamp (4), current slot (1), zeros (3).
pub const ENTRY: usize = 88;
/// Offsets inside an entry: slot 0's tag, slot 1, the stamp, the current-slot byte, the
/// reserved bytes.
pub const TAG0_AT: u64 = 24;
pub const STAMP_AT: u64 = 80;
pub const CUR_AT: u64 = 84;
pub const RESERVED_AT: u64 = 85;

/// Block `i`'s ciphertext page: after the header page, groups of GROUP + 1 pages, an entry
/// page and GROUP data pages.
pub fn data_off(i: u64) -> u64 {
    (i / GROUP * (GROUP + 1) + 1 + i % GROUP) * BS
}

/// Block `i`'s entry (two nonce/tag slots, stamp, current slot) in the entry page of its group.
pub fn entry_off(i: u64) -> u64 {
    i / GROUP * (GROUP + 1) * BS + 128 + i % GROUP * ENTRY as u64
}

/// The backing names of the `user.` extended attributes of a backing file (format 3
/// encrypts them).
pub fn backing_xattr_names(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).unwrap();
    buf[..n]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user.") && !n.starts_with(b"user.cmkfs."))
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect()
}

/// The backing name of the one `user.` extended attribute a backing file has.
pub fn only_backing_xattr(path: &Path) -> String {
    let v = backing_xattr_names(path);
    assert_eq!(v.len(), 1, "{} should have exactly one xattr: {v:?}", path.display());
    v.into_iter().next().unwrap()
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
