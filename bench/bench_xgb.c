/*
 * Copyright (C) infergate authors
 *
 * bench-xgb: rows/s of infergate's XGBoost predictor against
 * libxgboost's own (C API, in-place prediction from a dense array,
 * XGBoosterPredictFromDense) on the same model, the same rows and the
 * same thread count, at several batch sizes.  Prints a table and checks
 * that both give the same predictions.
 *
 *   bench-xgb [--threads N] [--seconds S] [--batches 1,16,256,4096] MODEL
 *
 * Each batch size gets S seconds per predictor (default 2), in 10
 * alternating slices; the best slice of each is reported.
 */


#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xgboost/c_api.h>

#include "ig_clock.h"
#include "ig_model.h"


#define BENCH_ROWS    65536                /* distinct rows cycled over */
#define BENCH_ROUNDS  10                   /* alternating time slices   */


static void
xgb_check(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "bench-xgb: %s: %s\n", what, XGBGetLastError());
        exit(1);
    }
}


/* libxgboost: one in-place prediction of rows [in, in + n) */
static const float *
xgb_predict(BoosterHandle b, const float *in, size_t n, uint32_t nf,
    size_t *nout)
{
    char              arr[256];
    bst_ulong         dim;
    const float      *res;
    const bst_ulong  *shape;

    snprintf(arr, sizeof(arr), "{\"data\": [%zu, true], \"shape\": [%zu, "
             "%u], \"typestr\": \"<f4\", \"version\": 3}",
             (size_t) (uintptr_t) in, n, nf);

    xgb_check(XGBoosterPredictFromDense(b, arr,
                  "{\"type\": 0, \"training\": false, \"iteration_begin\": 0,"
                  " \"iteration_end\": 0, \"strict_shape\": false,"
                  " \"missing\": NaN, \"cache_id\": 0}", NULL, &shape, &dim, &res),
              "XGBoosterPredictFromDense");

    *nout = (dim >= 1) ? (size_t) shape[0] : 0;
    if (dim == 2) {
        *nout *= shape[1];
    }

    return res;
}


