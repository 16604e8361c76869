//! What docs/FORMAT.md ("What is and is not authenticated") claims, one test per claim.
//!
//! Every test plays an attacker with write access to the cipher directory of an *unmounted*
//! volume: write known data through a mount, unmount, change the backing files, mount again
//! and read through the mount. Tests named `..._undetected` document a gap: the manipulation
//! reads back without any error. Tests named `..._is_eio` (or `..._refused`) document a
//! detection. The volumes are format 3 (what `cmkfs init` creates); offsets follow
//! docs/FORMAT.md, "Content blocks, formats 2 and 3", and backing names come from
//! `cmkfs path` (`Vol::c`).

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

/// Backing length of a file of plaintext size `n` (docs/FORMAT.md).
fn backing_len(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let last = (n - 1) / BS;
    data_off(last) + (n - last * BS)
}
/// Plaintext size from a backing length, exactly as docs/FORMAT.md writes it.
fn doc_plain_size(l: u64) -> u64 {
    if l <= 4096 {
        return 0;
    }
    let p = (l - 1) / 4096;
    let (g, r) = (p / (GROUP + 1), p % (GROUP + 1));
    if r == 0 {
        g * GROUP * 4096
    } else {
        (g * GROUP + r - 1) * 4096 + (l - p * 4096)
    }
}

/// The stored pieces of block `i` of a backing file: (entry, ciphertext page).
fn take_block(d: &[u8], i: u64) -> (Vec<u8>, Vec<u8>) {
    let (e, c) = (entry_off(i) as usize, data_off(i) as usize);
    (d[e..e + ENTRY].to_vec(), d[c..(c + 4096).min(d.len())].to_vec())
}
fn put_block(path: &Path, i: u64, b: &(Vec<u8>, Vec<u8>)) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&b.0, entry_off(i)).unwrap();
    f.write_all_at(&b.1, data_off(i)).unwrap();
}

fn pwrite(path: &Path, data: &[u8], off: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, off).unwrap();
}

fn is_eio<T>(r: std::io::Result<T>) -> bool {
    errno_of(r) == Some(libc::EIO)
}

/// Block `b` of content `seed`: distinct for every (seed, block).
fn blk(seed: u64, b: u64) -> Vec<u8> {
    pattern(seed * 1000 + b + 1, BS as usize)
}

fn blocks(seed: u64, n: u64) -> Vec<u8> {
    (0..n).flat_map(|b| blk(seed, b)).collect()
}

fn getxattr(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

fn setxattr(p: &Path, name: &str, val: &[u8]) {
    if let Err(e) = rustix::fs::lsetxattr(p, name, val, rustix::fs::XattrFlags::empty()) {
        panic!("setxattr {name} on {}: {e}", p.display());
    }
}

fn removexattr(p: &Path, name: &str) {
    if let Err(e) = rustix::fs::lremovexattr(p, name) {
        panic!("removexattr {name}: {e}");
    }
}

fn listxattr(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(p, &mut buf[..]).unwrap_or_else(|e| panic!("listxattr: {e}"));
    buf[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Not detected: whole files.

#[test]
fn old_copy_of_whole_file_reads_back_undetected() {
    let mut v = Vol::new();
    let old = blocks(1, 3);
    fs::write(v.p("f"), &old).unwrap();
    v.umount();
    let saved = fs::read(v.c("f")).unwrap();
    v.mount(&[]);
    // Overwritten in place (same DEK) and then replaced (truncate to 0: new file id and DEK).
    pwrite(&v.p("f"), &blk(2, 1), BS);
    fs::write(v.p("f"), blocks(3, 5)).unwrap();
    assert_eq!(fs::read(v.p("f")).unwrap(), blocks(3, 5));
    v.umount();
    fs::write(v.c("f"), &saved).unwrap();
    v.mount(&[]);
    assert_eq!(
        fs::read(v.p("f")).unwrap(),
        old,
        "the old version reads back, byte-exact"
    );
}

#[test]
fn deleted_file_restored_from_old_copy_reads_back_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("gone"), blocks(4, 2)).unwrap();
    v.umount();
    let saved = fs::read(v.c("gone")).unwrap();
    v.mount(&[]);
    fs::remove_file(v.p("gone")).unwrap();
    v.umount();
    fs::write(v.c("gone"), &saved).unwrap();
    v.mount(&[]);
    assert_eq!(fs::read(v.p("gone")).unwrap(), blocks(4, 2));
}

#[test]
fn swapped_file_contents_read_as_each_other_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("a"), blocks(5, 2)).unwrap();
    fs::write(v.p("b"), pattern(6, 5000)).unwrap();
    v.umount();
    let (a, b) = (fs::read(v.c("a")).unwrap(), fs::read(v.c("b")).unwrap());
    fs::write(v.c("a"), &b).unwrap();
    fs::write(v.c("b"), &a).unwrap();
    v.mount(&[]);
    assert_eq!(fs::read(v.p("a")).unwrap(), pattern(6, 5000), "a holds b's content");
    assert_eq!(fs::read(v.p("b")).unwrap(), blocks(5, 2), "b holds a's content");
}

