/*
 * Copyright (C) infergate authors
 *
 * XGBoost models: the JSON that xgboost 1.7 save_model("m.json") writes
 * (gbtree, numerical splits), loaded into flat 16-byte node arrays
 * (ig_tree.h) and predicted on the CPU in blocks of rows across OpenMP
 * threads, or on a CUDA device (tree_cuda.cu).
 *
 * Everything read from the file is checked before it is used: node and
 * feature indices, array lengths, tree shape (each node reached once
 * from the root, so no cycles), class ids.  A hostile file gives a load
 * error, never a crash.
 */


#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ig_model.h"
#include "ig_tree.h"

#ifndef IG_NO_CUDA
#include "ig_tree_cuda.h"
#endif


#define IG_XGB_MAX_NESTING   32          /* real files nest 7 deep     */
#define IG_XGB_MAX_FEATURES  (1u << 24)
#define IG_XGB_MAX_GROUPS    65536u
#define IG_XGB_MAX_NODES     (1u << 27)  /* 2 GiB of nodes             */
#define IG_XGB_BLOCK         64          /* rows per block and thread  */
#define IG_XGB_THREAD_ROWS   128         /* rows per thread, at least  */
#define IG_XGB_LANES         16          /* rows in lockstep           */
#define IG_XGB_TREE_LANES    16          /* trees in lockstep (1 row)  */
#define IG_XGB_MAX_LANES     16
#define IG_XGB_STACK_FLOATS  4096        /* expanded rows on the stack */


typedef struct {
    ig_model_t         model;           /* first: the loader's contract */
    uint32_t           nfeatures;
    uint32_t           ngroups;
    uint32_t           ntrees;
    uint32_t           nnodes;
    int                transform;       /* ig_xgb_transform_e          */
    float             *base;            /* ngroups margins             */
    ig_tree_node_t    *nodes;
    ig_tree_info_t    *trees;
#ifndef IG_NO_CUDA
    ig_tree_cuda_t    *cuda;
#endif
} ig_xgb_t;


static const ig_model_ops_t  ig_xgb_ops;


/* JSON helpers: XGBoost writes most scalars as strings ("5E-1", "10"). */

static yajl_val
ig_xgb_get(yajl_val obj, const char *key)
{
    size_t  i;

    if (!YAJL_IS_OBJECT(obj)) {
        return NULL;
    }

    for (i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0) {
            return obj->u.object.values[i];
        }
    }

    return NULL;
}


static const char *
ig_xgb_scalar_text(yajl_val v)
{
    if (YAJL_IS_STRING(v)) {
        return YAJL_GET_STRING(v);
    }

    if (YAJL_IS_NUMBER(v)) {
        return YAJL_GET_NUMBER(v);
    }

    return NULL;
}


/* A non-negative integer, given as a JSON number or a string. */
static int
ig_xgb_uint(yajl_val v, uint64_t max, uint64_t *out)
{
    char                *end;
    const char          *s;
    unsigned long long   n;

    s = ig_xgb_scalar_text(v);
    if (s == NULL || *s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || *end || n > max) {
        return -1;
    }

    *out = n;
    return 0;
}


/* An integer that may be negative (children: -1 at leaves). */
static int
ig_xgb_int(yajl_val v, int64_t *out)
{
    if (!YAJL_IS_INTEGER(v)) {
        return -1;
    }

    *out = YAJL_GET_INTEGER(v);
    return 0;
}


/* A float32 exactly as XGBoost reads it (strtof, not via double). */
static int
ig_xgb_float(yajl_val v, float *out)
{
    char        *end;
    const char  *s;

    s = ig_xgb_scalar_text(v);
    if (s == NULL || *s == '\0') {
        return -1;
    }

    errno = 0;
    *out = strtof(s, &end);
    if (*end || isnan(*out)) {
        return -1;
    }

    return 0;
}


static yajl_val
ig_xgb_array(yajl_val obj, const char *key, size_t len)
{
    yajl_val  v;

    v = ig_xgb_get(obj, key);
    if (!YAJL_IS_ARRAY(v) || v->u.array.len != len) {
        return NULL;
    }

    return v;
}


