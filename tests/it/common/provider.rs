//! In-process key provider calls, for the provider modules' tests.

use cmkfs::kms::{self, ErrorKind, KeyProvider, ProviderError};

/// Opens a key provider in this process, panicking with the URI if it cannot.
pub fn open_provider(uri: &str) -> Box<dyn KeyProvider> {
    kms::open(uri).unwrap_or_else(|e| panic!("open {uri}: {e}"))
}

/// Asserts that `r` failed with `kind`, mentioning `text`, in a message that starts with
/// `names` (the provider and key, e.g. `"vault key transit/"`); returns the error.
#[track_caller]
pub fn expect_provider_err<T>(r: Result<T, ProviderError>, kind: ErrorKind, text: &str, names: &str) -> ProviderError {
    let e = match r {
        Ok(_) => panic!("expected {kind:?} containing '{text}', got success"),
        Err(e) => e,
    };
    let s = e.to_string();
    assert_eq!(e.kind, kind, "{s}");
    assert!(s.contains(text), "'{s}' does not mention '{text}'");
    assert!(s.starts_with(names), "names provider and key: {s}");
    e
}
