/* Push-based, incremental tar parser. See tar.h for the event contract.
 *
 * Parsing rules (chosen to match Go's archive/tar, the reader most container
 * tooling uses, unless noted):
 *   - checksum: octal field, matches the unsigned or the signed byte sum;
 *   - numeric fields: octal cut at the first NUL with spaces trimmed at both
 *     ends (so a field starting with NUL reads 0, as in python tarfile,
 *     libarchive and GNU tar), or base-256 (GNU) including negative values;
 *     anything else is an error;
 *   - names: the header name is joined with the ustar prefix (155 bytes) or
 *     the star prefix (131 bytes); a GNU header has no prefix;
 *   - precedence: header < PAX 'path' < GNU 'L' < GNU.sparse.name (linkname:
 *     header < PAX 'linkpath' < GNU 'K');
 *   - PAX: records are validated strictly (length, '=', no NUL in keys or in
 *     path/linkpath/uname/gname values); of several 'x' headers before one
 *     entry only the last counts; 'g' records accumulate and apply to every
 *     following entry; a record with an empty value leaves the header field in
 *     force;
 *   - typeflags 1-6 (links, devices, directories, fifos) carry no data
 *     whatever their size field says; '\0' becomes '0', or '5' when the name
 *     ends with '/';
 *   - end of input: clean at a header boundary (with or without the
 *     end-of-archive marker, and even after dangling extended headers) and
 *     anywhere after the first zero block; truncated anywhere else, including
 *     inside the padding after a payload. The first zero block ends the
 *     archive: a second zero block is END too, anything else from there on is
 *     TRAILING (python tarfile, libarchive and GNU tar also stop there);
 *   - sparse files: regions must be sorted, non-overlapping, within the real
 *     size and describe no more data than is stored; stored bytes beyond the
 *     described regions are reported as PADDING (GNU tar and libarchive skip
 *     them too).
 */
#include "tar.h"
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLK LS_TAR_BLOCK
#define ERRNAME_MAX 1024

enum {
    ST_HEADER = 0,
    ST_EXT_DATA,
    ST_PAD,
    ST_GNU_SPARSE_EXT,
    ST_SPARSE_MAP,
    ST_MAP_PAD,
    ST_ENTRY,
    ST_DATA,
    ST_END2,
    ST_TRAILING,
    ST_ERROR
};

typedef struct {
    uint8_t *p;
    size_t len, cap;
} lbuf;

static int lbuf_reserve(lbuf *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < need) {
        if (nc > SIZE_MAX / 2) {
            nc = need;
            break;
        }
        nc *= 2;
    }
    uint8_t *np = realloc(b->p, nc);
    if (!np)
        return -1;
    b->p = np;
    b->cap = nc;
    return 0;
}

static int lbuf_append(lbuf *b, const void *d, size_t n)
{
    if (n > SIZE_MAX - b->len)
        return -1;
    if (lbuf_reserve(b, b->len + n))
        return -1;
    if (n)
        memcpy(b->p + b->len, d, n);
    b->len += n;
    return 0;
}

static void lbuf_swap(lbuf *a, lbuf *b)
{
    lbuf t = *a;
    *a = *b;
    *b = t;
}

static void lbuf_free(lbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static const uint8_t empty_bytes[1] = {0};

static const uint8_t *lbuf_ptr(const lbuf *b) { return b->p ? b->p : empty_bytes; }

typedef struct {
    ls_tar_entry e;
    lbuf name, link, uname, gname, pax;
    ls_tar_sparse_region *sp;
    size_t sp_count, sp_cap;
} entry_store;

/* Known PAX keys and where their values are (defined early: the parser
 * keeps the slots of its global record sets). */
typedef struct {
    const uint8_t *v;
    size_t n;
    int set;
} slot;

enum {
    K_PATH,
    K_LINKPATH,
    K_UNAME,
    K_GNAME,
    K_UID,
    K_GID,
    K_MTIME,
    K_ATIME,
    K_CTIME,
    K_SIZE,
    K_HDRCHARSET,
    K_SP_MAJOR,
    K_SP_MINOR,
    K_SP_NAME,
    K_SP_SIZE,
    K_SP_REALSIZE,
    K_SP_NUMBLOCKS,
    K_SP_MAP,
    K_COUNT
};

static const char *const known_keys[K_COUNT] = {
    "path", "linkpath", "uname", "gname", "uid", "gid", "mtime", "atime", "ctime", "size", "hdrcharset",
    "GNU.sparse.major", "GNU.sparse.minor", "GNU.sparse.name", "GNU.sparse.size", "GNU.sparse.realsize",
    "GNU.sparse.numblocks", "GNU.sparse.map"};

struct ls_tar_parser {
    int state;
    uint64_t off; /* stream offset of the next unconsumed byte */
    uint64_t max_ext, max_sparse;

    /* block assembly */
    uint8_t blk[BLK];
    size_t blk_fill;
    uint64_t blk_off;

    /* extended header payload */
    int ext_kind;
    uint64_t ext_hdr_off;
    uint64_t remaining; /* bytes left of the extended payload */
    uint64_t ppos;      /* payload bytes already reported */
    lbuf ext;           /* scratch: the payload being read */

    /* padding */
    uint64_t pad;
    int after_pad;

    /* metadata pending for the next entry */
    lbuf pax_pend;
    int have_pax;
    lbuf longname, longlink;
    int have_longname, have_longlink;
    int have_first;
    uint64_t first_off;
    lbuf glob[2];
    slot glob_slots[2][K_COUNT]; /* known keys of each global set, parsed once */
    uint64_t glob_compactions;    /* times the global set was compacted */
    uint64_t glob_generation;     /* bumped whenever the global records change */
    uint64_t glob_since_compact;  /* global record bytes appended since the last compaction */
    int glob_latest; /* index of the newest global record set */
    int glob_cur;    /* index referenced by the current entry, -1 if none */

    /* entries: ent[cur] is the reported one, ent[cur ^ 1] the one being built */
    entry_store ent[2];
    int cur;
    int have_current;

    /* building: sparse extension blocks and the 1.0 map */
    uint64_t sparse_ext_bytes;
    uint64_t stored_left; /* data area bytes not yet consumed (1.0 map) */
    uint64_t map_nl, map_need;
    size_t map_line; /* start of the current line in ext while looking for the count */

    /* data streaming */
    uint64_t data_left;
    uint64_t file_pos;
    size_t sp_idx;
    uint64_t sp_done;
    uint64_t data_pad;
    uint64_t data_area; /* stored bytes of the entry's data area (after a 1.0 map) */

    int end_seen;

    char errmsg[256];
    uint64_t erroff;
    char errentry[ERRNAME_MAX + 1];
    lbuf errname; /* name of the entry being parsed */
};

/* ------------------------------------------------------------------ errors */

static void set_errname(ls_tar_parser *p, const uint8_t *s, size_t n)
{
    if (n > ERRNAME_MAX)
        n = ERRNAME_MAX;
    p->errname.len = 0;
    if (lbuf_reserve(&p->errname, ERRNAME_MAX) == 0)
        lbuf_append(&p->errname, s, n);
}

__attribute__((format(printf, 3, 4))) static int fail(ls_tar_parser *p, uint64_t off, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->errmsg, sizeof p->errmsg, fmt, ap);
    va_end(ap);
    p->erroff = off;
    size_t n = p->errname.len;
    if (n > ERRNAME_MAX)
        n = ERRNAME_MAX;
    if (n)
        memcpy(p->errentry, p->errname.p, n);
    p->errentry[n] = 0;
    /* a NUL cannot occur in a name, but keep the C string well-formed */
    for (size_t i = 0; i < n; i++)
        if (!p->errentry[i])
            p->errentry[i] = '?';
    p->state = ST_ERROR;
    return -1;
}

