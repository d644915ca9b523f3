/*
 * Copyright (C) infergate authors
 *
 * ig_jsonlex: valid and invalid documents with their events or error
 * reason and offset, each checked whole, byte by byte, split in two at
 * every offset and in three at every pair of offsets (short documents);
 * UTF-8 edge cases, escapes and surrogates, numbers, literals, deep
 * nesting, the zero-copy path, the scratch buffer, cancellation and
 * allocation failure.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ig_jsonlex.h"
#include "../ig_test_alloc.h"


#define EV_MAX  65536


/* events as text: { } [ ] t f n #number s"string" k"key", spaces
 * between; bytes outside printable ASCII as \xHH */

typedef struct {
    char                  ev[EV_MAX];
    size_t                len;
    int                   stop_at;      /* cancel at this event, or -1 */
    int                   count;
    const unsigned char  *buf;          /* the piece being fed */
    size_t                buf_len;
    int                   zero_copy;    /* payloads inside buf */
    int                   copied;       /* payloads elsewhere */
} rec_t;


typedef struct {
    int                   rc;
    const char           *reason;
    size_t                offset;
    rec_t                 rec;
} run_t;


static void
rec_add(rec_t *r, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    if (r->len) {
        assert_true(r->len + 1 < EV_MAX);
        r->ev[r->len++] = ' ';
    }

    va_start(ap, fmt);
    n = vsnprintf(r->ev + r->len, EV_MAX - r->len, fmt, ap);
    va_end(ap);

    assert_true(n >= 0 && r->len + (size_t) n < EV_MAX);
    r->len += (size_t) n;
}


static void
rec_bytes(rec_t *r, char type, const unsigned char *s, size_t len)
{
    size_t  i;
    char    one[8];

    rec_add(r, "%c\"", type);

    for (i = 0; i < len; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\' && s[i] != '"') {
            one[0] = (char) s[i];
            one[1] = '\0';

        } else {
            snprintf(one, sizeof(one), "\\x%02x", s[i]);
        }

        assert_true(r->len + strlen(one) + 2 < EV_MAX);
        memcpy(r->ev + r->len, one, strlen(one));
        r->len += strlen(one);
    }

    r->ev[r->len++] = '"';
    r->ev[r->len] = '\0';

    if (r->buf != NULL && s >= r->buf && s + len <= r->buf + r->buf_len) {
        r->zero_copy++;

    } else {
        r->copied++;
    }
}


static int
rec_go(rec_t *r)
{
    return r->count++ != r->stop_at;
}


static int
cb_null(void *ctx)
{
    rec_add(ctx, "n");
    return rec_go(ctx);
}


static int
cb_boolean(void *ctx, int b)
{
    rec_add(ctx, b ? "t" : "f");
    return rec_go(ctx);
}


static int
cb_number(void *ctx, const unsigned char *s, size_t len)
{
    rec_add(ctx, "#%.*s", (int) len, (const char *) s);
    return rec_go(ctx);
}


static int
cb_string(void *ctx, const unsigned char *s, size_t len)
{
    rec_bytes(ctx, 's', s, len);
    return rec_go(ctx);
}


static int
cb_start_map(void *ctx)
{
    rec_add(ctx, "{");
    return rec_go(ctx);
}


static int
cb_map_key(void *ctx, const unsigned char *s, size_t len)
{
    rec_bytes(ctx, 'k', s, len);
    return rec_go(ctx);
}


static int
cb_end_map(void *ctx)
{
    rec_add(ctx, "}");
    return rec_go(ctx);
}


static int
cb_start_array(void *ctx)
{
    rec_add(ctx, "[");
    return rec_go(ctx);
}


static int
cb_end_array(void *ctx)
{
    rec_add(ctx, "]");
    return rec_go(ctx);
}


static const ig_jsonlex_callbacks_t  callbacks = {
    cb_null, cb_boolean, cb_number, cb_string,
    cb_start_map, cb_map_key, cb_end_map, cb_start_array, cb_end_array
};


/* feeds doc cut at the offsets in cuts[0..ncuts) (ascending) */

