//! The `Origin` allow-list (docs/protocol.md, "Connecting"): origins match on scheme,
//! host (case-insensitive) and port; `https://*.example.com` matches any
//! subdomain of example.com (not example.com itself).

/// One parsed origin: scheme, lowercase host, port (explicit or the scheme's default).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

fn parse(origin: &str) -> Option<Origin> {
    let (scheme, rest) = origin.trim().split_once("://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (address, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                port => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
            };
            (format!("[{address}]"), port)
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port.parse::<u16>().ok()?)),
            None => (rest.to_owned(), None),
        },
    };
    if host.is_empty() {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let port = port.or_else(|| default_port(&scheme));
    Some(Origin {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The configured allow-list.
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins {
    entries: Vec<Origin>,
}

/// An allow-list entry that is not an origin.
#[derive(Debug, thiserror::Error)]
#[error(
    "allowed_origins: {0:?} is not an origin like https://app.example.com or https://*.example.com"
)]
pub struct InvalidOrigin(pub String);

impl AllowedOrigins {
    /// Parses the allow-list; an empty list allows every origin.
    ///
    /// # Errors
    /// The first entry that is not `scheme://host[:port]`.
    pub fn new(entries: &[String]) -> Result<Self, InvalidOrigin> {
        let entries = entries
            .iter()
            .map(|entry| parse(entry).ok_or_else(|| InvalidOrigin(entry.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Self { entries })
    }

    /// Whether the list is empty (every origin allowed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the `Origin` header value `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let Some(origin) = parse(origin) else {
            return false;
        };
        self.entries.iter().any(|entry| {
            entry.scheme == origin.scheme
                && entry.port == origin.port
                && match entry.host.strip_prefix("*.") {
                    Some(domain) => origin
                        .host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                    None => entry.host == origin.host,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowedOrigins {
        AllowedOrigins::new(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_origins_match_on_scheme_host_and_port() {
        let allowed = list(&["https://app.example.com", "http://localhost:3000"]);
        assert!(allowed.allows("https://app.example.com"));
        assert!(allowed.allows("https://APP.example.com:443"));
        assert!(allowed.allows("http://localhost:3000"));
        assert!(!allowed.allows("http://app.example.com"));
        assert!(!allowed.allows("https://app.example.com:8443"));
        assert!(!allowed.allows("http://localhost:3001"));
        assert!(!allowed.allows("https://evil.com"));
        assert!(!allowed.allows("null"));
        assert!(!allowed.allows("https://app.example.com.evil.com"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let allowed = list(&["https://*.example.com"]);
        assert!(allowed.allows("https://a.example.com"));
        assert!(allowed.allows("https://a.b.example.com"));
        assert!(!allowed.allows("https://example.com"));
        assert!(!allowed.allows("https://badexample.com"));
        assert!(!allowed.allows("http://a.example.com"));
    }

    #[test]
    fn empty_list_allows_all_and_bad_entries_are_refused() {
        assert!(AllowedOrigins::default().allows("https://anything"));
        assert!(AllowedOrigins::new(&["example.com".into()]).is_err());
        assert!(AllowedOrigins::new(&["https://x.com/path".into()]).is_err());
    }
}
