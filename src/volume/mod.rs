//! A volume: the cipher directory plus its header, created with [`init`] and unlocked with
//! [`open`]. Unlocking costs exactly one provider unwrap; everything after it (file DEKs,
//! header MAC) is derived locally from the volume key.
//!
//! The header is untrusted until it authenticates, and even then it only *proposes*: which
//! KEKs may be used, and whether this is the volume (and the volume key, and the header
//! generation) this host knows, is decided by the local configuration ([`trust`]). The files
//! cmkfs keeps in the cipher root are reached through [`CipherRoot`] only; the locks
//! that serialise mounts and header rewrites live outside the cipher directory ([`lock`]).
//! Adding, removing and rewrapping keyslots, and the rules that keep a volume openable, are
//! in [`keyslots`]; how a volume is mounted (command line over configuration over defaults)
//! is resolved in [`mount_settings`].

pub mod keyslots;
pub mod lock;
pub mod mount_settings;
pub mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use subtle::ConstantTimeEq;

use crate::crypto::{self, SecretKey};
pub use crate::format::volume_header::SlotRole;
use crate::format::volume_header::{ParsedHeader, VolumeHeaderError, SLOT_ALGORITHM, SLOT_ALGORITHM_SHA1};
use crate::format::{Keyslot, VolumeHeader, VolumeKeys, VOLUME_HEADER_NAME};
use crate::kms::{self, call, KeyInfo, KeyProvider, ProviderError};
pub use crate::store::root::CipherRoot;
use crate::util;

/// The largest volume header cmkfs reads (a header with a hundred keyslots is under 100 KiB).
pub const HEADER_CAP: u64 = 1 << 20;
/// How long a header rewrite waits for another one to finish.
pub const HEADER_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// A keyslot change was refused (see [`keyslots`]).
    #[error("{0}")]
    Keyslot(#[from] keyslots::KeyslotError),
    /// The local configuration refused (see [`trust`]).
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    /// The header has no keyslot this host allows.
    #[error("no keyslot of the volume in {dir} uses a KEK this host allows: the header names {named:?}; {record} allows {allowed:?}. Add the URI to allowed_keks there if it is right, or mount with --kek URI")]
    NotAllowed {
        /// Cipher directory.
        dir: PathBuf,
        /// URIs the header's (primary) keyslots name.
        named: Vec<String>,
        /// The configuration file.
        record: PathBuf,
        /// What it allows.
        allowed: Vec<String>,
    },
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
    pub fn provider_kind(&self) -> Option<kms::ErrorKind> {
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
    record: trust::Record,
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

fn make_slot(id: u32, role: SlotRole, uri: &str, w: kms::Wrapped, hash: crate::crypto::rsa::OaepHash) -> Keyslot {
    Keyslot {
        id,
        role,
        kek_uri: uri.to_string(),
        provider: w.key.provider.clone(),
        key_id: w.key.key_id.clone(),
        key_version: w.key.version.clone(),
        // A wrap always reports the public key it wrapped with (KeyInfo::for_public).
        kek_fingerprint: w.key.fingerprint.clone().unwrap_or_default(),
        algorithm: match hash {
            crate::crypto::rsa::OaepHash::Sha256 => SLOT_ALGORITHM,
            crate::crypto::rsa::OaepHash::Sha1 => SLOT_ALGORITHM_SHA1,
        }
        .into(),
        wrapped_key: base64::engine::general_purpose::STANDARD.encode(&w.ciphertext),
        created: util::now_rfc3339(),
    }
}

/// A created volume.
pub struct Created {
    /// Its header.
    pub header: VolumeHeader,
    /// The local configuration recorded for it.
    pub record: trust::Record,
    /// Set when the cipher directory existed and is open to other users.
    pub warning: Option<String>,
}

/// Creates a volume in `dir` (created 0700 if missing, must be empty) with one primary
/// keyslot wrapped by `kek_uri`, and records it in the local configuration (as `name`). The
/// wrap is checked by unwrapping once before the header is written.
pub fn init(dir: &Path, kek_uri: &str, name: Option<&str>) -> Result<Created, VolumeError> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(r) = trust::find_by_dir(dir)? {
        return Err(trust::TrustError::Bad {
            path: r.path,
            why: format!(
                "already configures a volume in {}; 'cmkfs volume forget {}' first",
                dir.display(),
                r.name
            ),
        }
        .into());
    }
    let mut warning = None;
    let created = match std::fs::symlink_metadata(dir) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::create_dir(dir).map_err(io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
            true
        }
        Err(e) => return Err(io(dir)(e)),
    };
    let root = CipherRoot::open(dir).map_err(io(dir))?;
    if created {
        // The cipher root is private; the mount's root is shown as an ordinary 0755
        // directory of its creator (chmod/chown through the mount change it).
        let gid = crate::sys::process::egid();
        let shown = crate::store::root::RootAttr {
            mode: 0o755,
            uid: util::euid(),
            gid,
        };
        if let Err(e) = shown.write(root.fd()) {
            warning = Some(format!(
                "{} does not take extended attributes ({e}): the mount's root will show the cipher directory's own mode 0700",
                dir.display()
            ));
        }
    }
    if !root.names().map_err(io(dir))?.is_empty() {
        return Err(VolumeError::NotEmpty(dir.to_path_buf()));
    }
    let mode = root.mode().map_err(io(dir))?;
    if !created && mode & 0o077 != 0 {
        warning = Some(format!(
            "{} is open to other users (mode {mode:o}): they can list names, sizes and times of the encrypted files; 'chmod 700 {}' unless that is intended",
            dir.display(),
            dir.display()
        ));
    }
    let volume_key = SecretKey::random();
    let slot = wrap_slot(kek_uri, &volume_key, 0, SlotRole::Primary)?;
    let mut volume_id = [0u8; 16];
    crypto::fill_random(&mut volume_id);
    let mut header = VolumeHeader::new(volume_id, util::now_rfc3339());
    let allowed = vec![slot.kek_uri.clone()];
    header.keyslots.push(slot);
    let keys = VolumeKeys::derive(&volume_key, volume_id).for_format(header.version);
    if keys.names().is_some() {
        // Format 3: the root directory's IV, before the header that makes this a volume.
        let mut iv = [0u8; crate::format::names::DIRIV_LEN];
        crypto::fill_random(&mut iv);
        root.write_atomic(crate::format::names::DIRIV_NAME, &iv, 0o400)
            .map_err(io(&dir.join(crate::format::names::DIRIV_NAME)))?;
    }
    root.write_atomic(VOLUME_HEADER_NAME, &header.seal(&keys), 0o600)
        .map_err(io(&header_path(dir)))?;
    let record = trust::create(name, dir, allowed, &header, &keys)?;
    Ok(Created {
        header,
        record,
        warning,
    })
}

