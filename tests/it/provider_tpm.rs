//! The `tpm:` key provider against a real software TPM (swtpm), provisioned with tpm2-tools.
//! Each test starts its own swtpm on free loopback ports with its state in a temporary
//! directory; `scripts/providers/tpm.sh` installs swtpm and tpm2-tools.
#![cfg(feature = "tpm")]

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::open_provider as open;
use crate::common::*;
use cmkfs::crypto::SecretKey;
use cmkfs::kms::{self, ErrorKind, KeyProvider, ProviderError};
use rustix::process::Signal;

const SETUP: &str = "scripts/providers/tpm.sh";
/// Attributes of the test keys: `noda` so that wrong-auth tests do not lock the TPM out.
const KEY_ATTRS: &str = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|noda";

fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(found, "{name} is not installed: run {SETUP} (as root) first");
}

/// A swtpm process serving TPM 2.0 on loopback, stopped on drop.
struct Swtpm {
    dir: tempfile::TempDir,
    port: u16,
    ctrl: u16,
    child: Option<Child>,
}

impl Swtpm {
    fn start() -> Swtpm {
        for t in [
            "swtpm",
            "tpm2_createprimary",
            "tpm2_create",
            "tpm2_load",
            "tpm2_evictcontrol",
            "tpm2_flushcontext",
        ] {
            require_tool(t);
        }
        // A port can be taken by another process between probe and bind (common/ports.rs): try a
        // few pairs.
        Swtpm::start_retry(5)
    }

    fn start_retry(tries: u32) -> Swtpm {
        for _ in 0..tries {
            // The swtpm TCTI reaches the control channel at port + 1.
            let port = free_ports(2);
            let mut s = Swtpm {
                dir: tempfile::Builder::new().prefix("cmkfs-swtpm-").tempdir().unwrap(),
                port,
                ctrl: port + 1,
                child: None,
            };
            if s.spawn() {
                return s;
            }
        }
        panic!("swtpm did not start (see {SETUP})");
    }

