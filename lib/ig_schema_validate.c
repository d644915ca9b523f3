/*
 * Copyright (C) infergate authors
 *
 * The streaming validator, run on ig_jsonlex callbacks.
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>

#include "ig_datetime.h"
#include "ig_json.h"
#include "ig_schema_int.h"


static size_t ig_canon_get_len(const unsigned char *p);
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
static void ig_v_watched(ig_validator_t *v, const unsigned char *s,
    size_t len);
static int ig_v_at(ig_validator_t *v, const unsigned char *p, size_t len);
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


static const char  *ig_num_ops[4] = { ">=", "<=", ">", "<" };


/* validator */

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

    funcs = (af != NULL) ? *af : ig_jsonlex_malloc_funcs;

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

    if (v->depth == 1 && v->on_member != NULL && !v->frames[0].is_array) {
        v->on_member(v->data, v->key, v->key_len, s, len);
    }

    if (v->nwatch && v->depth > 0) {
        ig_v_watched(v, s, len);
    }

    return 1;
}


void
ig_validator_watch(ig_validator_t *v, const ig_watch_t *watch, size_t n,
    ig_value_pt on_value)
{
    v->watch = watch;
    v->nwatch = on_value ? n : 0;
    v->on_value = on_value;
}


/* reports the scalar s to each watched pointer that names where it is */

static void
ig_v_watched(ig_validator_t *v, const unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < v->nwatch; i++) {
        if (ig_v_at(v, v->watch[i].pointer, v->watch[i].len)) {
            v->on_value(v->data, i, s, len);
        }
    }
}


/*
 * Whether JSON pointer p (RFC 6901) is the place of the value that has
 * just begun: one segment per open container, the current member name
 * of an object (~0 and ~1 unescaped), the current index of an array
 * (decimal, no leading zero).
 */

static int
ig_v_at(ig_validator_t *v, const unsigned char *p, size_t len)
{
    size_t                d, n, index, k;
    ig_name_t            *e;
    ig_frame_t           *f;
    const unsigned char  *end, *seg, *name;
    unsigned char         c, num[24];

    end = p + len;

    for (d = 0; d < v->depth; d++) {
        if (p == end || *p != '/') {
            return 0;
        }

        seg = ++p;

        while (p < end && *p != '/') {
            p++;
        }

        f = &v->frames[d];

        if (f->is_array) {
            if (f->count == 0) {
                return 0;
            }

            index = f->count - 1;
            n = sizeof(num);

            do {
                num[--n] = (unsigned char) ('0' + index % 10);
                index /= 10;
            } while (index);

            if ((size_t) (p - seg) != sizeof(num) - n
                || memcmp(seg, num + n, sizeof(num) - n) != 0)
            {
                return 0;
            }

            continue;
        }

        if (f->name_cur >= v->nnames) {
            return 0;
        }

        e = &v->nents[f->name_cur];
        name = v->names + e->off;
        k = 0;

        while (seg < p) {
            c = *seg++;

            if (c == '~') {
                if (seg == p || (*seg != '0' && *seg != '1')) {
                    return 0;
                }

                c = (*seg++ == '0') ? '~' : '/';
            }

            if (k == e->len || name[k] != c) {
                return 0;
            }

            k++;
        }

        if (k != e->len) {
            return 0;
        }
    }

    return p == end;
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
