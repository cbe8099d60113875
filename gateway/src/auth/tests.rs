//! Tests of the authenticator as a whole: tokens of every supported kind, the claim rules of
//! docs/protocol.md, key rotation and API keys. Keys come from `testdata/` (test keys only).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use wsgate_config::{AuthConfig, Secret};

use super::*;

const SECRET: &str = "wsgate-test-hs256-secret-0123456789abcdef";
const OTHER_SECRET: &str = "wsgate-test-hs256-secret-rotated-0123456789";

const RSA_A_PRIVATE: &[u8] = include_bytes!("testdata/test_rsa_a_private.pem");
const RSA_A_PUBLIC: &[u8] = include_bytes!("testdata/test_rsa_a_public.pem");
const RSA_A_PUBLIC_PKCS1: &[u8] = include_bytes!("testdata/test_rsa_a_public_pkcs1.pem");
const RSA_B_PRIVATE: &[u8] = include_bytes!("testdata/test_rsa_b_private.pem");
const RSA_B_PUBLIC: &[u8] = include_bytes!("testdata/test_rsa_b_public.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/test_ec_p256_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("testdata/test_ec_p256_public.pem");
const EC_P384_PUBLIC: &[u8] = include_bytes!("testdata/test_ec_p384_public.pem");
const RSA_1024_PUBLIC: &[u8] = include_bytes!("testdata/test_rsa_1024_public.pem");

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wsgate-auth-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Valid claims for `alice`, expiring in ten minutes.
fn claims() -> Value {
    json!({ "sub": "alice", "exp": now() + 600 })
}

/// `claims()` with `changes` merged in; a `null` change removes the claim.
fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn sign(algorithm: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    hs256_with(SECRET, claims)
}

fn hs256_with(secret: &str, claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn rsa_a() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_A_PRIVATE).unwrap()
}

fn rsa_b() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_B_PRIVATE).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE).unwrap()
}

/// A token assembled by hand, for headers `jsonwebtoken` refuses to produce.
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// Settings with the HS256 test secret and user rooms `chat:*`.
fn hs_settings() -> AuthConfig {
    AuthConfig {
        jwt_secret: Some(Secret::Value(SECRET.to_owned())),
        user_rooms: vec!["chat:*".to_owned()],
        ..AuthConfig::default()
    }
}

fn authenticator(settings: AuthConfig) -> Authenticator {
    Authenticator::new(settings).unwrap()
}

/// Settings whose only key is the PEM public key `pem`, written to `dir`.
fn pem_settings(dir: &TempDir, pem: &[u8]) -> AuthConfig {
    AuthConfig {
        jwt_public_key_file: Some(dir.write("public.pem", pem)),
        ..AuthConfig::default()
    }
}

