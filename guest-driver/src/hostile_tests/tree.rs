//! The chunk tree (SPEC.md section 6) against a hostile device: every way of spoiling a
//! multi-chunk bundle's content, digest list or root is refused, with its reason, before the
//! bundle can be claimed (and, for a spoiled chunk, before the rest of it has arrived), and
//! valid bundles of every shape claim back byte for byte.

use p384::ecdsa::{signature::Signer as _, Signature};
use virtio_prefetch_wire::{BundleHeader, TREE_CHUNK_LEN};

use super::*;
use crate::testdev::{tree_list, tree_root, BundleSpec};

const C: usize = TREE_CHUNK_LEN;

/// Content in which no two tree chunks (nor two contents of another salt) are equal (the
/// module's `content` repeats every 256 bytes, so its chunks would all be alike).
fn content(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ salt)
        .collect()
}

/// A driver whose cache holds a bundle of several MiB.
fn big_setup() -> (TestPlatform, Driver<TestPlatform>) {
    let dev = TestPlatform::new();
    let pubkey = dev.dev().key.verifying_key().to_sec1_bytes();
    let mut c = config(Completion::Interrupt);
    c.store_budget = 32 << 20;
    let d = Driver::new(dev.clone(), c, &pubkey, registry()).expect("driver up");
    dev.dev().irq = Some(d.interrupt_handle());
    (dev, d)
}

/// Sends `object` on a new stream in transport chunks of `piece` bytes, polling after each
/// (so staging buffers come back, and each chunk is checked as it lands), and stops once
/// `upto` bytes are out. Returns the stream and the offset reached.
fn send_upto(
    dev: &TestPlatform,
    d: &mut Driver<TestPlatform>,
    object: &[u8],
    piece: usize,
    upto: usize,
) -> (u64, usize) {
    let stream = {
        let mut dv = dev.dev();
        dv.stream += 1;
        dv.stream
    };
    let offset = send_from(dev, d, stream, object, 0, piece, upto);
    (stream, offset)
}

fn send_from(
    dev: &TestPlatform,
    d: &mut Driver<TestPlatform>,
    stream: u64,
    object: &[u8],
    mut offset: usize,
    piece: usize,
    upto: usize,
) -> usize {
    while offset < object.len().min(upto) {
        let n = (object.len() - offset).min(piece);
        let m = chunk_raw(
            stream,
            object.len() as u32,
            offset as u32,
            &object[offset..offset + n],
        );
        dev.dev()
            .stage_raw(&m, m.len() as u32)
            .expect("a staging buffer posted");
        d.poll();
        offset += n;
    }
    offset
}

fn send(dev: &TestPlatform, d: &mut Driver<TestPlatform>, object: &[u8], piece: usize) {
    send_upto(dev, d, object, piece, usize::MAX);
}

/// Header, list and content as separate parts of a valid bundle.
struct Parts {
    header: Vec<u8>,
    list: Vec<u8>,
    content: Vec<u8>,
}

impl Parts {
    fn of(spec: &BundleSpec) -> Self {
        let b = spec.build();
        let list_len = tree_list(&spec.content).len();
        Self {
            header: b[..BundleHeader::LEN].to_vec(),
            list: b[BundleHeader::LEN..BundleHeader::LEN + list_len].to_vec(),
            content: b[BundleHeader::LEN + list_len..].to_vec(),
        }
    }

    fn join(&self) -> Vec<u8> {
        [&self.header[..], &self.list, &self.content].concat()
    }
}

/// A bundle signed over `header` as given (a signer that signed what it was told).
fn signed(spec: &BundleSpec, tamper: impl FnOnce(&mut BundleHeader)) -> Vec<u8> {
    let mut h = spec.header();
    tamper(&mut h);
    let sig: Signature = spec.key.sign(&h.to_be_signed());
    h.signature.copy_from_slice(&sig.to_bytes());
    let mut out = vec![0u8; BundleHeader::LEN];
    h.encode(&mut out).unwrap();
    out
}

