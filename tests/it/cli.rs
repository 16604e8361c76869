//! The command-line interface a user sees.

use std::fs;

use crate::common::*;
use rustix::process::Signal;

#[test]
fn key_create_prints_uri_last_and_list_shows_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("ks");
    let out = ok(&cmkfs([
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "db-kek",
        "--bits",
        "2048",
    ]));
    let last = out.lines().last().unwrap();
    assert_eq!(last, format!("local:{}/db-kek", store.display()));
    // CMKFS_KEYSTORE is honoured.
    let out = std::process::Command::new(BIN)
        .env("CMKFS_KEYSTORE", &store)
        .args(["key", "list"])
        .output()
        .unwrap();
    let list = ok(&out);
    assert!(
        list.contains("db-kek") && list.contains("2048") && list.contains("enabled"),
        "{list}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&cmkfs([
        "key",
        "list",
        "--json",
        "--store",
        store.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(json[0]["name"], "db-kek");
    assert_eq!(json[0]["versions"][0]["version"], 1);
    // Refusals with reasons.
    let e = stderr(&cmkfs([
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "small",
        "--bits",
        "1024",
    ]));
    assert!(e.contains("RSA-1024 is not allowed"), "{e}");
    let e = stderr(&cmkfs([
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "db-kek",
        "--bits",
        "2048",
    ]));
    assert!(e.contains("already exists"), "{e}");
    let e = stderr(&cmkfs([
        "key",
        "create",
        "--store",
        store.to_str().unwrap(),
        "x",
        "--expiry",
        "tomorrow",
    ]));
    assert!(e.contains("RFC 3339"), "{e}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &["key", "create"][..],
        &["key", "list"],
        &["init"],
        &["mount"],
        &["umount"],
        &["status"],
        &["key"],
    ] {
        let mut args: Vec<&str> = sub.to_vec();
        args.push("--help");
        let out = ok(&cmkfs(&args));
        assert!(out.contains("Usage:"), "{sub:?} --help: {out}");
    }
}

#[test]
fn init_refuses_non_empty_dir_and_bad_uris() {
    let tmp = tempfile::tempdir().unwrap();
    let uri = create_key(&tmp.path().join("ks"), "k");
    let d = tmp.path().join("full");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("x"), b"x").unwrap();
    let e = stderr(&cmkfs(["init", "--kek", &uri, d.to_str().unwrap()]));
    assert!(e.contains("not empty"), "{e}");
    let e = stderr(&cmkfs([
        "init",
        "--kek",
        "kms:nothing",
        tmp.path().join("n").to_str().unwrap(),
    ]));
    assert!(e.contains("unknown key provider scheme"), "{e}");
    let e = stderr(&cmkfs([
        "init",
        "--kek",
        "local:relative/k",
        tmp.path().join("n2").to_str().unwrap(),
    ]));
    assert!(e.contains("absolute"), "{e}");
}

#[test]
fn pem_key_file_as_kek_and_status() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    create_key(&tmp.path().join("ks"), "k");
    let pem = tmp.path().join("my.pem");
    fs::copy(tmp.path().join("ks/k/v1.pem"), &pem).unwrap();
    let cipher = tmp.path().join("c");
    let mnt = tmp.path().join("m");
    fs::create_dir(&mnt).unwrap();
    // A bare path to a PEM file is accepted as a KEK.
    ok(&cmkfs([
        "init",
        "--kek",
        pem.to_str().unwrap(),
        cipher.to_str().unwrap(),
    ]));
    ok(&cmkfs([
        "mount",
        "--log-file",
        tmp.path().join("log").to_str().unwrap(),
        cipher.to_str().unwrap(),
        mnt.to_str().unwrap(),
    ]));
    fs::write(mnt.join("f"), b"pem").unwrap();
    let human = ok(&cmkfs(["status", mnt.to_str().unwrap()]));
    assert!(human.contains("Available") && human.contains("pem:"), "{human}");
    let v: serde_json::Value = serde_json::from_str(&ok(&cmkfs(["status", "--json", mnt.to_str().unwrap()]))).unwrap();
    assert_eq!(v["state"], "Available");
    assert_eq!(v["provider"], "pem");
    assert_eq!(v["key_version"], "1");
    assert_eq!(v["kek_uri"], format!("pem:{}", pem.display()));
    let hdr: serde_json::Value = serde_json::from_slice(&fs::read(cipher.join("cmkfs.volume")).unwrap()).unwrap();
    assert_eq!(v["volume_id"], hdr["body"]["volume_id"]);
    let pid = v["pid"].as_u64().unwrap();
    ok(&cmkfs(["umount", mnt.to_str().unwrap()]));
    assert!(!alive(pid), "daemon exited after umount");
    // Removing the key file is a refusal, not a hang.
    fs::remove_file(&pem).unwrap();
    let e = stderr(&cmkfs(["mount", cipher.to_str().unwrap(), mnt.to_str().unwrap()]));
    assert!(e.contains("access denied") && e.contains("my.pem"), "{e}");
}

