//! Filesystem semantics through a real cmkfs mount.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

use crate::common::*;
use rustix::fs::{FallocateFlags, Mode, OFlags, RenameFlags, XattrFlags, CWD};
use rustix::io::Errno;

/// Backing length of a format-3 file (docs/FORMAT.md): a header/entry page, then each
/// block's ciphertext in its own page, one more entry page every GROUP blocks.
fn cipher_len(plain: u64) -> u64 {
    if plain == 0 {
        return 0;
    }
    let last = (plain - 1) / 4096;
    data_off(last) + (plain - last * 4096)
}

#[test]
fn contents_sizes_and_ciphertext() {
    let v = Vol::new();
    for (i, size) in [0usize, 1, 100, 4095, 4096, 4097, 8192, 10_000, 1 << 20, (1 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}");
        let data = pattern(i as u64, size);
        fs::write(v.p(&name), &data).unwrap();
        assert_eq!(
            fs::metadata(v.p(&name)).unwrap().len(),
            size as u64,
            "plaintext size of {size}"
        );
        assert_eq!(fs::read(v.p(&name)).unwrap(), data, "content of {size}");
        let raw = fs::read(v.c(&name)).unwrap();
        assert_eq!(raw.len() as u64, cipher_len(size as u64), "backing size of {size}");
        if size >= 64 {
            assert!(
                !raw.windows(32).any(|w| w == &data[..32]),
                "plaintext visible in ciphertext"
            );
        }
    }
    // Same plaintext twice gives different ciphertext (random DEK and nonces).
    fs::write(v.p("same1"), b"identical").unwrap();
    fs::write(v.p("same2"), b"identical").unwrap();
    assert_ne!(fs::read(v.c("same1")).unwrap(), fs::read(v.c("same2")).unwrap());
    // Empty files stay empty on disk too.
    File::create(v.p("empty")).unwrap();
    assert_eq!(fs::metadata(v.c("empty")).unwrap().len(), 0);
    // The volume header is not visible through the mount. In format 3 every plaintext name,
    // "cmkfs.volume" too, is encrypted: it is an ordinary file that cannot touch the header.
    assert!(!fs::read_dir(&v.mnt)
        .unwrap()
        .any(|e| e.unwrap().file_name() == "cmkfs.volume"));
    let header = fs::read(v.c("cmkfs.volume")).unwrap();
    fs::write(v.p("cmkfs.volume"), b"not the header").unwrap();
    assert_eq!(fs::read(v.p("cmkfs.volume")).unwrap(), b"not the header");
    assert_eq!(
        fs::read(v.c_raw("cmkfs.volume")).unwrap(),
        header,
        "the real header is untouched"
    );
    fs::remove_file(v.p("cmkfs.volume")).unwrap();
    let mut v = v;
    v.remount();
    assert_eq!(
        fs::read(v.p("f9")).unwrap(),
        pattern(9, (1 << 20) + 7),
        "content survives remount"
    );
}

/// Random writes, truncates and reads compared byte for byte with an in-memory model.
#[test]
fn random_operations_match_model() {
    let v = Vol::new();
    let mut model: Vec<u8> = vec![];
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(v.p("model"))
        .unwrap();
    let rnd = pattern(99, 40_000);
    let mut r = rnd.chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()));
    for step in 0..1500 {
        let op = r.next().unwrap() % 10;
        let off = r.next().unwrap() % 300_000;
        let len = (r.next().unwrap() % 20_000) as usize;
        match op {
            0..=5 => {
                let data = pattern(step, len);
                f.write_all_at(&data, off).unwrap();
                let end = off as usize + len;
                if model.len() < end && len > 0 {
                    model.resize(end, 0);
                }
                model[off as usize..off as usize + len].copy_from_slice(&data);
            }
            6 => {
                f.set_len(off).unwrap();
                model.resize(off as usize, 0);
            }
            _ => {
                let mut buf = vec![0u8; len];
                let n = f.read_at(&mut buf, off).unwrap();
                let exp = model
                    .get(off as usize..(off as usize + len).min(model.len()))
                    .unwrap_or(&[]);
                assert_eq!(&buf[..n], exp, "step {step}: read {len}@{off}");
            }
        }
        assert_eq!(f.metadata().unwrap().len(), model.len() as u64, "step {step}: size");
    }
    drop(f);
    let mut v = v;
    v.remount();
    assert_eq!(fs::read(v.p("model")).unwrap(), model, "after remount");
}

