//! Configuration: a TOML file, then `MAILSYNC_*` environment overrides, then validation.
//!
//! Every key has a default, so the daemon runs with no file at all. The environment scheme
//! is `MAILSYNC_<SECTION>_<KEY>` in upper case (`[api] listen` -> `MAILSYNC_API_LISTEN`,
//! `[bcc_drop] domain` -> `MAILSYNC_BCC_DROP_DOMAIN`). The set of keys and their types is
//! derived from [`Config::default`], so a new key is overridable without extra code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "MAILSYNC_CONFIG";
const ENV_PREFIX: &str = "MAILSYNC_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    FileKey { path: PathBuf, key: String, reason: String },
    #[error("environment variable {var} (key `{key}`): {reason}")]
    EnvKey { var: String, key: String, reason: String },
    #[error("environment variable {var}: no such config key (known: {known})")]
    UnknownEnv { var: String, known: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    pub bcc_drop: BccDropConfig,
    pub secrets: SecretsConfig,
    pub sync: SyncConfig,
    pub smtp_relay: SmtpRelayConfig,
    pub outbound: OutboundConfig,
    pub log: LogConfig,
}

/// Where outgoing mail goes: one relay for everybody, or (host empty) each account's own
/// SMTP server with the account's credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpRelayConfig {
    /// Empty: send through each account's own SMTP server.
    pub host: String,
    pub port: u16,
    /// `starttls`, `implicit`, or `none` (with a username, only for a relay on this machine).
    pub tls: RelayTls,
    /// Empty: no authentication.
    pub username: String,
    /// File holding the relay password. The systemd credential `smtp-relay-password`
    /// takes precedence.
    pub password_file: PathBuf,
    /// Extra trusted CA certificate(s), PEM, for the relay.
    pub ca_file: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    Starttls,
    Implicit,
    None,
}

/// The outbox's policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Longest time for one whole SMTP transaction (connect to final reply).
    pub send_timeout_secs: u64,
    /// Attempts before a message with only transient failures is given up.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt (with jitter) up to `retry_max_secs`.
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    /// Messages a user may enqueue per rolling 24 hours.
    pub daily_limit_per_user: u32,
    /// Messages an organization may enqueue per rolling 24 hours.
    pub daily_limit_per_org: u32,
    /// How often the sender looks for due messages queued by the CLI or another daemon.
    pub poll_ms: u64,
    /// A message left `sending` this long by a daemon that died is sent again.
    pub stale_sending_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST/DB`.
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for a connection before reporting the database unreachable.
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// One bearer token per line; generated (mode 0600) when missing.
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BccDropConfig {
    /// Off: no listener (drop addresses can still be shown).
    pub enabled: bool,
    pub protocol: DropProtocol,
    pub listen: SocketAddr,
    /// Drop addresses are `<token>@<domain>`.
    pub domain: String,
    /// Name in the greeting and EHLO reply; empty: the drop domain.
    pub hostname: String,
    pub max_message_bytes: u64,
    /// RCPT commands accepted per transaction; more get 452 (the client sends them later).
    pub max_recipients: u32,
    pub max_sessions: u32,
    /// Longest wait for the client's next command or data block.
    pub idle_timeout_secs: u64,
    /// Longest session, greeting to QUIT.
    pub session_timeout_secs: u64,
    /// PEM certificate chain and key for STARTTLS; both empty: STARTTLS not offered.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// Behind a trusted MTA: the authserv-id of its `Authentication-Results` header,
    /// which then decides authentication. Empty: DKIM, SPF and DMARC checked here.
    pub trusted_authserv_id: String,
    /// DNS servers for DKIM/SPF/DMARC, `IP` or `IP:PORT`, comma-separated; empty: the
    /// system's (/etc/resolv.conf).
    pub dns_servers: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DropProtocol {
    Smtp,
    Lmtp,
}

impl BccDropConfig {
    /// The configured DNS servers; an error names the entry that is not an address.
    pub fn dns_server_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        self.dns_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// 32-byte master key as 64 hex characters; generated (mode 0600) when missing.
    /// A systemd credential named `master-key` takes precedence.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Messages with more distinct To+Cc+Bcc addresses than this are skipped.
    pub max_recipients: u32,
    /// Messages fetched and committed per batch.
    pub batch_size: u32,
    /// At most this many bytes of each text part are fetched (protects memory).
    pub max_text_bytes: u32,
    /// First sync fetches mail of the last N days; 0 fetches everything.
    pub backfill_days: u32,
    pub connect_timeout_secs: u64,
    /// Longest silence tolerated from an IMAP server outside IDLE.
    pub io_timeout_secs: u64,
    /// IDLE is re-issued this often (below the 29 minutes servers allow).
    pub idle_renew_secs: u64,
    /// Polling interval for servers without IDLE.
    pub poll_interval_secs: u64,
    /// Longest wait between reconnection attempts after transient errors.
    pub backoff_max_secs: u64,
    /// How often the daemon looks for added, changed or removed accounts.
    pub account_check_ms: u64,
    /// Lease on an account held by one daemon when several share a database.
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (text on a terminal or under journald, JSON otherwise), `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,mailsync::imap=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: "sqlite://./data/mailsync.db".into(), max_connections: 8, connect_timeout_secs: 10 }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { listen: ([127, 0, 0, 1], 8087).into(), token_file: "./data/api-tokens".into() }
    }
}

