//! Integration tests: the real binary, a real SQLite file or PostgreSQL schema,
//! and processor fakes that answer like the real APIs.

mod bad_input;
mod browser;
mod cluster;
mod connectors_all;
mod connectors_fakes;
mod connectors_specific;
mod connectors_suite;
mod daemon;
mod dashboard;
mod demo;
mod evidence;
mod external_ids;
mod fakes;
mod helpers;
mod hostile_identities;
mod intake;
mod lease;
mod long_runs;
mod mailchimp;
mod manual;
mod opendsr;
mod operator;
mod outbound;
mod outbox_store;
mod phones;
mod policies;
mod processor_semantics;
mod s3;
mod s3_server;
mod scrubbing;
mod scrubbing_echo;
mod store_concurrent_apply;
mod store_conformance;
mod unexpected_response;
mod why_waiting;
