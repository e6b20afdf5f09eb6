//! The operations layer: every operation the CLI and the API offer, written once.
//!
//! A CLI command or an API handler decodes its input into the types here, calls one
//! function of [`Ops`] and renders the result. Validation, paging limits, address
//! normalization and waking the daemon's tasks happen here, so both interfaces give the
//! same answer to the same request. Nothing here knows about HTTP or terminals.

mod accounts;
mod contacts_sync;
mod mail;
mod records;

pub use accounts::PasswordInput;
pub use contacts_sync::{ContactsSyncRun, FlagResolution};
pub use mail::{AddressInput, DropQuery, MessagesQuery, OutboxQuery, UserAddresses};
pub use records::{EmailInput, ImportInput, ListQuery};

use std::sync::{Arc, OnceLock, RwLock};

use tokio::sync::Notify;

use crate::config::Config;
use crate::secrets::MasterKey;
use crate::store::{Store, StoreError};

/// Page size when a listing names none.
pub const DEFAULT_LIMIT: i64 = 100;
/// The largest page a listing returns.
pub const MAX_LIMIT: i64 = 1000;

pub fn default_limit() -> i64 {
    DEFAULT_LIMIT
}

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The request is malformed (a missing or contradictory parameter).
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something on this machine failed (the master key cannot be read, no randomness).
    #[error("{0}")]
    Internal(String),
}

pub type OpResult<T> = Result<T, OpError>;

/// Every listing pages with `limit` (1 to [`MAX_LIMIT`]) and `offset` (0 or more).
pub fn check_page(limit: i64, offset: i64) -> OpResult<()> {
    if !(1..=MAX_LIMIT).contains(&limit) || offset < 0 {
        return Err(OpError::BadRequest(format!("limit must be 1 to {MAX_LIMIT} and offset at least 0")));
    }
    Ok(())
}

/// A user named by email address, normalized the one way addresses are.
fn user_email(user: &str) -> OpResult<String> {
    crate::address::normalize_email(user).map_err(|e| StoreError::Invalid(format!("user: {e}")).into())
}

/// The daemon's running configuration; a reload replaces the inner `Arc`.
pub type SharedConfig = Arc<RwLock<Arc<Config>>>;

/// What every operation works with. Cheap to clone.
#[derive(Clone)]
pub struct Ops {
    store: Store,
    config: SharedConfig,
    /// Loaded on first use, so commands that need no secret create no key file.
    key: Arc<OnceLock<Arc<MasterKey>>>,
    /// Wakes the relinker after retroactive linking was queued.
    relink: Arc<Notify>,
    /// Wakes the sender after mail was queued.
    outbox: Arc<Notify>,
}

impl Ops {
    /// For a one-shot CLI command: nobody waits on the wake-ups.
    pub fn new(store: Store, config: Config) -> Ops {
        Ops {
            store,
            config: Arc::new(RwLock::new(Arc::new(config))),
            key: Arc::default(),
            relink: Arc::default(),
            outbox: Arc::default(),
        }
    }

    /// For the daemon: the key is loaded, the relinker and sender listen to the wake-ups.
    pub fn for_daemon(
        store: Store,
        config: SharedConfig,
        key: Arc<MasterKey>,
        relink: Arc<Notify>,
        outbox: Arc<Notify>,
    ) -> Ops {
        let cell = OnceLock::new();
        let _ = cell.set(key);
        Ops { store, config, key: Arc::new(cell), relink, outbox }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration as of now (a reload may have replaced it since the last call).
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(config) => config.clone(),
            // A writer panicked mid-swap; the Arc it held is still whole.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The master key, loaded (or created on a new install) on first use.
    pub fn key(&self) -> OpResult<Arc<MasterKey>> {
        if let Some(key) = self.key.get() {
            return Ok(key.clone());
        }
        let key =
            MasterKey::load_or_create(&self.config().secrets.key_file).map_err(|e| OpError::Internal(e.to_string()))?;
        Ok(self.key.get_or_init(|| Arc::new(key)).clone())
    }

    fn relink_soon(&self) {
        self.relink.notify_one();
    }

    fn send_soon(&self) {
        self.outbox.notify_one();
    }
}
