//! docs/openapi.json against the running server: every documented route answers every
//! documented status (and no other), and each JSON body has the properties its schema
//! requires. One SEE on KVM, a real daemon and a real HTTP client. Skipped without /dev/kvm
//! unless SEE_REQUIRE_KVM is set.

mod common;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use see_daemon::config::PredictorKind;
use serde_json::Value;

type Seen = Arc<Mutex<BTreeSet<(String, String, u16)>>>;

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/openapi.json"))
        .expect("OpenAPI JSON")
}

/// The documented (method, path, status) triples.
fn documented(spec: &Value) -> BTreeSet<(String, String, u16)> {
    let mut out = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            for status in op["responses"].as_object().expect("responses").keys() {
                out.insert((
                    method.clone(),
                    path.clone(),
                    status.parse().expect("status"),
                ));
            }
        }
    }
    out
}

/// Checks `body` against the schema of (method, path, status): required properties present.
fn check_body(spec: &Value, method: &str, path: &str, status: u16, body: &str) {
    let response = &spec["paths"][path][method]["responses"][status.to_string()];
    let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    let name = schema["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .expect("a $ref");
    let schema = &spec["components"]["schemas"][name];
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {body}"));
    for field in schema["required"].as_array().expect("required") {
        let field = field.as_str().expect("name");
        assert!(
            value.get(field).is_some(),
            "{method} {path} {status}: {name} lacks {field:?}: {body}"
        );
    }
}

struct Client {
    url: String,
    agent: ureq::Agent,
    seen: Seen,
    spec: Value,
}

impl Client {
    fn call(&self, method: &str, route: &str, path: &str, body: Option<&[u8]>) -> u16 {
        let url = format!("{}{path}", self.url);
        let r = match (method, body) {
            ("post", Some(b)) => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(b),
            ("delete", _) => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        };
        let mut r = r.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        check_body(&self.spec, method, route, status, &text);
        self.seen
            .lock()
            .expect("seen")
            .insert((method.into(), route.into(), status));
        status
    }

    fn run(&self, body: &str) -> u16 {
        self.call(
            "post",
            "/v1/requests",
            "/v1/requests",
            Some(body.as_bytes()),
        )
    }
}

#[test]
fn every_documented_route_and_status_is_what_the_server_answers() {
    if !see_e2e::kvm_available() {
        return;
    }
    let spec = spec();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(dir.path(), PredictorKind::Markov);
    config.queue_depth = 1;
    config.origin_latency_ms = 300.0;
    let catalogue = config.load_catalogue().expect("catalogue");
    // "checkout"'s requests fail in the guest: a newer version of one of its workload
    // resources whose bytes do not process.
    let store = see_daemon::guest::open_filled(&catalogue, &config.store, None).expect("store");
    let failing = catalogue
        .requests
        .iter()
        .rev()
        .find_map(|r| {
            r.tasks
                .iter()
                .flat_map(|&t| catalogue.tasks[t].resources.iter().copied())
                .find(|&i| catalogue.workload_spec(&catalogue.resources[i]).is_some())
                .map(|i| (r.name.clone(), i))
        })
        .expect("a request with a workload resource");
    let resource = &catalogue.resources[failing.1];
    let mut bad = catalogue.content(resource).expect("content");
    let mid = bad.len() / 2;
    bad[mid] ^= 0xFF;
    store
        .add(
            see_pto::online::WireIds::resource(failing.1),
            resource.version + 1,
            virtio_prefetch_wire::ResourceKind::Data,
            1,
            &bad,
        )
        .expect("add");
    let ok_kind = catalogue
        .requests
        .iter()
        .find(|r| {
            !r.tasks
                .iter()
                .any(|&t| catalogue.tasks[t].resources.contains(&failing.1))
        })
        .expect("a request that does not use the bad resource")
        .name
        .clone();
    let t = Arc::new(common::start_with(dir, config));
    let client = Arc::new(Client {
        url: t.url(),
        agent: common::agent(),
        seen: Seen::default(),
        spec: spec.clone(),
    });
    let req = |kind: &str| format!(r#"{{"session":"o","app":"shop","type":"{kind}"}}"#);
    assert_eq!(client.call("get", "/v1/health", "/v1/health", None), 200);
    // 429: one slow request holds the only place: the first one, whose resources are
    // demand-fetched (the guest caches them after, so a later one of its type is fast).
    let slow = {
        let (client, body) = (client.clone(), req(&ok_kind));
        std::thread::spawn(move || client.run(&body))
    };
    let mut busy = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(10));
        if client.run(&req(&ok_kind)) == 429 {
            busy = true;
            break;
        }
    }
    assert!(busy, "no 429 while the only place was taken");
    assert_eq!(slow.join().expect("slow"), 200);
    assert_eq!(client.run(&req(&ok_kind)), 200);
    assert_eq!(client.run(r#"{"session":"o","app":"shop","type":"#), 400);
    assert_eq!(client.run(&req("teleport")), 404);
    let big = format!(r#"{{"session":"{}"}}"#, "x".repeat(64 * 1024));
    assert_eq!(client.run(&big), 413);
    assert_eq!(client.run(&req(&failing.0)), 502);
    assert_eq!(
        client.call("delete", "/v1/sessions/{session}", "/v1/sessions/o", None),
        204
    );
    assert_eq!(
        client.call("delete", "/v1/sessions/{session}", "/v1/sessions/o", None),
        404
    );
    assert_eq!(client.call("get", "/v1/stats", "/v1/stats", None), 200);
    assert_eq!(client.call("get", "/metrics", "/metrics", None), 200);
    common::sigkill(t.see.vmm_pid());
    let mut gone = false;
    for _ in 0..100 {
        if client.run(&req(&ok_kind)) == 503 {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone, "no 503 after the VMM died");
    assert_eq!(client.call("get", "/v1/health", "/v1/health", None), 503);
    let seen = client.seen.lock().expect("seen").clone();
    assert_eq!(
        seen,
        documented(&spec),
        "what the server answered (left) against docs/openapi.json (right)"
    );
}
