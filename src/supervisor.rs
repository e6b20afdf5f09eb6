//! The supervisor: runs one worker per mail account this daemon holds a lease on, and
//! starts, stops or restarts workers as accounts are added, removed or changed in the
//! store (by the CLI, the API, or another daemon). Several daemons sharing one PostgreSQL
//! split the accounts between them through the leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::SyncConfig;
use crate::imap::SyncError;
use crate::imap::connection::ServerSettings;
use crate::imap::sync::SyncOptions;
use crate::imap::worker::{Credentials, WorkerContext, run_account};
use crate::ingest::Screen;
use crate::secrets::MasterKey;
use crate::store::{Account, AccountState, Store};

struct Running {
    generation: i64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How long a stopping worker gets to finish its in-flight commit.
const WORKER_GRACE: Duration = Duration::from_secs(5);

pub struct Supervisor {
    store: Store,
    key: Arc<MasterKey>,
    config: SyncConfig,
    /// This daemon's lease identity: stable across its restarts (so a daemon killed with
    /// -9 takes its accounts straight back), distinct between daemons.
    owner: String,
    workers: HashMap<i64, Running>,
    /// Every worker task, so that shutdown waits for all of them at once.
    tracker: TaskTracker,
    /// Accounts that cannot start as they are (e.g. undecryptable secret), by generation.
    refused: HashMap<i64, i64>,
}

impl Supervisor {
    /// `instance` tells this daemon apart from others on the same host (its API address).
    pub fn new(store: Store, key: Arc<MasterKey>, config: SyncConfig, instance: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let owner = format!("{}/{instance}", host.trim());
        Supervisor {
            store,
            key,
            config,
            owner,
            workers: HashMap::new(),
            tracker: TaskTracker::new(),
            refused: HashMap::new(),
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.config.account_check_ms.max(50));
        let lease_ms = self.config.lease_secs.max(1) as i64 * 1000;
        // Renew well before expiry; config validation keeps this above the check interval.
        let renew_every = Duration::from_millis((lease_ms / 3) as u64);
        let mut renewed: Option<std::time::Instant> = None;
        loop {
            if let Err(e) = self.tick(&mut renewed, renew_every, lease_ms).await {
                tracing::warn!(error = %e, "supervisor could not read accounts; retrying");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // Every worker is told at once and they get one grace period together (a
        // thousand accounts must not take a thousand grace periods).
        for worker in self.workers.values() {
            worker.stop.cancel();
        }
        self.tracker.close();
        if tokio::time::timeout(WORKER_GRACE, self.tracker.wait()).await.is_err() {
            tracing::warn!("some workers did not stop within the grace period");
        }
        for (id, worker) in self.workers.drain() {
            worker.task.abort();
            let _ = self.store.release_account(id, &self.owner).await;
        }
    }

    /// One light query when nothing changed; lease statements only when a lease is due
    /// for renewal or an account is free to take.
    async fn tick(
        &mut self,
        renewed: &mut Option<std::time::Instant>,
        renew_every: Duration,
        lease_ms: i64,
    ) -> crate::store::Result<()> {
        let mut leases = self.store.account_leases().await?;
        let now = crate::store::now_ms();
        let claimable = leases.iter().any(|l| l.lease_owner.is_empty() || l.lease_until < now);
        if claimable || renewed.is_none_or(|at| at.elapsed() >= renew_every) {
            self.store.renew_and_claim_leases(&self.owner, lease_ms).await?;
            *renewed = Some(std::time::Instant::now());
            leases = self.store.account_leases().await?;
        }
        self.reconcile(&leases).await
    }

    /// Matches running workers to the accounts this daemon holds.
    async fn reconcile(&mut self, leases: &[crate::store::AccountLease]) -> crate::store::Result<()> {
        let now = crate::store::now_ms();
        for lease in leases {
            let held = lease.lease_owner == self.owner && lease.lease_until > now;
            let running = self.workers.get(&lease.id);
            if !held {
                if running.is_some() {
                    tracing::info!(account = lease.id, "lease lost to another daemon; stopping worker");
                    self.stop(lease.id).await;
                }
                continue;
            }
            let current = running.is_some_and(|w| w.generation == lease.generation && !w.task.is_finished());
            if current || self.refused.get(&lease.id) == Some(&lease.generation) {
                continue;
            }
            if let Some(w) = self.workers.get(&lease.id)
                && w.task.is_finished()
            {
                tracing::error!(account = lease.id, "worker ended unexpectedly; restarting");
            }
            self.stop(lease.id).await;
            match self.store.account(lease.id).await {
                Ok(account) => self.start(&account).await,
                Err(crate::store::StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let gone: Vec<i64> = self.workers.keys().copied().filter(|id| !leases.iter().any(|l| l.id == *id)).collect();
        for id in gone {
            tracing::info!(account = id, "account removed; stopping worker");
            self.stop(id).await;
        }
        Ok(())
    }

    async fn start(&mut self, account: &Account) {
        let context = match self.context(account).await {
            Ok(context) => context,
            Err(e) => {
                tracing::error!(account = account.id, class = %e.class, error = %e.detail, "cannot start worker");
                let _ =
                    self.store.set_account_state(account.id, AccountState::Error, e.class.as_str(), &e.message()).await;
                self.refused.insert(account.id, account.generation);
                return;
            }
        };
        self.refused.remove(&account.id);
        let stop = CancellationToken::new();
        let span = tracing::info_span!("account", account = account.id);
        let task = self.tracker.spawn(run_account(Arc::new(context), stop.clone()).instrument(span));
        tracing::info!(account = account.id, email = %account.email, "worker started");
        self.workers.insert(account.id, Running { generation: account.generation, stop, task });
    }

    async fn stop(&mut self, account_id: i64) {
        let Some(worker) = self.workers.remove(&account_id) else { return };
        worker.stop.cancel();
        let abort = worker.task.abort_handle();
        if tokio::time::timeout(WORKER_GRACE, worker.task).await.is_err() {
            abort.abort();
        }
        let _ = self.store.release_account(account_id, &self.owner).await;
    }

    async fn context(&self, account: &Account) -> Result<WorkerContext, SyncError> {
        let c = &self.config;
        Ok(WorkerContext {
            store: self.store.clone(),
            account_id: account.id,
            org_id: account.org_id,
            credentials: Credentials::for_account(&self.store, &self.key, account).await?,
            server: ServerSettings::for_account(account, c)?,
            sync: SyncOptions {
                screen: Screen { max_recipients: c.max_recipients },
                batch_size: c.batch_size as usize,
                max_text_bytes: c.max_text_bytes,
                backfill_days: c.backfill_days,
            },
            idle_renew: Duration::from_secs(c.idle_renew_secs),
            poll_interval: Duration::from_secs(c.poll_interval_secs),
            backoff_max: Duration::from_secs(c.backoff_max_secs),
        })
    }
}
