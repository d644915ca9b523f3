
/*
 * Copyright (C) infergate authors
 *
 * The one exported symbol of libinfergate-cuda.so (see ig_cuda.h): the
 * table of the CUDA entry points, with device selection and memory
 * figures.  The library is built with -fvisibility=hidden, so the
 * functions behind the table bind inside it and never to the loader's
 * entry points of the same names.
 */


#include <stdio.h>

#include <cuda_runtime_api.h>

#include "ig_cuda.h"


static int
ig_cuda_exec_open(int device, int *ndevices, char *name, size_t namelen,
    char *err, size_t errlen)
{
    cudaError_t            rc;
    struct cudaDeviceProp  prop;

    rc = cudaGetDeviceCount(ndevices);
    if (rc != cudaSuccess) {
        *ndevices = 0;
        snprintf(err, errlen, "%s", cudaGetErrorString(rc));
        return IG_CUDA_NO_CUDA;
    }

    if (device >= *ndevices) {
        return IG_CUDA_NO_DEVICE;
    }

    rc = cudaSetDevice(device);
    if (rc == cudaSuccess) {
        rc = cudaGetDeviceProperties(&prop, device);
    }

    if (rc != cudaSuccess) {
        snprintf(err, errlen, "%s", cudaGetErrorString(rc));
        return IG_CUDA_DEV_FAILED;
    }

    snprintf(name, namelen, "%s", prop.name);

    return IG_CUDA_OK;
}


/* any thread: the device is made current on it first */
static int
ig_cuda_mem_info(int device, uint64_t *free_b, uint64_t *total_b)
{
    size_t  f, t;

    if (cudaSetDevice(device) != cudaSuccess
        || cudaMemGetInfo(&f, &t) != cudaSuccess)
    {
        return -1;
    }

    *free_b = f;
    *total_b = t;

    return 0;
}


static const ig_cuda_api_t  ig_cuda_api_table = {
    IG_CUDA_API_VERSION,
    sizeof(ig_cuda_api_t),
    ig_cuda_exec_open,
    ig_cuda_mem_info,
    ig_mlp_cuda_create,
    ig_mlp_cuda_run,
    ig_mlp_cuda_destroy,
    ig_tree_cuda_create,
    ig_tree_cuda_predict,
    ig_tree_cuda_free
};


extern "C" __attribute__((visibility("default"))) const ig_cuda_api_t *
ig_cuda_api(void)
{
    return &ig_cuda_api_table;
}
