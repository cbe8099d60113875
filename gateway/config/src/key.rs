//! The table of configuration keys: the one list that the file parser, the flags, the docs and
//! the operator all agree on.
//!
//! Every key of the file appears here exactly once, with its flag and environment variable when
//! it has them, its default as text and a one-line meaning. The parser uses [`Key::kind`] to
//! refuse a mistyped value with the key's name, and to tell an unknown key from a known one; the
//! tests check that [`FileConfig`](crate::FileConfig), [`Args`](crate::Args) and
//! `docs/config.md` cover exactly these keys. It is also where every default is written:
//! [`default_of`] reads a key's default into the field's type for the `Default` impls.

use serde::de::DeserializeOwned;

/// One configuration key.
///
/// The fields are plain text so that the docs, the operator and error messages can show them
/// without knowing the key's Rust type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted path in the file, e.g. `limits.send_queue`. A segment `<ns>` stands for any
    /// namespace name.
    pub key: &'static str,
    /// Command-line flag that overrides the key, e.g. `--send-queue`.
    pub flag: Option<&'static str>,
    /// Environment variable that overrides the key (below the flag), e.g. `WSGATE_SEND_QUEUE`.
    pub env: Option<&'static str>,
    /// The value used when no layer sets the key, as text for people (`unset` when absent).
    pub default: &'static str,
    /// What the key does, in one line.
    pub meaning: &'static str,
    /// The TOML type the file must give the key; checked before anything else reads the value.
    pub kind: Kind,
    /// `true` for keys added to version 1 after its first release (compatible extensions, marked
    /// in docs/config.md).
    pub extension: bool,
}

/// The TOML type a key takes in the file.
///
/// Checking types against this table, before serde sees the document, gives a type error the
/// dotted key and words for people ("must be an integer from 0 to 4294967295"), and lets the
/// same walk tell unknown keys from known ones, which a file of a newer version needs in order
/// to be read leniently. `serde_path_to_error` would give the dotted path too, but with serde's
/// wording ("invalid type: string \"big\", expected usize", "expected struct LimitsSection") and
/// no lenient mode; `figment` would bring a second TOML parser (toml 0.8) and still leave the
/// version rule and the per-layer origins of checked values to this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Text,
    /// A string, one of the listed words.
    Choice(&'static [&'static str]),
    /// `true` or `false`.
    Bool,
    /// An integer from `min` to `max`: the key's whole range, so the file's type check and
    /// the flags' range check give the same message ("must be an integer from 1 to …").
    Count {
        /// The smallest value the gateway accepts.
        min: u64,
        /// The largest value the gateway accepts (at most the Rust field's range).
        max: u64,
    },
    /// A number, integer or float.
    Number,
    /// An array of strings.
    TextList,
}

impl Kind {
    /// The largest integer a TOML file can hold, for counts stored in `u64` and `usize`.
    const I64_MAX: u64 = i64::MAX as u64;

    /// Any non-negative TOML integer.
    const COUNT: Kind = Kind::Count {
        min: 0,
        max: Self::I64_MAX,
    };

    /// A non-negative integer that fits a `u32`.
    const COUNT32: Kind = Kind::Count {
        min: 0,
        max: u32::MAX as u64,
    };

    /// A TOML integer of at least 1: a cap, a queue or a duration that 0 would make useless.
    const POSITIVE: Kind = Kind::Count {
        min: 1,
        max: Self::I64_MAX,
    };

    /// An integer of at least 1 that fits a `u32`.
    const POSITIVE32: Kind = Kind::Count {
        min: 1,
        max: u32::MAX as u64,
    };

    /// `limits.max_message_bytes`: 1 KiB to 64 MiB.
    const MESSAGE_BYTES: Kind = Kind::Count {
        min: crate::MIN_MESSAGE_BYTES as u64,
        max: crate::MAX_MESSAGE_BYTES as u64,
    };

    /// `worker_threads`: at least one, and not so many that a typo exhausts the threads a
    /// process may start.
    const WORKER_THREADS: Kind = Kind::Count {
        min: 1,
        max: crate::MAX_WORKER_THREADS as u64,
    };

    /// `history.replicas`: what a JetStream stream allows.
    const REPLICAS: Kind = Kind::Count {
        min: 1,
        max: crate::MAX_REPLICAS as u64,
    };

    /// How the type is named in an error message ("must be {expected}").
    pub fn expected(&self) -> String {
        match self {
            Kind::Text => "a string".to_owned(),
            Kind::Choice(words) => {
                let quoted: Vec<String> = words.iter().map(|word| format!("\"{word}\"")).collect();
                format!("one of {}", quoted.join(", "))
            }
            Kind::Bool => "true or false".to_owned(),
            Kind::Count { min, max } => format!("an integer from {min} to {max}"),
            Kind::Number => "a number".to_owned(),
            Kind::TextList => "an array of strings".to_owned(),
        }
    }

