//! The audit log: an append-only JSON Lines file of every key operation and state change.
//!
//! Each record carries `seq` (1, 2, ...), `prev` (hex SHA-256 of the previous line's bytes, 64
//! zeros for the first) and the event's fields. Editing, removing or reordering a record breaks
//! the chain at the following record, which `cmkfs audit verify` reports. Truncating the tail
//! cannot be seen from the file alone: `verify` prints the head hash and count, so operators
//! who need that can anchor them elsewhere. Writers take an exclusive `flock` on the file, so
//! the CLI and mount daemons can append concurrently. Key material never goes in here: callers
//! pass key ids, versions and fingerprints only.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

mod event;
pub use event::Event;

use crate::crypto;
use crate::util;

/// Environment variable overriding the audit log location.
pub const ENV_AUDIT: &str = crate::config::AUDIT_LOG;
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Default location: `$CMKFS_AUDIT_LOG`, else `/var/log/cmkfs/audit.jsonl` for root, else
/// `~/.local/state/cmkfs/audit.jsonl`.
pub fn default_path() -> PathBuf {
    if let Some(p) = &crate::config::env().audit_log {
        return p.clone();
    }
    if util::is_root() {
        return PathBuf::from("/var/log/cmkfs/audit.jsonl");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| util::home_dir().map(|h| h.join(".local/state")))
        .map(|d| d.join("cmkfs"))
        .unwrap_or_else(util::runtime_dir)
        .join("audit.jsonl")
}

/// An audit log file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The log at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditLog { path: path.into() }
    }

    /// The log at the default location.
    pub fn default_log() -> Self {
        AuditLog::new(default_path())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record: `event` plus `fields` (an object), with time, pid, uid, seq and
    /// the chain hash added.
    pub fn append(&self, event: Event, fields: Value) -> io::Result<()> {
        if let Some(d) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !d.exists() {
                util::ensure_private_dir(d)?;
            }
        }
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)?;
        crate::sys::process::flock(&f)?;
        let (seq, prev) = last_record(&mut f)?;
        let mut rec = Map::new();
        rec.insert("seq".into(), Value::from(seq + 1));
        rec.insert("time".into(), Value::from(util::now_rfc3339_millis()));
        rec.insert("event".into(), Value::from(event.as_str()));
        rec.insert("pid".into(), Value::from(std::process::id()));
        rec.insert("uid".into(), Value::from(crate::sys::process::uid()));
        if let Value::Object(m) = fields {
            for (k, v) in m {
                rec.entry(k).or_insert(v);
            }
        }
        rec.insert("prev".into(), Value::from(prev));
        let mut line = serde_json::to_vec(&Value::Object(rec)).expect("record serialises");
        line.push(b'\n');
        f.write_all(&line)?;
        f.sync_data()
    }

    /// Appends, logging (not failing) when the log cannot be written: used on paths where
    /// refusing service because of the log would be worse, and always visible in the daemon log.
    pub fn record(&self, event: Event, fields: Value) {
        if let Err(e) = self.append(event, fields) {
            tracing::error!(log = %self.path.display(), error = %e, %event, "cannot write the audit log");
        }
    }
}

/// Reads the last line of the log (seeking back from the end) and returns its seq and hash.
fn last_record(f: &mut std::fs::File) -> io::Result<(u64, String)> {
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, GENESIS.into()));
    }
    let mut back = 4096u64.min(len);
    loop {
        f.seek(SeekFrom::Start(len - back))?;
        let mut buf = vec![0u8; back as usize];
        f.read_exact(&mut buf)?;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Some(i) = body.iter().rposition(|&b| b == b'\n') {
            return parse_tail(&body[i + 1..]);
        }
        if back == len {
            return parse_tail(body);
        }
        back = (back * 2).min(len);
    }
}

fn parse_tail(line: &[u8]) -> io::Result<(u64, String)> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("last audit record is damaged: {e}")))?;
    let seq = v["seq"]
        .as_u64()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "last audit record has no seq"))?;
    Ok((seq, crypto::hex(&crypto::sha256(line))))
}

/// Result of verifying a log.
#[derive(Debug, serde::Serialize)]
pub struct Verification {
    /// Records checked.
    pub records: u64,
    /// Hash of the last record (anchor it elsewhere to detect tail truncation).
    pub head: String,
    /// Problems found, each naming the line.
    pub problems: Vec<String>,
}

/// Checks the hash chain and sequence numbers of a log.
pub fn verify(path: &Path) -> io::Result<Verification> {
    let f = std::fs::File::open(path)?;
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 1u64;
    let mut problems = vec![];
    let mut n = 0;
    for (i, line) in BufReader::new(f).split(b'\n').enumerate() {
        let line = line?;
        let lineno = i + 1;
        n += 1;
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) => {
                if v["prev"].as_str() != Some(prev.as_str()) {
                    problems.push(format!(
                        "line {lineno}: chain broken (the record before it was edited, removed or reordered)"
                    ));
                }
                match v["seq"].as_u64() {
                    Some(s) if s == expect_seq => {}
                    Some(s) => problems.push(format!(
                        "line {lineno}: seq {s}, expected {expect_seq} (records removed or reordered)"
                    )),
                    None => problems.push(format!("line {lineno}: no seq")),
                }
                expect_seq = v["seq"].as_u64().unwrap_or(expect_seq) + 1;
            }
            Err(e) => problems.push(format!("line {lineno}: not a JSON record ({e})")),
        }
        prev = crypto::hex(&crypto::sha256(&line));
    }
    Ok(Verification {
        records: n,
        head: prev,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_detects_edit_removal_reorder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.jsonl");
        let log = AuditLog::new(&p);
        for i in 0..5 {
            log.append(Event::Lock, serde_json::json!({"i": i})).unwrap();
        }
        let v = verify(&p).unwrap();
        assert_eq!(v.records, 5);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let check = |ls: Vec<String>| {
            std::fs::write(&p, ls.join("\n") + "\n").unwrap();
            verify(&p).unwrap().problems
        };
        let mut edited: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        edited[2] = edited[2].replace("\"i\":2", "\"i\":9");
        assert!(!check(edited).is_empty(), "edit undetected");
        let mut removed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        removed.remove(1);
        assert!(!check(removed).is_empty(), "removal undetected");
        let mut first_removed: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        first_removed.remove(0);
        assert!(
            !check(first_removed).is_empty(),
            "removal of the first record undetected"
        );
        let mut reordered: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        reordered.swap(1, 3);
        assert!(!check(reordered).is_empty(), "reorder undetected");
        // Appending continues the chain after a clean log.
        std::fs::write(&p, text).unwrap();
        log.append(Event::Unlock, serde_json::json!({})).unwrap();
        assert!(verify(&p).unwrap().problems.is_empty());
    }
}
