//! The `pkcs11:` URI (RFC 7512) as cmkfs reads it: see the parent module for the attributes.

use std::path::PathBuf;

use crate::crypto::rsa::{OaepHash, RsaError};
use crate::kms::params::{self, ParamError};

/// Environment variable naming the module when the URI has no `module-path`.
pub const MODULE_ENV: &str = crate::config::PKCS11_MODULE;

const PATH_ATTRS: &[&str] = &["token", "object", "id", "serial", "manufacturer", "model", "type"];
const QUERY_ATTRS: &[&str] = &["module-path", "pin-source", "pin-value", "oaep"];

/// What the URI says.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub object: String,
    pub id: Option<Vec<u8>>,
    pub module_path: PathBuf,
    pub pin_source: String,
    pub oaep: OaepHash,
}

/// Why a `pkcs11:` URI was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum UriError {
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(
        "pin-value is refused: the URI is stored in the volume header, shown by 'cmkfs status' and \
         written to the audit log, so it must never hold the PIN; use pin-source=file:/ABS/PATH \
         or pin-source=env:NAME"
    )]
    PinValue,
    #[error("type={0}: the KEK is the RSA private key object (type=private, or leave type out)")]
    NotPrivate(String),
    #[error("object=LABEL (the CKA_LABEL of the RSA private key) is required")]
    NoObject,
    #[error("token=LABEL (or serial=S) is required to find the token")]
    NoToken,
    #[error("module-path=/ABS/PATH/module.so is required (or set {MODULE_ENV} in the environment)")]
    NoModule,
    #[error("module-path '{}' must be absolute (a bare name would be looked up in the library search path)", .0.display())]
    RelativeModule(PathBuf),
    #[error("pin-source=file:/ABS/PATH, pin-source=env:NAME or pin-source=cred:NAME is required (the user PIN of the token)")]
    NoPinSource,
    #[error("pin-source '{0}' must be file:/ABS/PATH, env:NAME or cred:NAME (never the PIN itself)")]
    NotPinSource(String),
    #[error(transparent)]
    Oaep(#[from] RsaError),
}

/// Parses what follows `pkcs11:`.
pub(super) fn parse(rest: &str) -> Result<Config, UriError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // `id` is bytes, not text: take it out before the generic (UTF-8) parameter parser.
    let mut id = None;
    let mut others = Vec::new();
    for part in path.split(';').filter(|p| !p.is_empty()) {
        match part.strip_prefix("id=") {
            Some(v) => {
                if id.replace(params::percent_decode_bytes(v)?).is_some() {
                    return Err(ParamError::Twice("id".into()).into());
                }
            }
            None => others.push(part),
        }
    }
    let mut p = params::parse_params(&others.join(";"), ';', PATH_ATTRS)?;
    let mut q = params::parse_params(query, '&', QUERY_ATTRS)?;
    if q.contains_key("pin-value") {
        return Err(UriError::PinValue);
    }
    if let Some(t) = p.remove("type") {
        if t != "private" {
            return Err(UriError::NotPrivate(t));
        }
    }
    let object = p.remove("object").filter(|o| !o.is_empty()).ok_or(UriError::NoObject)?;
    let token = p.remove("token");
    let serial = p.remove("serial");
    if token.is_none() && serial.is_none() {
        return Err(UriError::NoToken);
    }
    let module_path = match q.remove("module-path") {
        Some(m) => m,
        None => crate::config::env().pkcs11_module.clone().ok_or(UriError::NoModule)?,
    };
    let module_path = PathBuf::from(module_path);
    if !module_path.is_absolute() {
        return Err(UriError::RelativeModule(module_path));
    }
    let pin_source = q.remove("pin-source").ok_or(UriError::NoPinSource)?;
    if !params::is_secret_source(&pin_source) {
        return Err(UriError::NotPinSource(pin_source));
    }
    let oaep = match q.remove("oaep") {
        Some(h) => OaepHash::parse(&h)?,
        None => OaepHash::Sha256,
    };
    Ok(Config {
        token,
        serial,
        manufacturer: p.remove("manufacturer"),
        model: p.remove("model"),
        object,
        id,
        module_path,
        pin_source,
        oaep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rest: &str) -> Result<Config, String> {
        parse(rest).map_err(|e| e.to_string())
    }

    #[test]
    fn uri_parsing() {
        let c = cfg("token=My%20Token;object=kek1;id=%01%ff?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin&oaep=sha1").unwrap();
        assert_eq!(c.token.as_deref(), Some("My Token"));
        assert_eq!(c.object, "kek1");
        assert_eq!(c.id.as_deref(), Some(&[1u8, 0xff][..]));
        assert_eq!(c.oaep, OaepHash::Sha1);
        assert_eq!(c.pin_source, "file:/etc/pin");
        let c = cfg("token=t;object=k?module-path=/m.so&pin-source=env:PIN").unwrap();
        assert_eq!(c.oaep, OaepHash::Sha256, "sha256 by default");
        assert!(c.id.is_none());
    }

    #[test]
    fn uri_refusals() {
        let e = cfg("token=t;object=k?module-path=/m.so&pin-value=1234").unwrap_err();
        assert!(e.contains("pin-value is refused") && e.contains("pin-source"), "{e}");
        assert!(cfg("token=t?module-path=/m.so&pin-source=env:P")
            .unwrap_err()
            .contains("object="));
        assert!(cfg("object=k?module-path=/m.so&pin-source=env:P")
            .unwrap_err()
            .contains("token="));
        assert!(cfg("token=t;object=k?module-path=m.so&pin-source=env:P")
            .unwrap_err()
            .contains("absolute"));
        assert!(cfg("token=t;object=k?module-path=/m.so&pin-source=1234")
            .unwrap_err()
            .contains("never the PIN"));
        assert!(cfg("token=t;object=k?module-path=/m.so")
            .unwrap_err()
            .contains("pin-source"));
        assert!(cfg("token=t;object=k?module-path=/m.so&pin-source=env:P&oaep=md5").is_err());
        assert!(cfg("token=t;objekt=k?module-path=/m.so&pin-source=env:P").is_err());
        assert!(cfg("token=t;object=k;type=public?module-path=/m.so&pin-source=env:P").is_err());
        assert!(cfg("token=t;object=k;id=%zz?module-path=/m.so&pin-source=env:P").is_err());
        assert!(cfg("token=t;object=k;id=%+f?module-path=/m.so&pin-source=env:P").is_err());
        assert!(cfg("token=t;object=k;id=%01;id=%02?module-path=/m.so&pin-source=env:P")
            .unwrap_err()
            .contains("twice"));
    }
}
