//! Trust anchors: what this host's own configuration says about a volume.
//!
//! The volume header lives in the cipher directory, which is untrusted: whoever can write
//! there could name any program, PKCS#11 module or KMS endpoint in a keyslot, swap in a header
//! wrapping a volume key of their own choosing (anyone can wrap to a KEK's *public* key), or
//! restore an old header that still has a keyslot the customer removed. So the decisions that
//! matter come from local configuration, owned by root (or by the user who mounts):
//!
//! - **Which KEKs may unlock the volume** (`allowed_keks`): exact KEK URIs, with their provider
//!   settings (program, module, endpoint, token source) inside them. A keyslot whose URI is not
//!   listed is never opened: no program runs, no module loads, no connection is made, before or
//!   after the header is authenticated. `--kek URI` on the command line is trusted too.
//! - **What the host has seen** (`[pin]`): the volume id, a commitment to the volume key and
//!   the highest header generation. A header that unwraps to another volume key, names another
//!   volume id, or is older than the pinned generation is refused, with a message that says
//!   what changed and how to accept it deliberately (`cmkfs volume forget`, then `mount --kek`).
//!
//! One TOML file per volume, `volumes/NAME.toml` under the configuration directory
//! (`$CMKFS_CONFIG_DIR`, else `/etc/cmkfs` for root, `$XDG_CONFIG_HOME/cmkfs` or
//! `~/.config/cmkfs` for other users). `cmkfs init` and a first `cmkfs mount --kek` write it;
//! administrators may edit `allowed_keks`. The deployment settings (mountpoint, options) are
//! meant to join this same file.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto;
use crate::format::{VolumeHeader, VolumeKeys};
use crate::util;

/// Environment variable naming the configuration directory.
pub const ENV_CONFIG: &str = crate::config::CONFIG_DIR;

/// The configuration directory.
pub fn config_dir() -> PathBuf {
    if let Some(d) = &crate::config::env().config_dir {
        return d.clone();
    }
    if util::is_root() {
        return PathBuf::from("/etc/cmkfs");
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| util::home_dir().map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
        .join("cmkfs")
}

fn volumes_dir() -> PathBuf {
    config_dir().join("volumes")
}

/// What the host pinned about a volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The volume id (32 hex digits).
    pub volume_id: String,
    /// Commitment to the volume key, hex (see [`VolumeKeys::commitment`]).
    pub key_commitment: String,
    /// The highest header generation seen on this host.
    pub generation: u64,
}

/// One volume's local configuration.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct VolumeConfig {
    /// The cipher directory (absolute, canonical).
    pub cipher_dir: PathBuf,
    /// KEK URIs that may unlock the volume (exact strings).
    #[serde(default)]
    pub allowed_keks: Vec<String>,
    /// What the host pinned; absent until the first unlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
    /// How the volume is mounted by name (`cmkfs mount NAME`, the mount helper, fstab).
    #[serde(default, skip_serializing_if = "MountConfig::is_empty")]
    pub mount: MountConfig,
}

/// Mount settings of a configured volume; the command line overrides each.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// Where the plaintext view appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<PathBuf>,
    /// Let other users use the mount (their permissions still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_other: Option<bool>,
    /// Revalidation interval (e.g. "5s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<String>,
    /// How long an unreachable provider is tolerated (e.g. "10m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_grace: Option<String>,
    /// Longest a provider call may take during revalidation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_timeout: Option<String>,
    /// FUSE worker threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Daemon log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
}

impl MountConfig {
    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == MountConfig::default()
    }
}

/// A volume's configuration with its name and file.
#[derive(Clone, Debug)]
pub struct Record {
    /// The volume's name on this host (the file stem).
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its content.
    pub config: VolumeConfig,
}