#[test]
fn sparse_files_stay_sparse_and_seek_data_hole() {
    let v = Vol::new();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(v.p("sparse"))
        .unwrap();
    f.set_len(1 << 30).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 30);
    let data = pattern(5, 8192);
    f.write_all_at(&data, 512 << 20).unwrap();
    let raw = fs::metadata(v.c("sparse")).unwrap();
    assert!(
        raw.blocks() * 512 < 1 << 20,
        "backing file allocated {} bytes for a 1 GiB sparse file",
        raw.blocks() * 512
    );
    let mut buf = vec![1u8; 4096];
    f.read_exact_at(&mut buf, 100 << 20).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "hole reads as zeros");
    f.read_exact_at(&mut buf, 512 << 20).unwrap();
    assert_eq!(buf, data[..4096]);
    let seek = |pos| rustix::fs::seek(&f, pos);
    let data_at = seek(rustix::fs::SeekFrom::Data(0)).unwrap_or_else(|e| panic!("SEEK_DATA from 0: {e}"));
    assert!((0..=512 << 20).contains(&data_at), "SEEK_DATA from 0 = {data_at}");
    assert!(data_at > 1 << 20, "SEEK_DATA skipped the leading hole: {data_at}");
    let hole_at = seek(rustix::fs::SeekFrom::Hole(512 << 20)).unwrap_or_else(|e| panic!("SEEK_HOLE: {e}"));
    assert!(hole_at >= (512 << 20) + 8192, "SEEK_HOLE inside data: {hole_at}");
    assert!(hole_at < 1 << 30, "SEEK_HOLE found the trailing hole: {hole_at}");
    let past = seek(rustix::fs::SeekFrom::Data(1 << 31));
    assert!(past.is_err(), "SEEK_DATA past EOF is ENXIO: {past:?}");
}