#[test]
fn file_copied_under_another_name_appears_as_duplicate_undetected() {
    let mut v = Vol::new();
    fs::create_dir(v.p("d")).unwrap();
    fs::write(v.p("a"), blocks(7, 3)).unwrap();
    v.umount();
    fs::copy(v.c("a"), v.c("copy")).unwrap();
    fs::copy(v.c("a"), v.c("d/elsewhere")).unwrap();
    v.mount(&[]);
    assert_eq!(fs::read(v.p("copy")).unwrap(), blocks(7, 3));
    assert_eq!(fs::read(v.p("d/elsewhere")).unwrap(), blocks(7, 3));
    assert_eq!(fs::read(v.p("a")).unwrap(), blocks(7, 3));
}

#[test]
fn file_from_another_volume_is_eio() {
    let mut v = Vol::new();
    let mut w = Vol::new();
    fs::write(w.p("foreign"), blocks(8, 2)).unwrap();
    w.umount();
    v.umount();
    fs::copy(w.c("foreign"), v.c("foreign")).unwrap();
    v.mount(&[]);
    assert!(
        is_eio(fs::read(v.p("foreign"))),
        "its header does not unwrap in this volume"
    );
}

// ---------------------------------------------------------------------------------------
// Not detected: truncation and extension.

#[test]
fn truncation_at_block_boundary_reads_as_shorter_file_undetected() {
    let mut v = Vol::new();
    let data = pattern(9, 5 * BS as usize + 700);
    fs::write(v.p("f"), &data).unwrap();
    // Across a group boundary too: 70 blocks cut to GROUP (the file then ends at group 0's end).
    let long = blocks(10, 70);
    fs::write(v.p("long"), &long).unwrap();
    v.umount();
    OpenOptions::new()
        .write(true)
        .open(v.c("f"))
        .unwrap()
        .set_len(backing_len(2 * BS))
        .unwrap();
    OpenOptions::new()
        .write(true)
        .open(v.c("long"))
        .unwrap()
        .set_len(backing_len(GROUP * BS))
        .unwrap();
    v.mount(&[]);
    assert_eq!(fs::metadata(v.p("f")).unwrap().len(), 2 * BS);
    assert_eq!(
        fs::read(v.p("f")).unwrap(),
        data[..2 * BS as usize],
        "the first two blocks, no error"
    );
    assert_eq!(fs::read(v.p("long")).unwrap(), long[..(GROUP * BS) as usize]);
}

#[test]
fn truncation_to_header_page_or_nothing_reads_as_empty_file_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("to-page"), blocks(11, 3)).unwrap();
    fs::write(v.p("to-header"), blocks(12, 3)).unwrap();
    fs::write(v.p("to-zero"), blocks(13, 3)).unwrap();
    v.umount();
    for (name, len) in [("to-page", 4096), ("to-header", 84), ("to-zero", 0)] {
        OpenOptions::new()
            .write(true)
            .open(v.c(name))
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    v.mount(&[]);
    for name in ["to-page", "to-header", "to-zero"] {
        assert_eq!(fs::read(v.p(name)).unwrap(), b"", "{name} reads as an empty file");
    }
}

