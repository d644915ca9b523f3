/*
 * Copyright (C) infergate authors
 *
 * The audit log verifier engine, see ig_audit_verify.h.
 *
 * A line is parsed with yajl callbacks (no tree): the callbacks track the
 * depth, the member being read at depths 1 and 2, and the last five
 * members of the "infergate" object.  The layout check then rebuilds the
 * chain members' canonical text from the values found and compares it
 * with the end of the line, so the bytes the mac covers are always the
 * line minus its last IG_AUDIT_MAC_TAIL bytes.
 *
 * Chains live in an array in the order they were first seen, indexed by
 * an open-addressing table hashed with a random seed (chain ids come
 * from the input, so colliding ids must not be cheap to make).
 */


#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <yajl/yajl_parse.h>

#include "ig_audit.h"
#include "ig_audit_verify.h"


#define IG_AV_NTYPES          (IG_AUDIT_P_STATE + 1)
#define IG_AV_ID_BYTES        (IG_AUDIT_CHAIN_ID_LEN / 2)

/* the chain members, in the order the sealer writes them */
#define IG_AV_M_OTHER         0
#define IG_AV_M_CHAIN         1
#define IG_AV_M_SEQ           2
#define IG_AV_M_KEY_ID        3
#define IG_AV_M_PREV          4
#define IG_AV_M_MAC           5
#define IG_AV_M_PID           6
#define IG_AV_M_BAD           7       /* a chain member of a wrong type */
#define IG_AV_M_ACTION        8       /* "action" inside "event"        */
#define IG_AV_M_RECORDS       9       /* chain_end's counts             */
#define IG_AV_M_LOST          10
#define IG_AV_M_LINK          11      /* a marker's link, see ig_audit.h */

/* the member being read at depth 1 */
#define IG_AV_K_OTHER         0
#define IG_AV_K_INFERGATE     1
#define IG_AV_K_EVENT         2
#define IG_AV_K_EVENT_ACTION  3

/* the container open at depth 2 */
#define IG_AV_D2_OTHER        0
#define IG_AV_D2_INFERGATE    1
#define IG_AV_D2_EVENT        2

#define IG_AV_SEQ_MAX         20      /* digits of UINT64_MAX           */

/* why a record is not trusted */
#define IG_AV_BAD             1       /* MAC mismatch                   */
#define IG_AV_UNKNOWN         2       /* key id not in the keyring      */


typedef struct {
    uint64_t            from;
    uint64_t            to;
    const char         *path;
    uint64_t            line;
} ig_av_gap_t;


/* an untrusted record held until the chain's next record */
typedef struct {
    unsigned            kind;          /* IG_AV_BAD, IG_AV_UNKNOWN       */
    const char         *path;
    uint64_t            line;
    uint64_t            seq;           /* as it claims                   */
    int64_t             pid;
    ig_audit_action_e   action;
    unsigned char       mac[IG_AUDIT_MAC_LEN];
} ig_av_pending_t;


typedef struct {
    unsigned char       id[IG_AV_ID_BYTES];
    char                key_id[IG_AUDIT_KEY_ID_MAX + 1];
    char                unknown_key[IG_AUDIT_KEY_ID_MAX + 1];
    int64_t             pid;
    uint64_t            start_order;
    uint64_t            first;
    uint64_t            last;
    uint64_t            next;          /* seq expected next              */
    uint64_t            prev_seen;     /* seq of the chain's last line   */
    uint64_t            nrecords;
    unsigned char       prev_mac[IG_AUDIT_MAC_LEN];
    const char         *path;          /* where its last record was      */
    uint64_t            line;
    ig_av_gap_t        *gaps;          /* IG_AUDIT_VERIFY_GAPS, lazily   */
    unsigned            ngaps;
    ig_av_pending_t     pend;
    unsigned            pending:1;
    unsigned            started:1;
    unsigned            ended:1;
    unsigned            suspect:1;     /* prev_mac is unauthenticated    */
    unsigned            have_key:1;
    unsigned            have_seen:1;
    unsigned            live:1;
    unsigned            linked:1;      /* its chain_start has a link     */
} ig_av_chain_t;


/* a chain marker with a link (trusted: its MAC verified) */
typedef struct {
    unsigned char       chain[IG_AV_ID_BYTES];
    uint64_t            seq;
    unsigned char       mac[IG_AUDIT_MAC_LEN];
    unsigned            link;
    unsigned char       link_chain[IG_AV_ID_BYTES];
    uint64_t            link_seq;
    unsigned char       link_mac[IG_AUDIT_MAC_LEN];
    ig_audit_action_e   action;
    const char         *path;
    uint64_t            line;
    size_t              next;          /* index + 1 of its successor     */
    unsigned            named;         /* times named as predecessor     */
    unsigned            newer:1;       /* after the state file's head    */
} ig_av_marker_t;


struct ig_audit_verify_s {
    const ig_audit_keyring_t  *ring;
    unsigned                   flags;
    ig_audit_hmac_t           *hmacs[IG_AUDIT_MAX_KEYS];

    ig_audit_problem_pt        handler;
    void                      *handler_data;
    ig_audit_problem_t        *problems;
    size_t                     nstored;
    size_t                     nalloc;
    uint64_t                   nproblems;
    uint64_t                   counts[IG_AV_NTYPES];

    uint64_t                   nlines;
    uint64_t                   nrecords;
    uint64_t                   nverified;

    char                     **paths;
    size_t                     npaths;
    const char                *path;
    uint64_t                   line;
    unsigned                   in_file:1;
    unsigned                   overlong:1;
    unsigned                   finished:1;

    unsigned char             *buf;
    size_t                     len;
    size_t                     cap;

    ig_av_chain_t             *chains;
    size_t                     nchains;
    size_t                     achains;
    uint32_t                  *index;
    size_t                     index_cap;     /* a power of 2           */
    uint64_t                   seed[2];
    uint64_t                   order;

    ig_av_marker_t            *markers;
    size_t                     nmarkers;
    size_t                     amarkers;

    ig_audit_state_t          *state;       /* NULL: none given          */
    char                      *state_path;
};


/* yajl callback state for one line */
typedef struct {
    unsigned            depth;
    unsigned            top_key;
    unsigned            d2;
    unsigned            d2_key;
    unsigned            last_is_ig;
    unsigned            tail[5];
    unsigned            ntail;
    unsigned            seen[IG_AV_M_LINK + 1];
    unsigned            nactions;
    ig_audit_action_e   action;
    int64_t             pid;
    int64_t             records;
    int64_t             lost;
    unsigned            link;
    char                link_chain[IG_AUDIT_CHAIN_ID_LEN];
    uint64_t            link_seq;
    unsigned char       link_mac[IG_AUDIT_MAC_LEN];
    const char         *reason;

    char                chain[IG_AUDIT_CHAIN_ID_LEN];
    char                seq[IG_AV_SEQ_MAX];
    size_t              seq_len;
    char                key_id[IG_AUDIT_KEY_ID_MAX];
    size_t              key_id_len;
    char                prev[IG_AUDIT_MAC_HEX];
    char                mac[IG_AUDIT_MAC_HEX];
} ig_av_parse_t;


static int ig_av_null(void *ctx);
static int ig_av_boolean(void *ctx, int b);
static int ig_av_number(void *ctx, const char *s, size_t len);
static int ig_av_string(void *ctx, const unsigned char *s, size_t len);
static int ig_av_start_map(void *ctx);
static int ig_av_map_key(void *ctx, const unsigned char *s, size_t len);
static int ig_av_end_map(void *ctx);
static int ig_av_start_array(void *ctx);
static int ig_av_end_array(void *ctx);
static int ig_av_parse_action(ig_av_parse_t *p, int type,
    const unsigned char *s, size_t len);
static int ig_av_value(ig_av_parse_t *p, int type, const unsigned char *s,
    size_t len);
static int ig_av_end(ig_av_parse_t *p);
static int ig_av_parse_link(ig_av_parse_t *p, int type,
    const unsigned char *s, size_t len);
static int ig_av_layout(ig_av_parse_t *p, const unsigned char *line,
    size_t len, ig_audit_record_t *rec);
static int ig_av_hex(const char *s, size_t len, unsigned char *out);
static int ig_av_u64(const char *s, size_t len, uint64_t *out);
static int ig_av_line(ig_audit_verify_t *v, const unsigned char *line,
    size_t len, int truncated);
