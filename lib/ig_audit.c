/*
 * Copyright (C) infergate authors
 *
 * Signed audit records, see ig_audit.h: the key file parser, HMAC-SHA256
 * contexts and the chains that seal records.
 *
 * Sealing cost: HMAC (RFC 2104) over OpenSSL's SHA-256 with the two pad
 * states computed once per key: a record costs copying two 112-byte
 * states and hashing its bytes plus one block, nothing else.  The inner
 * state after the message's first block is kept too and reused while the
 * next message starts with the same 64 bytes (a worker's records within
 * one millisecond do): one compression of about eleven saved.  The EVP_MAC
 * path did the same hashing but cost about twice as much per record in
 * provider dispatch, parameter handling and context copies (perf on the
 * nginx worker: HMAC_Init_ex, EVP_MD_CTX_copy_ex, CRYPTO_clear_free,
 * ENGINE_finish, OSSL_PARAM_* per record).  Its output is checked against
 * OpenSSL's HMAC() in the unit tests.
 */

/* SHA256_Init() and friends: deprecated in OpenSSL 3, not removed */
#define OPENSSL_SUPPRESS_DEPRECATED


#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "ig_audit.h"


#define IG_AUDIT_STR(x)       IG_AUDIT_STR_(x)
#define IG_AUDIT_STR_(x)      #x


struct ig_audit_hmac_s {
    SHA256_CTX      inner;       /* after (key ^ ipad) */
    SHA256_CTX      outer;       /* after (key ^ opad) */

    /*
     * The inner state after (key ^ ipad) and block, the first 64 bytes
     * of the last message that had them: a record's first block is its
     * time stamp to the millisecond and the worker's request id prefix,
     * the same for every record of a worker within a millisecond.
     */
    SHA256_CTX      first;
    unsigned char   block[SHA256_CBLOCK];
    unsigned        have_first;
};


struct ig_audit_chain_s {
    ig_audit_hmac_t  *hmac;
    uint64_t          seq;

    /* "chain":"<id>","seq": */
    unsigned char     head[sizeof("\"chain\":\"\",\"seq\":") - 1
                           + IG_AUDIT_CHAIN_ID_LEN];
    size_t            head_len;

    /* ,"key_id":"<kid>","prev":" */
    unsigned char     mid[sizeof(",\"key_id\":\"\",\"prev\":\"") - 1
                          + IG_AUDIT_KEY_ID_MAX];
    size_t            mid_len;

    char              prev[IG_AUDIT_MAC_HEX];
    char              id[IG_AUDIT_CHAIN_ID_LEN + 1];
    char              key_id[IG_AUDIT_KEY_ID_MAX + 1];
};


static int ig_audit_parse_line(ig_audit_keyring_t *ring, const char *p,
    size_t len, const char **reason, char *name, size_t namelen);
static int ig_audit_hexval(int c);
static void ig_audit_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static size_t ig_audit_u64(unsigned char *p, uint64_t n);
static int ig_audit_chain_id_valid(const char *id);


static const char  ig_audit_hexdigits[] = "0123456789abcdef";


/* ---- key file ---------------------------------------------------------- */


