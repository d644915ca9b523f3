
/*
 * Copyright (C) infergate authors
 *
 * The CPU path of dense models, twin of mlp_cuda.cu: the plan that
 * model_onnx.c builds (ig_mlp_cuda.h), run with OpenBLAS for the GEMMs
 * and loops over ig_act.h for the rest.  Internal buffers live in one
 * arena of cap rows, grown on demand up to chunk rows; larger batches
 * run in passes of chunk rows.  A model is used by one thread at a time.
 */


#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "ig_act.h"
#include "ig_mlp_cpu.h"


#define IG_MLP_CPU_CHUNK      4096           /* rows per pass, at most   */
#define IG_MLP_CPU_SLOT_MAX   (1u << 24)     /* floats per slot and pass */
#define IG_MLP_CPU_ARENA_MAX  (1u << 26)     /* floats of buffers a pass */
#define IG_MLP_CPU_PAR_MIN    (1u << 20)     /* softmax worth threads    */


static int
ig_mlp_cpu_reserve(ig_mlp_cpu_t *m, size_t rows, char *err, size_t errlen)
{
    size_t   i, total, per;
    float   *a;

    if (rows <= m->cap) {
        return 0;
    }

    per = 0;
    for (i = 2; i < m->plan->nslots; i++) {
        m->slot_off[i] = per;
        per += m->plan->slot_row[i];
    }

    if (per != 0 && rows > SIZE_MAX / sizeof(float) / per) {
        snprintf(err, errlen, "onnx: buffers too large");
        return -1;
    }

    total = per * rows;

    a = realloc(m->arena, (total ? total : 1) * sizeof(float));
    if (a == NULL) {
        snprintf(err, errlen, "onnx: out of memory for %zu rows", rows);
        return -1;
    }

    m->arena = a;
    m->cap = rows;

    return 0;
}


/*
 * One row (or span) of y = act(x [+ x2 | + bias]): the switch is out of
 * the loops and each loop is marked simd, so that Relu is a blend, not a
 * branch mispredicted on every other element.
 */
static void
ig_mlp_cpu_ew(float *y, const float *x, const float *x2, const float *bias,
    size_t n, int act, float alpha)
{
    size_t  j;

    if (x2 != NULL) {
        #pragma omp simd
        for (j = 0; j < n; j++) {
            y[j] = x[j] + x2[j];
        }

        x = y;

    } else if (bias != NULL) {
        #pragma omp simd
        for (j = 0; j < n; j++) {
            y[j] = x[j] + bias[j];
        }

        x = y;
    }

    switch (act) {

    case IG_ACT_RELU:
        #pragma omp simd
        for (j = 0; j < n; j++) {
            y[j] = ig_act_relu(x[j]);
        }
        break;

    case IG_ACT_LEAKY_RELU:
        #pragma omp simd
        for (j = 0; j < n; j++) {
            y[j] = ig_act_leaky_relu(x[j], alpha);
        }
        break;

    case IG_ACT_SIGMOID:
        #pragma omp simd
        for (j = 0; j < n; j++) {
            y[j] = ig_act_sigmoid(x[j]);
        }
        break;

    case IG_ACT_TANH:
        #pragma omp simd
        for (j = 0; j < n; j++) {
            y[j] = ig_act_tanh(x[j]);
        }
        break;

    default:
        if (x != y) {
            memcpy(y, x, n * sizeof(float));
        }
    }
}


/*
 * Elementwise work after a GEMM is memory-bound and small next to it:
 * it stays on the calling thread.  An OpenMP team here would spin on the
 * cores OpenBLAS's own threads need next (measured: 2 threads at batch
 * 256 fell from 450k to 21k rows/s on a busy 2-core machine).
 */
static void
ig_mlp_cpu_epilogue(float *y, const float *x, const float *x2,
    const float *bias, size_t rows, size_t row, int act, float alpha)
{
    size_t  i;

    if (bias == NULL) {
        /* one span: the whole pass */
        ig_mlp_cpu_ew(y, x, x2, NULL, rows * row, act, alpha);
        return;
    }

    for (i = 0; i < rows; i++) {
        ig_mlp_cpu_ew(y + i * row, x + i * row, NULL, bias, row, act, alpha);
    }
}


