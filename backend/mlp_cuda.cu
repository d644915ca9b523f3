
/*
 * Copyright (C) infergate authors
 *
 * The GPU path of dense models, twin of mlp_cpu.c: the plan model_onnx.c
 * builds, run with cuBLAS for the GEMMs and small kernels over ig_act.h
 * for the rest.
 * Weights, bias rows and every buffer are allocated on the device once
 * at load, for max_rows rows; input and output go through pinned host
 * staging on one stream.  A model is used by one thread at a time.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>
#include <cublas_v2.h>

#include "ig_act.h"
#include "ig_mlp_cuda.h"


struct ig_mlp_cuda_s {
    int              device;
    size_t           max_rows;
    size_t           nsteps;
    ig_mlp_step_t   *steps;      /* host copy; w and bias point to device */
    size_t           nslots;
    size_t          *slot_row;
    float          **slot;       /* device buffers, max_rows rows each */
    void           **consts;     /* device weights and bias rows */
    size_t           nconsts;
    float           *in_h;       /* pinned staging */
    float           *out_h;
    cudaStream_t     stream;
    cublasHandle_t   blas;
};


#define IG_CUDA_THREADS  256


static int
ig_cuda_err(char *err, size_t errlen, const char *what, cudaError_t rc)
{
    snprintf(err, errlen, "cuda: %s: %s", what, cudaGetErrorString(rc));
    return -1;
}


static int
ig_blas_err(char *err, size_t errlen, const char *what, cublasStatus_t rc)
{
    snprintf(err, errlen, "cublas: %s: status %d", what, (int) rc);
    return -1;
}


/* y = act(x [+ x2] [+ bias[i % row]]) over total elements */
__global__ void
ig_mlp_ew_kernel(float *y, const float *x, const float *x2,
    const float *bias, size_t row, size_t total, int act, float alpha)
{
    size_t  i;
    float   v;

    for (i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
         i += (size_t) gridDim.x * blockDim.x)
    {
        v = x[i];
        if (x2) {
            v += x2[i];
        }
        if (bias) {
            v += bias[i % row];
        }

        y[i] = ig_act_apply(act, alpha, v);
    }
}


/* one thread per span: spans = rows * outer * inner */
__global__ void
ig_mlp_softmax_kernel(float *y, const float *x, size_t spans, size_t dim,
    size_t inner)
{
    size_t  k, o, q, base;

    for (k = blockIdx.x * (size_t) blockDim.x + threadIdx.x; k < spans;
         k += (size_t) gridDim.x * blockDim.x)
    {
        o = k / inner;
        q = k % inner;
        base = o * dim * inner + q;
        ig_softmax_span(x + base, y + base, dim, inner);
    }
}


static unsigned
ig_mlp_blocks(size_t n)
{
    size_t  b;

    b = (n + IG_CUDA_THREADS - 1) / IG_CUDA_THREADS;

    return (unsigned) (b == 0 ? 1 : (b > 65535 ? 65535 : b));
}


static const float *
ig_mlp_upload(ig_mlp_cuda_t *g, const float *h, size_t n, char *err,
    size_t errlen)
{
    void         *d;
    cudaError_t   rc;

    rc = cudaMalloc(&d, n * sizeof(float));
    if (rc != cudaSuccess) {
        ig_cuda_err(err, errlen, "cudaMalloc (weights)", rc);
        return NULL;
    }

    g->consts[g->nconsts++] = d;

    rc = cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
    if (rc != cudaSuccess) {
        ig_cuda_err(err, errlen, "cudaMemcpy (weights)", rc);
        return NULL;
    }

    return (const float *) d;
}