#[test]
fn truncation_inside_a_block_is_eio_for_that_block() {
    let mut v = Vol::new();
    let data = blocks(14, 4);
    fs::write(v.p("f"), &data).unwrap();
    v.umount();
    OpenOptions::new()
        .write(true)
        .open(v.c("f"))
        .unwrap()
        .set_len(data_off(2) + 100)
        .unwrap();
    v.mount(&[]);
    assert_eq!(
        fs::metadata(v.p("f")).unwrap().len(),
        2 * BS + 100,
        "the size follows the cut"
    );
    assert_eq!(read_block(&v, "f", 0).unwrap(), blk(14, 0));
    assert_eq!(read_block(&v, "f", 1).unwrap(), blk(14, 1));
    assert!(is_eio(read_block(&v, "f", 2)), "the cut block fails its tag");
}

#[test]
fn appended_zero_blocks_read_as_zeros_undetected() {
    let mut v = Vol::new();
    let data = blocks(15, 3);
    fs::write(v.p("f"), &data).unwrap();
    fs::write(v.p("group"), blocks(16, GROUP - 2)).unwrap();
    v.umount();
    // Three zero blocks after the end; for "group", past the end of group 0 and into
    // group 1 (its entry page zero too).
    OpenOptions::new()
        .write(true)
        .open(v.c("f"))
        .unwrap()
        .set_len(backing_len(6 * BS))
        .unwrap();
    OpenOptions::new()
        .write(true)
        .open(v.c("group"))
        .unwrap()
        .set_len(backing_len((GROUP + 3) * BS))
        .unwrap();
    v.mount(&[]);
    let mut want = data.clone();
    want.resize(6 * BS as usize, 0);
    assert_eq!(
        fs::read(v.p("f")).unwrap(),
        want,
        "three more blocks of zeros, no error"
    );
    let mut want = blocks(16, GROUP - 2);
    want.resize(((GROUP + 3) * BS) as usize, 0);
    assert_eq!(fs::read(v.p("group")).unwrap(), want);
}

#[test]
fn appended_pages_with_any_content_read_as_zeros_undetected() {
    // An appended block's entry is zero, so it is a hole whatever its ciphertext page holds.
    let mut v = Vol::new();
    fs::write(v.p("f"), blocks(17, 2)).unwrap();
    v.umount();
    pwrite(&v.c("f"), &pattern(99, 2 * BS as usize), data_off(2));
    v.mount(&[]);
    let mut want = blocks(17, 2);
    want.resize(4 * BS as usize, 0);
    assert_eq!(fs::read(v.p("f")).unwrap(), want);
}

#[test]
fn extension_after_a_partial_last_block_is_eio_for_that_block() {
    let mut v = Vol::new();
    let data = pattern(18, BS as usize + 100);
    fs::write(v.p("f"), &data).unwrap();
    v.umount();
    OpenOptions::new()
        .write(true)
        .open(v.c("f"))
        .unwrap()
        .set_len(backing_len(3 * BS))
        .unwrap();
    v.mount(&[]);
    assert_eq!(read_block(&v, "f", 0).unwrap(), data[..BS as usize]);
    assert!(
        is_eio(read_block(&v, "f", 1)),
        "the short last block now has a full page of ciphertext and fails its tag"
    );
    assert_eq!(
        read_block(&v, "f", 2).unwrap(),
        vec![0u8; BS as usize],
        "the added block is a hole"
    );
}

// ---------------------------------------------------------------------------------------
// Not detected: single blocks rolled back or zeroed.

#[test]
fn old_copy_of_one_block_reads_back_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("f"), blocks(20, 3)).unwrap();
    v.umount();
    let old1 = take_block(&fs::read(v.c("f")).unwrap(), 1);
    v.mount(&[]);
    // Two later writes of block 1, so that neither slot of its entry still holds the old tag.
    pwrite(&v.p("f"), &blk(21, 1), BS);
    pwrite(&v.p("f"), &blk(22, 1), BS);
    pwrite(&v.p("f"), &blk(22, 2), 2 * BS);
    v.umount();
    put_block(&v.c("f"), 1, &old1);
    v.mount(&[]);
    assert_eq!(read_block(&v, "f", 0).unwrap(), blk(20, 0));
    assert_eq!(
        read_block(&v, "f", 1).unwrap(),
        blk(20, 1),
        "block 1 rolled back, no error"
    );
    assert_eq!(
        read_block(&v, "f", 2).unwrap(),
        blk(22, 2),
        "block 2 keeps its newest content"
    );
}