static int ig_av_record(ig_audit_verify_t *v, const unsigned char *line,
    const ig_audit_record_t *rec);
static void ig_av_resolve(ig_audit_verify_t *v, ig_av_chain_t *c,
    int claimed);
static void ig_av_place(ig_audit_verify_t *v, ig_av_chain_t *c,
    const ig_audit_record_t *rec);
static void ig_av_action(ig_audit_verify_t *v, ig_av_chain_t *c,
    const ig_audit_record_t *rec, int trusted);
static void ig_av_seen(ig_audit_verify_t *v, ig_av_chain_t *c, uint64_t s);
static int ig_av_gap_take(ig_audit_verify_t *v, ig_av_chain_t *c,
    uint64_t s);
static void ig_av_gap_add(ig_audit_verify_t *v, ig_av_chain_t *c,
    uint64_t from, uint64_t to);
static void ig_av_gap_report(ig_audit_verify_t *v, ig_av_chain_t *c,
    const ig_av_gap_t *g);
static uint64_t ig_av_hash(const ig_audit_verify_t *v,
    const unsigned char *id);
static ig_av_chain_t *ig_av_find(ig_audit_verify_t *v,
    const unsigned char *id);
static ig_av_chain_t *ig_av_create(ig_audit_verify_t *v,
    const unsigned char *id);
static int ig_av_grow_index(ig_audit_verify_t *v);
static void ig_av_chain_hex(const ig_av_chain_t *c,
    char out[IG_AUDIT_CHAIN_ID_LEN + 1]);
static void ig_av_problem(ig_audit_verify_t *v, ig_audit_problem_type_e type,
    const char *path, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int ig_av_cmp_writer(const void *a, const void *b);
static int ig_av_marker_add(ig_audit_verify_t *v, const unsigned char *id,
    const ig_audit_record_t *rec);
static void ig_av_links(ig_audit_verify_t *v);


static const yajl_callbacks  ig_av_callbacks = {
    ig_av_null,
    ig_av_boolean,
    NULL,
    NULL,
    ig_av_number,
    ig_av_string,
    ig_av_start_map,
    ig_av_map_key,
    ig_av_end_map,
    ig_av_start_array,
    ig_av_end_array
};


static const unsigned char  ig_av_zero_mac[IG_AUDIT_MAC_LEN];


static const char  *ig_av_names[IG_AV_NTYPES] = {
    "problem",
    "malformed line",
    "truncated line",
    "unknown key id",
    "modified record",
    "modified record link",
    "missing record(s)",
    "reordered record",
    "inserted or forged record",
    "no chain_start record",
    "key id changed within a chain",
    "chain has no end record",
    "record count mismatch",
    "records lost",
    "removed chain or records",
    "chain markers forked",
    "newest chain marker missing"
};


/* ---- line parser ------------------------------------------------------- */


#define IG_AV_T_STRING        1
#define IG_AV_T_NUMBER        2
#define IG_AV_T_OTHER         3


int
ig_audit_record_parse(const unsigned char *line, size_t len,
    ig_audit_record_t *rec, const char **reason)
{
    yajl_status     st;
    yajl_handle     h;
    ig_av_parse_t   p;

    if (len == 0) {
        *reason = "empty";
        return -1;
    }

    if (len > IG_AUDIT_VERIFY_LINE_MAX) {
        *reason = "line too long";
        return -1;
    }

    if (line[0] != '{') {
        *reason = "not a JSON object";
        return -1;
    }

    memset(&p, 0, sizeof(ig_av_parse_t));
    p.pid = -1;
    p.records = -1;
    p.lost = -1;

    h = yajl_alloc(&ig_av_callbacks, NULL, &p);
    if (h == NULL) {
        *reason = "out of memory";
        return -1;
    }

    st = yajl_parse(h, line, len);

    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }

    yajl_free(h);

    if (st != yajl_status_ok) {
        *reason = (st == yajl_status_client_canceled && p.reason)
                  ? p.reason : "not JSON";
        return -1;
    }

    if (ig_av_layout(&p, line, len, rec) != 0) {
        *reason = p.reason;
        return -1;
    }

    return 0;
}


static int
ig_av_null(void *ctx)
{
    return ig_av_value(ctx, IG_AV_T_OTHER, NULL, 0);
}


static int
ig_av_boolean(void *ctx, int b)
{
    (void) b;

    return ig_av_value(ctx, IG_AV_T_OTHER, NULL, 0);
}


static int
ig_av_number(void *ctx, const char *s, size_t len)
{
    return ig_av_value(ctx, IG_AV_T_NUMBER, (const unsigned char *) s, len);
}


static int
ig_av_string(void *ctx, const unsigned char *s, size_t len)
{
    return ig_av_value(ctx, IG_AV_T_STRING, s, len);
}


static int
ig_av_start_map(void *ctx)
{
    ig_av_parse_t  *p = ctx;

    if (p->depth == 0) {
        p->depth = 1;
        return 1;
    }

    if (!ig_av_value(p, IG_AV_T_OTHER, NULL, 0)) {
        return 0;
    }

    if (p->depth == 1) {
        if (p->top_key == IG_AV_K_INFERGATE) {
            p->d2 = IG_AV_D2_INFERGATE;

            /* only the last "infergate" member counts */
            p->ntail = 0;
            memset(p->seen, 0, sizeof(p->seen));
            p->seq_len = 0;
            p->key_id_len = 0;
            p->pid = -1;
            p->records = -1;
            p->lost = -1;

        } else if (p->top_key == IG_AV_K_EVENT) {
            p->d2 = IG_AV_D2_EVENT;

        } else {
            p->d2 = IG_AV_D2_OTHER;
        }

        p->d2_key = IG_AV_M_OTHER;
    }

    p->depth++;

    return 1;
}


static int
ig_av_start_array(void *ctx)
{
    ig_av_parse_t  *p = ctx;

    if (p->depth == 0) {
        p->reason = "not a JSON object";
        return 0;
    }

    if (!ig_av_value(p, IG_AV_T_OTHER, NULL, 0)) {
        return 0;
    }

    if (p->depth == 1) {
        p->d2 = IG_AV_D2_OTHER;
    }

    p->depth++;

    return 1;
}


static int
ig_av_end(ig_av_parse_t *p)
{
    p->depth--;

    if (p->depth == 1 && p->d2 == IG_AV_D2_INFERGATE) {
        p->last_is_ig = 1;
    }

    return 1;
}


static int
ig_av_end_map(void *ctx)
{
    return ig_av_end(ctx);
}


static int
ig_av_end_array(void *ctx)
{
    return ig_av_end(ctx);
}


#define ig_av_key_is(s, len, lit)                                             \
    ((len) == sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)


static int
ig_av_map_key(void *ctx, const unsigned char *s, size_t len)
{
    ig_av_parse_t  *p = ctx;

    if (p->depth == 1) {
        p->last_is_ig = 0;

        if (ig_av_key_is(s, len, "infergate")) {
            p->top_key = IG_AV_K_INFERGATE;

        } else if (ig_av_key_is(s, len, "event")) {
            p->top_key = IG_AV_K_EVENT;

        } else if (ig_av_key_is(s, len, "event.action")) {
            p->top_key = IG_AV_K_EVENT_ACTION;

        } else {
            p->top_key = IG_AV_K_OTHER;
        }

        return 1;
    }

    if (p->depth != 2) {
        return 1;
    }

    p->d2_key = IG_AV_M_OTHER;

    if (p->d2 == IG_AV_D2_EVENT) {
        if (ig_av_key_is(s, len, "action")) {
            p->d2_key = IG_AV_M_ACTION;
        }

        return 1;
    }

    if (p->d2 != IG_AV_D2_INFERGATE) {
        return 1;
    }

    if (ig_av_key_is(s, len, "chain")) {
        p->d2_key = IG_AV_M_CHAIN;

    } else if (ig_av_key_is(s, len, "seq")) {
        p->d2_key = IG_AV_M_SEQ;

    } else if (ig_av_key_is(s, len, "key_id")) {
        p->d2_key = IG_AV_M_KEY_ID;

    } else if (ig_av_key_is(s, len, "prev")) {
        p->d2_key = IG_AV_M_PREV;

    } else if (ig_av_key_is(s, len, "mac")) {
        p->d2_key = IG_AV_M_MAC;

    } else if (ig_av_key_is(s, len, "pid")) {
        p->d2_key = IG_AV_M_PID;

    } else if (ig_av_key_is(s, len, "records")) {
        p->d2_key = IG_AV_M_RECORDS;

    } else if (ig_av_key_is(s, len, "lost")) {
        p->d2_key = IG_AV_M_LOST;

    } else if (ig_av_key_is(s, len, "link")) {
        p->d2_key = IG_AV_M_LINK;

    } else {
        return 1;
    }

    if (++p->seen[p->d2_key] > 1) {
        p->reason = (p->d2_key >= IG_AV_M_PID)
                    ? "an infergate member given twice"
                    : "a chain member given twice";
        return 0;
    }

    return 1;
}