impl Default for BccDropConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            protocol: DropProtocol::Smtp,
            listen: ([127, 0, 0, 1], 2525).into(),
            domain: "drop.localhost".into(),
            hostname: String::new(),
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 50,
            max_sessions: 100,
            idle_timeout_secs: 300,
            session_timeout_secs: 1800,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            trusted_authserv_id: String::new(),
            dns_servers: String::new(),
        }
    }
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self { key_file: "./data/master.key".into() }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            max_recipients: 100,
            batch_size: 500,
            max_text_bytes: 1 << 20,
            backfill_days: 0,
            connect_timeout_secs: 15,
            io_timeout_secs: 60,
            idle_renew_secs: 25 * 60,
            poll_interval_secs: 60,
            backoff_max_secs: 300,
            account_check_ms: 2000,
            lease_secs: 30,
        }
    }
}

impl Default for SmtpRelayConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: RelayTls::Starttls,
            username: String::new(),
            password_file: PathBuf::new(),
            ca_file: PathBuf::new(),
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            send_timeout_secs: 60,
            max_attempts: 8,
            retry_base_secs: 30,
            retry_max_secs: 3600,
            daily_limit_per_user: 300,
            daily_limit_per_org: 5000,
            poll_ms: 1000,
            stale_sending_secs: 300,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Auto, level: "info".into() }
    }
}

