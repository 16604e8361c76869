//! The `pkcs11:` provider against real soft tokens: SoftHSM2 (Debian 2.6.1, OAEP-SHA1 only) and
//! kryoptic (a Rust PKCS#11 token doing OAEP-SHA256 inside the token). Each test makes its own
//! token in a temporary directory. Dependencies: scripts/providers/pkcs11.sh.
#![cfg(feature = "pkcs11")]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use cmkfs::crypto::SecretKey;
use cmkfs::kms::{self, ErrorKind, KeyProvider};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const KRYOPTIC_VERSION: &str = "1.5.4";
const SO_PIN: &str = "87654321";
const PIN: &str = "123456";
const SETUP: &str = "run scripts/providers/pkcs11.sh (as root) to install the PKCS#11 test dependencies";
const PY: &str = "/usr/bin/python3";

fn need(path: &str, what: &str) {
    assert!(Path::new(path).exists(), "{what} ({path}) is missing: {SETUP}");
}

fn kryoptic_module() -> PathBuf {
    let p = std::env::var_os("CMKFS_KRYOPTIC_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(format!(
                "/var/cache/cmkfs-test/kryoptic/{KRYOPTIC_VERSION}/libkryoptic_pkcs11.so"
            ))
        });
    assert!(
        p.is_file(),
        "the kryoptic PKCS#11 module {} is missing: {SETUP} (or set CMKFS_KRYOPTIC_MODULE)",
        p.display()
    );
    p
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    SoftHsm,
    Kryoptic,
}

/// A soft token in a temporary directory, with one user PIN, driven by pkcs11-tool and PyKCS11
/// in child processes (the token's configuration is per process environment).
struct Token {
    kind: Kind,
    dir: tempfile::TempDir,
    module: PathBuf,
    label: String,
    env_name: &'static str,
    conf: PathBuf,
    pin_file: PathBuf,
}

impl Token {
    fn new(kind: Kind) -> Token {
        need("/usr/bin/pkcs11-tool", "pkcs11-tool (opensc)");
        need(PY, "python3");
        assert!(
            Command::new(PY)
                .args(["-c", "import PyKCS11"])
                .status()
                .unwrap()
                .success(),
            "PyKCS11 (python3-pykcs11) is missing: {SETUP}"
        );
        let dir = tempfile::Builder::new().prefix("cmkfs-p11-").tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        let label = "cmkfs-test".to_string();
        let t = match kind {
            Kind::SoftHsm => {
                need(SOFTHSM_MODULE, "SoftHSM2");
                need("/usr/bin/softhsm2-util", "softhsm2-util");
                let conf = dir.path().join("softhsm2.conf");
                std::fs::create_dir(dir.path().join("tokens")).unwrap();
                std::fs::write(
                    &conf,
                    format!(
                        "directories.tokendir = {}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
                        dir.path().display()
                    ),
                )
                .unwrap();
                let t = Token {
                    kind,
                    module: SOFTHSM_MODULE.into(),
                    label,
                    env_name: "SOFTHSM2_CONF",
                    conf,
                    pin_file,
                    dir,
                };
                t.run_ok(
                    "softhsm2-util",
                    &[
                        "--init-token",
                        "--free",
                        "--label",
                        &t.label,
                        "--so-pin",
                        SO_PIN,
                        "--pin",
                        PIN,
                    ],
                );
                t
            }
            Kind::Kryoptic => {
                let module = kryoptic_module();
                let conf = dir.path().join("kryoptic.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "[[slots]]\nslot = 42\ndbtype = \"sqlite\"\ndbargs = \"{}/token.sql\"\n",
                        dir.path().display()
                    ),
                )
                .unwrap();
                let t = Token {
                    kind,
                    module,
                    label,
                    env_name: "KRYOPTIC_CONF",
                    conf,
                    pin_file,
                    dir,
                };
                t.tool_ok(&["--init-token", "--slot", "42", "--label", &t.label, "--so-pin", SO_PIN]);
                t.tool_ok(&[
                    "--slot",
                    "42",
                    "--init-pin",
                    "--login",
                    "--so-pin",
                    SO_PIN,
                    "--pin",
                    PIN,
                ]);
                t
            }
        };
        t
    }

    fn env(&self) -> Vec<(&str, &OsStr)> {
        vec![(self.env_name, self.conf.as_os_str())]
    }

    fn run(&self, prog: &str, args: &[&str]) -> Output {
        Command::new(prog)
            .args(args)
            .env(self.env_name, &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}: {SETUP}"))
    }

    fn run_ok(&self, prog: &str, args: &[&str]) -> String {
        succeeded(&self.run(prog, args), &format!("{prog} {args:?}"))
    }

    fn tool_ok(&self, args: &[&str]) -> String {
        let mut a = vec!["--module", self.module.to_str().unwrap()];
        a.extend_from_slice(args);
        self.run_ok("pkcs11-tool", &a)
    }

    /// Generates an RSA key pair in the token (private key: decrypt).
    fn keygen(&self, label: &str, bits: usize) {
        self.tool_ok(&[
            "--token-label",
            &self.label,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            &format!("rsa:{bits}"),
            "--label",
            label,
            "--usage-decrypt",
        ]);
    }

    fn oaep(&self) -> &'static str {
        match self.kind {
            Kind::SoftHsm => "&oaep=sha1",
            Kind::Kryoptic => "",
        }
    }

    fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={}&pin-source=file:{}{}",
            self.label,
            self.module.display(),
            self.pin_file.display(),
            self.oaep()
        )
    }

    /// Changes the token from another process, as an administrator would (PyKCS11).
    fn admin(&self, action: &str, object: &str) {
        const SCRIPT: &str = r#"
import sys, PyKCS11
from PyKCS11 import LowLevel as L
mod, label, pin, action, obj = sys.argv[1:6]
lib = PyKCS11.PyKCS11Lib(); lib.load(mod)
slot = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == label][0]
s = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
s.login(pin)
keys = s.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, obj)])
assert len(keys) == 1, keys
if action == "decrypt-off":
    s.setAttributeValue(keys[0], [(PyKCS11.CKA_DECRYPT, PyKCS11.CK_FALSE)])
