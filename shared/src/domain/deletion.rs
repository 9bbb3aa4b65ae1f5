//! Why a function is scheduled for deletion, and how long it has left.

use chrono::{DateTime, Utc};

use super::UnknownStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeletionReason {
    /// Its owner asked (`DELETE /api/functions/:id`).
    UserRequested,
    /// The scheduler found it inactive for too long.
    StaleFunction,
    /// The scheduler reclaims it for an owner over quota.
    QuotaExceeded,
}

impl DeletionReason {
    pub const ALL: [Self; 3] = [
        Self::UserRequested,
        Self::StaleFunction,
        Self::QuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRequested => "user_requested",
            Self::StaleFunction => "stale_function",
            Self::QuotaExceeded => "quota_exceeded",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownStatus> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

/// Whole days until `deletion_date`, rounded up (a deletion due in 36 hours has 2 days left,
/// as a calendar would say), and 0 once it is due.
pub fn days_remaining(deletion_date: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let left = deletion_date - now;
    if left <= chrono::TimeDelta::zero() {
        return 0;
    }
    let day = chrono::TimeDelta::days(1);
    let whole = left.num_days();
    if left > day * i32::try_from(whole).unwrap_or(i32::MAX) {
        whole + 1
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn reasons_round_trip_through_their_names() {
        for r in DeletionReason::ALL {
            assert_eq!(DeletionReason::parse(r.as_str()), Ok(r));
        }
        assert!(DeletionReason::parse("bored").is_err());
    }

    #[test]
    fn days_remaining_rounds_up_and_stops_at_zero() {
        let now = Utc::now();
        let days = |delta: TimeDelta| days_remaining(now + delta, now);
        assert_eq!(days(TimeDelta::days(7)), 7);
        assert_eq!(days(TimeDelta::days(7) - TimeDelta::seconds(1)), 7);
        assert_eq!(days(TimeDelta::hours(36)), 2);
        assert_eq!(days(TimeDelta::seconds(1)), 1);
        assert_eq!(days(TimeDelta::zero()), 0);
        assert_eq!(days(-TimeDelta::days(3)), 0);
    }
}
