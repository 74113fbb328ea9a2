//! lethe: carries GDPR data-subject requests (erasure, export, objection,
//! rectification) through every third-party processor, durably, and hands
//! back the evidence.
//!
//! Layers point one way: `domain` (pure types and the saga) ← `store`,
//! `connectors` ← `engine` ← `cli`. See DESIGN.md for the architecture.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod check;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod intake;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod sim;
pub mod store;
pub mod term;
pub mod view;
pub mod web;
