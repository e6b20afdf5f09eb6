//! What `mailsync status` and `GET /v1/status` report: per account its state, last error
//! (class, and a message with the fix), and per folder the sync progress.

use serde::Serialize;

use crate::store::{Result, Store};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub accounts: Vec<AccountStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    pub id: i64,
    pub email: String,
    pub org: String,
    pub state: String,
    pub error_class: String,
    pub error_message: String,
    pub error_at: i64,
    pub note: String,
    pub folders: Vec<FolderStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FolderStatus {
    pub role: String,
    pub name: String,
    pub messages_stored: i64,
    pub messages_skipped: i64,
    pub server_messages: i64,
    pub last_synced_uid: i64,
    pub initial_sync_complete: bool,
    /// Share of the server's messages accounted for, 0.0 to 1.0.
    pub progress: f64,
}

impl Status {
    pub async fn collect(store: &Store) -> Result<Status> {
        let mut accounts = Vec::new();
        for a in store.list_accounts().await? {
            let mut folders = Vec::new();
            for f in store.folders(a.id).await? {
                let stored = store.stored_count(f.id).await?;
                let skipped = store.skipped_count(f.id).await?;
                let progress = if f.initial_sync_done || f.server_messages == 0 {
                    1.0
                } else {
                    ((stored + skipped) as f64 / f.server_messages as f64).min(1.0)
                };
                folders.push(FolderStatus {
                    role: f.role,
                    name: f.name,
                    messages_stored: stored,
                    messages_skipped: skipped,
                    server_messages: f.server_messages,
                    last_synced_uid: f.synced_high_uid,
                    initial_sync_complete: f.initial_sync_done,
                    progress,
                });
            }
            accounts.push(AccountStatus {
                id: a.id,
                email: a.email,
                org: a.org,
                state: a.state,
                error_class: a.error_class,
                error_message: a.error_message,
                error_at: a.error_at,
                note: a.note,
                folders,
            });
        }
        Ok(Status { accounts })
    }
}