#[test]
fn previous_version_of_block_comes_back_from_its_ciphertext_page_alone_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("f"), blocks(23, 2)).unwrap();
    v.umount();
    let old_page = take_block(&fs::read(v.c("f")).unwrap(), 1).1;
    v.mount(&[]);
    pwrite(&v.p("f"), &blk(24, 1), BS);
    v.umount();
    // Only the ciphertext page: the entry's other slot still holds the previous nonce and tag.
    pwrite(&v.c("f"), &old_page, data_off(1));
    v.mount(&[]);
    assert_eq!(read_block(&v, "f", 1).unwrap(), blk(23, 1));
}

#[test]
fn zeroed_entry_reads_block_as_zeros_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("f"), blocks(25, 3)).unwrap();
    v.umount();
    // Only the entry: the ciphertext page is left as it is, and is not looked at.
    pwrite(&v.c("f"), &[0u8; ENTRY], entry_off(1));
    v.mount(&[]);
    assert_eq!(read_block(&v, "f", 0).unwrap(), blk(25, 0));
    assert_eq!(read_block(&v, "f", 1).unwrap(), vec![0u8; BS as usize], "a hole now");
    assert_eq!(read_block(&v, "f", 2).unwrap(), blk(25, 2));
}

// ---------------------------------------------------------------------------------------
// Detected: blocks damaged, moved or reordered.

#[test]
fn flipped_bit_in_ciphertext_nonce_or_tag_is_eio() {
    let mut v = Vol::new();
    let data = pattern(26, 4 * BS as usize + 10);
    fs::write(v.p("f"), &data).unwrap();
    v.umount();
    flip(&v.c("f"), data_off(0) + 1234, 0x01); // ciphertext of block 0
    flip(&v.c("f"), entry_off(1) + 3, 0x80); // nonce of block 1 (slot 0, current)
    flip(&v.c("f"), entry_off(2) + TAG0_AT + 4, 0x04); // tag of block 2
    flip(&v.c("f"), data_off(4) + 9, 0x10); // last byte of the 10-byte last block
    v.mount(&[]);
    for b in [0, 1, 2, 4] {
        assert!(is_eio(read_block(&v, "f", b)), "block {b}");
    }
    assert_eq!(
        read_block(&v, "f", 3).unwrap(),
        data[3 * BS as usize..4 * BS as usize],
        "block 3 intact"
    );
}

#[test]
fn flipped_bits_in_slot_bookkeeping_and_padding_change_nothing_read() {
    let mut v = Vol::new();
    fs::write(v.p("f"), blocks(27, 4)).unwrap();
    v.umount();
    v.mount(&[]);
    pwrite(&v.p("f"), &blk(27, 3), 3 * BS); // block 3: both slots used
    v.umount();
    flip(&v.c("f"), 100, 0xff); // padding between the file header and the first entry
    flip(&v.c("f"), entry_off(0) + CUR_AT, 0x01); // current-slot byte: the other (empty) slot first
    flip(&v.c("f"), entry_off(1) + STAMP_AT + 1, 0x22); // session stamp
    flip(&v.c("f"), entry_off(2) + RESERVED_AT + 1, 0x08); // reserved bytes
    flip(&v.c("f"), entry_off(3) + TAG0_AT + 4, 0x01); // slot 0's tag: after two writes, the previous slot
    v.mount(&[]);
    assert_eq!(fs::read(v.p("f")).unwrap(), blocks(27, 4), "same content, no error");
}

#[test]
fn swapped_blocks_within_a_file_are_eio() {
    let mut v = Vol::new();
    fs::write(v.p("f"), blocks(28, 3)).unwrap();
    v.umount();
    let d = fs::read(v.c("f")).unwrap();
    // Whole blocks, entry and ciphertext page both.
    put_block(&v.c("f"), 0, &take_block(&d, 2));
    put_block(&v.c("f"), 2, &take_block(&d, 0));
    v.mount(&[]);
    assert!(is_eio(read_block(&v, "f", 0)));
    assert!(is_eio(read_block(&v, "f", 2)));
    assert_eq!(read_block(&v, "f", 1).unwrap(), blk(28, 1));
}

