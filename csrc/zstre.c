/* zstre.c: exact zstd reconstruction; see zstre.h for the design and
 * docs/format.md ("Reconstruction data for zstd blobs") for the coded form.
 * Section numbers are RFC 8878's. */
#include "zstre.h"
#include "gzre.h"
#include "common.h"
#include "rangecoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZS_MAGIC 0xFD2FB528u
#define ZS_BLOCK_MAX (1u << 17)
#define ZS_IN_CAP (1u << 21)
#define ZS_SKIP_MAX 65536u
#define ZS_FRAME_UNITS 65536u
#define ZS_SEQ_MAX (ZS_BLOCK_MAX / 3 + 8)
#define ZS_OUT_SOFT (1u << 18)

/* ---- bit readers ------------------------------------------------------ */

/* Bits [start, start + nb) of p (little-endian bit order), nb <= 32; bits
 * before 0 or past n read as zero. */
static uint32_t load_bits(const uint8_t *p, size_t n, int64_t start, int nb)
{
    if (nb <= 0) return 0;
    if (start < 0) {
        int neg = start < -64 ? 64 : (int)-start;
        if (neg >= nb) return 0;
        return load_bits(p, n, 0, nb - neg) << neg;
    }
    size_t byte = (size_t)(start >> 3);
    int sh = (int)(start & 7);
    uint64_t w = 0;
    for (int i = 0; i < 5 && byte + (size_t)i < n; i++) w |= (uint64_t)p[byte + (size_t)i] << (8 * i);
    return (uint32_t)((w >> sh) & ((1ull << nb) - 1));
}

/* Backward bitstream (4.1, 4.2.2): read from the end, after the highest set
 * bit of the last byte. pos: number of unread bits. */
typedef struct bwd { const uint8_t *p; size_t n; int64_t pos; } bwd;

static int bwd_init(bwd *b, const uint8_t *p, size_t n)
{
    if (n == 0 || p[n - 1] == 0) return -1;
    b->p = p;
    b->n = n;
    b->pos = (int64_t)(n - 1) * 8 + (31 - __builtin_clz(p[n - 1]));
    return 0;
}

static uint32_t bwd_read(bwd *b, int nb)
{
    b->pos -= nb;
    return load_bits(b->p, b->n, b->pos, nb);
}

/* ---- FSE tables (4.1) ------------------------------------------------- */

typedef struct fse {
    int log, valid, maxsym;
    uint8_t sym[512], nb[512];
    uint16_t base[512];
    uint16_t inv[53][512];   /* rebuilder: state of a symbol whose interval holds a state */
    int inv_ready;
} fse;

static int fse_build(fse *t, const int16_t *norm, int maxsym, int log)
{
    int size = 1 << log, high = size - 1, sum = 0;
    int16_t next[256];
    t->log = log;
    t->maxsym = maxsym;
    t->inv_ready = 0;
    t->valid = 0;
    for (int s = 0; s <= maxsym; s++) {
        if (norm[s] == -1) {
            if (high < 0) return -1;
            t->sym[high--] = (uint8_t)s;
            next[s] = 1;
            sum += 1;
        } else {
            if (norm[s] < 0) return -1;
            next[s] = norm[s];
            sum += norm[s];
        }
    }
    if (sum != size) return -1;
    int pos = 0, step = (size >> 1) + (size >> 3) + 3, mask = size - 1;
    for (int s = 0; s <= maxsym; s++)
        for (int i = 0; i < norm[s]; i++) {
            t->sym[pos] = (uint8_t)s;
            do pos = (pos + step) & mask; while (pos > high);
        }
    if (pos != 0) return -1;
    for (int st = 0; st < size; st++) {
        int s = t->sym[st];
        int x = next[s]++;
        int nb = log - (31 - __builtin_clz((unsigned)x));
        t->nb[st] = (uint8_t)nb;
        t->base[st] = (uint16_t)((x << nb) - size);
    }
    t->valid = 1;
    return 0;
}

static void fse_rle(fse *t, int symbol)
{
    t->log = 0;
    t->maxsym = symbol;
    t->sym[0] = (uint8_t)symbol;
    t->nb[0] = 0;
    t->base[0] = 0;
    t->valid = 1;
    t->inv_ready = 0;
}

static int fse_inverse(fse *t)
{
    if (t->inv_ready) return 0;
    int size = 1 << t->log;
    if (t->maxsym > 52) return -1;
    for (int st = 0; st < size; st++) {
        int s = t->sym[st];
        uint32_t lo = t->base[st], hi = lo + (1u << t->nb[st]);
        if (hi > (uint32_t)size) return -1;
        for (uint32_t x = lo; x < hi; x++) t->inv[s][x] = (uint16_t)st;
    }
    t->inv_ready = 1;
    return 0;
}

/* Table description (4.1.1): returns bytes used, or -1. */
static long fse_read_desc(const uint8_t *p, size_t n, int16_t *norm, int maxsym, int maxlog, int *log, int *last)
{
    int64_t bit = 0;
    int lg = (int)load_bits(p, n, bit, 4) + 5;
    bit += 4;
    if (lg > maxlog) return -1;
    int remaining = (1 << lg) + 1, threshold = 1 << lg, nbits = lg + 1, s = 0, prev0 = 0;
    while (remaining > 1 && s <= maxsym) {
        if (prev0) {
            int n0 = s;
            while (load_bits(p, n, bit, 2) == 3) {
                n0 += 3;
                bit += 2;
                if (bit > (int64_t)n * 8) return -1;
            }
            n0 += (int)load_bits(p, n, bit, 2);
            bit += 2;
            if (n0 > maxsym + 1) return -1;
            while (s < n0) norm[s++] = 0;
            if (s > maxsym) break;
        }
        int max = (2 * threshold - 1) - remaining, count;
        uint32_t low = load_bits(p, n, bit, nbits - 1);
        if ((int)low < max) {
            count = (int)low;
            bit += nbits - 1;
        } else {
            count = (int)load_bits(p, n, bit, nbits);
            if (count >= threshold) count -= max;
            bit += nbits;
        }
        count--;
        remaining -= count < 0 ? -count : count;
        norm[s++] = (int16_t)count;
        prev0 = count == 0;
        while (remaining < threshold && nbits > 1) {
            nbits--;
            threshold >>= 1;
        }
    }
    if (remaining != 1 || bit > (int64_t)n * 8) return -1;
    *log = lg;
    *last = s - 1;
    return (long)((bit + 7) >> 3);
}

static const int16_t LL_DEF[36] = {4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1,
                                   2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1};
static const int16_t ML_DEF[53] = {1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                                   1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1};
static const int16_t OF_DEF[29] = {1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1,
                                   1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1};
static const uint32_t LL_BASE[36] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 28,
                                     32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536};
static const uint8_t LL_BITS[36] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
                                    1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint32_t ML_BASE[53] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                     23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 37, 39, 41, 43, 47,
                                     51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195, 16387, 32771, 65539};
static const uint8_t ML_BITS[53] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                    0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

enum { T_LL, T_OF, T_ML };
static const int T_MAXSYM[3] = {35, 31, 52}, T_MAXLOG[3] = {9, 8, 9};

/* The sequence-section tables of one block (3.1.1.3.2.2), updated in
 * place from the modes byte; returns bytes of descriptions used or -1. */
