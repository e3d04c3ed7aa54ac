//! Catalogue items: the public item universe released models use, with the
//! titles and categories that serving shows. The store keeps them beside the
//! ledger (`hush-consent`); the file readers (`hush-formats`) produce them.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::has_control_chars;
use crate::{Error, ItemId, Result};

/// Longest title accepted, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;
/// Longest category accepted, in bytes.
pub const MAX_CATEGORY_BYTES: usize = 128;

/// One item of the catalogue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogueItem {
    /// The item id, as events and models name it.
    pub id: String,
    /// The title shown to people, if the catalogue has one.
    pub title: Option<String>,
    /// The item's category (one per item), if the catalogue has one.
    pub category: Option<String>,
    /// Every other column or key of the input row, kept as JSON (values of a
    /// CSV row are strings; a JSONL row keeps its JSON values).
    pub attributes: Map<String, Value>,
}

impl CatalogueItem {
    /// The attributes as the canonical JSON text the store keeps (keys sorted).
    pub fn attributes_json(&self) -> String {
        Value::Object(self.attributes.clone()).to_string()
    }

    /// Checks the rules every stored item obeys: an id as events have it (an
    /// [`ItemId`]), a title of at most [`MAX_TITLE_BYTES`] and a category of
    /// at most [`MAX_CATEGORY_BYTES`] without control characters or commas
    /// (the API's category filters are comma-separated lists).
    ///
    /// # Errors
    /// [`Error::InvalidField`] naming the field and the allowed form.
    pub fn validate(&self) -> Result<()> {
        ItemId::parse(&self.id)?;
        if let Some(title) = &self.title {
            if title.len() > MAX_TITLE_BYTES || has_control_chars(title) {
                return Err(Error::InvalidField {
                    field: "title",
                    message: format!(
                        "expected at most {MAX_TITLE_BYTES} bytes without control characters, found {} bytes",
                        title.len()
                    ),
                });
            }
        }
        if let Some(category) = &self.category {
            validate_category(category)?;
        }
        Ok(())
    }
}

/// Checks one category name: 1 to [`MAX_CATEGORY_BYTES`] bytes, no control
/// characters, no comma.
///
/// # Errors
/// [`Error::InvalidField`] for `category`, saying what is allowed.
pub fn validate_category(category: &str) -> Result<()> {
    if category.is_empty()
        || category.len() > MAX_CATEGORY_BYTES
        || has_control_chars(category)
        || category.contains(',')
    {
        return Err(Error::InvalidField {
            field: "category",
            message: format!(
                "expected 1 to {MAX_CATEGORY_BYTES} bytes without control characters or commas, found {} bytes",
                category.len()
            ),
        });
    }
    Ok(())
}
