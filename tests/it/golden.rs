//! Every build must mount and read the golden volumes made by each earlier format version
//! (scripts/make-golden.sh). A failure here means the on-disk format promise was broken.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

fn golden_dir(v: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{v}"))
}

/// Copies a golden volume to a scratch directory (mounting must not touch the originals)
/// and restores the backing xattrs that git does not keep.
fn scratch_copy(src: &Path, dst: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src.join("cipher"))
        .arg(dst)
        .status()
        .unwrap();
    assert!(st.success());
    let x = fs::read_to_string(src.join("xattrs.txt")).unwrap();
    let mut file = None;
    for line in x.lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            file = Some(dst.join(f));
        } else if let (Some((name, val)), Some(f)) = (line.split_once('='), &file) {
            let st = Command::new("setfattr")
                .args(["-h", "-n", name, "-v", val])
                .arg(f)
                .status()
                .unwrap();
            assert!(st.success(), "restore xattr {name} on {}", f.display());
        }
    }
}

#[test]
fn golden_v1_mounts_and_reads() {
    golden_mounts_and_reads(1, 5);
}

/// Format 2's volume also holds a block whose last write was interrupted (torn.bin block 1):
/// it must read as its old content, and fsck must count it as an interrupted write, not damage.
#[test]
fn golden_v2_mounts_and_reads() {
    golden_mounts_and_reads(2, 6);
}

/// Format 3 (encrypted names, XAES-256-GCM content) adds a 200-byte name (a long-name side
/// file), a non-ASCII name and an xattr on a directory.
#[test]
fn golden_v3_mounts_and_reads() {
    golden_mounts_and_reads(3, 8);
}

fn golden_mounts_and_reads(version: u32, files: usize) {
    require_fuse();
    let g = golden_dir(version);
    let tmp = tempfile::tempdir().unwrap();
    let cipher = tmp.path().join("cipher");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    scratch_copy(&g, &cipher);
    // The keyslot records the key's path at creation time; --kek finds the slot by the
    // key's fingerprint wherever the key now lives.
    let kek = format!("pem:{}", g.join("kek.pem").display());
    ok(&cmkfs([
        "mount",
        "--log-file",
        tmp.path().join("log").to_str().unwrap(),
        "--kek",
        &kek,
        cipher.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = cmkfs(["umount", "--lazy", self.0.to_str().unwrap()]);
        }
    }
    let _u = Unmount(mnt.clone());
    let manifest = fs::read_to_string(g.join("manifest.txt")).unwrap();
    let mut n = 0;
    for line in manifest.lines() {
        let mut it = line.splitn(3, ' ');
        let (sum, size, name) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let data = fs::read(mnt.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert_eq!(data.len().to_string(), size, "{name} size");
        let got = Command::new("sha256sum").arg(mnt.join(name)).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got.stdout).split(' ').next().unwrap(),
            sum,
            "{name} content"
        );
        n += 1;
    }
    assert_eq!(n, files, "manifest lists every golden file");
    assert_eq!(fs::read_link(mnt.join("link")).unwrap().to_str().unwrap(), "hello.txt");
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.note"])
        .arg(mnt.join("hello.txt"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "golden");
    if version >= 3 {
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.dirnote"])
            .arg(mnt.join("dir"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "golden-dir");
        let names: Vec<_> = fs::read_dir(mnt.join("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.contains(&"l".repeat(200)), "{names:?}");
        assert!(names.contains(&"Gehaltsübersicht-日本語.txt".to_string()), "{names:?}");
        for e in fs::read_dir(&cipher).unwrap() {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(
                n.starts_with("cmkfs.") || !["hello", "dir", "link", "blocks"].iter().any(|p| n.starts_with(p)),
                "{n} in clear"
            );
        }
    }
    let st = cmkfs(["status", "--json", mnt.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["format_version"], version);
    if version >= 2 {
        let out = cmkfs(["fsck", "--json", "--kek", &kek, mnt.to_str().unwrap()]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "fsck of the golden volume: {j}");
        assert_eq!(j["interrupted_writes"], 1, "{j}");
    }
}
