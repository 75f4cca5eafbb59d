//! The chunk tree (SPEC.md section 6) with the real hashes: the incremental check accepts
//! exactly the content its digest list describes, in pieces of any size, and refuses a
//! flipped, swapped, duplicated, dropped or substituted chunk at the first tree chunk it
//! spoils; any change to the list, its length or the content length changes the root.

extern crate std;

use std::vec::Vec;

use sha2::{Digest, Sha256, Sha384};

use crate::*;

struct Sha(Sha256);

impl ChunkDigest for Sha {
    fn new() -> Self {
        Self(Sha256::new())
    }
    fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finalize(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The digest list of `content`.
fn list(content: &[u8]) -> Vec<u8> {
    content
        .chunks(TREE_CHUNK_LEN)
        .flat_map(|c| <[u8; 32]>::from(Sha256::digest(c)))
        .collect()
}

fn root(content_len: u64, list: &[u8]) -> [u8; 48] {
    let mut h = Sha384::new();
    h.update(tree_root_prefix(content_len));
    h.update(list);
    h.finalize().into()
}

fn content(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 16) as u8 ^ salt)
        .collect()
}

/// Feeds `content` in pieces of `piece` bytes; the first error, if any.
fn feed(list: &[u8], content: &[u8], len: u64, piece: usize) -> Result<(), WireError> {
    let mut v = ChunkVerifier::<Sha>::new(len);
    for p in content.chunks(piece.max(1)) {
        v.update(list, p)?;
    }
    if v.is_complete() {
        Ok(())
    } else {
        Err(WireError::LengthMismatch {
            what: "content",
            declared: len,
            actual: v.fed(),
        })
    }
}

const PIECES: [usize; 5] = [1, 4093, TREE_CHUNK_LEN, TREE_CHUNK_LEN + 7, 256 << 10];

#[test]
fn valid_content_of_every_shape_passes_in_any_pieces() {
    let c = TREE_CHUNK_LEN;
    for len in [0, 1, c - 1, c, c + 1, 3 * c, (5 << 20) + 3] {
        let data = content(len, 1);
        let l = list(&data);
        assert_eq!(l.len() as u64, digest_list_len(len as u64), "{len}");
        assert_eq!(tree_chunks(len as u64), len.div_ceil(c) as u64);
        for piece in PIECES {
            if len > 1 << 20 && piece < 4096 {
                continue;
            }
            assert_eq!(feed(&l, &data, len as u64, piece), Ok(()), "{len}/{piece}");
        }
    }
    assert_eq!(MAX_TREE_CHUNKS, 256);
}

#[test]
fn every_spoiled_chunk_is_refused_at_its_own_index() {
    let c = TREE_CHUNK_LEN;
    let data = content(4 * c + 100, 2);
    let l = list(&data);
    let len = data.len() as u64;
    // A flipped bit in each tree chunk, first and last byte of it.
    for chunk in 0..5 {
        for at in [chunk * c, (chunk * c + c - 1).min(data.len() - 1)] {
            let mut bad = data.clone();
            bad[at] ^= 0x10;
            for piece in [4093, 256 << 10] {
                assert_eq!(
                    feed(&l, &bad, len, piece),
                    Err(WireError::ChunkDigest {
                        index: chunk as u64
                    }),
                    "bit at {at}, pieces of {piece}"
                );
            }
        }
    }
    // Two chunks swapped: the first of them is refused.
    let mut swapped = data.clone();
    let (a, b) = swapped.split_at_mut(2 * c);
    a[c..2 * c].swap_with_slice(&mut b[..c]);
    assert_eq!(
        feed(&l, &swapped, len, 4093),
        Err(WireError::ChunkDigest { index: 1 })
    );
    // A chunk duplicated in place of the next one.
    let mut dup = data.clone();
    dup.copy_within(0..c, c);
    assert_eq!(
        feed(&l, &dup, len, c),
        Err(WireError::ChunkDigest { index: 1 })
    );
    // A chunk dropped (the rest shifts up, and the content is short).
    let dropped = [&data[..c], &data[2 * c..]].concat();
    assert_eq!(
        feed(&l, &dropped, len, c),
        Err(WireError::ChunkDigest { index: 1 })
    );
    // A chunk appended: bytes past the end.
    let appended = [&data[..], &data[..c]].concat();
    assert!(matches!(
        feed(&l, &appended, len, c),
        Err(WireError::TooLarge { .. })
    ));
    // A chunk from other content (its own list is valid for it) is not this one's.
    let other = content(data.len(), 9);
    let mut mixed = data.clone();
    mixed[2 * c..3 * c].copy_from_slice(&other[2 * c..3 * c]);
    assert_eq!(
        feed(&l, &mixed, len, 4093),
        Err(WireError::ChunkDigest { index: 2 })
    );
    // After a refusal, nothing more is taken.
    let mut v = ChunkVerifier::<Sha>::new(len);
    let mut bad = data.clone();
    bad[0] ^= 1;
    assert!(v.update(&l, &bad[..c]).is_err());
    assert!(v.update(&l, &data[c..2 * c]).is_err());
    assert!(!v.is_complete());
}

#[test]
fn a_list_of_the_wrong_length_is_refused_and_any_list_change_moves_the_root() {
    let c = TREE_CHUNK_LEN;
    let data = content(3 * c, 3);
    let l = list(&data);
    let len = data.len() as u64;
    for wrong in [&l[..64], &[&l[..], &l[..32]].concat()[..], &[]] {
        assert!(matches!(
            feed(wrong, &data, len, c),
            Err(WireError::LengthMismatch {
                what: "bundle digest list",
                ..
            })
        ));
    }
    let good = root(len, &l);
    let mut tampered = l.clone();
    tampered[40] ^= 1;
    let mut swapped = l.clone();
    swapped.copy_within(0..32, 64);
    swapped[..32].copy_from_slice(&l[64..96]);
    for changed in [
        root(len, &tampered),
        root(len, &swapped),
        root(len, &l[..64]),
        root(len - 1, &l),
        root(len + 1, &l),
    ] {
        assert_ne!(changed, good);
    }
    // The prefix binds the context, the chunk size and the length, in that order.
    let prefix = tree_root_prefix(len);
    assert!(prefix.starts_with(TREE_CONTEXT));
    assert_eq!(
        prefix[TREE_CONTEXT.len()..TREE_CONTEXT.len() + 8],
        (TREE_CHUNK_LEN as u64).to_le_bytes()
    );
    assert_eq!(prefix[TREE_CONTEXT.len() + 8..], len.to_le_bytes());
}
