//! Secrets at rest: passwords and OAuth tokens are sealed with ChaCha20-Poly1305 (ring)
//! under a 32-byte master key.
//!
//! The key comes from the systemd credential `master-key` when the daemon runs with
//! `LoadCredential=`, else from `secrets.key_file`, which is generated (mode 0600) on first use.
//! Sealed format: `version (1) || nonce (12) || ciphertext || tag (16)`; the purpose string
//! (e.g. `imap-password`) is bound as associated data so a blob cannot be reused elsewhere.

use std::fmt;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const SEALED_VERSION: u8 = 1;
/// Name of the systemd credential holding the master key.
pub const MASTER_KEY_CREDENTIAL: &str = "master-key";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("master key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("a stored secret could not be decrypted (wrong master key, or the data was altered)")]
    Decrypt,
    #[error("the system random number generator failed")]
    Random,
}

/// A secret value in memory. It never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The plain value, for the one place that must send it (a LOGIN, an AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Secrets arrive in API requests; they are never serialized back out.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

pub struct MasterKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    /// Loads the key from the systemd credential directory if it holds one, else from
    /// `key_file`, creating that file with a fresh random key when it does not exist.
    pub fn load_or_create(key_file: &Path) -> Result<MasterKey, SecretsError> {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let credential = Path::new(&dir).join(MASTER_KEY_CREDENTIAL);
            if credential.exists() {
                return Self::read(&credential);
            }
        }
        match Self::read(key_file) {
            Err(SecretsError::KeyFile { reason, .. }) if reason == NOT_FOUND => Self::create(key_file),
            other => other,
        }
    }

    fn read(path: &Path) -> Result<MasterKey, SecretsError> {
        let err = |reason: String| SecretsError::KeyFile { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(if e.kind() == std::io::ErrorKind::NotFound { NOT_FOUND.into() } else { e.to_string() })
        })?;
        let bytes = hex::decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| err("expected 64 hexadecimal characters (a 32-byte key)".into()))?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "master key file is readable by group or others; chmod 600 it");
        }
        Self::from_bytes(&bytes).map_err(|_| err("unusable key".into()))
    }

    fn create(path: &Path) -> Result<MasterKey, SecretsError> {
        let err = |reason: String| SecretsError::KeyFile { path: path.to_path_buf(), reason };
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SecretsError::Random)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its directory: {e}")))?;
        }
        // create_new: two processes starting at once must not overwrite each other's key.
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        match file {
            Ok(mut file) => {
                file.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())
                    .and_then(|_| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                tracing::info!(path = %path.display(), "generated a new master key");
                Self::from_bytes(&bytes).map_err(|_| err("unusable key".into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::read(path),
            Err(e) => Err(err(format!("cannot create: {e}"))),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<MasterKey, SecretsError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| SecretsError::Decrypt)?;
        Ok(MasterKey { key: LessSafeKey::new(unbound), rng: SystemRandom::new() })
    }

    pub fn seal(&self, purpose: &str, secret: &Secret) -> Result<Vec<u8>, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SecretsError::Random)?;
        let mut data = secret.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose.as_bytes()), &mut data)
            .map_err(|_| SecretsError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(out)
    }

    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Secret, SecretsError> {
        let (&version, rest) = sealed.split_first().ok_or(SecretsError::Decrypt)?;
        if version != SEALED_VERSION || rest.len() < NONCE_LEN {
            return Err(SecretsError::Decrypt);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretsError::Decrypt)?;
        let mut data = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut data)
            .map_err(|_| SecretsError::Decrypt)?;
        String::from_utf8(plain.to_vec()).map(Secret).map_err(|_| SecretsError::Decrypt)
    }
}

const NOT_FOUND: &str = "does not exist";

/// Fills `buf` from the system CSPRNG (tokens, drop addresses).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), SecretsError> {
    SystemRandom::new().fill(buf).map_err(|_| SecretsError::Random)
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let key = MasterKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = key.seal("imap-password", &Secret::new("hunter2")).unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("imap-password", &sealed).unwrap().expose(), "hunter2");
        assert!(again.open("smtp-password", &sealed).is_err(), "purpose is bound");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(again.open("imap-password", &tampered).is_err());
    }

    #[test]
    fn malformed_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "not hex").unwrap();
        let err = MasterKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("64 hexadecimal"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
