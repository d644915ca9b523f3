/*
 * Copyright (C) infergate authors
 *
 * The audit log verifier engine: nginx-free, used by infergate-audit,
 * the unit tests and the fuzzer.
 *
 * Feed it the files of a log in order (rotated files oldest first), as
 * bytes in chunks of any size; it splits lines, checks each record (see
 * ig_audit.h for the layout and the MAC) and follows every chain by its
 * id across files.  Memory is O(chains): a line is buffered up to
 * IG_AUDIT_VERIFY_LINE_MAX bytes, and a chain keeps a constant-size state.
 *
 *   v = ig_audit_verify_new(&ring, flags);
 *   for each file:
 *       ig_audit_verify_file(v, path);
 *       ig_audit_verify_feed(v, data, len);    (any number of times)
 *       ig_audit_verify_file_end(v);
 *   ig_audit_verify_finish(v);
 *   ... ig_audit_verify_nproblems(v), ig_audit_verify_problem(v, i) ...
 *   ig_audit_verify_free(v);
 *
 * Problems are stored in the engine (up to IG_AUDIT_VERIFY_KEEP), or
 * handed one at a time to a handler set with ig_audit_verify_handler()
 * and not stored, which keeps memory flat on hostile input.
 *
 * Checks, per chain (records grouped by infergate.chain):
 *   - the MAC over the exact bytes, with the key named by key_id;
 *   - seq consecutive from 0, prev = the mac of the previous record
 *     (64 zeros for seq 0), seq 0 is a "chain_start" record carrying
 *     infergate.pid, one key id per chain;
 *   - the chain ends with a "chain_end" record, nothing after it; with
 *     IG_AUDIT_VERIFY_LIVE the newest chain of each writer (infergate.pid
 *     of its chain_start; the chain whose chain_start comes last) may
 *     lack it.
 * A record whose MAC does not verify (or whose key is unknown) and that
 * fits the chain where it stands (its seq is the one expected next, or
 * its prev is the last mac) is held until the chain's next record: if a
 * genuine record takes that place, it was "inserted or forged", else it
 * was "modified" and the chain moves past it, so that one altered record
 * is one problem.  A record that does not fit is "inserted or forged" at
 * once and leaves the chain alone.  A gap in seq is held until the end of
 * input: records found later that fill it are "reordered", what remains
 * is "missing".  Problems found late still cite the line they are about,
 * so they do not always come in line order.
 */

#ifndef _IG_AUDIT_VERIFY_H_INCLUDED_
#define _IG_AUDIT_VERIFY_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include "ig_audit.h"


#define IG_AUDIT_VERIFY_LINE_MAX   (1024 * 1024)   /* bytes, '\n' excluded */
#define IG_AUDIT_VERIFY_KEEP       10000           /* problems stored      */
#define IG_AUDIT_VERIFY_GAPS       8               /* open gaps per chain  */
#define IG_AUDIT_PROBLEM_TEXT      256

#define IG_AUDIT_VERIFY_LIVE       0x01
#define IG_AUDIT_VERIFY_PARTIAL    0x02    /* older files left out: the   */
                                           /* first dangling link is the  */
                                           /* start of what was given     */

/* infergate.link of a chain marker (ig_audit.h) */
#define IG_AUDIT_LINK_NONE         0       /* none: written before links  */
#define IG_AUDIT_LINK_GENESIS      1
#define IG_AUDIT_LINK_NAMED        2


typedef enum {
    IG_AUDIT_P_MALFORMED = 1,     /* not JSON, or not the record layout   */
    IG_AUDIT_P_TRUNCATED_LINE,    /* last line of a file lacks its '\n'   */
    IG_AUDIT_P_UNKNOWN_KEY,       /* key_id not in the keyring            */
    IG_AUDIT_P_MODIFIED,          /* MAC mismatch where the record fits   */
    IG_AUDIT_P_LINK,              /* MAC fine, prev is not the last mac   */
    IG_AUDIT_P_MISSING,           /* seq gap never filled                 */
    IG_AUDIT_P_REORDERED,         /* seq from an earlier gap              */
    IG_AUDIT_P_INSERTED,          /* forged, duplicate, after chain_end   */
    IG_AUDIT_P_NO_START,          /* seq 0 is not a chain_start record    */
    IG_AUDIT_P_KEY_CHANGED,       /* another key id within one chain      */
    IG_AUDIT_P_TRUNCATED,         /* chain without chain_end record       */
    IG_AUDIT_P_COUNT,             /* chain_end's records ≠ what it holds  */
    IG_AUDIT_P_LOST,              /* chain_end states records were lost   */
    IG_AUDIT_P_REMOVED,           /* a marker's link names what is absent */
    IG_AUDIT_P_FORK,              /* two markers name one predecessor, or */
                                  /*   a second genesis                   */
    IG_AUDIT_P_STATE              /* the state file's newest marker absent*/
} ig_audit_problem_type_e;


typedef struct {
    ig_audit_problem_type_e  type;
    const char              *path;    /* as given to ..._file(); valid   */
                                      /*   until ig_audit_verify_free()  */
    uint64_t                 line;    /* 1-based                         */
    char                     text[IG_AUDIT_PROBLEM_TEXT];
} ig_audit_problem_t;


typedef void (*ig_audit_problem_pt)(void *data, const ig_audit_problem_t *p);


typedef enum {
    IG_AUDIT_ACTION_NONE = 0,     /* no event.action                      */
    IG_AUDIT_ACTION_OTHER,
    IG_AUDIT_ACTION_START,        /* "chain_start"                        */
    IG_AUDIT_ACTION_END           /* "chain_end"                          */
} ig_audit_action_e;


