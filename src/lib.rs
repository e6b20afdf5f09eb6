//! mailsync: keeps CRM users' mailboxes in sync and links mail to CRM records.
//! See docs/ARCHITECTURE.md for the map of this crate.

pub mod accounts;
pub mod address;
pub mod api;
pub mod bcc_drop;
pub mod check;
pub mod cli;
pub mod config;
pub mod contacts;
pub mod daemon;
pub mod imap;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod net;
pub mod oauth;
pub mod ops;
pub mod outbound;
pub mod progress;
pub mod relinker;
pub mod retry;
pub mod secrets;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod systemd;
