//! The customer-managed key lifecycle on live mounts: revocation refuses I/O with EACCES
//! (open handles, page cache and mmap included), access comes back without a remount, no
//! acknowledged write is lost, lock/unlock, online rotation, keyslots, expiry, soft delete,
//! and the audit log.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;

const INTERVAL: &str = "200ms";
/// What the issue promises: Inaccessible within the check interval plus one second.
const DEADLINE: Duration = Duration::from_millis(1200);

fn fast_vol() -> Vol {
    let mut v = Vol::unmounted();
    v.mount(&["--check-interval", INTERVAL]);
    v
}

fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    errno_of(r)
}

const EACCES: Option<i32> = Some(libc::EACCES);

#[derive(Default)]
struct LoopLog {
    ok_writes: Vec<u64>,
    failed_writes: Vec<u64>,
    other_errors: Vec<String>,
}

#[test]
fn revocation_refuses_everything_and_access_returns_without_remount() {
    let v = fast_vol();
    // Data fsynced before the revocation.
    let durable = pattern(1, 1 << 20);
    {
        let mut f = fs::File::create(v.p("durable")).unwrap();
        f.write_all(&durable).unwrap();
        f.sync_all().unwrap();
    }
    // A file fully read a moment before (in the kernel page cache).
    fs::write(v.p("cached"), pattern(2, 100_000)).unwrap();
    assert_eq!(fs::read(v.p("cached")).unwrap(), pattern(2, 100_000));
    fs::write(v.p("mapped"), pattern(3, 3 * 4096)).unwrap();
    fs::create_dir(v.p("dir")).unwrap();
    // A handle opened before the revocation.
    let reader = fs::File::open(v.p("durable")).unwrap();
    // A memory mapping made before, in another process.
    let mut mapper = Command::new("python3")
        .arg("-c")
        .arg("import mmap,sys\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\nprint(m[0:8].hex(),flush=True)\nsys.stdin.readline()\nprint(m[0:8].hex(),flush=True)\nprint(m[8192:8200].hex(),flush=True)")
        .arg(v.p("mapped"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut mapped_out = BufReader::new(mapper.stdout.take().unwrap());
    let mut first = String::new();
    mapped_out.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), hex8(&pattern(3, 8)), "mapping works before");

    // A loop of writes (4 KiB records) and reads through handles opened before.
    let writer = Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(v.p("log"))
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(LoopLog::default()));
    let looper = {
        let (writer, stop, log) = (writer.clone(), stop.clone(), log.clone());
        let reader = reader.try_clone().unwrap();
        let durable = durable.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match writer.write_all_at(&pattern(1000 + i, 4096), i * 4096) {
                    Ok(()) => log.lock().unwrap().ok_writes.push(i),
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => log.lock().unwrap().failed_writes.push(i),
                    Err(e) => log.lock().unwrap().other_errors.push(format!("write {i}: {e}")),
                }
                let mut b = vec![0u8; 4096];
                match reader.read_at(&mut b, (i % 200) * 4096) {
                    Ok(_) => assert_eq!(
                        b,
                        durable[(i % 200) as usize * 4096..][..4096],
                        "read returned wrong plaintext"
                    ),
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
                    Err(e) => log.lock().unwrap().other_errors.push(format!("read {i}: {e}")),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // Revoke: disable the key in the key store.
    ok(&v.run(["key", "disable", "kek"]));
    let took = v
        .wait_state("Inaccessible", DEADLINE)
        .expect("Inaccessible within check interval + 1 s");
    let st = v.status();
    assert!(st["reason"].as_str().unwrap().contains("disabled"), "{st}");

    // Every data and name operation is refused, handles opened before included.
    let mut b = [0u8; 16];
    assert_eq!(
        errno(reader.read_at(&mut b, 0)),
        EACCES,
        "read on a handle opened before"
    );
    assert_eq!(
        errno(writer.write_at(b"x", 0)),
        EACCES,
        "write on a handle opened before"
    );
    assert_eq!(errno(fs::read(v.p("cached"))), EACCES, "page-cached file");
    assert_eq!(errno(fs::File::open(v.p("durable"))), EACCES, "open");
    assert_eq!(errno(fs::File::create(v.p("new"))), EACCES, "create");
    assert_eq!(
        errno(fs::read_dir(&v.mnt).and_then(|mut d| d.next().transpose())),
        EACCES,
        "readdir"
    );
    assert_eq!(
        errno(fs::metadata(v.p("brand-new-name"))),
        EACCES,
        "lookup of a new name"
    );
    assert_eq!(errno(fs::create_dir(v.p("d2"))), EACCES, "mkdir");
    assert_eq!(errno(fs::rename(v.p("cached"), v.p("c2"))), EACCES, "rename");
    assert_eq!(errno(fs::remove_file(v.p("cached"))), EACCES, "unlink");
    assert_eq!(errno(fs::remove_dir(v.p("dir"))), EACCES, "rmdir");
    assert_eq!(errno(writer.set_len(0)), EACCES, "truncate");
    let xr = rustix::fs::setxattr(v.p("cached"), "user.a", b"v", rustix::fs::XattrFlags::empty());
    assert_eq!(errno(xr.map_err(Into::into)), EACCES, "setxattr");
    // statfs (needed by df and unmount) keeps working.
    rustix::fs::statvfs(&v.mnt).unwrap_or_else(|e| panic!("statfs: {e}"));
    // The memory mapping faults instead of showing plaintext, even for the page seen before.
    mapper.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut mapped_out, &mut rest);
    let mst = mapper.wait().unwrap();
    assert!(
        !rest.contains(&hex8(&pattern(3, 8))),
        "mmap showed plaintext after revocation: {rest}"
    );
    assert_eq!(
        mst.signal(),
        Some(libc::SIGBUS),
        "mmap access after revocation must fault (SIGBUS), got {mst:?}"
    );
    assert!(
        v.status()["refused_ops"].as_u64().unwrap() > 5,
        "refused operations are counted"
    );

    // Restore: enable the key; access returns without remount, on the old handles too.
    ok(&v.run(["key", "enable", "kek"]));
    v.wait_state("Available", DEADLINE)
        .expect("Available again within check interval + 1 s");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    looper.join().unwrap();
    let mut b = vec![0u8; 4096];
    reader.read_exact_at(&mut b, 4096).unwrap();
    assert_eq!(b, durable[4096..8192], "old handle reads again");
    assert_eq!(fs::read(v.p("durable")).unwrap(), durable, "fsynced data intact");
    assert_eq!(fs::read(v.p("cached")).unwrap(), pattern(2, 100_000));

    // No acknowledged write lost; refused writes left nothing behind.
    let log = log.lock().unwrap();
    assert!(
        log.other_errors.is_empty(),
        "only EACCES may be seen: {:?}",
        log.other_errors
    );
    assert!(!log.failed_writes.is_empty(), "the loop ran into the revocation");
    assert!(log.ok_writes.len() > 20, "the loop wrote before and after");
    let content = fs::read(v.p("log")).unwrap();
    for &i in &log.ok_writes {
        assert_eq!(
            &content[(i * 4096) as usize..][..4096],
            &pattern(1000 + i, 4096)[..],
            "acknowledged write {i} lost"
        );
    }
    for &i in &log.failed_writes {
        if let Some(region) = content.get((i * 4096) as usize..(i * 4096 + 4096) as usize) {
            assert!(region.iter().all(|&b| b == 0), "refused write {i} left data");
        }
    }
    let ev = v.audit_events();
    assert!(ev
        .iter()
        .any(|e| e["event"] == "state_change" && e["state"] == "Inaccessible"));
    let back = ev
        .iter()
        .find(|e| e["event"] == "state_change" && e["state"] == "Available")
        .expect("restore audited");
    assert!(
        back["refused_ops_while_inaccessible"].as_u64().unwrap() > 0,
        "refusals summarised: {back}"
    );
    let refusals_lines = ev.iter().filter(|e| e["event"] == "state_change").count();
    assert!(
        refusals_lines <= 3,
        "refused operations are summarised, not one line each"
    );
    eprintln!("revocation took effect after {took:?}");
}

