//! The `cmkfs` binary: all logic lives in the library; see `cmkfs::cli`.

#![deny(clippy::undocumented_unsafe_blocks)]

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
        cmkfs::cli::run_mount_helper(args)
    } else {
        cmkfs::cli::run()
    };
    if let Err(e) = r {
        eprintln!("cmkfs: error: {e:#}");
        std::process::exit(1);
    }
}
