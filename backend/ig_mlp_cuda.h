
/*
 * Copyright (C) infergate authors
 */

/*
 * The execution plan of a dense (MLP-style) model and the C-callable
 * wrapper of its CUDA path.  model_onnx.c builds the plan at load,
 * mlp_cpu.c runs it on the CPU; mlp_cuda.cu copies it to the device
 * once and runs the same steps with cuBLAS and kernels over ig_act.h.
 * Plain C so both compilers read it.
 *
 * Buffers are "slots" of rows * slot_row[s] floats: slot 0 is the
 * caller's input, slot 1 the caller's output, slots 2.. are internal.
 */

#ifndef _IG_MLP_CUDA_H_INCLUDED_
#define _IG_MLP_CUDA_H_INCLUDED_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif


#define IG_MLP_SLOT_IN   0
#define IG_MLP_SLOT_OUT  1

typedef enum {
    IG_MLP_GEMM = 1,     /* out = alpha in.op(w) [+ beta c] + bias, act  */
    IG_MLP_ADD_ROW,      /* out = act(in + bias), bias one row           */
    IG_MLP_ADD,          /* out = act(in + in2)                          */
    IG_MLP_ACT,          /* out = act(in)                                */
    IG_MLP_SOFTMAX,      /* per row: [outer, dim, inner], over dim       */
    IG_MLP_COPY          /* out = in                                     */
} ig_mlp_op_e;


typedef struct {
    int           op;          /* ig_mlp_op_e                          */
    int           act;         /* ig_act_e, applied last               */
    float         act_alpha;   /* LeakyRelu alpha                      */
    int           in;          /* slots                                */
    int           in2;         /* ADD: second operand                  */
    int           out;
    size_t        row_in;      /* floats per batch row                 */
    size_t        row_out;

    /* GEMM: each batch row is mult rows of k, giving mult rows of n */
    size_t        mult;
    size_t        k;
    size_t        n;
    int           trans_b;     /* w is [n, k] instead of [k, n]        */
    float         alpha;
    float         beta;        /* for c_slot                           */
    int           c_slot;      /* Gemm C as an activation, or -1       */
    const float  *w;
    const float  *bias;        /* row_out floats (beta applied) or NULL */

    /* SOFTMAX */
    size_t        outer;
    size_t        dim;
    size_t        inner;
} ig_mlp_step_t;


typedef struct {
    size_t          nsteps;
    ig_mlp_step_t  *steps;
    size_t          nslots;     /* including slots 0 and 1 */
    size_t         *slot_row;   /* floats per batch row, per slot */
} ig_mlp_plan_t;


typedef struct ig_mlp_cuda_s  ig_mlp_cuda_t;

/*
 * Uploads weights and allocates device buffers and pinned staging for
 * max_rows rows once; larger batches run in chunks.  The plan's host
 * arrays may be freed afterwards.  Returns NULL and fills err.
 */
ig_mlp_cuda_t *ig_mlp_cuda_create(int device, const ig_mlp_plan_t *plan,
    size_t max_rows, char *err, size_t errlen);
int ig_mlp_cuda_run(ig_mlp_cuda_t *g, const float *in, size_t rows,
    float *out, char *err, size_t errlen);
void ig_mlp_cuda_destroy(ig_mlp_cuda_t *g);


#ifdef __cplusplus
}
#endif

#endif /* _IG_MLP_CUDA_H_INCLUDED_ */