elif action == "decrypt-on":
    s.setAttributeValue(keys[0], [(PyKCS11.CKA_DECRYPT, PyKCS11.CK_TRUE)])
elif action == "delete":
    s.destroyObject(keys[0])
else:
    raise SystemExit("unknown action " + action)
s.logout(); s.closeSession()
"#;
        self.run_ok(
            PY,
            &[
                "-c",
                SCRIPT,
                self.module.to_str().unwrap(),
                &self.label,
                PIN,
                action,
                object,
            ],
        );
    }
}

fn kek_test(uri: &str, env: &[(&str, &OsStr)], n: usize) -> Output {
    cmkfs_env(["kek", "test", "-n", &n.to_string(), "--json", uri], env)
}

/// `cmkfs kek test` must fail; returns stderr.
fn kek_test_err(uri: &str, env: &[(&str, &OsStr)]) -> String {
    let out = kek_test(uri, env, 1);
    assert!(!out.status.success(), "kek test unexpectedly worked: {}", stderr(&out));
    stderr(&out)
}

fn lifecycle(kind: Kind) {
    let t = Token::new(kind);
    t.keygen("kek1", 3072);
    t.keygen("kek2", 2048);
    let mut v = Vol::with_kek(&t.uri("kek1"), &t.env());
    // The keyslot records the OAEP hash the token was driven with.
    let header = std::fs::read_to_string(v.c("cmkfs.volume")).unwrap();
    let alg = match kind {
        Kind::SoftHsm => "\"algorithm\":\"RSA-OAEP-SHA1\"",
        Kind::Kryoptic => "\"algorithm\":\"RSA-OAEP-SHA256\"",
    };
    assert!(header.replace(' ', "").contains(alg), "{alg} in {header}");
    let revoked = provider_lifecycle(
        &mut v,
        Some(&t.uri("kek2")),
        || t.admin("decrypt-off", "kek2"),
        || t.admin("decrypt-on", "kek2"),
    );
    let reason = revoked["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("CKR_KEY_FUNCTION_NOT_PERMITTED") && reason.contains("'kek2' in token 'cmkfs-test'"),
        "the revocation reason names the key and the token's answer: {revoked}"
    );
}

