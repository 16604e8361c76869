//! Databases on a live mount, with the databases' own checkers: SQLite (WAL, shared writable
//! mmap, concurrent writers, integrity_check) and PostgreSQL (initdb, pgbench, pg_amcheck,
//! restart), and PostgreSQL surviving SIGKILL of the cmkfs daemon with every committed
//! transaction present.
//!
//! The packages come from scripts/test.sh (sqlite3 via python3, postgresql).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use rustix::process::Signal;

fn python(script: &str, args: &[&OsStr]) -> String {
    run_ok(Command::new("python3").arg("-c").arg(script).args(args), "python")
}

const SQLITE_WRITER: &str = r#"
import sqlite3, sys
db, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db, timeout=60, isolation_level=None)
c.execute("PRAGMA mmap_size=268435456")
c.execute("PRAGMA busy_timeout=60000")
for i in range(n):
    c.execute("BEGIN IMMEDIATE")
    c.execute("INSERT INTO t(w, i, payload) VALUES (?, ?, randomblob(700))", (wid, i))
    c.execute("UPDATE counters SET n = n + 1 WHERE w = ?", (wid,))
    c.execute("COMMIT")
    if i % 50 == 0:
        # Readers through the mmap while others write.
        assert c.execute("SELECT count(*) FROM t WHERE w = ?", (wid,)).fetchone()[0] == i + 1
print("ok")
"#;

const SQLITE_CHECK: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA mmap_size=268435456")
print(c.execute("PRAGMA journal_mode").fetchone()[0])
print(c.execute("PRAGMA integrity_check").fetchone()[0])
print(c.execute("SELECT count(*) FROM t").fetchone()[0])
print(c.execute("SELECT sum(n) FROM counters").fetchone()[0])
print(c.execute("SELECT count(DISTINCT w || '-' || i) FROM t").fetchone()[0])
"#;

#[test]
fn sqlite_wal_with_mmap_and_concurrent_writers() {
    let mut v = Vol::new();
    let db = v.p("app.db");
    python(
        r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
c.execute("PRAGMA mmap_size=268435456")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, w INT, i INT, payload BLOB)")
c.execute("CREATE INDEX t_w ON t(w, i)")
c.execute("CREATE TABLE counters(w INT PRIMARY KEY, n INT)")
c.executemany("INSERT INTO counters VALUES (?, 0)", [(w,) for w in range(4)])
"#,
        &[db.as_os_str()],
    );
    const N: usize = 400;
    let writers: Vec<Child> = (0..4)
        .map(|w| {
            Command::new("python3")
                .arg("-c")
                .arg(SQLITE_WRITER)
                .arg(&db)
                .arg(w.to_string())
                .arg(N.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "writer: {}", String::from_utf8_lossy(&out.stderr));
    }
    let expect = format!("wal\nok\n{}\n{}\n{}\n", 4 * N, 4 * N, 4 * N);
    assert_eq!(python(SQLITE_CHECK, &[db.as_os_str()]), expect);
    // The same after a remount (WAL checkpointed or replayed from the encrypted files).
    v.remount();
    assert_eq!(python(SQLITE_CHECK, &[db.as_os_str()]), expect);
    v.umount();
}

fn pg_bin(name: &str) -> PathBuf {
    let p = Path::new("/usr/lib/postgresql/15/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: scripts/test.sh installs postgresql",
        p.display()
    );
    p
}

