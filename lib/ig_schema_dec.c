/*
 * Copyright (C) infergate authors
 *
 * Exact decimals (digits and exponent), the canonical binary form of
 * enum/const values, and the text helpers the compiler and the
 * validator share (excerpts, UTF-8 length, UUIDs, member order).
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


static inline int ig_hex8(const unsigned char *p);


/* exact decimals; s is a valid JSON number literal */

void
ig_dec_parse(ig_dec_t *d, const unsigned char *s, size_t len)
{
    int                   eneg;
    size_t                in, fn, lz;
    int64_t               e, exp;
    const unsigned char  *p, *end, *ip, *fp;

    p = s;
    end = s + len;

    d->neg = 0;

    if (p < end && *p == '-') {
        d->neg = 1;
        p++;
    }

    ip = p;

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }

    in = (size_t) (p - ip);
    fp = p;
    fn = 0;

    if (p < end && *p == '.') {
        p++;
        fp = p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        fn = (size_t) (p - fp);
    }

    e = 0;

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        eneg = 0;

        if (p < end && (*p == '+' || *p == '-')) {
            eneg = (*p == '-');
            p++;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            if (e <= (IG_EXP_MAX - 9) / 10) {
                e = e * 10 + (*p - '0');

            } else {
                e = IG_EXP_MAX;
            }

            p++;
        }

        if (eneg) {
            e = -e;
        }
    }

    while (in && *ip == '0') {
        ip++;
        in--;
    }

    if (in) {
        exp = e + (int64_t) (in > (size_t) IG_EXP_MAX ? IG_EXP_MAX : in);

    } else {
        lz = 0;

        while (lz < fn && fp[lz] == '0') {
            lz++;
        }

        fp += lz;
        fn -= lz;
        exp = e - (int64_t) (lz > (size_t) IG_EXP_MAX ? IG_EXP_MAX : lz);
    }

    while (fn && fp[fn - 1] == '0') {
        fn--;
    }

    if (fn == 0) {
        while (in && ip[in - 1] == '0') {
            in--;
        }
    }

    d->d1 = ip;
    d->n1 = in;
    d->d2 = fp;
    d->n2 = fn;
    d->exp = exp;

    if (in + fn == 0) {
        d->neg = 0;
        d->exp = 0;
    }
}


int
ig_dec_is_integer(const ig_dec_t *d)
{
    size_t  n;

    n = d->n1 + d->n2;

    return n == 0 || (d->exp > 0 && (uint64_t) d->exp >= (uint64_t) n);
}


#define ig_dec_digit(d, i)                                                   \
    ((i) < (d)->n1 ? (d)->d1[i] : (d)->d2[(i) - (d)->n1])


int
ig_dec_cmp(const ig_dec_t *a, const ig_dec_t *b)
{
    int            sa, sb, r;
    size_t         na, nb, n, i;
    unsigned char  ca, cb;

    na = a->n1 + a->n2;
    nb = b->n1 + b->n2;

    sa = (na == 0) ? 0 : (a->neg ? -1 : 1);
    sb = (nb == 0) ? 0 : (b->neg ? -1 : 1);

    if (sa != sb) {
        return (sa < sb) ? -1 : 1;
    }

    if (sa == 0) {
        return 0;
    }

    if (a->exp != b->exp) {
        r = (a->exp < b->exp) ? -1 : 1;
        return r * sa;
    }

    n = (na < nb) ? na : nb;
    r = 0;

    for (i = 0; i < n; i++) {
        ca = ig_dec_digit(a, i);
        cb = ig_dec_digit(b, i);

        if (ca != cb) {
            r = (ca < cb) ? -1 : 1;
            break;
        }
    }

    if (r == 0 && na != nb) {
        r = (na < nb) ? -1 : 1;
    }

    return r * sa;
}


/* a non-negative integer, saturated */

