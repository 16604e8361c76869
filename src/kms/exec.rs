//! `exec:` — a KEK behind an external program, so users can plug in a cloud CLI, an
//! in-house KMS or anything cmkfs has no built-in provider for.
//!
//! URI: `exec:/ABSOLUTE/PROGRAM?key=KEY&timeout=10s&wrap=local`
//!
//! - `key` (optional) is passed to the program untouched (`CMKFS_KEY`); it names the key in
//!   the program's own terms.
//! - `timeout` (default 10s) bounds every call; a program still running then is killed and
//!   the call counts as *unreachable*.
//! - `wrap=local` (default) wraps with the public key the program reports, inside cmkfs, so
//!   the volume key never leaves cmkfs at wrap time; `wrap=program` asks the program's own
//!   `wrap` operation instead (for services that only wrap server-side).
//!
//! The protocol (version 1, documented for implementers in docs/providers/exec.md): cmkfs
//! runs `PROGRAM OPERATION` with `CMKFS_EXEC_PROTOCOL=1`, `CMKFS_KEY` and, for `unwrap`,
//! `CMKFS_KEY_VERSION` in the environment.
//!
//! | operation | stdin | stdout on success |
//! |---|---|---|
//! | `check`  | nothing | JSON `{"key_id", "version", "public_key_pem", "expiry"?}` |
//! | `wrap`   | base64 of the 32-byte secret | JSON `{"version", "ciphertext"}` (base64) |
//! | `unwrap` | base64 of the ciphertext | base64 of the 32-byte secret |
//!
//! Exit codes: 0 ok, 2 denied (disabled, deleted, no permission), 3 unreachable (try
//! again later), 4 this ciphertext is not for this key; anything else, or a signal, is an
//! unreachable provider. The program's stderr (first 400 bytes) goes into the error message.
//!
//! Because the daemon runs the program, often as root, the program must be a regular file
//! owned by root or by the user cmkfs runs as, not writable by group or others, in
//! directories (every one from `/`, symbolic links followed) that obey the same rule: see
//! [`super::trust`]. Its stdout is limited to [`MAX_STDOUT`] bytes.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use zeroize::Zeroizing;

use super::{params, trust, ErrorKind, KeyInfo, KeyProvider, ProviderError, Unwrapped, Wrapped};
use crate::crypto::rsa::{self, OaepHash};
use crate::crypto::SecretKey;

/// URI scheme.
pub const SCHEME: &str = "exec";

/// Exit code: the key is disabled, deleted or this caller may not use it.
pub const EXIT_DENIED: i32 = 2;
/// Exit code: the backing service cannot be reached now.
pub const EXIT_UNREACHABLE: i32 = 3;
/// Exit code: the ciphertext was not made by this key.
pub const EXIT_UNWRAP_FAILED: i32 = 4;

/// Largest stdout accepted from the program. A `check` answer with an RSA-4096 public key is
/// under 1 KiB, an `unwrap` answer 44 bytes.
pub const MAX_STDOUT: usize = 16 * 1024;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A KEK behind an external program.
pub struct ExecProvider {
    uri: String,
    program: PathBuf,
    key: String,
    timeout: Duration,
    wrap_in_program: bool,
}

#[derive(serde::Deserialize)]
struct CheckOutput {
    key_id: Option<String>,
    version: String,
    public_key_pem: String,
    expiry: Option<String>,
}

#[derive(serde::Deserialize)]
struct WrapOutput {
    version: String,
    ciphertext: String,
}

impl ExecProvider {
    /// Parses `rest` (the part after `exec:`).
    pub fn open(uri: &str, rest: &str) -> Result<Self, ProviderError> {
        let bad = |m: String| ProviderError::new(ErrorKind::Misconfigured, SCHEME, uri, m);
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let p = params::parse_params(query, '&', &["key", "timeout", "wrap"]).map_err(|e| bad(e.to_string()))?;
        let program = PathBuf::from(params::percent_decode(path).map_err(|e| bad(e.to_string()))?);
        if !program.is_absolute() {
            return Err(bad("the program must be an absolute path: exec:/path/to/program".into()));
        }
        let timeout = match p.get("timeout") {
            Some(t) => params::parse_duration(t).map_err(|e| bad(e.to_string()))?,
            None => Duration::from_secs(10),
        };
        let wrap_in_program = match p.get("wrap").map(String::as_str) {
            None | Some("local") => false,
            Some("program") => true,
            Some(o) => return Err(bad(format!("wrap={o}: use wrap=local (default) or wrap=program"))),
        };
        Ok(ExecProvider {
            uri: uri.into(),
            program,
            key: p.get("key").cloned().unwrap_or_default(),
            timeout,
            wrap_in_program,
        })
    }