int
main(int argc, char **argv)
{
    int                  i, threads, nb, k, round;
    char                 err[512], nth[32], *list, *tok;
    float               *in, *ours;
    size_t               b, rows, done, n, nout, batches[16];
    double               seconds, t0, el, r_ours, r_xgb, maxdiff;
    uint64_t             seed;
    const char          *path;
    const float         *ref;
    ig_exec_t           *ex;
    ig_model_t          *m;
    BoosterHandle        bst;
    const ig_model_meta_t  *mm;

    threads = 2;
    seconds = 2.0;
    path = NULL;
    list = strdup("1,16,256,4096");

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc) {
            free(list);
            list = strdup(argv[++i]);
        } else if (argv[i][0] != '-' && path == NULL) {
            path = argv[i];
        } else {
            fprintf(stderr, "usage: bench-xgb [--threads N] [--seconds S] "
                    "[--batches 1,16,256,4096] MODEL.json\n");
            return 2;
        }
    }

    if (path == NULL || threads < 1) {
        fprintf(stderr, "usage: bench-xgb [--threads N] [--seconds S] "
                "[--batches 1,16,256,4096] MODEL.json\n");
        return 2;
    }

    nb = 0;
    for (tok = strtok(list, ","); tok && nb < 16; tok = strtok(NULL, ",")) {
        batches[nb] = (size_t) strtoull(tok, NULL, 10);
        if (batches[nb] == 0 || batches[nb] > BENCH_ROWS) {
            fprintf(stderr, "bench-xgb: bad batch \"%s\"\n", tok);
            return 2;
        }
        nb++;
    }

    ex = ig_exec_create("cpu", threads, err, sizeof(err));
    if (ex == NULL) {
        fprintf(stderr, "bench-xgb: %s\n", err);
        return 1;
    }

    m = ig_model_load(path, ex, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "bench-xgb: %s\n", err);
        return 1;
    }

    mm = &m->meta;

    xgb_check(XGBoosterCreate(NULL, 0, &bst), "XGBoosterCreate");
    xgb_check(XGBoosterLoadModel(bst, path), "XGBoosterLoadModel");
    snprintf(nth, sizeof(nth), "%d", threads);
    xgb_check(XGBoosterSetParam(bst, "nthread", nth), "nthread");

    /* fixed-seed rows, 5% NaN, as the model was trained on */
    rows = BENCH_ROWS;
    in = malloc(rows * mm->nfeatures * sizeof(float));
    ours = malloc(rows * mm->noutputs * sizeof(float));
    if (in == NULL || ours == NULL) {
        fprintf(stderr, "bench-xgb: out of memory\n");
        return 1;
    }

    seed = 88172645463325252ull;
    for (b = 0; b < rows * mm->nfeatures; b++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        in[b] = (seed % 100 < 5) ? NAN
                : (float) ((double) (seed >> 11) / 9007199254740992.0 * 6.0
                           - 3.0);
    }

    /* the same predictions first, or the timings mean nothing */
    if (ig_model_predict(m, ex, in, rows, ours, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench-xgb: %s\n", err);
        return 1;
    }

    ref = xgb_predict(bst, in, rows, mm->nfeatures, &nout);
    if (nout != rows * mm->noutputs) {
        fprintf(stderr, "bench-xgb: libxgboost gave %zu outputs, not %zu\n",
                nout, rows * mm->noutputs);
        return 1;
    }

    maxdiff = 0;
    for (b = 0; b < nout; b++) {
        el = fabs((double) ours[b] - ref[b]);
        maxdiff = (el > maxdiff) ? el : maxdiff;
    }

    printf("model %s: %u features, %u outputs; %d thread(s); "
           "max |ours - libxgboost| = %.3g over %zu rows\n",
           path, mm->nfeatures, mm->noutputs, threads, maxdiff, rows);
    printf("%8s %16s %16s %8s\n", "batch", "infergate rows/s",
           "libxgboost rows/s", "ratio");

    for (k = 0; k < nb; k++) {
        b = batches[k];
        r_ours = 0;
        r_xgb = 0;

        /*
         * Alternating short slices, best of each: on a shared, noisy
         * machine the best slice is the least disturbed one, and both
         * predictors see the same disturbances.
         */
        for (round = 0; round < BENCH_ROUNDS; round++) {
            done = 0;
            t0 = ig_clock_s();
            do {
                for (i = 0; i < 16; i++) {
                    n = (done % rows) + b <= rows ? done % rows : 0;
                    if (ig_model_predict(m, ex, in + n * mm->nfeatures, b,
                                         ours + n * mm->noutputs, err,
                                         sizeof(err)) != 0)
                    {
                        fprintf(stderr, "bench-xgb: %s\n", err);
                        return 1;
                    }
                    done += b;
                }
                el = ig_clock_s() - t0;
            } while (el < seconds / BENCH_ROUNDS);
            r_ours = (done / el > r_ours) ? done / el : r_ours;

            done = 0;
            t0 = ig_clock_s();
            do {
                for (i = 0; i < 16; i++) {
                    n = (done % rows) + b <= rows ? done % rows : 0;
                    (void) xgb_predict(bst, in + n * mm->nfeatures, b,
                                       mm->nfeatures, &nout);
                    done += b;
                }
                el = ig_clock_s() - t0;
            } while (el < seconds / BENCH_ROUNDS);
            r_xgb = (done / el > r_xgb) ? done / el : r_xgb;
        }

        printf("%8zu %16.0f %16.0f %7.1fx\n", b, r_ours, r_xgb,
               r_ours / r_xgb);
        fflush(stdout);
    }

    XGBoosterFree(bst);
    ig_model_free(m);
    ig_exec_destroy(ex);
    free(in);
    free(ours);
    free(list);

    return maxdiff <= 1e-6 ? 0 : 1;
}
