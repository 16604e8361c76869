//! The local key store: the embedded default key provider's storage.
//!
//! A directory (mode 0700) with one subdirectory per key (0700), holding `meta.json` (the
//! key's versions and their states and dates) and one PKCS#8 PEM per version (`v1.pem`,
//! 0600). Every write is atomic (temporary file, fsync, rename, fsync directory), and
//! mutations hold an exclusive `flock` on `STORE/.lock` so two `cmkfs key` commands cannot
//! interleave. Key material is never logged and is zeroized after use.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::crypto::rsa;
use crate::kms::trust;
use crate::util;

/// Environment variable that overrides the default store location.
pub const ENV_STORE: &str = crate::config::KEYSTORE;

/// One version of a key.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct VersionMeta {
    /// Version number, from 1.
    pub version: u32,
    /// RSA modulus size.
    pub bits: usize,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Disabled versions refuse to unwrap.
    pub enabled: bool,
    /// Not usable before this time (RFC 3339), if set.
    #[serde(default)]
    pub activation: Option<String>,
    /// Expiry time (RFC 3339), if set.
    #[serde(default)]
    pub expiry: Option<String>,
    /// SHA-256 of the public key, hex.
    pub fingerprint: String,
}

fn yes() -> bool {
    true
}

/// A soft deletion: the key refuses to unwrap, and can be recovered until `purge_after`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Deletion {
    /// When it was deleted (RFC 3339).
    pub at: String,
    /// When the retention period ends (RFC 3339).
    pub purge_after: String,
}

/// A key's metadata file.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct KeyMeta {
    /// Metadata schema version (1).
    pub schema: u32,
    /// Key name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Whole-key switch: a disabled key refuses every version.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Set while the key is soft-deleted.
    #[serde(default)]
    pub deleted: Option<Deletion>,
    /// While set, a deleted key cannot be purged before its retention period ends.
    #[serde(default = "yes")]
    pub purge_protection: bool,
    /// Versions, oldest first.
    pub versions: Vec<VersionMeta>,
}

impl KeyMeta {
    /// `enabled`, `disabled` or `deleted`.
    pub fn state(&self) -> &'static str {
        if self.deleted.is_some() {
            "deleted"
        } else if !self.enabled {
            "disabled"
        } else {
            "enabled"
        }
    }

    /// The newest enabled version.
    pub fn newest_enabled(&self) -> Option<&VersionMeta> {
        self.versions.iter().rev().find(|v| v.enabled)
    }
    /// A given version.
    pub fn version(&self, v: u32) -> Option<&VersionMeta> {
        self.versions.iter().find(|m| m.version == v)
    }
}

