//! Integration tests of `hush-consent`: one binary, one module per concern.

mod backends;
mod budget;
mod catalogue;
mod formats;
mod ledger;
mod parquet;
mod schema;
mod tls;
