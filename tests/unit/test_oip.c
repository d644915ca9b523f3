/*
 * Copyright (C) infergate authors
 *
 * ig_oip: Open Inference Protocol decoding and encoding.
 */

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ig_oip.h"


static ig_model_meta_t  meta;


static int
setup(void **state)
{
    (void) state;

    memset(&meta, 0, sizeof(meta));
    strcpy(meta.platform, "xgboost_json");
    strcpy(meta.input.name, "input");
    meta.input.dtype = IG_DT_FP32;
    meta.input.ndims = 2;
    meta.input.dims[0] = -1;
    meta.input.dims[1] = 3;
    strcpy(meta.output.name, "output");
    meta.output.dtype = IG_DT_FP32;
    meta.output.ndims = 2;
    meta.output.dims[0] = -1;
    meta.output.dims[1] = 2;
    meta.nfeatures = 3;
    meta.noutputs = 2;

    return 0;
}


static float             rows[64];
static ig_oip_request_t  req;
static char              err[256];


static int
decode_n(const char *body, size_t max)
{
    int     rc;
    size_t  i;

    for (i = 0; i < 64; i++) {
        rows[i] = -12345.0f;
    }

    rc = ig_oip_decode_infer((const uint8_t *) body, strlen(body), &meta,
                             rows, max, &req, err, sizeof(err));

    if (rc == -1) {
        /* one line, never empty */
        assert_true(err[0] != '\0');
        assert_null(strchr(err, '\n'));
    }

    return rc;
}


static int
decode(const char *body)
{
    return decode_n(body, 64);
}


static void
expect_error(const char *body, const char *fragment)
{
    int  rc;

    rc = decode(body);

    if (rc != -1 || strstr(err, fragment) == NULL) {
        print_error("body %s: rc %d, error \"%s\", expected \"%s\"\n",
                    body, rc, err, fragment);
        fail();
    }
}


#define INM(dt, shape, data)                                                  \
    "\"inputs\":[{\"name\":\"input\",\"shape\":" shape ",\"datatype\":\""     \
    dt "\",\"data\":" data "}]"
#define IN(dt, shape, data)  "{" INM(dt, shape, data) "}"


static void
test_fp32_flat_nested(void **state)
{
    (void) state;

    assert_int_equal(decode(IN("FP32", "[2,3]", "[1,2.5,-3,4e2,0.1,-0]")),
                     0);
    assert_int_equal(req.rows, 2);
    assert_int_equal(req.has_id, 0);
    assert_true(rows[0] == 1.0f && rows[1] == 2.5f && rows[2] == -3.0f);
    assert_true(rows[3] == 400.0f && rows[4] == 0.1f && rows[5] == 0.0f);
    assert_true(rows[6] == -12345.0f);

    assert_int_equal(decode(IN("FP32", "[2,3]", "[[1,2,3],[4,5,6]]")), 0);
    assert_int_equal(req.rows, 2);
    assert_true(rows[5] == 6.0f);

    /* the caller's own members beside the protocol's are skipped */
    assert_int_equal(decode("{\"user_id\":\"u42\",\"login_time\":"
                            "\"2026-11-22T03:12:00Z\",\"tags\":[[1],{}],"
                            INM("FP32", "[1,3]", "[4,5,6]") ","
                            "\"meta\":{\"inputs\":7}}"), 0);
    assert_int_equal(req.rows, 1);
    assert_true(rows[0] == 4.0f && rows[2] == 6.0f);

    /* data before shape and datatype, members in any order */
    assert_int_equal(decode("{\"outputs\":[{\"name\":\"output\"}],"
                            "\"inputs\":[{\"data\":[[7,8,9]],\"shape\":"
                            "[1,3],\"datatype\":\"FP32\",\"parameters\":"
                            "{\"a\":[1,{\"b\":null}]},\"name\":\"input\"}],"
                            "\"id\":\"x\",\"parameters\":{\"p\":1}}"), 0);
    assert_int_equal(req.rows, 1);
    assert_true(rows[0] == 7.0f && rows[2] == 9.0f);
    assert_int_equal(req.has_id, 1);
    assert_string_equal(req.id, "x");
}


