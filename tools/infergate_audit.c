/*
 * Copyright (C) infergate authors
 *
 * infergate-audit: audit key generation and verification of signed audit
 * logs, with the very record parser and MAC code the module uses.
 *
 *   infergate-audit keygen ID
 *   infergate-audit verify --key FILE [--live] [--partial]
 *       [--state FILE|--no-state] PATH...
 *   infergate-audit sign --key FILE --pid N [--key-id ID] [--chain-id HEX]
 *       [--raw] [--state FILE] < records                  (testing aid)
 *   infergate-audit bench [N]             (cycles per seal, TSC)
 *
 * Exit status: 0 verified (or done), 1 problems found, 2 usage, an
 * unreadable or unsafe key file, an unreadable log, or a runtime failure.
 */


#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <yajl/yajl_parse.h>

#include "ig_audit.h"
#include "ig_audit_verify.h"
#include "ig_json.h"


#define IG_TOOL               "infergate-audit"
#define IG_READ_SIZE          (256 * 1024)
#define IG_ERR_LEN            512
#define IG_KEYGEN_BYTES       32
#define IG_TS_LEN             sizeof("1970-01-01T00:00:00.000Z")


typedef struct {
    const char     *key_file;
    const char     *key_id;
    const char     *chain_id;
    const char     *state_file;
    int64_t         pid;
    unsigned        live:1;
    unsigned        partial:1;
    unsigned        no_state:1;
    unsigned        raw:1;
} ig_tool_opts_t;


typedef struct {
    unsigned char  *data;
    size_t          len;
    size_t          cap;
} ig_tool_buf_t;


static void ig_tool_usage(FILE *f);
static int ig_tool_keygen(int argc, char **argv);
static int ig_tool_bench(int argc, char **argv);
static int ig_tool_bench_evp(const unsigned char *k,
    const unsigned char *data, size_t len, size_t n);
static int ig_tool_verify(int argc, char **argv);
static int ig_tool_sign(int argc, char **argv);
static int ig_tool_options(int argc, char **argv, ig_tool_opts_t *o,
    int sign, int *first);
static int ig_tool_option_value(int argc, char **argv, int *i,
    const char *name, const char **value);
static ig_audit_keyring_t *ig_tool_load_ring(const char *file);
static int ig_tool_read_file(ig_audit_verify_t *v, const char *path);
static int ig_tool_read_state(ig_audit_verify_t *v, const char *file,
    const char *last);
static void ig_tool_print_problem(void *data, const ig_audit_problem_t *p);
static void ig_tool_summary(ig_audit_verify_t *v);
static int ig_tool_buf_reserve(ig_tool_buf_t *b, size_t n);
static int ig_tool_buf_add(ig_tool_buf_t *b, const void *data, size_t n);
static int ig_tool_seal_write(ig_audit_chain_t *chain, ig_tool_buf_t *b);
static int ig_tool_sign_marker(ig_audit_chain_t *chain, ig_tool_buf_t *b,
    ig_audit_state_t *st, int start, int64_t pid);
static int ig_tool_state_io(const char *file, ig_audit_state_t *st,
    int save);
static void ig_tool_timestamp(char *out);
static int ig_tool_json_valid(const unsigned char *s, size_t len);
static int ig_tool_parse_pid(const char *s, int64_t *pid);


int
main(int argc, char **argv)
{
    int  i;

    if (argc < 2) {
        ig_tool_usage(stderr);
        return 2;
    }

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            break;
        }

        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ig_tool_usage(stdout);
            return 0;
        }
    }

    if (strcmp(argv[1], "keygen") == 0) {
        return ig_tool_keygen(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "verify") == 0) {
        return ig_tool_verify(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "sign") == 0) {
        return ig_tool_sign(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "bench") == 0) {
        return ig_tool_bench(argc - 2, argv + 2);
    }

    fprintf(stderr, IG_TOOL ": unknown command \"%s\"\n", argv[1]);
    ig_tool_usage(stderr);

    return 2;
}


