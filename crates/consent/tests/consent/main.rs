//! Integration tests of `hush-consent`: one binary, one module per concern.

mod budget;
mod formats;
mod ledger;
