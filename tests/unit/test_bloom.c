/*
 * Copyright (C) infergate authors
 *
 * Unit tests of lib/ig_bloom.c: sizing, add/test, the measured
 * false-positive rate on 1,000,000 absent ids, the file round trip and
 * every kind of corrupt or mismatched file.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <xxhash.h>

#include "ig_bloom.h"


static char  ig_dir[] = "/tmp/ig_bloom_test.XXXXXX";


static ig_bloom_t *
ig_test_new(uint64_t capacity, double error, ig_bloom_geom_t *g)
{
    void        *mem = NULL;
    const char  *reason = NULL;

    assert_int_equal(ig_bloom_geometry(capacity, error, g, &reason), 0);
    assert_int_equal(posix_memalign(&mem, 64, ig_bloom_mem_size(g)), 0);

    return ig_bloom_init(mem, g);
}


static void
test_geometry(void **state)
{
    double            classic, bits;
    ig_bloom_geom_t   g;
    const char       *reason;

    static const double  errors[] = { 0.1, 0.01, 0.001, 0.0001 };
    unsigned             i;

    (void) state;

    for (i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        assert_int_equal(ig_bloom_geometry(1000000, errors[i], &g, &reason),
                         0);
        assert_true(g.k >= 1 && g.k <= IG_BLOOM_MAX_K);

        /* the computed blocked rate meets the target, one block less
         * does not: the size is the smallest that works for this k */
        assert_true(ig_bloom_fpr(1000000, g.nblocks, g.k) <= errors[i]);
        assert_true(ig_bloom_fpr(1000000, g.nblocks - 1, g.k) > errors[i]);

        /* blocked filters need more bits than the classic formula */
        classic = -log(errors[i]) / (log(2) * log(2));
        bits = g.nblocks * 512.0 / 1000000;
        assert_true(bits > classic);
        assert_true(bits < classic * 1.6);
    }

    /* k for 1% and 0.1% as computed; the classic optimum is 7 and 10 */
    assert_int_equal(ig_bloom_geometry(1000000, 0.01, &g, &reason), 0);
    assert_int_equal(g.k, 6);
    assert_int_equal(ig_bloom_geometry(1000000, 0.001, &g, &reason), 0);
    assert_int_equal(g.k, 9);

    /* tiny capacities still get one block */
    assert_int_equal(ig_bloom_geometry(1, 0.01, &g, &reason), 0);
    assert_true(g.nblocks >= 1);

    /* the geometry is a pure function: the tool and nginx agree */
    {
        ig_bloom_geom_t  g2;

        assert_int_equal(ig_bloom_geometry(123457, 0.003, &g, &reason), 0);
        assert_int_equal(ig_bloom_geometry(123457, 0.003, &g2, &reason), 0);
        assert_int_equal(g.k, g2.k);
        assert_int_equal(g.nblocks, g2.nblocks);
    }

    reason = NULL;
    assert_int_equal(ig_bloom_geometry(0, 0.01, &g, &reason), -1);
    assert_non_null(reason);
    assert_int_equal(ig_bloom_geometry(10, 0, &g, &reason), -1);
    assert_int_equal(ig_bloom_geometry(10, 0.9, &g, &reason), -1);
    assert_int_equal(ig_bloom_geometry(10, NAN, &g, &reason), -1);
    assert_int_equal(ig_bloom_geometry(10, 1e-9, &g, &reason), -1);
    assert_int_equal(ig_bloom_geometry(IG_BLOOM_MAX_CAPACITY + 1, 0.01, &g,
                                       &reason), -1);
}


static void
test_add_test(void **state)
{
    int               i, n;
    char              key[32];
    ig_bloom_t       *b;
    ig_bloom_geom_t   g;

    (void) state;

    b = ig_test_new(1000, 0.01, &g);

    assert_int_equal(ig_bloom_test(b, "u1", 2), 0);
    assert_int_equal(ig_bloom_add(b, "u1", 2), 1);
    assert_int_equal(ig_bloom_test(b, "u1", 2), 1);
    assert_int_equal(ig_bloom_add(b, "u1", 2), 0);      /* already there */
    assert_int_equal(b->count, 1);

    /* keys differ by one byte, by length, and the empty key */
    assert_int_equal(ig_bloom_test(b, "u1\0", 3), 0);
    assert_int_equal(ig_bloom_add(b, "", 0), 1);
    assert_int_equal(ig_bloom_test(b, "", 0), 1);

    for (i = 0; i < 1000; i++) {
        n = snprintf(key, sizeof(key), "id-%d", i);
        ig_bloom_add(b, key, (size_t) n);
    }

    /* no false negatives, ever */
    for (i = 0; i < 1000; i++) {
        n = snprintf(key, sizeof(key), "id-%d", i);
        assert_int_equal(ig_bloom_test(b, key, (size_t) n), 1);
    }

    free(b);
}