/// Key store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store directory does not exist.
    #[error("key store {0} does not exist (create a key with 'cmkfs key create --store {0} NAME')")]
    NoStore(PathBuf),
    /// No such key.
    #[error("key '{name}' not found in key store {store}")]
    NoKey {
        /// Key name.
        name: String,
        /// Store path.
        store: PathBuf,
    },
    /// No such version.
    #[error("key '{name}' has no version {version}")]
    NoVersion {
        /// Key name.
        name: String,
        /// Requested version.
        version: u32,
    },
    /// Name already taken.
    #[error("key '{0}' already exists")]
    Exists(String),
    /// Name not acceptable.
    #[error("invalid key name '{0}': use 1-64 characters from A-Z a-z 0-9 . _ -, not starting with '.'")]
    BadName(String),
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// Operation not allowed in the key's state.
    #[error("key '{name}': {reason}")]
    Refused {
        /// Key name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Damaged file.
    #[error("key store file {path} is damaged: {reason}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A store directory or file that someone other than root or this user could change.
    #[error("key store {0}; refusing to use it")]
    Untrusted(trust::Untrusted),
    /// I/O failure.
    #[error("key store {path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a store file atomically with mode exactly 0600.
fn write_private(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    util::atomic_write(path, data, 0o600).map_err(io_err(path))
}

/// Refuses a store directory or file owned by a user other than root and this process's
/// effective uid, or writable by group or others: such a user could substitute a key of
/// their own or re-enable a disabled one, and root would use it. Key files themselves are
/// checked when read ([`trust::read_secret_file`]).
fn check_trusted(path: &Path, what: &str) -> Result<(), StoreError> {
    let md = match fs::metadata(path) {
        Ok(md) => md,
        // Missing files are reported by the caller with their own error.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    trust::check_owner_and_mode(path, &md, what, crate::util::euid()).map_err(StoreError::Untrusted)
}

/// A local key store directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    root: PathBuf,
}

/// Checks a key name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl KeyStore {
    /// The default location: `$CMKFS_KEYSTORE`, else `/var/lib/cmkfs/keys` for root, else
    /// `$XDG_DATA_HOME/cmkfs/keys` (`~/.local/share/cmkfs/keys`).
    pub fn default_path() -> PathBuf {
        if let Some(p) = &crate::config::env().keystore {
            return p.clone();
        }
        if util::is_root() {
            return PathBuf::from("/var/lib/cmkfs/keys");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
            return PathBuf::from(x).join("cmkfs/keys");
        }
        util::home_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local/share/cmkfs/keys")
    }

    /// Opens a store at `root`. Relative paths are made absolute so that URIs stay valid.
    pub fn open(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        KeyStore { root }
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The KEK URI of a key (versionless: follows the newest enabled version).
    pub fn uri(&self, name: &str) -> String {
        format!("local:{}", self.root.join(name).display())
    }

    fn key_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn lock(&self) -> Result<fs::File, StoreError> {
        let p = self.root.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_err(&p))?;
        crate::sys::process::flock(&f).map_err(io_err(&p))?;
        Ok(f)
    }

    /// Creates a key with version 1.
    pub fn create(
        &self,
        name: &str,
        bits: usize,
        activation: Option<String>,
        expiry: Option<String>,
    ) -> Result<KeyMeta, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName(name.into()));
        }
        rsa::check_bits(bits).map_err(|e| StoreError::Invalid(e.to_string()))?;
        util::create_private_dir(&self.root, 0o700).map_err(io_err(&self.root))?;
        // A key made in a store another user controls would be refused at every use.
        check_trusted(&self.root, "directory")?;
        let _lock = self.lock()?;
        let dir = self.key_dir(name);
        if dir.exists() {
            return Err(StoreError::Exists(name.into()));
        }
        let key = rsa::generate(bits).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let fingerprint = rsa::fingerprint(&key.to_public_key());
        // Build in a temporary directory and rename it into place, so that a crash never
        // leaves a half-made key under its real name.
        let tmp = self.root.join(format!(".{name}.creating.{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        util::create_private_dir(&tmp, 0o700).map_err(io_err(&tmp))?;
        let pem_path = tmp.join("v1.pem");
        write_private(&pem_path, rsa::private_pem(&key).as_bytes())?;
        let now = util::now_rfc3339();
        let meta = KeyMeta {
            schema: 1,
            name: name.into(),
            created: now.clone(),
            enabled: true,
            deleted: None,
            purge_protection: true,
            versions: vec![VersionMeta {
                version: 1,
                bits,
                created: now,
                enabled: true,
                activation,
                expiry,
                fingerprint,
            }],
        };
        self.write_meta_in(&tmp, &meta)?;
        fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
        util::fsync_dir(&self.root).map_err(io_err(&self.root))?;
        Ok(meta)
    }

    fn write_meta_in(&self, dir: &Path, meta: &KeyMeta) -> Result<(), StoreError> {
        let p = dir.join("meta.json");
        let mut json = serde_json::to_vec_pretty(meta).expect("meta serialises");
        json.push(b'\n');
        write_private(&p, &json)
    }

    /// Reads a key's metadata.
    pub fn meta(&self, name: &str) -> Result<KeyMeta, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName(name.into()));
        }
        if !self.root.is_dir() {
            return Err(StoreError::NoStore(self.root.clone()));
        }
        let p = self.key_dir(name).join("meta.json");
        check_trusted(&self.root, "directory")?;
        check_trusted(&self.key_dir(name), "key directory")?;
        check_trusted(&p, "metadata file")?;
        let data = match fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoKey {
                    name: name.into(),
                    store: self.root.clone(),
                })
            }
            Err(e) => return Err(io_err(&p)(e)),
        };
        serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }

    /// All keys, by name.
    pub fn list(&self) -> Result<Vec<KeyMeta>, StoreError> {
        if !self.root.is_dir() {
            return Ok(vec![]);
        }
        let mut out = vec![];
        for e in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let e = e.map_err(io_err(&self.root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if valid_name(&name) && e.path().join("meta.json").is_file() {
                out.push(self.meta(&name)?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Applies `f` to a key's metadata under the store lock and writes it back atomically.
    fn update(
        &self,
        name: &str,
        f: impl FnOnce(&mut KeyMeta) -> Result<(), StoreError>,
    ) -> Result<KeyMeta, StoreError> {
        let _lock = self.lock()?;
        let mut meta = self.meta(name)?;
        f(&mut meta)?;
        self.write_meta_in(&self.key_dir(name), &meta)?;
        Ok(meta)
    }

    fn refuse(name: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Refused {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Adds a new version (the same size as the newest unless `bits` is given). Versionless
    /// URIs follow it from now on.
    pub fn rotate(
        &self,
        name: &str,
        bits: Option<usize>,
        activation: Option<String>,
        expiry: Option<String>,
    ) -> Result<KeyMeta, StoreError> {
        let meta = self.meta(name)?;
        if meta.deleted.is_some() {
            return Err(Self::refuse(name, "is deleted; recover it before rotating"));
        }
        let bits = bits.unwrap_or_else(|| meta.versions.last().map(|v| v.bits).unwrap_or(3072));
        rsa::check_bits(bits).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let key = rsa::generate(bits).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let fingerprint = rsa::fingerprint(&key.to_public_key());
        self.update(name, |m| {
            let version = m.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            let pem_path = self.key_dir(name).join(format!("v{version}.pem"));
            write_private(&pem_path, rsa::private_pem(&key).as_bytes())?;
            m.versions.push(VersionMeta {
                version,
                bits,
                created: util::now_rfc3339(),
                enabled: true,
                activation,
                expiry,
                fingerprint,
            });
            Ok(())
        })
    }

    /// Enables or disables a whole key (`version` None) or one version.
    pub fn set_enabled(&self, name: &str, version: Option<u32>, enabled: bool) -> Result<KeyMeta, StoreError> {
        self.update(name, |m| {
            match version {
                None => m.enabled = enabled,
                Some(v) => {
                    let vm = m
                        .versions
                        .iter_mut()
                        .find(|x| x.version == v)
                        .ok_or(StoreError::NoVersion {
                            name: name.into(),
                            version: v,
                        })?;
                    vm.enabled = enabled;
                }
            }
            Ok(())
        })
    }

    /// Sets or clears activation and expiry dates of a version.
    pub fn set_dates(
        &self,
        name: &str,
        version: u32,
        activation: Option<Option<String>>,
        expiry: Option<Option<String>>,
    ) -> Result<KeyMeta, StoreError> {
        self.update(name, |m| {
            let vm = m
                .versions
                .iter_mut()
                .find(|x| x.version == version)
                .ok_or(StoreError::NoVersion {
                    name: name.into(),
                    version,
                })?;
            if let Some(a) = activation {
                vm.activation = a;
            }
            if let Some(x) = expiry {
                vm.expiry = x;
            }
            Ok(())
        })
    }

    /// Soft-deletes a key: it refuses to unwrap until recovered; purgeable after `retention`.
    pub fn delete(&self, name: &str, retention: std::time::Duration) -> Result<KeyMeta, StoreError> {
        self.update(name, |m| {
            if m.deleted.is_some() {
                return Err(Self::refuse(name, "is already deleted"));
            }
            let now = std::time::SystemTime::now();
            m.deleted = Some(Deletion {
                at: humantime::format_rfc3339_seconds(now).to_string(),
                purge_after: humantime::format_rfc3339_seconds(now + retention).to_string(),
            });
            Ok(())
        })
    }

    /// Undoes a soft delete.
    pub fn recover(&self, name: &str) -> Result<KeyMeta, StoreError> {
        self.update(name, |m| {
            if m.deleted.take().is_none() {
                return Err(Self::refuse(name, "is not deleted"));
            }
            Ok(())
        })
    }

    /// Turns purge protection on or off (off lets a deleted key be purged at once).
    pub fn set_purge_protection(&self, name: &str, on: bool) -> Result<KeyMeta, StoreError> {
        self.update(name, |m| {
            if !on && m.deleted.is_some() {
                return Err(Self::refuse(
                    name,
                    "purge protection cannot be removed from a deleted key",
                ));
            }
            m.purge_protection = on;
            Ok(())
        })
    }

    /// Destroys a soft-deleted key for good. Refused while purge protection holds (the
    /// retention period has not ended).
    pub fn purge(&self, name: &str) -> Result<KeyMeta, StoreError> {
        let _lock = self.lock()?;
        let meta = self.meta(name)?;
        let Some(d) = &meta.deleted else {
            return Err(Self::refuse(
                name,
                "is not deleted; delete it first ('cmkfs key delete')",
            ));
        };
        if meta.purge_protection {
            let until = humantime::parse_rfc3339_weak(&d.purge_after).map_err(|e| StoreError::Corrupt {
                path: self.key_dir(name),
                reason: e.to_string(),
            })?;
            if std::time::SystemTime::now() < until {
                return Err(Self::refuse(
                    name,
                    format!("purge protection holds until {}", d.purge_after),
                ));
            }
        }
        let dir = self.key_dir(name);
        let tomb = self.root.join(format!(".{name}.purging.{}", std::process::id()));
        fs::rename(&dir, &tomb).map_err(io_err(&dir))?;
        util::fsync_dir(&self.root).map_err(io_err(&self.root))?;
        fs::remove_dir_all(&tomb).map_err(io_err(&tomb))?;
        Ok(meta)
    }

    /// Loads a version's private key.
    pub fn private_key(&self, name: &str, version: u32) -> Result<rsa::RsaPrivateKey, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName(name.into()));
        }
        let p = self.key_dir(name).join(format!("v{version}.pem"));
        check_trusted(&self.root, "directory")?;
        check_trusted(&self.key_dir(name), "key directory")?;
        let pem = match trust::read_secret_file(&p, "key file") {
            Ok(s) => s,
            Err(trust::ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NoVersion {
                    name: name.into(),
                    version,
                })
            }
            Err(trust::ReadError::Io(e)) => return Err(io_err(&p)(e)),
            Err(trust::ReadError::Untrusted(m)) => return Err(StoreError::Untrusted(m)),
        };
        rsa::parse_private_pem(&pem).map_err(|e| StoreError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_list_and_permissions() {
        let d = tempfile::tempdir().unwrap();
        let s = KeyStore::open(d.path().join("keys"));
        let m = s.create("db-kek", 2048, None, None).unwrap();
        assert_eq!(m.versions.len(), 1);
        assert!(matches!(
            s.create("db-kek", 2048, None, None),
            Err(StoreError::Exists(_))
        ));
        assert!(matches!(
            s.create("bad/name", 2048, None, None),
            Err(StoreError::BadName(_))
        ));
        assert!(matches!(
            s.create("small", 1024, None, None),
            Err(StoreError::Invalid(_))
        ));
        let l = s.list().unwrap();
        assert_eq!(l.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), vec!["db-kek"]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(s.root()), 0o700);
        assert_eq!(mode(&s.root().join("db-kek")), 0o700);
        assert_eq!(mode(&s.root().join("db-kek/v1.pem")), 0o600);
        assert_eq!(mode(&s.root().join("db-kek/meta.json")), 0o600);
        let k = s.private_key("db-kek", 1).unwrap();
        assert_eq!(rsa::fingerprint(&k.to_public_key()), m.versions[0].fingerprint);
        assert!(s.uri("db-kek").starts_with("local:/"));
        // Lifecycle.
        let m = s.rotate("db-kek", None, None, None).unwrap();
        assert_eq!(m.versions.len(), 2);
        assert_eq!(m.newest_enabled().unwrap().version, 2);
        assert_eq!(m.versions[1].bits, 2048);
        let m = s.set_enabled("db-kek", Some(2), false).unwrap();
        assert_eq!(m.newest_enabled().unwrap().version, 1);
        let m = s.set_enabled("db-kek", None, false).unwrap();
        assert_eq!(m.state(), "disabled");
        s.set_enabled("db-kek", None, true).unwrap();
        let m = s.delete("db-kek", std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(m.state(), "deleted");
        assert!(
            matches!(s.purge("db-kek"), Err(StoreError::Refused { .. })),
            "purge protection"
        );
        s.recover("db-kek").unwrap();
        assert!(
            matches!(s.purge("db-kek"), Err(StoreError::Refused { .. })),
            "purge needs delete first"
        );
        s.set_purge_protection("db-kek", false).unwrap();
        s.delete("db-kek", std::time::Duration::from_secs(3600)).unwrap();
        s.purge("db-kek").unwrap();
        assert!(matches!(s.meta("db-kek"), Err(StoreError::NoKey { .. })));
        // No temporary directory left behind.
        assert!(fs::read_dir(s.root()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("creating")));
    }
}
