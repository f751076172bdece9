//! Generic attacks on tenant isolation, and the checkers that judge them.
//!
//! * **Requests** ([`build`], [`plans`]) are made by walking the input
//!   descriptors the server serves for reflection ([`Schema::served`]), so a
//!   new RPC or field is attacked without touching this file. Each field is
//!   filled by its name (`Slot`): ids with the objects the attacker must not
//!   reach ([`Targets`], each in turn), each oneof alternative in turn, user
//!   and workspace ids also in the spellings a lenient parser accepts, other
//!   strings with valid values. Each request is also sent with `x-tenant-id`
//!   and `x-act-as-user` naming targets, with the attacker's own containers
//!   around foreign objects, lean, bare, and (across organizations) with
//!   unknown ids in place of the foreign ones.
//! * **The arena** ([`Arena`]) is one attacker's world: a copy of the world
//!   ([`Original::copy`]) and a server of its own on it ([`Instance`]). Every
//!   call meets the world as built: what a call changed is written back from
//!   the snapshot before the next call, and the server's caches are emptied
//!   before each method.
//!
//! The checkers know no rule of any RPC:
//! * **rows**: after an OK answer that advanced the revision counter, every
//!   table is read and compared row by row; a row outside the attacker's
//!   [`Reach`] (or naming a protected id, or giving an account a new power)
//!   that changed is a violation. After each method the tables are compared
//!   again, for a change made without a revision or by a refused call, and
//!   the method's calls are replayed one at a time to find it;
//! * **answers**: no answer, OK or error, may carry a protected id or a marker
//!   the attacker may not read, unless the request itself carried it. A
//!   server-streaming method's stream is read for [`STREAM_WINDOW`] and each
//!   message it gave, and the status it ended with, is judged as an answer;
//! * **liveness**: every call is answered within [`CALL_TIMEOUT`] (a stream:
//!   opened or refused; an open stream may then stay silent);
//! * **existence**: an object of another organization gets the code an
//!   unknown one gets (a stream that opened counts as OK);
//! * **decisions** ([`Victim`]): after each method the victim's own key asks
//!   a few of its questions; an answer storage does not give (a poisoned
//!   cache) is pinned to a call by replaying the method's calls, each on
//!   emptied caches; after the run it asks all of them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use portcullis::{
    config::Settings,
    proto::v1::{self as pb, check_service_client::CheckServiceClient},
    server,
    state::AppState,
    store::Store,
};
use prost::Message;
use prost_types::{
    DescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use super::{
    Backend, TestDb,
    raw::{self, RawCodec},
};
use tokio::sync::oneshot;
use tonic::{
    Code, Request, codegen::http::uri::PathAndQuery, metadata::AsciiMetadataValue,
    transport::Channel,
};

/// How long an answer may take before the call counts as unanswered (the
/// server's own request timeout is 10 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an open server stream is read: long enough for what it owes at
/// once (a watch's backlog comes in batches of 100), short enough that a
/// silent stream costs little.
pub const STREAM_WINDOW: raw::Window = raw::Window {
    total: Duration::from_millis(500),
    idle: Duration::from_millis(200),
    max_messages: 256,
};
/// Candidates tried per field: enough to reach every kind of object once.
const MAX_ROTATIONS: usize = 4;
/// How many calls of a method are replayed one at a time to find the one
/// that poisoned the victim's decisions.
const MAX_REPLAYS: usize = 24;
/// How deep requests nest (BatchCheck → CheckRequest → CheckPrincipal).
const MAX_DEPTH: usize = 4;
/// Services that are not part of the API under attack.
const NOT_ATTACKED: &[&str] = &["portcullis.v1.NoopService"];
/// Tables that change on every write, or belong to the migration tool.
const UNGUARDED_TABLES: &[&str] = &["revision", "seaql_migrations"];

// ---------------------------------------------------------------------------
// Raw calls: any body to any method.

/// How a call ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The server answered OK with this body.
    Ok(Vec<u8>),
    /// The server opened the stream of a server-streaming method: the
    /// messages read within [`STREAM_WINDOW`], and the status it ended with
    /// then, if it ended.
    Streamed {
        messages: Vec<Vec<u8>>,
        end: Option<(Code, String)>,
    },
    /// The server answered with a status.
    Status(Code, String),
    /// No answer: the connection failed or the client gave up on it.
    NoAnswer(String),
}

impl Outcome {
    /// The code, `NO_ANSWER` when there was none; a stream that opened is OK,
    /// however it ended.
    pub fn code_name(&self) -> String {
        match self {
            Self::Ok(_) | Self::Streamed { .. } => "Ok".into(),
            Self::Status(code, _) => format!("{code:?}"),
            Self::NoAnswer(_) => "NO_ANSWER".into(),
        }
    }

    /// Whether the server took the call: answered OK or opened its stream.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok(_) | Self::Streamed { .. })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok(body) => write!(f, "OK ({} bytes)", body.len()),
            Self::Streamed { messages, end } => {
                let bytes: usize = messages.iter().map(Vec::len).sum();
                write!(f, "OK stream ({} messages, {bytes} bytes", messages.len())?;
                match end {
                    Some((Code::Ok, _)) => write!(f, ", then ended)"),
                    Some((code, message)) => {
                        write!(f, ", then {code:?}: {:?})", clip(message, 200))
                    }
                    None => write!(f, ", still open)"),
                }
            }
            Self::Status(code, message) => write!(f, "{code:?}: {:?}", clip(message, 200)),
            Self::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// The metadata of a call.
#[derive(Clone, Debug)]
pub struct Meta {
    /// The key, sent as `authorization: Bearer <key>`.
    pub key: String,
    pub tenant: Option<String>,
    pub act_as: Option<String>,
    /// How a report names it.
    pub label: String,
}

fn request(body: Vec<u8>, meta: &Meta) -> Request<Vec<u8>> {
    let mut request = Request::new(body);
    let headers = [
        ("authorization", Some(format!("Bearer {}", meta.key))),
        ("x-tenant-id", meta.tenant.clone()),
        ("x-act-as-user", meta.act_as.clone()),
    ];
    for (name, value) in headers {
        if let Some(value) = value.and_then(|v| AsciiMetadataValue::try_from(v).ok()) {
            request.metadata_mut().insert(name, value);
        }
    }
    request
}

/// A status the server sent, or no answer for one the client made up itself
/// (it carries the error it came from).
fn refused(status: &tonic::Status) -> Outcome {
    if std::error::Error::source(status).is_some() {
        Outcome::NoAnswer(format!("{status}"))
    } else {
        Outcome::Status(status.code(), status.message().to_owned())
    }
}

/// Sends `body` to `path` (`/package.Service/Method`), a unary method.
pub async fn call(channel: &Channel, path: &str, body: Vec<u8>, meta: &Meta) -> Outcome {
    let request = request(body, meta);
    let Ok(path) = PathAndQuery::try_from(path) else {
        return Outcome::NoAnswer(format!("bad path {path}"));
    };
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
pub async fn watch(channel: &Channel, path: &str, body: Vec<u8>, meta: &Meta) -> Outcome {
    let request = request(body, meta);
    let Ok(path) = PathAndQuery::try_from(path) else {
        return Outcome::NoAnswer(format!("bad path {path}"));
    };
    let read = match raw::stream(channel, request, path, CALL_TIMEOUT, STREAM_WINDOW).await {
        raw::Streamed::Read(read) => read,
        raw::Streamed::Refused(status) => return refused(&status),
        raw::Streamed::Lost(why) => return Outcome::NoAnswer(why),
    };
    let end = read
        .end
        .map(|status| (status.code(), status.message().to_owned()));
    Outcome::Streamed {
        messages: read.messages,
        end,
    }
}

/// Sends `body` to `method`, as its kind of call.
pub async fn send(channel: &Channel, method: &Method, body: Vec<u8>, meta: &Meta) -> Outcome {
    if method.server_streaming {
        watch(channel, &method.path, body, meta).await
    } else {
        call(channel, &method.path, body, meta).await
    }
}

// ---------------------------------------------------------------------------
// The schema, from the served descriptor set.

/// A method of the API: unary, or streaming its answers.
#[derive(Clone, Debug)]
pub struct Method {
    /// `/package.Service/Method`.
    pub path: String,
    /// `Service/Method`, for reports.
    pub name: String,
    /// The fully qualified input type, with a leading dot.
    pub input: String,
    /// The answer is a stream of messages (`WatchService/Watch`).
    pub server_streaming: bool,
}

/// Messages, enums and methods of `portcullis.v1`.
#[derive(Debug, Default)]
pub struct Schema {
    messages: HashMap<String, DescriptorProto>,
    /// Enum → its values (name, number).
    enums: HashMap<String, Vec<(String, i32)>>,
    pub methods: Vec<Method>,
}

impl Schema {
    /// The API as the server describes it for reflection.
    pub fn served() -> Self {
        let mut schema = Self::default();
        let Ok(set) = FileDescriptorSet::decode(portcullis::proto::FILE_DESCRIPTOR_SET) else {
            panic!("the served descriptor set does not decode");
        };
        for file in &set.file {
            let prefix = format!(".{}", file.package());
            for m in &file.message_type {
                schema.add_message(&prefix, m);
            }
            for e in &file.enum_type {
                schema.add_enum(&prefix, e);
            }
            if file.package() != "portcullis.v1" {
                continue;
            }
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                if NOT_ATTACKED.contains(&full.as_str()) {
                    continue;
                }
                for m in &service.method {
                    // Requests are built as one message; the API takes no stream.
                    assert!(
                        !m.client_streaming(),
                        "{full}/{} takes a stream of requests, which this suite cannot build",
                        m.name()
                    );
                    schema.methods.push(Method {
                        path: format!("/{full}/{}", m.name()),
                        name: format!("{}/{}", service.name(), m.name()),
                        input: m.input_type().to_owned(),
                        server_streaming: m.server_streaming(),
                    });
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
            self.add_enum(&name, e);
        }
        self.messages.insert(name, m.clone());
    }

    fn add_enum(&mut self, prefix: &str, e: &prost_types::EnumDescriptorProto) {
        self.enums.insert(
            format!("{prefix}.{}", e.name()),
            e.value
                .iter()
                .map(|v| (v.name().to_owned(), v.number()))
                .collect(),
        );
    }
}

// ---------------------------------------------------------------------------
// What requests name.

/// A value with the name a report shows for it (`Q.ws1`, `platform.sa`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub label: String,
    pub value: String,
}

/// A [`Named`] value.
pub fn named(label: impl Into<String>, value: impl Into<String>) -> Named {
    Named {
        label: label.into(),
        value: value.into(),
    }
}

/// The objects an attacker's requests name, by kind, each list in the order
/// the rotations take them.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub organizations: Vec<Named>,
    pub workspaces: Vec<Named>,
    pub users: Vec<Named>,
    pub teams: Vec<Named>,
    pub service_accounts: Vec<Named>,
    pub api_keys: Vec<Named>,
    pub invites: Vec<Named>,
    pub grants: Vec<Named>,
    /// Custom role ids.
    pub roles: Vec<Named>,
    /// Whole keys, for fields that take a key to resolve.
    pub secrets: Vec<Named>,
    pub applications: Vec<Named>,
    pub resources: Vec<Named>,
    /// The attacker's own organization, named as the container of the
    /// targets in a second pass; `None`: no such pass.
    pub own_organization: Option<Named>,
    /// The workspace of its own named in that pass; `None`: requests with a
    /// workspace field get no such pass.
    pub own_workspace: Option<Named>,
}

/// What a field holds, judged by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Organization,
    Workspace,
    Workspaces,
    User,
    Team,
    ServiceAccount,
    ApiKey,
    Invite,
    Grant,
    RoleId,
    /// A role by name or id (`GrantAccessRequest.role`).
    Role,
    Secret,
    Application,
    Resource,
    Text,
}

