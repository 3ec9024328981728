//! The deployment manifests, checked as a cluster would see them.
//!
//! Every kustomize overlay under `deploy/overlays/`, and every overlay together with each
//! optional component inside it (`production+cert-manager`), is rendered with
//! `kubectl kustomize`, validated against the Kubernetes OpenAPI schemas with
//! `kubernetes-validate --strict` (for the oldest supported release and the newest the tool
//! knows), and then held to procguard's security invariants.
//!
//! The invariants live in one table, [`RULES`]. Each rule is a plain function from the rendered
//! objects to violations that name the object and the field, so a failure reads like a review
//! comment. The self-checks at the bottom feed the rules manifests that break them, so this file
//! cannot pass by checking nothing.
//!
//! Tools: `kubectl` 1.27 or newer (for its built-in kustomize v5) and `kubernetes-validate`
//! (`pip install kubernetes-validate==1.37.0`; it carries its schemas and needs no network).
//! When one is missing, the tests that need it print `SKIP: <reason>` and pass, unless
//! `PROCGUARD_STRICT_TESTS=1`, where they fail and say what to install.
//!
//! Rendering never touches real secrets: `deploy/` is copied to a scratch directory without any
//! `pki/` directory (where `procguardctl pki init` writes keys), and every file a Secret or
//! ConfigMap generator reads is replaced by a placeholder there.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use procguard_tests::repo;
use serde_json::Value;

// ------------------------------------------------------------------------------------------------
// What the manifests promise
// ------------------------------------------------------------------------------------------------

/// Set to `1` to turn a missing tool into a failure instead of a skip (CI sets it).
const STRICT_ENV: &str = "PROCGUARD_STRICT_TESTS";

/// The oldest Kubernetes release the manifests support: the sensor's
/// `securityContext.appArmorProfile` exists from 1.30 on.
const MIN_KUBERNETES_VERSION: &str = "1.30.0";

/// Variants that must exist, so that deleting an overlay cannot make the test pass.
const REQUIRED_VARIANTS: &[&str] = &[
    "dev",
    "production",
    "production+cert-manager",
    "production+monitoring",
];

/// The sensor DaemonSet (kind, namespace, name): the only workload allowed host access.
const SENSOR: (&str, &str, &str) = ("DaemonSet", "procguard", "procguard-sensor");

/// The server StatefulSet (kind, namespace, name).
const SERVER: (&str, &str, &str) = ("StatefulSet", "procguard", "procguard-server");

/// The pod-template annotation that must explain any privileged container.
const PRIVILEGED_JUSTIFICATION: &str = "procguard.io/privileged-justification";

/// The capabilities the sensor may add; deploy/base/sensor/daemonset.yaml justifies each.
const SENSOR_CAPABILITIES: &[&str] = &["NET_ADMIN", "SYS_PTRACE", "SYS_ADMIN"];

/// All the sensor and the server may do with the Kubernetes API, on pods only.
const POD_VERBS: &[&str] = &["get", "list", "watch"];

/// Secrets the production overlay expects the operator (or cert-manager) to create; see
/// docs/deploy.md. Any other Secret a pod mounts must be in the rendered manifests.
const OPERATOR_SUPPLIED_SECRETS: &[&str] = &[
    "procguard-server-tls",
    "procguard-sensor-tls",
    "procguard-api-tokens",
];

/// Secrets each variant must create itself: as a Secret (possibly hash-suffixed by a
/// generator) or through a cert-manager Certificate.
const VARIANT_SECRETS: &[(&str, &[&str])] = &[
    (
        "dev",
        &[
            "procguard-server-tls",
            "procguard-sensor-tls",
            "procguard-api-tokens",
        ],
    ),
    (
        "production+cert-manager",
        &["procguard-server-tls", "procguard-sensor-tls"],
    ),
];

/// Custom resources kubernetes-validate has no schema for, as (apiVersion, kind). An object of
/// any other kind that the tool cannot validate fails the test, so a typo in an apiVersion
/// cannot slip through as "unknown kind".
const UNVALIDATED_KINDS: &[(&str, &str)] = &[
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    // Prometheus Operator; tests/tests/monitoring.rs checks these with promtool and a live
    // scrape.
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// The file names kustomize accepts for a kustomization.
const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

// ------------------------------------------------------------------------------------------------
// The rules
// ------------------------------------------------------------------------------------------------

/// A rule inspects the whole rendered manifest and reports what it finds wrong.
type Rule = fn(&Manifest, &mut Report);

/// Every invariant, by the short name that prefixes its violations.
const RULES: &[(&str, Rule)] = &[
    ("privileged", privileged_needs_justification),
    ("host-network", no_host_network),
    ("rbac-wildcards", no_rbac_wildcards),
    ("resources", resources_requested_and_limited),
    ("read-only-root", read_only_root_filesystem),
    ("restricted", restricted_outside_the_sensor),
    ("default-deny", default_deny_in_every_namespace),
    ("sensor-daemonset", sensor_daemonset_shape),
    ("sensor-capabilities", sensor_capabilities),
    ("sensor-rbac", sensor_reads_only_pods),
    ("server-rbac", server_reads_only_pods),
    ("sensor-server-url", sensor_dials_a_rendered_service),
    ("server-statefulset", server_keeps_its_database),
    ("priority-class", priority_classes_exist),
    ("secrets", mounted_secrets_are_provided),
    ("certificates", certificates_fit_their_consumers),
    ("images", images_are_pinned),
    ("pod-security", namespaces_declare_pod_security),
];

/// Runs every rule and returns all violations, in rule order.
fn check(manifest: &Manifest) -> Vec<Violation> {
    let mut report = Report {
        rule: "",
        violations: Vec::new(),
    };
    for &(name, rule) in RULES {
        report.rule = name;
        rule(manifest, &mut report);
    }
    report.violations
}

/// No privileged container, unless its pod template says why in an annotation.
fn privileged_needs_justification(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        let justified = pod
            .annotation(PRIVILEGED_JUSTIFICATION)
            .is_some_and(|why| !why.trim().is_empty());
        for c in pod.containers() {
            if flag(c.value, "/securityContext/privileged") == Some(true) && !justified {
                r.fail(
                    pod.owner.label(),
                    format!(
                        "{c} sets securityContext.privileged: true, but the pod template has \
                         no {PRIVILEGED_JUSTIFICATION} annotation"
                    ),
                );
            }
        }
    }
}

/// No pod on the host network: it would bypass NetworkPolicy and share the node's ports.
fn no_host_network(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        if flag(pod.spec, "/hostNetwork") == Some(true) {
            r.fail(
                pod.owner.label(),
                format!("{}.hostNetwork must not be true", pod.path),
            );
        }
    }
}

