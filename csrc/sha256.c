/* Streaming SHA-256 (FIPS 180-4) with run-time backend dispatch.
 *
 * Why an own implementation instead of linking libcrypto:
 *   - no build-time dependency on OpenSSL headers/libraries (the wheel builds
 *     with a bare C compiler);
 *   - the C layer scanner hashes tar payloads as it parses them and calls
 *     ls_sha256_update directly, with a plain embeddable context: no EVP_MD_CTX
 *     allocation, no per-call EVP dispatch, no ABI coupling to an OpenSSL
 *     version.
 * The hardware paths use the same instructions OpenSSL uses (SHA-NI on x86,
 * the ARMv8 SHA2 extension on aarch64), so throughput is on par with it.
 *
 * Backends (chosen once, at first use, best first):
 *   "x86-sha-ni"  x86/x86-64 with SHA extensions: CPUID leaf 7 EBX bit 29, plus
 *                 SSSE3 (leaf 1 ECX bit 9, pshufb) and SSE4.1 (leaf 1 ECX bit
 *                 19, pblendw). Compiled through a target("sha,ssse3,sse4.1")
 *                 function attribute so the file builds with default flags.
 *   "armv8-sha2"  aarch64 with the SHA2 extension: Linux getauxval(AT_HWCAP)
 *                 & HWCAP_SHA2 (always present on Apple arm64). Compiled through
 *                 a target attribute unless the baseline already has it.
 *   "portable"    plain C, any CPU.
 * Every backend keeps the chaining state in FIPS 180-4 order (H0..H7) between
 * calls and processes any number of whole 64-byte blocks per call, so the
 * per-call cost of packing/unpacking state is paid once per update, and a
 * context can switch backend mid-message (ls_sha256_force_backend).
 *
 * Thread safety: the active backend is one _Atomic pointer to a constant
 * descriptor. The first caller resolves the automatic choice and installs it
 * with a compare-and-swap, so concurrent first calls agree and never undo an
 * explicit ls_sha256_force_backend. Reads are acquire loads (a plain load on
 * x86 and a ldar on aarch64).
 *
 * Portability notes: input is read only through memcpy/byte loads or
 * unaligned vector loads (no casts of byte pointers to wider types); rotate
 * counts are compile-time constants in 1..31.
 */
#include "sha256.h"

#include <stdatomic.h>
#include <string.h>

#include "common.h"

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define LS_SHA256_HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#if defined(__aarch64__) && defined(__GNUC__) && (defined(__linux__) || defined(__APPLE__))
#define LS_SHA256_HAVE_ARM 1
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_SHA2
#define HWCAP_SHA2 (1UL << 6)
#endif
#endif
#if defined(__ARM_FEATURE_SHA2) || defined(__ARM_FEATURE_CRYPTO)
#define LS_ARM_SHA2_TARGET
#elif defined(__clang__)
#define LS_ARM_SHA2_TARGET __attribute__((target("crypto")))
#else
#define LS_ARM_SHA2_TARGET __attribute__((target("+crypto")))
#endif
#endif

/* FIPS 180-4 section 4.2.2: first 32 bits of the fractional parts of the
 * cube roots of the first 64 primes. 16-byte aligned for vector loads. */
static const uint32_t K256[64] __attribute__((aligned(16))) = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* FIPS 180-4 section 5.3.3: initial hash value. */
static const uint32_t H256[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

typedef void (*ls_sha256_compress_fn)(uint32_t state[8], const uint8_t *data, size_t nblocks);

/* ------------------------------------------------------------------------ */
/* Portable C (FIPS 180-4 section 6.2.2)                                     */

#define ROTR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define BSIG0(x) (ROTR32(x, 2) ^ ROTR32(x, 13) ^ ROTR32(x, 22))
#define BSIG1(x) (ROTR32(x, 6) ^ ROTR32(x, 11) ^ ROTR32(x, 25))
#define SSIG0(x) (ROTR32(x, 7) ^ ROTR32(x, 18) ^ ((x) >> 3))
#define SSIG1(x) (ROTR32(x, 17) ^ ROTR32(x, 19) ^ ((x) >> 10))
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))

#define PROUND(a, b, c, d, e, f, g, h, i)                                \
    do {                                                                 \
        uint32_t t1_ = h + BSIG1(e) + CH(e, f, g) + K256[i] + W[i];      \
        uint32_t t2_ = BSIG0(a) + MAJ(a, b, c);                          \
        d += t1_;                                                        \
        h = t1_ + t2_;                                                   \
    } while (0)