size_t
ig_dec_to_size(const ig_dec_t *d)
{
    size_t   r, n, i;
    unsigned  digit;

    n = d->n1 + d->n2;

    if (n == 0) {
        return 0;
    }

    if (d->exp > 20) {
        return SIZE_MAX;
    }

    r = 0;

    for (i = 0; i < (size_t) d->exp; i++) {
        digit = (i < n) ? (unsigned) (ig_dec_digit(d, i) - '0') : 0;

        if (r > (SIZE_MAX - digit) / 10) {
            return SIZE_MAX;
        }

        r = r * 10 + digit;
    }

    return r;
}


/* an integer of at most 18 digits, exactly */

int
ig_dec_small(const ig_dec_t *d, int64_t *out)
{
    size_t   n, i;
    int64_t  r;

    n = d->n1 + d->n2;

    if (n == 0) {
        *out = 0;
        return 1;
    }

    if (!ig_dec_is_integer(d) || d->exp > 18) {
        return 0;
    }

    r = 0;

    for (i = 0; i < (size_t) d->exp; i++) {
        r = r * 10 + ((i < n) ? ig_dec_digit(d, i) - '0' : 0);
    }

    *out = d->neg ? -r : r;

    return 1;
}


unsigned char *
ig_canon_put_len(unsigned char *p, size_t n)
{
    int       i;
    uint64_t  u;

    u = (uint64_t) n;

    for (i = IG_CANON_LEN - 1; i >= 0; i--) {
        p[i] = (unsigned char) (u & 0xff);
        u >>= 8;
    }

    return p + IG_CANON_LEN;
}


size_t
ig_canon_num_len(const ig_dec_t *d)
{
    size_t  n;

    n = d->n1 + d->n2;

    return (n == 0) ? 2 : 2 + 2 * IG_CANON_LEN + n;
}


unsigned char *
ig_canon_num_write(unsigned char *p, const ig_dec_t *d)
{
    *p++ = 'N';

    if (d->n1 + d->n2 == 0) {
        *p++ = '0';
        return p;
    }

    *p++ = d->neg ? '-' : '+';
    p = ig_canon_put_len(p, (size_t) ((uint64_t) d->exp ^ (1ULL << 63)));
    p = ig_canon_put_len(p, d->n1 + d->n2);

    if (d->n1) {
        memcpy(p, d->d1, d->n1);
        p += d->n1;
    }

    if (d->n2) {
        memcpy(p, d->d2, d->n2);
        p += d->n2;
    }

    return p;
}


int
ig_canon_eq_num(const ig_canon_t *c, const ig_dec_t *d)
{
    unsigned char  head[2 + 2 * IG_CANON_LEN];

    if (c->type != IG_T_NUMBER || c->len != ig_canon_num_len(d)) {
        return 0;
    }

    if (c->len == 2) {
        return 1;
    }

    head[0] = 'N';
    head[1] = d->neg ? '-' : '+';
    (void) ig_canon_put_len(head + 2,
                            (size_t) ((uint64_t) d->exp ^ (1ULL << 63)));
    (void) ig_canon_put_len(head + 2 + IG_CANON_LEN, d->n1 + d->n2);

    if (memcmp(c->p, head, sizeof(head)) != 0) {
        return 0;
    }

    if (d->n1 && memcmp(c->p + sizeof(head), d->d1, d->n1) != 0) {
        return 0;
    }

    if (d->n2 && memcmp(c->p + sizeof(head) + d->n1, d->d2, d->n2) != 0) {
        return 0;
    }

    return 1;
}


int
ig_canon_eq_str(const ig_canon_t *c, const unsigned char *s, size_t len)
{
    return c->type == IG_T_STRING
           && c->len - (1 + IG_CANON_LEN) == len
           && (len == 0 || memcmp(c->p + 1 + IG_CANON_LEN, s, len) == 0);
}


/* helpers */

/* writes "..." (JSON-escaped, at most IG_EXCERPT bytes of s) into buf
 * of IG_EXCERPT_BUF bytes; returns the length */

