//! Conformance of `--format ocsf` and `--format cef` to their specifications, for every kind of
//! record the stream carries, with hostile strings where a value is free text.
//!
//! OCSF: the required attributes of each class as OCSF 1.1.0 defines them (the class's own,
//! its category's and the base event's), the required attributes and "at least one of"
//! constraints of every object written, the fixed class, category and type numbers, the enum
//! ranges, and no empty value anywhere. CEF: the header's seven fields with `|` and `\`
//! escaped, a severity of 0..10, extension keys that are CEF keys, values that round-trip
//! through CEF's escaping, no key twice, no label without its value.

use super::Streamed;
use procguard_proto::v1 as pb;
use serde_json::Value;

// The formatters on a protobuf record, read as `watch` reads it.
fn ocsf(r: &pb::StreamRecord) -> Value {
    super::ocsf(&Streamed::read(r).unwrap())
}
fn cef(r: &pb::StreamRecord) -> String {
    super::cef(&Streamed::read(r).unwrap())
}

/// What OCSF 1.1.0 requires of one event class.
struct Class {
    class_uid: u64,
    category_uid: u64,
    /// The class's activity_id values (0 Unknown and 99 Other are the base event's).
    activities: &'static [u64],
    /// Required attributes: the base event's, the category's and the class's own.
    required: &'static [&'static str],
}

const BASE_REQUIRED: [&str; 7] = [
    "activity_id",
    "category_uid",
    "class_uid",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
];

/// Process Activity: System Activity requires `actor` and `device`; the class, `process`.
const PROCESS_ACTIVITY: Class = Class {
    class_uid: 1007,
    category_uid: 1,
    activities: &[1, 2, 3, 4, 5],
    required: &["actor", "device", "process"],
};
/// Detection Finding: a finding requires `finding_info`.
const DETECTION_FINDING: Class = Class {
    class_uid: 2004,
    category_uid: 2,
    activities: &[1, 2, 3],
    required: &["finding_info"],
};
/// API Activity: `actor`, `api` and `src_endpoint`.
const API_ACTIVITY: Class = Class {
    class_uid: 6003,
    category_uid: 6,
    activities: &[1, 2, 3, 4],
    required: &["actor", "api", "src_endpoint"],
};

/// What OCSF 1.1.0 requires of one object: attributes, and sets of which one must be there.
struct Object {
    required: &'static [&'static str],
    at_least_one: &'static [&'static str],
}

/// The object an attribute holds, by attribute name (the same in every class used here).
fn object_of(attribute: &str) -> Option<Object> {
    let o = |required, at_least_one| {
        Some(Object {
            required,
            at_least_one,
        })
    };
    match attribute {
        "metadata" => o(&["product", "version"], &[]),
        "product" => o(&["vendor_name"], &[]),
        "process" | "parent_process" => o(&[], &["pid", "uid"]),
        "file" => o(&["name", "type_id"], &[]),
        "user" => o(&[], &["account", "name", "uid"]),
        "actor" => o(&[], &["process", "user", "invoked_by", "session"]),
        // device extends endpoint, which needs one identifying attribute.
        "device" => o(
            &["type_id"],
            &[
                "ip",
                "uid",
                "name",
                "hostname",
                "instance_uid",
                "interface_uid",
                "interface_name",
            ],
        ),
        "src_endpoint" => o(
            &[],
            &[
                "ip",
                "uid",
                "name",
                "hostname",
                "svc_name",
                "instance_uid",
                "interface_uid",
                "interface_name",
            ],
        ),
        "container" => o(&[], &["uid", "name"]),
        "finding_info" => o(&["title", "uid"], &[]),
        "api" => o(&["operation"], &[]),
        _ => None,
    }
}

/// Every object below `v` (outside `unmapped`, whose content OCSF leaves to the producer)
/// meets its requirements.
fn check_objects(path: &str, v: &Value, problems: &mut Vec<String>) {
    let Value::Object(fields) = v else { return };
    for (name, value) in fields {
        if name == "unmapped" {
            continue;
        }
        let here = format!("{path}.{name}");
        let items: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if let (Some(spec), Value::Object(obj)) = (object_of(name), item) {
                for r in spec.required {
                    if !obj.contains_key(*r) {
                        problems.push(format!("{here} lacks required {r}"));
                    }
                }
                if !spec.at_least_one.is_empty()
                    && !spec.at_least_one.iter().any(|k| obj.contains_key(*k))
                {
                    problems.push(format!("{here} has none of {:?}", spec.at_least_one));
                }
            }
            check_objects(&here, item, problems);
        }
    }
}

