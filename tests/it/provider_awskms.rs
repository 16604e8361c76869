//! The `awskms:` provider.
//!
//! No local server enforces AWS KMS's RSA decryption or key states: moto's KMS (the emulator
//! used here) encrypts with its own AES blobs whatever the algorithm, and ignores DisableKey,
//! ScheduleKeyDeletion and key policies. What moto does check, with IAM authentication turned
//! on, is the SigV4 signature (recomputed by botocore) and the caller's IAM policies. So:
//! - against moto: signed requests, the credential chain, GetPublicKey/Encrypt/Decrypt request
//!   shapes, and a full mount lifecycle with `wrap=kms`, revoked by detaching the IAM policy;
//! - against a tiny local HTTP server in this file: the classification of the documented KMS
//!   error answers (DisabledException, KMSInvalidStateException, ...), and local RSA wrapping
//!   with a real RSA private key standing in for KMS's Decrypt.
//!
//! scripts/providers/awskms.sh installs the pinned moto.
#![cfg(feature = "aws-kms")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::open_provider as open;
use crate::common::*;
use base64::Engine as _;
use cmkfs::crypto::rsa;
use cmkfs::crypto::SecretKey;
use cmkfs::kms::{ErrorKind, ProviderError};

const DEADLINE: Duration = Duration::from_secs(30);

/// The moto virtualenv (moto_server and a python with boto3).
fn moto_venv() -> PathBuf {
    let v = std::env::var_os("CMKFS_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/cmkfs-test-tools/moto"));
    assert!(
        v.join("bin/moto_server").exists() && v.join("bin/python").exists(),
        "moto is missing in {}: run scripts/providers/awskms.sh (as root) first",
        v.display()
    );
    v
}