static int oom(ls_tar_parser *p) { return fail(p, p->off, "out of memory"); }

/* --------------------------------------------------------- field parsing */

static size_t cstrlen(const uint8_t *b, size_t n)
{
    const uint8_t *z = memchr(b, 0, n);
    return z ? (size_t)(z - b) : n;
}

/* Octal: cut at the first NUL, trim spaces at both ends, then only octal
 * digits (empty = 0). A field whose first byte is NUL is therefore 0, as in
 * python tarfile, libarchive and GNU tar. */
static int parse_octal(const uint8_t *b, size_t n, uint64_t *out)
{
    size_t s = 0, e = cstrlen(b, n);
    while (s < e && b[s] == ' ')
        s++;
    while (e > s && b[e - 1] == ' ')
        e--;
    uint64_t x = 0;
    for (size_t i = s; i < e; i++) {
        if (b[i] < '0' || b[i] > '7')
            return -1;
        if (x > (UINT64_MAX >> 3))
            return -1;
        x = (x << 3) | (uint64_t)(b[i] - '0');
    }
    *out = x;
    return 0;
}

/* Octal or base-256 into a signed 64-bit value. */
static int parse_numeric(const uint8_t *b, size_t n, int64_t *out, int *b256)
{
    if (n > 0 && (b[0] & 0x80)) {
        uint8_t inv = (b[0] & 0x40) ? 0xff : 0x00;
        uint64_t x = 0;
        for (size_t i = 0; i < n; i++) {
            uint8_t c = b[i] ^ inv;
            if (i == 0)
                c &= 0x7f;
            if ((x >> 56) > 0)
                return -1;
            x = (x << 8) | c;
        }
        if ((x >> 63) > 0)
            return -1;
        *out = inv ? (int64_t)~x : (int64_t)x;
        if (b256)
            *b256 = 1;
        return 0;
    }
    uint64_t u;
    if (parse_octal(b, n, &u) < 0 || u > (uint64_t)INT64_MAX)
        return -1;
    *out = (int64_t)u;
    return 0;
}

/* Strict decimal: optional sign, at least one digit, nothing else. */
static int parse_dec(const uint8_t *s, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        neg = s[i] == '-';
        i++;
    }
    if (i == n)
        return -1;
    uint64_t x = 0;
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (x > (lim - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    if (neg)
        *out = x == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)x;
    else
        *out = (int64_t)x;
    return 0;
}

/* PAX time: [-]sec[.frac]; fraction truncated to nanoseconds. */
static int parse_pax_time(const uint8_t *s, size_t n, int64_t *sec, uint32_t *nsec)
{
    const uint8_t *dot = memchr(s, '.', n);
    size_t sl = dot ? (size_t)(dot - s) : n;
    int64_t secs;
    if (parse_dec(s, sl, &secs) < 0)
        return -1;
    uint32_t ns = 0;
    if (dot) {
        size_t fl = n - sl - 1;
        const uint8_t *f = dot + 1;
        for (size_t i = 0; i < fl; i++)
            if (f[i] < '0' || f[i] > '9')
                return -1;
        for (size_t i = 0; i < 9; i++)
            ns = ns * 10 + (i < fl ? (uint32_t)(f[i] - '0') : 0);
    }
    if (sl > 0 && s[0] == '-' && ns > 0) {
        if (secs == INT64_MIN)
            return -1;
        secs -= 1;
        ns = 1000000000u - ns;
    }
    *sec = secs;
    *nsec = ns;
    return 0;
}

/* One PAX record "LEN KEY=VALUE\n" at b[*pos..n). Returns 1 with the record,
 * 0 at the end, -1 if malformed. */
static int pax_record(const uint8_t *b, size_t n, size_t *pos, const uint8_t **k, size_t *kl, const uint8_t **v,
                      size_t *vl)
{
    size_t s = *pos;
    if (s >= n)
        return 0;
    size_t rest = n - s;
    const uint8_t *r = b + s;
    size_t i = 0;
    uint64_t len = 0;
    while (i < rest && r[i] >= '0' && r[i] <= '9') {
        if (len > (UINT64_MAX - 9) / 10)
            return -1;
        len = len * 10 + (uint64_t)(r[i] - '0');
        i++;
    }
    if (i == 0 || i >= rest || r[i] != ' ')
        return -1;
    if (len < 5 || len > rest || len <= i + 1)
        return -1;
    if (r[len - 1] != '\n')
        return -1;
    const uint8_t *rec = r + i + 1;
    size_t recl = (size_t)len - i - 2;
    const uint8_t *eq = memchr(rec, '=', recl);
    if (!eq || eq == rec)
        return -1;
    *k = rec;
    *kl = (size_t)(eq - rec);
    *v = eq + 1;
    *vl = recl - *kl - 1;
    *pos = s + (size_t)len;
    return 1;
}

static int key_is(const uint8_t *k, size_t kl, const char *name)
{
    size_t n = strlen(name);
    return kl == n && memcmp(k, name, n) == 0;
}

static int pax_validate(const uint8_t *b, size_t n)
{
    size_t pos = 0;
    const uint8_t *k, *v;
    size_t kl, vl;
    int rc;
    while ((rc = pax_record(b, n, &pos, &k, &kl, &v, &vl)) == 1) {
        if (memchr(k, 0, kl))
            return -1;
        if ((key_is(k, kl, "path") || key_is(k, kl, "linkpath") || key_is(k, kl, "uname") ||
             key_is(k, kl, "gname")) &&
            memchr(v, 0, vl))
            return -1;
    }
    return rc;
}

/* ----------------------------------------------------------- header block */

typedef struct {
    int format;
    int typeflag;
    int64_t mode, uid, gid, size, mtime, devmajor, devminor;
    const uint8_t *name;
    size_t name_len;
    const uint8_t *prefix;
    size_t prefix_len;
    const uint8_t *link;
    size_t link_len;
    const uint8_t *uname;
    size_t uname_len;
    const uint8_t *gname;
    size_t gname_len;
    int b256;
    int signed_chk;
} hdr_t;

static int is_zero_block(const uint8_t *b)
{
    static const uint8_t zero[BLK];
    return memcmp(b, zero, BLK) == 0;
}

