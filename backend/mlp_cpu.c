
/*
 * Copyright (C) infergate authors
 *
 * The CPU path of dense models, twin of mlp_cuda.cu: the plan that
 * model_onnx.c builds (ig_mlp_cuda.h), run with loops over ig_act.h for
 * the elementwise steps and, for the GEMMs, either
 *
 *   - the packed kernel below (x86-64 with AVX2 and FMA, checked at run
 *     time): weights packed once at init, bias and Relu/LeakyRelu fused
 *     into the tile's store, the whole plan run on blocks of
 *     IG_MLP_CPU_BLOCK rows (10 whole tiles) so that every activation
 *     stays in L1/L2 between layers, and --threads > 1 splitting the
 *     rows between OpenMP threads, each with its own buffers;
 *   - or OpenBLAS (other CPUs, a Gemm with C as an activation, or
 *     IG_MLP_CPU_GEMM=blas in the environment), in passes of up to
 *     chunk rows with OpenBLAS's own threads.
 *
 * Internal buffers live in one arena per thread of cap rows, grown on
 * demand.  A model is used by one thread at a time.
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
#define IG_MLP_CPU_BLOCK      60             /* rows per pass, packed    */
#define IG_MLP_CPU_SPLIT_MIN  16             /* rows per thread, at least */
#define IG_MLP_CPU_SPLIT_MAC  (1u << 18)     /* and multiply-adds        */


/*
 * The packed SGEMM of the CPU path (x86-64 with AVX2 and FMA, checked at
 * run time): c = act(alpha a.w + bias) for a [m, k] row-major, w packed
 * once at load in panels of IG_MLP_NR columns (k rows of IG_MLP_NR
 * floats each, zero-padded), so that the micro-kernel streams w with
 * aligned loads and keeps a 6 x 16 tile of c in 12 registers.  The bias
 * and a Relu or LeakyRelu are applied to the tile in registers before
 * its one store; nothing passes over c again.
 */

#if defined(__x86_64__) && defined(__GNUC__)

#include <immintrin.h>

#define IG_MLP_AVX2  __attribute__((target("avx2,fma")))
#define IG_MLP_MR    6


IG_MLP_AVX2 static inline __attribute__((always_inline)) void
ig_mlp_tile(const int mr, const float *a, size_t lda, const float *bp,
    size_t k, float *c, size_t ldc, size_t nc, const float *bias,
    float alpha, int act, float act_alpha)
{
    int      r;
    size_t   kk, j;
    float    tmp[IG_MLP_MR][IG_MLP_NR];
    __m256   c0[IG_MLP_MR], c1[IG_MLP_MR], b0, b1, av, v0, v1, z, la;

    #pragma GCC unroll 6
    for (r = 0; r < mr; r++) {
        c0[r] = _mm256_setzero_ps();
        c1[r] = _mm256_setzero_ps();
    }

    for (kk = 0; kk < k; kk++) {
        b0 = _mm256_load_ps(bp + kk * IG_MLP_NR);
        b1 = _mm256_load_ps(bp + kk * IG_MLP_NR + 8);

        #pragma GCC unroll 6
        for (r = 0; r < mr; r++) {
            av = _mm256_broadcast_ss(a + r * lda + kk);
            c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
        }
    }

    z = _mm256_setzero_ps();
    la = _mm256_set1_ps(act_alpha);

    if (alpha != 1.0f) {
        av = _mm256_set1_ps(alpha);
        #pragma GCC unroll 6
        for (r = 0; r < mr; r++) {
            c0[r] = _mm256_mul_ps(c0[r], av);
            c1[r] = _mm256_mul_ps(c1[r], av);
        }
    }

    if (bias != NULL) {
        b0 = _mm256_load_ps(bias);
        b1 = _mm256_load_ps(bias + 8);
        #pragma GCC unroll 6
        for (r = 0; r < mr; r++) {
            c0[r] = _mm256_add_ps(c0[r], b0);
            c1[r] = _mm256_add_ps(c1[r], b1);
        }
    }

    #pragma GCC unroll 6
    for (r = 0; r < mr; r++) {
        v0 = c0[r];
        v1 = c1[r];

        if (act == IG_ACT_RELU) {
            /* max(0, x): MAXPS returns its second operand on NaN, so NaN
             * passes as in ig_act_relu() and torch.relu */
            v0 = _mm256_max_ps(z, v0);
            v1 = _mm256_max_ps(z, v1);

        } else if (act == IG_ACT_LEAKY_RELU) {
            v0 = _mm256_blendv_ps(v0, _mm256_mul_ps(v0, la),
                                  _mm256_cmp_ps(v0, z, _CMP_LT_OQ));
            v1 = _mm256_blendv_ps(v1, _mm256_mul_ps(v1, la),
                                  _mm256_cmp_ps(v1, z, _CMP_LT_OQ));
        }

        if (nc == IG_MLP_NR) {
            _mm256_storeu_ps(c + r * ldc, v0);
            _mm256_storeu_ps(c + r * ldc + 8, v1);

        } else {
            _mm256_storeu_ps(tmp[r], v0);
            _mm256_storeu_ps(tmp[r] + 8, v1);
            for (j = 0; j < nc; j++) {
                c[r * ldc + j] = tmp[r][j];
            }
        }
    }
}


