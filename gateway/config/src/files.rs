//! The files a configuration names (token keys, API keys, NATS credentials and certificates),
//! checked at startup: a Secret that was not mounted is a configuration error naming its key,
//! with exit status 2, not a failure deep inside the authenticator.
//!
//! `--check-config` does not check them: it checks the file alone, and the files it names
//! exist only where the gateway runs (docs/config.md).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::{Config, Result, Secret};

impl Config {
    /// The files this configuration names, each with the key that names it, in the order of
    /// docs/config.md. NATS files count only when there is a NATS to connect to.
    pub fn named_files(&self) -> Vec<(&'static str, &Path)> {
        let auth = &self.auth;
        let mut files = Vec::new();
        if let Some(Secret::File(path)) = &auth.jwt_secret {
            files.push(("auth.jwt_secret_file", path.as_path()));
        }
        if let Some(path) = &auth.jwt_public_key_file {
            files.push(("auth.jwt_public_key_file", path.as_path()));
        }
        if let Some(path) = &auth.jwks_file {
            files.push(("auth.jwks_file", path.as_path()));
        }
        if let Some(Secret::File(path)) = &auth.api_keys {
            files.push(("auth.api_keys_file", path.as_path()));
        }
        for path in &auth.api_keys_files {
            files.push(("auth.api_keys_files", path.as_path()));
        }
        if self.nats_url.is_some() {
            let nats = &self.nats;
            for (key, path) in [
                ("nats.credentials_file", &nats.credentials_file),
                ("nats.tls_ca_file", &nats.tls_ca_file),
                ("nats.tls_cert_file", &nats.tls_cert_file),
                ("nats.tls_key_file", &nats.tls_key_file),
            ] {
                if let Some(path) = path {
                    files.push((key, path.as_path()));
                }
            }
        }
        files
    }

    /// Checks that every file the configuration names can be opened and read.
    ///
    /// Reads at most one byte of each; what a file holds is for its reader to judge.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Unreadable`] for the first file that is missing or unreadable, naming
    /// its key.
    pub fn check_files(&self) -> Result<()> {
        for (key, path) in self.named_files() {
            let readable = std::fs::File::open(path).and_then(|mut file| {
                let mut byte = [0_u8; 1];
                file.read(&mut byte).map(drop)
            });
            if let Err(source) = readable {
                return Err(ConfigError::Unreadable {
                    key,
                    file: PathBuf::from(path),
                    source,
                });
            }
        }
        Ok(())
    }
}
