/*
 * Copyright (C) infergate authors
 *
 * Unit tests of lib/ig_audit.c (key file, sealing) and
 * lib/ig_audit_verify.c (record parser, verifier engine).
 */


#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <setjmp.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ig_audit.h"
#include "ig_audit_verify.h"
#include "ig_json.h"


#define HEX32A                                                                \
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define HEX32B                                                                \
    "202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F"
#define HEX32C                                                                \
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
#define HEX31                                                                 \
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e"
#define ZERO64                                                                \
    "0000000000000000000000000000000000000000000000000000000000000000"
#define CHAIN_A               "0123456789abcdef0123456789abcdef"
#define CHAIN_B               "fedcba9876543210fedcba9876543210"
#define TS                    "\"@timestamp\":\"2024-05-01T12:00:00.000Z\","

#define MAX_LINES             64
#define LINE_CAP              2048


typedef struct {
    char       *line[MAX_LINES];
    size_t      len[MAX_LINES];       /* without the '\n' */
    size_t      n;
} ig_t_log_t;


static void ig_t_ring(ig_audit_keyring_t *ring, const char *text);
static void ig_t_bad_ring(const char *text, const char *err);
static void ig_t_add(ig_t_log_t *log, const char *s, size_t len);
static void ig_t_seal(ig_t_log_t *log, ig_audit_chain_t *c,
    const char *prefix);
static void ig_t_chain(ig_t_log_t *log, const ig_audit_keyring_t *ring,
    const char *kid, const char *chain_id, int pid, unsigned nreq, int end);
static void ig_t_free(ig_t_log_t *log);
static void ig_t_copy(ig_t_log_t *dst, const ig_t_log_t *src,
    const int *order, size_t n);
static ig_audit_verify_t *ig_t_verify(const ig_audit_keyring_t *ring,
    unsigned flags, const ig_t_log_t *log, size_t chunk);
static void ig_t_expect(ig_audit_verify_t *v, ig_audit_problem_type_e type,
    uint64_t count, const char *text);
static void ig_t_dump(ig_audit_verify_t *v);
static void ig_t_resign(ig_t_log_t *log, size_t i, const char *kid,
    const unsigned char *key, size_t keylen, const char *from,
    const char *to);
static void ig_t_bad_record(const char *line, const char *reason);
static void ig_t_count(void *data, const ig_audit_problem_t *p);


static const char  *ig_t_ring_text =
    "# audit keys\n"
    "k1:" HEX32A "\n"
    "k2:" HEX32B "\n";


/* ---- helpers ----------------------------------------------------------- */


static void
ig_t_ring(ig_audit_keyring_t *ring, const char *text)
{
    char  err[128];

    if (ig_audit_keyring_parse(ring, text, strlen(text), err, sizeof(err))
        != 0)
    {
        fail_msg("key file rejected: %s", err);
    }
}


static void
ig_t_bad_ring(const char *text, const char *err)
{
    char                 msg[128];
    size_t               i;
    ig_audit_keyring_t   ring;
    const unsigned char *p;

    memset(&ring, 0xab, sizeof(ring));
    msg[0] = '\0';

    if (ig_audit_keyring_parse(&ring, text, strlen(text), msg, sizeof(msg))
        != -1)
    {
        fail_msg("accepted: \"%s\"", text);
    }

    if (strcmp(msg, err) != 0) {
        fail_msg("\"%s\": got \"%s\", expected \"%s\"", text, msg, err);
    }

    /* no key material is left behind */

    p = (const unsigned char *) &ring;

    for (i = 0; i < sizeof(ring); i++) {
        assert_int_equal(p[i], 0);
    }
}


static void
ig_t_add(ig_t_log_t *log, const char *s, size_t len)
{
    assert_true(log->n < MAX_LINES);

    log->line[log->n] = malloc(len + 1);
    assert_non_null(log->line[log->n]);
    memcpy(log->line[log->n], s, len);
    log->line[log->n][len] = '\0';
    log->len[log->n] = len;
    log->n++;
}


/* Seals prefix (the record text up to the chain members) as next line. */

static void
ig_t_seal(ig_t_log_t *log, ig_audit_chain_t *c, const char *prefix)
{
    size_t          n, len;
    unsigned char   buf[LINE_CAP];

    len = strlen(prefix);
    assert_true(len + IG_AUDIT_TRAILER_MAX <= sizeof(buf));
    memcpy(buf, prefix, len);

    n = ig_audit_seal(c, buf, len);
    assert_true(n > len);
    assert_int_equal(buf[n - 1], '\n');

    ig_t_add(log, (char *) buf, n - 1);
}


/* chain_start, nreq request records, and chain_end when end is set */

static void
ig_t_chain(ig_t_log_t *log, const ig_audit_keyring_t *ring, const char *kid,
    const char *chain_id, int pid, unsigned nreq, int end)
{
    char                   prefix[256];
    unsigned               i;
    ig_audit_chain_t      *c;
    const ig_audit_key_t  *key;

    key = ig_audit_keyring_find(ring, kid, strlen(kid));
    assert_non_null(key);

    c = ig_audit_chain_open(key, chain_id);
    assert_non_null(c);

    snprintf(prefix, sizeof(prefix), "{" TS "\"event\":{\"action\":"
             "\"chain_start\"},\"infergate\":{\"pid\":%d,", pid);
    ig_t_seal(log, c, prefix);

    for (i = 0; i < nreq; i++) {
        snprintf(prefix, sizeof(prefix), "{" TS "\"event\":{\"action\":"
                 "\"request\"},\"url\":{\"original\":\"/v1/score?n=%u\"},"
                 "\"http\":{\"response\":{\"status_code\":200}},"
                 "\"infergate\":{\"tenant\":\"acme\",", i);
        ig_t_seal(log, c, prefix);
    }

    if (end) {
        snprintf(prefix, sizeof(prefix), "{" TS "\"event\":{\"action\":"
                 "\"chain_end\"},\"infergate\":{\"pid\":%d,\"records\":%u,",
                 pid, nreq + 1);
        ig_t_seal(log, c, prefix);
    }

    ig_audit_chain_close(c);
}


static void
ig_t_free(ig_t_log_t *log)
{
    size_t  i;

    for (i = 0; i < log->n; i++) {
        free(log->line[i]);
    }

    log->n = 0;
}


/* dst = src lines in the given order (indexes into src) */

static void
ig_t_copy(ig_t_log_t *dst, const ig_t_log_t *src, const int *order, size_t n)
{
    size_t  i;

    dst->n = 0;

    for (i = 0; i < n; i++) {
        assert_true((size_t) order[i] < src->n);
        ig_t_add(dst, src->line[order[i]], src->len[order[i]]);
    }
}


/*
 * Feeds the lines, each with its '\n', as one file in chunks of chunk
 * bytes (0: all at once), and finishes.
 */

static ig_audit_verify_t *
ig_t_verify(const ig_audit_keyring_t *ring, unsigned flags,
    const ig_t_log_t *log, size_t chunk)
{
    char               *all, *p;
    size_t              i, total, off, n;
    ig_audit_verify_t  *v;

    total = 0;

    for (i = 0; i < log->n; i++) {
        total += log->len[i] + 1;
    }

    all = malloc(total + 1);
    assert_non_null(all);
    p = all;

    for (i = 0; i < log->n; i++) {
        memcpy(p, log->line[i], log->len[i]);
        p += log->len[i];
        *p++ = '\n';
    }

    v = ig_audit_verify_new(ring, flags);
    assert_non_null(v);
    assert_int_equal(ig_audit_verify_file(v, "audit.log"), 0);

    if (chunk == 0) {
        chunk = total ? total : 1;
    }

    for (off = 0; off < total; off += n) {
        n = total - off < chunk ? total - off : chunk;
        assert_int_equal(ig_audit_verify_feed(v, (unsigned char *) all + off,
                                              n), 0);
    }

    assert_int_equal(ig_audit_verify_file_end(v), 0);
    ig_audit_verify_finish(v);

    free(all);

    return v;
}


static void
ig_t_dump(ig_audit_verify_t *v)
{
    size_t                     i;
    const ig_audit_problem_t  *p;

    for (i = 0; i < ig_audit_verify_nstored(v); i++) {
        p = ig_audit_verify_problem(v, i);
        print_message("  %s:%llu: %s\n", p->path,
                      (unsigned long long) p->line, p->text);
    }
}


/*
 * Exactly count problems of type (and as many in all); when text is set,
 * one of them contains it.
 */

static void
ig_t_expect(ig_audit_verify_t *v, ig_audit_problem_type_e type,
    uint64_t count, const char *text)
{
    size_t                     i;
    const ig_audit_problem_t  *p;

    if (ig_audit_verify_count(v, type) != count
        || ig_audit_verify_nproblems(v) != count)
    {
        ig_t_dump(v);
        fail_msg("expected %llu x \"%s\", got %llu of %llu problems",
                 (unsigned long long) count, ig_audit_problem_name(type),
                 (unsigned long long) ig_audit_verify_count(v, type),
                 (unsigned long long) ig_audit_verify_nproblems(v));
    }

    if (text == NULL) {
        return;
    }

    for (i = 0; i < ig_audit_verify_nstored(v); i++) {
        p = ig_audit_verify_problem(v, i);

        if (p->type == type && strstr(p->text, text) != NULL) {
            return;
        }
    }

    ig_t_dump(v);
    fail_msg("no problem says \"%s\"", text);
}


/*
 * Replaces the first "from" in line i by "to", then recomputes its mac
 * with HMAC() and the given key id and key (a key holder's rewrite).
 */

