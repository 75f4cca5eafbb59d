//! The virtio-prefetch device in the SEE: the kernel's platform glue for `see-guest-driver`,
//! driver bring-up from the command line and the memory map, and the guest apps that claim
//! prefetched resources.

pub mod entropy;
pub mod platform;
