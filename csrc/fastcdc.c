/* FastCDC content-defined chunking; see fastcdc.h for the exact definition
 * of the cut points and the reference to the paper.
 *
 * Default parameters (fastcdc.h): min 16 KiB / avg 64 KiB / max 256 KiB, the
 * same as casync. Every chunk costs a fixed amount regardless of its size: an
 * index entry (SHA-256 digest, pack offset, length: about 50-100 bytes), a
 * pack-record header, one SHA-256 finalisation and, on restore, possibly one
 * random read. At 64 KiB the index is ~0.1-0.15% of the stored data (about
 * 16 MB of entries per 10 GiB of unique layer data), small enough to keep in
 * memory. Smaller averages improve dedup only marginally for container
 * layers: most files are either tiny (configs, scripts, sources -- below
 * min_size they form one chunk each, deduplicated whole) or large binaries,
 * shared libraries and archives whose changes between image versions are
 * localised, where 64 KiB granularity already keeps unchanged regions
 * shared. min = avg/4 and max = 4*avg bound the distribution (mean about
 * 1.14 * avg = 74.8 KiB on random data with these masks) while keeping the
 * largest buffer a reader needs small.
 */
#include "fastcdc.h"

#include <string.h>

#include "common.h"

/* Gear table: G[i] is the (i+1)-th output of splitmix64 (Steele, Lea, Flood,
 * "Fast splittable pseudorandom number generators", OOPSLA 2014) started
 * from the seed 0x6c736364632d7631 (the ASCII bytes "lscdc-v1", big-endian):
 *
 *     state += 0x9e3779b97f4a7c15;
 *     z = state;
 *     z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
 *     z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
 *     G[i] = z ^ (z >> 31);
 *
 * The table defines the cut points: changing it re-chunks every input and
 * breaks deduplication against chunks already stored (see fastcdc.h). The
 * SHA-256 of the table as 256 little-endian uint64 is pinned in
 * tests/test_chunking.py. */
