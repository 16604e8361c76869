//! The `exec:` provider end to end with the shipped example program
//! (scripts/exec/openssl-kms, RSA-OAEP-SHA256 through `openssl pkeyutl`), plus the
//! protocol's failure modes: denied, unreachable, timeouts, bad output, unsafe programs.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

fn kms() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/exec/openssl-kms")
}

fn require_tools() {
    for t in ["openssl", "python3", "base64"] {
        assert!(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{t} is missing: scripts/test.sh installs it"
        );
    }
}

/// A key directory for openssl-kms, created in `parent`.
fn new_key(parent: &Path, name: &str) -> PathBuf {
    require_tools();
    let dir = parent.join(name);
    run_ok(
        std::process::Command::new(kms()).args([OsStr::new("create"), dir.as_os_str(), OsStr::new("2048")]),
        "openssl-kms create",
    );
    dir
}

fn uri(key: &Path, extra: &str) -> String {
    format!("exec:{}?key={}{extra}", kms().display(), key.display())
}

#[test]
fn exec_provider_lifecycle_with_example_program() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = new_key(keys.path(), "k1");
    let k2 = new_key(keys.path(), "k2");
    let mut v = Vol::with_kek(&uri(&k1, ""), &[]);
    let k2_uri = uri(&k2, "");
    let revoked = provider_lifecycle(
        &mut v,
        Some(&k2_uri),
        || std::fs::write(k2.join("disabled"), "").unwrap(),
        || std::fs::remove_file(k2.join("disabled")).unwrap(),
    );
    let reason = revoked["reason"].as_str().unwrap_or_default().to_string()
        + revoked["last_check_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exec") && reason.contains("denied") && reason.contains("disabled"),
        "{revoked}"
    );
}

#[test]
fn program_side_wrap_mounts_and_a_new_key_version_is_followed() {
    let keys = tempfile::tempdir().unwrap();
    let k = new_key(keys.path(), "k");
    let mut v = Vol::with_kek(&uri(&k, "&wrap=program"), &[]);
    v.mount(&["--check-interval", "300ms"]);
    std::fs::write(v.p("f"), b"hello").unwrap();
    assert_eq!(v.status()["key_version"], "1");
    // A new key version: a versionless URI is rewrapped to it by the daemon.
    let out = std::process::Command::new(kms())
        .arg("rotate")
        .arg(&k)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        wait_until(Duration::from_secs(15), || v.status()["key_version"] == "2"),
        "the daemon rewraps to version 2: {}",
        v.status()
    );
    // Version 1 can now be disabled without losing access.
    std::fs::write(k.join("v1.disabled"), "").unwrap();
    v.umount();
    v.mount(&[]);
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"hello");
    v.umount();
}

#[test]
fn unreachable_program_is_tolerated_for_the_grace_period_then_refused() {
    let keys = tempfile::tempdir().unwrap();
    let k = new_key(keys.path(), "k");
    let mut v = Vol::with_kek(&uri(&k, ""), &[]);
    v.mount(&["--check-interval", "300ms", "--unreachable-grace", "2s"]);
    std::fs::write(v.p("f"), b"data").unwrap();
    let t0 = Instant::now();
    std::fs::write(k.join("unreachable"), "").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || v.status()["grace_remaining_secs"].is_u64()),
        "status shows the grace period: {}",
        v.status()
    );
    assert_eq!(
        std::fs::read(v.p("f")).unwrap(),
        b"data",
        "still served during the grace period"
    );
    assert!(v.wait_state("Inaccessible", Duration::from_secs(10)).is_some());
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "not before the grace period ends"
    );
    assert_eq!(errno_of(std::fs::read(v.p("f"))), Some(libc::EACCES));
    std::fs::remove_file(k.join("unreachable")).unwrap();
    assert!(v.wait_state("Available", Duration::from_secs(10)).is_some());
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"data");
    v.umount();
}