static void
test_datatypes(void **state)
{
    (void) state;

    assert_int_equal(decode(IN("BOOL", "[1,3]", "[true,false,true]")), 0);
    assert_true(rows[0] == 1.0f && rows[1] == 0.0f && rows[2] == 1.0f);

    assert_int_equal(decode(IN("INT32", "[1,3]",
                               "[2147483647,-2147483648,0]")), 0);
    assert_true(rows[0] == 2147483648.0f && rows[1] == -2147483648.0f);

    assert_int_equal(decode(IN("INT64", "[1,3]",
                               "[9223372036854775807,"
                               "-9223372036854775808,16777217]")), 0);
    assert_true(rows[0] == 9223372036854775807.0f);
    assert_true(rows[1] == -9223372036854775808.0f);
    assert_true(rows[2] == 16777216.0f);

    assert_int_equal(decode(IN("FP64", "[1,3]",
                               "[0.1,1e-300,-1.5e30]")), 0);
    assert_true(rows[0] == 0.1f && rows[1] == 0.0f && rows[2] == -1.5e30f);

    /* null is a missing value in floating-point data */
    assert_int_equal(decode(IN("FP32", "[1,3]", "[null,1,2]")), 0);
    assert_true(isnan(rows[0]));

    expect_error(IN("BOOL", "[1,3]", "[1,0,1]"), "true or false");
    expect_error(IN("BOOL", "[1,3]", "[true,null,true]"), "true or false");
    expect_error(IN("INT32", "[1,3]", "[2147483648,0,0]"),
                 "out of range for INT32");
    expect_error(IN("INT32", "[1,3]", "[-2147483649,0,0]"),
                 "out of range for INT32");
    expect_error(IN("INT32", "[1,3]", "[1.5,0,0]"), "integers");
    expect_error(IN("INT32", "[1,3]", "[1e2,0,0]"), "integers");
    expect_error(IN("INT32", "[1,3]", "[true,0,0]"), "integers");
    expect_error(IN("INT64", "[1,3]", "[9223372036854775808,0,0]"),
                 "out of range for INT64");
    expect_error(IN("INT64", "[1,3]", "[-9223372036854775809,0,0]"),
                 "out of range for INT64");
    expect_error(IN("INT64", "[1,3]", "[null,0,0]"), "integers");
    expect_error(IN("FP32", "[1,3]", "[true,0,0]"), "numbers");
    expect_error(IN("FP32", "[1,3]", "[1e39,0,0]"), "out of range for FP32");
    expect_error(IN("FP64", "[1,3]", "[1e39,0,0]"), "out of range for FP32");
    expect_error(IN("FP64", "[1,3]", "[1e400,0,0]"),
                 "out of range for FP64");
    expect_error(IN("FP16", "[1,3]", "[1,0,0]"), "unsupported datatype");
    expect_error(IN("BYTES", "[1,3]", "[1,0,0]"), "unsupported datatype");
    expect_error(IN("FP32", "[1,3]", "[\"1\",0,0]"), "numbers or booleans");
    expect_error(IN("FP32", "[1,3]", "[{},0,0]"), "numbers or booleans");
}


static void
test_shape(void **state)
{
    (void) state;

    expect_error(IN("FP32", "[1,4]", "[1,2,3,4]"), "shape[1] is 4");
    expect_error(IN("FP32", "[3]", "[1,2,3]"), "2 dimensions");
    expect_error(IN("FP32", "[1,3,1]", "[1,2,3]"), "2 dimensions");
    expect_error(IN("FP32", "[1,1,1,1,1,1,1]", "[1]"), "2 dimensions");
    expect_error(IN("FP32", "[2,3]", "[1,2,3]"), "holds 3 values");
    expect_error(IN("FP32", "[1,3]", "[[1,2],[3,4]]"), "holds 4 values");
    expect_error(IN("FP32", "[0,3]", "[]"), "must not be empty");
    expect_error(IN("FP32", "[-1,3]", "[1,2,3]"), "non-negative");
    expect_error(IN("FP32", "[1.0,3]", "[1,2,3]"), "non-negative");
    expect_error(IN("FP32", "[\"1\",3]", "[1,2,3]"), "non-negative");
    expect_error(IN("FP32", "[99999999999999999999,3]", "[1,2,3]"),
                 "too large");
    expect_error(IN("FP32", "{}", "[1,2,3]"), "\"shape\" must be an array");
}


