/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the XGBoost JSON loader: any input either loads
 * (and then predicts a few rows, including NaN, without reading outside
 * the model or the row) or gives an error message; never a crash.  The
 * loader is included whole, CPU only, so `make fuzz` builds it like the
 * lib/ targets.
 *
 * clang -g -O1 -fsanitize=fuzzer,address,undefined -Ilib \
 *     tests/fuzz/fuzz_xgb.c -lyajl -lm
 * ./a.out -max_total_time=30 tests/fuzz/corpus/xgb
 */


#define IG_NO_CUDA 1

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/model_xgb.c"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         err[256];
    float       *in, *out;
    size_t       rows, i;
    ig_exec_t    ex;
    ig_model_t  *m;

    memset(&ex, 0, sizeof(ex));
    ex.threads = 1;
    err[0] = '\0';

    m = ig_xgb_load(data, size, &ex, err, sizeof(err));
    if (m == NULL) {
        if (err[0] == '\0') {
            abort();                       /* a refusal always says why */
        }
        return 0;
    }

    /* 9 rows: one full lane of rows and a one-row tail */
    rows = 9;
    if (m->meta.nfeatures > 4096 || m->meta.noutputs > 4096) {
        ig_model_free(m);
        return 0;
    }

    in = malloc(rows * m->meta.nfeatures * sizeof(float));
    out = malloc(rows * m->meta.noutputs * sizeof(float));

    for (i = 0; i < rows * m->meta.nfeatures; i++) {
        in[i] = (i % 3 == 0) ? NAN : (float) i - 10.0f;
    }

    if (ig_model_predict(m, &ex, in, rows, out, err, sizeof(err)) != 0) {
        abort();
    }

    free(in);
    free(out);
    ig_model_free(m);

    return 0;
}