fn hex8(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn mount_with_revoked_key_names_key_version_and_reason() {
    let v = Vol::unmounted();
    ok(&v.run(["key", "disable", "kek@1"]));
    let e = stderr(&v.mount_output(&[]));
    assert!(
        e.contains("'kek'") && e.contains("version 1 is disabled") && e.contains("access denied"),
        "{e}"
    );
    ok(&v.run(["key", "enable", "kek@1"]));
    ok(&v.run(["key", "delete", "kek"]));
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("deleted") && e.contains("cmkfs key recover"), "{e}");
    let ev = v.audit_events();
    assert!(
        ev.iter()
            .any(|e| e["event"] == "mount" && e["outcome"] == "failed" && e["kind"] == "denied"),
        "failed mount audited"
    );
}

#[test]
fn lock_and_unlock() {
    let v = fast_vol();
    fs::write(v.p("f"), b"secret").unwrap();
    let out = ok(&v.run(["lock", v.mnt.to_str().unwrap()]));
    assert!(out.contains("Inaccessible"), "{out}");
    assert_eq!(errno(fs::read(v.p("f"))), EACCES);
    // The key is fine, but a lock holds until unlock: no automatic return.
    std::thread::sleep(Duration::from_millis(800));
    let st = v.status();
    assert_eq!(st["state"], "Inaccessible");
    assert_eq!(st["locked_by_uid"], 0);
    // Another user may not unlock (or lock).
    let other = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "unlock"])
        .arg(&v.mnt)
        .env("CMKFS_AUDIT_LOG", "/tmp/cmkfs-other-user-audit.jsonl")
        .output()
        .unwrap();
    assert!(!other.status.success());
    assert_eq!(v.status()["state"], "Inaccessible");
    let out = ok(&v.run(["unlock", v.mnt.to_str().unwrap()]));
    assert!(out.contains("Available"), "{out}");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"secret");
    let ev = v.audit_events();
    assert!(ev.iter().any(|e| e["event"] == "lock" && e["requested_by_uid"] == 0));
    assert!(ev
        .iter()
        .any(|e| e["event"] == "unlock" && e["requested_by_uid"] == 0 && e["outcome"] == "Available"));
}

