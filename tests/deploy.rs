//! Offline checks of `deploy/`: the Kubernetes manifests pass strict schema
//! validation (`kubernetes-validate`, which bundles the Kubernetes JSON
//! schemas), the Deployment, Service, PodDisruptionBudget, autoscaler, compose
//! file and Dockerfile are wired together as documented, and every flag and
//! `PORTCULLIS_*` variable they use is one the built binary accepts, with
//! values it parses.
//!
//! Needs `python3` with PyYAML and `kubernetes-validate`
//! (`python3 -m pip install kubernetes-validate`); `PORTCULLIS_KUBERNETES_VALIDATE`
//! may name its executable. Without them the tests fail; they never skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
/// The Kubernetes version the manifests are validated against: an older
/// minor, so clusters that lag behind are covered, that has every field they
/// use (native gRPC probes, `unhealthyPodEvictionPolicy`, `matchLabelKeys`).
const KUBERNETES_VERSION: &str = "1.30.0";
const IMAGE: &str = "ghcr.io/portcullis/portcullis:0.1.0";
const INSTALL_HINT: &str = "install it with `python3 -m pip install kubernetes-validate`, \
     or set PORTCULLIS_KUBERNETES_VALIDATE to the path of its executable";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

fn kubernetes_dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn stdout_and_stderr(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "portcullis-deploy-{label}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// YAML, through PyYAML (a dependency of kubernetes-validate).

/// Every YAML document of every file, parsed by PyYAML and handed over as JSON
/// (YAML 1.1, as PyYAML reads it; merge keys `<<` are resolved).
fn yaml_documents(paths: &[PathBuf]) -> Vec<Vec<Value>> {
    const SCRIPT: &str = "import json, sys\n\
        try:\n    import yaml\n\
        except ImportError:\n    sys.exit('PyYAML is missing: python3 -m pip install kubernetes-validate (it depends on PyYAML)')\n\
        out = []\n\
        for p in sys.argv[1:]:\n\
        \x20   with open(p) as f:\n\
        \x20       out.append([d for d in yaml.safe_load_all(f) if d is not None])\n\
        json.dump(out, sys.stdout)\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args(paths)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 to read YAML: {e}"));
    assert!(
        out.status.success(),
        "python3 could not parse {paths:?} as YAML:\n{}",
        stdout_and_stderr(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn yaml_file(path: &Path) -> Vec<Value> {
    yaml_documents(&[path.to_path_buf()]).remove(0)
}

/// The Kubernetes manifests (not the Kustomization), in name order.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(kubernetes_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml"
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in deploy/kubernetes");
    files
}

/// Every resource of every manifest, keyed by kind (one resource per kind).
fn resources() -> BTreeMap<String, Value> {
    let mut by_kind = BTreeMap::new();
    for (path, docs) in manifest_files()
        .iter()
        .zip(yaml_documents(&manifest_files()))
    {
        for doc in docs {
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a document without kind", path.display()))
                .to_owned();
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{}: {kind} sets a namespace; the manifests are namespace-agnostic",
                path.display()
            );
            let previous = by_kind.insert(kind.clone(), doc);
            assert!(previous.is_none(), "two resources of kind {kind}");
        }
    }
    by_kind
}

fn resource<'a>(all: &'a BTreeMap<String, Value>, kind: &str) -> &'a Value {
    all.get(kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/kubernetes"))
}

// ---------------------------------------------------------------------------
// kubernetes-validate.

/// The command that runs kubernetes-validate: $PORTCULLIS_KUBERNETES_VALIDATE
/// if set, else `kubernetes-validate` on PATH, else `python3 -m kubernetes_validate`.
fn validator() -> &'static [String] {
    static VALIDATOR: OnceLock<Vec<String>> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let candidates: Vec<Vec<String>> = match std::env::var("PORTCULLIS_KUBERNETES_VALIDATE") {
            Ok(path) if !path.is_empty() => vec![vec![path]],
            _ => vec![
                vec!["kubernetes-validate".into()],
                vec!["python3".into(), "-m".into(), "kubernetes_validate".into()],
            ],
        };
        let mut tried = Vec::new();
        for candidate in &candidates {
            match Command::new(&candidate[0])
                .args(&candidate[1..])
                .arg("--version")
                .output()
            {
                Ok(out) if out.status.success() => return candidate.clone(),
                Ok(out) => tried.push(format!(
                    "`{} --version` exited with {}: {}",
                    candidate.join(" "),
                    out.status,
                    stdout_and_stderr(&out).trim()
                )),
                Err(e) => tried.push(format!("`{}`: {e}", candidate.join(" "))),
            }
        }
        panic!(
            "kubernetes-validate is required to validate deploy/kubernetes and was not found; \
             {INSTALL_HINT}.\nTried:\n  {}",
            tried.join("\n  ")
        )
    })
}