static void
ig_tool_usage(FILE *f)
{
    fprintf(f,
        "usage:\n"
        "  " IG_TOOL " keygen ID\n"
        "      print a key file line \"ID:<64 hex>\" (32 random bytes); ID is\n"
        "      1 to %d of A-Z a-z 0-9 . _ -.  Append it to the key file\n"
        "      with umask 077: the key file must not be readable or\n"
        "      writable by group or others.  The last key of the file\n"
        "      signs new chains; keep retired keys to verify old logs.\n"
        "\n"
        "  " IG_TOOL " verify --key FILE [--live] [--partial]"
        " [--state FILE|--no-state] PATH...\n"
        "      verify audit logs; several PATHs are one log in order\n"
        "      (rotated files, oldest first, all of them since the first\n"
        "      chain), \"-\" is stdin.  Prints one line \"PATH:LINE:\n"
        "      problem\" per problem, then a summary.  The chain state\n"
        "      file is the last PATH + \".chainstate\" when it exists, or\n"
        "      --state FILE; with it, removing the newest chains is found.\n"
        "      --live: a chain the state file lists as open (its writer\n"
        "      runs) may lack its chain_end record (the log is still\n"
        "      written); chains from before chain links: the newest chain\n"
        "      of each writer (nginx worker pid).\n"
        "      --partial: older rotated files were deleted: the first\n"
        "      marker naming one that is not given starts the log.\n"
        "      Exit status 0: everything verified, 1: problems found,\n"
        "      2: usage, unreadable or unsafe key file, unreadable log.\n"
        "\n"
        "  " IG_TOOL " sign --key FILE --pid N [--key-id ID] [--chain-id HEX]"
        " [--raw] [--state FILE]\n"
        "      testing aid: writes one chain to stdout, a chain_start\n"
        "      record, one record per stdin line and a chain_end record,\n"
        "      as the module would.  Each stdin line is a JSON object\n"
        "      whose last member is \"infergate\":{...}; its final \"}}\" is\n"
        "      replaced by the chain members and the mac.  --raw: each\n"
        "      stdin line is instead raw bytes, escaped into url.original\n"
        "      of a generated record.  The key is the last of FILE unless\n"
        "      --key-id names another; the chain id is random unless given\n"
        "      (32 lowercase hex digits).  --state FILE: the markers are\n"
        "      linked through that chain state file (created if absent),\n"
        "      as nginx links them (a whole chain at once, no locking).\n"
        "\n"
        "  " IG_TOOL " bench [N]\n"
        "      seals N records (default 200000) of a typical admission\n"
        "      record's size with a random key and prints the TSC cycles\n"
        "      per seal: each record with a first block of its own, and\n"
        "      runs of 32 records sharing it (one millisecond at 32k req/s\n"
        "      per worker: the time stamp and the worker's request id\n"
        "      prefix fill the first 64 bytes); then, for comparison, an\n"
        "      EVP_MAC HMAC context keyed once and duplicated per record.\n",
        IG_AUDIT_KEY_ID_MAX);
}


/* ---- bench ------------------------------------------------------------- */


static uint64_t
ig_tool_tsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
    uint32_t  lo, hi;

    __asm__ __volatile__ ("rdtsc" : "=a" (lo), "=d" (hi));

    return ((uint64_t) hi << 32) | lo;
#else
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
#endif
}


static int
ig_tool_bench(int argc, char **argv)
{
    int                 pass;
    char                id[IG_AUDIT_CHAIN_ID_LEN + 1];
    size_t              len, n, i, run, sealed;
    uint64_t            t0, best;
    unsigned char       buf[2048];
    ig_audit_key_t      key;
    ig_audit_chain_t   *c;

    /* the README's record up to the chain members: 540 bytes */
    static const char   rec[] =
        "{\"@timestamp\":\"2026-11-22T00:55:30.123Z\",\"event\":{\"id\":"
        "\"9f0c5d1e00aa11bb9f0c5d1e00aa11bb\",\"kind\":\"event\","
        "\"category\":[\"api\"],\"action\":\"request\",\"outcome\":"
        "\"success\",\"duration\":1000000},\"http\":{\"request\":{"
        "\"method\":\"POST\",\"body\":{\"bytes\":266}},\"response\":{"
        "\"status_code\":200,\"body\":{\"bytes\":187}}},\"url\":{\"path\":"
        "\"/v1/score\",\"query\":\"a=1\"},\"source\":{\"ip\":"
        "\"127.0.0.1\"},\"user_agent\":{\"original\":\"wrk/4.2.0\"},"
        "\"organization\":{\"id\":\"acme\"},\"trace\":{\"id\":"
        "\"4bf92f3577b34da6a3ce929d0e0e4736\"},\"infergate\":{\"limit\":"
        "\"PASSED\",\"pid\":4242,";

    n = 200000;

    if (argc > 1 || (argc == 1 && (n = strtoul(argv[0], NULL, 10)) == 0)) {
        ig_tool_usage(stderr);
        return 2;
    }

    memset(&key, 0, sizeof(key));
    memcpy(key.id, "bench", 5);
    key.len = 32;

    if (RAND_bytes(key.key, 32) != 1 || ig_audit_chain_id(id) != 0) {
        fprintf(stderr, IG_TOOL ": RAND_bytes() failed\n");
        return 2;
    }

    c = ig_audit_chain_open(&key, id);
    if (c == NULL) {
        fprintf(stderr, IG_TOOL ": cannot open a chain\n");
        return 2;
    }

    len = sizeof(rec) - 1;
    memcpy(buf, rec, len);
    sealed = 0;

    for (pass = 0; pass < 2; pass++) {
        run = pass ? 32 : 1;
        best = UINT64_MAX;

        for (i = 0; i < n; i++) {
            if (i % run == 0) {
                /* a new millisecond: the first block changes */
                buf[i % 3 + 36] = (unsigned char) ('0' + i / run % 10);
            }

            t0 = ig_tool_tsc();

            sealed = ig_audit_seal(c, buf, len);

            if (sealed == 0) {
                fprintf(stderr, IG_TOOL ": seal failed\n");
                ig_audit_chain_close(c);
                return 2;
            }

            t0 = ig_tool_tsc() - t0;

            if (t0 < best) {
                best = t0;
            }
        }

        /* the mean of a tight loop, and the best single seal above */

        t0 = ig_tool_tsc();

        for (i = 0; i < n; i++) {
            if (i % run == 0) {
                buf[i % 3 + 36] = (unsigned char) ('0' + i / run % 10);
            }

            (void) ig_audit_seal(c, buf, len);
        }

        t0 = ig_tool_tsc() - t0;

        printf("seal, %zu-byte record, first block shared by %zu: "
               "%.0f cycles per record (mean of %zu), %" PRIu64
               " at best\n", sealed, run,
               (double) t0 / (double) n, n, best);
    }

    ig_audit_chain_close(c);

    /* the bytes a seal MACs: the line up to and including "mac":" */
    return ig_tool_bench_evp(key.key, buf, sealed - IG_AUDIT_MAC_TAIL - 1, n);
}