static void
test_fit(void **state)
{
    (void) state;

    /* 4 rows of 3 do not fit in 9 floats: 413, nothing written past */
    assert_int_equal(decode_n(IN("FP32", "[4,3]",
                                 "[1,2,3,4,5,6,7,8,9,10,11,12]"), 9), -2);
    assert_true(rows[9] == -12345.0f);

    assert_int_equal(decode_n(IN("FP32", "[3,3]",
                                 "[1,2,3,4,5,6,7,8,9]"), 9), 0);

    /* a protocol error wins over the size */
    assert_int_equal(decode_n(IN("FP32", "[4,3]", "[1,2]"), 1), -1);
}


static void
test_malformed(void **state)
{
    (void) state;

    expect_error("", "empty");
    expect_error("[]", "must be a JSON object");
    expect_error("42", "must be a JSON object");
    expect_error("{", "malformed JSON");
    expect_error("{\"inputs\":[{]}", "malformed JSON");
    expect_error(IN("FP32", "[1,3]", "[1,2,3]") " x", "malformed JSON");
    expect_error("{}", "no input tensor");
    expect_error("{\"inputs\":[]}", "no input tensor");
    expect_error("{\"inputs\":{}}", "\"inputs\" must be an array");
    expect_error("{\"inputs\":[1]}", "must be an object");
    expect_error("{\"inputs\":[{}]}", "lacks \"name\"");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\"}]}", "lacks \"data\"");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]}]}",
                 "unknown input \"x\"");
    expect_error("{\"inputs\":[{\"name\":7}]}", "must be a string");
    expect_error("{\"id\":5," INM("FP32", "[1,3]", "[1,2,3]") "}",
                 "\"id\" must be a string");
    /* the request's own unknown members are skipped, whatever they hold */
    expect_error("{\"extra\":1}", "no input tensor");
    expect_error("{\"user_id\":\"u1\",\"x\":{\"a\":[1,{\"inputs\":5}]},"
                 "\"y\":[[]]}", "no input tensor");
    expect_error("{\"x\":[1,{\"y\":2}]," INM("FP32", "[1,3]", "[1,2,3")
                 "}", "malformed JSON");
    expect_error("{\"outputs\":[{\"name\":\"output\",\"nam\":1}]}",
                 "unknown member \"nam\"");
    expect_error("{\"inputs\":[{\"nam\":1}]}", "unknown member \"nam\"");
    expect_error("{\"inputs\":[],\"inputs\":[]}", "duplicate member");
    expect_error("{\"parameters\":[]}", "\"parameters\" must be an object");
    expect_error("{\"outputs\":[{\"name\":\"nope\"}]}",
                 "unknown output \"nope\"");
    expect_error("{\"outputs\":[{}]," INM("FP32", "[1,3]", "[1,2,3]") "}",
                 "lacks \"name\"");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]},{}]}",
                 "one input tensor");
    expect_error(IN("FP32", "[1,3]",
                    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
                    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1,2,3]]]]]]]]]"
                    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
                    "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"), "deep");

    /* invalid UTF-8 in a name is refused by the parser */
    expect_error("{\"id\":\"\xff\"}", "malformed JSON");
}


