/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for ig_schema.
 *
 * Input: byte 0 picks the split (bits 0-4: chunk size, 0 = one buffer)
 * and the depth limit (bits 5-7); the rest is a JSON document validated
 * against a fixed set of schemas, once in one buffer and once split:
 * both runs must agree exactly.  The rest is also compiled as a schema
 * and, when it compiles, used to validate a few documents.
 *
 * Against the empty schema the only possible violation is a repeated
 * member name: where yajl_tree also parses the document (it keeps
 * repeated names), the validator must refuse it exactly when some
 * object of the tree repeats a name.
 */

#define _GNU_SOURCE

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ig_schema.h"
#include "../ig_test_alloc.h"


#define NSCHEMAS  8


typedef struct {
    int     rc;
    int     truncated;
    size_t  nerrors;
    size_t  members;
    char    text[8192];
} fz_result_t;


static ig_schema_t  *fz_schemas[NSCHEMAS];
static ig_schema_t  *fz_any;


static const char  *fz_schema_texts[NSCHEMAS] = {

    "{\"type\":\"object\",\"required\":[\"user_id\",\"model\",\"messages\"],"
    "\"additionalProperties\":false,\"properties\":{"
    "\"user_id\":{\"type\":\"string\",\"format\":\"uuid\"},"
    "\"model\":{\"enum\":[\"small\",\"large\"]},"
    "\"stream\":{\"type\":\"boolean\"},"
    "\"temperature\":{\"type\":\"number\",\"minimum\":0,\"maximum\":2},"
    "\"max_tokens\":{\"type\":\"integer\",\"exclusiveMinimum\":0},"
    "\"created\":{\"type\":\"string\",\"format\":\"date-time\"},"
    "\"day\":{\"format\":\"date\"},\"at\":{\"format\":\"time\"},"
    "\"tags\":{\"type\":\"array\",\"maxItems\":3,\"minItems\":1,"
    "\"items\":{\"type\":\"string\",\"pattern\":\"^[a-z]+$\"}},"
    "\"meta\":{\"const\":{\"v\":1,\"k\":[\"a\"]}},"
    "\"messages\":{\"type\":\"array\",\"minItems\":1,\"items\":{"
    "\"type\":\"object\",\"required\":[\"role\",\"content\"],"
    "\"properties\":{\"role\":{\"enum\":[\"user\",\"system\"]},"
    "\"content\":{\"type\":\"string\",\"minLength\":1,"
    "\"maxLength\":40}}}}}}",

    "{\"enum\":[[1,{\"a\":[true,null]}],{\"x\":{\"y\":[1.5,\"s\"]},\"z\":0},"
    "\"str\",12e3,[]],\"items\":{\"const\":{\"a\":[true,null]}},"
    "\"properties\":{\"x\":{\"enum\":[{\"y\":[1.5,\"s\"]},[[]]],"
    "\"properties\":{\"y\":{\"items\":{\"enum\":[1.5,\"s\",{}]}}}}}}",

    "{\"items\":{\"items\":{\"items\":{\"type\":[\"integer\",\"null\"],"
    "\"minimum\":-1e300,\"maximum\":9007199254740993}}},\"maxItems\":4}",

    "{\"additionalProperties\":{\"type\":\"string\",\"pattern\":"
    "\"^(\\\\p{Letter}|\\\\d)+$\",\"maxLength\":8},"
    "\"properties\":{\"a/b\":{\"type\":\"object\",\"additionalProperties\":"
    "false,\"properties\":{\"~\":true}}},\"required\":[\"a/b\",\"q\","
    "\"r0\",\"r1\",\"r2\",\"r3\",\"r4\",\"r5\",\"r6\",\"r7\",\"r8\",\"r9\","
    "\"r10\",\"r11\",\"r12\",\"r13\",\"r14\",\"r15\",\"r16\",\"r17\",\"r18\","
    "\"r19\",\"r20\",\"r21\",\"r22\",\"r23\",\"r24\",\"r25\",\"r26\",\"r27\","
    "\"r28\",\"r29\",\"r30\",\"r31\",\"r32\",\"r33\",\"r34\",\"r35\",\"r36\","
    "\"r37\",\"r38\",\"r39\",\"r40\",\"r41\",\"r42\",\"r43\",\"r44\",\"r45\","
    "\"r46\",\"r47\",\"r48\",\"r49\",\"r50\",\"r51\",\"r52\",\"r53\",\"r54\","
    "\"r55\",\"r56\",\"r57\",\"r58\",\"r59\",\"r60\",\"r61\",\"r62\",\"r63\","
    "\"r64\",\"r65\"]}",

    "false",

    "true",

    "{\"const\":{\"a\":[1,2,{\"b\":\"c\"}],\"d\":{}},\"type\":\"object\","
    "\"properties\":{\"a\":{\"const\":[1,2,{\"b\":\"c\"}],"
    "\"items\":{\"enum\":[1,2,{\"b\":\"c\"},[1,2,3,4,5,6,7,8,9,10,11]]}}}}",

    "{\"type\":[\"string\",\"number\"],\"minLength\":2,\"maxLength\":3,"
    "\"exclusiveMinimum\":0.5,\"exclusiveMaximum\":100,"
    "\"enum\":[\"ab\",\"abc\",\"\\u00e9\\u00e9\",1,2.5,99.999]}",
};