static int
ig_av_parse_action(ig_av_parse_t *p, int type, const unsigned char *s,
    size_t len)
{
    if (++p->nactions > 1) {
        p->reason = "event.action given twice";
        return 0;
    }

    if (type != IG_AV_T_STRING) {
        p->action = IG_AUDIT_ACTION_OTHER;

    } else if (ig_av_key_is(s, len, "chain_start")) {
        p->action = IG_AUDIT_ACTION_START;

    } else if (ig_av_key_is(s, len, "chain_end")) {
        p->action = IG_AUDIT_ACTION_END;

    } else {
        p->action = IG_AUDIT_ACTION_OTHER;
    }

    return 1;
}


/* A value (a container when type is IG_AV_T_OTHER and s NULL) read at
 * p->depth, before that depth changes. */

static int
ig_av_value(ig_av_parse_t *p, int type, const unsigned char *s, size_t len)
{
    unsigned  m;
    uint64_t  pid;

    if (p->depth == 0) {
        p->reason = "not a JSON object";
        return 0;
    }

    if (p->depth == 1) {
        if (p->top_key == IG_AV_K_EVENT_ACTION) {
            return ig_av_parse_action(p, type, s, len);
        }

        return 1;
    }

    if (p->depth != 2) {
        return 1;
    }

    if (p->d2 == IG_AV_D2_EVENT) {
        if (p->d2_key == IG_AV_M_ACTION) {
            return ig_av_parse_action(p, type, s, len);
        }

        return 1;
    }

    if (p->d2 != IG_AV_D2_INFERGATE) {
        return 1;
    }

    m = p->d2_key;

    switch (m) {

    case IG_AV_M_CHAIN:
        if (type != IG_AV_T_STRING || len != IG_AUDIT_CHAIN_ID_LEN) {
            m = IG_AV_M_BAD;
            break;
        }

        memcpy(p->chain, s, len);
        break;

    case IG_AV_M_SEQ:
        if (type != IG_AV_T_NUMBER || len == 0 || len > IG_AV_SEQ_MAX) {
            m = IG_AV_M_BAD;
            break;
        }

        memcpy(p->seq, s, len);
        p->seq_len = len;
        break;

    case IG_AV_M_KEY_ID:
        if (type != IG_AV_T_STRING || len == 0 || len > IG_AUDIT_KEY_ID_MAX)
        {
            m = IG_AV_M_BAD;
            break;
        }

        memcpy(p->key_id, s, len);
        p->key_id_len = len;
        break;

    case IG_AV_M_PREV:
    case IG_AV_M_MAC:
        if (type != IG_AV_T_STRING || len != IG_AUDIT_MAC_HEX) {
            m = IG_AV_M_BAD;
            break;
        }

        memcpy(m == IG_AV_M_PREV ? p->prev : p->mac, s, len);
        break;

    case IG_AV_M_PID:
        if (type != IG_AV_T_NUMBER || ig_av_u64((const char *) s, len, &pid)
            != 0 || pid > INT64_MAX)
        {
            p->reason = "infergate.pid is not an integer";
            return 0;
        }

        p->pid = (int64_t) pid;
        m = IG_AV_M_OTHER;
        break;

    case IG_AV_M_RECORDS:
    case IG_AV_M_LOST:
        if (type != IG_AV_T_NUMBER || ig_av_u64((const char *) s, len, &pid)
            != 0 || pid > INT64_MAX)
        {
            p->reason = "infergate.records or .lost is not an integer";
            return 0;
        }

        if (m == IG_AV_M_RECORDS) {
            p->records = (int64_t) pid;
        } else {
            p->lost = (int64_t) pid;
        }

        m = IG_AV_M_OTHER;
        break;

    case IG_AV_M_LINK:
        if (ig_av_parse_link(p, type, s, len) != 0) {
            p->reason = "infergate.link is not \"genesis\" nor "
                        "\"<chain>:<seq>:<mac>\"";
            return 0;
        }

        m = IG_AV_M_OTHER;
        break;

    default:
        m = IG_AV_M_OTHER;
    }

    /* the last five members, oldest first */

    if (p->ntail == 5) {
        memmove(p->tail, p->tail + 1, 4 * sizeof(unsigned));
        p->ntail = 4;
    }

    p->tail[p->ntail++] = m;

    return 1;
}


static int
ig_av_layout(ig_av_parse_t *p, const unsigned char *line, size_t len,
    ig_audit_record_t *rec)
{
    char           tail[IG_AUDIT_TRAILER_MAX];
    size_t         n, i;
    unsigned char  prev[IG_AUDIT_MAC_LEN], mac[IG_AUDIT_MAC_LEN];
    uint64_t       seq;

    if (!p->last_is_ig) {
        p->reason = "the last member is not the \"infergate\" object";
        return -1;
    }

    for (i = 0; i < 5; i++) {
        if (p->ntail != 5 || p->tail[i] != IG_AV_M_CHAIN + i) {
            p->reason = "\"infergate\" does not end with chain, seq, key_id, "
                        "prev, mac";
            return -1;
        }
    }

    for (i = 0; i < IG_AUDIT_CHAIN_ID_LEN; i++) {
        if (!((p->chain[i] >= '0' && p->chain[i] <= '9')
              || (p->chain[i] >= 'a' && p->chain[i] <= 'f')))
        {
            p->reason = "bad chain id";
            return -1;
        }
    }

    if (ig_av_u64(p->seq, p->seq_len, &seq) != 0 || seq == UINT64_MAX) {
        p->reason = "bad seq";
        return -1;
    }

    if (!ig_audit_key_id_valid(p->key_id, p->key_id_len)) {
        p->reason = "bad key id";
        return -1;
    }

    if (ig_av_hex(p->prev, IG_AUDIT_MAC_HEX, prev) != 0) {
        p->reason = "bad prev";
        return -1;
    }

    if (ig_av_hex(p->mac, IG_AUDIT_MAC_HEX, mac) != 0) {
        p->reason = "bad mac";
        return -1;
    }

    n = (size_t) snprintf(tail, sizeof(tail),
                          "\"chain\":\"%.32s\",\"seq\":%.*s,"
                          "\"key_id\":\"%.*s\",\"prev\":\"%.64s\","
                          "\"mac\":\"%.64s\"}}",
                          p->chain, (int) p->seq_len, p->seq,
                          (int) p->key_id_len, p->key_id, p->prev, p->mac);

    if (n >= sizeof(tail) || len < n + 2
        || memcmp(line + len - n, tail, n) != 0
        || (line[len - n - 1] != '{' && line[len - n - 1] != ','))
    {
        p->reason = "chain members not as the sealer writes them";
        return -1;
    }

    memset(rec, 0, sizeof(ig_audit_record_t));
    memcpy(rec->chain, p->chain, IG_AUDIT_CHAIN_ID_LEN);
    rec->seq = seq;
    memcpy(rec->key_id, p->key_id, p->key_id_len);
    memcpy(rec->prev, prev, IG_AUDIT_MAC_LEN);
    memcpy(rec->mac, mac, IG_AUDIT_MAC_LEN);
    rec->signed_len = len - IG_AUDIT_MAC_TAIL;
    rec->action = p->action;
    rec->pid = p->pid;
    rec->records = p->records;
    rec->lost = p->lost;
    rec->link = p->link;
    memcpy(rec->link_chain, p->link_chain, IG_AUDIT_CHAIN_ID_LEN);
    rec->link_seq = p->link_seq;
    memcpy(rec->link_mac, p->link_mac, IG_AUDIT_MAC_LEN);

    return 0;
}


/* "genesis" or "<32 hex>:<seq>:<64 hex>" */

