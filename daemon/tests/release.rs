//! The release daemon contains no fault injection. The backend's fault-injection code logs a
//! marker string; it must be absent from the release `see-daemon` (built alone, as xtask and
//! `see up` build it), and present in this test build's daemon, whose backend has the feature
//! (the end-to-end test crate enables it), so that the check can fail.

use see_prefetch_backend::FAULT_INJECTION_MARKER;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_release_daemon_has_no_fault_injection_and_the_test_build_has() {
    let release = see_e2e::daemon_bin();
    let bytes =
        std::fs::read(release).unwrap_or_else(|e| panic!("cannot read {}: {e}", release.display()));
    assert!(
        !contains(&bytes, FAULT_INJECTION_MARKER.as_bytes()),
        "{} contains fault injection: the `fault-injection` feature leaked into the release build",
        release.display()
    );
    let test_build = std::fs::read(env!("CARGO_BIN_EXE_see-daemon")).expect("the test build");
    assert!(
        contains(&test_build, FAULT_INJECTION_MARKER.as_bytes()),
        "the control: the test build's daemon has the feature, so the marker must be found"
    );
}
