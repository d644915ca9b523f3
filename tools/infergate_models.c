
/*
 * Copyright (C) infergate authors
 *
 * infergate-models: the model approval and vendor steps, see
 * lib/ig_modelcrypt.h.
 *
 *   infergate-models keygen [--alg ed25519|ecdsa-p256|rsa-pss] SIGNER
 *   infergate-models sign --key PRIV MODEL [-o SIG]
 *   infergate-models verify --trust DIR MODEL [SIG]
 *   infergate-models encrypt --key FILE [--key-id ID] MODEL -o OUT
 *   infergate-models decrypt --key FILE IN -o OUT
 *   infergate-models newkey ID      prints "ID:HEX", a new 32-byte key
 *
 * Exit status: 0 done, 1 refused (a bad signature, a wrong key ...),
 * 2 usage.
 */


#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "ig_audit.h"
#include "ig_modelcrypt.h"


#define PROG  "infergate-models"


static void
usage(FILE *f)
{
    fprintf(f,
        "usage: " PROG " keygen [--alg ed25519|ecdsa-p256|rsa-pss] SIGNER\n"
        "         writes SIGNER.pem (private, 0600) and SIGNER.pub.pem\n"
        "       " PROG " sign --key PRIV MODEL [-o SIG]   (default "
        "MODEL.sig)\n"
        "       " PROG " verify --trust DIR MODEL [SIG]   (prints the "
        "signer)\n"
        "       " PROG " encrypt --key FILE [--key-id ID] MODEL -o OUT\n"
        "       " PROG " decrypt --key FILE IN -o OUT\n"
        "       " PROG " newkey ID   (prints a key file line \"ID:HEX\")\n");
}


/* writes all of data to path (a new inode, renamed over), mode */
static int
write_file(const char *path, const uint8_t *data, size_t len, mode_t mode,
    int excl)
{
    int      fd;
    size_t   off;
    ssize_t  n;
    char     tmp[4096];

    if (excl) {
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) {
            fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
            return -1;
        }

        tmp[0] = '\0';

    } else {
        if (snprintf(tmp, sizeof(tmp), "%s.tmp%d", path, (int) getpid())
            >= (int) sizeof(tmp))
        {
            fprintf(stderr, PROG ": %s: path too long\n", path);
            return -1;
        }

        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
        if (fd < 0) {
            fprintf(stderr, PROG ": %s: %s\n", tmp, strerror(errno));
            return -1;
        }
    }

    for (off = 0; off < len; off += (size_t) n) {
        n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }

        if (n <= 0) {
            fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
            close(fd);
            unlink(tmp[0] ? tmp : path);
            return -1;
        }
    }

    if (fsync(fd) != 0 || close(fd) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        unlink(tmp[0] ? tmp : path);
        return -1;
    }

    if (tmp[0] && rename(tmp, path) != 0) {
        fprintf(stderr, PROG ": %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }

    return 0;
}


static int
write_pem(const char *path, EVP_PKEY *pk, int priv)
{
    int       rc;
    BIO      *bio;
    char     *p;
    long      n;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL
        || (priv ? PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL,
                                            NULL)
                 : PEM_write_bio_PUBKEY(bio, pk)) != 1)
    {
        fprintf(stderr, PROG ": %s: PEM encoding failed\n", path);
        BIO_free(bio);
        return -1;
    }

    n = BIO_get_mem_data(bio, &p);
    rc = write_file(path, (const uint8_t *) p, (size_t) n,
                    priv ? 0600 : 0644, 1);

    if (priv) {
        OPENSSL_cleanse(p, (size_t) n);
    }

    BIO_free(bio);

    return rc;
}


