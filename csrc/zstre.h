/* zstre.h: exact reconstruction of zstd streams (RFC 8878) written by any
 * encoder, from their plaintext.
 *
 * Given a block's literals and sequences, the bytes of a compressed block
 * are determined by its headers and table descriptions (kept verbatim), the
 * canonical Huffman code of its literals (RFC 8878, 4.2.2) and, for each
 * FSE-coded sequence stream, the state the decoder ends in (every other
 * state follows from the tANS construction, 4.1.1). The analyzer parses a
 * zstd stream and writes that, plus each sequence's literal length, offset
 * value and match length, as reconstruction data; the rebuilder takes the
 * data and the plaintext (which supplies every literal) and writes the
 * original bytes. The entropy-coded literals are never decoded.
 *
 * Sequences are coded against a model of the plaintext that both sides
 * keep: 4-byte hash chains over the last 4 MiB. A new offset is named by
 * its rank among the chain positions that lengthen the best match so far,
 * a match length by its shortfall from the longest match at its offset,
 * and repeat offsets (3.1.1.5) by their code. So the analyzer needs the
 * plaintext too (ls_zsan_plain), which in the store is the layer the blob
 * decompresses to.
 *
 * Status codes are gzre.h's (LS_GZ_*). Push-driven like gzre; bounded
 * buffers (the 4 MiB window plus 4 MiB of plaintext, one block). */
#ifndef LS_ZSTRE_H
#define LS_ZSTRE_H

#include <stddef.h>
#include <stdint.h>

#define LS_ZSTRE_VERSION 1

typedef struct ls_zsan ls_zsan;
typedef struct ls_zsre ls_zsre;

ls_zsan *ls_zsan_new(void);
void ls_zsan_free(ls_zsan *a);
size_t ls_zsan_input(ls_zsan *a, const uint8_t *data, size_t n);
void ls_zsan_input_end(ls_zsan *a);
size_t ls_zsan_plain(ls_zsan *a, const uint8_t *data, size_t n);
void ls_zsan_plain_end(ls_zsan *a);
int ls_zsan_run(ls_zsan *a);
size_t ls_zsan_side(ls_zsan *a, const uint8_t **ptr);
void ls_zsan_side_taken(ls_zsan *a, size_t n);
int ls_zsan_exact(const ls_zsan *a);
const char *ls_zsan_message(const ls_zsan *a);
uint64_t ls_zsan_offset(const ls_zsan *a);
uint64_t ls_zsan_plain_size(const ls_zsan *a);  /* plaintext bytes the stream decodes to */

ls_zsre *ls_zsre_new(void);
void ls_zsre_free(ls_zsre *r);
size_t ls_zsre_side(ls_zsre *r, const uint8_t *data, size_t n);
size_t ls_zsre_plain(ls_zsre *r, const uint8_t *data, size_t n);
void ls_zsre_plain_end(ls_zsre *r);
int ls_zsre_run(ls_zsre *r);
size_t ls_zsre_output(ls_zsre *r, const uint8_t **ptr);
void ls_zsre_output_taken(ls_zsre *r, size_t n);
const char *ls_zsre_message(const ls_zsre *r);

#endif