#[test]
fn online_rotation_under_load_is_o1_and_old_key_can_be_disabled() {
    let mut v = fast_vol();
    let kek2 = v.new_key("kek2");
    // Many files: rotation must not touch any of them.
    for i in 0..300 {
        fs::write(v.p(&format!("f{i}")), pattern(i, 5000)).unwrap();
    }
    let before = snapshot_backing(&v);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(vec![]));
    let load = {
        let (stop, errors, p) = (stop.clone(), errors.clone(), v.p("load"));
        std::thread::spawn(move || {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = f.write_all_at(&pattern(i, 8192), (i % 64) * 8192) {
                    errors.lock().unwrap().push(e.to_string());
                }
                let mut b = vec![0u8; 8192];
                if let Err(e) = f.read_exact_at(&mut b, (i % 64) * 8192) {
                    errors.lock().unwrap().push(e.to_string());
                }
                i += 1;
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = ok(&v.run(["rotate", "--kek", &kek2, v.mnt.to_str().unwrap()]));
    assert!(out.contains("kek2"), "{out}");
    assert!(
        wait_until(DEADLINE, || v.status()["key_id"] == "kek2"),
        "daemon switched to the new key: {}",
        v.status()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        errors.lock().unwrap().is_empty(),
        "I/O errors during rotation: {:?}",
        errors.lock().unwrap()
    );
    // O(1): no backing file but the header changed.
    let after = snapshot_backing(&v);
    for (name, meta) in &before {
        if name != "cmkfs.volume" && name != "load" {
            assert_eq!(after.get(name), Some(meta), "rotation touched {name}");
        }
    }
    // The old key is no longer needed.
    ok(&v.run(["key", "disable", "kek"]));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        v.status()["state"],
        "Available",
        "disabling the old KEK after rotation has no effect"
    );
    v.remount();
    assert_eq!(fs::read(v.p("f7")).unwrap(), pattern(7, 5000));
    let ev = v.audit_events();
    let r = ev.iter().find(|e| e["event"] == "rotate").expect("rotation audited");
    assert_eq!(
        (r["old_key_id"].as_str(), r["new_key_id"].as_str()),
        (Some("kek"), Some("kek2"))
    );
}

fn snapshot_backing(v: &Vol) -> std::collections::HashMap<String, (u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(&v.cipher)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().into_string().unwrap(),
                (
                    m.size(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.ctime_nsec() + m.ctime() * 1_000_000_000,
                ),
            )
        })
        .collect()
}

