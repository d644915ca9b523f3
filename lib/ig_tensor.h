
/*
 * Copyright (C) infergate authors
 */

/*
 * The tensor contract the gateway and the backend share: the Open
 * Inference Protocol datatypes, a tensor's description and a model's
 * metadata as the backend publishes them in the ring (ig_ring.h) and the
 * gateway decodes and encodes them (ig_oip.h).  Plain C, no nginx, no
 * CUDA; backend/ig_model.h includes it for the model interface.
 */

#ifndef _IG_TENSOR_H_INCLUDED_
#define _IG_TENSOR_H_INCLUDED_

#include <stdint.h>

#define IG_MODEL_NAME_MAX   64
#define IG_MODEL_MAX_DIMS   4
#define IG_DEVICE_NAME_MAX  128     /* "cpu" or "cuda:0 (NAME)" */


/* Open Inference Protocol datatypes the gateway decodes */
typedef enum {
    IG_DT_BOOL = 1,
    IG_DT_INT32,
    IG_DT_INT64,
    IG_DT_FP32,
    IG_DT_FP64
} ig_dtype_e;


typedef struct {
    char                 name[IG_MODEL_NAME_MAX];
    uint32_t             dtype;                  /* ig_dtype_e          */
    uint32_t             ndims;
    int64_t              dims[IG_MODEL_MAX_DIMS]; /* dims[0] == -1: batch */
} ig_tensor_desc_t;


typedef struct {
    char                 platform[32];  /* "xgboost_json", "onnx", ... */
    ig_tensor_desc_t     input;
    ig_tensor_desc_t     output;
    uint32_t             nfeatures;     /* floats per input row         */
    uint32_t             noutputs;      /* floats per output row        */
} ig_model_meta_t;

#endif /* _IG_TENSOR_H_INCLUDED_ */