#define LS_CDC_GEAR_VALUES(X) \
    X(0x0e8e1e24cf3c6209ULL) X(0x074ae0fd85192a17ULL) X(0xa4e78fdc731fd6f1ULL) X(0xba01cbd708528ce0ULL) \
    X(0xfa8a4c2216652c9cULL) X(0x19a3006544e11016ULL) X(0x5bf44b7f70f81eb5ULL) X(0x5b7fd6c4675ea08cULL) \
    X(0xfd335a9789ef484bULL) X(0x2ec68063440a1401ULL) X(0x5beb596930e79fc1ULL) X(0xecc5d262d4d6aa7fULL) \
    X(0x16ebe1136d2ab1b4ULL) X(0xc77a7c63c22b44c0ULL) X(0xb8504490fa74d3f2ULL) X(0x26caa41a1994181cULL) \
    X(0xd38ea6b49bf16ad3ULL) X(0x27714e8e695a2c97ULL) X(0x3b560874d96dd009ULL) X(0xfb76361dac5924cbULL) \
    X(0x0adc56e5c383848cULL) X(0x927f36dc75a9e2f8ULL) X(0xc1e0f0f82fab3456ULL) X(0x8ff263bbc846112eULL) \
    X(0xcffb4ad45afdd22dULL) X(0x25c21858baa0c3f2ULL) X(0xc79472331d5965daULL) X(0xdb53fb3e3a083e0eULL) \
    X(0x2d059a84154c6a2bULL) X(0x16c1b5d5fc9871d3ULL) X(0x1715e79488a8eb6dULL) X(0x1cbdef5cff8f6193ULL) \
    X(0x2a6b388337fe2c78ULL) X(0x95500a94cb6ca29aULL) X(0x34893d9992e98d36ULL) X(0x7351cbe25e40cc4eULL) \
    X(0xa11d00ca89f276b8ULL) X(0xcee3309630882f19ULL) X(0x5d0a5ea93f450b9cULL) X(0x633ba99f38b7bc85ULL) \
    X(0x2a3a6edf812b1697ULL) X(0xda7132db2bab4fe5ULL) X(0xfacf56a1a26ad32cULL) X(0x9dad800b29a51983ULL) \
    X(0x44e76ec1e521bf92ULL) X(0xab225916c9192c44ULL) X(0xab60f86f00019bb5ULL) X(0x72bddfb16ced87faULL) \
    X(0xbddf5d4ca1f30717ULL) X(0x44550e2d9fa08f26ULL) X(0xdf81f53baa3140cdULL) X(0x02c056db35648ee1ULL) \
    X(0x98c1686518732cb1ULL) X(0x93cd60e2903a8e47ULL) X(0xd6eebc5b58a06dfbULL) X(0x6916755cd244d8dfULL) \
    X(0xd5282945fd1b2086ULL) X(0x0c2cb88da3bd7166ULL) X(0xa735c4ae084d056eULL) X(0x2157cd7a4f56401fULL) \
    X(0x2286f5fd4c8b683fULL) X(0xe7b9b9857dec5462ULL) X(0x412f6531e2c2e248ULL) X(0xd3f74e77210ff99cULL) \
    X(0xe4d058833ee343e7ULL) X(0x0e848d1da8650006ULL) X(0x3af94d1e21eeb329ULL) X(0x1ffc3e7426161d61ULL) \
    X(0xbf4b88e627422ac2ULL) X(0xd0b4a7edda93ebd1ULL) X(0x64187ca711b018e0ULL) X(0x30c8a1ee40364fb0ULL) \
    X(0xed20a1e84ef69008ULL) X(0x883f36434bb1051aULL) X(0x09a5bfa0b287ade4ULL) X(0xb7c300c4fdabf726ULL) \
    X(0x50a5794d948cccd6ULL) X(0xa1c839e317a5fa2aULL) X(0x0de0e956f3fb60b5ULL) X(0x4e09367b57f2e721ULL) \
    X(0xfa4344c013b52578ULL) X(0xdebad06c19e982d1ULL) X(0xd76c1ff0e75e8d9fULL) X(0x450c6e9eacf20e6cULL) \
    X(0x13779c174b5095fbULL) X(0x0c0db6c236f0db80ULL) X(0x9aac134c00a84fe8ULL) X(0x76a2b3dd2a4d2694ULL) \
    X(0xfca1bd9483d73415ULL) X(0x0189b3870364854dULL) X(0x0984fa0724990f02ULL) X(0x8e012431bd21a6f7ULL) \
    X(0xdd54d5810fe3b3c0ULL) X(0x4dd6e3809b7268b7ULL) X(0x240d4c0b0b8fc049ULL) X(0x3a8978b11b791660ULL) \
    X(0xaecd50d48d4ed6cfULL) X(0x734cc1f45d596808ULL) X(0xcfd44e196c9d3319ULL) X(0x650c7dd61e5bfc87ULL) \
    X(0xfc8280b46a3db2d4ULL) X(0x937308a3f67d7992ULL) X(0x56e647e05426cd41ULL) X(0x075f7513c75b7747ULL) \
    X(0xbacdfc9f5a2ec9a3ULL) X(0x2d4ee2fa515f3468ULL) X(0x6d91ff5a0dbf8e39ULL) X(0xfcbece0ba6babe4bULL) \
    X(0xc6b671ec09afd9e0ULL) X(0x89ced53a5eef8ad0ULL) X(0x4ed3d2db791b6459ULL) X(0x8395f8ca89462452ULL) \
    X(0xcbb5d2b2595de1dcULL) X(0xb2f7dad7c35d2846ULL) X(0x68667dd6f51047ebULL) X(0x94ee24328dea1358ULL) \
    X(0x03ebc0e49d5a0e71ULL) X(0xb06b54facb51e8d5ULL) X(0xf692044f93a4565fULL) X(0x17bd09d3fad2b45fULL) \
    X(0xa5ffa70fdfa1cf1bULL) X(0x2a7435f354d5daf9ULL) X(0xbfea7278993c04ddULL) X(0xeca7692c97d1ea4cULL) \
    X(0x7ea309e7ad5fbdd0ULL) X(0xc0dc811f3c8e5337ULL) X(0xf1a04b11eb5ff3cfULL) X(0x833bc9e388aec62aULL) \
    X(0xca5df429cbf01298ULL) X(0x2741b25cd7049befULL) X(0x95233d3c3eb516ceULL) X(0xa0bc285636b82e67ULL) \
    X(0x951a4ebdb66289daULL) X(0x2fa1c769d4095218ULL) X(0xed517e405f7ff1c5ULL) X(0x30fe930a7e285a92ULL) \
    X(0xf0586d160c86e683ULL) X(0x9a5569d7855acf27ULL) X(0x2694c2354f1dc6c2ULL) X(0xf9160e42c5e8f054ULL) \
    X(0xf99257c16b2e6ee4ULL) X(0x602e375548039d1cULL) X(0x826939117613356cULL) X(0x620561c228332309ULL) \
    X(0x9e84ce7fce7cb435ULL) X(0x05711464ae0f2c56ULL) X(0x3496e75ddf0babeaULL) X(0x8f1cc01c7a5c8ba1ULL) \
    X(0xf5a7bd9fac7eb7c6ULL) X(0x52ed468f3e486526ULL) X(0xe33117091d646c23ULL) X(0x3d814ef97cf58415ULL) \
    X(0x7b10e66517188b12ULL) X(0x5d76e206f2cdbb84ULL) X(0xe1434815a3bfe39aULL) X(0x8c857b67d94235e5ULL) \
    X(0x9e2d4af9a716f736ULL) X(0x8d727f1202ea7083ULL) X(0xd7a9b40cb7b65cf5ULL) X(0x7ad76424435256a1ULL) \
    X(0xeff3f86dab1d72f6ULL) X(0x67650d93d7aea401ULL) X(0x78b2394531389a2fULL) X(0x780aab70d41f5332ULL) \
    X(0xaaaeab1227a1ac3bULL) X(0xef9f705436452037ULL) X(0x355352bcd1c04ebdULL) X(0xa1d305d12f80b862ULL) \
    X(0x232d95e8ae811ee2ULL) X(0xc3782ebb037d963eULL) X(0xb7d92b8ad16378c3ULL) X(0xb1910624d67b6c1bULL) \
    X(0x1ec62b516c9acde0ULL) X(0xe63eaddcb3b60385ULL) X(0x8ac65bbe08457de6ULL) X(0xef0ff1d835988944ULL) \
    X(0xefd78b1155cbbedaULL) X(0x8b24b4e33fb9dbaeULL) X(0x9d8797862115a3c3ULL) X(0x7487356fa561244bULL) \
    X(0xe67aa8079d86c003ULL) X(0x3a8df100db996d16ULL) X(0x38546f34584d8b13ULL) X(0x1058bad42e64960bULL) \
    X(0x1b907726f187b375ULL) X(0x1a4523a23566f695ULL) X(0xecf3eb074be831b2ULL) X(0x40f456b9640334acULL) \
    X(0xb10040191f6e65a9ULL) X(0xfa9fd98b55c1d6c6ULL) X(0x7cb97296a36e89fdULL) X(0x60708a3217b8e856ULL) \
    X(0xf71ea3e022e07168ULL) X(0x48e3cddfe9c26598ULL) X(0x17251087bcd494c7ULL) X(0xbf310a2a5c604106ULL) \
    X(0x729895dde37d66c5ULL) X(0x67c8a57437a9aa35ULL) X(0xb55a30498d4f8e89ULL) X(0x67ad372358871305ULL) \
    X(0xb1829dee19ab4d8fULL) X(0x9d6a154c27cefbcdULL) X(0xb8670a66d509a208ULL) X(0xb964b0bc9fd53033ULL) \
    X(0xe6fbf209358dba3aULL) X(0x67353a24af7719bcULL) X(0x7e943f5148c533e0ULL) X(0x913883a360e15cbeULL) \
    X(0x213dd83072cdda1aULL) X(0x69b8c175eaf5e967ULL) X(0xb098017c00a2dba0ULL) X(0x866f2d8d37dee828ULL) \
    X(0x4e5bd107f4c69501ULL) X(0xcdaf2d67158a93b1ULL) X(0x6125aa65c3545c61ULL) X(0xe1c5674faadb181bULL) \
    X(0x513241275db0436eULL) X(0xf62c0a59d9f97d3eULL) X(0xd22b7719e6830748ULL) X(0x42b04bf536f2c1e0ULL) \
    X(0xa7e055848f356706ULL) X(0x89bda2eff185a6baULL) X(0x609dabe8f4e17928ULL) X(0xe2e4850c4a0013acULL) \
    X(0xef0d43b1b0ad9005ULL) X(0xdc31127dd05c0ca0ULL) X(0xa3da4107de89b43dULL) X(0x23af52785e3663c4ULL) \
    X(0x19e2f5bcb390c981ULL) X(0xe077c8d9b0238b84ULL) X(0x2700dcf9aa2eec87ULL) X(0x57f13ba99cfe8c85ULL) \
    X(0xf31e06f1e0618dceULL) X(0x689070dc821ab04dULL) X(0x54c70cea06909eafULL) X(0x57b3c74ae284ea4fULL) \
    X(0x26bc7b02e8734bd6ULL) X(0x3ebb142bd858ee57ULL) X(0xdac7e8709e5becb1ULL) X(0x851e4e4de253208fULL) \
    X(0x4ad4d70e43d6efcfULL) X(0x109ed92c6d93e124ULL) X(0xe3f7c99b009f8debULL) X(0x25d9342ccc622d33ULL) \
    X(0xc3af8c8091306ac1ULL) X(0xa1372caa749786a9ULL) X(0x1e1a051c1e631c69ULL) X(0x6a0dced9e4362b22ULL) \
    X(0xd95d574d14beafa2ULL) X(0x23565939216e5e87ULL) X(0x56314902191f03e6ULL) X(0x11a23205b7a9ae4dULL) \
    X(0x23ab3e0900024c0fULL) X(0x9fc2a7a159ff67f0ULL) X(0x9401d2046a35d98fULL) X(0xd7a56f95aacade41ULL) \
    /* end */

