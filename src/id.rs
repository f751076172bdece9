//! Identifiers. Every id Portcullis issues is a UUID, and it is accepted in
//! exactly one spelling: lower-case, hyphenated (`0191c1d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d`).
//!
//! One spelling matters for isolation: caches are keyed by the parsed number
//! and storage by the text, so a lenient parser (upper case, braces,
//! `urn:uuid:`, no hyphens) would let one request name an object the cache and
//! the database disagree about. The codec refuses every other spelling before
//! a request is decoded, and [`parse`] refuses them again wherever a number is
//! made from text.

/// A 128-bit id.
pub type Id = u128;

/// The rule every id field and id header is held to, for error messages.
pub const RULE: &str = "must be an id in canonical form: a lower-case, hyphenated UUID";

/// Parses an id in canonical form; `None` for anything else (which names nothing).
pub fn parse(s: &str) -> Option<Id> {
    let bytes = s.as_bytes();
    // At this length uuid's parser takes only the hyphenated form, in either
    // case; the lower case is the one spelling.
    if bytes.len() != 36 || bytes.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    uuid::Uuid::try_parse_ascii(bytes).ok().map(|u| u.as_u128())
}

/// Answers whether `s` is an id in canonical form.
pub fn is_canonical(s: &str) -> bool {
    parse(s).is_some()
}

/// The canonical text of an id.
pub fn format(id: Id) -> String {
    uuid::Uuid::from_u128(id).hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_spelling_parses() {
        let id = uuid::Uuid::new_v4();
        let canonical = id.hyphenated().to_string();
        assert_eq!(parse(&canonical), Some(id.as_u128()));
        assert_eq!(format(id.as_u128()), canonical);
        for other in [
            canonical.to_uppercase(),
            format!("{{{canonical}}}"),
            format!("urn:uuid:{canonical}"),
            id.simple().to_string(),
            format!(" {canonical}"),
            canonical[..35].to_owned(),
            canonical.replacen('-', "+", 1),
            String::new(),
        ] {
            assert_eq!(parse(&other), None, "{other:?} must not parse");
        }
    }

    #[test]
    fn every_nibble_is_read() {
        let id = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(parse(&format(id)), Some(id));
    }
}