static void
ig_t_resign(ig_t_log_t *log, size_t i, const char *kid,
    const unsigned char *key, size_t keylen, const char *from,
    const char *to)
{
    char          buf[LINE_CAP], *p, *k;
    size_t        n, kl;
    unsigned int  mdlen;
    unsigned char md[32];

    assert_true(log->len[i] + 64 < sizeof(buf));
    memcpy(buf, log->line[i], log->len[i] + 1);

    if (from) {
        p = strstr(buf, from);
        assert_non_null(p);
        memmove(p + strlen(to), p + strlen(from),
                strlen(p + strlen(from)) + 1);
        memcpy(p, to, strlen(to));
    }

    k = strstr(buf, "\"key_id\":\"");
    assert_non_null(k);
    k += 10;
    kl = strchr(k, '"') - k;
    memmove(k + strlen(kid), k + kl, strlen(k + kl) + 1);
    memcpy(k, kid, strlen(kid));

    n = strlen(buf);
    assert_true(n > IG_AUDIT_MAC_TAIL);

    assert_non_null(HMAC(EVP_sha256(), key, (int) keylen,
                         (unsigned char *) buf, n - IG_AUDIT_MAC_TAIL, md,
                         &mdlen));
    ig_audit_hex(buf + n - IG_AUDIT_MAC_TAIL, md, 32);

    free(log->line[i]);
    log->line[i] = strdup(buf);
    assert_non_null(log->line[i]);
    log->len[i] = n;
}


static void
ig_t_bad_record(const char *line, const char *reason)
{
    const char         *r;
    ig_audit_record_t   rec;

    r = NULL;

    if (ig_audit_record_parse((const unsigned char *) line, strlen(line),
                              &rec, &r) != -1)
    {
        fail_msg("accepted: %s", line);
    }

    assert_non_null(r);

    if (reason && strcmp(r, reason) != 0) {
        fail_msg("%s: got \"%s\", expected \"%s\"", line, r, reason);
    }
}


/* ---- key file ---------------------------------------------------------- */


static void
test_keyring_good(void **state)
{
    char                   text[2048];
    unsigned               i;
    ig_audit_keyring_t     ring;
    const ig_audit_key_t  *k;

    (void) state;

    snprintf(text, sizeof(text),
             "# infergate audit keys\r\n"
             "\r\n"
             "k1:" HEX32A "\r\n"
             "   \t# indented comment\n"
             "  key.two_2-x :\t" HEX32B HEX32C "  # 64-byte key\n"
             "K3:" HEX32A HEX32A HEX32A HEX32A);

    ig_t_ring(&ring, text);

    assert_int_equal(ring.nkeys, 3);
    assert_string_equal(ring.keys[0].id, "k1");
    assert_int_equal(ring.keys[0].len, 32);

    for (i = 0; i < 32; i++) {
        assert_int_equal(ring.keys[0].key[i], i);
    }

    assert_string_equal(ring.keys[1].id, "key.two_2-x");
    assert_int_equal(ring.keys[1].len, 64);
    assert_int_equal(ring.keys[1].key[0], 0x20);
    assert_int_equal(ring.keys[1].key[10], 0x2a);   /* uppercase hex */
    assert_int_equal(ring.keys[1].key[63], 0x5f);

    assert_string_equal(ring.keys[2].id, "K3");
    assert_int_equal(ring.keys[2].len, 128);

    k = ig_audit_keyring_find(&ring, "key.two_2-x", 11);
    assert_ptr_equal(k, &ring.keys[1]);
    assert_null(ig_audit_keyring_find(&ring, "k", 1));
    assert_null(ig_audit_keyring_find(&ring, "k1x", 3));
    assert_null(ig_audit_keyring_find(&ring, "k3", 2));  /* case matters */
    assert_ptr_equal(ig_audit_keyring_find(&ring, "k1xyz", 2),
                     &ring.keys[0]);
    assert_ptr_equal(ig_audit_keyring_signing_key(&ring), &ring.keys[2]);

    /* exactly 32 bytes, no final newline */
    ig_t_ring(&ring, "a:" HEX32A);
    assert_int_equal(ring.nkeys, 1);

    ig_audit_keyring_cleanse(&ring);
    assert_int_equal(ring.nkeys, 0);
    assert_null(ig_audit_keyring_signing_key(&ring));
}


static void
test_keyring_bad(void **state)
{
    char      text[8192], *p;
    unsigned  i;

    (void) state;

    ig_t_bad_ring("", "no key");
    ig_t_bad_ring("# only a comment\n\n", "no key");
    ig_t_bad_ring("k1:" HEX31 "\n", "line 1: key shorter than 32 bytes");
    ig_t_bad_ring("k1:" HEX32A HEX32A HEX32A HEX32A "00\n",
                  "line 1: key longer than 128 bytes");
    ig_t_bad_ring("k1:\n", "line 1: key shorter than 32 bytes");
    ig_t_bad_ring("# c\nk1:" HEX32A "0\n",
                  "line 2: bad hex: odd number of digits");
    ig_t_bad_ring("k1:" HEX31 "zz\n", "line 1: bad hex");
    ig_t_bad_ring("k1:" HEX31 " 00\n", "line 1: bad hex");
    ig_t_bad_ring("k1:0x" HEX32A "\n", "line 1: bad hex");
    ig_t_bad_ring("k1 " HEX32A "\n", "line 1: expected \"id:hex\"");
    ig_t_bad_ring(":" HEX32A "\n",
                  "line 1: bad key id: expected 1 to 32 of A-Z a-z 0-9 . _ -");
    ig_t_bad_ring("k/1:" HEX32A "\n",
                  "line 1: bad key id: expected 1 to 32 of A-Z a-z 0-9 . _ -");
    ig_t_bad_ring("k 1:" HEX32A "\n",
                  "line 1: bad key id: expected 1 to 32 of A-Z a-z 0-9 . _ -");
    ig_t_bad_ring("abcdefghijklmnopqrstuvwxyz0123456:" HEX32A "\n",
                  "line 1: bad key id: expected 1 to 32 of A-Z a-z 0-9 . _ -");
    ig_t_bad_ring("k1:" HEX32A "\nk2:" HEX32B "\nk1:" HEX32C "\n",
                  "line 3: duplicate key id \"k1\"");
    ig_t_bad_ring("k1:" HEX32A "\r\nk1 : " HEX32B "\r\n",
                  "line 2: duplicate key id \"k1\"");

    /* 32-character ids are fine */
    {
        ig_audit_keyring_t  ring;

        ig_t_ring(&ring, "abcdefghijklmnopqrstuvwxyz012345:" HEX32A "\n");
        assert_int_equal(ring.nkeys, 1);
    }

    /* a NUL byte is outside every alphabet */
    {
        char                text2[] = "k1:" HEX32A "\nk\0:" HEX32B "\n";
        char                msg[128];
        ig_audit_keyring_t  ring;

        assert_int_equal(ig_audit_keyring_parse(&ring, text2,
                                                sizeof(text2) - 1, msg,
                                                sizeof(msg)), -1);
        assert_string_equal(msg, "line 2: bad key id: expected 1 to 32 of "
                                 "A-Z a-z 0-9 . _ -");
    }

    /* too many keys */

    p = text;

    for (i = 0; i <= IG_AUDIT_MAX_KEYS; i++) {
        p += sprintf(p, "k%u:" HEX32A "\n", i);
    }

    ig_t_bad_ring(text, "line 65: too many keys, at most 64");

    /* a short error buffer is NUL-terminated */
    {
        char                msg[8];
        ig_audit_keyring_t  ring;

        assert_int_equal(ig_audit_keyring_parse(&ring, "x", 1, msg,
                                                sizeof(msg)), -1);
        assert_string_equal(msg, "line 1:");
        assert_int_equal(ig_audit_keyring_parse(&ring, "x", 1, NULL, 0), -1);
    }
}


