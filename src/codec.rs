//! The gRPC codec of the Portcullis services: prost, plus the rules every
//! string field of every request is held to, checked on the wire bytes before
//! the message is decoded, once for every field of every RPC (a new field is
//! covered without code), with the field's path in the error
//! (`resource.tags.value: must not contain the NUL character (U+0000)`):
//!
//! * no string holds the NUL character: PostgreSQL cannot store U+0000 in
//!   text, and no identifier, name or tag needs it;
//! * no string is longer than [`MAX_TEXT_BYTES`] (fields have tighter rules of
//!   their own, checked by the domain);
//! * an id field (a name ending in `_id` or `_ids`, but `resource_id`, which
//!   names a backend's own object, and `role_id`, which may be a system role's
//!   name) is empty or an id in canonical form ([`crate::id`]), so caches and
//!   storage always agree on what a request names.
//!
//! The walk follows the message descriptors compiled into the binary; it reads
//! the bytes in place and allocates nothing. Bytes that are not a valid
//! encoding are left to prost, which reports them as it always does.

use std::{collections::HashMap, marker::PhantomData, sync::OnceLock};

use prost::{Message, Name, bytes::Buf};
use prost_types::{FileDescriptorSet, field_descriptor_proto::Type};
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost encoding and decoding, with the text rule on decoding.
#[derive(Debug, Clone)]
pub struct ValidatingCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for ValidatingCodec<T, U> {
    fn default() -> Self {
        Self { _pd: PhantomData }
    }
}

impl<T, U> Codec for ValidatingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ValidatingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ValidatingDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// The most bytes any string field of a request may hold.
pub const MAX_TEXT_BYTES: usize = 1024;

/// A rule a string field broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextRule {
    Nul,
    TooLong,
    NotAnId,
}

impl TextRule {
    /// The rule as an error message says it.
    pub fn message(self) -> String {
        match self {
            Self::Nul => "must not contain the NUL character (U+0000)".into(),
            Self::TooLong => format!("must be at most {MAX_TEXT_BYTES} bytes"),
            Self::NotAnId => crate::id::RULE.into(),
        }
    }
}

/// Checks the text rules, then decodes with prost.
#[derive(Debug, Clone)]
pub struct ValidatingDecoder<U>(ProstDecoder<U>);

impl<U: Message + Name + Default> Decoder for ValidatingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.chunk();
        // A decode buffer is one contiguous chunk; were it not, prost alone decides.
        if bytes.len() == buf.remaining()
            && let Some((path, rule)) = text_violation::<U>(bytes)
        {
            return Err(Status::invalid_argument(format!(
                "{path}: {}",
                rule.message()
            )));
        }
        self.0.decode(buf)
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// A message in the length-prefixed frame a gRPC client sends (flag 0, not
/// compressed, then the big-endian length): for the load generator, the
/// benchmarks and the tests that speak raw HTTP/2.
pub fn frame(message: &impl Message) -> prost::bytes::Bytes {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(5 + len);
    out.push(0);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message.encode_raw(&mut out);
    out.into()
}

/// The path of the first string field of the encoded `M` in `bytes` that
/// breaks a text rule, and the rule, if any. Only requests (the input types
/// of the API's methods) are held to the rules: the same codec decodes
/// answers in clients, and answers quote ids of other kinds.
pub fn text_violation<M: Name>(bytes: &[u8]) -> Option<(String, TextRule)> {
    let descriptors = Descriptors::get();
    let message = descriptors.message(M::PACKAGE, M::NAME)?;
    if !descriptors.requests.get(message).copied().unwrap_or(false) {
        return None;
    }
    descriptors
        .check(message, bytes, &mut Vec::new())
        .err()
        .map(|(path, rule)| (path.join("."), rule))
}

/// What the walk needs to know of a field.
#[derive(Debug)]
enum FieldKind {
    Text,
    Id,
    Message(usize),
    Other,
}

/// Answers whether a string field holds ids (see the module doc).
fn is_id_field(name: &str) -> bool {
    (name.ends_with("_id") || name.ends_with("_ids")) && name != "resource_id" && name != "role_id"
}

/// The rule `value`, a string field of `kind`, breaks, if any.
fn text_rule(kind: &FieldKind, value: &[u8]) -> Option<TextRule> {
    if value.len() > MAX_TEXT_BYTES {
        return Some(TextRule::TooLong);
    }
    match kind {
        FieldKind::Id if !value.is_empty() => std::str::from_utf8(value)
            .ok()
            .filter(|s| crate::id::is_canonical(s))
            .map_or(Some(TextRule::NotAnId), |_| None),
        FieldKind::Text | FieldKind::Id if value.contains(&0) => Some(TextRule::Nul),
        _ => None,
    }
}

#[derive(Debug)]
struct Field {
    name: String,
    kind: FieldKind,
}

