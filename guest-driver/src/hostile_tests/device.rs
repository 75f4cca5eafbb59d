//! A device that goes away, lies at bring-up, or sends garbage; manifests; the C ABI.

use super::*;

// ---- a device that goes away ----

#[test]
fn device_gone_mid_demand_fails_by_the_deadline() {
    let (dev, mut d) = setup();
    stage(&dev, RES2, 1, &content(10, 1));
    dev.dev().answer = false;
    let start = dev.dev().now;
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0),
        Err(ClaimError::Timeout)
    );
    let waited = dev.dev().now - start;
    assert!(
        (1_000_000_000..2_000_000_000).contains(&waited),
        "waited {waited} ns"
    );
    assert_eq!(d.state(), DriverState::Broken(BrokenReason::DeadlineMissed));
    // Everything fails at once now, and the staged bundle is gone.
    assert!(!d.available(APP_A, TASK_A, RES2));
    let t = dev.dev().now;
    assert!(matches!(
        d.claim_or_fetch(APP_A, TASK_A, RES2, 0),
        Err(ClaimError::DeviceBroken(_))
    ));
    assert!(dev.dev().now - t < 200_000, "failed at once");
}

#[test]
fn acked_demand_that_never_arrives_fails_by_the_deadline() {
    let (dev, mut d) = setup();
    dev.dev().deliver_demands = false;
    assert_eq!(
        d.claim_or_fetch(APP_A, TASK_A, RES, 0),
        Err(ClaimError::Timeout)
    );
    assert_eq!(d.counters().demands_failed, 1);
}

#[test]
fn needs_reset_fails_everything_at_once() {
    let (dev, mut d) = setup();
    stage(&dev, RES, 1, &content(10, 1));
    dev.dev().needs_reset();
    assert!(!d.available(APP_A, TASK_A, RES));
    assert_eq!(d.state(), DriverState::Broken(BrokenReason::NeedsReset));
    assert!(matches!(
        d.claim(APP_A, TASK_A, RES),
        Err(ClaimError::DeviceBroken(_))
    ));
    // A reset against a device that still does not answer fails cleanly too.
    dev.dev().answer = false;
    assert!(d.reset().is_err());
    assert!(!d.available(APP_A, TASK_A, RES));
}

// ---- bring-up against a wrong or hostile device ----

fn init_err(tweak: impl FnOnce(&mut crate::testdev::Dev)) -> crate::InitError {
    let dev = TestPlatform::new();
    tweak(&mut dev.dev());
    let key = dev.dev().key.verifying_key().to_sec1_bytes();
    Driver::new(dev.clone(), config(Completion::Interrupt), &key, registry()).unwrap_err()
}

#[test]
fn bring_up_refuses_a_wrong_device() {
    use crate::mmio::TransportError as T;
    assert_eq!(
        init_err(|d| d.magic = 0),
        crate::InitError::Transport(T::BadMagic(0))
    );
    assert_eq!(
        init_err(|d| d.version = 1),
        crate::InitError::Transport(T::BadVersion(1))
    );
    assert!(matches!(
        init_err(|d| d.device_id = 2),
        crate::InitError::Transport(T::WrongDevice { found: 2, .. })
    ));
    assert_eq!(
        init_err(|d| d.device_features = 0),
        crate::InitError::Transport(T::MissingFeatures { missing: 1 << 32 })
    );
    assert_eq!(
        init_err(|d| d.refuse_features = true),
        crate::InitError::Transport(T::FeaturesRejected)
    );
    assert!(matches!(
        init_err(|d| d.queue_max = 4),
        crate::InitError::Transport(T::Queue { queue: 0, .. })
    ));
    // A device that never acknowledges Hello: a clear error by the deadline, no hang.
    assert!(matches!(
        init_err(|d| d.answer = false),
        crate::InitError::Hello(ClaimError::Timeout)
    ));
    assert!(matches!(
        init_err(|d| d.hello_status = 6),
        crate::InitError::Hello(ClaimError::Refused(6))
    ));
}

#[test]
fn bring_up_refuses_a_bad_key_and_a_small_window() {
    let dev = TestPlatform::new();
    let err = Driver::new(
        dev.clone(),
        config(Completion::Interrupt),
        &[4; 97],
        registry(),
    );
    assert_eq!(err.unwrap_err(), crate::InitError::BadKey);
    let key = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut c = config(Completion::Interrupt);
    c.window.size = 64 << 10;
    assert!(matches!(
        Driver::new(dev.clone(), c, &key, registry()),
        Err(crate::InitError::Window(_))
    ));
    let mut c = config(Completion::Interrupt);
    c.staging_buffers = 3;
    assert!(matches!(
        Driver::new(dev, c, &key, registry()),
        Err(crate::InitError::Config(_))
    ));
}

