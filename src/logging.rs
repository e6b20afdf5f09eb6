//! Log output: human-readable on a terminal or under journald, JSON lines otherwise.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates whose trace level would print credentials (async-imap logs LOGIN lines).
const NEVER_TRACE: &[&str] = &["async_imap", "imap_proto"];
/// Crates whose debug level would print credentials (lettre logs every line it writes,
/// AUTH included).
const NEVER_DEBUG: &[&str] = &["lettre"];

/// Replaces the running filter (set by [`init`]).
type Reloader = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static RELOAD: OnceLock<Reloader> = OnceLock::new();

/// Installs the global subscriber. Safe to call once per process.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_new(capped_filter(&config.level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !(terminal || journald),
    };
    // Each format is its own type; the reload handle is kept behind a closure.
    macro_rules! install {
        ($builder:expr) => {{
            let builder = $builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
            }
        }};
    }
    if json {
        install!(builder.json().flatten_event(true));
    } else if journald && !terminal {
        // journald stamps each line itself.
        install!(builder.with_ansi(false).without_time());
    } else {
        install!(builder.with_ansi(terminal));
    }
}

/// Switches the running log filter to `level` (a `[log] level` value, capped like at start).
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(capped_filter(level)).map_err(|e| format!("not a valid filter: {e}"))?;
    RELOAD.get().ok_or_else(|| "logging was not initialized".to_string())?(filter)
}

/// Appends `=debug` caps for crates whose trace output would leak secrets, overriding
/// whatever the operator's filter says about them.
pub fn capped_filter(level: &str) -> String {
    let mut parts: Vec<String> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !NEVER_TRACE.iter().chain(NEVER_DEBUG).any(|c| d.starts_with(c)))
        .map(String::from)
        .collect();
    let global_trace = parts.iter().any(|d| d == "trace");
    for krate in NEVER_TRACE {
        parts.push(format!("{krate}={}", if global_trace { "debug" } else { "info" }));
    }
    for krate in NEVER_DEBUG {
        parts.push(format!("{krate}=info"));
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    #[test]
    fn imap_crates_never_trace() {
        let f = super::capped_filter("trace,async_imap=trace");
        assert!(!f.contains("async_imap=trace"), "{f}");
        assert!(f.contains("async_imap=debug"), "{f}");
        let f = super::capped_filter("debug,lettre=trace");
        assert!(f.ends_with("lettre=info") && !f.contains("lettre=trace"), "{f}");
    }
}