/// The fields of one message type, indexed by number (API field numbers are small).
#[derive(Debug, Default)]
struct MessageFields {
    fields: Vec<Option<Field>>,
}

impl MessageFields {
    fn field(&self, number: u64) -> Option<&Field> {
        self.fields.get(usize::try_from(number).ok()?)?.as_ref()
    }
}

/// FNV-1a: the name lookups hash a few short, trusted strings per request.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// Every message type of the compiled API.
#[derive(Debug, Default)]
struct Descriptors {
    messages: Vec<MessageFields>,
    /// By message index: the type is the input of some method.
    requests: Vec<bool>,
    /// package → message name (nested names joined by `.`) → index.
    by_name: FnvMap<String, FnvMap<String, usize>>,
}

impl Descriptors {
    fn get() -> &'static Self {
        static DESCRIPTORS: OnceLock<Descriptors> = OnceLock::new();
        DESCRIPTORS.get_or_init(|| {
            FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
                .map(|set| Self::build(&set))
                .unwrap_or_default()
        })
    }

    fn build(set: &FileDescriptorSet) -> Self {
        // First every type's name, then the fields (which refer to types by name).
        let mut names: Vec<(String, String, &prost_types::DescriptorProto)> = Vec::new();
        fn collect<'a>(
            package: &str,
            prefix: &str,
            types: &'a [prost_types::DescriptorProto],
            out: &mut Vec<(String, String, &'a prost_types::DescriptorProto)>,
        ) {
            for t in types {
                let name = if prefix.is_empty() {
                    t.name().to_owned()
                } else {
                    format!("{prefix}.{}", t.name())
                };
                collect(package, &name, &t.nested_type, out);
                out.push((package.to_owned(), name, t));
            }
        }
        for file in &set.file {
            collect(file.package(), "", &file.message_type, &mut names);
        }
        let mut by_name: FnvMap<String, FnvMap<String, usize>> = FnvMap::default();
        let mut full: HashMap<String, usize> = HashMap::new();
        for (i, (package, name, _)) in names.iter().enumerate() {
            by_name
                .entry(package.clone())
                .or_default()
                .insert(name.clone(), i);
            full.insert(format!(".{package}.{name}"), i);
        }
        let messages = names
            .iter()
            .map(|(_, _, t)| {
                let mut fields: Vec<Option<Field>> = Vec::new();
                for f in &t.field {
                    let kind = match f.r#type() {
                        Type::String if is_id_field(f.name()) => FieldKind::Id,
                        Type::String => FieldKind::Text,
                        Type::Message => full
                            .get(f.type_name())
                            .map_or(FieldKind::Other, |i| FieldKind::Message(*i)),
                        _ => FieldKind::Other,
                    };
                    // Numbers beyond this are not checked (none of the API's are).
                    let Some(number) = usize::try_from(f.number()).ok().filter(|n| *n < 4096)
                    else {
                        continue;
                    };
                    if fields.len() <= number {
                        fields.resize_with(number + 1, || None);
                    }
                    fields[number] = Some(Field {
                        name: f.name().to_owned(),
                        kind,
                    });
                }
                MessageFields { fields }
            })
            .collect();
        let mut requests = vec![false; names.len()];
        for file in &set.file {
            for method in file.service.iter().flat_map(|s| &s.method) {
                if let Some(i) = full.get(method.input_type()) {
                    requests[*i] = true;
                }
            }
        }
        Self {
            messages,
            requests,
            by_name,
        }
    }

    fn message(&self, package: &str, name: &str) -> Option<usize> {
        self.by_name.get(package)?.get(name).copied()
    }

    /// `Err((path, rule))` of the first string field breaking a text rule;
    /// `Ok` otherwise, also when the bytes are not a valid encoding (prost
    /// reports that).
    fn check<'a>(
        &'a self,
        message: usize,
        mut bytes: &[u8],
        path: &mut Vec<&'a str>,
    ) -> Result<(), (Vec<&'a str>, TextRule)> {
        let Some(fields) = self.messages.get(message) else {
            return Ok(());
        };
        while !bytes.is_empty() {
            let Some(key) = varint(&mut bytes) else {
                return Ok(());
            };
            let number = key >> 3;
            match key & 7 {
                0 => {
                    if varint(&mut bytes).is_none() {
                        return Ok(());
                    }
                }
                1 => bytes = bytes.get(8..).unwrap_or_default(),
                5 => bytes = bytes.get(4..).unwrap_or_default(),
                2 => {
                    let Some(len) = varint(&mut bytes).and_then(|n| usize::try_from(n).ok()) else {
                        return Ok(());
                    };
                    let Some(value) = bytes.get(..len) else {
                        return Ok(());
                    };
                    bytes = &bytes[len..];
                    match fields.field(number) {
                        Some(Field {
                            name,
                            kind: FieldKind::Message(inner),
                        }) => {
                            path.push(name);
                            self.check(*inner, value, path)?;
                            path.pop();
                        }
                        Some(Field { name, kind }) => {
                            if let Some(rule) = text_rule(kind, value) {
                                path.push(name);
                                return Err((path.clone(), rule));
                            }
                        }
                        None => {}
                    }
                }
                // Groups (3, 4) are not used by proto3; anything else is malformed.
                _ => return Ok(()),
            }
        }
        Ok(())
    }
}

