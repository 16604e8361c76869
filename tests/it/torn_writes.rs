//! Torn block writes (format 2, docs/RELIABILITY.md): a crash in the middle of overwriting
//! blocks leaves every block readable as its old or its new content, never as a block that
//! fails its tag check, and no acknowledged write is lost.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use rustix::process::Signal;

/// The content of block `b` at version `ver`: self-describing (block and version in its
/// first 16 bytes), the rest a pattern of both.
fn block_bytes(b: u64, ver: u64) -> Vec<u8> {
    let mut v = pattern(b.wrapping_mul(1_000_003) ^ ver.wrapping_mul(0x51ED_2701) ^ 0xABCD, 4096);
    v[..8].copy_from_slice(&b.to_le_bytes());
    v[8..16].copy_from_slice(&ver.to_le_bytes());
    v
}

fn run_bytes(first: u64, n: u64, ver: u64) -> Vec<u8> {
    (first..first + n).flat_map(|b| block_bytes(b, ver)).collect()
}

fn overwrite(v: &Vol, name: &str, b: u64, data: &[u8]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(v.p(name))?;
    f.write_all_at(data, b * 4096)
}

/// After the daemon died: detach the dead mount and mount the volume again.
fn remount_after_crash(v: &mut Vol) {
    let _ = Command::new("umount").arg("-l").arg(&v.mnt).status();
    v.mounted = false;
    v.mount(&[]);
}

fn fsck_json(v: &Vol) -> (i32, serde_json::Value) {
    let out = v.run([std::ffi::OsStr::new("fsck"), "--json".as_ref(), v.mnt.as_os_str()]);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("fsck output: {}", stderr(&out))),
    )
}

/// Block `b` of `name`, which must read (as old or new content) in full.
fn full_block(v: &Vol, name: &str, b: u64) -> Vec<u8> {
    let buf =
        read_block(v, name, b).unwrap_or_else(|e| panic!("block {b} of {name} must read as old or new content: {e}"));
    assert_eq!(buf.len(), BS as usize, "block {b} of {name} must read in full");
    buf
}

#[test]
fn interrupted_overwrite_reads_as_old_content_even_after_a_second_crash() {
    let mut v = Vol::new();
    let old = run_bytes(0, 8, 0);
    fs::write(v.p("f"), &old).unwrap();
    v.umount();
    // The daemon kills itself right after writing the entries of a block write, before its
    // ciphertext: the state a crash between the two leaves.
    v.env
        .push(("CMKFS_TEST_CRASH_AT".into(), "layout:entries-written".into()));
    v.mount(&[]);
    assert!(
        overwrite(&v, "f", 3, &block_bytes(3, 1)).is_err(),
        "the daemon must die inside the write"
    );
    remount_after_crash(&mut v);
    assert_eq!(full_block(&v, "f", 3), block_bytes(3, 0), "old content after the crash");
    // A second crash in the first overwrite of the same block. The current slot now belongs
    // to the write that never landed; the writer must see that (the first session left its
    // marker) and keep the slot that authenticates the ciphertext on disk.
    assert!(overwrite(&v, "f", 3, &block_bytes(3, 2)).is_err());
    v.env.retain(|(k, _)| k == "CMKFS_CONFIG_DIR");
    remount_after_crash(&mut v);
    assert_eq!(fs::read(v.p("f")).unwrap(), old, "every block still the old content");
    let (code, j) = fsck_json(&v);
    assert_eq!(code, 0, "no damage: {j}");
    assert_eq!(j["interrupted_writes"], 1, "{j}");
    // The block takes new writes again, and they stick across a clean remount.
    overwrite(&v, "f", 3, &block_bytes(3, 3)).unwrap();
    v.remount();
    assert_eq!(full_block(&v, "f", 3), block_bytes(3, 3));
    let (code, j) = fsck_json(&v);
    assert_eq!((code, j["interrupted_writes"].as_u64()), (0, Some(0)), "{j}");
}

#[test]
fn interrupted_append_and_hole_fill_read_as_before() {
    let mut v = Vol::new();
    // A file with a hole at block 1 and 62 blocks, so block 62 would start a new group.
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(v.p("g"))
        .unwrap();
    f.write_all_at(&block_bytes(0, 0), 0).unwrap();
    f.write_all_at(&run_bytes(2, 60, 0), 2 * 4096).unwrap();
    drop(f);
    v.umount();
    v.env
        .push(("CMKFS_TEST_CRASH_AT".into(), "layout:entries-written".into()));
    v.mount(&[]);
    assert!(overwrite(&v, "g", 1, &block_bytes(1, 1)).is_err(), "fill the hole");
    remount_after_crash(&mut v);
    assert!(
        overwrite(&v, "g", 62, &run_bytes(62, 3, 1)).is_err(),
        "append a new group"
    );
    v.env.retain(|(k, _)| k == "CMKFS_CONFIG_DIR");
    remount_after_crash(&mut v);
    let got = fs::read(v.p("g")).unwrap();
    assert_eq!(got.len(), 62 * 4096, "the append did not happen");
    assert_eq!(&got[4096..8192], &[0u8; 4096][..], "the hole is still a hole");
    assert_eq!(&got[..4096], &block_bytes(0, 0)[..]);
    assert_eq!(&got[8192..], &run_bytes(2, 60, 0)[..]);
    // Growing the file later must not resurrect the unfinished append's entries.
    let f = OpenOptions::new().write(true).open(v.p("g")).unwrap();
    f.set_len(70 * 4096).unwrap();
    drop(f);
    let got = fs::read(v.p("g")).unwrap();
    assert_eq!(&got[62 * 4096..], &vec![0u8; 8 * 4096][..], "new range reads as zeros");
    let (code, j) = fsck_json(&v);
    assert_eq!(code, 0, "{j}");
}

