/*
 * Copyright (C) infergate authors
 */

/*
 * C-callable wrapper around the CUDA tree kernel (tree_cuda.cu).  The
 * device copy of a model's trees and its input/output buffers are made
 * once at load (the row buffers grow only when a larger batch comes).
 */

#ifndef _IG_TREE_CUDA_H_INCLUDED_
#define _IG_TREE_CUDA_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "ig_tree.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ig_tree_cuda_s  ig_tree_cuda_t;

ig_tree_cuda_t *ig_tree_cuda_create(int device, const ig_tree_node_t *nodes,
    uint32_t nnodes, const ig_tree_info_t *trees, uint32_t ntrees,
    const float *base, uint32_t ngroups, uint32_t nfeatures, int transform,
    char *err, size_t errlen);

/* out: rows floats for IG_XGB_SOFTMAX, rows * ngroups otherwise */
int ig_tree_cuda_predict(ig_tree_cuda_t *c, const float *in, size_t rows,
    float *out, char *err, size_t errlen);

void ig_tree_cuda_free(ig_tree_cuda_t *c);

#ifdef __cplusplus
}
#endif

#endif /* _IG_TREE_CUDA_H_INCLUDED_ */
