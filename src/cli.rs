//! Command-line interface: every flag is defined here, and each subcommand is a short
//! function that calls into the library.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::audit::{self, AuditLog, ENV_AUDIT};
use crate::kms::local::store::{KeyStore, ENV_STORE};
use crate::mount::{self, MountOptions};
use crate::volume::{self, SlotRole};
use crate::{control, revalidation};

/// cmkfs: an encrypted filesystem whose keys you hold.
#[derive(Parser, Debug)]
#[command(name = "cmkfs", version, about, long_about = None)]
pub struct Cli {
    /// Audit log (JSON Lines) [default: /var/log/cmkfs/audit.jsonl as root, ~/.local/state/cmkfs/audit.jsonl otherwise]
    #[arg(long, global = true, env = ENV_AUDIT)]
    audit_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// Work with a KEK through its provider (any scheme).
    #[command(subcommand)]
    Kek(KekCommand),
    /// This host's configuration of volumes: allowed KEKs and pins (see docs/SECURITY.md).
    #[command(subcommand)]
    Volume(VolumeCommand),
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
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
enum KekCommand {
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
struct StoreArg {
    /// Key store directory [default: /var/lib/cmkfs/keys as root, ~/.local/share/cmkfs/keys otherwise]
    #[arg(long, env = ENV_STORE)]
    store: Option<PathBuf>,
}

impl StoreArg {
    fn open(&self) -> KeyStore {
        KeyStore::open(self.store.clone().unwrap_or_else(KeyStore::default_path))
    }
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
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
enum KeyslotCommand {
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
enum AuditCommand {
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
struct MountArgs {
    /// Stay in the foreground (for systemd and debugging); logs go to stderr.
    #[arg(long, short = 'f')]
    foreground: bool,
    /// Unlock with this KEK URI instead of the URIs recorded in the keyslots.
    #[arg(long)]
    kek: Option<String>,
    /// Allow users other than the mounting user to access the mount.
    #[arg(long)]
    allow_other: bool,
    /// FUSE worker threads [default: 4].
    #[arg(long)]
    threads: Option<usize>,
    /// How often the key is revalidated with its provider (e.g. 500ms, 1s, 10m) [default: 5s].
    #[arg(long)]
    check_interval: Option<String>,
    /// How long an unreachable key provider is tolerated before the volume becomes
    /// Inaccessible [default: 10m].
    #[arg(long)]
    unreachable_grace: Option<String>,
    /// Longest a key provider call may take during revalidation before it counts as
    /// unreachable [default: the check interval, at least 2s, at most 30s].
    #[arg(long)]
    provider_timeout: Option<String>,
    /// Log file of the background daemon [default: /var/log/cmkfs/mount-<id>.log as root].
    #[arg(long)]
    log_file: Option<PathBuf>,
    #[arg(long, hide = true)]
    daemon_child: bool,
    /// Cipher directory holding the volume, or the name of a volume in the local
    /// configuration (then the mountpoint and options come from there).
    cipher_dir: PathBuf,
    /// Where the plaintext view appears [default: the configured volume's mountpoint].
    mountpoint: Option<PathBuf>,
}

/// Resolves a mount request: by name or by cipher directory; the command line wins over the
/// volume's `[mount]` settings in the local configuration, which win over the defaults.
fn mount_options(a: MountArgs, audit_path: &Path) -> Result<MountOptions> {
    use volume::trust;
    let (cipher_dir, mountpoint, m) = match a.mountpoint {
        Some(mp) => {
            let rec = trust::find_by_dir(&a.cipher_dir)?;
            (a.cipher_dir, mp, rec.map(|r| r.config.mount).unwrap_or_default())
        }
        None => {
            let name = a.cipher_dir.to_string_lossy().into_owned();
            let rec = trust::find_by_name(&name)?.with_context(|| {
                format!(
                    "'{name}' is not a configured volume (see 'cmkfs volume list'); to mount a cipher directory, give a mountpoint too"
                )
            })?;
            let mp = rec.config.mount.mountpoint.clone().with_context(|| {
                format!(
                    "volume '{name}' has no mountpoint: add 'mountpoint = \"/path\"' under [mount] in {}, or give one",
                    rec.path.display()
                )
            })?;
            (rec.config.cipher_dir.clone(), mp, rec.config.mount)
        }
    };
    let check_interval = a.check_interval.or(m.check_interval).unwrap_or_else(|| "5s".into());
    let grace = a
        .unreachable_grace
        .or(m.unreachable_grace)
        .unwrap_or_else(|| "10m".into());
    Ok(MountOptions {
        check_interval: duration(&check_interval, "check-interval")?,
        unreachable_grace: duration(&grace, "unreachable-grace")?,
        provider_timeout: a
            .provider_timeout
            .or(m.provider_timeout)
            .as_deref()
            .map(|t| duration(t, "provider-timeout"))
            .transpose()?,
        audit_log: std::path::absolute(audit_path)?,
        cipher_dir,
        mountpoint,
        kek: a.kek,
        foreground: a.foreground,
        allow_other: a.allow_other || m.allow_other.unwrap_or(false),
        threads: a.threads.or(m.threads).unwrap_or(4),
        log_file: a.log_file.or(m.log_file),
        daemon_child: a.daemon_child,
    })
}

/// The mount helper: `mount.fuse.cmkfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]`, as mount(8)
/// (and so `mount -a`, fstab and systemd's fstab generator) runs it for type `fuse.cmkfs`.
/// SOURCE is the cipher directory; `volume=NAME` checks it against the local configuration
/// and takes that volume's settings. Unknown options are refused, not ignored.
pub fn run_mount_helper(args: Vec<std::ffi::OsString>) -> Result<()> {
    let mut positional = vec![];
    let mut opts: Vec<String> = vec![];
    let mut fake = false;
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        match s.as_str() {
            "-o" => opts.extend(
                it.next()
                    .context("-o needs a value")?
                    .to_string_lossy()
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(String::from),
            ),
            "-t" => {
                let t = it.next().context("-t needs a value")?;
                if t != "fuse.cmkfs" && t != "cmkfs" {
                    bail!(
                        "this is the mount helper of fuse.cmkfs, not of '{}'",
                        t.to_string_lossy()
                    );
                }
            }
            "-N" => bail!("mounting in another mount namespace (-N) is not supported"),
            "-f" => fake = true,
            "-s" | "-n" | "-v" => {}
            o if o.starts_with("-o") && o.len() > 2 => opts.extend(o[2..].split(',').map(String::from)),
            o if o.starts_with('-') => bail!("unknown mount helper flag '{o}'"),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [source, mountpoint] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| anyhow::anyhow!("usage: mount.fuse.cmkfs CIPHER_DIR MOUNTPOINT [-o OPTIONS]"))?;
    let mut a = MountArgs {
        cipher_dir: source.clone(),
        mountpoint: Some(mountpoint),
        ..Default::default()
    };
    let mut volume_name = None;
    for o in &opts {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (o.as_str(), None),
        };
        let need = |v: Option<String>| v.with_context(|| format!("mount option '{k}' needs a value ({k}=...)"));
        match k {
            "volume" => volume_name = Some(need(v)?),
            "kek" => a.kek = Some(need(v)?),
            "allow_other" => a.allow_other = true,
            "check_interval" => a.check_interval = Some(need(v)?),
            "unreachable_grace" => a.unreachable_grace = Some(need(v)?),
            "provider_timeout" => a.provider_timeout = Some(need(v)?),
            "threads" => a.threads = Some(need(v)?.parse().context("threads=N needs a number")?),
            "log_file" => a.log_file = Some(PathBuf::from(need(v)?)),
            // Generic options mount(8), fstab and systemd pass to every helper; cmkfs mounts are
            // always nosuid,nodev and read-write.
            "rw" | "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user" | "users" | "nouser" | "owner"
            | "group" | "nosuid" | "nodev" | "exec" | "noexec" | "atime" | "noatime" | "relatime" | "strictatime"
            | "nodiratime" | "diratime" | "async" | "silent" | "loud" => {}
            k if k.starts_with("x-") || k == "comment" => {}
            "ro" => bail!("read-only cmkfs mounts are not supported"),
            "suid" | "dev" => bail!("cmkfs mounts are always nosuid,nodev; remove '{k}'"),
            _ => bail!(
                "unknown mount option '{k}' (cmkfs knows volume=NAME, kek=URI, allow_other, check_interval=, unreachable_grace=, provider_timeout=, threads=, log_file=, and the generic rw, defaults, nofail, _netdev, noauto, x-*)"
            ),
        }
    }
    if let Some(name) = &volume_name {
        let rec = volume::trust::find_by_name(name)?.with_context(|| {
            format!("volume={name}: no such volume in the local configuration (see 'cmkfs volume list')")
        })?;
        let want = std::fs::canonicalize(&rec.config.cipher_dir).unwrap_or(rec.config.cipher_dir.clone());
        let got = std::fs::canonicalize(&source).unwrap_or(source.clone());
        if want != got {
            bail!(
                "volume={name} is configured for {}, not {}",
                want.display(),
                got.display()
            );
        }
    }
    if fake {
        return Ok(());
    }
    let audit_path = audit::default_path();
    init_logging("info");
    mount::mount(mount_options(a, &audit_path)?)
}

fn check_time(s: &Option<String>, what: &str) -> Result<()> {
    if let Some(t) = s {
        humantime::parse_rfc3339_weak(t)
            .with_context(|| format!("--{what} '{t}' is not an RFC 3339 time such as 2027-01-01T00:00:00Z"))?;
    }
    Ok(())
}

fn duration(s: &str, what: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s)
        .with_context(|| format!("--{what} '{s}' is not a duration such as 500ms, 1s or 10m"))?;
    if d.is_zero() && what == "check-interval" {
        bail!("--check-interval must be more than zero");
    }
    Ok(d)
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CMKFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// Splits NAME@VERSION.
fn name_version(s: &str) -> Result<(&str, Option<u32>)> {
    match s.split_once('@') {
        None => Ok((s, None)),
        Some((n, v)) => Ok((
            n,
            Some(v.parse().with_context(|| format!("'{v}' is not a version number"))?),
        )),
    }
}

/// A target that is either a mounted volume (its cipher directory, and the mountpoint to
/// notify) or a cipher directory.
fn resolve_target(target: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let mp = control::normalize_mountpoint(target);
    if control::is_cmkfs_mount(&mp) {
        let st = control::status(&mp)
            .with_context(|| format!("{} is mounted but its daemon does not answer", mp.display()))?;
        return Ok((PathBuf::from(st.cipher_dir), Some(mp)));
    }
    if volume::header_path(target).exists() {
        return Ok((std::path::absolute(target)?, None));
    }
    bail!(
        "{} is neither a mounted cmkfs volume nor a cipher directory",
        target.display()
    )
}

fn print_status(st: &control::Status) {
    println!("mountpoint:      {}", st.mountpoint);
    println!("state:           {} since {}", st.state, st.state_since);
    if let Some(r) = &st.reason {
        println!("reason:          {r}");
    }
    if st.state != "Available" || st.refused_ops > 0 {
        println!("refused ops:     {}", st.refused_ops);
    }
    if let Some(u) = st.locked_by_uid {
        println!("locked by uid:   {u}");
    }
    println!("KEK URI:         {}", st.kek_uri);
    println!(
        "key:             {} {} version {} (keyslot {}, header generation {})",
        st.provider, st.key_id, st.key_version, st.keyslot, st.header_generation
    );
    println!("last check ok:   {}", st.last_check_ok.as_deref().unwrap_or("never"));
    println!(
        "next check:      {} (every {})",
        st.next_check.as_deref().unwrap_or("-"),
        st.check_interval
    );
    if let Some(e) = &st.last_check_error {
        println!("last check err:  {e}");
    }
    if let Some(g) = st.grace_remaining_secs {
        println!("grace remaining: {g}s of {}", st.unreachable_grace);
    }
    println!("volume id:       {}", st.volume_id);
    println!("cipher dir:      {}", st.cipher_dir);
    println!("format:          {}", st.format_version);
    println!("mounted at:      {}", st.mounted_at);
    println!("daemon pid:      {}", st.pid);
    if let Some(l) = &st.log_file {
        println!("log file:        {l}");
    }
    println!("audit log:       {}", st.audit_log);
}

fn key_fields(store: &KeyStore, name: &str) -> serde_json::Value {
    json!({"store": store.root().display().to_string(), "key": name})
}

/// Parses arguments and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let audit_path = cli.audit_log.clone().unwrap_or_else(audit::default_path);
    let audit = AuditLog::new(&audit_path);
    match cli.command {
        Command::Key(k) => run_key(k, &audit),
        Command::Init { kek, name, dir } => {
            init_logging("warn");
            let r = volume::init(&dir, &kek, name.as_deref());
            match &r {
                Ok(volume::Created { header: h, .. }) => audit.record("init", json!({"cipher_dir": dir.display().to_string(), "volume_id": h.volume_id, "kek_uri": h.keyslots[0].kek_uri, "key_id": h.keyslots[0].key_id, "key_version": h.keyslots[0].key_version, "outcome": "ok"})),
                // A URI that failed may hold a pasted secret: only its scheme is recorded.
                Err(e) => audit.record("init", json!({"cipher_dir": dir.display().to_string(), "kek_scheme": kek.split(':').next().unwrap_or(""), "outcome": "failed", "error": e.to_string()})),
            }
            let c = r?;
            let (h, rec) = (&c.header, &c.record);
            if let Some(w) = &c.warning {
                eprintln!("cmkfs: warning: {w}");
            }
            let s = &h.keyslots[0];
            println!("created volume {} in {}", h.volume_id, dir.display());
            println!("keyslot 0: {} (key {} version {})", s.kek_uri, s.key_id, s.key_version);
            println!(
                "recorded as '{}' in {} (allowed KEKs, pinned volume key)",
                rec.name,
                rec.path.display()
            );
            Ok(())
        }
        Command::Mount(a) => {
            init_logging("info");
            mount::mount(mount_options(a, &audit_path)?)
        }
        Command::Umount { lazy, mountpoint } => {
            init_logging("warn");
            mount::umount_and_wait(&mountpoint, lazy, Duration::from_secs(30))
        }
        Command::Status { json, mountpoint } => {
            init_logging("warn");
            let mp = control::normalize_mountpoint(&mountpoint);
            let st = control::status(&mp).map_err(|e| {
                if control::is_cmkfs_mount(&mp) {
                    anyhow::anyhow!("{} is a cmkfs mount but its daemon does not answer ({e}); if it died, run 'cmkfs umount --lazy {}'", mp.display(), mp.display())
                } else {
                    anyhow::anyhow!("{} is not a mounted cmkfs volume", mp.display())
                }
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                print_status(&st);
            }
            Ok(())
        }
        Command::Lock { mountpoint } => lock_unlock(&mountpoint, true),
        Command::Unlock { mountpoint } => lock_unlock(&mountpoint, false),
        Command::Rotate { kek, slot, target } => {
            init_logging("warn");
            let (dir, mp) = resolve_target(&target)?;
            let vol = volume::open(&dir, None).context("rotation needs the current key to unwrap the volume key")?;
            let slot_id = slot.unwrap_or(vol.slot().id);
            let old = vol
                .header()
                .keyslots
                .iter()
                .find(|s| s.id == slot_id)
                .cloned()
                .with_context(|| format!("no keyslot {slot_id}"))?;
            let t0 = std::time::Instant::now();
            let r = revalidation::rewrap_slot(&dir, vol.volume_key(), slot_id, &kek);
            let mut rec = json!({"cipher_dir": dir.display().to_string(), "keyslot": slot_id, "old_kek_uri": old.kek_uri, "old_key_id": old.key_id, "old_version": old.key_version, "new_kek_uri": kek, "online": mp.is_some()});
            match &r {
                Ok((s, g)) => {
                    rec["outcome"] = "ok".into();
                    rec["new_key_id"] = s.key_id.clone().into();
                    rec["new_version"] = s.key_version.clone().into();
                    rec["generation"] = (*g).into();
                }
                Err(e) => {
                    rec["outcome"] = "failed".into();
                    rec["error"] = e.to_string().into();
                }
            }
            audit.record("rotate", rec);
            let (s, g) = r?;
            if let Some(mp) = &mp {
                let _ = control::command(mp, &control::Request::Reload);
            }
            println!(
                "keyslot {slot_id} rewrapped: {} {} version {} -> {} version {} (header generation {g}, {:.1} ms)",
                old.provider,
                old.key_id,
                old.key_version,
                s.key_id,
                s.key_version,
                t0.elapsed().as_secs_f64() * 1000.0
            );
            Ok(())
        }
        Command::Keyslot(k) => run_keyslot(k, &audit),
        Command::Rekey { paths } => rekey(&paths),
        Command::Kek(KekCommand::Test { iterations, json, uri }) => kek_test(&uri, iterations, json),
        Command::Volume(v) => run_volume(v, &audit),
        Command::Fsck {
            kek,
            json,
            quarantine,
            target,
        } => {
            init_logging("warn");
            let code = match fsck_cmd(&target, kek.as_deref(), json, quarantine.as_deref(), &audit) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("cmkfs fsck: {e:#}");
                    crate::fsck::EXIT_ERROR
                }
            };
            std::process::exit(code);
        }
        Command::Audit(AuditCommand::Verify { json, log }) => {
            let path = log.unwrap_or(audit_path);
            let v = audit::verify(&path).with_context(|| format!("cannot read {}", path.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for p in &v.problems {
                    println!("{}: {p}", path.display());
                }
                println!("{} records, head {}", v.records, v.head);
            }
            if !v.problems.is_empty() {
                bail!(
                    "audit log {} fails verification ({} problems)",
                    path.display(),
                    v.problems.len()
                );
            }
            println!("chain intact");
            Ok(())
        }
    }
}

/// The cmkfs mountpoint containing `path`, and the path relative to it.
fn mount_of(path: &Path) -> Result<(PathBuf, String)> {
    let abs = control::normalize_mountpoint(path);
    let mut cur = abs.as_path();
    loop {
        if control::is_cmkfs_mount(cur) {
            let rel = abs.strip_prefix(cur).unwrap().to_string_lossy().into_owned();
            if rel.is_empty() {
                bail!("{}: give files inside the mount, not the mountpoint", path.display());
            }
            return Ok((cur.to_path_buf(), rel));
        }
        cur = cur
            .parent()
            .with_context(|| format!("{} is not on a mounted cmkfs volume", path.display()))?;
    }
}

fn rekey(paths: &[PathBuf]) -> Result<()> {
    use std::io::IsTerminal;
    init_logging("warn");
    let tty = std::io::stderr().is_terminal();
    let (mut ok_n, mut bytes, mut failed) = (0usize, 0u64, vec![]);
    let t0 = std::time::Instant::now();
    for (i, p) in paths.iter().enumerate() {
        if tty {
            let width = 30;
            let done = i * width / paths.len();
            eprint!(
                "\r[{}{}] {}/{} {}\x1b[K",
                "#".repeat(done),
                " ".repeat(width - done),
                i + 1,
                paths.len(),
                p.display()
            );
        }
        let r = mount_of(p).and_then(|(mp, rel)| control::rekey(&mp, &rel)?.map_err(|e| anyhow::anyhow!(e)));
        match r {
            Ok(b) => {
                ok_n += 1;
                bytes += b;
            }
            Err(e) => failed.push(format!("{}: {e:#}", p.display())),
        }
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    for f in &failed {
        eprintln!("cmkfs: rekey failed: {f}");
    }
    println!(
        "rekeyed {ok_n} of {} files ({:.1} MiB) in {:.2}s",
        paths.len(),
        bytes as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("{} of {} files could not be rekeyed", failed.len(), paths.len());
    }
    Ok(())
}

fn lock_unlock(mountpoint: &Path, lock: bool) -> Result<()> {
    init_logging("warn");
    let mp = control::normalize_mountpoint(mountpoint);
    if !control::is_cmkfs_mount(&mp) {
        bail!("{} is not a mounted cmkfs volume", mp.display());
    }
    let req = if lock {
        control::Request::Lock
    } else {
        control::Request::Unlock
    };
    match control::command(&mp, &req).with_context(|| format!("cannot reach the daemon of {}", mp.display()))? {
        Ok(st) => {
            println!(
                "{}: {}{}",
                mp.display(),
                st.state,
                st.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            );
            Ok(())
        }
        Err((e, _)) => bail!("{}: {e}", mp.display()),
    }
}

fn run_key(k: KeyCommand, audit: &AuditLog) -> Result<()> {
    init_logging("warn");
    match k {
        KeyCommand::Create {
            store,
            bits,
            activation,
            expiry,
            no_purge_protection,
            name,
        } => {
            check_time(&activation, "activation")?;
            check_time(&expiry, "expiry")?;
            let ks = store.open();
            let mut meta = ks.create(&name, bits, activation, expiry)?;
            if no_purge_protection {
                meta = ks.set_purge_protection(&name, false)?;
            }
            let v = &meta.versions[0];
            let mut rec = key_fields(&ks, &name);
            rec["version"] = v.version.into();
            rec["bits"] = v.bits.into();
            rec["fingerprint"] = v.fingerprint.clone().into();
            audit.record("key_create", rec);
            println!(
                "created key '{}' version {} (RSA-{}) in {}",
                meta.name,
                v.version,
                v.bits,
                ks.root().display()
            );
            println!("fingerprint {}", v.fingerprint);
            println!("{}", ks.uri(&name));
        }
        KeyCommand::List { store, json } => {
            let ks = store.open();
            let keys = ks.list()?;
            if json {
                let v: Vec<_> = keys.iter().map(|k| json!({"name": k.name, "uri": ks.uri(&k.name), "state": k.state(), "created": k.created, "deleted": k.deleted, "versions": k.versions})).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if keys.is_empty() {
                println!("no keys in {}", ks.root().display());
            } else {
                println!(
                    "{:<24} {:>4} {:>6} {:<9} {:<21} URI",
                    "NAME", "VER", "BITS", "STATE", "CREATED"
                );
                for k in &keys {
                    let v = k.versions.last().unwrap();
                    println!(
                        "{:<24} {:>4} {:>6} {:<9} {:<21} {}",
                        k.name,
                        v.version,
                        v.bits,
                        k.state(),
                        k.created,
                        ks.uri(&k.name)
                    );
                }
            }
        }
        KeyCommand::Show { store, json, name } => {
            let ks = store.open();
            let m = ks.meta(&name)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"uri": ks.uri(&name), "state": m.state(), "meta": m}))?
                );
            } else {
                println!("key:              {}", m.name);
                println!("uri:              {}", ks.uri(&name));
                println!("state:            {}", m.state());
                println!("created:          {}", m.created);
                println!("purge protection: {}", if m.purge_protection { "on" } else { "off" });
                if let Some(d) = &m.deleted {
                    println!("deleted:          {} (recoverable until {})", d.at, d.purge_after);
                }
                println!(
                    "{:>4} {:>6} {:<9} {:<21} {:<21} {:<21} FINGERPRINT",
                    "VER", "BITS", "STATE", "CREATED", "ACTIVATION", "EXPIRY"
                );
                for v in &m.versions {
                    println!(
                        "{:>4} {:>6} {:<9} {:<21} {:<21} {:<21} {}",
                        v.version,
                        v.bits,
                        if v.enabled { "enabled" } else { "disabled" },
                        v.created,
                        v.activation.as_deref().unwrap_or("-"),
                        v.expiry.as_deref().unwrap_or("-"),
                        &v.fingerprint[..16]
                    );
                }
            }
        }
        KeyCommand::Rotate {
            store,
            bits,
            activation,
            expiry,
            name,
        } => {
            check_time(&activation, "activation")?;
            check_time(&expiry, "expiry")?;
            let ks = store.open();
            let m = ks.rotate(&name, bits, activation, expiry)?;
            let v = m.versions.last().unwrap();
            let mut rec = key_fields(&ks, &name);
            rec["new_version"] = v.version.into();
            rec["bits"] = v.bits.into();
            rec["fingerprint"] = v.fingerprint.clone().into();
            audit.record("key_rotate", rec);
            println!(
                "key '{}' now has version {} (RSA-{}); volumes using {} rewrap to it automatically",
                name,
                v.version,
                v.bits,
                ks.uri(&name)
            );
        }
        KeyCommand::Disable { store, key } => set_enabled(&store, &key, false, audit)?,
        KeyCommand::Enable { store, key } => set_enabled(&store, &key, true, audit)?,
        KeyCommand::SetDates {
            store,
            activation,
            expiry,
            key,
        } => {
            let (name, version) = name_version(&key)?;
            let version = version.context("set-dates needs NAME@VERSION")?;
            let opt = |s: Option<String>, what: &str| -> Result<Option<Option<String>>> {
                match s.as_deref() {
                    None => Ok(None),
                    Some("none") => Ok(Some(None)),
                    Some(t) => {
                        check_time(&Some(t.to_string()), what)?;
                        Ok(Some(Some(t.to_string())))
                    }
                }
            };
            let ks = store.open();
            ks.set_dates(
                name,
                version,
                opt(activation.clone(), "activation")?,
                opt(expiry.clone(), "expiry")?,
            )?;
            let mut rec = key_fields(&ks, name);
            rec["version"] = version.into();
            rec["activation"] = activation.into();
            rec["expiry"] = expiry.into();
            audit.record("key_set_dates", rec);
            println!("key '{name}' version {version}: dates updated");
        }
        KeyCommand::Delete { store, retention, name } => {
            let r = humantime::parse_duration(&retention)
                .with_context(|| format!("--retention '{retention}' is not a duration such as 90d"))?;
            let ks = store.open();
            let m = ks.delete(&name, r)?;
            let d = m.deleted.unwrap();
            let mut rec = key_fields(&ks, &name);
            rec["purge_after"] = d.purge_after.clone().into();
            audit.record("key_delete", rec);
            println!(
                "key '{name}' deleted: unwraps are refused now; 'cmkfs key recover {name}' restores it until {}",
                d.purge_after
            );
        }
        KeyCommand::Recover { store, name } => {
            let ks = store.open();
            ks.recover(&name)?;
            audit.record("key_recover", key_fields(&ks, &name));
            println!("key '{name}' recovered");
        }
        KeyCommand::Purge { store, name } => {
            let ks = store.open();
            ks.purge(&name)?;
            audit.record("key_purge", key_fields(&ks, &name));
            println!("key '{name}' purged; volumes wrapped only by it cannot be opened again");
        }
    }
    Ok(())
}