#[test]
fn rotation_is_crash_safe_at_every_step() {
    let mut v = Vol::new();
    let kek2 = v.new_key("kek2");
    fs::write(v.p("data"), pattern(5, 20_000)).unwrap();
    v.umount();
    for point in ["atomic-write:written", "atomic-write:synced", "atomic-write:renamed"] {
        let out = cmkfs_env(
            ["rotate", "--kek", &kek2, v.cipher.to_str().unwrap()],
            &[
                ("CMKFS_TEST_CRASH_AT", std::ffi::OsStr::new(point)),
                ("CMKFS_AUDIT_LOG", v.audit.as_os_str()),
                ("CMKFS_CONFIG_DIR", config_dir_of(&v).as_os_str()),
            ],
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "crash injected at {point}: {}",
            stderr(&out)
        );
        // Whatever is on disk now opens the volume, with the old or the new key.
        v.mount(&[]);
        assert_eq!(
            fs::read(v.p("data")).unwrap(),
            pattern(5, 20_000),
            "after a crash at {point}"
        );
        let key = v.status()["key_id"].as_str().unwrap().to_string();
        assert!(key == "kek" || key == "kek2");
        v.umount();
        // Put the old key back in place for the next round.
        let cur = v.uri.clone();
        ok(&v.run(["rotate", "--kek", &cur, v.cipher.to_str().unwrap()]));
    }
    ok(&v.run(["rotate", "--kek", &kek2, v.cipher.to_str().unwrap()]));
    v.mount(&[]);
    assert_eq!(v.status()["key_id"], "kek2");
}

#[test]
fn versionless_uri_follows_a_new_key_version() {
    let mut v = fast_vol();
    fs::write(v.p("f"), b"content").unwrap();
    assert_eq!(v.status()["key_version"], "1");
    ok(&v.run(["key", "rotate", "kek"]));
    assert!(
        wait_until(DEADLINE, || v.status()["key_version"] == "2"),
        "rewrapped to version 2: {}",
        v.status()
    );
    ok(&v.run(["key", "disable", "kek@1"]));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(v.status()["state"], "Available", "version 1 no longer needed");
    v.remount();
    assert_eq!(fs::read(v.p("f")).unwrap(), b"content");
    assert!(v
        .audit_events()
        .iter()
        .any(|e| e["event"] == "rotate" && e["auto"] == true && e["new_version"] == "2"));
}

#[test]
fn expired_key_keeps_unwrapping_but_is_not_wrapped_to() {
    let mut v = Vol::unmounted();
    // Wrapping to an expired or not-yet-active key is refused.
    let st = v.store.to_str().unwrap().to_string();
    let out = ok(&v.run([
        "key",
        "create",
        "--store",
        &st,
        "--bits",
        "2048",
        "--expiry",
        "2020-01-01T00:00:00Z",
        "old",
    ]));
    let old_uri = out.lines().last().unwrap().to_string();
    let e = stderr(&v.run(["init", "--kek", &old_uri, v.tmp.path().join("c2").to_str().unwrap()]));
    assert!(e.contains("expired"), "{e}");
    let out = ok(&v.run([
        "key",
        "create",
        "--store",
        &st,
        "--bits",
        "2048",
        "--activation",
        "2099-01-01T00:00:00Z",
        "future",
    ]));
    let fut = out.lines().last().unwrap().to_string();
    let e = stderr(&v.run(["init", "--kek", &fut, v.tmp.path().join("c3").to_str().unwrap()]));
    assert!(e.contains("not active until"), "{e}");
    // The volume's own key expires: it keeps working, with a warning and an audit record.
    ok(&v.run(["key", "set-dates", "--expiry", "2020-01-01T00:00:00Z", "kek@1"]));
    v.mount(&["--check-interval", INTERVAL]);
    fs::write(v.p("f"), b"still works").unwrap();
    assert!(wait_until(DEADLINE, || v.status()["reason"]
        .as_str()
        .unwrap_or("")
        .contains("expired")));
    assert_eq!(v.status()["state"], "Available");
    assert!(v.audit_events().iter().any(|e| e["event"] == "key_expired_in_use"));
    let e = stderr(&v.run(["rotate", "--kek", &v.uri, v.mnt.to_str().unwrap()]));
    assert!(e.contains("expired"), "rotation refuses to wrap to an expired key: {e}");
}

#[test]
fn soft_delete_makes_inaccessible_and_recover_restores() {
    let v = fast_vol();
    fs::write(v.p("f"), b"data").unwrap();
    ok(&v.run(["key", "delete", "kek"]));
    v.wait_state("Inaccessible", DEADLINE)
        .expect("deleted key -> Inaccessible");
    assert!(v.status()["reason"].as_str().unwrap().contains("deleted"));
    let e = stderr(&v.run(["key", "purge", "kek"]));
    assert!(e.contains("purge protection"), "{e}");
    let show = ok(&v.run(["key", "show", "kek"]));
    assert!(show.contains("deleted") && show.contains("recoverable until"), "{show}");
    ok(&v.run(["key", "recover", "kek"]));
    v.wait_state("Available", DEADLINE).expect("recovered key -> Available");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
    let ev: Vec<String> = v
        .audit_events()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    for needed in [
        "key_create",
        "init",
        "mount",
        "key_delete",
        "key_recover",
        "state_change",
    ] {
        assert!(ev.iter().any(|e| e == needed), "{needed} missing from audit: {ev:?}");
    }
}

