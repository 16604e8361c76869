//! Bad input gets a clear error and loses nothing: tampered blocks and headers, wrong and
//! missing keys, unusable mountpoints. Never wrong plaintext, never a dead mount.

use std::fs;
use std::process::Command;

use crate::common::*;

// Format 3 (docs/FORMAT.md): block `i`'s ciphertext is one page ([`data_off`]), its nonce
// and tag are in an entry in the entry page of its group ([`entry_off`], [`ENTRY`] bytes).
/// A stored block of a full-block file: (entry, ciphertext page).
fn blk(d: &[u8], i: u64) -> (Vec<u8>, Vec<u8>) {
    let (e, c) = (entry_off(i) as usize, data_off(i) as usize);
    (d[e..e + ENTRY].to_vec(), d[c..c + 4096].to_vec())
}
fn put(d: &mut [u8], i: u64, b: &(Vec<u8>, Vec<u8>)) {
    let (e, c) = (entry_off(i) as usize, data_off(i) as usize);
    d[e..e + ENTRY].copy_from_slice(&b.0);
    d[c..c + 4096].copy_from_slice(&b.1);
}

fn eio(r: std::io::Result<Vec<u8>>) -> bool {
    errno_of(r) == Some(libc::EIO)
}

#[test]
fn flipped_bit_is_eio_for_that_block_only_and_logged() {
    let mut v = Vol::new();
    let data = pattern(1, 3 * 4096);
    fs::write(v.p("victim"), &data).unwrap();
    v.umount();
    let backing = v.c("victim");
    flip(&backing, data_off(1) + 100, 0x10);
    v.mount(&[]);
    // The log names the backing file (format 3: its encrypted name; `cmkfs path --decrypt`
    // maps it back).
    let backing_name = backing.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(read_block(&v, "victim", 0).unwrap(), data[..4096]);
    assert!(eio(read_block(&v, "victim", 1)), "tampered block must be EIO");
    assert_eq!(read_block(&v, "victim", 2).unwrap(), data[8192..]);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || {
            let log = v.log_text();
            log.contains(&backing_name) && log.contains("block=1")
        }),
        "log must name the file and block: {}",
        v.log_text()
    );
    // The mount is still up and other files work.
    fs::write(v.p("other"), b"fine").unwrap();
    assert_eq!(fs::read(v.p("other")).unwrap(), b"fine");
}

#[test]
fn swapped_reordered_and_moved_blocks_are_detected() {
    let mut v = Vol::new();
    fs::write(v.p("a"), pattern(1, 2 * 4096)).unwrap();
    fs::write(v.p("b"), pattern(2, 2 * 4096)).unwrap();
    v.umount();
    let a = fs::read(v.c("a")).unwrap();
    let b = fs::read(v.c("b")).unwrap();
    // Reorder blocks 0 and 1 of a (entries and ciphertext both).
    let mut a2 = a.clone();
    put(&mut a2, 0, &blk(&a, 1));
    put(&mut a2, 1, &blk(&a, 0));
    fs::write(v.c("a"), &a2).unwrap();
    // Move block 0 of a into b at the same index.
    let mut b2 = b.clone();
    put(&mut b2, 0, &blk(&a, 0));
    fs::write(v.c("b"), &b2).unwrap();
    // Copy a's whole file header onto a third file that holds b's block 0.
    let mut c = b.clone();
    c[..84].copy_from_slice(&a[..84]);
    fs::write(v.c("c"), &c).unwrap();
    v.mount(&[]);
    assert!(
        eio(read_block(&v, "a", 0)) && eio(read_block(&v, "a", 1)),
        "reordered blocks"
    );
    assert!(eio(read_block(&v, "b", 0)), "block moved between files");
    assert_eq!(
        read_block(&v, "b", 1).unwrap(),
        pattern(2, 8192)[4096..],
        "untouched block still reads"
    );
    assert!(eio(read_block(&v, "c", 0)), "header swapped between files");
}

#[test]
fn truncated_or_garbled_file_header_is_eio_and_mount_stays_up() {
    let mut v = Vol::new();
    fs::write(v.p("trunc"), pattern(3, 5000)).unwrap();
    fs::write(v.p("garbled"), pattern(4, 5000)).unwrap();
    fs::write(v.p("good"), b"good").unwrap();
    v.umount();
    let t = fs::read(v.c("trunc")).unwrap();
    fs::write(v.c("trunc"), &t[..50]).unwrap();
    flip(&v.c("garbled"), 10, 0x10);
    v.mount(&[]);
    assert!(eio(fs::read(v.p("garbled"))), "garbled header must be EIO");
    assert!(
        eio(fs::read(v.p("trunc"))),
        "truncated header must be EIO, not an empty file"
    );
    assert_eq!(fs::read(v.p("good")).unwrap(), b"good");
    // Truncating the damaged file to zero makes it usable again (new DEK).
    fs::write(v.p("garbled"), b"rewritten").unwrap();
    assert_eq!(fs::read(v.p("garbled")).unwrap(), b"rewritten");
}