fn set_enabled(store: &StoreArg, key: &str, enabled: bool, audit: &AuditLog) -> Result<()> {
    let (name, version) = name_version(key)?;
    let ks = store.open();
    ks.set_enabled(name, version, enabled)?;
    let mut rec = key_fields(&ks, name);
    rec["version"] = version.into();
    audit.record(if enabled { "key_enable" } else { "key_disable" }, rec);
    let what = version
        .map(|v| format!("key '{name}' version {v}"))
        .unwrap_or(format!("key '{name}'"));
    println!(
        "{what} {}",
        if enabled {
            "enabled"
        } else {
            "disabled: unwraps are refused; mounted volumes using it become Inaccessible at their next check"
        }
    );
    Ok(())
}

fn run_keyslot(k: KeyslotCommand, audit: &AuditLog) -> Result<()> {
    init_logging("warn");
    match k {
        KeyslotCommand::List { json, target } => {
            let (dir, _) = resolve_target(&target)?;
            let parsed = volume::read_header(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&parsed.header.keyslots)?);
            } else {
                println!("(not yet authenticated: listing does not need the key)");
                println!("{:>4} {:<9} {:<8} {:<8} KEK URI", "SLOT", "ROLE", "PROVIDER", "VERSION");
                for s in &parsed.header.keyslots {
                    println!(
                        "{:>4} {:<9} {:<8} {:<8} {}",
                        s.id,
                        format!("{:?}", s.role).to_lowercase(),
                        s.provider,
                        s.key_version,
                        s.kek_uri
                    );
                }
            }
        }
        KeyslotCommand::Add { kek, role, target } => {
            let role = match role.as_str() {
                "recovery" => SlotRole::Recovery,
                "primary" => SlotRole::Primary,
                r => bail!("--role '{r}': use recovery or primary"),
            };
            let (dir, mp) = resolve_target(&target)?;
            let vol =
                volume::open(&dir, None).context("adding a keyslot needs the current key to unwrap the volume key")?;
            let mut added = None;
            let h = volume::update_header(&dir, vol.volume_key(), |h| {
                let id = h.keyslots.iter().map(|s| s.id).max().unwrap_or(0) + 1;
                let slot = volume::wrap_slot(&kek, vol.volume_key(), id, role)?;
                volume::trust::allow(&dir, &slot.kek_uri)?;
                h.keyslots.push(slot.clone());
                added = Some(slot);
                Ok(())
            })?;
            let s = added.unwrap();
            audit.record("keyslot_add", json!({"cipher_dir": dir.display().to_string(), "keyslot": s.id, "role": s.role, "kek_uri": s.kek_uri, "key_id": s.key_id, "key_version": s.key_version, "generation": h.generation}));
            if let Some(mp) = mp {
                let _ = control::command(&mp, &control::Request::Reload);
            }
            println!(
                "added keyslot {} ({:?}) for {} version {}",
                s.id, s.role, s.key_id, s.key_version
            );
        }
        KeyslotCommand::Remove { slot, target } => {
            let (dir, mp) = resolve_target(&target)?;
            let vol = volume::open(&dir, None).context("removing a keyslot needs the current key")?;
            let mut removed_uri = None;
            let h = volume::update_header(&dir, vol.volume_key(), |h| {
                let pos = h
                    .keyslots
                    .iter()
                    .position(|s| s.id == slot)
                    .ok_or_else(|| anyhow_to_volume(format!("no keyslot {slot}")))?;
                if h.keyslots.len() == 1 {
                    return Err(anyhow_to_volume(
                        "refusing to remove the last keyslot: the volume could never be opened again".into(),
                    ));
                }
                let removing = &h.keyslots[pos];
                if removing.role == SlotRole::Primary
                    && !h.keyslots.iter().any(|s| s.id != slot && s.role == SlotRole::Primary)
                {
                    return Err(anyhow_to_volume(
                        "refusing to remove the only primary keyslot: add another primary slot first".into(),
                    ));
                }
                removed_uri = Some(h.keyslots.remove(pos).kek_uri);
                Ok(())
            })?;
            // A removed keyslot's KEK is no longer allowed here (unless another slot uses it).
            if let (Some(uri), Some(mut r)) = (removed_uri, volume::trust::find_by_dir(&dir)?) {
                if !h.keyslots.iter().any(|s| s.kek_uri == uri) {
                    r.update(|c| c.allowed_keks.retain(|k| *k != uri))?;
                }
            }
            audit.record(
                "keyslot_remove",
                json!({"cipher_dir": dir.display().to_string(), "keyslot": slot, "generation": h.generation}),
            );
            if let Some(mp) = mp {
                let _ = control::command(&mp, &control::Request::Reload);
            }
            println!("removed keyslot {slot}");
        }
    }
    Ok(())
}