/* ls_cdc_gear_shl[s][b] = G[b] << s (mod 2^64), s = 0..7, for the
 * eight-bytes-per-step loop below; row 0 is the table itself. */
#define LS_CDC_SHL0(v) (v),
#define LS_CDC_SHL1(v) ((v) << 1),
#define LS_CDC_SHL2(v) ((v) << 2),
#define LS_CDC_SHL3(v) ((v) << 3),
#define LS_CDC_SHL4(v) ((v) << 4),
#define LS_CDC_SHL5(v) ((v) << 5),
#define LS_CDC_SHL6(v) ((v) << 6),
#define LS_CDC_SHL7(v) ((v) << 7),
static const _Alignas(64) uint64_t ls_cdc_gear_shl[8][256] = {
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL0) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL1) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL2) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL3) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL4) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL5) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL6) },
    { LS_CDC_GEAR_VALUES(LS_CDC_SHL7) },
};
#define LS_CDC_GEAR (ls_cdc_gear_shl[0])

const uint64_t *ls_cdc_gear_table(void) { return LS_CDC_GEAR; }

/* floor(log2(v)) for v > 0 */
static unsigned ls_cdc_log2_floor(uint32_t v)
{
    unsigned n = 0;
    while (v >>= 1)
        n++;
    return n;
}

