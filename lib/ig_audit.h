/*
 * Copyright (C) infergate authors
 *
 * Signed audit records: HMAC-SHA256 hash chains over JSON lines.
 * nginx-free: the module, the verifier tool, unit tests and fuzzers link
 * it alone.
 *
 * A record is one JSON object on one line whose LAST member is the
 * "infergate" object, and whose last members in turn are the chain
 * members written by ig_audit_seal():
 *
 *   {"@timestamp":"...", ..., "infergate":{<members>,"chain":"<id>",
 *    "seq":<n>,"key_id":"<kid>","prev":"<64 hex>","mac":"<64 hex>"}}\n
 *
 * mac = HMAC-SHA256(key[kid], every byte of the line before the 64 hex
 * digits of the mac, i.e. up to and including `"mac":"`), lowercase hex.
 * prev = the mac of the previous record of the same chain; 64 zeros for
 * the first record (seq 0).  One chain per nginx worker per start; the
 * first record has event.action "chain_start", the last "chain_end".
 */

#ifndef _IG_AUDIT_H_INCLUDED_
#define _IG_AUDIT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define IG_AUDIT_KEY_MIN        32      /* bytes                        */
#define IG_AUDIT_KEY_MAX        128     /* bytes                        */
#define IG_AUDIT_KEY_ID_MAX     32      /* [A-Za-z0-9._-]               */
#define IG_AUDIT_CHAIN_ID_LEN   32      /* hex characters               */
#define IG_AUDIT_MAX_KEYS       64

/* room ig_audit_seal() needs after the record text */
#define IG_AUDIT_TRAILER_MAX                                                 \
    (sizeof(",\"chain\":\"\",\"seq\":,\"key_id\":\"\",\"prev\":\"\","          \
            "\"mac\":\"\"}}\n") + IG_AUDIT_CHAIN_ID_LEN + 20                 \
     + IG_AUDIT_KEY_ID_MAX + 64 + 64)


typedef struct {
    char          id[IG_AUDIT_KEY_ID_MAX + 1];
    unsigned char key[IG_AUDIT_KEY_MAX];
    size_t        len;
} ig_audit_key_t;


/* The key file: lines "id:hex" (hex of 32..128 bytes), '#' comments. */
typedef struct {
    ig_audit_key_t  keys[IG_AUDIT_MAX_KEYS];
    unsigned        nkeys;            /* the last one signs new chains  */
} ig_audit_keyring_t;


typedef struct ig_audit_chain_s  ig_audit_chain_t;


/*
 * Parses key file text.  Returns 0, or -1 with "line N: reason" in err
 * (NUL-terminated, truncated to errlen): bad syntax, bad hex, key shorter
 * than 32 bytes, duplicate id, too many keys, no key at all.
 */
int ig_audit_keyring_parse(ig_audit_keyring_t *ring, const char *text,
    size_t len, char *err, size_t errlen);

/* The key with this id, or NULL. */
const ig_audit_key_t *ig_audit_keyring_find(const ig_audit_keyring_t *ring,
    const char *id, size_t len);

/*
 * Opens a chain signed with key; chain_id is IG_AUDIT_CHAIN_ID_LEN hex
 * characters (random per worker start: use ig_audit_chain_id()).
 * Returns NULL on allocation or OpenSSL failure.  Not thread-safe.
 */
ig_audit_chain_t *ig_audit_chain_open(const ig_audit_key_t *key,
    const char *chain_id);
void ig_audit_chain_close(ig_audit_chain_t *c);

/* Fills out[IG_AUDIT_CHAIN_ID_LEN + 1] with a random hex id. */
int ig_audit_chain_id(char *out);

/* Sequence number the next sealed record will carry. */
uint64_t ig_audit_chain_seq(const ig_audit_chain_t *c);

/*
 * Seals a record: buf[0..len) holds the record text so far, ending inside
 * the "infergate" object right where the chain members go (just after its
 * '{' or after a ','); the caller writes ',' before calling when members
 * precede.  Appends the chain members, the mac and "}}\n"; buf must have
 * IG_AUDIT_TRAILER_MAX bytes free after len.  Returns the new length, or
 * 0 on an OpenSSL failure (nothing appended, the chain unchanged).
 */
size_t ig_audit_seal(ig_audit_chain_t *c, unsigned char *buf, size_t len);


#endif /* _IG_AUDIT_H_INCLUDED_ */
