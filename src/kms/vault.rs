//! `vault:` — an RSA key in the Transit secrets engine of HashiCorp Vault or OpenBao.
//!
//! URI: `vault:http[s]://HOST[:PORT]/MOUNT/KEYNAME[?PARAMS]`, `MOUNT` being the Transit mount
//! path (it may contain `/`), `KEYNAME` the last path segment. Parameters (`&`-separated,
//! percent-encoded):
//!
//! | name | meaning | default |
//! | --- | --- | --- |
//! | `token` | where the Vault token is: `file:/path`, `/path` or `env:NAME` (never the token itself); re-read on every request, so a rotated token file (Vault Agent sink) is picked up | `env:VAULT_TOKEN` |
//! | `role_id`, `secret_id` | AppRole login instead of a token: both are secret sources like `token` | |
//! | `approle_mount` | path of the AppRole auth mount | `approle` |
//! | `ca` | PEM file of the CA(s) to trust for `https://` instead of the public roots | |
//! | `namespace` | Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`) | |
//! | `timeout` | overall timeout of one HTTP request (humantime: `5s`, `500ms`) | `10s` |
//! | `version` | pin this key version instead of following the newest | |
//!
//! Wrap: `GET /v1/MOUNT/keys/NAME` gives the key type (rsa-2048/3072/4096), the latest version
//! and each version's public key; the volume key is wrapped locally with RSA-OAEP-SHA256 (the
//! padding Transit uses for RSA keys). The keyslot's version is the Transit key version.
//! Unwrap: `POST /v1/MOUNT/decrypt/NAME` with `vault:v<version>:<base64>`: the private key
//! never leaves Vault, and every unwrap asks Vault.
//!
//! Token policy: unwrap (mount, revalidation) needs `update` on `MOUNT/decrypt/NAME`; wrap
//! (`init`, `rotate`, `keyslot add`, automatic rewrap to a new version) also needs `read` on
//! `MOUNT/keys/NAME`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::crypto::rsa::RsaPublicKey;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::http::{self, Http};
use super::{params, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash};
use crate::crypto::SecretKey;

/// URI scheme.
pub const SCHEME: &str = "vault";

const PARAMS: &[&str] = &[
    "token",
    "role_id",
    "secret_id",
    "approle_mount",
    "ca",
    "namespace",
    "timeout",
    "version",
];

enum Auth {
    /// A token read from this source on every request.
    Token(String),
    /// AppRole login; the resulting client token is kept until Vault refuses it.
    AppRole {
        role_id: String,
        secret_id: String,
        mount: String,
    },
}

/// An RSA key in a Vault/OpenBao Transit mount.
pub struct VaultProvider {
    uri: String,
    addr: String,
    mount: String,
    name: String,
    namespace: Option<String>,
    auth: Auth,
    pinned: Option<u32>,
    http: Http,
    /// AppRole: the client token from the last login.
    login: Mutex<Option<Zeroizing<String>>>,
    /// Public keys by version (a version's public key never changes).
    public: Mutex<HashMap<u32, RsaPublicKey>>,
}

/// The parts of `GET MOUNT/keys/NAME` cmkfs uses.
struct KeyMeta {
    latest: u32,
    keys: HashMap<u32, String>,
}

