//! `awskms:` — an asymmetric RSA key (`ENCRYPT_DECRYPT`) in AWS KMS.
//!
//! URI: `awskms:KEY[?PARAMS]`, `KEY` being a key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID`), an
//! alias ARN, a key id or `alias/NAME`. Parameters (`&`-separated, percent-encoded):
//!
//! | name | meaning | default |
//! | --- | --- | --- |
//! | `region` | AWS region | the ARN's, else `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region` |
//! | `endpoint` | service URL (VPC endpoint, FIPS endpoint, a local emulator) | `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`, else `https://kms.REGION.amazonaws.com` |
//! | `profile` | shared credentials/config profile | `AWS_PROFILE`, else `default` |
//! | `timeout` | overall timeout of one HTTP request | `10s` |
//! | `wrap` | `local`: GetPublicKey once, RSA-OAEP-SHA256 here; `kms`: KMS Encrypt | `local` |
//!
//! Credentials (looked up again for every request, so rotated files are picked up): the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) unless the URI
//! names a `profile`, then the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
//! `~/.aws/credentials`) and the config file (`AWS_CONFIG_FILE`, default `~/.aws/config`).
//! Requests are KMS JSON 1.1 calls signed with SigV4 ([`sigv4`]).
//!
//! Unwrap is always `Decrypt` with `EncryptionAlgorithm=RSAES_OAEP_SHA_256` inside KMS. KMS
//! keys have no versions a client sees (rotation of asymmetric keys means a new key): the
//! version is always "1".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::crypto::rsa::RsaPublicKey;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::http::{self, Http};
use super::{params, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa;
use crate::crypto::SecretKey;

/// URI scheme.
pub const SCHEME: &str = "awskms";

const PARAMS: &[&str] = &["region", "endpoint", "profile", "timeout", "wrap"];
const ALGORITHM: &str = "RSAES_OAEP_SHA_256";

/// An RSA key in AWS KMS.
pub struct AwsKmsProvider {
    uri: String,
    key: String,
    region: String,
    endpoint: String,
    host: String,
    profile: Option<String>,
    wrap_in_kms: bool,
    http: Http,
    /// The public key (an asymmetric KMS key's key material never changes).
    public: Mutex<Option<(KeyInfo, RsaPublicKey)>>,
}

/// AWS credentials (zeroized on drop).
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token of temporary credentials.
    pub session_token: Option<Zeroizing<String>>,
}

