//! The C ABI: `see_prefetch_available` and `see_claim_prefetch`, over one driver instance the
//! embedder installs once with [`install`]. The C declarations are in
//! `guest-driver/include/see_prefetch.h`.
//!
//! The installed driver sits behind a spin lock that these functions only *try* to take: a
//! call that finds it held (another CPU inside the driver, or a call from an interrupt handler
//! that interrupted the driver) returns [`SEE_E_BUSY`] instead of spinning. Never call them
//! from the device's interrupt handler; use [`crate::InterruptHandle`] there.
//!
//! An embedder that installs the driver and also drives it from Rust (serving requests,
//! completing them) holds it through [`Installed`], a lock guard that derefs to the
//! [`Driver`], and drops that guard around the code that calls the C functions.

use alloc::boxed::Box;
use core::{
    any::Any,
    ops::{Deref, DerefMut},
    ptr::NonNull,
};

use spin::{Mutex, MutexGuard};

use crate::{driver::ClaimError, platform::Platform, Driver, Resource};

/// Success.
pub const SEE_OK: i32 = 0;
/// No driver installed.
pub const SEE_E_NO_DRIVER: i32 = -1;
/// The device is broken or gone (reset it, or run without prefetch).
pub const SEE_E_BROKEN: i32 = -2;
/// The app may not claim this (task, resource).
pub const SEE_E_DENIED: i32 = -3;
/// `out_cap` is too small; `*out_len` holds the length needed and the resource stays staged.
pub const SEE_E_TOO_SMALL: i32 = -4;
/// The device refused the demand fetch, or its answer was malformed.
pub const SEE_E_REFUSED: i32 = -5;
/// The bundle delivered for the demand failed verification.
pub const SEE_E_REJECTED: i32 = -6;
/// The device missed its deadline (it is now marked broken).
pub const SEE_E_TIMEOUT: i32 = -7;
/// The driver is in use (lock held) or ctrlq is full; retry.
pub const SEE_E_BUSY: i32 = -8;
/// A null pointer where one is required.
pub const SEE_E_INVALID: i32 = -9;

/// The claim operations the C ABI needs, object-safe so the global can hold any platform.
pub trait ClaimApi: Send {
    /// [`Driver::available`].
    fn available(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> bool;
    /// [`Driver::staged_len`].
    fn staged_len(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> Option<usize>;
    /// [`Driver::claim_or_fetch`] (any version).
    fn claim_or_fetch(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
    ) -> Result<Resource, ClaimError>;
    /// Puts a claimed resource back (the caller's buffer was too small).
    fn restage(&mut self, resource: Resource);
    /// The driver itself, for the embedder's other calls (`poll`, `next_request`,
    /// `complete_request`, `reset`, ...): `d.as_any().downcast_mut::<Driver<MyPlatform>>()`.
    fn as_any(&mut self) -> &mut dyn Any;
}

impl<P: Platform + Send + 'static> ClaimApi for Driver<P> {
    fn available(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> bool {
        Driver::available(self, app_id, task_id, resource_id)
    }
    fn staged_len(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> Option<usize> {
        Driver::staged_len(self, app_id, task_id, resource_id)
    }
    fn claim_or_fetch(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
    ) -> Result<Resource, ClaimError> {
        Driver::claim_or_fetch(self, app_id, task_id, resource_id, 0)
    }
    fn restage(&mut self, resource: Resource) {
        Driver::restage(self, resource);
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

type Slot = Mutex<Option<Box<dyn ClaimApi>>>;

static DRIVER: Slot = Mutex::new(None);

/// Installs the driver the C ABI uses, returning any previous one.
pub fn install<P: Platform + Send + 'static>(driver: Driver<P>) -> Option<Box<dyn ClaimApi>> {
    DRIVER.lock().replace(Box::new(driver))
}

/// Removes the installed driver.
pub fn uninstall() -> Option<Box<dyn ClaimApi>> {
    DRIVER.lock().take()
}

/// Runs `f` on the installed driver (for Rust code after [`install`]); `None` if there is
/// none or it is busy.
pub fn with_installed<R>(f: impl FnOnce(&mut dyn ClaimApi) -> R) -> Option<R> {
    call(f).ok()
}

/// The installed driver, locked, as the [`Driver`] it is: while this guard lives the C
/// functions answer [`SEE_E_BUSY`] (and `see_prefetch_available` false); drop it before
/// calling them, and take it again with [`Installed::lock`] afterwards.
pub struct Installed<P: Platform + Send + 'static> {
    _guard: MutexGuard<'static, Option<Box<dyn ClaimApi>>>,
    driver: NonNull<Driver<P>>,
}

impl<P: Platform + Send + 'static> core::fmt::Debug for Installed<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Installed").finish_non_exhaustive()
    }
}

impl<P: Platform + Send + 'static> Installed<P> {
    /// Locks the driver [`install`]ed for the C ABI. Fails with [`SEE_E_BUSY`] when it is
    /// locked already, or [`SEE_E_NO_DRIVER`] when none is installed or the installed one
    /// drives another platform than `P`.
    pub fn lock() -> Result<Self, i32> {
        Self::lock_slot(&DRIVER)
    }