static void
test_id(void **state)
{
    char     body[1024];
    uint8_t  buf[2048], *end;
    float    out[4] = { 0.5f, 1.0f, -2.0f, 3.25f };

    (void) state;

    assert_int_equal(decode("{\"id\":\"a\\\"b\\u0000c\","
                            INM("FP32", "[1,3]", "[1,2,3]") "}"), 0);
    assert_int_equal(req.id_len, 5);
    assert_memory_equal(req.id, "a\"b\0c", 5);

    end = ig_oip_encode_infer(buf, "m", "1", &req, &meta, out, 1);
    *end = '\0';
    assert_string_equal((char *) buf,
                        "{\"model_name\":\"m\",\"model_version\":\"1\","
                        "\"id\":\"a\\\"b\\u0000c\",\"outputs\":[{\"name\":"
                        "\"output\",\"datatype\":\"FP32\",\"shape\":[1,2],"
                        "\"data\":[0.5,1]}]}");

    memset(body, 'a', sizeof(body));
    memcpy(body, "{\"id\":\"", 7);
    strcpy(body + 7 + IG_OIP_ID_MAX, "\"}");
    expect_error(body, "longer than");
}


static void
test_encode(void **state)
{
    size_t       n, len;
    uint8_t     *buf, *end;
    const char  *versions[] = { "1", "2" };
    float        out[6] = { 0.1f, -1e-40f, NAN, INFINITY, 16777217.0f,
                            -0.0f };
    float        back;
    char        *p, *q;

    (void) state;

    len = ig_oip_encode_infer_len("m", NULL, NULL, &meta, 3);
    buf = malloc(len);
    end = ig_oip_encode_infer(buf, "m", NULL, NULL, &meta, out, 3);
    assert_true((size_t) (end - buf) < len);
    *end = '\0';
    assert_non_null(strstr((char *) buf, "\"shape\":[3,2]"));
    assert_non_null(strstr((char *) buf, ",null,null,"));
    assert_null(strstr((char *) buf, "model_version"));
    assert_null(strstr((char *) buf, "\"id\""));

    /* each finite value reads back bit for bit */
    p = strstr((char *) buf, "\"data\":[") + 8;
    for (n = 0; n < 6; n++) {
        q = strpbrk(p, ",]");
        if (strncmp(p, "null", 4) != 0) {
            back = strtof(p, NULL);
            assert_memory_equal(&back, &out[n], sizeof(float));
        }
        p = q + 1;
    }
    free(buf);

    /* worst case floats fit the bound */
    {
        float  big[6];

        for (n = 0; n < 6; n++) {
            big[n] = -1.17549435e-38f * (float) (n + 1) / 3.0f;
        }
        len = ig_oip_encode_infer_len("m", "v", NULL, &meta, 3);
        buf = malloc(len);
        end = ig_oip_encode_infer(buf, "m", "v", NULL, &meta, big, 3);
        assert_true((size_t) (end - buf) < len);
        free(buf);
    }

    len = ig_oip_encode_metadata_len("m\"x", versions, 2, &meta);
    buf = malloc(len);
    end = ig_oip_encode_metadata(buf, "m\"x", versions, 2, &meta);
    assert_true((size_t) (end - buf) < len);
    *end = '\0';
    assert_string_equal((char *) buf,
                        "{\"name\":\"m\\\"x\",\"versions\":[\"1\",\"2\"],"
                        "\"platform\":\"xgboost_json\",\"inputs\":[{\"name\":"
                        "\"input\",\"datatype\":\"FP32\",\"shape\":[-1,3]}],"
                        "\"outputs\":[{\"name\":\"output\",\"datatype\":"
                        "\"FP32\",\"shape\":[-1,2]}]}");
    free(buf);

    len = ig_oip_encode_error_len("bad \"x\"\n");
    buf = malloc(len);
    end = ig_oip_encode_error(buf, "bad \"x\"\n");
    assert_true((size_t) (end - buf) < len);
    *end = '\0';
    assert_string_equal((char *) buf, "{\"error\":\"bad \\\"x\\\"\\n\"}");
    free(buf);

    assert_string_equal(ig_oip_dtype_name(IG_DT_INT64), "INT64");
    assert_null(ig_oip_dtype_name(0));
    assert_null(ig_oip_dtype_name(99));
}


/* every float reads back bit for bit, from ours and through strtod */