int
ig_audit_key_id_valid(const char *s, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (len == 0 || len > IG_AUDIT_KEY_ID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


int
ig_audit_keyring_parse(ig_audit_keyring_t *ring, const char *text,
    size_t len, char *err, size_t errlen)
{
    int          rc;
    char         name[IG_AUDIT_KEY_ID_MAX * 4 + 4];
    size_t       lineno;
    const char  *p, *end, *nl, *reason;

    if (err != NULL && errlen) {
        err[0] = '\0';
    }

    memset(ring, 0, sizeof(ig_audit_keyring_t));

    p = text;
    end = text + len;
    lineno = 0;

    while (p < end) {
        lineno++;

        nl = memchr(p, '\n', (size_t) (end - p));
        if (nl == NULL) {
            nl = end;
        }

        name[0] = '\0';
        reason = NULL;

        rc = ig_audit_parse_line(ring, p, (size_t) (nl - p), &reason, name,
                                 sizeof(name));

        if (rc != 0) {
            if (name[0] != '\0') {
                ig_audit_err(err, errlen, "line %zu: %s \"%s\"", lineno,
                             reason, name);

            } else {
                ig_audit_err(err, errlen, "line %zu: %s", lineno, reason);
            }

            ig_audit_keyring_cleanse(ring);
            return -1;
        }

        p = (nl < end) ? nl + 1 : end;
    }

    if (ring->nkeys == 0) {
        ig_audit_err(err, errlen, "no key");
        return -1;
    }

    return 0;
}


/*
 * One line: blanks and comments are skipped, otherwise "id:hex" with
 * optional spaces or tabs around either part.  Returns 0 or -1 with
 * *reason (and the offending key id in name, for duplicates).
 */

static int
ig_audit_parse_line(ig_audit_keyring_t *ring, const char *p, size_t len,
    const char **reason, char *name, size_t namelen)
{
    int              hi, lo;
    size_t           i, n;
    const char      *end, *hash, *colon, *id, *id_end, *hex, *hex_end;
    ig_audit_key_t  *k;

    if (len > 0 && p[len - 1] == '\r') {
        len--;
    }

    hash = memchr(p, '#', len);
    end = hash ? hash : p + len;

    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (end > p && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    if (p == end) {
        return 0;
    }

    colon = memchr(p, ':', (size_t) (end - p));
    if (colon == NULL) {
        *reason = "expected \"id:hex\"";
        return -1;
    }

    id = p;
    id_end = colon;

    while (id_end > id && (id_end[-1] == ' ' || id_end[-1] == '\t')) {
        id_end--;
    }

    if (!ig_audit_key_id_valid(id, (size_t) (id_end - id))) {
        *reason = "bad key id: expected 1 to " IG_AUDIT_STR(IG_AUDIT_KEY_ID_MAX)
                  " of A-Z a-z 0-9 . _ -";
        return -1;
    }

    hex = colon + 1;
    hex_end = end;

    while (hex < hex_end && (*hex == ' ' || *hex == '\t')) {
        hex++;
    }

    n = (size_t) (hex_end - hex);

    for (i = 0; i < n; i++) {
        if (ig_audit_hexval((unsigned char) hex[i]) < 0) {
            *reason = "bad hex";
            return -1;
        }
    }

    if (n % 2) {
        *reason = "bad hex: odd number of digits";
        return -1;
    }

    if (n / 2 < IG_AUDIT_KEY_MIN) {
        *reason = "key shorter than " IG_AUDIT_STR(IG_AUDIT_KEY_MIN)
                  " bytes";
        return -1;
    }

    if (n / 2 > IG_AUDIT_KEY_MAX) {
        *reason = "key longer than " IG_AUDIT_STR(IG_AUDIT_KEY_MAX)
                  " bytes";
        return -1;
    }

    if (ig_audit_keyring_find(ring, id, (size_t) (id_end - id)) != NULL) {
        *reason = "duplicate key id";
        snprintf(name, namelen, "%.*s", (int) (id_end - id), id);
        return -1;
    }

    if (ring->nkeys == IG_AUDIT_MAX_KEYS) {
        *reason = "too many keys, at most " IG_AUDIT_STR(IG_AUDIT_MAX_KEYS);
        return -1;
    }

    k = &ring->keys[ring->nkeys];

    memcpy(k->id, id, (size_t) (id_end - id));
    k->id[id_end - id] = '\0';
    k->len = n / 2;

    for (i = 0; i < k->len; i++) {
        hi = ig_audit_hexval((unsigned char) hex[2 * i]);
        lo = ig_audit_hexval((unsigned char) hex[2 * i + 1]);
        k->key[i] = (unsigned char) (hi << 4 | lo);
    }

    ring->nkeys++;

    return 0;
}


const ig_audit_key_t *
ig_audit_keyring_find(const ig_audit_keyring_t *ring, const char *id,
    size_t len)
{
    unsigned  i;

    if (len == 0 || len > IG_AUDIT_KEY_ID_MAX) {
        return NULL;
    }

    for (i = 0; i < ring->nkeys; i++) {
        if (strlen(ring->keys[i].id) == len
            && memcmp(ring->keys[i].id, id, len) == 0)
        {
            return &ring->keys[i];
        }
    }

    return NULL;
}


const ig_audit_key_t *
ig_audit_keyring_signing_key(const ig_audit_keyring_t *ring)
{
    if (ring->nkeys == 0) {
        return NULL;
    }

    return &ring->keys[ring->nkeys - 1];
}


void
ig_audit_keyring_cleanse(ig_audit_keyring_t *ring)
{
    OPENSSL_cleanse(ring, sizeof(ig_audit_keyring_t));
}


int
ig_audit_key_file_mode_ok(mode_t mode)
{
    return (mode & (S_IRWXG | S_IRWXO)) == 0;
}


int
ig_audit_keyring_load(ig_audit_keyring_t *ring, const char *path,
    char *err, size_t errlen)
{
    int          fd, rc;
    char        *buf, msg[256];
    size_t       len;
    ssize_t      n;
    struct stat  st;

    memset(ring, 0, sizeof(ig_audit_keyring_t));

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd == -1) {
        ig_audit_err(err, errlen, "%s: open() failed: %s", path,
                     strerror(errno));
        return -1;
    }

    if (fstat(fd, &st) == -1) {
        ig_audit_err(err, errlen, "%s: fstat() failed: %s", path,
                     strerror(errno));
        close(fd);
        return -1;
    }

    if (!S_ISREG(st.st_mode)) {
        ig_audit_err(err, errlen, "%s is not a regular file", path);
        close(fd);
        return -1;
    }

    if (!ig_audit_key_file_mode_ok(st.st_mode)) {
        ig_audit_err(err, errlen, "%s is accessible by group or others "
                     "(mode %04o): chmod 600 it", path,
                     (unsigned) (st.st_mode & 07777));
        close(fd);
        return -1;
    }

    if (st.st_size > IG_AUDIT_KEY_FILE_MAX) {
        ig_audit_err(err, errlen, "%s is larger than %d bytes", path,
                     IG_AUDIT_KEY_FILE_MAX);
        close(fd);
        return -1;
    }

    buf = malloc(IG_AUDIT_KEY_FILE_MAX + 1);
    if (buf == NULL) {
        ig_audit_err(err, errlen, "%s: out of memory", path);
        close(fd);
        return -1;
    }

    len = 0;

    for ( ;; ) {
        n = read(fd, buf + len, IG_AUDIT_KEY_FILE_MAX + 1 - len);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            ig_audit_err(err, errlen, "%s: read() failed: %s", path,
                         strerror(errno));
            rc = -1;
            goto done;
        }

        if (n == 0) {
            break;
        }

        len += (size_t) n;

        if (len > IG_AUDIT_KEY_FILE_MAX) {
            ig_audit_err(err, errlen, "%s is larger than %d bytes", path,
                         IG_AUDIT_KEY_FILE_MAX);
            rc = -1;
            goto done;
        }
    }

    rc = ig_audit_keyring_parse(ring, buf, len, msg, sizeof(msg));

    if (rc != 0) {
        ig_audit_err(err, errlen, "%s: %s", path, msg);
    }

done:

    OPENSSL_cleanse(buf, IG_AUDIT_KEY_FILE_MAX + 1);
    free(buf);
    close(fd);

    return rc;
}


static int
ig_audit_hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


static void
ig_audit_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (err == NULL || errlen == 0) {
        return;
    }

    va_start(args, fmt);
    vsnprintf(err, errlen, fmt, args);
    va_end(args);
}


