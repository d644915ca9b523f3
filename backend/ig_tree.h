/*
 * Copyright (C) infergate authors
 */

/*
 * Flat decision trees shared by the CPU predictor (model_xgb.c) and the
 * CUDA kernel (tree_cuda.cu): one 16-byte node layout and the per-row,
 * per-tree step that both call, so the split rule lives in one place.
 *
 * The loader renumbers each tree breadth-first (a child's index is
 * always larger than its parent's) and turns every leaf into a node
 * whose children are itself.  A row therefore reaches its leaf after
 * exactly `depth` steps with no "is it a leaf" branch, which lets the
 * CPU walk several rows (or trees) in lockstep and lets GPU threads of
 * one warp run the same instruction stream.
 */

#ifndef _IG_TREE_H_INCLUDED_
#define _IG_TREE_H_INCLUDED_

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define IG_HD  __host__ __device__ __forceinline__
#else
#define IG_HD  static inline
#endif


#define IG_TREE_DEFAULT_LEFT  0x80000000u     /* in fidx: NaN goes left */
#define IG_TREE_FEATURE_MASK  0x7fffffffu
#define IG_TREE_MAX_DEPTH     256


/* 16 bytes; a leaf has left == right == itself and value = leaf value */
typedef struct {
    uint32_t  fidx;        /* feature | IG_TREE_DEFAULT_LEFT; leaf: 0   */
    float     value;       /* split threshold, or the leaf value        */
    uint32_t  left;        /* node indices within the same tree         */
    uint32_t  right;
} ig_tree_node_t;


typedef struct {
    uint32_t  offset;      /* first node in the model's node array      */
    uint32_t  depth;       /* steps from the root to the deepest leaf   */
    uint32_t  group;       /* output group (class) the tree adds to     */
    uint32_t  pad;
} ig_tree_info_t;


/* Output transforms after the margins are summed. */
typedef enum {
    IG_XGB_IDENTITY = 0,   /* reg:squarederror, binary:logitraw         */
    IG_XGB_SIGMOID,        /* reg:logistic, binary:logistic             */
    IG_XGB_SOFTPROB,       /* multi:softprob: one probability per class */
    IG_XGB_SOFTMAX         /* multi:softmax: the class index as a float */
} ig_xgb_transform_e;


/*
 * One step down a tree for one row: XGBoost's numerical split, "go left
 * iff x < cond" on float32 values, a missing value (NaN) going where
 * default_left says.  Branch-free so that lockstep walks stay cheap.
 */
IG_HD uint32_t
ig_tree_step(const ig_tree_node_t *tree, uint32_t n, const float *row)
{
    const ig_tree_node_t  *nd = &tree[n];
    float                  x = row[nd->fidx & IG_TREE_FEATURE_MASK];
    uint32_t               right;

    /* NaN fails both comparisons: then right iff not default_left */
    right = (uint32_t) (x >= nd->value)
            | ((uint32_t) (x != x) & ((nd->fidx >> 31) ^ 1u));

    return right ? nd->right : nd->left;
}


/* The leaf value one tree gives one row. */
IG_HD float
ig_tree_eval(const ig_tree_node_t *tree, uint32_t depth, const float *row)
{
    uint32_t  d, n;

    n = 0;

    for (d = 0; d < depth; d++) {
        n = ig_tree_step(tree, n, row);
    }

    return tree[n].value;
}


/*
 * XGBoost's output transform of one row's margins, in place (float32
 * as XGBoost computes it).  softmax writes the class index to out[0].
 */
IG_HD void
ig_xgb_transform(int transform, float *m, uint32_t ngroups)
{
    uint32_t  k, best;
    float     mx, sum;

    switch (transform) {

    case IG_XGB_SIGMOID:
        for (k = 0; k < ngroups; k++) {
            m[k] = 1.0f / (1.0f + expf(-m[k]));
        }
        break;

    case IG_XGB_SOFTPROB:
        mx = m[0];
        for (k = 1; k < ngroups; k++) {
            mx = (m[k] > mx) ? m[k] : mx;
        }

        sum = 0.0f;
        for (k = 0; k < ngroups; k++) {
            m[k] = expf(m[k] - mx);
            sum += m[k];
        }

        for (k = 0; k < ngroups; k++) {
            m[k] /= sum;
        }
        break;

    case IG_XGB_SOFTMAX:
        best = 0;
        for (k = 1; k < ngroups; k++) {
            if (m[k] > m[best]) {
                best = k;
            }
        }
        m[0] = (float) best;
        break;

    default:
        break;
    }
}

#endif /* _IG_TREE_H_INCLUDED_ */
