//! `tpm:` — an RSA decryption key persisted in a TPM 2.0.
//!
//! ```text
//! tpm:HANDLE[?tcti=TCTI][&auth=SECRET-SOURCE][&oaep=sha256|sha1][&pcrs=sha256:0,7]
//! tpm:0x81000001?tcti=swtpm:host=127.0.0.1,port=2321&auth=file:/etc/cmkfs/tpm-auth
//! ```
//!
//! * `HANDLE`: the persistent handle of the key, `0x81000000`..=`0x81FFFFFF` (hex with `0x`, or
//!   decimal). The key must be an unrestricted RSA decryption key (`decrypt` set, `restricted`
//!   clear) of 2048 or 3072 bits (4096 where the TPM has it), with scheme OAEP or null.
//! * `tcti`: how to reach the TPM, in tpm2-tss syntax: `device:/dev/tpmrm0` (the default: the
//!   kernel resource manager), `device:/dev/tpm0`, `swtpm:host=H,port=P`, `mssim:host=H,port=P`
//!   or `tabrmd:bus_name=...`.
//! * `auth`: where the key's auth value is read from (`file:/ABS/PATH`, `/ABS/PATH` or
//!   `env:NAME`); never the value itself. Without it the auth value is empty. The value is the
//!   file's content (one trailing newline removed) as bytes, or with tpm2-tools' prefixes
//!   `str:VALUE` / `hex:HEX`, so the same string given to `tpm2_create -p` works here.
//! * `oaep`: the OAEP hash. Default: the key's own OAEP hash when its scheme is fixed, else
//!   sha256. A value that contradicts the key's fixed scheme is refused.
//! * `pcrs`: the key's authPolicy is `TPM2_PolicyPCR` over this selection (tpm2-tools syntax,
//!   banks joined by `+`), followed by `TPM2_PolicyPassword` when `auth` is given; unwrap then
//!   uses a policy session (flushed afterwards) instead of a password session.
//!
//! Parameter values are percent-decoded; `&` and `%` inside a value must be written `%26` and
//! `%25` (the `:`, `,` and `=` of a TCTI string are fine as they are).
//!
//! Wrapping reads the key's public area and encrypts locally (RSA-OAEP); unwrapping is
//! `TPM2_RSA_Decrypt` inside the TPM, authorised by a password session with the auth value.
//!
//! **Version**: the first 16 hex digits of the key's fingerprint (SHA-256 of its public key).
//! A keyslot therefore names the exact key that wrapped it: when another key is persisted at
//! the same handle, unwrap reports *denied* ("the key at the handle was replaced") without
//! asking that key to decrypt. Rotation is to another handle (a new URI).
//!
//! **Connections**: one TCTI connection per operation, closed when the operation ends. A raw
//! TPM device (`/dev/tpm0`) and swtpm serve a single client at a time, so a daemon that kept
//! its connection for months would lock every other TPM user (tpm2-tools, other daemons) out;
//! the cost is about 1 ms per call, against check intervals of seconds. It also makes
//! recovery trivial: a TPM that went away and came back (swtpm restarted, resource manager
//! restarted) is simply connected to again on the next call. Calls within this process are
//! serialised by a mutex (a second open of `/dev/tpm0` would fail with EBUSY).

use std::str::FromStr;

use crate::crypto::rsa::RsaPublicKey;
use parking_lot::Mutex;
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCode;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Auth, Data, Digest, HashScheme, PcrSelectionListBuilder, PcrSlot, Public, PublicKeyRsa, RsaDecryptionScheme,
    RsaScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::{params, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash};
use crate::crypto::SecretKey;

/// URI scheme.
pub const SCHEME: &str = "tpm";

/// The TCTI used when the URI names none: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

const PARAMS: &[&str] = &["tcti", "auth", "oaep", "pcrs"];
const PERSISTENT_FIRST: u32 = 0x8100_0000;
const PERSISTENT_LAST: u32 = 0x81FF_FFFF;

