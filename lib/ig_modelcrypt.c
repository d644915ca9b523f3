
/*
 * Copyright (C) infergate authors
 *
 * Signed and encrypted model files, see ig_modelcrypt.h.
 */


#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "ig_modelcrypt.h"


#define IG_MC_LABEL_ENC  "infergate-model-v1 enc"
#define IG_MC_LABEL_HDR  "infergate-model-v1 hdr"
#define IG_MC_LABEL_KCV  "infergate-model-v1 kcv"
#define IG_MC_HDR_MACED  112             /* header bytes the MAC covers */


static void
ig_mc_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));


static void
ig_mc_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}


int
ig_mc_is_encrypted(const uint8_t *data, size_t len)
{
    return len >= IG_MC_MAGIC_LEN
           && memcmp(data, IG_MC_MAGIC, IG_MC_MAGIC_LEN) == 0;
}


static uint64_t
ig_mc_get64(const uint8_t *p)
{
    uint64_t  v;
    int       i;

    v = 0;

    for (i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }

    return v;
}


static void
ig_mc_put64(uint8_t *p, uint64_t v)
{
    int  i;

    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t) v;
        v >>= 8;
    }
}


int
ig_mc_hdr_parse(const uint8_t *data, size_t len, ig_mc_hdr_t *h, char *err,
    size_t errlen)
{
    size_t  kidlen, i;

    memset(h, 0, sizeof(ig_mc_hdr_t));

    if (!ig_mc_is_encrypted(data, len)) {
        ig_mc_err(err, errlen, "not an encrypted model (no \"%s\" magic)",
                  IG_MC_MAGIC);
        return -1;
    }

    if (len < IG_MC_HDR_LEN) {
        ig_mc_err(err, errlen, "truncated: %zu bytes, shorter than the "
                  "%d-byte header", len, IG_MC_HDR_LEN);
        return -1;
    }

    h->version = data[8];
    h->alg = data[9];
    kidlen = data[10];

    if (h->version != IG_MC_VERSION) {
        ig_mc_err(err, errlen, "header: unsupported version %u (this build "
                  "reads %d)", h->version, IG_MC_VERSION);
        return -1;
    }

    if (h->alg != IG_MC_ALG_AES256GCM) {
        ig_mc_err(err, errlen, "header: unknown algorithm %u", h->alg);
        return -1;
    }

    if (data[11] != 0) {
        ig_mc_err(err, errlen, "header: unknown flags 0x%02x", data[11]);
        return -1;
    }

    if (kidlen == 0 || kidlen > IG_MC_KID_MAX
        || !ig_audit_key_id_valid((const char *) data + 64, kidlen))
    {
        ig_mc_err(err, errlen, "header: bad key id");
        return -1;
    }

    for (i = kidlen; i < IG_MC_KID_MAX; i++) {
        if (data[64 + i] != 0) {
            ig_mc_err(err, errlen, "header: bad key id padding");
            return -1;
        }
    }

    memcpy(h->nonce, data + 12, IG_MC_NONCE_LEN);
    h->ptlen = ig_mc_get64(data + 24);
    memcpy(h->sha, data + 32, 32);
    memcpy(h->kid, data + 64, kidlen);
    h->kid[kidlen] = '\0';
    memcpy(h->kcv, data + 96, 16);
    memcpy(h->mac, data + 112, 16);

    if (h->ptlen == 0 || h->ptlen > IG_MC_FILE_MAX) {
        ig_mc_err(err, errlen, "header: bad plaintext length %llu",
                  (unsigned long long) h->ptlen);
        return -1;
    }

    if (len < IG_MC_HDR_LEN + IG_MC_TAG_LEN
        || len - IG_MC_HDR_LEN - IG_MC_TAG_LEN != h->ptlen)
    {
        ig_mc_err(err, errlen, "%s: %zu bytes, the header says %llu",
                  len < h->ptlen + IG_MC_HDR_LEN + IG_MC_TAG_LEN
                  ? "truncated" : "trailing bytes",
                  len, (unsigned long long) (h->ptlen + IG_MC_HDR_LEN
                                             + IG_MC_TAG_LEN));
        return -1;
    }

    return 0;
}


/* out = HMAC-SHA256(key, label) */
static int
ig_mc_derive(const uint8_t *key, const char *label, uint8_t *out)
{
    unsigned  n;

    return HMAC(EVP_sha256(), key, IG_MC_KEY_LEN, (const uint8_t *) label,
                strlen(label), out, &n) != NULL && n == 32 ? 0 : -1;
}