    /// Checks a TOML value against the kind, returning the problem in words.
    pub(crate) fn check(&self, value: &toml::Value) -> Result<(), String> {
        let fits = match (self, value) {
            (Kind::Text, toml::Value::String(_)) => true,
            (Kind::Choice(words), toml::Value::String(word)) => words.contains(&word.as_str()),
            (Kind::Bool, toml::Value::Boolean(_)) => true,
            (Kind::Count { min, max }, toml::Value::Integer(number)) => {
                u64::try_from(*number).is_ok_and(|number| (*min..=*max).contains(&number))
            }
            (Kind::Number, toml::Value::Integer(_) | toml::Value::Float(_)) => true,
            (Kind::TextList, toml::Value::Array(items)) => items
                .iter()
                .all(|item| matches!(item, toml::Value::String(_))),
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(format!("must be {}", self.expected()))
        }
    }

    /// Checks a count given by a flag (already a number) against the same range as the file's,
    /// with the same words; other kinds have nothing to check here.
    pub(crate) fn check_count(&self, value: u64) -> Result<(), String> {
        match self {
            Kind::Count { min, max } if !(*min..=*max).contains(&value) => {
                Err(format!("must be {}", self.expected()))
            }
            _ => Ok(()),
        }
    }
}

/// Writes a [`Key`] entry with less noise than the struct literal.
macro_rules! key {
    ($key:literal, $flag:expr, $env:expr, $default:literal, $kind:expr, $meaning:literal) => {
        Key {
            key: $key,
            flag: $flag,
            env: $env,
            default: $default,
            meaning: $meaning,
            kind: $kind,
            extension: false,
        }
    };
    (extension $key:literal, $flag:expr, $env:expr, $default:literal, $kind:expr, $meaning:literal) => {
        Key {
            key: $key,
            flag: $flag,
            env: $env,
            default: $default,
            meaning: $meaning,
            kind: $kind,
            extension: true,
        }
    };
}

/// The words `log_format` takes.
pub(crate) const LOG_FORMATS: &[&str] = &["text", "json"];

/// The words `history.storage` takes.
pub(crate) const STORAGES: &[&str] = &["file", "memory"];

mod table;

pub use table::KEYS;

/// The default of the key at `dotted`, read from its text in [`KEYS`] into the field's type.
///
/// The typed sections' `Default` impls and the resolver take their defaults from here, so each
/// default is written once: in the key table, which `docs/config.md` and `--help` show. A key
/// whose default is not a value (`unset`, `host name`) gives `T::default()`, and so would a
/// missing key or a text that does not read as `T`; the crate's tests prove neither happens
/// (`every_default_reads_as_its_kind`, `an_empty_file_gives_every_documented_default`).
pub(crate) fn default_of<T: DeserializeOwned + Default>(dotted: &str) -> T {
    default_value(dotted).unwrap_or_default()
}

/// The default of the key at `dotted` as `T`, when it has one that reads as `T`.
pub(crate) fn default_value<T: DeserializeOwned>(dotted: &str) -> Option<T> {
    let value = find(dotted)?.default_toml()?;
    T::deserialize(value).ok()
}

impl Key {
    /// The default as a TOML value, or `None` for `unset` and `host name`: bare words such as
    /// `file` are strings, everything else is read as TOML (`5000`, `true`, `["**"]`).
    pub(crate) fn default_toml(&self) -> Option<toml::Value> {
        if matches!(self.default, "unset" | "host name") {
            return None;
        }
        Some(match self.default.parse::<toml::Value>() {
            Ok(value) if !matches!(value, toml::Value::Datetime(_)) => value,
            _ => toml::Value::String(self.default.to_owned()),
        })
    }
}

/// The segment of [`Key::key`] that stands for any namespace name.
pub const NAMESPACE_SEGMENT: &str = "<ns>";

/// The suffix of a segment that stands for every element of an array of tables: the keys of
/// `[[pusher.apps]]` are written `pusher.apps[].id`.
pub const ARRAY_SEGMENT: &str = "[]";

/// Finds the key with the given dotted path, where a namespace name matches `<ns>`.
///
/// The path is split at every `.`, so a namespace whose name holds a dot is not found; the
/// parser works on the real TOML segments instead.
pub fn find(dotted: &str) -> Option<&'static Key> {
    let path: Vec<&str> = dotted.split('.').collect();
    find_path(&path)
}

/// Finds the key at a path of TOML table names, where a namespace name matches `<ns>` and
/// one element of an array of tables (`apps[0]`) matches the table's key (`apps[]`).
pub(crate) fn find_path(path: &[&str]) -> Option<&'static Key> {
    let path: Vec<String> = path.iter().map(|segment| generic(segment)).collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let path = path.as_slice();
    KEYS.iter()
        .find(|key| matches(key.key.split('.'), path) && key.key.split('.').count() == path.len())
}