/*
 * Before yajl sees the text: refuse absurd nesting (yajl's tree API
 * recurses on it, so "[[[[..." could exhaust the stack), and rewrite
 * the non-JSON tokens XGBoost's writer emits (NaN in categorical split
 * conditions, +-Infinity) into strings of the same length, which
 * ig_xgb_float() reads as NaN (refused) or infinities.
 */
static int
ig_xgb_prescan(char *s, size_t len)
{
    int     depth, in_str;
    size_t  i;

    depth = 0;
    in_str = 0;

    for (i = 0; i < len; i++) {
        if (in_str) {
            if (s[i] == '\\') {
                i++;
            } else if (s[i] == '"') {
                in_str = 0;
            }
            continue;
        }

        switch (s[i]) {
        case '"':
            in_str = 1;
            break;
        case '{':
        case '[':
            if (++depth > IG_XGB_MAX_NESTING) {
                return -1;
            }
            break;
        case '}':
        case ']':
            depth--;
            break;
        case 'N':
            if (len - i >= 3 && memcmp(s + i, "NaN", 3) == 0) {
                memcpy(s + i, "\"N\"", 3);
                i += 2;
            }
            break;
        case 'I':
            if (len - i >= 8 && memcmp(s + i, "Infinity", 8) == 0) {
                memcpy(s + i, "\"inf\"   ", 8);
                i += 7;
            }
            break;
        case '-':
            if (len - i >= 9 && memcmp(s + i, "-Infinity", 9) == 0) {
                memcpy(s + i, "\"-inf\"   ", 9);
                i += 8;
            }
            break;
        }
    }

    return 0;
}


/*
 * One tree into x->nodes at x->nnodes, renumbered breadth-first (every
 * child after its parent) with leaves pointing at themselves.  Returns
 * 0, or -1 with err naming the tree and the problem.
 */
