/*
 * Copyright (C) infergate authors
 *
 * The API keys file: one key per line,
 *   <64-hex SHA-256 of the key> <tenant> [rate=R] [burst=N] [models=a,b]
 * '#' starts a comment, blank lines are skipped.  nginx-free.
 */

#ifndef _IG_KEYS_H_INCLUDED_
#define _IG_KEYS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define IG_KEY_PREFIX         "igk_"
#define IG_KEYS_MAX_MODELS    16
#define IG_KEYS_MAX_NAME      64
#define IG_KEYS_MAX_BURST     1000000
#define IG_KEYS_DIGEST_HEX    64      /* hex digits, without the NUL     */


typedef struct {
    const char  *data;        /* points into the parsed line             */
    size_t       len;
} ig_str_t;


typedef struct {
    uint8_t      digest[32];
    ig_str_t     tenant;      /* [A-Za-z0-9._-]{1,64}                    */
    uint32_t     quota;       /* 0 = no override; else rate=R parsed by  */
    uint32_t     window_s;    /*   ig_gcra_parse_rate                    */
    int32_t      burst;       /* -1 = no override                        */
    unsigned     nmodels;     /* 0 = every model allowed                 */
    ig_str_t     models[IG_KEYS_MAX_MODELS];
} ig_key_entry_t;


/*
 * Parses one line (without its newline; may end in '\r').  Returns
 * 1 with *entry filled, 0 for a blank or comment line, -1 with a static
 * English reason in *reason ("expected 64 hex digits of SHA-256",
 * "missing tenant", "unknown option", "bad rate: ...",
 * "duplicate option \"rate\"", "bad model name", ...).
 *
 * Fields are separated by spaces and tabs; '#' starts a comment anywhere
 * (even inside a field); one trailing '\r' is ignored.  The hex digest is
 * case-insensitive.  Options: rate=R (see ig_gcra_parse_rate), burst=N
 * (0..IG_KEYS_MAX_BURST), models=a,b (1..IG_KEYS_MAX_MODELS names, no
 * empty entries; duplicates are kept).  Each option at most once.  An
 * all-zero digest is rejected (see ig_keys_digest()).
 * The line need not be NUL-terminated; a byte outside the fields'
 * alphabets (NUL, '\n', '\v', non-ASCII...) makes its field invalid.
 *
 * *entry is written only when 1 is returned; its ig_str_t fields point
 * into line.  reason may be NULL.
 */
int ig_keys_parse_line(const char *line, size_t len, ig_key_entry_t *entry,
    const char **reason);

/*
 * Same as ig_keys_parse_line(), and on -1 also writes a NUL-terminated
 * message naming the offending text into buf (truncated to size bytes;
 * nothing written when size is 0), e.g.
 *   unknown option "foo"
 *   bad rate: expected unit r/s, r/m or r/h, got "10r/x"
 * Bytes outside printable ASCII are written as \xHH, long text is cut.
 */
int ig_keys_parse_line_msg(const char *line, size_t len,
    ig_key_entry_t *entry, const char **reason, char *buf, size_t size);

/* Lowercase hex of a digest: 64 digits and a NUL into out. */
void ig_keys_digest_hex(const uint8_t digest[32],
    char out[IG_KEYS_DIGEST_HEX + 1]);

/*
 * SHA-256 of the presented key (OpenSSL EVP).  Should OpenSSL fail (out
 * of memory), out is all zeros, a digest ig_keys_parse_line() never
 * accepts, so that the lookup fails closed.
 */
void ig_keys_digest(const unsigned char *key, size_t len, uint8_t out[32]);

/* The same, returning 0, or -1 (out all zeros) when OpenSSL failed. */
int ig_keys_digest_ex(const unsigned char *key, size_t len, uint8_t out[32]);

/* Constant-time comparison of two digests: 1 when equal. */
int ig_keys_digest_eq(const uint8_t a[32], const uint8_t b[32]);


/*
 * A reusable SHA-256 hasher: OpenSSL's low-level SHA-256 over a context
 * allocated once, with no allocation per key.  Not thread-safe: one per
 * thread (nginx workers are single-threaded; a copy per process after
 * fork).
 */
typedef struct ig_sha256_s  ig_sha256_t;

ig_sha256_t *ig_sha256_new(void);
void ig_sha256_free(ig_sha256_t *h);

/* Returns 0, or -1 with out zeroed (never matches a key). */
int ig_sha256(ig_sha256_t *h, const unsigned char *data, size_t len,
    uint8_t out[32]);


#endif /* _IG_KEYS_H_INCLUDED_ */
