//! Checks of single values, each returning the problem in words for the caller to put beside
//! the key's name.

/// Longest cluster or node name: they become NATS subject tokens, and a short token keeps every
/// subject well under NATS limits.
pub(crate) const MAX_TOKEN_LEN: usize = 64;

/// Whether a character may appear in a subject token (also the rule for namespace names).
fn is_token_char(char: char) -> bool {
    char.is_ascii_alphanumeric() || char == '_' || char == '-'
}

/// A cluster or node name: one NATS subject token of 1 to 64 of `[A-Za-z0-9_-]`.
pub(crate) fn subject_token(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOKEN_LEN || !name.chars().all(is_token_char) {
        return Err(format!(
            "{name:?} must be 1 to {MAX_TOKEN_LEN} letters, digits, '_' or '-' (one NATS subject token)"
        ));
    }
    Ok(())
}

/// Longest Pusher app key.
pub(crate) const MAX_PUSHER_KEY_LEN: usize = 128;

/// A Pusher app key: one path segment of `/app/{key}` and a query value of the HTTP API, so 1 to
/// 128 of `[A-Za-z0-9_.-]` (hosted Pusher keys are hex; Soketi's and Sockudo's examples use `-`).
pub(crate) fn pusher_key(key: &str) -> Result<(), String> {
    let allowed = |char: char| is_token_char(char) || char == '.';
    if key.is_empty() || key.len() > MAX_PUSHER_KEY_LEN || !key.chars().all(allowed) {
        return Err(format!(
            "{key:?} must be 1 to {MAX_PUSHER_KEY_LEN} letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// A namespace name: the part of a room name before the first `:`, restricted to `[A-Za-z0-9_-]`.
pub(crate) fn namespace_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.chars().all(is_token_char) {
        return Err(format!(
            "namespace name {name:?} must be letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

/// Turns a host name into a valid node name: characters outside `[A-Za-z0-9_-]` become `_`, and
/// the result is cut to 64 characters (`wsgate` when nothing is left).
pub(crate) fn node_name_from_host(host: &str) -> String {
    let name: String = host
        .trim()
        .chars()
        .map(|char| if is_token_char(char) { char } else { '_' })
        .take(MAX_TOKEN_LEN)
        .collect();
    if name.is_empty() {
        "wsgate".to_owned()
    } else {
        name
    }
}

/// The machine's host name, for the default node name.
///
/// Read from the kernel, then `$HOSTNAME`, then `/etc/hostname` (no libc needed). This is the
/// crate's one look at the environment outside clap: a default cannot come from a flag.
pub(crate) fn host_name() -> String {
    let from_file = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|name| !name.is_empty())
    };
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.trim().is_empty())
        })
        .or_else(|| from_file("/etc/hostname"))
        .unwrap_or_default()
}

/// One entry of `allowed_origins`: `scheme://host[:port]` or `scheme://*.domain[:port]`, no
/// path. Returns it lower-cased, the form the gateway compares against.
pub(crate) fn origin(entry: &str) -> Result<String, String> {
    let shape = "must look like https://host[:port] or https://*.domain[:port]";
    let Some((scheme, authority)) = entry.split_once("://") else {
        return Err(format!("{entry:?} {shape}"));
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|char| char.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|char| char.is_ascii_alphanumeric() || matches!(char, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(format!("{entry:?} has no valid scheme; it {shape}"));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "{entry:?} must not have a path, not even '/' (browsers send the Origin without one)"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{entry:?} must not have user information"));
    }
    let (host, port) = split_port(authority);
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{entry:?} has an invalid port {port:?}"));
    }
    let domain = host.strip_prefix("*.").unwrap_or(host);
    let host_ok = if domain.starts_with('[') {
        host == domain
            && domain
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !domain.is_empty()
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|char| char.is_ascii_alphanumeric() || char == '-')
            })
    };
    if !host_ok {
        return Err(format!("{entry:?} has an invalid host; it {shape}"));
    }
    Ok(entry.to_ascii_lowercase())
}

/// Splits `host[:port]` (with `[v6]` hosts) into host and port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') || authority.starts_with("*.[") {
        return match authority.rfind("]:") {
            Some(end) => (&authority[..=end], Some(&authority[end + 2..])),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// The schemes async-nats accepts in a server URL.
const NATS_SCHEMES: &[&str] = &["nats", "tls", "ws", "wss"];

/// `nats_url`: comma-separated `nats://`, `tls://`, `ws://` or `wss://` URLs, or `host[:port]`
/// (which async-nats reads as `nats://host[:port]`). Returns the list with blanks around commas
/// removed.
pub(crate) fn nats_urls(urls: &str) -> Result<String, String> {
    let mut checked = Vec::new();
    for url in urls.split(',').map(str::trim) {
        if url.is_empty() {
            return Err(
                "has an empty entry; give comma-separated URLs like nats://nats:4222".to_owned(),
            );
        }
        let authority = match url.split_once("://") {
            Some((scheme, rest)) => {
                if !NATS_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                    return Err(format!(
                        "{url:?} has scheme {scheme:?}; use nats://, tls://, ws:// or wss://"
                    ));
                }
                // The part after the scheme: optional user info, then host[:port], then a path
                // for WebSocket URLs.
                let rest = rest.split('/').next().unwrap_or_default();
                rest.rsplit_once('@').map_or(rest, |(_, host)| host)
            }
            None => url,
        };
        let (host, port) = split_port(authority);
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("{url:?} has no host"));
        }
        if let Some(port) = port
            && port.parse::<u16>().is_err()
        {
            return Err(format!("{url:?} has an invalid port {port:?}"));
        }
        checked.push(url);
    }
    Ok(checked.join(","))
}

