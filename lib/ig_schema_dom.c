/*
 * Copyright (C) infergate authors
 *
 * The compile-time arena, and the schema text parsed by yajl into a
 * temporary document (a yajl_tree would lose the length of strings
 * holding U+0000 and the byte offset of syntax errors).
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


/* arena */

void *
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


void *
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


void
ig_arena_free(ig_arena_t *a)
{
    ig_ablock_t  *b, *next;

    for (b = a->head; b; b = next) {
        next = b->next;
        free(b);
    }

    a->head = NULL;
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


ig_jv_t *
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
