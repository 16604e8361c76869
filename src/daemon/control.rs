//! The control socket of a mounted volume.
//!
//! Each mount daemon listens on a Unix socket whose path is derived from the mountpoint
//! (so `cmkfs status /mnt/db` finds it without touching the mount itself, which may be
//! refusing I/O). One JSON request per line, one JSON response per line. The socket is
//! mode 0600 in a 0700 directory: only the mounting user (and root) can talk to it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::sys;
use crate::util;

/// A request to the daemon.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Report state.
    Status,
    /// Make the volume Inaccessible now (root or the mounting user only).
    Lock,
    /// Revalidate with the key provider now and clear a lock (root or the mounting user).
    Unlock,
    /// Re-read the volume header after a rotation or keyslot change.
    Reload,
    /// The state and counters as Prometheus text.
    Metrics,
    /// Replace the DEK of one file (path relative to the mountpoint).
    Rekey {
        /// Path relative to the volume root.
        path: String,
    },
}

/// What `cmkfs status` shows.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Status {
    /// `Available` or `Inaccessible`.
    pub state: String,
    /// Why the volume is in that state (or a warning, such as an unreachable provider).
    pub reason: Option<String>,
    /// When the state last changed (RFC 3339).
    pub state_since: String,
    /// Operations refused with EACCES since the state changed.
    pub refused_ops: u64,
    /// The uid that locked the volume.
    pub locked_by_uid: Option<u32>,
    /// Last successful revalidation (RFC 3339).
    pub last_check_ok: Option<String>,
    /// Next revalidation (RFC 3339).
    pub next_check: Option<String>,
    /// Latency of the last provider unwrap, in milliseconds.
    pub last_check_latency_ms: Option<f64>,
    /// The last revalidation error.
    pub last_check_error: Option<String>,
    /// Seconds of unreachable-provider grace left, while the provider is unreachable.
    pub grace_remaining_secs: Option<u64>,
    /// Revalidation interval.
    pub check_interval: String,
    /// Grace period for an unreachable provider.
    pub unreachable_grace: String,
    /// Volume id.
    pub volume_id: String,
    /// On-disk format version.
    pub format_version: u32,
    /// Header generation in use.
    pub header_generation: u64,
    /// Cipher directory.
    pub cipher_dir: String,
    /// Mountpoint.
    pub mountpoint: String,
    /// KEK URI of the keyslot in use.
    pub kek_uri: String,
    /// Provider scheme.
    pub provider: String,
    /// Key id.
    pub key_id: String,
    /// Key version in use.
    pub key_version: String,
    /// Keyslot in use.
    pub keyslot: u32,
    /// Daemon pid.
    pub pid: u32,
    /// When the volume was mounted (RFC 3339).
    pub mounted_at: String,
    /// Daemon log file, if any.
    pub log_file: Option<String>,
    /// Audit log.
    pub audit_log: String,
}

/// What the daemon does for each request.
pub trait Handler: Send + Sync {
    /// Current status.
    fn status(&self) -> Status;
    /// The state and counters as Prometheus text ([`super::metrics`]).
    fn metrics(&self) -> String;
    /// Lock, requested by `uid`.
    fn lock(&self, uid: u32) -> Result<(), String>;
    /// Unlock, requested by `uid`.
    fn unlock(&self, uid: u32) -> Result<(), String>;
    /// Re-read the header.
    fn reload(&self) -> Result<(), String>;
    /// Rekey one file; returns the bytes re-encrypted.
    fn rekey(&self, path: &str, uid: u32) -> Result<u64, String>;
}

/// Directory holding control sockets (see [`util::runtime_dir`]).
pub fn runtime_dir() -> PathBuf {
    util::runtime_dir()
}

/// Absolute mountpoint path without touching the mount itself (only its parent is
/// resolved), so it works while the mount refuses I/O or its daemon is gone.
pub fn normalize_mountpoint(mp: &Path) -> PathBuf {
    let abs = std::path::absolute(mp).unwrap_or_else(|_| mp.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent.canonicalize().map(|p| p.join(name)).unwrap_or(abs),
        _ => abs,
    }
}

/// The socket path for a mountpoint.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let mp = normalize_mountpoint(mountpoint);
    let h = crypto::hex(&crypto::sha256(mp.as_os_str().as_encoded_bytes()));
    runtime_dir().join(format!("{}.sock", &h[..24]))
}

/// Serves requests on a background thread until the process exits.
pub fn serve(mountpoint: &Path, handler: Arc<dyn Handler>) -> std::io::Result<PathBuf> {
    let dir = runtime_dir();
    util::ensure_private_dir(&dir)?;
    let path = socket_path(mountpoint);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::thread::Builder::new()
        .name("cmkfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let handler = handler.clone();
                let _ = std::thread::Builder::new()
                    .name("cmkfs-control-conn".into())
                    .spawn(move || {
                        let _ = handle(conn, handler.as_ref());
                    });
            }
        })?;
    Ok(path)
}

/// The uid of the process at the other end of a Unix socket (SO_PEERCRED).
fn peer_uid(conn: &UnixStream) -> std::io::Result<u32> {
    Ok(rustix::net::sockopt::socket_peercred(conn)?.uid.as_raw())
}