#[test]
fn block_moved_to_another_file_is_eio() {
    let mut v = Vol::new();
    fs::write(v.p("a"), blocks(29, 2)).unwrap();
    fs::write(v.p("b"), blocks(30, 2)).unwrap();
    v.umount();
    let a = fs::read(v.c("a")).unwrap();
    // Same index in the other file, and another index.
    put_block(&v.c("b"), 0, &take_block(&a, 0));
    put_block(&v.c("b"), 1, &take_block(&a, 0));
    v.mount(&[]);
    assert!(is_eio(read_block(&v, "b", 0)));
    assert!(is_eio(read_block(&v, "b", 1)));
    assert_eq!(fs::read(v.p("a")).unwrap(), blocks(29, 2));
}

// ---------------------------------------------------------------------------------------
// File headers.

#[test]
fn header_copied_from_another_file_is_eio() {
    let mut v = Vol::new();
    fs::write(v.p("a"), blocks(31, 2)).unwrap();
    fs::write(v.p("b"), blocks(32, 2)).unwrap();
    v.umount();
    let a = fs::read(v.c("a")).unwrap();
    pwrite(&v.c("b"), &a[..84], 0);
    v.mount(&[]);
    // The header unwraps (it is a valid header of this volume), but b's blocks were sealed
    // under b's DEK and file id.
    assert!(is_eio(read_block(&v, "b", 0)));
    assert!(is_eio(read_block(&v, "b", 1)));
}

#[test]
fn corrupted_file_header_is_eio() {
    let mut v = Vol::new();
    // One file per header field: magic, layout, flags, file id, nonce, wrapped DEK, tag.
    let fields = [0u64, 5, 7, 8, 30, 50, 80];
    for (i, _) in fields.iter().enumerate() {
        fs::write(v.p(&format!("f{i}")), blocks(33, 2)).unwrap();
    }
    v.umount();
    for (i, off) in fields.iter().enumerate() {
        flip(&v.c(&format!("f{i}")), *off, 0x01);
    }
    v.mount(&[]);
    for (i, off) in fields.iter().enumerate() {
        assert!(is_eio(fs::read(v.p(&format!("f{i}")))), "header byte {off}");
    }
}

// ---------------------------------------------------------------------------------------
// Extended attributes.

#[test]
fn xattr_value_rolled_back_reads_back_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("b"), b"b").unwrap();
    setxattr(&v.p("b"), "user.tag", b"value of b, old");
    let b = v.c("b");
    let name = only_backing_xattr(&b);
    v.umount();
    let b_old = getxattr(&b, &name).unwrap();
    v.mount(&[]);
    setxattr(&v.p("b"), "user.tag", b"value of b, new");
    v.umount();
    setxattr(&b, &name, &b_old); // b's old value back
    v.mount(&[]);
    assert_eq!(getxattr(&v.p("b"), "user.tag").unwrap(), b"value of b, old");
}

#[test]
fn xattr_value_copied_to_another_file_is_eio() {
    let mut v = Vol::new();
    fs::write(v.p("a"), b"a").unwrap();
    fs::write(v.p("c"), b"c").unwrap();
    fs::create_dir(v.p("d")).unwrap();
    setxattr(&v.p("a"), "user.tag", b"secret of a");
    let (a, c, d) = (v.c("a"), v.c("c"), v.c("d"));
    let name = only_backing_xattr(&a);
    v.umount();
    let a_raw = getxattr(&a, &name).unwrap();
    setxattr(&c, &name, &a_raw); // a's value onto another file of the volume
    setxattr(&d, &name, &a_raw); // and onto a directory
    v.mount(&[]);
    assert_eq!(getxattr(&v.p("a"), "user.tag").unwrap(), b"secret of a");
    assert!(is_eio(getxattr(&v.p("c"), "user.tag")), "bound to its file");
    assert!(is_eio(getxattr(&v.p("d"), "user.tag")), "bound to its file");
}