/*
 * One row against four full panels at once: eight chains of FMAs
 * instead of the two a 1-row tile has, which would wait on the FMA
 * latency; a lone row (a request of one) is the latency that matters.
 */
IG_MLP_AVX2 static void
ig_mlp_row4(const float *a, const float *bp, size_t k, float *c,
    const float *bias, float alpha, int act, float act_alpha)
{
    int      q;
    size_t   kk, pk;
    __m256   acc[8], av, z, la, v;

    pk = IG_MLP_NR * k;

    #pragma GCC unroll 8
    for (q = 0; q < 8; q++) {
        acc[q] = _mm256_setzero_ps();
    }

    for (kk = 0; kk < k; kk++) {
        av = _mm256_broadcast_ss(a + kk);

        #pragma GCC unroll 4
        for (q = 0; q < 4; q++) {
            acc[2 * q] = _mm256_fmadd_ps(av,
                             _mm256_load_ps(bp + q * pk + kk * IG_MLP_NR),
                             acc[2 * q]);
            acc[2 * q + 1] = _mm256_fmadd_ps(av,
                             _mm256_load_ps(bp + q * pk + kk * IG_MLP_NR + 8),
                             acc[2 * q + 1]);
        }
    }

    z = _mm256_setzero_ps();
    la = _mm256_set1_ps(act_alpha);

    #pragma GCC unroll 8
    for (q = 0; q < 8; q++) {
        v = acc[q];

        if (alpha != 1.0f) {
            v = _mm256_mul_ps(v, _mm256_set1_ps(alpha));
        }

        if (bias != NULL) {
            v = _mm256_add_ps(v, _mm256_load_ps(bias + 8 * q));
        }

        if (act == IG_ACT_RELU) {
            v = _mm256_max_ps(z, v);

        } else if (act == IG_ACT_LEAKY_RELU) {
            v = _mm256_blendv_ps(v, _mm256_mul_ps(v, la),
                                 _mm256_cmp_ps(v, z, _CMP_LT_OQ));
        }

        _mm256_storeu_ps(c + 8 * q, v);
    }
}


/*
 * Few columns (the last layer of a classifier): a panel would be mostly
 * padding, so w is packed transposed, [n, k], and each output is a dot
 * product of a row of a with a row of w.
 */
