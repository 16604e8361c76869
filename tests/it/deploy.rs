//! Deployment: mounting a configured volume by name, the mount helper that mount(8), fstab
//! and systemd's fstab generator run for type `fuse.cmkfs`, and its option handling.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// The volume's record file and name (`cmkfs init` wrote exactly one).
fn record(v: &Vol) -> (String, PathBuf) {
    let list: serde_json::Value = serde_json::from_str(&ok(&v.run([
        OsStr::new("volume"),
        OsStr::new("list"),
        OsStr::new("--json"),
    ])))
    .unwrap();
    let r = &list.as_array().unwrap()[0];
    (
        r["name"].as_str().unwrap().to_string(),
        PathBuf::from(r["file"].as_str().unwrap()),
    )
}

fn add_mount_section(file: &Path, body: &str) {
    let mut t = std::fs::read_to_string(file).unwrap();
    t.push_str("\n[mount]\n");
    t.push_str(body);
    std::fs::write(file, t).unwrap();
}

fn is_mounted(mp: &Path) -> bool {
    Command::new("mountpoint").arg("-q").arg(mp).status().unwrap().success()
}

/// The mount helper under its installed name, in the test's own directory.
fn helper(v: &Vol) -> PathBuf {
    let h = v.tmp.path().join("mount.fuse.cmkfs");
    if !h.exists() {
        std::os::unix::fs::symlink(BIN, &h).unwrap();
    }
    h
}

fn run_helper(v: &Vol, args: &[&OsStr]) -> std::process::Output {
    let mut c = Command::new(helper(v));
    c.args(args).env("CMKFS_AUDIT_LOG", &v.audit);
    for (k, val) in &v.env {
        c.env(k, val);
    }
    c.output().unwrap()
}

#[test]
fn mount_by_name_uses_the_configured_mountpoint_and_options() {
    let mut v = Vol::unmounted();
    let (name, file) = record(&v);
    add_mount_section(
        &file,
        &format!(
            "mountpoint = {:?}\ncheck_interval = \"2s\"\nthreads = 2\n",
            v.mnt.to_str().unwrap()
        ),
    );
    ok(&v.run(["mount", &name]));
    v.mounted = true;
    let st = v.status();
    assert_eq!(st["check_interval"], "2s", "{st}");
    std::fs::write(v.p("f"), b"by name").unwrap();
    v.umount();
    // The command line overrides the configuration.
    ok(&v.run(["mount", "--check-interval", "3s", &name]));
    v.mounted = true;
    assert_eq!(v.status()["check_interval"], "3s");
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"by name");
    v.umount();
    // Unknown names and settings are refused with what to do.
    let e = stderr(&v.run(["mount", "no-such-volume"]));
    assert!(e.contains("not a configured volume"), "{e}");
    let t = std::fs::read_to_string(&file)
        .unwrap()
        .replace("threads = 2", "threads = 2\nbogus = 1");
    std::fs::write(&file, t).unwrap();
    let e = stderr(&v.run(["mount", &name]));
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn mount_helper_maps_options_and_refuses_unknown_ones() {
    let mut v = Vol::unmounted();
    let (name, _) = record(&v);
    let opts = format!(
        "volume={name},allow_other,check_interval=2s,nofail,_netdev,x-systemd.requires=network-online.target,rw"
    );
    let out = run_helper(
        &v,
        &[
            v.cipher.as_os_str(),
            v.mnt.as_os_str(),
            OsStr::new("-o"),
            OsStr::new(&opts),
        ],
    );
    ok(&out);
    v.mounted = true;
    assert_eq!(v.status()["check_interval"], "2s");
    std::fs::write(v.p("f"), b"through the helper").unwrap();
    v.umount();
    for (o, want) in [
        ("bogus=1", "unknown mount option 'bogus'"),
        ("ro", "read-only"),
        ("suid", "nosuid"),
        ("volume=someone-else", "no such volume"),
        ("check_interval", "needs a value"),
    ] {
        let out = run_helper(
            &v,
            &[v.cipher.as_os_str(), v.mnt.as_os_str(), OsStr::new("-o"), OsStr::new(o)],
        );
        let e = stderr(&out);
        assert!(!out.status.success() && e.contains(want), "-o {o}: {e}");
        assert!(!is_mounted(&v.mnt), "-o {o} left a mount behind");
    }
    // A volume name that belongs to another cipher directory.
    let w = Vol::unmounted();
    let (wname, _) = record(&w);
    let mut c = Command::new(helper(&v));
    c.args([v.cipher.as_os_str(), v.mnt.as_os_str(), OsStr::new("-o")])
        .arg(format!("volume={wname}"))
        .env("CMKFS_CONFIG_DIR", config_dir_of(&w));
    let out = c.output().unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("is configured for"),
        "{}",
        stderr(&out)
    );
}