/// A JWK for a PEM public key, with `kid`.
fn jwk(pem: &[u8], ec: bool, kid: &str) -> Value {
    let key = if ec {
        DecodingKey::from_ec_pem(pem).unwrap()
    } else {
        DecodingKey::from_rsa_pem(pem).unwrap()
    };
    let mut jwk = serde_json::to_value(Jwk::from_decoding_key(&key, None).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk
}

fn oct_jwk(secret: &str, kid: &str) -> Value {
    json!({ "kty": "oct", "kid": kid, "k": URL_SAFE_NO_PAD.encode(secret), "alg": "HS256" })
}

fn jwks_settings(dir: &TempDir, keys: Vec<Value>) -> AuthConfig {
    let document = json!({ "keys": keys });
    AuthConfig {
        jwks_file: Some(dir.write("jwks.json", document.to_string())),
        ..AuthConfig::default()
    }
}

/// A good HS256 token yields the user, the configured default rooms and the expiry.
#[test]
fn hs256_token_yields_identity_with_default_rooms() {
    let auth = authenticator(hs_settings());
    let claims = claims();
    let identity = auth.verify(&hs256(&claims)).unwrap();
    assert_eq!(identity.user, "alice");
    assert_eq!(identity.join, Patterns::parse(["chat:*"]).unwrap());
    assert_eq!(identity.publish, identity.join);
    assert!(identity.can_join("chat:lobby"));
    assert!(identity.can_publish("chat:lobby"));
    assert!(!identity.can_join("news"));
    assert!(!identity.send);
    assert!(!identity.anonymous);
    assert_eq!(identity.expires_at, claims["exp"].as_u64());
    assert!(auth.has_keys());
}

/// A token signed with another secret, or with its claims swapped, fails the signature check.
#[test]
fn forged_signature_is_refused() {
    let auth = authenticator(hs_settings());
    assert_eq!(
        auth.verify(&hs256_with(OTHER_SECRET, &claims())),
        Err(AuthError::BadSignature)
    );

    let genuine = hs256(&claims());
    let forged_claims = hs256_with(OTHER_SECRET, &claims_with(json!({ "sub": "root" })));
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged_parts: Vec<&str> = forged_claims.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
    assert_eq!(auth.verify(&spliced), Err(AuthError::BadSignature));

    let truncated = &genuine[..genuine.len() - 2];
    assert_eq!(auth.verify(truncated), Err(AuthError::BadSignature));
}

/// `exp` is honoured with the leeway: valid until `exp + leeway`, expired from then on.
#[test]
fn expiry_is_checked_with_the_leeway() {
    let auth = authenticator(hs_settings());
    assert_eq!(auth.leeway(), Duration::from_secs(30));
    let token = hs256(&claims_with(json!({ "exp": 1_000_000 })));

    let identity = auth.verify_at(&token, 1_000_029).unwrap();
    assert_eq!(identity.expires_at, Some(1_000_000));
    assert_eq!(auth.deadline(&identity), Some(1_000_030));
    assert!(!auth.identity_expired(&identity, 1_000_029));
    assert!(auth.identity_expired(&identity, 1_000_030));

    assert_eq!(auth.verify_at(&token, 1_000_030), Err(AuthError::Expired));
    assert_eq!(auth.verify_at(&token, 2_000_000), Err(AuthError::Expired));
    // With the real clock: expired long ago, and expired just within the leeway.
    assert_eq!(
        auth.verify(&hs256(&claims_with(json!({ "exp": now() - 3600 })))),
        Err(AuthError::Expired)
    );
    assert!(
        auth.verify(&hs256(&claims_with(json!({ "exp": now() - 5 }))))
            .is_ok()
    );
}

/// A fractional `exp` counts as its whole seconds; a non-numeric or negative one is invalid.
#[test]
fn exp_must_be_a_numeric_date() {
    let auth = authenticator(hs_settings());
    let fractional = hs256(&claims_with(json!({ "exp": 1_000_000.75 })));
    assert_eq!(
        auth.verify_at(&fractional, 1_000_000).unwrap().expires_at,
        Some(1_000_000)
    );
    for exp in [json!("1000000"), json!(-5), json!(true), json!([1])] {
        let token = hs256(&claims_with(json!({ "exp": exp })));
        assert_eq!(
            auth.verify(&token),
            Err(AuthError::InvalidClaim("exp")),
            "{exp}"
        );
    }
}

/// `nbf` in the future beyond the leeway is refused; within it, accepted.
#[test]
fn not_before_is_checked_with_the_leeway() {
    let auth = authenticator(hs_settings());
    let token = hs256(&claims_with(json!({ "nbf": 1_000_000, "exp": 2_000_000 })));
    assert_eq!(auth.verify_at(&token, 999_969), Err(AuthError::NotYetValid));
    assert!(auth.verify_at(&token, 999_970).is_ok());
    assert!(auth.verify_at(&token, 1_500_000).is_ok());
    assert_eq!(
        auth.verify(&hs256(&claims_with(json!({ "nbf": now() + 3600 })))),
        Err(AuthError::NotYetValid)
    );
    let bad = hs256(&claims_with(json!({ "nbf": "soon" })));
    assert_eq!(auth.verify(&bad), Err(AuthError::InvalidClaim("nbf")));
}

/// `alg: none` is refused however it is spelled and whatever follows the last dot.
#[test]
fn alg_none_is_refused() {
    let auth = authenticator(hs_settings());
    for alg in ["none", "None", "NONE"] {
        let header = json!({ "alg": alg, "typ": "JWT" });
        assert_eq!(
            auth.verify(&raw_token(&header, &claims(), "")),
            Err(AuthError::WrongAlgorithm)
        );
        let genuine = hs256(&claims());
        let signature = genuine.rsplit('.').next().unwrap();
        assert_eq!(
            auth.verify(&raw_token(&header, &claims(), signature)),
            Err(AuthError::WrongAlgorithm)
        );
    }
}

/// Algorithms other than HS256, RS256 and ES256 are refused, even with a matching key family.
#[test]
fn unsupported_algorithms_are_refused() {
    let auth = authenticator(hs_settings());
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    for algorithm in [Algorithm::HS384, Algorithm::HS512] {
        assert_eq!(
            auth.verify(&sign(algorithm, None, &claims(), &secret)),
            Err(AuthError::WrongAlgorithm)
        );
    }
    let missing = raw_token(&json!({ "typ": "JWT" }), &claims(), "AA");
    assert_eq!(
        auth.verify(&missing),
        Err(AuthError::Malformed("header has no `alg`"))
    );
}

/// RS256 tokens verify with an SPKI or PKCS#1 PEM public key; another RSA key's token does not.
#[test]
fn rs256_verifies_with_a_pem_public_key() {
    let dir = TempDir::new();
    for pem in [RSA_A_PUBLIC, RSA_A_PUBLIC_PKCS1] {
        let auth = authenticator(pem_settings(&dir, pem));
        let identity = auth
            .verify(&sign(Algorithm::RS256, None, &claims(), &rsa_a()))
            .unwrap();
        assert_eq!(identity.user, "alice");
        // Tokens often carry a `kid` even when one static key is configured.
        assert!(
            auth.verify(&sign(Algorithm::RS256, Some("any"), &claims(), &rsa_a()))
                .is_ok()
        );
        assert_eq!(
            auth.verify(&sign(Algorithm::RS256, None, &claims(), &rsa_b())),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            auth.verify(&sign(Algorithm::ES256, None, &claims(), &ec())),
            Err(AuthError::WrongAlgorithm)
        );
        assert_eq!(
            auth.verify(&sign(Algorithm::PS256, None, &claims(), &rsa_a())),
            Err(AuthError::WrongAlgorithm)
        );
    }
}

/// ES256 tokens verify with an EC P-256 PEM public key; RS256 tokens are refused by it.
#[test]
fn es256_verifies_with_a_pem_public_key() {
    let dir = TempDir::new();
    let auth = authenticator(pem_settings(&dir, EC_PUBLIC));
    let identity = auth
        .verify(&sign(Algorithm::ES256, None, &claims(), &ec()))
        .unwrap();
    assert_eq!(identity.user, "alice");
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, None, &claims(), &rsa_a())),
        Err(AuthError::WrongAlgorithm)
    );
    let forged = sign(
        Algorithm::ES256,
        None,
        &claims_with(json!({ "sub": "mallory" })),
        &ec(),
    );
    let genuine = sign(Algorithm::ES256, None, &claims(), &ec());
    let spliced = format!(
        "{}.{}",
        forged.rsplit_once('.').unwrap().0,
        genuine.rsplit_once('.').unwrap().1
    );
    assert_eq!(auth.verify(&spliced), Err(AuthError::BadSignature));
}

