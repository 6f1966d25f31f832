/* Streaming SHA-256 (FIPS 180-4, section 6.2) with run-time selection of a
 * hardware-accelerated compression function.
 *
 * Usage from C (the layer scanner embeds the context in its own structs):
 *
 *     ls_sha256_ctx c;
 *     ls_sha256_init(&c);
 *     ls_sha256_update(&c, p, n);      // any number of times, any lengths
 *     ls_sha256_final(&c, digest);     // 32 bytes, big-endian words
 *
 * A context is plain data: it may be copied with memcpy/struct assignment to
 * fork a running hash, and needs no cleanup. One context must not be used by
 * two threads at once; distinct contexts are independent.
 *
 * Message length limit: FIPS 180-4 allows messages shorter than 2^64 bits;
 * the context counts bytes in 64 bits, so the encoded length is exact up to
 * 2^61 - 1 bytes (2 EiB) and wraps modulo 2^64 bits beyond that.
 */
#ifndef LS_SHA256_H
#define LS_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define LS_SHA256_DIGEST_SIZE 32
#define LS_SHA256_BLOCK_SIZE 64

typedef struct ls_sha256_ctx {
    uint32_t state[8];  /* H0..H7 in FIPS 180-4 order (a, b, ..., h) */
    uint64_t total;     /* message bytes absorbed so far */
    uint8_t buf[64];    /* partial block, buflen bytes valid */
    uint32_t buflen;    /* 0..63 between calls */
} ls_sha256_ctx;

/* Start a new message. Also re-initialises a context after ls_sha256_final. */
void ls_sha256_init(ls_sha256_ctx *ctx);

/* Absorb len bytes at data (no alignment requirement; data may be NULL when
 * len == 0). */
void ls_sha256_update(ls_sha256_ctx *ctx, const void *data, size_t len);

/* Pad, write the 32-byte digest to out and wipe the context. The context
 * must be passed to ls_sha256_init before it is used again. */
void ls_sha256_final(ls_sha256_ctx *ctx, uint8_t out[32]);

/* init + update + final in one call. */
void ls_sha256_oneshot(const void *data, size_t len, uint8_t out[32]);

/* Name of the compression backend in use: "x86-sha-ni", "armv8-sha2" or
 * "portable". Resolves the automatic choice on first use. */
const char *ls_sha256_backend(void);

/* Select a backend by name (for tests and benchmarks); NULL restores the
 * automatic choice. Returns 0 on success, -1 if the name is unknown or the
 * CPU lacks the instructions (the active backend is then unchanged).
 * Process-wide; a running context may continue under another backend since
 * the state layout is the same for all of them. */
int ls_sha256_force_backend(const char *name);

#endif