/* the key check (16 bytes) and the MAC of hdr[0..112) (16 bytes) */
static int
ig_mc_hdr_auth(const uint8_t *key, const uint8_t *hdr, uint8_t *kcv,
    uint8_t *mac)
{
    int       rc;
    unsigned  n;
    uint8_t   k[32], md[32];

    rc = -1;

    if (ig_mc_derive(key, IG_MC_LABEL_KCV, md) != 0) {
        goto done;
    }

    memcpy(kcv, md, 16);

    if (hdr) {
        if (ig_mc_derive(key, IG_MC_LABEL_HDR, k) != 0
            || HMAC(EVP_sha256(), k, sizeof(k), hdr, IG_MC_HDR_MACED, md, &n)
               == NULL)
        {
            goto done;
        }

        memcpy(mac, md, 16);
    }

    rc = 0;

done:

    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(md, sizeof(md));

    return rc;
}


int
ig_mc_encrypt(const uint8_t *key, const char *kid, const uint8_t *pt,
    size_t ptlen, uint8_t **out, size_t *outlen, char *err, size_t errlen)
{
    int              n, rc;
    size_t           kidlen, total, off;
    uint8_t         *o, k[32];
    unsigned         mdlen;
    EVP_CIPHER_CTX  *ctx;

    *out = NULL;
    *outlen = 0;
    kidlen = strlen(kid);

    if (kidlen == 0 || kidlen > IG_MC_KID_MAX
        || !ig_audit_key_id_valid(kid, kidlen))
    {
        ig_mc_err(err, errlen, "bad key id \"%.64s\" ([A-Za-z0-9._-], 1 to "
                  "%d)", kid, IG_MC_KID_MAX);
        return -1;
    }

    if (ptlen == 0 || ptlen > IG_MC_FILE_MAX) {
        ig_mc_err(err, errlen, "the model is empty or larger than 1 GiB");
        return -1;
    }

    total = IG_MC_HDR_LEN + ptlen + IG_MC_TAG_LEN;
    o = calloc(1, total);
    if (o == NULL) {
        ig_mc_err(err, errlen, "out of memory");
        return -1;
    }

    memcpy(o, IG_MC_MAGIC, IG_MC_MAGIC_LEN);
    o[8] = IG_MC_VERSION;
    o[9] = IG_MC_ALG_AES256GCM;
    o[10] = (uint8_t) kidlen;
    o[11] = 0;

    if (RAND_bytes(o + 12, IG_MC_NONCE_LEN) != 1) {
        ig_mc_err(err, errlen, "RAND_bytes() failed");
        free(o);
        return -1;
    }

    ig_mc_put64(o + 24, ptlen);

    if (EVP_Digest(pt, ptlen, o + 32, &mdlen, EVP_sha256(), NULL) != 1) {
        ig_mc_err(err, errlen, "SHA-256 failed");
        free(o);
        return -1;
    }

    memcpy(o + 64, kid, kidlen);

    if (ig_mc_hdr_auth(key, o, o + 96, o + 112) != 0
        || ig_mc_derive(key, IG_MC_LABEL_ENC, k) != 0)
    {
        ig_mc_err(err, errlen, "HMAC failed");
        free(o);
        return -1;
    }

    rc = -1;
    ctx = EVP_CIPHER_CTX_new();
    off = IG_MC_HDR_LEN;

    if (ctx == NULL
        || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, IG_MC_NONCE_LEN,
                               NULL) != 1
        || EVP_EncryptInit_ex(ctx, NULL, NULL, k, o + 12) != 1
        || EVP_EncryptUpdate(ctx, NULL, &n, o, IG_MC_HDR_LEN) != 1)
    {
        goto done;
    }

    /* EVP lengths are int: feed at most 1 GiB a call (the file max) */
    if (EVP_EncryptUpdate(ctx, o + off, &n, pt, (int) ptlen) != 1) {
        goto done;
    }

    off += (size_t) n;

    if (EVP_EncryptFinal_ex(ctx, o + off, &n) != 1) {
        goto done;
    }

    off += (size_t) n;

    if (off != IG_MC_HDR_LEN + ptlen
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, IG_MC_TAG_LEN,
                               o + off) != 1)
    {
        goto done;
    }

    rc = 0;

done:

    OPENSSL_cleanse(k, sizeof(k));
    EVP_CIPHER_CTX_free(ctx);

    if (rc != 0) {
        ig_mc_err(err, errlen, "AES-256-GCM encryption failed");
        free(o);
        return -1;
    }

    *out = o;
    *outlen = total;

    return 0;
}