static int
ig_av_parse_link(ig_av_parse_t *p, int type, const unsigned char *s,
    size_t len)
{
    size_t       i;
    const char  *c, *colon;

    if (type != IG_AV_T_STRING) {
        return -1;
    }

    if (ig_av_key_is(s, len, "genesis")) {
        p->link = IG_AUDIT_LINK_GENESIS;
        return 0;
    }

    c = (const char *) s;

    if (len < IG_AUDIT_CHAIN_ID_LEN + 3 + IG_AUDIT_MAC_HEX
        || c[IG_AUDIT_CHAIN_ID_LEN] != ':'
        || c[len - IG_AUDIT_MAC_HEX - 1] != ':')
    {
        return -1;
    }

    for (i = 0; i < IG_AUDIT_CHAIN_ID_LEN; i++) {
        if (!((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'a' && c[i] <= 'f'))) {
            return -1;
        }
    }

    colon = c + len - IG_AUDIT_MAC_HEX - 1;

    if (ig_av_u64(c + IG_AUDIT_CHAIN_ID_LEN + 1,
                  (size_t) (colon - c) - IG_AUDIT_CHAIN_ID_LEN - 1,
                  &p->link_seq)
        != 0
        || ig_av_hex(colon + 1, IG_AUDIT_MAC_HEX, p->link_mac) != 0)
    {
        return -1;
    }

    memcpy(p->link_chain, c, IG_AUDIT_CHAIN_ID_LEN);
    p->link = IG_AUDIT_LINK_NAMED;

    return 0;
}


/* lowercase hex only, as the sealer writes it */

static int
ig_av_hex(const char *s, size_t len, unsigned char *out)
{
    size_t  i;
    int     d[2], k;

    for (i = 0; i < len; i += 2) {
        for (k = 0; k < 2; k++) {
            if (s[i + k] >= '0' && s[i + k] <= '9') {
                d[k] = s[i + k] - '0';

            } else if (s[i + k] >= 'a' && s[i + k] <= 'f') {
                d[k] = s[i + k] - 'a' + 10;

            } else {
                return -1;
            }
        }

        out[i / 2] = (unsigned char) (d[0] << 4 | d[1]);
    }

    return 0;
}


/* a canonical unsigned decimal: digits only, no leading zero */

static int
ig_av_u64(const char *s, size_t len, uint64_t *out)
{
    size_t    i;
    uint64_t  n;

    if (len == 0 || len > IG_AV_SEQ_MAX || (s[0] == '0' && len > 1)) {
        return -1;
    }

    n = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        if (n > (UINT64_MAX - (uint64_t) (s[i] - '0')) / 10) {
            return -1;
        }

        n = n * 10 + (uint64_t) (s[i] - '0');
    }

    *out = n;

    return 0;
}


/* ---- engine ------------------------------------------------------------ */


ig_audit_verify_t *
ig_audit_verify_new(const ig_audit_keyring_t *ring, unsigned flags)
{
    ig_audit_verify_t  *v;

    v = calloc(1, sizeof(ig_audit_verify_t));
    if (v == NULL) {
        return NULL;
    }

    v->ring = ring;
    v->flags = flags;

    if (RAND_bytes((unsigned char *) v->seed, sizeof(v->seed)) != 1) {
        v->seed[0] = 0x9e3779b97f4a7c15ULL;
        v->seed[1] = 0xbf58476d1ce4e5b9ULL;
    }

    return v;
}


void
ig_audit_verify_free(ig_audit_verify_t *v)
{
    size_t  i;

    if (v == NULL) {
        return;
    }

    for (i = 0; i < IG_AUDIT_MAX_KEYS; i++) {
        ig_audit_hmac_free(v->hmacs[i]);
    }

    for (i = 0; i < v->nchains; i++) {
        free(v->chains[i].gaps);
    }

    for (i = 0; i < v->npaths; i++) {
        free(v->paths[i]);
    }

    free(v->paths);
    free(v->markers);
    free(v->state);
    free(v->state_path);
    free(v->problems);
    free(v->buf);
    free(v->chains);
    free(v->index);
    free(v);
}


void
ig_audit_verify_handler(ig_audit_verify_t *v, ig_audit_problem_pt h,
    void *data)
{
    v->handler = h;
    v->handler_data = data;
}


int
ig_audit_verify_file(ig_audit_verify_t *v, const char *path)
{
    char   *copy, **paths;
    size_t  n;

    if (v->in_file) {
        (void) ig_audit_verify_file_end(v);
    }

    n = strlen(path);

    copy = malloc(n + 1);
    if (copy == NULL) {
        return -1;
    }

    memcpy(copy, path, n + 1);

    paths = realloc(v->paths, (v->npaths + 1) * sizeof(char *));
    if (paths == NULL) {
        free(copy);
        return -1;
    }

    v->paths = paths;
    v->paths[v->npaths++] = copy;
    v->path = copy;
    v->line = 0;
    v->len = 0;
    v->overlong = 0;
    v->in_file = 1;

    return 0;
}


int
ig_audit_verify_feed(ig_audit_verify_t *v, const unsigned char *data,
    size_t len)
{
    size_t          n, cap;
    unsigned char  *nl, *buf;

    if (!v->in_file && ig_audit_verify_file(v, "-") != 0) {
        return -1;
    }

    while (len) {
        nl = memchr(data, '\n', len);
        n = nl ? (size_t) (nl - data) : len;

        if (v->overlong) {
            /* the rest of a line already reported */

        } else if (v->len + n > IG_AUDIT_VERIFY_LINE_MAX) {
            v->overlong = 1;
            v->len = 0;

            ig_av_problem(v, IG_AUDIT_P_MALFORMED, v->path, v->line + 1,
                          "malformed line: longer than %d bytes",
                          IG_AUDIT_VERIFY_LINE_MAX);

        } else if (nl && v->len == 0) {
            /* a whole line in the input: no copy */

            if (ig_av_line(v, data, n, 0) != 0) {
                return -1;
            }

            data += n + 1;
            len -= n + 1;
            continue;

        } else {
            if (v->len + n > v->cap) {
                cap = v->cap ? v->cap : 4096;

                while (cap < v->len + n) {
                    cap *= 2;
                }

                buf = realloc(v->buf, cap);
                if (buf == NULL) {
                    return -1;
                }

                v->buf = buf;
                v->cap = cap;
            }

            memcpy(v->buf + v->len, data, n);
            v->len += n;
        }

        if (nl == NULL) {
            break;
        }

        if (v->overlong) {
            v->overlong = 0;
            v->line++;
            v->nlines++;

        } else {
            n = v->len;
            v->len = 0;

            if (ig_av_line(v, v->buf, n, 0) != 0) {
                return -1;
            }
        }

        n = (size_t) (nl - data) + 1;
        data += n;
        len -= n;
    }

    return 0;
}


int
ig_audit_verify_file_end(ig_audit_verify_t *v)
{
    int     rc;
    size_t  n;

    if (!v->in_file) {
        return 0;
    }

    rc = 0;
    v->in_file = 0;

    if (v->overlong) {
        v->overlong = 0;
        v->line++;
        v->nlines++;

        ig_av_problem(v, IG_AUDIT_P_TRUNCATED_LINE, v->path, v->line,
                      "truncated line (no newline at end of file)");

    } else if (v->len) {
        n = v->len;
        v->len = 0;
        rc = ig_av_line(v, v->buf, n, 1);
    }

    return rc;
}


int
ig_audit_verify_line(ig_audit_verify_t *v, const unsigned char *line,
    size_t len)
{
    if (!v->in_file && ig_audit_verify_file(v, "-") != 0) {
        return -1;
    }

    return ig_av_line(v, line, len, 0);
}


static int
ig_av_line(ig_audit_verify_t *v, const unsigned char *line, size_t len,
    int truncated)
{
    const char         *reason;
    ig_audit_record_t   rec;

    v->line++;
    v->nlines++;

    if (truncated) {
        ig_av_problem(v, IG_AUDIT_P_TRUNCATED_LINE, v->path, v->line,
                      "truncated line (no newline at end of file)");
    }

    reason = NULL;

    if (ig_audit_record_parse(line, len, &rec, &reason) != 0) {
        if (!truncated) {
            ig_av_problem(v, IG_AUDIT_P_MALFORMED, v->path, v->line,
                          "malformed line: %s", reason);
        }

        return 0;
    }

    /* a whole record that only lacks its newline still counts */

    v->nrecords++;

    return ig_av_record(v, line, &rec);
}