static void compress_portable(uint32_t state[8], const uint8_t *data, size_t nblocks)
{
    uint32_t W[64];

    while (nblocks--) {
        for (int t = 0; t < 16; t++)
            W[t] = ls_load_be32(data + 4 * t);
        for (int t = 16; t < 64; t++)
            W[t] = SSIG1(W[t - 2]) + W[t - 7] + SSIG0(W[t - 15]) + W[t - 16];

        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i += 8) {
            PROUND(a, b, c, d, e, f, g, h, i + 0);
            PROUND(h, a, b, c, d, e, f, g, i + 1);
            PROUND(g, h, a, b, c, d, e, f, i + 2);
            PROUND(f, g, h, a, b, c, d, e, i + 3);
            PROUND(e, f, g, h, a, b, c, d, i + 4);
            PROUND(d, e, f, g, h, a, b, c, i + 5);
            PROUND(c, d, e, f, g, h, a, b, i + 6);
            PROUND(b, c, d, e, f, g, h, a, i + 7);
        }
        state[0] += a; state[1] += b; state[2] += c; state[3] += d;
        state[4] += e; state[5] += f; state[6] += g; state[7] += h;
        data += 64;
    }
}

/* ------------------------------------------------------------------------ */
/* x86 SHA extensions                                                        */

#ifdef LS_SHA256_HAVE_X86
#define LS_X86_TARGET __attribute__((target("sha,ssse3,sse4.1")))

/* Four rounds g (0..15) on message vector Wc = W[4g..4g+3].
 *   Wp  holds W[4g-4..], Wn holds the slot that becomes W[4g+4..] (it already
 *   went through sha256msg1 three groups earlier);
 *   MSG2: finish Wn with sha256msg2 (groups 3..14);
 *   MSG1: start W[4g+12..] in Wp's slot with sha256msg1 (groups 1..12). */
#define NI_ROUNDS(g, Wc, Wp, Wn, MSG2, MSG1)                                         \
    do {                                                                             \
        __m128i m_ = _mm_add_epi32(Wc, _mm_load_si128((const __m128i *)&K256[4 * (g)])); \
        s1 = _mm_sha256rnds2_epu32(s1, s0, m_);                                      \
        if (MSG2) {                                                                  \
            __m128i t_ = _mm_alignr_epi8(Wc, Wp, 4);                                 \
            Wn = _mm_sha256msg2_epu32(_mm_add_epi32(Wn, t_), Wc);                    \
        }                                                                            \
        m_ = _mm_shuffle_epi32(m_, 0x0E);                                            \
        s0 = _mm_sha256rnds2_epu32(s0, s1, m_);                                      \
        if (MSG1)                                                                    \
            Wp = _mm_sha256msg1_epu32(Wp, Wc);                                       \
    } while (0)

LS_X86_TARGET
static void compress_shani(uint32_t state[8], const uint8_t *data, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i s0, s1, tmp, w0, w1, w2, w3;

    /* H0..H7 -> (ABEF, CDGH) lane order expected by sha256rnds2. */
    tmp = _mm_loadu_si128((const __m128i *)(const void *)&state[0]); /* DCBA */
    s1 = _mm_loadu_si128((const __m128i *)(const void *)&state[4]);  /* HGFE */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                              /* CDAB */
    s1 = _mm_shuffle_epi32(s1, 0x1B);                                /* EFGH */
    s0 = _mm_alignr_epi8(tmp, s1, 8);                                /* ABEF */
    s1 = _mm_blend_epi16(s1, tmp, 0xF0);                             /* CDGH */

    while (nblocks--) {
        const __m128i abef = s0, cdgh = s1;

        w0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(data + 0)), bswap);
        w1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(data + 16)), bswap);
        w2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(data + 32)), bswap);
        w3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(data + 48)), bswap);

        NI_ROUNDS(0, w0, w3, w1, 0, 0);
        NI_ROUNDS(1, w1, w0, w2, 0, 1);
        NI_ROUNDS(2, w2, w1, w3, 0, 1);
        NI_ROUNDS(3, w3, w2, w0, 1, 1);
        NI_ROUNDS(4, w0, w3, w1, 1, 1);
        NI_ROUNDS(5, w1, w0, w2, 1, 1);
        NI_ROUNDS(6, w2, w1, w3, 1, 1);
        NI_ROUNDS(7, w3, w2, w0, 1, 1);
        NI_ROUNDS(8, w0, w3, w1, 1, 1);
        NI_ROUNDS(9, w1, w0, w2, 1, 1);
        NI_ROUNDS(10, w2, w1, w3, 1, 1);
        NI_ROUNDS(11, w3, w2, w0, 1, 1);
        NI_ROUNDS(12, w0, w3, w1, 1, 1);
        NI_ROUNDS(13, w1, w0, w2, 1, 0);
        NI_ROUNDS(14, w2, w1, w3, 1, 0);
        NI_ROUNDS(15, w3, w2, w0, 0, 0);

        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        data += 64;
    }

    /* (ABEF, CDGH) -> H0..H7. */
    tmp = _mm_shuffle_epi32(s0, 0x1B);    /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xB1);     /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xF0);  /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);     /* HGFE */
    _mm_storeu_si128((__m128i *)(void *)&state[0], s0);
    _mm_storeu_si128((__m128i *)(void *)&state[4], s1);
}