/*
 * The alternative the seal does not use, for comparison: EVP_MAC "HMAC"
 * keyed once, its context duplicated per message (EVP_MAC_CTX_dup), then
 * update and final; the same bytes as a record's seal.
 */

static int
ig_tool_bench_evp(const unsigned char *k, const unsigned char *data,
    size_t len, size_t n)
{
    int            rc;
    size_t         i, outl;
    uint64_t       t0, best, t;
    EVP_MAC       *mac;
    OSSL_PARAM     params[2];
    EVP_MAC_CTX   *keyed, *c;
    unsigned char  out[IG_AUDIT_MAC_LEN];

    rc = 2;
    keyed = NULL;

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) {
        goto done;
    }

    keyed = EVP_MAC_CTX_new(mac);
    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *) "SHA256",
                                                 0);
    params[1] = OSSL_PARAM_construct_end();

    if (keyed == NULL || EVP_MAC_init(keyed, k, 32, params) != 1) {
        goto done;
    }

    best = UINT64_MAX;
    t0 = ig_tool_tsc();

    for (i = 0; i < n; i++) {
        t = ig_tool_tsc();
        c = EVP_MAC_CTX_dup(keyed);

        if (c == NULL || EVP_MAC_update(c, data, len) != 1
            || EVP_MAC_final(c, out, &outl, sizeof(out)) != 1)
        {
            EVP_MAC_CTX_free(c);
            goto done;
        }

        EVP_MAC_CTX_free(c);
        t = ig_tool_tsc() - t;

        if (t < best) {
            best = t;
        }
    }

    t0 = ig_tool_tsc() - t0;

    printf("EVP_MAC_CTX_dup of a keyed HMAC context, the same %zu bytes: "
           "%.0f cycles per record (mean of %zu), %" PRIu64 " at best\n",
           len, (double) t0 / (double) n, n, best);

    rc = 0;

done:

    if (rc) {
        fprintf(stderr, IG_TOOL ": EVP_MAC failed\n");
    }

    EVP_MAC_CTX_free(keyed);
    EVP_MAC_free(mac);

    return rc;
}


/* ---- keygen ------------------------------------------------------------ */


static int
ig_tool_keygen(int argc, char **argv)
{
    int            rc;
    char           hex[2 * IG_KEYGEN_BYTES + 1];
    unsigned char  key[IG_KEYGEN_BYTES];

    if (argc != 1) {
        ig_tool_usage(stderr);
        return 2;
    }

    if (!ig_audit_key_id_valid(argv[0], strlen(argv[0]))) {
        fprintf(stderr, IG_TOOL ": bad key id \"%s\": expected 1 to %d of "
                "A-Z a-z 0-9 . _ -\n", argv[0], IG_AUDIT_KEY_ID_MAX);
        return 2;
    }

    if (RAND_bytes(key, sizeof(key)) != 1) {
        fprintf(stderr, IG_TOOL ": RAND_bytes() failed\n");
        return 2;
    }

    ig_audit_hex(hex, key, sizeof(key));
    hex[2 * IG_KEYGEN_BYTES] = '\0';
    OPENSSL_cleanse(key, sizeof(key));

    rc = 0;

    if (printf("%s:%s\n", argv[0], hex) < 0 || fflush(stdout) != 0) {
        fprintf(stderr, IG_TOOL ": writing to stdout: %s\n", strerror(errno));
        rc = 2;
    }

    OPENSSL_cleanse(hex, sizeof(hex));

    return rc;
}


