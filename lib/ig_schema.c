/*
 * Copyright (C) infergate authors
 *
 * JSON Schema (2020-12 subset) compiler and streaming validator.
 *
 * Compilation parses the schema text with yajl into a temporary tree
 * (a yajl_tree would lose the length of strings holding U+0000 and the
 * byte offset of syntax errors), then builds an immutable node tree:
 *
 *   - properties and required names are merged into one member table
 *     sorted by (length, bytes) and searched by bisection; a required
 *     name owns one bit of the per-object "seen" bitmap;
 *   - numbers are kept as exact decimals (digits and exponent), so
 *     limits, "integer" and enum/const comparisons are exact at any
 *     magnitude and precision;
 *   - enum and const values are stored in a canonical binary form
 *     (object members sorted, numbers normalized), compared by memcmp.
 *
 * Validation runs on ig_jsonlex callbacks with an explicit frame stack,
 * preallocated to max_depth.  JSON pointers are built incrementally in
 * one buffer, and only where a schema applies.  An enum/const whose
 * candidates include containers captures the canonical form of the
 * instance subtree while it streams, bounded by the largest candidate.
 *
 * Member names repeated in one object are errors at any depth (I-JSON,
 * RFC 7493 2.3: the document has no single meaning, and a later stage
 * could act on another member than the one checked).  The names of the
 * open objects are kept on one stack, found by a linear search while an
 * object has few members and through one hash table (SipHash-1-3 under
 * a key drawn when the schema is compiled) once it has more; an object
 * that ends pops its names, so nothing is allocated per object and the
 * cost is linear in the body whatever its names.
 */


#define PCRE2_CODE_UNIT_WIDTH  8

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include <pcre2.h>
#include <yajl/yajl_parse.h>

#include "ig_schema.h"
#include "ig_datetime.h"
#include "ig_json.h"
#include "ig_jsonlex.h"


/* instance and schema types */
#define IG_T_NULL          0x01
#define IG_T_BOOLEAN       0x02
#define IG_T_OBJECT        0x04
#define IG_T_ARRAY         0x08
#define IG_T_NUMBER        0x10
#define IG_T_STRING        0x20
#define IG_T_INTEGER       0x40
#define IG_T_ANY           0x3f

/* node flags; the first four index ig_node_t.num[] */
#define IG_F_MIN           0x0001
#define IG_F_MAX           0x0002
#define IG_F_XMIN          0x0004
#define IG_F_XMAX          0x0008
#define IG_F_MINLEN        0x0010
#define IG_F_MAXLEN        0x0020
#define IG_F_PATTERN       0x0040
#define IG_F_FORMAT        0x0080
#define IG_F_MINITEMS      0x0100
#define IG_F_MAXITEMS      0x0200
#define IG_F_TYPE          0x0400
#define IG_F_ENUM          0x0800
#define IG_F_CONST         0x1000
#define IG_F_OBJECT        0x2000
#define IG_F_ITEMS         0x4000

#define IG_F_NUMERIC       (IG_F_MIN|IG_F_MAX|IG_F_XMIN|IG_F_XMAX)
#define IG_F_LENGTH        (IG_F_MINLEN|IG_F_MAXLEN)

#define IG_NODE_SCHEMA     0
#define IG_NODE_FALSE      1

#define IG_FMT_NONE        0
#define IG_FMT_DATE_TIME   1
#define IG_FMT_DATE        2
#define IG_FMT_TIME        3
#define IG_FMT_UUID        4

/* schema text nesting (the compiler recurses on it) */
#define IG_DOM_MAX_DEPTH   128
/* bytes of a value quoted in a message, and its escaped buffer */
#define IG_EXCERPT         64
#define IG_EXCERPT_BUF     (IG_EXCERPT * 6 + 8)
/* longest instance pointer kept in an error (then "...") */
#define IG_PTR_ERR_MAX     1024
#define IG_DETAIL_MAX      1200
#define IG_PTR_INLINE      256
#define IG_KEY_INLINE      64
#define IG_NAMES_INLINE    512
#define IG_NENTS_INLINE    32
#define IG_NAMES_LIST      8         /* members searched without hashing */
#define IG_NAMES_MAX       0xfffffffeU
#define IG_MATCH_LIMIT     1000000
/* member names shorter than this are found through a table by length */
#define IG_LEN_INDEX       32
#define IG_DEPTH_LIMIT     10000
/* exponents saturate here: far beyond any double, no int64 overflow */
#define IG_EXP_MAX         ((int64_t) 1 << 60)


/* arena: every compile-time allocation, freed at once */

typedef struct ig_ablock_s  ig_ablock_t;

struct ig_ablock_s {
    ig_ablock_t          *next;
    size_t                size;
    size_t                used;
    size_t                pad;
};

typedef struct {
    ig_ablock_t          *head;
} ig_arena_t;


/* an exact decimal: value = 0.DIGITS * 10^exp, DIGITS = d1 d2 with no
 * leading or trailing zero; zero has no digits and neg = 0 */

typedef struct {
    const unsigned char  *d1;
    const unsigned char  *d2;
    size_t                n1;
    size_t                n2;
    int64_t               exp;
    int                   neg;
} ig_dec_t;


/* the temporary schema document */

typedef struct ig_jv_s  ig_jv_t;

typedef struct {
    const unsigned char  *key;
    size_t                klen;
    ig_jv_t              *val;
} ig_jmember_t;

struct ig_jv_s {
    unsigned              type;
    int                   boolean;
    const unsigned char  *str;      /* string bytes or number literal */
    size_t                len;      /* bytes, or items/members */
    ig_jmember_t         *m;        /* items (key NULL) or members */
};

typedef struct {
    ig_jv_t              *jv;
    size_t                start;
} ig_dom_open_t;

typedef struct {
    ig_arena_t           *arena;
    ig_jv_t              *root;
    ig_jmember_t         *pend;
    size_t                npend;
    size_t                cpend;
    ig_dom_open_t        *open;
    size_t                nopen;
    size_t                copen;
    const unsigned char  *key;
    size_t                klen;
    int                   nomem;
    int                   toodeep;
} ig_dom_t;


/* compiled schema */

typedef struct ig_node_s  ig_node_t;

typedef struct {
    const unsigned char  *p;
    size_t                len;
    unsigned              type;
} ig_canon_t;

typedef struct {
    const unsigned char  *name;
    size_t                len;
    const unsigned char  *seg;       /* "/" name, RFC 6901 escaped */
    size_t                seg_len;
    const ig_node_t      *schema;
    int                   in_props;
    int                   req;       /* bit in the seen bitmap or -1 */
} ig_member_t;

typedef struct {
    ig_dec_t              dec;
    const char           *text;      /* as written, for messages */
    int64_t               ival;      /* the value when small */
    int                   small;     /* an integer of <= 18 digits */
} ig_snum_t;

struct ig_node_s {
    unsigned              kind;
    unsigned              flags;
    unsigned              types;
    unsigned              format;
    const char           *type_msg;  /* "integer or string" */
    const char           *false_msg;
    ig_snum_t             num[4];
    size_t                min_len;
    size_t                max_len;
    size_t                min_items;
    size_t                max_items;
    pcre2_code           *re;
    int                   re_jit;
    const char           *re_msg;    /* quoted pattern excerpt */
    const ig_member_t    *members;
    size_t                nmembers;
    const uint32_t       *len_idx;   /* first member of each length */
    const size_t         *required;  /* member index of bit i */
    size_t                nrequired;
    const ig_node_t      *additional;
    const ig_node_t      *items;
    const ig_canon_t     *enums;
    size_t                nenums;
    const ig_canon_t     *konst;
    unsigned              enum_types;
    unsigned              const_types;
    unsigned              cap_types;  /* container types to capture */
    size_t                cap_limit;
};

typedef struct ig_re_s  ig_re_t;

struct ig_re_s {
    pcre2_code           *code;
    ig_re_t              *next;
};

struct ig_schema_s {
    const ig_node_t      *root;
    ig_arena_t            arena;
    ig_re_t              *res;
    pcre2_match_context  *mctx;
    size_t                req_words;
    uint64_t              sipkey[2];  /* hashes member names */
};


/* compiler context */

typedef struct {
    ig_schema_t          *schema;
    ig_arena_t           *arena;
    unsigned char        *ptr;
    size_t                plen;
    size_t                pcap;
    char                 *err;
    size_t                errlen;
    int                   failed;
    pcre2_compile_context  *cctx;
} ig_cc_t;


/* validator */

typedef struct {
    const ig_node_t      *node;
    const ig_node_t      *child;
    uint64_t             *seen;
    size_t                ptr_len;
    size_t                count;
    size_t                cap_start;
    size_t                cap_prev;
    size_t                seg_base;
    size_t                body;
    size_t                idx_len;   /* "/N" of the last item written */
    size_t                name_base; /* first of its member names */
    size_t                name_cur;  /* the name of the current member */
    unsigned              cap_epoch;
    unsigned              seg_epoch;
    unsigned char         hashed;    /* its names are in the table */
    unsigned char         is_array;
    unsigned char         capture;
    unsigned char         cap_first;
    unsigned char         in_cap;
} ig_frame_t;

typedef struct {
    size_t                off;
    size_t                len;
} ig_seg_t;

/* a member name of an open object */

typedef struct {
    uint32_t              off;       /* in v->names */
    uint32_t              len;
    uint32_t              hash;
    uint32_t              next;      /* same bucket, older: index + 1 */
} ig_name_t;

/* an instance number: the decimal is parsed only when needed */

typedef struct {
    const unsigned char  *s;
    size_t                len;
    int64_t               ival;
    int                   small;     /* a plain integer of <= 18 digits */
    int                   parsed;
    ig_dec_t              dec;
} ig_num_t;

struct ig_validator_s {
    ig_jsonlex_t         *lx;
    const ig_schema_t    *schema;
    yajl_alloc_funcs      af;
    ig_member_pt          on_member;
    void                 *data;

    ig_frame_t           *frames;
    uint64_t             *bits;
    size_t                req_words;
    unsigned              max_depth;
    unsigned              depth;

    ig_valid_rc_e         rc;
    int                   finished;
    int                   truncated;

    unsigned char        *ptr;
    size_t                ptr_len;
    size_t                ptr_cap;

    unsigned char        *key;
    size_t                key_len;
    size_t                key_cap;

    size_t                nerrors;

    unsigned char        *cap;
    size_t                cap_len;
    size_t                cap_size;
    size_t                cap_end;
    unsigned              cap_active;
    unsigned              cap_epoch;
    int                   cap_dead;
    ig_seg_t             *segs;
    size_t                nsegs;
    size_t                segs_size;
    unsigned char        *scratch;
    size_t                scratch_size;

    unsigned char        *names;
    size_t                names_len;
    size_t                names_size;
    ig_name_t            *nents;
    size_t                nnames;
    size_t                nents_size;  /* bytes */
    uint32_t             *buckets;
    size_t                nbuckets;    /* 0 or a power of 2 */
    size_t                nhashed;
    unsigned char        *dptr;        /* the pointer of a duplicate */
    size_t                dptr_size;

    pcre2_general_context  *gctx;
    pcre2_match_data     *md;

    /* not cleared at create */
    ig_verror_t           errors[IG_SCHEMA_MAX_ERRORS];
    unsigned char         err_static[IG_SCHEMA_MAX_ERRORS];
    unsigned char         ptr_inline[IG_PTR_INLINE];
    unsigned char         key_inline[IG_KEY_INLINE];
    unsigned char         names_inline[IG_NAMES_INLINE];
    ig_name_t             nents_inline[IG_NENTS_INLINE];
};


static void *ig_arena_alloc(ig_arena_t *a, size_t n);
static void *ig_arena_dup(ig_arena_t *a, const void *p, size_t n);
static void ig_arena_free(ig_arena_t *a);

static void ig_dec_parse(ig_dec_t *d, const unsigned char *s, size_t len);
static int ig_dec_is_integer(const ig_dec_t *d);
static int ig_dec_cmp(const ig_dec_t *a, const ig_dec_t *b);
static size_t ig_dec_to_size(const ig_dec_t *d);
static int ig_dec_small(const ig_dec_t *d, int64_t *out);
static inline int ig_lit_small(const unsigned char *s, size_t len,
    int64_t *out);
static inline const ig_dec_t *ig_num_dec(ig_num_t *num);

static size_t ig_canon_num_len(const ig_dec_t *d);
static unsigned char *ig_canon_num_write(unsigned char *p, const ig_dec_t *d);
static unsigned char *ig_canon_put_len(unsigned char *p, size_t n);
static size_t ig_canon_get_len(const unsigned char *p);
static int ig_canon_eq_num(const ig_canon_t *c, const ig_dec_t *d);
static int ig_canon_eq_str(const ig_canon_t *c, const unsigned char *s,
    size_t len);

static size_t ig_excerpt(char *buf, const unsigned char *s, size_t len);
static size_t ig_excerpt_lit(char *buf, const unsigned char *s, size_t len);
static size_t ig_utf8_chars(const unsigned char *s, size_t len);
static inline int ig_hex8(const unsigned char *p);
static int ig_uuid_check(const unsigned char *s, size_t len);
static int ig_name_cmp(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen);

static int ig_dom_push_value(ig_dom_t *d, ig_jv_t *jv);
static ig_jv_t *ig_dom_value(ig_dom_t *d, unsigned type);
static int ig_dom_null(void *ctx);
static int ig_dom_boolean(void *ctx, int b);
static int ig_dom_number(void *ctx, const char *s, size_t len);
static int ig_dom_string(void *ctx, const unsigned char *s, size_t len);
static int ig_dom_start(ig_dom_t *d, unsigned type);
static int ig_dom_start_map(void *ctx);
static int ig_dom_map_key(void *ctx, const unsigned char *s, size_t len);
static int ig_dom_end(void *ctx);
static int ig_dom_start_array(void *ctx);
static ig_jv_t *ig_dom_parse(ig_cc_t *cc, ig_arena_t *arena,
    const unsigned char *text, size_t len);

static void ig_cc_fail(ig_cc_t *cc, const char *fmt, ...);
static int ig_cc_push(ig_cc_t *cc, const unsigned char *seg, size_t n);
static int ig_cc_push_index(ig_cc_t *cc, size_t i);
static int ig_cc_schema(ig_cc_t *cc, const ig_jv_t *jv,
    const ig_node_t **out, const char *false_msg);
static int ig_cc_object(ig_cc_t *cc, const ig_jv_t *jv,
    const ig_node_t **out);
static int ig_cc_type(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *jv);
static int ig_cc_number(ig_cc_t *cc, ig_snum_t *num, const ig_jv_t *jv);
static int ig_cc_size(ig_cc_t *cc, size_t *out, const ig_jv_t *jv);
static int ig_cc_members(ig_cc_t *cc, ig_node_t *node,
    const ig_jv_t *props, const ig_jv_t *req);
static int ig_cc_pattern(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *jv);
static int ig_cc_format(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *jv);
static int ig_cc_canon_prepare(ig_cc_t *cc, ig_jv_t *jv);
static size_t ig_cc_canon_len(const ig_jv_t *jv);
static unsigned char *ig_cc_canon_write(unsigned char *p, const ig_jv_t *jv);
static int ig_cc_canon(ig_cc_t *cc, ig_canon_t *c, ig_jv_t *jv);
static int ig_cc_enum(ig_cc_t *cc, ig_node_t *node, ig_jv_t *en);
static int ig_cc_const(ig_cc_t *cc, ig_node_t *node, ig_jv_t *cn);
static int ig_jmember_cmp(const void *a, const void *b);
static void ig_schema_sipkey(uint64_t *k);
static int ig_member_cmp(const void *a, const void *b);

static void *ig_default_malloc(void *ctx, size_t size);
static void *ig_default_realloc(void *ctx, void *p, size_t size);
static void ig_default_free(void *ctx, void *p);
static void *ig_pcre_malloc(PCRE2_SIZE size, void *data);
static void ig_pcre_free(void *p, void *data);

static int ig_v_error(ig_validator_t *v, const char *fmt, ...);
static int ig_v_verror(ig_validator_t *v, const unsigned char *ptr,
    size_t ptr_len, const char *fmt, va_list ap);
static uint64_t ig_siphash13(const uint64_t *k, const unsigned char *s,
    size_t len);
static int ig_v_name(ig_validator_t *v, ig_frame_t *f,
    const unsigned char *s, size_t len);
static int ig_v_name_find(ig_validator_t *v, ig_frame_t *f,
    const unsigned char *s, size_t len, uint32_t *hash);