static int
ig_xgb_load_tree(ig_xgb_t *x, yajl_val t, uint32_t ti, uint32_t *scratch,
    char *err, size_t errlen)
{
    size_t           n, i, head, tail;
    int64_t          l, r;
    uint64_t         f, dl, st;
    uint32_t         o, base, depth, *order, *newid, *dep;
    yajl_val         lc, rc, si, sc, dlv, stv, tp, v;
    ig_tree_node_t  *nd;

    lc = ig_xgb_get(t, "left_children");
    if (!YAJL_IS_ARRAY(lc) || lc->u.array.len == 0) {
        snprintf(err, errlen, "tree %u: no left_children", ti);
        return -1;
    }

    n = lc->u.array.len;

    tp = ig_xgb_get(t, "tree_param");
    v = ig_xgb_get(tp, "size_leaf_vector");
    if (v && (ig_xgb_uint(v, 0, &f) != 0)) {
        snprintf(err, errlen, "tree %u: vector leaves (size_leaf_vector) "
                 "are not supported", ti);
        return -1;
    }

    v = ig_xgb_get(t, "categories_nodes");
    if (YAJL_IS_ARRAY(v) && v->u.array.len > 0) {
        snprintf(err, errlen, "tree %u: categorical splits are not "
                 "supported", ti);
        return -1;
    }

    rc = ig_xgb_array(t, "right_children", n);
    si = ig_xgb_array(t, "split_indices", n);
    sc = ig_xgb_array(t, "split_conditions", n);
    dlv = ig_xgb_array(t, "default_left", n);
    stv = ig_xgb_get(t, "split_type");

    if (rc == NULL || si == NULL || sc == NULL || dlv == NULL
        || (stv && (!YAJL_IS_ARRAY(stv) || stv->u.array.len != n)))
    {
        snprintf(err, errlen, "tree %u: right_children, split_indices, "
                 "split_conditions, default_left and split_type must be "
                 "arrays of %zu nodes", ti, n);
        return -1;
    }

    if (n > IG_XGB_MAX_NODES - x->nnodes) {
        snprintf(err, errlen, "tree %u: more than %u nodes in the model",
                 ti, IG_XGB_MAX_NODES);
        return -1;
    }

    /* scratch: 3 * n words, sized by the caller for the largest tree */
    order = scratch;
    newid = scratch + n;
    dep = scratch + 2 * n;

    for (i = 0; i < n; i++) {
        newid[i] = UINT32_MAX;
    }

    base = x->nnodes;
    order[0] = 0;
    newid[0] = 0;
    dep[0] = 0;
    head = 0;
    tail = 1;
    depth = 0;

    while (head < tail) {
        o = order[head++];

        if (ig_xgb_int(lc->u.array.values[o], &l) != 0
            || ig_xgb_int(rc->u.array.values[o], &r) != 0)
        {
            snprintf(err, errlen, "tree %u node %u: children are not "
                     "integers", ti, o);
            return -1;
        }

        nd = &x->nodes[base + newid[o]];

        if (l == -1 && r == -1) {
            if (ig_xgb_float(sc->u.array.values[o], &nd->value) != 0) {
                snprintf(err, errlen, "tree %u node %u: bad leaf value",
                         ti, o);
                return -1;
            }

            nd->fidx = 0;
            nd->child[0] = IG_TREE_AT(base + newid[o]);
            nd->child[1] = IG_TREE_AT(base + newid[o]);
            continue;
        }

        if (l < 0 || r < 0 || (size_t) l >= n || (size_t) r >= n || l == r
            || newid[l] != UINT32_MAX || newid[r] != UINT32_MAX)
        {
            snprintf(err, errlen, "tree %u node %u: bad children %lld, %lld "
                     "(not a tree of %zu nodes)", ti, o, (long long) l,
                     (long long) r, n);
            return -1;
        }

        if (stv && (ig_xgb_uint(stv->u.array.values[o], 1, &st) != 0
                    || st != 0))
        {
            snprintf(err, errlen, "tree %u node %u: categorical splits are "
                     "not supported", ti, o);
            return -1;
        }

        if (ig_xgb_uint(si->u.array.values[o], UINT32_MAX, &f) != 0
            || f >= x->nfeatures)
        {
            snprintf(err, errlen, "tree %u node %u: split feature is not "
                     "below num_feature %u", ti, o, x->nfeatures);
            return -1;
        }

        if (ig_xgb_uint(dlv->u.array.values[o], 1, &dl) != 0) {
            snprintf(err, errlen, "tree %u node %u: default_left is not 0 "
                     "or 1", ti, o);
            return -1;
        }

        if (ig_xgb_float(sc->u.array.values[o], &nd->value) != 0) {
            snprintf(err, errlen, "tree %u node %u: bad split condition",
                     ti, o);
            return -1;
        }

        if (dep[o] + 1 > IG_TREE_MAX_DEPTH) {
            snprintf(err, errlen, "tree %u: deeper than %d levels", ti,
                     IG_TREE_MAX_DEPTH);
            return -1;
        }

        if (dl && nd->value == -INFINITY) {
            snprintf(err, errlen, "tree %u node %u: split condition -inf "
                     "with default_left is not supported", ti, o);
            return -1;
        }

        /* NaN goes left: read the half where NaN is -inf (ig_tree.h) */
        nd->fidx = (uint32_t) f + (dl ? 0 : x->nfeatures);

        newid[l] = (uint32_t) tail;
        dep[l] = dep[o] + 1;
        order[tail++] = (uint32_t) l;
        newid[r] = (uint32_t) tail;
        dep[r] = dep[o] + 1;
        order[tail++] = (uint32_t) r;

        nd->child[0] = IG_TREE_AT(base + newid[l]);
        nd->child[1] = IG_TREE_AT(base + newid[r]);

        if (dep[o] + 1 > depth) {
            depth = dep[o] + 1;
        }
    }

    /* nodes never reached (deleted ones) are simply left out */
    x->trees[ti].offset = IG_TREE_AT(base);
    x->trees[ti].depth = depth;
    x->nnodes += (uint32_t) tail;

    return 0;
}


