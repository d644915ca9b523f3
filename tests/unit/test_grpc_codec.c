/*
 * Copyright (C) infergate authors
 *
 * Unit tests of ngx_module/ngx_http_infergate_grpc_codec.c: framing,
 * grpc-timeout, grpc-message encoding, and the ModelInferRequest decoder
 * on messages built with the generated protobuf-c code.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <zlib.h>

#include "ngx_http_infergate_grpc_codec.h"


static void
test_unframe(void **state)
{
    int             rc, comp;
    size_t          mlen;
    const char     *err;
    const uint8_t  *msg;
    uint8_t         b[16] = { 0, 0, 0, 0, 3, 'a', 'b', 'c', 0 };

    (void) state;

    rc = ig_grpc_unframe(b, 8, 100, &msg, &mlen, &comp, &err);
    assert_int_equal(rc, IG_GRPC_OK);
    assert_int_equal(mlen, 3);
    assert_ptr_equal(msg, b + 5);

    /* an empty message is one message */
    b[4] = 0;
    assert_int_equal(ig_grpc_unframe(b, 5, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_OK);
    assert_int_equal(mlen, 0);
    b[4] = 3;

    assert_int_equal(ig_grpc_unframe(b, 0, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_INTERNAL);
    assert_int_equal(ig_grpc_unframe(b, 4, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_INTERNAL);
    assert_int_equal(ig_grpc_unframe(b, 7, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_INTERNAL);
    assert_non_null(strstr(err, "cut short"));
    assert_int_equal(ig_grpc_unframe(b, 9, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_INTERNAL);
    assert_int_equal(ig_grpc_unframe(b, 8, 2, &msg, &mlen, &comp, &err),
                     IG_GRPC_RESOURCE_EXHAUSTED);

    /* the size is checked before the bytes arrive: no buffering of 4 GiB */
    b[1] = 0xff;
    assert_int_equal(ig_grpc_unframe(b, 8, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_RESOURCE_EXHAUSTED);
    b[1] = 0;

    b[0] = 1;
    assert_int_equal(ig_grpc_unframe(b, 8, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_OK);
    assert_int_equal(comp, 1);
    b[0] = 2;
    assert_int_equal(ig_grpc_unframe(b, 8, 100, &msg, &mlen, &comp, &err),
                     IG_GRPC_INTERNAL);
    assert_null(msg);
}


static void
test_timeout(void **state)
{
#define T(s)  ig_grpc_timeout_ms((const uint8_t *) s, sizeof(s) - 1)

    (void) state;

    assert_int_equal(T("1H"), 3600000);
    assert_int_equal(T("2M"), 120000);
    assert_int_equal(T("3S"), 3000);
    assert_int_equal(T("250m"), 250);
    assert_int_equal(T("1u"), 1);             /* rounded up */
    assert_int_equal(T("1000u"), 1);
    assert_int_equal(T("1001u"), 2);
    assert_int_equal(T("1n"), 1);
    assert_int_equal(T("0m"), 0);
    assert_int_equal(T("99999999H"), 99999999LL * 3600000);
    assert_int_equal(T("00000001S"), 1000);

    assert_int_equal(T("123456789S"), -1);    /* 9 digits */
    assert_int_equal(T("S"), -1);
    assert_int_equal(T("5"), -1);
    assert_int_equal(T("5s"), -1);            /* units are case-sensitive */
    assert_int_equal(T("-5S"), -1);
    assert_int_equal(T("5 S"), -1);
    assert_int_equal(T(""), -1);

#undef T
}


static void
test_percent(void **state)
{
    uint8_t      out[64], *end;
    const char  *in = "ok 100% caf\xc3\xa9\n~";

    (void) state;

    end = ig_grpc_percent_encode(out, (const uint8_t *) in, strlen(in));
    *end = '\0';
    assert_string_equal((char *) out, "ok 100%25 caf%C3%A9%0A~");
}


/* a ModelInferRequest for a model with input "input" [-1, 3] */

typedef struct {
    Inference__ModelInferRequest                     req;
    Inference__ModelInferRequest__InferInputTensor   in, *pin;
    Inference__InferTensorContents                   c;
    int64_t                                          shape[2];
    ProtobufCBinaryData                              raw;
    ig_model_meta_t                                  meta;
} req_t;


static void
req_init(req_t *t, const char *dtype, int64_t rows)
{
    memset(t, 0, sizeof(*t));
    inference__model_infer_request__init(&t->req);
    inference__model_infer_request__infer_input_tensor__init(&t->in);
    inference__infer_tensor_contents__init(&t->c);

    t->in.name = "input";
    t->in.datatype = (char *) dtype;
    t->shape[0] = rows;
    t->shape[1] = 3;
    t->in.n_shape = 2;
    t->in.shape = t->shape;
    t->pin = &t->in;
    t->req.n_inputs = 1;
    t->req.inputs = &t->pin;

    strcpy(t->meta.input.name, "input");
    strcpy(t->meta.output.name, "output");
    t->meta.input.dtype = IG_DT_FP32;
    t->meta.input.ndims = 2;
    t->meta.input.dims[0] = -1;
    t->meta.input.dims[1] = 3;
    t->meta.nfeatures = 3;
    t->meta.noutputs = 1;
}


static int
decode(req_t *t, float *out, size_t room, size_t *rows, int *raw, char *err)
{
    return ig_grpc_decode_infer(&t->req, &t->meta, out, room, rows, raw, err,
                                256);
}


static void
test_decode(void **state)
{
    int       raw;
    char      err[256];
    float     out[8];
    size_t    rows;
    req_t     t;
    int64_t   i64[3] = { -2, 0, 1LL << 40 };
    float     f32[6] = { 1, 2, 3, 4, 5, 6 };
    uint8_t   le[24];
    double    d;

    (void) state;

    /* typed INT64 */
    req_init(&t, "INT64", 1);
    t.c.n_int64_contents = 3;
    t.c.int64_contents = i64;
    t.in.contents = &t.c;
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err), IG_GRPC_OK);
    assert_int_equal(rows, 1);
    assert_int_equal(raw, 0);
    assert_true(out[0] == -2.0f && out[2] == (float) (1LL << 40));

    /* raw FP32, two rows */
    req_init(&t, "FP32", 2);
    t.raw.data = (uint8_t *) f32;             /* little-endian host */
    t.raw.len = sizeof(f32);
    t.req.n_raw_input_contents = 1;
    t.req.raw_input_contents = &t.raw;
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err), IG_GRPC_OK);
    assert_int_equal(rows, 2);
    assert_int_equal(raw, 1);
    assert_memory_equal(out, f32, sizeof(f32));

    /* the room: 6 floats do not fit in 5 */
    assert_int_equal(decode(&t, out, 5, &rows, &raw, err),
                     IG_GRPC_RESOURCE_EXHAUSTED);

    /* raw FP64 beyond FP32's range */
    req_init(&t, "FP64", 1);
    memset(le, 0, sizeof(le));
    d = 1e300;
    memcpy(le + 8, &d, 8);
    t.raw.data = le;
    t.raw.len = 24;
    t.req.n_raw_input_contents = 1;
    t.req.raw_input_contents = &t.raw;
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err),
                     IG_GRPC_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "raw value 1 is out of range"));

    /* raw BOOL other than 0 or 1 */
    req_init(&t, "BOOL", 1);
    le[0] = 1; le[1] = 0; le[2] = 2;
    t.raw.data = le;
    t.raw.len = 3;
    t.req.n_raw_input_contents = 1;
    t.req.raw_input_contents = &t.raw;
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err),
                     IG_GRPC_INVALID_ARGUMENT);

    /* a name with a newline comes back without it */
    req_init(&t, "FP32", 1);
    t.in.name = "in\nput";
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err),
                     IG_GRPC_INVALID_ARGUMENT);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "\"in?put\""));

    /* a negative dimension, a shape that overflows */
    req_init(&t, "FP32", -1);
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err),
                     IG_GRPC_INVALID_ARGUMENT);
    req_init(&t, "FP32", INT64_MAX);
    t.c.n_fp32_contents = 3;
    t.c.fp32_contents = f32;
    t.in.contents = &t.c;
    assert_int_equal(decode(&t, out, 8, &rows, &raw, err),
                     IG_GRPC_INVALID_ARGUMENT);
}


