/*
 * Copyright (C) infergate authors
 *
 * Resumable JSON parser.  One loop dispatches on the grammar state and
 * the first byte of each token; a token cut by the end of a buffer
 * leaves a token state (string, number, literal and where inside it)
 * and its bytes so far in the scratch buffer, and the next feed resumes
 * it before entering the loop again.
 *
 * Strings are scanned 16 bytes at a time with SSE2 (8 with SWAR
 * elsewhere) for '"', '\\', control bytes and bytes >= 0x80; ASCII
 * runs cost a few instructions per block, UTF-8 sequences are checked
 * in place, and only escapes and buffer ends copy bytes.
 */


#include <stdlib.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "ig_jsonlex.h"


/* grammar states */
#define IG_JL_VALUE        0     /* start, after ':', after ',' in [] */
#define IG_JL_ARR_FIRST    1     /* after '[': a value or ']' */
#define IG_JL_OBJ_FIRST    2     /* after '{': a key or '}' */
#define IG_JL_OBJ_KEY      3     /* after ',' in {}: a key */
#define IG_JL_COLON        4
#define IG_JL_ARR_NEXT     5     /* after an item: ',' or ']' */
#define IG_JL_OBJ_NEXT     6     /* after a member: ',' or '}' */
#define IG_JL_DONE         7

/* the token a buffer ended in */
#define IG_JL_TOK_NONE     0
#define IG_JL_TOK_STRING   1
#define IG_JL_TOK_KEY      2
#define IG_JL_TOK_NUMBER   3
#define IG_JL_TOK_LITERAL  4

/* where inside a string */
#define IG_JL_STR_CHARS    0
#define IG_JL_STR_UTF8     1     /* lx->need continuation bytes to go */
#define IG_JL_STR_ESC      2     /* after '\' */
#define IG_JL_STR_HEX      3     /* \uXXXX, lx->nhex digits read */
#define IG_JL_STR_LOW_BS   4     /* after a high surrogate: '\' */
#define IG_JL_STR_LOW_U    5     /* then 'u' */
#define IG_JL_STR_LOW_HEX  6     /* then the low surrogate's digits */

/* number automaton: states 0-8, and where a byte leads */
#define IG_JL_N_START      0
#define IG_JL_N_END        0x10  /* the number ended before this byte */
#define IG_JL_N_ERR        0x20  /* the byte cannot be there */

/* results of the slow paths */
#define IG_JL_TOKEN_DONE   0
#define IG_JL_TOKEN_MORE   1
#define IG_JL_TOKEN_FAIL   2


struct ig_jsonlex_s {
    const ig_jsonlex_callbacks_t  *cb;
    void                          *ctx;
    yajl_alloc_funcs               af;

    const unsigned char           *buf;       /* the buffer being fed */
    size_t                         consumed;  /* bytes before it */

    uint64_t                      *stack;     /* a bit a level: 1 = {} */
    size_t                         depth;
    size_t                         max_depth;

    unsigned                       state;
    unsigned                       after;     /* state after a value */
    unsigned                       tok;
    unsigned                       sub;       /* state inside tok */
    unsigned                       nhex;
    uint32_t                       cp;        /* \u digits, or the literal */
    uint32_t                       high;      /* pending high surrogate */
    unsigned                       need;
    unsigned char                  lo;        /* range of the next */
    unsigned char                  hi;        /* UTF-8 byte */
    unsigned char                  assembling;
    unsigned char                  allocated; /* by ig_jsonlex_create */

    ig_jsonlex_rc_e                rc;
    const char                    *err;
    size_t                         err_off;

    unsigned char                 *scratch;
    size_t                         slen;
    size_t                         scap;
    unsigned char                  inline_buf[IG_JSONLEX_INLINE];
};


static void *ig_jl_malloc(void *ctx, size_t size);
static void *ig_jl_realloc(void *ctx, void *p, size_t size);
static void ig_jl_free(void *ctx, void *p);
static inline const unsigned char *ig_jl_scan(const unsigned char *p,
    const unsigned char *end);
static int ig_jl_fail(ig_jsonlex_t *lx, const unsigned char *p,
    const char *reason);
static int ig_jl_grow(ig_jsonlex_t *lx, size_t n);
static inline int ig_jl_append(ig_jsonlex_t *lx, const unsigned char *s,
    size_t n);
static int ig_jl_push(ig_jsonlex_t *lx, const unsigned char *p,
    unsigned obj);
static inline void ig_jl_pop(ig_jsonlex_t *lx);
static unsigned ig_jl_utf8_lead(unsigned c, unsigned char *lo,
    unsigned char *hi);
