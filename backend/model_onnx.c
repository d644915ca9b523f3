
/*
 * Copyright (C) infergate authors
 *
 * ONNX models: MLP-style FP32 graphs (Gemm, MatMul, Add, Relu,
 * LeakyRelu, Sigmoid, Tanh, Softmax, Flatten, Identity) parsed with the
 * protoc-c code generated from onnx.proto, turned at load into a flat
 * plan of steps over per-row buffers, run with OpenBLAS on the CPU
 * (mlp_cpu.c) or with cuBLAS (mlp_cuda.cu) when the executor uses CUDA.
 *
 * The file is untrusted: every index, shape and size is checked, and
 * anything outside the subset is a load error that names it.
 */


#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.pb-c.h"

#include "ig_model.h"
#include "ig_act.h"
#include "ig_mlp_cpu.h"
#include "ig_mlp_cuda.h"


#define IG_ONNX_MAX_RANK     8
#define IG_ONNX_MAX_NODES    4096
#define IG_ONNX_MAX_INITS    65536
#define IG_ONNX_MAX_ROW      (1u << 24)     /* floats per batch row     */
#define IG_ONNX_MAX_CONST    (1u << 28)     /* floats in one initializer */
#define IG_ONNX_EXPAND_MAX   (1u << 26)     /* floats of bias rows      */
#define IG_ONNX_MAX_DEPTH    32             /* nested messages          */
#define IG_ONNX_MAX_LD       (1u << 22)     /* messages, strings, bytes */
#define IG_ONNX_MAX_SCALARS  (1u << 26)     /* unpacked scalar fields   */
#define IG_ONNX_MAX_PACKED   (2ull << 30)   /* bytes of packed arrays   */


typedef enum {
    V_UNDEF = 0,
    V_ACT,          /* [batch, dims...] produced at run time */
    V_CONST         /* an initializer */
} ig_onnx_vkind_e;


typedef struct {
    const char                *name;
    int                        kind;
    int                        rank;     /* full rank, batch included  */
    int64_t                    dims[IG_ONNX_MAX_RANK];  /* ACT: [0] = batch */
    size_t                     row;      /* ACT: floats per batch row  */
    int                        slot;     /* ACT                        */
    int                        uses;     /* readers left               */
    const Onnx__TensorProto   *init;     /* CONST                      */
    float                     *data;     /* CONST, loaded when used    */
    size_t                     count;
} ig_onnx_val_t;


typedef struct {
    ig_model_t       model;
    ig_mlp_plan_t    plan;
    size_t           steps_cap;
    size_t           slots_cap;
    void           **owned;      /* weights and bias rows */
    size_t           nowned;
    size_t           owned_cap;
    ig_mlp_cpu_t     cpu;        /* mlp_cpu.c: buffers, passes */
    ig_mlp_cuda_t   *gpu;
} ig_onnx_model_t;


typedef struct {
    ig_onnx_model_t    *m;
    ig_onnx_val_t      *vals;
    size_t              nvals;
    size_t              vals_cap;
    uint32_t           *hash;        /* value index + 1, 0 = empty */
    size_t              hash_size;
    int64_t             opset;
    size_t              expanded;    /* floats of bias rows */
    char               *err;
    size_t              errlen;
} ig_onnx_ctx_t;


static const ig_model_ops_t  ig_onnx_ops;


static int
ig_onnx_fail(ig_onnx_ctx_t *c, const char *fmt, ...)
{
    int             n;
    va_list         ap;
    unsigned char  *p;

    n = snprintf(c->err, c->errlen, "onnx: ");
    if (n < 0 || (size_t) n >= c->errlen) {
        return -1;
    }

    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - n, fmt, ap);
    va_end(ap);

    /* names come from the file: keep the message printable for logs */
    for (p = (unsigned char *) c->err; *p; p++) {
        if (*p < 0x20 || *p >= 0x7f) {
            *p = '?';
        }
    }

    return -1;
}


static const char *
ig_onnx_str(const char *s)
{
    return s ? s : "";
}


static const char *
ig_onnx_dtype_name(int32_t t)
{
    const ProtobufCEnumValue  *v;

    v = protobuf_c_enum_descriptor_get_value(
            &onnx__tensor_proto__data_type__descriptor, t);

    return v ? v->name : "unknown";
}


/* a * b, or 0 on overflow past limit */
static size_t
ig_onnx_mul(size_t a, size_t b, size_t limit)
{
    if (a != 0 && b > limit / a) {
        return 0;
    }

    return a * b;
}


static void *
ig_onnx_own(ig_onnx_ctx_t *c, size_t bytes)
{
    void             *p, **o;
    ig_onnx_model_t  *m;

    m = c->m;

    if (m->nowned == m->owned_cap) {
        o = realloc(m->owned, (m->owned_cap * 2 + 8) * sizeof(void *));
        if (o == NULL) {
            return NULL;
        }

        m->owned = o;
        m->owned_cap = m->owned_cap * 2 + 8;
    }

    p = malloc(bytes ? bytes : 1);
    if (p != NULL) {
        m->owned[m->nowned++] = p;
    }

    return p;
}


/* values by name: open addressing over a power-of-two table */

static uint32_t
ig_onnx_hash_str(const char *s)
{
    uint32_t  h;

    h = 2166136261u;
    while (*s) {
        h = (h ^ (uint8_t) *s++) * 16777619u;
    }

    return h;
}


static ig_onnx_val_t *
ig_onnx_value(ig_onnx_ctx_t *c, const char *name, int create)
{
    size_t          i, mask;
    uint32_t        idx;
    ig_onnx_val_t  *v;

    mask = c->hash_size - 1;
    i = ig_onnx_hash_str(name) & mask;

    while ((idx = c->hash[i]) != 0) {
        v = &c->vals[idx - 1];
        if (strcmp(v->name, name) == 0) {
            return v;
        }

        i = (i + 1) & mask;
    }

    if (!create || c->nvals == c->vals_cap) {
        return NULL;
    }

    v = &c->vals[c->nvals++];
    memset(v, 0, sizeof(*v));
    v->name = name;
    v->slot = -1;
    c->hash[i] = (uint32_t) c->nvals;

    return v;
}


static int
ig_onnx_new_slot(ig_onnx_ctx_t *c, size_t row)
{
    size_t           *r, n;
    ig_onnx_model_t  *m;

    m = c->m;

    if (m->plan.nslots == m->slots_cap) {
        n = m->slots_cap * 2 + 8;
        r = realloc(m->plan.slot_row, n * sizeof(size_t));
        if (r == NULL) {
            return -1;
        }

        m->plan.slot_row = r;
        m->slots_cap = n;
    }

    m->plan.slot_row[m->plan.nslots] = row;

    return (int) m->plan.nslots++;
}