    fn lock_slot(slot: &'static Slot) -> Result<Self, i32> {
        let mut guard = slot.try_lock().ok_or(SEE_E_BUSY)?;
        let driver = guard
            .as_mut()
            .and_then(|d| d.as_any().downcast_mut::<Driver<P>>())
            .map(NonNull::from)
            .ok_or(SEE_E_NO_DRIVER)?;
        Ok(Self {
            _guard: guard,
            driver,
        })
    }
}

impl<P: Platform + Send + 'static> Deref for Installed<P> {
    type Target = Driver<P>;
    fn deref(&self) -> &Driver<P> {
        // SAFETY: `driver` points into the boxed driver in the slot this guard locks: nothing
        // else can reach the slot (and so replace or drop the box, whose heap allocation does
        // not move) until the guard is dropped, which ends `self` and every borrow of it.
        unsafe { self.driver.as_ref() }
    }
}

impl<P: Platform + Send + 'static> DerefMut for Installed<P> {
    fn deref_mut(&mut self) -> &mut Driver<P> {
        // SAFETY: as in `deref`; `&mut self` makes this the only live reference.
        unsafe { self.driver.as_mut() }
    }
}

/// [`with_installed`], telling a busy driver ([`SEE_E_BUSY`]) from none ([`SEE_E_NO_DRIVER`]).
fn call<R>(f: impl FnOnce(&mut dyn ClaimApi) -> R) -> Result<R, i32> {
    let mut guard = DRIVER.try_lock().ok_or(SEE_E_BUSY)?;
    let d = guard.as_mut().ok_or(SEE_E_NO_DRIVER)?;
    Ok(f(d.as_mut()))
}

fn code(e: &ClaimError) -> i32 {
    match e {
        ClaimError::DeviceBroken(_) => SEE_E_BROKEN,
        ClaimError::NotStaged | ClaimError::Refused(_) | ClaimError::BadAck => SEE_E_REFUSED,
        ClaimError::AccessDenied { .. } => SEE_E_DENIED,
        ClaimError::Rejected(_) => SEE_E_REJECTED,
        ClaimError::QueueFull => SEE_E_BUSY,
        ClaimError::Timeout => SEE_E_TIMEOUT,
    }
}

/// `SEE_Prefetch_Available`: true if a verified resource for (task, resource) that `app_id`
/// may claim is staged. False when nothing is installed, the driver is busy, or the device is
/// broken.
#[no_mangle]
pub extern "C" fn see_prefetch_available(app_id: u32, task_id: u64, resource_id: u64) -> bool {
    with_installed(|d| d.available(app_id, task_id, resource_id)).unwrap_or(false)
}

