//! Integration tests of `hush-consent`: one binary, one module per concern.

mod formats;
mod ledger;
