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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::crypto::rsa::RsaPublicKey;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use parking_lot::{Mutex, RwLock};
use zeroize::Zeroizing;

use super::{params, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash};
use crate::crypto::{self, SecretKey};

/// URI scheme.
pub const SCHEME: &str = "pkcs11";

/// Environment variable naming the module when the URI has no `module-path`.
pub const MODULE_ENV: &str = "CMKFS_PKCS11_MODULE";

/// PKCS#11 objects have no versions.
const VERSION: &str = "1";

/// Idle sessions kept per provider; more concurrent calls open more, closed when returned.
const POOL_MAX: usize = 8;

/// How long a re-initialisation waits for calls in flight on other threads.
const REINIT_WAIT: Duration = Duration::from_secs(10);

const PATH_ATTRS: &[&str] = &["token", "object", "id", "serial", "manufacturer", "model", "type"];
const QUERY_ATTRS: &[&str] = &["module-path", "pin-source", "pin-value", "oaep"];

/// What the URI says.
#[derive(Debug, Clone)]
struct Config {
    token: Option<String>,
    serial: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    object: String,
    id: Option<Vec<u8>>,
    module_path: PathBuf,
    pin_source: String,
    oaep: OaepHash,
}

/// A loaded PKCS#11 module, shared by every provider of this process naming the same path.
struct Module {
    path: PathBuf,
    /// The library, once loaded and initialised. Calls hold the read lock while they use a
    /// session; re-initialisation takes the write lock so that no session handle is in use
    /// while the library forgets them all.
    ctx: RwLock<Option<Pkcs11>>,
    /// Bumped by every (re-)initialisation. Sessions of an older generation are dead: they are
    /// dropped without C_CloseSession, whose handle number may already belong to a new session.
    generation: AtomicU64,
}

fn module(path: &Path) -> Arc<Module> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    MODULES
        .get_or_init(Default::default)
        .lock()
        .entry(path.to_path_buf())
        .or_insert_with(|| {
            Arc::new(Module {
                path: path.to_path_buf(),
                ctx: RwLock::new(None),
                generation: AtomicU64::new(0),
            })
        })
        .clone()
}

impl Module {
    /// Loads and initialises the library (under the write lock) if that is not done yet.
    fn ensure(&self) -> Result<(), Fail> {
        if self.ctx.read().is_some() {
            return Ok(());
        }
        let mut w = self
            .ctx
            .try_write_for(REINIT_WAIT)
            .ok_or_else(|| Fail::plain(ErrorKind::Unreachable, "PKCS#11 module busy (a call is hanging)"))?;
        if w.is_none() {
            *w = Some(self.load()?);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn load(&self) -> Result<Pkcs11, Fail> {
        let ctx = Pkcs11::new(&self.path).map_err(|e| Fail::ck("loading the module", e))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
            Err(e) => Err(Fail::ck("C_Initialize", e)),
        }
    }

    /// C_Finalize + C_Initialize, unless another thread did it since `seen` (a generation).
    fn reinit(&self, seen: u64) -> Result<(), Fail> {
        let mut w = self
            .ctx
            .try_write_for(REINIT_WAIT)
            .ok_or_else(|| Fail::plain(ErrorKind::Unreachable, "PKCS#11 module busy (a call is hanging)"))?;
        if self.generation.load(Ordering::SeqCst) != seen && w.is_some() {
            return Ok(());
        }
        tracing::info!(module = %self.path.display(), "re-initialising the PKCS#11 module");
        if let Some(old) = w.take() {
            let _ = old.clone().finalize();
            // Keep the library loaded (same handle) and initialise it again.
            self.generation.fetch_add(1, Ordering::SeqCst);
            match old.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    *w = Some(old);
                    Ok(())
                }
                Err(e) => Err(Fail::ck("C_Initialize", e)),
            }
        } else {
            *w = Some(self.load()?);
            self.generation.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
}

/// A logged-in session with the generation of the library it belongs to.
struct Pooled {
    session: Session,
    generation: u64,
}

/// Why one attempt failed, before it is turned into a [`ProviderError`].
enum Fail {
    /// A PKCS#11 call failed.
    Ck { during: &'static str, err: CkError },
    /// The token with this label/serial is not among the present tokens.
    NoToken { present: Vec<String> },
    /// The token is there but has no such key. Retried after re-initialising the library,
    /// because some modules (SoftHSM2) keep listing a token whose storage has vanished, with
    /// no objects: only a fresh C_Initialize tells an absent token from a deleted key.
    NoKey,
    /// Already classified.
    Plain { kind: ErrorKind, msg: String },
}

impl Fail {
    fn ck(during: &'static str, err: CkError) -> Fail {
        Fail::Ck { during, err }
    }

