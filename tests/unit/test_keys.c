/*
 * Copyright (C) infergate authors
 *
 * Unit tests of lib/ig_keys.c.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>

#include "ig_gcra.h"
#include "ig_keys.h"


#define HEX_A                                                                 \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_A_UPPER                                                           \
    "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
#define HEX48                                                                 \
    "0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_ZERO                                                              \
    "0000000000000000000000000000000000000000000000000000000000000000"
#define NAME64                                                                \
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._"


static int ig_test_parse(const char *line, ig_key_entry_t *e,
    const char **reason);
static void ig_test_bad(const char *line, const char *reason);
static int ig_test_str_eq(ig_str_t s, const char *c);


static int
ig_test_parse(const char *line, ig_key_entry_t *e, const char **reason)
{
    return ig_keys_parse_line(line, strlen(line), e, reason);
}


static void
ig_test_bad(const char *line, const char *reason)
{
    const char      *r;
    ig_key_entry_t   e, orig;

    memset(&e, 0xab, sizeof(e));
    orig = e;
    r = NULL;

    if (ig_test_parse(line, &e, &r) != -1) {
        fail_msg("accepted: \"%s\"", line);
    }

    assert_non_null(r);

    if (strcmp(r, reason) != 0) {
        fail_msg("\"%s\": got \"%s\", expected \"%s\"", line, r, reason);
    }

    /* the entry is left alone on error */
    assert_memory_equal(&e, &orig, sizeof(e));
}


static int
ig_test_str_eq(ig_str_t s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.data, c, s.len) == 0;
}


static void
test_full_line(void **state)
{
    size_t           i;
    const char      *r, *line;
    ig_key_entry_t   e;

    (void) state;

    line = HEX_A " acme-corp.eu_1 rate=600r/m burst=7 models=gpt-4o,llama3.1";

    r = NULL;
    assert_int_equal(ig_test_parse(line, &e, &r), 1);

    for (i = 0; i < 32; i++) {
        assert_int_equal(e.digest[i], (i % 8) * 0x22 + 0x01);
    }

    assert_true(ig_test_str_eq(e.tenant, "acme-corp.eu_1"));
    assert_ptr_equal(e.tenant.data, line + 65);
    assert_int_equal(e.quota, 600);
    assert_int_equal(e.window_s, 60);
    assert_int_equal(e.burst, 7);
    assert_int_equal(e.nmodels, 2);
    assert_true(ig_test_str_eq(e.models[0], "gpt-4o"));
    assert_true(ig_test_str_eq(e.models[1], "llama3.1"));
    assert_true(e.models[1].data > line && e.models[1].data < line + 120);

    /* options in any order, tabs, uppercase hex, CRLF, comment */

    line = "\t" HEX_A_UPPER "\t\tacme  models=m1 \tburst=0 rate=1r/h  "
           "# a comment, rate=5r/s \r";
    assert_int_equal(ig_test_parse(line, &e, &r), 1);
    assert_int_equal(e.digest[0], 0x01);
    assert_int_equal(e.digest[31], 0xef);
    assert_true(ig_test_str_eq(e.tenant, "acme"));
    assert_int_equal(e.quota, 1);
    assert_int_equal(e.window_s, 3600);
    assert_int_equal(e.burst, 0);
    assert_int_equal(e.nmodels, 1);
    assert_true(ig_test_str_eq(e.models[0], "m1"));

    /* uppercase and lowercase hex give the same digest */
    {
        ig_key_entry_t  e2;

        assert_int_equal(ig_test_parse(HEX_A " t", &e2, &r), 1);
        assert_memory_equal(e.digest, e2.digest, 32);
    }
}


static void
test_defaults(void **state)
{
    const char      *r;
    ig_key_entry_t   e;

    (void) state;

    memset(&e, 0xab, sizeof(e));
    assert_int_equal(ig_test_parse(HEX_A " t", &e, &r), 1);
    assert_int_equal(e.quota, 0);
    assert_int_equal(e.window_s, 0);
    assert_int_equal(e.burst, -1);
    assert_int_equal(e.nmodels, 0);
    assert_true(ig_test_str_eq(e.tenant, "t"));

    /* reason may be NULL */
    assert_int_equal(ig_test_parse(HEX_A " " NAME64 "\r", &e, NULL), 1);
    assert_true(ig_test_str_eq(e.tenant, NAME64));
    assert_int_equal(ig_test_parse("x", &e, NULL), -1);
}