#[test]
fn random_kills_while_overwriting_leave_every_block_old_or_new() {
    const BLOCKS: u64 = 248; // four groups of 62
    const WRITERS: u64 = 4;
    const ROUNDS: usize = 40;
    let mut v = Vol::new();
    fs::write(v.p("db"), run_bytes(0, BLOCKS, 0)).unwrap();
    let issued: Arc<Vec<AtomicU64>> = Arc::new((0..BLOCKS).map(|_| AtomicU64::new(0)).collect());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..BLOCKS).map(|_| AtomicU64::new(0)).collect());
    let version = Arc::new(AtomicU64::new(1));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut writes, mut interrupted) = (0u64, 0u64);
    for round in 0..ROUNDS {
        let daemon = v.status()["pid"].as_i64().unwrap() as i32;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (issued, acked, version, stop, done) = (
                    issued.clone(),
                    acked.clone(),
                    version.clone(),
                    stop.clone(),
                    done.clone(),
                );
                let path = v.p("db");
                let mut r = seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round as u64;
                std::thread::spawn(move || {
                    let f = OpenOptions::new().write(true).open(path).unwrap();
                    let (lo, n) = (t * BLOCKS / WRITERS, BLOCKS / WRITERS);
                    while !stop.load(SeqCst) {
                        r ^= r << 13;
                        r ^= r >> 7;
                        r ^= r << 17;
                        let first = lo + r % n;
                        let len = 1 + (r >> 20) % 32.min(lo + n - first);
                        let ver = version.fetch_add(1, SeqCst);
                        for b in first..first + len {
                            issued[b as usize].store(ver, SeqCst);
                        }
                        if f.write_all_at(&run_bytes(first, len, ver), first * 4096).is_err() {
                            return; // the daemon is gone
                        }
                        for b in first..first + len {
                            acked[b as usize].store(ver, SeqCst);
                        }
                        done.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        // Let the writers get going, then kill at a random point.
        assert!(wait_until(Duration::from_secs(10), || done.load(SeqCst) >= 8));
        std::thread::sleep(Duration::from_millis(20 + next() % 300));
        let _ = send_signal(daemon, Signal::KILL);
        let t0 = Instant::now();
        stop.store(true, SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        assert!(t0.elapsed() < Duration::from_secs(20));
        writes += done.load(SeqCst);
        remount_after_crash(&mut v);
        // Every block: the last acknowledged version, or the one in flight at the kill.
        let got =
            fs::read(v.p("db")).unwrap_or_else(|e| panic!("round {round}: reading the file after the crash: {e}"));
        assert_eq!(got.len() as u64, BLOCKS * 4096);
        for b in 0..BLOCKS {
            let blk = &got[(b * 4096) as usize..][..4096];
            let ver = u64::from_le_bytes(blk[8..16].try_into().unwrap());
            let (a, i) = (acked[b as usize].load(SeqCst), issued[b as usize].load(SeqCst));
            assert!(
                ver == a || ver == i,
                "round {round} block {b}: version {ver}, acknowledged {a}, in flight {i}"
            );
            assert_eq!(
                blk,
                &block_bytes(b, ver)[..],
                "round {round} block {b}: content of version {ver}"
            );
            acked[b as usize].store(ver, SeqCst);
            issued[b as usize].store(ver, SeqCst);
        }
        let (code, j) = fsck_json(&v);
        assert_eq!(code, 0, "round {round}: {j}");
        interrupted += j["interrupted_writes"].as_u64().unwrap();
    }
    eprintln!(
        "{ROUNDS} SIGKILLs of the daemon during {writes} acknowledged multi-block overwrites: \
         every block old or new, no acknowledged write lost, {interrupted} blocks read as their previous content"
    );
}

/// The daemon SIGKILLed in the middle of an fsx run (every operation: writes, truncates,
/// hole punches, mapped writes, copy_file_range): after remounting, the file reads in full
/// (no block fails its tag) and fsck is clean.
#[test]
fn fsx_killed_mid_run_leaves_a_readable_file() {
    let fsx = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("fsx")).find(|f| f.exists()))
        .expect("fsx is not installed (scripts/test.sh installs it: cargo install fsx@0.3.2)");
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/suites/fsx.toml");
    let mut v = Vol::new();
    let artifacts = v.tmp.path().join("fsx-artifacts");
    fs::create_dir(&artifacts).unwrap();
    let mut total_interrupted = 0;
    for (round, kill_after_ms) in [700u64, 1500, 2600].into_iter().enumerate() {
        let daemon = v.status()["pid"].as_i64().unwrap() as i32;
        let mut child = Command::new(&fsx)
            .arg("-q")
            .arg("-f")
            .arg(&config)
            .args(["-N", "1000000", "-S", &(20261125 + round).to_string(), "-P"])
            .arg(&artifacts)
            .arg(v.p("fsx.file"))
            .current_dir(&artifacts)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: fsx ended before the kill point"
        );
        let _ = send_signal(daemon, Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
        remount_after_crash(&mut v);
        let data = fs::read(v.p("fsx.file"))
            .unwrap_or_else(|e| panic!("round {round}: the file fsx was working on must read in full: {e}"));
        let (code, j) = fsck_json(&v);
        assert_eq!(code, 0, "round {round}: {j}");
        total_interrupted += j["interrupted_writes"].as_u64().unwrap();
        eprintln!(
            "round {round}: daemon killed {kill_after_ms} ms into fsx; file of {} bytes reads in full, fsck clean",
            data.len()
        );
    }
    eprintln!("3 kills during fsx: {total_interrupted} blocks read as their previous content");
}