/// An RS256 token presented to a gateway configured only with an HS256 secret fails.
#[test]
fn rs256_token_fails_on_hs256_only_config() {
    let auth = authenticator(hs_settings());
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, None, &claims(), &rsa_a())),
        Err(AuthError::WrongAlgorithm)
    );
}

/// Algorithm confusion: an HS256 token whose "secret" is the RSA public key PEM never verifies,
/// whether or not an HS256 secret is configured too.
#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let dir = TempDir::new();
    let confused = sign(
        Algorithm::HS256,
        None,
        &claims(),
        &EncodingKey::from_secret(RSA_A_PUBLIC),
    );

    let rsa_only = authenticator(pem_settings(&dir, RSA_A_PUBLIC));
    assert_eq!(rsa_only.verify(&confused), Err(AuthError::WrongAlgorithm));

    let both = authenticator(AuthConfig {
        jwt_secret: hs_settings().jwt_secret,
        ..pem_settings(&dir, RSA_A_PUBLIC)
    });
    assert_eq!(both.verify(&confused), Err(AuthError::BadSignature));
    assert!(both.verify(&hs256(&claims())).is_ok());
    assert!(
        both.verify(&sign(Algorithm::RS256, None, &claims(), &rsa_a()))
            .is_ok()
    );

    let jwks = authenticator(jwks_settings(&dir, vec![jwk(RSA_A_PUBLIC, false, "rsa-a")]));
    let confused_kid = sign(
        Algorithm::HS256,
        Some("rsa-a"),
        &claims(),
        &EncodingKey::from_secret(RSA_A_PUBLIC),
    );
    assert_eq!(jwks.verify(&confused_kid), Err(AuthError::WrongAlgorithm));
    assert_eq!(jwks.verify(&confused), Err(AuthError::WrongAlgorithm));
}

/// A JWKS selects keys by `kid`: each kid verifies its own tokens only; unknown kids fail.
#[test]
fn jwks_selects_keys_by_kid() {
    let dir = TempDir::new();
    let auth = authenticator(jwks_settings(
        &dir,
        vec![
            jwk(RSA_A_PUBLIC, false, "rsa-a"),
            jwk(RSA_B_PUBLIC, false, "rsa-b"),
            jwk(EC_PUBLIC, true, "ec-1"),
            oct_jwk(SECRET, "hs-1"),
        ],
    ));
    assert!(auth.has_keys());
    let a = sign(Algorithm::RS256, Some("rsa-a"), &claims(), &rsa_a());
    let b = sign(Algorithm::RS256, Some("rsa-b"), &claims(), &rsa_b());
    let e = sign(Algorithm::ES256, Some("ec-1"), &claims(), &ec());
    let h = sign(
        Algorithm::HS256,
        Some("hs-1"),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    for token in [&a, &b, &e, &h] {
        assert_eq!(auth.verify(token).unwrap().user, "alice");
    }

    let wrong_kid = sign(Algorithm::RS256, Some("rsa-a"), &claims(), &rsa_b());
    assert_eq!(auth.verify(&wrong_kid), Err(AuthError::BadSignature));
    let unknown = sign(Algorithm::RS256, Some("rsa-z"), &claims(), &rsa_a());
    assert_eq!(auth.verify(&unknown), Err(AuthError::UnknownKey));
    let no_kid = sign(Algorithm::RS256, None, &claims(), &rsa_a());
    assert_eq!(auth.verify(&no_kid), Err(AuthError::UnknownKey));
    let kid_of_other_type = sign(Algorithm::ES256, Some("rsa-a"), &claims(), &ec());
    assert_eq!(
        auth.verify(&kid_of_other_type),
        Err(AuthError::WrongAlgorithm)
    );
}

/// With a single-key JWKS, a token without `kid` uses that key; a wrong kid still fails.
#[test]
fn single_key_jwks_accepts_tokens_without_kid() {
    let dir = TempDir::new();
    let auth = authenticator(jwks_settings(&dir, vec![jwk(EC_PUBLIC, true, "ec-1")]));
    assert!(
        auth.verify(&sign(Algorithm::ES256, None, &claims(), &ec()))
            .is_ok()
    );
    assert_eq!(
        auth.verify(&sign(Algorithm::ES256, Some("ec-2"), &claims(), &ec())),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, None, &claims(), &rsa_a())),
        Err(AuthError::WrongAlgorithm)
    );
}

