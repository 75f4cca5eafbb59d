//! The VM: KVM, guest memory, buses and devices, put together from a [`VmConfig`] and run.

mod error;
mod run;

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::Path,
    sync::{mpsc, Arc, Mutex},
    time::Instant,
};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

pub use self::{error::VmError, run::VmOutcome};
use self::{
    error::{io_err, kvm_err, KVM_API_VERSION},
    run::ExitWatcher,
};
use crate::{
    boot::{self, BootError, LoadedKernel},
    bus::{Bus, SharedDevice},
    config::VmConfig,
    confine::ThreadFilters,
    devices::{
        legacy::{EXIT_PORT, PROGRESS_PORT},
        serial::{COM1_BASE, COM1_GSI, COM1_LEN},
        BootProgress, ExitPort, MmioSlot, MmioSlots, ProgressEvent, SerialConsole,
    },
    exit::ExitSignal,
    layout::KVM_TSS_ADDR,
    memory::{self, SharedWindow},
};

/// The event loop's type: subscribers shared with whoever else drives them.
pub type VmEventManager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// A VM ready to run.
pub struct Vm {
    config: VmConfig,
    start: Instant,
    kvm: Kvm,
    vm_fd: Arc<VmFd>,
    memory: GuestMemoryMmap,
    shared: SharedWindow,
    kernel: LoadedKernel,
    pio: Bus,
    mmio: Bus,
    slots: MmioSlots,
    cmdline_entries: Vec<String>,
    serial: Arc<Mutex<SerialConsole>>,
    /// The serial console's irqfd, registered with KVM for the VM's lifetime.
    _serial_irq: EventFd,
    progress: Arc<Mutex<Vec<ProgressEvent>>>,
    /// Receives once the guest reports ready, for the prefault thread, with a sender of its
    /// own to wake the thread at the end of the run.
    ready: Option<(mpsc::SyncSender<()>, mpsc::Receiver<()>)>,
    exit: Arc<ExitSignal>,
    events: VmEventManager,
    filters: Option<ThreadFilters>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("config", &self.config)
            .field("kernel", &self.kernel)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

fn open_kvm(path: &Path) -> Result<Kvm, VmError> {
    let shown = path.display().to_string();
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| VmError::KvmMissing(shown.clone()))?;
    let kvm = Kvm::new_with_path(&c_path).map_err(|e| match e.errno() {
        libc::ENOENT => VmError::KvmMissing(shown.clone()),
        _ => VmError::KvmAccess {
            path: shown.clone(),
            source: std::io::Error::from_raw_os_error(e.errno()),
        },
    })?;
    if kvm.get_api_version() != KVM_API_VERSION {
        return Err(VmError::NotKvm(shown));
    }
    Ok(kvm)
}

