//! The VM: KVM, guest memory, buses and devices, put together from a [`VmConfig`] and run.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::Path,
    sync::{atomic::AtomicBool, Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::{epoll::EventSet, eventfd::EventFd};

use crate::{
    boot::{self, BootError, LoadedKernel},
    bus::{Bus, BusError, SharedDevice},
    config::{ConfigError, VmConfig},
    cpu::{self, BootEntry, CpuError},
    devices::{
        legacy::{EXIT_PORT, PROGRESS_PORT},
        mmio::NoFreeSlot,
        serial::{COM1_BASE, COM1_GSI, COM1_LEN},
        BootProgress, ExitPort, MmioSlot, MmioSlots, ProgressEvent, SerialConsole,
    },
    exit::{ExitReason, ExitSignal},
    layout::KVM_TSS_ADDR,
    memory::{self, MemoryError, SharedWindow},
    report::{self, MemoryUsage},
    vcpu::{self, VcpuContext},
};

/// KVM's stable API version.
const KVM_API_VERSION: i32 = 12;

/// The event loop's type: subscribers shared with whoever else drives them.
pub type VmEventManager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Why a VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A configuration value is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The KVM device does not exist.
    #[error("{0} does not exist: this machine has no KVM (load the kvm module, enable virtualization in the firmware, or pass the right device)")]
    KvmMissing(String),
    /// The KVM device cannot be opened.
    #[error("cannot open {path}: {source}; give this user read-write access to it (e.g. add it to the 'kvm' group)")]
    KvmAccess {
        /// The device path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The device is not KVM.
    #[error("{0} is not a KVM device (KVM_GET_API_VERSION failed or is not {KVM_API_VERSION})")]
    NotKvm(String),
    /// A KVM VM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which call.
        what: &'static str,
        /// The error.
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading or booting the kernel.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// vCPU setup.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// A device range clashes.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// No virtio-mmio slot left.
    #[error(transparent)]
    NoFreeSlot(#[from] NoFreeSlot),
    /// A host resource (thread, eventfd, file, epoll) could not be had.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(#[from] event_manager::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

/// How a run ended.
#[derive(Debug)]
pub struct VmOutcome {
    /// Why it ended.
    pub reason: ExitReason,
    /// The boot progress codes with their times since the VMM started.
    pub progress: Vec<ProgressEvent>,
    /// Time from the VMM's start to the end of the run.
    pub ended_at: Duration,
    /// Resident memory at the end, if the config asked for it.
    pub memory: Option<MemoryUsage>,
}

impl VmOutcome {
    /// The VMM's exit code.
    pub fn exit_code(&self) -> u8 {
        self.reason.exit_code()
    }

    /// When the guest first reported `code` on the progress port.
    pub fn progress_at(&self, code: u8) -> Option<Duration> {
        self.progress.iter().find(|e| e.code == code).map(|e| e.at)
    }
}

/// Wakes the event loop when the exit signal fires.
struct ExitWatcher(Arc<ExitSignal>);

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.0.event(), EventSet::IN)) {
            log::error!("cannot watch the exit event: {e:?}");
        }
    }

    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        // Drain the counter; the loop checks the signal itself.
        let _ = self.0.event().read();
    }
}

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
    exit: Arc<ExitSignal>,
    events: VmEventManager,
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
        let progress_dev = BootProgress::new(start);
        let progress = progress_dev.events();

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
            exit,
            events,
        })
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

    /// Writes the boot information, starts the vCPUs and runs the event loop until the guest
    /// ends the VM or a vCPU fails.
    pub fn run(mut self) -> Result<VmOutcome, VmError> {
        let cmdline = boot::build_cmdline(&self.config.cmdline, &self.cmdline_entries)?;
        let start_info = boot::write_boot_info(
            &self.memory,
            &cmdline,
            self.config.memory_bytes(),
            self.config.shared_bytes(),
        )?;
        let supported = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(usize::from(self.config.cpus));
        for id in 0..self.config.cpus {
            let fd = self
                .vm_fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            let boot = (id == 0).then_some(BootEntry {
                entry: self.kernel.entry,
                start_info,
            });
            cpu::configure(&fd, id, &supported, boot)?;
            vcpus.push(fd);
        }

        log::debug!(
            "vCPUs configured at {} us",
            self.start.elapsed().as_micros()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = VcpuContext {
            pio: Arc::new(std::mem::take(&mut self.pio)),
            mmio: Arc::new(std::mem::take(&mut self.mmio)),
            exit: self.exit.clone(),
            stop: stop.clone(),
        };
        let mut handles = Vec::with_capacity(vcpus.len());
        for (id, fd) in vcpus.into_iter().enumerate() {
            match vcpu::spawn(id as u8, fd, ctx.clone()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    vcpu::stop_all(handles, &stop, Duration::from_secs(1));
                    return Err(VmError::Io {
                        what: "vCPU thread",
                        source: e,
                    });
                }
            }
        }
        log::info!(
            "{} vCPU(s) started {} us after VMM start",
            handles.len(),
            self.start.elapsed().as_micros()
        );

        let loop_result = loop {
            if self.exit.is_requested() {
                break Ok(());
            }
            if let Err(e) = self.events.run() {
                break Err(e);
            }
        };
        let ended_at = self.start.elapsed();
        let stuck = vcpu::stop_all(handles, &stop, Duration::from_secs(1));
        if stuck > 0 {
            log::warn!("{stuck} vCPU thread(s) did not stop");
        }
        loop_result?;
        if let Err(e) = self
            .serial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
        {
            log::warn!("serial console flush: {e}");
        }
        let memory = self
            .config
            .measure_memory
            .then(|| self.measure_memory())
            .flatten();
        let reason = self
            .exit
            .reason()
            .expect("the loop ends only once an exit is requested");
        let progress = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok(VmOutcome {
            reason,
            progress,
            ended_at,
            memory,
        })
    }

    fn measure_memory(&self) -> Option<MemoryUsage> {
        let guest: Vec<(u64, u64)> = self
            .memory
            .iter()
            .filter_map(|r| {
                let host = r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok()?;
                Some((host as u64, r.len()))
            })
            .collect();
        report::measure(&guest)
            .inspect_err(|e| log::warn!("cannot measure memory: {e}"))
            .ok()
    }
}