/// RBAC names its API groups, resources and verbs; a `*` grants whatever exists tomorrow.
fn no_rbac_wildcards(m: &Manifest, r: &mut Report) {
    for role in m
        .objects
        .iter()
        .filter(|o| matches!(o.kind(), "Role" | "ClusterRole"))
    {
        for (i, rule) in list(&role.value, "/rules").iter().enumerate() {
            for field in ["apiGroups", "resources", "verbs"] {
                for item in strings(rule, &format!("/{field}")) {
                    if item.contains('*') {
                        r.fail(
                            role.label(),
                            format!("rules[{i}].{field} contains {item:?}; name each one"),
                        );
                    }
                }
            }
        }
    }
}

/// Every container, init containers included, requests and limits CPU and memory.
fn resources_requested_and_limited(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        for c in pod.containers() {
            for field in [
                "requests/cpu",
                "requests/memory",
                "limits/cpu",
                "limits/memory",
            ] {
                let set = c
                    .value
                    .pointer(&format!("/resources/{field}"))
                    .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
                if !set {
                    r.fail(
                        pod.owner.label(),
                        format!("{c} has no resources.{}", field.replace('/', ".")),
                    );
                }
            }
        }
    }
}

/// Every container, init containers included, has a read-only root filesystem.
fn read_only_root_filesystem(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        for c in pod.containers() {
            if flag(c.value, "/securityContext/readOnlyRootFilesystem") != Some(true) {
                r.fail(
                    pod.owner.label(),
                    format!("{c} must set securityContext.readOnlyRootFilesystem: true"),
                );
            }
        }
    }
}

/// Everything except the sensor meets the restricted Pod Security profile (and a little more:
/// no added capability at all).
fn restricted_outside_the_sensor(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates().filter(|p| !p.is_sensor()) {
        let object = pod.owner.label();
        for namespace in ["hostPID", "hostIPC"] {
            if flag(pod.spec, &format!("/{namespace}")) == Some(true) {
                r.fail(
                    &object,
                    format!("{}.{namespace} must not be true", pod.path),
                );
            }
        }
        for (i, volume) in list(pod.spec, "/volumes").iter().enumerate() {
            if volume.get("hostPath").is_some() {
                r.fail(
                    &object,
                    format!(
                        "{}.volumes[{i}] {:?} is a hostPath volume; only the sensor may mount \
                         the node's filesystem",
                        pod.path,
                        text(volume, "/name")
                    ),
                );
            }
        }
        for c in pod.containers() {
            if pod.effective(&c, "runAsNonRoot").and_then(Value::as_bool) != Some(true) {
                r.fail(&object, format!("{c} must run with runAsNonRoot: true"));
            }
            if pod.effective(&c, "runAsUser").and_then(Value::as_i64) == Some(0) {
                r.fail(&object, format!("{c} must not set runAsUser: 0"));
            }
            if flag(c.value, "/securityContext/allowPrivilegeEscalation") != Some(false) {
                r.fail(
                    &object,
                    format!("{c} must set securityContext.allowPrivilegeEscalation: false"),
                );
            }
            if !strings(c.value, "/securityContext/capabilities/drop").contains(&"ALL") {
                r.fail(
                    &object,
                    format!("{c} must set securityContext.capabilities.drop: [ALL]"),
                );
            }
            for cap in strings(c.value, "/securityContext/capabilities/add") {
                r.fail(
                    &object,
                    format!("{c} adds capability {cap}; only the sensor adds capabilities"),
                );
            }
            if pod.seccomp_type(&c) != Some("RuntimeDefault") {
                r.fail(
                    &object,
                    format!("{c} must use seccompProfile.type: RuntimeDefault"),
                );
            }
        }
    }
}

/// Every namespace that runs pods has a NetworkPolicy that denies all traffic by default.
fn default_deny_in_every_namespace(m: &Manifest, r: &mut Report) {
    let namespaces: BTreeSet<&str> = m
        .pod_templates()
        .map(|p| p.owner.namespace().unwrap_or("default"))
        .collect();
    for namespace in namespaces {
        let denied = m
            .of_kind("NetworkPolicy")
            .filter(|p| p.namespace().unwrap_or("default") == namespace)
            .any(|p| is_default_deny(&p.value));
        if !denied {
            r.fail(
                format!("Namespace {namespace}"),
                "runs pods but has no default-deny NetworkPolicy (podSelector: {}, \
                 policyTypes: [Ingress, Egress], no rules)"
                    .to_string(),
            );
        }
    }
}

/// Whether a NetworkPolicy selects every pod and allows nothing, in both directions.
fn is_default_deny(policy: &Value) -> bool {
    let selects_all = policy.pointer("/spec/podSelector").is_some_and(|s| {
        s.get("matchLabels")
            .and_then(Value::as_object)
            .is_none_or(serde_json::Map::is_empty)
            && list(s, "/matchExpressions").is_empty()
    });
    let types = strings(policy, "/spec/policyTypes");
    selects_all
        && types.contains(&"Ingress")
        && types.contains(&"Egress")
        && list(policy, "/spec/ingress").is_empty()
        && list(policy, "/spec/egress").is_empty()
}

/// The sensor DaemonSet sees the host's processes, runs on every node, knows its node, and is
/// probed.
fn sensor_daemonset_shape(m: &Manifest, r: &mut Report) {
    let Some(pod) = m.sensor() else {
        let (kind, namespace, name) = SENSOR;
        r.fail(
            format!("{kind} {namespace}/{name}"),
            "is missing from the manifests".into(),
        );
        return;
    };
    let object = pod.owner.label();
    let path = pod.path;
    if flag(pod.spec, "/hostPID") != Some(true) {
        r.fail(
            &object,
            format!(
                "{path}.hostPID must be true: the proc connector reports only to the host PID \
                 namespace"
            ),
        );
    }
    if list(pod.spec, "/tolerations").is_empty() {
        r.fail(
            &object,
            format!("{path}.tolerations is empty: tainted nodes would go unwatched"),
        );
    }
    if text(pod.spec, "/priorityClassName").is_empty() {
        r.fail(
            &object,
            format!(
                "{path}.priorityClassName is not set: a full node could leave the sensor pending"
            ),
        );
    }
    for c in pod.containers().iter().filter(|c| !c.init) {
        let node_name = list(c.value, "/env")
            .iter()
            .find(|e| text(e, "/name") == "NODE_NAME");
        match node_name.map(|e| text(e, "/valueFrom/fieldRef/fieldPath")) {
            Some("spec.nodeName") => {}
            Some(other) => r.fail(
                &object,
                format!("{c} env NODE_NAME must come from fieldRef spec.nodeName, not {other:?}"),
            ),
            None => r.fail(
                &object,
                format!("{c} has no env NODE_NAME from the downward API (fieldRef spec.nodeName)"),
            ),
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            if c.value.get(probe).is_none_or(Value::is_null) {
                r.fail(&object, format!("{c} has no {probe}"));
            }
        }
    }
}

