//! The IMAP sync engine: connections (`connection`), folder discovery (`folders`),
//! batched fetching (`fetch`), the per-folder cursor logic (`sync`) and the per-account
//! worker with IDLE and backoff (`worker`). Errors are classified in `error`.

pub mod connection;
pub mod error;
pub mod fetch;
pub mod folders;
pub mod sync;
pub mod worker;

pub use error::{ErrorClass, SyncError};
