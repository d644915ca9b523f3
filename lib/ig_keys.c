/*
 * Copyright (C) infergate authors
 *
 * The API keys file, see ig_keys.h.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SHA256_Init() and friends: deprecated in OpenSSL 3, not removed */
#define OPENSSL_SUPPRESS_DEPRECATED

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "ig_gcra.h"
#include "ig_keys.h"


#define IG_KEYS_STR(x)        IG_KEYS_STR_(x)
#define IG_KEYS_STR_(x)       #x

#define IG_KEYS_ERR_DIGEST    "expected 64 hex digits of SHA-256"
#define IG_KEYS_ERR_ZERO      "all-zero digest is not accepted"
#define IG_KEYS_ERR_TENANT    "missing tenant"
#define IG_KEYS_ERR_BAD_TENANT                                                \
    "bad tenant name: expected 1 to 64 of A-Z a-z 0-9 . _ -"
#define IG_KEYS_ERR_OPTION    "expected option=value"
#define IG_KEYS_ERR_UNKNOWN   "unknown option"
#define IG_KEYS_ERR_DUP_RATE  "duplicate option \"rate\""
#define IG_KEYS_ERR_DUP_BURST "duplicate option \"burst\""
#define IG_KEYS_ERR_DUP_MODELS                                                \
    "duplicate option \"models\""
#define IG_KEYS_ERR_RATE      "bad rate"
#define IG_KEYS_ERR_BURST                                                     \
    "bad burst: expected an integer from 0 to "                               \
    IG_KEYS_STR(IG_KEYS_MAX_BURST)
#define IG_KEYS_ERR_MODEL                                                     \
    "bad model name: expected 1 to 64 of A-Z a-z 0-9 . _ -"
#define IG_KEYS_ERR_NO_MODEL  "empty entry in models list"
#define IG_KEYS_ERR_MODELS                                                    \
    "too many models, at most " IG_KEYS_STR(IG_KEYS_MAX_MODELS)

/* the longest part of the offending text quoted in a message */
#define IG_KEYS_MSG_QUOTE     48


typedef struct {
    const char  *reason;
    const char  *text;        /* the offending text, or NULL           */
    size_t       len;
} ig_keys_err_t;


static int ig_keys_parse(const char *line, size_t len, ig_key_entry_t *e,
    ig_keys_err_t *err);
static int ig_keys_parse_option(const char *tok, size_t len,
    ig_key_entry_t *e, unsigned *seen, ig_keys_err_t *err);
static int ig_keys_parse_models(const char *s, size_t len,
    ig_key_entry_t *e, ig_keys_err_t *err);
static const char *ig_keys_rate_reason(const char *reason);
static int ig_keys_hex(int c);
static int ig_keys_name(const char *s, size_t len);
static int ig_keys_fail(ig_keys_err_t *err, const char *reason,
    const char *text, size_t len);
static void ig_keys_format(char *buf, size_t size, const ig_keys_err_t *err);


#define IG_KEYS_SEEN_RATE     0x01
#define IG_KEYS_SEEN_BURST    0x02
#define IG_KEYS_SEEN_MODELS   0x04


int
ig_keys_parse_line(const char *line, size_t len, ig_key_entry_t *entry,
    const char **reason)
{
    return ig_keys_parse_line_msg(line, len, entry, reason, NULL, 0);
}


int
ig_keys_parse_line_msg(const char *line, size_t len, ig_key_entry_t *entry,
    const char **reason, char *buf, size_t size)
{
    int             rc;
    ig_keys_err_t   err;
    ig_key_entry_t  e;

    err.reason = NULL;
    err.text = NULL;
    err.len = 0;

    rc = ig_keys_parse(line, len, &e, &err);

    if (rc == 1) {
        *entry = e;
        return 1;
    }

    if (rc == -1) {
        if (reason) {
            *reason = err.reason;
        }

        ig_keys_format(buf, size, &err);
    }

    return rc;
}