/// Reads and parses (without authenticating) a volume header.
pub fn read_header(dir: &Path) -> Result<ParsedHeader, VolumeError> {
    let root = CipherRoot::open(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VolumeError::NoVolume(dir.to_path_buf()),
        _ => io(dir)(e),
    })?;
    read_header_at(&root)
}

/// Reads and parses the header through an open cipher root: a regular file of at most
/// [`HEADER_CAP`] bytes (a planted link, FIFO or huge file is refused without blocking).
pub fn read_header_at(root: &CipherRoot) -> Result<ParsedHeader, VolumeError> {
    let path = header_path(root.path());
    let bytes = match root.read_regular(VOLUME_HEADER_NAME, HEADER_CAP) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VolumeError::NoVolume(root.path().to_path_buf()))
        }
        Err(e) => return Err(io(&path)(e)),
    };
    VolumeHeader::parse(&bytes).map_err(|source| VolumeError::Header { path, source })
}

/// How long unlocking waits for a provider's unwrap: `CMKFS_UNLOCK_TIMEOUT` (e.g. `2m`),
/// default 60 s. A hung HSM, TPM or KMS must make `cmkfs mount` fail with a clear error,
/// not hang it; the revalidation loop has its own, shorter timeout.
pub fn unlock_timeout() -> std::time::Duration {
    crate::config::env().unlock_timeout
}

/// Opens the provider for `uri` with a deadline (opening may load a module, connect to a
/// TPM or a server).
pub fn open_provider(uri: &str, timeout: Duration) -> Result<Arc<dyn KeyProvider>, ProviderError> {
    let scheme = uri.split(':').next().unwrap_or("uri").to_string();
    let u = uri.to_string();
    call::with_deadline(&scheme, uri, timeout, None, move || kms::open(&u).map(Arc::from))
}

