//! `pkcs11:` — an RSA KEK inside a PKCS#11 token (network HSM, smart card, SoftHSM2, kryoptic).
//!
//! URI (RFC 7512; path attributes `;`-separated, query attributes `&`-separated, values
//! percent-encoded):
//!
//! ```text
//! pkcs11:token=LABEL;object=KEYLABEL[;id=%01][;serial=S][;type=private]
//!        ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cmkfs/pin[&oaep=sha1]
//! ```
//!
//! - `token` (or `serial`) selects the token by its label, never by slot id: slot ids move
//!   when tokens are initialised, inserted or removed.
//! - `object` is the CKA_LABEL of the RSA private key, `id` optionally its CKA_ID (bytes,
//!   percent-encoded). Rotation is to another object (`object=kek2`).
//! - `module-path` is the absolute path of the PKCS#11 module; when absent, the environment
//!   variable `CMKFS_PKCS11_MODULE` supplies it (so the URI stored in the header need not
//!   name a machine-specific path).
//! - `pin-source` is `file:/ABS/PATH` or `env:NAME` ([`params::read_secret`]). `pin-value`
//!   is refused: the URI is stored in the volume header, shown by `status` and audited.
//! - `oaep` is `sha256` (default) or `sha1` (tokens without OAEP-SHA256, e.g. SoftHSM2 2.6).
//!
//! Wrapping is local, with the public half (CKA_MODULUS / CKA_PUBLIC_EXPONENT read from the
//! token); unwrapping is C_Decrypt with CKM_RSA_PKCS_OAEP inside the token. PKCS#11 objects
//! have no versions: the version is always "1" (another key is another object label).
//!
//! Sessions: the library is loaded and initialised once per process and module path
//! (`CKF_OS_LOCKING_OK`) and shared by every provider naming it. Each call borrows a
//! logged-in session from a small pool (a `Session` is used by one thread at a time) and
//! gives it back on success. When a call fails in a way a fresh session may cure (session
//! handle invalid, user not logged in, token removed, device error, ...), the pool is
//! emptied and the call is retried once with a new session and login, and once more after
//! re-initialising the library (C_Finalize + C_Initialize: some modules only see a
//! re-inserted or re-created token then). So a daemon recovers by itself on the next check
//! after the token comes back.
//!
//! Classification: the key refused or gone (CKR_KEY_FUNCTION_NOT_PERMITTED, object not
//! found, CKR_OBJECT_HANDLE_INVALID), a refused PIN (CKR_PIN_INCORRECT / LOCKED / EXPIRED)
//! → *denied*; the token not present (no token with that label, CKR_TOKEN_NOT_PRESENT,
//! CKR_DEVICE_REMOVED, device errors, library initialisation failing) → *unreachable*:
//! an absent token looks exactly like an unplugged one, which must be tolerated for the
//! grace period; after the grace period the volume is inaccessible anyway.
//! CKR_ENCRYPTED_DATA_INVALID / LEN_RANGE or a result that is not 32 bytes → *unwrap failed*.
//! A PIN the token refused is not presented again until the PIN source changes, so that the
//! periodic revalidation cannot lock the token's user PIN.
//!
//! Files: `uri.rs` parses the URI, `pool.rs` holds the process-wide module registry and the
//! session pool, `classify.rs` decides retries and error kinds; this file finds the token,
//! logs in and performs the operations.

mod classify;
mod pool;
mod uri;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::{params, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash, RsaPublicKey};
use crate::crypto::{self, SecretKey};
use classify::{rv_name, Fail};
use pool::Pool;
use uri::Config;
pub use uri::MODULE_ENV;

/// URI scheme.
pub const SCHEME: &str = "pkcs11";

/// PKCS#11 objects have no versions.
const VERSION: &str = "1";

/// An RSA key in a PKCS#11 token.
pub struct Pkcs11Provider {
    uri: String,
    cfg: Config,
    /// How errors name the key: `'kek1' in token 'cmkfs'`.
    key_name: String,
    pool: Pool,
    /// Salted hash of the last PIN the token refused: it is not presented again.
    bad_pin: Mutex<Option<[u8; 32]>>,
    salt: [u8; 16],
}

