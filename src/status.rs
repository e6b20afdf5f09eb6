//! What `mailsync status` and `GET /v1/status` report: per account its state, last error
//! (class, and a message with the fix), and per folder the sync progress.

use serde::Serialize;

use crate::store::{AccountState, Result, Store};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Status {
    pub accounts: Vec<AccountStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountStatus {
    pub id: i64,
    pub email: String,
    pub org: String,
    pub state: AccountState,
    pub error_class: String,
    pub error_message: String,
    pub error_at: i64,
    pub note: String,
    pub folders: Vec<FolderStatus>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// Messages per second of the running initial sync (0 when none runs).
    pub rate_per_sec: f64,
    /// Estimated seconds until the initial sync completes; null when unknown or done.
    pub eta_secs: Option<i64>,
}

impl Status {
    pub async fn collect(store: &Store) -> Result<Status> {
        let now = crate::store::now_ms();
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
                let estimate = (!f.initial_sync_done)
                    .then(|| {
                        Estimate::of(f.backfill_started_at, f.backfill_base, stored + skipped, f.server_messages, now)
                    })
                    .flatten();
                folders.push(FolderStatus {
                    role: f.role,
                    name: f.name,
                    messages_stored: stored,
                    messages_skipped: skipped,
                    server_messages: f.server_messages,
                    last_synced_uid: f.synced_high_uid,
                    initial_sync_complete: f.initial_sync_done,
                    progress,
                    rate_per_sec: estimate.map_or(0.0, |e| e.rate_per_sec),
                    eta_secs: estimate.map(|e| e.eta_secs),
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

/// The rate of a running backfill pass and the time it still needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    rate_per_sec: f64,
    eta_secs: i64,
}

impl Estimate {
    /// From the pass's start (ms) and baseline, the messages accounted for now and the
    /// server's count. None until the pass has run half a second and made progress.
    fn of(started_at_ms: i64, base: i64, done: i64, server: i64, now_ms: i64) -> Option<Estimate> {
        let elapsed_ms = now_ms - started_at_ms;
        if started_at_ms == 0 || elapsed_ms < 500 || done <= base {
            return None;
        }
        let rate_per_sec = (done - base) as f64 * 1_000.0 / elapsed_ms as f64;
        let eta_secs = ((server - done).max(0) as f64 / rate_per_sec).ceil() as i64;
        Some(Estimate { rate_per_sec, eta_secs })
    }
}

/// `2h05m`, `4m10s`, `35s`: an ETA for people.
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s >= 3_600 => format!("{}h{:02}m", s / 3_600, s % 3_600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_from_the_rate_since_the_pass_began() {
        // 1,000 messages in 10 s since a baseline of 500; 8,500 to go at 100/s.
        let e = Estimate::of(1_000, 500, 1_500, 10_000, 11_000).unwrap();
        assert_eq!(e, Estimate { rate_per_sec: 100.0, eta_secs: 85 });
        // Not started, too early, or no progress yet: no estimate.
        assert_eq!(Estimate::of(0, 0, 10, 100, 50_000), None);
        assert_eq!(Estimate::of(1_000, 0, 10, 100, 1_400), None);
        assert_eq!(Estimate::of(1_000, 10, 10, 100, 60_000), None);
        // More accounted for than the server counts (mail expunged meanwhile): zero left.
        assert_eq!(Estimate::of(1_000, 0, 120, 100, 2_000).unwrap().eta_secs, 0);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(35), "35s");
        assert_eq!(human_duration(250), "4m10s");
        assert_eq!(human_duration(7_500), "2h05m");
    }
}