static long seq_tables(fse tab[3], uint8_t modes, const uint8_t *p, size_t n)
{
    size_t used = 0;
    for (int k = 0; k < 3; k++) {
        int mode = (modes >> (6 - 2 * k)) & 3;
        fse *t = &tab[k];
        if (mode == 0) {
            const int16_t *d = k == T_LL ? LL_DEF : k == T_OF ? OF_DEF : ML_DEF;
            int ms = k == T_LL ? 35 : k == T_OF ? 28 : 52, lg = k == T_OF ? 5 : 6;
            if (fse_build(t, d, ms, lg)) return -1;
        } else if (mode == 1) {
            if (used >= n || p[used] > T_MAXSYM[k]) return -1;
            fse_rle(t, p[used++]);
        } else if (mode == 2) {
            int16_t norm[256];
            int lg, last;
            long u = fse_read_desc(p + used, n - used, norm, T_MAXSYM[k], T_MAXLOG[k], &lg, &last);
            if (u < 0 || fse_build(t, norm, last, lg)) return -1;
            used += (size_t)u;
        } else if (!t->valid) {
            return -1;   /* repeat mode without an earlier table */
        }
    }
    return (long)used;
}

/* Sequences section header (3.1.1.3.2.1): number of sequences and header
 * length, or -1. */
static int seq_count(const uint8_t *p, size_t n, uint32_t *nbseq)
{
    if (n < 1) return -1;
    if (p[0] == 0) { *nbseq = 0; return 1; }
    if (p[0] < 128) { *nbseq = p[0]; return 1; }
    if (p[0] < 255) {
        if (n < 2) return -1;
        *nbseq = ((uint32_t)(p[0] - 128) << 8) + p[1];
        return 2;
    }
    if (n < 3) return -1;
    *nbseq = p[1] + ((uint32_t)p[2] << 8) + 0x7F00;
    return 3;
}

/* Literals section header (3.1.1.3.1.1): type, streams, regenerated and
 * compressed sizes; returns header length or -1. */
static int lit_header(const uint8_t *p, size_t n, int *type, int *streams, uint32_t *regen, uint32_t *csize)
{
    if (n < 1) return -1;
    int t = p[0] & 3, sf = (p[0] >> 2) & 3;
    *type = t;
    *streams = 1;
    *csize = 0;
    if (t < 2) {
        if ((sf & 1) == 0) { *regen = p[0] >> 3; return 1; }
        if (sf == 1) {
            if (n < 2) return -1;
            *regen = (p[0] >> 4) + ((uint32_t)p[1] << 4);
            return 2;
        }
        if (n < 3) return -1;
        *regen = (p[0] >> 4) + ((uint32_t)p[1] << 4) + ((uint32_t)p[2] << 12);
        return 3;
    }
    int len = sf < 2 ? 3 : sf == 2 ? 4 : 5;
    if (n < (size_t)len) return -1;
    uint64_t v = 0;
    for (int i = 0; i < len; i++) v |= (uint64_t)p[i] << (8 * i);
    int bits = sf < 2 ? 10 : sf == 2 ? 14 : 18;
    *regen = (uint32_t)((v >> 4) & ((1u << bits) - 1));
    *csize = (uint32_t)((v >> (4 + bits)) & ((1u << bits) - 1));
    *streams = sf == 0 ? 1 : 4;
    return len;
}

/* Length of a Huffman tree description (4.2.1) at p, or -1. */
static long huf_desc_len(const uint8_t *p, size_t n)
{
    if (n < 1) return -1;
    if (p[0] < 128) return p[0] + 1 <= (long)n ? p[0] + 1 : -1;
    long nw = p[0] - 127;
    long len = 1 + (nw + 1) / 2;
    return len <= (long)n ? len : -1;
}

/* ---- Huffman (4.2) ---------------------------------------------------- */

typedef struct huf {
    int valid, maxbits;
    uint8_t nb[256];      /* code length per symbol, 0: no code */
    uint16_t code[256];   /* code value (nb bits, written MSB first from the top) */
} huf;

/* Build from a tree description; returns bytes used or -1. */
static long huf_read(huf *h, const uint8_t *p, size_t n)
{
    uint8_t w[256];
    int count = 0;
    long used;
    if (n < 1) return -1;
    if (p[0] < 128) {
        size_t len = p[0];
        if (len == 0 || 1 + len > n) return -1;
        int16_t norm[256];
        int lg, last;
        long u = fse_read_desc(p + 1, len, norm, 255, 6, &lg, &last);
        if (u < 0) return -1;
        static __thread fse t;   /* 400 KiB would not fit the stack comfortably */
        if (fse_build(&t, norm, last, lg)) return -1;
        bwd b;
        if (bwd_init(&b, p + 1 + u, len - (size_t)u)) return -1;
        uint32_t s1 = bwd_read(&b, lg), s2 = bwd_read(&b, lg);
        for (;;) {
            if (count >= 255) return -1;
            w[count++] = t.sym[s1];
            s1 = t.base[s1] + bwd_read(&b, t.nb[s1]);
            if (b.pos < 0) { if (count >= 255) return -1; w[count++] = t.sym[s2]; break; }
            if (count >= 255) return -1;
            w[count++] = t.sym[s2];
            s2 = t.base[s2] + bwd_read(&b, t.nb[s2]);
            if (b.pos < 0) { if (count >= 255) return -1; w[count++] = t.sym[s1]; break; }
        }
        used = 1 + (long)len;
    } else {
        count = p[0] - 127;
        used = 1 + (count + 1) / 2;
        if ((size_t)used > n) return -1;
        for (int i = 0; i < count; i++) w[i] = (uint8_t)(i & 1 ? p[1 + i / 2] & 15 : p[1 + i / 2] >> 4);
    }
    uint32_t total = 0;
    for (int i = 0; i < count; i++) {
        if (w[i] > 11) return -1;
        if (w[i]) total += 1u << (w[i] - 1);
    }
    if (total == 0) return -1;
    int maxbits = 32 - __builtin_clz(total);
    uint32_t left = (1u << maxbits) - total;
    if (left == 0 || (left & (left - 1)) || maxbits > 11 || count >= 256) return -1;
    w[count++] = (uint8_t)(32 - __builtin_clz(left));
    /* canonical codes: lowest weight first, symbols in order within a weight */
    uint32_t start[13] = {0}, next = 0;
    uint32_t rank[13] = {0};
    for (int i = 0; i < count; i++) rank[w[i]]++;
    for (int wt = 1; wt <= maxbits; wt++) {
        start[wt] = next;
        next += rank[wt] << (wt - 1);
    }
    memset(h->nb, 0, sizeof h->nb);
    for (int s = 0; s < count; s++) {
        if (!w[s]) continue;
        int nb = maxbits + 1 - w[s];
        h->nb[s] = (uint8_t)nb;
        h->code[s] = (uint16_t)(start[w[s]] >> (maxbits - nb));
        start[w[s]] += 1u << (w[s] - 1);
    }
    h->maxbits = maxbits;
    h->valid = 1;
    return used;
}

/* ---- forward bit writer for backward streams ------------------------- */

typedef struct bw { gbuf *out; uint64_t acc; int n; } bw;

static void bw_put(bw *w, uint32_t v, int nb)
{
    if (nb <= 0) return;
    w->acc |= (uint64_t)(v & (nb == 32 ? 0xFFFFFFFFu : ((1u << nb) - 1))) << w->n;
    w->n += nb;
    while (w->n >= 8) {
        gb_put(w->out, (uint8_t)w->acc);
        w->acc >>= 8;
        w->n -= 8;
    }
}

