/*
 * Copyright (C) infergate authors
 *
 * Unit tests of backend/mlp_cpu.c: the packed AVX2/FMA SGEMM against a
 * naive GEMM in double (rows 1..17, k and n off the 8/16 grid, the
 * small-n dot path, one row against four panels, unaligned a and c,
 * transposed w, alpha, bias, Relu with NaN, LeakyRelu; nothing written
 * past c), then the executor on a hand-built plan (Gemm + bias + Relu,
 * Gemm, Softmax) with 1, 2 and 3 threads, rows split and not, against
 * the same plan run on OpenBLAS.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ig_act.h"
#include "ig_mlp_cpu.h"


#define GUARD  64


static float
frand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (float) ((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}


static void
naive(const float *a, size_t m, size_t k, const float *w, size_t n,
    int trans, const float *bias, float alpha, int act, float act_alpha,
    double *c)
{
    size_t  i, j, kk;
    double  s;

    for (i = 0; i < m; i++) {
        for (j = 0; j < n; j++) {
            s = 0.0;
            for (kk = 0; kk < k; kk++) {
                s += (double) a[i * k + kk]
                     * (trans ? w[j * k + kk] : w[kk * n + j]);
            }

            s = s * alpha + (bias ? bias[j] : 0.0);
            c[i * n + j] = ig_act_apply(act, act_alpha, (float) s);
        }
    }
}


static void
test_gemm_sizes(void **state)
{
    static const size_t  ks[] = { 1, 3, 7, 8, 9, 17, 31, 64, 100 };
    static const size_t  ns[] = { 1, 2, 3, 4, 5, 8, 15, 16, 17, 33, 40,
                                    64, 67, 130 };
    static const int     acts[] = { IG_ACT_NONE, IG_ACT_RELU,
                                    IG_ACT_LEAKY_RELU };

    int        trans, ai, hb;
    float     *abuf, *w, *pk = NULL, *bias = NULL, *cbuf, *a, *c, alpha;
    double    *want, err;
    size_t     m, ki, ni, k, n, i, np, checked;
    unsigned   seed = 1;

    (void) state;

    if (!ig_mlp_cpu_packed_ok()) {
        skip();
    }

    abuf = malloc((17 * 100 + 1) * sizeof(float));
    w = malloc(100 * 130 * sizeof(float));
    assert_int_equal(posix_memalign((void **) &pk, 64,
                                    144 * 100 * sizeof(float)), 0);
    assert_int_equal(posix_memalign((void **) &bias, 64,
                                    144 * sizeof(float)), 0);
    cbuf = malloc((17 * 130 + 1 + GUARD) * sizeof(float));
    want = malloc(17 * 130 * sizeof(double));
    assert_non_null(abuf);
    assert_non_null(w);
    assert_non_null(cbuf);
    assert_non_null(want);

    /* both a and c one float off a 32-byte boundary */
    a = abuf + 1;
    c = cbuf + 1;
    checked = 0;

    for (m = 1; m <= 17; m++) {
        for (ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
            for (ni = 0; ni < sizeof(ns) / sizeof(ns[0]); ni++) {
                k = ks[ki];
                n = ns[ni];
                np = (n + 15) / 16 * 16;

                for (i = 0; i < m * k; i++) {
                    a[i] = frand(&seed);
                }
                for (i = 0; i < k * n; i++) {
                    w[i] = frand(&seed);
                }
                memset(bias, 0, np * sizeof(float));
                for (i = 0; i < n; i++) {
                    bias[i] = frand(&seed);
                }

                for (trans = 0; trans < 2; trans++) {
                for (ai = 0; ai < 3; ai++) {
                for (hb = 0; hb < 2; hb++) {
                    alpha = (ai == 1) ? 0.5f : 1.0f;

                    ig_mlp_cpu_pack(pk, w, k, n, trans);
                    naive(a, m, k, w, n, trans, hb ? bias : NULL, alpha,
                          acts[ai], 0.1f, want);

                    for (i = 0; i < m * n + GUARD; i++) {
                        c[i] = 12345.0f;
                    }

                    assert_int_equal(ig_mlp_cpu_gemm(a, m, k, pk, n,
                                                     hb ? bias : NULL, c,
                                                     alpha, acts[ai], 0.1f),
                                     0);

                    for (i = 0; i < m * n; i++) {
                        err = fabs(c[i] - want[i]);
                        if (err > 1e-4 * (1.0 + fabs(want[i]))) {
                            fail_msg("m %zu k %zu n %zu trans %d act %d "
                                     "bias %d: c[%zu] %g, want %g", m, k, n,
                                     trans, acts[ai], hb, i, c[i], want[i]);
                        }
                    }

                    for (i = m * n; i < m * n + GUARD; i++) {
                        if (c[i] != 12345.0f) {
                            fail_msg("m %zu k %zu n %zu: wrote c[%zu] past "
                                     "the end", m, k, n, i);
                        }
                    }

                    checked++;
                }
                }
                }
            }
        }
    }

    assert_true(checked == 17 * 9 * 14 * 12);

    free(abuf);
    free(w);
    free(pk);
    free(bias);
    free(cbuf);
    free(want);
}