/* `bits` consecutive one-bits ending at bit LS_CDC_MASK_TOP_BIT (56),
 * 0 < bits <= 28. Bit k of the gear hash depends on the last k + 1 bytes, so
 * the tested bits see the last 57 - bits + 1 .. 57 bytes; the 7 bits above
 * stay untested so the 8-byte loop can test pre-shifted hashes. */
static uint64_t ls_cdc_mask(unsigned bits)
{
    return (~UINT64_C(0) >> (64u - bits)) << (LS_CDC_MASK_TOP_BIT + 1u - bits);
}

int ls_cdc_init(ls_cdc *c, uint32_t min_size, uint32_t avg_size, uint32_t max_size)
{
    if (min_size < LS_CDC_MIN_SIZE_LOWER || avg_size <= min_size || max_size <= avg_size
        || max_size > LS_CDC_MAX_SIZE_UPPER) {
        memset(c, 0, sizeof(*c));
        return -1;
    }
    /* N = round(log2(avg)) in the log domain: take floor(log2 avg) + 1 when
     * avg > 2^N * sqrt(2), i.e. avg^2 > 2^(2N+1) (avg < 2^26: no overflow).
     * avg >= 65 gives N >= 6, so both widths lie in [4, 28]. */
    unsigned n = ls_cdc_log2_floor(avg_size);
    if ((uint64_t)avg_size * avg_size > (UINT64_C(1) << (2 * n + 1)))
        n++;
    c->mask_s = ls_cdc_mask(n + 2);
    c->mask_l = ls_cdc_mask(n - 2);
    c->min_size = min_size;
    c->avg_size = avg_size;
    c->max_size = max_size;
    ls_cdc_reset(c);
    return 0;
}

