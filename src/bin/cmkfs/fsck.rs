//! `cmkfs fsck`: verify a volume (the checks are [`cmkfs::fsck`]); exit codes as fsck(8).
//! And `cmkfs path`, which unlocks the same way to map names.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use cmkfs::audit::{AuditLog, Event};
use cmkfs::daemon::control;
use cmkfs::volume;

/// Runs the check and exits with its code (8, "could not check", on any error).
pub(crate) fn run(
    target: &Path,
    kek: Option<&str>,
    json: bool,
    quarantine: Option<&Path>,
    audit: &AuditLog,
) -> Result<()> {
    crate::init_logging("warn");
    let code = match check(target, kek, json, quarantine, audit) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cmkfs fsck: {e:#}");
            cmkfs::fsck::EXIT_ERROR
        }
    };
    std::process::exit(code);
}

fn check(target: &Path, kek: Option<&str>, json: bool, quarantine: Option<&Path>, audit: &AuditLog) -> Result<i32> {
    use std::io::IsTerminal;
    let (dir, mp) = crate::target::resolve(target)?;
    let online = mp.is_some() || !control::mounts_of_source(&dir).is_empty();
    if let Some(q) = quarantine {
        cmkfs::fsck::check_quarantine(&dir, q, online)?;
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
    let report = cmkfs::fsck::check(
        &dir,
        vol.keys(),
        &vol.header().volume_id,
        cmkfs::fsck::Options {
            online,
            quarantine,
            progress: &mut progress,
        },
    );
    let secs = t0.elapsed().as_secs_f64();
    audit.record(
        Event::Fsck,
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

/// `cmkfs path`: prints the backing path of a plaintext path (or, with `decrypt`, the
/// plaintext path of a backing one).
pub(crate) fn path(target: &Path, rel: &Path, decrypt: bool, kek: Option<&str>) -> Result<()> {
    crate::init_logging("warn");
    let (dir, _) = crate::target::resolve(target)?;
    let vol = volume::open(&dir, kek).context("mapping names needs the key")?;
    let root = cmkfs::store::root::CipherRoot::open(&dir)?;
    let rel = if decrypt && rel.is_absolute() {
        rel.strip_prefix(&dir)
            .with_context(|| format!("{} is not inside {}", rel.display(), dir.display()))?
    } else {
        rel
    };
    let out = match vol.keys().names() {
        None => rel.to_path_buf(),
        Some(nk) if decrypt => cmkfs::store::names::decrypt_path(root.fd(), nk, rel)?,
        Some(nk) => cmkfs::store::names::encrypt_path(root.fd(), nk, rel)?,
    };
    if decrypt {
        println!("{}", out.display());
    } else {
        println!("{}", dir.join(out).display());
    }
    Ok(())
}