fn handle(conn: UnixStream, handler: &dyn Handler) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let uid = peer_uid(&conn)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Only root or the user the daemon runs as (the mounting user) may change the state.
    let authorized = uid == 0 || uid == util::euid();
    let denied = || serde_json::json!({"error": format!("permission denied: only root or the mounting user may do this (you are uid {uid})")});
    let done = |r: Result<(), String>| match r {
        Ok(()) => serde_json::to_value(handler.status()).unwrap(),
        Err(e) => {
            let mut v = serde_json::to_value(handler.status()).unwrap();
            v["error"] = serde_json::Value::from(e);
            v
        }
    };
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => serde_json::to_value(handler.status()).unwrap(),
        Ok(Request::Metrics) => serde_json::json!({"metrics": handler.metrics()}),
        Ok(_) if !authorized => denied(),
        Ok(Request::Lock) => done(handler.lock(uid)),
        Ok(Request::Unlock) => done(handler.unlock(uid)),
        Ok(Request::Reload) => done(handler.reload()),
        Ok(Request::Rekey { path }) => match handler.rekey(&path, uid) {
            Ok(bytes) => serde_json::json!({"rekeyed": path, "bytes": bytes}),
            Err(e) => serde_json::json!({"error": e}),
        },
        Err(e) => serde_json::json!({"error": format!("bad request: {e}")}),
    };
    let mut w = conn;
    w.write_all(serde_json::to_string(&resp).unwrap().as_bytes())?;
    w.write_all(b"\n")
}

/// Sends a request to the daemon serving `mountpoint`.
pub fn request(mountpoint: &Path, req: &Request) -> std::io::Result<serde_json::Value> {
    let path = socket_path(mountpoint);
    let conn = UnixStream::connect(&path)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = conn.try_clone()?;
    w.write_all(serde_json::to_string(req).unwrap().as_bytes())?;
    w.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Asks for the metrics text.
pub fn metrics(mountpoint: &Path) -> std::io::Result<String> {
    let v = request(mountpoint, &Request::Metrics)?;
    v.get("metrics")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no metrics in the daemon's answer"))
}

/// Asks for status.
pub fn status(mountpoint: &Path) -> std::io::Result<Status> {
    let v = request(mountpoint, &Request::Status)?;
    serde_json::from_value(v).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Asks the daemon to rekey one file; returns the bytes re-encrypted.
pub fn rekey(mountpoint: &Path, rel: &str) -> std::io::Result<Result<u64, String>> {
    let v = request(mountpoint, &Request::Rekey { path: rel.to_string() })?;
    Ok(match v.get("error").and_then(|e| e.as_str()) {
        Some(e) => Err(e.to_string()),
        None => Ok(v["bytes"].as_u64().unwrap_or(0)),
    })
}

/// Sends a state-changing request; returns the status after it, or the daemon's error
/// (with the status, when there is one).
pub fn command(mountpoint: &Path, req: &Request) -> std::io::Result<Result<Status, (String, Option<Status>)>> {
    let v = request(mountpoint, req)?;
    let st: Option<Status> = serde_json::from_value(v.clone()).ok();
    Ok(match v.get("error").and_then(|e| e.as_str()) {
        Some(e) => Err((e.to_string(), st)),
        None => st.ok_or_else(|| ("malformed answer from the daemon".to_string(), None)),
    })
}

/// True when `mp` is a mountpoint of a cmkfs FUSE filesystem: a FUSE mount whose source
/// (the cipher directory) holds a volume header. (fuser's mount(2) path records the type as
/// plain `fuse`, so the subtype cannot be relied on.)
pub fn is_cmkfs_mount(mp: &Path) -> bool {
    match mount_entry(mp) {
        Some((t, source)) => {
            (t == "fuse" || t == "fuse.cmkfs")
                && (Path::new(&source).join(crate::format::VOLUME_HEADER_NAME).exists() || socket_path(mp).exists())
        }
        None => false,
    }
}

/// The filesystem type mounted at `mp`, if it is a mountpoint.
pub fn mount_type(mp: &Path) -> Option<String> {
    mount_entry(mp).map(|(t, _)| t)
}

/// Mountpoints whose mount source is the cipher directory `src` (cmkfs records the cipher
/// directory as the FUSE fsname).
pub fn mounts_of_source(src: &Path) -> Vec<PathBuf> {
    let want = src.canonicalize().unwrap_or_else(|_| src.to_path_buf());
    sys::mountinfo::mounts()
        .into_iter()
        .filter(|m| m.source == want)
        .map(|m| m.mount_point)
        .collect()
}

/// Type and source of the mount at `mp`, from /proc/self/mountinfo (the last, visible one
/// when several are stacked).
pub fn mount_entry(mp: &Path) -> Option<(String, String)> {
    let mp = normalize_mountpoint(mp);
    sys::mountinfo::mounts()
        .into_iter()
        .rev()
        .find(|m| m.mount_point.as_os_str() == mp.as_os_str())
        .map(|m| (m.fs_type, m.source.to_string_lossy().into_owned()))
}