static void
test_key_file(void **state)
{
    int                 fd;
    char                path[] = "/tmp/ig_test_audit_keysXXXXXX";
    char                err[256];
    ig_audit_keyring_t  ring;

    (void) state;

    assert_true(ig_audit_key_file_mode_ok(S_IFREG | 0600));
    assert_true(ig_audit_key_file_mode_ok(S_IFREG | 0400));
    assert_true(ig_audit_key_file_mode_ok(S_IFREG | 0700));
    assert_true(ig_audit_key_file_mode_ok(S_IFREG | 0000));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0640));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0620));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0604));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0602));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0644));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0610));
    assert_false(ig_audit_key_file_mode_ok(S_IFREG | 0601));

    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, ig_t_ring_text, strlen(ig_t_ring_text)),
                     (ssize_t) strlen(ig_t_ring_text));
    close(fd);

    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(ig_audit_keyring_load(&ring, path, err, sizeof(err)), 0);
    assert_int_equal(ring.nkeys, 2);

    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(ig_audit_keyring_load(&ring, path, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "accessible by group or others (mode 0644)"));
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(ring.nkeys, 0);

    assert_int_equal(chmod(path, 0600), 0);
    fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "k1:" HEX32C "\n", 67), 67);
    close(fd);

    assert_int_equal(ig_audit_keyring_load(&ring, path, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, ": line 4: duplicate key id \"k1\""));

    unlink(path);

    assert_int_equal(ig_audit_keyring_load(&ring, path, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "No such file"));

    assert_int_equal(ig_audit_keyring_load(&ring, "/", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not a regular file"));
}


/* ---- sealing ----------------------------------------------------------- */


static void
test_seal_golden(void **state)
{
    char                  expect[1024], id[IG_AUDIT_CHAIN_ID_LEN + 1];
    char                  mac0[65], mac1[65];
    size_t                n, len;
    unsigned int          mdlen;
    unsigned char         buf[1024], md[32];
    ig_audit_chain_t     *c;
    ig_audit_keyring_t    ring;
    const ig_audit_key_t *key;

    static const char  prefix0[] =
        "{" TS "\"event\":{\"action\":\"chain_start\"},\"infergate\":"
        "{\"pid\":42,";
    static const char  prefix1[] =
        "{\"event\":{\"action\":\"request\"},\"url\":{\"original\":"
        "\"/v1/score\"},\"infergate\":{";

    /* computed independently (Python hmac) for the format of ig_audit.h */
    static const char  golden0[] =
        "{" TS "\"event\":{\"action\":\"chain_start\"},\"infergate\":"
        "{\"pid\":42,\"chain\":\"" CHAIN_A "\",\"seq\":0,\"key_id\":\"k1\","
        "\"prev\":\"" ZERO64 "\",\"mac\":\""
        "4fb47926b85cb7bb842a9c9cbebc99f07107d1460b42090ee540cc106a2780df"
        "\"}}\n";
    static const char  golden1_mac[] =
        "0af218402e069ffcdaa4b6b3d17d94c8769cf35ca57ee12896b8cf9cfb5dc3a8";

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    key = ig_audit_keyring_find(&ring, "k1", 2);
    assert_non_null(key);

    c = ig_audit_chain_open(key, CHAIN_A);
    assert_non_null(c);
    assert_int_equal(ig_audit_chain_seq(c), 0);
    assert_string_equal(ig_audit_chain_get_id(c), CHAIN_A);
    assert_string_equal(ig_audit_chain_key_id(c), "k1");

    /* record 0 */

    len = sizeof(prefix0) - 1;
    memcpy(buf, prefix0, len);
    memset(buf + len, 0xee, sizeof(buf) - len);

    n = ig_audit_seal(c, buf, len);

    len = (size_t) snprintf(expect, sizeof(expect),
                            "%s\"chain\":\"%s\",\"seq\":0,\"key_id\":\"k1\","
                            "\"prev\":\"%s\",\"mac\":\"", prefix0, CHAIN_A,
                            ZERO64);

    assert_non_null(HMAC(EVP_sha256(), key->key, 32,
                         (unsigned char *) expect, len, md, &mdlen));
    assert_int_equal(mdlen, 32);
    ig_audit_hex(mac0, md, 32);
    mac0[64] = '\0';

    snprintf(expect + len, sizeof(expect) - len, "%s\"}}\n", mac0);

    assert_int_equal(n, strlen(expect));
    assert_memory_equal(buf, expect, n);
    assert_memory_equal(buf, golden0, sizeof(golden0) - 1);
    assert_int_equal(buf[n], 0xee);               /* nothing more written */
    assert_true(n - (sizeof(prefix0) - 1) <= IG_AUDIT_TRAILER_MAX);
    assert_int_equal(ig_audit_chain_seq(c), 1);

    /* record 1: linked to record 0 */

    len = sizeof(prefix1) - 1;
    memcpy(buf, prefix1, len);
    n = ig_audit_seal(c, buf, len);

    len = (size_t) snprintf(expect, sizeof(expect),
                            "%s\"chain\":\"%s\",\"seq\":1,\"key_id\":\"k1\","
                            "\"prev\":\"%s\",\"mac\":\"", prefix1, CHAIN_A,
                            mac0);

    assert_non_null(HMAC(EVP_sha256(), key->key, 32,
                         (unsigned char *) expect, len, md, &mdlen));
    ig_audit_hex(mac1, md, 32);
    mac1[64] = '\0';
    assert_string_equal(mac1, golden1_mac);

    snprintf(expect + len, sizeof(expect) - len, "%s\"}}\n", mac1);
    assert_int_equal(n, strlen(expect));
    assert_memory_equal(buf, expect, n);
    assert_int_equal(ig_audit_chain_seq(c), 2);

    ig_audit_chain_close(c);
    ig_audit_chain_close(NULL);

    /* chain ids */

    assert_int_equal(ig_audit_chain_id(id), 0);
    assert_int_equal(strlen(id), IG_AUDIT_CHAIN_ID_LEN);
    assert_int_equal(strspn(id, "0123456789abcdef"), IG_AUDIT_CHAIN_ID_LEN);
    memcpy(expect, id, sizeof(id));
    assert_int_equal(ig_audit_chain_id(id), 0);
    assert_string_not_equal(expect, id);
}


static void
test_seal_chain(void **state)
{
    char                  prev[65];
    size_t                i, n;
    unsigned char         buf[256 + IG_AUDIT_TRAILER_MAX + 16];
    ig_audit_key_t        long_key;
    ig_audit_chain_t     *c;
    ig_audit_record_t     rec;
    ig_audit_keyring_t    ring;
    const char           *reason;
    const ig_audit_key_t *key;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    key = &ring.keys[0];

    /* bad chain ids and keys */

    assert_null(ig_audit_chain_open(key, "0123456789ABCDEF0123456789abcdef"));
    assert_null(ig_audit_chain_open(key, "0123456789abcdef0123456789abcde"));
    assert_null(ig_audit_chain_open(key, "0123456789abcdef0123456789abcdefa"));
    assert_null(ig_audit_chain_open(key, "0123456789abcdef0123456789abcdeg"));
    assert_null(ig_audit_chain_open(key, NULL));
    assert_null(ig_audit_chain_open(NULL, CHAIN_A));

    long_key = *key;
    long_key.len = 31;
    assert_null(ig_audit_chain_open(&long_key, CHAIN_A));

    /* the longest key id and a 128-byte key fit IG_AUDIT_TRAILER_MAX */

    memset(long_key.key, 0x5a, sizeof(long_key.key));
    long_key.len = IG_AUDIT_KEY_MAX;
    memcpy(long_key.id, "abcdefghijklmnopqrstuvwxyz.-_012", 33);

    c = ig_audit_chain_open(&long_key, CHAIN_B);
    assert_non_null(c);

    memcpy(prev, ZERO64, 65);

    for (i = 0; i < 1000; i++) {
        memset(buf, 0xee, sizeof(buf));
        memcpy(buf, "{\"infergate\":{", 14);

        n = ig_audit_seal(c, buf, 14);
        assert_true(n > 14 && n - 14 <= IG_AUDIT_TRAILER_MAX);
        assert_int_equal(buf[n - 1], '\n');
        assert_int_equal(buf[14 + IG_AUDIT_TRAILER_MAX], 0xee);

        reason = NULL;
        assert_int_equal(ig_audit_record_parse(buf, n - 1, &rec, &reason), 0);
        assert_string_equal(rec.chain, CHAIN_B);
        assert_int_equal(rec.seq, i);
        assert_string_equal(rec.key_id, long_key.id);
        assert_int_equal(rec.signed_len, n - 1 - IG_AUDIT_MAC_TAIL);
        assert_int_equal(rec.action, IG_AUDIT_ACTION_NONE);
        assert_int_equal(rec.pid, -1);

        /* prev is the previous mac */
        {
            char  hex[65];

            ig_audit_hex(hex, rec.prev, 32);
            hex[64] = '\0';
            assert_string_equal(hex, prev);
            ig_audit_hex(prev, rec.mac, 32);
        }
    }

    assert_int_equal(ig_audit_chain_seq(c), 1000);
    ig_audit_chain_close(c);
}


static void
test_hmac(void **state)
{
    size_t            i, k;
    unsigned int      mdlen;
    unsigned char     key[IG_AUDIT_KEY_MAX], data[10000];
    unsigned char     a[32], b[32];
    ig_audit_hmac_t  *h;

    static const size_t  lens[] = { 0, 1, 55, 56, 63, 64, 65, 600, 10000 };
    static const size_t  klens[] = { 32, 64, 65, 128 };

    (void) state;

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char) (i * 7 + 3);
    }

    for (i = 0; i < sizeof(key); i++) {
        key[i] = (unsigned char) (255 - i);
    }

    for (k = 0; k < sizeof(klens) / sizeof(klens[0]); k++) {
        h = ig_audit_hmac_new(key, klens[k]);
        assert_non_null(h);

        /* twice each: the context is reused */

        for (i = 0; i < 2 * sizeof(lens) / sizeof(lens[0]); i++) {
            size_t  len = lens[i % (sizeof(lens) / sizeof(lens[0]))];

            assert_int_equal(ig_audit_hmac(h, data, len, a), 0);
            assert_non_null(HMAC(EVP_sha256(), key, (int) klens[k], data,
                                 len, b, &mdlen));
            assert_memory_equal(a, b, 32);
        }

        ig_audit_hmac_free(h);
    }

    ig_audit_hmac_free(NULL);
}


/*
 * The inner state after a message's first block is reused while the next
 * message starts with the same 64 bytes: messages that differ only in
 * their first block's last or first byte, or only after it, shorter than
 * a block and exactly a block, in an order that alternates hits and
 * misses, all give HMAC()'s answer.
 */

