//! `mailsync run`: opens the store, runs the supervisor (one sync worker per account) and
//! the API, tells systemd how it is, and stops cleanly on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::secrets::MasterKey;
use crate::store::Store;
use crate::supervisor::Supervisor;
use crate::systemd;

/// How long in-flight work gets to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connects to the configured database and applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let db = &config.database;
    let store =
        Store::connect(&db.url, db.max_connections, Duration::from_secs(db.connect_timeout_secs)).await?;
    store.migrate().await?;
    Ok(store)
}

/// `config_path` is where the configuration came from, read again on SIGHUP.
pub async fn run(config: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let store = open_store(&config).await?;
    let key = Arc::new(MasterKey::load_or_create(&config.secrets.key_file)?);
    let tokens = Arc::new(api::load_tokens(&config.api.token_file)?);
    let listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let supervisor = Supervisor::new(store.clone(), key.clone(), config.sync.clone(), &api_addr.to_string());
    let supervisor_task = tokio::spawn(supervisor.run(stop_rx.clone()));
    let relink = Arc::new(tokio::sync::Notify::new());
    let relink_poll = Duration::from_millis(config.sync.account_check_ms);
    let relinker_task = tokio::spawn(crate::relinker::run(store.clone(), relink.clone(), relink_poll, stop_rx.clone()));
    let outbox = Arc::new(tokio::sync::Notify::new());
    let sender = crate::outbound::sender::SenderContext::new(store.clone(), key.clone(), &config)?;
    let sender_task = tokio::spawn(crate::outbound::sender::run(Arc::new(sender), outbox.clone(), stop_rx.clone()));
    let drop_task = if config.bcc_drop.enabled {
        let screen = crate::ingest::Screen { max_recipients: config.sync.max_recipients };
        let listener = crate::bcc_drop::Listener::bind(&config.bcc_drop, store.clone(), screen).await?;
        tracing::info!(listen = %listener.local_addr()?, protocol = ?config.bcc_drop.protocol, domain = %config.bcc_drop.domain, "BCC drop listening");
        Some(tokio::spawn(listener.run(stop_rx.clone())))
    } else {
        None
    };
    let contacts_task = tokio::spawn(crate::contacts::run_scheduler(
        store.clone(),
        key.clone(),
        format!("{}:{api_addr}", std::process::id()),
        Duration::from_millis(config.sync.account_check_ms),
        stop_rx.clone(),
    ));
    let app = api::router(AppState { store: store.clone(), key, tokens, relink, outbox, config: Arc::new(config.clone()) });
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|stop| *stop).await;
            })
            .await
    });
    let watchdog_task = systemd::watchdog_interval().map(|every| {
        tokio::spawn(watchdog(store.clone(), every, stop_rx.clone()))
    });

    tracing::info!(api = %api_addr, database = %crate::store::redact_url(&config.database.url), "mailsync running");
    systemd::notify(&format!("READY=1\nSTATUS=serving API on {api_addr}"));

    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM received, stopping");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received, stopping");
                break;
            }
            _ = hangup.recv() => reload(&config, config_path.as_deref()),
        }
    }
    systemd::notify("STOPPING=1");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, api_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "API server ended with an error"),
        Ok(Err(e)) => tracing::error!(error = %e, "API task panicked"),
        Err(_) => tracing::warn!("API did not stop within the grace period"),
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, supervisor_task).await.is_err() {
        tracing::warn!("workers did not stop within the grace period");
    }
    relinker_task.abort();
    // A sync cut short is replayed from its stored token by the next run.
    contacts_task.abort();
    // Sessions in flight end with the process: a client without its reply retries.
    if let Some(task) = drop_task {
        task.abort();
    }
    // A send in flight gets the grace period; one cut off stays `sending` and is retried.
    if tokio::time::timeout(SHUTDOWN_GRACE, sender_task).await.is_err() {
        tracing::warn!("the sender did not stop within the grace period");
    }
    if let Some(task) = watchdog_task {
        task.abort();
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP (`systemctl reload`): reads the configuration again and applies what can change
/// while running: the log filter. Accounts, contacts syncs and settings stored in the
/// database are picked up without a reload, and IDLE connections are left alone. A
/// configuration that does not load is reported and the running one kept; settings that
/// need a restart are named.
fn reload(running: &Config, path: Option<&std::path::Path>) {
    systemd::notify("RELOADING=1");
    match Config::load(path) {
        Err(e) => tracing::error!(error = %e, "reload: the configuration does not load; keeping the running one"),
        Ok(new) => {
            match crate::logging::set_level(&new.log.level) {
                Ok(()) => tracing::info!(level = %new.log.level, "reload: configuration read, log level applied"),
                Err(e) => tracing::error!(error = %e, "reload: log level not applied"),
            }
            let needs_restart: Vec<&str> = [
                ("database", new.database != running.database),
                ("api", new.api != running.api),
                ("bcc_drop", new.bcc_drop != running.bcc_drop),
                ("secrets", new.secrets != running.secrets),
                ("sync", new.sync != running.sync),
                ("smtp_relay", new.smtp_relay != running.smtp_relay),
                ("outbound", new.outbound != running.outbound),
            ]
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(section, _)| section)
            .collect();
            if !needs_restart.is_empty() {
                tracing::warn!(sections = ?needs_restart, "reload: these sections changed and take effect at the next restart");
            }
        }
    }
    systemd::notify("READY=1");
}

/// Pings systemd's watchdog only while the store answers: a daemon that cannot reach its
/// store is restarted by systemd rather than left pretending to work.
async fn watchdog(store: Store, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match tokio::time::timeout(every, store.ping()).await {
            Ok(Ok(())) => systemd::notify("WATCHDOG=1"),
            Ok(Err(e)) => tracing::warn!(error = %e, "store unreachable; withholding watchdog ping"),
            Err(_) => tracing::warn!("store ping timed out; withholding watchdog ping"),
        }
    }
}