    /// Starts swtpm on this instance's ports and state; true once it accepts connections.
    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new("swtpm");
        // Dies with the test thread that started it, even if the test binary is killed.
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is sound: it makes one prctl system call, allocates nothing
        // and takes no lock.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let _ = rustix::process::set_parent_process_death_signal(Some(Signal::TERM));
                Ok(())
            });
        }
        let child = cmd
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.dir.path().display()))
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.ctrl))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run swtpm ({e}): run {SETUP} first"));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("swtpm exited at start: {st}");
                self.child = None;
                return false;
            }
            // The control port is probed, never the server port: swtpm serves one client.
            if TcpStream::connect(("127.0.0.1", self.ctrl)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    /// Stops swtpm (SIGTERM, so that its state is saved), waiting for it to exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = send_signal(c.id() as i32, Signal::TERM);
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL: swtpm dies without saving anything (its NV state was written when it changed).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGSTOP / SIGCONT: a TPM that accepts connections but does not answer.
    fn signal(&self, sig: Signal) {
        let pid = self.child.as_ref().expect("swtpm running").id() as i32;
        send_signal(pid, sig).unwrap();
    }

    /// Starts it again on the same ports and state (the persisted keys survive).
    fn restart(&mut self) {
        assert!(self.spawn(), "swtpm did not restart");
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a tpm2-tools command against this TPM; panics with its output on failure.
    fn tool(&self, args: &[&str]) -> String {
        let out = self.tool_output(args);
        assert!(
            out.status.success(),
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tool_output(&self, args: &[&str]) -> std::process::Output {
        require_tool(args[0]);
        Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", self.tcti())
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): run {SETUP} first", args[0]))
    }

    /// swtpm has three transient object slots and no resource manager: flush after each step.
    fn flush(&self) {
        self.tool(&["tpm2_flushcontext", "-t"]);
    }

    /// The storage primary (ECC: created in milliseconds; the same template gives the same
    /// key again, so it can be recreated at will).
    fn primary(&self) {
        self.tool(&["tpm2_createprimary", "-Q", "-C", "o", "-G", "ecc", "-c", "primary.ctx"]);
        self.flush();
    }

    /// Creates an RSA decryption key (OAEP-SHA256, noda) with the given auth value under the
    /// primary, keeps its blobs as `NAME.pub`/`NAME.priv`, and persists it at `handle`.
    fn create_key(&self, name: &str, bits: u32, auth: Option<&str>, handle: &str) {
        self.create_key_with(name, &format!("rsa{bits}:oaep-sha256"), KEY_ATTRS, auth);
        self.persist(name, handle);
    }

    fn create_key_with(&self, name: &str, alg: &str, attrs: &str, auth: Option<&str>) {
        self.create_key_policy(name, alg, attrs, auth, None);
    }

    /// Like `create_key_with`, with an authPolicy (`tpm2_create -L FILE`).
    fn create_key_policy(&self, name: &str, alg: &str, attrs: &str, auth: Option<&str>, policy: Option<&str>) {
        if !self.path("primary.ctx").exists() {
            self.primary();
        }
        let (public, private) = (format!("{name}.pub"), format!("{name}.priv"));
        let mut args = vec!["tpm2_create", "-Q", "-C", "primary.ctx", "-G", alg, "-a", attrs];
        let p = auth.map(|a| format!("str:{a}"));
        if let Some(p) = &p {
            args.extend(["-p", p]);
        }
        if let Some(f) = policy {
            args.extend(["-L", f]);
        }
        args.extend(["-u", &public, "-r", &private]);
        self.tool(&args);
        self.flush();
    }

    /// Loads the kept blobs of `name` and persists the key at `handle` (also "restore").
    fn persist(&self, name: &str, handle: &str) {
        let (public, private, ctx) = (format!("{name}.pub"), format!("{name}.priv"), format!("{name}.ctx"));
        self.primary();
        self.tool(&[
            "tpm2_load",
            "-Q",
            "-C",
            "primary.ctx",
            "-u",
            &public,
            "-r",
            &private,
            "-c",
            &ctx,
        ]);
        self.flush();
        self.tool(&["tpm2_evictcontrol", "-Q", "-C", "o", "-c", &ctx, handle]);
        self.flush();
    }

    /// Removes the persistent key (revocation).
    fn evict(&self, handle: &str) {
        self.tool(&["tpm2_evictcontrol", "-Q", "-C", "o", "-c", handle]);
    }

    fn uri(&self, handle: &str, auth_file: Option<&Path>) -> String {
        let mut u = format!("tpm:{handle}?tcti={}", self.tcti());
        if let Some(f) = auth_file {
            u.push_str(&format!("&auth=file:{}", f.display()));
        }
        u
    }

    fn write_auth(&self, name: &str, value: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unwrap_err(p: &dyn KeyProvider, version: &str, c: &[u8]) -> ProviderError {
    match p.unwrap(version, c) {
        Ok(_) => panic!("unwrap through {} succeeded", p.uri()),
        Err(e) => e,
    }
}

/// Wrap locally, unwrap in the TPM, same key back.
fn roundtrip(p: &dyn KeyProvider) -> (String, Vec<u8>) {
    let s = SecretKey::random();
    let w = p.wrap(&s).unwrap();
    let u = p.unwrap(&w.key.version, &w.ciphertext).unwrap();
    assert_eq!(
        u.secret.expose(),
        s.expose(),
        "the TPM unwraps what was wrapped locally"
    );
    assert_eq!(u.key.fingerprint, w.key.fingerprint);
    (w.key.version, w.ciphertext)
}

/// Mount, write, online rotation from an RSA-2048 key to an RSA-3072 key at another handle,
/// revoke by evicting the persistent handle (EACCES, Inaccessible with the reason), restore
/// by persisting the same key again (Available with the same data), remount.
#[test]
fn lifecycle_evict_and_repersist() {
    let tpm = Swtpm::start();
    tpm.create_key("k2048", 2048, Some("pw-2048"), "0x81000001");
    tpm.create_key("k3072", 3072, Some("pw-3072"), "0x81000002");
    let a1 = tpm.write_auth("auth1", "pw-2048");
    let a2 = tpm.write_auth("auth2", "pw-3072");
    let uri1 = tpm.uri("0x81000001", Some(&a1));
    let uri2 = tpm.uri("0x81000002", Some(&a2));
    let mut v = Vol::with_kek(&uri1, &[]);
    let revoked = provider_lifecycle(
        &mut v,
        Some(&uri2),
        || tpm.evict("0x81000002"),
        || tpm.persist("k3072", "0x81000002"),
    );
    let reason = revoked["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("0x81000002") && reason.contains("evicted") && reason.contains("access denied"),
        "the status names the handle and the eviction: {revoked}"
    );
}

/// Each way a TPM refuses, and what it is classified as.
#[test]
fn errors_are_classified() {
    let tpm = Swtpm::start();
    tpm.create_key("a", 2048, Some("right"), "0x81000001");
    tpm.create_key("b", 2048, None, "0x81000002");
    let good = tpm.write_auth("good", "right");
    let bad = tpm.write_auth("bad", "wrong");

    let p = open(&tpm.uri("0x81000001", Some(&good)));
    let info = p.current().unwrap();
    assert_eq!(
        (info.provider.as_str(), info.key_id.as_str(), info.bits),
        ("tpm", "0x81000001", Some(2048))
    );
    assert_eq!(
        info.version,
        info.fingerprint.as_ref().unwrap()[..16],
        "the version is the fingerprint's prefix"
    );
    let (version, ct) = roundtrip(&*p);

    // Wrong auth value: denied, saying so; again and again (noda: no lockout), then fine.
    let wrong = open(&tpm.uri("0x81000001", Some(&bad)));
    for _ in 0..4 {
        let e = unwrap_err(&*wrong, &version, &ct);
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(
            e.message.contains("auth value") && e.message.contains(&bad.display().to_string()),
            "{e}"
        );
    }
    let none = open(&tpm.uri("0x81000001", None));
    assert_eq!(unwrap_err(&*none, &version, &ct).kind, ErrorKind::Denied);
    assert_eq!(p.unwrap(&version, &ct).unwrap().key.version, version);

    // Not this key's ciphertext (right size), wrong size, zeros.
    let other = open(&tpm.uri("0x81000002", None));
    let (_, ct_b) = roundtrip(&*other);
    let e = unwrap_err(&*p, &version, &ct_b);
    assert_eq!(e.kind, ErrorKind::UnwrapFailed, "{e}");
    let e = unwrap_err(&*p, &version, &ct[..100]);
    assert_eq!(e.kind, ErrorKind::UnwrapFailed, "{e}");
    let mut flipped = ct.clone();
    flipped[7] ^= 1;
    assert_eq!(unwrap_err(&*p, &version, &flipped).kind, ErrorKind::UnwrapFailed);

    // A different key persisted at the handle: denied without trying it.
    let e = unwrap_err(&*other, &version, &ct);
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("replaced"), "{e}");

    // OAEP hash contradicting the key's fixed scheme; a missing auth file.
    let e = open(&format!("{}&oaep=sha1", tpm.uri("0x81000001", Some(&good))))
        .current()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Misconfigured, "{e}");
    let e = unwrap_err(&*open(&tpm.uri("0x81000001", Some(&tpm.path("nope")))), &version, &ct);
    assert_eq!(e.kind, ErrorKind::Misconfigured, "{e}");

    // A restricted decryption key (a storage parent) cannot be a KEK.
    tpm.create_key_with(
        "storage",
        "rsa2048",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda",
        None,
    );
    tpm.persist("storage", "0x81000003");
    let e = open(&tpm.uri("0x81000003", None)).current().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Misconfigured, "{e}");

    // Evicted: denied, naming the handle.
    tpm.evict("0x81000001");
    let e = unwrap_err(&*p, &version, &ct);
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(
        e.to_string().contains("0x81000001") && e.message.contains("evicted"),
        "{e}"
    );
    assert_eq!(p.current().unwrap_err().kind, ErrorKind::Denied);
    tpm.persist("a", "0x81000001");
    assert_eq!(
        p.unwrap(&version, &ct).unwrap().key.version,
        version,
        "re-persisted: usable again"
    );

    // Storage hierarchy disabled (platform authority): denied; enabled again: usable.
    tpm.tool(&["tpm2_hierarchycontrol", "-C", "p", "shEnable", "clear"]);
    let e = unwrap_err(&*p, &version, &ct);
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    tpm.tool(&["tpm2_hierarchycontrol", "-C", "p", "shEnable", "set"]);
    p.unwrap(&version, &ct).unwrap();
}

/// A key without `noda`: wrong auth values put the TPM in dictionary-attack lockout, which is
/// reported as denied with what to do; even the right value is refused until it is cleared.
#[test]
fn lockout_is_denied() {
    let tpm = Swtpm::start();
    tpm.create_key_with(
        "da",
        "rsa2048:oaep-sha256",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt",
        Some("right"),
    );
    tpm.persist("da", "0x81000001");
    // A small lockout threshold, independent of swtpm's defaults.
    tpm.tool(&["tpm2_dictionarylockout", "-s", "-n", "2", "-t", "600", "-l", "600"]);
    let good = tpm.write_auth("good", "right");
    let bad = tpm.write_auth("bad", "wrong");
    let p = open(&tpm.uri("0x81000001", Some(&good)));
    let (version, ct) = roundtrip(&*p);
    let wrong = open(&tpm.uri("0x81000001", Some(&bad)));
    let mut saw_lockout = false;
    for _ in 0..4 {
        let e = unwrap_err(&*wrong, &version, &ct);
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        saw_lockout |= e.message.contains("lockout") && e.message.contains("tpm2_dictionarylockout");
    }
    assert!(saw_lockout, "wrong auth values end in a lockout message");
    let e = unwrap_err(&*p, &version, &ct);
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("lockout"), "{e}");
    tpm.tool(&["tpm2_dictionarylockout", "-c"]);
    p.unwrap(&version, &ct).unwrap();
}