#[test]
fn fallocate_and_punch_hole() {
    let v = Vol::new();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(v.p("fa"))
        .unwrap();
    let data = pattern(3, 5 * 4096 + 100);
    f.write_all_at(&data, 0).unwrap();
    // Punch [1000, 3*4096+50): partial first block, whole blocks 1-2, partial block 3.
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    if let Err(e) = rustix::fs::fallocate(&f, punch, 1000, 3 * 4096 + 50 - 1000) {
        panic!("punch hole: {e}");
    }
    let mut exp = data.clone();
    exp[1000..3 * 4096 + 50].fill(0);
    let mut got = vec![0u8; exp.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(got, exp);
    assert_eq!(f.metadata().unwrap().len(), data.len() as u64, "punch keeps size");
    // posix_fallocate grows the file with zeros. (glibc's, which falls back to writing zeros
    // where fallocate is unsupported; rustix has no such call.)
    // SAFETY: posix_fallocate takes only integers; `f` is open for the whole call.
    let r = unsafe { libc::posix_fallocate(f.as_raw_fd(), 0, 100_000) };
    assert_eq!(r, 0);
    assert_eq!(f.metadata().unwrap().len(), 100_000);
    let mut tail = vec![1u8; 100_000 - data.len()];
    f.read_exact_at(&mut tail, data.len() as u64).unwrap();
    assert!(tail.iter().all(|&b| b == 0));
    // Unsupported modes answer EOPNOTSUPP rather than doing something else.
    let r = rustix::fs::fallocate(&f, FallocateFlags::COLLAPSE_RANGE, 0, 4096);
    assert_eq!(r, Err(Errno::OPNOTSUPP));
}

#[test]
fn concurrent_writers_and_readers_on_one_file_direct() {
    concurrent_writers_and_readers(true);
}

#[test]
fn concurrent_writers_and_readers_on_one_file_buffered() {
    concurrent_writers_and_readers(false);
}

fn concurrent_writers_and_readers(direct: bool) {
    let v = Vol::new();
    const REGION: usize = 64 * 1024 + 300; // deliberately not block aligned
    const N: usize = 4;
    // O_DIRECT: every read and write reaches cmkfs as one request, so this tests cmkfs's own
    // locking. (Buffered I/O goes through the kernel page cache, which on Linux, as on ext4,
    // does not make a multi-page read atomic with respect to a concurrent write.)
    let f = Arc::new(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(v.p("shared"))
            .unwrap(),
    );
    f.write_all_at(&vec![0u8; REGION * N], 0).unwrap();
    let mut threads = vec![];
    for t in 0..N {
        let f = f.clone();
        threads.push(std::thread::spawn(move || {
            for round in 0..40u64 {
                let d = pattern(t as u64 * 1000 + round, REGION);
                f.write_all_at(&d, (t * REGION) as u64).unwrap();
                let mut back = vec![0u8; REGION];
                f.read_exact_at(&mut back, (t * REGION) as u64).unwrap();
                assert_eq!(back, d, "writer {t} round {round} read back another writer's bytes");
            }
        }));
    }
    // Readers of whole-region reads see some complete version of each region, never a mix
    // within one write (writes are atomic with respect to reads).
    let reader = {
        let f = f.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                let mut buf = vec![0u8; REGION];
                f.read_exact_at(&mut buf, 0).unwrap();
                if direct {
                    let ok = buf.iter().all(|&b| b == 0) || (0..40).any(|r| buf == pattern(r, REGION));
                    assert!(ok, "torn read of region 0");
                }
            }
        })
    };
    for t in threads {
        t.join().unwrap();
    }
    reader.join().unwrap();
    for t in 0..N {
        let mut back = vec![0u8; REGION];
        f.read_exact_at(&mut back, (t * REGION) as u64).unwrap();
        assert_eq!(back, pattern(t as u64 * 1000 + 39, REGION));
    }
}

#[test]
fn rename_noreplace_and_exchange() {
    let v = Vol::new();
    fs::write(v.p("a"), b"A").unwrap();
    fs::write(v.p("b"), b"B").unwrap();
    let rn = |a: &str, b: &str, flags| rustix::fs::renameat_with(CWD, v.p(a), CWD, v.p(b), flags);
    assert_eq!(rn("a", "b", RenameFlags::NOREPLACE), Err(Errno::EXIST));
    assert_eq!(rn("a", "b", RenameFlags::EXCHANGE), Ok(()));
    assert_eq!(fs::read(v.p("a")).unwrap(), b"B");
    assert_eq!(fs::read(v.p("b")).unwrap(), b"A");
    fs::create_dir(v.p("d")).unwrap();
    fs::rename(v.p("a"), v.p("d/moved")).unwrap();
    assert_eq!(fs::read(v.p("d/moved")).unwrap(), b"B");
    assert!(!v.p("a").exists());
}