static void
run_cuts(const char *doc, size_t len, const size_t *cuts, size_t ncuts,
    unsigned max_depth, run_t *out)
{
    size_t              i, from, to;
    ig_test_alloc_t     cnt;
    ig_jsonlex_t       *lx;
    ig_jsonlex_rc_e     rc;
    yajl_alloc_funcs    af;
    unsigned char      *copy;

    ig_test_alloc_init(&cnt, &af);

    out->rec.len = 0;
    out->rec.ev[0] = '\0';
    out->rec.count = 0;
    out->rec.stop_at = -1;
    out->rec.zero_copy = 0;
    out->rec.copied = 0;
    out->reason = NULL;
    out->offset = 0;

    lx = ig_jsonlex_create(max_depth, &callbacks, &out->rec, &af);
    assert_non_null(lx);

    rc = IG_JSONLEX_OK;
    from = 0;

    for (i = 0; i <= ncuts && rc == IG_JSONLEX_OK; i++) {
        to = (i < ncuts) ? cuts[i] : len;

        /* a private copy of each piece, freed after the call, so ASan
         * catches any pointer kept into it */
        copy = malloc(to - from + 1);
        assert_non_null(copy);
        memcpy(copy, doc + from, to - from);

        out->rec.buf = copy;
        out->rec.buf_len = to - from;
        rc = ig_jsonlex_feed(lx, copy, to - from);
        out->rec.buf = NULL;

        free(copy);
        from = to;
    }

    if (rc == IG_JSONLEX_OK) {
        rc = ig_jsonlex_finish(lx);
    }

    out->rc = rc;

    if (rc == IG_JSONLEX_ERROR) {
        out->reason = ig_jsonlex_error(lx, &out->offset);
        assert_non_null(out->reason);

    } else {
        assert_null(ig_jsonlex_error(lx, NULL));
    }

    /* results stick */
    if (rc != IG_JSONLEX_OK) {
        assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "1", 1),
                         rc);
        assert_int_equal(ig_jsonlex_finish(lx), rc);
    }

    ig_jsonlex_destroy(lx);
    assert_int_equal(cnt.live, 0);
}


static void
assert_same(const run_t *a, const run_t *b, const char *doc, const char *how)
{
    if (a->rc != b->rc || a->offset != b->offset
        || (a->reason != b->reason
            && (a->reason == NULL || b->reason == NULL
                || strcmp(a->reason, b->reason) != 0))
        || strcmp(a->rec.ev, b->rec.ev) != 0)
    {
        print_error("split mismatch (%s) for %s\nwhole: %d %s at %zu: %s\n"
                    "split: %d %s at %zu: %s\n", how, doc, a->rc,
                    a->reason ? a->reason : "-", a->offset, a->rec.ev,
                    b->rc, b->reason ? b->reason : "-", b->offset,
                    b->rec.ev);
        fail();
    }
}


/* whole, byte by byte, every 2-split, every 3-split (short docs): all
 * must agree; the whole run is left in *whole */

static void
run_all(const char *doc, size_t len, unsigned max_depth, run_t *whole)
{
    size_t   i, j, *cuts;
    run_t   *r;

    r = malloc(sizeof(run_t));
    cuts = malloc((len + 1) * sizeof(size_t));
    assert_non_null(r);
    assert_non_null(cuts);

    run_cuts(doc, len, NULL, 0, max_depth, whole);

    for (i = 0; i + 1 < len; i++) {
        cuts[i] = i + 1;
    }

    run_cuts(doc, len, cuts, len ? len - 1 : 0, max_depth, r);
    assert_same(whole, r, doc, "bytes");

    for (i = 0; i <= len; i++) {
        cuts[0] = i;
        run_cuts(doc, len, cuts, 1, max_depth, r);
        assert_same(whole, r, doc, "two pieces");
    }

    if (len <= 64) {
        for (i = 1; i < len; i++) {
            for (j = i + 1; j < len; j++) {
                cuts[0] = i;
                cuts[1] = j;
                run_cuts(doc, len, cuts, 2, max_depth, r);
                assert_same(whole, r, doc, "three pieces");
            }
        }
    }

    free(cuts);
    free(r);
}


static void
expect_ok_n(const char *doc, size_t len, const char *events)
{
    run_t  *r;

    r = malloc(sizeof(run_t));
    assert_non_null(r);

    run_all(doc, len, 64, r);

    if (r->rc != IG_JSONLEX_OK || strcmp(r->rec.ev, events) != 0) {
        print_error("doc %s\nexpected OK: %s\ngot %d (%s at %zu): %s\n",
                    doc, events, r->rc, r->reason ? r->reason : "-",
                    r->offset, r->rec.ev);
        fail();
    }

    free(r);
}


static void
expect_err_n(const char *doc, size_t len, const char *reason, size_t offset)
{
    run_t  *r;

    r = malloc(sizeof(run_t));
    assert_non_null(r);

    run_all(doc, len, 64, r);

    if (r->rc != IG_JSONLEX_ERROR || strcmp(r->reason, reason) != 0
        || r->offset != offset)
    {
        print_error("doc %s\nexpected \"%s\" at %zu\ngot %d (%s at %zu): "
                    "%s\n", doc, reason, offset, r->rc,
                    r->reason ? r->reason : "-", r->offset, r->rec.ev);
        fail();
    }

    free(r);
}


#define OK(doc, events)  expect_ok_n(doc, sizeof(doc) - 1, events)
#define ERR(doc, reason, offset)                                             \
    expect_err_n(doc, sizeof(doc) - 1, reason, offset)