/// An RSA key persisted in a TPM 2.0.
pub struct TpmProvider {
    uri: String,
    handle: u32,
    key_id: String,
    tcti: String,
    tcti_conf: TctiNameConf,
    auth: Option<String>,
    oaep: Option<OaepHash>,
    /// PCR policy: the selection as written, and parsed.
    pcrs: Option<(String, PcrBanks)>,
    /// Serialises TPM access from this process (one connection at a time).
    lock: Mutex<()>,
}

/// A PCR selection: slots per bank.
type PcrBanks = Vec<(HashingAlgorithm, Vec<PcrSlot>)>;

/// What the TPM says about the key at the handle.
struct KeyState {
    handle: KeyHandle,
    public: RsaPublicKey,
    hash: OaepHash,
    info: KeyInfo,
}

impl TpmProvider {
    /// Parses `rest` (what follows `tpm:`). Does not contact the TPM.
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let mis = |m: String| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, m);
        let (h, query) = rest.split_once('?').unwrap_or((rest, ""));
        let handle = parse_handle(h).map_err(|e| mis(e.to_string()))?;
        let key_id = format!("{handle:#010x}");
        let p = params::parse_params(query, '&', PARAMS).map_err(|m| mis(format!("{m} in '{uri}'")))?;
        let tcti = p.get("tcti").cloned().unwrap_or_else(|| DEFAULT_TCTI.to_string());
        let tcti_conf = parse_tcti(&tcti).map_err(|e| mis(e.to_string()))?;
        let oaep = p
            .get("oaep")
            .map(|s| OaepHash::parse(s))
            .transpose()
            .map_err(|e| mis(e.to_string()))?;
        let pcrs = match p.get("pcrs") {
            Some(v) => Some((v.clone(), parse_pcrs(v).map_err(|e| mis(e.to_string()))?)),
            None => None,
        };
        let auth = p.get("auth").cloned();
        if let Some(a) = &auth {
            if !params::is_secret_source(a) {
                return Err(mis(format!(
                    "auth= must name where the auth value is (file:/ABSOLUTE/PATH, env:NAME or cred:NAME), \
                     never the value itself; got '{a}'"
                )));
            }
        }
        Ok(TpmProvider {
            uri: uri.to_string(),
            handle,
            key_id,
            tcti,
            tcti_conf,
            auth,
            oaep,
            pcrs,
            lock: Mutex::new(()),
        })
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, SCHEME, &self.key_id, msg)
    }

    /// Runs `f` on a fresh connection to the TPM, closed afterwards.
    fn with_tpm<T>(&self, f: impl FnOnce(&mut Context) -> Result<T, ProviderError>) -> Result<T, ProviderError> {
        let _guard = self.lock.lock();
        let mut ctx = Context::new(self.tcti_conf.clone()).map_err(|e| {
            let (kind, what) = classify(e);
            let kind = if kind == ErrorKind::Misconfigured {
                kind
            } else {
                ErrorKind::Unreachable
            };
            self.err(
                kind,
                format!(
                    "cannot connect to the TPM through TCTI '{}': {what}; check that the TPM (or swtpm) is \
                     running and reachable",
                    self.tcti
                ),
            )
        })?;
        f(&mut ctx)
    }

    /// Looks the key up at its handle and reads its public area.
    fn lookup(&self, ctx: &mut Context) -> Result<KeyState, ProviderError> {
        let tpm_handle = PersistentTpmHandle::new(self.handle)
            .map(TpmHandle::Persistent)
            .map_err(|e| self.err(ErrorKind::Misconfigured, format!("bad handle: {e}")))?;
        // Without a session: Esys_TR_FromTPMPublic with a password session set crashes
        // libtss2-esys 3.2.
        let object: ObjectHandle = ctx
            .execute_without_session(|c| c.tr_from_tpm_public(tpm_handle))
            .map_err(|e| self.tpm_err(e, Op::Lookup))?;
        let handle = KeyHandle::from(object);
        let (public, _name, _qualified) = ctx
            .execute_without_session(|c| c.read_public(handle))
            .map_err(|e| self.tpm_err(e, Op::Lookup))?;
        let Public::Rsa {
            object_attributes,
            parameters,
            unique,
            ..
        } = public
        else {
            return Err(self.err(
                ErrorKind::Misconfigured,
                "the object at this handle is not an RSA key; the KEK must be an RSA decryption key",
            ));
        };
        if !object_attributes.decrypt() || object_attributes.restricted() {
            return Err(self.err(
                ErrorKind::Misconfigured,
                "the key at this handle is not an unrestricted decryption key (it needs the 'decrypt' \
                 attribute and not 'restricted': create it with tpm2_create -G rsa3072:oaep-sha256 -a \
                 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt')",
            ));
        }
        if !object_attributes.user_with_auth() && self.pcrs.is_none() {
            return Err(self.err(
                ErrorKind::Misconfigured,
                "the key can only be used through its policy (no 'userwithauth' attribute): add the PCR \
                 selection it is bound to, e.g. pcrs=sha256:0,7, to the URI",
            ));
        }
        let hash = match (parameters.rsa_scheme(), self.oaep) {
            (RsaScheme::Null, h) => h.unwrap_or_default(),
            (RsaScheme::Oaep(hs), want) => {
                let have = match hs.hashing_algorithm() {
                    HashingAlgorithm::Sha1 => OaepHash::Sha1,
                    HashingAlgorithm::Sha256 => OaepHash::Sha256,
                    other => {
                        return Err(self.err(
                            ErrorKind::Misconfigured,
                            format!("the key's OAEP hash {other:?} is not supported; use sha256 or sha1"),
                        ))
                    }
                };
                if want.is_some_and(|w| w != have) {
                    return Err(self.err(
                        ErrorKind::Misconfigured,
                        format!(
                            "the URI asks for oaep={} but the key is fixed to OAEP-{}: fix the URI",
                            want.unwrap().name(),
                            have.name()
                        ),
                    ));
                }
                have
            }
            (other, _) => {
                return Err(self.err(
                    ErrorKind::Misconfigured,
                    format!("the key's scheme is {other:?}; a KEK needs scheme OAEP or null"),
                ))
            }
        };
        let exponent = match parameters.exponent().value() {
            0 => 65537,
            e => e,
        };
        let public = rsa::public_from_parts(unique.value(), &exponent.to_be_bytes())
            .map_err(|m| self.err(ErrorKind::Misconfigured, m.to_string()))?;
        let fp = rsa::fingerprint(&public);
        let info = KeyInfo::for_public(SCHEME, &self.key_id, &fp[..16], &public);
        Ok(KeyState {
            handle,
            public,
            hash,
            info,
        })
    }

    /// The key's auth value, read from its source on every call (so a changed file is used).
    fn auth_value(&self) -> Result<Auth, ProviderError> {
        let Some(spec) = &self.auth else {
            return Ok(Auth::default());
        };
        let s = params::read_secret(spec, SCHEME, &self.key_id)?;
        let bytes: Zeroizing<Vec<u8>> = if let Some(h) = s.strip_prefix("hex:") {
            Zeroizing::new(crate::crypto::unhex(h.trim()).ok_or_else(|| {
                self.err(
                    ErrorKind::Misconfigured,
                    format!("the auth value from {spec} starts with 'hex:' but is not hex"),
                )
            })?)
        } else {
            Zeroizing::new(s.strip_prefix("str:").unwrap_or(&s).as_bytes().to_vec())
        };
        Auth::try_from(bytes.to_vec()).map_err(|_| {
            self.err(
                ErrorKind::Misconfigured,
                format!("the auth value from {spec} is longer than the TPM allows (at most 64 bytes)"),
            )
        })
    }

    /// A policy session satisfying the key's policy: PolicyPCR over the URI's selection (with
    /// the PCRs' current values), then PolicyPassword when the URI names an auth value. The
    /// session has continueSession set and is flushed when the connection's context is
    /// dropped (swtpm and raw devices have no resource manager to do it).
    fn policy_session(&self, ctx: &mut Context) -> Result<AuthSession, ProviderError> {
        let (_, banks) = self.pcrs.as_ref().expect("policy_session needs pcrs");
        let session = ctx
            .execute_without_session(|c| {
                c.start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Policy,
                    SymmetricDefinition::Null,
                    HashingAlgorithm::Sha256,
                )
            })
            .map_err(|e| self.tpm_err(e, Op::Lookup))?
            .ok_or_else(|| self.err(ErrorKind::Unreachable, "the TPM started no policy session"))?;
        let (attrs, mask) = SessionAttributesBuilder::new().with_continue_session(true).build();
        let policy = PolicySession::try_from(session).map_err(|e| self.tpm_err(e, Op::Lookup))?;
        let mut selection = PcrSelectionListBuilder::new();
        for (alg, slots) in banks {
            selection = selection.with_selection(*alg, slots);
        }
        let selection = selection
            .build()
            .map_err(|e| self.err(ErrorKind::Misconfigured, format!("bad PCR selection: {e}")))?;
        ctx.execute_without_session(|c| {
            c.tr_sess_set_attributes(session, attrs, mask)?;
            c.policy_pcr(policy, Digest::default(), selection)?;
            if self.auth.is_some() {
                c.policy_password(policy)?;
            }
            Ok(())
        })
        .map_err(|e| self.tpm_err(e, Op::Lookup))?;
        Ok(session)
    }

    fn tpm_err(&self, e: tss_esapi::Error, op: Op) -> ProviderError {
        let (kind, what) = classify(e);
        let rc = raw_rc(e);
        let kind = match (kind, op) {
            // A TPM error on the decrypt's ciphertext parameter: not this key's ciphertext.
            (ErrorKind::UnwrapFailed, Op::Decrypt) => ErrorKind::UnwrapFailed,
            (ErrorKind::UnwrapFailed, _) => ErrorKind::Denied,
            (k, _) => k,
        };
        let msg = match fmt1_error(rc) {
            Some(0x0B) => format!(
                "no key at handle {} ({what}): it was evicted (tpm2_evictcontrol), or the owner hierarchy is \
                 disabled, or this is another TPM; re-persist the key or unlock with another keyslot",
                self.key_id
            ),
            Some(0x05) => format!("the key's hierarchy is disabled ({what}); re-enable it (tpm2_hierarchycontrol)"),
            Some(n @ (0x0E | 0x22)) => format!(
                "the TPM refused the key's auth value ({what}): the value read from {} is not the key's \
                 (wrong file, or the key was re-created with another auth value); fix it{}",
                self.auth.as_deref().unwrap_or("(no auth= given: empty auth value)"),
                if n == 0x0E {
                    ". Each failure counts towards the TPM's dictionary-attack lockout"
                } else {
                    ""
                }
            ),
            Some(0x1D) => format!(
                "the TPM refused the key's policy ({what}){}: re-bind the key (create a new one under the \
                 new PCR values and rotate to it) or unlock with another keyslot",
                match &self.pcrs {
                    Some((sel, _)) => format!(
                        ": the PCR values of {sel} differ from those the key was bound to (other firmware, boot \
                         loader, kernel or configuration, or a PCR was extended)"
                    ),
                    None => String::new(),
                }
            ),
            Some(0x04) | Some(0x15) if kind == ErrorKind::UnwrapFailed => {
                format!(
                    "the TPM could not decrypt the keyslot with this key ({what}): made by another key, or corrupted"
                )
            }
            _ if is_lockout(rc) => format!(
                "the TPM is in dictionary-attack lockout after repeated wrong auth values ({what}); fix the auth \
                 value, then wait for the lockout recovery time or clear it with tpm2_dictionarylockout -c"
            ),
            _ => match op {
                Op::Lookup => format!("reading the key at handle {} failed: {what}", self.key_id),
                Op::Decrypt => format!("TPM2_RSA_Decrypt failed: {what}"),
            },
        };
        self.err(kind, msg)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Lookup,
    Decrypt,
}

