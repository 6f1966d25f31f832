/* Shared helpers for the layerstore C core: fixed-width loads/stores and
 * branch hints. Header-only; every function is static inline. */
#ifndef LS_COMMON_H
#define LS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define LS_LIKELY(x) __builtin_expect(!!(x), 1)
#define LS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LS_LIKELY(x) (x)
#define LS_UNLIKELY(x) (x)
#endif

static inline uint32_t ls_load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void ls_store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void ls_store_be64(uint8_t *p, uint64_t v)
{
    ls_store_be32(p, (uint32_t)(v >> 32));
    ls_store_be32(p + 4, (uint32_t)v);
}

static inline size_t ls_min_size(size_t a, size_t b) { return a < b ? a : b; }

#endif
