/* One-pass layer scanner: the ingest hot path.
 *
 * Fed a layer tar stream in buffers of any size, it does in one pass:
 *   - the SHA-256 of the whole stream (the diff ID; the blob digest when the
 *     layer is uncompressed), unless the caller hashes the stream itself (for
 *     example on a second thread, see layerstore/scan.py);
 *   - tar parsing (tar.h), routing every byte of the stream either to the
 *     segment buffer (headers, extended headers, padding, end-of-archive
 *     blocks: kept verbatim) or to content; bytes after the end-of-archive
 *     marker, which may be of any size, are chunked like content and their
 *     chunks carry the entry index LS_SCAN_TRAILING_ENTRY;
 *   - FastCDC chunking of each entry's content (fastcdc.h; boundaries restart
 *     at every entry, so a file smaller than the minimum chunk size is one
 *     chunk and identical files give identical chunks whatever surrounds
 *     them) and the SHA-256 of every chunk.
 *
 * Output, described by each ls_scan_feed call (ls_scan_out):
 *   - chunks:  ls_scan_chunk records in stream order;
 *   - segment bytes: every non-content byte, in stream order;
 *   - entries: ls_scan_entry records, names in a side buffer.
 * The stream is rebuilt exactly by walking the chunks in order: before each
 * chunk, copy (chunk.offset - position) bytes from the segment bytes; then the
 * chunk's content; after the last chunk, the rest of the segment bytes.
 *
 * With LS_SCAN_PARSE_ONLY the tar is parsed and checked as usual but content
 * bytes are skipped: no chunks are made (a layer kept as its compressed blob
 * until compaction needs only its diff ID, entries and validity).
 *
 * With LS_SCAN_RAW the stream is not parsed: all of it is content, chunked
 * and hashed as one file (any blob that is not a layer tar), with no
 * segments and no entries.
 *
 * Memory: the outputs of one call are bounded (LS_SCAN_MAX_* below); when a
 * bound is reached ls_scan_feed stops early and reports how much of the input
 * it consumed, so the caller drains the outputs and feeds the rest. Nothing is
 * ever allocated from a size read from the stream.
 */
#ifndef LS_SCANNER_H
#define LS_SCANNER_H

#include <stddef.h>
#include <stdint.h>

/* ls_scan_chunk.entry of chunks made of the bytes after the end of the archive. */
#define LS_SCAN_TRAILING_ENTRY 0xFFFFFFFFu

/* A feed call returns early once an output passes one of these. */
#define LS_SCAN_MAX_CHUNKS 65536
#define LS_SCAN_MAX_ENTRIES 65536
#define LS_SCAN_MAX_NAME_BYTES (16 * 1024 * 1024)

typedef struct ls_scanner ls_scanner;

typedef struct {
    uint64_t offset;    /* stream offset of the chunk's first byte */
    uint32_t length;    /* bytes, 1..max_size */
    uint32_t entry;     /* index of the entry the chunk belongs to (0-based), or
                           LS_SCAN_TRAILING_ENTRY */
    uint8_t digest[32]; /* SHA-256 of the chunk's bytes */
} ls_scan_chunk;

typedef struct {
    uint64_t offset;      /* stream offset of the entry's first header block */
    uint64_t data_offset; /* stream offset of its first content byte */
    uint64_t size;        /* logical size in bytes (sparse: the real file size) */
    uint64_t data_size;   /* content bytes in the stream (sparse: stored regions only) */
    uint64_t first_chunk; /* index (counted over the whole stream) of its first chunk;
                             its chunks are those whose entry field is this entry's index */
    uint32_t mode;        /* permission bits and set-id/sticky bits (mode & 07777) */
    int32_t typeflag;     /* header typeflag byte */
    uint32_t sparse;      /* 1 when the content is sparse */
    uint32_t reserved;
    uint64_t name_pos;    /* name bytes at names[name_pos .. name_pos + name_len) */
    uint32_t name_len;
    uint32_t linkname_len; /* linkname follows the name in the names buffer */
} ls_scan_entry;

/* ls_scan_new flags */
#define LS_SCAN_HASH_STREAM 1 /* compute the stream SHA-256 here (else the caller does) */
#define LS_SCAN_RAW 2         /* not a tar: the whole stream is content, chunked as one file */
#define LS_SCAN_PARSE_ONLY 4  /* a tar whose content is skipped: no chunks (entries, segments and
                                 the stream digest as usual); not with LS_SCAN_RAW */

/* min/avg/max: FastCDC parameters (bytes); flags: LS_SCAN_*. NULL on invalid
 * parameters or out of memory. */
ls_scanner *ls_scan_new(uint32_t min_size, uint32_t avg_size, uint32_t max_size, int flags);
void ls_scan_free(ls_scanner *s);

/* What one ls_scan_feed or ls_scan_finish call produced. The pointers stay
 * valid until the next feed or finish call, which drains them first. One
 * call returns everything, so that a caller that releases a lock (such as
 * Python's GIL) around every call makes one call per buffer. */
typedef struct {
    size_t consumed;               /* input bytes scanned (feed) */
    const ls_scan_chunk *chunks;   /* completed chunks, in stream order */
    size_t chunk_count;
    const uint8_t *segments;       /* non-content bytes, in stream order */
    size_t segments_length;
    const ls_scan_entry *entries;  /* entries whose headers completed */
    size_t entry_count;
    const uint8_t *names;          /* their names and link names */
    size_t names_length;
    /* Stream offset of the first byte the caller may still be asked for:
     * the start of a chunk in progress, else the current position. Input
     * before it can be released. */
    uint64_t retain_from;
} ls_scan_out;

/* Scan buf[0..len). Returns 0 and fills *out (out->consumed == len unless an
 * output bound was reached: take the outputs and call again with the rest),
 * or -1 on a tar format error (ls_scan_error_*; the scanner is then
 * unusable). */
int ls_scan_feed(ls_scanner *s, const uint8_t *buf, size_t len, ls_scan_out *out);

/* End of stream: returns 0, writes the stream digest (all zero when
 * hash_stream was 0) and fills *out with what finishing produced, or -1 when
 * the stream is truncated or invalid. */
int ls_scan_finish(ls_scanner *s, uint8_t digest[32], ls_scan_out *out);

/* Bytes consumed so far. */
uint64_t ls_scan_position(const ls_scanner *s);

const char *ls_scan_error_message(const ls_scanner *s);
uint64_t ls_scan_error_offset(const ls_scanner *s);
const char *ls_scan_error_entry(const ls_scanner *s);

#endif