extern "C" ig_mlp_cuda_t *
ig_mlp_cuda_create(int device, const ig_mlp_plan_t *plan, size_t max_rows,
    char *err, size_t errlen)
{
    size_t           i;
    cudaError_t      rc;
    cublasStatus_t   brc;
    ig_mlp_step_t   *s;
    ig_mlp_cuda_t   *g;

    if (max_rows == 0) {
        max_rows = 1;
    }

    g = (ig_mlp_cuda_t *) calloc(1, sizeof(ig_mlp_cuda_t));
    if (g == NULL) {
        snprintf(err, errlen, "cuda: out of memory");
        return NULL;
    }

    g->device = device;
    g->max_rows = max_rows;
    g->nsteps = plan->nsteps;
    g->nslots = plan->nslots;
    g->steps = (ig_mlp_step_t *) calloc(plan->nsteps + 1,
                                        sizeof(ig_mlp_step_t));
    g->slot_row = (size_t *) calloc(plan->nslots + 1, sizeof(size_t));
    g->slot = (float **) calloc(plan->nslots + 1, sizeof(float *));
    g->consts = (void **) calloc(2 * plan->nsteps + 1, sizeof(void *));

    if (g->steps == NULL || g->slot_row == NULL || g->slot == NULL
        || g->consts == NULL)
    {
        snprintf(err, errlen, "cuda: out of memory");
        goto failed;
    }

    memcpy(g->steps, plan->steps, plan->nsteps * sizeof(ig_mlp_step_t));
    memcpy(g->slot_row, plan->slot_row, plan->nslots * sizeof(size_t));

    rc = cudaSetDevice(device);
    if (rc != cudaSuccess) {
        ig_cuda_err(err, errlen, "cudaSetDevice", rc);
        goto failed;
    }

    rc = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    if (rc != cudaSuccess) {
        ig_cuda_err(err, errlen, "cudaStreamCreate", rc);
        goto failed;
    }

    brc = cublasCreate(&g->blas);
    if (brc != CUBLAS_STATUS_SUCCESS) {
        g->blas = NULL;
        ig_blas_err(err, errlen, "cublasCreate", brc);
        goto failed;
    }

    brc = cublasSetStream(g->blas, g->stream);
    if (brc != CUBLAS_STATUS_SUCCESS) {
        ig_blas_err(err, errlen, "cublasSetStream", brc);
        goto failed;
    }

    /* full FP32: no TF32 tensor-op rounding, so the GPU agrees with
     * the CPU path and torch within the oracle's 1e-4 */
    brc = cublasSetMathMode(g->blas, CUBLAS_DEFAULT_MATH);
    if (brc != CUBLAS_STATUS_SUCCESS) {
        ig_blas_err(err, errlen, "cublasSetMathMode", brc);
        goto failed;
    }

    /* slots 0 and 1 are device copies of the caller's input and output */
    for (i = 0; i < g->nslots; i++) {
        if (g->slot_row[i] == 0) {
            continue;
        }

        rc = cudaMalloc((void **) &g->slot[i],
                        max_rows * g->slot_row[i] * sizeof(float));
        if (rc != cudaSuccess) {
            ig_cuda_err(err, errlen, "cudaMalloc (buffers)", rc);
            goto failed;
        }
    }

    rc = cudaMallocHost((void **) &g->in_h,
                        max_rows * g->slot_row[0] * sizeof(float) + 1);
    if (rc == cudaSuccess) {
        rc = cudaMallocHost((void **) &g->out_h,
                            max_rows * g->slot_row[1] * sizeof(float) + 1);
    }

    if (rc != cudaSuccess) {
        ig_cuda_err(err, errlen, "cudaMallocHost (staging)", rc);
        goto failed;
    }

    for (i = 0; i < g->nsteps; i++) {
        s = &g->steps[i];

        if (s->w) {
            s->w = ig_mlp_upload(g, s->w, s->k * s->n, err, errlen);
            if (s->w == NULL) {
                goto failed;
            }
        }

        if (s->bias) {
            s->bias = ig_mlp_upload(g, s->bias, s->row_out, err, errlen);
            if (s->bias == NULL) {
                goto failed;
            }
        }
    }

    return g;

failed:

    ig_mlp_cuda_destroy(g);
    return NULL;
}