/// The sensor is not privileged: it drops everything and adds back only the justified
/// capabilities, spelled the way Kubernetes expects.
fn sensor_capabilities(m: &Manifest, r: &mut Report) {
    let Some(pod) = m.sensor() else { return };
    let object = pod.owner.label();
    for c in pod.containers() {
        if flag(c.value, "/securityContext/privileged") == Some(true) {
            r.fail(
                &object,
                format!("{c} must not be privileged; list capabilities instead"),
            );
        }
        if !strings(c.value, "/securityContext/capabilities/drop").contains(&"ALL") {
            r.fail(
                &object,
                format!("{c} must set securityContext.capabilities.drop: [ALL]"),
            );
        }
        let added = strings(c.value, "/securityContext/capabilities/add");
        for cap in &added {
            if cap.starts_with("CAP_") {
                r.fail(
                    &object,
                    format!("{c} spells {cap}; Kubernetes expects no CAP_ prefix"),
                );
            } else if !SENSOR_CAPABILITIES.contains(cap) {
                r.fail(
                    &object,
                    format!("{c} adds {cap}, which is not one of {SENSOR_CAPABILITIES:?}"),
                );
            }
        }
        // Kubernetes documents allowPrivilegeEscalation as always true with CAP_SYS_ADMIN and
        // rejects false with the CAP_SYS_ADMIN spelling; false would promise what it cannot.
        if added.contains(&"SYS_ADMIN")
            && flag(c.value, "/securityContext/allowPrivilegeEscalation") == Some(false)
        {
            r.fail(
                &object,
                format!(
                    "{c} adds SYS_ADMIN, so allowPrivilegeEscalation: false would be a false \
                     promise"
                ),
            );
        }
        if pod.seccomp_type(&c) != Some("RuntimeDefault") {
            r.fail(
                &object,
                format!("{c} must use seccompProfile.type: RuntimeDefault"),
            );
        }
    }
}

/// Whatever role is bound to the sensor's ServiceAccount grants get, list and watch on core
/// pods, and nothing else.
fn sensor_reads_only_pods(m: &Manifest, r: &mut Report) {
    if let Some(pod) = m.sensor() {
        reads_only_pods(m, r, &pod, "sensor", "pod metadata");
    }
}

/// Likewise the server's (it checks sensor reports against the pods' placement, `--kube on`).
fn server_reads_only_pods(m: &Manifest, r: &mut Report) {
    if let Some(pod) = m
        .objects
        .iter()
        .find(|o| o.is(SERVER))
        .and_then(PodTemplate::of)
    {
        reads_only_pods(m, r, &pod, "server", "placement checks");
    }
}

/// Whatever role is bound to `pod`'s ServiceAccount grants get, list and watch on core pods,
/// and nothing else; `who` names it in failures, `why` what it needs the pods for.
fn reads_only_pods(m: &Manifest, r: &mut Report, pod: &PodTemplate<'_>, who: &str, why: &str) {
    let account = match text(pod.spec, "/serviceAccountName") {
        "" => "default",
        name => name,
    };
    let namespace = pod.owner.namespace().unwrap_or("default");
    let mut granted = BTreeSet::new();
    let mut bindings = 0;
    for binding in m
        .objects
        .iter()
        .filter(|o| matches!(o.kind(), "ClusterRoleBinding" | "RoleBinding"))
    {
        let binds_sensor = list(&binding.value, "/subjects").iter().any(|s| {
            let subject_namespace = match text(s, "/namespace") {
                "" => binding.namespace().unwrap_or(""),
                ns => ns,
            };
            text(s, "/kind") == "ServiceAccount"
                && text(s, "/name") == account
                && subject_namespace == namespace
        });
        if !binds_sensor {
            continue;
        }
        bindings += 1;
        let role_kind = text(&binding.value, "/roleRef/kind");
        let role_name = text(&binding.value, "/roleRef/name");
        let role_namespace = if role_kind == "Role" {
            binding.namespace()
        } else {
            None
        };
        let Some(role) = m.find(role_kind, role_namespace, role_name) else {
            r.fail(
                binding.label(),
                format!(
                    "binds the {who} to {role_kind} {role_name}, which is not in the \
                     manifests, so its rules cannot be checked"
                ),
            );
            continue;
        };
        if role.value.get("aggregationRule").is_some() {
            r.fail(
                role.label(),
                format!("is bound to the {who} but aggregates other roles"),
            );
        }
        for (i, rule) in list(&role.value, "/rules").iter().enumerate() {
            let groups = strings(rule, "/apiGroups");
            let resources = strings(rule, "/resources");
            if groups != [""] || resources != ["pods"] {
                r.fail(
                    role.label(),
                    format!(
                        "rules[{i}] grants the {who} apiGroups {groups:?} resources \
                         {resources:?}; only core pods are allowed"
                    ),
                );
            }
            if !list(rule, "/nonResourceURLs").is_empty() {
                r.fail(
                    role.label(),
                    format!("rules[{i}] grants the {who} nonResourceURLs"),
                );
            }
            for verb in strings(rule, "/verbs") {
                if POD_VERBS.contains(&verb) {
                    granted.insert(verb);
                } else {
                    r.fail(
                        role.label(),
                        format!("rules[{i}] grants the {who} verb {verb:?}; only {POD_VERBS:?}"),
                    );
                }
            }
        }
    }
    if bindings == 0 {
        r.fail(
            pod.owner.label(),
            format!(
                "ServiceAccount {namespace}/{account} is bound to no role; {why} needs list \
                 and watch on pods"
            ),
        );
    } else {
        for needed in ["list", "watch"] {
            if !granted.contains(needed) {
                r.fail(
                    pod.owner.label(),
                    format!("the {who} is never granted {needed:?} on pods"),
                );
            }
        }
    }
}

/// The sensor's PROCGUARD_SERVER names a rendered Service and one of its ports.
fn sensor_dials_a_rendered_service(m: &Manifest, r: &mut Report) {
    let Some(pod) = m.sensor() else { return };
    let object = pod.owner.label();
    for c in pod.containers().iter().filter(|c| !c.init) {
        let Some(url) = env_value(c.value, "PROCGUARD_SERVER") else {
            r.fail(&object, format!("{c} has no env PROCGUARD_SERVER"));
            continue;
        };
        let Some((host, port)) = parse_https_url(url) else {
            r.fail(
                &object,
                format!("{c} PROCGUARD_SERVER {url:?} is not https://host:port"),
            );
            continue;
        };
        let mut labels = host.splitn(3, '.');
        let (service, namespace, rest) = (
            labels.next().unwrap_or(""),
            labels.next().unwrap_or(""),
            labels.next().unwrap_or(""),
        );
        if rest != "svc" && rest != "svc.cluster.local" {
            r.fail(
                &object,
                format!("{c} PROCGUARD_SERVER host {host:?} is not <service>.<namespace>.svc"),
            );
            continue;
        }
        let Some(svc) = m.find("Service", Some(namespace), service) else {
            r.fail(
                &object,
                format!(
                    "{c} PROCGUARD_SERVER names Service {namespace}/{service}, which is not in \
                     the manifests"
                ),
            );
            continue;
        };
        let ports = list(&svc.value, "/spec/ports");
        if !ports.iter().any(|p| p["port"].as_u64() == Some(port)) {
            r.fail(
                &object,
                format!(
                    "{c} PROCGUARD_SERVER uses port {port}, which Service {namespace}/{service} \
                     does not expose"
                ),
            );
        }
    }
}

