/*
 * Copyright (C) infergate authors
 *
 * Unit tests of lib/ig_modelcrypt.c: the encrypted-file header, every
 * kind of damage, the signature algorithms and the trust directory.
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "ig_modelcrypt.h"


#define KEY_A                                                                 \
    "1111111111111111111111111111111111111111111111111111111111111111"
#define KEY_B                                                                 \
    "2222222222222222222222222222222222222222222222222222222222222222"

static const char  model[] = "{\"learner\": \"not really a model\"}\n";


static void
ring_of(ig_audit_keyring_t *ring, const char *text)
{
    char  err[256];

    assert_int_equal(ig_audit_keyring_parse(ring, text, strlen(text), err,
                                            sizeof(err)), 0);
}


static void
encrypt_model(uint8_t **out, size_t *outlen)
{
    uint8_t  key[32];
    char     err[256];

    memset(key, 0x11, sizeof(key));
    assert_int_equal(ig_mc_encrypt(key, "vendor-1", (const uint8_t *) model,
                                   sizeof(model) - 1, out, outlen, err,
                                   sizeof(err)), 0);
}


/* decrypts buf with key text; returns 0 or -1 with err */
static int
try_decrypt(const uint8_t *buf, size_t len, const char *keys, char *err,
    size_t errlen)
{
    int                  rc;
    size_t               ptlen;
    uint8_t             *pt;
    ig_audit_keyring_t   ring;

    ring_of(&ring, keys);
    rc = ig_mc_decrypt(&ring, buf, len, &pt, &ptlen, err, errlen);
    ig_audit_keyring_cleanse(&ring);

    if (rc == 0) {
        assert_int_equal(ptlen, sizeof(model) - 1);
        assert_memory_equal(pt, model, ptlen);
        assert_int_equal(pt[ptlen], 0);
        ig_mc_free_clear(pt, ptlen + 1);

    } else {
        assert_null(pt);
    }

    return rc;
}


static void
test_round_trip(void **state)
{
    size_t       len, i;
    uint8_t     *buf;
    ig_mc_hdr_t  h;
    char         err[256];

    (void) state;

    encrypt_model(&buf, &len);
    assert_int_equal(len, IG_MC_HDR_LEN + sizeof(model) - 1 + IG_MC_TAG_LEN);
    assert_true(ig_mc_is_encrypted(buf, len));
    assert_int_equal(ig_mc_hdr_parse(buf, len, &h, err, sizeof(err)), 0);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.ptlen, sizeof(model) - 1);
    assert_string_equal(h.kid, "vendor-1");
    for (i = 0; i + 7 <= len; i++) {
        assert_true(memcmp(buf + i, "learner", 7) != 0);
    }

    assert_int_equal(try_decrypt(buf, len, "vendor-1:" KEY_A "\n", err,
                                 sizeof(err)), 0);
    /* the key is found by id among others */
    assert_int_equal(try_decrypt(buf, len, "old:" KEY_B "\nvendor-1:" KEY_A
                                 "\n", err, sizeof(err)), 0);
    free(buf);
}


