
/*
 * Copyright (C) infergate authors
 */

/*
 * The backend's model interface.  Every model takes one FP32 input of
 * shape [batch, nfeatures] and gives one FP32 output of shape
 * [batch, noutputs]: the batcher gathers rows from many requests into
 * one contiguous input and scatters the output rows back.  nginx-free
 * and CUDA-free, so the ring server, tools and tests include it alone.
 * The datatypes and metadata it shares with the gateway are in
 * lib/ig_tensor.h.
 */

#ifndef _IG_MODEL_H_INCLUDED_
#define _IG_MODEL_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "ig_tensor.h"     /* lib/: datatypes, ig_model_meta_t */


/* Where models run; one per backend process, made once at start. */
typedef struct {
    int                  use_cuda;      /* 1: models run on cuda_device */
    int                  cuda_device;
    int                  threads;       /* CPU threads for predict      */
    char                 name[IG_DEVICE_NAME_MAX]; /* "cpu", "cuda:0 (NAME)" */
    void                *priv;          /* thread pool, CUDA streams    */
} ig_exec_t;


typedef struct ig_model_s  ig_model_t;

typedef struct {
    int    (*predict)(ig_model_t *m, ig_exec_t *ex, const float *in,
                      size_t rows, float *out, char *err, size_t errlen);
    void   (*free)(ig_model_t *m);
} ig_model_ops_t;


/* Each loader allocates a larger struct that starts with this one. */
struct ig_model_s {
    ig_model_meta_t        meta;
    const ig_model_ops_t  *ops;
};


/*
 * device: "auto" (CUDA when cudaGetDeviceCount reports a device, else
 * the CPU), "cpu" or "cuda:N".  Returns NULL and fills err on failure.
 */
ig_exec_t *ig_exec_create(const char *device, int threads, char *err,
    size_t errlen);
void ig_exec_destroy(ig_exec_t *ex);

/*
 * Loads by content: a file starting with '{' (after blanks) is XGBoost
 * JSON, anything else is parsed as an ONNX ModelProto.  Returns NULL
 * and fills err with a message that names the problem (categorical
 * split, unsupported op, bad shape ...).
 */
ig_model_t *ig_model_load(const char *path, ig_exec_t *ex, char *err,
    size_t errlen);

/*
 * The same from memory: data[0..len) is the whole (decrypted) file; the
 * loaders copy what they keep, so the caller may wipe data afterwards.
 */
ig_model_t *ig_model_load_mem(const uint8_t *data, size_t len,
    ig_exec_t *ex, char *err, size_t errlen);

/* Loaders the dispatcher calls; data is the whole file. */
ig_model_t *ig_xgb_load(const uint8_t *data, size_t len, ig_exec_t *ex,
    char *err, size_t errlen);
ig_model_t *ig_onnx_load(const uint8_t *data, size_t len, ig_exec_t *ex,
    char *err, size_t errlen);

/*
 * in: rows * meta.nfeatures floats, out: rows * meta.noutputs floats.
 * A model is used by one thread at a time; returns 0 or -1 with err.
 */
static inline int
ig_model_predict(ig_model_t *m, ig_exec_t *ex, const float *in, size_t rows,
    float *out, char *err, size_t errlen)
{
    return m->ops->predict(m, ex, in, rows, out, err, errlen);
}

static inline void
ig_model_free(ig_model_t *m)
{
    if (m) {
        m->ops->free(m);
    }
}

#endif /* _IG_MODEL_H_INCLUDED_ */