/* ---- options ----------------------------------------------------------- */


/*
 * Parses the options of verify (--key, --live) or sign (--key, --pid,
 * --key-id, --chain-id, --raw); *first is the index of the first operand.
 * Returns 0, or 2 after a message.
 */

static int
ig_tool_options(int argc, char **argv, ig_tool_opts_t *o, int sign,
    int *first)
{
    int          i, rc;
    const char  *val;

    memset(o, 0, sizeof(ig_tool_opts_t));
    o->pid = -1;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }

        if (argv[i][0] != '-' || strcmp(argv[i], "-") == 0) {
            break;
        }

        rc = ig_tool_option_value(argc, argv, &i, "--key", &val);

        if (rc == 1) {
            o->key_file = val;
            continue;
        }

        if (rc == 0 && !sign && strcmp(argv[i], "--live") == 0) {
            o->live = 1;
            continue;
        }

        if (rc == 0 && !sign && strcmp(argv[i], "--partial") == 0) {
            o->partial = 1;
            continue;
        }

        if (rc == 0 && !sign && strcmp(argv[i], "--no-state") == 0) {
            o->no_state = 1;
            continue;
        }

        if (rc == 0 && !sign) {
            rc = ig_tool_option_value(argc, argv, &i, "--state", &val);
            if (rc == 1) {
                o->state_file = val;
                continue;
            }
        }

        if (rc == 0 && sign) {
            rc = ig_tool_option_value(argc, argv, &i, "--state", &val);
            if (rc == 1) {
                o->state_file = val;
                continue;
            }

            if (rc == -1) {
                return 2;
            }

            if (strcmp(argv[i], "--raw") == 0) {
                o->raw = 1;
                continue;
            }

            rc = ig_tool_option_value(argc, argv, &i, "--key-id", &val);
            if (rc == 1) {
                o->key_id = val;
                continue;
            }

            if (rc == 0) {
                rc = ig_tool_option_value(argc, argv, &i, "--chain-id", &val);
                if (rc == 1) {
                    o->chain_id = val;
                    continue;
                }
            }

            if (rc == 0) {
                rc = ig_tool_option_value(argc, argv, &i, "--pid", &val);
                if (rc == 1) {
                    if (ig_tool_parse_pid(val, &o->pid) != 0) {
                        fprintf(stderr, IG_TOOL ": bad --pid \"%s\"\n", val);
                        return 2;
                    }

                    continue;
                }
            }
        }

        if (rc == 0) {
            fprintf(stderr, IG_TOOL ": unknown option \"%s\"\n", argv[i]);
        }

        ig_tool_usage(stderr);
        return 2;
    }

    if (o->key_file == NULL) {
        fprintf(stderr, IG_TOOL ": --key FILE is required\n");
        return 2;
    }

    *first = i;

    return 0;
}


/*
 * "--name VALUE" or "--name=VALUE" at argv[*i]: 1 with *value (and *i
 * past VALUE), 0 when argv[*i] is another option, -1 (after a message)
 * when VALUE is missing.
 */

static int
ig_tool_option_value(int argc, char **argv, int *i, const char *name,
    const char **value)
{
    size_t  n;

    n = strlen(name);

    if (strncmp(argv[*i], name, n) != 0) {
        return 0;
    }

    if (argv[*i][n] == '=') {
        *value = argv[*i] + n + 1;
        return 1;
    }

    if (argv[*i][n] != '\0') {
        return 0;
    }

    if (*i + 1 >= argc) {
        fprintf(stderr, IG_TOOL ": %s needs a value\n", name);
        return -1;
    }

    (*i)++;
    *value = argv[*i];

    return 1;
}


static int
ig_tool_parse_pid(const char *s, int64_t *pid)
{
    char       *end;
    long long   n;

    if (*s < '0' || *s > '9') {
        return -1;
    }

    errno = 0;
    n = strtoll(s, &end, 10);

    if (errno || *end != '\0' || n < 0) {
        return -1;
    }

    *pid = n;

    return 0;
}


/* the keyring of file, allocated; NULL when it cannot be read (said) */

static ig_audit_keyring_t *
ig_tool_load_ring(const char *file)
{
    char                 err[IG_ERR_LEN];
    ig_audit_keyring_t  *ring;

    ring = malloc(sizeof(ig_audit_keyring_t));
    if (ring == NULL) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        return NULL;
    }

    if (ig_audit_keyring_load(ring, file, err, sizeof(err)) != 0) {
        fprintf(stderr, IG_TOOL ": key file %s\n", err);
        free(ring);
        return NULL;
    }

    return ring;
}


/* ---- verify ------------------------------------------------------------ */


