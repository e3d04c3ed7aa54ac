//! hush's end-to-end tests, in one test binary (one link instead of one
//! per file): the built `hush` binary run on real files, real servers on
//! 127.0.0.1 with a real HTTP client, a real SQLite file and a throwaway
//! PostgreSQL cluster. `cargo test --test integration MODULE::` runs one
//! file's tests, e.g. `readme::`.

mod common;

mod cli;
mod crash;
mod readme;
mod replicas;
mod sweep;