/// Every priorityClassName is a built-in system class or a PriorityClass in the manifests;
/// otherwise admission rejects the pods.
fn priority_classes_exist(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        let class = text(pod.spec, "/priorityClassName");
        if class.is_empty() || class.starts_with("system-") {
            continue;
        }
        if m.find("PriorityClass", None, class).is_none() {
            r.fail(
                pod.owner.label(),
                format!(
                    "{}.priorityClassName {class:?} is not a PriorityClass in the manifests",
                    pod.path
                ),
            );
        }
    }
}

/// Every Secret a pod mounts is created by the manifests or documented as the operator's.
fn mounted_secrets_are_provided(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        let namespace = pod.owner.namespace().unwrap_or("default");
        for (i, volume) in list(pod.spec, "/volumes").iter().enumerate() {
            let mut names: Vec<&str> = volume
                .pointer("/secret/secretName")
                .and_then(Value::as_str)
                .into_iter()
                .collect();
            names.extend(
                list(volume, "/projected/sources")
                    .iter()
                    .filter_map(|s| s.pointer("/secret/name").and_then(Value::as_str)),
            );
            for name in names {
                if !m.creates_secret(namespace, name) && !OPERATOR_SUPPLIED_SECRETS.contains(&name)
                {
                    r.fail(
                        pod.owner.label(),
                        format!(
                            "{}.volumes[{i}] mounts Secret {name:?}, which the manifests do not \
                             create and docs/deploy.md does not ask operators to create",
                            pod.path
                        ),
                    );
                }
            }
        }
    }
}

/// The server is one StatefulSet replica whose sled directory is a volume from its own
/// volumeClaimTemplate: a second replica, or a data directory outside the claim, would lose or
/// corrupt the database.
fn server_keeps_its_database(m: &Manifest, r: &mut Report) {
    let (kind, namespace, name) = SERVER;
    let Some(server) = m.objects.iter().find(|o| o.is(SERVER)) else {
        r.fail(
            format!("{kind} {namespace}/{name}"),
            "is missing from the manifests".into(),
        );
        return;
    };
    let object = server.label();
    if server
        .value
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        != Some(1)
    {
        r.fail(
            &object,
            "spec.replicas must be 1: sled allows one process per database".into(),
        );
    }
    let claims: Vec<&str> = list(&server.value, "/spec/volumeClaimTemplates")
        .iter()
        .map(|t| text(t, "/metadata/name"))
        .collect();
    let Some(pod) = PodTemplate::of(server) else {
        return;
    };
    for c in pod.containers().iter().filter(|c| !c.init) {
        let Some(data_dir) = env_value(c.value, "PROCGUARD_DATA_DIR") else {
            r.fail(&object, format!("{c} has no env PROCGUARD_DATA_DIR"));
            continue;
        };
        let mount = list(c.value, "/volumeMounts")
            .iter()
            .find(|v| text(v, "/mountPath") == data_dir);
        match mount.map(|v| text(v, "/name")) {
            Some(volume) if claims.contains(&volume) => {}
            Some(volume) => r.fail(
                &object,
                format!(
                    "{c} keeps PROCGUARD_DATA_DIR {data_dir:?} on volume {volume:?}, which is not \
                     one of spec.volumeClaimTemplates {claims:?}"
                ),
            ),
            None => r.fail(
                &object,
                format!("{c} mounts no volume at PROCGUARD_DATA_DIR {data_dir:?}"),
            ),
        }
    }
}

/// cert-manager Certificates name an Issuer that exists and fit the workload that mounts them:
/// the server's covers the host the sensors dial, the sensor's is a client certificate.
fn certificates_fit_their_consumers(m: &Manifest, r: &mut Report) {
    let server = m
        .objects
        .iter()
        .find(|o| o.is(SERVER))
        .and_then(PodTemplate::of);
    let sensor = m.sensor();
    let dialled_host = sensor.as_ref().and_then(|pod| {
        pod.containers()
            .iter()
            .filter(|c| !c.init)
            .find_map(|c| env_value(c.value, "PROCGUARD_SERVER").and_then(parse_https_url))
            .map(|(host, _)| host)
    });
    let fleet_names: Vec<&str> = server
        .as_ref()
        .map(|pod| {
            pod.containers()
                .iter()
                .filter_map(|c| env_value(c.value, "PROCGUARD_SENSOR_FLEET_NAMES"))
                .flat_map(|v| v.split(',').map(str::trim))
                .collect()
        })
        .unwrap_or_default();
    for cert in m.of_kind("Certificate") {
        let issuer_kind = match text(&cert.value, "/spec/issuerRef/kind") {
            "" => "Issuer",
            kind => kind,
        };
        let issuer_name = text(&cert.value, "/spec/issuerRef/name");
        let issuer_namespace = if issuer_kind == "Issuer" {
            cert.namespace()
        } else {
            None
        };
        if m.find(issuer_kind, issuer_namespace, issuer_name).is_none() {
            r.fail(
                cert.label(),
                format!(
                    "spec.issuerRef names {issuer_kind} {issuer_name:?}, which is not in the \
                     manifests"
                ),
            );
        }
        let secret = text(&cert.value, "/spec/secretName");
        let usages = strings(&cert.value, "/spec/usages");
        let dns_names = strings(&cert.value, "/spec/dnsNames");
        if server.as_ref().is_some_and(|pod| pod.mounts_secret(secret)) {
            if !usages.contains(&"server auth") {
                r.fail(
                    cert.label(),
                    "is the server's certificate but lacks usage \"server auth\"".into(),
                );
            }
            for name in dialled_host.iter().copied().chain(["localhost"]) {
                if !dns_names.contains(&name) {
                    r.fail(
                        cert.label(),
                        format!("spec.dnsNames lacks {name:?}, which clients of the server dial"),
                    );
                }
            }
        }
        if sensor.as_ref().is_some_and(|pod| pod.mounts_secret(secret)) {
            if !usages.contains(&"client auth") {
                r.fail(
                    cert.label(),
                    "is the sensors' certificate but lacks usage \"client auth\"".into(),
                );
            }
            // One certificate serves every node, so it must be a fleet certificate (URI SAN
            // procguard://sensor-fleet/<name>) whose name the server accepts for any node;
            // otherwise the server refuses every sensor.
            let uris = strings(&cert.value, "/spec/uris");
            let fleet = uris
                .iter()
                .find_map(|u| u.strip_prefix("procguard://sensor-fleet/"));
            if !fleet.is_some_and(|f| fleet_names.contains(&f)) {
                r.fail(
                    cert.label(),
                    format!(
                        "is the sensors' shared certificate, but its spec.uris {uris:?} name no \
                         fleet (procguard://sensor-fleet/<name>) in the server's \
                         PROCGUARD_SENSOR_FLEET_NAMES {fleet_names:?}"
                    ),
                );
            }
        }
    }
}

