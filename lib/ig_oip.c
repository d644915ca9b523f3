
/*
 * Copyright (C) infergate authors
 *
 * Open Inference Protocol codec.  The request is parsed in one pass by
 * ig_jsonlex with a small container stack; tensor values are converted
 * and written to the rows buffer as they are seen, whatever the order of
 * the input's members ("data" may come before "datatype" and "shape"):
 * per-value facts (boolean, fraction, integer range) are collected and
 * checked against the datatype when the input object closes.
 *
 * Choices where the protocol is silent:
 *   - unknown members of inputs and outputs are refused; unknown members
 *     of the request object are skipped, as Triton does, so a gateway
 *     schema may ask for the caller's own fields (user_id, login_time)
 *     beside the protocol's; "parameters" (any value that is an object)
 *     is skipped;
 *   - null in FP32/FP64 data is a missing value (NaN, as XGBoost reads
 *     it); output NaN and infinities are written as null;
 *   - nesting of "data" is flattened, only the element count is checked;
 *   - integers must be written without fraction or exponent.
 */

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ig_json.h"
#include "ig_jsonlex.h"
#include "ig_oip.h"


#define OIP_DEPTH       64
#define OIP_NUM_MAX     128
#define OIP_SHAPE_MAX   (IG_MODEL_MAX_DIMS + 1)
#define OIP_DIM_MAX     (1ULL << 40)


typedef enum {
    C_TOP = 1,
    C_INPUTS,
    C_INPUT,
    C_SHAPE,
    C_DATA,
    C_OUTPUTS,
    C_OUTPUT,
    C_SKIP,
    C_TPARAMS,               /* the request's "parameters"         */
    C_IPARAMS,               /* an input's "parameters"            */
    C_OPARAMS                /* an output's "parameters"           */
} oip_cont_e;


typedef enum {
    K_NONE = 0,
    K_ID,
    K_PARAMS,
    K_INPUTS,
    K_OUTPUTS,
    K_NAME,
    K_SHAPE,
    K_DTYPE,
    K_DATA,
    K_EXTRA,                 /* a request member the protocol lacks */
    K_BDS,                   /* binary_data_size                    */
    K_BD,                    /* binary_data                         */
    K_BDO,                   /* binary_data_output                  */
    K_CLASS,                 /* classification                      */
    K_PSKIP                  /* any other parameter                 */
} oip_key_e;


typedef enum {
    V_NULL,
    V_BOOL,
    V_NUM,
    V_STR,
    V_MAP,
    V_ARR
} oip_val_e;


typedef struct {
    const ig_model_meta_t  *meta;
    float                  *out;
    size_t                  max;
    ig_oip_request_t       *req;
    char                   *err;
    size_t                  errlen;
    int                     failed;

    uint8_t                 stack[OIP_DEPTH + 1];
    unsigned                depth;
    oip_key_e               key;
    unsigned                seen;        /* keys of the current object */
    unsigned                seen_top;    /* kept while inside children */

    size_t                  ninputs;
    uint32_t                dtype;
    size_t                  ndims;
    uint64_t                shape[OIP_SHAPE_MAX];
    int                     shape_long;

    uint64_t                count;
    unsigned                has_bool:1;
    unsigned                has_num:1;
    unsigned                has_null:1;
    unsigned                has_frac:1;
    unsigned                out32:1;
    unsigned                out64:1;
    unsigned                inf64:1;     /* beyond FP64                */
    unsigned                inf32:1;     /* beyond FP32                */

    /* the binary tensor data extension */
    const uint8_t          *bin;         /* after the JSON header      */
    size_t                  bin_len;
    size_t                  bin_off;     /* taken by earlier inputs    */
    unsigned                binary:1;    /* the header was given       */
    unsigned                has_bds:1;
    uint64_t                bds;         /* this input's byte size     */
    int                     bdo;         /* binary_data_output, -1     */
    int                     out_bd;      /* an output's binary_data,-1 */
} oip_dec_t;


/* exact doubles */
static const double  oip_pow10[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
};


static const char *oip_dtypes[] = {
    NULL, "BOOL", "INT32", "INT64", "FP32", "FP64"
};


static int
oip_fail(oip_dec_t *d, const char *fmt, ...)
{
    va_list  ap;

    if (!d->failed) {
        d->failed = 1;

        va_start(ap, fmt);
        vsnprintf(d->err, d->errlen, fmt, ap);
        va_end(ap);
    }

    return 0;
}


/* a printable excerpt of a client string for messages */

static const char *
oip_excerpt(char *buf, size_t size, const unsigned char *s, size_t len)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len && n + 4 < size; i++) {
        buf[n++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    }

    if (i < len) {
        buf[n++] = '.';
        buf[n++] = '.';
        buf[n++] = '.';
    }

    buf[n] = '\0';

    return buf;
}


static int
oip_streq(const unsigned char *s, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(s, lit, len) == 0;
}


static int
oip_push(oip_dec_t *d, oip_cont_e c)
{
    if (d->depth >= OIP_DEPTH) {
        return oip_fail(d, "the request nests too deep");
    }

    d->stack[++d->depth] = (uint8_t) c;

    if (c == C_TOP) {
        d->seen = 0;

    } else if (c == C_INPUT || c == C_OUTPUT) {
        d->seen_top = d->seen;
        d->seen = 0;
    }

    d->key = K_NONE;

    return 1;
}


static void
oip_input_reset(oip_dec_t *d)
{
    d->dtype = 0;
    d->ndims = 0;
    d->shape_long = 0;
    d->count = 0;
    d->has_bool = d->has_num = d->has_null = d->has_frac = 0;
    d->out32 = d->out64 = d->inf64 = d->inf32 = 0;
    d->has_bds = 0;
    d->bds = 0;
}


static void
oip_element(oip_dec_t *d, float v)
{
    if (d->count < d->max) {
        d->out[d->count] = v;
    }

    d->count++;
}


/*
 * Clinger's fast path: a JSON number whose significant digits fit 2^53
 * and whose decimal exponent is within 22 is one correctly rounded
 * multiplication or division of two exact doubles, the same value
 * strtod() gives.  Returns -1 for strtod() to do it.
 */

