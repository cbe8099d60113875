//! JWTs for tests: good ones (HS256 with the test secret, RS256 and ES256 with the keys
//! under `tests/testdata/`) and bad ones (forged, tampered, expired, `alg: none`).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use crate::gateway::TEST_JWT_SECRET;

/// The RSA private key (PKCS#8 PEM) that signs RS256 test tokens.
pub const RSA_PRIVATE_PEM: &str = include_str!("../testdata/rsa-private.pem");
/// Its public key, for `--jwt-public-key-file`.
pub const RSA_PUBLIC_PEM: &str = include_str!("../testdata/rsa-public.pem");
/// The P-256 private key (PKCS#8 PEM) that signs ES256 test tokens.
pub const EC_PRIVATE_PEM: &str = include_str!("../testdata/ec-private.pem");
/// Its public key, for `--jwt-public-key-file`.
pub const EC_PUBLIC_PEM: &str = include_str!("../testdata/ec-public.pem");

/// A file under `tests/testdata/`.
pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit in i64")
}

/// The claims of one token, built up by setters and signed by one of the `sign` methods.
#[derive(Debug, Clone)]
pub struct Token {
    claims: Map<String, Value>,
    kid: Option<String>,
}

impl Token {
    /// A token for `sub`, issued now, expiring in an hour, with no other claims.
    pub fn new(sub: &str) -> Self {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(sub));
        claims.insert("iat".into(), json!(now()));
        claims.insert("exp".into(), json!(now() + 3600));
        Self { claims, kid: None }
    }

    /// Any claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim (`exp`, `sub`, ...).
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// The `rooms` claim: patterns the user may join.
    pub fn rooms(self, patterns: &[&str]) -> Self {
        self.claim("rooms", json!(patterns))
    }

    /// The `publish` claim: patterns the user may publish to.
    pub fn publish(self, patterns: &[&str]) -> Self {
        self.claim("publish", json!(patterns))
    }

    /// `rooms: ["**"]`: may join and publish anywhere.
    pub fn all_rooms(self) -> Self {
        self.rooms(&["**"])
    }

    /// The `send` claim.
    pub fn send(self, allowed: bool) -> Self {
        self.claim("send", allowed)
    }

    /// `exp` = now + `seconds` (negative: already expired).
    pub fn expires_in(self, seconds: i64) -> Self {
        self.claim("exp", now() + seconds)
    }

    /// `nbf` = now + `seconds`.
    pub fn not_before_in(self, seconds: i64) -> Self {
        self.claim("nbf", now() + seconds)
    }

    /// The `aud` claim.
    pub fn audience(self, aud: &str) -> Self {
        self.claim("aud", aud)
    }

    /// The `iss` claim.
    pub fn issuer(self, iss: &str) -> Self {
        self.claim("iss", iss)
    }

    /// A `kid` in the header (JWKS key selection).
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    /// The claims as JSON.
    pub fn claims(&self) -> Value {
        Value::Object(self.claims.clone())
    }

    /// Signed with `algorithm` and `key`.
    ///
    /// # Panics
    /// When jsonwebtoken refuses the key for the algorithm (a test bug).
    pub fn sign(&self, algorithm: Algorithm, key: &EncodingKey) -> String {
        let mut header = Header::new(algorithm);
        header.kid.clone_from(&self.kid);
        jsonwebtoken::encode(&header, &self.claims, key).expect("signing a test token")
    }

    /// HS256 with `secret`.
    pub fn hs256(&self, secret: &str) -> String {
        self.sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
    }

    /// HS256 with [`TEST_JWT_SECRET`]: what the suites' gateways accept.
    pub fn signed(&self) -> String {
        self.hs256(TEST_JWT_SECRET)
    }

    /// HS512 with [`TEST_JWT_SECRET`]: the right secret with an algorithm the gateway
    /// was not configured for.
    pub fn hs512(&self) -> String {
        self.sign(
            Algorithm::HS512,
            &EncodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
        )
    }

    /// RS256 with the test RSA key.
    pub fn rs256(&self) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("test RSA key");
        self.sign(Algorithm::RS256, &key)
    }

    /// ES256 with the test P-256 key.
    pub fn es256(&self) -> String {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("test EC key");
        self.sign(Algorithm::ES256, &key)
    }

    /// `{"alg":"none"}` with an empty signature.
    pub fn unsigned(&self) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(self.claims().to_string());
        format!("{header}.{payload}.")
    }

    /// `alg: none` with the header spelled as some libraries accept it (`"None"`), and
    /// a real signature appended.
    pub fn unsigned_variant(&self) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"None","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(self.claims().to_string());
        let signature = self
            .signed()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        format!("{header}.{payload}.{signature}")
    }
}

/// `token` with its payload replaced by `claims` and the original signature kept: a
/// forgery a gateway that checks signatures refuses.
pub fn tampered(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let header = parts.next().unwrap_or_default();
    let _payload = parts.next();
    let signature = parts.next().unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flavour_of_token_has_three_parts() {
        let token = Token::new("alice").all_rooms();
        for t in [
            token.signed(),
            token.rs256(),
            token.es256(),
            token.unsigned(),
            token.hs512(),
        ] {
            assert_eq!(t.split('.').count(), 3, "{t}");
        }
        assert!(token.unsigned().ends_with('.'));
        let forged = tampered(
            &token.signed(),
            &json!({"sub": "mallory", "exp": now() + 60}),
        );
        assert_ne!(forged, token.signed());
        assert_eq!(forged.rsplit('.').next(), token.signed().rsplit('.').next());
    }
}