static void
test_structure(void **state)
{
    (void) state;

    OK("{}", "{ }");
    OK("[]", "[ ]");
    OK(" \t\r\n[ \t\r\n] \t\r\n", "[ ]");
    OK("{\"a\":1,\"b\":[true,false,null],\"c\":{}}",
       "{ k\"a\" #1 k\"b\" [ t f n ] k\"c\" { } }");
    OK("{ \"a\" : 1 , \"b\" : [ true , false , null ] , \"c\" : { } }",
       "{ k\"a\" #1 k\"b\" [ t f n ] k\"c\" { } }");
    OK("[[],[[]],{},{\"\":[{}]}]", "[ [ ] [ [ ] ] { } { k\"\" [ { } ] } ]");
    OK("[1,\"a\",{\"x\":null}]", "[ #1 s\"a\" { k\"x\" n } ]");
    OK("{\"a\":{\"b\":{\"c\":[]}}}", "{ k\"a\" { k\"b\" { k\"c\" [ ] } } }");
    OK("{\"a\":1,\"a\":2}", "{ k\"a\" #1 k\"a\" #2 }");

    /*
     * Repeated names are reported as they come (the validator refuses
     * them); an escaped name arrives as the same bytes as the raw one,
     * which is what its byte comparison relies on.
     */
    OK("{\"\\u0061\":1,\"a\":2}", "{ k\"a\" #1 k\"a\" #2 }");
    OK("{\"\\ud83d\\ude00\":1,\"\xf0\x9f\x98\x80\":2}",
       "{ k\"\\xf0\\x9f\\x98\\x80\" #1 k\"\\xf0\\x9f\\x98\\x80\" #2 }");
    OK("{\"\\u00e9\\/\":1,\"\xc3\xa9/\":2}",
       "{ k\"\\xc3\\xa9/\" #1 k\"\\xc3\\xa9/\" #2 }");

    /* top-level scalars */
    OK("\"x\"", "s\"x\"");
    OK(" \"x\" ", "s\"x\"");
    OK("1", "#1");
    OK(" -12.5e3 ", "#-12.5e3");
    OK("true", "t");
    OK("false", "f");
    OK("null", "n");
    OK("\"\"", "s\"\"");

    ERR("", "premature end of input", 0);
    ERR("   ", "premature end of input", 3);
    ERR("[", "premature end of input", 1);
    ERR("[1,2", "premature end of input", 4);
    ERR("{\"a\":1", "premature end of input", 6);
    ERR("{\"a\"", "premature end of input", 4);
    ERR("{\"a\":", "premature end of input", 5);
    ERR("\"abc", "premature end of input", 4);
    ERR("[\"a\\", "premature end of input", 4);
    ERR("[\"\\u12", "premature end of input", 6);
    ERR("tru", "premature end of input", 3);
    ERR("-", "premature end of input", 1);
    ERR("1.", "premature end of input", 2);
    ERR("1e+", "premature end of input", 3);

    ERR("]", "expected a value", 0);
    ERR("}", "expected a value", 0);
    ERR(",", "expected a value", 0);
    ERR("[,1]", "expected a value or ']'", 1);
    ERR("[1,]", "expected a value", 3);
    ERR("[1 2]", "expected ',' or ']'", 3);
    ERR("[1}", "expected ',' or ']'", 2);
    ERR("[1:", "expected ',' or ']'", 2);
    ERR("{1:2}", "expected a string key or '}'", 1);
    ERR("{,}", "expected a string key or '}'", 1);
    ERR("{\"a\":1,}", "expected a string key", 7);
    ERR("{\"a\":1,,}", "expected a string key", 7);
    ERR("{\"a\" 1}", "expected ':'", 5);
    ERR("{\"a\"}", "expected ':'", 4);
    ERR("{\"a\":}", "expected a value", 5);
    ERR("{\"a\":1]", "expected ',' or '}'", 6);
    ERR("{\"a\":1 \"b\":2}", "expected ',' or '}'", 7);
    ERR("[{]", "expected a string key or '}'", 2);
    ERR("[}", "expected a value or ']'", 1);
    ERR("{]", "expected a string key or '}'", 1);
    ERR("{} x", "trailing garbage", 3);
    ERR("{}{}", "trailing garbage", 2);
    ERR("1 2", "trailing garbage", 2);
    ERR("\"a\" \"b\"", "trailing garbage", 4);
    ERR("\"a\" \"b", "trailing garbage", 4);
    ERR("[] ]", "trailing garbage", 3);
    ERR("// c\n{}", "expected a value", 0);
    ERR("/* c */ {}", "expected a value", 0);
    ERR("\xef\xbb\xbf{}", "expected a value", 0);
    ERR("{'a':1}", "expected a string key or '}'", 1);
    ERR("[x]", "expected a value or ']'", 1);

    /* RFC 8259 whitespace only (yajl also skips \f and \v) */
    ERR("\f[]", "expected a value", 0);
    ERR("[\v]", "expected a value or ']'", 1);
    ERR("[1\f]", "expected ',' or ']'", 2);
    ERR("[]\f", "trailing garbage", 2);
    ERR("{\"a\"\f:1}", "expected ':'", 4);
}