static void
test_damage_says_which(void **state)
{
    size_t    len, i;
    uint8_t  *buf, *c, *pt;
    char      err[256];

    static const struct {
        size_t       off;       /* SIZE_MAX - k: k bytes from the end */
        const char  *msg;
    } flips[] = {
        { 0, "not an encrypted model" },
        { 8, "unsupported version" },
        { 9, "unknown algorithm" },
        { 10, "bad key id" },
        { 11, "unknown flags" },
        { 12, "header modified" },           /* nonce */
        { 30, "truncated" },                 /* the length */
        { 40, "header modified" },           /* plaintext SHA-256 */
        { 64, "does not hold" },             /* key id: another id */
        { 80, "bad key id padding" },
        { 100, "wrong key" },                /* key check */
        { 120, "header modified" },          /* header MAC */
        { IG_MC_HDR_LEN, "body or tag modified" },
        { IG_MC_HDR_LEN + 10, "body or tag modified" },
        { SIZE_MAX - 1, "body or tag modified" },     /* the tag */
        { SIZE_MAX - 16, "body or tag modified" },
    };

    (void) state;

    encrypt_model(&buf, &len);
    c = malloc(len + 1);

    for (i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        size_t  off = flips[i].off > len ? len - (SIZE_MAX - flips[i].off)
                                         : flips[i].off;

        memcpy(c, buf, len);
        c[off] ^= 0x01;
        err[0] = '\0';
        assert_int_equal(try_decrypt(c, len, "vendor-1:" KEY_A
                                     "\nvendor-0:" KEY_A "\n", err,
                                     sizeof(err)), -1);
        if (strstr(err, flips[i].msg) == NULL) {
            fail_msg("flip at %zu: \"%s\", expected \"%s\"", off, err,
                     flips[i].msg);
        }
    }

    /* wrong key, missing key, a short key */
    assert_int_equal(try_decrypt(buf, len, "vendor-1:" KEY_B "\n", err,
                                 sizeof(err)), -1);
    assert_non_null(strstr(err, "wrong key"));
    assert_int_equal(try_decrypt(buf, len, "other:" KEY_A "\n", err,
                                 sizeof(err)), -1);
    assert_non_null(strstr(err, "does not hold"));
    assert_int_equal(try_decrypt(buf, len, "vendor-1:" KEY_A KEY_A "\n",
                                 err, sizeof(err)), -1);
    assert_non_null(strstr(err, "a model key is 32"));
    assert_int_equal(ig_mc_decrypt(NULL, buf, len, &pt, &i, err,
                                   sizeof(err)), -1);
    assert_null(pt);

    /* every truncation and one byte too many */
    for (i = 0; i < len; i++) {
        memcpy(c, buf, i);
        assert_int_equal(try_decrypt(c, i, "vendor-1:" KEY_A "\n", err,
                                     sizeof(err)), -1);
        if (i >= IG_MC_MAGIC_LEN && strstr(err, "truncated") == NULL) {
            fail_msg("truncated to %zu: \"%s\"", i, err);
        }
    }

    memcpy(c, buf, len);
    c[len] = '\n';
    assert_int_equal(try_decrypt(c, len + 1, "vendor-1:" KEY_A "\n", err,
                                 sizeof(err)), -1);
    assert_non_null(strstr(err, "trailing bytes"));

    free(c);
    free(buf);
}


static void
test_encrypt_refuses(void **state)
{
    size_t    len;
    uint8_t  *out, key[32];
    char      err[256];

    (void) state;

    memset(key, 1, sizeof(key));
    assert_int_equal(ig_mc_encrypt(key, "", (const uint8_t *) "x", 1, &out,
                                   &len, err, sizeof(err)), -1);
    assert_int_equal(ig_mc_encrypt(key, "a/b", (const uint8_t *) "x", 1,
                                   &out, &len, err, sizeof(err)), -1);
    assert_int_equal(ig_mc_encrypt(key, "k", (const uint8_t *) "x", 0, &out,
                                   &len, err, sizeof(err)), -1);
    assert_null(out);
}


static EVP_PKEY *
keygen(const char *alg)
{
    if (strcmp(alg, "ed25519") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    }

    if (strcmp(alg, "p256") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    }

    if (strcmp(alg, "p384") == 0) {
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    }

    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA",
                             (size_t) (strcmp(alg, "rsa1024") == 0
                                       ? 1024 : 2048));
}


