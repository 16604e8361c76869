//! Small pieces every non-local provider needs: URI parameters and secret sources.
//!
//! Secrets (PINs, TPM auth values, tokens) never appear in a KEK URI, because URIs are
//! stored in the volume header, shown by `status` and written to the audit log. A URI names
//! where the secret is instead: `file:/path` (or a bare absolute path) or `env:NAME`.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::{ErrorKind, ProviderError};

/// Why URI parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A `%` not followed by exactly two hex digits.
    #[error("bad percent escape in '{0}'")]
    BadEscape(String),
    /// Escapes that decode to bytes that are not UTF-8, where text is expected.
    #[error("'{0}' does not decode to UTF-8")]
    NotUtf8(String),
    /// A parameter without `=`.
    #[error("'{0}' is not name=value")]
    NotNameValue(String),
    /// A name the provider does not know (a typo must not be silently ignored).
    #[error("unknown parameter '{name}' (known: {known})")]
    Unknown {
        /// The name given.
        name: String,
        /// The names this provider accepts, comma-separated.
        known: String,
    },
    /// The same name twice.
    #[error("parameter '{0}' given twice")]
    Twice(String),
    /// A duration humantime does not parse.
    #[error("bad duration '{value}': {reason}")]
    BadDuration {
        /// The value given.
        value: String,
        /// humantime's reason.
        reason: String,
    },
}

/// The value of one ASCII hex digit. Stricter than `u8::from_str_radix`, which also takes
/// a leading `+` (so `%+f` would decode).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (RFC 3986) into bytes, for values that need not be UTF-8 (a
/// PKCS#11 `id`). Anything but two hex digits after `%` is an error rather than passed
/// through.
pub fn percent_decode_bytes(s: &str) -> Result<Vec<u8>, ParamError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let byte = match (
                b.get(i + 1).copied().and_then(hex_digit),
                b.get(i + 2).copied().and_then(hex_digit),
            ) {
                (Some(hi), Some(lo)) => hi << 4 | lo,
                _ => return Err(ParamError::BadEscape(s.to_string())),
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Decodes `%XX` escapes (RFC 3986) into text.
pub fn percent_decode(s: &str) -> Result<String, ParamError> {
    String::from_utf8(percent_decode_bytes(s)?).map_err(|_| ParamError::NotUtf8(s.to_string()))
}

/// Parses `a=1<sep>b=2` into a map, percent-decoding values. Repeated or empty names are
/// refused, and so is any name not in `allowed`, so that a typo in a URI is an error
/// rather than a silently ignored setting.
pub fn parse_params(s: &str, sep: char, allowed: &[&str]) -> Result<BTreeMap<String, String>, ParamError> {
    let mut m = BTreeMap::new();
    for part in s.split(sep).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| ParamError::NotNameValue(part.to_string()))?;
        let k = percent_decode(k)?;
        if !allowed.contains(&k.as_str()) {
            return Err(ParamError::Unknown {
                name: k,
                known: allowed.join(", "),
            });
        }
        if m.insert(k.clone(), percent_decode(v)?).is_some() {
            return Err(ParamError::Twice(k));
        }
    }
    Ok(m)
}

/// The secret-source forms, for messages.
pub const SECRET_SOURCES: &str = "file:/ABSOLUTE/PATH, env:NAME or cred:NAME";

/// True for the secret-source forms [`read_secret`] accepts: `file:/ABSOLUTE/PATH`, a bare
/// absolute path, `env:NAME`, or `cred:NAME` (a systemd credential). Providers check it when
/// a URI is opened, so that a secret pasted into a URI is refused before anything stores or
/// prints it.
pub fn is_secret_source(spec: &str) -> bool {
    spec.starts_with("env:")
        || spec.strip_prefix("cred:").is_some_and(is_credential_name)
        || spec.strip_prefix("file:").unwrap_or(spec).starts_with('/')
}

/// A systemd credential name: one path component.
fn is_credential_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

