//! Storefront events: what a subject did with an item, and when.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Pseudonym, Result, Timestamp};

/// The kind of an interaction. The four storefront kinds are built in; other
/// kinds (e.g. `wishlist`, `return`) are accepted by name so a storefront can
/// add its own and weight them in the extraction config.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// The subject looked at the item.
    View,
    /// The subject put the item in the cart.
    Cart,
    /// The subject bought the item.
    Purchase,
    /// The subject rated the item; the event's value is the rating.
    Rating,
    /// Any other kind: a lowercase name of letters, digits and `_`.
    Other(String),
}

impl EventKind {
    /// The lowercase name used in files, configs and the database.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::View => "view",
            EventKind::Cart => "cart",
            EventKind::Purchase => "purchase",
            EventKind::Rating => "rating",
            EventKind::Other(name) => name,
        }
    }
}

impl FromStr for EventKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "view" => EventKind::View,
            "cart" => EventKind::Cart,
            "purchase" => EventKind::Purchase,
            "rating" => EventKind::Rating,
            other => {
                let valid = (1..=32).contains(&other.len())
                    && other.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !valid {
                    return Err(Error::InvalidEventKind(crate::time::truncate_for_message(other)));
                }
                EventKind::Other(other.to_string())
            }
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks an item identifier: 1–128 bytes, no control characters.
///
/// Item ids are catalogue data, not personal data, so they are stored as given.
/// This is the rule of [`ItemId`](crate::ItemId) without building one, for
/// readers that keep the text borrowed: the event file readers check every
/// row and hand out `&str`s, where an owned id per row would cost an allocation.
///
/// # Errors
/// [`Error::InvalidField`] for the `item_id` field.
pub fn validate_item_id(item: &str) -> Result<()> {
    crate::item::check(item)
}

/// Whether `text` holds a control character (Unicode category Cc), checked on
/// bytes: in valid UTF-8 those are the ASCII controls and the C1 range
/// U+0080..=U+009F, encoded as 0xC2 0x80..=0x9F. This runs on every input row.
pub fn has_control_chars(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().any(|(i, &b)| {
        b < 0x20 || b == 0x7f || (b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)))
    })
}

/// One interaction, without its subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The item's catalogue id.
    pub item: String,
    /// What happened.
    pub kind: EventKind,
    /// The rating for `rating` events; a quantity or 1.0 otherwise.
    pub value: f32,
    /// When it happened.
    pub at: Timestamp,
}

/// An event together with the pseudonym of the subject it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct SubjectEvent {
    /// Whose event it is.
    pub subject: Pseudonym,
    /// The event.
    pub event: Event,
    /// The source's own id of the event (an order line, a tracking id), if it
    /// has one: what makes a retried import idempotent. Without it, an
    /// identical (subject, item, kind, value, time) is the same event.
    pub event_id: Option<String>,
}

/// Checks an event id: 1–128 bytes, no control characters.
///
/// # Errors
/// [`Error::InvalidField`] for the `event_id` field.
pub fn validate_event_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || has_control_chars(id) {
        return Err(Error::InvalidField {
            field: "event_id",
            message: format!("expected 1 to 128 bytes without control characters, found {} bytes", id.len()),
        });
    }
    Ok(())
}

/// The 64-bit index key of an event id of one subject: a one-way digest of
/// the pseudonym and the id, so the index (whose interior pages may keep
/// copies of deleted keys) holds neither. Both store backends key their
/// event-id index by it.
pub fn event_key(subject: &Pseudonym, event_id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new_with_prefix(b"hush/event-key/v1\0")
        .chain_update(subject.as_bytes())
        .chain_update(event_id.as_bytes())
        .finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::has_control_chars;

    #[test]
    fn control_chars_match_char_is_control() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            assert_eq!(has_control_chars(&text), c.is_control(), "U+{:04X}", c as u32);
        }
    }
}