static void
test_literals(void **state)
{
    (void) state;

    OK("[true,false,null]", "[ t f n ]");
    OK("{\"t\":true,\"f\":false,\"n\":null}",
       "{ k\"t\" t k\"f\" f k\"n\" n }");

    ERR("tru", "premature end of input", 3);
    ERR("[tru]", "invalid literal", 4);
    ERR("[trUe]", "invalid literal", 3);
    ERR("[nul]", "invalid literal", 4);
    ERR("[nulll]", "expected ',' or ']'", 5);
    ERR("[fals]", "invalid literal", 5);
    ERR("[f]", "invalid literal", 2);
    ERR("True", "expected a value", 0);
    ERR("NULL", "expected a value", 0);
    ERR("truex", "trailing garbage", 4);
    ERR("[truex]", "expected ',' or ']'", 5);
    ERR("[true1]", "expected ',' or ']'", 5);
    ERR("nan", "invalid literal", 1);
}


static void
test_numbers(void **state)
{
    (void) state;

    OK("[0,-0,1,-1,10,1.5,-1.5e10,1E+2,1e-2,0.0,0e0,0E-0,-0.0e+0]",
       "[ #0 #-0 #1 #-1 #10 #1.5 #-1.5e10 #1E+2 #1e-2 #0.0 #0e0 #0E-0 "
       "#-0.0e+0 ]");
    OK("123456789012345678901234567890.123456789012345678901234567890e-999",
       "#123456789012345678901234567890.123456789012345678901234567890"
       "e-999");
    OK("{\"a\":-7}", "{ k\"a\" #-7 }");
    OK("[1 ,2\n,\t3\r]", "[ #1 #2 #3 ]");

    ERR("[-]", "invalid number", 2);
    ERR("[-a]", "invalid number", 2);
    ERR("[--1]", "invalid number", 2);
    ERR("[1.]", "invalid number", 3);
    ERR("[1.e1]", "invalid number", 3);
    ERR("[1e]", "invalid number", 3);
    ERR("[1e+]", "invalid number", 4);
    ERR("[1e+-1]", "invalid number", 4);
    ERR("[.5]", "expected a value or ']'", 1);
    ERR("[+1]", "expected a value or ']'", 1);
    ERR("[01]", "expected ',' or ']'", 2);
    ERR("[-01]", "expected ',' or ']'", 3);
    ERR("[00]", "expected ',' or ']'", 2);
    ERR("01", "trailing garbage", 1);
    ERR("[0x10]", "expected ',' or ']'", 2);
    ERR("[1.5.3]", "expected ',' or ']'", 4);
    ERR("[1e5e5]", "expected ',' or ']'", 4);
    ERR("[1-2]", "expected ',' or ']'", 2);
    ERR("[Infinity]", "expected a value or ']'", 1);
    ERR("[-Infinity]", "invalid number", 2);
    ERR("-", "premature end of input", 1);
    ERR("1e", "premature end of input", 2);
}


static void
test_strings(void **state)
{
    (void) state;

    OK("[\"\",\"a\",\"hello world\"]", "[ s\"\" s\"a\" s\"hello world\" ]");
    OK("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
       "s\"\\x22\\x5c/\\x08\\x0c\\x0a\\x0d\\x09\"");
    OK("\"a\\u0000b\"", "s\"a\\x00b\"");
    OK("\"\\u0041\\u00e9\\u00E9\\u20ac\\uFFFF\"",
       "s\"A\\xc3\\xa9\\xc3\\xa9\\xe2\\x82\\xac\\xef\\xbf\\xbf\"");
    OK("\"\\u007f\\u0080\\u07ff\\u0800\"",
       "s\"\\x7f\\xc2\\x80\\xdf\\xbf\\xe0\\xa0\\x80\"");
    OK("\"\\ud83d\\ude00\"", "s\"\\xf0\\x9f\\x98\\x80\"");
    OK("\"\\uD800\\uDC00\\uDBFF\\uDFFF\"",
       "s\"\\xf0\\x90\\x80\\x80\\xf4\\x8f\\xbf\\xbf\"");
    OK("\"x\\ud83d\\ude00y\"", "s\"x\\xf0\\x9f\\x98\\x80y\"");
    OK("{\"k\\n\":\"v\\t\"}", "{ k\"k\\x0a\" s\"v\\x09\" }");
    OK("\"\x7f\"", "s\"\\x7f\"");

    /* a longer string with escapes every few bytes */
    OK("\"0123456789abcdef0123456789abcdef\\n0123456789abcdef0123\\t\"",
       "s\"0123456789abcdef0123456789abcdef\\x0a0123456789abcdef0123"
       "\\x09\"");

    ERR("[\"\\x\"]", "invalid escape", 3);
    ERR("[\"\\U0041\"]", "invalid escape", 3);
    ERR("[\"\\'\"]", "invalid escape", 3);
    ERR("[\"\\", "premature end of input", 3);
    ERR("[\"\\u12g4\"]", "invalid \\u escape", 6);
    ERR("[\"\\u123\"]", "invalid \\u escape", 7);
    ERR("[\"\\u\"]", "invalid \\u escape", 4);
    ERR("[\"a\nb\"]", "control character in string", 3);
    ERR("[\"\t\"]", "control character in string", 2);
    ERR("[\"\x1f\"]", "control character in string", 2);

    /* NUL bytes, raw and in strings */
    expect_err_n("[\"a\0\"]", 6, "control character in string", 3);
    expect_err_n("[\0]", 3, "expected a value or ']'", 1);
    expect_ok_n("\"\\u0000\"", 8, "s\"\\x00\"");
}