static void
test_hmac_first_block(void **state)
{
    size_t            i, j, len;
    unsigned int      mdlen;
    unsigned char     key[32], m[4][300];
    unsigned char     a[32], b[32];
    ig_audit_hmac_t  *h;

    static const size_t  lens[] = { 300, 64, 63, 65, 128, 300, 64, 0 };

    (void) state;

    for (i = 0; i < sizeof(key); i++) {
        key[i] = (unsigned char) (i * 13 + 1);
    }

    for (j = 0; j < 4; j++) {
        for (i = 0; i < sizeof(m[0]); i++) {
            m[j][i] = (unsigned char) ('a' + i % 26);
        }
    }

    m[1][63] = '#';         /* the first block's last byte differs  */
    m[2][0] = '#';          /* its first byte                       */
    m[3][64] = '#';         /* the same first block, the rest not   */

    h = ig_audit_hmac_new(key, sizeof(key));
    assert_non_null(h);

    for (i = 0; i < 3 * sizeof(lens) / sizeof(lens[0]); i++) {
        for (j = 0; j < 4; j++) {
            len = lens[(i + j) % (sizeof(lens) / sizeof(lens[0]))];

            assert_int_equal(ig_audit_hmac(h, m[j], len, a), 0);
            assert_non_null(HMAC(EVP_sha256(), key, (int) sizeof(key),
                                 m[j], len, b, &mdlen));
            assert_memory_equal(a, b, 32);

            /* the same message again: a hit on the kept state */
            assert_int_equal(ig_audit_hmac(h, m[j], len, a), 0);
            assert_memory_equal(a, b, 32);
        }
    }

    ig_audit_hmac_free(h);
}


/* ---- record parser ----------------------------------------------------- */


static void
test_record_parse(void **state)
{
    ig_t_log_t          log = { { 0 }, { 0 }, 0 };
    const char         *r;
    ig_audit_record_t   rec;
    ig_audit_keyring_t  ring;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    ig_t_chain(&log, &ring, "k1", CHAIN_A, 4242, 1, 1);

    r = NULL;
    assert_int_equal(ig_audit_record_parse((unsigned char *) log.line[0],
                                           log.len[0], &rec, &r), 0);
    assert_string_equal(rec.chain, CHAIN_A);
    assert_int_equal(rec.seq, 0);
    assert_string_equal(rec.key_id, "k1");
    {
        static const unsigned char  zero[32];

        assert_memory_equal(rec.prev, zero, 32);
    }
    assert_int_equal(rec.action, IG_AUDIT_ACTION_START);
    assert_int_equal(rec.pid, 4242);
    assert_int_equal(rec.signed_len, log.len[0] - 67);

    assert_int_equal(ig_audit_record_parse((unsigned char *) log.line[1],
                                           log.len[1], &rec, &r), 0);
    assert_int_equal(rec.action, IG_AUDIT_ACTION_OTHER);
    assert_int_equal(rec.pid, -1);

    assert_int_equal(ig_audit_record_parse((unsigned char *) log.line[2],
                                           log.len[2], &rec, &r), 0);
    assert_int_equal(rec.action, IG_AUDIT_ACTION_END);
    assert_int_equal(rec.seq, 2);

#define TAIL(seq, kid)                                                        \
    "\"chain\":\"" CHAIN_A "\",\"seq\":" seq ",\"key_id\":\"" kid "\","       \
    "\"prev\":\"" ZERO64 "\",\"mac\":\"" ZERO64 "\"}}"

    /* layouts that parse (the MAC is not checked here) */

    {
        static const char  minimal[] = "{\"infergate\":{" TAIL("0", "k1");

        assert_int_equal(ig_audit_record_parse((unsigned char *) minimal,
                                               sizeof(minimal) - 1, &rec, &r),
                         0);
        assert_int_equal(rec.action, IG_AUDIT_ACTION_NONE);
        assert_int_equal(rec.signed_len, sizeof(minimal) - 1 - 67);
    }

    {
        static const char  dotted[] =
            "{\"event.action\":\"chain_end\",\"a\":[{\"infergate\":1}],"
            "\"infergate\":{\"pid\":0,\"x\":{\"chain\":1}," TAIL("18446744073"
            "709551614", "k.1") ;

        assert_int_equal(ig_audit_record_parse((unsigned char *) dotted,
                                               sizeof(dotted) - 1, &rec, &r),
                         0);
        assert_int_equal(rec.action, IG_AUDIT_ACTION_END);
        assert_int_equal(rec.pid, 0);
        assert_int_equal(rec.seq, UINT64_MAX - 1);
    }

    /* layouts that do not */

    ig_t_bad_record("", "empty");
    ig_t_bad_record(" {\"infergate\":{" TAIL("0", "k1"), "not a JSON object");
    ig_t_bad_record("[1]", "not a JSON object");
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k1") " ", NULL);
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k1") "\r",
                    "chain members not as the sealer writes them");
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k1") "{}", "not JSON");
    ig_t_bad_record("{/**/\"infergate\":{" TAIL("0", "k1"), "not JSON");
    ig_t_bad_record("{\"a\":\"\xff\",\"infergate\":{" TAIL("0", "k1"),
                    "not JSON");
    ig_t_bad_record("{\"a\":\"\x01\",\"infergate\":{" TAIL("0", "k1"),
                    "not JSON");
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k1") ",\"z\":1}",
                    "not JSON");
    ig_t_bad_record("{\"infergate\":{\"chain\":\"" CHAIN_A "\",\"seq\":0,"
                    "\"key_id\":\"k1\",\"prev\":\"" ZERO64 "\",\"mac\":\""
                    ZERO64 "\"},\"z\":1}",
                    "the last member is not the \"infergate\" object");
    ig_t_bad_record("{\"x\":{\"infergate\":{" TAIL("0", "k1") "}",
                    "the last member is not the \"infergate\" object");
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k1") "}", "not JSON");
    ig_t_bad_record("{\"infergate\":{\"chain\":\"" CHAIN_A "\",\"n\":1,"
                    TAIL("0", "k1"), "a chain member given twice");
    ig_t_bad_record("{\"infergate\":{\"seq\":0,\"key_id\":\"k1\",\"prev\":\""
                    ZERO64 "\",\"mac\":\"" ZERO64 "\"}}",
                    "\"infergate\" does not end with chain, seq, key_id, "
                    "prev, mac");
    ig_t_bad_record("{\"infergate\":{\"chain\":\"" CHAIN_A "\",\"seq\":0,"
                    "\"prev\":\"" ZERO64 "\",\"key_id\":\"k1\",\"mac\":\""
                    ZERO64 "\"}}",
                    "\"infergate\" does not end with chain, seq, key_id, "
                    "prev, mac");
    ig_t_bad_record("{\"infergate\":{" TAIL("\"0\"", "k1"),
                    "\"infergate\" does not end with chain, seq, key_id, "
                    "prev, mac");
    ig_t_bad_record("{\"infergate\":{" TAIL("00", "k1"), "not JSON");
    ig_t_bad_record("{\"infergate\":{" TAIL("1.0", "k1"), "bad seq");
    ig_t_bad_record("{\"infergate\":{" TAIL("-1", "k1"), "bad seq");
    ig_t_bad_record("{\"infergate\":{" TAIL("1e3", "k1"), "bad seq");
    ig_t_bad_record("{\"infergate\":{" TAIL("18446744073709551615", "k1"),
                    "bad seq");
    ig_t_bad_record("{\"infergate\":{" TAIL("18446744073709551616", "k1"),
                    "bad seq");
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k 1"), "bad key id");
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k\\u0031"),
                    "chain members not as the sealer writes them");
    ig_t_bad_record("{\"infergate\":{\"chain\":\"0123456789ABCDEF0123456789"
                    "abcdef\",\"seq\":0,\"key_id\":\"k1\",\"prev\":\"" ZERO64
                    "\",\"mac\":\"" ZERO64 "\"}}", "bad chain id");
    ig_t_bad_record("{\"infergate\":{\"chain\":\"" CHAIN_A "\",\"seq\":0,"
                    "\"key_id\":\"k1\",\"prev\":\"" ZERO64 "\",\"mac\":\""
                    "A000000000000000000000000000000000000000000000000000000"
                    "000000000\"}}", "bad mac");
    ig_t_bad_record("{\"infergate\":{\"chain\":\"" CHAIN_A "\",\"seq\":0,"
                    "\"key_id\":\"k1\",\"prev\":\"g" ZERO64 "\",\"mac\":\""
                    ZERO64 "\"}}", NULL);
    ig_t_bad_record("{\"infergate\":{\"chain\":\"" CHAIN_A "\", \"seq\":0,"
                    "\"key_id\":\"k1\",\"prev\":\"" ZERO64 "\",\"mac\":\""
                    ZERO64 "\"}}", NULL);
    ig_t_bad_record("{\"infergate\":{" TAIL("0", "k1") " }", NULL);
    ig_t_bad_record("{\"infergate\":{\"pid\":1,\"pid\":2," TAIL("0", "k1"),
                    "an infergate member given twice");
    ig_t_bad_record("{\"infergate\":{\"pid\":-1," TAIL("0", "k1"),
                    "infergate.pid is not an integer");
    ig_t_bad_record("{\"infergate\":{\"pid\":\"1\"," TAIL("0", "k1"),
                    "infergate.pid is not an integer");
    ig_t_bad_record("{\"event\":{\"action\":\"a\"},\"event.action\":\"b\","
                    "\"infergate\":{" TAIL("0", "k1"),
                    "event.action given twice");
    ig_t_bad_record("{\"event\":{\"action\":\"a\",\"action\":\"b\"},"
                    "\"infergate\":{" TAIL("0", "k1"),
                    "event.action given twice");

#undef TAIL

    ig_t_free(&log);
}


/* ---- verifier engine --------------------------------------------------- */