/* Four processes add into one shared mapping at once, as nginx workers
 * do: no add is lost to a racing OR on the same word. */

static void
test_shared_concurrent_adds(void **state)
{
    int               p, i, n, st;
    char              key[32];
    void             *mem;
    pid_t             pids[4];
    ig_bloom_t       *b;
    ig_bloom_geom_t   g;
    const char       *reason;

    (void) state;

    /* 80,000 adds racing over 1.2 MiB: the processes overlap in time */
    assert_int_equal(ig_bloom_geometry(80000, 0.01, &g, &reason), 0);
    mem = mmap(NULL, ig_bloom_mem_size(&g), PROT_READ | PROT_WRITE,
               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    b = ig_bloom_init(mem, &g);

    for (p = 0; p < 4; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);

        if (pids[p] == 0) {
            for (i = 0; i < 20000; i++) {
                n = snprintf(key, sizeof(key), "p%d-%d", p, i);
                ig_bloom_add(b, key, (size_t) n);
            }
            _exit(0);
        }
    }

    for (p = 0; p < 4; p++) {
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }

    for (p = 0; p < 4; p++) {
        for (i = 0; i < 20000; i++) {
            n = snprintf(key, sizeof(key), "p%d-%d", p, i);
            assert_int_equal(ig_bloom_test(b, key, (size_t) n), 1);
        }
    }

    /* count: adds that set a new bit; a few find theirs all set */
    assert_true(b->count <= 80000 && b->count > 79000);

    munmap(mem, ig_bloom_mem_size(&g));
}


static void
ig_test_fpr(double error)
{
    int               i, n;
    char              key[32];
    long              fp;
    ig_bloom_t       *b;
    ig_bloom_geom_t   g;

    b = ig_test_new(1000000, error, &g);

    for (i = 0; i < 1000000; i++) {
        n = snprintf(key, sizeof(key), "user-%d", i);
        ig_bloom_add(b, key, (size_t) n);
    }

    fp = 0;

    for (i = 0; i < 1000000; i++) {
        n = snprintf(key, sizeof(key), "absent-%d", i);
        fp += ig_bloom_test(b, key, (size_t) n);
    }

    print_message("error=%g: %ld false positives in 1000000 (%.3fx), "
                  "k=%u, %.2f bits/key\n", error, fp,
                  fp / 1e6 / error, g.k, g.nblocks * 512.0 / 1e6);

    assert_true(fp <= (long) (1.5 * error * 1000000));
    assert_true(fp > 0);            /* a filter that says no to all fails */

    free(b);
}


static void
test_fpr_1pct(void **state)
{
    (void) state;
    ig_test_fpr(0.01);
}


static void
test_fpr_01pct(void **state)
{
    (void) state;
    ig_test_fpr(0.001);
}


/* A filter of 500 ids saved to a file. */

static ig_bloom_t *
ig_test_saved(const char *path, ig_bloom_geom_t *g)
{
    int          i, n;
    char         key[32], err[256];
    uint64_t     saved = 0;
    ig_bloom_t  *b;

    b = ig_test_new(1000, 0.01, g);

    for (i = 0; i < 500; i++) {
        n = snprintf(key, sizeof(key), "id-%d", i);
        ig_bloom_add(b, key, (size_t) n);
    }

    assert_int_equal(ig_bloom_save(b, path, &saved, err, sizeof(err)), 0);
    assert_int_equal(saved, b->count);

    return b;
}


static unsigned char *
ig_test_slurp(const char *path, size_t *len)
{
    FILE           *f;
    long            n;
    unsigned char  *p;

    f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    p = malloc((size_t) n + 1);
    assert_int_equal(fread(p, 1, (size_t) n, f), (size_t) n);
    fclose(f);
    *len = (size_t) n;

    return p;
}


