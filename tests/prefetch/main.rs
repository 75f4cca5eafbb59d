//! End-to-end tests of virtio-prefetch on real KVM: the backend runs
//! in-process on a temporary socket and store, the VMM boots the guest's `serve` app with
//! `--prefetch-socket`, and the test drives the guest through the backend's `dispatch` and
//! reads what the guest prints. Skipped without /dev/kvm unless SEE_REQUIRE_KVM is set.

mod access;
mod cabi;
mod failure;
mod floors;
mod private_memory;
mod staging;
mod tamper;
mod wasm;