static int
oip_fast_double(const unsigned char *s, size_t len, double *v)
{
    int             neg, exp, eneg, e, digits;
    size_t          i;
    uint64_t        m;

    i = 0;
    neg = (s[0] == '-');
    i += neg;

    m = 0;
    exp = 0;
    digits = 0;

    for ( /* void */ ; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (m || s[i] != '0') {
            if (++digits > 19) {
                return -1;
            }
        }

        m = m * 10 + (s[i] - '0');
    }

    if (i < len && s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (m || s[i] != '0') {
                if (++digits > 19) {
                    return -1;
                }
            }

            m = m * 10 + (s[i] - '0');
            exp--;
        }
    }

    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        eneg = 0;

        if (i < len && (s[i] == '-' || s[i] == '+')) {
            eneg = (s[i] == '-');
            i++;
        }

        e = 0;

        for ( /* void */ ; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (e > 10000) {
                return -1;
            }

            e = e * 10 + (s[i] - '0');
        }

        exp += eneg ? -e : e;
    }

    if (i != len) {
        return -1;
    }

    if (m == 0) {
        *v = neg ? -0.0 : 0.0;
        return 0;
    }

    if (m > (1ULL << 53) || exp < -22 || exp > 22) {
        return -1;
    }

    *v = (exp >= 0) ? (double) m * oip_pow10[exp]
                    : (double) m / oip_pow10[-exp];

    if (neg) {
        *v = -*v;
    }

    return 0;
}


/*
 * A number in "data": its FP32 value, and the facts the datatype check
 * needs.  Integers in int64 range convert exactly from their integer
 * value; everything else through strtod.
 */

static int
oip_number(oip_dec_t *d, const unsigned char *s, size_t len)
{
    char      buf[OIP_NUM_MAX];
    int       neg, integer;
    size_t    i;
    double    v;
    uint64_t  mag, lim;

    if (len >= sizeof(buf)) {
        return oip_fail(d, "a number in \"data\" is longer than %d "
                        "characters", OIP_NUM_MAX - 1);
    }

    d->has_num = 1;

    integer = 1;

    for (i = 0; i < len; i++) {
        if (s[i] == '.' || s[i] == 'e' || s[i] == 'E') {
            integer = 0;
            break;
        }
    }

    if (integer) {
        neg = (s[0] == '-');
        mag = 0;
        lim = neg ? (1ULL << 63) : (1ULL << 63) - 1;

        for (i = neg; i < len; i++) {
            if (mag > (lim - (s[i] - '0')) / 10) {
                break;
            }

            mag = mag * 10 + (s[i] - '0');
        }

        if (i == len) {
            if (mag > (neg ? (1ULL << 31) : (1ULL << 31) - 1)) {
                d->out32 = 1;
            }

            if (neg) {
                /* -2^63 has no positive counterpart in int64_t */
                oip_element(d, mag == (1ULL << 63)
                               ? -9223372036854775808.0f
                               : (float) -(int64_t) mag);

            } else {
                oip_element(d, (float) (int64_t) mag);
            }

            return 1;
        }

        d->out32 = 1;
        d->out64 = 1;

    } else {
        d->has_frac = 1;
    }

    if (oip_fast_double(s, len, &v) != 0) {
        memcpy(buf, s, len);
        buf[len] = '\0';

        v = strtod(buf, NULL);
    }

    if (isinf(v)) {
        d->inf64 = 1;
        d->inf32 = 1;
        oip_element(d, 0.0f);
        return 1;
    }

    if (fabs(v) > FLT_MAX) {
        /* rounds to FLT_MAX only below FLT_MAX + half an ulp: keep simple */
        d->inf32 = 1;
        oip_element(d, 0.0f);
        return 1;
    }

    oip_element(d, (float) v);

    return 1;
}


static int
oip_shape_dim(oip_dec_t *d, const unsigned char *s, size_t len)
{
    size_t    i;
    uint64_t  v;

    v = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return oip_fail(d, "\"shape\" must hold non-negative integers");
        }

        v = v * 10 + (s[i] - '0');

        if (v > OIP_DIM_MAX) {
            return oip_fail(d, "a dimension in \"shape\" is too large");
        }
    }

    if (d->ndims == OIP_SHAPE_MAX) {
        d->shape_long = 1;
        return 1;
    }

    d->shape[d->ndims++] = v;

    return 1;
}


