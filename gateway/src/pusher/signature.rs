//! Pusher's signatures: HMAC-SHA256 of a string with the app secret, in
//! lower-case hex. Channel authorizations sign `socket_id:channel` (with
//! `:channel_data` for presence); HTTP API requests sign the method, the path
//! and the sorted query, and carry the MD5 of their body.
//!
//! Comparisons run in constant time: a signature is a secret until it matches.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// HMAC-SHA256 of `message` under `secret`, as lower-case hex.
pub fn sign(secret: &[u8], message: &str) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `given` equals `expected`, in time independent of where they differ.
pub fn equal(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// What a channel authorization signs: `socket_id:channel`, and for presence
/// `:channel_data` as the client sent it.
pub fn channel_message(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// Whether `auth` (`key:signature`) authorizes `socket_id` on `channel` for
/// the app with `key` and `secret`.
pub fn channel_auth_is_valid(
    key: &str,
    secret: &[u8],
    auth: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else {
        return false;
    };
    let expected = sign(secret, &channel_message(socket_id, channel, channel_data));
    given_key == key && equal(signature, &expected)
}

/// Whether `auth` (`key:signature`) signs `user_data` for `socket_id`: what
/// the server SDKs' `authenticateUser` returns for `pusher:signin`.
pub fn user_auth_is_valid(
    key: &str,
    secret: &[u8],
    auth: &str,
    socket_id: &str,
    user_data: &str,
) -> bool {
    let Some((given_key, signature)) = auth.split_once(':') else {
        return false;
    };
    let expected = sign(secret, &format!("{socket_id}::user::{user_data}"));
    given_key == key && equal(signature, &expected)
}

/// The MD5 of a request body, as lower-case hex (`body_md5`).
pub fn body_md5(body: &[u8]) -> String {
    format!("{:x}", md5::compute(body))
}

/// What an HTTP API request signs: `METHOD\npath\nquery`, the query being
/// every parameter but `auth_signature`, keys lower-cased, sorted by key,
/// joined as `key=value` with `&`, values as decoded.
pub fn request_message(method: &str, path: &str, query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, &str)> = query
        .iter()
        .filter(|(key, _)| key != "auth_signature")
        .map(|(key, value)| (key.to_ascii_lowercase(), value.as_str()))
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    format!("{method}\n{path}\n{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Pusher's authentication docs: key
    /// `278d425bdf160c739803`, secret `7ad3773142a6692b25b8`.
    #[test]
    fn private_channel_signatures_match_pushers_example() {
        let signature = sign(b"7ad3773142a6692b25b8", "1234.1234:private-foobar");
        assert_eq!(
            signature,
            "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(channel_auth_is_valid(
            "278d425bdf160c739803",
            b"7ad3773142a6692b25b8",
            &format!("278d425bdf160c739803:{signature}"),
            "1234.1234",
            "private-foobar",
            None,
        ));
        assert!(!channel_auth_is_valid(
            "278d425bdf160c739803",
            b"7ad3773142a6692b25b8",
            &format!("278d425bdf160c739803:{signature}"),
            "1234.1235",
            "private-foobar",
            None,
        ));
        assert!(!channel_auth_is_valid(
            "other",
            b"7ad3773142a6692b25b8",
            &format!("278d425bdf160c739803:{signature}"),
            "1234.1234",
            "private-foobar",
            None,
        ));
        assert!(!channel_auth_is_valid(
            "k",
            b"s",
            "no-colon",
            "1.1",
            "private-x",
            None
        ));
    }

    /// Presence signatures cover the channel data as sent.
    #[test]
    fn presence_signatures_cover_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let signature = sign(b"secret", &channel_message("1.2", "presence-x", Some(data)));
        let auth = format!("key:{signature}");
        assert!(channel_auth_is_valid(
            "key",
            b"secret",
            &auth,
            "1.2",
            "presence-x",
            Some(data)
        ));
        assert!(!channel_auth_is_valid(
            "key",
            b"secret",
            &auth,
            "1.2",
            "presence-x",
            Some("{}")
        ));
        assert!(!channel_auth_is_valid(
            "key",
            b"secret",
            &auth,
            "1.2",
            "presence-x",
            None
        ));
    }

    /// Sign-in signatures cover the socket and the user data as sent.
    #[test]
    fn signin_signatures_cover_socket_and_user_data() {
        let data = r#"{"id":"7"}"#;
        let auth = format!("key:{}", sign(b"secret", &format!("1.2::user::{data}")));
        assert!(user_auth_is_valid("key", b"secret", &auth, "1.2", data));
        assert!(!user_auth_is_valid("key", b"secret", &auth, "1.3", data));
        assert!(!user_auth_is_valid(
            "key",
            b"secret",
            &auth,
            "1.2",
            r#"{"id":"8"}"#
        ));
    }

    /// The request string sorts lower-cased keys and leaves out the signature.
    #[test]
    fn request_strings_sort_the_query_without_the_signature() {
        let query = vec![
            ("auth_version".to_owned(), "1.0".to_owned()),
            ("auth_signature".to_owned(), "x".to_owned()),
            ("auth_key".to_owned(), "k".to_owned()),
            ("Body_md5".to_owned(), "m".to_owned()),
        ];
        assert_eq!(
            request_message("POST", "/apps/1/events", &query),
            "POST\n/apps/1/events\nauth_key=k&auth_version=1.0&body_md5=m"
        );
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