static void
test_float_roundtrip(void **state)
{
    int              i, j, k;
    char            *p, *q;
    float           *vals, back;
    size_t           len;
    uint8_t         *buf, *end;
    uint32_t         bits;
    ig_model_meta_t  wide;

    (void) state;

    wide = meta;
    wide.noutputs = 1000;
    wide.output.dims[1] = 1000;

    vals = malloc(1000 * sizeof(float));
    len = ig_oip_encode_infer_len("m", NULL, NULL, &wide, 1);
    buf = malloc(len);

    srandom(11);

    for (k = 0; k < 600; k++) {
        for (i = 0; i < 1000; i++) {
            do {
                bits = ((uint32_t) random() << 1) ^ (uint32_t) random();
                if (k % 3 == 1) {
                    /* the usual range of scores and features */
                    bits = (bits & 0x807fffff) | ((uint32_t) (100 + random()
                                                              % 60) << 23);
                }
                memcpy(&vals[i], &bits, sizeof(float));
            } while (!isfinite(vals[i]));

            if (k % 3 == 2 && i % 2) {
                vals[i] = (float) (random() % 2000000) / 1000.0f;
            }
        }

        end = ig_oip_encode_infer(buf, "m", NULL, NULL, &wide, vals, 1);
        assert_true((size_t) (end - buf) < len);
        *end = '\0';

        p = strstr((char *) buf, "\"data\":[") + 8;

        for (i = 0; i < 1000; i++) {
            q = strpbrk(p, ",]");
            assert_non_null(q);
            assert_true(q - p <= 16);

            for (j = 0; p + j < q; j++) {
                assert_non_null(strchr("-+0123456789.e", p[j]));
            }

            back = strtof(p, NULL);
            if (memcmp(&back, &vals[i], sizeof(float)) != 0) {
                print_error("%.9g encoded as %.*s\n", (double) vals[i],
                            (int) (q - p), p);
                fail();
            }

            back = (float) strtod(p, NULL);
            assert_memory_equal(&back, &vals[i], sizeof(float));

            p = q + 1;
        }
    }

    free(buf);
    free(vals);
}


/* decoded numbers are (float) strtod() of the literal, whatever its form */

static void
test_number_parse(void **state)
{
    int     i, j, n;
    char    lit[3][64], body[512];
    float   want;

    (void) state;

    srandom(5);

    for (i = 0; i < 100000; i++) {
        for (j = 0; j < 3; j++) {
            n = 0;
            if (random() % 2) {
                lit[j][n++] = '-';
            }
            n += sprintf(lit[j] + n, "%ld", random() % (j ? 100000 : 10));
            lit[j][n++] = '.';
            n += sprintf(lit[j] + n, "%ld%ld", random(), random() % 1000);
            if (random() % 2) {
                n += sprintf(lit[j] + n, "e%ld", random() % 80 - 40);
            }
            lit[j][n] = '\0';
        }

        snprintf(body, sizeof(body), IN("FP64", "[1,3]", "[%s,%s,%s]"),
                 lit[0], lit[1], lit[2]);

        if (decode(body) != 0) {
            /* beyond FP32: must say so */
            assert_non_null(strstr(err, "out of range"));
            continue;
        }

        for (j = 0; j < 3; j++) {
            want = (float) strtod(lit[j], NULL);
            if (memcmp(&want, &rows[j], sizeof(float)) != 0) {
                print_error("%s decoded as %.9g, not %.9g\n", lit[j],
                            (double) rows[j], (double) want);
                fail();
            }
        }
    }
}


/* Triton's binary tensor data extension */

static int
decode_bin(const char *json, const void *raw, size_t rawlen, size_t max)
{
    int      rc;
    size_t   jl, i;
    uint8_t  body[1024];

    for (i = 0; i < 64; i++) {
        rows[i] = -12345.0f;
    }

    jl = strlen(json);
    memcpy(body, json, jl);
    memcpy(body + jl, raw, rawlen);

    rc = ig_oip_decode_infer_bin(body, jl + rawlen, jl, &meta, rows, max,
                                 &req, err, sizeof(err));

    if (rc == -1) {
        assert_true(err[0] != '\0');
        assert_null(strchr(err, '\n'));
    }

    return rc;
}


