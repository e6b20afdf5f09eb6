//! Figures for `/metrics`, read at scrape time: a handful of grouped counts.

use sqlx::Row;

use super::{Result, Store};

/// What the store says about the daemon's work.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// (account id, state)
    pub account_states: Vec<(i64, String)>,
    pub messages_by_source: Vec<(String, i64)>,
    pub skipped: i64,
    pub outbox_by_status: Vec<(String, i64)>,
    pub drops_by_outcome: Vec<(String, i64)>,
    pub contact_syncs: Vec<ContactSyncStats>,
}

#[derive(Debug, Default)]
pub struct ContactSyncStats {
    pub user_id: i64,
    pub last_sync_at: i64,
    pub failing: bool,
    /// The last successful run's counts, by name.
    pub counts: Vec<(String, i64)>,
}

impl Store {
    pub async fn stats(&self) -> Result<StoreStats> {
        let grouped = |sql: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter().map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?))).collect::<Result<Vec<_>>>()
        };
        let account_states = sqlx::query("SELECT id, state FROM mail_accounts ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        let contact_syncs = sqlx::query(
            "SELECT user_id, last_sync_at, last_error, last_result FROM contact_sync_configs ORDER BY user_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let result: serde_json::Value =
                super::sql::parse_json(&r.try_get::<String, _>(3)?, "contact_sync_configs.last_result")?;
            let counts = result
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_i64().map(|n| (k.clone(), n)))
                .collect();
            Ok(ContactSyncStats {
                user_id: r.try_get(0)?,
                last_sync_at: r.try_get(1)?,
                failing: !r.try_get::<String, _>(2)?.is_empty(),
                counts,
            })
        })
        .collect::<Result<_>>()?;
        Ok(StoreStats {
            account_states,
            messages_by_source: grouped("SELECT source, COUNT(*) FROM messages GROUP BY source ORDER BY source")
                .await?,
            skipped: sqlx::query_scalar("SELECT COUNT(*) FROM skipped").fetch_one(&self.pool).await?,
            outbox_by_status: grouped("SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status").await?,
            drops_by_outcome: grouped(
                "SELECT outcome, COUNT(*) FROM drop_deliveries GROUP BY outcome ORDER BY outcome",
            )
            .await?,
            contact_syncs,
        })
    }
}