static int
ig_tool_verify(int argc, char **argv)
{
    int                  i, first, rc;
    ig_tool_opts_t       o;
    ig_audit_verify_t   *v;
    ig_audit_keyring_t  *ring;

    rc = ig_tool_options(argc, argv, &o, 0, &first);
    if (rc != 0) {
        return rc;
    }

    if (first >= argc) {
        fprintf(stderr, IG_TOOL ": verify: no PATH given\n");
        ig_tool_usage(stderr);
        return 2;
    }

    ring = ig_tool_load_ring(o.key_file);
    if (ring == NULL) {
        return 2;
    }

    v = ig_audit_verify_new(ring, (o.live ? IG_AUDIT_VERIFY_LIVE : 0)
                                  | (o.partial ? IG_AUDIT_VERIFY_PARTIAL : 0));
    if (v == NULL) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        ig_audit_keyring_cleanse(ring);
        free(ring);
        return 2;
    }

    ig_audit_verify_handler(v, ig_tool_print_problem, NULL);

    rc = 0;

    /* the state first: what it names was on disk before the log is read */

    if (!o.no_state) {
        rc = ig_tool_read_state(v, o.state_file, argv[argc - 1]);
    }

    for (i = first; rc == 0 && i < argc; i++) {
        if (ig_tool_read_file(v, argv[i]) != 0) {
            rc = 2;
            break;
        }
    }

    if (rc == 0) {
        ig_audit_verify_finish(v);
        ig_tool_summary(v);
        rc = ig_audit_verify_nproblems(v) ? 1 : 0;
    }

    if (fflush(stdout) != 0) {
        fprintf(stderr, IG_TOOL ": writing to stdout: %s\n", strerror(errno));
        rc = 2;
    }

    ig_audit_verify_free(v);
    ig_audit_keyring_cleanse(ring);
    free(ring);

    return rc;
}


/*
 * Reads the chain state file under a shared fcntl() lock (writers hold an
 * exclusive one while they write a marker and rewrite the state).  file
 * NULL: LAST.chainstate, skipped when it does not exist.  Returns 0, or 2
 * after a message.
 */

static int
ig_tool_read_state(ig_audit_verify_t *v, const char *file, const char *last)
{
    int                fd, rc;
    char               err[IG_ERR_LEN], *path, *text;
    size_t             len;
    ssize_t            n;
    struct flock       fl;
    ig_audit_state_t  *st;

    path = NULL;

    if (file == NULL) {
        if (strcmp(last, "-") == 0) {
            return 0;
        }

        len = strlen(last);
        path = malloc(len + sizeof(IG_AUDIT_STATE_SUFFIX));
        if (path == NULL) {
            fprintf(stderr, IG_TOOL ": out of memory\n");
            return 2;
        }

        memcpy(path, last, len);
        memcpy(path + len, IG_AUDIT_STATE_SUFFIX,
               sizeof(IG_AUDIT_STATE_SUFFIX));
        file = path;
    }

    fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd == -1) {
        if (path && errno == ENOENT) {
            free(path);
            return 0;
        }

        fprintf(stderr, IG_TOOL ": %s: %s\n", file, strerror(errno));
        free(path);
        return 2;
    }

    memset(&fl, 0, sizeof(struct flock));
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;

    while (fcntl(fd, F_SETLKW, &fl) == -1) {
        if (errno != EINTR) {
            fprintf(stderr, IG_TOOL ": %s: fcntl(F_RDLCK): %s\n", file,
                    strerror(errno));
            close(fd);
            free(path);
            return 2;
        }
    }

    rc = 2;
    st = malloc(sizeof(ig_audit_state_t));
    text = malloc(IG_AUDIT_STATE_SIZE_MAX + 1);

    if (st == NULL || text == NULL) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        goto done;
    }

    len = 0;

    for ( ;; ) {
        n = read(fd, text + len, IG_AUDIT_STATE_SIZE_MAX + 1 - len);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n == -1) {
            fprintf(stderr, IG_TOOL ": %s: %s\n", file, strerror(errno));
            goto done;
        }

        if (n == 0) {
            break;
        }

        len += (size_t) n;

        if (len > IG_AUDIT_STATE_SIZE_MAX) {
            fprintf(stderr, IG_TOOL ": %s: larger than a chain state file\n",
                    file);
            goto done;
        }
    }

    if (ig_audit_state_parse(st, text, len, err, sizeof(err)) != 0) {
        fprintf(stderr, IG_TOOL ": %s: %s\n", file, err);
        goto done;
    }

    if (ig_audit_verify_state(v, st, file) != 0) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        goto done;
    }

    rc = 0;

done:

    close(fd);
    free(st);
    free(text);
    free(path);

    return rc;
}


