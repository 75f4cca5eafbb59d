/*
 * see_task.h: the C side of the SEE task interface (see_task::abi in task/src/abi.rs).
 *
 * A task module imports only these four functions of module "see" and exports
 * `int run(void)` (0: success, anything else: the task failed with that code) and its memory
 * (wasm-ld exports it as "memory"). Define the entry point with SEE_RUN:
 *
 *     #include "see_task.h"
 *     SEE_RUN {
 *         int64_t id = see_input(0);
 *         if (id < 0 || see_claim(id) < 0) return 1;
 *         see_result(42);
 *         return 0;
 *     }
 *
 * Build: cargo xtask tasks (clang-19 --target=wasm32 -nostdlib ..., see tasks/src/lib.rs).
 */
#ifndef SEE_TASK_H
#define SEE_TASK_H

#include <stdint.h>

#define SEE_IMPORT(name) __attribute__((import_module("see"), import_name(name)))

/* The task's index-th input resource id (its data resources, in order), or SEE_NO_INPUT. */
SEE_IMPORT("input") int64_t see_input(int32_t index);

/* Claims a resource of the task's app (the claim API's access control): its length in
 * bytes, or a negative SEE_ERR_* code. */
SEE_IMPORT("claim") int64_t see_claim(int64_t resource);

/* Copies up to len bytes of a claimed resource from offset into dst: the count (0 at the
 * end), or a negative SEE_ERR_* code. */
SEE_IMPORT("read") int32_t see_read(int64_t resource, int64_t offset, void *dst, int32_t len);

/* Sets the task's 64-bit result (the last call wins). */
SEE_IMPORT("result") void see_result(int64_t word);

/* see_input: no input at that index. */
#define SEE_NO_INPUT (-1)
/* see_claim/see_read: the resource is not the task's app's. */
#define SEE_ERR_DENIED (-1)
/* see_claim/see_read: the resource could not be had. */
#define SEE_ERR_UNAVAILABLE (-2)
/* see_read: the resource was not claimed first. */
#define SEE_ERR_NOT_CLAIMED (-3)
/* see_claim: the task already holds SEE_MAX_CLAIMS resources. */
#define SEE_ERR_TOO_MANY (-4)
/* see_read: the destination is outside the memory, or the offset past the end. */
#define SEE_ERR_BOUNDS (-5)
/* How many resources one run may claim. */
#define SEE_MAX_CLAIMS 64

/* The entry point: `SEE_RUN { ... return 0; }`. */
#define SEE_RUN __attribute__((export_name("run"))) int run(void)

#endif
