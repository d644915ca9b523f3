/*
 * Copyright (C) infergate authors
 */

/*
 * Flat decision trees shared by the CPU predictor (model_xgb.c) and the
 * CUDA kernel (tree_cuda.cu): one 16-byte node layout and the per-row,
 * per-tree step that both call, so the split rule lives in one place.
 *
 * The loader renumbers each tree breadth-first (a child's index is
 * always larger than its parent's), stores child indices into the
 * model's one node array, and turns every leaf into a node whose
 * children are itself.  A row therefore reaches its leaf after
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


#define IG_TREE_MAX_DEPTH     256


/*
 * Missing values without a test per step: a row is first expanded to
 * 2 * nfeatures floats, NaN read as -inf in the first half and as +inf
 * in the second.  A node whose NaN goes left reads the first half (NaN
 * then fails "x >= cond"), one whose NaN goes right the second.  The
 * loader refuses the one case this cannot express: cond == -inf with
 * default_left (XGBoost never writes infinite split values).
 */

/* 16 bytes; a leaf's children are itself and value is the leaf value */
typedef struct {
    uint32_t  fidx;        /* feature, + nfeatures if NaN goes right    */
    float     value;       /* split threshold, or the leaf value        */
    uint32_t  child[2];    /* left, right: IG_TREE_AT offsets           */
} ig_tree_node_t;


/* Nodes are addressed by byte offset (index * 16) into the model's one
 * array: the step then needs no shift to turn an index into an address */
#define IG_TREE_AT(i)  ((uint32_t) (i) * (uint32_t) sizeof(ig_tree_node_t))

typedef struct {
    uint32_t  offset;      /* the root, an IG_TREE_AT offset            */
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


/* The 2 * nf floats the steps read for one input row (see above). */
IG_HD void
ig_tree_expand_row(const float *row, uint32_t nf, float *xrow)
{
    uint32_t  f;
    float     x;

    for (f = 0; f < nf; f++) {
        x = row[f];
        xrow[f] = (x != x) ? -INFINITY : x;
        xrow[nf + f] = (x != x) ? INFINITY : x;
    }
}


/*
 * One step down a tree for one (expanded) row: XGBoost's numerical
 * split, "go left iff x < cond" on float32, a missing value going where
 * default_left says.  An indexed load, not a branch: lockstep walks
 * of many rows would mispredict half their steps.
 */
IG_HD const ig_tree_node_t *
ig_tree_node(const ig_tree_node_t *nodes, uint32_t n)
{
    return (const ig_tree_node_t *) ((const char *) nodes + n);
}


IG_HD uint32_t
ig_tree_step(const ig_tree_node_t *nodes, uint32_t n, const float *xrow)
{
    const ig_tree_node_t  *nd = ig_tree_node(nodes, n);

    return nd->child[xrow[nd->fidx] >= nd->value];
}


/* The leaf value one tree (root offset and depth) gives one row. */
IG_HD float
ig_tree_eval(const ig_tree_node_t *nodes, uint32_t root, uint32_t depth,
    const float *xrow)
{
    uint32_t  d, n;

    n = root;

    for (d = 0; d < depth; d++) {
        n = ig_tree_step(nodes, n, xrow);
    }

    return ig_tree_node(nodes, n)->value;
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
