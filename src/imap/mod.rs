//! The IMAP sync engine: connections (`connection`), folder discovery (`folders`),
//! batched fetching (`fetch`), the per-folder cursor logic (`sync`) and the per-account
//! worker with IDLE and backoff (`worker`). Errors are classified in `error`. The code is
//! generic over the stream, so unit tests replay server transcripts (`transcript`).

pub mod connection;
pub mod error;
pub mod fetch;
pub mod folders;
pub mod sync;
#[cfg(test)]
pub mod transcript;
pub mod worker;

pub use error::{ErrorClass, SyncError};
