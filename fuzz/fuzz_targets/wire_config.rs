//! Any bytes as the device configuration space: no panic; accepted values round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_prefetch_wire::DeviceConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = DeviceConfig::parse(data) {
        assert_eq!(&config.encode()[..], &data[..16]);
    }
});