void
ig_audit_hex(char *out, const unsigned char *in, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        out[2 * i] = ig_audit_hexdigits[in[i] >> 4];
        out[2 * i + 1] = ig_audit_hexdigits[in[i] & 0xf];
    }
}


/* ---- HMAC-SHA256 ------------------------------------------------------- */


ig_audit_hmac_t *
ig_audit_hmac_new(const unsigned char *key, size_t len)
{
    size_t            i;
    unsigned char     k[SHA256_CBLOCK], pad[SHA256_CBLOCK];
    ig_audit_hmac_t  *h;

    h = calloc(1, sizeof(ig_audit_hmac_t));
    if (h == NULL) {
        return NULL;
    }

    memset(k, 0, sizeof(k));

    if (len > SHA256_CBLOCK) {
        /* a key longer than a block is hashed first (RFC 2104) */
        if (SHA256(key, len, k) == NULL) {
            goto failed;
        }

    } else {
        memcpy(k, key, len);
    }

    for (i = 0; i < SHA256_CBLOCK; i++) {
        pad[i] = k[i] ^ 0x36;
    }

    if (SHA256_Init(&h->inner) != 1
        || SHA256_Update(&h->inner, pad, SHA256_CBLOCK) != 1)
    {
        goto failed;
    }

    for (i = 0; i < SHA256_CBLOCK; i++) {
        pad[i] = k[i] ^ 0x5c;
    }

    if (SHA256_Init(&h->outer) != 1
        || SHA256_Update(&h->outer, pad, SHA256_CBLOCK) != 1)
    {
        goto failed;
    }

    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));

    return h;

