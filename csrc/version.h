#ifndef LS_VERSION_H
#define LS_VERSION_H
/* Identifies the compiled core; bumped when an on-disk-relevant algorithm
 * (chunking gear table, recipe encoding) changes. */
const char *ls_native_version(void);
#endif