#[test]
fn keyslots_recovery_and_revocation() {
    let mut v = fast_vol();
    fs::write(v.p("f"), b"escrowed").unwrap();
    let rec = v.new_key("recovery");
    ok(&v.run(["keyslot", "add", "--kek", &rec, v.mnt.to_str().unwrap()]));
    let list = ok(&v.run(["keyslot", "list", v.mnt.to_str().unwrap()]));
    assert!(list.contains("primary") && list.contains("recovery"), "{list}");
    let e = stderr(&v.run(["keyslot", "remove", "--slot", "0", v.mnt.to_str().unwrap()]));
    assert!(e.contains("only primary"), "{e}");
    // Revoking the key in use still makes the mount Inaccessible: the recovery slot does not
    // keep it open.
    ok(&v.run(["key", "disable", "kek"]));
    v.wait_state("Inaccessible", DEADLINE)
        .expect("primary revoked -> Inaccessible despite a recovery slot");
    v.umount();
    // A plain mount does not use recovery slots; an administrator's explicit --kek does.
    assert!(!v.mount_output(&[]).status.success());
    v.mount(&["--kek", &rec]);
    assert_eq!(fs::read(v.p("f")).unwrap(), b"escrowed");
    assert_eq!(v.status()["key_id"], "recovery");
    v.umount();
    ok(&v.run(["key", "enable", "kek"]));
    ok(&v.run(["keyslot", "remove", "--slot", "1", v.cipher.to_str().unwrap()]));
    let e = stderr(&v.run(["keyslot", "remove", "--slot", "0", v.cipher.to_str().unwrap()]));
    assert!(e.contains("last keyslot"), "{e}");
    let ev = v.audit_events();
    assert!(ev.iter().any(|e| e["event"] == "keyslot_add") && ev.iter().any(|e| e["event"] == "keyslot_remove"));
}

#[test]
fn audit_log_verification_catches_tampering() {
    let mut v = Vol::new();
    fs::write(v.p("f"), b"x").unwrap();
    v.umount();
    let out = ok(&v.run(["audit", "verify", v.audit.to_str().unwrap()]));
    assert!(out.contains("chain intact"), "{out}");
    let text = fs::read_to_string(&v.audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4, "{text}");
    assert!(!text.contains("PRIVATE KEY"));
    let edited = text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"failed\"", 1);
    assert_ne!(edited, text);
    fs::write(&v.audit, &edited).unwrap();
    let out = v.run(["audit", "verify", v.audit.to_str().unwrap()]);
    assert!(!out.status.success(), "an edited record must fail verification");
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain broken"));
    let mut removed = lines.clone();
    removed.remove(1);
    fs::write(&v.audit, removed.join("\n") + "\n").unwrap();
    assert!(
        !v.run(["audit", "verify", v.audit.to_str().unwrap()]).status.success(),
        "a removed record must fail"
    );
}

#[test]
fn unreachable_provider_is_tolerated_for_the_grace_period() {
    let mut v = Vol::unmounted();
    v.mount(&["--check-interval", INTERVAL, "--unreachable-grace", "2s"]);
    fs::write(v.p("f"), b"data").unwrap();
    // The key store disappears (an unmounted key volume): unreachable, not denied.
    let away = v.tmp.path().join("keys-away");
    fs::rename(&v.store, &away).unwrap();
    assert!(
        wait_until(DEADLINE, || v.status()["grace_remaining_secs"].is_u64()),
        "grace shown: {}",
        v.status()
    );
    let st = v.status();
    assert_eq!(st["state"], "Available", "still serving within the grace period: {st}");
    assert!(st["reason"].as_str().unwrap().contains("unreachable"), "{st}");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
    let t = v
        .wait_state("Inaccessible", Duration::from_secs(4))
        .expect("Inaccessible once the grace period ends");
    assert!(t >= Duration::from_millis(800), "not before the grace period: {t:?}");
    assert!(v.status()["reason"]
        .as_str()
        .unwrap()
        .contains("unreachable for more than"));
    assert_eq!(errno(fs::read(v.p("f"))), EACCES);
    fs::rename(&away, &v.store).unwrap();
    v.wait_state("Available", DEADLINE)
        .expect("back when the provider is reachable again");
    assert_eq!(fs::read(v.p("f")).unwrap(), b"data");
}
