/* gzre.c: exact gzip reconstruction; see gzre.h for the design and
 * docs/format.md ("Reconstruction data for gzip blobs") for the coded form.
 *
 * Layout of this file: growable buffers, the range coder, Huffman tables
 * (RFC 1951, 3.2.2, 3.2.5-3.2.7), the plaintext model shared by both
 * directions, then the analyzer (inflate + code) and the rebuilder
 * (decode + deflate bit writer). */
#include "gzre.h"
#include "common.h"
#include "rangecoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WSIZE 32768u            /* deflate window (RFC 1951, 2.) */
#define MAXMATCH 258
#define H_BITS 16
#define P_MASK 0xFFFFu
#define CHAIN_STEPS 256
#define CTX_STEPS 8
#define RANK_ESC 63
#define FRAME_UNITS 65536u      /* a frame ends after the event that reaches this */
#define IN_CAP (1u << 21)
#define MARGIN 1100u            /* input bytes one step may read: a dynamic header is < 600 */
#define W_CAP (1u << 22)
#define EV_CAP 65536u
#define OUT_SOFT (1u << 18)
#define HDR_MAX 65535u

/* ---- deflate tables (RFC 1951, 3.2.5) --------------------------------- */

static const uint16_t LBASE[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                   35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LEXT[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t DBASE[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
                                   257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
                                   8193, 12289, 16385, 24577};
static const uint8_t DEXT[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
static const uint8_t CLORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

/* Length code index (0..28) of a match length 3..258; 258 is code 285. */
static int len_code(int len)
{
    if (len == 258) return 28;
    int c = 0;
    while (c < 27 && LBASE[c + 1] <= len) c++;
    return c;
}

static int dist_code(uint32_t d)
{
    uint32_t v = d - 1;
    if (v < 4) return (int)v;
    int nb = 31 - __builtin_clz(v);
    return 2 * nb + (int)((v >> (nb - 1)) & 1);
}

static uint32_t rev_bits(uint32_t v, int n)
{
    uint32_t r = 0;
    for (int i = 0; i < n; i++) { r = (r << 1) | (v & 1); v >>= 1; }
    return r;
}

/* A canonical Huffman code (RFC 1951, 3.2.2) over up to 320 symbols. */
#define FAST_BITS 10
typedef struct huff {
    uint16_t fast[1 << FAST_BITS];   /* (sym << 4) | len, or 0: slow path */
    uint16_t count[16];
    uint16_t sym[320];               /* symbols ordered by code */
    uint16_t code[320];              /* bit-reversed code per symbol (encoder) */
    uint8_t len[320];
    int n;
} huff;

/* Build from code lengths. kind: 0 code-length code, 1 literal/length,
 * 2 distance. Returns 0, or -1 for a set zlib refuses (over-subscribed;
 * incomplete unless a single code of length 1; no end-of-block code). */
static int huff_build(huff *h, const uint8_t *lens, int n, int kind)
{
    uint16_t offs[16];
    memset(h->count, 0, sizeof h->count);
    memset(h->fast, 0, sizeof h->fast);
    h->n = n;
    for (int s = 0; s < n; s++) { h->len[s] = lens[s]; h->count[lens[s]]++; }
    h->count[0] = 0;
    int left = 1, max = 0;
    for (int l = 1; l < 16; l++) {
        left <<= 1;
        left -= h->count[l];
        if (left < 0) return -1;
        if (h->count[l]) max = l;
    }
    if (left > 0) {
        if (kind == 0) return -1;
        if (max > 1) return -1;
    }
    if (kind == 1 && (n <= 256 || lens[256] == 0)) return -1;
    offs[1] = 0;
    for (int l = 1; l < 15; l++) offs[l + 1] = offs[l] + h->count[l];
    uint32_t next[16];
    next[1] = 0;
    for (int l = 2; l < 16; l++) next[l] = (next[l - 1] + h->count[l - 1]) << 1;
    for (int s = 0; s < n; s++) {
        int l = lens[s];
        h->code[s] = 0;
        if (!l) continue;
        h->sym[offs[l]++] = (uint16_t)s;
        uint32_t r = rev_bits(next[l]++, l);
        h->code[s] = (uint16_t)r;
        if (l <= FAST_BITS)
            for (uint32_t k = r; k < (1u << FAST_BITS); k += 1u << l) h->fast[k] = (uint16_t)((s << 4) | l);
    }
    return 0;
}

/* One bit of a canonical decode, first code bit first (RFC 1951, 3.2.2):
 * 1 with *sym set when the bits so far are a whole code of length l. */
typedef struct hdec { int code, first, index; } hdec;

static int huff_bit(const huff *h, hdec *d, int l, uint32_t bit, int *sym)
{
    d->code |= (int)bit;
    int count = h->count[l];
    if (d->code - count < d->first) { *sym = h->sym[d->index + (d->code - d->first)]; return 1; }
    d->index += count;
    d->first = (d->first + count) << 1;
    d->code <<= 1;
    return 0;
}

/* ---- bit reader over a byte array (dynamic headers) -------------------- */

typedef struct bitrd { const uint8_t *p; size_t nbits, pos; } bitrd;

static int br_bits(bitrd *b, int n, uint32_t *v)
{
    if (b->pos + (size_t)n > b->nbits) return -1;
    uint32_t r = 0;
    for (int i = 0; i < n; i++, b->pos++) r |= (uint32_t)((b->p[b->pos >> 3] >> (b->pos & 7)) & 1) << i;
    *v = r;
    return 0;
}

static int br_sym(bitrd *b, const huff *h, int *sym)
{
    hdec d = {0, 0, 0};
    for (int l = 1; l < 16; l++) {
        uint32_t bit;
        if (br_bits(b, 1, &bit)) return -2;
        if (huff_bit(h, &d, l, bit, sym)) return 0;
    }
    return -1;
}

/* Parse a dynamic block header (RFC 1951, 3.2.7) starting at bit 0 of b.
 * Fills lit/dist codes. Returns 0, -1 invalid, -2 truncated. */
static int parse_dynamic(bitrd *b, huff *lit, huff *dist)
{
    uint32_t hlit, hdist, hclen, v;
    if (br_bits(b, 5, &hlit) || br_bits(b, 5, &hdist) || br_bits(b, 4, &hclen)) return -2;
    hlit += 257; hdist += 1; hclen += 4;
    if (hlit > 286 || hdist > 30) return -1;
    uint8_t cl[19] = {0}, lens[320];
    for (uint32_t i = 0; i < hclen; i++) {
        if (br_bits(b, 3, &v)) return -2;
        cl[CLORDER[i]] = (uint8_t)v;
    }
    huff clh;
    if (huff_build(&clh, cl, 19, 0)) return -1;
    uint32_t n = 0;
    while (n < hlit + hdist) {
        int s, rc = br_sym(b, &clh, &s);
        if (rc) return rc;
        if (s < 16) { lens[n++] = (uint8_t)s; continue; }
        uint32_t rep;
        uint8_t val = 0;
        if (s == 16) {
            if (n == 0) return -1;
            val = lens[n - 1];
            if (br_bits(b, 2, &rep)) return -2;
            rep += 3;
        } else if (s == 17) {
            if (br_bits(b, 3, &rep)) return -2;
            rep += 3;
        } else {
            if (br_bits(b, 7, &rep)) return -2;
            rep += 11;
        }
        if (n + rep > hlit + hdist) return -1;
        while (rep--) lens[n++] = val;
    }
    if (huff_build(lit, lens, (int)hlit, 1)) return -1;
    if (huff_build(dist, lens + hlit, (int)hdist, 2)) return -1;
    return 0;
}

static void fixed_tables(huff *lit, huff *dist)
{
    uint8_t l[288], d[32];   /* distance codes 30 and 31 complete the code; they are invalid in data */
    for (int i = 0; i < 144; i++) l[i] = 8;
    for (int i = 144; i < 256; i++) l[i] = 9;
    for (int i = 256; i < 280; i++) l[i] = 7;
    for (int i = 280; i < 288; i++) l[i] = 8;
    for (int i = 0; i < 32; i++) d[i] = 5;
    huff_build(lit, l, 288, 1);
    huff_build(dist, d, 32, 2);
}

/* ---- CRC-32 (RFC 1952, 8.) slice-by-8 ---------------------------------- */

static uint32_t crc_tab[8][256];
static int crc_ready;

static void crc_init(void)
{
    if (__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE)) return;
    static uint32_t t[8][256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        t[0][i] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int i = 0; i < 256; i++) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
    memcpy(crc_tab, t, sizeof t);   /* identical bytes whichever thread wins */
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n >= 8) {
        uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t b = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        crc = crc_tab[7][a & 0xFF] ^ crc_tab[6][(a >> 8) & 0xFF] ^ crc_tab[5][(a >> 16) & 0xFF] ^
              crc_tab[4][a >> 24] ^ crc_tab[3][b & 0xFF] ^ crc_tab[2][(b >> 8) & 0xFF] ^
              crc_tab[1][(b >> 16) & 0xFF] ^ crc_tab[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_tab[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ---- the plaintext model ---------------------------------------------- */

typedef struct model {
    uint32_t head[1u << H_BITS];   /* (position + 1) mod 2^32 of the newest insert per hash, 0: none */
    uint32_t prev[P_MASK + 1];     /* (position + 1) mod 2^32 of the previous insert with the same hash */
    uint64_t ins;                  /* next position to insert */
    uint16_t p_eob[2], p_flag[2][6], p_rank[64], p_d0[2], p_dt[256], p_any[1], p_anyrank[256];
    int prev_match;
} model;

/* The plaintext window: bytes [base, end) at w[0 ..). */
typedef struct win { uint8_t *w; uint64_t base, end; } win;

static void model_init(model *m)
{
    memset(m->head, 0, sizeof m->head);
    memset(m->prev, 0, sizeof m->prev);
    m->ins = 0;
    m->prev_match = 0;
    uint16_t *all[] = {m->p_eob, &m->p_flag[0][0], m->p_rank, m->p_d0, m->p_dt, m->p_any, m->p_anyrank};
    size_t cnt[] = {2, 12, 64, 2, 256, 1, 256};
    for (int k = 0; k < 7; k++)
        for (size_t i = 0; i < cnt[k]; i++) all[k][i] = PROB_INIT;
}

static inline uint32_t hash3(const uint8_t *s)
{
    uint32_t v = ((uint32_t)s[0] << 16) | ((uint32_t)s[1] << 8) | s[2];
    return (v * 2654435761u) >> (32 - H_BITS);
}

/* Insert every position before p that can be a match source for p or
 * later (within the window, with 3 bytes known). */
static void model_catch_up(model *m, const win *W, uint64_t p)
{
    uint64_t q = m->ins;
    if (p > WSIZE && q < p - WSIZE) q = p - WSIZE;
    for (; q < p && q + 2 < W->end; q++) {
        uint32_t h = hash3(W->w + (q - W->base));
        m->prev[q & P_MASK] = m->head[h];
        m->head[h] = (uint32_t)(q + 1);
    }
    if (q < p) q = p;   /* the last two bytes of the plaintext: no 3-byte hash */
    m->ins = q;
}

/* A chain link is (position + 1) mod 2^32; its distance from p is
 * (p + 1 - link) mod 2^32, which must grow along the chain and stay within
 * the window (and inside the buffer) or the walk ends. */
typedef struct walk { uint32_t link, dist, stop; int best, steps, limit; } walk;

static void walk_start(const model *m, const win *W, uint64_t p, walk *wk, int limit)
{
    wk->link = (p + 2 < W->end) ? m->head[hash3(W->w + (p - W->base))] : 0;
    wk->dist = 0;
    wk->stop = UINT32_MAX;   /* an encoder looking for one distance stops past it */
    wk->best = 2;
    wk->steps = 0;
    wk->limit = limit;
}

/* Length of the common prefix of c and s, at most maxlen. */
static inline int match_bytes(const uint8_t *c, const uint8_t *s, int maxlen)
{
    int l = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (l + 8 <= maxlen) {
        uint64_t x, y;
        memcpy(&x, c + l, 8);
        memcpy(&y, s + l, 8);
        if (x != y) return l + (__builtin_ctzll(x ^ y) >> 3);
        l += 8;
    }
#endif
    while (l < maxlen && c[l] == s[l]) l++;
    return l;
}

static int max_len(const win *W, uint64_t p)
{
    uint64_t avail = W->end - p;
    return avail < MAXMATCH ? (int)avail : MAXMATCH;
}

/* Next chain position of p whose match is longer than every newer one:
 * returns 1 with its distance and match length, 0 when there is none. */
static int walk_next(const model *m, const win *W, uint64_t p, walk *wk, uint32_t *dist, int *len)
{
    int maxlen = max_len(W, p);
    const uint8_t *s = W->w + (p - W->base);
    while (wk->link && wk->steps < wk->limit && wk->best < maxlen) {
        uint32_t d = (uint32_t)(p + 1) - wk->link;
        if (d <= wk->dist || d > wk->stop || d > WSIZE || d > p - W->base) { wk->link = 0; return 0; }
        uint64_t q = p - d;
        wk->dist = d;
        wk->link = m->prev[q & P_MASK];
        wk->steps++;
        const uint8_t *c = W->w + (q - W->base);
        int b = wk->best;
        if (c[b] != s[b]) continue;
        int l = match_bytes(c, s, maxlen);
        if (l > b) {
            wk->best = l;
            *dist = d;
            *len = l;
            return 1;
        }
    }
    return 0;
}

/* Flag context of p: -1 when no chain position is in the window (a match
 * is impossible), else 0..5 from the longest match among the first few. */
static int flag_ctx(const model *m, const win *W, uint64_t p)
{
    if (p + 2 >= W->end) return -1;
    uint32_t h = m->head[hash3(W->w + (p - W->base))];
    uint32_t hd = (uint32_t)(p + 1) - h;
    if (!h || hd == 0 || hd > WSIZE || hd > p - W->base) return -1;
    walk wk;
    uint32_t d;
    int l, best = 0;
    walk_start(m, W, p, &wk, CTX_STEPS);
    while (walk_next(m, W, p, &wk, &d, &l)) best = l;
    return best < 3 ? 0 : best == 3 ? 1 : best <= 5 ? 2 : best <= 8 ? 3 : best <= 32 ? 4 : 5;
}

static int common_len(const win *W, uint64_t p, uint32_t dist)
{
    int maxlen = max_len(W, p);
    const uint8_t *s = W->w + (p - W->base);
    return match_bytes(s - dist, s, maxlen);
}

#define ANY_STEPS 64

/* Second tier for a distance that is not a record: its index among the
 * chain positions of p whose first three bytes match p's, newest first (at
 * most ANY_STEPS steps). With `find`: the index of `find`, or -1.
 * Otherwise: the distance of the n-th such position, or 0. */
static int any_index(const model *m, const win *W, uint64_t p, uint32_t find, int n)
{
    if (p + 2 >= W->end) return find ? -1 : 0;
    const uint8_t *s = W->w + (p - W->base);
    uint32_t link = m->head[hash3(s)], last = 0;
    int idx = 0;
    for (int steps = 0; link && steps < ANY_STEPS; steps++) {
        uint32_t d = (uint32_t)(p + 1) - link;
        if (d <= last || (find && d > find) || d > WSIZE || d > p - W->base) break;
        last = d;
        link = m->prev[(p - d) & P_MASK];
        const uint8_t *c = s - d;
        if (c[0] != s[0] || c[1] != s[1] || c[2] != s[2]) continue;
        if (find ? d == find : idx == n) return find ? idx : (int)d;
        if (++idx > 255) break;
    }
    return find ? -1 : 0;
}

/* Code a token at p: len 0 for a literal. Returns 0, or -1 when the model
 * cannot express it. */
static int model_encode(model *m, const win *W, rc_enc *e, uint64_t p, int len, uint32_t dist)
{
    model_catch_up(m, W, p);
    rce_bit(e, &m->p_eob[m->prev_match], 0);
    int ctx = flag_ctx(m, W, p);
    if (ctx < 0) {
        if (len) return -1;
        m->prev_match = 0;
        return 0;
    }
    rce_bit(e, &m->p_flag[m->prev_match][ctx], len != 0);
    m->prev_match = len != 0;
    if (!len) return 0;
    walk wk;
    uint32_t d;
    int l, rank = 0, found = 0;
    walk_start(m, W, p, &wk, CHAIN_STEPS);
    wk.stop = dist;   /* the same rank as a full walk: a farther record cannot be it */
    while (rank < RANK_ESC && walk_next(m, W, p, &wk, &d, &l)) {
        if (d == dist) { found = 1; break; }
        rank++;
    }
    if (!found) {
        rank = RANK_ESC;
        if (dist > p - W->base || dist > WSIZE) return -1;
        l = common_len(W, p, dist);
    }
    rce_tree(e, m->p_rank, 6, (uint32_t)rank);
    if (rank == RANK_ESC) {
        int any = any_index(m, W, p, dist, 0);
        rce_bit(e, m->p_any, any >= 0);
        if (any >= 0) rce_tree(e, m->p_anyrank, 8, (uint32_t)any);
        else rce_direct(e, dist - 1, 15);
    }
    int delta = l - len;
    if (delta < 0 || delta > 255) return -1;
    rce_bit(e, &m->p_d0[rank != 0], delta != 0);
    if (delta) rce_tree(e, m->p_dt, 8, (uint32_t)(delta - 1));
    return 0;
}

static void model_encode_eob(model *m, rc_enc *e)
{
    rce_bit(e, &m->p_eob[m->prev_match], 1);
}

/* Decode the event at p: returns 1 end of block, 0 token (*len 0 for a
 * literal), -1 bad data. */
static int model_decode(model *m, const win *W, rc_dec *dc, uint64_t p, int *len, uint32_t *dist)
{
    model_catch_up(m, W, p);
    if (rcd_bit(dc, &m->p_eob[m->prev_match])) return 1;
    *len = 0;
    int ctx = flag_ctx(m, W, p);
    if (ctx < 0) {
        if (p >= W->end) return -1;
        m->prev_match = 0;
        return 0;
    }
    int is_match = rcd_bit(dc, &m->p_flag[m->prev_match][ctx]);
    m->prev_match = is_match;
    if (!is_match) return p < W->end ? 0 : -1;
    int rank = (int)rcd_tree(dc, m->p_rank, 6), l = 0;
    uint32_t d = 0;
    if (rank == RANK_ESC) {
        if (rcd_bit(dc, m->p_any)) {
            d = (uint32_t)any_index(m, W, p, 0, (int)rcd_tree(dc, m->p_anyrank, 8));
            if (!d) return -1;
        } else {
            d = rcd_direct(dc, 15) + 1;
        }
        if (d > p - W->base) return -1;
        l = common_len(W, p, d);
    } else {
        walk wk;
        walk_start(m, W, p, &wk, CHAIN_STEPS);
        for (int r = 0; r <= rank; r++)
            if (!walk_next(m, W, p, &wk, &d, &l)) return -1;
    }
    int delta = 0;
    if (rcd_bit(dc, &m->p_d0[rank != 0])) delta = (int)rcd_tree(dc, m->p_dt, 8) + 1;
    l -= delta;
    if (l < 3) return -1;
    *len = l;
    *dist = d;
    return 0;
}

/* ---- analyzer ---------------------------------------------------------- */

enum { EV_MEMBER, EV_BLOCK, EV_LIT, EV_MATCH, EV_EOB, EV_END };
typedef struct event { uint8_t type, a, b, c; uint32_t len, dist, aux, auxlen; uint64_t pos; } event;

enum { A_MEMBER, A_BLOCK, A_STORED, A_HUFF, A_TRAILER, A_AFTER, A_DONE, A_ERROR };

struct ls_gzan {
    uint8_t *in;
    size_t in_pos, in_len;
    uint64_t in_base;          /* compressed offset of in[0] */
    int in_end;
    uint64_t bitbuf;
    unsigned bitcnt;
    int phase, bfinal;
    uint32_t stored_left;
    huff lit, dist;
    win W;                     /* plaintext; W.end is the inflate position */
    uint64_t taken, crc_pos;
    uint32_t crc;
    uint64_t member_start;     /* plaintext offset where the member began */
    event *ev;
    size_t ev_head, ev_len;
    gbuf aux;
    size_t aux_dead;           /* leading aux bytes of events already coded */
    model *m;
    uint64_t mpos;             /* the model's plaintext position */
    rc_out o;
    int exact;
    uint64_t members, err_off;
    char msg[160];
};

static int an_fail(ls_gzan *a, const char *what)
{
    if (a->phase != A_ERROR) {
        a->phase = A_ERROR;
        a->err_off = a->in_base + a->in_pos - a->bitcnt / 8;
        memcpy(a->msg, what, ls_min_size(strlen(what) + 1, sizeof a->msg - 1));
        a->msg[sizeof a->msg - 1] = 0;
    }
    return LS_GZ_ERR_FORMAT;
}

static void an_inexact(ls_gzan *a, const char *what)
{
    if (!a->exact) return;
    a->exact = 0;
    a->err_off = a->in_base + a->in_pos - a->bitcnt / 8;
    memcpy(a->msg, what, ls_min_size(strlen(what) + 1, sizeof a->msg - 1));
    a->msg[sizeof a->msg - 1] = 0;
    a->ev_len = 0;
    a->aux.len = 0;
    a->aux_dead = 0;
}

ls_gzan *ls_gzan_new(void)
{
    crc_init();
    ls_gzan *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->in = malloc(IN_CAP + MARGIN);
    a->W.w = malloc(W_CAP);
    a->ev = malloc(EV_CAP * sizeof(event));
    a->m = malloc(sizeof(model));
    if (!a->in || !a->W.w || !a->ev || !a->m) { ls_gzan_free(a); return NULL; }
    model_init(a->m);
    a->exact = 1;
    a->phase = A_MEMBER;
    return a;
}

void ls_gzan_free(ls_gzan *a)
{
    if (!a) return;
    free(a->in); free(a->W.w); free(a->ev); free(a->m);
    free(a->aux.p); free(a->o.frame.p); free(a->o.side.p);
    free(a);
}

size_t ls_gzan_input(ls_gzan *a, const uint8_t *data, size_t n)
{
    if (a->in_end) return 0;
    /* keep 8 bytes before in_pos: the bit buffer may be rewound into them */
    size_t keep = a->in_pos > 8 ? a->in_pos - 8 : 0;
    if (keep) {
        memmove(a->in, a->in + keep, a->in_len - keep);
        a->in_len -= keep;
        a->in_pos -= keep;
        a->in_base += keep;
    }
    size_t room = IN_CAP - a->in_len;
    if (n > room) n = room;
    memcpy(a->in + a->in_len, data, n);
    a->in_len += n;
    return n;
}

void ls_gzan_input_end(ls_gzan *a) { a->in_end = 1; }

static size_t avail_bytes(const ls_gzan *a) { return a->in_len - a->in_pos + a->bitcnt / 8; }

static void refill(ls_gzan *a)
{
    while (a->bitcnt <= 56 && a->in_pos < a->in_len) {
        a->bitbuf |= (uint64_t)a->in[a->in_pos++] << a->bitcnt;
        a->bitcnt += 8;
    }
}

static int getbits(ls_gzan *a, unsigned n, uint32_t *v)
{
    if (a->bitcnt < n) refill(a);
    if (a->bitcnt < n) return -1;
    *v = (uint32_t)(a->bitbuf & ((1ull << n) - 1));
    a->bitbuf >>= n;
    a->bitcnt -= n;
    return 0;
}

/* Absolute bit position in the input buffer, and seeking to one. */
static size_t bitpos(const ls_gzan *a) { return a->in_pos * 8 - a->bitcnt; }

static void seek_bit(ls_gzan *a, size_t pos)
{
    a->in_pos = pos >> 3;
    a->bitbuf = 0;
    a->bitcnt = 0;
    if (pos & 7) {
        a->bitbuf = a->in[a->in_pos++] >> (pos & 7);
        a->bitcnt = 8 - (unsigned)(pos & 7);
    }
}

static int decode_sym(ls_gzan *a, const huff *h, int *sym)
{
    if (a->bitcnt < 15) refill(a);
    uint16_t e = h->fast[a->bitbuf & ((1u << FAST_BITS) - 1)];
    if (e && (e & 15) <= a->bitcnt) {
        a->bitbuf >>= e & 15;
        a->bitcnt -= e & 15;
        *sym = e >> 4;
        return 0;
    }
    hdec d = {0, 0, 0};
    for (int l = 1; l < 16; l++) {
        uint32_t bit;
        if (getbits(a, 1, &bit)) return -1;
        if (huff_bit(h, &d, l, bit, sym)) return 0;
    }
    return -1;
}

static event *push_ev(ls_gzan *a, int type)
{
    event *e = &a->ev[(a->ev_head + a->ev_len) % EV_CAP];
    memset(e, 0, sizeof *e);
    e->type = (uint8_t)type;
    e->pos = a->W.end;
    if (a->exact) a->ev_len++;
    return e;
}

static void push_aux(ls_gzan *a, event *e, const uint8_t *d, size_t n)
{
    if (!a->exact) return;
    e->aux = (uint32_t)a->aux.len;
    e->auxlen = (uint32_t)n;
    gb_append(&a->aux, d, n);
}

/* Make room for n more plaintext bytes; 0 when there is none now. */
static int win_room(ls_gzan *a, size_t n)
{
    win *W = &a->W;
    if (W->end - W->base + n <= W_CAP) return 1;
    uint64_t keep = a->taken;
    uint64_t low = a->mpos > WSIZE ? a->mpos - WSIZE : 0;
    if (a->exact && low < keep) keep = low;
    if (W->end > WSIZE && W->end - WSIZE < keep) keep = W->end - WSIZE;
    if (a->crc_pos < keep) {
        a->crc = crc_update(a->crc, W->w + (a->crc_pos - W->base), (size_t)(keep - a->crc_pos));
        a->crc_pos = keep;
    }
    if (keep > W->base) {
        memmove(W->w, W->w + (keep - W->base), (size_t)(W->end - keep));
        W->base = keep;
    }
    return W->end - W->base + n <= W_CAP;
}

static int parse_member_header(ls_gzan *a)
{
    /* the header is byte-aligned: the bit buffer is empty here */
    const uint8_t *h = a->in + a->in_pos;
    size_t n = a->in_len - a->in_pos;
    if (n < 10) return a->in_end ? an_fail(a, "truncated gzip member header") : LS_GZ_NEED_INPUT;
    if (h[0] != 0x1f || h[1] != 0x8b) return an_fail(a, "not a gzip member (bad magic)");
    if (h[2] != 8) return an_fail(a, "gzip member: compression method is not deflate");
    uint8_t flg = h[3];
    if (flg & 0xE0) return an_fail(a, "gzip member: reserved flag bits set");
    size_t p = 10;
    if (flg & 4) {
        if (n < p + 2) goto more;
        p += 2 + (size_t)(h[p] | h[p + 1] << 8);
    }
    for (int bit = 8; bit <= 16; bit <<= 1) {
        if (!(flg & bit)) continue;
        while (p < n && h[p]) p++;
        if (p >= n) goto more;
        p++;
    }
    if (flg & 2) p += 2;
    if (p > n) goto more;
    if (p > HDR_MAX) an_inexact(a, "gzip member header longer than 65535 bytes");
    event *e = push_ev(a, EV_MEMBER);
    push_aux(a, e, h, p);
    a->in_pos += p;
    a->members++;
    a->member_start = a->W.end;
    a->crc = 0;
    a->crc_pos = a->W.end;
    a->phase = A_BLOCK;
    return 0;
more:
    if (a->in_end) return an_fail(a, "truncated gzip member header");
    if (n >= IN_CAP - 16) return an_fail(a, "gzip member header too long");
    return LS_GZ_NEED_INPUT;
}

static int parse_block_header(ls_gzan *a)
{
    uint32_t v;
    if (getbits(a, 3, &v)) return an_fail(a, "truncated deflate block header");
    a->bfinal = v & 1;
    int type = (int)(v >> 1);
    event *e = push_ev(a, EV_BLOCK);
    e->a = (uint8_t)a->bfinal;
    e->b = (uint8_t)type;
    if (type == 0) {
        unsigned pad = a->bitcnt & 7;
        uint32_t padval = 0, ln, nln;
        if (pad && getbits(a, pad, &padval)) return an_fail(a, "truncated stored block");
        if (getbits(a, 16, &ln) || getbits(a, 16, &nln)) return an_fail(a, "truncated stored block");
        if ((ln ^ 0xFFFF) != nln) return an_fail(a, "stored block length does not match its complement");
        e->c = (uint8_t)pad;
        e->dist = padval;
        e->len = ln;
        a->stored_left = ln;
        /* hand the whole bytes left in the bit buffer back to the input */
        seek_bit(a, bitpos(a));
        a->phase = A_STORED;
        return 0;
    }
    if (type == 1) {
        fixed_tables(&a->lit, &a->dist);
        a->phase = A_HUFF;
        return 0;
    }
    if (type == 3) return an_fail(a, "invalid deflate block type 3");
    size_t start = bitpos(a);
    size_t have = (a->in_len * 8 - start) / 8;
    size_t take = have < MARGIN - 8 ? have : MARGIN - 8;
    uint8_t tmp[MARGIN];
    size_t sh = start & 7, b0 = start >> 3;
    for (size_t k = 0; k < take; k++) {
        unsigned lo = a->in[b0 + k] >> sh;
        unsigned hi = (b0 + k + 1 < a->in_len) ? (unsigned)a->in[b0 + k + 1] << (8 - sh) : 0;
        tmp[k] = (uint8_t)(sh ? (lo | hi) : a->in[b0 + k]);
    }
    bitrd br = {tmp, take * 8, 0};
    int rc = parse_dynamic(&br, &a->lit, &a->dist);
    if (rc == -2) return an_fail(a, "truncated dynamic block header");
    if (rc) return an_fail(a, "invalid dynamic Huffman tables");
    size_t nb = br.pos;
    size_t nbytes = (nb + 7) / 8;
    if (nb & 7) tmp[nbytes - 1] &= (uint8_t)((1u << (nb & 7)) - 1);
    e->len = (uint32_t)nb;
    push_aux(a, e, tmp, nbytes);
    seek_bit(a, start + nb);
    a->phase = A_HUFF;
    return 0;
}

static int inflate_huff(ls_gzan *a)
{
    win *W = &a->W;
    for (;;) {
        if (!a->in_end && avail_bytes(a) < 16) return LS_GZ_NEED_INPUT;
        if (a->ev_len >= EV_CAP - 8) return 0;
        if (W->end - a->taken >= (1u << 20) || !win_room(a, MAXMATCH)) return LS_GZ_OUTPUT;
        int sym;
        if (decode_sym(a, &a->lit, &sym))
            return an_fail(a, a->in_end ? "truncated deflate data" : "invalid literal/length code");
        if (sym < 256) {
            if (a->exact) push_ev(a, EV_LIT);
            W->w[W->end++ - W->base] = (uint8_t)sym;
            continue;
        }
        if (sym == 256) {
            push_ev(a, EV_EOB);
            a->phase = a->bfinal ? A_TRAILER : A_BLOCK;
            return 0;
        }
        sym -= 257;
        if (sym >= 29) return an_fail(a, "invalid literal/length code");
        uint32_t extra = 0, dextra = 0;
        if (LEXT[sym] && getbits(a, LEXT[sym], &extra)) return an_fail(a, "truncated deflate data");
        int len = LBASE[sym] + (int)extra;
        if (sym == 27 && extra == 31) an_inexact(a, "length 258 written with code 284");
        int ds;
        if (decode_sym(a, &a->dist, &ds) || ds >= 30) return an_fail(a, "invalid distance code");
        if (DEXT[ds] && getbits(a, DEXT[ds], &dextra)) return an_fail(a, "truncated deflate data");
        uint32_t dist = DBASE[ds] + dextra;
        if (dist > W->end - a->member_start) return an_fail(a, "distance too far back");
        if (a->exact) {
            event *e = push_ev(a, EV_MATCH);
            e->len = (uint32_t)len;
            e->dist = dist;
        }
        uint8_t *o = W->w + (W->end - W->base);
        const uint8_t *s = o - dist;
        for (int i = 0; i < len; i++) o[i] = s[i];
        W->end += (uint64_t)len;
    }
}

static int copy_stored(ls_gzan *a)
{
    win *W = &a->W;
    while (a->stored_left) {
        size_t n = a->in_len - a->in_pos;
        if (n == 0) return a->in_end ? an_fail(a, "truncated stored block") : LS_GZ_NEED_INPUT;
        if (n > a->stored_left) n = a->stored_left;
        if (n > 65536) n = 65536;
        if (W->end - a->taken >= (1u << 20)) return LS_GZ_OUTPUT;
        if (!win_room(a, n)) {
            if (!win_room(a, 1)) return LS_GZ_OUTPUT;
            n = 1;
        }
        memcpy(W->w + (W->end - W->base), a->in + a->in_pos, n);
        a->in_pos += n;
        W->end += n;
        a->stored_left -= (uint32_t)n;
    }
    a->phase = a->bfinal ? A_TRAILER : A_BLOCK;
    return 0;
}

static int parse_trailer(ls_gzan *a)
{
    unsigned pad = a->bitcnt & 7;
    if (a->bitcnt + 8 * (a->in_len - a->in_pos) < pad + 64) return an_fail(a, "truncated gzip member trailer");
    uint32_t padval = 0;
    if (pad) getbits(a, pad, &padval);
    uint8_t t[8];
    for (int i = 0; i < 8; i++) {
        uint32_t v;
        getbits(a, 8, &v);
        t[i] = (uint8_t)v;
    }
    seek_bit(a, bitpos(a));
    win *W = &a->W;
    a->crc = crc_update(a->crc, W->w + (a->crc_pos - W->base), (size_t)(W->end - a->crc_pos));
    a->crc_pos = W->end;
    uint32_t crc = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    uint32_t isz = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    if (crc != a->crc) return an_fail(a, "gzip member CRC-32 does not match its data");
    if (isz != (uint32_t)(W->end - a->member_start)) return an_fail(a, "gzip member size (ISIZE) does not match its data");
    event *e = push_ev(a, EV_END);   /* e->b: 0 until after_member knows whether a member follows */
    e->c = (uint8_t)pad;
    e->dist = padval;
    push_aux(a, e, t, 8);
    a->phase = A_AFTER;
    return 0;
}

static int after_member(ls_gzan *a)
{
    size_t n = a->in_len - a->in_pos;
    if (n < 2 && !a->in_end) return LS_GZ_NEED_INPUT;
    event *last = a->ev_len ? &a->ev[(a->ev_head + a->ev_len - 1) % EV_CAP] : NULL;
    if (last && last->type != EV_END) last = NULL;
    if (last) last->b = 1;
    if (n == 0) {
        a->phase = A_DONE;
        return 0;
    }
    if (n >= 2 && a->in[a->in_pos] == 0x1f && a->in[a->in_pos + 1] == 0x8b) {
        if (last) last->a = 1;   /* another member follows */
        a->phase = A_MEMBER;
        return 0;
    }
    for (size_t i = a->in_pos; i < a->in_len; i++)
        if (a->in[i]) return an_fail(a, "bytes after the last gzip member");
    an_inexact(a, "zero padding after the last gzip member");
    a->in_pos = a->in_len;
    if (a->in_end) a->phase = A_DONE;
    return a->in_end ? 0 : LS_GZ_NEED_INPUT;
}

/* ---- analyzer: coding the events -------------------------------------- */

static void code_bytes(rc_enc *e, const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) rce_direct(e, d[i], 8);
}

/* Code queued events while the model has the lookahead it needs. */
static void code_events(ls_gzan *a)
{
    int final = a->phase == A_DONE;
    while (a->ev_len && a->exact) {
        event *e = &a->ev[a->ev_head];
        if ((e->type == EV_LIT || e->type == EV_MATCH) && !final && a->W.end < e->pos + MAXMATCH) break;
        if (e->type == EV_END && !e->b && !final) break;
        rc_enc *rc = rco_event(&a->o);
        const uint8_t *aux = a->aux.p + e->aux;
        uint32_t units = 1;
        a->mpos = e->pos;
        switch (e->type) {
        case EV_MEMBER:
            rce_direct(rc, e->auxlen, 16);
            code_bytes(rc, aux, e->auxlen);
            units += e->auxlen;
            break;
        case EV_BLOCK:
            rce_direct(rc, e->a, 1);
            rce_direct(rc, e->b, 2);
            if (e->b == 0) {
                rce_direct(rc, e->dist, e->c);
                rce_direct(rc, e->len, 16);
                a->mpos = e->pos + e->len;
                units += e->len / 256;
            } else if (e->b == 2) {
                rce_direct(rc, e->len, 13);
                for (uint32_t i = 0; i < e->len; i++) rce_direct(rc, (aux[i >> 3] >> (i & 7)) & 1, 1);
                units += e->len / 8;
            }
            break;
        case EV_LIT:
        case EV_MATCH:
            if (model_encode(a->m, &a->W, rc, e->pos, e->type == EV_MATCH ? (int)e->len : 0, e->dist)) {
                an_inexact(a, "a match the model cannot name");
                return;
            }
            a->mpos = e->pos + (e->type == EV_MATCH ? e->len : 1);
            break;
        case EV_EOB:
            model_encode_eob(a->m, rc);
            break;
        case EV_END:
            rce_direct(rc, e->dist, e->c);
            code_bytes(rc, aux, 8);
            rce_direct(rc, e->a, 1);
            units += 8;
            break;
        }
        a->ev_head = (a->ev_head + 1) % EV_CAP;
        a->ev_len--;
        a->aux_dead += e->auxlen;
        rco_done(&a->o, units, FRAME_UNITS);
    }
    if (!a->ev_len) {
        a->aux.len = 0;
        a->aux_dead = 0;
    } else if (a->aux_dead > 65536 && 2 * a->aux_dead > a->aux.len) {
        /* events append their aux bytes in order: the coded ones are a prefix */
        gb_consume(&a->aux, a->aux_dead);
        for (size_t i = 0; i < a->ev_len; i++) {
            event *q = &a->ev[(a->ev_head + i) % EV_CAP];
            if (q->auxlen) q->aux -= (uint32_t)a->aux_dead;
        }
        a->aux_dead = 0;
    }
    if (final && a->exact && !a->ev_len) rco_end(&a->o);
}

int ls_gzan_run(ls_gzan *a)
{
    for (;;) {
        if (a->aux.oom || a->o.frame.oom || a->o.side.oom) return LS_GZ_ERR_NOMEM;
        if (a->phase == A_ERROR) return LS_GZ_ERR_FORMAT;
        if (a->exact && a->ev_len >= EV_CAP - 8) {
            code_events(a);
            /* still full: its head waits for plaintext lookahead that this
             * many blocks, members or end-of-blocks have not given */
            if (a->ev_len >= EV_CAP - 8)
                an_inexact(a, "over 65,000 blocks or members within 258 bytes of plaintext");
        }
        int rc = 0;
        switch (a->phase) {
        case A_MEMBER:
            if (a->in_len - a->in_pos == 0 && a->in_end && a->members == 0)
                return an_fail(a, "empty gzip stream");
            rc = parse_member_header(a);
            break;
        case A_BLOCK:
            if (!a->in_end && avail_bytes(a) < MARGIN) { rc = LS_GZ_NEED_INPUT; break; }
            if (a->ev_len >= EV_CAP - 8) { rc = 0; break; }
            rc = parse_block_header(a);
            break;
        case A_STORED:
            rc = copy_stored(a);
            break;
        case A_HUFF:
            rc = inflate_huff(a);
            break;
        case A_TRAILER:
            if (!a->in_end && avail_bytes(a) < 16) { rc = LS_GZ_NEED_INPUT; break; }
            rc = parse_trailer(a);
            break;
        case A_AFTER:
            rc = after_member(a);
            break;
        case A_DONE:
            code_events(a);
            return (a->W.end > a->taken || a->o.side.len) ? LS_GZ_OUTPUT : LS_GZ_DONE;
        }
        size_t before = a->ev_len;
        code_events(a);
        if (rc < 0 || rc == LS_GZ_NEED_INPUT) return rc;
        if (rc == LS_GZ_OUTPUT) {
            if (a->W.end > a->taken || a->o.side.len) return rc;
            if (a->ev_len == before) {
                snprintf(a->msg, sizeof a->msg, "internal: plaintext window cannot advance");
                return LS_GZ_ERR_NOMEM;
            }
        }
    }
}

size_t ls_gzan_plain(ls_gzan *a, const uint8_t **ptr)
{
    *ptr = a->W.w + (a->taken - a->W.base);
    return (size_t)(a->W.end - a->taken);
}

void ls_gzan_plain_taken(ls_gzan *a, size_t n)
{
    if (n > a->W.end - a->taken) n = (size_t)(a->W.end - a->taken);
    a->taken += n;
}

size_t ls_gzan_side(ls_gzan *a, const uint8_t **ptr)
{
    *ptr = a->o.side.p;
    return a->o.side.len;
}

void ls_gzan_side_taken(ls_gzan *a, size_t n) { gb_consume(&a->o.side, n); }
int ls_gzan_exact(const ls_gzan *a) { return a->exact; }
const char *ls_gzan_message(const ls_gzan *a) { return a->msg; }
uint64_t ls_gzan_offset(const ls_gzan *a) { return a->err_off; }
uint64_t ls_gzan_members(const ls_gzan *a) { return a->members; }

/* ---- rebuilder --------------------------------------------------------- */

enum { R_MEMBER, R_BLOCK, R_STORED, R_TOKENS, R_END, R_DONE, R_ERROR };

struct ls_gzre {
    rc_in in;                  /* reconstruction data not yet decoded */
    win W;                     /* plaintext; p is the next byte to cover */
    uint64_t p;
    int plain_end;
    model *m;
    huff lit, dist;
    int state, bfinal;
    uint32_t stored_left;
    gbuf out;
    uint64_t acc;
    unsigned nacc;
    uint64_t outbits;          /* bits written so far */
    char msg[160];
};

static int re_fail(ls_gzre *r, const char *what)
{
    if (r->state != R_ERROR) {
        r->state = R_ERROR;
        snprintf(r->msg, sizeof r->msg, "%s (at rebuilt byte %llu)", what,
                 (unsigned long long)(r->outbits / 8));
    }
    return LS_GZ_ERR_SIDE;
}

ls_gzre *ls_gzre_new(void)
{
    ls_gzre *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->W.w = malloc(W_CAP);
    r->m = malloc(sizeof(model));
    if (!r->W.w || !r->m) { ls_gzre_free(r); return NULL; }
    model_init(r->m);
    r->state = R_MEMBER;
    return r;
}

void ls_gzre_free(ls_gzre *r)
{
    if (!r) return;
    free(r->in.side.p); free(r->W.w); free(r->m); free(r->out.p);
    free(r);
}

size_t ls_gzre_side(ls_gzre *r, const uint8_t *data, size_t n) { return rci_feed(&r->in, data, n); }

size_t ls_gzre_plain(ls_gzre *r, const uint8_t *data, size_t n)
{
    win *W = &r->W;
    uint64_t keep = r->p > WSIZE ? r->p - WSIZE : 0;   /* model sources and match sources */
    if (keep > W->base) {
        memmove(W->w, W->w + (keep - W->base), (size_t)(W->end - keep));
        W->base = keep;
    }
    size_t room = W_CAP - (size_t)(W->end - W->base);
    if (n > room) n = room;
    memcpy(W->w + (W->end - W->base), data, n);
    W->end += n;
    return n;
}

void ls_gzre_plain_end(ls_gzre *r) { r->plain_end = 1; }

static void put_bits(ls_gzre *r, uint32_t v, unsigned n)
{
    r->acc |= (uint64_t)v << r->nacc;
    r->nacc += n;
    r->outbits += n;
    while (r->nacc >= 8) {
        gb_put(&r->out, (uint8_t)r->acc);
        r->acc >>= 8;
        r->nacc -= 8;
    }
}

/* Start a frame if none is open: 0, or LS_GZ_NEED_SIDE. */
static int re_frame(ls_gzre *r)
{
    int rc = rci_frame(&r->in);
    return rc < 0 ? re_fail(r, "reconstruction frame too long") : rc ? LS_GZ_NEED_SIDE : 0;
}

static int re_event_done(ls_gzre *r, uint32_t units)
{
    return rci_done(&r->in, units, FRAME_UNITS) ? re_fail(r, "reconstruction data ends inside a frame") : 0;
}

static int re_step(ls_gzre *r)
{
    int rc;
    win *W = &r->W;
    switch (r->state) {
    case R_MEMBER: {
        if ((rc = re_frame(r))) return rc;
        uint32_t n = rcd_direct(&r->in.rd, 16);
        for (uint32_t i = 0; i < n; i++) put_bits(r, rcd_direct(&r->in.rd, 8), 8);
        r->state = R_BLOCK;
        return re_event_done(r, 1 + n);
    }
    case R_BLOCK: {
        if ((rc = re_frame(r))) return rc;
        r->bfinal = (int)rcd_direct(&r->in.rd, 1);
        uint32_t type = rcd_direct(&r->in.rd, 2);
        put_bits(r, (uint32_t)r->bfinal | type << 1, 3);
        uint32_t units = 1;
        if (type == 0) {
            unsigned pad = (unsigned)((8 - (r->outbits & 7)) & 7);
            put_bits(r, rcd_direct(&r->in.rd, (int)pad), pad);
            uint32_t ln = rcd_direct(&r->in.rd, 16);
            put_bits(r, ln, 16);
            put_bits(r, ln ^ 0xFFFF, 16);
            r->stored_left = ln;
            units += ln / 256;
            r->state = R_STORED;
        } else if (type == 1) {
            fixed_tables(&r->lit, &r->dist);
            r->state = R_TOKENS;
        } else if (type == 2) {
            uint32_t nb = rcd_direct(&r->in.rd, 13);
            uint8_t tmp[1024] = {0};
            if (nb > 8 * sizeof tmp) return re_fail(r, "dynamic header too long");
            for (uint32_t i = 0; i < nb; i++) {
                uint32_t bit = rcd_direct(&r->in.rd, 1);
                tmp[i >> 3] |= (uint8_t)(bit << (i & 7));
                put_bits(r, bit, 1);
            }
            bitrd br = {tmp, nb, 0};
            if (parse_dynamic(&br, &r->lit, &r->dist) || br.pos != nb)
                return re_fail(r, "dynamic header in reconstruction data is invalid");
            units += nb / 8;
            r->state = R_TOKENS;
        } else {
            return re_fail(r, "block type 3 in reconstruction data");
        }
        return re_event_done(r, units);
    }
    case R_STORED:
        while (r->stored_left) {
            uint64_t have = W->end - r->p;
            if (!have) return r->plain_end ? re_fail(r, "plaintext ends inside a stored block") : LS_GZ_NEED_PLAIN;
            size_t n = (size_t)(have < r->stored_left ? have : r->stored_left);
            gb_append(&r->out, W->w + (r->p - W->base), n);
            r->outbits += 8 * (uint64_t)n;
            r->p += n;
            r->stored_left -= (uint32_t)n;
            if (r->out.len >= OUT_SOFT) break;
        }
        if (!r->stored_left) r->state = r->bfinal ? R_END : R_BLOCK;
        return 0;
    case R_TOKENS: {
        if (!r->plain_end && W->end < r->p + MAXMATCH) return LS_GZ_NEED_PLAIN;
        if ((rc = re_frame(r))) return rc;
        int len;
        uint32_t dist;
        int ev = model_decode(r->m, W, &r->in.rd, r->p, &len, &dist);
        if (ev < 0 || r->in.rd.bad) return re_fail(r, "reconstruction data does not fit the plaintext");
        if (ev == 1) {
            if (!r->lit.len[256]) return re_fail(r, "no end-of-block code");
            put_bits(r, r->lit.code[256], r->lit.len[256]);
            r->state = r->bfinal ? R_END : R_BLOCK;
            return re_event_done(r, 1);
        }
        if (!len) {
            int s = W->w[r->p - W->base];
            if (!r->lit.len[s]) return re_fail(r, "literal has no code");
            put_bits(r, r->lit.code[s], r->lit.len[s]);
            r->p++;
        } else {
            int lc = len_code(len), dc = dist_code(dist);
            int ls = 257 + lc;
            if (ls >= r->lit.n || !r->lit.len[ls] || dc >= r->dist.n || !r->dist.len[dc])
                return re_fail(r, "match has no code");
            put_bits(r, r->lit.code[ls], r->lit.len[ls]);
            if (LEXT[lc]) put_bits(r, (uint32_t)(len - LBASE[lc]), LEXT[lc]);
            put_bits(r, r->dist.code[dc], r->dist.len[dc]);
            if (DEXT[dc]) put_bits(r, dist - DBASE[dc], DEXT[dc]);
            r->p += (uint64_t)len;
        }
        return re_event_done(r, 1);
    }
    case R_END: {
        if ((rc = re_frame(r))) return rc;
        unsigned pad = (unsigned)((8 - (r->outbits & 7)) & 7);
        put_bits(r, rcd_direct(&r->in.rd, (int)pad), pad);
        for (int i = 0; i < 8; i++) put_bits(r, rcd_direct(&r->in.rd, 8), 8);
        r->state = rcd_direct(&r->in.rd, 1) ? R_MEMBER : R_DONE;
        return re_event_done(r, 9);
    }
    }
    return 0;
}

int ls_gzre_run(ls_gzre *r)
{
    for (;;) {
        if (r->in.side.oom || r->out.oom) return LS_GZ_ERR_NOMEM;
        if (r->state == R_ERROR) return LS_GZ_ERR_SIDE;
        if (r->out.len >= OUT_SOFT) return LS_GZ_OUTPUT;
        if (r->state == R_DONE) {
            if (r->out.len) return LS_GZ_OUTPUT;
            if (!r->plain_end) return LS_GZ_NEED_PLAIN;
            if (r->p != r->W.end) return re_fail(r, "plaintext longer than the rebuilt stream");
            return LS_GZ_DONE;
        }
        int rc = re_step(r);
        if (rc) return rc;
    }
}

size_t ls_gzre_output(ls_gzre *r, const uint8_t **ptr)
{
    *ptr = r->out.p;
    return r->out.len;
}

void ls_gzre_output_taken(ls_gzre *r, size_t n) { gb_consume(&r->out, n); }
const char *ls_gzre_message(const ls_gzre *r) { return r->msg; }