size_t
ig_excerpt(char *buf, const unsigned char *s, size_t len)
{
    size_t          n;
    unsigned char  *p;

    n = len;

    if (n > IG_EXCERPT) {
        n = IG_EXCERPT;

        /* do not cut a UTF-8 sequence */
        while (n > IG_EXCERPT - 3 && (s[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    p = (unsigned char *) buf;
    *p++ = '"';
    p = ig_json_escape(p, s, n);

    if (n < len) {
        *p++ = '.';
        *p++ = '.';
        *p++ = '.';
    }

    *p++ = '"';
    *p = '\0';

    return (size_t) (p - (unsigned char *) buf);
}


/* a number literal (ASCII), truncated */

size_t
ig_excerpt_lit(char *buf, const unsigned char *s, size_t len)
{
    size_t  n;

    n = (len > IG_EXCERPT) ? IG_EXCERPT : len;

    memcpy(buf, s, n);

    if (n < len) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }

    buf[n] = '\0';

    return n;
}


size_t
ig_utf8_chars(const unsigned char *s, size_t len)
{
    size_t    i, n;
    uint64_t  w;

    /* code points = bytes - continuation bytes (10xxxxxx) */

    n = len;
    i = 0;

    for ( /* void */ ; i + 8 <= len; i += 8) {
        memcpy(&w, s + i, 8);
        w = ((w & ~(w << 1)) >> 7) & 0x0101010101010101ULL;
        n -= (size_t) ((w * 0x0101010101010101ULL) >> 56);
    }

    for ( /* void */ ; i < len; i++) {
        n -= ((s[i] & 0xc0) == 0x80);
    }

    return n;
}


/* 8 ASCII hex digits?  SWAR range checks, no byte >= 0x80 can pass */

static inline int
ig_hex8(const unsigned char *p)
{
    uint64_t  w, l, digit, alpha;

#define IG_B(c)  (0x0101010101010101ULL * (c))

    memcpy(&w, p, 8);

    /* x in [lo, hi] for x < 0x80: high bit of (x + 0x80 - lo) and not
     * of (x + 0x7f - hi); no carry crosses bytes */

    l = (w & IG_B(0x7f)) | IG_B(0x20);

    digit = (w & IG_B(0x7f)) + IG_B(0x80 - '0');
    digit &= ~((w & IG_B(0x7f)) + IG_B(0x7f - '9'));

    alpha = (l + IG_B(0x80 - 'a')) & ~(l + IG_B(0x7f - 'f'));

    return ((digit | alpha) & ~w & IG_B(0x80)) == IG_B(0x80);

#undef IG_B
}


int
ig_uuid_check(const unsigned char *s, size_t len)
{
    unsigned char  hex[32];

    if (len != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-'
        || s[23] != '-')
    {
        return -1;
    }

    memcpy(hex, s, 8);
    memcpy(hex + 8, s + 9, 4);
    memcpy(hex + 12, s + 14, 4);
    memcpy(hex + 16, s + 19, 4);
    memcpy(hex + 20, s + 24, 12);

    return (ig_hex8(hex) && ig_hex8(hex + 8) && ig_hex8(hex + 16)
            && ig_hex8(hex + 24)) ? 0 : -1;
}


/* the member table order: length first, then bytes */

int
ig_name_cmp(const unsigned char *a, size_t alen, const unsigned char *b,
    size_t blen)
{
    if (alen != blen) {
        return (alen < blen) ? -1 : 1;
    }

    return alen ? memcmp(a, b, alen) : 0;
}


int
ig_jmember_cmp(const void *a, const void *b)
{
    const ig_jmember_t  *x = a, *y = b;

    return ig_name_cmp(x->key, x->klen, y->key, y->klen);
}


int
ig_member_cmp(const void *a, const void *b)
{
    const ig_member_t  *x = a, *y = b;

    return ig_name_cmp(x->name, x->len, y->name, y->len);
}
