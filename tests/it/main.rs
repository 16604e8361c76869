//! The cmkfs integration tests: one test binary, one module per area, real key stores, real
//! volumes and real FUSE mounts through the cmkfs binary. `cargo test --test it MODULE::`
//! runs one area (e.g. `cargo test --all-features --test it attacks::`).
//!
//! Every module shares this process and runs its tests on parallel threads, so none of them
//! may change process-wide state (current directory, umask, signal dispositions) and the
//! environment is changed only through [`common::set_process_env`]; per-command environment
//! goes to the `Command` (see [`common::cmkfs_command`] and [`common::Vol::env`]).
//!
//! System calls go through rustix or `cmkfs::sys` where a safe call exists; the few `unsafe`
//! blocks left (mmap, wait4 with rusage, posix_fallocate, `pre_exec`) each say why they are
//! sound, which the lint below enforces, as in the library.
#![deny(clippy::undocumented_unsafe_blocks)]

mod common;

mod attacks;
mod bad_input;
mod cli;
mod databases;
mod deploy;
mod enospc;
mod format_claims;
mod fs_semantics;
mod fsck;
mod golden;
mod provider_awskms;
mod provider_exec;
mod provider_hygiene;
mod provider_pkcs11;
mod provider_tpm;
mod provider_vault;
mod rekey;
mod revocation;
mod torn_writes;