/// Reads a base-128 varint.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1 as pb;

    fn check<M: Message + Name>(m: &M) -> Result<(), String> {
        text_violation::<M>(&m.encode_to_vec()).map_or(Ok(()), |(path, _)| Err(path))
    }

    fn rule<M: Message + Name>(m: &M) -> Option<(String, TextRule)> {
        text_violation::<M>(&m.encode_to_vec())
    }

    const WS: &str = "0191c1d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

    #[test]
    fn ids_are_refused_in_any_spelling_but_the_canonical_one() {
        let mut req = pb::CheckRequest {
            workspace_id: WS.into(),
            principal: Some(pb::CheckPrincipal {
                kind: Some(pb::check_principal::Kind::UserId(WS.to_uppercase())),
            }),
            ..Default::default()
        };
        assert_eq!(
            rule(&req),
            Some(("principal.user_id".into(), TextRule::NotAnId))
        );
        req.principal = None;
        assert_eq!(rule(&req), None);
        for bad in [
            format!("{{{WS}}}"),
            format!("urn:uuid:{WS}"),
            WS.replace('-', ""),
            "ws".into(),
        ] {
            req.workspace_id = bad;
            assert_eq!(rule(&req), Some(("workspace_id".into(), TextRule::NotAnId)));
        }
        // Empty ids mean "the default" and are left to the domain.
        req.workspace_id = String::new();
        assert_eq!(rule(&req), None);
        // Free-form ids of backends' own objects are text, not ids.
        let tags = pb::GetResourceTagsRequest {
            workspace_id: WS.into(),
            resource_type: "prompts".into(),
            resource_id: "Welcome Prompt {v2}".into(),
        };
        assert_eq!(rule(&tags), None);
        let key = pb::CreateServiceKeyRequest {
            workspace_ids: vec![WS.into(), WS.to_uppercase()],
            ..Default::default()
        };
        assert_eq!(
            rule(&key),
            Some(("workspace_ids".into(), TextRule::NotAnId))
        );
    }

    #[test]
    fn answers_are_not_held_to_the_request_rules() {
        let event = pb::AuditEvent {
            target_id: "a backend's own id".into(),
            ..Default::default()
        };
        assert_eq!(rule(&event), None);
    }

    #[test]
    fn every_string_is_bounded() {
        let mut req = pb::CreateTeamRequest {
            organization_id: String::new(),
            name: "x".repeat(MAX_TEXT_BYTES),
        };
        assert_eq!(rule(&req), None);
        req.name.push('x');
        assert_eq!(rule(&req), Some(("name".into(), TextRule::TooLong)));
    }

    #[test]
    fn nul_in_any_string_field_is_found_with_its_path() {
        let mut req = pb::CheckRequest {
            workspace_id: WS.into(),
            permission: "datasets:read".into(),
            resource: Some(pb::Resource {
                r#type: "datasets".into(),
                id: "d1".into(),
                tags: vec![
                    pb::Tag {
                        key: "Environment".into(),
                        value: "prod".into(),
                    },
                    pb::Tag {
                        key: "Application".into(),
                        value: "a\0b".into(),
                    },
                ],
            }),
            ..Default::default()
        };
        assert_eq!(check(&req), Err("resource.tags.value".to_owned()));
        req.resource = None;
        assert_eq!(check(&req), Ok(()));
        req.workspace_id = "\0".into();
        assert_eq!(check(&req), Err("workspace_id".to_owned()));
        req.workspace_id = WS.into();
        req.principal = Some(pb::CheckPrincipal {
            kind: Some(pb::check_principal::Kind::ApiKey("k\0".into())),
        });
        assert_eq!(check(&req), Err("principal.api_key".to_owned()));
    }

    #[test]
    fn numbers_and_malformed_bytes_are_left_to_prost() {
        let d = Descriptors::get();
        let index = d
            .message(pb::CheckRequest::PACKAGE, pb::CheckRequest::NAME)
            .unwrap();
        // An empty resource encodes a 0x00 length byte that is not text.
        let req = pb::CheckRequest {
            resource: Some(pb::Resource::default()),
            at_least_revision: 1,
            ..Default::default()
        };
        assert!(req.encode_to_vec().contains(&0));
        assert_eq!(check(&req), Ok(()));
        for garbage in [&[0x0a, 0xff][..], &[0xff; 12], &[0x0a, 0x05, 0x00], &[0x03]] {
            assert!(d.check(index, garbage, &mut Vec::new()).is_ok());
        }
    }
}
