//! Shared model types and the pure rules on them: what the ingest pipeline, the store and
//! the features exchange. They depend on nothing but `address` (normalization), so the
//! store imports no feature module.

pub mod contact;
pub mod message;
pub mod thread;
