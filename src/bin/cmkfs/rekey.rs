//! `cmkfs rekey`: new DEKs for files of a mounted volume (done by its daemon).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use cmkfs::daemon::control;

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

pub(crate) fn run(paths: &[PathBuf]) -> Result<()> {
    use std::io::IsTerminal;
    crate::init_logging("warn");
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
