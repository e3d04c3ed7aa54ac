//! The consent rule: which of a subject's decisions on one purpose is in
//! force at a given time. Both store backends and the training extractor
//! answer through these functions, so they cannot disagree.
//!
//! # The rule
//!
//! - **The latest decision wins.** Decisions are ordered by when hush
//!   *recorded* them (the ledger sequence number), never by the
//!   `effective_at` a client sent: at any time, the decision recorded last
//!   among those in force then decides.
//! - **A withdrawal is in force from the moment it is recorded**, whatever
//!   `effective_at` says. An earlier `effective_at` widens it into the past
//!   (it also covers snapshots from that time on); a later one cannot delay it.
//! - **A grant is in force from the moment it is recorded** (or from its
//!   `effective_at`, when that is slightly later, within the clock skew).
//!   A backdated grant also covers earlier times, but only times at which no
//!   other decision was in force: it lets a first import of a consent
//!   platform's history count for past snapshots, and it can never undo a
//!   withdrawal that was in force.
//! - **No decision may be dated in the future** beyond
//!   [`MAX_CLOCK_SKEW_MS`] past the moment it is recorded, nor before the
//!   unix epoch (see [`check_effective_at`]).
//!
//! - **Recorded means in force for the present, whatever the clocks.** A
//!   question about the present (a time no earlier than [`MAX_CLOCK_SKEW_MS`]
//!   before the asker's clock) is answered at the later of that time and the
//!   latest moment any of the subject's decisions was recorded
//!   ([`query_time`]). A withdrawal recorded by a process whose clock runs
//!   ahead (another replica, the CLI on another machine), or before the host
//!   clock stepped back, is in force for every check that starts after it
//!   was acknowledged. Questions about the past (a training snapshot, an
//!   audit) are answered at the time asked.
//!
//! Once some decision is in force it stays in force, so a subject who has
//! decided anything never goes back to having no record.

use serde::Serialize;

use crate::{Error, Result, Timestamp};

/// Whether a purpose is granted, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// The last decision at the asked time was a grant.
    Granted,
    /// The last decision at the asked time was a withdrawal.
    Withdrawn,
    /// There was no decision at or before the asked time.
    NoRecord,
}

/// How far in the future a decision's `effective_at` may lie, in
/// milliseconds past the moment it is recorded: five minutes, room for a
/// storefront whose clock runs a little ahead of hush's, too little to
/// schedule a grant that would outlive a later withdrawal.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

/// One recorded decision on one purpose, as the rule needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Ledger sequence number: the order decisions were recorded in.
    pub seq: i64,
    /// `true` for a grant, `false` for a withdrawal.
    pub granted: bool,
    /// When the decision says it takes effect.
    pub effective_at: Timestamp,
    /// When hush recorded it.
    pub recorded_at: Timestamp,
}

impl Decision {
    /// The moment from which this decision is in force whatever else the
    /// ledger holds: a withdrawal from the earlier of its two times, a grant
    /// from the later.
    pub fn in_force_from(&self) -> Timestamp {
        if self.granted {
            self.effective_at.max(self.recorded_at)
        } else {
            self.effective_at.min(self.recorded_at)
        }
    }
}

/// Checks that a decision recorded at `recorded_at` may carry `effective_at`:
/// not before the unix epoch, and at most [`MAX_CLOCK_SKEW_MS`] after `recorded_at`.
///
/// # Errors
/// [`Error::InvalidField`] naming `effective_at` and the allowed range.
pub fn check_effective_at(effective_at: Timestamp, recorded_at: Timestamp) -> Result<()> {
    let latest = Timestamp::from_unix_millis(recorded_at.as_unix_millis().saturating_add(MAX_CLOCK_SKEW_MS));
    if effective_at > latest {
        return Err(Error::InvalidField {
            field: "effective_at",
            message: format!(
                "{effective_at} is in the future; a decision may take effect at most {} minutes after it is \
                 recorded (now {recorded_at})",
                MAX_CLOCK_SKEW_MS / 60_000
            ),
        });
    }
    if effective_at.as_unix_millis() < 0 {
        return Err(Error::InvalidField {
            field: "effective_at",
            message: format!("{effective_at} is before 1970-01-01T00:00:00Z; expected a real time of decision"),
        });
    }
    Ok(())
}

/// The time at which a question about `as_of`, asked when the asker's clock
/// reads `now`, is answered: `as_of` itself for the past, and for the
/// present the later of `as_of` and the latest `recorded_at` among
/// `decisions`, so that every recorded decision counts whatever the clocks
/// of the process that recorded it and of the one asking say.
pub fn query_time(decisions: &[Decision], as_of: Timestamp, now: Timestamp) -> Timestamp {
    let present_from = Timestamp::from_unix_millis(now.as_unix_millis().saturating_sub(MAX_CLOCK_SKEW_MS));
    if as_of < present_from {
        return as_of;
    }
    decisions.iter().map(|d| d.recorded_at).fold(as_of, Timestamp::max)
}