/// Validates one file in strict mode (unknown fields are errors). Ok only if
/// the validator exits 0, warns about nothing (an unknown kind or apiVersion is
/// only a warning to it) and reports `documents` resources as passed.
fn validate(path: &Path, documents: usize) -> Result<String, String> {
    let cmd = validator();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(path)
        .output()
        .unwrap();
    let text = stdout_and_stderr(&out);
    let passed = text.matches("passed for resource").count();
    if out.status.success()
        && !text.contains("WARN")
        && !text.contains("ERROR")
        && passed == documents
    {
        Ok(text)
    } else {
        Err(format!(
            "exit {}, {passed} of {documents} resources passed:\n{text}",
            out.status
        ))
    }
}

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let files = manifest_files();
    let docs = yaml_documents(&files);
    let mut failures = Vec::new();
    for (path, docs) in files.iter().zip(docs) {
        if let Err(e) = validate(path, docs.len()) {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "manifests fail validation against Kubernetes {KUBERNETES_VERSION}:\n{}",
        failures.join("\n")
    );
}

#[test]
fn schema_validation_rejects_broken_manifests() {
    let tmp = TempDir::new("broken");
    let deployment = read(&kubernetes_dir().join("deployment.yaml"));
    assert!(deployment.contains("replicas: 2"));
    // (file, content, a word the rejection must name)
    let cases = [
        (
            "replicas-is-a-string.yaml",
            deployment.replace("replicas: 2", "replicas: \"two\""),
            "spec.replicas",
        ),
        (
            "unknown-field.yaml",
            deployment.replace("replicas: 2", "replicas: 2\n  replicaz: 2"),
            "replicaz",
        ),
        (
            "unknown-kind.yaml",
            "apiVersion: v1\nkind: Deploymint\nmetadata:\n  name: portcullis\n".to_owned(),
            "Deploymint",
        ),
        (
            "probe-port-is-a-list.yaml",
            deployment.replacen("port: 50051", "port: [50051]", 1),
            "startupProbe.grpc.port",
        ),
    ];
    for (name, text, reason) in cases {
        let path = tmp.0.join(name);
        fs::write(&path, text).unwrap();
        match validate(&path, 1) {
            Ok(out) => panic!("{name} should be rejected, but validation passed:\n{out}"),
            Err(e) => assert!(
                e.contains(reason),
                "{name} rejected, but not for {reason}: {e}"
            ),
        }
    }
    // And the unchanged copy passes, so the rejections above are the edits'.
    let path = tmp.0.join("unchanged.yaml");
    fs::write(&path, &deployment).unwrap();
    validate(&path, 1).unwrap();
}

#[test]
fn kustomization_lists_every_manifest_but_the_secret_example() {
    let kustomization = yaml_file(&kubernetes_dir().join("kustomization.yaml")).remove(0);
    assert_eq!(kustomization["kind"], "Kustomization");
    assert!(
        kustomization.get("namespace").is_none(),
        "the kustomization must stay namespace-agnostic"
    );
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("kustomization.yaml has resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| !name.contains(".example."))
        .collect();
    assert_eq!(listed, expected);
    // The secret example is a placeholder, never applied by `kubectl apply -k`.
    let secret = &resources()["Secret"];
    let url = secret["stringData"]["database-url"].as_str().unwrap();
    assert!(
        url.contains("CHANGE-ME"),
        "the example secret must be an obvious placeholder"
    );
}

// ---------------------------------------------------------------------------
// Structure of the Kubernetes manifests.

fn port_of(address: &str) -> u64 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("`{address}` has no port"))
}