#[test]
fn softhsm_lifecycle() {
    lifecycle(Kind::SoftHsm);
}

#[test]
fn kryoptic_lifecycle() {
    lifecycle(Kind::Kryoptic);
}

/// Deleting the key object while mounted: denied at once (the grace period is long, so only a
/// denied answer can make the volume inaccessible within the deadline).
fn key_deleted_is_denied(kind: Kind) {
    let t = Token::new(kind);
    t.keygen("kek1", 2048);
    let uri = t.uri("kek1");
    let mut v = Vol::with_kek(&uri, &t.env());
    v.mount(&["--check-interval", "200ms", "--unreachable-grace", "1h"]);
    std::fs::write(v.p("f"), b"data").unwrap();
    t.admin("delete", "kek1");
    assert!(
        v.wait_state("Inaccessible", Duration::from_secs(15)).is_some(),
        "a deleted key makes the volume inaccessible at once: {}",
        v.status()
    );
    let reason = v.status()["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("access denied") && reason.contains("no RSA private key"),
        "{reason}"
    );
    assert_eq!(errno_of(std::fs::read(v.p("f"))), Some(libc::EACCES));
    v.umount();
    let e = kek_test_err(&uri, &t.env());
    assert!(
        e.contains("access denied") && e.contains("'kek1' in token 'cmkfs-test'"),
        "{e}"
    );
}

#[test]
fn softhsm_key_deleted_is_denied() {
    key_deleted_is_denied(Kind::SoftHsm);
}

#[test]
fn kryoptic_key_deleted_is_denied() {
    key_deleted_is_denied(Kind::Kryoptic);
}

#[test]
fn wrong_pin_is_denied_and_names_the_token() {
    let t = Token::new(Kind::SoftHsm);
    t.keygen("kek1", 2048);
    let bad = t.dir.path().join("bad-pin");
    std::fs::write(&bad, "999999\n").unwrap();
    let uri = t
        .uri("kek1")
        .replace(t.pin_file.to_str().unwrap(), bad.to_str().unwrap());
    let e = kek_test_err(&uri, &t.env());
    assert!(
        e.contains("access denied") && e.contains("token 'cmkfs-test'") && e.contains("CKR_PIN_INCORRECT"),
        "{e}"
    );
    assert!(!e.contains("999999"), "the PIN is never shown: {e}");
    let init = cmkfs_env(
        [
            OsStr::new("init"),
            OsStr::new("--kek"),
            OsStr::new(&uri),
            t.dir.path().join("vol").as_os_str(),
        ],
        &t.env(),
    );
    assert!(!init.status.success(), "init with a wrong PIN fails");
    // The PIN file missing: misconfigured, naming the file.
    let missing = uri.replace(bad.to_str().unwrap(), "/nonexistent/pin");
    let e = kek_test_err(&missing, &t.env());
    assert!(e.contains("misconfigured") && e.contains("/nonexistent/pin"), "{e}");
    // The right PIN from the environment works.
    let env_uri = uri.replace(&format!("file:{}", bad.display()), "env:CMKFS_TEST_PKCS11_PIN");
    let mut env = t.env();
    env.push(("CMKFS_TEST_PKCS11_PIN", OsStr::new(PIN)));
    ok(&kek_test(&env_uri, &env, 2));
}