static int
ig_tool_read_file(ig_audit_verify_t *v, const char *path)
{
    int             fd, rc;
    ssize_t         n;
    unsigned char  *buf;

    if (strcmp(path, "-") == 0) {
        fd = STDIN_FILENO;

    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd == -1) {
            fprintf(stderr, IG_TOOL ": %s: %s\n", path, strerror(errno));
            return -1;
        }
    }

    buf = malloc(IG_READ_SIZE);

    if (buf == NULL || ig_audit_verify_file(v, path) != 0) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        rc = -1;
        goto done;
    }

    rc = 0;

    for ( ;; ) {
        n = read(fd, buf, IG_READ_SIZE);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }

            fprintf(stderr, IG_TOOL ": %s: %s\n", path, strerror(errno));
            rc = -1;
            break;
        }

        if (n == 0) {
            break;
        }

        if (ig_audit_verify_feed(v, buf, (size_t) n) != 0) {
            fprintf(stderr, IG_TOOL ": %s: out of memory or OpenSSL "
                    "failure\n", path);
            rc = -1;
            break;
        }
    }

    if (rc == 0 && ig_audit_verify_file_end(v) != 0) {
        fprintf(stderr, IG_TOOL ": %s: out of memory or OpenSSL failure\n",
                path);
        rc = -1;
    }

done:

    free(buf);

    if (fd != STDIN_FILENO) {
        close(fd);
    }

    return rc;
}


static void
ig_tool_print_problem(void *data, const ig_audit_problem_t *p)
{
    (void) data;

    printf("%s:%llu: %s\n", p->path, (unsigned long long) p->line, p->text);
}


static void
ig_tool_summary(ig_audit_verify_t *v)
{
    char                   pid[24];
    size_t                 i, n;
    uint64_t               np;
    ig_audit_chain_info_t  c;

    n = ig_audit_verify_nchains(v);
    np = ig_audit_verify_nproblems(v);

    if (np == 0) {
        printf("OK: %llu records in %zu chains verified\n",
               (unsigned long long) ig_audit_verify_nverified(v), n);

    } else {
        printf("FAILED: %llu problem%s in %llu lines (%llu records, %llu "
               "verified, %zu chains)\n", (unsigned long long) np,
               np == 1 ? "" : "s",
               (unsigned long long) ig_audit_verify_nlines(v),
               (unsigned long long) ig_audit_verify_nrecords(v),
               (unsigned long long) ig_audit_verify_nverified(v), n);
    }

    for (i = 0; i < n; i++) {
        if (ig_audit_verify_chain(v, i, &c) != 0) {
            break;
        }

        if (c.pid >= 0) {
            snprintf(pid, sizeof(pid), "%lld", (long long) c.pid);

        } else {
            memcpy(pid, "?", 2);
        }

        printf("chain %s: %llu..%llu (%llu records, pid %s, key %s)%s\n",
               c.chain, (unsigned long long) c.first,
               (unsigned long long) c.last,
               (unsigned long long) c.nrecords, pid,
               c.key_id[0] ? c.key_id : "?",
               c.live ? " open (--live)" : "");
    }
}


/* ---- sign (testing aid) ------------------------------------------------ */


