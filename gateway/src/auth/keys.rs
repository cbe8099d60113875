//! Key material: reading the configured files and values, parsing them into verification keys,
//! and fingerprinting them so a reload can tell whether anything changed.
//!
//! Each key is bound to exactly one algorithm when it is loaded (HS256 for secrets and `oct`
//! keys, RS256 for RSA keys, ES256 for EC P-256 keys). A token is only ever verified with a key
//! of its own algorithm, so a public key can never be misused as an HMAC secret.
//!
//! Nothing here logs or reports key bytes: errors name the file and what is wrong with it.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wsgate_config::Secret;

use super::api_key::ApiKeys;
use super::error::AuthError;

/// The smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The largest RSA modulus the verifier (the `rsa` crate) accepts, in bits.
const MAX_RSA_BITS: usize = 4096;

/// The range of RSA public exponents the verifier accepts.
const RSA_EXPONENTS: std::ops::RangeInclusive<u64> = 2..=(1 << 33) - 1;

/// HS256 secrets shorter than this (the HMAC-SHA256 output size) draw a warning.
const MIN_SECRET_BYTES: usize = 32;

/// The algorithms wsgate accepts, one per key type (docs/protocol.md, "Connecting").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

impl KeyAlgorithm {
    /// The algorithm named by a JWS header `alg`; `None` for `none` and everything unsupported.
    pub(crate) fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    pub(crate) fn algorithm(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }

    fn header_name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// A verification key bound to the one algorithm it may verify.
pub(crate) struct VerificationKey {
    pub(crate) algorithm: KeyAlgorithm,
    pub(crate) key: DecodingKey,
}

/// A JWKS entry.
struct JwksKey {
    kid: Option<String>,
    key: VerificationKey,
}

/// The JWT keys in force.
#[derive(Default)]
pub(crate) struct JwtKeys {
    /// `auth.jwt_secret_file`: HS256.
    secret: Option<VerificationKey>,
    /// `auth.jwt_public_key_file`: RS256 or ES256.
    public_key: Option<VerificationKey>,
    /// `auth.jwks_file`.
    jwks: Vec<JwksKey>,
}

impl JwtKeys {
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys are configured, for logs.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.secret.is_some())
            + usize::from(self.public_key.is_some())
            + self.jwks.len()
    }

    /// The key that must verify a token with header `alg` and `kid`.
    ///
    /// A `kid` found in the JWKS selects that key. Otherwise the secret or public key of the
    /// token's algorithm is used, and failing that, for a token without `kid`, the only key of a
    /// single-key JWKS. A selected key of another algorithm is [`AuthError::WrongAlgorithm`].
    pub(crate) fn select(
        &self,
        algorithm: KeyAlgorithm,
        kid: Option<&str>,
    ) -> Result<&VerificationKey, AuthError> {
        if self.is_empty() {
            return Err(AuthError::NoKeys);
        }
        let bound = |key: &'_ VerificationKey| {
            if key.algorithm == algorithm {
                Ok(())
            } else {
                Err(AuthError::WrongAlgorithm)
            }
        };
        if let Some(kid) = kid {
            if let Some(entry) = self
                .jwks
                .iter()
                .find(|entry| entry.kid.as_deref() == Some(kid))
            {
                bound(&entry.key)?;
                return Ok(&entry.key);
            }
            // When keys have ids, a token naming another id is not for these keys: it
            // must not fall back to the secret or the public key.
            if self.jwks.iter().any(|entry| entry.kid.is_some()) {
                return Err(AuthError::UnknownKey);
            }
        }
        let configured = match algorithm {
            KeyAlgorithm::Hs256 => self.secret.as_ref(),
            KeyAlgorithm::Rs256 | KeyAlgorithm::Es256 => self
                .public_key
                .as_ref()
                .filter(|key| key.algorithm == algorithm),
        };
        if let Some(key) = configured {
            return Ok(key);
        }
        match (kid, self.jwks.as_slice()) {
            (None, [only]) => {
                bound(&only.key)?;
                Ok(&only.key)
            }
            (Some(_), [_, ..]) | (None, [_, _, ..]) => Err(AuthError::UnknownKey),
            _ => Err(AuthError::WrongAlgorithm),
        }
    }
}