static int ig_v_names_grow(ig_validator_t *v, size_t len);
static int ig_v_names_insert(ig_validator_t *v, size_t from);
static void ig_v_names_pop(ig_validator_t *v, ig_frame_t *f);
static int ig_v_dup_error(ig_validator_t *v, const unsigned char *s,
    size_t len);
static void ig_v_dup_ptr_put(ig_validator_t *v, size_t *plen,
    const unsigned char *s, size_t len);
static int ig_v_error_at(ig_validator_t *v, const unsigned char *ptr,
    size_t ptr_len, const char *fmt, ...);
static void ig_v_clear_errors(ig_validator_t *v);
static void ig_v_terminal(ig_validator_t *v, ig_valid_rc_e rc,
    const char *detail);
static int ig_v_grow(ig_validator_t *v, unsigned char **buf, size_t *size,
    size_t need, const unsigned char *inl);
static int ig_v_ptr_key(ig_validator_t *v, size_t base,
    const unsigned char *s, size_t len);
static int ig_v_ptr_index(ig_validator_t *v, size_t base, size_t index);
static int ig_v_ptr_first(ig_validator_t *v, ig_frame_t *f, size_t index);
static inline int ig_v_begin(ig_validator_t *v, const ig_node_t **node);
static int ig_v_check_type(ig_validator_t *v, const ig_node_t *node,
    unsigned type, ig_num_t *num);
static int ig_v_check_scalar(ig_validator_t *v, const ig_node_t *node,
    unsigned type, const unsigned char *s, size_t len, ig_num_t *num);
static int ig_v_scalar_in(const ig_canon_t *c, size_t n, unsigned type,
    const unsigned char *s, size_t len, const ig_dec_t *dec);
static int ig_v_check_string(ig_validator_t *v, const ig_node_t *node,
    const unsigned char *s, size_t len);
static int ig_v_check_number(ig_validator_t *v, const ig_node_t *node,
    ig_num_t *num);
static int ig_v_cap_put(ig_validator_t *v, const void *p, size_t n);
static int ig_v_cap_scalar(ig_validator_t *v, unsigned type,
    const unsigned char *s, size_t len, const ig_dec_t *dec);
static void ig_v_cap_begin(ig_validator_t *v, ig_frame_t *f, size_t limit);
static int ig_v_cap_match(ig_validator_t *v, ig_frame_t *f,
    const ig_canon_t *c, size_t n);
static void ig_v_cap_end(ig_validator_t *v, ig_frame_t *f);
static int ig_v_cap_sort(ig_validator_t *v, ig_frame_t *f);
static int ig_v_seg_less(ig_validator_t *v, const ig_seg_t *a,
    const ig_seg_t *b);
static void ig_v_seg_sift(ig_validator_t *v, ig_seg_t *s, size_t root,
    size_t n);
static int ig_v_scalar(ig_validator_t *v, unsigned type,
    const unsigned char *s, size_t len);
static int ig_v_null(void *ctx);
static int ig_v_boolean(void *ctx, int b);
static int ig_v_number(void *ctx, const unsigned char *s, size_t len);
static int ig_v_string(void *ctx, const unsigned char *s, size_t len);
static int ig_v_start(ig_validator_t *v, int is_array);
static int ig_v_start_map(void *ctx);
static inline void ig_v_copy(unsigned char *dst, const unsigned char *src,
    size_t n);
static inline int ig_v_name_eq(const unsigned char *a,
    const unsigned char *b, size_t len);
static const ig_member_t *ig_v_member(const ig_node_t *node,
    const unsigned char *s, size_t len);
static int ig_v_map_key(void *ctx, const unsigned char *s, size_t len);
static int ig_v_end(void *ctx);
static int ig_v_start_array(void *ctx);
static ig_valid_rc_e ig_v_parse_failed(ig_validator_t *v,
    ig_jsonlex_rc_e rc);


static const char  *ig_type_names[] = {
    "null", "boolean", "object", "array", "number", "string", "integer"
};

static const char  *ig_num_ops[4] = { ">=", "<=", ">", "<" };


/* arena */

static void *
ig_arena_alloc(ig_arena_t *a, size_t n)
{
    size_t        size;
    unsigned char  *p;
    ig_ablock_t  *b;

    if (n > SIZE_MAX / 2) {
        return NULL;
    }

    n = (n + 15) & ~(size_t) 15;

    if (n == 0) {
        n = 16;
    }

    b = a->head;

    if (b == NULL || b->size - b->used < n) {
        size = (n > 4096) ? n : 4096;

        b = malloc(sizeof(ig_ablock_t) + size);
        if (b == NULL) {
            return NULL;
        }

        b->size = size;
        b->used = 0;

        if (a->head != NULL && n > 1024) {
            /* keep the current block for small allocations */
            b->next = a->head->next;
            a->head->next = b;

        } else {
            b->next = a->head;
            a->head = b;
        }
    }

    p = (unsigned char *) (b + 1) + b->used;
    b->used += n;

    return p;
}


static void *
ig_arena_dup(ig_arena_t *a, const void *p, size_t n)
{
    unsigned char  *d;

    d = ig_arena_alloc(a, n + 1);
    if (d == NULL) {
        return NULL;
    }

    if (n) {
        memcpy(d, p, n);
    }

    d[n] = '\0';

    return d;
}


static void
ig_arena_free(ig_arena_t *a)
{
    ig_ablock_t  *b, *next;

    for (b = a->head; b; b = next) {
        next = b->next;
        free(b);
    }

    a->head = NULL;
}


/* exact decimals; s is a valid JSON number literal */

static void
ig_dec_parse(ig_dec_t *d, const unsigned char *s, size_t len)
{
    int                   eneg;
    size_t                in, fn, lz;
    int64_t               e, exp;
    const unsigned char  *p, *end, *ip, *fp;

    p = s;
    end = s + len;

    d->neg = 0;

    if (p < end && *p == '-') {
        d->neg = 1;
        p++;
    }

    ip = p;

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }

    in = (size_t) (p - ip);
    fp = p;
    fn = 0;

    if (p < end && *p == '.') {
        p++;
        fp = p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        fn = (size_t) (p - fp);
    }

    e = 0;

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        eneg = 0;

        if (p < end && (*p == '+' || *p == '-')) {
            eneg = (*p == '-');
            p++;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            if (e <= (IG_EXP_MAX - 9) / 10) {
                e = e * 10 + (*p - '0');

            } else {
                e = IG_EXP_MAX;
            }

            p++;
        }

        if (eneg) {
            e = -e;
        }
    }

    while (in && *ip == '0') {
        ip++;
        in--;
    }

    if (in) {
        exp = e + (int64_t) (in > (size_t) IG_EXP_MAX ? IG_EXP_MAX : in);

    } else {
        lz = 0;

        while (lz < fn && fp[lz] == '0') {
            lz++;
        }

        fp += lz;
        fn -= lz;
        exp = e - (int64_t) (lz > (size_t) IG_EXP_MAX ? IG_EXP_MAX : lz);
    }

    while (fn && fp[fn - 1] == '0') {
        fn--;
    }

    if (fn == 0) {
        while (in && ip[in - 1] == '0') {
            in--;
        }
    }

    d->d1 = ip;
    d->n1 = in;
    d->d2 = fp;
    d->n2 = fn;
    d->exp = exp;

    if (in + fn == 0) {
        d->neg = 0;
        d->exp = 0;
    }
}


static int
ig_dec_is_integer(const ig_dec_t *d)
{
    size_t  n;

    n = d->n1 + d->n2;

    return n == 0 || (d->exp > 0 && (uint64_t) d->exp >= (uint64_t) n);
}


#define ig_dec_digit(d, i)                                                   \
    ((i) < (d)->n1 ? (d)->d1[i] : (d)->d2[(i) - (d)->n1])


static int
ig_dec_cmp(const ig_dec_t *a, const ig_dec_t *b)
{
    int            sa, sb, r;
    size_t         na, nb, n, i;
    unsigned char  ca, cb;

    na = a->n1 + a->n2;
    nb = b->n1 + b->n2;

    sa = (na == 0) ? 0 : (a->neg ? -1 : 1);
    sb = (nb == 0) ? 0 : (b->neg ? -1 : 1);

    if (sa != sb) {
        return (sa < sb) ? -1 : 1;
    }

    if (sa == 0) {
        return 0;
    }

    if (a->exp != b->exp) {
        r = (a->exp < b->exp) ? -1 : 1;
        return r * sa;
    }

    n = (na < nb) ? na : nb;
    r = 0;

    for (i = 0; i < n; i++) {
        ca = ig_dec_digit(a, i);
        cb = ig_dec_digit(b, i);

        if (ca != cb) {
            r = (ca < cb) ? -1 : 1;
            break;
        }
    }

    if (r == 0 && na != nb) {
        r = (na < nb) ? -1 : 1;
    }

    return r * sa;
}


/* a non-negative integer, saturated */

static size_t
ig_dec_to_size(const ig_dec_t *d)
{
    size_t   r, n, i;
    unsigned  digit;

    n = d->n1 + d->n2;

    if (n == 0) {
        return 0;
    }

    if (d->exp > 20) {
        return SIZE_MAX;
    }

    r = 0;

    for (i = 0; i < (size_t) d->exp; i++) {
        digit = (i < n) ? (unsigned) (ig_dec_digit(d, i) - '0') : 0;

        if (r > (SIZE_MAX - digit) / 10) {
            return SIZE_MAX;
        }

        r = r * 10 + digit;
    }

    return r;
}


/* an integer of at most 18 digits, exactly */

static int
ig_dec_small(const ig_dec_t *d, int64_t *out)
{
    size_t   n, i;
    int64_t  r;

    n = d->n1 + d->n2;

    if (n == 0) {
        *out = 0;
        return 1;
    }

    if (!ig_dec_is_integer(d) || d->exp > 18) {
        return 0;
    }

    r = 0;

    for (i = 0; i < (size_t) d->exp; i++) {
        r = r * 10 + ((i < n) ? ig_dec_digit(d, i) - '0' : 0);
    }

    *out = d->neg ? -r : r;

    return 1;
}


/* a valid JSON number literal that is a plain integer of <= 18 digits */

static inline int
ig_lit_small(const unsigned char *s, size_t len, int64_t *out)
{
    size_t   i;
    int64_t  r;

    i = (s[0] == '-');

    if (len - i > 18) {
        return 0;
    }

    r = 0;

    for ( /* void */ ; i < len; i++) {
        if (s[i] > '9' || s[i] < '0') {
            /* '.', 'e', 'E' */
            return 0;
        }

        r = r * 10 + (s[i] - '0');
    }

    *out = (s[0] == '-') ? -r : r;

    return 1;
}


static inline const ig_dec_t *
ig_num_dec(ig_num_t *num)
{
    if (!num->parsed) {
        ig_dec_parse(&num->dec, num->s, num->len);
        num->parsed = 1;
    }

    return &num->dec;
}


/*
 * Canonical form of JSON values, compared by memcmp:
 *   null "n", true "t", false "f",
 *   number "N0" for zero, else "N", sign '+'/'-', exponent (8 bytes,
 *     big endian, biased), digit count (8 bytes), digits,
 *   string "S", length (8 bytes), bytes,
 *   array "[" items "]",
 *   object "{" members sorted by (name length, name bytes) "}", a
 *     member being name length (8 bytes), name bytes, value.
 */

#define IG_CANON_LEN  8


static unsigned char *
ig_canon_put_len(unsigned char *p, size_t n)
{
    int       i;
    uint64_t  u;

    u = (uint64_t) n;

    for (i = IG_CANON_LEN - 1; i >= 0; i--) {
        p[i] = (unsigned char) (u & 0xff);
        u >>= 8;
    }

    return p + IG_CANON_LEN;
}


static size_t
ig_canon_num_len(const ig_dec_t *d)
{
    size_t  n;

    n = d->n1 + d->n2;

    return (n == 0) ? 2 : 2 + 2 * IG_CANON_LEN + n;
}


static unsigned char *
ig_canon_num_write(unsigned char *p, const ig_dec_t *d)
{
    *p++ = 'N';

    if (d->n1 + d->n2 == 0) {
        *p++ = '0';
        return p;
    }

    *p++ = d->neg ? '-' : '+';
    p = ig_canon_put_len(p, (size_t) ((uint64_t) d->exp ^ (1ULL << 63)));
    p = ig_canon_put_len(p, d->n1 + d->n2);

    if (d->n1) {
        memcpy(p, d->d1, d->n1);
        p += d->n1;
    }

    if (d->n2) {
        memcpy(p, d->d2, d->n2);
        p += d->n2;
    }

    return p;
}


static int
ig_canon_eq_num(const ig_canon_t *c, const ig_dec_t *d)
{
    unsigned char  head[2 + 2 * IG_CANON_LEN];

    if (c->type != IG_T_NUMBER || c->len != ig_canon_num_len(d)) {
        return 0;
    }

    if (c->len == 2) {
        return 1;
    }

    head[0] = 'N';
    head[1] = d->neg ? '-' : '+';
    (void) ig_canon_put_len(head + 2,
                            (size_t) ((uint64_t) d->exp ^ (1ULL << 63)));
    (void) ig_canon_put_len(head + 2 + IG_CANON_LEN, d->n1 + d->n2);

    if (memcmp(c->p, head, sizeof(head)) != 0) {
        return 0;
    }

    if (d->n1 && memcmp(c->p + sizeof(head), d->d1, d->n1) != 0) {
        return 0;
    }

    if (d->n2 && memcmp(c->p + sizeof(head) + d->n1, d->d2, d->n2) != 0) {
        return 0;
    }

    return 1;
}


static int
ig_canon_eq_str(const ig_canon_t *c, const unsigned char *s, size_t len)
{
    return c->type == IG_T_STRING
           && c->len - (1 + IG_CANON_LEN) == len
           && (len == 0 || memcmp(c->p + 1 + IG_CANON_LEN, s, len) == 0);
}


/* helpers */

/* writes "..." (JSON-escaped, at most IG_EXCERPT bytes of s) into buf
 * of IG_EXCERPT_BUF bytes; returns the length */