static int
oip_value(oip_dec_t *d, oip_val_e t, const unsigned char *s, size_t len)
{
    char       x[72];
    uint32_t   i;
    oip_key_e  key;

    if (d->depth == 0) {
        if (t != V_MAP) {
            return oip_fail(d, "the request body must be a JSON object");
        }

        return oip_push(d, C_TOP);
    }

    key = d->key;
    d->key = K_NONE;

    switch (d->stack[d->depth]) {

    case C_SKIP:
        return (t == V_MAP || t == V_ARR) ? oip_push(d, C_SKIP) : 1;

    case C_TOP:
        switch (key) {

        case K_ID:
            if (t != V_STR) {
                return oip_fail(d, "\"id\" must be a string");
            }

            if (len >= IG_OIP_ID_MAX) {
                return oip_fail(d, "\"id\" is longer than %d bytes",
                                IG_OIP_ID_MAX - 1);
            }

            memcpy(d->req->id, s, len);
            d->req->id[len] = '\0';
            d->req->id_len = len;
            d->req->has_id = 1;
            return 1;

        case K_PARAMS:
            if (t != V_MAP) {
                return oip_fail(d, "\"parameters\" must be an object");
            }

            return oip_push(d, C_TPARAMS);

        case K_EXTRA:
            return (t == V_MAP || t == V_ARR) ? oip_push(d, C_SKIP) : 1;

        case K_INPUTS:
            if (t != V_ARR) {
                return oip_fail(d, "\"inputs\" must be an array");
            }

            return oip_push(d, C_INPUTS);

        case K_OUTPUTS:
            if (t != V_ARR) {
                return oip_fail(d, "\"outputs\" must be an array");
            }

            return oip_push(d, C_OUTPUTS);

        default:
            return oip_fail(d, "malformed request");
        }

    case C_INPUTS:
        if (t != V_MAP) {
            return oip_fail(d, "each element of \"inputs\" must be an "
                            "object");
        }

        if (++d->ninputs > 1) {
            return oip_fail(d, "the model takes one input tensor, \"%s\"",
                            d->meta->input.name);
        }

        oip_input_reset(d);

        return oip_push(d, C_INPUT);

    case C_INPUT:
        switch (key) {

        case K_NAME:
            if (t != V_STR) {
                return oip_fail(d, "the input's \"name\" must be a string");
            }

            if (!oip_streq(s, len, d->meta->input.name)) {
                return oip_fail(d, "unknown input \"%s\": the model's input "
                                "is \"%s\"",
                                oip_excerpt(x, sizeof(x), s, len),
                                d->meta->input.name);
            }

            return 1;

        case K_DTYPE:
            if (t != V_STR) {
                return oip_fail(d, "\"datatype\" must be a string");
            }

            i = ig_oip_dtype_parse((const char *) s, len);

            if (i) {
                d->dtype = i;
                return 1;
            }

            return oip_fail(d, "unsupported datatype \"%s\": use BOOL, "
                            "INT32, INT64, FP32 or FP64",
                            oip_excerpt(x, sizeof(x), s, len));

        case K_SHAPE:
            if (t != V_ARR) {
                return oip_fail(d, "\"shape\" must be an array");
            }

            return oip_push(d, C_SHAPE);

        case K_DATA:
            if (t != V_ARR) {
                return oip_fail(d, "\"data\" must be an array");
            }

            return oip_push(d, C_DATA);

        case K_PARAMS:
            if (t != V_MAP) {
                return oip_fail(d, "\"parameters\" must be an object");
            }

            return oip_push(d, C_IPARAMS);

        default:
            return oip_fail(d, "malformed request");
        }

    case C_SHAPE:
        if (t != V_NUM) {
            return oip_fail(d, "\"shape\" must hold non-negative integers");
        }

        return oip_shape_dim(d, s, len);

    case C_DATA:
        switch (t) {

        case V_NUM:
            return oip_number(d, s, len);

        case V_BOOL:
            d->has_bool = 1;
            oip_element(d, len ? 1.0f : 0.0f);
            return 1;

        case V_NULL:
            d->has_null = 1;
            oip_element(d, NAN);
            return 1;

        case V_ARR:
            return oip_push(d, C_DATA);

        default:
            return oip_fail(d, "\"data\" must hold numbers or booleans");
        }

    case C_OUTPUTS:
        if (t != V_MAP) {
            return oip_fail(d, "each element of \"outputs\" must be an "
                            "object");
        }

        return oip_push(d, C_OUTPUT);

    case C_OUTPUT:
        switch (key) {

        case K_NAME:
            if (t != V_STR) {
                return oip_fail(d, "the output's \"name\" must be a string");
            }

            if (!oip_streq(s, len, d->meta->output.name)) {
                return oip_fail(d, "unknown output \"%s\": the model's "
                                "output is \"%s\"",
                                oip_excerpt(x, sizeof(x), s, len),
                                d->meta->output.name);
            }

            return 1;

        case K_PARAMS:
            if (t != V_MAP) {
                return oip_fail(d, "\"parameters\" must be an object");
            }

            return oip_push(d, C_OPARAMS);

        default:
            return oip_fail(d, "malformed request");
        }

    case C_TPARAMS:
    case C_IPARAMS:
    case C_OPARAMS:
        switch (key) {

        case K_BDO:
        case K_BD:
            if (t != V_BOOL) {
                return oip_fail(d, "\"%s\" must be true or false",
                                key == K_BD ? "binary_data"
                                            : "binary_data_output");
            }

            if (key == K_BD) {
                d->out_bd = (int) len;

            } else {
                d->bdo = (int) len;
            }

            return 1;

        case K_BDS:
            if (t != V_NUM || len > 18 || s[0] == '-'
                || memchr(s, '.', len) || memchr(s, 'e', len)
                || memchr(s, 'E', len))
            {
                return oip_fail(d, "input \"%s\": \"binary_data_size\" "
                                "must be a non-negative integer",
                                d->meta->input.name);
            }

            d->bds = 0;

            for (i = 0; i < len; i++) {
                d->bds = d->bds * 10 + (s[i] - '0');
            }

            d->has_bds = 1;
            return 1;

        case K_CLASS:
            return oip_fail(d, "the classification extension is not "
                            "supported: ask for the output's values");

        default:
            return (t == V_MAP || t == V_ARR) ? oip_push(d, C_SKIP) : 1;
        }
    }

    return oip_fail(d, "malformed request");
}


static int
oip_map_key(void *ctx, const unsigned char *s, size_t len)
{
    oip_dec_t  *d = ctx;

    char             x[72];
    unsigned         i, c;
    oip_key_e        key;
    const char      *where;
#define OIP_KEY(s, k)  { s, sizeof(s) - 1, k }
    static const struct {
        const char  *name;
        size_t       len;
        oip_key_e    key;
    } top[] = {
        OIP_KEY("id", K_ID), OIP_KEY("parameters", K_PARAMS),
        OIP_KEY("inputs", K_INPUTS), OIP_KEY("outputs", K_OUTPUTS),
        { NULL, 0, K_NONE }
    }, input[] = {
        OIP_KEY("name", K_NAME), OIP_KEY("shape", K_SHAPE),
        OIP_KEY("datatype", K_DTYPE), OIP_KEY("data", K_DATA),
        OIP_KEY("parameters", K_PARAMS), { NULL, 0, K_NONE }
    }, output[] = {
        OIP_KEY("name", K_NAME), OIP_KEY("parameters", K_PARAMS),
        { NULL, 0, K_NONE }
    }, *table;
#undef OIP_KEY

    switch (d->stack[d->depth]) {

    case C_SKIP:
        return 1;

    case C_TPARAMS:
    case C_IPARAMS:
    case C_OPARAMS:
        /* the protocol's parameters; any other one is the caller's */
        c = d->stack[d->depth];

        if (c == C_TPARAMS && oip_streq(s, len, "binary_data_output")) {
            d->key = K_BDO;

        } else if (c == C_IPARAMS && oip_streq(s, len, "binary_data_size")) {
            d->key = K_BDS;

        } else if (c == C_OPARAMS && oip_streq(s, len, "binary_data")) {
            d->key = K_BD;

        } else if (c == C_OPARAMS && oip_streq(s, len, "classification")) {
            d->key = K_CLASS;

        } else {
            d->key = K_PSKIP;
        }

        return 1;

    case C_TOP:
        table = top;
        where = "the request";
        break;

    case C_INPUT:
        table = input;
        where = "an input";
        break;

    default: /* C_OUTPUT */
        table = output;
        where = "an output";
        break;
    }

    key = K_NONE;

    for (i = 0; table[i].name; i++) {
        if (table[i].len == len && memcmp(s, table[i].name, len) == 0) {
            key = table[i].key;
            break;
        }
    }

    if (key == K_NONE && table == top) {
        d->key = K_EXTRA;
        return 1;
    }

    if (key == K_NONE) {
        return oip_fail(d, "unknown member \"%s\" in %s",
                        oip_excerpt(x, sizeof(x), s, len), where);
    }

    if (d->seen & (1u << key)) {
        return oip_fail(d, "duplicate member \"%s\" in %s",
                        table[i].name, where);
    }

    d->seen |= 1u << key;
    d->key = key;

    return 1;
}