/// Where the key material comes from; fixed for the life of the authenticator.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub(crate) jwt_secret: Option<Secret>,
    pub(crate) jwt_public_key_file: Option<PathBuf>,
    pub(crate) jwks_file: Option<PathBuf>,
    pub(crate) api_keys: Option<Secret>,
    pub(crate) api_keys_files: Vec<PathBuf>,
}

/// The bytes of every configured source, read in one go.
struct Raw {
    jwt_secret: Option<Vec<u8>>,
    public_key: Option<Vec<u8>>,
    jwks: Option<Vec<u8>>,
    api_keys: Option<Vec<u8>>,
    api_keys_files: Vec<Vec<u8>>,
}

impl Raw {
    /// A digest of everything read, so that a reload can skip parsing when nothing changed.
    /// Contents are compared rather than inodes or modification times because Kubernetes
    /// updates mounted Secrets by swapping a symlink.
    fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in [
            &self.jwt_secret,
            &self.public_key,
            &self.jwks,
            &self.api_keys,
        ] {
            match part {
                None => hasher.update([0]),
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_be_bytes());
                    hasher.update(bytes);
                }
            }
        }
        for bytes in &self.api_keys_files {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        hasher.finalize().into()
    }
}

/// Everything that [`Authenticator::reload`](super::Authenticator::reload) swaps at once.
pub(crate) struct Material {
    pub(crate) jwt: JwtKeys,
    pub(crate) api_keys: ApiKeys,
    pub(crate) fingerprint: [u8; 32],
}

impl Material {
    /// Reads and parses every source.
    pub(crate) fn load(sources: &Sources) -> Result<Self, AuthError> {
        let raw = read(sources)?;
        let fingerprint = raw.fingerprint();
        Self::parse(sources, raw, fingerprint)
    }

    /// Reads every source and parses them only when they differ from `current`; `Ok(None)` when
    /// nothing changed.
    pub(crate) fn load_if_changed(
        sources: &Sources,
        current: &[u8; 32],
    ) -> Result<Option<Self>, AuthError> {
        let raw = read(sources)?;
        let fingerprint = raw.fingerprint();
        if &fingerprint == current {
            return Ok(None);
        }
        Self::parse(sources, raw, fingerprint).map(Some)
    }

    fn parse(sources: &Sources, raw: Raw, fingerprint: [u8; 32]) -> Result<Self, AuthError> {
        let secret = match (&sources.jwt_secret, &raw.jwt_secret) {
            (Some(source), Some(bytes)) => Some(parse_secret(source, bytes)?),
            _ => None,
        };
        let public_key = match (&sources.jwt_public_key_file, &raw.public_key) {
            (Some(path), Some(bytes)) => Some(
                parse_public_key_pem(bytes).map_err(|reason| AuthError::key_file(path, reason))?,
            ),
            _ => None,
        };
        let jwks = match (&sources.jwks_file, &raw.jwks) {
            (Some(path), Some(bytes)) => {
                parse_jwks(bytes).map_err(|reason| AuthError::key_file(path, reason))?
            }
            _ => Vec::new(),
        };
        let mut api_keys = match (&sources.api_keys, &raw.api_keys) {
            (Some(source), Some(bytes)) => parse_api_keys(source, bytes)?,
            _ => ApiKeys::default(),
        };
        for (path, bytes) in sources.api_keys_files.iter().zip(&raw.api_keys_files) {
            api_keys.extend(parse_api_keys(&Secret::File(path.clone()), bytes)?);
        }
        Ok(Self {
            jwt: JwtKeys {
                secret,
                public_key,
                jwks,
            },
            api_keys,
            fingerprint,
        })
    }
}

