/*
 * Copyright (C) infergate authors
 *
 * ig_oip's response encoder, as made cheaper for issue 17: the float
 * formatter without libm (the decimal exponent from the binary one,
 * llrint() as a 2^52 add) and shapes without printf must write exactly
 * the bytes the previous code wrote.  The previous formatter is kept
 * here verbatim as the reference.  Also prints cycles per encode and
 * decode of the bench's request (information, never asserted).
 */

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ig_oip.h"


/* the previous oip_float() and its helpers, unchanged */

static const double  ref_pow10[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};


static uint8_t *
ref_uint(uint8_t *p, uint64_t n)
{
    uint8_t  buf[20], *q;

    q = buf + sizeof(buf);

    do {
        *--q = (uint8_t) ('0' + n % 10);
        n /= 10;
    } while (n);

    memcpy(p, q, buf + sizeof(buf) - q);

    return p + (buf + sizeof(buf) - q);
}


static uint8_t *
ref_float(uint8_t *p, float v)
{
    int       e10, k, nd, i, tries;
    double    d, back;
    uint64_t  n;
    uint8_t   dig[10] = { 0 };

    if (!isfinite(v)) {
        memcpy(p, "null", 4);
        return p + 4;
    }

    if (signbit(v)) {
        *p++ = '-';
        v = -v;
    }

    if (v < 16777216.0f && v == (float) (int32_t) v) {
        return ref_uint(p, (uint64_t) v);
    }

    d = (double) v;
    e10 = (int) floor(log10(d));

    for (tries = 0; tries < 3; tries++) {
        k = 8 - e10;

        if (k < -22 || k > 22) {
            goto slow;
        }

        n = (uint64_t) llrint(k >= 0 ? d * ref_pow10[k] : d / ref_pow10[-k]);

        if (n >= 1000000000) {
            e10++;
            continue;
        }

        if (n < 100000000) {
            e10--;
            continue;
        }

        break;
    }

    if (tries == 3) {
        goto slow;
    }

    back = (k >= 0) ? (double) n / ref_pow10[k] : (double) n * ref_pow10[-k];

    if ((float) back != v) {
        goto slow;
    }

    for (nd = 9; n % 10 == 0; nd--) {
        n /= 10;
    }

    for (i = nd; i > 0; i--) {
        dig[i - 1] = (uint8_t) ('0' + n % 10);
        n /= 10;
    }

    if (e10 >= 0 && e10 < 9) {
        for (i = 0; i <= e10; i++) {
            *p++ = (i < nd) ? dig[i] : '0';
        }

        if (nd > e10 + 1) {
            *p++ = '.';
            memcpy(p, dig + e10 + 1, nd - e10 - 1);
            p += nd - e10 - 1;
        }

        return p;
    }

    if (e10 < 0 && e10 >= -5) {
        *p++ = '0';
        *p++ = '.';

        for (i = -1; i > e10; i--) {
            *p++ = '0';
        }

        memcpy(p, dig, nd);

        return p + nd;
    }

    *p++ = dig[0];

    if (nd > 1) {
        *p++ = '.';
        memcpy(p, dig + 1, nd - 1);
        p += nd - 1;
    }

    *p++ = 'e';

    if (e10 < 0) {
        *p++ = '-';
        e10 = -e10;
    }

    return ref_uint(p, (uint64_t) e10);

slow:

    return p + snprintf((char *) p, 24, "%.9g", (double) v);
}


#define NVALS  4096

static ig_model_meta_t  meta;
static float            vals[NVALS];
static uint8_t         *buf, *want;
static size_t           buflen;


static int
setup(void **state)
{
    (void) state;

    memset(&meta, 0, sizeof(meta));
    strcpy(meta.platform, "onnx");
    strcpy(meta.input.name, "input");
    meta.input.dtype = IG_DT_FP32;
    meta.input.ndims = 2;
    meta.input.dims[0] = -1;
    meta.input.dims[1] = 9;
    strcpy(meta.output.name, "output");
    meta.output.dtype = IG_DT_FP32;
    meta.output.ndims = 2;
    meta.output.dims[0] = -1;
    meta.output.dims[1] = NVALS;
    meta.nfeatures = 9;
    meta.noutputs = NVALS;

    buflen = ig_oip_encode_infer_len("m", NULL, NULL, &meta, 1);
    buf = malloc(buflen);
    want = malloc(buflen);

    return buf == NULL || want == NULL;
}


static int
teardown(void **state)
{
    (void) state;

    free(buf);
    free(want);

    return 0;
}


/* vals[] through the encoder, against the reference, byte for byte */

