
/*
 * Copyright (C) infergate authors
 *
 * infergate-bloom: builds, checks and benchmarks the Bloom filter files
 * that infergate_bloom_zone loads.
 *
 *   infergate-bloom build --capacity N --error P IDS.txt -o FILE
 *   infergate-bloom test FILE ID...       exit 0: all maybe present,
 *                                         1: some surely absent, 2: error
 *   infergate-bloom info FILE
 *   infergate-bloom bench [--capacity N] [--error P]
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ig_bloom.h"
#include "ig_clock.h"


static void
usage(void)
{
    fprintf(stderr,
            "usage: infergate-bloom build --capacity N --error P IDS.txt "
            "-o FILE\n"
            "       infergate-bloom test FILE ID...\n"
            "       infergate-bloom info FILE\n"
            "       infergate-bloom bench [--capacity N] [--error P]\n"
            "IDS.txt: one id per line (\"-\" reads stdin); a trailing CR "
            "is dropped, empty lines are skipped\n");
    exit(2);
}


static ig_bloom_t *
ig_new(uint64_t capacity, double error, ig_bloom_geom_t *g)
{
    void        *mem = NULL;
    const char  *reason;

    if (ig_bloom_geometry(capacity, error, g, &reason) != 0) {
        fprintf(stderr, "infergate-bloom: %s\n", reason);
        exit(2);
    }

    if (posix_memalign(&mem, 64, ig_bloom_mem_size(g)) != 0) {
        fprintf(stderr, "infergate-bloom: out of memory\n");
        exit(2);
    }

    return ig_bloom_init(mem, g);
}


static int
ig_parse_args(int argc, char **argv, int i, uint64_t *capacity,
    double *error, const char **out, const char **in)
{
    char  *end;

    for (; i < argc; i++) {
        if (strcmp(argv[i], "--capacity") == 0 && i + 1 < argc) {
            errno = 0;
            *capacity = strtoull(argv[++i], &end, 10);
            if (errno || *end || argv[i][0] == '-') {
                fprintf(stderr, "infergate-bloom: bad --capacity \"%s\"\n",
                        argv[i]);
                return -1;
            }

        } else if (strcmp(argv[i], "--error") == 0 && i + 1 < argc) {
            *error = strtod(argv[++i], &end);
            if (*end || end == argv[i]) {
                fprintf(stderr, "infergate-bloom: bad --error \"%s\"\n",
                        argv[i]);
                return -1;
            }

        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc && out) {
            *out = argv[++i];

        } else if (in && *in == NULL
                   && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
        {
            *in = argv[i];

        } else {
            fprintf(stderr, "infergate-bloom: unexpected \"%s\"\n", argv[i]);
            return -1;
        }
    }

    return 0;
}


static int
cmd_build(int argc, char **argv)
{
    char             *line = NULL, err[512];
    size_t            cap = 0, len;
    ssize_t           n;
    FILE             *f;
    uint64_t          capacity = 0, ids = 0, saved;
    double            error = 0;
    const char       *out = NULL, *in = NULL;
    ig_bloom_t       *b;
    ig_bloom_geom_t   g;

    if (ig_parse_args(argc, argv, 2, &capacity, &error, &out, &in) != 0
        || capacity == 0 || error == 0 || out == NULL || in == NULL)
    {
        usage();
    }

    b = ig_new(capacity, error, &g);

    f = strcmp(in, "-") == 0 ? stdin : fopen(in, "r");
    if (f == NULL) {
        fprintf(stderr, "infergate-bloom: cannot open \"%s\": %s\n", in,
                strerror(errno));
        return 2;
    }

    while ((n = getline(&line, &cap, f)) >= 0) {
        len = (size_t) n;

        if (len && line[len - 1] == '\n') {
            len--;
        }

        if (len && line[len - 1] == '\r') {
            len--;
        }

        if (len == 0) {
            continue;
        }

        ig_bloom_add(b, line, len);
        ids++;
    }

    free(line);

    if (f != stdin) {
        fclose(f);
    }

    if (ig_bloom_save(b, out, &saved, err, sizeof(err)) != 0) {
        fprintf(stderr, "infergate-bloom: %s\n", err);
        return 2;
    }

    printf("%s: %llu ids (%llu distinct), capacity=%llu error=%g k=%u "
           "blocks=%llu bytes=%llu\n", out, (unsigned long long) ids,
           (unsigned long long) saved, (unsigned long long) capacity, error,
           g.k, (unsigned long long) g.nblocks,
           (unsigned long long) (IG_BLOOM_HDR_SIZE + g.nblocks * 64));

    if (ids > capacity) {
        fprintf(stderr, "infergate-bloom: warning: %llu ids exceed the "
                "capacity %llu, the false-positive rate is above %g\n",
                (unsigned long long) ids, (unsigned long long) capacity,
                error);
    }

    free(b);

    return 0;
}


static ig_bloom_t *
ig_load(const char *path, ig_bloom_hdr_t *h)
{
    char             err[512];
    ig_bloom_t      *b;
    ig_bloom_geom_t  g;

    if (ig_bloom_load_path(NULL, path, NULL, h, err, sizeof(err)) != 0) {
        fprintf(stderr, "infergate-bloom: \"%s\": %s\n", path, err);
        exit(2);
    }

    g.k = h->k;
    g.nblocks = h->nblocks;
    g.capacity = h->capacity;
    g.error = h->error;

    b = NULL;
    if (posix_memalign((void **) &b, 64, ig_bloom_mem_size(&g)) != 0) {
        fprintf(stderr, "infergate-bloom: out of memory\n");
        exit(2);
    }

    ig_bloom_init(b, &g);

    if (ig_bloom_load_path(b, path, NULL, h, err, sizeof(err)) != 0) {
        fprintf(stderr, "infergate-bloom: \"%s\": %s\n", path, err);
        exit(2);
    }

    return b;
}


static int
cmd_test(int argc, char **argv)
{
    int              i, rc;
    ig_bloom_t      *b;
    ig_bloom_hdr_t   h;

    if (argc < 4) {
        usage();
    }

    b = ig_load(argv[2], &h);
    rc = 0;

    for (i = 3; i < argc; i++) {
        if (ig_bloom_test(b, argv[i], strlen(argv[i]))) {
            printf("%s\tmaybe\n", argv[i]);

        } else {
            printf("%s\tabsent\n", argv[i]);
            rc = 1;
        }
    }

    free(b);

    return rc;
}


static int
cmd_info(int argc, char **argv)
{
    ig_bloom_t      *b;
    ig_bloom_hdr_t   h;

    if (argc != 3) {
        usage();
    }

    b = ig_load(argv[2], &h);

    printf("version=%u capacity=%llu error=%g k=%u blocks=%llu count=%llu "
           "expected_fpr=%.3g\n", h.version,
           (unsigned long long) h.capacity, h.error, h.k,
           (unsigned long long) h.nblocks, (unsigned long long) h.count,
           ig_bloom_fpr(h.count, h.nblocks, h.k));

    free(b);

    return 0;
}


/* Lookup ns/op on a filter larger than the caches, keys precomputed. */