/// `mount -t fuse.cmkfs` and `mount -a` with an fstab line run the installed helper
/// (/sbin/mount.fuse.cmkfs, created here when it is missing, as scripts/setup.sh installs it).
#[test]
fn mount_t_fuse_cmkfs_and_fstab_through_mount8() {
    let mut v = Vol::unmounted();
    let (name, _) = record(&v);
    let installed = Path::new("/sbin/mount.fuse.cmkfs");
    let created = if installed.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(BIN, installed).unwrap();
        true
    } else {
        false
    };
    struct Remove(bool);
    impl Drop for Remove {
        fn drop(&mut self) {
            if self.0 {
                let _ = std::fs::remove_file("/sbin/mount.fuse.cmkfs");
            }
        }
    }
    let _guard = Remove(created);
    let env: Vec<(String, std::ffi::OsString)> = v
        .env
        .iter()
        .cloned()
        .chain([("CMKFS_AUDIT_LOG".to_string(), v.audit.clone().into_os_string())])
        .collect();
    let out = Command::new("mount")
        .args(["-t", "fuse.cmkfs"])
        .arg(&v.cipher)
        .arg(&v.mnt)
        .arg("-o")
        .arg(format!("volume={name},check_interval=2s"))
        .envs(env.iter().map(|(k, val)| (k, val)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.cmkfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v.mounted = true;
    std::fs::write(v.p("f"), b"mount(8)").unwrap();
    assert!(Command::new("umount").arg(&v.mnt).status().unwrap().success());
    assert!(wait_until(Duration::from_secs(10), || !is_mounted(&v.mnt)));
    v.mounted = false;

    let fstab = v.tmp.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} fuse.cmkfs volume={name},nofail,_netdev,x-systemd.requires=network-online.target 0 0\n",
            v.cipher.display(),
            v.mnt.display()
        ),
    )
    .unwrap();
    let mount_all = || {
        Command::new("mount")
            .arg("-a")
            .arg("-T")
            .arg(&fstab)
            .envs(env.iter().map(|(k, val)| (k, val)))
            .output()
            .unwrap()
    };
    let out = mount_all();
    assert!(
        out.status.success(),
        "mount -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v.mounted = true;
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"mount(8)");
    // mount(8) recognises the live mount as the fstab entry's: a second `mount -a` does nothing.
    let again = mount_all();
    assert!(
        again.status.success(),
        "second mount -a: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines()
            .any(|l| l.contains(v.mnt.to_str().unwrap()) && l.contains(" - fuse.cmkfs ")),
        "the mount's type is fuse.cmkfs"
    );
    v.umount();
}

/// Reads notifications from `rx` until one satisfies `want` (returned) or the deadline.
fn recv_until(
    rx: &std::os::unix::net::UnixDatagram,
    deadline: Duration,
    want: impl Fn(&str) -> bool,
) -> Option<String> {
    let end = std::time::Instant::now() + deadline;
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        rx.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match rx.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if want(&m) {
                    return Some(m);
                }
            }
            Err(_) => return None,
        }
    }
    None
}

