/* Standalone check of csrc/sha256.c against the NIST CAVP SHA-256 vectors,
 * for every backend the CPU offers. Built and run by tests/test_hashing.py
 * (natively, and for aarch64 under qemu-user when a cross compiler is
 * installed):
 *
 *     cc -O2 -Icsrc csrc/sha256.c tests/sha256_cavp.c -o sha256_cavp
 *     ./sha256_cavp CORPUS/sha256 [--require BACKEND]
 *
 * For each backend: every ShortMsg/LongMsg record (one-shot and in chunks of
 * 1, 3, 63, 64, 65 and 1000 bytes) and the 100 Monte Carlo checkpoints
 * (SHAVS section 6.4). Prints one line per backend and a final
 * "N passed, N failed" line; exits 1 on any mismatch, a missing required
 * backend, or an unreadable/short vector file. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decode hex into out (capacity cap); returns byte count or -1. */
static long unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (hexval((unsigned char)s[0]) >= 0 && hexval((unsigned char)s[1]) >= 0) {
        if (n == cap) return -1;
        out[n++] = (unsigned char)(hexval((unsigned char)s[0]) * 16 + hexval((unsigned char)s[1]));
        s += 2;
    }
    return (long)n;
}

/* "Key = value" -> value, or NULL if the line does not start with key. */
static const char *field(const char *line, const char *key)
{
    size_t k = strlen(key);
    if (strncmp(line, key, k) != 0) return NULL;
    line += k;
    while (*line == ' ') line++;
    if (*line != '=') return NULL;
    line++;
    while (*line == ' ') line++;
    return line;
}

static int check_msg_file(const char *path, long *records)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t linecap = 0;
    unsigned char *msg = NULL;
    long msglen = -1, bits = -1;
    int fails = 0;
    static const size_t chunks[] = {1, 3, 63, 64, 65, 1000};

    *records = 0;
    if (!f) {
        perror(path);
        return 1;
    }
    while (getline(&line, &linecap, f) > 0) {
        const char *v;
        if ((v = field(line, "Len"))) {
            bits = atol(v);
        } else if ((v = field(line, "Msg"))) {
            free(msg);
            msg = malloc(strlen(v) / 2 + 1);
            msglen = unhex(v, msg, strlen(v) / 2 + 1);
            if (bits == 0) msglen = 0; /* "Msg = 00" placeholder */
            if (msglen * 8 != bits) {
                fprintf(stderr, "%s: bad record Len=%ld\n", path, bits);
                fails++;
            }
        } else if ((v = field(line, "MD"))) {
            unsigned char want[32], got[32];
            ls_sha256_ctx ctx;
            if (unhex(v, want, 32) != 32 || msglen < 0) {
                fails++;
                continue;
            }
            ls_sha256_oneshot(msg, (size_t)msglen, got);
            if (memcmp(got, want, 32) != 0) {
                fprintf(stderr, "%s: Len=%ld one-shot mismatch\n", path, bits);
                fails++;
            }
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
                ls_sha256_init(&ctx);
                for (long off = 0; off < msglen; off += (long)chunks[c]) {
                    size_t n = (size_t)(msglen - off) < chunks[c] ? (size_t)(msglen - off) : chunks[c];
                    ls_sha256_update(&ctx, msg + off, n);
                }
                ls_sha256_final(&ctx, got);
                if (memcmp(got, want, 32) != 0) {
                    fprintf(stderr, "%s: Len=%ld chunk %zu mismatch\n", path, bits, chunks[c]);
                    fails++;
                }
            }
            (*records)++;
            msglen = bits = -1;
        }
    }
    free(line);
    free(msg);
    fclose(f);
    return fails;
}

static int check_monte(const char *path, long *records)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t linecap = 0;
    unsigned char seed[32], md[3][32], buf[96];
    int have_seed = 0, fails = 0;

    *records = 0;
    if (!f) {
        perror(path);
        return 1;
    }
    while (getline(&line, &linecap, f) > 0) {
        const char *v;
        if ((v = field(line, "Seed"))) {
            have_seed = unhex(v, seed, 32) == 32;
        } else if ((v = field(line, "MD"))) {
            unsigned char want[32];
            if (!have_seed || unhex(v, want, 32) != 32) {
                fails++;
                continue;
            }
            memcpy(md[0], seed, 32);
            memcpy(md[1], seed, 32);
            memcpy(md[2], seed, 32);
            for (int i = 0; i < 1000; i++) {
                memcpy(buf, md[0], 32);
                memcpy(buf + 32, md[1], 32);
                memcpy(buf + 64, md[2], 32);
                memcpy(md[0], md[1], 32);
                memcpy(md[1], md[2], 32);
                ls_sha256_oneshot(buf, sizeof buf, md[2]);
            }
            if (memcmp(md[2], want, 32) != 0) {
                fprintf(stderr, "%s: checkpoint %ld mismatch\n", path, *records);
                fails++;
            }
            memcpy(seed, md[2], 32);
            (*records)++;
        }
    }
    free(line);
    fclose(f);
    return fails;
}

int main(int argc, char **argv)
{
    static const char *const names[] = {"x86-sha-ni", "armv8-sha2", "portable"};
    const char *require = NULL;
    char path[4096];
    int passed = 0, failed = 0, required_ran = 0;

    if (argc == 4 && strcmp(argv[2], "--require") == 0)
        require = argv[3];
    else if (argc != 2) {
        fprintf(stderr, "usage: %s VECTOR_DIR [--require BACKEND]\n", argv[0]);
        return 2;
    }
    printf("auto backend: %s\n", ls_sha256_backend());
    for (size_t b = 0; b < sizeof names / sizeof names[0]; b++) {
        long n_short, n_long, n_monte;
        int fails = 0;
        if (ls_sha256_force_backend(names[b]) != 0) {
            printf("%s: not available\n", names[b]);
            continue;
        }
        snprintf(path, sizeof path, "%s/SHA256ShortMsg.rsp", argv[1]);
        fails += check_msg_file(path, &n_short);
        snprintf(path, sizeof path, "%s/SHA256LongMsg.rsp", argv[1]);
        fails += check_msg_file(path, &n_long);
        snprintf(path, sizeof path, "%s/SHA256Monte.rsp", argv[1]);
        fails += check_monte(path, &n_monte);
        if (n_short != 65 || n_long != 64 || n_monte != 100) {
            fprintf(stderr, "%s: unexpected record counts\n", names[b]);
            fails++;
        }
        printf("%s: short %ld, long %ld, monte %ld records, %d failures\n", names[b], n_short, n_long, n_monte,
               fails);
        if (fails) failed++;
        else passed++;
        if (require && strcmp(require, names[b]) == 0) required_ran = 1;
    }
    ls_sha256_force_backend(NULL);
    if (require && !required_ran) {
        fprintf(stderr, "required backend %s not available\n", require);
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
