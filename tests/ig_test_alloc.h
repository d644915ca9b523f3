/*
 * Copyright (C) infergate authors
 *
 * The tests' counting allocator, in the yajl_alloc_funcs layout that
 * ig_jsonlex and the schema validator take: it counts the blocks alive
 * (a leak leaves live != 0) and the calls, and fails every call on
 * demand (fail != 0).  Shared by tests/unit and tests/fuzz; header-only,
 * included as "../ig_test_alloc.h".
 */

#ifndef _IG_TEST_ALLOC_H_INCLUDED_
#define _IG_TEST_ALLOC_H_INCLUDED_


#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_common.h>


typedef struct {
    long  live;     /* blocks allocated and not yet freed */
    long  calls;    /* malloc and realloc calls           */
    int   fail;     /* nonzero: every call returns NULL   */
} ig_test_alloc_t;


static inline void *
ig_test_malloc(void *ctx, size_t size)
{
    ig_test_alloc_t  *c = ctx;
    void             *p;

    c->calls++;

    if (c->fail) {
        return NULL;
    }

    p = malloc(size);
    if (p != NULL) {
        c->live++;
    }

    return p;
}


static inline void *
ig_test_realloc(void *ctx, void *old, size_t size)
{
    ig_test_alloc_t  *c = ctx;
    void             *p;

    c->calls++;

    if (c->fail) {
        return NULL;
    }

    p = realloc(old, size);
    if (p != NULL && old == NULL) {
        c->live++;
    }

    return p;
}


static inline void
ig_test_free(void *ctx, void *p)
{
    ig_test_alloc_t  *c = ctx;

    if (p != NULL) {
        c->live--;
        free(p);
    }
}


/* zeroes the counters and points af at them */

static inline void
ig_test_alloc_init(ig_test_alloc_t *c, yajl_alloc_funcs *af)
{
    memset(c, 0, sizeof(ig_test_alloc_t));

    af->malloc = ig_test_malloc;
    af->realloc = ig_test_realloc;
    af->free = ig_test_free;
    af->ctx = c;
}


#endif /* _IG_TEST_ALLOC_H_INCLUDED_ */
