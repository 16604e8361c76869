//! Attacks on cmkfs: real attacks against the `cmkfs` binary and real FUSE mounts, by someone
//! who can write the cipher directory (the "untrusted storage" attacker), by an unprivileged
//! local user (`nobody`), and by a key provider that misbehaves. Each test performs the attack
//! and asserts what the hardened build promises; it also checks that nothing outside the
//! volume changed (bait files in a separate "outside" directory).
//!
//! Attack classes and tests:
//!
//! 1. Trust anchors (local configuration, `CMKFS_CONFIG_DIR`)
//!    - `init_writes_a_local_record_that_pins_the_volume`
//!    - `mount_without_local_record_or_kek_is_refused`
//!    - `first_use_pin_from_mount_kek_refuses_a_later_substitution`
//! 2. Untrusted headers naming providers (a keyslot planted first in `cmkfs.volume`; the
//!    provider must not be touched before the header is authenticated)
//!    - `planted_exec_keyslot_program_is_never_run`
//!    - `planted_vault_keyslot_is_never_contacted`
//!    - `planted_awskms_keyslot_is_never_contacted`
//!    - `planted_pkcs11_keyslot_module_is_never_loaded`
//! 3. Key substitution and rollback of the header
//!    - `header_from_an_attacker_volume_wrapped_to_the_same_kek_is_refused`
//!    - `substituted_volume_key_keeping_the_volume_id_is_refused`
//!    - `rolled_back_header_is_refused`
//!    - `rolled_back_header_is_ignored_by_a_mounted_daemon`
//! 4. Reserved names in the cipher root planted as FIFOs, symlinks, directories, huge files
//!    - `header_fifo_is_refused_promptly`
//!    - `header_symlink_is_refused`
//!    - `header_directory_is_refused_promptly`
//!    - `huge_sparse_header_is_refused_without_reading_it`
//!    - `valid_header_padded_past_1mib_is_refused`
//!    - `planted_session_markers_are_not_followed_or_blocked_on`
//!    - `planted_rekey_path_fifo_does_not_block_mount`
//!    - `planted_huge_rekey_path_file_is_not_read_into_memory`
//!    - `planted_lock_symlink_is_not_followed_by_rotate`
//!    - `planted_lock_symlink_is_not_followed_by_keyslot_add`
//!    - `planted_lock_symlink_is_not_followed_by_daemon_rewrap`
//! 5. Rekey journals (authenticated, bound to their file)
//!    - `planted_rekey_journal_cannot_overwrite_files_outside_the_volume`
//!    - `planted_rekey_tmp_symlink_does_not_redirect_rekey`
//!    - `planted_authenticated_style_rekey_journal_is_not_applied`
//! 6. One mount per volume per host, and locks others cannot take
//!    - `second_mount_of_the_same_volume_is_refused`
//!    - `killed_daemon_leaves_no_stale_mount_lock`
//!    - `unprivileged_user_cannot_take_locks_that_block_mount_or_rotation`
//! 7. Fail closed: revocation is seen within interval + timeout + 1 s whatever the attacker does
//!    - `fail_closed_when_header_is_replaced_by_a_fifo`
//!    - `fail_closed_when_lock_and_header_are_flocked`
//!    - `fail_closed_when_exec_check_hangs`
//!    - `watchdog_fails_closed_when_a_check_stalls_and_recovers`
//! 8. Private by default
//!    - `files_are_private_by_default`
//!    - `unprivileged_user_cannot_use_the_control_socket`
//!    - `mount_root_is_shown_apart_from_the_private_cipher_root`

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use rustix::process::Signal;
use serde_json::Value;

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// How long a mount (or CLI command) may take before the test calls it blocked.
const PROMPT: Duration = Duration::from_secs(5);
/// Hard stop for spawned commands, so a blocked command never hangs the suite.
const HARD_STOP: Duration = Duration::from_secs(8);
/// Fail-closed bound: interval (1 s) + provider timeout (2 s) + 1 s, with slack.
const FAIL_CLOSED: Duration = Duration::from_secs(6);

// ----------------------------------------------------------------------------------------
// Helpers
// ----------------------------------------------------------------------------------------

/// A volume (key in its own store, `cmkfs init`), not mounted, with its own configuration dir.
fn vol() -> Vol {
    let mut v = Vol::unmounted();
    ensure_config_env(&mut v);
    v
}

/// A directory outside every volume where baits and symlink targets live.
fn outside() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("cmkfs-outside-").tempdir().unwrap()
}

fn lc_has_any(s: &str, words: &[&str]) -> bool {
    let s = s.to_lowercase();
    words.iter().any(|w| s.contains(&w.to_lowercase()))
}

fn is_mounted(mp: &Path) -> bool {
    let want = mp.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Lazily unmounts `mp` when dropped, if something is mounted there.
struct MountGuard(PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = cmkfs([OsStr::new("umount"), OsStr::new("--lazy"), self.0.as_os_str()]);
            if is_mounted(&self.0) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).output();
            }
        }
    }
}