/// A key bound to PCR values (PolicyPCR sha256:0,7, plus PolicyPassword for one with an auth
/// value): usable while the PCRs hold those values, denied once PCR 7 is extended (as after
/// booting something else), usable again after a TPM reset (swtpm restarted: PCRs back to their
/// start values). Policy sessions are flushed: many calls do not exhaust the TPM's slots.
#[test]
fn pcr_policy_binding() {
    let mut tpm = Swtpm::start();
    require_tool("tpm2_policypcr");
    let trial = |out: &str, password: bool| {
        tpm.tool(&["tpm2_startauthsession", "-S", "trial.ctx"]);
        tpm.tool(&["tpm2_policypcr", "-Q", "-S", "trial.ctx", "-l", "sha256:0,7", "-L", out]);
        if password {
            tpm.tool(&["tpm2_policypassword", "-Q", "-S", "trial.ctx", "-L", out]);
        }
        tpm.tool(&["tpm2_flushcontext", "trial.ctx"]);
    };
    trial("pcr.policy", false);
    trial("pcrpw.policy", true);
    let attrs = "fixedtpm|fixedparent|sensitivedataorigin|decrypt|noda";
    tpm.create_key_policy("p", "rsa2048:oaep-sha256", attrs, None, Some("pcr.policy"));
    tpm.persist("p", "0x81000001");
    tpm.create_key_policy("pw", "rsa2048:oaep-sha256", attrs, Some("pin"), Some("pcrpw.policy"));
    tpm.persist("pw", "0x81000002");
    let pin = tpm.write_auth("pin", "pin");
    let bad = tpm.write_auth("bad", "nip");

    let e = open(&tpm.uri("0x81000001", None)).current().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Misconfigured, "a policy-only key needs pcrs=: {e}");
    assert!(e.message.contains("pcrs="), "{e}");

    let p = open(&format!("{}&pcrs=sha256:0,7", tpm.uri("0x81000001", None)));
    let pw = open(&format!("{}&pcrs=sha256:0,7", tpm.uri("0x81000002", Some(&pin))));
    let pw_bad = open(&format!("{}&pcrs=sha256:0,7", tpm.uri("0x81000002", Some(&bad))));
    let other_sel = open(&format!("{}&pcrs=sha256:0", tpm.uri("0x81000001", None)));
    let (v1, c1) = roundtrip(&*p);
    let (v2, c2) = roundtrip(&*pw);
    for _ in 0..8 {
        p.unwrap(&v1, &c1).unwrap();
    }
    let e = unwrap_err(&*pw_bad, &v2, &c2);
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    let e = unwrap_err(&*other_sel, &v1, &c1);
    assert_eq!(
        e.kind,
        ErrorKind::Denied,
        "another PCR selection is another policy: {e}"
    );

    tpm.tool(&["tpm2_pcrextend", &format!("7:sha256={}", "ab".repeat(32))]);
    // Repeated failures too: a leaked session would soon show as TPM_RC_SESSION_MEMORY.
    for (prov, v, c) in [
        (&p, &v1, &c1),
        (&pw, &v2, &c2),
        (&p, &v1, &c1),
        (&pw, &v2, &c2),
        (&p, &v1, &c1),
    ] {
        let e = unwrap_err(&**prov, v, c);
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
        assert!(e.message.contains("PCR values of sha256:0,7"), "{e}");
    }
    tpm.stop();
    tpm.restart();
    p.unwrap(&v1, &c1).unwrap();
    pw.unwrap(&v2, &c2).unwrap();
}

