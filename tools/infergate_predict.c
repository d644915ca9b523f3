
/*
 * Copyright (C) infergate authors
 *
 * infergate-predict: runs a model file on raw FP32 rows, outside the
 * daemon, for the oracle tests and the backend benchmark.
 *
 *   infergate-predict [--device D] [--threads N] --meta MODEL
 *   infergate-predict [--device D] [--threads N] [--batch B] [--repeat R]
 *                     MODEL IN.f32 OUT.f32
 *
 * IN.f32 holds rows * nfeatures little-endian floats; OUT.f32 receives
 * rows * noutputs.  With --batch the rows go through predict B at a
 * time; the time per pass is printed to stderr as rows/s.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ig_clock.h"
#include "ig_model.h"


static void
usage(void)
{
    fprintf(stderr,
            "usage: infergate-predict [--device auto|cpu|cuda:N] "
            "[--threads N] --meta MODEL\n"
            "       infergate-predict [--device D] [--threads N] "
            "[--batch B] [--repeat R] MODEL IN.f32 OUT.f32\n");
    exit(2);
}


static void *
read_all(const char *path, size_t *len)
{
    long   size;
    FILE  *f;
    void  *data;

    f = fopen(path, "rb");
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        fprintf(stderr, "infergate-predict: %s: %s\n", path,
                strerror(errno));
        exit(1);
    }

    data = malloc(size ? (size_t) size : 1);
    if (data == NULL || fread(data, 1, (size_t) size, f) != (size_t) size) {
        fprintf(stderr, "infergate-predict: %s: cannot read\n", path);
        exit(1);
    }

    fclose(f);
    *len = (size_t) size;

    return data;
}


static void
print_desc(const char *what, const ig_tensor_desc_t *t)
{
    uint32_t  i;

    printf("  \"%s\": {\"name\": \"%s\", \"dtype\": %u, \"shape\": [",
           what, t->name, t->dtype);

    for (i = 0; i < t->ndims && i < IG_MODEL_MAX_DIMS; i++) {
        printf("%s%lld", i ? ", " : "", (long long) t->dims[i]);
    }

    printf("]}");
}



int
main(int argc, char **argv)
{
    int                     i, meta, threads, repeat, r;
    char                    err[512];
    FILE                   *f;
    float                  *in, *out;
    size_t                  len, rows, batch, done, n;
    double                  t0, best;
    const char             *device, *args[3];
    ig_exec_t              *ex;
    ig_model_t             *m;
    const ig_model_meta_t  *mm;

    device = "auto";
    threads = 0;
    meta = 0;
    batch = 0;
    repeat = 1;
    n = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
            device = argv[++i];
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            batch = (size_t) strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
            repeat = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--meta") == 0) {
            meta = 1;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            usage();
        } else if (n < 3) {
            args[n++] = argv[i];
        } else {
            usage();
        }
    }

    if ((meta && n != 1) || (!meta && n != 3) || repeat < 1) {
        usage();
    }

    ex = ig_exec_create(device, threads, err, sizeof(err));
    if (ex == NULL) {
        fprintf(stderr, "infergate-predict: %s\n", err);
        return 1;
    }

    m = ig_model_load(args[0], ex, err, sizeof(err));
    if (m == NULL) {
        fprintf(stderr, "infergate-predict: %s\n", err);
        ig_exec_destroy(ex);        /* leak-free for sanitizer runs */
        return 1;
    }

    mm = &m->meta;

    if (meta) {
        printf("{\n  \"platform\": \"%s\",\n  \"device\": \"%s\",\n"
               "  \"nfeatures\": %u,\n  \"noutputs\": %u,\n",
               mm->platform, ex->name, mm->nfeatures, mm->noutputs);
        print_desc("input", &mm->input);
        printf(",\n");
        print_desc("output", &mm->output);
        printf("\n}\n");
        ig_model_free(m);
        ig_exec_destroy(ex);
        return 0;
    }

    in = read_all(args[1], &len);

    if (mm->nfeatures == 0 || len % (sizeof(float) * mm->nfeatures)) {
        fprintf(stderr, "infergate-predict: %s: %zu bytes is not a whole "
                "number of %u-float rows\n", args[1], len, mm->nfeatures);
        return 1;
    }

    rows = len / sizeof(float) / mm->nfeatures;
    if (batch == 0 || batch > rows) {
        batch = rows ? rows : 1;
    }

    out = calloc(rows * mm->noutputs + 1, sizeof(float));
    if (out == NULL) {
        fprintf(stderr, "infergate-predict: out of memory\n");
        return 1;
    }

    best = 0;

    for (r = 0; r < repeat; r++) {
        t0 = ig_clock_s();

        for (done = 0; done < rows; done += n) {
            n = (rows - done < batch) ? rows - done : batch;

            if (ig_model_predict(m, ex, in + done * mm->nfeatures, n,
                                 out + done * mm->noutputs, err, sizeof(err))
                != 0)
            {
                fprintf(stderr, "infergate-predict: %s\n", err);
                return 1;
            }
        }

        t0 = ig_clock_s() - t0;
        if (r == 0 || t0 < best) {
            best = t0;
        }
    }

    fprintf(stderr, "infergate-predict: %zu rows, batch %zu, %s, "
            "%.0f rows/s\n", rows, batch, ex->name,
            best > 0 ? rows / best : 0.0);

    f = fopen(args[2], "wb");
    if (f == NULL
        || fwrite(out, sizeof(float), rows * mm->noutputs, f)
           != rows * mm->noutputs
        || fclose(f) != 0)
    {
        fprintf(stderr, "infergate-predict: %s: cannot write\n", args[2]);
        return 1;
    }

    free(in);
    free(out);
    ig_model_free(m);
    ig_exec_destroy(ex);

    return 0;
}