/// `cmkfs mount` of `v` at `mp`, spawned with a hard stop.
fn spawn_mount(v: &Vol, mp: &Path, log: &Path, extra: &[&str], env: &[(&str, &OsStr)]) -> Timed {
    let mut args: Vec<&OsStr> = vec![OsStr::new("mount"), OsStr::new("--log-file"), log.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    args.push(v.cipher.as_os_str());
    args.push(mp.as_os_str());
    run_with_deadline(vol_command(v, args, env), HARD_STOP)
}

/// Mounts `v` at its mountpoint through [`spawn_mount`]; marks it mounted when it is.
fn try_mount(v: &mut Vol, extra: &[&str]) -> Timed {
    let mp = v.mnt.clone();
    let log = v.log.clone();
    let t = spawn_mount(v, &mp, &log, extra, &[]);
    v.mounted = is_mounted(&v.mnt);
    t
}

fn header_value(v: &Vol) -> Value {
    serde_json::from_slice(&fs::read(v.c("cmkfs.volume")).unwrap()).unwrap()
}

/// Names in the cipher root.
fn root_names(v: &Vol) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(&v.cipher)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// Asserts that a [`tree_snapshot`] is unchanged, naming only the paths that differ.
fn assert_tree_unchanged(
    before: &std::collections::BTreeMap<PathBuf, (String, u32, Vec<u8>)>,
    root: &Path,
    what: &str,
) {
    let after = tree_snapshot(root);
    let mut changed: Vec<String> = vec![];
    for (k, v) in before {
        match after.get(k) {
            None => changed.push(format!("{} removed", k.display())),
            Some(a) if a != v => changed.push(format!(
                "{} changed ({} {:o} {} bytes -> {} {:o} {} bytes)",
                k.display(),
                v.0,
                v.1,
                v.2.len(),
                a.0,
                a.1,
                a.2.len()
            )),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        changed.push(format!("{} created", k.display()));
    }
    assert!(changed.is_empty(), "{what}: {changed:#?}");
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn pid_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Polls fresh reads of `v/file` until one fails with EACCES; the time it took.
fn time_to_eacces(v: &Vol, file: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if errno_of(fs::read(v.p(file))) == Some(libc::EACCES) {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A world-traversable scratch directory (for programs run as `nobody`).
fn public_tmp() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("cmkfs-pub-").tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn gcc(src: &str, out: &Path, extra: &[&str]) {
    let c = out.with_extension("c");
    fs::write(&c, src).unwrap();
    let o = Command::new("gcc")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(&c)
        .output()
        .expect("gcc (build-essential) is needed by the attack suite");
    assert!(o.status.success(), "gcc: {}", String::from_utf8_lossy(&o.stderr));
}

const LOCKER_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>
/* Takes every lock it can on every path: flock (exclusive, else shared), a POSIX record
   lock (write, else read) and an OFD read lock. Prints "locked N", then waits to be killed. */
int main(int argc, char **argv) {
  int n = 0;
  for (int i = 1; i < argc; i++) {
    int fd = open(argv[i], O_RDWR | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) fd = open(argv[i], O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
    if (fd < 0) continue;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 || flock(fd, LOCK_SH | LOCK_NB) == 0) n++;
    struct flock fl; memset(&fl, 0, sizeof fl); fl.l_whence = SEEK_SET;
    fl.l_type = F_WRLCK;
    if (fcntl(fd, F_SETLK, &fl) == 0) n++;
    else { fl.l_type = F_RDLCK; if (fcntl(fd, F_SETLK, &fl) == 0) n++; }
    int fd2 = open(argv[i], O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
    if (fd2 >= 0) { struct flock o; memset(&o, 0, sizeof o); o.l_whence = SEEK_SET; o.l_type = F_RDLCK;
      if (fcntl(fd2, F_OFD_SETLK, &o) == 0) n++; }
  }
  printf("locked %d\n", n); fflush(stdout);
  for (;;) pause();
}
"#;

/// A process running as `nobody` that holds every lock it can take on `paths`.
struct NobodyLocker {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub locks: u32,
}

impl NobodyLocker {
    fn start(paths: &[PathBuf]) -> NobodyLocker {
        let dir = public_tmp();
        let bin = dir.path().join("locker");
        gcc(LOCKER_C, &bin, &[]);
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = Command::new(&bin)
            .args(paths)
            .uid(NOBODY)
            .gid(NOGROUP)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let locks = line
            .trim()
            .strip_prefix("locked ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        NobodyLocker {
            child,
            _dir: dir,
            locks,
        }
    }
}

impl Drop for NobodyLocker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every path under `root` (itself included), not following symlinks.
fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.to_path_buf()];
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => v.extend(all_paths(&p)),
                Ok(_) => v.push(p),
                Err(_) => {}
            }
        }
    }
    v
}

/// A TCP listener on 127.0.0.1 that records every connection (and what was sent), answers
/// 403 and closes.
struct Listener {
    port: u16,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start() -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(vec![]));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || loop {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
                    let mut buf = vec![0u8; 16384];
                    let n = c.read(&mut buf).unwrap_or(0);
                    buf.truncate(n);
                    let _ = c.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    s2.lock().unwrap().push(buf);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if st2.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        });
        Listener {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting (after draining the backlog) and returns what was received.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen.lock().unwrap().clone()
    }
}

/// Rewrites `cmkfs.volume` with a keyslot naming `kek_uri` inserted first (primary, id 0;
/// the real slots are renumbered after it). The MAC is left as it was: it no longer verifies.
fn plant_keyslot_first(v: &Vol, kek_uri: &str) {
    let mut env = header_value(v);
    let body = env["body"].as_object_mut().unwrap();
    let slots = body.get_mut("keyslots").unwrap().as_array_mut().unwrap();
    let mut planted = slots[0].clone();
    for s in slots.iter_mut() {
        let id = s["id"].as_u64().unwrap();
        s["id"] = (id + 1).into();
    }
    planted["id"] = 0.into();
    planted["role"] = "primary".into();
    planted["kek_uri"] = kek_uri.into();
    planted["provider"] = kek_uri.split(':').next().unwrap().into();
    planted["key_id"] = "attacker".into();
    slots.insert(0, planted);
    let body_s = serde_json::to_string_pretty(&env["body"]).unwrap();
    let text = format!("{{\"body\":{body_s},\"mac\":{}}}\n", env["mac"]);
    fs::write(v.c("cmkfs.volume"), text).unwrap();
}

/// The common end of the planted-provider attacks: mount with only the real KEK allowed,
/// which must fail (the header no longer authenticates).
fn mount_tampered(v: &mut Vol) -> Timed {
    let t = try_mount(v, &[]);
    assert!(
        !t.success(),
        "a header whose MAC does not verify must not mount: {}",
        t.stderr
    );
    assert!(!t.timed_out(), "mount did not return within {HARD_STOP:?}");
    t
}

// ----------------------------------------------------------------------------------------
// 1. Trust anchors
// ----------------------------------------------------------------------------------------

#[test]
fn init_writes_a_local_record_that_pins_the_volume() {
    let v = vol();
    let cfg = config_dir_of(&v);
    let hdr = header_value(&v);
    let body: Value = serde_json::from_str(&hdr["body"].to_string()).unwrap();
    let records: Vec<PathBuf> = fs::read_dir(cfg.join("volumes"))
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        records.len(),
        1,
        "cmkfs init writes one record in {}/volumes: {records:?}",
        cfg.display()
    );
    assert_eq!(records[0].extension().and_then(|e| e.to_str()), Some("toml"));
    let text = fs::read_to_string(&records[0]).unwrap();
    for needed in [
        "cipher_dir",
        v.cipher.to_str().unwrap(),
        "allowed_keks",
        v.uri.as_str(),
        "[pin]",
        "volume_id",
        body["volume_id"].as_str().unwrap(),
        "key_commitment",
        "generation",
    ] {
        assert!(text.contains(needed), "record lacks {needed:?}:\n{text}");
    }
}

#[test]
fn mount_without_local_record_or_kek_is_refused() {
    let mut v = vol();
    let empty = v.tmp.path().join("empty-config");
    fs::create_dir(&empty).unwrap();
    let before = root_names(&v);
    let mp = v.mnt.clone();
    let _g = MountGuard(mp.clone());
    let t = spawn_mount(&v, &mp, &v.log, &[], &[("CMKFS_CONFIG_DIR", empty.as_os_str())]);
    v.mounted = is_mounted(&mp);
    assert!(
        !t.success() && !v.mounted,
        "a volume with no local record and no --kek must not mount (the header's URIs are untrusted)"
    );
    assert!(
        lc_has_any(&t.stderr, &["no local configuration"]),
        "the refusal says why: {}",
        t.stderr
    );
    assert_eq!(root_names(&v), before, "nothing was created in the cipher root");
    // With --kek the command line is the trust anchor: it mounts (and pins on first use).
    let t = spawn_mount(
        &v,
        &mp,
        &v.log,
        &["--kek", &v.uri],
        &[("CMKFS_CONFIG_DIR", empty.as_os_str())],
    );
    v.mounted = is_mounted(&mp);
    assert!(
        t.success() && v.mounted,
        "mount --kek URI works without a record: {}",
        t.stderr
    );
    v.umount();
}

