
/*
 * Copyright (C) infergate authors
 */

/*
 * The gRPC codec of ngx_http_infergate_grpc.c, nginx-free so that
 * tests/fuzz/fuzz_grpc.c links it alone: the length-prefixed message
 * framing, grpc-timeout, grpc-message percent-encoding, and the
 * ModelInferRequest decoder that writes the FP32 rows a backend slot
 * holds.  The message types are C that protoc-c generates at build time
 * from ngx_http_infergate_grpc.proto (Makefile, config).
 */

#ifndef _NGX_HTTP_INFERGATE_GRPC_CODEC_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_GRPC_CODEC_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include <ig_tensor.h>

#include "ngx_http_infergate_grpc.pb-c.h"


/* google.rpc.Code, the ones the gateway answers */
#define IG_GRPC_OK                   0
#define IG_GRPC_CANCELLED            1
#define IG_GRPC_UNKNOWN              2
#define IG_GRPC_INVALID_ARGUMENT     3
#define IG_GRPC_DEADLINE_EXCEEDED    4
#define IG_GRPC_NOT_FOUND            5
#define IG_GRPC_PERMISSION_DENIED    7
#define IG_GRPC_RESOURCE_EXHAUSTED   8
#define IG_GRPC_FAILED_PRECONDITION  9
#define IG_GRPC_UNIMPLEMENTED        12
#define IG_GRPC_INTERNAL             13
#define IG_GRPC_UNAVAILABLE          14
#define IG_GRPC_UNAUTHENTICATED      16

#define IG_GRPC_PREFIX               5        /* flag + 4-byte length     */
#define IG_GRPC_MAX_MESSAGE          (4 * 1024 * 1024) /* gRPC's default  */


/* grpc-encoding of the request's messages */
#define IG_GRPC_ENC_IDENTITY         0
#define IG_GRPC_ENC_GZIP             1
#define IG_GRPC_ENC_DEFLATE          2
#define IG_GRPC_ENC_UNKNOWN          3

/*
 * The one message of a unary call: body must be exactly one
 * length-prefixed message.  Returns IG_GRPC_OK with *msg, *mlen and
 * *compressed (its flag), or a status with a static message in *err:
 * INTERNAL for broken framing (a message cut short, bytes after it, no
 * message, a flag neither 0 nor 1), RESOURCE_EXHAUSTED for one longer
 * than max.
 */
int ig_grpc_unframe(const uint8_t *body, size_t len, size_t max,
    const uint8_t **msg, size_t *mlen, int *compressed, const char **err);

/* the IG_GRPC_ENC_* a grpc-encoding value names */
int ig_grpc_encoding(const uint8_t *s, size_t len);

/*
 * Inflates a compressed message (IG_GRPC_ENC_GZIP: gzip, RFC 1952;
 * IG_GRPC_ENC_DEFLATE: zlib, RFC 1950, as gRPC names it) into out, at
 * most max bytes; with out NULL it only measures.  Returns IG_GRPC_OK
 * with *outlen, RESOURCE_EXHAUSTED when it would exceed max (a
 * decompression bomb stops there), INTERNAL when it is corrupt or
 * truncated.
 */
int ig_grpc_inflate(const uint8_t *in, size_t len, int encoding,
    uint8_t *out, size_t max, size_t *outlen, const char **err);

/* writes the prefix of an uncompressed message of len bytes */
void ig_grpc_prefix(uint8_t *p, size_t len);

/*
 * grpc-timeout: 1-8 digits and a unit (H M S m u n).  Returns the
 * timeout in milliseconds, rounded up (0 only for a zero timeout), or -1
 * when the value is malformed.
 */
int64_t ig_grpc_timeout_ms(const uint8_t *s, size_t len);

/*
 * grpc-message: bytes 0x20-0x7e but '%' as they are, the rest %XX.  out
 * must hold 3 * len bytes; returns the end.
 */
uint8_t *ig_grpc_percent_encode(uint8_t *out, const uint8_t *s, size_t len);

/*
 * Decodes the inputs of a ModelInferRequest against the model's
 * metadata into at most max_floats FP32 rows at rows_out: one input,
 * named as the model's; shape [rows, dims...] as the model's non-batch
 * dims; datatype BOOL, INT32, INT64, FP32 or FP64, its values either in
 * raw_input_contents (one entry, little-endian, row-major) or in the
 * typed field of contents that matches the datatype (never both).
 * Requested outputs must name the model's output.  *raw says whether the
 * input came raw (the answer mirrors it).
 *
 * Returns IG_GRPC_OK with *rows, INVALID_ARGUMENT with a one-line
 * message in err, or RESOURCE_EXHAUSTED when the rows do not fit.
 */
int ig_grpc_decode_infer(const Inference__ModelInferRequest *req,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    size_t *rows, int *raw, char *err, size_t errlen);

/* "FP32" ... ; NULL for an unknown datatype */
const char *ig_grpc_dtype_name(uint32_t dtype);

#endif /* _NGX_HTTP_INFERGATE_GRPC_CODEC_H_INCLUDED_ */