static int
ig_tool_sign(int argc, char **argv)
{
    int                    first, rc, bad;
    char                  *line, head[256], chain_id[IG_AUDIT_CHAIN_ID_LEN + 1];
    char                   ts[IG_TS_LEN];
    size_t                 size, n, raw, lineno;
    ssize_t                len;
    uint64_t               records;
    ig_tool_opts_t         o;
    ig_tool_buf_t          b;
    ig_audit_chain_t      *chain;
    ig_audit_state_t      *st;
    ig_audit_keyring_t    *ring;
    const ig_audit_key_t  *key;

    st = NULL;

    rc = ig_tool_options(argc, argv, &o, 1, &first);
    if (rc != 0) {
        return rc;
    }

    if (first != argc || o.pid < 0) {
        fprintf(stderr, IG_TOOL ": sign: --pid N is required, records come "
                "from stdin\n");
        return 2;
    }

    ring = ig_tool_load_ring(o.key_file);
    if (ring == NULL) {
        return 2;
    }

    chain = NULL;
    line = NULL;
    memset(&b, 0, sizeof(ig_tool_buf_t));
    rc = 2;

    if (o.key_id) {
        key = ig_audit_keyring_find(ring, o.key_id, strlen(o.key_id));
        if (key == NULL) {
            fprintf(stderr, IG_TOOL ": no key \"%s\" in %s\n", o.key_id,
                    o.key_file);
            goto done;
        }

    } else {
        key = ig_audit_keyring_signing_key(ring);
    }

    if (o.chain_id) {
        if (strlen(o.chain_id) != IG_AUDIT_CHAIN_ID_LEN) {
            fprintf(stderr, IG_TOOL ": bad --chain-id\n");
            goto done;
        }

        memcpy(chain_id, o.chain_id, sizeof(chain_id));

    } else if (ig_audit_chain_id(chain_id) != 0) {
        fprintf(stderr, IG_TOOL ": RAND_bytes() failed\n");
        goto done;
    }

    chain = ig_audit_chain_open(key, chain_id);
    if (chain == NULL) {
        fprintf(stderr, IG_TOOL ": cannot open a chain (bad --chain-id, or "
                "OpenSSL failure)\n");
        goto done;
    }

    /* chain_start */

    ig_tool_timestamp(ts);
    n = (size_t) snprintf(head, sizeof(head),
                          "{\"@timestamp\":\"%s\",\"event\":{\"kind\":"
                          "\"event\",\"action\":\"chain_start\",\"dataset\":"
                          "\"infergate.audit\"},\"infergate\":{\"pid\":%lld,",
                          ts, (long long) o.pid);

    b.len = 0;

    if (o.state_file) {
        st = malloc(sizeof(ig_audit_state_t));
        if (st == NULL || ig_tool_state_io(o.state_file, st, 0) != 0) {
            goto done;
        }
    }

    if (ig_tool_buf_add(&b, head, n) != 0
        || ig_tool_sign_marker(chain, &b, st, 1, o.pid) != 0)
    {
        goto done;
    }

    size = 0;
    lineno = 0;
    records = 1;                        /* chain_start, as nginx counts */
    bad = 0;

    for ( ;; ) {
        errno = 0;
        len = getline(&line, &size, stdin);

        if (len < 0) {
            if (ferror(stdin)) {
                fprintf(stderr, IG_TOOL ": stdin: %s\n",
                        strerror(errno ? errno : EIO));
                goto done;
            }

            break;
        }

        lineno++;
        n = (size_t) len;

        if (n && line[n - 1] == '\n') {
            n--;
        }

        b.len = 0;

        if (o.raw) {
            raw = n;

            ig_tool_timestamp(ts);
            n = (size_t) snprintf(head, sizeof(head),
                                  "{\"@timestamp\":\"%s\",\"event\":{\"kind\":"
                                  "\"event\",\"action\":\"request\","
                                  "\"dataset\":\"infergate.audit\"},"
                                  "\"url\":{\"original\":\"", ts);

            if (ig_tool_buf_add(&b, head, n) != 0
                || ig_tool_buf_reserve(&b, ig_json_escape_len(
                                           (unsigned char *) line, raw))
                   != 0)
            {
                goto done;
            }

            b.len = (size_t) (ig_json_escape(b.data + b.len,
                                             (unsigned char *) line, raw)
                              - b.data);

            n = (size_t) snprintf(head, sizeof(head),
                                  "\"},\"infergate\":{\"pid\":%lld,",
                                  (long long) o.pid);

            if (ig_tool_buf_add(&b, head, n) != 0) {
                goto done;
            }

        } else {
            while (n && (line[n - 1] == '\r' || line[n - 1] == ' '
                         || line[n - 1] == '\t'))
            {
                n--;
            }

            if (n == 0) {
                continue;
            }

            if (n < 2 || line[n - 1] != '}' || line[n - 2] != '}'
                || !ig_tool_json_valid((unsigned char *) line, n))
            {
                fprintf(stderr, IG_TOOL ": stdin:%zu: not a JSON object "
                        "ending in \"}}\"\n", lineno);
                bad = 1;
                continue;
            }

            n -= 2;

            if (ig_tool_buf_add(&b, line, n) != 0
                || (line[n - 1] != '{' && ig_tool_buf_add(&b, ",", 1) != 0))
            {
                goto done;
            }
        }

        if (ig_tool_seal_write(chain, &b) != 0) {
            goto done;
        }

        records++;
    }

    /* chain_end */

    ig_tool_timestamp(ts);
    n = (size_t) snprintf(head, sizeof(head),
                          "{\"@timestamp\":\"%s\",\"event\":{\"kind\":"
                          "\"event\",\"action\":\"chain_end\",\"dataset\":"
                          "\"infergate.audit\"},\"infergate\":{\"pid\":%lld,"
                          "\"records\":%llu,", ts, (long long) o.pid,
                          (unsigned long long) records);

    b.len = 0;

    if (ig_tool_buf_add(&b, head, n) != 0
        || ig_tool_sign_marker(chain, &b, st, 0, o.pid) != 0)
    {
        goto done;
    }

    if (st && ig_tool_state_io(o.state_file, st, 1) != 0) {
        goto done;
    }

    if (fflush(stdout) != 0) {
        fprintf(stderr, IG_TOOL ": writing to stdout: %s\n", strerror(errno));
        goto done;
    }

    rc = bad ? 1 : 0;

done:

    free(line);
    free(b.data);
    free(st);
    ig_audit_chain_close(chain);
    ig_audit_keyring_cleanse(ring);
    free(ring);

    return rc;
}


/* A marker: linked to st's head and made the head, as nginx does. */

