/*
 * Copyright (C) infergate authors
 *
 * ig_json_escape: escaping and UTF-8 repair.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ig_json.h"


/* escapes s[0..len) and compares with the expected text */

static void
check(const char *s, size_t len, const char *expect)
{
    size_t          n;
    unsigned char  *buf, *end;

    n = ig_json_escape_len((const unsigned char *) s, len);

    buf = malloc(n + 1);
    assert_non_null(buf);

    end = ig_json_escape(buf, (const unsigned char *) s, len);
    assert_int_equal((size_t) (end - buf), n);
    *end = '\0';

    if (strcmp((char *) buf, expect) != 0) {
        print_error("escape mismatch: got \"%s\", expected \"%s\"\n",
                    (char *) buf, expect);
    }

    assert_string_equal((char *) buf, expect);

    free(buf);
}


#define CHECK(lit, expect)  check(lit, sizeof(lit) - 1, expect)


/* a strict UTF-8 validator, independent of the one under test */

static int
valid_utf8(const unsigned char *s, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp, min;

    i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            n = 2; cp = s[i] & 0x1f; min = 0x80;
        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 3; cp = s[i] & 0x0f; min = 0x800;
        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 4; cp = s[i] & 0x07; min = 0x10000;
        } else {
            return 0;
        }

        if (i + n > len) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += n;
    }

    return 1;
}


static void
test_basic(void **state)
{
    (void) state;

    CHECK("", "");
    CHECK("plain text 123", "plain text 123");
    CHECK("a\"b", "a\\\"b");
    CHECK("a\\b", "a\\\\b");
    CHECK("/", "/");
    CHECK("\n\r\t\b\f", "\\n\\r\\t\\b\\f");
    CHECK("\x01\x1f", "\\u0001\\u001f");
    CHECK("a\0b", "a\\u0000b");
    CHECK("\x7f", "\x7f");
    CHECK("~", "~");
}


static void
test_utf8(void **state)
{
    (void) state;

    /* well-formed sequences pass through */
    CHECK("\xc2\xa9", "\xc2\xa9");                    /* U+00A9 */
    CHECK("\xe2\x82\xac", "\xe2\x82\xac");            /* U+20AC */
    CHECK("\xed\x9f\xbf", "\xed\x9f\xbf");            /* U+D7FF */
    CHECK("\xee\x80\x80", "\xee\x80\x80");            /* U+E000 */
    CHECK("\xef\xbf\xbf", "\xef\xbf\xbf");            /* U+FFFF */
    CHECK("\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80");    /* U+1F600 */
    CHECK("\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf");    /* U+10FFFF */

    /* each bad byte becomes U+FFFD */
    CHECK("\x80", "\\ufffd");
    CHECK("\xbf", "\\ufffd");
    CHECK("\xff", "\\ufffd");
    CHECK("\xfe", "\\ufffd");
    CHECK("a\xc3", "a\\ufffd");                       /* truncated */
    CHECK("\xc3(", "\\ufffd(");
    CHECK("\xe2\x82", "\\ufffd\\ufffd");
    CHECK("\xc0\xaf", "\\ufffd\\ufffd");              /* overlong '/' */
    CHECK("\xc1\xbf", "\\ufffd\\ufffd");
    CHECK("\xe0\x80\xaf", "\\ufffd\\ufffd\\ufffd");   /* overlong */
    CHECK("\xe0\x9f\xbf", "\\ufffd\\ufffd\\ufffd");
    CHECK("\xf0\x80\x80\xaf", "\\ufffd\\ufffd\\ufffd\\ufffd");
    CHECK("\xf0\x8f\xbf\xbf", "\\ufffd\\ufffd\\ufffd\\ufffd");
    CHECK("\xed\xa0\x80", "\\ufffd\\ufffd\\ufffd");   /* U+D800 */
    CHECK("\xed\xbf\xbf", "\\ufffd\\ufffd\\ufffd");   /* U+DFFF */
    CHECK("\xf4\x90\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd");
    CHECK("\xf5\x80\x80\x80", "\\ufffd\\ufffd\\ufffd\\ufffd");
    CHECK("\xf8\x88\x80\x80\x80",
          "\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd");

    /* recovery after a bad byte keeps following good sequences */
    CHECK("\xe2\x82\xe2\x82\xac", "\\ufffd\\ufffd\xe2\x82\xac");
    CHECK("\"\xff\"", "\\\"\\ufffd\\\"");
}


/* arbitrary bytes always give valid UTF-8 without raw controls */

static void
test_random(void **state)
{
    size_t          i, j, len, n;
    unsigned        seed;
    unsigned char   src[64], *buf, *end;

    (void) state;

    seed = 12345;

    for (i = 0; i < 20000; i++) {
        len = (size_t) (rand_r(&seed) % sizeof(src));

        for (j = 0; j < len; j++) {
            /* bias toward interesting bytes */
            switch (rand_r(&seed) % 4) {
            case 0:
                src[j] = (unsigned char) (0x80 + rand_r(&seed) % 0x80);
                break;
            case 1:
                src[j] = (unsigned char) (rand_r(&seed) % 0x20);
                break;
            default:
                src[j] = (unsigned char) (rand_r(&seed) % 256);
            }
        }

        n = ig_json_escape_len(src, len);
        buf = malloc(n + 1);
        assert_non_null(buf);

        end = ig_json_escape(buf, src, len);
        assert_int_equal((size_t) (end - buf), n);

        assert_true(valid_utf8(buf, n));

        for (j = 0; j < n; j++) {
            assert_true(buf[j] >= 0x20);

            if (buf[j] == '"') {
                assert_true(j > 0 && buf[j - 1] == '\\');
            }
        }

        free(buf);
    }
}


/*
 * One byte that needs care at every offset of an otherwise plain string:
 * the eight-byte fast path must stop on it wherever it falls in a word.
 */

static void
test_every_offset(void **state)
{
    size_t       i, k, pos, len;
    char         src[48], expect[64];
    const char  *esc;

    static const struct {
        unsigned char  byte;
        const char    *esc;
    } cases[] = {
        { 0x00, "\\u0000" }, { 0x0a, "\\n" }, { 0x1f, "\\u001f" },
        { '"', "\\\"" }, { '\\', "\\\\" }, { 0x80, "\\ufffd" },
        { 0xff, "\\ufffd" }, { 0x20, " " }, { 0x7f, "\x7f" },
        { '!', "!" }, { '#', "#" }, { '[', "[" }, { ']', "]" }
    };

    (void) state;

    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        for (len = 1; len < 40; len++) {
            for (pos = 0; pos < len; pos++) {
                for (i = 0; i < len; i++) {
                    src[i] = (char) ('a' + i % 26);
                }

                src[pos] = (char) cases[k].byte;
                esc = cases[k].esc;

                memcpy(expect, src, pos);
                strcpy(expect + pos, esc);
                memcpy(expect + pos + strlen(esc), src + pos + 1,
                       len - pos - 1);
                expect[pos + strlen(esc) + len - pos - 1] = '\0';

                check(src, len, expect);
            }
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_every_offset),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