#define BIN(dt, shape, size)                                                  \
    "{\"inputs\":[{\"name\":\"input\",\"shape\":" shape ",\"datatype\":\""    \
    dt "\",\"parameters\":{\"binary_data_size\":" size "}}]"


static void
expect_bin_error(const char *json, const void *raw, size_t rawlen,
    const char *fragment)
{
    int  rc;

    rc = decode_bin(json, raw, rawlen, 64);

    if (rc != -1 || strstr(err, fragment) == NULL) {
        print_error("body %s: rc %d, error \"%s\", expected \"%s\"\n",
                    json, rc, err, fragment);
        fail();
    }
}


static void
test_binary(void **state)
{
    float          f[6] = { 1.5f, -2.0f, NAN, 4.0f, 5.0f, 1e30f };
    double         d[3] = { 0.25, -1.0, 3e300 };
    int32_t        i32[3] = { -7, 0, 2147483647 };
    int64_t        i64[3] = { -9007199254740993LL, 1, 42 };
    uint8_t        b[3] = { 1, 0, 1 }, bad[3] = { 1, 2, 0 };
    ig_oip_request_t  r;

    (void) state;

    /* tritonclient's default: binary inputs, binary_data_output */
    assert_int_equal(decode_bin(BIN("FP32", "[2,3]", "24")
                                ",\"parameters\":{\"binary_data_output\":"
                                "true}}", f, 24, 64), 0);
    assert_int_equal(req.rows, 2);
    assert_int_equal(req.binary_output, 1);
    assert_true(rows[0] == 1.5f && rows[1] == -2.0f && isnan(rows[2]));
    assert_true(rows[5] == 1e30f && rows[6] == -12345.0f);

    /* a per-output binary_data overrides binary_data_output */
    assert_int_equal(decode_bin(BIN("FP32", "[1,3]", "12")
                                ",\"outputs\":[{\"name\":\"output\","
                                "\"parameters\":{\"binary_data\":false}}],"
                                "\"parameters\":{\"binary_data_output\":"
                                "true}}", f, 12, 64), 0);
    assert_int_equal(req.binary_output, 0);
    assert_int_equal(decode_bin(BIN("FP32", "[1,3]", "12")
                                ",\"outputs\":[{\"name\":\"output\","
                                "\"parameters\":{\"binary_data\":true}}]}",
                                f, 12, 64), 0);
    assert_int_equal(req.binary_output, 1);
    assert_int_equal(decode_bin(BIN("FP32", "[1,3]", "12") "}", f, 12, 64),
                     0);
    assert_int_equal(req.binary_output, 0);

    assert_int_equal(decode_bin(BIN("INT32", "[1,3]", "12") "}", i32, 12,
                                64), 0);
    assert_true(rows[0] == -7.0f && rows[2] == 2147483648.0f);
    assert_int_equal(decode_bin(BIN("INT64", "[1,3]", "24") "}", i64, 24,
                                64), 0);
    assert_true(rows[0] == -9007199254740992.0f && rows[2] == 42.0f);
    assert_int_equal(decode_bin(BIN("BOOL", "[1,3]", "3") "}", b, 3, 64), 0);
    assert_true(rows[0] == 1.0f && rows[1] == 0.0f && rows[2] == 1.0f);
    expect_bin_error(BIN("BOOL", "[1,3]", "3") "}", bad, 3,
                     "BOOL element 1 is the byte 2");
    expect_bin_error(BIN("FP64", "[1,3]", "24") "}", d, 24,
                     "out of range for FP32");
    d[2] = 3.0;
    assert_int_equal(decode_bin(BIN("FP64", "[1,3]", "24") "}", d, 24, 64),
                     0);
    assert_true(rows[0] == 0.25f && rows[2] == 3.0f);

    /* sizes: named input, what was given and what the shape needs */
    expect_bin_error(BIN("FP32", "[1,3]", "8") "}", f, 8,
                     "input \"input\": \"binary_data_size\" is 8 bytes, but "
                     "shape [1,3] of FP32 needs 12");
    expect_bin_error(BIN("FP64", "[1,3]", "12") "}", f, 12, "needs 24");
    expect_bin_error(BIN("FP32", "[1,3]", "12") "}", f, 8,
                     "only 8 bytes of binary data are left");
    expect_bin_error(BIN("FP32", "[1,3]", "12") "}", f, 16,
                     "16 bytes of binary data follow the JSON header");
    expect_bin_error(BIN("FP32", "[1,3]", "-12") "}", f, 12,
                     "must be a non-negative integer");
    expect_bin_error(BIN("FP32", "[1,3]", "1.5") "}", f, 12,
                     "must be a non-negative integer");
    expect_bin_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                     "\"datatype\":\"FP32\",\"data\":[1,2,3],\"parameters\":"
                     "{\"binary_data_size\":12}}]}", f, 12,
                     "has both \"data\" and \"binary_data_size\"");
    expect_bin_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                     "\"datatype\":\"FP32\"}]}", f, 12,
                     "binary data was expected");
    expect_bin_error(BIN("BYTES", "[1,3]", "12") "}", f, 12,
                     "unsupported datatype \"BYTES\"");
    expect_bin_error(BIN("FP32", "[1,3]", "12") ",\"outputs\":[{\"name\":"
                     "\"output\",\"parameters\":{\"classification\":2}}]}",
                     f, 12, "classification");
    expect_bin_error(BIN("FP32", "[1,3]", "12") ",\"parameters\":"
                     "{\"binary_data_output\":1}}", f, 12,
                     "\"binary_data_output\" must be true or false");

    /* JSON data beside the binary header is fine; the others' params too */
    assert_int_equal(decode_bin("{\"inputs\":[{\"name\":\"input\",\"shape\":"
                                "[1,3],\"datatype\":\"FP32\",\"data\":[1,2,"
                                "3],\"parameters\":{\"x\":[{}]}}],"
                                "\"parameters\":{\"user_id\":\"u\"}}", "", 0,
                                64), 0);

    /* without the header binary_data_size is refused, and says why */
    expect_error(BIN("FP32", "[1,3]", "12") "}",
                 "lacks the Inference-Header-Content-Length header");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\"}]}", "or binary data");

    /* too many rows for the room: -2, nothing written */
    assert_int_equal(decode_bin(BIN("FP32", "[2,3]", "24") "}", f, 24, 3),
                     -2);
    assert_true(rows[0] == -12345.0f);

    /* a header longer than the body */
    assert_int_equal(ig_oip_decode_infer_bin((const uint8_t *) "{}", 2, 3,
                                             &meta, rows, 64, &r, err,
                                             sizeof(err)), -1);
    assert_non_null(strstr(err, "inference header size should be in range"));

    /* Inference-Header-Content-Length: 0, whole rows of the input */
    assert_int_equal(ig_oip_decode_infer_bin((const uint8_t *) f, 24, 0,
                                             &meta, rows, 64, &r, err,
                                             sizeof(err)), 0);
    assert_int_equal(r.rows, 2);
    assert_int_equal(r.binary_output, 1);
    assert_true(rows[4] == 5.0f);
    assert_int_equal(ig_oip_decode_infer_bin((const uint8_t *) f, 20, 0,
                                             &meta, rows, 64, &r, err,
                                             sizeof(err)), -1);
    assert_non_null(strstr(err, "not a multiple of 12"));
}