void
ig_mc_free_clear(void *p, size_t len)
{
    if (p) {
        OPENSSL_cleanse(p, len);
        free(p);
    }
}


int
ig_mc_decrypt(const ig_audit_keyring_t *ring, const uint8_t *data,
    size_t len, uint8_t **pt, size_t *ptlen, char *err, size_t errlen)
{
    int                    n, rc;
    size_t                 off;
    uint8_t               *p, k[32], kcv[16], mac[16], md[32];
    unsigned               mdlen;
    ig_mc_hdr_t            h;
    EVP_CIPHER_CTX        *ctx;
    const ig_audit_key_t  *key;

    *pt = NULL;
    *ptlen = 0;

    if (ig_mc_hdr_parse(data, len, &h, err, errlen) != 0) {
        return -1;
    }

    key = ring ? ig_audit_keyring_find(ring, h.kid, strlen(h.kid)) : NULL;
    if (key == NULL) {
        ig_mc_err(err, errlen, "encrypted with key id \"%s\", which the key "
                  "file does not hold", h.kid);
        return -1;
    }

    if (key->len != IG_MC_KEY_LEN) {
        ig_mc_err(err, errlen, "key \"%s\" is %zu bytes; a model key is %d",
                  h.kid, key->len, IG_MC_KEY_LEN);
        return -1;
    }

    if (ig_mc_hdr_auth(key->key, data, kcv, mac) != 0) {
        ig_mc_err(err, errlen, "HMAC failed");
        return -1;
    }

    if (CRYPTO_memcmp(kcv, h.kcv, sizeof(kcv)) != 0) {
        ig_mc_err(err, errlen, "wrong key: key \"%s\" of the key file is not "
                  "the one this model was encrypted with", h.kid);
        return -1;
    }

    if (CRYPTO_memcmp(mac, h.mac, sizeof(mac)) != 0) {
        ig_mc_err(err, errlen, "header modified: its authentication failed");
        return -1;
    }

    p = malloc(h.ptlen + 1);
    if (p == NULL) {
        ig_mc_err(err, errlen, "out of memory");
        return -1;
    }

    if (ig_mc_derive(key->key, IG_MC_LABEL_ENC, k) != 0) {
        ig_mc_err(err, errlen, "HMAC failed");
        free(p);
        return -1;
    }

    rc = -1;
    off = 0;
    ctx = EVP_CIPHER_CTX_new();

    if (ctx == NULL
        || EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, IG_MC_NONCE_LEN,
                               NULL) != 1
        || EVP_DecryptInit_ex(ctx, NULL, NULL, k, h.nonce) != 1
        || EVP_DecryptUpdate(ctx, NULL, &n, data, IG_MC_HDR_LEN) != 1
        || EVP_DecryptUpdate(ctx, p, &n, data + IG_MC_HDR_LEN,
                             (int) h.ptlen) != 1)
    {
        ig_mc_err(err, errlen, "AES-256-GCM decryption failed");
        goto done;
    }

    off = (size_t) n;

    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, IG_MC_TAG_LEN,
                            (void *) (data + len - IG_MC_TAG_LEN)) != 1)
    {
        ig_mc_err(err, errlen, "AES-256-GCM decryption failed");
        goto done;
    }

    /* the plaintext so far is unauthenticated: it is wiped on failure */
    if (EVP_DecryptFinal_ex(ctx, p + off, &n) != 1) {
        ig_mc_err(err, errlen, "body or tag modified: the AES-256-GCM tag "
                  "does not verify");
        goto done;
    }

    off += (size_t) n;

    if (off != h.ptlen
        || EVP_Digest(p, off, md, &mdlen, EVP_sha256(), NULL) != 1
        || CRYPTO_memcmp(md, h.sha, sizeof(md)) != 0)
    {
        ig_mc_err(err, errlen, "the decrypted model's SHA-256 is not the "
                  "one in the header");
        goto done;
    }

    rc = 0;

done:

    OPENSSL_cleanse(k, sizeof(k));
    EVP_CIPHER_CTX_free(ctx);

    if (rc != 0) {
        ig_mc_free_clear(p, h.ptlen + 1);
        return -1;
    }

    p[off] = '\0';
    *pt = p;
    *ptlen = off;

    return 0;
}