/* 0 ok, -1 bad checksum */
static int check_checksum(const uint8_t *b, int *signed_only)
{
    uint64_t want;
    if (parse_octal(b + 148, 8, &want) < 0)
        return -1;
    uint64_t us = 0;
    int64_t ss = 0;
    for (size_t i = 0; i < BLK; i++) {
        uint8_t c = (i >= 148 && i < 156) ? ' ' : b[i];
        us += c;
        ss += (int8_t)c;
    }
    if (want == us) {
        *signed_only = 0;
        return 0;
    }
    if ((int64_t)want == ss) {
        *signed_only = 1;
        return 0;
    }
    return -1;
}

static int block_format(const uint8_t *b)
{
    if (memcmp(b + 257, "ustar\0", 6) == 0)
        return memcmp(b + 508, "tar\0", 4) == 0 ? LS_TAR_FORMAT_STAR : LS_TAR_FORMAT_USTAR;
    if (memcmp(b + 257, "ustar  \0", 8) == 0)
        return LS_TAR_FORMAT_GNU;
    return LS_TAR_FORMAT_V7;
}

static int is_ascii(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0x80)
            return 0;
    return 1;
}

/* Returns NULL on success or a message. */
static const char *parse_header(const uint8_t *b, hdr_t *h)
{
    memset(h, 0, sizeof *h);
    if (check_checksum(b, &h->signed_chk) < 0)
        return "invalid header checksum";
    h->format = block_format(b);
    h->typeflag = b[156];
    h->name = b;
    h->name_len = cstrlen(b, 100);
    h->link = b + 157;
    h->link_len = cstrlen(b + 157, 100);
    if (parse_numeric(b + 124, 12, &h->size, &h->b256) < 0)
        return "invalid size field";
    if (h->size < 0)
        return "negative size";
    if (parse_numeric(b + 100, 8, &h->mode, &h->b256) < 0)
        return "invalid mode field";
    if (h->mode < 0)
        return "negative mode";
    if (parse_numeric(b + 108, 8, &h->uid, &h->b256) < 0)
        return "invalid uid field";
    if (parse_numeric(b + 116, 8, &h->gid, &h->b256) < 0)
        return "invalid gid field";
    if (parse_numeric(b + 136, 12, &h->mtime, &h->b256) < 0)
        return "invalid mtime field";
    if (h->format != LS_TAR_FORMAT_V7) {
        h->uname = b + 265;
        h->uname_len = cstrlen(b + 265, 32);
        h->gname = b + 297;
        h->gname_len = cstrlen(b + 297, 32);
        if (parse_numeric(b + 329, 8, &h->devmajor, &h->b256) < 0)
            return "invalid devmajor field";
        if (parse_numeric(b + 337, 8, &h->devminor, &h->b256) < 0)
            return "invalid devminor field";
        if (h->format == LS_TAR_FORMAT_USTAR) {
            h->prefix = b + 345;
            h->prefix_len = cstrlen(b + 345, 155);
        } else if (h->format == LS_TAR_FORMAT_STAR) {
            h->prefix = b + 345;
            h->prefix_len = cstrlen(b + 345, 131);
        } else {
            /* GNU: atime/ctime live where ustar has its prefix. Files written
             * by Go before 1.8 put a ustar prefix there; when those fields do
             * not parse as numbers and the bytes are ASCII, read them as a
             * prefix (as Go and Python's tarfile do). */
            int64_t t;
            int bad = (b[345] != 0 && parse_numeric(b + 345, 12, &t, NULL) < 0) ||
                      (b[357] != 0 && parse_numeric(b + 357, 12, &t, NULL) < 0);
            if (bad && h->typeflag != 'S') {
                size_t pl = cstrlen(b + 345, 155);
                if (is_ascii(b + 345, pl)) {
                    h->prefix = b + 345;
                    h->prefix_len = pl;
                }
            }
        }
    }
    return NULL;
}

/* ------------------------------------------------------------- lifecycle */

ls_tar_parser *ls_tar_new(void)
{
    ls_tar_parser *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->max_ext = LS_TAR_DEFAULT_MAX_EXT;
    p->max_sparse = LS_TAR_DEFAULT_MAX_SPARSE;
    p->glob_cur = -1;
    return p;
}

void ls_tar_free(ls_tar_parser *p)
{
    if (!p)
        return;
    lbuf_free(&p->ext);
    lbuf_free(&p->pax_pend);
    lbuf_free(&p->longname);
    lbuf_free(&p->longlink);
    lbuf_free(&p->glob[0]);
    lbuf_free(&p->glob[1]);
    lbuf_free(&p->errname);
    for (int i = 0; i < 2; i++) {
        entry_store *s = &p->ent[i];
        lbuf_free(&s->name);
        lbuf_free(&s->link);
        lbuf_free(&s->uname);
        lbuf_free(&s->gname);
        lbuf_free(&s->pax);
        free(s->sp);
    }
    free(p);
}

void ls_tar_set_limits(ls_tar_parser *p, uint64_t max_ext, uint64_t max_sparse)
{
    p->max_ext = max_ext ? max_ext : LS_TAR_DEFAULT_MAX_EXT;
    if (p->max_ext > SIZE_MAX / 4)
        p->max_ext = SIZE_MAX / 4;
    p->max_sparse = max_sparse ? max_sparse : LS_TAR_DEFAULT_MAX_SPARSE;
    if (p->max_sparse > SIZE_MAX / (4 * sizeof(ls_tar_sparse_region)))
        p->max_sparse = SIZE_MAX / (4 * sizeof(ls_tar_sparse_region));
}

const char *ls_tar_error_message(const ls_tar_parser *p) { return p->errmsg; }
uint64_t ls_tar_error_offset(const ls_tar_parser *p) { return p->erroff; }
const char *ls_tar_error_entry(const ls_tar_parser *p) { return p->errentry; }
int ls_tar_end_seen(const ls_tar_parser *p) { return p->end_seen; }

const ls_tar_entry *ls_tar_current(const ls_tar_parser *p)
{
    return p->have_current ? &p->ent[p->cur].e : NULL;
}

/* ------------------------------------------------------------- helpers */

static int emit(ls_tar_event *ev, int kind, uint64_t off, const uint8_t *b, uint64_t n, uint64_t fo)
{
    ev->kind = kind;
    ev->offset = off;
    ev->length = n;
    ev->bytes = b;
    ev->file_offset = fo;
    return 1;
}

static uint64_t pad_of(uint64_t n) { return (BLK - (n % BLK)) % BLK; }

static int sparse_add(ls_tar_parser *p, entry_store *s, int64_t off, int64_t len, uint64_t at)
{
    if (off < 0 || len < 0)
        return fail(p, at, "negative sparse region");
    if (s->sp_count >= p->max_sparse)
        return fail(p, at, "too many sparse regions (limit %llu)", (unsigned long long)p->max_sparse);
    if (s->sp_count == s->sp_cap) {
        size_t nc = s->sp_cap ? s->sp_cap * 2 : 16;
        if (nc > p->max_sparse)
            nc = (size_t)p->max_sparse;
        ls_tar_sparse_region *n = realloc(s->sp, nc * sizeof *n);
        if (!n)
            return oom(p);
        s->sp = n;
        s->sp_cap = nc;
    }
    s->sp[s->sp_count].offset = (uint64_t)off;
    s->sp[s->sp_count].length = (uint64_t)len;
    s->sp_count++;
    return 0;
}

