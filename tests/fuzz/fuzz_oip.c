/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for ig_oip_decode_infer and the encoders.
 *
 * Input: byte 0 picks the model's input shape (non-batch dims) and the
 * room in the rows buffer; the rest is the body.  A body with a NUL byte
 * is a binary tensor data request: what comes before the first NUL is
 * the JSON header (its length the Inference-Header-Content-Length),
 * what comes after it the binary data, the NUL itself dropped; a NUL
 * first is Triton's raw request (the header's value 0).  The decoder must
 * return 0, -1 or -2, write nothing past the room (the buffer is its own
 * allocation, so ASan catches it), give a one-line message on -1, and
 * on success a row count whose floats fit; the response encoded from the
 * decoded request must fit its announced length.  The input's bytes, read
 * as floats, are encoded too, and each must read back bit for bit (NaN
 * and infinities as null).
 */

#define _GNU_SOURCE  /* memmem */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ig_oip.h"


static void
check_floats(const uint8_t *data, size_t size)
{
    char             *p, *q;
    float            *v, back;
    size_t            n, i, len;
    uint8_t          *buf, *end;
    ig_model_meta_t   meta;

    n = size / sizeof(float);
    if (n == 0) {
        return;
    }

    if (n > 256) {
        n = 256;
    }

    memset(&meta, 0, sizeof(meta));
    strcpy(meta.output.name, "o");
    meta.output.ndims = 2;
    meta.output.dims[0] = -1;
    meta.output.dims[1] = (int64_t) n;
    meta.noutputs = (uint32_t) n;

    v = malloc(n * sizeof(float));
    memcpy(v, data, n * sizeof(float));

    len = ig_oip_encode_infer_len("m", NULL, NULL, &meta, 1);
    buf = malloc(len + 1);
    end = ig_oip_encode_infer(buf, "m", NULL, NULL, &meta, v, 1);
    if ((size_t) (end - buf) >= len) {
        abort();
    }
    *end = '\0';

    p = strstr((char *) buf, "\"data\":[") + 8;

    for (i = 0; i < n; i++) {
        q = strpbrk(p, ",]");
        if (q == NULL) {
            abort();
        }

        if (!isfinite(v[i])) {
            if (strncmp(p, "null", 4) != 0) {
                abort();
            }

        } else {
            back = strtof(p, NULL);
            if (memcmp(&back, &v[i], sizeof(float)) != 0) {
                abort();
            }
        }

        p = q + 1;
    }

    free(buf);
    free(v);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc;
    char              err[200];
    size_t            room, len, json_len, blen, jl;
    const uint8_t    *nul;
    float            *rows, *out;
    uint8_t          *buf, *body, *end;
    ig_model_meta_t   meta;
    ig_oip_request_t  req;

    if (size < 1) {
        return 0;
    }

    memset(&meta, 0, sizeof(meta));
    strcpy(meta.platform, "onnx");
    strcpy(meta.input.name, "input");
    strcpy(meta.output.name, "output");
    meta.input.dtype = IG_DT_FP32;
    meta.output.dtype = IG_DT_FP32;
    meta.input.dims[0] = -1;
    meta.output.dims[0] = -1;
    meta.output.dims[1] = 1 + (data[0] >> 6);
    meta.output.ndims = 2;
    meta.noutputs = meta.output.dims[1];

    if (data[0] & 1) {
        meta.input.ndims = 3;
        meta.input.dims[1] = 2;
        meta.input.dims[2] = 1 + ((data[0] >> 1) & 3);
    } else {
        meta.input.ndims = 2;
        meta.input.dims[1] = 1 + ((data[0] >> 1) & 3);
    }

    meta.nfeatures = meta.input.ndims == 3
                     ? meta.input.dims[1] * meta.input.dims[2]
                     : meta.input.dims[1];

    room = (data[0] >> 3) & 7;
    room = room * room;

    /* copies so that ASan sees any read or write past either */
    nul = memchr(data + 1, 0, size - 1);
    blen = size - 1;
    json_len = IG_OIP_NO_BINARY;

    body = malloc(blen ? blen : 1);

    if (nul) {
        json_len = nul - (data + 1);
        blen--;
        memcpy(body, data + 1, json_len);
        memcpy(body + json_len, nul + 1, blen - json_len);

    } else {
        memcpy(body, data + 1, blen);
    }

    rows = malloc((room ? room : 1) * sizeof(float));

    rc = ig_oip_decode_infer_bin(body, blen, json_len, &meta,
                                 room ? rows : NULL, room, &req, err,
                                 sizeof(err));

    if (rc == -1) {
        if (err[0] == '\0' || strchr(err, '\n') != NULL) {
            abort();
        }

    } else if (rc == 0) {
        if (req.rows == 0 || req.rows * meta.nfeatures > room
            || req.id_len >= IG_OIP_ID_MAX
            || (json_len == IG_OIP_NO_BINARY && req.binary_output
                && memmem(body, blen, "binary", 6) == NULL))
        {
            abort();
        }

        out = malloc(req.rows * meta.noutputs * sizeof(float));
        memset(out, 0, req.rows * meta.noutputs * sizeof(float));
        if (req.rows * meta.noutputs > 1) {
            memcpy(out, rows, sizeof(float));    /* whatever came in */
        }

        len = ig_oip_encode_infer_len("m", "1", &req, &meta, req.rows);
        buf = malloc(len);
        end = ig_oip_encode_infer(buf, "m", "1", &req, &meta, out,
                                  req.rows);
        if ((size_t) (end - buf) >= len) {
            abort();
        }

        free(buf);

        /* the binary answer: same bound, header then 4 bytes a value */
        buf = malloc(len);
        end = ig_oip_encode_infer_bin(buf, "m", "1", &req, &meta, out,
                                      req.rows, &jl);
        if ((size_t) (end - buf) >= len
            || (size_t) (end - buf) != jl + req.rows * meta.noutputs * 4)
        {
            abort();
        }

        free(buf);
        free(out);

    } else if (rc != -2) {
        abort();
    }

    free(rows);
    free(body);

    check_floats(data, size);

    return 0;
}