/// The object is refused for `reason` and nothing of it can be claimed.
fn assert_refused(d: &mut Driver<TestPlatform>, reason: RejectReason, what: &str) {
    d.poll();
    let c = d.counters();
    assert_eq!(c.rejected[reason.raw() as usize], 1, "{what}: {c:?}");
    assert_eq!(c.rejected_total(), 1, "{what}: {c:?}");
    assert_eq!(c.accepted, 0, "{what}");
    assert!(!d.available(APP_A, TASK_A, RES), "{what}");
    assert_eq!(
        d.claim(APP_A, TASK_A, RES),
        Err(ClaimError::NotStaged),
        "{what}"
    );
}

/// Four whole tree chunks and a short fifth.
const LEN: usize = 4 * C + 100;

#[test]
fn valid_bundles_of_every_shape_claim_back_byte_exact() {
    for (len, piece) in [
        (1, 64 << 10),
        (C, 64 << 10),
        (C + 1, 64 << 10),
        (C + 1, 4093),
        (LEN, 4093),
        ((5 << 20) + 3, 64 << 10),
    ] {
        let (dev, mut d) = big_setup();
        let data = content(len, len as u8);
        let b = dev.dev().spec(APP_A, TASK_A, RES, 1, &data).build();
        send(&dev, &mut d, &b, piece);
        let r = d.claim(APP_A, TASK_A, RES).expect("accepted");
        assert!(r.content == data, "{len} bytes in pieces of {piece}");
        assert_eq!(r.tree_root, tree_root(len as u64, &tree_list(&data)));
        assert_clean(&d.counters());
        assert!(d.profile().hash_ns > 0 || len == 1);
    }
}

#[test]
fn a_flipped_bit_in_any_tree_chunk_is_refused_when_that_chunk_lands() {
    for chunk in 0..5 {
        for at in [chunk * C, (chunk * C + C - 1).min(LEN - 1)] {
            let (dev, mut d) = setup();
            let spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(LEN, 3));
            let mut p = Parts::of(&spec);
            p.content[at] ^= 0x04;
            let b = p.join();
            // Send up to the transport chunk that completes the spoiled tree chunk.
            let chunk_end = BundleHeader::LEN + p.list.len() + ((chunk + 1) * C).min(LEN);
            let piece = 4093;
            let upto = chunk_end.div_ceil(piece) * piece;
            let (stream, offset) = send_upto(&dev, &mut d, &b, piece, upto);
            let what = format!("bit at {at}");
            if offset < b.len() {
                // Refused before the object is complete.
                assert_refused(&mut d, RejectReason::DigestMismatch, &what);
            }
            // The rest of the object is discarded quietly.
            send_from(&dev, &mut d, stream, &b, offset, piece, usize::MAX);
            assert_refused(&mut d, RejectReason::DigestMismatch, &what);
            assert_eq!(d.counters().malformed, 0, "{what}");
            // The driver goes on: the same bundle, unspoiled, is accepted.
            let good = dev
                .dev()
                .spec(APP_A, TASK_A, RES, 1, &content(LEN, 3))
                .build();
            send(&dev, &mut d, &good, 64 << 10);
            assert_eq!(
                d.claim(APP_A, TASK_A, RES).unwrap().content,
                content(LEN, 3)
            );
        }
    }
}

