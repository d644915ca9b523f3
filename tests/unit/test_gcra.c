/*
 * Copyright (C) infergate authors
 *
 * Unit tests of lib/ig_gcra.c.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "ig_gcra.h"


#define MS                    1000ULL
#define SEC                   1000000ULL
#define T0                    (1700000000ULL * SEC)   /* a realistic now */


static void ig_test_policy(ig_gcra_policy_t *p, const char *rate,
    uint32_t burst);
static uint64_t ig_test_rand(uint64_t *state);
static void ig_test_reference(const ig_gcra_policy_t *p, uint64_t now,
    uint64_t tat, ig_gcra_result_t *res);


static void
ig_test_policy(ig_gcra_policy_t *p, const char *rate, uint32_t burst)
{
    uint32_t     quota, window;
    const char  *reason;

    reason = NULL;
    assert_int_equal(ig_gcra_parse_rate(rate, strlen(rate), &quota, &window,
                                        &reason), 0);
    ig_gcra_policy_init(p, quota, window, burst);
}


static void
test_parse_rate_ok(void **state)
{
    uint32_t     q, w;
    const char  *reason;

    static const struct {
        const char  *s;
        uint32_t     quota;
        uint32_t     window;
    } ok[] = {
        { "10r/s", 10, 1 },
        { "600r/m", 600, 60 },
        { "100r/h", 100, 3600 },
        { "1r/s", 1, 1 },
        { "1r/h", 1, 3600 },
        { "1000000r/s", 1000000, 1 },
        { "1000000r/h", 1000000, 3600 },
        { "007r/m", 7, 60 },
    };

    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        q = 0;
        w = 0;
        reason = NULL;
        assert_int_equal(ig_gcra_parse_rate(ok[i].s, strlen(ok[i].s), &q, &w,
                                            &reason), 0);
        assert_int_equal(q, ok[i].quota);
        assert_int_equal(w, ok[i].window);
        assert_null(reason);
    }

    /* the length bounds the string: no NUL needed */
    assert_int_equal(ig_gcra_parse_rate("25r/hJUNK", 5, &q, &w, &reason), 0);
    assert_int_equal(q, 25);
    assert_int_equal(w, 3600);
}


static void
test_parse_rate_bad(void **state)
{
    size_t       i;
    uint32_t     q, w;
    const char  *reason;

    static const struct {
        const char  *s;
        const char  *reason;
    } bad[] = {
        { "", IG_GCRA_ERR_NUMBER },
        { "r/s", IG_GCRA_ERR_NUMBER },
        { "-1r/s", IG_GCRA_ERR_NUMBER },
        { "+1r/s", IG_GCRA_ERR_NUMBER },
        { " 1r/s", IG_GCRA_ERR_NUMBER },
        { "abc", IG_GCRA_ERR_NUMBER },
        { "0r/s", IG_GCRA_ERR_RANGE },
        { "000r/m", IG_GCRA_ERR_RANGE },
        { "1000001r/s", IG_GCRA_ERR_RANGE },
        { "99999999999999999999999r/s", IG_GCRA_ERR_RANGE },
        { "4294967297r/s", IG_GCRA_ERR_RANGE },
        { "10", IG_GCRA_ERR_UNIT },
        { "10r", IG_GCRA_ERR_UNIT },
        { "10r/", IG_GCRA_ERR_UNIT },
        { "10r/x", IG_GCRA_ERR_UNIT },
        { "10r/ss", IG_GCRA_ERR_UNIT },
        { "10r/d", IG_GCRA_ERR_UNIT },
        { "10R/S", IG_GCRA_ERR_UNIT },
        { "10 r/s", IG_GCRA_ERR_UNIT },
        { "10r/s ", IG_GCRA_ERR_UNIT },
        { "10.5r/s", IG_GCRA_ERR_UNIT },
        { "10/s", IG_GCRA_ERR_UNIT },
    };

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        q = 12345;
        w = 54321;
        reason = NULL;
        assert_int_equal(ig_gcra_parse_rate(bad[i].s, strlen(bad[i].s), &q,
                                            &w, &reason), -1);
        assert_non_null(reason);
        assert_string_equal(reason, bad[i].reason);
        /* outputs untouched on error */
        assert_int_equal(q, 12345);
        assert_int_equal(w, 54321);
    }

    /* embedded NUL */
    assert_int_equal(ig_gcra_parse_rate("1\0r/s", 5, &q, &w, &reason), -1);
    /* NULL with zero length */
    assert_int_equal(ig_gcra_parse_rate(NULL, 0, &q, &w, &reason), -1);
    assert_string_equal(reason, IG_GCRA_ERR_NUMBER);
}