/// Unwraps `slot` through `p` with a deadline ([`call::with_deadline`]; `in_flight` as there).
pub fn unwrap_slot(
    p: &Arc<dyn KeyProvider>,
    slot: &Keyslot,
    timeout: Duration,
    in_flight: Option<&Arc<std::sync::atomic::AtomicBool>>,
) -> Result<kms::Unwrapped, ProviderError> {
    let wrapped = slot.wrapped_bytes().map_err(|e| {
        ProviderError::new(
            kms::ErrorKind::Misconfigured,
            &slot.provider,
            &slot.key_id,
            e.to_string(),
        )
    })?;
    let (p, version) = (p.clone(), slot.key_version.clone());
    call::with_deadline(&slot.provider, &slot.key_id, timeout, in_flight, move || {
        p.unwrap(&version, &wrapped)
    })
}

/// Unlocks the volume in `dir`.
///
/// Which KEKs are used is decided locally, never by the header: without `kek_override`, only
/// the primary keyslots whose URI the volume's local configuration allows ([`trust`]); with
/// it, only that KEK (given on the command line), on the slots whose fingerprint matches it
/// first. After the keyslot unwraps and the header authenticates, the volume id, the volume
/// key and the header generation are checked against what this host pinned. A volume with no
/// local configuration can only be opened with `kek_override`; it is then recorded (pinned).
pub fn open(dir: &Path, kek_override: Option<&str>) -> Result<Volume, VolumeError> {
    let root = CipherRoot::open(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VolumeError::NoVolume(dir.to_path_buf()),
        _ => io(dir)(e),
    })?;
    let parsed = read_header_at(&root)?;
    let record = trust::find_by_dir(dir)?;
    let timeout = unlock_timeout();
    let (mut slots, override_provider): (Vec<Keyslot>, Option<Arc<dyn KeyProvider>>) = match kek_override {
        Some(uri) => {
            let p = open_provider(uri, timeout)?;
            let mut slots = parsed.header.keyslots.clone();
            slots.sort_by_key(|s| (s.role != SlotRole::Primary, s.id));
            let pc = p.clone();
            let info = call::with_deadline("uri", uri, timeout, None, move || pc.current());
            if let Ok(info) = info {
                slots.sort_by_key(|s| Some(&s.kek_fingerprint) != info.fingerprint.as_ref());
            }
            (slots, Some(p))
        }
        None => {
            let Some(rec) = &record else {
                return Err(trust::TrustError::NotConfigured {
                    dir: dir.to_path_buf(),
                    config: trust::config_dir().join("volumes"),
                }
                .into());
            };
            // A recovery slot is for an administrator's explicit recovery (--kek), and must not
            // keep a volume mountable after its primary KEK is revoked.
            let primary: Vec<Keyslot> = parsed
                .header
                .keyslots
                .iter()
                .filter(|s| s.role == SlotRole::Primary)
                .cloned()
                .collect();
            let mut slots: Vec<Keyslot> = primary.iter().filter(|s| rec.allows(&s.kek_uri)).cloned().collect();
            if slots.is_empty() {
                return Err(VolumeError::NotAllowed {
                    dir: dir.to_path_buf(),
                    named: primary.iter().map(|s| s.kek_uri.clone()).collect(),
                    record: rec.path.clone(),
                    allowed: rec.config.allowed_keks.clone(),
                });
            }
            slots.sort_by_key(|s| s.id);
            (slots, None)
        }
    };
    let mut errors = vec![];
    for slot in slots.drain(..) {
        let p = match &override_provider {
            Some(p) => p.clone(),
            None => match open_provider(&slot.kek_uri, timeout) {
                Ok(p) => p,
                Err(e) => {
                    errors.push((slot.id, e));
                    continue;
                }
            },
        };
        let u = match unwrap_slot(&p, &slot, timeout, None) {
            Ok(u) => u,
            Err(e) => {
                errors.push((slot.id, e));
                continue;
            }
        };
        let keys = VolumeKeys::derive(&u.secret, parsed.header.volume_id_bytes()).for_format(parsed.header.version);
        parsed.verify(&keys).map_err(|source| VolumeError::Header {
            path: header_path(dir),
            source,
        })?;
        let record = match record {
            Some(mut rec) => {
                trust::check_pin(&rec, &parsed.header, &keys)?;
                if rec.config.pin.is_none() {
                    trust::pin(&mut rec, &parsed.header, &keys)?;
                }
                trust::raise_generation(&mut rec, parsed.header.generation)?;
                rec
            }
            None => {
                let uri = kek_override.expect("no record means --kek was given");
                let rec = trust::create(None, dir, vec![uri.to_string()], &parsed.header, &keys)?;
                tracing::warn!(volume = %parsed.header.volume_id, record = %rec.path.display(), "volume pinned on first use; {uri} recorded as its allowed KEK");
                rec
            }
        };
        tracing::info!(volume = %parsed.header.volume_id, slot = slot.id, key = %u.key.key_id, version = %u.key.version, "volume unlocked");
        return Ok(Volume {
            dir: dir.to_path_buf(),
            record,
            header: parsed.header,
            keys: Arc::new(keys),
            volume_key: u.secret,
            slot,
            key: u.key,
            provider: p,
        });
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
    /// The local configuration that allowed (and pinned) it.
    pub fn record(&self) -> &trust::Record {
        &self.record
    }
}

