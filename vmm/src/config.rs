//! The VM configuration: what the command line asks for, checked before anything is built.

use std::{fmt, path::PathBuf, str::FromStr};

pub use see_abi::memory::{
    DEFAULT_SHARED_MIB, MAX_MEMORY_MIB, MAX_SHARED_MIB, MIN_MEMORY_MIB, MIN_SHARED_MIB,
};
/// Default guest RAM in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 128;
/// Most vCPUs a VM may have.
pub const MAX_CPUS: u8 = 32;
/// Default KVM device.
pub const DEFAULT_KVM_DEVICE: &str = "/dev/kvm";

/// Where the guest's serial console goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's standard output.
    #[default]
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// Nowhere (output is discarded).
    Off,
}

impl FromStr for SerialOutput {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "off" => Ok(Self::Off),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
                _ => Err(format!(
                    "'{s}' is not a serial output: use stdout, off or file:PATH"
                )),
            },
        }
    }
}

impl fmt::Display for SerialOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => write!(f, "stdout"),
            Self::Off => write!(f, "off"),
            Self::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// Everything needed to build and boot a VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The guest kernel: an ELF with a PVH entry note.
    pub kernel: PathBuf,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub cpus: u8,
    /// Size of the shared window in MiB.
    pub shared_mem_mib: u32,
    /// Extra kernel command line (the VMM appends its device entries).
    pub cmdline: String,
    /// Where the serial console goes.
    pub serial: SerialOutput,
    /// The KVM device node.
    pub kvm_device: PathBuf,
    /// Measure the VMM's resident memory at exit (read from /proc/self/smaps).
    pub measure_memory: bool,
    /// Populate guest RAM on a background thread once the guest is ready ([`crate::prefault`]).
    pub prefault: bool,
    /// Ask the host for transparent huge pages under guest RAM (`MADV_HUGEPAGE`).
    pub huge_pages: bool,
}

/// A configuration value out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Too little guest RAM.
    #[error("--memory {0} MiB is too small: the guest needs at least {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall(u32),
    /// Too much guest RAM.
    #[error("--memory {0} MiB is too large: at most {MAX_MEMORY_MIB} MiB fit below the shared window at 3 GiB")]
    MemoryTooLarge(u32),
    /// Shared window size out of range.
    #[error("--shared-mem {0} MiB is out of range: use {MIN_SHARED_MIB} to {MAX_SHARED_MIB} MiB")]
    SharedMem(u32),
    /// vCPU count out of range.
    #[error("--cpus {0} is out of range: use 1 to {MAX_CPUS}")]
    Cpus(u8),
    /// The command line contains a NUL byte.
    #[error("--cmdline contains a NUL byte")]
    CmdlineNul,
}

impl VmConfig {
    /// A configuration with every default and the given kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            kernel: kernel.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 1,
            shared_mem_mib: DEFAULT_SHARED_MIB,
            cmdline: String::new(),
            serial: SerialOutput::Stdout,
            kvm_device: PathBuf::from(DEFAULT_KVM_DEVICE),
            measure_memory: false,
            prefault: true,
            huge_pages: true,
        }
    }

    /// Checks every value against its range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(ConfigError::MemoryTooLarge(self.memory_mib));
        }
        if !(MIN_SHARED_MIB..=MAX_SHARED_MIB).contains(&self.shared_mem_mib) {
            return Err(ConfigError::SharedMem(self.shared_mem_mib));
        }
        if !(1..=MAX_CPUS).contains(&self.cpus) {
            return Err(ConfigError::Cpus(self.cpus));
        }
        if self.cmdline.contains('\0') {
            return Err(ConfigError::CmdlineNul);
        }
        Ok(())
    }

    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }

    /// Shared window size in bytes.
    pub fn shared_bytes(&self) -> u64 {
        u64::from(self.shared_mem_mib) << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(VmConfig::new("k").validate(), Ok(()));
    }

    #[test]
    fn memory_bounds() {
        let mut c = VmConfig::new("k");
        c.memory_mib = MIN_MEMORY_MIB - 1;
        assert_eq!(c.validate(), Err(ConfigError::MemoryTooSmall(31)));
        c.memory_mib = MIN_MEMORY_MIB;
        assert_eq!(c.validate(), Ok(()));
        c.memory_mib = MAX_MEMORY_MIB;
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.memory_bytes(), 3 << 30);
        c.memory_mib = MAX_MEMORY_MIB + 1;
        assert_eq!(c.validate(), Err(ConfigError::MemoryTooLarge(3073)));
    }

    #[test]
    fn shared_cpus_and_cmdline_bounds() {
        let mut c = VmConfig::new("k");
        c.shared_mem_mib = 0;
        assert_eq!(c.validate(), Err(ConfigError::SharedMem(0)));
        c.shared_mem_mib = MAX_SHARED_MIB + 1;
        assert_eq!(c.validate(), Err(ConfigError::SharedMem(257)));
        c.shared_mem_mib = MAX_SHARED_MIB;
        assert_eq!(c.validate(), Ok(()));
        c.cpus = 0;
        assert_eq!(c.validate(), Err(ConfigError::Cpus(0)));
        c.cpus = MAX_CPUS + 1;
        assert_eq!(c.validate(), Err(ConfigError::Cpus(33)));
        c.cpus = 2;
        c.cmdline = "a=b\0".into();
        assert_eq!(c.validate(), Err(ConfigError::CmdlineNul));
    }

    #[test]
    fn serial_output_parses() {
        assert_eq!("stdout".parse(), Ok(SerialOutput::Stdout));
        assert_eq!("off".parse(), Ok(SerialOutput::Off));
        assert_eq!(
            "file:/tmp/x".parse(),
            Ok(SerialOutput::File(PathBuf::from("/tmp/x")))
        );
        assert!("file:".parse::<SerialOutput>().is_err());
        assert!("tcp:1".parse::<SerialOutput>().is_err());
        assert_eq!(SerialOutput::File("/a".into()).to_string(), "file:/a");
    }
}