#[test]
fn xattr_value_moved_to_another_name_is_eio() {
    let mut v = Vol::new();
    fs::write(v.p("a"), b"a").unwrap();
    fs::write(v.p("probe"), b"p").unwrap();
    setxattr(&v.p("a"), "user.one", b"one");
    setxattr(&v.p("probe"), "user.two", b"two");
    let (a, probe) = (v.c("a"), v.c("probe"));
    let (one, two) = (only_backing_xattr(&a), only_backing_xattr(&probe));
    v.umount();
    let raw = getxattr(&a, &one).unwrap();
    setxattr(&a, &two, &raw);
    removexattr(&a, &one);
    v.mount(&[]);
    assert!(is_eio(getxattr(&v.p("a"), "user.two")));
}

#[test]
fn flipped_bit_in_xattr_value_is_eio() {
    let mut v = Vol::new();
    fs::write(v.p("a"), b"a").unwrap();
    setxattr(&v.p("a"), "user.one", b"one");
    let a = v.c("a");
    let name = only_backing_xattr(&a);
    v.umount();
    let mut raw = getxattr(&a, &name).unwrap();
    raw[14] ^= 1;
    setxattr(&a, &name, &raw);
    v.mount(&[]);
    assert!(is_eio(getxattr(&v.p("a"), "user.one")));
}

// ---------------------------------------------------------------------------------------
// The volume header.

#[test]
fn volume_header_of_another_volume_is_refused_even_when_its_kek_is_usable() {
    let mut v = Vol::new();
    fs::write(v.p("f"), b"mine").unwrap();
    v.umount();
    let w = Vol::unmounted();
    fs::copy(w.c("cmkfs.volume"), v.c("cmkfs.volume")).unwrap();
    // The other volume's header is self-consistent and its keyslot names a KEK this machine
    // can use, but not one this volume's local configuration allows: refused.
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("allows"), "{e}");
    // Unlocked with the other volume's KEK on the command line, the pinned volume id refuses it.
    let e = stderr(&v.mount_output(&["--kek", &w.uri.clone()]));
    assert!(e.contains("volume id"), "{e}");
}

#[test]
fn volume_header_of_another_volume_is_refused_when_its_kek_is_not_available() {
    let mut v = Vol::new();
    fs::write(v.p("f"), b"mine").unwrap();
    v.umount();
    let w = Vol::unmounted();
    fs::copy(w.c("cmkfs.volume"), v.c("cmkfs.volume")).unwrap();
    fs::remove_dir_all(&w.store).unwrap();
    let out = v.mount_output(&[]);
    assert!(!out.status.success(), "mount refused");
    // Pointing the mount at this volume's own KEK does not help: no keyslot matches it.
    let out = v.mount_output(&["--kek", &v.uri.clone()]);
    assert!(!out.status.success(), "mount refused: {}", stderr(&out));
}

#[test]
fn tampered_volume_header_is_refused() {
    let v = Vol::unmounted();
    let h = fs::read_to_string(v.c("cmkfs.volume")).unwrap();
    let t = h.replacen("\"generation\": 1", "\"generation\": 2", 1);
    assert_ne!(h, t);
    fs::write(v.c("cmkfs.volume"), t).unwrap();
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("failed authentication"), "{e}");
}

