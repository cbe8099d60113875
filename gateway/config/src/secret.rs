//! Secrets: a key given directly on the command line, or the file that holds it.
//!
//! The file never holds a secret (docs/config.md): it names a file, in Kubernetes a mounted
//! Secret, that the gateway reads when it starts and re-reads when it changes, so rotating needs
//! no restart. Only the development flags `--jwt-secret` and `--api-keys` carry values.

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from.
///
/// `Debug` prints a file's path but never a value, so a logged `Config` or `Args` leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file holding the secret; read (and re-read) by the gateway, never by this crate.
    File(PathBuf),
    /// The secret itself, from a flag or environment variable (development use).
    ///
    /// API keys given comma-separated on the command line are stored one per line, the same
    /// shape as an API keys file.
    Value(String),
}

impl Secret {
    /// Parses the `--jwt-secret` value: kept as given, but never empty.
    pub(crate) fn parse_value(value: &str) -> Result<Secret, String> {
        if value.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Secret::Value(value.to_owned()))
    }

    /// Parses the `--api-keys` value: comma-separated keys, stored one per line.
    pub(crate) fn parse_list(value: &str) -> Result<Secret, String> {
        let keys: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .collect();
        if keys.is_empty() {
            return Err("must hold at least one key".to_owned());
        }
        Ok(Secret::Value(keys.join("\n")))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::File(path) => f.debug_tuple("File").field(path).finish(),
            Secret::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value never reaches Debug output; a path does, since it is not secret.
    #[test]
    fn debug_redacts_values_but_not_paths() {
        let value = Secret::Value("hunter2".to_owned());
        assert_eq!(format!("{value:?}"), "Value(<redacted>)");
        let file = Secret::File(PathBuf::from("/etc/wsgate/key"));
        assert_eq!(format!("{file:?}"), "File(\"/etc/wsgate/key\")");
    }

    /// Comma-separated API keys are stored like a file: one key per line.
    #[test]
    fn api_keys_from_a_flag_are_stored_one_per_line() {
        assert_eq!(
            Secret::parse_list(" a, b,,c ").ok(),
            Some(Secret::Value("a\nb\nc".into()))
        );
        assert!(Secret::parse_list(" , ").is_err());
        assert!(Secret::parse_value("").is_err());
    }
}