static int ig_jl_string(ig_jsonlex_t *lx, const unsigned char *seg,
    const unsigned char **pp, const unsigned char *end,
    const unsigned char **out, size_t *outlen);
static int ig_jl_number(ig_jsonlex_t *lx, const unsigned char **pp,
    const unsigned char *end);
static int ig_jl_literal(ig_jsonlex_t *lx, const unsigned char **pp,
    const unsigned char *end);
static int ig_jl_resume(ig_jsonlex_t *lx, const unsigned char **pp,
    const unsigned char *end);


const yajl_alloc_funcs  ig_jsonlex_malloc_funcs = {
    .malloc = ig_jl_malloc,
    .realloc = ig_jl_realloc,
    .free = ig_jl_free,
    .ctx = NULL
};


/* space, \t, \n, \r */
static const uint32_t  ig_jl_ws[8] = {
    0x00002600, 0x00000001, 0x00000000, 0x00000000,
    0x00000000, 0x00000000, 0x00000000, 0x00000000
};

/* what stops the string scan: '"', '\\', below 0x20, 0x80 and up */
static const uint32_t  ig_jl_special[8] = {
    0xffffffff, 0x00000004, 0x10000000, 0x00000000,
    0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff
};

#define ig_jl_in(map, c)  ((map)[(c) >> 5] & (1u << ((c) & 0x1f)))

/* byte classes of the number automaton: 0 other, 1 '0', 2 '1'-'9',
 * 3 '.', 4 'e' 'E', 5 '+', 6 '-' */
static const unsigned char  ig_jl_ncls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 6, 3, 0,
    1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
};

#define E  IG_JL_N_END
#define X  IG_JL_N_ERR

/*
 * states: 0 start, 1 after '-', 2 a leading '0', 3 integer digits,
 * 4 after '.', 5 fraction digits, 6 after 'e', 7 after the exponent
 * sign, 8 exponent digits; 2, 3, 5 and 8 may end the number
 */
static const unsigned char  ig_jl_ntrans[9][8] = {
    /*          other '0' 1-9 '.' 'e' '+' '-' */
    /* 0 */   {   X,   2,  3,  X,  X,  X,  1,  X },
    /* 1 */   {   X,   2,  3,  X,  X,  X,  X,  X },
    /* 2 */   {   E,   E,  E,  4,  6,  E,  E,  E },
    /* 3 */   {   E,   3,  3,  4,  6,  E,  E,  E },
    /* 4 */   {   X,   5,  5,  X,  X,  X,  X,  X },
    /* 5 */   {   E,   5,  5,  E,  6,  E,  E,  E },
    /* 6 */   {   X,   8,  8,  X,  X,  7,  7,  X },
    /* 7 */   {   X,   8,  8,  X,  X,  X,  X,  X },
    /* 8 */   {   E,   8,  8,  E,  E,  E,  E,  E }
};

#undef E
#undef X

#define ig_jl_num_final(st)  ((0x12cu >> (st)) & 1)   /* 2, 3, 5, 8 */

static const char  *ig_jl_lits[3] = { "true", "false", "null" };
static const unsigned char  ig_jl_lit_len[3] = { 4, 5, 4 };


size_t
ig_jsonlex_size(unsigned max_depth)
{
    size_t  size;

    size = (sizeof(ig_jsonlex_t) + 7) & ~(size_t) 7;

    return size + ((size_t) max_depth + 63) / 64 * sizeof(uint64_t);
}


ig_jsonlex_t *
ig_jsonlex_init(void *mem, unsigned max_depth,
    const ig_jsonlex_callbacks_t *cb, void *ctx, const yajl_alloc_funcs *af)
{
    ig_jsonlex_t  *lx;

    lx = mem;

    memset(lx, 0, offsetof(ig_jsonlex_t, inline_buf));

    lx->cb = cb;
    lx->ctx = ctx;

    lx->af = (af != NULL) ? *af : ig_jsonlex_malloc_funcs;

    lx->stack = (uint64_t *) ((unsigned char *) mem
                              + ((sizeof(ig_jsonlex_t) + 7) & ~(size_t) 7));
    lx->max_depth = max_depth;
    lx->state = IG_JL_VALUE;
    lx->after = IG_JL_DONE;
    lx->scratch = lx->inline_buf;
    lx->scap = IG_JSONLEX_INLINE;

    return lx;
}


void
ig_jsonlex_cleanup(ig_jsonlex_t *lx)
{
    if (lx->scratch != lx->inline_buf) {
        lx->af.free(lx->af.ctx, lx->scratch);
        lx->scratch = lx->inline_buf;
        lx->scap = IG_JSONLEX_INLINE;
    }
}