/// The daemon speaks systemd's notification protocol on a real notify socket (what a
/// `Type=notify` unit gets): READY once the mount is live, STATUS following the volume's
/// state, WATCHDOG pings only while the key check loop is alive, STOPPING at unmount.
#[test]
fn systemd_notify_ready_status_watchdog_stopping() {
    let v = Vol::unmounted();
    let sock = v.tmp.path().join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    let stall = v.tmp.path().join("stall");
    let mut daemon = vol_command(
        &v,
        [
            OsStr::new("mount"),
            OsStr::new("--foreground"),
            OsStr::new("--check-interval"),
            OsStr::new("1s"),
            OsStr::new("--provider-timeout"),
            OsStr::new("1s"),
            v.cipher.as_os_str(),
            v.mnt.as_os_str(),
        ],
        &[
            ("NOTIFY_SOCKET", sock.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("400000")),
            ("CMKFS_TEST_STALL_CHECK_WHILE", stall.as_os_str()),
        ],
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let t = Duration::from_secs(30);
    let ready = recv_until(&rx, t, |m| m.contains("READY=1")).expect("READY=1");
    assert!(ready.contains("STATUS=Available"), "{ready}");
    assert!(is_mounted(&v.mnt), "READY only once the mount is live");
    for _ in 0..2 {
        recv_until(&rx, t, |m| m == "WATCHDOG=1").expect("watchdog pings while checks run");
    }

    // Revoking the key shows in STATUS; restoring it too.
    ok(&v.run(["key", "disable", "kek", "--store", v.store.to_str().unwrap()]));
    let s = recv_until(&rx, t, |m| m.starts_with("STATUS=Inaccessible")).expect("STATUS=Inaccessible");
    assert!(s.contains("disabled"), "the reason is shown: {s}");
    ok(&v.run(["key", "enable", "kek", "--store", v.store.to_str().unwrap()]));
    recv_until(&rx, t, |m| m == "STATUS=Available").expect("STATUS=Available after restore");

    // A key check that hangs (as in an uninterruptible read): the daemon's own watchdog
    // revokes, and systemd's watchdog stops being fed, so systemd would restart it.
    std::fs::write(&stall, b"").unwrap();
    recv_until(&rx, t, |m| m.starts_with("STATUS=Inaccessible")).expect("watchdog revoke while stalled");
    let ping = recv_until(&rx, Duration::from_millis(1500), |m| m == "WATCHDOG=1");
    assert_eq!(ping, None, "no WATCHDOG=1 while the check loop is stalled");
    std::fs::remove_file(&stall).unwrap();
    recv_until(&rx, t, |m| m == "STATUS=Available").expect("checks resume: Available");
    recv_until(&rx, t, |m| m == "WATCHDOG=1").expect("pings resume");

    ok(&v.run([OsStr::new("umount"), v.mnt.as_os_str()]));
    recv_until(&rx, t, |m| m.contains("STOPPING=1")).expect("STOPPING=1");
    assert!(daemon.wait().unwrap().success());
}

/// The shipped unit file (packaging/systemd/cmkfs@.service) passes `systemd-analyze verify`
/// as an instance, with its ExecStart pointing at the binary under test; and a unit with a
/// broken directive does not (so the check can fail). systemd itself cannot run as the
/// service manager in this test environment (PID 1 is not systemd), so the unit's runtime
/// behaviour is covered by the notify-protocol test above.
#[test]
fn systemd_unit_verifies() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/systemd/cmkfs@.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "{unit}");
    assert!(
        !unit
            .lines()
            .any(|l| l.starts_with("ProtectSystem=") || l.starts_with("PrivateTmp=")),
        "no option that gives the service a private mount namespace (the mount would be invisible)"
    );
    let d = tempfile::tempdir().unwrap();
    let verify = |text: &str| {
        let f = d.path().join("cmkfs@pgdata.service");
        std::fs::write(&f, text.replace("/usr/local/bin/cmkfs", BIN)).unwrap();
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&f)
            .output()
            .expect("systemd-analyze (package systemd)")
    };
    let out = verify(&unit);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", stderr(&out));
    let out = verify(&unit.replace("Type=notify", "Type=notifyy"));
    assert!(!out.stderr.is_empty(), "a bad directive is reported");
}