static size_t
ig_excerpt(char *buf, const unsigned char *s, size_t len)
{
    size_t          n;
    unsigned char  *p;

    n = len;

    if (n > IG_EXCERPT) {
        n = IG_EXCERPT;

        /* do not cut a UTF-8 sequence */
        while (n > IG_EXCERPT - 3 && (s[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    p = (unsigned char *) buf;
    *p++ = '"';
    p = ig_json_escape(p, s, n);

    if (n < len) {
        *p++ = '.';
        *p++ = '.';
        *p++ = '.';
    }

    *p++ = '"';
    *p = '\0';

    return (size_t) (p - (unsigned char *) buf);
}


/* a number literal (ASCII), truncated */

static size_t
ig_excerpt_lit(char *buf, const unsigned char *s, size_t len)
{
    size_t  n;

    n = (len > IG_EXCERPT) ? IG_EXCERPT : len;

    memcpy(buf, s, n);

    if (n < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }

    buf[n] = '\0';

    return n;
}


static size_t
ig_utf8_chars(const unsigned char *s, size_t len)
{
    size_t    i, n;
    uint64_t  w;

    /* code points = bytes - continuation bytes (10xxxxxx) */

    n = len;
    i = 0;

    for ( /* void */ ; i + 8 <= len; i += 8) {
        memcpy(&w, s + i, 8);
        w = ((w & ~(w << 1)) >> 7) & 0x0101010101010101ULL;
        n -= (size_t) ((w * 0x0101010101010101ULL) >> 56);
    }

    for ( /* void */ ; i < len; i++) {
        n -= ((s[i] & 0xc0) == 0x80);
    }

    return n;
}


/* 8 ASCII hex digits?  SWAR range checks, no byte >= 0x80 can pass */

static inline int
ig_hex8(const unsigned char *p)
{
    uint64_t  w, l, digit, alpha;

#define IG_B(c)  (0x0101010101010101ULL * (c))

    memcpy(&w, p, 8);

    /* x in [lo, hi] for x < 0x80: high bit of (x + 0x80 - lo) and not
     * of (x + 0x7f - hi); no carry crosses bytes */

    l = (w & IG_B(0x7f)) | IG_B(0x20);

    digit = (w & IG_B(0x7f)) + IG_B(0x80 - '0');
    digit &= ~((w & IG_B(0x7f)) + IG_B(0x7f - '9'));

    alpha = (l + IG_B(0x80 - 'a')) & ~(l + IG_B(0x7f - 'f'));

    return ((digit | alpha) & ~w & IG_B(0x80)) == IG_B(0x80);

#undef IG_B
}


static int
ig_uuid_check(const unsigned char *s, size_t len)
{
    unsigned char  hex[32];

    if (len != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-'
        || s[23] != '-')
    {
        return -1;
    }

    memcpy(hex, s, 8);
    memcpy(hex + 8, s + 9, 4);
    memcpy(hex + 12, s + 14, 4);
    memcpy(hex + 16, s + 19, 4);
    memcpy(hex + 20, s + 24, 12);

    return (ig_hex8(hex) && ig_hex8(hex + 8) && ig_hex8(hex + 16)
            && ig_hex8(hex + 24)) ? 0 : -1;
}


/* the member table order: length first, then bytes */

static int
ig_name_cmp(const unsigned char *a, size_t alen, const unsigned char *b,
    size_t blen)
{
    if (alen != blen) {
        return (alen < blen) ? -1 : 1;
    }

    return alen ? memcmp(a, b, alen) : 0;
}


static int
ig_jmember_cmp(const void *a, const void *b)
{
    const ig_jmember_t  *x = a, *y = b;

    return ig_name_cmp(x->key, x->klen, y->key, y->klen);
}


static int
ig_member_cmp(const void *a, const void *b)
{
    const ig_member_t  *x = a, *y = b;

    return ig_name_cmp(x->name, x->len, y->name, y->len);
}


/* schema text -> temporary document */

static ig_jv_t *
ig_dom_value(ig_dom_t *d, unsigned type)
{
    ig_jv_t  *jv;

    jv = ig_arena_alloc(d->arena, sizeof(ig_jv_t));
    if (jv == NULL) {
        d->nomem = 1;
        return NULL;
    }

    memset(jv, 0, sizeof(ig_jv_t));
    jv->type = type;

    return jv;
}


static int
ig_dom_push_value(ig_dom_t *d, ig_jv_t *jv)
{
    size_t         n;
    ig_jmember_t  *m;

    if (d->nopen == 0) {
        d->root = jv;
        return 1;
    }

    if (d->npend == d->cpend) {
        n = d->cpend ? d->cpend * 2 : 64;

        m = realloc(d->pend, n * sizeof(ig_jmember_t));
        if (m == NULL) {
            d->nomem = 1;
            return 0;
        }

        d->pend = m;
        d->cpend = n;
    }

    m = &d->pend[d->npend++];

    if (d->open[d->nopen - 1].jv->type == IG_T_OBJECT) {
        m->key = d->key;
        m->klen = d->klen;

    } else {
        m->key = NULL;
        m->klen = 0;
    }

    m->val = jv;

    return 1;
}


static int
ig_dom_null(void *ctx)
{
    ig_dom_t  *d = ctx;
    ig_jv_t   *jv;

    jv = ig_dom_value(d, IG_T_NULL);

    return jv != NULL && ig_dom_push_value(d, jv);
}


static int
ig_dom_boolean(void *ctx, int b)
{
    ig_dom_t  *d = ctx;
    ig_jv_t   *jv;

    jv = ig_dom_value(d, IG_T_BOOLEAN);
    if (jv == NULL) {
        return 0;
    }

    jv->boolean = b;

    return ig_dom_push_value(d, jv);
}


static int
ig_dom_number(void *ctx, const char *s, size_t len)
{
    ig_dom_t  *d = ctx;
    ig_jv_t   *jv;

    jv = ig_dom_value(d, IG_T_NUMBER);
    if (jv == NULL) {
        return 0;
    }

    jv->str = ig_arena_dup(d->arena, s, len);
    if (jv->str == NULL) {
        d->nomem = 1;
        return 0;
    }

    jv->len = len;

    return ig_dom_push_value(d, jv);
}


static int
ig_dom_string(void *ctx, const unsigned char *s, size_t len)
{
    ig_dom_t  *d = ctx;
    ig_jv_t   *jv;

    jv = ig_dom_value(d, IG_T_STRING);
    if (jv == NULL) {
        return 0;
    }

    jv->str = ig_arena_dup(d->arena, s, len);
    if (jv->str == NULL) {
        d->nomem = 1;
        return 0;
    }

    jv->len = len;

    return ig_dom_push_value(d, jv);
}


static int
ig_dom_start(ig_dom_t *d, unsigned type)
{
    size_t          n;
    ig_jv_t        *jv;
    ig_dom_open_t  *o;

    if (d->nopen >= IG_DOM_MAX_DEPTH) {
        d->toodeep = 1;
        return 0;
    }

    jv = ig_dom_value(d, type);
    if (jv == NULL || !ig_dom_push_value(d, jv)) {
        return 0;
    }

    if (d->nopen == d->copen) {
        n = d->copen ? d->copen * 2 : 16;

        o = realloc(d->open, n * sizeof(ig_dom_open_t));
        if (o == NULL) {
            d->nomem = 1;
            return 0;
        }

        d->open = o;
        d->copen = n;
    }

    d->open[d->nopen].jv = jv;
    d->open[d->nopen].start = d->npend;
    d->nopen++;

    return 1;
}


static int
ig_dom_start_map(void *ctx)
{
    return ig_dom_start(ctx, IG_T_OBJECT);
}


static int
ig_dom_start_array(void *ctx)
{
    return ig_dom_start(ctx, IG_T_ARRAY);
}


static int
ig_dom_map_key(void *ctx, const unsigned char *s, size_t len)
{
    ig_dom_t  *d = ctx;

    d->key = ig_arena_dup(d->arena, s, len);
    if (d->key == NULL) {
        d->nomem = 1;
        return 0;
    }

    d->klen = len;

    return 1;
}


static int
ig_dom_end(void *ctx)
{
    ig_dom_t       *d = ctx;
    size_t          n;
    ig_dom_open_t  *o;

    o = &d->open[--d->nopen];
    n = d->npend - o->start;

    if (n) {
        o->jv->m = ig_arena_alloc(d->arena, n * sizeof(ig_jmember_t));
        if (o->jv->m == NULL) {
            d->nomem = 1;
            return 0;
        }

        memcpy(o->jv->m, d->pend + o->start, n * sizeof(ig_jmember_t));
    }

    o->jv->len = n;
    d->npend = o->start;

    return 1;
}


static const yajl_callbacks  ig_dom_callbacks = {
    ig_dom_null,
    ig_dom_boolean,
    NULL,
    NULL,
    ig_dom_number,
    ig_dom_string,
    ig_dom_start_map,
    ig_dom_map_key,
    ig_dom_end,
    ig_dom_start_array,
    ig_dom_end
};


static ig_jv_t *
ig_dom_parse(ig_cc_t *cc, ig_arena_t *arena, const unsigned char *text,
    size_t len)
{
    size_t          off;
    ig_dom_t        d;
    yajl_status     st;
    yajl_handle     h;
    unsigned char  *msg;

    memset(&d, 0, sizeof(ig_dom_t));
    d.arena = arena;

    h = yajl_alloc(&ig_dom_callbacks, NULL, &d);
    if (h == NULL) {
        ig_cc_fail(cc, "out of memory");
        return NULL;
    }

    off = 0;
    st = yajl_parse(h, text, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
        off = len;

    } else {
        off = yajl_get_bytes_consumed(h);
    }

    if (st != yajl_status_ok) {
        if (d.nomem) {
            ig_cc_fail(cc, "out of memory");

        } else if (d.toodeep) {
            ig_cc_fail(cc, "invalid JSON at byte %zu: nesting deeper than "
                       "%d levels", off, IG_DOM_MAX_DEPTH);

        } else {
            msg = yajl_get_error(h, 0, NULL, 0);

            if (msg != NULL) {
                msg[strcspn((char *) msg, "\n")] = '\0';
            }

            ig_cc_fail(cc, "invalid JSON at byte %zu: %s", off,
                       msg ? (char *) msg : "syntax error");

            if (msg != NULL) {
                yajl_free_error(h, msg);
            }
        }

        d.root = NULL;
    }

    yajl_free(h);
    free(d.pend);
    free(d.open);

    return d.root;
}


/* compiler */

static void
ig_cc_fail(ig_cc_t *cc, const char *fmt, ...)
{
    size_t          n;
    va_list         ap;
    unsigned char  *esc, *p;
    char            msg[IG_EXCERPT_BUF * 2];

    if (cc->failed) {
        return;
    }

    cc->failed = 1;

    if (cc->err == NULL || cc->errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (cc->plen == 0) {
        snprintf(cc->err, cc->errlen, "(root): %s", msg);
        return;
    }

    /* the pointer is shown with control characters escaped */

    n = ig_json_escape_len(cc->ptr, cc->plen);

    esc = malloc(n + 1);
    if (esc == NULL) {
        snprintf(cc->err, cc->errlen, "%s", msg);
        return;
    }

    p = ig_json_escape(esc, cc->ptr, cc->plen);
    *p = '\0';

    snprintf(cc->err, cc->errlen, "%s: %s", (char *) esc, msg);

    free(esc);
}


static int
ig_cc_push(ig_cc_t *cc, const unsigned char *seg, size_t n)
{
    size_t          need, size, i;
    unsigned char  *p;

    if (n > (SIZE_MAX - cc->plen - 1) / 2) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    need = cc->plen + 1 + 2 * n;

    if (need > cc->pcap) {
        size = cc->pcap ? cc->pcap : 256;

        while (size < need) {
            size *= 2;
        }

        p = realloc(cc->ptr, size);
        if (p == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        cc->ptr = p;
        cc->pcap = size;
    }

    p = cc->ptr + cc->plen;
    *p++ = '/';

    for (i = 0; i < n; i++) {
        if (seg[i] == '~') {
            *p++ = '~';
            *p++ = '0';

        } else if (seg[i] == '/') {
            *p++ = '~';
            *p++ = '1';

        } else {
            *p++ = seg[i];
        }
    }

    cc->plen = (size_t) (p - cc->ptr);

    return 0;
}


static int
ig_cc_push_index(ig_cc_t *cc, size_t i)
{
    char  buf[32];
    int   n;

    n = snprintf(buf, sizeof(buf), "%zu", i);

    return ig_cc_push(cc, (unsigned char *) buf, (size_t) n);
}


/* a schema: true (NULL), false, or an object */

static int
ig_cc_schema(ig_cc_t *cc, const ig_jv_t *jv, const ig_node_t **out,
    const char *false_msg)
{
    ig_node_t  *node;

    if (jv->type == IG_T_BOOLEAN) {
        if (jv->boolean) {
            *out = NULL;
            return 0;
        }

        node = ig_arena_alloc(cc->arena, sizeof(ig_node_t));
        if (node == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        memset(node, 0, sizeof(ig_node_t));
        node->kind = IG_NODE_FALSE;
        node->types = IG_T_ANY;
        node->false_msg = false_msg;

        *out = node;
        return 0;
    }

    if (jv->type != IG_T_OBJECT) {
        ig_cc_fail(cc, "expected a schema (an object or a boolean)");
        return -1;
    }

    return ig_cc_object(cc, jv, out);
}


enum {
    IG_KW_TYPE = 0,
    IG_KW_REQUIRED,
    IG_KW_PROPERTIES,
    IG_KW_ADDITIONAL,
    IG_KW_ENUM,
    IG_KW_CONST,
    IG_KW_MINIMUM,
    IG_KW_MAXIMUM,
    IG_KW_XMIN,
    IG_KW_XMAX,
    IG_KW_MINLEN,
    IG_KW_MAXLEN,
    IG_KW_PATTERN,
    IG_KW_ITEMS,
    IG_KW_MINITEMS,
    IG_KW_MAXITEMS,
    IG_KW_FORMAT,
    IG_KW_NASSERT,
    IG_KW_ANNOTATION = IG_KW_NASSERT
};


static const struct {
    const char  *name;
    int          kw;
} ig_keywords[] = {
    { "type", IG_KW_TYPE },
    { "required", IG_KW_REQUIRED },
    { "properties", IG_KW_PROPERTIES },
    { "additionalProperties", IG_KW_ADDITIONAL },
    { "enum", IG_KW_ENUM },
    { "const", IG_KW_CONST },
    { "minimum", IG_KW_MINIMUM },
    { "maximum", IG_KW_MAXIMUM },
    { "exclusiveMinimum", IG_KW_XMIN },
    { "exclusiveMaximum", IG_KW_XMAX },
    { "minLength", IG_KW_MINLEN },
    { "maxLength", IG_KW_MAXLEN },
    { "pattern", IG_KW_PATTERN },
    { "items", IG_KW_ITEMS },
    { "minItems", IG_KW_MINITEMS },
    { "maxItems", IG_KW_MAXITEMS },
    { "format", IG_KW_FORMAT },
    { "$schema", IG_KW_ANNOTATION },
    { "$id", IG_KW_ANNOTATION },
    { "$comment", IG_KW_ANNOTATION },
    { "title", IG_KW_ANNOTATION },
    { "description", IG_KW_ANNOTATION },
    { "default", IG_KW_ANNOTATION },
    { "examples", IG_KW_ANNOTATION },
    { "deprecated", IG_KW_ANNOTATION },
    { "readOnly", IG_KW_ANNOTATION },
    { "writeOnly", IG_KW_ANNOTATION }
};

#define IG_NKEYWORDS  (sizeof(ig_keywords) / sizeof(ig_keywords[0]))


static int
ig_cc_object(ig_cc_t *cc, const ig_jv_t *jv, const ig_node_t **out)
{
    int                  kw;
    size_t               i, k, base, nlen;
    uint32_t             seen;
    ig_node_t           *node;
    const ig_jv_t       *v;
    const ig_jmember_t  *m;
    ig_jv_t             *kv[IG_KW_NASSERT];
    char                 ex[IG_EXCERPT_BUF];

    static const char  *num_names[4] = {
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"
    };

    static const struct {
        const char  *name;
        int          kw;
        unsigned     flag;
        size_t       off;
    } sizes[4] = {
        { "minLength", IG_KW_MINLEN, IG_F_MINLEN,
          offsetof(ig_node_t, min_len) },
        { "maxLength", IG_KW_MAXLEN, IG_F_MAXLEN,
          offsetof(ig_node_t, max_len) },
        { "minItems", IG_KW_MINITEMS, IG_F_MINITEMS,
          offsetof(ig_node_t, min_items) },
        { "maxItems", IG_KW_MAXITEMS, IG_F_MAXITEMS,
          offsetof(ig_node_t, max_items) }
    };

    memset(kv, 0, sizeof(kv));
    seen = 0;

    for (i = 0; i < jv->len; i++) {
        m = &jv->m[i];

        for (k = 0; k < IG_NKEYWORDS; k++) {
            nlen = strlen(ig_keywords[k].name);

            if (nlen == m->klen && memcmp(ig_keywords[k].name, m->key, nlen)
                                   == 0)
            {
                break;
            }
        }

        if (k == IG_NKEYWORDS) {
            ig_excerpt(ex, m->key, m->klen);
            ig_cc_fail(cc, "unknown keyword %s", ex);
            return -1;
        }

        if (seen & (1u << k)) {
            ig_excerpt(ex, m->key, m->klen);
            ig_cc_fail(cc, "duplicate keyword %s", ex);
            return -1;
        }

        seen |= 1u << k;
        kw = ig_keywords[k].kw;

        if (kw != IG_KW_ANNOTATION) {
            kv[kw] = m->val;
        }
    }

    node = ig_arena_alloc(cc->arena, sizeof(ig_node_t));
    if (node == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    memset(node, 0, sizeof(ig_node_t));
    node->kind = IG_NODE_SCHEMA;
    node->types = IG_T_ANY | IG_T_INTEGER;

    base = cc->plen;

#define ig_cc_enter(name)                                                    \
    if (ig_cc_push(cc, (const unsigned char *) name, sizeof(name) - 1)       \
        != 0)                                                                \
    {                                                                        \
        return -1;                                                           \
    }

    if (kv[IG_KW_TYPE]) {
        ig_cc_enter("type");
        if (ig_cc_type(cc, node, kv[IG_KW_TYPE]) != 0) {
            return -1;
        }
        cc->plen = base;
        node->flags |= IG_F_TYPE;
    }

    if (kv[IG_KW_PROPERTIES] || kv[IG_KW_REQUIRED]) {
        if (ig_cc_members(cc, node, kv[IG_KW_PROPERTIES],
                          kv[IG_KW_REQUIRED])
            != 0)
        {
            return -1;
        }
    }

    if (kv[IG_KW_ADDITIONAL]) {
        ig_cc_enter("additionalProperties");
        if (ig_cc_schema(cc, kv[IG_KW_ADDITIONAL], &node->additional,
                         "property is not allowed")
            != 0)
        {
            return -1;
        }
        cc->plen = base;
    }

    if (node->nmembers || node->additional) {
        node->flags |= IG_F_OBJECT;
    }

    if (kv[IG_KW_ITEMS]) {
        ig_cc_enter("items");
        if (ig_cc_schema(cc, kv[IG_KW_ITEMS], &node->items,
                         "item is not allowed")
            != 0)
        {
            return -1;
        }
        cc->plen = base;

        if (node->items) {
            node->flags |= IG_F_ITEMS;
        }
    }

    if (kv[IG_KW_ENUM]) {
        ig_cc_enter("enum");
        if (ig_cc_enum(cc, node, kv[IG_KW_ENUM]) != 0) {
            return -1;
        }
        cc->plen = base;
    }

    if (kv[IG_KW_CONST]) {
        ig_cc_enter("const");
        if (ig_cc_const(cc, node, kv[IG_KW_CONST]) != 0) {
            return -1;
        }
        cc->plen = base;
    }

    node->cap_types = (node->enum_types | node->const_types)
                      & (IG_T_OBJECT | IG_T_ARRAY);

    for (k = 0; k < 4; k++) {
        v = kv[IG_KW_MINIMUM + k];
        if (v == NULL) {
            continue;
        }

        if (ig_cc_push(cc, (const unsigned char *) num_names[k],
                       strlen(num_names[k]))
            != 0)
        {
            return -1;
        }

        if (ig_cc_number(cc, &node->num[k], v) != 0) {
            return -1;
        }

        cc->plen = base;
        node->flags |= 1u << k;
    }

    for (k = 0; k < 4; k++) {
        v = kv[sizes[k].kw];
        if (v == NULL) {
            continue;
        }

        if (ig_cc_push(cc, (const unsigned char *) sizes[k].name,
                       strlen(sizes[k].name))
            != 0)
        {
            return -1;
        }

        if (ig_cc_size(cc, (size_t *) ((char *) node + sizes[k].off), v)
            != 0)
        {
            return -1;
        }

        cc->plen = base;
        node->flags |= sizes[k].flag;
    }

    if (kv[IG_KW_PATTERN]) {
        ig_cc_enter("pattern");
        if (ig_cc_pattern(cc, node, kv[IG_KW_PATTERN]) != 0) {
            return -1;
        }
        cc->plen = base;
        node->flags |= IG_F_PATTERN;
    }

    if (kv[IG_KW_FORMAT]) {
        ig_cc_enter("format");
        if (ig_cc_format(cc, node, kv[IG_KW_FORMAT]) != 0) {
            return -1;
        }
        cc->plen = base;
        node->flags |= IG_F_FORMAT;
    }

#undef ig_cc_enter

    if (node->flags == 0 && node->nmembers == 0) {
        /* annotations only: anything goes */
        *out = NULL;
        return 0;
    }

    if (node->nrequired) {
        k = (node->nrequired + 63) / 64;

        if (k > cc->schema->req_words) {
            cc->schema->req_words = k;
        }
    }

    *out = node;

    return 0;
}


static int
ig_cc_type(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *jv)
{
    int             single;
    size_t          i, k, n, len, base;
    unsigned        mask, t;
    const ig_jv_t  *s;
    char           *msg, *p;
    char            ex[IG_EXCERPT_BUF];

    static const unsigned  order[] = {
        IG_T_OBJECT, IG_T_ARRAY, IG_T_STRING, IG_T_NUMBER, IG_T_INTEGER,
        IG_T_BOOLEAN, IG_T_NULL
    };

    single = (jv->type == IG_T_STRING);

    if (!single && jv->type != IG_T_ARRAY) {
        ig_cc_fail(cc, "expected a string or an array of strings");
        return -1;
    }

    n = single ? 1 : jv->len;
    mask = 0;
    base = cc->plen;

    for (i = 0; i < n; i++) {
        s = single ? jv : jv->m[i].val;

        if (!single && ig_cc_push_index(cc, i) != 0) {
            return -1;
        }

        if (s->type != IG_T_STRING) {
            ig_cc_fail(cc, "expected a string");
            return -1;
        }

        for (k = 0; k < 7; k++) {
            if (strlen(ig_type_names[k]) == s->len
                && memcmp(ig_type_names[k], s->str, s->len) == 0)
            {
                break;
            }
        }

        if (k == 7) {
            ig_excerpt(ex, s->str, s->len);
            ig_cc_fail(cc, "unknown type %s", ex);
            return -1;
        }

        t = 1u << k;

        if (mask & t) {
            ig_excerpt(ex, s->str, s->len);
            ig_cc_fail(cc, "duplicate type %s", ex);
            return -1;
        }

        mask |= t;
        cc->plen = base;
    }

    node->types = mask;

    if ((mask & IG_T_NUMBER) && (mask & IG_T_INTEGER)) {
        mask &= ~IG_T_INTEGER;
    }

    /* "a", "a or b", "a, b or c" */

    len = 1;

    for (k = 0; k < 7; k++) {
        len += strlen(ig_type_names[k]) + 4;
    }

    msg = ig_arena_alloc(cc->arena, len);
    if (msg == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    p = msg;
    *p = '\0';

    n = 0;

    for (k = 0; k < 7; k++) {
        n += (mask & order[k]) != 0;
    }

    if (n == 0) {
        strcpy(msg, "nothing");
    }

    i = 0;

    for (k = 0; k < 7; k++) {
        t = order[k];

        if (!(mask & t)) {
            continue;
        }

        if (i > 0) {
            p = stpcpy(p, (i == n - 1) ? " or " : ", ");
        }

        p = stpcpy(p, ig_type_names[__builtin_ctz(t)]);
        i++;
    }

    node->type_msg = msg;

    return 0;
}


static int
ig_cc_number(ig_cc_t *cc, ig_snum_t *num, const ig_jv_t *jv)
{
    unsigned char  *lit;
    char            buf[IG_EXCERPT + 4];

    if (jv->type != IG_T_NUMBER) {
        ig_cc_fail(cc, "expected a number");
        return -1;
    }

    /* the decimal points into the literal: keep it with the schema */
    lit = ig_arena_dup(cc->arena, jv->str, jv->len);
    if (lit == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    ig_dec_parse(&num->dec, lit, jv->len);
    num->small = ig_dec_small(&num->dec, &num->ival);

    ig_excerpt_lit(buf, jv->str, jv->len);

    num->text = ig_arena_dup(cc->arena, buf, strlen(buf));
    if (num->text == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    return 0;
}


static int
ig_cc_size(ig_cc_t *cc, size_t *out, const ig_jv_t *jv)
{
    ig_dec_t  d;

    if (jv->type == IG_T_NUMBER) {
        ig_dec_parse(&d, jv->str, jv->len);

        if (!d.neg && ig_dec_is_integer(&d)) {
            *out = ig_dec_to_size(&d);
            return 0;
        }
    }

    ig_cc_fail(cc, "expected a non-negative integer");

    return -1;
}


static int
ig_cc_members(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *props,
    const ig_jv_t *req)
{
    size_t          i, j, n, np, nr, base, nreq;
    size_t         *required;
    uint32_t       *idx;
    ig_member_t    *mem, *m;
    ig_jmember_t   *sorted;
    const ig_jv_t  *s;
    char            ex[IG_EXCERPT_BUF];

    base = cc->plen;
    np = 0;
    nr = 0;

    if (props) {
        if (ig_cc_push(cc, (const unsigned char *) "properties", 10) != 0) {
            return -1;
        }

        if (props->type != IG_T_OBJECT) {
            ig_cc_fail(cc, "expected an object");
            return -1;
        }

        np = props->len;
        cc->plen = base;
    }

    if (req) {
        if (ig_cc_push(cc, (const unsigned char *) "required", 8) != 0) {
            return -1;
        }

        if (req->type != IG_T_ARRAY) {
            ig_cc_fail(cc, "expected an array of strings");
            return -1;
        }

        for (i = 0; i < req->len; i++) {
            if (req->m[i].val->type != IG_T_STRING) {
                if (ig_cc_push_index(cc, i) != 0) {
                    return -1;
                }

                ig_cc_fail(cc, "expected a string");
                return -1;
            }
        }

        nr = req->len;
        cc->plen = base;
    }

    if (np + nr == 0) {
        return 0;
    }

    mem = ig_arena_alloc(cc->arena, (np + nr) * sizeof(ig_member_t));
    if (mem == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    n = 0;

    if (np) {
        /* compile each property schema in document order so errors
         * name the first bad one; then sort and look for duplicates */

        sorted = ig_arena_alloc(cc->arena, np * sizeof(ig_jmember_t));
        if (sorted == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        memcpy(sorted, props->m, np * sizeof(ig_jmember_t));
        qsort(sorted, np, sizeof(ig_jmember_t), ig_jmember_cmp);

        for (i = 1; i < np; i++) {
            if (ig_jmember_cmp(&sorted[i - 1], &sorted[i]) == 0) {
                if (ig_cc_push(cc, (const unsigned char *) "properties", 10)
                    != 0)
                {
                    return -1;
                }

                ig_excerpt(ex, sorted[i].key, sorted[i].klen);
                ig_cc_fail(cc, "duplicate property %s", ex);
                return -1;
            }
        }

        for (i = 0; i < np; i++) {
            if (ig_cc_push(cc, (const unsigned char *) "properties", 10)
                != 0
                || ig_cc_push(cc, props->m[i].key, props->m[i].klen) != 0)
            {
                return -1;
            }

            m = &mem[n++];
            m->name = ig_arena_dup(cc->arena, props->m[i].key,
                                   props->m[i].klen);
            m->len = props->m[i].klen;

            if (m->name == NULL) {
                ig_cc_fail(cc, "out of memory");
                return -1;
            }

            m->in_props = 1;
            m->req = -1;

            if (ig_cc_schema(cc, props->m[i].val, &m->schema,
                             "property is not allowed")
                != 0)
            {
                return -1;
            }

            cc->plen = base;
        }
    }

    for (i = 0; i < nr; i++) {
        s = req->m[i].val;
        m = &mem[n++];
        m->name = ig_arena_dup(cc->arena, s->str, s->len);
        m->len = s->len;

        if (m->name == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        m->schema = NULL;
        m->in_props = 0;
        m->req = 1;
    }

    qsort(mem, n, sizeof(ig_member_t), ig_member_cmp);

    /* merge equal names: a property that is also required, or a
     * required name listed twice */

    j = 0;

    for (i = 0; i < n; i++) {
        if (j > 0 && ig_member_cmp(&mem[j - 1], &mem[i]) == 0) {
            if (mem[i].in_props) {
                mem[j - 1].in_props = 1;
                mem[j - 1].schema = mem[i].schema;
            }

            if (mem[i].req > 0) {
                mem[j - 1].req = 1;
            }

            continue;
        }

        mem[j++] = mem[i];
    }

    n = j;
    nreq = 0;

    for (i = 0; i < n; i++) {
        if (mem[i].req > 0) {
            nreq++;
        }

        /* the pointer segment, escaped once here */

        cc->plen = base;

        if (ig_cc_push(cc, mem[i].name, mem[i].len) != 0) {
            return -1;
        }

        mem[i].seg_len = cc->plen - base;
        mem[i].seg = ig_arena_dup(cc->arena, cc->ptr + base, mem[i].seg_len);

        if (mem[i].seg == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }
    }

    cc->plen = base;

    required = NULL;

    if (nreq) {
        required = ig_arena_alloc(cc->arena, nreq * sizeof(size_t));
        if (required == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        j = 0;

        for (i = 0; i < n; i++) {
            if (mem[i].req > 0) {
                mem[i].req = (int) j;
                required[j++] = i;

            } else {
                mem[i].req = -1;
            }
        }
    }

    if (n > UINT32_MAX) {
        ig_cc_fail(cc, "too many properties");
        return -1;
    }

    /* idx[k]: the first member whose name is at least k bytes long */

    idx = ig_arena_alloc(cc->arena, (IG_LEN_INDEX + 1) * sizeof(uint32_t));
    if (idx == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    j = 0;

    for (i = 0; i <= IG_LEN_INDEX; i++) {
        while (j < n && mem[j].len < i) {
            j++;
        }

        idx[i] = (uint32_t) j;
    }

    node->members = mem;
    node->nmembers = n;
    node->len_idx = idx;
    node->required = required;
    node->nrequired = nreq;

    return 0;
}


/* ECMA-262 General_Category names that PCRE2 10.42 does not know */

static const struct {
    const char  *ecma;
    const char  *pcre;
} ig_gc_names[] = {
    { "Letter", "L" }, { "Cased_Letter", "L&" }, { "LC", "L&" },
    { "Uppercase_Letter", "Lu" }, { "Lowercase_Letter", "Ll" },
    { "Titlecase_Letter", "Lt" }, { "Modifier_Letter", "Lm" },
    { "Other_Letter", "Lo" }, { "Mark", "M" }, { "Combining_Mark", "M" },
    { "Nonspacing_Mark", "Mn" }, { "Spacing_Mark", "Mc" },
    { "Enclosing_Mark", "Me" }, { "Number", "N" },
    { "Decimal_Number", "Nd" }, { "digit", "Nd" },
    { "Letter_Number", "Nl" }, { "Other_Number", "No" },
    { "Punctuation", "P" }, { "punct", "P" },
    { "Connector_Punctuation", "Pc" }, { "Dash_Punctuation", "Pd" },
    { "Open_Punctuation", "Ps" }, { "Close_Punctuation", "Pe" },
    { "Initial_Punctuation", "Pi" }, { "Final_Punctuation", "Pf" },
    { "Other_Punctuation", "Po" }, { "Symbol", "S" },
    { "Math_Symbol", "Sm" }, { "Currency_Symbol", "Sc" },
    { "Modifier_Symbol", "Sk" }, { "Other_Symbol", "So" },
    { "Separator", "Z" }, { "Space_Separator", "Zs" },
    { "Line_Separator", "Zl" }, { "Paragraph_Separator", "Zp" },
    { "Other", "C" }, { "Control", "Cc" }, { "cntrl", "Cc" },
    { "Format", "Cf" }, { "Surrogate", "Cs" }, { "Private_Use", "Co" },
    { "Unassigned", "Cn" }
};


/*
 * Rewrites \p{Letter}, \p{General_Category=X}, \p{gc=X},
 * \p{Script=X}, \p{sc=X}, \p{Script_Extensions=X} and \p{scx=X} into
 * names PCRE2 understands.  Returns a NUL-terminated arena copy, or the
 * source itself when nothing needs rewriting.
 */

static const unsigned char *
ig_cc_ecma_props(ig_cc_t *cc, const unsigned char *src, size_t len,
    size_t *outlen)
{
    size_t                i, j, k, nlen, vlen, plen;
    unsigned char        *out, *o;
    const char           *name, *pfx;
    const unsigned char  *v, *close;

    if (len < 4) {
        *outlen = len;
        return src;
    }

    /* the longest rewrite ("L&" for "LC") grows 2 bytes into 3,
     * "sc:"/"scx:" replace longer prefixes */
    out = ig_arena_alloc(cc->arena, len * 2 + 1);
    if (out == NULL) {
        return NULL;
    }

    o = out;
    i = 0;

    while (i < len) {
        if (src[i] != '\\' || i + 1 == len) {
            *o++ = src[i++];
            continue;
        }

        if ((src[i + 1] != 'p' && src[i + 1] != 'P')
            || i + 2 >= len || src[i + 2] != '{')
        {
            *o++ = src[i++];
            *o++ = src[i++];
            continue;
        }

        close = memchr(src + i + 3, '}', len - i - 3);
        if (close == NULL) {
            *o++ = src[i++];
            *o++ = src[i++];
            continue;
        }

        v = src + i + 3;
        vlen = (size_t) (close - v);
        pfx = NULL;

        for (j = 0; j < vlen; j++) {
            if (v[j] == '=') {
                break;
            }
        }

        if (j < vlen) {
            if ((j == 16 && memcmp(v, "General_Category", 16) == 0)
                || (j == 2 && memcmp(v, "gc", 2) == 0))
            {
                pfx = "";

            } else if ((j == 6 && memcmp(v, "Script", 6) == 0)
                       || (j == 2 && memcmp(v, "sc", 2) == 0))
            {
                pfx = "sc:";

            } else if ((j == 17 && memcmp(v, "Script_Extensions", 17) == 0)
                       || (j == 3 && memcmp(v, "scx", 3) == 0))
            {
                pfx = "scx:";
            }

            if (pfx != NULL) {
                v += j + 1;
                vlen -= j + 1;
            }
        }

        name = NULL;

        if (pfx == NULL || *pfx == '\0') {
            for (k = 0; k < sizeof(ig_gc_names) / sizeof(ig_gc_names[0]);
                 k++)
            {
                nlen = strlen(ig_gc_names[k].ecma);

                if (nlen == vlen && memcmp(ig_gc_names[k].ecma, v, nlen) == 0)
                {
                    name = ig_gc_names[k].pcre;
                    break;
                }
            }
        }

        *o++ = '\\';
        *o++ = src[i + 1];
        *o++ = '{';

        if (pfx != NULL) {
            plen = strlen(pfx);
            memcpy(o, pfx, plen);
            o += plen;
        }

        if (name != NULL) {
            nlen = strlen(name);
            memcpy(o, name, nlen);
            o += nlen;

        } else {
            memcpy(o, v, vlen);
            o += vlen;
        }

        *o++ = '}';
        i = (size_t) (close - src) + 1;
    }

    *o = '\0';
    *outlen = (size_t) (o - out);

    return out;
}


static int
ig_cc_pattern(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *jv)
{
    int                   errcode;
    size_t                len;
    ig_re_t              *re;
    pcre2_code           *code;
    PCRE2_SIZE            erroff;
    const unsigned char  *src;
    PCRE2_UCHAR           msg[256];
    char                  ex[IG_EXCERPT_BUF];

    if (jv->type != IG_T_STRING) {
        ig_cc_fail(cc, "expected a string");
        return -1;
    }

    src = ig_cc_ecma_props(cc, jv->str, jv->len, &len);
    if (src == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    if (cc->cctx == NULL) {
        cc->cctx = pcre2_compile_context_create(NULL);
        if (cc->cctx == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        pcre2_set_compile_extra_options(cc->cctx, PCRE2_EXTRA_ALT_BSUX);
    }

    code = pcre2_compile(src, len,
                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF
                         | PCRE2_DOLLAR_ENDONLY | PCRE2_ALT_BSUX
                         | PCRE2_NEVER_BACKSLASH_C,
                         &errcode, &erroff, cc->cctx);

    if (code == NULL) {
        if (pcre2_get_error_message(errcode, msg, sizeof(msg)) < 0) {
            strcpy((char *) msg, "unknown error");
        }

        ig_cc_fail(cc, "invalid regular expression at offset %zu: %s",
                   (size_t) erroff, (char *) msg);
        return -1;
    }

    re = ig_arena_alloc(cc->arena, sizeof(ig_re_t));
    if (re == NULL) {
        pcre2_code_free(code);
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    re->code = code;
    re->next = cc->schema->res;
    cc->schema->res = re;

    /* JIT is an optimization: the interpreter is used without it */
    node->re_jit = (pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0);

    node->re = code;

    ig_excerpt(ex, jv->str, jv->len);

    node->re_msg = ig_arena_dup(cc->arena, ex, strlen(ex));
    if (node->re_msg == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    if (cc->schema->mctx == NULL) {
        cc->schema->mctx = pcre2_match_context_create(NULL);
        if (cc->schema->mctx == NULL) {
            ig_cc_fail(cc, "out of memory");
            return -1;
        }

        pcre2_set_match_limit(cc->schema->mctx, IG_MATCH_LIMIT);
        pcre2_set_depth_limit(cc->schema->mctx, IG_DEPTH_LIMIT);
    }

    return 0;
}


static int
ig_cc_format(ig_cc_t *cc, ig_node_t *node, const ig_jv_t *jv)
{
    size_t  i;
    char    ex[IG_EXCERPT_BUF];

    static const struct {
        const char  *name;
        unsigned     format;
    } formats[] = {
        { "date-time", IG_FMT_DATE_TIME },
        { "date", IG_FMT_DATE },
        { "time", IG_FMT_TIME },
        { "uuid", IG_FMT_UUID }
    };

    if (jv->type != IG_T_STRING) {
        ig_cc_fail(cc, "expected a string");
        return -1;
    }

    for (i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        if (strlen(formats[i].name) == jv->len
            && memcmp(formats[i].name, jv->str, jv->len) == 0)
        {
            node->format = formats[i].format;
            return 0;
        }
    }

    ig_excerpt(ex, jv->str, jv->len);
    ig_cc_fail(cc, "unknown format %s", ex);

    return -1;
}


/* sorts object members for the canonical form, rejects duplicates */

static int
ig_cc_canon_prepare(ig_cc_t *cc, ig_jv_t *jv)
{
    size_t  i;
    char    ex[IG_EXCERPT_BUF];

    if (jv->type == IG_T_OBJECT && jv->len > 1) {
        qsort(jv->m, jv->len, sizeof(ig_jmember_t), ig_jmember_cmp);

        for (i = 1; i < jv->len; i++) {
            if (ig_jmember_cmp(&jv->m[i - 1], &jv->m[i]) == 0) {
                ig_excerpt(ex, jv->m[i].key, jv->m[i].klen);
                ig_cc_fail(cc, "duplicate object member %s", ex);
                return -1;
            }
        }
    }

    if (jv->type == IG_T_OBJECT || jv->type == IG_T_ARRAY) {
        for (i = 0; i < jv->len; i++) {
            if (ig_cc_canon_prepare(cc, jv->m[i].val) != 0) {
                return -1;
            }
        }
    }

    return 0;
}


static size_t
ig_cc_canon_len(const ig_jv_t *jv)
{
    size_t    i, n;
    ig_dec_t  d;

    switch (jv->type) {

    case IG_T_NUMBER:
        ig_dec_parse(&d, jv->str, jv->len);
        return ig_canon_num_len(&d);

    case IG_T_STRING:
        return 1 + IG_CANON_LEN + jv->len;

    case IG_T_ARRAY:
    case IG_T_OBJECT:
        n = 2;

        for (i = 0; i < jv->len; i++) {
            if (jv->type == IG_T_OBJECT) {
                n += IG_CANON_LEN + jv->m[i].klen;
            }

            n += ig_cc_canon_len(jv->m[i].val);
        }

        return n;

    default:
        return 1;
    }
}


static unsigned char *
ig_cc_canon_write(unsigned char *p, const ig_jv_t *jv)
{
    size_t    i;
    ig_dec_t  d;

    switch (jv->type) {

    case IG_T_NULL:
        *p++ = 'n';
        return p;

    case IG_T_BOOLEAN:
        *p++ = jv->boolean ? 't' : 'f';
        return p;

    case IG_T_NUMBER:
        ig_dec_parse(&d, jv->str, jv->len);
        return ig_canon_num_write(p, &d);

    case IG_T_STRING:
        *p++ = 'S';
        p = ig_canon_put_len(p, jv->len);

        if (jv->len) {
            memcpy(p, jv->str, jv->len);
            p += jv->len;
        }

        return p;

    default:
        *p++ = (jv->type == IG_T_OBJECT) ? '{' : '[';

        for (i = 0; i < jv->len; i++) {
            if (jv->type == IG_T_OBJECT) {
                p = ig_canon_put_len(p, jv->m[i].klen);

                if (jv->m[i].klen) {
                    memcpy(p, jv->m[i].key, jv->m[i].klen);
                    p += jv->m[i].klen;
                }
            }

            p = ig_cc_canon_write(p, jv->m[i].val);
        }

        *p++ = (jv->type == IG_T_OBJECT) ? '}' : ']';

        return p;
    }
}


static int
ig_cc_canon(ig_cc_t *cc, ig_canon_t *c, ig_jv_t *jv)
{
    size_t          len;
    unsigned char  *p;

    if (ig_cc_canon_prepare(cc, jv) != 0) {
        return -1;
    }

    len = ig_cc_canon_len(jv);

    p = ig_arena_alloc(cc->arena, len);
    if (p == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    (void) ig_cc_canon_write(p, jv);

    c->p = p;
    c->len = len;
    c->type = jv->type;

    return 0;
}


static int
ig_cc_enum(ig_cc_t *cc, ig_node_t *node, ig_jv_t *en)
{
    size_t       i, base;
    ig_canon_t  *c;

    if (en->type != IG_T_ARRAY) {
        ig_cc_fail(cc, "expected an array");
        return -1;
    }

    c = ig_arena_alloc(cc->arena, (en->len + 1) * sizeof(ig_canon_t));
    if (c == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    base = cc->plen;

    for (i = 0; i < en->len; i++) {
        if (ig_cc_push_index(cc, i) != 0
            || ig_cc_canon(cc, &c[i], en->m[i].val) != 0)
        {
            return -1;
        }

        cc->plen = base;
        node->enum_types |= c[i].type;

        if ((c[i].type & (IG_T_OBJECT | IG_T_ARRAY))
            && c[i].len > node->cap_limit)
        {
            node->cap_limit = c[i].len;
        }
    }

    node->enums = c;
    node->nenums = en->len;
    node->flags |= IG_F_ENUM;

    return 0;
}


static int
ig_cc_const(ig_cc_t *cc, ig_node_t *node, ig_jv_t *cn)
{
    ig_canon_t  *c;

    c = ig_arena_alloc(cc->arena, sizeof(ig_canon_t));
    if (c == NULL) {
        ig_cc_fail(cc, "out of memory");
        return -1;
    }

    if (ig_cc_canon(cc, c, cn) != 0) {
        return -1;
    }

    node->konst = c;
    node->const_types = c->type;
    node->flags |= IG_F_CONST;

    if ((c->type & (IG_T_OBJECT | IG_T_ARRAY)) && c->len > node->cap_limit) {
        node->cap_limit = c->len;
    }

    return 0;
}


ig_schema_t *
ig_schema_compile(const unsigned char *text, size_t len, char *err,
    size_t errlen)
{
    ig_cc_t       cc;
    ig_jv_t      *doc;
    ig_arena_t    tmp;
    ig_schema_t  *schema;

    if (err != NULL && errlen > 0) {
        err[0] = '\0';
    }

    memset(&cc, 0, sizeof(ig_cc_t));
    cc.err = err;
    cc.errlen = errlen;

    schema = calloc(1, sizeof(ig_schema_t));
    if (schema == NULL) {
        ig_cc_fail(&cc, "out of memory");
        return NULL;
    }

    cc.schema = schema;
    cc.arena = &schema->arena;

    ig_schema_sipkey(schema->sipkey);

    tmp.head = NULL;

    doc = ig_dom_parse(&cc, &tmp, text, len);

    if (doc != NULL) {
        (void) ig_cc_schema(&cc, doc, &schema->root,
                            "schema does not allow any value");
    }

    ig_arena_free(&tmp);
    free(cc.ptr);

    if (cc.cctx != NULL) {
        pcre2_compile_context_free(cc.cctx);
    }

    if (doc == NULL || cc.failed) {
        ig_schema_free(schema);
        return NULL;
    }

    return schema;
}


/*
 * The key of the member-name hash: secret, so that a client cannot
 * choose names that all fall into one bucket.
 */

static void
ig_schema_sipkey(uint64_t *k)
{
    size_t           n;
    ssize_t          r;
    unsigned char   *p;
    struct timespec  ts;

    p = (unsigned char *) k;
    n = 0;

    while (n < 2 * sizeof(uint64_t)) {
        r = getrandom(p + n, 2 * sizeof(uint64_t) - n, GRND_NONBLOCK);

        if (r <= 0) {
            break;
        }

        n += (size_t) r;
    }

    if (n == 2 * sizeof(uint64_t)) {
        return;
    }

    /* no entropy yet (early boot): still differs per process and time */

    (void) clock_gettime(CLOCK_REALTIME, &ts);

    k[0] ^= (uint64_t) ts.tv_nsec * 0x9e3779b97f4a7c15ULL
            ^ (uint64_t) ts.tv_sec;
    k[1] ^= ((uint64_t) getpid() << 32) ^ (uint64_t) (uintptr_t) k
            ^ (uint64_t) clock();
}


void
ig_schema_free(ig_schema_t *schema)
{
    ig_re_t  *re;

    if (schema == NULL) {
        return;
    }

    for (re = schema->res; re; re = re->next) {
        pcre2_code_free(re->code);
    }

    if (schema->mctx != NULL) {
        pcre2_match_context_free(schema->mctx);
    }

    ig_arena_free(&schema->arena);
    free(schema);
}


/* validator */

static void *
ig_default_malloc(void *ctx, size_t size)
{
    (void) ctx;
    return malloc(size);
}


static void *
ig_default_realloc(void *ctx, void *p, size_t size)
{
    (void) ctx;
    return realloc(p, size);
}


static void
ig_default_free(void *ctx, void *p)
{
    (void) ctx;
    free(p);
}


static void *
ig_pcre_malloc(PCRE2_SIZE size, void *data)
{
    yajl_alloc_funcs  *af = data;

    return af->malloc(af->ctx, size);
}


static void
ig_pcre_free(void *p, void *data)
{
    yajl_alloc_funcs  *af = data;

    if (p != NULL) {
        af->free(af->ctx, p);
    }
}


static const ig_jsonlex_callbacks_t  ig_v_callbacks = {
    ig_v_null,
    ig_v_boolean,
    ig_v_number,
    ig_v_string,
    ig_v_start_map,
    ig_v_map_key,
    ig_v_end,
    ig_v_start_array,
    ig_v_end
};


ig_validator_t *
ig_validator_create(const ig_schema_t *schema, const yajl_alloc_funcs *af,
    unsigned max_depth, ig_member_pt on_member, void *data)
{
    size_t             size, words, fsize, bsize, lsize;
    ig_validator_t    *v;
    yajl_alloc_funcs   funcs;
    unsigned char     *p;

    if (schema == NULL) {
        return NULL;
    }

    if (af == NULL) {
        funcs.malloc = ig_default_malloc;
        funcs.realloc = ig_default_realloc;
        funcs.free = ig_default_free;
        funcs.ctx = NULL;

    } else {
        funcs = *af;
    }

    words = schema->req_words;

    if (max_depth > (SIZE_MAX / 4) / (sizeof(ig_frame_t) + 8 * words + 8)) {
        return NULL;
    }

    size = (sizeof(ig_validator_t) + 15) & ~(size_t) 15;
    fsize = (size_t) max_depth * sizeof(ig_frame_t);
    bsize = (size_t) max_depth * words * sizeof(uint64_t);
    lsize = ig_jsonlex_size(max_depth);

    p = funcs.malloc(funcs.ctx, size + fsize + bsize + lsize);
    if (p == NULL) {
        return NULL;
    }

    v = (ig_validator_t *) p;
    memset(v, 0, offsetof(ig_validator_t, errors));

    v->schema = schema;
    v->af = funcs;
    v->on_member = on_member;
    v->data = data;
    v->frames = (ig_frame_t *) (p + size);
    v->bits = (uint64_t *) (p + size + fsize);
    v->req_words = words;
    v->max_depth = max_depth;
    v->ptr = v->ptr_inline;
    v->ptr_cap = IG_PTR_INLINE;
    v->key = v->key_inline;
    v->key_cap = IG_KEY_INLINE;
    v->names = v->names_inline;
    v->names_size = IG_NAMES_INLINE;
    v->nents = v->nents_inline;
    v->nents_size = sizeof(v->nents_inline);

    if (schema->mctx != NULL) {
        v->gctx = pcre2_general_context_create(ig_pcre_malloc, ig_pcre_free,
                                               &v->af);
        if (v->gctx == NULL) {
            goto failed;
        }

        v->md = pcre2_match_data_create(1, v->gctx);
        if (v->md == NULL) {
            goto failed;
        }
    }

    v->lx = ig_jsonlex_init(p + size + fsize + bsize, max_depth,
                            &ig_v_callbacks, v, &v->af);

    return v;

failed:

    ig_validator_destroy(v);

    return NULL;
}


void
ig_validator_destroy(ig_validator_t *v)
{
    if (v == NULL) {
        return;
    }

    if (v->lx != NULL) {
        ig_jsonlex_cleanup(v->lx);
    }

    ig_v_clear_errors(v);

    if (v->md != NULL) {
        pcre2_match_data_free(v->md);
    }

    if (v->gctx != NULL) {
        pcre2_general_context_free(v->gctx);
    }

    if (v->ptr != v->ptr_inline) {
        v->af.free(v->af.ctx, v->ptr);
    }

    if (v->key != v->key_inline) {
        v->af.free(v->af.ctx, v->key);
    }

    if (v->names != v->names_inline) {
        v->af.free(v->af.ctx, v->names);
    }

    if (v->nents != v->nents_inline) {
        v->af.free(v->af.ctx, v->nents);
    }

    if (v->buckets != NULL) {
        v->af.free(v->af.ctx, v->buckets);
    }

    if (v->dptr != NULL) {
        v->af.free(v->af.ctx, v->dptr);
    }

    if (v->cap != NULL) {
        v->af.free(v->af.ctx, v->cap);
    }

    if (v->segs != NULL) {
        v->af.free(v->af.ctx, v->segs);
    }

    if (v->scratch != NULL) {
        v->af.free(v->af.ctx, v->scratch);
    }

    v->af.free(v->af.ctx, v);
}


size_t
ig_validator_errors(ig_validator_t *v, const ig_verror_t **errors,
    int *truncated)
{
    if (errors != NULL) {
        *errors = v->errors;
    }

    if (truncated != NULL) {
        *truncated = v->truncated;
    }

    return v->nerrors;
}


static void
ig_v_clear_errors(ig_validator_t *v)
{
    size_t  i;

    for (i = 0; i < v->nerrors; i++) {
        if (!v->err_static[i]) {
            v->af.free(v->af.ctx, (void *) v->errors[i].pointer);
        }
    }

    v->nerrors = 0;
    v->truncated = 0;
}


/*
 * Records an error at the current pointer.  Returns 0, or -1 (with
 * v->rc set) when memory runs out.
 */

static int
ig_v_error(ig_validator_t *v, const char *fmt, ...)
{
    int      rc;
    va_list  ap;

    va_start(ap, fmt);
    rc = ig_v_verror(v, v->ptr, v->ptr_len, fmt, ap);
    va_end(ap);

    return rc;
}


static int
ig_v_error_at(ig_validator_t *v, const unsigned char *ptr, size_t ptr_len,
    const char *fmt, ...)
{
    int      rc;
    va_list  ap;

    va_start(ap, fmt);
    rc = ig_v_verror(v, ptr, ptr_len, fmt, ap);
    va_end(ap);

    return rc;
}


/* the same at a given pointer (ptr[1024] readable when longer) */

static int
ig_v_verror(ig_validator_t *v, const unsigned char *ptr, size_t ptr_len,
    const char *fmt, va_list ap)
{
    int       n;
    char     *rec;
    size_t    plen, dlen, trunc;
    char      detail[IG_DETAIL_MAX];

    if (v->nerrors == IG_SCHEMA_MAX_ERRORS) {
        v->truncated = 1;
        return 0;
    }

    n = vsnprintf(detail, sizeof(detail), fmt, ap);

    dlen = (n < 0) ? 0 : ((size_t) n >= sizeof(detail) ? sizeof(detail) - 1
                                                        : (size_t) n);

    plen = ptr_len;
    trunc = 0;

    if (plen > IG_PTR_ERR_MAX) {
        plen = IG_PTR_ERR_MAX;

        while (plen > IG_PTR_ERR_MAX - 3 && (ptr[plen] & 0xc0) == 0x80) {
            plen--;
        }

        trunc = 3;
    }

    rec = v->af.malloc(v->af.ctx, plen + trunc + 1 + dlen + 1);
    if (rec == NULL) {
        ig_v_terminal(v, IG_VALID_NOMEM, NULL);
        return -1;
    }

    memcpy(rec, ptr, plen);
    memcpy(rec + plen, "...", trunc);
    rec[plen + trunc] = '\0';
    memcpy(rec + plen + trunc + 1, detail, dlen);
    rec[plen + trunc + 1 + dlen] = '\0';

    v->errors[v->nerrors].pointer = rec;
    v->errors[v->nerrors].detail = rec + plen + trunc + 1;
    v->err_static[v->nerrors] = 0;
    v->nerrors++;

    return 0;
}


/* replaces the errors with the one that ends the document */

static void
ig_v_terminal(ig_validator_t *v, ig_valid_rc_e rc, const char *detail)
{
    size_t  len;
    char   *rec;

    ig_v_clear_errors(v);

    v->rc = rc;

    rec = NULL;

    if (detail != NULL && rc != IG_VALID_NOMEM) {
        len = strlen(detail);

        rec = v->af.malloc(v->af.ctx, len + 2);
        if (rec != NULL) {
            rec[0] = '\0';
            memcpy(rec + 1, detail, len + 1);
        }
    }

    if (rec != NULL) {
        v->errors[0].pointer = rec;
        v->errors[0].detail = rec + 1;
        v->err_static[0] = 0;

    } else {
        v->errors[0].pointer = "";
        v->err_static[0] = 1;

        switch (rc) {
        case IG_VALID_SYNTAX:
            v->errors[0].detail = "malformed JSON";
            break;
        case IG_VALID_DEPTH:
            v->errors[0].detail = "nesting too deep";
            break;
        default:
            v->errors[0].detail = "out of memory";
        }
    }

    v->nerrors = 1;
}


static int
ig_v_grow(ig_validator_t *v, unsigned char **buf, size_t *size, size_t need,
    const unsigned char *inl)
{
    size_t          n;
    unsigned char  *p;

    n = *size ? *size : 64;

    while (n < need) {
        if (n > SIZE_MAX / 2) {
            n = need;
            break;
        }

        n *= 2;
    }

    if (*buf == NULL || *buf == inl) {
        p = v->af.malloc(v->af.ctx, n);

        if (p != NULL && *buf != NULL) {
            memcpy(p, *buf, *size);
        }

    } else {
        p = v->af.realloc(v->af.ctx, *buf, n);
    }

    if (p == NULL) {
        ig_v_terminal(v, IG_VALID_NOMEM, NULL);
        return -1;
    }

    *buf = p;
    *size = n;

    return 0;
}


/* pointer = pointer[0..base) "/" escaped(s) */

static int
ig_v_ptr_key(ig_validator_t *v, size_t base, const unsigned char *s,
    size_t len)
{
    size_t          i;
    unsigned char  *p;

    if (len > (SIZE_MAX - base - 1) / 2) {
        ig_v_terminal(v, IG_VALID_NOMEM, NULL);
        return -1;
    }

    if (base + 1 + 2 * len > v->ptr_cap
        && ig_v_grow(v, &v->ptr, &v->ptr_cap, base + 1 + 2 * len,
                     v->ptr_inline)
           != 0)
    {
        return -1;
    }

    p = v->ptr + base;
    *p++ = '/';

    /* most names need no escaping: copy up to the first '~' or '/' */

    for (i = 0; i < len; i++) {
        if (s[i] == '~' || s[i] == '/') {
            break;
        }
    }

    memcpy(p, s, i);
    p += i;

    for ( /* void */ ; i < len; i++) {
        if (s[i] == '~') {
            *p++ = '~';
            *p++ = '0';

        } else if (s[i] == '/') {
            *p++ = '~';
            *p++ = '1';

        } else {
            *p++ = s[i];
        }
    }

    v->ptr_len = (size_t) (p - v->ptr);

    return 0;
}


static int
ig_v_ptr_index(ig_validator_t *v, size_t base, size_t index)
{
    size_t          n;
    unsigned char  *p, buf[24];

    n = 0;

    do {
        buf[n++] = (unsigned char) ('0' + index % 10);
        index /= 10;
    } while (index);

    if (base + 1 + n > v->ptr_cap
        && ig_v_grow(v, &v->ptr, &v->ptr_cap, base + 1 + n, v->ptr_inline)
           != 0)
    {
        return -1;
    }

    p = v->ptr + base;
    *p++ = '/';

    while (n) {
        *p++ = buf[--n];
    }

    v->ptr_len = (size_t) (p - v->ptr);

    return 0;
}


/*
 * A value starts: finds its schema (NULL: anything goes) and, when
 * there is one, makes v->ptr its pointer.
 */

static inline int
ig_v_begin(ig_validator_t *v, const ig_node_t **node)
{
    size_t          index;
    ig_frame_t     *f;
    unsigned char  *q;

    if (v->depth == 0) {
        v->ptr_len = 0;
        *node = v->truncated ? NULL : v->schema->root;
        return 0;
    }

    f = &v->frames[v->depth - 1];

    if (!f->is_array) {
        *node = f->child;
        return 0;
    }

    index = f->count++;

    if (f->node == NULL || f->node->items == NULL || v->truncated) {
        f->idx_len = 0;
        *node = NULL;
        return 0;
    }

    *node = f->node->items;

    /*
     * The previous item's "/N" is still in place after the array's own
     * pointer (deeper values write past it): mostly, counting up its
     * last digit is enough.
     */

    if (f->idx_len && index) {
        q = v->ptr + f->ptr_len + f->idx_len - 1;

        if (*q != '9') {
            (*q)++;
            v->ptr_len = f->ptr_len + f->idx_len;
            return 0;
        }
    }

    return ig_v_ptr_first(v, f, index);
}


/* the item pointer written in full: the first item, or a carry */

static int
ig_v_ptr_first(ig_validator_t *v, ig_frame_t *f, size_t index)
{
    if (ig_v_ptr_index(v, f->ptr_len, index) != 0) {
        return -1;
    }

    f->idx_len = v->ptr_len - f->ptr_len;

    return 0;
}


static int
ig_v_check_type(ig_validator_t *v, const ig_node_t *node, unsigned type,
    ig_num_t *num)
{
    if (node->types & type) {
        return 0;
    }

    if (type == IG_T_NUMBER && (node->types & IG_T_INTEGER)
        && (num->small || ig_dec_is_integer(ig_num_dec(num))))
    {
        return 0;
    }

    return ig_v_error(v, "expected %s, got %s", node->type_msg,
                      ig_type_names[__builtin_ctz(type)]);
}


static int
ig_v_scalar_in(const ig_canon_t *c, size_t n, unsigned type,
    const unsigned char *s, size_t len, const ig_dec_t *dec)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (c[i].type != type) {
            continue;
        }

        switch (type) {

        case IG_T_STRING:
            if (ig_canon_eq_str(&c[i], s, len)) {
                return 1;
            }
            break;

        case IG_T_NUMBER:
            if (ig_canon_eq_num(&c[i], dec)) {
                return 1;
            }
            break;

        case IG_T_BOOLEAN:
            if (c[i].p[0] == s[0]) {
                return 1;
            }
            break;

        default:
            return 1;
        }
    }

    return 0;
}


static int
ig_v_check_string(ig_validator_t *v, const ig_node_t *node,
    const unsigned char *s, size_t len)
{
    int          rc;
    size_t       n;
    const char  *what;
    char         ex[IG_EXCERPT_BUF];

    /*
     * Instance strings are valid UTF-8 (the parser rejects anything
     * else), so len / 4 <= characters <= len: count only when that
     * does not settle it.
     */

    if (((node->flags & IG_F_MAXLEN) && len > node->max_len)
        || ((node->flags & IG_F_MINLEN) && len / 4 + (len % 4 != 0)
                                           < node->min_len))
    {
        n = ig_utf8_chars(s, len);

        if ((node->flags & IG_F_MINLEN) && n < node->min_len) {
            if (ig_v_error(v, "length must be >= %zu characters, got %zu",
                           node->min_len, n)
                != 0)
            {
                return -1;
            }
        }

        if ((node->flags & IG_F_MAXLEN) && n > node->max_len) {
            if (ig_v_error(v, "length must be <= %zu characters, got %zu",
                           node->max_len, n)
                != 0)
            {
                return -1;
            }
        }
    }

    if (node->flags & IG_F_PATTERN) {
        if (node->re_jit) {
            rc = pcre2_jit_match(node->re, s, len, 0, 0, v->md,
                                 v->schema->mctx);

        } else {
            rc = pcre2_match(node->re, s, len, 0, 0, v->md,
                             v->schema->mctx);
        }

        if (rc == PCRE2_ERROR_NOMEMORY) {
            ig_v_terminal(v, IG_VALID_NOMEM, NULL);
            return -1;
        }

        if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT
            || rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        {
            if (ig_v_error(v, "could not be matched against pattern %s "
                           "(resource limit)", node->re_msg)
                != 0)
            {
                return -1;
            }

        } else if (rc < 0) {
            if (ig_v_error(v, "does not match pattern %s", node->re_msg)
                != 0)
            {
                return -1;
            }
        }
    }

    if (node->flags & IG_F_FORMAT) {
        what = NULL;

        switch (node->format) {

        case IG_FMT_DATE_TIME:
            if (ig_datetime_check((const char *) s, len, IG_DT_DATE_TIME)) {
                what = "an RFC 3339 date-time";
            }
            break;

        case IG_FMT_DATE:
            if (ig_datetime_check((const char *) s, len, IG_DT_DATE)) {
                what = "an RFC 3339 date";
            }
            break;

        case IG_FMT_TIME:
            if (ig_datetime_check((const char *) s, len, IG_DT_TIME)) {
                what = "an RFC 3339 time";
            }
            break;

        default:
            if (ig_uuid_check(s, len) != 0) {
                what = "a UUID";
            }
        }

        if (what != NULL) {
            ig_excerpt(ex, s, len);

            if (ig_v_error(v, "expected %s, got %s", what, ex) != 0) {
                return -1;
            }
        }
    }

    return 0;
}


static int
ig_v_check_number(ig_validator_t *v, const ig_node_t *node, ig_num_t *num)
{
    int               c, bad;
    int64_t           lim;
    unsigned          k;
    char              lit[IG_EXCERPT + 4];

    for (k = 0; k < 4; k++) {
        if (!(node->flags & (1u << k))) {
            continue;
        }

        if (num->small && node->num[k].small) {
            lim = node->num[k].ival;
            c = (num->ival > lim) - (num->ival < lim);

        } else {
            c = ig_dec_cmp(ig_num_dec(num), &node->num[k].dec);
        }

        switch (k) {
        case 0:
            bad = (c < 0);
            break;
        case 1:
            bad = (c > 0);
            break;
        case 2:
            bad = (c <= 0);
            break;
        default:
            bad = (c >= 0);
        }

        if (bad) {
            ig_excerpt_lit(lit, num->s, num->len);

            if (ig_v_error(v, "must be %s %s, got %s", ig_num_ops[k],
                           node->num[k].text, lit)
                != 0)
            {
                return -1;
            }
        }
    }

    return 0;
}


/* checks a scalar against its schema; s is the string, the number
 * literal, or "t"/"f" for booleans */

static int
ig_v_check_scalar(ig_validator_t *v, const ig_node_t *node, unsigned type,
    const unsigned char *s, size_t len, ig_num_t *num)
{
    if (node->kind == IG_NODE_FALSE) {
        return ig_v_error(v, "%s", node->false_msg);
    }

    if ((node->flags & IG_F_TYPE)
        && ig_v_check_type(v, node, type, num) != 0)
    {
        return -1;
    }

    if (type == IG_T_STRING) {
        if ((node->flags & (IG_F_LENGTH|IG_F_PATTERN|IG_F_FORMAT))
            && ig_v_check_string(v, node, s, len) != 0)
        {
            return -1;
        }

    } else if (type == IG_T_NUMBER) {
        if ((node->flags & IG_F_NUMERIC)
            && ig_v_check_number(v, node, num) != 0)
        {
            return -1;
        }
    }

    if ((node->flags & IG_F_ENUM)
        && !ig_v_scalar_in(node->enums, node->nenums, type, s, len,
                           type == IG_T_NUMBER ? ig_num_dec(num) : NULL))
    {
        if (ig_v_error(v, "must be one of the enumerated values") != 0) {
            return -1;
        }
    }

    if ((node->flags & IG_F_CONST)
        && !ig_v_scalar_in(node->konst, 1, type, s, len,
                           type == IG_T_NUMBER ? ig_num_dec(num) : NULL))
    {
        if (ig_v_error(v, "must equal the const value") != 0) {
            return -1;
        }
    }

    return 0;
}


/* enum/const capture */

static int
ig_v_cap_put(ig_validator_t *v, const void *p, size_t n)
{
    if (v->cap_dead) {
        return 0;
    }

    if (v->cap_len > v->cap_end || n > v->cap_end - v->cap_len) {
        /* longer than every live candidate: none can match */
        v->cap_dead = 1;
        return 0;
    }

    if (v->cap_len + n > v->cap_size
        && ig_v_grow(v, &v->cap, &v->cap_size, v->cap_len + n, NULL) != 0)
    {
        return -1;
    }

    if (n) {
        memcpy(v->cap + v->cap_len, p, n);
        v->cap_len += n;
    }

    return 0;
}


static int
ig_v_cap_scalar(ig_validator_t *v, unsigned type, const unsigned char *s,
    size_t len, const ig_dec_t *dec)
{
    size_t         n;
    unsigned char  head[2 + 2 * IG_CANON_LEN], *p;

    switch (type) {

    case IG_T_NULL:
        return ig_v_cap_put(v, "n", 1);

    case IG_T_BOOLEAN:
        return ig_v_cap_put(v, s, 1);

    case IG_T_STRING:
        head[0] = 'S';
        (void) ig_canon_put_len(head + 1, len);

        if (ig_v_cap_put(v, head, 1 + IG_CANON_LEN) != 0) {
            return -1;
        }

        return ig_v_cap_put(v, s, len);

    default:
        n = dec->n1 + dec->n2;

        if (n == 0) {
            return ig_v_cap_put(v, "N0", 2);
        }

        p = head;
        *p++ = 'N';
        *p++ = dec->neg ? '-' : '+';
        p = ig_canon_put_len(p, (size_t) ((uint64_t) dec->exp
                                          ^ (1ULL << 63)));
        (void) ig_canon_put_len(p, n);

        if (ig_v_cap_put(v, head, sizeof(head)) != 0
            || ig_v_cap_put(v, dec->d1, dec->n1) != 0)
        {
            return -1;
        }

        return ig_v_cap_put(v, dec->d2, dec->n2);
    }
}


/*
 * Captures nest and share one buffer: an inner value's canonical form
 * is a part of the outer one.  cap_end is the furthest any live capture
 * may reach; once a write would pass it, every live capture is too long
 * to match ("dead").  A capture that starts while all others are dead
 * begins a new epoch: the buffer restarts and frames from older epochs
 * know their data is gone.
 */

static void
ig_v_cap_begin(ig_validator_t *v, ig_frame_t *f, size_t limit)
{
    if (v->cap_active == 0 || v->cap_dead) {
        v->cap_epoch++;
        v->cap_len = 0;
        v->nsegs = 0;
        v->cap_dead = 0;
        v->cap_end = limit;
        f->cap_first = 1;
        f->cap_prev = 0;

    } else {
        f->cap_first = 0;
        f->cap_prev = v->cap_end;

        if (v->cap_len + limit > v->cap_end) {
            v->cap_end = v->cap_len + limit;
        }
    }

    f->capture = 1;
    f->cap_start = v->cap_len;
    f->cap_epoch = v->cap_epoch;
    v->cap_active++;
}


static int
ig_v_cap_match(ig_validator_t *v, ig_frame_t *f, const ig_canon_t *c,
    size_t n)
{
    size_t               i, len;
    const unsigned char  *p;

    if (f->cap_epoch != v->cap_epoch || v->cap_dead) {
        return 0;
    }

    p = v->cap + f->cap_start;
    len = v->cap_len - f->cap_start;

    for (i = 0; i < n; i++) {
        if (c[i].len == len && memcmp(c[i].p, p, len) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
ig_v_cap_end(ig_validator_t *v, ig_frame_t *f)
{
    v->cap_active--;

    if (v->cap_active == 0) {
        v->cap_len = 0;
        v->nsegs = 0;
        v->cap_dead = 0;
        v->cap_end = 0;
        return;
    }

    if (f->cap_epoch != v->cap_epoch) {
        return;
    }

    if (f->cap_first) {
        /* the enclosing captures belong to an older, dead epoch */
        v->cap_dead = 1;
        return;
    }

    v->cap_end = f->cap_prev;
}


static size_t
ig_canon_get_len(const unsigned char *p)
{
    int       i;
    uint64_t  u;

    u = 0;

    for (i = 0; i < IG_CANON_LEN; i++) {
        u = (u << 8) | p[i];
    }

    return (size_t) u;
}


/* member segments: name length (8 bytes), name, value */

static int
ig_v_seg_less(ig_validator_t *v, const ig_seg_t *a, const ig_seg_t *b)
{
    int                   c;
    size_t                klen;
    const unsigned char  *pa, *pb;

    pa = v->cap + a->off;
    pb = v->cap + b->off;

    c = memcmp(pa, pb, IG_CANON_LEN);
    if (c != 0) {
        return c < 0;
    }

    klen = ig_canon_get_len(pa);

    return klen && memcmp(pa + IG_CANON_LEN, pb + IG_CANON_LEN, klen) < 0;
}


static void
ig_v_seg_sift(ig_validator_t *v, ig_seg_t *s, size_t root, size_t n)
{
    size_t    child;
    ig_seg_t  t;

    for ( ;; ) {
        child = 2 * root + 1;

        if (child >= n) {
            return;
        }

        if (child + 1 < n && ig_v_seg_less(v, &s[child], &s[child + 1])) {
            child++;
        }

        if (!ig_v_seg_less(v, &s[root], &s[child])) {
            return;
        }

        t = s[root];
        s[root] = s[child];
        s[child] = t;
        root = child;
    }
}


/* an object inside a capture ends: put its members in canonical order */

static int
ig_v_cap_sort(ig_validator_t *v, ig_frame_t *f)
{
    size_t          n, i, body, w;
    ig_seg_t       *s, t;
    unsigned char  *dst;

    n = v->nsegs - f->seg_base;

    if (n == 0) {
        return 0;
    }

    s = v->segs + f->seg_base;
    body = v->cap_len - f->body;

    v->nsegs = f->seg_base;

    s[n - 1].len = v->cap_len - s[n - 1].off;

    if (n == 1) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if (ig_v_seg_less(v, &s[i], &s[i - 1])) {
            break;
        }
    }

    if (i == n) {
        return 0;
    }

    /* heapsort: bounded time whatever the member count */

    for (i = n / 2; i > 0; i--) {
        ig_v_seg_sift(v, s, i - 1, n);
    }

    for (i = n - 1; i > 0; i--) {
        t = s[0];
        s[0] = s[i];
        s[i] = t;
        ig_v_seg_sift(v, s, 0, i);
    }

    if (body > v->scratch_size
        && ig_v_grow(v, &v->scratch, &v->scratch_size, body, NULL) != 0)
    {
        return -1;
    }

    memcpy(v->scratch, v->cap + f->body, body);

    dst = v->cap + f->body;
    w = 0;

    for (i = 0; i < n; i++) {
        memcpy(dst + w, v->scratch + (s[i].off - f->body), s[i].len);
        w += s[i].len;
    }

    return 0;
}


static int
ig_v_scalar(ig_validator_t *v, unsigned type, const unsigned char *s,
    size_t len)
{
    ig_num_t          num;
    const ig_node_t  *node;

    if (ig_v_begin(v, &node) != 0) {
        return 0;
    }

    if (type == IG_T_NUMBER) {
        num.s = s;
        num.len = len;
        num.parsed = 0;
        num.small = ig_lit_small(s, len, &num.ival);
    }

    if (node != NULL
        && ig_v_check_scalar(v, node, type, s, len, &num) != 0)
    {
        return 0;
    }

    if (v->cap_active
        && ig_v_cap_scalar(v, type, s, len,
                           type == IG_T_NUMBER ? ig_num_dec(&num) : NULL)
           != 0)
    {
        return 0;
    }

    if (v->depth == 1 && v->on_member != NULL && !v->frames[0].is_array) {
        if (type == IG_T_BOOLEAN) {
            if (s[0] == 't') {
                s = (const unsigned char *) "true";
                len = 4;

            } else {
                s = (const unsigned char *) "false";
                len = 5;
            }

        } else if (type == IG_T_NULL) {
            s = (const unsigned char *) "null";
            len = 4;
        }

        v->on_member(v->data, v->key, v->key_len, s, len);
    }

    return 1;
}


static int
ig_v_null(void *ctx)
{
    return ig_v_scalar(ctx, IG_T_NULL, (const unsigned char *) "n", 1);
}


static int
ig_v_boolean(void *ctx, int b)
{
    return ig_v_scalar(ctx, IG_T_BOOLEAN,
                       (const unsigned char *) (b ? "t" : "f"), 1);
}


static int
ig_v_number(void *ctx, const unsigned char *s, size_t len)
{
    return ig_v_scalar(ctx, IG_T_NUMBER, s, len);
}


static int
ig_v_string(void *ctx, const unsigned char *s, size_t len)
{
    return ig_v_scalar(ctx, IG_T_STRING, s, len);
}


static int
ig_v_start(ig_validator_t *v, int is_array)
{
    unsigned          type;
    ig_frame_t       *f;
    const ig_node_t  *node;
    char              detail[64];

    if (ig_v_begin(v, &node) != 0) {
        return 0;
    }

    if (v->depth >= v->max_depth) {
        snprintf(detail, sizeof(detail), "nesting deeper than %u levels",
                 v->max_depth);
        ig_v_terminal(v, IG_VALID_DEPTH, detail);
        return 0;
    }

    type = is_array ? IG_T_ARRAY : IG_T_OBJECT;

    f = &v->frames[v->depth];
    f->node = NULL;
    f->child = NULL;
    f->ptr_len = v->ptr_len;
    f->count = 0;
    f->idx_len = 0;
    f->is_array = (unsigned char) is_array;
    f->capture = 0;
    f->in_cap = 0;
    f->name_base = v->nnames;
    f->name_cur = 0;
    f->hashed = 0;

    if (node != NULL) {
        if (node->kind == IG_NODE_FALSE) {
            if (ig_v_error(v, "%s", node->false_msg) != 0) {
                return 0;
            }

            node = NULL;

        } else {
            if ((node->flags & IG_F_TYPE)
                && ig_v_check_type(v, node, type, NULL) != 0)
            {
                return 0;
            }

            f->node = node;

            if (!is_array && node->nrequired) {
                f->seen = v->bits + (size_t) v->depth * v->req_words;
                memset(f->seen, 0,
                       ((node->nrequired + 63) / 64) * sizeof(uint64_t));
            }

            if (node->cap_types & type) {
                ig_v_cap_begin(v, f, node->cap_limit);
            }
        }
    }

    v->depth++;

    if (v->cap_active) {
        if (ig_v_cap_put(v, is_array ? "[" : "{", 1) != 0) {
            return 0;
        }

        if (!is_array && !v->cap_dead) {
            f->in_cap = 1;
            f->seg_base = v->nsegs;
            f->seg_epoch = v->cap_epoch;
            f->body = v->cap_len;
        }
    }

    return 1;
}


static int
ig_v_start_map(void *ctx)
{
    return ig_v_start(ctx, 0);
}


static int
ig_v_start_array(void *ctx)
{
    return ig_v_start(ctx, 1);
}


/* a short copy without a call: overlapping moves inside the ranges */

static inline void
ig_v_copy(unsigned char *dst, const unsigned char *src, size_t n)
{
    uint32_t  a4, b4;
    uint64_t  a8, b8;

    if (n >= 8 && n <= 16) {
        memcpy(&a8, src, 8);
        memcpy(&b8, src + n - 8, 8);
        memcpy(dst, &a8, 8);
        memcpy(dst + n - 8, &b8, 8);

    } else if (n >= 4 && n < 8) {
        memcpy(&a4, src, 4);
        memcpy(&b4, src + n - 4, 4);
        memcpy(dst, &a4, 4);
        memcpy(dst + n - 4, &b4, 4);

    } else {
        memcpy(dst, src, n);
    }
}


/* equality of short names without a call: overlapping loads, all
 * inside [a, a + len) and [b, b + len) */

static inline int
ig_v_name_eq(const unsigned char *a, const unsigned char *b, size_t len)
{
    uint32_t  a4, b4, a4e, b4e;
    uint64_t  a8, b8, a8e, b8e;

    if (len >= 8) {
        if (len > 16) {
            return memcmp(a, b, len) == 0;
        }

        memcpy(&a8, a, 8);
        memcpy(&b8, b, 8);
        memcpy(&a8e, a + len - 8, 8);
        memcpy(&b8e, b + len - 8, 8);

        return ((a8 ^ b8) | (a8e ^ b8e)) == 0;
    }

    if (len >= 4) {
        memcpy(&a4, a, 4);
        memcpy(&b4, b, 4);
        memcpy(&a4e, a + len - 4, 4);
        memcpy(&b4e, b + len - 4, 4);

        return ((a4 ^ b4) | (a4e ^ b4e)) == 0;
    }

    while (len) {
        len--;

        if (a[len] != b[len]) {
            return 0;
        }
    }

    return 1;
}


/* the member table entry for a name, or NULL */

static const ig_member_t *
ig_v_member(const ig_node_t *node, const unsigned char *s, size_t len)
{
    int                 c;
    size_t              lo, hi, mid;
    const ig_member_t  *m;

    if (len < IG_LEN_INDEX) {
        lo = node->len_idx[len];
        hi = node->len_idx[len + 1];

        if (hi - lo <= 8) {
            for (m = node->members + lo; m < node->members + hi; m++) {
                if (ig_v_name_eq(s, m->name, len)) {
                    return m;
                }
            }

            return NULL;
        }

    } else {
        lo = node->len_idx[IG_LEN_INDEX];
        hi = node->nmembers;
    }

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        m = &node->members[mid];

        c = ig_name_cmp(s, len, m->name, m->len);

        if (c == 0) {
            return m;
        }

        if (c < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/* member names: duplicates at any depth */

#define IG_ROTL(x, b)  (((x) << (b)) | ((x) >> (64 - (b))))

#define IG_SIPROUND                                                          \
    v0 += v1; v1 = IG_ROTL(v1, 13); v1 ^= v0; v0 = IG_ROTL(v0, 32);          \
    v2 += v3; v3 = IG_ROTL(v3, 16); v3 ^= v2;                                \
    v0 += v3; v3 = IG_ROTL(v3, 21); v3 ^= v0;                                \
    v2 += v1; v1 = IG_ROTL(v1, 17); v1 ^= v2; v2 = IG_ROTL(v2, 32)


/* SipHash-1-3 (as Python and Rust use for their hash tables) */

static uint64_t
ig_siphash13(const uint64_t *k, const unsigned char *s, size_t len)
{
    size_t    i, end;
    uint64_t  v0, v1, v2, v3, m, b;

    v0 = k[0] ^ 0x736f6d6570736575ULL;
    v1 = k[1] ^ 0x646f72616e646f6dULL;
    v2 = k[0] ^ 0x6c7967656e657261ULL;
    v3 = k[1] ^ 0x7465646279746573ULL;

    end = len & ~(size_t) 7;

    for (i = 0; i < end; i += 8) {
        memcpy(&m, s + i, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        m = __builtin_bswap64(m);
#endif
        v3 ^= m;
        IG_SIPROUND;
        v0 ^= m;
    }

    b = (uint64_t) len << 56;

    switch (len & 7) {
    case 7:
        b |= (uint64_t) s[i + 6] << 48;
        /* fall through */
    case 6:
        b |= (uint64_t) s[i + 5] << 40;
        /* fall through */
    case 5:
        b |= (uint64_t) s[i + 4] << 32;
        /* fall through */
    case 4:
        b |= (uint64_t) s[i + 3] << 24;
        /* fall through */
    case 3:
        b |= (uint64_t) s[i + 2] << 16;
        /* fall through */
    case 2:
        b |= (uint64_t) s[i + 1] << 8;
        /* fall through */
    case 1:
        b |= (uint64_t) s[i];
        break;
    default:
        break;
    }

    v3 ^= b;
    IG_SIPROUND;
    v0 ^= b;

    v2 ^= 0xff;
    IG_SIPROUND;
    IG_SIPROUND;
    IG_SIPROUND;

    return v0 ^ v1 ^ v2 ^ v3;
}


static inline uint32_t
ig_name_hash(const ig_validator_t *v, const unsigned char *s, size_t len)
{
    uint64_t  h;

    h = ig_siphash13(v->schema->sipkey, s, len);

    return (uint32_t) (h ^ (h >> 32));
}


/*
 * A member name of the innermost object f: records it, or reports a
 * duplicate.  Returns 0, or -1 once the document cannot go on.  The
 * first IG_NAMES_LIST names of an object are compared one by one (most
 * objects end there); the rest go through the hash table.
 */

static int
ig_v_name(ig_validator_t *v, ig_frame_t *f, const unsigned char *s,
    size_t len)
{
    int             rc;
    size_t          i;
    uint32_t        hash;
    ig_name_t      *e;
    unsigned char  *p;

    hash = 0;

    if (f->hashed || v->nnames - f->name_base >= IG_NAMES_LIST) {
        rc = ig_v_name_find(v, f, s, len, &hash);

        if (rc != 0) {
            return (rc > 0) ? ig_v_dup_error(v, s, len) : -1;
        }

    } else {
        for (e = &v->nents[f->name_base]; e < &v->nents[v->nnames]; e++) {
            if (e->len == len && ig_v_name_eq(v->names + e->off, s, len)) {
                f->name_cur = (size_t) (e - v->nents);
                return ig_v_dup_error(v, s, len);
            }
        }
    }

    /* a new name */

    if ((len > v->names_size - v->names_len
         || (v->nnames + 1) * sizeof(ig_name_t) > v->nents_size)
        && ig_v_names_grow(v, len) != 0)
    {
        return -1;
    }

    e = &v->nents[v->nnames];
    e->off = (uint32_t) v->names_len;
    e->len = (uint32_t) len;
    e->hash = hash;
    e->next = 0;

    p = v->names + v->names_len;

    if (len >= 4) {
        ig_v_copy(p, s, len);

    } else {
        for (i = 0; i < len; i++) {
            p[i] = s[i];
        }
    }

    v->names_len += len;
    f->name_cur = v->nnames++;

    if (f->hashed) {
        v->nhashed++;
        return ig_v_names_insert(v, v->nnames - 1);
    }

    return 0;
}


/*
 * Looks a name up in the table (putting the object's names there first
 * when it has just reached IG_NAMES_LIST): 1 when it is there, with
 * f->name_cur set, 0 when not, -1 when memory runs out.
 */

static int
ig_v_name_find(ig_validator_t *v, ig_frame_t *f, const unsigned char *s,
    size_t len, uint32_t *hash)
{
    size_t      i;
    uint32_t    h, j;
    ig_name_t  *e;

    if (!f->hashed) {
        for (i = f->name_base; i < v->nnames; i++) {
            e = &v->nents[i];
            e->hash = ig_name_hash(v, v->names + e->off, e->len);
        }

        f->hashed = 1;
        v->nhashed += v->nnames - f->name_base;

        if (ig_v_names_insert(v, f->name_base) != 0) {
            return -1;
        }
    }

    h = ig_name_hash(v, s, len);
    *hash = h;

    /* newest first: an entry below name_base is an outer object's */

    for (j = v->buckets[h & (v->nbuckets - 1)]; j > f->name_base;
         j = e->next)
    {
        e = &v->nents[j - 1];

        if (e->hash == h && e->len == len
            && memcmp(v->names + e->off, s, len) == 0)
        {
            f->name_cur = j - 1;
            return 1;
        }
    }

    return 0;
}


/* room for one more name of len bytes */

static int
ig_v_names_grow(ig_validator_t *v, size_t len)
{
    unsigned char  *p;

    /* 4 GiB of names of open objects, or 4G names: past any body limit */

    if (v->nnames >= IG_NAMES_MAX || len > IG_NAMES_MAX - v->names_len) {
        ig_v_terminal(v, IG_VALID_NOMEM, NULL);
        return -1;
    }

    if (v->names_len + len > v->names_size) {
        if (ig_v_grow(v, &v->names, &v->names_size, v->names_len + len,
                      v->names_inline)
            != 0)
        {
            return -1;
        }

        /* offsets stay 32-bit: the fast path never passes the limit */

        if (v->names_size > IG_NAMES_MAX) {
            v->names_size = IG_NAMES_MAX;
        }
    }

    if ((v->nnames + 1) * sizeof(ig_name_t) > v->nents_size) {
        p = (unsigned char *) v->nents;

        if (ig_v_grow(v, &p, &v->nents_size,
                      (v->nnames + 1) * sizeof(ig_name_t),
                      (unsigned char *) v->nents_inline)
            != 0)
        {
            return -1;
        }

        v->nents = (ig_name_t *) (void *) p;
    }

    return 0;
}


/*
 * Puts the hashed names from index "from" on into the table, growing it
 * first (and then putting in every hashed name) when the load would pass
 * one name a bucket.  Names go in in stack order, so each chain runs
 * from the newest name to the oldest and an object that ends finds its
 * names at the heads of their chains.
 */

static int
ig_v_names_insert(ig_validator_t *v, size_t from)
{
    size_t          n, d, i, end;
    uint32_t        b;
    ig_name_t      *e;
    ig_frame_t     *f;
    unsigned char  *p;

    if (v->nhashed > v->nbuckets) {
        n = v->nbuckets ? v->nbuckets : 64;

        while (n < v->nhashed) {
            n *= 2;
        }

        if (n > SIZE_MAX / sizeof(uint32_t)) {
            ig_v_terminal(v, IG_VALID_NOMEM, NULL);
            return -1;
        }

        p = v->af.malloc(v->af.ctx, n * sizeof(uint32_t));
        if (p == NULL) {
            ig_v_terminal(v, IG_VALID_NOMEM, NULL);
            return -1;
        }

        if (v->buckets != NULL) {
            v->af.free(v->af.ctx, v->buckets);
        }

        v->buckets = (uint32_t *) (void *) p;
        v->nbuckets = n;

        memset(v->buckets, 0, n * sizeof(uint32_t));

        /* the open objects' names are contiguous, outermost first */

        for (d = 0; d < v->depth; d++) {
            f = &v->frames[d];

            if (f->is_array || !f->hashed) {
                continue;
            }

            end = (d + 1 < v->depth) ? v->frames[d + 1].name_base
                                     : v->nnames;

            for (i = f->name_base; i < end; i++) {
                e = &v->nents[i];
                b = e->hash & (uint32_t) (n - 1);
                e->next = v->buckets[b];
                v->buckets[b] = (uint32_t) (i + 1);
            }
        }

        return 0;
    }

    for (i = from; i < v->nnames; i++) {
        e = &v->nents[i];
        b = e->hash & (uint32_t) (v->nbuckets - 1);
        e->next = v->buckets[b];
        v->buckets[b] = (uint32_t) (i + 1);
    }

    return 0;
}


/* an object ends: its names go */

static void
ig_v_names_pop(ig_validator_t *v, ig_frame_t *f)
{
    size_t      i;
    ig_name_t  *e;

    if (v->nnames == f->name_base) {
        return;
    }

    if (f->hashed) {
        for (i = v->nnames; i > f->name_base; i--) {
            e = &v->nents[i - 1];
            v->buckets[e->hash & (uint32_t) (v->nbuckets - 1)] = e->next;
        }

        v->nhashed -= v->nnames - f->name_base;
    }

    v->names_len = v->nents[f->name_base].off;
    v->nnames = f->name_base;
}


/*
 * Reports a repeated name s of the innermost object.  Its pointer is
 * built from the frames (the index of each open array's item, the
 * current name of each open object), since v->ptr is kept only where a
 * schema applies; past 1024 bytes it is cut as ig_v_verror() cuts.
 */

static int
ig_v_dup_error(ig_validator_t *v, const unsigned char *s, size_t len)
{
    size_t          d, plen, index, n;
    ig_name_t      *e;
    ig_frame_t     *f;
    unsigned char   num[24];
    char            ex[IG_EXCERPT_BUF];

    if (v->nerrors == IG_SCHEMA_MAX_ERRORS) {
        v->truncated = 1;
        return 0;
    }

    if (v->dptr == NULL) {
        v->dptr_size = IG_PTR_ERR_MAX + 32;
        v->dptr = v->af.malloc(v->af.ctx, v->dptr_size);

        if (v->dptr == NULL) {
            ig_v_terminal(v, IG_VALID_NOMEM, NULL);
            return -1;
        }
    }

    plen = 0;

    for (d = 0; d < v->depth && plen <= IG_PTR_ERR_MAX; d++) {
        f = &v->frames[d];

        if (d + 1 == v->depth) {
            ig_v_dup_ptr_put(v, &plen, s, len);

        } else if (f->is_array) {
            index = f->count - 1;
            n = sizeof(num);

            do {
                num[--n] = (unsigned char) ('0' + index % 10);
                index /= 10;
            } while (index);

            ig_v_dup_ptr_put(v, &plen, num + n, sizeof(num) - n);

        } else {
            e = &v->nents[f->name_cur];
            ig_v_dup_ptr_put(v, &plen, v->names + e->off, e->len);
        }
    }

    ig_excerpt(ex, s, len);

    return ig_v_error_at(v, v->dptr, plen, "duplicate member name %s", ex);
}


/* appends "/" and the RFC 6901 escaped segment, up to the buffer end */

static void
ig_v_dup_ptr_put(ig_validator_t *v, size_t *plen, const unsigned char *s,
    size_t len)
{
    size_t          i;
    unsigned char  *p, *end;

    p = v->dptr + *plen;
    end = v->dptr + v->dptr_size;

    if (p < end) {
        *p++ = '/';
    }

    for (i = 0; i < len && end - p >= 2; i++) {
        if (s[i] == '~' || s[i] == '/') {
            *p++ = '~';
            *p++ = (s[i] == '~') ? '0' : '1';

        } else {
            *p++ = s[i];
        }
    }

    *plen = (size_t) (p - v->dptr);
}


static int
ig_v_map_key(void *ctx, const unsigned char *s, size_t len)
{
    ig_validator_t  *v = ctx;

    int                 child_ptr;
    ig_seg_t           *seg;
    ig_frame_t         *f;
    const ig_node_t    *node, *child;
    const ig_member_t  *m;
    unsigned char      *p, head[IG_CANON_LEN];

    f = &v->frames[v->depth - 1];
    f->count++;
    node = f->node;
    child = NULL;
    child_ptr = 0;

    if (ig_v_name(v, f, s, len) != 0) {
        return 0;
    }

    if (node != NULL && (node->flags & IG_F_OBJECT) && !v->truncated) {
        child = node->additional;
        m = node->nmembers ? ig_v_member(node, s, len) : NULL;

        if (m != NULL) {
            if (m->in_props) {
                child = m->schema;
            }

            if (m->req >= 0) {
                f->seen[m->req / 64] |= (uint64_t) 1 << (m->req % 64);
            }

            if (child != NULL) {
                if (f->ptr_len + m->seg_len > v->ptr_cap
                    && ig_v_grow(v, &v->ptr, &v->ptr_cap,
                                 f->ptr_len + m->seg_len, v->ptr_inline)
                       != 0)
                {
                    return 0;
                }

                ig_v_copy(v->ptr + f->ptr_len, m->seg, m->seg_len);
                v->ptr_len = f->ptr_len + m->seg_len;
                child_ptr = 1;
            }
        }

        if (child != NULL && !child_ptr
            && ig_v_ptr_key(v, f->ptr_len, s, len) != 0)
        {
            return 0;
        }
    }

    f->child = child;

    if (f->in_cap && f->seg_epoch == v->cap_epoch && !v->cap_dead) {
        if (v->nsegs > f->seg_base) {
            seg = &v->segs[v->nsegs - 1];
            seg->len = v->cap_len - seg->off;
        }

        if ((v->nsegs + 1) * sizeof(ig_seg_t) > v->segs_size) {
            p = (unsigned char *) v->segs;

            if (ig_v_grow(v, &p, &v->segs_size,
                          (v->nsegs + 1) * sizeof(ig_seg_t), NULL)
                != 0)
            {
                return 0;
            }

            v->segs = (ig_seg_t *) (void *) p;
        }

        v->segs[v->nsegs].off = v->cap_len;
        v->segs[v->nsegs].len = 0;
        v->nsegs++;

        (void) ig_canon_put_len(head, len);

        if (ig_v_cap_put(v, head, IG_CANON_LEN) != 0
            || ig_v_cap_put(v, s, len) != 0)
        {
            return 0;
        }
    }

    if (v->depth == 1 && v->on_member != NULL) {
        if (len > v->key_cap
            && ig_v_grow(v, &v->key, &v->key_cap, len, v->key_inline) != 0)
        {
            return 0;
        }

        if (len) {
            memcpy(v->key, s, len);
        }

        v->key_len = len;
    }

    return 1;
}


static int
ig_v_end(void *ctx)
{
    ig_validator_t  *v = ctx;

    size_t            w, nreq, i;
    uint64_t          bits;
    ig_frame_t       *f;
    const ig_node_t  *node;
    const ig_member_t  *m;
    char              ex[IG_EXCERPT_BUF];

    f = &v->frames[v->depth - 1];

    if (v->cap_active) {
        if (f->in_cap && f->seg_epoch == v->cap_epoch) {
            if (v->cap_dead) {
                v->nsegs = f->seg_base;

            } else if (ig_v_cap_sort(v, f) != 0) {
                return 0;
            }
        }

        if (ig_v_cap_put(v, f->is_array ? "]" : "}", 1) != 0) {
            return 0;
        }
    }

    node = f->node;

    if (node != NULL) {
        v->ptr_len = f->ptr_len;

        if (f->is_array) {
            if ((node->flags & IG_F_MINITEMS) && f->count < node->min_items)
            {
                if (ig_v_error(v, "must have at least %zu items, got %zu",
                               node->min_items, f->count)
                    != 0)
                {
                    return 0;
                }
            }

            if ((node->flags & IG_F_MAXITEMS) && f->count > node->max_items)
            {
                if (ig_v_error(v, "must have at most %zu items, got %zu",
                               node->max_items, f->count)
                    != 0)
                {
                    return 0;
                }
            }

        } else if (node->nrequired) {
            nreq = node->nrequired;

            for (w = 0; w * 64 < nreq; w++) {
                bits = f->seen[w];

                if (nreq - w * 64 < 64) {
                    bits |= ~(((uint64_t) 1 << (nreq - w * 64)) - 1);
                }

                if (bits == ~(uint64_t) 0) {
                    continue;
                }

                for (i = w * 64; i < nreq && i < w * 64 + 64; i++) {
                    if (bits & ((uint64_t) 1 << (i % 64))) {
                        continue;
                    }

                    m = &node->members[node->required[i]];
                    ig_excerpt(ex, m->name, m->len);

                    if (ig_v_error(v, "required property %s is missing", ex)
                        != 0)
                    {
                        return 0;
                    }
                }
            }
        }

        if (node->flags & IG_F_ENUM) {
            if (!f->capture || !ig_v_cap_match(v, f, node->enums,
                                               node->nenums))
            {
                if (ig_v_error(v, "must be one of the enumerated values")
                    != 0)
                {
                    return 0;
                }
            }
        }

        if (node->flags & IG_F_CONST) {
            if (!f->capture || !ig_v_cap_match(v, f, node->konst, 1)) {
                if (ig_v_error(v, "must equal the const value") != 0) {
                    return 0;
                }
            }
        }
    }

    if (f->capture) {
        ig_v_cap_end(v, f);
    }

    if (!f->is_array) {
        ig_v_names_pop(v, f);
    }

    v->depth--;

    return 1;
}


ig_valid_rc_e
ig_validator_feed(ig_validator_t *v, const unsigned char *buf, size_t len)
{
    ig_jsonlex_rc_e  rc;

    if (v->rc != IG_VALID_OK || v->finished) {
        return v->rc;
    }

    rc = ig_jsonlex_feed(v->lx, buf, len);

    if (rc != IG_JSONLEX_OK) {
        return ig_v_parse_failed(v, rc);
    }

    return IG_VALID_OK;
}


ig_valid_rc_e
ig_validator_finish(ig_validator_t *v)
{
    ig_jsonlex_rc_e  rc;

    if (v->rc != IG_VALID_OK) {
        return v->rc;
    }

    if (!v->finished) {
        v->finished = 1;

        rc = ig_jsonlex_finish(v->lx);

        if (rc != IG_JSONLEX_OK) {
            return ig_v_parse_failed(v, rc);
        }
    }

    return v->nerrors ? IG_VALID_INVALID : IG_VALID_OK;
}


static ig_valid_rc_e
ig_v_parse_failed(ig_validator_t *v, ig_jsonlex_rc_e rc)
{
    size_t       pos;
    const char  *reason;
    char         detail[256];

    if (v->rc != IG_VALID_OK) {
        /* a callback stopped the parse: depth or memory */
        return v->rc;
    }

    if (rc != IG_JSONLEX_ERROR) {
        /* the scratch buffer could not grow */
        ig_v_terminal(v, IG_VALID_NOMEM, NULL);
        return v->rc;
    }

    reason = ig_jsonlex_error(v->lx, &pos);

    snprintf(detail, sizeof(detail), "malformed JSON at byte %zu: %s", pos,
             reason);

    ig_v_terminal(v, IG_VALID_SYNTAX, detail);

    return v->rc;
}
