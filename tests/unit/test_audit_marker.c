/*
 * Copyright (C) infergate authors
 *
 * Unit tests of ig_audit_marker_write() (lib/ig_audit.c), the chain
 * marker procedure the gateway's workers and the backend share: the
 * first marker is the genesis, the next names it, the state file
 * follows, a damaged state is a reported new genesis, a failed write
 * leaves the state alone, and the verifier accepts what it wrote.
 */


#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "ig_audit.h"
#include "ig_audit_verify.h"


#define KEYLINE  "k1:000102030405060708090a0b0c0d0e0f" \
                 "101112131415161718191a1b1c1d1e1f\n"
#define CHAIN_A  "0123456789abcdef0123456789abcdef"
#define CHAIN_B  "fedcba9876543210fedcba9876543210"


typedef struct {
    char                 dir[64];
    char                 log[96];
    char                 state[128];
    int                  log_fd;
    int                  state_fd;
    ig_audit_keyring_t   ring;
    ig_audit_state_t     st;
    char                 text[IG_AUDIT_STATE_SIZE_MAX + 1];
    unsigned char        buf[4096];
} fx_t;


static int
setup(void **state)
{
    char   err[128];
    fx_t  *f;

    f = calloc(1, sizeof(fx_t));
    assert_non_null(f);

    snprintf(f->dir, sizeof(f->dir), "/tmp/ig-marker-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->log, sizeof(f->log), "%s/a.log", f->dir);
    snprintf(f->state, sizeof(f->state), "%s/a.log.chainstate", f->dir);

    f->log_fd = open(f->log, O_WRONLY | O_APPEND | O_CREAT, 0600);
    f->state_fd = open(f->state, O_RDWR | O_CREAT, 0600);
    assert_true(f->log_fd >= 0 && f->state_fd >= 0);

    assert_int_equal(ig_audit_keyring_parse(&f->ring, KEYLINE,
                                            sizeof(KEYLINE) - 1, err,
                                            sizeof(err)), 0);
    *state = f;

    return 0;
}


static int
teardown(void **state)
{
    fx_t  *f = *state;

    close(f->log_fd);
    close(f->state_fd);
    unlink(f->log);
    unlink(f->state);
    rmdir(f->dir);
    free(f);

    return 0;
}


static int
alive(int64_t pid)
{
    return pid == 42;
}


/* writes a marker of chain c; returns its rc, the marker in f->buf */
static int
marker(fx_t *f, int fd, ig_audit_chain_t *c, int start,
    ig_audit_marker_t *mk)
{
    int  n;

    n = snprintf((char *) f->buf, sizeof(f->buf),
                 "{\"event\":{\"action\":\"%s\"},\"infergate\":{\"pid\":42,"
                 "\"records\":%llu,\"lost\":0,",
                 start ? "chain_start" : "chain_end",
                 (unsigned long long) ig_audit_chain_seq(c));

    return ig_audit_marker_write(f->state_fd, fd, c, f->buf, (size_t) n,
                                 start, 42, alive, &f->st, f->text, mk);
}


static size_t
slurp(const char *path, char *out, size_t size)
{
    ssize_t  n;
    int      fd;

    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    n = read(fd, out, size - 1);
    close(fd);
    assert_true(n >= 0);
    out[n] = '\0';

    return (size_t) n;
}


static void
test_genesis_then_links(void **state)
{
    fx_t               *f = *state;
    char                text[8192], want[256];
    ig_audit_chain_t   *a, *b;
    ig_audit_marker_t   mk;
    ig_audit_verify_t  *v;

    a = ig_audit_chain_open(&f->ring.keys[0], CHAIN_A);
    b = ig_audit_chain_open(&f->ring.keys[0], CHAIN_B);
    assert_non_null(a);
    assert_non_null(b);

    assert_int_equal(marker(f, f->log_fd, a, 1, &mk), 0);
    assert_false(mk.damaged || mk.lock_errno || mk.write_errno
                 || mk.state_failed || mk.seal_failed);
    assert_true(mk.len > 0 && f->buf[mk.len - 1] == '\n');
    assert_non_null(strstr((char *) f->buf, "\"link\":\"genesis\","));

    slurp(f->state, text, sizeof(text));
    assert_non_null(strstr(text, "head " CHAIN_A " 0 "));
    assert_non_null(strstr(text, "open " CHAIN_A " 42\n"));

    /* b starts: it names a's chain_start */
    assert_int_equal(marker(f, f->log_fd, b, 1, &mk), 0);
    snprintf(want, sizeof(want), "\"link\":\"%s:0:", CHAIN_A);
    assert_non_null(strstr((char *) f->buf, want));

    /* a ends, b ends: the state lists nothing open */
    assert_int_equal(marker(f, f->log_fd, a, 0, &mk), 0);
    assert_int_equal(marker(f, f->log_fd, b, 0, &mk), 0);
    slurp(f->state, text, sizeof(text));
    assert_non_null(strstr(text, "head " CHAIN_B " 1 "));
    assert_null(strstr(text, "open "));

    /* the verifier: two chains, every link found */
    slurp(f->log, text, sizeof(text));
    v = ig_audit_verify_new(&f->ring, 0);
    assert_non_null(v);
    ig_audit_verify_file(v, f->log);
    ig_audit_verify_feed(v, (unsigned char *) text, strlen(text));
    ig_audit_verify_file_end(v);
    ig_audit_verify_finish(v);
    assert_int_equal(ig_audit_verify_nproblems(v), 0);
    ig_audit_verify_free(v);

    ig_audit_chain_close(a);
    ig_audit_chain_close(b);
}


static void
test_damaged_state_is_a_new_genesis(void **state)
{
    fx_t               *f = *state;
    ig_audit_chain_t   *a;
    ig_audit_marker_t   mk;

    assert_int_equal(pwrite(f->state_fd, "garbage\n", 8, 0), 8);

    a = ig_audit_chain_open(&f->ring.keys[0], CHAIN_A);
    assert_int_equal(marker(f, f->log_fd, a, 1, &mk), 0);
    assert_true(mk.damaged);
    assert_true(mk.damage[0] != '\0');
    assert_non_null(strstr((char *) f->buf, "\"link\":\"genesis\","));
    ig_audit_chain_close(a);
}


static void
test_failed_write_leaves_the_state(void **state)
{
    fx_t               *f = *state;
    int                 full;
    char                before[4096], after[4096];
    ig_audit_chain_t   *a;
    ig_audit_marker_t   mk;

    a = ig_audit_chain_open(&f->ring.keys[0], CHAIN_A);
    assert_int_equal(marker(f, f->log_fd, a, 1, &mk), 0);
    slurp(f->state, before, sizeof(before));

    full = open("/dev/full", O_WRONLY);
    if (full < 0) {
        ig_audit_chain_close(a);
        skip();
    }

    assert_int_equal(marker(f, full, a, 0, &mk), -1);
    assert_int_equal(mk.write_errno, ENOSPC);
    assert_int_equal(mk.len, 0);
    close(full);

    slurp(f->state, after, sizeof(after));
    assert_string_equal(before, after);
    ig_audit_chain_close(a);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup_teardown(test_genesis_then_links, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_damaged_state_is_a_new_genesis,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_write_leaves_the_state,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
