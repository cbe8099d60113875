//! Credentials of a managed NATS: NATS decentralized authentication.
//!
//! The gateway already reads a NATS `.creds` file (`nats.credentials_file`,
//! a user JWT and its NKey seed), and async-nats ignores a password inside a
//! server URL, so the operator runs its NATS in operator mode: it makes an
//! operator, a system account and an application account (JetStream
//! enabled), signs their JWTs, and issues one user for the gateways. The
//! servers trust only that operator, so a client without a user JWT signed
//! by the account is refused.
//!
//! JWTs are public (signed claims, no secret in them): they go into
//! `nats-server.conf`. The user's NKey seed and the route password are
//! secret: they stay in the operator's Secret, mounted as the gateways'
//! `.creds` file and passed to nats-server through an environment variable.
//! Everything is generated once and kept (read back from the Secret), so a
//! reconcile renders the same config and rolls nothing.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::KeyPair;
use rand::Rng;
use serde_json::{Value, json};

/// Key of the gateways' `.creds` file in the Secret.
pub const CREDS_KEY: &str = "wsgate.creds";
/// Key of the route password in the Secret.
pub const ROUTE_PASSWORD_KEY: &str = "route-password";
/// Key of the operator JWT in the Secret.
pub const OPERATOR_JWT_KEY: &str = "operator.jwt";
/// Key of the system account JWT in the Secret.
pub const SYSTEM_ACCOUNT_JWT_KEY: &str = "system-account.jwt";
/// Key of the application account JWT in the Secret.
pub const ACCOUNT_JWT_KEY: &str = "account.jwt";

/// The user name routes authenticate with (the password is secret).
pub const ROUTE_USER: &str = "route";

/// A JWT's claims, as nats-server reads them (version 2).
struct Claims<'a> {
    /// Name shown by the server.
    name: &'a str,
    /// The key the claims are about.
    subject: &'a str,
    /// The `nats` section: type, version and limits.
    nats: Value,
}

/// Signs `claims` with `issuer`: `header.claims.signature`, each part
/// base64url without padding, the signature Ed25519 over the first two
/// parts (`alg: ed25519-nkey`).
fn sign(issuer: &KeyPair, claims: Claims<'_>) -> Result<String, CredentialsError> {
    let id: [u8; 20] = rand::random();
    let body = json!({
        "jti": data_encoding::BASE32_NOPAD.encode(&id),
        "iat": k8s_openapi::jiff::Timestamp::now().as_second(),
        "iss": issuer.public_key(),
        "name": claims.name,
        "sub": claims.subject,
        "nats": claims.nats,
    });
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(body.to_string());
    let signed = format!("{header}.{payload}");
    let signature = issuer
        .sign(signed.as_bytes())
        .map_err(|source| CredentialsError::Sign { source })?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// No limit, in the JWTs' limit fields.
const NO_LIMIT: i64 = -1;

/// Everything a managed NATS and its gateways need to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsCredentials {
    /// The operator JWT (self-signed) the servers trust.
    pub operator_jwt: String,
    /// Public key of the system account.
    pub system_account: String,
    /// JWT of the system account.
    pub system_account_jwt: String,
    /// Public key of the account the gateways use (JetStream enabled).
    pub account: String,
    /// JWT of that account.
    pub account_jwt: String,
    /// The gateways' `.creds` file: user JWT and NKey seed. Secret.
    pub user_creds: String,
    /// The password routes between servers authenticate with. Secret.
    pub route_password: String,
}

/// Nothing secret in the debug output.
impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCredentials")
            .field("system_account", &self.system_account)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// Making credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// An NKey could not sign (a corrupt key, never expected).
    #[error("sign a nats jwt: {source}")]
    Sign {
        /// What nkeys said.
        #[source]
        source: nkeys::error::Error,
    },
    /// An NKey seed could not be encoded.
    #[error("encode an nkey seed: {source}")]
    Seed {
        /// What nkeys said.
        #[source]
        source: nkeys::error::Error,
    },
}

