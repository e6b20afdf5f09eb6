//! `mailsync run`: opens the store, runs the supervisor (one sync worker per account) and
//! the API, tells systemd how it is, and stops cleanly on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::outbound::sender::SenderContext;
use crate::secrets::MasterKey;
use crate::store::Store;
use crate::supervisor::Supervisor;
use crate::systemd;

/// How long in-flight work gets to finish after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connects to the configured database and applies pending migrations.
/// Opens the store and brings its schema up to date: for `run` and `migrate` only.
pub async fn open_and_migrate_store(config: &Config) -> anyhow::Result<Store> {
    let store = connect_store(config).await?;
    store.migrate().await?;
    Ok(store)
}

/// Opens the store for a CLI command: refuses a schema older or newer than this binary.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = connect_store(config).await?;
    store.check_schema().await?;
    Ok(store)
}

async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let db = &config.database;
    Ok(Store::connect(&db.url, db.max_connections, Duration::from_secs(db.connect_timeout_secs)).await?)
}

/// `config_path` is where the configuration came from, read again on SIGHUP.
pub async fn run(mut config: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let store = open_and_migrate_store(&config).await?;
    let key = Arc::new(MasterKey::load_or_create(&config.secrets.key_file)?);
    let tokens = Arc::new(api::load_tokens(&config.api.token_file)?);
    let listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.api.listen))?;
    let api_addr = listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let shared_config = Arc::new(std::sync::RwLock::new(Arc::new(config.clone())));
    let relink = Arc::new(tokio::sync::Notify::new());
    let relink_poll = Duration::from_millis(config.sync.account_check_ms);
    let relinker_task =
        tokio::spawn(crate::relinker::run(store.clone(), relink.clone(), relink_poll, shutdown.clone()));
    let outbox = Arc::new(tokio::sync::Notify::new());
    let mut services = Services {
        store: store.clone(),
        key: key.clone(),
        instance: api_addr.to_string(),
        outbox: outbox.clone(),
        supervisor: None,
        sender: None,
        bcc_drop: None,
    };
    services.start_supervisor(&config);
    services.start_sender(&config)?;
    services.start_bcc_drop(&config).await?;
    let contacts_task = tokio::spawn(crate::contacts::run_scheduler(
        store.clone(),
        key.clone(),
        format!("{}:{api_addr}", std::process::id()),
        Duration::from_millis(config.sync.account_check_ms),
        shutdown.clone(),
    ));
    let ops = crate::ops::Ops::for_daemon(store.clone(), shared_config.clone(), key, relink, outbox);
    let app = api::router(AppState { ops, tokens });
    let api_task = tokio::spawn(
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).into_future(),
    );

    tracing::info!(api = %api_addr, database = %crate::store::redact_url(&config.database.url), "mailsync running");
    systemd::notify(&format!("READY=1\nSTATUS=serving API on {api_addr}"));
    // After READY: the watchdog's first ping comes at once, and systemd expects READY first.
    let watchdog_task =
        systemd::watchdog_interval().map(|every| tokio::spawn(watchdog(store.clone(), every, shutdown.clone())));

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
            _ = hangup.recv() => {
                reload(&mut config, config_path.as_deref(), &mut services).await;
                if let Ok(mut shared) = shared_config.write() {
                    *shared = Arc::new(config.clone());
                }
            }
        }
    }
    systemd::notify("STOPPING=1");
    shutdown.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, api_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "API server ended with an error"),
        Ok(Err(e)) => tracing::error!(error = %e, "API task panicked"),
        Err(_) => tracing::warn!("API did not stop within the grace period"),
    }
    services.stop_all().await;
    relinker_task.abort();
    // A sync cut short is replayed from its stored token by the next run.
    contacts_task.abort();
    if let Some(task) = watchdog_task {
        task.abort();
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// A long-running component with a stop signal of its own, so that a reload can replace
/// it while the others run on.
struct Task {
    name: &'static str,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    fn spawn<F>(name: &'static str, run: impl FnOnce(CancellationToken) -> F) -> Task
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let span = tracing::info_span!("component", component = name);
        Task { name, stop: stop.clone(), handle: tokio::spawn(run(stop).instrument(span)) }
    }

    /// Signals the stop and waits for in-flight work (a sync batch, a send) up to the grace
    /// period.
    async fn stop(self) {
        self.stop.cancel();
        match tokio::time::timeout(SHUTDOWN_GRACE, self.handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(component = self.name, error = %e, "task ended abnormally"),
            Err(_) => tracing::warn!(component = self.name, "did not stop within the grace period"),
        }
    }
}

/// The components whose settings come from the configuration file and can be replaced
/// by a reload: the sync supervisor ([sync]), the sender ([smtp_relay], [outbound]) and the
/// BCC-drop listener ([bcc_drop]).
struct Services {
    store: Store,
    key: Arc<MasterKey>,
    instance: String,
    outbox: Arc<tokio::sync::Notify>,
    supervisor: Option<Task>,
    sender: Option<Task>,
    bcc_drop: Option<Task>,
}

impl Services {
    fn start_supervisor(&mut self, config: &Config) {
        let supervisor = Supervisor::new(self.store.clone(), self.key.clone(), config.sync.clone(), &self.instance);
        self.supervisor = Some(Task::spawn("supervisor", |stop| supervisor.run(stop)));
    }

