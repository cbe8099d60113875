//! Backend API keys, kept only as SHA-256 digests and compared in constant time.
//!
//! Comparing digests rather than the keys makes every comparison the same length whatever the
//! key lengths, and [`subtle`] makes each comparison constant-time; every configured key is
//! compared on every check, so the time taken does not reveal which key (if any) matched.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The configured API keys. Empty means the backend API accepts no key.
#[derive(Default)]
pub(crate) struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Keys from a file: one per line; surrounding white space, blank lines and lines starting
    /// with `#` are ignored.
    pub(crate) fn from_file_contents(contents: &[u8]) -> Self {
        let keys = contents
            .split(|&byte| byte == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty() && !line.starts_with(b"#"));
        Self::from_keys(keys)
    }

    /// Keys given as a value (the `--api-keys` flag, which the configuration stores one key per
    /// line); surrounding white space and empty lines are ignored, `#` is not special.
    pub(crate) fn from_lines(value: &str) -> Self {
        let keys = value
            .lines()
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(str::as_bytes);
        Self::from_keys(keys)
    }

    fn from_keys<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Self {
        Self {
            digests: keys.map(|key| Sha256::digest(key).into()).collect(),
        }
    }

    /// Adds the keys of another source (`auth.api_keys_files` beside `auth.api_keys_file`).
    pub(crate) fn extend(&mut self, other: ApiKeys) {
        self.digests.extend(other.digests);
    }

    pub(crate) fn len(&self) -> usize {
        self.digests.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the keys, in time independent of which key matched.
    pub(crate) fn check(&self, presented: &str) -> bool {
        if presented.is_empty() {
            return false;
        }
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = Choice::from(0);
        for digest in &self.digests {
            found |= digest.ct_eq(&presented);
        }
        bool::from(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Comments, blank lines and surrounding white space (including `\r`) are not keys.
    #[test]
    fn file_lines_skip_comments_and_blanks() {
        let keys =
            ApiKeys::from_file_contents(b"# backend keys\n\nalpha\r\n  beta  \n#gamma\n\t\n");
        assert_eq!(keys.len(), 2);
        assert!(keys.check("alpha"));
        assert!(keys.check("beta"));
        assert!(!keys.check("gamma"));
        assert!(!keys.check("#gamma"));
        assert!(!keys.check(" beta"));
    }

    /// A value yields each non-empty line.
    #[test]
    fn value_splits_at_line_breaks() {
        let keys = ApiKeys::from_lines(" one\n two\n\n#three \n");
        assert_eq!(keys.len(), 3);
        for key in ["one", "two", "#three"] {
            assert!(keys.check(key), "{key}");
        }
        assert!(!keys.check("one\ntwo"));
    }

    /// Nothing matches an empty key set, and an empty key never matches.
    #[test]
    fn empty_never_matches() {
        assert!(!ApiKeys::default().check("anything"));
        assert!(!ApiKeys::default().check(""));
        assert!(!ApiKeys::from_lines("a").check(""));
        assert!(ApiKeys::from_lines(" \n ").is_empty());
    }
}
