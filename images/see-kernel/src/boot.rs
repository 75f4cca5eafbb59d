//! The PVH entry point: the ELF note that announces it, the 32-bit entry code, the static
//! identity page tables for the first 4 GiB and the switch to long mode.
//!
//! A PVH loader (see `docs/ARCHITECTURE.md`) jumps to `pvh_start32` in flat 32-bit protected
//! mode with paging off and EBX holding the physical address of `hvm_start_info`. The code below
//! records the TSC at entry, enables PAE and long mode with static page tables (assembled as
//! data: 2 MiB pages; the range from 0xD000_0000 up, where devices live, is mapped uncached),
//! enables SSE state (CR4.OSFXSR and OSXMMEXCPT, CR0.MP set and CR0.EM clear; not AVX or
//! XSAVE), loads a boot GDT and calls [`kernel_main`](crate::kernel_main) with the start-info
//! address. The kernel's own code is soft-float and never touches the SSE registers; only the
//! SHA-NI function of `see_guest_driver::sha256` does, so no interrupt or context switch needs
//! to save them.
//! The page tables are never changed.

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                       /* name size: "Xen\0" */
    .long 4                       /* descriptor size */
    .long 18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov esi, ebx
    rdtsc
    mov dword ptr [see_entry_tsc], eax
    mov dword ptr [see_entry_tsc + 4], edx
    mov esp, offset boot_stack_top

    mov eax, cr4
    or eax, 0x620                 /* PAE | OSFXSR | OSXMMEXCPT: SSE usable (sha256.rs) */
    mov cr4, eax
    mov eax, offset boot_pml4
    mov cr3, eax
    mov ecx, 0xC0000080           /* EFER */
    rdmsr
    or eax, 0x100                 /* LME */
    wrmsr
    mov eax, cr0
    and eax, 0xfffffffb           /* clear EM: SSE instructions do not fault */
    or eax, 0x80000003            /* PG | MP | PE */
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    mov eax, offset long_mode_entry
    push 0x08
    push eax
    retf

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    mov edi, esi                  /* zero-extends: RDI = start-info address */
    call kernel_main
5:
    cli
    hlt
    jmp 5b

    .section .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9b000000ffff      /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff      /* 0x10: data */
boot_gdt_ptr:
    .word boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt

    /* The page tables are data, not code: 32-bit code before paging may be emulated
     * instruction by instruction (it is under PVM), so the entry path stays short. */
    .section .data.boot, "aw"
    .balign 4096
boot_pml4:
    .quad boot_pdpt + 0x7
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x7
    .quad boot_pd + 0x1000 + 0x7
    .quad boot_pd + 0x2000 + 0x7
    .quad boot_pd + 0x3000 + 0x7
    .fill 508, 8, 0
boot_pd:
    /* 2048 entries of 2 MiB: present, writable, user-accessible, large; uncached
     * (PCD|PWT) from 0xD000_0000 (entry 0x680) up, where the devices live. Every page is
     * user-accessible because the kernel runs its work in ring 3, where PVM executes it
     * natively (see usermode.rs); ring 3 here is for speed, not isolation. */
    .set page, 0
    .rept 0x680
    .quad (page << 21) | 0x87
    .set page, page + 1
    .endr
    .rept 2048 - 0x680
    .quad (page << 21) | 0x9f
    .set page, page + 1
    .endr

    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_stack:
    .skip 65536
boot_stack_top:
    .global see_entry_tsc
see_entry_tsc:
    .skip 8
"#
);

extern "C" {
    /// The TSC value read by the first instruction of the 32-bit entry.
    static see_entry_tsc: u64;
    /// First byte of the loaded image (from linker.ld).
    static __kernel_start: u8;
    /// First byte after the image, bss included, page-aligned (from linker.ld).
    static __kernel_end: u8;
}

/// The TSC at the PVH entry point.
pub fn entry_tsc() -> u64 {
    // SAFETY: written once by the entry code before any Rust code runs, never again.
    unsafe { core::ptr::read_volatile(&raw const see_entry_tsc) }
}

/// The physical range `[start, end)` the kernel image occupies, bss included.
pub fn kernel_range() -> (u64, u64) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (
        &raw const __kernel_start as u64,
        &raw const __kernel_end as u64,
    )
}
