/* gzre.h: exact reconstruction of gzip streams (RFC 1952) whose deflate
 * data (RFC 1951) was written by any encoder.
 *
 * The analyzer inflates a gzip stream and, alongside the plaintext, writes
 * "reconstruction data": everything the plaintext does not determine, i.e.
 * member headers and trailers, block types and boundaries, the dynamic
 * Huffman table headers bit for bit, padding bits, and each token's
 * literal/match choice with its length and distance. Tokens are coded
 * against a model of the plaintext (3-byte hash chains over the 32 KiB
 * window): a match is named by its rank among the chain positions that
 * lengthen the best match so far, and its length by how much shorter it is
 * than the longest match at that position, so an encoder that takes the
 * longest match it finds costs a few bits per match. Everything is written
 * with an adaptive binary range coder, in frames.
 *
 * The rebuilder takes the plaintext and the reconstruction data and writes
 * the original gzip bytes. Huffman codes are canonical (RFC 1951, 3.2.2)
 * and every length and distance has one code, so given the tables and the
 * tokens the bits are determined; the streams this cannot express (length
 * 258 written as code 284, a match the model cannot name) are reported as
 * unsupported by the analyzer, which still inflates them.
 *
 * Both objects are push-driven state machines: feed input, call run, take
 * output. They never read past what was fed and bound every buffer.
 * Not thread-safe per object; distinct objects are independent. */
#ifndef LS_GZRE_H
#define LS_GZRE_H

#include <stddef.h>
#include <stdint.h>

#define LS_GZRE_VERSION 1

#define LS_GZ_NEED_INPUT 1  /* analyzer: feed compressed bytes or end of input */
#define LS_GZ_OUTPUT 2      /* take output (plaintext, reconstruction data, or rebuilt bytes) */
#define LS_GZ_DONE 3        /* the stream is complete */
#define LS_GZ_NEED_PLAIN 4  /* rebuilder: feed plaintext or end of plaintext */
#define LS_GZ_NEED_SIDE 5   /* rebuilder: feed reconstruction data */
#define LS_GZ_ERR_FORMAT (-1)  /* the gzip/deflate stream is invalid or truncated */
#define LS_GZ_ERR_SIDE (-2)    /* reconstruction data or plaintext do not fit together */
#define LS_GZ_ERR_NOMEM (-3)

typedef struct ls_gzan ls_gzan;
typedef struct ls_gzre ls_gzre;

ls_gzan *ls_gzan_new(void);
void ls_gzan_free(ls_gzan *a);
/* Copy up to n compressed bytes in; returns how many were taken (0 when the
 * input buffer is full: run first). */
size_t ls_gzan_input(ls_gzan *a, const uint8_t *data, size_t n);
void ls_gzan_input_end(ls_gzan *a);
int ls_gzan_run(ls_gzan *a);
/* Plaintext not yet taken: *ptr valid until the next call on a. */
size_t ls_gzan_plain(ls_gzan *a, const uint8_t **ptr);
void ls_gzan_plain_taken(ls_gzan *a, size_t n);
/* Reconstruction data not yet taken (whole frames). */
size_t ls_gzan_side(ls_gzan *a, const uint8_t **ptr);
void ls_gzan_side_taken(ls_gzan *a, size_t n);
/* 1 while the stream can still be rebuilt exactly; once 0 it stays 0 and
 * no more reconstruction data is written (the plaintext still is). */
int ls_gzan_exact(const ls_gzan *a);
const char *ls_gzan_message(const ls_gzan *a);
uint64_t ls_gzan_offset(const ls_gzan *a);   /* compressed offset of the error or of the unsupported feature */
uint64_t ls_gzan_members(const ls_gzan *a);

ls_gzre *ls_gzre_new(void);
void ls_gzre_free(ls_gzre *r);
size_t ls_gzre_side(ls_gzre *r, const uint8_t *data, size_t n);
size_t ls_gzre_plain(ls_gzre *r, const uint8_t *data, size_t n);
void ls_gzre_plain_end(ls_gzre *r);
int ls_gzre_run(ls_gzre *r);
size_t ls_gzre_output(ls_gzre *r, const uint8_t **ptr);
void ls_gzre_output_taken(ls_gzre *r, size_t n);
const char *ls_gzre_message(const ls_gzre *r);

#endif
