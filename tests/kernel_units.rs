//! Host-side unit tests of the guest kernel's pure parsing code (the kernel itself builds for
//! bare metal without a test harness): its modules are included here as they are.

#[path = "../images/see-kernel/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;