void ls_cdc_reset(ls_cdc *c)
{
    c->hash = 0;
    c->pos = 0;
}

/* Keeps the compiler from re-associating a sum into the loop-carried chain. */
#if defined(__GNUC__)
#define LS_CDC_OPAQUE(x) __asm__("" : "+r"(x))
#else
#define LS_CDC_OPAQUE(x) ((void)0)
#endif

/* Roll p[0..n) into *hp, testing the hash after every byte against mask.
 * Returns the number of bytes rolled up to and including the first byte after
 * which (h & mask) == 0 (and sets *found), or n. Reads only p[0..n).
 *
 * Eight bytes per step (the 2020 paper's multi-byte rolling, generalised from
 * two bytes). With h the hash before bytes b0..b7 and G_s = G << s:
 *     h_j = (h << (j+1)) + sum_{i<=j} G[b_i] << (j-i)      (hash after b_j)
 *     a_j = h_j << (7-j) = (h << 8) + sum_{i<=j} G_{7-i}[b_i]
 * so one shift and running additions of pre-shifted table entries give
 * a_0 .. a_7 = h_7, and (h_j & mask) == 0 <=> (a_j & (mask << (7-j))) == 0
 * because mask has no bit above LS_CDC_MASK_TOP_BIT = 56: the bits that
 * << (7-j) drops are never tested. The new h is a_3 + (G_3[b4] + G_2[b5] +
 * G_1[b6] + G_0[b7]), the bracket summed off the critical path, so the
 * loop-carried dependency is 6 one-cycle operations per 8 bytes instead of 9;
 * a_4 .. a_6 branch off it and are only tested. Every hash is exact, so the
 * cuts equal the byte-at-a-time definition for every split of the input.
 * Kept out of line so the loop gets the whole register file. */
#define LS_CDC_STEP(acc, j)                                                     \
    do {                                                                        \
        (acc) += ls_cdc_gear_shl[7 - (j)][q[(j)]];                              \
        if (LS_UNLIKELY(((acc) & m[7 - (j)]) == 0)) {                           \
            q += (j) + 1;                                                       \
            goto hit;                                                           \
        }                                                                       \
    } while (0)

static __attribute__((noinline)) size_t
ls_cdc_scan_mask(const uint8_t *p, size_t n, uint64_t *hp, uint64_t mask, int *found)
{
    uint64_t h = *hp;
    const uint8_t *q = p;
    const uint8_t *const end = p + n;
    const uint8_t *const end8 = p + (n & ~(size_t)7);
    const uint64_t m[8] = {mask,      mask << 1, mask << 2, mask << 3,
                           mask << 4, mask << 5, mask << 6, mask << 7};

    /* 8 bytes per iteration, one bound check per iteration. */
    while (q != end8) {
        uint64_t tail = ls_cdc_gear_shl[3][q[4]] + ls_cdc_gear_shl[2][q[5]];
        tail += ls_cdc_gear_shl[1][q[6]] + ls_cdc_gear_shl[0][q[7]];
        LS_CDC_OPAQUE(tail);
        h <<= 8;
        LS_CDC_STEP(h, 0);
        LS_CDC_STEP(h, 1);
        LS_CDC_STEP(h, 2);
        LS_CDC_STEP(h, 3);
        uint64_t a = h;
        h += tail; /* = a_7 */
        LS_CDC_STEP(a, 4);
        LS_CDC_STEP(a, 5);
        LS_CDC_STEP(a, 6);
        if (LS_UNLIKELY((h & mask) == 0)) {
            q += 8;
            goto hit;
        }
        q += 8;
    }
    while (q != end) {
        h = (h << 1) + LS_CDC_GEAR[*q++];
        if ((h & mask) == 0)
            goto hit;
    }
    *hp = h;
    *found = 0;
    return n;
hit:
    *hp = h;
    *found = 1;
    return (size_t)(q - p);
}