static int
cmd_bench(int argc, char **argv)
{
    char             *keys;
    size_t            i, nq = 2000000;
    uint64_t          capacity = 10000000, hits;
    double            error = 0.01, t0, t_add, t_hit, t_miss;
    ig_bloom_t       *b;
    ig_bloom_geom_t   g;

    if (ig_parse_args(argc, argv, 2, &capacity, &error, NULL, NULL) != 0) {
        usage();
    }

    b = ig_new(capacity, error, &g);

    if (nq > capacity) {
        nq = (size_t) capacity;         /* every present key is added */
    }

    keys = malloc(nq * 16);
    if (keys == NULL) {
        return 2;
    }

    for (i = 0; i < nq; i++) {
        snprintf(keys + i * 16, 16, "user-%010zu", i);
    }

    t0 = ig_clock_s();
    for (i = 0; i < capacity; i++) {
        char  k[32];

        if (i < nq) {
            ig_bloom_add(b, keys + i * 16, 15);
        } else {
            snprintf(k, sizeof(k), "fill-%011zu", i);
            ig_bloom_add(b, k, 16);
        }
    }
    t_add = (ig_clock_s() - t0) / capacity * 1e9;

    hits = 0;
    t0 = ig_clock_s();
    for (i = 0; i < nq; i++) {
        hits += ig_bloom_test(b, keys + i * 16, 15);
    }
    t_hit = (ig_clock_s() - t0) / nq * 1e9;

    for (i = 0; i < nq; i++) {
        keys[i * 16] = 'x';               /* "xser-…": absent ids */
    }

    t0 = ig_clock_s();
    for (i = 0; i < nq; i++) {
        hits += ig_bloom_test(b, keys + i * 16, 15);
    }
    t_miss = (ig_clock_s() - t0) / nq * 1e9;

    printf("bloom: capacity=%llu error=%g k=%u %.1f MiB: "
           "add+format %.1f ns/op, lookup present %.1f ns/op, lookup absent %.1f ns/op, "
           "measured fpr %.4f\n", (unsigned long long) capacity, error, g.k,
           g.nblocks * 64.0 / 1048576, t_add, t_hit, t_miss,
           (double) (hits - nq) / nq);

    free(keys);
    free(b);

    return 0;
}


int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }

    if (strcmp(argv[1], "build") == 0) {
        return cmd_build(argc, argv);
    }

    if (strcmp(argv[1], "test") == 0) {
        return cmd_test(argc, argv);
    }

    if (strcmp(argv[1], "info") == 0) {
        return cmd_info(argc, argv);
    }

    if (strcmp(argv[1], "bench") == 0) {
        return cmd_bench(argc, argv);
    }

    usage();

    return 2;
}