#[test]
fn misconfigured_uris_are_refused() {
    let t = Token::new(Kind::SoftHsm);
    t.keygen("kek1", 2048);
    let uri = t.uri("kek1");
    // A literal PIN in the URI: refused, with the reason, and never echoed into the error.
    let with_pin = format!("{uri}&pin-value=4242");
    let e = kek_test_err(&with_pin, &t.env());
    assert!(e.contains("misconfigured") && e.contains("pin-value is refused"), "{e}");
    // SoftHSM2 2.6 has no OAEP-SHA256: the error says to use oaep=sha1.
    let sha256 = uri.replace("&oaep=sha1", "");
    let e = kek_test_err(&sha256, &t.env());
    assert!(e.contains("misconfigured") && e.contains("oaep=sha1"), "{e}");
    // Not a PKCS#11 module.
    let not_module = t.conf.to_str().unwrap();
    let e = kek_test_err(&uri.replace(SOFTHSM_MODULE, not_module), &t.env());
    assert!(e.contains("misconfigured") && e.contains(not_module), "{e}");
    // module-path from CMKFS_PKCS11_MODULE when the URI has none.
    let no_module = uri.replace(&format!("module-path={SOFTHSM_MODULE}&"), "");
    let e = kek_test_err(&no_module, &t.env());
    assert!(e.contains("CMKFS_PKCS11_MODULE"), "{e}");
    let mut env = t.env();
    env.push(("CMKFS_PKCS11_MODULE", OsStr::new(SOFTHSM_MODULE)));
    ok(&kek_test(&no_module, &env, 1));
    // A token that does not exist: unreachable (an absent token looks like an unplugged one).
    let e = kek_test_err(&uri.replace("token=cmkfs-test", "token=other"), &t.env());
    assert!(e.contains("unreachable") && e.contains("'cmkfs-test'"), "{e}");
    // An object that does not exist: denied.
    let e = kek_test_err(&t.uri("nokey"), &t.env());
    assert!(e.contains("access denied") && e.contains("no RSA private key"), "{e}");
}

/// Waits until the last check failed with an error containing `what`; returns the status.
fn wait_check_error(v: &Vol, what: &str) -> serde_json::Value {
    let mut st = v.status();
    let seen = wait_until(Duration::from_secs(15), || {
        st = v.status();
        st["last_check_error"].as_str().is_some_and(|e| e.contains(what))
    });
    assert!(seen, "expected a check error containing '{what}': {st}");
    st
}

/// Waits until a check succeeded again (the error is cleared).
fn wait_check_ok(v: &Vol) {
    assert!(
        wait_until(Duration::from_secs(15), || v.status()["last_check_error"].is_null()),
        "checks succeed again: {}",
        v.status()
    );
}

/// The token disappears while mounted (its files moved away, as a device pulled out) and comes
/// back. Within the grace period the volume keeps serving and reports the provider unreachable;
/// with a short grace it goes inaccessible. Either way it recovers by itself once the token is
/// back (the provider re-initialises the module and logs in again).
#[test]
fn softhsm_token_removed_and_reinserted() {
    let t = Token::new(Kind::SoftHsm);
    t.keygen("kek1", 2048);
    let mut v = Vol::with_kek(&t.uri("kek1"), &t.env());
    let tokens = t.dir.path().join("tokens");
    let away = t.dir.path().join("away");
    let data = pattern(7, 10_000);

    // Long grace: unreachable, still serving, back without ever being inaccessible.
    v.mount(&["--check-interval", "200ms", "--unreachable-grace", "1h"]);
    std::fs::write(v.p("f"), &data).unwrap();
    std::fs::rename(&tokens, &away).unwrap();
    wait_check_error(&v, "unreachable");
    assert!(
        wait_until(Duration::from_secs(15), || v.status()["reason"]
            .as_str()
            .is_some_and(|r| r.contains("still serving"))),
        "the status says the provider is unreachable and the volume still served: {}",
        v.status()
    );
    assert_eq!(v.status()["state"], "Available", "tolerated within the grace period");
    assert!(v.status()["grace_remaining_secs"].as_u64().is_some_and(|s| s > 3000));
    assert_eq!(std::fs::read(v.p("f")).unwrap(), data);
    std::fs::rename(&away, &tokens).unwrap();
    wait_check_ok(&v);
    assert_eq!(v.status()["state"], "Available");
    v.umount();

    // Short grace: inaccessible after it, available again once the token is back.
    v.mount(&["--check-interval", "200ms", "--unreachable-grace", "1s"]);
    std::fs::rename(&tokens, &away).unwrap();
    assert!(
        v.wait_state("Inaccessible", Duration::from_secs(15)).is_some(),
        "inaccessible after the grace period: {}",
        v.status()
    );
    let reason = v.status()["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("unreachable") && reason.contains("not present"),
        "{reason}"
    );
    assert_eq!(errno_of(std::fs::read(v.p("f"))), Some(libc::EACCES));
    std::fs::rename(&away, &tokens).unwrap();
    assert!(
        v.wait_state("Available", Duration::from_secs(15)).is_some(),
        "available again by itself once the token is back: {}",
        v.status()
    );
    assert_eq!(std::fs::read(v.p("f")).unwrap(), data);
    v.umount();
}