static void
check_vals(void)
{
    size_t    i;
    uint8_t  *end, *p, *q, *w;

    end = ig_oip_encode_infer(buf, "m", NULL, NULL, &meta, vals, 1);
    assert_true((size_t) (end - buf) < buflen);
    *end = '\0';

    p = (uint8_t *) strstr((char *) buf, "\"data\":[");
    assert_non_null(p);
    p += 8;

    w = want;

    for (i = 0; i < NVALS; i++) {
        if (i) {
            *w++ = ',';
        }

        w = ref_float(w, vals[i]);
    }

    w = (uint8_t *) memcpy(w, "]}]}", 4) + 4;

    if ((size_t) (end - p) != (size_t) (w - want)
        || memcmp(p, want, w - want) != 0)
    {
        /* find the first value that differs, for the message */
        for (i = 0; i < NVALS; i++) {
            q = ref_float(want, vals[i]);
            *q = '\0';

            if (strncmp((char *) p, (char *) want, q - want) != 0
                || (p[q - want] != ',' && p[q - want] != ']'))
            {
                print_error("%a: want %s, got %.24s\n", (double) vals[i],
                            (char *) want, (char *) p);
                break;
            }

            p += (q - want) + 1;
        }

        fail();
    }
}


/* random bit patterns, all exponents: the same bytes as before */

static void
test_float_same_bytes_random(void **state)
{
    int       k;
    size_t    i;
    uint32_t  bits;

    (void) state;

    srandom(17);

    for (k = 0; k < 400; k++) {
        for (i = 0; i < NVALS; i++) {
            bits = ((uint32_t) random() << 1) ^ (uint32_t) random();

            if (k % 2) {
                /* scores and features: 1e-8 .. 1e10 */
                bits = (bits & 0x807fffff)
                       | ((uint32_t) (100 + random() % 60) << 23);
            }

            memcpy(&vals[i], &bits, sizeof(float));
        }

        check_vals();
    }
}


/*
 * Every float of every binade near the powers of ten (where the
 * exponent estimate is one low and the loop steps), near the ends of the
 * fast range (k = +-22, 2^52 after scaling), subnormals, FLT_MAX, and
 * values whose 9 digits round up to a power of ten.
 */

static void
test_float_same_bytes_edges(void **state)
{
    int       e, j;
    size_t    i;
    float     p10, f;
    uint32_t  bits;

    (void) state;

    i = 0;

    for (e = -45; e <= 38; e++) {
        p10 = (float) pow(10.0, e);

        if (!isfinite(p10) || p10 == 0.0f) {
            continue;
        }

        f = p10;

        for (j = 0; j < 24; j++) {
            f = nextafterf(f, 0.0f);
        }

        for (j = 0; j < 48; j++) {
            vals[i++] = (j % 2) ? -f : f;
            f = nextafterf(f, INFINITY);

            if (i == NVALS) {
                check_vals();
                i = 0;
            }
        }

        /* 9.99999999 x 10^e: 9 digits round up to 10^(e+1) */
        vals[i++] = (float) (9.999999999 * pow(10.0, e));

        if (i == NVALS) {
            check_vals();
            i = 0;
        }
    }

    for (bits = 0; bits < 512; bits++) {         /* subnormals, zero */
        memcpy(&vals[i++], &bits, sizeof(float));

        if (i == NVALS) {
            check_vals();
            i = 0;
        }
    }

    vals[i++] = FLT_MAX;
    vals[i++] = -FLT_MAX;
    vals[i++] = FLT_MIN;
    vals[i++] = 16777216.0f;
    vals[i++] = 16777215.5f;
    vals[i++] = 0.5f;
    vals[i++] = 0.745319903f;
    vals[i++] = NAN;
    vals[i++] = -INFINITY;
    vals[i++] = -0.0f;

    while (i < NVALS) {
        vals[i] = vals[i % 64];
        i++;
    }

    check_vals();
}


/* whole binades, every float: one around 1, one around 1e-5, one 1e9 */

static void
test_float_same_bytes_binades(void **state)
{
    size_t    i;
    uint32_t  bits, start[] = { 0x3f800000, 0x37200000, 0x4e6e0000 };
    uint32_t  b;

    (void) state;

    for (b = 0; b < sizeof(start) / sizeof(start[0]); b++) {
        i = 0;

        for (bits = start[b]; bits < start[b] + (1u << 23); bits += 7) {
            memcpy(&vals[i++], &bits, sizeof(float));

            if (i == NVALS) {
                check_vals();
                i = 0;
            }
        }
    }
}


/* shapes without printf: negative, zero and 64-bit dims as %lld */