/* "[2,3]" for messages */

static const char *
oip_shape_str(char *buf, size_t size, const uint64_t *shape, size_t ndims)
{
    size_t  i, n;

    n = snprintf(buf, size, "[");

    for (i = 0; i < ndims && n < size; i++) {
        n += snprintf(buf + n, size - n, "%s%llu", i ? "," : "",
                      (unsigned long long) shape[i]);
    }

    if (n < size) {
        snprintf(buf + n, size - n, "]");
    }

    return buf;
}


/* the input object is complete: check it against the model */

static int
oip_input_done(oip_dec_t *d)
{
    int                      rc;
    char                     sh[128];
    size_t                   i, rows, esize;
    uint64_t                 n;
    const char              *dt, *name;

    static const char  *need[] = { "name", "shape", "datatype" };
    static const oip_key_e  keys[] = { K_NAME, K_SHAPE, K_DTYPE };

    name = d->meta->input.name;

    for (i = 0; i < 3; i++) {
        if (!(d->seen & (1u << keys[i]))) {
            return oip_fail(d, "the input lacks \"%s\"", need[i]);
        }
    }

    if (d->has_bds && (d->seen & (1u << K_DATA))) {
        return oip_fail(d, "input \"%s\" has both \"data\" and "
                        "\"binary_data_size\"", name);
    }

    if (d->has_bds && !d->binary) {
        return oip_fail(d, "input \"%s\" has \"binary_data_size\" but the "
                        "request lacks the Inference-Header-Content-Length "
                        "header, so it has no binary data", name);
    }

    if (!d->has_bds && !(d->seen & (1u << K_DATA))) {
        if (d->binary) {
            return oip_fail(d, "the input lacks \"data\": the request has "
                            "Inference-Header-Content-Length, so binary data "
                            "was expected, announced by \"parameters\": "
                            "{\"binary_data_size\": N} in input \"%s\"",
                            name);
        }

        return oip_fail(d, "the input lacks \"data\" (or binary data: "
                        "\"binary_data_size\" with the "
                        "Inference-Header-Content-Length header)");
    }

    dt = oip_dtypes[d->dtype];

    switch (d->dtype) {

    case IG_DT_BOOL:
        if (d->has_num || d->has_null) {
            return oip_fail(d, "BOOL data must be true or false");
        }

        break;

    case IG_DT_INT32:
    case IG_DT_INT64:
        if (d->has_bool || d->has_null || d->has_frac) {
            return oip_fail(d, "%s data must be integers", dt);
        }

        if (d->dtype == IG_DT_INT32 ? d->out32 : d->out64) {
            return oip_fail(d, "a value is out of range for %s", dt);
        }

        break;

    default: /* FP32, FP64 */
        if (d->has_bool) {
            return oip_fail(d, "%s data must be numbers", dt);
        }

        if (d->dtype == IG_DT_FP64 && d->inf64) {
            return oip_fail(d, "a value is out of range for FP64");
        }

        if (d->inf32) {
            return oip_fail(d, "a value is out of range for FP32, the "
                            "model's input type");
        }

        break;
    }

    if (d->shape_long) {
        return oip_fail(d, "\"shape\" must have %u dimensions",
                        (unsigned) d->meta->input.ndims);
    }

    if (ig_oip_check_shape(d->meta, d->shape, d->ndims, &rows, &n, d->err,
                           d->errlen)
        != 0)
    {
        d->failed = 1;
        return 0;
    }

    if (d->has_bds) {
        esize = ig_oip_dtype_size(d->dtype);

        if (n > UINT64_MAX / 8 || d->bds != n * esize) {
            return oip_fail(d, "input \"%s\": \"binary_data_size\" is %llu "
                            "bytes, but shape %s of %s needs %llu (%llu "
                            "values of %zu bytes)", name,
                            (unsigned long long) d->bds,
                            oip_shape_str(sh, sizeof(sh), d->shape,
                                          d->ndims),
                            dt, (unsigned long long) (n * esize),
                            (unsigned long long) n, esize);
        }

        if (d->bds > d->bin_len - d->bin_off) {
            return oip_fail(d, "input \"%s\": \"binary_data_size\" is %llu "
                            "bytes, but only %zu bytes of binary data are "
                            "left after the JSON header", name,
                            (unsigned long long) d->bds,
                            d->bin_len - d->bin_off);
        }

        if (n <= d->max) {
            rc = ig_oip_convert_raw(d->dtype, d->bin + d->bin_off, n,
                                    d->out, sh, sizeof(sh));
            if (rc != 0) {
                return oip_fail(d, "input \"%s\": %s", name, sh);
            }
        }

        d->count = n;
        d->bin_off += d->bds;
    }

    if (n != d->count) {
        return oip_fail(d, "\"data\" holds %llu values, \"shape\" needs "
                        "%llu", (unsigned long long) d->count,
                        (unsigned long long) n);
    }

    d->req->rows = rows;

    return 1;
}


static int
oip_end(void *ctx)
{
    oip_dec_t  *d = ctx;

    oip_cont_e  c;

    c = d->stack[d->depth--];

    switch (c) {

    case C_INPUT:
        if (!oip_input_done(d)) {
            return 0;
        }

        d->seen = d->seen_top;
        break;

    case C_OUTPUT:
        if (!(d->seen & (1u << K_NAME))) {
            return oip_fail(d, "an output lacks \"name\"");
        }

        d->seen = d->seen_top;
        break;

    case C_TOP:
        if (!(d->seen & (1u << K_INPUTS)) || d->ninputs == 0) {
            return oip_fail(d, "the request has no input tensor");
        }

        if (d->binary && d->bin_off != d->bin_len) {
            return oip_fail(d, "%zu bytes of binary data follow the JSON "
                            "header, the inputs' \"binary_data_size\" "
                            "take %zu", d->bin_len, d->bin_off);
        }

        d->req->binary_output = (d->out_bd >= 0) ? d->out_bd
                                                 : (d->bdo > 0);

        break;

    default:
        break;
    }

    return 1;
}


