
/*
 * Copyright (C) infergate authors
 */

/*
 * Model files at rest: detached signatures and AES-256-GCM encryption,
 * nginx-free, for the backend, infergate-models, the unit tests and the
 * fuzzer.
 *
 * Signatures are the algorithm's plain output over the file's bytes:
 * Ed25519 (64 raw bytes, what `openssl pkeyutl -sign -rawin` writes),
 * ECDSA P-256 with SHA-256 (DER), RSA-PSS with SHA-256, MGF1-SHA-256 and
 * a salt as long as the digest (raw).  A trust directory holds one PEM
 * public key per signer: SIGNER.pub.pem (or SIGNER.pem); the file name
 * without the suffix is the signer id.
 *
 * An encrypted model file is
 *
 *     header (IG_MC_HDR_LEN bytes) | ciphertext (ptlen bytes) | tag (16)
 *
 * header, big-endian:
 *
 *     0   magic "IGMODENC"          8
 *     8   version (1)               1
 *     9   algorithm (1: AES-256-GCM) 1
 *     10  key id length (1..32)     1
 *     11  flags (0)                 1
 *     12  nonce                     12   random per file
 *     24  plaintext length          8
 *     32  plaintext SHA-256         32
 *     64  key id, NUL-padded        32
 *     96  key check                 16   HMAC(K, "...kcv")[0..16)
 *     112 header MAC                16   HMAC(K_hdr, header[0..112))
 *
 * The whole header is the GCM AAD.  The file's key K (32 bytes, from a
 * key file of "ID:HEX" lines, lib/ig_audit.h's parser) is never used
 * directly: K_enc = HMAC-SHA256(K, "infergate-model-v1 enc") encrypts,
 * K_hdr = HMAC-SHA256(K, "infergate-model-v1 hdr") authenticates the
 * header.  The key check and the header MAC only make the error say
 * which: a wrong key, a modified header, or a modified body or tag (GCM
 * alone cannot tell them apart).
 */

#ifndef _IG_MODELCRYPT_H_INCLUDED_
#define _IG_MODELCRYPT_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "ig_audit.h"


#define IG_MC_MAGIC          "IGMODENC"
#define IG_MC_MAGIC_LEN      8
#define IG_MC_VERSION        1
#define IG_MC_ALG_AES256GCM  1
#define IG_MC_HDR_LEN        128
#define IG_MC_NONCE_LEN      12
#define IG_MC_TAG_LEN        16
#define IG_MC_KEY_LEN        32
#define IG_MC_KID_MAX        32
#define IG_MC_FILE_MAX       (1024ULL * 1024 * 1024)   /* 1 GiB */
#define IG_MC_SIG_MAX        1024
#define IG_MC_SIGNER_MAX     64
#define IG_MC_TRUST_MAX      64

/* the environment variable that may hold model keys ("ID:HEX" lines) */
#define IG_MC_KEYS_ENV       "INFERGATE_MODEL_KEYS"


typedef struct {
    uint8_t      version;
    uint8_t      alg;
    uint8_t      nonce[IG_MC_NONCE_LEN];
    uint64_t     ptlen;
    uint8_t      sha[32];
    char         kid[IG_MC_KID_MAX + 1];
    uint8_t      kcv[16];
    uint8_t      mac[16];
} ig_mc_hdr_t;


typedef struct {
    char         id[IG_MC_SIGNER_MAX];
    const char  *alg;                    /* ig_mc_key_alg()             */
    EVP_PKEY    *pkey;
} ig_mc_signer_t;


typedef struct {
    ig_mc_signer_t  keys[IG_MC_TRUST_MAX];
    unsigned        n;
} ig_mc_trust_t;


/* 1 when data starts with the magic of an encrypted model */
int ig_mc_is_encrypted(const uint8_t *data, size_t len);

/*
 * Parses and checks the header of a whole file data[0..len): magic,
 * version, algorithm, key id, flags, and that len is exactly the header,
 * the plaintext length and the tag.  Returns 0 or -1 with the reason
 * ("truncated: 100 bytes, the header says 4240").
 */
int ig_mc_hdr_parse(const uint8_t *data, size_t len, ig_mc_hdr_t *h,
    char *err, size_t errlen);

/*
 * Encrypts pt with a 32-byte key under key id kid; *out (malloc) holds
 * the whole file.  Returns 0 or -1 with err.
 */
int ig_mc_encrypt(const uint8_t *key, const char *kid, const uint8_t *pt,
    size_t ptlen, uint8_t **out, size_t *outlen, char *err, size_t errlen);

/*
 * Decrypts a whole file with the key its header names, taken from ring.
 * *pt (malloc, ptlen + 1 bytes, NUL-terminated) is returned only after
 * the tag and the plaintext's SHA-256 checked; free it with
 * ig_mc_free_clear().  Returns 0 or -1 with err saying which: truncated,
 * no such key, wrong key, header modified, body or tag modified.
 */
int ig_mc_decrypt(const ig_audit_keyring_t *ring, const uint8_t *data,
    size_t len, uint8_t **pt, size_t *ptlen, char *err, size_t errlen);

/* OPENSSL_cleanse() then free() */
void ig_mc_free_clear(void *p, size_t len);

/*
 * Reads a whole regular file of at most max bytes into *data (malloc,
 * len + 1 bytes, NUL-terminated).  Returns 0, or -1 with err; a missing
 * file is -2 (errno ENOENT) so a caller may treat it as absent.
 */
int ig_mc_read_file(const char *path, size_t max, uint8_t **data,
    size_t *len, char *err, size_t errlen);

/*
 * "ed25519", "ecdsa-p256" or "rsa-pss" for a key of an accepted type
 * (RSA at least 2048 bits), or NULL.
 */
const char *ig_mc_key_alg(EVP_PKEY *pkey);

/* Signs data with a private key; sig holds IG_MC_SIG_MAX bytes. */
int ig_mc_sign(EVP_PKEY *key, const uint8_t *data, size_t len,
    uint8_t *sig, size_t *siglen, char *err, size_t errlen);

/* 1: valid, 0: not valid, -1: error (an unaccepted key type) */
int ig_mc_verify(EVP_PKEY *key, const uint8_t *data, size_t len,
    const uint8_t *sig, size_t siglen);

/*
 * Loads every *.pem of dir as a public key: the signer id is the file
 * name without ".pub.pem" or ".pem".  A file that is not a public key of
 * an accepted type, a duplicate id or an empty directory is an error.
 */
int ig_mc_trust_load(ig_mc_trust_t *t, const char *dir, char *err,
    size_t errlen);
void ig_mc_trust_free(ig_mc_trust_t *t);

/*
 * Verifies sig over data with each trusted key; returns 0 and the
 * signer's id, or -1 when no trusted key verifies it.
 */
int ig_mc_trust_verify(const ig_mc_trust_t *t, const uint8_t *data,
    size_t len, const uint8_t *sig, size_t siglen, char *signer,
    size_t signerlen);

#endif /* _IG_MODELCRYPT_H_INCLUDED_ */