impl Slot {
    fn of(message: &str, field: &str) -> Self {
        match field {
            "organization_id" => Self::Organization,
            "workspace_id" | "tenant_id" => Self::Workspace,
            "workspace_ids" => Self::Workspaces,
            "user_id" | "user_ids" | "actor_id" => Self::User,
            "team_id" => Self::Team,
            "service_account_id" => Self::ServiceAccount,
            "api_key_id" => Self::ApiKey,
            "invite_id" => Self::Invite,
            "grant_id" => Self::Grant,
            "role_id" => Self::RoleId,
            "role" => Self::Role,
            "api_key" => Self::Secret,
            "resource_id" => Self::Resource,
            "id" if message == "Resource" => Self::Resource,
            "application" => Self::Application,
            "name" if message.contains("Application") && !message.starts_with("Create") => {
                Self::Application
            }
            _ => Self::Text,
        }
    }

    fn container(self) -> bool {
        matches!(
            self,
            Self::Organization | Self::Workspace | Self::Workspaces
        )
    }

    /// Whether a plan that spells user ids (or workspace ids) spells this.
    fn spelled(self, users: bool) -> bool {
        if users {
            self == Self::User
        } else {
            matches!(self, Self::Workspace | Self::Workspaces)
        }
    }

    /// Whether the value is an id (replaced by an unknown one in the twin).
    fn is_id(self) -> bool {
        !matches!(
            self,
            Self::Text | Self::Role | Self::Secret | Self::Application | Self::Resource
        )
    }

    fn candidates(self, t: &Targets, roles: &[Named]) -> Vec<Named> {
        match self {
            Self::Organization => t.organizations.clone(),
            Self::Workspace | Self::Workspaces => t.workspaces.clone(),
            Self::User => t.users.clone(),
            Self::Team => t.teams.clone(),
            Self::ServiceAccount => t.service_accounts.clone(),
            Self::ApiKey => t.api_keys.clone(),
            Self::Invite => t.invites.clone(),
            Self::Grant => t.grants.clone(),
            Self::RoleId => t.roles.clone(),
            Self::Role => roles.to_vec(),
            Self::Secret => t.secrets.clone(),
            Self::Application => t.applications.clone(),
            Self::Resource => t.resources.clone(),
            Self::Text => Vec::new(),
        }
    }
}

/// A way a lenient parser might accept an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    Canonical,
    Upper,
    Braces,
    Urn,
    Simple,
}

impl Spelling {
    /// Every spelling but the canonical one.
    pub const LENIENT: [Self; 4] = [Self::Upper, Self::Braces, Self::Urn, Self::Simple];

    /// `id` spelled this way.
    pub fn apply(self, id: &str) -> String {
        match self {
            Self::Canonical => id.to_owned(),
            Self::Upper => id.to_uppercase(),
            Self::Braces => format!("{{{id}}}"),
            Self::Urn => format!("urn:uuid:{id}"),
            Self::Simple => id.replace('-', ""),
        }
    }

    fn wrap(self, label: &str) -> String {
        match self {
            Self::Canonical => label.to_owned(),
            Self::Upper => format!("upper({label})"),
            Self::Braces => format!("braces({label})"),
            Self::Urn => format!("urn({label})"),
            Self::Simple => format!("nohyphens({label})"),
        }
    }
}

/// One way of filling a request.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Which alternative each oneof takes (its index modulo the alternatives).
    pub shape: usize,
    /// Which candidate each field takes.
    pub rotation: usize,
    /// Containers name the attacker's own organization and workspace.
    pub own: bool,
    pub spelling: Spelling,
    /// The spelling applies to user ids (else to workspace ids).
    pub spell_users: bool,
    /// Leave out timestamps, booleans and repeated scalars.
    pub lean: bool,
    /// Only the fields that name objects.
    pub bare: bool,
    /// Only the containers (with `own`: what the attacker's own
    /// organization holds, unfiltered).
    pub containers_only: bool,
    /// Every id of a target replaced by an unknown one.
    pub unknown: bool,
    /// `workspace_id` left empty, so that `x-tenant-id` applies.
    pub blank_workspace: bool,
}

impl Plan {
    fn base(shape: usize) -> Self {
        Self {
            shape,
            rotation: 0,
            own: false,
            spelling: Spelling::Canonical,
            spell_users: false,
            lean: false,
            bare: false,
            containers_only: false,
            unknown: false,
            blank_workspace: false,
        }
    }

    fn label(&self) -> String {
        let mut parts = vec![format!("shape {}", self.shape)];
        if self.rotation > 0 {
            parts.push(format!("rotation {}", self.rotation));
        }
        if self.own {
            parts.push("own containers".into());
        }
        if self.spelling != Spelling::Canonical {
            let what = if self.spell_users {
                "user ids"
            } else {
                "workspace ids"
            };
            parts.push(self.spelling.wrap(what));
        }
        if self.lean {
            parts.push("lean".into());
        }
        if self.bare {
            parts.push("bare".into());
        }
        if self.containers_only {
            parts.push("containers only".into());
        }
        if self.unknown {
            parts.push("unknown ids".into());
        }
        parts.join(", ")
    }
}

/// What a method's requests look like: how many plans it needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outline {
    /// The most alternatives of any oneof.
    pub shapes: usize,
    /// The most candidates of any field (enum values included).
    pub rotations: usize,
    /// A field names a container (organization or workspace).
    pub container: bool,
    /// A field names a workspace.
    pub workspace: bool,
    /// A field takes a user id.
    pub user: bool,
    /// A field carries a whole key.
    pub secret: bool,
}

/// A built request.
#[derive(Clone, Debug)]
pub struct Built {
    pub body: Vec<u8>,
    /// `field=value` pairs, ids by label.
    pub summary: String,
    /// Every string the request carried.
    pub carried: Vec<String>,
    /// A field carried a whole key.
    pub secret: bool,
}

struct Gen<'a> {
    schema: &'a Schema,
    targets: &'a Targets,
    plan: Plan,
    roles: Vec<Named>,
    fresh: &'a mut u64,
    summary: Vec<String>,
    carried: Vec<String>,
    outline: Outline,
}