static void
test_blank_and_comments(void **state)
{
    size_t           i;
    const char      *r;
    ig_key_entry_t   e, orig;

    static const char  *blank[] = {
        "", " ", "\t \t", "\r", " \r", "#", "# " HEX_A " t", "   # x",
        "#\r", "  \t# rate=bogus \r",
    };

    (void) state;

    for (i = 0; i < sizeof(blank) / sizeof(blank[0]); i++) {
        memset(&e, 0xab, sizeof(e));
        orig = e;
        r = "untouched";
        assert_int_equal(ig_test_parse(blank[i], &e, &r), 0);
        assert_string_equal(r, "untouched");
        assert_memory_equal(&e, &orig, sizeof(e));
    }

    assert_int_equal(ig_keys_parse_line(NULL, 0, &e, &r), 0);
    assert_int_equal(ig_keys_parse_line("junk", 0, &e, &r), 0);

    /* '#' anywhere starts a comment, even inside a field */
    assert_int_equal(ig_test_parse(HEX_A " t rate=2r/s#burst=x", &e, &r), 1);
    assert_int_equal(e.quota, 2);
    assert_int_equal(e.burst, -1);

    assert_int_equal(ig_test_parse(HEX_A " t models=a,b#,c,,", &e, &r), 1);
    assert_int_equal(e.nmodels, 2);

    assert_int_equal(ig_test_parse(HEX_A " t#enant", &e, &r), 1);
    assert_true(ig_test_str_eq(e.tenant, "t"));

    /* a '\r' is only ignored at the very end */
    ig_test_bad(HEX_A " t burst=1\r rate=1r/s",
                "bad burst: expected an integer from 0 to 1000000");
    ig_test_bad(HEX_A " t\r\r", "bad tenant name: expected 1 to 64 of "
                "A-Z a-z 0-9 . _ -");
}


static void
test_digest_field(void **state)
{
    (void) state;

    ig_test_bad("x", "expected 64 hex digits of SHA-256");
    ig_test_bad("abc t", "expected 64 hex digits of SHA-256");
    ig_test_bad(HEX_A "0 t", "expected 64 hex digits of SHA-256");
    ig_test_bad(HEX_A "# t", "missing tenant");
    ig_test_bad(HEX48 "0123456789abcde t",
                "expected 64 hex digits of SHA-256");
    ig_test_bad(HEX48 "0123456789abcdeg t",
                "expected 64 hex digits of SHA-256");
    ig_test_bad("g123456789abcdef" HEX48 " t",
                "expected 64 hex digits of SHA-256");
    ig_test_bad("0x23456789abcdef" HEX48 " t",
                "expected 64 hex digits of SHA-256");
    ig_test_bad(HEX48 "0123456789ab\tef t",
                "expected 64 hex digits of SHA-256");
    ig_test_bad("rate=1r/s " HEX_A " t", "expected 64 hex digits of SHA-256");
    ig_test_bad(HEX_ZERO " t", "all-zero digest is not accepted");
}


static void
test_tenant(void **state)
{
    (void) state;

    ig_test_bad(HEX_A, "missing tenant");
    ig_test_bad(HEX_A "   \t\r", "missing tenant");
    ig_test_bad(HEX_A " " NAME64 "x",
                "bad tenant name: expected 1 to 64 of A-Z a-z 0-9 . _ -");
    ig_test_bad(HEX_A " acme!",
                "bad tenant name: expected 1 to 64 of A-Z a-z 0-9 . _ -");
    ig_test_bad(HEX_A " a/b",
                "bad tenant name: expected 1 to 64 of A-Z a-z 0-9 . _ -");
    ig_test_bad(HEX_A " rate=1r/s",
                "bad tenant name: expected 1 to 64 of A-Z a-z 0-9 . _ -");
    ig_test_bad(HEX_A " \xc3\xa9t\xc3\xa9",
                "bad tenant name: expected 1 to 64 of A-Z a-z 0-9 . _ -");
}