static void
test_surrogates(void **state)
{
    (void) state;

    /* lone or mismatched UTF-16 surrogates are rejected */
    ERR("\"\\udc00\"", "unpaired UTF-16 surrogate", 6);
    ERR("\"\\uDFFF\"", "unpaired UTF-16 surrogate", 6);
    ERR("\"\\ud800\"", "unpaired UTF-16 surrogate", 7);
    ERR("\"\\ud800x\"", "unpaired UTF-16 surrogate", 7);
    ERR("\"\\ud800\\n\"", "unpaired UTF-16 surrogate", 8);
    ERR("\"\\ud800\\u0041\"", "unpaired UTF-16 surrogate", 12);
    ERR("\"\\ud800\\ud800\"", "unpaired UTF-16 surrogate", 12);
    ERR("\"\\ud800\\uE000\"", "unpaired UTF-16 surrogate", 12);
    ERR("\"\\ud800\\udc0g\"", "invalid \\u escape", 12);
    ERR("\"\\udbff\\", "premature end of input", 8);
    ERR("\"\\udbff\\u", "premature end of input", 9);
    ERR("\"a\\ude00\\ud83d\"", "unpaired UTF-16 surrogate", 7);

    /* the boundaries around the surrogate range are fine */
    OK("\"\\ud7ff\\ue000\"", "s\"\\xed\\x9f\\xbf\\xee\\x80\\x80\"");
}


static void
test_utf8(void **state)
{
    (void) state;

    /* the boundaries of each length */
    OK("\"\xc2\x80\xdf\xbf\"", "s\"\\xc2\\x80\\xdf\\xbf\"");
    OK("\"\xe0\xa0\x80\xef\xbf\xbf\"",
       "s\"\\xe0\\xa0\\x80\\xef\\xbf\\xbf\"");
    OK("\"\xed\x9f\xbf\xee\x80\x80\"",
       "s\"\\xed\\x9f\\xbf\\xee\\x80\\x80\"");
    OK("\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"",
       "s\"\\xf0\\x90\\x80\\x80\\xf4\\x8f\\xbf\\xbf\"");
    OK("{\"\xc3\xa9t\xc3\xa9\":\"\xe2\x82\xac 5\"}",
       "{ k\"\\xc3\\xa9t\\xc3\\xa9\" s\"\\xe2\\x82\\xac 5\" }");
    OK("\"h\xc3\xa9llo \xf0\x9f\x98\x80 w\xc3\xb6rld, long enough to be "
       "scanned in blocks \xe2\x82\xac\"",
       "s\"h\\xc3\\xa9llo \\xf0\\x9f\\x98\\x80 w\\xc3\\xb6rld, long enough "
       "to be scanned in blocks \\xe2\\x82\\xac\"");

    /* overlong forms */
    ERR("[\"\xc0\x80\"]", "invalid UTF-8 in string", 2);
    ERR("[\"\xc1\xbf\"]", "invalid UTF-8 in string", 2);
    ERR("[\"\xe0\x80\x80\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xe0\x9f\xbf\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xf0\x80\x80\x80\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xf0\x8f\xbf\xbf\"]", "invalid UTF-8 in string", 3);

    /* UTF-16 surrogates in UTF-8 */
    ERR("[\"\xed\xa0\x80\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xed\xbf\xbf\"]", "invalid UTF-8 in string", 3);

    /* beyond U+10FFFF */
    ERR("[\"\xf4\x90\x80\x80\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xf5\x80\x80\x80\"]", "invalid UTF-8 in string", 2);
    ERR("[\"\xf7\xbf\xbf\xbf\"]", "invalid UTF-8 in string", 2);
    ERR("[\"\xf8\x88\x80\x80\x80\"]", "invalid UTF-8 in string", 2);
    ERR("[\"\xfe\"]", "invalid UTF-8 in string", 2);
    ERR("[\"\xff\"]", "invalid UTF-8 in string", 2);

    /* stray continuation bytes, truncated sequences */
    ERR("[\"\x80\"]", "invalid UTF-8 in string", 2);
    ERR("[\"a\xbf\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xc3\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xc3(\"]", "invalid UTF-8 in string", 3);
    ERR("[\"\xe2\x82\"]", "invalid UTF-8 in string", 4);
    ERR("[\"\xf0\x9f\x98\"]", "invalid UTF-8 in string", 5);
    ERR("[\"\xf0\x9f\x98\x80\x80\"]", "invalid UTF-8 in string", 6);
    ERR("[\"\xe2\x82\xac\xe2\x82\"]", "invalid UTF-8 in string", 7);
    ERR("\"\xe2\x82", "premature end of input", 3);
    ERR("{\"\xc3\":1}", "invalid UTF-8 in string", 3);

    /* outside strings, bytes >= 0x80 are never allowed */
    ERR("[\xc3\xa9]", "expected a value or ']'", 1);
    ERR("[1]\xc3\xa9", "trailing garbage", 3);

    /* invalid sequences after a long ASCII run (the block scanner) */
    ERR("[\"0123456789abcdef0123456789\xc0\xaf\"]",
        "invalid UTF-8 in string", 28);
    ERR("[\"0123456789abcdef0123456789\x01\"]",
        "control character in string", 28);
}