static int
oip_null(void *ctx)
{
    return oip_value(ctx, V_NULL, NULL, 0);
}


static int
oip_boolean(void *ctx, int v)
{
    return oip_value(ctx, V_BOOL, NULL, v ? 1 : 0);
}


static int
oip_num(void *ctx, const unsigned char *s, size_t len)
{
    return oip_value(ctx, V_NUM, s, len);
}


static int
oip_string(void *ctx, const unsigned char *s, size_t len)
{
    return oip_value(ctx, V_STR, s, len);
}


static int
oip_start_map(void *ctx)
{
    return oip_value(ctx, V_MAP, NULL, 0);
}


static int
oip_start_array(void *ctx)
{
    return oip_value(ctx, V_ARR, NULL, 0);
}


static const ig_jsonlex_callbacks_t  oip_callbacks = {
    oip_null, oip_boolean, oip_num, oip_string, oip_start_map, oip_map_key,
    oip_end, oip_start_array, oip_end
};


int
ig_oip_decode_infer(const uint8_t *body, size_t len,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    ig_oip_request_t *req, char *err, size_t errlen)
{
    return ig_oip_decode_infer_bin(body, len, IG_OIP_NO_BINARY, meta,
                                   rows_out, max_floats, req, err, errlen);
}


/* Inference-Header-Content-Length: 0, the body is the one input's rows */

static int
oip_decode_raw_body(const uint8_t *body, size_t len,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    ig_oip_request_t *req, char *err, size_t errlen)
{
    int       rc;
    size_t    i, esize, rowbytes, rows;
    uint32_t  dtype;
    uint64_t  shape[IG_MODEL_MAX_DIMS];

    dtype = meta->input.dtype ? meta->input.dtype : IG_DT_FP32;
    esize = ig_oip_dtype_size(dtype);

    if (esize == 0 || meta->nfeatures == 0 || meta->input.ndims == 0
        || meta->input.ndims > IG_MODEL_MAX_DIMS)
    {
        snprintf(err, errlen, "the model's input cannot be sent as a raw "
                 "binary request");
        return -1;
    }

    if (len == 0) {
        snprintf(err, errlen, "the request body is empty");
        return -1;
    }

    rowbytes = esize * meta->nfeatures;

    if (len % rowbytes) {
        snprintf(err, errlen, "a raw binary request "
                 "(Inference-Header-Content-Length: 0) holds whole rows of "
                 "input \"%s\": %zu bytes is not a multiple of %zu (%u %s "
                 "values)", meta->input.name, len, rowbytes,
                 (unsigned) meta->nfeatures, oip_dtypes[dtype]);
        return -1;
    }

    rows = len / rowbytes;

    shape[0] = rows;

    for (i = 1; i < meta->input.ndims; i++) {
        shape[i] = meta->input.dims[i] < 0 ? 1 : (uint64_t) meta->input.dims[i];
    }

    rc = ig_oip_decode_raw(meta, meta->input.name, dtype, shape,
                           meta->input.ndims, body, len, rows_out,
                           rows_out ? max_floats : 0, &req->rows, err,
                           errlen);
    if (rc == -1) {
        req->rows = 0;
        return -1;
    }

    req->binary_output = 1;

    return rc;
}