static void
test_rate(void **state)
{
    const char      *r;
    ig_key_entry_t   e;

    (void) state;

    assert_int_equal(ig_test_parse(HEX_A " t rate=1000000r/s", &e, &r), 1);
    assert_int_equal(e.quota, 1000000);
    assert_int_equal(e.window_s, 1);

    ig_test_bad(HEX_A " t rate=", "bad rate: " IG_GCRA_ERR_NUMBER);
    ig_test_bad(HEX_A " t rate=x", "bad rate: " IG_GCRA_ERR_NUMBER);
    ig_test_bad(HEX_A " t rate=-1r/s", "bad rate: " IG_GCRA_ERR_NUMBER);
    ig_test_bad(HEX_A " t rate=0r/s", "bad rate: " IG_GCRA_ERR_RANGE);
    ig_test_bad(HEX_A " t rate=1000001r/s", "bad rate: " IG_GCRA_ERR_RANGE);
    ig_test_bad(HEX_A " t rate=10", "bad rate: " IG_GCRA_ERR_UNIT);
    ig_test_bad(HEX_A " t rate=10r/d", "bad rate: " IG_GCRA_ERR_UNIT);
    ig_test_bad(HEX_A " t rate=10r/s=", "bad rate: " IG_GCRA_ERR_UNIT);
    ig_test_bad(HEX_A " t rate=1r/s rate=1r/s", "duplicate option \"rate\"");
    ig_test_bad(HEX_A " t rate=1r/s rate=x", "duplicate option \"rate\"");
    ig_test_bad(HEX_A " t rate", "expected option=value");
    ig_test_bad(HEX_A " t rate =1r/s", "expected option=value");
    ig_test_bad(HEX_A " t RATE=1r/s", "unknown option");
}


static void
test_burst(void **state)
{
    const char      *r;
    ig_key_entry_t   e;

    static const char  bad[] =
        "bad burst: expected an integer from 0 to 1000000";

    (void) state;

    assert_int_equal(ig_test_parse(HEX_A " t burst=1000000", &e, &r), 1);
    assert_int_equal(e.burst, 1000000);
    assert_int_equal(ig_test_parse(HEX_A " t burst=0", &e, &r), 1);
    assert_int_equal(e.burst, 0);
    assert_int_equal(ig_test_parse(HEX_A " t burst=0005", &e, &r), 1);
    assert_int_equal(e.burst, 5);

    ig_test_bad(HEX_A " t burst=", bad);
    ig_test_bad(HEX_A " t burst=-1", bad);
    ig_test_bad(HEX_A " t burst=+1", bad);
    ig_test_bad(HEX_A " t burst=1000001", bad);
    ig_test_bad(HEX_A " t burst=99999999999999999999999", bad);
    ig_test_bad(HEX_A " t burst=4294967296", bad);
    ig_test_bad(HEX_A " t burst=1x", bad);
    ig_test_bad(HEX_A " t burst=1.5", bad);
    ig_test_bad(HEX_A " t burst=1 burst=1", "duplicate option \"burst\"");
}


static void
test_models(void **state)
{
    char             line[2048];
    size_t           n;
    unsigned         i;
    const char      *r;
    ig_key_entry_t   e;

    static const char  bad[] =
        "bad model name: expected 1 to 64 of A-Z a-z 0-9 . _ -";
    static const char  empty[] = "empty entry in models list";

    (void) state;

    /* exactly IG_KEYS_MAX_MODELS is fine, one more is not */

    n = (size_t) snprintf(line, sizeof(line), HEX_A " t models=");
    for (i = 0; i < IG_KEYS_MAX_MODELS; i++) {
        n += (size_t) snprintf(line + n, sizeof(line) - n, "%sm%u",
                               i ? "," : "", i);
    }

    assert_int_equal(ig_test_parse(line, &e, &r), 1);
    assert_int_equal(e.nmodels, IG_KEYS_MAX_MODELS);
    assert_true(ig_test_str_eq(e.models[0], "m0"));
    assert_true(ig_test_str_eq(e.models[IG_KEYS_MAX_MODELS - 1], "m15"));

    snprintf(line + n, sizeof(line) - n, ",extra");
    ig_test_bad(line, "too many models, at most 16");

    assert_int_equal(ig_test_parse(HEX_A " t models=" NAME64, &e, &r), 1);
    assert_true(ig_test_str_eq(e.models[0], NAME64));

    /* duplicates are harmless and kept */
    assert_int_equal(ig_test_parse(HEX_A " t models=a,a", &e, &r), 1);
    assert_int_equal(e.nmodels, 2);

    ig_test_bad(HEX_A " t models=", empty);
    ig_test_bad(HEX_A " t models=,", empty);
    ig_test_bad(HEX_A " t models=a,", empty);
    ig_test_bad(HEX_A " t models=,a", empty);
    ig_test_bad(HEX_A " t models=a,,b", empty);
    ig_test_bad(HEX_A " t models=" NAME64 "x", bad);
    ig_test_bad(HEX_A " t models=a,b/c", bad);
    ig_test_bad(HEX_A " t models=a;b", bad);
    ig_test_bad(HEX_A " t models=a=b", bad);
    ig_test_bad(HEX_A " t models=a models=b", "duplicate option \"models\"");
}