static int
keygen(int argc, char **argv)
{
    int          i, rc;
    size_t       n;
    EVP_PKEY    *pk;
    const char  *alg, *signer, *base;
    char         priv[4096], pub[4096];

    alg = "ed25519";
    signer = NULL;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--alg") == 0 && i + 1 < argc) {
            alg = argv[++i];

        } else if (argv[i][0] != '-' && signer == NULL) {
            signer = argv[i];

        } else {
            usage(stderr);
            return 2;
        }
    }

    if (signer == NULL) {
        usage(stderr);
        return 2;
    }

    base = strrchr(signer, '/');
    base = base ? base + 1 : signer;
    n = strlen(base);

    if (n == 0 || n > IG_AUDIT_KEY_ID_MAX || !ig_audit_key_id_valid(base, n))
    {
        fprintf(stderr, PROG ": signer id \"%s\": [A-Za-z0-9._-], 1 to %d\n",
                base, IG_AUDIT_KEY_ID_MAX);
        return 2;
    }

    if (strcmp(alg, "ed25519") == 0) {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

    } else if (strcmp(alg, "ecdsa-p256") == 0) {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

    } else if (strcmp(alg, "rsa-pss") == 0) {
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t) 3072);

    } else {
        fprintf(stderr, PROG ": --alg \"%s\": ed25519, ecdsa-p256 or "
                "rsa-pss\n", alg);
        return 2;
    }

    if (pk == NULL) {
        fprintf(stderr, PROG ": key generation failed\n");
        return 1;
    }

    snprintf(priv, sizeof(priv), "%s.pem", signer);
    snprintf(pub, sizeof(pub), "%s.pub.pem", signer);

    rc = write_pem(priv, pk, 1);
    if (rc == 0) {
        rc = write_pem(pub, pk, 0);
        if (rc != 0) {
            unlink(priv);
        }
    }

    EVP_PKEY_free(pk);

    if (rc != 0) {
        return 1;
    }

    printf("%s: %s private key (keep it secret, 0600)\n%s: public key for "
           "--trust DIR (signer \"%s\")\n", priv, alg, pub, base);

    return 0;
}


static int
sign(int argc, char **argv)
{
    int          i, rc;
    BIO         *bio;
    size_t       len, siglen;
    uint8_t     *data, sig[IG_MC_SIG_MAX];
    EVP_PKEY    *pk;
    const char  *key, *model, *out;
    char         sp[4096], err[512];

    key = model = out = NULL;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            key = argv[++i];

        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            out = argv[++i];

        } else if (argv[i][0] != '-' && model == NULL) {
            model = argv[i];

        } else {
            usage(stderr);
            return 2;
        }
    }

    if (key == NULL || model == NULL) {
        usage(stderr);
        return 2;
    }

    bio = BIO_new_file(key, "r");
    pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);

    if (pk == NULL) {
        fprintf(stderr, PROG ": %s: not a PEM private key\n", key);
        return 1;
    }

    if (ig_mc_read_file(model, IG_MC_FILE_MAX + IG_MC_HDR_LEN
                               + IG_MC_TAG_LEN,
                        &data, &len, err, sizeof(err)) != 0)
    {
        fprintf(stderr, PROG ": %s\n", err);
        EVP_PKEY_free(pk);
        return 1;
    }

    rc = ig_mc_sign(pk, data, len, sig, &siglen, err, sizeof(err));
    EVP_PKEY_free(pk);
    free(data);

    if (rc != 0) {
        fprintf(stderr, PROG ": %s: %s\n", key, err);
        return 1;
    }

    if (out == NULL) {
        snprintf(sp, sizeof(sp), "%s.sig", model);
        out = sp;
    }

    if (write_file(out, sig, siglen, 0644, 0) != 0) {
        return 1;
    }

    printf("%s\n", out);

    return 0;
}


static int
verify(int argc, char **argv)
{
    int             i, rc;
    size_t          len, siglen;
    uint8_t        *data, *sig;
    const char     *trust, *model, *sigp;
    ig_mc_trust_t  *t;
    char            sp[4096], err[512], signer[IG_MC_SIGNER_MAX];

    trust = model = sigp = NULL;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--trust") == 0 && i + 1 < argc) {
            trust = argv[++i];

        } else if (argv[i][0] != '-' && model == NULL) {
            model = argv[i];

        } else if (argv[i][0] != '-' && sigp == NULL) {
            sigp = argv[i];

        } else {
            usage(stderr);
            return 2;
        }
    }

    if (trust == NULL || model == NULL) {
        usage(stderr);
        return 2;
    }

    if (sigp == NULL) {
        snprintf(sp, sizeof(sp), "%s.sig", model);
        sigp = sp;
    }

    t = calloc(1, sizeof(ig_mc_trust_t));
    if (t == NULL || ig_mc_trust_load(t, trust, err, sizeof(err)) != 0) {
        fprintf(stderr, PROG ": %s\n", t ? err : "out of memory");
        free(t);
        return 1;
    }

    rc = 1;
    data = sig = NULL;

    if (ig_mc_read_file(model, IG_MC_FILE_MAX + IG_MC_HDR_LEN
                               + IG_MC_TAG_LEN,
                        &data, &len, err, sizeof(err)) != 0
        || ig_mc_read_file(sigp, IG_MC_SIG_MAX, &sig, &siglen, err,
                           sizeof(err)) != 0)
    {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }

    if (ig_mc_trust_verify(t, data, len, sig, siglen, signer,
                           sizeof(signer)) != 0)
    {
        fprintf(stderr, PROG ": %s: signature %s does not verify with any "
                "key of %s\n", model, sigp, trust);
        goto done;
    }

    printf("%s\n", signer);
    rc = 0;