/// Every image names a tag other than `latest`, or a digest, so an apply is repeatable.
fn images_are_pinned(m: &Manifest, r: &mut Report) {
    for pod in m.pod_templates() {
        for c in pod.containers() {
            let image = text(c.value, "/image");
            let last_segment = image.rsplit('/').next().unwrap_or(image);
            let pinned = image.contains("@sha256:")
                || last_segment
                    .split_once(':')
                    .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest");
            if !pinned {
                r.fail(
                    pod.owner.label(),
                    format!("{c} image {image:?} has no tag (or :latest)"),
                );
            }
        }
    }
}

/// Every Namespace states its Pod Security Admission level instead of inheriting the cluster's.
fn namespaces_declare_pod_security(m: &Manifest, r: &mut Report) {
    for namespace in m.of_kind("Namespace") {
        let enforce = namespace
            .value
            .pointer("/metadata/labels")
            .and_then(|labels| labels.get("pod-security.kubernetes.io/enforce"))
            .and_then(Value::as_str);
        if enforce.is_none() {
            r.fail(
                namespace.label(),
                "has no pod-security.kubernetes.io/enforce label".into(),
            );
        }
    }
}

/// Checks what one variant in particular must contain.
fn variant_expectations(variant: &str, m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    for &(name, secrets) in VARIANT_SECRETS {
        if name != variant {
            continue;
        }
        for secret in secrets {
            if !m.creates_secret("procguard", secret) {
                problems.push(format!(
                    "creates no Secret procguard/{secret} (directly, hash-suffixed by a \
                     generator, or through a cert-manager Certificate)"
                ));
            }
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------------
// The model the rules read
// ------------------------------------------------------------------------------------------------

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    /// The short name of the rule, from [`RULES`].
    rule: &'static str,
    /// The object, as `Kind namespace/name` or `Kind name`.
    object: String,
    /// What is wrong, naming the field.
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.rule, self.object, self.message)
    }
}

/// Collects the violations of the rule that is running.
struct Report {
    rule: &'static str,
    violations: Vec<Violation>,
}

impl Report {
    fn fail(&mut self, object: impl fmt::Display, message: String) {
        self.violations.push(Violation {
            rule: self.rule,
            object: object.to_string(),
            message,
        });
    }
}

/// One rendered Kubernetes object.
struct Object {
    value: Value,
}

impl Object {
    fn kind(&self) -> &str {
        text(&self.value, "/kind")
    }

    fn name(&self) -> &str {
        text(&self.value, "/metadata/name")
    }

    fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }

    fn is(&self, (kind, namespace, name): (&str, &str, &str)) -> bool {
        self.kind() == kind && self.namespace() == Some(namespace) && self.name() == name
    }

    /// How messages name the object.
    fn label(&self) -> String {
        match self.namespace() {
            Some(namespace) => format!("{} {}/{}", self.kind(), namespace, self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }
}

/// The objects of one rendered multi-document YAML stream.
struct Manifest {
    objects: Vec<Object>,
}

impl Manifest {
    fn parse(yaml: &str) -> Result<Manifest, String> {
        let mut objects = Vec::new();
        for (i, document) in split_documents(yaml).into_iter().enumerate() {
            let blank = document.lines().all(|l| {
                let l = l.trim();
                l.is_empty() || l.starts_with('#')
            });
            if blank {
                continue;
            }
            let value: Value =
                serde_yaml::from_str(document).map_err(|e| format!("YAML document {i}: {e}"))?;
            if !value.is_object() {
                return Err(format!("YAML document {i} is not a mapping"));
            }
            objects.push(Object { value });
        }
        Ok(Manifest { objects })
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.kind() == kind)
    }

    fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&Object> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.namespace() == namespace && o.name() == name)
    }

    fn pod_templates(&self) -> impl Iterator<Item = PodTemplate<'_>> {
        self.objects.iter().filter_map(PodTemplate::of)
    }

    fn sensor(&self) -> Option<PodTemplate<'_>> {
        self.objects
            .iter()
            .find(|o| o.is(SENSOR))
            .and_then(PodTemplate::of)
    }

    /// Whether the manifests create Secret `name` in `namespace`: as a Secret, as a
    /// generator's hash-suffixed `name-<hash>`, or as a cert-manager Certificate's secretName.
    fn creates_secret(&self, namespace: &str, name: &str) -> bool {
        let generated = |secret: &str| {
            secret == name
                || secret
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| {
                        !hash.is_empty() && hash.chars().all(|ch| ch.is_ascii_alphanumeric())
                    })
        };
        self.of_kind("Secret")
            .any(|s| s.namespace() == Some(namespace) && generated(s.name()))
            || self.of_kind("Certificate").any(|c| {
                c.namespace() == Some(namespace) && text(&c.value, "/spec/secretName") == name
            })
    }
}