/// `500ms`, `10s`, `2m` or bare seconds, as the server parses durations.
fn duration(s: &str) -> Duration {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .unwrap_or_else(|_| panic!("`{s}` is not a duration"));
    match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => panic!("`{s}`: unknown unit"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// `selector` (a label map) selects pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn deployment_migrates_in_an_init_container_and_probes_grpc_health() {
    let all = resources();
    let deployment = resource(&all, "Deployment");
    let config = resource(&all, "ConfigMap");
    let secret = resource(&all, "Secret");
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(spec["replicas"], 2);
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels));

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let server = &containers[0];
    let inits = pod["initContainers"].as_array().expect("an init container");
    let migrate = inits
        .iter()
        .find(|c| strings(&c["args"]) == ["migrate"])
        .expect("an init container whose args are [migrate]");
    assert!(
        migrate.get("command").is_none(),
        "the image's entrypoint runs"
    );

    // Same image and configuration for the migration and the server.
    assert_eq!(server["image"], IMAGE);
    assert_eq!(migrate["image"], server["image"]);
    assert_eq!(migrate["env"], server["env"]);
    assert_eq!(migrate["envFrom"], server["envFrom"]);
    assert_eq!(
        server["envFrom"],
        json!([{"configMapRef": {"name": config["metadata"]["name"]}}])
    );
    let db = server["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "PORTCULLIS_DATABASE_URL")
        .expect("PORTCULLIS_DATABASE_URL in env");
    let secret_ref = &db["valueFrom"]["secretKeyRef"];
    assert_eq!(secret_ref["name"], secret["metadata"]["name"]);
    let key = secret_ref["key"].as_str().unwrap();
    assert!(
        secret["stringData"].get(key).is_some(),
        "the Secret example has key {key}"
    );

    // The server serves without migrating.
    assert!(
        server.get("command").is_none(),
        "the image's entrypoint runs"
    );
    let args = strings(&server["args"]);
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    let no_migrate = args.iter().any(|a| a == "--no-migrate")
        || config["data"]["PORTCULLIS_NO_MIGRATE"] == "true";
    assert!(
        no_migrate,
        "the server must run with --no-migrate: {args:?}"
    );

    // Ports, and the addresses the server listens on.
    let ports = server["ports"].as_array().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let (grpc, metrics) = (port("grpc"), port("metrics"));
    assert_eq!((grpc, metrics), (50051, 9090));
    let data = &config["data"];
    assert_eq!(port_of(data["PORTCULLIS_LISTEN"].as_str().unwrap()), grpc);
    assert_eq!(
        port_of(data["PORTCULLIS_METRICS_LISTEN"].as_str().unwrap()),
        metrics
    );
    assert!(
        data["PORTCULLIS_LISTEN"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0:")
    );
    assert!(
        data["PORTCULLIS_METRICS_LISTEN"]
            .as_str()
            .unwrap()
            .starts_with("0.0.0.0:")
    );

    // Native gRPC probes on the gRPC port: readiness and start-up with the
    // whole-server name "" (follows storage), liveness with `liveness` (does not).
    for (probe, want) in [
        ("livenessProbe", "liveness"),
        ("readinessProbe", ""),
        ("startupProbe", ""),
    ] {
        let grpc_probe = &server[probe]["grpc"];
        assert_eq!(
            grpc_probe["port"], grpc,
            "{probe} must be a grpc probe on {grpc}"
        );
        let service = grpc_probe
            .get("service")
            .and_then(Value::as_str)
            .unwrap_or("");
        assert_eq!(service, want, "{probe}: health service");
    }

    // Shutdown: the pod's grace covers the preStop pause and the server's drain.
    let drain = duration(data["PORTCULLIS_SHUTDOWN_GRACE"].as_str().unwrap_or("10s"));
    let pause = match strings(&server["lifecycle"]["preStop"]["exec"]["command"]).as_slice() {
        [sleep, secs] if sleep == "sleep" => duration(secs),
        [] => Duration::ZERO,
        other => panic!("unexpected preStop command {other:?}"),
    };
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        grace > drain + pause,
        "terminationGracePeriodSeconds {grace:?} must exceed the drain {drain:?} plus preStop {pause:?}"
    );

    // Hardening and resources, for every container.
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert!(pod_security["runAsUser"].as_u64().unwrap() > 0);
    for c in inits.iter().chain(containers) {
        let name = &c["name"];
        let security = &c["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        for bound in ["requests", "limits"] {
            for res in ["cpu", "memory"] {
                assert!(
                    c["resources"][bound].get(res).is_some(),
                    "{name}: resources.{bound}.{res}"
                );
            }
        }
    }

    // Prometheus scraping of the metrics port.
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], metrics.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    // Replicas spread over zones and nodes.
    let spread = pod["topologySpreadConstraints"].as_array().unwrap();
    let keys: BTreeSet<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert!(keys.contains("topology.kubernetes.io/zone"));
    assert!(keys.contains("kubernetes.io/hostname"));
    for c in spread {
        assert!(selects(&c["labelSelector"]["matchLabels"], pod_labels));
    }
}