/// Format 3 names: 255-byte (long-name side files) and non-ASCII names through every name
/// operation, across directories, with RENAME_EXCHANGE and RENAME_NOREPLACE; the side files
/// follow their names and nothing is left behind.
#[test]
fn long_and_non_ascii_names_through_every_name_operation() {
    let v = Vol::new();
    let long = |c: char| c.to_string().repeat(255);
    let uni = "Ünïcødé-名前-🙂.txt";
    fs::create_dir(v.p("d1")).unwrap();
    fs::create_dir(v.p(&format!("d1/{}", long('D')))).unwrap();
    let d2 = format!("d1/{}", long('D'));
    fs::write(v.p(&format!("d1/{}", long('a'))), b"A").unwrap();
    fs::write(v.p(&format!("{d2}/{uni}")), b"U").unwrap();
    assert_eq!(fs::read(v.p(&format!("d1/{}", long('a')))).unwrap(), b"A");
    // 256 bytes is too long, as on any Linux filesystem.
    assert_eq!(
        errno_of(fs::write(v.p(&format!("d1/{}", "z".repeat(256))), b"")),
        Some(libc::ENAMETOOLONG)
    );
    // Rename a long name across directories, to a long name and to a short one.
    fs::rename(v.p(&format!("d1/{}", long('a'))), v.p(&format!("{d2}/{}", long('b')))).unwrap();
    fs::rename(v.p(&format!("{d2}/{}", long('b'))), v.p("short")).unwrap();
    fs::rename(v.p("short"), v.p(&format!("{d2}/{}", long('c')))).unwrap();
    // Hard link across directories under a long name.
    fs::hard_link(v.p(&format!("{d2}/{}", long('c'))), v.p(&format!("d1/{}", long('e')))).unwrap();
    assert_eq!(fs::metadata(v.p(&format!("d1/{}", long('e')))).unwrap().nlink(), 2);
    // RENAME_EXCHANGE of a long and a non-ASCII name in different directories.
    let (x, y) = (format!("{d2}/{}", long('c')), format!("{d2}/{uni}"));
    let ex = |a: &str, b: &str, f| rustix::fs::renameat_with(CWD, v.p(a), CWD, v.p(b), f);
    assert_eq!(
        ex(&x, &format!("d1/{}", long('e')), RenameFlags::NOREPLACE),
        Err(Errno::EXIST)
    );
    assert_eq!(ex(&x, &y, RenameFlags::EXCHANGE), Ok(()));
    assert_eq!(fs::read(v.p(&x)).unwrap(), b"U");
    assert_eq!(fs::read(v.p(&y)).unwrap(), b"A");
    assert_eq!(ex(&y, "d1/exchanged", RenameFlags::NOREPLACE), Ok(()));
    let mut names: Vec<String> = fs::read_dir(v.p(&d2))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec![long('c')]);
    // Symlink with a long name and a long target; then remove everything.
    let target = "t/".repeat(1000);
    std::os::unix::fs::symlink(&target, v.p(&format!("d1/{}", long('s')))).unwrap();
    assert_eq!(
        fs::read_link(v.p(&format!("d1/{}", long('s'))))
            .unwrap()
            .to_str()
            .unwrap(),
        target
    );
    assert_eq!(
        fs::symlink_metadata(v.p(&format!("d1/{}", long('s')))).unwrap().len(),
        2000
    );
    for n in [long('s'), long('e'), "exchanged".into()] {
        fs::remove_file(v.p(&format!("d1/{n}"))).unwrap();
    }
    fs::remove_file(v.p(&x)).unwrap();
    fs::remove_dir(v.p(&d2)).unwrap();
    fs::remove_dir(v.p("d1")).unwrap();
    // Nothing left in the cipher root but cmkfs's own files.
    let left: Vec<String> = fs::read_dir(&v.cipher)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("cmkfs.volume") && n != "cmkfs.diriv")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A directory of 100,000 entries lists completely and looks every name up.