#undef LS_CDC_STEP
#undef LS_CDC_OPAQUE

size_t ls_cdc_next(ls_cdc *c, const uint8_t *data, size_t len, int *cut)
{
    const size_t min = c->min_size, avg = c->avg_size, max = c->max_size;
    size_t pos = c->pos, off = 0, n, k;
    uint64_t h = c->hash;
    int found;

    *cut = 0;
    /* len == 0 (data may be NULL), or a state whose ls_cdc_init failed. */
    if (len == 0 || LS_UNLIKELY(max == 0))
        return 0;

    /* Cut-point skipping: bytes [0, min - 64) of a chunk are not hashed. */
    if (pos < min - LS_CDC_WINDOW) {
        n = ls_min_size(len, min - LS_CDC_WINDOW - pos);
        pos += n;
        off += n;
        if (off == len)
            goto more;
    }
    /* Warm-up: bytes [min - 64, min - 1) fill the window; rolling byte
     * min - 1 completes H(min), the first candidate. */
    if (pos < min - 1) {
        n = ls_min_size(len - off, min - 1 - pos);
        for (k = 0; k < n; k++)
            h = (h << 1) + LS_CDC_GEAR[data[off + k]];
        pos += n;
        off += n;
        if (off == len)
            goto more;
    }
    /* Lengths min .. avg: harder mask. Rolling byte index pos completes
     * length pos + 1. */
    if (pos < avg) {
        n = ls_min_size(len - off, avg - pos);
        k = ls_cdc_scan_mask(data + off, n, &h, c->mask_s, &found);
        pos += k;
        off += k;
        if (found)
            goto cut;
        if (off == len)
            goto more;
    }
    /* Lengths avg + 1 .. max - 1: easier mask. */
    if (pos < max - 1) {
        n = ls_min_size(len - off, max - 1 - pos);
        k = ls_cdc_scan_mask(data + off, n, &h, c->mask_l, &found);
        pos += k;
        off += k;
        if (found)
            goto cut;
        if (off == len)
            goto more;
    }
    /* Byte max - 1: forced cut at length max. */
    off++;
cut:
    c->hash = 0;
    c->pos = 0;
    *cut = 1;
    return off;
more:
    c->hash = h;
    c->pos = (uint32_t)pos;
    return off;
}

size_t ls_cdc_scan(ls_cdc *c, const uint8_t *data, size_t len, uint64_t base,
                   uint64_t *cuts, size_t max_cuts, size_t *consumed)
{
    size_t off = 0, count = 0;

    while (off < len && count < max_cuts) {
        int cut;
        off += ls_cdc_next(c, data + off, len - off, &cut);
        if (!cut)
            break;
        cuts[count++] = base + off;
    }
    *consumed = off;
    return count;
}

size_t ls_cdc_boundaries(uint32_t min_size, uint32_t avg_size, uint32_t max_size,
                         const uint8_t *data, size_t len, uint64_t *cuts, size_t max_cuts)
{
    ls_cdc c;
    size_t off = 0, count = 0;

    if (ls_cdc_init(&c, min_size, avg_size, max_size) != 0)
        return 0;
    while (off < len) {
        int cut;
        /* Each call ends a chunk: at a cut point or at the end of the data. */
        off += ls_cdc_next(&c, data + off, len - off, &cut);
        if (count < max_cuts)
            cuts[count] = off;
        count++;
    }
    return count;
}
