//! What a key check means for the volume: the revalidation state machine, pure (no clock,
//! no threads, no provider), so every transition is unit-tested. The checker
//! ([`super::Checker`]) gathers the facts, asks [`decide`], and carries the decision out.
//!
//! ```text
//!                 same key                     other key / denied / grace over
//!   Available ─────────────► Available   Available ──────────────────────────► Inaccessible
//!   Available ─ unreachable, in grace ─► Available (note: time left)
//!   Inaccessible ─ key unwraps ─► Available (after the header authenticates)
//!   Inaccessible ─ any failure ─► Inaccessible
//!   any ─ no check completed within interval + timeout + 1 s ─► Inaccessible (watchdog)
//! ```

use std::time::Duration;

/// What one check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The KEK unwrapped the volume key the mount holds (or, while Inaccessible, some key:
    /// the header decides whether it is the volume's).
    Unwrapped {
        /// While Available: the unwrapped key differs from the mounted one.
        other_key: bool,
    },
    /// The provider refused (denied, disabled, deleted, misconfigured).
    Refused,
    /// The provider could not be reached, for `for_how_long` counting from the first
    /// unreachable check in a row.
    Unreachable {
        /// Since the first of the consecutive unreachable checks.
        for_how_long: Duration,
    },
}

/// What to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changes.
    Keep,
    /// Still Available while the provider is unreachable; `left` of the grace period remains.
    InGrace {
        /// Grace left.
        left: Duration,
    },
    /// Make the volume Inaccessible.
    Revoke(Why),
    /// Make the volume Available again.
    Restore,
}

/// Why a check revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The KEK unwrapped a different volume key than the mounted one.
    OtherKey,
    /// The provider refused.
    Refused,
    /// Unreachable for longer than the grace period.
    GraceOver,
}

/// The decision for a check's `outcome` on a volume that is `available` (or not), with
/// `grace` for an unreachable provider.
pub fn decide(available: bool, outcome: Outcome, grace: Duration) -> Decision {
    match (outcome, available) {
        (Outcome::Unwrapped { other_key: true }, true) => Decision::Revoke(Why::OtherKey),
        (Outcome::Unwrapped { .. }, true) => Decision::Keep,
        (Outcome::Unwrapped { .. }, false) => Decision::Restore,
        (Outcome::Refused, _) => Decision::Revoke(Why::Refused),
        (Outcome::Unreachable { for_how_long }, _) if for_how_long >= grace => Decision::Revoke(Why::GraceOver),
        (Outcome::Unreachable { for_how_long }, true) => Decision::InGrace {
            left: grace - for_how_long,
        },
        (Outcome::Unreachable { .. }, false) => Decision::Keep,
    }
}

/// The longest time between two completed checks before the watchdog makes the volume
/// Inaccessible: a check may take the provider timeout, and starts an interval after the
/// last one; one second of slack.
pub fn watchdog_limit(interval: Duration, timeout: Duration) -> Duration {
    interval + timeout + Duration::from_secs(1)
}

/// True when the watchdog must revoke: `since` the last completed check exceeds the limit
/// while the volume is still Available.
pub fn watchdog_fires(available: bool, since: Duration, limit: Duration) -> bool {
    available && since > limit
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    #[test]
    fn every_transition() {
        use Decision::*;
        let ok = Outcome::Unwrapped { other_key: false };
        let other = Outcome::Unwrapped { other_key: true };
        let unreachable = |s| Outcome::Unreachable {
            for_how_long: Duration::from_secs(s),
        };
        assert_eq!(decide(true, ok, GRACE), Keep);
        assert_eq!(decide(false, ok, GRACE), Restore);
        assert_eq!(decide(true, other, GRACE), Revoke(Why::OtherKey));
        assert_eq!(
            decide(false, other, GRACE),
            Restore,
            "the header decides while Inaccessible"
        );
        assert_eq!(decide(true, Outcome::Refused, GRACE), Revoke(Why::Refused));
        assert_eq!(decide(false, Outcome::Refused, GRACE), Revoke(Why::Refused));
        assert_eq!(
            decide(true, unreachable(0), GRACE),
            InGrace {
                left: Duration::from_secs(60)
            }
        );
        assert_eq!(
            decide(true, unreachable(59), GRACE),
            InGrace {
                left: Duration::from_secs(1)
            }
        );
        assert_eq!(decide(true, unreachable(60), GRACE), Revoke(Why::GraceOver));
        assert_eq!(decide(false, unreachable(5), GRACE), Keep);
        assert_eq!(decide(false, unreachable(600), GRACE), Revoke(Why::GraceOver));
        // No grace at all: the first unreachable check revokes.
        assert_eq!(decide(true, unreachable(0), Duration::ZERO), Revoke(Why::GraceOver));
    }

    #[test]
    fn watchdog() {
        let limit = watchdog_limit(Duration::from_secs(2), Duration::from_secs(3));
        assert_eq!(limit, Duration::from_secs(6));
        assert!(!watchdog_fires(true, Duration::from_secs(6), limit));
        assert!(watchdog_fires(true, Duration::from_millis(6001), limit));
        assert!(
            !watchdog_fires(false, Duration::from_secs(100), limit),
            "already Inaccessible"
        );
    }
}