#[test]
fn directory_with_100000_entries() {
    let v = Vol::new();
    fs::create_dir(v.p("big")).unwrap();
    const N: usize = 100_000;
    for i in 0..N {
        File::create(v.p(&format!("big/entry-{i:06}"))).unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(v.p("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), N);
    names.sort();
    assert_eq!(names[0], "entry-000000");
    assert_eq!(names[N - 1], format!("entry-{:06}", N - 1));
    for i in (0..N).step_by(997) {
        assert!(v.p(&format!("big/entry-{i:06}")).exists());
    }
}

#[test]
fn links_symlinks_dirs_and_metadata() {
    let v = Vol::new();
    fs::write(v.p("orig"), b"shared content").unwrap();
    fs::hard_link(v.p("orig"), v.p("link")).unwrap();
    assert_eq!(fs::metadata(v.p("orig")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(v.p("orig")).unwrap().ino(),
        fs::metadata(v.p("link")).unwrap().ino()
    );
    OpenOptions::new()
        .append(true)
        .open(v.p("link"))
        .unwrap()
        .write_all(b" + more")
        .unwrap();
    assert_eq!(fs::read(v.p("orig")).unwrap(), b"shared content + more");
    std::os::unix::fs::symlink("orig", v.p("sym")).unwrap();
    assert_eq!(fs::read_link(v.p("sym")).unwrap().to_str().unwrap(), "orig");
    assert_eq!(fs::read(v.p("sym")).unwrap(), b"shared content + more");
    fs::create_dir_all(v.p("x/y/z")).unwrap();
    fs::write(v.p("x/y/z/f"), b"deep").unwrap();
    assert!(fs::remove_dir(v.p("x/y")).is_err(), "rmdir of non-empty dir must fail");
    fs::set_permissions(v.p("orig"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(fs::metadata(v.p("orig")).unwrap().mode() & 0o777, 0o640);
    std::os::unix::fs::chown(v.p("orig"), Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(v.p("orig")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(v.p("orig"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_eq!(fs::metadata(v.p("orig")).unwrap().mtime(), 1_000_000_000);
    let names: Vec<_> = fs::read_dir(&v.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for n in ["orig", "link", "sym", "x"] {
        assert!(names.contains(&n.to_string()), "{n} missing from readdir {names:?}");
    }
    // O_APPEND appends at the plaintext end.
    let mut a = OpenOptions::new().append(true).open(v.p("x/y/z/f")).unwrap();
    a.write_all(b"er").unwrap();
    assert_eq!(fs::read(v.p("x/y/z/f")).unwrap(), b"deeper");
    // statfs answers.
    let st = rustix::fs::statvfs(&v.mnt).unwrap();
    assert!(st.f_blocks > 0 && st.f_namemax >= 255);
}

#[test]
fn fsync_on_unlinked_open_file() {
    let v = Vol::new();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(v.p("gone"))
        .unwrap();
    f.write_all(b"still here").unwrap();
    fs::remove_file(v.p("gone")).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    f.write_all(b" and more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here and more");
}

#[test]
fn shared_writable_mmap() {
    let mut v = Vol::new();
    let len = 3 * 4096 + 123;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(v.p("mm"))
        .unwrap();
    f.set_len(len as u64).unwrap();
    let data = pattern(11, len);
    // rustix's mmap is as unsafe as libc's (and its `mm` feature is not enabled).
    // SAFETY: a fresh shared mapping of `len` bytes of `f`, which is `len` bytes long (set_len
    // above) and open for reading and writing; nothing else maps it in this process. The copy
    // writes exactly `len` bytes from `data` (len bytes) into the mapping, which do not
    // overlap; the mapping is unmapped once, after its last use.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
        std::ptr::copy_nonoverlapping(data.as_ptr(), p as *mut u8, len);
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        libc::munmap(p, len);
    }
    drop(f);
    assert_eq!(fs::read(v.p("mm")).unwrap(), data);
    v.remount();
    assert_eq!(
        fs::read(v.p("mm")).unwrap(),
        data,
        "mmap writes reached the backing file"
    );
}

#[test]
fn o_direct_is_honoured() {
    let v = Vol::new();
    fs::write(v.p("d"), pattern(1, 10_000)).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(v.p("d"))
        .unwrap();
    // Unaligned direct I/O works (FUSE direct I/O has no alignment rules).
    f.write_all_at(b"direct!", 4093).unwrap();
    let mut b = [0u8; 7];
    f.read_exact_at(&mut b, 4093).unwrap();
    assert_eq!(&b, b"direct!");
    let buffered = fs::read(v.p("d")).unwrap();
    assert_eq!(&buffered[4093..4100], b"direct!");
    // The write went to the backing file before it returned (no cache in between).
    let raw = fs::read(v.c("d")).unwrap();
    assert_eq!(raw.len() as u64, cipher_len(10_000));
}

#[test]
fn xattrs_are_encrypted() {
    let v = Vol::new();
    fs::write(v.p("x"), b"x").unwrap();
    let set = |name: &str, val: &[u8]| rustix::fs::setxattr(v.p("x"), name, val, XattrFlags::empty());
    assert_eq!(set("user.secret", b"attribute value"), Ok(()));
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(v.p("x"), "user.secret", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"attribute value");
    // The size query (a zero-length buffer, which rustix spells getxattr_query).
    let size_only = rustix::fs::getxattr_query(v.p("x"), "user.secret");
    assert_eq!(size_only, Ok(15));
    let backing_name = only_backing_xattr(&v.c("x"));
    assert!(
        !backing_name.contains("secret"),
        "xattr name stored in clear: {backing_name}"
    );
    let rawn = rustix::fs::getxattr(v.c("x"), backing_name.as_str(), &mut buf[..]).unwrap();
    assert!(
        rawn > 15 && !buf[..rawn].windows(9).any(|w| w == b"attribute"),
        "xattr value stored in clear"
    );
    let mut list = [0u8; 256];
    let ln = rustix::fs::listxattr(v.p("x"), &mut list[..]).unwrap();
    assert_eq!(&list[..ln], b"user.secret\0");
    assert!(set("trusted.nope", b"v").is_err(), "non-user namespaces are refused");
    assert_eq!(rustix::fs::removexattr(v.p("x"), "user.secret"), Ok(()));
    let gone = rustix::fs::getxattr(v.p("x"), "user.secret", &mut buf[..]);
    assert!(gone.is_err());
}

#[test]
fn mount_is_private_without_allow_other() {
    let v = Vol::new();
    fs::write(v.p("f"), b"x").unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "stat"])
        .arg(v.p("f"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "another user could stat a file on a private mount"
    );
    let mut v2 = Vol::unmounted();
    v2.mount(&["--allow-other"]);
    fs::write(v2.p("f"), b"x").unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "stat"])
        .arg(v2.p("f"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "--allow-other mount refused another user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Far more files than the daemon may hold descriptors: the inode table caches a bounded
/// number of descriptors and reopens the rest from kernel file handles.
#[test]
fn many_files_under_a_small_descriptor_limit() {
    let mut v = Vol::unmounted();
    let out = std::process::Command::new("prlimit")
        .args(["--nofile=200:200", "--"])
        .arg(BIN)
        .args(["mount", "--log-file"])
        .arg(&v.log)
        .arg(&v.cipher)
        .arg(&v.mnt)
        .env("CMKFS_AUDIT_LOG", &v.audit)
        .env("CMKFS_CONFIG_DIR", v.tmp.path().join("config"))
        .output()
        .unwrap();
    ok(&out);
    v.mounted = true;
    // An unlinked-but-open file whose descriptor will be evicted from the cache.
    let mut gone = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(v.p("gone"))
        .unwrap();
    gone.write_all(b"unlinked but open").unwrap();
    fs::remove_file(v.p("gone")).unwrap();
    for d in 0..4 {
        fs::create_dir(v.p(&format!("d{d}"))).unwrap();
        for i in 0..500 {
            fs::write(v.p(&format!("d{d}/f{i}")), format!("{d}/{i}")).unwrap();
        }
    }
    let mut n = 0;
    for d in 0..4 {
        for e in fs::read_dir(v.p(&format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            assert_eq!(fs::read_to_string(e.path()).unwrap(), format!("{d}/{}", &name[1..]));
            n += 1;
        }
    }
    assert_eq!(n, 2000);
    assert_eq!(
        gone.metadata().unwrap().len(),
        17,
        "getattr of an unlinked, evicted inode"
    );
    gone.sync_all().unwrap();
    let pid = v.status()["pid"].as_u64().unwrap();
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    assert!(fds < 200, "daemon holds {fds} descriptors");
}

#[test]
fn o_trunc_is_a_guarded_truncate_like_on_a_local_filesystem() {
    let v = Vol::new();
    // O_RDONLY|O_TRUNC truncates on Linux local filesystems; it must here too.
    fs::write(v.p("t"), pattern(1, 10_000)).unwrap();
    let fd = rustix::fs::open(v.p("t"), OFlags::RDONLY | OFlags::TRUNC, Mode::empty());
    assert!(fd.is_ok());
    drop(fd);
    assert_eq!(fs::metadata(v.p("t")).unwrap().len(), 0);
    // A running executable cannot be truncated or opened for writing (ETXTBSY), on every
    // try: with FUSE_ATOMIC_O_TRUNC the kernel let O_RDONLY|O_TRUNC through now and then.
    for i in 0..40 {
        let p = v.p(&format!("exe{i}"));
        fs::copy("/bin/sleep", &p).unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        // Exec can meet ETXTBSY on its own: another test's fork() in this multi-threaded binary
        // may hold a duplicate of the copy's write descriptor until that child execs.
        let mut spawned = None;
        assert!(wait_until(std::time::Duration::from_secs(5), || {
            match std::process::Command::new(&p).arg("10").spawn() {
                Ok(c) => spawned = Some(c),
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {}
                Err(e) => panic!("spawn {}: {e}", p.display()),
            }
            spawned.is_some()
        }));
        let mut child = spawned.unwrap();
        for flags in [OFlags::WRONLY, OFlags::RDWR, OFlags::RDONLY | OFlags::TRUNC] {
            // An opened descriptor (the failure) is closed at once, before the assertion.
            let err = rustix::fs::open(&p, flags, Mode::empty()).err();
            assert_eq!(err, Some(Errno::TXTBSY), "try {i}, flags {flags:?}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            fs::read(&p).unwrap(),
            fs::read("/bin/sleep").unwrap(),
            "the executable is intact"
        );
    }
}

/// Set-user-ID and set-group-ID bits are cleared by an unprivileged write or truncate and
/// kept by root's, exactly as on the raw backing filesystem. (cmkfs negotiates
/// FUSE_HANDLE_KILLPRIV_V2, which leaves clearing them to the daemon, whose own writes to the
/// backing file run as root and would keep them.)
#[test]
fn set_id_bits_are_cleared_like_on_a_local_filesystem() {
    use std::os::unix::fs::PermissionsExt;
    let mut v = Vol::unmounted();
    v.mount(&["--allow-other"]);
    let raw = v.tmp.path().join("raw");
    fs::create_dir(&raw).unwrap();
    fs::set_permissions(v.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&raw, fs::Permissions::from_mode(0o777)).unwrap();
    let as_nobody = |script: &str, file: &std::path::Path| {
        let st = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", script])
            .arg(file)
            .status()
            .unwrap();
        assert!(st.success(), "{script} as nobody on {}", file.display());
    };
    let as_root = |script: &str, file: &std::path::Path| {
        assert!(std::process::Command::new("sh")
            .args(["-c", script])
            .arg(file)
            .status()
            .unwrap()
            .success());
    };
    type Op<'a> = (&'a str, u32, &'a dyn Fn(&str, &std::path::Path), &'a str);
    let cases: [Op; 6] = [
        ("unprivileged append", 0o6777, &as_nobody, "printf x >> \"$0\""),
        (
            "unprivileged overwrite",
            0o6777,
            &as_nobody,
            "printf y | dd of=\"$0\" conv=notrunc status=none",
        ),
        ("unprivileged truncate", 0o6777, &as_nobody, "truncate -s 2 \"$0\""),
        (
            "unprivileged write, setgid without group execute",
            0o2767,
            &as_nobody,
            "printf x >> \"$0\"",
        ),
        ("root append", 0o6777, &as_root, "printf x >> \"$0\""),
        ("root truncate", 0o6777, &as_root, "truncate -s 2 \"$0\""),
    ];
    for (i, (what, mode, run, script)) in cases.iter().enumerate() {
        let mut got = vec![];
        for dir in [raw.clone(), v.p("")] {
            let f = dir.join(format!("setid{i}"));
            fs::write(&f, b"content").unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
            run(script, &f);
            got.push(fs::metadata(&f).unwrap().permissions().mode() & 0o7777);
        }
        assert_eq!(
            got[1], got[0],
            "{what}: mode on cmkfs {:o}, on the raw filesystem {:o}",
            got[1], got[0]
        );
        if what.starts_with("unprivileged") && *mode == 0o6777 {
            assert_eq!(got[0] & 0o6000, 0, "{what}: the raw filesystem itself cleared the bits");
        }
    }
}