static int
ig_av_record(ig_audit_verify_t *v, const unsigned char *line,
    const ig_audit_record_t *rec)
{
    int                    fits;
    unsigned               k, kind;
    unsigned char          id[IG_AV_ID_BYTES];
    unsigned char          mac[IG_AUDIT_MAC_LEN];
    ig_av_chain_t         *c;
    ig_av_pending_t       *p;
    const ig_audit_key_t  *key;

    (void) ig_av_hex(rec->chain, IG_AUDIT_CHAIN_ID_LEN, id);

    c = ig_av_find(v, id);

    key = ig_audit_keyring_find(v->ring, rec->key_id, strlen(rec->key_id));

    if (key == NULL) {
        if (c == NULL || strcmp(c->unknown_key, rec->key_id) != 0) {
            ig_av_problem(v, IG_AUDIT_P_UNKNOWN_KEY, v->path, v->line,
                          "unknown key id \"%s\" (chain %s seq %llu)",
                          rec->key_id, rec->chain,
                          (unsigned long long) rec->seq);
        }

        kind = IG_AV_UNKNOWN;
        goto untrusted;
    }

    k = (unsigned) (key - v->ring->keys);

    if (v->hmacs[k] == NULL) {
        v->hmacs[k] = ig_audit_hmac_new(key->key, key->len);
        if (v->hmacs[k] == NULL) {
            return -1;
        }
    }

    if (ig_audit_hmac(v->hmacs[k], line, rec->signed_len, mac) != 0) {
        return -1;
    }

    if (CRYPTO_memcmp(mac, rec->mac, IG_AUDIT_MAC_LEN) != 0) {
        kind = IG_AV_BAD;
        goto untrusted;
    }

    v->nverified++;

    if (rec->link != IG_AUDIT_LINK_NONE
        && (rec->action == IG_AUDIT_ACTION_START
            || rec->action == IG_AUDIT_ACTION_END)
        && ig_av_marker_add(v, id, rec) != 0)
    {
        return -1;
    }

    if (c == NULL) {
        c = ig_av_create(v, id);
        if (c == NULL) {
            return -1;
        }

    } else if (c->pending) {
        /* a genuine record in its place makes the pending one an insert */
        ig_av_resolve(v, c, rec->seq == c->next);
    }

    ig_av_place(v, c, rec);

    return 0;

untrusted:

    /*
     * A record that cannot be trusted but fits the chain where it stands
     * (the seq expected next, or prev the last mac) is held as pending:
     * the chain's next record tells whether it took a place of its own
     * (then it was modified, and the chain moves past it, so that one
     * altered record is one problem) or whether a genuine record claims
     * that place (then it was inserted).  Anything else is an insert and
     * leaves the chain alone.
     */

    if (c && c->pending) {
        ig_av_resolve(v, c, 0);
    }

    if (c) {
        fits = !c->ended
               && (rec->seq == c->next
                   || memcmp(rec->prev, c->prev_mac, IG_AUDIT_MAC_LEN) == 0);

    } else {
        fits = rec->seq == 0
               || memcmp(rec->prev, ig_av_zero_mac, IG_AUDIT_MAC_LEN) == 0;
    }

    if (!fits) {
        if (kind == IG_AV_BAD) {
            ig_av_problem(v, IG_AUDIT_P_INSERTED, v->path, v->line,
                          "inserted or forged record (MAC mismatch): "
                          "chain %s seq %llu does not fit there",
                          rec->chain, (unsigned long long) rec->seq);
        }

        return 0;
    }

    if (c == NULL) {
        c = ig_av_create(v, id);
        if (c == NULL) {
            return -1;
        }
    }

    if (kind == IG_AV_UNKNOWN) {
        memcpy(c->unknown_key, rec->key_id, strlen(rec->key_id) + 1);
    }

    p = &c->pend;
    p->kind = kind;
    p->path = v->path;
    p->line = v->line;
    p->seq = rec->seq;
    p->pid = rec->pid;
    p->action = rec->action;
    memcpy(p->mac, rec->mac, IG_AUDIT_MAC_LEN);
    c->pending = 1;

    return 0;
}


/*
 * Settles the pending record of a chain: claimed, a genuine record took
 * its place, so it was inserted or forged; else it was a modified record
 * and takes the place of the seq expected next.
 */

static void
ig_av_resolve(ig_audit_verify_t *v, ig_av_chain_t *c, int claimed)
{
    char                id[IG_AUDIT_CHAIN_ID_LEN + 1];
    uint64_t            slot;
    ig_av_pending_t    *p;
    ig_audit_record_t   rec;

    p = &c->pend;
    c->pending = 0;
    slot = c->next;

    ig_av_chain_hex(c, id);

    if (claimed) {
        if (p->kind == IG_AV_BAD) {
            ig_av_problem(v, IG_AUDIT_P_INSERTED, p->path, p->line,
                          "inserted or forged record (MAC mismatch): "
                          "chain %s seq %llu does not fit there", id,
                          (unsigned long long) p->seq);
        }

        return;
    }

    if (p->kind == IG_AV_BAD) {
        if (p->seq == slot) {
            ig_av_problem(v, IG_AUDIT_P_MODIFIED, p->path, p->line,
                          "modified record (MAC mismatch): chain %s seq %llu",
                          id, (unsigned long long) p->seq);

        } else {
            ig_av_problem(v, IG_AUDIT_P_MODIFIED, p->path, p->line,
                          "modified record (MAC mismatch): chain %s seq %llu "
                          "in the place of seq %llu", id,
                          (unsigned long long) p->seq,
                          (unsigned long long) slot);
        }
    }

    c->next = slot + 1;
    memcpy(c->prev_mac, p->mac, IG_AUDIT_MAC_LEN);
    c->suspect = 1;
    c->nrecords++;

    if (c->nrecords == 1 || slot < c->first) {
        c->first = slot;
    }

    if (slot > c->last || c->nrecords == 1) {
        c->last = slot;
    }

    memset(&rec, 0, sizeof(ig_audit_record_t));
    rec.seq = slot;
    rec.pid = p->pid;
    rec.records = -1;
    rec.lost = -1;
    rec.action = p->action;

    ig_av_action(v, c, &rec, 0);

    c->prev_seen = slot;
    c->have_seen = 1;
    c->path = p->path;
    c->line = p->line;
}


/* A record whose MAC verified. */

static void
ig_av_place(ig_audit_verify_t *v, ig_av_chain_t *c,
    const ig_audit_record_t *rec)
{
    char      id[IG_AUDIT_CHAIN_ID_LEN + 1];
    uint64_t  s;

    s = rec->seq;
    ig_av_chain_hex(c, id);

    if (!c->have_key) {
        memcpy(c->key_id, rec->key_id, strlen(rec->key_id) + 1);
        c->have_key = 1;

    } else if (strcmp(c->key_id, rec->key_id) != 0) {
        ig_av_problem(v, IG_AUDIT_P_KEY_CHANGED, v->path, v->line,
                      "key id \"%s\" differs from key id \"%s\" of chain %s "
                      "(seq %llu)", rec->key_id, c->key_id, id,
                      (unsigned long long) s);
    }

    if (c->nrecords && s < c->next) {

        if (ig_av_gap_take(v, c, s)) {
            if (!c->have_seen || s != c->prev_seen + 1) {
                ig_av_problem(v, IG_AUDIT_P_REORDERED, v->path, v->line,
                              "reordered record: seq %llu after seq %llu "
                              "(chain %s)", (unsigned long long) s,
                              (unsigned long long) c->prev_seen, id);
            }

            c->nrecords++;

            if (s < c->first) {
                c->first = s;
            }

            ig_av_action(v, c, rec, 1);
            ig_av_seen(v, c, s);
            return;
        }

        if (s == c->next - 1
            && memcmp(rec->mac, c->prev_mac, IG_AUDIT_MAC_LEN) == 0)
        {
            ig_av_problem(v, IG_AUDIT_P_INSERTED, v->path, v->line,
                          "inserted record: duplicate of seq %llu (chain %s)",
                          (unsigned long long) s, id);

        } else {
            ig_av_problem(v, IG_AUDIT_P_INSERTED, v->path, v->line,
                          "inserted record: seq %llu again, after seq %llu "
                          "(chain %s; replayed)", (unsigned long long) s,
                          (unsigned long long) c->prev_seen, id);
        }

        ig_av_seen(v, c, s);
        return;
    }

    if (c->ended) {
        ig_av_problem(v, IG_AUDIT_P_INSERTED, v->path, v->line,
                      "inserted record: seq %llu after the chain_end record "
                      "of chain %s", (unsigned long long) s, id);
        ig_av_seen(v, c, s);
        return;
    }

    if (s > c->next) {
        ig_av_gap_add(v, c, c->next, s - 1);

    } else if (memcmp(rec->prev, c->prev_mac, IG_AUDIT_MAC_LEN) != 0
               && !c->suspect)
    {
        if (s == 0) {
            ig_av_problem(v, IG_AUDIT_P_LINK, v->path, v->line,
                          "modified record link: prev of seq 0 is not 64 "
                          "zeros (chain %s)", id);

        } else {
            ig_av_problem(v, IG_AUDIT_P_LINK, v->path, v->line,
                          "modified record link: prev of seq %llu is not "
                          "the mac of seq %llu (chain %s)",
                          (unsigned long long) s,
                          (unsigned long long) (s - 1), id);
        }
    }

    if (c->nrecords == 0 || s < c->first) {
        c->first = s;
    }

    c->next = s + 1;
    c->last = s;
    memcpy(c->prev_mac, rec->mac, IG_AUDIT_MAC_LEN);
    c->suspect = 0;
    c->nrecords++;

    ig_av_action(v, c, rec, 1);
    ig_av_seen(v, c, s);
}


