//! The baselines end to end (the VMM on KVM, the daemon process, a real HTTP client): `push`
//! stages a request type's recorded set before the request, and `reactive-nocache` runs a
//! guest without its cache. Skipped without /dev/kvm unless SEE_REQUIRE_KVM is set.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{agent, kinds, start};
use see_daemon::{api::RunResponse, config::PredictorKind};
use see_pto::metadata::ServiceCatalogue;

/// Runs `kind` for `session`; the checked answer.
fn run(t: &common::TestSee, a: &ureq::Agent, session: &str, kind: &str) -> RunResponse {
    let (status, text) = t.run(a, session, kind);
    assert_eq!(status, 200, "{kind}: {text}");
    let r: RunResponse = serde_json::from_str(&text).expect("RunResponse");
    t.check(&r);
    r
}

/// Resource wire ids of request type `name`.
fn resources(cat: &ServiceCatalogue, name: &str) -> HashSet<u64> {
    cat.resources_of(name)
        .iter()
        .map(|r| cat.resource_wire_id(r).expect("wire id"))
        .collect()
}

#[test]
fn push_stages_the_recorded_set_before_the_request() {
    if !see_e2e::kvm_available() {
        return;
    }
    // The type with the most resources of its own (claimed by no other type); the guest's
    // cache holds the largest request but not everything, so once the other types have run,
    // that type's own resources are the least recently used and the first to go.
    let cat = ServiceCatalogue::default_catalogue();
    let mut cat_scaled = cat.clone();
    cat_scaled.scale_sizes(common::SIZE_SCALE);
    let cat = cat_scaled;
    let own = |k: &str| -> u64 {
        cat.resources_of(k)
            .iter()
            .filter(|r| {
                cat.requests
                    .iter()
                    .filter(|o| o.name != k)
                    .all(|o| !cat.resources_of(&o.name).contains(r))
            })
            .map(|r| r.size)
            .sum()
    };
    let names = kinds(&cat);
    let home = names
        .iter()
        .max_by_key(|k| own(k.as_str()))
        .expect("a type")
        .clone();
    let largest = names
        .iter()
        .map(|k| cat.resources_of(k).iter().map(|r| r.size).sum::<u64>())
        .max()
        .unwrap_or(0);
    let all: u64 = cat.resources.iter().map(|r| r.size).sum();
    let budget = largest.max(64 << 10).next_multiple_of(1024);
    assert!(
        own(home.as_str()) > 0 && all > budget + own(home.as_str()),
        "the test needs {home} to lose resources: {} own bytes, budget {budget}, {all} in all",
        own(home.as_str())
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config(dir.path(), PredictorKind::Push);
    config.budget = budget;
    let t = common::start_with(dir, config);
    let cat = &t.catalogue;
    let home = home.as_str();
    let resources_of_home = resources(cat, home);
    let others: Vec<String> = kinds(cat).into_iter().filter(|k| k != home).collect();
    let a = agent();
    // Nothing recorded yet: everything is demanded.
    let first = run(&t, &a, "s", home);
    assert_eq!(first.prefetch.staged_hits, 0, "{first:?}");
    assert!(first.prefetch.demands > 0);
    for k in &others {
        run(&t, &a, "s", k);
    }
    // The same type again, from another session: its recorded set is pushed and staged before the
    // dispatch, so nothing is demanded.
    let last = run(&t, &a, "u", home);
    assert_eq!(last.prefetch.demands, 0, "{last:?}");
    let (audit, id) = (t.config.audit.clone(), last.request_id);
    let (daemon, vmm) = t.see.stop(Duration::from_secs(60)).expect("stop");
    assert!(daemon.success() && vmm.success(), "{daemon} {vmm}");
    let records = common::audit_records(&audit);
    let pushed: Vec<u64> = records
        .iter()
        .filter(|r| r["kind"] == "prefetch" && r["fields"]["request"].as_u64() == Some(id))
        .map(|r| r["fields"]["resource"].as_u64().expect("resource"))
        .collect();
    assert!(
        !pushed.is_empty(),
        "{home} lost resources: some were pushed"
    );
    assert!(
        pushed.iter().all(|r| resources_of_home.contains(r)),
        "{pushed:?}"
    );
    // Every claim a hit: the pushed resources staged, the rest cached.
    let claims = first.prefetch.demands + first.prefetch.staged_hits;
    assert_eq!(last.prefetch.staged_hits, claims, "{last:?}");
    let claim_hits = records
        .iter()
        .filter(|r| {
            r["kind"] == "claim"
                && r["fields"]["report"] == "claim_hit"
                && pushed.contains(&r["fields"]["resource"].as_u64().unwrap_or(0))
        })
        .count();
    assert_eq!(
        claim_hits,
        pushed.len(),
        "every pushed resource claimed once"
    );
    // Only push orders: the mode predicts nothing.
    let ordered: HashSet<u64> = records
        .iter()
        .filter(|r| r["kind"] == "prefetch")
        .filter_map(|r| r["fields"]["request"].as_u64())
        .collect();
    assert_eq!(ordered, HashSet::from([id]), "pushed only for the repeat");
}

#[test]
fn reactive_nocache_runs_a_guest_without_its_cache() {
    if !see_e2e::kvm_available() {
        return;
    }
    let t = start(PredictorKind::ReactiveNocache);
    let path = t.see.run_dir().join("console.log");
    let mut console = String::new();
    for _ in 0..100 {
        console = std::fs::read_to_string(&path).unwrap_or_default();
        if console.contains("prefetch device ready") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        console.contains("cache off, 1 demands at once"),
        "{console}"
    );
    let a = agent();
    let first = run(&t, &a, "s", "home");
    let again = run(&t, &a, "s", "home");
    // Nothing kept: the repeat demands every resource again; no hits at all.
    assert!(first.prefetch.demands > 0);
    assert_eq!(again.prefetch.demands, first.prefetch.demands, "{again:?}");
    assert_eq!(again.prefetch.staged_hits, 0, "{again:?}");
    let (daemon, vmm) = t.see.stop(Duration::from_secs(60)).expect("stop");
    assert!(daemon.success() && vmm.success(), "{daemon} {vmm}");
}
