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
 * "missing tenant", "unknown option \"foo\"", "bad rate: ...",
 * "duplicate option \"rate\"", "bad model name", ...).
 */
int ig_keys_parse_line(const char *line, size_t len, ig_key_entry_t *entry,
    const char **reason);

/* SHA-256 of the presented key (OpenSSL). */
void ig_keys_digest(const unsigned char *key, size_t len, uint8_t out[32]);

/* Constant-time comparison of two digests: 1 when equal. */
int ig_keys_digest_eq(const uint8_t a[32], const uint8_t b[32]);


#endif /* _IG_KEYS_H_INCLUDED_ */