/* documents validated against schemas compiled from the input */

static const char  *fz_docs[] = {
    "{\"a\":1,\"b\":[true,null,\"x\"],\"c\":{\"d\":-1.5e3}}",
    "[1,\"2\",[3],{\"4\":5}]",
    "\"2024-02-29T23:59:60Z\"",
    "-0.0",
    "null",
};


static void
fz_on_member(void *data, const unsigned char *name, size_t name_len,
    const unsigned char *value, size_t value_len)
{
    fz_result_t  *r = data;
    size_t        i;

    /* touch every byte so ASan sees bad pointers */
    for (i = 0; i < name_len; i++) {
        r->members += name[i];
    }

    for (i = 0; i < value_len; i++) {
        r->members += value[i];
    }

    r->members++;
}


static void
fz_run(const ig_schema_t *s, const uint8_t *doc, size_t len, size_t split,
    unsigned depth, fz_result_t *r)
{
    int                 trunc;
    size_t              off, n, i, used, k;
    ig_test_alloc_t     alloc;
    ig_validator_t     *v;
    yajl_alloc_funcs    af;
    const ig_verror_t  *errs;

    memset(r, 0, sizeof(fz_result_t));
    ig_test_alloc_init(&alloc, &af);

    v = ig_validator_create(s, &af, depth, fz_on_member, r);
    if (v == NULL) {
        abort();
    }

    off = 0;
    r->rc = IG_VALID_OK;

    while (off < len && r->rc == IG_VALID_OK) {
        n = split ? split : len;

        if (n > len - off) {
            n = len - off;
        }

        r->rc = ig_validator_feed(v, doc + off, n);
        off += n;
    }

    r->rc = ig_validator_finish(v);
    r->nerrors = ig_validator_errors(v, &errs, &trunc);
    r->truncated = trunc;

    if (r->nerrors > IG_SCHEMA_MAX_ERRORS
        || (r->rc == IG_VALID_OK && r->nerrors != 0)
        || (r->rc != IG_VALID_OK && r->nerrors == 0)
        || ((r->rc == IG_VALID_SYNTAX || r->rc == IG_VALID_DEPTH)
            && r->nerrors != 1))
    {
        abort();
    }

    used = 0;

    for (i = 0; i < r->nerrors; i++) {
        k = (size_t) snprintf(r->text + used, sizeof(r->text) - used,
                              "%s|%s\n", errs[i].pointer, errs[i].detail);

        used += k;

        if (used >= sizeof(r->text)) {
            used = sizeof(r->text) - 1;
        }
    }

    ig_validator_destroy(v);

    if (alloc.live != 0) {
        abort();
    }
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    size_t  i;
    char    err[256];

    (void) argc;
    (void) argv;

    for (i = 0; i < NSCHEMAS; i++) {
        fz_schemas[i] = ig_schema_compile(
                            (const unsigned char *) fz_schema_texts[i],
                            strlen(fz_schema_texts[i]), err, sizeof(err));

        if (fz_schemas[i] == NULL) {
            fprintf(stderr, "fuzz_schema: schema %zu: %s\n", i, err);
            abort();
        }
    }

    fz_any = ig_schema_compile((const unsigned char *) "{}", 2, err,
                               sizeof(err));
    if (fz_any == NULL) {
        abort();
    }

    return 0;
}


