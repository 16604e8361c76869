//! cmkfs: an encrypted FUSE filesystem with customer-managed keys.
//!
//! Where to find things (one concern per module, the data path readable top to bottom):
//!
//! - [`access`]: the Available/Inaccessible gate every filesystem operation passes.
//! - [`audit`]: the hash-chained audit log of key operations and state changes.
//! - [`crypto`]: AES-256-GCM, HKDF-SHA256, HMAC, randomness, zeroizing key type, RSA-OAEP
//!   (aws-lc-rs).
//! - [`format`]: the on-disk format (volume header, file header, block layout); the code
//!   version of docs/FORMAT.md.
//! - [`kms`]: key services: the [`kms::KeyProvider`] trait and the providers that hold KEKs
//!   (the local key store behind `local:` is [`kms::local::store`]).
//! - [`volume`]: creating a volume and unlocking it with a KEK.
//! - [`fs`]: the FUSE filesystem (inodes, handles, the encrypted data path).
//! - [`fsck`]: offline/online verification of every header, block and xattr.
//! - [`revalidation`]: checks the KEK every interval; revokes and restores access.
//! - [`control`]: the control socket a mounted volume answers `status` on.
//! - [`mount`]: mounting, daemonizing, unmounting.
//! - [`cli`]: command-line flags, defined in one place.

#![warn(missing_docs)]

pub mod access;
pub mod audit;
pub mod cli;
pub mod control;
pub mod crypto;
pub mod format;
pub mod fs;
pub mod fsck;
pub mod kms;
pub mod mount;
pub mod revalidation;
pub mod util;
pub mod volume;