static int
ig_xgb_objective(ig_xgb_t *x, yajl_val learner, char *err, size_t errlen)
{
    uint64_t     nfeat, nclass, ntarget;
    const char  *name;
    yajl_val     lmp, obj, v;

    lmp = ig_xgb_get(learner, "learner_model_param");
    obj = ig_xgb_get(learner, "objective");
    v = ig_xgb_get(obj, "name");
    name = YAJL_IS_STRING(v) ? v->u.string : NULL;

    if (lmp == NULL || name == NULL) {
        snprintf(err, errlen, "no learner_model_param or objective name");
        return -1;
    }

    if (ig_xgb_uint(ig_xgb_get(lmp, "num_feature"), IG_XGB_MAX_FEATURES,
                    &nfeat) != 0 || nfeat == 0)
    {
        snprintf(err, errlen, "num_feature must be 1 to %u",
                 IG_XGB_MAX_FEATURES);
        return -1;
    }

    x->nfeatures = (uint32_t) nfeat;

    nclass = 0;
    v = ig_xgb_get(lmp, "num_class");
    if (v && ig_xgb_uint(v, IG_XGB_MAX_GROUPS, &nclass) != 0) {
        snprintf(err, errlen, "num_class must be 0 to %u",
                 IG_XGB_MAX_GROUPS);
        return -1;
    }

    ntarget = 1;
    v = ig_xgb_get(lmp, "num_target");
    if (v && (ig_xgb_uint(v, IG_XGB_MAX_GROUPS, &ntarget) != 0
              || ntarget == 0))
    {
        snprintf(err, errlen, "num_target must be 1 to %u",
                 IG_XGB_MAX_GROUPS);
        return -1;
    }

    if (strcmp(name, "multi:softprob") == 0
        || strcmp(name, "multi:softmax") == 0)
    {
        if (nclass < 1) {
            snprintf(err, errlen, "%s without num_class", name);
            return -1;
        }

        x->ngroups = (uint32_t) nclass;
        x->transform = (strcmp(name, "multi:softprob") == 0)
                       ? IG_XGB_SOFTPROB : IG_XGB_SOFTMAX;
        return 0;
    }

    if (nclass > 1) {
        snprintf(err, errlen, "num_class %llu with objective %s",
                 (unsigned long long) nclass, name);
        return -1;
    }

    x->ngroups = (uint32_t) ntarget;

    if (strcmp(name, "reg:squarederror") == 0) {
        x->transform = IG_XGB_IDENTITY;

    } else if (strcmp(name, "reg:logistic") == 0
               || strcmp(name, "binary:logistic") == 0)
    {
        x->transform = IG_XGB_SIGMOID;

    } else if (strcmp(name, "binary:logitraw") == 0) {
        x->transform = IG_XGB_IDENTITY;

    } else {
        snprintf(err, errlen, "objective \"%.64s\" is not supported "
                 "(reg:squarederror, reg:logistic, binary:logistic, "
                 "binary:logitraw, multi:softprob, multi:softmax are)",
                 name);
        return -1;
    }

    return 0;
}


/*
 * base_score is stored in output space; the margin every group starts
 * from is ProbToMargin(base_score): the logit for reg:logistic and
 * binary:logistic, itself otherwise.  1.7 writes one number as a string; 3.1 may write a
 * JSON list string ("[5E-1]"), one per group.
 */
