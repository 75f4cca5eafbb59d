//! The C ABI: `see_prefetch_available` and `see_claim_prefetch`, over one driver instance the
//! embedder installs once with [`install`].
//!
//! The installed driver sits behind a spin lock. Never call these functions from the device's
//! interrupt handler (use [`crate::InterruptHandle`] there), or from code that already holds
//! the driver.

use alloc::boxed::Box;

use spin::Mutex;

use crate::{driver::ClaimError, platform::Platform, Driver, Resource};

/// The claim operations the C ABI needs, object-safe so the global can hold any platform.
pub trait ClaimApi: Send {
    /// [`Driver::available`].
    fn available(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> bool;
    /// True if a claim would succeed with a buffer of `cap` bytes; the needed length otherwise.
    fn staged_len(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> Option<usize>;
    /// [`Driver::claim_or_fetch`].
    fn claim_or_fetch(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
    ) -> Result<Resource, ClaimError>;
}

static DRIVER: Mutex<Option<Box<dyn ClaimApi>>> = Mutex::new(None);

/// Installs the driver the C ABI uses, replacing (and returning) any previous one.
pub fn install<P: Platform + Send + 'static>(driver: Driver<P>) -> Option<Box<dyn ClaimApi>> {
    DRIVER.lock().replace(Box::new(driver))
}

/// Removes the installed driver.
pub fn uninstall() -> Option<Box<dyn ClaimApi>> {
    DRIVER.lock().take()
}

/// Success.
pub const SEE_OK: i32 = 0;

impl<P: Platform + Send> ClaimApi for Driver<P> {
    fn available(&mut self, app_id: u32, task_id: u64, resource_id: u64) -> bool {
        Driver::available(self, app_id, task_id, resource_id)
    }
    fn staged_len(&mut self, _app_id: u32, _task_id: u64, _resource_id: u64) -> Option<usize> {
        None
    }
    fn claim_or_fetch(
        &mut self,
        app_id: u32,
        task_id: u64,
        resource_id: u64,
    ) -> Result<Resource, ClaimError> {
        Driver::claim_or_fetch(self, app_id, task_id, resource_id, 0)
    }
}

/// `SEE_Prefetch_Available`: true if a verified resource for (task, resource) that `app_id`
/// may claim is staged; false when nothing is installed or the device is broken.
#[no_mangle]
pub extern "C" fn see_prefetch_available(app_id: u32, task_id: u64, resource_id: u64) -> bool {
    match DRIVER.lock().as_mut() {
        Some(d) => d.available(app_id, task_id, resource_id),
        None => false,
    }
}