/// Reads a secret from `file:/path`, a bare absolute path, `env:NAME`, or `cred:NAME`: the
/// systemd credential NAME (`LoadCredential=NAME:/path` in the unit), read from
/// `$CREDENTIALS_DIRECTORY/NAME`, a directory only the service can read, so no PIN or token
/// has to sit in a file of its own. One trailing newline is removed (files written with
/// `echo`). A missing source is *misconfigured*: it is the operator's setup, not the key's
/// state, that is wrong.
pub fn read_secret(spec: &str, provider: &str, key: &str) -> Result<Zeroizing<String>, ProviderError> {
    let err = |m: String| ProviderError::new(ErrorKind::Misconfigured, provider, key, m);
    if let Some(name) = spec.strip_prefix("env:") {
        return std::env::var(name).map(Zeroizing::new).map_err(|_| {
            err(format!(
                "environment variable {name} (named as the secret source) is not set"
            ))
        });
    }
    if !is_secret_source(spec) {
        return Err(err(format!(
            "secret source '{spec}' must be {SECRET_SOURCES} (never the secret itself)"
        )));
    }
    let cred_path;
    let path = match spec.strip_prefix("cred:") {
        Some(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                err(format!(
                    "secret source {spec} names a systemd credential, but CREDENTIALS_DIRECTORY is not set \
                     (run from a unit with LoadCredential={name}:/PATH)"
                ))
            })?;
            cred_path = std::path::Path::new(&dir).join(name);
            cred_path
                .to_str()
                .ok_or_else(|| err("CREDENTIALS_DIRECTORY is not UTF-8".into()))?
        }
        None => spec.strip_prefix("file:").unwrap_or(spec),
    };
    let mut s =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(format!("cannot read secret file {path}: {e}")))?);
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

/// A duration parameter such as `timeout=5s` (humantime syntax).
pub fn parse_duration(v: &str) -> Result<std::time::Duration, ParamError> {
    humantime::parse_duration(v).map_err(|e| ParamError::BadDuration {
        value: v.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let m = parse_params("token=My%20Token;object=kek1", ';', &["token", "object"]).unwrap();
        assert_eq!(m["token"], "My Token");
        assert_eq!(m["object"], "kek1");
        assert!(parse_params("tokn=x", ';', &["token"]).is_err());
        assert!(parse_params("token=a;token=b", ';', &["token"]).is_err());
        assert!(parse_params("token", ';', &["token"]).is_err());
        assert!(percent_decode("%zz").is_err());
    }

    #[test]
    fn percent_escapes_are_exactly_two_hex_digits() {
        assert_eq!(
            percent_decode_bytes("a%01%fF%20b").unwrap(),
            [b'a', 1, 0xff, b' ', b'b']
        );
        assert_eq!(percent_decode("My%20Token").unwrap(), "My Token");
        // `u8::from_str_radix` takes a sign: "+f" would have decoded to 0x0f.
        for bad in ["%+f", "%-1", "%f", "%", "a%2", "%zz", "% 1", "%1+"] {
            assert_eq!(
                percent_decode_bytes(bad),
                Err(ParamError::BadEscape(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(percent_decode("%ff"), Err(ParamError::NotUtf8("%ff".into())));
    }

    #[test]
    fn secret_sources() {
        for ok in ["env:PIN", "file:/etc/pin", "/etc/pin", "cred:pin"] {
            assert!(is_secret_source(ok), "{ok}");
        }
        for bad in [
            "1234",
            "file:pin",
            "file:",
            "env",
            "pin-file",
            "cred:",
            "cred:../pin",
            "cred:a/b",
            "cred:..",
        ] {
            assert!(!is_secret_source(bad), "{bad}");
        }
    }

    #[test]
    fn secrets() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pin");
        std::fs::write(&f, "1234\n").unwrap();
        let spec = format!("file:{}", f.display());
        assert_eq!(&*read_secret(&spec, "t", "k").unwrap(), "1234");
        assert_eq!(&*read_secret(f.to_str().unwrap(), "t", "k").unwrap(), "1234");
        assert!(read_secret("1234", "t", "k").is_err(), "a literal secret is refused");
        std::env::set_var("CMKFS_TEST_SECRET_X", "s3");
        assert_eq!(&*read_secret("env:CMKFS_TEST_SECRET_X", "t", "k").unwrap(), "s3");
        let e = read_secret("env:CMKFS_TEST_SECRET_MISSING", "t", "k").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Misconfigured);
    }

    /// `cred:NAME` reads `$CREDENTIALS_DIRECTORY/NAME`, in a child process (the variable is
    /// process-wide, and systemd sets it for the whole service).
    #[test]
    fn systemd_credentials() {
        if std::env::var_os("CMKFS_TEST_CRED_CHILD").is_some() {
            assert_eq!(&*read_secret("cred:pin", "t", "k").unwrap(), "5678");
            let e = read_secret("cred:other", "t", "k").unwrap_err();
            assert!(e.to_string().contains("other"), "{e}");
            return;
        }
        let e = read_secret("cred:pin", "t", "k").unwrap_err();
        assert!(e.to_string().contains("LoadCredential=pin:"), "{e}");
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pin"), "5678\n").unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "kms::params::tests::systemd_credentials", "--nocapture"])
            .env("CMKFS_TEST_CRED_CHILD", "1")
            .env("CREDENTIALS_DIRECTORY", d.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
}
