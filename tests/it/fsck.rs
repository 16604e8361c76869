//! `cmkfs fsck` on real volumes: clean volumes pass, every kind of damage is found and
//! located to the byte range, online checks are read-only, quarantine moves only damaged
//! files, and a damaged block is EIO for its own range only, logged once.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::process::Output;

use crate::common::*;

fn fsck(v: &Vol, target: &std::path::Path, extra: &[&str]) -> (i32, serde_json::Value, Output) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("fsck"), OsStr::new("--json")];
    args.extend(extra.iter().map(OsStr::new));
    args.push(target.as_os_str());
    let out = v.run(args);
    let code = out.status.code().unwrap_or(-1);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (code, json, out)
}

/// A volume with a few kinds of content, unmounted.
fn populated() -> Vol {
    let mut v = Vol::new();
    std::fs::create_dir_all(v.p("d/e")).unwrap();
    std::fs::write(v.p("d/e/ten-blocks"), pattern(1, 10 * BS as usize)).unwrap();
    std::fs::write(v.p("d/header"), pattern(2, 5000)).unwrap();
    std::fs::write(v.p("xattrs"), b"x").unwrap();
    xattr_set(&v.p("xattrs"), "user.note", b"hello");
    std::fs::write(v.p("empty"), b"").unwrap();
    std::os::unix::fs::symlink("d/header", v.p("link")).unwrap();
    // A sparse file: data, a hole, data.
    let f = std::fs::File::create(v.p("sparse")).unwrap();
    f.write_all_at(&pattern(3, 100), 0).unwrap();
    f.write_all_at(&pattern(4, 100), 64 * BS).unwrap();
    drop(f);
    v.umount();
    v
}

fn xattr_set(p: &std::path::Path, name: &str, val: &[u8]) {
    if let Err(e) = rustix::fs::setxattr(p, name, val, rustix::fs::XattrFlags::empty()) {
        panic!("setxattr: {e}");
    }
}

#[test]
fn clean_volume_is_clean() {
    let v = populated();
    let (code, j, out) = fsck(&v, &v.cipher, &[]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(j["files"], 5, "{j}");
    assert_eq!(j["directories"], 2);
    assert_eq!(j["xattrs"], 1);
    // 10 + 2 (5000 bytes) + 1 ("x") + 2 sparse data blocks; the sparse file's hole is not a data block.
    assert_eq!(j["blocks"], 15, "{j}");
    assert!(j["holes"].as_u64().unwrap() >= 63, "{j}");
    assert!(j["damaged"].as_array().unwrap().is_empty());
    let audit = v.audit_events();
    assert!(
        audit.iter().any(|e| e["event"] == "fsck" && e["exit_code"] == 0),
        "fsck is audited"
    );
}

#[test]
fn damage_is_found_and_located_offline_and_online() {
    let mut v = populated();
    // One bit in block 3 of ten-blocks, one in the DEK of header, one in the xattr value.
    flip(&v.c("d/e/ten-blocks"), data_off(3) + 100, 0x40);
    flip(&v.c("d/header"), 40, 0x40);
    let c = v.c("xattrs");
    let mut buf = vec![0u8; 256];
    let name = only_backing_xattr(&c);
    let len = rustix::fs::getxattr(&c, name.as_str(), &mut buf[..]).unwrap();
    assert!(len > 0);
    buf[len - 1] ^= 1;
    rustix::fs::setxattr(&c, name.as_str(), &buf[..len], rustix::fs::XattrFlags::empty()).unwrap();

    let check = |j: &serde_json::Value| {
        let d = j["damaged"].as_array().unwrap();
        assert_eq!(d.len(), 3, "{j}");
        let by = |p: &str| {
            d.iter()
                .find(|x| x["path"] == p)
                .unwrap_or_else(|| panic!("{p} not reported: {j}"))
        };
        let blocks = by("d/e/ten-blocks");
        assert_eq!(blocks["kind"], "blocks");
        assert_eq!(blocks["byte_ranges"], serde_json::json!([[3 * BS, 4 * BS]]));
        assert_eq!(by("d/header")["kind"], "header");
        assert_eq!(by("xattrs")["kind"], "xattr");
    };
    let (code, j, _) = fsck(&v, &v.cipher, &[]);
    assert_eq!(code, 4, "damage left in place: {j}");
    assert_eq!(j["online"], false);
    check(&j);

    // Online, through the mountpoint: same findings, read-only.
    v.mount(&[]);
    let before = std::fs::read(v.c("d/e/ten-blocks")).unwrap();
    let (code, j, _) = fsck(&v, &v.mnt, &[]);
    assert_eq!(code, 4);
    assert_eq!(j["online"], true);
    check(&j);
    assert_eq!(
        std::fs::read(v.c("d/e/ten-blocks")).unwrap(),
        before,
        "online fsck writes nothing"
    );
    let q = v.tmp.path().join("quarantine");
    let (code, _, out) = fsck(&v, &v.mnt, &["--quarantine", q.to_str().unwrap()]);
    assert_eq!(code, 8, "quarantine is offline only");
    assert!(stderr(&out).contains("offline only"));

    // Through the mount, the damaged block is EIO for its own range only.
    let f = std::fs::File::open(v.p("d/e/ten-blocks")).unwrap();
    let want = pattern(1, 10 * BS as usize);
    let mut b = vec![0u8; BS as usize];
    for i in [0u64, 2, 4, 9] {
        f.read_exact_at(&mut b, i * BS).unwrap();
        assert_eq!(b, want[(i * BS) as usize..((i + 1) * BS) as usize], "block {i} intact");
    }
    for _ in 0..50 {
        assert_eq!(errno_of(f.read_exact_at(&mut b, 3 * BS)), Some(libc::EIO));
    }
    drop(f);
    v.umount();
    let log = v.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("block failed authentication"))
        .count();
    assert_eq!(
        lines, 1,
        "a damaged block is logged once, with its file and block:\n{log}"
    );
    let backing = v
        .c("d/e/ten-blocks")
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(log.contains(&backing) && log.contains("block=3"), "{log}");
}