static void
ig_test_write(const char *path, const unsigned char *p, size_t len)
{
    FILE  *f;

    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, len, f), len);
    fclose(f);
}


static void
test_round_trip(void **state)
{
    int               i, n;
    char              path[256], key[32], err[256];
    size_t            len;
    struct stat       st;
    unsigned char    *buf;
    ig_bloom_t       *b, *c;
    ig_bloom_hdr_t    h;
    ig_bloom_geom_t   g;

    (void) state;

    snprintf(path, sizeof(path), "%s/rt.bloom", ig_dir);
    b = ig_test_saved(path, &g);

    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, IG_BLOOM_HDR_SIZE + g.nblocks * 64);

    /* no temp file left behind */
    snprintf(key, sizeof(key), ".tmp.%ld", (long) getpid());
    {
        char  tmp[300];

        snprintf(tmp, sizeof(tmp), "%s%s", path, key);
        assert_int_not_equal(access(tmp, F_OK), 0);
    }

    c = ig_test_new(1000, 0.01, &g);
    assert_int_equal(ig_bloom_load_path(c, path, &g, &h, err, sizeof(err)),
                     0);
    assert_int_equal(h.count, b->count);
    assert_int_equal(c->count, b->count);
    assert_int_equal(c->saved, b->count);
    assert_int_equal(h.k, g.k);
    assert_int_equal(h.nblocks, g.nblocks);
    assert_int_equal(h.capacity, 1000);
    assert_true(h.error == 0.01);
    assert_memory_equal((unsigned char *) c + 64, (unsigned char *) b + 64,
                        g.nblocks * 64);

    for (i = 0; i < 500; i++) {
        n = snprintf(key, sizeof(key), "id-%d", i);
        assert_int_equal(ig_bloom_test(c, key, (size_t) n), 1);
    }

    /* the in-memory loader agrees */
    buf = ig_test_slurp(path, &len);
    memset((unsigned char *) c + 64, 0, g.nblocks * 64);
    assert_int_equal(ig_bloom_load_buf(c, buf, len, &h, err, sizeof(err)),
                     0);
    assert_memory_equal((unsigned char *) c + 64, (unsigned char *) b + 64,
                        g.nblocks * 64);
    assert_int_equal(ig_bloom_load_buf(NULL, buf, len, &h, err, sizeof(err)),
                     0);

    /* saving again replaces the file atomically */
    ig_bloom_add(b, "late", 4);
    assert_int_equal(ig_bloom_save(b, path, NULL, err, sizeof(err)), 0);
    assert_int_equal(ig_bloom_load_path(c, path, &g, &h, err, sizeof(err)),
                     0);
    assert_int_equal(ig_bloom_test(c, "late", 4), 1);

    /* an unwritable place fails with a message, leaving nothing */
    assert_int_equal(ig_bloom_save(b, "/nonexistent-dir/x.bloom", NULL, err,
                                   sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot create"));

    free(buf);
    free(b);
    free(c);
}


/* Each corruption is refused, with its own message. */

static void
ig_test_refused(const char *path, const unsigned char *p, size_t len,
    const char *expect)
{
    char              err[256];
    ig_bloom_t       *c;
    ig_bloom_hdr_t    h;
    ig_bloom_geom_t   g;

    ig_test_write(path, p, len);

    c = ig_test_new(1000, 0.01, &g);

    err[0] = '\0';
    assert_int_equal(ig_bloom_load_path(c, path, &g, &h, err, sizeof(err)),
                     -1);
    if (strstr(err, expect) == NULL) {
        fail_msg("expected \"%s\" in \"%s\"", expect, err);
    }

    err[0] = '\0';
    assert_int_equal(ig_bloom_load_buf(c, p, len, &h, err, sizeof(err)), -1);
    if (strstr(err, expect) == NULL) {
        fail_msg("buf: expected \"%s\" in \"%s\"", expect, err);
    }

    free(c);
}


static void
ig_test_reseal(unsigned char *p)
{
    /* a header edited and resealed: only the later checks can catch it */
    uint64_t  s;
    int       i;

    s = XXH3_64bits(p, 56);
    for (i = 0; i < 8; i++) {
        p[56 + i] = (unsigned char) (s >> (8 * i));
    }
}


static void
test_corrupt(void **state)
{
    char              path[256], bad[256];
    size_t            len;
    unsigned char    *buf, *p;
    ig_bloom_t       *b;
    ig_bloom_geom_t   g;

    (void) state;

    snprintf(path, sizeof(path), "%s/good.bloom", ig_dir);
    snprintf(bad, sizeof(bad), "%s/bad.bloom", ig_dir);
    b = ig_test_saved(path, &g);
    buf = ig_test_slurp(path, &len);
    p = malloc(len + 64);

    /* empty and truncated header */
    ig_test_refused(bad, buf, 0, "truncated header");
    ig_test_refused(bad, buf, 63, "truncated header");

    /* bad magic */
    memcpy(p, buf, len);
    p[0] = 'X';
    ig_test_refused(bad, p, len, "bad magic");

    /* another version */
    memcpy(p, buf, len);
    p[8] = 2;
    ig_test_refused(bad, p, len, "unsupported version 2");

    /* a flipped header byte */
    memcpy(p, buf, len);
    p[40] ^= 1;
    ig_test_refused(bad, p, len, "header checksum mismatch");

    /* resealed impossible k and block counts */
    memcpy(p, buf, len);
    p[12] = 0;
    ig_test_reseal(p);
    ig_test_refused(bad, p, len, "invalid k 0");

    memcpy(p, buf, len);
    p[12] = 99;
    ig_test_reseal(p);
    ig_test_refused(bad, p, len, "invalid k 99");

    memcpy(p, buf, len);
    memset(p + 16, 0, 8);
    ig_test_reseal(p);
    ig_test_refused(bad, p, len, "invalid block count 0");

    memcpy(p, buf, len);
    memset(p + 16, 0xff, 8);
    ig_test_reseal(p);
    ig_test_refused(bad, p, len, "invalid block count");

    /* truncated bit array, trailing data */
    ig_test_refused(bad, buf, len - 1, "truncated");
    memcpy(p, buf, len);
    p[len] = 0;
    ig_test_refused(bad, p, len + 1, "trailing data");

    /* a flipped bit in the bit array */
    memcpy(p, buf, len);
    p[len - 5] ^= 0x10;
    ig_test_refused(bad, p, len, "bit array checksum mismatch");

    /* a sound file of another geometry */
    {
        char              err[256];
        ig_bloom_t       *o;
        ig_bloom_geom_t   og;
        ig_bloom_hdr_t    h;

        o = ig_test_new(5000, 0.001, &og);
        assert_int_equal(ig_bloom_save(o, bad, NULL, err, sizeof(err)), 0);
        assert_int_equal(ig_bloom_load_path(NULL, bad, &g, &h, err,
                                            sizeof(err)), -1);
        assert_non_null(strstr(err, "mismatched geometry"));
        assert_non_null(strstr(err, "capacity=5000"));
        assert_non_null(strstr(err, "capacity=1000"));

        /* into a filter of another geometry: refused too */
        assert_int_equal(ig_bloom_load_path(b, bad, NULL, &h, err,
                                            sizeof(err)), -1);
        assert_non_null(strstr(err, "mismatched geometry"));

        /* and checked alone it is fine */
        assert_int_equal(ig_bloom_load_path(NULL, bad, NULL, &h, err,
                                            sizeof(err)), 0);
        free(o);
    }

    /* a missing file */
    {
        char            err[256];
        ig_bloom_hdr_t  h;

        assert_int_equal(ig_bloom_load_path(NULL, "/nonexistent.bloom", NULL,
                                            &h, err, sizeof(err)), -1);
        assert_non_null(strstr(err, "cannot open"));
    }

    free(p);
    free(buf);
    free(b);
}


static int
ig_setup(void **state)
{
    (void) state;
    return mkdtemp(ig_dir) ? 0 : -1;
}


static int
ig_teardown(void **state)
{
    char  cmd[300];

    (void) state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ig_dir);
    return system(cmd) == 0 ? 0 : -1;
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_add_test),
        cmocka_unit_test(test_shared_concurrent_adds),
        cmocka_unit_test(test_fpr_1pct),
        cmocka_unit_test(test_fpr_01pct),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corrupt),
    };

    return cmocka_run_group_tests(tests, ig_setup, ig_teardown);
}