/// Splits a YAML stream at its `---` lines. Kustomize writes one object per document and a
/// block scalar's lines are always indented, so a bare `---` is always a separator.
fn split_documents(yaml: &str) -> Vec<&str> {
    let mut documents = Vec::new();
    let (mut start, mut offset) = (0, 0);
    for line in yaml.split_inclusive('\n') {
        if line.trim_end() == "---" {
            documents.push(&yaml[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&yaml[start..]);
    documents
}

/// The pod spec inside a workload, with where it sits, for messages.
struct PodTemplate<'a> {
    owner: &'a Object,
    /// The pod spec's path in the owner, as messages spell it.
    path: &'static str,
    metadata: &'a Value,
    spec: &'a Value,
}

/// Stands in for a missing part of an object.
static NULL: Value = Value::Null;

impl<'a> PodTemplate<'a> {
    fn of(owner: &'a Object) -> Option<PodTemplate<'a>> {
        let (base, path) = match owner.kind() {
            "Pod" => ("", "spec"),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                ("/spec/template", "spec.template.spec")
            }
            "CronJob" => (
                "/spec/jobTemplate/spec/template",
                "spec.jobTemplate.spec.template.spec",
            ),
            _ => return None,
        };
        Some(PodTemplate {
            owner,
            path,
            metadata: owner
                .value
                .pointer(&format!("{base}/metadata"))
                .unwrap_or(&NULL),
            spec: owner
                .value
                .pointer(&format!("{base}/spec"))
                .unwrap_or(&NULL),
        })
    }

    fn is_sensor(&self) -> bool {
        self.owner.is(SENSOR)
    }

    fn annotation(&self, key: &str) -> Option<&'a str> {
        self.metadata.get("annotations")?.get(key)?.as_str()
    }

    /// Init containers first, then containers, as the kubelet starts them.
    fn containers(&self) -> Vec<Container<'a>> {
        let mut containers = Vec::new();
        for (field, init) in [("initContainers", true), ("containers", false)] {
            for (i, value) in list(self.spec, &format!("/{field}")).iter().enumerate() {
                containers.push(Container {
                    path: format!("{}.{field}[{i}]", self.path),
                    name: text(value, "/name"),
                    init,
                    value,
                });
            }
        }
        containers
    }

    /// A securityContext field as the kubelet applies it: the container's, else the pod's.
    fn effective(&self, c: &Container<'a>, field: &str) -> Option<&'a Value> {
        c.value
            .get("securityContext")
            .and_then(|s| s.get(field))
            .or_else(|| self.spec.get("securityContext").and_then(|s| s.get(field)))
    }

    fn seccomp_type(&self, c: &Container<'a>) -> Option<&'a str> {
        self.effective(c, "seccompProfile")
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
    }

    fn mounts_secret(&self, name: &str) -> bool {
        !name.is_empty()
            && list(self.spec, "/volumes")
                .iter()
                .any(|v| v.pointer("/secret/secretName").and_then(Value::as_str) == Some(name))
    }
}

/// One container of a pod template.
struct Container<'a> {
    path: String,
    name: &'a str,
    init: bool,
    value: &'a Value,
}

impl fmt::Display for Container<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.path, self.name)
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn list<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strings<'a>(value: &'a Value, pointer: &str) -> Vec<&'a str> {
    list(value, pointer)
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn flag(value: &Value, pointer: &str) -> Option<bool> {
    value.pointer(pointer).and_then(Value::as_bool)
}

/// The literal value of a container's environment variable.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    list(container, "/env")
        .iter()
        .find(|e| text(e, "/name") == name)
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
}

/// Splits `https://host:port[/...]` into host and port.
fn parse_https_url(url: &str) -> Option<(&str, u64)> {
    let authority = url.strip_prefix("https://")?.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

// ------------------------------------------------------------------------------------------------
// Rendering and schema validation
// ------------------------------------------------------------------------------------------------

/// A way to start an external tool: a program and the arguments that precede ours.
#[derive(Debug, Clone, Copy)]
struct Tool {
    program: &'static str,
    prefix: &'static [&'static str],
}

impl Tool {
    fn command(&self) -> Command {
        let mut command = Command::new(self.program);
        command.args(self.prefix);
        command
    }

    fn answers(&self, probe: &[&str]) -> bool {
        self.command()
            .args(probe)
            .output()
            .is_ok_and(|out| out.status.success())
    }
}

const KUBECTL: &[Tool] = &[Tool {
    program: "kubectl",
    prefix: &[],
}];

/// pip puts a `kubernetes-validate` script on PATH; where the script directory is not on PATH,
/// the module still runs.
const KUBERNETES_VALIDATE: &[Tool] = &[
    Tool {
        program: "kubernetes-validate",
        prefix: &[],
    },
    Tool {
        program: "python3",
        prefix: &["-m", "kubernetes_validate"],
    },
];

/// The two tools the rendering tests need.
struct Tools {
    kubectl: Tool,
    validate: Tool,
}

impl Tools {
    /// Finds both tools, or says which are missing and how to install them.
    fn find() -> Result<Tools, String> {
        let kubectl = KUBECTL
            .iter()
            .copied()
            .find(|t| t.answers(&["version", "--client"]));
        let validate = KUBERNETES_VALIDATE
            .iter()
            .copied()
            .find(|t| t.answers(&["--version"]));
        match (kubectl, validate) {
            (Some(kubectl), Some(validate)) => Ok(Tools { kubectl, validate }),
            (kubectl, validate) => {
                let mut missing = Vec::new();
                if kubectl.is_none() {
                    missing.push(
                        "kubectl is not on PATH (install kubectl 1.27 or newer, e.g. \
                         `apt-get install -y kubectl` from the Kubernetes or Google Cloud apt \
                         repository; Debian's kubernetes-client is too old for kustomize v5)",
                    );
                }
                if validate.is_none() {
                    missing.push(
                        "kubernetes-validate is not installed \
                         (run `pip install kubernetes-validate==1.37.0`)",
                    );
                }
                Err(missing.join("; "))
            }
        }
    }

    /// Renders a kustomization directory.
    fn kustomize(&self, dir: &Path) -> Result<String, String> {
        repo::kustomize_with(self.kubectl.command(), dir)
    }

    /// Validates files against the schemas of `version` (None: the newest the tool knows) and
    /// returns every problem line; a schema-less kind outside [`UNVALIDATED_KINDS`] is one.
    fn validate(&self, files: &[PathBuf], version: Option<&str>) -> Vec<String> {
        let mut command = self.validate.command();
        command.args(["--strict", "--quiet"]);
        if let Some(version) = version {
            command.args(["-k", version]);
        }
        command.args(files);
        let out = match command.output() {
            Ok(out) => out,
            Err(e) => return vec![format!("cannot run kubernetes-validate: {e}")],
        };
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut problems: Vec<String> = output
            .lines()
            .filter(|line| {
                ["WARN", "ERROR", "FATAL"]
                    .iter()
                    .any(|level| line.starts_with(level))
            })
            .filter(|line| {
                !UNVALIDATED_KINDS.iter().any(|(api_version, kind)| {
                    line.starts_with("WARN")
                        && line.contains(&format!("kind {kind} with api version {api_version} "))
                })
            })
            .map(str::to_string)
            .collect();
        if !out.status.success() && problems.is_empty() {
            problems.push(format!(
                "kubernetes-validate exited with {}:\n{output}",
                out.status
            ));
        }
        problems
    }
}

/// The tools, or `None` after printing `SKIP:` (or a panic under PROCGUARD_STRICT_TESTS=1).
fn tools_or_skip(test: &str) -> Option<Tools> {
    match Tools::find() {
        Ok(tools) => Some(tools),
        Err(missing) if std::env::var(STRICT_ENV).is_ok_and(|v| v == "1") => {
            panic!("{test}: {missing}. {STRICT_ENV}=1 forbids skipping.")
        }
        Err(missing) => {
            // Straight to the process's stderr: the test harness captures eprintln! output of
            // passing tests, and a skip must show in CI logs.
            let _ = writeln!(std::io::stderr(), "SKIP: {test}: {missing}");
            None
        }
    }
}

/// One thing to render: an overlay, or an overlay with one of its optional components.
struct Variant {
    name: String,
    dir: PathBuf,
}

