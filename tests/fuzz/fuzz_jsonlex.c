/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for ig_jsonlex, differential against yajl 2.1 (the
 * oracle, default flags, fed in one piece).
 *
 * Input: byte 0 and 1 seed the split points, byte 2 picks a depth
 * limit; the rest is the document.  It is parsed by yajl, and by the
 * lexer in one piece, in random pieces of 1 to 16 bytes, byte by byte
 * (short inputs), and in two pieces, each piece copied into its own
 * allocation so that ASan catches a read past it.  Every lexer run
 * must agree exactly with the one-piece run (events, payloads, result,
 * error offset and reason), and that run with yajl: the same
 * accept/reject decision and the same events (numbers as literal text,
 * strings unescaped), for rejected documents too.
 *
 * The intentional divergences (ig_jsonlex.h: \f and \v as whitespace,
 * strict UTF-8, unpaired surrogate escapes, an unterminated string
 * after the value) are recognised by an independent check of the input
 * and excluded explicitly: where the lexer stops for one of them, its
 * reason must say so, the input must hold it, and its events must be a
 * prefix of yajl's.
 *
 * A run with the depth limit from byte 2 must give a prefix of the
 * unlimited run's events, failing with "nesting too deep" exactly when
 * the document nests deeper (and is otherwise accepted alike).
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "ig_jsonlex.h"
#include "../ig_test_alloc.h"


typedef struct {
    unsigned char  *p;
    size_t          len;
    size_t          cap;
    size_t          depth;
    size_t          max_depth;
} fz_events_t;


typedef struct {
    int             rc;
    const char     *reason;
    size_t          offset;
    fz_events_t     ev;
} fz_run_t;


static void
fz_put(fz_events_t *e, const void *p, size_t n)
{
    if (e->len + n > e->cap) {
        e->cap = (e->len + n) * 2 + 256;
        e->p = realloc(e->p, e->cap);

        if (e->p == NULL) {
            abort();
        }
    }

    memcpy(e->p + e->len, p, n);
    e->len += n;
}


static void
fz_event(fz_events_t *e, char type, const unsigned char *s, size_t len)
{
    size_t  i;

    fz_put(e, &type, 1);

    if (s != NULL) {
        /* touch every byte so ASan sees bad pointers */
        for (i = 0; i < len; i++) {
            if (s[i] == 0xff && type == '#') {
                abort();
            }
        }

        fz_put(e, &len, sizeof(size_t));
        fz_put(e, s, len);
    }
}


/* yajl */

static int
y_null(void *ctx)
{
    fz_event(ctx, 'n', NULL, 0);
    return 1;
}


static int
y_boolean(void *ctx, int b)
{
    fz_event(ctx, b ? 't' : 'f', NULL, 0);
    return 1;
}


static int
y_number(void *ctx, const char *s, size_t len)
{
    fz_event(ctx, '#', (const unsigned char *) s, len);
    return 1;
}


static int
y_string(void *ctx, const unsigned char *s, size_t len)
{
    fz_event(ctx, 's', s, len);
    return 1;
}


static int
y_start_map(void *ctx)
{
    fz_event(ctx, '{', NULL, 0);
    return 1;
}


static int
y_map_key(void *ctx, const unsigned char *s, size_t len)
{
    fz_event(ctx, 'k', s, len);
    return 1;
}


static int
y_end_map(void *ctx)
{
    fz_event(ctx, '}', NULL, 0);
    return 1;
}


static int
y_start_array(void *ctx)
{
    fz_event(ctx, '[', NULL, 0);
    return 1;
}


static int
y_end_array(void *ctx)
{
    fz_event(ctx, ']', NULL, 0);
    return 1;
}


static const yajl_callbacks  fz_yajl_callbacks = {
    y_null, y_boolean, NULL, NULL, y_number, y_string,
    y_start_map, y_map_key, y_end_map, y_start_array, y_end_array
};


/* the lexer: the same events; containers count the depth */

static int
l_number(void *ctx, const unsigned char *s, size_t len)
{
    fz_event(ctx, '#', s, len);
    return 1;
}