/// Nothing empty anywhere: no null, empty string, empty list or empty object.
fn check_nothing_empty(path: &str, v: &Value, problems: &mut Vec<String>) {
    match v {
        Value::Null => problems.push(format!("{path} is null")),
        Value::String(s) if s.is_empty() => problems.push(format!("{path} is empty")),
        Value::Array(items) if items.is_empty() => problems.push(format!("{path} is []")),
        Value::Object(fields) if fields.is_empty() => problems.push(format!("{path} is {{}}")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_nothing_empty(&format!("{path}[{i}]"), item, problems);
            }
        }
        Value::Object(fields) => {
            for (k, f) in fields {
                check_nothing_empty(&format!("{path}.{k}"), f, problems);
            }
        }
        _ => {}
    }
}

/// Every way `event` breaks OCSF 1.1.0's definition of `class`.
fn ocsf_problems(event: &Value, class: &Class) -> Vec<String> {
    let mut problems = Vec::new();
    for r in BASE_REQUIRED.iter().chain(class.required) {
        if event.get(r).is_none() {
            problems.push(format!("required {r} missing"));
        }
    }
    let num = |k: &str| event[k].as_u64();
    if num("class_uid") != Some(class.class_uid) {
        problems.push(format!(
            "class_uid {} is not {}",
            event["class_uid"], class.class_uid
        ));
    }
    if num("category_uid") != Some(class.category_uid) {
        problems.push(format!(
            "category_uid {} is not {}",
            event["category_uid"], class.category_uid
        ));
    }
    match num("activity_id") {
        Some(a) if a == 0 || a == 99 || class.activities.contains(&a) => {
            if num("type_uid") != Some(class.class_uid * 100 + a) {
                problems.push(format!(
                    "type_uid {} is not class_uid × 100 + {a}",
                    event["type_uid"]
                ));
            }
        }
        _ => problems.push(format!(
            "activity_id {} is not one of the class's",
            event["activity_id"]
        )),
    }
    if !matches!(num("severity_id"), Some(0..=6 | 99)) {
        problems.push(format!("severity_id {} out of range", event["severity_id"]));
    }
    if num("time").is_none() {
        problems.push(format!("time {} is not a timestamp in ms", event["time"]));
    }
    if event["metadata"]["version"] != "1.1.0" {
        problems.push(format!("metadata.version {}", event["metadata"]["version"]));
    }
    check_objects("", event, &mut problems);
    check_nothing_empty("", event, &mut problems);
    problems
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// Free text an attacker controls (argv, file names), with every character CEF escapes.
const HOSTILE: &str = "a=b|c\\d\ne\rf g=";

fn process(container: bool) -> pb::ProcessEvent {
    pb::ProcessEvent {
        pid: 4242,
        ppid: 1,
        uid: 1000,
        comm: "x|y=z".into(),
        exe_path: format!("/tmp/{HOSTILE}"),
        argv: vec!["sh".into(), "-c".into(), HOSTILE.into()],
        node_name: "node-a".into(),
        exe_sha256: "c".repeat(64),
        ancestors: vec![pb::Ancestor {
            exe_path: "/app/server".into(),
            ..Default::default()
        }],
        workload: Some(pb::WorkloadIdentity {
            cluster: "prod".into(),
            namespace: if container {
                "shop".into()
            } else {
                String::new()
            },
            kind: if container {
                pb::WorkloadKind::Deployment as i32
            } else {
                pb::WorkloadKind::Host as i32
            },
            workload_name: if container {
                "web".into()
            } else {
                "host".into()
            },
            container_name: if container {
                "app".into()
            } else {
                String::new()
            },
        }),
        container: container.then(|| pb::ContainerInfo {
            container_id: "d".repeat(64),
            image: "shop/web:1".into(),
            ..Default::default()
        }),
        context: pb::ExecContext::Descendant as i32,
        completeness: pb::Completeness::Full as i32,
        ..Default::default()
    }
}

fn deviation(p: pb::ProcessEvent, incident: &str) -> pb::StreamRecord {
    pb::StreamRecord {
        cursor: 11,
        at: at(1_800_000_000),
        severity: pb::Severity::Critical as i32,
        incident_id: incident.into(),
        record: Some(pb::stream_record::Record::Deviation(pb::SensorEvent {
            event_id: "ev-1".into(),
            observed_at: at(1_800_000_000),
            process: Some(p),
            ..Default::default()
        })),
    }
}

/// A deviation repeated 250 times within the sensor's interval, sent as one summary.
fn summary() -> pb::StreamRecord {
    let mut r = deviation(process(true), "9");
    if let Some(pb::stream_record::Record::Deviation(d)) = r.record.as_mut() {
        d.executions = 250;
        d.last_observed_at = at(1_800_000_029);
    }
    r
}

fn incident(kind: pb::IncidentKind, state: pb::IncidentState, count: u64) -> pb::StreamRecord {
    let blind = kind == pb::IncidentKind::SensorBlind;
    pb::StreamRecord {
        cursor: 12,
        at: at(1_800_000_001),
        severity: pb::Severity::High as i32,
        incident_id: "9".into(),
        record: Some(pb::stream_record::Record::Incident(pb::Incident {
            id: "9".into(),
            kind: kind as i32,
            state: state as i32,
            count,
            severity: pb::Severity::High as i32,
            first_seen: at(1_800_000_000),
            last_seen: at(1_800_000_001),
            severity_reason: "a shell in a container that never ran one".into(),
            sensor_node: if blind {
                "node-a".into()
            } else {
                String::new()
            },
            workload: (!blind).then(|| process(true).workload.unwrap()),
            // A sensor finding and an overflow name no executable of their own.
            exe_path: if blind || kind == pb::IncidentKind::DeviationOverflow {
                String::new()
            } else {
                format!("/tmp/{HOSTILE}")
            },
            nodes: vec!["node-a".into()],
            ..Default::default()
        })),
    }
}

fn audit(actor: &str, role: &str, result: pb::AuditResult, peer: &str) -> pb::StreamRecord {
    pb::StreamRecord {
        cursor: 13,
        at: at(1_800_000_002),
        record: Some(pb::stream_record::Record::Audit(pb::AuditRecord {
            id: 9,
            at: at(1_800_000_002),
            actor: actor.into(),
            role: role.into(),
            action: "/procguard.v1.BaselineService/ApproveBaseline".into(),
            target: "prod/shop/deployment/web/app".into(),
            result: result as i32,
            detail: if result == pb::AuditResult::Ok {
                String::new()
            } else {
                HOSTILE.into()
            },
            peer: peer.into(),
        })),
        ..Default::default()
    }
}

/// A named record and the class its OCSF event must meet.
type Case = (&'static str, pb::StreamRecord, &'static Class);

/// Every kind of record, in the shapes that leave fields empty: a host process with no
/// container, namespace or incident; a process with no known parent; a sensor finding; an
/// unauthenticated call; a call whose address the server did not see.
fn records() -> Vec<Case> {
    let mut orphan = process(false);
    orphan.ppid = 0;
    orphan.ancestors.clear();
    orphan.exe_sha256.clear();
    orphan.completeness = pb::Completeness::Partial as i32;
    orphan.missing = vec!["argv".into()];
    orphan.argv.clear();
    use pb::{AuditResult as R, IncidentKind as K, IncidentState as S};
    vec![
        (
            "container deviation",
            deviation(process(true), "9"),
            &PROCESS_ACTIVITY,
        ),
        (
            "host deviation",
            deviation(process(false), ""),
            &PROCESS_ACTIVITY,
        ),
        (
            "partial orphan deviation",
            deviation(orphan, ""),
            &PROCESS_ACTIVITY,
        ),
        ("summary of repeats", summary(), &PROCESS_ACTIVITY),
        (
            "new incident",
            incident(K::Deviation, S::Open, 1),
            &DETECTION_FINDING,
        ),
        (
            "exec session incident",
            incident(K::ExecSession, S::Acknowledged, 3),
            &DETECTION_FINDING,
        ),
        (
            "overflow incident",
            incident(K::DeviationOverflow, S::Open, 4000),
            &DETECTION_FINDING,
        ),
        (
            "resolved blind incident",
            incident(K::SensorBlind, S::Resolved, 2),
            &DETECTION_FINDING,
        ),
        (
            "approved call",
            audit("alice", "approver", R::Ok, "10.0.0.7:50112"),
            &API_ACTIVITY,
        ),
        (
            "anonymous denied call",
            audit("anonymous", "", R::Denied, "[fd00::7]:443"),
            &API_ACTIVITY,
        ),
        (
            "call without a peer",
            audit("alice", "admin", R::Failed, ""),
            &API_ACTIVITY,
        ),
    ]
}

#[test]
fn every_ocsf_record_meets_its_class_schema() {
    for (what, record, class) in records() {
        let event = ocsf(&record);
        let problems = ocsf_problems(&event, class);
        assert!(problems.is_empty(), "{what}: {problems:#?}\n{event:#}");
    }
}

#[test]
fn the_ocsf_checker_finds_what_it_looks_for() {
    // A checker that passes everything proves nothing: break a conforming event each way.
    let good = ocsf(&deviation(process(true), "9"));
    let broken = |f: &dyn Fn(&mut Value)| {
        let mut e = good.clone();
        f(&mut e);
        ocsf_problems(&e, &PROCESS_ACTIVITY)
    };
    assert!(ocsf_problems(&good, &PROCESS_ACTIVITY).is_empty());
    type Breakage<'a> = (&'a str, &'a dyn Fn(&mut Value));
    let cases: [Breakage<'_>; 8] = [
        ("required device missing", &|e| {
            e.as_object_mut().unwrap().remove("device");
        }),
        ("type_uid", &|e| e["type_uid"] = 100702.into()),
        ("activity_id", &|e| e["activity_id"] = 7.into()),
        ("severity_id", &|e| e["severity_id"] = 7.into()),
        (".process.file lacks required type_id", &|e| {
            e["process"]["file"]
                .as_object_mut()
                .unwrap()
                .remove("type_id");
        }),
        (".actor has none of", &|e| {
            e["actor"] = serde_json::json!({"app_name": "x"})
        }),
        (".device has none of", &|e| {
            e["device"] = serde_json::json!({"type_id": 0})
        }),
        (".container.image.name is empty", &|e| {
            e["container"]["image"]["name"] = "".into()
        }),
    ];
    for (want, f) in cases {
        let problems = broken(f);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "no {want:?} in {problems:#?}"
        );
    }
}