static int have_shani(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    if (!(c & (1u << 9)) || !(c & (1u << 19))) /* SSSE3, SSE4.1 */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    return (b & (1u << 29)) != 0; /* SHA */
}
#endif /* LS_SHA256_HAVE_X86 */

/* ------------------------------------------------------------------------ */
/* ARMv8 SHA2 extension                                                      */

#ifdef LS_SHA256_HAVE_ARM
/* Four rounds g (0..15) on Wc = W[4g..4g+3]; for g <= 11 Wc is then replaced
 * by W[4g+16..4g+19] computed from Wc, W1 = W[4g+4..], W2, W3. */
#define ARM_ROUNDS(g, Wc, W1, W2, W3, SCHED)                          \
    do {                                                              \
        uint32x4_t k_ = vaddq_u32(Wc, vld1q_u32(&K256[4 * (g)]));     \
        uint32x4_t a_ = s0;                                           \
        if (SCHED)                                                    \
            Wc = vsha256su0q_u32(Wc, W1);                             \
        s0 = vsha256hq_u32(s0, s1, k_);                               \
        s1 = vsha256h2q_u32(s1, a_, k_);                              \
        if (SCHED)                                                    \
            Wc = vsha256su1q_u32(Wc, W2, W3);                         \
    } while (0)

LS_ARM_SHA2_TARGET
static void compress_armv8(uint32_t state[8], const uint8_t *data, size_t nblocks)
{
    uint32x4_t s0 = vld1q_u32(&state[0]); /* ABCD */
    uint32x4_t s1 = vld1q_u32(&state[4]); /* EFGH */
    uint32x4_t w0, w1, w2, w3;

    while (nblocks--) {
        const uint32x4_t abcd = s0, efgh = s1;

        w0 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 0)));
        w1 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 16)));
        w2 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 32)));
        w3 = vreinterpretq_u32_u8(vrev32q_u8(vld1q_u8(data + 48)));

        ARM_ROUNDS(0, w0, w1, w2, w3, 1);
        ARM_ROUNDS(1, w1, w2, w3, w0, 1);
        ARM_ROUNDS(2, w2, w3, w0, w1, 1);
        ARM_ROUNDS(3, w3, w0, w1, w2, 1);
        ARM_ROUNDS(4, w0, w1, w2, w3, 1);
        ARM_ROUNDS(5, w1, w2, w3, w0, 1);
        ARM_ROUNDS(6, w2, w3, w0, w1, 1);
        ARM_ROUNDS(7, w3, w0, w1, w2, 1);
        ARM_ROUNDS(8, w0, w1, w2, w3, 1);
        ARM_ROUNDS(9, w1, w2, w3, w0, 1);
        ARM_ROUNDS(10, w2, w3, w0, w1, 1);
        ARM_ROUNDS(11, w3, w0, w1, w2, 1);
        ARM_ROUNDS(12, w0, w1, w2, w3, 0);
        ARM_ROUNDS(13, w1, w2, w3, w0, 0);
        ARM_ROUNDS(14, w2, w3, w0, w1, 0);
        ARM_ROUNDS(15, w3, w0, w1, w2, 0);

        s0 = vaddq_u32(s0, abcd);
        s1 = vaddq_u32(s1, efgh);
        data += 64;
    }
    vst1q_u32(&state[0], s0);
    vst1q_u32(&state[4], s1);
}

static int have_armv8_sha2(void)
{
#if defined(__APPLE__)
    return 1;
#else
    return (getauxval(AT_HWCAP) & HWCAP_SHA2) != 0;
#endif
}
#endif /* LS_SHA256_HAVE_ARM */

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                  */

