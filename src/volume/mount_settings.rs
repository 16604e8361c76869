//! How a volume is to be mounted: what the command line (or the mount helper's `-o`
//! options) asks for, merged with the volume's `[mount]` settings in the local configuration
//! ([`trust::MountConfig`]) and the defaults. The command line wins over the configuration,
//! which wins over the defaults, setting by setting.
//!
//! A volume is named either by its cipher directory (then a mountpoint must be given too, and
//! the configuration of that directory, if any, supplies the other settings) or by its name
//! in the local configuration (then everything, the mountpoint included, can come from there).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::trust::{self, MountConfig, TrustError};

/// Revalidation interval when neither the command line nor the configuration sets one.
pub const DEFAULT_CHECK_INTERVAL: &str = "5s";
/// Unreachable grace when neither the command line nor the configuration sets one.
pub const DEFAULT_UNREACHABLE_GRACE: &str = "10m";
/// FUSE worker threads when neither the command line nor the configuration sets them.
pub const DEFAULT_THREADS: usize = 4;

/// Why the mount settings could not be resolved. The texts name the command-line flag,
/// since that is where a user fixes them.
#[derive(Debug, thiserror::Error)]
pub enum MountSettingsError {
    /// The local configuration could not be read.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// No mountpoint was given and the name is not a configured volume.
    #[error("'{0}' is not a configured volume (see 'cmkfs volume list'); to mount a cipher directory, give a mountpoint too")]
    NotConfigured(String),
    /// Mounted by name, but the configuration has no mountpoint.
    #[error("volume '{name}' has no mountpoint: add 'mountpoint = \"/path\"' under [mount] in {}, or give one", .file.display())]
    NoMountpoint {
        /// The volume's name.
        name: String,
        /// Its configuration file.
        file: PathBuf,
    },
    /// A duration setting does not parse.
    #[error("--{what} '{value}' is not a duration such as 500ms, 1s or 10m")]
    BadDuration {
        /// The flag (check-interval, unreachable-grace, provider-timeout).
        what: &'static str,
        /// What was given.
        value: String,
        /// Why it does not parse.
        source: humantime::DurationError,
    },
    /// A zero check interval would spin.
    #[error("--check-interval must be more than zero")]
    ZeroInterval,
    /// The mount helper's `volume=NAME` names no configured volume.
    #[error("volume={0}: no such volume in the local configuration (see 'cmkfs volume list')")]
    NoSuchVolume(String),
    /// The mount helper's `volume=NAME` is configured for another cipher directory.
    #[error("volume={name} is configured for {}, not {}", .configured.display(), .given.display())]
    OtherDirectory {
        /// The volume's name.
        name: String,
        /// Its configured cipher directory.
        configured: PathBuf,
        /// The SOURCE the helper was given.
        given: PathBuf,
    },
}

/// The resolved settings of a mount (the daemon-only ones, such as foreground or the KEK
/// override, are the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSettings {
    /// The cipher directory.
    pub cipher_dir: PathBuf,
    /// Where the plaintext view appears.
    pub mountpoint: PathBuf,
    /// Let other users use the mount.
    pub allow_other: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Revalidation interval.
    pub check_interval: Duration,
    /// How long an unreachable provider is tolerated.
    pub unreachable_grace: Duration,
    /// Longest a provider call may take during revalidation [default: the daemon's].
    pub provider_timeout: Option<Duration>,
    /// Daemon log file [default: the daemon's].
    pub log_file: Option<PathBuf>,
}

/// Resolves a mount of `volume` (a cipher directory when `asked.mountpoint` is set, else a
/// configured volume's name): `asked` (the command line, as a [`MountConfig`]) wins over the
/// volume's `[mount]` configuration, which wins over the defaults.
pub fn resolve(volume: &Path, asked: MountConfig) -> Result<MountSettings, MountSettingsError> {
    let (cipher_dir, mountpoint, m) = match asked.mountpoint {
        Some(mp) => {
            let rec = trust::find_by_dir(volume)?;
            (
                volume.to_path_buf(),
                mp,
                rec.map(|r| r.config.mount).unwrap_or_default(),
            )
        }
        None => {
            let name = volume.to_string_lossy().into_owned();
            let rec = trust::find_by_name(&name)?.ok_or_else(|| MountSettingsError::NotConfigured(name.clone()))?;
            let mp = rec
                .config
                .mount
                .mountpoint
                .clone()
                .ok_or_else(|| MountSettingsError::NoMountpoint {
                    name,
                    file: rec.path.clone(),
                })?;
            (rec.config.cipher_dir.clone(), mp, rec.config.mount)
        }
    };
    let check_interval = asked
        .check_interval
        .or(m.check_interval)
        .unwrap_or_else(|| DEFAULT_CHECK_INTERVAL.into());
    let grace = asked
        .unreachable_grace
        .or(m.unreachable_grace)
        .unwrap_or_else(|| DEFAULT_UNREACHABLE_GRACE.into());
    Ok(MountSettings {
        check_interval: duration(&check_interval, "check-interval")?,
        unreachable_grace: duration(&grace, "unreachable-grace")?,
        provider_timeout: asked
            .provider_timeout
            .or(m.provider_timeout)
            .as_deref()
            .map(|t| duration(t, "provider-timeout"))
            .transpose()?,
        cipher_dir,
        mountpoint,
        allow_other: asked.allow_other.unwrap_or(false) || m.allow_other.unwrap_or(false),
        threads: asked.threads.or(m.threads).unwrap_or(DEFAULT_THREADS),
        log_file: asked.log_file.or(m.log_file),
    })
}

/// The mount helper's `volume=NAME`: checks that `source` is the cipher directory the local
/// configuration has for NAME (so an fstab line cannot mount one volume under another's
/// settings).
pub fn check_volume_source(name: &str, source: &Path) -> Result<(), MountSettingsError> {
    let rec = trust::find_by_name(name)?.ok_or_else(|| MountSettingsError::NoSuchVolume(name.to_string()))?;
    let want = std::fs::canonicalize(&rec.config.cipher_dir).unwrap_or(rec.config.cipher_dir.clone());
    let got = std::fs::canonicalize(source).unwrap_or(source.to_path_buf());
    if want != got {
        return Err(MountSettingsError::OtherDirectory {
            name: name.to_string(),
            configured: want,
            given: got,
        });
    }
    Ok(())
}

fn duration(s: &str, what: &'static str) -> Result<Duration, MountSettingsError> {
    let d = humantime::parse_duration(s).map_err(|source| MountSettingsError::BadDuration {
        what,
        value: s.to_string(),
        source,
    })?;
    if d.is_zero() && what == "check-interval" {
        return Err(MountSettingsError::ZeroInterval);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_name_their_flag() {
        assert_eq!(duration("500ms", "check-interval").unwrap(), Duration::from_millis(500));
        assert!(matches!(
            duration("0s", "check-interval"),
            Err(MountSettingsError::ZeroInterval)
        ));
        assert_eq!(duration("0s", "provider-timeout").unwrap(), Duration::ZERO);
        let e = duration("soon", "unreachable-grace").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--unreachable-grace 'soon' is not a duration such as 500ms"),
            "{e}"
        );
    }
}