static void
ig_av_action(ig_audit_verify_t *v, ig_av_chain_t *c,
    const ig_audit_record_t *rec, int trusted)
{
    char  id[IG_AUDIT_CHAIN_ID_LEN + 1];

    ig_av_chain_hex(c, id);

    if (rec->seq == 0) {
        if (rec->action == IG_AUDIT_ACTION_START) {
            c->started = 1;
            c->pid = rec->pid;
            c->linked = trusted && rec->link != IG_AUDIT_LINK_NONE;
            c->start_order = ++v->order;

            if (rec->pid < 0 && trusted) {
                ig_av_problem(v, IG_AUDIT_P_MALFORMED, v->path, v->line,
                              "malformed line: chain_start record lacks "
                              "infergate.pid (chain %s)", id);
            }

        } else if (trusted) {
            ig_av_problem(v, IG_AUDIT_P_NO_START, v->path, v->line,
                          "chain %s does not begin with a chain_start record",
                          id);
        }

    } else if (rec->action == IG_AUDIT_ACTION_START && trusted) {
        ig_av_problem(v, IG_AUDIT_P_INSERTED, v->path, v->line,
                      "inserted record: chain_start at seq %llu (chain %s)",
                      (unsigned long long) rec->seq, id);
    }

    if (rec->action == IG_AUDIT_ACTION_END) {
        c->ended = 1;

        if (!trusted) {
            return;
        }

        /* the end record counts the records sealed before it */

        if (rec->records >= 0 && (uint64_t) rec->records != rec->seq) {
            ig_av_problem(v, IG_AUDIT_P_COUNT, v->path, v->line,
                          "chain %s: its chain_end record states %lld "
                          "records before it, the chain holds %llu", id,
                          (long long) rec->records,
                          (unsigned long long) rec->seq);
        }

        if (rec->lost > 0) {
            ig_av_problem(v, IG_AUDIT_P_LOST, v->path, v->line,
                          "chain %s: its chain_end record states %lld "
                          "records lost (not written)", id,
                          (long long) rec->lost);
        }
    }
}


static void
ig_av_seen(ig_audit_verify_t *v, ig_av_chain_t *c, uint64_t s)
{
    c->prev_seen = s;
    c->have_seen = 1;
    c->path = v->path;
    c->line = v->line;
}


/* Removes s from the open gaps; 1 when it was in one. */

static int
ig_av_gap_take(ig_audit_verify_t *v, ig_av_chain_t *c, uint64_t s)
{
    unsigned      i, pos;
    ig_av_gap_t  *g, split;

    for (i = 0; i < c->ngaps; i++) {
        g = &c->gaps[i];

        if (s < g->from || s > g->to) {
            continue;
        }

        if (g->from == g->to) {
            memmove(g, g + 1, (c->ngaps - i - 1) * sizeof(ig_av_gap_t));
            c->ngaps--;

        } else if (s == g->from) {
            g->from++;

        } else if (s == g->to) {
            g->to--;

        } else {
            split = *g;
            split.from = s + 1;
            g->to = s - 1;
            pos = i + 1;

            if (c->ngaps == IG_AUDIT_VERIFY_GAPS) {
                /* full: the oldest gap is reported now */
                ig_av_gap_report(v, c, &c->gaps[0]);
                memmove(c->gaps, c->gaps + 1,
                        (c->ngaps - 1) * sizeof(ig_av_gap_t));
                c->ngaps--;
                pos--;
            }

            memmove(&c->gaps[pos + 1], &c->gaps[pos],
                    (c->ngaps - pos) * sizeof(ig_av_gap_t));
            c->gaps[pos] = split;
            c->ngaps++;
        }

        return 1;
    }

    return 0;
}


static void
ig_av_gap_add(ig_audit_verify_t *v, ig_av_chain_t *c, uint64_t from,
    uint64_t to)
{
    ig_av_gap_t  *g;

    if (c->gaps == NULL) {
        c->gaps = malloc(IG_AUDIT_VERIFY_GAPS * sizeof(ig_av_gap_t));

        if (c->gaps == NULL) {
            /* no room to wait for the records: report them missing now */
            ig_av_gap_t  now = { from, to, v->path, v->line };

            ig_av_gap_report(v, c, &now);
            return;
        }
    }

    if (c->ngaps == IG_AUDIT_VERIFY_GAPS) {
        ig_av_gap_report(v, c, &c->gaps[0]);
        memmove(c->gaps, c->gaps + 1, (c->ngaps - 1) * sizeof(ig_av_gap_t));
        c->ngaps--;
    }

    g = &c->gaps[c->ngaps++];
    g->from = from;
    g->to = to;
    g->path = v->path;
    g->line = v->line;
}


static void
ig_av_gap_report(ig_audit_verify_t *v, ig_av_chain_t *c, const ig_av_gap_t *g)
{
    char  id[IG_AUDIT_CHAIN_ID_LEN + 1];

    ig_av_chain_hex(c, id);

    if (g->from == g->to) {
        ig_av_problem(v, IG_AUDIT_P_MISSING, g->path, g->line,
                      "missing record(s): seq %llu absent (chain %s)",
                      (unsigned long long) g->from, id);

    } else {
        ig_av_problem(v, IG_AUDIT_P_MISSING, g->path, g->line,
                      "missing record(s): seq %llu..%llu absent (chain %s)",
                      (unsigned long long) g->from,
                      (unsigned long long) g->to, id);
    }
}


typedef struct {
    int64_t   pid;
    uint64_t  order;
    size_t    index;
} ig_av_writer_t;


uint64_t
ig_audit_verify_finish(ig_audit_verify_t *v)
{
    char             id[IG_AUDIT_CHAIN_ID_LEN + 1];
    size_t           i, n;
    unsigned         k;
    ig_av_chain_t   *c;
    ig_av_writer_t  *w;

    if (v->finished) {
        return v->nproblems;
    }

    (void) ig_audit_verify_file_end(v);

    v->finished = 1;

    for (i = 0; i < v->nchains; i++) {
        if (v->chains[i].pending) {
            ig_av_resolve(v, &v->chains[i], 0);
        }
    }

    /* the list of chain markers, the state file, and live linked chains */

    ig_av_links(v);

    /*
     * --live, chains written before links existed: the newest chain of
     * each writer may still be open (linked chains: see ig_av_links())
     */

    if ((v->flags & IG_AUDIT_VERIFY_LIVE) && v->nchains) {
        w = malloc(v->nchains * sizeof(ig_av_writer_t));

        if (w != NULL) {
            n = 0;

            for (i = 0; i < v->nchains; i++) {
                c = &v->chains[i];

                if (c->started && c->pid >= 0 && !c->linked) {
                    w[n].pid = c->pid;
                    w[n].order = c->start_order;
                    w[n].index = i;
                    n++;
                }
            }

            qsort(w, n, sizeof(ig_av_writer_t), ig_av_cmp_writer);

            for (i = 0; i < n; i++) {
                if (i + 1 == n || w[i + 1].pid != w[i].pid) {
                    v->chains[w[i].index].live = 1;
                }
            }

            free(w);
        }
    }

    for (i = 0; i < v->nchains; i++) {
        c = &v->chains[i];

        for (k = 0; k < c->ngaps; k++) {
            ig_av_gap_report(v, c, &c->gaps[k]);
        }

        c->ngaps = 0;

        if (!c->ended && !c->live) {
            ig_av_chain_hex(c, id);
            ig_av_problem(v, IG_AUDIT_P_TRUNCATED, c->path, c->line,
                          "chain %s has no end record (truncated)", id);
        }
    }

    return v->nproblems;
}


