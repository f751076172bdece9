//! Temporary credentials as JSON Web Tokens (RFC 7519) signed with Ed25519
//! (`alg: EdDSA`, RFC 8037), and the JSON Web Key Set (RFC 7517) that
//! verifies them offline. Plain bytes and JSON in and out: where keys are
//! kept and who may have a credential are decided elsewhere.
//!
//! A key's id (`kid`) is its RFC 7638 thumbprint, so the same public key has
//! the same id on every replica and in every key set.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("no randomness for a new signing key: {0}")]
    Random(String),
    /// Stored or configured key material does not parse.
    #[error("signing key: {0}")]
    Malformed(&'static str),
}

/// The DER a PKCS#8 Ed25519 private key (RFC 8410, as `openssl genpkey
/// -algorithm ed25519` writes it) starts with; the 32 key bytes follow.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 signing key and its id.
pub struct KeyPair {
    kid: String,
    signing: SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key whose 32 private bytes are `secret`.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(secret);
        let kid = thumbprint(&URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes()));
        Self { kid, signing }
    }

    /// The key stored as base64url private bytes.
    pub fn from_stored(private_key: &str) -> Result<Self, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(private_key)
            .map_err(|_| KeyError::Malformed("the stored private key is not base64url"))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Malformed("the stored private key is not 32 bytes"))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key in a file: a PEM `PRIVATE KEY` (PKCS#8, as `openssl genpkey
    /// -algorithm ed25519` writes it) or exactly 32 raw bytes.
    pub fn from_file(contents: &[u8]) -> Result<Self, KeyError> {
        if let Ok(secret) = <[u8; 32]>::try_from(contents) {
            return Ok(Self::from_secret(&secret));
        }
        let text = std::str::from_utf8(contents).map_err(|_| {
            KeyError::Malformed("expected a PEM PRIVATE KEY (PKCS#8 Ed25519) or 32 raw bytes")
        })?;
        let body = text
            .split("-----BEGIN PRIVATE KEY-----")
            .nth(1)
            .and_then(|rest| rest.split("-----END PRIVATE KEY-----").next())
            .ok_or(KeyError::Malformed(
                "expected a PEM PRIVATE KEY (PKCS#8 Ed25519) or 32 raw bytes",
            ))?;
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = STANDARD
            .decode(compact)
            .map_err(|_| KeyError::Malformed("the PEM body is not base64"))?;
        let secret: [u8; 32] = der
            .strip_prefix(&PKCS8_ED25519_PREFIX[..])
            .and_then(|rest| rest.try_into().ok())
            .ok_or(KeyError::Malformed(
                "the PEM key is not a PKCS#8 Ed25519 private key",
            ))?;
        Ok(Self::from_secret(&secret))
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key, base64url (a JWK's `x`).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.verifying_key().as_bytes())
    }

    /// The private key, base64url, for storage.
    pub fn private_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.as_bytes())
    }

    /// A compact JWS of `claims`: header `{"alg":"EdDSA","typ":"JWT","kid"}`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signing.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// The RFC 7638 thumbprint of the Ed25519 public key `x` (base64url).
pub fn thumbprint(x: &str) -> String {
    // The required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Answers whether `x` (base64url) is an Ed25519 public key.
pub fn is_public_key(x: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(x)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .is_some_and(|b| VerifyingKey::from_bytes(&b).is_ok())
}

/// The JWK of a public key (RFC 8037 `OKP` / `Ed25519`).
pub fn jwk(kid: &str, x: &str) -> Value {
    json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" })
}

/// The JSON Web Key Set of `(kid, x)` public keys.
pub fn jwks<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let keys: Vec<Value> = keys.into_iter().map(|(kid, x)| jwk(kid, x)).collect();
    json!({ "keys": keys }).to_string()
}

/// What a temporary credential says.
#[derive(Clone, Debug)]
pub struct Claims<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `sub`: `user:<id>` or `service_account:<id>`.
    pub subject: String,
    /// `org`.
    pub organization: &'a str,
    /// `workspace`.
    pub workspace: &'a str,
    /// `permissions`.
    pub permissions: &'a [String],
    /// `scope`: `{"conditions": [{"key", "values"}]}`, or null for every resource.
    pub scope: Option<Value>,
    /// `iat` and `nbf`, in seconds since the epoch.
    pub issued_at: i64,
    /// `exp`, in seconds since the epoch.
    pub expires_at: i64,
    /// `jti`.
    pub id: &'a str,
    /// `rev`: the storage revision the credential was issued at.
    pub revision: u64,
}

impl Claims<'_> {
    /// The JWT claims set.
    pub fn to_json(&self) -> Value {
        json!({
            "iss": self.issuer,
            "sub": self.subject,
            "org": self.organization,
            "workspace": self.workspace,
            "permissions": self.permissions,
            "scope": self.scope,
            "iat": self.issued_at,
            "nbf": self.issued_at,
            "exp": self.expires_at,
            "jti": self.id,
            "rev": self.revision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier};

    // RFC 8037, appendix A.1 to A.4.
    const D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn key_ids_are_rfc_7638_thumbprints() {
        let key = KeyPair::from_stored(D).unwrap();
        assert_eq!(key.public_key(), X);
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        assert_eq!(thumbprint(X), key.kid());
        assert!(is_public_key(X));
        assert!(!is_public_key("AAAA"));
    }

    #[test]
    fn signatures_are_rfc_8037_ed25519() {
        let key = KeyPair::from_stored(D).unwrap();
        // The RFC's example signs `{"alg":"EdDSA"}` over its payload.
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature = key.signing.sign(input.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn tokens_verify_with_the_public_key_and_carry_the_header() {
        let key = KeyPair::generate().unwrap();
        let token = key.sign(&json!({ "sub": "user:1" }));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "EdDSA");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], key.kid());
        let public: [u8; 32] = URL_SAFE_NO_PAD
            .decode(key.public_key())
            .unwrap()
            .try_into()
            .unwrap();
        let signature: [u8; 64] = URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap()
            .try_into()
            .unwrap();
        let verifying = VerifyingKey::from_bytes(&public).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        assert!(
            verifying
                .verify(input.as_bytes(), &Signature::from_bytes(&signature))
                .is_ok()
        );
        let forged = format!(
            "{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(r#"{"sub":"user:2"}"#)
        );
        assert!(
            verifying
                .verify(forged.as_bytes(), &Signature::from_bytes(&signature))
                .is_err()
        );
    }

    #[test]
    fn key_files_are_pkcs8_pem_or_raw_bytes() {
        let key = KeyPair::from_stored(D).unwrap();
        let secret: [u8; 32] = URL_SAFE_NO_PAD.decode(D).unwrap().try_into().unwrap();
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&secret);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(&der)
        );
        assert_eq!(KeyPair::from_file(pem.as_bytes()).unwrap().kid(), key.kid());
        assert_eq!(KeyPair::from_file(&secret).unwrap().kid(), key.kid());
        assert!(KeyPair::from_file(b"not a key").is_err());
        let rsa = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n";
        assert!(KeyPair::from_file(rsa.as_bytes()).is_err());
        assert!(KeyPair::from_stored("short").is_err());
    }

    #[test]
    fn key_sets_are_rfc_7517_okp_keys() {
        let set: Value = serde_json::from_str(&jwks([("k1", X)])).unwrap();
        assert_eq!(
            set,
            json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "k1", "alg": "EdDSA", "use": "sig"}]})
        );
    }
}
