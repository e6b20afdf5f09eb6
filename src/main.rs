use std::process::ExitCode;

use clap::Parser;
use mailsync::cli::{Cli, Command};
use mailsync::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("mailsync: error: {e}");
            return ExitCode::from(2);
        }
    };
    // One crypto provider for every TLS user in the process (IMAP, SMTP, HTTP clients).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut log = config.log.clone();
    if !matches!(cli.command, Command::Run) {
        // One-shot commands print their result on stdout; only problems go to stderr.
        log.level = "warn".into();
    }
    mailsync::logging::init(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailsync: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mailsync::cli::execute(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` keeps the whole cause chain on one line.
            eprintln!("mailsync: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
