//! Fuzzes the request decoding and validation of every RPC against a real
//! server, as a deterministic property test.
//!
//! The methods and their input types are read from the descriptor sets the
//! server itself serves for reflection (`portcullis.v1` and health), so a new
//! RPC or field is fuzzed without touching this file. For each method the test
//! sends wire-valid random messages built by walking the input type (strings
//! from a corpus of hostile and real values, extreme integers, unknown enum
//! values, odd timestamps, oneofs, repeated fields, unknown fields), mutations
//! of such messages (truncations, bit flips, wrong wire types) and random
//! bytes, mostly with the bootstrap key (the most powerful caller, so
//! validation and storage are reached rather than permission checks), some
//! acting for an organization admin, naming a tenant, or with no or a bad key.
//!
//! A server-streaming method (`WatchService/Watch`, health's `Watch`) is
//! called as one: its stream must open or be refused within the call's
//! timeout, is then read for a moment ([`STREAM_WINDOW`]) and dropped; a
//! stream that ended while it was read is judged by the status it ended
//! with, one still open as OK.
//!
//! Every answer must be one a client can act on:
//! * the server answers (no transport error, no hang);
//! * never UNKNOWN; INTERNAL only for a body that does not decode (tonic's
//!   answer, as the gRPC status code guidance says), never for a valid one;
//! * INVALID_ARGUMENT always says `<field>: <rule>`;
//! * OUT_OF_RANGE only for a message over the size limit;
//! * without a usable key, UNAUTHENTICATED.
//!
//! Afterwards health still says SERVING, ordinary calls work, and a message
//! with an unknown field is answered like the same message without it.
//!
//! Everything is drawn from fixed seeds: a failure names the method and case,
//! and `PORTCULLIS_FUZZ_METHOD=<part of the path>` with
//! `PORTCULLIS_FUZZ_ITERATIONS=<n>` replays just that method. Run with
//! `--nocapture` to see how the answers were distributed over the codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use harness::{
    Backend, TestServer, app_scope,
    raw::{self, RawCodec},
    req, user,
};
use portcullis::{proto::v1 as pb, seed::Rng};
use prost::{Message, bytes::BufMut};
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use tonic::{
    Code, Request,
    codegen::http::uri::PathAndQuery,
    metadata::{AsciiMetadataValue, MetadataValue},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The seed every case is derived from.
const SEED: u64 = 0x00de_c0de_2025_f022;
/// How deep generated messages nest.
const MAX_DEPTH: usize = 4;
/// The length of the occasional very long repeated field.
const LARGE: usize = 2000;
/// The server's default message size limit.
const MESSAGE_LIMIT: usize = 4 * 1024 * 1024;
/// How long an answer may take before the call counts as hung (the server's
/// own request timeout is 10 s).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an open stream is read: enough for its first messages, or for
/// the status it ends with at once.
const STREAM_WINDOW: raw::Window = raw::Window {
    total: Duration::from_millis(300),
    idle: Duration::from_millis(100),
    max_messages: 64,
};
/// Served only with `--bench-noop`.
const NOT_SERVED: &[&str] = &["portcullis.v1.NoopService"];

// ---------------------------------------------------------------------------
// A tonic codec for raw bytes: any body to any method.

/// How a call ended.
#[derive(Debug)]
enum Outcome {
    /// The server answered OK with this body.
    Ok(Vec<u8>),
    /// The server opened a stream: how many messages came while it was read,
    /// and the status it ended with then, if it ended.
    Streamed {
        messages: usize,
        end: Option<(Code, String)>,
    },
    /// The server answered with a status.
    Status(Code, String),
    /// No answer: the connection failed or the client gave up on it.
    NoAnswer(String),
}

impl Outcome {
    /// The code the client acts on: a stream's is the status it ended with,
    /// OK while it stays open.
    fn code(&self) -> Option<Code> {
        match self {
            Self::Ok(_) => Some(Code::Ok),
            Self::Streamed { end, .. } => Some(end.as_ref().map_or(Code::Ok, |(code, _)| *code)),
            Self::Status(code, _) => Some(*code),
            Self::NoAnswer(_) => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok(body) => write!(f, "OK ({} bytes)", body.len()),
            Self::Streamed { messages, end } => {
                write!(f, "OK stream ({messages} messages")?;
                match end {
                    Some((Code::Ok, _)) => write!(f, ", then ended)"),
                    Some((code, message)) => {
                        write!(f, ", then {code:?}: {:?})", clip(message, 300))
                    }
                    None => write!(f, ", still open)"),
                }
            }
            Self::Status(code, message) => {
                write!(f, "{code:?}: {:?}", clip(message, 300))
            }
            Self::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// The metadata of a call.
#[derive(Clone, Debug, Default)]
struct Auth {
    /// The `authorization` value, `Bearer <key>`.
    authorization: Option<Vec<u8>>,
    act_as: Option<Vec<u8>>,
    tenant: Option<Vec<u8>>,
    /// Whether the key is missing or unusable (the answer must be UNAUTHENTICATED).
    unusable_key: bool,
    label: &'static str,
}

impl Auth {
    fn admin(s: &TestServer) -> Self {
        Self {
            authorization: Some(format!("Bearer {}", s.key()).into_bytes()),
            label: "bootstrap key",
            ..Self::default()
        }
    }
}

fn metadata_value(bytes: &[u8]) -> Option<AsciiMetadataValue> {
    MetadataValue::try_from(bytes).ok()
}

/// A status the server sent, or no answer for one the client made up itself
/// (connection reset, protocol error): those carry the error they came from,
/// the server's do not.
fn refused(status: &tonic::Status) -> Outcome {
    if std::error::Error::source(status).is_some() {
        Outcome::NoAnswer(format!("{status}"))
    } else {
        Outcome::Status(status.code(), status.message().to_owned())
    }
}

/// Sends `body` to `method`, as its kind of call.
async fn send(channel: &Channel, method: &Method, body: Vec<u8>, auth: &Auth) -> Outcome {
    if method.server_streaming {
        watch(channel, &method.path, body, auth).await
    } else {
        call(channel, &method.path, body, auth).await
    }
}

fn request(body: Vec<u8>, auth: &Auth) -> Request<Vec<u8>> {
    let mut request = Request::new(body);
    let headers = [
        ("authorization", &auth.authorization),
        ("x-act-as-user", &auth.act_as),
        ("x-tenant-id", &auth.tenant),
    ];
    for (name, value) in headers {
        if let Some(value) = value.as_deref().and_then(metadata_value) {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

/// Sends `body` to `path`, a unary method.
async fn call(channel: &Channel, path: &str, body: Vec<u8>, auth: &Auth) -> Outcome {
    let request = request(body, auth);
    let path = PathAndQuery::try_from(path).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let work = async {
        if let Err(e) = grpc.ready().await {
            return Outcome::NoAnswer(format!("channel not ready: {e}"));
        }
        match grpc.unary(request, path, RawCodec).await {
            Ok(response) => Outcome::Ok(response.into_inner()),
            Err(status) => refused(&status),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::NoAnswer(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// Opens the stream of a server-streaming method at `path` with `body`,
/// reads it within [`STREAM_WINDOW`], then drops it (which cancels it). The
/// stream must open, or be refused, within [`CALL_TIMEOUT`].
async fn watch(channel: &Channel, path: &str, body: Vec<u8>, auth: &Auth) -> Outcome {
    let request = request(body, auth);
    let path = PathAndQuery::try_from(path).unwrap();
    let read = match raw::stream(channel, request, path, CALL_TIMEOUT, STREAM_WINDOW).await {
        raw::Streamed::Read(read) => read,
        raw::Streamed::Refused(status) => return refused(&status),
        raw::Streamed::Lost(why) => return Outcome::NoAnswer(why),
    };
    let end = read
        .end
        .map(|status| (status.code(), status.message().to_owned()));
    Outcome::Streamed {
        messages: read.messages.len(),
        end,
    }
}

// ---------------------------------------------------------------------------
// The schema, from the descriptor sets.

/// A method the server serves: unary, or streaming its answers.
#[derive(Clone, Debug)]
struct Method {
    /// `/package.Service/Method`.
    path: String,
    /// The fully qualified input type, with a leading dot.
    input: String,
    /// Whether calls go through authentication.
    authenticated: bool,
    /// The answer is a stream of messages.
    server_streaming: bool,
}

#[derive(Debug, Default)]
struct Schema {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
    methods: Vec<Method>,
}

impl Schema {
    fn load(sets: &[&[u8]]) -> Self {
        let mut schema = Self::default();
        for set in sets {
            let set = FileDescriptorSet::decode(*set).unwrap();
            for file in &set.file {
                let prefix = format!(".{}", file.package());
                for m in &file.message_type {
                    schema.add_message(&prefix, m);
                }
                for e in &file.enum_type {
                    schema.enums.insert(
                        format!("{prefix}.{}", e.name()),
                        e.value.iter().map(|v| v.number()).collect(),
                    );
                }
                for service in &file.service {
                    let full = format!("{}.{}", file.package(), service.name());
                    if NOT_SERVED.contains(&full.as_str()) {
                        continue;
                    }
                    for m in &service.method {
                        // Cases are one message each; no served method takes a stream.
                        assert!(
                            !m.client_streaming(),
                            "{full}/{} takes a stream of requests, which this fuzzer cannot build",
                            m.name()
                        );
                        schema.methods.push(Method {
                            path: format!("/{full}/{}", m.name()),
                            input: m.input_type().to_owned(),
                            authenticated: file.package() != "grpc.health.v1",
                            server_streaming: m.server_streaming(),
                        });
                    }
                }
            }
        }
        schema
    }

    fn add_message(&mut self, prefix: &str, m: &DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&name, nested);
        }
        for e in &m.enum_type {
            self.enums.insert(
                format!("{name}.{}", e.name()),
                e.value.iter().map(|v| v.number()).collect(),
            );
        }
        self.messages.insert(name, m.clone());
    }
}

// ---------------------------------------------------------------------------
// Wire encoding, by hand.

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(field: u32, wire: u8, out: &mut Vec<u8>) {
    put_varint((u64::from(field) << 3) | u64::from(wire), out);
}

fn put_len(field: u32, bytes: &[u8], out: &mut Vec<u8>) {
    put_key(field, LEN, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_varint_field(field: u32, v: u64, out: &mut Vec<u8>) {
    put_key(field, VARINT, out);
    put_varint(v, out);
}

// ---------------------------------------------------------------------------
// Random values.

/// A deterministic generator with the helpers the fuzzer needs.
struct R(Rng);

impl R {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        // Small seeds start with small numbers: stir first.
        for _ in 0..4 {
            rng.next_u64();
        }
        Self(rng)
    }

    fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The seed of case `i` of `path`: every case can be regenerated alone.
fn case_seed(path: &str, i: usize) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ SEED;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    2,
    7,
    10,
    50,
    99,
    100,
    101,
    999,
    1000,
    1001,
    3650,
    3651,
    65_535,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
    0xffff_ffff_8000_0000, // i32::MIN, sign-extended
];

/// Strings no field should choke on: empty and blank, long, unicode (RTL,
/// emoji, combining marks, BOM), NUL and control characters, SQL, paths,
/// format strings, templates, ids that look real, permissions, roles, emails,
/// slugs, tags, key prefixes.
fn static_corpus() -> Vec<Vec<u8>> {
    let owned = [
        "x".repeat(63),
        "x".repeat(64),
        "x".repeat(65),
        "x".repeat(100),
        "x".repeat(101),
        "x".repeat(255),
        "x".repeat(256),
        "x".repeat(257),
        "x".repeat(10_000),
        "é".repeat(5_000),
        "🦀".repeat(2_500),
        "\u{202e}".repeat(300),
        "9".repeat(40),
        format!("pcv2_pt_{}", "A".repeat(38)),
        format!("pcv2_sk_{}", "0".repeat(38)),
        format!("{}:read", "a".repeat(200)),
    ];
    let fixed = [
        "",
        " ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        "a",
        "A",
        "0",
        "-1",
        "\u{202e}gnp.exe",
        "שלום עולם",
        "مرحبا بالعالم",
        "👩\u{200d}👩\u{200d}👧\u{200d}👦",
        "🦀🔥",
        "e\u{301}\u{301}\u{301}",
        "\u{feff}bom",
        "\u{200b}",
        "\u{fffd}",
        "\u{10ffff}",
        "\u{85}next-line",
        "\0",
        "a\0b",
        "\u{1}\u{7}\u{1b}[31m",
        "\u{7f}",
        "'; DROP TABLE users; --",
        "' OR '1'='1",
        "\" OR 1=1 --",
        "Robert'); DROP TABLE students;--",
        "%",
        "_",
        "%%",
        "\\",
        "'",
        "\"",
        "`",
        "../../../etc/passwd",
        "..\\..\\boot.ini",
        "/",
        "%s%s%s%n",
        "%x%x",
        "{}",
        "{0}",
        "${jndi:ldap://example.com/a}",
        "<script>alert(1)</script>",
        "null",
        "NULL",
        "undefined",
        "NaN",
        "true",
        "[]",
        "{\"a\":1}",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "00000000-0000-0000-0000-00000000000g",
        "{deadbeef-dead-beef-dead-beefdeadbeef}",
        "urn:uuid:deadbeef-dead-beef-dead-beefdeadbeef",
        "deadbeefdeadbeefdeadbeefdeadbeef",
        "datasets:read",
        "datasets:*",
        "*",
        "*:*",
        ":",
        "datasets:",
        ":read",
        "datasets:read:extra",
        "DATASETS:READ",
        "datasets : read",
        "workspace:delete",
        "members:manage",
        "roles:manage",
        "widgets:spin",
        "widgets",
        "WORKSPACE_ADMIN",
        "WORKSPACE_EDITOR",
        "WORKSPACE_VIEWER",
        "workspace_admin",
        "ORG_ADMIN",
        "admin@acme.test",
        "ADMIN@ACME.TEST",
        "new@example.com",
        "a@b.c",
        "@",
        "a@",
        "@b.c",
        "a@b",
        "a@@b.c",
        "ml-research",
        "a-",
        "-a",
        "Environment",
        "Application",
        "prod",
        "Environment=prod",
        "team/owner.v2",
        "1env",
        "pcv2_sk_",
        "pc__legacy",
        "Bearer x",
        "idp|admin",
    ];
    owned
        .into_iter()
        .map(String::into_bytes)
        .chain(fixed.iter().map(|s| s.as_bytes().to_vec()))
        .collect()
}

/// What strings are drawn from.
struct Corpus {
    fixed: Vec<Vec<u8>>,
    /// The fixed strings of at most 64 bytes, for very long repeated fields.
    short: Vec<Vec<u8>>,
    /// Ids and names of real objects, the organization's id first.
    real: Vec<Vec<u8>>,
}

impl Corpus {
    fn new(real: Vec<String>, extra: Vec<String>) -> Self {
        let mut fixed = static_corpus();
        fixed.extend(extra.into_iter().map(String::into_bytes));
        let short = fixed.iter().filter(|s| s.len() <= 64).cloned().collect();
        Self {
            fixed,
            short,
            real: real.into_iter().map(String::into_bytes).collect(),
        }
    }
}

/// Builds random, wire-valid encodings of the input types.
struct Gen<'a> {
    rng: R,
    schema: &'a Schema,
    corpus: &'a Corpus,
    /// Whether one repeated field of this request may still get `LARGE` elements.
    large_left: bool,
    /// Inside a `LARGE` repeated field: short values only.
    short: bool,
    /// Whether a known string field got bytes that are not UTF-8.
    broke_utf8: bool,
}

impl<'a> Gen<'a> {
    fn new(rng: R, schema: &'a Schema, corpus: &'a Corpus) -> Self {
        Self {
            rng,
            schema,
            corpus,
            large_left: true,
            short: false,
            broke_utf8: false,
        }
    }

    fn message(&mut self, type_name: &str, depth: usize) -> Vec<u8> {
        if type_name == ".google.protobuf.Timestamp" {
            return self.timestamp();
        }
        let schema = self.schema;
        let Some(desc) = schema.messages.get(type_name) else {
            panic!("no descriptor for {type_name}");
        };
        if depth > MAX_DEPTH {
            return Vec::new();
        }
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut oneofs: BTreeMap<i32, Vec<&FieldDescriptorProto>> = BTreeMap::new();
        for f in &desc.field {
            // proto3 `optional` is a synthetic oneof of one field: a plain field here.
            if let Some(index) = f.oneof_index
                && !f.proto3_optional()
            {
                oneofs.entry(index).or_default().push(f);
                continue;
            }
            if f.label() == Label::Repeated {
                let n = self.count(depth);
                let was_short = self.short;
                self.short |= n == LARGE;
                for _ in 0..n {
                    chunks.push(self.field(f, depth));
                }
                self.short = was_short;
            } else if self.rng.below(10) < 6 {
                chunks.push(self.field(f, depth));
                // A field seen twice: the last wins (scalars) or both merge (messages).
                if self.rng.one_in(30) {
                    chunks.push(self.field(f, depth));
                }
            }
        }
        for members in oneofs.values() {
            match self.rng.below(8) {
                0 | 1 => {}
                2 => {
                    // Two members: the last one wins.
                    for _ in 0..2 {
                        let f = *self.rng.pick(members);
                        chunks.push(self.field(f, depth));
                    }
                }
                _ => {
                    let f = *self.rng.pick(members);
                    chunks.push(self.field(f, depth));
                }
            }
        }
        if self.rng.one_in(20) {
            chunks.push(self.unknown_field());
        }
        if self.rng.one_in(8) {
            for i in (1..chunks.len()).rev() {
                let j = self.rng.below(i + 1);
                chunks.swap(i, j);
            }
        }
        chunks.concat()
    }

    /// How many elements a repeated field gets.
    fn count(&mut self, depth: usize) -> usize {
        if depth == 0 && self.large_left && self.rng.one_in(40) {
            self.large_left = false;
            return LARGE;
        }
        match self.rng.below(10) {
            0..=3 => 0,
            4..=6 => 1,
            7 | 8 => 2,
            _ => 3 + self.rng.below(3),
        }
    }

    /// One occurrence of a field: key and value.
    fn field(&mut self, f: &FieldDescriptorProto, depth: usize) -> Vec<u8> {
        let num = u32::try_from(f.number()).unwrap();
        let mut out = Vec::new();
        match f.r#type() {
            Type::String => {
                let s = self.string_for(f.name());
                put_len(num, &s, &mut out);
            }
            Type::Bytes => {
                let s = self.random_bytes(32);
                put_len(num, &s, &mut out);
            }
            Type::Message => {
                let body = self.message(f.type_name(), depth + 1);
                put_len(num, &body, &mut out);
            }
            Type::Group => {}
            Type::Fixed32 | Type::Sfixed32 | Type::Float => {
                put_key(num, FIXED32, &mut out);
                out.put_u32_le(self.int() as u32);
            }
            Type::Fixed64 | Type::Sfixed64 | Type::Double => {
                put_key(num, FIXED64, &mut out);
                out.put_u64_le(self.int());
            }
            Type::Bool => {
                let v = *self.rng.pick(&[0, 1, 1, 2, u64::MAX]);
                put_varint_field(num, v, &mut out);
            }
            Type::Enum => {
                let v = self.enum_value(f.type_name());
                put_varint_field(num, v, &mut out);
            }
            Type::Sint32 | Type::Sint64 => {
                let v = self.int();
                put_varint_field(num, (v << 1) ^ ((v as i64 >> 63) as u64), &mut out);
            }
            Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                let v = self.int();
                put_varint_field(num, v, &mut out);
            }
        }
        out
    }

    fn int(&mut self) -> u64 {
        match self.rng.below(5) {
            0 => self.rng.u64(),
            1 => self.rng.u64() % 1000,
            _ => *self.rng.pick(INTERESTING_INTS),
        }
    }

    fn enum_value(&mut self, type_name: &str) -> u64 {
        let schema = self.schema;
        if let Some(values) = schema.enums.get(type_name)
            && self.rng.below(3) != 0
        {
            return i64::from(*self.rng.pick(values)) as u64;
        }
        let unknown = *self.rng.pick(&[4, 99, 1000, -1, i32::MAX, i32::MIN]);
        i64::from(unknown) as u64
    }

    /// A `google.protobuf.Timestamp`: valid, past, far future, before the
    /// epoch, at the extremes, with nanos out of range; fields may be absent.
    fn timestamp(&mut self) -> Vec<u8> {
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        let seconds = *self.rng.pick(&[
            now + 86_400,
            now + 60,
            now - 86_400,
            now + 100 * 365 * 86_400,
            0,
            -1,
            -62_135_596_800, // 0001-01-01, the smallest valid value
            -62_135_596_801,
            253_402_300_799, // 9999-12-31, the largest valid value
            253_402_300_800,
            i64::MAX,
            i64::MIN,
            i64::MAX / 1000,
            i64::MIN / 1000,
        ]);
        let nanos = *self.rng.pick(&[
            0,
            1,
            500_000_000,
            999_999_999,
            1_000_000_000,
            -1,
            i32::MAX,
            i32::MIN,
        ]);
        let mut out = Vec::new();
        if !self.rng.one_in(6) {
            put_varint_field(1, seconds as u64, &mut out);
        }
        if self.rng.one_in(2) {
            put_varint_field(2, i64::from(nanos) as u64, &mut out);
        }
        out
    }

    /// A field no input type has, with any wire type.
    fn unknown_field(&mut self) -> Vec<u8> {
        let num = *self.rng.pick(&[100, 1000, 2047, 19_000, 536_870_911]);
        let mut out = Vec::new();
        match self.rng.below(4) {
            0 => put_varint_field(num, self.rng.u64(), &mut out),
            1 => {
                let body = self.random_bytes(16);
                put_len(num, &body, &mut out);
            }
            2 => {
                put_key(num, FIXED32, &mut out);
                out.put_u32_le(7);
            }
            _ => {
                put_key(num, FIXED64, &mut out);
                out.put_u64_le(7);
            }
        }
        out
    }

    /// A string for the field `name`: ids, permissions, roles and emails are
    /// often real or real-looking, so that calls get past the first check.
    fn string_for(&mut self, name: &str) -> Vec<u8> {
        let corpus = self.corpus;
        let hints: &[&str] = match name {
            "organization_id" if self.rng.below(3) != 0 => {
                return if self.rng.one_in(3) {
                    Vec::new()
                } else {
                    corpus.real[0].clone()
                };
            }
            "permission" | "permissions" | "actions" => &[
                "datasets:read",
                "datasets:share",
                "widgets:spin",
                "widgets:read",
                "projects:delete",
                "members:manage",
                "read",
                "spin",
            ],
            "role" => &["WORKSPACE_ADMIN", "WORKSPACE_EDITOR", "WORKSPACE_VIEWER"],
            "email" => &["new@example.com", "Someone@Example.org", "admin@acme.test"],
            "resource_type" | "type" => &["datasets", "widgets", "projects"],
            "key" => &["Environment", "Application", "ml-research", "team/owner.v2"],
            "value" | "values" | "application" => &["prod", "staging", "app-0"],
            _ => &[],
        };
        if !hints.is_empty() && self.rng.below(5) < 2 {
            return self.rng.pick(hints).as_bytes().to_vec();
        }
        if (name.ends_with("_id") || name.ends_with("_ids") || name == "role")
            && self.rng.below(5) < 2
        {
            return self.rng.pick(&corpus.real).clone();
        }
        self.string()
    }

    fn string(&mut self) -> Vec<u8> {
        let corpus = self.corpus;
        let fixed = if self.short {
            &corpus.short
        } else {
            &corpus.fixed
        };
        match self.rng.below(20) {
            0..=8 => self.rng.pick(fixed).clone(),
            9..=12 if !corpus.real.is_empty() => self.rng.pick(&corpus.real).clone(),
            13 | 14 if !corpus.real.is_empty() => {
                let id = self.rng.pick(&corpus.real).clone();
                self.near_miss(id)
            }
            15 | 16 => {
                let mut s = self.rng.pick(fixed).clone();
                let separators: [&[u8]; 5] = [b":", b"", b"/", b" ", b"="];
                let separator = *self.rng.pick(&separators);
                let tail: &Vec<u8> = self.rng.pick(fixed);
                s.extend_from_slice(separator);
                s.extend_from_slice(tail);
                s
            }
            19 if !self.short && self.rng.one_in(5) => {
                // Not UTF-8: the message does not decode.
                self.broke_utf8 = true;
                let mut s = self.rng.pick(&corpus.short).clone();
                let at = self.rng.below(s.len() + 1);
                let invalid: [&[u8]; 4] = [&[0xff], &[0xc3], &[0xed, 0xa0, 0x80], &[0x80]];
                let bad = *self.rng.pick(&invalid);
                s.splice(at..at, bad.iter().copied());
                s
            }
            _ => self.random_text(24),
        }
    }

    /// A real id or name, slightly wrong.
    fn near_miss(&mut self, mut id: Vec<u8>) -> Vec<u8> {
        match self.rng.below(8) {
            0 => id.make_ascii_uppercase(),
            1 => id.insert(0, b' '),
            2 => id.push(b' '),
            3 => {
                id.pop();
            }
            4 => id.push(b'x'),
            5 => id.push(0),
            6 => id.extend_from_slice(b"%00"),
            _ => {
                id.insert(0, b'\'');
                id.push(b'\'');
            }
        }
        id
    }

    /// Up to `max` random characters: printable ASCII, control characters or any scalar value.
    fn random_text(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.below(max + 1);
        let mut s = String::new();
        for _ in 0..n {
            let c = match self.rng.below(4) {
                0 | 1 => char::from(b' ' + (self.rng.below(95) as u8)),
                2 => char::from(self.rng.below(32) as u8),
                _ => loop {
                    if let Some(c) = char::from_u32((self.rng.u64() % 0x11_0000) as u32) {
                        break c;
                    }
                },
            };
            s.push(c);
        }
        s.into_bytes()
    }

    fn random_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.below(max + 1);
        (0..n).map(|_| self.rng.u64() as u8).collect()
    }

    /// A valid encoding broken in one to three places.
    fn mutate(&mut self, mut body: Vec<u8>) -> Vec<u8> {
        for _ in 0..=self.rng.below(3) {
            match self.rng.below(7) {
                0 if !body.is_empty() => body.truncate(self.rng.below(body.len())),
                1 if !body.is_empty() => {
                    let i = self.rng.below(body.len());
                    body[i] ^= 1 << self.rng.below(8);
                }
                2 if !body.is_empty() => {
                    let i = self.rng.below(body.len());
                    body[i] = *self.rng.pick(&[0x00, 0x80, 0xff, 0x7f]);
                }
                3 => {
                    let at = self.rng.below(body.len() + 1);
                    let junk = self.random_bytes(8);
                    body.splice(at..at, junk);
                }
                4 => {
                    // A known field number with a wire type it cannot have, or a group.
                    let num = 1 + self.rng.below(5) as u32;
                    let wire = *self.rng.pick(&[VARINT, FIXED64, LEN, 3, 4, FIXED32, 6, 7]);
                    put_key(num, wire, &mut body);
                    let junk = self.random_bytes(4);
                    body.extend(junk);
                }
                5 => {
                    // Field number 0, or a varint that overflows.
                    let prefixes: [&[u8]; 3] = [
                        &[0x00, 0x01],
                        &[
                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                        ],
                        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
                    ];
                    let prefix = *self.rng.pick(&prefixes);
                    body.splice(0..0, prefix.iter().copied());
                }
                _ => {
                    // A length that runs past the end.
                    put_key(1, LEN, &mut body);
                    put_varint(1 + self.rng.u64() % 1_000_000, &mut body);
                }
            }
        }
        body
    }
}

// ---------------------------------------------------------------------------
// Fixtures.

/// Objects a method's cases may name, made afresh for every method so that
/// what one method's cases delete does not starve the next.
struct Fixture {
    workspace: String,
    member: String,
    app: String,
    /// Ids and names of everything in it, the organization's id first.
    names: Vec<String>,
}

async fn fixture(s: &TestServer, n: usize) -> Fixture {
    let member = s.member(&format!("m{n}"), pb::OrgRole::OrgUser).await;
    let ws = s.workspace(&format!("ws-{n}")).await;
    let team = s.team(&format!("team {n}"), &[&member.user_id]).await;
    let app = format!("app-{n}");
    s.application(&ws, &app).await;
    let grant = s
        .grant(
            &ws,
            user(&member.user_id),
            "WORKSPACE_VIEWER",
            app_scope(&app),
        )
        .await;
    let sa = s.service_account(&format!("sa {n}")).await;
    let key = s
        .identity()
        .create_service_key(req(
            pb::CreateServiceKeyRequest {
                service_account_id: sa.clone(),
                description: "fixture".into(),
                scope: pb::ServiceKeyScope::Organization as i32,
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner();
    let role = s
        .roles()
        .create_role(req(
            pb::CreateRoleRequest {
                name: format!("role-{n}"),
                permissions: vec!["datasets:read".into(), "widgets:spin".into()],
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap()
        .id;
    let invite = s
        .identity()
        .create_invite(req(
            pb::CreateInviteRequest {
                organization_id: String::new(),
                email: format!("invitee{n}@acme.test"),
                role: pb::OrgRole::OrgUser as i32,
                ..Default::default()
            },
            s.key(),
        ))
        .await
        .unwrap()
        .into_inner()
        .invite
        .unwrap()
        .id;
    let resource = format!("d-{n}");
    s.workspaces()
        .set_resource_tags(req(
            pb::SetResourceTagsRequest {
                workspace_id: ws.clone(),
                resource_type: "datasets".into(),
                resource_id: resource.clone(),
                tags: vec![pb::Tag {
                    key: "Environment".into(),
                    value: "prod".into(),
                }],
            },
            s.key(),
        ))
        .await
        .unwrap();
    let names = vec![
        s.boot.organization_id.clone(),
        s.boot.admin_user_id.clone(),
        member.user_id.clone(),
        member.home,
        format!("m{n}@acme.test"),
        format!("idp|m{n}"),
        ws.clone(),
        format!("ws-{n}"),
        team,
        format!("team {n}"),
        app.clone(),
        grant,
        sa,
        key.api_key.unwrap().id,
        key.key,
        role,
        format!("role-{n}"),
        invite,
        format!("invitee{n}@acme.test"),
        resource,
    ];
    Fixture {
        workspace: ws,
        member: member.user_id,
        app,
        names,
    }
}

// ---------------------------------------------------------------------------
// The properties.

/// Whether an INVALID_ARGUMENT message names its field: `<field>: <rule>`.
fn names_a_field(message: &str) -> bool {
    message.split_once(": ").is_some_and(|(field, rule)| {
        !field.is_empty()
            && !rule.trim().is_empty()
            && field
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-[]".contains(&b))
    })
}

/// What is wrong with an answer, if anything.
fn problem(
    outcome: &Outcome,
    body: &[u8],
    auth: &Auth,
    method: &Method,
    valid: bool,
) -> Option<String> {
    let (code, message) = match outcome {
        Outcome::NoAnswer(_) => return Some("the server did not answer".into()),
        Outcome::Ok(_) | Outcome::Streamed { end: None, .. } => (Code::Ok, ""),
        Outcome::Streamed {
            end: Some((code, message)),
            ..
        }
        | Outcome::Status(code, message) => (*code, message.as_str()),
    };
    if method.authenticated && auth.unusable_key && code != Code::Unauthenticated {
        return Some("a call without a usable key must be UNAUTHENTICATED".into());
    }
    let decode_failure =
        code == Code::Internal && message.starts_with("failed to decode Protobuf message");
    match code {
        Code::Unknown => Some("UNKNOWN: a handler failed without a status (a panic?)".into()),
        Code::Internal if !decode_failure => {
            Some("INTERNAL for a request: bad input must not reach storage as an error".into())
        }
        Code::Internal if valid => Some("a valid message was refused as undecodable".into()),
        Code::InvalidArgument if !names_a_field(message) => {
            Some("INVALID_ARGUMENT must say `<field>: <rule>`".into())
        }
        Code::OutOfRange if body.len() <= MESSAGE_LIMIT => {
            Some("OUT_OF_RANGE for a message within the size limit".into())
        }
        Code::DeadlineExceeded => Some("the call ran past the request timeout (a hang?)".into()),
        Code::Unavailable => Some("storage was reported unavailable".into()),
        Code::Cancelled | Code::DataLoss | Code::Aborted | Code::Unimplemented => {
            Some(format!("{code:?} is not an answer this request can get"))
        }
        _ => None,
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// A readable account of an encoding of `type_name`, as far as it decodes.
fn describe(schema: &Schema, type_name: &str, bytes: &[u8]) -> String {
    let fields = schema.messages.get(type_name).map(|m| m.field.as_slice());
    let field = |num: u64| fields.and_then(|f| f.iter().find(|f| f.number() as u64 == num));
    let mut parts = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((key, after)) = take_varint(rest) else {
            parts.push(format!("<undecodable: {}>", hex(rest, 32)));
            break;
        };
        let f = field(key >> 3);
        let name = f.map_or_else(|| format!("#{}", key >> 3), |f| f.name().to_owned());
        let value = match key & 7 {
            0 => take_varint(after).map(|(v, after)| {
                let shown = match f.map(FieldDescriptorProto::r#type) {
                    Some(Type::Int32 | Type::Enum) => (v as i32).to_string(),
                    Some(Type::Int64) => (v as i64).to_string(),
                    Some(Type::Bool) => format!("{} ({v})", v != 0),
                    _ => v.to_string(),
                };
                (shown, after)
            }),
            1 if after.len() >= 8 => {
                Some((format!("fixed64 {}", hex(&after[..8], 8)), &after[8..]))
            }
            5 if after.len() >= 4 => {
                Some((format!("fixed32 {}", hex(&after[..4], 4)), &after[4..]))
            }
            2 => take_varint(after).and_then(|(len, after)| {
                let len = usize::try_from(len).ok().filter(|l| *l <= after.len())?;
                let (value, after) = after.split_at(len);
                let shown = match f.map(|f| (f.r#type(), f.type_name())) {
                    Some((Type::Message, ".google.protobuf.Timestamp")) => {
                        format!("Timestamp {{{}}}", describe_timestamp(value))
                    }
                    Some((Type::Message, nested)) => {
                        format!("{{{}}}", describe(schema, nested, value))
                    }
                    Some((Type::String, _)) => describe_string(value),
                    _ => format!("bytes {}", hex(value, 32)),
                };
                Some((shown, after))
            }),
            _ => None,
        };
        match value {
            Some((shown, after)) => {
                parts.push(format!("{name}: {shown}"));
                rest = after;
            }
            None => {
                parts.push(format!("{name}: <undecodable: {}>", hex(rest, 32)));
                break;
            }
        }
    }
    if parts.len() > 12 {
        let more = parts.len() - 10;
        parts.truncate(10);
        parts.push(format!("… {more} more fields"));
    }
    parts.join(", ")
}

fn describe_timestamp(bytes: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rest = bytes;
    while let Some((key, after)) = take_varint(rest) {
        let Some((v, after)) = take_varint(after) else {
            break;
        };
        match key {
            8 => parts.push(format!("seconds: {}", v as i64)),
            16 => parts.push(format!("nanos: {}", v as i32)),
            _ => parts.push(format!("#{}: {v}", key >> 3)),
        }
        rest = after;
    }
    parts.join(", ")
}

fn describe_string(bytes: &[u8]) -> String {
    let Ok(s) = std::str::from_utf8(bytes) else {
        return format!("not UTF-8 {}", hex(bytes, 64));
    };
    let mut chars = s.chars();
    if let Some(first) = chars.next()
        && s.chars().count() > 8
        && chars.all(|c| c == first)
    {
        return format!("{:?} × {}", first.to_string(), s.chars().count());
    }
    if s.chars().count() > 60 {
        let head: String = s.chars().take(60).collect();
        return format!("{head:?}… ({} bytes)", s.len());
    }
    format!("{s:?}")
}

fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0_u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

fn hex(bytes: &[u8], max: usize) -> String {
    let mut out = String::new();
    for b in bytes.iter().take(max) {
        write!(out, "{b:02x}").unwrap();
    }
    if bytes.len() > max {
        write!(out, "… ({} bytes in all)", bytes.len()).unwrap();
    }
    out
}

/// The answers of a run, and what was wrong with them.
#[derive(Default)]
struct Report {
    codes: BTreeMap<String, usize>,
    per_method: BTreeMap<String, BTreeMap<String, usize>>,
    /// How many cases of each kind were sent.
    kinds: BTreeMap<&'static str, usize>,
    /// One line per wrong answer; the details go to stderr at once.
    failures: Vec<String>,
    calls: usize,
}

impl Report {
    fn record(&mut self, method: &str, outcome: &Outcome) {
        let code = outcome
            .code()
            .map_or_else(|| "NO_ANSWER".to_owned(), |c| format!("{c:?}"));
        *self.codes.entry(code.clone()).or_default() += 1;
        let counts = self.per_method.entry(method.to_owned()).or_default();
        *counts.entry(code).or_default() += 1;
        if let Outcome::Streamed { messages, .. } = outcome {
            // Per method only: the totals count calls.
            *counts.entry("streams_opened".into()).or_default() += 1;
            *counts.entry("streamed_messages".into()).or_default() += messages;
        }
        self.calls += 1;
    }

    fn fail(&mut self, headline: String, details: &str) {
        eprintln!("FAILURE {headline}\n{details}");
        self.failures.push(headline);
    }

    fn print(&self, backend: Backend, elapsed: Duration) {
        eprintln!(
            "decoders ({backend:?}): {} calls in {:.1} s",
            self.calls,
            elapsed.as_secs_f64()
        );
        for (method, codes) in &self.per_method {
            let line: Vec<String> = codes.iter().map(|(c, n)| format!("{c}={n}")).collect();
            eprintln!("  {method:<62} {}", line.join(" "));
        }
        let total: Vec<String> = self.codes.iter().map(|(c, n)| format!("{c}={n}")).collect();
        eprintln!("  {:<62} {}", "all methods", total.join(" "));
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
        eprintln!("  {:<62} {}", "cases", kinds.join(" "));
    }
}

/// One request of a method's run.
struct Case {
    label: String,
    kind: &'static str,
    body: Vec<u8>,
    auth: Auth,
    /// The body is a valid encoding of the input type.
    valid: bool,
}

/// The metadata of a random case.
fn random_auth(
    rng: &mut R,
    s: &TestServer,
    corpus: &Corpus,
    operator: &str,
    header_value: Vec<u8>,
) -> Auth {
    let mut auth = Auth::admin(s);
    match rng.below(100) {
        0..=59 => {}
        60..=84 => {
            auth.act_as = Some(operator.as_bytes().to_vec());
            auth.label = "bootstrap key acting for an organization admin";
        }
        85..=91 => {
            auth.tenant = Some(header_value);
            auth.label = "bootstrap key with x-tenant-id";
        }
        92..=94 => {
            auth.act_as = Some(header_value);
            auth.label = "bootstrap key with x-act-as-user";
        }
        95..=97 => {
            auth.authorization = None;
            auth.unusable_key = true;
            auth.label = "no key";
        }
        _ => {
            // The corpus holds a real key (of an ORG_VIEWER service account),
            // which the server finds also with blanks around it.
            let real = corpus
                .real
                .iter()
                .any(|r| r.starts_with(b"pcv2_") && r == header_value.trim_ascii());
            let mut key = b"Bearer ".to_vec();
            key.extend(header_value);
            auth.authorization = Some(key);
            auth.unusable_key = !real;
            auth.label = if real {
                "a service key of the fixture"
            } else {
                "a bad key"
            };
        }
    }
    auth
}

fn cases(
    method: &Method,
    schema: &Schema,
    corpus: &Corpus,
    s: &TestServer,
    operator: &str,
    iterations: usize,
) -> Vec<Case> {
    let admin = Auth::admin(s);
    let mut out = vec![
        Case {
            label: "empty message".into(),
            kind: "fixed",
            body: Vec::new(),
            auth: admin.clone(),
            valid: true,
        },
        Case {
            label: "empty message, acting for an admin".into(),
            kind: "fixed",
            body: Vec::new(),
            auth: Auth {
                act_as: Some(operator.as_bytes().to_vec()),
                label: "bootstrap key acting for an organization admin",
                ..admin.clone()
            },
            valid: true,
        },
        Case {
            label: "empty message, no key".into(),
            kind: "fixed",
            body: Vec::new(),
            auth: Auth {
                authorization: None,
                unusable_key: true,
                label: "no key",
                ..Auth::default()
            },
            valid: true,
        },
        Case {
            label: "empty message, malformed key".into(),
            kind: "fixed",
            body: Vec::new(),
            auth: Auth {
                authorization: Some(b"Bearer pcv2_sk_000".to_vec()),
                unusable_key: true,
                label: "a bad key",
                ..Auth::default()
            },
            valid: true,
        },
    ];
    for i in 0..iterations {
        let seed = case_seed(&method.path, i);
        let mut g = Gen::new(R::new(seed), schema, corpus);
        let header = if g.rng.one_in(2) {
            g.rng.pick(&corpus.real).clone()
        } else {
            g.string()
        };
        g.broke_utf8 = false;
        let auth = random_auth(&mut g.rng, s, corpus, operator, header);
        let kind = g.rng.below(100);
        let (what, body, valid) = if kind < 72 {
            let body = g.message(&method.input, 0);
            let what = match (g.broke_utf8, g.large_left) {
                (true, _) => "generated, not UTF-8",
                (false, false) => "generated, 2000 elements",
                (false, true) => "generated",
            };
            (what, body, !g.broke_utf8)
        } else if kind < 92 {
            let body = g.message(&method.input, 0);
            ("mutated", g.mutate(body), false)
        } else {
            ("random bytes", g.random_bytes(64), false)
        };
        out.push(Case {
            label: format!("case {i} ({what}, seed {seed:#018x})"),
            kind: what,
            body,
            auth,
            valid,
        });
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn run_method(
    s: &TestServer,
    wide: &Channel,
    schema: &Schema,
    method: &Method,
    corpus: &Corpus,
    operator: &str,
    iterations: usize,
    report: &mut Report,
) {
    for case in cases(method, schema, corpus, s, operator, iterations) {
        let outcome = send(&s.channel, method, case.body.clone(), &case.auth).await;
        report.record(&method.path, &outcome);
        *report.kinds.entry(case.kind).or_default() += 1;
        if let Some(problem) = problem(&outcome, &case.body, &case.auth, method, case.valid) {
            let headline = format!(
                "{} {} [{}]: {problem}; got {outcome}",
                method.path, case.label, case.auth.label,
            );
            let mut what = format!(
                "    request: {}\n    request bytes ({}): {}",
                describe(schema, &method.input, &case.body),
                case.body.len(),
                hex(&case.body, 256),
            );
            if let Outcome::NoAnswer(_) = outcome {
                // Ask again through a client that takes headers of any size: an
                // answer there is a status too large for an ordinary client.
                let again = send(wide, method, case.body.clone(), &case.auth).await;
                if let Outcome::Status(code, message) = &again {
                    write!(
                        what,
                        "\n    a client without the 16 KiB header limit got: {code:?} with a {}-byte message: {:?}",
                        message.len(),
                        clip(message, 160)
                    )
                    .unwrap();
                }
            }
            report.fail(headline, &what);
        }
    }
    // The fuzzed calls must not have taken the caller's own key away.
    let who = call(
        &s.channel,
        "/portcullis.v1.IdentityService/WhoAmI",
        Vec::new(),
        &Auth::admin(s),
    )
    .await;
    assert!(
        matches!(who, Outcome::Ok(_)),
        "after {}: the bootstrap key no longer works: {who}",
        method.path
    );
}

/// A message with an unknown field is answered like the same message without it.
async fn unknown_fields_are_ignored(s: &TestServer, f: &Fixture, report: &mut Report) {
    let reads: Vec<(&str, Vec<u8>)> = vec![
        (
            "/portcullis.v1.IdentityService/ListTeams",
            pb::ListTeamsRequest::default().encode_to_vec(),
        ),
        (
            "/portcullis.v1.WorkspaceService/GetWorkspace",
            pb::GetWorkspaceRequest {
                workspace_id: f.workspace.clone(),
            }
            .encode_to_vec(),
        ),
        (
            "/portcullis.v1.IdentityService/GetOrganization",
            pb::GetOrganizationRequest {
                organization_id: s.boot.organization_id.clone(),
            }
            .encode_to_vec(),
        ),
        ("/portcullis.v1.IdentityService/WhoAmI", Vec::new()),
        ("/portcullis.v1.RolesService/ListPermissions", Vec::new()),
        (
            "/portcullis.v1.CheckService/Check",
            harness::check_request(
                &f.member,
                &f.workspace,
                "datasets:read",
                &[("Application", &f.app)],
            )
            .encode_to_vec(),
        ),
    ];
    let mut extras: Vec<Vec<u8>> = Vec::new();
    let mut varint = Vec::new();
    put_varint_field(1000, 7, &mut varint);
    extras.push(varint);
    let mut len = Vec::new();
    put_len(1000, b"unknown", &mut len);
    extras.push(len);
    let mut fixed = Vec::new();
    put_key(1000, FIXED64, &mut fixed);
    fixed.put_u64_le(7);
    extras.push(fixed);
    let auth = Auth::admin(s);
    for (path, body) in reads {
        let plain = call(&s.channel, path, body.clone(), &auth).await;
        report.record(path, &plain);
        let Outcome::Ok(expected) = &plain else {
            panic!("{path}: a plain request failed: {plain}");
        };
        for extra in &extras {
            let mut with_extra = body.clone();
            with_extra.extend_from_slice(extra);
            let got = call(&s.channel, path, with_extra.clone(), &auth).await;
            report.record(path, &got);
            match &got {
                Outcome::Ok(answer) if answer == expected => {}
                _ => report.fail(
                    format!(
                        "{path}: a message with the unknown field 1000 was answered {got}, \
                         without it {plain}"
                    ),
                    &format!("    request bytes: {}", hex(&with_extra, 256)),
                ),
            }
        }
    }
    // A change too: both are made.
    for (i, extra) in extras.iter().enumerate() {
        let mut body = pb::CreateTeamRequest {
            organization_id: String::new(),
            name: format!("unknown field {i}"),
        }
        .encode_to_vec();
        body.extend_from_slice(extra);
        let path = "/portcullis.v1.IdentityService/CreateTeam";
        let got = call(&s.channel, path, body.clone(), &auth).await;
        report.record(path, &got);
        if !matches!(got, Outcome::Ok(_)) {
            report.fail(
                format!("{path}: a valid change with the unknown field 1000 was answered {got}"),
                &format!("    request bytes: {}", hex(&body, 256)),
            );
        }
    }
}

/// The size limit: just under it the message is decoded (and the name refused),
/// just over it the message is refused with OUT_OF_RANGE.
async fn the_size_limit_holds(s: &TestServer, report: &mut Report) {
    let path = "/portcullis.v1.IdentityService/CreateTeam";
    let auth = Auth::admin(s);
    for (size, expected) in [
        (MESSAGE_LIMIT, Code::InvalidArgument),
        (MESSAGE_LIMIT + 1, Code::OutOfRange),
    ] {
        // Field 2 (name): key, a 4-byte length, the name.
        let mut body = Vec::new();
        put_key(2, LEN, &mut body);
        let name_len = size - 1 - 4;
        body.extend_from_slice(&[
            0x80 | (name_len & 0x7f) as u8,
            0x80 | ((name_len >> 7) & 0x7f) as u8,
            0x80 | ((name_len >> 14) & 0x7f) as u8,
            ((name_len >> 21) & 0x7f) as u8,
        ]);
        body.resize(size, b'n');
        let got = call(&s.channel, path, body, &auth).await;
        report.record(path, &got);
        if got.code() != Some(expected) {
            report.fail(
                format!("{path}: a {size}-byte message was answered {got}, expected {expected:?}"),
                "",
            );
        }
    }
}

async fn every_rpc_answers_fuzzed_requests_properly(b: Backend) {
    let started = Instant::now();
    let iterations = std::env::var("PORTCULLIS_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(match b {
            Backend::Sqlite => 60,
            Backend::Postgres => 20,
        });
    let only = std::env::var("PORTCULLIS_FUZZ_METHOD").ok();
    let schema = Schema::load(&[
        portcullis::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ]);
    let methods: Vec<&Method> = schema
        .methods
        .iter()
        .filter(|m| only.as_deref().is_none_or(|o| m.path.contains(o)))
        .collect();
    assert!(!methods.is_empty(), "no method matches {only:?}");
    if only.is_none() {
        for service in [
            "IdentityService",
            "WorkspaceService",
            "RolesService",
            "CheckService",
            "AuditService",
            "WatchService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                methods.iter().any(|m| m.path.contains(service)),
                "{service} is missing from the descriptor sets"
            );
        }
    }

    let s = harness::start(b).await;
    let wide = tonic::transport::Endpoint::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .http2_max_header_list_size(64 << 20)
        .connect_lazy();
    // The admin the fuzzed calls act for; its id is in no corpus, so no case
    // can remove or demote it.
    let operator = s.member("operator", pb::OrgRole::OrgAdmin).await.user_id;
    s.roles()
        .register_resource_type(req(
            pb::RegisterResourceTypeRequest {
                organization_id: String::new(),
                resource_type: "widgets".into(),
                actions: vec!["read".into(), "spin".into()],
            },
            s.key(),
        ))
        .await
        .unwrap();
    // A key of the right shape that no one has.
    let unknown_key = portcullis::auth::key::generate(portcullis::auth::key::KeyKind::ServiceKey)
        .unwrap()
        .secret;
    let extra = {
        let mut rng = R::new(SEED);
        let mut ids: Vec<String> = (0..3)
            .map(|_| {
                let mut bytes = [0_u8; 16];
                for b in &mut bytes {
                    *b = rng.u64() as u8;
                }
                uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string()
            })
            .collect();
        ids.push(unknown_key);
        ids
    };

    let mut report = Report::default();
    for (n, method) in methods.iter().enumerate() {
        let corpus = Corpus::new(fixture(&s, n).await.names, extra.clone());
        run_method(
            &s,
            &wide,
            &schema,
            method,
            &corpus,
            &operator,
            iterations,
            &mut report,
        )
        .await;
    }

    // The server is still healthy and serving.
    let health = HealthClient::new(s.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(health, ServingStatus::Serving);
    s.identity()
        .list_teams(req(pb::ListTeamsRequest::default(), s.key()))
        .await
        .unwrap();
    let after = fixture(&s, methods.len()).await;
    let allowed = s
        .allowed(&after.member, &after.workspace, "datasets:read", &[])
        .await;
    assert!(
        !allowed,
        "an application-scoped grant allowed an unscoped check"
    );
    assert!(
        s.allowed(
            &after.member,
            &after.workspace,
            "datasets:read",
            &[("Application", &after.app)]
        )
        .await
    );
    unknown_fields_are_ignored(&s, &after, &mut report).await;
    the_size_limit_holds(&s, &mut report).await;

    report.print(b, started.elapsed());
    if !report.failures.is_empty() {
        let mut message = format!(
            "{} of {} answers were wrong (the requests are described above, on stderr):\n",
            report.failures.len(),
            report.calls
        );
        for f in report.failures.iter().take(40) {
            message.push_str(f);
            message.push('\n');
        }
        if report.failures.len() > 40 {
            message.push_str("…\n");
        }
        panic!("{message}");
    }
}

both_backends!(every_rpc_answers_fuzzed_requests_properly);