static int
ig_keys_parse(const char *line, size_t len, ig_key_entry_t *e,
    ig_keys_err_t *err)
{
    int          hi, lo;
    size_t       i, n;
    unsigned     seen, zero;
    const char  *p, *end, *tok, *hash;

    if (line == NULL) {
        return 0;
    }

    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }

    hash = len ? memchr(line, '#', len) : NULL;
    if (hash) {
        len = (size_t) (hash - line);
    }

    p = line;
    end = line + len;

    memset(e, 0, sizeof(ig_key_entry_t));
    e->burst = -1;
    seen = 0;

    for (n = 0; /* void */; n++) {

        while (p < end && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == end) {
            break;
        }

        tok = p;

        while (p < end && *p != ' ' && *p != '\t') {
            p++;
        }

        switch (n) {

        case 0:
            if (p - tok != 2 * 32) {
                return ig_keys_fail(err, IG_KEYS_ERR_DIGEST, tok,
                                    (size_t) (p - tok));
            }

            zero = 1;

            for (i = 0; i < 32; i++) {
                hi = ig_keys_hex((unsigned char) tok[2 * i]);
                lo = ig_keys_hex((unsigned char) tok[2 * i + 1]);

                if (hi < 0 || lo < 0) {
                    return ig_keys_fail(err, IG_KEYS_ERR_DIGEST, tok,
                                        (size_t) (p - tok));
                }

                e->digest[i] = (uint8_t) (hi << 4 | lo);
                zero &= (e->digest[i] == 0);
            }

            if (zero) {
                return ig_keys_fail(err, IG_KEYS_ERR_ZERO, NULL, 0);
            }

            break;

        case 1:
            if (!ig_keys_name(tok, (size_t) (p - tok))) {
                return ig_keys_fail(err, IG_KEYS_ERR_BAD_TENANT, tok,
                                    (size_t) (p - tok));
            }

            e->tenant.data = tok;
            e->tenant.len = (size_t) (p - tok);
            break;

        default:
            if (ig_keys_parse_option(tok, (size_t) (p - tok), e, &seen, err)
                != 0)
            {
                return -1;
            }
        }
    }

    switch (n) {
    case 0:
        return 0;
    case 1:
        return ig_keys_fail(err, IG_KEYS_ERR_TENANT, NULL, 0);
    default:
        return 1;
    }
}


static int
ig_keys_parse_option(const char *tok, size_t len, ig_key_entry_t *e,
    unsigned *seen, ig_keys_err_t *err)
{
    size_t       nlen, vlen, i;
    uint32_t     burst;
    const char  *eq, *val, *reason;

    eq = memchr(tok, '=', len);
    if (eq == NULL) {
        return ig_keys_fail(err, IG_KEYS_ERR_OPTION, tok, len);
    }

    nlen = (size_t) (eq - tok);
    val = eq + 1;
    vlen = len - nlen - 1;

    if (nlen == 4 && memcmp(tok, "rate", 4) == 0) {

        if (*seen & IG_KEYS_SEEN_RATE) {
            return ig_keys_fail(err, IG_KEYS_ERR_DUP_RATE, NULL, 0);
        }

        *seen |= IG_KEYS_SEEN_RATE;

        if (ig_gcra_parse_rate(val, vlen, &e->quota, &e->window_s, &reason)
            != 0)
        {
            return ig_keys_fail(err, ig_keys_rate_reason(reason), val, vlen);
        }

        return 0;
    }

    if (nlen == 5 && memcmp(tok, "burst", 5) == 0) {

        if (*seen & IG_KEYS_SEEN_BURST) {
            return ig_keys_fail(err, IG_KEYS_ERR_DUP_BURST, NULL, 0);
        }

        *seen |= IG_KEYS_SEEN_BURST;

        if (vlen == 0) {
            return ig_keys_fail(err, IG_KEYS_ERR_BURST, val, vlen);
        }

        burst = 0;

        for (i = 0; i < vlen; i++) {
            if (val[i] < '0' || val[i] > '9') {
                return ig_keys_fail(err, IG_KEYS_ERR_BURST, val, vlen);
            }

            burst = burst * 10 + (uint32_t) (val[i] - '0');

            if (burst > IG_KEYS_MAX_BURST) {
                return ig_keys_fail(err, IG_KEYS_ERR_BURST, val, vlen);
            }
        }

        e->burst = (int32_t) burst;

        return 0;
    }

    if (nlen == 6 && memcmp(tok, "models", 6) == 0) {

        if (*seen & IG_KEYS_SEEN_MODELS) {
            return ig_keys_fail(err, IG_KEYS_ERR_DUP_MODELS, NULL, 0);
        }

        *seen |= IG_KEYS_SEEN_MODELS;

        return ig_keys_parse_models(val, vlen, e, err);
    }

    return ig_keys_fail(err, IG_KEYS_ERR_UNKNOWN, tok, nlen);
}