static int
ig_av_cmp_writer(const void *a, const void *b)
{
    const ig_av_writer_t  *x = a, *y = b;

    if (x->pid != y->pid) {
        return x->pid < y->pid ? -1 : 1;
    }

    return (x->order > y->order) - (x->order < y->order);
}


/* ---- chain links -------------------------------------------------------- */


int
ig_audit_verify_state(ig_audit_verify_t *v, const ig_audit_state_t *st,
    const char *path)
{
    size_t  n;

    if (v->state == NULL) {
        v->state = malloc(sizeof(ig_audit_state_t));
        if (v->state == NULL) {
            return -1;
        }
    }

    memcpy(v->state, st, sizeof(ig_audit_state_t));

    free(v->state_path);
    n = strlen(path ? path : "-");
    v->state_path = malloc(n + 1);

    if (v->state_path == NULL) {
        free(v->state);
        v->state = NULL;
        return -1;
    }

    memcpy(v->state_path, path ? path : "-", n + 1);

    return 0;
}


static int
ig_av_marker_add(ig_audit_verify_t *v, const unsigned char *id,
    const ig_audit_record_t *rec)
{
    size_t           n;
    ig_av_marker_t  *m;

    if (v->nmarkers == v->amarkers) {
        n = v->amarkers ? v->amarkers * 2 : 16;

        m = realloc(v->markers, n * sizeof(ig_av_marker_t));
        if (m == NULL) {
            return -1;
        }

        v->markers = m;
        v->amarkers = n;
    }

    m = &v->markers[v->nmarkers++];
    memset(m, 0, sizeof(ig_av_marker_t));
    memcpy(m->chain, id, IG_AV_ID_BYTES);
    m->seq = rec->seq;
    memcpy(m->mac, rec->mac, IG_AUDIT_MAC_LEN);
    m->link = rec->link;
    m->action = rec->action;
    m->path = v->path;
    m->line = v->line;

    if (rec->link == IG_AUDIT_LINK_NAMED) {
        (void) ig_av_hex(rec->link_chain, IG_AUDIT_CHAIN_ID_LEN,
                         m->link_chain);
        m->link_seq = rec->link_seq;
        memcpy(m->link_mac, rec->link_mac, IG_AUDIT_MAC_LEN);
    }

    return 0;
}


/* the markers sorted by chain and seq, for lookups */
typedef struct {
    unsigned char       chain[IG_AV_ID_BYTES];
    uint64_t            seq;
    size_t              index;
} ig_av_key_t;


static int
ig_av_cmp_marker(const void *a, const void *b)
{
    int                 rc;
    const ig_av_key_t  *x = a, *y = b;

    rc = memcmp(x->chain, y->chain, IG_AV_ID_BYTES);
    if (rc) {
        return rc;
    }

    return (x->seq > y->seq) - (x->seq < y->seq);
}


/* the marker of chain id at seq, or NULL */

static ig_av_marker_t *
ig_av_marker_find(ig_audit_verify_t *v, const ig_av_key_t *order,
    const unsigned char *id, uint64_t seq)
{
    int          rc;
    size_t       lo, hi, mid;
    ig_av_key_t  key;

    memcpy(key.chain, id, IG_AV_ID_BYTES);
    key.seq = seq;

    lo = 0;
    hi = v->nmarkers;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ig_av_cmp_marker(&order[mid], &key);

        if (rc == 0) {
            return &v->markers[order[mid].index];
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


/*
 * Every chain_start and chain_end written since links exist names the
 * marker sealed just before it (ig_audit.h), so they form one list:
 *   - a link to a marker absent from the input: the records or chains
 *     between them were removed (the first chain, a middle one, or the
 *     tail of one with its chain_end);
 *   - two markers naming one predecessor, or a second genesis: the
 *     list forked (a state file rolled back or replaced);
 *   - the state file's head absent: the newest marker(s) were removed.
 * --live then accepts an open linked chain only when the state file
 * lists it as open (its writer started it and has not ended it, and was
 * alive when the state was last written), or when it began after the
 * state's head (the state was read before the log).
 */

static void
ig_av_links(ig_audit_verify_t *v)
{
    char                    id[IG_AUDIT_CHAIN_ID_LEN + 1];
    char                    lid[IG_AUDIT_CHAIN_ID_LEN + 1];
    size_t                  i, ngenesis;
    unsigned                partial;
    ig_av_key_t            *order;
    unsigned                k;
    unsigned char           bin[IG_AV_ID_BYTES], mac[IG_AUDIT_MAC_LEN];
    ig_av_chain_t          *c;
    ig_av_marker_t         *m, *t;
    const ig_av_marker_t   *first_genesis;

    order = NULL;

    if (v->nmarkers) {
        order = malloc(v->nmarkers * sizeof(ig_av_key_t));
        if (order == NULL) {
            return;
        }

        for (i = 0; i < v->nmarkers; i++) {
            memcpy(order[i].chain, v->markers[i].chain, IG_AV_ID_BYTES);
            order[i].seq = v->markers[i].seq;
            order[i].index = i;
        }

        qsort(order, v->nmarkers, sizeof(ig_av_key_t), ig_av_cmp_marker);
    }

    ngenesis = 0;
    first_genesis = NULL;
    partial = 0;

    for (i = 0; i < v->nmarkers; i++) {
        m = &v->markers[i];

        ig_audit_hex(id, m->chain, IG_AV_ID_BYTES);
        id[IG_AUDIT_CHAIN_ID_LEN] = '\0';

        if (m->link == IG_AUDIT_LINK_GENESIS) {
            if (ngenesis++ == 0) {
                first_genesis = m;
                continue;
            }

            ig_av_problem(v, IG_AUDIT_P_FORK, m->path, m->line,
                          "chain markers forked: %s of chain %s is a second "
                          "genesis (the first is at %s:%llu): the chain "
                          "state file was reset",
                          m->action == IG_AUDIT_ACTION_START
                          ? "chain_start" : "chain_end", id,
                          first_genesis->path,
                          (unsigned long long) first_genesis->line);
            continue;
        }

        ig_audit_hex(lid, m->link_chain, IG_AV_ID_BYTES);
        lid[IG_AUDIT_CHAIN_ID_LEN] = '\0';

        t = ig_av_marker_find(v, order, m->link_chain, m->link_seq);

        if (t == NULL && (v->flags & IG_AUDIT_VERIFY_PARTIAL) && !partial) {
            /* the first marker, in file order, naming an older file's */
            partial = 1;
            continue;
        }

        if (t == NULL || CRYPTO_memcmp(t->mac, m->link_mac,
                                       IG_AUDIT_MAC_LEN) != 0)
        {
            ig_av_problem(v, IG_AUDIT_P_REMOVED, m->path, m->line,
                          "removed chain or records: the %s of chain %s "
                          "names the marker before it, chain %s seq %llu%s, "
                          "which is not in the files",
                          m->action == IG_AUDIT_ACTION_START
                          ? "chain_start" : "chain_end", id, lid,
                          (unsigned long long) m->link_seq,
                          t ? " with another mac" : "");
            continue;
        }

        if (t->named++) {
            ig_av_problem(v, IG_AUDIT_P_FORK, m->path, m->line,
                          "chain markers forked: chain %s seq %llu is named "
                          "as predecessor again (chain state rolled back or "
                          "copied)", lid, (unsigned long long) m->link_seq);
            continue;
        }

        t->next = i + 1;
    }

    /* the state file's newest marker must be there */

    if (v->state && v->state->have_head) {
        t = NULL;

        if (ig_av_hex(v->state->head_chain, IG_AUDIT_CHAIN_ID_LEN, bin) == 0
            && ig_av_hex(v->state->head_mac, IG_AUDIT_MAC_HEX, mac) == 0)
        {
            t = ig_av_marker_find(v, order, bin, v->state->head_seq);

            if (t && CRYPTO_memcmp(t->mac, mac, IG_AUDIT_MAC_LEN) != 0) {
                t = NULL;
            }
        }

        if (t == NULL) {
            ig_av_problem(v, IG_AUDIT_P_STATE, v->state_path, 2,
                          "removed chain or records: the newest chain marker, "
                          "chain %s seq %llu as the state file names it, is "
                          "not in the files (the end of the log was removed)",
                          v->state->head_chain,
                          (unsigned long long) v->state->head_seq);

        } else {
            /* what came after the state was read is newer */

            for (m = t->next ? &v->markers[t->next - 1] : NULL; m;
                 m = m->next ? &v->markers[m->next - 1] : NULL)
            {
                if (m->newer) {
                    break;              /* a cycle cannot be, but be sure */
                }

                m->newer = 1;
            }
        }
    }

    free(order);

    if (!(v->flags & IG_AUDIT_VERIFY_LIVE) || v->state == NULL) {
        return;
    }

    for (k = 0; k < v->state->nopen; k++) {
        if (ig_av_hex(v->state->open[k].chain, IG_AUDIT_CHAIN_ID_LEN, bin)
            != 0)
        {
            continue;
        }

        c = ig_av_find(v, bin);

        if (c && c->linked) {
            c->live = 1;
        }
    }

    for (i = 0; i < v->nmarkers; i++) {
        m = &v->markers[i];

        if (m->newer && m->action == IG_AUDIT_ACTION_START) {
            c = ig_av_find(v, m->chain);

            if (c && c->linked) {
                c->live = 1;
            }
        }
    }
}


/* ---- chains table ------------------------------------------------------ */


static uint64_t
ig_av_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;

    return x;
}


static uint64_t
ig_av_hash(const ig_audit_verify_t *v, const unsigned char *id)
{
    uint64_t  a, b;

    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);

    return ig_av_mix(a ^ v->seed[0] ^ ig_av_mix(b ^ v->seed[1]));
}