#[test]
fn first_use_pin_from_mount_kek_refuses_a_later_substitution() {
    let mut v = vol();
    // No record: the first `mount --kek` trusts the command line and pins the volume.
    let cfg = v.tmp.path().join("first-use-config");
    fs::create_dir(&cfg).unwrap();
    let env = [("CMKFS_CONFIG_DIR", cfg.as_os_str())];
    let mp = v.mnt.clone();
    let t = spawn_mount(&v, &mp, &v.log, &["--kek", &v.uri], &env);
    v.mounted = is_mounted(&mp);
    assert!(t.success() && v.mounted, "first mount --kek: {}", t.stderr);
    fs::write(v.p("secret"), b"victim data").unwrap();
    v.umount();
    // The attacker swaps in a header of his own volume, wrapped to the same KEK.
    let att = tempfile::Builder::new().prefix("cmkfs-attacker-").tempdir().unwrap();
    let other = att.path().join("cipher");
    let att_cfg = att.path().join("config");
    ok(&cmkfs_env(
        [
            OsStr::new("init"),
            OsStr::new("--kek"),
            OsStr::new(&v.uri),
            other.as_os_str(),
        ],
        &[("CMKFS_CONFIG_DIR", att_cfg.as_os_str())],
    ));
    fs::copy(other.join("cmkfs.volume"), v.c("cmkfs.volume")).unwrap();
    let before = tree_snapshot(&v.cipher);
    let t = spawn_mount(&v, &mp, &v.log, &["--kek", &v.uri], &env);
    v.mounted = is_mounted(&mp);
    assert!(
        !t.success() && !v.mounted,
        "the pin taken at first use must refuse a substituted header, even with --kek"
    );
    assert!(
        lc_has_any(&t.stderr, &["volume key", "volume id"]),
        "the refusal names the volume key (or id): {}",
        t.stderr
    );
    assert_tree_unchanged(&before, &v.cipher, "no file was written in the cipher directory");
}

// ----------------------------------------------------------------------------------------
// 2. Untrusted headers naming providers
// ----------------------------------------------------------------------------------------