/* in compressed by zlib: gzip (RFC 1952) or zlib (RFC 1950) */

static size_t
compress_to(uint8_t *out, size_t room, const uint8_t *in, size_t len,
    int gzip)
{
    z_stream  z;

    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, gzip ? 31 : 15, 8,
                                  Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *) in;
    z.avail_in = (uInt) len;
    z.next_out = out;
    z.avail_out = (uInt) room;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    deflateEnd(&z);

    return room - z.avail_out;
}


static void
test_inflate(void **state)
{
    int           gz;
    size_t        n, clen;
    uint8_t      *big, *c, *out;
    const char   *err;
    static const uint8_t  msg[] = "a protobuf message, more or less";

    (void) state;

    c = malloc(1 << 16);
    out = malloc(1 << 16);

    for (gz = 0; gz < 2; gz++) {
        clen = compress_to(c, 1 << 16, msg, sizeof(msg), gz);

        assert_int_equal(ig_grpc_inflate(c, clen, gz ? IG_GRPC_ENC_GZIP
                                                     : IG_GRPC_ENC_DEFLATE,
                                         NULL, 1000, &n, &err), IG_GRPC_OK);
        assert_int_equal(n, sizeof(msg));
        assert_int_equal(ig_grpc_inflate(c, clen, gz ? IG_GRPC_ENC_GZIP
                                                     : IG_GRPC_ENC_DEFLATE,
                                         out, n, &n, &err), IG_GRPC_OK);
        assert_memory_equal(out, msg, sizeof(msg));

        /* one byte less room, a cut stream, the other format, trailing */
        assert_int_equal(ig_grpc_inflate(c, clen, gz ? IG_GRPC_ENC_GZIP
                                                     : IG_GRPC_ENC_DEFLATE,
                                         out, n - 1, &n, &err),
                         IG_GRPC_RESOURCE_EXHAUSTED);
        assert_int_equal(ig_grpc_inflate(c, clen - 3, gz ? IG_GRPC_ENC_GZIP
                                                     : IG_GRPC_ENC_DEFLATE,
                                         NULL, 1000, &n, &err),
                         IG_GRPC_INTERNAL);
        assert_int_equal(ig_grpc_inflate(c, clen, gz ? IG_GRPC_ENC_DEFLATE
                                                     : IG_GRPC_ENC_GZIP,
                                         NULL, 1000, &n, &err),
                         IG_GRPC_INTERNAL);
        c[clen] = 'x';
        assert_int_equal(ig_grpc_inflate(c, clen + 1, gz ? IG_GRPC_ENC_GZIP
                                                     : IG_GRPC_ENC_DEFLATE,
                                         NULL, 1000, &n, &err),
                         IG_GRPC_INTERNAL);
    }

    /* a bomb: 8 MiB of zeros in a few KiB stops at the limit */
    big = calloc(1, 8 << 20);
    clen = compress_to(c, 1 << 16, big, 8 << 20, 1);
    assert_true(clen < 65536);
    assert_int_equal(ig_grpc_inflate(c, clen, IG_GRPC_ENC_GZIP, NULL,
                                     IG_GRPC_MAX_MESSAGE, &n, &err),
                     IG_GRPC_RESOURCE_EXHAUSTED);

    /* empty */
    clen = compress_to(c, 1 << 16, msg, 0, 1);
    assert_int_equal(ig_grpc_inflate(c, clen, IG_GRPC_ENC_GZIP, NULL, 10, &n,
                                     &err), IG_GRPC_OK);
    assert_int_equal(n, 0);

    assert_int_equal(ig_grpc_encoding((const uint8_t *) "gzip", 4),
                     IG_GRPC_ENC_GZIP);
    assert_int_equal(ig_grpc_encoding((const uint8_t *) "deflate", 7),
                     IG_GRPC_ENC_DEFLATE);
    assert_int_equal(ig_grpc_encoding((const uint8_t *) "identity", 8),
                     IG_GRPC_ENC_IDENTITY);
    assert_int_equal(ig_grpc_encoding((const uint8_t *) "snappy", 6),
                     IG_GRPC_ENC_UNKNOWN);

    free(big);
    free(c);
    free(out);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unframe),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_percent),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_inflate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