impl KeyProvider for TpmProvider {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn oaep_hash(&self) -> OaepHash {
        // The URI's choice, else the key's own fixed scheme (what wrap used).
        self.oaep
            .or_else(|| self.with_tpm(|ctx| Ok(self.lookup(ctx)?.hash)).ok())
            .unwrap_or(OaepHash::Sha256)
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        self.with_tpm(|ctx| Ok(self.lookup(ctx)?.info))
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let key = self.with_tpm(|ctx| self.lookup(ctx))?;
        Ok(Wrapped::locally(key.info, &key.public, key.hash, secret))
    }

    fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        self.with_tpm(|ctx| {
            let key = self.lookup(ctx)?;
            if version != key.info.version {
                return Err(self.err(
                    ErrorKind::Denied,
                    format!(
                        "the key at handle {} was replaced: it is version {} (fingerprint {}), the keyslot was \
                         wrapped by version {version}; re-persist the original key or unlock with another keyslot",
                        self.key_id,
                        key.info.version,
                        key.info.fingerprint_text()
                    ),
                ));
            }
            let bits = key.public.bits();
            if wrapped.len() != bits.div_ceil(8) {
                return Err(self.err(
                    ErrorKind::UnwrapFailed,
                    format!(
                        "the keyslot's ciphertext is {} bytes, not {} as RSA-{bits} makes: corrupted",
                        wrapped.len(),
                        bits.div_ceil(8),
                    ),
                ));
            }
            let auth = self.auth_value()?;
            ctx.tr_set_auth(key.handle.into(), auth)
                .map_err(|e| self.tpm_err(e, Op::Lookup))?;
            let ciphertext = PublicKeyRsa::try_from(wrapped.to_vec())
                .map_err(|e| self.err(ErrorKind::UnwrapFailed, format!("ciphertext not accepted: {e}")))?;
            let alg = match key.hash {
                OaepHash::Sha1 => HashingAlgorithm::Sha1,
                OaepHash::Sha256 => HashingAlgorithm::Sha256,
            };
            let scheme = RsaDecryptionScheme::Oaep(HashScheme::new(alg));
            let session = match &self.pcrs {
                None => AuthSession::Password,
                Some(_) => self.policy_session(ctx)?,
            };
            let plain = ctx
                .execute_with_session(Some(session), |c| {
                    c.rsa_decrypt(key.handle, ciphertext, scheme, Data::default())
                })
                .map_err(|e| {
                    // libtpms (OpenSSL backend) answers TPM_RC_FAILURE, not TPM_RC_VALUE, when
                    // OAEP decoding fails; a real failure mode would refuse everything after it.
                    // Tell them apart by asking the TPM something else.
                    if tpm_rc(raw_rc(e)) == Some(0x101)
                        && ctx.execute_without_session(|c| c.read_public(key.handle)).is_ok()
                    {
                        return self.err(
                            ErrorKind::UnwrapFailed,
                            format!(
                                "the TPM could not decrypt the keyslot with this key ({}): made by another key, \
                                 or corrupted",
                                classify(e).1
                            ),
                        );
                    }
                    self.tpm_err(e, Op::Decrypt)
                })?;
            let plain = Zeroizing::new(plain.value().to_vec());
            let secret = SecretKey::from_slice(&plain).ok_or_else(|| {
                self.err(
                    ErrorKind::UnwrapFailed,
                    format!(
                        "the keyslot decrypted to {} bytes, not a 32-byte volume key: made by another key or corrupted",
                        plain.len()
                    ),
                )
            })?;
            Ok(Unwrapped { secret, key: key.info })
        })
    }
}