#[test]
fn swapped_duplicated_dropped_or_substituted_chunks_are_refused() {
    let data = content(LEN, 5);
    let other_data = content(LEN, 6);
    let cases: [(&str, RejectReason); 7] = [
        ("swapped", RejectReason::DigestMismatch),
        ("duplicated in place", RejectReason::DigestMismatch),
        ("duplicated, appended", RejectReason::Malformed),
        ("dropped", RejectReason::Malformed),
        ("dropped, length forged", RejectReason::DigestMismatch),
        (
            "substituted from another bundle",
            RejectReason::DigestMismatch,
        ),
        (
            "another bundle's list and content",
            RejectReason::DigestMismatch,
        ),
    ];
    for (what, reason) in cases {
        let (dev, mut d) = setup();
        // Another bundle, validly signed and accepted (another resource of the same app).
        let other = dev.dev().spec(APP_A, TASK_A, RES2, 1, &other_data);
        let other_parts = Parts::of(&other);
        send(&dev, &mut d, &other.build(), 64 << 10);
        assert!(d.available(APP_A, TASK_A, RES2));
        let spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &data);
        let mut p = Parts::of(&spec);
        match what {
            "swapped" => {
                let (a, b) = p.content.split_at_mut(2 * C);
                a[C..].swap_with_slice(&mut b[..C]);
            }
            "duplicated in place" => p.content.copy_within(0..C, 2 * C),
            "duplicated, appended" => p.content.extend_from_slice(&data[..C]),
            "dropped" => {
                p.content.drain(C..2 * C);
            }
            "dropped, length forged" => {
                // A header claiming one chunk less (its signature no longer matches), with the
                // original list cut to fit: the root check refuses the list.
                p.content.drain(C..2 * C);
                p.list.truncate(4 * 32);
                p.header =
                    spec.build_with(|h| h.content_len -= C as u64)[..BundleHeader::LEN].to_vec();
            }
            "substituted from another bundle" => {
                p.content[2 * C..3 * C].copy_from_slice(&other_parts.content[2 * C..3 * C])
            }
            "another bundle's list and content" => {
                p.list = other_parts.list.clone();
                p.content = other_parts.content.clone();
            }
            _ => unreachable!(),
        }
        send(&dev, &mut d, &p.join(), 4093);
        d.poll();
        let c = d.counters();
        assert_eq!(c.rejected[reason.raw() as usize], 1, "{what}: {c:?}");
        assert_eq!((c.rejected_total(), c.accepted), (1, 1), "{what}: {c:?}");
        assert!(!d.available(APP_A, TASK_A, RES), "{what}");
        assert_eq!(
            d.claim(APP_A, TASK_A, RES),
            Err(ClaimError::NotStaged),
            "{what}"
        );
        // The other bundle is untouched.
        assert_eq!(d.claim(APP_A, TASK_A, RES2).unwrap().content, other_data);
    }
}

#[test]
fn a_bad_digest_list_or_root_is_refused_before_the_content() {
    let data = content(LEN, 7);
    let cases: [(&str, RejectReason); 6] = [
        ("list entry flipped", RejectReason::DigestMismatch),
        ("list entries swapped", RejectReason::DigestMismatch),
        ("list one entry short", RejectReason::Malformed),
        ("list one entry long", RejectReason::Malformed),
        ("root flipped after signing", RejectReason::DigestMismatch),
        (
            "a signed root that is not the list's",
            RejectReason::DigestMismatch,
        ),
    ];
    for (what, reason) in cases {
        let (dev, mut d) = setup();
        let spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &data);
        let mut p = Parts::of(&spec);
        match what {
            "list entry flipped" => p.list[40] ^= 1,
            "list entries swapped" => {
                let first: Vec<u8> = p.list[..32].to_vec();
                p.list.copy_within(32..64, 0);
                p.list[32..64].copy_from_slice(&first);
            }
            "list one entry short" => p.list.truncate(p.list.len() - 32),
            "list one entry long" => p.list.extend_from_slice(&[0; 32]),
            "root flipped after signing" => {
                p.header = spec.build_with(|h| h.tree_root[0] ^= 1)[..BundleHeader::LEN].to_vec()
            }
            "a signed root that is not the list's" => {
                p.header = signed(&spec, |h| h.tree_root[47] ^= 1)
            }
            _ => unreachable!(),
        }
        let b = p.join();
        // Only the header and list, and one transport chunk after them: refused already.
        let piece = 4093;
        let upto = BundleHeader::LEN + p.list.len() + 1;
        let (stream, offset) = send_upto(&dev, &mut d, &b, piece, upto);
        assert!(offset < b.len(), "{what}");
        assert_refused(&mut d, reason, what);
        send_from(&dev, &mut d, stream, &b, offset, piece, usize::MAX);
        assert_refused(&mut d, reason, what);
        assert_eq!(d.counters().malformed, 0, "{what}");
    }
}

