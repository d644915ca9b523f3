
/*
 * Copyright (C) infergate authors
 */

/*
 * CUDA is a shared object, build/libinfergate-cuda.so (mlp_cuda.cu,
 * tree_cuda.cu, cuda_api.cu, linked with cuBLAS and the CUDA runtime),
 * that the backend and the tools load with dlopen() only when a GPU is
 * requested (--device auto or cuda:N): a process that runs on the CPU
 * never maps cuBLAS (about 140 ms of start-up).  The library exports one
 * symbol, ig_cuda_api(), the table below; everything else in it is
 * hidden.  cuda_loader.c loads it once and provides the C entry points
 * of ig_mlp_cuda.h and ig_tree_cuda.h, which call through the table.
 * Plain C so both compilers read it.
 */

#ifndef _IG_CUDA_H_INCLUDED_
#define _IG_CUDA_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "ig_model.h"
#include "ig_mlp_cuda.h"
#include "ig_tree_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif


#define IG_CUDA_LIB          "libinfergate-cuda.so"
#define IG_CUDA_API_VERSION  1

/* exec_open() results */
#define IG_CUDA_OK           0
#define IG_CUDA_NO_CUDA     -1     /* cudaGetDeviceCount() failed: err    */
#define IG_CUDA_NO_DEVICE   -2     /* device >= the count (in *ndevices)  */
#define IG_CUDA_DEV_FAILED  -3     /* cudaSetDevice() or properties: err  */


typedef struct {
    uint32_t         version;      /* IG_CUDA_API_VERSION                 */
    uint32_t         size;         /* sizeof(ig_cuda_api_t)               */

    /* selects device; fills name with its name */
    int            (*exec_open)(int device, int *ndevices, char *name,
                                size_t namelen, char *err, size_t errlen);
    /* cudaMemGetInfo() on device; 0 or -1 */
    int            (*mem_info)(int device, uint64_t *free, uint64_t *total);

    ig_mlp_cuda_t *(*mlp_create)(int device, const ig_mlp_plan_t *plan,
                                 size_t max_rows, char *err, size_t errlen);
    int            (*mlp_run)(ig_mlp_cuda_t *g, const float *in, size_t rows,
                              float *out, char *err, size_t errlen);
    void           (*mlp_destroy)(ig_mlp_cuda_t *g);

    ig_tree_cuda_t *(*tree_create)(int device, const ig_tree_node_t *nodes,
                                   uint32_t nnodes,
                                   const ig_tree_info_t *trees,
                                   uint32_t ntrees, const float *base,
                                   uint32_t ngroups, uint32_t nfeatures,
                                   int transform, char *err, size_t errlen);
    int            (*tree_predict)(ig_tree_cuda_t *c, const float *in,
                                   size_t rows, float *out, char *err,
                                   size_t errlen);
    void           (*tree_free)(ig_tree_cuda_t *c);
} ig_cuda_api_t;


/* the one symbol the library exports (cuda_api.cu) */
typedef const ig_cuda_api_t *(*ig_cuda_api_pt)(void);
#define IG_CUDA_API_SYMBOL   "ig_cuda_api"


/*
 * The loader (cuda_loader.c): dlopen(RTLD_NOW | RTLD_LOCAL) of
 * $IG_CUDA_LIB when set, else IG_CUDA_LIB beside the executable
 * (/proc/self/exe), else IG_CUDA_LIB on the loader's search path; once
 * per process, thread-safe.  NULL with err (dlerror(), or a version
 * mismatch) when there is none: the caller runs on the CPU.
 */
const ig_cuda_api_t *ig_cuda_load(char *err, size_t errlen);

/* the table once loaded, else NULL; never loads */
const ig_cuda_api_t *ig_cuda_loaded(void);

/*
 * The CUDA part of ig_exec_create() (ig_model.c): want 1 for cuda:N
 * (a failure is an error), -1 for auto (a failure runs on the CPU and
 * says why in ex->name).  Returns 0, or -1 with err.
 */
int ig_cuda_exec_init(ig_exec_t *ex, const char *device, int want,
    int cuda_device, char *err, size_t errlen);

/* free and total bytes of ex's GPU; -1 when ex runs on the CPU */
int ig_exec_gpu_mem(const ig_exec_t *ex, uint64_t *free, uint64_t *total);


#ifdef __cplusplus
}
#endif

#endif /* _IG_CUDA_H_INCLUDED_ */