#[test]
fn quarantine_moves_only_damaged_files_and_the_rest_stays_readable() {
    let mut v = populated();
    flip(&v.c("d/header"), 70, 0x40);
    let q = v.tmp.path().join("quarantine");
    let (code, j, _) = fsck(&v, &v.cipher, &["--quarantine", q.to_str().unwrap()]);
    assert_eq!(code, 1, "damage corrected by quarantine: {j}");
    assert!(q.join("d/header").exists(), "ciphertext kept in quarantine");
    assert!(!v.c("d/header").exists());
    let (code, _, _) = fsck(&v, &v.cipher, &[]);
    assert_eq!(code, 0, "clean after quarantine");
    v.mount(&[]);
    assert_eq!(
        std::fs::read(v.p("d/e/ten-blocks")).unwrap(),
        pattern(1, 10 * BS as usize)
    );
    assert!(!v.p("d/header").exists());
    v.umount();
}

#[test]
fn wrong_key_is_an_operational_error_naming_the_key() {
    let v = populated();
    let other = v.new_key("other");
    let (code, _, out) = fsck(&v, &v.cipher, &["--kek", &other]);
    assert_eq!(code, 8);
    let e = stderr(&out);
    assert!(e.contains("fsck needs the key") && e.contains("other"), "{e}");
}

#[test]
fn undecryptable_names_missing_directory_ivs_and_bad_symlink_targets_are_damage() {
    let v = populated();
    // A planted backing entry whose name is not an encrypted name of its directory, a
    // directory whose IV is gone, a symlink whose target was replaced.
    std::fs::write(v.c("d").join("cGxhbnRlZA"), b"planted").unwrap();
    std::fs::remove_file(v.c("d/e").join("cmkfs.diriv")).unwrap();
    let link = v.c("link");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let (code, j, _) = fsck(&v, &v.cipher, &[]);
    assert_eq!(code, 4, "{j}");
    let d = j["damaged"].as_array().unwrap();
    let has = |kind: &str, path: &str| d.iter().any(|x| x["kind"] == kind && x["path"] == path);
    assert!(has("name", "d/cGxhbnRlZA"), "{j}");
    assert!(has("dir_iv", "d/e"), "{j}");
    assert!(has("symlink", "link"), "{j}");
    assert_eq!(d.len(), 3, "{j}");
}