impl NatsCredentials {
    /// New operator, accounts, user and route password.
    ///
    /// # Errors
    ///
    /// [`CredentialsError`] if signing fails (never with fresh keys).
    pub fn generate() -> Result<Self, CredentialsError> {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let account = KeyPair::new_account();
        let user = KeyPair::new_user();
        let operator_key = operator.public_key();
        let system_key = system.public_key();
        let account_key = account.public_key();
        let user_key = user.public_key();

        let operator_jwt = sign(
            &operator,
            Claims {
                name: "wsgate",
                subject: &operator_key,
                nats: json!({"type": "operator", "version": 2, "system_account": system_key}),
            },
        )?;
        let limits = |jetstream: bool| {
            let storage = if jetstream { NO_LIMIT } else { 0 };
            json!({
                "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
                "imports": NO_LIMIT, "exports": NO_LIMIT, "wildcards": true,
                "conn": NO_LIMIT, "leaf": NO_LIMIT,
                "mem_storage": storage, "disk_storage": storage,
                "streams": if jetstream { NO_LIMIT } else { 0 },
                "consumer": if jetstream { NO_LIMIT } else { 0 },
            })
        };
        let system_account_jwt = sign(
            &operator,
            Claims {
                name: "SYS",
                subject: &system_key,
                nats: json!({"type": "account", "version": 2, "limits": limits(false)}),
            },
        )?;
        let account_jwt = sign(
            &operator,
            Claims {
                name: "wsgate",
                subject: &account_key,
                nats: json!({"type": "account", "version": 2, "limits": limits(true)}),
            },
        )?;
        let user_jwt = sign(
            &account,
            Claims {
                name: "wsgate",
                subject: &user_key,
                nats: json!({
                    "type": "user", "version": 2,
                    "pub": {}, "sub": {},
                    "subs": NO_LIMIT, "data": NO_LIMIT, "payload": NO_LIMIT,
                }),
            },
        )?;
        let seed = user
            .seed()
            .map_err(|source| CredentialsError::Seed { source })?;
        Ok(Self {
            operator_jwt,
            system_account: system_key,
            system_account_jwt,
            account: account_key,
            account_jwt,
            user_creds: creds_file(&user_jwt, &seed),
            route_password: generate_password(),
        })
    }

    /// The Secret's `data`: every part, under the `*_KEY` constants.
    pub fn to_secret_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (OPERATOR_JWT_KEY.to_owned(), self.operator_jwt.clone()),
            (
                SYSTEM_ACCOUNT_JWT_KEY.to_owned(),
                self.system_account_jwt.clone(),
            ),
            (ACCOUNT_JWT_KEY.to_owned(), self.account_jwt.clone()),
            (CREDS_KEY.to_owned(), self.user_creds.clone()),
            (ROUTE_PASSWORD_KEY.to_owned(), self.route_password.clone()),
        ])
    }

    /// Reads credentials back from a Secret's `data` (as
    /// [`Self::to_secret_data`] wrote them); `None` when a part is missing
    /// or malformed, so the caller makes new ones.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Option<Self> {
        let text = |key: &str| {
            data.get(key)
                .and_then(|value| String::from_utf8(value.clone()).ok())
                .filter(|value| !value.trim().is_empty())
        };
        let operator_jwt = text(OPERATOR_JWT_KEY)?;
        let system_account_jwt = text(SYSTEM_ACCOUNT_JWT_KEY)?;
        let account_jwt = text(ACCOUNT_JWT_KEY)?;
        Some(Self {
            system_account: jwt_subject(&system_account_jwt)?,
            account: jwt_subject(&account_jwt)?,
            operator_jwt,
            system_account_jwt,
            account_jwt,
            user_creds: text(CREDS_KEY)?,
            route_password: text(ROUTE_PASSWORD_KEY)?,
        })
    }
}

/// The `sub` claim of a JWT, without checking its signature (the servers
/// do that).
fn jwt_subject(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

/// A `.creds` file, as `nsc` writes it and async-nats reads it.
fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A random password of 48 ASCII letters (≈274 bits). Letters only: the
/// value reaches `nats-server.conf` through an environment variable, which
/// the config parser reads as a value, and a leading digit would make it a
/// number.
pub fn generate_password() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    // `LETTERS` is not empty, so the range never is.
    (0..48)
        .map(|_| char::from(LETTERS[rng.random_range(0..LETTERS.len())]))
        .collect()
}