static void
test_policy_init(void **state)
{
    ig_gcra_policy_t  p;

    (void) state;

    ig_test_policy(&p, "10r/s", 5);
    assert_int_equal(p.interval_us, 100 * MS);
    assert_int_equal(p.tolerance_us, 500 * MS);
    assert_int_equal(p.quota, 10);
    assert_int_equal(p.window_s, 1);
    assert_int_equal(p.burst, 5);

    ig_test_policy(&p, "3r/s", 0);
    assert_int_equal(p.interval_us, 333333);
    assert_int_equal(p.tolerance_us, 0);

    ig_test_policy(&p, "1000000r/s", 1000000);
    assert_int_equal(p.interval_us, 1);
    assert_int_equal(p.tolerance_us, 1000000);

    ig_test_policy(&p, "1000000r/h", 0);
    assert_int_equal(p.interval_us, 3600);

    ig_test_policy(&p, "1r/h", 1000000);
    assert_int_equal(p.interval_us, 3600 * SEC);
    assert_int_equal(p.tolerance_us, 3600 * SEC * 1000000);

    ig_test_policy(&p, "600r/m", 2);
    assert_int_equal(p.interval_us, 100 * MS);
    assert_int_equal(p.window_s, 60);

    /* not from the parser: clamped, no division by zero */
    ig_gcra_policy_init(&p, 0, 0, 0);
    assert_int_equal(p.interval_us, SEC);
    ig_gcra_policy_init(&p, UINT32_MAX, 1, 0);
    assert_int_equal(p.interval_us, 1);

    /* absurd values saturate: tolerance + interval still fits */
    ig_gcra_policy_init(&p, 1, UINT32_MAX, UINT32_MAX);
    assert_int_equal(p.interval_us, (uint64_t) UINT32_MAX * SEC);
    assert_true(p.tolerance_us <= UINT64_MAX - p.interval_us);
}


static void
test_steady_stream(void **state)
{
    int               admitted;
    uint64_t          now, tat, last;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    (void) state;

    /* 10r/s, burst 0: one request every 1 ms for 2 s admits 20 */

    ig_test_policy(&p, "10r/s", 0);

    admitted = 0;
    tat = 0;
    last = 0;

    for (now = T0; now < T0 + 2 * SEC; now += MS) {
        ig_gcra_check(&p, now, tat, &r);

        if (r.allowed) {
            if (admitted) {
                /* evenly spaced, exactly one interval apart */
                assert_int_equal(now - last, 100 * MS);
            }

            admitted++;
            last = now;
            tat = r.tat_us;
            assert_int_equal(r.remaining, 0);
        }
    }

    assert_in_range(admitted, 19, 21);
    assert_int_equal(admitted, 20);

    /* same with a stream that does not start on a tick */

    admitted = 0;
    tat = 0;

    for (now = T0 + 777; now < T0 + 777 + 2 * SEC; now += MS) {
        ig_gcra_check(&p, now, tat, &r);

        if (r.allowed) {
            admitted++;
            tat = r.tat_us;
        }
    }

    assert_in_range(admitted, 19, 21);
}


static void
test_burst(void **state)
{
    int               i, admitted;
    uint64_t          now, tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    (void) state;

    /* 10r/s burst=5: 6 at once, remaining counting down */

    ig_test_policy(&p, "10r/s", 5);

    tat = 0;

    for (i = 0; i < 6; i++) {
        ig_gcra_check(&p, T0, tat, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 5 - i);
        assert_int_equal(r.tat_us, T0 + (uint64_t) (i + 1) * 100 * MS);
        assert_int_equal(r.reset_us, (uint64_t) (i + 1) * 100 * MS);
        assert_int_equal(r.retry_after_us, 0);
        tat = r.tat_us;
    }

    ig_gcra_check(&p, T0, tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);

    /* then one per 100 ms */

    for (i = 1; i <= 20; i++) {
        now = T0 + (uint64_t) i * 100 * MS;

        ig_gcra_check(&p, now - 1, tat, &r);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after_us, 1);

        ig_gcra_check(&p, now, tat, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 0);
        tat = r.tat_us;

        ig_gcra_check(&p, now, tat, &r);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after_us, 100 * MS);
    }

    /* idle long enough and the full burst is back, not more */

    now = tat + 10 * SEC;
    admitted = 0;

    for (i = 0; i < 10; i++) {
        ig_gcra_check(&p, now, tat, &r);

        if (r.allowed) {
            admitted++;
            tat = r.tat_us;
        }
    }

    assert_int_equal(admitted, 6);

    /* partially refilled: 250 ms after draining gives 2 */

    now += 250 * MS;
    admitted = 0;

    for (i = 0; i < 10; i++) {
        ig_gcra_check(&p, now, tat, &r);

        if (r.allowed) {
            admitted++;
            tat = r.tat_us;
        }
    }

    assert_int_equal(admitted, 2);
}