/* What ig_audit_record_parse() finds in a line. */
typedef struct {
    char               chain[IG_AUDIT_CHAIN_ID_LEN + 1];
    uint64_t           seq;
    char               key_id[IG_AUDIT_KEY_ID_MAX + 1];
    unsigned char      prev[IG_AUDIT_MAC_LEN];
    unsigned char      mac[IG_AUDIT_MAC_LEN];
    size_t             signed_len;    /* bytes covered by the mac        */
    ig_audit_action_e  action;        /* event.action                    */
    int64_t            pid;           /* infergate.pid, -1 when absent   */
    int64_t            records;       /* chain_end's counts, -1: absent  */
    int64_t            lost;
    unsigned           link;          /* IG_AUDIT_LINK_*                 */
    char               link_chain[IG_AUDIT_CHAIN_ID_LEN + 1];
    uint64_t           link_seq;
    unsigned char      link_mac[IG_AUDIT_MAC_LEN];
} ig_audit_record_t;


typedef struct {
    char               chain[IG_AUDIT_CHAIN_ID_LEN + 1];
    char               key_id[IG_AUDIT_KEY_ID_MAX + 1];
    int64_t            pid;           /* -1: no chain_start seen         */
    uint64_t           first;         /* lowest seq seen                 */
    uint64_t           last;          /* highest seq seen                */
    uint64_t           nrecords;      /* records counted in the chain    */
    unsigned           started:1;     /* chain_start seen at seq 0       */
    unsigned           ended:1;       /* chain_end seen                  */
    unsigned           live:1;        /* unended, newest of its writer   */
} ig_audit_chain_info_t;


typedef struct ig_audit_verify_s  ig_audit_verify_t;


/*
 * Parses one line (without its '\n'; need not be NUL-terminated): a JSON
 * object (strict: no comments, valid UTF-8, nothing after it) starting
 * with '{', whose last member is "infergate", an object whose last
 * members are exactly "chain","seq","key_id","prev","mac" as written by
 * ig_audit_seal() and which holds none of them twice.  event.action is
 * read from "event":{"action":...} or a top-level "event.action" member,
 * pid from "infergate":{"pid":N}; either given twice is malformed.
 * Returns 0, or -1 with a static reason.  Does not check the MAC.
 */
int ig_audit_record_parse(const unsigned char *line, size_t len,
    ig_audit_record_t *rec, const char **reason);


/* The ring must outlive the engine.  NULL on allocation failure. */
ig_audit_verify_t *ig_audit_verify_new(const ig_audit_keyring_t *ring,
    unsigned flags);
void ig_audit_verify_free(ig_audit_verify_t *v);

void ig_audit_verify_handler(ig_audit_verify_t *v, ig_audit_problem_pt h,
    void *data);

/*
 * Starts the next file (the name is copied; it is what problems cite).
 * A file not closed with ig_audit_verify_file_end() is closed first.
 * Returns 0, or -1 on allocation failure.
 */
int ig_audit_verify_file(ig_audit_verify_t *v, const char *path);

/* Bytes of the current file, in order, split anywhere. */
int ig_audit_verify_feed(ig_audit_verify_t *v, const unsigned char *data,
    size_t len);

/* Ends the current file: a last line without '\n' is a truncated line. */
int ig_audit_verify_file_end(ig_audit_verify_t *v);

/*
 * Checks one complete line directly (no '\n'), as the next line of the
 * current file; for tests and the fuzzer.
 */
int ig_audit_verify_line(ig_audit_verify_t *v, const unsigned char *line,
    size_t len);

/*
 * The chain state file read (under a shared lock) BEFORE the log files,
 * for the checks on the newest marker and --live (see ig_audit.h and
 * ig_av_links()); path is what its problems cite.  Returns 0, or -1 on
 * allocation failure.
 */
int ig_audit_verify_state(ig_audit_verify_t *v, const ig_audit_state_t *st,
    const char *path);

/*
 * End of input: reports the gaps still open and the chains without end
 * record.  Returns the total number of problems.  Call once.
 */
uint64_t ig_audit_verify_finish(ig_audit_verify_t *v);

/* Totals: every problem found (stored or not), lines, record lines
 * that parsed, records whose MAC verified. */
uint64_t ig_audit_verify_nproblems(const ig_audit_verify_t *v);
uint64_t ig_audit_verify_nlines(const ig_audit_verify_t *v);
uint64_t ig_audit_verify_nrecords(const ig_audit_verify_t *v);
uint64_t ig_audit_verify_nverified(const ig_audit_verify_t *v);

/* Stored problems (none while a handler is set), in the order found. */
size_t ig_audit_verify_nstored(const ig_audit_verify_t *v);
const ig_audit_problem_t *ig_audit_verify_problem(const ig_audit_verify_t *v,
    size_t i);

/* The number of problems of one type. */
uint64_t ig_audit_verify_count(const ig_audit_verify_t *v,
    ig_audit_problem_type_e type);

/* Chains, in the order their first record was read. */
size_t ig_audit_verify_nchains(const ig_audit_verify_t *v);
int ig_audit_verify_chain(const ig_audit_verify_t *v, size_t i,
    ig_audit_chain_info_t *info);

/* "malformed line", "modified record"... for a problem type. */
const char *ig_audit_problem_name(ig_audit_problem_type_e type);


#endif /* _IG_AUDIT_VERIFY_H_INCLUDED_ */