/// Keys wsgate cannot use are skipped; a JWKS with none left, a repeated kid or broken JSON is
/// an error naming the file and not quoting its contents.
#[test]
fn jwks_problems_are_reported() {
    let dir = TempDir::new();
    let unusable = vec![
        json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed" }),
        json!(jwk(EC_P384_PUBLIC, true, "p384")),
        {
            let mut enc = jwk(RSA_B_PUBLIC, false, "enc");
            enc["use"] = json!("enc");
            enc
        },
        {
            let mut rs512 = jwk(RSA_B_PUBLIC, false, "rs512");
            rs512["alg"] = json!("RS512");
            rs512
        },
    ];
    let mut with_usable = unusable.clone();
    with_usable.push(jwk(RSA_A_PUBLIC, false, "rsa-a"));
    let auth = authenticator(jwks_settings(&dir, with_usable));
    assert!(
        auth.verify(&sign(Algorithm::RS256, Some("rsa-a"), &claims(), &rsa_a()))
            .is_ok()
    );
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, Some("enc"), &claims(), &rsa_b())),
        Err(AuthError::UnknownKey)
    );

    let error = Authenticator::new(jwks_settings(&dir, unusable)).unwrap_err();
    assert_eq!(error.kind_label(), "key_file");
    assert!(error.to_string().contains("jwks.json"), "{error}");
    assert!(error.to_string().contains("no usable key"), "{error}");

    let twice = vec![jwk(RSA_A_PUBLIC, false, "k"), jwk(RSA_B_PUBLIC, false, "k")];
    let error = Authenticator::new(jwks_settings(&dir, twice)).unwrap_err();
    assert!(error.to_string().contains("\"k\" appears twice"), "{error}");

    let path = dir.write(
        "broken.json",
        format!(r#"{{"keys": [{{"kty": "oct", "k": {SECRET}}}]}}"#),
    );
    let error = Authenticator::new(AuthConfig {
        jwks_file: Some(path),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(error.to_string().contains("not valid JSON"), "{error}");
    assert!(!error.to_string().contains(SECRET), "{error}");

    let short = vec![jwk(RSA_1024_PUBLIC, false, "small")];
    let error = Authenticator::new(jwks_settings(&dir, short)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("key \"small\": RSA key has 1024 bits"),
        "{error}"
    );

    let mut no_exponent = jwk(RSA_A_PUBLIC, false, "no-e");
    no_exponent.as_object_mut().unwrap().remove("e");
    let error = Authenticator::new(jwks_settings(&dir, vec![no_exponent])).unwrap_err();
    assert!(
        error.to_string().contains("member `e` is missing"),
        "{error}"
    );

    let mut huge_exponent = jwk(RSA_A_PUBLIC, false, "big-e");
    huge_exponent["e"] = json!(URL_SAFE_NO_PAD.encode([1u8; 9]));
    let error = Authenticator::new(jwks_settings(&dir, vec![huge_exponent])).unwrap_err();
    assert!(
        error.to_string().contains("exponent is out of range"),
        "{error}"
    );
}

/// `aud` is checked only when configured, and may then be a string or an array.
#[test]
fn audience_is_checked_when_configured() {
    let auth = authenticator(AuthConfig {
        audience: Some("wsgate".to_owned()),
        ..hs_settings()
    });
    let with = |aud: Value| hs256(&claims_with(json!({ "aud": aud })));
    assert!(auth.verify(&with(json!("wsgate"))).is_ok());
    assert!(auth.verify(&with(json!(["other", "wsgate"]))).is_ok());
    assert_eq!(
        auth.verify(&with(json!("other"))),
        Err(AuthError::BadAudience)
    );
    assert_eq!(
        auth.verify(&with(json!(["other"]))),
        Err(AuthError::BadAudience)
    );
    assert_eq!(auth.verify(&with(json!([]))), Err(AuthError::BadAudience));
    assert_eq!(
        auth.verify(&with(json!(7))),
        Err(AuthError::InvalidClaim("aud"))
    );
    assert_eq!(
        auth.verify(&hs256(&claims())),
        Err(AuthError::MissingClaim("aud"))
    );

    let unconfigured = authenticator(hs_settings());
    assert!(unconfigured.verify(&with(json!("anything"))).is_ok());
    assert!(unconfigured.verify(&with(json!(["a", "b"]))).is_ok());
}

/// `iss` must equal the configured issuer when one is configured.
#[test]
fn issuer_is_checked_when_configured() {
    let auth = authenticator(AuthConfig {
        issuer: Some("https://id.example.com".to_owned()),
        ..hs_settings()
    });
    let with = |iss: Value| hs256(&claims_with(json!({ "iss": iss })));
    assert!(auth.verify(&with(json!("https://id.example.com"))).is_ok());
    assert_eq!(
        auth.verify(&with(json!("https://evil.example.com"))),
        Err(AuthError::BadIssuer)
    );
    assert_eq!(
        auth.verify(&with(json!(["https://id.example.com"]))),
        Err(AuthError::InvalidClaim("iss"))
    );
    assert_eq!(
        auth.verify(&hs256(&claims())),
        Err(AuthError::MissingClaim("iss"))
    );
    assert!(
        authenticator(hs_settings())
            .verify(&with(json!("https://evil.example.com")))
            .is_ok()
    );
}

/// `sub` is required and must be a non-empty string.
#[test]
fn sub_is_required() {
    let auth = authenticator(hs_settings());
    let with = |sub: Value| hs256(&claims_with(json!({ "sub": sub })));
    assert_eq!(
        auth.verify(&with(Value::Null)),
        Err(AuthError::MissingClaim("sub"))
    );
    assert_eq!(
        auth.verify(&with(json!(""))),
        Err(AuthError::InvalidClaim("sub"))
    );
    assert_eq!(
        auth.verify(&with(json!(42))),
        Err(AuthError::InvalidClaim("sub"))
    );
    // User ids may hold any characters.
    assert_eq!(
        auth.verify(&with(json!("a.b c:*>"))).unwrap().user,
        "a.b c:*>"
    );
}

/// A token without `exp` is refused when `require_exp` is set, and never expires otherwise.
#[test]
fn missing_exp_depends_on_require_exp() {
    let token = hs256(&json!({ "sub": "alice" }));
    let strict = authenticator(hs_settings());
    assert_eq!(strict.verify(&token), Err(AuthError::MissingClaim("exp")));

    let lenient = authenticator(AuthConfig {
        require_exp: false,
        ..hs_settings()
    });
    let identity = lenient.verify(&token).unwrap();
    assert_eq!(identity.expires_at, None);
    assert_eq!(lenient.deadline(&identity), None);
    assert!(!lenient.identity_expired(&identity, u64::MAX));
    // An `exp` that is present is still checked.
    let expired = hs256(&claims_with(json!({ "exp": 1 })));
    assert_eq!(lenient.verify(&expired), Err(AuthError::Expired));
}

/// `rooms`, `publish` and `send` claims set the permissions; `publish` defaults to `rooms`.
#[test]
fn permission_claims_set_the_identity() {
    let auth = authenticator(hs_settings());

    let rooms_only = auth
        .verify(&hs256(&claims_with(
            json!({ "rooms": ["game:*", "user:alice:**"], "send": true }),
        )))
        .unwrap();
    assert_eq!(
        rooms_only.join,
        Patterns::parse(["game:*", "user:alice:**"]).unwrap()
    );
    assert_eq!(rooms_only.publish, rooms_only.join);
    assert!(rooms_only.send);
    assert!(
        !rooms_only.can_join("chat:lobby"),
        "rooms replaces the user default"
    );

    let read_only = auth
        .verify(&hs256(&claims_with(
            json!({ "rooms": ["news:*"], "publish": [] }),
        )))
        .unwrap();
    assert!(read_only.can_join("news:today"));
    assert!(!read_only.can_publish("news:today"));

    let publish_only = auth
        .verify(&hs256(&claims_with(json!({ "publish": ["chat:lobby"] }))))
        .unwrap();
    assert_eq!(publish_only.join, Patterns::parse(["chat:*"]).unwrap());
    assert!(publish_only.can_publish("chat:lobby"));
    assert!(!publish_only.can_publish("chat:other"));

    let nothing = auth
        .verify(&hs256(&claims_with(json!({ "rooms": [] }))))
        .unwrap();
    assert!(nothing.join.is_empty() && nothing.publish.is_empty());

    let explicit_false = auth
        .verify(&hs256(&claims_with(json!({ "send": false }))))
        .unwrap();
    assert!(!explicit_false.send);
}

/// Claims of the wrong type make the token bad.
#[test]
fn mistyped_permission_claims_are_refused() {
    let auth = authenticator(hs_settings());
    let cases = [
        (
            json!({ "rooms": "chat:*" }),
            AuthError::InvalidClaim("rooms"),
        ),
        (json!({ "rooms": [1] }), AuthError::InvalidClaim("rooms")),
        (
            json!({ "publish": { "a": 1 } }),
            AuthError::InvalidClaim("publish"),
        ),
        (json!({ "send": "yes" }), AuthError::InvalidClaim("send")),
        (json!({ "send": 1 }), AuthError::InvalidClaim("send")),
    ];
    for (changes, expected) in cases {
        assert_eq!(
            auth.verify(&hs256(&claims_with(changes.clone()))),
            Err(expected),
            "{changes}"
        );
    }
}

/// An invalid pattern in a claim makes the token bad, and the error does not quote it.
#[test]
fn invalid_pattern_in_claim_is_refused() {
    let auth = authenticator(hs_settings());
    let error = auth
        .verify(&hs256(&claims_with(json!({ "rooms": ["ok:*", "evil*"] }))))
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::InvalidPattern {
            claim: "rooms",
            reason: "`*` must be a whole segment"
        }
    );
    assert!(!error.to_string().contains("evil"));
    assert_eq!(error.kind_label(), "invalid_pattern");

    let error = auth
        .verify(&hs256(&claims_with(json!({ "publish": ["a::b"] }))))
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::InvalidPattern {
            claim: "publish",
            reason: "empty segment"
        }
    );
}

