//! Bearer-token authentication for `/v1`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};
use crate::secrets::{constant_time_eq, random_bytes};

/// Name of the systemd credential holding API tokens.
pub const TOKENS_CREDENTIAL: &str = "api-tokens";

/// Reads the API tokens, one per line (`#` starts a comment). The systemd credential
/// `api-tokens` takes precedence over `token_file`; a missing `token_file` is created
/// with one random token, mode 0600.
pub fn load_tokens(token_file: &Path) -> anyhow::Result<Vec<String>> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let credential = Path::new(&dir).join(TOKENS_CREDENTIAL);
        if credential.exists() {
            return parse_tokens(&credential);
        }
    }
    if !token_file.exists() {
        create_token_file(token_file)?;
    }
    parse_tokens(token_file)
}

fn parse_tokens(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("API token file {}: {e}", path.display()))?;
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if let Some(short) = tokens.iter().find(|t| t.len() < 16) {
        anyhow::bail!(
            "API token file {}: a token of {} characters is too short (at least 16)",
            path.display(),
            short.len()
        );
    }
    if tokens.is_empty() {
        anyhow::bail!("API token file {} holds no token", path.display());
    }
    Ok(tokens)
}

fn create_token_file(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    random_bytes(&mut bytes)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create API token file {}: {e}", path.display()))?;
    writeln!(file, "# mailsync API bearer tokens, one per line\n{}", hex::encode(bytes))?;
    tracing::info!(path = %path.display(), "generated an API token file");
    Ok(())
}

/// Middleware: 401 unless `Authorization: Bearer <token>` names a configured token.
pub async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)"));
    };
    // Compare against every token so the time taken does not reveal which one matched.
    let matched = state.tokens.iter().fold(false, |acc, t| constant_time_eq(t.as_bytes(), presented.as_bytes()) | acc);
    if !matched {
        return Err(ApiError::unauthorized("invalid bearer token"));
    }
    Ok(next.run(request).await)
}