/// `softhsm2-util --delete-token` while mounted, then the token re-created under the same label
/// (in another slot) with the same key imported: unreachable meanwhile, then available again
/// without a remount.
#[test]
fn softhsm_token_deleted_and_recreated() {
    let t = Token::new(Kind::SoftHsm);
    let key = cmkfs::crypto::rsa::generate(2048).unwrap();
    let pem = t.dir.path().join("kek1.pem");
    std::fs::write(&pem, cmkfs::crypto::rsa::private_pem(&key).as_bytes()).unwrap();
    let import = || {
        t.run_ok(
            "softhsm2-util",
            &[
                "--import",
                pem.to_str().unwrap(),
                "--token",
                &t.label,
                "--label",
                "kek1",
                "--id",
                "01",
                "--pin",
                PIN,
            ],
        )
    };
    import();
    let uri = t.uri("kek1").replace(";object=kek1", ";object=kek1;id=%01");
    let mut v = Vol::with_kek(&uri, &t.env());
    v.mount(&["--check-interval", "200ms", "--unreachable-grace", "1h"]);
    std::fs::write(v.p("f"), b"kept").unwrap();
    t.run_ok("softhsm2-util", &["--delete-token", "--token", &t.label]);
    let st = wait_check_error(&v, "not present");
    assert_eq!(
        st["state"], "Available",
        "a deleted token is absent, not a deleted key: {st}"
    );
    t.run_ok(
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            &t.label,
            "--so-pin",
            SO_PIN,
            "--pin",
            PIN,
        ],
    );
    // An empty token with the same label: the key is missing, which is a denial.
    assert!(
        v.wait_state("Inaccessible", Duration::from_secs(15)).is_some(),
        "{}",
        v.status()
    );
    import();
    assert!(
        v.wait_state("Available", Duration::from_secs(15)).is_some(),
        "available again with the same key in the re-created token: {}",
        v.status()
    );
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"kept");
    v.umount();
}

/// Many threads unwrapping through one provider object (as the daemon shares it); a corrupted
/// keyslot is *unwrap failed* although kryoptic answers CKR_DEVICE_ERROR for it; a revocation
/// and a restore made by another process are seen on the very next call.
#[test]
fn kryoptic_concurrent_unwraps() {
    let t = Token::new(Kind::Kryoptic);
    t.keygen("kek1", 2048);
    // The only test in this binary that opens kryoptic in-process: its configuration comes
    // from this process's environment.
    set_process_env("KRYOPTIC_CONF", &t.conf);
    let p: Arc<dyn KeyProvider> = Arc::from(kms::open(&t.uri("kek1")).unwrap());
    let secret = SecretKey::random();
    let w = p.wrap(&secret).unwrap();
    assert_eq!(w.key.version, "1");
    assert_eq!(w.key.bits, Some(2048));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let p = p.clone();
            let ct = w.ciphertext.clone();
            let want = secret.expose().to_vec();
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let u = p.unwrap("1", &ct).unwrap();
                    assert_eq!(u.secret.expose(), &want[..]);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    // A ciphertext of another key: unwrap failed, not denied.
    let other = p.wrap(&SecretKey::random()).unwrap();
    let mut bad = other.ciphertext.clone();
    bad[10] ^= 1;
    let e = p.unwrap("1", &bad).err().unwrap();
    assert_eq!(e.kind, ErrorKind::UnwrapFailed, "{e}");
    assert_eq!(p.unwrap("1", &w.ciphertext).unwrap().secret.expose(), secret.expose());
    // Revoked and restored from another process: seen on the very next call.
    t.admin("decrypt-off", "kek1");
    let e = p.unwrap("1", &w.ciphertext).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    t.admin("decrypt-on", "kek1");
    assert_eq!(p.unwrap("1", &w.ciphertext).unwrap().secret.expose(), secret.expose());
}