IG_MLP_AVX2 static void
ig_mlp_dot_avx2(const float *a, size_t m, size_t k, const float *wt,
    size_t n, const float *bias, float *c, float alpha, int act,
    float act_alpha)
{
    float         v, h[8];
    size_t        i, j, kk;
    const float  *x, *y;
    __m256        s0, s1, s2, s3;

    for (i = 0; i < m; i++) {
        x = a + i * k;

        for (j = 0; j < n; j++) {
            y = wt + j * k;
            s0 = _mm256_setzero_ps();
            s1 = _mm256_setzero_ps();
            s2 = _mm256_setzero_ps();
            s3 = _mm256_setzero_ps();

            for (kk = 0; kk + 32 <= k; kk += 32) {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk),
                                     _mm256_loadu_ps(y + kk), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk + 8),
                                     _mm256_loadu_ps(y + kk + 8), s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk + 16),
                                     _mm256_loadu_ps(y + kk + 16), s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk + 24),
                                     _mm256_loadu_ps(y + kk + 24), s3);
            }

            for ( /* void */ ; kk + 8 <= k; kk += 8) {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk),
                                     _mm256_loadu_ps(y + kk), s0);
            }

            s0 = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
            _mm256_storeu_ps(h, s0);
            v = ((h[0] + h[1]) + (h[2] + h[3]))
                + ((h[4] + h[5]) + (h[6] + h[7]));

            for ( /* void */ ; kk < k; kk++) {
                v += x[kk] * y[kk];
            }

            if (alpha != 1.0f) {
                v *= alpha;
            }

            if (bias != NULL) {
                v += bias[j];
            }

            c[i * n + j] = ig_act_apply(act, act_alpha, v);
        }
    }
}


IG_MLP_AVX2 static void
ig_mlp_gemm_avx2(const float *a, size_t m, size_t k, const float *bp,
    size_t n, const float *bias, float *c, float alpha, int act,
    float act_alpha)
{
    size_t        i, p, nc;
    const float  *panel, *bs;

    if (n <= IG_MLP_SMALL_N) {
        ig_mlp_dot_avx2(a, m, k, bp, n, bias, c, alpha, act, act_alpha);
        return;
    }

    /* a tile of rows stays in L1 while the packed w streams past it,
     * panel after panel, in the order it lies in memory */
    for (i = 0; i + IG_MLP_MR <= m; i += IG_MLP_MR) {
        for (p = 0; p < n; p += IG_MLP_NR) {
            nc = n - p < IG_MLP_NR ? n - p : IG_MLP_NR;
            ig_mlp_tile(6, a + i * k, k, bp + p * k, k, c + i * n + p, n, nc,
                        bias ? bias + p : NULL, alpha, act, act_alpha);
        }
    }

    if (i == m) {
        return;
    }

    p = 0;

    if (m - i == 1) {
        for ( /* void */ ; p + 4 * IG_MLP_NR <= n; p += 4 * IG_MLP_NR) {
            ig_mlp_row4(a + i * k, bp + p * k, k, c + i * n + p,
                        bias ? bias + p : NULL, alpha, act, act_alpha);
        }
    }

    for ( /* void */ ; p < n; p += IG_MLP_NR) {
        nc = n - p < IG_MLP_NR ? n - p : IG_MLP_NR;
        panel = bp + p * k;
        bs = bias ? bias + p : NULL;

        switch (m - i) {
        case 5:
            ig_mlp_tile(5, a + i * k, k, panel, k, c + i * n + p, n, nc, bs,
                        alpha, act, act_alpha);
            break;
        case 4:
            ig_mlp_tile(4, a + i * k, k, panel, k, c + i * n + p, n, nc, bs,
                        alpha, act, act_alpha);
            break;
        case 3:
            ig_mlp_tile(3, a + i * k, k, panel, k, c + i * n + p, n, nc, bs,
                        alpha, act, act_alpha);
            break;
        case 2:
            ig_mlp_tile(2, a + i * k, k, panel, k, c + i * n + p, n, nc, bs,
                        alpha, act, act_alpha);
            break;
        default:
            ig_mlp_tile(1, a + i * k, k, panel, k, c + i * n + p, n, nc, bs,
                        alpha, act, act_alpha);
            break;
        }
    }
}

