/* Push-based, incremental tar parser.
 *
 * The caller feeds arbitrary slices of a tar stream; the parser never reads
 * ahead on its own and never allocates from a size claimed by the input
 * without a cap. It reports the stream as a sequence of events; every byte of
 * the stream is carried by exactly one bytes-carrying event, in order, so the
 * concatenation of all event bytes reproduces the input exactly.
 *
 * Event sequence for one entry:
 *   for each extended header (PAX 'x'/'g', GNU 'L'/'K', ...):
 *       HEADER (512 bytes), EXTDATA (its payload), PADDING (to 512)
 *   HEADER (the entry's own 512-byte header)
 *   EXTDATA* (old-GNU sparse extension blocks, 512 bytes each)
 *   EXTDATA PADDING (GNU sparse 1.0: the map text at the start of the data area
 *                    and the rest of its last block)
 *   ENTRY (zero-length; ls_tar_current() is valid from here)
 *   DATA* (content; for sparse files the stored regions, file_offset = logical;
 *          split at region boundaries and wherever the input is split)
 *   PADDING (to 512; for a sparse entry whose stored data is longer than its
 *            map describes, the unreferenced bytes are PADDING as well)
 * then END (one event per end-of-archive zero block: the first zero block, and
 * the next block if it is zero too) and TRAILING (everything after, verbatim;
 * also a non-zero block that follows a lone zero block).
 * Typeflags 1-6 (links, devices, directories, fifos) carry no DATA whatever
 * their size field says (ls_tar_entry.size keeps the field, data_size is 0).
 *
 * End of input (ls_tar_finish) is clean at a header boundary, even without the
 * end-of-archive marker or after dangling extended headers, and anywhere after
 * the first zero block; elsewhere (inside a header, payload, data or padding)
 * it is an error.
 *
 * A PAX global header ('g') is reported as HEADER/EXTDATA/PADDING; its records
 * apply to every following entry (they are visible in ls_tar_entry.pax_global)
 * and it produces no ENTRY of its own.
 *
 * Limits (defaults, changeable with ls_tar_set_limits):
 *   - extended header payload (one PAX 'x'/'g', one GNU 'L'/'K', one sparse 1.0
 *     map, the accumulated old-GNU extension blocks): LS_TAR_DEFAULT_MAX_EXT
 *     (1 MiB); larger claims are rejected before anything is allocated;
 *   - sparse regions per entry: LS_TAR_DEFAULT_MAX_SPARSE (65536).
 *   Set limits before the first ls_tar_next call.
 * The accumulated 'g' records are kept within the same bound (a later record
 * for the same key replaces an earlier one when the bound would be passed).
 */
#ifndef LS_TAR_H
#define LS_TAR_H

#include <stddef.h>
#include <stdint.h>

#define LS_TAR_BLOCK 512
#define LS_TAR_DEFAULT_MAX_EXT (1024 * 1024)
#define LS_TAR_DEFAULT_MAX_SPARSE 65536

typedef struct ls_tar_parser ls_tar_parser;

enum {
    LS_TAR_EV_HEADER = 1, /* a 512-byte header block (of any entry, incl. extended headers) */
    LS_TAR_EV_EXTDATA,    /* payload of extended headers: PAX x/g records, GNU L/K names,
                             old-GNU sparse extension blocks, the GNU sparse 1.0 map */
    LS_TAR_EV_ENTRY,      /* zero-length: metadata of the next real entry is complete */
    LS_TAR_EV_DATA,       /* content bytes of the current entry */
    LS_TAR_EV_PADDING,    /* fill after a payload up to the 512-byte boundary */
    LS_TAR_EV_END,        /* the end-of-archive zero blocks */
    LS_TAR_EV_TRAILING    /* everything after the end-of-archive marker, verbatim */
};

typedef struct {
    int kind;             /* LS_TAR_EV_* */
    uint64_t offset;      /* stream offset of bytes[0] (for ENTRY: current stream offset) */
    uint64_t length;      /* number of bytes (0 for ENTRY) */
    const uint8_t *bytes; /* into the caller's buf or the parser's buffer; valid until the next call */
    uint64_t file_offset; /* DATA: logical offset in the entry's content; EXTDATA: offset in the payload */
} ls_tar_event;

/* Header format of the entry's own header block. */
enum {
    LS_TAR_FORMAT_V7 = 0,     /* no magic */
    LS_TAR_FORMAT_USTAR = 1,  /* "ustar\0" "00" */
    LS_TAR_FORMAT_GNU = 2,    /* "ustar  \0" (old GNU) */
    LS_TAR_FORMAT_STAR = 3    /* ustar with the star "tar\0" trailer at offset 508 */
};

