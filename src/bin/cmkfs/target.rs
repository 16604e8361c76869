//! The TARGET argument of `rotate`, `keyslot` and `fsck`: a mountpoint or a cipher directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use cmkfs::daemon::control;

/// A target that is either a mounted volume (its cipher directory, and the mountpoint to
/// notify) or a cipher directory.
pub(crate) fn resolve(target: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let mp = control::normalize_mountpoint(target);
    if control::is_cmkfs_mount(&mp) {
        let st = control::status(&mp)
            .with_context(|| format!("{} is mounted but its daemon does not answer", mp.display()))?;
        return Ok((PathBuf::from(st.cipher_dir), Some(mp)));
    }
    if cmkfs::volume::header_path(target).exists() {
        return Ok((std::path::absolute(target)?, None));
    }
    bail!(
        "{} is neither a mounted cmkfs volume nor a cipher directory",
        target.display()
    )
}

/// Tells the daemon of a mounted volume to re-read the header after a keyslot change (it
/// would pick it up at its next check anyway; this makes it immediate).
pub(crate) fn reload(mountpoint: Option<&Path>) {
    if let Some(mp) = mountpoint {
        let _ = control::command(mp, &control::Request::Reload);
    }
}
