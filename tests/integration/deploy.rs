//! The manifests under deploy/: every kustomization renders with `kubectl kustomize` (those
//! tests are `#[ignore]`d so `cargo test` needs Rust alone; conformance/run includes them), every
//! object is valid for the Kubernetes schema of its kind (typed decode with k8s-openapi, unknown
//! or mistyped fields refused by comparing the re-serialized object with the input), and the
//! objects say what the service needs and no more: arguments and environment the binary
//! accepts, a hardened pod with probes on /readyz and /livez, two replicas and a PDB, exactly
//! the RBAC the code uses, an APIService for the group and version of the OpenAPI document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize DIR`, parsed. No kubectl: a loud failure, never a pass.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl").arg("kustomize").arg(dir).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `kubectl kustomize` ({e}): tests/integration/deploy.rs needs kubectl on PATH \
             (see https://kubernetes.io/docs/tasks/tools/; .ci/run requires it too)"
        )
    });
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", dir.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every directory under deploy/ with a kustomization.yaml.
fn kustomizations() -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![repo().join("deploy")];
    while let Some(d) = stack.pop() {
        if d.join("kustomization.yaml").is_file() {
            found.push(d.clone());
        }
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

fn name(dir: &Path) -> String {
    dir.strip_prefix(repo()).unwrap().display().to_string()
}

/// The paths where `input` has something `typed` (the same object after a typed decode and
/// re-serialization) has not: unknown fields, mistyped values.
fn lost(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                match b.get(k) {
                    Some(w) => lost(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                lost(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// Typed decode of a built-in kind; fails on anything the schema does not have.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) -> T {
    let id = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let decoded: T = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{id}: not a valid object: {e}"));
    let again = serde_json::to_value(&decoded).unwrap();
    let mut problems = vec![];
    lost(object, &again, "", &mut problems);
    assert!(problems.is_empty(), "{id}: fields the Kubernetes schema does not have (or mistyped): {problems:?}");
    decoded
}

/// A minimal structural check for kinds k8s-openapi does not have: required fields present,
/// every field known, with the right JSON type.
fn structural(object: &Value, spec: &[(&str, &str)], required: &[&str]) {
    let id = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let top: BTreeSet<&str> = object.as_object().unwrap().keys().map(String::as_str).collect();
    assert!(
        top.is_subset(&["apiVersion", "kind", "metadata", "spec"].into()),
        "{id}: unknown top-level fields {top:?}"
    );
    let meta: BTreeSet<&str> = object["metadata"].as_object().unwrap().keys().map(String::as_str).collect();
    assert!(meta.is_subset(&["name", "namespace", "labels", "annotations"].into()), "{id}: metadata {meta:?}");
    assert!(object["metadata"]["name"].is_string(), "{id}: no metadata.name");
    for (k, v) in object["spec"].as_object().unwrap_or_else(|| panic!("{id}: no spec")) {
        let (_, ty) = spec.iter().find(|(f, _)| f == k).unwrap_or_else(|| panic!("{id}: unknown field spec.{k}"));
        let ok = match *ty {
            "string" => v.is_string(),
            "integer" => v.is_i64(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string[]" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            other => panic!("bad type {other}"),
        };
        assert!(ok, "{id}: spec.{k} must be {ty}, is {v}");
    }
    for r in required {
        assert!(object["spec"].get(*r).is_some(), "{id}: spec.{r} is required");
    }
}

/// Objects of one rendering, by kind.
struct Rendered {
    dir: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }
    fn one(&self, kind: &str) -> &Value {
        let all = self.all(kind);
        assert_eq!(all.len(), 1, "{}: expected exactly one {kind}, found {}", self.dir, all.len());
        all[0]
    }
}

/// Every kustomization under deploy/, rendered by `kubectl kustomize`.
fn kustomized() -> Vec<Rendered> {
    let dirs = kustomizations();
    assert!(dirs.len() >= 3, "expected deploy/base and two overlays, found {dirs:?}");
    dirs.iter().map(|d| Rendered { dir: name(d), objects: kustomize(d) }).collect()
}

/// deploy/base without kubectl: its kustomization only lists files (no patches, no
/// transformers; checked here), so its objects are those files' documents.
fn base() -> Rendered {
    let dir = repo().join("deploy/base");
    let kustomization: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).unwrap();
    let keys: BTreeSet<&str> = kustomization.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["apiVersion", "kind", "resources"]),
        "deploy/base lists resources only; anything more needs `kubectl kustomize` to read"
    );
    let mut objects = vec![];
    for file in kustomization["resources"].as_array().unwrap() {
        let path = dir.join(file.as_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        objects.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    Rendered { dir: name(&dir), objects }
}

fn openapi() -> Value {
    serde_json::from_str(include_str!("../../openapi/kliocatalog.enterprisedb.io_v1alpha1.json")).unwrap()
}

fn every_object_is_valid_for_its_kind_in(renderings: &[Rendered]) {
    for r in renderings {
        assert!(!r.objects.is_empty(), "{}: renders nothing", r.dir);
        for o in &r.objects {
            let kind = (o["apiVersion"].as_str().unwrap_or_default(), o["kind"].as_str().unwrap_or_default());
            match kind {
                ("apps/v1", "Deployment") => drop(typed::<Deployment>(o)),
                ("v1", "Service") => drop(typed::<Service>(o)),
                ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(o)),
                ("rbac.authorization.k8s.io/v1", "Role") => drop(typed::<Role>(o)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(typed::<RoleBinding>(o)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(o)),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => drop(typed::<ClusterRoleBinding>(o)),
                ("policy/v1", "PodDisruptionBudget") => drop(typed::<PodDisruptionBudget>(o)),
                ("networking.k8s.io/v1", "NetworkPolicy") => drop(typed::<NetworkPolicy>(o)),
                ("apiregistration.k8s.io/v1", "APIService") => structural(
                    o,
                    &[
                        ("group", "string"),
                        ("version", "string"),
                        ("groupPriorityMinimum", "integer"),
                        ("versionPriority", "integer"),
                        ("service", "object"),
                        ("caBundle", "string"),
                        ("insecureSkipTLSVerify", "boolean"),
                    ],
                    &["groupPriorityMinimum", "versionPriority"],
                ),
                ("cert-manager.io/v1", "Issuer" | "ClusterIssuer") => {
                    structural(
                        o,
                        &[
                            ("selfSigned", "object"),
                            ("ca", "object"),
                            ("acme", "object"),
                            ("vault", "object"),
                            ("venafi", "object"),
                        ],
                        &[],
                    );
                    assert_eq!(
                        o["spec"].as_object().unwrap().len(),
                        1,
                        "{}: an Issuer has exactly one kind of issuer",
                        r.dir
                    );
                }
                ("cert-manager.io/v1", "Certificate") => {
                    structural(
                        o,
                        &[
                            ("secretName", "string"),
                            ("commonName", "string"),
                            ("dnsNames", "string[]"),
                            ("ipAddresses", "string[]"),
                            ("duration", "string"),
                            ("renewBefore", "string"),
                            ("privateKey", "object"),
                            ("usages", "string[]"),
                            ("issuerRef", "object"),
                            ("isCA", "boolean"),
                            ("secretTemplate", "object"),
                        ],
                        &["secretName", "issuerRef"],
                    );
                    let spec = &o["spec"];
                    for d in ["duration", "renewBefore"] {
                        if let Some(v) = spec[d].as_str() {
                            assert!(go_duration(v), "{}: Certificate spec.{d} {v:?} is not a Go duration", r.dir);
                        }
                    }
                    let usages = [
                        "signing",
                        "digital signature",
                        "content commitment",
                        "key encipherment",
                        "key agreement",
                        "data encipherment",
                        "cert sign",
                        "crl sign",
                        "encipher only",
                        "decipher only",
                        "any",
                        "server auth",
                        "client auth",
                        "code signing",
                        "email protection",
                        "s/mime",
                        "ipsec end system",
                        "ipsec tunnel",
                        "ipsec user",
                        "timestamping",
                        "ocsp signing",
                        "microsoft sgc",
                        "netscape sgc",
                    ];
                    for u in spec["usages"].as_array().into_iter().flatten() {
                        assert!(usages.contains(&u.as_str().unwrap()), "{}: unknown usage {u}", r.dir);
                    }
                    if let Some(pk) = spec["privateKey"].as_object() {
                        for (k, v) in pk {
                            match k.as_str() {
                                "algorithm" => assert!(
                                    ["RSA", "ECDSA", "Ed25519"].contains(&v.as_str().unwrap_or("")),
                                    "{}: {v}",
                                    r.dir
                                ),
                                "size" => assert!(v.is_i64(), "{}: privateKey.size", r.dir),
                                "rotationPolicy" => {
                                    assert!(["Never", "Always"].contains(&v.as_str().unwrap_or("")), "{}: {v}", r.dir)
                                }
                                "encoding" => {
                                    assert!(["PKCS1", "PKCS8"].contains(&v.as_str().unwrap_or("")), "{}: {v}", r.dir)
                                }
                                other => panic!("{}: unknown privateKey.{other}", r.dir),
                            }
                        }
                    }
                    let issuer = spec["issuerRef"].as_object().unwrap();
                    assert!(issuer["name"].is_string(), "{}: issuerRef.name", r.dir);
                    for k in issuer.keys() {
                        assert!(["name", "kind", "group"].contains(&k.as_str()), "{}: unknown issuerRef.{k}", r.dir);
                    }
                }
                other => panic!("{}: no schema check for {other:?}; add one to tests/integration/deploy.rs", r.dir),
            }
        }
    }
}

/// `2160h`, `90m`, `1h30m`, `10s` ...
fn go_duration(v: &str) -> bool {
    let mut rest = v;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"].iter().find(|u| rest.starts_with(**u)) else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The command line the container runs, the environment turned into flags: what the binary is
/// really started with must parse.
fn container_command_line(container: &k8s_openapi::api::core::v1::Container) -> Vec<String> {
    let cmd = klio_api::config::Cli::command();
    let mut all_args: Vec<clap::Arg> = vec![];
    fn collect(cmd: &clap::Command, out: &mut Vec<clap::Arg>) {
        out.extend(cmd.get_arguments().cloned());
        for s in cmd.get_subcommands() {
            collect(s, out);
        }
    }
    collect(&cmd, &mut all_args);
    let mut line = vec!["klio-api".to_string()];
    line.extend(container.command.iter().flatten().skip(1).cloned());
    line.extend(container.args.clone().unwrap_or_default());
    for env in container.env.iter().flatten() {
        if env.name == "TMPDIR" || env.name == "KLIO_API_LOG" {
            continue;
        }
        let arg = all_args
            .iter()
            .find(|a| a.get_env().is_some_and(|e| e == env.name.as_str()))
            .unwrap_or_else(|| panic!("the Deployment sets {} but no flag of klio-api reads it", env.name));
        let value =
            env.value.clone().unwrap_or_else(|| panic!("{}: valueFrom is not used by these manifests", env.name));
        line.push(format!("--{}={value}", arg.get_long().unwrap()));
    }
    line
}

fn the_deployment_runs_the_binary_hardened_with_probes_and_two_replicas_in(renderings: &[Rendered]) {
    for r in renderings {
        let d: Deployment = typed(r.one("Deployment"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2), "{}: two replicas keep the APIService available", r.dir);
        let strategy = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).expect("a rolling update");
        assert_eq!(
            strategy.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)),
            "{}: a rollout must not take a ready pod first",
            r.dir
        );
        let template = &spec.template;
        let pod_labels = template.metadata.as_ref().unwrap().labels.clone().unwrap_or_default();
        let pod = template.spec.as_ref().unwrap();
        assert_eq!(pod.containers.len(), 1, "{}", r.dir);
        let c = &pod.containers[0];

        // The binary accepts its command line and environment, and the configuration resolves.
        let line = container_command_line(c);
        let cli = klio_api::config::Cli::try_parse_from(&line)
            .unwrap_or_else(|e| panic!("{}: klio-api does not accept {line:?}:\n{e}", r.dir));
        let klio_api::config::Command::Server { which: klio_api::config::ServerCommand::ApiServer(args) } = cli.command
        else {
            panic!("{}: the container does not run `server api-server`: {line:?}", r.dir)
        };
        let servers = args.klio.resolve().unwrap_or_else(|e| panic!("{}: {e:#}", r.dir));
        assert_eq!(servers.len(), 1, "{}", r.dir);

        // Every file the configuration names is on a read-only Secret mount.
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        let volumes = pod.volumes.clone().unwrap_or_default();
        let mut files =
            vec![servers[0].server_cert.clone(), servers[0].client_cert.clone(), servers[0].client_key.clone()];
        files.extend(args.tls_cert_file.clone());
        files.extend(args.tls_private_key_file.clone());
        assert_eq!(files.len(), 5, "{}: a serving certificate and key must be configured", r.dir);
        let keys = [servers[0].client_key.clone(), args.tls_private_key_file.clone().unwrap()];
        for f in files {
            let mount = mounts
                .iter()
                .find(|m| f.starts_with(&m.mount_path))
                .unwrap_or_else(|| panic!("{}: {} is on no volume mount", r.dir, f.display()));
            assert_eq!(mount.read_only, Some(true), "{}: {} is mounted writable", r.dir, mount.mount_path);
            let volume = volumes.iter().find(|v| v.name == mount.name).expect("the mount's volume");
            assert!(volume.secret.is_some(), "{}: {} is not from a Secret", r.dir, f.display());
            if keys.contains(&f) {
                // Not world-readable (klio-api warns about such keys), yet readable by the pod's
                // non-root user through its fsGroup.
                let mode = volume.secret.as_ref().unwrap().default_mode.unwrap_or(0o644);
                assert_eq!(mode & 0o007, 0, "{}: {} is readable by others (mode {mode:o})", r.dir, f.display());
                assert_ne!(mode & 0o040, 0, "{}: {} is not group-readable (mode {mode:o})", r.dir, f.display());
                let fs_group = pod.security_context.as_ref().and_then(|s| s.fs_group);
                assert!(fs_group.is_some(), "{}: no fsGroup: the non-root user could not read {}", r.dir, f.display());
            }
        }

        // The port: the one the server listens on, named for the probes and the Service.
        let port = c.ports.iter().flatten().find(|p| p.name.as_deref() == Some("https")).expect("a port named https");
        assert_eq!(
            i64::from(port.container_port),
            i64::from(args.secure_port),
            "{}: --secure-port vs containerPort",
            r.dir
        );

        // Probes.
        for (probe, path) in [(&c.readiness_probe, "/readyz"), (&c.liveness_probe, "/livez")] {
            let probe = probe.as_ref().unwrap_or_else(|| panic!("{}: no probe on {path}", r.dir));
            let get = probe.http_get.as_ref().expect("an HTTP probe");
            assert_eq!(get.path.as_deref(), Some(path), "{}", r.dir);
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"), "{}", r.dir);
            assert!(
                get.port == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into())
                    || get.port == k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.container_port),
                "{}: probe port {:?}",
                r.dir,
                get.port
            );
            assert!(
                args.auth.authorization_always_allow_paths.iter().any(|p| p == path),
                "{}: {path} needs credentials",
                r.dir
            );
        }
        let readiness = c.readiness_probe.as_ref().unwrap();
        assert!(readiness.period_seconds.unwrap_or(10) <= 5, "{}: readiness must be fast", r.dir);

        // Hardening.
        let psc = pod.security_context.clone().unwrap_or_default();
        let csc = c.security_context.clone().unwrap_or_default();
        assert_eq!(csc.run_as_non_root.or(psc.run_as_non_root), Some(true), "{}: runAsNonRoot", r.dir);
        assert_ne!(csc.run_as_user.or(psc.run_as_user), Some(0), "{}: runs as root", r.dir);
        assert_eq!(csc.read_only_root_filesystem, Some(true), "{}: readOnlyRootFilesystem", r.dir);
        assert_eq!(csc.allow_privilege_escalation, Some(false), "{}: allowPrivilegeEscalation", r.dir);
        assert_eq!(csc.privileged, None, "{}", r.dir);
        let caps = csc.capabilities.clone().unwrap_or_default();
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{}: capabilities must drop ALL", r.dir);
        assert_eq!(caps.add, None, "{}: no capability added", r.dir);
        let seccomp = csc.seccomp_profile.or(psc.seccomp_profile).expect("a seccomp profile");
        assert_eq!(seccomp.type_, "RuntimeDefault", "{}", r.dir);
        assert_ne!(pod.automount_service_account_token, Some(false), "{}: delegation needs the token", r.dir);
        assert_ne!(pod.host_network, Some(true), "{}", r.dir);

        // The PDB covers the pods and keeps one.
        let pdb: PodDisruptionBudget = typed(r.one("PodDisruptionBudget"));
        let pdb_spec = pdb.spec.unwrap();
        let selector = pdb_spec.selector.and_then(|s| s.match_labels).expect("a PDB selector");
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{}: the PDB selects other pods", r.dir);
        assert_eq!(
            pdb_spec.min_available,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            "{}: the PDB keeps one pod",
            r.dir
        );

        // The Service reaches the port; the ServiceAccount exists.
        let svc: Service = typed(r.one("Service"));
        let svc_spec = svc.spec.as_ref().unwrap();
        let selector = svc_spec.selector.clone().unwrap_or_default();
        assert!(!selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{}", r.dir);
        assert!(svc_spec.ports.iter().flatten().all(|p| p.target_port
            == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into()))
            || p.target_port
                == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.container_port))));
        let sa: ServiceAccount = typed(r.one("ServiceAccount"));
        assert_eq!(pod.service_account_name.as_deref(), sa.metadata.name.as_deref(), "{}", r.dir);
        assert_eq!(sa.metadata.namespace, d.metadata.namespace, "{}", r.dir);

        // The NetworkPolicy lets the aggregation layer and the probes in.
        for np in r.all("NetworkPolicy") {
            let np: NetworkPolicy = typed(np);
            let np_spec = np.spec.unwrap();
            let ingress = np_spec.ingress.unwrap_or_default();
            assert!(
                ingress.iter().any(|rule| rule.ports.iter().flatten().any(|p| p.port
                    == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port.container_port))
                    || p.port
                        == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("https".into())))),
                "{}: the NetworkPolicy blocks the HTTPS port",
                r.dir
            );
        }
    }
}