static void
test_verify_ok(void **state)
{
    size_t                  chunk;
    ig_t_log_t              log = { { 0 }, { 0 }, 0 };
    ig_audit_verify_t      *v;
    ig_audit_keyring_t      ring;
    ig_audit_chain_info_t   info;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1234, 10, 1);

    /* split anywhere, the same result */

    for (chunk = 0; chunk < 40; chunk += (chunk < 3 ? 1 : 13)) {
        v = ig_t_verify(&ring, 0, &log, chunk);

        if (ig_audit_verify_nproblems(v) != 0) {
            ig_t_dump(v);
            fail_msg("problems with chunk %zu", chunk);
        }

        assert_int_equal(ig_audit_verify_nlines(v), 12);
        assert_int_equal(ig_audit_verify_nrecords(v), 12);
        assert_int_equal(ig_audit_verify_nverified(v), 12);
        assert_int_equal(ig_audit_verify_nchains(v), 1);

        assert_int_equal(ig_audit_verify_chain(v, 0, &info), 0);
        assert_string_equal(info.chain, CHAIN_A);
        assert_string_equal(info.key_id, "k1");
        assert_int_equal(info.pid, 1234);
        assert_int_equal(info.first, 0);
        assert_int_equal(info.last, 11);
        assert_int_equal(info.nrecords, 12);
        assert_true(info.started);
        assert_true(info.ended);
        assert_false(info.live);
        assert_int_equal(ig_audit_verify_chain(v, 1, &info), -1);

        ig_audit_verify_free(v);
    }

    ig_t_free(&log);
}


static void
test_verify_modified(void **state)
{
    char                *p;
    ig_t_log_t           log = { { 0 }, { 0 }, 0 };
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);

    /* one byte of a record's content */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 10, 1);
    p = strstr(log.line[5], "score");
    assert_non_null(p);
    p[0] = 'S';

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_MODIFIED, 1,
                "modified record (MAC mismatch): chain " CHAIN_A " seq 5");
    assert_string_equal(ig_audit_verify_problem(v, 0)->path, "audit.log");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 6);
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* the mac itself: the next record's prev no longer matches, which is
     * not reported again */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 10, 1);
    p = log.line[3] + log.len[3] - 10;
    *p = (*p == '0') ? '1' : '0';

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_MODIFIED, 1, "seq 3");
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* the chain_start record */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 2, 1);
    p = strstr(log.line[0], "2024");
    p[3] = '5';

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_MODIFIED, 1, "seq 0");
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* prev or seq altered: still one modified record */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 10, 1);
    p = strstr(log.line[4], "\"prev\":\"") + 8;
    *p = (*p == 'f') ? 'e' : 'f';
    p = strstr(log.line[7], "\"seq\":7") + 6;
    *p = '9';

    v = ig_t_verify(&ring, 0, &log, 0);
    assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_MODIFIED), 2);
    ig_t_expect(v, IG_AUDIT_P_MODIFIED, 2,
                "chain " CHAIN_A " seq 9 in the place of seq 7");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 5);
    assert_int_equal(ig_audit_verify_problem(v, 1)->line, 8);
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* the last record (chain_end) altered: it still ends the chain */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 3, 1);
    p = strstr(log.line[4], "\"records\":4");
    p[10] = '5';

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_MODIFIED, 1, "seq 4");
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* a key holder rewrote prev: the link is broken on both sides */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 5, 1);
    p = strstr(log.line[3], "\"prev\":\"") + 8;
    *p = (*p == 'f') ? 'e' : 'f';
    ig_t_resign(&log, 3, "k1", ring.keys[0].key, 32, NULL, NULL);

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_LINK, 2,
                "prev of seq 3 is not the mac of seq 2");
    ig_audit_verify_free(v);
    ig_t_free(&log);
}


static void
test_verify_missing(void **state)
{
    ig_t_log_t           log = { { 0 }, { 0 }, 0 }, t = { { 0 }, { 0 }, 0 };
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring;

    static const int  del1[] = { 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11 };
    static const int  del3[] = { 0, 1, 2, 3, 4, 8, 9, 10, 11 };
    static const int  del_start[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
    static const int  del_two[] = { 0, 2, 3, 4, 5, 6, 7, 8, 10, 11 };

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 10, 1);

    ig_t_copy(&t, &log, del1, 11);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_MISSING, 1,
                "missing record(s): seq 5 absent (chain " CHAIN_A ")");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 6);
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, del3, 9);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_MISSING, 1,
                "missing record(s): seq 5..7 absent");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, del_start, 11);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_MISSING, 1, "seq 0 absent");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, del_two, 10);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_MISSING, 2, "seq 9 absent");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_free(&log);
}


static void
test_verify_reordered(void **state)
{
    ig_t_log_t           log = { { 0 }, { 0 }, 0 }, t = { { 0 }, { 0 }, 0 };
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring;

    static const int  swap[] = { 0, 1, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11 };
    static const int  move[] = { 0, 1, 2, 4, 5, 6, 7, 8, 3, 9, 10, 11 };
    static const int  far[] = { 0, 1, 2, 8, 4, 5, 6, 7, 3, 9, 10, 11 };
    static const int  end[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 10 };

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 10, 1);

    ig_t_copy(&t, &log, swap, 12);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_REORDERED, 1,
                "reordered record: seq 3 after seq 4 (chain " CHAIN_A ")");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 5);
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, move, 12);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_REORDERED, 1, "seq 3 after seq 8");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, far, 12);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_REORDERED, 2, "seq 3 after seq 7");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    /* the chain_end record before the last request */

    ig_t_copy(&t, &log, end, 12);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_REORDERED, 1, "seq 10 after seq 11");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_free(&log);
}


static void
test_verify_inserted(void **state)
{
    char                 *p;
    ig_t_log_t            log = { { 0 }, { 0 }, 0 };
    ig_t_log_t            t = { { 0 }, { 0 }, 0 };
    ig_audit_chain_t     *c;
    ig_audit_verify_t    *v;
    ig_audit_keyring_t    ring;

    static const int  dup[] = { 0, 1, 2, 3, 3, 4, 5, 6, 7 };
    static const int  replay[] = { 0, 1, 2, 3, 4, 5, 1, 6, 7 };
    static const int  after[] = { 0, 1, 2, 3, 4, 5, 6, 7, 2 };

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    ig_t_chain(&log, &ring, "k1", CHAIN_A, 1, 6, 1);

    ig_t_copy(&t, &log, dup, 9);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 1, "duplicate of seq 3");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, replay, 9);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 1, "seq 1 again, after seq 5");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, after, 9);
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 1, NULL);
    ig_audit_verify_free(v);
    ig_t_free(&t);

    /* a copy of a record with its seq changed, mid-chain and at the end */

    ig_t_copy(&t, &log, dup, 9);
    p = strstr(t.line[4], "\"seq\":3");
    p[6] = '4';
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 1,
                "inserted or forged record (MAC mismatch): chain " CHAIN_A
                " seq 4 does not fit");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_copy(&t, &log, after, 9);
    p = strstr(t.line[8], "\"seq\":2");
    p[6] = '8';
    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 1, "MAC mismatch");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    /* an altered copy placed before its original: the copy is the insert */

    {
        static const int  before[] = { 0, 1, 2, 3, 3, 4, 5, 6, 7 };

        ig_t_copy(&t, &log, before, 9);
        p = strstr(t.line[3], "score");
        p[0] = 'S';
        v = ig_t_verify(&ring, 0, &t, 0);
        ig_t_expect(v, IG_AUDIT_P_INSERTED, 1,
                    "inserted or forged record (MAC mismatch): chain "
                    CHAIN_A " seq 3 does not fit");
        assert_int_equal(ig_audit_verify_problem(v, 0)->line, 4);
        ig_audit_verify_free(v);
        ig_t_free(&t);
    }

    /* a genuine record after chain_end (the key holder went on) */

    c = ig_audit_chain_open(&ring.keys[0], CHAIN_B);
    assert_non_null(c);
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_start\"},"
                     "\"infergate\":{\"pid\":3,");
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_end\"},"
                     "\"infergate\":{");
    ig_t_seal(&t, c, "{\"infergate\":{");
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_start\"},"
                     "\"infergate\":{\"pid\":3,");
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 2,
                "inserted record: seq 2 after the chain_end record of chain "
                CHAIN_B);
    ig_audit_verify_free(v);
    ig_t_free(&t);

    /* chain_start in the middle of a chain */

    c = ig_audit_chain_open(&ring.keys[0], CHAIN_B);
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_start\"},"
                     "\"infergate\":{\"pid\":3,");
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_start\"},"
                     "\"infergate\":{\"pid\":3,");
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_end\"},"
                     "\"infergate\":{");
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_INSERTED, 1, "chain_start at seq 1");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    ig_t_free(&log);
}


static void
test_verify_start_end(void **state)
{
    ig_t_log_t            log = { { 0 }, { 0 }, 0 };
    ig_t_log_t            t = { { 0 }, { 0 }, 0 };
    ig_audit_chain_t     *c;
    ig_audit_verify_t    *v;
    ig_audit_keyring_t    ring;
    ig_audit_chain_info_t info;

    static const int  cut2[] = { 0, 1, 2, 3, 4, 5 };

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);

    /* truncated: the last two records (chain_end included) cut off */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 77, 6, 1);
    ig_t_copy(&t, &log, cut2, 6);

    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 1,
                "chain " CHAIN_A " has no end record (truncated)");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 6);
    ig_audit_verify_free(v);

    v = ig_t_verify(&ring, IG_AUDIT_VERIFY_LIVE, &t, 0);
    assert_int_equal(ig_audit_verify_nproblems(v), 0);
    assert_int_equal(ig_audit_verify_chain(v, 0, &info), 0);
    assert_true(info.live);
    assert_false(info.ended);
    ig_audit_verify_free(v);
    ig_t_free(&t);
    ig_t_free(&log);

    /*
     * --live: one writer (pid 77) restarted its chain: only its newest
     * chain may be open; another writer's open chain is fine too.
     */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 77, 2, 0);
    ig_t_chain(&log, &ring, "k1", CHAIN_B, 77, 2, 0);
    ig_t_chain(&log, &ring, "k2", "00000000000000000000000000000001", 78, 1,
               0);

    v = ig_t_verify(&ring, IG_AUDIT_VERIFY_LIVE, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 1, "chain " CHAIN_A " has no end");
    ig_audit_verify_free(v);

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 3, NULL);
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* the first record is not chain_start; chain_start without pid */

    c = ig_audit_chain_open(&ring.keys[0], CHAIN_B);
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"request\"},\"infergate\":{");
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_end\"},"
                     "\"infergate\":{");
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_NO_START, 1,
                "chain " CHAIN_B " does not begin with a chain_start record");
    ig_audit_verify_free(v);
    ig_t_free(&t);

    c = ig_audit_chain_open(&ring.keys[0], CHAIN_B);
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_start\"},"
                     "\"infergate\":{");
    ig_t_seal(&t, c, "{\"event\":{\"action\":\"chain_end\"},"
                     "\"infergate\":{");
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &t, 0);
    ig_t_expect(v, IG_AUDIT_P_MALFORMED, 1, "lacks infergate.pid");
    ig_audit_verify_free(v);
    ig_t_free(&t);
}