impl Vm {
    /// Builds the VM: checks the config, maps guest memory and loads the kernel into it, opens
    /// KVM, registers the memory, sets up the interrupt controller and the legacy devices. `start` is when the
    /// VMM started (boot times are measured from it).
    pub fn new(config: VmConfig, start: Instant) -> Result<Self, VmError> {
        config.validate()?;
        // Everything about the kernel file is checked before KVM is touched.
        let mut kernel_file = boot::open_kernel(&config.kernel)?;
        let (memory, shared) = memory::create(config.memory_bytes(), config.shared_bytes())?;
        if config.huge_pages {
            memory::advise_huge_pages(&memory);
        }
        let kernel = boot::load_kernel(
            &memory,
            config.memory_bytes(),
            &mut kernel_file,
            &config.kernel,
        )?;
        log::info!(
            "kernel {} loaded, PVH entry {:#x}, ends at {:#x}",
            config.kernel.display(),
            kernel.entry.0,
            kernel.end
        );

        let kvm = open_kvm(&config.kvm_device)?;
        let vm_fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm_fd
            .set_tss_address(KVM_TSS_ADDR as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        log::debug!("KVM VM created at {} us", start.elapsed().as_micros());
        for (slot, region) in memory.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .expect("a mapped region has a host address");
            let mem_region = kvm_bindings::kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is mapped for the lifetime of `memory`, which the Vm owns and
            // drops only after the VM fd (field order) and every vCPU thread has stopped.
            unsafe { vm_fd.set_user_memory_region(mem_region) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }
        log::debug!(
            "guest memory registered at {} us",
            start.elapsed().as_micros()
        );

        let exit = Arc::new(ExitSignal::new().map_err(io_err("exit eventfd"))?);
        let (serial, serial_irq) =
            SerialConsole::new(&config.serial).map_err(io_err("serial console"))?;
        vm_fd
            .register_irqfd(&serial_irq, COM1_GSI)
            .map_err(kvm_err("KVM_IRQFD (serial)"))?;
        let serial = Arc::new(Mutex::new(serial));
        let mut progress_dev = BootProgress::new(start);
        let progress = progress_dev.events();
        let ready = config.prefault.then(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            progress_dev.notify_ready(tx.clone());
            (tx, rx)
        });

        let mut pio = Bus::new();
        pio.insert(u64::from(COM1_BASE), u64::from(COM1_LEN), serial.clone())?;
        pio.insert(
            u64::from(PROGRESS_PORT),
            1,
            Arc::new(Mutex::new(progress_dev)),
        )?;
        pio.insert(
            u64::from(EXIT_PORT),
            4,
            Arc::new(Mutex::new(ExitPort::new(exit.clone()))),
        )?;

        let mut events = VmEventManager::new().map_err(VmError::EventLoop)?;
        events.add_subscriber(Arc::new(Mutex::new(ExitWatcher(exit.clone()))));

        Ok(Self {
            config,
            start,
            kvm,
            vm_fd: Arc::new(vm_fd),
            memory,
            shared,
            kernel,
            pio,
            mmio: Bus::new(),
            slots: MmioSlots::default(),
            cmdline_entries: Vec::new(),
            serial,
            _serial_irq: serial_irq,
            progress,
            ready,
            exit,
            events,
            filters: None,
        })
    }

    /// Confines the run: each vCPU thread installs `filters.vcpu` before its first `KVM_RUN`,
    /// and [`Vm::run`]'s calling thread installs `filters.main` once every vCPU has started
    /// (for good: that thread stays confined after `run` returns).
    pub fn confine_threads(&mut self, filters: ThreadFilters) {
        self.filters = Some(filters);
    }

    /// The KVM VM, for registering ioeventfds and irqfds.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm_fd
    }

    /// All guest memory (private RAM and the shared window).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The shared window: the only memory a device backend may be given.
    pub fn shared_window(&self) -> &SharedWindow {
        &self.shared
    }

    /// The loaded kernel.
    pub fn kernel(&self) -> LoadedKernel {
        self.kernel
    }

    /// The event loop, to add subscribers (e.g. a vhost-user frontend's events).
    pub fn event_manager(&mut self) -> &mut VmEventManager {
        &mut self.events
    }

    /// Reserves the next virtio-mmio slot (base address and GSI).
    pub fn allocate_mmio_slot(&mut self) -> Result<MmioSlot, VmError> {
        Ok(self.slots.allocate()?)
    }

    /// Puts `device` on the MMIO bus at `slot` and announces it on the kernel command line.
    pub fn add_mmio_device(&mut self, slot: MmioSlot, device: SharedDevice) -> Result<(), VmError> {
        self.mmio.insert(slot.base.0, slot.size, device)?;
        self.cmdline_entries.push(slot.cmdline_entry());
        Ok(())
    }

    /// Puts `device` on the port I/O bus at `[base, base + len)`.
    pub fn add_pio_device(
        &mut self,
        base: u16,
        len: u16,
        device: SharedDevice,
    ) -> Result<(), VmError> {
        Ok(self.pio.insert(u64::from(base), u64::from(len), device)?)
    }

    /// The kernel command line the guest will get.
    pub fn cmdline(&self) -> Result<String, VmError> {
        let cmdline = boot::build_cmdline(&self.config.cmdline, &self.cmdline_entries)?;
        Ok(cmdline
            .as_cstring()
            .map_err(|e| BootError::Cmdline(e.to_string()))?
            .into_string()
            .unwrap_or_default())
    }
}