int
ig_mc_read_file(const char *path, size_t max, uint8_t **data, size_t *len,
    char *err, size_t errlen)
{
    int          fd;
    size_t       got, cap;
    ssize_t      n;
    uint8_t     *p, *np;
    struct stat  st;

    *data = NULL;
    *len = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        ig_mc_err(err, errlen, "%.300s: %s", path, strerror(errno));
        return errno == ENOENT ? -2 : -1;
    }

    /* a FIFO or a device is read to its end too (tests feed FIFOs) */
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        ig_mc_err(err, errlen, "%.300s: not a file", path);
        close(fd);
        return -1;
    }

    if (S_ISREG(st.st_mode) && (unsigned long long) st.st_size > max) {
        ig_mc_err(err, errlen, "%.300s: larger than %zu bytes", path, max);
        close(fd);
        return -1;
    }

    cap = S_ISREG(st.st_mode) ? (size_t) st.st_size + 1 : 4096;
    p = malloc(cap);
    if (p == NULL) {
        ig_mc_err(err, errlen, "%.300s: out of memory", path);
        close(fd);
        return -1;
    }

    got = 0;

    for ( ;; ) {
        if (got == cap - 1) {
            if (cap - 1 >= max) {
                /* one byte more than max tells a file too large */
                n = read(fd, p + got, 1);
                if (n == 0) {
                    break;
                }

                ig_mc_err(err, errlen, "%.300s: larger than %zu bytes",
                          path, max);
                goto failed;
            }

            cap = (cap - 1) * 2 < 4096 ? 4096 : (cap - 1) * 2;
            cap = cap > max ? max + 1 : cap + 1;
            np = realloc(p, cap);
            if (np == NULL) {
                ig_mc_err(err, errlen, "%.300s: out of memory", path);
                goto failed;
            }

            p = np;
        }

        n = read(fd, p + got, cap - 1 - got);

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n < 0) {
            ig_mc_err(err, errlen, "%.300s: %s", path, strerror(errno));
            goto failed;
        }

        if (n == 0) {
            break;
        }

        got += (size_t) n;
    }

    close(fd);
    p[got] = '\0';
    *data = p;
    *len = got;

    return 0;

failed:

    free(p);
    close(fd);

    return -1;
}


const char *
ig_mc_key_alg(EVP_PKEY *pkey)
{
    char  group[64];

    if (EVP_PKEY_is_a(pkey, "ED25519")) {
        return "ed25519";
    }

    if (EVP_PKEY_is_a(pkey, "EC")) {
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME,
                                           group, sizeof(group), NULL) == 1
            && (strcmp(group, "prime256v1") == 0
                || strcmp(group, "P-256") == 0))
        {
            return "ecdsa-p256";
        }

        return NULL;
    }

    if ((EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_is_a(pkey, "RSA-PSS"))
        && EVP_PKEY_get_bits(pkey) >= 2048)
    {
        return "rsa-pss";
    }

    return NULL;
}


/* a DigestSign/Verify context for the key's algorithm */
static EVP_MD_CTX *
ig_mc_md_ctx(EVP_PKEY *key, int sign)
{
    int            rc;
    const char    *alg;
    EVP_MD_CTX    *md;
    EVP_PKEY_CTX  *pctx;
    const EVP_MD  *dg;

    alg = ig_mc_key_alg(key);
    if (alg == NULL) {
        return NULL;
    }

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return NULL;
    }

    /* PureEdDSA takes no digest and no streaming */
    dg = (alg[0] == 'e' && alg[1] == 'd') ? NULL : EVP_sha256();
    pctx = NULL;

    rc = sign ? EVP_DigestSignInit(md, &pctx, dg, NULL, key)
              : EVP_DigestVerifyInit(md, &pctx, dg, NULL, key);

    if (rc == 1 && strcmp(alg, "rsa-pss") == 0) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1
            || EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST)
               != 1
            || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1)
        {
            rc = 0;
        }
    }

    if (rc != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }

    return md;
}


int
ig_mc_sign(EVP_PKEY *key, const uint8_t *data, size_t len, uint8_t *sig,
    size_t *siglen, char *err, size_t errlen)
{
    size_t       n;
    EVP_MD_CTX  *md;

    md = ig_mc_md_ctx(key, 1);
    if (md == NULL) {
        ig_mc_err(err, errlen, "the key is not Ed25519, ECDSA P-256 or RSA "
                  "(2048 bits or more)");
        return -1;
    }

    if (EVP_DigestSign(md, NULL, &n, data, len) != 1 || n > IG_MC_SIG_MAX
        || EVP_DigestSign(md, sig, &n, data, len) != 1)
    {
        ig_mc_err(err, errlen, "signing failed");
        EVP_MD_CTX_free(md);
        return -1;
    }

    EVP_MD_CTX_free(md);
    *siglen = n;

    return 0;
}


