//! SHA-256 for the guest: one streaming hasher over two compression functions, the CPU's SHA
//! extensions (SHA-NI) when present and enabled, software otherwise.
//!
//! [`Sha256`] buffers input into 64-byte blocks and hands whole blocks to the compression
//! function that [`backend`] names: [`Backend::Software`] (`sha2::block_api::compress256`) until
//! [`enable_hardware`] has found SHA, SSSE3 and SSE4.1 through CPUID and switched every later
//! call to [`Backend::ShaNi`]. The choice is one static atomic, read at each
//! [`Sha256::update`] and [`Sha256::finalize`]; both backends compute the same function, so a
//! hasher may see the switch half-way through a message.
//!
//! # Why the SHA-NI path is global assembly
//!
//! The guest kernel builds for `x86_64-unknown-none`, a soft-float target: its code never
//! touches the SSE registers, and it cannot compile SSE intrinsics (the `sha2` crate's own SHA-NI
//! path fails there with an LLVM error, and on `target_os = "none"` its CPU detection always
//! answers "no"). So the SHA-NI compression function, `see_sha256_ni_blocks`, is written out
//! in `global_asm!` as an ordinary SysV function. Inline `asm!` would have to declare the
//! `xmm` registers it clobbers, which the soft-float target refuses; a call to a SysV function
//! needs no declaration, because the SysV ABI makes every `xmm` register caller-saved, and
//! soft-float code keeps nothing in them anyway.
//!
//! # Under `kvm_pvm`
//!
//! Ring 0 of a guest runs in KVM's instruction emulator there (docs/ARCHITECTURE.md), which
//! emulates neither the SHA instructions nor `pshufd`: a SHA-NI hash in ring 0 ends the VM
//! with a KVM internal error (tried: "could not emulate a guest instruction" at the first
//! `pshufd`). With [`Backend::ShaNi`] selected, hash from ring 3 only (the SEE kernel runs its
//! apps and the driver, and so all its hashing, in ring 3). Software SHA-256 in emulated ring
//! 0 works but runs at kilobytes a second.

use core::sync::atomic::{AtomicU8, Ordering};

/// Bytes in one SHA-256 block.
const BLOCK: usize = 64;

/// The initial hash value (FIPS 180-4, 5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// Which compression function [`Sha256`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The CPU's SHA extensions (`sha256rnds2`, `sha256msg1`, `sha256msg2`), x86_64 only.
    ShaNi,
    /// Portable code (`sha2::block_api::compress256`).
    Software,
}

const SOFTWARE: u8 = 0;
const SHA_NI: u8 = 1;

/// The backend every [`Sha256`] uses: [`SOFTWARE`] until [`enable_hardware`] switches it.
static BACKEND: AtomicU8 = AtomicU8::new(SOFTWARE);

/// The backend [`Sha256::update`] and [`sha256`] use now.
pub fn backend() -> Backend {
    match BACKEND.load(Ordering::Relaxed) {
        SHA_NI => Backend::ShaNi,
        _ => Backend::Software,
    }
}

/// Switches every later hash to [`Backend::ShaNi`] if CPUID reports SHA, SSSE3 and SSE4.1,
/// and returns the backend in use (always [`Backend::Software`] off x86_64).
///
/// # Safety
///
/// The caller guarantees, for every CPU that will hash after this call, that
/// - the OS has enabled SSE state: CR4.OSFXSR set and CR0.EM clear (so SSE instructions do
///   not fault), and that the SSE registers survive interrupts and context switches;
/// - no other code on that CPU keeps live values in `xmm` registers across calls: the SHA-NI
///   function overwrites `xmm0`-`xmm10` without saving them, as the SysV ABI allows but code
///   that ignores the ABI for `xmm` registers (an interrupt handler, say) would not expect.
///
/// Soft-float code (the `x86_64-unknown-none` target) never uses `xmm` registers, and a
/// hosted OS such as Linux saves them on every switch, so both meet the second condition.
pub unsafe fn enable_hardware() -> Backend {
    #[cfg(target_arch = "x86_64")]
    if ni::supported() {
        BACKEND.store(SHA_NI, Ordering::Relaxed);
    }
    backend()
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finalize()
}