#[test]
fn planted_exec_keyslot_program_is_never_run() {
    let mut v = vol();
    let out = outside();
    let marker = out.path().join("exec-was-run");
    let prog = out.path().join("evil-kms");
    fs::write(
        &prog,
        format!(
            "#!/bin/sh\necho \"ran as $(id -u) op $1\" >> {}\nexit 4\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&prog, Some(NOBODY), Some(NOGROUP)).unwrap();
    plant_keyslot_first(&v, &format!("exec:{}?key=attacker", prog.display()));
    mount_tampered(&mut v);
    assert!(
        !marker.exists(),
        "the daemon ran a program named by an unauthenticated header: {}",
        fs::read_to_string(&marker).unwrap_or_default()
    );
}

#[test]
fn planted_vault_keyslot_is_never_contacted() {
    let mut v = vol();
    let out = outside();
    let token = out.path().join("root-only-token");
    fs::write(&token, "hvs.ROOT-ONLY-SECRET-TOKEN").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let l = Listener::start();
    plant_keyslot_first(
        &v,
        &format!(
            "vault:http://127.0.0.1:{}/transit/attacker?token=file:{}&timeout=2s",
            l.port,
            token.display()
        ),
    );
    mount_tampered(&mut v);
    let seen = l.finish();
    let leaked = seen
        .iter()
        .any(|r| String::from_utf8_lossy(r).contains("ROOT-ONLY-SECRET-TOKEN"));
    assert!(
        seen.is_empty(),
        "the daemon connected {} time(s) to an endpoint named by an unauthenticated header (token leaked: {leaked}): {:?}",
        seen.len(),
        seen.iter().map(|r| String::from_utf8_lossy(r).into_owned()).collect::<Vec<_>>()
    );
}

#[test]
fn planted_awskms_keyslot_is_never_contacted() {
    let mut v = vol();
    // Credentials in the daemon's environment, which a planted keyslot would sign with.
    v.env.push(("AWS_ACCESS_KEY_ID".into(), "AKIAVICTIMKEY0000000".into()));
    v.env
        .push(("AWS_SECRET_ACCESS_KEY".into(), "victim-secret-access-key".into()));
    let l = Listener::start();
    plant_keyslot_first(
        &v,
        &format!(
            "awskms:arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000?endpoint=http://127.0.0.1:{}&timeout=2s",
            l.port
        ),
    );
    mount_tampered(&mut v);
    let seen = l.finish();
    assert!(
        seen.is_empty(),
        "the daemon sent {} signed request(s) to an endpoint named by an unauthenticated header: {:?}",
        seen.len(),
        seen.iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn planted_pkcs11_keyslot_module_is_never_loaded() {
    let mut v = vol();
    let out = outside();
    let marker = out.path().join("module-was-loaded");
    let so = out.path().join("evil-pkcs11.so");
    gcc(
        &format!(
            "#include <stdio.h>\n#include <unistd.h>\n__attribute__((constructor)) static void pwn(void) {{\n  FILE *f = fopen(\"{}\", \"a\");\n  if (f) {{ fprintf(f, \"loaded in pid %d uid %d\\n\", getpid(), getuid()); fclose(f); }}\n}}\n",
            marker.display()
        ),
        &so,
        &["-shared", "-fPIC"],
    );
    let pin = out.path().join("pin");
    fs::write(&pin, "1234").unwrap();
    plant_keyslot_first(
        &v,
        &format!(
            "pkcs11:token=attacker;object=kek?module-path={}&pin-source=file:{}",
            so.display(),
            pin.display()
        ),
    );
    mount_tampered(&mut v);
    assert!(
        !marker.exists(),
        "the daemon loaded a shared object named by an unauthenticated header: {}",
        fs::read_to_string(&marker).unwrap_or_default()
    );
}

// ----------------------------------------------------------------------------------------
// 3. Key substitution and rollback
// ----------------------------------------------------------------------------------------

#[test]
fn header_from_an_attacker_volume_wrapped_to_the_same_kek_is_refused() {
    let mut v = vol();
    v.mount(&[]);
    fs::write(v.p("secret"), b"victim data").unwrap();
    v.umount();
    // The attacker makes a volume of his own, wrapped to the victim's (public) KEK.
    let att = tempfile::Builder::new().prefix("cmkfs-attacker-").tempdir().unwrap();
    let other = att.path().join("cipher");
    let att_cfg = att.path().join("config");
    ok(&cmkfs_env(
        [
            OsStr::new("init"),
            OsStr::new("--kek"),
            OsStr::new(&v.uri),
            other.as_os_str(),
        ],
        &[("CMKFS_CONFIG_DIR", att_cfg.as_os_str())],
    ));
    fs::copy(other.join("cmkfs.volume"), v.c("cmkfs.volume")).unwrap();
    let before = tree_snapshot(&v.cipher);
    let t = try_mount(&mut v, &[]);
    assert!(
        !t.success() && !v.mounted,
        "a header carrying another volume key (same KEK) must not mount"
    );
    // The copied header also has the attacker's volume id; either pin refuses it.
    assert!(
        lc_has_any(&t.stderr, &["volume key", "volume id"]),
        "the refusal names the volume key (or id): {}",
        t.stderr
    );
    assert_tree_unchanged(&before, &v.cipher, "no file was written in the cipher directory");
}

/// The sharper substitution: the attacker keeps the victim's volume id and a higher
/// generation, wraps a volume key of his choice to the victim's public KEK and MACs the header
/// with it (everything FORMAT.md describes). Only the pinned key commitment can tell.
#[test]
fn substituted_volume_key_keeping_the_volume_id_is_refused() {
    use base64::Engine;
    use cmkfs::crypto::{hmac_sha256, SecretKey};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut v = vol();
    v.mount(&[]);
    fs::write(v.p("secret"), b"victim data").unwrap();
    v.umount();
    let env = header_value(&v);
    let mut body: Value = serde_json::from_str(&env["body"].to_string()).unwrap();
    let vid_hex = body["volume_id"].as_str().unwrap().to_string();
    let vid: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&vid_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let attacker_key = SecretKey::random();
    // Wrapping needs only the public key; the local provider gives it to us.
    let p = cmkfs::kms::open(&v.uri).unwrap();
    let w = p.wrap(&attacker_key).unwrap();
    body["keyslots"][0]["wrapped_key"] = b64.encode(&w.ciphertext).into();
    let g = body["generation"].as_u64().unwrap();
    body["generation"] = (g + 5).into();
    let body_s = serde_json::to_string_pretty(&body).unwrap();
    let mac = hmac_sha256(&attacker_key.derive(&vid, b"cmkfs v1 header-mac"), body_s.as_bytes());
    fs::write(
        v.c("cmkfs.volume"),
        format!("{{\"body\":{body_s},\"mac\":\"{}\"}}\n", b64.encode(mac)),
    )
    .unwrap();
    let before = tree_snapshot(&v.cipher);
    let t = try_mount(&mut v, &[]);
    assert!(
        !t.success() && !v.mounted,
        "a well-formed header with a substituted volume key must not mount"
    );
    assert!(
        lc_has_any(&t.stderr, &["volume key"]),
        "the refusal names the volume key: {}",
        t.stderr
    );
    assert_tree_unchanged(&before, &v.cipher, "no file was written in the cipher directory");
}

#[test]
fn rolled_back_header_is_refused() {
    let mut v = vol();
    let rec = v.new_key("recovery");
    let dir = v.cipher.to_str().unwrap().to_string();
    ok(&v.run(["keyslot", "add", "--kek", &rec, "--role", "recovery", &dir]));
    let slot = header_value(&v)["body"]["keyslots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "recovery")
        .map(|s| s["id"].as_u64().unwrap())
        .expect("recovery slot");
    let saved = fs::read(v.c("cmkfs.volume")).unwrap();
    ok(&v.run(["keyslot", "remove", "--slot", &slot.to_string(), &dir]));
    // The attacker puts the older header (with the removed escrow slot) back.
    fs::write(v.c("cmkfs.volume"), &saved).unwrap();
    for extra in [&["--kek", rec.as_str()][..], &[][..]] {
        let before = tree_snapshot(&v.cipher);
        let t = try_mount(&mut v, extra);
        let mounted = v.mounted;
        if mounted {
            v.umount();
        }
        assert!(
            !t.success() && !mounted,
            "a rolled-back header must not mount (mount {extra:?})"
        );
        assert!(
            lc_has_any(&t.stderr, &["generation", "rollback", "rolled back"]),
            "the refusal names the rollback (mount {extra:?}): {}",
            t.stderr
        );
        assert_tree_unchanged(&before, &v.cipher, "nothing written (mount {extra:?})");
    }
}

// ----------------------------------------------------------------------------------------
// 4. Reserved names planted as FIFOs, symlinks, directories, huge files
// ----------------------------------------------------------------------------------------

#[test]
fn header_fifo_is_refused_promptly() {
    let mut v = vol();
    let out = outside();
    fs::rename(v.c("cmkfs.volume"), out.path().join("real-header")).unwrap();
    let fifo = v.c("cmkfs.volume");
    mkfifo(&fifo);
    let t = try_mount(&mut v, &[]);
    let dir = v.cipher.clone();
    let list = run_with_deadline(
        vol_command(&v, [OsStr::new("keyslot"), OsStr::new("list"), dir.as_os_str()], &[]),
        HARD_STOP,
    );
    release_fifo_readers(&[fifo]);
    assert!(
        !t.timed_out() && t.took < PROMPT,
        "mount blocked on a FIFO header ({:?}, killed: {})",
        t.took,
        t.timed_out()
    );
    assert!(!t.success() && !v.mounted, "a FIFO is not a header");
    assert!(
        lc_has_any(&t.stderr, &["cmkfs.volume", "header"]),
        "clear error: {}",
        t.stderr
    );
    assert!(
        !list.timed_out() && list.took < PROMPT,
        "cmkfs keyslot list blocked on a FIFO header ({:?})",
        list.took
    );
}

#[test]
fn header_symlink_is_refused() {
    let mut v = vol();
    let out = outside();
    let real = out.path().join("real-header");
    fs::rename(v.c("cmkfs.volume"), &real).unwrap();
    symlink(&real, &v.c("cmkfs.volume"));
    let before = tree_snapshot(out.path());
    let t = try_mount(&mut v, &[]);
    let mounted = v.mounted;
    if mounted {
        v.umount();
    }
    assert!(!t.timed_out() && t.took < PROMPT, "mount took {:?}", t.took);
    assert!(
        !t.success() && !mounted,
        "a symlink at cmkfs.volume must not be followed"
    );
    assert!(
        lc_has_any(&t.stderr, &["cmkfs.volume", "header", "symlink", "symbolic"]),
        "{}",
        t.stderr
    );
    assert_tree_unchanged(&before, out.path(), "the symlink's target is unchanged");
}

#[test]
fn huge_sparse_header_is_refused_without_reading_it() {
    let mut v = vol();
    let out = outside();
    fs::rename(v.c("cmkfs.volume"), out.path().join("real-header")).unwrap();
    let f = fs::File::create(v.c("cmkfs.volume")).unwrap();
    f.set_len(512 << 20).unwrap();
    drop(f);
    let t = try_mount(&mut v, &[]);
    assert!(!t.success() && !v.mounted);
    assert!(!t.timed_out() && t.took < PROMPT, "mount took {:?}", t.took);
    // Refused on its size, before a byte is read. (Peak RSS from wait4 is no measure here: a
    // child forked from this large, multi-threaded test process inherits its peak.)
    assert!(
        lc_has_any(&t.stderr, &["more than the 1048576 bytes"]),
        "refused on its size, with a clear error: {}",
        t.stderr
    );
    assert!(
        lc_has_any(&t.stderr, &["cmkfs.volume", "header"]),
        "clear error: {}",
        t.stderr
    );
}

#[test]
fn valid_header_padded_past_1mib_is_refused() {
    let mut v = vol();
    let mut h = fs::read(v.c("cmkfs.volume")).unwrap();
    // Trailing whitespace keeps the JSON valid and the MAC'd body unchanged.
    h.extend(std::iter::repeat_n(b' ', (1 << 20) + 1024));
    h.push(b'\n');
    fs::write(v.c("cmkfs.volume"), &h).unwrap();
    let t = try_mount(&mut v, &[]);
    let mounted = v.mounted;
    if mounted {
        v.umount();
    }
    assert!(!t.success() && !mounted, "a header larger than 1 MiB must be refused");
    assert!(
        lc_has_any(&t.stderr, &["cmkfs.volume", "header"]),
        "clear error: {}",
        t.stderr
    );
}

#[test]
fn planted_session_markers_are_not_followed_or_blocked_on() {
    let mut v = vol();
    let out = outside();
    let bait = out.path().join("bait");
    fs::write(&bait, b"outside content").unwrap();
    let absent = out.path().join("must-not-be-created");
    symlink(&bait, &v.c("cmkfs.volume.session.deadbeef"));
    symlink(&absent, &v.c("cmkfs.volume.session.abcdef01"));
    symlink(out.path(), &v.c("cmkfs.volume.session.0000abcd"));
    let fifo = v.c("cmkfs.volume.session.0badf00d");
    mkfifo(&fifo);
    fs::create_dir(v.c("cmkfs.volume.session.12345678")).unwrap();
    let big = fs::File::create(v.c("cmkfs.volume.session.87654321")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    let before = tree_snapshot(out.path());
    let t = try_mount(&mut v, &[]);
    if !t.success() {
        release_fifo_readers(std::slice::from_ref(&fifo));
    }
    assert!(
        !t.timed_out() && t.took < PROMPT,
        "mount blocked ({:?}): {}",
        t.took,
        t.stderr
    );
    if v.mounted {
        fs::write(v.p("f"), pattern(1, 10_000)).unwrap();
        assert!(fs::read(v.p("f")).unwrap() == pattern(1, 10_000), "content intact");
        v.umount();
    }
    let fsck = run_with_deadline(
        vol_command(&v, [OsStr::new("fsck"), v.cipher.as_os_str()], &[]),
        HARD_STOP,
    );
    release_fifo_readers(&[fifo]);
    assert!(
        !fsck.timed_out() && fsck.took < PROMPT,
        "fsck blocked ({:?})",
        fsck.took
    );
    assert!(!absent.exists(), "a dangling session-marker symlink was followed");
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
}

#[test]
fn planted_rekey_path_fifo_does_not_block_mount() {
    let mut v = vol();
    // A committed-looking journal whose path file is a FIFO.
    fs::write(v.c("cmkfs.volume.rekey.1-1"), vec![7u8; 8192]).unwrap();
    let fifo = v.c("cmkfs.volume.rekey.1-1.path");
    mkfifo(&fifo);
    let t = try_mount(&mut v, &[]);
    release_fifo_readers(std::slice::from_ref(&fifo));
    if v.mounted {
        v.umount();
    }
    assert!(
        !t.timed_out() && t.took < PROMPT,
        "mount blocked on a planted FIFO ({:?}): {}",
        t.took,
        t.stderr
    );
}

/// Peak RSS of a mounted volume's daemon (VmHWM), in KiB.
fn daemon_peak_rss_kib(v: &Vol) -> i64 {
    let pid = v.status()["pid"].as_i64().unwrap();
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn planted_huge_rekey_path_file_is_not_read_into_memory() {
    let mut v = vol();
    let out = outside();
    let bait = out.path().join("bait");
    fs::write(&bait, b"outside content").unwrap();
    fs::write(v.c("cmkfs.volume.rekey.4-4"), vec![7u8; 8192]).unwrap();
    let big = fs::File::create(v.c("cmkfs.volume.rekey.4-4.path")).unwrap();
    big.set_len(1 << 30).unwrap();
    drop(big);
    symlink(&bait, &v.c("cmkfs.volume.rekey.5-5.tmp"));
    let before = tree_snapshot(out.path());
    let t = try_mount(&mut v, &[]);
    let rss = if v.mounted {
        let r = daemon_peak_rss_kib(&v);
        v.umount();
        r
    } else {
        // The failed daemon was waited for by `cmkfs mount`: its peak is in the rusage.
        t.max_rss_kib
    };
    let log = v.log_text();
    assert!(
        !t.timed_out() && t.took < PROMPT,
        "mount took {:?}: {}; daemon log ends: {}",
        t.took,
        t.stderr,
        &log[log.len().saturating_sub(600)..]
    );
    assert!(
        rss < 128 * 1024,
        "a 1 GiB planted journal path file was read into memory (peak RSS {} MiB)",
        rss / 1024
    );
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
}

/// Plants `cmkfs.volume.lock` as a symlink to a file that does not exist; returns it.
fn plant_lock_symlink(v: &Vol, out: &Path) -> PathBuf {
    let target = out.join("created-through-lock-symlink");
    symlink(&target, &v.c("cmkfs.volume.lock"));
    target
}

#[test]
fn planted_lock_symlink_is_not_followed_by_rotate() {
    let v = vol();
    let out = outside();
    let k2 = v.new_key("kek2");
    let dir = v.cipher.to_str().unwrap().to_string();
    let target = plant_lock_symlink(&v, out.path());
    let before = tree_snapshot(out.path());
    let r = v.run(["rotate", "--kek", &k2, &dir]);
    assert!(
        !target.exists(),
        "cmkfs rotate created the target of a planted cmkfs.volume.lock symlink (rotate ok: {})",
        r.status.success()
    );
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
    // And the name is not used at all any more.
    fs::remove_file(v.c("cmkfs.volume.lock")).unwrap();
    ok(&v.run(["rotate", "--kek", &v.uri, &dir]));
    assert!(
        fs::symlink_metadata(v.c("cmkfs.volume.lock")).is_err(),
        "cmkfs.volume.lock is no longer used (header-update locks live under /run/cmkfs)"
    );
}

#[test]
fn planted_lock_symlink_is_not_followed_by_keyslot_add() {
    let v = vol();
    let out = outside();
    let k2 = v.new_key("kek2");
    let target = plant_lock_symlink(&v, out.path());
    let before = tree_snapshot(out.path());
    let r = v.run([
        "keyslot",
        "add",
        "--kek",
        &k2,
        "--role",
        "recovery",
        v.cipher.to_str().unwrap(),
    ]);
    assert!(
        !target.exists(),
        "cmkfs keyslot add created the target of a planted cmkfs.volume.lock symlink (add ok: {})",
        r.status.success()
    );
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
}

#[test]
fn planted_lock_symlink_is_not_followed_by_daemon_rewrap() {
    let mut v = vol();
    let out = outside();
    v.mount(&["--check-interval", "1s"]);
    fs::write(v.p("f"), b"data").unwrap();
    let target = plant_lock_symlink(&v, out.path());
    let before = tree_snapshot(out.path());
    ok(&v.run(["key", "rotate", "kek", "--store", v.store.to_str().unwrap()]));
    assert!(
        wait_until(Duration::from_secs(10), || v.status()["key_version"] == "2"),
        "the daemon rewraps to the new key version: {}",
        v.status()
    );
    assert!(
        !target.exists(),
        "the daemon's automatic rewrap created the target of a planted cmkfs.volume.lock symlink"
    );
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
}

// ----------------------------------------------------------------------------------------
// 5. Rekey journals
// ----------------------------------------------------------------------------------------

#[test]
fn planted_rekey_journal_cannot_overwrite_files_outside_the_volume() {
    let mut v = vol();
    let out = outside();
    let victim_abs = out.path().join("etc-shadow");
    let victim_rel = out.path().join("authorized_keys");
    let original: Vec<u8> = b"root:$6$victim-hash:19000:0:99999:7:::\n".repeat(64);
    fs::write(&victim_abs, &original).unwrap();
    fs::write(&victim_rel, &original).unwrap();
    let evil: Vec<u8> = b"root::0:0:owned by a planted journal:/root:/bin/sh\n".repeat(200);
    // One journal names the file by absolute path, one by a relative path that climbs out.
    let climb = "../".repeat(v.cipher.components().count());
    for (p, name) in [
        (&victim_abs, victim_abs.display().to_string()),
        (
            &victim_rel,
            format!("{climb}{}", victim_rel.to_str().unwrap().trim_start_matches('/')),
        ),
    ] {
        let md = fs::metadata(p).unwrap();
        let base = format!("cmkfs.volume.rekey.{}-{}", md.dev(), md.ino());
        fs::write(v.c(&base), &evil).unwrap();
        fs::write(v.c(&format!("{base}.path")), format!("{name}\n")).unwrap();
    }
    let before = tree_snapshot(out.path());
    let t = try_mount(&mut v, &[]);
    if v.mounted {
        v.umount();
    }
    assert!(!t.timed_out(), "mount blocked");
    assert!(
        fs::read(&victim_abs).unwrap() == original,
        "a planted journal (absolute path) overwrote a file outside the volume at mount; it now starts {:?}",
        String::from_utf8_lossy(&fs::read(&victim_abs).unwrap()[..60.min(fs::read(&victim_abs).unwrap().len())])
    );
    assert!(
        fs::read(&victim_rel).unwrap() == original,
        "a planted journal (relative ../ path) overwrote a file outside the volume at mount"
    );
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
}

#[test]
fn planted_rekey_tmp_symlink_does_not_redirect_rekey() {
    let v = Vol::new();
    let out = outside();
    let bait = out.path().join("bait");
    fs::write(&bait, b"outside content that must survive").unwrap();
    let absent = out.path().join("must-not-be-created");
    let (fdata, gdata) = (pattern(1, 10_000), pattern(2, 10_000));
    fs::write(v.p("f"), &fdata).unwrap();
    fs::write(v.p("g"), &gdata).unwrap();
    for (name, target) in [("f", &bait), ("g", &absent)] {
        let md = fs::metadata(v.c(name)).unwrap();
        symlink(
            target,
            &v.c(&format!("cmkfs.volume.rekey.{}-{}.tmp", md.dev(), md.ino())),
        );
    }
    let before = tree_snapshot(out.path());
    let r = v.run([OsStr::new("rekey"), v.p("f").as_os_str(), v.p("g").as_os_str()]);
    let now = fs::read(&bait).unwrap();
    assert!(
        now == b"outside content that must survive",
        "cmkfs rekey wrote through a planted journal symlink (rekey ok: {}); the target now holds {} bytes starting {:?}",
        r.status.success(),
        now.len(),
        String::from_utf8_lossy(&now[..8.min(now.len())])
    );
    assert!(
        !absent.exists(),
        "cmkfs rekey created a file through a planted journal symlink"
    );
    assert_tree_unchanged(&before, out.path(), "nothing outside the volume changed");
    assert!(fs::read(v.p("f")).unwrap() == fdata, "f's content is intact");
    assert!(fs::read(v.p("g")).unwrap() == gdata, "g's content is intact");
}

// ----------------------------------------------------------------------------------------
// 6. One mount per volume per host
// ----------------------------------------------------------------------------------------

#[test]
fn second_mount_of_the_same_volume_is_refused() {
    let mut v = vol();
    v.mount(&[]);
    let data = pattern(3, 50_000);
    fs::write(v.p("f"), &data).unwrap();
    let mnt2 = v.tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let _g = MountGuard(mnt2.clone());
    let t = spawn_mount(&v, &mnt2, &v.tmp.path().join("daemon2.log"), &[], &[]);
    let second = is_mounted(&mnt2);
    if second {
        // Show the damage a second daemon does while it lives: it writes the same files.
        let _ = fs::write(mnt2.join("f"), pattern(4, 50_000));
    }
    assert!(
        !t.success() && !second,
        "a second mount of the same cipher directory must be refused"
    );
    assert!(
        t.stderr.contains(v.mnt.to_str().unwrap()) && lc_has_any(&t.stderr, &["pid"]),
        "the refusal names the first mountpoint and its pid: {}",
        t.stderr
    );
    assert!(
        fs::read(v.p("f")).unwrap() == data,
        "data written through the first mount is intact"
    );
    fs::write(v.p("g"), b"still writable").unwrap();
    assert_eq!(fs::read(v.p("g")).unwrap(), b"still writable");
}

#[test]
fn killed_daemon_leaves_no_stale_mount_lock() {
    let mut v = vol();
    v.mount(&[]);
    let data = pattern(5, 30_000);
    {
        let mut f = fs::File::create(v.p("durable")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let pid = v.status()["pid"].as_i64().unwrap() as i32;
    let _ = send_signal(pid, Signal::KILL);
    assert!(
        wait_until(Duration::from_secs(5), || !pid_alive(pid)),
        "daemon {pid} died"
    );
    let u = Command::new("umount").arg("-l").arg(&v.mnt).output().unwrap();
    assert!(u.status.success(), "umount -l: {}", String::from_utf8_lossy(&u.stderr));
    v.mounted = false;
    // Another mountpoint, then the same one: neither is blocked by a lock the dead daemon held.
    let mnt2 = v.tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let g = MountGuard(mnt2.clone());
    let t = spawn_mount(&v, &mnt2, &v.tmp.path().join("daemon2.log"), &[], &[]);
    assert!(
        t.success() && is_mounted(&mnt2),
        "mount after a killed daemon: {}",
        t.stderr
    );
    assert!(fs::read(mnt2.join("durable")).unwrap() == data, "durable data intact");
    ok(&v.run([OsStr::new("umount"), mnt2.as_os_str()]));
    drop(g);
    let t = try_mount(&mut v, &[]);
    assert!(t.success(), "mount at the first mountpoint again: {}", t.stderr);
    assert!(fs::read(v.p("durable")).unwrap() == data, "durable data intact");
}

#[test]
fn unprivileged_user_cannot_take_locks_that_block_mount_or_rotation() {
    let mut v = vol();
    // Like /srv: the directories above the cipher directory are world-traversable.
    fs::set_permissions(v.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    v.mount(&[]);
    fs::write(v.p("f"), b"data").unwrap();
    // Make cmkfs create whatever lock files it uses (mount and header update).
    ok(&v.run(["rotate", "--kek", &v.uri, v.mnt.to_str().unwrap()]));
    v.umount();
    let mut paths = all_paths(Path::new("/run/cmkfs"));
    paths.extend(all_paths(&v.cipher));
    paths.extend(all_paths(&config_dir_of(&v)));
    let locker = NobodyLocker::start(&paths);
    let t = try_mount(&mut v, &[]);
    assert!(
        t.success() && !t.timed_out() && t.took < PROMPT,
        "nobody (holding {} locks) blocked the mount ({:?}): {}",
        locker.locks,
        t.took,
        t.stderr
    );
    let r = run_with_deadline(
        vol_command(
            &v,
            [
                OsStr::new("rotate"),
                OsStr::new("--kek"),
                OsStr::new(&v.uri),
                v.mnt.as_os_str(),
            ],
            &[],
        ),
        HARD_STOP,
    );
    assert!(
        r.success() && r.took < PROMPT,
        "nobody (holding {} locks) blocked a header update (rotate took {:?}, killed: {}): {}",
        locker.locks,
        r.took,
        r.timed_out(),
        r.stderr
    );
    drop(locker);
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
}

// ----------------------------------------------------------------------------------------
// 7. Fail closed
// ----------------------------------------------------------------------------------------

#[test]
fn fail_closed_when_header_is_replaced_by_a_fifo() {
    let mut v = vol();
    let out = outside();
    v.mount(&["--check-interval", "1s"]);
    fs::write(v.p("f"), b"data").unwrap();
    fs::rename(v.c("cmkfs.volume"), out.path().join("real-header")).unwrap();
    let fifo = v.c("cmkfs.volume");
    mkfifo(&fifo);
    ok(&v.run(["key", "disable", "kek", "--store", v.store.to_str().unwrap()]));
    let took = time_to_eacces(&v, "f", Duration::from_secs(10));
    release_fifo_readers(std::slice::from_ref(&fifo));
    assert!(
        took.is_some_and(|t| t <= FAIL_CLOSED),
        "reads must fail with EACCES within {FAIL_CLOSED:?} of the key being disabled, FIFO header or not (took {took:?})"
    );
}

#[test]
fn fail_closed_when_lock_and_header_are_flocked() {
    let mut v = vol();
    fs::set_permissions(v.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    v.mount(&["--check-interval", "1s"]);
    fs::write(v.p("f"), b"data").unwrap();
    // The attacker plants cmkfs.volume.lock and holds flock on it and on the header, as root
    // (this process) and as nobody (when the directory lets nobody in).
    let lock = v.c("cmkfs.volume.lock");
    fs::write(&lock, b"").unwrap();
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
    let mut held = vec![];
    for p in [&lock, &v.c("cmkfs.volume")] {
        let f = fs::File::open(p).unwrap();
        cmkfs::sys::process::flock(&f).unwrap();
        held.push(f);
    }
    let second = fs::File::open(&lock).unwrap();
    let nobody = NobodyLocker::start(&[lock.clone(), v.c("cmkfs.volume")]);
    // A new key version makes the daemon want to rewrite the header (automatic rewrap).
    ok(&v.run(["key", "rotate", "kek", "--store", v.store.to_str().unwrap()]));
    wait_until(Duration::from_millis(2500), || v.status()["key_version"] == "2");
    ok(&v.run(["key", "disable", "kek", "--store", v.store.to_str().unwrap()]));
    let took = time_to_eacces(&v, "f", Duration::from_secs(10));
    drop((held, second, nobody));
    assert!(
        took.is_some_and(|t| t <= FAIL_CLOSED),
        "reads must fail with EACCES within {FAIL_CLOSED:?} of the key being disabled, locks held or not (took {took:?})"
    );
}

/// Kills the `sleep` processes a hanging exec wrapper recorded (pids in a file).
struct KillRecorded(PathBuf);
impl Drop for KillRecorded {
    fn drop(&mut self) {
        for pid in fs::read_to_string(&self.0).unwrap_or_default().lines() {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).starts_with("sleep") {
                    let _ = send_signal(pid, Signal::KILL);
                }
            }
        }
    }
}

#[test]
fn fail_closed_when_exec_check_hangs() {
    // Not under /tmp: exec programs must sit in directories only root (or we) can write.
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let kms = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/exec/openssl-kms");
    let key = d.path().join("key");
    let o = Command::new(&kms).arg("create").arg(&key).arg("2048").output().unwrap();
    assert!(
        o.status.success(),
        "openssl-kms create: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let hang = d.path().join("hang");
    let pids = d.path().join("hanging-pids");
    let _kill = KillRecorded(pids.clone());
    let wrapper = d.path().join("hanging-kms");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = check ] && [ -e {hang} ]; then echo $$ >> {pids}; exec sleep 120; fi\nexec {kms} \"$@\"\n",
            hang = hang.display(),
            pids = pids.display(),
            kms = kms.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let uri = format!("exec:{}?key={}&timeout=1h", wrapper.display(), key.display());
    let mut v = Vol::with_kek(&uri, &[]);
    ensure_config_env(&mut v);
    v.mount(&["--check-interval", "1s"]);
    fs::write(v.p("f"), b"data").unwrap();
    // From now on `check` hangs; wait (bounded) for the daemon to be stuck in one.
    fs::write(&hang, b"").unwrap();
    wait_until(Duration::from_secs(3), || {
        fs::read_to_string(&pids).is_ok_and(|s| !s.is_empty())
    });
    // The key is disabled: unwrap answers denied (exit 2).
    fs::write(key.join("disabled"), b"").unwrap();
    let took = time_to_eacces(&v, "f", Duration::from_secs(10));
    assert!(
        took.is_some_and(|t| t <= FAIL_CLOSED),
        "reads must fail with EACCES within {FAIL_CLOSED:?} of the key being disabled, hanging check or not (took {took:?})"
    );
}

// ----------------------------------------------------------------------------------------
// 8. Private by default
// ----------------------------------------------------------------------------------------

#[test]
fn files_are_private_by_default() {
    let mut v = vol();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
    let mut problems = vec![];
    if mode(&v.cipher) != 0o700 {
        problems.push(format!("cipher directory is {:o} after init, not 700", mode(&v.cipher)));
    }
    if mode(&v.c("cmkfs.volume")) != 0o600 {
        problems.push(format!(
            "cmkfs.volume is {:o} after init, not 600",
            mode(&v.c("cmkfs.volume"))
        ));
    }
    v.mount(&[]);
    fs::write(v.p("f"), b"data").unwrap();
    let markers: Vec<String> = root_names(&v)
        .into_iter()
        .filter(|n| n.starts_with("cmkfs.volume.session."))
        .collect();
    assert!(!markers.is_empty(), "a format-2 mount leaves a session marker");
    for m in &markers {
        if mode(&v.c(m)) != 0o600 {
            problems.push(format!("session marker {m} is {:o}", mode(&v.c(m))));
        }
    }
    for n in root_names(&v) {
        let md = fs::symlink_metadata(v.c_raw(&n)).unwrap();
        if !md.file_type().is_symlink() && md.mode() & 0o022 != 0 {
            problems.push(format!("{n} in the cipher root is {:o}", md.mode() & 0o7777));
        }
    }
    if mode(&v.log) != 0o600 {
        problems.push(format!("daemon log is {:o}", mode(&v.log)));
    }
    if mode(&v.audit) & 0o022 != 0 {
        problems.push(format!("audit log is {:o}", mode(&v.audit)));
    }
    let sock = cmkfs::daemon::control::socket_path(&v.mnt);
    for p in [sock.parent().unwrap(), sock.as_path()] {
        if let Ok(md) = fs::symlink_metadata(p) {
            if md.mode() & 0o022 != 0 {
                problems.push(format!("{} is {:o}", p.display(), md.mode() & 0o7777));
            }
        }
    }
    for p in all_paths(Path::new("/run/cmkfs")) {
        if let Ok(md) = fs::symlink_metadata(&p) {
            // Sockets of other tests' mounts are checked by their own runs; files and dirs here.
            if (md.is_file() || md.is_dir()) && md.mode() & 0o022 != 0 {
                problems.push(format!("{} is {:o}", p.display(), md.mode() & 0o7777));
            }
        }
    }
    assert!(problems.is_empty(), "not private: {problems:#?}");
}

#[test]
fn header_directory_is_refused_promptly() {
    let mut v = vol();
    let out = outside();
    fs::rename(v.c("cmkfs.volume"), out.path().join("real-header")).unwrap();
    fs::create_dir(v.c("cmkfs.volume")).unwrap();
    let t = try_mount(&mut v, &[]);
    assert!(!t.timed_out() && t.took < PROMPT, "mount took {:?}", t.took);
    assert!(!t.success() && !v.mounted, "a directory is not a header");
    assert!(
        lc_has_any(&t.stderr, &["cmkfs.volume", "header"]),
        "clear error: {}",
        t.stderr
    );
}

/// Every real stall point on the check path has a deadline now, so the watchdog is tested
/// with a debug-build hook that makes a check hang (as one stuck in an uninterruptible read
/// would): the volume must become Inaccessible within interval + provider timeout + 1 s of
/// the last completed check, and come back by itself once checks complete again.
#[test]
fn watchdog_fails_closed_when_a_check_stalls_and_recovers() {
    let mut v = vol();
    let out = outside();
    let stall = out.path().join("stall");
    v.env
        .push(("CMKFS_TEST_STALL_CHECK_WHILE".into(), stall.clone().into_os_string()));
    v.mount(&["--check-interval", "1s"]);
    fs::write(v.p("f"), b"data").unwrap();
    assert_eq!(v.status()["state"], "Available");
    fs::write(&stall, b"").unwrap();
    let took = time_to_eacces(&v, "f", Duration::from_secs(10));
    assert!(
        took.is_some_and(|t| t <= FAIL_CLOSED),
        "a stalled check must make the volume Inaccessible within {FAIL_CLOSED:?} (took {took:?})"
    );
    let st = v.status();
    assert_eq!(st["state"], "Inaccessible");
    assert!(
        st["reason"].as_str().unwrap_or("").contains("no key check completed"),
        "{st}"
    );
    fs::remove_file(&stall).unwrap();
    assert!(
        v.wait_state("Available", Duration::from_secs(10)).is_some(),
        "access resumes once checks complete: {}",
        v.status()
    );
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
    v.umount();
}

/// Journals in the current naming (`cmkfs.volume.rekey.<32 hex>` with a `.bind` record) are
/// believed only when the binding record authenticates under the volume key: a planted one
/// (a copy of another file's ciphertext with a made-up record, or FIFOs under both names) is
/// left alone and audited, and the mount neither blocks nor changes any file.
#[test]
fn planted_authenticated_style_rekey_journal_is_not_applied() {
    let mut v = Vol::new();
    fs::write(v.p("victim"), b"the victim's own content").unwrap();
    fs::write(v.p("other"), pattern(3, 9000)).unwrap();
    v.umount();
    let victim_before = fs::read(v.c("victim")).unwrap();
    let md = fs::metadata(v.c("victim")).unwrap();
    // A journal holding another file's (valid) ciphertext, and a binding record naming the
    // victim's inode with a MAC the attacker cannot compute.
    let id = "00112233445566778899aabbccddeeff";
    fs::copy(v.c("other"), v.c(&format!("cmkfs.volume.rekey.{id}"))).unwrap();
    let mut bind = vec![0u8; 16 + 16 + 8 + 8 + 8 + 32];
    bind[16..32].copy_from_slice(&(0..16).map(|i| (i * 0x11) as u8).collect::<Vec<_>>());
    bind[32..40].copy_from_slice(&md.dev().to_be_bytes());
    bind[40..48].copy_from_slice(&md.ino().to_be_bytes());
    bind[48..56].copy_from_slice(&fs::metadata(v.c("other")).unwrap().len().to_be_bytes());
    fs::write(v.c(&format!("cmkfs.volume.rekey.{id}.bind")), &bind).unwrap();
    // And a pair of FIFOs under another id.
    let fid = "ffeeddccbbaa99887766554433221100";
    mkfifo(&v.c(&format!("cmkfs.volume.rekey.{fid}")));
    mkfifo(&v.c(&format!("cmkfs.volume.rekey.{fid}.bind")));
    let t = try_mount(&mut v, &[]);
    assert!(!t.timed_out(), "mount blocked on a planted journal");
    assert!(t.success(), "a planted journal is ignored, not fatal: {}", t.stderr);
    assert_eq!(fs::read(v.p("victim")).unwrap(), b"the victim's own content");
    v.umount();
    assert_eq!(
        fs::read(v.c("victim")).unwrap(),
        victim_before,
        "victim's ciphertext untouched"
    );
    assert!(
        v.audit_events().iter().any(|e| e["event"] == "rekey_journal_ignored"),
        "the ignored journals are audited"
    );
    assert!(
        v.c(&format!("cmkfs.volume.rekey.{id}")).exists(),
        "left in place for inspection"
    );
}

/// A mounted daemon that sees an older (but authentic) header in place of the one it uses
/// ignores it: it keeps checking the keyslot of the newer header and audits the rollback.
#[test]
fn rolled_back_header_is_ignored_by_a_mounted_daemon() {
    let mut v = vol();
    let kek2 = v.new_key("kek2");
    v.mount(&["--check-interval", "300ms"]);
    fs::write(v.p("f"), b"data").unwrap();
    let old = fs::read(v.c("cmkfs.volume")).unwrap();
    ok(&v.run(["rotate", "--kek", &kek2, v.mnt.to_str().unwrap()]));
    assert!(wait_until(Duration::from_secs(10), || v.status()["kek_uri"] == kek2.as_str()));
    let generation = v.status()["header_generation"].as_u64().unwrap();
    fs::write(v.c("cmkfs.volume"), &old).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || v
            .audit_events()
            .iter()
            .any(|e| e["event"] == "header_rollback_ignored")),
        "the daemon notices and reports the rollback"
    );
    let st = v.status();
    assert_eq!(
        st["kek_uri"],
        kek2.as_str(),
        "still on the newer header's keyslot: {st}"
    );
    assert_eq!(st["header_generation"].as_u64().unwrap(), generation);
    assert_eq!(st["state"], "Available");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
    v.umount();
    // And the next mount refuses the old header.
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("rollback"), "{e}");
}

/// The control socket changes state (lock, unlock, rekey): an unprivileged user can neither
/// reach it (0600 in a 0700 directory) nor lock the volume through it.
#[test]
fn unprivileged_user_cannot_use_the_control_socket() {
    let mut v = vol();
    v.mount(&["--allow-other"]);
    fs::write(v.p("f"), b"data").unwrap();
    for args in [&["lock"][..], &["unlock"][..], &["status"][..]] {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(BIN)
            .args(args)
            .arg(&v.mnt)
            .env("CMKFS_AUDIT_LOG", "/dev/null")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "nobody ran 'cmkfs {args:?}' successfully: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(v.status()["state"], "Available", "the volume was not locked by nobody");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
    v.umount();
}

/// The cipher root stays private (0700) while the mount's root is shown as an ordinary
/// directory (0755 by default); chmod and chown through the mount change what is shown and
/// never open the cipher root to others.
#[test]
fn mount_root_is_shown_apart_from_the_private_cipher_root() {
    let mut v = vol();
    assert_eq!(fs::metadata(&v.cipher).unwrap().mode() & 0o7777, 0o700);
    v.mount(&["--allow-other"]);
    assert_eq!(fs::metadata(&v.mnt).unwrap().mode() & 0o7777, 0o755);
    fs::set_permissions(&v.mnt, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&v.mnt, Some(NOBODY), Some(NOGROUP)).unwrap();
    let md = fs::metadata(&v.mnt).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o750, NOBODY, NOGROUP));
    let cmd = fs::metadata(&v.cipher).unwrap();
    assert_eq!(
        (cmd.mode() & 0o7777, cmd.uid()),
        (0o700, 0),
        "the cipher root is unchanged"
    );
    // The attribute that holds it is not a user xattr of the plaintext view.
    let list = Command::new("getfattr").arg("-d").arg(&v.mnt).output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains("cmkfs.root"));
    v.umount();
    v.mount(&[]);
    let md = fs::metadata(&v.mnt).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o750, NOBODY), "kept across a remount");
    v.umount();
}
