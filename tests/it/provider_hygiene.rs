//! The attacks a security review found against the providers that run or read something on
//! this host (`exec:`, `local:`, `pem:`), performed for real against the cmkfs binary: each
//! must be refused with an error naming the offending path. Plus the checks that the fixes
//! did not break existing keys (the golden volumes unlock through a key store holding their
//! key) and that nothing reintroduces the RustCrypto `rsa` crate or `==` on secrets.
//!
//! Runs as root (it chowns files to `nobody`), like the other integration tests.

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const NOBODY: u32 = 65534;

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn require_root() {
    assert_eq!(
        cmkfs::sys::process::euid(),
        0,
        "these tests chown files to nobody and must run as root (scripts/test.sh)"
    );
}

/// A scratch directory whose ancestors are the build tree's (root-owned, 0755), not /tmp's:
/// programs the daemon may run can only live in such places.
fn trusted_tmp() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    chmod(d.path(), 0o755);
    d
}

/// A protocol program that answers every operation with "unreachable" (exit 3): it can only
/// say so if cmkfs agreed to run it.
fn program(dir: &Path) -> PathBuf {
    let p = dir.join("prog");
    fs::write(&p, "#!/bin/sh\necho PROGRAM-RAN >&2\nexit 3\n").unwrap();
    chmod(&p, 0o755);
    p
}

fn kek_test(uri: &str) -> (bool, String) {
    let out = cmkfs(["kek", "test", "-n", "1", uri]);
    (out.status.success(), stderr(&out))
}

fn assert_ran(uri: &str) {
    let (ok, err) = kek_test(uri);
    assert!(
        !ok && err.contains("unreachable") && err.contains("PROGRAM-RAN"),
        "the program must run: {err}"
    );
}

fn assert_refused(uri: &str, needles: &[&str]) {
    let (ok, err) = kek_test(uri);
    assert!(!ok, "{uri} accepted");
    assert!(!err.contains("PROGRAM-RAN"), "the program was run: {err}");
    for n in needles {
        assert!(err.contains(n), "error lacks '{n}': {err}");
    }
}

#[test]
fn exec_program_owned_by_another_user_is_not_run() {
    require_root();
    let d = trusted_tmp();
    let p = program(d.path());
    let uri = format!("exec:{}", p.display());
    assert_ran(&uri);
    // Mode 0755, not writable by anyone but its owner: the old check let it through, and
    // nobody could have rewritten it to run anything as root.
    chown(&p, Some(NOBODY), None).unwrap();
    chmod(&p, 0o755);
    assert_refused(
        &uri,
        &["misconfigured", p.to_str().unwrap(), "owned by uid 65534", "chown root"],
    );
    // Through a symbolic link the file is still checked.
    let link = d.path().join("link");
    symlink(&p, &link).unwrap();
    assert_refused(&format!("exec:{}", link.display()), &["owned by uid 65534"]);
}

#[test]
fn exec_program_in_a_directory_others_can_write_is_not_run() {
    require_root();
    let d = trusted_tmp();
    let open = d.path().join("open");
    fs::create_dir(&open).unwrap();
    let p = program(&open);
    let uri = format!("exec:{}", p.display());
    chmod(&open, 0o755);
    assert_ran(&uri);
    for (m, extra) in [
        (0o777, "writable by group or others"),
        (0o775, "writable by group or others"),
        (0o1777, "sticky"),
    ] {
        chmod(&open, m);
        assert_refused(&uri, &[open.to_str().unwrap(), extra]);
    }
    chmod(&open, 0o755);
    // A parent directory owned by another user, however strict its mode.
    chown(&open, Some(NOBODY), None).unwrap();
    assert_refused(&uri, &[open.to_str().unwrap(), "owned by uid 65534"]);
    chown(&open, Some(0), None).unwrap();
    assert_ran(&uri);
    // A program in /tmp (sticky, world-writable), even when reached through a link from a
    // trusted directory: the directory the link points into counts.
    let t = tempfile::tempdir_in("/tmp").unwrap();
    let in_tmp = program(t.path());
    let link = d.path().join("to-tmp");
    symlink(&in_tmp, &link).unwrap();
    assert_refused(&format!("exec:{}", link.display()), &["directory /tmp ", "sticky"]);
    assert_refused(&format!("exec:{}", in_tmp.display()), &["directory /tmp "]);
    // A link that others could replace: it lives in a world-writable directory.
    let t2 = d.path().join("links");
    fs::create_dir(&t2).unwrap();
    chmod(&t2, 0o777);
    symlink(&p, t2.join("prog")).unwrap();
    assert_refused(&format!("exec:{}", t2.join("prog").display()), &[t2.to_str().unwrap()]);
}

