//! cmkfs: an encrypted FUSE filesystem with customer-managed keys.
//!
//! The `cmkfs` binary (`src/bin/cmkfs/`) only parses flags, calls this library and prints.
//!
//! Where to find things (one concern per module, the data path readable top to bottom):
//!
//! - [`access`]: the Available/Inaccessible gate every filesystem operation passes.
//! - [`audit`]: the hash-chained audit log of key operations and state changes.
//! - [`config`]: every `CMKFS_*` environment knob, read once.
//! - [`crypto`]: AES-256-GCM, HKDF-SHA256, HMAC, randomness, zeroizing key type, RSA-OAEP
//!   (aws-lc-rs).
//! - [`format`](mod@format): the on-disk format (volume header, file header, block layout); the code
//!   version of docs/FORMAT.md. Pure: no I/O.
//! - [`store`]: block I/O of the format's layout plans, writer session stamps, rekey
//!   journals.
//! - [`kms`]: key services: the [`kms::KeyProvider`] trait and the providers that hold KEKs
//!   (the local key store behind `local:` is [`kms::local::store`]).
//! - [`volume`]: creating a volume and unlocking it with a KEK; keyslots and their rules;
//!   mount settings (command line over configuration over defaults).
//! - [`fs`]: the FUSE filesystem (inodes, handles, the encrypted data path).
//! - [`fsck`]: offline/online verification of every header, block and xattr.
//! - [`daemon`]: the mount daemon: mounting and daemonizing, the key check loop
//!   (revalidation: revokes and restores access), the control socket.
//! - [`sys`]: safe system call wrappers (rustix), the mount table, process hardening.

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod access;
pub mod audit;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod kms;
pub mod store;
pub mod sys;
pub mod util;
pub mod volume;
