//! Why an account cannot sync, classified so that operators see the cause and the fix,
//! and so the worker knows whether to retry.

use std::fmt;

use crate::net::ConnectError;
use crate::net::tls::TlsError;

/// The classes shown in `mailsync status` (as `error_class`) and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The server refused the credentials.
    AuthFailed,
    /// The server says an app password (or OAuth) is required.
    AppPasswordNeeded,
    /// The certificate did not verify.
    CertificateInvalid,
    /// The host does not resolve or nothing listens on the port.
    HostOrPortWrong,
    /// The server offers no TLS; mailsync never sends credentials in clear.
    TlsRequired,
    /// The server throttles us or limits connections.
    Throttled,
    /// INBOX is missing.
    FolderMissing,
    /// The server does not speak IMAP as expected (or is POP3-only).
    Protocol,
    /// A timeout or a dropped connection.
    Network,
    /// The store failed (not the server).
    Store,
    /// The stored secret cannot be decrypted (master key changed).
    Secret,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 11] = [
        ErrorClass::AuthFailed,
        ErrorClass::AppPasswordNeeded,
        ErrorClass::CertificateInvalid,
        ErrorClass::HostOrPortWrong,
        ErrorClass::TlsRequired,
        ErrorClass::Throttled,
        ErrorClass::FolderMissing,
        ErrorClass::Protocol,
        ErrorClass::Network,
        ErrorClass::Store,
        ErrorClass::Secret,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::AuthFailed => "auth_failed",
            ErrorClass::AppPasswordNeeded => "app_password_needed",
            ErrorClass::CertificateInvalid => "certificate_invalid",
            ErrorClass::HostOrPortWrong => "host_or_port_wrong",
            ErrorClass::TlsRequired => "tls_required",
            ErrorClass::Throttled => "throttled",
            ErrorClass::FolderMissing => "folder_missing",
            ErrorClass::Protocol => "protocol",
            ErrorClass::Network => "network",
            ErrorClass::Store => "store",
            ErrorClass::Secret => "secret",
        }
    }

    /// What the operator should do about it.
    pub fn fix(self) -> &'static str {
        match self {
            ErrorClass::AuthFailed => "check the username and password, then update the account",
            ErrorClass::AppPasswordNeeded => {
                "create an app password at the provider (or use OAuth) and update the account"
            }
            ErrorClass::CertificateInvalid => {
                "fix the server certificate, or give the account a --ca-file that signs it"
            }
            ErrorClass::HostOrPortWrong => "check the IMAP host name and port (993 for implicit TLS, 143 for STARTTLS)",
            ErrorClass::TlsRequired => {
                "enable TLS on the server or use its TLS port; mailsync never logs in without TLS"
            }
            ErrorClass::Throttled => "nothing: mailsync retries with backoff; reduce other clients if it persists",
            ErrorClass::FolderMissing => "check the mailbox on the server; INBOX must exist",
            ErrorClass::Protocol => "check that the host and port are an IMAP server (not POP3 or SMTP)",
            ErrorClass::Network => "nothing: mailsync reconnects with backoff",
            ErrorClass::Store => "check the database; mailsync retries",
            ErrorClass::Secret => "restore the master key the account was added with, or re-add the account",
        }
    }

    /// Retrying without a change to the account may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorClass::Throttled | ErrorClass::Network | ErrorClass::Store)
    }

    pub fn is_permanent(self) -> bool {
        !self.is_transient()
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of one account's sync: its class and the plain-language details.
#[derive(Debug, Clone)]
pub struct SyncError {
    pub class: ErrorClass,
    pub detail: String,
}

impl SyncError {
    pub fn new(class: ErrorClass, detail: impl Into<String>) -> Self {
        SyncError { class, detail: detail.into() }
    }
    pub fn is_transient(&self) -> bool {
        self.class.is_transient()
    }
    pub fn is_permanent(&self) -> bool {
        self.class.is_permanent()
    }
    /// The message stored for `status`: what happened, then the fix.
    pub fn message(&self) -> String {
        format!("{}; fix: {}", self.detail, self.class.fix())
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class, self.detail)
    }
}

impl std::error::Error for SyncError {}

impl From<ConnectError> for SyncError {
    fn from(e: ConnectError) -> Self {
        let class = match e {
            ConnectError::Dns { .. } | ConnectError::Refused { .. } => ErrorClass::HostOrPortWrong,
            ConnectError::Timeout { .. } | ConnectError::Other { .. } => ErrorClass::Network,
        };
        SyncError::new(class, e.to_string())
    }
}

impl From<TlsError> for SyncError {
    fn from(e: TlsError) -> Self {
        let class = match e {
            TlsError::Certificate(_) | TlsError::CaFile { .. } | TlsError::ServerName(_) => {
                ErrorClass::CertificateInvalid
            }
            // A handshake against something that is not a TLS server (plain IMAP on 993's
            // place, POP3...) fails with a protocol-level error.
            TlsError::Handshake(ref m) if m.contains("InvalidContentType") || m.contains("corrupt message") => {
                ErrorClass::Protocol
            }
            TlsError::Handshake(_) => ErrorClass::Network,
        };
        SyncError::new(class, e.to_string())
    }
}

impl From<crate::store::StoreError> for SyncError {
    fn from(e: crate::store::StoreError) -> Self {
        SyncError::new(ErrorClass::Store, e.to_string())
    }
}

impl From<async_imap::error::Error> for SyncError {
    fn from(e: async_imap::error::Error) -> Self {
        use async_imap::error::Error as E;
        let class = match &e {
            E::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => ErrorClass::Network,
            E::Io(_) | E::ConnectionLost => ErrorClass::Network,
            E::No(m) | E::Bad(m) if is_throttling(m) => ErrorClass::Throttled,
            _ => ErrorClass::Protocol,
        };
        SyncError::new(class, format!("IMAP: {e}"))
    }
}

/// Classifies a refused login from the server's words (RFC 5530 response codes first).
pub fn classify_login_failure(text: &str) -> ErrorClass {
    let t = text.to_ascii_lowercase();
    if is_throttling(&t) {
        ErrorClass::Throttled
    } else if t.contains("application-specific password") || t.contains("app password") || t.contains("[webalert") {
        ErrorClass::AppPasswordNeeded
    } else if t.contains("[privacyrequired]") || t.contains("plaintext authentication disallowed") {
        ErrorClass::TlsRequired
    } else {
        ErrorClass::AuthFailed
    }
}

fn is_throttling(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["[limit]", "[unavailable]", "[inuse]", "too many", "throttl", "rate limit", "try again later"]
        .iter()
        .any(|w| t.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_failures() {
        assert_eq!(classify_login_failure("[AUTHENTICATIONFAILED] Authentication failed."), ErrorClass::AuthFailed);
        assert_eq!(
            classify_login_failure("[ALERT] Application-specific password required: https://support.google.com/"),
            ErrorClass::AppPasswordNeeded
        );
        assert_eq!(classify_login_failure("[LIMIT] Too many connections"), ErrorClass::Throttled);
        assert!(ErrorClass::Throttled.is_transient() && ErrorClass::AuthFailed.is_permanent());
    }
}