#endif


static int
ig_mlp_cpu_reserve(ig_mlp_cpu_t *m, ig_mlp_cpu_ws_t *w, size_t rows,
    char *err, size_t errlen)
{
    size_t   total;
    float   *a;

    if (rows <= w->cap && w->ptr != NULL) {
        return 0;
    }

    if (w->ptr == NULL) {
        w->ptr = calloc(m->plan->nslots, sizeof(float *));
        if (w->ptr == NULL) {
            snprintf(err, errlen, "onnx: out of memory");
            return -1;
        }
    }

    if (rows <= w->cap) {
        return 0;
    }

    if (m->per != 0 && rows > SIZE_MAX / sizeof(float) / m->per) {
        snprintf(err, errlen, "onnx: buffers too large");
        return -1;
    }

    total = m->per * rows;

    /* 64 floats of slack: a slot's start is then never the arena's last
     * byte even for rows of 0 floats */
    a = realloc(w->arena, (total + 64) * sizeof(float));
    if (a == NULL) {
        snprintf(err, errlen, "onnx: out of memory for %zu rows", rows);
        return -1;
    }

    w->arena = a;
    w->cap = rows;

    return 0;
}


/* what the packed kernel applies in registers */
static inline int
ig_mlp_fusable(int act)
{
    return act == IG_ACT_NONE || act == IG_ACT_RELU
           || act == IG_ACT_LEAKY_RELU;
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


static void
ig_mlp_cpu_softmax(const ig_mlp_step_t *s, const float *in, float *out,
    size_t rows, int nt)
{
    size_t     spans, o, q, base;
    ptrdiff_t  k;

    spans = rows * s->outer * s->inner;

    if (nt > 1 && rows * s->row_out >= IG_MLP_CPU_PAR_MIN) {
        #pragma omp parallel for num_threads(nt) schedule(static)
        for (k = 0; k < (ptrdiff_t) spans; k++) {
            size_t  ko = (size_t) k / s->inner, kq = (size_t) k % s->inner;
            size_t  kb = ko * s->dim * s->inner + kq;

            ig_softmax_span(in + kb, out + kb, s->dim, s->inner);
        }

        return;
    }

    /* no team for one thread: even an if(0) region calls into libgomp */
    for (k = 0; k < (ptrdiff_t) spans; k++) {
        o = (size_t) k / s->inner;
        q = (size_t) k % s->inner;
        base = o * s->dim * s->inner + q;

        ig_softmax_span(in + base, out + base, s->dim, s->inner);
    }
}


static int
ig_mlp_cpu_pass(ig_mlp_cpu_t *m, ig_mlp_cpu_ws_t *w, int nt,
    const float *in, size_t rows, float *out)
{
    size_t          i;
    float         **p;
    ig_mlp_step_t  *s;

    p = w->ptr;
    p[IG_MLP_SLOT_IN] = (float *) in;       /* never written */
    p[IG_MLP_SLOT_OUT] = out;

    for (i = 2; i < m->plan->nslots; i++) {
        p[i] = w->arena + m->slot_off[i] * w->cap;
    }

    for (i = 0; i < m->plan->nsteps; i++) {
        s = &m->plan->steps[i];

        switch (s->op) {

        case IG_MLP_GEMM:
#if defined(__x86_64__) && defined(__GNUC__)
            if (m->packed != NULL && m->packed[i] != NULL) {
                /* the bias is per batch row: fused when it is per output
                 * row too (mult 1); otherwise the epilogue adds it */
                if (s->mult == 1 || s->bias == NULL) {
                    ig_mlp_gemm_avx2(p[s->in], rows * s->mult, s->k,
                                     m->packed[i], s->n, m->pbias[i],
                                     p[s->out], s->alpha,
                                     ig_mlp_fusable(s->act) ? s->act
                                                            : IG_ACT_NONE,
                                     s->act_alpha);
                    if (!ig_mlp_fusable(s->act)) {
                        ig_mlp_cpu_epilogue(p[s->out], p[s->out], NULL, NULL,
                                            rows, s->row_out, s->act,
                                            s->act_alpha);
                    }

                } else {
                    ig_mlp_gemm_avx2(p[s->in], rows * s->mult, s->k,
                                     m->packed[i], s->n, NULL, p[s->out],
                                     s->alpha, IG_ACT_NONE, 0.0f);
                    ig_mlp_cpu_epilogue(p[s->out], p[s->out], NULL, s->bias,
                                        rows, s->row_out, s->act,
                                        s->act_alpha);
                }

                break;
            }
#endif

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
            ig_mlp_cpu_softmax(s, p[s->in], p[s->out], rows, nt);
            break;

        case IG_MLP_COPY:
            memcpy(p[s->out], p[s->in], rows * s->row_out * sizeof(float));
            break;
        }
    }

    return 0;
}


/*
 * Packs w ([k, n], or [n, k] when trans) into panels of IG_MLP_NR
 * columns: panel q holds k rows of IG_MLP_NR floats, columns past n are
 * zero.  Up to IG_MLP_SMALL_N columns, w is stored [n, k] instead.
 * dst has (n + 15) / 16 * 16 * k floats, 32-byte aligned.
 */
void
ig_mlp_cpu_pack(float *dst, const float *w, size_t k, size_t n, int trans)
{
    size_t  p, kk, j;

    if (n <= IG_MLP_SMALL_N) {
        /* transposed, for ig_mlp_dot_avx2() */
        for (j = 0; j < n; j++) {
            for (kk = 0; kk < k; kk++) {
                *dst++ = trans ? w[j * k + kk] : w[kk * n + j];
            }
        }

        return;
    }

    for (p = 0; p < n; p += IG_MLP_NR) {
        for (kk = 0; kk < k; kk++) {
            for (j = 0; j < IG_MLP_NR; j++) {
                *dst++ = (p + j >= n) ? 0.0f
                         : trans ? w[(p + j) * k + kk] : w[kk * n + p + j];
            }
        }
    }
}


int
ig_mlp_cpu_packed_ok(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}


int
ig_mlp_cpu_gemm(const float *a, size_t m, size_t k, const float *packed,
    size_t n, const float *bias, float *c, float alpha, int act,
    float act_alpha)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (ig_mlp_cpu_packed_ok() && ig_mlp_fusable(act)) {
        ig_mlp_gemm_avx2(a, m, k, packed, n, bias, c, alpha, act, act_alpha);
        return 0;
    }
#endif

    (void) a; (void) m; (void) k; (void) packed; (void) n; (void) bias;
    (void) c; (void) alpha; (void) act; (void) act_alpha;

    return -1;
}