static void
test_verify_keys(void **state)
{
    unsigned char        k9[32];
    ig_t_log_t           log = { { 0 }, { 0 }, 0 };
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring, ring2, ring1;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    ig_t_ring(&ring2, "k2:" HEX32B "\n");
    ig_t_ring(&ring1, "k1:" HEX32A "\n");

    /* rotation: chains of k1 and k2, interleaved as two workers write */

    {
        ig_t_log_t  a = { { 0 }, { 0 }, 0 }, b = { { 0 }, { 0 }, 0 };
        size_t      i;

        ig_t_chain(&a, &ring, "k1", CHAIN_A, 10, 5, 1);
        ig_t_chain(&b, &ring, "k2", CHAIN_B, 11, 5, 1);

        for (i = 0; i < a.n; i++) {
            ig_t_add(&log, a.line[i], a.len[i]);
            ig_t_add(&log, b.line[i], b.len[i]);
        }

        ig_t_free(&a);
        ig_t_free(&b);
    }

    v = ig_t_verify(&ring, 0, &log, 7);
    assert_int_equal(ig_audit_verify_nproblems(v), 0);
    assert_int_equal(ig_audit_verify_nchains(v), 2);
    assert_int_equal(ig_audit_verify_nverified(v), 14);
    ig_audit_verify_free(v);

    /* the old key removed: reported once for its chain */

    v = ig_t_verify(&ring2, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_UNKNOWN_KEY, 1,
                "unknown key id \"k1\" (chain " CHAIN_A " seq 0)");
    assert_int_equal(ig_audit_verify_nverified(v), 7);
    ig_audit_verify_free(v);

    v = ig_t_verify(&ring1, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_UNKNOWN_KEY, 1, "unknown key id \"k2\"");
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* one record re-signed with a key outside the keyring */

    memset(k9, 0x99, sizeof(k9));
    ig_t_chain(&log, &ring, "k1", CHAIN_A, 10, 5, 1);
    ig_t_resign(&log, 3, "k9", k9, 32, NULL, NULL);

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_UNKNOWN_KEY, 1,
                "unknown key id \"k9\" (chain " CHAIN_A " seq 3)");
    ig_audit_verify_free(v);

    /* re-signed with the other known key: a key change, and the next
     * record's prev no longer matches */

    ig_t_resign(&log, 3, "k2", ring.keys[1].key, 32, NULL, NULL);

    v = ig_t_verify(&ring, 0, &log, 0);
    assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_KEY_CHANGED), 1);
    assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_LINK), 1);
    assert_int_equal(ig_audit_verify_nproblems(v), 2);
    ig_audit_verify_free(v);

    ig_t_free(&log);
}


static void
test_verify_lines(void **state)
{
    size_t               i;
    char                *big;
    ig_t_log_t           log = { { 0 }, { 0 }, 0 };
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring;

    static const char  *garbage[] = {
        "", "garbage", "{}", "{\"infergate\":{}}", "null", "\t",
        "{\"a\":1}\r"
    };

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);

    /* malformed lines between good records do not disturb the chain */

    {
        ig_t_log_t  good = { { 0 }, { 0 }, 0 };

        ig_t_chain(&good, &ring, "k1", CHAIN_A, 10, 3, 1);

        for (i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
            if (i < good.n) {
                ig_t_add(&log, good.line[i], good.len[i]);
            }

            ig_t_add(&log, garbage[i], strlen(garbage[i]));
        }

        ig_t_free(&good);
    }

    v = ig_t_verify(&ring, 0, &log, 3);
    ig_t_expect(v, IG_AUDIT_P_MALFORMED, 7, "malformed line: empty");
    assert_int_equal(ig_audit_verify_nlines(v), 12);
    assert_int_equal(ig_audit_verify_nverified(v), 5);
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* no newline at the end of the file */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 10, 3, 1);

    v = ig_audit_verify_new(&ring, 0);
    assert_int_equal(ig_audit_verify_file(v, "a.log"), 0);

    for (i = 0; i < log.n; i++) {
        ig_audit_verify_feed(v, (unsigned char *) log.line[i], log.len[i]);

        if (i + 1 < log.n) {
            ig_audit_verify_feed(v, (unsigned char *) "\n", 1);
        }
    }

    ig_audit_verify_finish(v);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED_LINE, 1,
                "truncated line (no newline at end of file)");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 5);
    ig_audit_verify_free(v);

    /* half a record at the end */

    v = ig_audit_verify_new(&ring, 0);
    ig_audit_verify_file(v, "a.log");

    for (i = 0; i < log.n; i++) {
        ig_audit_verify_feed(v, (unsigned char *) log.line[i],
                             i + 1 < log.n ? log.len[i] : log.len[i] / 2);

        if (i + 1 < log.n) {
            ig_audit_verify_feed(v, (unsigned char *) "\n", 1);
        }
    }

    ig_audit_verify_finish(v);
    assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_TRUNCATED_LINE), 1);
    assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_TRUNCATED), 1);
    assert_int_equal(ig_audit_verify_nproblems(v), 2);
    ig_audit_verify_free(v);

    /* rotation: the same chain over two files */

    v = ig_audit_verify_new(&ring, 0);

    for (i = 0; i < log.n; i++) {
        if (i == 0) {
            ig_audit_verify_file(v, "a.log.1");

        } else if (i == 2) {
            ig_audit_verify_file(v, "a.log");
        }

        ig_audit_verify_feed(v, (unsigned char *) log.line[i], log.len[i]);
        ig_audit_verify_feed(v, (unsigned char *) "\n", 1);
    }

    ig_audit_verify_finish(v);
    assert_int_equal(ig_audit_verify_nproblems(v), 0);
    assert_int_equal(ig_audit_verify_nverified(v), 5);
    ig_audit_verify_free(v);

    /* a line over IG_AUDIT_VERIFY_LINE_MAX is skipped, reported once */

    big = malloc(IG_AUDIT_VERIFY_LINE_MAX + 100);
    assert_non_null(big);
    memset(big, 'x', IG_AUDIT_VERIFY_LINE_MAX + 100);

    v = ig_audit_verify_new(&ring, 0);
    ig_audit_verify_file(v, "big.log");
    ig_audit_verify_feed(v, (unsigned char *) log.line[0], log.len[0]);
    ig_audit_verify_feed(v, (unsigned char *) "\n", 1);

    for (i = 0; i < 3; i++) {
        ig_audit_verify_feed(v, (unsigned char *) big,
                             IG_AUDIT_VERIFY_LINE_MAX / 2 + 10);
    }

    ig_audit_verify_feed(v, (unsigned char *) "\n", 1);

    for (i = 1; i < log.n; i++) {
        ig_audit_verify_feed(v, (unsigned char *) log.line[i], log.len[i]);
        ig_audit_verify_feed(v, (unsigned char *) "\n", 1);
    }

    ig_audit_verify_finish(v);
    ig_t_expect(v, IG_AUDIT_P_MALFORMED, 1, "longer than 1048576 bytes");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 2);
    assert_int_equal(ig_audit_verify_nlines(v), 6);
    ig_audit_verify_free(v);

    free(big);
    ig_t_free(&log);
}


/* a record built from hostile bytes escaped with ig_json_escape() */

static void
test_verify_escaped(void **state)
{
    char                 prefix[1024], *p;
    size_t               i;
    ig_t_log_t           log = { { 0 }, { 0 }, 0 };
    ig_audit_chain_t    *c;
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring;

    static const char  hostile[] =
        "\"}},\"infergate\":{\"seq\":0}\\\x01\x1f\n\r\t\x7f\xff\xc0\x80"
        "\xed\xa0\x80\xf4\x90\x80\x80\xe2\x82 caf\xc3\xa9 \xf0\x9f\x98\x80";

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);

    c = ig_audit_chain_open(&ring.keys[1], CHAIN_A);
    ig_t_seal(&log, c, "{\"event\":{\"action\":\"chain_start\"},"
                       "\"infergate\":{\"pid\":3,");

    p = prefix + sprintf(prefix, "{\"url\":{\"original\":\"");
    assert_true(ig_json_escape_len((unsigned char *) hostile,
                                   sizeof(hostile) - 1) < 512);
    p = (char *) ig_json_escape((unsigned char *) p,
                                (unsigned char *) hostile,
                                sizeof(hostile) - 1);
    strcpy(p, "\"},\"infergate\":{");

    for (i = 0; i < 3; i++) {
        ig_t_seal(&log, c, prefix);
    }

    ig_t_seal(&log, c, "{\"event\":{\"action\":\"chain_end\"},"
                       "\"infergate\":{");
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &log, 1);
    assert_int_equal(ig_audit_verify_nproblems(v), 0);
    assert_int_equal(ig_audit_verify_nverified(v), 5);
    ig_audit_verify_free(v);

    ig_t_free(&log);
}