int
ig_oip_decode_infer_bin(const uint8_t *body, size_t len, size_t json_len,
    const ig_model_meta_t *meta, float *rows_out, size_t max_floats,
    ig_oip_request_t *req, char *err, size_t errlen)
{
    size_t            off;
    const char       *reason;
    ig_jsonlex_t     *lx;
    oip_dec_t         d;
    ig_jsonlex_rc_e   rc;
    int               heap;
    char              err0[1];

    /* the parser's state: a few hundred bytes at this depth */
    union {
        long double   align;
        void         *p;
        char          mem[1024];
    } lxmem;

    if (err == NULL || errlen == 0) {
        err = err0;
        errlen = sizeof(err0);
    }

    err[0] = '\0';

    memset(req, 0, sizeof(ig_oip_request_t));

    if (json_len == 0) {
        return oip_decode_raw_body(body, len, meta, rows_out, max_floats,
                                   req, err, errlen);
    }

    memset(&d, 0, sizeof(oip_dec_t));

    d.bdo = -1;
    d.out_bd = -1;

    if (json_len != IG_OIP_NO_BINARY) {
        if (json_len > len) {
            snprintf(err, errlen, "inference header size should be in "
                     "range (0, %zu)", len);
            return -1;
        }

        d.binary = 1;
        d.bin = body + json_len;
        d.bin_len = len - json_len;
        len = json_len;
    }

    d.meta = meta;
    d.out = rows_out;
    d.max = rows_out ? max_floats : 0;
    d.req = req;
    d.err = err;
    d.errlen = errlen;

    heap = ig_jsonlex_size(OIP_DEPTH + 1) > sizeof(lxmem.mem);

    if (heap) {
        lx = ig_jsonlex_create(OIP_DEPTH + 1, &oip_callbacks, &d, NULL);
        if (lx == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

    } else {
        lx = ig_jsonlex_init(lxmem.mem, OIP_DEPTH + 1, &oip_callbacks, &d,
                             NULL);
    }

    if (len == 0) {
        rc = IG_JSONLEX_ERROR;
        snprintf(err, errlen, "the request body is empty");
        d.failed = 1;

    } else {
        rc = ig_jsonlex_feed(lx, body, len);

        if (rc == IG_JSONLEX_OK) {
            rc = ig_jsonlex_finish(lx);
        }

        if (rc == IG_JSONLEX_ERROR) {
            reason = ig_jsonlex_error(lx, &off);
            snprintf(err, errlen, "malformed JSON at byte %zu: %s", off,
                     reason ? reason : "syntax error");
            d.failed = 1;

        } else if (rc == IG_JSONLEX_NOMEM && !d.failed) {
            snprintf(err, errlen, "out of memory");
            d.failed = 1;
        }
    }

    if (heap) {
        ig_jsonlex_destroy(lx);

    } else {
        ig_jsonlex_cleanup(lx);
    }

    if (d.failed) {
        memset(req, 0, sizeof(ig_oip_request_t));
        return -1;
    }

    if (d.count > d.max) {
        return -2;
    }

    return 0;
}


/* tensor helpers: the binary extension and gRPC's raw contents */

uint32_t
ig_oip_dtype_parse(const char *s, size_t len)
{
    uint32_t  i;

    for (i = IG_DT_BOOL; i <= IG_DT_FP64; i++) {
        if (oip_streq((const unsigned char *) s, len, oip_dtypes[i])) {
            return i;
        }
    }

    return 0;
}


size_t
ig_oip_dtype_size(uint32_t dtype)
{
    switch (dtype) {
    case IG_DT_BOOL:
        return 1;
    case IG_DT_INT32:
    case IG_DT_FP32:
        return 4;
    case IG_DT_INT64:
    case IG_DT_FP64:
        return 8;
    default:
        return 0;
    }
}


int
ig_oip_check_shape(const ig_model_meta_t *meta, const uint64_t *shape,
    size_t ndims, size_t *rows, uint64_t *elements, char *err, size_t errlen)
{
    size_t                   i;
    uint64_t                 n;
    const ig_tensor_desc_t  *in;

    in = &meta->input;

    if (ndims != in->ndims) {
        snprintf(err, errlen, "\"shape\" must have %u dimensions",
                 (unsigned) in->ndims);
        return -1;
    }

    n = 1;

    for (i = 0; i < ndims; i++) {
        if (in->dims[i] >= 0 && shape[i] != (uint64_t) in->dims[i]) {
            snprintf(err, errlen, "shape[%u] is %llu, the model needs %lld",
                     (unsigned) i, (unsigned long long) shape[i],
                     (long long) in->dims[i]);
            return -1;
        }

        if (shape[i] != 0 && n > UINT64_MAX / shape[i]) {
            snprintf(err, errlen, "\"shape\" is too large");
            return -1;
        }

        n *= shape[i];
    }

    if (ndims == 0 || shape[0] == 0) {
        snprintf(err, errlen, "the batch (shape[0]) must not be empty");
        return -1;
    }

    if (shape[0] > UINT64_MAX / (meta->nfeatures ? meta->nfeatures : 1)
        || n != shape[0] * (uint64_t) meta->nfeatures)
    {
        snprintf(err, errlen, "the model's metadata is inconsistent");
        return -1;
    }

    *rows = (size_t) shape[0];
    *elements = n;

    return 0;
}


static uint64_t
oip_le(const uint8_t *p, size_t n)
{
    size_t    i;
    uint64_t  v;

    v = 0;

    for (i = n; i > 0; i--) {
        v = (v << 8) | p[i - 1];
    }

    return v;
}


int
ig_oip_convert_raw(uint32_t dtype, const uint8_t *raw, size_t n, float *out,
    char *err, size_t errlen)
{
    size_t    i;
    float     f;
    double    v;
    uint32_t  u32;
    uint64_t  u64;

    switch (dtype) {

    case IG_DT_BOOL:
        for (i = 0; i < n; i++) {
            if (raw[i] > 1) {
                snprintf(err, errlen, "BOOL element %zu is the byte %u, "
                         "not 0 or 1", i, (unsigned) raw[i]);
                return -1;
            }

            out[i] = raw[i] ? 1.0f : 0.0f;
        }

        return 0;

    case IG_DT_INT32:
        for (i = 0; i < n; i++) {
            u32 = (uint32_t) oip_le(raw + 4 * i, 4);
            out[i] = (float) (int32_t) u32;
        }

        return 0;

    case IG_DT_INT64:
        for (i = 0; i < n; i++) {
            u64 = oip_le(raw + 8 * i, 8);
            out[i] = (float) (int64_t) u64;
        }

        return 0;

    case IG_DT_FP32:
        for (i = 0; i < n; i++) {
            u32 = (uint32_t) oip_le(raw + 4 * i, 4);
            memcpy(&f, &u32, sizeof(float));
            out[i] = f;
        }

        return 0;

    case IG_DT_FP64:
        for (i = 0; i < n; i++) {
            u64 = oip_le(raw + 8 * i, 8);
            memcpy(&v, &u64, sizeof(double));

            if (isfinite(v) && fabs(v) > FLT_MAX) {
                snprintf(err, errlen, "FP64 element %zu (%g) is out of "
                         "range for FP32, the model's input type", i, v);
                return -1;
            }

            out[i] = (float) v;
        }

        return 0;

    default:
        snprintf(err, errlen, "unsupported datatype: use BOOL, INT32, "
                 "INT64, FP32 or FP64");
        return -1;
    }
}


int
ig_oip_decode_raw(const ig_model_meta_t *meta, const char *name,
    uint32_t dtype, const uint64_t *shape, size_t ndims, const uint8_t *raw,
    size_t len, float *rows_out, size_t max_floats, size_t *rows, char *err,
    size_t errlen)
{
    char      msg[200], sh[128];
    size_t    esize, r;
    uint64_t  n;

    *rows = 0;

    esize = ig_oip_dtype_size(dtype);

    if (esize == 0) {
        snprintf(err, errlen, "input \"%s\": unsupported datatype: use "
                 "BOOL, INT32, INT64, FP32 or FP64", name);
        return -1;
    }

    if (ig_oip_check_shape(meta, shape, ndims, &r, &n, msg, sizeof(msg))
        != 0)
    {
        snprintf(err, errlen, "input \"%s\": %s", name, msg);
        return -1;
    }

    if (n > UINT64_MAX / 8 || len != n * esize) {
        snprintf(err, errlen, "input \"%s\": %zu bytes of data, but shape %s "
                 "of %s needs %llu (%llu values of %zu bytes)", name, len,
                 oip_shape_str(sh, sizeof(sh), shape, ndims),
                 oip_dtypes[dtype], (unsigned long long) (n * esize),
                 (unsigned long long) n, esize);
        return -1;
    }

    if (rows_out == NULL || n > max_floats) {
        return -2;
    }

    if (ig_oip_convert_raw(dtype, raw, n, rows_out, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "input \"%s\": %s", name, msg);
        return -1;
    }

    *rows = r;

    return 0;
}


/* encoders */

const char *
ig_oip_dtype_name(uint32_t dtype)
{
    if (dtype < IG_DT_BOOL || dtype > IG_DT_FP64) {
        return NULL;
    }

    return oip_dtypes[dtype];
}


static size_t
oip_str_len(const char *s, size_t len)
{
    return ig_json_escape_len((const unsigned char *) s, len) + 2;
}


static uint8_t *
oip_str(uint8_t *p, const char *s, size_t len)
{
    *p++ = '"';
    p = ig_json_escape(p, (const unsigned char *) s, len);
    *p++ = '"';

    return p;
}


static uint8_t *
oip_cpy(uint8_t *p, const char *s)
{
    size_t  n;

    n = strlen(s);
    memcpy(p, s, n);

    return p + n;
}


/*
 * Floats as 9 significant digits (what "%.9g" gives, so every float reads
 * back bit for bit) with trailing zeros dropped, without printf: the
 * digits come from one correctly rounded scaling by an exact power of
 * ten, and are checked by reading them back the same way; anything
 * outside that range or failing the check goes through snprintf().
 * NaN and infinities become null.
 */

#define OIP_FLOAT_LEN  24

static uint8_t *
oip_uint(uint8_t *p, uint64_t n)
{
    uint8_t  buf[20], *q;

    q = buf + sizeof(buf);

    do {
        *--q = (uint8_t) ('0' + n % 10);
        n /= 10;
    } while (n);

    memcpy(p, q, buf + sizeof(buf) - q);

    return p + (buf + sizeof(buf) - q);
}


/* what "%lld" writes, without printf */

static uint8_t *
oip_int(uint8_t *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return oip_uint(p, (uint64_t) 0 - (uint64_t) v);
    }

    return oip_uint(p, (uint64_t) v);
}


