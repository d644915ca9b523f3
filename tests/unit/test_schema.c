/*
 * Copyright (C) infergate authors
 *
 * ig_schema: compile errors, every keyword, messages and pointers,
 * buffer-split invariance, limits, memory, and the JSON-Schema-Test-
 * Suite cases for the supported keywords.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <yajl/yajl_tree.h>

#include "ig_schema.h"
#include "../ig_test_alloc.h"


#define DEPTH  64


/* one validation run */

typedef struct {
    int    rc;
    int    truncated;
    char   errs[16384];
    char   members[4096];
} result_t;


static void
appendf(char *buf, size_t size, const char *fmt, ...)
{
    size_t   n;
    va_list  ap;

    n = strlen(buf);

    if (n + 1 >= size) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(buf + n, size - n, fmt, ap);
    va_end(ap);
}


static void
on_member(void *data, const unsigned char *name, size_t name_len,
    const unsigned char *value, size_t value_len)
{
    result_t  *r = data;

    appendf(r->members, sizeof(r->members), "%.*s=%.*s;",
            (int) name_len, (const char *) name,
            (int) value_len, (const char *) value);
}


enum {
    SPLIT_WHOLE = 0,
    SPLIT_BYTES,
    SPLIT_RANDOM,
    SPLIT_AT
};


static void
run_split(const ig_schema_t *s, const char *doc, size_t len, int mode,
    unsigned seed, unsigned depth, result_t *r)
{
    int                 rc, rc2, trunc;
    size_t              off, n, i, nerr;
    ig_test_alloc_t     cnt;
    ig_validator_t     *v;
    yajl_alloc_funcs    af;
    const ig_verror_t  *errs;

    memset(r, 0, sizeof(result_t));
    ig_test_alloc_init(&cnt, &af);

    v = ig_validator_create(s, &af, depth, on_member, r);
    assert_non_null(v);

    off = 0;
    rc = IG_VALID_OK;

    while (off < len && rc == IG_VALID_OK) {
        switch (mode) {
        case SPLIT_WHOLE:
            n = len;
            break;
        case SPLIT_BYTES:
            n = 1;
            break;
        case SPLIT_RANDOM:
            n = 1 + (size_t) rand_r(&seed) % 16;
            break;
        default:
            n = (off == 0 && seed > 0) ? seed : len - off;
        }

        if (n > len - off) {
            n = len - off;
        }

        rc = ig_validator_feed(v, (const unsigned char *) doc + off, n);
        off += n;
    }

    rc2 = ig_validator_finish(v);

    if (rc != IG_VALID_OK) {
        /* terminal codes stick */
        assert_int_equal(rc2, rc);
        assert_int_equal(ig_validator_feed(v, (const unsigned char *) "1",
                                           1),
                         rc);
    }

    assert_int_equal(ig_validator_finish(v), rc2);

    r->rc = rc2;

    nerr = ig_validator_errors(v, &errs, &trunc);
    r->truncated = trunc;

    assert_true(nerr <= IG_SCHEMA_MAX_ERRORS);

    for (i = 0; i < nerr; i++) {
        appendf(r->errs, sizeof(r->errs), "'%s' %s\n", errs[i].pointer,
                errs[i].detail);
    }

    ig_validator_destroy(v);

    assert_int_equal(cnt.live, 0);
}


static const char *
rc_name(int rc)
{
    static const char  *names[] = {
        "OK", "INVALID", "SYNTAX", "DEPTH", "NOMEM"
    };

    return (rc >= 0 && rc <= 4) ? names[rc] : "?";
}


static void
assert_same(const result_t *a, const result_t *b, const char *doc,
    const char *how)
{
    if (a->rc != b->rc || a->truncated != b->truncated
        || strcmp(a->errs, b->errs) != 0
        || strcmp(a->members, b->members) != 0)
    {
        print_error("split mismatch (%s) for %s\n"
                    "whole: %s\n%s%s\nsplit: %s\n%s%s\n", how, doc,
                    rc_name(a->rc), a->errs, a->members,
                    rc_name(b->rc), b->errs, b->members);
        fail();
    }
}


/* validates doc whole, byte by byte, in random pieces and split in two
 * at every offset: all must agree; returns the whole-buffer result */

static void
run_all(const ig_schema_t *s, const char *doc, size_t len, unsigned depth,
    result_t *whole)
{
    unsigned   seed;
    size_t     at;
    result_t  *r;

    r = malloc(sizeof(result_t));
    assert_non_null(r);

    run_split(s, doc, len, SPLIT_WHOLE, 0, depth, whole);

    run_split(s, doc, len, SPLIT_BYTES, 0, depth, r);
    assert_same(whole, r, doc, "bytes");

    for (seed = 1; seed <= 8; seed++) {
        run_split(s, doc, len, SPLIT_RANDOM, seed, depth, r);
        assert_same(whole, r, doc, "random");
    }

    if (len < 400) {
        for (at = 1; at < len; at++) {
            run_split(s, doc, len, SPLIT_AT, (unsigned) at, depth, r);
            assert_same(whole, r, doc, "two pieces");
        }
    }

    free(r);
}


static ig_schema_t *
compile_ok(const char *text)
{
    char          err[512];
    ig_schema_t  *s;

    s = ig_schema_compile((const unsigned char *) text, strlen(text), err,
                          sizeof(err));

    if (s == NULL) {
        print_error("schema %s failed: %s\n", text, err);
    }

    assert_non_null(s);

    return s;
}


/* validates doc against schema with every split; checks the code and
 * the errors ("'pointer' detail\n" each) */

static void
expect_doc(const char *schema, const char *doc, int rc, const char *errs)
{
    ig_schema_t  *s;
    result_t     *r;

    s = compile_ok(schema);

    r = malloc(sizeof(result_t));
    assert_non_null(r);

    run_all(s, doc, strlen(doc), DEPTH, r);

    if (r->rc != rc || strcmp(r->errs, errs) != 0) {
        print_error("schema %s\ndoc %s\nexpected %s\n%sgot %s\n%s",
                    schema, doc, rc_name(rc), errs, rc_name(r->rc), r->errs);
        fail();
    }

    free(r);
    ig_schema_free(s);
}


#define OK(schema, doc)        expect_doc(schema, doc, IG_VALID_OK, "")
#define BAD(schema, doc, errs) expect_doc(schema, doc, IG_VALID_INVALID, errs)


/* compile errors */

static void
expect_compile_err(const char *text, size_t len, const char *expect)
{
    char          err[512];
    ig_schema_t  *s;

    memset(err, 'x', sizeof(err));

    s = ig_schema_compile((const unsigned char *) text, len, err,
                          sizeof(err));

    if (s != NULL || strcmp(err, expect) != 0) {
        print_error("schema %.*s\nexpected error: %s\ngot: %s\n", (int) len,
                    text, expect, s ? "(compiled)" : err);
        ig_schema_free(s);
        fail();
    }
}


#define CERR(text, expect)  expect_compile_err(text, strlen(text), expect)


static void
test_compile_errors(void **state)
{
    char          deep[600], err[16];
    size_t        i;
    ig_schema_t  *s;

    (void) state;

    CERR("{\"foo\":1}", "(root): unknown keyword \"foo\"");
    CERR("{\"properties\":{\"x\":{\"patternProperties\":{}}}}",
         "/properties/x: unknown keyword \"patternProperties\"");
    CERR("{\"items\":{\"$ref\":\"#\"}}", "/items: unknown keyword \"$ref\"");
    CERR("{\"allOf\":[]}", "(root): unknown keyword \"allOf\"");
    CERR("{\"type\":\"strin\"}", "/type: unknown type \"strin\"");
    CERR("{\"type\":7}",
         "/type: expected a string or an array of strings");
    CERR("{\"type\":[\"string\",1]}", "/type/1: expected a string");
    CERR("{\"type\":[\"string\",\"foo\"]}", "/type/1: unknown type \"foo\"");
    CERR("{\"type\":[\"string\",\"string\"]}",
         "/type/1: duplicate type \"string\"");
    CERR("{\"minimum\":\"x\"}", "/minimum: expected a number");
    CERR("{\"maximum\":null}", "/maximum: expected a number");
    CERR("{\"exclusiveMinimum\":true}",
         "/exclusiveMinimum: expected a number");
    CERR("{\"exclusiveMaximum\":[1]}",
         "/exclusiveMaximum: expected a number");
    CERR("{\"properties\":{\"age\":{\"minimum\":\"x\"}}}",
         "/properties/age/minimum: expected a number");
    CERR("{\"properties\":{\"a\":{\"items\":{\"minimum\":true}}}}",
         "/properties/a/items/minimum: expected a number");
    CERR("{\"properties\":{\"a/b~c\":{\"type\":\"x\"}}}",
         "/properties/a~1b~0c/type: unknown type \"x\"");
    CERR("{\"properties\":{\"a\\nb\":{\"type\":\"x\"}}}",
         "/properties/a\\nb/type: unknown type \"x\"");
    CERR("{\"required\":\"a\"}", "/required: expected an array of strings");
    CERR("{\"required\":[\"a\",2]}", "/required/1: expected a string");
    CERR("{\"minLength\":-1}",
         "/minLength: expected a non-negative integer");
    CERR("{\"minLength\":1.5}",
         "/minLength: expected a non-negative integer");
    CERR("{\"maxLength\":\"3\"}",
         "/maxLength: expected a non-negative integer");
    CERR("{\"minItems\":-0.5}",
         "/minItems: expected a non-negative integer");
    CERR("{\"maxItems\":null}",
         "/maxItems: expected a non-negative integer");
    CERR("{\"pattern\":\"(a\"}",
         "/pattern: invalid regular expression at offset 2: "
         "missing closing parenthesis");
    CERR("{\"properties\":{\"p\":{\"pattern\":\"a[\"}}}",
         "/properties/p/pattern: invalid regular expression at offset 2: "
         "missing terminating ] for character class");
    CERR("{\"pattern\":5}", "/pattern: expected a string");
    CERR("{\"format\":\"email\"}", "/format: unknown format \"email\"");
    CERR("{\"format\":1}", "/format: expected a string");
    CERR("{\"items\":[{}]}",
         "/items: expected a schema (an object or a boolean)");
    CERR("{\"additionalProperties\":1}",
         "/additionalProperties: expected a schema (an object or a boolean)");
    CERR("{\"properties\":{\"a\":3}}",
         "/properties/a: expected a schema (an object or a boolean)");
    CERR("{\"properties\":[]}", "/properties: expected an object");
    CERR("{\"properties\":{\"a\":{},\"a\":{}}}",
         "/properties: duplicate property \"a\"");
    CERR("{\"enum\":{}}", "/enum: expected an array");
    CERR("{\"enum\":[1,{\"a\":1,\"a\":2}]}",
         "/enum/1: duplicate object member \"a\"");
    CERR("{\"const\":[{\"b\":[{\"a\":1,\"a\":1}]}]}",
         "/const: duplicate object member \"a\"");
    CERR("{\"type\":\"string\",\"type\":\"number\"}",
         "(root): duplicate keyword \"type\"");
    CERR("1", "(root): expected a schema (an object or a boolean)");
    CERR("null", "(root): expected a schema (an object or a boolean)");
    CERR("\"x\"", "(root): expected a schema (an object or a boolean)");
    CERR("", "(root): invalid JSON at byte 0: parse error: premature EOF");
    CERR("{\"type\":",
         "(root): invalid JSON at byte 8: parse error: premature EOF");
    CERR("{\"a\" 1}",
         "(root): invalid JSON at byte 6: parse error: object key and "
         "value must be separated by a colon (':')");
    CERR("{} x", "(root): invalid JSON at byte 4: parse error: "
         "trailing garbage");
    CERR("/* c */ {}", "(root): invalid JSON at byte 0: lexical error: "
         "probable comment found in input text, comments are not enabled.");
    CERR("{\"\x01\":1}", "(root): invalid JSON at byte 2: lexical error: "
         "invalid character inside string.");
    CERR("{\"a\x01\":1}", "(root): invalid JSON at byte 3: lexical error: "
         "invalid character inside string.");
    CERR("{\"a\\u0001\":1}", "(root): unknown keyword \"a\\u0001\"");
    expect_compile_err("{\"const\":1}\0", 12, "(root): invalid JSON at "
                       "byte 12: parse error: trailing garbage");

    for (i = 0; i < 300; i++) {
        deep[i] = '[';
        deep[300 + i] = ']';
    }

    expect_compile_err(deep, 600, "(root): invalid JSON at byte 129: "
                       "nesting deeper than 128 levels");

    /* small and absent error buffers */

    s = ig_schema_compile((const unsigned char *) "{\"foo\":1}", 9, err,
                          sizeof(err));
    assert_null(s);
    assert_int_equal(strlen(err), sizeof(err) - 1);
    assert_memory_equal(err, "(root): unknown ", sizeof(err) - 1);

    s = ig_schema_compile((const unsigned char *) "{\"foo\":1}", 9, NULL, 0);
    assert_null(s);
}


