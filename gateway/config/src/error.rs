//! Configuration errors: one line each, naming the key, where its value came from, and the
//! problem, because the operator of a crash-looping pod reads exactly one log line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded. The gateway prints it and exits with status 2.
///
/// `Display` is always one line starting with `invalid configuration:`; user-provided text
/// (keys, file names) has control characters escaped so it cannot break the line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` or `--check-config` could not be read.
    #[error(
        "invalid configuration: cannot read {}: {source}",
        printable_path(file)
    )]
    Read {
        /// The file.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The file is not TOML.
    #[error(
        "invalid configuration: {} is not valid TOML: {message}",
        printable_path(file)
    )]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message with its line and column, on one line.
        message: String,
    },

    /// The file has no `version`, so it cannot be known which keys it may hold.
    #[error(
        "invalid configuration: version in {}: missing; the file must start with `version = {}`",
        printable_path(file),
        crate::CONFIG_VERSION
    )]
    MissingVersion {
        /// The file.
        file: PathBuf,
    },

    /// The file's `version` is not a version (0, negative, or not an integer).
    #[error(
        "invalid configuration: version in {}: {version} is not a configuration version (this gateway knows version {})",
        printable_path(file),
        crate::CONFIG_VERSION
    )]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The value found, as written.
        version: String,
    },

    /// A key the gateway does not know, in a file of a version it knows: most likely a typo,
    /// which must not be silently ignored.
    #[error(
        "invalid configuration: unknown key {}{}",
        printable(key),
        Origin::File { file: file.clone(), line: *line }
    )]
    UnknownKey {
        /// The dotted key, e.g. `limits.sendqueue`.
        key: String,
        /// The file.
        file: PathBuf,
        /// The 1-based line where the key is written, when known.
        line: Option<usize>,
    },

    /// A file that a key names (a token key, API keys, NATS credentials) cannot be read when
    /// the gateway starts: in Kubernetes most often a Secret that was not mounted.
    #[error(
        "invalid configuration: {key}: cannot read {}: {source}",
        printable_path(file)
    )]
    Unreadable {
        /// The key that names the file, e.g. `auth.jwt_secret_file`.
        key: &'static str,
        /// The file.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A key's value is of the wrong type or out of range.
    #[error("invalid configuration: {}{origin}: {problem}", printable(key))]
    Invalid {
        /// The dotted key, e.g. `limits.send_queue`.
        key: String,
        /// Where the offending value came from.
        origin: Origin,
        /// What is wrong, e.g. `must be at least 1`.
        problem: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when it is about one; lets callers and tests branch
    /// without parsing the message.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::MissingVersion { .. } | ConfigError::UnsupportedVersion { .. } => {
                Some("version")
            }
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Unreadable { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }

    /// A value at `key` from `origin` is wrong in the way `problem` says.
    pub(crate) fn invalid(
        key: impl Into<String>,
        origin: Origin,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            origin,
            problem: one_line(&problem.into()),
        }
    }
}

/// Where a configuration value came from; printed in errors so the reader knows what to fix,
/// and only the layer that really set the value (the file, the flag or the variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file, and the line of the key when the parser knows it.
    File {
        /// The file.
        file: PathBuf,
        /// The 1-based line where the key is written.
        line: Option<usize>,
    },
    /// A command-line flag, e.g. `--send-queue`.
    Flag(&'static str),
    /// An environment variable, e.g. `WSGATE_SEND_QUEUE`.
    Env(&'static str),
    /// The built-in default (only in errors about two keys together).
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                file,
                line: Some(line),
            } => write!(f, " in {}, line {line}", printable_path(file)),
            Origin::File { file, line: None } => write!(f, " in {}", printable_path(file)),
            Origin::Flag(flag) => write!(f, " from {flag}"),
            Origin::Env(env) => write!(f, " from {env}"),
            Origin::Default => f.write_str(" (default)"),
        }
    }
}

/// Replaces line breaks in a message with `; ` so an error stays on one line.
pub(crate) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// User-provided text with control characters escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|char| {
            let escaped: Vec<char> = if char.is_control() {
                char.escape_default().collect()
            } else {
                vec![char]
            };
            escaped
        })
        .collect()
}

/// A path for an error message, with control characters escaped.
fn printable_path(path: &Path) -> String {
    printable(&path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Control characters in a key cannot split the message over lines.
    #[test]
    fn keys_with_line_breaks_stay_on_one_line() {
        let error = ConfigError::UnknownKey {
            key: "a\nb".to_owned(),
            file: PathBuf::from("/x\r.toml"),
            line: Some(3),
        };
        assert_eq!(
            error.to_string(),
            "invalid configuration: unknown key a\\nb in /x\\r.toml, line 3"
        );
    }
}
