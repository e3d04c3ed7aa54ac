//! Integration tests of `hush-consent`: one binary, one module per concern.

mod backends;
mod budget;
mod catalogue;
mod ledger;
mod schema;
mod tls;