static uint8_t *
oip_float(uint8_t *p, float v)
{
    int       e10, e2, k, nd, i, tries;
    double    d, back, x;
    uint32_t  bits;
    uint64_t  n;
    uint8_t   dig[10] = { 0 };

    if (!isfinite(v)) {
        return oip_cpy(p, "null");
    }

    if (signbit(v)) {
        *p++ = '-';
        v = -v;
    }

    if (v < 16777216.0f && v == (float) (int32_t) v) {
        return oip_uint(p, (uint64_t) v);
    }

    /*
     * floor(log10(v)) from the binary exponent, without libm: e2 x
     * log10(2) floored (78913 / 2^18, exact for |e2| < 1650) is it or one
     * less, and the loop below steps up when the digits overflow.  Below
     * FLT_MIN (e2 == -127) k is out of range and printf does it.
     */

    memcpy(&bits, &v, sizeof(uint32_t));
    e2 = (int) ((bits >> 23) & 0xff) - 127;
    e10 = (e2 * 78913) >> 18;

    d = (double) v;

    for (tries = 0; tries < 3; tries++) {
        k = 8 - e10;

        if (k < -22 || k > 22) {
            goto slow;
        }

        /*
         * llrint() without the libm call: below 2^52, adding and taking
         * away 2^52 rounds to the nearest integer, ties to even, in the
         * default rounding mode as llrint() does.
         */

        x = k >= 0 ? d * oip_pow10[k] : d / oip_pow10[-k];

        if (x >= 4503599627370496.0) {
            goto slow;
        }

        x = (x + 4503599627370496.0) - 4503599627370496.0;
        n = (uint64_t) x;

        if (n >= 1000000000) {
            e10++;
            continue;
        }

        if (n < 100000000) {
            e10--;
            continue;
        }

        break;
    }

    if (tries == 3) {
        goto slow;
    }

    back = (k >= 0) ? (double) n / oip_pow10[k] : (double) n * oip_pow10[-k];

    if ((float) back != v) {
        goto slow;
    }

    for (nd = 9; n % 10 == 0; nd--) {
        n /= 10;
    }

    for (i = nd; i > 0; i--) {
        dig[i - 1] = (uint8_t) ('0' + n % 10);
        n /= 10;
    }

    /* the value is dig[0].dig[1..] x 10^e10 */

    if (e10 >= 0 && e10 < 9) {
        for (i = 0; i <= e10; i++) {
            *p++ = (i < nd) ? dig[i] : '0';
        }

        if (nd > e10 + 1) {
            *p++ = '.';
            memcpy(p, dig + e10 + 1, nd - e10 - 1);
            p += nd - e10 - 1;
        }

        return p;
    }

    if (e10 < 0 && e10 >= -5) {
        *p++ = '0';
        *p++ = '.';

        for (i = -1; i > e10; i--) {
            *p++ = '0';
        }

        memcpy(p, dig, nd);

        return p + nd;
    }

    *p++ = dig[0];

    if (nd > 1) {
        *p++ = '.';
        memcpy(p, dig + 1, nd - 1);
        p += nd - 1;
    }

    *p++ = 'e';

    if (e10 < 0) {
        *p++ = '-';
        e10 = -e10;
    }

    return oip_uint(p, (uint64_t) e10);

slow:

    return p + snprintf((char *) p, OIP_FLOAT_LEN, "%.9g", (double) v);
}


#define OIP_DIM_LEN  24

static size_t
oip_tensor_len(const ig_tensor_desc_t *t)
{
    return sizeof("{\"name\":,\"datatype\":\"BOOL\",\"shape\":[]}") + 8
           + oip_str_len(t->name, strnlen(t->name, IG_MODEL_NAME_MAX))
           + IG_MODEL_MAX_DIMS * OIP_DIM_LEN;
}


static uint8_t *
oip_shape(uint8_t *p, const ig_tensor_desc_t *t, int64_t batch)
{
    uint32_t  i, n;
    int64_t   v;

    n = t->ndims > IG_MODEL_MAX_DIMS ? IG_MODEL_MAX_DIMS : t->ndims;

    *p++ = '[';

    for (i = 0; i < n; i++) {
        v = t->dims[i];

        if (i == 0 && batch >= 0 && v < 0) {
            v = batch;
        }

        if (i) {
            *p++ = ',';
        }

        p = oip_int(p, v);
    }

    *p++ = ']';

    return p;
}