/* Parse the old-GNU sparse descriptors: n entries of 24 bytes at b. */
static int gnu_sparse_entries(ls_tar_parser *p, entry_store *s, const uint8_t *b, int n, uint64_t at)
{
    for (int i = 0; i < n; i++) {
        const uint8_t *d = b + 24 * i;
        if (d[0] == 0)
            break;
        int64_t off, len;
        if (parse_numeric(d, 12, &off, NULL) < 0 || parse_numeric(d + 12, 12, &len, NULL) < 0)
            return fail(p, at, "invalid old GNU sparse descriptor");
        if (sparse_add(p, s, off, len, at) < 0)
            return -1;
    }
    return 0;
}

/* Validate the sparse map of the entry being built and compute data_size. */
static int sparse_finalize(ls_tar_parser *p, entry_store *s, uint64_t data_area)
{
    ls_tar_entry *e = &s->e;
    uint64_t prev_end = 0, total = 0;
    for (size_t i = 0; i < s->sp_count; i++) {
        uint64_t o = s->sp[i].offset, l = s->sp[i].length;
        if (o > (uint64_t)INT64_MAX - l)
            return fail(p, e->header_offset, "sparse region overflows");
        if (o + l > e->size)
            return fail(p, e->header_offset, "sparse region extends beyond the file size");
        if (o < prev_end)
            return fail(p, e->header_offset, "sparse regions are unsorted or overlap");
        prev_end = o + l;
        total += l; /* cannot overflow: regions are disjoint within size < 2^63 */
    }
    if (total > data_area)
        return fail(p, e->header_offset,
                    "sparse map describes %llu data bytes but the entry stores only %llu",
                    (unsigned long long)total, (unsigned long long)data_area);
    if (total < data_area)
        e->flags |= LS_TAR_F_SPARSE_UNREFERENCED;
    e->data_size = total;
    p->data_area = data_area;
    e->sparse = s->sp;
    e->sparse_count = s->sp_count;
    return 0;
}

/* -------------------------------------------------- extended header data */

typedef struct {
    const uint8_t *key;
    size_t klen, start, end;
    int keep;
} rec_ref;

static int rec_by_key(const void *a, const void *b)
{
    const rec_ref *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return x->start < y->start ? -1 : (x->start > y->start);
}

static int rec_by_start(const void *a, const void *b)
{
    const rec_ref *x = a, *y = b;
    return x->start < y->start ? -1 : (x->start > y->start);
}

static void collect_slots(const uint8_t *b, size_t n, slot *sl);

/* Parse the known keys of global set ``i`` once, when it changes, instead of
 * for every entry (a large global header would otherwise cost its size per
 * entry). The slots point into p->glob[i], valid until it changes again. */
static void index_globals(ls_tar_parser *p, int i)
{
    p->glob_generation++;
    memset(p->glob_slots[i], 0, sizeof p->glob_slots[i]);
    collect_slots(lbuf_ptr(&p->glob[i]), p->glob[i].len, p->glob_slots[i]);
}

static int merge_globals(ls_tar_parser *p)
{
    int dst = p->glob_latest;
    if (p->glob_cur == dst) {
        /* the current entry still references this set: copy on write */
        int n = dst ^ 1;
        p->glob[n].len = 0;
        if (lbuf_append(&p->glob[n], lbuf_ptr(&p->glob[dst]), p->glob[dst].len) < 0)
            return oom(p);
        dst = n;
        p->glob_latest = n;
    }
    lbuf *g = &p->glob[dst];
    if (g->len + p->ext.len > p->max_ext) {
        /* compact: keep only the last record of each key (sort by key, then
         * position: O(n log n) however many records there are) */
        lbuf tmp = {0}, out = {0};
        rec_ref *refs = NULL;
        size_t n = 0, cap = 0, pos = 0;
        int rc = -1;
        const uint8_t *k, *v;
        size_t kl, vl;
        if (lbuf_append(&tmp, lbuf_ptr(g), g->len) < 0 || lbuf_append(&tmp, lbuf_ptr(&p->ext), p->ext.len) < 0)
            goto done;
        for (;;) {
            size_t start = pos;
            if (pax_record(lbuf_ptr(&tmp), tmp.len, &pos, &k, &kl, &v, &vl) != 1)
                break;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                rec_ref *nr = realloc(refs, nc * sizeof *nr);
                if (!nr)
                    goto done;
                refs = nr;
                cap = nc;
            }
            refs[n].key = k;
            refs[n].klen = kl;
            refs[n].start = start;
            refs[n].end = pos;
            refs[n].keep = 1;
            n++;
        }
        if (n > 1) {
            qsort(refs, n, sizeof *refs, rec_by_key);
            for (size_t i = 0; i + 1 < n; i++)
                if (refs[i].klen == refs[i + 1].klen && memcmp(refs[i].key, refs[i + 1].key, refs[i].klen) == 0)
                    refs[i].keep = 0;
            qsort(refs, n, sizeof *refs, rec_by_start);
        }
        for (size_t i = 0; i < n; i++)
            if (refs[i].keep && lbuf_append(&out, tmp.p + refs[i].start, refs[i].end - refs[i].start) < 0)
                goto done;
        rc = 0;
    done:
        free(refs);
        lbuf_free(&tmp);
        if (rc < 0) {
            lbuf_free(&out);
            return oom(p);
        }
        if (out.len > p->max_ext) {
            lbuf_free(&out);
            return fail(p, p->ext_hdr_off, "PAX global records exceed %llu bytes", (unsigned long long)p->max_ext);
        }
        if (p->glob_compactions && p->glob_since_compact < p->max_ext / 4) {
            /* Keep compaction amortised: a compaction costs O(max_ext), so
             * at least max_ext/4 bytes of new global records must arrive
             * between two of them, or the input is refused. */
            lbuf_free(&out);
            return fail(p, p->ext_hdr_off, "PAX global records keep exceeding %llu bytes",
                        (unsigned long long)p->max_ext);
        }
        p->glob_compactions++;
        p->glob_since_compact = 0;
        lbuf_swap(g, &out);
        lbuf_free(&out);
        index_globals(p, dst);
        return 0;
    }
    if (lbuf_append(g, lbuf_ptr(&p->ext), p->ext.len) < 0)
        return oom(p);
    p->glob_since_compact += p->ext.len;
    index_globals(p, dst);
    return 0;
}

static int ext_complete(ls_tar_parser *p)
{
    switch (p->ext_kind) {
    case 'x':
    case 'X':
    case 'g':
        if (pax_validate(lbuf_ptr(&p->ext), p->ext.len) < 0)
            return fail(p, p->ext_hdr_off, "malformed PAX record");
        if (p->ext_kind == 'g')
            return merge_globals(p);
        lbuf_swap(&p->pax_pend, &p->ext);
        p->have_pax = 1;
        return 0;
    case 'L': {
        size_t n = cstrlen(lbuf_ptr(&p->ext), p->ext.len);
        p->ext.len = n;
        lbuf_swap(&p->longname, &p->ext);
        p->have_longname = n > 0;
        if (n)
            set_errname(p, p->longname.p, n);
        return 0;
    }
    case 'K': {
        size_t n = cstrlen(lbuf_ptr(&p->ext), p->ext.len);
        p->ext.len = n;
        lbuf_swap(&p->longlink, &p->ext);
        p->have_longlink = n > 0;
        return 0;
    }
    }
    return 0;
}

