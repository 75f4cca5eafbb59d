//! x86_64 vCPU setup for the PVH entry: CPUID (KVM's supported set, paravirtual leaves
//! included, so the guest can use kvmclock), boot MSRs, FPU, and flat 32-bit protected mode
//! with paging off and EBX pointing at `hvm_start_info`.

use kvm_bindings::{kvm_cpuid_entry2, kvm_fpu, kvm_msr_entry, kvm_segment, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestAddress;

use crate::layout::BOOT_GDT_ADDR;

/// Why a vCPU could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM vCPU ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which ioctl.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// KVM took fewer MSRs than given.
    #[error("KVM accepted only {0} of the boot MSRs")]
    Msrs(usize),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT written at [`BOOT_GDT_ADDR`]: null, 32-bit code (0x08), 32-bit data (0x10)
/// and a TSS (0x18), all flat.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

/// The segment register contents for GDT entry `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Gives vCPU `id` its own APIC ID and sets the hypervisor bit.
pub fn patch_cpuid(entries: &mut [kvm_cpuid_entry2], id: u8) {
    for e in entries {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | (u32::from(id) << 24);
                e.ecx |= 1 << 31;
            }
            0xb | 0x1f => e.edx = u32::from(id),
            _ => {}
        }
    }
}

/// Where the boot vCPU starts.
#[derive(Clone, Copy, Debug)]
pub struct BootEntry {
    /// The PVH entry point.
    pub entry: GuestAddress,
    /// The address of `hvm_start_info` (in EBX).
    pub start_info: GuestAddress,
}

const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;

/// Sets CPUID, MSRs and FPU for vCPU `id`; the boot vCPU also gets its registers.
/// The others wait in KVM (wait-for-SIPI) until the guest starts them.
pub fn configure(
    vcpu: &VcpuFd,
    id: u8,
    supported: &CpuId,
    boot: Option<BootEntry>,
) -> Result<(), CpuError> {
    let mut cpuid = supported.clone();
    patch_cpuid(cpuid.as_mut_slice(), id);
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;

    let entries = [
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    });
    let msrs = Msrs::from_entries(&entries).expect("two MSRs fit a KVM MSR list");
    let set = vcpu.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(CpuError::Msrs(set));
    }

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))?;

    let Some(boot) = boot else {
        return Ok(());
    };
    let mut sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    sregs.cs = segment_from_gdt(BOOT_GDT[1], 1);
    let data = segment_from_gdt(BOOT_GDT[2], 2);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = segment_from_gdt(BOOT_GDT[3], 3);
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = 0x1; // PE: protected mode, paging off
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;

    let mut regs = vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
    regs.rflags = 0x2;
    regs.rip = boot.entry.0;
    regs.rbx = boot.start_info.0;
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_segments_are_flat_32_bit() {
        let cs = segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 0x08));
        assert_eq!(
            (cs.type_, cs.present, cs.db, cs.l, cs.s, cs.g),
            (0xb, 1, 1, 0, 1, 1)
        );
        let ds = segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!(
            (ds.type_, ds.selector, ds.limit, ds.unusable),
            (0x3, 0x10, 0xffff_ffff, 0)
        );
        let tr = segment_from_gdt(BOOT_GDT[3], 3);
        assert_eq!((tr.type_, tr.limit, tr.s, tr.g), (0xb, 0x67, 0, 0));
        let null = segment_from_gdt(BOOT_GDT[0], 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn cpuid_gets_apic_id_and_hypervisor_bit() {
        let mut entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0x0012_3456,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x4000_0001,
                eax: 0x1234,
                ..Default::default()
            },
        ];
        patch_cpuid(&mut entries, 3);
        assert_eq!(entries[0].ebx, 0x0312_3456);
        assert_ne!(entries[0].ecx & (1 << 31), 0);
        assert_eq!(entries[1].edx, 3);
        assert_eq!(entries[2].eax, 0x1234, "paravirtual leaves are kept");
    }
}
