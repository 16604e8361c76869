//! A volume: the cipher directory plus its header, created with [`init`] and unlocked with
//! [`open`]. Unlocking costs exactly one provider unwrap; everything after it (file DEKs,
//! header MAC) is derived locally from the volume key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;

use crate::crypto::{self, SecretKey};
pub use crate::format::volume::SlotRole;
use crate::format::volume::{ParsedHeader, VolumeHeaderError, SLOT_ALGORITHM, SLOT_ALGORITHM_SHA1};
use crate::format::{Keyslot, VolumeHeader, VolumeKeys, VOLUME_HEADER_NAME};
use crate::provider::{self, KeyInfo, KeyProvider, ProviderError};
use crate::util;

/// Why a volume could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No header.
    #[error("no cmkfs volume at {0} (no {VOLUME_HEADER_NAME}); create one with 'cmkfs init --kek URI {0}'")]
    NoVolume(PathBuf),
    /// Init on a non-empty directory.
    #[error("{0} is not empty; cmkfs init needs an empty (or new) directory")]
    NotEmpty(PathBuf),
    /// Header problem.
    #[error("{path}: {source}")]
    Header {
        /// Header path.
        path: PathBuf,
        /// What is wrong.
        source: VolumeHeaderError,
    },
    /// No keyslot could be unwrapped.
    #[error("cannot unlock volume {path}: {}", fmt_slot_errors(.errors))]
    Locked {
        /// Volume directory.
        path: PathBuf,
        /// Each slot tried and why it failed.
        errors: Vec<(u32, ProviderError)>,
    },
    /// Provider failure outside unlocking (init, keyslot changes).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

fn fmt_slot_errors(errors: &[(u32, ProviderError)]) -> String {
    errors
        .iter()
        .map(|(id, e)| format!("keyslot {id}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl VolumeError {
    /// The provider error kind of the first failed slot, for callers that must tell
    /// *denied* from *unreachable*.
    pub fn provider_kind(&self) -> Option<provider::ErrorKind> {
        match self {
            VolumeError::Locked { errors, .. } => errors.first().map(|(_, e)| e.kind),
            VolumeError::Provider(e) => Some(e.kind),
            _ => None,
        }
    }
}

/// An unlocked volume.
pub struct Volume {
    dir: PathBuf,
    header: VolumeHeader,
    keys: Arc<VolumeKeys>,
    volume_key: SecretKey,
    slot: Keyslot,
    key: KeyInfo,
    provider: Arc<dyn KeyProvider>,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("dir", &self.dir)
            .field("volume_id", &self.header.volume_id)
            .finish_non_exhaustive()
    }
}

/// Path of the header file in a cipher directory.
pub fn header_path(dir: &Path) -> PathBuf {
    dir.join(VOLUME_HEADER_NAME)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn make_slot(id: u32, role: SlotRole, uri: &str, w: provider::Wrapped, hash: provider::rsa_kek::OaepHash) -> Keyslot {
    Keyslot {
        id,
        role,
        kek_uri: uri.to_string(),
        provider: w.key.provider.clone(),
        key_id: w.key.key_id.clone(),
        key_version: w.key.version.clone(),
        kek_fingerprint: w.key.fingerprint.clone(),
        algorithm: match hash {
            provider::rsa_kek::OaepHash::Sha256 => SLOT_ALGORITHM,
            provider::rsa_kek::OaepHash::Sha1 => SLOT_ALGORITHM_SHA1,
        }
        .into(),
        wrapped_key: base64::engine::general_purpose::STANDARD.encode(&w.ciphertext),
        created: util::now_rfc3339(),
    }
}

/// Creates a volume in `dir` (created if missing, must be empty) with one primary keyslot
/// wrapped by `kek_uri`. The wrap is checked by unwrapping once before the header is written.
pub fn init(dir: &Path, kek_uri: &str) -> Result<VolumeHeader, VolumeError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
        return Err(VolumeError::NotEmpty(dir.to_path_buf()));
    }
    let volume_key = SecretKey::random();
    let slot = wrap_slot(kek_uri, &volume_key, 0, SlotRole::Primary)?;
    let mut volume_id = [0u8; 16];
    crypto::fill_random(&mut volume_id);
    let mut header = VolumeHeader::new(volume_id, util::now_rfc3339());
    header.keyslots.push(slot);
    let keys = VolumeKeys::derive(&volume_key, volume_id);
    let path = header_path(dir);
    util::atomic_write(&path, &header.seal(&keys), 0o644).map_err(io(&path))?;
    Ok(header)
}