fn read(sources: &Sources) -> Result<Raw, AuthError> {
    Ok(Raw {
        jwt_secret: sources.jwt_secret.as_ref().map(read_secret).transpose()?,
        public_key: sources
            .jwt_public_key_file
            .as_deref()
            .map(read_file)
            .transpose()?,
        jwks: sources.jwks_file.as_deref().map(read_file).transpose()?,
        api_keys: sources.api_keys.as_ref().map(read_secret).transpose()?,
        api_keys_files: sources
            .api_keys_files
            .iter()
            .map(|path| read_file(path))
            .collect::<Result<_, _>>()?,
    })
}

fn read_secret(source: &Secret) -> Result<Vec<u8>, AuthError> {
    match source {
        Secret::File(path) => read_file(path),
        Secret::Value(value) => Ok(value.as_bytes().to_vec()),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    fs::read(path).map_err(|error| AuthError::key_file(path, format!("cannot read: {error}")))
}

fn parse_secret(source: &Secret, bytes: &[u8]) -> Result<VerificationKey, AuthError> {
    let secret = bytes.trim_ascii_end();
    if secret.is_empty() {
        return Err(match source {
            Secret::File(path) => AuthError::key_file(path, "the HS256 secret is empty"),
            Secret::Value(_) => AuthError::KeyValue {
                setting: "auth.jwt_secret",
                reason: "the HS256 secret is empty",
            },
        });
    }
    if secret.len() < MIN_SECRET_BYTES {
        tracing::warn!(
            bytes = secret.len(),
            minimum = MIN_SECRET_BYTES,
            "the hs256 secret is short; use at least 32 random bytes"
        );
    }
    Ok(VerificationKey {
        algorithm: KeyAlgorithm::Hs256,
        key: DecodingKey::from_secret(secret),
    })
}

fn parse_api_keys(source: &Secret, bytes: &[u8]) -> Result<ApiKeys, AuthError> {
    let keys = match source {
        Secret::File(_) => ApiKeys::from_file_contents(bytes),
        Secret::Value(value) => ApiKeys::from_lines(value),
    };
    if keys.is_empty() {
        return Err(match source {
            Secret::File(path) => AuthError::key_file(path, "holds no API key"),
            Secret::Value(_) => AuthError::KeyValue {
                setting: "auth.api_keys",
                reason: "holds no API key",
            },
        });
    }
    Ok(keys)
}

/// The label of the first PEM block, such as `PUBLIC KEY`.
fn pem_label(text: &[u8]) -> Option<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = text
        .windows(BEGIN.len())
        .position(|window| window == BEGIN)?
        + BEGIN.len();
    let rest = &text[start..];
    let end = rest.windows(5).position(|window| window == b"-----")?;
    Some(&rest[..end])
}

/// Parses `auth.jwt_public_key_file`: an RSA (SPKI or PKCS#1) or EC P-256 (SPKI) public key.
fn parse_public_key_pem(bytes: &[u8]) -> Result<VerificationKey, String> {
    match pem_label(bytes) {
        None => return Err("not a PEM file".to_owned()),
        Some(b"PUBLIC KEY" | b"RSA PUBLIC KEY") => {}
        Some(label) if label.ends_with(b"PRIVATE KEY") => {
            return Err("holds a private key; configure the public key only".to_owned());
        }
        Some(b"CERTIFICATE") => {
            return Err("holds a certificate; extract its public key \
                        (openssl x509 -pubkey -noout)"
                .to_owned());
        }
        Some(_) => return Err("not a PEM public key".to_owned()),
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return rsa_from_der_key(&key);
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        if !is_p256_key(&key) {
            return Err("EC key is not on curve P-256 (only ES256 is supported)".to_owned());
        }
        return Ok(VerificationKey {
            algorithm: KeyAlgorithm::Es256,
            key,
        });
    }
    Err("not an RSA or EC public key".to_owned())
}

