/*
 * Copyright (C) infergate authors
 *
 * XGBoost trees on a CUDA device: one thread per row walks every tree
 * in file order with the same ig_tree_step()/ig_tree_eval() the CPU
 * predictor uses, sums margins in float32 in the same order, and
 * applies the same output transform.  The trees are copied to the
 * device once at load; row buffers (device and pinned host staging)
 * are allocated at load for IG_CUDA_ROWS rows and only grow.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "ig_tree_cuda.h"


#define IG_CUDA_ROWS     4096       /* row capacity made at load        */
#define IG_CUDA_THREADS  128        /* threads per block                */


struct ig_tree_cuda_s {
    int                device;
    uint32_t           ntrees;
    uint32_t           ngroups;
    uint32_t           nfeatures;
    uint32_t           noutputs;
    int                transform;
    cudaStream_t       stream;

    ig_tree_node_t    *d_nodes;
    ig_tree_info_t    *d_trees;
    float             *d_base;

    size_t             cap;          /* rows the buffers below hold     */
    float             *d_in;         /* cap * nfeatures                 */
    float             *d_margin;     /* cap * ngroups                   */
    float             *d_out;        /* cap * noutputs                  */
    float             *h_in;         /* pinned staging                  */
    float             *h_out;
};


#define IG_CUDA_TRY(call, what)                                             \
    do {                                                                    \
        cudaError_t  rc_ = (call);                                          \
        if (rc_ != cudaSuccess) {                                           \
            snprintf(err, errlen, "%s: %s", what, cudaGetErrorString(rc_)); \
            goto failed;                                                    \
        }                                                                   \
    } while (0)


__global__ void
ig_tree_kernel(const ig_tree_node_t *nodes, const ig_tree_info_t *trees,
    uint32_t ntrees, const float *base, uint32_t ngroups, uint32_t nfeatures,
    int transform, const float *in, size_t rows, float *margin, float *out,
    uint32_t noutputs)
{
    size_t        r, k;
    uint32_t      t;
    float        *m;
    const float  *row;

    r = (size_t) blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) {
        return;
    }

    row = in + r * nfeatures;
    m = margin + r * ngroups;

    for (k = 0; k < ngroups; k++) {
        m[k] = base[k];
    }

    /* file order, float32: the same sums as the CPU and as XGBoost */
    for (t = 0; t < ntrees; t++) {
        m[trees[t].group] += ig_tree_eval(nodes + trees[t].offset,
                                          trees[t].depth, row);
    }

    ig_xgb_transform(transform, m, ngroups);

    for (k = 0; k < noutputs; k++) {
        out[r * noutputs + k] = m[k];
    }
}


static void
ig_tree_cuda_release_rows(ig_tree_cuda_t *c)
{
    cudaFree(c->d_in);
    cudaFree(c->d_margin);
    cudaFree(c->d_out);
    cudaFreeHost(c->h_in);
    cudaFreeHost(c->h_out);

    c->d_in = NULL;
    c->d_margin = NULL;
    c->d_out = NULL;
    c->h_in = NULL;
    c->h_out = NULL;
    c->cap = 0;
}


static int
ig_tree_cuda_reserve(ig_tree_cuda_t *c, size_t rows, char *err,
    size_t errlen)
{
    if (rows <= c->cap) {
        return 0;
    }

    ig_tree_cuda_release_rows(c);

    IG_CUDA_TRY(cudaMalloc((void **) &c->d_in,
                           rows * c->nfeatures * sizeof(float)),
                "cudaMalloc input");
    IG_CUDA_TRY(cudaMalloc((void **) &c->d_margin,
                           rows * c->ngroups * sizeof(float)),
                "cudaMalloc margins");
    IG_CUDA_TRY(cudaMalloc((void **) &c->d_out,
                           rows * c->noutputs * sizeof(float)),
                "cudaMalloc output");
    IG_CUDA_TRY(cudaMallocHost((void **) &c->h_in,
                               rows * c->nfeatures * sizeof(float)),
                "cudaMallocHost input");
    IG_CUDA_TRY(cudaMallocHost((void **) &c->h_out,
                               rows * c->noutputs * sizeof(float)),
                "cudaMallocHost output");

    c->cap = rows;
    return 0;

failed:

    ig_tree_cuda_release_rows(c);
    return -1;
}


