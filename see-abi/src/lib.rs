//! The contract between the SEE's host side (`see-vmm`, the tests, the daemon) and its guest
//! (the `see-kernel` image): everything both sides must agree on bit for bit, written once.
//!
//! - [`ports`]: the I/O ports (exit, boot progress, serial) and the codes written to them;
//! - [`exit`]: the VMM's exit codes and what each means;
//! - [`memory`]: the guest-physical memory map (shared window, virtio-mmio, APICs, limits);
//! - [`bootinfo`]: the guest's defensive parser of the PVH boot information;
//! - [`layout`]: the boot layout check (RAM, shared window, devices, kernel and heap apart);
//! - [`cmdline`]: the kernel command line, its keys and the virtio-mmio device syntax;
//! - [`entropy`]: the rule for the guest's session-nonce source (RDRAND/RDSEED or refuse);
//! - [`serve`]: the serve app's operations, their argument codec and completion statuses.
//!
//! The crate is `no_std` without dependencies (feature `alloc` adds the `Vec` helpers, `std`
//! implies it) so that the bare-metal guest, the host crates and the fuzz targets all link the
//! same code. Versioned like hermit-os/uhyve's `uhyve-interface`: see [`ABI_VERSION`].

#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod bootinfo;
pub mod cmdline;
pub mod entropy;
pub mod exit;
pub mod layout;
pub mod memory;
pub mod ports;
pub mod serve;

/// The version of this contract.
///
/// Bump it in the same commit as any change that an already-built image or an already-built
/// VMM would misread: a port, a code's meaning, an address or limit of the memory map, the
/// E820 type of the shared window, a command-line key's syntax, an operation code or the
/// argument layout. Additions that old peers ignore (a new operation, a new key, a new exit
/// code used only by new images) need no bump. The guest image and the VMM are built from one
/// tree today, so the version documents compatibility rather than negotiating it; a peer that
/// must accept images built elsewhere compares it (the kernel prints it on its banner line).
pub const ABI_VERSION: u32 = 1;
