//! The `vault:` provider against a real OpenBao server (Vault's open-source fork, same Transit
//! API), started per test on a free port with file storage, so that it can be stopped,
//! restarted, sealed and unsealed like a production server. scripts/providers/vault.sh
//! installs the pinned `bao` binary.
#![cfg(feature = "vault")]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::open_provider as open;
use crate::common::*;
use cmkfs::crypto::SecretKey;
use cmkfs::kms::{ErrorKind, ProviderError};

const DEADLINE: Duration = Duration::from_secs(30);

fn bao_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CMKFS_BAO") {
        return PathBuf::from(p);
    }
    let tools = PathBuf::from("/opt/cmkfs-test-tools/bin/bao");
    if tools.exists() {
        return tools;
    }
    if let Some(p) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("bao"))
        .find(|p| p.is_file())
    {
        return p;
    }
    panic!("the OpenBao server binary `bao` is missing: run scripts/providers/vault.sh (as root) first");
}

/// A real OpenBao server with file storage in a temporary directory.
struct Bao {
    dir: tempfile::TempDir,
    port: u16,
    addr: String,
    args: Vec<String>,
    child: Option<Child>,
    root: String,
    unseal_key: String,
    /// The dev TLS server's CA certificate.
    ca: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Dev,
    DevTls,
    Persistent,
}

impl Bao {
    /// A dev server (in memory, unsealed, root token `root`) with Transit at `transit/`.
    fn start() -> Bao {
        Bao::start_with(Mode::Dev)
    }

    /// A server with raft storage in its directory, initialised and unsealed, with Transit at
    /// `transit/`: it keeps its keys across a restart and comes back sealed, like a real one.
    fn start_persistent() -> Bao {
        Bao::start_with(Mode::Persistent)
    }

    fn start_with(mode: Mode) -> Bao {
        let dir = tempfile::Builder::new().prefix("cmkfs-bao-").tempdir().unwrap();
        let mut b = Bao {
            dir,
            port: 0,
            addr: String::new(),
            args: vec![],
            child: None,
            root: "root".into(),
            unseal_key: String::new(),
            ca: None,
        };
        // A port can be taken by another process between probe and bind (common/ports.rs): a few
        // tries.
        let mut tries = 0;
        while !b.try_start(mode) {
            tries += 1;
            assert!(tries < 5, "bao server did not start: {}", b.log());
        }
        if mode == Mode::Persistent {
            let init: serde_json::Value =
                serde_json::from_str(&b.ok(&["operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json"]))
                    .unwrap();
            b.root = init["root_token"].as_str().unwrap().to_string();
            b.unseal_key = init["unseal_keys_b64"][0].as_str().unwrap().to_string();
            b.unseal();
        } else {
            let mut key = None;
            assert!(
                wait_until(DEADLINE, || {
                    key = b
                        .log()
                        .lines()
                        .find_map(|l| l.trim().strip_prefix("Unseal Key: ").map(str::to_string));
                    key.is_some()
                }),
                "no unseal key in the dev server's output: {}",
                b.log()
            );
            b.unseal_key = key.unwrap();
        }
        b.retry_ok(&["secrets", "enable", "transit"]);
        b
    }

