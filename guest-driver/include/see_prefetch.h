/* C ABI of see-guest-driver (guest-driver/src/ffi.rs). The driver must have been installed
 * with see_guest_driver::ffi::install() by the kernel. Never call these from the device's
 * interrupt handler. */
#ifndef SEE_PREFETCH_H
#define SEE_PREFETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEE_OK 0
#define SEE_E_NO_DRIVER (-1) /* nothing installed */
#define SEE_E_BROKEN (-2)    /* device broken or gone: reset it or run without prefetch */
#define SEE_E_DENIED (-3)    /* this app may not claim this (task, resource) */
#define SEE_E_TOO_SMALL (-4) /* *out_len = bytes needed; the resource stays staged */
#define SEE_E_REFUSED (-5)   /* the device refused the demand fetch (or answered garbage) */
#define SEE_E_REJECTED (-6)  /* the demanded bundle failed verification */
#define SEE_E_TIMEOUT (-7)   /* the device missed its deadline (now marked broken) */
#define SEE_E_BUSY (-8)      /* driver in use or ctrlq full: retry */
#define SEE_E_INVALID (-9)   /* null out_len, or null out with out_cap > 0 */

/* SEE_Prefetch_Available: a verified resource that app_id may claim is staged. */
bool see_prefetch_available(uint32_t app_id, uint64_t task_id, uint64_t resource_id);

/* SEE_Claim_Prefetch: moves the verified resource into out (demand-fetching it on a miss).
 * out must be writable for out_cap bytes (may be NULL when out_cap is 0); out_len must be
 * writable. Returns SEE_OK with *out_len = length, or a negative SEE_E_* code. */
int32_t see_claim_prefetch(uint32_t app_id, uint64_t task_id, uint64_t resource_id,
                           uint8_t *out, size_t out_cap, size_t *out_len);

#endif