/* the precomputed-pad HMAC equals OpenSSL's HMAC() for every key length
 * a key file allows (32..128 bytes: longer than a block is hashed) */

static void
test_hmac_matches_openssl(void **state)
{
    size_t            klen, dlen, i;
    unsigned int      mdlen;
    unsigned char     key[128], data[1000], got[32], want[32];
    ig_audit_hmac_t  *h;

    static const size_t  klens[] = { 32, 63, 64, 65, 100, 128 };
    static const size_t  dlens[] = { 0, 1, 55, 56, 64, 119, 450, 1000 };

    (void) state;

    for (i = 0; i < sizeof(key); i++) {
        key[i] = (unsigned char) (i * 37 + 11);
    }

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (unsigned char) (i * 13 + 5);
    }

    for (klen = 0; klen < sizeof(klens) / sizeof(klens[0]); klen++) {
        h = ig_audit_hmac_new(key, klens[klen]);
        assert_non_null(h);

        for (dlen = 0; dlen < sizeof(dlens) / sizeof(dlens[0]); dlen++) {
            assert_int_equal(ig_audit_hmac(h, data, dlens[dlen], got), 0);
            assert_non_null(HMAC(EVP_sha256(), key, (int) klens[klen], data,
                                 dlens[dlen], want, &mdlen));
            assert_memory_equal(got, want, 32);
        }

        ig_audit_hmac_free(h);
    }
}


/* chain_end's counts are cross-checked: records held, records lost */

static void
test_verify_end_counts(void **state)
{
    char                   prefix[256];
    ig_t_log_t             log = { { 0 }, { 0 }, 0 };
    ig_audit_chain_t      *c;
    ig_audit_verify_t     *v;
    ig_audit_keyring_t     ring;
    const ig_audit_key_t  *key;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    key = ig_audit_keyring_find(&ring, "k1", 2);
    assert_non_null(key);

    /* an end record that claims 5 records where the chain holds 2 */

    c = ig_audit_chain_open(key, CHAIN_A);
    assert_non_null(c);
    ig_t_seal(&log, c, "{" TS "\"event\":{\"action\":\"chain_start\"},"
              "\"infergate\":{\"pid\":7,");
    ig_t_seal(&log, c, "{" TS "\"event\":{\"action\":\"infer\"},"
              "\"infergate\":{");
    ig_t_seal(&log, c, "{" TS "\"event\":{\"action\":\"infer\"},"
              "\"infergate\":{");
    snprintf(prefix, sizeof(prefix), "{" TS "\"event\":{\"action\":"
             "\"chain_end\"},\"infergate\":{\"pid\":7,\"records\":5,"
             "\"lost\":0,");
    ig_t_seal(&log, c, prefix);
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_COUNT, 1, "chain " CHAIN_A ": its chain_end "
                "record states 5 records before it, the chain holds 3");
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* a whole chain whose end record states 3 records lost */

    c = ig_audit_chain_open(key, CHAIN_B);
    assert_non_null(c);
    ig_t_seal(&log, c, "{" TS "\"event\":{\"action\":\"chain_start\"},"
              "\"infergate\":{\"pid\":7,");
    ig_t_seal(&log, c, "{" TS "\"event\":{\"action\":\"chain_end\"},"
              "\"infergate\":{\"pid\":7,\"records\":1,\"lost\":3,");
    ig_audit_chain_close(c);

    v = ig_t_verify(&ring, 0, &log, 0);
    ig_t_expect(v, IG_AUDIT_P_LOST, 1, "chain " CHAIN_B ": its chain_end "
                "record states 3 records lost");
    ig_audit_verify_free(v);
    ig_t_free(&log);

    /* a whole chain that counts right verifies */

    ig_t_chain(&log, &ring, "k1", CHAIN_A, 7, 4, 1);
    v = ig_t_verify(&ring, 0, &log, 0);
    assert_int_equal(ig_audit_verify_nproblems(v), 0);
    ig_audit_verify_free(v);
    ig_t_free(&log);

    ig_audit_keyring_cleanse(&ring);
}


static void
ig_t_count(void *data, const ig_audit_problem_t *p)
{
    uint64_t  *n = data;

    assert_int_equal(p->type, IG_AUDIT_P_MALFORMED);
    assert_string_equal(p->path, "h.log");
    assert_int_equal(p->line, *n + 1);
    (*n)++;
}


static void
test_verify_handler_count(void **state)
{
    size_t              i;
    uint64_t            seen;
    ig_audit_verify_t  *v;
    ig_audit_keyring_t  ring;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);

    v = ig_audit_verify_new(&ring, 0);
    assert_non_null(v);

    /* stored problems stop at IG_AUDIT_VERIFY_KEEP, the count does not */

    for (i = 0; i < IG_AUDIT_VERIFY_KEEP + 5; i++) {
        ig_audit_verify_line(v, (unsigned char *) "x", 1);
    }

    ig_audit_verify_finish(v);
    assert_int_equal(ig_audit_verify_nproblems(v), IG_AUDIT_VERIFY_KEEP + 5);
    assert_int_equal(ig_audit_verify_nstored(v), IG_AUDIT_VERIFY_KEEP);
    assert_null(ig_audit_verify_problem(v, IG_AUDIT_VERIFY_KEEP));
    assert_string_equal(ig_audit_verify_problem(v, 0)->path, "-");
    ig_audit_verify_free(v);
    ig_audit_verify_free(NULL);

    /* with a handler nothing is stored */

    v = ig_audit_verify_new(&ring, 0);
    seen = 0;
    ig_audit_verify_handler(v, ig_t_count, &seen);
    ig_audit_verify_file(v, "h.log");

    for (i = 0; i < 100; i++) {
        ig_audit_verify_feed(v, (unsigned char *) "{\"x\"\n", 5);
    }

    ig_audit_verify_finish(v);
    assert_int_equal(seen, 100);
    assert_int_equal(ig_audit_verify_nproblems(v), 100);
    assert_int_equal(ig_audit_verify_nstored(v), 0);
    ig_audit_verify_free(v);

    assert_string_equal(ig_audit_problem_name(IG_AUDIT_P_MODIFIED),
                        "modified record");
    assert_string_equal(ig_audit_problem_name((ig_audit_problem_type_e) 99),
                        "problem");
}


/* ---- chain links and the state file ----------------------------------- */


static int  ig_t_dead_pid;

static int
ig_t_alive(int64_t pid)
{
    return pid != ig_t_dead_pid;
}


static void
test_state_file(void **state)
{
    char              err[128], buf[IG_AUDIT_STATE_SIZE_MAX];
    size_t            n;
    unsigned char     link[IG_AUDIT_LINK_MAX], line[200];
    ig_audit_state_t  st, st2;

    (void) state;

    /* empty: fresh */
    assert_int_equal(ig_audit_state_parse(&st, "", 0, err, sizeof(err)), 0);
    assert_false(st.have_head);
    n = ig_audit_state_link(&st, link);
    assert_memory_equal(link, "\"link\":\"genesis\",", n);

    /* a marker line: its mac is the 64 hex digits before "}}\n" */
    n = (size_t) snprintf((char *) line, sizeof(line),
                          "{\"x\":1,\"mac\":\"%s%s\"}}\n", HEX32A, HEX32A);
    ig_audit_state_advance(&st, line, n, CHAIN_A, 0, 1, 10, NULL);
    ig_audit_state_advance(&st, line, n, CHAIN_B, 0, 1, 11, NULL);
    ig_audit_state_advance(&st, line, n, CHAIN_A, 7, 0, 10, NULL);
    assert_true(st.have_head);
    assert_string_equal(st.head_chain, CHAIN_A);
    assert_int_equal(st.head_seq, 7);
    assert_memory_equal(st.head_mac, HEX32A, 64);
    assert_int_equal(st.nopen, 1);
    assert_string_equal(st.open[0].chain, CHAIN_B);

    n = ig_audit_state_link(&st, link);
    assert_memory_equal(link, "\"link\":\"" CHAIN_A ":7:" HEX32A "\",", n);

    n = ig_audit_state_format(&st, buf, sizeof(buf));
    assert_true(n > 0);
    assert_memory_equal(buf, "infergate-chainstate 1\nhead " CHAIN_A " 7 "
                        HEX32A "\nopen " CHAIN_B " 11\nend\n", n);
    assert_int_equal(ig_audit_state_parse(&st2, buf, n, err, sizeof(err)),
                     0);
    assert_true(st2.have_head);
    assert_string_equal(st2.head_chain, CHAIN_A);
    assert_int_equal(st2.head_seq, 7);
    assert_string_equal(st2.head_mac, st.head_mac);
    assert_int_equal(st2.nopen, 1);
    assert_string_equal(st2.open[0].chain, CHAIN_B);
    assert_int_equal(st2.open[0].pid, 11);

    /* a start drops the open chains of writers that are gone */
    ig_t_dead_pid = 11;
    ig_audit_state_advance(&st, line, n, CHAIN_A, 0, 1, 12, ig_t_alive);
    assert_int_equal(st.nopen, 1);
    assert_int_equal(st.open[0].pid, 12);

    /* damaged files are refused */
    assert_int_equal(ig_audit_state_parse(&st, buf, n - 4, err,
                                          sizeof(err)), -1);
    assert_non_null(strstr(err, "incomplete"));
    assert_int_equal(ig_audit_state_parse(&st, "infergate-chainstate 2\n"
                                          "end\n", 27, err, sizeof(err)),
                     -1);
    assert_int_equal(ig_audit_state_parse(&st, "infergate-chainstate 1\n"
                                          "head " CHAIN_A " 07 " HEX32A
                                          "\nend\n", 130, err, sizeof(err)),
                     -1);
    assert_int_equal(ig_audit_state_parse(&st, "infergate-chainstate 1\n"
                                          "open " CHAIN_A " x\nend\n",
                                          23 + 5 + 32 + 3 + 4, err,
                                          sizeof(err)), -1);
    assert_int_equal(ig_audit_state_parse(&st, "infergate-chainstate 1\n"
                                          "end\nend\n", 31, err,
                                          sizeof(err)), -1);
}