/// Credentials for in-process providers come from one shared credentials file (one
/// `[profile]` per test), never from this process's environment, which tests share.
fn profile(name: &str, id: &str, secret: &str) {
    static FILE: OnceLock<(tempfile::TempDir, Mutex<BTreeMap<String, String>>)> = OnceLock::new();
    let (dir, profiles) = FILE.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        set_process_env("AWS_SHARED_CREDENTIALS_FILE", d.path().join("credentials"));
        set_process_env("AWS_CONFIG_FILE", d.path().join("config"));
        (d, Mutex::new(BTreeMap::new()))
    });
    let mut p = profiles.lock().unwrap();
    p.insert(
        name.into(),
        format!("[{name}]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    );
    let text: String = p.values().cloned().collect();
    let f = dir.path().join("credentials");
    std::fs::write(f.with_extension("tmp"), text).unwrap();
    std::fs::rename(f.with_extension("tmp"), f).unwrap();
}

/// A moto server with IAM authentication on: an admin user, a `cmkfs` user whose only
/// policy allows kms:*, and two RSA_2048 ENCRYPT_DECRYPT keys.
struct Moto {
    child: Child,
    endpoint: String,
    venv: PathBuf,
    setup: serde_json::Value,
}

const SETUP: &str = r#"
import boto3, json, os, requests
E = os.environ["E"]
kw = dict(endpoint_url=E, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam, kms = boto3.client("iam", **kw), boto3.client("kms", **kw)
def user(name, actions):
    iam.create_user(UserName=name)
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    arn = iam.create_policy(PolicyName=name + "-policy", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    k = iam.create_access_key(UserName=name)["AccessKey"]
    return {"id": k["AccessKeyId"], "secret": k["SecretAccessKey"], "policy": arn}
out = {"admin": user("admin", "*"), "cmkfs": user("cmkfs", "kms:*")}
out["keys"] = [kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"] for _ in range(2)]
out["aes"] = kms.create_key()["KeyMetadata"]["Arn"]
requests.post(E + "/moto-api/reset-auth", data=b"0").raise_for_status()
print(json.dumps(out))
"#;

/// Runs as the admin: attaches (`attach`) or detaches the cmkfs user's policy.
const POLICY: &str = r#"
import boto3, os, sys
iam = boto3.client("iam", endpoint_url=os.environ["E"], region_name="us-east-1",
                   aws_access_key_id=os.environ["ID"], aws_secret_access_key=os.environ["SECRET"])
f = iam.attach_user_policy if sys.argv[1] == "attach" else iam.detach_user_policy
f(UserName="cmkfs", PolicyArn=os.environ["POLICY"])
"#;

impl Moto {
    fn start() -> Moto {
        let venv = moto_venv();
        // A port can be taken by another process between probe and bind (common/ports.rs):
        // a few tries, each on a fresh port.
        let mut tries = 0;
        let (child, port) = loop {
            let port = free_port();
            let log = tempfile::NamedTempFile::new().unwrap();
            let mut child = Command::new(venv.join("bin/moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.reopen().unwrap())
                .spawn()
                .expect("start moto_server (scripts/providers/awskms.sh installs it)");
            let up = wait_until(DEADLINE, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || child.try_wait().unwrap().is_some()
            });
            if up && child.try_wait().unwrap().is_none() {
                break (child, port);
            }
            let _ = child.kill();
            let _ = child.wait();
            tries += 1;
            assert!(
                tries < 5,
                "moto_server did not start: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut m = Moto {
            child,
            endpoint,
            venv,
            setup: serde_json::Value::Null,
        };
        m.setup = serde_json::from_str(&m.python(SETUP, &[], &[])).unwrap();
        m
    }

    fn python(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        run_ok(
            Command::new(self.venv.join("bin/python"))
                .arg("-c")
                .arg(script)
                .args(args)
                .env("E", &self.endpoint)
                .envs(env.iter().copied()),
            "python",
        )
    }

    /// Attaches or detaches the cmkfs user's only IAM policy (as the admin).
    fn cmkfs_policy(&self, attach: bool) {
        let a = &self.setup["admin"];
        self.python(
            POLICY,
            &[if attach { "attach" } else { "detach" }],
            &[
                ("ID", a["id"].as_str().unwrap()),
                ("SECRET", a["secret"].as_str().unwrap()),
                ("POLICY", self.setup["cmkfs"]["policy"].as_str().unwrap()),
            ],
        );
    }

    fn key(&self, i: usize) -> &str {
        self.setup["keys"][i].as_str().unwrap()
    }

    fn cmkfs_creds(&self) -> (&str, &str) {
        let c = &self.setup["cmkfs"];
        (c["id"].as_str().unwrap(), c["secret"].as_str().unwrap())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn expect_err<T>(r: Result<T, ProviderError>, kind: ErrorKind, text: &str) -> ProviderError {
    expect_provider_err(r, kind, text, "awskms key ")
}

/// A full mount lifecycle against moto with `wrap=kms`, credentials from the environment
/// (passed to the daemon), every request SigV4-signed and checked by moto; revocation is the
/// IAM policy detached from the user (AccessDenied), restore attaches it again.
#[test]
fn moto_lifecycle_with_signed_requests_and_iam_revocation() {
    let moto = Moto::start();
    let (id, secret) = moto.cmkfs_creds();
    let uri = |i| format!("awskms:{}?endpoint={}&wrap=kms&timeout=3s", moto.key(i), moto.endpoint);
    let (u1, u2) = (uri(0), uri(1));
    let mut v = Vol::with_kek(
        &u1,
        &[
            ("AWS_ACCESS_KEY_ID", id.as_ref()),
            ("AWS_SECRET_ACCESS_KEY", secret.as_ref()),
            ("AWS_PROFILE", "no-such-profile".as_ref()),
        ],
    );
    let revoked = provider_lifecycle(
        &mut v,
        Some(&u2),
        || moto.cmkfs_policy(false),
        || moto.cmkfs_policy(true),
    );
    let err = revoked["last_check_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("awskms") && err.contains("AccessDenied") && err.contains("kms:Decrypt"),
        "the reason names the provider and KMS's answer: {revoked}"
    );
}

/// Signing and credentials as moto checks them, and the request shapes it accepts.
#[test]
fn moto_signing_credentials_and_plumbing() {
    let moto = Moto::start();
    let (id, secret) = moto.cmkfs_creds();
    profile("moto-good", id, secret);
    profile("moto-bad-secret", id, "not-the-secret");
    profile("moto-unknown", "AKIAUNKNOWNUNKNOWN00", secret);
    let uri = |profile: &str, extra: &str| {
        format!(
            "awskms:{}?endpoint={}&profile={profile}&timeout=3s{extra}",
            moto.key(0),
            moto.endpoint
        )
    };

    // wrap=kms: GetPublicKey (key details), Encrypt, Decrypt.
    let p = open(&uri("moto-good", "&wrap=kms"));
    let info = p.current().unwrap();
    assert_eq!((info.bits, info.version.as_str()), (Some(2048), "1"));
    assert!(
        moto.key(0).ends_with(&info.key_id),
        "{} names {}",
        info.key_id,
        moto.key(0)
    );
    let s = SecretKey::random();
    let w = p.wrap(&s).unwrap();
    let u = p.unwrap("1", &w.ciphertext).unwrap();
    assert_eq!(u.secret.expose(), s.expose());
    assert_eq!(u.key.fingerprint, info.fingerprint);

    // Another key's ciphertext: moto answers AccessDenied where KMS says IncorrectKeyException.
    let other = open(&format!(
        "awskms:{}?endpoint={}&profile=moto-good&wrap=kms",
        moto.key(1),
        moto.endpoint
    ));
    let w_other = other.wrap(&s).unwrap();
    assert!(p.unwrap("1", &w_other.ciphertext).is_err());

    // wrap=local: GetPublicKey's DER key wraps here; moto cannot RSA-decrypt (it only knows
    // its own AES blobs) and says so as InvalidCiphertextException, classified UnwrapFailed.
    let local = open(&uri("moto-good", ""));
    let wl = local.wrap(&s).unwrap();
    assert_eq!(wl.ciphertext.len(), 256, "RSA-2048 OAEP ciphertext made locally");
    expect_err(
        local.unwrap("1", &wl.ciphertext),
        ErrorKind::UnwrapFailed,
        "InvalidCiphertextException",
    );

    // A symmetric key has no public key: refused as misconfigured.
    let aes = open(&format!(
        "awskms:{}?endpoint={}&profile=moto-good",
        moto.setup["aes"].as_str().unwrap(),
        moto.endpoint
    ));
    assert!(aes.current().is_err());

    // Signature checks: wrong secret, unknown access key.
    expect_err(
        open(&uri("moto-bad-secret", "&wrap=kms")).unwrap("1", &w.ciphertext),
        ErrorKind::Denied,
        "SignatureDoesNotMatch",
    );
    expect_err(
        open(&uri("moto-unknown", "&wrap=kms")).unwrap("1", &w.ciphertext),
        ErrorKind::Denied,
        "InvalidClientTokenId",
    );
    // No such profile: no credentials, tolerated like an outage and saying where it looked.
    expect_err(
        open(&uri("moto-missing-profile", "")).unwrap("1", &w.ciphertext),
        ErrorKind::Unreachable,
        "no AWS credentials",
    );

    // The server goes away: unreachable, naming the endpoint.
    let endpoint = moto.endpoint.clone();
    drop(moto);
    expect_err(p.unwrap("1", &w.ciphertext), ErrorKind::Unreachable, &endpoint);
}

/// One recorded request.
#[derive(Debug, Clone)]
struct Seen {
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
}

type Handler = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

/// A minimal HTTP/1.1 server answering each request with `handler`, recording requests.
struct FakeKms {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeKms {
    fn start(handler: Box<Handler>) -> FakeKms {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(vec![]));
        let rec = seen.clone();
        let handler: Arc<Handler> = Arc::from(handler);
        std::thread::spawn(move || {
            // One thread per connection: clients (a mounted daemon) keep theirs alive.
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (handler, rec) = (handler.clone(), rec.clone());
                std::thread::spawn(move || serve(conn, &*handler, &rec));
            }
        });
        FakeKms { endpoint, seen }
    }
}

fn serve(mut conn: std::net::TcpStream, handler: &Handler, rec: &Mutex<Vec<Seen>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        let n: usize = headers.get("content-length").map(|v| v.parse().unwrap()).unwrap_or(0);
        let mut body = vec![0; n];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let seen = Seen {
            headers,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        };
        let (status, answer) = handler(&seen);
        rec.lock().unwrap().push(seen);
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

const ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// KMS's documented error answers (JSON 1.1: `__type` and `message`, status 400 or 5xx),
/// served one after the other, and how the provider classifies each; plus the request
/// shapes (target, content type, SigV4 Authorization, JSON fields) it sends.
#[test]
fn recorded_kms_errors_are_classified() {
    profile("fake", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    // Answers as AWS KMS sends them (AWS KMS API reference, "Common Errors" and per-action
    // errors; the __type carries a namespace prefix on some endpoints).
    let cases: Vec<(u16, &str, String, ErrorKind)> = vec![
        (400, "DisabledException", format!("{ARN} is disabled."), ErrorKind::Denied),
        (400, "KMSInvalidStateException", format!("{ARN} is pending deletion."), ErrorKind::Denied),
        (400, "NotFoundException", format!("Key '{ARN}' does not exist"), ErrorKind::Denied),
        (
            400,
            "AccessDeniedException",
            "User: arn:aws:iam::111122223333:user/cmkfs is not authorized to perform: kms:Decrypt on resource: ARN because no identity-based policy allows the kms:Decrypt action".to_string(),
            ErrorKind::Denied,
        ),
        (400, "UnrecognizedClientException", "The security token included in the request is invalid.".to_string(), ErrorKind::Denied),
        (400, "IncorrectKeyException", "The key ID in the request does not identify a CMK that can perform this operation.".to_string(), ErrorKind::UnwrapFailed),
        (400, "com.amazonaws.kms#InvalidCiphertextException", "".to_string(), ErrorKind::UnwrapFailed),
        (400, "ThrottlingException", "Rate exceeded".to_string(), ErrorKind::Unreachable),
        (400, "ExpiredTokenException", "The security token included in the request is expired".to_string(), ErrorKind::Unreachable),
        (500, "KMSInternalException", "An internal error occurred".to_string(), ErrorKind::Unreachable),
        (503, "ServiceUnavailableException", "Service unavailable".to_string(), ErrorKind::Unreachable),
    ];
    let answers: Arc<Mutex<Vec<(u16, String)>>> = Arc::new(Mutex::new(
        cases
            .iter()
            .rev()
            .map(|(s, t, m, _)| (*s, serde_json::json!({"__type": t, "message": m}).to_string()))
            .collect(),
    ));
    let a = answers.clone();
    let fake = FakeKms::start(Box::new(move |_| a.lock().unwrap().pop().unwrap_or((500, "{}".into()))));
    let p = open(&format!(
        "awskms:{ARN}?endpoint={}&profile=fake&timeout=3s",
        fake.endpoint
    ));
    for (status, ty, _, kind) in &cases {
        let short = ty.rsplit('#').next().unwrap();
        let e = expect_err(p.unwrap("1", &[7u8; 256]), *kind, short);
        assert!(e.to_string().contains(&format!("HTTP {status}")), "{e}");
        assert!(e.to_string().contains("eu-west-1"), "{e}");
    }
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), cases.len());
    let r = &seen[0];
    assert_eq!(r.headers["x-amz-target"], "TrentService.Decrypt");
    assert_eq!(r.headers["content-type"], "application/x-amz-json-1.1");
    let auth = &r.headers["authorization"];
    let date = &r.headers["x-amz-date"][..8];
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{date}/eu-west-1/kms/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
        )),
        "{auth}"
    );
    assert_eq!(r.body["KeyId"], ARN);
    assert_eq!(r.body["EncryptionAlgorithm"], "RSAES_OAEP_SHA_256");
    assert_eq!(
        r.body["CiphertextBlob"],
        base64::engine::general_purpose::STANDARD.encode([7u8; 256])
    );
    assert!(!r.headers.contains_key("x-amz-security-token"));
}

/// wrap=local end to end: GetPublicKey gives a real RSA public key (DER), the provider wraps
/// locally with OAEP-SHA256, and Decrypt is answered by the matching private key, as KMS
/// does inside its HSMs. A keyslot of another key is UnwrapFailed.
#[test]
fn local_wrap_with_get_public_key() {
    profile("fake-rsa", "AKIDEXAMPLE2", "secret2");
    let private = rsa::generate(2048).unwrap();
    let der = private.to_public_key().to_der().to_vec();
    let public = private.to_public_key();
    let fake = FakeKms::start(Box::new(move |r| {
        let b64 = base64::engine::general_purpose::STANDARD;
        match r.headers["x-amz-target"].as_str() {
            "TrentService.GetPublicKey" => (
                200,
                serde_json::json!({"KeyId": ARN, "PublicKey": b64.encode(&der), "KeyUsage": "ENCRYPT_DECRYPT",
                    "KeySpec": "RSA_2048", "EncryptionAlgorithms": ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]})
                .to_string(),
            ),
            "TrentService.Decrypt" => {
                let ct = b64.decode(r.body["CiphertextBlob"].as_str().unwrap()).unwrap();
                match rsa::unwrap_with(&private, rsa::OaepHash::Sha256, &ct) {
                    Some(s) => (
                        200,
                        serde_json::json!({"KeyId": ARN, "Plaintext": b64.encode(s.expose()),
                            "EncryptionAlgorithm": "RSAES_OAEP_SHA_256"})
                        .to_string(),
                    ),
                    None => (
                        400,
                        serde_json::json!({"__type": "InvalidCiphertextException"}).to_string(),
                    ),
                }
            }
            _ => (
                400,
                serde_json::json!({"__type": "UnsupportedOperationException"}).to_string(),
            ),
        }
    }));
    let p = open(&format!("awskms:{ARN}?endpoint={}&profile=fake-rsa", fake.endpoint));
    let s = SecretKey::random();
    let w = p.wrap(&s).unwrap();
    assert_eq!(w.key.fingerprint, Some(rsa::fingerprint(&public)));
    assert_eq!(w.key.version, "1");
    for _ in 0..3 {
        assert_eq!(p.unwrap("1", &w.ciphertext).unwrap().secret.expose(), s.expose());
    }
    let other = rsa::generate(2048).unwrap();
    let foreign = rsa::wrap(&other.to_public_key(), &s);
    expect_err(
        p.unwrap("1", &foreign),
        ErrorKind::UnwrapFailed,
        "InvalidCiphertextException",
    );
    expect_err(p.unwrap("2", &w.ciphertext), ErrorKind::Misconfigured, "only version 1");
    let targets: Vec<String> = fake
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers["x-amz-target"].clone())
        .collect();
    assert_eq!(
        targets.iter().filter(|t| *t == "TrentService.GetPublicKey").count(),
        1,
        "the public key is fetched once: {targets:?}"
    );
    assert_eq!(
        targets.iter().filter(|t| *t == "TrentService.Decrypt").count(),
        4,
        "every unwrap asks KMS"
    );
}

/// The mount lifecycle with local wrapping against a stand-in KMS that holds two real RSA
/// keys and answers as KMS does: revocation is `DisableKey` (DisabledException on Decrypt),
/// restore is `EnableKey`. This is the daemon's path for the real service's key states, which
/// no emulator enforces.
#[test]
fn stand_in_kms_lifecycle_disable_enable() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let arn2 = ARN.replace("1234abcd", "5678efab");
    let keys: Arc<BTreeMap<String, rsa::RsaPrivateKey>> = Arc::new(
        [ARN.to_string(), arn2.clone()]
            .into_iter()
            .map(|a| (a, rsa::generate(2048).unwrap()))
            .collect(),
    );
    let disabled = Arc::new(AtomicBool::new(false));
    let d = disabled.clone();
    let fake = FakeKms::start(Box::new(move |r| {
        let b64 = base64::engine::general_purpose::STANDARD;
        let id = r.body["KeyId"].as_str().unwrap_or_default();
        let Some(k) = keys.get(id) else {
            return (
                400,
                serde_json::json!({"__type": "NotFoundException", "message": format!("Key '{id}' does not exist")})
                    .to_string(),
            );
        };
        if d.load(Ordering::SeqCst) && id == ARN {
            return (
                400,
                serde_json::json!({"__type": "DisabledException", "message": format!("{id} is disabled.")}).to_string(),
            );
        }
        match r.headers["x-amz-target"].as_str() {
            "TrentService.GetPublicKey" => {
                let der = k.to_public_key().to_der().to_vec();
                (
                    200,
                    serde_json::json!({"KeyId": id, "PublicKey": b64.encode(&der), "KeyUsage": "ENCRYPT_DECRYPT",
                    "EncryptionAlgorithms": ["RSAES_OAEP_SHA_256"]})
                    .to_string(),
                )
            }
            "TrentService.Decrypt" => {
                let ct = b64.decode(r.body["CiphertextBlob"].as_str().unwrap()).unwrap();
                match rsa::unwrap_with(k, rsa::OaepHash::Sha256, &ct) {
                    Some(s) => (
                        200,
                        serde_json::json!({"KeyId": id, "Plaintext": b64.encode(s.expose())}).to_string(),
                    ),
                    None => (400, serde_json::json!({"__type": "IncorrectKeyException"}).to_string()),
                }
            }
            _ => (
                400,
                serde_json::json!({"__type": "UnsupportedOperationException"}).to_string(),
            ),
        }
    }));
    let uri = |arn: &str| format!("awskms:{arn}?endpoint={}&timeout=2s", fake.endpoint);
    let (u1, u2) = (uri(&arn2), uri(ARN));
    let mut v = Vol::with_kek(
        &u1,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".as_ref()),
            ("AWS_SECRET_ACCESS_KEY", "secret".as_ref()),
        ],
    );
    let revoked = provider_lifecycle(
        &mut v,
        Some(&u2),
        || disabled.store(true, Ordering::SeqCst),
        || disabled.store(false, Ordering::SeqCst),
    );
    let err = revoked["last_check_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("DisabledException") && err.contains("enable-key"),
        "the reason names KMS's answer and the fix: {revoked}"
    );
}