#[test]
fn old_copy_of_volume_header_is_refused_as_a_rollback() {
    let v = Vol::unmounted();
    let escrow = v.new_key("escrow");
    ok(&v.run([
        OsStr::new("keyslot"),
        OsStr::new("add"),
        OsStr::new("--kek"),
        OsStr::new(&escrow),
        v.cipher.as_os_str(),
    ]));
    let saved = fs::read(v.c("cmkfs.volume")).unwrap();
    let list: serde_json::Value = serde_json::from_str(&ok(&v.run([
        OsStr::new("keyslot"),
        OsStr::new("list"),
        OsStr::new("--json"),
        v.cipher.as_os_str(),
    ])))
    .unwrap();
    let slot = list
        .as_array()
        .or_else(|| list["keyslots"].as_array())
        .unwrap_or_else(|| panic!("keyslot list: {list}"))
        .iter()
        .find(|s| s["role"] == "recovery")
        .unwrap_or_else(|| panic!("no recovery slot: {list}"))["id"]
        .as_u64()
        .unwrap()
        .to_string();
    ok(&v.run([
        OsStr::new("keyslot"),
        OsStr::new("remove"),
        OsStr::new("--slot"),
        OsStr::new(&slot),
        v.cipher.as_os_str(),
    ]));
    assert!(
        !v.mount_output(&["--kek", &escrow]).status.success(),
        "removed slot no longer opens"
    );
    fs::write(v.c("cmkfs.volume"), &saved).unwrap();
    // The old header authenticates (it was MACed with the same volume key), but this host
    // has seen a newer generation: the removed keyslot does not come back.
    let e = stderr(&v.mount_output(&["--kek", &escrow]));
    assert!(e.contains("generation") && e.contains("rollback"), "{e}");
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("rollback"), "{e}");
}

// ---------------------------------------------------------------------------------------
// Names, symlink targets, xattr names: encrypted (format 3).

/// Every name, symlink target and xattr name under `dir` (recursively), and every file's bytes.
fn everything_stored(dir: &Path, out: &mut Vec<Vec<u8>>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        out.push(e.file_name().as_encoded_bytes().to_vec());
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            out.push(fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes().to_vec());
            continue;
        }
        out.extend(listxattr(&p).into_iter().map(String::into_bytes));
        if t.is_dir() {
            everything_stored(&p, out);
        } else if t.is_file() {
            out.push(fs::read(&p).unwrap());
        }
    }
}

#[test]
fn names_symlink_targets_and_xattr_names_are_encrypted() {
    let mut v = Vol::new();
    let long = format!("quarterly-{}", "x".repeat(200));
    fs::create_dir_all(v.p("hr/payroll/secret-merger")).unwrap();
    fs::write(v.p("hr/payroll/secret-merger/acme-offer.txt"), b"x").unwrap();
    fs::write(v.p(&format!("hr/{long}")), b"y").unwrap();
    fs::write(v.p("hr/Gehaltsübersicht-日本.txt"), b"z").unwrap();
    std::os::unix::fs::symlink("../payroll/target-of-the-link", v.p("hr/link")).unwrap();
    setxattr(
        &v.p("hr/payroll/secret-merger/acme-offer.txt"),
        "user.classification",
        b"v",
    );
    setxattr(&v.p("hr"), "user.department-label", b"w");
    v.umount();
    let mut stored = vec![];
    everything_stored(&v.cipher, &mut stored);
    // (Needles of six bytes or more: a two-letter name like "hr" turns up in random base64.)
    let needles = [
        "payroll",
        "secret-merger",
        "acme-offer",
        "quarterly",
        "Gehalts",
        "日本",
        "target-of-the-link",
        "classification",
        "department",
    ];
    for n in needles {
        for s in &stored {
            assert!(
                !s.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} found in the cipher directory: {:?}",
                String::from_utf8_lossy(s)
            );
        }
    }
    // The shape stays visible: one backing directory per directory, one entry per name.
    assert!(v.c("hr/payroll/secret-merger/acme-offer.txt").is_file());
    v.mount(&[]);
    assert_eq!(fs::read(v.p(&format!("hr/{long}"))).unwrap(), b"y");
    assert_eq!(
        fs::read_link(v.p("hr/link")).unwrap(),
        Path::new("../payroll/target-of-the-link")
    );
    assert_eq!(getxattr(&v.p("hr"), "user.department-label").unwrap(), b"w");
}