static void
test_denied_consumes_nothing(void **state)
{
    int               i;
    uint64_t          tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    (void) state;

    ig_test_policy(&p, "1r/s", 0);

    ig_gcra_check(&p, T0, 0, &r);
    assert_true(r.allowed);
    tat = r.tat_us;
    assert_int_equal(tat, T0 + SEC);

    /* hammering while denied does not push the TAT */

    for (i = 1; i < 1000; i++) {
        ig_gcra_check(&p, T0 + (uint64_t) i * MS, tat, &r);
        assert_false(r.allowed);
        assert_int_equal(r.tat_us, tat);
        assert_int_equal(r.remaining, 0);
        assert_int_equal(r.retry_after_us, SEC - (uint64_t) i * MS);
        assert_int_equal(r.reset_us, SEC - (uint64_t) i * MS);
    }

    ig_gcra_check(&p, T0 + SEC, tat, &r);
    assert_true(r.allowed);
}


static void
test_retry_after(void **state)
{
    int               i;
    uint64_t          tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    (void) state;

    /* 2r/s burst 3: 4 at once, then the 5th waits exactly 500 ms */

    ig_test_policy(&p, "2r/s", 3);

    tat = 0;

    for (i = 0; i < 4; i++) {
        ig_gcra_check(&p, T0, tat, &r);
        assert_true(r.allowed);
        tat = r.tat_us;
    }

    assert_int_equal(tat, T0 + 2 * SEC);

    ig_gcra_check(&p, T0, tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 500 * MS);
    assert_int_equal(r.reset_us, 2 * SEC);
    assert_int_equal(ig_gcra_ceil_seconds(r.retry_after_us), 1);
    assert_int_equal(ig_gcra_ceil_seconds(r.reset_us), 2);

    ig_gcra_check(&p, T0 + 123456, tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 500 * MS - 123456);

    /* retrying exactly after retry_after_us succeeds */
    ig_gcra_check(&p, T0 + 123456 + r.retry_after_us, tat, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);

    /* a stale TAT in the past behaves like a new key */
    ig_gcra_check(&p, T0 + 100 * SEC, tat, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 3);
    assert_int_equal(r.tat_us, T0 + 100 * SEC + 500 * MS);
}