static void bw_close(bw *w)
{
    bw_put(w, 1, 1);
    if (w->n) { gb_put(w->out, (uint8_t)w->acc); w->acc = 0; w->n = 0; }
}

/* ---- value coding ------------------------------------------------------ */

typedef struct uctx { uint16_t len[64], top[34]; } uctx;

static void uctx_init(uctx *c)
{
    for (int i = 0; i < 64; i++) c->len[i] = PROB_INIT;
    for (int i = 0; i < 34; i++) c->top[i] = PROB_INIT;
}

static int bitlen(uint32_t v) { return v ? 32 - __builtin_clz(v) : 0; }

static void enc_uint(rc_enc *e, uctx *c, uint32_t v)
{
    int n = bitlen(v);
    rce_tree(e, c->len, 6, (uint32_t)n);
    if (n >= 2) {
        rce_bit(e, &c->top[n], (v >> (n - 2)) & 1);
        rce_direct(e, v & ((1u << (n - 2)) - 1), n - 2);
    }
}

static uint32_t dec_uint(rc_dec *d, uctx *c)
{
    int n = (int)rcd_tree(d, c->len, 6);
    if (n == 0) return 0;
    if (n == 1) return 1;
    if (n > 32) { d->bad = 1; return 0; }
    uint32_t v = 2u | (uint32_t)rcd_bit(d, &c->top[n]);
    return (v << (n - 2)) | rcd_direct(d, n - 2);
}

/* ---- the plaintext model (shared by both directions) ------------------ */

#define ZM_WLOG 22              /* model window: 4 MiB (farther offsets are escaped) */
#define ZM_W (1u << ZM_WLOG)
#define ZM_HBITS 17
#define ZM_STEPS 256
#define ZM_RANK_ESC 63
#define ZM_CAP (ZM_W + (4u << 20))

/* Plaintext history [base, end) with 4-byte hash chains: links are
 * (position + 1) mod 2^32, a walk ends when the distance stops growing. */
typedef struct zhist {
    uint8_t *buf;
    uint64_t base, end, ins, frame_start;
    uint32_t *head, *prev;
    uint32_t rep[3];
} zhist;

static int zh_init(zhist *h)
{
    h->buf = malloc(ZM_CAP);
    h->head = calloc((size_t)1 << ZM_HBITS, sizeof(uint32_t));
    h->prev = calloc(ZM_W, sizeof(uint32_t));
    return h->buf && h->head && h->prev ? 0 : -1;
}

static void zh_free(zhist *h)
{
    free(h->buf); free(h->head); free(h->prev);
}

/* Append plaintext, dropping what is more than the model window before
 * `keep` (the next position still to be coded). Returns bytes taken. */
static size_t zh_append(zhist *h, const uint8_t *d, size_t n, uint64_t keep)
{
    uint64_t low = keep > ZM_W ? keep - ZM_W : 0;
    if (low > h->base && h->end - h->base + n > ZM_CAP) {
        memmove(h->buf, h->buf + (low - h->base), (size_t)(h->end - low));
        h->base = low;
    }
    size_t room = ZM_CAP - (size_t)(h->end - h->base);
    if (n > room) n = room;
    memcpy(h->buf + (h->end - h->base), d, n);
    h->end += n;
    return n;
}

static inline uint32_t zh_hash(const uint8_t *s)
{
    uint32_t v;
    memcpy(&v, s, 4);
    return (v * 2654435761u) >> (32 - ZM_HBITS);
}

/* Insert every position before p whose 4 bytes lie before `limit` (the
 * current block's end); others before p are skipped for good. */
static void zh_catch_up(zhist *h, uint64_t p, uint64_t limit)
{
    uint64_t q = h->ins;
    if (p > ZM_W && q < p - ZM_W + 1) q = p - ZM_W + 1;
    if (q < h->base) q = h->base;
    for (; q < p && q + 4 <= limit; q++) {
        uint32_t k = zh_hash(h->buf + (q - h->base));
        h->prev[q & (ZM_W - 1)] = h->head[k];
        h->head[k] = (uint32_t)(q + 1);
    }
    if (q < p) q = p;
    h->ins = q;
}

static uint32_t zh_common(const zhist *h, uint64_t p, uint32_t dist, uint64_t limit)
{
    const uint8_t *s = h->buf + (p - h->base), *c = s - dist;
    uint64_t max = limit - p, l = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (l + 8 <= max) {
        uint64_t x, y;
        memcpy(&x, c + l, 8);
        memcpy(&y, s + l, 8);
        if (x != y) return (uint32_t)(l + (uint64_t)(__builtin_ctzll(x ^ y) >> 3));
        l += 8;
    }
#endif
    while (l < max && c[l] == s[l]) l++;
    return (uint32_t)l;
}

/* Whether the model may look `dist` back from p: within the frame and the
 * model window. It must not depend on how much history the buffer happens
 * to hold (the two sides fill theirs at different times); within the
 * window the bytes are always there (zh_append keeps ZM_W before the block
 * being coded). */
static int zh_valid(const zhist *h, uint64_t p, uint32_t dist)
{
    return dist >= 1 && dist < ZM_W && dist <= p - h->frame_start && dist <= p - h->base;
}

/* `stop`: the walk ends past this distance (an encoder looking for one
 * offset knows it cannot come later; decoders pass UINT32_MAX). */
typedef struct zwalk { uint32_t link, dist, best, stop; int steps; } zwalk;

static void zh_walk_start(const zhist *h, uint64_t p, uint64_t limit, zwalk *w)
{
    w->link = p + 4 <= limit ? h->head[zh_hash(h->buf + (p - h->base))] : 0;
    w->dist = 0;
    w->best = 3;
    w->steps = 0;
    w->stop = UINT32_MAX;
}

/* Next chain position whose match with p is longer than every newer one. */
static int zh_walk_next(const zhist *h, uint64_t p, uint64_t limit, zwalk *w, uint32_t *dist, uint32_t *len)
{
    uint64_t max = limit - p;
    while (w->link && w->steps < ZM_STEPS && w->best < max) {
        uint32_t d = (uint32_t)(p + 1) - w->link;
        if (d <= w->dist || d > w->stop || !zh_valid(h, p, d)) { w->link = 0; return 0; }
        w->dist = d;
        w->link = h->prev[(p - d) & (ZM_W - 1)];
        w->steps++;
        const uint8_t *s = h->buf + (p - h->base), *c = s - d;
        if (c[w->best] != s[w->best]) continue;
        uint32_t l = zh_common(h, p, d, limit);
        if (l > w->best) {
            w->best = l;
            *dist = d;
            *len = l;
            return 1;
        }
    }
    return 0;
}

/* Repeat offsets (3.1.1.5): the offset an Offset_Value names, and the
 * updated history. */
static uint32_t zh_offset(zhist *h, uint32_t ofv, uint32_t ll)
{
    uint32_t *r = h->rep, off;
    if (ofv > 3) {
        off = ofv - 3;
        r[2] = r[1]; r[1] = r[0]; r[0] = off;
        return off;
    }
    uint32_t k = ofv + (ll == 0);   /* 1: first, 2: second, 3: third, 4: first - 1 */
    if (k == 1) return r[0];
    if (k == 2) { off = r[1]; r[1] = r[0]; r[0] = off; return off; }
    off = k == 3 ? r[2] : r[0] - 1;
    r[2] = r[1]; r[1] = r[0]; r[0] = off;
    return off;
}

typedef struct zmodel { uctx ll, of, ml, mls; uint16_t rep[2], repv[4], rank[64], any, anyrank[256]; } zmodel;