static int
ig_tool_sign_marker(ig_audit_chain_t *chain, ig_tool_buf_t *b,
    ig_audit_state_t *st, int start, int64_t pid)
{
    uint64_t  seq;

    if (st == NULL) {
        return ig_tool_seal_write(chain, b);
    }

    if (ig_tool_buf_reserve(b, IG_AUDIT_LINK_MAX) != 0) {
        return -1;
    }

    b->len += ig_audit_state_link(st, b->data + b->len);
    seq = ig_audit_chain_seq(chain);

    if (ig_tool_seal_write(chain, b) != 0) {
        return -1;
    }

    ig_audit_state_advance(st, b->data, b->len, ig_audit_chain_get_id(chain),
                           seq, start, pid, NULL);

    return 0;
}


/* Reads (a missing file is a fresh state) or writes a state file. */

static int
ig_tool_state_io(const char *file, ig_audit_state_t *st, int save)
{
    char    err[IG_ERR_LEN], *text;
    size_t  len;
    FILE   *f;

    text = malloc(IG_AUDIT_STATE_SIZE_MAX + 1);
    if (text == NULL) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        return -1;
    }

    if (save) {
        len = ig_audit_state_format(st, text, IG_AUDIT_STATE_SIZE_MAX);
        f = fopen(file, "w");

        if (f == NULL || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, IG_TOOL ": %s: %s\n", file, strerror(errno));
            free(text);
            return -1;
        }

        free(text);
        return 0;
    }

    len = 0;
    f = fopen(file, "r");

    if (f) {
        len = fread(text, 1, IG_AUDIT_STATE_SIZE_MAX + 1, f);
        fclose(f);

    } else if (errno != ENOENT) {
        fprintf(stderr, IG_TOOL ": %s: %s\n", file, strerror(errno));
        free(text);
        return -1;
    }

    if (len > IG_AUDIT_STATE_SIZE_MAX
        || ig_audit_state_parse(st, text, len, err, sizeof(err)) != 0)
    {
        fprintf(stderr, IG_TOOL ": %s: %s\n", file,
                len > IG_AUDIT_STATE_SIZE_MAX ? "too large" : err);
        free(text);
        return -1;
    }

    free(text);

    return 0;
}


static int
ig_tool_buf_reserve(ig_tool_buf_t *b, size_t n)
{
    size_t          cap;
    unsigned char  *p;

    if (b->cap - b->len >= n) {
        return 0;
    }

    cap = b->cap ? b->cap : 1024;

    while (cap - b->len < n) {
        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        return -1;
    }

    b->data = p;
    b->cap = cap;

    return 0;
}


static int
ig_tool_buf_add(ig_tool_buf_t *b, const void *data, size_t n)
{
    if (ig_tool_buf_reserve(b, n) != 0) {
        return -1;
    }

    memcpy(b->data + b->len, data, n);
    b->len += n;

    return 0;
}


/* Seals the record in b, checks its layout, writes it to stdout. */

static int
ig_tool_seal_write(ig_audit_chain_t *chain, ig_tool_buf_t *b)
{
    size_t              n;
    const char         *reason;
    ig_audit_record_t   rec;

    if (ig_tool_buf_reserve(b, IG_AUDIT_TRAILER_MAX) != 0) {
        return -1;
    }

    n = ig_audit_seal(chain, b->data, b->len);
    if (n == 0) {
        fprintf(stderr, IG_TOOL ": sealing failed (OpenSSL)\n");
        return -1;
    }

    if (ig_audit_record_parse(b->data, n - 1, &rec, &reason) != 0) {
        fprintf(stderr, IG_TOOL ": record %llu would not verify: %s\n",
                (unsigned long long) ig_audit_chain_seq(chain) - 1, reason);
        return -1;
    }

    if (fwrite(b->data, 1, n, stdout) != n) {
        fprintf(stderr, IG_TOOL ": writing to stdout: %s\n", strerror(errno));
        return -1;
    }

    b->len = n;                         /* the sealed line */

    return 0;
}


static void
ig_tool_timestamp(char *out)
{
    struct tm        tm;
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    if (strftime(out, IG_TS_LEN, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        memcpy(out, "1970-01-01T00:00:00", 19);
    }

    snprintf(out + 19, IG_TS_LEN - 19, ".%03uZ",
             (unsigned) (ts.tv_nsec / 1000000) % 1000);
}


static int
ig_tool_json_valid(const unsigned char *s, size_t len)
{
    int          ok;
    yajl_handle  h;

    h = yajl_alloc(NULL, NULL, NULL);
    if (h == NULL) {
        return 0;
    }

    ok = s[0] == '{'
         && yajl_parse(h, s, len) == yajl_status_ok
         && yajl_complete_parse(h) == yajl_status_ok;

    yajl_free(h);

    return ok;
}
