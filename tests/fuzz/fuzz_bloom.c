/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the Bloom filter file loader: whatever the bytes,
 * the loader refuses them with a message or accepts a file whose header
 * and size agree, and an accepted file loads into a filter of its own
 * geometry and saves back to the same bytes.
 *
 * ./fuzz_bloom -max_total_time=30 tests/fuzz/corpus/bloom
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "ig_bloom.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static int ig_fuzz_one(const uint8_t *data, size_t size);


#define ig_fuzz_assert(c)                                                     \
    do {                                                                      \
        if (!(c)) {                                                           \
            abort();                                                          \
        }                                                                     \
    } while (0)


/*
 * Each input twice: as it is, and with both checksums recomputed, so the
 * checks behind them (geometry, size, load, save) see arbitrary headers
 * too instead of stopping at the checksum.
 */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int        i;
    uint8_t   *copy;
    uint64_t   sum;

    ig_fuzz_one(data, size);

    if (size < IG_BLOOM_HDR_SIZE || size > (1 << 20)) {
        return 0;
    }

    copy = malloc(size);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);
    sum = XXH3_64bits(copy + IG_BLOOM_HDR_SIZE, size - IG_BLOOM_HDR_SIZE);
    for (i = 0; i < 8; i++) {
        copy[48 + i] = (uint8_t) (sum >> (8 * i));
    }
    sum = XXH3_64bits(copy, 56);
    for (i = 0; i < 8; i++) {
        copy[56 + i] = (uint8_t) (sum >> (8 * i));
    }

    ig_fuzz_one(copy, size);
    free(copy);

    return 0;
}


static int
ig_fuzz_one(const uint8_t *data, size_t size)
{
    int              rc;
    char             err[512], path[64];
    FILE            *f;
    void            *mem;
    size_t           n;
    ig_bloom_t      *b;
    ig_bloom_hdr_t   h;
    ig_bloom_geom_t  g;
    unsigned char   *back;

    err[0] = '\0';
    rc = ig_bloom_load_buf(NULL, data, size, &h, err, sizeof(err));

    if (rc != 0) {
        ig_fuzz_assert(err[0] != '\0');
        ig_fuzz_assert(memchr(err, '\0', sizeof(err)) != NULL);
        return 0;
    }

    ig_fuzz_assert(h.k >= 1 && h.k <= IG_BLOOM_MAX_K);
    ig_fuzz_assert(size == IG_BLOOM_HDR_SIZE + h.nblocks * 64);

    g.k = h.k;
    g.nblocks = h.nblocks;
    g.capacity = h.capacity;
    g.error = h.error;

    mem = NULL;
    if (posix_memalign(&mem, 64, ig_bloom_mem_size(&g)) != 0) {
        return 0;
    }

    b = ig_bloom_init(mem, &g);
    ig_fuzz_assert(ig_bloom_load_buf(b, data, size, &h, err, sizeof(err))
                   == 0);
    ig_fuzz_assert(b->count == h.count);

    (void) ig_bloom_test(b, data, size < 32 ? size : 32);
    (void) ig_bloom_add(b, "x", 1);
    ig_fuzz_assert(ig_bloom_test(b, "x", 1) == 1);

    /* the streaming loader agrees with the in-memory one */
    snprintf(path, sizeof(path), "/tmp/fuzz_bloom.%ld", (long) getpid());
    f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, size, f);
        fclose(f);
        ig_fuzz_assert(ig_bloom_load_path(NULL, path, &g, &h, err,
                                          sizeof(err)) == 0);

        /* a filter saved and read back is what was saved */
        ig_fuzz_assert(ig_bloom_save(b, path, NULL, err, sizeof(err)) == 0);
        back = NULL;
        f = fopen(path, "rb");
        if (f) {
            back = malloc(size);
            n = fread(back, 1, size, f);
            fclose(f);
            ig_fuzz_assert(n == size);
            ig_fuzz_assert(ig_bloom_load_buf(NULL, back, size, &h, err,
                                             sizeof(err)) == 0);
            free(back);
        }

        unlink(path);
    }

    free(mem);

    return 0;
}