static void zmodel_init(zmodel *m)
{
    uctx_init(&m->ll);
    uctx_init(&m->of);
    uctx_init(&m->ml);
    uctx_init(&m->mls);
    m->rep[0] = m->rep[1] = PROB_INIT;
    for (int i = 0; i < 4; i++) m->repv[i] = PROB_INIT;
    for (int i = 0; i < 64; i++) m->rank[i] = PROB_INIT;
    m->any = PROB_INIT;
    for (int i = 0; i < 256; i++) m->anyrank[i] = PROB_INIT;
}

#define ZM_ANY_MAX 255
#define ZM_ANY_STEPS 64

/* Second tier for an offset that is not a record: its index among every
 * chain position of q whose first four bytes match q's, newest first (at
 * most ZM_STEPS steps). With `find`: returns the index of `find`, or -1.
 * Otherwise: returns the distance of the n-th such position, or 0. */
static int64_t zh_any(const zhist *h, uint64_t q, uint64_t limit, uint32_t find, int n)
{
    if (q + 4 > limit) return find ? -1 : 0;
    const uint8_t *s = h->buf + (q - h->base);
    uint32_t link = h->head[zh_hash(s)], last = 0;
    int idx = 0;
    for (int steps = 0; link && steps < ZM_ANY_STEPS; steps++) {
        uint32_t d = (uint32_t)(q + 1) - link;
        if (d <= last || (find && d > find) || !zh_valid(h, q, d)) break;
        last = d;
        link = h->prev[(q - d) & (ZM_W - 1)];
        if (memcmp(s - d, s, 4) != 0) continue;
        if (find ? d == find : idx == n) return find ? (int64_t)idx : (int64_t)d;
        if (++idx > ZM_ANY_MAX) break;
    }
    return find ? -1 : 0;
}

/* Code one sequence whose literals start at plaintext position q, in a
 * block ending at `limit`. Returns -1 when the plaintext contradicts it. */
static int enc_seq(rc_enc *e, zmodel *m, zhist *h, uint64_t q, uint64_t limit, uint32_t ll, uint32_t ofv, uint32_t ml)
{
    enc_uint(e, &m->ll, ll);
    q += ll;
    int rep = ofv <= 3;
    rce_bit(e, &m->rep[ll == 0], rep);
    uint32_t off;
    if (rep) {
        rce_tree(e, m->repv, 2, ofv - 1);
        off = zh_offset(h, ofv, ll);
    } else {
        off = zh_offset(h, ofv, ll);
        zh_catch_up(h, q, limit);
        zwalk w;
        uint32_t d, l;
        int rank = 0, found = 0;
        zh_walk_start(h, q, limit, &w);
        w.stop = off;   /* the same rank as a full walk: a farther record cannot be it */
        if (!zh_valid(h, q, off)) w.link = 0;
        while (rank < ZM_RANK_ESC && zh_walk_next(h, q, limit, &w, &d, &l)) {
            if (d == off) { found = 1; break; }
            rank++;
        }
        if (!found) rank = ZM_RANK_ESC;
        rce_tree(e, m->rank, 6, (uint32_t)rank);
        if (rank == ZM_RANK_ESC) {
            int64_t any = zh_any(h, q, limit, off, 0);
            rce_bit(e, &m->any, any >= 0);
            if (any >= 0) rce_tree(e, m->anyrank, 8, (uint32_t)any);
            else enc_uint(e, &m->of, off);
        }
    }
    if (zh_valid(h, q, off)) {
        uint32_t l = zh_common(h, q, off, limit);
        if (l < ml) return -1;
        enc_uint(e, &m->mls, l - ml);
    } else {
        enc_uint(e, &m->ml, ml - 3);
    }
    return 0;
}

static int dec_seq(rc_dec *dc, zmodel *m, zhist *h, uint64_t q, uint64_t limit, uint32_t *ll, uint32_t *ofv, uint32_t *ml)
{
    *ll = dec_uint(dc, &m->ll);
    q += *ll;
    if (q > limit) return -1;
    uint32_t off;
    if (rcd_bit(dc, &m->rep[*ll == 0])) {
        *ofv = rcd_tree(dc, m->repv, 2) + 1;
        if (*ofv > 3) return -1;
        off = zh_offset(h, *ofv, *ll);
    } else {
        zh_catch_up(h, q, limit);
        int rank = (int)rcd_tree(dc, m->rank, 6);
        if (rank == ZM_RANK_ESC) {
            if (rcd_bit(dc, &m->any)) {
                off = (uint32_t)zh_any(h, q, limit, 0, (int)rcd_tree(dc, m->anyrank, 8));
                if (!off) return -1;
            } else {
                off = dec_uint(dc, &m->of);
            }
        } else {
            zwalk w;
            uint32_t d = 0, l;
            zh_walk_start(h, q, limit, &w);
            for (int i = 0; i <= rank; i++)
                if (!zh_walk_next(h, q, limit, &w, &d, &l)) return -1;
            off = d;
        }
        if (off == 0 || off > 0xFFFFFFFFu - 3) return -1;
        *ofv = off + 3;
        zh_offset(h, *ofv, *ll);
    }
    if (zh_valid(h, q, off)) {
        uint32_t l = zh_common(h, q, off, limit), s = dec_uint(dc, &m->mls);
        if (s > l || l - s < 3) return -1;
        *ml = l - s;
    } else {
        *ml = dec_uint(dc, &m->ml) + 3;
    }
    return dc->bad ? -1 : 0;
}

static void enc_bytes(rc_enc *e, const uint8_t *p, size_t n, int lenbits)
{
    rce_direct(e, (uint32_t)n, lenbits);
    for (size_t i = 0; i < n; i++) rce_direct(e, p[i], 8);
}

/* ---- analyzer ----------------------------------------------------------- */

enum { ZA_FRAME, ZA_BLOCK, ZA_CHECKSUM, ZA_SKIP, ZA_DONE, ZA_ERROR };

struct ls_zsan {
    uint8_t *in;
    size_t in_pos, in_len;
    uint64_t in_base;
    int in_end, phase, checksum;
    fse tab[3];
    uint32_t *seq;             /* ll, ofv, ml per sequence of the current block */
    zmodel model;
    zhist hist;                /* plaintext fed so far (the model's view) */
    uint64_t pos;              /* plaintext position of the next block */
    int plain_end;
    rc_out o;
    int exact;
    uint64_t plain;
    char msg[160];
    uint64_t err_off;
};

static int za_fail(ls_zsan *a, const char *what)
{
    if (a->phase != ZA_ERROR) {
        a->phase = ZA_ERROR;
        a->err_off = a->in_base + a->in_pos;
        snprintf(a->msg, sizeof a->msg, "%s", what);
    }
    return LS_GZ_ERR_FORMAT;
}

static void za_inexact(ls_zsan *a, const char *what)
{
    if (!a->exact) return;
    a->exact = 0;
    a->err_off = a->in_base + a->in_pos;
    snprintf(a->msg, sizeof a->msg, "%s", what);
}

ls_zsan *ls_zsan_new(void)
{
    ls_zsan *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->in = malloc(ZS_IN_CAP);
    a->seq = malloc(sizeof(uint32_t) * 3 * (ZS_SEQ_MAX + 1));
    if (!a->in || !a->seq || zh_init(&a->hist)) { ls_zsan_free(a); return NULL; }
    zmodel_init(&a->model);
    a->exact = 1;
    return a;
}