static float *
ig_mlp_cpu_alloc(size_t floats)
{
    void  *p;

    if (posix_memalign(&p, 64, (floats ? floats : 1) * sizeof(float)) != 0) {
        return NULL;
    }

    return p;
}


/*
 * The packed path takes every GEMM of the plan, or none: a plan with a
 * Gemm whose C is an activation runs with OpenBLAS throughout, as do
 * CPUs without AVX2/FMA and IG_MLP_CPU_GEMM=blas.
 */
static int
ig_mlp_cpu_prepack(ig_mlp_cpu_t *m)
{
    size_t                i, np;
    const char           *e;
    const ig_mlp_plan_t  *plan;
    ig_mlp_step_t        *s;

    plan = m->plan;

    e = getenv("IG_MLP_CPU_GEMM");
    if ((e != NULL && strcmp(e, "blas") == 0) || !ig_mlp_cpu_packed_ok()) {
        return 0;
    }

    for (i = 0; i < plan->nsteps; i++) {
        s = &plan->steps[i];
        if (s->op == IG_MLP_GEMM
            && (s->c_slot >= 0 || s->k == 0 || s->n == 0
                || s->k > IG_MLP_CPU_SLOT_MAX || s->n > IG_MLP_CPU_SLOT_MAX))
        {
            return 0;
        }
    }

    m->nsteps = plan->nsteps;
    m->packed = calloc(plan->nsteps, sizeof(float *));
    m->pbias = calloc(plan->nsteps, sizeof(float *));
    if (m->packed == NULL || m->pbias == NULL) {
        return -1;
    }

    for (i = 0; i < plan->nsteps; i++) {
        s = &plan->steps[i];
        if (s->op != IG_MLP_GEMM) {
            continue;
        }

        np = (s->n + IG_MLP_NR - 1) / IG_MLP_NR * IG_MLP_NR;

        m->packed[i] = ig_mlp_cpu_alloc(np * s->k);
        if (m->packed[i] == NULL) {
            return -1;
        }

        ig_mlp_cpu_pack(m->packed[i], s->w, s->k, s->n, s->trans_b);

        if (s->bias != NULL && s->mult == 1) {
            m->pbias[i] = ig_mlp_cpu_alloc(np);
            if (m->pbias[i] == NULL) {
                return -1;
            }

            memset(m->pbias[i], 0, np * sizeof(float));
            memcpy(m->pbias[i], s->bias, s->n * sizeof(float));
        }
    }

    m->fast = 1;

    return 0;
}