static int
l_start_map(void *ctx)
{
    fz_events_t  *e = ctx;

    fz_event(e, '{', NULL, 0);
    e->depth++;

    if (e->depth > e->max_depth + 1) {
        /* the lexer must have stopped at max_depth + 1 */
        abort();
    }

    return 1;
}


static int
l_end_map(void *ctx)
{
    fz_events_t  *e = ctx;

    fz_event(e, '}', NULL, 0);
    e->depth--;

    return 1;
}


static int
l_start_array(void *ctx)
{
    fz_events_t  *e = ctx;

    fz_event(e, '[', NULL, 0);
    e->depth++;

    if (e->depth > e->max_depth + 1) {
        abort();
    }

    return 1;
}


static int
l_end_array(void *ctx)
{
    fz_events_t  *e = ctx;

    fz_event(e, ']', NULL, 0);
    e->depth--;

    return 1;
}


static const ig_jsonlex_callbacks_t  fz_lex_callbacks = {
    y_null, y_boolean, l_number, y_string,
    l_start_map, y_map_key, l_end_map, l_start_array, l_end_array
};


enum {
    FZ_WHOLE = 0,
    FZ_RANDOM,
    FZ_BYTES,
    FZ_TWO
};


static uint32_t
fz_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;

    return *s;
}


static void
fz_lex(const uint8_t *doc, size_t len, int mode, uint32_t seed,
    unsigned max_depth, fz_run_t *r)
{
    size_t             off, n;
    uint8_t           *piece;
    ig_test_alloc_t    alloc;
    ig_jsonlex_t      *lx;
    yajl_alloc_funcs   af;
    ig_jsonlex_rc_e    rc;

    r->ev.len = 0;
    r->ev.depth = 0;
    r->ev.max_depth = max_depth;
    r->reason = NULL;
    r->offset = 0;

    ig_test_alloc_init(&alloc, &af);

    lx = ig_jsonlex_create(max_depth, &fz_lex_callbacks, &r->ev, &af);
    if (lx == NULL) {
        abort();
    }

    off = 0;
    rc = IG_JSONLEX_OK;
    seed |= 1;

    while (off < len && rc == IG_JSONLEX_OK) {
        switch (mode) {
        case FZ_WHOLE:
            n = len;
            break;
        case FZ_RANDOM:
            n = 1 + fz_rand(&seed) % 16;
            break;
        case FZ_BYTES:
            n = 1;
            break;
        default:
            n = (off == 0) ? seed % (len + 1) : len - off;
        }

        if (n > len - off) {
            n = len - off;
        }

        /* each piece in its own allocation: ASan sees any read past
         * its end */
        piece = malloc(n ? n : 1);
        if (piece == NULL) {
            abort();
        }

        memcpy(piece, doc + off, n);
        rc = ig_jsonlex_feed(lx, piece, n);
        free(piece);

        /* empty feeds change nothing */
        if (rc == IG_JSONLEX_OK && (fz_rand(&seed) & 7) == 0) {
            rc = ig_jsonlex_feed(lx, doc + off, 0);
        }

        off += n;
    }

    if (rc == IG_JSONLEX_OK) {
        rc = ig_jsonlex_finish(lx);
    }

    r->rc = rc;

    if (rc == IG_JSONLEX_ERROR) {
        r->reason = ig_jsonlex_error(lx, &r->offset);

        if (r->reason == NULL || r->offset > len) {
            abort();
        }

    } else if (ig_jsonlex_error(lx, NULL) != NULL) {
        abort();
    }

    /* results stick */
    if (ig_jsonlex_feed(lx, (const unsigned char *) "x", 1) != rc
        && rc != IG_JSONLEX_OK)
    {
        abort();
    }

    ig_jsonlex_destroy(lx);

    if (alloc.live != 0) {
        abort();
    }
}


/* a[0..alen) is b[0..blen) or (prefix) its beginning */

