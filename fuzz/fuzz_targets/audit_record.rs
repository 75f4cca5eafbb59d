//! Any bytes as an audit log (`see-audit`): the verifier must never panic, with or without
//! trusted keys; what the signature check accepts the chain check accepts; a verified log's
//! counts are consistent.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use see_audit::{self as audit, verify_anchored, verify_bytes, KeySigner, TrustedKeys};

fn keys() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = p384::ecdsa::SigningKey::from_slice(&[1u8; 48]).expect("a valid scalar");
        TrustedKeys::none().with(audit::CheckpointSigner::verifying_key(&KeySigner::new(key)))
    })
}

fuzz_target!(|data: &[u8]| {
    let chain = verify_bytes(data);
    let anchored = verify_anchored(data, keys());
    if let Ok(a) = &anchored {
        assert_eq!(
            chain.as_ref().ok(),
            Some(a),
            "the signatures add checks, never remove one"
        );
    }
    if let Ok(v) = chain {
        assert!(v.unanchored() <= v.records);
        assert!(v.checkpoints <= v.records);
        assert_eq!(
            v.head.map(|h| h.seq + 1),
            (v.records > 0).then_some(v.records)
        );
        if let Err(unclosed) = v.require_closed() {
            assert_eq!(unclosed.unanchored, v.unanchored());
        }
    }
});
