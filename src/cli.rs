//! Command-line interface: every flag is defined here, and each subcommand is a short
//! function that calls into the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::keystore::{KeyStore, ENV_STORE};
use crate::mount::{self, MountOptions};
use crate::{control, volume};

/// cmkfs: an encrypted filesystem whose keys you hold.
#[derive(Parser, Debug)]
#[command(name = "cmkfs", version, about, long_about = None)]
pub struct Cli {
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
        /// KEK URI: local:/STORE/NAME (from 'cmkfs key create'), pem:/path/key.pem, or a PEM file path.
        #[arg(long)]
        kek: String,
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
}

#[derive(Args, Debug)]
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
    /// FUSE worker threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Log file of the background daemon [default: /var/log/cmkfs/mount-<id>.log as root].
    #[arg(long)]
    log_file: Option<PathBuf>,
    #[arg(long, hide = true)]
    daemon_child: bool,
    /// Cipher directory holding the volume.
    cipher_dir: PathBuf,
    /// Where the plaintext view appears.
    mountpoint: PathBuf,
}

fn check_time(s: &Option<String>, what: &str) -> Result<()> {
    if let Some(t) = s {
        humantime::parse_rfc3339_weak(t).with_context(|| {
            format!("--{what} '{t}' is not an RFC 3339 time such as 2027-01-01T00:00:00Z")
        })?;
    }
    Ok(())
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

/// Parses arguments and runs the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Key(KeyCommand::Create {
            store,
            bits,
            activation,
            expiry,
            name,
        }) => {
            init_logging("warn");
            check_time(&activation, "activation")?;
            check_time(&expiry, "expiry")?;
            let ks = store.open();
            let meta = ks.create(&name, bits, activation, expiry)?;
            let v = &meta.versions[0];
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
        Command::Key(KeyCommand::List { store, json }) => {
            init_logging("warn");
            let ks = store.open();
            let keys = ks.list()?;
            if json {
                let v: Vec<_> = keys.iter().map(|k| serde_json::json!({"name": k.name, "uri": ks.uri(&k.name), "created": k.created, "versions": k.versions})).collect();
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
                    let state = if k.newest_enabled().is_some() {
                        "enabled"
                    } else {
                        "disabled"
                    };
                    println!(
                        "{:<24} {:>4} {:>6} {:<9} {:<21} {}",
                        k.name,
                        v.version,
                        v.bits,
                        state,
                        k.created,
                        ks.uri(&k.name)
                    );
                }
            }
        }
        Command::Init { kek, dir } => {
            init_logging("warn");
            let h = volume::init(&dir, &kek)?;
            let s = &h.keyslots[0];
            println!("created volume {} in {}", h.volume_id, dir.display());
            println!(
                "keyslot 0: {} (key {} version {})",
                s.kek_uri, s.key_id, s.key_version
            );
        }
        Command::Mount(a) => {
            init_logging("info");
            mount::mount(MountOptions {
                cipher_dir: a.cipher_dir,
                mountpoint: a.mountpoint,
                kek: a.kek,
                foreground: a.foreground,
                allow_other: a.allow_other,
                threads: a.threads,
                log_file: a.log_file,
                daemon_child: a.daemon_child,
            })?;
        }
        Command::Umount { lazy, mountpoint } => {
            init_logging("warn");
            mount::umount_and_wait(&mountpoint, lazy, Duration::from_secs(30))?;
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
                println!("mountpoint:  {}", st.mountpoint);
                println!(
                    "state:       {}{}",
                    st.state,
                    st.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
                println!("volume id:   {}", st.volume_id);
                println!("cipher dir:  {}", st.cipher_dir);
                println!("format:      {}", st.format_version);
                println!("KEK URI:     {}", st.kek_uri);
                println!(
                    "key:         {} {} version {} (keyslot {})",
                    st.provider, st.key_id, st.key_version, st.keyslot
                );
                println!("mounted at:  {}", st.mounted_at);
                println!("daemon pid:  {}", st.pid);
                if let Some(l) = st.log_file {
                    println!("log file:    {l}");
                }
            }
        }
    }
    Ok(())
}
