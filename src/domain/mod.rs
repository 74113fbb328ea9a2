//! Validated domain types (requests, identities, processor categories, workflow
//! files) and the pure step saga. Imports nothing else of lethe's.

pub mod category;
pub mod duration;
pub mod event;
pub mod identity;
pub mod policy;
pub mod request;
pub mod retry;
pub mod step;
pub mod workflow;

#[cfg(test)]
mod proptests;

pub use category::Category;
pub use duration::HumanDuration;
pub use identity::{CustomerId, Email, IdentityError, Name, Phone, Subject};
pub use policy::{hold_gate, HoldGate, HoldSpan};
pub use request::{derive_status, due_date, extended_due_date, RequestKind, RequestStatus};
pub use step::{Action, InvalidTransition, Outcome, Phase, StepEvent, StepState};