failed:

    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    ig_audit_hmac_free(h);

    return NULL;
}


void
ig_audit_hmac_free(ig_audit_hmac_t *h)
{
    if (h == NULL) {
        return;
    }

    OPENSSL_cleanse(h, sizeof(ig_audit_hmac_t));
    free(h);
}


int
ig_audit_hmac(ig_audit_hmac_t *h, const unsigned char *data, size_t len,
    unsigned char out[IG_AUDIT_MAC_LEN])
{
    SHA256_CTX     c;
    unsigned char  ih[SHA256_DIGEST_LENGTH];

    if (len < SHA256_CBLOCK) {
        c = h->inner;

    } else if (h->have_first
               && memcmp(data, h->block, SHA256_CBLOCK) == 0)
    {
        /* the first block's compression is saved: about 100 cycles */
        c = h->first;
        data += SHA256_CBLOCK;
        len -= SHA256_CBLOCK;

    } else {
        c = h->inner;
        h->have_first = 0;

        if (SHA256_Update(&c, data, SHA256_CBLOCK) != 1) {
            goto failed;
        }

        h->first = c;
        memcpy(h->block, data, SHA256_CBLOCK);
        h->have_first = 1;

        data += SHA256_CBLOCK;
        len -= SHA256_CBLOCK;
    }

    if (SHA256_Update(&c, data, len) != 1 || SHA256_Final(ih, &c) != 1) {
        goto failed;
    }

    c = h->outer;

    if (SHA256_Update(&c, ih, sizeof(ih)) != 1 || SHA256_Final(out, &c) != 1)
    {
        goto failed;
    }

    OPENSSL_cleanse(&c, sizeof(c));

    return 0;

failed:

    OPENSSL_cleanse(&c, sizeof(c));
    memset(out, 0, IG_AUDIT_MAC_LEN);

    return -1;
}


/* ---- chains ------------------------------------------------------------ */


static int
ig_audit_chain_id_valid(const char *id)
{
    size_t  i;

    for (i = 0; i < IG_AUDIT_CHAIN_ID_LEN; i++) {
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
        {
            return 0;
        }
    }

    return 1;
}


int
ig_audit_chain_id(char *out)
{
    unsigned char  raw[IG_AUDIT_CHAIN_ID_LEN / 2];

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        out[0] = '\0';
        return -1;
    }

    ig_audit_hex(out, raw, sizeof(raw));
    out[IG_AUDIT_CHAIN_ID_LEN] = '\0';

    return 0;
}


