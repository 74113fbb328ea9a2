//! Integration tests: the real binary, a real SQLite file or PostgreSQL schema,
//! and processor fakes that answer like the real APIs.

mod bad_input;
mod fakes;
mod helpers;
mod lease;
mod mailchimp;
mod manual;
mod s3;
mod s3_server;
mod store_conformance;
