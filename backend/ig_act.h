
/*
 * Copyright (C) infergate authors
 */

/*
 * Per-element activations and the softmax of one span, shared by the
 * CPU path (mlp_cpu.c) and the CUDA kernels (mlp_cuda.cu): one
 * definition, so the CPU tests exercise the arithmetic the GPU runs.
 */

#ifndef _IG_ACT_H_INCLUDED_
#define _IG_ACT_H_INCLUDED_

#include <stddef.h>
#include <math.h>

#ifdef __CUDACC__
#define IG_HD  __host__ __device__
#else
#define IG_HD
#endif


typedef enum {
    IG_ACT_NONE = 0,
    IG_ACT_RELU,
    IG_ACT_LEAKY_RELU,
    IG_ACT_SIGMOID,
    IG_ACT_TANH
} ig_act_e;


/* NaN passes through, as torch.relu does */
IG_HD static inline float
ig_act_relu(float x)
{
    return x < 0.0f ? 0.0f : x;
}


IG_HD static inline float
ig_act_leaky_relu(float x, float alpha)
{
    return x < 0.0f ? alpha * x : x;
}


/* expf(-x) overflows to inf for x < -88: the quotient is then 0 */
IG_HD static inline float
ig_act_sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}


IG_HD static inline float
ig_act_tanh(float x)
{
    return tanhf(x);
}


IG_HD static inline float
ig_act_apply(int act, float alpha, float x)
{
    switch (act) {
    case IG_ACT_RELU:
        return ig_act_relu(x);
    case IG_ACT_LEAKY_RELU:
        return ig_act_leaky_relu(x, alpha);
    case IG_ACT_SIGMOID:
        return ig_act_sigmoid(x);
    case IG_ACT_TANH:
        return ig_act_tanh(x);
    default:
        return x;
    }
}


/*
 * Softmax of n elements stride apart, in place (in == out allowed):
 * the maximum is subtracted first so that expf cannot overflow.
 */
IG_HD static inline void
ig_softmax_span(const float *in, float *out, size_t n, size_t stride)
{
    size_t  i;
    float   m, s, e;

    m = in[0];
    for (i = 1; i < n; i++) {
        if (in[i * stride] > m) {
            m = in[i * stride];
        }
    }

    s = 0.0f;
    for (i = 0; i < n; i++) {
        e = expf(in[i * stride] - m);
        out[i * stride] = e;
        s += e;
    }

    s = 1.0f / s;
    for (i = 0; i < n; i++) {
        out[i * stride] *= s;
    }
}

#endif /* _IG_ACT_H_INCLUDED_ */