ig_jsonlex_t *
ig_jsonlex_create(unsigned max_depth, const ig_jsonlex_callbacks_t *cb,
    void *ctx, const yajl_alloc_funcs *af)
{
    void          *mem;
    ig_jsonlex_t  *lx;

    if (af == NULL) {
        af = &ig_jsonlex_malloc_funcs;
    }

    mem = af->malloc(af->ctx, ig_jsonlex_size(max_depth));
    if (mem == NULL) {
        return NULL;
    }

    lx = ig_jsonlex_init(mem, max_depth, cb, ctx, af);
    lx->allocated = 1;

    return lx;
}


void
ig_jsonlex_destroy(ig_jsonlex_t *lx)
{
    if (lx == NULL) {
        return;
    }

    ig_jsonlex_cleanup(lx);

    if (lx->allocated) {
        lx->af.free(lx->af.ctx, lx);
    }
}


const char *
ig_jsonlex_error(const ig_jsonlex_t *lx, size_t *offset)
{
    if (lx->rc != IG_JSONLEX_ERROR) {
        return NULL;
    }

    if (offset != NULL) {
        *offset = lx->err_off;
    }

    return lx->err;
}


static void *
ig_jl_malloc(void *ctx, size_t size)
{
    (void) ctx;
    return malloc(size);
}


static void *
ig_jl_realloc(void *ctx, void *p, size_t size)
{
    (void) ctx;
    return realloc(p, size);
}


static void
ig_jl_free(void *ctx, void *p)
{
    (void) ctx;
    free(p);
}


/* the first '"', '\\', control byte or byte >= 0x80 at or after p */

static inline const unsigned char *
ig_jl_scan(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    unsigned  mask;
    __m128i   x, m, quote, bslash, space;

    quote = _mm_set1_epi8('"');
    bslash = _mm_set1_epi8('\\');
    space = _mm_set1_epi8(' ');

    while (end - p >= 16) {
        x = _mm_loadu_si128((const __m128i *) (const void *) p);

        /* signed: bytes >= 0x80 are negative, so below ' ' too */
        m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                      _mm_cmpeq_epi8(x, bslash)),
                         _mm_cmplt_epi8(x, space));

        mask = (unsigned) _mm_movemask_epi8(m);

        if (mask) {
            return p + __builtin_ctz(mask);
        }

        p += 16;
    }
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    {
    uint64_t  w, t, u, m;

#define IG_JL_ONES   0x0101010101010101ULL
#define IG_JL_HIGHS  0x8080808080808080ULL

    /*
     * (x - 0x01..) & ~x & 0x80.. flags zero bytes, and may flag bytes
     * only after a true hit, so the lowest flag is exact
     */

    while (end - p >= 8) {
        memcpy(&w, p, 8);

        t = w ^ (IG_JL_ONES * '"');
        u = w ^ (IG_JL_ONES * '\\');

        m = ((t - IG_JL_ONES) & ~t)
            | ((u - IG_JL_ONES) & ~u)
            | ((w - IG_JL_ONES * ' ') & ~w)
            | w;

        m &= IG_JL_HIGHS;

        if (m) {
            return p + (__builtin_ctzll(m) >> 3);
        }

        p += 8;
    }

#undef IG_JL_ONES
#undef IG_JL_HIGHS
    }
#endif

    while (p < end && !ig_jl_in(ig_jl_special, *p)) {
        p++;
    }

    return p;
}


static int
ig_jl_fail(ig_jsonlex_t *lx, const unsigned char *p, const char *reason)
{
    lx->rc = IG_JSONLEX_ERROR;
    lx->err = reason;
    lx->err_off = lx->consumed + (size_t) (p - lx->buf);

    return IG_JL_TOKEN_FAIL;
}


static int
ig_jl_grow(ig_jsonlex_t *lx, size_t n)
{
    size_t          cap;
    unsigned char  *p;

    if (n > SIZE_MAX / 2 - lx->slen) {
        lx->rc = IG_JSONLEX_NOMEM;
        return -1;
    }

    cap = lx->scap * 2;

    if (cap < lx->slen + n) {
        cap = lx->slen + n;
    }

    if (lx->scratch == lx->inline_buf) {
        p = lx->af.malloc(lx->af.ctx, cap);

        if (p != NULL) {
            memcpy(p, lx->scratch, lx->slen);
        }

    } else {
        p = lx->af.realloc(lx->af.ctx, lx->scratch, cap);
    }

    if (p == NULL) {
        lx->rc = IG_JSONLEX_NOMEM;
        return -1;
    }

    lx->scratch = p;
    lx->scap = cap;

    return 0;
}