/* ------------------------------------------------------- entry building */

static void collect_slots(const uint8_t *b, size_t n, slot *sl)
{
    size_t pos = 0;
    const uint8_t *k, *v;
    size_t kl, vl;
    while (pax_record(b, n, &pos, &k, &kl, &v, &vl) == 1) {
        for (int i = 0; i < K_COUNT; i++)
            if (key_is(k, kl, known_keys[i])) {
                sl[i].v = v;
                sl[i].n = vl;
                sl[i].set = 1;
                break;
            }
    }
}

static int slot_eq(const slot *s, const char *str)
{
    return s->set && key_is(s->v, s->n, str);
}

/* GNU sparse 0.0: GNU.sparse.offset / GNU.sparse.numbytes pairs in order. */
static int sparse_00(ls_tar_parser *p, entry_store *s, const uint8_t *b, size_t n, int *found)
{
    size_t pos = 0;
    const uint8_t *k, *v;
    size_t kl, vl;
    int64_t pend_off = 0;
    int want_len = 0;
    *found = 0;
    while (pax_record(b, n, &pos, &k, &kl, &v, &vl) == 1) {
        int is_off = key_is(k, kl, "GNU.sparse.offset");
        int is_len = key_is(k, kl, "GNU.sparse.numbytes");
        if (!is_off && !is_len)
            continue;
        *found = 1;
        int64_t x;
        if (is_off == want_len || parse_dec(v, vl, &x) < 0)
            return fail(p, s->e.header_offset, "malformed GNU sparse 0.0 map");
        if (is_off) {
            pend_off = x;
            want_len = 1;
        } else {
            if (sparse_add(p, s, pend_off, x, s->e.header_offset) < 0)
                return -1;
            want_len = 0;
        }
    }
    if (want_len)
        return fail(p, s->e.header_offset, "malformed GNU sparse 0.0 map");
    return 0;
}

/* GNU sparse 0.1: "off,len,off,len,..." */
static int sparse_01(ls_tar_parser *p, entry_store *s, const slot *m)
{
    if (!m->set || m->n == 0)
        return 0;
    size_t i = 0;
    int64_t vals[2];
    int nv = 0;
    while (i <= m->n) {
        size_t j = i;
        while (j < m->n && m->v[j] != ',')
            j++;
        if (parse_dec(m->v + i, j - i, &vals[nv]) < 0)
            return fail(p, s->e.header_offset, "malformed GNU.sparse.map");
        if (++nv == 2) {
            if (sparse_add(p, s, vals[0], vals[1], s->e.header_offset) < 0)
                return -1;
            nv = 0;
        }
        i = j + 1;
    }
    if (nv)
        return fail(p, s->e.header_offset, "GNU.sparse.map has an odd number of values");
    return 0;
}

static int set_str(ls_tar_parser *p, lbuf *b, const uint8_t *s, size_t n)
{
    b->len = 0;
    if (lbuf_append(b, s, n) < 0)
        return oom(p);
    return 0;
}

static int is_header_only(int t) { return t >= '1' && t <= '6'; }

/* The entry's own header block was parsed. Builds ent[cur^1]. Sets the next
 * state (ST_GNU_SPARSE_EXT, ST_SPARSE_MAP or ST_ENTRY). */
