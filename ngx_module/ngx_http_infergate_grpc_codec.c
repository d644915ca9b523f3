
/*
 * Copyright (C) infergate authors
 *
 * The gRPC codec: framing, grpc-timeout, grpc-message and the
 * ModelInferRequest decoder (ngx_http_infergate_grpc_codec.h).  No
 * nginx: the fuzzer (tests/fuzz/fuzz_grpc.c) links this file alone.
 */

#include <float.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>

#include <zlib.h>

#include "ngx_http_infergate_grpc_codec.h"


static const char  *ig_grpc_dtypes[] = {
    NULL, "BOOL", "INT32", "INT64", "FP32", "FP64"
};

static const size_t  ig_grpc_dtype_size[] = { 0, 1, 4, 8, 4, 8 };


const char *
ig_grpc_dtype_name(uint32_t dtype)
{
    if (dtype < IG_DT_BOOL || dtype > IG_DT_FP64) {
        return NULL;
    }

    return ig_grpc_dtypes[dtype];
}


int
ig_grpc_unframe(const uint8_t *body, size_t len, size_t max,
    const uint8_t **msg, size_t *mlen, int *compressed, const char **err)
{
    uint32_t  n;

    *msg = NULL;
    *mlen = 0;
    *compressed = 0;

    if (len == 0) {
        *err = "the call carries no request message";
        return IG_GRPC_INTERNAL;
    }

    if (len < IG_GRPC_PREFIX) {
        *err = "the request message is cut short (an incomplete "
               "length prefix)";
        return IG_GRPC_INTERNAL;
    }

    if (body[0] > 1) {
        *err = "the request message's compressed flag is neither 0 nor 1";
        return IG_GRPC_INTERNAL;
    }

    n = ((uint32_t) body[1] << 24) | ((uint32_t) body[2] << 16)
        | ((uint32_t) body[3] << 8) | body[4];

    if (n > max) {
        *err = "the request message is larger than the gateway accepts";
        return IG_GRPC_RESOURCE_EXHAUSTED;
    }

    if (len - IG_GRPC_PREFIX < n) {
        *err = "the request message is cut short (fewer bytes than its "
               "length prefix says)";
        return IG_GRPC_INTERNAL;
    }

    if (len - IG_GRPC_PREFIX > n) {
        *err = "a unary call carries one request message, this one more";
        return IG_GRPC_INTERNAL;
    }

    *compressed = body[0];
    *msg = body + IG_GRPC_PREFIX;
    *mlen = n;

    return IG_GRPC_OK;
}


int
ig_grpc_encoding(const uint8_t *s, size_t len)
{
    if (len == 8 && strncasecmp((const char *) s, "identity", 8) == 0) {
        return IG_GRPC_ENC_IDENTITY;
    }

    if (len == 4 && strncasecmp((const char *) s, "gzip", 4) == 0) {
        return IG_GRPC_ENC_GZIP;
    }

    if (len == 7 && strncasecmp((const char *) s, "deflate", 7) == 0) {
        return IG_GRPC_ENC_DEFLATE;
    }

    return IG_GRPC_ENC_UNKNOWN;
}