extern "C" ig_tree_cuda_t *
ig_tree_cuda_create(int device, const ig_tree_node_t *nodes, uint32_t nnodes,
    const ig_tree_info_t *trees, uint32_t ntrees, const float *base,
    uint32_t ngroups, uint32_t nfeatures, int transform, char *err,
    size_t errlen)
{
    ig_tree_cuda_t  *c;

    c = (ig_tree_cuda_t *) calloc(1, sizeof(ig_tree_cuda_t));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    c->device = device;
    c->ntrees = ntrees;
    c->ngroups = ngroups;
    c->nfeatures = nfeatures;
    c->transform = transform;
    c->noutputs = (transform == IG_XGB_SOFTMAX) ? 1 : ngroups;

    IG_CUDA_TRY(cudaSetDevice(device), "cudaSetDevice");
    IG_CUDA_TRY(cudaStreamCreateWithFlags(&c->stream,
                                          cudaStreamNonBlocking),
                "cudaStreamCreate");

    IG_CUDA_TRY(cudaMalloc((void **) &c->d_nodes,
                           (size_t) nnodes * sizeof(ig_tree_node_t)),
                "cudaMalloc nodes");
    IG_CUDA_TRY(cudaMalloc((void **) &c->d_trees,
                           (size_t) ntrees * sizeof(ig_tree_info_t)),
                "cudaMalloc trees");
    IG_CUDA_TRY(cudaMalloc((void **) &c->d_base, ngroups * sizeof(float)),
                "cudaMalloc base");

    IG_CUDA_TRY(cudaMemcpy(c->d_nodes, nodes,
                           (size_t) nnodes * sizeof(ig_tree_node_t),
                           cudaMemcpyHostToDevice), "cudaMemcpy nodes");
    IG_CUDA_TRY(cudaMemcpy(c->d_trees, trees,
                           (size_t) ntrees * sizeof(ig_tree_info_t),
                           cudaMemcpyHostToDevice), "cudaMemcpy trees");
    IG_CUDA_TRY(cudaMemcpy(c->d_base, base, ngroups * sizeof(float),
                           cudaMemcpyHostToDevice), "cudaMemcpy base");

    if (ig_tree_cuda_reserve(c, IG_CUDA_ROWS, err, errlen) != 0) {
        goto failed_quiet;
    }

    return c;

failed:
failed_quiet:

    ig_tree_cuda_free(c);
    return NULL;
}


extern "C" int
ig_tree_cuda_predict(ig_tree_cuda_t *c, const float *in, size_t rows,
    float *out, char *err, size_t errlen)
{
    size_t    in_bytes, out_bytes;
    unsigned  blocks;

    IG_CUDA_TRY(cudaSetDevice(c->device), "cudaSetDevice");

    if (ig_tree_cuda_reserve(c, rows, err, errlen) != 0) {
        return -1;
    }

    in_bytes = rows * c->nfeatures * sizeof(float);
    out_bytes = rows * c->noutputs * sizeof(float);
    blocks = (unsigned) ((rows + IG_CUDA_THREADS - 1) / IG_CUDA_THREADS);

    /* pinned staging makes the copies true DMA, async on the stream */
    memcpy(c->h_in, in, in_bytes);

    IG_CUDA_TRY(cudaMemcpyAsync(c->d_in, c->h_in, in_bytes,
                                cudaMemcpyHostToDevice, c->stream),
                "cudaMemcpy input");

    ig_tree_kernel<<<blocks, IG_CUDA_THREADS, 0, c->stream>>>(
        c->d_nodes, c->d_trees, c->ntrees, c->d_base, c->ngroups,
        c->nfeatures, c->transform, c->d_in, rows, c->d_margin, c->d_out,
        c->noutputs);

    IG_CUDA_TRY(cudaGetLastError(), "tree kernel launch");
    IG_CUDA_TRY(cudaMemcpyAsync(c->h_out, c->d_out, out_bytes,
                                cudaMemcpyDeviceToHost, c->stream),
                "cudaMemcpy output");
    IG_CUDA_TRY(cudaStreamSynchronize(c->stream), "tree kernel");

    memcpy(out, c->h_out, out_bytes);

    return 0;

failed:

    return -1;
}


extern "C" void
ig_tree_cuda_free(ig_tree_cuda_t *c)
{
    if (c == NULL) {
        return;
    }

    ig_tree_cuda_release_rows(c);
    cudaFree(c->d_nodes);
    cudaFree(c->d_trees);
    cudaFree(c->d_base);

    if (c->stream) {
        cudaStreamDestroy(c->stream);
    }

    free(c);
}
