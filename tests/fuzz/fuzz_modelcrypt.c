/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the encrypted model file reader: the header
 * parser and the decryption that follows it, with a fixed key
 * ("vendor-1", 32 bytes of 0x11, the key the seed corpus was made with).
 * Checks invariants, not just the absence of crashes: a header accepted
 * says exactly the file's length, and a file that decrypts matches the
 * plaintext SHA-256 its header carries and re-encrypts to one that
 * decrypts to the same bytes.
 *
 * make build/fuzz/fuzz_modelcrypt
 * build/fuzz/fuzz_modelcrypt -max_total_time=60 tests/fuzz/corpus/modelcrypt
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ig_modelcrypt.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


#define ig_fuzz_assert(c)                                                     \
    do {                                                                      \
        if (!(c)) {                                                           \
            abort();                                                          \
        }                                                                     \
    } while (0)


static const char  ig_fuzz_keys[] =
    "vendor-1:1111111111111111111111111111111111111111111111111111111111111111"
    "\n";


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                        rc;
    size_t                     ptlen, len2, ptlen2;
    uint8_t                   *pt, *enc, *pt2, md[32];
    unsigned                   mdlen;
    ig_mc_hdr_t                h;
    char                       err[256];
    static int                 init;
    static ig_audit_keyring_t  ring;

    if (!init) {
        ig_fuzz_assert(ig_audit_keyring_parse(&ring, ig_fuzz_keys,
                                              sizeof(ig_fuzz_keys) - 1, err,
                                              sizeof(err)) == 0);
        init = 1;
    }

    err[0] = '\0';
    rc = ig_mc_hdr_parse(data, size, &h, err, sizeof(err));

    if (rc != 0) {
        ig_fuzz_assert(err[0] != '\0');
        ig_fuzz_assert(ig_mc_decrypt(&ring, data, size, &pt, &ptlen, err,
                                     sizeof(err)) == -1);
        ig_fuzz_assert(pt == NULL);
        return 0;
    }

    ig_fuzz_assert(size == IG_MC_HDR_LEN + h.ptlen + IG_MC_TAG_LEN);
    ig_fuzz_assert(h.kid[0] != '\0' && strlen(h.kid) <= IG_MC_KID_MAX);
    ig_fuzz_assert(ig_mc_is_encrypted(data, size));

    err[0] = '\0';
    rc = ig_mc_decrypt(&ring, data, size, &pt, &ptlen, err, sizeof(err));

    if (rc != 0) {
        ig_fuzz_assert(pt == NULL && err[0] != '\0');
        return 0;
    }

    ig_fuzz_assert(ptlen == h.ptlen && pt[ptlen] == '\0');
    ig_fuzz_assert(EVP_Digest(pt, ptlen, md, &mdlen, EVP_sha256(), NULL)
                   == 1);
    ig_fuzz_assert(memcmp(md, h.sha, 32) == 0);

    ig_fuzz_assert(ig_mc_encrypt(ring.keys[0].key, h.kid, pt, ptlen, &enc,
                                 &len2, err, sizeof(err)) == 0);
    ig_fuzz_assert(len2 == size);
    ig_fuzz_assert(ig_mc_decrypt(&ring, enc, len2, &pt2, &ptlen2, err,
                                 sizeof(err)) == 0);
    ig_fuzz_assert(ptlen2 == ptlen && memcmp(pt, pt2, ptlen) == 0);

    ig_mc_free_clear(pt, ptlen + 1);
    ig_mc_free_clear(pt2, ptlen2 + 1);
    free(enc);

    return 0;
}
