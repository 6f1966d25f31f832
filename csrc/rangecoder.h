/* rangecoder.h: growable byte buffers and the adaptive binary range coder
 * shared by the reconstruction-data writers (gzre.c, zstre.c). Header-only,
 * static functions. The coder is LZMA's: 32-bit range, 11-bit
 * probabilities starting at one half, adaptation shift 5, five flush
 * bytes; "direct" bits are coded at probability one half. */
#ifndef LS_RANGECODER_H
#define LS_RANGECODER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ---------------------------------------------------------- */

typedef struct gbuf { uint8_t *p; size_t len, cap; int oom; } gbuf;

static inline int gb_reserve(gbuf *b, size_t extra)
{
    if (b->oom) return -1;
    if (b->len + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) { b->oom = 1; return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void gb_put(gbuf *b, uint8_t v)
{
    if (gb_reserve(b, 1) == 0) b->p[b->len++] = v;
}

static inline void gb_append(gbuf *b, const uint8_t *d, size_t n)
{
    if (n && gb_reserve(b, n) == 0) { memcpy(b->p + b->len, d, n); b->len += n; }
}

static inline void gb_consume(gbuf *b, size_t n)
{
    if (n > b->len) n = b->len;
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

/* ---- adaptive binary range coder (11-bit probabilities) --------------- */

#define PROB_INIT 1024
#define PROB_BITS 11
#define MOVE 5

typedef struct rc_enc { uint64_t low; uint32_t range; uint8_t cache; uint64_t pending; gbuf *out; } rc_enc;
typedef struct rc_dec { uint32_t range, code; const uint8_t *p; size_t n, pos; int bad; } rc_dec;

static inline void rce_init(rc_enc *e, gbuf *out)
{
    e->low = 0; e->range = 0xFFFFFFFFu; e->cache = 0; e->pending = 1; e->out = out;
}

static inline void rce_shift(rc_enc *e)
{
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        uint8_t c = e->cache;
        do { gb_put(e->out, (uint8_t)(c + carry)); c = 0xFF; } while (--e->pending);
        e->cache = (uint8_t)(e->low >> 24);
    }
    e->pending++;
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

static inline void rce_bit(rc_enc *e, uint16_t *p, int bit)
{
    uint32_t bound = (e->range >> PROB_BITS) * *p;
    if (!bit) { e->range = bound; *p += ((1u << PROB_BITS) - *p) >> MOVE; }
    else { e->low += bound; e->range -= bound; *p -= *p >> MOVE; }
    while (e->range < (1u << 24)) { e->range <<= 8; rce_shift(e); }
}

static inline void rce_direct(rc_enc *e, uint32_t v, int nbits)
{
    while (nbits--) {
        e->range >>= 1;
        if ((v >> nbits) & 1) e->low += e->range;
        while (e->range < (1u << 24)) { e->range <<= 8; rce_shift(e); }
    }
}

static inline void rce_flush(rc_enc *e)
{
    for (int i = 0; i < 5; i++) rce_shift(e);
}

static inline uint8_t rcd_byte(rc_dec *d)
{
    if (d->pos < d->n) return d->p[d->pos++];
    d->bad = 1;
    return 0;
}

static inline void rcd_init(rc_dec *d, const uint8_t *p, size_t n)
{
    d->p = p; d->n = n; d->pos = 0; d->bad = 0; d->range = 0xFFFFFFFFu; d->code = 0;
    for (int i = 0; i < 5; i++) d->code = (d->code << 8) | rcd_byte(d);
}

static inline int rcd_bit(rc_dec *d, uint16_t *p)
{
    uint32_t bound = (d->range >> PROB_BITS) * *p;
    int bit;
    if (d->code < bound) { d->range = bound; *p += ((1u << PROB_BITS) - *p) >> MOVE; bit = 0; }
    else { d->code -= bound; d->range -= bound; *p -= *p >> MOVE; bit = 1; }
    while (d->range < (1u << 24)) { d->range <<= 8; d->code = (d->code << 8) | rcd_byte(d); }
    return bit;
}

static inline uint32_t rcd_direct(rc_dec *d, int nbits)
{
    uint32_t v = 0;
    while (nbits--) {
        d->range >>= 1;
        uint32_t b = d->code >= d->range;
        if (b) d->code -= d->range;
        v = (v << 1) | b;
        while (d->range < (1u << 24)) { d->range <<= 8; d->code = (d->code << 8) | rcd_byte(d); }
    }
    return v;
}

static inline void rce_tree(rc_enc *e, uint16_t *probs, int nbits, uint32_t v)
{
    uint32_t m = 1;
    for (int i = nbits - 1; i >= 0; i--) {
        int b = (v >> i) & 1;
        rce_bit(e, &probs[m], b);
        m = (m << 1) | (uint32_t)b;
    }
}

static inline uint32_t rcd_tree(rc_dec *d, uint16_t *probs, int nbits)
{
    uint32_t m = 1;
    for (int i = 0; i < nbits; i++) m = (m << 1) | (uint32_t)rcd_bit(d, &probs[m]);
    return m - (1u << nbits);
}

/* ---- framing of reconstruction data ------------------------------------
 * Frames of `u32 length` (little-endian) + one range coder run. A frame
 * ends after the event that brings its unit count to `limit`; the model
 * state carries over. */

typedef struct rc_out { rc_enc rc; gbuf frame, side; uint32_t units; int open; } rc_out;

/* The coder for the next event (opening a frame if none is open). */
static inline rc_enc *rco_event(rc_out *o)
{
    if (!o->open) { rce_init(&o->rc, &o->frame); o->open = 1; }
    return &o->rc;
}

/* Close the open frame: its bytes go to o->side behind their length. */
static inline void rco_end(rc_out *o)
{
    if (!o->open) return;
    rce_flush(&o->rc);
    uint8_t hdr[4];
    uint32_t n = (uint32_t)o->frame.len;
    for (int i = 0; i < 4; i++) hdr[i] = (uint8_t)(n >> (8 * i));
    gb_append(&o->side, hdr, 4);
    gb_append(&o->side, o->frame.p, o->frame.len);
    o->frame.len = 0;
    o->open = 0;
    o->units = 0;
}

static inline void rco_done(rc_out *o, uint32_t units, uint32_t limit)
{
    o->units += units;
    if (o->units >= limit) rco_end(o);
}

#define RC_FRAME_MAX (1u << 21)

typedef struct rc_in { gbuf side; size_t frame_len; int open; rc_dec rd; uint32_t units; } rc_in;

/* Open the next frame if none is open: 0 (open), 1 (its bytes are not all
 * here yet), -1 (a frame longer than RC_FRAME_MAX: damaged data). */
static inline int rci_frame(rc_in *in)
{
    if (in->open) return 0;
    if (in->frame_len) { gb_consume(&in->side, in->frame_len); in->frame_len = 0; }
    if (in->side.len < 4) return 1;
    const uint8_t *p = in->side.p;
    uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (n > RC_FRAME_MAX) return -1;
    if (in->side.len < 4 + (size_t)n) return 1;
    rcd_init(&in->rd, p + 4, n);
    in->frame_len = 4 + (size_t)n;
    in->open = 1;
    in->units = 0;
    return 0;
}

/* After an event: -1 when its data ran past its frame, else 0. */
static inline int rci_done(rc_in *in, uint32_t units, uint32_t limit)
{
    if (in->rd.bad) return -1;
    in->units += units;
    if (in->units >= limit) in->open = 0;
    return 0;
}

/* Append reconstruction data (refused while a lot is waiting). */
static inline size_t rci_feed(rc_in *in, const uint8_t *data, size_t n)
{
    if (in->side.len > RC_FRAME_MAX) return 0;
    gb_append(&in->side, data, n);
    return in->side.oom ? 0 : n;
}

#endif