/// Encodes a varint.
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
    put_key(field, 2, out);
    put_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_varint_field(field: u32, v: u64, out: &mut Vec<u8>) {
    put_key(field, 0, out);
    put_varint(v, out);
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

impl<'a> Gen<'a> {
    fn new(schema: &'a Schema, targets: &'a Targets, plan: Plan, fresh: &'a mut u64) -> Self {
        let mut roles = vec![named("WORKSPACE_ADMIN", "WORKSPACE_ADMIN")];
        roles.extend(targets.roles.iter().cloned());
        Self {
            schema,
            targets,
            plan,
            roles,
            fresh,
            summary: Vec::new(),
            carried: Vec::new(),
            outline: Outline {
                shapes: 1,
                rotations: 1,
                ..Outline::default()
            },
        }
    }

    fn fresh(&mut self) -> u64 {
        *self.fresh += 1;
        *self.fresh
    }

    fn note(&mut self, path: &str, value: &str) {
        self.summary.push(format!("{path}={}", clip(value, 60)));
    }

    fn message(&mut self, type_name: &str, prefix: &str, depth: usize) -> Vec<u8> {
        if type_name == ".google.protobuf.Timestamp" {
            return self.timestamp(prefix);
        }
        let schema = self.schema;
        let Some(desc) = schema.messages.get(type_name) else {
            panic!("no descriptor for {type_name}");
        };
        let short = desc.name();
        let mut out = Vec::new();
        let mut oneofs: BTreeMap<i32, Vec<&FieldDescriptorProto>> = BTreeMap::new();
        for f in &desc.field {
            // proto3 `optional` is a synthetic oneof of one field: a plain field here.
            if let Some(index) = f.oneof_index
                && !f.proto3_optional()
            {
                oneofs.entry(index).or_default().push(f);
                continue;
            }
            let timestamp = f.type_name() == ".google.protobuf.Timestamp";
            let scalar = f.r#type() != Type::Message;
            let names_object =
                f.r#type() == Type::String && Slot::of(short, f.name()) != Slot::Text;
            if self.plan.lean
                && (timestamp
                    || f.r#type() == Type::Bool
                    || (scalar && f.label() == Label::Repeated))
            {
                continue;
            }
            if self.plan.bare && (timestamp || (scalar && !names_object)) {
                continue;
            }
            if self.plan.containers_only
                && f.r#type() != Type::Message
                && !(f.r#type() == Type::String && Slot::of(short, f.name()).container())
            {
                continue;
            }
            out.extend(self.field(short, f, prefix, depth));
        }
        for members in oneofs.values() {
            self.outline.shapes = self.outline.shapes.max(members.len());
            let f = members[self.plan.shape % members.len()];
            out.extend(self.field(short, f, prefix, depth));
        }
        out
    }

    fn field(
        &mut self,
        message: &str,
        f: &FieldDescriptorProto,
        prefix: &str,
        depth: usize,
    ) -> Vec<u8> {
        let Ok(num) = u32::try_from(f.number()) else {
            return Vec::new();
        };
        let path = if prefix.is_empty() {
            f.name().to_owned()
        } else {
            format!("{prefix}.{}", f.name())
        };
        let mut out = Vec::new();
        match f.r#type() {
            Type::String => {
                if let Some(v) = self.string(message, f.name(), &path) {
                    put_len(num, v.as_bytes(), &mut out);
                }
            }
            Type::Message if depth < MAX_DEPTH => {
                let body = self.message(f.type_name(), &path, depth + 1);
                put_len(num, &body, &mut out);
            }
            Type::Enum => {
                let v = self.enum_value(f.type_name(), &path);
                put_varint_field(num, v, &mut out);
            }
            Type::Bool => {
                put_varint_field(num, 1, &mut out);
                self.note(&path, "true");
            }
            Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 => {
                let v = match f.name() {
                    "at_least_revision" => 0,
                    // The beginning of the change log: a watch owes every
                    // change of the organization (0, from now on, owes none;
                    // a bare request leaves it out).
                    "after_revision" => 1,
                    "page_size" => 100,
                    "monthly_trace_limit" => 5,
                    _ => 7,
                };
                if v != 0 {
                    put_varint_field(num, v, &mut out);
                    self.note(&path, &v.to_string());
                }
            }
            _ => {}
        }
        out
    }

    fn timestamp(&mut self, path: &str) -> Vec<u8> {
        let seconds = if path.ends_with("start_time") {
            1_000_000_000
        } else {
            now_seconds() + 86_400
        };
        self.note(path, &format!("@{seconds}"));
        let mut out = Vec::new();
        put_varint_field(1, seconds as u64, &mut out);
        out
    }

    fn enum_value(&mut self, type_name: &str, path: &str) -> u64 {
        let schema = self.schema;
        let values: Vec<&(String, i32)> = schema
            .enums
            .get(type_name)
            .map(|v| v.iter().filter(|(_, n)| *n != 0).collect())
            .unwrap_or_default();
        let Some(last) = values.last() else {
            return 0;
        };
        self.outline.rotations = self.outline.rotations.max(values.len());
        // The full own pass takes the last value (ORG_VIEWER, the workspace
        // scope), the lean one the first (ORG_ADMIN, the organization scope).
        let (name, number) = if self.plan.own && !self.plan.lean {
            *last
        } else {
            values[self.plan.rotation % values.len()]
        };
        self.note(path, name);
        i64::from(*number) as u64
    }

    fn string(&mut self, message: &str, field: &str, path: &str) -> Option<String> {
        let slot = Slot::of(message, field);
        if slot == Slot::Text {
            let v = self.text(message, field)?;
            self.note(path, &v);
            self.carried.push(v.clone());
            return Some(v);
        }
        if slot.container() {
            self.outline.container = true;
        }
        if matches!(slot, Slot::Workspace | Slot::Workspaces) {
            self.outline.workspace = true;
        }
        self.outline.user |= slot == Slot::User;
        if self.plan.blank_workspace && field == "workspace_id" {
            return None;
        }
        let picked = if self.plan.own && slot.container() {
            let own = match slot {
                Slot::Organization => self.targets.own_organization.clone(),
                _ => self.targets.own_workspace.clone(),
            };
            own.unwrap_or_else(|| named("(empty)", ""))
        } else {
            let candidates = slot.candidates(self.targets, &self.roles);
            self.outline.rotations = self.outline.rotations.max(candidates.len());
            let rotation = if self.plan.own { 0 } else { self.plan.rotation };
            match candidates.get(rotation % candidates.len().max(1)) {
                Some(c) => c.clone(),
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    named("random id", id)
                }
            }
        };
        let picked = if self.plan.unknown && !(self.plan.own && slot.container()) {
            self.unknown(slot, picked)
        } else {
            picked
        };
        let spelled = slot.spelled(self.plan.spell_users);
        let value = if spelled {
            self.plan.spelling.apply(&picked.value)
        } else {
            picked.value.clone()
        };
        let label = if spelled {
            self.plan.spelling.wrap(&picked.label)
        } else {
            picked.label.clone()
        };
        self.note(path, &label);
        self.carried.push(value.clone());
        self.outline.secret |= slot == Slot::Secret && !value.is_empty();
        if value.is_empty() { None } else { Some(value) }
    }

    /// An object like `picked` that does not exist.
    fn unknown(&mut self, slot: Slot, picked: Named) -> Named {
        if slot.is_id() || (slot == Slot::Role && picked.value != "WORKSPACE_ADMIN") {
            return named("unknown id", uuid::Uuid::new_v4().to_string());
        }
        match slot {
            Slot::Secret => {
                let secret =
                    portcullis::auth::key::generate(portcullis::auth::key::KeyKind::ServiceKey)
                        .map(|k| k.secret)
                        .unwrap_or_default();
                named("unknown key", secret)
            }
            Slot::Application | Slot::Resource => {
                let n = self.fresh();
                named("unknown name", format!("atk-missing-{n}"))
            }
            _ => picked,
        }
    }

    /// A valid value for a field that names no object, by its name.
    fn text(&mut self, message: &str, field: &str) -> Option<String> {
        let n = self.fresh();
        Some(match field {
            "page_token" => return None,
            "email" => format!("atk-{n}@attacker.test"),
            "external_subject" => format!("idp|atk-{n}"),
            "key" if message == "Tag" || message == "TagCondition" => "Environment".into(),
            "key" | "name" => format!("atk-{n}"),
            "value" | "values" => "prod".into(),
            "description" => "atk".into(),
            "permission" | "permissions" => "prompts:read".into(),
            "actions" => "read".into(),
            "resource_type" if message.starts_with("Register") => format!("atk_{n}"),
            "resource_type" | "type" => "prompts".into(),
            "action" => "member.add".into(),
            _ if field.ends_with("_id") || field.ends_with("_ids") => {
                uuid::Uuid::new_v4().to_string()
            }
            _ => "atk".into(),
        })
    }
}

/// Builds the request of `method` that `plan` describes.
pub fn build(
    schema: &Schema,
    targets: &Targets,
    method: &Method,
    plan: Plan,
    fresh: &mut u64,
) -> Built {
    let mut g = Gen::new(schema, targets, plan, fresh);
    let body = g.message(&method.input, "", 0);
    Built {
        body,
        summary: if g.summary.is_empty() {
            "{}".into()
        } else {
            g.summary.join(" ")
        },
        secret: g.outline.secret,
        carried: g.carried,
    }
}

/// What the requests of `method` look like for these targets, with the
/// oneofs taking alternative `shape`.
pub fn outline(schema: &Schema, targets: &Targets, method: &Method, shape: usize) -> Outline {
    let mut fresh = 0;
    let mut g = Gen::new(schema, targets, Plan::base(shape), &mut fresh);
    g.message(&method.input, "", 0);
    g.outline
}

/// Which metadata a plan's request is also sent with.
#[derive(Clone, Copy, Debug)]
pub struct Sends {
    /// `x-tenant-id` naming a target workspace (`workspace_id` left empty).
    pub tenant: bool,
    /// `x-act-as-user` naming a target user.
    pub act_as: bool,
}

/// The plans for one method: every oneof alternative; with each, every
/// candidate in turn, the attacker's own containers (full and lean), user and
/// workspace ids in each lenient spelling, a lean and a bare request, and
/// (across organizations) the unknown twin. Each is sent without metadata and
/// with the metadata its ids concern.
pub fn plans(
    schema: &Schema,
    targets: &Targets,
    method: &Method,
    twin: bool,
) -> Vec<(Plan, Sends)> {
    let both = Sends {
        tenant: true,
        act_as: true,
    };
    let tenant = Sends {
        tenant: true,
        act_as: false,
    };
    let act_as = Sends {
        tenant: false,
        act_as: true,
    };
    let none = Sends {
        tenant: false,
        act_as: false,
    };
    let mut out = Vec::new();
    let shapes = outline(schema, targets, method, 0).shapes;
    for shape in 0..shapes {
        let o = outline(schema, targets, method, shape);
        let base = Plan::base(shape);
        for rotation in 0..o.rotations.min(MAX_ROTATIONS) {
            // Metadata with the first targets; the others are named in the body.
            let sends = if rotation == 0 { both } else { none };
            out.push((Plan { rotation, ..base }, sends));
        }
        let own_possible = targets.own_organization.is_some()
            && o.container
            && (!o.workspace || targets.own_workspace.is_some());
        if own_possible {
            out.push((Plan { own: true, ..base }, tenant));
            out.push((
                Plan {
                    own: true,
                    lean: true,
                    ..base
                },
                none,
            ));
            let everything = Plan {
                own: true,
                containers_only: true,
                ..base
            };
            out.push((everything, none));
        }
        for spelling in Spelling::LENIENT {
            // Every spelling with the first oneof alternatives, one with the others.
            if shape > 0 && spelling != Spelling::Upper {
                continue;
            }
            if o.user {
                let plan = Plan {
                    spelling,
                    spell_users: true,
                    ..base
                };
                // A key that may not act for users is refused before anything
                // else: one spelling of the header is enough.
                let sends = if spelling == Spelling::Upper {
                    act_as
                } else {
                    none
                };
                out.push((plan, sends));
            }
            if o.workspace {
                // `x-tenant-id` spelled in two ways: with and without hyphens.
                let sends = if matches!(spelling, Spelling::Upper | Spelling::Simple) {
                    tenant
                } else {
                    none
                };
                out.push((Plan { spelling, ..base }, sends));
            }
        }
        out.push((Plan { lean: true, ..base }, none));
        out.push((Plan { bare: true, ..base }, none));
        if twin {
            out.push((
                Plan {
                    unknown: true,
                    ..base
                },
                none,
            ));
        }
    }
    // Lenient spellings first, while the sets they name are not cached yet.
    out.sort_by_key(|(plan, _)| plan.spelling == Spelling::Canonical);
    // A form that leaves out nothing this method has is the same request.
    let mut fresh = 0;
    let mut seen = BTreeSet::new();
    out.retain(|(plan, _)| {
        let built = build(schema, targets, method, *plan, &mut fresh);
        seen.insert(normalized(&built.summary))
    });
    out
}