    /// Picks ports and starts the server; false if it exited (port taken).
    fn try_start(&mut self, mode: Mode) -> bool {
        let d = self.dir.path().to_path_buf();
        // A dev server also listens on port + 1 (cluster); a persistent one is given it.
        self.port = free_ports(2);
        let port = self.port;
        let scheme = if mode == Mode::DevTls { "https" } else { "http" };
        self.addr = format!("{scheme}://127.0.0.1:{port}");
        self.args = vec!["server".into()];
        match mode {
            Mode::Persistent => {
                let cluster = port + 1;
                std::fs::create_dir_all(d.join("data")).unwrap();
                std::fs::write(
                    d.join("config.hcl"),
                    format!(
                        "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"n1\"\n}}\n\
                         listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  \
                         cluster_address = \"127.0.0.1:{cluster}\"\n  tls_disable = true\n}}\n\
                         api_addr = \"{}\"\ncluster_addr = \"http://127.0.0.1:{cluster}\"\n",
                        d.join("data").display(),
                        self.addr
                    ),
                )
                .unwrap();
                self.args.push(format!("-config={}", d.join("config.hcl").display()));
            }
            Mode::Dev | Mode::DevTls => {
                self.args.extend([
                    "-dev".into(),
                    "-dev-root-token-id=root".into(),
                    format!("-dev-listen-address=127.0.0.1:{port}"),
                ]);
                if mode == Mode::DevTls {
                    let certs = d.join(format!("tls-{port}"));
                    std::fs::create_dir_all(&certs).unwrap();
                    self.args.push("-dev-tls".into());
                    self.args.push(format!("-dev-tls-cert-dir={}", certs.display()));
                    self.ca = Some(certs.join("vault-ca.pem"));
                }
            }
        }
        self.spawn()
    }