/*
 * Returns NULL as well for a key outside IG_AUDIT_KEY_MIN..MAX bytes or
 * with a bad id, and for a chain id that is not 32 lowercase hex digits.
 */

ig_audit_chain_t *
ig_audit_chain_open(const ig_audit_key_t *key, const char *chain_id)
{
    size_t             idlen;
    unsigned char     *p;
    ig_audit_chain_t  *c;

    if (key == NULL || chain_id == NULL
        || key->len < IG_AUDIT_KEY_MIN || key->len > IG_AUDIT_KEY_MAX)
    {
        return NULL;
    }

    idlen = strnlen(key->id, sizeof(key->id));

    if (!ig_audit_key_id_valid(key->id, idlen)
        || strnlen(chain_id, IG_AUDIT_CHAIN_ID_LEN + 1)
           != IG_AUDIT_CHAIN_ID_LEN
        || !ig_audit_chain_id_valid(chain_id))
    {
        return NULL;
    }

    c = calloc(1, sizeof(ig_audit_chain_t));
    if (c == NULL) {
        return NULL;
    }

    c->hmac = ig_audit_hmac_new(key->key, key->len);
    if (c->hmac == NULL) {
        free(c);
        return NULL;
    }

    memcpy(c->id, chain_id, IG_AUDIT_CHAIN_ID_LEN);
    memcpy(c->key_id, key->id, idlen);
    memset(c->prev, '0', IG_AUDIT_MAC_HEX);

    p = c->head;
    memcpy(p, "\"chain\":\"", 9);
    p += 9;
    memcpy(p, chain_id, IG_AUDIT_CHAIN_ID_LEN);
    p += IG_AUDIT_CHAIN_ID_LEN;
    memcpy(p, "\",\"seq\":", 8);
    p += 8;
    c->head_len = (size_t) (p - c->head);

    p = c->mid;
    memcpy(p, ",\"key_id\":\"", 11);
    p += 11;
    memcpy(p, key->id, idlen);
    p += idlen;
    memcpy(p, "\",\"prev\":\"", 10);
    p += 10;
    c->mid_len = (size_t) (p - c->mid);

    return c;
}


void
ig_audit_chain_close(ig_audit_chain_t *c)
{
    if (c == NULL) {
        return;
    }

    ig_audit_hmac_free(c->hmac);
    OPENSSL_cleanse(c, sizeof(ig_audit_chain_t));
    free(c);
}


uint64_t
ig_audit_chain_seq(const ig_audit_chain_t *c)
{
    return c->seq;
}


const char *
ig_audit_chain_get_id(const ig_audit_chain_t *c)
{
    return c->id;
}


const char *
ig_audit_chain_key_id(const ig_audit_chain_t *c)
{
    return c->key_id;
}


static size_t
ig_audit_u64(unsigned char *p, uint64_t n)
{
    size_t         len, i;
    unsigned char  tmp[20];

    len = 0;

    do {
        tmp[len++] = (unsigned char) ('0' + n % 10);
        n /= 10;
    } while (n);

    for (i = 0; i < len; i++) {
        p[i] = tmp[len - 1 - i];
    }

    return len;
}


/*
 * Writes "chain":"<id>","seq":<n>,"key_id":"<kid>","prev":"<hex>","mac":"
 * after the record text, MACs everything up to there, then the 64 hex
 * digits and "}}\n".  On failure the bytes after len may have been
 * written to, but 0 is returned and the chain is unchanged.
 */

