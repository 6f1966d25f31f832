/* One-pass layer scanner; see scanner.h for the contract. */
#include "scanner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fastcdc.h"
#include "sha256.h"
#include "tar.h"

/* A growable byte or record array. Capacity only grows by doubling, and the
 * amount stored per feed is bounded by the input length or LS_SCAN_MAX_*. */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} ls_buf;

struct ls_scanner {
    ls_tar_parser *tar;
    ls_cdc cdc;
    int hash_stream;
    int raw;
    int parse_only;           /* LS_SCAN_PARSE_ONLY: content is skipped, not chunked */
    int trailing;             /* chunking the bytes after the end-of-archive marker */
    ls_sha256_ctx stream;

    /* chunk in progress */
    ls_sha256_ctx chunk;
    uint64_t chunk_offset;
    uint64_t chunk_len;

    /* entry in progress */
    int in_entry;
    uint64_t entry_data_left; /* content bytes of the current entry still to come */
    uint64_t entry_index;     /* index of the next entry */
    uint64_t chunk_index;     /* index of the next chunk */

    uint64_t position;

    ls_buf chunks;   /* ls_scan_chunk[] */
    ls_buf segments; /* bytes */
    ls_buf entries;  /* ls_scan_entry[] */
    ls_buf names;    /* bytes */

    int failed;
    char errmsg[256];
    uint64_t erroff;
    char errentry[256];
};