impl VaultProvider {
    /// Parses `rest` (the part after `vault:`). Makes no request.
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let shown = redact(uri);
        let bad = |m: String| ProviderError::new(ErrorKind::Misconfigured, SCHEME, shown.clone(), m);
        let (url, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (addr, path) = http::split_url(url).map_err(|e| {
            bad(format!(
                "{e}; expected vault:https://HOST:8200/MOUNT/KEYNAME[?token=file:/PATH&ca=/PATH]"
            ))
        })?;
        let path = path.trim_end_matches('/');
        let (mount, name) = match path.rsplit_once('/') {
            Some((m, n)) if !m.is_empty() && !n.is_empty() => (m.trim_start_matches('/'), n),
            _ => {
                return Err(bad(format!(
                "'{url}' names no Transit mount and key: expected vault:{addr}/MOUNT/KEYNAME (e.g. {addr}/transit/kek)"
            )))
            }
        };
        if mount.starts_with("v1/") || mount == "v1" {
            return Err(bad(format!(
                "leave out the /v1 API prefix: vault:{addr}/{}/{name}",
                mount.trim_start_matches("v1").trim_start_matches('/')
            )));
        }
        let valid = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        let dotty = |s: &str| s.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
        if !valid(mount) || !valid(name) || dotty(mount) || dotty(name) {
            return Err(bad(format!("bad mount '{mount}' or key name '{name}'")));
        }
        let mut p = params::parse_params(query, '&', PARAMS).map_err(|e| bad(e.to_string()))?;
        for k in ["token", "role_id", "secret_id"] {
            if let Some(v) = p.get(k) {
                if !params::is_secret_source(v) {
                    return Err(bad(format!(
                        "{k}: must be {} (never the secret itself)",
                        params::SECRET_SOURCES
                    )));
                }
            }
        }
        let auth = match (p.remove("role_id"), p.remove("secret_id")) {
            (Some(role_id), Some(secret_id)) => {
                if p.contains_key("token") {
                    return Err(bad("give either token= or role_id= and secret_id=, not both".into()));
                }
                Auth::AppRole {
                    role_id,
                    secret_id,
                    mount: p.remove("approle_mount").unwrap_or_else(|| "approle".into()),
                }
            }
            (None, None) => {
                if p.contains_key("approle_mount") {
                    return Err(bad("approle_mount= needs role_id= and secret_id=".into()));
                }
                Auth::Token(p.remove("token").unwrap_or_else(|| "env:VAULT_TOKEN".into()))
            }
            _ => return Err(bad("AppRole login needs both role_id= and secret_id=".into())),
        };
        let timeout = match p.get("timeout") {
            Some(t) => params::parse_duration(t).map_err(|e| bad(e.to_string()))?,
            None => http::DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(bad("timeout must be between 1ms and 5m".into()));
        }
        let pinned = match p.get("version") {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(bad(format!("version must be a number >= 1, not '{v}'"))),
            },
        };
        let ca = p.get("ca").map(PathBuf::from);
        if let Some(ca) = &ca {
            if !ca.is_absolute() {
                return Err(bad("ca= must be an absolute path".into()));
            }
        }
        if ca.is_some() && addr.starts_with("http://") {
            return Err(bad("ca= given for a plain http:// address".into()));
        }
        let http = Http::new(timeout, ca.as_deref()).map_err(|e| bad(e.to_string()))?;
        Ok(VaultProvider {
            uri: uri.into(),
            addr,
            mount: mount.into(),
            name: name.into(),
            namespace: p.remove("namespace"),
            auth,
            pinned,
            http,
            login: Mutex::new(None),
            public: Mutex::new(HashMap::new()),
        })
    }

    fn key_label(&self) -> String {
        format!("{}/{} at {}", self.mount, self.name, self.addr)
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, SCHEME, self.key_label(), msg)
    }

    /// The token for the next request: read from its source, or from an AppRole login.
    fn token(&self) -> Result<Zeroizing<String>, ProviderError> {
        match &self.auth {
            Auth::Token(spec) => {
                let t = params::read_secret(spec, SCHEME, &self.key_label()).map_err(|e| {
                    // Absent now (a token file being replaced, an agent restarting) is tolerated
                    // like an outage; the message says what is missing.
                    self.err(ErrorKind::Unreachable, format!("no Vault token: {}", e.message))
                })?;
                if t.trim().is_empty() {
                    return Err(self.err(
                        ErrorKind::Unreachable,
                        format!("the Vault token source {spec} is empty"),
                    ));
                }
                Ok(t)
            }
            Auth::AppRole { .. } => {
                if let Some(t) = self.login.lock().as_ref() {
                    return Ok(t.clone());
                }
                self.approle_login()
            }
        }
    }

    fn approle_login(&self) -> Result<Zeroizing<String>, ProviderError> {
        let Auth::AppRole {
            role_id,
            secret_id,
            mount,
        } = &self.auth
        else {
            unreachable!("approle_login without AppRole")
        };
        let read = |spec: &str, what: &str| {
            params::read_secret(spec, SCHEME, &self.key_label())
                .map_err(|e| self.err(ErrorKind::Unreachable, format!("no AppRole {what}: {}", e.message)))
        };
        #[derive(serde::Serialize)]
        struct Login<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        #[derive(serde::Deserialize)]
        struct LoginAnswer {
            auth: LoginAuth,
        }
        #[derive(serde::Deserialize)]
        struct LoginAuth {
            client_token: Zeroizing<String>,
        }
        let (role_id, secret_id) = (read(role_id, "role_id")?, read(secret_id, "secret_id")?);
        let body = http::json_body(&Login {
            role_id: &role_id,
            secret_id: &secret_id,
        });
        let url = format!("{}/v1/auth/{mount}/login", self.addr);
        let r = self.send("POST", &url, None, Some(&body[..]), "AppRole login")?;
        let token = serde_json::from_slice::<LoginAnswer>(&r.body)
            .map_err(|_| {
                self.err(
                    ErrorKind::Unreachable,
                    "AppRole login answered without auth.client_token",
                )
            })?
            .auth
            .client_token;
        *self.login.lock() = Some(token.clone());
        tracing::info!(addr = %self.addr, mount = %mount, "logged in to Vault with AppRole");
        Ok(token)
    }

    /// One request; HTTP error statuses become classified errors that keep the status.
    fn send(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<http::Response, SendError> {
        let mut headers: Vec<(&str, &str)> = vec![("X-Vault-Request", "true")];
        if let Some(t) = token {
            headers.push(("X-Vault-Token", t));
        }
        if let Some(ns) = &self.namespace {
            headers.push(("X-Vault-Namespace", ns));
        }
        let r = match body {
            Some(b) => {
                headers.push(("Content-Type", "application/json"));
                self.http.post(url, &headers, b)
            }
            None => self.http.get(url, &headers),
        }
        .map_err(|e| SendError {
            status: None,
            error: self.err(
                ErrorKind::Unreachable,
                format!("{what}: {method} {url}: {e}; is the Vault server up and reachable?"),
            ),
        })?;
        if (200..300).contains(&r.status) {
            return Ok(r);
        }
        let text = server_errors(&r.error_text());
        let kind = classify(r.status, &text, what == "decrypt");
        let hint = match kind {
            ErrorKind::Denied if r.status == 403 => {
                "; the token is invalid, expired or revoked, or its policy does not allow this \
                 (unwrap needs update on MOUNT/decrypt/NAME, wrap also read on MOUNT/keys/NAME)"
            }
            ErrorKind::Denied => "; the key or this key version is no longer usable in Vault",
            ErrorKind::Unreachable => "; Vault is sealed, overloaded or failing: retried at the next check",
            ErrorKind::UnwrapFailed => "; this keyslot was not made by this key (or it is corrupted)",
            ErrorKind::Misconfigured => "",
        };
        Err(SendError {
            status: Some(r.status),
            error: self.err(kind, format!("{what}: {method} {url}: HTTP {}: {text}{hint}", r.status)),
        })
    }

    /// An authenticated request, logging in again once if an AppRole token was refused; the
    /// answer as JSON. Not for answers that hold a key: see [`Self::call_raw`].
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>, what: &str) -> Result<Value, ProviderError> {
        let url = format!("{}/v1/{path}", self.addr);
        let r = self.call_raw(method, path, body, what)?;
        serde_json::from_slice(&r.body).map_err(|e| {
            self.err(
                ErrorKind::Unreachable,
                format!("{what}: {method} {url}: answer is not JSON ({e})"),
            )
        })
    }

    /// [`Self::call`], returning the answer as received (its body is zeroized when dropped).
    fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<http::Response, ProviderError> {
        let url = format!("{}/v1/{path}", self.addr);
        let token = self.token()?;
        let r = match self.send(method, &url, Some(&token), body, what) {
            Err(SendError {
                status: Some(403),
                error,
            }) if error.kind == ErrorKind::Denied && matches!(self.auth, Auth::AppRole { .. }) => {
                // The AppRole token may have expired: one fresh login, one retry.
                *self.login.lock() = None;
                let token = self.approle_login()?;
                self.send(method, &url, Some(&token), body, what)?
            }
            r => r?,
        };
        Ok(r)
    }

    fn read_key(&self) -> Result<KeyMeta, ProviderError> {
        let v = self.call("GET", &format!("{}/keys/{}", self.mount, self.name), None, "read key")?;
        let d = &v["data"];
        let ty = d["type"].as_str().unwrap_or("?");
        if !matches!(ty, "rsa-2048" | "rsa-3072" | "rsa-4096") {
            return Err(self.err(
                ErrorKind::Misconfigured,
                format!(
                    "Transit key type is {ty}; cmkfs needs an RSA key: bao write -f {}/keys/NAME type=rsa-3072",
                    self.mount
                ),
            ));
        }
        if d["soft_deleted"].as_bool() == Some(true) {
            return Err(self.err(
                ErrorKind::Denied,
                format!(
                    "the key is soft-deleted ({}/keys/{}/soft-delete-restore brings it back)",
                    self.mount, self.name
                ),
            ));
        }
        if d["supports_decryption"].as_bool() == Some(false) {
            return Err(self.err(ErrorKind::Misconfigured, "the Transit key does not support decryption"));
        }
        let latest = d["latest_version"]
            .as_u64()
            .ok_or_else(|| self.err(ErrorKind::Unreachable, "key read answered without latest_version"))?
            as u32;
        let mut keys = HashMap::new();
        if let Some(m) = d["keys"].as_object() {
            for (ver, k) in m {
                if let (Ok(n), Some(pem)) = (ver.parse::<u32>(), k["public_key"].as_str()) {
                    keys.insert(n, pem.to_string());
                }
            }
        }
        Ok(KeyMeta { latest, keys })
    }

    /// The public key of `version` as Vault just listed it (a key deleted and created again
    /// under the same name has new public keys), remembered for unwrap's key details.
    fn public_key(&self, meta: &KeyMeta, version: u32) -> Result<RsaPublicKey, ProviderError> {
        let pem = meta.keys.get(&version).ok_or_else(|| {
            self.err(
                ErrorKind::Denied,
                format!(
                    "key version {version} is not available (latest is {}; older versions below \
                     min_decryption_version are not usable)",
                    meta.latest
                ),
            )
        })?;
        let k = rsa::public_from_pem(pem)
            .map_err(|e| self.err(ErrorKind::Misconfigured, format!("version {version} public key: {e}")))?;
        self.public.lock().insert(version, k.clone());
        Ok(k)
    }

    fn current_key(&self) -> Result<(KeyInfo, RsaPublicKey), ProviderError> {
        let meta = self.read_key()?;
        let version = self.pinned.unwrap_or(meta.latest);
        let k = self.public_key(&meta, version)?;
        Ok((KeyInfo::for_public(SCHEME, &self.key_id(), &version.to_string(), &k), k))
    }

    fn key_id(&self) -> String {
        format!("{}/{}", self.mount, self.name)
    }
}