size_t
ig_audit_seal(ig_audit_chain_t *c, unsigned char *buf, size_t len)
{
    unsigned char  *p;
    unsigned char   mac[IG_AUDIT_MAC_LEN];

    if (c->seq == UINT64_MAX) {
        return 0;
    }

    p = buf + len;

    memcpy(p, c->head, c->head_len);
    p += c->head_len;
    p += ig_audit_u64(p, c->seq);
    memcpy(p, c->mid, c->mid_len);
    p += c->mid_len;
    memcpy(p, c->prev, IG_AUDIT_MAC_HEX);
    p += IG_AUDIT_MAC_HEX;
    memcpy(p, "\",\"mac\":\"", 9);
    p += 9;

    if (ig_audit_hmac(c->hmac, buf, (size_t) (p - buf), mac) != 0) {
        return 0;
    }

    ig_audit_hex((char *) p, mac, IG_AUDIT_MAC_LEN);
    memcpy(c->prev, p, IG_AUDIT_MAC_HEX);
    p += IG_AUDIT_MAC_HEX;

    *p++ = '"';
    *p++ = '}';
    *p++ = '}';
    *p++ = '\n';

    c->seq++;

    return (size_t) (p - buf);
}


/* ---- the chain state file ----------------------------------------------- */


static int
ig_audit_state_hex_ok(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


/* a canonical decimal at s (up to 20 digits), the digits it used, or 0 */

static size_t
ig_audit_state_u64(const char *s, size_t len, uint64_t *out)
{
    size_t    i;
    uint64_t  n;

    n = 0;

    for (i = 0; i < len && i < 20 && s[i] >= '0' && s[i] <= '9'; i++) {
        if (n > (UINT64_MAX - (uint64_t) (s[i] - '0')) / 10) {
            return 0;
        }

        n = n * 10 + (uint64_t) (s[i] - '0');
    }

    if (i == 0 || (s[0] == '0' && i > 1)) {
        return 0;
    }

    *out = n;

    return i;
}


int
ig_audit_state_parse(ig_audit_state_t *st, const char *text, size_t len,
    char *err, size_t errlen)
{
    size_t       n, k;
    uint64_t     v;
    unsigned     lineno, ended;
    const char  *p, *end, *nl;

    memset(st, 0, sizeof(ig_audit_state_t));

    if (len == 0) {
        return 0;
    }

    p = text;
    end = text + len;
    lineno = 0;
    ended = 0;

    while (p < end) {
        lineno++;

        nl = memchr(p, '\n', (size_t) (end - p));
        if (nl == NULL) {
            ig_audit_err(err, errlen, "line %u: no newline (incomplete)",
                         lineno);
            return -1;
        }

        n = (size_t) (nl - p);

        if (ended) {
            ig_audit_err(err, errlen, "line %u: text after \"end\"",
                         lineno);
            return -1;
        }

        if (lineno == 1) {
            if (n != sizeof("infergate-chainstate 1") - 1
                || memcmp(p, "infergate-chainstate 1", n) != 0)
            {
                ig_audit_err(err, errlen, "line 1: not an infergate chain "
                             "state file (version 1)");
                return -1;
            }

        } else if (n == 3 && memcmp(p, "end", 3) == 0) {
            ended = 1;

        } else if (n > 5 && memcmp(p, "head ", 5) == 0 && !st->have_head
                   && st->nopen == 0)
        {
            k = 5;

            if (n < k + IG_AUDIT_CHAIN_ID_LEN + 1
                || !ig_audit_state_hex_ok(p + k, IG_AUDIT_CHAIN_ID_LEN)
                || p[k + IG_AUDIT_CHAIN_ID_LEN] != ' ')
            {
                goto bad;
            }

            memcpy(st->head_chain, p + k, IG_AUDIT_CHAIN_ID_LEN);
            k += IG_AUDIT_CHAIN_ID_LEN + 1;

            k += ig_audit_state_u64(p + k, n - k, &v);
            if (k >= n || p[k] != ' ' || v == UINT64_MAX) {
                goto bad;
            }

            st->head_seq = v;
            k++;

            if (n - k != IG_AUDIT_MAC_HEX
                || !ig_audit_state_hex_ok(p + k, IG_AUDIT_MAC_HEX))
            {
                goto bad;
            }

            memcpy(st->head_mac, p + k, IG_AUDIT_MAC_HEX);
            st->have_head = 1;

        } else if (n > 5 && memcmp(p, "open ", 5) == 0) {
            k = 5;

            if (st->nopen == IG_AUDIT_STATE_OPEN_MAX
                || n < k + IG_AUDIT_CHAIN_ID_LEN + 2
                || !ig_audit_state_hex_ok(p + k, IG_AUDIT_CHAIN_ID_LEN)
                || p[k + IG_AUDIT_CHAIN_ID_LEN] != ' ')
            {
                goto bad;
            }

            memcpy(st->open[st->nopen].chain, p + k, IG_AUDIT_CHAIN_ID_LEN);
            k += IG_AUDIT_CHAIN_ID_LEN + 1;

            if (ig_audit_state_u64(p + k, n - k, &v) != n - k
                || v > INT64_MAX)
            {
                goto bad;
            }

            st->open[st->nopen++].pid = (int64_t) v;

        } else {
            goto bad;
        }

        p = nl + 1;
    }

    if (!ended) {
        ig_audit_err(err, errlen, "line %u: no \"end\" line (incomplete)",
                     lineno);
        return -1;
    }

    return 0;

bad:

    ig_audit_err(err, errlen, "line %u: bad line", lineno);
    return -1;
}


size_t
ig_audit_state_format(const ig_audit_state_t *st, char *buf, size_t size)
{
    int       n;
    size_t    len;
    unsigned  i;

    len = 0;

    n = snprintf(buf, size, "infergate-chainstate 1\n");
    if (n < 0 || (size_t) n >= size) {
        return 0;
    }

    len = (size_t) n;

    if (st->have_head) {
        n = snprintf(buf + len, size - len, "head %.32s %llu %.64s\n",
                     st->head_chain, (unsigned long long) st->head_seq,
                     st->head_mac);
        if (n < 0 || (size_t) n >= size - len) {
            return 0;
        }

        len += (size_t) n;
    }

    for (i = 0; i < st->nopen; i++) {
        n = snprintf(buf + len, size - len, "open %.32s %lld\n",
                     st->open[i].chain, (long long) st->open[i].pid);
        if (n < 0 || (size_t) n >= size - len) {
            return 0;
        }

        len += (size_t) n;
    }

    n = snprintf(buf + len, size - len, "end\n");
    if (n < 0 || (size_t) n >= size - len) {
        return 0;
    }

    return len + (size_t) n;
}


size_t
ig_audit_state_link(const ig_audit_state_t *st, unsigned char *p)
{
    unsigned char  *start;

    start = p;

    if (!st->have_head) {
        memcpy(p, "\"link\":\"genesis\",", sizeof("\"link\":\"genesis\",") - 1);
        return sizeof("\"link\":\"genesis\",") - 1;
    }

    memcpy(p, "\"link\":\"", 8);
    p += 8;
    memcpy(p, st->head_chain, IG_AUDIT_CHAIN_ID_LEN);
    p += IG_AUDIT_CHAIN_ID_LEN;
    *p++ = ':';
    p += ig_audit_u64(p, st->head_seq);
    *p++ = ':';
    memcpy(p, st->head_mac, IG_AUDIT_MAC_HEX);
    p += IG_AUDIT_MAC_HEX;
    *p++ = '"';
    *p++ = ',';

    return (size_t) (p - start);
}


void
ig_audit_state_advance(ig_audit_state_t *st, const unsigned char *line,
    size_t len, const char *chain, uint64_t seq, int start, int64_t pid,
    int (*alive)(int64_t pid))
{
    unsigned  i, j;

    /* the mac: the 64 hex digits before "}}\n" */

    if (len < IG_AUDIT_MAC_TAIL + 1) {
        return;
    }

    st->have_head = 1;
    memcpy(st->head_chain, chain, IG_AUDIT_CHAIN_ID_LEN);
    st->head_chain[IG_AUDIT_CHAIN_ID_LEN] = '\0';
    st->head_seq = seq;
    memcpy(st->head_mac, line + len - 1 - IG_AUDIT_MAC_TAIL,
           IG_AUDIT_MAC_HEX);
    st->head_mac[IG_AUDIT_MAC_HEX] = '\0';

    for (i = 0, j = 0; i < st->nopen; i++) {
        if (memcmp(st->open[i].chain, chain, IG_AUDIT_CHAIN_ID_LEN) == 0) {
            continue;
        }

        if (alive && !alive(st->open[i].pid)) {
            continue;
        }

        st->open[j++] = st->open[i];
    }

    st->nopen = j;

    if (!start) {
        return;
    }

    if (st->nopen == IG_AUDIT_STATE_OPEN_MAX) {
        memmove(st->open, st->open + 1,
                (IG_AUDIT_STATE_OPEN_MAX - 1) * sizeof(ig_audit_state_open_t));
        st->nopen--;
    }

    memcpy(st->open[st->nopen].chain, chain, IG_AUDIT_CHAIN_ID_LEN);
    st->open[st->nopen].chain[IG_AUDIT_CHAIN_ID_LEN] = '\0';
    st->open[st->nopen].pid = pid;
    st->nopen++;
}


int
ig_audit_marker_write(int state_fd, int log_fd, ig_audit_chain_t *c,
    unsigned char *buf, size_t len, int start, int64_t pid,
    int (*alive)(int64_t pid), ig_audit_state_t *st, char *text,
    ig_audit_marker_t *out)
{
    int           rc, locked;
    size_t        n, total;
    ssize_t       w;
    uint64_t      seq;
    struct flock  fl;

    memset(out, 0, sizeof(ig_audit_marker_t));
    rc = -1;

    memset(&fl, 0, sizeof(struct flock));
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    locked = 1;

    while (fcntl(state_fd, F_SETLKW, &fl) == -1) {
        if (errno != EINTR) {
            out->lock_errno = errno;
            locked = 0;
            break;
        }
    }

    total = 0;

    for ( ;; ) {
        w = pread(state_fd, text + total, IG_AUDIT_STATE_SIZE_MAX + 1 - total,
                  (off_t) total);

        if (w == -1 && errno == EINTR) {
            continue;
        }

        if (w <= 0 || (total += (size_t) w) > IG_AUDIT_STATE_SIZE_MAX) {
            break;
        }
    }

    if (total > IG_AUDIT_STATE_SIZE_MAX) {
        out->damaged = 1;
        snprintf(out->damage, sizeof(out->damage), "too large");
        memset(st, 0, sizeof(ig_audit_state_t));

    } else if (ig_audit_state_parse(st, text, total, out->damage,
                                    sizeof(out->damage)) != 0)
    {
        out->damaged = 1;
        memset(st, 0, sizeof(ig_audit_state_t));
    }

    len += ig_audit_state_link(st, buf + len);

    seq = ig_audit_chain_seq(c);

    len = ig_audit_seal(c, buf, len);
    if (len == 0) {
        out->seal_failed = 1;
        goto unlock;
    }

    for (n = 0; n < len; n += (size_t) w) {
        w = write(log_fd, buf + n, len - n);

        if (w == -1 && errno == EINTR) {
            w = 0;
            continue;
        }

        if (w <= 0) {
            out->write_errno = (w == 0) ? EIO : errno;

            if (n != 0 && write(log_fd, "\n", 1) != 1) {
                /* the half line stays: the verifier names it malformed */
            }

            goto unlock;
        }
    }

    out->len = len;
    rc = 0;

    ig_audit_state_advance(st, buf, len, ig_audit_chain_get_id(c), seq,
                           start, pid, alive);

    n = ig_audit_state_format(st, text, IG_AUDIT_STATE_SIZE_MAX);

    if (n == 0) {
        out->state_failed = 1;

    } else if (pwrite(state_fd, text, n, 0) != (ssize_t) n
               || ftruncate(state_fd, (off_t) n) != 0)
    {
        out->state_failed = 1;
        out->state_errno = errno;
    }

unlock:

    if (locked) {
        fl.l_type = F_UNLCK;
        (void) fcntl(state_fd, F_SETLK, &fl);
    }

    return rc;
}
