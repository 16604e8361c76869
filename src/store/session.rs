//! Write sessions of a mount, for layout 2's choice of entry slot (see
//! [`crate::format::layout::v2`], "Which slot to write").
//!
//! A mount picks a random non-zero stamp and creates `cmkfs.volume.session.<stamp>` in the
//! cipher root before it serves writes; a clean unmount removes it. A marker found at mount
//! time belongs to a session that ended without unmounting (killed daemon, crash, power
//! loss): entries it stamped are checked before their first overwrite. The markers are a few
//! bytes each and stay until the volume is re-created; a live mount of the same volume by
//! another daemon (not supported) would only cost extra checks.

use std::io;
use std::path::Path;

use crate::format::layout::{WriterStamps, UNSURE_STAMP};
use crate::format::volume_header::VOLUME_HEADER_NAME;
use crate::store::root::CipherRoot;

const PREFIX: &str = "session.";

/// The marker of this mount's session; dropping it (clean unmount) removes the marker.
pub struct Session {
    marker: String,
    root: CipherRoot,
    stamps: WriterStamps,
}

impl Session {
    /// The stamps every write of this mount uses (this session's, and the crashed ones').
    pub fn stamps(&self) -> &WriterStamps {
        &self.stamps
    }
}

/// Starts a session in `cipher_root`: reads the markers of crashed sessions and creates this
/// session's marker; [`Session::stamps`] is what writes then use.
///
/// Markers are untrusted input like everything in the cipher root: only their names are read
/// (a planted one costs extra checks, nothing else), and this session's marker is created
/// with O_EXCL|O_NOFOLLOW and mode 0600.
pub fn begin(cipher_root: &Path) -> io::Result<Session> {
    let root = CipherRoot::open(cipher_root)?;
    let prefix = format!("{VOLUME_HEADER_NAME}.{PREFIX}");
    let mut crashed = vec![];
    for name in root.names()? {
        let name = name.to_string_lossy().into_owned();
        if let Some(hex) = name.strip_prefix(&prefix) {
            if let Ok(s) = u32::from_str_radix(hex, 16) {
                crashed.push(s);
            }
        }
    }
    let stamp = loop {
        let mut b = [0u8; 4];
        crate::crypto::fill_random(&mut b);
        let s = u32::from_be_bytes(b);
        if s != 0 && s != UNSURE_STAMP && !crashed.contains(&s) {
            break s;
        }
    };
    let marker = format!("{prefix}{stamp:08x}");
    root.create_new(&marker, 0o600)?;
    root.sync()?;
    if !crashed.is_empty() {
        tracing::info!(
            sessions = crashed.len(),
            "earlier mounts ended without unmounting; blocks they wrote are checked before their first overwrite"
        );
    }
    Ok(Session {
        marker,
        root,
        stamps: WriterStamps { own: stamp, crashed },
    })
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.root.remove(&self.marker).and_then(|_| self.root.sync()) {
            tracing::warn!(marker = %self.marker, error = %e, "cannot remove the session marker; the next mount checks this session's blocks before overwriting them");
        }
    }
}
