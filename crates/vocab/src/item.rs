//! Item identifiers, checked once where they enter hush.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Longest item id accepted, in bytes.
pub const MAX_ITEM_ID_BYTES: usize = 128;

/// An item id as a storefront names it: 1 to 128 bytes of UTF-8 without
/// control characters. Item ids are catalogue data, not personal data, so
/// they are kept, shown and logged as given.
///
/// The type the edges parse item ids into (catalogue rows, the API's event
/// bodies), so they all accept the same ids; deserializing one checks it too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId(String);

impl ItemId {
    /// Checks `text` and wraps a copy of it.
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming `item_id` and what is allowed.
    pub fn parse(text: &str) -> Result<Self> {
        check(text)?;
        Ok(ItemId(text.to_string()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, owned (for the types that still hold item ids as strings).
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The rule of [`ItemId`], for readers that keep the text borrowed (see
/// [`crate::event::validate_item_id`]).
pub(crate) fn check(text: &str) -> Result<()> {
    if text.is_empty() || text.len() > MAX_ITEM_ID_BYTES || crate::event::has_control_chars(text) {
        return Err(Error::InvalidField {
            field: "item_id",
            message: format!(
                "expected 1 to {MAX_ITEM_ID_BYTES} bytes without control characters, found {} bytes",
                text.len()
            ),
        });
    }
    Ok(())
}

impl TryFrom<String> for ItemId {
    type Error = Error;

    /// Checks `text` and wraps it, without copying.
    fn try_from(text: String) -> Result<Self> {
        check(&text)?;
        Ok(ItemId(text))
    }
}

impl From<ItemId> for String {
    fn from(id: ItemId) -> Self {
        id.0
    }
}

impl FromStr for ItemId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ItemId::parse(s)
    }
}

impl AsRef<str> for ItemId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ItemId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ItemId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        ItemId::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_one_to_128_bytes_without_control_characters() {
        assert_eq!(ItemId::parse("sku-1").unwrap().as_str(), "sku-1");
        assert!(ItemId::parse(&"x".repeat(128)).is_ok());
        for bad in [String::new(), "a\0b".into(), "a\nb".into(), "c1\u{85}".into(), "x".repeat(129)] {
            let err = ItemId::parse(&bad).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "invalid item_id: expected 1 to 128 bytes without control characters, found {} bytes",
                    bad.len()
                )
            );
            assert_eq!(crate::event::validate_item_id(&bad).unwrap_err().to_string(), err, "one rule");
            assert!(ItemId::try_from(bad).is_err());
        }
        assert!(ItemId::parse(&"é".repeat(65)).is_err(), "the bound is in bytes");
    }

    #[test]
    fn serde_checks_on_the_way_in() {
        let id: ItemId = serde_json::from_str("\"sku-1\"").unwrap();
        assert_eq!((id.to_string(), serde_json::to_string(&id).unwrap()), ("sku-1".into(), "\"sku-1\"".into()));
        let err = serde_json::from_str::<ItemId>("\"\"").unwrap_err().to_string();
        assert!(err.starts_with("invalid item_id: expected 1 to 128 bytes"), "{err}");
        assert_eq!(String::from(ItemId::try_from("a".to_string()).unwrap()), "a");
    }
}