#[test]
fn panicking_handler_answers_eio_and_mount_stays_up() {
    let mut v = Vol::unmounted();
    let out = Command::new(BIN)
        .env("CMKFS_TEST_PANIC_ON_LOOKUP", "boom")
        .env("CMKFS_CONFIG_DIR", v.tmp.path().join("config"))
        .args(["mount", "--log-file"])
        .arg(&v.log)
        .arg(&v.cipher)
        .arg(&v.mnt)
        .output()
        .unwrap();
    ok(&out);
    v.mounted = true;
    let r = fs::metadata(v.p("boom"));
    assert_eq!(errno_of(r), Some(libc::EIO));
    fs::write(v.p("after"), b"alive").unwrap();
    assert_eq!(fs::read(v.p("after")).unwrap(), b"alive");
    assert!(v.log_text().contains("panicked"), "panic logged");
}

#[test]
fn wrong_key_is_refused_with_message() {
    let v = Vol::unmounted();
    let other = create_key(&v.tmp.path().join("other-store"), "other");
    let out = v.mount_output(&["--kek", &other]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("cannot unlock") && e.contains("keyslot 0"), "{e}");
    assert!(!is_mounted(&v), "nothing may be mounted after a refused mount");
}

#[test]
fn missing_key_is_refused_with_message() {
    let v = Vol::unmounted();
    fs::remove_dir_all(v.store.join("kek")).unwrap();
    let out = v.mount_output(&[]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("kek") && e.contains("not found") && e.contains("access denied"),
        "{e}"
    );
    fs::remove_dir_all(&v.store).unwrap();
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("unreachable") && e.contains("does not exist"), "{e}");
}

#[test]
fn tampered_volume_header_is_refused() {
    let v = Vol::unmounted();
    let h = fs::read_to_string(v.c("cmkfs.volume")).unwrap();
    let t = h.replacen("\"generation\": 1", "\"generation\": 7", 1);
    assert_ne!(h, t);
    fs::write(v.c("cmkfs.volume"), t).unwrap();
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("failed authentication"), "{e}");
    fs::write(v.c("cmkfs.volume"), "{ not json").unwrap();
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("not valid"), "{e}");
    assert!(!is_mounted(&v));
}

#[test]
fn unusable_mountpoints_and_missing_volume_have_clear_messages() {
    let mut v = Vol::unmounted();
    let e = stderr(&cmkfs([
        "mount",
        v.tmp.path().join("nothing").to_str().unwrap(),
        v.mnt.to_str().unwrap(),
    ]));
    assert!(e.contains("no cmkfs volume") && e.contains("cmkfs init"), "{e}");
    let e = stderr(&cmkfs([
        "mount",
        v.cipher.to_str().unwrap(),
        v.tmp.path().join("nomnt").to_str().unwrap(),
    ]));
    assert!(e.contains("does not exist") && e.contains("mkdir"), "{e}");
    v.mount(&[]);
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("busy") && e.contains("cmkfs umount"), "{e}");
    let e = stderr(&cmkfs(["umount", v.tmp.path().to_str().unwrap()]));
    assert!(e.contains("not a cmkfs mount"), "{e}");
    let e = stderr(&cmkfs(["status", v.tmp.path().to_str().unwrap()]));
    assert!(e.contains("not a mounted cmkfs volume"), "{e}");
}

#[test]
fn key_material_never_reaches_the_log() {
    let mut v = Vol::new();
    fs::write(v.p("f"), b"x").unwrap();
    v.umount();
    let log = v.log_text();
    assert!(log.contains("volume unlocked"), "log has content: {log}");
    let pem = fs::read_to_string(v.store.join("kek/v1.pem")).unwrap();
    let body: String = pem.lines().nth(1).unwrap().to_string();
    assert!(!log.contains("PRIVATE KEY") && !log.contains(&body));
}

fn is_mounted(v: &Vol) -> bool {
    let mp = v.mnt.to_str().unwrap().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(mp.as_str()))
}