static void
test_shapes(void **state)
{
    size_t           len;
    uint8_t         *p, *end;
    char             want_s[256];
    const char      *vs[1] = { "1" };
    ig_model_meta_t  m;

    (void) state;

    memset(&m, 0, sizeof(m));
    strcpy(m.platform, "onnx");
    strcpy(m.input.name, "x");
    m.input.dtype = IG_DT_INT64;
    m.input.ndims = 4;
    m.input.dims[0] = -1;
    m.input.dims[1] = 0;
    m.input.dims[2] = INT64_MAX;
    m.input.dims[3] = INT64_MIN;
    strcpy(m.output.name, "y");
    m.output.dtype = IG_DT_FP32;
    m.output.ndims = 3;
    m.output.dims[0] = -1;
    m.output.dims[1] = 10;
    m.output.dims[2] = -7;
    m.nfeatures = 1;
    m.noutputs = 1;

    len = ig_oip_encode_metadata_len("m", vs, 1, &m);
    p = malloc(len);
    assert_non_null(p);
    end = ig_oip_encode_metadata(p, "m", vs, 1, &m);
    assert_true((size_t) (end - p) <= len);

    snprintf(want_s, sizeof(want_s), "{\"name\":\"m\",\"versions\":[\"1\"],"
             "\"platform\":\"onnx\",\"inputs\":[{\"name\":\"x\",\"datatype\":"
             "\"INT64\",\"shape\":[%lld,%lld,%lld,%lld]}],\"outputs\":"
             "[{\"name\":\"y\",\"datatype\":\"FP32\",\"shape\":[-1,10,-7]}]}",
             -1LL, 0LL, (long long) INT64_MAX, (long long) INT64_MIN);

    assert_int_equal(end - p, strlen(want_s));
    assert_memory_equal(p, want_s, end - p);
    free(p);

    /* the response: the batch dim replaced by the rows; no dims given */
    len = ig_oip_encode_infer_len("m", "1", NULL, &m, 123);
    p = calloc(1, len);
    assert_non_null(p);
    vals[0] = 0.25f;
    m.noutputs = 1;
    end = ig_oip_encode_infer(p, "m", "1", NULL, &m, vals, 1);
    *end = '\0';
    assert_non_null(strstr((char *) p, "\"shape\":[1,10,-7],"));

    m.output.ndims = 0;
    m.noutputs = 2;
    vals[1] = -3.0f;
    end = ig_oip_encode_infer(p, "m", "1", NULL, &m, vals, 1);
    *end = '\0';
    assert_string_equal((char *) p, "{\"model_name\":\"m\",\"model_version\":"
                        "\"1\",\"outputs\":[{\"name\":\"y\",\"datatype\":"
                        "\"FP32\",\"shape\":[1,2],\"data\":[0.25,-3]}]}");
    free(p);
}


static inline uint64_t
now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}


/* ns per decode and encode of bench/bench.py's infer request */

static void
test_cost(void **state)
{
    int               rc;
    char              err[256];
    float             rows[16], out[1] = { 0.745319903f };
    size_t            i, n, len;
    uint8_t           resp[1024], *end;
    uint64_t          t0, t1, t2;
    ig_model_meta_t   m;
    ig_oip_request_t  req;

    static const char  body[] =
        "{\"id\":\"b1\",\"inputs\":[{\"name\":\"input__0\",\"shape\":[1,9],"
        "\"datatype\":\"FP32\",\"data\":[0.5,1.5,2.5,3.5,4.5,5.5,6.5,7.5,"
        "8.5]}]}";

    (void) state;

    memset(&m, 0, sizeof(m));
    strcpy(m.platform, "xgboost_json");
    strcpy(m.input.name, "input__0");
    m.input.dtype = IG_DT_FP32;
    m.input.ndims = 2;
    m.input.dims[0] = -1;
    m.input.dims[1] = 9;
    strcpy(m.output.name, "output__0");
    m.output.dtype = IG_DT_FP32;
    m.output.ndims = 2;
    m.output.dims[0] = -1;
    m.output.dims[1] = 1;
    m.nfeatures = 9;
    m.noutputs = 1;

    n = 200000;

    t0 = now_ns();

    for (i = 0; i < n; i++) {
        rc = ig_oip_decode_infer_bin((const uint8_t *) body, sizeof(body) - 1,
                                     IG_OIP_NO_BINARY, &m, rows, 16, &req,
                                     err, sizeof(err));
        assert_int_equal(rc, 0);
    }

    t1 = now_ns();

    for (i = 0; i < n; i++) {
        len = ig_oip_encode_infer_len("credit-risk", "1", &req, &m, 1);
        assert_true(len <= sizeof(resp));
        end = ig_oip_encode_infer(resp, "credit-risk", "1", &req, &m, out,
                                  1);
    }

    t2 = now_ns();

    *end = '\0';
    assert_string_equal((char *) resp,
                        "{\"model_name\":\"credit-risk\",\"model_version\":"
                        "\"1\",\"id\":\"b1\",\"outputs\":[{\"name\":"
                        "\"output__0\",\"datatype\":\"FP32\",\"shape\":[1,1],"
                        "\"data\":[0.745319903]}]}");

    print_message("bench request: decode %.0f ns, encode (len + write) "
                  "%.0f ns\n", (double) (t1 - t0) / n,
                  (double) (t2 - t1) / n);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_float_same_bytes_random),
        cmocka_unit_test(test_float_same_bytes_edges),
        cmocka_unit_test(test_float_same_bytes_binades),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_cost),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