/* 1 when an object of the tree repeats a member name */

static int
fz_has_dup(yajl_val v)
{
    size_t  i, j;

    if (YAJL_IS_OBJECT(v)) {
        for (i = 0; i < v->u.object.len; i++) {
            for (j = 0; j < i; j++) {
                if (strcmp(v->u.object.keys[i], v->u.object.keys[j]) == 0) {
                    return 1;
                }
            }

            if (fz_has_dup(v->u.object.values[i])) {
                return 1;
            }
        }

    } else if (YAJL_IS_ARRAY(v)) {
        for (i = 0; i < v->u.array.len; i++) {
            if (fz_has_dup(v->u.array.values[i])) {
                return 1;
            }
        }
    }

    return 0;
}


static void
fz_check_dups(const uint8_t *data, size_t size, fz_result_t *r)
{
    int        dup;
    char      *text;
    yajl_val   tree;

    /* yajl_tree keeps names as C strings: "\u0000" would cut them */

    if (size > 65536 || memchr(data, '\0', size) != NULL
        || memmem(data, size, "u0000", 5) != NULL)
    {
        return;
    }

    fz_run(fz_any, data, size, 0, 64, r);

    if (r->rc != IG_VALID_OK && r->rc != IG_VALID_INVALID) {
        return;
    }

    text = malloc(size + 1);
    if (text == NULL) {
        abort();
    }

    memcpy(text, data, size);
    text[size] = '\0';

    tree = yajl_tree_parse(text, NULL, 0);
    free(text);

    if (tree == NULL) {
        /* the validator accepted what yajl did not */
        fprintf(stderr, "validator accepts, yajl_tree refuses\n");
        abort();
    }

    dup = fz_has_dup(tree);
    yajl_tree_free(tree);

    if (dup != (r->rc == IG_VALID_INVALID)
        || (r->rc == IG_VALID_INVALID
            && strstr(r->text, "duplicate member name") == NULL))
    {
        fprintf(stderr, "repeated names: yajl_tree %d, validator rc %d:\n"
                "%s\n", dup, r->rc, r->text);
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t        i, split;
    unsigned      depth;
    ig_schema_t  *s;
    fz_result_t  *whole, *part;
    char          err[256];

    static fz_result_t  results[2];

    if (size == 0) {
        return 0;
    }

    split = data[0] & 0x1f;
    depth = 1u + ((unsigned) (data[0] >> 5) * 3);

    data++;
    size--;

    whole = &results[0];
    part = &results[1];

    for (i = 0; i < NSCHEMAS; i++) {
        fz_run(fz_schemas[i], data, size, 0, depth, whole);
        fz_run(fz_schemas[i], data, size, split ? split : 1, depth, part);

        if (whole->rc != part->rc || whole->truncated != part->truncated
            || whole->nerrors != part->nerrors
            || whole->members != part->members
            || strcmp(whole->text, part->text) != 0)
        {
            fprintf(stderr, "split mismatch, schema %zu, split %zu\n"
                    "whole rc %d:\n%s\nsplit rc %d:\n%s\n", i, split,
                    whole->rc, whole->text, part->rc, part->text);
            abort();
        }
    }

    fz_check_dups(data, size, whole);

    /* the input as a schema */

    s = ig_schema_compile(data, size, err, sizeof(err));

    if (s == NULL) {
        if (strlen(err) == 0) {
            abort();
        }

        return 0;
    }

    for (i = 0; i < sizeof(fz_docs) / sizeof(fz_docs[0]); i++) {
        fz_run(s, (const uint8_t *) fz_docs[i], strlen(fz_docs[i]), split,
               depth + 2, whole);
    }

    fz_run(s, data, size, split, depth + 2, whole);

    ig_schema_free(s);

    return 0;
}