/// Why a `tpm:` URI was refused.
#[derive(Debug, thiserror::Error)]
enum UriError {
    #[error(transparent)]
    Param(#[from] params::ParamError),
    #[error(
        "handle {0:#010x} is not a persistent handle (0x81000000..0x81ffffff); persist the key with \
         tpm2_evictcontrol -C o -c KEY.ctx 0x81000001"
    )]
    NotPersistent(u32),
    #[error("'{0}' is not a TPM persistent handle: expected tpm:0x81000001[?tcti=...&auth=...&oaep=sha256]")]
    NotHandle(String),
    #[error(
        "bad tcti '{tcti}': {why} (examples: device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321, \
         mssim:host=127.0.0.1,port=2321, tabrmd:bus_name=com.intel.tss2.Tabrmd)"
    )]
    Tcti { tcti: String, why: String },
    #[error("bad pcrs '{pcrs}': {why} (expected e.g. pcrs=sha256:0,7 or sha256:0,7+sha1:4)")]
    Pcrs { pcrs: String, why: String },
}

/// Parses a persistent handle: `0x81000001` or decimal.
fn parse_handle(s: &str) -> Result<u32, UriError> {
    let s = params::percent_decode(s)?;
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse::<u32>().ok(),
    };
    match v {
        Some(v) if (PERSISTENT_FIRST..=PERSISTENT_LAST).contains(&v) => Ok(v),
        Some(v) => Err(UriError::NotPersistent(v)),
        None => Err(UriError::NotHandle(s)),
    }
}