static int
ig_keys_parse_models(const char *s, size_t len, ig_key_entry_t *e,
    ig_keys_err_t *err)
{
    const char  *p, *end, *name;

    p = s;
    end = s + len;

    for ( ;; ) {
        name = p;

        while (p < end && *p != ',') {
            p++;
        }

        if (p == name) {
            return ig_keys_fail(err, IG_KEYS_ERR_NO_MODEL, s, len);
        }

        if (!ig_keys_name(name, (size_t) (p - name))) {
            return ig_keys_fail(err, IG_KEYS_ERR_MODEL, name,
                                (size_t) (p - name));
        }

        if (e->nmodels == IG_KEYS_MAX_MODELS) {
            return ig_keys_fail(err, IG_KEYS_ERR_MODELS, NULL, 0);
        }

        e->models[e->nmodels].data = name;
        e->models[e->nmodels].len = (size_t) (p - name);
        e->nmodels++;

        if (p == end) {
            return 0;
        }

        p++;  /* ',' */
    }
}


static const char *
ig_keys_rate_reason(const char *reason)
{
    /* "bad rate: " + the static reason, chosen at compile time */

    if (strcmp(reason, IG_GCRA_ERR_NUMBER) == 0) {
        return IG_KEYS_ERR_RATE ": " IG_GCRA_ERR_NUMBER;
    }

    if (strcmp(reason, IG_GCRA_ERR_RANGE) == 0) {
        return IG_KEYS_ERR_RATE ": " IG_GCRA_ERR_RANGE;
    }

    if (strcmp(reason, IG_GCRA_ERR_UNIT) == 0) {
        return IG_KEYS_ERR_RATE ": " IG_GCRA_ERR_UNIT;
    }

    return IG_KEYS_ERR_RATE;
}


static int
ig_keys_hex(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


static int
ig_keys_name(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len == 0 || len > IG_KEYS_MAX_NAME) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static int
ig_keys_fail(ig_keys_err_t *err, const char *reason, const char *text,
    size_t len)
{
    err->reason = reason;
    err->text = text;
    err->len = len;

    return -1;
}


static void
ig_keys_format(char *buf, size_t size, const ig_keys_err_t *err)
{
    char           q[IG_KEYS_MSG_QUOTE * 4 + sizeof("...")];
    char          *p;
    size_t         i, n;
    unsigned char  c;

    static const char  hex[] = "0123456789abcdef";

    if (buf == NULL || size == 0) {
        return;
    }

    if (err->text == NULL) {
        snprintf(buf, size, "%s", err->reason);
        return;
    }

    p = q;
    n = err->len < IG_KEYS_MSG_QUOTE ? err->len : IG_KEYS_MSG_QUOTE;

    for (i = 0; i < n; i++) {
        c = (unsigned char) err->text[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            *p++ = (char) c;

        } else {
            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];
        }
    }

    if (n < err->len) {
        memcpy(p, "...", 3);
        p += 3;
    }

    *p = '\0';

    if (strcmp(err->reason, IG_KEYS_ERR_UNKNOWN) == 0) {
        snprintf(buf, size, "%s \"%s\"", err->reason, q);

    } else {
        snprintf(buf, size, "%s, got \"%s\"", err->reason, q);
    }
}


void
ig_keys_digest(const unsigned char *key, size_t len, uint8_t out[32])
{
    (void) ig_keys_digest_ex(key, len, out);
}


int
ig_keys_digest_ex(const unsigned char *key, size_t len, uint8_t out[32])
{
    unsigned int  n;

    n = 0;

    if (EVP_Digest(key, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        memset(out, 0, 32);
        return -1;
    }

    return 0;
}


int
ig_keys_digest_eq(const uint8_t a[32], const uint8_t b[32])
{
    return CRYPTO_memcmp(a, b, 32) == 0;
}


void
ig_keys_digest_hex(const uint8_t digest[32], char out[IG_KEYS_DIGEST_HEX + 1])
{
    size_t  i;

    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < 32; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0xf];
    }

    out[IG_KEYS_DIGEST_HEX] = '\0';
}


/*
 * The low-level SHA-256 (SHA-NI where the CPU has it): no provider
 * dispatch and no allocation per key, about 50 ns for a key against 85
 * through a reused EVP_MD_CTX, which OpenSSL 3 re-allocates at each init.
 */
struct ig_sha256_s {
    SHA256_CTX  ctx;
};


ig_sha256_t *
ig_sha256_new(void)
{
    return calloc(1, sizeof(ig_sha256_t));
}


void
ig_sha256_free(ig_sha256_t *h)
{
    free(h);
}


int
ig_sha256(ig_sha256_t *h, const unsigned char *data, size_t len,
    uint8_t out[32])
{
    if (SHA256_Init(&h->ctx) != 1
        || SHA256_Update(&h->ctx, data, len) != 1
        || SHA256_Final(out, &h->ctx) != 1)
    {
        memset(out, 0, 32);
        return -1;
    }

    return 0;
}