static void
test_options(void **state)
{
    (void) state;

    ig_test_bad(HEX_A " t foo=1", "unknown option");
    ig_test_bad(HEX_A " t =1", "unknown option");
    ig_test_bad(HEX_A " t rates=1r/s", "unknown option");
    ig_test_bad(HEX_A " t rat=1r/s", "unknown option");
    ig_test_bad(HEX_A " t t2", "expected option=value");
    ig_test_bad(HEX_A " t burst=1 foo", "expected option=value");
    ig_test_bad(HEX_A " t burst=1 x=", "unknown option");

    /* the first error wins */
    ig_test_bad(HEX_A " t foo=1 burst=x", "unknown option");
    ig_test_bad(HEX_A " t burst=x foo=1",
                "bad burst: expected an integer from 0 to 1000000");
}


static void
test_bytes(void **state)
{
    char             buf[200];
    const char      *r;
    ig_key_entry_t   e;

    (void) state;

    /* not NUL-terminated: only len counts */

    memset(buf, 'Z', sizeof(buf));
    memcpy(buf, HEX_A " t burst=3", sizeof(HEX_A " t burst=3") - 1);
    assert_int_equal(ig_keys_parse_line(buf,
                                        sizeof(HEX_A " t burst=3") - 1,
                                        &e, &r), 1);
    assert_int_equal(e.burst, 3);

    /* embedded NUL and newline are bytes of a field */

    assert_int_equal(ig_keys_parse_line(HEX_A " t\0x", 68, &e, &r), -1);
    assert_string_equal(r, "bad tenant name: expected 1 to 64 of "
                        "A-Z a-z 0-9 . _ -");

    assert_int_equal(ig_keys_parse_line(HEX_A " t\n", 67, &e, &r), -1);

    assert_int_equal(ig_keys_parse_line(HEX_A " t burst=1\0", 75, &e, &r),
                     -1);
    assert_string_equal(r, "bad burst: expected an integer from 0 to "
                        "1000000");

    assert_int_equal(ig_keys_parse_line("\0", 1, &e, &r), -1);
    assert_string_equal(r, "expected 64 hex digits of SHA-256");

    /* other whitespace does not separate fields */
    assert_int_equal(ig_test_parse(HEX_A "\vt", &e, &r), -1);
    assert_int_equal(ig_test_parse(HEX_A " t\fburst=1", &e, &r), -1);
}


static void
test_messages(void **state)
{
    char             buf[256], small[8], line[400];
    const char      *r;
    ig_key_entry_t   e;

    (void) state;

    assert_int_equal(ig_keys_parse_line_msg(HEX_A " t foo=1", 72, &e, &r,
                                            buf, sizeof(buf)), -1);
    assert_string_equal(r, "unknown option");
    assert_string_equal(buf, "unknown option \"foo\"");

    assert_int_equal(ig_keys_parse_line_msg(HEX_A " t burst=2 x\"y\\=1",
                                            strlen(HEX_A " t burst=2 "
                                                   "x\"y\\=1"),
                                            &e, &r, buf, sizeof(buf)), -1);
    assert_string_equal(buf, "unknown option \"x\\x22y\\x5c\"");

    strcpy(line, HEX_A " t rate=10r/x");
    assert_int_equal(ig_keys_parse_line_msg(line, strlen(line), &e, &r, buf,
                                            sizeof(buf)), -1);
    assert_string_equal(buf, "bad rate: expected unit r/s, r/m or r/h, "
                        "got \"10r/x\"");

    strcpy(line, HEX_A " t models=ok,b\xffz");
    assert_int_equal(ig_keys_parse_line_msg(line, strlen(line), &e, &r, buf,
                                            sizeof(buf)), -1);
    assert_string_equal(buf, "bad model name: expected 1 to 64 of "
                        "A-Z a-z 0-9 . _ -, got \"b\\xffz\"");

    strcpy(line, HEX_A " t burst=1 burst=2");
    assert_int_equal(ig_keys_parse_line_msg(line, strlen(line), &e, &r, buf,
                                            sizeof(buf)), -1);
    assert_string_equal(buf, "duplicate option \"burst\"");

    strcpy(line, HEX_A);
    assert_int_equal(ig_keys_parse_line_msg(line, strlen(line), &e, &r, buf,
                                            sizeof(buf)), -1);
    assert_string_equal(buf, "missing tenant");

    /* long text is cut */
    memset(line, 'q', 300);
    line[300] = '\0';
    assert_int_equal(ig_keys_parse_line_msg(line, strlen(line), &e, &r, buf,
                                            sizeof(buf)), -1);
    assert_string_equal(buf, "expected 64 hex digits of SHA-256, got \""
                        "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq"
                        "...\"");

    /* truncated to the buffer */
    assert_int_equal(ig_keys_parse_line_msg(HEX_A " t foo=1", 72, &e, &r,
                                            small, sizeof(small)), -1);
    assert_string_equal(small, "unknown");

    /* no buffer */
    assert_int_equal(ig_keys_parse_line_msg(HEX_A " t foo=1", 72, &e, &r,
                                            NULL, 0), -1);
    assert_int_equal(ig_keys_parse_line_msg(HEX_A " t foo=1", 72, &e, NULL,
                                            NULL, 0), -1);

    /* success and blank lines leave the buffer alone */
    strcpy(buf, "same");
    assert_int_equal(ig_keys_parse_line_msg(HEX_A " t", 66, &e, &r, buf,
                                            sizeof(buf)), 1);
    assert_int_equal(ig_keys_parse_line_msg("# x", 3, &e, &r, buf,
                                            sizeof(buf)), 0);
    assert_string_equal(buf, "same");

    /* worst case: every quoted byte escaped */
    memset(line, 0x01, 300);
    assert_int_equal(ig_keys_parse_line_msg(line, 300, &e, &r, buf,
                                            sizeof(buf)), -1);
    assert_true(strlen(buf) < sizeof(buf));
}