    fn key_label(&self) -> String {
        if self.key.is_empty() {
            self.program.display().to_string()
        } else {
            format!("{} ({})", self.key, self.program.display())
        }
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> ProviderError {
        ProviderError::new(kind, SCHEME, self.key_label(), msg)
    }

    /// Refuses programs that anyone but root or this user could change or replace: the
    /// program must be a regular executable file owned by root or by the effective uid, not
    /// writable by group or others, and so must every directory on its path from `/`, link
    /// targets included (a sticky, world-writable directory such as /tmp is refused too).
    fn check_program(&self) -> Result<(), ProviderError> {
        let misconfigured =
            |m: &dyn std::fmt::Display| self.err(ErrorKind::Misconfigured, format!("{m}; the daemon will not run it"));
        let (real, md) = trust::resolve_trusted(&self.program, "program").map_err(|e| misconfigured(&e))?;
        if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
            return Err(misconfigured(&format!("{} is not an executable file", real.display())));
        }
        trust::check_owner_and_mode(&real, &md, "program", crate::util::euid()).map_err(|e| misconfigured(&e))?;
        Ok(())
    }

    /// Runs one operation; returns stdout on exit 0, a classified error otherwise.
    fn call(&self, op: &str, version: Option<&str>, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.check_program()?;
        let mut cmd = Command::new(&self.program);
        cmd.arg(op)
            .env("CMKFS_EXEC_PROTOCOL", "1")
            .env("CMKFS_KEY", &self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(v) = version {
            cmd.env("CMKFS_KEY_VERSION", v);
        }
        let mut child = cmd.spawn().map_err(|e| {
            self.err(
                ErrorKind::Misconfigured,
                format!("cannot run {}: {e}", self.program.display()),
            )
        })?;
        let pid = child.id();
        // Feed stdin and drain stdout/stderr on their own threads so that a program that
        // writes before reading cannot deadlock against us.
        let mut stdin = child.stdin.take().expect("piped");
        let input = Zeroizing::new(input.to_vec());
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let mut stdout = child.stdout.take().expect("piped");
        // One zeroizing buffer of the largest answer the protocol allows, so no copy of an
        // unwrapped key is left behind by reallocation. More is a protocol error (the reader
        // stops reading; the program then gets SIGPIPE or finishes).
        let reader = std::thread::spawn(move || crate::crypto::read_zeroizing(&mut stdout, MAX_STDOUT, MAX_STDOUT));
        let mut stderr = child.stderr.take().expect("piped");
        let ereader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = stderr.by_ref().take(1 << 16).read_to_end(&mut b);
            b
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    // The whole process group: a shell script's children must not linger.
                    crate::sys::process::kill_group(pid);
                    let _ = child.wait();
                    return Err(self.err(
                        ErrorKind::Unreachable,
                        format!("'{op}' did not finish within {:?}; killed", self.timeout),
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => return Err(self.err(ErrorKind::Unreachable, format!("waiting for '{op}': {e}"))),
            }
        };
        let _ = writer.join();
        let out = match reader.join() {
            Ok(Ok(Some(out))) => Some(out),
            Ok(Ok(None)) => None,
            Ok(Err(_)) | Err(_) => Some(Zeroizing::new(Vec::new())),
        };
        let errtext = ereader.join().unwrap_or_default();
        let errtext = String::from_utf8_lossy(&errtext[..errtext.len().min(400)])
            .trim()
            .to_string();
        let said = if errtext.is_empty() {
            String::new()
        } else {
            format!(": {errtext}")
        };
        // Too much output is a protocol error whatever the exit status (the program may well
        // have died of SIGPIPE once the reader stopped).
        let out = out.ok_or_else(|| {
            self.err(
                ErrorKind::Misconfigured,
                format!("'{op}' printed more than {MAX_STDOUT} bytes, which protocol 1 never needs; see docs/providers/exec.md"),
            )
        })?;
        match status.code() {
            Some(0) => Ok(out),
            Some(EXIT_DENIED) => Err(self.err(ErrorKind::Denied, format!("'{op}' denied{said}"))),
            Some(EXIT_UNREACHABLE) => Err(self.err(ErrorKind::Unreachable, format!("'{op}' unreachable{said}"))),
            Some(EXIT_UNWRAP_FAILED) if op == "unwrap" => Err(self.err(
                ErrorKind::UnwrapFailed,
                format!("this key cannot decrypt the keyslot (made by another key, or corrupted){said}"),
            )),
            Some(c) => Err(self.err(
                ErrorKind::Unreachable,
                format!("'{op}' failed with exit code {c}{said}"),
            )),
            None => Err(self.err(
                ErrorKind::Unreachable,
                format!("'{op}' killed by signal {}{said}", status.signal().unwrap_or(0)),
            )),
        }
    }

    fn check(&self) -> Result<(KeyInfo, rsa::RsaPublicKey), ProviderError> {
        let out = self.call("check", None, b"")?;
        let c: CheckOutput = serde_json::from_slice(&out).map_err(|e| {
            self.err(
                ErrorKind::Misconfigured,
                format!("'check' printed no valid JSON ({e}); see docs/providers/exec.md"),
            )
        })?;
        let public = rsa::public_from_pem(&c.public_key_pem)
            .map_err(|m| self.err(ErrorKind::Misconfigured, format!("'check' public_key_pem: {m}")))?;
        let key_id = c.key_id.unwrap_or_else(|| self.key_label());
        let mut info = KeyInfo::for_public(SCHEME, &key_id, &c.version, &public);
        info.expiry = c.expiry;
        Ok((info, public))
    }
}

impl KeyProvider for ExecProvider {
    fn uri(&self) -> &str {
        &self.uri
    }