void ls_zsan_free(ls_zsan *a)
{
    if (!a) return;
    free(a->in); free(a->seq); free(a->o.frame.p); free(a->o.side.p);
    zh_free(&a->hist);
    free(a);
}

size_t ls_zsan_input(ls_zsan *a, const uint8_t *data, size_t n)
{
    if (a->in_end) return 0;
    if (a->in_pos) {
        memmove(a->in, a->in + a->in_pos, a->in_len - a->in_pos);
        a->in_len -= a->in_pos;
        a->in_base += a->in_pos;
        a->in_pos = 0;
    }
    size_t room = ZS_IN_CAP - a->in_len;
    if (n > room) n = room;
    memcpy(a->in + a->in_len, data, n);
    a->in_len += n;
    return n;
}

void ls_zsan_input_end(ls_zsan *a) { a->in_end = 1; }

size_t ls_zsan_plain(ls_zsan *a, const uint8_t *data, size_t n) { return zh_append(&a->hist, data, n, a->pos); }
void ls_zsan_plain_end(ls_zsan *a) { a->plain_end = 1; }

/* Event tags (2 direct bits) at stream level. */
enum { U_FRAME, U_SKIP, U_END };

static int za_frame_header(ls_zsan *a)
{
    size_t n = a->in_len - a->in_pos;
    const uint8_t *p = a->in + a->in_pos;
    if (n == 0 && a->in_end) {
        if (a->in_base + a->in_pos == 0) return za_fail(a, "empty zstd stream");
        if (a->hist.end != a->pos) return za_fail(a, "plaintext longer than the stream decodes to");
        if (!a->plain_end) return LS_GZ_NEED_PLAIN;
        if (a->exact) {
            rce_direct(rco_event(&a->o), U_END, 2);
            rco_end(&a->o);
        }
        a->phase = ZA_DONE;
        return 0;
    }
    if (n < 8 && !a->in_end) return LS_GZ_NEED_INPUT;
    if (n < 4) return za_fail(a, "truncated zstd frame magic");
    uint32_t magic = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if ((magic & 0xFFFFFFF0u) == 0x184D2A50u) {
        if (n < 8) return za_fail(a, "truncated skippable frame");
        uint32_t size = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        if (size > ZS_SKIP_MAX) {
            za_inexact(a, "skippable frame over 64 KiB");
            a->phase = ZA_SKIP;
            return 0;
        }
        if (n < 8 + (size_t)size) return a->in_end ? za_fail(a, "truncated skippable frame") : LS_GZ_NEED_INPUT;
        if (a->exact) {
            rc_enc *e = rco_event(&a->o);
            rce_direct(e, U_SKIP, 2);
            rce_direct(e, magic & 15, 4);
            enc_bytes(e, p + 8, size, 17);
            rco_done(&a->o, 1 + size, ZS_FRAME_UNITS);
        }
        a->in_pos += 8 + (size_t)size;
        return 0;
    }
    if (magic != ZS_MAGIC) return za_fail(a, "bad zstd frame magic");
    if (n < 5) return a->in_end ? za_fail(a, "truncated zstd frame header") : LS_GZ_NEED_INPUT;
    uint8_t fhd = p[4];
    if (fhd & 0x08) return za_fail(a, "reserved bit set in a zstd frame header");
    int single = (fhd >> 5) & 1, fcs = fhd >> 6, did = fhd & 3;
    size_t len = 5 + (single ? 0 : 1) + (size_t)(did == 0 ? 0 : did == 1 ? 1 : did == 2 ? 2 : 4) +
                 (size_t)(fcs == 0 ? (single ? 1 : 0) : fcs == 1 ? 2 : fcs == 2 ? 4 : 8);
    if (n < len) return a->in_end ? za_fail(a, "truncated zstd frame header") : LS_GZ_NEED_INPUT;
    if (did) {
        /* its tables may come from the dictionary: not parsed further */
        za_inexact(a, "zstd frame needs a dictionary");
        a->phase = ZA_SKIP;
        return 0;
    }
    a->checksum = (fhd >> 2) & 1;
    if (a->exact) {
        rc_enc *e = rco_event(&a->o);
        rce_direct(e, U_FRAME, 2);
        enc_bytes(e, p + 4, len - 4, 5);
        rco_done(&a->o, 1, ZS_FRAME_UNITS);
    }
    for (int k = 0; k < 3; k++) a->tab[k].valid = 0;
    a->hist.frame_start = a->pos;
    a->hist.rep[0] = 1; a->hist.rep[1] = 4; a->hist.rep[2] = 8;
    a->in_pos += len;
    a->phase = ZA_BLOCK;
    return 0;
}