static int build_entry(ls_tar_parser *p, const uint8_t *b, const hdr_t *h, uint64_t off)
{
    entry_store *s = &p->ent[p->cur ^ 1];
    ls_tar_entry *e = &s->e;
    memset(e, 0, sizeof *e);
    s->sp_count = 0;
    e->format = h->format;
    e->offset = p->have_first ? p->first_off : off;
    e->header_offset = off;
    e->mode = (uint64_t)h->mode;
    e->uid = h->uid;
    e->gid = h->gid;
    e->mtime_sec = h->mtime;
    e->devmajor = h->devmajor;
    e->devminor = h->devminor;
    if (h->b256)
        e->flags |= LS_TAR_F_BASE256;
    if (h->signed_chk)
        e->flags |= LS_TAR_F_SIGNED_CHKSUM;
    int64_t size = h->size;

    /* header strings */
    s->name.len = 0;
    if (h->prefix_len) {
        if (lbuf_append(&s->name, h->prefix, h->prefix_len) < 0 || lbuf_append(&s->name, "/", 1) < 0)
            return oom(p);
    }
    if (lbuf_append(&s->name, h->name, h->name_len) < 0)
        return oom(p);
    if (set_str(p, &s->link, h->link, h->link_len) < 0 || set_str(p, &s->uname, h->uname, h->uname_len) < 0 ||
        set_str(p, &s->gname, h->gname, h->gname_len) < 0)
        return -1;

    /* PAX records: globals, then the entry's own */
    if (p->have_pax) {
        lbuf_swap(&s->pax, &p->pax_pend);
        e->flags |= LS_TAR_F_PAX;
    } else {
        s->pax.len = 0;
    }
    p->have_pax = 0;
    const lbuf *gl = &p->glob[p->glob_latest];
    if (gl->len)
        e->flags |= LS_TAR_F_PAX_GLOBAL;
    slot sl[K_COUNT];
    memcpy(sl, p->glob_slots[p->glob_latest], sizeof sl);
    collect_slots(lbuf_ptr(&s->pax), s->pax.len, sl);

    set_errname(p, lbuf_ptr(&s->name), s->name.len);
    if (sl[K_PATH].set && sl[K_PATH].n) {
        if (set_str(p, &s->name, sl[K_PATH].v, sl[K_PATH].n) < 0)
            return -1;
        set_errname(p, sl[K_PATH].v, sl[K_PATH].n);
    }
    if (sl[K_LINKPATH].set && sl[K_LINKPATH].n && set_str(p, &s->link, sl[K_LINKPATH].v, sl[K_LINKPATH].n) < 0)
        return -1;
    if (sl[K_UNAME].set && sl[K_UNAME].n && set_str(p, &s->uname, sl[K_UNAME].v, sl[K_UNAME].n) < 0)
        return -1;
    if (sl[K_GNAME].set && sl[K_GNAME].n && set_str(p, &s->gname, sl[K_GNAME].v, sl[K_GNAME].n) < 0)
        return -1;
    if (sl[K_UID].set && sl[K_UID].n && parse_dec(sl[K_UID].v, sl[K_UID].n, &e->uid) < 0)
        return fail(p, off, "invalid PAX uid");
    if (sl[K_GID].set && sl[K_GID].n && parse_dec(sl[K_GID].v, sl[K_GID].n, &e->gid) < 0)
        return fail(p, off, "invalid PAX gid");
    if (sl[K_MTIME].set && sl[K_MTIME].n &&
        parse_pax_time(sl[K_MTIME].v, sl[K_MTIME].n, &e->mtime_sec, &e->mtime_nsec) < 0)
        return fail(p, off, "invalid PAX mtime");
    {
        int64_t t;
        uint32_t tn;
        if (sl[K_ATIME].set && sl[K_ATIME].n && parse_pax_time(sl[K_ATIME].v, sl[K_ATIME].n, &t, &tn) < 0)
            return fail(p, off, "invalid PAX atime");
        if (sl[K_CTIME].set && sl[K_CTIME].n && parse_pax_time(sl[K_CTIME].v, sl[K_CTIME].n, &t, &tn) < 0)
            return fail(p, off, "invalid PAX ctime");
    }
    if (sl[K_SIZE].set && sl[K_SIZE].n) {
        if (parse_dec(sl[K_SIZE].v, sl[K_SIZE].n, &size) < 0 || size < 0)
            return fail(p, off, "invalid PAX size");
    }
    if (slot_eq(&sl[K_HDRCHARSET], "BINARY"))
        e->flags |= LS_TAR_F_HDRCHARSET_BINARY;

    /* GNU long names win over PAX (as in Go) */
    if (p->have_longname) {
        if (set_str(p, &s->name, p->longname.p, p->longname.len) < 0)
            return -1;
        e->flags |= LS_TAR_F_GNU_LONGNAME;
    }
    if (p->have_longlink) {
        if (set_str(p, &s->link, p->longlink.p, p->longlink.len) < 0)
            return -1;
        e->flags |= LS_TAR_F_GNU_LONGLINK;
    }
    p->have_longname = p->have_longlink = 0;
    p->have_first = 0;

    int tf = h->typeflag;
    if (tf == 0)
        tf = (s->name.len && s->name.p[s->name.len - 1] == '/') ? '5' : '0';
    e->typeflag = tf;

    uint64_t stored = is_header_only(tf) ? 0 : (uint64_t)size;
    e->stored_size = stored;
    e->size = (uint64_t)size;

    int next = ST_ENTRY;
    if (tf == 'S') {
        if (h->format != LS_TAR_FORMAT_GNU)
            return fail(p, off, "sparse entry without a GNU header");
        int64_t real;
        if (parse_numeric(b + 483, 12, &real, NULL) < 0 || real < 0)
            return fail(p, off, "invalid old GNU sparse real size");
        e->size = (uint64_t)real;
        e->sparse_kind = LS_TAR_SPARSE_OLDGNU;
        if (gnu_sparse_entries(p, s, b + 386, 4, off) < 0)
            return -1;
        if (b[482]) {
            next = ST_GNU_SPARSE_EXT;
            p->sparse_ext_bytes = 0;
        }
    } else {
        /* PAX GNU sparse formats (only from the entry's own records) */
        slot ls[K_COUNT];
        memset(ls, 0, sizeof ls);
        collect_slots(lbuf_ptr(&s->pax), s->pax.len, ls);
        int found00 = 0;
        size_t before = s->sp_count;
        if (sparse_00(p, s, lbuf_ptr(&s->pax), s->pax.len, &found00) < 0)
            return -1;
        const slot *mj = &ls[K_SP_MAJOR], *mn = &ls[K_SP_MINOR];
        int kind = LS_TAR_SPARSE_NONE;
        if (slot_eq(mj, "0") && (slot_eq(mn, "0") || slot_eq(mn, "1")))
            kind = slot_eq(mn, "0") ? LS_TAR_SPARSE_PAX_00 : LS_TAR_SPARSE_PAX_01;
        else if (slot_eq(mj, "1") && slot_eq(mn, "0"))
            kind = LS_TAR_SPARSE_PAX_10;
        else if ((mj->set && mj->n) || (mn->set && mn->n))
            kind = LS_TAR_SPARSE_NONE; /* unknown version: not sparse */
        else if (found00)
            kind = LS_TAR_SPARSE_PAX_00;
        else if (ls[K_SP_MAP].set && ls[K_SP_MAP].n)
            kind = LS_TAR_SPARSE_PAX_01;
        if (kind != LS_TAR_SPARSE_NONE) {
            if (is_header_only(tf))
                return fail(p, off, "sparse map on an entry without data");
            e->sparse_kind = kind;
            if (ls[K_SP_NAME].set && ls[K_SP_NAME].n) {
                if (set_str(p, &s->name, ls[K_SP_NAME].v, ls[K_SP_NAME].n) < 0)
                    return -1;
                set_errname(p, ls[K_SP_NAME].v, ls[K_SP_NAME].n);
            }
            const slot *sz = ls[K_SP_SIZE].set && ls[K_SP_SIZE].n ? &ls[K_SP_SIZE] : &ls[K_SP_REALSIZE];
            if (sz->set && sz->n) {
                int64_t real;
                if (parse_dec(sz->v, sz->n, &real) < 0 || real < 0)
                    return fail(p, off, "invalid GNU sparse size");
                e->size = (uint64_t)real;
            }
            if (kind == LS_TAR_SPARSE_PAX_10) {
                s->sp_count = 0;
                next = ST_SPARSE_MAP;
                p->stored_left = stored;
                p->map_nl = 0;
                p->map_need = 0;
                p->map_line = 0;
                p->ext.len = 0;
            } else {
                int64_t nb;
                if (!ls[K_SP_NUMBLOCKS].set || parse_dec(ls[K_SP_NUMBLOCKS].v, ls[K_SP_NUMBLOCKS].n, &nb) < 0 ||
                    nb < 0)
                    return fail(p, off, "missing or invalid GNU.sparse.numblocks");
                if (!found00) {
                    if (sparse_01(p, s, &ls[K_SP_MAP]) < 0)
                        return -1;
                }
                if ((uint64_t)nb != s->sp_count - before)
                    return fail(p, off, "GNU.sparse.numblocks does not match the sparse map");
            }
        } else {
            s->sp_count = 0;
        }
    }
    if (e->sparse_kind != LS_TAR_SPARSE_NONE)
        e->flags |= LS_TAR_F_SPARSE;

    if (next == ST_ENTRY) {
        if (e->sparse_kind != LS_TAR_SPARSE_NONE) {
            if (sparse_finalize(p, s, stored) < 0)
                return -1;
        } else {
            e->data_size = stored;
            p->data_area = stored;
        }
    }
    p->state = next;
    return 0;
}

/* Point the entry's string fields into its buffers (after all appends). */
static void entry_pointers(ls_tar_parser *p, entry_store *s)
{
    ls_tar_entry *e = &s->e;
    e->name = lbuf_ptr(&s->name);
    e->name_len = s->name.len;
    e->linkname = lbuf_ptr(&s->link);
    e->linkname_len = s->link.len;
    e->uname = lbuf_ptr(&s->uname);
    e->uname_len = s->uname.len;
    e->gname = lbuf_ptr(&s->gname);
    e->gname_len = s->gname.len;
    e->pax = lbuf_ptr(&s->pax);
    e->pax_len = s->pax.len;
    const lbuf *gl = &p->glob[p->glob_latest];
    e->pax_global = lbuf_ptr(gl);
    e->pax_global_len = gl->len;
    e->pax_global_generation = p->glob_generation;
}

