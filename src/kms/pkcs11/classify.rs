//! PKCS#11 failures: which ones a fresh session may cure ([`Fail::retryable`]) and how each
//! is classified for revocation handling ([`Pkcs11Provider::classify`]; the rules are in the
//! parent module's docs).

use cryptoki::error::{Error as CkError, RvError};

use super::Pkcs11Provider;
use crate::crypto::rsa::OaepHash;
use crate::kms::{ErrorKind, ProviderError};

/// Why one attempt failed, before it is turned into a [`ProviderError`].
pub(super) enum Fail {
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
    pub(super) fn ck(during: &'static str, err: CkError) -> Fail {
        Fail::Ck { during, err }
    }

    pub(super) fn plain(kind: ErrorKind, msg: impl Into<String>) -> Fail {
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
    pub(super) fn retryable(&self) -> bool {
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
pub(super) fn rv_name(rv: RvError) -> String {
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

impl Pkcs11Provider {
    /// Turns a failed attempt into the error the caller sees.
    pub(super) fn classify(&self, f: Fail) -> ProviderError {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_names() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::KeyFunctionNotPermitted),
            "CKR_KEY_FUNCTION_NOT_PERMITTED"
        );
    }
}