static void
test_digest(void **state)
{
    char     hex[IG_KEYS_DIGEST_HEX + 1];
    uint8_t  d[32], d2[32];

    (void) state;

    ig_keys_digest((const unsigned char *) "", 0, d);
    ig_keys_digest_hex(d, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                             "27ae41e4649b934ca495991b7852b855");

    ig_keys_digest((const unsigned char *) "abc", 3, d);
    ig_keys_digest_hex(d, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223"
                             "b00361a396177a9cb410ff61f20015ad");

    assert_int_equal(ig_keys_digest_ex((const unsigned char *) "abc", 3, d2),
                     0);
    assert_int_equal(ig_keys_digest_eq(d, d2), 1);

    /* a minted-style key: digest of the whole string, prefix included */
    ig_keys_digest((const unsigned char *) "igk_abc", 7, d2);
    ig_keys_digest_hex(d2, hex);
    assert_string_equal(hex, "9395cb312d11d595b6295d47950ee437"
                             "159669d88e13fa880db68b09a3b1a1ed");
    assert_int_equal(ig_keys_digest_eq(d, d2), 0);

    /* every byte position matters */
    for (int i = 0; i < 32; i++) {
        memcpy(d2, d, 32);
        d2[i] ^= 0x80;
        assert_int_equal(ig_keys_digest_eq(d, d2), 0);
    }
}


static void
test_digest_roundtrip(void **state)
{
    char             line[200];
    char             hex[IG_KEYS_DIGEST_HEX + 1];
    uint8_t          d[32];
    const char      *r;
    ig_key_entry_t   e;

    (void) state;

    /* what infergate-keys writes is what the module reads */

    ig_keys_digest((const unsigned char *) "igk_secret", 10, d);
    ig_keys_digest_hex(d, hex);
    snprintf(line, sizeof(line), "%s tenant-1 rate=5r/s", hex);

    assert_int_equal(ig_test_parse(line, &e, &r), 1);
    assert_int_equal(ig_keys_digest_eq(e.digest, d), 1);
}


/* The reusable hasher agrees with the one-shot digest, call after call. */
static void
test_sha256_reuse(void **state)
{
    int           i;
    char          key[64];
    uint8_t       a[32], b[32];
    ig_sha256_t  *h;

    (void) state;

    h = ig_sha256_new();
    assert_non_null(h);

    for (i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "igk_%d_%s", i, i % 2 ? "odd" : "even");
        assert_int_equal(ig_sha256(h, (unsigned char *) key, strlen(key), a),
                         0);
        ig_keys_digest((unsigned char *) key, strlen(key), b);
        assert_memory_equal(a, b, 32);
    }

    /* FIPS 180-2 test vector "abc" */
    assert_int_equal(ig_sha256(h, (unsigned char *) "abc", 3, a), 0);
    assert_int_equal(a[0], 0xba);
    assert_int_equal(a[31], 0xad);

    ig_sha256_free(h);
    ig_sha256_free(NULL);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_full_line),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_blank_and_comments),
        cmocka_unit_test(test_digest_field),
        cmocka_unit_test(test_tenant),
        cmocka_unit_test(test_rate),
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_digest),
        cmocka_unit_test(test_digest_roundtrip),
        cmocka_unit_test(test_sha256_reuse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