/// The index in `decisions` of the decision in force at `at`, if any.
///
/// The decision recorded last among those in force from `at` or earlier
/// ([`Decision::in_force_from`]); when there is none, the grant recorded
/// last among backdated grants effective at or before `at`.
pub fn deciding(decisions: &[Decision], at: Timestamp) -> Option<usize> {
    let last = |covers: &dyn Fn(&Decision) -> bool| {
        decisions.iter().enumerate().filter(|(_, d)| covers(d)).max_by_key(|(_, d)| d.seq).map(|(i, _)| i)
    };
    last(&|d| d.in_force_from() <= at).or_else(|| last(&|d| d.granted && d.effective_at <= at))
}

/// The consent state at `at` under the rule.
pub fn state_at(decisions: &[Decision], at: Timestamp) -> ConsentState {
    match deciding(decisions, at) {
        Some(i) if decisions[i].granted => ConsentState::Granted,
        Some(_) => ConsentState::Withdrawn,
        None => ConsentState::NoRecord,
    }
}

/// When the unbroken grant in force at `at` began: the earliest time from
/// which the state is granted all the way to `at`; `None` unless granted at `at`.
pub fn granted_since(decisions: &[Decision], at: Timestamp) -> Option<Timestamp> {
    if state_at(decisions, at) != ConsentState::Granted {
        return None;
    }
    // The state can change only at these moments.
    let mut changes: Vec<Timestamp> =
        decisions.iter().flat_map(|d| [d.in_force_from(), d.effective_at]).filter(|&t| t <= at).collect();
    changes.sort_unstable();
    changes.dedup();
    let mut start = *changes.last().expect("granted at `at` means some decision is in force by then");
    for &t in changes.iter().rev().skip(1) {
        if state_at(decisions, t) != ConsentState::Granted {
            break;
        }
        start = t;
    }
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seq: i64, granted: bool, effective_at: i64, recorded_at: i64) -> Decision {
        Decision {
            seq,
            granted,
            effective_at: Timestamp::from_unix_seconds(effective_at),
            recorded_at: Timestamp::from_unix_seconds(recorded_at),
        }
    }

    fn at(decisions: &[Decision], s: i64) -> ConsentState {
        state_at(decisions, Timestamp::from_unix_seconds(s))
    }

    #[test]
    fn a_backdated_withdrawal_wins_over_an_earlier_grant() {
        let ledger = [d(1, true, 100, 100), d(2, false, 50, 200)];
        assert_eq!(at(&ledger, 49), ConsentState::NoRecord);
        assert_eq!(at(&ledger, 50), ConsentState::Withdrawn);
        assert_eq!(at(&ledger, 150), ConsentState::Withdrawn);
        assert_eq!(at(&ledger, 250), ConsentState::Withdrawn);
    }

    #[test]
    fn a_future_dated_grant_does_not_outlive_a_later_withdrawal() {
        let ledger = [d(1, true, 100, 100), d(2, true, 103, 100), d(3, false, 100, 100)];
        for s in [100, 103, 104, 1000] {
            assert_eq!(at(&ledger, s), ConsentState::Withdrawn, "at {s}");
        }
    }

    #[test]
    fn a_backdated_grant_covers_only_times_nothing_else_covers() {
        let ledger = [d(1, false, 100, 100), d(2, true, 50, 300)];
        assert_eq!(at(&ledger, 49), ConsentState::NoRecord);
        assert_eq!(at(&ledger, 70), ConsentState::Granted);
        assert_eq!(at(&ledger, 150), ConsentState::Withdrawn);
        assert_eq!(at(&ledger, 300), ConsentState::Granted);
        let t = Timestamp::from_unix_seconds;
        assert_eq!(granted_since(&ledger, t(70)), Some(t(50)));
        assert_eq!(granted_since(&ledger, t(400)), Some(t(300)));
        assert_eq!(granted_since(&ledger, t(150)), None);
    }

    #[test]
    fn the_future_is_refused_beyond_the_skew_and_so_is_before_the_epoch() {
        let now = Timestamp::from_unix_seconds(1_000_000);
        let ms = |m: i64| Timestamp::from_unix_millis(now.as_unix_millis() + m);
        assert!(check_effective_at(ms(MAX_CLOCK_SKEW_MS), now).is_ok());
        let err = check_effective_at(ms(MAX_CLOCK_SKEW_MS + 1), now).unwrap_err().to_string();
        assert!(err.starts_with("invalid effective_at: ") && err.contains("at most 5 minutes"), "{err}");
        assert!(check_effective_at(Timestamp::from_unix_seconds(0), now).is_ok());
        assert!(check_effective_at(Timestamp::MIN, now).is_err());
        assert!(check_effective_at(Timestamp::MAX, now).is_err());
    }
}
