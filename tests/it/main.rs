//! Integration tests: the real binary, a real SQLite file or PostgreSQL schema,
//! and processor fakes that answer like the real APIs.

mod bad_input;
mod connectors_all;
mod connectors_fakes;
mod connectors_specific;
mod connectors_suite;
mod fakes;
mod helpers;
mod lease;
mod mailchimp;
mod store_concurrent_apply;
mod store_conformance;