done:

    free(data);
    free(sig);
    ig_mc_trust_free(t);
    free(t);

    return rc;
}


static int
encdec(int argc, char **argv, int enc)
{
    int                    i, rc;
    size_t                 len, outlen;
    uint8_t               *data, *out;
    const char            *keyfile, *kid, *in, *outp;
    ig_audit_keyring_t    *ring;
    const ig_audit_key_t  *key;
    char                   err[512];

    keyfile = kid = in = outp = NULL;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc) {
            keyfile = argv[++i];

        } else if (enc && strcmp(argv[i], "--key-id") == 0 && i + 1 < argc) {
            kid = argv[++i];

        } else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            outp = argv[++i];

        } else if (argv[i][0] != '-' && in == NULL) {
            in = argv[i];

        } else {
            usage(stderr);
            return 2;
        }
    }

    if (keyfile == NULL || in == NULL || outp == NULL) {
        usage(stderr);
        return 2;
    }

    ring = calloc(1, sizeof(ig_audit_keyring_t));
    if (ring == NULL) {
        return 1;
    }

    if (ig_audit_keyring_load(ring, keyfile, err, sizeof(err)) != 0) {
        fprintf(stderr, PROG ": %s\n", err);
        free(ring);
        return 1;
    }

    rc = 1;
    data = out = NULL;
    outlen = 0;

    if (ig_mc_read_file(in, IG_MC_FILE_MAX + IG_MC_HDR_LEN + IG_MC_TAG_LEN,
                        &data, &len, err, sizeof(err)) != 0)
    {
        fprintf(stderr, PROG ": %s\n", err);
        goto done;
    }

    if (enc) {
        key = kid ? ig_audit_keyring_find(ring, kid, strlen(kid))
                  : ig_audit_keyring_signing_key(ring);

        if (key == NULL) {
            fprintf(stderr, PROG ": %s: no key \"%s\"\n", keyfile,
                    kid ? kid : "");
            goto done;
        }

        if (key->len != IG_MC_KEY_LEN) {
            fprintf(stderr, PROG ": %s: key \"%s\" is %zu bytes; a model "
                    "key is %d (64 hex digits)\n", keyfile, key->id,
                    key->len, IG_MC_KEY_LEN);
            goto done;
        }

        if (ig_mc_is_encrypted(data, len)) {
            fprintf(stderr, PROG ": %s is already encrypted\n", in);
            goto done;
        }

        if (ig_mc_encrypt(key->key, key->id, data, len, &out, &outlen, err,
                          sizeof(err)) != 0)
        {
            fprintf(stderr, PROG ": %s: %s\n", in, err);
            goto done;
        }

        rc = write_file(outp, out, outlen, 0644, 0) == 0 ? 0 : 1;
        free(out);

    } else {
        if (ig_mc_decrypt(ring, data, len, &out, &outlen, err, sizeof(err))
            != 0)
        {
            fprintf(stderr, PROG ": %s: %s\n", in, err);
            goto done;
        }

        rc = write_file(outp, out, outlen, 0600, 0) == 0 ? 0 : 1;
        ig_mc_free_clear(out, outlen + 1);
    }

done:

    free(data);
    ig_audit_keyring_cleanse(ring);
    free(ring);

    return rc;
}


static int
newkey(int argc, char **argv)
{
    int      i;
    uint8_t  k[IG_MC_KEY_LEN];

    if (argc != 1 || !ig_audit_key_id_valid(argv[0], strlen(argv[0]))
        || strlen(argv[0]) > IG_MC_KID_MAX)
    {
        fprintf(stderr, PROG ": newkey ID: an id is [A-Za-z0-9._-], 1 to "
                "%d\n", IG_MC_KID_MAX);
        return 2;
    }

    if (RAND_bytes(k, sizeof(k)) != 1) {
        fprintf(stderr, PROG ": RAND_bytes() failed\n");
        return 1;
    }

    printf("%s:", argv[0]);

    for (i = 0; i < IG_MC_KEY_LEN; i++) {
        printf("%02x", k[i]);
    }

    printf("\n");
    OPENSSL_cleanse(k, sizeof(k));

    return 0;
}


int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }

    if (strcmp(argv[1], "keygen") == 0) {
        return keygen(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "sign") == 0) {
        return sign(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "verify") == 0) {
        return verify(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "encrypt") == 0) {
        return encdec(argc - 2, argv + 2, 1);
    }

    if (strcmp(argv[1], "decrypt") == 0) {
        return encdec(argc - 2, argv + 2, 0);
    }

    if (strcmp(argv[1], "newkey") == 0) {
        return newkey(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }

    usage(stderr);
    return 2;
}