int
ig_mlp_cpu_init(ig_mlp_cpu_t *m, const ig_mlp_plan_t *plan, char *err,
    size_t errlen)
{
    /* a pass keeps every buffer under IG_MLP_CPU_SLOT_MAX floats, so
     * BLAS sizes fit an int, and all of them under ARENA_MAX */
    size_t  i, maxrow = 1, sum = 1, macs;

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

    m->slot_off = calloc(plan->nslots, sizeof(size_t));
    m->ws = calloc(IG_MLP_CPU_MAXT, sizeof(ig_mlp_cpu_ws_t));
    if (m->slot_off == NULL || m->ws == NULL) {
        snprintf(err, errlen, "onnx: out of memory");
        return -1;
    }

    m->per = 0;
    for (i = 2; i < plan->nslots; i++) {
        m->slot_off[i] = m->per;
        m->per += plan->slot_row[i];
    }

    if (ig_mlp_cpu_prepack(m) != 0) {
        snprintf(err, errlen, "onnx: out of memory for packed weights");
        return -1;
    }

    /* rows a thread must get, at least, before the rows are split */
    macs = 0;
    for (i = 0; i < plan->nsteps; i++) {
        if (plan->steps[i].op == IG_MLP_GEMM) {
            macs += plan->steps[i].mult * plan->steps[i].k * plan->steps[i].n;
        }
    }

    m->split_min = macs ? IG_MLP_CPU_SPLIT_MAC / macs + 1 : SIZE_MAX;
    if (m->split_min < IG_MLP_CPU_SPLIT_MIN) {
        m->split_min = IG_MLP_CPU_SPLIT_MIN;
    }

    /* the packed path runs blocks of IG_MLP_CPU_BLOCK rows at most */
    m->block = m->fast && m->chunk > IG_MLP_CPU_BLOCK ? IG_MLP_CPU_BLOCK
                                                      : m->chunk;

    if (ig_mlp_cpu_reserve(m, &m->ws[0], m->block < 64 ? m->block : 64, err,
                           errlen)
        != 0)
    {
        return -1;
    }

    return 0;
}


