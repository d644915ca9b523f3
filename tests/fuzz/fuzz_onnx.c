
/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the ONNX loader: any input either loads (and
 * then predicts a few rows without reading outside the model, the rows
 * or its buffers) or gives an error message; never a crash.  The loader
 * and its CPU executor (mlp_cpu.c) are included whole, CPU only; it
 * needs the protoc-c code, so the Makefile has a rule of its own for
 * this target.
 */


#define IG_NO_CUDA 1

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../backend/mlp_cpu.c"
#include "../../backend/model_onnx.c"
#include "onnx.pb-c.c"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char         err[256];
    float       *in, *out;
    size_t       rows, i, nf, no;
    ig_exec_t    ex;
    ig_model_t  *m;

    memset(&ex, 0, sizeof(ex));
    ex.threads = 1;
    err[0] = '\0';

    m = ig_onnx_load(data, size, &ex, err, sizeof(err));
    if (m == NULL) {
        if (err[0] == '\0') {
            abort();                    /* a refusal must say why */
        }

        return 0;
    }

    nf = m->meta.nfeatures;
    no = m->meta.noutputs;
    rows = 3;

    if (nf == 0 || no == 0 || nf > (1 << 20) || no > (1 << 20)) {
        ig_model_free(m);
        return 0;
    }

    in = malloc(rows * nf * sizeof(float));
    out = malloc(rows * no * sizeof(float));

    if (in && out) {
        for (i = 0; i < rows * nf; i++) {
            in[i] = (float) ((int) (i % 7) - 3) * 0.5f;
        }

        if (ig_model_predict(m, &ex, in, rows, out, err, sizeof(err)) != 0
            && err[0] == '\0')
        {
            abort();
        }
    }

    free(in);
    free(out);
    ig_model_free(m);

    return 0;
}
