//! Consent purposes and records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Timestamp};

/// What a subject consents to. Each purpose is granted and withdrawn on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Being scored and shown personalized recommendations.
    Personalization,
    /// Having one's events used to train the shared model.
    Training,
}

impl Purpose {
    /// Every purpose, in a stable order.
    pub const ALL: [Purpose; 2] = [Purpose::Personalization, Purpose::Training];

    /// The lowercase name used in files, the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Personalization => "personalization",
            Purpose::Training => "training",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Purpose {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "personalization" => Ok(Purpose::Personalization),
            "training" => Ok(Purpose::Training),
            other => Err(Error::UnknownPurpose(crate::time::truncate_for_message(other))),
        }
    }
}

/// Through which channel a consent record arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentSource {
    /// The HTTP API (a storefront relaying its consent banner).
    Api,
    /// An operator at the command line.
    Cli,
    /// A bulk import file.
    Import,
}

impl ConsentSource {
    /// The lowercase name used in files and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Api => "api",
            ConsentSource::Cli => "cli",
            ConsentSource::Import => "import",
        }
    }
}

impl FromStr for ConsentSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "api" => Ok(ConsentSource::Api),
            "cli" => Ok(ConsentSource::Cli),
            "import" => Ok(ConsentSource::Import),
            other => Err(Error::UnknownSource(crate::time::truncate_for_message(other))),
        }
    }
}

/// A consent decision to be recorded: a grant or a withdrawal of one purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChange {
    /// The purpose decided on.
    pub purpose: Purpose,
    /// `true` for a grant, `false` for a withdrawal.
    pub granted: bool,
    /// When the decision takes effect.
    pub effective_at: Timestamp,
    /// Through which channel it arrived.
    pub source: ConsentSource,
    /// Version of the notice the subject was shown (what they agreed to).
    pub notice_version: String,
    /// Optional reference to proof, e.g. the consent banner's receipt id.
    pub proof_ref: Option<String>,
}

impl ConsentChange {
    /// Checks the free-text fields: the notice version is required (1–64
    /// printable characters) and a proof reference, when given, is 1–256.
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming the field.
    pub fn validate(&self) -> Result<()> {
        check_text("notice_version", &self.notice_version, 64)?;
        if let Some(proof) = &self.proof_ref {
            check_text("proof_ref", proof, 256)?;
        }
        Ok(())
    }

    /// [`ConsentChange::validate`], plus the rule's bounds on `effective_at`
    /// for a decision recorded at `recorded_at` ([`crate::rule::check_effective_at`]).
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming the field.
    pub fn validate_at(&self, recorded_at: Timestamp) -> Result<()> {
        self.validate()?;
        crate::rule::check_effective_at(self.effective_at, recorded_at)
    }
}

/// What a withdrawal recorded without a notice version stores as one.
pub const NO_NOTICE: &str = "none";

/// The notice version to record for a decision, the same rule for the API
/// and the CLI: a grant must name the notice the subject saw (what they
/// agreed to is part of the proof of consent, GDPR Art. 7(1)); a withdrawal
/// needs none (withdrawing must be as easy as granting, Art. 7(3)) and is
/// recorded with [`NO_NOTICE`] when none is given.
///
/// # Errors
/// [`Error::InvalidField`] for a grant without a notice version.
pub fn notice_for(granted: bool, notice_version: Option<String>) -> Result<String> {
    match notice_version {
        Some(version) => Ok(version),
        None if granted => Err(Error::InvalidField {
            field: "notice_version",
            message: "a grant must name the version of the notice the subject saw (part of the proof of consent)"
                .into(),
        }),
        None => Ok(NO_NOTICE.to_string()),
    }
}

fn check_text(field: &'static str, text: &str, max_chars: usize) -> Result<()> {
    let count = text.chars().count();
    if count == 0 || count > max_chars || text.chars().any(char::is_control) {
        return Err(Error::InvalidField {
            field,
            message: format!("expected 1 to {max_chars} printable characters, found {count}"),
        });
    }
    Ok(())
}

/// A stored consent record: the decision plus when hush recorded it.
///
/// Records are append-only; together they are the evidence that consent was
/// given (GDPR Art. 7(1)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// Ledger sequence number: the order decisions were recorded in (the later one wins, see [`crate::rule`]).
    pub seq: i64,
    /// The purpose decided on.
    pub purpose: Purpose,
    /// `true` for a grant, `false` for a withdrawal.
    pub granted: bool,
    /// When the decision takes effect.
    pub effective_at: Timestamp,
    /// When hush wrote it down.
    pub recorded_at: Timestamp,
    /// Through which channel it arrived.
    pub source: ConsentSource,
    /// Version of the notice the subject was shown.
    pub notice_version: String,
    /// Optional reference to proof.
    pub proof_ref: Option<String>,
}

impl ConsentRecord {
    /// What the consent rule needs of this record.
    pub fn decision(&self) -> crate::Decision {
        crate::Decision {
            seq: self.seq,
            granted: self.granted,
            effective_at: self.effective_at,
            recorded_at: self.recorded_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip_and_unknown_is_named() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>().unwrap(), p);
        }
        assert_eq!(
            "marketing".parse::<Purpose>().unwrap_err().to_string(),
            "unknown purpose `marketing`: expected one of personalization, training"
        );
    }

    #[test]
    fn grants_need_a_notice_and_withdrawals_do_not() {
        assert!(notice_for(true, None).unwrap_err().to_string().contains("notice_version"));
        assert_eq!(notice_for(false, None).unwrap(), NO_NOTICE);
        assert_eq!(notice_for(true, Some("2025-04".into())).unwrap(), "2025-04");
    }

    #[test]
    fn notice_version_is_required() {
        let change = ConsentChange {
            purpose: Purpose::Training,
            granted: true,
            effective_at: Timestamp::from_unix_seconds(0),
            source: ConsentSource::Cli,
            notice_version: String::new(),
            proof_ref: None,
        };
        assert_eq!(
            change.validate().unwrap_err().to_string(),
            "invalid notice_version: expected 1 to 64 printable characters, found 0"
        );
    }
}