static ig_mlp_step_t *
ig_onnx_new_step(ig_onnx_ctx_t *c, int op)
{
    size_t            n;
    ig_mlp_step_t    *s;
    ig_onnx_model_t  *m;

    m = c->m;

    if (m->plan.nsteps == m->steps_cap) {
        n = m->steps_cap * 2 + 8;
        s = realloc(m->plan.steps, n * sizeof(ig_mlp_step_t));
        if (s == NULL) {
            return NULL;
        }

        m->plan.steps = s;
        m->steps_cap = n;
    }

    s = &m->plan.steps[m->plan.nsteps++];
    memset(s, 0, sizeof(*s));
    s->op = op;
    s->c_slot = -1;
    s->alpha = 1.0f;
    s->mult = 1;

    return s;
}


/* Initializer data as floats, checked against its dims. */
static int
ig_onnx_const_load(ig_onnx_ctx_t *c, ig_onnx_val_t *v)
{
    size_t                    i, count;
    const Onnx__TensorProto  *t;

    if (v->data != NULL) {
        return 0;
    }

    t = v->init;

    if (!t->has_data_type || t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
    {
        return ig_onnx_fail(c, "initializer \"%s\" has data type %s; only "
                            "FLOAT is supported", v->name,
                            ig_onnx_dtype_name(t->has_data_type
                                               ? t->data_type : 0));
    }

    if (t->has_data_location
        && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    {
        return ig_onnx_fail(c, "initializer \"%s\" uses external data, "
                            "which is not supported", v->name);
    }

    if (t->segment != NULL) {
        return ig_onnx_fail(c, "initializer \"%s\" is segmented", v->name);
    }

    if (t->n_dims > IG_ONNX_MAX_RANK) {
        return ig_onnx_fail(c, "initializer \"%s\" has rank %zu (max %d)",
                            v->name, t->n_dims, IG_ONNX_MAX_RANK);
    }

    count = 1;
    for (i = 0; i < t->n_dims; i++) {
        if (t->dims[i] < 0 || t->dims[i] > IG_ONNX_MAX_CONST) {
            return ig_onnx_fail(c, "initializer \"%s\": bad dimension %lld",
                                v->name, (long long) t->dims[i]);
        }

        count = ig_onnx_mul(count, (size_t) t->dims[i], IG_ONNX_MAX_CONST);
        if (count == 0 && t->dims[i] != 0) {
            return ig_onnx_fail(c, "initializer \"%s\" is too large",
                                v->name);
        }

        v->dims[i] = t->dims[i];
    }

    v->rank = (int) t->n_dims;

    /* sizes checked against what the file holds before allocating */
    if (t->has_raw_data && t->raw_data.len > 0) {
        if (t->raw_data.len != count * sizeof(float)) {
            return ig_onnx_fail(c, "initializer \"%s\": %zu bytes of raw "
                                "data for %zu floats", v->name,
                                t->raw_data.len, count);
        }

    } else if (t->n_float_data != count) {
        return ig_onnx_fail(c, "initializer \"%s\": %zu values for %zu "
                            "elements", v->name, t->n_float_data, count);
    }

    v->data = ig_onnx_own(c, count * sizeof(float));
    if (v->data == NULL) {
        return ig_onnx_fail(c, "out of memory");
    }

    if (t->has_raw_data && t->raw_data.len > 0) {
        /* little-endian in the file as on every host this builds for */
        memcpy(v->data, t->raw_data.data, t->raw_data.len);

    } else if (count) {
        memcpy(v->data, t->float_data, count * sizeof(float));
    }

    v->count = count;

    return 0;
}


static int
ig_onnx_attr_f(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, const char *name,
    float dflt, float *out)
{
    size_t                       i;
    const Onnx__AttributeProto  *a;

    *out = dflt;

    for (i = 0; i < n->n_attribute; i++) {
        a = n->attribute[i];
        if (a->name == NULL || strcmp(a->name, name) != 0) {
            continue;
        }

        if (!a->has_f || (a->has_type
                          && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT))
        {
            return ig_onnx_fail(c, "%s node \"%s\": attribute %s is not a "
                                "float", n->op_type, ig_onnx_str(n->name),
                                name);
        }

        *out = a->f;
    }

    return 0;
}


static int
ig_onnx_attr_i(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, const char *name,
    int64_t dflt, int64_t *out)
{
    size_t                       i;
    const Onnx__AttributeProto  *a;

    *out = dflt;

    for (i = 0; i < n->n_attribute; i++) {
        a = n->attribute[i];
        if (a->name == NULL || strcmp(a->name, name) != 0) {
            continue;
        }

        if (!a->has_i || (a->has_type
                          && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT))
        {
            return ig_onnx_fail(c, "%s node \"%s\": attribute %s is not an "
                                "int", n->op_type, ig_onnx_str(n->name),
                                name);
        }

        *out = a->i;
    }

    return 0;
}


static void
ig_onnx_shape_str(const ig_onnx_val_t *v, char *buf, size_t len)
{
    int     i;
    size_t  n;

    n = (size_t) snprintf(buf, len, "[");
    for (i = 0; i < v->rank && n < len; i++) {
        if (v->kind == V_ACT && i == 0) {
            n += snprintf(buf + n, len - n, "%sbatch", i ? "," : "");
        } else {
            n += snprintf(buf + n, len - n, "%s%lld", i ? "," : "",
                          (long long) v->dims[i]);
        }
    }

    if (n < len) {
        snprintf(buf + n, len - n, "]");
    }
}


/* Defines an activation value; dims[1..rank-1] fixed and positive. */
static int
ig_onnx_define(ig_onnx_ctx_t *c, ig_onnx_val_t *v, int rank,
    const int64_t *dims, int slot)
{
    int     i;
    size_t  row;

    if (rank < 1 || rank > IG_ONNX_MAX_RANK) {
        return ig_onnx_fail(c, "value \"%s\" would have rank %d (1 to %d "
                            "supported)", v->name, rank, IG_ONNX_MAX_RANK);
    }

    row = 1;
    for (i = 1; i < rank; i++) {
        if (dims[i] <= 0 || dims[i] > IG_ONNX_MAX_ROW) {
            return ig_onnx_fail(c, "value \"%s\": dimension %d is %lld",
                                v->name, i, (long long) dims[i]);
        }

        row = ig_onnx_mul(row, (size_t) dims[i], IG_ONNX_MAX_ROW);
        if (row == 0) {
            return ig_onnx_fail(c, "value \"%s\": more than %u floats per "
                                "row", v->name, IG_ONNX_MAX_ROW);
        }
    }

    if (slot < 0) {
        slot = ig_onnx_new_slot(c, row);
        if (slot < 0) {
            return ig_onnx_fail(c, "out of memory");
        }
    }

    v->kind = V_ACT;
    v->rank = rank;
    memcpy(v->dims, dims, rank * sizeof(int64_t));
    v->dims[0] = -1;
    v->row = row;
    v->slot = slot;

    return 0;
}


/*
 * The slot an elementwise step may write in place: the operand's own
 * when this node is its last reader (and it is not the caller's input).
 */
static int
ig_onnx_inplace(ig_onnx_ctx_t *c, const ig_onnx_val_t *v)
{
    size_t  i, readers;

    if (v->kind != V_ACT || v->slot <= IG_MLP_SLOT_OUT) {
        return -1;
    }

    /* readers left of every value that shares the slot (aliases) */
    readers = 0;
    for (i = 0; i < c->nvals; i++) {
        if (c->vals[i].kind == V_ACT && c->vals[i].slot == v->slot) {
            readers += c->vals[i].uses;
        }
    }

    return readers == 1 ? v->slot : -1;
}


/* Expands a constant that broadcasts onto activation a into one row. */
static float *
ig_onnx_bias_row(ig_onnx_ctx_t *c, const ig_onnx_val_t *a,
    ig_onnx_val_t *k, float scale, const char *what)
{
    int      i, ai, off;
    size_t   j, idx, rem, stride[IG_ONNX_MAX_RANK];
    float   *row;
    char     sa[128], sk[128];

    if (ig_onnx_const_load(c, k) != 0) {
        return NULL;
    }

    ig_onnx_shape_str(a, sa, sizeof(sa));
    ig_onnx_shape_str(k, sk, sizeof(sk));

    if (k->rank > a->rank) {
        ig_onnx_fail(c, "%s: constant \"%s\" %s does not broadcast onto %s",
                     what, k->name, sk, sa);
        return NULL;
    }

    /* strides of k seen from a's axes; 0 where k broadcasts */
    off = a->rank - k->rank;
    for (ai = a->rank - 1, j = 1; ai >= 1; ai--) {
        i = ai - off;
        if (i < 0 || k->dims[i] == 1) {
            stride[ai] = 0;
            continue;
        }

        if (k->dims[i] != a->dims[ai]) {
            ig_onnx_fail(c, "%s: constant \"%s\" %s does not broadcast onto "
                         "%s", what, k->name, sk, sa);
            return NULL;
        }

        stride[ai] = j;
        j *= (size_t) k->dims[i];
    }

    if (off == 0 && k->rank > 0 && k->dims[0] != 1) {
        ig_onnx_fail(c, "%s: constant \"%s\" %s has a batch dimension %lld",
                     what, k->name, sk, (long long) k->dims[0]);
        return NULL;
    }

    if (k->count == 0) {
        ig_onnx_fail(c, "%s: constant \"%s\" is empty", what, k->name);
        return NULL;
    }

    /* expansions are not bounded by the file size: cap their total */
    c->expanded += a->row;
    if (c->expanded > IG_ONNX_EXPAND_MAX) {
        ig_onnx_fail(c, "bias rows need more than %u floats",
                     IG_ONNX_EXPAND_MAX);
        return NULL;
    }

    row = ig_onnx_own(c, a->row * sizeof(float));
    if (row == NULL) {
        ig_onnx_fail(c, "out of memory");
        return NULL;
    }

    for (j = 0; j < a->row; j++) {
        rem = j;
        idx = 0;
        for (ai = a->rank - 1; ai >= 1; ai--) {
            idx += (rem % (size_t) a->dims[ai]) * stride[ai];
            rem /= (size_t) a->dims[ai];
        }

        row[j] = k->data[idx] * scale;
    }

    return row;
}


static ig_onnx_val_t *
ig_onnx_input(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, size_t i)
{
    if (i >= n->n_input || n->input[i] == NULL || n->input[i][0] == '\0') {
        return NULL;
    }

    return ig_onnx_value(c, n->input[i], 0);
}


static int
ig_onnx_gemm(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, ig_onnx_val_t *y)
{
    float           alpha, beta;
    int64_t         ta, tb, dims[2];
    const char     *nm;
    ig_mlp_step_t  *s;
    ig_onnx_val_t  *a, *b, *cc;

    nm = ig_onnx_str(n->name);

    if (ig_onnx_attr_f(c, n, "alpha", 1.0f, &alpha) != 0
        || ig_onnx_attr_f(c, n, "beta", 1.0f, &beta) != 0
        || ig_onnx_attr_i(c, n, "transA", 0, &ta) != 0
        || ig_onnx_attr_i(c, n, "transB", 0, &tb) != 0)
    {
        return -1;
    }

    a = ig_onnx_input(c, n, 0);
    b = ig_onnx_input(c, n, 1);
    cc = ig_onnx_input(c, n, 2);

    if (a == NULL || b == NULL || n->n_input > 3) {
        return ig_onnx_fail(c, "Gemm node \"%s\": needs inputs A, B and "
                            "an optional C", nm);
    }

    if (a->kind != V_ACT || a->rank != 2) {
        return ig_onnx_fail(c, "Gemm node \"%s\": A must be a [batch, K] "
                            "activation", nm);
    }

    if (ta != 0) {
        return ig_onnx_fail(c, "Gemm node \"%s\": transA=1 would contract "
                            "the batch dimension", nm);
    }

    if (b->kind != V_CONST) {
        return ig_onnx_fail(c, "Gemm node \"%s\": B must be an initializer",
                            nm);
    }

    if (ig_onnx_const_load(c, b) != 0) {
        return -1;
    }

    if (b->rank != 2 || b->dims[tb ? 1 : 0] != a->dims[1]
        || b->dims[tb ? 0 : 1] <= 0)
    {
        return ig_onnx_fail(c, "Gemm node \"%s\": B \"%s\" does not fit A's "
                            "%lld columns (transB=%lld)", nm, b->name,
                            (long long) a->dims[1], (long long) tb);
    }

    s = ig_onnx_new_step(c, IG_MLP_GEMM);
    if (s == NULL) {
        return ig_onnx_fail(c, "out of memory");
    }

    s->in = a->slot;
    s->k = (size_t) a->dims[1];
    s->n = (size_t) b->dims[tb ? 0 : 1];
    s->alpha = alpha;
    s->beta = beta;
    s->w = b->data;

    if (tb) {
        /* [n, k] stored once as [k, n]: OpenBLAS's NoTrans path packs
         * faster at small batches (about 20% at batch 16) */
        size_t  kk, nn;
        float  *t;

        t = ig_onnx_own(c, s->k * s->n * sizeof(float));
        if (t == NULL) {
            return ig_onnx_fail(c, "out of memory");
        }

        for (nn = 0; nn < s->n; nn++) {
            for (kk = 0; kk < s->k; kk++) {
                t[kk * s->n + nn] = b->data[nn * s->k + kk];
            }
        }

        s = &c->m->plan.steps[c->m->plan.nsteps - 1];
        s->w = t;
    }
    s->row_in = a->row;
    s->row_out = s->n;

    dims[0] = -1;
    dims[1] = (int64_t) s->n;

    if (ig_onnx_define(c, y, 2, dims, -1) != 0) {
        return -1;
    }

    s->out = y->slot;

    if (cc == NULL || beta == 0.0f) {
        return 0;
    }

    if (cc->kind == V_CONST) {
        s->bias = ig_onnx_bias_row(c, y, cc, beta, "Gemm C");
        return s->bias ? 0 : -1;
    }

    if (cc->kind != V_ACT || cc->rank != 2 || cc->dims[1] != (int64_t) s->n) {
        return ig_onnx_fail(c, "Gemm node \"%s\": C must be a constant or "
                            "a [batch, %zu] activation", nm, s->n);
    }

    s->c_slot = cc->slot;

    return 0;
}


static int
ig_onnx_matmul(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, ig_onnx_val_t *y)
{
    int             i, rank;
    int64_t         dims[IG_ONNX_MAX_RANK];
    const char     *nm;
    ig_mlp_step_t  *s;
    ig_onnx_val_t  *a, *b;

    nm = ig_onnx_str(n->name);
    a = ig_onnx_input(c, n, 0);
    b = ig_onnx_input(c, n, 1);

    if (a == NULL || b == NULL || n->n_input != 2) {
        return ig_onnx_fail(c, "MatMul node \"%s\": needs two inputs", nm);
    }

    if (a->kind != V_ACT || b->kind != V_CONST) {
        return ig_onnx_fail(c, "MatMul node \"%s\": only activation x "
                            "initializer is supported", nm);
    }

    if (ig_onnx_const_load(c, b) != 0) {
        return -1;
    }

    if (a->rank < 2) {
        return ig_onnx_fail(c, "MatMul node \"%s\": A has no feature "
                            "dimension", nm);
    }

    if (b->rank < 1 || b->rank > 2 || b->dims[0] != a->dims[a->rank - 1]
        || (b->rank == 2 && b->dims[1] <= 0))
    {
        return ig_onnx_fail(c, "MatMul node \"%s\": B \"%s\" does not fit "
                            "A's last dimension %lld", nm, b->name,
                            (long long) a->dims[a->rank - 1]);
    }

    s = ig_onnx_new_step(c, IG_MLP_GEMM);
    if (s == NULL) {
        return ig_onnx_fail(c, "out of memory");
    }

    s->in = a->slot;
    s->k = (size_t) b->dims[0];
    s->n = b->rank == 2 ? (size_t) b->dims[1] : 1;
    s->mult = a->row / s->k;
    s->w = b->data;
    s->row_in = a->row;
    s->row_out = s->mult * s->n;

    rank = a->rank - 1;
    for (i = 0; i < rank; i++) {
        dims[i] = a->dims[i];
    }

    if (b->rank == 2) {
        dims[rank++] = b->dims[1];
    }

    if (ig_onnx_define(c, y, rank, dims, -1) != 0) {
        return -1;
    }

    c->m->plan.steps[c->m->plan.nsteps - 1].out = y->slot;

    return 0;
}


static int
ig_onnx_add(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, ig_onnx_val_t *y)
{
    int             i, slot;
    float          *bias;
    const char     *nm;
    ig_mlp_step_t  *s;
    ig_onnx_val_t  *a, *b, *t;
    char            sa[128], sb[128];

    nm = ig_onnx_str(n->name);
    a = ig_onnx_input(c, n, 0);
    b = ig_onnx_input(c, n, 1);

    if (a == NULL || b == NULL || n->n_input != 2) {
        return ig_onnx_fail(c, "Add node \"%s\": needs two inputs", nm);
    }

    if (a->kind == V_CONST && b->kind == V_CONST) {
        return ig_onnx_fail(c, "Add node \"%s\": adds two constants (fold "
                            "them before export)", nm);
    }

    if (a->kind == V_CONST) {
        t = a;
        a = b;
        b = t;
    }

    if (b->kind == V_CONST) {
        bias = ig_onnx_bias_row(c, a, b, 1.0f, "Add");
        if (bias == NULL) {
            return -1;
        }

        slot = ig_onnx_inplace(c, a);
        if (ig_onnx_define(c, y, a->rank, a->dims, slot) != 0) {
            return -1;
        }

        s = ig_onnx_new_step(c, IG_MLP_ADD_ROW);
        if (s == NULL) {
            return ig_onnx_fail(c, "out of memory");
        }

        s->in = a->slot;
        s->out = y->slot;
        s->bias = bias;
        s->row_in = a->row;
        s->row_out = a->row;

        return 0;
    }

    if (a->rank != b->rank) {
        goto mismatch;
    }

    for (i = 1; i < a->rank; i++) {
        if (a->dims[i] != b->dims[i]) {
            goto mismatch;
        }
    }

    slot = ig_onnx_inplace(c, a);
    if (slot < 0 && a != b) {
        slot = ig_onnx_inplace(c, b);
    }

    if (ig_onnx_define(c, y, a->rank, a->dims, slot) != 0) {
        return -1;
    }

    s = ig_onnx_new_step(c, IG_MLP_ADD);
    if (s == NULL) {
        return ig_onnx_fail(c, "out of memory");
    }

    s->in = a->slot;
    s->in2 = b->slot;
    s->out = y->slot;
    s->row_in = a->row;
    s->row_out = a->row;

    return 0;

mismatch:

    ig_onnx_shape_str(a, sa, sizeof(sa));
    ig_onnx_shape_str(b, sb, sizeof(sb));

    return ig_onnx_fail(c, "Add node \"%s\": activations of shapes %s and "
                        "%s (only equal shapes or a constant bias)", nm, sa,
                        sb);
}


static int
ig_onnx_unary(ig_onnx_ctx_t *c, const Onnx__NodeProto *n, ig_onnx_val_t *y)
{
    int             i, slot, act;
    float           alpha;
    int64_t         axis, dims[2];
    size_t          outer, dim, inner;
    const char     *op, *nm;
    ig_mlp_step_t  *s;
    ig_onnx_val_t  *x;

    op = n->op_type;
    nm = ig_onnx_str(n->name);
    x = ig_onnx_input(c, n, 0);

    if (x == NULL || n->n_input != 1) {
        return ig_onnx_fail(c, "%s node \"%s\": needs one input", op, nm);
    }

    if (x->kind == V_CONST && strcmp(op, "Identity") == 0) {
        /* torch writes these for tied weights: the output is the same
         * initializer under another name */
        y->kind = V_CONST;
        y->init = x->init;
        y->slot = -1;
        return 0;
    }

    if (x->kind != V_ACT) {
        return ig_onnx_fail(c, "%s node \"%s\": input \"%s\" is a constant "
                            "(fold it before export)", op, nm, x->name);
    }

    if (strcmp(op, "Identity") == 0) {
        return ig_onnx_define(c, y, x->rank, x->dims, x->slot);
    }

    if (strcmp(op, "Flatten") == 0) {
        if (ig_onnx_attr_i(c, n, "axis", 1, &axis) != 0) {
            return -1;
        }

        if (axis < 0) {
            axis += x->rank;
        }

        if (axis != 1) {
            return ig_onnx_fail(c, "Flatten node \"%s\": axis %lld would "
                                "merge the batch dimension (only 1 is "
                                "supported)", nm, (long long) axis);
        }

        dims[0] = -1;
        dims[1] = (int64_t) x->row;

        return ig_onnx_define(c, y, 2, dims, x->slot);
    }

    alpha = 0.0f;
    outer = dim = inner = 0;

    if (strcmp(op, "Softmax") == 0) {
        if (ig_onnx_attr_i(c, n, "axis", c->opset >= 13 ? -1 : 1, &axis)
            != 0)
        {
            return -1;
        }

        if (axis < 0) {
            axis += x->rank;
        }

        if (axis < 0 || axis >= x->rank) {
            return ig_onnx_fail(c, "Softmax node \"%s\": axis out of range",
                                nm);
        }

        if (axis == 0) {
            return ig_onnx_fail(c, "Softmax node \"%s\": a softmax over the "
                                "batch dimension is not a per-row model",
                                nm);
        }

        outer = 1;
        for (i = 1; i < axis; i++) {
            outer *= (size_t) x->dims[i];
        }

        if (c->opset >= 13) {
            dim = (size_t) x->dims[axis];
            inner = x->row / outer / dim;

        } else {
            /* opsets 1-12 coerce the input to 2-D at axis */
            dim = x->row / outer;
            inner = 1;
        }

        act = IG_ACT_NONE;

    } else if (strcmp(op, "Relu") == 0) {
        act = IG_ACT_RELU;

    } else if (strcmp(op, "LeakyRelu") == 0) {
        act = IG_ACT_LEAKY_RELU;
        if (ig_onnx_attr_f(c, n, "alpha", 0.01f, &alpha) != 0) {
            return -1;
        }

    } else if (strcmp(op, "Sigmoid") == 0) {
        act = IG_ACT_SIGMOID;

    } else {
        act = IG_ACT_TANH;
    }

    slot = ig_onnx_inplace(c, x);
    if (ig_onnx_define(c, y, x->rank, x->dims, slot) != 0) {
        return -1;
    }

    s = ig_onnx_new_step(c, dim ? IG_MLP_SOFTMAX : IG_MLP_ACT);
    if (s == NULL) {
        return ig_onnx_fail(c, "out of memory");
    }

    s->in = x->slot;
    s->out = y->slot;
    s->act = act;
    s->act_alpha = alpha;
    s->row_in = x->row;
    s->row_out = x->row;
    s->outer = outer;
    s->dim = dim;
    s->inner = inner;

    return 0;
}


static const char *ig_onnx_supported[] = {
    "Gemm", "MatMul", "Add", "Relu", "LeakyRelu", "Sigmoid", "Tanh",
    "Softmax", "Flatten", "Identity", NULL
};


static int
ig_onnx_check_node(ig_onnx_ctx_t *c, const Onnx__NodeProto *n)
{
    size_t       i;
    const char  *op, *dom;

    op = ig_onnx_str(n->op_type);
    dom = ig_onnx_str(n->domain);

    if (dom[0] != '\0' && strcmp(dom, "ai.onnx") != 0) {
        return ig_onnx_fail(c, "unsupported op \"%s\" of domain \"%s\" "
                            "(node \"%s\")", op, dom, ig_onnx_str(n->name));
    }

    for (i = 0; ig_onnx_supported[i]; i++) {
        if (strcmp(op, ig_onnx_supported[i]) == 0) {
            break;
        }
    }

    if (ig_onnx_supported[i] == NULL) {
        return ig_onnx_fail(c, "unsupported op \"%s\" (node \"%s\"); "
                            "supported: Gemm, MatMul, Add, Relu, LeakyRelu, "
                            "Sigmoid, Tanh, Softmax, Flatten, Identity", op,
                            ig_onnx_str(n->name));
    }

    if (n->n_output != 1 || n->output[0] == NULL || n->output[0][0] == '\0')
    {
        return ig_onnx_fail(c, "%s node \"%s\": exactly one output "
                            "expected", op, ig_onnx_str(n->name));
    }

    if (n->n_input > 3) {
        return ig_onnx_fail(c, "%s node \"%s\": %zu inputs", op,
                            ig_onnx_str(n->name), n->n_input);
    }

    return 0;
}


static int
ig_onnx_tensor_type(ig_onnx_ctx_t *c, const Onnx__ValueInfoProto *vi,
    const char *what, const Onnx__TypeProto__Tensor **tt)
{
    const Onnx__TypeProto  *tp;

    tp = vi->type;

    if (tp == NULL || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
        || tp->tensor_type == NULL)
    {
        return ig_onnx_fail(c, "%s \"%s\" is not a tensor", what,
                            ig_onnx_str(vi->name));
    }

    *tt = tp->tensor_type;

    if ((*tt)->has_elem_type
        && (*tt)->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
    {
        return ig_onnx_fail(c, "%s \"%s\" has data type %s; only FLOAT is "
                            "supported", what, ig_onnx_str(vi->name),
                            ig_onnx_dtype_name((*tt)->elem_type));
    }

    return 0;
}


static void
ig_onnx_desc(ig_tensor_desc_t *d, const ig_onnx_val_t *v)
{
    int  i;

    snprintf(d->name, sizeof(d->name), "%s", v->name);
    d->dtype = IG_DT_FP32;
    d->ndims = (uint32_t) v->rank;
    for (i = 0; i < v->rank; i++) {
        d->dims[i] = v->dims[i];
    }

    d->dims[0] = -1;
}


/* Merges a bias or an activation into the step that fed it in place. */
static void
ig_onnx_fuse(ig_onnx_model_t *m)
{
    size_t          i, j;
    ig_mlp_step_t  *p, *s;

    for (i = 0, j = 0; i < m->plan.nsteps; i++) {
        s = &m->plan.steps[i];

        /* MatMul + Add of a bias: the GEMM's epilogue adds it */
        if (j > 0 && s->op == IG_MLP_ADD_ROW && s->in == s->out) {
            p = &m->plan.steps[j - 1];
            if (p->out == s->in && p->op == IG_MLP_GEMM && p->bias == NULL
                && p->act == IG_ACT_NONE && s->act == IG_ACT_NONE)
            {
                p->bias = s->bias;
                continue;
            }
        }

        if (j > 0 && s->op == IG_MLP_ACT && s->in == s->out) {
            p = &m->plan.steps[j - 1];
            if (p->out == s->in && p->act == IG_ACT_NONE
                && (p->op == IG_MLP_GEMM || p->op == IG_MLP_ADD_ROW
                    || p->op == IG_MLP_ADD))
            {
                p->act = s->act;
                p->act_alpha = s->act_alpha;
                continue;
            }
        }

        m->plan.steps[j++] = *s;
    }

    m->plan.nsteps = j;
}


static int
ig_onnx_build(ig_onnx_ctx_t *c, const Onnx__ModelProto *mp)
{
    int                               progress;
    size_t                            i, j, nvals, left, ninputs;
    int64_t                           dims[IG_ONNX_MAX_RANK];
    uint8_t                          *done;
    ig_onnx_val_t                    *v, *x, *out;
    ig_mlp_step_t                    *s;
    ig_onnx_model_t                  *m;
    const Onnx__GraphProto           *g;
    const Onnx__NodeProto            *n;
    const Onnx__ValueInfoProto       *vi, *gin;
    const Onnx__TypeProto__Tensor    *tt;
    const Onnx__TensorShapeProto     *sh;

    m = c->m;
    g = mp->graph;

    if (g == NULL) {
        return ig_onnx_fail(c, "the model has no graph");
    }

    c->opset = 13;
    for (i = 0; i < mp->n_opset_import; i++) {
        const char  *d = ig_onnx_str(mp->opset_import[i]->domain);

        if ((d[0] == '\0' || strcmp(d, "ai.onnx") == 0)
            && mp->opset_import[i]->has_version)
        {
            c->opset = mp->opset_import[i]->version;
        }
    }

    if (g->n_node > IG_ONNX_MAX_NODES || g->n_initializer > IG_ONNX_MAX_INITS
        || g->n_input > IG_ONNX_MAX_INITS)
    {
        return ig_onnx_fail(c, "graph too large (%zu nodes, %zu "
                            "initializers)", g->n_node, g->n_initializer);
    }

    if (g->n_sparse_initializer) {
        return ig_onnx_fail(c, "sparse initializers are not supported");
    }

    for (i = 0; i < g->n_node; i++) {
        if (ig_onnx_check_node(c, g->node[i]) != 0) {
            return -1;
        }
    }

    /* room for every name the graph can mention */
    nvals = g->n_input + g->n_initializer + g->n_output + 4 * g->n_node + 1;
    c->vals_cap = nvals;
    c->vals = calloc(nvals, sizeof(ig_onnx_val_t));
    for (c->hash_size = 16; c->hash_size < 2 * nvals; c->hash_size *= 2) {
        /* void */
    }
    c->hash = calloc(c->hash_size, sizeof(uint32_t));
    done = calloc(g->n_node + 1, 1);

    if (c->vals == NULL || c->hash == NULL || done == NULL) {
        free(done);
        return ig_onnx_fail(c, "out of memory");
    }

    /* slots 0 and 1: the caller's input and output */
    if (ig_onnx_new_slot(c, 0) != 0 || ig_onnx_new_slot(c, 0) != 1) {
        free(done);
        return ig_onnx_fail(c, "out of memory");
    }

    for (i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto  *t = g->initializer[i];

        if (t->name == NULL || t->name[0] == '\0') {
            free(done);
            return ig_onnx_fail(c, "initializer %zu has no name", i);
        }

        v = ig_onnx_value(c, t->name, 1);
        if (v == NULL || v->kind != V_UNDEF) {
            free(done);
            return ig_onnx_fail(c, "initializer \"%s\" defined twice",
                                t->name);
        }

        v->kind = V_CONST;
        v->init = t;
    }

    /* the one graph input that is not an initializer */
    gin = NULL;
    ninputs = 0;
    for (i = 0; i < g->n_input; i++) {
        vi = g->input[i];
        if (vi->name == NULL || vi->name[0] == '\0') {
            free(done);
            return ig_onnx_fail(c, "graph input %zu has no name", i);
        }

        v = ig_onnx_value(c, vi->name, 1);
        if (v == NULL) {
            free(done);
            return ig_onnx_fail(c, "too many names");
        }

        if (v->kind == V_CONST) {
            continue;
        }

        if (v->kind != V_UNDEF) {
            free(done);
            return ig_onnx_fail(c, "graph input \"%s\" listed twice",
                                vi->name);
        }

        gin = vi;
        ninputs++;
        v->kind = V_ACT;        /* defined below */
    }

    if (ninputs != 1) {
        free(done);
        return ig_onnx_fail(c, "the graph has %zu inputs; exactly one is "
                            "supported", ninputs);
    }

    if (ig_onnx_tensor_type(c, gin, "input", &tt) != 0) {
        free(done);
        return -1;
    }

    sh = tt->shape;
    if (sh == NULL || sh->n_dim < 1 || sh->n_dim > IG_MODEL_MAX_DIMS) {
        free(done);
        return ig_onnx_fail(c, "input \"%s\" must have rank 1 to %d",
                            gin->name, IG_MODEL_MAX_DIMS);
    }

    dims[0] = -1;   /* fixed or symbolic, the first dimension is the batch */
    for (i = 1; i < sh->n_dim; i++) {
        if (sh->dim[i]->value_case
            != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
        {
            free(done);
            return ig_onnx_fail(c, "input \"%s\": dimension %zu is not a "
                                "fixed size", gin->name, i);
        }

        dims[i] = sh->dim[i]->dim_value;
    }

    v = ig_onnx_value(c, gin->name, 0);
    if (ig_onnx_define(c, v, (int) sh->n_dim, dims, IG_MLP_SLOT_IN) != 0) {
        free(done);
        return -1;
    }

    ig_onnx_desc(&m->model.meta.input, v);
    m->model.meta.nfeatures = (uint32_t) v->row;

    /* every node output is new; count the readers of each value */
    for (i = 0; i < g->n_node; i++) {
        n = g->node[i];
        for (j = 0; j < n->n_input; j++) {
            if (n->input[j] == NULL || n->input[j][0] == '\0') {
                continue;
            }

            v = ig_onnx_value(c, n->input[j], 1);
            if (v == NULL) {
                free(done);
                return ig_onnx_fail(c, "too many names");
            }

            v->uses++;
        }
    }

    for (i = 0; i < g->n_node; i++) {
        n = g->node[i];
        v = ig_onnx_value(c, n->output[0], 1);
        if (v == NULL || v->kind != V_UNDEF || v->slot == -2) {
            free(done);
            return ig_onnx_fail(c, "value \"%s\" is defined twice",
                                n->output[0]);
        }

        v->slot = -2;       /* produced by a node, not yet defined */
    }

    if (g->n_output != 1 || g->output[0]->name == NULL) {
        free(done);
        return ig_onnx_fail(c, "the graph has %zu outputs; exactly one is "
                            "supported", g->n_output);
    }

    vi = g->output[0];
    if (ig_onnx_tensor_type(c, vi, "output", &tt) != 0) {
        free(done);
        return -1;
    }

    out = ig_onnx_value(c, vi->name, 0);
    if (out == NULL || (out->kind == V_UNDEF && out->slot != -2)) {
        free(done);
        return ig_onnx_fail(c, "output \"%s\" is not produced by the graph",
                            vi->name);
    }

    out->uses++;            /* the caller reads it last */

    /* nodes in dependency order, whatever order the file lists them in */
    left = g->n_node;
    do {
        progress = 0;

        for (i = 0; i < g->n_node; i++) {
            if (done[i]) {
                continue;
            }

            n = g->node[i];
            for (j = 0; j < n->n_input; j++) {
                x = ig_onnx_input(c, n, j);
                if (x != NULL && x->kind == V_UNDEF) {
                    break;
                }
            }

            if (j < n->n_input) {
                continue;
            }

            v = ig_onnx_value(c, n->output[0], 0);
            v->slot = -1;

            if (strcmp(n->op_type, "Gemm") == 0) {
                if (ig_onnx_gemm(c, n, v) != 0) {
                    goto failed;
                }

            } else if (strcmp(n->op_type, "MatMul") == 0) {
                if (ig_onnx_matmul(c, n, v) != 0) {
                    goto failed;
                }

            } else if (strcmp(n->op_type, "Add") == 0) {
                if (ig_onnx_add(c, n, v) != 0) {
                    goto failed;
                }

            } else if (ig_onnx_unary(c, n, v) != 0) {
                goto failed;
            }

            /* this node has read its inputs */
            for (j = 0; j < n->n_input; j++) {
                x = ig_onnx_input(c, n, j);
                if (x != NULL && x->uses > 0) {
                    x->uses--;
                }
            }

            done[i] = 1;
            left--;
            progress = 1;
        }

    } while (left && progress);

    if (left) {
        for (i = 0; i < g->n_node; i++) {
            if (!done[i]) {
                n = g->node[i];
                for (j = 0; j < n->n_input; j++) {
                    x = ig_onnx_input(c, n, j);
                    if (x == NULL && n->input[j] && n->input[j][0]) {
                        break;
                    }
                    if (x != NULL && x->kind == V_UNDEF) {
                        break;
                    }
                }

                free(done);
                return ig_onnx_fail(c, "node \"%s\": input \"%s\" is never "
                                    "produced (or a cycle)",
                                    ig_onnx_str(n->name),
                                    j < n->n_input
                                    ? ig_onnx_str(n->input[j]) : "?");
            }
        }
    }

    free(done);
    done = NULL;

    if (out->kind != V_ACT) {
        return ig_onnx_fail(c, "output \"%s\" is a constant", out->name);
    }

    if (out->rank > IG_MODEL_MAX_DIMS) {
        return ig_onnx_fail(c, "output \"%s\" has rank %d (max %d)",
                            out->name, out->rank, IG_MODEL_MAX_DIMS);
    }

    /* a declared output shape must agree with the computed one */
    sh = tt->shape;
    if (sh != NULL && sh->n_dim > 0) {
        if ((int) sh->n_dim != out->rank) {
            return ig_onnx_fail(c, "output \"%s\": declared rank %zu, "
                                "computed %d", out->name, sh->n_dim,
                                out->rank);
        }

        for (i = 1; i < sh->n_dim; i++) {
            if (sh->dim[i]->value_case
                == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                && sh->dim[i]->dim_value != out->dims[i])
            {
                return ig_onnx_fail(c, "output \"%s\": declared dimension "
                                    "%zu is %lld, computed %lld", out->name,
                                    i, (long long) sh->dim[i]->dim_value,
                                    (long long) out->dims[i]);
            }
        }
    }

    ig_onnx_desc(&m->model.meta.output, out);
    m->model.meta.noutputs = (uint32_t) out->row;
    m->plan.slot_row[IG_MLP_SLOT_IN] = m->model.meta.nfeatures;
    m->plan.slot_row[IG_MLP_SLOT_OUT] = out->row;

    if (out->slot == IG_MLP_SLOT_IN) {
        s = ig_onnx_new_step(c, IG_MLP_COPY);
        if (s == NULL) {
            return ig_onnx_fail(c, "out of memory");
        }

        s->in = IG_MLP_SLOT_IN;
        s->out = IG_MLP_SLOT_OUT;
        s->row_in = out->row;
        s->row_out = out->row;

    } else {
        /* the output's buffer is the caller's: no copy at the end */
        for (i = 0; i < m->plan.nsteps; i++) {
            s = &m->plan.steps[i];
            if (s->in == out->slot) {
                s->in = IG_MLP_SLOT_OUT;
            }
            if (s->in2 == out->slot) {
                s->in2 = IG_MLP_SLOT_OUT;
            }
            if (s->c_slot == out->slot) {
                s->c_slot = IG_MLP_SLOT_OUT;
            }
            if (s->out == out->slot) {
                s->out = IG_MLP_SLOT_OUT;
            }
        }

        m->plan.slot_row[out->slot] = 0;
    }

    ig_onnx_fuse(m);

    return 0;

failed:

    free(done);
    return -1;
}


static int
ig_onnx_predict(ig_model_t *model, ig_exec_t *ex, const float *in,
    size_t rows, float *out, char *err, size_t errlen)
{
    ig_onnx_model_t  *m;

    m = (ig_onnx_model_t *) model;

#ifndef IG_NO_CUDA
    if (ex->use_cuda && m->gpu != NULL) {
        return ig_mlp_cuda_run(m->gpu, in, rows, out, err, errlen);
    }
#endif

    return ig_mlp_cpu_run(&m->cpu, ex->threads, in, rows, out, err, errlen);
}


static void
ig_onnx_free(ig_model_t *model)
{
    size_t            i;
    ig_onnx_model_t  *m;

    m = (ig_onnx_model_t *) model;

#ifndef IG_NO_CUDA
    if (m->gpu) {
        ig_mlp_cuda_destroy(m->gpu);
    }
#endif

    for (i = 0; i < m->nowned; i++) {
        free(m->owned[i]);
    }

    free(m->owned);
    free(m->plan.steps);
    free(m->plan.slot_row);
    ig_mlp_cpu_free(&m->cpu);
    free(m);
}


static const ig_model_ops_t  ig_onnx_ops = {
    ig_onnx_predict,
    ig_onnx_free
};


static int
ig_onnx_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    int  shift;

    *v = 0;

    for (shift = 0; shift < 64 && *p < end; shift += 7) {
        *v |= (uint64_t) (**p & 0x7f) << shift;
        if ((*(*p)++ & 0x80) == 0) {
            return 0;
        }
    }

    return -1;
}


/*
 * protobuf-c unpacks nested messages recursively and allocates for each
 * message and field: a crafted file of a few MB (GraphProto inside an
 * attribute inside a node inside a GraphProto ...) overflows the stack,
 * and millions of empty messages cost far more memory than the file.
 * This walk over the wire format, guided by the generated descriptors,
 * bounds both before unpacking.  Malformed encodings are left to
 * protobuf-c to refuse.
 */
static int
ig_onnx_prescan(const uint8_t *data, size_t len, char *err, size_t errlen)
{
    int                                top;
    size_t                             nld, nscalar;
    uint64_t                           key, n, packed;
    const uint8_t                     *p;
    const ProtobufCFieldDescriptor    *fd;

    struct {
        const ProtobufCMessageDescriptor  *d;
        const uint8_t                     *p;
        const uint8_t                     *end;
    } st[IG_ONNX_MAX_DEPTH];

    top = 0;
    st[0].d = &onnx__model_proto__descriptor;
    st[0].p = data;
    st[0].end = data + len;
    nld = 0;
    nscalar = 0;
    packed = 0;

    while (top >= 0) {
        if (st[top].p >= st[top].end) {
            top--;
            continue;
        }

        if (nld > IG_ONNX_MAX_LD || nscalar > IG_ONNX_MAX_SCALARS) {
            snprintf(err, errlen, "onnx: more than %u messages and strings "
                     "or %u scalar fields", IG_ONNX_MAX_LD,
                     IG_ONNX_MAX_SCALARS);
            return -1;
        }

        p = st[top].p;

        if (ig_onnx_varint(&p, st[top].end, &key) != 0) {
            return 0;
        }

        switch (key & 7) {

        case 0:
            if (ig_onnx_varint(&p, st[top].end, &n) != 0) {
                return 0;
            }
            nscalar++;
            break;

        case 1:
        case 5:
            n = (key & 7) == 1 ? 8 : 4;
            if ((size_t) (st[top].end - p) < n) {
                return 0;
            }
            p += n;
            nscalar++;
            break;

        case 2:
            if (ig_onnx_varint(&p, st[top].end, &n) != 0
                || n > (uint64_t) (st[top].end - p))
            {
                return 0;
            }

            nld++;
            st[top].p = p + n;

            fd = protobuf_c_message_descriptor_get_field(st[top].d,
                                                         (unsigned) (key >> 3));
            if (fd != NULL && fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (top + 1 == IG_ONNX_MAX_DEPTH) {
                    snprintf(err, errlen, "onnx: messages nested deeper "
                             "than %d", IG_ONNX_MAX_DEPTH);
                    return -1;
                }

                top++;
                st[top].d = fd->descriptor;
                st[top].p = p;
                st[top].end = p + n;
                continue;
            }

            if (fd != NULL && fd->label == PROTOBUF_C_LABEL_REPEATED) {
                /* a packed array: 1-byte varints become 4 or 8 bytes */
                switch (fd->type) {
                case PROTOBUF_C_TYPE_INT64:
                case PROTOBUF_C_TYPE_UINT64:
                case PROTOBUF_C_TYPE_SINT64:
                    packed += n * 8;
                    break;
                case PROTOBUF_C_TYPE_INT32:
                case PROTOBUF_C_TYPE_UINT32:
                case PROTOBUF_C_TYPE_SINT32:
                case PROTOBUF_C_TYPE_ENUM:
                    packed += n * 4;
                    break;
                default:
                    packed += n;
                }

                if (packed > IG_ONNX_MAX_PACKED) {
                    snprintf(err, errlen, "onnx: packed arrays would "
                             "unpack to more than %llu bytes",
                             (unsigned long long) IG_ONNX_MAX_PACKED);
                    return -1;
                }
            }

            p += n;
            break;

        default:
            return 0;                   /* groups: protobuf-c refuses */
        }

        st[top].p = p;
    }

    return 0;
}


ig_model_t *
ig_onnx_load(const uint8_t *data, size_t len, ig_exec_t *ex, char *err,
    size_t errlen)
{
    int                rc;
    ig_onnx_ctx_t      c;
    ig_onnx_model_t   *m;
    Onnx__ModelProto  *mp;

    memset(&c, 0, sizeof(c));
    c.err = err;
    c.errlen = errlen;

    if (ig_onnx_prescan(data, len, err, errlen) != 0) {
        return NULL;
    }

    mp = onnx__model_proto__unpack(NULL, len, data);
    if (mp == NULL) {
        snprintf(err, errlen, "onnx: not a valid ONNX ModelProto (protobuf "
                 "parse failed)");
        return NULL;
    }

    m = calloc(1, sizeof(ig_onnx_model_t));
    if (m == NULL) {
        onnx__model_proto__free_unpacked(mp, NULL);
        snprintf(err, errlen, "onnx: out of memory");
        return NULL;
    }

    m->model.ops = &ig_onnx_ops;
    snprintf(m->model.meta.platform, sizeof(m->model.meta.platform), "onnx");
    c.m = m;

    rc = ig_onnx_build(&c, mp);

    free(c.vals);
    free(c.hash);
    onnx__model_proto__free_unpacked(mp, NULL);

    if (rc == 0) {
        rc = ig_mlp_cpu_init(&m->cpu, &m->plan, err, errlen);
    }

#ifndef IG_NO_CUDA
    if (rc == 0 && ex->use_cuda) {
        m->gpu = ig_mlp_cuda_create(ex->cuda_device, &m->plan, m->cpu.chunk,
                                    err, errlen);
        if (m->gpu == NULL) {
            rc = -1;

        } else {
            /* predictions run on the device: no packed copy on the host */
            ig_mlp_cpu_drop_packed(&m->cpu);
        }
    }
#else
    (void) ex;
#endif

    if (rc != 0) {
        ig_onnx_free(&m->model);
        return NULL;
    }

    return &m->model;
}