#[test]
fn a_consistent_tree_without_a_valid_signature_is_never_claimable() {
    // The host recomputes list and root for content of its own: every chunk matches its
    // digest and the list its root, and the signature, over the original root, fails.
    let (dev, mut d) = setup();
    let spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(LEN, 8));
    let forged = content(LEN, 9);
    let list = tree_list(&forged);
    let header = spec.build_with(|h| h.tree_root = tree_root(LEN as u64, &list));
    let b = [&header[..BundleHeader::LEN], &list, &forged].concat();
    send(&dev, &mut d, &b, 4093);
    assert_refused(&mut d, RejectReason::BadSignature, "re-rooted");
    // A version-1 bundle (header then content, no list) is refused as malformed.
    let (dev, mut d) = setup();
    let spec = dev.dev().spec(APP_A, TASK_A, RES, 1, &content(LEN, 8));
    let mut v1 = spec.build()[..BundleHeader::LEN].to_vec();
    v1[4] = 1;
    v1.extend_from_slice(&spec.content);
    send(&dev, &mut d, &v1, 64 << 10);
    assert_refused(&mut d, RejectReason::Malformed, "version 1");
}

#[test]
fn a_bundle_interleaved_with_another_object_is_refused_and_neither_completes() {
    let (dev, mut d) = setup();
    let a = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(LEN, 1))
        .build();
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES2, 1, &content(LEN, 2))
        .build();
    let piece = 64 << 10;
    // Half of A, then B's first chunk: refused (SPEC section 5), and A is dropped.
    let (sa, oa) = send_upto(&dev, &mut d, &a, piece, 2 * piece);
    let (sb, ob) = send_upto(&dev, &mut d, &b, piece, piece);
    assert_eq!(d.counters().malformed, 1);
    // Neither continues: each remaining chunk of either is refused.
    send_from(&dev, &mut d, sa, &a, oa, piece, oa + piece);
    send_from(&dev, &mut d, sb, &b, ob, piece, ob + piece);
    assert_eq!(d.counters().malformed, 3);
    let c = d.counters();
    assert_eq!((c.accepted, c.rejected_total()), (0, 0), "{c:?}");
    assert!(!d.available(APP_A, TASK_A, RES));
    assert!(!d.available(APP_A, TASK_A, RES2));
    // A bundle whose chunks carry the other's bytes at the same offsets (one stream, the
    // other object's content spliced in) is a substitution: refused by the tree.
    let mut spliced = a.clone();
    spliced[3 * piece..4 * piece].copy_from_slice(&b[3 * piece..4 * piece]);
    send(&dev, &mut d, &spliced, piece);
    d.poll();
    assert_eq!(
        d.counters().rejected[RejectReason::DigestMismatch.raw() as usize],
        1
    );
    assert!(!d.available(APP_A, TASK_A, RES));
    // Sent whole and alone, each is accepted.
    let a = dev
        .dev()
        .spec(APP_A, TASK_A, RES, 1, &content(LEN, 1))
        .build();
    send(&dev, &mut d, &a, piece);
    let b = dev
        .dev()
        .spec(APP_A, TASK_A, RES2, 1, &content(LEN, 2))
        .build();
    send(&dev, &mut d, &b, piece);
    assert_eq!(
        d.claim(APP_A, TASK_A, RES).unwrap().content,
        content(LEN, 1)
    );
    assert_eq!(
        d.claim(APP_A, TASK_A, RES2).unwrap().content,
        content(LEN, 2)
    );
}