static int
fz_events_eq(const fz_events_t *a, const fz_events_t *b, int prefix)
{
    if (prefix ? a->len > b->len : a->len != b->len) {
        return 0;
    }

    return a->len == 0 || memcmp(a->p, b->p, a->len) == 0;
}


static void
fz_same(const fz_run_t *a, const fz_run_t *b, const char *how)
{
    if (a->rc != b->rc || a->offset != b->offset
        || (a->reason != b->reason
            && (a->reason == NULL || b->reason == NULL
                || strcmp(a->reason, b->reason) != 0))
        || !fz_events_eq(&a->ev, &b->ev, 0))
    {
        fprintf(stderr, "split mismatch (%s): rc %d/%d, %s at %zu / %s at "
                "%zu, events %zu/%zu bytes\n", how, a->rc, b->rc,
                a->reason ? a->reason : "-", a->offset,
                b->reason ? b->reason : "-", b->offset,
                a->ev.len, b->ev.len);
        abort();
    }
}


/* strict UTF-8 (RFC 3629), independent of the lexer's code */

static int
fz_utf8_ok(const uint8_t *s, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp, min;

    for (i = 0; i < len; /* void */ ) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            n = 1;
            cp = s[i] & 0x1f;
            min = 0x80;

        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 2;
            cp = s[i] & 0x0f;
            min = 0x800;

        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 3;
            cp = s[i] & 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        if (len - i <= n) {
            return 0;
        }

        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }

        i += n + 1;
    }

    return 1;
}


/* does a document yajl accepted hold a \u escape leaving a UTF-16
 * surrogate unpaired? */

static unsigned
fz_hex4(const uint8_t *s)
{
    char  buf[5];

    memcpy(buf, s, 4);
    buf[4] = '\0';

    return (unsigned) strtoul(buf, NULL, 16);
}


static int
fz_lone_surrogate(const uint8_t *s, size_t len)
{
    int       in;
    size_t    i;
    unsigned  u;

    in = 0;

    for (i = 0; i < len; i++) {
        if (!in) {
            in = (s[i] == '"');
            continue;
        }

        if (s[i] == '"') {
            in = 0;
            continue;
        }

        if (s[i] != '\\') {
            continue;
        }

        i++;

        if (i + 4 >= len || s[i] != 'u') {
            continue;
        }

        u = fz_hex4(s + i + 1);
        i += 4;

        if (u >= 0xdc00 && u <= 0xdfff) {
            return 1;
        }

        if (u >= 0xd800 && u <= 0xdbff) {
            if (i + 6 >= len || s[i + 1] != '\\' || s[i + 2] != 'u') {
                return 1;
            }

            u = fz_hex4(s + i + 3);

            if (u < 0xdc00 || u > 0xdfff) {
                return 1;
            }

            i += 6;
        }
    }

    return 0;
}


/* no closing quote in s: a string begun before it never ends */

static int
fz_unterminated(const uint8_t *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] == '\\') {
            i++;

        } else if (s[i] == '"') {
            return 0;
        }
    }

    return 1;
}


static int
fz_divergence(const fz_run_t *r, const uint8_t *doc, size_t len)
{
    if (r->rc != IG_JSONLEX_ERROR) {
        return 0;
    }

    if (strcmp(r->reason, "invalid UTF-8 in string") == 0) {
        return !fz_utf8_ok(doc, len);
    }

    if (strcmp(r->reason, "unpaired UTF-16 surrogate") == 0) {
        return fz_lone_surrogate(doc, len);
    }

    /* yajl never finishes a string begun after the value */
    if (strcmp(r->reason, "trailing garbage") == 0 && doc[r->offset] == '"'
        && fz_unterminated(doc + r->offset + 1, len - r->offset - 1))
    {
        return 1;
    }

    /* form feed and vertical tab as whitespace */
    if (r->offset < len && (doc[r->offset] == '\f' || doc[r->offset] == '\v'))
    {
        return strncmp(r->reason, "expected", 8) == 0
               || strcmp(r->reason, "trailing garbage") == 0;
    }

    return 0;
}