/* nesting: the bit stack across words, the limit, mismatched ends */

static void
test_nesting(void **state)
{
    int      i, n;
    char    *doc, *ev;
    size_t   len, elen;
    run_t   *r;

    (void) state;

    r = malloc(sizeof(run_t));
    doc = malloc(8192);
    ev = malloc(EV_MAX);
    assert_non_null(r);
    assert_non_null(doc);
    assert_non_null(ev);

    /* 200 levels alternating [ and {"k": so the object bit matters in
     * every stack word */

    n = 200;
    len = 0;
    elen = 0;

    for (i = 0; i < n; i++) {
        if (i % 3 == 0) {
            len += (size_t) sprintf(doc + len, "{\"k\":");
            elen += (size_t) sprintf(ev + elen, "%s{ k\"k\"", i ? " " : "");

        } else {
            len += (size_t) sprintf(doc + len, "[");
            elen += (size_t) sprintf(ev + elen, "%s[", i ? " " : "");
        }
    }

    len += (size_t) sprintf(doc + len, "1");
    elen += (size_t) sprintf(ev + elen, " #1");

    for (i = n - 1; i >= 0; i--) {
        if (i % 3 == 0) {
            len += (size_t) sprintf(doc + len, ",\"z\":2}");
            elen += (size_t) sprintf(ev + elen, " k\"z\" #2 }");

        } else {
            len += (size_t) sprintf(doc + len, ",3]");
            elen += (size_t) sprintf(ev + elen, " #3 ]");
        }
    }

    run_cuts(doc, len, NULL, 0, (unsigned) n, r);
    assert_int_equal(r->rc, IG_JSONLEX_OK);
    assert_string_equal(r->rec.ev, ev);

    /* one level too few: fails at the 200th opening */
    run_cuts(doc, len, NULL, 0, (unsigned) n - 1, r);
    assert_int_equal(r->rc, IG_JSONLEX_ERROR);
    assert_string_equal(r->reason, "nesting too deep");
    assert_int_equal(doc[r->offset], (n - 1) % 3 == 0 ? '{' : '[');

    /* every split agrees */
    {
        size_t  cut;

        for (cut = 0; cut <= len; cut += 7) {
            run_t  *s2 = malloc(sizeof(run_t));

            assert_non_null(s2);
            run_cuts(doc, len, &cut, 1, (unsigned) n, s2);
            assert_int_equal(s2->rc, IG_JSONLEX_OK);
            assert_string_equal(s2->rec.ev, ev);
            free(s2);
        }
    }

    /* mismatched closing deep inside: the wrong bracket is found */
    len = 0;

    for (i = 0; i < 130; i++) {
        doc[len++] = (i == 70) ? '{' : '[';

        if (i == 70) {
            memcpy(doc + len, "\"a\":", 4);
            len += 4;
        }
    }

    for (i = 129; i >= 0; i--) {
        doc[len++] = ']';
    }

    run_cuts(doc, len, NULL, 0, 200, r);
    assert_int_equal(r->rc, IG_JSONLEX_ERROR);
    assert_string_equal(r->reason, "expected ',' or '}'");
    assert_int_equal(r->offset, 130 + 4 + 59);

    /* limits 0 and 1 */
    run_cuts("[]", 2, NULL, 0, 0, r);
    assert_int_equal(r->rc, IG_JSONLEX_ERROR);
    assert_string_equal(r->reason, "nesting too deep");
    assert_int_equal(r->offset, 0);

    run_cuts("1", 1, NULL, 0, 0, r);
    assert_int_equal(r->rc, IG_JSONLEX_OK);

    run_cuts("[[]]", 4, NULL, 0, 1, r);
    assert_int_equal(r->rc, IG_JSONLEX_ERROR);
    assert_int_equal(r->offset, 1);

    run_cuts("[1,[2]]", 7, NULL, 0, 2, r);
    assert_int_equal(r->rc, IG_JSONLEX_OK);
    assert_string_equal(r->rec.ev, "[ #1 [ #2 ] ]");

    free(ev);
    free(doc);
    free(r);
}