#[test]
fn exec_output_over_the_protocol_limit_is_refused() {
    let d = trusted_tmp();
    let p = d.path().join("chatty");
    fs::write(&p, "#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' A\n").unwrap();
    chmod(&p, 0o755);
    let (ok, err) = kek_test(&format!("exec:{}", p.display()));
    assert!(!ok);
    assert!(err.contains("printed more than 16384 bytes"), "{err}");
}

#[test]
fn key_store_others_control_is_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("keys");
    let uri = create_key(&store, "k");
    let (ok, err) = kek_test(&uri);
    assert!(ok, "{err}");
    let key = store.join("k");
    let pem = key.join("v1.pem");
    // The store handed to another user, who could put a key of their own in it.
    for p in [&store, &key, &pem, &key.join("meta.json")] {
        chown(p, Some(NOBODY), None).unwrap();
        let (ok, err) = kek_test(&uri);
        assert!(!ok, "{} owned by nobody accepted", p.display());
        assert!(
            err.contains(p.to_str().unwrap()) && err.contains("owned by uid 65534") && err.contains("refusing"),
            "{err}"
        );
        chown(p, Some(0), None).unwrap();
    }
    // No new key is made in such a store either.
    chown(&store, Some(NOBODY), None).unwrap();
    let out = cmkfs([
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "--bits",
        "2048",
        "k2",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("owned by uid 65534"),
        "{}",
        stderr(&out)
    );
    chown(&store, Some(0), None).unwrap();
    // Writable by group or others.
    for (p, m) in [(&store, 0o770), (&key, 0o707), (&pem, 0o620)] {
        let before = mode(p);
        chmod(p, m);
        let (ok, err) = kek_test(&uri);
        assert!(!ok, "{} mode {m:o} accepted", p.display());
        assert!(
            err.contains(p.to_str().unwrap()) && err.contains("writable by group or others"),
            "{err}"
        );
        chmod(p, before);
    }
    let (ok, err) = kek_test(&uri);
    assert!(ok, "usable again once fixed: {err}");
}

#[test]
fn key_store_files_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("keys");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; {BIN} key create --store {} --bits 2048 k && {BIN} key rotate --store {} k",
            store.display(),
            store.display()
        ))
        .env_remove("CMKFS_KEYSTORE")
        .env("CMKFS_AUDIT_LOG", tmp.path().join("audit.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("k")), 0o700);
    for f in [".lock", "k/meta.json", "k/v1.pem", "k/v2.pem"] {
        assert_eq!(mode(&store.join(f)), 0o600, "{f}");
    }
}

#[test]
fn pem_file_others_control_is_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let pem = tmp.path().join("kek.pem");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1/kek.pem"),
        &pem,
    )
    .unwrap();
    let uri = format!("pem:{}", pem.display());
    chmod(&pem, 0o600);
    assert!(kek_test(&uri).0);
    // Readable by others (as git checks the golden key out): used, with a warning.
    chmod(&pem, 0o644);
    assert!(kek_test(&uri).0);
    for m in [0o666, 0o620] {
        chmod(&pem, m);
        let (ok, err) = kek_test(&uri);
        assert!(!ok, "mode {m:o} accepted");
        assert!(
            err.contains("writable by group or others") && err.contains(pem.to_str().unwrap()),
            "{err}"
        );
    }
    chmod(&pem, 0o600);
    chown(&pem, Some(NOBODY), None).unwrap();
    let (ok, err) = kek_test(&uri);
    assert!(!ok);
    assert!(
        err.contains("owned by uid 65534") && err.contains("misconfigured"),
        "{err}"
    );
}

