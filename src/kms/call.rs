//! Every call into a provider runs here: on its own thread, with a deadline, and with its
//! panics caught.
//!
//! Providers talk to tokens, TPMs, servers and programs that can hang or misbehave. The caller
//! (a mount, the revalidation loop) must get an answer in bounded time whatever the provider
//! does, so that a hung provider counts as *unreachable* and revocation still happens. A call
//! that outlives its deadline is left to finish on its own thread; `in_flight`, when given,
//! makes the next call fail fast instead of piling up threads, and is reset when the call
//! ends, also by a panic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::{ErrorKind, ProviderError};

/// Resets the in-flight flag when dropped: at the end of the call, panic or not.
struct Reset(Option<Arc<AtomicBool>>);

impl Drop for Reset {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.store(false, Ordering::SeqCst);
        }
    }
}

/// Runs `f` with a deadline. `provider` and `key` name the call in errors.
pub fn with_deadline<T: Send + 'static>(
    provider: &str,
    key: &str,
    timeout: Duration,
    in_flight: Option<&Arc<AtomicBool>>,
    f: impl FnOnce() -> Result<T, ProviderError> + Send + 'static,
) -> Result<T, ProviderError> {
    let unreachable = |m: String| ProviderError::new(ErrorKind::Unreachable, provider, key, m);
    if let Some(flag) = in_flight {
        if flag.swap(true, Ordering::SeqCst) {
            return Err(unreachable(
                "the previous call to the provider has not returned yet".into(),
            ));
        }
    }
    let reset = Reset(in_flight.cloned());
    let (tx, rx) = mpsc::channel();
    let (p, k) = (provider.to_string(), key.to_string());
    let spawned = std::thread::Builder::new()
        .name("cmkfs-provider-call".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
                Err(ProviderError::new(
                    ErrorKind::Unreachable,
                    &p,
                    &k,
                    "the provider call panicked (a bug in cmkfs or the provider library); see the log",
                ))
            });
            // The call is over: clear the flag before answering, so the caller's next call
            // never sees it still set.
            drop(reset);
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        // The closure (and with it the reset guard) was dropped: the flag is clear again.
        return Err(unreachable(format!("cannot start provider call: {e}")));
    }
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(unreachable(format!(
            "the provider did not answer within {timeout:?}; is the token, TPM, program or server responsive?"
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(unreachable("the provider call ended without an answer".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_panic_and_in_flight() {
        let flag = Arc::new(AtomicBool::new(false));
        let t0 = std::time::Instant::now();
        let (tx, rx) = mpsc::channel::<()>();
        let r: Result<(), _> = with_deadline("p", "k", Duration::from_millis(100), Some(&flag), move || {
            let _ = rx.recv();
            Ok(())
        });
        assert_eq!(r.unwrap_err().kind, ErrorKind::Unreachable);
        assert!(t0.elapsed() < Duration::from_secs(2));
        // Still hanging: the next call fails fast.
        let r: Result<(), _> = with_deadline("p", "k", Duration::from_secs(5), Some(&flag), || Ok(()));
        assert!(r.unwrap_err().message.contains("has not returned"));
        drop(tx);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while flag.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!flag.load(Ordering::SeqCst));
        // A panic is an error, and clears the flag.
        let r: Result<(), _> = with_deadline("p", "k", Duration::from_secs(5), Some(&flag), || panic!("boom"));
        assert!(r.unwrap_err().message.contains("panicked"));
        assert!(!flag.load(Ordering::SeqCst));
        assert_eq!(
            with_deadline("p", "k", Duration::from_secs(5), Some(&flag), || Ok(7)).unwrap(),
            7
        );
    }
}