/// Parses a TCTI string, refusing names libtss2 would not know and options it would ignore.
fn parse_tcti(s: &str) -> Result<TctiNameConf, UriError> {
    let (name, conf) = s.split_once(':').unwrap_or((s, ""));
    let bad = |why: String| {
        Err(UriError::Tcti {
            tcti: s.to_string(),
            why,
        })
    };
    match name {
        "device" => {
            if !conf.is_empty() && !conf.starts_with('/') {
                return bad("the device must be an absolute path".into());
            }
        }
        "swtpm" | "mssim" => {
            for kv in conf.split(',').filter(|p| !p.is_empty()) {
                match kv.split_once('=') {
                    Some(("host", v)) if !v.is_empty() => {}
                    Some(("port", v)) if v.parse::<u16>().is_ok() => {}
                    _ => return bad(format!("'{kv}' is not host=HOST or port=PORT")),
                }
            }
        }
        "tabrmd" => {}
        other => return bad(format!("unknown TCTI '{other}'")),
    }
    TctiNameConf::from_str(s).or_else(|e| bad(e.to_string()))
}

/// Parses a PCR selection in tpm2-tools syntax: `sha256:0,7` or `sha256:0,7+sha1:4`.
fn parse_pcrs(s: &str) -> Result<PcrBanks, UriError> {
    let bad = |why: String| UriError::Pcrs {
        pcrs: s.to_string(),
        why,
    };
    let mut banks: PcrBanks = Vec::new();
    for bank in s.split('+') {
        let (alg, list) = bank
            .split_once(':')
            .ok_or_else(|| bad(format!("'{bank}' is not BANK:PCRS")))?;
        let alg = match alg.to_ascii_lowercase().as_str() {
            "sha1" => HashingAlgorithm::Sha1,
            "sha256" => HashingAlgorithm::Sha256,
            "sha384" => HashingAlgorithm::Sha384,
            "sha512" => HashingAlgorithm::Sha512,
            other => return Err(bad(format!("unknown PCR bank '{other}'"))),
        };
        if banks.iter().any(|(a, _)| *a == alg) {
            return Err(bad("a bank is given twice".into()));
        }
        let mut slots = Vec::new();
        for n in list.split(',') {
            let n: u32 = n
                .trim()
                .parse()
                .ok()
                .filter(|n| *n < 24)
                .ok_or_else(|| bad(format!("'{n}' is not a PCR number 0..23")))?;
            let slot = PcrSlot::try_from(1u32 << n).map_err(|e| bad(e.to_string()))?;
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        banks.push((alg, slots));
    }
    Ok(banks)
}

/// The TSS2_RC of an error (0 for wrapper errors).
fn raw_rc(e: tss_esapi::Error) -> u32 {
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.0,
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.0,
        _ => 0,
    }
}