/// A scratch directory for programs: the daemon only runs programs whose every directory
/// from `/` only root (or its own user) can write, which rules out /tmp.
fn program_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Writes a protocol program into `dir` that runs `body` for every operation.
fn program(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("prog");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn kek_test(uri: &str) -> (bool, String, Duration) {
    let t0 = Instant::now();
    let out = cmkfs(["kek", "test", "-n", "1", uri]);
    (out.status.success(), stderr(&out), t0.elapsed())
}

#[test]
fn hung_program_is_killed_at_the_timeout_and_counts_as_unreachable() {
    let d = program_dir();
    let marker = d.path().join("still-running");
    let p = program(d.path(), &format!("sleep 30; touch {}", marker.display()));
    let (ok, err, took) = kek_test(&format!("exec:{}?timeout=500ms", p.display()));
    assert!(!ok);
    assert!(
        err.contains("unreachable") && err.contains("did not finish within 500ms"),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "returned after {took:?}");
    // The whole process group was killed: the shell's `sleep` child does not live on.
    std::thread::sleep(Duration::from_millis(50));
    let ps = std::process::Command::new("pgrep")
        .args(["-f", "sleep 30; touch"])
        .output()
        .unwrap();
    assert!(ps.stdout.is_empty(), "the program's children were killed");
}

#[test]
fn exit_codes_and_bad_output_are_classified_and_named() {
    let d = program_dir();
    let p = program(d.path(), "echo 'no such key' >&2; exit 2");
    let (ok, err, _) = kek_test(&format!("exec:{}?key=k9", p.display()));
    assert!(!ok);
    assert!(
        err.contains("exec key k9") && err.contains("access denied") && err.contains("no such key"),
        "{err}"
    );

    let p = program(d.path(), "exit 3");
    let (_, err, _) = kek_test(&format!("exec:{}", p.display()));
    assert!(err.contains("unreachable"), "{err}");

    let p = program(d.path(), "echo not-json");
    let (_, err, _) = kek_test(&format!("exec:{}", p.display()));
    assert!(err.contains("misconfigured") && err.contains("no valid JSON"), "{err}");

    // A program others could replace is never run.
    let p = program(d.path(), "exit 0");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, err, _) = kek_test(&format!("exec:{}", p.display()));
    assert!(err.contains("writable by group or others"), "{err}");

    let (_, err, _) = kek_test("exec:relative/prog");
    assert!(err.contains("absolute path"), "{err}");
    let (_, err, _) = kek_test(&format!("exec:{}?pin=1234", p.display()));
    assert!(err.contains("unknown parameter 'pin'"), "{err}");
}

#[test]
fn unwrap_by_another_key_is_unwrap_failed_not_denied() {
    let keys = tempfile::tempdir().unwrap();
    let k1 = new_key(keys.path(), "k1");
    let k2 = new_key(keys.path(), "k2");
    let v = Vol::with_kek(&uri(&k1, ""), &[]);
    // Mount with the other key as an override: its unwrap answers 4, which cmkfs reports
    // as a keyslot this key cannot open.
    let out = v.mount_output(&["--kek", &uri(&k2, "")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unwrap failed") && err.contains("k2"), "{err}");
}

#[test]
fn mount_with_a_hung_provider_fails_at_the_unlock_timeout_instead_of_hanging() {
    let keys = tempfile::tempdir().unwrap();
    let k = new_key(keys.path(), "k");
    let marker = keys.path().join("hang");
    // The example program, except that unwrap hangs while the marker exists.
    let progs = program_dir();
    let prog = progs.path().join("hanging-kms");
    std::fs::write(
        &prog,
        format!(
            "#!/bin/sh\n[ \"$1\" = unwrap ] && [ -e {} ] && exec sleep 60\nexec {} \"$@\"\n",
            marker.display(),
            kms().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let uri = format!("exec:{}?key={}&timeout=1h", prog.display(), k.display());
    // The 1 s limit is for the mount's hung call only: init and the final mount make honest
    // calls, which on a loaded machine (every module of this binary runs at once) can take
    // longer than that.
    let mut v = Vol::with_kek(&uri, &[]);
    v.env.push(("CMKFS_UNLOCK_TIMEOUT".into(), "1s".into()));
    std::fs::write(&marker, "").unwrap();
    let t0 = Instant::now();
    let out = v.mount_output(&[]);
    assert!(!out.status.success(), "mount must fail");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "failed after {:?}",
        t0.elapsed()
    );
    let err = stderr(&out);
    assert!(
        err.contains("did not answer within 1s") && err.contains("unreachable"),
        "{err}"
    );
    std::fs::remove_file(&marker).unwrap();
    v.env.retain(|(k, _)| k != "CMKFS_UNLOCK_TIMEOUT");
    v.mount(&[]);
    v.umount();
}