/// Keyslots that are not for the key: unwrap failed (never denied or unreachable), in-process
/// on SoftHSM2, with several threads sharing the provider.
#[test]
fn softhsm_unwrap_failures_and_threads() {
    let t = Token::new(Kind::SoftHsm);
    t.keygen("kek1", 2048);
    t.keygen("kek2", 2048);
    // The only test in this binary that opens SoftHSM2 in-process: its configuration comes
    // from this process's environment.
    set_process_env("SOFTHSM2_CONF", &t.conf);
    // A wrong PIN first (before any session of this process is logged in, since a login is
    // per application and token): refused, then not presented again while the PIN source
    // still holds it, and picked up as soon as the source is fixed.
    let pin2 = t.dir.path().join("pin2");
    std::fs::write(&pin2, "000000\n").unwrap();
    let wrong = kms::open(
        &t.uri("kek1")
            .replace(t.pin_file.to_str().unwrap(), pin2.to_str().unwrap()),
    )
    .unwrap();
    let e = wrong.current().err().unwrap();
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(e.message.contains("CKR_PIN_INCORRECT"), "{e}");
    let e = wrong.current().err().unwrap();
    assert!(
        e.message.contains("not retried"),
        "the refused PIN is not presented again: {e}"
    );
    std::fs::write(&pin2, format!("{PIN}\n")).unwrap();
    wrong
        .current()
        .expect("the corrected PIN file is read at the next login");
    drop(wrong);
    let p: Arc<dyn KeyProvider> = Arc::from(kms::open(&t.uri("kek1")).unwrap());
    let p2 = kms::open(&t.uri("kek2")).unwrap();
    let secret = SecretKey::random();
    let w = p.wrap(&secret).unwrap();
    assert_eq!(p.current().unwrap().fingerprint, w.key.fingerprint);
    let fail = |ct: &[u8], what: &str| {
        let e = p.unwrap("1", ct).err().unwrap_or_else(|| panic!("{what}: unwrapped"));
        assert_eq!(e.kind, ErrorKind::UnwrapFailed, "{what}: {e}");
    };
    let mut flipped = w.ciphertext.clone();
    flipped[100] ^= 0x40;
    fail(&flipped, "corrupted ciphertext");
    fail(&w.ciphertext[..200], "truncated ciphertext");
    fail(&p2.wrap(&secret).unwrap().ciphertext, "another key's keyslot");
    // A valid OAEP ciphertext of 16 bytes: the token decrypts it, but it is no volume key.
    let der = t.dir.path().join("kek1.der");
    t.tool_ok(&[
        "--token-label",
        &t.label,
        "--read-object",
        "--type",
        "pubkey",
        "--label",
        "kek1",
        "--output-file",
        der.to_str().unwrap(),
    ]);
    let public = cmkfs::crypto::rsa::public_from_der(&std::fs::read(&der).unwrap()).unwrap();
    assert_eq!(public.bits(), 2048);
    let short = cmkfs::crypto::rsa::encrypt_with(&public, cmkfs::crypto::rsa::OaepHash::Sha1, &[7u8; 16]).unwrap();
    fail(&short, "16-byte plaintext");
    // Still working after all that, from several threads at once.
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let p = p.clone();
            let ct = w.ciphertext.clone();
            let want = *secret.expose();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    assert_eq!(p.unwrap("1", &ct).unwrap().secret.expose(), &want);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    // Deleted while this process holds logged-in sessions: denied on the next call.
    t.admin("delete", "kek1");
    let e = p.unwrap("1", &w.ciphertext).err().unwrap();
    assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    assert!(
        p2.unwrap("1", &p2.wrap(&secret).unwrap().ciphertext).is_ok(),
        "kek2 unaffected"
    );
}