impl AwsKmsProvider {
    /// Parses `rest` (the part after `awskms:`). Makes no request.
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let bad = |m: String| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, m);
        let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
        let p = params::parse_params(query, '&', PARAMS).map_err(bad)?;
        if key.is_empty() {
            return Err(bad(
                "no key: expected awskms:arn:aws:kms:REGION:ACCOUNT:key/ID or awskms:KEYID?region=REGION".into(),
            ));
        }
        let arn_region = if let Some(arn) = key.strip_prefix("arn:") {
            let parts: Vec<&str> = arn.splitn(5, ':').collect();
            if parts.len() != 5
                || parts[1] != "kms"
                || parts[2].is_empty()
                || !(parts[4].starts_with("key/") || parts[4].starts_with("alias/"))
            {
                return Err(bad(format!(
                    "'{key}' is not a KMS key or alias ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)"
                )));
            }
            Some(parts[2].to_string())
        } else {
            if key.contains(':') || key.contains('?') || key.contains(' ') {
                return Err(bad(format!("'{key}' is not a KMS key id, alias/NAME or ARN")));
            }
            None
        };
        let profile = p.get("profile").cloned();
        let region = match (&arn_region, p.get("region")) {
            (Some(a), Some(r)) if a != r => {
                return Err(bad(format!("region={r} contradicts the ARN's region {a}")));
            }
            (Some(a), _) => a.clone(),
            (None, Some(r)) => r.clone(),
            (None, None) => default_region(profile.as_deref())
                .ok_or_else(|| bad("no region: give region=, use a key ARN, or set AWS_REGION".into()))?,
        };
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad(format!("bad region '{region}'")));
        }
        let endpoint = match p.get("endpoint") {
            Some(e) => e.clone(),
            None => std::env::var("AWS_ENDPOINT_URL_KMS")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .unwrap_or_else(|_| {
                    let suffix = if region.starts_with("cn-") {
                        "amazonaws.com.cn"
                    } else {
                        "amazonaws.com"
                    };
                    format!("https://kms.{region}.{suffix}")
                }),
        };
        let (origin, path) = http::split_url(&endpoint).map_err(|e| bad(format!("endpoint: {e}")))?;
        if !path.is_empty() {
            return Err(bad(format!("endpoint '{endpoint}' must have no path")));
        }
        let host = origin.split_once("://").map(|(_, h)| h.to_string()).unwrap_or_default();
        let wrap_in_kms = match p.get("wrap").map(String::as_str) {
            None | Some("local") => false,
            Some("kms") => true,
            Some(o) => return Err(bad(format!("wrap must be local or kms, not '{o}'"))),
        };
        let timeout = match p.get("timeout") {
            Some(t) => params::parse_duration(t).map_err(bad)?,
            None => http::DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(bad("timeout must be between 1ms and 5m".into()));
        }
        let http = Http::new(timeout, None).map_err(bad)?;
        Ok(AwsKmsProvider {
            uri: uri.into(),
            key: key.into(),
            region,
            endpoint: origin,
            host,
            profile,
            wrap_in_kms,
            http,
            public: Mutex::new(None),
        })
    }

    fn key_label(&self) -> String {
        format!("{} in {} at {}", self.key, self.region, self.endpoint)
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, SCHEME, self.key_label(), msg)
    }

    /// One signed KMS call (`TrentService.<action>`), its answer as JSON. Not for requests or
    /// answers that hold a key: see [`Self::call_raw`].
    fn call(&self, action: &str, body: &Value) -> Result<Value, ProviderError> {
        let r = self.call_raw(action, &http::json_body(body))?;
        serde_json::from_slice(&r.body)
            .map_err(|e| self.err(ErrorKind::Unreachable, format!("{action}: answer is not JSON ({e})")))
    }

    /// One signed KMS call with a ready JSON `payload`; a 200 answer as received (its body is
    /// zeroized when dropped).
    fn call_raw(&self, action: &str, payload: &[u8]) -> Result<http::Response, ProviderError> {
        let creds = credentials(self.profile.as_deref()).map_err(|m| self.err(ErrorKind::Unreachable, m))?;
        let target = format!("TrentService.{action}");
        let amz_date = sigv4::amz_date(std::time::SystemTime::now());
        let mut headers = vec![
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("host".to_string(), self.host.clone()),
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-target".to_string(), target),
        ];
        if let Some(t) = &creds.session_token {
            headers.push(("x-amz-security-token".to_string(), t.to_string()));
        }
        let auth = sigv4::authorization(
            &creds,
            &sigv4::Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                payload,
            },
            &amz_date,
            &self.region,
            "kms",
        );
        let mut h: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(k, _)| k != "host")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        h.push(("authorization", &auth));
        let url = format!("{}/", self.endpoint);
        let r = self.http.post(&url, &h, payload).map_err(|e| {
            self.err(
                ErrorKind::Unreachable,
                format!("{action}: POST {url}: {e}; is the KMS endpoint reachable?"),
            )
        })?;
        if r.status == 200 {
            return Ok(r);
        }
        let (code, message) = error_of(&r.error_text());
        let kind = classify(r.status, &code);
        let hint = match code.as_str() {
            "AccessDeniedException" | "AccessDenied" => {
                "; the key policy, an IAM policy or a grant no longer allows this principal"
            }
            "DisabledException" => "; the key is disabled (aws kms enable-key restores access)",
            "KMSInvalidStateException" => {
                "; the key is pending deletion or otherwise unusable (aws kms cancel-key-deletion, then enable-key)"
            }
            "NotFoundException" => "; no such key in this account and region",
            "UnrecognizedClientException" | "InvalidClientTokenId" => "; the access key is unknown or deactivated",
            "InvalidSignatureException" | "SignatureDoesNotMatch" => {
                "; wrong secret access key, or this machine's clock is off"
            }
            "ExpiredTokenException" => "; the temporary credentials expired: refresh them",
            _ => "",
        };
        Err(self.err(kind, format!("{action}: HTTP {}: {code}: {message}{hint}", r.status)))
    }

    fn public_key(&self) -> Result<(KeyInfo, RsaPublicKey), ProviderError> {
        if let Some(k) = self.public.lock().as_ref() {
            return Ok(k.clone());
        }
        let r = self.call("GetPublicKey", &json!({"KeyId": self.key}))?;
        if r["KeyUsage"].as_str().is_some_and(|u| u != "ENCRYPT_DECRYPT") {
            return Err(self.err(
                ErrorKind::Misconfigured,
                format!(
                    "key usage is {}; cmkfs needs an RSA key with KeyUsage ENCRYPT_DECRYPT",
                    r["KeyUsage"]
                ),
            ));
        }
        if let Some(algs) = r["EncryptionAlgorithms"].as_array() {
            if !algs.iter().any(|a| a == ALGORITHM) {
                return Err(self.err(
                    ErrorKind::Misconfigured,
                    format!("the key does not offer {ALGORITHM} (it offers {algs:?})"),
                ));
            }
        }
        let der = r["PublicKey"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .ok_or_else(|| self.err(ErrorKind::Unreachable, "GetPublicKey answered without a PublicKey"))?;
        let k = rsa::public_from_der(&der).map_err(|e| self.err(ErrorKind::Misconfigured, e.to_string()))?;
        let id = r["KeyId"].as_str().unwrap_or(&self.key).to_string();
        let info = KeyInfo::for_public(SCHEME, &id, "1", &k);
        *self.public.lock() = Some((info.clone(), k.clone()));
        Ok((info, k))
    }
}