static void
test_gemm_relu_nan(void **state)
{
    size_t  n, j;
    float   a[2] = { NAN, 1.0f }, w[2 * 24], *pk = NULL, c[2 * 24];

    (void) state;

    if (!ig_mlp_cpu_packed_ok()) {
        skip();
    }

    assert_int_equal(posix_memalign((void **) &pk, 64,
                                    32 * sizeof(float)), 0);

    /* a row of NaN stays NaN through Relu, as torch.relu; the other row
     * is clamped at 0; both on the panel path (n 24) and the dot path */
    for (n = 2; n <= 24; n += 22) {
        for (j = 0; j < n; j++) {
            w[j] = -1.0f;
        }

        ig_mlp_cpu_pack(pk, w, 1, n, 0);
        assert_int_equal(ig_mlp_cpu_gemm(a, 2, 1, pk, n, NULL, c, 1.0f,
                                         IG_ACT_RELU, 0.0f), 0);

        for (j = 0; j < n; j++) {
            assert_true(isnan(c[j]));
            assert_true(c[n + j] == 0.0f);
        }
    }

    /* what the kernel does not fuse is refused, not computed wrong */
    assert_int_equal(ig_mlp_cpu_gemm(a, 2, 1, pk, 2, NULL, c, 1.0f,
                                     IG_ACT_SIGMOID, 0.0f), -1);

    free(pk);
}


/*
 * in [rows, 20] -> Gemm 37 + bias, Relu -> Gemm 3 (transB) + bias
 * -> Softmax
 */
static void
run_plan(int blas, int threads, const float *in, size_t rows, float *out)
{
    char            err[256];
    size_t          slot_row[3] = { 20, 3, 37 };
    ig_mlp_plan_t   plan;
    ig_mlp_step_t   steps[3];
    ig_mlp_cpu_t    m;

    static float    w1[20 * 37], b1[37], w2[3 * 37], b2[3];
    static int      ready;
    unsigned        seed = 7;
    size_t          i;

    if (!ready) {
        for (i = 0; i < 20 * 37; i++) {
            w1[i] = frand(&seed);
        }
        for (i = 0; i < 37; i++) {
            b1[i] = frand(&seed);
        }
        for (i = 0; i < 3 * 37; i++) {
            w2[i] = frand(&seed);
        }
        for (i = 0; i < 3; i++) {
            b2[i] = frand(&seed);
        }
        ready = 1;
    }

    memset(steps, 0, sizeof(steps));

    steps[0].op = IG_MLP_GEMM;
    steps[0].act = IG_ACT_RELU;
    steps[0].in = IG_MLP_SLOT_IN;
    steps[0].out = 2;
    steps[0].row_in = 20;
    steps[0].row_out = 37;
    steps[0].mult = 1;
    steps[0].k = 20;
    steps[0].n = 37;
    steps[0].alpha = 1.0f;
    steps[0].c_slot = -1;
    steps[0].w = w1;
    steps[0].bias = b1;

    steps[1] = steps[0];
    steps[1].act = IG_ACT_NONE;
    steps[1].in = 2;
    steps[1].out = IG_MLP_SLOT_OUT;
    steps[1].row_in = 37;
    steps[1].row_out = 3;
    steps[1].k = 37;
    steps[1].n = 3;
    steps[1].trans_b = 1;
    steps[1].w = w2;
    steps[1].bias = b2;

    steps[2].op = IG_MLP_SOFTMAX;
    steps[2].in = IG_MLP_SLOT_OUT;
    steps[2].out = IG_MLP_SLOT_OUT;
    steps[2].row_in = 3;
    steps[2].row_out = 3;
    steps[2].c_slot = -1;
    steps[2].outer = 1;
    steps[2].dim = 3;
    steps[2].inner = 1;

    plan.nsteps = 3;
    plan.steps = steps;
    plan.nslots = 3;
    plan.slot_row = slot_row;

    if (blas) {
        setenv("IG_MLP_CPU_GEMM", "blas", 1);
    }

    assert_int_equal(ig_mlp_cpu_init(&m, &plan, err, sizeof(err)), 0);
    unsetenv("IG_MLP_CPU_GEMM");

    assert_int_equal(m.fast, !blas && ig_mlp_cpu_packed_ok());

    assert_int_equal(ig_mlp_cpu_run(&m, threads, in, rows, out, err,
                                    sizeof(err)), 0);
    ig_mlp_cpu_free(&m);
}


static void
test_plan_threads(void **state)
{
    /* 851 multiply-adds a row: the rows split from 309 a thread */
    static const size_t  nrows[] = { 0, 1, 5, 6, 7, 31, 32, 33, 64, 65,
                                     100, 129, 617, 618, 619, 927, 1000 };

    int        t;
    float     *in, *want, *got;
    size_t     r, i, rows;
    unsigned   seed = 3;

    (void) state;

    in = malloc(1000 * 20 * sizeof(float));
    want = malloc(1000 * 3 * sizeof(float));
    got = malloc((1000 * 3 + GUARD) * sizeof(float));
    assert_non_null(in);
    assert_non_null(want);
    assert_non_null(got);

    for (i = 0; i < 1000 * 20; i++) {
        in[i] = frand(&seed) * 3.0f;
    }

    for (r = 0; r < sizeof(nrows) / sizeof(nrows[0]); r++) {
        rows = nrows[r];
        run_plan(1, 1, in, rows, want);

        for (t = 1; t <= 3; t++) {
            for (i = 0; i < rows * 3 + GUARD; i++) {
                got[i] = -1.0f;
            }

            run_plan(0, t, in, rows, got);

            for (i = 0; i < rows * 3; i++) {
                if (fabsf(got[i] - want[i]) > 1e-5f) {
                    fail_msg("rows %zu threads %d: out[%zu] %g, OpenBLAS "
                             "%g", rows, t, i, got[i], want[i]);
                }
            }

            for (i = rows * 3; i < rows * 3 + GUARD; i++) {
                assert_true(got[i] == -1.0f);
            }
        }
    }

    free(in);
    free(want);
    free(got);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_gemm_sizes),
        cmocka_unit_test(test_gemm_relu_nan),
        cmocka_unit_test(test_plan_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
