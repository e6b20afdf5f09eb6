//! What `mailsync status` and `GET /v1/status` report: per account, its state and last error.

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
}

impl Status {
    pub async fn collect(store: &Store) -> Result<Status> {
        let accounts = store
            .list_accounts()
            .await?
            .into_iter()
            .map(|a| AccountStatus {
                id: a.id,
                email: a.email,
                org: a.org,
                state: a.state,
                error_class: a.error_class,
                error_message: a.error_message,
                error_at: a.error_at,
            })
            .collect();
        Ok(Status { accounts })
    }
}