/* payloads point into the fed buffer unless escaped or cut */

static void
test_zero_copy(void **state)
{
    size_t   cut;
    run_t   *r;

    static const char  doc[] =
        "{\"key\":\"value\",\"n\":12.5,\"esc\":\"a\\nb\",\"u\":\"\xc3\xa9\"}";

    (void) state;

    r = malloc(sizeof(run_t));
    assert_non_null(r);

    run_cuts(doc, sizeof(doc) - 1, NULL, 0, 8, r);
    assert_int_equal(r->rc, IG_JSONLEX_OK);
    /* 4 keys, "value" and "é": in place; "a\nb" assembled */
    assert_int_equal(r->rec.zero_copy, 6);
    assert_int_equal(r->rec.copied, 1);

    /* cut inside "value": that one is assembled */
    cut = 10;
    run_cuts(doc, sizeof(doc) - 1, &cut, 1, 8, r);
    assert_int_equal(r->rc, IG_JSONLEX_OK);
    assert_int_equal(r->rec.zero_copy, 5);
    assert_int_equal(r->rec.copied, 2);

    free(r);
}


/* strings and numbers longer than the inline scratch, cut often */

static void
test_long_tokens(void **state)
{
    size_t   i, len, elen, *cuts, ncuts;
    char    *doc, *ev;
    run_t   *r, *w;

    (void) state;

    r = malloc(sizeof(run_t));
    w = malloc(sizeof(run_t));
    doc = malloc(20000);
    ev = malloc(EV_MAX);
    cuts = malloc(20000 * sizeof(size_t));
    assert_non_null(r);
    assert_non_null(w);
    assert_non_null(doc);
    assert_non_null(ev);
    assert_non_null(cuts);

    len = (size_t) sprintf(doc, "[\"");
    elen = (size_t) sprintf(ev, "[ s\"");

    for (i = 0; i < 3000; i++) {
        switch (i % 5) {
        case 0:
            len += (size_t) sprintf(doc + len, "\\u00e9");
            elen += (size_t) sprintf(ev + elen, "\\xc3\\xa9");
            break;
        case 1:
            len += (size_t) sprintf(doc + len, "\xe2\x82\xac");
            elen += (size_t) sprintf(ev + elen, "\\xe2\\x82\\xac");
            break;
        default:
            doc[len++] = (char) ('a' + i % 26);
            ev[elen++] = (char) ('a' + i % 26);
        }
    }

    len += (size_t) sprintf(doc + len, "\",-");
    elen += (size_t) sprintf(ev + elen, "\" #-");

    for (i = 0; i < 500; i++) {
        doc[len++] = (char) ('1' + i % 9);
        ev[elen++] = (char) ('1' + i % 9);
    }

    len += (size_t) sprintf(doc + len, ".5e-7]");
    elen += (size_t) sprintf(ev + elen, ".5e-7 ]");
    ev[elen] = '\0';

    run_cuts(doc, len, NULL, 0, 8, w);
    assert_int_equal(w->rc, IG_JSONLEX_OK);
    assert_string_equal(w->rec.ev, ev);

    for (i = 1; i < 30; i += 4) {
        ncuts = 0;

        for (cuts[0] = i; cuts[ncuts] < len; ncuts++) {
            cuts[ncuts + 1] = cuts[ncuts] + i;
        }

        run_cuts(doc, len, cuts, ncuts, 8, r);
        assert_same(w, r, "long tokens", "pieces");
    }

    free(cuts);
    free(ev);
    free(doc);
    free(w);
    free(r);
}


/* a callback returning 0 stops the parse for good */

static void
test_cancel(void **state)
{
    int                 stop;
    rec_t              *rec;
    ig_jsonlex_t       *lx;

    static const char  doc[] = "{\"a\":[1,\"x\",true,null,{}],\"b\":2}";

    (void) state;

    rec = malloc(sizeof(rec_t));
    assert_non_null(rec);

    for (stop = 0; stop < 13; stop++) {
        memset(rec, 0, sizeof(rec_t));
        rec->stop_at = stop;

        lx = ig_jsonlex_create(8, &callbacks, rec, NULL);
        assert_non_null(lx);

        assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) doc,
                                         sizeof(doc) - 1),
                         IG_JSONLEX_CANCELLED);
        assert_int_equal(rec->count, stop + 1);
        assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "x", 1),
                         IG_JSONLEX_CANCELLED);
        assert_int_equal(ig_jsonlex_finish(lx), IG_JSONLEX_CANCELLED);
        assert_null(ig_jsonlex_error(lx, NULL));
        assert_int_equal(rec->count, stop + 1);

        ig_jsonlex_destroy(lx);
    }

    /* a top-level number is reported, and may be refused, at finish */
    memset(rec, 0, sizeof(rec_t));
    rec->stop_at = 0;

    lx = ig_jsonlex_create(8, &callbacks, rec, NULL);
    assert_non_null(lx);
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "12", 2),
                     IG_JSONLEX_OK);
    assert_int_equal(rec->count, 0);
    assert_int_equal(ig_jsonlex_finish(lx), IG_JSONLEX_CANCELLED);
    assert_string_equal(rec->ev, "#12");
    ig_jsonlex_destroy(lx);

    free(rec);
}