#[test]
fn c_abi_claims_into_a_caller_buffer() {
    use crate::ffi::*;
    let (dev, d) = setup();
    let data = content(5000, 4);
    stage(&dev, RES, 1, &data);
    dev.dev().serve(APP_A, TASK_A, RES2, 1, &content(10, 1));
    assert!(install(d).is_none());
    // The embedder reaches the whole driver through the global.
    let requests = with_installed(|d| {
        let d = d.as_any().downcast_mut::<Driver<TestPlatform>>().unwrap();
        d.next_request().is_none()
    });
    assert_eq!(requests, Some(true));
    assert!(see_prefetch_available(APP_A, TASK_A, RES));
    assert!(!see_prefetch_available(APP_B, TASK_A, RES));
    let mut buf = vec![0u8; 100];
    let mut len = 0usize;
    // SAFETY: buf and len are valid for the sizes given.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_E_TOO_SMALL, 5000));
    assert!(
        see_prefetch_available(APP_A, TASK_A, RES),
        "still staged after TOO_SMALL"
    );
    // SAFETY: as above, null out_len is refused before any write.
    let rc = unsafe {
        see_claim_prefetch(
            APP_A,
            TASK_A,
            RES,
            buf.as_mut_ptr(),
            100,
            core::ptr::null_mut(),
        )
    };
    assert_eq!(rc, SEE_E_INVALID);
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_B, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(rc, SEE_E_DENIED);
    buf.resize(8192, 0);
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_OK, 5000));
    assert_eq!(&buf[..5000], &data[..]);
    // A miss falls back to a demand fetch.
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES2, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_OK, 10));
    // The device dies: false and a clear error at once.
    dev.dev().needs_reset();
    assert!(!see_prefetch_available(APP_A, TASK_A, RES2));
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES2, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, len), (SEE_E_BROKEN, 0));
    assert!(uninstall().is_some());
    assert!(!see_prefetch_available(APP_A, TASK_A, RES));
    // SAFETY: as above.
    let rc =
        unsafe { see_claim_prefetch(APP_A, TASK_A, RES, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(rc, SEE_E_NO_DRIVER);
}

#[test]
fn manifest_covers_unsigned_bundles_of_this_session_only() {
    let (dev, mut d) = setup();
    let key = dev.dev().key.clone();
    let (nonce, epoch) = d.session();
    let in_manifest = |res: u64, salt: u8, seq: u64| {
        let mut s = dev.dev().spec(APP_A, TASK_A, res, 1, &content(100, salt));
        s.in_manifest = true;
        s.seq = seq;
        s
    };
    // An unsigned bundle before any manifest lists it: refused.
    let early = in_manifest(RES, 9, 1).build();
    dev.dev().deliver(&early);
    assert_eq!(rejected(&mut d, RejectReason::NotInManifest), 1);
    // The manifest takes sequence number 10, its bundles 11 and 12 (one sequence space).
    let (b0, b1) = (in_manifest(RES, 0, 11), in_manifest(RES2, 1, 12));
    let entries = [b0.statement_digest(), b1.statement_digest()];
    dev.dev()
        .deliver(&manifest(&test_key("other"), nonce, epoch, 10, &entries));
    assert_eq!(rejected(&mut d, RejectReason::BadSignature), 1);
    dev.dev()
        .deliver(&manifest(&key, [9; 32], epoch, 10, &entries));
    assert_eq!(rejected(&mut d, RejectReason::WrongSession), 1);
    dev.dev()
        .deliver(&manifest(&key, nonce, epoch, 10, &entries));
    d.poll();
    assert_eq!(d.counters().manifests, 1);
    dev.dev().deliver(&b0.build());
    dev.dev().deliver(&b1.build());
    assert_eq!(
        d.claim(APP_A, TASK_A, RES).unwrap().content,
        content(100, 0)
    );
    assert_eq!(
        d.claim(APP_A, TASK_A, RES2).unwrap().content,
        content(100, 1)
    );
    // Not listed (another content, so another statement): refused.
    let unlisted = in_manifest(RES, 7, 13).build();
    dev.dev().deliver(&unlisted);
    assert_eq!(rejected(&mut d, RejectReason::NotInManifest), 2);
    // A listed statement cannot be replayed (its sequence number is spent), nor the manifest.
    dev.dev().deliver(&b0.build());
    dev.dev()
        .deliver(&manifest(&key, nonce, epoch, 10, &entries));
    assert_eq!(rejected(&mut d, RejectReason::Replay), 2);
    assert_eq!(d.counters().accepted, 2);
}

#[test]
fn a_prefetch_that_overtakes_the_demand_serves_it() {
    let (dev, mut d) = setup();
    let data = content(500, 6);
    dev.dev().serve(APP_A, TASK_A, RES, 2, &data);
    dev.dev().demand_as_prefetch = true;
    let start = dev.dev().now;
    let r = d.claim_or_fetch(APP_A, TASK_A, RES, 2).unwrap();
    assert_eq!(r.content, data);
    assert!(
        dev.dev().now - start < 1_000_000,
        "no wait for the deadline"
    );
    // The prefetched copy stays cached: the next claim is served from the cache.
    assert!(d.available(APP_A, TASK_A, RES), "cached after the claim");
    let again = d.claim(APP_A, TASK_A, RES).unwrap();
    assert_eq!((again.source, again.version), (Source::Cached, 2));
}

#[test]
fn interrupts_are_counted_and_acknowledged() {
    let (dev, mut d) = setup();
    stage(&dev, RES, 1, &content(10, 1));
    assert!(dev.dev().isr != 0);
    assert!(d.available(APP_A, TASK_A, RES));
    assert_eq!(dev.dev().isr, 0, "InterruptStatus acknowledged in poll");
    assert!(d.counters().interrupts >= 1);
}

/// Random garbage in every place the device controls: the driver never panics, never
/// accepts anything, and either stays usable or is cleanly broken.
#[test]
fn random_device_garbage_never_panics_or_verifies() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut usable, mut broken) = (0, 0);
    for round in 0..200 {
        let (dev, mut d) = setup();
        for _ in 0..20 {
            if d.state() != DriverState::Ready {
                break; // the driver reset the device: its rings are gone
            }
            let r = next();
            let q = (r % 3) as usize;
            match (r >> 8) % 4 {
                0 => {
                    // Random used element.
                    let (id, len) = ((next() % 40) as u32, (next() % 70_000) as u32);
                    dev.dev().push_used(q, id, len);
                }
                1 => {
                    // Random bytes in a staging buffer, used with a random length.
                    let n = (next() % 300) as usize;
                    let bytes: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    let len = (next() % 400) as u32;
                    let _ = dev.dev().stage_raw(&bytes, len);
                }
                2 => {
                    // A well-formed chunk header around random object bytes.
                    let n = 1 + (next() % 600) as usize;
                    let mut obj: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    if next() % 2 == 0 && n >= 4 {
                        obj[..4].copy_from_slice(&0x4245_4553u32.to_le_bytes());
                    }
                    dev.dev().deliver(&obj);
                }
                _ => {
                    // A used index moved by a random amount.
                    let idx = dev.dev().used_idx[q].wrapping_add((next() % 5) as u16);
                    dev.dev().set_used_idx(q, idx);
                }
            }
            d.poll();
        }
        let c = d.counters();
        assert_eq!(c.accepted, 0, "round {round}: garbage verified");
        assert!(!d.available(APP_A, TASK_A, RES));
        if d.state() == DriverState::Ready {
            usable += 1;
            // Still usable: a good bundle goes through (buffers were recycled). The ring may
            // be short of buffers if the device kept some; deliver only if one is posted.
            let data = content(64, round as u8);
            let b = dev.dev().spec(APP_A, TASK_A, RES, 1, &data).build();
            let m = dev.dev().chunk_msg(&b);
            dev.dev().stage_raw(&m, m.len() as u32).unwrap();
            let got = d.claim(APP_A, TASK_A, RES).map(|r| r.content.to_vec());
            assert_eq!(
                got,
                Ok(data),
                "round {round}: {:?} {:?}",
                d.state(),
                d.counters()
            );
        } else {
            broken += 1;
            assert!(matches!(
                d.claim(APP_A, TASK_A, RES),
                Err(ClaimError::DeviceBroken(_))
            ));
        }
    }
    // Both outcomes were exercised.
    assert!(
        usable > 20 && broken > 20,
        "usable {usable}, broken {broken}"
    );
}
