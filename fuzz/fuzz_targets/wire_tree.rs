//! A bundle's chunk tree (SPEC.md section 6) against any damage: the input picks a content
//! length (up to a few tree chunks), the content's bytes, one change to the digest list or
//! the content, and the transport-chunk size the receiver sees them in. The root check (SHA-384
//! of the prefix and the list against the signed root) followed by the incremental chunk check
//! (`ChunkVerifier` over the guest's `ChunkHasher`) must accept exactly when the list and the
//! content are the ones the root was made from, refuse at the first spoiled chunk, and never
//! panic. The raw input is also fed as a list and content of its own (no panic), and as a whole
//! bundle to `parse_tree` (the parts add up).
#![no_main]

use libfuzzer_sys::fuzz_target;
use see_guest_driver::chunk_hash::ChunkHasher;
use sha2::{Digest, Sha384};
use virtio_prefetch_wire::{
    digest_list_len, tree_root_prefix, BundleHeader, ChunkVerifier, WireError, TREE_CHUNK_LEN,
};

fn root(content_len: u64, list: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(tree_root_prefix(content_len));
    h.update(list);
    h.finalize().into()
}

fn list_of(content: &[u8]) -> Vec<u8> {
    content
        .chunks(TREE_CHUNK_LEN)
        .flat_map(|c| {
            let mut h = ChunkHasher::new();
            h.update(c);
            h.finalize()
        })
        .collect()
}

/// Root check, then the content in pieces; Ok when everything matched. Checks the verifier's
/// own invariants on the way.
fn receive(signed_root: &[u8; 48], len: u64, list: &[u8], content: &[u8], piece: usize) -> bool {
    if list.len() as u64 != digest_list_len(len) || content.len() as u64 != len {
        return false;
    }
    if root(len, list) != *signed_root {
        return false;
    }
    let mut v = ChunkVerifier::<ChunkHasher>::new(len);
    for p in content.chunks(piece) {
        let before = v.fed();
        match v.update(list, p) {
            Ok(()) => {}
            Err(WireError::ChunkDigest { index }) => {
                // Refused at a chunk this piece completed, and there it stopped.
                let chunk = TREE_CHUNK_LEN as u64;
                assert!(index >= before / chunk && index <= (before + p.len() as u64 - 1) / chunk);
                assert_eq!(v.fed(), ((index + 1) * chunk).min(len));
                assert!(v.update(list, p).is_err(), "refused stays refused");
                return false;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(v.is_complete());
    true
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (control, rest) = data.split_at(8);
    let len = (u32::from_le_bytes([control[0], control[1], control[2], 0]) as usize)
        % (3 * TREE_CHUNK_LEN + 17);
    let piece = 1 + u16::from_le_bytes([control[3], control[4]]) as usize * 4;
    let op = control[5] % 8;
    let at = u16::from_le_bytes([control[6], control[7]]) as usize;
    // The content: the rest of the input, stretched (salted per 256 bytes so chunks differ).
    let content: Vec<u8> = (0..len)
        .map(|i| rest.get(i % rest.len().max(1)).copied().unwrap_or(0) ^ (i >> 8) as u8)
        .collect();
    let list = list_of(&content);
    let signed = root(len as u64, &list);
    let (mut l, mut c) = (list.clone(), content.clone());
    let chunk = TREE_CHUNK_LEN;
    match op {
        0 => {}
        1 if !c.is_empty() => c[(at * 97) % len] ^= 1 << (at % 8),
        2 if !l.is_empty() => {
            let i = at % l.len();
            l[i] ^= 1;
        }
        3 if len > 2 * chunk => {
            let (a, b) = c.split_at_mut(chunk);
            a.swap_with_slice(&mut b[..chunk]);
        }
        4 if len > chunk => c.truncate(len - 1 - at % chunk.min(len - 1)),
        5 => c.extend_from_slice(&rest[..rest.len().min(at % 64 + 1)]),
        6 if !l.is_empty() => l.truncate(l.len() - 32),
        7 if len > 2 * chunk => c.copy_within(0..chunk, chunk),
        _ => {}
    }
    let unchanged = l == list && c == content;
    assert_eq!(
        receive(&signed, len as u64, &l, &c, piece),
        unchanged,
        "op {op}"
    );
    // Raw bytes as a list and content of their own: refused or not, never a panic.
    let half = rest.len() / 2;
    let mut v = ChunkVerifier::<ChunkHasher>::new(half as u64 & 0xffff);
    let _ = v.update(&rest[..half], &rest[half..]);
    // Raw bytes as a whole bundle: the parts add up.
    if let Ok((header, list, content)) = BundleHeader::parse_tree(data) {
        assert_eq!(list.len(), header.digest_list_len());
        assert_eq!(content.len() as u64, header.content_len);
        assert_eq!(data.len() as u64, header.object_len());
    }
});
