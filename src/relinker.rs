//! Retroactive linking in the background: works through `relink_jobs` (written with every
//! new lead, contact, address or import) so that the API and CLI never wait for it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Jobs handled per transaction: bounds how long the organization's lock is held.
const JOBS_PER_ROUND: i64 = 500;

/// Runs until `stop`: wakes on `wake` (the API just queued work) or every `poll` (work
/// queued by the CLI or another daemon), then empties the queue.
pub async fn run(store: Store, wake: Arc<Notify>, poll: Duration, stop: CancellationToken) {
    let mut failures = 0u32;
    loop {
        // A round runs in its own task so that a panic ends the round, not the relinker.
        let round = tokio::spawn(drain(store.clone())).await;
        let pause = match round {
            Ok(Ok(())) => {
                failures = 0;
                poll
            }
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(error = %e, transient = e.is_transient(), "retroactive linking failed; retrying");
                poll * failures.min(30)
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "retroactive linking panicked; retrying");
                poll * failures.min(30)
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn drain(store: Store) -> crate::store::Result<()> {
    while store.run_relink_jobs(JOBS_PER_ROUND).await? > 0 {}
    Ok(())
}