/// swtpm stopped: unreachable; started again: the same provider object works again.
#[test]
fn unreachable_and_reconnect() {
    let mut tpm = Swtpm::start();
    tpm.create_key("k", 2048, None, "0x81000001");
    let p = open(&tpm.uri("0x81000001", None));
    let (version, ct) = roundtrip(&*p);
    tpm.stop();
    let e = unwrap_err(&*p, &version, &ct);
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.message.contains(&tpm.tcti()), "the message names the TCTI: {e}");
    assert_eq!(p.current().unwrap_err().kind, ErrorKind::Unreachable);
    tpm.restart();
    p.unwrap(&version, &ct).unwrap();
}

/// On a live mount: swtpm killed (SIGKILL) → Inaccessible once the grace period is over, with the
/// provider named unreachable; swtpm started again → Available by itself.
#[test]
fn daemon_recovers_after_swtpm_restart() {
    let mut tpm = Swtpm::start();
    tpm.create_key("k", 3072, None, "0x81000001");
    let mut v = Vol::with_kek(&tpm.uri("0x81000001", None), &[]);
    v.mount(&["--check-interval", "300ms", "--unreachable-grace", "1s"]);
    std::fs::write(v.p("f"), b"hello").unwrap();
    tpm.kill();
    assert!(
        v.wait_state("Inaccessible", Duration::from_secs(15)).is_some(),
        "{}",
        v.status()
    );
    let st = v.status();
    assert!(
        st["reason"].as_str().unwrap_or_default().contains("unreachable"),
        "the reason says unreachable: {st}"
    );
    assert_eq!(errno_of(std::fs::read(v.p("f"))), Some(libc::EACCES));
    tpm.restart();
    assert!(
        v.wait_state("Available", Duration::from_secs(15)).is_some(),
        "{}",
        v.status()
    );
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"hello");
    v.umount();
}