fn default_region(profile: Option<&str>) -> Option<String> {
    for v in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(r) = std::env::var(v) {
            if !r.is_empty() {
                return Some(r);
            }
        }
    }
    let profile = profile_name(profile);
    let config = shared_file("AWS_CONFIG_FILE", "config")?;
    let section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    ini_section(&std::fs::read_to_string(config).ok()?, &section)
        .remove("region")
        .map(|r| r.to_string())
}

fn profile_name(profile: Option<&str>) -> String {
    profile
        .map(str::to_string)
        .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| "default".into())
}

fn shared_file(var: &str, name: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws").join(name)),
    }
}

/// `name = value` pairs of one `[section]` of an AWS ini file.
fn ini_section(text: &str, section: &str) -> BTreeMap<String, Zeroizing<String>> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.starts_with(';') || l.is_empty() {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = s.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = l.split_once('=') {
                out.insert(k.trim().to_ascii_lowercase(), Zeroizing::new(v.trim().to_string()));
            }
        }
    }
    out
}

/// The standard credential chain, minus instance metadata: environment, then the shared
/// credentials file, then the config file.
pub fn credentials(profile: Option<&str>) -> Result<Credentials, String> {
    if profile.is_none() {
        if let (Ok(id), Ok(secret)) = (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            if !id.is_empty() && !secret.is_empty() {
                return Ok(Credentials {
                    access_key_id: id,
                    secret_access_key: Zeroizing::new(secret),
                    session_token: std::env::var("AWS_SESSION_TOKEN")
                        .ok()
                        .filter(|t| !t.is_empty())
                        .map(Zeroizing::new),
                });
            }
        }
    }
    let name = profile_name(profile);
    let mut looked = vec![];
    for (var, file, section) in [
        ("AWS_SHARED_CREDENTIALS_FILE", "credentials", name.clone()),
        (
            "AWS_CONFIG_FILE",
            "config",
            if name == "default" {
                name.clone()
            } else {
                format!("profile {name}")
            },
        ),
    ] {
        let Some(path) = shared_file(var, file) else { continue };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => Zeroizing::new(t),
            Err(_) => {
                looked.push(format!("{} (absent)", path.display()));
                continue;
            }
        };
        let mut s = ini_section(&text, &section);
        if let (Some(id), Some(secret)) = (s.remove("aws_access_key_id"), s.remove("aws_secret_access_key")) {
            return Ok(Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret,
                session_token: s.remove("aws_session_token"),
            });
        }
        looked.push(format!("{} [{section}]", path.display()));
    }
    Err(format!(
        "no AWS credentials: {}looked in {}",
        if profile.is_none() {
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not set; "
        } else {
            ""
        },
        looked.join(", ")
    ))
}

