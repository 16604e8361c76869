//! `cmkfs rekey`: replacing a file's DEK on a live mount, crash-safely.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

use crate::common::*;

fn file_id(v: &Vol, name: &str) -> Vec<u8> {
    fs::read(v.c(name)).unwrap()[8..24].to_vec()
}

/// A file with data, a hole and a partial last block.
fn make(v: &Vol, name: &str) -> Vec<u8> {
    let f = fs::File::create(v.p(name)).unwrap();
    let mut model = vec![0u8; (1 << 20) + 5000];
    let a = pattern(1, 8192);
    let b = pattern(2, 5000);
    f.write_all_at(&a, 0).unwrap();
    f.write_all_at(&b, 1 << 20).unwrap();
    model[..8192].copy_from_slice(&a);
    model[1 << 20..].copy_from_slice(&b);
    model
}

fn journals(v: &Vol) -> Vec<String> {
    fs::read_dir(&v.cipher)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("rekey"))
        .collect()
}

#[test]
fn rekey_on_a_live_mount_keeps_content_holes_and_open_handles() {
    let v = Vol::new();
    let model = make(&v, "f");
    fs::write(v.p("other"), b"untouched").unwrap();
    fs::hard_link(v.p("f"), v.p("f-link")).unwrap();
    let other_before = fs::read(v.c("other")).unwrap();
    let handle = fs::File::open(v.p("f")).unwrap();
    let id_before = file_id(&v, "f");
    let ino_before = fs::metadata(v.c("f")).unwrap().ino();
    let out = ok(&v.run([OsStr::new("rekey"), v.p("f").as_os_str()]));
    assert!(out.contains("rekeyed 1 of 1"), "{out}");
    assert_ne!(file_id(&v, "f"), id_before, "new file id and DEK");
    assert_eq!(
        fs::metadata(v.c("f")).unwrap().ino(),
        ino_before,
        "same inode: hard links and handles stay valid"
    );
    let mut b = vec![0u8; 8192];
    handle.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, model[..8192], "a handle opened before reads the same plaintext");
    assert_eq!(fs::read(v.p("f")).unwrap(), model);
    assert_eq!(fs::read(v.p("f-link")).unwrap(), model);
    assert!(
        fs::metadata(v.c("f")).unwrap().blocks() * 512 < 200_000,
        "the hole stayed a hole"
    );
    assert_eq!(
        fs::read(v.c("other")).unwrap(),
        other_before,
        "only the named file is re-encrypted"
    );
    assert!(journals(&v).is_empty(), "{:?}", journals(&v));
    // Writing after the rekey uses the new DEK.
    fs::OpenOptions::new()
        .write(true)
        .open(v.p("f"))
        .unwrap()
        .write_all_at(b"after", 3)
        .unwrap();
    assert_eq!(
        &fs::read(v.p("f")).unwrap()[..8],
        &[model[0], model[1], model[2], b'a', b'f', b't', b'e', b'r']
    );
    let ev = v.audit_events();
    assert!(ev
        .iter()
        .any(|e| e["event"] == "rekey" && e["outcome"] == "ok" && e["path"] == "f"));
    // Refusals with reasons.
    let e = stderr(&v.run([OsStr::new("rekey"), v.tmp.path().as_os_str()]));
    assert!(e.contains("not on a mounted cmkfs volume"), "{e}");
    fs::create_dir(v.p("d")).unwrap();
    let e = stderr(&v.run([OsStr::new("rekey"), v.p("d").as_os_str()]));
    assert!(e.contains("not a regular file"), "{e}");
    ok(&v.run(["lock", v.mnt.to_str().unwrap()]));
    let e = stderr(&v.run([OsStr::new("rekey"), v.p("f").as_os_str()]));
    assert!(e.contains("Inaccessible"), "{e}");
}

#[test]
fn rekey_interrupted_by_a_crash_is_completed_at_the_next_mount() {
    for point in ["rekey:journal-committed", "rekey:copying"] {
        let mut v = Vol::unmounted();
        // The crash point must reach the daemon, so mount with it in the environment.
        let out = cmkfs_env(
            [
                OsStr::new("mount"),
                OsStr::new("--log-file"),
                v.log.as_os_str(),
                v.cipher.as_os_str(),
                v.mnt.as_os_str(),
            ],
            &[
                ("CMKFS_TEST_CRASH_AT", OsStr::new(point)),
                ("CMKFS_AUDIT_LOG", v.audit.as_os_str()),
                ("CMKFS_CONFIG_DIR", config_dir_of(&v).as_os_str()),
            ],
        );
        ok(&out);
        v.mounted = true;
        let model = make(&v, "f");
        let id_before = file_id(&v, "f");
        let out = v.run([OsStr::new("rekey"), v.p("f").as_os_str()]);
        assert!(!out.status.success(), "the daemon died at {point}");
        assert!(!journals(&v).is_empty(), "a committed journal is left at {point}");
        ok(&v.run([OsStr::new("umount"), v.mnt.as_os_str()]));
        v.mounted = false;
        v.mount(&[]);
        assert_eq!(
            fs::read(v.p("f")).unwrap(),
            model,
            "content after recovery from a crash at {point}"
        );
        assert_ne!(file_id(&v, "f"), id_before, "the rekey was completed at {point}");
        assert!(journals(&v).is_empty(), "journal removed after recovery at {point}");
        assert!(v.audit_events().iter().any(|e| e["event"] == "rekey_recovered"));
    }
}
