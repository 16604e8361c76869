//! `cmkfs mount`, `cmkfs umount`, and the mount helper `mount.fuse.cmkfs` (the same binary
//! under another name). Which directory, where and with what settings is resolved by
//! [`cmkfs::volume::mount_settings`]; mounting itself is [`cmkfs::daemon::mount`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::args::MountArgs;
use cmkfs::daemon::mount::{self, MountOptions};
use cmkfs::volume::mount_settings;
use cmkfs::volume::trust::MountConfig;

pub(crate) fn run(a: MountArgs, audit_path: &Path) -> Result<()> {
    crate::init_logging("info");
    mount::mount(mount_options(a, audit_path)?)
}

pub(crate) fn umount(mountpoint: &Path, lazy: bool) -> Result<()> {
    crate::init_logging("warn");
    mount::umount_and_wait(mountpoint, lazy, Duration::from_secs(30))
}

/// The mount request of the command line, resolved against the local configuration.
fn mount_options(a: MountArgs, audit_path: &Path) -> Result<MountOptions> {
    let asked = MountConfig {
        mountpoint: a.mountpoint,
        allow_other: a.allow_other.then_some(true),
        check_interval: a.check_interval,
        unreachable_grace: a.unreachable_grace,
        provider_timeout: a.provider_timeout,
        threads: a.threads,
        log_file: a.log_file,
    };
    let s = mount_settings::resolve(&a.cipher_dir, asked)?;
    Ok(MountOptions {
        cipher_dir: s.cipher_dir,
        mountpoint: s.mountpoint,
        kek: a.kek,
        foreground: a.foreground,
        allow_other: s.allow_other,
        threads: s.threads,
        log_file: s.log_file,
        daemon_child: a.daemon_child,
        check_interval: s.check_interval,
        unreachable_grace: s.unreachable_grace,
        audit_log: std::path::absolute(audit_path)?,
        provider_timeout: s.provider_timeout,
    })
}

/// The mount helper: `mount.fuse.cmkfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]`, as mount(8)
/// (and so `mount -a`, fstab and systemd's fstab generator) runs it for type `fuse.cmkfs`.
/// SOURCE is the cipher directory; `volume=NAME` checks it against the local configuration
/// and takes that volume's settings. Unknown options are refused, not ignored.
pub(crate) fn run_helper(args: Vec<std::ffi::OsString>) -> Result<()> {
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
        mount_settings::check_volume_source(name, &source)?;
    }
    if fake {
        return Ok(());
    }
    let audit_path = cmkfs::audit::default_path();
    crate::init_logging("info");
    mount::mount(mount_options(a, &audit_path)?)
}