/// A metric's value from Prometheus text (`name` with its labels, exactly as printed).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// `cmkfs metrics` is valid Prometheus text (promtool, from Debian's prometheus package,
/// checks it), counts what the mount did, and follows a revocation within one check interval.
#[test]
fn metrics_are_valid_prometheus_text_and_follow_the_state() {
    let mut v = Vol::unmounted();
    v.mount(&["--check-interval", "1s"]);
    let data = pattern(7, 100_000);
    std::fs::write(v.p("f"), &data).unwrap();
    // O_DIRECT: through the daemon, not the kernel's page cache (which the write filled).
    let mut back = vec![];
    std::io::Read::read_to_end(
        &mut std::os::unix::fs::OpenOptionsExt::custom_flags(std::fs::OpenOptions::new().read(true), libc::O_DIRECT)
            .open(v.p("f"))
            .unwrap(),
        &mut back,
    )
    .unwrap();
    assert_eq!(back, data);
    let _open = std::fs::File::open(v.p("f")).unwrap();
    let get = || ok(&v.run([OsStr::new("metrics"), v.mnt.as_os_str()]));
    let promtool = |text: &str| {
        use std::io::Write;
        let mut c = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (scripts/test.sh installs it)");
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    };
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &get(),
            "cmkfs_check_duration_seconds_count"
        ) >= 1.0),
        "a key check is counted within the interval"
    );
    let t = get();
    promtool(&t);
    assert_eq!(metric(&t, "cmkfs_state{state=\"Available\"}"), 1.0);
    assert!(metric(&t, "cmkfs_written_bytes_total") >= data.len() as f64, "{t}");
    assert!(metric(&t, "cmkfs_read_bytes_total") >= data.len() as f64, "{t}");
    assert!(metric(&t, "cmkfs_open_files") >= 1.0, "{t}");
    assert!(metric(&t, "cmkfs_daemon_resident_bytes") > 1e6, "{t}");
    assert!(metric(&t, "cmkfs_check_duration_seconds_count") >= 1.0, "{t}");
    assert_eq!(metric(&t, "cmkfs_state_changes_total"), 0.0);

    // A damaged block shows up as EIO by cause.
    assert_eq!(metric(&t, "cmkfs_eio_total{cause=\"block_auth\"}"), 0.0);
    std::fs::write(v.p("g"), pattern(8, 8192)).unwrap();
    flip(&v.c("g"), data_off(1) + 10, 1);
    let g = std::os::unix::fs::OpenOptionsExt::custom_flags(std::fs::OpenOptions::new().read(true), libc::O_DIRECT)
        .open(v.p("g"))
        .unwrap();
    let mut b = vec![0u8; 4096];
    assert_eq!(
        errno_of(std::os::unix::fs::FileExt::read_at(&g, &mut b, 4096)),
        Some(libc::EIO),
        "the damaged block is EIO"
    );
    assert!(metric(&get(), "cmkfs_eio_total{cause=\"block_auth\"}") >= 1.0);

    // Revocation: the gauge flips within one check interval (plus the provider call).
    ok(&v.run(["key", "disable", "kek", "--store", v.store.to_str().unwrap()]));
    let t0 = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &get(),
            "cmkfs_state{state=\"Inaccessible\"}"
        ) == 1.0),
        "metrics never showed Inaccessible"
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "took {:?}", t0.elapsed());
    assert!(std::fs::read(v.p("f")).is_err(), "refused while Inaccessible");
    let t = get();
    promtool(&t);
    assert_eq!(metric(&t, "cmkfs_state{state=\"Available\"}"), 0.0);
    assert_eq!(metric(&t, "cmkfs_state_changes_total"), 1.0);
    assert!(metric(&t, "cmkfs_refused_operations_total") >= 1.0, "{t}");
    assert!(metric(&t, "cmkfs_checks_total{outcome=\"failed\"}") >= 1.0, "{t}");
    ok(&v.run(["key", "enable", "kek", "--store", v.store.to_str().unwrap()]));
    assert!(wait_until(Duration::from_secs(10), || metric(
        &get(),
        "cmkfs_state{state=\"Available\"}"
    ) == 1.0));
    assert_eq!(metric(&get(), "cmkfs_state_changes_total"), 2.0);
    drop((_open, g));
    v.umount();
}