/// A scratch copy of `deploy/` in which every overlay renders without real secrets. Removed
/// when dropped.
struct Workspace {
    root: PathBuf,
}

impl Workspace {
    fn new() -> Workspace {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!(
            "procguard-deploy-test-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        create_dir(&root);
        let workspace = Workspace { root };
        copy_tree(&repo::root().join("deploy"), &workspace.root.join("deploy"));
        for kustomization in find_kustomizations(&workspace.root.join("deploy")) {
            write_generator_placeholders(&kustomization);
        }
        workspace
    }

    /// Every overlay under deploy/overlays, and for each Component directly inside an overlay,
    /// a generated kustomization that applies the overlay with that component.
    fn variants(&self) -> Vec<Variant> {
        let mut variants = Vec::new();
        for overlay in sorted_dirs(&self.root.join("deploy/overlays")) {
            if kustomization_in(&overlay).is_none() {
                continue;
            }
            let name = file_name(&overlay);
            variants.push(Variant {
                name: name.clone(),
                dir: overlay.clone(),
            });
            for component in sorted_dirs(&overlay) {
                let Some(file) = kustomization_in(&component) else {
                    continue;
                };
                if text(&read_yaml(&file), "/kind") != "Component" {
                    continue;
                }
                let component_name = file_name(&component);
                let variant = format!("{name}+{component_name}");
                let dir = self.root.join("variants").join(&variant);
                create_dir(&dir);
                write(
                    &dir.join("kustomization.yaml"),
                    &format!(
                        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                         resources:\n  - ../../deploy/overlays/{name}\n\
                         components:\n  - ../../deploy/overlays/{name}/{component_name}\n"
                    ),
                );
                variants.push(Variant { name: variant, dir });
            }
        }
        variants
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Copies a tree, leaving out every directory named `pki`: `procguardctl pki init` writes real
/// keys there, which a test must neither read nor copy.
fn copy_tree(from: &Path, to: &Path) {
    create_dir(to);
    let entries =
        fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            if entry.file_name() != "pki" {
                copy_tree(&source, &target);
            }
        } else if let Err(e) = fs::copy(&source, &target) {
            panic!(
                "cannot copy {} to {}: {e}",
                source.display(),
                target.display()
            );
        }
    }
}

/// Writes a placeholder for every file a Secret or ConfigMap generator reads and that is not
/// there, so that rendering needs no secrets.
fn write_generator_placeholders(kustomization: &Path) {
    let dir = kustomization.parent().unwrap_or(Path::new("."));
    let doc = read_yaml(kustomization);
    for generator in ["secretGenerator", "configMapGenerator"] {
        for g in list(&doc, &format!("/{generator}")) {
            for entry in strings(g, "/files") {
                // "key=path" or just "path".
                let path = entry.split_once('=').map_or(entry, |(_, path)| path);
                write_placeholder(
                    dir,
                    path,
                    "placeholder written by tests/tests/deploy_manifests.rs\n",
                );
            }
            for path in strings(g, "/envs") {
                write_placeholder(dir, path, "PLACEHOLDER=placeholder\n");
            }
        }
    }
}

fn write_placeholder(dir: &Path, relative: &str, contents: &str) {
    let relative_path = Path::new(relative);
    assert!(
        relative_path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "generator input {relative:?} in {} must be a relative path inside the kustomization",
        dir.display()
    );
    let path = dir.join(relative_path);
    if !path.exists() {
        if let Some(parent) = path.parent() {
            create_dir(parent);
        }
        write(&path, contents);
    }
}

fn find_kustomizations(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = kustomization_in(dir).into_iter().collect();
    for sub in sorted_dirs(dir) {
        found.extend(find_kustomizations(&sub));
    }
    found
}

fn kustomization_in(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

fn sorted_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_yaml(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn create_dir(path: &Path) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn write(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ------------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------------

#[test]
fn overlays_render_validate_and_keep_the_security_invariants() {
    let Some(tools) = tools_or_skip("overlays_render_validate_and_keep_the_security_invariants")
    else {
        return;
    };
    let workspace = Workspace::new();
    let variants = workspace.variants();
    let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
    for required in REQUIRED_VARIANTS {
        assert!(
            names.contains(required),
            "deploy/ must provide the {required:?} variant; found {names:?}"
        );
    }

    let mut problems = Vec::new();
    let mut rendered = Vec::new();
    let rendered_dir = workspace.root.join("rendered");
    create_dir(&rendered_dir);
    for variant in &variants {
        let yaml = match tools.kustomize(&variant.dir) {
            Ok(yaml) => yaml,
            Err(e) => {
                problems.push(format!("{}: {e}", variant.name));
                continue;
            }
        };
        let file = rendered_dir.join(format!("{}.yaml", variant.name));
        write(&file, &yaml);
        rendered.push(file);
        match Manifest::parse(&yaml) {
            Err(e) => problems.push(format!(
                "{}: rendered output does not parse: {e}",
                variant.name
            )),
            Ok(manifest) => {
                problems.extend(
                    check(&manifest)
                        .iter()
                        .map(|v| format!("{}: {v}", variant.name)),
                );
                problems.extend(
                    variant_expectations(&variant.name, &manifest)
                        .into_iter()
                        .map(|p| format!("{}: {p}", variant.name)),
                );
            }
        }
    }
    if !rendered.is_empty() {
        for version in [Some(MIN_KUBERNETES_VERSION), None] {
            let against = version.unwrap_or("newest known");
            problems.extend(
                tools
                    .validate(&rendered, version)
                    .into_iter()
                    .map(|p| format!("schema (Kubernetes {against}): {p}")),
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in the deployment manifests:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The schema check must be able to fail: a misspelt field is an error under --strict.
#[test]
fn schema_validation_rejects_unknown_fields() {
    let Some(tools) = tools_or_skip("schema_validation_rejects_unknown_fields") else {
        return;
    };
    let workspace = Workspace::new();
    let file = workspace.root.join("misspelt.yaml");
    write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: misspelt\nspec:\n  hostNetwrok: true\n  \
         containers:\n    - name: app\n      image: app:1\n",
    );
    let problems = tools.validate(&[file], Some(MIN_KUBERNETES_VERSION));
    assert!(
        problems.iter().any(|p| p.contains("hostNetwrok")),
        "kubernetes-validate --strict accepted an unknown field; it reported: {problems:?}"
    );
}

/// A workload that breaks the headline rules at once.
const INSECURE: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
  namespace: victim
spec:
  template:
    metadata:
      annotations: {}
    spec:
      hostNetwork: true
      containers:
        - name: app
          image: app
          securityContext:
            privileged: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: everything
rules:
  - apiGroups: ["*"]
    resources: ["*"]
    verbs: ["*"]
"#;

/// A sensor that asks for more than it may have.
const OVERREACHING_SENSOR: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: procguard-sensor
  namespace: procguard
spec:
  template:
    spec:
      serviceAccountName: procguard-sensor
      containers:
        - name: sensor
          image: sensor:1
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: PROCGUARD_SERVER
              value: https://procguard-server.procguard.svc:8443
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: [ALL]
              add: [SYS_ADMIN, SYS_MODULE, CAP_NET_ADMIN]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: procguard-sensor
rules:
  - apiGroups: [""]
    resources: ["pods", "secrets"]
    verbs: ["get", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: procguard-sensor
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: procguard-sensor
subjects:
  - kind: ServiceAccount
    name: procguard-sensor
    namespace: procguard
"#;

/// Asserts that checking `yaml` reports each (rule, object, message fragment).
fn assert_reports(yaml: &str, expected: &[(&str, &str, &str)]) {
    let manifest = Manifest::parse(yaml).unwrap_or_else(|e| panic!("self-check manifest: {e}"));
    let violations = check(&manifest);
    let listing: Vec<String> = violations.iter().map(ToString::to_string).collect();
    for &(rule, object, fragment) in expected {
        assert!(
            violations
                .iter()
                .any(|v| v.rule == rule && v.object == object && v.message.contains(fragment)),
            "expected [{rule}] {object}: ...{fragment}...; the checker reported:\n  {}",
            listing.join("\n  ")
        );
    }
}

#[test]
fn checker_rejects_privileged_host_network_and_wildcard_rbac() {
    assert_reports(
        INSECURE,
        &[
            ("privileged", "Deployment victim/bad", "privileged: true"),
            (
                "host-network",
                "Deployment victim/bad",
                "spec.template.spec.hostNetwork",
            ),
            (
                "rbac-wildcards",
                "ClusterRole everything",
                "rules[0].apiGroups",
            ),
            (
                "rbac-wildcards",
                "ClusterRole everything",
                "rules[0].resources",
            ),
            ("rbac-wildcards", "ClusterRole everything", "rules[0].verbs"),
            (
                "resources",
                "Deployment victim/bad",
                "resources.limits.memory",
            ),
            (
                "read-only-root",
                "Deployment victim/bad",
                "readOnlyRootFilesystem",
            ),
            ("restricted", "Deployment victim/bad", "runAsNonRoot"),
            (
                "restricted",
                "Deployment victim/bad",
                "allowPrivilegeEscalation",
            ),
            ("restricted", "Deployment victim/bad", "seccompProfile"),
            (
                "default-deny",
                "Namespace victim",
                "no default-deny NetworkPolicy",
            ),
            (
                "sensor-daemonset",
                "DaemonSet procguard/procguard-sensor",
                "missing",
            ),
            ("images", "Deployment victim/bad", "no tag"),
        ],
    );
}

#[test]
fn checker_accepts_a_justified_privileged_container() {
    let justified = INSECURE.replace(
        "annotations: {}",
        &format!("annotations:\n        {PRIVILEGED_JUSTIFICATION}: \"loads a kernel module\""),
    );
    let manifest =
        Manifest::parse(&justified).unwrap_or_else(|e| panic!("self-check manifest: {e}"));
    let privileged: Vec<Violation> = check(&manifest)
        .into_iter()
        .filter(|v| v.rule == "privileged")
        .collect();
    assert!(
        privileged.is_empty(),
        "a justified privileged container was rejected: {privileged:?}"
    );
}

#[test]
fn checker_rejects_an_overreaching_sensor() {
    let sensor = "DaemonSet procguard/procguard-sensor";
    assert_reports(
        OVERREACHING_SENSOR,
        &[
            ("sensor-daemonset", sensor, "hostPID must be true"),
            ("sensor-daemonset", sensor, "tolerations is empty"),
            ("sensor-daemonset", sensor, "priorityClassName is not set"),
            (
                "sensor-daemonset",
                sensor,
                "NODE_NAME must come from fieldRef spec.nodeName",
            ),
            ("sensor-daemonset", sensor, "no livenessProbe"),
            ("sensor-daemonset", sensor, "no readinessProbe"),
            ("sensor-capabilities", sensor, "adds SYS_MODULE"),
            ("sensor-capabilities", sensor, "spells CAP_NET_ADMIN"),
            (
                "sensor-capabilities",
                sensor,
                "allowPrivilegeEscalation: false would be a false promise",
            ),
            (
                "sensor-rbac",
                "ClusterRole procguard-sensor",
                "resources [\"pods\", \"secrets\"]",
            ),
            (
                "sensor-rbac",
                "ClusterRole procguard-sensor",
                "verb \"delete\"",
            ),
            ("sensor-rbac", sensor, "never granted \"list\""),
            (
                "sensor-server-url",
                sensor,
                "Service procguard/procguard-server, which is not in the manifests",
            ),
        ],
    );
}

/// A server that could run twice on one database, or keep it outside its claim, and a shared
/// sensor certificate the server would refuse for every node but one.
const FRAGILE_SERVER: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: procguard-server, namespace: procguard }
spec:
  replicas: 2
  serviceName: procguard-server
  selector: { matchLabels: { app: server } }
  template:
    metadata: { labels: { app: server } }
    spec:
      containers:
        - name: server
          image: procguard-server:1
          env:
            - { name: PROCGUARD_DATA_DIR, value: /var/lib/procguard }
          volumeMounts:
            - { name: scratch, mountPath: /var/lib/procguard }
      volumes:
        - { name: scratch, emptyDir: {} }
        - { name: tls, secret: { secretName: procguard-server-tls } }
  volumeClaimTemplates:
    - metadata: { name: data }
      spec: { accessModes: [ReadWriteOnce], resources: { requests: { storage: 1Gi } } }
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: procguard-sensor, namespace: procguard }
spec:
  selector: { matchLabels: { app: sensor } }
  template:
    metadata: { labels: { app: sensor } }
    spec:
      containers:
        - name: sensor
          image: procguard-sensor:1
      volumes:
        - { name: tls, secret: { secretName: procguard-sensor-tls } }
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: { name: procguard-sensor, namespace: procguard }
spec:
  secretName: procguard-sensor-tls
  commonName: procguard-sensor
  usages: [client auth]
  issuerRef: { kind: Issuer, name: procguard-ca }
"#;

#[test]
fn checker_rejects_a_fragile_server_and_an_unaccepted_fleet_certificate() {
    let server = "StatefulSet procguard/procguard-server";
    assert_reports(
        FRAGILE_SERVER,
        &[
            ("server-statefulset", server, "spec.replicas must be 1"),
            (
                "server-statefulset",
                server,
                "not one of spec.volumeClaimTemplates",
            ),
            (
                "certificates",
                "Certificate procguard/procguard-sensor",
                "in the server's PROCGUARD_SENSOR_FLEET_NAMES",
            ),
        ],
    );
}