/// Reads and parses (without authenticating) a volume header.
pub fn read_header(dir: &Path) -> Result<ParsedHeader, VolumeError> {
    let path = header_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(VolumeError::NoVolume(dir.to_path_buf())),
        Err(e) => return Err(io(&path)(e)),
    };
    VolumeHeader::parse(&bytes).map_err(|source| VolumeError::Header { path, source })
}

/// How long unlocking waits for a provider's unwrap: `CMKFS_UNLOCK_TIMEOUT` (e.g. `2m`),
/// default 60 s. A hung HSM, TPM or KMS must make `cmkfs mount` fail with a clear error,
/// not hang it; the revalidation loop has its own, shorter timeout.
pub fn unlock_timeout() -> std::time::Duration {
    std::env::var("CMKFS_UNLOCK_TIMEOUT")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(std::time::Duration::from_secs(60))
}

/// Unwraps `slot` through `p` on a helper thread, giving up after `timeout` (the thread is
/// left to finish on its own; the command fails with an *unreachable* error).
fn unwrap_with_deadline(
    p: Arc<dyn KeyProvider>,
    slot: &Keyslot,
    wrapped: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<provider::Unwrapped, ProviderError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let version = slot.key_version.clone();
    let spawned = std::thread::Builder::new().name("cmkfs-unlock".into()).spawn(move || {
        let _ = tx.send(p.unwrap(&version, &wrapped));
    });
    let unreachable = |m: String| ProviderError::new(provider::ErrorKind::Unreachable, &slot.provider, &slot.key_id, m);
    if let Err(e) = spawned {
        return Err(unreachable(format!("cannot start provider call: {e}")));
    }
    rx.recv_timeout(timeout).unwrap_or_else(|_| {
        Err(unreachable(format!(
            "the provider did not answer within {timeout:?}; is the token, TPM or server responsive?"
        )))
    })
}

/// Unlocks the volume in `dir`. Without `kek_override` each keyslot is tried with the
/// provider its URI names, primary slots first. With it, only that KEK is used, on the slots
/// whose fingerprint matches it first (a key store that moved, or a recovery key).
pub fn open(dir: &Path, kek_override: Option<&str>) -> Result<Volume, VolumeError> {
    let parsed = read_header(dir)?;
    // Without --kek only primary slots are tried: a recovery slot is for an administrator's
    // explicit recovery, and must not keep a volume mountable after its primary KEK is revoked.
    let mut slots: Vec<Keyslot> = parsed
        .header
        .keyslots
        .iter()
        .filter(|s| kek_override.is_some() || s.role == SlotRole::Primary)
        .cloned()
        .collect();
    slots.sort_by_key(|s| (s.role != SlotRole::Primary, s.id));
    let override_provider: Option<Arc<dyn KeyProvider>> = match kek_override {
        Some(uri) => {
            let p: Arc<dyn KeyProvider> = Arc::from(provider::open(uri)?);
            if let Ok(info) = p.current() {
                slots.sort_by_key(|s| s.kek_fingerprint != info.fingerprint);
            }
            Some(p)
        }
        None => None,
    };
    let mut errors = vec![];
    for slot in slots {
        let provider = match override_provider {
            Some(_) => None,
            None => match provider::open(&slot.kek_uri) {
                Ok(p) => Some(Arc::<dyn KeyProvider>::from(p)),
                Err(e) => {
                    errors.push((slot.id, e));
                    continue;
                }
            },
        };
        let p: Arc<dyn KeyProvider> = match (&override_provider, &provider) {
            (Some(p), _) | (None, Some(p)) => p.clone(),
            _ => unreachable!(),
        };
        let wrapped = slot.wrapped_bytes().map_err(|source| VolumeError::Header {
            path: header_path(dir),
            source,
        })?;
        match unwrap_with_deadline(p, &slot, wrapped, unlock_timeout()) {
            Ok(u) => {
                let keys =
                    VolumeKeys::derive(&u.secret, parsed.header.volume_id_bytes()).for_format(parsed.header.version);
                parsed.verify(&keys).map_err(|source| VolumeError::Header {
                    path: header_path(dir),
                    source,
                })?;
                tracing::info!(volume = %parsed.header.volume_id, slot = slot.id, key = %u.key.key_id, version = %u.key.version, "volume unlocked");
                let provider = match (provider, override_provider) {
                    (Some(p), _) | (None, Some(p)) => p,
                    (None, None) => unreachable!(),
                };
                return Ok(Volume {
                    dir: dir.to_path_buf(),
                    header: parsed.header,
                    keys: Arc::new(keys),
                    volume_key: u.secret,
                    slot,
                    key: u.key,
                    provider,
                });
            }
            Err(e) => errors.push((slot.id, e)),
        }
    }
    Err(VolumeError::Locked {
        path: dir.to_path_buf(),
        errors,
    })
}

