//! Integration tests of the offline flows, on files the tests generate.

mod pipeline {
    pub mod common;
    mod flows;
    mod rows;
}
