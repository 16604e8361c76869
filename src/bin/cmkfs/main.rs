//! The `cmkfs` binary: parses the command line ([`args`]), calls the library and prints.
//! Each subcommand is one small module here; what a command *does* (keyslot rules, mount
//! settings, the data path) lives in the `cmkfs` library, so it is tested without a process.

#![deny(clippy::undocumented_unsafe_blocks)]

mod args;
mod audit;
mod fsck;
mod init;
mod kek;
mod key;
mod keyslot;
mod mount;
mod rekey;
mod rotate;
mod state;
mod target;
mod volume;

use anyhow::{Context, Result};
use clap::Parser;

use args::{AuditCommand, Cli, Command, KekCommand};
use cmkfs::audit::AuditLog;

fn main() {
    // Installed as /sbin/mount.fuse.cmkfs (or mount.cmkfs), cmkfs is the mount helper that
    // mount(8), `mount -a` and systemd's fstab generator run for type fuse.cmkfs.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r = if name == "mount.fuse.cmkfs" || name == "mount.cmkfs" {
        mount::run_helper(args)
    } else {
        run()
    };
    if let Err(e) = r {
        eprintln!("cmkfs: error: {e:#}");
        std::process::exit(1);
    }
}

/// Writes generated text to stdout; a closed pipe (`| head`) is an error, not a panic.
fn print_all(text: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut so = std::io::stdout().lock();
    so.write_all(text)
        .and_then(|()| so.flush())
        .context("cannot write to stdout")
}

/// Parses arguments and runs the command.
fn run() -> Result<()> {
    let cli = Cli::parse();
    let audit_path = cli.audit_log.clone().unwrap_or_else(cmkfs::audit::default_path);
    let audit = AuditLog::new(&audit_path);
    match cli.command {
        Command::Key(k) => key::run(k, &audit),
        Command::Init { kek, name, dir } => init::run(&kek, name.as_deref(), &dir, &audit),
        Command::Mount(a) => mount::run(a, &audit_path),
        Command::Umount { lazy, mountpoint } => mount::umount(&mountpoint, lazy),
        Command::Status { json, mountpoint } => state::status(&mountpoint, json),
        Command::Metrics { mountpoint } => state::metrics(&mountpoint),
        // Both come from the clap definitions, so they cannot disagree with --help.
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = vec![];
            clap_complete::generate(shell, &mut Cli::command(), "cmkfs", &mut out);
            print_all(&out)
        }
        Command::Man { dir: Some(dir) } => {
            use clap::CommandFactory;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("cannot write man pages into {}", dir.display()))
        }
        Command::Man { dir: None } => {
            use clap::CommandFactory;
            let mut out = vec![];
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            print_all(&out)
        }
        Command::Lock { mountpoint } => state::lock_unlock(&mountpoint, true),
        Command::Unlock { mountpoint } => state::lock_unlock(&mountpoint, false),
        Command::Rotate { kek, slot, target } => rotate::run(&kek, slot, &target, &audit),
        Command::Keyslot(k) => keyslot::run(k, &audit),
        Command::Rekey { paths } => rekey::run(&paths),
        Command::Kek(KekCommand::Test { iterations, json, uri }) => kek::test(&uri, iterations, json),
        Command::Volume(v) => volume::run(v, &audit),
        Command::Fsck {
            kek,
            json,
            quarantine,
            target,
        } => fsck::run(&target, kek.as_deref(), json, quarantine.as_deref(), &audit),
        Command::Path {
            kek,
            decrypt,
            target,
            path,
        } => fsck::path(&target, &path, decrypt, kek.as_deref()),
        Command::Audit(AuditCommand::Verify { json, log }) => audit::verify(&log.unwrap_or(audit_path), json),
    }
}

/// Logs to stderr at `default` level unless CMKFS_LOG says otherwise.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(cmkfs::config::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
