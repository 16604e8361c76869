//! `cmkfs status`, `cmkfs metrics`, `cmkfs lock`, `cmkfs unlock`: the state of a mounted
//! volume, through its control socket.

use std::path::Path;

use anyhow::{bail, Context, Result};

use cmkfs::daemon::control;

/// Why a mountpoint's daemon did not answer, in words that say what to do.
fn no_answer(mp: &Path, e: std::io::Error) -> anyhow::Error {
    if control::is_cmkfs_mount(mp) {
        anyhow::anyhow!(
            "{} is a cmkfs mount but its daemon does not answer ({e}); if it died, run 'cmkfs umount --lazy {}'",
            mp.display(),
            mp.display()
        )
    } else {
        anyhow::anyhow!("{} is not a mounted cmkfs volume", mp.display())
    }
}

pub(crate) fn metrics(mountpoint: &Path) -> Result<()> {
    crate::init_logging("warn");
    let mp = control::normalize_mountpoint(mountpoint);
    print!("{}", control::metrics(&mp).map_err(|e| no_answer(&mp, e))?);
    Ok(())
}

pub(crate) fn status(mountpoint: &Path, json: bool) -> Result<()> {
    crate::init_logging("warn");
    let mp = control::normalize_mountpoint(mountpoint);
    let st = control::status(&mp).map_err(|e| no_answer(&mp, e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print_status(&st);
    }
    Ok(())
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

pub(crate) fn lock_unlock(mountpoint: &Path, lock: bool) -> Result<()> {
    crate::init_logging("warn");
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