#[test]
fn service_budget_and_autoscaler_target_the_deployment() {
    let all = resources();
    let deployment = resource(&all, "Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let server = &deployment["spec"]["template"]["spec"]["containers"][0];
    let container_ports: BTreeMap<&str, &Value> = server["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), &p["containerPort"]))
        .collect();

    let service = resource(&all, "Service");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let ports = service["spec"]["ports"].as_array().unwrap();
    let grpc = ports
        .iter()
        .find(|p| p["name"] == "grpc")
        .expect("a grpc service port");
    assert_eq!(grpc["appProtocol"], "grpc");
    assert_eq!(grpc["port"], 50051);
    assert!(ports.iter().any(|p| p["name"] == "metrics"));
    for p in ports {
        let target = &p["targetPort"];
        let resolves = match target.as_str() {
            Some(name) => container_ports.contains_key(name),
            None => container_ports.values().any(|c| *c == target),
        };
        assert!(
            resolves,
            "service port {} targets {target}, no container port",
            p["name"]
        );
    }

    let pdb = resource(&all, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let hpa = resource(&all, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 10);
    let cpu = hpa["spec"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
        .expect("a CPU metric");
    assert_eq!(
        cpu["resource"]["target"],
        json!({"type": "Utilization", "averageUtilization": 70})
    );
    // Utilization is relative to the request, so the server must have one.
    assert!(server["resources"]["requests"].get("cpu").is_some());
}

// ---------------------------------------------------------------------------
// Compose.

fn compose() -> Value {
    yaml_file(&deploy_dir().join("compose.yaml")).remove(0)
}

/// A compose `environment` as a map, whether written as a map or a list.
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .map(|e| {
                let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("unexpected environment {other}"),
    }
}

/// `HOST:CONTAINER` port mappings as numbers.
fn compose_ports(service: &Value) -> Vec<(u64, u64)> {
    service["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            // Unquoted `9090:9090` is a base-60 integer to YAML 1.1 readers.
            let p = p
                .as_str()
                .unwrap_or_else(|| panic!("port {p} must be a quoted string"));
            let (host, container) = p.rsplit_once(':').unwrap();
            (port_of(host), container.parse().unwrap())
        })
        .collect()
}

#[test]
fn compose_runs_postgres_a_migration_and_two_replicas() {
    let file = compose();
    let services = file["services"].as_object().unwrap();

    let postgres = &services["postgres"];
    assert!(
        postgres["image"]
            .as_str()
            .unwrap()
            .starts_with("postgres:15")
    );
    assert!(
        strings(&postgres["healthcheck"]["test"])
            .iter()
            .any(|t| t.contains("pg_isready")),
        "postgres needs a pg_isready healthcheck"
    );

    let migrate = &services["migrate"];
    assert_eq!(strings(&migrate["command"]), ["migrate"]);
    assert_eq!(
        migrate["depends_on"]["postgres"]["condition"],
        "service_healthy"
    );

    let replicas: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| strings(&s["command"]).first().map(String::as_str) == Some("serve"))
        .collect();
    let names: Vec<&str> = replicas.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["portcullis-a", "portcullis-b"]);
    assert_eq!(services.len(), 4, "postgres, migrate and two replicas");

    let url = "postgres://portcullis:portcullis@postgres:5432/portcullis";
    let mut host_ports = BTreeSet::new();
    for (name, s) in &replicas {
        assert!(
            strings(&s["command"]).contains(&"--no-migrate".to_owned()),
            "{name} must not migrate"
        );
        assert_eq!(
            s["depends_on"]["migrate"]["condition"], "service_completed_successfully",
            "{name}"
        );
        let env = compose_env(s);
        assert_eq!(env["PORTCULLIS_DATABASE_URL"], url, "{name}");
        let grpc = port_of(&env["PORTCULLIS_LISTEN"]);
        let metrics = port_of(&env["PORTCULLIS_METRICS_LISTEN"]);
        let ports = compose_ports(s);
        assert_eq!(ports.len(), 2, "{name}: a gRPC and a metrics port");
        assert!(
            ports.iter().any(|(_, c)| *c == grpc),
            "{name} publishes {grpc}"
        );
        assert!(
            ports.iter().any(|(_, c)| *c == metrics),
            "{name} publishes {metrics}"
        );
        host_ports.extend(ports.iter().map(|(h, _)| *h));
        assert_eq!(
            strings(&s["healthcheck"]["test"]),
            [
                "CMD",
                "portcullis",
                "health",
                "--addr",
                &format!("127.0.0.1:{grpc}")
            ],
            "{name}: health check through the binary's grpc.health.v1 client"
        );
        let stop = duration(s["stop_grace_period"].as_str().unwrap_or("10s"));
        assert!(
            stop > Duration::from_secs(10),
            "{name}: stop_grace_period must exceed the 10s drain"
        );
    }
    assert_eq!(host_ports, BTreeSet::from([9090, 9091, 50051, 50052]));
    assert_eq!(compose_env(migrate)["PORTCULLIS_DATABASE_URL"], url);

    // One image, built from the repository root with deploy/Dockerfile.
    for name in ["migrate", "portcullis-a", "portcullis-b"] {
        let s = &services[name];
        assert_eq!(s["image"], IMAGE, "{name}");
        let context = deploy_dir().join(s["build"]["context"].as_str().unwrap());
        assert_eq!(
            context.canonicalize().unwrap(),
            repo().canonicalize().unwrap()
        );
        assert_eq!(s["build"]["dockerfile"], "deploy/Dockerfile", "{name}");
    }
}

// ---------------------------------------------------------------------------
// Dockerfile.

/// Instructions as (KEYWORD, rest), with continuations joined and comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&deploy_dir().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(char::is_whitespace).unwrap();
        out.push((keyword.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    out
}

/// `KEY=VALUE ...` pairs of an ENV instruction (values without spaces).
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    rest.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("ENV KEY=VALUE");
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

#[test]
fn dockerfile_builds_the_binary_and_runs_it_unprivileged() {
    let instructions = dockerfile();
    let stages: Vec<&str> = instructions
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, rest)| rest.as_str())
        .collect();
    assert_eq!(stages.len(), 2, "a builder and a runtime stage: {stages:?}");
    assert!(stages[0].starts_with("rust:1.95-bookworm"), "{}", stages[0]);
    let runtime = stages[1].split_whitespace().next().unwrap();
    assert!(
        runtime == "debian:bookworm-slim" || runtime.starts_with("gcr.io/distroless/cc"),
        "{runtime}"
    );
    let builder_end = instructions.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let (builder, final_stage) = instructions.split_at(builder_end);

    assert!(
        builder
            .iter()
            .any(|(k, r)| k == "RUN"
                && r.contains("cargo build --release --locked --bin portcullis")),
        "the builder runs cargo build --release --locked --bin portcullis"
    );

    // Everything the build reads is copied in, and exists.
    let mut copied = Vec::new();
    for (_, rest) in builder.iter().filter(|(k, _)| k == "COPY") {
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repository"
            );
            copied.push(repo().join(source));
        }
    }
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(repo().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        stdout_and_stderr(&out)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut needed = vec![repo().join("Cargo.toml"), repo().join("Cargo.lock")];
    for target in metadata["packages"][0]["targets"].as_array().unwrap() {
        // Tests and examples are found by directory; a missing one is not an error.
        let kinds = strings(&target["kind"]);
        if kinds.iter().all(|k| k == "test" || k == "example") {
            continue;
        }
        needed.push(PathBuf::from(target["src_path"].as_str().unwrap()));
    }
    needed.push(repo().join("proto"));
    for path in needed {
        assert!(
            copied.iter().any(|c| path.starts_with(c)),
            "{} is needed by the build but not copied into the builder",
            path.display()
        );
    }

    let get = |keyword: &str| -> Vec<&str> {
        final_stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, r)| r.as_str())
            .collect()
    };
    let user = get("USER").last().copied().expect("a USER");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER, so runAsNonRoot can be verified");
    assert!(uid > 0, "the image must not run as root");
    let exposed: BTreeSet<&str> = get("EXPOSE")
        .iter()
        .flat_map(|r| r.split_whitespace())
        .collect();
    assert_eq!(exposed, BTreeSet::from(["50051", "9090"]));
    assert_eq!(get("ENTRYPOINT"), [r#"["portcullis"]"#]);
    assert_eq!(get("CMD"), [r#"["serve"]"#]);
    let env: BTreeMap<String, String> = get("ENV").iter().flat_map(|r| env_pairs(r)).collect();
    assert_eq!(env["PORTCULLIS_LISTEN"], "0.0.0.0:50051");
    assert_eq!(env["PORTCULLIS_METRICS_LISTEN"], "0.0.0.0:9090");
    assert_eq!(env["PORTCULLIS_LOG_FORMAT"], "json");
    if runtime.starts_with("debian") {
        assert!(
            get("RUN").iter().any(|r| r.contains("ca-certificates")),
            "the runtime installs ca-certificates"
        );
    }
}

// ---------------------------------------------------------------------------
// Flags, variables and values against the binary.

/// How each container or service runs the binary: its arguments and environment.
struct Invocation {
    origin: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn invocations() -> Vec<Invocation> {
    let mut out = Vec::new();

    let all = resources();
    let config: BTreeMap<String, String> = resource(&all, "ConfigMap")["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let pod = &resource(&all, "Deployment")["spec"]["template"]["spec"];
    let containers = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap());
    for c in containers {
        let mut env = config.clone();
        for e in c["env"].as_array().unwrap() {
            let value = e["value"].as_str().unwrap_or("<from a secret>");
            env.insert(e["name"].as_str().unwrap().to_owned(), value.to_owned());
        }
        let mut args = strings(&c["command"]);
        args.extend(strings(&c["args"]));
        out.push(Invocation {
            origin: format!("deployment.yaml container {}", c["name"]),
            args,
            env,
        });
    }

    let file = compose();
    for (name, s) in file["services"].as_object().unwrap() {
        if s["image"] != IMAGE {
            continue;
        }
        out.push(Invocation {
            origin: format!("compose.yaml service {name}"),
            args: strings(&s["command"]),
            env: compose_env(s),
        });
    }

    let instructions = dockerfile();
    let env = instructions
        .iter()
        .filter(|(k, _)| k == "ENV")
        .flat_map(|(_, r)| env_pairs(r))
        .collect();
    let cmd = instructions
        .iter()
        .rfind(|(k, _)| k == "CMD")
        .map(|(_, r)| serde_json::from_str::<Vec<String>>(r).unwrap())
        .unwrap();
    out.push(Invocation {
        origin: "Dockerfile CMD".into(),
        args: cmd,
        env,
    });
    out
}

/// Runs the binary with no `PORTCULLIS_*` variable of the caller's.
fn portcullis(args: &[&str], env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env);
    cmd.stdin(Stdio::null());
    cmd
}

fn help(args: &[&str]) -> String {
    let out = portcullis(args, &BTreeMap::new()).output().unwrap();
    assert!(
        out.status.success(),
        "portcullis {args:?}: {}",
        stdout_and_stderr(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `word` occurs in `text` not as part of a longer flag or variable name.
fn has_word(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(is_name)
    })
}

/// Every `PORTCULLIS_*` name in `text`.
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("PORTCULLIS_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        // `PORTCULLIS_*` stands for all of them.
        let name = name.trim_end_matches('_');
        if name.len() > "PORTCULLIS".len() {
            names.insert(name.to_owned());
        }
    }
    names
}

/// `--flag` tokens of an argument list, without `=value`.
fn flags(args: &[String]) -> Vec<String> {
    args.iter()
        .filter(|a| a.starts_with("--") && a.len() > 2)
        .map(|a| a.split('=').next().unwrap().to_owned())
        .collect()
}

/// Flags named in the deploy README: inline code spans that start with `--`,
/// and the arguments of `portcullis ...` command lines in code blocks.
fn readme_flags() -> BTreeSet<String> {
    let text = read(&deploy_dir().join("README.md"));
    let mut out = BTreeSet::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if let Some(at) = words.iter().position(|w| w == "portcullis") {
                out.extend(flags(&words[at + 1..]));
            }
        } else {
            for (n, span) in line.split('`').enumerate() {
                if n % 2 == 1 && span.starts_with("--") {
                    let first = span.split_whitespace().next().unwrap().to_owned();
                    out.extend(flags(&[first]));
                }
            }
        }
    }
    out
}

#[test]
fn every_flag_and_variable_in_deploy_is_accepted_by_the_binary() {
    let top = help(&["--help"]);
    let mut by_command = BTreeMap::new();
    for sub in ["serve", "migrate", "bootstrap"] {
        by_command.insert(sub, help(&[sub, "--help"]));
    }
    let everything = format!(
        "{top}\n{}",
        by_command.values().cloned().collect::<Vec<_>>().join("\n")
    );
    // The checks below are not vacuous.
    assert!(has_word(&by_command["serve"], "--listen"));
    assert!(has_word(&everything, "PORTCULLIS_DATABASE_URL"));
    assert!(!has_word(&everything, "--no-such-flag"));
    assert!(!has_word(&everything, "PORTCULLIS_NO_SUCH_SETTING"));
    assert!(!has_word(&everything, "PORTCULLIS_DATABASE"));

    let mut problems = Vec::new();
    for inv in invocations() {
        let sub = inv.args.first().map(String::as_str).unwrap_or("");
        match by_command.get(sub) {
            Some(text) => {
                for flag in flags(&inv.args) {
                    if !has_word(text, &flag) {
                        problems.push(format!("{}: `portcullis {sub}` has no {flag}", inv.origin));
                    }
                }
            }
            None => problems.push(format!("{}: unknown command {:?}", inv.origin, inv.args)),
        }
    }
    for flag in readme_flags() {
        if !has_word(&everything, &flag) {
            problems.push(format!("deploy/README.md: portcullis has no {flag}"));
        }
    }

    // Every PORTCULLIS_* name written anywhere in deploy/.
    let mut files = vec![
        deploy_dir().join("Dockerfile"),
        deploy_dir().join("compose.yaml"),
        deploy_dir().join("README.md"),
        kubernetes_dir().join("kustomization.yaml"),
    ];
    files.extend(manifest_files());
    for file in files {
        for name in env_names(&read(&file)) {
            if !has_word(&everything, &name) {
                let shown = file.strip_prefix(repo()).unwrap().display().to_string();
                problems.push(format!("{shown}: portcullis does not read {name}"));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Runs the binary and waits at most `limit`; None if it had to be killed.
fn run_with_limit(mut cmd: Command, limit: Duration) -> Option<(i32, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut text = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            return Some((status.code().unwrap_or(-1), text));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The configured values parse: with the deploy files' arguments and
/// environment and an unusable database URL, the binary gets past argument
/// parsing (which exits 2 on a bad value) and fails opening the database,
/// before it listens on anything.
#[test]
fn configured_values_parse() {
    const BAD_DATABASE: &str = "nosuchdb://deploy-test/none";
    let attempt = |args: &[String], env: &BTreeMap<String, String>| {
        let mut env = env.clone();
        env.insert("PORTCULLIS_DATABASE_URL".into(), BAD_DATABASE.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_with_limit(portcullis(&args, &env), Duration::from_secs(20))
    };
    let parsed = |result: &Option<(i32, String)>| matches!(result, Some((1, text)) if text.contains("cannot open the database"));

    let mut problems = Vec::new();
    for inv in invocations() {
        let result = attempt(&inv.args, &inv.env);
        if !parsed(&result) {
            problems.push(format!("{}: {:?} gave {result:?}", inv.origin, inv.args));
        }
    }
    // A bad value is told apart from a good one.
    let inv = invocations()
        .into_iter()
        .find(|i| i.args.first().map(String::as_str) == Some("serve"))
        .unwrap();
    let mut env = inv.env.clone();
    env.insert("PORTCULLIS_SHUTDOWN_GRACE".into(), "ten seconds".into());
    let bad = attempt(&inv.args, &env);
    assert!(
        matches!(&bad, Some((2, _))),
        "a bad value must fail argument parsing: {bad:?}"
    );
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}