static int buf_reserve(ls_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -1;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_append(ls_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void set_error(ls_scanner *s, const char *msg, uint64_t off, const char *entry)
{
    s->failed = 1;
    snprintf(s->errmsg, sizeof s->errmsg, "%s", msg);
    s->erroff = off;
    snprintf(s->errentry, sizeof s->errentry, "%s", entry ? entry : "");
}

static void set_tar_error(ls_scanner *s)
{
    set_error(s, ls_tar_error_message(s->tar), ls_tar_error_offset(s->tar), ls_tar_error_entry(s->tar));
}

ls_scanner *ls_scan_new(uint32_t min_size, uint32_t avg_size, uint32_t max_size, int flags)
{
    ls_scanner *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (ls_cdc_init(&s->cdc, min_size, avg_size, max_size) < 0) {
        free(s);
        return NULL;
    }
    s->tar = ls_tar_new();
    if (!s->tar) {
        free(s);
        return NULL;
    }
    s->hash_stream = (flags & LS_SCAN_HASH_STREAM) != 0;
    s->raw = (flags & LS_SCAN_RAW) != 0;
    s->parse_only = (flags & LS_SCAN_PARSE_ONLY) != 0;
    if (s->raw && s->parse_only) {
        ls_scan_free(s);
        return NULL;
    }
    ls_sha256_init(&s->stream);
    if (s->raw) {
        /* the whole stream is the content of one pseudo-entry */
        s->in_entry = 1;
        s->entry_data_left = UINT64_MAX;
        s->entry_index = 1;
    }
    return s;
}

void ls_scan_free(ls_scanner *s)
{
    if (!s)
        return;
    ls_tar_free(s->tar);
    free(s->chunks.data);
    free(s->segments.data);
    free(s->entries.data);
    free(s->names.data);
    free(s);
}

static int emit_chunk(ls_scanner *s)
{
    ls_scan_chunk c;
    c.offset = s->chunk_offset;
    c.length = (uint32_t)s->chunk_len; /* <= max_size <= 64 MiB */
    c.entry = s->trailing ? LS_SCAN_TRAILING_ENTRY : (uint32_t)(s->entry_index - 1);
    ls_sha256_final(&s->chunk, c.digest);
    if (buf_append(&s->chunks, &c, sizeof c) < 0)
        return -1;
    s->chunk_index++;
    s->chunk_len = 0;
    return 0;
}

static int on_entry(ls_scanner *s)
{
    const ls_tar_entry *te = ls_tar_current(s->tar);
    ls_scan_entry e;
    memset(&e, 0, sizeof e);
    e.offset = te->offset;
    e.data_offset = te->data_offset;
    e.size = te->size;
    e.data_size = te->data_size;
    e.first_chunk = s->chunk_index;
    e.mode = (uint32_t)(te->mode & 07777);
    e.typeflag = te->typeflag;
    e.sparse = te->sparse_kind != LS_TAR_SPARSE_NONE;
    if (te->name_len > UINT32_MAX || te->linkname_len > UINT32_MAX)
        return -1;
    e.name_pos = s->names.len;
    e.name_len = (uint32_t)te->name_len;
    e.linkname_len = (uint32_t)te->linkname_len;
    if (buf_append(&s->names, te->name, te->name_len) < 0 ||
        buf_append(&s->names, te->linkname, te->linkname_len) < 0 ||
        buf_append(&s->entries, &e, sizeof e) < 0)
        return -1;
    s->entry_index++;
    s->in_entry = 1;
    s->entry_data_left = te->data_size;
    ls_cdc_reset(&s->cdc);
    s->chunk_len = 0;
    return 0;
}

/* Chunk and hash content bytes of the current entry. */
static int on_data(ls_scanner *s, const uint8_t *p, size_t n, uint64_t offset)
{
    if (!s->in_entry || n > s->entry_data_left) {
        set_error(s, "content bytes outside an entry's declared size", offset, "");
        return -1;
    }
    s->entry_data_left -= n;
    if (s->parse_only) {
        if (s->entry_data_left == 0)
            s->in_entry = 0;
        return 0;
    }
    while (n > 0) {
        int cut = 0;
        if (s->chunk_len == 0) {
            ls_sha256_init(&s->chunk);
            s->chunk_offset = offset;
        }
        size_t take = ls_cdc_next(&s->cdc, p, n, &cut);
        ls_sha256_update(&s->chunk, p, take);
        s->chunk_len += take;
        p += take;
        n -= take;
        offset += take;
        if (cut && emit_chunk(s) < 0)
            return -1;
    }
    if (s->entry_data_left == 0) {
        if (s->chunk_len > 0 && emit_chunk(s) < 0)
            return -1;
        s->in_entry = 0;
    }
    return 0;
}

static int outputs_full(const ls_scanner *s)
{
    return s->chunks.len / sizeof(ls_scan_chunk) >= LS_SCAN_MAX_CHUNKS ||
           s->entries.len / sizeof(ls_scan_entry) >= LS_SCAN_MAX_ENTRIES ||
           s->names.len >= LS_SCAN_MAX_NAME_BYTES;
}

static int on_event(ls_scanner *s, const ls_tar_event *ev)
{
    switch (ev->kind) {
    case LS_TAR_EV_ENTRY:
        if (s->in_entry) {
            set_error(s, "entry started before the previous one's content ended", ev->offset, "");
            return -1;
        }
        if (on_entry(s) < 0) {
            set_error(s, "out of memory recording an entry", ev->offset, "");
            return -1;
        }
        if (s->entry_data_left == 0)
            s->in_entry = 0;
        return 0;
    case LS_TAR_EV_DATA:
        if (on_data(s, ev->bytes, (size_t)ev->length, ev->offset) < 0) {
            if (!s->failed)
                set_error(s, "out of memory recording a chunk", ev->offset, "");
            return -1;
        }
        return 0;
    case LS_TAR_EV_TRAILING:
        /* Bytes after the end of the archive can be of any size (record
         * padding, or anything at all): chunk them like content so that
         * memory never grows with them, instead of keeping them verbatim. */
        if (!s->trailing) {
            if (s->in_entry) {
                set_error(s, "trailing bytes inside an entry", ev->offset, "");
                return -1;
            }
            s->trailing = 1;
            s->in_entry = 1;
            s->entry_data_left = UINT64_MAX;
            ls_cdc_reset(&s->cdc);
            s->chunk_len = 0;
        }
        if (on_data(s, ev->bytes, (size_t)ev->length, ev->offset) < 0) {
            if (!s->failed)
                set_error(s, "out of memory recording a chunk", ev->offset, "");
            return -1;
        }
        return 0;
    default:
        if (buf_append(&s->segments, ev->bytes, (size_t)ev->length) < 0) {
            set_error(s, "out of memory recording a segment", ev->offset, "");
            return -1;
        }
        return 0;
    }
}

static void drain(ls_scanner *s)
{
    s->chunks.len = 0;
    s->segments.len = 0;
    s->entries.len = 0;
    s->names.len = 0;
}

static void describe(const ls_scanner *s, size_t consumed, ls_scan_out *out)
{
    out->consumed = consumed;
    out->chunks = (const ls_scan_chunk *)s->chunks.data;
    out->chunk_count = s->chunks.len / sizeof(ls_scan_chunk);
    out->segments = s->segments.data;
    out->segments_length = s->segments.len;
    out->entries = (const ls_scan_entry *)s->entries.data;
    out->entry_count = s->entries.len / sizeof(ls_scan_entry);
    out->names = s->names.data;
    out->names_length = s->names.len;
    out->retain_from = s->chunk_len > 0 ? s->chunk_offset : s->position;
}

int ls_scan_feed(ls_scanner *s, const uint8_t *buf, size_t len, ls_scan_out *out)
{
    size_t used = 0;
    drain(s);
    describe(s, 0, out);
    if (s->failed)
        return -1;
    if (s->raw) {
        size_t n = len;
        /* bound the chunk records of one call like the tar path does */
        if (n > (size_t)LS_SCAN_MAX_CHUNKS * 64)
            n = (size_t)LS_SCAN_MAX_CHUNKS * 64;
        if (on_data(s, buf, n, s->position) < 0) {
            if (!s->failed)
                set_error(s, "out of memory recording a chunk", s->position, "");
            return -1;
        }
        used = n;
    }
    while (!s->raw) {
        size_t n = 0;
        ls_tar_event ev;
        int r = ls_tar_next(s->tar, buf + used, len - used, &n, &ev);
        used += n;
        if (r < 0) {
            set_tar_error(s);
            return -1;
        }
        if (r == 0)
            break;
        if (on_event(s, &ev) < 0)
            return -1;
        if (outputs_full(s))
            break;
    }
    if (s->hash_stream)
        ls_sha256_update(&s->stream, buf, used);
    s->position += used;
    describe(s, used, out);
    return 0;
}

int ls_scan_finish(ls_scanner *s, uint8_t digest[32], ls_scan_out *out)
{
    drain(s);
    describe(s, 0, out);
    if (s->failed)
        return -1;
    while (!s->raw) {
        ls_tar_event ev;
        int r = ls_tar_finish(s->tar, &ev);
        if (r < 0) {
            set_tar_error(s);
            return -1;
        }
        if (r == 0)
            break;
        if (on_event(s, &ev) < 0)
            return -1;
    }
    if (s->raw || s->trailing) {
        /* the pseudo-entry (the whole stream, or the bytes after the end of
         * the archive) ends with the stream: its last chunk is complete */
        if (s->chunk_len > 0 && emit_chunk(s) < 0) {
            set_error(s, "out of memory recording a chunk", s->position, "");
            return -1;
        }
        s->in_entry = 0;
    }
    if (s->in_entry || s->chunk_len > 0) {
        set_error(s, "stream ended inside an entry's content", s->position, "");
        return -1;
    }
    if (s->hash_stream)
        ls_sha256_final(&s->stream, digest);
    else
        memset(digest, 0, 32);
    describe(s, 0, out);
    return 0;
}

uint64_t ls_scan_position(const ls_scanner *s) { return s->position; }

const char *ls_scan_error_message(const ls_scanner *s) { return s->errmsg; }
uint64_t ls_scan_error_offset(const ls_scanner *s) { return s->erroff; }
const char *ls_scan_error_entry(const ls_scanner *s) { return s->errentry; }