/// Strings that are not compact JWS tokens are malformed.
#[test]
fn malformed_tokens_are_refused() {
    let auth = authenticator(hs_settings());
    let genuine = hs256(&claims());
    let (_, rest) = genuine.split_once('.').unwrap();
    let cases = [
        String::new(),
        "garbage".to_owned(),
        "a.b".to_owned(),
        format!("{genuine}.extra"),
        format!("!!!.{rest}"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1,2]")),
        raw_token(&json!({ "alg": "HS256", "crit": ["exp"] }), &claims(), "AA"),
        raw_token(&json!({ "alg": "HS256", "kid": 5 }), &claims(), "AA"),
    ];
    for token in &cases {
        let error = auth.verify(token).unwrap_err();
        assert_eq!(error.kind_label(), "malformed", "{token:?}: {error}");
    }
    // Claims that are not an object are reported after the signature is checked.
    let not_object = sign(
        Algorithm::HS256,
        None,
        &json!(["sub"]),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    assert_eq!(
        auth.verify(&not_object),
        Err(AuthError::Malformed("claims are not a JSON object"))
    );
}

/// Rotating the secret file and reloading swaps keys: old tokens fail, new ones verify.
#[test]
fn reload_picks_up_a_rotated_secret_file() {
    let dir = TempDir::new();
    let path = dir.write("jwt-secret", format!("{SECRET}\n"));
    let auth = authenticator(AuthConfig {
        jwt_secret: Some(Secret::File(path.clone())),
        ..hs_settings()
    });
    let old = hs256(&claims());
    let new = hs256_with(OTHER_SECRET, &claims());
    assert!(
        auth.verify(&old).is_ok(),
        "the trailing newline is not part of the secret"
    );
    assert_eq!(auth.reload(), Ok(false));

    fs::write(&path, OTHER_SECRET).unwrap();
    assert_eq!(auth.reload(), Ok(true));
    assert_eq!(auth.verify(&old), Err(AuthError::BadSignature));
    assert!(auth.verify(&new).is_ok());
    assert_eq!(auth.reload(), Ok(false));

    // A broken or missing file keeps the keys in force.
    fs::write(&path, "\n").unwrap();
    let error = auth.reload().unwrap_err();
    assert!(error.to_string().contains("jwt-secret"), "{error}");
    fs::remove_file(&path).unwrap();
    assert_eq!(auth.reload().unwrap_err().kind_label(), "key_file");
    assert!(auth.verify(&new).is_ok());
}

/// Kubernetes swaps the `..data` symlink of a mounted Secret; a reload follows it.
#[cfg(unix)]
#[test]
fn reload_follows_a_kubernetes_symlink_swap() {
    use std::os::unix::fs::symlink;

    let dir = TempDir::new();
    fs::create_dir(dir.path("..2026_01")).unwrap();
    fs::write(dir.path("..2026_01/api-keys"), "first\n").unwrap();
    symlink("..2026_01", dir.path("..data")).unwrap();
    symlink("..data/api-keys", dir.path("api-keys")).unwrap();
    let auth = authenticator(AuthConfig {
        api_keys: Some(Secret::File(dir.path("api-keys"))),
        ..hs_settings()
    });
    assert!(auth.check_api_key("first"));

    fs::create_dir(dir.path("..2026_02")).unwrap();
    fs::write(dir.path("..2026_02/api-keys"), "second\n").unwrap();
    symlink("..2026_02", dir.path("..data_tmp")).unwrap();
    fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
    fs::remove_dir_all(dir.path("..2026_01")).unwrap();

    assert_eq!(auth.reload(), Ok(true));
    assert!(!auth.check_api_key("first"));
    assert!(auth.check_api_key("second"));
}

/// A reload that fails on one file swaps nothing, even if another file changed.
#[test]
fn reload_is_all_or_nothing() {
    let dir = TempDir::new();
    let secret = dir.write("jwt-secret", SECRET);
    let public = dir.write("public.pem", RSA_A_PUBLIC);
    let auth = authenticator(AuthConfig {
        jwt_secret: Some(Secret::File(secret.clone())),
        jwt_public_key_file: Some(public.clone()),
        ..hs_settings()
    });
    fs::write(&secret, OTHER_SECRET).unwrap();
    fs::write(
        &public,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let error = auth.reload().unwrap_err();
    assert!(error.to_string().contains("public.pem"), "{error}");
    assert!(auth.verify(&hs256(&claims())).is_ok());
    assert!(auth.verify(&hs256_with(OTHER_SECRET, &claims())).is_err());
}

/// The background reloader applies a rotation within a few intervals and stops on cancel.
#[tokio::test]
async fn reloader_applies_rotation_and_stops_on_cancel() {
    let dir = TempDir::new();
    let path = dir.write("jwt-secret", SECRET);
    let auth = Arc::new(authenticator(AuthConfig {
        jwt_secret: Some(Secret::File(path.clone())),
        ..hs_settings()
    }));
    let cancel = CancellationToken::new();
    let reloader = Arc::clone(&auth).spawn_reloader(Duration::from_millis(100), cancel.clone());

    fs::write(&path, OTHER_SECRET).unwrap();
    let token = hs256_with(OTHER_SECRET, &claims());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while auth.verify(&token).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not applied in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), reloader)
        .await
        .unwrap()
        .unwrap();
}

