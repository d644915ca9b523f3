
/*
 * Copyright (C) infergate authors
 */

/*
 * The JSON Schema compiler and validator's private header: the limits,
 * the compiled node tree, the temporary schema document, the exact
 * decimals and canonical forms, and the helpers the units share:
 *
 *   ig_schema_dom.c       the compile-time arena, schema text -> document
 *   ig_schema_dec.c       exact decimals, canonical forms, text helpers
 *   ig_schema_compile.c   document -> node tree, regex rewriting
 *   ig_schema_validate.c  the streaming validator
 *
 * Only these units include it; everyone else uses ig_schema.h.
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

#ifndef _IG_SCHEMA_INT_H_INCLUDED_
#define _IG_SCHEMA_INT_H_INCLUDED_

#define PCRE2_CODE_UNIT_WIDTH  8

#include <stddef.h>
#include <stdint.h>

#include <pcre2.h>
#include <yajl/yajl_parse.h>

#include "ig_schema.h"
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
    const ig_watch_t     *watch;
    size_t                nwatch;
    ig_value_pt           on_value;

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


extern const char  *const ig_type_names[7];


void *ig_arena_alloc(ig_arena_t *a, size_t n);
void *ig_arena_dup(ig_arena_t *a, const void *p, size_t n);
void ig_arena_free(ig_arena_t *a);
void ig_dec_parse(ig_dec_t *d, const unsigned char *s, size_t len);
int ig_dec_is_integer(const ig_dec_t *d);
int ig_dec_cmp(const ig_dec_t *a, const ig_dec_t *b);
size_t ig_dec_to_size(const ig_dec_t *d);
int ig_dec_small(const ig_dec_t *d, int64_t *out);
size_t ig_canon_num_len(const ig_dec_t *d);
unsigned char *ig_canon_num_write(unsigned char *p, const ig_dec_t *d);
unsigned char *ig_canon_put_len(unsigned char *p, size_t n);
int ig_canon_eq_num(const ig_canon_t *c, const ig_dec_t *d);
int ig_canon_eq_str(const ig_canon_t *c, const unsigned char *s,
    size_t len);
size_t ig_excerpt(char *buf, const unsigned char *s, size_t len);
size_t ig_excerpt_lit(char *buf, const unsigned char *s, size_t len);
size_t ig_utf8_chars(const unsigned char *s, size_t len);
int ig_uuid_check(const unsigned char *s, size_t len);
int ig_name_cmp(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen);
ig_jv_t *ig_dom_parse(ig_cc_t *cc, ig_arena_t *arena,
    const unsigned char *text, size_t len);
void ig_cc_fail(ig_cc_t *cc, const char *fmt, ...);
int ig_jmember_cmp(const void *a, const void *b);
int ig_member_cmp(const void *a, const void *b);


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


#endif /* _IG_SCHEMA_INT_H_INCLUDED_ */
