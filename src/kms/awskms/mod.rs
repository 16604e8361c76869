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
//! Requests are KMS JSON 1.1 calls signed with SigV4 ([`sigv4`]); the credential chain is
//! [`credentials`].
//!
//! Unwrap is always `Decrypt` with `EncryptionAlgorithm=RSAES_OAEP_SHA_256` inside KMS. KMS
//! keys have no versions a client sees (rotation of asymmetric keys means a new key): the
//! version is always "1".

use std::time::Duration;

use crate::crypto::rsa::RsaPublicKey;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Value};
use zeroize::Zeroizing;

pub mod credentials;
pub mod sigv4;

pub use credentials::Credentials;

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

impl AwsKmsProvider {
    /// Parses `rest` (the part after `awskms:`). Makes no request.
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let bad = |m: String| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, m);
        let (key, query) = rest.split_once('?').unwrap_or((rest, ""));
        let p = params::parse_params(query, '&', PARAMS).map_err(|e| bad(e.to_string()))?;
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
            (None, None) => credentials::default_region(profile.as_deref())
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
            Some(t) => params::parse_duration(t).map_err(|e| bad(e.to_string()))?,
            None => http::DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(bad("timeout must be between 1ms and 5m".into()));
        }
        let http = Http::new(timeout, None).map_err(|e| bad(e.to_string()))?;
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
        let creds =
            credentials::chain(self.profile.as_deref()).map_err(|e| self.err(ErrorKind::Unreachable, e.to_string()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
