/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for ig_oip_decode_infer and the encoders.
 *
 * Input: byte 0 picks the model's input shape (non-batch dims) and the
 * room in the rows buffer; the rest is the body.  The decoder must
 * return 0, -1 or -2, write nothing past the room (the buffer is its own
 * allocation, so ASan catches it), give a one-line message on -1, and
 * on success a row count whose floats fit; the response encoded from the
 * decoded request must fit its announced length.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ig_oip.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc;
    char              err[200];
    size_t            room, len;
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
    body = malloc(size - 1 ? size - 1 : 1);
    memcpy(body, data + 1, size - 1);
    rows = malloc((room ? room : 1) * sizeof(float));

    rc = ig_oip_decode_infer(body, size - 1, &meta, room ? rows : NULL, room,
                             &req, err, sizeof(err));

    if (rc == -1) {
        if (err[0] == '\0' || strchr(err, '\n') != NULL) {
            abort();
        }

    } else if (rc == 0) {
        if (req.rows == 0 || req.rows * meta.nfeatures > room
            || req.id_len >= IG_OIP_ID_MAX)
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
        free(out);

    } else if (rc != -2) {
        abort();
    }

    free(rows);
    free(body);

    return 0;
}