static int
ig_xgb_base_score(ig_xgb_t *x, yajl_val learner, const char *objective,
    char *err, size_t errlen)
{
    int          logit;
    char        *end;
    float        b;
    uint32_t     g, nvals;
    const char  *s;

    s = ig_xgb_scalar_text(ig_xgb_get(ig_xgb_get(learner,
                                      "learner_model_param"), "base_score"));
    if (s == NULL) {
        s = "0.5";                                /* XGBoost's default */
    }

    x->base = calloc(x->ngroups, sizeof(float));
    if (x->base == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    /*
     * xgboost 1.7.4 checked: binary:logitraw keeps base_score as the
     * margin (a 0-round booster predicts base_score itself).
     */
    logit = (strcmp(objective, "reg:logistic") == 0
             || strcmp(objective, "binary:logistic") == 0);

    if (*s == '[') {
        s++;
    }

    for (nvals = 0; nvals < x->ngroups; nvals++) {
        errno = 0;
        b = strtof(s, &end);
        if (end == s || errno || !isfinite(b)) {
            snprintf(err, errlen, "bad base_score");
            return -1;
        }

        if (logit) {
            if (!(b > 0.0f && b < 1.0f)) {
                snprintf(err, errlen, "base_score %g is not in (0, 1) as "
                         "%s needs", (double) b, objective);
                return -1;
            }

            b = -logf(1.0f / b - 1.0f);
        }

        x->base[nvals] = b;

        for (s = end; *s == ' '; s++) { /* void */ }

        if (*s != ',') {
            break;
        }

        s++;
    }

    if (*s != '\0' && *s != ']') {
        snprintf(err, errlen, "bad base_score");
        return -1;
    }

    if (nvals != 0 && nvals + 1 != x->ngroups) {
        snprintf(err, errlen, "base_score lists %u values for %u groups",
                 nvals + 1, x->ngroups);
        return -1;
    }

    /* one value stands for every group */
    for (g = nvals + 1; g < x->ngroups; g++) {
        x->base[g] = x->base[0];
    }

    return 0;
}


static void
ig_xgb_free(ig_model_t *m)
{
    ig_xgb_t  *x = (ig_xgb_t *) m;

#ifndef IG_NO_CUDA
    if (x->cuda) {
        ig_tree_cuda_free(x->cuda);
    }
#endif

    free(x->base);
    free(x->nodes);
    free(x->trees);
    free(x);
}


static void
ig_xgb_meta(ig_xgb_t *x)
{
    ig_model_meta_t  *mm = &x->model.meta;

    snprintf(mm->platform, sizeof(mm->platform), "xgboost_json");

    /* Triton's FIL backend names its tensors input__0 and output__0 */
    snprintf(mm->input.name, sizeof(mm->input.name), "input__0");
    mm->input.dtype = IG_DT_FP32;
    mm->input.ndims = 2;
    mm->input.dims[0] = -1;
    mm->input.dims[1] = x->nfeatures;

    mm->nfeatures = x->nfeatures;
    mm->noutputs = (x->transform == IG_XGB_SOFTMAX) ? 1 : x->ngroups;

    snprintf(mm->output.name, sizeof(mm->output.name), "output__0");
    mm->output.dtype = IG_DT_FP32;
    mm->output.ndims = 2;
    mm->output.dims[0] = -1;
    mm->output.dims[1] = mm->noutputs;
}


ig_model_t *
ig_xgb_load(const uint8_t *data, size_t len, ig_exec_t *ex, char *err,
    size_t errlen)
{
    char         *text, perr[256];
    size_t        i, maxn, total;
    uint32_t     *scratch;
    uint64_t      v64;
    ig_xgb_t     *x;
    yajl_val      root, learner, gb, model, trees, info, v;
    const char   *name, *objective;

    x = NULL;
    root = NULL;
    scratch = NULL;

    if (len == 0) {
        snprintf(err, errlen, "XGBoost JSON: empty");
        return NULL;
    }

    text = malloc(len + 1);
    if (text == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    memcpy(text, data, len);
    text[len] = '\0';

    if (strlen(text) != len || ig_xgb_prescan(text, len) != 0) {
        snprintf(err, errlen, "XGBoost JSON: %s", strlen(text) != len
                 ? "NUL byte in the file" : "nested deeper than any "
                 "XGBoost model");
        free(text);
        return NULL;
    }

    perr[0] = '\0';
    root = yajl_tree_parse(text, perr, sizeof(perr));
    free(text);

    if (root == NULL) {
        /* yajl's message spans lines; the first one says enough */
        perr[strcspn(perr, "\r\n")] = '\0';
        snprintf(err, errlen, "XGBoost JSON: %s",
                 perr[0] ? perr : "parse error");
        return NULL;
    }

    x = calloc(1, sizeof(ig_xgb_t));
    if (x == NULL) {
        snprintf(err, errlen, "out of memory");
        goto failed;
    }

    x->model.ops = &ig_xgb_ops;

    learner = ig_xgb_get(root, "learner");
    gb = ig_xgb_get(learner, "gradient_booster");
    v = ig_xgb_get(gb, "name");
    name = YAJL_IS_STRING(v) ? v->u.string : NULL;

    if (learner == NULL || name == NULL) {
        snprintf(err, errlen, "XGBoost JSON: no learner.gradient_booster "
                 "(not a model saved by xgboost 1.x save_model)");
        goto failed;
    }

    if (strcmp(name, "gbtree") != 0) {
        snprintf(err, errlen, "XGBoost: booster \"%.32s\" is not supported "
                 "(only gbtree)", name);
        goto failed;
    }

    if (ig_xgb_objective(x, learner, perr, sizeof(perr)) != 0) {
        snprintf(err, errlen, "XGBoost: %s", perr);
        goto failed;
    }

    v = ig_xgb_get(ig_xgb_get(learner, "objective"), "name");
    objective = v->u.string;               /* checked by ig_xgb_objective */

    if (ig_xgb_base_score(x, learner, objective, perr, sizeof(perr)) != 0) {
        snprintf(err, errlen, "XGBoost: %s", perr);
        goto failed;
    }

    /* feature_types "c" means categorical features */
    v = ig_xgb_get(learner, "feature_types");
    if (YAJL_IS_ARRAY(v)) {
        for (i = 0; i < v->u.array.len; i++) {
            if (YAJL_IS_STRING(v->u.array.values[i])
                && strcmp(v->u.array.values[i]->u.string, "c") == 0)
            {
                snprintf(err, errlen, "XGBoost: categorical features are "
                         "not supported");
                goto failed;
            }
        }
    }

    model = ig_xgb_get(gb, "model");
    trees = ig_xgb_get(model, "trees");

    if (!YAJL_IS_ARRAY(trees) || trees->u.array.len == 0
        || trees->u.array.len > IG_XGB_MAX_NODES)
    {
        snprintf(err, errlen, "XGBoost: no trees");
        goto failed;
    }

    x->ntrees = (uint32_t) trees->u.array.len;

    v = ig_xgb_get(ig_xgb_get(model, "gbtree_model_param"), "num_trees");
    if (v && (ig_xgb_uint(v, UINT32_MAX, &v64) != 0 || v64 != x->ntrees)) {
        snprintf(err, errlen, "XGBoost: num_trees does not match %u trees",
                 x->ntrees);
        goto failed;
    }

    info = ig_xgb_array(model, "tree_info", x->ntrees);
    if (info == NULL) {
        snprintf(err, errlen, "XGBoost: tree_info must list %u trees",
                 x->ntrees);
        goto failed;
    }

    maxn = 0;
    total = 0;

    for (i = 0; i < x->ntrees; i++) {
        v = ig_xgb_get(trees->u.array.values[i], "left_children");
        if (!YAJL_IS_ARRAY(v)) {
            snprintf(err, errlen, "XGBoost: tree %zu has no "
                     "left_children", i);
            goto failed;
        }

        maxn = (v->u.array.len > maxn) ? v->u.array.len : maxn;
        total += v->u.array.len;

        if (total > IG_XGB_MAX_NODES) {
            snprintf(err, errlen, "XGBoost: more than %u nodes",
                     IG_XGB_MAX_NODES);
            goto failed;
        }
    }

    x->trees = calloc(x->ntrees, sizeof(ig_tree_info_t));
    x->nodes = calloc(total ? total : 1, sizeof(ig_tree_node_t));
    scratch = calloc(3 * (maxn ? maxn : 1), sizeof(uint32_t));

    if (x->trees == NULL || x->nodes == NULL || scratch == NULL) {
        snprintf(err, errlen, "out of memory");
        goto failed;
    }

    for (i = 0; i < x->ntrees; i++) {
        if (ig_xgb_uint(info->u.array.values[i], x->ngroups - 1, &v64)
            != 0)
        {
            snprintf(err, errlen, "XGBoost: tree_info[%zu] is not a group "
                     "below %u", i, x->ngroups);
            goto failed;
        }

        x->trees[i].group = (uint32_t) v64;

        if (ig_xgb_load_tree(x, trees->u.array.values[i], (uint32_t) i,
                             scratch, perr, sizeof(perr))
            != 0)
        {
            snprintf(err, errlen, "XGBoost: %s", perr);
            goto failed;
        }
    }

    free(scratch);
    scratch = NULL;
    yajl_tree_free(root);
    root = NULL;

    ig_xgb_meta(x);

#ifndef IG_NO_CUDA
    if (ex && ex->use_cuda) {
        x->cuda = ig_tree_cuda_create(ex->cuda_device, x->nodes, x->nnodes,
                                      x->trees, x->ntrees, x->base,
                                      x->ngroups, x->nfeatures,
                                      x->transform, perr, sizeof(perr));
        if (x->cuda == NULL) {
            snprintf(err, errlen, "XGBoost: CUDA: %s", perr);
            goto failed;
        }
    }
#else
    (void) ex;
#endif

    return &x->model;

failed:

    free(scratch);

    if (root) {
        yajl_tree_free(root);
    }

    if (x) {
        ig_xgb_free(&x->model);
    }

    return NULL;
}


/*
 * Margins of rows [0, n) of a block (expanded into xin, n * 2 * nf
 * floats, first): base, then every tree in file
 * order, summed in float32 as XGBoost's CPU predictor does (so results
 * match it bit for bit before the transform).  Rows go through one tree
 * IG_XGB_LANES at a time in lockstep, so their independent node loads
 * overlap; fewer rows than that walk IG_XGB_LANES trees in lockstep.
 */
static void
ig_xgb_block(const ig_xgb_t *x, const float *in, size_t n, float *mg,
    float *xin)
{
    size_t                 r, j, nf, ng;
    uint32_t               t, d, depth, k, nt, root, idx[IG_XGB_MAX_LANES];
    const float           *row, *rp[IG_XGB_LANES];
    const ig_tree_node_t  *nodes = x->nodes;

    nf = x->nfeatures;
    ng = x->ngroups;

    for (r = 0; r < n; r++) {
        ig_tree_expand_row(in + r * nf, (uint32_t) nf, xin + r * 2 * nf);

        for (j = 0; j < ng; j++) {
            mg[r * ng + j] = x->base[j];
        }
    }

    in = xin;
    nf *= 2;

    /* full lanes of rows, tree by tree */
    for (t = 0; t < x->ntrees && n >= IG_XGB_LANES; t++) {
        root = x->trees[t].offset;
        depth = x->trees[t].depth;
        k = x->trees[t].group;

        for (r = 0; r + IG_XGB_LANES <= n; r += IG_XGB_LANES) {
            for (j = 0; j < IG_XGB_LANES; j++) {
                idx[j] = root;
                rp[j] = in + (r + j) * nf;
            }

            /* unrolled so the lanes live in registers */
            for (d = 0; d < depth; d++) {
#pragma GCC unroll 16
                for (j = 0; j < IG_XGB_LANES; j++) {
                    idx[j] = ig_tree_step(nodes, idx[j], rp[j]);
                }
            }

            for (j = 0; j < IG_XGB_LANES; j++) {
                mg[(r + j) * ng + k] += ig_tree_node(nodes, idx[j])->value;
            }
        }
    }

    /* the remaining rows, lanes of trees (leaves loop on themselves) */
    for (r = n - n % IG_XGB_LANES; r < n; r++) {
        row = in + r * nf;

        for (t = 0; t < x->ntrees; t += nt) {
            nt = x->ntrees - t;
            nt = (nt < IG_XGB_TREE_LANES) ? nt : IG_XGB_TREE_LANES;

            if (nt < IG_XGB_TREE_LANES) {
                for (j = 0; j < nt; j++) {
                    mg[r * ng + x->trees[t + j].group] +=
                        ig_tree_eval(nodes, x->trees[t + j].offset,
                                     x->trees[t + j].depth, row);
                }
                continue;
            }

            depth = 0;
            for (j = 0; j < IG_XGB_TREE_LANES; j++) {
                idx[j] = x->trees[t + j].offset;
                depth = (x->trees[t + j].depth > depth)
                        ? x->trees[t + j].depth : depth;
            }

            for (d = 0; d < depth; d++) {
#pragma GCC unroll 16
                for (j = 0; j < IG_XGB_TREE_LANES; j++) {
                    idx[j] = ig_tree_step(nodes, idx[j], row);
                }
            }

            /* added in tree order: the same float sums as XGBoost */
            for (j = 0; j < IG_XGB_TREE_LANES; j++) {
                mg[r * ng + x->trees[t + j].group] +=
                    ig_tree_node(nodes, idx[j])->value;
            }
        }
    }
}


/* Blocks [b0, b1) of a batch: margins, then the output transform. */
static void
ig_xgb_blocks(const ig_xgb_t *x, const float *in, size_t rows, float *mg,
    long b0, long b1, float *xin)
{
    long    b;
    size_t  r0, n, r, ng;

    ng = x->ngroups;

    for (b = b0; b < b1; b++) {
        r0 = (size_t) b * IG_XGB_BLOCK;
        n = (rows - r0 < IG_XGB_BLOCK) ? rows - r0 : IG_XGB_BLOCK;

        ig_xgb_block(x, in + r0 * x->nfeatures, n, mg + r0 * ng, xin);

        for (r = r0; r < r0 + n; r++) {
            ig_xgb_transform(x->transform, mg + r * ng, (uint32_t) ng);
        }
    }
}


static int
ig_xgb_predict(ig_model_t *m, ig_exec_t *ex, const float *in, size_t rows,
    float *out, char *err, size_t errlen)
{
    int        threads, failed;
    long       nblocks;
    float     *mg, stack[IG_XGB_STACK_FLOATS];
    size_t     ng, xlen;
    ig_xgb_t  *x = (ig_xgb_t *) m;

    if (rows == 0) {
        return 0;
    }

#ifndef IG_NO_CUDA
    if (x->cuda) {
        return ig_tree_cuda_predict(x->cuda, in, rows, out, err, errlen);
    }
#endif

    ng = x->ngroups;

    /* softmax writes one float per row: margins go to scratch first */
    if (x->transform == IG_XGB_SOFTMAX) {
        mg = malloc(rows * ng * sizeof(float));
        if (mg == NULL) {
            snprintf(err, errlen, "out of memory for %zu rows", rows);
            return -1;
        }

    } else {
        mg = out;
    }

    nblocks = (long) ((rows + IG_XGB_BLOCK - 1) / IG_XGB_BLOCK);

    /*
     * A thread per IG_XGB_THREAD_ROWS rows at most: with less work per
     * thread (about half a millisecond on the 500-tree benchmark
     * model), waking the OpenMP workers costs more than it saves.
     * Measured at 256 rows on 2 threads: 1.8x one thread on a quiet
     * host, but 0.6x when it was heavily loaded.
     */
    threads = (ex && ex->threads > 1) ? ex->threads : 1;
    if ((size_t) threads > rows / IG_XGB_THREAD_ROWS) {
        threads = (rows >= 2 * IG_XGB_THREAD_ROWS)
                  ? (int) (rows / IG_XGB_THREAD_ROWS) : 1;
    }

    failed = 0;
    xlen = (rows < IG_XGB_BLOCK ? rows : IG_XGB_BLOCK) * 2
           * (size_t) x->nfeatures;

    if (threads == 1 && xlen <= IG_XGB_STACK_FLOATS) {
        /* the common small batch: no fork/join, no allocation */
        ig_xgb_blocks(x, in, rows, mg, 0, nblocks, stack);

    } else {
#pragma omp parallel num_threads(threads) if(threads > 1)
        {
            long    bb;
            float  *xin;

            /*
             * this thread's expanded rows (ig_tree.h); blocks are handed
             * out one by one, so a thread the host schedules late does
             * not hold the batch up: the others take its blocks
             */
            xin = malloc(xlen * sizeof(float));

            if (xin == NULL) {
#pragma omp atomic write
                failed = 1;
            }

#pragma omp for schedule(dynamic, 1)
            for (bb = 0; bb < nblocks; bb++) {
                if (xin != NULL) {
                    ig_xgb_blocks(x, in, rows, mg, bb, bb + 1, xin);
                }
            }

            free(xin);
        }
    }

    if (failed) {
        snprintf(err, errlen, "out of memory");
        if (mg != out) {
            free(mg);
        }
        return -1;
    }

    if (mg != out) {
        for (size_t r = 0; r < rows; r++) {
            out[r] = mg[r * ng];
        }

        free(mg);
    }

    return 0;
}


static const ig_model_ops_t  ig_xgb_ops = {
    ig_xgb_predict,
    ig_xgb_free
};