#[test]
fn the_dockerfile_command_is_accepted_by_the_binary() {
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let json_array = |prefix: &str| -> Vec<String> {
        let line =
            text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in the Dockerfile"));
        serde_json::from_str(line[prefix.len()..].trim())
            .unwrap_or_else(|e| panic!("{prefix} is not the exec form: {e}"))
    };
    let entrypoint = json_array("ENTRYPOINT");
    assert_eq!(entrypoint, ["/usr/local/bin/klio-api"]);
    let mut line = vec!["klio-api".to_string()];
    line.extend(json_array("CMD"));
    let cli = klio_api::config::Cli::try_parse_from(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert!(matches!(cli.command, klio_api::config::Command::Server { .. }));
    let user = text.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "the image runs as root: {user}");
}

/// A rule with its lists sorted: (apiGroups, resources, resourceNames, verbs).
type Rule = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);

fn rule_set(rules: &[PolicyRule]) -> Vec<Rule> {
    let sorted = |v: &Option<Vec<String>>| {
        let mut v = v.clone().unwrap_or_default();
        v.sort();
        v
    };
    rules
        .iter()
        .map(|r| {
            assert!(r.non_resource_urls.is_none(), "no non-resource URLs are needed");
            (sorted(&r.api_groups), sorted(&r.resources), sorted(&r.resource_names), sorted(&Some(r.verbs.clone())))
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn rbac_grants_exactly_what_the_code_uses_in(renderings: &[Rendered]) {
    let doc = openapi();
    let group = doc["x-klio-discovery"]["group"].as_str().unwrap();
    let resource = klio_api::routes::RESOURCES[0].name;
    for r in renderings {
        let sa: ServiceAccount = typed(r.one("ServiceAccount"));
        let (sa_name, sa_ns) = (sa.metadata.name.unwrap(), sa.metadata.namespace.unwrap());
        let is_sa = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            subjects
                .iter()
                .flatten()
                .any(|s| s.kind == "ServiceAccount" && s.name == sa_name && s.namespace.as_deref() == Some(&sa_ns))
        };

        // Role bindings of the service account: exactly one, to a Role in kube-system that reads
        // the one ConfigMap.
        let role_bindings: Vec<RoleBinding> = r.all("RoleBinding").into_iter().map(typed).collect();
        let ours: Vec<&RoleBinding> = role_bindings.iter().filter(|b| is_sa(&b.subjects)).collect();
        assert_eq!(ours.len(), 1, "{}: one RoleBinding for the service account", r.dir);
        let rb = ours[0];
        assert_eq!(rb.metadata.namespace.as_deref(), Some("kube-system"), "{}", r.dir);
        assert_eq!((rb.role_ref.kind.as_str(), rb.role_ref.api_group.as_str()), ("Role", "rbac.authorization.k8s.io"));
        let roles: Vec<Role> = r.all("Role").into_iter().map(typed).collect();
        assert_eq!(roles.len(), 1, "{}: one Role", r.dir);
        let role = &roles[0];
        assert_eq!(
            role.metadata.name.as_deref(),
            Some(rb.role_ref.name.as_str()),
            "{}: the binding names the Role",
            r.dir
        );
        assert_eq!(role.metadata.namespace.as_deref(), Some("kube-system"), "{}", r.dir);
        assert_eq!(
            rule_set(role.rules.as_deref().unwrap_or_default()),
            [(
                strings(&[""]),
                strings(&["configmaps"]),
                strings(&["extension-apiserver-authentication"]),
                strings(&["get"])
            )],
            "{}: the Role grants get on the one ConfigMap, nothing else",
            r.dir
        );

        // Cluster role bindings: exactly one, the service account to system:auth-delegator.
        let crbs: Vec<ClusterRoleBinding> = r.all("ClusterRoleBinding").into_iter().map(typed).collect();
        assert_eq!(crbs.len(), 1, "{}: one ClusterRoleBinding", r.dir);
        assert!(is_sa(&crbs[0].subjects), "{}", r.dir);
        assert_eq!(crbs[0].subjects.as_ref().unwrap().len(), 1, "{}", r.dir);
        assert_eq!(
            (crbs[0].role_ref.kind.as_str(), crbs[0].role_ref.name.as_str()),
            ("ClusterRole", "system:auth-delegator"),
            "{}",
            r.dir
        );

        // Cluster roles: one reading kliobackups, aggregated into view, edit and admin; one for
        // Prometheus allowing GET /metrics (to be bound to the scraper), nothing else.
        let crs: Vec<ClusterRole> = r.all("ClusterRole").into_iter().map(typed).collect();
        assert_eq!(crs.len(), 2, "{}: the reader and the metrics ClusterRoles", r.dir);
        let metrics: Vec<&ClusterRole> =
            crs.iter().filter(|c| c.rules.iter().flatten().any(|r| r.non_resource_urls.is_some())).collect();
        assert_eq!(metrics.len(), 1, "{}: one metrics reader", r.dir);
        let rules = metrics[0].rules.as_deref().unwrap_or_default();
        assert_eq!(rules.len(), 1, "{}", r.dir);
        assert_eq!(rules[0].non_resource_urls.as_deref(), Some(&["/metrics".to_string()][..]), "{}", r.dir);
        assert_eq!(rules[0].verbs, ["get"], "{}", r.dir);
        assert!(rules[0].resources.is_none() && rules[0].api_groups.is_none(), "{}", r.dir);
        let cr = crs.iter().find(|c| c.rules.iter().flatten().all(|r| r.non_resource_urls.is_none())).unwrap();
        assert!(cr.aggregation_rule.is_none());
        assert_eq!(
            rule_set(cr.rules.as_deref().unwrap_or_default()),
            [(strings(&[group]), strings(&[resource]), vec![], strings(&["get", "list", "watch"]))],
            "{}: the reader ClusterRole",
            r.dir
        );
        let labels = cr.metadata.labels.clone().unwrap_or_default();
        for role in ["view", "edit", "admin"] {
            assert_eq!(
                labels.get(&format!("rbac.authorization.k8s.io/aggregate-to-{role}")).map(String::as_str),
                Some("true"),
                "{}: the reader is aggregated into {role}",
                r.dir
            );
        }
    }
}

fn the_apiservice_registers_the_documents_group_with_a_ca_in(renderings: &[Rendered]) {
    let doc = openapi();
    let group = doc["x-klio-discovery"]["group"].as_str().unwrap();
    let version = doc["x-klio-discovery"]["version"].as_str().unwrap();
    assert_eq!(version, doc["info"]["version"].as_str().unwrap());
    for r in renderings {
        let api = r.one("APIService");
        assert_eq!(api["metadata"]["name"], format!("{version}.{group}"), "{}", r.dir);
        assert_eq!(api["spec"]["group"], group, "{}", r.dir);
        assert_eq!(api["spec"]["version"], version, "{}", r.dir);
        let min = api["spec"]["groupPriorityMinimum"].as_i64().unwrap();
        let prio = api["spec"]["versionPriority"].as_i64().unwrap();
        assert!((1..=20000).contains(&min) && (1..=1000).contains(&prio), "{}: priorities {min}, {prio}", r.dir);
        assert_ne!(api["spec"]["insecureSkipTLSVerify"], true, "{}: the kube-apiserver must verify the service", r.dir);

        let svc: Service = typed(r.one("Service"));
        let target = &api["spec"]["service"];
        for k in target.as_object().unwrap().keys() {
            assert!(["name", "namespace", "port"].contains(&k.as_str()), "{}: spec.service.{k}", r.dir);
        }
        assert_eq!(target["name"].as_str(), svc.metadata.name.as_deref(), "{}", r.dir);
        assert_eq!(target["namespace"].as_str(), svc.metadata.namespace.as_deref(), "{}", r.dir);
        let port = target["port"].as_i64().unwrap_or(443);
        assert!(
            svc.spec.unwrap().ports.unwrap().iter().any(|p| i64::from(p.port) == port),
            "{}: no Service port {port}",
            r.dir
        );

        // Where the CA comes from.
        let inject = api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str();
        let bundle = api["spec"]["caBundle"].as_str();
        let serving_secret = {
            let d: Deployment = typed(r.one("Deployment"));
            let pod = d.spec.unwrap().template.spec.unwrap();
            let c = &pod.containers[0];
            let env = c.env.clone().unwrap_or_default();
            let cert =
                env.iter().find(|e| e.name == "CLIENT_BASE_API_SERVER_CERTFILE").and_then(|e| e.value.clone()).unwrap();
            let mount = c.volume_mounts.clone().unwrap().into_iter().find(|m| cert.starts_with(&m.mount_path)).unwrap();
            let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == mount.name).unwrap();
            volume.secret.unwrap().secret_name.unwrap()
        };
        match (inject, bundle) {
            (Some(from), None) => {
                // The serving certificate (a CA certificate may issue it).
                let cert = *r
                    .all("Certificate")
                    .iter()
                    .find(|c| c["spec"]["secretName"].as_str() == Some(serving_secret.as_str()))
                    .unwrap_or_else(|| panic!("{}: no Certificate writes the Secret the pods serve", r.dir));
                let ns = cert["metadata"]["namespace"].as_str().unwrap();
                assert_eq!(from, format!("{ns}/{}", cert["metadata"]["name"].as_str().unwrap()), "{}", r.dir);
                assert_eq!(
                    cert["spec"]["secretName"].as_str(),
                    Some(serving_secret.as_str()),
                    "{}: the Certificate's Secret is not the one the pods serve",
                    r.dir
                );
                let dns: Vec<&str> =
                    cert["spec"]["dnsNames"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
                let svc_dns =
                    format!("{}.{}.svc", target["name"].as_str().unwrap(), target["namespace"].as_str().unwrap());
                assert!(dns.contains(&svc_dns.as_str()), "{}: the certificate lacks {svc_dns}", r.dir);
                let usages: Vec<&str> = cert["spec"]["usages"]
                    .as_array()
                    .map(|u| u.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                assert!(usages.is_empty() || usages.contains(&"server auth"), "{}: not a server certificate", r.dir);
                let issuer = &cert["spec"]["issuerRef"];
                let kind = issuer["kind"].as_str().unwrap_or("Issuer");
                assert!(
                    r.objects.iter().any(|o| o["kind"] == kind && o["metadata"]["name"] == issuer["name"]),
                    "{}: the Certificate's {kind} {} is not installed",
                    r.dir,
                    issuer["name"]
                );
                // A CA issuer's CA comes from a CA Certificate of the overlay (renewals keep the CA).
                let issuer_obj =
                    r.objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == issuer["name"]).unwrap();
                if let Some(ca_secret) = issuer_obj["spec"]["ca"]["secretName"].as_str() {
                    let ca = r
                        .all("Certificate")
                        .into_iter()
                        .find(|c| c["spec"]["secretName"].as_str() == Some(ca_secret))
                        .unwrap_or_else(|| panic!("{}: no Certificate writes the CA Secret {ca_secret}", r.dir));
                    assert_eq!(ca["spec"]["isCA"], true, "{}: the CA certificate is not a CA", r.dir);
                }
            }
            (None, Some(b64)) => {
                let decoded = openssl::base64::decode_block(b64);
                assert!(decoded.is_ok(), "{}: caBundle is not base64", r.dir);
                if !String::from_utf8_lossy(&decoded.unwrap()).contains("-----BEGIN CERTIFICATE-----") {
                    eprintln!(
                        "note: {}: caBundle is a placeholder (not a PEM certificate); replace it before applying",
                        r.dir
                    );
                }
            }
            (None, None) => assert_eq!(
                r.dir, "deploy/base",
                "{}: the APIService has no CA (caBundle or cert-manager injection)",
                r.dir
            ),
            (Some(_), Some(_)) => panic!("{}: both caBundle and cert-manager injection", r.dir),
        }
    }
}

/// The overlays (and the base as kustomize builds it) pass every check above.
#[test]
#[ignore = "needs kubectl (kustomize); conformance/run runs it"]
fn every_kustomization_renders_and_passes_every_check() {
    let all = kustomized();
    every_object_is_valid_for_its_kind_in(&all);
    the_deployment_runs_the_binary_hardened_with_probes_and_two_replicas_in(&all);
    rbac_grants_exactly_what_the_code_uses_in(&all);
    the_apiservice_registers_the_documents_group_with_a_ca_in(&all);
}

#[test]
#[ignore = "needs kubectl (kustomize); conformance/run runs it"]
fn the_overlay_of_the_installation_guide_renders() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo(), tmp.path().join("klio-api")).unwrap();
    let mine = tmp.path().join("my-klio-api");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("kustomization.yaml"), include_str!("../../docs/pages/example-overlay.yaml")).unwrap();
    let objects = kustomize(&mine);
    let base = kustomize(&repo().join("deploy/overlays/cert-manager"));
    assert_eq!(objects.len(), base.len());
    let d: Deployment = typed(objects.iter().find(|o| o["kind"] == "Deployment").unwrap());
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("REGISTRY/klio-api:TAG"));
    let env = c.env.clone().unwrap();
    let url = env.iter().find(|e| e.name == "CLIENT_BASE_URL").unwrap();
    assert_eq!(url.value.as_deref(), Some("https://klio-server.klio.svc:51515"));
    let base_env = base.iter().find(|o| o["kind"] == "Deployment").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["env"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(env.len(), base_env, "the patch replaced one variable and kept the others");
}

#[test]
fn every_object_is_valid_for_its_kind() {
    every_object_is_valid_for_its_kind_in(&[base()]);
}

#[test]
fn the_deployment_runs_the_binary_hardened_with_probes_and_two_replicas() {
    the_deployment_runs_the_binary_hardened_with_probes_and_two_replicas_in(&[base()]);
}

#[test]
fn rbac_grants_exactly_what_the_code_uses() {
    rbac_grants_exactly_what_the_code_uses_in(&[base()]);
}

#[test]
fn the_apiservice_registers_the_documents_group_with_a_ca() {
    the_apiservice_registers_the_documents_group_with_a_ca_in(&[base()]);
}