impl Config {
    /// Loads `path` (if any), applies the process environment, validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not mutate the process's.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let overridden = apply_env(&mut table, env)?;
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            let reason = one_line(&e.inner().to_string());
            match overridden.iter().find(|(k, _)| *k == key) {
                Some((_, var)) => ConfigError::EnvKey { var: var.clone(), key, reason },
                None => ConfigError::FileKey { path: path.map(Path::to_path_buf).unwrap_or_default(), key, reason },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| Err(ConfigError::Invalid { key: key.into(), reason: reason.into() });
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return invalid("database.url", "must start with sqlite:// or postgres://");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        if self.database.connect_timeout_secs == 0 {
            return invalid("database.connect_timeout_secs", "must be at least 1");
        }
        let sync = &self.sync;
        for (key, value) in [
            ("sync.max_recipients", u64::from(sync.max_recipients)),
            ("sync.batch_size", u64::from(sync.batch_size)),
            ("sync.max_text_bytes", u64::from(sync.max_text_bytes)),
            ("sync.connect_timeout_secs", sync.connect_timeout_secs),
            ("sync.io_timeout_secs", sync.io_timeout_secs),
            ("sync.poll_interval_secs", sync.poll_interval_secs),
            ("sync.backoff_max_secs", sync.backoff_max_secs),
            ("sync.account_check_ms", sync.account_check_ms),
            ("sync.lease_secs", sync.lease_secs),
            ("outbound.send_timeout_secs", self.outbound.send_timeout_secs),
            ("outbound.max_attempts", u64::from(self.outbound.max_attempts)),
            ("outbound.retry_base_secs", self.outbound.retry_base_secs),
            ("outbound.retry_max_secs", self.outbound.retry_max_secs),
            ("outbound.poll_ms", self.outbound.poll_ms),
            ("outbound.stale_sending_secs", self.outbound.stale_sending_secs),
            ("bcc_drop.max_message_bytes", self.bcc_drop.max_message_bytes),
            ("bcc_drop.max_recipients", u64::from(self.bcc_drop.max_recipients)),
            ("bcc_drop.max_sessions", u64::from(self.bcc_drop.max_sessions)),
            ("bcc_drop.idle_timeout_secs", self.bcc_drop.idle_timeout_secs),
            ("bcc_drop.session_timeout_secs", self.bcc_drop.session_timeout_secs),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        let relay = &self.smtp_relay;
        if relay.tls == RelayTls::None && !relay.username.is_empty() && !crate::net::is_loopback_host(&relay.host) {
            return invalid(
                "smtp_relay.tls",
                "`none` would send the relay password in clear over the network: use starttls or implicit \
                 (none is for a relay on this machine)",
            );
        }
        if !(60..=29 * 60).contains(&sync.idle_renew_secs) {
            return invalid("sync.idle_renew_secs", "must be between 60 and 1740 (servers end IDLE at 30 minutes)");
        }
        if sync.lease_secs * 1000 <= sync.account_check_ms * 2 {
            return invalid(
                "sync.lease_secs",
                "must be more than twice sync.account_check_ms, or leases lapse between renewals",
            );
        }
        let domain = &self.bcc_drop.domain;
        if domain.is_empty()
            || domain.starts_with('.')
            || domain.ends_with('.')
            || !domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return invalid("bcc_drop.domain", "must be a domain name such as drop.example.com");
        }
        let drop = &self.bcc_drop;
        if drop.tls_cert_file.as_os_str().is_empty() != drop.tls_key_file.as_os_str().is_empty() {
            return invalid(
                "bcc_drop.tls_cert_file",
                "tls_cert_file and tls_key_file go together: set both or neither",
            );
        }
        if let Err(e) = drop.dns_server_addrs() {
            return invalid("bcc_drop.dns_servers", &e);
        }
        if drop.hostname.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return invalid("bcc_drop.hostname", "must be a host name without spaces");
        }
        if self.outbound.stale_sending_secs <= self.outbound.send_timeout_secs {
            return invalid(
                "outbound.stale_sending_secs",
                "must be more than outbound.send_timeout_secs, or a slow send is taken for a dead one",
            );
        }
        if !self.smtp_relay.host.is_empty() && self.smtp_relay.port == 0 {
            return invalid("smtp_relay.port", "must be a port number");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid("log.level", &format!("not a valid filter: {e}"));
        }
        Ok(())
    }

    /// The `(env var, dotted key)` pairs of every key, e.g. `("MAILSYNC_API_LISTEN", "api.listen")`.
    pub fn env_keys() -> Vec<(String, String)> {
        default_table()
            .iter()
            .flat_map(|(section, keys)| {
                keys.as_table().into_iter().flatten().map(move |(key, _)| {
                    let var = format!("{ENV_PREFIX}{section}_{key}").to_ascii_uppercase();
                    (var, format!("{section}.{key}"))
                })
            })
            .collect()
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    text.parse::<toml::Table>().map_err(|e| {
        // toml's own message spans several lines (with a source excerpt): keep it to one.
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        let message = one_line(e.message());
        let reason = match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        };
        ConfigError::Read { path: path.to_path_buf(), reason }
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn default_table() -> toml::Table {
    // Serializing our own plain-data defaults cannot fail.
    toml::Table::try_from(Config::default()).unwrap_or_default()
}

/// Applies `MAILSYNC_*` variables to `table`, typed like the key's default value.
/// Returns `(dotted key, variable)` for each override, to attribute later errors.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let defaults = default_table();
    let keys = Config::env_keys();
    let mut applied = Vec::new();
    for (var, raw) in env {
        if !var.starts_with(ENV_PREFIX) || var == CONFIG_ENV {
            continue;
        }
        let Some((_, dotted)) = keys.iter().find(|(v, _)| *v == var) else {
            let known = keys.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ");
            return Err(ConfigError::UnknownEnv { var, known });
        };
        let (section, key) = dotted.split_once('.').unwrap_or((dotted, ""));
        let default = &defaults[section][key];
        let value = typed_like(default, &raw).map_err(|reason| ConfigError::EnvKey {
            var: var.clone(),
            key: dotted.clone(),
            reason,
        })?;
        let section_table = table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table.as_table_mut() {
            Some(t) => {
                t.insert(key.to_string(), value);
            }
            None => {
                return Err(ConfigError::Invalid { key: section.to_string(), reason: "must be a table".into() });
            }
        }
        applied.push((dotted.clone(), var));
    }
    Ok(applied)
}

fn typed_like(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match default {
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| format!("expected an integer, got `{raw}`"))?)
        }
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| format!("expected true or false, got `{raw}`"))?)
        }
        toml::Value::Float(_) => {
            toml::Value::Float(raw.trim().parse().map_err(|_| format!("expected a number, got `{raw}`"))?)
        }
        _ => toml::Value::String(raw.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.sync.max_recipients, 100);
        assert!(config.api.listen.ip().is_loopback());
        assert!(config.bcc_drop.listen.ip().is_loopback());
    }

    #[test]
    fn env_overrides_file() {
        let file = write("[database]\nurl = \"sqlite://a.db\"\n[sync]\nmax_recipients = 5\n");
        let config = Config::load_with_env(
            Some(file.path()),
            env(&[
                ("MAILSYNC_DATABASE_URL", "postgres://u@h/db"),
                ("MAILSYNC_BCC_DROP_DOMAIN", "in.example.com"),
                ("MAILSYNC_CONFIG", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.database.url, "postgres://u@h/db");
        assert_eq!(config.bcc_drop.domain, "in.example.com");
        assert_eq!(config.sync.max_recipients, 5);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let file = write("[api]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
        let err = Config::load_with_env(Some(file.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains(&file.path().display().to_string()), "{err}");
        assert!(err.contains("lisen"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_reason() {
        let file = write("[api]\nlisten = \"not an address\"\n");
        let err = Config::load_with_env(Some(file.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("api.listen"), "{err}");
        let err =
            Config::load_with_env(None, env(&[("MAILSYNC_SYNC_MAX_RECIPIENTS", "lots")])).unwrap_err().to_string();
        assert!(err.contains("MAILSYNC_SYNC_MAX_RECIPIENTS") && err.contains("integer"), "{err}");
        let err = Config::load_with_env(None, env(&[("MAILSYNC_SYNC_MAX_RECIPIENTS", "0")])).unwrap_err().to_string();
        assert!(err.contains("sync.max_recipients"), "{err}");
    }

    #[test]
    fn syntax_error_is_one_line_with_line_number() {
        let file = write("[api]\nlisten = \n");
        let err = Config::load_with_env(Some(file.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_env_var_is_rejected() {
        let err = Config::load_with_env(None, env(&[("MAILSYNC_DATABSE_URL", "x")])).unwrap_err().to_string();
        assert!(err.contains("MAILSYNC_DATABSE_URL"), "{err}");
    }

    #[test]
    fn example_file_documents_every_key_with_its_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mailsync.example.toml");
        let example = read_table(&path).unwrap();
        assert_eq!(example, default_table(), "config/mailsync.example.toml is out of date");
    }

    #[test]
    fn a_relay_password_never_goes_in_clear_over_the_network() {
        let mut config = Config::default();
        config.smtp_relay.host = "relay.example.com".into();
        config.smtp_relay.tls = RelayTls::None;
        config.smtp_relay.username = "crm".into();
        let refused = config.validate().unwrap_err().to_string();
        assert!(refused.contains("smtp_relay.tls"), "{refused}");
        config.smtp_relay.host = "127.0.0.1".into();
        config.validate().unwrap();
        config.smtp_relay.host = "relay.example.com".into();
        config.smtp_relay.username = String::new();
        config.validate().unwrap();
    }
}
