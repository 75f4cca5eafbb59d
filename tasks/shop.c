/*
 * shop.c: the shop catalogue's work as a Wasm task, the same work as see_workload::process.
 *
 * For each input resource (see_input(0), see_input(1), ... until SEE_NO_INPUT): claim it,
 * read it whole into memory, then check its header and the CRC-32 over header and body,
 * inflate its raw-deflate stream, check each record's CRC-32, parse the record text (fields
 * separated by ',' or ' ', numbers summed, other fields hashed) and fold everything into the
 * resource's 64-bit digest. The digests are folded in input order exactly like
 * see_workload::TaskResult, and the fold is the task's result.
 *
 * A resource without the "SEEW" magic is not worked on: like see_workload::resource_word, it
 * contributes the first 8 bytes of its SHA-384, read as a little-endian word (hashed as it is
 * read, in pieces, so its size is bounded only by the fuel). Any corruption of a see-workload
 * resource fails the task with a non-zero code; every loop is bounded by the input or the
 * output size.
 */
#include "see_task.h"

#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

/* What run returns. */
enum {
    RUN_OK = 0,
    RUN_CLAIM = 2,        /* a claim was refused */
    RUN_READ = 3,         /* a read failed or came up short */
    RUN_MEMORY = 4,       /* the resource or its records do not fit in memory */
    RUN_HEADER = 10,      /* header out of range */
    RUN_CHECKSUM = 11,    /* CRC-32 over header and body */
    RUN_INFLATE = 12,     /* corrupt deflate stream, or not raw_len bytes */
    RUN_RECORD = 13,      /* record framing, tag or CRC */
    RUN_TEXT = 14,        /* record text */
};

/* Limits of see_workload. */
#define HEADER_LEN 40u
#define MAX_SIZE (64ull << 20)
#define MAX_RAW_LEN (256u << 20)
#define RECORD_OVERHEAD 12u
#define MAGIC 0x57454553u /* "SEEW" little-endian */
#define FNV_SEED 0xcbf29ce484222325ull
#define FNV_PRIME 0x00000100000001b3ull

/* ---- memory: a bump allocator over linear memory, reset for each resource ---- */

extern u8 __heap_base;
static uintptr_t heap_top, heap_end;

static void heap_reset(void) {
    heap_top = ((uintptr_t)&__heap_base + 15) & ~(uintptr_t)15;
    if (heap_end == 0)
        heap_end = __builtin_wasm_memory_size(0) * 65536u;
}

/* n bytes, 16-aligned, growing the memory as needed; 0 when it cannot. */
static void *heap_alloc(u64 n) {
    u64 start = heap_top;
    u64 end = start + ((n + 15) & ~15ull);
    if (end > 0xffff0000ull)
        return 0;
    if (end > heap_end) {
        u64 pages = (end - heap_end + 65535) / 65536;
        if (__builtin_wasm_memory_grow(0, (size_t)pages) == (size_t)-1)
            return 0;
        heap_end += pages * 65536;
    }
    heap_top = (uintptr_t)end;
    return (void *)(uintptr_t)start;
}

/* Unaligned little-endian loads (Wasm is little-endian): one load instruction each. */
static u32 le16(const u8 *p) {
    u16 v;
    __builtin_memcpy(&v, p, 2);
    return v;
}
static u32 le32(const u8 *p) {
    u32 v;
    __builtin_memcpy(&v, p, 4);
    return v;
}
static u64 le64(const u8 *p) {
    u64 v;
    __builtin_memcpy(&v, p, 8);
    return v;
}

/* ---- CRC-32 (IEEE, reflected), slice-by-4 ---- */

/* crc_table[0] is the byte-at-a-time table; crc_table[k][i] is the CRC of byte i followed by k
 * zero bytes, so four bytes fold with four lookups and no per-byte shift chain. (Slice-by-8
 * was charged the same fuel and ran slower on wasmi.) */
static u32 crc_table[4][256];

