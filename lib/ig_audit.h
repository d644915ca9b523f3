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
#include <sys/types.h>


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

/*
 * Fills out[IG_AUDIT_CHAIN_ID_LEN + 1] with a random hex id (lowercase,
 * NUL-terminated; 16 bytes of RAND_bytes()).  Returns 0, or -1 when
 * RAND_bytes() failed (out is then "").
 */
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


/* ---- additions to the contract ---------------------------------------- */

/*
 * Notes on the functions above, as implemented.  ig_audit_keyring_parse()
 * cleanses the ring on error; key ids are case-sensitive; '#' starts a
 * comment anywhere on a line; blanks around the id, the ':' and the hex,
 * and a final '\r', are ignored; hex digits may be upper or lower case.
 * ig_audit_chain_open() also returns NULL for a key outside 32..128 bytes
 * or with a bad id, and for a chain id that is not 32 lowercase hex
 * digits.  ig_audit_seal() may have written past len even when it
 * returns 0.
 */

#define IG_AUDIT_MAC_LEN        32      /* bytes of HMAC-SHA256         */
#define IG_AUDIT_MAC_HEX        64      /* hex characters               */
#define IG_AUDIT_KEY_FILE_MAX   65536   /* bytes read of a key file     */

/*
 * Bytes at the end of a sealed line that are not covered by the mac:
 * the 64 hex digits of the mac and "\"}}" (the newline excluded).
 */
#define IG_AUDIT_MAC_TAIL       (IG_AUDIT_MAC_HEX + sizeof("\"}}") - 1)


/* 1 when s[0..len) is a valid key id: [A-Za-z0-9._-]{1,32}. */
int ig_audit_key_id_valid(const char *s, size_t len);

/*
 * The key file rule (nginx -t and infergate-audit apply it alike): 1 when
 * st_mode grants group and others no permission at all (0600, 0400,
 * 0700...), else 0: a key file readable or writable (or even searchable)
 * by group or others is refused.
 */
int ig_audit_key_file_mode_ok(mode_t mode);

/*
 * Reads and parses a key file: opens it, fstat()s the open descriptor,
 * refuses anything but a regular file, a mode failing
 * ig_audit_key_file_mode_ok() and files larger than IG_AUDIT_KEY_FILE_MAX,
 * then ig_audit_keyring_parse().  The read buffer is cleansed.  Returns 0,
 * or -1 with a message in err ("/path: open() failed: ...", "/path is
 * accessible by group or others (mode 0644): chmod 600 it",
 * "/path: line 3: bad hex"...).  Blocking I/O: configuration time only.
 */
int ig_audit_keyring_load(ig_audit_keyring_t *ring, const char *path,
    char *err, size_t errlen);

/* Zeroes the key material (OPENSSL_cleanse); the ring is then empty. */
void ig_audit_keyring_cleanse(ig_audit_keyring_t *ring);

/* The key new chains are signed with (the last one), or NULL if none. */
const ig_audit_key_t *ig_audit_keyring_signing_key(
    const ig_audit_keyring_t *ring);

/* The chain's id and key id (NUL-terminated, owned by the chain). */
const char *ig_audit_chain_get_id(const ig_audit_chain_t *c);
const char *ig_audit_chain_key_id(const ig_audit_chain_t *c);


/*
 * HMAC-SHA256 with one key: the SHA-256 states after (key ^ ipad) and
 * (key ^ opad) computed once, and the inner state after the last
 * message's first 64 bytes, reused while messages start with the same
 * 64 bytes.  What the chains use; the verifier keeps one per key.  Not
 * thread-safe (a call updates the kept state).
 */
typedef struct ig_audit_hmac_s  ig_audit_hmac_t;

ig_audit_hmac_t *ig_audit_hmac_new(const unsigned char *key, size_t len);
void ig_audit_hmac_free(ig_audit_hmac_t *h);

/* Returns 0, or -1 on an OpenSSL failure (out is then zeroed). */
int ig_audit_hmac(ig_audit_hmac_t *h, const unsigned char *data,
    size_t len, unsigned char out[IG_AUDIT_MAC_LEN]);

/* Lowercase hex of n bytes into out (2 * n characters, no NUL). */
void ig_audit_hex(char *out, const unsigned char *in, size_t n);


/* ---- chain links and the chain state file ------------------------------ */

/*
 * Every chain marker (chain_start and chain_end) carries, among the
 * "infergate" members before the chain members, the member
 *
 *   "link":"genesis"                         the first marker of the log
 *   "link":"<chain id>:<seq>:<64 hex mac>"   the marker sealed just
 *                                            before it, by any writer
 *
 * so that all the markers written to one file path, by every worker,
 * across reloads and restarts, form one list in the order they were
 * sealed.  The list's newest marker and the chains started and not yet
 * ended are kept in PATH.chainstate, a small text file:
 *
 *   infergate-chainstate 1
 *   head <chain id> <seq> <64 hex mac>     (absent: no marker yet)
 *   open <chain id> <pid>                  (one per chain not ended)
 *   end
 *
 * A writer takes an exclusive fcntl() lock on the state file, reads it,
 * seals its marker naming the head, writes the marker to the log, then
 * rewrites the state and unlocks; a reader takes a shared lock.
 */

