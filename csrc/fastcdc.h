/* FastCDC content-defined chunking (gear hash, cut-point skipping,
 * normalized chunking).
 *
 * Reference: W. Xia et al., "FastCDC: a Fast and Efficient Content-Defined
 * Chunking Approach for Data Deduplication", USENIX ATC 2016, sections 3.2
 * (gear hash), 3.4 (cut-point skipping) and 3.5 (normalized chunking); the
 * multi-byte rolling of the hot loop extends the 2020 journal version's
 * "rolling two bytes each time" (IEEE TPDS 32(9)) to eight bytes.
 *
 * Definition of the cut points (this is what the tests' reference
 * implementation reproduces byte for byte):
 *
 *   G[0..255]    the gear table of fastcdc.c (splitmix64, fixed seed).
 *   H(e)         gear hash of the 64 bytes ending just before offset e of the
 *                chunk:  H(e) = sum_{j=0..63} G[d[e-1-j]] << j   (mod 2^64),
 *                i.e. the value of h = (h << 1) + G[byte] after rolling those
 *                64 bytes. Bit k of H(e) depends on the last k+1 bytes only.
 *   N            round(log2(avg_size)), rounding in the log domain:
 *                N = floor(log2 avg) + (avg^2 > 2^(2*floor(log2 avg)+1)).
 *   mask(b)      b consecutive one-bits whose highest is bit 56
 *                (LS_CDC_MASK_TOP_BIT): ((1 << b) - 1) << (57 - b).
 *   mask_s       mask(N+2): harder, a position matches with P = 2^-(N+2).
 *   mask_l       mask(N-2): easier, P = 2^-(N-2); normalization level 2
 *                (paper section 3.5). mask_l is a subset of mask_s.
 *   So every cut decision is a pure function of the last 57 bytes before
 *   the candidate cut and of the chunk-relative length.
 *
 *   A chunk starting at offset s ends at s + L, where L is the smallest
 *   length in [min_size, max_size] such that
 *       L <= avg_size  and (H(L) & mask_s) == 0, or
 *       L >  avg_size  and (H(L) & mask_l) == 0, or
 *       L == max_size (forced cut),
 *   or at the end of the input if that comes first. Bytes before
 *   min_size - 64 are never hashed (cut-point skipping).
 *
 * Changing the gear table, the seed, the mask derivation, the normal point or
 * the window changes every cut point and therefore which chunks of already
 * stored layers deduplicate against new ones. Treat any such change as an
 * on-disk format change (bump LS_CDC_ALGORITHM_VERSION).
 */
#ifndef LS_FASTCDC_H
#define LS_FASTCDC_H

#include <stddef.h>
#include <stdint.h>

/* Version of the cut-point definition above. */
#define LS_CDC_ALGORITHM_VERSION 1

/* Bytes covered by the gear hash (one per bit of the 64-bit state). */
#define LS_CDC_WINDOW 64

/* Highest hash bit a mask uses (see ls_cdc_mask in fastcdc.c). */
#define LS_CDC_MASK_TOP_BIT 56

/* Parameter bounds, checked by ls_cdc_init.
 *  - min_size >= 64: the hash window of the first candidate cut fits inside
 *    the chunk, so a cut never depends on bytes of the previous chunk and the
 *    chunk boundaries re-synchronise after an edit.
 *  - max_size <= 64 MiB: the largest chunk a reader or packer ever has to
 *    buffer whole; it also keeps the chunk-relative position in 32 bits and
 *    the mask widths (<= 28 bits) well inside the 64-bit hash. */
#define LS_CDC_MIN_SIZE_LOWER 64u
#define LS_CDC_MAX_SIZE_UPPER (64u * 1024u * 1024u)

/* Defaults (bytes): min 16 KiB, avg 64 KiB, max 256 KiB -- see fastcdc.c. */
#define LS_CDC_DEFAULT_MIN_SIZE (16u * 1024u)
#define LS_CDC_DEFAULT_AVG_SIZE (64u * 1024u)
#define LS_CDC_DEFAULT_MAX_SIZE (256u * 1024u)

/* Chunker state: a plain struct, embeddable by value, no heap. Initialise
 * with ls_cdc_init before any other call. Not thread-safe: one sequence per
 * struct. */
typedef struct ls_cdc {
    uint64_t mask_s;   /* mask for lengths <= avg_size */
    uint64_t mask_l;   /* mask for lengths >  avg_size */
    uint64_t hash;     /* gear hash state of the current chunk */
    uint32_t min_size;
    uint32_t avg_size; /* normal point of normalized chunking */
    uint32_t max_size;
    uint32_t pos;      /* bytes of the current chunk consumed so far, < max_size */
} ls_cdc;

/* Validate the parameters (min_size >= 64, min_size < avg_size < max_size,
 * max_size <= 64 MiB) and start a new chunk sequence. Returns 0, or -1 on
 * invalid parameters, in which case *c is zeroed and must not be used. */
int ls_cdc_init(ls_cdc *c, uint32_t min_size, uint32_t avg_size, uint32_t max_size);

/* Start a new chunk sequence (e.g. a new file), keeping the parameters. */
void ls_cdc_reset(ls_cdc *c);

/* Scan data[0..len). Returns the number of bytes of data that belong to the
 * current chunk. If *cut == 1 the current chunk ends right after those bytes
 * (the return value is then >= 1) and the state is reset for the next chunk;
 * if *cut == 0 all len bytes were consumed and the chunk continues in the next
 * call. Cut points are identical however the input is split across calls.
 * Reads only data[0..len); data may be NULL when len == 0. */
size_t ls_cdc_next(ls_cdc *c, const uint8_t *data, size_t len, int *cut);

/* Batch form of ls_cdc_next: find up to max_cuts cut points in data[0..len),
 * storing base + (offset in data just after the chunk's last byte) for each.
 * Returns the number stored; *consumed is len, or the offset of the last cut
 * stored when the scan stopped because cuts[] was full (then call again with
 * the rest). Does not report the end of input as a cut. */
size_t ls_cdc_scan(ls_cdc *c, const uint8_t *data, size_t len, uint64_t base,
                   uint64_t *cuts, size_t max_cuts, size_t *consumed);

/* One-shot: cut offsets of a whole buffer (each the end offset of a chunk;
 * the last is len when len > 0). Stores at most max_cuts of them and returns
 * the total count, which is > max_cuts when cuts[] was too small (call again
 * with that many). Returns 0 for len == 0 or invalid parameters (check them
 * with ls_cdc_init first to tell the two apart). */
size_t ls_cdc_boundaries(uint32_t min_size, uint32_t avg_size, uint32_t max_size,
                         const uint8_t *data, size_t len, uint64_t *cuts, size_t max_cuts);

/* The 256-entry gear table (for tests and diagnostics). */
const uint64_t *ls_cdc_gear_table(void);

#endif