const LAYER_TPM: u32 = 0;
const LAYER_RESMGR_TPM: u32 = 12;

/// The TPM response code inside `rc` when it came from the TPM (directly or relayed by a
/// resource manager).
fn tpm_rc(rc: u32) -> Option<u32> {
    match (rc >> 16) & 0xFF {
        LAYER_TPM | LAYER_RESMGR_TPM if rc != 0 => Some(rc & 0xFFFF),
        _ => None,
    }
}

/// The error number of a format-one TPM response code (handle/session/parameter errors).
fn fmt1_error(rc: u32) -> Option<u32> {
    tpm_rc(rc).filter(|c| c & 0x80 != 0).map(|c| c & 0x3F)
}

fn is_lockout(rc: u32) -> bool {
    tpm_rc(rc) == Some(0x921)
}

/// A description of errors raised by the TSS software layers (tss-esapi only describes TPM
/// response codes and prints "response code not recognized" for these).
fn tss_layer_error(rc: u32) -> Option<String> {
    let layer = match (rc >> 16) & 0xFF {
        6 => "TSS feature API",
        7 => "TSS ESAPI",
        8 => "TSS SAPI",
        9 => "TSS marshalling",
        10 => "TCTI (connection to the TPM)",
        11 => "resource manager",
        _ => return None,
    };
    let base = match rc & 0xFFFF {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        4 => "ABI mismatch",
        5 => "bad reference",
        6 => "insufficient buffer",
        7 => "bad sequence",
        8 => "no connection",
        9 => "try again",
        10 => "I/O error (connection refused or closed, or device missing)",
        11 => "bad value",
        12 => "not permitted",
        16 => "bad size",
        17 => "malformed response",
        19 => "insufficient response",
        20 => "incompatible TCTI",
        21 => "not supported",
        23 => "out of memory",
        27 => "response authorization failed",
        _ => "error",
    };
    Some(format!("{layer}: {base}"))
}

