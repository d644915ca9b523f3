/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the gRPC codec (ngx_http_infergate_grpc_codec.c)
 * and protobuf-c's decoding of the generated messages.
 *
 * Input: byte 0 picks the model's input shape (non-batch dims) and the
 * room in the rows buffer; the rest is a request body.  The body is
 * unframed (one length-prefixed message); the message is unpacked as
 * every request type the gateway reads, and a ModelInferRequest decoded
 * against the model; a compressed one (flag 1) is inflated, measured
 * and for real, which must agree.  The decoder must return OK,
 * INVALID_ARGUMENT (with
 * a one-line message) or RESOURCE_EXHAUSTED, write nothing past the room
 * (its own allocation, so ASan sees it), and on OK give rows whose
 * floats fit.  grpc-timeout and grpc-message encoding run on the body's
 * bytes as well.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_infergate_grpc_codec.h"


static void
check_strings(const uint8_t *data, size_t size)
{
    size_t    i;
    int64_t   ms;
    uint8_t  *out, *end;

    ms = ig_grpc_timeout_ms(data, size);
    if (ms < -1) {
        abort();
    }

    if (size > 4096) {
        size = 4096;
    }

    out = malloc(size * 3 + 1);
    end = ig_grpc_percent_encode(out, data, size);

    if ((size_t) (end - out) > size * 3) {
        abort();
    }

    for (i = 0; out + i < end; i++) {
        if (out[i] < 0x20 || out[i] > 0x7e) {
            abort();
        }
    }

    free(out);
}


/* measured, then inflated into exactly that: the two must agree */

static void
check_inflate(const uint8_t *in, size_t len, int enc)
{
    int          rc, rc2;
    size_t       n, n2;
    uint8_t     *out;
    const char  *err;

    rc = ig_grpc_inflate(in, len, enc, NULL, 1 << 16, &n, &err);

    if (rc != IG_GRPC_OK) {
        if (rc != IG_GRPC_INTERNAL && rc != IG_GRPC_RESOURCE_EXHAUSTED) {
            abort();
        }
        return;
    }

    if (n > 1 << 16) {
        abort();
    }

    if (n == 0) {
        return;
    }

    out = malloc(n);
    rc2 = ig_grpc_inflate(in, len, enc, out, n, &n2, &err);

    if (rc2 != IG_GRPC_OK || n2 != n) {
        abort();
    }

    /* one byte less room must not fit */
    if (ig_grpc_inflate(in, len, enc, out, n - 1, &n2, &err)
        != IG_GRPC_RESOURCE_EXHAUSTED)
    {
        abort();
    }

    free(out);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                             rc, raw, compressed;
    char                            err[256];
    size_t                          mlen, room, rows, nf;
    float                          *buf;
    const char                     *ferr;
    const uint8_t                  *msg;
    ig_model_meta_t                 meta;
    ProtobufCMessage               *m;
    Inference__ModelInferRequest   *req;

    static const ProtobufCMessageDescriptor  *descs[] = {
        &inference__server_live_request__descriptor,
        &inference__server_ready_request__descriptor,
        &inference__model_ready_request__descriptor,
        &inference__server_metadata_request__descriptor,
        &inference__model_metadata_request__descriptor,
        &inference__model_statistics_request__descriptor,
    };

    if (size < 1) {
        return 0;
    }

    check_strings(data + 1, size - 1);

    memset(&meta, 0, sizeof(meta));
    strcpy(meta.input.name, "input");
    strcpy(meta.output.name, "output");
    meta.input.dtype = IG_DT_FP32;
    meta.input.dims[0] = -1;

    switch (data[0] & 3) {
    case 0:
        meta.input.ndims = 2;
        meta.input.dims[1] = nf = 3;
        break;
    case 1:
        meta.input.ndims = 3;
        meta.input.dims[1] = 2;
        meta.input.dims[2] = 2;
        nf = 4;
        break;
    case 2:
        meta.input.ndims = 2;
        meta.input.dims[1] = nf = 1;
        break;
    default:
        meta.input.ndims = 4;
        meta.input.dims[1] = 1;
        meta.input.dims[2] = 2;
        meta.input.dims[3] = 1;
        nf = 2;
        break;
    }

    meta.nfeatures = (uint32_t) nf;
    meta.noutputs = 1;
    room = 1 + ((data[0] >> 2) & 63) * 4;

    rc = ig_grpc_unframe(data + 1, size - 1, 1 << 20, &msg, &mlen,
                         &compressed, &ferr);

    if (rc == IG_GRPC_OK && compressed) {
        check_inflate(msg, mlen, data[0] & 4 ? IG_GRPC_ENC_GZIP
                                              : IG_GRPC_ENC_DEFLATE);
    }

    if (rc != IG_GRPC_OK) {
        if (ferr == NULL || ferr[0] == '\0' || msg != NULL) {
            abort();
        }

        /* the whole body as a message, then */
        msg = data + 1;
        mlen = size - 1;

    } else if (mlen > size - 1 - IG_GRPC_PREFIX) {
        abort();
    }

    for (size_t i = 0; i < sizeof(descs) / sizeof(descs[0]); i++) {
        m = protobuf_c_message_unpack(descs[i], NULL, mlen, msg);
        if (m) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }

    req = inference__model_infer_request__unpack(NULL, mlen, msg);
    if (req == NULL) {
        return 0;
    }

    buf = malloc(room * sizeof(float));
    err[0] = '\0';

    rc = ig_grpc_decode_infer(req, &meta, buf, room, &rows, &raw, err,
                              sizeof(err));

    switch (rc) {
    case IG_GRPC_OK:
        if (rows == 0 || rows * nf > room || (raw != 0 && raw != 1)) {
            abort();
        }
        break;

    case IG_GRPC_INVALID_ARGUMENT:
        if (err[0] == '\0' || strchr(err, '\n') != NULL) {
            abort();
        }
        break;

    case IG_GRPC_RESOURCE_EXHAUSTED:
        break;

    default:
        abort();
    }

    free(buf);
    inference__model_infer_request__free_unpacked(req, NULL);

    return 0;
}