static inline int
ig_jl_append(ig_jsonlex_t *lx, const unsigned char *s, size_t n)
{
    if (n > lx->scap - lx->slen && ig_jl_grow(lx, n) != 0) {
        return -1;
    }

    if (n) {
        memcpy(lx->scratch + lx->slen, s, n);
        lx->slen += n;
    }

    return 0;
}


static int
ig_jl_push(ig_jsonlex_t *lx, const unsigned char *p, unsigned obj)
{
    size_t    d;
    uint64_t  bit;

    d = lx->depth;

    if (d >= lx->max_depth) {
        return ig_jl_fail(lx, p, "nesting too deep");
    }

    bit = (uint64_t) 1 << (d & 63);

    if (obj) {
        lx->stack[d >> 6] |= bit;
        lx->after = IG_JL_OBJ_NEXT;

    } else {
        lx->stack[d >> 6] &= ~bit;
        lx->after = IG_JL_ARR_NEXT;
    }

    lx->depth = d + 1;

    return 0;
}


static inline void
ig_jl_pop(ig_jsonlex_t *lx)
{
    size_t  d;

    d = --lx->depth;

    if (d == 0) {
        lx->after = IG_JL_DONE;

    } else {
        d--;
        lx->after = ((lx->stack[d >> 6] >> (d & 63)) & 1) ? IG_JL_OBJ_NEXT
                                                          : IG_JL_ARR_NEXT;
    }
}


/* continuation bytes after a UTF-8 lead byte (0: not a lead byte) and
 * the range of the first one (RFC 3629) */

static unsigned
ig_jl_utf8_lead(unsigned c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xbf;

    if (c < 0xc2) {
        return 0;
    }

    if (c < 0xe0) {
        return 1;
    }

    if (c < 0xf0) {
        if (c == 0xe0) {
            *lo = 0xa0;

        } else if (c == 0xed) {
            *hi = 0x9f;
        }

        return 2;
    }

    if (c < 0xf5) {
        if (c == 0xf0) {
            *lo = 0x90;

        } else if (c == 0xf4) {
            *hi = 0x8f;
        }

        return 3;
    }

    return 0;
}


/*
 * A string beyond the fast path: escapes, non-ASCII bytes, the end of
 * the buffer.  seg is the first byte not yet assembled (the start of
 * the string, or of the buffer when resuming), *pp where to go on,
 * lx->sub where inside the string.  Returns IG_JL_TOKEN_DONE with the
 * value in *out and *pp past the closing quote, IG_JL_TOKEN_MORE when
 * the buffer ran out (its bytes kept), or IG_JL_TOKEN_FAIL.
 */

