
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
    int         binary_output;       /* answer with the binary tensor
                                        extension (binary_data,
                                        binary_data_output, raw body)    */
} ig_oip_request_t;


/*
 * ig_oip_decode_infer_bin()'s json_len for a body without the
 * Inference-Header-Content-Length header: the whole body is JSON.
 */
#define IG_OIP_NO_BINARY  ((size_t) -1)


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
 * The same with Triton's binary tensor data extension: body[0, json_len)
 * is the JSON header (json_len is the Inference-Header-Content-Length
 * value, already checked to be at most len), the rest the inputs' raw
 * little-endian tensors in the order of the JSON's inputs.  An input
 * carries "parameters": {"binary_data_size": N} instead of "data"; N
 * must be exactly shape x the datatype's size, and the sizes must use up
 * the binary part.  "binary_data" (per output) and "binary_data_output"
 * (request "parameters") set req->binary_output.  json_len == 0 is
 * Triton's raw request: the body is the model's one input, in the
 * model's input datatype, as many whole rows as it holds; all outputs
 * binary.  json_len == IG_OIP_NO_BINARY is ig_oip_decode_infer().
 * Same returns.
 */
int ig_oip_decode_infer_bin(const uint8_t *body, size_t len, size_t json_len,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    ig_oip_request_t *req, char *err, size_t errlen);


/*
 * Tensor decode helpers, shared by the binary extension and the gRPC
 * endpoint (raw_input_contents):
 *
 * ig_oip_dtype_parse: "FP32" ... → ig_dtype_e; 0 for one the gateway
 *     does not decode (BYTES, FP16, UINT8, ...).
 * ig_oip_dtype_size: bytes per element of a raw tensor; 0 if unknown.
 * ig_oip_check_shape: shape [rows, dims...] against the model's input;
 *     on success *rows = shape[0] and *elements = product of shape.
 *     Returns 0 or -1 with a message (no trailing period) in err.
 * ig_oip_convert_raw: n elements of little-endian raw data (exactly
 *     n * ig_oip_dtype_size(dtype) bytes at raw, no alignment needed) to
 *     FP32 at out: BOOL bytes must be 0 or 1; INT32/INT64 convert to the
 *     nearest float; FP32 copies (NaN is a missing value); FP64 beyond
 *     FP32's range is refused.  Returns 0 or -1 with err.
 * ig_oip_decode_raw: all of the above for one input tensor (name is only
 *     for messages): the datatype, the shape, len == elements x size
 *     ("input \"x\": ..." messages), then the values into rows_out.
 *     Returns 0 (rows in *rows), -1 (400, err) or -2 (does not fit
 *     max_floats: 413; nothing written).
 */
uint32_t ig_oip_dtype_parse(const char *s, size_t len);
size_t ig_oip_dtype_size(uint32_t dtype);
int ig_oip_check_shape(const ig_model_meta_t *meta, const uint64_t *shape,
    size_t ndims, size_t *rows, uint64_t *elements, char *err,
    size_t errlen);
int ig_oip_convert_raw(uint32_t dtype, const uint8_t *raw, size_t n,
    float *out, char *err, size_t errlen);
int ig_oip_decode_raw(const ig_model_meta_t *meta, const char *name,
    uint32_t dtype, const uint64_t *shape, size_t ndims, const uint8_t *raw,
    size_t len, float *rows_out, size_t max_floats, size_t *rows, char *err,
    size_t errlen);

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

/*
 * The response with binary outputs: the JSON header, whose output has
 * "parameters": {"binary_data_size": N} and no "data", then the FP32
 * values little-endian.  *json_len is the header's length, for the
 * response's Inference-Header-Content-Length.  The length bound is
 * ig_oip_encode_infer_len()'s.
 */
uint8_t *ig_oip_encode_infer_bin(uint8_t *p, const char *model,
    const char *version, const ig_oip_request_t *req,
    const ig_model_meta_t *meta, const float *out, size_t rows,
    size_t *json_len);

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