static void crc_init(void) {
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
        crc_table[0][i] = c;
    }
    for (u32 i = 0; i < 256; i++)
        for (u32 k = 1; k < 4; k++)
            crc_table[k][i] =
                (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
}

/* Four bytes into crc. */
__attribute__((always_inline)) static inline u32 crc_word(u32 crc, const u8 *p) {
    u32 a = le32(p) ^ crc;
    return crc_table[3][a & 0xff] ^ crc_table[2][(a >> 8) & 0xff] ^
           crc_table[1][(a >> 16) & 0xff] ^ crc_table[0][a >> 24];
}

/* Continues a CRC: start with 0, feed pieces in order. */
static u32 crc_update(u32 crc, const u8 *p, u32 n) {
    crc = ~crc;
    const u8 *end8 = p + (n & ~7u);
    while (p != end8) {
        crc = crc_word(crc_word(crc, p), p + 4);
        p += 8;
    }
    for (u32 i = 0; i < (n & 7u); i++)
        crc = crc_table[0][(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- inflate (RFC 1951, raw deflate) ---- */

/* Bits come least significant first; past the end of the input the reader feeds zero bytes
 * and counts them, and a stream that consumes any of them is truncated. */
typedef struct {
    const u8 *in;
    u32 len, pos;
    u64 buf;
    u32 count;   /* bits in buf */
    u32 padding; /* zero bytes fed past the end */
} bits_t;

/* Tops the buffer up to at least 57 bits, a byte at a time; past the end of the input it feeds
 * zero bytes and counts them. (Block headers and code lengths only; inflate_codes has its own.) */
static void refill(bits_t *b) {
    while (b->count <= 56) {
        u64 c = 0;
        if (b->pos < b->len)
            c = b->in[b->pos++];
        else
            b->padding++;
        b->buf |= c << b->count;
        b->count += 8;
    }
}

/* Takes n (<= 32) bits; the caller has refilled. */
__attribute__((always_inline)) static inline u32 take(bits_t *b, u32 n) {
    u32 v = (u32)(b->buf & ((1ull << n) - 1));
    b->buf >>= n;
    b->count -= n;
    return v;
}

static u32 get(bits_t *b, u32 n) {
    refill(b);
    return take(b, n);
}

/* True when the stream used bits it does not have. */
static int overrun(const bits_t *b) { return (u64)b->padding * 8 > b->count; }

/* A canonical Huffman code: counts per length, symbols ordered by code, and a table of the
 * codes of at most FAST_BITS bits indexed by the next FAST_BITS input bits (entries
 * length << 9 | symbol; 0 for a longer or unused code). */
#define FAST_BITS 10
#define MAX_BITS 15
typedef struct {
    u16 count[MAX_BITS + 1];
    u16 symbol[288];
    u16 fast[1 << FAST_BITS];
} huff_t;

/* Builds the code of n symbols with code lengths len[]; -1 when over-subscribed.
 * Incomplete codes are accepted (a single distance code is one); their unused codes fail
 * when met. */
static int huff_build(huff_t *h, const u8 *len, u32 n) {
    u16 offset[MAX_BITS + 2];
    u32 next[MAX_BITS + 1];
    for (u32 i = 0; i <= MAX_BITS; i++)
        h->count[i] = 0;
    for (u32 s = 0; s < n; s++)
        h->count[len[s]]++;
    h->count[0] = 0;
    int left = 1;
    for (u32 i = 1; i <= MAX_BITS; i++) {
        left = left * 2 - h->count[i];
        if (left < 0)
            return -1;
    }
    offset[1] = 0;
    for (u32 i = 1; i <= MAX_BITS; i++)
        offset[i + 1] = offset[i] + h->count[i];
    /* The first code of each length (count[0] is 0, so length 1 starts at 0). */
    u32 code = 0;
    next[0] = 0;
    for (u32 i = 1; i <= MAX_BITS; i++) {
        code = (code + h->count[i - 1]) << 1;
        next[i] = code;
    }
    for (u32 i = 0; i < (1u << FAST_BITS); i++)
        h->fast[i] = 0;
    for (u32 s = 0; s < n; s++) {
        u32 l = len[s];
        if (l == 0)
            continue;
        h->symbol[offset[l]++] = (u16)s;
        u32 c = next[l]++;
        if (l > FAST_BITS)
            continue;
        u32 rev = 0;
        for (u32 k = 0; k < l; k++)
            rev |= ((c >> k) & 1) << (l - 1 - k);
        for (u32 f = rev; f < (1u << FAST_BITS); f += 1u << l)
            h->fast[f] = (u16)(l << 9 | s);
    }
    return 0;
}

/* huff_decode for a code longer than FAST_BITS (rare; out of line, on a copy of the bits so
 * the caller's reader stays in locals): length << 16 | symbol, or -1. Walks the canonical code
 * one bit at a time: at length l, codes first..first+count-1 are symbols index..index+count-1. */
__attribute__((noinline)) static int huff_decode_slow(u64 buf, const huff_t *h) {
    u32 code = 0, first = 0, index = 0;
    for (u32 l = 1; l <= MAX_BITS; l++) {
        code |= (u32)(buf >> (l - 1)) & 1;
        u32 count = h->count[l];
        if (code - first < count)
            return (int)(l << 16 | h->symbol[index + code - first]);
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return -1;
}

/* The next symbol of code h, or -1 for a code the stream's code does not have. The caller has
 * refilled (at least 15 bits). */
__attribute__((always_inline)) static inline int huff_decode(bits_t *b, const huff_t *h) {
    u32 e = h->fast[b->buf & ((1u << FAST_BITS) - 1)];
    if (e != 0) {
        take(b, e >> 9);
        return (int)(e & 0x1ff);
    }
    int r = huff_decode_slow(b->buf, h);
    if (r < 0)
        return -1;
    take(b, (u32)r >> 16);
    return r & 0xffff;
}

static const u16 LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const u8 LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const u16 DIST_BASE[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                  33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                  1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const u8 DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                  6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
static const u8 CL_ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

typedef struct {
    u8 *out;
    u32 cap, pos;
} out_t;

/* Copies a match of n bytes from back bytes behind to (back >= 1, the bytes are in bounds). The
 * source and destination overlap when back < n: the output then repeats with period back, so
 * it is copied in non-overlapping pieces that double in size. */
__attribute__((always_inline)) static inline void copy_match(u8 *to, u32 back, u32 n) {
    const u8 *from = to - back;
    if (back >= n) {
        __builtin_memcpy(to, from, n);
    } else if (back == 1) {
        __builtin_memset(to, from[0], n);
    } else {
        /* to[0..done) repeats from[]; so does from[0..back + done), which ends at to + done. */
        u32 done = 0;
        while (done < n) {
            u32 piece = back + done;
            if (piece > n - done)
                piece = n - done;
            __builtin_memcpy(to + done, from, piece);
            done += piece;
        }
    }
}

/* One symbol of a Huffman-coded block into out[*pos..cap): 0 for more, 1 at the block's end,
 * -1 when corrupt. The caller has refilled: a literal/length code, its extra bits, a distance
 * code and its extra bits take at most 15 + 5 + 15 + 13 = 48 bits, and a refill leaves 57. */
__attribute__((always_inline)) static inline int inflate_symbol(bits_t *b, u8 *out, u32 cap,
                                                                u32 *pos, const huff_t *lit,
                                                                const huff_t *dist) {
    int s = huff_decode(b, lit);
    if (s < 256) {
        if (s < 0 || *pos >= cap)
            return -1;
        out[(*pos)++] = (u8)s;
        return 0;
    }
    if (s == 256)
        return 1;
    s -= 257;
    if (s >= 29)
        return -1;
    u32 n = LEN_BASE[s] + take(b, LEN_EXTRA[s]);
    int d = huff_decode(b, dist);
    if (d < 0 || d >= 30)
        return -1;
    u32 back = DIST_BASE[d] + take(b, DIST_EXTRA[d]);
    if (back > *pos || n > cap - *pos)
        return -1;
    copy_match(out + *pos, back, n);
    *pos += n;
    return 0;
}

/* The end of a block within the input's last 8 bytes: refilled a byte at a time. Out of line:
 * wasmi charges a Wasm block's instructions on entering it, so code inlined into the hot loop
 * would cost even when skipped. */
__attribute__((noinline)) static int inflate_codes_tail(bits_t *b, out_t *o, const huff_t *lit,
                                                        const huff_t *dist) {
    int r;
    do {
        while (b->count <= 56) {
            u64 c = 0;
            if (b->pos < b->len)
                c = b->in[b->pos++];
            else
                b->padding++;
            b->buf |= c << b->count;
            b->count += 8;
        }
        r = inflate_symbol(b, o->out, o->cap, &o->pos, lit, dist);
    } while (r == 0);
    return r;
}

/* Decodes one Huffman-coded block's symbols into o. The reader and the output position live in
 * locals (the struct is copied in and out) so the loop keeps them out of memory; it refills
 * with one unaligned 8-byte load per symbol (the buffer's bits above `count` are always the
 * stream's next bits, so OR-ing the load over them changes only the bits below) until the
 * input's last 8 bytes, which inflate_codes_tail reads. Every step writes output or ends, so
 * the loop is bounded by the output's size. */
static int inflate_codes(bits_t *bp, out_t *op, const huff_t *lit, const huff_t *dist) {
    bits_t b = *bp;
    u8 *out = op->out;
    u32 cap = op->cap, pos = op->pos;
    int r;
    for (;;) {
        /* Literals with codes of at most FAST_BITS bits, in a loop of their own (wasmi charges
         * a loop's instructions per iteration, so this one stays short). */
        for (;;) {
            if (b.count <= 56) {
                if (b.len - b.pos < 8) {
                    r = 0;
                    goto out;
                }
                b.buf |= le64(b.in + b.pos) << b.count;
                b.pos += (63 - b.count) >> 3;
                b.count |= 56;
            }
            u32 e = lit->fast[b.buf & ((1u << FAST_BITS) - 1)];
            if (e == 0 || (e & 0x1ff) >= 256)
                break;
            if (pos >= cap) {
                r = -1;
                goto out;
            }
            out[pos++] = (u8)e;
            take(&b, e >> 9);
        }
        /* Anything else, refilled. */
        r = inflate_symbol(&b, out, cap, &pos, lit, dist);
        if (r != 0)
            break;
    }
out:
    *bp = b;
    op->pos = pos;
    if (r == 0)
        r = inflate_codes_tail(bp, op, lit, dist);
    /* Bits taken past the end fail the stream (the excess only grows once zero bytes are
     * fed, so checking once per block is enough). */
    return r < 0 || overrun(bp) ? -1 : 0;
}

static huff_t lit_code, dist_code, cl_code;

static int inflate_fixed(bits_t *b, out_t *o) {
    u8 len[288];
    u32 s = 0;
    for (; s < 144; s++)
        len[s] = 8;
    for (; s < 256; s++)
        len[s] = 9;
    for (; s < 280; s++)
        len[s] = 7;
    for (; s < 288; s++)
        len[s] = 8;
    huff_build(&lit_code, len, 288);
    for (s = 0; s < 30; s++)
        len[s] = 5;
    huff_build(&dist_code, len, 30);
    return inflate_codes(b, o, &lit_code, &dist_code);
}

static int inflate_dynamic(bits_t *b, out_t *o) {
    u32 nlit = get(b, 5) + 257, ndist = get(b, 5) + 1, ncl = get(b, 4) + 4;
    if (nlit > 286 || ndist > 30)
        return -1;
    u8 len[286 + 30];
    u8 cl[19] = {0};
    for (u32 i = 0; i < ncl; i++)
        cl[CL_ORDER[i]] = (u8)get(b, 3);
    if (huff_build(&cl_code, cl, 19) < 0)
        return -1;
    u32 i = 0;
    while (i < nlit + ndist) {
        refill(b);
        int s = huff_decode(b, &cl_code);
        if (s < 0 || overrun(b))
            return -1;
        if (s < 16) {
            len[i++] = (u8)s;
            continue;
        }
        u8 fill = 0;
        u32 repeat;
        if (s == 16) {
            if (i == 0)
                return -1;
            fill = len[i - 1];
            repeat = 3 + get(b, 2);
        } else if (s == 17) {
            repeat = 3 + get(b, 3);
        } else {
            repeat = 11 + get(b, 7);
        }
        if (repeat > nlit + ndist - i)
            return -1;
        while (repeat--)
            len[i++] = fill;
    }
    if (len[256] == 0)
        return -1; /* no end-of-block code */
    if (huff_build(&lit_code, len, nlit) < 0 || huff_build(&dist_code, len + nlit, ndist) < 0)
        return -1;
    return inflate_codes(b, o, &lit_code, &dist_code);
}

static int inflate_stored(bits_t *b, out_t *o) {
    take(b, b->count % 8);
    u32 n = get(b, 16), check = get(b, 16);
    if ((n ^ 0xffff) != check || n > o->cap - o->pos)
        return -1;
    for (u32 i = 0; i < n; i++)
        o->out[o->pos++] = (u8)get(b, 8);
    return overrun(b) ? -1 : 0;
}

/* Inflates the raw-deflate stream in[0..len) into out[0..cap): the length, or -1. Bytes after
 * the final block are ignored. */
static int64_t inflate(const u8 *in, u32 len, u8 *out, u32 cap) {
    bits_t b = {in, len, 0, 0, 0, 0};
    out_t o = {out, cap, 0};
    u32 last;
    do {
        last = get(&b, 1);
        u32 type = get(&b, 2);
        int r = type == 0   ? inflate_stored(&b, &o)
                : type == 1 ? inflate_fixed(&b, &o)
                : type == 2 ? inflate_dynamic(&b, &o)
                            : -1;
        if (r < 0 || overrun(&b))
            return -1;
    } while (!last);
    return o.pos;
}

/* ---- SHA-384 (FIPS 180-4: SHA-512's compression, its own initial value) ---- */

static const u64 SHA512_K[80] = {
    0x428a2f98d728ae22ull, 0x7137449123ef65cdull, 0xb5c0fbcfec4d3b2full, 0xe9b5dba58189dbbcull,
    0x3956c25bf348b538ull, 0x59f111f1b605d019ull, 0x923f82a4af194f9bull, 0xab1c5ed5da6d8118ull,
    0xd807aa98a3030242ull, 0x12835b0145706fbeull, 0x243185be4ee4b28cull, 0x550c7dc3d5ffb4e2ull,
    0x72be5d74f27b896full, 0x80deb1fe3b1696b1ull, 0x9bdc06a725c71235ull, 0xc19bf174cf692694ull,
    0xe49b69c19ef14ad2ull, 0xefbe4786384f25e3ull, 0x0fc19dc68b8cd5b5ull, 0x240ca1cc77ac9c65ull,
    0x2de92c6f592b0275ull, 0x4a7484aa6ea6e483ull, 0x5cb0a9dcbd41fbd4ull, 0x76f988da831153b5ull,
    0x983e5152ee66dfabull, 0xa831c66d2db43210ull, 0xb00327c898fb213full, 0xbf597fc7beef0ee4ull,
    0xc6e00bf33da88fc2ull, 0xd5a79147930aa725ull, 0x06ca6351e003826full, 0x142929670a0e6e70ull,
    0x27b70a8546d22ffcull, 0x2e1b21385c26c926ull, 0x4d2c6dfc5ac42aedull, 0x53380d139d95b3dfull,
    0x650a73548baf63deull, 0x766a0abb3c77b2a8ull, 0x81c2c92e47edaee6ull, 0x92722c851482353bull,
    0xa2bfe8a14cf10364ull, 0xa81a664bbc423001ull, 0xc24b8b70d0f89791ull, 0xc76c51a30654be30ull,
    0xd192e819d6ef5218ull, 0xd69906245565a910ull, 0xf40e35855771202aull, 0x106aa07032bbd1b8ull,
    0x19a4c116b8d2d0c8ull, 0x1e376c085141ab53ull, 0x2748774cdf8eeb99ull, 0x34b0bcb5e19b48a8ull,
    0x391c0cb3c5c95a63ull, 0x4ed8aa4ae3418acbull, 0x5b9cca4f7763e373ull, 0x682e6ff3d6b2b8a3ull,
    0x748f82ee5defb2fcull, 0x78a5636f43172f60ull, 0x84c87814a1f0ab72ull, 0x8cc702081a6439ecull,
    0x90befffa23631e28ull, 0xa4506cebde82bde9ull, 0xbef9a3f7b2c67915ull, 0xc67178f2e372532bull,
    0xca273eceea26619cull, 0xd186b8c721c0c207ull, 0xeada7dd6cde0eb1eull, 0xf57d4f7fee6ed178ull,
    0x06f067aa72176fbaull, 0x0a637dc5a2c898a6ull, 0x113f9804bef90daeull, 0x1b710b35131c471bull,
    0x28db77f523047d84ull, 0x32caab7b40c72493ull, 0x3c9ebe0a15c9bebcull, 0x431d67c49c100d4cull,
    0x4cc5d4becb3e42b6ull, 0x597f299cfc657e2aull, 0x5fcb6fab3ad6faecull, 0x6c44198c4a475817ull,
};

static const u64 SHA384_IV[8] = {
    0xcbbb9d5dc1059ed8ull, 0x629a292a367cd507ull, 0x9159015a3070dd17ull, 0x152fecd8f70e5939ull,
    0x67332667ffc00b31ull, 0x8eb44a8768581511ull, 0xdb0c2e0d64f98fa7ull, 0x47b5481dbefa4fa4ull,
};

typedef struct {
    u64 h[8];
    u8 block[128];
    u32 fill;  /* bytes in block */
    u64 total; /* bytes hashed */
} sha384_t;

static u64 rotr(u64 x, u32 n) { return x >> n | x << (64 - n); }

/* One 128-byte block into the state. */
static void sha512_block(u64 *state, const u8 *p) {
    u64 w[80];
    for (u32 i = 0; i < 16; i++)
        w[i] = __builtin_bswap64(le64(p + 8 * i));
    for (u32 i = 16; i < 80; i++) {
        u64 s0 = rotr(w[i - 15], 1) ^ rotr(w[i - 15], 8) ^ (w[i - 15] >> 7);
        u64 s1 = rotr(w[i - 2], 19) ^ rotr(w[i - 2], 61) ^ (w[i - 2] >> 6);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    u64 a = state[0], b = state[1], c = state[2], d = state[3];
    u64 e = state[4], f = state[5], g = state[6], h = state[7];
    for (u32 i = 0; i < 80; i++) {
        u64 t1 = h + (rotr(e, 14) ^ rotr(e, 18) ^ rotr(e, 41)) + ((e & f) ^ (~e & g)) +
                 SHA512_K[i] + w[i];
        u64 t2 = (rotr(a, 28) ^ rotr(a, 34) ^ rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

static void sha384_init(sha384_t *s) {
    for (u32 i = 0; i < 8; i++)
        s->h[i] = SHA384_IV[i];
    s->fill = 0;
    s->total = 0;
}

static void sha384_update(sha384_t *s, const u8 *p, u64 n) {
    s->total += n;
    while (n > 0) {
        if (s->fill == 0 && n >= 128) {
            sha512_block(s->h, p);
            p += 128;
            n -= 128;
            continue;
        }
        u32 take_n = 128 - s->fill;
        if (take_n > n)
            take_n = (u32)n;
        __builtin_memcpy(s->block + s->fill, p, take_n);
        s->fill += take_n;
        p += take_n;
        n -= take_n;
        if (s->fill == 128) {
            sha512_block(s->h, s->block);
            s->fill = 0;
        }
    }
}

/* Pads and finishes; the digest's first 8 bytes as a little-endian word (resource_word's). */
static u64 sha384_word(sha384_t *s) {
    u64 bits = s->total << 3;
    s->block[s->fill++] = 0x80;
    if (s->fill > 112) {
        __builtin_memset(s->block + s->fill, 0, 128 - s->fill);
        sha512_block(s->h, s->block);
        s->fill = 0;
    }
    __builtin_memset(s->block + s->fill, 0, 112 - s->fill);
    u64 high = __builtin_bswap64(s->total >> 61), low = __builtin_bswap64(bits);
    __builtin_memcpy(s->block + 112, &high, 8);
    __builtin_memcpy(s->block + 120, &low, 8);
    sha512_block(s->h, s->block);
    /* Byte 0 of the digest is h[0]'s most significant byte. */
    return __builtin_bswap64(s->h[0]);
}

/* ---- the work on one resource ---- */

static u64 fold(u64 h, u64 v) { return (h ^ v) * FNV_PRIME; }
static u64 rotl5(u64 x) { return x << 5 | x >> 59; }

/* What a text byte is: part of a field, a field's end, or not allowed. */
enum { CH_FIELD = 0, CH_END = 1, CH_BAD = 2 };
static u8 char_class[256];

static void char_class_init(void) {
    for (u32 c = 0; c < 256; c++)
        char_class[c] = c >= 0x21 && c <= 0x7e ? CH_FIELD : CH_BAD;
    char_class[','] = CH_END;
    char_class[' '] = CH_END;
    char_class['\n'] = CH_END;
}

/* One record's text: lines of fields separated by ',' or ' '; all digits (at most 19) is a
 * number, summed; any other printable field is hashed. Folds each field into *digest.
 * The text ends with '\n', a field's end, so the scans below stop inside it without checking
 * the length. A field is first read as a number; only one that turns out not to be all
 * digits is hashed, from its start. */
static int parse_text(const u8 *text, u32 n, u64 *digest, u64 *sum) {
    if (n == 0 || text[n - 1] != '\n')
        return -1;
    u64 h = *digest, total = *sum;
    const u8 *p = text, *end = text + n;
    while (p != end) {
        const u8 *start = p;
        u64 num = 0;
        u32 d;
        while ((d = (u32)*p - '0') <= 9) {
            num = num * 10 + d;
            p++;
        }
        u64 value;
        if (char_class[*p] == CH_END) {
            u32 len = (u32)(p - start);
            if (len == 0 || len > 19)
                return -1;
            total += num;
            value = num;
        } else {
            u64 word = 0;
            u32 c;
            for (p = start; char_class[c = *p] == CH_FIELD; p++)
                word = rotl5(word) ^ c;
            if (char_class[c] != CH_END)
                return -1;
            value = word;
        }
        h = fold(h, value);
        p++; /* the field's end */
    }
    *digest = h;
    *sum = total;
    return 0;
}

/* see_workload::process's digest of the see-workload resource bytes[0..n) (its magic
 * checked by the caller), or a RUN_* code. */
static int process(const u8 *bytes, u64 n, u64 *digest) {
    if (n < HEADER_LEN || le16(bytes + 4) != 1)
        return RUN_HEADER;
    u32 kind = le16(bytes + 6);
    u32 records = le32(bytes + 24), raw_len = le32(bytes + 28);
    u32 deflate_len = le32(bytes + 32), stored = le32(bytes + 36);
    if ((kind != 1 && kind != 2) || raw_len > MAX_RAW_LEN ||
        (u64)records * RECORD_OVERHEAD > raw_len || n > MAX_SIZE)
        return RUN_HEADER;
    const u8 *body = bytes + HEADER_LEN;
    u32 body_len = (u32)(n - HEADER_LEN);
    if (crc_update(crc_update(0, bytes, HEADER_LEN - 4), body, body_len) != stored)
        return RUN_CHECKSUM;
    if (deflate_len > body_len)
        return RUN_HEADER;
    u8 *raw = heap_alloc(raw_len);
    if (raw == 0)
        return RUN_MEMORY;
    if (inflate(body, deflate_len, raw, raw_len) != (int64_t)raw_len)
        return RUN_INFLATE;
    u64 h = FNV_SEED, sum = 0;
    u32 at = 0;
    for (u32 r = 0; r < records; r++) {
        u32 rest = raw_len - at;
        const u8 *rec = raw + at;
        if (rest < RECORD_OVERHEAD || le16(rec) != kind || le16(rec + 2) != 0)
            return RUN_RECORD;
        u32 len = le32(rec + 4);
        if (len > rest - RECORD_OVERHEAD)
            return RUN_RECORD;
        u32 crc = crc_update(0, rec + 8, len);
        if (crc != le32(rec + 8 + len))
            return RUN_RECORD;
        h = fold(h, crc);
        if (parse_text(rec + 8, len, &h, &sum) < 0)
            return RUN_TEXT;
        at += RECORD_OVERHEAD + len;
    }
    if (at != raw_len)
        return RUN_INFLATE;
    *digest = h;
    return RUN_OK;
}

/* Reads resource id's bytes [off, off + n) into dst; RUN_READ when they are not all there. */
static int read_exact(int64_t id, u64 off, u8 *dst, u64 n) {
    u64 done = 0;
    while (done < n) {
        u64 want = n - done;
        if (want > (1u << 20))
            want = 1u << 20;
        int32_t got = see_read(id, (int64_t)(off + done), dst + done, (int32_t)want);
        if (got <= 0)
            return RUN_READ;
        done += (u64)got;
    }
    return RUN_OK;
}

/* How much of a non-workload resource is read (and hashed) at once. */
#define HASH_PIECE (64u << 10)

/* The SHA-384 word of resource id's len bytes, read a piece at a time. */
static int hash_resource(int64_t id, u64 len, u64 *word) {
    u8 *piece = heap_alloc(HASH_PIECE);
    if (piece == 0)
        return RUN_MEMORY;
    static sha384_t sha;
    sha384_init(&sha);
    for (u64 off = 0; off < len;) {
        u64 n = len - off < HASH_PIECE ? len - off : HASH_PIECE;
        int r = read_exact(id, off, piece, n);
        if (r != RUN_OK)
            return r;
        sha384_update(&sha, piece, n);
        off += n;
    }
    *word = sha384_word(&sha);
    return RUN_OK;
}

/* The word resource id adds to the result (see_workload::resource_word): a see-workload
 * resource, read whole into fresh memory, gives its digest; anything else its SHA-384 word. */
static int resource_word(int64_t id, u64 *word) {
    int64_t len = see_claim(id);
    if (len < 0)
        return RUN_CLAIM;
    u8 magic[4];
    int r = len < 4 ? RUN_OK : read_exact(id, 0, magic, 4);
    if (r != RUN_OK)
        return r;
    if (len < 4 || le32(magic) != MAGIC)
        return hash_resource(id, (u64)len, word);
    if ((u64)len > MAX_SIZE)
        return RUN_HEADER;
    u8 *buf = heap_alloc((u64)len);
    if (buf == 0)
        return RUN_MEMORY;
    r = read_exact(id, 0, buf, (u64)len);
    if (r != RUN_OK)
        return r;
    return process(buf, (u64)len, word);
}

SEE_RUN {
    crc_init();
    char_class_init();
    u64 result = FNV_SEED;
    for (int32_t i = 0;; i++) {
        int64_t id = see_input(i);
        if (id < 0)
            break;
        heap_reset();
        u64 word;
        int r = resource_word(id, &word);
        if (r != RUN_OK)
            return r;
        result = fold(result, word);
    }
    see_result((int64_t)result);
    return RUN_OK;
}
