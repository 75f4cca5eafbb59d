//! The serve app's `OP_C_CLAIM`: availability and claims through the driver's C ABI
//! (`see_prefetch_available`, `see_claim_prefetch`, guest-driver/include/see_prefetch.h),
//! called as the `extern "C"` functions a C task links against, not through Rust paths. The
//! driver is installed for them at bring-up (`see_guest_driver::ffi::install` in
//! [`super::setup`]); the app drops its lock on the driver around these calls.

use alloc::{string::String, vec};
use core::fmt::Write;

use see_guest_driver::ffi::{
    SEE_E_BROKEN, SEE_E_BUSY, SEE_E_DENIED, SEE_E_INVALID, SEE_E_NO_DRIVER, SEE_E_REFUSED,
    SEE_E_REJECTED, SEE_E_TIMEOUT, SEE_E_TOO_SMALL, SEE_OK,
};
use sha2::{Digest, Sha384};

extern "C" {
    fn see_prefetch_available(app_id: u32, task_id: u64, resource_id: u64) -> bool;
    fn see_claim_prefetch(
        app_id: u32,
        task_id: u64,
        resource_id: u64,
        out: *mut u8,
        out_cap: usize,
        out_len: *mut usize,
    ) -> i32;
}

/// The largest buffer a claim is given (the device's largest resource, 16 MiB).
const MAX_CAP: u64 = 16 << 20;

/// The header's name for a return code.
fn name(rc: i32) -> &'static str {
    match rc {
        SEE_OK => "SEE_OK",
        SEE_E_NO_DRIVER => "SEE_E_NO_DRIVER",
        SEE_E_BROKEN => "SEE_E_BROKEN",
        SEE_E_DENIED => "SEE_E_DENIED",
        SEE_E_TOO_SMALL => "SEE_E_TOO_SMALL",
        SEE_E_REFUSED => "SEE_E_REFUSED",
        SEE_E_REJECTED => "SEE_E_REJECTED",
        SEE_E_TIMEOUT => "SEE_E_TIMEOUT",
        SEE_E_BUSY => "SEE_E_BUSY",
        SEE_E_INVALID => "SEE_E_INVALID",
        _ => "unknown",
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn available(app: u32, task: u64, res: u64) -> bool {
    // SAFETY: plain integer arguments; the driver's lock is not held here (the caller dropped
    // its guard), and this is not the device's interrupt handler.
    unsafe { see_prefetch_available(app, task, res) }
}

/// As `app`, asks `see_prefetch_available`, then `see_claim_prefetch` into a buffer of `cap`
/// bytes (at most 16 MiB), then asks again: `see: cabi app=A task=T res=R available=0|1
/// rc=N code=SEE_... len=L sha384=HEX|- available_after=0|1` (the digest of the bytes written,
/// on success only; `len` is what the function stored in `*out_len`).
pub fn claim(app: u32, task: u64, res: u64, cap: u64) {
    let before = available(app, task, res);
    let mut buf = vec![0u8; cap.min(MAX_CAP) as usize];
    let mut len = 0usize;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes (a dangling but non-null pointer
    // when empty, with a capacity of 0) and `len` for one usize; neither is the driver's.
    let rc = unsafe { see_claim_prefetch(app, task, res, buf.as_mut_ptr(), buf.len(), &mut len) };
    let after = available(app, task, res);
    let digest = match buf.get(..len) {
        Some(bytes) if rc == SEE_OK => hex(&Sha384::digest(bytes)),
        _ => "-".into(),
    };
    println!(
        "see: cabi app={app} task={task} res={res} available={} rc={rc} code={} len={len} sha384={digest} available_after={}",
        u8::from(before),
        name(rc),
        u8::from(after)
    );
}