/// A streaming SHA-256 hasher.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// Input not yet compressed: `buf[..buf_len]`, always less than one block.
    buf: [u8; BLOCK],
    buf_len: usize,
    /// Bytes hashed so far (the padding wants the length in bits, modulo 2^64).
    len: u64,
}

impl core::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sha256")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A hasher over the empty message.
    pub fn new() -> Self {
        Self {
            state: H0,
            buf: [0; BLOCK],
            buf_len: 0,
            len: 0,
        }
    }

    /// Appends `bytes` to the message.
    pub fn update(&mut self, bytes: &[u8]) {
        // SAFETY: `backend()` is `ShaNi` only after `enable_hardware` found the instructions
        // in CPUID and its caller vouched for the SSE state.
        unsafe { self.update_with(bytes, backend()) }
    }

    /// The digest of everything given to [`Sha256::update`].
    pub fn finalize(self) -> [u8; 32] {
        // SAFETY: as in `update`.
        unsafe { self.finalize_with(backend()) }
    }

    /// [`Sha256::update`] through `backend`.
    ///
    /// # Safety
    ///
    /// If `backend` is [`Backend::ShaNi`]: as [`compress`].
    unsafe fn update_with(&mut self, mut bytes: &[u8], backend: Backend) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        if self.buf_len > 0 {
            let take = (BLOCK - self.buf_len).min(bytes.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&bytes[..take]);
            self.buf_len += take;
            bytes = &bytes[take..];
            if self.buf_len < BLOCK {
                return;
            }
            // SAFETY: passed on from the caller.
            unsafe { compress(backend, &mut self.state, core::slice::from_ref(&self.buf)) };
            self.buf_len = 0;
        }
        let (blocks, rest) = bytes.as_chunks::<BLOCK>();
        if !blocks.is_empty() {
            // SAFETY: passed on from the caller.
            unsafe { compress(backend, &mut self.state, blocks) };
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// [`Sha256::finalize`] through `backend`.
    ///
    /// # Safety
    ///
    /// If `backend` is [`Backend::ShaNi`]: as [`compress`].
    unsafe fn finalize_with(mut self, backend: Backend) -> [u8; 32] {
        // The message, a 1 bit, zeros, and the length in bits as a 64-bit big-endian number,
        // in one block if the length fits after the 1 bit, else in two.
        let mut tail = [0u8; 2 * BLOCK];
        let n = self.buf_len;
        tail[..n].copy_from_slice(&self.buf[..n]);
        tail[n] = 0x80;
        let end = if n < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
        tail[end - 8..end].copy_from_slice(&self.len.wrapping_mul(8).to_be_bytes());
        let (blocks, _) = tail[..end].as_chunks::<BLOCK>();
        // SAFETY: passed on from the caller.
        unsafe { compress(backend, &mut self.state, blocks) };
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// Compresses `blocks` into `state` with `backend`.
///
/// # Safety
///
/// If `backend` is [`Backend::ShaNi`]: the CPU supports SHA, SSSE3 and SSE4.1, and the
/// conditions of [`enable_hardware`] hold on this CPU.
unsafe fn compress(backend: Backend, state: &mut [u32; 8], blocks: &[[u8; BLOCK]]) {
    match backend {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: passed on from the caller.
        Backend::ShaNi => unsafe { ni::compress(state, blocks) },
        _ => sha2::block_api::compress256(state, blocks),
    }
}

/// The SHA-NI compression function (x86_64 only).
#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::{__cpuid, __cpuid_count};

    // `see_sha256_ni_blocks(state: *mut [u32; 8], blocks: *const u8, count: usize)`, SysV:
    // rdi = state (a..h, native-endian words, any alignment), rsi = `count` 64-byte blocks
    // (any alignment), rdx = count. Uses rax, xmm0-xmm10 and the flags, all caller-saved.
    //
    // `sha256rnds2 dst, src, xmm0` runs two rounds: dst holds C,D,G,H and src A,B,E,F (as
    // dwords 3..0: C,D,G,H and A,B,E,F), xmm0's low two dwords the two message words plus
    // their round constants; dst receives the new A,B,E,F. The old A,B,E,F is then the new
    // C,D,G,H, so two calls with the registers swapped make four rounds and leave ABEF in
    // xmm1 and CDGH in xmm2 again.
    //
    // The message schedule four words at a time, for words t..t+3, from the groups
    // W[t-16..t-13] (m0), W[t-12..t-9] (m1), W[t-8..t-5] (m2), W[t-4..t-1] (m3):
    // `sha256msg1 m0, m1` gives W[t-16+i] + s0(W[t-15+i]); adding W[t-7..t-4] (m2's last
    // three words and m3's first, by `palignr`) and then `sha256msg2 m0, m3` (which adds
    // s1(W[t-2+i]), the last two from its own first results) gives W[t..t+3] in m0.
    core::arch::global_asm!(
        r#"
    .macro see_sha256_ni_rounds4 koff
    paddd xmm0, [rax + \koff]
    sha256rnds2 xmm2, xmm1, xmm0
    pshufd xmm0, xmm0, 0x0e
    sha256rnds2 xmm1, xmm2, xmm0
    .endm

    .macro see_sha256_ni_load m, off
    movdqu \m, [rsi + \off]
    pshufb \m, xmm7
    movdqa xmm0, \m
    see_sha256_ni_rounds4 \off
    .endm

    .macro see_sha256_ni_schedule m0, m1, m2, m3, koff
    sha256msg1 \m0, \m1
    movdqa xmm10, \m3
    palignr xmm10, \m2, 4
    paddd \m0, xmm10
    sha256msg2 \m0, \m3
    movdqa xmm0, \m0
    see_sha256_ni_rounds4 \koff
    .endm

    .pushsection .text.see_sha256_ni_blocks, "ax", @progbits
    .balign 16
    .globl see_sha256_ni_blocks
    .hidden see_sha256_ni_blocks
    .type see_sha256_ni_blocks, @function
see_sha256_ni_blocks:
    test rdx, rdx
    jz 3f
    lea rax, [rip + see_sha256_ni_k]
    movdqa xmm7, [rip + see_sha256_ni_bswap]

    /* a,b,c,d and e,f,g,h (dwords 0..3) into ABEF = (F,E,B,A) and CDGH = (H,G,D,C) */
    movdqu xmm1, [rdi]
    movdqu xmm2, [rdi + 16]
    pshufd xmm1, xmm1, 0xb1       /* b,a,d,c */
    pshufd xmm2, xmm2, 0x1b       /* h,g,f,e */
    movdqa xmm10, xmm1
    palignr xmm1, xmm2, 8         /* f,e,b,a */
    pblendw xmm2, xmm10, 0xf0     /* h,g,d,c */

2:
    movdqa xmm8, xmm1
    movdqa xmm9, xmm2

    /* words 0-15: the block, big-endian */
    see_sha256_ni_load xmm3, 0
    see_sha256_ni_load xmm4, 16
    see_sha256_ni_load xmm5, 32
    see_sha256_ni_load xmm6, 48

    /* words 16-63 */
    see_sha256_ni_schedule xmm3, xmm4, xmm5, xmm6, 64
    see_sha256_ni_schedule xmm4, xmm5, xmm6, xmm3, 80
    see_sha256_ni_schedule xmm5, xmm6, xmm3, xmm4, 96
    see_sha256_ni_schedule xmm6, xmm3, xmm4, xmm5, 112
    see_sha256_ni_schedule xmm3, xmm4, xmm5, xmm6, 128
    see_sha256_ni_schedule xmm4, xmm5, xmm6, xmm3, 144
    see_sha256_ni_schedule xmm5, xmm6, xmm3, xmm4, 160
    see_sha256_ni_schedule xmm6, xmm3, xmm4, xmm5, 176
    see_sha256_ni_schedule xmm3, xmm4, xmm5, xmm6, 192
    see_sha256_ni_schedule xmm4, xmm5, xmm6, xmm3, 208
    see_sha256_ni_schedule xmm5, xmm6, xmm3, xmm4, 224
    see_sha256_ni_schedule xmm6, xmm3, xmm4, xmm5, 240

    paddd xmm1, xmm8
    paddd xmm2, xmm9
    add rsi, 64
    dec rdx
    jnz 2b

    /* back to a,b,c,d and e,f,g,h */
    pshufd xmm1, xmm1, 0x1b       /* a,b,e,f */
    pshufd xmm2, xmm2, 0xb1       /* g,h,c,d */
    movdqa xmm10, xmm1
    pblendw xmm1, xmm2, 0xf0      /* a,b,c,d */
    palignr xmm2, xmm10, 8        /* e,f,g,h */
    movdqu [rdi], xmm1
    movdqu [rdi + 16], xmm2
3:
    ret
    .size see_sha256_ni_blocks, . - see_sha256_ni_blocks
    .popsection

    .purgem see_sha256_ni_rounds4
    .purgem see_sha256_ni_load
    .purgem see_sha256_ni_schedule

    .pushsection .rodata.see_sha256_ni, "a", @progbits
    .balign 16
see_sha256_ni_bswap:
    /* pshufb mask: reverse the bytes of each dword */
    .byte 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12
see_sha256_ni_k:
    /* the round constants (FIPS 180-4, 4.2.2) */
    .long 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5
    .long 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5
    .long 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3
    .long 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174
    .long 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc
    .long 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da
    .long 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7
    .long 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967
    .long 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13
    .long 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85
    .long 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3
    .long 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070
    .long 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5
    .long 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3
    .long 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208
    .long 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
    .popsection
"#
    );

    unsafe extern "sysv64" {
        fn see_sha256_ni_blocks(state: *mut [u32; 8], blocks: *const u8, count: usize);
    }

    /// CPUID leaf 1 ECX: SSSE3 (`pshufb`, `palignr`) and SSE4.1 (`pblendw`).
    const LEAF1_ECX: u32 = (1 << 9) | (1 << 19);
    /// CPUID leaf 7 subleaf 0 EBX: SHA.
    const LEAF7_EBX: u32 = 1 << 29;

    /// Whether this CPU has SHA, SSSE3 and SSE4.1.
    pub(super) fn supported() -> bool {
        // CPUID exists on every x86_64 CPU and has no side effects.
        let max_leaf = __cpuid(0).eax;
        max_leaf >= 7
            && __cpuid(1).ecx & LEAF1_ECX == LEAF1_ECX
            && __cpuid_count(7, 0).ebx & LEAF7_EBX == LEAF7_EBX
    }

    /// Compresses `blocks` into `state` with SHA-NI.
    ///
    /// # Safety
    ///
    /// The CPU supports SHA, SSSE3 and SSE4.1 ([`supported`]), and the conditions of
    /// [`super::enable_hardware`] hold on this CPU.
    pub(super) unsafe fn compress(state: &mut [u32; 8], blocks: &[[u8; 64]]) {
        // SAFETY: the function reads `blocks.len()` whole blocks from `blocks` and reads and
        // writes the eight words of `state`, both valid for that; it needs no alignment. It
        // runs SSE, SSSE3, SSE4.1 and SHA instructions (present and enabled: the caller's
        // contract) and overwrites xmm0-xmm10 and rax, which the SysV ABI makes caller-saved;
        // the compiled code around the call (soft-float on the guest target) keeps nothing
        // live in them, and the caller vouches that no other code on this CPU does either.
        unsafe { see_sha256_ni_blocks(state, blocks.as_ptr().cast(), blocks.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{vec, vec::Vec};

    fn reference(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    /// The backends this machine can run: Software, and ShaNi if the host CPU has it.
    fn backends() -> Vec<Backend> {
        let mut v = vec![Backend::Software];
        if host_has_sha_ni() {
            v.push(Backend::ShaNi);
        }
        v
    }

    fn host_has_sha_ni() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("sha")
                && std::is_x86_feature_detected!("ssse3")
                && std::is_x86_feature_detected!("sse4.1")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Hashes `bytes` with `backend`, in pieces ending at the offsets in `splits`.
    fn hash(backend: Backend, bytes: &[u8], splits: &[usize]) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut at = 0;
        for &s in splits.iter().chain([bytes.len()].iter()) {
            // SAFETY: `backends()` offers ShaNi only when the host CPU has it; Linux enables
            // SSE state and saves the xmm registers on every context switch.
            unsafe { h.update_with(&bytes[at..s], backend) };
            at = s;
        }
        // SAFETY: as above.
        unsafe { h.finalize_with(backend) }
    }

    /// A seeded xorshift64* stream.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn hex(d: &[u8; 32]) -> std::string::String {
        d.iter().map(|b| std::format!("{b:02x}")).collect()
    }

    #[test]
    fn nist_vectors() {
        let million_a = vec![b'a'; 1_000_000];
        let vectors: [(&[u8], &str); 4] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                &million_a,
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            ),
        ];
        for backend in backends() {
            for (msg, want) in vectors {
                assert_eq!(hex(&hash(backend, msg, &[])), want, "{backend:?}");
            }
        }
    }

    #[test]
    fn boundary_lengths_match_sha2() {
        let mut rng = Rng(0x5ee0_5a25_6000_0001);
        let data = rng.bytes(1024);
        for backend in backends() {
            for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000] {
                let msg = &data[..len];
                assert_eq!(
                    hash(backend, msg, &[]),
                    reference(msg),
                    "{backend:?}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn multi_mib_matches_sha2() {
        let mut rng = Rng(0x5ee0_5a25_6000_0002);
        let data = rng.bytes((3 << 20) + 13);
        let want = reference(&data);
        for backend in backends() {
            assert_eq!(hash(backend, &data, &[]), want, "{backend:?}");
            // Unaligned block starts: the SHA-NI function loads with movdqu.
            assert_eq!(hash(backend, &data, &[1]), want, "{backend:?}, split at 1");
        }
    }

    #[test]
    fn random_split_points_match_sha2() {
        let mut rng = Rng(0x5ee0_5a25_6000_0003);
        for _ in 0..200 {
            let len = rng.below(4096);
            let data = rng.bytes(len);
            let want = reference(&data);
            let mut splits: Vec<usize> = (0..rng.below(8)).map(|_| rng.below(len + 1)).collect();
            splits.sort_unstable();
            for backend in backends() {
                assert_eq!(
                    hash(backend, &data, &splits),
                    want,
                    "{backend:?}, {len} bytes split at {splits:?}"
                );
            }
        }
    }

    /// The SHA-NI function against `sha2::block_api::compress256` from random states, not only the
    /// initial one, so a mix-up of state words cannot hide.
    #[test]
    fn sha_ni_compress_matches_sha2_from_any_state() {
        if !host_has_sha_ni() {
            return;
        }
        let mut rng = Rng(0x5ee0_5a25_6000_0004);
        for count in [0usize, 1, 2, 3, 17] {
            let mut state = [0u32; 8];
            state.iter_mut().for_each(|w| *w = rng.next() as u32);
            let blocks: Vec<[u8; 64]> = (0..count)
                .map(|_| rng.bytes(64).try_into().expect("64 bytes"))
                .collect();
            let mut want = state;
            sha2::block_api::compress256(&mut want, &blocks);
            // SAFETY: the host CPU has SHA-NI (checked above); Linux enables SSE state.
            unsafe { compress(Backend::ShaNi, &mut state, &blocks) };
            assert_eq!(state, want, "{count} blocks");
        }
    }

    #[test]
    fn clone_forks_the_stream() {
        let mut a = Sha256::new();
        a.update(b"hello ");
        let mut b = a.clone();
        a.update(b"world");
        b.update(b"there");
        assert_eq!(a.finalize(), reference(b"hello world"));
        assert_eq!(b.finalize(), reference(b"hello there"));
    }

    #[test]
    fn enable_hardware_picks_sha_ni_exactly_when_present() {
        // SAFETY: Linux enables SSE state and saves the xmm registers on every switch, and
        // compiled host code treats them as caller-saved.
        let picked = unsafe { enable_hardware() };
        assert_eq!(picked, backend());
        let want = if host_has_sha_ni() {
            Backend::ShaNi
        } else {
            Backend::Software
        };
        assert_eq!(picked, want);
        // The public path, whatever it picked.
        assert_eq!(sha256(b"abc"), reference(b"abc"));
    }
}