typedef struct ls_sha256_backend_desc {
    const char *name;
    ls_sha256_compress_fn compress;
    int (*available)(void); /* NULL: always */
} ls_sha256_backend_desc;

static const ls_sha256_backend_desc backends[] = {
#ifdef LS_SHA256_HAVE_X86
    {"x86-sha-ni", compress_shani, have_shani},
#endif
#ifdef LS_SHA256_HAVE_ARM
    {"armv8-sha2", compress_armv8, have_armv8_sha2},
#endif
    {"portable", compress_portable, NULL},
};
#define N_BACKENDS (sizeof(backends) / sizeof(backends[0]))

static _Atomic(const ls_sha256_backend_desc *) active_backend;

static int backend_usable(const ls_sha256_backend_desc *b)
{
    return b->available == NULL || b->available();
}

static const ls_sha256_backend_desc *detect_backend(void)
{
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (backend_usable(&backends[i]))
            return &backends[i];
    return &backends[N_BACKENDS - 1];
}

static const ls_sha256_backend_desc *get_backend(void)
{
    const ls_sha256_backend_desc *b = atomic_load_explicit(&active_backend, memory_order_acquire);
    if (LS_UNLIKELY(b == NULL)) {
        const ls_sha256_backend_desc *expected = NULL;
        b = detect_backend();
        /* Keep whatever another thread installed first (same automatic
         * choice, or an explicit one). */
        if (!atomic_compare_exchange_strong_explicit(&active_backend, &expected, b,
                                                     memory_order_acq_rel, memory_order_acquire))
            b = expected;
    }
    return b;
}

const char *ls_sha256_backend(void) { return get_backend()->name; }

int ls_sha256_force_backend(const char *name)
{
    if (name == NULL) {
        atomic_store_explicit(&active_backend, detect_backend(), memory_order_release);
        return 0;
    }
    for (size_t i = 0; i < N_BACKENDS; i++) {
        if (strcmp(backends[i].name, name) == 0) {
            if (!backend_usable(&backends[i]))
                return -1;
            atomic_store_explicit(&active_backend, &backends[i], memory_order_release);
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Streaming interface (FIPS 180-4 sections 5.1.1 padding, 6.2 hashing)      */

void ls_sha256_init(ls_sha256_ctx *ctx)
{
    memcpy(ctx->state, H256, sizeof ctx->state);
    ctx->total = 0;
    ctx->buflen = 0;
}

void ls_sha256_update(ls_sha256_ctx *ctx, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    ls_sha256_compress_fn compress;

    if (len == 0)
        return;
    compress = get_backend()->compress;
    ctx->total += (uint64_t)len;

    if (ctx->buflen != 0) {
        size_t take = ls_min_size(64 - (size_t)ctx->buflen, len);
        memcpy(ctx->buf + ctx->buflen, p, take);
        ctx->buflen += (uint32_t)take;
        p += take;
        len -= take;
        if (ctx->buflen < 64)
            return; /* len is 0 here */
        compress(ctx->state, ctx->buf, 1);
        ctx->buflen = 0;
    }
    if (len >= 64) {
        size_t nblocks = len / 64;
        compress(ctx->state, p, nblocks);
        p += nblocks * 64;
        len -= nblocks * 64;
    }
    if (len != 0) {
        memcpy(ctx->buf, p, len);
        ctx->buflen = (uint32_t)len;
    }
}

void ls_sha256_final(ls_sha256_ctx *ctx, uint8_t out[32])
{
    ls_sha256_compress_fn compress = get_backend()->compress;
    uint64_t bits = ctx->total << 3; /* length modulo 2^64 bits */
    size_t n = ctx->buflen;

    /* Append the bit "1", zeros to 56 mod 64 bytes, then the 64-bit
     * big-endian message length in bits (section 5.1.1). */
    ctx->buf[n++] = 0x80;
    if (n > 56) {
        memset(ctx->buf + n, 0, 64 - n);
        compress(ctx->state, ctx->buf, 1);
        n = 0;
    }
    memset(ctx->buf + n, 0, 56 - n);
    ls_store_be64(ctx->buf + 56, bits);
    compress(ctx->state, ctx->buf, 1);

    for (int i = 0; i < 8; i++)
        ls_store_be32(out + 4 * i, ctx->state[i]);
    memset(ctx, 0, sizeof *ctx);
}

void ls_sha256_oneshot(const void *data, size_t len, uint8_t out[32])
{
    ls_sha256_ctx ctx;
    ls_sha256_init(&ctx);
    ls_sha256_update(&ctx, data, len);
    ls_sha256_final(&ctx, out);
}