/// API keys from a file: every key is accepted, anything else refused.
#[test]
fn api_keys_accept_each_configured_key() {
    let dir = TempDir::new();
    let path = dir.write(
        "api-keys",
        "# rotated 2026-11\nkey-one\nkey-two\n\nkey-three\n",
    );
    let auth = authenticator(AuthConfig {
        api_keys: Some(Secret::File(path)),
        ..hs_settings()
    });
    assert!(auth.has_api_keys());
    for key in ["key-one", "key-two", "key-three"] {
        assert!(auth.check_api_key(key), "{key}");
    }
    for key in [
        "",
        "key",
        "key-one ",
        "KEY-ONE",
        "key-one\nkey-two",
        "# rotated 2026-11",
    ] {
        assert!(!auth.check_api_key(key), "{key:?}");
    }

    let values = authenticator(AuthConfig {
        api_keys: Some(Secret::Value("alpha\nbeta".to_owned())),
        ..hs_settings()
    });
    assert!(values.check_api_key("alpha") && values.check_api_key("beta"));
    assert!(!values.check_api_key("gamma"));

    let none = authenticator(hs_settings());
    assert!(!none.has_api_keys());
    assert!(!none.check_api_key("key-one"));
}

/// A key from any of `auth.api_keys_files` authenticates on the backend API beside those of
/// `auth.api_keys_file`, and each file is re-read on its own when it changes.
#[test]
fn api_keys_files_add_keys_and_reload_independently() {
    let dir = TempDir::new();
    let main = dir.write("api-keys", "main-key\n");
    let first = dir.write("backend-a", "# backend a\na-key\n");
    let second = dir.write("backend-b", "b-key\n");
    let auth = authenticator(AuthConfig {
        api_keys: Some(Secret::File(main)),
        api_keys_files: vec![first, second.clone()],
        ..hs_settings()
    });
    for key in ["main-key", "a-key", "b-key"] {
        assert!(auth.check_api_key(key), "{key}");
    }

    fs::write(&second, "b-key-rotated\n").unwrap();
    assert_eq!(auth.reload(), Ok(true));
    assert!(auth.check_api_key("b-key-rotated"));
    assert!(!auth.check_api_key("b-key"));
    assert!(auth.check_api_key("main-key") && auth.check_api_key("a-key"));

    // Without `auth.api_keys_file`, the list alone enables the backend API.
    let only_list = authenticator(AuthConfig {
        api_keys_files: vec![second],
        ..hs_settings()
    });
    assert!(only_list.has_api_keys());
    assert!(only_list.check_api_key("b-key-rotated"));

    // A listed file without a key is refused like `auth.api_keys_file` is.
    let empty = dir.write("backend-c", "# none yet\n");
    let error = Authenticator::new(AuthConfig {
        api_keys_files: vec![empty],
        ..hs_settings()
    })
    .unwrap_err();
    assert!(error.to_string().contains("backend-c"), "{error}");
}