/* a marker sealed as the module seals it: linked to st's head */

static void
ig_t_marker(ig_t_log_t *log, ig_audit_chain_t *c, ig_audit_state_t *st,
    int start, int pid)
{
    size_t          n, len;
    uint64_t        seq;
    unsigned char   buf[LINE_CAP];

    n = (size_t) snprintf((char *) buf, sizeof(buf), "{" TS "\"event\":"
                          "{\"action\":\"%s\"},\"infergate\":{\"pid\":%d,",
                          start ? "chain_start" : "chain_end", pid);

    if (!start) {
        n += (size_t) snprintf((char *) buf + n, sizeof(buf) - n,
                               "\"records\":%llu,", (unsigned long long)
                               ig_audit_chain_seq(c));
    }

    n += ig_audit_state_link(st, buf + n);
    seq = ig_audit_chain_seq(c);
    len = ig_audit_seal(c, buf, n);
    assert_true(len > n);

    ig_t_add(log, (char *) buf, len - 1);
    ig_audit_state_advance(st, buf, len, ig_audit_chain_get_id(c), seq,
                           start, pid, NULL);
}


static void
ig_t_request(ig_t_log_t *log, ig_audit_chain_t *c)
{
    ig_t_seal(log, c, "{" TS "\"event\":{\"action\":\"request\"},"
                      "\"infergate\":{");
}


/* lines of log without those of chain id */

static void
ig_t_without(ig_t_log_t *dst, const ig_t_log_t *src, const char *id)
{
    char    own[64];
    size_t  i;

    snprintf(own, sizeof(own), "\"chain\":\"%s\"", id);
    dst->n = 0;

    for (i = 0; i < src->n; i++) {
        if (strstr(src->line[i], own) == NULL) {
            ig_t_add(dst, src->line[i], src->len[i]);
        }
    }
}


static ig_audit_verify_t *
ig_t_verify_state(const ig_audit_keyring_t *ring, unsigned flags,
    const ig_t_log_t *log, const ig_audit_state_t *st)
{
    size_t              i;
    ig_audit_verify_t  *v;

    v = ig_audit_verify_new(ring, flags);
    assert_non_null(v);

    if (st) {
        assert_int_equal(ig_audit_verify_state(v, st, "audit.log.chainstate"),
                         0);
    }

    assert_int_equal(ig_audit_verify_file(v, "audit.log"), 0);

    for (i = 0; i < log->n; i++) {
        assert_int_equal(ig_audit_verify_line(v, (unsigned char *)
                                              log->line[i], log->len[i]), 0);
    }

    ig_audit_verify_finish(v);

    return v;
}


#define CHAIN_C  "00000000000000000000000000000003"


static void
test_verify_links(void **state)
{
    ig_t_log_t           log = { { 0 }, { 0 }, 0 };
    ig_t_log_t           t = { { 0 }, { 0 }, 0 };
    ig_audit_chain_t    *a, *b, *c;
    ig_audit_state_t     st, old;
    ig_audit_verify_t   *v;
    ig_audit_keyring_t   ring;

    (void) state;

    ig_t_ring(&ring, ig_t_ring_text);
    memset(&st, 0, sizeof(st));

    /* A runs; a reload: B starts, A ends; again: C starts, B ends */

    a = ig_audit_chain_open(&ring.keys[0], CHAIN_A);
    b = ig_audit_chain_open(&ring.keys[0], CHAIN_B);
    c = ig_audit_chain_open(&ring.keys[1], CHAIN_C);

    ig_t_marker(&log, a, &st, 1, 10);
    ig_t_request(&log, a);
    ig_t_marker(&log, b, &st, 1, 11);
    ig_t_request(&log, b);
    ig_t_request(&log, a);
    ig_t_marker(&log, a, &st, 0, 10);
    ig_t_request(&log, b);
    old = st;
    ig_t_marker(&log, c, &st, 1, 12);
    ig_t_marker(&log, b, &st, 0, 11);
    ig_t_request(&log, c);

    /* as written, C open: --live with the state, not without */

    v = ig_t_verify_state(&ring, IG_AUDIT_VERIFY_LIVE, &log, &st);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 0, NULL);
    ig_audit_verify_free(v);

    v = ig_t_verify_state(&ring, 0, &log, &st);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 1, "chain " CHAIN_C);
    ig_audit_verify_free(v);

    /* the state read before C started: C is newer, so live too */
    v = ig_t_verify_state(&ring, IG_AUDIT_VERIFY_LIVE, &log, &old);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 0, NULL);
    ig_audit_verify_free(v);

    /* C ends; everything closed verifies without --live */
    ig_t_marker(&log, c, &st, 0, 12);

    v = ig_t_verify_state(&ring, 0, &log, &st);
    ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 0, NULL);
    ig_audit_verify_free(v);

    /* the first chain removed */
    ig_t_without(&t, &log, CHAIN_A);
    v = ig_t_verify_state(&ring, 0, &t, NULL);
    ig_t_expect(v, IG_AUDIT_P_REMOVED, 2, "chain " CHAIN_A " seq 0");
    assert_int_equal(ig_audit_verify_problem(v, 0)->line, 1);
    ig_audit_verify_free(v);
    ig_t_free(&t);

    /* the middle chain removed, with or without --live */
    ig_t_without(&t, &log, CHAIN_B);
    v = ig_t_verify_state(&ring, IG_AUDIT_VERIFY_LIVE, &t, &st);
    ig_t_expect(v, IG_AUDIT_P_REMOVED, 2, "chain " CHAIN_B);
    ig_audit_verify_free(v);
    ig_t_free(&t);

    /* A's tail and chain_end removed: --live does not excuse it */
    {
        static const int  cut[] = { 0, 1, 2, 3, 6, 7, 8, 9, 10 };

        ig_t_copy(&t, &log, cut, 9);
        v = ig_t_verify_state(&ring, IG_AUDIT_VERIFY_LIVE, &t, &st);
        assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_REMOVED), 1);
        assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_MISSING), 0);
        assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_TRUNCATED), 1);
        ig_audit_verify_free(v);
        ig_t_free(&t);
    }

    /*
     * the newest marker cut (C's chain_end): only the state shows that
     * it is not an open chain; --live does not excuse it either
     */
    {
        static const int  cut[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };

        ig_t_copy(&t, &log, cut, 10);
        v = ig_t_verify_state(&ring, IG_AUDIT_VERIFY_LIVE, &t, NULL);
        ig_t_expect(v, IG_AUDIT_P_TRUNCATED, 1, "chain " CHAIN_C);
        ig_audit_verify_free(v);
        v = ig_t_verify_state(&ring, IG_AUDIT_VERIFY_LIVE, &t, &st);
        assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_STATE), 1);
        assert_int_equal(ig_audit_verify_count(v, IG_AUDIT_P_TRUNCATED), 1);
        assert_string_equal(ig_audit_verify_problem(v, 0)->path,
                            "audit.log.chainstate");
        assert_non_null(strstr(ig_audit_verify_problem(v, 0)->text,
                               "chain " CHAIN_C " seq 2"));
        ig_audit_verify_free(v);
        ig_t_free(&t);
    }

    /* a reset state: a second genesis; a copied state: a fork */
    memset(&old, 0, sizeof(old));
    ig_audit_chain_close(a);
    a = ig_audit_chain_open(&ring.keys[0], "00000000000000000000000000000004");
    ig_t_marker(&log, a, &old, 1, 13);
    ig_t_marker(&log, a, &old, 0, 13);
    ig_audit_chain_close(a);
    v = ig_t_verify_state(&ring, 0, &log, NULL);
    ig_t_expect(v, IG_AUDIT_P_FORK, 1, "second genesis");
    ig_audit_verify_free(v);

    ig_audit_chain_close(b);
    ig_audit_chain_close(c);
    ig_t_free(&log);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_keyring_good),
        cmocka_unit_test(test_keyring_bad),
        cmocka_unit_test(test_key_file),
        cmocka_unit_test(test_seal_golden),
        cmocka_unit_test(test_seal_chain),
        cmocka_unit_test(test_hmac_first_block),
        cmocka_unit_test(test_hmac),
        cmocka_unit_test(test_record_parse),
        cmocka_unit_test(test_verify_ok),
        cmocka_unit_test(test_verify_modified),
        cmocka_unit_test(test_verify_missing),
        cmocka_unit_test(test_verify_reordered),
        cmocka_unit_test(test_verify_inserted),
        cmocka_unit_test(test_verify_start_end),
        cmocka_unit_test(test_verify_keys),
        cmocka_unit_test(test_hmac_matches_openssl),
        cmocka_unit_test(test_verify_end_counts),
        cmocka_unit_test(test_verify_lines),
        cmocka_unit_test(test_verify_escaped),
        cmocka_unit_test(test_verify_handler_count),
        cmocka_unit_test(test_state_file),
        cmocka_unit_test(test_verify_links),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