/// Checks an RSA key read from PEM and converts it to modulus and exponent, which also spares
/// re-parsing its DER on every verification.
fn rsa_from_der_key(key: &DecodingKey) -> Result<VerificationKey, String> {
    let jwk =
        Jwk::from_decoding_key(key, None).map_err(|_| "not a valid RSA public key".to_owned())?;
    let AlgorithmParameters::RSA(params) = &jwk.algorithm else {
        return Err("not a valid RSA public key".to_owned());
    };
    rsa_key(&params.n, &params.e)
}

/// An RS256 key from base64url modulus and exponent. Keys the verifier would refuse on every
/// token (too short, too long, a bad exponent) are refused here, at load time, instead.
fn rsa_key(n: &str, e: &str) -> Result<VerificationKey, String> {
    let modulus = URL_SAFE_NO_PAD
        .decode(n)
        .map_err(|_| "RSA modulus is not base64url".to_owned())?;
    let bits = significant_bits(&modulus);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA key has {bits} bits; at most {MAX_RSA_BITS} are supported"
        ));
    }
    let exponent = URL_SAFE_NO_PAD
        .decode(e)
        .map_err(|_| "RSA exponent is not base64url".to_owned())?;
    let exponent_fits = significant_bits(&exponent) <= 64
        && RSA_EXPONENTS.contains(
            &exponent
                .iter()
                .fold(0u64, |value, &byte| value.wrapping_shl(8) | u64::from(byte)),
        );
    if !exponent_fits {
        return Err("RSA exponent is out of range".to_owned());
    }
    let key = DecodingKey::from_rsa_components(n, e)
        .map_err(|_| "RSA key components are not base64url".to_owned())?;
    Ok(VerificationKey {
        algorithm: KeyAlgorithm::Rs256,
        key,
    })
}

fn significant_bits(big_endian: &[u8]) -> usize {
    match big_endian.iter().position(|&byte| byte != 0) {
        None => 0,
        Some(first) => {
            (big_endian.len() - first - 1) * 8 + (8 - big_endian[first].leading_zeros() as usize)
        }
    }
}

/// Whether `key` is a valid EC P-256 point. Building an ES256 verifier parses the point; a
/// dummy signature then merely fails to verify.
fn is_p256_key(key: &DecodingKey) -> bool {
    jsonwebtoken::crypto::verify("AA", b"", key, Algorithm::ES256).is_ok()
}

/// Parses a JWKS document. Keys wsgate cannot use are skipped with a warning naming their
/// `kid`; a document without any usable key, or with a repeated `kid`, is an error.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<JwksKey>, String> {
    // serde_json error messages can quote the offending value, which may be key material:
    // report only where the error is.
    let document: Value = serde_json::from_slice(bytes).map_err(|error| {
        format!(
            "not valid JSON (line {}, column {})",
            error.line(),
            error.column()
        )
    })?;
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Err("not a JWKS: no `keys` array".to_owned());
    };
    let mut keys: Vec<JwksKey> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let name = kid
            .as_deref()
            .map_or_else(|| format!("key #{index}"), |kid| format!("key {kid:?}"));
        match parse_jwk(entry) {
            Ok(Some(key)) => {
                if kid.is_some() && keys.iter().any(|other| other.kid == kid) {
                    return Err(format!("{name} appears twice"));
                }
                keys.push(JwksKey { kid, key });
            }
            Ok(None) => tracing::warn!(key = %name, "skipping a jwks key wsgate cannot use"),
            Err(reason) => return Err(format!("{name}: {reason}")),
        }
    }
    if keys.is_empty() {
        return Err("holds no usable key (RSA, EC P-256 or oct)".to_owned());
    }
    Ok(keys)
}