static int
fz_nesting(const uint8_t *s, size_t len)
{
    int     in, esc;
    size_t  i, d, max;

    in = 0;
    esc = 0;
    d = 0;
    max = 0;

    for (i = 0; i < len; i++) {
        if (in) {
            if (esc) {
                esc = 0;

            } else if (s[i] == '\\') {
                esc = 1;

            } else if (s[i] == '"') {
                in = 0;
            }

            continue;
        }

        if (s[i] == '"') {
            in = 1;

        } else if (s[i] == '[' || s[i] == '{') {
            if (++d > max) {
                max = d;
            }

        } else if (s[i] == ']' || s[i] == '}') {
            d--;
        }
    }

    return (int) (max > 0x7fffffff ? 0x7fffffff : max);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 yok;
    uint32_t            seed;
    unsigned            depth;
    yajl_status         st;
    yajl_handle         h;
    const uint8_t      *doc;
    size_t              len;

    static fz_events_t  yev;
    static fz_run_t     whole, part, lim;

    if (size < 3) {
        return 0;
    }

    seed = ((uint32_t) data[0] << 8) | data[1];
    depth = data[2] % 8;
    doc = data + 3;
    len = size - 3;

    /* the oracle */

    yev.len = 0;

    h = yajl_alloc(&fz_yajl_callbacks, NULL, &yev);
    if (h == NULL) {
        abort();
    }

    st = yajl_parse(h, doc, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    yok = (st == yajl_status_ok);
    yajl_free(h);

    /* the lexer, whole and split */

    fz_lex(doc, len, FZ_WHOLE, 0, (unsigned) len + 1, &whole);

    fz_lex(doc, len, FZ_RANDOM, seed, (unsigned) len + 1, &part);
    fz_same(&whole, &part, "random");

    if (len <= 512) {
        fz_lex(doc, len, FZ_BYTES, 0, (unsigned) len + 1, &part);
        fz_same(&whole, &part, "bytes");
    }

    fz_lex(doc, len, FZ_TWO, seed, (unsigned) len + 1, &part);
    fz_same(&whole, &part, "two pieces");

    /* against yajl */

    if (whole.rc != IG_JSONLEX_OK && whole.rc != IG_JSONLEX_ERROR) {
        abort();
    }

    if (whole.rc == IG_JSONLEX_OK && !yok) {
        fprintf(stderr, "the lexer accepts what yajl rejects\n");
        abort();
    }

    if (yok && whole.rc == IG_JSONLEX_OK) {
        if (!fz_events_eq(&whole.ev, &yev, 0)) {
            fprintf(stderr, "events differ from yajl\n");
            abort();
        }

    } else if (fz_divergence(&whole, doc, len)) {
        if (!fz_events_eq(&whole.ev, &yev, 1)) {
            fprintf(stderr, "events before a divergence differ\n");
            abort();
        }

    } else if (yok) {
        fprintf(stderr, "yajl accepts, the lexer rejects: %s at %zu\n",
                whole.reason, whole.offset);
        abort();

    } else if (!fz_events_eq(&whole.ev, &yev, 0)) {
        fprintf(stderr, "events differ from yajl (both reject: %s at "
                "%zu)\n", whole.reason, whole.offset);
        abort();
    }

    /* a depth limit */

    fz_lex(doc, len, FZ_RANDOM, seed, depth, &lim);

    if (!fz_events_eq(&lim.ev, &whole.ev, 1)) {
        fprintf(stderr, "depth-limited events are not a prefix\n");
        abort();
    }

    if (lim.rc == IG_JSONLEX_ERROR
        && strcmp(lim.reason, "nesting too deep") == 0)
    {
        if (doc[lim.offset] != '[' && doc[lim.offset] != '{') {
            abort();
        }

    } else {
        fz_same(&whole, &lim, "depth limit");

        if (whole.rc == IG_JSONLEX_OK && fz_nesting(doc, len) > (int) depth)
        {
            fprintf(stderr, "nesting beyond the limit accepted\n");
            abort();
        }
    }

    return 0;
}
