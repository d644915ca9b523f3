
/*
 * Copyright (C) infergate authors
 *
 * Where models run (CPU or a CUDA device) and loading by content.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ig_cuda.h"
#include "ig_model.h"


#define IG_MODEL_FILE_MAX  (1024 * 1024 * 1024)


ig_exec_t *
ig_exec_create(const char *device, int threads, char *err, size_t errlen)
{
    int         want_cuda, cuda_device, ndevices;
    char       *end;
    long        n;
    ig_exec_t  *ex;

    want_cuda = 0;
    cuda_device = 0;

    if (device == NULL || strcmp(device, "auto") == 0) {
        want_cuda = -1;                          /* if there is one */

    } else if (strcmp(device, "cpu") == 0) {
        want_cuda = 0;

    } else if (strncmp(device, "cuda:", 5) == 0) {
        errno = 0;
        n = strtol(device + 5, &end, 10);
        if (errno || end == device + 5 || *end || n < 0 || n > 1023) {
            snprintf(err, errlen, "--device: bad CUDA device \"%s\"",
                     device);
            return NULL;
        }

        want_cuda = 1;
        cuda_device = (int) n;

    } else {
        snprintf(err, errlen, "--device: \"%s\" is not auto, cpu or cuda:N",
                 device);
        return NULL;
    }

    ex = calloc(1, sizeof(ig_exec_t));
    if (ex == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (threads <= 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = (n > 0) ? (int) n : 1;
    }

    ex->threads = threads;
    snprintf(ex->name, sizeof(ex->name), "cpu");

    if (want_cuda == 0) {
        return ex;
    }

#ifdef IG_NO_CUDA
    ndevices = 0;
    (void) cuda_device;

    if (want_cuda == 1) {
        snprintf(err, errlen, "--device %s: built without CUDA", device);
        free(ex);
        return NULL;
    }

#else
    /* libinfergate-cuda.so is loaded here, never for --device cpu */
    ndevices = 0;

    if (ig_cuda_exec_init(ex, device, want_cuda, cuda_device, err, errlen)
        != 0)
    {
        free(ex);
        return NULL;
    }
#endif

    (void) ndevices;

    return ex;
}


void
ig_exec_destroy(ig_exec_t *ex)
{
    free(ex);
}


/* Loaders not linked in answer with an error that says so. */

__attribute__((weak)) ig_model_t *
ig_xgb_load(const uint8_t *data, size_t len, ig_exec_t *ex, char *err,
    size_t errlen)
{
    (void) data; (void) len; (void) ex;
    snprintf(err, errlen, "XGBoost models are not supported by this build");
    return NULL;
}


__attribute__((weak)) ig_model_t *
ig_onnx_load(const uint8_t *data, size_t len, ig_exec_t *ex, char *err,
    size_t errlen)
{
    (void) data; (void) len; (void) ex;
    snprintf(err, errlen, "ONNX models are not supported by this build");
    return NULL;
}


ig_model_t *
ig_model_load_mem(const uint8_t *data, size_t len, ig_exec_t *ex, char *err,
    size_t errlen)
{
    size_t  i;

    if (len == 0 || len > IG_MODEL_FILE_MAX) {
        snprintf(err, errlen, "%s", len ? "larger than 1 GiB" : "empty");
        return NULL;
    }

    for (i = 0; i < len; i++) {
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\r'
            && data[i] != '\n')
        {
            break;
        }
    }

    if (i < len && data[i] == '{') {
        return ig_xgb_load(data, len, ex, err, errlen);
    }

    return ig_onnx_load(data, len, ex, err, errlen);
}


ig_model_t *
ig_model_load(const char *path, ig_exec_t *ex, char *err, size_t errlen)
{
    long         size;
    FILE        *f;
    uint8_t     *data;
    ig_model_t  *m;

    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }

    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0
        || fseek(f, 0, SEEK_SET) != 0)
    {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        fclose(f);
        return NULL;
    }

    if (size == 0 || size > IG_MODEL_FILE_MAX) {
        snprintf(err, errlen, "%s: %s", path,
                 size ? "larger than 1 GiB" : "empty file");
        fclose(f);
        return NULL;
    }

    data = malloc((size_t) size + 1);
    if (data == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        fclose(f);
        return NULL;
    }

    if (fread(data, 1, (size_t) size, f) != (size_t) size) {
        snprintf(err, errlen, "%s: short read", path);
        free(data);
        fclose(f);
        return NULL;
    }

    fclose(f);
    data[size] = '\0';

    m = ig_model_load_mem(data, (size_t) size, ex, err, errlen);

    free(data);

    return m;
}
