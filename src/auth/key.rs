//! The API key format: a recognisable prefix per kind, a random body and a
//! checksum, so a mistyped or truncated key is rejected without touching storage.
//!
//! ```text
//! pcv2_pt_<32 random base62 chars><6 base62 chars of CRC-32>   personal access token
//! pcv2_sk_<32 random base62 chars><6 base62 chars of CRC-32>   service key
//! pc__...                                                       legacy, refused
//! ```
//! Only the SHA-256 of a key is stored. Keys carry about 190 bits of entropy,
//! so a fast hash is enough: there is nothing to brute-force.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of personal access tokens.
pub const PAT_PREFIX: &str = "pcv2_pt_";
/// Prefix of service keys.
pub const SERVICE_KEY_PREFIX: &str = "pcv2_sk_";
/// Prefix of the retired first key format.
pub const LEGACY_PREFIX: &str = "pc__";

const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const LAST_CHARS: usize = 4;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The two kinds of API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// Acts as the user who created it.
    PersonalAccessToken,
    /// Acts as a service account.
    ServiceKey,
}

impl KeyKind {
    /// The key prefix of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::PersonalAccessToken => PAT_PREFIX,
            Self::ServiceKey => SERVICE_KEY_PREFIX,
        }
    }

    /// The name stored in the `api_keys.kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PersonalAccessToken => "pat",
            Self::ServiceKey => "service_key",
        }
    }

    /// Parses a stored `api_keys.kind` value.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "pat" => Some(Self::PersonalAccessToken),
            "service_key" => Some(Self::ServiceKey),
            _ => None,
        }
    }
}

/// Why a presented key was refused before any lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error(
        "api keys in the legacy `pc__` format are no longer supported; create a personal access token or service key"
    )]
    Legacy,
    #[error("malformed api key: expected a `pcv2_pt_` or `pcv2_sk_` key")]
    UnknownPrefix,
    #[error("malformed api key: wrong length")]
    Length,
    #[error("malformed api key: checksum does not match (mistyped or truncated key)")]
    Checksum,
}

/// A freshly generated key: the secret (shown once) and what may be stored.
pub struct NewKey {
    /// The whole key. Never stored, never logged.
    pub secret: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// The last characters, shown in listings.
    pub last_chars: String,
}

/// Generates a new key of `kind`.
pub fn generate(kind: KeyKind) -> Result<NewKey, getrandom::Error> {
    let mut body = String::with_capacity(BODY_LEN);
    while body.len() < BODY_LEN {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf)?;
        // Rejection sampling keeps the alphabet uniform: 248 = 4 * 62.
        for b in buf.iter().filter(|b| **b < 248) {
            if body.len() == BODY_LEN {
                break;
            }
            body.push(char::from(ALPHABET[usize::from(*b % 62)]));
        }
    }
    let secret = format!(
        "{}{}{}",
        kind.prefix(),
        body,
        checksum(kind.prefix(), &body)
    );
    let last_chars = secret[secret.len() - LAST_CHARS..].to_owned();
    Ok(NewKey {
        hash: hash(&secret),
        secret,
        last_chars,
    })
}

/// Checks the form of a presented key and says which kind it is.
pub fn parse(key: &str) -> Result<KeyKind, KeyFormatError> {
    if key.starts_with(LEGACY_PREFIX) {
        return Err(KeyFormatError::Legacy);
    }
    let (kind, rest) = if let Some(rest) = key.strip_prefix(PAT_PREFIX) {
        (KeyKind::PersonalAccessToken, rest)
    } else if let Some(rest) = key.strip_prefix(SERVICE_KEY_PREFIX) {
        (KeyKind::ServiceKey, rest)
    } else {
        return Err(KeyFormatError::UnknownPrefix);
    };
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(KeyFormatError::Length);
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if !bool::from(
        checksum(kind.prefix(), body)
            .as_bytes()
            .ct_eq(sum.as_bytes()),
    ) {
        return Err(KeyFormatError::Checksum);
    }
    Ok(kind)
}

