//! Every command-line flag of `cmkfs`, in one place (clap derive). The doc comments are the
//! `--help` texts. Parsing helpers for flag values that clap does not check itself (times,
//! NAME@VERSION) are at the end.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use cmkfs::audit::ENV_AUDIT;
use cmkfs::kms::local::store::{KeyStore, ENV_STORE};

/// cmkfs: an encrypted filesystem whose keys you hold.
#[derive(Parser, Debug)]
#[command(name = "cmkfs", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Audit log (JSON Lines) [default: /var/log/cmkfs/audit.jsonl as root, ~/.local/state/cmkfs/audit.jsonl otherwise]
    #[arg(long, global = true, env = ENV_AUDIT)]
    pub(crate) audit_log: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Manage keys in the local key store (the embedded default key provider).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create an encrypted volume in a cipher directory, wrapped by a KEK.
    Init {
        /// KEK URI: local:/STORE/NAME (from 'cmkfs key create'), pkcs11:, tpm:, vault:, awskms:, exec: (see README), pem:/path/key.pem, or a PEM file path.
        #[arg(long)]
        kek: String,
        /// The volume's name in the local configuration [default: the directory's name and
        /// the start of the volume id].
        #[arg(long)]
        name: Option<String>,
        /// Cipher directory (created if missing; must be empty).
        dir: PathBuf,
    },
    /// Mount a volume; returns once the mount is live (use --foreground for systemd).
    Mount(MountArgs),
    /// Unmount a volume and wait for its daemon to exit.
    #[command(alias = "unmount")]
    Umount {
        /// Detach even if files are in use (finishes when they are closed).
        #[arg(long)]
        lazy: bool,
        /// Mountpoint.
        mountpoint: PathBuf,
    },
    /// Show the state of a mounted volume.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Mountpoint.
        mountpoint: PathBuf,
    },
    /// Print a mounted volume's state and counters as Prometheus text (state, state changes,
    /// key check latency, refused operations, EIO by cause, bytes, open files, memory).
    Metrics {
        /// Mountpoint.
        mountpoint: PathBuf,
    },
    /// Print a shell completion script (scripts/setup.sh installs bash's).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, cmkfs(1), in roff; with --dir, write it and one page per
    /// subcommand (cmkfs-mount(1), ...) there (scripts/setup.sh installs them).
    Man {
        /// Directory to write every page into.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Make a mounted volume Inaccessible now (the kill switch); root or the mounting user.
    Lock {
        /// Mountpoint.
        mountpoint: PathBuf,
    },
    /// Revalidate with the key provider and make the volume Available again.
    Unlock {
        /// Mountpoint.
        mountpoint: PathBuf,
    },
    /// Rewrap the volume key under a new KEK or key version (online or offline; O(1)).
    Rotate {
        /// The new KEK URI.
        #[arg(long)]
        kek: String,
        /// Keyslot to rewrap [default: the primary slot].
        #[arg(long)]
        slot: Option<u32>,
        /// Mountpoint of a mounted volume, or a cipher directory.
        target: PathBuf,
    },
    /// Replace the DEK of files (re-encrypting only them) on a mounted volume.
    Rekey {
        /// Files on a mounted cmkfs volume.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Manage keyslots (escrow and recovery KEKs beside the primary).
    #[command(subcommand)]
    Keyslot(KeyslotCommand),
    /// Audit log tools.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Verify a volume: header, every file header, every block tag, every encrypted xattr.
    ///
    /// Needs the key. Read-only (also against a mounted volume); exit codes as fsck(8):
    /// 0 clean, 1 damage quarantined, 4 damage found, 8 could not check.
    Fsck {
        /// Unlock with this KEK URI instead of the keyslots' own.
        #[arg(long)]
        kek: Option<String>,
        /// Machine-readable report.
        #[arg(long)]
        json: bool,
        /// Move damaged files (their ciphertext, nothing is lost) into this directory,
        /// keeping their paths. Offline only.
        #[arg(long, value_name = "DIR")]
        quarantine: Option<PathBuf>,
        /// Cipher directory, or the mountpoint of a mounted volume.
        target: PathBuf,
    },
    /// Map a plaintext path to its backing path in the cipher directory (or back).
    ///
    /// Format 3 encrypts names, so the backing file of `db/base/1/1259` is something like
    /// `CIPHER/nQ2x.../Zk7d...`; this names it, to restore one file from a backup of the
    /// cipher directory or to look at it with other tools. Needs the key (unlocks like fsck);
    /// read-only, also against a mounted volume. Formats 1 and 2 store names as they are.
    Path {
        /// Unlock with this KEK URI instead of the keyslots' own.
        #[arg(long)]
        kek: Option<String>,
        /// PATH is a backing path (absolute, or relative to the cipher directory): print the
        /// plaintext path, relative to the volume's root.
        #[arg(long)]
        decrypt: bool,
        /// Cipher directory, or the mountpoint of a mounted volume.
        target: PathBuf,
        /// A path inside the volume, relative to its root.
        path: PathBuf,
    },
    /// Work with a KEK through its provider (any scheme).
    #[command(subcommand)]
    Kek(KekCommand),
    /// This host's configuration of volumes: allowed KEKs and pins (see docs/SECURITY.md).
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum VolumeCommand {
    /// List configured volumes.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume's configuration (its pins too): the next mount needs --kek, and pins
    /// the volume as it is then. The deliberate way to accept a re-created or restored volume.
    Forget {
        /// Volume name or cipher directory.
        volume: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum KekCommand {
    /// Check that a KEK works end to end: wrap a random key with it, unwrap it N times
    /// through the provider, and report the unwrap latency (what a mount and every
    /// revalidation costs).
    Test {
        /// Unwraps to time.
        #[arg(long, short = 'n', default_value_t = 20)]
        iterations: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// KEK URI.
        uri: String,
    },
}

#[derive(Args, Debug)]
pub(crate) struct StoreArg {
    /// Key store directory [default: /var/lib/cmkfs/keys as root, ~/.local/share/cmkfs/keys otherwise]
    #[arg(long, env = ENV_STORE)]
    pub(crate) store: Option<PathBuf>,
}

impl StoreArg {
    /// The key store this flag (or its default) names.
    pub(crate) fn open(&self) -> KeyStore {
        KeyStore::open(self.store.clone().unwrap_or_else(KeyStore::default_path))
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
    /// Create an RSA key-encryption key; prints its URI on the last line.
    Create {
        #[command(flatten)]
        store: StoreArg,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        bits: usize,
        /// Not usable before this time (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        activation: Option<String>,
        /// Expiry time (RFC 3339). Expired keys still unwrap, with a warning.
        #[arg(long)]
        expiry: Option<String>,
        /// Allow purging right after deletion (default: purge protection on).
        #[arg(long)]
        no_purge_protection: bool,
        /// Key name (letters, digits, '.', '_', '-').
        name: String,
    },
    /// List the keys in the store.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's versions, states and dates.
    Show {
        #[command(flatten)]
        store: StoreArg,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Key name.
        name: String,
    },
    /// Create a new version; versionless URIs follow it (mounted volumes rewrap automatically).
    Rotate {
        #[command(flatten)]
        store: StoreArg,
        /// RSA size of the new version [default: as the newest version].
        #[arg(long)]
        bits: Option<usize>,
        /// Activation time of the new version (RFC 3339).
        #[arg(long)]
        activation: Option<String>,
        /// Expiry time of the new version (RFC 3339).
        #[arg(long)]
        expiry: Option<String>,
        /// Key name.
        name: String,
    },
    /// Disable a key (NAME) or one version (NAME@VERSION): unwraps are refused.
    Disable {
        #[command(flatten)]
        store: StoreArg,
        /// NAME or NAME@VERSION.
        key: String,
    },
    /// Enable a key or version again.
    Enable {
        #[command(flatten)]
        store: StoreArg,
        /// NAME or NAME@VERSION.
        key: String,
    },
    /// Set or clear a version's activation and expiry dates.
    SetDates {
        #[command(flatten)]
        store: StoreArg,
        /// Activation time (RFC 3339), or "none".
        #[arg(long)]
        activation: Option<String>,
        /// Expiry time (RFC 3339), or "none".
        #[arg(long)]
        expiry: Option<String>,
        /// NAME@VERSION.
        key: String,
    },
    /// Soft-delete a key: refused at once, recoverable during the retention period.
    Delete {
        #[command(flatten)]
        store: StoreArg,
        /// Retention period (e.g. 90d, 12h).
        #[arg(long, default_value = "90d")]
        retention: String,
        /// Key name.
        name: String,
    },
    /// Undo a soft delete.
    Recover {
        #[command(flatten)]
        store: StoreArg,
        /// Key name.
        name: String,
    },
    /// Destroy a deleted key for good (refused while purge protection holds).
    Purge {
        #[command(flatten)]
        store: StoreArg,
        /// Key name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyslotCommand {
    /// Add a keyslot wrapping the volume key under another KEK.
    Add {
        /// KEK URI of the new slot.
        #[arg(long)]
        kek: String,
        /// Role: recovery (escrow, used only with an explicit 'mount --kek') or primary.
        #[arg(long, default_value = "recovery")]
        role: String,
        /// Mountpoint or cipher directory.
        target: PathBuf,
    },
    /// List keyslots.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Mountpoint or cipher directory.
        target: PathBuf,
    },
    /// Remove a keyslot (the last one cannot be removed).
    Remove {
        /// Slot id.
        #[arg(long)]
        slot: u32,
        /// Mountpoint or cipher directory.
        target: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Check the hash chain of an audit log: detects edited, removed or reordered records.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Audit log [default: the configured audit log].
        log: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Default)]
pub(crate) struct MountArgs {
    /// Stay in the foreground (for systemd and debugging); logs go to stderr.
    #[arg(long, short = 'f')]
    pub(crate) foreground: bool,
    /// Unlock with this KEK URI instead of the URIs recorded in the keyslots.
    #[arg(long)]
    pub(crate) kek: Option<String>,
    /// Allow users other than the mounting user to access the mount.
    #[arg(long)]
    pub(crate) allow_other: bool,
    /// FUSE worker threads [default: 4].
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// How often the key is revalidated with its provider (e.g. 500ms, 1s, 10m) [default: 5s].
    #[arg(long)]
    pub(crate) check_interval: Option<String>,
    /// How long an unreachable key provider is tolerated before the volume becomes
    /// Inaccessible [default: 10m].
    #[arg(long)]
    pub(crate) unreachable_grace: Option<String>,
    /// Longest a key provider call may take during revalidation before it counts as
    /// unreachable [default: the check interval, at least 2s, at most 30s].
    #[arg(long)]
    pub(crate) provider_timeout: Option<String>,
    /// Log file of the background daemon [default: /var/log/cmkfs/mount-<id>.log as root].
    #[arg(long)]
    pub(crate) log_file: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub(crate) daemon_child: bool,
    /// Cipher directory holding the volume, or the name of a volume in the local
    /// configuration (then the mountpoint and options come from there).
    pub(crate) cipher_dir: PathBuf,
    /// Where the plaintext view appears [default: the configured volume's mountpoint].
    pub(crate) mountpoint: Option<PathBuf>,
}

/// Checks that `--WHAT` is an RFC 3339 time.
pub(crate) fn check_time(s: &Option<String>, what: &str) -> Result<()> {
    if let Some(t) = s {
        humantime::parse_rfc3339_weak(t)
            .with_context(|| format!("--{what} '{t}' is not an RFC 3339 time such as 2027-01-01T00:00:00Z"))?;
    }
    Ok(())
}

/// Splits NAME@VERSION.
pub(crate) fn name_version(s: &str) -> Result<(&str, Option<u32>)> {
    match s.split_once('@') {
        None => Ok((s, None)),
        Some((n, v)) => Ok((
            n,
            Some(v.parse().with_context(|| format!("'{v}' is not a version number"))?),
        )),
    }
}