/// The error code and message of a KMS JSON error answer.
fn error_of(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if v.is_null() && body.trim_start().starts_with('<') {
        // Query-protocol XML errors (sent by some proxies and emulators for signing failures).
        let tag = |t: &str| {
            body.split_once(&format!("<{t}>"))
                .and_then(|(_, r)| r.split_once(&format!("</{t}>")))
                .map(|(x, _)| x.trim().to_string())
        };
        if let Some(code) = tag("Code") {
            return (code, tag("Message").unwrap_or_default());
        }
    }
    let code = v["__type"]
        .as_str()
        .or_else(|| v["code"].as_str())
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| "(no error code)".into());
    let message = v["message"]
        .as_str()
        .or_else(|| v["Message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| body.chars().take(200).collect::<String>().trim().to_string());
    (code, message)
}

/// Maps a KMS error answer to an [`ErrorKind`].
fn classify(status: u16, code: &str) -> ErrorKind {
    match code {
        "AccessDeniedException"
        | "AccessDenied"
        | "DisabledException"
        | "KMSInvalidStateException"
        | "NotFoundException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken" => ErrorKind::Denied,
        "IncorrectKeyException" | "InvalidCiphertextException" => ErrorKind::UnwrapFailed,
        "InvalidKeyUsageException" | "ValidationException" | "UnsupportedOperationException" => {
            ErrorKind::Misconfigured
        }
        "ThrottlingException"
        | "LimitExceededException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "ExpiredTokenException"
        | "RequestExpired"
        | "ServiceUnavailable"
        | "InternalFailure" => ErrorKind::Unreachable,
        _ if status >= 500 || status == 429 => ErrorKind::Unreachable,
        _ => ErrorKind::Denied,
    }
}

impl KeyProvider for AwsKmsProvider {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        Ok(self.public_key()?.0)
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let (info, k) = self.public_key()?;
        let ciphertext = if self.wrap_in_kms {
            let b64 = base64::engine::general_purpose::STANDARD;
            let plaintext = Zeroizing::new(b64.encode(secret.expose()));
            // The request holds the volume key: serialised straight into a zeroizing body,
            // never through a serde_json::Value.
            #[derive(serde::Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct EncryptRequest<'a> {
                key_id: &'a str,
                plaintext: &'a str,
                encryption_algorithm: &'a str,
            }
            let body = http::json_body(&EncryptRequest {
                key_id: &self.key,
                plaintext: &plaintext,
                encryption_algorithm: ALGORITHM,
            });
            let r = self.call_raw("Encrypt", &body)?;
            let r: Value = serde_json::from_slice(&r.body)
                .map_err(|e| self.err(ErrorKind::Unreachable, format!("Encrypt: answer is not JSON ({e})")))?;
            r["CiphertextBlob"]
                .as_str()
                .and_then(|c| b64.decode(c).ok())
                .ok_or_else(|| self.err(ErrorKind::Unreachable, "Encrypt answered without a CiphertextBlob"))?
        } else {
            rsa::wrap_with(&k, rsa::OaepHash::Sha256, secret)
        };
        Ok(Wrapped { key: info, ciphertext })
    }

    fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        if version != "1" {
            return Err(self.err(
                ErrorKind::Misconfigured,
                format!("keyslot version '{version}': KMS keys have only version 1"),
            ));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let r = self.call_raw(
            "Decrypt",
            &http::json_body(
                &json!({"KeyId": self.key, "CiphertextBlob": b64.encode(wrapped), "EncryptionAlgorithm": ALGORITHM}),
            ),
        )?;
        // The answer holds the volume key (base64): straight from the zeroizing body into
        // zeroizing fields, never through a serde_json::Value.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct DecryptAnswer {
            plaintext: Option<Zeroizing<String>>,
            key_id: Option<String>,
        }
        let r: DecryptAnswer = serde_json::from_slice(&r.body)
            .map_err(|e| self.err(ErrorKind::Unreachable, format!("Decrypt: answer is not JSON ({e})")))?;
        let pt = Zeroizing::new(
            r.plaintext
                .as_ref()
                .and_then(|p| b64.decode(p.as_bytes()).ok())
                .ok_or_else(|| self.err(ErrorKind::Unreachable, "Decrypt answered without a Plaintext"))?,
        );
        let secret = SecretKey::from_slice(&pt).ok_or_else(|| {
            self.err(
                ErrorKind::UnwrapFailed,
                format!("Decrypt gave {} bytes, not a 32-byte volume key", pt.len()),
            )
        })?;
        let key = match self.public_key() {
            Ok((info, _)) => info,
            Err(e) => {
                // Decrypt is allowed but GetPublicKey is not: still unwrapped.
                tracing::debug!(error = %e, "GetPublicKey failed after a successful Decrypt");
                KeyInfo::without_public(SCHEME, r.key_id.as_deref().unwrap_or(&self.key), "1")
            }
        };
        Ok(Unwrapped { secret, key })
    }
}

