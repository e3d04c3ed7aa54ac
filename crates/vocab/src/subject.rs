//! External subject identifiers, checked once at the edge.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Pseudonym, PseudonymKey, Result};

/// Longest external subject id accepted, in bytes.
pub const MAX_SUBJECT_ID_BYTES: usize = 256;

/// An external subject id as a storefront sends it: 1 to 256 bytes of UTF-8
/// without control characters. The one type the API, the CLI and the
/// importers parse subject ids into, so all three accept the same ids and a
/// `a%00b` or a newline cannot become a subject in one of them only.
///
/// `Debug` and `Display` never show the id itself: it is personal data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SubjectId(String);

impl SubjectId {
    /// Checks `text` and wraps it.
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming `subject_id` and what is allowed (never the id).
    pub fn parse(text: &str) -> Result<Self> {
        check(text).map_err(|message| Error::InvalidField { field: "subject_id", message: message.into() })?;
        Ok(SubjectId(text.to_string()))
    }

    /// The id's text, to pseudonymize.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject's pseudonym under `key`.
    pub fn pseudonymize(&self, key: &PseudonymKey) -> Pseudonym {
        key.pseudonymize(&self.0)
    }
}

/// The rule of [`SubjectId`], for readers that report errors their own way
/// (the file readers, which name the row and the column).
///
/// # Errors
/// What is allowed, when `text` breaks the rule (never the id itself).
pub fn check(text: &str) -> std::result::Result<(), &'static str> {
    if text.is_empty() || text.len() > MAX_SUBJECT_ID_BYTES || crate::event::has_control_chars(text) {
        return Err("expected a subject id of 1 to 256 bytes without control characters");
    }
    Ok(())
}

impl FromStr for SubjectId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SubjectId::parse(s)
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectId({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_long_ids_are_refused() {
        assert_eq!(SubjectId::parse("cust-42").unwrap().as_str(), "cust-42");
        assert!(SubjectId::parse(&"x".repeat(256)).is_ok());
        for bad in ["", "a\0b", "a\nb", "tab\there", "c1\u{85}", "del\u{7f}"] {
            let err = SubjectId::parse(bad).unwrap_err().to_string();
            assert_eq!(err, "invalid subject_id: expected a subject id of 1 to 256 bytes without control characters");
        }
        assert!(SubjectId::parse(&"x".repeat(257)).is_err());
        assert!(SubjectId::parse(&"é".repeat(129)).is_err(), "the bound is in bytes");
        assert_eq!(format!("{:?}", SubjectId::parse("secret").unwrap()), "SubjectId(6 bytes)");
    }
}
