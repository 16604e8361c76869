//! A full backing filesystem (a small tmpfs): ENOSPC reaches the writer, data that was
//! already there stays intact and readable, the size of a file whose append failed does
//! not change, fsck finds nothing damaged, and writing works again once space is freed.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "cmkfs-test-tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs failed (the tests run as root)");
        Tmpfs(dir.into())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn enospc_never_damages_existing_data() {
    require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let backing = Tmpfs::new(&tmp.path().join("small"), "6m");
    // Declared after the tmpfs, so dropped (and unmounted) before it.
    let mut v = Vol::with_cipher_dir(&backing.0.join("cipher"));
    v.mount(&[]);
    let (cipher, mnt) = (v.cipher.clone(), v.mnt.clone());

    // Existing data: a 1 MiB file and a file whose last block is partial (5000 bytes).
    let big = pattern(1, 1 << 20);
    let tail = pattern(2, 5000);
    std::fs::write(mnt.join("big"), &big).unwrap();
    std::fs::write(mnt.join("tail"), &tail).unwrap();

    // Fill the filesystem through the mount.
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let chunk = pattern(3, 128 * 1024);
    let mut filled = 0u64;
    let err = loop {
        match filler.write_all(&chunk) {
            Ok(()) => filled += chunk.len() as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "the writer sees ENOSPC: {err}");
    drop(filler);

    // Appends that need new space fail with ENOSPC, and change nothing: the old partial last
    // block is still there, the size is unchanged, reads return the old data.
    let t = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mnt.join("tail"))
        .unwrap();
    for (off, len) in [(5000u64, 300_000usize), (1 << 20, 70_000), (8192, 200_000)] {
        let r = t.write_all_at(&pattern(4, len), off);
        if let Err(e) = r {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        }
    }
    drop(t);
    let after = std::fs::read(mnt.join("tail")).unwrap();
    assert!(after.len() >= tail.len());
    assert_eq!(&after[..5000], &tail[..], "existing bytes of the file are intact");
    assert_eq!(std::fs::read(mnt.join("big")).unwrap(), big, "other files are intact");
    let f = std::fs::read(mnt.join("filler")).unwrap();
    assert_eq!(f.len() as u64 % 4096, 0);
    assert!(f.len() as u64 >= filled);
    for (i, c) in f
        .chunks(chunk.len())
        .enumerate()
        .take((filled / chunk.len() as u64) as usize)
    {
        assert_eq!(c, &chunk[..], "acknowledged chunk {i} of the filler reads back");
    }

    // Offline verification: no torn or damaged block anywhere.
    v.umount();
    let out = v.run([OsStr::new("fsck"), OsStr::new("--json"), cipher.as_os_str()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "fsck after ENOSPC: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Space freed: writes work again.
    v.mount(&[]);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let more = pattern(5, 300_000);
    let t = std::fs::OpenOptions::new().write(true).open(mnt.join("tail")).unwrap();
    t.write_all_at(&more, 5000).unwrap();
    drop(t);
    let now = std::fs::read(mnt.join("tail")).unwrap();
    assert_eq!(&now[..5000], &tail[..]);
    assert_eq!(&now[5000..305_000], &more[..]);
}
