//! Points in time, as hush stores them: unix milliseconds, UTC.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A point in time: milliseconds since the unix epoch, UTC.
///
/// Text forms: RFC 3339 (`2026-01-31T12:00:00Z`, any offset) or an integer of
/// unix *seconds*, the form MovieLens and most storefront exports use.
/// Serialized as RFC 3339 so exports and reports are readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable time; useful as an "everything" lower bound.
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    /// The latest representable time.
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    /// A timestamp from unix milliseconds.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// A timestamp from unix seconds (saturating at the representable range).
    pub const fn from_unix_seconds(s: i64) -> Self {
        Timestamp(s.saturating_mul(1000))
    }

    /// Unix milliseconds.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// Unix seconds, rounded towards negative infinity.
    pub const fn as_unix_seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// This time shifted by a (possibly negative) number of days, saturating.
    pub fn plus_days(self, days: i64) -> Self {
        Timestamp(self.0.saturating_add(days.saturating_mul(86_400_000)))
    }

    /// Parses RFC 3339 or integer unix seconds.
    ///
    /// # Errors
    /// [`Error::InvalidTimestamp`] naming the text when it is neither form.
    pub fn parse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        if let Ok(seconds) = trimmed.parse::<i64>() {
            return Ok(Timestamp::from_unix_seconds(seconds));
        }
        DateTime::parse_from_rfc3339(trimmed)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|_| Error::InvalidTimestamp(truncate_for_message(trimmed)))
    }

    /// RFC 3339 in UTC with millisecond precision when needed.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => self.0.to_string(),
        }
    }
}

/// Keeps error messages short when a whole garbage line lands in one field:
/// the first 40 characters of `text`, and `…` when there were more.
pub fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl std::str::FromStr for Timestamp {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Seconds(i64),
            Text(String),
        }
        match Either::deserialize(deserializer)? {
            Either::Seconds(s) => Ok(Timestamp::from_unix_seconds(s)),
            Either::Text(t) => Timestamp::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(Timestamp::parse("964982703").unwrap().as_unix_seconds(), 964_982_703);
        let t = Timestamp::parse("2026-01-31T12:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-31T11:00:00Z");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()).unwrap(), t);
    }

    #[test]
    fn rejects_garbage_with_the_text() {
        let err = Timestamp::parse("yesterday").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid timestamp `yesterday`: expected RFC 3339 (e.g. 2026-01-31T12:00:00Z) or integer unix seconds"
        );
    }
}