static void
test_raw_helpers(void **state)
{
    size_t    n;
    float     f[3] = { 1, 2, 3 };
    uint64_t  shape[2] = { 1, 3 }, bad[2] = { 1, 4 };

    (void) state;

    assert_int_equal(ig_oip_dtype_parse("INT64", 5), IG_DT_INT64);
    assert_int_equal(ig_oip_dtype_parse("BYTES", 5), 0);
    assert_int_equal(ig_oip_dtype_size(IG_DT_BOOL), 1);
    assert_int_equal(ig_oip_dtype_size(IG_DT_FP64), 8);
    assert_int_equal(ig_oip_dtype_size(0), 0);

    assert_int_equal(ig_oip_decode_raw(&meta, "input", IG_DT_FP32, shape, 2,
                                       (const uint8_t *) f, 12, rows, 64, &n,
                                       err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    assert_true(rows[2] == 3.0f);
    assert_int_equal(ig_oip_decode_raw(&meta, "input", IG_DT_FP32, bad, 2,
                                       (const uint8_t *) f, 12, rows, 64, &n,
                                       err, sizeof(err)), -1);
    assert_non_null(strstr(err, "input \"input\": shape[1] is 4"));
    assert_int_equal(ig_oip_decode_raw(&meta, "input", IG_DT_FP32, shape, 2,
                                       (const uint8_t *) f, 11, rows, 64, &n,
                                       err, sizeof(err)), -1);
    assert_non_null(strstr(err, "11 bytes of data, but shape [1,3] of FP32 "
                                "needs 12"));
    assert_int_equal(ig_oip_decode_raw(&meta, "input", IG_DT_FP32, shape, 2,
                                       (const uint8_t *) f, 12, rows, 2, &n,
                                       err, sizeof(err)), -2);
}


static void
test_encode_binary(void **state)
{
    float              out[4] = { 0.5f, -1.0f, NAN, 3.0f };
    size_t             len, jl;
    uint8_t            buf[1024], *end;
    ig_oip_request_t   r;
    static const char  hdr[] = "{\"model_name\":\"m\",\"model_version\":\"1\","
        "\"outputs\":[{\"name\":\"output\",\"datatype\":\"FP32\","
        "\"shape\":[2,2],\"parameters\":{\"binary_data_size\":16}}]}";

    (void) state;

    memset(&r, 0, sizeof(r));
    len = ig_oip_encode_infer_len("m", "1", &r, &meta, 2);
    end = ig_oip_encode_infer_bin(buf, "m", "1", &r, &meta, out, 2, &jl);
    assert_true((size_t) (end - buf) < len);
    assert_int_equal(jl, sizeof(hdr) - 1);
    assert_memory_equal(buf, hdr, jl);
    assert_int_equal(end - buf, jl + 16);
    assert_memory_equal(buf + jl, "\x00\x00\x00\x3f\x00\x00\x80\xbf", 8);
    assert_memory_equal(buf + jl + 12, "\x00\x00\x40\x40", 4);
}


/* random mutations of a valid body must never crash or write past max */

static void
test_random(void **state)
{
    int          i, j, rc;
    char         body[256];
    size_t       len;
    const char  *base = IN("INT32", "[2,3]", "[[1,2,3],[4,5,6]]");
    static const char  alphabet[] = "{}[],:\"0123456789.eE-+ tfnul\\x";

    (void) state;

    srandom(7);

    for (i = 0; i < 20000; i++) {
        len = strlen(base);
        memcpy(body, base, len + 1);

        for (j = random() % 4; j >= 0; j--) {
            body[random() % len] = alphabet[random() % (sizeof(alphabet) - 1)];
        }

        rows[4] = -7.0f;
        rc = ig_oip_decode_infer((const uint8_t *) body, len, &meta, rows, 4,
                                 &req, err, sizeof(err));
        assert_true(rc == 0 || rc == -1 || rc == -2);
        assert_true(rows[4] == -7.0f);
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test_setup(test_fp32_flat_nested, setup),
        cmocka_unit_test_setup(test_datatypes, setup),
        cmocka_unit_test_setup(test_shape, setup),
        cmocka_unit_test_setup(test_fit, setup),
        cmocka_unit_test_setup(test_malformed, setup),
        cmocka_unit_test_setup(test_id, setup),
        cmocka_unit_test_setup(test_encode, setup),
        cmocka_unit_test_setup(test_random, setup),
        cmocka_unit_test_setup(test_float_roundtrip, setup),
        cmocka_unit_test_setup(test_number_parse, setup),
        cmocka_unit_test_setup(test_binary, setup),
        cmocka_unit_test_setup(test_raw_helpers, setup),
        cmocka_unit_test_setup(test_encode_binary, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
