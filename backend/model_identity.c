
/*
 * Copyright (C) infergate authors
 *
 * Built-in models: identity, sleep and fail (see model_identity.h).
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_identity.h"


#define IG_BUILTIN_MAX_FEATURES  (1u << 20)
#define IG_BUILTIN_MAX_SLEEP_US  10000000


typedef enum {
    IG_BUILTIN_IDENTITY = 0,
    IG_BUILTIN_SLEEP,
    IG_BUILTIN_FAIL
} ig_builtin_kind_e;


typedef struct {
    ig_model_t         model;
    ig_builtin_kind_e  kind;
    unsigned long      sleep_us;
} ig_builtin_t;


static int
ig_builtin_predict(ig_model_t *m, ig_exec_t *ex, const float *in,
    size_t rows, float *out, char *err, size_t errlen)
{
    ig_builtin_t     *b = (ig_builtin_t *) m;
    struct timespec   ts;

    (void) ex;

    if (b->kind == IG_BUILTIN_FAIL) {
        snprintf(err, errlen, "builtin:fail model fails every batch");
        return -1;
    }

    if (b->kind == IG_BUILTIN_SLEEP) {
        ts.tv_sec = b->sleep_us / 1000000;
        ts.tv_nsec = (long) (b->sleep_us % 1000000) * 1000;
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
            /* the rest of it */
        }
    }

    memmove(out, in, rows * m->meta.nfeatures * sizeof(float));

    return 0;
}


static void
ig_builtin_free(ig_model_t *m)
{
    free(m);
}


static const ig_model_ops_t  ig_builtin_ops = {
    ig_builtin_predict,
    ig_builtin_free
};


int
ig_builtin_is(const char *path)
{
    return strncmp(path, IG_BUILTIN_PREFIX, sizeof(IG_BUILTIN_PREFIX) - 1)
           == 0;
}


static int
ig_builtin_num(const char **p, unsigned long max, unsigned long *v)
{
    char           *end;
    unsigned long   n;

    if (**p < '0' || **p > '9') {
        return -1;
    }

    errno = 0;
    n = strtoul(*p, &end, 10);
    if (errno || n > max) {
        return -1;
    }

    *v = n;
    *p = end;

    return 0;
}


ig_model_t *
ig_builtin_load(const char *spec, char *err, size_t errlen)
{
    const char         *p;
    unsigned long       n, us;
    ig_builtin_t       *b;
    ig_builtin_kind_e   kind;

    p = spec + sizeof(IG_BUILTIN_PREFIX) - 1;
    us = 0;

    if (strncmp(p, "identity:", 9) == 0) {
        kind = IG_BUILTIN_IDENTITY;
        p += 9;

    } else if (strncmp(p, "sleep:", 6) == 0) {
        kind = IG_BUILTIN_SLEEP;
        p += 6;

    } else if (strncmp(p, "fail:", 5) == 0) {
        kind = IG_BUILTIN_FAIL;
        p += 5;

    } else {
        snprintf(err, errlen, "\"%.64s\": unknown builtin model (identity:N, "
                 "sleep:N:US, fail:N)", spec);
        return NULL;
    }

    if (ig_builtin_num(&p, IG_BUILTIN_MAX_FEATURES, &n) != 0 || n == 0) {
        snprintf(err, errlen, "\"%.64s\": features must be 1..%u", spec,
                 IG_BUILTIN_MAX_FEATURES);
        return NULL;
    }

    if (kind == IG_BUILTIN_SLEEP) {
        if (*p++ != ':'
            || ig_builtin_num(&p, IG_BUILTIN_MAX_SLEEP_US, &us) != 0)
        {
            snprintf(err, errlen, "\"%.64s\": sleep needs :US (0..%d)", spec,
                     IG_BUILTIN_MAX_SLEEP_US);
            return NULL;
        }
    }

    /* a trailing newline is allowed: the spec may come from a file */
    while (*p == '\n' || *p == '\r' || *p == ' ') {
        p++;
    }

    if (*p != '\0') {
        snprintf(err, errlen, "\"%.64s\": trailing characters", spec);
        return NULL;
    }

    b = calloc(1, sizeof(ig_builtin_t));
    if (b == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    b->kind = kind;
    b->sleep_us = us;
    b->model.ops = &ig_builtin_ops;

    snprintf(b->model.meta.platform, sizeof(b->model.meta.platform),
             "builtin_%s", kind == IG_BUILTIN_IDENTITY ? "identity"
                           : kind == IG_BUILTIN_SLEEP ? "sleep" : "fail");

    snprintf(b->model.meta.input.name, IG_MODEL_NAME_MAX, "input");
    b->model.meta.input.dtype = IG_DT_FP32;
    b->model.meta.input.ndims = 2;
    b->model.meta.input.dims[0] = -1;
    b->model.meta.input.dims[1] = (int64_t) n;

    b->model.meta.output = b->model.meta.input;
    snprintf(b->model.meta.output.name, IG_MODEL_NAME_MAX, "output");

    b->model.meta.nfeatures = (uint32_t) n;
    b->model.meta.noutputs = (uint32_t) n;

    return &b->model;
}