/// Classifies a TSS error. `UnwrapFailed` stands for "bad ciphertext parameter", which the
/// caller turns into Denied outside the decrypt itself.
fn classify(e: tss_esapi::Error) -> (ErrorKind, String) {
    let rc = match e {
        tss_esapi::Error::WrapperError(w) => return (ErrorKind::Misconfigured, format!("{w}")),
        _ => raw_rc(e),
    };
    let what = match tss_layer_error(rc) {
        Some(text) => format!("{text} (TSS2_RC {rc:#x})"),
        None => format!("{e} (TSS2_RC {rc:#x})"),
    };
    let Some(t) = tpm_rc(rc) else {
        // TCTI (connection), ESAPI, SYS, MU or resource-manager errors: the TPM could not
        // be asked properly.
        return (ErrorKind::Unreachable, what);
    };
    let kind = if t & 0x80 != 0 {
        match t & 0x3F {
            0x0B | 0x05 | 0x0E | 0x22 | 0x1D | 0x23 => ErrorKind::Denied,
            // TPM_RC_VALUE / TPM_RC_SIZE on a parameter: the ciphertext.
            0x04 | 0x15 if t & 0x40 != 0 => ErrorKind::UnwrapFailed,
            // Scheme, attributes, type, hash, key size, MGF: the key does not fit the URI.
            0x02 | 0x03 | 0x07 | 0x08 | 0x0A | 0x12 => ErrorKind::Misconfigured,
            _ => ErrorKind::Denied,
        }
    } else if t & 0x800 != 0 {
        // Warnings: lockout is a refusal; the rest (retry, yielded, testing, out of object
        // or session memory, NV rate) are transient.
        if t == 0x921 {
            ErrorKind::Denied
        } else {
            ErrorKind::Unreachable
        }
    } else {
        match t {
            // Not started up, failure mode.
            0x100 | 0x101 => ErrorKind::Unreachable,
            _ => ErrorKind::Denied,
        }
    };
    (kind, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parsing() {
        let p = TpmProvider::open(
            "tpm:0x81000001?tcti=swtpm:host=127.0.0.1,port=2321&auth=file:/x&oaep=sha1",
            "0x81000001?tcti=swtpm:host=127.0.0.1,port=2321&auth=file:/x&oaep=sha1",
        )
        .unwrap();
        assert_eq!(p.handle, 0x81000001);
        assert_eq!(p.key_id, "0x81000001");
        assert_eq!(p.tcti, "swtpm:host=127.0.0.1,port=2321");
        assert_eq!(p.oaep, Some(OaepHash::Sha1));
        assert_eq!(p.auth.as_deref(), Some("file:/x"));
        let d = TpmProvider::open("tpm:2164260866", "2164260866").unwrap();
        assert_eq!(d.handle, 0x81000002);
        assert_eq!(d.tcti, DEFAULT_TCTI);
        assert!(d.auth.is_none() && d.oaep.is_none());
        let pcr = TpmProvider::open("u", "0x81000001?pcrs=sha256:0,7,7+sha1:23").unwrap();
        let banks = &pcr.pcrs.as_ref().unwrap().1;
        assert_eq!(
            banks[0],
            (HashingAlgorithm::Sha256, vec![PcrSlot::Slot0, PcrSlot::Slot7])
        );
        assert_eq!(banks[1], (HashingAlgorithm::Sha1, vec![PcrSlot::Slot23]));
        let enc = TpmProvider::open("u", "0x81000001?tcti=device:/dev/tpm%26x").unwrap();
        assert_eq!(enc.tcti, "device:/dev/tpm&x");
        for bad in [
            "0x80000001",
            "0x81000001?tcti=tcp:x",
            "0x81000001?tcti=swtpm:host=127.0.0.1,prt=1",
            "0x81000001?tcti=swtpm:port=99999",
            "0x81000001?tcti=device:dev/tpm0",
            "0x81000001?auth=secret",
            "0x81000001?oaep=md5",
            "0x81000001?tcti=device:/dev/tpm0&tcti=device:/dev/tpm0",
            "0x81000001?pcrs=sha256:24",
            "0x81000001?pcrs=md5:0",
            "0x81000001?pcrs=sha256:0+sha256:1",
            "0x81000001?colour=blue",
            "kek",
            "",
        ] {
            let e = TpmProvider::open("u", bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(e.kind, ErrorKind::Misconfigured, "{bad}");
        }
    }

    #[test]
    fn response_codes() {
        let k = |rc: u32| classify(rc_err(rc)).0;
        assert_eq!(k(0x18b), ErrorKind::Denied, "TPM_RC_HANDLE");
        assert_eq!(k(0x98e), ErrorKind::Denied, "TPM_RC_AUTH_FAIL");
        assert_eq!(k(0x921), ErrorKind::Denied, "TPM_RC_LOCKOUT");
        assert_eq!(k(0x902), ErrorKind::Unreachable, "TPM_RC_OBJECT_MEMORY");
        assert_eq!(k(0x922), ErrorKind::Unreachable, "TPM_RC_RETRY");
        assert_eq!(k(0x1c4), ErrorKind::UnwrapFailed, "TPM_RC_VALUE on parameter 1");
        assert_eq!(k(0x2d2), ErrorKind::Misconfigured, "TPM_RC_SCHEME on parameter 2");
        assert_eq!(k(0xa000a), ErrorKind::Unreachable, "TCTI I/O error");
        assert_eq!(
            k(0xc018b),
            ErrorKind::Denied,
            "TPM_RC_HANDLE relayed by a resource manager"
        );
        assert!(is_lockout(0x921) && !is_lockout(0xA0921));
        assert_eq!(crate::crypto::unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(crate::crypto::unhex("0"), None);
    }

    fn rc_err(rc: u32) -> tss_esapi::Error {
        use tss_esapi::constants::response_code::{FormatOneResponseCode, FormatZeroResponseCode};
        tss_esapi::Error::Tss2Error(if rc & 0x80 != 0 {
            Tss2ResponseCode::FormatOne(FormatOneResponseCode(rc))
        } else {
            Tss2ResponseCode::FormatZero(FormatZeroResponseCode(rc))
        })
    }
}
