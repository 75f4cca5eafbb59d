//! Ring 3 for speed: runs kernel work in user mode, where PVM executes it natively.
//!
//! On these hosts `/dev/kvm` is `kvm_pvm`, which runs a guest's ring-0 code in KVM's instruction
//! emulator (about 0.5 us per instruction) but its ring-3 code natively on the CPU. Measured at
//! boot (self-test `ring3`): a tight loop runs about 1000x faster in ring 3, SHA-384 at about
//! 800 MiB/s instead of 0.04. So after boot the kernel runs its apps and the driver in ring 3
//! ([`run`]) with IOPL 3 (port I/O for the console and the exit port stays possible) and every
//! page user-accessible; only what needs ring 0 (halting until an interrupt) traps back through
//! [`halt_until`]. Ring 3 is used for speed, not isolation: all code in the image is the
//! kernel's own, and the claim API's access control is an API rule, not a hardware boundary.
//! On hardware KVM ring 0 is as fast, and the same code runs either way.
//!
//! Mechanism: `see_enter_user` saves the callee-saved registers and the stack pointer, then
//! `iretq`s to a trampoline in ring 3 on a stack of its own, which calls the closure and ends
//! with `ud2` at a known address. The #UD entry stub (interrupts/idt.rs) recognises that address
//! coming from ring 3 and jumps to `see_user_return` in ring 0, which restores the saved state
//! (RFLAGS included); a `see_user_call` trap goes through [`on_invalid_opcode`]. `int n` from
//! ring 3 is not delivered by PVM (it raises #UD), hence `ud2`. `syscall` from ring 3 is no way
//! back either: under `kvm_pvm` it jumps to LSTAR but stays in ring 3 (CS 0x33; privileged
//! instructions then raise #GP; see docs/ARCHITECTURE.md).

use core::{
    arch::global_asm,
    ffi::c_void,
    sync::atomic::{AtomicBool, Ordering},
};

use x86_64::instructions::segmentation::{Segment, CS};

use crate::interrupts::InterruptFrame;

global_asm!(
    r#"
    .section .text
    .global see_enter_user
see_enter_user:
    /* rdi = entry, rsi = argument, rdx = stack top, rcx = user CS, r8 = user SS */
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    mov [rip + see_user_saved_rsp], rsp
    push r8
    push rdx
    pushfq
    push rcx
    lea rax, [rip + see_user_trampoline]
    push rax
    iretq
see_user_trampoline:
    mov rax, rdi
    mov rdi, rsi
    call rax
    .global see_user_exit
see_user_exit:
    ud2
    .global see_user_return
see_user_return:
    mov rsp, [rip + see_user_saved_rsp]
    popfq                        /* IF and IOPL as before the call */
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret

    .global see_user_call
see_user_call:
    /* rdi = operation, rsi and rdx = arguments; the #UD handler performs it in ring 0 and
     * resumes after the ud2 */
    ud2
    ret

    .section .bss
    .balign 8
see_user_saved_rsp:
    .quad 0
"#
);

extern "C" {
    fn see_enter_user(
        entry: extern "C" fn(*mut c_void),
        arg: *mut c_void,
        stack_top: u64,
        cs: u64,
        ss: u64,
    );
    fn see_user_exit();
    fn see_user_return();
    fn see_user_call(op: u64, a: u64, b: u64);
}

/// The ring-3 stack. 1 MiB is enough for the Wasm engine too: wasmi keeps a task's values and
/// Wasm call frames on the heap, and its handlers jump to one another (see-task's
/// `tail-dispatch`, which the kernel enables), so a run takes a few native frames however long
/// it runs or deep it recurses (the end-to-end tests run a loop of tens of millions of
/// instructions, and a recursion past wasmi's call-depth limit, which wasmi stops with a trap).
const USER_STACK_SIZE: usize = 1 << 20;

/// Only its address is used: ring-3 code runs on it.
#[repr(align(16))]
#[allow(dead_code)]
struct UserStack([u8; USER_STACK_SIZE]);

static mut USER_STACK: UserStack = UserStack([0; USER_STACK_SIZE]);
static IN_USER: AtomicBool = AtomicBool::new(false);

/// True when the CPU runs in ring 3.
pub fn in_user_mode() -> bool {
    CS::get_reg().0 & 3 == 3
}

struct Call<F, R> {
    f: Option<F>,
    result: Option<R>,
}

extern "C" fn call_closure<F: FnOnce() -> R, R>(arg: *mut c_void) {
    // SAFETY: `run` passes a pointer to its own `Call<F, R>`, alive until `see_enter_user`
    // returns, which is after this function returns.
    let call = unsafe { &mut *(arg as *mut Call<F, R>) };
    if let Some(f) = call.f.take() {
        call.result = Some(f());
    }
}