    /// Starts the server process; true once it listens, false if it exited.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let mut child = Command::new(bao_bin())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bao server (scripts/providers/vault.sh installs it)");
        let port = self.port;
        let listening = wait_until(DEADLINE, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || child.try_wait().unwrap().is_some()
        });
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        self.child = Some(child);
        assert!(listening, "bao server did not listen on {port}: {}", self.log());
        if let Some(ca) = &self.ca {
            assert!(wait_until(DEADLINE, || ca.exists()), "no dev TLS CA written");
        }
        true
    }

    fn unseal(&self) {
        self.ok(&["operator", "unseal", &self.unseal_key]);
        assert!(
            wait_until(DEADLINE, || self.bao(&["status"]).status.success()),
            "bao did not unseal"
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops and starts the server again: it comes back sealed, as a real one does.
    fn restart_sealed(&mut self) {
        self.stop();
        assert!(self.spawn(), "bao server did not restart: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn bao_as(&self, token: &str, args: &[&str]) -> Output {
        let mut c = Command::new(bao_bin());
        if let Some(ca) = &self.ca {
            c.env("BAO_CACERT", ca);
        }
        c.args(args)
            .env("BAO_ADDR", &self.addr)
            .env("BAO_TOKEN", token)
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run bao")
    }

    fn bao(&self, args: &[&str]) -> Output {
        self.bao_as(&self.root, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        succeeded(&self.bao(args), &format!("bao {args:?}"))
    }

    /// For the first requests after an unseal, while the server becomes active.
    fn retry_ok(&self, args: &[&str]) {
        let mut last = None;
        let done = wait_until(DEADLINE, || {
            let o = self.bao(args);
            let s = o.status.success();
            last = Some(o);
            s
        });
        assert!(done, "bao {args:?} kept failing: {:?}", last.map(|o| stderr_of(&o)));
    }

    fn create_key(&self, name: &str, ty: &str) {
        self.ok(&["write", "-f", &format!("transit/keys/{name}"), &format!("type={ty}")]);
    }

    /// Writes the policy `name`: with `decrypt` it may read the keys and decrypt with them.
    fn policy(&self, name: &str, decrypt: bool) {
        let mut p = String::from("path \"transit/keys/*\" { capabilities = [\"read\"] }\n");
        if decrypt {
            p.push_str("path \"transit/decrypt/*\" { capabilities = [\"update\"] }\n");
        }
        let f = self.dir.path().join(format!("{name}.hcl"));
        std::fs::write(&f, p).unwrap();
        self.ok(&["policy", "write", name, f.to_str().unwrap()]);
    }

    /// A token with `policy`, written to a file; returns (token, file).
    fn token(&self, policy: &str) -> (String, PathBuf) {
        let out: serde_json::Value =
            serde_json::from_str(&self.ok(&["token", "create", &format!("-policy={policy}"), "-format=json"])).unwrap();
        let t = out["auth"]["client_token"].as_str().unwrap().to_string();
        let f = self.dir.path().join(format!("token-{}", &t[t.len() - 8..]));
        std::fs::write(&f, format!("{t}\n")).unwrap();
        (t, f)
    }

    fn uri(&self, key: &str, token_file: &Path, extra: &str) -> String {
        format!(
            "vault:{}/transit/{key}?token=file:{}&timeout=3s{extra}",
            self.addr,
            token_file.display()
        )
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn expect_err<T>(r: Result<T, ProviderError>, kind: ErrorKind, text: &str) -> ProviderError {
    expect_provider_err(r, kind, text, "vault key transit/")
}

/// Mount → write/read → online rotation to a second Transit key → the token's policy loses
/// decrypt (Denied: Inaccessible, EACCES) → the policy gets it back (Available, same data)
/// → remount.
#[test]
fn lifecycle_policy_revoke_and_restore() {
    let bao = Bao::start();
    bao.create_key("kek", "rsa-2048");
    bao.create_key("kek2", "rsa-3072");
    bao.policy("cmkfs", true);
    let (_, tf) = bao.token("cmkfs");
    let uri = bao.uri("kek", &tf, "");
    let uri2 = bao.uri("kek2", &tf, "");
    let mut v = Vol::with_kek(&uri, &[]);
    let revoked = provider_lifecycle(
        &mut v,
        Some(&uri2),
        || bao.policy("cmkfs", false),
        || bao.policy("cmkfs", true),
    );
    let err = revoked["last_check_error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains("vault") && err.contains("permission denied") && err.contains(&bao.addr),
        "the reason names vault, the server and its answer: {revoked}"
    );
}

/// Every kind of revocation Vault can express, as the provider classifies it.
#[test]
fn revocations_are_classified() {
    let bao = Bao::start();
    bao.create_key("kek", "rsa-2048");
    bao.create_key("other", "rsa-2048");
    bao.create_key("aes", "aes256-gcm96");
    bao.policy("cmkfs", true);
    let (token, tf) = bao.token("cmkfs");
    let p = open(&bao.uri("kek", &tf, ""));
    let secret = SecretKey::random();
    let w = p.wrap(&secret).unwrap();
    assert_eq!(w.key.version, "1");
    assert_eq!(w.key.bits, Some(2048));
    assert_eq!(w.key.key_id, "transit/kek");
    let u = p.unwrap("1", &w.ciphertext).unwrap();
    assert_eq!(u.secret.expose(), secret.expose());
    assert_eq!(u.key.fingerprint, w.key.fingerprint);

    // Another key's keyslot: Vault answers, the ciphertext is not for this key.
    let other = open(&bao.uri("other", &tf, "")).wrap(&secret).unwrap();
    expect_err(
        p.unwrap("1", &other.ciphertext),
        ErrorKind::UnwrapFailed,
        "failed to RSA decrypt",
    );
    // A version the key never had.
    expect_err(p.unwrap("7", &w.ciphertext), ErrorKind::Denied, "version is too new");

    // The policy loses decrypt, then gets it back.
    bao.policy("cmkfs", false);
    expect_err(p.unwrap("1", &w.ciphertext), ErrorKind::Denied, "permission denied");
    assert!(p.current().is_ok(), "reading the key is still allowed");
    bao.policy("cmkfs", true);
    assert!(p.unwrap("1", &w.ciphertext).is_ok());

    // A token that may decrypt but not read the key still unwraps (no fingerprint then).
    let f = bao.dir.path().join("decrypt-only.hcl");
    std::fs::write(&f, "path \"transit/decrypt/*\" { capabilities = [\"update\"] }\n").unwrap();
    bao.ok(&["policy", "write", "decrypt-only", f.to_str().unwrap()]);
    let (_, tf_dec) = bao.token("decrypt-only");
    let dec = open(&bao.uri("kek", &tf_dec, ""));
    let u = dec.unwrap("1", &w.ciphertext).unwrap();
    assert_eq!(u.secret.expose(), secret.expose());
    assert_eq!((u.key.bits, u.key.fingerprint.as_deref()), (None, None));
    expect_err(dec.current(), ErrorKind::Denied, "permission denied");

    // Soft deletion (OpenBao) and its undo.
    bao.ok(&["delete", "transit/keys/kek/soft-delete"]);
    expect_err(p.unwrap("1", &w.ciphertext), ErrorKind::Denied, "soft-deleted");
    expect_err(p.current(), ErrorKind::Denied, "soft-deleted");
    bao.ok(&["write", "-f", "transit/keys/kek/soft-delete-restore"]);
    assert!(p.unwrap("1", &w.ciphertext).is_ok());

    // Sealed: the server answers 503, which is an outage, not a refusal.
    bao.ok(&["operator", "seal"]);
    expect_err(p.unwrap("1", &w.ciphertext), ErrorKind::Unreachable, "sealed");
    bao.unseal();
    assert!(
        wait_until(DEADLINE, || p.unwrap("1", &w.ciphertext).is_ok()),
        "works after unseal"
    );

    // Rotation with min_decryption_version: the old version is refused, the new one works.
    bao.ok(&["write", "-f", "transit/keys/kek/rotate"]);
    assert_eq!(p.current().unwrap().version, "2");
    let w2 = p.wrap(&secret).unwrap();
    assert_eq!(w2.key.version, "2");
    bao.ok(&["write", "transit/keys/kek/config", "min_decryption_version=2"]);
    expect_err(p.unwrap("1", &w.ciphertext), ErrorKind::Denied, "disallowed by policy");
    assert_eq!(p.unwrap("2", &w2.ciphertext).unwrap().secret.expose(), secret.expose());
    let pinned = open(&bao.uri("kek", &tf, "&version=1"));
    expect_err(pinned.current(), ErrorKind::Denied, "version 1 is not available");

    // A token that is not RSA.
    expect_err(
        open(&bao.uri("aes", &tf, "")).current(),
        ErrorKind::Misconfigured,
        "aes256-gcm96",
    );

    // Token problems: garbage token, missing token file, revoked token.
    let junk = bao.dir.path().join("junk-token");
    std::fs::write(&junk, "s.notatoken\n").unwrap();
    expect_err(
        open(&bao.uri("kek", &junk, "")).unwrap("2", &w2.ciphertext),
        ErrorKind::Denied,
        "permission denied",
    );
    let missing = bao.dir.path().join("no-such-token");
    expect_err(
        open(&bao.uri("kek", &missing, "")).unwrap("2", &w2.ciphertext),
        ErrorKind::Unreachable,
        "no Vault token",
    );
    bao.ok(&["token", "revoke", &token]);
    expect_err(p.unwrap("2", &w2.ciphertext), ErrorKind::Denied, "permission denied");

    // Key deletion.
    let (_, tf2) = bao.token("cmkfs");
    let p2 = open(&bao.uri("kek", &tf2, ""));
    assert!(p2.unwrap("2", &w2.ciphertext).is_ok());
    bao.ok(&["write", "transit/keys/kek/config", "deletion_allowed=true"]);
    bao.ok(&["delete", "transit/keys/kek"]);
    expect_err(
        p2.unwrap("2", &w2.ciphertext),
        ErrorKind::Denied,
        "encryption key not found",
    );
    expect_err(p2.current(), ErrorKind::Denied, "HTTP 404");
}

/// The server stops (Unreachable, grace, then Inaccessible), comes back sealed (still
/// Unreachable: 503), is unsealed: the same daemon reconnects and the volume is Available.
#[test]
fn server_restart_and_unseal_recovers() {
    let mut bao = Bao::start_persistent();
    bao.create_key("kek", "rsa-2048");
    bao.policy("cmkfs", true);
    let (_, tf) = bao.token("cmkfs");
    let mut v = Vol::with_kek(&bao.uri("kek", &tf, ""), &[]);
    v.mount(&["--check-interval", "300ms", "--unreachable-grace", "2s"]);
    let data = pattern(7, 10_000);
    std::fs::write(v.p("f"), &data).unwrap();

    bao.stop();
    assert!(
        wait_until(DEADLINE, || v.status()["last_check_error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable"))),
        "a stopped server is reported unreachable: {}",
        v.status()
    );
    assert_eq!(v.status()["state"], "Available", "within the grace period");
    assert!(
        v.wait_state("Inaccessible", DEADLINE).is_some(),
        "after the grace period"
    );
    assert_eq!(errno_of(std::fs::read(v.p("f"))), Some(libc::EACCES));

    bao.restart_sealed();
    assert!(
        wait_until(DEADLINE, || v.status()["last_check_error"]
            .as_str()
            .is_some_and(|e| e.contains("sealed"))),
        "a sealed server answers 503: {}",
        v.status()
    );
    assert_eq!(v.status()["state"], "Inaccessible");
    bao.unseal();
    assert!(
        v.wait_state("Available", DEADLINE).is_some(),
        "the daemon reconnects by itself: {}",
        v.status()
    );
    assert_eq!(std::fs::read(v.p("f")).unwrap(), data);
    v.umount();
}

/// A Transit rotation of the key behind a versionless URI: the daemon rewraps the keyslot to
/// version 2 by itself, so that raising min_decryption_version to 2 keeps the volume
/// Available; a URI pinned to version 1 does not follow and is refused.
#[test]
fn transit_rotation_is_followed_by_versionless_uris() {
    let bao = Bao::start();
    bao.create_key("kek", "rsa-2048");
    bao.policy("cmkfs", true);
    let (_, tf) = bao.token("cmkfs");
    let mut v = Vol::with_kek(&bao.uri("kek", &tf, ""), &[]);
    v.mount(&["--check-interval", "300ms", "--unreachable-grace", "1s"]);
    std::fs::write(v.p("f"), b"hello").unwrap();
    assert_eq!(v.status()["key_version"], "1");
    bao.ok(&["write", "-f", "transit/keys/kek/rotate"]);
    assert!(
        wait_until(DEADLINE, || v.status()["key_version"] == "2"),
        "the daemon rewraps to the new version: {}",
        v.status()
    );
    bao.ok(&["write", "transit/keys/kek/config", "min_decryption_version=2"]);
    std::thread::sleep(Duration::from_millis(1200)); // several checks at 300 ms
    assert_eq!(v.status()["state"], "Available", "{}", v.status());
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"hello");
    v.remount();
    assert_eq!(std::fs::read(v.p("f")).unwrap(), b"hello");
    v.umount();

    // Pinned to version 2, then version 3 appears: nothing moves; then 2 is disallowed.
    let mut pinned = Vol::with_kek(&bao.uri("kek", &tf, "&version=2"), &[]);
    pinned.mount(&["--check-interval", "300ms", "--unreachable-grace", "1s"]);
    bao.ok(&["write", "-f", "transit/keys/kek/rotate"]);
    bao.ok(&["write", "transit/keys/kek/config", "min_decryption_version=3"]);
    assert!(
        pinned.wait_state("Inaccessible", DEADLINE).is_some(),
        "{}",
        pinned.status()
    );
    let st = pinned.status();
    assert_eq!(st["key_version"], "2");
    assert!(
        st["last_check_error"]
            .as_str()
            .unwrap_or("")
            .contains("disallowed by policy"),
        "{st}"
    );
    pinned.umount();
}

/// A server that accepts connections but never answers: the request times out (timeout=)
/// and counts as unreachable; nothing listening: unreachable at once.
#[test]
fn hung_or_absent_server_is_unreachable() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let d = tempfile::tempdir().unwrap();
    let tf = d.path().join("token");
    std::fs::write(&tf, "s.whatever").unwrap();
    let p = open(&format!(
        "vault:http://127.0.0.1:{port}/transit/kek?token=file:{}&timeout=700ms",
        tf.display()
    ));
    let t0 = std::time::Instant::now();
    let e = p.unwrap("1", &[0u8; 256]).err().expect("no answer is an error");
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the timeout applies: {:?}",
        t0.elapsed()
    );
    drop(l);
    let e = p.current().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

/// TLS with a private CA given by ca=: without it the server's certificate is not trusted.
#[test]
fn tls_with_private_ca() {
    let bao = Bao::start_with(Mode::DevTls);
    bao.create_key("kek", "rsa-2048");
    let tf = bao.dir.path().join("root-token");
    std::fs::write(&tf, "root").unwrap();
    let base = format!("vault:{}/transit/kek?token={}", bao.addr, tf.display());
    assert!(base.starts_with("vault:https://"));
    let e = open(&base).current().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let p = open(&format!("{base}&ca={}", bao.ca.as_ref().unwrap().display()));
    let s = SecretKey::random();
    let w = p.wrap(&s).unwrap();
    assert_eq!(
        p.unwrap(&w.key.version, &w.ciphertext).unwrap().secret.expose(),
        s.expose()
    );
}

/// AppRole login: the provider logs in by itself, logs in again when its token is revoked,
/// and a destroyed secret_id is Denied.
#[test]
fn approle_login_and_relogin() {
    let bao = Bao::start();
    bao.create_key("kek", "rsa-2048");
    bao.policy("cmkfs", true);
    bao.ok(&["auth", "enable", "approle"]);
    bao.ok(&[
        "write",
        "auth/approle/role/cmkfs",
        "token_policies=cmkfs",
        "token_ttl=1h",
    ]);
    let role_id = bao.ok(&["read", "-field=role_id", "auth/approle/role/cmkfs/role-id"]);
    let secret_id = bao.ok(&["write", "-f", "-field=secret_id", "auth/approle/role/cmkfs/secret-id"]);
    let rf = bao.dir.path().join("role_id");
    let sf = bao.dir.path().join("secret_id");
    std::fs::write(&rf, role_id.trim()).unwrap();
    std::fs::write(&sf, secret_id.trim()).unwrap();
    let uri = format!(
        "vault:{}/transit/kek?role_id=file:{}&secret_id=file:{}",
        bao.addr,
        rf.display(),
        sf.display()
    );
    let p = open(&uri);
    let s = SecretKey::random();
    let w = p.wrap(&s).unwrap();
    assert_eq!(p.unwrap("1", &w.ciphertext).unwrap().secret.expose(), s.expose());
    // Every token AppRole issued is revoked: the next call logs in again.
    bao.ok(&["token", "revoke", "-mode=path", "auth/approle/login"]);
    assert_eq!(p.unwrap("1", &w.ciphertext).unwrap().secret.expose(), s.expose());
    // The secret_id is destroyed and the tokens revoked: refused.
    bao.ok(&[
        "write",
        "auth/approle/role/cmkfs/secret-id/destroy",
        &format!("secret_id={}", secret_id.trim()),
    ]);
    bao.ok(&["token", "revoke", "-mode=path", "auth/approle/login"]);
    let e = expect_err(p.unwrap("1", &w.ciphertext), ErrorKind::Denied, "AppRole login");
    assert!(e.to_string().contains("invalid"), "{e}");
}

/// Bad URIs fail at init, naming the provider, and a literal token is refused.
#[test]
fn misconfigured_uris_fail_init() {
    let d = tempfile::tempdir().unwrap();
    for (uri, text) in [
        ("vault:http://127.0.0.1:1/kek", "names no Transit mount"),
        (
            "vault:http://127.0.0.1:1/transit/kek?token=hvs.secret",
            "never the secret itself",
        ),
        ("vault:http://127.0.0.1:1/transit/kek?bogus=1", "unknown parameter"),
    ] {
        let out = cmkfs([
            OsStr::new("init"),
            OsStr::new("--kek"),
            OsStr::new(uri),
            d.path().join("c").as_os_str(),
        ]);
        assert!(!out.status.success(), "{uri} accepted");
        let e = stderr(&out);
        assert!(e.contains("vault") && e.contains(text), "{uri}: {e}");
        assert!(!e.contains("hvs.secret"), "a literal token is never printed: {e}");
    }
}