static void
test_minute_hour(void **state)
{
    int               admitted;
    uint64_t          now, tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    (void) state;

    /* 6r/m: every 10 s; a request per second for 10 minutes gives 60 */

    ig_test_policy(&p, "6r/m", 0);
    assert_int_equal(p.interval_us, 10 * SEC);

    admitted = 0;
    tat = 0;

    for (now = T0; now < T0 + 600 * SEC; now += SEC) {
        ig_gcra_check(&p, now, tat, &r);

        if (r.allowed) {
            admitted++;
            tat = r.tat_us;
        }
    }

    assert_int_equal(admitted, 60);

    /* 2r/h burst 1: two at once, then one per 30 minutes */

    ig_test_policy(&p, "2r/h", 1);
    assert_int_equal(p.interval_us, 1800 * SEC);

    ig_gcra_check(&p, T0, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 1);
    ig_gcra_check(&p, T0, r.tat_us, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    tat = r.tat_us;
    ig_gcra_check(&p, T0 + 60 * SEC, tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 1740 * SEC);
    assert_int_equal(ig_gcra_ceil_seconds(r.retry_after_us), 1740);
    assert_int_equal(r.reset_us, 3540 * SEC);

    /* 3600r/h == 1r/s */
    ig_test_policy(&p, "3600r/h", 0);
    assert_int_equal(p.interval_us, SEC);
}


static void
test_overflow(void **state)
{
    uint64_t          now, tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    (void) state;

    ig_test_policy(&p, "1r/h", 1000000);

    /* now near 2^62 */

    now = (1ULL << 62) - 5;
    ig_gcra_check(&p, now, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.tat_us, now + 3600 * SEC);
    assert_int_equal(r.remaining, 1000000);

    tat = now + p.tolerance_us;
    ig_gcra_check(&p, now, tat, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.tat_us, tat + p.interval_us);

    ig_gcra_check(&p, now, tat + 1, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 1);
    assert_int_equal(r.reset_us, p.tolerance_us + 1);

    /* now at the very top of the range */

    now = UINT64_MAX - 10;
    ig_gcra_check(&p, now, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.tat_us, UINT64_MAX);     /* saturated */
    assert_int_equal(r.remaining, 1000000);

    ig_gcra_check(&p, UINT64_MAX, UINT64_MAX, &r);
    assert_true(r.allowed);
    assert_int_equal(r.tat_us, UINT64_MAX);

    /* a corrupt TAT far in the future: denied, no wrap */

    ig_test_policy(&p, "10r/s", 5);
    ig_gcra_check(&p, 0, UINT64_MAX, &r);
    assert_false(r.allowed);
    assert_int_equal(r.tat_us, UINT64_MAX);
    assert_int_equal(r.retry_after_us, UINT64_MAX - 500 * MS);
    assert_int_equal(r.reset_us, UINT64_MAX);

    /* saturated policy */

    ig_gcra_policy_init(&p, 1, UINT32_MAX, UINT32_MAX);
    ig_gcra_check(&p, 1ULL << 62, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, p.tolerance_us / p.interval_us);
    assert_int_equal(r.tat_us, (1ULL << 62) + p.interval_us);
}


static void
test_ceil_seconds(void **state)
{
    (void) state;

    assert_int_equal(ig_gcra_ceil_seconds(0), 1);
    assert_int_equal(ig_gcra_ceil_seconds(1), 1);
    assert_int_equal(ig_gcra_ceil_seconds(999999), 1);
    assert_int_equal(ig_gcra_ceil_seconds(1000000), 1);
    assert_int_equal(ig_gcra_ceil_seconds(1000001), 2);
    assert_int_equal(ig_gcra_ceil_seconds(2000000), 2);
    assert_int_equal(ig_gcra_ceil_seconds(59999999), 60);
    assert_int_equal(ig_gcra_ceil_seconds(UINT64_MAX),
                     UINT64_MAX / 1000000 + 1);
}


static uint64_t
ig_test_rand(uint64_t *state)
{
    /* splitmix64 */
    uint64_t  z;

    z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


/* the brief's formulas, verbatim, in 128-bit arithmetic */

static void
ig_test_reference(const ig_gcra_policy_t *p, uint64_t now, uint64_t tat,
    ig_gcra_result_t *res)
{
    unsigned __int128  tat0, new_tat, tol, iv;

    tol = p->tolerance_us;
    iv = p->interval_us;
    tat0 = tat > now ? tat : now;
    new_tat = tat0 + iv;

    if (new_tat - now <= tol + iv) {
        res->allowed = 1;
        res->tat_us = new_tat > UINT64_MAX ? UINT64_MAX : (uint64_t) new_tat;
        res->remaining = (uint32_t) ((tol + iv - (new_tat - now)) / iv);
        res->retry_after_us = 0;
        res->reset_us = (uint64_t) (new_tat - now);

    } else {
        res->allowed = 0;
        res->tat_us = tat;
        res->remaining = 0;
        res->retry_after_us = (uint64_t) ((new_tat - now) - (tol + iv));
        res->reset_us = (uint64_t) (tat0 - now);
    }
}


static void
test_reference(void **state)
{
    int               i;
    uint32_t          quota, burst;
    uint64_t          rnd, now, tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  a, b;

    static const uint32_t  windows[] = { 1, 60, 3600 };

    (void) state;

    rnd = 42;

    for (i = 0; i < 200000; i++) {
        quota = (uint32_t) (ig_test_rand(&rnd) % 1000000) + 1;
        burst = (uint32_t) (ig_test_rand(&rnd) % 1000001);

        if (i & 1) {
            quota = (uint32_t) (ig_test_rand(&rnd) % 20) + 1;
            burst = (uint32_t) (ig_test_rand(&rnd) % 10);
        }

        ig_gcra_policy_init(&p, quota, windows[ig_test_rand(&rnd) % 3],
                            burst);

        now = ig_test_rand(&rnd) >> (ig_test_rand(&rnd) % 4 ? 2 : 0);

        switch (ig_test_rand(&rnd) % 4) {
        case 0:
            tat = 0;
            break;
        case 1:
            tat = now + ig_test_rand(&rnd)
                        % (p.tolerance_us + 3 * p.interval_us);
            if (tat < now) {
                tat = UINT64_MAX;
            }
            break;
        case 2:
            tat = now - ig_test_rand(&rnd) % (now + 1);
            break;
        default:
            tat = ig_test_rand(&rnd);
        }

        memset(&a, 0x5a, sizeof(a));
        memset(&b, 0x5a, sizeof(b));
        ig_gcra_check(&p, now, tat, &a);
        ig_test_reference(&p, now, tat, &b);

        assert_int_equal(a.allowed, b.allowed);
        assert_int_equal(a.tat_us, b.tat_us);
        assert_int_equal(a.remaining, b.remaining);
        assert_int_equal(a.retry_after_us, b.retry_after_us);

        if (!a.allowed) {
            assert_true(a.retry_after_us > 0);
        }

        assert_int_equal(a.reset_us, b.reset_us);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_parse_rate_ok),
        cmocka_unit_test(test_parse_rate_bad),
        cmocka_unit_test(test_policy_init),
        cmocka_unit_test(test_steady_stream),
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_denied_consumes_nothing),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_minute_hour),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_ceil_seconds),
        cmocka_unit_test(test_reference),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
