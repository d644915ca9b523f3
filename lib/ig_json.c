/*
 * Copyright (C) infergate authors
 *
 * JSON string escaping.  The output is always valid UTF-8: every byte
 * that does not start a well-formed UTF-8 sequence (Unicode 15 table
 * 3-7: no overlong forms, no UTF-16 surrogates, nothing above U+10FFFF)
 * is written as \ufffd, and scanning resumes at the next byte.
 */


#include "ig_json.h"

#include <stdint.h>
#include <string.h>


static size_t ig_json_plain(const unsigned char *s, size_t len);
static size_t ig_json_utf8_seq(const unsigned char *s, size_t len);
static unsigned char *ig_json_copy(unsigned char *dst, const char *src,
    size_t n);


static const char  ig_json_hex[] = "0123456789abcdef";


/*
 * Length of the leading run of bytes that are copied as they are
 * (0x20..0x7f but '"' and '\\').  URIs, addresses, ids and user agents
 * are almost always one such run, so it is found eight bytes at a time:
 * a word passes when no byte is below 0x20, has the high bit set, or
 * equals either quote character (the classic "has zero byte" test).
 */

#define IG_JSON_ONES    0x0101010101010101ULL
#define IG_JSON_HIGHS   0x8080808080808080ULL
#define IG_JSON_ZERO(v) (((v) - IG_JSON_ONES) & ~(v) & IG_JSON_HIGHS)

static size_t
ig_json_plain(const unsigned char *s, size_t len)
{
    size_t         i;
    uint64_t       w;
    unsigned char  c;

    i = 0;

    while (len - i >= 8) {
        memcpy(&w, s + i, 8);

        if ((w & IG_JSON_HIGHS)
            || IG_JSON_ZERO(w & ~(IG_JSON_ONES * 0x1f))
            || IG_JSON_ZERO(w ^ (IG_JSON_ONES * '"'))
            || IG_JSON_ZERO(w ^ (IG_JSON_ONES * '\\')))
        {
            break;
        }

        i += 8;
    }

    while (i < len) {
        c = s[i];

        if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') {
            break;
        }

        i++;
    }

    return i;
}


/*
 * Length of the well-formed UTF-8 sequence at s (2..4), or 0 when s[0]
 * is not the start of one.  s[0] is >= 0x80 and len >= 1.
 */

static size_t
ig_json_utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char  c, lo, hi;
    size_t         n, i;

    c = s[0];
    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;

        if (c == 0xe0) {
            lo = 0xa0;

        } else if (c == 0xed) {
            hi = 0x9f;
        }

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;

        if (c == 0xf0) {
            lo = 0x90;

        } else if (c == 0xf4) {
            hi = 0x8f;
        }

    } else {
        return 0;
    }

    if (len < n) {
        return 0;
    }

    if (s[1] < lo || s[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


static unsigned char *
ig_json_copy(unsigned char *dst, const char *src, size_t n)
{
    while (n--) {
        *dst++ = (unsigned char) *src++;
    }

    return dst;
}


size_t
ig_json_escape_len(const unsigned char *s, size_t len)
{
    size_t         n, i, k;
    unsigned char  c;

    n = 0;
    i = 0;

    while (i < len) {
        k = ig_json_plain(s + i, len - i);
        n += k;
        i += k;

        if (i == len) {
            break;
        }

        c = s[i];

        if (c >= 0x80) {
            k = ig_json_utf8_seq(s + i, len - i);

            if (k == 0) {
                n += 6;
                i++;

            } else {
                n += k;
                i += k;
            }

            continue;
        }

        if (c == '"' || c == '\\') {
            n += 2;

        } else if (c < 0x20) {
            switch (c) {

            case '\n':
            case '\r':
            case '\t':
            case '\b':
            case '\f':
                n += 2;
                break;

            default:
                n += 6;
            }

        } else {
            n++;
        }

        i++;
    }

    return n;
}


unsigned char *
ig_json_escape(unsigned char *dst, const unsigned char *s, size_t len)
{
    size_t         i, k;
    unsigned char  c;

    i = 0;

    while (i < len) {
        k = ig_json_plain(s + i, len - i);
        memcpy(dst, s + i, k);
        dst += k;
        i += k;

        if (i == len) {
            break;
        }

        c = s[i];

        if (c >= 0x80) {
            k = ig_json_utf8_seq(s + i, len - i);

            if (k == 0) {
                dst = ig_json_copy(dst, "\\ufffd", 6);
                i++;

            } else {
                while (k--) {
                    *dst++ = s[i++];
                }
            }

            continue;
        }

        i++;

        if (c >= 0x20 && c != '"' && c != '\\') {
            *dst++ = c;
            continue;
        }

        *dst++ = '\\';

        switch (c) {

        case '"':
        case '\\':
            *dst++ = c;
            break;

        case '\n':
            *dst++ = 'n';
            break;

        case '\r':
            *dst++ = 'r';
            break;

        case '\t':
            *dst++ = 't';
            break;

        case '\b':
            *dst++ = 'b';
            break;

        case '\f':
            *dst++ = 'f';
            break;

        default:
            *dst++ = 'u';
            *dst++ = '0';
            *dst++ = '0';
            *dst++ = (unsigned char) ig_json_hex[c >> 4];
            *dst++ = (unsigned char) ig_json_hex[c & 0xf];
        }
    }

    return dst;
}