/// `uri` with the value of any secret parameter that is not a secret source replaced, so that
/// an error about a token pasted into the URI does not print the token.
fn redact(uri: &str) -> String {
    let Some((base, query)) = uri.split_once('?') else {
        return uri.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((k, v)) if ["token", "role_id", "secret_id"].contains(&k) && !params::is_secret_source(v) => {
                format!("{k}=<redacted>")
            }
            _ => part.to_string(),
        })
        .collect();
    format!("{base}?{}", parts.join("&"))
}

/// A failed Vault request: the HTTP status when Vault answered (`None`: it could not be
/// asked), and the classified error.
struct SendError {
    status: Option<u16>,
    error: ProviderError,
}

impl From<SendError> for ProviderError {
    fn from(e: SendError) -> Self {
        e.error
    }
}

/// The `errors` array of a Vault error answer, joined, or the body itself.
fn server_errors(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let msgs: Vec<String> = v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str())
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default();
    if !msgs.is_empty() {
        return msgs.join("; ");
    }
    if v.is_object() {
        return "(no error text)".into();
    }
    let t: String = body.chars().take(200).collect();
    if t.trim().is_empty() {
        "(empty answer)".into()
    } else {
        t.trim().to_string()
    }
}

/// Maps a Vault error answer to an [`ErrorKind`].
fn classify(status: u16, text: &str, decrypt: bool) -> ErrorKind {
    let t = text.to_ascii_lowercase();
    let bad_ciphertext = t.contains("failed to rsa decrypt")
        || t.contains("decryption error")
        || t.contains("invalid ciphertext: could not decode")
        || t.contains("message authentication failed");
    match status {
        403 | 401 => ErrorKind::Denied,
        // Sealed, standby trouble, overload, consistency retries.
        503 | 502 | 504 | 429 | 412 => ErrorKind::Unreachable,
        500..=599 if decrypt && bad_ciphertext => ErrorKind::UnwrapFailed,
        500..=599 => ErrorKind::Unreachable,
        _ if t.contains("disallowed by policy") => ErrorKind::Denied,
        _ if t.contains("not found") || t.contains("soft-deleted") || t.contains("deleted") => ErrorKind::Denied,
        _ if t.contains("version is too new") => ErrorKind::Denied,
        _ if t.contains("invalid role") || t.contains("invalid secret") || t.contains("secret id") => ErrorKind::Denied,
        _ if decrypt && bad_ciphertext => ErrorKind::UnwrapFailed,
        404 => ErrorKind::Denied,
        _ => ErrorKind::Denied,
    }
}

