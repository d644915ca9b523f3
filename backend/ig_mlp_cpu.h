
/*
 * Copyright (C) infergate authors
 */

/*
 * The CPU executor of a dense model's plan (ig_mlp_cuda.h), twin of the
 * CUDA path: mlp_cpu.c runs with OpenBLAS what mlp_cuda.cu runs with
 * cuBLAS.  model_onnx.c builds the plan and embeds one of these.
 */

#ifndef _IG_MLP_CPU_H_INCLUDED_
#define _IG_MLP_CPU_H_INCLUDED_

#include <stddef.h>

#include "ig_mlp_cuda.h"


typedef struct {
    const ig_mlp_plan_t  *plan;
    float                *arena;      /* internal slots, cap rows each  */
    size_t                cap;
    size_t                chunk;      /* rows per pass                  */
    float               **ptr;        /* per slot, for the current pass */
    size_t               *slot_off;
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


#endif /* _IG_MLP_CPU_H_INCLUDED_ */
