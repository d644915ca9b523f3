/*
 * Copyright (C) infergate authors
 *
 * The compiler: the temporary document into an immutable node tree,
 * ECMA-262 patterns rewritten for PCRE2, enum/const in canonical form.
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
static void ig_schema_sipkey(uint64_t *k);


const char  *const ig_type_names[7] = {
    "null", "boolean", "object", "array", "number", "string", "integer"
};


/* compiler */

void
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