static int
ig_mlp_cpu_pass(ig_mlp_cpu_t *m, int nt, const float *in, size_t rows,
    float *out)
{
    size_t          i;
    float         **p;
    ig_mlp_step_t  *s;

    p = m->ptr;
    p[IG_MLP_SLOT_IN] = (float *) in;       /* never written */
    p[IG_MLP_SLOT_OUT] = out;

    for (i = 2; i < m->plan->nslots; i++) {
        p[i] = m->arena + m->slot_off[i] * m->cap;
    }

    for (i = 0; i < m->plan->nsteps; i++) {
        s = &m->plan->steps[i];

        switch (s->op) {

        case IG_MLP_GEMM:
            if (s->c_slot >= 0) {
                if (p[s->out] != p[s->c_slot]) {
                    memcpy(p[s->out], p[s->c_slot],
                           rows * s->row_out * sizeof(float));
                }
            }

            if (rows * s->mult == 1 && s->c_slot < 0 && !s->trans_b) {
                /* one row: a matrix-vector product */
                cblas_sgemv(CblasRowMajor, CblasTrans, (int) s->k,
                            (int) s->n, s->alpha, s->w, (int) s->n,
                            p[s->in], 1, 0.0f, p[s->out], 1);

            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans,
                            s->trans_b ? CblasTrans : CblasNoTrans,
                            (int) (rows * s->mult), (int) s->n, (int) s->k,
                            s->alpha, p[s->in], (int) s->k, s->w,
                            (int) (s->trans_b ? s->k : s->n),
                            s->c_slot >= 0 ? s->beta : 0.0f, p[s->out],
                            (int) s->n);
            }

            if (s->bias || s->act != IG_ACT_NONE) {
                ig_mlp_cpu_epilogue(p[s->out], p[s->out], NULL, s->bias, rows,
                                 s->row_out, s->act, s->act_alpha);
            }

            break;

        case IG_MLP_ADD_ROW:
            ig_mlp_cpu_epilogue(p[s->out], p[s->in], NULL, s->bias, rows,
                             s->row_out, s->act, s->act_alpha);
            break;

        case IG_MLP_ADD:
            ig_mlp_cpu_epilogue(p[s->out], p[s->in], p[s->in2], NULL, rows,
                             s->row_out, s->act, s->act_alpha);
            break;

        case IG_MLP_ACT:
            ig_mlp_cpu_epilogue(p[s->out], p[s->in], NULL, NULL, rows,
                             s->row_out, s->act, s->act_alpha);
            break;

        case IG_MLP_SOFTMAX:
            {
            size_t     spans = rows * s->outer * s->inner;
            ptrdiff_t  k;

            #pragma omp parallel for num_threads(nt) schedule(static) \
                if (rows * s->row_out >= IG_MLP_CPU_PAR_MIN)
            for (k = 0; k < (ptrdiff_t) spans; k++) {
                size_t  o = (size_t) k / s->inner, q = (size_t) k % s->inner;
                size_t  base = o * s->dim * s->inner + q;

                ig_softmax_span(p[s->in] + base, p[s->out] + base, s->dim,
                                s->inner);
            }
            }
            break;

        case IG_MLP_COPY:
            memcpy(p[s->out], p[s->in], rows * s->row_out * sizeof(float));
            break;
        }
    }

    return 0;
}


int
ig_mlp_cpu_init(ig_mlp_cpu_t *m, const ig_mlp_plan_t *plan, char *err,
    size_t errlen)
{
    /* a pass keeps every buffer under IG_MLP_CPU_SLOT_MAX floats, so
     * BLAS sizes fit an int, and all of them under ARENA_MAX */
    size_t  i, maxrow = 1, sum = 1;

    memset(m, 0, sizeof(ig_mlp_cpu_t));
    m->plan = plan;

    for (i = 0; i < plan->nslots; i++) {
        if (plan->slot_row[i] > maxrow) {
            maxrow = plan->slot_row[i];
        }

        sum += plan->slot_row[i];       /* each <= IG_ONNX_MAX_ROW */
    }

    m->chunk = IG_MLP_CPU_SLOT_MAX / maxrow;
    if (IG_MLP_CPU_ARENA_MAX / sum < m->chunk) {
        m->chunk = IG_MLP_CPU_ARENA_MAX / sum;
    }

    if (m->chunk > IG_MLP_CPU_CHUNK) {
        m->chunk = IG_MLP_CPU_CHUNK;
    }

    if (m->chunk == 0) {
        snprintf(err, errlen, "onnx: the graph needs more than %u "
                 "floats of buffers per row", IG_MLP_CPU_ARENA_MAX);
        return -1;
    }

    m->ptr = calloc(plan->nslots, sizeof(float *));
    m->slot_off = calloc(plan->nslots, sizeof(size_t));
    if (m->ptr == NULL || m->slot_off == NULL
        || ig_mlp_cpu_reserve(m, m->chunk < 64 ? m->chunk : 64, err,
                              errlen) != 0)
    {
        snprintf(err, errlen, "onnx: out of memory");
        return -1;
    }

    return 0;
}


int
ig_mlp_cpu_run(ig_mlp_cpu_t *m, int threads, const float *in, size_t rows,
    float *out, char *err, size_t errlen)
{
    int         nt;
    size_t      n, nf, no;

    static int  blas_threads;

    /* OpenBLAS's thread count is process-wide; set it when it changes */
    nt = threads > 0 ? threads : 1;
    if (__atomic_load_n(&blas_threads, __ATOMIC_RELAXED) != nt) {
        openblas_set_num_threads(nt);
        __atomic_store_n(&blas_threads, nt, __ATOMIC_RELAXED);
    }

    nf = m->plan->slot_row[IG_MLP_SLOT_IN];
    no = m->plan->slot_row[IG_MLP_SLOT_OUT];

    if (ig_mlp_cpu_reserve(m, rows < m->chunk ? rows : m->chunk, err, errlen)
        != 0)
    {
        return -1;
    }

    while (rows) {
        n = rows < m->chunk ? rows : m->chunk;
        ig_mlp_cpu_pass(m, nt, in, n, out);
        in += n * nf;
        out += n * no;
        rows -= n;
    }

    return 0;
}


void
ig_mlp_cpu_free(ig_mlp_cpu_t *m)
{
    free(m->arena);
    free(m->ptr);
    free(m->slot_off);
}