/// Copies a golden volume's cipher directory and restores the backing xattrs git drops.
fn golden_copy(version: u32, dst: &Path) -> PathBuf {
    let g = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/v{version}"));
    assert!(Command::new("cp")
        .arg("-a")
        .arg(g.join("cipher"))
        .arg(dst)
        .status()
        .unwrap()
        .success());
    let mut file = None;
    for line in fs::read_to_string(g.join("xattrs.txt")).unwrap().lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            file = Some(dst.join(f));
        } else if let (Some((name, val)), Some(f)) = (line.split_once('='), &file) {
            assert!(Command::new("setfattr")
                .args(["-h", "-n", name, "-v", val])
                .arg(f)
                .status()
                .unwrap()
                .success());
        }
    }
    g.join("kek.pem")
}

/// The golden volumes' key, moved into a key store (as `cmkfs key create` lays it out),
/// unlocks them through `local:` and through `pem:` with the aws-lc-rs decryption: the
/// keyslots the RustCrypto `rsa` crate made, and the key file it wrote, still work.
#[test]
fn golden_volumes_unlock_through_local_and_pem() {
    let tmp = tempfile::tempdir().unwrap();
    for version in [1, 2] {
        let cipher = tmp.path().join(format!("cipher{version}"));
        let kek = golden_copy(version, &cipher);
        let text = fs::read_to_string(&kek).unwrap();
        let key = cmkfs::crypto::rsa::parse_private_pem(&text).unwrap();
        let public = key.to_public_key();
        let store = tmp.path().join(format!("keys{version}"));
        let dir = store.join("golden");
        fs::create_dir_all(&dir).unwrap();
        chmod(&store, 0o700);
        chmod(&dir, 0o700);
        fs::write(dir.join("v1.pem"), &text).unwrap();
        chmod(&dir.join("v1.pem"), 0o600);
        let meta = serde_json::json!({"schema": 1, "name": "golden", "created": "2025-01-01T00:00:00Z",
            "versions": [{"version": 1, "bits": public.bits(), "created": "2025-01-01T00:00:00Z", "enabled": true,
                "fingerprint": cmkfs::crypto::rsa::fingerprint(&public)}]});
        fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
        chmod(&dir.join("meta.json"), 0o600);
        for uri in [format!("local:{}", dir.display()), format!("pem:{}", kek.display())] {
            let out = cmkfs(["fsck", "--json", "--kek", &uri, cipher.to_str().unwrap()]);
            let j: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|_| panic!("fsck v{version} with {uri}: {}", stderr(&out)));
            assert_eq!(
                out.status.code(),
                Some(0),
                "fsck v{version} with {uri}: {j} {}",
                stderr(&out)
            );
        }
    }
}

/// The private-key paths no longer link the RustCrypto `rsa` crate (RUSTSEC-2023-0071): it
/// may only be a dev-dependency, which tests use as an independent implementation.
#[test]
fn rsa_crate_is_only_a_dev_dependency() {
    let toml = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let mut section = "";
    for line in toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l;
        } else if l.starts_with("rsa ") || l.starts_with("rsa=") {
            assert_eq!(section, "[dev-dependencies]", "the rsa crate is back in {section}");
        }
    }
    for dir in ["src/kms", "src/crypto"] {
        for f in rust_files(dir) {
            let text = fs::read_to_string(&f).unwrap();
            // `crypto::rsa` is our own aws-lc-rs module; the crate would be `use rsa::` or `::rsa::Rsa...`.
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap()
                .replace("crypto::rsa::", "crypto::");
            assert!(
                !code.contains("use rsa::") && !code.contains("::rsa::Rsa"),
                "{} uses the rsa crate outside its tests",
                f.display()
            );
        }
    }
}

/// Secrets are compared in constant time (`SecretKey::ct_eq`, `crypto::ct_eq`), never with
/// `==` or `!=`.
#[test]
fn secrets_are_never_compared_with_eq() {
    let mut files = rust_files("src/kms");
    files.extend(rust_files("src/crypto"));
    for f in files {
        for (i, line) in fs::read_to_string(&f).unwrap().lines().enumerate() {
            let l = line.trim();
            if l.starts_with("//") || !l.contains("expose()") {
                continue;
            }
            assert!(
                !l.contains("==") && !l.contains("!="),
                "{}:{}: a secret compared with ==/!=: use ct_eq\n{l}",
                f.display(),
                i + 1
            );
        }
    }
}

/// Every `.rs` file under `dir`, subfolders included, sorted.
fn rust_files(dir: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}
