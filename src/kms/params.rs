//! Small pieces every non-local provider needs: URI parameters and secret sources.
//!
//! Secrets (PINs, TPM auth values, tokens) never appear in a KEK URI, because URIs are
//! stored in the volume header, shown by `status` and written to the audit log. A URI names
//! where the secret is instead: `file:/path` (or a bare absolute path) or `env:NAME`.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::{ErrorKind, ProviderError};

/// Decodes `%XX` escapes (RFC 3986). Invalid escapes are an error rather than passed through.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in '{s}'"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}

/// Parses `a=1<sep>b=2` into a map, percent-decoding values. Repeated or empty names are
/// refused, and so is any name not in `allowed`, so that a typo in a URI is an error
/// rather than a silently ignored setting.
pub fn parse_params(s: &str, sep: char, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for part in s.split(sep).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("'{part}' is not name=value"))?;
        let k = percent_decode(k)?;
        if !allowed.contains(&k.as_str()) {
            return Err(format!("unknown parameter '{k}' (known: {})", allowed.join(", ")));
        }
        if m.insert(k.clone(), percent_decode(v)?).is_some() {
            return Err(format!("parameter '{k}' given twice"));
        }
    }
    Ok(m)
}

/// Reads a secret from `file:/path`, a bare absolute path, or `env:NAME`. One trailing
/// newline is removed (files written with `echo`). A missing source is *misconfigured*:
/// it is the operator's setup, not the key's state, that is wrong.
pub fn read_secret(spec: &str, provider: &str, key: &str) -> Result<Zeroizing<String>, ProviderError> {
    let err = |m: String| ProviderError::new(ErrorKind::Misconfigured, provider, key, m);
    if let Some(name) = spec.strip_prefix("env:") {
        return std::env::var(name).map(Zeroizing::new).map_err(|_| {
            err(format!(
                "environment variable {name} (named as the secret source) is not set"
            ))
        });
    }
    let path = spec.strip_prefix("file:").unwrap_or(spec);
    if !path.starts_with('/') {
        return Err(err(format!(
            "secret source '{spec}' must be file:/ABSOLUTE/PATH or env:NAME (never the secret itself)"
        )));
    }
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
pub fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(v).map_err(|e| format!("bad duration '{v}': {e}"))
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
}
