//! The only changes this test process makes to its own environment.
//!
//! In-process provider code reads some configuration only from the process environment:
//! a PKCS#11 module its configuration file (SoftHSM2, kryoptic), the AWS credential chain its
//! shared files. All test modules share this process and run on parallel threads, so such a
//! variable is set through [`set_process_env`] only: once, to one value for the whole run (a
//! second, different value panics), and never seen by the cmkfs commands the tests run
//! ([`super::cmkfs_command`] removes every variable named in [`IN_PROCESS_ONLY`]; a test that
//! wants one in a command passes it to that command).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::sync::Mutex;

/// The variables tests may set in this process's environment.
pub const IN_PROCESS_ONLY: &[&str] = &[
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "SOFTHSM2_CONF",
    "KRYOPTIC_CONF",
];

static SET: Mutex<BTreeMap<String, OsString>> = Mutex::new(BTreeMap::new());

/// Sets `key` (one of [`IN_PROCESS_ONLY`]) to `value` in this process's environment, once.
pub fn set_process_env(key: &str, value: impl AsRef<OsStr>) {
    let value = value.as_ref();
    assert!(
        IN_PROCESS_ONLY.contains(&key),
        "{key} is not a variable tests may set in-process (common/env.rs)"
    );
    let mut set = SET.lock().unwrap_or_else(|e| e.into_inner());
    match set.get(key) {
        Some(old) => assert_eq!(
            old, value,
            "{key} was already set to another value: one value per test process (common/env.rs)"
        ),
        None => {
            std::env::set_var(key, value);
            set.insert(key.to_string(), value.to_os_string());
        }
    }
}