impl Pkcs11Provider {
    /// Parses `rest` (after `pkcs11:`). The module is loaded on first use, so that a daemon
    /// started while the token or its module is absent recovers when they appear.
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let cfg =
            uri::parse(rest).map_err(|e| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, e.to_string()))?;
        let token = match (&cfg.token, &cfg.serial) {
            (Some(t), _) => format!("token '{t}'"),
            (None, Some(s)) => format!("token with serial '{s}'"),
            (None, None) => unreachable!("checked by parse"),
        };
        let id = cfg
            .id
            .as_ref()
            .map(|i| format!(" (id {})", crypto::hex(i)))
            .unwrap_or_default();
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).expect("getrandom");
        Ok(Pkcs11Provider {
            uri: uri.into(),
            key_name: format!("'{}'{id} in {token}", cfg.object),
            pool: Pool::new(&cfg.module_path),
            cfg,
            bad_pin: Mutex::new(None),
            salt,
        })
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, SCHEME, self.key_name.clone(), msg)
    }

    fn token_desc(&self) -> String {
        match (&self.cfg.token, &self.cfg.serial) {
            (Some(t), _) => format!("token '{t}'"),
            (_, Some(s)) => format!("token with serial '{s}'"),
            _ => "token".into(),
        }
    }

    /// Runs `op` with a logged-in session, retrying as described in the module docs.
    fn run<T>(&self, op: impl Fn(&Session) -> Result<T, Fail>) -> Result<T, ProviderError> {
        let mut attempt = 0;
        loop {
            let seen = self.pool.module.generation();
            let r = self
                .pool
                .module
                .ensure()
                .and_then(|()| self.pool.attempt(&|ctx| self.new_session(ctx), &op));
            match r {
                Ok(v) => return Ok(v),
                Err(f) if attempt < 2 && f.retryable() => {
                    tracing::debug!(key = %self.key_name, attempt, "PKCS#11 call failed; retrying with a new session");
                    self.pool.drain();
                    if attempt == 1 {
                        if let Err(e) = self.pool.module.reinit(seen) {
                            return Err(self.classify(e));
                        }
                    }
                    attempt += 1;
                }
                Err(f) => return Err(self.classify(f)),
            }
        }
    }

    /// Finds the token by label, opens a read-only session and logs in.
    fn new_session(&self, ctx: &Pkcs11) -> Result<Session, Fail> {
        let slots = ctx.get_slots_with_token().map_err(|e| Fail::ck("C_GetSlotList", e))?;
        let mut present = Vec::new();
        let mut found = None;
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else { continue };
            let label = info.label().trim_end().to_string();
            let serial = info.serial_number().trim_end();
            let matches = self.cfg.token.as_deref().is_none_or(|t| t == label)
                && self.cfg.serial.as_deref().is_none_or(|s| s == serial)
                && self
                    .cfg
                    .manufacturer
                    .as_deref()
                    .is_none_or(|m| m == info.manufacturer_id().trim_end())
                && self.cfg.model.as_deref().is_none_or(|m| m == info.model().trim_end());
            if matches && info.token_initialized() {
                if found.is_some() {
                    return Err(Fail::plain(
                        ErrorKind::Misconfigured,
                        format!(
                            "more than one {} in module {}: add serial=... to the URI",
                            self.token_desc(),
                            self.cfg.module_path.display()
                        ),
                    ));
                }
                found = Some((slot, info));
            }
            present.push(format!("'{label}'"));
        }
        let Some((slot, info)) = found else {
            return Err(Fail::NoToken { present });
        };
        let session = ctx
            .open_ro_session_no_drop(slot)
            .map_err(|e| Fail::ck("C_OpenSession", e))?;
        if let Err(f) = self.login(&session, &info) {
            let _ = session.close();
            return Err(f);
        }
        Ok(session)
    }

    fn login(&self, session: &Session, info: &cryptoki::slot::TokenInfo) -> Result<(), Fail> {
        if info.user_pin_locked() {
            return Err(Fail::ck(
                "C_Login",
                CkError::Pkcs11(RvError::PinLocked, cryptoki::context::Function::Login),
            ));
        }
        let pin = params::read_secret(&self.cfg.pin_source, SCHEME, &self.key_name).map_err(|e| Fail::Plain {
            kind: e.kind,
            msg: e.message,
        })?;
        let mut salted = Zeroizing::new(self.salt.to_vec());
        salted.extend_from_slice(pin.as_bytes());
        let h = crypto::sha256(&salted);
        if self.bad_pin.lock().is_some_and(|b| crypto::ct_eq(&b, &h)) {
            return Err(Fail::ck(
                "C_Login (not retried: same PIN as refused before)",
                CkError::Pkcs11(RvError::PinIncorrect, cryptoki::context::Function::Login),
            ));
        }
        let auth = AuthPin::new(pin.as_str().into());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                *self.bad_pin.lock() = None;
                Ok(())
            }
            Err(e @ CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                *self.bad_pin.lock() = Some(h);
                Err(Fail::ck("C_Login", e))
            }
            Err(e) => Err(Fail::ck("C_Login", e)),
        }
    }

    fn template(&self, class: ObjectClass) -> Vec<Attribute> {
        let mut t = vec![
            Attribute::Class(class),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Label(self.cfg.object.as_bytes().to_vec()),
        ];
        if let Some(id) = &self.cfg.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }

    /// The one RSA private key the URI names.
    fn find_private(&self, s: &Session) -> Result<ObjectHandle, Fail> {
        let found = s
            .find_objects(&self.template(ObjectClass::PRIVATE_KEY))
            .map_err(|e| Fail::ck("C_FindObjects", e))?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Fail::NoKey),
            _ => Err(Fail::plain(
                ErrorKind::Misconfigured,
                "more than one RSA private key has this label: add id=... to the URI",
            )),
        }
    }

    /// The public half, from the private key's public attributes or else the public key object.
    fn public_key(&self, s: &Session, private: ObjectHandle) -> Result<RsaPublicKey, Fail> {
        let parts = |h: ObjectHandle| -> Result<(Vec<u8>, Vec<u8>), Fail> {
            let attrs = s
                .get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])
                .map_err(|e| Fail::ck("C_GetAttributeValue", e))?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            match (n, e) {
                (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => Ok((n, e)),
                _ => Err(Fail::plain(ErrorKind::Misconfigured, "no modulus/public exponent")),
            }
        };
        let (n, e) = match parts(private) {
            Ok(p) => p,
            Err(_) => {
                let pubs = s
                    .find_objects(&self.template(ObjectClass::PUBLIC_KEY))
                    .map_err(|e| Fail::ck("C_FindObjects", e))?;
                let [h] = pubs.as_slice() else {
                    return Err(Fail::plain(
                        ErrorKind::Misconfigured,
                        "the private key does not expose its modulus and public exponent, and there is no single \
                         RSA public key object with the same label (and id) to read them from",
                    ));
                };
                parts(*h)?
            }
        };
        rsa::public_from_parts(&n, &e).map_err(|m| Fail::plain(ErrorKind::Misconfigured, m.to_string()))
    }

    fn can_decrypt(&self, s: &Session, private: ObjectHandle) -> Result<bool, Fail> {
        let attrs = s
            .get_attributes(private, &[AttributeType::Decrypt])
            .map_err(|e| Fail::ck("C_GetAttributeValue", e))?;
        Ok(!attrs.iter().any(|a| matches!(a, Attribute::Decrypt(false))))
    }

    fn info(&self, key: &RsaPublicKey) -> KeyInfo {
        KeyInfo::for_public(SCHEME, &self.key_name, VERSION, key)
    }

    fn mechanism(&self) -> Mechanism<'static> {
        let (hash, mgf) = match self.cfg.oaep {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }

    /// Makes sense of a vague C_Decrypt failure. kryoptic answers CKR_GENERAL_ERROR for a key
    /// deleted under an open session, and CKR_DEVICE_ERROR for a ciphertext that does not
    /// decrypt (OpenSSL's failure, passed on). So: look for the key again (gone: denied), then
    /// decrypt a fresh test ciphertext made with the public key; if the token decrypts that,
    /// it works and the keyslot is not for this key (unwrap failed); if not, the device error
    /// stands (unreachable, after the usual retries).
    fn explain_decrypt_error(&self, s: &Session, mech: &Mechanism, public: &RsaPublicKey, e: CkError) -> Fail {
        let rv = match &e {
            CkError::Pkcs11(rv, _) => *rv,
            _ => return Fail::ck("C_Decrypt", e),
        };
        if !matches!(
            rv,
            RvError::GeneralError | RvError::DeviceError | RvError::FunctionFailed
        ) {
            return Fail::ck("C_Decrypt", e);
        }
        let k = match self.find_private(s) {
            Ok(k) => k,
            Err(f) => return f,
        };
        let probe = SecretKey::random();
        let ct = rsa::wrap_with(public, self.cfg.oaep, &probe);
        let works = s
            .decrypt(mech, k, &ct)
            .map(Zeroizing::new)
            .is_ok_and(|pt| crate::crypto::ct_eq(&pt, probe.expose()));
        if !works {
            return Fail::ck("C_Decrypt", e);
        }
        Fail::plain(
            ErrorKind::UnwrapFailed,
            format!(
                "this key cannot decrypt this keyslot (made by another key or with another OAEP hash, or \
                 corrupted): the token answered {} for it but decrypts a test ciphertext of this key",
                rv_name(rv)
            ),
        )
    }

    /// The public key of a key that may decrypt (a revoked key is refused for wrapping).
    fn usable_public(&self) -> Result<RsaPublicKey, ProviderError> {
        self.run(|s| {
            let k = self.find_private(s)?;
            if !self.can_decrypt(s, k)? {
                return Err(Fail::ck(
                    "C_GetAttributeValue(CKA_DECRYPT)",
                    CkError::Pkcs11(
                        RvError::KeyFunctionNotPermitted,
                        cryptoki::context::Function::GetAttributeValue,
                    ),
                ));
            }
            self.public_key(s, k)
        })
    }
}