/// A request summary without the parts that differ between two builds of
/// the same request (fresh names, timestamps).
fn normalized(summary: &str) -> String {
    summary
        .split(' ')
        .map(|pair| match pair.split_once('=') {
            Some((field, value)) if value.starts_with("atk") => format!("{field}=atk"),
            Some((field, value)) if value.starts_with('@') => format!("{field}=@"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// The database, read straight.

/// A table and its columns.
#[derive(Clone, Debug)]
struct Table {
    name: String,
    columns: Vec<String>,
    key: Vec<String>,
}

/// A row: column → value as text.
pub type Row = BTreeMap<String, Option<String>>;

/// Every guarded row of the database.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    rows: BTreeMap<(String, String), Row>,
}

/// A row added, removed or changed.
#[derive(Clone, Debug)]
pub struct RowChange {
    pub table: String,
    pub before: Option<Row>,
    pub after: Option<Row>,
}

/// A direct connection to the database and its tables.
pub struct Db {
    pub conn: DatabaseConnection,
    /// Every table but the migration tool's.
    all: Vec<Table>,
    /// The tables whose rows are judged.
    tables: Vec<Table>,
}

async fn strings(conn: &DatabaseConnection, sql: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let rows = conn
        .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.try_get::<Option<String>>("", c)
                        .ok()
                        .flatten()
                        .or_else(|| row.try_get::<i64>("", c).ok().map(|v| v.to_string()))
                        .or_else(|| row.try_get::<i32>("", c).ok().map(|v| v.to_string()))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

impl Db {
    /// Connects to `url` and reads which tables there are.
    pub async fn open(url: &str) -> Self {
        let mut options = sea_orm::ConnectOptions::new(url.to_owned());
        // Statements go one at a time; PostgreSQL's connections are shared.
        options.max_connections(2).sqlx_logging(false);
        let conn = sea_orm::Database::connect(options)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        match conn.get_database_backend() {
            DbBackend::Sqlite => {
                let names = strings(
                    &conn,
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    &["name"],
                )
                .await;
                for row in names {
                    let name = row[0].clone();
                    let columns = strings(
                        &conn,
                        &format!("SELECT name, pk FROM pragma_table_info('{name}') ORDER BY cid"),
                        &["name", "pk"],
                    )
                    .await;
                    let mut key: Vec<(String, String)> = columns
                        .iter()
                        .filter(|c| c[1] != "0")
                        .map(|c| (c[1].clone(), c[0].clone()))
                        .collect();
                    key.sort();
                    tables.insert(
                        name.clone(),
                        Table {
                            name,
                            columns: columns.iter().map(|c| c[0].clone()).collect(),
                            key: key.into_iter().map(|(_, c)| c).collect(),
                        },
                    );
                }
            }
            _ => {
                let columns = strings(
                    &conn,
                    "SELECT CAST(table_name AS TEXT) AS t, CAST(column_name AS TEXT) AS c \
                     FROM information_schema.columns WHERE table_schema = current_schema() \
                     ORDER BY table_name, ordinal_position",
                    &["t", "c"],
                )
                .await;
                for row in columns {
                    tables
                        .entry(row[0].clone())
                        .or_insert_with(|| Table {
                            name: row[0].clone(),
                            columns: Vec::new(),
                            key: Vec::new(),
                        })
                        .columns
                        .push(row[1].clone());
                }
                let keys = strings(
                    &conn,
                    "SELECT CAST(tc.table_name AS TEXT) AS t, CAST(kcu.column_name AS TEXT) AS c \
                     FROM information_schema.table_constraints tc \
                     JOIN information_schema.key_column_usage kcu \
                       ON tc.constraint_name = kcu.constraint_name AND tc.table_schema = kcu.table_schema \
                     WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema() \
                     ORDER BY kcu.ordinal_position",
                    &["t", "c"],
                )
                .await;
                for row in keys {
                    if let Some(t) = tables.get_mut(&row[0]) {
                        t.key.push(row[1].clone());
                    }
                }
            }
        }
        let all: Vec<Table> = tables
            .into_values()
            .filter(|t| t.name != "seaql_migrations")
            .map(|mut t| {
                if t.key.is_empty() {
                    t.key = t.columns.clone();
                }
                t
            })
            .collect();
        let tables = all
            .iter()
            .filter(|t| !UNGUARDED_TABLES.contains(&t.name.as_str()))
            .cloned()
            .collect();
        Self { conn, all, tables }
    }

    /// Every row of `t`, values as text.
    async fn rows(&self, t: &Table) -> Vec<Vec<Option<String>>> {
        let select: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("CAST(\"{c}\" AS TEXT) AS \"{c}\""))
            .collect();
        let sql = format!("SELECT {} FROM \"{}\"", select.join(", "), t.name);
        self.conn
            .query_all_raw(Statement::from_string(
                self.conn.get_database_backend(),
                &sql,
            ))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|r| {
                t.columns
                    .iter()
                    .map(|c| r.try_get::<Option<String>>("", c).ok().flatten())
                    .collect()
            })
            .collect()
    }

    /// Writes every row of this database into `target`, a migrated database
    /// of the same schema: parents first, then whatever a foreign key let
    /// wait.
    async fn copy_into(&self, target: &DatabaseConnection) {
        let parents = ["organizations", "users", "workspaces", "teams"];
        let mut left: Vec<&Table> = self.all.iter().collect();
        left.sort_by_key(|t| {
            parents
                .iter()
                .position(|p| *p == t.name)
                .unwrap_or(parents.len())
        });
        for t in &left {
            let sql = format!("DELETE FROM \"{}\"", t.name);
            target
                .execute_unprepared(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        while !left.is_empty() {
            let mut waiting = Vec::new();
            let mut last_error = String::new();
            for t in &left {
                let rows = self.rows(t).await;
                if rows.is_empty() {
                    continue;
                }
                let values: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        let v: Vec<String> = r
                            .iter()
                            .map(|v| match v {
                                Some(v) => format!("'{}'", v.replace('\'', "''")),
                                None => "NULL".into(),
                            })
                            .collect();
                        format!("({})", v.join(", "))
                    })
                    .collect();
                let columns: Vec<String> = t.columns.iter().map(|c| format!("\"{c}\"")).collect();
                let sql = format!(
                    "INSERT INTO \"{}\" ({}) VALUES {}",
                    t.name,
                    columns.join(", "),
                    values.join(", ")
                );
                if let Err(e) = target.execute_unprepared(&sql).await {
                    last_error = format!("{}: {e}", t.name);
                    waiting.push(*t);
                }
            }
            assert!(
                waiting.len() < left.len(),
                "copying the database made no progress: {last_error}"
            );
            left = waiting;
        }
    }

    /// The values of `column` in the rows `sql` selects.
    pub async fn column(&self, sql: &str, column: &str) -> Vec<String> {
        strings(&self.conn, sql, &[column])
            .await
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect()
    }

    /// Writes back the rows `changes` touched, as they were before: rows
    /// added are deleted, rows removed inserted, rows changed updated; in
    /// whatever order the foreign keys allow.
    pub async fn revert(&self, changes: &[RowChange]) {
        let quote = |v: &Option<String>| match v {
            Some(v) => format!("'{}'", v.replace('\'', "''")),
            None => "NULL".into(),
        };
        let mut statements = Vec::new();
        for c in changes {
            let Some(t) = self.all.iter().find(|t| t.name == c.table) else {
                continue;
            };
            let key_of = |row: &Row| {
                t.key
                    .iter()
                    .map(|k| format!("\"{k}\" = {}", quote(row.get(k).unwrap_or(&None))))
                    .collect::<Vec<_>>()
                    .join(" AND ")
            };
            match (&c.before, &c.after) {
                (None, Some(after)) => {
                    statements.push(format!(
                        "DELETE FROM \"{}\" WHERE {}",
                        t.name,
                        key_of(after)
                    ));
                }
                (Some(before), None) => {
                    let columns: Vec<String> =
                        t.columns.iter().map(|c| format!("\"{c}\"")).collect();
                    let values: Vec<String> = t
                        .columns
                        .iter()
                        .map(|c| quote(before.get(c).unwrap_or(&None)))
                        .collect();
                    statements.push(format!(
                        "INSERT INTO \"{}\" ({}) VALUES ({})",
                        t.name,
                        columns.join(", "),
                        values.join(", ")
                    ));
                }
                (Some(before), Some(_)) => {
                    let set: Vec<String> = t
                        .columns
                        .iter()
                        .map(|c| format!("\"{c}\" = {}", quote(before.get(c).unwrap_or(&None))))
                        .collect();
                    statements.push(format!(
                        "UPDATE \"{}\" SET {} WHERE {}",
                        t.name,
                        set.join(", "),
                        key_of(before)
                    ));
                }
                (None, None) => {}
            }
        }
        while !statements.is_empty() {
            let mut waiting = Vec::new();
            let mut last_error = String::new();
            for sql in &statements {
                if let Err(e) = self.conn.execute_unprepared(sql).await {
                    last_error = format!("{sql}: {e}");
                    waiting.push(sql.clone());
                }
            }
            if waiting.len() == statements.len() {
                eprintln!("writing rows back made no progress: {last_error}");
                return;
            }
            statements = waiting;
        }
    }

    /// The revision counter: every change advances it.
    pub async fn revision(&self) -> String {
        strings(
            &self.conn,
            "SELECT CAST(value AS TEXT) AS v FROM revision WHERE id = 1",
            &["v"],
        )
        .await
        .into_iter()
        .next()
        .map(|r| r[0].clone())
        .unwrap_or_default()
    }

    /// Every guarded row.
    pub async fn snapshot(&self) -> Snapshot {
        // One statement: every row as one text, values joined by SEPARATOR.
        let selects: Vec<String> = self
            .tables
            .iter()
            .map(|t| {
                let values: Vec<String> = t
                    .columns
                    .iter()
                    .map(|c| format!("COALESCE(CAST(\"{c}\" AS TEXT), '{NULL_MARK}')"))
                    .collect();
                format!(
                    "SELECT '{}' AS t, {} AS r FROM \"{}\"",
                    t.name,
                    values.join(&format!(" || '{SEPARATOR}' || ")),
                    t.name
                )
            })
            .collect();
        let sql = selects.join(" UNION ALL ");
        let mut rows = BTreeMap::new();
        for found in strings(&self.conn, &sql, &["t", "r"]).await {
            let Some(t) = self.tables.iter().find(|t| t.name == found[0]) else {
                continue;
            };
            let row: Row = t
                .columns
                .iter()
                .cloned()
                .zip(
                    found[1]
                        .split(SEPARATOR)
                        .map(|v| (v != NULL_MARK).then(|| v.to_owned())),
                )
                .collect();
            let key: Vec<String> = t
                .key
                .iter()
                .map(|k| row.get(k).cloned().flatten().unwrap_or_default())
                .collect();
            rows.insert((t.name.clone(), key.join("/")), row);
        }
        Snapshot { rows }
    }
}

/// Joins the values of a row in a snapshot; no value of the world holds it.
const SEPARATOR: &str = "\u{241f}";
/// Stands for NULL in a snapshot.
const NULL_MARK: &str = "\u{2400}";

/// The world as built, to copy for each attacker: the database itself
/// (SQLite, copied with `VACUUM INTO`), or a copy of it no server holds open
/// (PostgreSQL), from which copies are made as from a template.
pub struct Original {
    backend: Backend,
    url: String,
    template: Option<TestDb>,
}

impl Original {
    /// The world in the database at `url`, which nothing may change from now on.
    pub async fn of(url: &str, backend: Backend) -> Self {
        if backend == Backend::Sqlite {
            return Self {
                backend,
                url: url.to_owned(),
                template: None,
            };
        }
        let source = Db::open(url).await;
        let target = TestDb::new(backend).await;
        let store = Store::connect(&target.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the template: {e}"));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrating the template: {e}"));
        source.copy_into(store.db()).await;
        store.db().clone().close().await.ok();
        source.conn.close().await.ok();
        Self {
            backend,
            url: target.url.clone(),
            template: Some(target),
        }
    }

    /// A copy of the world, removed when dropped.
    pub async fn copy(&self) -> TestDb {
        let Some(template) = self.template.as_ref().and_then(|t| t.pg_name.clone()) else {
            let target = TestDb::new(self.backend).await;
            let path = target
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap_or_default()
                .to_owned();
            let source = Db::open(&self.url).await;
            let sql = format!("VACUUM INTO '{path}'");
            source
                .conn
                .execute_unprepared(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            source.conn.close().await.ok();
            return target;
        };
        let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sea_orm::Database::connect(format!("{}/postgres", super::pg_base()))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is reachable: {e}"));
        let sql = format!("CREATE DATABASE {name} TEMPLATE {template}");
        let mut attempts = 0;
        // Copies made at once may find the template busy for a moment.
        while let Err(e) = admin.execute_unprepared(&sql).await {
            attempts += 1;
            assert!(attempts < 50, "{sql}: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        admin.close().await.ok();
        TestDb {
            url: format!("{}/{name}", super::pg_base()),
            pg_name: Some(name),
            _dir: tempfile::tempdir().unwrap_or_else(|e| panic!("a temporary directory: {e}")),
        }
    }
}

impl Snapshot {
    /// What changed from `self` to `after`.
    pub fn diff(&self, after: &Self) -> Vec<RowChange> {
        let mut out = Vec::new();
        for (k, before) in &self.rows {
            match after.rows.get(k) {
                Some(now) if now == before => {}
                now => out.push(RowChange {
                    table: k.0.clone(),
                    before: Some(before.clone()),
                    after: now.cloned(),
                }),
            }
        }
        for (k, now) in &after.rows {
            if !self.rows.contains_key(k) {
                out.push(RowChange {
                    table: k.0.clone(),
                    before: None,
                    after: Some(now.clone()),
                });
            }
        }
        out
    }

    /// Organization of each workspace and team.
    fn owners(&self, into: &mut HashMap<String, String>) {
        for ((table, _), row) in &self.rows {
            if (table == "workspaces" || table == "teams")
                && let (Some(Some(id)), Some(Some(org))) =
                    (row.get("id"), row.get("organization_id"))
            {
                into.insert(id.clone(), org.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Who attacks, and what it may touch and read.

/// The rows an attacker may change, besides the audit records of its own
/// changes. Rows of other organizations, rows no organization owns (users,
/// new organizations) and rows naming a protected id are never in reach.
#[derive(Clone, Debug)]
pub enum Reach {
    /// Any row of its own organization (an attacker that is judged only
    /// across organizations).
    Organization,
    /// The rows of one workspace: a service key scoped to it.
    Workspace(String),
    /// A user's own personal access tokens (new ones only if the user may
    /// create them) and the rows of their default workspace.
    Home {
        user: String,
        home: String,
        may_create_pat: bool,
    },
    /// Applications and registered resources of a workspace it edits.
    Content(String),
}

/// A key that attacks, and what it must not reach.
#[derive(Clone, Debug)]
pub struct Attacker {
    /// `P ORG_ADMIN PAT`, say.
    pub label: String,
    pub key: String,
    /// The user or service account the key acts as.
    pub principal: String,
    pub organization: String,
    pub reach: Reach,
    pub targets: Targets,
    /// Ids no row it changes may name and no answer may show, unless the
    /// request carried them.
    pub protected: Vec<Named>,
    /// Strings no answer may show (a token containing one), unless the
    /// request carried the token or it is in `allowed`.
    pub markers: Vec<String>,
    pub allowed: Vec<String>,
    /// Across organizations: compare foreign objects with unknown ones.
    pub twin: bool,
    /// One plain request per method (a key that must not work at all).
    pub minimal: bool,
}

/// Columns of `service_accounts` that are plain description; any other
/// column that turns true is a power (acting for users, platform).
const PLAIN_ACCOUNT_COLUMNS: &[&str] = &[
    "id",
    "organization_id",
    "name",
    "role",
    "created_at",
    "updated_at",
    "description",
];

fn truthy(v: Option<&Option<String>>) -> bool {
    matches!(v, Some(Some(s)) if s == "1" || s == "true" || s == "t")
}

fn owner(table: &str, row: &Row, owners: &HashMap<String, String>) -> Option<String> {
    let get = |c: &str| row.get(c).cloned().flatten().filter(|v| !v.is_empty());
    if table == "organizations" {
        return get("id");
    }
    if let Some(org) = get("organization_id") {
        return Some(org);
    }
    ["workspace_id", "team_id"]
        .iter()
        .find_map(|c| get(c).and_then(|id| owners.get(&id).cloned()))
}

impl Attacker {
    /// Why `change` is outside this attacker's reach, if it is.
    fn judge(&self, change: &RowChange, owners: &HashMap<String, String>) -> Option<String> {
        let versions: Vec<&Row> = change.before.iter().chain(change.after.iter()).collect();
        let get = |row: &Row, c: &str| row.get(c).cloned().flatten().unwrap_or_default();
        let mut reasons = Vec::new();
        // The change's own bookkeeping: its audit events (by the attacker)
        // and its row of the change log (of the attacker's organization,
        // checked below like every row).
        let own_audit = change.before.is_none()
            && (change.table == "change_log"
                || change.table == "audit_events"
                    && versions
                        .iter()
                        .all(|r| get(r, "actor_id") == self.principal));
        if versions
            .iter()
            .any(|r| owner(&change.table, r, owners).as_deref() != Some(self.organization.as_str()))
        {
            reasons.push("outside the attacker's organization".to_owned());
        } else if !own_audit
            && !versions
                .iter()
                .all(|r| self.inside(&change.table, change, r))
        {
            reasons.push(format!(
                "outside the attacker's reach ({})",
                self.reach_label()
            ));
        }
        let mut touched = BTreeSet::new();
        for row in &versions {
            for value in row.values().flatten() {
                for p in &self.protected {
                    if value.contains(&p.value) {
                        touched.insert(p.label.clone());
                    }
                }
            }
        }
        if !touched.is_empty() {
            reasons.push(format!(
                "names {}",
                touched.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if change.table == "service_accounts"
            && let Some(after) = &change.after
        {
            for (column, _) in after
                .iter()
                .filter(|(c, _)| !PLAIN_ACCOUNT_COLUMNS.contains(&c.as_str()))
            {
                let before = change.before.as_ref().and_then(|b| b.get(column));
                if truthy(after.get(column)) && !truthy(before) {
                    reasons.push(format!("gives a service account the power `{column}`"));
                }
            }
        }
        if reasons.is_empty() {
            None
        } else {
            Some(reasons.join("; "))
        }
    }

    /// Whether one version of a changed row lies in the attacker's reach.
    fn inside(&self, table: &str, change: &RowChange, row: &Row) -> bool {
        let get = |c: &str| row.get(c).cloned().flatten().unwrap_or_default();
        match &self.reach {
            Reach::Organization => true,
            Reach::Workspace(ws) => {
                get("workspace_id") == *ws || (table == "workspaces" && get("id") == *ws)
            }
            Reach::Home {
                user,
                home,
                may_create_pat,
            } => {
                get("workspace_id") == *home
                    || (table == "workspaces" && get("id") == *home)
                    || (table == "api_keys"
                        && get("user_id") == *user
                        && get("service_account_id").is_empty()
                        && (change.before.is_some() || *may_create_pat))
            }
            Reach::Content(ws) => {
                (table == "applications" || table == "resources") && get("workspace_id") == *ws
            }
        }
    }

    fn reach_label(&self) -> &'static str {
        match self.reach {
            Reach::Organization => "its organization",
            Reach::Workspace(_) => "its workspace",
            Reach::Home { .. } => "its own tokens and default workspace",
            Reach::Content(_) => "the resources of the workspace it edits",
        }
    }

    /// What an answer shows that this attacker may not read.
    fn leaks(&self, haystack: &[u8], carried: &Carried) -> Vec<String> {
        let text = String::from_utf8_lossy(haystack);
        let mut out = BTreeSet::new();
        for m in &self.markers {
            for (at, _) in text.match_indices(m.as_str()) {
                let token = token_at(&text, at, m.len());
                if !carried.raw.contains(&token)
                    && !self.allowed.iter().any(|a| token.contains(a.as_str()))
                {
                    out.insert(format!("`{token}`"));
                }
            }
        }
        for p in &self.protected {
            if text.contains(p.value.as_str()) && !carried.has_id(&p.value) {
                out.insert(p.label.clone());
            }
        }
        out.into_iter().collect()
    }
}

/// The maximal run of name characters around `text[at..at + len]`.
fn token_at(text: &str, at: usize, len: usize) -> String {
    let name = |c: char| c.is_ascii_alphanumeric() || "-_.@|+".contains(c);
    let start = text[..at]
        .char_indices()
        .rev()
        .take_while(|(_, c)| name(*c))
        .last()
        .map_or(at, |(i, _)| i);
    let end = text[at + len..]
        .char_indices()
        .find(|(_, c)| !name(*c))
        .map_or(text.len(), |(i, _)| at + len + i);
    text[start..end].to_owned()
}

/// The strings a request carried, raw and normalized for ids.
struct Carried {
    raw: String,
    ids: String,
}

impl Carried {
    fn new(built: &Built, meta: &Meta) -> Self {
        let mut raw = built.carried.join("\n");
        for v in meta.tenant.iter().chain(meta.act_as.iter()) {
            raw.push('\n');
            raw.push_str(v);
        }
        Self {
            ids: normalize(&raw),
            raw,
        }
    }

    fn has_id(&self, id: &str) -> bool {
        self.ids.contains(&normalize(id))
    }
}

fn normalize(s: &str) -> String {
    s.to_lowercase().replace('-', "")
}

// ---------------------------------------------------------------------------
// The report.

/// One broken promise.
#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: &'static str,
    pub method: String,
    pub attacker: String,
    pub meta: String,
    pub request: String,
    pub detail: String,
    /// Findings with the same kind, method and signature are one group.
    pub signature: String,
}

/// The kinds of finding, gravest first.
pub const KIND_ORDER: &[&str] = &[
    "protected change",
    "change without a revision",
    "victim decision poisoned",
    "victim decision changed",
    "disclosure",
    "disclosure in an error",
    "no answer",
    "existence oracle",
];

/// The count, among a method's codes, of the messages its streams gave.
const STREAMED: &str = "streamed_messages";

/// Counts and findings of a whole run.
#[derive(Debug, Default)]
pub struct Report {
    /// Phase → code → calls.
    pub codes: BTreeMap<String, BTreeMap<String, u64>>,
    /// Method → code → calls.
    pub per_method: BTreeMap<String, BTreeMap<String, u64>>,
    pub findings: Vec<Finding>,
    /// Remarks that are not violations (coverage lost, timings).
    pub notes: Vec<String>,
}

impl Report {
    fn record(&mut self, phase: &str, method: &str, outcome: &Outcome) {
        if let Outcome::Streamed { messages, end } = outcome {
            // Per method only: the phases count calls.
            let counts = self.per_method.entry(method.to_owned()).or_default();
            *counts.entry(STREAMED.into()).or_default() += messages.len() as u64;
            if let Some((code, _)) = end {
                *counts.entry(format!("streams_ended_{code:?}")).or_default() += 1;
            }
        }
        let code = outcome.code_name();
        *self
            .codes
            .entry(phase.to_owned())
            .or_default()
            .entry(code.clone())
            .or_default() += 1;
        *self
            .per_method
            .entry(method.to_owned())
            .or_default()
            .entry(code)
            .or_default() += 1;
    }

    /// How many messages the streams of `method` (`Service/Method`) gave.
    pub fn streamed(&self, method: &str) -> u64 {
        self.per_method
            .get(method)
            .and_then(|codes| codes.get(STREAMED).copied())
            .unwrap_or(0)
    }

    /// Adds a finding.
    pub fn add(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// Adds everything `other` counted and found.
    pub fn merge(&mut self, other: Self) {
        for (phase, codes) in other.codes {
            let mine = self.codes.entry(phase).or_default();
            for (c, n) in codes {
                *mine.entry(c).or_default() += n;
            }
        }
        for (method, codes) in other.per_method {
            let mine = self.per_method.entry(method).or_default();
            for (c, n) in codes {
                *mine.entry(c).or_default() += n;
            }
        }
        self.findings.extend(other.findings);
        self.notes.extend(other.notes);
    }

    /// The findings grouped: (kind, method, signature) → findings.
    pub fn groups(&self) -> BTreeMap<(String, String, String), Vec<&Finding>> {
        let mut groups: BTreeMap<(String, String, String), Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            groups
                .entry((f.kind.to_owned(), f.method.clone(), f.signature.clone()))
                .or_default()
                .push(f);
        }
        groups
    }

    /// Code counts per method and per phase.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (method, codes) in &self.per_method {
            let line: Vec<String> = codes.iter().map(|(c, n)| format!("{c}={n}")).collect();
            let _ = writeln!(out, "  {method:<48} {}", line.join(" "));
        }
        for (phase, codes) in &self.codes {
            let total: u64 = codes.values().sum();
            let line: Vec<String> = codes.iter().map(|(c, n)| format!("{c}={n}")).collect();
            let _ = writeln!(out, "  {phase:<48} {total} calls: {}", line.join(" "));
        }
        out
    }

    /// The grouped findings, at most `max_groups` of them and `max_bytes` long.
    pub fn describe(&self, max_groups: usize, max_bytes: usize) -> String {
        let mut groups: Vec<_> = self.groups().into_iter().collect();
        groups.sort_by_key(|((kind, _, _), _)| {
            KIND_ORDER
                .iter()
                .position(|k| k == kind)
                .unwrap_or(KIND_ORDER.len())
        });
        let mut out = format!(
            "{} violations in {} groups\n",
            self.findings.len(),
            groups.len()
        );
        for (i, ((kind, method, signature), list)) in groups.iter().enumerate() {
            let list = list.as_slice();
            if i == max_groups || out.len() > max_bytes {
                let _ = writeln!(out, "… {} more groups", groups.len() - i);
                break;
            }
            let attackers: BTreeSet<&str> = list.iter().map(|f| f.attacker.as_str()).collect();
            let metas: BTreeSet<&str> = list.iter().map(|f| meta_kind(&f.meta)).collect();
            let first = list[0];
            let _ = writeln!(
                out,
                "[{kind}] {method}: {signature}\n    {} calls; attackers: {}; metadata: {}\n    e.g. {} with {}: {}\n    {}",
                list.len(),
                attackers.into_iter().collect::<Vec<_>>().join(", "),
                metas.into_iter().collect::<Vec<_>>().join(", "),
                first.attacker,
                first.meta,
                clip(&first.request, 400),
                clip(&first.detail, 700).replace('\n', "\n    "),
            );
        }
        out
    }
}

fn meta_kind(meta: &str) -> &str {
    meta.split(':').next().unwrap_or(meta)
}

/// `s` cut to at most `max` characters.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

// ---------------------------------------------------------------------------
// The run.

/// What the victim asks with its own key, and what a server with cold caches
/// answered on the untouched world.
#[derive(Clone, Debug)]
pub struct Victim {
    pub battery: Battery,
    /// The answers to every question, one call each.
    pub before: Answers,
    /// The answers to the quick form (one BatchCheck), by question.
    pub quick: Vec<(String, String)>,
}

impl Victim {
    /// Asks `battery` on a server with cold caches over the database at `url`.
    pub async fn ask(battery: Battery, url: &str) -> Self {
        let oracle = Instance::start(url).await;
        let before = battery.ask(&oracle.channel).await;
        let quick = battery.quick(&oracle.channel).await;
        oracle.stop().await;
        Self {
            battery,
            before,
            quick,
        }
    }
}

/// What an arena reports under, and what judges it besides the rows.
pub struct Stage {
    /// The phase its calls are counted under.
    pub phase: String,
    /// Id → label, to show rows readably.
    pub names: Vec<Named>,
    /// The organization whose decisions must not change, if any.
    pub victim: Option<Victim>,
    /// Kinds of request already found to poison decisions (shared by arenas).
    pub poisons: Poisons,
}

/// Kinds of request (phase and method, leniently spelled, user ids) found to
/// poison the victim's decisions; each is pinned down to a call once.
pub type Poisons = Arc<Mutex<BTreeSet<(String, bool, bool)>>>;

/// The server under attack, the database behind it and the report. Every
/// call meets the world as it was built: whatever a call changed is written
/// back from the snapshot before the next one.
pub struct Arena<'a> {
    /// The connections every server of the arena shares.
    store: Store,
    live: Instance,
    db: &'a Db,
    schema: &'a Schema,
    phase: String,
    /// Id → label, to show rows readably.
    names: Vec<Named>,
    report: &'a mut Report,
    victim: Option<Victim>,
    /// Kinds of request (method, lenient, user ids) already found to poison
    /// the victim's decisions, by any arena sharing it: not hunted again.
    poisons: Poisons,
    attackers: Vec<Attacker>,
    baseline: Snapshot,
    revision: String,
    fresh: u64,
    /// Every call is shown on stderr (`PORTCULLIS_ISOLATION_TRACE=1`).
    trace: bool,
}

/// One call of a method's run.
#[derive(Clone)]
struct Sent {
    attacker: usize,
    built: Built,
    meta: Meta,
    /// How the request was made (`shape 0, upper(user ids)`).
    plan: String,
    /// Some id in it is spelled leniently.
    lenient: bool,
}

impl<'a> Arena<'a> {
    /// Starts a server with cold caches over the database `db` reads (at `url`).
    pub async fn new(
        url: &str,
        db: &'a Db,
        schema: &'a Schema,
        stage: Stage,
        report: &'a mut Report,
    ) -> Self {
        let Stage {
            phase,
            names,
            victim,
            poisons,
        } = stage;
        let baseline = db.snapshot().await;
        let revision = db.revision().await;
        let store = Store::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Self {
            live: Instance::on(store.clone()).await,
            store,
            db,
            schema,
            phase,
            names,
            report,
            victim,
            poisons,
            attackers: Vec::new(),
            baseline,
            revision,
            fresh: 0,
            trace: std::env::var("PORTCULLIS_ISOLATION_TRACE").is_ok_and(|v| v == "1"),
        }
    }

    /// The server under attack.
    pub fn channel(&self) -> Channel {
        self.live.channel.clone()
    }

    /// Every attacker sends every method's requests; each answer is judged.
    /// After each method the victim's decisions are compared (quick form);
    /// at the end, every question of the battery.
    pub async fn run(&mut self, attackers: &[Attacker]) {
        self.attackers = attackers.to_vec();
        let schema = self.schema;
        let only = std::env::var("PORTCULLIS_ISOLATION_METHOD").ok();
        for method in &schema.methods {
            if only.as_deref().is_some_and(|o| !method.path.contains(o)) {
                continue;
            }
            // Cold caches for each method: a lenient spelling that reaches a
            // cached set first cannot poison it (and the victim's questions
            // after the last method cached the right answers).
            self.empty_caches().await;
            let mut sent: Vec<Sent> = Vec::new();
            for i in 0..attackers.len() {
                self.attack(method, i, &mut sent).await;
            }
            // A change that did not advance the revision.
            let now = self.db.snapshot().await;
            let changes = self.baseline.diff(&now);
            if !changes.is_empty() {
                self.pinpoint(method, &sent, changes).await;
            }
            self.check_victim(method, &sent).await;
        }
        self.final_check().await;
    }

    /// Sends a request of the attack again, to the live server.
    async fn resend(&self, method: &Method, s: &Sent) -> Outcome {
        send(&self.live.channel, method, s.built.body.clone(), &s.meta).await
    }

    async fn attack(&mut self, method: &Method, index: usize, sent: &mut Vec<Sent>) {
        let a = self.attackers[index].clone();
        let mut canonical: HashMap<usize, Outcome> = HashMap::new();
        let all = if a.minimal {
            vec![(
                Plan::base(0),
                Sends {
                    tenant: false,
                    act_as: false,
                },
            )]
        } else {
            plans(self.schema, &a.targets, method, a.twin)
        };
        for (plan, sends) in all {
            let built = build(self.schema, &a.targets, method, plan, &mut self.fresh);
            if plan.unknown && built.secret {
                // A key is a credential: an unknown one is rightly answered otherwise.
                continue;
            }
            for meta in self.metas(&a, &plan, sends) {
                let built = if meta.tenant.is_some() && !plan.own {
                    let blank = Plan {
                        blank_workspace: true,
                        ..plan
                    };
                    build(self.schema, &a.targets, method, blank, &mut self.fresh)
                } else {
                    built.clone()
                };
                let outcome = send(&self.live.channel, method, built.body.clone(), &meta).await;
                if self.trace {
                    eprintln!(
                        "{} {} with {}: {} [{}] → {outcome}",
                        a.label,
                        method.name,
                        meta.label,
                        built.summary,
                        plan.label()
                    );
                }
                self.report.record(&self.phase, &method.name, &outcome);
                self.judge_answer(method, &a, &plan, &built, &meta, &outcome);
                sent.push(Sent {
                    attacker: index,
                    built: built.clone(),
                    meta: meta.clone(),
                    plan: plan.label(),
                    lenient: plan.spelling != Spelling::Canonical,
                });
                // A refused call that wrote anyway shows in the comparison
                // after the method, which then replays the calls one by one.
                if outcome.is_ok() {
                    self.judge_changes(method, &a, &plan, &built, &meta).await;
                }
                let plain = plan.rotation == 0
                    && !plan.own
                    && !plan.lean
                    && !plan.bare
                    && !plan.unknown
                    && plan.spelling == Spelling::Canonical
                    && meta.tenant.is_none()
                    && meta.act_as.is_none();
                if plain {
                    canonical.insert(plan.shape, outcome.clone());
                }
                if plan.unknown
                    && let Some(foreign) = canonical.get(&plan.shape)
                    && foreign.code_name() != outcome.code_name()
                {
                    self.report.add(Finding {
                        kind: "existence oracle",
                        method: method.name.clone(),
                        attacker: a.label.clone(),
                        meta: meta.label.clone(),
                        request: built.summary.clone(),
                        detail: format!("foreign objects: {foreign}; unknown objects: {outcome}"),
                        signature: format!(
                            "foreign {} but unknown {}",
                            foreign.code_name(),
                            outcome.code_name()
                        ),
                    });
                }
            }
        }
    }

    fn meta(a: &Attacker, tenant: Option<&Named>, act_as: Option<&Named>, label: String) -> Meta {
        Meta {
            key: a.key.clone(),
            tenant: tenant.map(|t| t.value.clone()),
            act_as: act_as.map(|u| u.value.clone()),
            label,
        }
    }

    /// No metadata, and as `sends` says `x-tenant-id` naming a target
    /// workspace and `x-act-as-user` naming a target user, spelled as the
    /// plan spells ids of that kind.
    fn metas(&self, a: &Attacker, plan: &Plan, sends: Sends) -> Vec<Meta> {
        let mut out = vec![Self::meta(a, None, None, "no metadata".into())];
        let pick = |list: &[Named], users: bool| {
            list.get(plan.rotation % list.len().max(1)).map(|n| {
                let spelling = if plan.spell_users == users {
                    plan.spelling
                } else {
                    Spelling::Canonical
                };
                Named {
                    label: spelling.wrap(&n.label),
                    value: spelling.apply(&n.value),
                }
            })
        };
        if sends.tenant
            && let Some(ws) = pick(&a.targets.workspaces, false)
        {
            out.push(Self::meta(
                a,
                Some(&ws),
                None,
                format!("x-tenant-id: {}", ws.label),
            ));
        }
        if sends.act_as
            && let Some(user) = pick(&a.targets.users, true)
        {
            out.push(Self::meta(
                a,
                None,
                Some(&user),
                format!("x-act-as-user: {}", user.label),
            ));
        }
        out
    }

    fn judge_answer(
        &mut self,
        method: &Method,
        a: &Attacker,
        plan: &Plan,
        built: &Built,
        meta: &Meta,
        outcome: &Outcome,
    ) {
        let carried = Carried::new(built, meta);
        let (kind, leaks) = match outcome {
            Outcome::NoAnswer(why) => {
                self.report.add(Finding {
                    kind: "no answer",
                    method: method.name.clone(),
                    attacker: a.label.clone(),
                    meta: meta.label.clone(),
                    request: built.summary.clone(),
                    detail: why.clone(),
                    signature: "no answer".into(),
                });
                return;
            }
            Outcome::Ok(body) => ("disclosure", a.leaks(body, &carried)),
            Outcome::Streamed { messages, end } => {
                let mut leaks: BTreeSet<String> =
                    messages.iter().flat_map(|m| a.leaks(m, &carried)).collect();
                if let Some((_, message)) = end {
                    leaks.extend(a.leaks(message.as_bytes(), &carried));
                }
                ("disclosure", leaks.into_iter().collect())
            }
            Outcome::Status(_, message) => (
                "disclosure in an error",
                a.leaks(message.as_bytes(), &carried),
            ),
        };
        if leaks.is_empty() {
            return;
        }
        self.report.add(Finding {
            kind,
            method: method.name.clone(),
            attacker: a.label.clone(),
            meta: meta.label.clone(),
            request: format!("{} [{}]", built.summary, plan.label()),
            detail: format!("{outcome} shows {}", leaks.join(", ")),
            signature: leak_signature(&leaks),
        });
    }

    /// Judges what the last call changed, then writes the world back.
    async fn judge_changes(
        &mut self,
        method: &Method,
        a: &Attacker,
        plan: &Plan,
        built: &Built,
        meta: &Meta,
    ) {
        let revision = self.db.revision().await;
        if revision == self.revision {
            return;
        }
        let now = self.db.snapshot().await;
        let changes = self.baseline.diff(&now);
        if changes.is_empty() {
            self.revision = revision;
            return;
        }
        let mut owners = HashMap::new();
        self.baseline.owners(&mut owners);
        now.owners(&mut owners);
        let mut bad: Vec<(String, &RowChange)> = Vec::new();
        for c in &changes {
            if let Some(why) = a.judge(c, &owners) {
                bad.push((why, c));
            }
        }
        let forbidden = !bad.is_empty();
        if forbidden {
            let mut signature: BTreeSet<String> = BTreeSet::new();
            let mut detail = String::new();
            for (why, c) in &bad {
                let op = match (&c.before, &c.after) {
                    (None, _) => "+",
                    (_, None) => "-",
                    _ => "~",
                };
                signature.insert(format!("{}{op} {}", c.table, generalize(why)));
                let _ = writeln!(detail, "{op}{} ({why}): {}", c.table, self.show(c));
            }
            self.report.add(Finding {
                kind: "protected change",
                method: method.name.clone(),
                attacker: a.label.clone(),
                meta: meta.label.clone(),
                request: format!("{} [{}]", built.summary, plan.label()),
                detail,
                signature: signature.into_iter().collect::<Vec<_>>().join("; "),
            });
        }
        // Written back at once: nothing but the call itself can have cached
        // what it changed, and the victim's decisions, checked after each
        // method, would show it.
        self.restore(&changes).await;
    }

    /// Writes the rows `changes` touched back as the baseline has them.
    async fn restore(&mut self, changes: &[RowChange]) {
        self.db.revert(changes).await;
        let now = self.db.snapshot().await;
        let left = self.baseline.diff(&now);
        if !left.is_empty() {
            self.report.notes.push(format!(
                "{}: {} rows could not be written back; the world drifted from then on",
                self.phase,
                left.len()
            ));
            self.baseline = now;
        }
        self.revision = self.db.revision().await;
    }

    /// Writes back whatever the last call changed.
    async fn restore_if_changed(&mut self) {
        let now = self.db.snapshot().await;
        let changes = self.baseline.diff(&now);
        if !changes.is_empty() {
            self.restore(&changes).await;
        }
    }

    /// Cold caches for the server under attack.
    ///
    /// The server's own caches are emptied, as a change the server could not
    /// pin down (a lost notification) empties them: cheaper than a new
    /// server (with PostgreSQL, a new listener connection each time).
    async fn empty_caches(&mut self) {
        let state = &self.live.state;
        state.flush();
    }

    /// Adds a remark to the report.
    pub fn note(&mut self, note: String) {
        self.report.notes.push(note);
    }

    /// Stops the server under attack.
    pub async fn stop(self) {
        self.live.stop().await;
    }

    /// Compares the victim's decisions (quick form) with the untouched world's;
    /// on a difference, finds the call of `sent` that made it.
    async fn check_victim(&mut self, method: &Method, sent: &[Sent]) {
        let Some(v) = self.victim.clone() else {
            return;
        };
        if self.quick_agrees(&v).await {
            return;
        }
        // The world is as built: the quick answers storage gives are the
        // untouched world's.
        let wrong = quick_differences(&v.quick, &v.battery.quick(&self.live.channel).await);
        // Replay the calls on fresh servers. The victim's own questions cache
        // the right answers, so after each a fresh server again. Requests
        // with a lenient spelling one at a time; the others at once, and one
        // at a time only if they did it.
        let (lenient, plain): (Vec<&Sent>, Vec<&Sent>) = sent.iter().partition(|s| s.lenient);
        self.empty_caches().await;
        for s in &plain {
            let _ = self.resend(method, s).await;
            self.restore_if_changed().await;
        }
        let plain_poison = v.battery.quick(&self.live.channel).await != v.quick;
        let suspects: Vec<&Sent> = if plain_poison {
            plain.into_iter().chain(lenient).collect()
        } else {
            lenient
        };
        let mut found = false;
        let known = |arena: &Self, s: &Sent| {
            let kind = (
                format!("{} {}", arena.phase, method.name),
                s.lenient,
                s.plan.contains("user ids"),
            );
            arena
                .poisons
                .lock()
                .map(|k| k.contains(&kind))
                .unwrap_or(false)
        };
        for s in suspects.into_iter().take(MAX_REPLAYS) {
            // One example of each kind of request is enough.
            if known(self, s) {
                found = true;
                continue;
            }
            self.empty_caches().await;
            let outcome = self.resend(method, s).await;
            self.restore_if_changed().await;
            if self.quick_agrees(&v).await {
                continue;
            }
            let quick = v.battery.quick(&self.live.channel).await;
            found = true;
            if let Ok(mut k) = self.poisons.lock() {
                k.insert((
                    format!("{} {}", self.phase, method.name),
                    s.lenient,
                    s.plan.contains("user ids"),
                ));
            }
            let differ = quick_differences(&v.quick, &quick);
            self.report.add(Finding {
                kind: "victim decision poisoned",
                method: method.name.clone(),
                attacker: self.attackers[s.attacker].label.clone(),
                meta: s.meta.label.clone(),
                request: format!("{} [{}]", s.built.summary, s.plan),
                detail: format!(
                    "the call was answered {outcome}; afterwards the victim's own checks get \
                     answers storage does not give ({} of {}):\n{}",
                    differ.len(),
                    v.quick.len(),
                    differ
                        .iter()
                        .take(8)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                signature: if s.lenient {
                    let what = if s.plan.contains("user ids") {
                        "user"
                    } else {
                        "workspace"
                    };
                    format!("after a request with a leniently spelled {what} id")
                } else {
                    "after a request with canonical ids".into()
                },
            });
        }
        if !found {
            self.report.add(Finding {
                kind: "victim decision poisoned",
                method: method.name.clone(),
                attacker: "(not reproduced one call at a time)".into(),
                meta: String::new(),
                request: String::new(),
                detail: format!(
                    "after the method's calls the victim's own checks get answers storage does \
                     not give ({} of {}):\n{}",
                    wrong.len(),
                    v.quick.len(),
                    wrong
                        .iter()
                        .take(12)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
                signature: "not reproduced".into(),
            });
        }
        self.empty_caches().await;
    }

    /// Whether the quick questions get the untouched world's answers; an
    /// answer that storage was unavailable (other tests share PostgreSQL) is
    /// asked again.
    async fn quick_agrees(&self, v: &Victim) -> bool {
        for _ in 0..5 {
            let quick = v.battery.quick(&self.live.channel).await;
            if quick == v.quick {
                return true;
            }
            if !quick.iter().any(|(_, a)| a.contains("Unavailable")) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    }

    /// The victim's questions the live server answers unlike a cold one.
    async fn wrong_answers(&self, v: &Victim) -> Vec<String> {
        let live = v.battery.ask(&self.live.channel).await;
        let oracle = Instance::on(self.store.clone()).await;
        let cold = v.battery.ask(&oracle.channel).await;
        oracle.stop().await;
        differences(&cold, &live)
            .into_iter()
            .map(|(q, was, now)| format!("{q}: {was} (storage) but {now} (cache)"))
            .collect()
    }

    /// Every question of the battery, after the whole run.
    async fn final_check(&mut self) {
        let Some(v) = self.victim.clone() else {
            return;
        };
        let live = v.battery.ask(&self.live.channel).await;
        let changed = differences(&v.before, &live);
        if changed.is_empty() {
            return;
        }
        let wrong = self.wrong_answers(&v).await;
        let (kind, lines) = if wrong.is_empty() {
            (
                "victim decision changed",
                changed
                    .iter()
                    .map(|(q, was, now)| format!("{q}: {was} → {now}"))
                    .collect::<Vec<_>>(),
            )
        } else {
            ("victim decision poisoned", wrong)
        };
        let attackers: Vec<String> = self.attackers.iter().map(|a| a.label.clone()).collect();
        self.report.add(Finding {
            kind,
            method: "(after the whole run)".into(),
            attacker: attackers.join(", "),
            meta: String::new(),
            request: String::new(),
            detail: format!(
                "{} of {} of the victim's own answers differ from the untouched world's:\n{}",
                lines.len(),
                v.before.len(),
                lines
                    .iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            signature: "the victim's decisions at the end".into(),
        });
    }

    /// A row change with ids replaced by labels.
    fn show(&self, c: &RowChange) -> String {
        let row = |r: &Row| {
            let mut s = r
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" ");
            for n in &self.names {
                s = s.replace(&n.value, &n.label);
            }
            clip(&s, 400)
        };
        match (&c.before, &c.after) {
            (Some(b), Some(a)) => {
                let changed: Vec<String> = a
                    .iter()
                    .filter(|(k, v)| b.get(*k) != Some(*v))
                    .map(|(k, v)| {
                        format!(
                            "{k}: {:?} → {:?}",
                            b.get(k).cloned().flatten().unwrap_or_default(),
                            v.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                format!("{} [{}]", row(b), changed.join(", "))
            }
            (Some(b), None) => row(b),
            (None, Some(a)) => row(a),
            (None, None) => String::new(),
        }
    }

    /// Rows changed during a method's run without a revision: writes them
    /// back, then replays the method's calls one at a time, reading every
    /// table after each, to find the ones that did it.
    async fn pinpoint(&mut self, method: &Method, sent: &[Sent], changes: Vec<RowChange>) {
        let n = changes.len();
        self.restore(&changes).await;
        self.empty_caches().await;
        let mut found = false;
        for s in sent {
            let outcome = self.resend(method, s).await;
            let after = self.db.snapshot().await;
            let changes = self.baseline.diff(&after);
            if changes.is_empty() {
                continue;
            }
            found = true;
            let a = &self.attackers[s.attacker];
            let mut owners = HashMap::new();
            self.baseline.owners(&mut owners);
            after.owners(&mut owners);
            let detail: Vec<String> = changes
                .iter()
                .map(|c| {
                    let why = a.judge(c, &owners).unwrap_or_else(|| "in reach".into());
                    format!("{} ({why}): {}", c.table, self.show(c))
                })
                .collect();
            self.report.add(Finding {
                kind: "change without a revision",
                method: method.name.clone(),
                attacker: a.label.clone(),
                meta: s.meta.label.clone(),
                request: s.built.summary.clone(),
                detail: format!("replayed: {outcome}; {}", detail.join("\n")),
                signature: changes
                    .iter()
                    .map(|c| c.table.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
            self.restore(&changes).await;
        }
        if !found {
            self.report.add(Finding {
                kind: "change without a revision",
                method: method.name.clone(),
                attacker: "(not reproduced)".into(),
                meta: String::new(),
                request: String::new(),
                detail: format!("{n} rows changed during the method's run; a replay changed none"),
                signature: "not reproduced".into(),
            });
        }
        self.empty_caches().await;
    }
}

/// The quick questions answered otherwise than storage answers them.
fn quick_differences(storage: &[(String, String)], cache: &[(String, String)]) -> Vec<String> {
    storage
        .iter()
        .zip(cache)
        .filter(|(was, now)| was != now)
        .map(|((q, was), (_, now))| format!("{q}: {was} (storage) but {now} (cache)"))
        .collect()
}

/// `why` without the instance numbers of labels, for grouping.
fn generalize(why: &str) -> String {
    why.split("; ")
        .map(|reason| {
            let labels: BTreeSet<&str> = reason
                .split(", ")
                .map(|part| {
                    part.split('#')
                        .next()
                        .unwrap_or(part)
                        .trim_end_matches(|c: char| c.is_ascii_digit())
                })
                .collect();
            labels.into_iter().collect::<Vec<_>>().join(", ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn leak_signature(leaks: &[String]) -> String {
    let kinds: BTreeSet<String> = leaks
        .iter()
        .map(|l| {
            if l.starts_with('`') {
                let t = l.trim_matches('`');
                if t.contains('@') {
                    "email".into()
                } else if t.starts_with("idp|") {
                    "external subject".into()
                } else {
                    // `q-secret-app-one` → `q-secret-app`.
                    let parts: Vec<&str> = t.split(['-', '_']).collect();
                    format!(
                        "name {}",
                        parts.iter().take(3).copied().collect::<Vec<_>>().join("-")
                    )
                }
            } else {
                // `Q.ws1` → `Q.ws`, `platform.sa` stays.
                l.trim_end_matches(|c: char| c.is_ascii_digit() || c == '#')
                    .to_owned()
            }
        })
        .collect();
    kinds.into_iter().collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------
// Decisions, and servers of their own to ask.

/// A server on an existing database, with caches of its own.
pub struct Instance {
    /// The server's state: its caches.
    pub state: AppState,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    /// Starts a server on the database at `url`.
    pub async fn start(url: &str) -> Self {
        let store = Store::connect(url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
        Self::on(store).await
    }

    /// Starts a server with caches of its own on `store`'s connections.
    ///
    /// With PostgreSQL it returns once the server listens for changes: the
    /// listener drops every cached decision when it starts (it cannot know
    /// what it missed), which would wipe what the first calls cached.
    pub async fn on(store: Store) -> Self {
        let postgres = store.backend() == DbBackend::Postgres;
        // Workspace invites on, so that they are attacked too.
        let settings = Settings {
            workspace_invites: true,
            ..Settings::default()
        };
        let state = AppState::new(store, settings);
        let watched = state.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local address: {e}"));
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = server::run(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap_or_else(|e| panic!("endpoint: {e}"))
            .connect_lazy();
        if postgres {
            super::wait_for_change_listener(&watched).await;
        }
        Self {
            state: watched,
            channel,
            stop: Some(stop),
            task,
        }
    }
}

impl Instance {
    /// Stops the server and waits for it (and the tasks it started) to end.
    pub async fn stop(mut self) {
        // The server drains until its clients are gone: go first.
        drop(std::mem::replace(
            &mut self.channel,
            tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy(),
        ));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        if tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .is_err()
        {
            eprintln!("a server did not stop within 15 s");
        }
    }
}

impl Drop for Instance {
    /// Asks the server to stop; it drains and ends its own tasks. (Aborting
    /// it would leave its storage watcher and change listener running.)
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The victim's own questions, asked with its own key.
#[derive(Clone, Debug)]
pub struct Battery {
    pub key: String,
    pub checks: Vec<(String, pb::CheckRequest)>,
    /// A few of the checks, asked after every method.
    pub quick: Vec<(String, pb::CheckRequest)>,
    pub listings: Vec<(String, pb::ListPrincipalPermissionsRequest)>,
}

/// The answers of a battery, by question.
pub type Answers = BTreeMap<String, String>;

impl Battery {
    /// Asks every question of the battery on `channel`.
    pub async fn ask(&self, channel: &Channel) -> Answers {
        let mut client = CheckServiceClient::new(channel.clone());
        let mut out = Answers::new();
        fn bearer<T>(msg: T, key: &str) -> Request<T> {
            let mut r = Request::new(msg);
            if let Ok(v) = AsciiMetadataValue::try_from(format!("Bearer {key}")) {
                r.metadata_mut().insert("authorization", v);
            }
            r
        }
        for (label, q) in &self.checks {
            let answer = match client.check(bearer(q.clone(), &self.key)).await {
                Ok(r) => format!("{:?}", r.into_inner().decision()),
                Err(s) => format!("error {:?}", s.code()),
            };
            out.insert(label.clone(), answer);
        }
        for (label, q) in &self.listings {
            let answer = match client
                .list_principal_permissions(bearer(q.clone(), &self.key))
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    let mut entries: Vec<String> = r
                        .entries
                        .iter()
                        .map(|e| {
                            let mut p = e.permissions.clone();
                            p.sort();
                            format!("{:?}: {}", e.scope, p.join(" "))
                        })
                        .collect();
                    entries.sort();
                    format!("org_admin={} {}", r.org_admin, entries.join(" | "))
                }
                Err(s) => format!("error {:?}", s.code()),
            };
            out.insert(label.clone(), answer);
        }
        out
    }
}

impl Battery {
    /// The answers to the battery's `quick` Checks in one BatchCheck: enough
    /// to see a wrong resolved set or wrong registered tags.
    pub async fn quick(&self, channel: &Channel) -> Vec<(String, String)> {
        let mut client = CheckServiceClient::new(channel.clone());
        let mut r = Request::new(pb::BatchCheckRequest {
            checks: self.quick.iter().map(|(_, q)| q.clone()).collect(),
        });
        if let Ok(v) = AsciiMetadataValue::try_from(format!("Bearer {}", self.key)) {
            r.metadata_mut().insert("authorization", v);
        }
        let answers: Vec<String> = match client.batch_check(r).await {
            Ok(r) => r
                .into_inner()
                .results
                .iter()
                .map(|x| format!("{:?} {}", x.decision(), x.error).trim().to_owned())
                .collect(),
            Err(s) => vec![format!("error {:?}", s.code()); self.quick.len()],
        };
        self.quick
            .iter()
            .map(|(q, _)| q.clone())
            .zip(answers)
            .collect()
    }
}

/// The questions whose answers differ: (question, before, after).
pub fn differences(before: &Answers, after: &Answers) -> Vec<(String, String, String)> {
    before
        .iter()
        .filter_map(|(q, b)| {
            let a = after.get(q).cloned().unwrap_or_default();
            (a != *b).then(|| (q.clone(), b.clone(), a))
        })
        .collect()
}