/* rows through one workspace, in passes of m->block rows */
static int
ig_mlp_cpu_rows(ig_mlp_cpu_t *m, ig_mlp_cpu_ws_t *w, int nt,
    const float *in, size_t rows, float *out, char *err, size_t errlen)
{
    size_t  n, nf, no;

    nf = m->plan->slot_row[IG_MLP_SLOT_IN];
    no = m->plan->slot_row[IG_MLP_SLOT_OUT];

    if (ig_mlp_cpu_reserve(m, w, rows < m->block ? rows : m->block, err,
                           errlen)
        != 0)
    {
        return -1;
    }

    while (rows) {
        n = rows < m->block ? rows : m->block;
        ig_mlp_cpu_pass(m, w, nt, in, n, out);
        in += n * nf;
        out += n * no;
        rows -= n;
    }

    return 0;
}


int
ig_mlp_cpu_run(ig_mlp_cpu_t *m, int threads, const float *in, size_t rows,
    float *out, char *err, size_t errlen)
{
    int         nt, t, rc;
    size_t      nf, no, per;
    char        terr[IG_MLP_CPU_MAXT][128];

    static int  blas_threads;

    nt = threads > 0 ? threads : 1;
    if (nt > IG_MLP_CPU_MAXT) {
        nt = IG_MLP_CPU_MAXT;
    }

    if (!m->fast) {
        /* OpenBLAS's thread count is process-wide; set it when it
         * changes */
        if (__atomic_load_n(&blas_threads, __ATOMIC_RELAXED) != nt) {
            openblas_set_num_threads(nt);
            __atomic_store_n(&blas_threads, nt, __ATOMIC_RELAXED);
        }

        return ig_mlp_cpu_rows(m, &m->ws[0], nt, in, rows, out, err, errlen);
    }

    /* packed: the rows split between threads, each with enough work to
     * pay for waking it (a few microseconds) */
    if ((size_t) nt > rows / m->split_min) {
        nt = (int) (rows / m->split_min);
    }

    if (nt <= 1) {
        return ig_mlp_cpu_rows(m, &m->ws[0], 1, in, rows, out, err, errlen);
    }

    nf = m->plan->slot_row[IG_MLP_SLOT_IN];
    no = m->plan->slot_row[IG_MLP_SLOT_OUT];

    /* whole tiles of 6 rows per thread where the rows allow */
    per = (rows + nt - 1) / nt;
    per = (per + 5) / 6 * 6;
    rc = 0;

    #pragma omp parallel for num_threads(nt) schedule(static, 1) \
        reduction(|: rc)
    for (t = 0; t < nt; t++) {
        size_t  r0 = (size_t) t * per, n;

        if (r0 < rows) {
            n = rows - r0 < per ? rows - r0 : per;
            if (ig_mlp_cpu_rows(m, &m->ws[t], 1, in + r0 * nf, n,
                                out + r0 * no, terr[t], sizeof(terr[t]))
                != 0)
            {
                rc |= 1 << t;
            }
        }
    }

    if (rc != 0) {
        for (t = 0; t < nt; t++) {
            if (rc & (1 << t)) {
                snprintf(err, errlen, "%s", terr[t]);
                break;
            }
        }

        return -1;
    }

    return 0;
}


void
ig_mlp_cpu_drop_packed(ig_mlp_cpu_t *m)
{
    size_t  i;

    for (i = 0; i < m->nsteps; i++) {
        if (m->packed != NULL) {
            free(m->packed[i]);
        }

        if (m->pbias != NULL) {
            free(m->pbias[i]);
        }
    }

    free(m->packed);
    free(m->pbias);
    m->packed = NULL;
    m->pbias = NULL;
    m->nsteps = 0;
    m->fast = 0;
    m->block = m->chunk;
}


void
ig_mlp_cpu_free(ig_mlp_cpu_t *m)
{
    size_t  i;

    if (m->ws != NULL) {
        for (i = 0; i < IG_MLP_CPU_MAXT; i++) {
            free(m->ws[i].arena);
            free(m->ws[i].ptr);
        }
    }

    ig_mlp_cpu_drop_packed(m);
    free(m->ws);
    free(m->slot_off);
}