int
ig_mc_verify(EVP_PKEY *key, const uint8_t *data, size_t len,
    const uint8_t *sig, size_t siglen)
{
    int          rc;
    EVP_MD_CTX  *md;

    md = ig_mc_md_ctx(key, 0);
    if (md == NULL) {
        return -1;
    }

    rc = EVP_DigestVerify(md, sig, siglen, data, len);
    EVP_MD_CTX_free(md);

    return rc == 1 ? 1 : 0;
}


void
ig_mc_trust_free(ig_mc_trust_t *t)
{
    unsigned  i;

    for (i = 0; i < t->n; i++) {
        EVP_PKEY_free(t->keys[i].pkey);
    }

    memset(t, 0, sizeof(ig_mc_trust_t));
}


static int
ig_mc_suffix(const char *s, const char *suf)
{
    size_t  n, m;

    n = strlen(s);
    m = strlen(suf);

    if (n <= m || n > 255 || memcmp(s + (n - m), suf, m) != 0) {
        return 0;
    }

    return (int) (n - m);
}


int
ig_mc_trust_load(ig_mc_trust_t *t, const char *dir, char *err,
    size_t errlen)
{
    int             idlen;
    DIR            *d;
    BIO            *bio;
    unsigned        i;
    EVP_PKEY       *pk;
    const char     *alg;
    struct dirent  *de;
    char            path[1024];

    memset(t, 0, sizeof(ig_mc_trust_t));

    d = opendir(dir);
    if (d == NULL) {
        ig_mc_err(err, errlen, "--trust %.300s: %s", dir, strerror(errno));
        return -1;
    }

    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        idlen = ig_mc_suffix(de->d_name, ".pub.pem");
        if (idlen == 0) {
            idlen = ig_mc_suffix(de->d_name, ".pem");
        }

        if (idlen == 0) {
            continue;
        }

        if (idlen >= IG_MC_SIGNER_MAX
            || !ig_audit_key_id_valid(de->d_name, (size_t) idlen))
        {
            ig_mc_err(err, errlen, "--trust %.300s: \"%.200s\": a signer id "
                      "is [A-Za-z0-9._-], 1 to 32", dir, de->d_name);
            goto failed;
        }

        if (t->n == IG_MC_TRUST_MAX) {
            ig_mc_err(err, errlen, "--trust %.300s: more than %d keys", dir,
                      IG_MC_TRUST_MAX);
            goto failed;
        }

        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name)
            >= (int) sizeof(path))
        {
            ig_mc_err(err, errlen, "--trust %.300s: path too long", dir);
            goto failed;
        }

        bio = BIO_new_file(path, "r");
        pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);

        if (pk == NULL) {
            ig_mc_err(err, errlen, "--trust %.300s: not a PEM public key "
                      "(BEGIN PUBLIC KEY)", path);
            goto failed;
        }

        alg = ig_mc_key_alg(pk);
        if (alg == NULL) {
            EVP_PKEY_free(pk);
            ig_mc_err(err, errlen, "--trust %.300s: not an Ed25519, ECDSA "
                      "P-256 or RSA (2048 bits or more) key", path);
            goto failed;
        }

        for (i = 0; i < t->n; i++) {
            if ((int) strlen(t->keys[i].id) == idlen
                && memcmp(t->keys[i].id, de->d_name, idlen) == 0)
            {
                EVP_PKEY_free(pk);
                ig_mc_err(err, errlen, "--trust %.300s: signer \"%.*s\" has "
                          "two keys", dir, idlen, de->d_name);
                goto failed;
            }
        }

        memcpy(t->keys[t->n].id, de->d_name, idlen);
        t->keys[t->n].id[idlen] = '\0';
        t->keys[t->n].alg = alg;
        t->keys[t->n].pkey = pk;
        t->n++;
    }

    closedir(d);

    if (t->n == 0) {
        ig_mc_err(err, errlen, "--trust %.300s: no SIGNER.pub.pem public "
                  "key", dir);
        return -1;
    }

    return 0;

failed:

    closedir(d);
    ig_mc_trust_free(t);

    return -1;
}


int
ig_mc_trust_verify(const ig_mc_trust_t *t, const uint8_t *data, size_t len,
    const uint8_t *sig, size_t siglen, char *signer, size_t signerlen)
{
    unsigned  i;

    for (i = 0; i < t->n; i++) {
        if (ig_mc_verify(t->keys[i].pkey, data, len, sig, siglen) == 1) {
            snprintf(signer, signerlen, "%s", t->keys[i].id);
            return 0;
        }
    }

    return -1;
}