#[test]
fn names_and_symlink_targets_changed_offline() {
    let mut v = Vol::new();
    fs::create_dir(v.p("d")).unwrap();
    fs::create_dir(v.p("e")).unwrap();
    fs::write(v.p("d/f"), b"content").unwrap();
    fs::write(v.p("d/g"), b"other").unwrap();
    fs::write(v.p("doomed"), b"x").unwrap();
    std::os::unix::fs::symlink("d/f", v.p("link")).unwrap();
    std::os::unix::fs::symlink("d/g", v.p("link2")).unwrap();
    std::os::unix::fs::symlink("d/f", v.p("planted-target")).unwrap();
    let (df, dg, e) = (v.c("d/f"), v.c("d/g"), v.c("e"));
    let (link, link2, planted) = (v.c("link"), v.c("link2"), v.c("planted-target"));
    let doomed = v.c("doomed");
    v.umount();
    // Detected: an entry moved to another directory (its name is bound to the directory's IV)
    // no longer decrypts there and is hidden; a symlink target the attacker wrote fails
    // authentication.
    fs::rename(&df, e.join(df.file_name().unwrap())).unwrap();
    fs::remove_file(&planted).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &planted).unwrap();
    // Not detected: a deletion; a symlink target replaced by another symlink's (sealed) target.
    fs::remove_file(&doomed).unwrap();
    let t2 = fs::read_link(&link2).unwrap();
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&t2, &link).unwrap();
    v.mount(&[]);
    assert!(!v.p("d/f").exists() && !v.p("e/f").exists(), "moved entry is hidden");
    assert_eq!(fs::read_dir(v.p("e")).unwrap().count(), 0);
    assert!(is_eio(fs::read_link(v.p("planted-target"))));
    assert!(!v.p("doomed").exists());
    assert_eq!(
        fs::read_link(v.p("link")).unwrap(),
        Path::new("d/g"),
        "other link's target"
    );
    assert_eq!(fs::read(v.p("d/g")).unwrap(), b"other");
    drop(dg);
}

#[test]
fn entries_exchanged_within_a_directory_and_metadata_changed_offline_undetected() {
    let mut v = Vol::new();
    fs::write(v.p("a"), b"content of a").unwrap();
    fs::write(v.p("b"), b"content of b").unwrap();
    fs::write(v.p("c"), b"content of c").unwrap();
    let (a, b, c) = (v.c("a"), v.c("b"), v.c("c"));
    v.umount();
    // Backing entries exchanged under their (valid) names, a hard link made under another
    // valid name of the same directory: the names now show the other content.
    let tmp = v.cipher.join("tmp-swap");
    fs::rename(&a, &tmp).unwrap();
    fs::rename(&b, &a).unwrap();
    fs::rename(&tmp, &b).unwrap();
    fs::remove_file(&c).unwrap();
    fs::hard_link(&a, &c).unwrap();
    std::os::unix::fs::chown(&a, Some(4321), Some(8765)).unwrap();
    fs::set_permissions(&a, fs::Permissions::from_mode(0o4777)).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    v.mount(&[]);
    assert_eq!(fs::read(v.p("a")).unwrap(), b"content of b");
    assert_eq!(fs::read(v.p("b")).unwrap(), b"content of a");
    assert_eq!(fs::read(v.p("c")).unwrap(), b"content of b");
    let m = fs::metadata(v.p("a")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4777, "mode as set in the cipher directory");
    assert_eq!((m.uid(), m.gid()), (4321, 8765));
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(m.nlink(), 2);
}

#[test]
fn exact_file_size_is_visible_from_backing_length() {
    let mut v = Vol::new();
    let sizes = [
        1u64,
        100,
        4095,
        4096,
        4097,
        GROUP * 4096 - 1,
        GROUP * 4096,
        GROUP * 4096 + 1,
        300_001,
    ];
    for s in sizes {
        fs::write(v.p(&format!("s{s}")), pattern(s, s as usize)).unwrap();
    }
    // Which blocks are holes is visible too: a hole's entry is all zeros.
    let f = fs::File::create(v.p("sparse")).unwrap();
    f.write_all_at(b"a", 0).unwrap();
    f.write_all_at(b"b", 5 * BS).unwrap();
    drop(f);
    v.umount();
    for s in sizes {
        let l = fs::metadata(v.c(&format!("s{s}"))).unwrap().len();
        assert_eq!(l, backing_len(s));
        assert_eq!(doc_plain_size(l), s, "size {s} to the byte from backing length {l}");
    }
    let d = fs::read(v.c("sparse")).unwrap();
    for b in 0..6u64 {
        let hole = d[entry_off(b) as usize..][..ENTRY].iter().all(|&x| x == 0);
        assert_eq!(hole, (1..5).contains(&b), "block {b}");
    }
}
