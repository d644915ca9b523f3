
/*
 * Copyright (C) infergate authors
 */

/*
 * Open Inference Protocol (KServe v2) over HTTP/JSON: decodes an infer
 * request body straight into the FP32 rows a backend slot holds, and
 * encodes infer responses, model metadata and errors.  nginx-free, so
 * unit tests and fuzzers link it alone.
 */

#ifndef _IG_OIP_H_INCLUDED_
#define _IG_OIP_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "ig_tensor.h"

#define IG_OIP_ID_MAX   256


/* what a decoded infer request asks for, besides its rows */
typedef struct {
    char        id[IG_OIP_ID_MAX];   /* echoed in the response; "" none */
    size_t      id_len;
    size_t      rows;                /* batch size, shape[0]            */
    int         has_id;
} ig_oip_request_t;


/*
 * Decodes the JSON body of POST /v2/models/{m}/infer against the model's
 * metadata.  One input tensor, named as the model's input; shape
 * [rows, dims...] must match the model's non-batch dims; "data" flat or
 * nested in row-major order; datatype one of BOOL, INT32, INT64, FP32,
 * FP64, values converted to FP32.  "outputs", when given, must name the
 * model's output.  Writes at most max_floats floats to rows_out.
 *
 * Returns 0, or -1 with a one-line message in err (for {"error": ...}
 * with 400), or -2 when the rows do not fit in max_floats (413).
 */
int ig_oip_decode_infer(const uint8_t *body, size_t len,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    ig_oip_request_t *req, char *err, size_t errlen);

/*
 * Infer response: {"model_name", "model_version", "id" (when given),
 * "outputs": [{"name", "datatype": "FP32", "shape", "data"}]}.
 * _len returns an upper bound for the buffer; encode returns the end.
 */
size_t ig_oip_encode_infer_len(const char *model, const char *version,
    const ig_oip_request_t *req, const ig_model_meta_t *meta, size_t rows);
uint8_t *ig_oip_encode_infer(uint8_t *p, const char *model,
    const char *version, const ig_oip_request_t *req,
    const ig_model_meta_t *meta, const float *out, size_t rows);

/* Model metadata: {"name", "versions", "platform", "inputs", "outputs"} */
size_t ig_oip_encode_metadata_len(const char *model, const char **versions,
    size_t nversions, const ig_model_meta_t *meta);
uint8_t *ig_oip_encode_metadata(uint8_t *p, const char *model,
    const char **versions, size_t nversions, const ig_model_meta_t *meta);

/* {"error": "..."}, escaped */
size_t ig_oip_encode_error_len(const char *msg);
uint8_t *ig_oip_encode_error(uint8_t *p, const char *msg);

/* "FP32" ... ; NULL for an unknown datatype */
const char *ig_oip_dtype_name(uint32_t dtype);

#endif /* _IG_OIP_H_INCLUDED_ */