    fn current(&self) -> Result<KeyInfo, ProviderError> {
        Ok(self.check()?.0)
    }

    fn wrap(&self, secret: &SecretKey) -> Result<Wrapped, ProviderError> {
        let (mut info, public) = self.check()?;
        if !self.wrap_in_program {
            return Ok(Wrapped::locally(info, &public, OaepHash::Sha256, secret));
        }
        let input = Zeroizing::new(B64.encode(secret.expose()));
        let out = self.call("wrap", None, input.as_bytes())?;
        let w: WrapOutput = serde_json::from_slice(&out)
            .map_err(|e| self.err(ErrorKind::Misconfigured, format!("'wrap' printed no valid JSON ({e})")))?;
        let ciphertext = B64.decode(w.ciphertext.trim()).map_err(|e| {
            self.err(
                ErrorKind::Misconfigured,
                format!("'wrap' ciphertext is not base64: {e}"),
            )
        })?;
        info.version = w.version;
        // A wrap that cannot be unwrapped would make the volume unmountable: prove it now.
        let back = self.unwrap(&info.version, &ciphertext)?;
        if !back.secret.ct_eq(secret) {
            return Err(self.err(
                ErrorKind::Misconfigured,
                "'unwrap' of a fresh 'wrap' returned another key",
            ));
        }
        Ok(Wrapped { key: info, ciphertext })
    }

    fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<Unwrapped, ProviderError> {
        let out = self.call("unwrap", Some(version), B64.encode(wrapped).as_bytes())?;
        let text =
            std::str::from_utf8(&out).map_err(|_| self.err(ErrorKind::Misconfigured, "'unwrap' output is not text"))?;
        let raw = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| self.err(ErrorKind::Misconfigured, "'unwrap' output is not base64"))?,
        );
        let secret = SecretKey::from_slice(&raw).ok_or_else(|| {
            self.err(
                ErrorKind::UnwrapFailed,
                format!("'unwrap' returned {} bytes, not a 32-byte volume key", raw.len()),
            )
        })?;
        // The program may report a key id of its own; keep ours plus the version asked for.
        let key = KeyInfo::without_public(SCHEME, &self.key_label(), version);
        Ok(Unwrapped { secret, key })
    }
}