#[test]
fn foreground_mount_unmounts_on_sigterm() {
    require_fuse();
    let v = Vol::unmounted();
    let mut child = std::process::Command::new(BIN)
        .env("CMKFS_CONFIG_DIR", v.tmp.path().join("config"))
        .args(["mount", "--foreground"])
        .arg(&v.cipher)
        .arg(&v.mnt)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mp = v.mnt.clone();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || ok_status(&mp)),
        "foreground mount came up"
    );
    fs::write(v.p("x"), b"y").unwrap();
    let _ = send_signal(child.id() as i32, Signal::TERM);
    let st = child.wait().unwrap();
    assert!(st.success(), "clean exit on SIGTERM: {st}");
    assert!(!v.p("x").exists(), "unmounted");
    assert!(v.c("x").exists());
}

fn ok_status(mp: &std::path::Path) -> bool {
    cmkfs(["status", mp.to_str().unwrap()]).status.success()
}

/// Running (a zombie has exited; its reaping is up to whoever adopted it).
fn alive(pid: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
        .unwrap_or(false)
}

#[test]
fn killed_daemon_mount_can_be_unmounted_and_remounted() {
    require_fuse();
    let mut v = Vol::new();
    let data = pattern(77, 100_000);
    {
        use std::io::Write;
        let mut f = fs::File::create(v.p("durable")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let st: serde_json::Value =
        serde_json::from_str(&ok(&cmkfs(["status", "--json", v.mnt.to_str().unwrap()]))).unwrap();
    let pid = st["pid"].as_i64().unwrap() as i32;
    let _ = send_signal(pid, Signal::KILL);
    assert!(wait_until(std::time::Duration::from_secs(5), || !alive(pid as u64)));
    // The dead mount answers ENOTCONN; mounting over it names the problem.
    let e = stderr(&v.mount_output(&[]));
    assert!(e.contains("busy") && e.contains("cmkfs umount"), "{e}");
    let e = stderr(&cmkfs(["status", v.mnt.to_str().unwrap()]));
    assert!(e.contains("does not answer"), "{e}");
    ok(&cmkfs(["umount", v.mnt.to_str().unwrap()]));
    v.mount(&[]);
    assert_eq!(
        fs::read(v.p("durable")).unwrap(),
        data,
        "fsynced data survives a killed daemon"
    );
}

/// The man page and the shell completions come from the same clap definitions as `--help`:
/// every subcommand `--help` lists is in cmkfs(1) and has a page of its own, and bash
/// accepts the completion script.
#[test]
fn man_pages_and_completions_agree_with_help() {
    let help = ok(&cmkfs(["--help"]));
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|&c| c != "help")
        .collect();
    assert!(
        subcommands.len() > 10 && subcommands.contains(&"mount") && subcommands.contains(&"man"),
        "{help}"
    );
    let man = ok(&cmkfs(["man"]));
    assert!(man.starts_with(".ie") && man.contains(".TH cmkfs 1"), "roff: {man}");
    let dir = tempfile::tempdir().unwrap();
    ok(&cmkfs([
        std::ffi::OsStr::new("man"),
        std::ffi::OsStr::new("--dir"),
        dir.path().as_os_str(),
    ]));
    for c in &subcommands {
        assert!(
            man.contains(&format!("cmkfs\\-{}(1)", c.replace('-', "\\-"))),
            "cmkfs(1) lists {c}"
        );
        assert!(dir.path().join(format!("cmkfs-{c}.1")).exists(), "cmkfs-{c}(1) written");
    }
    let script = ok(&cmkfs(["completions", "bash"]));
    let out = std::process::Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p cmkfs"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("_cmkfs"),
        "{out:?}"
    );
    assert!(
        !cmkfs(["completions", "tcsh"]).status.success(),
        "an unknown shell is refused"
    );
}