/// A room pattern of `auth.user_rooms` or `auth.anonymous_rooms` (docs/protocol.md): segments
/// split at `:`, each `*`, a final `**`, or a literal of room-name characters.
pub(crate) fn room_pattern(pattern: &str) -> Result<(), String> {
    let segments: Vec<&str> = pattern.split(':').collect();
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        let ok = match *segment {
            "*" => true,
            "**" => index == last,
            literal => {
                !literal.is_empty()
                    && literal.chars().all(|char| {
                        char.is_ascii_alphanumeric()
                            || matches!(char, '_' | '-' | '@' | '=' | '+' | '/')
                    })
            }
        };
        if !ok {
            return Err(format!(
                "room pattern {pattern:?} is invalid: segments split at ':' are '*', a final '**', or room-name characters"
            ));
        }
    }
    Ok(())
}

/// A trusted proxy: a CIDR such as `10.0.0.0/8` or `2001:db8::/32`, or a single address (a
/// network of one). Host bits below the prefix are cleared, so `10.1.2.3/8` is `10.0.0.0/8`.
pub(crate) fn ip_network(entry: &str) -> Result<ipnet::IpNet, String> {
    let text = entry.trim();
    if let Ok(network) = text.parse::<ipnet::IpNet>() {
        return Ok(network.trunc());
    }
    match text.parse::<std::net::IpAddr>() {
        Ok(address) => Ok(ipnet::IpNet::from(address)),
        Err(_) => Err(format!(
            "{entry:?} is not an IP network like 10.0.0.0/8 or 2001:db8::/32, nor an IP address"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Origins keep scheme, host and port; wildcards only as the first label; no path.
    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://*.example.com",
            "https://*.example.com:8443",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert!(origin(good).is_ok(), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://",
            "https://a..b",
            "https://app.example.com:99999",
            "https://*",
            "https://a.*.com",
            "*",
            "https://user@host",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
        assert_eq!(
            origin("HTTPS://App.Example.COM").ok().as_deref(),
            Some("https://app.example.com")
        );
    }

    /// Every NATS scheme async-nats knows, and bare host:port, pass; others do not.
    #[test]
    fn nats_urls_accept_the_async_nats_forms() {
        assert_eq!(
            nats_urls("nats://a:4222, tls://b:4222,ws://c:80/path,wss://user:pass@d,e:4222,f")
                .ok()
                .as_deref(),
            Some("nats://a:4222,tls://b:4222,ws://c:80/path,wss://user:pass@d,e:4222,f")
        );
        for bad in ["http://a:4222", "nats://a:4222,,b", "nats://", "a:port", ""] {
            assert!(nats_urls(bad).is_err(), "{bad}");
        }
    }

    /// Host names become subject tokens, and the rule for tokens holds.
    #[test]
    fn host_names_become_valid_node_names() {
        assert_eq!(
            node_name_from_host("web-1.example.com\n"),
            "web-1_example_com"
        );
        assert_eq!(node_name_from_host(&"x".repeat(100)).len(), MAX_TOKEN_LEN);
        assert_eq!(node_name_from_host(""), "wsgate");
        assert!(subject_token(&node_name_from_host(&host_name())).is_ok());
        assert!(subject_token("prod_chat-1").is_ok());
        assert!(subject_token("a.b").is_err());
        assert!(subject_token("").is_err());
        assert!(subject_token(&"x".repeat(65)).is_err());
    }

    /// Patterns follow the protocol's segment rules.
    #[test]
    fn room_patterns_follow_the_protocol() {
        for good in ["**", "chat:*", "user:alice:**", "a/b:c@d=e+f", "*:*"] {
            assert!(room_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "chat:", "**:x", "a::b", "chat.lobby", "ch*t", "a b"] {
            assert!(room_pattern(bad).is_err(), "{bad}");
        }
    }

    /// Networks and single addresses of both families are trusted-proxy entries; anything
    /// else is refused.
    #[test]
    fn trusted_proxies_are_networks_or_addresses() {
        let parsed = |text: &str| ip_network(text).map(|network| network.to_string());
        assert_eq!(parsed("10.0.0.0/8"), Ok("10.0.0.0/8".to_owned()));
        assert_eq!(parsed(" 10.1.2.3/8 "), Ok("10.0.0.0/8".to_owned()));
        assert_eq!(parsed("127.0.0.2"), Ok("127.0.0.2/32".to_owned()));
        assert_eq!(parsed("2001:db8::/32"), Ok("2001:db8::/32".to_owned()));
        assert_eq!(parsed("::1"), Ok("::1/128".to_owned()));
        for bad in ["", "10.0.0.0/33", "proxy.internal", "10.0.0/8", "*"] {
            assert!(ip_network(bad).is_err(), "{bad}");
        }
    }
}