/// Runs `f` in ring 3 and returns its result. Already in ring 3 (or nested), it just calls `f`.
pub fn run<F: FnOnce() -> R, R>(f: F) -> R {
    let (user_cs, user_ss) = crate::gdt::user_selectors();
    if in_user_mode() || user_cs == 0 || IN_USER.swap(true, Ordering::AcqRel) {
        return f();
    }
    let mut call = Call {
        f: Some(f),
        result: None,
    };
    let stack_top = (&raw mut USER_STACK) as u64 + USER_STACK_SIZE as u64;
    // SAFETY: the trampoline runs `call_closure` on the dedicated user stack (not otherwise in
    // use: IN_USER guards it) and returns here through `see_user_return`, which restores the
    // callee-saved registers and the stack pointer saved on entry. `call` outlives the call.
    unsafe {
        see_enter_user(
            call_closure::<F, R>,
            (&raw mut call).cast(),
            stack_top,
            u64::from(user_cs),
            u64::from(user_ss),
        );
    }
    IN_USER.store(false, Ordering::Release);
    match call.result {
        Some(result) => result,
        // The closure always stores its result before the trampoline traps back.
        None => panic!("ring-3 call returned without a result"),
    }
}

/// The ring-0 services ring 3 calls through `see_user_call`. PVM runs ring 3 with IOPL 0
/// whatever RFLAGS says, so port I/O (console, exit port), `cli`/`sti` and `hlt` all need one.
const CALL_HALT: u64 = 1;
const CALL_WRITE: u64 = 2;
const CALL_EXIT: u64 = 3;
/// Longest console write per call.
const MAX_WRITE: u64 = 4096;

fn call(op: u64, a: u64, b: u64) {
    // SAFETY: `see_user_call` is `ud2; ret`; the #UD handler performs `op` with these
    // arguments in ring 0 and resumes at the `ret` (see `on_invalid_opcode`).
    unsafe { see_user_call(op, a, b) }
}

/// From ring 3: halts in ring 0 until an interrupt, `wake`, or `deadline_tsc` (see
/// [`crate::interrupts::halt_until`]). Returns at once, without the trap (about 250 us of
/// emulated ring 0 under PVM), when `wake` is already set or the deadline has passed.
pub fn halt_until(deadline_tsc: u64, wake: &AtomicBool) {
    if wake.load(Ordering::Acquire) || crate::time::tsc() >= deadline_tsc {
        return;
    }
    call(CALL_HALT, deadline_tsc, wake as *const AtomicBool as u64);
}

/// From ring 3: writes `bytes` to the serial console.
pub fn console_write(bytes: &[u8]) {
    for chunk in bytes.chunks(MAX_WRITE as usize) {
        call(CALL_WRITE, chunk.as_ptr() as u64, chunk.len() as u64);
    }
}

/// From ring 3: ends the VM with `status` (the exit port).
pub fn exit(status: u32) {
    call(CALL_EXIT, u64::from(status), 0);
}

/// The #UD handler's hook: handles the two traps of this module when they come from ring 3.
/// Returns false for any other #UD.
pub fn on_invalid_opcode(frame: &mut InterruptFrame) -> bool {
    if frame.cs & 3 != 3 {
        return false;
    }
    if frame.rip == see_user_exit as *const () as u64 {
        frame.rip = see_user_return as *const () as u64;
        frame.cs = u64::from(CS::get_reg().0);
        frame.ss = 0;
        frame.rsp = frame as *mut InterruptFrame as u64; // reloaded by see_user_return
        return true;
    }
    if frame.rip == see_user_call as *const () as u64 {
        match frame.rdi {
            CALL_HALT if frame.rdx != 0 => {
                // SAFETY: `halt_until` passed a reference to an AtomicBool that lives across
                // the call (ring 3 and ring 0 share the address space).
                let wake = unsafe { &*(frame.rdx as *const AtomicBool) };
                crate::interrupts::halt_until(frame.rsi, wake);
            }
            CALL_WRITE if frame.rdx <= MAX_WRITE => {
                // SAFETY: `console_write` passed a live slice of at most MAX_WRITE bytes.
                let bytes = unsafe {
                    core::slice::from_raw_parts(frame.rsi as *const u8, frame.rdx as usize)
                };
                crate::console::write_bytes(bytes);
            }
            CALL_EXIT => crate::exit::exit_port(frame.rsi as u32),
            _ => {}
        }
        frame.rip += 2; // past ud2, onto the ret
        return true;
    }
    false
}