static ig_av_chain_t *
ig_av_find(ig_audit_verify_t *v, const unsigned char *id)
{
    size_t    i, mask;
    uint32_t  e;

    if (v->index_cap == 0) {
        return NULL;
    }

    mask = v->index_cap - 1;

    for (i = ig_av_hash(v, id) & mask; /* void */; i = (i + 1) & mask) {
        e = v->index[i];

        if (e == 0) {
            return NULL;
        }

        if (memcmp(v->chains[e - 1].id, id, IG_AV_ID_BYTES) == 0) {
            return &v->chains[e - 1];
        }
    }
}


static int
ig_av_grow_index(ig_audit_verify_t *v)
{
    size_t     cap, i, j, mask;
    uint32_t  *index;

    cap = v->index_cap ? v->index_cap * 2 : 64;

    index = calloc(cap, sizeof(uint32_t));
    if (index == NULL) {
        return -1;
    }

    mask = cap - 1;

    for (i = 0; i < v->nchains; i++) {
        j = ig_av_hash(v, v->chains[i].id) & mask;

        while (index[j]) {
            j = (j + 1) & mask;
        }

        index[j] = (uint32_t) (i + 1);
    }

    free(v->index);
    v->index = index;
    v->index_cap = cap;

    return 0;
}


static ig_av_chain_t *
ig_av_create(ig_audit_verify_t *v, const unsigned char *id)
{
    size_t          n, i, mask;
    ig_av_chain_t  *chains, *c;

    if (v->nchains >= UINT32_MAX - 1) {
        return NULL;
    }

    if (v->nchains == v->achains) {
        n = v->achains ? v->achains * 2 : 16;

        chains = realloc(v->chains, n * sizeof(ig_av_chain_t));
        if (chains == NULL) {
            return NULL;
        }

        v->chains = chains;
        v->achains = n;
    }

    if (2 * (v->nchains + 1) > v->index_cap && ig_av_grow_index(v) != 0) {
        return NULL;
    }

    c = &v->chains[v->nchains];
    memset(c, 0, sizeof(ig_av_chain_t));
    memcpy(c->id, id, IG_AV_ID_BYTES);
    c->pid = -1;
    c->path = v->path;
    c->line = v->line;

    mask = v->index_cap - 1;

    for (i = ig_av_hash(v, id) & mask; v->index[i]; i = (i + 1) & mask) {
        /* void */
    }

    v->index[i] = (uint32_t) (v->nchains + 1);
    v->nchains++;

    return c;
}


static void
ig_av_chain_hex(const ig_av_chain_t *c, char out[IG_AUDIT_CHAIN_ID_LEN + 1])
{
    ig_audit_hex(out, c->id, IG_AV_ID_BYTES);
    out[IG_AUDIT_CHAIN_ID_LEN] = '\0';
}


/* ---- problems and results ---------------------------------------------- */


static void
ig_av_problem(ig_audit_verify_t *v, ig_audit_problem_type_e type,
    const char *path, uint64_t line, const char *fmt, ...)
{
    size_t               n;
    va_list              args;
    ig_audit_problem_t   p, *a;

    p.type = type;
    p.path = path ? path : "-";
    p.line = line;

    va_start(args, fmt);
    vsnprintf(p.text, sizeof(p.text), fmt, args);
    va_end(args);

    v->nproblems++;
    v->counts[type]++;

    if (v->handler) {
        v->handler(v->handler_data, &p);
        return;
    }

    if (v->nstored == IG_AUDIT_VERIFY_KEEP) {
        return;
    }

    if (v->nstored == v->nalloc) {
        n = v->nalloc ? v->nalloc * 2 : 16;

        if (n > IG_AUDIT_VERIFY_KEEP) {
            n = IG_AUDIT_VERIFY_KEEP;
        }

        a = realloc(v->problems, n * sizeof(ig_audit_problem_t));
        if (a == NULL) {
            return;
        }

        v->problems = a;
        v->nalloc = n;
    }

    v->problems[v->nstored++] = p;
}


uint64_t
ig_audit_verify_nproblems(const ig_audit_verify_t *v)
{
    return v->nproblems;
}


uint64_t
ig_audit_verify_nlines(const ig_audit_verify_t *v)
{
    return v->nlines;
}


uint64_t
ig_audit_verify_nrecords(const ig_audit_verify_t *v)
{
    return v->nrecords;
}


uint64_t
ig_audit_verify_nverified(const ig_audit_verify_t *v)
{
    return v->nverified;
}


size_t
ig_audit_verify_nstored(const ig_audit_verify_t *v)
{
    return v->nstored;
}


const ig_audit_problem_t *
ig_audit_verify_problem(const ig_audit_verify_t *v, size_t i)
{
    return i < v->nstored ? &v->problems[i] : NULL;
}


uint64_t
ig_audit_verify_count(const ig_audit_verify_t *v,
    ig_audit_problem_type_e type)
{
    if ((unsigned) type >= IG_AV_NTYPES) {
        return 0;
    }

    return v->counts[type];
}


size_t
ig_audit_verify_nchains(const ig_audit_verify_t *v)
{
    return v->nchains;
}


int
ig_audit_verify_chain(const ig_audit_verify_t *v, size_t i,
    ig_audit_chain_info_t *info)
{
    const ig_av_chain_t  *c;

    if (i >= v->nchains) {
        return -1;
    }

    c = &v->chains[i];

    memset(info, 0, sizeof(ig_audit_chain_info_t));
    ig_av_chain_hex(c, info->chain);
    strcpy(info->key_id, c->have_key ? c->key_id : c->unknown_key);
    info->pid = c->pid;
    info->first = c->first;
    info->last = c->last;
    info->nrecords = c->nrecords;
    info->started = c->started;
    info->ended = c->ended;
    info->live = c->live && !c->ended;

    return 0;
}


const char *
ig_audit_problem_name(ig_audit_problem_type_e type)
{
    if ((unsigned) type >= IG_AV_NTYPES) {
        return ig_av_names[0];
    }

    return ig_av_names[type];
}