static int za_block(ls_zsan *a)
{
    size_t n = a->in_len - a->in_pos;
    const uint8_t *p = a->in + a->in_pos;
    if (n < 3) return a->in_end ? za_fail(a, "truncated zstd block header") : LS_GZ_NEED_INPUT;
    uint32_t h = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
    int last = h & 1, type = (h >> 1) & 3;
    uint32_t size = h >> 3;
    if (type == 3) return za_fail(a, "reserved zstd block type");
    size_t body = type == 1 ? 1 : size;
    if (size > ZS_BLOCK_MAX) return za_fail(a, "zstd block larger than 128 KiB");
    if (n < 3 + body) return a->in_end ? za_fail(a, "truncated zstd block") : LS_GZ_NEED_INPUT;
    const uint8_t *b = p + 3;
    uint32_t nbseq = 0, regen = 0;
    size_t preA = 0, preB_at = 0, preB = 0;
    uint64_t plain = type == 2 ? 0 : size;
    if (type == 2) {
        int lt, streams;
        uint32_t csize;
        int hl = lit_header(b, body, &lt, &streams, &regen, &csize);
        if (hl < 0) return za_fail(a, "bad literals section header");
        size_t lit_end;
        if (lt == 0) { preA = (size_t)hl; lit_end = (size_t)hl + regen; }
        else if (lt == 1) { preA = (size_t)hl + 1; lit_end = preA; }
        else {
            long tl = 0;
            if (lt == 2) {
                tl = huf_desc_len(b + hl, body - (size_t)hl);
                if (tl < 0) return za_fail(a, "bad Huffman tree description");
            }
            preA = (size_t)hl + (size_t)tl + (streams == 4 ? 6 : 0);
            lit_end = (size_t)hl + csize;
            if (lit_end < preA) return za_fail(a, "literals section shorter than its tables");
        }
        if (lit_end > body || regen > ZS_BLOCK_MAX) return za_fail(a, "literals section overruns its block");
        int cl = seq_count(b + lit_end, body - lit_end, &nbseq);
        if (cl < 0) return za_fail(a, "bad sequences section header");
        preB_at = lit_end;
        size_t q = lit_end + (size_t)cl;
        if (nbseq) {
            if (q >= body) return za_fail(a, "truncated sequences section");
            uint8_t modes = b[q++];
            if (modes & 3) return za_fail(a, "reserved bits set in sequence compression modes");
            long tu = seq_tables(a->tab, modes, b + q, body - q);
            if (tu < 0) return za_fail(a, "bad sequence table description");
            q += (size_t)tu;
            if (nbseq > ZS_SEQ_MAX) return za_fail(a, "too many sequences for a block");
            bwd s;
            if (bwd_init(&s, b + q, body - q)) return za_fail(a, "bad sequences bitstream");
            fse *LL = &a->tab[T_LL], *OF = &a->tab[T_OF], *ML = &a->tab[T_ML];
            uint32_t ls = bwd_read(&s, LL->log), os = bwd_read(&s, OF->log), ms = bwd_read(&s, ML->log);
            uint64_t lits = 0;
            for (uint32_t i = 0; i < nbseq; i++) {
                int oc = OF->sym[os], mc = ML->sym[ms], lc = LL->sym[ls];
                if (oc > 31 || mc > 52 || lc > 35) return za_fail(a, "sequence code out of range");
                uint32_t ofv = (1u << oc) + bwd_read(&s, oc);
                uint32_t ml = ML_BASE[mc] + bwd_read(&s, ML_BITS[mc]);
                uint32_t ll = LL_BASE[lc] + bwd_read(&s, LL_BITS[lc]);
                if (i + 1 < nbseq) {
                    ls = LL->base[ls] + bwd_read(&s, LL->nb[ls]);
                    ms = ML->base[ms] + bwd_read(&s, ML->nb[ms]);
                    os = OF->base[os] + bwd_read(&s, OF->nb[os]);
                    if (ls >= (1u << LL->log) || ms >= (1u << ML->log) || os >= (1u << OF->log))
                        return za_fail(a, "sequence state out of range");
                }
                a->seq[3 * i] = ll;
                a->seq[3 * i + 1] = ofv;
                a->seq[3 * i + 2] = ml;
                lits += ll;
                plain += ml;
            }
            if (s.pos != 0) return za_fail(a, "sequences bitstream not consumed exactly");
            if (lits > regen) return za_fail(a, "sequences need more literals than the block has");
            a->seq[3 * nbseq] = ls;
            a->seq[3 * nbseq + 1] = os;
            a->seq[3 * nbseq + 2] = ms;
            preB = q - lit_end;
        } else {
            preB = (size_t)cl;
        }
        plain += regen;
        if (plain > ZS_BLOCK_MAX) return za_fail(a, "zstd block decodes to more than 128 KiB");
    }
    if (a->hist.end < a->pos + plain) {
        if (a->plain_end) return za_fail(a, "plaintext shorter than the stream decodes to");
        return LS_GZ_NEED_PLAIN;   /* the block is parsed again when it is here */
    }
    uint64_t limit = a->pos + plain;
    if (a->exact) {
        rc_enc *e = rco_event(&a->o);
        rce_direct(e, h, 24);
        uint32_t units = 1;
        if (type == 2) {
            enc_bytes(e, b, preA, 17);
            enc_bytes(e, b + preB_at, preB, 17);
            rce_direct(e, (uint32_t)plain, 18);
            if (nbseq) {
                rce_direct(e, a->seq[3 * nbseq], 9);
                rce_direct(e, a->seq[3 * nbseq + 1], 9);
                rce_direct(e, a->seq[3 * nbseq + 2], 9);
                uint64_t q = a->pos;
                for (uint32_t i = 0; i < nbseq; i++) {
                    uint32_t ll = a->seq[3 * i], ml = a->seq[3 * i + 2];
                    if (enc_seq(e, &a->model, &a->hist, q, limit, ll, a->seq[3 * i + 1], ml)) {
                        za_inexact(a, "a match does not agree with the plaintext");
                        break;
                    }
                    q += (uint64_t)ll + ml;
                }
            }
            units += nbseq + (uint32_t)((preA + preB) / 8);
        }
        units += (uint32_t)(plain / 256);
        rco_done(&a->o, units, ZS_FRAME_UNITS);
    }
    a->pos = limit;
    a->plain += plain;
    a->in_pos += 3 + body;
    a->phase = last ? (a->checksum ? ZA_CHECKSUM : ZA_FRAME) : ZA_BLOCK;
    return 0;
}