    fn start_sender(&mut self, config: &Config) -> anyhow::Result<()> {
        let sender = SenderContext::new(self.store.clone(), self.key.clone(), config)?;
        self.spawn_sender(sender);
        Ok(())
    }

    fn spawn_sender(&mut self, sender: SenderContext) {
        let (sender, wake) = (Arc::new(sender), self.outbox.clone());
        self.sender = Some(Task::spawn("sender", |stop| crate::outbound::sender::run(sender, wake, stop)));
    }

    async fn start_bcc_drop(&mut self, config: &Config) -> anyhow::Result<()> {
        if !config.bcc_drop.enabled {
            return Ok(());
        }
        let screen = crate::ingest::Screen { max_recipients: config.sync.max_recipients };
        let listener = crate::bcc_drop::Listener::bind(&config.bcc_drop, self.store.clone(), screen).await?;
        tracing::info!(listen = %listener.local_addr()?, protocol = ?config.bcc_drop.protocol,
            domain = %config.bcc_drop.domain, "BCC drop listening");
        self.bcc_drop = Some(Task::spawn("bcc_drop", |stop| listener.run(stop)));
        Ok(())
    }

    async fn stop_all(&mut self) {
        // All signalled first, so their grace periods run together. BCC-drop sessions in
        // flight end with the process: a client without its reply retries.
        let tasks: Vec<Task> =
            [self.bcc_drop.take(), self.supervisor.take(), self.sender.take()].into_iter().flatten().collect();
        for task in &tasks {
            task.stop.cancel();
        }
        for task in tasks {
            task.stop().await;
        }
    }
}

/// SIGHUP (`systemctl reload`): reads the configuration again and applies it: the log
/// filter at once; changed [sync] settings restart the sync workers (their IDLE
/// connections with them), changed [smtp_relay]/[outbound] the sender, changed [bcc_drop]
/// the listener; unchanged components and their connections are left alone. [database],
/// [api] and [secrets] need a restart and are named. A configuration that does not load,
/// or a component that cannot start with the new settings, is reported and the running
/// one kept.
async fn reload(running: &mut Config, path: Option<&std::path::Path>, services: &mut Services) {
    systemd::notify("RELOADING=1");
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "reload: the configuration does not load; keeping the running one");
            systemd::notify("READY=1");
            return;
        }
    };
    match crate::logging::set_level(&new.log.level) {
        Ok(()) => {
            running.log = new.log.clone();
            tracing::info!(level = %new.log.level, "reload: configuration read, log level applied");
        }
        Err(e) => tracing::error!(error = %e, "reload: log level not applied"),
    }
    if new.smtp_relay != running.smtp_relay || new.outbound != running.outbound {
        // Built before the running sender stops: a bad relay setting keeps the old one.
        match SenderContext::new(services.store.clone(), services.key.clone(), &new) {
            Err(e) => tracing::error!(error = %e, "reload: [smtp_relay]/[outbound] not applied"),
            Ok(sender) => {
                if let Some(task) = services.sender.take() {
                    task.stop().await;
                }
                services.spawn_sender(sender);
                running.smtp_relay = new.smtp_relay.clone();
                running.outbound = new.outbound.clone();
                tracing::info!("reload: [smtp_relay]/[outbound] applied; sender restarted");
            }
        }
    }
    if new.bcc_drop != running.bcc_drop || new.sync.max_recipients != running.sync.max_recipients {
        // The old listener goes first: the new one may want the same address.
        if let Some(task) = services.bcc_drop.take() {
            task.stop().await;
        }
        match services.start_bcc_drop(&new).await {
            Ok(()) => {
                running.bcc_drop = new.bcc_drop.clone();
                tracing::info!(enabled = new.bcc_drop.enabled, "reload: [bcc_drop] applied");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload: [bcc_drop] not applied; restarting the listener as it was");
                if let Err(e) = services.start_bcc_drop(running).await {
                    tracing::error!(error = %e, "reload: the BCC-drop listener could not be restarted");
                }
            }
        }
    }
    if new.sync != running.sync {
        if let Some(task) = services.supervisor.take() {
            task.stop().await;
        }
        services.start_supervisor(&new);
        running.sync = new.sync.clone();
        tracing::info!("reload: [sync] applied; account workers restarted");
    }
    let needs_restart: Vec<&str> = [
        ("database", new.database != running.database),
        ("api", new.api != running.api),
        ("secrets", new.secrets != running.secrets),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(section, _)| section)
    .collect();
    if !needs_restart.is_empty() {
        tracing::warn!(sections = ?needs_restart, "reload: these sections changed and take effect at the next restart");
    }
    systemd::notify("READY=1");
}

/// Pings systemd's watchdog only while the store answers: a daemon that cannot reach its
/// store is restarted by systemd rather than left pretending to work.
async fn watchdog(store: Store, every: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return,
        }
        match tokio::time::timeout(every, store.ping()).await {
            Ok(Ok(())) => systemd::notify("WATCHDOG=1"),
            Ok(Err(e)) => tracing::warn!(error = %e, "store unreachable; withholding watchdog ping"),
            Err(_) => tracing::warn!("store ping timed out; withholding watchdog ping"),
        }
    }
}