/// One JWK: `Ok(None)` for a key of a kind wsgate does not use, an error for a broken key of a
/// kind it does use.
fn parse_jwk(entry: &Value) -> Result<Option<VerificationKey>, String> {
    let text = |name: &str| entry.get(name).and_then(Value::as_str);
    if !entry.is_object() {
        return Err("not a JSON object".to_owned());
    }
    if text("use").is_some_and(|usage| usage != "sig") {
        return Ok(None);
    }
    let algorithm = match (text("kty"), text("crv")) {
        (Some("RSA"), _) => KeyAlgorithm::Rs256,
        (Some("EC"), Some("P-256")) => KeyAlgorithm::Es256,
        (Some("oct"), _) => KeyAlgorithm::Hs256,
        _ => return Ok(None),
    };
    if let Some(alg) = entry.get("alg")
        && alg.as_str() != Some(algorithm.header_name())
    {
        return Ok(None);
    }
    let field = |name: &str| {
        text(name).ok_or_else(|| format!("member `{name}` is missing or not a string"))
    };
    let key = match algorithm {
        KeyAlgorithm::Rs256 => rsa_key(field("n")?, field("e")?)?,
        KeyAlgorithm::Es256 => {
            let key = DecodingKey::from_ec_components(field("x")?, field("y")?)
                .map_err(|_| "EC coordinates are not base64url".to_owned())?;
            if !is_p256_key(&key) {
                return Err("not a valid P-256 point".to_owned());
            }
            VerificationKey { algorithm, key }
        }
        KeyAlgorithm::Hs256 => {
            let secret = URL_SAFE_NO_PAD
                .decode(field("k")?)
                .map_err(|_| "oct key value is not base64url".to_owned())?;
            if secret.is_empty() {
                return Err("oct key is empty".to_owned());
            }
            if secret.len() < MIN_SECRET_BYTES {
                tracing::warn!(
                    bytes = secret.len(),
                    minimum = MIN_SECRET_BYTES,
                    "a jwks oct key is short; use at least 32 random bytes"
                );
            }
            VerificationKey {
                algorithm,
                key: DecodingKey::from_secret(&secret),
            }
        }
    };
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit counting ignores leading zero bytes and bits.
    #[test]
    fn significant_bits_counts_from_the_first_set_bit() {
        assert_eq!(significant_bits(&[]), 0);
        assert_eq!(significant_bits(&[0, 0]), 0);
        assert_eq!(significant_bits(&[1]), 1);
        assert_eq!(significant_bits(&[0, 0x80, 0]), 16);
        assert_eq!(significant_bits(&[0x7f; 256]), 2047);
    }

    /// The PEM label is read from the first BEGIN line, after any leading text.
    #[test]
    fn pem_label_reads_the_first_block() {
        assert_eq!(
            pem_label(b"-----BEGIN PUBLIC KEY-----\nAAAA\n"),
            Some(&b"PUBLIC KEY"[..])
        );
        assert_eq!(
            pem_label(b"comment\n-----BEGIN EC PRIVATE KEY-----\n"),
            Some(&b"EC PRIVATE KEY"[..])
        );
        assert_eq!(pem_label(b"no pem here"), None);
    }

    /// `alg: none` and unsupported algorithms have no key algorithm.
    #[test]
    fn header_algorithms_are_limited_to_three() {
        assert_eq!(
            KeyAlgorithm::from_header("HS256"),
            Some(KeyAlgorithm::Hs256)
        );
        assert_eq!(
            KeyAlgorithm::from_header("RS256"),
            Some(KeyAlgorithm::Rs256)
        );
        assert_eq!(
            KeyAlgorithm::from_header("ES256"),
            Some(KeyAlgorithm::Es256)
        );
        for alg in [
            "none", "None", "NONE", "", "HS384", "RS512", "PS256", "ES384", "EdDSA", "hs256",
        ] {
            assert_eq!(KeyAlgorithm::from_header(alg), None, "{alg}");
        }
    }
}
