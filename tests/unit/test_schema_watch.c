/*
 * Copyright (C) infergate authors
 *
 * ig_validator_watch(): scalars at JSON pointers deeper in the body (what
 * infergate_json_var reads), at every split of the body, with and without
 * a schema over the watched places.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ig_schema.h"


#define NW  8

typedef struct {
    char    got[NW][256];
    int     count[NW];
} seen_t;


static void
on_value(void *data, size_t index, const unsigned char *value, size_t len)
{
    seen_t  *s = data;

    assert_true(index < NW);
    assert_true(len < sizeof(s->got[0]));
    memcpy(s->got[index], value, len);
    s->got[index][len] = '\0';
    s->count[index]++;
}


static const char  *ptrs[] = {
    "/parameters/user_id",
    "/inputs/0/name",
    "/inputs/1/shape/10",
    "/a~1b/~0",
    "/obj",
    "/n",
    "/deep/x/y/z",
    "/missing/x",
};


static void
run(const char *schema_text, const char *body, size_t split, seen_t *s)
{
    size_t           i, len;
    ig_watch_t       w[NW];
    ig_schema_t     *schema;
    ig_validator_t  *v;
    char             err[256];

    schema = ig_schema_compile((const unsigned char *) schema_text,
                               strlen(schema_text), err, sizeof(err));
    assert_non_null(schema);

    for (i = 0; i < NW; i++) {
        w[i].pointer = (const unsigned char *) ptrs[i];
        w[i].len = strlen(ptrs[i]);
    }

    memset(s, 0, sizeof(*s));

    /* on_value gets the data given at create */
    v = ig_validator_create(schema, NULL, 64, NULL, s);
    assert_non_null(v);
    ig_validator_watch(v, w, NW, on_value);

    len = strlen(body);

    if (split > len) {
        split = len;
    }

    assert_int_equal(ig_validator_feed(v, (const unsigned char *) body,
                                       split), IG_VALID_OK);
    assert_int_equal(ig_validator_feed(v, (const unsigned char *) body
                                          + split, len - split),
                     IG_VALID_OK);
    assert_int_equal(ig_validator_finish(v), IG_VALID_OK);

    ig_validator_destroy(v);
    ig_schema_free(schema);
}


static const char  *body =
    "{\"parameters\": {\"x\": [1, {\"user_id\": \"no\"}], "
    "\"user_id\": \"u\\u0034\\\"2\"},"
    " \"inputs\": [{\"name\": \"in0\", \"shape\": [1]},"
    " {\"name\": \"in1\", \"shape\": [0,1,2,3,4,5,6,7,8,9,-10.5e1,11]}],"
    " \"a/b\": {\"~\": true, \"~0\": 1},"
    " \"obj\": {\"k\": 1},"
    " \"n\": null,"
    " \"deep\": {\"x\": {\"y\": {\"z\": 12345678901234567890123}}}}";


static void
check(seen_t *s)
{
    assert_string_equal(s->got[0], "u4\"2");
    assert_int_equal(s->count[0], 1);
    assert_string_equal(s->got[1], "in0");
    assert_int_equal(s->count[1], 1);
    assert_string_equal(s->got[2], "-10.5e1");
    assert_string_equal(s->got[3], "true");
    assert_int_equal(s->count[3], 1);
    assert_int_equal(s->count[4], 0);          /* an object: no value */
    assert_string_equal(s->got[5], "null");
    assert_string_equal(s->got[6], "12345678901234567890123");
    assert_int_equal(s->count[7], 0);
}


static void
test_watch_any_schema(void **state)
{
    size_t  split;
    seen_t  s;

    (void) state;

    for (split = 0; split <= strlen(body); split++) {
        run("{}", body, split, &s);
        check(&s);
    }
}


static void
test_watch_under_schema(void **state)
{
    size_t  split;
    seen_t  s;

    (void) state;

    for (split = 0; split <= strlen(body); split += 7) {
        run("{\"type\": \"object\", \"properties\": {\"parameters\": "
            "{\"type\": \"object\", \"properties\": {\"user_id\": "
            "{\"type\": \"string\", \"maxLength\": 8}}}, \"inputs\": "
            "{\"type\": \"array\", \"items\": {\"type\": \"object\"}}}}",
            body, split, &s);
        check(&s);
    }
}


static void
test_watch_array_index_carry(void **state)
{
    int     i;
    char    big[4096];
    seen_t  s;

    (void) state;

    /* indexes 9 -> 10 and 99 -> 100 rewrite the pointer's digits */
    strcpy(big, "{\"inputs\": [{}, {\"shape\": [");

    for (i = 0; i < 120; i++) {
        sprintf(big + strlen(big), "%s%d", i ? "," : "", i * 3);
    }

    strcat(big, "]}]}");

    run("{\"properties\": {\"inputs\": {\"items\": {\"properties\": "
        "{\"shape\": {\"items\": {\"type\": \"integer\"}}}}}}}",
        big, 5, &s);
    assert_string_equal(s.got[2], "30");
    assert_int_equal(s.count[2], 1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_watch_any_schema),
        cmocka_unit_test(test_watch_under_schema),
        cmocka_unit_test(test_watch_array_index_carry),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