/// Splits a CEF line at its unescaped `|`: seven header fields, then the extension.
fn cef_parts(line: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if parts.len() <= 7 => {
                parts.last_mut().unwrap().push(c);
                if let Some(n) = chars.next() {
                    parts.last_mut().unwrap().push(n);
                }
            }
            '|' if parts.len() < 8 => parts.push(String::new()),
            c => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

/// A header field unescaped; `None` when it holds an unescaped `\` before anything but `\` or
/// `|`.
fn cef_header_value(field: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | '|')) => out.push(n),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The extension's key-value pairs, values unescaped. A key is the word before an unescaped
/// `=`; a value runs to the space before the next key.
fn cef_extension(ext: &str) -> Result<Vec<(String, String)>, String> {
    // Positions of unescaped '=' in the raw text.
    let bytes: Vec<char> = ext.chars().collect();
    let mut equals = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            '\\' => i += 2,
            '=' => {
                equals.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    let mut pairs = Vec::new();
    for (n, &eq) in equals.iter().enumerate() {
        let key_start = bytes[..eq]
            .iter()
            .rposition(|c| *c == ' ')
            .map_or(0, |p| p + 1);
        let key: String = bytes[key_start..eq].iter().collect();
        let value_end = match equals.get(n + 1) {
            Some(&next) => bytes[..next]
                .iter()
                .rposition(|c| *c == ' ')
                .ok_or_else(|| format!("no space before the key ending at {next}"))?,
            None => bytes.len(),
        };
        let raw: String = bytes[eq + 1..value_end.max(eq + 1)].iter().collect();
        let mut value = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('\\') => value.push('\\'),
                    Some('=') => value.push('='),
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    other => return Err(format!("{key}: bad escape \\{other:?}")),
                },
                '\n' | '\r' => return Err(format!("{key}: a raw line break")),
                c => value.push(c),
            }
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Every way a CEF line breaks the format's rules.
fn cef_problems(line: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let parts = cef_parts(line);
    if parts.len() != 8 {
        return vec![format!("{} header fields, not 7", parts.len() - 1)];
    }
    if parts[0] != "CEF:0" {
        problems.push(format!("version field {:?}", parts[0]));
    }
    for (n, field) in parts[1..7].iter().enumerate() {
        match cef_header_value(field) {
            None => problems.push(format!("header field {} badly escaped: {field:?}", n + 1)),
            Some(v) if v.is_empty() => problems.push(format!("header field {} empty", n + 1)),
            Some(v) if v.contains(['\n', '\r']) => {
                problems.push(format!("header field {} has a line break", n + 1))
            }
            Some(_) => {}
        }
    }
    if !matches!(parts[6].parse::<u8>(), Ok(0..=10)) {
        problems.push(format!("severity {:?} is not 0..10", parts[6]));
    }
    let pairs = match cef_extension(&parts[7]) {
        Ok(p) => p,
        Err(e) => return [problems, vec![e]].concat(),
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &pairs {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push(format!("key {k:?} is not a CEF key"));
        }
        if !seen.insert(k.clone()) {
            problems.push(format!("key {k} twice"));
        }
        if v.is_empty() {
            problems.push(format!("key {k} without a value"));
        }
        if ["rt", "start", "end", "cnt", "cn1", "spid", "suid"].contains(&k.as_str())
            && v.parse::<u64>().is_err()
        {
            problems.push(format!("{k}={v:?} is not a number"));
        }
        if let Some(base) = k.strip_suffix("Label") {
            if !pairs.iter().any(|(other, _)| other == base) {
                problems.push(format!("{k} without {base}"));
            }
        }
    }
    problems
}

#[test]
fn every_cef_line_follows_the_format() {
    for (what, record, _) in records() {
        let line = cef(&record);
        let problems = cef_problems(&line);
        assert!(problems.is_empty(), "{what}: {problems:#?}\n{line}");
        assert!(
            !line.contains(['\n', '\r']),
            "{what}: a line break in {line:?}"
        );
    }
}

/// A summary says how many executions it stands for in every format, and from when to when;
/// a single execution counts one.
#[test]
fn a_summary_of_repeats_carries_its_count_everywhere() {
    let v = ocsf(&summary());
    assert_eq!(v["count"], 250, "{v}");
    assert_eq!(v["start_time"], 1_800_000_000_000u64, "{v}");
    assert_eq!(v["end_time"], 1_800_000_029_000u64, "{v}");
    let single = ocsf(&deviation(process(true), "9"));
    assert!(
        single.get("count").is_none() && single.get("end_time").is_none(),
        "{single}"
    );
    let pairs = |line: String| -> std::collections::HashMap<String, String> {
        cef_extension(&cef_parts(&line)[7])
            .unwrap()
            .into_iter()
            .collect()
    };
    assert_eq!(pairs(cef(&summary()))["cnt"], "250");
    assert_eq!(pairs(cef(&deviation(process(true), "9")))["cnt"], "1");
    let j = super::jsonl(&Streamed::read(&summary()).unwrap());
    assert_eq!(j["deviation"]["executions"], 250, "{j}");
    assert!(j["deviation"]["last_observed_at"].is_string(), "{j}");
}

#[test]
fn hostile_text_round_trips_through_cef() {
    let line = cef(&deviation(process(true), "9"));
    let parts = cef_parts(&line);
    let pairs: std::collections::HashMap<String, String> =
        cef_extension(&parts[7]).unwrap().into_iter().collect();
    assert_eq!(pairs["filePath"], format!("/tmp/{HOSTILE}"), "{line}");
    assert_eq!(pairs["cs4"], format!("sh -c {HOSTILE}"), "{line}");
    assert_eq!(pairs["sproc"], "x|y=z", "{line}");
    assert_eq!(pairs["cs1Label"], "workload");
    // The audit detail (an error message, which may quote the caller) too.
    let line = cef(&audit(
        "anonymous",
        "",
        pb::AuditResult::Denied,
        "10.0.0.7:1",
    ));
    let parts = cef_parts(&line);
    let pairs: std::collections::HashMap<String, String> =
        cef_extension(&parts[7]).unwrap().into_iter().collect();
    assert_eq!(pairs["msg"], HOSTILE, "{line}");
    assert_eq!(
        cef_header_value(&parts[4]).unwrap(),
        "procguard:audit:/procguard.v1.BaselineService/ApproveBaseline"
    );
}

#[test]
fn the_cef_checker_finds_what_it_looks_for() {
    let good = cef(&deviation(process(true), "9"));
    assert!(cef_problems(&good).is_empty());
    for (bad, want) in [
        ("CEF:0|a|b|1|sig|name|11|rt=1", "severity"),
        ("CEF:0|a|b|1|sig|name|5", "header fields"),
        ("CEF:0|a|b|1||name|5|rt=1", "empty"),
        ("CEF:0|a|b|1|s|n|5|cs1Label=x rt=1", "cs1Label without cs1"),
        ("CEF:0|a|b|1|s|n|5|rt=1 rt=2", "twice"),
        ("CEF:0|a|b|1|s|n|5|rt=x", "not a number"),
        ("CEF:0|a|b|1|s|n|5|msg=a\\q", "bad escape"),
        ("CEF:0|a|b|1|s|n|5|na-me=1", "not a CEF key"),
    ] {
        let problems = cef_problems(bad);
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{bad}: no {want:?} in {problems:?}"
        );
    }
}