/* the scratch buffer cannot grow */

static void
test_nomem(void **state)
{
    size_t             i;
    char              *doc;
    rec_t             *rec;
    ig_test_alloc_t    cnt;
    ig_jsonlex_t      *lx;
    yajl_alloc_funcs   af;

    (void) state;

    rec = malloc(sizeof(rec_t));
    doc = malloc(1024);
    assert_non_null(rec);
    assert_non_null(doc);

    memset(rec, 0, sizeof(rec_t));
    rec->stop_at = -1;
    ig_test_alloc_init(&cnt, &af);

    /* creation fails cleanly */
    cnt.fail = 1;
    assert_null(ig_jsonlex_create(8, &callbacks, rec, &af));
    cnt.fail = 0;

    lx = ig_jsonlex_create(8, &callbacks, rec, &af);
    assert_non_null(lx);

    /* escapes in a short string fit the inline scratch: no allocation */
    cnt.calls = 0;
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "[\"a\\n",
                                     5),
                     IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "b\",", 3),
                     IG_JSONLEX_OK);
    assert_int_equal(cnt.calls, 0);

    /* a long string cut in two needs the allocator, which fails */
    doc[0] = '"';

    for (i = 1; i < 1000; i++) {
        doc[i] = 'x';
    }

    cnt.fail = 1;
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) doc, 1000),
                     IG_JSONLEX_NOMEM);
    assert_int_equal(ig_jsonlex_finish(lx), IG_JSONLEX_NOMEM);
    assert_null(ig_jsonlex_error(lx, NULL));
    cnt.fail = 0;

    ig_jsonlex_destroy(lx);
    assert_int_equal(cnt.live, 0);

    /* growth through realloc keeps the contents */
    lx = ig_jsonlex_create(8, &callbacks, rec, &af);
    assert_non_null(lx);
    memset(rec, 0, sizeof(rec_t));
    rec->stop_at = -1;

    for (i = 0; i < 10; i++) {
        assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) doc + 1,
                                         i == 0 ? 0 : 999),
                         IG_JSONLEX_OK);

        if (i == 0) {
            assert_int_equal(ig_jsonlex_feed(lx,
                                             (const unsigned char *) "\"",
                                             1),
                             IG_JSONLEX_OK);
        }
    }

    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "\"", 1),
                     IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_finish(lx), IG_JSONLEX_OK);
    assert_int_equal(rec->len, 2 + 9 * 999 + 1);
    assert_true(cnt.calls >= 2);

    ig_jsonlex_destroy(lx);
    assert_int_equal(cnt.live, 0);

    free(doc);
    free(rec);
}


/* finish, feeding after it, empty feeds, the memory API */

static void
test_api(void **state)
{
    size_t          off;
    rec_t          *rec;
    ig_jsonlex_t   *lx;
    unsigned char  *mem;

    (void) state;

    rec = malloc(sizeof(rec_t));
    assert_non_null(rec);
    memset(rec, 0, sizeof(rec_t));
    rec->stop_at = -1;

    mem = malloc(ig_jsonlex_size(100));
    assert_non_null(mem);
    assert_true(ig_jsonlex_size(100) > ig_jsonlex_size(1));

    lx = ig_jsonlex_init(mem, 100, &callbacks, rec, NULL);
    assert_ptr_equal(lx, mem);

    assert_int_equal(ig_jsonlex_feed(lx, NULL, 0), IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) " [1", 3),
                     IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_feed(lx, NULL, 0), IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "] ", 2),
                     IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_finish(lx), IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_finish(lx), IG_JSONLEX_OK);
    assert_string_equal(rec->ev, "[ #1 ]");

    /* whitespace after finish is fine, anything else is not */
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) " \n", 2),
                     IG_JSONLEX_OK);
    assert_int_equal(ig_jsonlex_feed(lx, (const unsigned char *) "x", 1),
                     IG_JSONLEX_ERROR);
    assert_string_equal(ig_jsonlex_error(lx, &off), "trailing garbage");
    assert_int_equal(off, 7);

    ig_jsonlex_cleanup(lx);
    free(mem);

    /* the default allocator */
    lx = ig_jsonlex_create(2, &callbacks, rec, NULL);
    assert_non_null(lx);
    ig_jsonlex_destroy(lx);
    ig_jsonlex_destroy(NULL);

    free(rec);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_literals),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_surrogates),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_zero_copy),
        cmocka_unit_test(test_long_tokens),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_nomem),
        cmocka_unit_test(test_api),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