impl Volume {
    /// The cipher directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The authenticated header.
    pub fn header(&self) -> &VolumeHeader {
        &self.header
    }
    /// Keys derived from the volume key.
    pub fn keys(&self) -> &Arc<VolumeKeys> {
        &self.keys
    }
    /// The keyslot that unlocked the volume.
    pub fn slot(&self) -> &Keyslot {
        &self.slot
    }
    /// The KEK (and version) that unlocked it.
    pub fn key(&self) -> &KeyInfo {
        &self.key
    }
    /// The provider of that KEK.
    pub fn provider(&self) -> &Arc<dyn KeyProvider> {
        &self.provider
    }
    /// The volume key itself (for rewrapping).
    pub fn volume_key(&self) -> &SecretKey {
        &self.volume_key
    }
}

/// Reads the header and authenticates it with `volume_key`.
pub fn read_verified(dir: &Path, volume_key: &SecretKey) -> Result<(VolumeHeader, VolumeKeys), VolumeError> {
    let parsed = read_header(dir)?;
    let keys = VolumeKeys::derive(volume_key, parsed.header.volume_id_bytes()).for_format(parsed.header.version);
    parsed.verify(&keys).map_err(|source| VolumeError::Header {
        path: header_path(dir),
        source,
    })?;
    Ok((parsed.header, keys))
}

/// Rewrites the volume header under an exclusive lock: re-reads and authenticates it, lets
/// `f` change it, bumps the generation and writes it atomically (temporary file, fsync,
/// rename, fsync directory). At every instant a complete, valid header is in place.
pub fn update_header(
    dir: &Path,
    volume_key: &SecretKey,
    f: impl FnOnce(&mut VolumeHeader) -> Result<(), VolumeError>,
) -> Result<VolumeHeader, VolumeError> {
    use std::os::fd::AsRawFd;
    let lock_path = dir.join(format!("{VOLUME_HEADER_NAME}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(&lock_path)(std::io::Error::last_os_error()));
    }
    let (mut header, keys) = read_verified(dir, volume_key)?;
    f(&mut header)?;
    header.generation += 1;
    let path = header_path(dir);
    util::atomic_write(&path, &header.seal(&keys), 0o644).map_err(io(&path))?;
    Ok(header)
}

/// Wraps `volume_key` with the KEK at `uri` into a keyslot (checked by unwrapping once).
pub fn wrap_slot(uri: &str, volume_key: &SecretKey, id: u32, role: SlotRole) -> Result<Keyslot, VolumeError> {
    let provider = provider::open(uri)?;
    let wrapped = provider.wrap(volume_key)?;
    let check = provider.unwrap(&wrapped.key.version, &wrapped.ciphertext)?;
    if check.secret.expose() != volume_key.expose() {
        return Err(ProviderError::new(
            provider::ErrorKind::UnwrapFailed,
            &wrapped.key.provider,
            &wrapped.key.key_id,
            "unwrap returned a different key than was wrapped",
        )
        .into());
    }
    Ok(make_slot(id, role, provider.uri(), wrapped, provider.oaep_hash()))
}

/// True when a KEK URI names no version, so the volume follows the key's newest version.
pub fn uri_is_versionless(uri: &str) -> bool {
    !uri.contains("?version=")
}