/// Runs a command as the postgres user; returns stdout, panics with output on failure.
fn as_postgres(cmd: &Path, args: &[&str]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(cmd)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {:?} failed:\n{}\n{}",
        cmd.display(),
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PostgreSQL server on a data directory, in its own process group.
struct Pg {
    data: PathBuf,
    sock: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Pg {
    fn init(data: &Path, sock: &Path) -> Pg {
        as_postgres(
            &pg_bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--data-checksums",
                "-E",
                "UTF8",
            ],
        );
        Pg {
            data: data.into(),
            sock: sock.into(),
            port: free_port(),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = self.sock.join("server.log");
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("postgres"))
            .args(["-D", self.data.to_str().unwrap(), "-p", &self.port.to_string()])
            .args([
                "-k",
                self.sock.to_str().unwrap(),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=on",
            ])
            .args(["-c", "shared_buffers=32MB", "-c", "max_wal_size=256MB"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(90), || {
            Command::new(pg_bin("pg_isready"))
                .args(["-h", self.sock.to_str().unwrap(), "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap()
                .success()
        });
        assert!(
            ok,
            "postgres did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn conn(&self) -> Vec<String> {
        vec![
            "-h".into(),
            self.sock.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-U".into(),
            "postgres".into(),
        ]
    }

    fn psql(&self, sql: &str) -> String {
        let mut a = self.conn();
        a.extend(["-d".into(), "postgres".into(), "-XAtqc".into(), sql.into()]);
        as_postgres(&pg_bin("psql"), &a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn amcheck(&self) {
        let mut a = self.conn();
        a.extend(["--all".into(), "--install-missing".into(), "--heapallindexed".into()]);
        let out = as_postgres(&pg_bin("pg_amcheck"), &a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.trim().is_empty(), "pg_amcheck reports corruption:\n{out}");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            as_postgres(
                &pg_bin("pg_ctl"),
                &["stop", "-m", "fast", "-w", "-D", self.data.to_str().unwrap()],
            );
            let _ = c.wait();
            // runuser exits when postgres does; wait until the server's processes are gone.
            let pgid = c.id() as i32;
            assert!(wait_until(Duration::from_secs(60), || !group_alive(pgid)));
        }
    }

    /// Kills the server and its backends at once (after the mount died under them).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = c.id() as i32;
            cmkfs::sys::process::kill_group(pgid as u32);
            let _ = c.wait();
            assert!(wait_until(Duration::from_secs(60), || !group_alive(pgid)));
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pg_volume() -> (Vol, PathBuf) {
    let mut v = Vol::unmounted();
    v.mount(&["--allow-other"]);
    let dir = v.p("pg");
    std::fs::create_dir(&dir).unwrap();
    let sock = v.tmp.path().join("sock");
    std::fs::create_dir(&sock).unwrap();
    std::os::unix::fs::chown(&dir, Some(pg_uid()), None).unwrap();
    std::os::unix::fs::chown(&sock, Some(pg_uid()), None).unwrap();
    // The test's temporary directory must be traversable by postgres.
    let mut p = v.tmp.path().to_path_buf();
    loop {
        let _ = std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        if !p.pop() || p == Path::new("/tmp") || p == Path::new("/") {
            break;
        }
    }
    (v, sock)
}

fn pg_uid() -> u32 {
    let out = Command::new("id").args(["-u", "postgres"]).output().unwrap();
    assert!(
        out.status.success(),
        "no postgres user: scripts/test.sh installs postgresql"
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn postgresql_pgbench_amcheck_and_restart() {
    let (mut v, sock) = pg_volume();
    let mut pg = Pg::init(&v.p("pg/data"), &sock);
    pg.start();
    let mut a = pg.conn();
    a.extend(["-i", "-s", "4", "-q", "postgres"].map(String::from));
    as_postgres(&pg_bin("pgbench"), &a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut a = pg.conn();
    a.extend(["-T", "10", "-c", "4", "-j", "2", "postgres"].map(String::from));
    let out = as_postgres(&pg_bin("pgbench"), &a.iter().map(String::as_str).collect::<Vec<_>>());
    let tx: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(tx > 100, "pgbench ran: {out}");
    let sum_before = pg.psql("SELECT sum(abalance) FROM pgbench_accounts");
    pg.amcheck();
    pg.stop();
    // Restart on a fresh mount of the same volume, then check again.
    v.umount();
    v.mount(&["--allow-other"]);
    pg.start();
    assert_eq!(pg.psql("SELECT sum(abalance) FROM pgbench_accounts"), sum_before);
    pg.amcheck();
    pg.stop();
    v.umount();
}

#[test]
fn postgresql_survives_sigkill_of_the_cmkfs_daemon() {
    let (mut v, sock) = pg_volume();
    let mut pg = Pg::init(&v.p("pg/data"), &sock);
    pg.start();
    pg.psql("CREATE TABLE acked(n bigint PRIMARY KEY, pad text)");
    let mut a = pg.conn();
    a.extend(["-i", "-s", "2", "-q", "postgres"].map(String::from));
    as_postgres(&pg_bin("pgbench"), &a.iter().map(String::as_str).collect::<Vec<_>>());
    let mut acked: Vec<u64> = vec![];
    let mut next = 0u64;
    // Kill points: early in a run, after a checkpoint, and in the middle of pgbench load.
    for (round, kill_after) in [
        Duration::from_millis(1500),
        Duration::from_millis(3000),
        Duration::from_millis(2200),
    ]
    .into_iter()
    .enumerate()
    {
        if round == 1 {
            pg.psql("CHECKPOINT");
        }
        // A client that commits one row per transaction and prints each n once COMMIT returned.
        // ON_ERROR_STOP: once the daemon is dead an INSERT can fail with a plain ERROR (a
        // relation file cannot be extended) rather than a PANIC; without it psql would go on
        // to print that row's number as if it had committed.
        let mut a = pg.conn();
        a.extend([
            "-d".into(),
            "postgres".into(),
            "-XAtq".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
        ]);
        let mut client = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("psql"))
            .args(&a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = client.stdin.take().unwrap();
        let start = next;
        let feeder = std::thread::spawn(move || {
            for n in start..start + 1_000_000 {
                let sql = format!("INSERT INTO acked VALUES ({n}, repeat('x', 300)); SELECT {n};\n");
                if stdin.write_all(sql.as_bytes()).is_err() {
                    break;
                }
            }
        });
        // Background load in the same database while the daemon dies.
        let mut load = {
            let mut a = pg.conn();
            a.extend(["-T", "30", "-c", "2", "-n", "postgres"].map(String::from));
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_bin("pgbench"))
                .args(&a)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let reader = BufReader::new(client.stdout.take().unwrap());
        let t0 = Instant::now();
        let daemon = v.status()["pid"].as_i64().unwrap() as i32;
        let mut killed = false;
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Ok(n) = line.trim().parse::<u64>() {
                acked.push(n);
                next = n + 1;
            }
            if !killed && t0.elapsed() >= kill_after {
                let _ = send_signal(daemon, Signal::KILL);
                killed = true;
                // psql normally exits when the server goes away; make sure it does.
                let pid = client.id() as i32;
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(10));
                    let _ = send_signal(pid, Signal::KILL);
                });
            }
        }
        assert!(killed, "round {round}: the client stopped before the kill point");
        let _ = client.kill();
        let _ = client.wait();
        let _ = load.kill();
        let _ = load.wait();
        let _ = feeder.join();
        pg.kill();
        // The dead mount: detach it, mount the volume again, let PostgreSQL recover.
        let _ = Command::new("umount").arg("-l").arg(&v.mnt).status();
        v.mounted = false;
        v.mount(&["--allow-other"]);
        pg.start();
        let present: Vec<u64> = pg
            .psql("SELECT n FROM acked ORDER BY n")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let missing: Vec<u64> = acked
            .iter()
            .filter(|n| present.binary_search(n).is_err())
            .copied()
            .collect();
        if !missing.is_empty() {
            // What PostgreSQL said during recovery (where replay ended), for the report.
            let server = std::fs::read_to_string(sock.join("server.log")).unwrap_or_default();
            let recovery: Vec<&str> = server
                .lines()
                .filter(|l| l.contains("redo") || l.contains("invalid record") || l.contains("PANIC"))
                .collect();
            panic!(
                "round {round}: committed rows lost: {:?} (acknowledged up to {:?})\n{}",
                &missing[..missing.len().min(20)],
                acked.last(),
                recovery.join("\n")
            );
        }
        assert!(
            acked.len() as u64 > start,
            "round {round}: some transactions committed before the kill"
        );
        pg.amcheck();
        eprintln!(
            "round {round}: daemon SIGKILLed {:?} into the run; {} commits acknowledged so far, all present after recovery, pg_amcheck clean",
            kill_after,
            acked.len()
        );
        next = present.last().map_or(next, |l| l + 1).max(next);
    }
    pg.stop();
    v.umount();
}

fn mariadb_bin(name: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: scripts/test.sh installs mariadb-server");
}

/// A MariaDB server (InnoDB, O_DIRECT) on a data directory, in its own process group.
struct Maria {
    data: PathBuf,
    sock: PathBuf,
    child: Option<Child>,
}

impl Maria {
    fn start(&mut self) {
        let log = self.sock.with_extension("err");
        let child = Command::new(mariadb_bin("mariadbd"))
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--socket={}", self.sock.display()))
            .arg(format!("--pid-file={}", self.sock.with_extension("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .args([
                "--skip-networking",
                "--innodb-flush-method=O_DIRECT",
                "--innodb-buffer-pool-size=64M",
            ])
            .args(["--innodb-log-file-size=48M", "--innodb-flush-log-at-trx-commit=1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let ok = wait_until(Duration::from_secs(90), || {
            Command::new(mariadb_bin("mariadb-admin"))
                .arg(format!("--socket={}", self.sock.display()))
                .args(["-uroot", "ping"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        });
        assert!(
            ok,
            "mariadbd did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn sql(&self, q: &str) -> String {
        let out = Command::new(mariadb_bin("mariadb"))
            .arg(format!("--socket={}", self.sock.display()))
            .args(["-uroot", "-N", "-B", "-e", q])
            .output()
            .unwrap();
        assert!(out.status.success(), "{q}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let st = Command::new(mariadb_bin("mariadb-admin"))
                .arg(format!("--socket={}", self.sock.display()))
                .args(["-uroot", "shutdown"])
                .status()
                .unwrap();
            assert!(st.success());
            let _ = c.wait();
        }
    }
}

impl Drop for Maria {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            cmkfs::sys::process::kill_group(c.id());
            let _ = c.wait();
        }
    }
}

#[test]
fn mariadb_innodb_o_direct_fill_restart_check() {
    let mut v = Vol::unmounted();
    v.mount(&["--allow-other"]);
    let out = Command::new("id").args(["-u", "mysql"]).output().unwrap();
    assert!(
        out.status.success(),
        "no mysql user: scripts/test.sh installs mariadb-server"
    );
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let data = v.p("mysql");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), None).unwrap();
    let run = v.tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(uid), None).unwrap();
    let mut p = v.tmp.path().to_path_buf();
    loop {
        let _ = std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        if !p.pop() || p == Path::new("/tmp") || p == Path::new("/") {
            break;
        }
    }
    let out = Command::new(mariadb_bin("mariadb-install-db"))
        .arg("--no-defaults")
        .arg("--user=mysql")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb-install-db: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut db = Maria {
        data: data.clone(),
        sock: run.join("mysqld.sock"),
        child: None,
    };
    db.start();
    db.sql(
        "CREATE DATABASE t; USE t; CREATE TABLE t.x(id INT PRIMARY KEY, v VARCHAR(200), KEY(v)) ENGINE=InnoDB; \
         INSERT INTO t.x SELECT seq, SHA2(seq, 256) FROM seq_1_to_50000; \
         UPDATE t.x SET v = CONCAT(v, 'u') WHERE id % 7 = 0;",
    );
    assert_eq!(db.sql("SELECT @@innodb_flush_method"), "O_DIRECT");
    let err_log = std::fs::read_to_string(db.sock.with_extension("err")).unwrap_or_default();
    assert!(
        !err_log.contains("Failed to set O_DIRECT"),
        "InnoDB could not use O_DIRECT:\n{err_log}"
    );
    let sum = db.sql("CHECKSUM TABLE t.x");
    assert_eq!(db.sql("SELECT count(*) FROM t.x"), "50000");
    db.stop();
    v.umount();
    v.mount(&["--allow-other"]);
    db.start();
    assert_eq!(db.sql("CHECK TABLE t.x EXTENDED").split_whitespace().last(), Some("OK"));
    assert_eq!(db.sql("CHECKSUM TABLE t.x"), sum);
    assert_eq!(db.sql("SELECT count(*) FROM t.x WHERE v LIKE '%u'"), "7142");
    db.stop();
    v.umount();
}