#define IG_AUDIT_STATE_SUFFIX      ".chainstate"
#define IG_AUDIT_STATE_OPEN_MAX    256
#define IG_AUDIT_STATE_SIZE_MAX                                              \
    (128 + IG_AUDIT_STATE_OPEN_MAX * (6 + IG_AUDIT_CHAIN_ID_LEN + 21))

/* room the "link" member needs, with its comma */
#define IG_AUDIT_LINK_MAX                                                    \
    (sizeof("\"link\":\"::\",") - 1 + IG_AUDIT_CHAIN_ID_LEN + 20          \
     + IG_AUDIT_MAC_HEX)


typedef struct {
    char                chain[IG_AUDIT_CHAIN_ID_LEN + 1];
    int64_t             pid;
} ig_audit_state_open_t;


typedef struct {
    unsigned            have_head;
    char                head_chain[IG_AUDIT_CHAIN_ID_LEN + 1];
    uint64_t            head_seq;
    char                head_mac[IG_AUDIT_MAC_HEX + 1];
    unsigned            nopen;
    ig_audit_state_open_t  open[IG_AUDIT_STATE_OPEN_MAX];
} ig_audit_state_t;


/*
 * Parses state file text; empty text is a fresh state (no head, nothing
 * open).  Returns 0, or -1 with "line N: reason" in err (an incomplete
 * file, without its "end" line, is an error).
 */
int ig_audit_state_parse(ig_audit_state_t *st, const char *text, size_t len,
    char *err, size_t errlen);

/* Writes the text of st into buf; returns its length, 0 if size is short */
size_t ig_audit_state_format(const ig_audit_state_t *st, char *buf,
    size_t size);

/*
 * Writes the "link" member naming st's head (or "genesis"), with a
 * trailing comma, at p; returns the bytes written (IG_AUDIT_LINK_MAX at
 * most).
 */
size_t ig_audit_state_link(const ig_audit_state_t *st, unsigned char *p);

/*
 * After a marker was sealed (line[0..len) as ig_audit_seal() made it) and
 * written: makes it the head; a chain_start (start = 1) adds the chain as
 * open with pid, a chain_end removes it.  Open chains whose pid alive()
 * says is gone are dropped first (alive may be NULL); when the table is
 * full, the oldest entry is dropped.
 */
void ig_audit_state_advance(ig_audit_state_t *st, const unsigned char *line,
    size_t len, const char *chain, uint64_t seq, int start, int64_t pid,
    int (*alive)(int64_t pid));



/*
 * Writes one chain marker the way every writer of a log does (the
 * gateway's workers, the backend): takes the exclusive fcntl() lock on
 * state_fd, reads and parses the state (a damaged or oversized one is
 * taken as empty: a new genesis, which the verifier reports), appends
 * the "link" member naming its head at buf + len, seals the marker,
 * writes it to log_fd with write(2), then makes it the head (chain
 * added as open with pid on a start, removed on an end; dead pids
 * dropped with alive) and rewrites the state in place; unlocks.
 *
 * buf[0..len) is the marker so far, ending inside "infergate" after a
 * ','; buf needs IG_AUDIT_LINK_MAX + IG_AUDIT_TRAILER_MAX bytes free
 * after len.  st and text are scratch: a state and
 * IG_AUDIT_STATE_SIZE_MAX + 1 bytes.  A write that fails part way ends
 * the half line with a newline.  Returns 0 when the marker was written,
 * -1 when not (seal or write failure); what went wrong on the way, for
 * the caller to log, is in out.
 */
typedef struct {
    size_t              len;           /* the sealed marker in buf      */
    int                 lock_errno;    /* fcntl(F_SETLKW) failed:       */
                                       /* went on without the lock      */
    int                 damaged;       /* the state was unreadable      */
    char                damage[128];   /* why ("too large", "line 2: …")*/
    int                 seal_failed;   /* OpenSSL: nothing written      */
    int                 write_errno;   /* the marker write failed       */
    int                 state_failed;  /* the state rewrite failed      */
    int                 state_errno;
} ig_audit_marker_t;

int ig_audit_marker_write(int state_fd, int log_fd, ig_audit_chain_t *c,
    unsigned char *buf, size_t len, int start, int64_t pid,
    int (*alive)(int64_t pid), ig_audit_state_t *st, char *text,
    ig_audit_marker_t *out);


#endif /* _IG_AUDIT_H_INCLUDED_ */
