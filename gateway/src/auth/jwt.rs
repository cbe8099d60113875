//! Token verification: from a compact JWS to an [`Identity`].
//!
//! The steps, in order: split the token and read its header; refuse `alg` values other than
//! HS256, RS256 and ES256 (`none` included); select the key by `kid` and algorithm; verify the
//! signature; only then read the claims and check `exp`, `nbf`, `iss`, `aud`, `sub` and the
//! permission claims. Claims are checked here rather than by `jsonwebtoken`'s `Validation` so
//! that the rules are exactly those of docs/protocol.md (for instance, `aud` is ignored unless an
//! audience is configured) and so that time is a parameter in tests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;

use super::error::AuthError;
use super::identity::Identity;
use super::keys::{JwtKeys, KeyAlgorithm};
use super::pattern::{Patterns, RoomPattern};

/// The claim rules, from the settings.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) audience: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) leeway_seconds: u64,
    pub(crate) require_exp: bool,
    pub(crate) user_rooms: Patterns,
}

/// The JWS header members wsgate looks at.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    /// Critical extensions (RFC 7515 §4.1.11): wsgate understands none, so a token that lists
    /// any must be refused.
    crit: Option<Value>,
}

/// The claims wsgate looks at, untyped so that each can be reported precisely. A `null` claim
/// counts as absent.
#[derive(Deserialize)]
struct Claims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    aud: Option<Value>,
    iss: Option<Value>,
    rooms: Option<Value>,
    publish: Option<Value>,
    send: Option<Value>,
}

/// Verifies `token` at Unix time `now`.
pub(crate) fn verify(
    keys: &JwtKeys,
    policy: &Policy,
    token: &str,
    now: u64,
) -> Result<Identity, AuthError> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three dot-separated parts"));
    };

    let header: Header = decode_json(
        header_b64,
        "header is not base64url",
        "header is not a JSON object",
    )?;
    if header.crit.is_some() {
        return Err(AuthError::Malformed("unsupported critical header"));
    }
    let alg = header
        .alg
        .ok_or(AuthError::Malformed("header has no `alg`"))?;
    let algorithm = KeyAlgorithm::from_header(&alg).ok_or(AuthError::WrongAlgorithm)?;
    let key = keys.select(algorithm, header.kid.as_deref())?;

    // The signed message is everything before the last dot.
    let message = &token[..header_b64.len() + 1 + claims_b64.len()];
    match jsonwebtoken::crypto::verify(
        signature_b64,
        message.as_bytes(),
        &key.key,
        algorithm.algorithm(),
    ) {
        Ok(true) => {}
        Ok(false) | Err(_) => return Err(AuthError::BadSignature),
    }

    let claims: Claims = decode_json(
        claims_b64,
        "claims are not base64url",
        "claims are not a JSON object",
    )?;
    check_claims(policy, claims, now)
}

/// Decodes one base64url JSON part of the token; the messages say which part was bad.
fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    not_base64: &'static str,
    not_json: &'static str,
) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed(not_base64))?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed(not_json))
}

fn check_claims(policy: &Policy, claims: Claims, now: u64) -> Result<Identity, AuthError> {
    let Claims {
        sub,
        exp,
        nbf,
        aud,
        iss,
        rooms,
        publish,
        send,
    } = claims;

    let exp = exp.map(|exp| numeric_date(&exp, "exp")).transpose()?;
    match exp {
        None if policy.require_exp => return Err(AuthError::MissingClaim("exp")),
        Some(exp) if now >= exp.saturating_add(policy.leeway_seconds) => {
            return Err(AuthError::Expired);
        }
        _ => {}
    }
    if let Some(nbf) = nbf.map(|nbf| numeric_date(&nbf, "nbf")).transpose()?
        && nbf > now.saturating_add(policy.leeway_seconds)
    {
        return Err(AuthError::NotYetValid);
    }

    if let Some(issuer) = &policy.issuer {
        match iss {
            None => return Err(AuthError::MissingClaim("iss")),
            Some(Value::String(iss)) if &iss == issuer => {}
            Some(Value::String(_)) => return Err(AuthError::BadIssuer),
            Some(_) => return Err(AuthError::InvalidClaim("iss")),
        }
    }
    if let Some(audience) = &policy.audience {
        match aud {
            None => return Err(AuthError::MissingClaim("aud")),
            Some(Value::String(aud)) if &aud == audience => {}
            Some(Value::String(_)) => return Err(AuthError::BadAudience),
            Some(Value::Array(values)) => {
                if !values.iter().all(Value::is_string) {
                    return Err(AuthError::InvalidClaim("aud"));
                }
                if !values
                    .iter()
                    .any(|value| value.as_str() == Some(audience.as_str()))
                {
                    return Err(AuthError::BadAudience);
                }
            }
            Some(_) => return Err(AuthError::InvalidClaim("aud")),
        }
    }

    let user = match sub {
        None => return Err(AuthError::MissingClaim("sub")),
        Some(Value::String(sub)) if sub.starts_with(super::identity::ANONYMOUS_PREFIX) => {
            return Err(AuthError::ReservedSubject);
        }
        Some(Value::String(sub)) if !sub.is_empty() => sub,
        Some(_) => return Err(AuthError::InvalidClaim("sub")),
    };

    let join = match rooms {
        None => policy.user_rooms.clone(),
        Some(rooms) => pattern_claim(&rooms, "rooms")?,
    };
    let publish = match publish {
        None => join.clone(),
        Some(publish) => pattern_claim(&publish, "publish")?,
    };
    let send = match send {
        None => false,
        Some(Value::Bool(send)) => send,
        Some(_) => return Err(AuthError::InvalidClaim("send")),
    };

    Ok(Identity {
        user,
        join,
        publish,
        send,
        expires_at: exp,
        anonymous: false,
    })
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly fractional (rounded down).
fn numeric_date(value: &Value, claim: &'static str) -> Result<u64, AuthError> {
    let Value::Number(number) = value else {
        return Err(AuthError::InvalidClaim(claim));
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(seconds);
    }
    match number.as_f64() {
        // `as` saturates at u64::MAX, which is far enough in the future.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(seconds as u64),
        _ => Err(AuthError::InvalidClaim(claim)),
    }
}

/// A `rooms` or `publish` claim: an array of room patterns.
fn pattern_claim(value: &Value, claim: &'static str) -> Result<Patterns, AuthError> {
    let Value::Array(items) = value else {
        return Err(AuthError::InvalidClaim(claim));
    };
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or(AuthError::InvalidClaim(claim))?;
            RoomPattern::parse(text).map_err(|error| AuthError::InvalidPattern {
                claim,
                reason: error.reason(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Patterns::from)
}