    fn plain(kind: ErrorKind, msg: impl Into<String>) -> Fail {
        Fail::Plain { kind, msg: msg.into() }
    }

    fn rv(&self) -> Option<RvError> {
        match self {
            Fail::Ck {
                err: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// A failure a new session (and login, or a re-initialised library) may cure.
    fn retryable(&self) -> bool {
        if matches!(self, Fail::NoToken { .. } | Fail::NoKey) {
            return true;
        }
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::CryptokiNotInitialized
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::DeviceRemoved
                    | RvError::DeviceError
                    | RvError::DeviceMemory
                    | RvError::GeneralError
                    | RvError::FunctionFailed
                    | RvError::SlotIdInvalid
                    | RvError::ObjectHandleInvalid
                    | RvError::KeyHandleInvalid
                    | RvError::OperationActive
            )
        )
    }
}

/// `CKR_PIN_INCORRECT` from cryptoki's `PinIncorrect`.
fn rv_name(rv: RvError) -> String {
    match rv {
        RvError::VendorDefined(v) => format!("vendor-defined error {v:#x}"),
        RvError::UnknownErrorCode(v) => format!("unknown error {v:#x}"),
        other => {
            let dbg = format!("{other:?}");
            let mut s = String::from("CKR");
            for c in dbg.chars() {
                if c.is_ascii_uppercase() {
                    s.push('_');
                }
                s.push(c.to_ascii_uppercase());
            }
            s
        }
    }
}

fn ck_text(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, f) => format!("{f} returned {}", rv_name(*rv)),
        other => other.to_string(),
    }
}

/// Decodes `%XX` escapes into bytes (for `id`, which need not be UTF-8).
fn percent_decode_bytes(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let v = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in '{s}'"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn parse(rest: &str) -> Result<Config, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    // `id` is bytes, not text: take it out before the generic (UTF-8) parameter parser.
    let mut id = None;
    let mut others = Vec::new();
    for part in path.split(';').filter(|p| !p.is_empty()) {
        match part.strip_prefix("id=") {
            Some(v) => {
                if id.replace(percent_decode_bytes(v)?).is_some() {
                    return Err("parameter 'id' given twice".into());
                }
            }
            None => others.push(part),
        }
    }
    let mut p = params::parse_params(&others.join(";"), ';', PATH_ATTRS)?;
    let mut q = params::parse_params(query, '&', QUERY_ATTRS)?;
    if q.contains_key("pin-value") {
        return Err(
            "pin-value is refused: the URI is stored in the volume header, shown by 'cmkfs status' and \
                    written to the audit log, so it must never hold the PIN; use pin-source=file:/ABS/PATH \
                    or pin-source=env:NAME"
                .into(),
        );
    }
    if let Some(t) = p.remove("type") {
        if t != "private" {
            return Err(format!(
                "type={t}: the KEK is the RSA private key object (type=private, or leave type out)"
            ));
        }
    }
    let object = p
        .remove("object")
        .filter(|o| !o.is_empty())
        .ok_or("object=LABEL (the CKA_LABEL of the RSA private key) is required")?;
    let token = p.remove("token");
    let serial = p.remove("serial");
    if token.is_none() && serial.is_none() {
        return Err("token=LABEL (or serial=S) is required to find the token".into());
    }
    let module_path = match q.remove("module-path") {
        Some(m) => m,
        None => std::env::var(MODULE_ENV).map_err(|_| {
            format!("module-path=/ABS/PATH/module.so is required (or set {MODULE_ENV} in the environment)")
        })?,
    };
    let module_path = PathBuf::from(module_path);
    if !module_path.is_absolute() {
        return Err(format!(
            "module-path '{}' must be absolute (a bare name would be looked up in the library search path)",
            module_path.display()
        ));
    }
    let pin_source = q
        .remove("pin-source")
        .ok_or("pin-source=file:/ABS/PATH or pin-source=env:NAME is required (the user PIN of the token)")?;
    if !(pin_source.starts_with("env:") || pin_source.starts_with("file:/") || pin_source.starts_with('/')) {
        return Err(format!(
            "pin-source '{pin_source}' must be file:/ABS/PATH or env:NAME (never the PIN itself)"
        ));
    }
    let oaep = match q.remove("oaep") {
        Some(h) => OaepHash::parse(&h).map_err(|e| e.to_string())?,
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

/// An RSA key in a PKCS#11 token.
pub struct Pkcs11Provider {
    uri: String,
    cfg: Config,
    /// How errors name the key: `'kek1' in token 'cmkfs'`.
    key_name: String,
    module: Arc<Module>,
    pool: Mutex<Vec<Pooled>>,
    /// Salted hash of the last PIN the token refused: it is not presented again.
    bad_pin: Mutex<Option<[u8; 32]>>,
    salt: [u8; 16],
}

impl Pkcs11Provider {
    /// Parses `rest` (after `pkcs11:`). The module is loaded on first use, so that a daemon
    /// started while the token or its module is absent recovers when they appear.
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let cfg = parse(rest).map_err(|m| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, m))?;
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
            module: module(&cfg.module_path),
            cfg,
            pool: Mutex::new(Vec::new()),
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

    /// Turns a failed attempt into the error the caller sees.
    fn classify(&self, f: Fail) -> ProviderError {
        let (during, err) = match f {
            Fail::Plain { kind, msg } => return self.err(kind, msg),
            Fail::NoToken { present } => {
                return self.err(
                    ErrorKind::Unreachable,
                    format!(
                        "{} is not present in module {} (tokens present: {}); insert or restore the token \
                         (a mounted volume keeps working for its unreachable grace period)",
                        self.token_desc(),
                        self.cfg.module_path.display(),
                        if present.is_empty() {
                            "none".to_string()
                        } else {
                            present.join(", ")
                        }
                    ),
                );
            }
            Fail::NoKey => {
                return self.err(
                    ErrorKind::Denied,
                    format!(
                        "no RSA private key with this label{} in {} (deleted, or a wrong object= in the URI)",
                        if self.cfg.id.is_some() { " and id" } else { "" },
                        self.token_desc()
                    ),
                )
            }
            Fail::Ck { during, err } => (during, err),
        };
        let text = ck_text(&err);
        let rv = match err {
            CkError::Pkcs11(rv, _) => rv,
            CkError::LibraryLoading(_) | CkError::MissingSymbol(_) | CkError::NullFunctionPointer => {
                return self.err(
                    ErrorKind::Misconfigured,
                    format!(
                        "cannot use {} as a PKCS#11 module ({during}): {text}; check module-path",
                        self.cfg.module_path.display()
                    ),
                );
            }
            _ => return self.err(ErrorKind::Unreachable, format!("{during}: {text}")),
        };
        use ErrorKind::*;
        let (kind, what) = match rv {
            RvError::KeyFunctionNotPermitted => (
                Denied,
                "the token does not allow this key to decrypt (CKA_DECRYPT is false): access was revoked in \
                 the token; set CKA_DECRYPT back to true to restore it"
                    .to_string(),
            ),
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => {
                (Denied, "the key object is gone from the token (deleted?)".to_string())
            }
            RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange => (
                Denied,
                format!(
                    "{} refused the user PIN from {} (wrong PIN); put the right PIN there. It is not presented \
                     again until it changes, so that retries cannot lock the token",
                    self.token_desc(),
                    self.cfg.pin_source
                ),
            ),
            RvError::PinLocked => (
                Denied,
                format!(
                    "the user PIN of {} is locked; the token's security officer must unlock it",
                    self.token_desc()
                ),
            ),
            RvError::PinExpired => (
                Denied,
                format!("the user PIN of {} has expired; set a new one", self.token_desc()),
            ),
            RvError::UserPinNotInitialized => (
                Denied,
                format!("{} has no user PIN (re-initialised?)", self.token_desc()),
            ),
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::DataLenRange => (
                UnwrapFailed,
                "this key cannot decrypt this keyslot (made by another key or with another OAEP hash, or \
                 corrupted)"
                    .to_string(),
            ),
            RvError::MechanismInvalid | RvError::MechanismParamInvalid | RvError::ArgumentsBad
                if during == "C_Decrypt" =>
            {
                (
                    Misconfigured,
                    format!(
                        "the token refused RSA-OAEP with {}: {}",
                        self.cfg.oaep.name().to_uppercase(),
                        if self.cfg.oaep == OaepHash::Sha256 {
                            "if it only implements OAEP-SHA1 (SoftHSM2 2.6, many HSMs) use oaep=sha1 in the URI \
                             (and wrap the volume with that URI)"
                        } else {
                            "the token does not implement CKM_RSA_PKCS_OAEP"
                        }
                    ),
                )
            }
            RvError::KeyTypeInconsistent => (Misconfigured, "the object is not an RSA key".to_string()),
            RvError::GeneralError | RvError::FunctionFailed if during == "C_Initialize" => (
                Unreachable,
                "the module failed to initialise: its token storage or configuration is missing or unreadable \
                 (token not present? SOFTHSM2_CONF or KRYOPTIC_CONF wrong?)"
                    .to_string(),
            ),
            _ => (Unreachable, "the token did not answer usefully".to_string()),
        };
        self.err(kind, format!("{what} [{during}: {text}]"))
    }

    /// Runs `op` with a logged-in session, retrying as described in the module docs.
    fn run<T>(&self, op: impl Fn(&Session) -> Result<T, Fail>) -> Result<T, ProviderError> {
        let mut attempt = 0;
        loop {
            let seen = self.module.generation.load(Ordering::SeqCst);
            let r = self.module.ensure().and_then(|()| self.attempt(&op));
            match r {
                Ok(v) => return Ok(v),
                Err(f) if attempt < 2 && f.retryable() => {
                    tracing::debug!(key = %self.key_name, attempt, "PKCS#11 call failed; retrying with a new session");
                    self.drain_pool();
                    if attempt == 1 {
                        if let Err(e) = self.module.reinit(seen) {
                            return Err(self.classify(e));
                        }
                    }
                    attempt += 1;
                }
                Err(f) => return Err(self.classify(f)),
            }
        }
    }

    fn attempt<T>(&self, op: &impl Fn(&Session) -> Result<T, Fail>) -> Result<T, Fail> {
        let guard = self.module.ctx.read();
        let ctx = guard
            .as_ref()
            .ok_or_else(|| Fail::plain(ErrorKind::Unreachable, "the PKCS#11 module is not initialised"))?;
        let generation = self.module.generation.load(Ordering::SeqCst);
        let pooled = loop {
            match self.pool.lock().pop() {
                Some(p) if p.generation == generation => break p,
                Some(_stale) => continue, // its library state is gone: drop without closing
                None => {
                    break Pooled {
                        session: self.new_session(ctx)?,
                        generation,
                    }
                }
            }
        };
        match op(&pooled.session) {
            Ok(v) => {
                let mut pool = self.pool.lock();
                if pool.len() < POOL_MAX {
                    pool.push(pooled);
                } else {
                    let _ = pooled.session.close();
                }
                Ok(v)
            }
            Err(f) => {
                if !f.retryable() {
                    self.pool.lock().push(pooled);
                } else {
                    let _ = pooled.session.close();
                }
                Err(f)
            }
        }
    }

    /// Closes idle sessions of the current generation, forgets older ones.
    fn drain_pool(&self) {
        let stale: Vec<Pooled> = std::mem::take(&mut *self.pool.lock());
        let guard = self.module.ctx.read();
        let generation = self.module.generation.load(Ordering::SeqCst);
        for p in stale {
            if guard.is_some() && p.generation == generation {
                let _ = p.session.close();
            }
            // else: a dead handle of an older library state; dropped without C_CloseSession
            // (sessions are opened with no close-on-drop).
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
        Ok(Wrapped {
            ciphertext: rsa::wrap_with(&key, self.cfg.oaep, secret),
            key: self.info(&key),
        })
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

impl Drop for Pkcs11Provider {
    fn drop(&mut self) {
        self.drain_pool();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rest: &str) -> Result<Config, String> {
        parse(rest)
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
        let e = Pkcs11Provider::open("pkcs11:token=t", "token=t").err().unwrap();
        assert_eq!(e.kind, ErrorKind::Misconfigured);
    }

    #[test]
    fn rv_names() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::KeyFunctionNotPermitted),
            "CKR_KEY_FUNCTION_NOT_PERMITTED"
        );
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