static uint8_t *
oip_tensor(uint8_t *p, const ig_tensor_desc_t *t)
{
    const char  *dt;

    dt = ig_oip_dtype_name(t->dtype);

    p = oip_cpy(p, "{\"name\":");
    p = oip_str(p, t->name, strnlen(t->name, IG_MODEL_NAME_MAX));
    p = oip_cpy(p, ",\"datatype\":\"");
    p = oip_cpy(p, dt ? dt : "FP32");
    p = oip_cpy(p, "\",\"shape\":");
    p = oip_shape(p, t, -1);
    *p++ = '}';

    return p;
}


size_t
ig_oip_encode_infer_len(const char *model, const char *version,
    const ig_oip_request_t *req, const ig_model_meta_t *meta, size_t rows)
{
    size_t  len;

    len = sizeof("{\"model_name\":,\"model_version\":,\"id\":,\"outputs\":"
                 "[{\"name\":,\"datatype\":\"FP32\",\"shape\":[],"
                 "\"data\":[]}]}")
          + sizeof(",\"parameters\":{\"binary_data_size\":}") + 20
          + oip_str_len(model, strlen(model))
          + oip_str_len(meta->output.name,
                        strnlen(meta->output.name, IG_MODEL_NAME_MAX))
          + IG_MODEL_MAX_DIMS * OIP_DIM_LEN
          + rows * meta->noutputs * (OIP_FLOAT_LEN + 1);

    if (version) {
        len += oip_str_len(version, strlen(version));
    }

    if (req && req->has_id) {
        len += oip_str_len(req->id, req->id_len);
    }

    return len;
}


static uint8_t *
oip_encode_infer(uint8_t *p, const char *model, const char *version,
    const ig_oip_request_t *req, const ig_model_meta_t *meta,
    const float *out, size_t rows, size_t *json_len)
{
    size_t    i, n;
    uint8_t  *start;
    uint32_t  u;

    start = p;
    n = rows * meta->noutputs;

    p = oip_cpy(p, "{\"model_name\":");
    p = oip_str(p, model, strlen(model));

    if (version && version[0]) {
        p = oip_cpy(p, ",\"model_version\":");
        p = oip_str(p, version, strlen(version));
    }

    if (req && req->has_id) {
        p = oip_cpy(p, ",\"id\":");
        p = oip_str(p, req->id, req->id_len);
    }

    p = oip_cpy(p, ",\"outputs\":[{\"name\":");
    p = oip_str(p, meta->output.name,
                strnlen(meta->output.name, IG_MODEL_NAME_MAX));
    p = oip_cpy(p, ",\"datatype\":\"FP32\",\"shape\":");

    if (meta->output.ndims == 0) {
        *p++ = '[';
        p = oip_uint(p, (uint64_t) rows);
        *p++ = ',';
        p = oip_uint(p, (uint64_t) meta->noutputs);
        *p++ = ']';

    } else {
        p = oip_shape(p, &meta->output, (int64_t) rows);
    }

    if (json_len) {
        p = oip_cpy(p, ",\"parameters\":{\"binary_data_size\":");
        p = oip_uint(p, (uint64_t) n * 4);
        p = oip_cpy(p, "}}]}");

        *json_len = p - start;

        for (i = 0; i < n; i++) {
            memcpy(&u, &out[i], sizeof(uint32_t));

            *p++ = (uint8_t) u;
            *p++ = (uint8_t) (u >> 8);
            *p++ = (uint8_t) (u >> 16);
            *p++ = (uint8_t) (u >> 24);
        }

        return p;
    }

    p = oip_cpy(p, ",\"data\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = oip_float(p, out[i]);
    }

    p = oip_cpy(p, "]}]}");

    return p;
}


uint8_t *
ig_oip_encode_infer(uint8_t *p, const char *model, const char *version,
    const ig_oip_request_t *req, const ig_model_meta_t *meta,
    const float *out, size_t rows)
{
    return oip_encode_infer(p, model, version, req, meta, out, rows, NULL);
}


uint8_t *
ig_oip_encode_infer_bin(uint8_t *p, const char *model, const char *version,
    const ig_oip_request_t *req, const ig_model_meta_t *meta,
    const float *out, size_t rows, size_t *json_len)
{
    return oip_encode_infer(p, model, version, req, meta, out, rows,
                            json_len);
}


size_t
ig_oip_encode_metadata_len(const char *model, const char **versions,
    size_t nversions, const ig_model_meta_t *meta)
{
    size_t  i, len;

    len = sizeof("{\"name\":,\"versions\":[],\"platform\":,\"inputs\":[],"
                 "\"outputs\":[]}")
          + oip_str_len(model, strlen(model))
          + oip_str_len(meta->platform,
                        strnlen(meta->platform, sizeof(meta->platform)))
          + oip_tensor_len(&meta->input) + oip_tensor_len(&meta->output);

    for (i = 0; i < nversions; i++) {
        len += oip_str_len(versions[i], strlen(versions[i])) + 1;
    }

    return len;
}


uint8_t *
ig_oip_encode_metadata(uint8_t *p, const char *model, const char **versions,
    size_t nversions, const ig_model_meta_t *meta)
{
    size_t  i;

    p = oip_cpy(p, "{\"name\":");
    p = oip_str(p, model, strlen(model));
    p = oip_cpy(p, ",\"versions\":[");

    for (i = 0; i < nversions; i++) {
        if (i) {
            *p++ = ',';
        }

        p = oip_str(p, versions[i], strlen(versions[i]));
    }

    p = oip_cpy(p, "],\"platform\":");
    p = oip_str(p, meta->platform,
                strnlen(meta->platform, sizeof(meta->platform)));
    p = oip_cpy(p, ",\"inputs\":[");
    p = oip_tensor(p, &meta->input);
    p = oip_cpy(p, "],\"outputs\":[");
    p = oip_tensor(p, &meta->output);
    p = oip_cpy(p, "]}");

    return p;
}


size_t
ig_oip_encode_error_len(const char *msg)
{
    return sizeof("{\"error\":}") + oip_str_len(msg, strlen(msg));
}


uint8_t *
ig_oip_encode_error(uint8_t *p, const char *msg)
{
    p = oip_cpy(p, "{\"error\":");
    p = oip_str(p, msg, strlen(msg));
    *p++ = '}';

    return p;
}