static void
test_sign_verify(void **state)
{
    size_t       siglen, i;
    uint8_t      sig[IG_MC_SIG_MAX], data[100];
    EVP_PKEY    *k, *other;
    char         err[256];
    const char  *algs[] = { "ed25519", "p256", "rsa" };

    (void) state;

    memset(data, 7, sizeof(data));

    for (i = 0; i < 3; i++) {
        k = keygen(algs[i]);
        other = keygen(algs[i]);
        assert_non_null(ig_mc_key_alg(k));
        assert_int_equal(ig_mc_sign(k, data, sizeof(data), sig, &siglen,
                                    err, sizeof(err)), 0);
        if (i == 0) {
            assert_int_equal(siglen, 64);
        }

        assert_int_equal(ig_mc_verify(k, data, sizeof(data), sig, siglen),
                         1);
        assert_int_equal(ig_mc_verify(other, data, sizeof(data), sig,
                                      siglen), 0);
        assert_int_equal(ig_mc_verify(k, data, sizeof(data) - 1, sig,
                                      siglen), 0);
        sig[siglen / 2] ^= 1;
        assert_int_equal(ig_mc_verify(k, data, sizeof(data), sig, siglen),
                         0);
        assert_int_equal(ig_mc_verify(k, data, sizeof(data), sig, 0), 0);
        EVP_PKEY_free(k);
        EVP_PKEY_free(other);
    }

    /* refused key types: P-384, RSA below 2048 bits */
    k = keygen("p384");
    assert_null(ig_mc_key_alg(k));
    assert_int_equal(ig_mc_sign(k, data, sizeof(data), sig, &siglen, err,
                                sizeof(err)), -1);
    assert_int_equal(ig_mc_verify(k, data, sizeof(data), sig, 64), -1);
    EVP_PKEY_free(k);
    k = keygen("rsa1024");
    assert_null(ig_mc_key_alg(k));
    EVP_PKEY_free(k);
}


static void
write_pub(const char *dir, const char *name, EVP_PKEY *k)
{
    BIO   *b;
    char   path[512];

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    b = BIO_new_file(path, "w");
    assert_non_null(b);
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
    BIO_free(b);
}


static void
test_trust_dir(void **state)
{
    size_t          siglen;
    uint8_t         sig[IG_MC_SIG_MAX];
    EVP_PKEY       *a, *b, *c;
    ig_mc_trust_t   t;
    char            dir[] = "/tmp/ig-mc-trust-XXXXXX", err[512], who[64];
    char            cmd[600];

    (void) state;

    assert_non_null(mkdtemp(dir));
    assert_int_equal(ig_mc_trust_load(&t, dir, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "no SIGNER.pub.pem"));

    a = keygen("ed25519");
    b = keygen("p256");
    c = keygen("ed25519");
    write_pub(dir, "risk-team.pub.pem", a);
    write_pub(dir, "ml.pem", b);

    assert_int_equal(ig_mc_trust_load(&t, dir, err, sizeof(err)), 0);
    assert_int_equal(t.n, 2);

    assert_int_equal(ig_mc_sign(a, (const uint8_t *) "m", 1, sig, &siglen,
                                err, sizeof(err)), 0);
    assert_int_equal(ig_mc_trust_verify(&t, (const uint8_t *) "m", 1, sig,
                                        siglen, who, sizeof(who)), 0);
    assert_string_equal(who, "risk-team");
    assert_int_equal(ig_mc_sign(b, (const uint8_t *) "m", 1, sig, &siglen,
                                err, sizeof(err)), 0);
    assert_int_equal(ig_mc_trust_verify(&t, (const uint8_t *) "m", 1, sig,
                                        siglen, who, sizeof(who)), 0);
    assert_string_equal(who, "ml");
    assert_int_equal(ig_mc_sign(c, (const uint8_t *) "m", 1, sig, &siglen,
                                err, sizeof(err)), 0);
    assert_int_equal(ig_mc_trust_verify(&t, (const uint8_t *) "m", 1, sig,
                                        siglen, who, sizeof(who)), -1);
    ig_mc_trust_free(&t);

    /* one signer, two files */
    write_pub(dir, "ml.pub.pem", c);
    assert_int_equal(ig_mc_trust_load(&t, dir, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "has two keys"));

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    EVP_PKEY_free(c);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damage_says_which),
        cmocka_unit_test(test_encrypt_refuses),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_trust_dir),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