/// AWS Signature Version 4 (the parts KMS needs: one POST with signed headers).
pub mod sigv4 {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    use super::Credentials;

    /// What is signed. `headers` are lowercase names; `query` is already canonical.
    pub struct Request<'a> {
        /// HTTP method.
        pub method: &'a str,
        /// Canonical URI path.
        pub path: &'a str,
        /// Canonical query string.
        pub query: &'a str,
        /// Headers to sign, lowercase names (host included).
        pub headers: &'a [(String, String)],
        /// The body.
        pub payload: &'a [u8],
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }

    /// `YYYYMMDDTHHMMSSZ` of `t`.
    pub fn amz_date(t: std::time::SystemTime) -> String {
        humantime::format_rfc3339_seconds(t)
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect()
    }

    /// The canonical request.
    pub fn canonical_request(r: &Request<'_>) -> (String, String) {
        let mut h: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        h.sort();
        let signed = h.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        let canon_headers: String = h.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let c = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            r.method,
            r.path,
            r.query,
            canon_headers,
            signed,
            hex(&Sha256::digest(r.payload))
        );
        (c, signed)
    }

    /// The signing key for `date` (YYYYMMDD), region and service.
    pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
        let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k = hmac(&k, region.as_bytes());
        let k = hmac(&k, service.as_bytes());
        hmac(&k, b"aws4_request")
    }

    /// The signature and signed-header list of `r` at `amz_date`.
    pub fn signature(secret: &str, r: &Request<'_>, amz_date: &str, region: &str, service: &str) -> (String, String) {
        let (canonical, signed) = canonical_request(r);
        let date = &amz_date[..8];
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = zeroize::Zeroizing::new(signing_key(secret, date, region, service));
        (hex(&hmac(&key, to_sign.as_bytes())), signed)
    }

    /// The `Authorization` header value.
    pub fn authorization(c: &Credentials, r: &Request<'_>, amz_date: &str, region: &str, service: &str) -> String {
        let (sig, signed) = signature(&c.secret_access_key, r, amz_date, region, service);
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{}/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature={sig}",
            c.access_key_id,
            &amz_date[..8]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of AWS's SigV4 documentation (IAM ListUsers, 2015-08-30).
    #[test]
    fn sigv4_published_example() {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let r = sigv4::Request {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            payload: b"",
        };
        let (canonical, signed) = sigv4::canonical_request(&r);
        assert_eq!(signed, "content-type;host;x-amz-date");
        use sha2::Digest;
        let h: String = sha2::Sha256::digest(canonical.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(h, "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let k: String = sigv4::signing_key(secret, "20150830", "us-east-1", "iam")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(k, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
        let (sig, _) = sigv4::signature(secret, &r, "20150830T123600Z", "us-east-1", "iam");
        assert_eq!(sig, "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
        let c = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new(secret.into()),
            session_token: None,
        };
        assert_eq!(
            sigv4::authorization(&c, &r, "20150830T123600Z", "us-east-1", "iam"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert_eq!(
            sigv4::amz_date(std::time::UNIX_EPOCH + Duration::from_secs(1440938160)),
            "20150830T123600Z"
        );
    }

    fn open(rest: &str) -> Result<AwsKmsProvider, ProviderError> {
        AwsKmsProvider::open(&format!("awskms:{rest}"), rest)
    }

    #[test]
    fn uris() {
        let p = open("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        assert_eq!(p.region, "eu-west-1");
        assert_eq!(p.endpoint, "https://kms.eu-west-1.amazonaws.com");
        assert_eq!(p.host, "kms.eu-west-1.amazonaws.com");
        assert!(!p.wrap_in_kms);
        let p = open("alias/cmkfs?region=us-east-2&endpoint=http://127.0.0.1:4566&wrap=kms&timeout=2s").unwrap();
        assert_eq!(
            (p.region.as_str(), p.endpoint.as_str()),
            ("us-east-2", "http://127.0.0.1:4566")
        );
        assert_eq!(p.host, "127.0.0.1:4566");
        assert!(p.wrap_in_kms);
        assert_eq!(
            open("k?region=cn-north-1").unwrap().endpoint,
            "https://kms.cn-north-1.amazonaws.com.cn"
        );
        for bad in [
            "",
            "arn:aws:s3:::bucket",
            "arn:aws:kms:eu-west-1:1:key/x?region=us-east-1",
            "k?region=us-east-1&wrap=maybe",
            "k?region=us-east-1&endpoint=ftp://x",
            "k?region=us-east-1&endpoint=http://x/path",
            "k?region=us-east-1&secret=1",
            "k?region=us east",
        ] {
            let e = open(bad).err().unwrap_or_else(|| panic!("'{bad}' accepted"));
            assert_eq!(e.kind, ErrorKind::Misconfigured, "{bad}: {e}");
        }
    }

    #[test]
    fn classification() {
        use ErrorKind::*;
        for (code, kind) in [
            ("AccessDeniedException", Denied),
            ("DisabledException", Denied),
            ("KMSInvalidStateException", Denied),
            ("NotFoundException", Denied),
            ("UnrecognizedClientException", Denied),
            ("IncorrectKeyException", UnwrapFailed),
            ("InvalidCiphertextException", UnwrapFailed),
            ("ThrottlingException", Unreachable),
            ("KMSInternalException", Unreachable),
            ("ExpiredTokenException", Unreachable),
            ("ValidationException", Misconfigured),
        ] {
            assert_eq!(classify(400, code), kind, "{code}");
        }
        assert_eq!(classify(503, "(no error code)"), Unreachable);
        assert_eq!(
            error_of(r#"{"__type":"com.amazonaws.kms#DisabledException","message":"arn is disabled."}"#),
            ("DisabledException".into(), "arn is disabled.".into())
        );
        assert_eq!(error_of(r#"{"__type":"NotFoundException","Message":"x"}"#).1, "x");
        assert_eq!(
            error_of("<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>m</Message></Error></Errors></ErrorResponse>"),
            ("SignatureDoesNotMatch".into(), "m".into())
        );
    }

    #[test]
    fn ini() {
        let t = "[default]\naws_access_key_id = A\n# c\n[profile p]\nregion=eu-north-1\n[p]\naws_access_key_id=B\n";
        assert_eq!(&*ini_section(t, "default")["aws_access_key_id"], "A");
        assert_eq!(&*ini_section(t, "profile p")["region"], "eu-north-1");
        assert_eq!(&*ini_section(t, "p")["aws_access_key_id"], "B");
        assert!(ini_section(t, "q").is_empty());
    }
}