static void
test_compile_ok(void **state)
{
    size_t        i;
    ig_schema_t  *s;

    static const char  *ok[] = {
        "true",
        "false",
        "{}",
        " { } ",
        "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
        "\"$id\":\"x\",\"$comment\":1,\"title\":\"t\",\"description\":\"d\","
        "\"default\":{},\"examples\":[1],\"deprecated\":true,"
        "\"readOnly\":false,\"writeOnly\":false}",
        "{\"type\":\"object\",\"required\":[\"a\",\"b\",\"a\"],"
        "\"properties\":{\"a\":{\"type\":\"string\",\"minLength\":1,"
        "\"maxLength\":10,\"pattern\":\"^[a-z]+$\",\"format\":\"uuid\"},"
        "\"b\":{\"type\":[\"integer\",\"null\"],\"minimum\":0,"
        "\"maximum\":10,\"exclusiveMinimum\":-1,\"exclusiveMaximum\":11},"
        "\"c\":{\"type\":\"array\",\"items\":{\"enum\":[1,\"a\",[],{}]},"
        "\"minItems\":1,\"maxItems\":2},\"d\":{\"const\":{\"x\":[1]}},"
        "\"e\":true,\"f\":false},\"additionalProperties\":false}",
        "{\"minLength\":1e2,\"maxItems\":1E400}",
        "{\"enum\":[]}",
        "{\"type\":[]}",
        ("{\"pattern\":\"^\\\\p{Letter}\\\\p{Script=Greek}\\\\p{gc=Lu}"
         "\\\\P{Cased_Letter}[\\\\p{sc=Latn}\\\\p{scx=Grek}]$\"}"),
        "{\"pattern\":\"\\\\u00e1\\\\d\\\\w\"}",
    };

    (void) state;

    for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        s = compile_ok(ok[i]);
        ig_schema_free(s);
    }

    ig_schema_free(NULL);
}


/* keywords: messages and pointers */

static void
test_type(void **state)
{
    (void) state;

    OK("{\"type\":\"integer\"}", "1");
    OK("{\"type\":\"integer\"}", "1.0");
    OK("{\"type\":\"integer\"}", "-1.0e3");
    OK("{\"type\":\"integer\"}", "1.5e1");
    OK("{\"type\":\"integer\"}", "100e-2");
    OK("{\"type\":\"integer\"}", "-0");
    OK("{\"type\":\"integer\"}", "0.0e-5");
    OK("{\"type\":\"integer\"}", "1e400");
    BAD("{\"type\":\"integer\"}", "\"x\"", "'' expected integer, got string\n");
    BAD("{\"type\":\"integer\"}", "1.5", "'' expected integer, got number\n");
    BAD("{\"type\":\"integer\"}", "1e-1", "'' expected integer, got number\n");
    BAD("{\"type\":\"integer\"}", "12345678901234567890.000001",
        "'' expected integer, got number\n");
    BAD("{\"type\":\"integer\"}", "true",
        "'' expected integer, got boolean\n");
    BAD("{\"type\":\"integer\"}", "null", "'' expected integer, got null\n");
    BAD("{\"type\":\"integer\"}", "{}", "'' expected integer, got object\n");
    BAD("{\"type\":\"integer\"}", "[]", "'' expected integer, got array\n");
    OK("{\"type\":\"number\"}", "1.5");
    BAD("{\"type\":\"number\"}", "\"1\"", "'' expected number, got string\n");
    OK("{\"type\":\"string\"}", "\"\"");
    OK("{\"type\":\"boolean\"}", "false");
    OK("{\"type\":\"null\"}", "null");
    OK("{\"type\":\"object\"}", "{\"a\":[1,{}]}");
    OK("{\"type\":\"array\"}", "[1,[{}]]");
    BAD("{\"type\":[\"integer\",\"string\"]}", "true",
        "'' expected string or integer, got boolean\n");
    BAD("{\"type\":[\"null\",\"array\",\"object\"]}", "1",
        "'' expected object, array or null, got number\n");
    BAD("{\"type\":[\"number\",\"integer\"]}", "\"a\"",
        "'' expected number, got string\n");
    BAD("{\"type\":[]}", "1", "'' expected nothing, got number\n");
    OK("{\"type\":[\"integer\",\"string\"]}", "\"1\"");
    OK("{\"type\":[\"number\",\"integer\"]}", "1.5");
}


static void
test_numbers(void **state)
{
    (void) state;

    BAD("{\"minimum\":0}", "-3", "'' must be >= 0, got -3\n");
    OK("{\"minimum\":0}", "0");
    OK("{\"minimum\":0}", "-0.0");
    OK("{\"minimum\":0}", "\"-3\"");
    OK("{\"minimum\":0}", "[-3]");
    BAD("{\"maximum\":10}", "10.5", "'' must be <= 10, got 10.5\n");
    OK("{\"maximum\":10}", "10.0");
    BAD("{\"exclusiveMaximum\":10}", "10", "'' must be < 10, got 10\n");
    BAD("{\"exclusiveMaximum\":10}", "1e1", "'' must be < 10, got 1e1\n");
    OK("{\"exclusiveMaximum\":10}", "9.999999999999999999999");
    BAD("{\"exclusiveMinimum\":0}", "0", "'' must be > 0, got 0\n");
    BAD("{\"exclusiveMinimum\":0}", "-0", "'' must be > 0, got -0\n");
    OK("{\"exclusiveMinimum\":0}", "1e-400");
    BAD("{\"minimum\":1.1}", "0.6", "'' must be >= 1.1, got 0.6\n");
    OK("{\"minimum\":1.1}", "1.10");
    BAD("{\"minimum\":-2}", "-2.0001", "'' must be >= -2, got -2.0001\n");
    OK("{\"minimum\":-2}", "-2.0");

    /* exact at any size */
    BAD("{\"maximum\":1e308}", "1e309", "'' must be <= 1e308, got 1e309\n");
    OK("{\"maximum\":1e308}", "1e308");
    OK("{\"maximum\":1e308}", "-1e400");
    BAD("{\"minimum\":9007199254740993}", "9007199254740992",
        "'' must be >= 9007199254740993, got 9007199254740992\n");
    BAD("{\"maximum\":18446744073709551615}", "18446744073709551616",
        "'' must be <= 18446744073709551615, got 18446744073709551616\n");
    BAD("{\"maximum\":0.3}", "0.30000000000000001",
        "'' must be <= 0.3, got 0.30000000000000001\n");
    OK("{\"minimum\":1e-400,\"maximum\":2e-400}", "15e-401");
    BAD("{\"exclusiveMinimum\":-1e-400}", "-1e-399",
        "'' must be > -1e-400, got -1e-399\n");
    OK("{\"maximum\":1e99999999999999999999999}", "1e999999999");

    /* every failing bound is named */
    BAD("{\"minimum\":5,\"maximum\":1,\"exclusiveMinimum\":5,"
        "\"exclusiveMaximum\":1}", "3",
        "'' must be >= 5, got 3\n'' must be <= 1, got 3\n"
        "'' must be > 5, got 3\n'' must be < 1, got 3\n");

    /* long literals are cut in messages */
    BAD("{\"maximum\":0}",
        "1111111111111111111111111111111111111111111111111111111111111111"
        "11111",
        "'' must be <= 0, got "
        "1111111111111111111111111111111111111111111111111111111111111111"
        "...\n");
}