fn run_volume(v: VolumeCommand, audit: &AuditLog) -> Result<()> {
    use volume::trust;
    init_logging("warn");
    match v {
        VolumeCommand::List { json } => {
            let recs = trust::list()?;
            if json {
                let v: Vec<_> = recs
                    .iter()
                    .map(|r| json!({"name": r.name, "file": r.path.display().to_string(), "config": r.config}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if recs.is_empty() {
                println!(
                    "no volumes configured in {}",
                    trust::config_dir().join("volumes").display()
                );
            } else {
                for r in &recs {
                    println!("{}: {}", r.name, r.config.cipher_dir.display());
                    for k in &r.config.allowed_keks {
                        println!("  allowed KEK  {k}");
                    }
                    if let Some(p) = &r.config.pin {
                        println!("  pinned       volume {} generation {}", p.volume_id, p.generation);
                    }
                }
            }
        }
        VolumeCommand::Forget { volume } => {
            let r = trust::forget(&volume)?;
            audit.record(
                "volume_forget",
                json!({"name": r.name, "cipher_dir": r.config.cipher_dir.display().to_string(), "pin": r.config.pin}),
            );
            println!(
                "forgot volume '{}' ({}); mount it with --kek URI to pin it again",
                r.name,
                r.config.cipher_dir.display()
            );
        }
    }
    Ok(())
}

fn anyhow_to_volume(msg: String) -> volume::VolumeError {
    volume::VolumeError::Header {
        path: PathBuf::from(crate::format::VOLUME_HEADER_NAME),
        source: crate::format::volume::VolumeHeaderError::BadField(msg),
    }
}

fn kek_test(uri: &str, iterations: usize, json: bool) -> Result<()> {
    use crate::crypto::SecretKey;
    let t_open = std::time::Instant::now();
    let p = crate::kms::open(uri)?;
    let info = p.current()?;
    let open_ms = t_open.elapsed().as_secs_f64() * 1000.0;
    let secret = SecretKey::random();
    let t_wrap = std::time::Instant::now();
    let wrapped = p.wrap(&secret)?;
    let wrap_ms = t_wrap.elapsed().as_secs_f64() * 1000.0;
    let mut ms = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let t = std::time::Instant::now();
        let u = p.unwrap(&wrapped.key.version, &wrapped.ciphertext)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if !u.secret.ct_eq(&secret) {
            bail!("{uri}: the provider unwrapped to a different key: the provider is broken");
        }
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let median = ms[ms.len() / 2];
    if json {
        println!(
            "{}",
            json!({"uri": p.uri(), "provider": info.provider, "key_id": info.key_id, "version": wrapped.key.version,
                   "bits": info.bits, "fingerprint": info.fingerprint, "open_ms": open_ms, "wrap_ms": wrap_ms,
                   "unwrap_ms_median": median, "unwrap_ms_min": ms[0], "unwrap_ms_max": ms[ms.len() - 1],
                   "iterations": ms.len()})
        );
    } else {
        println!(
            "KEK {} ({} key {} version {}, {}) works",
            p.uri(),
            info.provider,
            info.key_id,
            wrapped.key.version,
            info.bits_text()
        );
        println!("fingerprint  {}", info.fingerprint_text());
        println!("open+lookup  {open_ms:.2} ms, wrap {wrap_ms:.2} ms");
        println!(
            "unwrap       median {median:.2} ms, min {:.2} ms, max {:.2} ms over {}",
            ms[0],
            ms[ms.len() - 1],
            ms.len()
        );
    }
    Ok(())
}

fn fsck_cmd(target: &Path, kek: Option<&str>, json: bool, quarantine: Option<&Path>, audit: &AuditLog) -> Result<i32> {
    use std::io::IsTerminal;
    let (dir, mp) = resolve_target(target)?;
    let online = mp.is_some() || !control::mounts_of_source(&dir).is_empty();
    if let Some(q) = quarantine {
        if online {
            bail!(
                "--quarantine moves files and runs offline only: unmount {} first",
                dir.display()
            );
        }
        let q = std::path::absolute(q)?;
        if q.starts_with(dir.canonicalize()?) || q.starts_with(&dir) {
            bail!(
                "the quarantine directory must be outside the cipher directory {}",
                dir.display()
            );
        }
    }
    let vol = volume::open(&dir, kek).context("fsck needs the key to verify the volume")?;
    let interactive = !json && std::io::stderr().is_terminal();
    let mut last = std::time::Instant::now();
    let mut progress = |done: u64, total: u64| {
        if interactive && (done == total || last.elapsed() > Duration::from_millis(100)) {
            last = std::time::Instant::now();
            eprint!("\rchecking: {done}/{total} files");
            if done == total {
                eprintln!();
            }
        }
    };
    let t0 = std::time::Instant::now();
    let report = crate::fsck::check(
        &dir,
        vol.keys(),
        &vol.header().volume_id,
        crate::fsck::Options {
            online,
            quarantine,
            progress: &mut progress,
        },
    );
    let secs = t0.elapsed().as_secs_f64();
    audit.record(
        "fsck",
        json!({"cipher_dir": dir.display().to_string(), "volume_id": report.volume_id, "key_id": vol.key().key_id,
               "key_version": vol.key().version, "online": online, "files": report.files, "blocks": report.blocks,
               "damaged_files": report.damaged.len(), "quarantined": quarantine.is_some(), "exit_code": report.exit_code()}),
    );
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["exit_code"] = report.exit_code().into();
        v["seconds"] = secs.into();
        println!("{v}");
    } else {
        println!(
            "volume {} ({}): {} files, {} directories, {} data blocks and {} holes, {} xattrs checked; {:.1} MiB read in {secs:.1}s",
            report.volume_id,
            if online { "mounted: checked read-only" } else { "offline" },
            report.files,
            report.directories,
            report.blocks,
            report.holes,
            report.xattrs,
            report.bytes as f64 / (1 << 20) as f64,
        );
        if report.interrupted_writes > 0 {
            println!(
                "{} blocks had an interrupted last write (a crash); they read as their previous content, which is intact",
                report.interrupted_writes
            );
        }
        for d in &report.damaged {
            let q = d
                .quarantined_to
                .as_deref()
                .map(|t| format!(" -> moved to {t}"))
                .unwrap_or_default();
            println!("DAMAGED {} [{:?}]: {}{q}", d.path, d.kind, d.detail);
        }
        for u in &report.unreadable {
            println!("UNREADABLE {u}");
        }
        if report.damaged.is_empty() && report.unreadable.is_empty() {
            println!("clean: every header, block and xattr authenticates");
        }
    }
    Ok(report.exit_code())
}