/// `SEE_Claim_Prefetch`: moves the verified resource (task, resource) into `out`, fetching it
/// on demand if it is not staged. Returns [`SEE_OK`] and sets `*out_len` to its length, or a
/// negative `SEE_E_*` code. With [`SEE_E_TOO_SMALL`], `*out_len` is the length needed and the
/// resource stays staged for a retry with a larger buffer.
///
/// # Safety
///
/// `out_len` must be valid for a write of one `usize`. `out` must be valid for writes of
/// `out_cap` bytes (it may be null only when `out_cap` is 0). Neither may overlap memory the
/// driver owns, and the call must not run inside the device's interrupt handler.
#[no_mangle]
pub unsafe extern "C" fn see_claim_prefetch(
    app_id: u32,
    task_id: u64,
    resource_id: u64,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> i32 {
    if out_len.is_null() || (out.is_null() && out_cap != 0) {
        return SEE_E_INVALID;
    }
    let result = call(|d| {
        if let Some(n) = d.staged_len(app_id, task_id, resource_id) {
            if n > out_cap {
                return Err((SEE_E_TOO_SMALL, n));
            }
        }
        let r = d
            .claim_or_fetch(app_id, task_id, resource_id)
            .map_err(|e| (code(&e), 0))?;
        if r.content.len() > out_cap {
            let n = r.content.len();
            d.restage(r);
            return Err((SEE_E_TOO_SMALL, n));
        }
        Ok(r)
    });
    let (rc, len) = match result {
        Err(rc) => (rc, 0),
        Ok(Err((rc, n))) => (rc, n),
        Ok(Ok(r)) => {
            let n = r.content.len();
            if n > 0 {
                // SAFETY: the caller guarantees `out` is valid for `out_cap` >= n bytes of
                // writes and does not overlap `r.content`, which is the driver's private copy.
                unsafe { core::ptr::copy_nonoverlapping(r.content.as_ptr(), out, n) };
            }
            (SEE_OK, n)
        }
    };
    // SAFETY: checked non-null above; the caller guarantees it is valid for a write.
    unsafe { out_len.write(len) };
    rc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{testdev::TestPlatform, AppRegistry, DriverConfig};

    /// A slot of its own: the global one belongs to the C-ABI test (tests run in parallel).
    static SLOT: Slot = Mutex::new(None);

    #[test]
    fn installed_derefs_to_the_driver_and_holds_the_lock() {
        assert_eq!(
            Installed::<TestPlatform>::lock_slot(&SLOT).err(),
            Some(SEE_E_NO_DRIVER),
            "nothing installed"
        );
        let dev = TestPlatform::new();
        let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
        let mut registry = AppRegistry::new();
        registry.register_app(1);
        let driver = Driver::new(
            dev.clone(),
            DriverConfig::new(TestPlatform::window()),
            &pubkey,
            registry,
        )
        .expect("driver up");
        let epoch = driver.session().1;
        *SLOT.lock() = Some(Box::new(driver));
        let mut held = Installed::<TestPlatform>::lock_slot(&SLOT).expect("installed");
        assert_eq!(held.session().1, epoch);
        assert!(held.next_request().is_none());
        assert!(SLOT.try_lock().is_none(), "the guard holds the lock");
        assert_eq!(
            Installed::<TestPlatform>::lock_slot(&SLOT).err(),
            Some(SEE_E_BUSY)
        );
        drop(held);
        assert!(SLOT.try_lock().is_some(), "dropping the guard releases it");
        // Another platform type than the installed driver's is refused, not transmuted.
        #[derive(Debug)]
        struct Other;
        impl Platform for Other {
            fn mmio_read32(&self, _: usize) -> u32 {
                0
            }
            fn mmio_write32(&self, _: usize, _: u32) {}
            fn shared_read(&self, _: u64, _: &mut [u8]) {}
            fn shared_write(&self, _: u64, _: &[u8]) {}
            fn now_ns(&self) -> u64 {
                0
            }
            fn wait_for_event(&mut self, _: u64) {}
            fn fill_random(&mut self, _: &mut [u8]) {}
        }
        assert_eq!(
            Installed::<Other>::lock_slot(&SLOT).err(),
            Some(SEE_E_NO_DRIVER)
        );
    }
}
