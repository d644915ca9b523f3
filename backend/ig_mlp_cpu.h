
/*
 * Copyright (C) infergate authors
 */

/*
 * The CPU executor of a dense model's plan (ig_mlp_cuda.h), twin of the
 * CUDA path: mlp_cpu.c runs with its packed AVX2/FMA kernel (or
 * OpenBLAS) what mlp_cuda.cu runs with cuBLAS.  model_onnx.c builds the
 * plan and embeds one of these; the weights are packed here, at init,
 * so the plan (shared with the CUDA path) stays as it is.
 */

#ifndef _IG_MLP_CPU_H_INCLUDED_
#define _IG_MLP_CPU_H_INCLUDED_

#include <stddef.h>

#include "ig_mlp_cuda.h"


#define IG_MLP_NR         16     /* columns per packed panel        */
#define IG_MLP_SMALL_N    4      /* up to this many columns: dots   */
#define IG_MLP_CPU_MAXT   16     /* threads that split rows, at most */


/* one thread's buffers */
typedef struct {
    float                *arena;      /* internal slots, cap rows each  */
    size_t                cap;
    float               **ptr;        /* per slot, for the current pass */
} ig_mlp_cpu_ws_t;


typedef struct {
    const ig_mlp_plan_t  *plan;
    size_t                chunk;      /* rows per pass, OpenBLAS; CUDA  */
    size_t                block;      /* rows per pass, this executor   */
    size_t                per;        /* floats of internal slots a row */
    size_t               *slot_off;
    size_t                nsteps;     /* of packed, pbias               */
    float               **packed;     /* per step: panels, or NULL      */
    float               **pbias;      /* per step: padded bias, or NULL */
    int                   fast;       /* every GEMM runs packed         */
    size_t                split_min;  /* rows per thread, at least      */
    ig_mlp_cpu_ws_t      *ws;         /* IG_MLP_CPU_MAXT of them        */
} ig_mlp_cpu_t;


/*
 * Sizes a pass for the plan (which must outlive m) and allocates the
 * buffers for a first few rows.  Returns -1 and fills err; m is then
 * still released with ig_mlp_cpu_free().
 */
int ig_mlp_cpu_init(ig_mlp_cpu_t *m, const ig_mlp_plan_t *plan, char *err,
    size_t errlen);

/* rows of slot_row[IN] floats in, rows of slot_row[OUT] floats out */
int ig_mlp_cpu_run(ig_mlp_cpu_t *m, int threads, const float *in,
    size_t rows, float *out, char *err, size_t errlen);

/* frees the buffers, not m; safe on a zeroed m */
void ig_mlp_cpu_free(ig_mlp_cpu_t *m);

/*
 * Frees the packed weights; m then runs on OpenBLAS.  For a model whose
 * predictions run on CUDA: the host keeps one copy of its weights.
 */
void ig_mlp_cpu_drop_packed(ig_mlp_cpu_t *m);

/*
 * The packed kernel, exposed for its unit test: whether this CPU runs
 * it; w ([k, n], or [n, k] when trans) into panels of
 * ((n + 15) / 16 * 16) * k floats at dst (32-byte aligned); and
 * c[m, n] = act(alpha a[m, k] . w + bias) for act none, Relu or
 * LeakyRelu, bias NULL or padded like the panels.  Returns -1 where the
 * kernel does not run (no AVX2/FMA, another act).
 */
int ig_mlp_cpu_packed_ok(void);
void ig_mlp_cpu_pack(float *dst, const float *w, size_t k, size_t n,
    int trans);
int ig_mlp_cpu_gemm(const float *a, size_t m, size_t k, const float *packed,
    size_t n, const float *bias, float *c, float alpha, int act,
    float act_alpha);


#endif /* _IG_MLP_CPU_H_INCLUDED_ */