/* ls_tar_entry.flags */
#define LS_TAR_F_PAX 0x1            /* a PAX 'x' header applied to the entry */
#define LS_TAR_F_PAX_GLOBAL 0x2     /* PAX 'g' records are in effect */
#define LS_TAR_F_GNU_LONGNAME 0x4   /* name came from a GNU 'L' entry */
#define LS_TAR_F_GNU_LONGLINK 0x8   /* linkname came from a GNU 'K' entry */
#define LS_TAR_F_SPARSE 0x10        /* the entry is sparse (see sparse/sparse_count) */
#define LS_TAR_F_BASE256 0x20       /* some numeric field was base-256 encoded */
#define LS_TAR_F_SIGNED_CHKSUM 0x40 /* checksum matched only the signed-char sum */
#define LS_TAR_F_HDRCHARSET_BINARY 0x80 /* hdrcharset=BINARY in effect */
#define LS_TAR_F_SPARSE_UNREFERENCED 0x100 /* stored data beyond the sparse map (reported as PADDING) */

/* Sparse kinds (ls_tar_entry.sparse_kind) */
enum {
    LS_TAR_SPARSE_NONE = 0,
    LS_TAR_SPARSE_OLDGNU = 1, /* type 'S' */
    LS_TAR_SPARSE_PAX_00 = 2, /* GNU.sparse.offset/numbytes records */
    LS_TAR_SPARSE_PAX_01 = 3, /* GNU.sparse.map */
    LS_TAR_SPARSE_PAX_10 = 4  /* map at the start of the data area */
};

typedef struct {
    uint64_t offset;
    uint64_t length;
} ls_tar_sparse_region;

/* Metadata of one real entry. String fields are raw bytes (not NUL-terminated
 * in general, length given), owned by the parser. */
typedef struct {
    const uint8_t *name;          /* effective path: GNU.sparse.name > GNU 'L' > PAX path > [prefix/]name */
    size_t name_len;
    const uint8_t *linkname;      /* GNU 'K' > PAX linkpath > header linkname */
    size_t linkname_len;
    const uint8_t *uname;
    size_t uname_len;
    const uint8_t *gname;
    size_t gname_len;
    const uint8_t *pax;           /* raw records of the entry's own 'x' header(s), concatenated */
    size_t pax_len;
    const uint8_t *pax_global;    /* raw records of every 'g' header so far, concatenated in order */
    size_t pax_global_len;
    uint64_t pax_global_generation; /* changes whenever the global records change */
    int typeflag;                 /* header typeflag byte (0 for '\0') */
    int format;                   /* LS_TAR_FORMAT_* */
    int sparse_kind;              /* LS_TAR_SPARSE_* */
    uint32_t flags;               /* LS_TAR_F_* */
    uint64_t size;                /* logical size (sparse: the real file size) */
    uint64_t stored_size;         /* payload bytes after the header in the stream (incl. a 1.0 map) */
    uint64_t data_size;           /* bytes reported as DATA events */
    uint64_t mode;                /* header mode field as stored (may include type bits) */
    int64_t uid;
    int64_t gid;
    int64_t mtime_sec;            /* seconds since the epoch, may be negative */
    uint32_t mtime_nsec;          /* 0..999999999, added to mtime_sec */
    int64_t devmajor;
    int64_t devminor;
    uint64_t offset;              /* offset of the entry's first header block (first extended header) */
    uint64_t header_offset;       /* offset of the entry's own header block */
    uint64_t data_offset;         /* offset of the first DATA byte */
    const ls_tar_sparse_region *sparse; /* data regions, sorted, non-overlapping; NULL if not sparse */
    size_t sparse_count;
} ls_tar_entry;

ls_tar_parser *ls_tar_new(void);
void ls_tar_free(ls_tar_parser *p);
/* max_ext: largest accepted extended-header payload in bytes (0 = default);
 * max_sparse: largest accepted number of sparse regions (0 = default). */
void ls_tar_set_limits(ls_tar_parser *p, uint64_t max_ext, uint64_t max_sparse);

/* Consume from buf. Returns 1 when *ev holds an event (*consumed = bytes of
 * buf used, may be 0), 0 when all of buf was consumed without completing an
 * event (feed more), -1 on error. After an error every call returns -1.
 * A fault found in bytes that an event carries (e.g. a malformed PAX record
 * in the last EXTDATA piece) is returned by the call after that event, so the
 * events before an error are the same however the input is split. */
int ls_tar_next(ls_tar_parser *p, const uint8_t *buf, size_t len, size_t *consumed, ls_tar_event *ev);
/* At end of input: 1 = *ev holds a last event (call again), 0 = the stream
 * ended cleanly, -1 = truncated/invalid. */
int ls_tar_finish(ls_tar_parser *p, ls_tar_event *ev);

const char *ls_tar_error_message(const ls_tar_parser *p);
uint64_t ls_tar_error_offset(const ls_tar_parser *p);
const char *ls_tar_error_entry(const ls_tar_parser *p); /* NUL-terminated, may be empty */

/* Valid from an ENTRY event until the next call that produces an ENTRY. */
const ls_tar_entry *ls_tar_current(const ls_tar_parser *p);

/* 1 if the end-of-archive marker (at least one zero block) has been seen. */
int ls_tar_end_seen(const ls_tar_parser *p);

#endif