/// Reads the header and authenticates it with `volume_key`.
pub fn read_verified(dir: &Path, volume_key: &SecretKey) -> Result<(VolumeHeader, VolumeKeys), VolumeError> {
    let root = CipherRoot::open(dir).map_err(io(dir))?;
    read_verified_at(&root, volume_key)
}

/// [`read_verified`] through an open cipher root.
pub fn read_verified_at(root: &CipherRoot, volume_key: &SecretKey) -> Result<(VolumeHeader, VolumeKeys), VolumeError> {
    let parsed = read_header_at(root)?;
    let keys = VolumeKeys::derive(volume_key, parsed.header.volume_id_bytes()).for_format(parsed.header.version);
    parsed.verify(&keys).map_err(|source| VolumeError::Header {
        path: header_path(root.path()),
        source,
    })?;
    Ok((parsed.header, keys))
}

/// Rewrites the volume header under the header lock (outside the cipher directory, see
/// [`lock`]): re-reads and authenticates it, refuses it if it is older than this host has
/// seen (a restored old header must not be built upon), lets `f` change it, bumps the
/// generation, writes it atomically (new file, fsync, rename, fsync directory: at every
/// instant a complete, valid header is in place) and raises the pinned generation.
pub fn update_header(
    dir: &Path,
    volume_key: &SecretKey,
    f: impl FnOnce(&mut VolumeHeader) -> Result<(), VolumeError>,
) -> Result<VolumeHeader, VolumeError> {
    let root = CipherRoot::open(dir).map_err(io(dir))?;
    let _lock = lock::lock_header(&root, HEADER_LOCK_TIMEOUT).map_err(io(dir))?;
    let (mut header, keys) = read_verified_at(&root, volume_key)?;
    let mut record = trust::find_by_dir(dir)?;
    if let Some(rec) = &record {
        trust::check_pin(rec, &header, &keys)?;
    }
    f(&mut header)?;
    header.generation += 1;
    let path = header_path(dir);
    root.write_atomic(VOLUME_HEADER_NAME, &header.seal(&keys), 0o600)
        .map_err(io(&path))?;
    if let Some(rec) = record.as_mut() {
        trust::raise_generation(rec, header.generation)?;
    }
    Ok(header)
}

/// Wraps `volume_key` with the KEK at `uri` into a keyslot (checked by unwrapping once).
pub fn wrap_slot(uri: &str, volume_key: &SecretKey, id: u32, role: SlotRole) -> Result<Keyslot, VolumeError> {
    let timeout = unlock_timeout();
    let provider = open_provider(uri, timeout)?;
    let (p, vk) = (provider.clone(), volume_key.clone());
    let scheme = uri.split(':').next().unwrap_or("uri").to_string();
    let (wrapped, check) = call::with_deadline(&scheme, uri, timeout, None, move || {
        let wrapped = p.wrap(&vk)?;
        let check = p.unwrap(&wrapped.key.version, &wrapped.ciphertext)?;
        Ok((wrapped, check))
    })?;
    if !bool::from(check.secret.expose().ct_eq(volume_key.expose())) {
        return Err(ProviderError::new(
            kms::ErrorKind::UnwrapFailed,
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