/// SHA-256 of a key, lower-case hex: what storage holds.
pub fn hash(key: &str) -> String {
    hex(&digest(key))
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether `stored_hash` (hex, as storage holds it) is the hash of the key
/// whose digest is `digest`, compared in constant time. Storage is searched by
/// hash, so the lookup compares digests, never secrets; this final check keeps
/// the comparison the service itself makes independent of where they differ.
pub fn verify(stored_hash: &str, digest: &[u8; 32]) -> bool {
    bool::from(stored_hash.as_bytes().ct_eq(hex(digest).as_bytes()))
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    for &byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn checksum(prefix: &str, body: &str) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(prefix.as_bytes());
    hasher.update(body.as_bytes());
    let mut n = hasher.finalize();
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_as_their_kind() {
        for kind in [KeyKind::PersonalAccessToken, KeyKind::ServiceKey] {
            let key = generate(kind).unwrap();
            assert!(key.secret.starts_with(kind.prefix()));
            assert_eq!(parse(&key.secret), Ok(kind));
            assert_eq!(key.hash, hash(&key.secret));
            assert!(key.secret.ends_with(&key.last_chars));
        }
    }

    #[test]
    fn a_single_mistyped_character_fails_the_checksum() {
        let key = generate(KeyKind::ServiceKey).unwrap().secret;
        let mut bytes = key.into_bytes();
        let i = SERVICE_KEY_PREFIX.len() + 5;
        bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(bytes).unwrap();
        assert_eq!(parse(&typo), Err(KeyFormatError::Checksum));
    }

    #[test]
    fn legacy_truncated_and_foreign_keys_are_refused() {
        assert_eq!(parse("pc__0123456789abcdef"), Err(KeyFormatError::Legacy));
        assert_eq!(parse("ghp_abc"), Err(KeyFormatError::UnknownPrefix));
        assert_eq!(parse("pcv2_pt_abc"), Err(KeyFormatError::Length));
        let key = generate(KeyKind::PersonalAccessToken).unwrap().secret;
        assert_eq!(parse(&key[..key.len() - 1]), Err(KeyFormatError::Length));
    }

    #[test]
    fn verify_accepts_only_the_hash_of_the_key() {
        let key = generate(KeyKind::ServiceKey).unwrap();
        assert!(verify(&key.hash, &digest(&key.secret)));
        let other = generate(KeyKind::ServiceKey).unwrap();
        assert!(!verify(&other.hash, &digest(&key.secret)));
        assert!(!verify(&key.hash[..63], &digest(&key.secret)));
        assert!(!verify("", &digest(&key.secret)));
    }

    #[test]
    fn distinct_keys_have_distinct_hashes() {
        let a = generate(KeyKind::PersonalAccessToken).unwrap();
        let b = generate(KeyKind::PersonalAccessToken).unwrap();
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
        assert_eq!(a.hash.len(), 64);
    }

    /// Property tests over many generated inputs (deterministic seeds): the
    /// parser never panics, accepts exactly the well-formed keys, and catches
    /// every single-character typo and every adjacent transposition.
    mod properties {
        use super::*;
        use crate::seed::Rng;

        const NASTY: &[&str] = &[
            "",
            " ",
            "pcv2_",
            "pcv2_pt",
            "pcv2_pt_",
            "pcv2_sk_",
            "PCV2_PT_",
            "pc__",
            "pc_",
            "\0",
            "pcv2_pt_\u{0}",
            "pcv2_pt_é",
            "pcv2_sk_🔑",
            "Bearer pcv2_pt_",
        ];

        fn random_string(rng: &mut Rng) -> String {
            let len = rng.below(80);
            let pick = rng.below(4);
            (0..len)
                .map(|_| match pick {
                    0 => char::from(ALPHABET[rng.below(62)]),
                    1 => char::from(32 + rng.below(95) as u8),
                    2 => char::from_u32(rng.below(0x3000) as u32).unwrap_or('?'),
                    _ => ['é', '🔑', '\0', '_', 'ß', '\u{202e}'][rng.below(6)],
                })
                .collect()
        }

        #[test]
        fn arbitrary_input_is_refused_without_panicking() {
            let mut rng = Rng::new(0x5eed_0001);
            for i in 0..20_000 {
                let prefix = NASTY[rng.below(NASTY.len())];
                let candidate = if i % 2 == 0 {
                    format!("{prefix}{}", random_string(&mut rng))
                } else {
                    random_string(&mut rng)
                };
                // A random string is a valid key with probability ~2^-32 per
                // well-shaped attempt; none of these is one.
                assert!(parse(&candidate).is_err(), "{candidate:?}");
            }
            for nasty in NASTY {
                assert!(parse(nasty).is_err(), "{nasty:?}");
            }
        }

        #[test]
        fn every_single_character_typo_and_transposition_is_caught() {
            let mut rng = Rng::new(0x5eed_0002);
            for n in 0..300 {
                let kind = if n % 2 == 0 {
                    KeyKind::PersonalAccessToken
                } else {
                    KeyKind::ServiceKey
                };
                let key = generate(kind).unwrap().secret;
                assert_eq!(parse(&key), Ok(kind));
                let bytes = key.as_bytes();
                let start = kind.prefix().len();
                for i in start..bytes.len() {
                    let mut typo = bytes.to_vec();
                    let mut replacement = ALPHABET[rng.below(62)];
                    if replacement == typo[i] {
                        replacement = ALPHABET[(rng.below(61)
                            + 1
                            + ALPHABET.iter().position(|c| *c == typo[i]).unwrap())
                            % 62];
                    }
                    typo[i] = replacement;
                    let typo = String::from_utf8(typo).unwrap();
                    assert_eq!(
                        parse(&typo),
                        Err(KeyFormatError::Checksum),
                        "{key} -> {typo}"
                    );
                    if i + 1 < bytes.len() && bytes[i] != bytes[i + 1] {
                        let mut swapped = bytes.to_vec();
                        swapped.swap(i, i + 1);
                        let swapped = String::from_utf8(swapped).unwrap();
                        assert_eq!(
                            parse(&swapped),
                            Err(KeyFormatError::Checksum),
                            "{key} -> {swapped}"
                        );
                    }
                }
                // Too short, too long, the other kind's prefix, another case.
                assert_eq!(
                    parse(&key[..key.len() - 1 - rng.below(20)]),
                    Err(KeyFormatError::Length)
                );
                assert_eq!(
                    parse(&format!("{key}{}", char::from(ALPHABET[rng.below(62)]))),
                    Err(KeyFormatError::Length)
                );
                let other = if kind == KeyKind::ServiceKey {
                    PAT_PREFIX
                } else {
                    SERVICE_KEY_PREFIX
                };
                assert_eq!(
                    parse(&format!("{other}{}", &key[start..])),
                    Err(KeyFormatError::Checksum)
                );
                assert_eq!(
                    parse(&key.to_uppercase()),
                    Err(KeyFormatError::UnknownPrefix)
                );
            }
        }
    }
}