int
ig_grpc_inflate(const uint8_t *in, size_t len, int encoding, uint8_t *out,
    size_t max, size_t *outlen, const char **err)
{
    int       rc;
    size_t    total, room;
    z_stream  z;
    uint8_t   scratch[16384];

    *outlen = 0;

    if (encoding != IG_GRPC_ENC_GZIP && encoding != IG_GRPC_ENC_DEFLATE) {
        *err = "unsupported grpc-encoding";
        return IG_GRPC_UNIMPLEMENTED;
    }

    memset(&z, 0, sizeof(z));

    if (inflateInit2(&z, encoding == IG_GRPC_ENC_GZIP ? 15 + 16 : 15)
        != Z_OK)
    {
        *err = "the compressed message could not be inflated";
        return IG_GRPC_INTERNAL;
    }

    z.next_in = (Bytef *) in;
    z.avail_in = (uInt) len;
    total = 0;

    for ( ;; ) {
        if (out) {
            room = max - total;
            z.next_out = out + total;
            z.avail_out = (uInt) (room < 65536 ? room : 65536);

        } else {
            z.next_out = scratch;
            z.avail_out = sizeof(scratch);
        }

        room = z.avail_out;

        rc = inflate(&z, Z_NO_FLUSH);

        total += room - z.avail_out;

        if (rc == Z_STREAM_END) {
            break;
        }

        if (total > max || (rc == Z_OK && out && total == max)) {
            /* one byte past max is enough to know */
            if (rc == Z_OK && out && total == max) {
                z.next_out = scratch;
                z.avail_out = 1;
                rc = inflate(&z, Z_NO_FLUSH);

                if (rc == Z_STREAM_END && z.avail_out == 1) {
                    break;
                }
            }

            inflateEnd(&z);
            *err = "the inflated request message is larger than the "
                   "gateway accepts";
            return IG_GRPC_RESOURCE_EXHAUSTED;
        }

        if (rc != Z_OK || (z.avail_in == 0 && z.avail_out != 0)) {
            inflateEnd(&z);
            *err = "the compressed request message is corrupt or cut short";
            return IG_GRPC_INTERNAL;
        }
    }

    /* bytes after the compressed stream */
    rc = (z.avail_in != 0);

    inflateEnd(&z);

    if (rc) {
        *err = "bytes follow the compressed request message";
        return IG_GRPC_INTERNAL;
    }

    if (total > max) {
        *err = "the inflated request message is larger than the gateway "
               "accepts";
        return IG_GRPC_RESOURCE_EXHAUSTED;
    }

    *outlen = total;

    return IG_GRPC_OK;
}


void
ig_grpc_prefix(uint8_t *p, size_t len)
{
    p[0] = 0;
    p[1] = (uint8_t) (len >> 24);
    p[2] = (uint8_t) (len >> 16);
    p[3] = (uint8_t) (len >> 8);
    p[4] = (uint8_t) len;
}


int64_t
ig_grpc_timeout_ms(const uint8_t *s, size_t len)
{
    size_t   i;
    int64_t  v;

    if (len < 2 || len > 9) {
        return -1;
    }

    v = 0;

    for (i = 0; i < len - 1; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        v = v * 10 + (s[i] - '0');
    }

    /* at most 99999999 of a unit: no overflow below */

    switch (s[len - 1]) {
    case 'H':
        return v * 3600000;
    case 'M':
        return v * 60000;
    case 'S':
        return v * 1000;
    case 'm':
        return v;
    case 'u':
        return (v + 999) / 1000;
    case 'n':
        return (v + 999999) / 1000000;
    default:
        return -1;
    }
}


uint8_t *
ig_grpc_percent_encode(uint8_t *out, const uint8_t *s, size_t len)
{
    size_t                i;
    static const uint8_t  hex[] = "0123456789ABCDEF";

    for (i = 0; i < len; i++) {
        if (s[i] >= 0x20 && s[i] <= 0x7e && s[i] != '%') {
            *out++ = s[i];
            continue;
        }

        *out++ = '%';
        *out++ = hex[s[i] >> 4];
        *out++ = hex[s[i] & 0x0f];
    }

    return out;
}


static int
ig_grpc_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);

    return IG_GRPC_INVALID_ARGUMENT;
}


/* a name from the request for a message: 64 bytes, control bytes as '?' */