/// Problems with the local configuration or with what a volume claims against it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A configuration file or directory that others could have written.
    #[error("{why}; cmkfs trusts only configuration owned by root or by you and writable by no one else")]
    Untrusted {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Unreadable or malformed configuration.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No configuration allows any KEK for this volume.
    #[error("no local configuration for the volume in {dir} (looked in {config}): cmkfs does not use KEK URIs from the cipher directory until this host allows them. Mount once with '--kek URI' (the URI is then recorded), or create the volume with 'cmkfs init'")]
    NotConfigured {
        /// Cipher directory.
        dir: PathBuf,
        /// Where records are looked for.
        config: PathBuf,
    },
    /// The header or key is not what this host pinned.
    #[error("{0}")]
    PinMismatch(String),
}

fn untrusted(path: &Path, why: impl Into<String>) -> TrustError {
    TrustError::Untrusted {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// A configuration file or directory must be owned by root or the effective user and not
/// writable by group or others: the same rule as for provider programs and key stores.
fn check_owner(path: &Path, md: &std::fs::Metadata) -> Result<(), TrustError> {
    crate::kms::trust::check_owner_and_mode(path, md, "configuration", util::euid())
        .map_err(|why| untrusted(path, why.to_string()))
}

fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// Every record in the configuration directory.
pub fn list() -> Result<Vec<Record>, TrustError> {
    let vdir = volumes_dir();
    let md = match std::fs::symlink_metadata(&vdir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(TrustError::Bad {
                path: vdir,
                why: e.to_string(),
            })
        }
    };
    check_owner(&vdir, &md)?;
    if let Ok(cmd) = std::fs::metadata(config_dir()) {
        check_owner(&config_dir(), &cmd)?;
    }
    let mut out = vec![];
    let rd = std::fs::read_dir(&vdir).map_err(|e| TrustError::Bad {
        path: vdir.clone(),
        why: e.to_string(),
    })?;
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        out.push(read(&path, name)?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read(path: &Path, name: String) -> Result<Record, TrustError> {
    let bad = |why: String| TrustError::Bad {
        path: path.to_path_buf(),
        why,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let md = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !md.is_file() || md.len() > 1 << 20 {
        return Err(bad("not a regular file of at most 1 MiB".into()));
    }
    check_owner(path, &md)?;
    let text = std::io::read_to_string(f).map_err(|e| bad(e.to_string()))?;
    let config: VolumeConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    Ok(Record {
        name,
        path: path.to_path_buf(),
        config,
    })
}

/// The record whose cipher directory is `dir` (compared canonically).
pub fn find_by_dir(dir: &Path) -> Result<Option<Record>, TrustError> {
    let want = canonical(dir);
    Ok(list()?.into_iter().find(|r| canonical(&r.config.cipher_dir) == want))
}

/// The record called `name`.
pub fn find_by_name(name: &str) -> Result<Option<Record>, TrustError> {
    Ok(list()?.into_iter().find(|r| r.name == name))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Holds the configuration directory's lock while records are changed, so that a daemon
/// raising a generation and a command allowing a KEK do not overwrite each other.
struct ConfigLock(#[allow(dead_code)] std::fs::File);

fn lock_config() -> Result<ConfigLock, TrustError> {
    let vdir = volumes_dir();
    create_private_dirs(&vdir)?;
    let path = vdir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| TrustError::Bad {
            path: path.clone(),
            why: e.to_string(),
        })?;
    match super::lock::flock_within(&f, Duration::from_secs(10)) {
        Ok(true) => Ok(ConfigLock(f)),
        Ok(false) => Err(TrustError::Bad {
            path,
            why: "held by another process for more than 10 s".into(),
        }),
        Err(e) => Err(TrustError::Bad {
            path,
            why: e.to_string(),
        }),
    }
}

fn create_private_dirs(vdir: &Path) -> Result<(), TrustError> {
    let cdir = config_dir();
    for d in [&cdir, &vdir.to_path_buf()] {
        match std::fs::symlink_metadata(d) {
            Ok(md) => check_owner(d, &md)?,
            Err(_) => {
                std::fs::create_dir_all(d).map_err(|e| TrustError::Bad {
                    path: d.clone(),
                    why: e.to_string(),
                })?;
                // The volumes directory names cipher directories and KEKs: private. The
                // configuration directory itself keeps the usual /etc mode.
                let mode = if d == vdir { 0o700 } else { 0o755 };
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).map_err(|e| TrustError::Bad {
                    path: d.clone(),
                    why: e.to_string(),
                })?;
            }
        }
    }
    Ok(())
}

const HEADER_COMMENT: &str = "\
# cmkfs volume configuration (this host's trust anchor for one volume).
# allowed_keks: the only KEK URIs that may unlock this volume on this host; a keyslot in the
#   volume header naming any other URI is never used. Edit to allow another KEK.
# [mount]: how 'cmkfs mount NAME', 'mount -t fuse.cmkfs' and fstab mount it (mountpoint,
#   allow_other, check_interval, unreachable_grace, provider_timeout, threads, log_file).
# [pin]: what this host has seen of the volume. A header with another volume id, a keyslot
#   that unwraps to another volume key, or an older generation is refused. To accept such a
#   change deliberately: 'cmkfs volume forget NAME', then 'cmkfs mount --kek URI ...'.
";

impl Record {
    fn save(&self) -> Result<(), TrustError> {
        let body = toml::to_string(&self.config).map_err(|e| TrustError::Bad {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let mut text = String::from(HEADER_COMMENT);
        text.push_str(&body);
        util::atomic_write(&self.path, text.as_bytes(), 0o600).map_err(|e| TrustError::Bad {
            path: self.path.clone(),
            why: e.to_string(),
        })
    }

    /// Re-reads the record, applies `f` and saves it, under the configuration lock.
    pub fn update(&mut self, f: impl FnOnce(&mut VolumeConfig)) -> Result<(), TrustError> {
        let _l = lock_config()?;
        let mut fresh = read(&self.path, self.name.clone())?;
        f(&mut fresh.config);
        fresh.save()?;
        *self = fresh;
        Ok(())
    }

    /// True when `uri` may unlock this volume.
    pub fn allows(&self, uri: &str) -> bool {
        self.config.allowed_keks.iter().any(|a| a == uri)
    }
}

/// Creates the record of a volume this host just created or unlocked with a trusted KEK.
/// `name` defaults to the cipher directory's name plus the start of the volume id.
pub fn create(
    name: Option<&str>,
    dir: &Path,
    allowed: Vec<String>,
    header: &VolumeHeader,
    keys: &VolumeKeys,
) -> Result<Record, TrustError> {
    let _l = lock_config()?;
    let dir = canonical(dir);
    let existing = list()?;
    if let Some(r) = existing.iter().find(|r| canonical(&r.config.cipher_dir) == dir) {
        return Err(TrustError::Bad {
            path: r.path.clone(),
            why: format!(
                "already configures {}; remove it with 'cmkfs volume forget {}' first",
                dir.display(),
                r.name
            ),
        });
    }
    let name = match name {
        Some(n) => {
            if !valid_name(n) {
                return Err(TrustError::Bad {
                    path: volumes_dir(),
                    why: format!("'{n}' is not a valid volume name (letters, digits, '.', '_', '-'; at most 64)"),
                });
            }
            if existing.iter().any(|r| r.name == n) {
                return Err(TrustError::Bad {
                    path: volumes_dir().join(format!("{n}.toml")),
                    why: format!("a volume named '{n}' is already configured"),
                });
            }
            n.to_string()
        }
        None => {
            let base: String = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .take(40)
                .collect();
            let base = base.trim_start_matches('.').to_string();
            let base = if base.is_empty() { "volume".to_string() } else { base };
            let mut n = format!("{base}-{}", &header.volume_id[..8]);
            let mut i = 2;
            while existing.iter().any(|r| r.name == n) {
                n = format!("{base}-{}-{i}", &header.volume_id[..8]);
                i += 1;
            }
            n
        }
    };
    let rec = Record {
        path: volumes_dir().join(format!("{name}.toml")),
        name,
        config: VolumeConfig {
            cipher_dir: dir,
            allowed_keks: allowed,
            pin: Some(pin_of(header, keys)),
            mount: MountConfig::default(),
        },
    };
    rec.save()?;
    Ok(rec)
}

fn pin_of(header: &VolumeHeader, keys: &VolumeKeys) -> Pin {
    Pin {
        volume_id: header.volume_id.clone(),
        key_commitment: crypto::hex(keys.commitment()),
        generation: header.generation,
    }
}

/// Removes a record (by name or cipher directory).
pub fn forget(which: &str) -> Result<Record, TrustError> {
    let _l = lock_config()?;
    let r = match find_by_name(which)? {
        Some(r) => r,
        None => find_by_dir(Path::new(which))?.ok_or_else(|| TrustError::Bad {
            path: volumes_dir(),
            why: format!("no configured volume is named or stored at '{which}' (see 'cmkfs volume list')"),
        })?,
    };
    std::fs::remove_file(&r.path).map_err(|e| TrustError::Bad {
        path: r.path.clone(),
        why: e.to_string(),
    })?;
    Ok(r)
}

/// Checks an authenticated header and its unlocked keys against the pin. The caller has
/// verified the header's MAC with `keys`.
pub fn check_pin(rec: &Record, header: &VolumeHeader, keys: &VolumeKeys) -> Result<(), TrustError> {
    let Some(pin) = &rec.config.pin else { return Ok(()) };
    let accept = format!(
        "If this change is deliberate, run 'cmkfs volume forget {}' and mount once with '--kek URI' to pin the volume as it is now.",
        rec.name
    );
    if pin.volume_id != header.volume_id {
        return Err(TrustError::PinMismatch(format!(
            "the volume in {} now has volume id {}, but this host pinned volume id {} for it ({}): the header was replaced with another volume's. {accept}",
            rec.config.cipher_dir.display(),
            header.volume_id,
            pin.volume_id,
            rec.path.display()
        )));
    }
    let want = crypto::unhex(&pin.key_commitment).unwrap_or_default();
    if want.len() != 32 || !bool::from(want.as_slice().ct_eq(keys.commitment())) {
        return Err(TrustError::PinMismatch(format!(
            "the keyslot unwrapped a volume key that is not the one this host pinned for volume {} ({}): the header was replaced with one wrapping a different volume key (key substitution: new files would be written under a key someone else chose). {accept}",
            header.volume_id,
            rec.path.display()
        )));
    }
    if header.generation < pin.generation {
        return Err(TrustError::PinMismatch(format!(
            "the header of volume {} has generation {}, older than generation {} this host has already seen ({}): an old header was restored (rollback, which can bring back removed keyslots). {accept}",
            header.volume_id,
            header.generation,
            pin.generation,
            rec.path.display()
        )));
    }
    Ok(())
}

/// Allows `uri` for the volume in `dir`, if the volume has a record. Called by the trusted
/// commands that put a KEK into a keyslot (rotate, keyslot add) *before* the header naming it
/// is written, so that a crash in between cannot leave a header this host refuses to use.
pub fn allow(dir: &Path, uri: &str) -> Result<(), TrustError> {
    if let Some(mut r) = find_by_dir(dir)? {
        if !r.allows(uri) {
            let u = uri.to_string();
            r.update(|c| {
                if !c.allowed_keks.contains(&u) {
                    c.allowed_keks.push(u)
                }
            })?;
        }
    }
    Ok(())
}

/// Raises the pinned generation to `generation` (never lowers it).
pub fn raise_generation(rec: &mut Record, generation: u64) -> Result<(), TrustError> {
    if rec.config.pin.as_ref().is_some_and(|p| p.generation >= generation) {
        return Ok(());
    }
    rec.update(|c| {
        if let Some(p) = c.pin.as_mut() {
            p.generation = p.generation.max(generation);
        }
    })
}

/// Pins an unpinned record to this header and key.
pub fn pin(rec: &mut Record, header: &VolumeHeader, keys: &VolumeKeys) -> Result<(), TrustError> {
    let p = pin_of(header, keys);
    rec.update(|c| {
        if c.pin.is_none() {
            c.pin = Some(p);
        }
    })
}