/* 1.0 map text complete in p->ext: parse it into the building entry. */
static int parse_map10(ls_tar_parser *p, entry_store *s)
{
    const uint8_t *b = lbuf_ptr(&p->ext);
    size_t n = p->ext.len, i = 0;
    int64_t vals[2];
    int nv = 0;
    int first = 1;
    while (i < n) {
        const uint8_t *nl = memchr(b + i, '\n', n - i);
        if (!nl)
            break;
        size_t j = (size_t)(nl - b);
        if (first && j > i && b[i] == '#') {
            i = j + 1; /* comment line before the count */
            continue;
        }
        int64_t x;
        if (parse_dec(b + i, j - i, &x) < 0)
            return fail(p, s->e.header_offset, "malformed GNU sparse 1.0 map");
        i = j + 1;
        if (first) {
            first = 0;
            continue;
        }
        vals[nv++] = x;
        if (nv == 2) {
            if (sparse_add(p, s, vals[0], vals[1], s->e.header_offset) < 0)
                return -1;
            nv = 0;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ block handlers */

static int on_header(ls_tar_parser *p, const uint8_t *b, uint64_t off, ls_tar_event *ev)
{
    if (is_zero_block(b)) {
        p->end_seen = 1;
        p->state = ST_END2;
        return emit(ev, LS_TAR_EV_END, off, b, BLK, 0);
    }
    hdr_t h;
    const char *msg = parse_header(b, &h);
    {
        /* name for error messages */
        uint8_t tmp[256];
        size_t n = 0;
        if (!msg && h.prefix_len) {
            memcpy(tmp, h.prefix, h.prefix_len);
            n = h.prefix_len;
            tmp[n++] = '/';
        }
        size_t nl = cstrlen(b, 100);
        memcpy(tmp + n, b, nl);
        n += nl;
        if (!p->have_longname || msg)
            set_errname(p, tmp, n);
        else
            set_errname(p, p->longname.p, p->longname.len);
    }
    if (msg)
        return fail(p, off, "%s", msg);
    int tf = h.typeflag;
    if (tf == 'x' || tf == 'X' || tf == 'g' || tf == 'L' || tf == 'K') {
        if ((uint64_t)h.size > p->max_ext)
            return fail(p, off, "extended header of %llu bytes exceeds the limit of %llu",
                        (unsigned long long)h.size, (unsigned long long)p->max_ext);
        if (tf != 'g' && !p->have_first) {
            p->have_first = 1;
            p->first_off = off;
        }
        if (tf == 'x' || tf == 'X')
            p->have_pax = 0; /* only the last 'x' before an entry counts */
        p->ext_kind = tf;
        p->ext_hdr_off = off;
        p->ext.len = 0;
        if (lbuf_reserve(&p->ext, (size_t)h.size) < 0)
            return oom(p);
        p->remaining = (uint64_t)h.size;
        p->ppos = 0;
        p->pad = pad_of((uint64_t)h.size);
        p->after_pad = ST_HEADER;
        if (h.size > 0) {
            p->state = ST_EXT_DATA;
        } else {
            if (ext_complete(p) < 0)
                return -1;
            p->state = ST_HEADER;
        }
        return emit(ev, LS_TAR_EV_HEADER, off, b, BLK, 0);
    }
    if (build_entry(p, b, &h, off) < 0)
        return -1;
    return emit(ev, LS_TAR_EV_HEADER, off, b, BLK, 0);
}

static int on_sparse_ext(ls_tar_parser *p, const uint8_t *b, uint64_t off, ls_tar_event *ev)
{
    entry_store *s = &p->ent[p->cur ^ 1];
    p->sparse_ext_bytes += BLK;
    if (p->sparse_ext_bytes > p->max_ext)
        return fail(p, off, "old GNU sparse extension blocks exceed %llu bytes", (unsigned long long)p->max_ext);
    if (gnu_sparse_entries(p, s, b, 21, off) < 0)
        return -1;
    if (!b[504]) {
        if (sparse_finalize(p, s, s->e.stored_size) < 0)
            return -1;
        p->state = ST_ENTRY;
    }
    return emit(ev, LS_TAR_EV_EXTDATA, off, b, BLK, p->sparse_ext_bytes - BLK);
}

static int on_end2(ls_tar_parser *p, const uint8_t *b, uint64_t off, ls_tar_event *ev)
{
    p->state = ST_TRAILING;
    /* a lone zero block also ends the archive: what follows is trailing */
    return emit(ev, is_zero_block(b) ? LS_TAR_EV_END : LS_TAR_EV_TRAILING, off, b, BLK, 0);
}

/* ------------------------------------------------------------------ driver */

static int start_data(ls_tar_parser *p, ls_tar_event *ev)
{
    p->cur ^= 1;
    p->have_current = 1;
    p->glob_cur = p->glob_latest;
    entry_store *s = &p->ent[p->cur];
    ls_tar_entry *e = &s->e;
    e->data_offset = p->off;
    entry_pointers(p, s);
    set_errname(p, e->name, e->name_len);
    p->data_left = e->data_size;
    p->file_pos = 0;
    p->sp_idx = 0;
    p->sp_done = 0;
    /* stored bytes no sparse region references are reported as padding */
    p->data_pad = p->data_area - e->data_size + pad_of(p->data_area);
    if (p->data_left)
        p->state = ST_DATA;
    else if (p->data_pad) {
        p->pad = p->data_pad;
        p->after_pad = ST_HEADER;
        p->state = ST_PAD;
    } else
        p->state = ST_HEADER;
    return emit(ev, LS_TAR_EV_ENTRY, p->off, NULL, 0, 0);
}

int ls_tar_next(ls_tar_parser *p, const uint8_t *buf, size_t len, size_t *consumed, ls_tar_event *ev)
{
    *consumed = 0;
    if (p->state == ST_ERROR)
        return -1;
    if (!buf)
        len = 0;
    switch (p->state) {
    case ST_HEADER:
    case ST_END2:
    case ST_GNU_SPARSE_EXT: {
        const uint8_t *b;
        uint64_t off;
        if (p->blk_fill == 0 && len >= BLK) {
            b = buf;
            off = p->off;
            *consumed = BLK;
        } else {
            if (p->blk_fill == 0)
                p->blk_off = p->off;
            size_t n = ls_min_size(BLK - p->blk_fill, len);
            if (n)
                memcpy(p->blk + p->blk_fill, buf, n);
            p->blk_fill += n;
            *consumed = n;
            p->off += n;
            if (p->blk_fill < BLK)
                return 0;
            p->blk_fill = 0;
            b = p->blk;
            off = p->blk_off;
            p->off -= BLK; /* re-added below */
        }
        p->off += BLK;
        if (p->state == ST_HEADER)
            return on_header(p, b, off, ev);
        if (p->state == ST_END2)
            return on_end2(p, b, off, ev);
        return on_sparse_ext(p, b, off, ev);
    }
    case ST_EXT_DATA: {
        if (len == 0)
            return 0;
        size_t n = (size_t)(p->remaining < len ? p->remaining : len);
        if (lbuf_append(&p->ext, buf, n) < 0)
            return oom(p);
        uint64_t off = p->off, fo = p->ppos;
        p->off += n;
        p->remaining -= n;
        p->ppos += n;
        *consumed = n;
        /* an error found in the payload is reported by the next call, after
         * this event: the events before an error do not depend on how the
         * input was split */
        if (p->remaining == 0 && ext_complete(p) == 0)
            p->state = p->pad ? ST_PAD : ST_HEADER;
        return emit(ev, LS_TAR_EV_EXTDATA, off, buf, n, fo);
    }
    case ST_PAD:
    case ST_MAP_PAD: {
        if (len == 0)
            return 0;
        size_t n = (size_t)(p->pad < len ? p->pad : len);
        uint64_t off = p->off;
        p->off += n;
        p->pad -= n;
        *consumed = n;
        if (p->state == ST_MAP_PAD)
            p->stored_left -= n;
        if (p->pad == 0) {
            if (p->state == ST_MAP_PAD) {
                entry_store *s = &p->ent[p->cur ^ 1];
                if (sparse_finalize(p, s, p->stored_left) == 0)
                    p->state = ST_ENTRY;
            } else {
                p->state = p->after_pad;
            }
        }
        return emit(ev, LS_TAR_EV_PADDING, off, buf, n, 0);
    }
    case ST_SPARSE_MAP: {
        if (len == 0)
            return 0;
        entry_store *s = &p->ent[p->cur ^ 1];
        /* every consumed map byte is kept in p->ext, which never exceeds max_ext */
        uint64_t room = p->ext.len < p->max_ext ? p->max_ext - p->ext.len : 0;
        size_t lim = (size_t)(p->stored_left < len ? p->stored_left : len);
        if (lim > room)
            lim = (size_t)room;
        size_t k = 0, app = 0;
        uint64_t fo = p->ext.len;
        int done = 0, err = 0;
        while (k < lim) {
            if (buf[k++] != '\n')
                continue;
            if (p->map_nl == 0) {
                /* the number of regions, possibly after '#' comment lines */
                int64_t cnt;
                if (lbuf_append(&p->ext, buf + app, k - app) < 0)
                    return oom(p);
                app = k;
                const uint8_t *line = p->ext.p + p->map_line;
                size_t ll = p->ext.len - 1 - p->map_line;
                p->map_line = p->ext.len;
                if (ll > 0 && line[0] == '#')
                    continue;
                p->map_nl = 1;
                if (parse_dec(line, ll, &cnt) < 0 || cnt < 0) {
                    err = fail(p, s->e.header_offset, "malformed GNU sparse 1.0 map");
                    break;
                }
                if ((uint64_t)cnt > p->max_sparse) {
                    err = fail(p, s->e.header_offset, "too many sparse regions (limit %llu)",
                               (unsigned long long)p->max_sparse);
                    break;
                }
                p->map_need = 1 + 2 * (uint64_t)cnt;
            } else {
                p->map_nl++;
            }
            if (p->map_nl == p->map_need) {
                done = 1;
                break;
            }
        }
        if (lbuf_append(&p->ext, buf + app, k - app) < 0)
            return oom(p);
        uint64_t off = p->off;
        p->off += k;
        p->stored_left -= k;
        *consumed = k;
        /* errors are reported by the next call, after this event */
        if (err) {
        } else if (done) {
            if (parse_map10(p, s) == 0) {
                p->pad = pad_of(p->ext.len);
                if (p->pad > p->stored_left)
                    fail(p, s->e.header_offset, "GNU sparse 1.0 map extends past the entry data");
                else if (p->pad)
                    p->state = ST_MAP_PAD;
                else if (sparse_finalize(p, s, p->stored_left) == 0)
                    p->state = ST_ENTRY;
            }
        } else if (p->stored_left == 0) {
            fail(p, s->e.header_offset, "GNU sparse 1.0 map extends past the entry data");
        } else if (p->ext.len >= p->max_ext) {
            fail(p, s->e.header_offset, "GNU sparse 1.0 map exceeds %llu bytes", (unsigned long long)p->max_ext);
        }
        if (k == 0) {
            if (p->state != ST_ERROR)
                fail(p, p->off, "GNU sparse 1.0 map: no progress");
            return -1;
        }
        return emit(ev, LS_TAR_EV_EXTDATA, off, buf, k, fo);
    }
    case ST_ENTRY:
        return start_data(p, ev);
    case ST_DATA: {
        if (len == 0)
            return 0;
        entry_store *s = &p->ent[p->cur];
        size_t n = (size_t)(p->data_left < len ? p->data_left : len);
        uint64_t fo;
        if (s->e.sparse_kind != LS_TAR_SPARSE_NONE) {
            while (p->sp_idx < s->sp_count && s->sp[p->sp_idx].length == p->sp_done) {
                p->sp_idx++;
                p->sp_done = 0;
            }
            /* data_left > 0 guarantees a region with bytes left */
            const ls_tar_sparse_region *r = &s->sp[p->sp_idx];
            uint64_t rl = r->length - p->sp_done;
            if (n > rl)
                n = (size_t)rl;
            fo = r->offset + p->sp_done;
            p->sp_done += n;
        } else {
            fo = p->file_pos;
            p->file_pos += n;
        }
        uint64_t off = p->off;
        p->off += n;
        p->data_left -= n;
        *consumed = n;
        if (p->data_left == 0) {
            if (p->data_pad) {
                p->pad = p->data_pad;
                p->after_pad = ST_HEADER;
                p->state = ST_PAD;
            } else
                p->state = ST_HEADER;
        }
        return emit(ev, LS_TAR_EV_DATA, off, buf, n, fo);
    }
    case ST_TRAILING: {
        if (len == 0)
            return 0;
        uint64_t off = p->off;
        p->off += len;
        *consumed = len;
        return emit(ev, LS_TAR_EV_TRAILING, off, buf, len, 0);
    }
    }
    return fail(p, p->off, "internal error: bad state");
}

int ls_tar_finish(ls_tar_parser *p, ls_tar_event *ev)
{
    switch (p->state) {
    case ST_ERROR:
        return -1;
    case ST_HEADER:
        if (p->blk_fill)
            return fail(p, p->blk_off, "truncated header block");
        return 0;
    case ST_END2:
        if (p->blk_fill) {
            size_t n = p->blk_fill;
            p->blk_fill = 0;
            p->state = ST_TRAILING;
            return emit(ev, LS_TAR_EV_TRAILING, p->blk_off, p->blk, n, 0);
        }
        return 0;
    case ST_TRAILING:
        return 0;
    case ST_PAD:
        return fail(p, p->off, "truncated padding (%llu bytes missing)", (unsigned long long)p->pad);
    case ST_ENTRY:
        return start_data(p, ev);
    case ST_EXT_DATA:
        return fail(p, p->off, "truncated extended header data");
    case ST_GNU_SPARSE_EXT:
        return fail(p, p->blk_fill ? p->blk_off : p->off, "truncated old GNU sparse extension block");
    case ST_SPARSE_MAP:
    case ST_MAP_PAD:
        return fail(p, p->off, "truncated GNU sparse 1.0 map");
    case ST_DATA:
        return fail(p, p->off, "truncated entry data (%llu bytes missing)", (unsigned long long)p->data_left);
    }
    return fail(p, p->off, "internal error: bad state");
}