int ls_zsan_run(ls_zsan *a)
{
    for (;;) {
        if (a->o.frame.oom || a->o.side.oom) return LS_GZ_ERR_NOMEM;
        int rc = 0;
        switch (a->phase) {
        case ZA_ERROR:
            return LS_GZ_ERR_FORMAT;
        case ZA_DONE:
            return a->o.side.len ? LS_GZ_OUTPUT : LS_GZ_DONE;
        case ZA_SKIP:   /* not exact: the rest of the input is not looked at */
            a->in_pos = a->in_len;
            if (!a->in_end) return LS_GZ_NEED_INPUT;
            a->phase = ZA_DONE;
            break;
        case ZA_FRAME:
            rc = za_frame_header(a);
            break;
        case ZA_BLOCK:
            rc = za_block(a);
            break;
        case ZA_CHECKSUM:
            if (a->in_len - a->in_pos < 4) {
                rc = a->in_end ? za_fail(a, "truncated zstd content checksum") : LS_GZ_NEED_INPUT;
                break;
            }
            if (a->exact) {
                rc_enc *e = rco_event(&a->o);
                const uint8_t *p = a->in + a->in_pos;
                rce_direct(e, (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24, 32);
                rco_done(&a->o, 1, ZS_FRAME_UNITS);
            }
            a->in_pos += 4;
            a->phase = ZA_FRAME;
            break;
        }
        if (rc) return rc;
        if (a->o.side.len >= (1u << 18)) return LS_GZ_OUTPUT;
    }
}

size_t ls_zsan_side(ls_zsan *a, const uint8_t **ptr) { *ptr = a->o.side.p; return a->o.side.len; }
void ls_zsan_side_taken(ls_zsan *a, size_t n) { gb_consume(&a->o.side, n); }
int ls_zsan_exact(const ls_zsan *a) { return a->exact; }
const char *ls_zsan_message(const ls_zsan *a) { return a->msg; }
uint64_t ls_zsan_offset(const ls_zsan *a) { return a->err_off; }
uint64_t ls_zsan_plain_size(const ls_zsan *a) { return a->plain; }

/* ---- rebuilder ---------------------------------------------------------- */

enum { ZR_UNIT, ZR_BLOCK, ZR_CHECKSUM, ZR_DONE, ZR_ERROR };

struct ls_zsre {
    rc_in in;                   /* reconstruction data not yet decoded */
    zhist hist;                 /* plaintext (the model's view and the literals' source) */
    uint64_t pos;               /* plaintext position of the next block */
    int plain_end;
    int state, checksum;
    fse tab[3];
    huf huf;
    zmodel model;
    uint32_t *seq;
    /* a decoded block waiting for its plaintext */
    int pending;
    uint32_t bh;
    uint8_t preA[1024], preB[1024];
    size_t preA_len, preB_len;
    uint32_t nbseq, bsize, units_pending;
    int seq_ready;
    gbuf out;
    gbuf lits;
    char msg[160];
};

static int zr_fail(ls_zsre *r, const char *what)
{
    if (r->state != ZR_ERROR) {
        r->state = ZR_ERROR;
        snprintf(r->msg, sizeof r->msg, "%s", what);
    }
    return LS_GZ_ERR_SIDE;
}

ls_zsre *ls_zsre_new(void)
{
    ls_zsre *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->seq = malloc(sizeof(uint32_t) * 3 * (ZS_SEQ_MAX + 1));
    if (!r->seq || zh_init(&r->hist)) { ls_zsre_free(r); return NULL; }
    zmodel_init(&r->model);
    return r;
}

void ls_zsre_free(ls_zsre *r)
{
    if (!r) return;
    free(r->in.side.p); free(r->seq); free(r->out.p); free(r->lits.p);
    zh_free(&r->hist);
    free(r);
}

size_t ls_zsre_side(ls_zsre *r, const uint8_t *data, size_t n) { return rci_feed(&r->in, data, n); }

size_t ls_zsre_plain(ls_zsre *r, const uint8_t *data, size_t n) { return zh_append(&r->hist, data, n, r->pos); }

void ls_zsre_plain_end(ls_zsre *r) { r->plain_end = 1; }

static int zr_frame(ls_zsre *r)
{
    int rc = rci_frame(&r->in);
    return rc < 0 ? zr_fail(r, "reconstruction frame too long") : rc ? LS_GZ_NEED_SIDE : 0;
}

static int zr_done(ls_zsre *r, uint32_t units)
{
    return rci_done(&r->in, units, ZS_FRAME_UNITS) ? zr_fail(r, "reconstruction data ends inside a frame") : 0;
}

static size_t dec_bytes(ls_zsre *r, uint8_t *dst, size_t cap, int lenbits, int emit)
{
    size_t n = rcd_direct(&r->in.rd, lenbits);
    if (n > cap) { r->in.rd.bad = 1; return 0; }
    for (size_t i = 0; i < n; i++) {
        uint8_t v = (uint8_t)rcd_direct(&r->in.rd, 8);
        if (dst) dst[i] = v;
        if (emit) gb_put(&r->out, v);
    }
    return n;
}

/* Huffman-code `n` literals into one backward stream (4.2.2). */
static int huf_stream(ls_zsre *r, const uint8_t *l, size_t n)
{
    bw w = {&r->out, 0, 0};
    for (size_t i = n; i-- > 0;) {
        if (!r->huf.nb[l[i]]) return -1;
        bw_put(&w, r->huf.code[l[i]], r->huf.nb[l[i]]);
    }
    bw_close(&w);
    return 0;
}

/* Write the pending compressed block once its plaintext is here. */
static int zr_emit_block(ls_zsre *r)
{
    const uint8_t *A = r->preA;
    int lt, streams;
    uint32_t regen, csize;
    int hl = lit_header(A, r->preA_len, &lt, &streams, &regen, &csize);
    if (hl < 0) return zr_fail(r, "bad literals header in reconstruction data");
    uint64_t limit = r->pos + r->bsize;
    if (r->hist.end < limit) {
        if (r->plain_end) return zr_fail(r, "plaintext ends inside a block");
        return LS_GZ_NEED_PLAIN;
    }
    if (!r->seq_ready) {
        uint64_t q = r->pos;
        for (uint32_t i = 0; i < r->nbseq; i++) {
            uint32_t *v = &r->seq[3 * i];
            if (dec_seq(&r->in.rd, &r->model, &r->hist, q, limit, &v[0], &v[1], &v[2]))
                return zr_fail(r, "reconstruction data does not fit the plaintext");
            q += (uint64_t)v[0] + v[2];
            if (q > limit) return zr_fail(r, "sequences run past their block");
        }
        r->seq_ready = 1;
        int rc = zr_done(r, r->units_pending);
        if (rc) return rc;
    }
    uint64_t need = regen;
    for (uint32_t i = 0; i < r->nbseq; i++) need += r->seq[3 * i + 2];
    if (need != r->bsize) return zr_fail(r, "block size in reconstruction data does not match its sequences");
    /* literals: the plaintext outside the matches */
    const uint8_t *p = r->hist.buf + (r->pos - r->hist.base);
    r->lits.len = 0;
    size_t at = 0;
    uint64_t lits = 0;
    for (uint32_t i = 0; i < r->nbseq; i++) {
        uint32_t ll = r->seq[3 * i], ml = r->seq[3 * i + 2];
        gb_append(&r->lits, p + at, ll);
        at += (size_t)ll + ml;
        lits += ll;
    }
    if (lits > regen) return zr_fail(r, "sequences need more literals than the block has");
    gb_append(&r->lits, p + at, (size_t)(regen - lits));
    if (r->lits.oom) return LS_GZ_ERR_NOMEM;
    r->pos = limit;
    /* block header, literals section */
    for (int i = 0; i < 3; i++) gb_put(&r->out, (uint8_t)(r->bh >> (8 * i)));
    gb_append(&r->out, A, r->preA_len);
    if (lt == 0) {
        gb_append(&r->out, r->lits.p, r->lits.len);
    } else if (lt >= 2) {
        if (lt == 2) {
            long used = huf_read(&r->huf, A + hl, r->preA_len - (size_t)hl);
            if (used < 0) return zr_fail(r, "bad Huffman tree in reconstruction data");
        } else if (!r->huf.valid) {
            return zr_fail(r, "treeless literals without an earlier Huffman tree");
        }
        if (streams == 1) {
            if (huf_stream(r, r->lits.p, r->lits.len)) return zr_fail(r, "literal without a Huffman code");
        } else {
            size_t seg = (regen + 3) / 4;
            if (3 * seg > regen) return zr_fail(r, "too few literals for four streams");
            for (int k = 0; k < 4; k++) {
                size_t from = seg * (size_t)k, cnt = k < 3 ? seg : regen - 3 * seg;
                if (huf_stream(r, r->lits.p + from, cnt)) return zr_fail(r, "literal without a Huffman code");
            }
        }
    }
    /* sequences section */
    gb_append(&r->out, r->preB, r->preB_len);
    if (r->nbseq) {
        uint32_t nbseq;
        int cl = seq_count(r->preB, r->preB_len, &nbseq);
        if (cl < 0 || nbseq != r->nbseq || (size_t)cl >= r->preB_len)
            return zr_fail(r, "sequence count in reconstruction data does not match");
        if (seq_tables(r->tab, r->preB[cl], r->preB + cl + 1, r->preB_len - (size_t)cl - 1) < 0)
            return zr_fail(r, "bad sequence tables in reconstruction data");
        fse *T[3] = {&r->tab[T_LL], &r->tab[T_OF], &r->tab[T_ML]};
        for (int k = 0; k < 3; k++)
            if (fse_inverse(T[k])) return zr_fail(r, "bad sequence table in reconstruction data");
        uint32_t N = r->nbseq;
        uint32_t st[3] = {r->seq[3 * N], r->seq[3 * N + 1], r->seq[3 * N + 2]};
        for (int k = 0; k < 3; k++)
            if (st[k] >= (1u << T[k]->log)) return zr_fail(r, "final state out of range");
        bw w = {&r->out, 0, 0};
        for (uint32_t i = N; i-- > 0;) {
            uint32_t ll = r->seq[3 * i], ofv = r->seq[3 * i + 1], ml = r->seq[3 * i + 2];
            if (ofv == 0 || ml < 3) return zr_fail(r, "bad sequence in reconstruction data");
            int oc = bitlen(ofv) - 1;
            int lc = ll < 16 ? (int)ll : 0, mc = ml - 3 < 32 ? (int)(ml - 3) : 0;
            if (ll >= 16) { lc = 16; while (lc < 35 && LL_BASE[lc + 1] <= ll) lc++; }
            if (ml - 3 >= 32) { mc = 32; while (mc < 52 && ML_BASE[mc + 1] <= ml) mc++; }
            if (ll - LL_BASE[lc] >= (1u << LL_BITS[lc]) && LL_BITS[lc] < 32) return zr_fail(r, "literal length too large");
            if (ml - ML_BASE[mc] >= (1u << ML_BITS[mc])) return zr_fail(r, "match length too large");
            int code[3] = {lc, oc, mc};
            if (i + 1 < N) {
                /* the state that decodes this sequence and leads to the next one */
                uint32_t nxt[3];
                for (int k = 0; k < 3; k++) {
                    if (code[k] > T[k]->maxsym) return zr_fail(r, "sequence code outside its table");
                    nxt[k] = T[k]->inv[code[k]][st[k]];
                    if (T[k]->sym[nxt[k]] != code[k]) return zr_fail(r, "sequence code absent from its table");
                }
                bw_put(&w, st[T_OF] - T[T_OF]->base[nxt[T_OF]], T[T_OF]->nb[nxt[T_OF]]);
                bw_put(&w, st[T_ML] - T[T_ML]->base[nxt[T_ML]], T[T_ML]->nb[nxt[T_ML]]);
                bw_put(&w, st[T_LL] - T[T_LL]->base[nxt[T_LL]], T[T_LL]->nb[nxt[T_LL]]);
                for (int k = 0; k < 3; k++) st[k] = nxt[k];
            } else {
                for (int k = 0; k < 3; k++)
                    if (T[k]->sym[st[k]] != code[k]) return zr_fail(r, "final state does not decode the last sequence");
            }
            bw_put(&w, ll - LL_BASE[lc], LL_BITS[lc]);
            bw_put(&w, ml - ML_BASE[mc], ML_BITS[mc]);
            bw_put(&w, ofv - (1u << oc), oc);
        }
        bw_put(&w, st[T_ML], T[T_ML]->log);
        bw_put(&w, st[T_OF], T[T_OF]->log);
        bw_put(&w, st[T_LL], T[T_LL]->log);
        bw_close(&w);
    }
    r->pending = 0;
    return 0;
}

static int zr_step(ls_zsre *r)
{
    int rc;
    if ((rc = zr_frame(r))) return rc;
    switch (r->state) {
    case ZR_UNIT: {
        uint32_t u = rcd_direct(&r->in.rd, 2);
        if (u == U_END) { r->state = ZR_DONE; return zr_done(r, 1); }
        if (u == U_SKIP) {
            uint32_t nib = rcd_direct(&r->in.rd, 4);
            uint8_t hdr[4] = {(uint8_t)(0x50 | nib), 0x2A, 0x4D, 0x18};
            gb_append(&r->out, hdr, 4);
            size_t at = r->out.len;
            gb_append(&r->out, hdr, 4);   /* size, patched below */
            size_t n = dec_bytes(r, NULL, ZS_SKIP_MAX, 17, 1);
            if (!r->out.oom)
                for (int i = 0; i < 4; i++) r->out.p[at + (size_t)i] = (uint8_t)(n >> (8 * i));
            return zr_done(r, 1 + (uint32_t)n);
        }
        if (u != U_FRAME) return zr_fail(r, "bad unit in reconstruction data");
        uint8_t hdr[18] = {0x28, 0xB5, 0x2F, 0xFD};
        size_t n = dec_bytes(r, hdr + 4, 14, 5, 0);
        if (n < 1) return zr_fail(r, "bad frame header in reconstruction data");
        gb_append(&r->out, hdr, 4 + n);
        r->checksum = (hdr[4] >> 2) & 1;
        for (int k = 0; k < 3; k++) r->tab[k].valid = 0;
        r->hist.frame_start = r->pos;
        r->hist.rep[0] = 1; r->hist.rep[1] = 4; r->hist.rep[2] = 8;
        r->huf.valid = 0;
        r->state = ZR_BLOCK;
        return zr_done(r, 1);
    }
    case ZR_BLOCK: {
        uint32_t h = rcd_direct(&r->in.rd, 24);
        int last = h & 1, type = (h >> 1) & 3;
        uint32_t size = h >> 3;
        uint32_t units = 1;
        if (type == 2) {
            r->bh = h;
            r->preA_len = dec_bytes(r, r->preA, sizeof r->preA, 17, 0);
            r->preB_len = dec_bytes(r, r->preB, sizeof r->preB, 17, 0);
            uint32_t nbseq = 0;
            if (seq_count(r->preB, r->preB_len, &nbseq) < 0 || nbseq > ZS_SEQ_MAX)
                return zr_fail(r, "bad sequence count in reconstruction data");
            r->nbseq = nbseq;
            r->bsize = rcd_direct(&r->in.rd, 18);
            if (r->bsize > ZS_BLOCK_MAX) return zr_fail(r, "block size in reconstruction data too large");
            if (nbseq)
                for (int k = 0; k < 3; k++) r->seq[3 * nbseq + (uint32_t)k] = rcd_direct(&r->in.rd, 9);
            /* the sequences are decoded once the block's plaintext is here
             * (zr_emit_block), which also ends this event */
            r->units_pending = units + nbseq + (uint32_t)((r->preA_len + r->preB_len) / 8) + r->bsize / 256;
            r->seq_ready = 0;
            r->pending = 1;
        } else {
            if (type == 3 || size > ZS_BLOCK_MAX) return zr_fail(r, "bad block in reconstruction data");
            r->bh = h;
            r->pending = 2;   /* raw or RLE: its content comes from the plaintext */
            if ((rc = zr_done(r, units + size / 256))) return rc;
        }
        r->state = last ? (r->checksum ? ZR_CHECKSUM : ZR_UNIT) : ZR_BLOCK;
        return r->in.rd.bad ? zr_fail(r, "reconstruction data ends inside a frame") : 0;
    }
    case ZR_CHECKSUM: {
        uint32_t c = rcd_direct(&r->in.rd, 32);
        for (int i = 0; i < 4; i++) gb_put(&r->out, (uint8_t)(c >> (8 * i)));
        r->state = ZR_UNIT;
        return zr_done(r, 1);
    }
    }
    return 0;
}

/* Raw or RLE block waiting for its plaintext (pending == 2). */
static int zr_emit_simple(ls_zsre *r)
{
    uint32_t h = r->bh, size = h >> 3;
    int type = (h >> 1) & 3;
    if (r->hist.end - r->pos < size) {
        if (r->plain_end) return zr_fail(r, "plaintext ends inside a block");
        return LS_GZ_NEED_PLAIN;
    }
    for (int i = 0; i < 3; i++) gb_put(&r->out, (uint8_t)(h >> (8 * i)));
    const uint8_t *p = r->hist.buf + (r->pos - r->hist.base);
    if (type == 0) gb_append(&r->out, p, size);
    else gb_put(&r->out, size ? p[0] : 0);
    r->pos += size;
    r->pending = 0;
    return 0;
}

int ls_zsre_run(ls_zsre *r)
{
    for (;;) {
        if (r->in.side.oom || r->out.oom || r->lits.oom) return LS_GZ_ERR_NOMEM;
        if (r->state == ZR_ERROR) return LS_GZ_ERR_SIDE;
        if (r->out.len >= ZS_OUT_SOFT) return LS_GZ_OUTPUT;
        int rc;
        if (r->pending == 1) rc = zr_emit_block(r);
        else if (r->pending == 2) rc = zr_emit_simple(r);
        else if (r->state == ZR_DONE) {
            if (r->out.len) return LS_GZ_OUTPUT;
            if (r->hist.end != r->pos) return zr_fail(r, "plaintext longer than the rebuilt stream");
            if (!r->plain_end) return LS_GZ_NEED_PLAIN;
            return LS_GZ_DONE;
        } else rc = zr_step(r);
        if (rc) return rc;
    }
}

size_t ls_zsre_output(ls_zsre *r, const uint8_t **ptr) { *ptr = r->out.p; return r->out.len; }
void ls_zsre_output_taken(ls_zsre *r, size_t n) { gb_consume(&r->out, n); }
const char *ls_zsre_message(const ls_zsre *r) { return r->msg; }