static int
ig_mlp_cuda_pass(ig_mlp_cuda_t *g, size_t rows, char *err, size_t errlen)
{
    int              m, n, k;
    size_t           i, total;
    float            beta;
    cudaError_t      rc;
    cublasStatus_t   brc;
    ig_mlp_step_t   *s;

    for (i = 0; i < g->nsteps; i++) {
        s = &g->steps[i];
        total = rows * s->row_out;

        switch (s->op) {

        case IG_MLP_GEMM:
            beta = 0.0f;
            if (s->c_slot >= 0) {
                beta = s->beta;
                if (s->c_slot != s->out) {
                    rc = cudaMemcpyAsync(g->slot[s->out], g->slot[s->c_slot],
                                         total * sizeof(float),
                                         cudaMemcpyDeviceToDevice, g->stream);
                    if (rc != cudaSuccess) {
                        return ig_cuda_err(err, errlen, "Gemm C copy", rc);
                    }
                }
            }

            /*
             * Row-major Y[M,N] = X[M,K] . op(W) is column-major
             * Y^T = op(W)^T . X^T: W's row-major storage read as
             * column-major is W^T, so transB=0 needs no transpose and
             * transB=1 needs one.
             */
            m = (int) (rows * s->mult);
            n = (int) s->n;
            k = (int) s->k;

            brc = cublasSgemm(g->blas, s->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                              CUBLAS_OP_N, n, m, k, &s->alpha, s->w,
                              s->trans_b ? k : n, g->slot[s->in], k, &beta,
                              g->slot[s->out], n);
            if (brc != CUBLAS_STATUS_SUCCESS) {
                return ig_blas_err(err, errlen, "cublasSgemm", brc);
            }

            if (s->bias || s->act != IG_ACT_NONE) {
                ig_mlp_ew_kernel<<<ig_mlp_blocks(total), IG_CUDA_THREADS, 0,
                                   g->stream>>>(g->slot[s->out],
                                                g->slot[s->out], NULL,
                                                s->bias, s->row_out, total,
                                                s->act, s->act_alpha);
            }

            break;

        case IG_MLP_ADD_ROW:
        case IG_MLP_ADD:
        case IG_MLP_ACT:
            ig_mlp_ew_kernel<<<ig_mlp_blocks(total), IG_CUDA_THREADS, 0,
                               g->stream>>>(g->slot[s->out], g->slot[s->in],
                                            s->op == IG_MLP_ADD
                                            ? g->slot[s->in2] : NULL,
                                            s->op == IG_MLP_ADD_ROW
                                            ? s->bias : NULL,
                                            s->row_out, total, s->act,
                                            s->act_alpha);
            break;

        case IG_MLP_SOFTMAX:
            total = rows * s->outer * s->inner;
            ig_mlp_softmax_kernel<<<ig_mlp_blocks(total), IG_CUDA_THREADS, 0,
                                    g->stream>>>(g->slot[s->out],
                                                 g->slot[s->in], total,
                                                 s->dim, s->inner);
            break;

        case IG_MLP_COPY:
            rc = cudaMemcpyAsync(g->slot[s->out], g->slot[s->in],
                                 total * sizeof(float),
                                 cudaMemcpyDeviceToDevice, g->stream);
            if (rc != cudaSuccess) {
                return ig_cuda_err(err, errlen, "copy", rc);
            }

            break;
        }

        rc = cudaGetLastError();
        if (rc != cudaSuccess) {
            return ig_cuda_err(err, errlen, "kernel launch", rc);
        }
    }

    return 0;
}


extern "C" int
ig_mlp_cuda_run(ig_mlp_cuda_t *g, const float *in, size_t rows, float *out,
    char *err, size_t errlen)
{
    size_t       n, nf, no;
    cudaError_t  rc;

    nf = g->slot_row[0];
    no = g->slot_row[1];

    rc = cudaSetDevice(g->device);
    if (rc != cudaSuccess) {
        return ig_cuda_err(err, errlen, "cudaSetDevice", rc);
    }

    while (rows) {
        n = rows < g->max_rows ? rows : g->max_rows;

        memcpy(g->in_h, in, n * nf * sizeof(float));

        rc = cudaMemcpyAsync(g->slot[0], g->in_h, n * nf * sizeof(float),
                             cudaMemcpyHostToDevice, g->stream);
        if (rc != cudaSuccess) {
            return ig_cuda_err(err, errlen, "input copy", rc);
        }

        if (ig_mlp_cuda_pass(g, n, err, errlen) != 0) {
            return -1;
        }

        rc = cudaMemcpyAsync(g->out_h, g->slot[1], n * no * sizeof(float),
                             cudaMemcpyDeviceToHost, g->stream);
        if (rc == cudaSuccess) {
            rc = cudaStreamSynchronize(g->stream);
        }

        if (rc != cudaSuccess) {
            return ig_cuda_err(err, errlen, "output copy", rc);
        }

        memcpy(out, g->out_h, n * no * sizeof(float));

        in += n * nf;
        out += n * no;
        rows -= n;
    }

    return 0;
}


extern "C" void
ig_mlp_cuda_destroy(ig_mlp_cuda_t *g)
{
    size_t  i;

    if (g == NULL) {
        return;
    }

    if (g->stream) {
        cudaStreamSynchronize(g->stream);
    }

    for (i = 0; g->slot && i < g->nslots; i++) {
        if (g->slot[i]) {
            cudaFree(g->slot[i]);
        }
    }

    for (i = 0; g->consts && i < g->nconsts; i++) {
        cudaFree(g->consts[i]);
    }

    if (g->in_h) {
        cudaFreeHost(g->in_h);
    }

    if (g->out_h) {
        cudaFreeHost(g->out_h);
    }

    if (g->blas) {
        cublasDestroy(g->blas);
    }

    if (g->stream) {
        cudaStreamDestroy(g->stream);
    }

    free(g->steps);
    free(g->slot_row);
    free(g->slot);
    free(g->consts);
    free(g);
}