impl KeyProvider for Pkcs11Provider {
    fn oaep_hash(&self) -> OaepHash {
        self.cfg.oaep
    }

    fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        Ok(self.info(&self.usable_public()?))
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let key = self.usable_public()?;
        Ok(Wrapped::locally(self.info(&key), &key, self.cfg.oaep, secret))
    }

    fn unwrap(&self, _version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        // Objects have no versions: any stored version names the object itself.
        let mech = self.mechanism();
        let (secret, key) = self.run(|s| {
            let k = self.find_private(s)?;
            let public = self.public_key(s, k)?;
            if wrapped.len() != rsa::bits(&public).div_ceil(8) {
                return Err(Fail::plain(
                    ErrorKind::UnwrapFailed,
                    format!(
                        "the keyslot holds {} bytes, not an RSA-{} ciphertext (made by another key?)",
                        wrapped.len(),
                        rsa::bits(&public)
                    ),
                ));
            }
            let pt = Zeroizing::new(
                s.decrypt(&mech, k, wrapped)
                    .map_err(|e| self.explain_decrypt_error(s, &mech, &public, e))?,
            );
            let secret = SecretKey::from_slice(&pt).ok_or_else(|| {
                Fail::plain(
                    ErrorKind::UnwrapFailed,
                    format!(
                        "the token decrypted the keyslot to {} bytes, not a 32-byte volume key (made by another key?)",
                        pt.len()
                    ),
                )
            })?;
            Ok((secret, public))
        })?;
        Ok(Unwrapped {
            secret,
            key: self.info(&key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_bad_uri() {
        let e = Pkcs11Provider::open("pkcs11:token=t", "token=t").err().unwrap();
        assert_eq!(e.kind, ErrorKind::Misconfigured);
    }

    #[test]
    fn missing_module_is_misconfigured() {
        let uri = "pkcs11:token=t;object=k?module-path=/nonexistent/libnone.so&pin-source=env:CMKFS_NO_PIN";
        let p = Pkcs11Provider::open(uri, uri.strip_prefix("pkcs11:").unwrap()).unwrap();
        let e = p.current().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Misconfigured, "{e}");
        assert!(e.to_string().contains("/nonexistent/libnone.so"), "{e}");
    }
}
