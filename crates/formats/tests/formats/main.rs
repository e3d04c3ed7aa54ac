//! Integration tests of `hush-formats`: one binary, one module per concern.

mod catalogue;
mod events;
mod parquet;