static int
ig_jl_string(ig_jsonlex_t *lx, const unsigned char *seg,
    const unsigned char **pp, const unsigned char *end,
    const unsigned char **out, size_t *outlen)
{
    int                   h;
    unsigned              c, n;
    uint32_t              cp;
    unsigned char         lo, hi, utf[4];
    const unsigned char  *p;

    p = *pp;

    switch (lx->sub) {

    case IG_JL_STR_UTF8:
        goto utf8;

    case IG_JL_STR_ESC:
        goto esc;

    case IG_JL_STR_HEX:
    case IG_JL_STR_LOW_HEX:
        goto hex;

    case IG_JL_STR_LOW_BS:
        goto low_bs;

    case IG_JL_STR_LOW_U:
        goto low_u;

    default:
        break;
    }

chars:

    p = ig_jl_scan(p, end);

    if (p == end) {
        goto more;
    }

    c = *p;

    if (c == '"') {
        if (lx->assembling) {
            if (ig_jl_append(lx, seg, (size_t) (p - seg)) != 0) {
                return IG_JL_TOKEN_FAIL;
            }

            lx->assembling = 0;
            *out = lx->scratch;
            *outlen = lx->slen;

        } else {
            *out = seg;
            *outlen = (size_t) (p - seg);
        }

        *pp = p + 1;

        return IG_JL_TOKEN_DONE;
    }

    if (c == '\\') {
        if (!lx->assembling) {
            lx->assembling = 1;
            lx->slen = 0;
        }

        if (ig_jl_append(lx, seg, (size_t) (p - seg)) != 0) {
            return IG_JL_TOKEN_FAIL;
        }

        p++;
        goto esc;
    }

    if (c < 0x20) {
        return ig_jl_fail(lx, p, "control character in string");
    }

    n = ig_jl_utf8_lead(c, &lo, &hi);

    if (n == 0) {
        return ig_jl_fail(lx, p, "invalid UTF-8 in string");
    }

    if ((size_t) (end - p) > n) {
        /* the whole sequence is here */

        if (p[1] < lo || p[1] > hi) {
            return ig_jl_fail(lx, p + 1, "invalid UTF-8 in string");
        }

        if (n > 1 && (p[2] & 0xc0) != 0x80) {
            return ig_jl_fail(lx, p + 2, "invalid UTF-8 in string");
        }

        if (n > 2 && (p[3] & 0xc0) != 0x80) {
            return ig_jl_fail(lx, p + 3, "invalid UTF-8 in string");
        }

        p += n + 1;
        goto chars;
    }

    p++;
    lx->need = n;
    lx->lo = lo;
    lx->hi = hi;

utf8:

    lx->sub = IG_JL_STR_UTF8;

    while (lx->need) {
        if (p == end) {
            goto more;
        }

        if (*p < lx->lo || *p > lx->hi) {
            return ig_jl_fail(lx, p, "invalid UTF-8 in string");
        }

        p++;
        lx->need--;
        lx->lo = 0x80;
        lx->hi = 0xbf;
    }

    lx->sub = IG_JL_STR_CHARS;
    goto chars;

esc:

    lx->sub = IG_JL_STR_ESC;

    if (p == end) {
        goto more;
    }

    switch (*p) {

    case '"':
    case '\\':
    case '/':
        utf[0] = *p;
        break;

    case 'b':
        utf[0] = '\b';
        break;

    case 'f':
        utf[0] = '\f';
        break;

    case 'n':
        utf[0] = '\n';
        break;

    case 'r':
        utf[0] = '\r';
        break;

    case 't':
        utf[0] = '\t';
        break;

    case 'u':
        p++;
        lx->sub = IG_JL_STR_HEX;
        lx->nhex = 0;
        lx->cp = 0;
        goto hex;

    default:
        return ig_jl_fail(lx, p, "invalid escape");
    }

    if (ig_jl_append(lx, utf, 1) != 0) {
        return IG_JL_TOKEN_FAIL;
    }

    p++;
    seg = p;
    lx->sub = IG_JL_STR_CHARS;
    goto chars;

hex:

    while (lx->nhex < 4) {
        if (p == end) {
            goto more;
        }

        c = *p;

        if (c - '0' < 10) {
            h = (int) (c - '0');

        } else if ((c | 0x20) - 'a' < 6) {
            h = (int) ((c | 0x20) - 'a' + 10);

        } else {
            return ig_jl_fail(lx, p, "invalid \\u escape");
        }

        lx->cp = (lx->cp << 4) | (uint32_t) h;
        lx->nhex++;
        p++;
    }

    cp = lx->cp;

    if (lx->sub == IG_JL_STR_HEX) {
        if (cp >= 0xd800 && cp <= 0xdbff) {
            lx->high = cp;
            goto low_bs;
        }

        if (cp >= 0xdc00 && cp <= 0xdfff) {
            return ig_jl_fail(lx, p - 1, "unpaired UTF-16 surrogate");
        }

    } else {
        if (cp < 0xdc00 || cp > 0xdfff) {
            return ig_jl_fail(lx, p - 1, "unpaired UTF-16 surrogate");
        }

        cp = 0x10000 + ((lx->high - 0xd800) << 10) + (cp - 0xdc00);
    }

    if (cp < 0x80) {
        utf[0] = (unsigned char) cp;
        n = 1;

    } else if (cp < 0x800) {
        utf[0] = (unsigned char) (0xc0 | (cp >> 6));
        utf[1] = (unsigned char) (0x80 | (cp & 0x3f));
        n = 2;

    } else if (cp < 0x10000) {
        utf[0] = (unsigned char) (0xe0 | (cp >> 12));
        utf[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        utf[2] = (unsigned char) (0x80 | (cp & 0x3f));
        n = 3;

    } else {
        utf[0] = (unsigned char) (0xf0 | (cp >> 18));
        utf[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
        utf[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        utf[3] = (unsigned char) (0x80 | (cp & 0x3f));
        n = 4;
    }

    if (ig_jl_append(lx, utf, n) != 0) {
        return IG_JL_TOKEN_FAIL;
    }

    seg = p;
    lx->sub = IG_JL_STR_CHARS;
    goto chars;

low_bs:

    lx->sub = IG_JL_STR_LOW_BS;

    if (p == end) {
        goto more;
    }

    if (*p != '\\') {
        return ig_jl_fail(lx, p, "unpaired UTF-16 surrogate");
    }

    p++;

low_u:

    lx->sub = IG_JL_STR_LOW_U;

    if (p == end) {
        goto more;
    }

    if (*p != 'u') {
        return ig_jl_fail(lx, p, "unpaired UTF-16 surrogate");
    }

    p++;
    lx->sub = IG_JL_STR_LOW_HEX;
    lx->nhex = 0;
    lx->cp = 0;
    goto hex;

more:

    if (!lx->assembling) {
        lx->assembling = 1;
        lx->slen = 0;
    }

    if (lx->sub <= IG_JL_STR_UTF8
        && ig_jl_append(lx, seg, (size_t) (end - seg)) != 0)
    {
        return IG_JL_TOKEN_FAIL;
    }

    *pp = end;

    return IG_JL_TOKEN_MORE;
}


/* a number in the scratch buffer goes on from *pp (lx->sub: the state) */

static int
ig_jl_number(ig_jsonlex_t *lx, const unsigned char **pp,
    const unsigned char *end)
{
    unsigned              st, t;
    const unsigned char  *p, *s;

    s = *pp;
    p = s;
    st = lx->sub;

    for ( ;; ) {
        if (p == end) {
            lx->sub = st;
            *pp = end;

            if (ig_jl_append(lx, s, (size_t) (end - s)) != 0) {
                return IG_JL_TOKEN_FAIL;
            }

            return IG_JL_TOKEN_MORE;
        }

        t = ig_jl_ntrans[st][ig_jl_ncls[*p]];

        if (t >= IG_JL_N_END) {
            break;
        }

        st = t;
        p++;
    }

    if (t == IG_JL_N_ERR) {
        return ig_jl_fail(lx, p, "invalid number");
    }

    *pp = p;

    if (ig_jl_append(lx, s, (size_t) (p - s)) != 0) {
        return IG_JL_TOKEN_FAIL;
    }

    return IG_JL_TOKEN_DONE;
}


/* a literal goes on from *pp: lx->cp is which, lx->sub bytes matched */

static int
ig_jl_literal(ig_jsonlex_t *lx, const unsigned char **pp,
    const unsigned char *end)
{
    const char           *lit;
    const unsigned char  *p;

    p = *pp;
    lit = ig_jl_lits[lx->cp];

    while (lx->sub < ig_jl_lit_len[lx->cp]) {
        if (p == end) {
            *pp = p;
            return IG_JL_TOKEN_MORE;
        }

        if (*p != (unsigned char) lit[lx->sub]) {
            return ig_jl_fail(lx, p, "invalid literal");
        }

        p++;
        lx->sub++;
    }

    *pp = p;

    return IG_JL_TOKEN_DONE;
}


/* finishes the token the previous buffer ended in */

static int
ig_jl_resume(ig_jsonlex_t *lx, const unsigned char **pp,
    const unsigned char *end)
{
    int                   r, ok;
    size_t                n;
    const unsigned char  *s;

    switch (lx->tok) {

    case IG_JL_TOK_STRING:
    case IG_JL_TOK_KEY:
        r = ig_jl_string(lx, *pp, pp, end, &s, &n);

        if (r != IG_JL_TOKEN_DONE) {
            return r;
        }

        if (lx->tok == IG_JL_TOK_KEY) {
            ok = lx->cb->map_key(lx->ctx, s, n);
            lx->state = IG_JL_COLON;

        } else {
            ok = lx->cb->string(lx->ctx, s, n);
            lx->state = lx->after;
        }

        break;

    case IG_JL_TOK_NUMBER:
        r = ig_jl_number(lx, pp, end);

        if (r != IG_JL_TOKEN_DONE) {
            return r;
        }

        ok = lx->cb->number(lx->ctx, lx->scratch, lx->slen);
        lx->state = lx->after;
        break;

    default: /* IG_JL_TOK_LITERAL */
        r = ig_jl_literal(lx, pp, end);

        if (r != IG_JL_TOKEN_DONE) {
            return r;
        }

        if (lx->cp == 2) {
            ok = lx->cb->null(lx->ctx);

        } else {
            ok = lx->cb->boolean(lx->ctx, lx->cp == 0);
        }

        lx->state = lx->after;
    }

    lx->tok = IG_JL_TOK_NONE;

    if (!ok) {
        lx->rc = IG_JSONLEX_CANCELLED;
        return IG_JL_TOKEN_FAIL;
    }

    return IG_JL_TOKEN_DONE;
}


ig_jsonlex_rc_e
ig_jsonlex_feed(ig_jsonlex_t *lx, const unsigned char *buf, size_t len)
{
    int                            r, ok;
    size_t                         outlen;
    unsigned                       state, c, st, t;
    uint32_t                       w;
    const unsigned char           *p, *end, *s, *q, *sp, *out;
    const ig_jsonlex_callbacks_t  *cb;
    void                          *ctx;

    if (lx->rc != IG_JSONLEX_OK || len == 0) {
        return lx->rc;
    }

    p = buf;
    end = buf + len;
    lx->buf = buf;

    if (lx->tok != IG_JL_TOK_NONE) {
        /* the slow paths get their own pointers: p, s and q stay in
         * registers across the callbacks */
        sp = p;
        r = ig_jl_resume(lx, &sp, end);
        p = sp;

        if (r == IG_JL_TOKEN_FAIL) {
            return lx->rc;
        }

        if (r == IG_JL_TOKEN_MORE) {
            lx->consumed += len;
            return IG_JSONLEX_OK;
        }
    }

    cb = lx->cb;
    ctx = lx->ctx;
    state = lx->state;

    for ( ;; ) {

        if (p == end) {
            break;
        }

        c = *p;

        if (c <= ' ' && ig_jl_in(ig_jl_ws, c)) {
            do {
                if (++p == end) {
                    goto done;
                }

                c = *p;
            } while (ig_jl_in(ig_jl_ws, c));
        }

        switch (state) {

        case IG_JL_VALUE:
            goto value;

        case IG_JL_ARR_FIRST:
            if (c == ']') {
                goto end_array;
            }

            goto value;

        case IG_JL_OBJ_FIRST:
            if (c == '"') {
                goto key;
            }

            if (c == '}') {
                goto end_map;
            }

            ig_jl_fail(lx, p, "expected a string key or '}'");
            return lx->rc;

        case IG_JL_OBJ_KEY:
            if (c == '"') {
                goto key;
            }

            ig_jl_fail(lx, p, "expected a string key");
            return lx->rc;

        case IG_JL_COLON:
            if (c == ':') {
                p++;
                state = IG_JL_VALUE;
                continue;
            }

            ig_jl_fail(lx, p, "expected ':'");
            return lx->rc;

        case IG_JL_ARR_NEXT:
        case IG_JL_OBJ_NEXT:
            goto next;

        default: /* IG_JL_DONE */
            ig_jl_fail(lx, p, "trailing garbage");
            return lx->rc;
        }

    value:

        switch (c) {

        case '"':
            s = p + 1;
            q = ig_jl_scan(s, end);

            if (q < end && *q == '"') {
                ok = cb->string(ctx, s, (size_t) (q - s));
                p = q + 1;
                goto value_done;
            }

            lx->tok = IG_JL_TOK_STRING;
            lx->sub = IG_JL_STR_CHARS;
            lx->assembling = 0;

            sp = q;
            r = ig_jl_string(lx, s, &sp, end, &out, &outlen);

            if (r == IG_JL_TOKEN_MORE) {
                goto done;
            }

            if (r == IG_JL_TOKEN_FAIL) {
                return lx->rc;
            }

            lx->tok = IG_JL_TOK_NONE;
            ok = cb->string(ctx, out, outlen);
            p = sp;
            goto value_done;

        case '{':
            if (!cb->start_map(ctx)) {
                goto cancelled;
            }

            if (ig_jl_push(lx, p, 1) != 0) {
                return lx->rc;
            }

            state = IG_JL_OBJ_FIRST;

            if (++p < end && *p == '"') {
                goto key;
            }

            continue;

        case '[':
            if (!cb->start_array(ctx)) {
                goto cancelled;
            }

            if (ig_jl_push(lx, p, 0) != 0) {
                return lx->rc;
            }

            p++;
            state = IG_JL_ARR_FIRST;
            continue;

        case 't':
            if (end - p >= 4) {
                memcpy(&w, p, 4);

                if (memcmp(&w, "true", 4) == 0) {
                    ok = cb->boolean(ctx, 1);
                    p += 4;
                    goto value_done;
                }
            }

            lx->cp = 0;
            goto literal;

        case 'f':
            if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
                ok = cb->boolean(ctx, 0);
                p += 5;
                goto value_done;
            }

            lx->cp = 1;
            goto literal;

        case 'n':
            if (end - p >= 4) {
                memcpy(&w, p, 4);

                if (memcmp(&w, "null", 4) == 0) {
                    ok = cb->null(ctx);
                    p += 4;
                    goto value_done;
                }
            }

            lx->cp = 2;
            goto literal;

        case '-':
        case '0':
        case '1':
        case '2':
        case '3':
        case '4':
        case '5':
        case '6':
        case '7':
        case '8':
        case '9':
            s = p;
            st = IG_JL_N_START;

            for ( ;; ) {
                if (p == end) {
                    lx->tok = IG_JL_TOK_NUMBER;
                    lx->sub = st;
                    lx->slen = 0;

                    if (ig_jl_append(lx, s, (size_t) (end - s)) != 0) {
                        return lx->rc;
                    }

                    goto done;
                }

                t = ig_jl_ntrans[st][ig_jl_ncls[*p]];

                if (t >= IG_JL_N_END) {
                    break;
                }

                st = t;
                p++;
            }

            if (t == IG_JL_N_ERR) {
                ig_jl_fail(lx, p, "invalid number");
                return lx->rc;
            }

            ok = cb->number(ctx, s, (size_t) (p - s));
            goto value_done;

        default:
            ig_jl_fail(lx, p, (state == IG_JL_ARR_FIRST)
                              ? "expected a value or ']'"
                              : "expected a value");
            return lx->rc;
        }

    literal:

        /* a literal cut by the end of the buffer, or misspelt */

        lx->sub = 1;
        p++;

        sp = p;
        r = ig_jl_literal(lx, &sp, end);
        p = sp;

        if (r == IG_JL_TOKEN_MORE) {
            lx->tok = IG_JL_TOK_LITERAL;
            goto done;
        }

        if (r == IG_JL_TOKEN_FAIL) {
            return lx->rc;
        }

        ok = (lx->cp == 2) ? cb->null(ctx) : cb->boolean(ctx, lx->cp == 0);

    value_done:

        if (!ok) {
            goto cancelled;
        }

    after_value:

        /* compact JSON goes on at once: ',' and the next key or value,
         * or the end of the container */

        state = lx->after;

        if (p == end || state == IG_JL_DONE) {
            continue;
        }

        c = *p;

    next:

        if (c == ',') {
            p++;

            if (state == IG_JL_OBJ_NEXT) {
                state = IG_JL_OBJ_KEY;

                if (p < end && *p == '"') {
                    goto key;
                }

                continue;
            }

            state = IG_JL_VALUE;

            if (p < end && *p > ' ') {
                c = *p;
                goto value;
            }

            continue;
        }

        if (state == IG_JL_OBJ_NEXT) {
            if (c == '}') {
                goto end_map;
            }

            if (ig_jl_in(ig_jl_ws, c)) {
                continue;
            }

            ig_jl_fail(lx, p, "expected ',' or '}'");
            return lx->rc;
        }

        if (c == ']') {
            goto end_array;
        }

        if (ig_jl_in(ig_jl_ws, c)) {
            continue;
        }

        ig_jl_fail(lx, p, "expected ',' or ']'");
        return lx->rc;

    key:

        s = p + 1;
        q = ig_jl_scan(s, end);

        if (q < end && *q == '"') {
            ok = cb->map_key(ctx, s, (size_t) (q - s));
            p = q + 1;

        } else {
            lx->tok = IG_JL_TOK_KEY;
            lx->sub = IG_JL_STR_CHARS;
            lx->assembling = 0;

            sp = q;
            r = ig_jl_string(lx, s, &sp, end, &out, &outlen);

            if (r == IG_JL_TOKEN_MORE) {
                goto done;
            }

            if (r == IG_JL_TOKEN_FAIL) {
                return lx->rc;
            }

            lx->tok = IG_JL_TOK_NONE;
            ok = cb->map_key(ctx, out, outlen);
            p = sp;
        }

        if (!ok) {
            goto cancelled;
        }

        state = IG_JL_COLON;

        if (p < end && *p == ':') {
            state = IG_JL_VALUE;

            if (++p < end && *p > ' ') {
                c = *p;
                goto value;
            }
        }

        continue;

    end_map:

        if (!cb->end_map(ctx)) {
            goto cancelled;
        }

        ig_jl_pop(lx);
        p++;
        goto after_value;

    end_array:

        if (!cb->end_array(ctx)) {
            goto cancelled;
        }

        ig_jl_pop(lx);
        p++;
        goto after_value;
    }

done:

    lx->state = state;
    lx->consumed += len;

    return IG_JSONLEX_OK;

cancelled:

    lx->rc = IG_JSONLEX_CANCELLED;

    return lx->rc;
}


ig_jsonlex_rc_e
ig_jsonlex_finish(ig_jsonlex_t *lx)
{
    if (lx->rc != IG_JSONLEX_OK) {
        return lx->rc;
    }

    lx->buf = NULL;

    if (lx->tok == IG_JL_TOK_NUMBER && ig_jl_num_final(lx->sub)) {
        lx->tok = IG_JL_TOK_NONE;
        lx->state = lx->after;

        if (!lx->cb->number(lx->ctx, lx->scratch, lx->slen)) {
            lx->rc = IG_JSONLEX_CANCELLED;
            return lx->rc;
        }
    }

    if (lx->tok != IG_JL_TOK_NONE || lx->state != IG_JL_DONE) {
        lx->rc = IG_JSONLEX_ERROR;
        lx->err = "premature end of input";
        lx->err_off = lx->consumed;
    }

    return lx->rc;
}