/// On a live mount: swtpm frozen (SIGSTOP: connections hang, no error) → the daemon's call
/// timeout counts it as unreachable and the mount becomes Inaccessible after the grace
/// period; swtpm resumed → the hung call returns, later calls work, Available again.
#[test]
fn daemon_survives_frozen_swtpm() {
    let tpm = Swtpm::start();
    tpm.create_key("k", 2048, None, "0x81000001");
    let mut v = Vol::with_kek(&tpm.uri("0x81000001", None), &[]);
    v.mount(&["--check-interval", "300ms", "--unreachable-grace", "1s"]);
    std::fs::write(v.p("f"), b"hello").unwrap();
    tpm.signal(Signal::STOP);
    let inaccessible = v.wait_state("Inaccessible", Duration::from_secs(20));
    let st = v.status();
    tpm.signal(Signal::CONT);
    assert!(
        inaccessible.is_some(),
        "a TPM that does not answer makes the mount inaccessible: {st}"
    );
    assert!(
        st["reason"].as_str().unwrap_or_default().contains("unreachable"),
        "{st}"
    );
    assert!(
        v.wait_state("Available", Duration::from_secs(20)).is_some(),
        "{}",
        v.status()
    );
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"hello");
    v.umount();
}

/// Bad URIs are refused before anything is asked; a TCTI pointing nowhere is unreachable and
/// `init` says which TCTI it could not reach.
#[test]
fn misconfigured_and_unreachable_tcti() {
    for bad in [
        "tpm:0x81000001?tcti=nosuch:x",
        "tpm:0x81000001?tcti=swtpm:host=127.0.0.1,prot=2321",
        "tpm:0x01000001",
        "tpm:0x81000001?auth=hunter2",
        "tpm:0x81000001?oaep=md5",
        "tpm:0x81000001?colour=blue",
    ] {
        let e = kms::open(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(e.kind, ErrorKind::Misconfigured, "{bad}: {e}");
    }
    let port = free_port();
    let uri = format!("tpm:0x81000001?tcti=swtpm:host=127.0.0.1,port={port}");
    let e = open(&uri).current().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    let e = open("tpm:0x81000001?tcti=device:/nonexistent/tpmrm0")
        .current()
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");

    let dir = tempfile::tempdir().unwrap();
    let out = cmkfs([
        OsStr::new("init"),
        OsStr::new("--kek"),
        OsStr::new(&uri),
        dir.path().join("c").as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(&format!("port={port}")), "{}", stderr(&out));
}

/// `cmkfs kek test -n 20` through swtpm for RSA-2048 and RSA-3072 (the latency in the docs).
#[test]
fn kek_test_latency() {
    let tpm = Swtpm::start();
    tpm.create_key("k2048", 2048, Some("pw"), "0x81000001");
    tpm.create_key("k3072", 3072, Some("pw"), "0x81000002");
    let a = tpm.write_auth("auth", "pw");
    for (h, bits) in [("0x81000001", 2048), ("0x81000002", 3072)] {
        let uri = tpm.uri(h, Some(&a));
        let out = ok(&cmkfs(["kek", "test", "-n", "20", "--json", &uri]));
        let j: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        eprintln!("RSA-{bits} kek test: {j}");
        assert_eq!(j["bits"], bits, "{j}");
    }
}