static const char *
ig_grpc_name(char *out, const char *s)
{
    size_t  i;

    for (i = 0; i < 64 && s[i]; i++) {
        out[i] = ((unsigned char) s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    }

    out[i] = '\0';

    return out;
}


static uint64_t
ig_grpc_le(const uint8_t *p, size_t n)
{
    size_t    i;
    uint64_t  v;

    v = 0;

    for (i = n; i > 0; i--) {
        v = (v << 8) | p[i - 1];
    }

    return v;
}


/* one value of the input, converted to FP32; -1 when it does not fit */

static int
ig_grpc_raw_value(uint32_t dtype, const uint8_t *p, float *out)
{
    uint64_t  u;
    uint32_t  u32;
    float     f;
    double    d;

    switch (dtype) {

    case IG_DT_BOOL:
        if (*p > 1) {
            return -1;
        }

        *out = *p;
        return 0;

    case IG_DT_INT32:
        *out = (float) (int32_t) (uint32_t) ig_grpc_le(p, 4);
        return 0;

    case IG_DT_INT64:
        *out = (float) (int64_t) ig_grpc_le(p, 8);
        return 0;

    case IG_DT_FP32:
        u32 = (uint32_t) ig_grpc_le(p, 4);
        memcpy(&f, &u32, 4);
        *out = f;
        return 0;

    default: /* IG_DT_FP64 */
        u = ig_grpc_le(p, 8);
        memcpy(&d, &u, 8);

        if (isfinite(d) && (d > FLT_MAX || d < -FLT_MAX)) {
            return -1;
        }

        *out = (float) d;
        return 0;
    }
}


int
ig_grpc_decode_infer(const Inference__ModelInferRequest *req,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    size_t *rows, int *raw, char *err, size_t errlen)
{
    size_t                                     i, n, have, dsize;
    uint32_t                                   dtype;
    uint64_t                                   count;
    const char                                *dt;
    char                                       nm[65];
    const ig_tensor_desc_t                    *t;
    const Inference__InferTensorContents      *c;
    const Inference__ModelInferRequest__InferInputTensor  *in;

    *rows = 0;
    *raw = 0;

    t = &meta->input;

    if (req->n_inputs != 1) {
        return ig_grpc_fail(err, errlen, "the model takes one input tensor, "
                            "\"%.*s\"", IG_MODEL_NAME_MAX, t->name);
    }

    for (i = 0; i < req->n_outputs; i++) {
        if (strncmp(req->outputs[i]->name, meta->output.name,
                    IG_MODEL_NAME_MAX) != 0)
        {
            return ig_grpc_fail(err, errlen, "unknown output \"%s\": the "
                                "model's output is \"%.*s\"",
                                ig_grpc_name(nm, req->outputs[i]->name),
                                IG_MODEL_NAME_MAX, meta->output.name);
        }
    }

    in = req->inputs[0];

    if (strncmp(in->name, t->name, IG_MODEL_NAME_MAX) != 0) {
        return ig_grpc_fail(err, errlen, "unknown input \"%s\": the "
                            "model's input is \"%.*s\"",
                            ig_grpc_name(nm, in->name),
                            IG_MODEL_NAME_MAX, t->name);
    }

    dtype = 0;

    for (i = IG_DT_BOOL; i <= IG_DT_FP64; i++) {
        if (strcmp(in->datatype, ig_grpc_dtypes[i]) == 0) {
            dtype = (uint32_t) i;
            break;
        }
    }

    if (dtype == 0) {
        return ig_grpc_fail(err, errlen, "unsupported datatype \"%.32s\": "
                            "use BOOL, INT32, INT64, FP32 or FP64",
                            ig_grpc_name(nm, in->datatype));
    }

    dt = ig_grpc_dtypes[dtype];

    if (t->ndims > IG_MODEL_MAX_DIMS) {
        return ig_grpc_fail(err, errlen, "the model's metadata is "
                            "inconsistent");
    }

    if (in->n_shape != t->ndims) {
        return ig_grpc_fail(err, errlen, "\"shape\" must have %u "
                            "dimensions", (unsigned) t->ndims);
    }

    count = 1;

    for (i = 0; i < in->n_shape; i++) {
        if (in->shape[i] < 0) {
            return ig_grpc_fail(err, errlen, "\"shape\" must hold "
                                "non-negative integers");
        }

        if (t->dims[i] >= 0 && in->shape[i] != t->dims[i]) {
            return ig_grpc_fail(err, errlen, "shape[%u] is %lld, the model "
                                "needs %lld", (unsigned) i,
                                (long long) in->shape[i],
                                (long long) t->dims[i]);
        }

        if (in->shape[i] != 0
            && count > UINT64_MAX / (uint64_t) in->shape[i])
        {
            return ig_grpc_fail(err, errlen, "\"shape\" is too large");
        }

        count *= (uint64_t) in->shape[i];
    }

    if (in->n_shape == 0 || in->shape[0] == 0) {
        return ig_grpc_fail(err, errlen, "the batch (shape[0]) must not be "
                            "empty");
    }

    if (count != (uint64_t) in->shape[0] * meta->nfeatures) {
        return ig_grpc_fail(err, errlen, "the model's metadata is "
                            "inconsistent");
    }

    c = in->contents;

    if (req->n_raw_input_contents) {

        if (req->n_raw_input_contents != req->n_inputs) {
            return ig_grpc_fail(err, errlen, "raw_input_contents has %zu "
                                "entries for %zu inputs",
                                req->n_raw_input_contents, req->n_inputs);
        }

        if (c != NULL) {
            return ig_grpc_fail(err, errlen, "the input \"%s\" sets "
                                "contents and raw_input_contents: use one",
                                ig_grpc_name(nm, in->name));
        }

        dsize = ig_grpc_dtype_size[dtype];

        if (count > SIZE_MAX / dsize
            || req->raw_input_contents[0].len != count * dsize)
        {
            return ig_grpc_fail(err, errlen, "raw_input_contents[0] holds "
                                "%zu bytes, %s shape needs %llu",
                                req->raw_input_contents[0].len, dt,
                                (unsigned long long) count * dsize);
        }

        if (count > max_floats) {
            return IG_GRPC_RESOURCE_EXHAUSTED;
        }

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__

        /* FP32, the slot's own type and byte order: one copy, no checks */

        if (dtype == IG_DT_FP32) {
            memcpy(rows_out, req->raw_input_contents[0].data,
                   (size_t) count * sizeof(float));

            *raw = 1;
            *rows = (size_t) in->shape[0];

            return IG_GRPC_OK;
        }

#endif

        for (i = 0; i < count; i++) {
            if (ig_grpc_raw_value(dtype,
                                  req->raw_input_contents[0].data + i * dsize,
                                  &rows_out[i])
                != 0)
            {
                return ig_grpc_fail(err, errlen, "raw value %zu is out of "
                                    "range for %s", i,
                                    dtype == IG_DT_BOOL ? "BOOL"
                                    : "FP32, the model's input type");
            }
        }

        *raw = 1;
        *rows = (size_t) in->shape[0];

        return IG_GRPC_OK;
    }

    if (c == NULL) {
        return ig_grpc_fail(err, errlen, "the input \"%s\" has no data: "
                            "set contents or raw_input_contents",
                            ig_grpc_name(nm, in->name));
    }

    switch (dtype) {
    case IG_DT_BOOL:
        have = c->n_bool_contents;
        break;
    case IG_DT_INT32:
        have = c->n_int_contents;
        break;
    case IG_DT_INT64:
        have = c->n_int64_contents;
        break;
    case IG_DT_FP32:
        have = c->n_fp32_contents;
        break;
    default:
        have = c->n_fp64_contents;
        break;
    }

    n = c->n_bool_contents + c->n_int_contents + c->n_int64_contents
        + c->n_uint_contents + c->n_uint64_contents + c->n_fp32_contents
        + c->n_fp64_contents + c->n_bytes_contents;

    if (n != have) {
        return ig_grpc_fail(err, errlen, "%s data goes in the contents "
                            "field for %s only", dt, dt);
    }

    if (have != count) {
        return ig_grpc_fail(err, errlen, "contents holds %zu values, "
                            "\"shape\" needs %llu", have,
                            (unsigned long long) count);
    }

    if (count > max_floats) {
        return IG_GRPC_RESOURCE_EXHAUSTED;
    }

    if (dtype == IG_DT_FP32) {
        memcpy(rows_out, c->fp32_contents, (size_t) count * sizeof(float));

        *rows = (size_t) in->shape[0];

        return IG_GRPC_OK;
    }

    for (i = 0; i < count; i++) {
        switch (dtype) {
        case IG_DT_BOOL:
            rows_out[i] = c->bool_contents[i] ? 1.0f : 0.0f;
            break;
        case IG_DT_INT32:
            rows_out[i] = (float) c->int_contents[i];
            break;
        case IG_DT_INT64:
            rows_out[i] = (float) c->int64_contents[i];
            break;
        case IG_DT_FP32:
            rows_out[i] = c->fp32_contents[i];
            break;
        default:
            if (isfinite(c->fp64_contents[i])
                && (c->fp64_contents[i] > FLT_MAX
                    || c->fp64_contents[i] < -FLT_MAX))
            {
                return ig_grpc_fail(err, errlen, "value %zu is out of range "
                                    "for FP32, the model's input type", i);
            }

            rows_out[i] = (float) c->fp64_contents[i];
            break;
        }
    }

    *rows = (size_t) in->shape[0];

    return IG_GRPC_OK;
}