/// Through the whole chain: a file's `auth.api_keys_files` is resolved by the configuration,
/// loaded by the authenticator, and a key from its second file opens the backend API while an
/// unknown key does not.
#[tokio::test]
async fn a_key_from_the_second_api_keys_file_authenticates_on_the_backend_api() {
    use axum::body::Body;
    use http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    let dir = TempDir::new();
    let first = dir.write("backend-a", "a-key\n");
    let second = dir.write("backend-b", "b-key\n");
    let file = format!(
        "version = 1\nnode = \"n1\"\n[auth]\napi_keys_files = [{:?}, {:?}]\n",
        first.display().to_string(),
        second.display().to_string()
    );
    let config = wsgate_config::Config::from_toml(&file, Path::new("wsgate.toml")).unwrap();
    assert_eq!(config.auth.api_keys_files, vec![first, second]);
    let admin = crate::app::admin(crate::app::AppState::test(config));
    for (key, status) in [
        ("b-key", StatusCode::OK),
        ("a-key", StatusCode::OK),
        ("c-key", StatusCode::UNAUTHORIZED),
    ] {
        let request = Request::get("/api/v1/stats")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        let response = admin.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{key}");
    }
}

/// An API key source that yields no key is a configuration error, not "API disabled".
#[test]
fn empty_api_key_source_is_an_error() {
    let dir = TempDir::new();
    let path = dir.write("api-keys", "# nothing yet\n\n");
    let error = Authenticator::new(AuthConfig {
        api_keys: Some(Secret::File(path)),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(error.to_string().contains("api-keys"), "{error}");
    let error = Authenticator::new(AuthConfig {
        api_keys: Some(Secret::Value(" \n ".to_owned())),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        error,
        AuthError::KeyValue {
            setting: "auth.api_keys",
            reason: "holds no API key"
        }
    );
}

/// Anonymous identities get the anonymous patterns for both permissions, and no `send`.
#[test]
fn anonymous_identity_uses_anonymous_rooms() {
    let auth = authenticator(AuthConfig {
        anonymous_rooms: vec!["public:**".to_owned()],
        ..hs_settings()
    });
    let identity = auth.anonymous("c-42");
    assert_eq!(identity.user, "anon:c-42");
    assert!(identity.anonymous);
    assert!(!identity.send);
    assert_eq!(identity.expires_at, None);
    assert!(identity.can_join("public:news") && identity.can_publish("public:news"));
    assert!(!identity.can_join("chat:lobby"));
    assert!(!auth.identity_expired(&identity, u64::MAX));

    let default = authenticator(AuthConfig::default());
    assert!(default.anonymous("c").can_publish("any:room"));
}

/// Without any JWT key every token fails with `NoKeys`.
#[test]
fn no_keys_refuses_every_token() {
    let auth = authenticator(AuthConfig::default());
    assert!(!auth.has_keys());
    assert_eq!(auth.verify(&hs256(&claims())), Err(AuthError::NoKeys));
    assert_eq!(auth.reload(), Ok(false));
}

/// Unusable key files are refused at startup with the file named.
#[test]
fn bad_key_files_are_refused_with_their_name() {
    let dir = TempDir::new();
    let cases: [(&str, &[u8], &str); 6] = [
        ("private.pem", RSA_A_PRIVATE, "private key"),
        ("ec-private.pem", EC_PRIVATE, "private key"),
        ("p384.pem", EC_P384_PUBLIC, "P-256"),
        ("rsa1024.pem", RSA_1024_PUBLIC, "1024 bits"),
        ("garbage.pem", b"not a key", "not a PEM file"),
        (
            "cert.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate",
        ),
    ];
    for (name, contents, reason) in cases {
        let path = dir.write(name, contents);
        let error = Authenticator::new(AuthConfig {
            jwt_public_key_file: Some(path),
            ..AuthConfig::default()
        })
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(name) && message.contains(reason),
            "{message}"
        );
        assert!(!message.contains("MII"), "no key material in {message}");
    }

    let missing = dir.path("missing.pem");
    let error = Authenticator::new(AuthConfig {
        jwt_public_key_file: Some(missing.clone()),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&error, AuthError::KeyFile { path, .. } if path == &missing),
        "{error}"
    );
    assert!(error.to_string().contains("cannot read"), "{error}");

    let error = Authenticator::new(AuthConfig {
        jwt_secret: Some(Secret::Value("  ".to_owned())),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert_eq!(error.kind_label(), "key_value");
}

/// Invalid configured patterns are refused, naming the setting and the pattern.
#[test]
fn invalid_setting_patterns_are_refused() {
    let error = Authenticator::new(AuthConfig {
        user_rooms: vec!["chat:*".to_owned(), "chat:**:x".to_owned()],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "auth.user_rooms: invalid room pattern \"chat:**:x\": `**` must be the last segment"
    );
    let error = Authenticator::new(AuthConfig {
        anonymous_rooms: vec![String::new()],
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(
        error.to_string().starts_with("auth.anonymous_rooms:"),
        "{error}"
    );
    assert!(!error.is_token_error());
}

/// Error messages and debug output never carry the token or the secret.
#[test]
fn errors_and_debug_output_hide_secrets() {
    let auth = authenticator(hs_settings());
    let tokens = [
        hs256_with(OTHER_SECRET, &claims()),
        hs256(&claims_with(json!({ "exp": 1 }))),
        hs256(&claims_with(json!({ "sub": Value::Null }))),
        hs256(&claims_with(json!({ "rooms": ["secret-room*"] }))),
        raw_token(&json!({ "alg": "none" }), &claims(), ""),
    ];
    for token in &tokens {
        let error = auth.verify(token).unwrap_err();
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(token.as_str()), "{text}");
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains("secret-room"), "{text}");
            assert!(!text.contains("alice"), "{text}");
        }
        assert!(error.is_token_error());
    }
    let settings = hs_settings();
    assert!(!format!("{settings:?}").contains(SECRET));
    assert!(!format!("{auth:?}").contains(SECRET));
}

/// Metric labels are distinct, short snake_case words.
#[test]
fn kind_labels_are_stable_snake_case() {
    let errors = [
        AuthError::Malformed("x"),
        AuthError::BadSignature,
        AuthError::UnknownKey,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongAlgorithm,
        AuthError::MissingClaim("sub"),
        AuthError::InvalidClaim("sub"),
        AuthError::BadAudience,
        AuthError::BadIssuer,
        AuthError::InvalidPattern {
            claim: "rooms",
            reason: "x",
        },
        AuthError::NoKeys,
        AuthError::KeyFile {
            path: Path::new("/x").to_owned(),
            reason: "x".to_owned(),
        },
        AuthError::KeyValue {
            setting: "auth.jwt_secret",
            reason: "x",
        },
    ];
    let labels: Vec<&str> = errors.iter().map(AuthError::kind_label).collect();
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), labels.len());
    assert!(
        labels
            .iter()
            .all(|label| label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    );
    assert_eq!(AuthError::Expired.kind_label(), "expired");
    assert_eq!(AuthError::BadSignature.kind_label(), "bad_signature");
}

/// When keys have ids, a token naming an unknown `kid` is refused, even when it
/// would verify with the configured secret: an id that names no key is not a
/// request for the default key.
#[test]
fn an_unknown_kid_does_not_fall_back_to_the_configured_secret() {
    let dir = TempDir::new();
    let mut settings = jwks_settings(&dir, vec![jwk(RSA_A_PUBLIC, false, "rsa-a")]);
    settings.jwt_secret = hs_settings().jwt_secret;
    let auth = authenticator(settings);
    let secret = EncodingKey::from_secret(SECRET.as_bytes());
    let named = sign(Algorithm::HS256, Some("nobody"), &claims(), &secret);
    assert_eq!(auth.verify(&named), Err(AuthError::UnknownKey));
    let unnamed = sign(Algorithm::HS256, None, &claims(), &secret);
    assert_eq!(auth.verify(&unnamed).unwrap().user, "alice");
    let rsa = sign(Algorithm::RS256, Some("rsa-a"), &claims(), &rsa_a());
    assert_eq!(auth.verify(&rsa).unwrap().user, "alice");
}

/// A token may not claim an anonymous user's id: `sub` starting with `anon:`
/// is refused, so no token can act as, or be counted as, an anonymous
/// connection.
#[test]
fn a_sub_in_the_anonymous_namespace_is_refused() {
    let auth = authenticator(hs_settings());
    for sub in ["anon:gw-0:1f2e-1", "anon:"] {
        let token = hs256(&claims_with(json!({ "sub": sub })));
        let error = auth.verify(&token).unwrap_err();
        assert_eq!(error, AuthError::ReservedSubject, "{sub}");
        assert_eq!(error.kind_label(), "reserved_subject");
    }
    let token = hs256(&claims_with(json!({ "sub": "anonymous" })));
    assert_eq!(auth.verify(&token).unwrap().user, "anonymous");
}
