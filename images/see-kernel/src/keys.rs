//! The PTO's verifying key, embedded when the image was built (see `build.rs`).

// Read by the virtio-prefetch driver glue, which lands next.
#[allow(dead_code)]
/// SEC1 uncompressed P-384 public key (97 bytes): the only key whose bundles the SEE accepts.
pub static PTO_VERIFYING_KEY: [u8; 97] =
    *include_bytes!(concat!(env!("OUT_DIR"), "/pto_verifying_key.bin"));