static void
test_strings(void **state)
{
    (void) state;

    BAD("{\"maxLength\":5}", "\"h\\u00e9llo w\xc3\xb6rld\"",
        "'' length must be <= 5 characters, got 11\n");
    OK("{\"maxLength\":5}", "\"h\xc3\xa9llo\"");
    OK("{\"maxLength\":1}", "\"\xf0\x9f\x98\x80\"");
    OK("{\"maxLength\":1}", "\"\\ud83d\\ude00\"");
    BAD("{\"minLength\":2}", "\"\xc3\xa9\"",
        "'' length must be >= 2 characters, got 1\n");
    OK("{\"minLength\":2.0}", "\"ab\"");
    OK("{\"minLength\":2}", "1");
    BAD("{\"minLength\":3,\"maxLength\":1}", "\"ab\"",
        "'' length must be >= 3 characters, got 2\n"
        "'' length must be <= 1 characters, got 2\n");
    OK("{\"maxLength\":1e100}", "\"abc\"");

    /* pattern: unanchored search on the unescaped value */
    BAD("{\"pattern\":\"^a\"}", "\"ba\"", "'' does not match pattern \"^a\"\n");
    OK("{\"pattern\":\"^a\"}", "\"ab\"");
    OK("{\"pattern\":\"a+\"}", "\"xxaayy\"");
    OK("{\"pattern\":\"^abc$\"}", "\"\\u0061bc\"");
    OK("{\"pattern\":\"^\\n$\"}", "\"\\n\"");
    BAD("{\"pattern\":\"^a$\"}", "\"a\\n\"",
        "'' does not match pattern \"^a$\"\n");
    OK("{\"pattern\":\"^\\\\p{Letter}+$\"}", "\"Hello\"");
    OK("{\"pattern\":\"^\\\\p{Letter}+$\"}", "\"\\u03c0\"");
    BAD("{\"pattern\":\"^\\\\p{Letter}+$\"}", "\"123\"",
        "'' does not match pattern \"^\\\\p{Letter}+$\"\n");
    OK("{\"pattern\":\"^\\\\p{Script=Greek}$\"}", "\"\\u03c0\"");
    BAD("{\"pattern\":\"^\\\\p{gc=Lu}$\"}", "\"a\"",
        "'' does not match pattern \"^\\\\p{gc=Lu}$\"\n");
    OK("{\"pattern\":\"^\\\\p{General_Category=Uppercase_Letter}$\"}",
       "\"A\"");
    OK("{\"pattern\":\"^\\\\\\\\p{Letter}$\"}", "\"\\\\p{Letter}\"");
    OK("{\"pattern\":\"^\\\\u00e1$\"}", "\"\xc3\xa1\"");
    OK("{\"pattern\":\"^\\\\d+$\"}", "\"0123\"");
    BAD("{\"pattern\":\"^\\\\d+$\"}", "\"\xd9\xa1\"",
        "'' does not match pattern \"^\\\\d+$\"\n");
    OK("{\"pattern\":\"^a\"}", "1");
    OK("{\"pattern\":\"x\\u0000y\"}", "\"x\\u0000y\"");

    /* a lone UTF-16 surrogate is malformed JSON (ig_jsonlex.h) */
    expect_doc("{\"pattern\":\"^.$\"}", "\"\\udc00\"", IG_VALID_SYNTAX,
               "'' malformed JSON at byte 6: unpaired UTF-16 surrogate\n");
    expect_doc("{\"format\":\"uuid\"}", "\"\\ud800x\"", IG_VALID_SYNTAX,
               "'' malformed JSON at byte 7: unpaired UTF-16 surrogate\n");

    /* formats */
    BAD("{\"format\":\"date-time\"}", "\"03/25/2024\"",
        "'' expected an RFC 3339 date-time, got \"03/25/2024\"\n");
    OK("{\"format\":\"date-time\"}", "\"2024-02-29T23:59:60Z\"");
    OK("{\"format\":\"date-time\"}", "\"1998-12-31T15:59:60.123-08:00\"");
    BAD("{\"format\":\"date-time\"}", "\"2023-02-29T00:00:00Z\"",
        "'' expected an RFC 3339 date-time, got \"2023-02-29T00:00:00Z\"\n");
    BAD("{\"format\":\"date\"}", "\"2100-02-29\"",
        "'' expected an RFC 3339 date, got \"2100-02-29\"\n");
    OK("{\"format\":\"date\"}", "\"2000-02-29\"");
    BAD("{\"format\":\"time\"}", "\"12:00:00\"",
        "'' expected an RFC 3339 time, got \"12:00:00\"\n");
    OK("{\"format\":\"time\"}", "\"01:29:60+01:30\"");
    BAD("{\"format\":\"time\"}", "\"23:59:60+01:00\"",
        "'' expected an RFC 3339 time, got \"23:59:60+01:00\"\n");
    OK("{\"format\":\"uuid\"}", "\"2eb8aa08-AA98-11ea-B4Aa-73B441D16380\"");
    BAD("{\"format\":\"uuid\"}", "\"2eb8aa08aa9811eab4aa73b441d16380\"",
        "'' expected a UUID, got \"2eb8aa08aa9811eab4aa73b441d16380\"\n");
    OK("{\"format\":\"date-time\"}", "12");
    OK("{\"format\":\"date-time\"}", "{\"a\":\"x\"}");
    OK("{\"format\":\"date\"}", "[\"x\"]");

    /* the value is escaped and cut to 64 bytes in the message */
    BAD("{\"format\":\"date\"}", "\"a\\\"b\\\\c\\n\\u0001\"",
        "'' expected an RFC 3339 date, got \"a\\\"b\\\\c\\n\\u0001\"\n");
    BAD("{\"format\":\"date\"}",
        "\"0123456789012345678901234567890123456789012345678901234567890123"
        "456789\"",
        "'' expected an RFC 3339 date, got "
        "\"0123456789012345678901234567890123456789012345678901234567890123"
        "...\"\n");
    BAD("{\"format\":\"date\"}",
        "\"012345678901234567890123456789012345678901234567890123456789012"
        "\xc3\xa9xyz\"",
        "'' expected an RFC 3339 date, got "
        "\"012345678901234567890123456789012345678901234567890123456789012"
        "...\"\n");
}


