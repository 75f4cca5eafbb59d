//! Running a VM: boot information, vCPU threads, the event loop, and how the run ended.

use std::{
    sync::{atomic::AtomicBool, mpsc, Arc, PoisonError},
    time::Duration,
};

use event_manager::{EventOps, Events, MutEventSubscriber};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;

use super::{
    error::{kvm_err, VmError},
    Vm,
};
use crate::{
    boot, confine,
    cpu::{self, BootEntry},
    devices::ProgressEvent,
    exit::{ExitReason, ExitSignal},
    prefault::Prefaulter,
    report::{self, MemoryUsage},
    vcpu::{self, VcpuContext},
};

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
pub(super) struct ExitWatcher(pub(super) Arc<ExitSignal>);

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

impl Vm {
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
        let (exited_tx, exited) = mpsc::channel();
        let ctx = VcpuContext {
            pio: Arc::new(std::mem::take(&mut self.pio)),
            mmio: Arc::new(std::mem::take(&mut self.mmio)),
            exit: self.exit.clone(),
            stop: stop.clone(),
            exited: exited_tx,
            filter: self.filters.as_ref().map(|f| Arc::new(f.vcpu.clone())),
        };
        let mut handles = Vec::with_capacity(vcpus.len());
        for (id, fd) in vcpus.into_iter().enumerate() {
            match vcpu::spawn(id as u8, fd, ctx.clone()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    vcpu::stop_all(handles, &stop, &exited, Duration::from_secs(1));
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
        // Before the main filter, which forbids making threads; it waits for the guest's ready.
        let prefaulter = self.ready.take().and_then(|(wake, ready)| {
            let filter = self.filters.as_ref().map(|f| f.prefault.clone());
            Prefaulter::spawn(&self.memory, filter, ready, wake)
                .inspect_err(|e| log::debug!("cannot start the prefault thread: {e}"))
                .ok()
        });
        // The main filter goes on last: a thread inherits its creator's filter.
        if let Some(filters) = &self.filters {
            if let Err(e) = filters.main.install() {
                vcpu::stop_all(handles, &stop, &exited, Duration::from_secs(1));
                return Err(e.into());
            }
        }
        confine::test_hook(confine::ThreadKind::Main);

        let loop_result = loop {
            if self.exit.is_requested() {
                break Ok(());
            }
            if let Err(e) = self.events.run() {
                break Err(e);
            }
        };
        let ended_at = self.start.elapsed();
        if let Some(p) = &prefaulter {
            p.stop();
        }
        let stuck = vcpu::stop_all(handles, &stop, &exited, Duration::from_secs(1));
        if stuck > 0 {
            log::warn!("{stuck} vCPU thread(s) did not stop");
        }
        // At most one slice's wait (it was asked to stop with the vCPUs).
        if let Some(p) = prefaulter {
            p.join();
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