impl KeyProvider for VaultProvider {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        Ok(self.current_key()?.0)
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let (info, k) = self.current_key()?;
        Ok(Wrapped::locally(info, &k, OaepHash::Sha256, secret))
    }

    fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        let v: u32 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
            self.err(
                ErrorKind::Misconfigured,
                format!("keyslot version '{version}' is not a Transit key version"),
            )
        })?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = json!({"ciphertext": format!("vault:v{v}:{}", b64.encode(wrapped))}).to_string();
        let r = self.call_raw(
            "POST",
            &format!("{}/decrypt/{}", self.mount, self.name),
            Some(body.as_bytes()),
            "decrypt",
        )?;
        // The answer holds the volume key (base64): straight from the zeroizing body into
        // zeroizing fields, never through a serde_json::Value.
        #[derive(serde::Deserialize)]
        struct DecryptAnswer {
            data: DecryptData,
        }
        #[derive(serde::Deserialize)]
        struct DecryptData {
            plaintext: Zeroizing<String>,
        }
        let pt = serde_json::from_slice::<DecryptAnswer>(&r.body)
            .map_err(|_| self.err(ErrorKind::Unreachable, "decrypt answered without data.plaintext"))?
            .data
            .plaintext;
        let pt = Zeroizing::new(b64.decode(pt.as_bytes()).map_err(|_| {
            self.err(
                ErrorKind::UnwrapFailed,
                "decrypt answered with a plaintext that is not base64",
            )
        })?);
        let secret = SecretKey::from_slice(&pt).ok_or_else(|| {
            self.err(
                ErrorKind::UnwrapFailed,
                format!(
                    "version {v} decrypted the keyslot to {} bytes, not a 32-byte volume key",
                    pt.len()
                ),
            )
        })?;
        // Key details for status and audit: cached per version; a token allowed to decrypt
        // but not to read the key still unwraps.
        let cached = self.public.lock().get(&v).cloned();
        let key = match cached
            .map(Ok)
            .unwrap_or_else(|| self.read_key().and_then(|m| self.public_key(&m, v)))
        {
            Ok(k) => KeyInfo::for_public(SCHEME, &self.key_id(), &v.to_string(), &k),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the Transit key's public key; unwrap still succeeded");
                KeyInfo::without_public(SCHEME, &self.key_id(), &v.to_string())
            }
        };
        Ok(Unwrapped { secret, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(rest: &str) -> Result<VaultProvider, ProviderError> {
        VaultProvider::open(&format!("vault:{rest}"), rest)
    }

    #[test]
    fn uris() {
        let p = open("https://v.example:8200/transit/kek?token=file:/run/t&timeout=2s").unwrap();
        assert_eq!(p.addr, "https://v.example:8200");
        assert_eq!((p.mount.as_str(), p.name.as_str()), ("transit", "kek"));
        assert!(p.pinned.is_none());
        let p = open("http://127.0.0.1:8200/team/transit/kek?version=3&namespace=ns1").unwrap();
        assert_eq!((p.mount.as_str(), p.name.as_str()), ("team/transit", "kek"));
        assert_eq!(p.pinned, Some(3));
        assert_eq!(p.namespace.as_deref(), Some("ns1"));
        assert!(matches!(&p.auth, Auth::Token(s) if s == "env:VAULT_TOKEN"));
        let p = open("http://h/transit/k?role_id=env:R&secret_id=file:/s").unwrap();
        assert!(matches!(&p.auth, Auth::AppRole { mount, .. } if mount == "approle"));
        for bad in [
            "http://h/kek",
            "http://h/",
            "ftp://h/transit/kek",
            "h:8200/transit/kek",
            "http://h/transit/kek?token=s.abcdef",
            "http://h/transit/kek?tokn=env:X",
            "http://h/transit/kek?version=0",
            "http://h/transit/kek?role_id=env:R",
            "http://h/transit/kek?timeout=forever",
            "http://h/v1/transit/kek",
            "http://h/transit/kek?ca=/etc/ca.pem",
            "https://h/transit/kek?ca=relative.pem",
        ] {
            let e = open(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.kind, ErrorKind::Misconfigured, "{bad}: {e}");
        }
    }

    #[test]
    fn classification() {
        use ErrorKind::*;
        assert_eq!(classify(403, "permission denied", true), Denied);
        assert_eq!(classify(400, "encryption key not found", true), Denied);
        assert_eq!(classify(400, "refusing to use soft-deleted key", true), Denied);
        assert_eq!(
            classify(
                400,
                "ciphertext or signature version is disallowed by policy (too old)",
                true
            ),
            Denied
        );
        assert_eq!(classify(404, "(no error text)", false), Denied);
        assert_eq!(classify(503, "Vault is sealed", true), Unreachable);
        assert_eq!(classify(500, "internal error", true), Unreachable);
        assert_eq!(
            classify(
                500,
                "1 error occurred: * failed to RSA decrypt the ciphertext: crypto/rsa: decryption error",
                true
            ),
            UnwrapFailed
        );
        assert_eq!(classify(400, "invalid role or secret ID", false), Denied);
    }

    #[test]
    fn error_text() {
        assert_eq!(
            server_errors("{\"errors\":[\"1 error occurred:\\n\\t* boom\\n\\n\"]}"),
            "1 error occurred: * boom"
        );
        assert_eq!(server_errors("{\"errors\":[]}"), "(no error text)");
        assert_eq!(server_errors("<html>bad gateway</html>"), "<html>bad gateway</html>");
    }
}