/// `apps[0]` as the key table writes it (`apps[]`); any other segment as it is.
fn generic(segment: &str) -> String {
    match segment.strip_suffix(']').and_then(|s| s.rsplit_once('[')) {
        Some((name, index)) if index.chars().all(|c| c.is_ascii_digit()) => {
            format!("{name}{ARRAY_SEGMENT}")
        }
        _ => segment.to_owned(),
    }
}

/// Whether some key lies inside the table at `path` (e.g. `nats`, `namespaces.chat`).
pub(crate) fn is_table(path: &[&str]) -> bool {
    let path: Vec<String> = path.iter().map(|segment| generic(segment)).collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let path = path.as_slice();
    KEYS.iter()
        .any(|key| key.key.split('.').count() > path.len() && matches(key.key.split('.'), path))
}

/// Whether `path` matches the first segments of `key` (`<ns>` matching any one segment).
fn matches<'a>(mut key: impl Iterator<Item = &'a str>, path: &[&str]) -> bool {
    path.iter().all(|segment| {
        key.next()
            .is_some_and(|wanted| wanted == NAMESPACE_SEGMENT || wanted == *segment)
    })
}

/// Joins TOML table names into a dotted key, quoting names that are not bare TOML keys (so
/// `namespaces."a.b".presence` is not mistaken for four segments).
pub(crate) fn dotted(path: &[&str]) -> String {
    let quoted: Vec<String> = path
        .iter()
        .map(|segment| {
            // `apps[]` (the key table's) and `apps[0]` (one element's) are bare names.
            let name = match segment.strip_suffix(']').and_then(|s| s.rsplit_once('[')) {
                Some((name, index)) if index.chars().all(|c| c.is_ascii_digit()) => name,
                _ => segment,
            };
            let bare = !name.is_empty()
                && name
                    .chars()
                    .all(|char| char.is_ascii_alphanumeric() || char == '_' || char == '-');
            if bare {
                (*segment).to_owned()
            } else {
                format!("{segment:?}")
            }
        })
        .collect();
    quoted.join(".")
}

/// Renders [`KEYS`] as the Markdown table of `docs/config.md` (a test keeps the two equal).
pub fn markdown_table() -> String {
    let mut table =
        String::from("| key | flag / env | default | meaning |\n| --- | --- | --- | --- |\n");
    for key in KEYS {
        let overrides = match (key.flag, key.env) {
            (Some(flag), Some(env)) => format!("`{flag}` / `{env}`"),
            (Some(flag), None) => format!("`{flag}`"),
            (None, Some(env)) => format!("`{env}`"),
            (None, None) => "—".to_owned(),
        };
        let default = match key.default {
            "unset" | "host name" => key.default.to_owned(),
            code => format!("`{code}`"),
        };
        let extension = if key.extension { " (extension)" } else { "" };
        table.push_str(&format!(
            "| `{}` | {overrides} | {default} | {}{extension} |\n",
            key.key, key.meaning
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A namespace name matches `<ns>`, and nothing else is a wildcard.
    #[test]
    fn find_matches_namespace_keys_by_any_name() {
        assert_eq!(
            find("namespaces.chat.presence").map(|key| key.key),
            Some("namespaces.<ns>.presence")
        );
        assert_eq!(
            find("limits.send_queue").map(|key| key.key),
            Some("limits.send_queue")
        );
        assert!(find("limits.send_queu").is_none());
        assert!(find("limits").is_none());
        assert!(find("namespaces.chat").is_none());
    }

    /// Tables are recognised at every depth, including a namespace's table.
    #[test]
    fn is_table_recognises_sections() {
        assert!(is_table(&["nats"]));
        assert!(is_table(&["namespaces"]));
        assert!(is_table(&["namespaces", "a.b"]));
        assert!(!is_table(&["namespaces", "chat", "presence"]));
        assert!(!is_table(&["limits", "send_queue"]));
        assert!(!is_table(&["listen"]));
        assert!(!is_table(&["nat"]));
        assert_eq!(
            dotted(&["namespaces", "a.b", "presence"]),
            "namespaces.\"a.b\".presence"
        );
    }

    /// Every key is listed once, and the text fields fit a Markdown table row.
    #[test]
    fn keys_are_unique_and_fit_one_table_row() {
        for (index, key) in KEYS.iter().enumerate() {
            assert!(
                KEYS[index + 1..].iter().all(|other| other.key != key.key),
                "{} is listed twice",
                key.key
            );
            for text in [key.key, key.default, key.meaning] {
                assert!(!text.contains('|') && !text.contains('\n'), "{text:?}");
            }
            assert_eq!(key.flag.is_some(), key.env.is_some(), "{}", key.key);
        }
    }
}
