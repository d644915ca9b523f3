
/*
 * Copyright (C) infergate authors
 *
 * Loads build/libinfergate-cuda.so on demand (see ig_cuda.h) and
 * provides the C entry points of ig_mlp_cuda.h and ig_tree_cuda.h over
 * its table, so the model loaders call them as before.  Nothing here
 * links CUDA: a binary that never asks for a GPU never maps it.
 */


#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ig_cuda.h"


static pthread_once_t         ig_cuda_once = PTHREAD_ONCE_INIT;
static const ig_cuda_api_t   *ig_cuda_table;
static char                   ig_cuda_error[256];


static void *
ig_cuda_open(const char *path, char *why, size_t len)
{
    void        *h;
    const char  *e;

    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);

    if (h == NULL) {
        e = dlerror();
        snprintf(why, len, "%.250s", e ? e : path);
    }

    return h;
}


static void
ig_cuda_init(void)
{
    void            *h;
    ssize_t          n;
    char            *slash;
    const char      *env;
    ig_cuda_api_pt   get;
    char             self[PATH_MAX], path[PATH_MAX + sizeof(IG_CUDA_LIB)];
    const ig_cuda_api_t  *api;

    h = NULL;
    env = getenv("IG_CUDA_LIB");

    if (env && env[0]) {
        h = ig_cuda_open(env, ig_cuda_error, sizeof(ig_cuda_error));

    } else {
        n = readlink("/proc/self/exe", self, sizeof(self) - 1);

        if (n > 0) {
            self[n] = '\0';
            slash = strrchr(self, '/');

            if (slash) {
                slash[1] = '\0';
                snprintf(path, sizeof(path), "%s%s", self, IG_CUDA_LIB);

                if (access(path, F_OK) == 0) {
                    h = ig_cuda_open(path, ig_cuda_error,
                                     sizeof(ig_cuda_error));
                }
            }
        }

        if (h == NULL && ig_cuda_error[0] == '\0') {
            h = ig_cuda_open(IG_CUDA_LIB, ig_cuda_error,
                             sizeof(ig_cuda_error));
        }
    }

    if (h == NULL) {
        return;
    }

    get = (ig_cuda_api_pt) dlsym(h, IG_CUDA_API_SYMBOL);
    api = get ? get() : NULL;

    if (api == NULL || api->version != IG_CUDA_API_VERSION
        || api->size != sizeof(ig_cuda_api_t))
    {
        /* the reason first: the device name keeps 100 bytes of it */
        snprintf(ig_cuda_error, sizeof(ig_cuda_error), "API version %u, "
                 "want %u: not a matching " IG_CUDA_LIB " (%.150s)",
                 api ? api->version : 0, IG_CUDA_API_VERSION,
                 env && env[0] ? env : IG_CUDA_LIB);
        dlclose(h);
        return;
    }

    /* kept open for the process's life */
    ig_cuda_table = api;
}


const ig_cuda_api_t *
ig_cuda_load(char *err, size_t errlen)
{
    pthread_once(&ig_cuda_once, ig_cuda_init);

    if (ig_cuda_table == NULL) {
        snprintf(err, errlen, "%s", ig_cuda_error);
    }

    return ig_cuda_table;
}


const ig_cuda_api_t *
ig_cuda_loaded(void)
{
    return __atomic_load_n(&ig_cuda_table, __ATOMIC_ACQUIRE);
}


int
ig_cuda_exec_init(ig_exec_t *ex, const char *device, int want,
    int cuda_device, char *err, size_t errlen)
{
    int                   rc, ndevices;
    char                  e[256], name[128];
    const ig_cuda_api_t  *api;

    ndevices = 0;
    name[0] = '\0';

    api = ig_cuda_load(e, sizeof(e));

    rc = (api == NULL) ? IG_CUDA_NO_CUDA
                       : api->exec_open(cuda_device, &ndevices, name,
                                        sizeof(name), e, sizeof(e));

    switch (rc) {

    case IG_CUDA_OK:
        ex->use_cuda = 1;
        ex->cuda_device = cuda_device;
        snprintf(ex->name, sizeof(ex->name), "cuda:%d (%.100s)", cuda_device,
                 name);
        return 0;

    case IG_CUDA_NO_DEVICE:
        if (want == 1) {
            snprintf(err, errlen, "--device %s: %d CUDA device(s)", device,
                     ndevices);
            return -1;
        }

        return 0;

    case IG_CUDA_DEV_FAILED:
        if (want == 1) {
            snprintf(err, errlen, "--device %s: %s", device, e);
            return -1;
        }

        snprintf(ex->name, sizeof(ex->name), "cpu (CUDA: %.100s)", e);
        return 0;

    default:
        if (want == 1) {
            snprintf(err, errlen, "--device %s: %s", device, e);
            return -1;
        }

        /* auto: the reason goes into the name the daemon logs */
        snprintf(ex->name, sizeof(ex->name), "cpu (no CUDA: %.100s)", e);
        return 0;
    }
}


int
ig_exec_gpu_mem(const ig_exec_t *ex, uint64_t *free, uint64_t *total)
{
    const ig_cuda_api_t  *api;

    api = ig_cuda_loaded();

    if (ex == NULL || !ex->use_cuda || api == NULL) {
        return -1;
    }

    return api->mem_info(ex->cuda_device, free, total);
}


/* the entry points the model loaders call; only reached with use_cuda */

ig_mlp_cuda_t *
ig_mlp_cuda_create(int device, const ig_mlp_plan_t *plan, size_t max_rows,
    char *err, size_t errlen)
{
    const ig_cuda_api_t  *api = ig_cuda_loaded();

    if (api == NULL) {
        snprintf(err, errlen, IG_CUDA_LIB " is not loaded");
        return NULL;
    }

    return api->mlp_create(device, plan, max_rows, err, errlen);
}


int
ig_mlp_cuda_run(ig_mlp_cuda_t *g, const float *in, size_t rows, float *out,
    char *err, size_t errlen)
{
    return ig_cuda_loaded()->mlp_run(g, in, rows, out, err, errlen);
}


void
ig_mlp_cuda_destroy(ig_mlp_cuda_t *g)
{
    if (g) {
        ig_cuda_loaded()->mlp_destroy(g);
    }
}


ig_tree_cuda_t *
ig_tree_cuda_create(int device, const ig_tree_node_t *nodes, uint32_t nnodes,
    const ig_tree_info_t *trees, uint32_t ntrees, const float *base,
    uint32_t ngroups, uint32_t nfeatures, int transform, char *err,
    size_t errlen)
{
    const ig_cuda_api_t  *api = ig_cuda_loaded();

    if (api == NULL) {
        snprintf(err, errlen, IG_CUDA_LIB " is not loaded");
        return NULL;
    }

    return api->tree_create(device, nodes, nnodes, trees, ntrees, base,
                            ngroups, nfeatures, transform, err, errlen);
}


int
ig_tree_cuda_predict(ig_tree_cuda_t *c, const float *in, size_t rows,
    float *out, char *err, size_t errlen)
{
    return ig_cuda_loaded()->tree_predict(c, in, rows, out, err, errlen);
}


void
ig_tree_cuda_free(ig_tree_cuda_t *c)
{
    if (c) {
        ig_cuda_loaded()->tree_free(c);
    }
}