static void
test_enum_const(void **state)
{
    (void) state;

    OK("{\"enum\":[1,\"a\",null,true]}", "1");
    OK("{\"enum\":[1,\"a\",null,true]}", "1.0");
    OK("{\"enum\":[1,\"a\",null,true]}", "10e-1");
    OK("{\"enum\":[1,\"a\",null,true]}", "\"a\"");
    OK("{\"enum\":[1,\"a\",null,true]}", "null");
    OK("{\"enum\":[1,\"a\",null,true]}", "true");
    BAD("{\"enum\":[1,\"a\",null,true]}", "false",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[1,\"a\",null,true]}", "\"1\"",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[1,\"a\",null,true]}", "1.0000000000000000001",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[1,\"a\",null,true]}", "[1]",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[1,\"a\",null,true]}", "{}",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[]}", "null", "'' must be one of the enumerated values\n");
    OK("{\"enum\":[0]}", "-0.0");
    OK("{\"enum\":[-0.0]}", "0");
    OK("{\"enum\":[1e400]}", "10e399");
    BAD("{\"enum\":[1e400]}", "1e401",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[false]}", "0", "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[0]}", "false", "'' must be one of the enumerated values\n");
    OK("{\"enum\":[\"x\\u0000y\"]}", "\"x\\u0000y\"");
    BAD("{\"enum\":[\"x\\u0000y\"]}", "\"x\"",
        "'' must be one of the enumerated values\n");
    OK("{\"enum\":[\"\\u00e9\"]}", "\"\xc3\xa9\"");

    OK("{\"const\":2}", "2.0");
    BAD("{\"const\":false}", "0", "'' must equal the const value\n");
    BAD("{\"const\":true}", "1", "'' must equal the const value\n");
    BAD("{\"const\":null}", "\"null\"", "'' must equal the const value\n");
    OK("{\"const\":9007199254740992}", "9007199254740992.0");
    BAD("{\"const\":9007199254740992}", "9007199254740993",
        "'' must equal the const value\n");

    /* containers compare structurally, member order irrelevant */
    OK("{\"const\":{\"foo\":\"bar\",\"baz\":\"bax\"}}",
       "{\"baz\":\"bax\",\"foo\":\"bar\"}");
    OK("{\"const\":{\"a\":{\"y\":[1,{\"q\":null,\"p\":2.0}],\"x\":1}}}",
       " { \"a\" : { \"x\" : 1.0 , \"y\" : [ 1 , { \"p\" : 2 , \"q\" : null"
       " } ] } } ");
    BAD("{\"const\":{\"foo\":\"bar\",\"baz\":\"bax\"}}", "{\"foo\":\"bar\"}",
        "'' must equal the const value\n");
    BAD("{\"const\":{\"foo\":\"bar\"}}",
        "{\"foo\":\"bar\",\"foo\":\"bar\"}",
        "'/foo' duplicate member name \"foo\"\n"
        "'' must equal the const value\n");
    BAD("{\"const\":[false]}", "[0]", "'' must equal the const value\n");
    BAD("{\"const\":{\"a\":true}}", "{\"a\":1}",
        "'' must equal the const value\n");
    BAD("{\"const\":[]}", "{}", "'' must equal the const value\n");
    BAD("{\"const\":{}}", "[]", "'' must equal the const value\n");
    BAD("{\"const\":[1,2]}", "[1,2,3]", "'' must equal the const value\n");
    BAD("{\"const\":[1,2]}", "[[1,2]]", "'' must equal the const value\n");
    OK("{\"const\":[[\"a\",\"b\"]]}", "[[\"a\",\"b\"]]");
    BAD("{\"const\":[\"ab\"]}", "[\"a\",\"b\"]",
        "'' must equal the const value\n");
    BAD("{\"const\":{\"ab\":1}}", "{\"a\":1,\"b\":1}",
        "'' must equal the const value\n");
    OK("{\"enum\":[6,\"foo\",[],true,{\"foo\":12}]}", "[]");
    OK("{\"enum\":[6,\"foo\",[],true,{\"foo\":12}]}", "{\"foo\":12}");
    BAD("{\"enum\":[6,\"foo\",[],true,{\"foo\":12}]}", "{\"foo\":false}",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[6,\"foo\",[],true,{\"foo\":12}]}",
        "{\"foo\":12,\"boo\":42}",
        "'' must be one of the enumerated values\n");
    BAD("{\"enum\":[[1]],\"const\":[1]}", "[2]",
        "'' must be one of the enumerated values\n"
        "'' must equal the const value\n");

    /* an instance far bigger than every candidate */
    BAD("{\"const\":[1]}",
        "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,"
        "{\"a\":[\"long string long string long string long string\"]}]",
        "'' must equal the const value\n");
}


/* nested and overlapping captures */

static void
test_enum_nested(void **state)
{
    (void) state;

    /* inner and outer both live */
    OK("{\"const\":[{\"b\":[1,2],\"a\":1}],"
       "\"items\":{\"enum\":[{\"a\":1,\"b\":[1,2]}]}}",
       "[{\"a\":1,\"b\":[1,2]}]");

    /* inner too long, outer matches */
    BAD("{\"enum\":[[[1,2,3,4,5,6,7,8]]],\"items\":{\"enum\":[[1]]}}",
        "[[1,2,3,4,5,6,7,8]]",
        "'/0' must be one of the enumerated values\n");

    /* inner longer limit than outer: inner matches, outer does not */
    BAD("{\"enum\":[[1]],\"items\":{\"enum\":[[1,2,3,4,5,6,7,8,9,10]]}}",
        "[[1,2,3,4,5,6,7,8,9,10]]",
        "'' must be one of the enumerated values\n");

    /* outer dies early; a later inner capture still works */
    BAD("{\"enum\":[[1]],\"items\":{\"enum\":[{\"x\":[1,2,3]}]}}",
        "[\"a long string that kills the outer capture\","
        "{\"x\":[1,2,3]},{\"x\":[1,2]},{\"x\":[1,2,3]}]",
        "'/0' must be one of the enumerated values\n"
        "'/2' must be one of the enumerated values\n"
        "'' must be one of the enumerated values\n");

    /* three levels, objects sorted at each */
    OK("{\"const\":{\"z\":{\"y\":{\"x\":1,\"w\":2}}},"
       "\"properties\":{\"z\":{\"const\":{\"y\":{\"w\":2,\"x\":1}},"
       "\"properties\":{\"y\":{\"const\":{\"x\":1,\"w\":2}}}}}}",
       "{\"z\":{\"y\":{\"w\":2,\"x\":1}}}");
    BAD("{\"const\":{\"z\":{\"y\":{\"x\":1,\"w\":2}}},"
        "\"properties\":{\"z\":{\"const\":{\"y\":{\"w\":2,\"x\":1}},"
        "\"properties\":{\"y\":{\"const\":{\"x\":1,\"w\":3}}}}}}",
        "{\"z\":{\"y\":{\"w\":2,\"x\":1}}}",
        "'/z/y' must equal the const value\n");
}


/* an object with many members in reverse order (heapsort path) */

static void
test_enum_big_object(void **state)
{
    int     i;
    char   *schema, *doc;
    size_t  sl, dl;

    (void) state;

    schema = malloc(32768);
    doc = malloc(32768);
    assert_non_null(schema);
    assert_non_null(doc);

    sl = (size_t) sprintf(schema, "{\"const\":{");
    dl = (size_t) sprintf(doc, "{");

    for (i = 0; i < 300; i++) {
        sl += (size_t) sprintf(schema + sl, "%s\"k%03d\":%d", i ? "," : "",
                               i, i);
        dl += (size_t) sprintf(doc + dl, "%s\"k%03d\":%d.0", i ? "," : "",
                               299 - i, 299 - i);
    }

    strcpy(schema + sl, "}}");
    strcpy(doc + dl, "}");

    OK(schema, doc);

    /* one value differs: k000 is 0.5 */
    doc[dl - 1] = '5';
    BAD(schema, doc, "'' must equal the const value\n");

    free(schema);
    free(doc);
}


static void
test_objects(void **state)
{
    char    *schema, *doc;
    size_t   sl, dl;
    int      i;

    (void) state;

    BAD("{\"required\":[\"user_id\"]}", "{}",
        "'' required property \"user_id\" is missing\n");
    OK("{\"required\":[\"user_id\"]}", "[]");
    OK("{\"required\":[\"user_id\"]}", "\"user_id\"");
    OK("{\"required\":[]}", "{}");
    BAD("{\"properties\":{\"a\":{\"required\":[\"x\",\"y\"]}}}",
        "{\"a\":{\"y\":1}}", "'/a' required property \"x\" is missing\n");
    BAD("{\"properties\":{\"a\":{\"required\":[\"x\",\"y\"]}}}",
        "{\"a\":{}}",
        "'/a' required property \"x\" is missing\n"
        "'/a' required property \"y\" is missing\n");
    BAD("{\"required\":[\"b\",\"a\",\"b\"]}", "{\"c\":1}",
        "'' required property \"a\" is missing\n"
        "'' required property \"b\" is missing\n");
    BAD("{\"required\":[\"a\\\"b\",\"\"]}", "{\"x\":1}",
        "'' required property \"\" is missing\n"
        "'' required property \"a\\\"b\" is missing\n");
    OK("{\"required\":[\"a\\u0000b\"]}", "{\"a\\u0000b\":1}");
    BAD("{\"required\":[\"a\\u0000b\"]}", "{\"a\":1}",
        "'' required property \"a\\u0000b\" is missing\n");
    OK("{\"required\":[\"__proto__\",\"toString\"]}",
       "{\"__proto__\":1,\"toString\":{}}");

    BAD("{\"properties\":{\"age\":{\"type\":\"integer\",\"minimum\":0}}}",
        "{\"age\":-3}", "'/age' must be >= 0, got -3\n");
    BAD("{\"properties\":{\"age\":{\"type\":\"integer\"}}}",
        "{\"age\":\"x\"}", "'/age' expected integer, got string\n");
    OK("{\"properties\":{\"age\":{\"type\":\"integer\"}}}", "{\"agex\":\"x\"}");
    OK("{\"properties\":{\"age\":{\"type\":\"integer\"}}}",
       "[{\"age\":\"x\"}]");

    BAD("{\"properties\":{\"a\":{}},\"additionalProperties\":false}",
        "{\"a\":1,\"b\":2,\"c\":{\"d\":[1]}}",
        "'/b' property is not allowed\n'/c' property is not allowed\n");
    BAD("{\"properties\":{\"a\":{}},\"additionalProperties\":"
        "{\"type\":\"boolean\"}}", "{\"a\":1,\"b\":2,\"c\":true}",
        "'/b' expected boolean, got number\n");
    BAD("{\"properties\":{\"b\":false}}", "{\"a\":1,\"b\":2}",
        "'/b' property is not allowed\n");
    BAD("{\"required\":[\"b\"],\"additionalProperties\":false}", "{\"b\":1}",
        "'/b' property is not allowed\n");
    OK("{\"additionalProperties\":false}", "{}");

    /* pointer escaping */
    BAD("{\"additionalProperties\":false}",
        "{\"a/b~c\":1,\"~1\":2,\"\":3,\"\\u00e9\":4}",
        "'/a~1b~0c' property is not allowed\n"
        "'/~01' property is not allowed\n"
        "'/' property is not allowed\n"
        "'/\xc3\xa9' property is not allowed\n");

    /* duplicate members: refused, and each value validated */
    BAD("{\"properties\":{\"a\":{\"type\":\"string\"}},\"required\":[\"a\"]}",
        "{\"a\":1,\"a\":\"x\",\"a\":2}",
        "'/a' expected string, got number\n"
        "'/a' duplicate member name \"a\"\n"
        "'/a' duplicate member name \"a\"\n"
        "'/a' expected string, got number\n");

    /* more than 64 required names: a multi-word bitmap */
    schema = malloc(8192);
    doc = malloc(8192);
    assert_non_null(schema);
    assert_non_null(doc);

    sl = (size_t) sprintf(schema, "{\"required\":[");
    dl = (size_t) sprintf(doc, "{");

    for (i = 0; i < 150; i++) {
        sl += (size_t) sprintf(schema + sl, "%s\"r%d\"", i ? "," : "", i);

        if (i != 3 && i != 70 && i != 149) {
            dl += (size_t) sprintf(doc + dl, "%s\"r%d\":%d",
                                   dl > 1 ? "," : "", i, i);
        }
    }

    strcpy(schema + sl, "],\"properties\":{\"n\":{\"required\":[\"r1\"]}}}");
    strcpy(doc + dl, ",\"n\":{\"r1\":{}}}");

    BAD(schema, doc,
        "'' required property \"r3\" is missing\n"
        "'' required property \"r70\" is missing\n"
        "'' required property \"r149\" is missing\n");

    free(schema);
    free(doc);
}


static void
test_arrays(void **state)
{
    (void) state;

    BAD("{\"items\":{\"type\":\"integer\"}}", "[1,\"x\",3,{}]",
        "'/1' expected integer, got string\n"
        "'/3' expected integer, got object\n");
    OK("{\"items\":{\"type\":\"integer\"}}", "{\"a\":\"x\"}");
    BAD("{\"items\":false}", "[1]", "'/0' item is not allowed\n");
    OK("{\"items\":false}", "[]");
    OK("{\"items\":true}", "[1,\"a\"]");
    BAD("{\"minItems\":2}", "[1]", "'' must have at least 2 items, got 1\n");
    BAD("{\"maxItems\":2}", "[1,[2,3,4],3]",
        "'' must have at most 2 items, got 3\n");
    OK("{\"maxItems\":2}", "{\"a\":1,\"b\":2,\"c\":3}");
    OK("{\"minItems\":1.0}", "[[]]");
    BAD("{\"items\":{\"items\":{\"items\":{\"type\":\"null\"}}}}",
        "[[[null]],[[null,0]],[[],[1]]]",
        "'/1/0/1' expected null, got number\n"
        "'/2/1/0' expected null, got number\n");
    BAD("{\"items\":{\"properties\":{\"t\":{\"format\":\"date\"}}}}",
        "[{},{\"t\":\"2024-02-30\"}]",
        "'/1/t' expected an RFC 3339 date, got \"2024-02-30\"\n");
    BAD("{\"items\":{\"minimum\":0}}",
        "[0,1,2,3,4,5,6,7,8,9,10,11,-1]",
        "'/12' must be >= 0, got -1\n");
}


static void
test_boolean_schemas(void **state)
{
    (void) state;

    BAD("false", "{\"a\":1}", "'' schema does not allow any value\n");
    BAD("false", "1", "'' schema does not allow any value\n");
    BAD("false", "[]", "'' schema does not allow any value\n");
    OK("true", "{\"a\":[1,{\"b\":null}]}");
    OK("{}", "\"x\"");
    OK("{\"title\":\"t\"}", "[1]");
}


/* a realistic request body */

static const char  *request_schema =
    "{\"$schema\":\"https://json-schema.org/draft/2020-12/schema\","
    "\"type\":\"object\",\"required\":[\"user_id\",\"model\",\"messages\"],"
    "\"additionalProperties\":false,"
    "\"properties\":{"
    "\"user_id\":{\"type\":\"string\",\"format\":\"uuid\"},"
    "\"model\":{\"enum\":[\"small\",\"large\"]},"
    "\"stream\":{\"type\":\"boolean\"},"
    "\"temperature\":{\"type\":\"number\",\"minimum\":0,\"maximum\":2},"
    "\"max_tokens\":{\"type\":\"integer\",\"exclusiveMinimum\":0},"
    "\"created\":{\"type\":\"string\",\"format\":\"date-time\"},"
    "\"tags\":{\"type\":\"array\",\"maxItems\":3,"
    "\"items\":{\"type\":\"string\",\"pattern\":\"^[a-z]+$\"}},"
    "\"meta\":{\"const\":{\"v\":1,\"k\":[\"a\"]}},"
    "\"messages\":{\"type\":\"array\",\"minItems\":1,\"items\":{"
    "\"type\":\"object\",\"required\":[\"role\",\"content\"],"
    "\"properties\":{\"role\":{\"enum\":[\"user\",\"system\"]},"
    "\"content\":{\"type\":\"string\",\"minLength\":1,"
    "\"maxLength\":4000}}}}}}";


static void
test_request(void **state)
{
    (void) state;

    OK(request_schema,
       "{\"user_id\":\"2eb8aa08-aa98-11ea-b4aa-73b441d16380\","
       "\"model\":\"small\",\"stream\":true,\"temperature\":0.7,"
       "\"max_tokens\":256,\"created\":\"2024-03-25T10:00:00Z\","
       "\"tags\":[\"a\",\"b\"],\"meta\":{\"k\":[\"a\"],\"v\":1.0},"
       "\"messages\":[{\"role\":\"user\",\"content\":\"Hi \\u00e9\"}]}");

    BAD(request_schema,
        "{\"user_id\":\"nope\",\"model\":\"medium\",\"stream\":\"yes\","
        "\"temperature\":2.5,\"max_tokens\":0,\"created\":\"03/25/2024\","
        "\"tags\":[\"a\",\"B\",\"c\",\"d\"],\"meta\":{\"k\":[\"a\"]},"
        "\"extra\":1,\"messages\":[{\"role\":\"bot\",\"content\":\"\"},"
        "{\"content\":1}]}",
        "'/user_id' expected a UUID, got \"nope\"\n"
        "'/model' must be one of the enumerated values\n"
        "'/stream' expected boolean, got string\n"
        "'/temperature' must be <= 2, got 2.5\n"
        "'/max_tokens' must be > 0, got 0\n"
        "'/created' expected an RFC 3339 date-time, got \"03/25/2024\"\n"
        "'/tags/1' does not match pattern \"^[a-z]+$\"\n"
        "'/tags' must have at most 3 items, got 4\n"
        "'/meta' must equal the const value\n"
        "'/extra' property is not allowed\n"
        "'/messages/0/role' must be one of the enumerated values\n"
        "'/messages/0/content' length must be >= 1 characters, got 0\n"
        "'/messages/1/content' expected string, got number\n"
        "'/messages/1' required property \"role\" is missing\n");

    BAD(request_schema, "{\"model\":\"small\"}",
        "'' required property \"user_id\" is missing\n"
        "'' required property \"messages\" is missing\n");

    BAD(request_schema, "[]", "'' expected object, got array\n");
}


/* malformed JSON */

#define SYNTAX(schema, doc, errs) expect_doc(schema, doc, IG_VALID_SYNTAX, errs)


static void
test_syntax(void **state)
{
    (void) state;

    SYNTAX("{}", "",
           "'' malformed JSON at byte 0: premature end of input\n");
    SYNTAX("{}", "  \n ",
           "'' malformed JSON at byte 4: premature end of input\n");
    SYNTAX("{}", "[1,2",
           "'' malformed JSON at byte 4: premature end of input\n");
    SYNTAX("{}", "{\"a\":1,}",
           "'' malformed JSON at byte 7: expected a string key\n");
    SYNTAX("{}", "{\"a\" 1}",
           "'' malformed JSON at byte 5: expected ':'\n");
    SYNTAX("{}", "{\"a\":1 \"b\":2}",
           "'' malformed JSON at byte 7: expected ',' or '}'\n");
    SYNTAX("{}", "{\"a\":{} 12345}",
           "'' malformed JSON at byte 8: expected ',' or '}'\n");
    SYNTAX("{}", "{\"a\":\"x\" true}",
           "'' malformed JSON at byte 9: expected ',' or '}'\n");
    SYNTAX("{}", "[1 2]",
           "'' malformed JSON at byte 3: expected ',' or ']'\n");
    SYNTAX("{}", "{\"a\":1}x",
           "'' malformed JSON at byte 7: trailing garbage\n");
    SYNTAX("{}", "{\"a\":1} {}",
           "'' malformed JSON at byte 8: trailing garbage\n");
    SYNTAX("{}", "1 2",
           "'' malformed JSON at byte 2: trailing garbage\n");
    SYNTAX("{}", "{\"a\":tru}",
           "'' malformed JSON at byte 8: invalid literal\n");
    SYNTAX("{}", "{\"a\":01}",
           "'' malformed JSON at byte 6: expected ',' or '}'\n");
    SYNTAX("{}", "[-]",
           "'' malformed JSON at byte 2: invalid number\n");
    SYNTAX("{}", "[1.]",
           "'' malformed JSON at byte 3: invalid number\n");
    SYNTAX("{}", "[1e+]",
           "'' malformed JSON at byte 4: invalid number\n");
    SYNTAX("{}", "[\"\\x\"]",
           "'' malformed JSON at byte 3: invalid escape\n");
    SYNTAX("{}", "[\"\\u12g4\"]",
           "'' malformed JSON at byte 6: invalid \\u escape\n");
    SYNTAX("{}", "[\"a\xff\"]",
           "'' malformed JSON at byte 3: invalid UTF-8 in string\n");
    SYNTAX("{}", "[\"a\xc3(\"]",
           "'' malformed JSON at byte 4: invalid UTF-8 in string\n");
    SYNTAX("{}", "[\"a\nb\"]",
           "'' malformed JSON at byte 3: control character in string\n");
    SYNTAX("{}", "// x\n{}",
           "'' malformed JSON at byte 0: expected a value\n");
    SYNTAX("{}", "{1:2}",
           "'' malformed JSON at byte 1: expected a string key or '}'\n");
    SYNTAX("{}", "]",
           "'' malformed JSON at byte 0: expected a value\n");

    /* schema errors found before the syntax error are dropped */
    SYNTAX("{\"items\":{\"type\":\"string\"}}", "[1,2,3,",
           "'' malformed JSON at byte 7: premature end of input\n");
}


/* top-level scalars only arrive at finish in yajl */

static void
test_top_scalars(void **state)
{
    (void) state;

    OK("{\"type\":\"integer\"}", "12");
    OK("{\"type\":\"integer\"}", " 12 ");
    BAD("{\"type\":\"string\"}", "12", "'' expected string, got number\n");
    BAD("{\"type\":\"string\"}", "-1.5e3",
        "'' expected string, got number\n");
    BAD("{\"type\":\"string\"}", "true", "'' expected string, got boolean\n");
    BAD("{\"type\":\"string\"}", "null", "'' expected string, got null\n");
    OK("{\"type\":\"string\"}", "\"x\"");
    BAD("{\"const\":12}", "123", "'' must equal the const value\n");
}


/* the same documents, every split, against a rich schema */

static void
test_split_invariance(void **state)
{
    size_t        i;
    result_t     *r;
    ig_schema_t  *s;

    static const char  *docs[] = {
        "{\"user_id\":\"2eb8aa08-aa98-11ea-b4aa-73b441d16380\","
        "\"model\":\"small\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"h\\u00e9llo \\ud83d\\ude00 \xf0\x9f\x98\x80 "
        "\xe2\x82\xac\"}],\"temperature\":1.25e-1,\"max_tokens\":1e3}",
        "{\"user_id\":\"x\",\"tags\":[\"\\u0041\",\"b\\\"c\",\"\"],"
        "\"meta\":{\"v\":1,\"k\":[\"a\"]},\"messages\":[],"
        "\"temperature\":-12345678901234567890.5e-3}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
        "\"meta\":{\"k\":[\"\\u0061\"],\"v\":10e-1},\"created\":"
        "\"2024-02-29t23:59:60z\",\"stream\":false,\"model\":null}",
        "{\"a\":1 \"b\":2}",
        "{\"model\":\"small\" 123456}",
        "{\"model\":\"small\",\"tags\":[\"a\" \"b\"]}",
        "{\"messages\":[{\"role\":\"us\\u00zz\"}]}",
        "{\"temperature\":1.5e}",
        "{\"temperature\":-}",
        "{\"x\":[1,2,3] , }",
        "{\"x\":[1,2,3]} trailing",
        "{\"x\":[1,2,3]}   \"trailing\"",
        "{\"x\":tru",
        "{\"x\":nul}",
        "{\"x\":\"\xe2\x82\"}",
        "{\"x\":\"\xed\xa0\x80\"}",
        "",
        "   ",
        "12",
        "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]",
        "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{}}}}}}}",
    };

    (void) state;

    s = compile_ok(request_schema);

    r = malloc(sizeof(result_t));
    assert_non_null(r);

    for (i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        run_all(s, docs[i], strlen(docs[i]), 8, r);
    }

    free(r);
    ig_schema_free(s);
}


static void
test_depth(void **state)
{
    result_t     *r;
    ig_schema_t  *s;

    (void) state;

    s = compile_ok("{\"items\":{\"items\":{\"type\":\"string\"}}}");

    r = malloc(sizeof(result_t));
    assert_non_null(r);

    run_all(s, "[[[1]]]", 7, 3, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    assert_string_equal(r->errs, "'/0/0' expected string, got array\n");

    run_all(s, "[[[[1]]]]", 9, 3, r);
    assert_int_equal(r->rc, IG_VALID_DEPTH);
    assert_string_equal(r->errs, "'' nesting deeper than 3 levels\n");

    run_all(s, "{\"a\":{\"b\":{\"c\":{}}}}", 20, 3, r);
    assert_int_equal(r->rc, IG_VALID_DEPTH);
    assert_string_equal(r->errs, "'' nesting deeper than 3 levels\n");

    run_all(s, "{\"a\":{\"b\":{\"c\":1}}}", 19, 3, r);
    assert_int_equal(r->rc, IG_VALID_OK);

    run_all(s, "[]", 2, 0, r);
    assert_int_equal(r->rc, IG_VALID_DEPTH);
    assert_string_equal(r->errs, "'' nesting deeper than 0 levels\n");

    run_all(s, "1", 1, 0, r);
    assert_int_equal(r->rc, IG_VALID_OK);

    /* a syntax error before the limit is reached stays a syntax error */
    run_all(s, "[[1,]", 5, 3, r);
    assert_int_equal(r->rc, IG_VALID_SYNTAX);

    /* and the depth error wins over what follows */
    run_all(s, "[[[[1]]]] x", 11, 3, r);
    assert_int_equal(r->rc, IG_VALID_DEPTH);

    free(r);
    ig_schema_free(s);
}


static void
test_members(void **state)
{
    static const char  *members_doc =
        "{\"model\":\"gpt\\u00e9\",\"n\":12.50,\"o\":{\"p\":1},"
        "\"q\":[1],\"s\":true,\"t\":false,\"u\":null,\"a\\\"b\":\"\","
        "\"e\\u0041\":-0}";

    result_t     *r;
    ig_schema_t  *s;

    (void) state;

    s = compile_ok("{\"properties\":{\"n\":{\"type\":\"string\"}}}");

    r = malloc(sizeof(result_t));
    assert_non_null(r);

    run_all(s, members_doc, strlen(members_doc), 8, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    assert_string_equal(r->members,
                        "model=gpt\xc3\xa9;n=12.50;s=true;t=false;u=null;"
                        "a\"b=;eA=-0;");
    assert_string_equal(r->errs, "'/n' expected string, got number\n");

    run_all(s, "[{\"a\":1}]", 9, 8, r);
    assert_string_equal(r->members, "");

    run_all(s, "\"x\"", 3, 8, r);
    assert_string_equal(r->members, "");

    free(r);
    ig_schema_free(s);
}


static void
test_truncation(void **state)
{
    int           i;
    char         *doc;
    size_t        n;
    result_t     *r;
    ig_schema_t  *s;

    (void) state;

    s = compile_ok("{\"items\":{\"type\":\"string\"},\"maxItems\":2}");

    r = malloc(sizeof(result_t));
    doc = malloc(4096);
    assert_non_null(r);
    assert_non_null(doc);

    /* 31 item errors + maxItems = 32: not truncated */
    n = (size_t) sprintf(doc, "[");

    for (i = 0; i < 31; i++) {
        n += (size_t) sprintf(doc + n, "%s%d", i ? "," : "", i);
    }

    strcpy(doc + n, "]");

    run_all(s, doc, strlen(doc), 8, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    assert_int_equal(r->truncated, 0);
    assert_non_null(strstr(r->errs, "'/30' expected string"));
    assert_non_null(strstr(r->errs, "must have at most 2 items, got 31"));

    /* 100 errors: 32 kept */
    n = (size_t) sprintf(doc, "[");

    for (i = 0; i < 100; i++) {
        n += (size_t) sprintf(doc + n, "%s%d", i ? "," : "", i);
    }

    strcpy(doc + n, ",\"x\",[1,2]]");

    run_all(s, doc, strlen(doc), 8, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    assert_int_equal(r->truncated, 1);
    assert_non_null(strstr(r->errs, "'/31' expected string"));
    assert_null(strstr(r->errs, "'/32'"));
    assert_null(strstr(r->errs, "maxItems"));

    /* and a syntax error after that still reports just the syntax */
    strcpy(doc + n, ",]");
    run_all(s, doc, strlen(doc), 8, r);
    assert_int_equal(r->rc, IG_VALID_SYNTAX);
    assert_int_equal(r->truncated, 0);

    free(doc);
    free(r);
    ig_schema_free(s);
}


static void
test_long_pointer(void **state)
{
    char         *doc;
    size_t        i;
    result_t     *r;
    ig_schema_t  *s;

    (void) state;

    s = compile_ok("{\"additionalProperties\":{\"type\":\"string\"}}");

    r = malloc(sizeof(result_t));
    doc = malloc(6000);
    assert_non_null(r);
    assert_non_null(doc);

    doc[0] = '{';
    doc[1] = '"';

    for (i = 0; i < 5000; i++) {
        doc[2 + i] = (i % 7 == 0) ? '/' : 'k';
    }

    strcpy(doc + 5002, "\":1}");

    run_split(s, doc, strlen(doc), SPLIT_WHOLE, 0, 8, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);

    /* "'" + 1024 pointer bytes + "..." + "' " */
    assert_int_equal(strcspn(r->errs + 1, "'"), 1024 + 3);
    assert_memory_equal(r->errs, "'/~1kkkkkk~1kk", 14);
    assert_non_null(strstr(r->errs, "...' expected string, got number"));

    run_split(s, doc, strlen(doc), SPLIT_RANDOM, 7, 8, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);

    free(doc);
    free(r);
    ig_schema_free(s);
}


static void
test_nomem(void **state)
{
    int                 trunc;
    size_t              n;
    ig_test_alloc_t     cnt;
    ig_schema_t        *s;
    ig_validator_t     *v;
    yajl_alloc_funcs    af;
    const ig_verror_t  *errs;

    (void) state;

    s = compile_ok("{\"properties\":{\"a\":{\"type\":\"string\"}}}");

    ig_test_alloc_init(&cnt, &af);

    /* create fails cleanly */
    cnt.fail = 1;
    v = ig_validator_create(s, &af, 8, NULL, NULL);
    assert_null(v);
    assert_int_equal(cnt.live, 0);
    cnt.fail = 0;

    /* an error record cannot be allocated */
    v = ig_validator_create(s, &af, 8, NULL, NULL);
    assert_non_null(v);
    assert_int_equal(ig_validator_feed(v, (const unsigned char *) "{\"a\":",
                                       5),
                     IG_VALID_OK);

    cnt.fail = 1;
    assert_int_equal(ig_validator_feed(v, (const unsigned char *) "1}", 2),
                     IG_VALID_NOMEM);
    assert_int_equal(ig_validator_finish(v), IG_VALID_NOMEM);

    n = ig_validator_errors(v, &errs, &trunc);
    assert_int_equal(n, 1);
    assert_string_equal(errs[0].pointer, "");
    assert_string_equal(errs[0].detail, "out of memory");
    cnt.fail = 0;

    ig_validator_destroy(v);
    assert_int_equal(cnt.live, 0);

    ig_schema_free(s);
}


/* the default allocator (af NULL) and a schema without patterns */

static void
test_default_alloc(void **state)
{
    ig_schema_t     *s;
    ig_validator_t  *v;

    (void) state;

    s = compile_ok(request_schema);

    v = ig_validator_create(s, NULL, 16, NULL, NULL);
    assert_non_null(v);
    assert_int_equal(ig_validator_feed(v, (const unsigned char *) "{}", 2),
                     IG_VALID_OK);
    assert_int_equal(ig_validator_finish(v), IG_VALID_INVALID);
    ig_validator_destroy(v);

    ig_validator_destroy(NULL);
    assert_null(ig_validator_create(NULL, NULL, 16, NULL, NULL));

    ig_schema_free(s);
}


/*
 * Duplicate member names (I-JSON, RFC 7493 section 2.3): at any depth,
 * compared byte for byte after unescaping, each named by its pointer.
 */

static void
test_duplicates(void **state)
{
    (void) state;

    BAD("{}", "{\"a\":1,\"a\":2}",
        "'/a' duplicate member name \"a\"\n");

    /* the same name escaped, and the escape split anywhere by run_all */
    BAD("{}", "{\"a\":1,\"\\u0061\":2}",
        "'/a' duplicate member name \"a\"\n");
    BAD("{}", "{\"\\u00e9t\\u00E9\":1,\"\xc3\xa9t\xc3\xa9\":2}",
        "'/\xc3\xa9t\xc3\xa9' duplicate member name "
        "\"\xc3\xa9t\xc3\xa9\"\n");

    /* names differing in case, or in one byte, are distinct */
    OK("{}", "{\"user_id\":\"u777\",\"USER_ID\":\"u1\",\"User_Id\":1}");
    OK("{}", "{\"ab\":1,\"ac\":2,\"a\":3,\"abc\":4,\"\":5,\"a\\u0000\":6}");
    BAD("{}", "{\"\":1,\"\":2}", "'/' duplicate member name \"\"\n");
    BAD("{}", "{\"a\\u0000b\":1,\"a\\u0000b\":2}",
        "'/a' duplicate member name \"a\\u0000b\"\n");

    /* every depth, every container; the pointer is built even where no
     * schema applies */
    BAD("{}", "{\"x\":[{\"k\":1},{\"k\":1,\"k\":2}]}",
        "'/x/1/k' duplicate member name \"k\"\n");
    BAD("{}", "[[1],[2,{\"a/b\":{\"~\":1,\"~\":2}}]]",
        "'/1/1/a~1b/~0' duplicate member name \"~\"\n");
    BAD("{}", "{\"a\":{\"b\":1,\"c\":[{}]},\"a\":3}",
        "'/a' duplicate member name \"a\"\n");
    BAD("{}", "{\"a\":1,\"b\":{},\"a\":{\"c\":1,\"c\":2}}",
        "'/a' duplicate member name \"a\"\n"
        "'/a/c' duplicate member name \"c\"\n");
    OK("{}", "{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":1},\"c\":[{\"a\":1},"
       "{\"a\":1}]}");

    /* each repetition is an error; the value is still validated */
    BAD("{}", "{\"a\":1,\"a\":2,\"a\":3}",
        "'/a' duplicate member name \"a\"\n"
        "'/a' duplicate member name \"a\"\n");
    BAD("{\"properties\":{\"a\":{\"type\":\"string\"}}}",
        "{\"a\":1,\"a\":\"x\",\"b\":true}",
        "'/a' expected string, got number\n"
        "'/a' duplicate member name \"a\"\n");
    BAD("{\"required\":[\"a\"],\"additionalProperties\":false}",
        "{\"b\":1,\"b\":2}",
        "'/b' property is not allowed\n"
        "'/b' duplicate member name \"b\"\n"
        "'/b' property is not allowed\n"
        "'' required property \"a\" is missing\n");

    /* the pointer of a schema-tracked array item */
    BAD("{\"properties\":{\"items\":{\"items\":{\"properties\":"
        "{\"id\":{\"type\":\"integer\"}}}}}}",
        "{\"items\":[{\"id\":1},{\"id\":2,\"v\":\"b\",\"id\":\"3\"},"
        "{\"id\":4}]}",
        "'/items/1/id' duplicate member name \"id\"\n"
        "'/items/1/id' expected integer, got string\n");

    /* a duplicate inside an enum/const instance: refused, not matched */
    BAD("{\"const\":{\"a\":1}}", "{\"a\":1,\"a\":1}",
        "'/a' duplicate member name \"a\"\n"
        "'' must equal the const value\n");

    /* a long name is cut in the detail */
    BAD("{}",
        "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaa\":1,\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaa\":2}",
        "'/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaa' duplicate member name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\"\n");
}


/* around the switch from a list to the hash set, and back */

static void
test_duplicates_sizes(void **state)
{
    int           n, i, d;
    char          doc[1024], expect[128];
    size_t        len;
    result_t     *r;
    ig_schema_t  *s;

    (void) state;

    s = compile_ok("{}");

    r = malloc(sizeof(result_t));
    assert_non_null(r);

    for (n = 1; n <= 24; n++) {
        len = (size_t) sprintf(doc, "{");

        for (i = 0; i < n; i++) {
            len += (size_t) sprintf(doc + len, "%s\"k%d\":%d", i ? "," : "",
                                    i, i);
        }

        strcpy(doc + len, "}");
        run_all(s, doc, strlen(doc), DEPTH, r);
        assert_int_equal(r->rc, IG_VALID_OK);

        for (d = 0; d < n; d++) {
            sprintf(doc + len, ",\"k%d\":0}", d);
            sprintf(expect, "'/k%d' duplicate member name \"k%d\"\n", d, d);

            run_all(s, doc, strlen(doc), DEPTH, r);
            assert_int_equal(r->rc, IG_VALID_INVALID);
            assert_string_equal(r->errs, expect);
        }
    }

    /*
     * Nested objects past the switch share the set: the inner names
     * equal the outer ones without being duplicates, and once the inner
     * object ends its names are gone while the outer ones stay.
     */

    len = (size_t) sprintf(doc, "{");

    for (i = 0; i < 20; i++) {
        len += (size_t) sprintf(doc + len, "\"o%d\":%d,", i, i);
    }

    len += (size_t) sprintf(doc + len, "\"in\":{");

    for (i = 0; i < 20; i++) {
        len += (size_t) sprintf(doc + len, "\"o%d\":1,\"i%d\":2,", i, i);
    }

    len += (size_t) sprintf(doc + len, "\"deeper\":[{");

    for (i = 0; i < 12; i++) {
        len += (size_t) sprintf(doc + len, "\"i%d\":3,", i);
    }

    len += (size_t) sprintf(doc + len, "\"i3\":4}]},\"i5\":1,\"o5\":2}");

    run_all(s, doc, len, DEPTH, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    assert_string_equal(r->errs,
                        "'/in/deeper/0/i3' duplicate member name \"i3\"\n"
                        "'/o5' duplicate member name \"o5\"\n");

    free(r);
    ig_schema_free(s);
}


/* an allocator that keeps the peak of the bytes in use */

typedef struct {
    size_t  live;
    size_t  peak;
} peak_t;


static void *
p_malloc(void *ctx, size_t size)
{
    peak_t  *c = ctx;
    size_t  *p;

    p = malloc(size + 16);
    if (p == NULL) {
        return NULL;
    }

    *p = size;
    c->live += size;

    if (c->live > c->peak) {
        c->peak = c->live;
    }

    return (unsigned char *) p + 16;
}


static void
p_free(void *ctx, void *ptr)
{
    peak_t  *c = ctx;
    size_t  *p;

    if (ptr != NULL) {
        p = (size_t *) (void *) ((unsigned char *) ptr - 16);
        c->live -= *p;
        free(p);
    }
}


static void *
p_realloc(void *ctx, void *ptr, size_t size)
{
    void    *n;
    size_t   old;

    n = p_malloc(ctx, size);

    if (n != NULL && ptr != NULL) {
        old = *(size_t *) (void *) ((unsigned char *) ptr - 16);
        memcpy(n, ptr, old < size ? old : size);
        p_free(ctx, ptr);
    }

    return n;
}


/*
 * Hostile sizes: 1 MiB of distinct members in one object, a duplicate
 * at the end of a large object, many levels of many members, and many
 * small objects: linear time, and no allocation per object.
 */

static void
test_duplicates_many(void **state)
{
    int              trunc;
    char            *doc;
    size_t           len, i, cap, n;
    clock_t          t0;
    double           secs;
    peak_t           peak;
    result_t        *r;
    ig_test_alloc_t  cnt;
    ig_schema_t     *s, *any;
    ig_validator_t  *v;
    yajl_alloc_funcs  af;

    (void) state;

    s = compile_ok("{\"additionalProperties\":{\"type\":\"integer\"}}");
    any = compile_ok("{}");

    cap = 4 * 1024 * 1024;
    doc = malloc(cap);
    r = malloc(sizeof(result_t));
    assert_non_null(doc);
    assert_non_null(r);

    /* 1 MiB: about 110,000 distinct names, then one repeated */

    t0 = clock();

    len = (size_t) sprintf(doc, "{");

    for (i = 0; len < 1024 * 1024; i++) {
        len += (size_t) sprintf(doc + len, "\"%zx\":0,", i);
    }

    n = i;
    len += (size_t) sprintf(doc + len, "\"%zx\":1}", n / 2);

    run_split(s, doc, len, SPLIT_WHOLE, 0, DEPTH, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    snprintf(doc, 64, "'/%zx' duplicate member name \"%zx\"\n", n / 2,
             n / 2);
    assert_string_equal(r->errs, doc);

    /* without the repetition, split at random */

    len = (size_t) sprintf(doc, "{");

    for (i = 0; i < n; i++) {
        len += (size_t) sprintf(doc + len, "%s\"%zx\":0", i ? "," : "", i);
    }

    len += (size_t) sprintf(doc + len, "}");

    run_split(s, doc, len, SPLIT_RANDOM, 3, DEPTH, r);
    assert_int_equal(r->rc, IG_VALID_OK);

    /* the memory it takes: a few times the body, not more */

    memset(&peak, 0, sizeof(peak));
    af.malloc = p_malloc;
    af.realloc = p_realloc;
    af.free = p_free;
    af.ctx = &peak;

    v = ig_validator_create(s, &af, DEPTH, NULL, NULL);
    assert_non_null(v);
    assert_int_equal(ig_validator_feed(v, (unsigned char *) doc, len),
                     IG_VALID_OK);
    assert_int_equal(ig_validator_finish(v), IG_VALID_OK);
    ig_validator_destroy(v);

    print_message("duplicates: %zu names, %zu body bytes, peak %zu bytes\n",
                  n, len, peak.peak);
    assert_int_equal(peak.live, 0);
    assert_true(peak.peak < 6 * len);

    /* 60 levels of 2,000 members each, names the same at every level */

    len = 0;

    for (i = 0; i < 60; i++) {
        len += (size_t) sprintf(doc + len, "{");

        for (n = 0; n < 2000; n++) {
            len += (size_t) sprintf(doc + len, "\"%zx\":0,", n);
        }

        len += (size_t) sprintf(doc + len, "\"next\":");
    }

    len += (size_t) sprintf(doc + len, "0");

    for (i = 0; i < 60; i++) {
        len += (size_t) sprintf(doc + len, "}");
    }

    run_split(any, doc, len, SPLIT_WHOLE, 0, DEPTH, r);
    assert_int_equal(r->rc, IG_VALID_OK);

    /* and a repetition at the innermost level, then at the outermost */
    len -= 60;
    len += (size_t) sprintf(doc + len, ",\"7cf\":1}");

    for (i = 1; i < 59; i++) {
        len += (size_t) sprintf(doc + len, "}");
    }

    len += (size_t) sprintf(doc + len, ",\"next\":1}");

    run_split(any, doc, len, SPLIT_RANDOM, 5, DEPTH, r);
    assert_int_equal(r->rc, IG_VALID_INVALID);
    assert_non_null(strstr(r->errs, "/next/next/7cf' duplicate member name "
                                    "\"7cf\"\n'/next' duplicate member "
                                    "name \"next\"\n"));

    secs = (double) (clock() - t0) / CLOCKS_PER_SEC;
    print_message("duplicates: large documents in %.3f s\n", secs);
    assert_true(secs < 20.0);

    /* 100,000 small objects and a large one: a handful of allocations */

    len = (size_t) sprintf(doc, "[");

    for (i = 0; i < 100000; i++) {
        len += (size_t) sprintf(doc + len, "{\"a\":1,\"b\":%zu},", i);
    }

    len += (size_t) sprintf(doc + len, "{");

    for (i = 0; i < 3000; i++) {
        len += (size_t) sprintf(doc + len, "%s\"%zx\":0", i ? "," : "", i);
    }

    len += (size_t) sprintf(doc + len, "},{\"z\":1,\"z\":2}]");

    ig_test_alloc_init(&cnt, &af);

    v = ig_validator_create(s, &af, DEPTH, NULL, NULL);
    assert_non_null(v);

    for (i = 0; i < len; i += 4096) {
        assert_int_equal(ig_validator_feed(v, (unsigned char *) doc + i,
                                           len - i < 4096 ? len - i : 4096),
                         IG_VALID_OK);
    }

    assert_int_equal(ig_validator_finish(v), IG_VALID_INVALID);
    assert_int_equal(ig_validator_errors(v, NULL, &trunc), 1);
    print_message("duplicates: %ld allocator calls\n", cnt.calls);
    assert_true(cnt.calls < 40);

    ig_validator_destroy(v);
    assert_int_equal(cnt.live, 0);

    free(r);
    free(doc);
    ig_schema_free(s);
    ig_schema_free(any);
}


/*
 * The JSON-Schema-Test-Suite: every group whose schema uses only
 * supported keywords must pass; the rest are skipped and counted.
 */

/*
 * yajl_tree keeps strings NUL-terminated and so loses "\u0000" (the
 * suite tests it), and re-serializing would rewrite number literals;
 * the schemas and data are therefore taken verbatim from the file, in
 * file order, by this small scanner, while yajl_tree gives the
 * structure (descriptions, "valid").
 */

typedef struct {
    const char  *p;
    const char  *end;
} scan_t;

typedef struct {
    const char  *p;
    size_t       len;
} span_t;


static void
scan_ws(scan_t *s)
{
    while (s->p < s->end
           && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n'
               || *s->p == '\r'))
    {
        s->p++;
    }
}


static int
scan_char(scan_t *s, char c)
{
    scan_ws(s);

    if (s->p < s->end && *s->p == c) {
        s->p++;
        return 1;
    }

    return 0;
}


static int
scan_string(scan_t *s, span_t *out)
{
    scan_ws(s);

    if (s->p >= s->end || *s->p != '"') {
        return -1;
    }

    out->p = ++s->p;

    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\') {
            s->p++;
        }

        s->p++;
    }

    if (s->p >= s->end) {
        return -1;
    }

    out->len = (size_t) (s->p - out->p);
    s->p++;

    return 0;
}


static int
scan_value(scan_t *s, span_t *out)
{
    int     depth;
    span_t  str;

    scan_ws(s);

    out->p = s->p;

    if (s->p >= s->end) {
        return -1;
    }

    if (*s->p == '"') {
        if (scan_string(s, &str) != 0) {
            return -1;
        }

    } else if (*s->p == '{' || *s->p == '[') {
        depth = 0;

        do {
            if (*s->p == '"') {
                if (scan_string(s, &str) != 0) {
                    return -1;
                }

                continue;
            }

            if (*s->p == '{' || *s->p == '[') {
                depth++;

            } else if (*s->p == '}' || *s->p == ']') {
                depth--;
            }

            s->p++;

        } while (depth > 0 && s->p < s->end);

        if (depth != 0) {
            return -1;
        }

    } else {
        while (s->p < s->end && strchr(",}] \t\r\n", *s->p) == NULL) {
            s->p++;
        }
    }

    out->len = (size_t) (s->p - out->p);

    return 0;
}


static int
span_is(const span_t *sp, const char *lit)
{
    return sp->len == strlen(lit) && memcmp(sp->p, lit, sp->len) == 0;
}


/* schemas[g] per group; data[] for every test, in order */

static int
scan_suite(const char *text, span_t *schemas, size_t *ngroups,
    span_t *data, size_t *ndata, size_t max)
{
    span_t  key, val;
    scan_t  s;

    s.p = text;
    s.end = text + strlen(text);
    *ngroups = 0;
    *ndata = 0;

    if (!scan_char(&s, '[')) {
        return -1;
    }

    while (!scan_char(&s, ']')) {
        if (*ngroups == max || !scan_char(&s, '{')) {
            return -1;
        }

        schemas[*ngroups].p = NULL;

        while (!scan_char(&s, '}')) {
            if (scan_string(&s, &key) != 0 || !scan_char(&s, ':')) {
                return -1;
            }

            if (span_is(&key, "tests")) {
                if (!scan_char(&s, '[')) {
                    return -1;
                }

                while (!scan_char(&s, ']')) {
                    if (!scan_char(&s, '{')) {
                        return -1;
                    }

                    while (!scan_char(&s, '}')) {
                        if (scan_string(&s, &key) != 0
                            || !scan_char(&s, ':')
                            || scan_value(&s, &val) != 0)
                        {
                            return -1;
                        }

                        if (span_is(&key, "data")) {
                            if (*ndata == max) {
                                return -1;
                            }

                            data[(*ndata)++] = val;
                        }

                        (void) scan_char(&s, ',');
                    }

                    (void) scan_char(&s, ',');
                }

            } else {
                if (scan_value(&s, &val) != 0) {
                    return -1;
                }

                if (span_is(&key, "schema")) {
                    schemas[*ngroups] = val;
                }
            }

            (void) scan_char(&s, ',');
        }

        if (schemas[*ngroups].p == NULL) {
            return -1;
        }

        (*ngroups)++;
        (void) scan_char(&s, ',');
    }

    return 0;
}


static char *
span_dup(const span_t *sp)
{
    char  *p;

    p = malloc(sp->len + 1);
    assert_non_null(p);
    memcpy(p, sp->p, sp->len);
    p[sp->len] = '\0';

    return p;
}


static char *
read_file(const char *path)
{
    long   n;
    char  *buf;
    FILE  *f;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc((size_t) n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t) n, f), (size_t) n);
    buf[n] = '\0';

    fclose(f);

    return buf;
}


static void
run_suite_file(const char *path, size_t *run, size_t *skipped,
    size_t *failed)
{
    int           expect;
    char         *text, *stext, *dtext, err[512];
    size_t        g, t, slen, dlen, ngroups, ndata, di;
    span_t       *schemas, *datas;
    yajl_val      doc, group, schema, tests, test, data, valid, desc, tdesc;
    result_t     *r, *r2;
    ig_schema_t  *s;

    const char  *p_schema[] = { "schema", NULL };
    const char  *p_tests[] = { "tests", NULL };
    const char  *p_data[] = { "data", NULL };
    const char  *p_valid[] = { "valid", NULL };
    const char  *p_desc[] = { "description", NULL };

    text = read_file(path);
    if (text == NULL) {
        print_error("cannot read %s\n", path);
        (*failed)++;
        return;
    }

    doc = yajl_tree_parse(text, err, sizeof(err));
    if (doc == NULL || !YAJL_IS_ARRAY(doc)) {
        print_error("%s: %s\n", path, err);
        (*failed)++;
        free(text);
        return;
    }

    schemas = malloc(1024 * sizeof(span_t));
    datas = malloc(1024 * sizeof(span_t));
    assert_non_null(schemas);
    assert_non_null(datas);

    if (scan_suite(text, schemas, &ngroups, datas, &ndata, 1024) != 0
        || ngroups != doc->u.array.len)
    {
        print_error("%s: cannot scan\n", path);
        (*failed)++;
        ngroups = 0;
    }

    r = malloc(sizeof(result_t));
    r2 = malloc(sizeof(result_t));
    assert_non_null(r);
    assert_non_null(r2);

    di = 0;

    for (g = 0; g < ngroups; g++) {
        group = doc->u.array.values[g];
        schema = yajl_tree_get(group, p_schema, yajl_t_any);
        tests = yajl_tree_get(group, p_tests, yajl_t_array);
        desc = yajl_tree_get(group, p_desc, yajl_t_string);

        assert_non_null(schema);
        assert_non_null(tests);

        stext = span_dup(&schemas[g]);
        slen = schemas[g].len;

        s = ig_schema_compile((const unsigned char *) stext, slen, err,
                              sizeof(err));

        if (s == NULL) {
            di += tests->u.array.len;

            if (strstr(err, "unknown keyword") != NULL) {
                *skipped += tests->u.array.len;

            } else {
                print_error("%s: \"%s\": schema does not compile: %s\n",
                            path, desc ? desc->u.string : "?", err);
                (*failed)++;
            }

            free(stext);
            continue;
        }

        for (t = 0; t < tests->u.array.len; t++) {
            test = tests->u.array.values[t];
            data = yajl_tree_get(test, p_data, yajl_t_any);
            valid = yajl_tree_get(test, p_valid, yajl_t_any);
            tdesc = yajl_tree_get(test, p_desc, yajl_t_string);

            assert_non_null(data);
            assert_non_null(valid);

            expect = YAJL_IS_TRUE(valid) ? IG_VALID_OK : IG_VALID_INVALID;

            assert_true(di < ndata);
            dtext = span_dup(&datas[di]);
            dlen = datas[di].len;
            di++;

            run_split(s, dtext, dlen, SPLIT_WHOLE, 0, DEPTH, r);
            run_split(s, dtext, dlen, SPLIT_BYTES, 0, DEPTH, r2);

            (*run)++;

            if (r->rc != expect || r2->rc != expect) {
                print_error("%s: \"%s\" / \"%s\": schema %s, data %s: "
                            "expected %s, got %s (split: %s)\n%s",
                            path, desc ? desc->u.string : "?",
                            tdesc ? tdesc->u.string : "?", stext, dtext,
                            rc_name(expect), rc_name(r->rc),
                            rc_name(r2->rc), r->errs);
                (*failed)++;
            }

            if ((r->rc == IG_VALID_INVALID) != (r->errs[0] != '\0')) {
                print_error("%s: errors do not match the code\n", path);
                (*failed)++;
            }

            free(dtext);
        }

        ig_schema_free(s);
        free(stext);
    }

    assert_int_equal(di, ngroups ? ndata : 0);

    free(schemas);
    free(datas);
    free(r);
    free(r2);
    yajl_tree_free(doc);
    free(text);
}


static void
test_conformance(void **state)
{
    char            path[4096];
    size_t          run, skipped, failed, files, k;
    DIR            *d;
    struct dirent  *e;
    const char     *dir, *sub;

    static const char  *subdirs[] = { "", "optional/format/" };

    (void) state;

    dir = getenv("IG_CONFORMANCE_DIR");
    if (dir == NULL || *dir == '\0') {
        dir = "tests/conformance/json-schema-test-suite";
    }

    run = 0;
    skipped = 0;
    failed = 0;
    files = 0;

    for (k = 0; k < sizeof(subdirs) / sizeof(subdirs[0]); k++) {
        sub = subdirs[k];
        snprintf(path, sizeof(path), "%s/%s", dir, sub);

        d = opendir(path);
        if (d == NULL) {
            print_error("cannot open %s (set IG_CONFORMANCE_DIR)\n", path);
            fail();
        }

        while ((e = readdir(d)) != NULL) {
            size_t  n = strlen(e->d_name);

            if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0) {
                continue;
            }

            snprintf(path, sizeof(path), "%s/%s%s", dir, sub, e->d_name);
            run_suite_file(path, &run, &skipped, &failed);
            files++;
        }

        closedir(d);
    }

    print_message("conformance: %zu files, %zu cases run, %zu skipped\n",
                  files, run, skipped);

    assert_true(files >= 20);
    assert_true(run > 400);
    assert_int_equal(failed, 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_compile_errors),
        cmocka_unit_test(test_compile_ok),
        cmocka_unit_test(test_type),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_enum_const),
        cmocka_unit_test(test_enum_nested),
        cmocka_unit_test(test_enum_big_object),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_boolean_schemas),
        cmocka_unit_test(test_request),
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_top_scalars),
        cmocka_unit_test(test_split_invariance),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_long_pointer),
        cmocka_unit_test(test_nomem),
        cmocka_unit_test(test_default_alloc),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_duplicates_sizes),
        cmocka_unit_test(test_duplicates_many),
        cmocka_unit_test(test_conformance),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
