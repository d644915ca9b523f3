/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the audit records: the verifier engine and its
 * line parser on arbitrary bytes, and ig_json_escape() + ig_audit_seal()
 * on arbitrary strings.  The first byte picks the mode:
 *
 *   bit 0 clear: the rest is a log file.  It is verified twice, once fed
 *     at once and once in chunks of sizes taken from the data; both runs
 *     must find the same problems.  Every line that the record parser
 *     accepts must satisfy the layout's invariants.  Bit 1: --live.
 *   bit 0 set: the rest is a string, escaped into url.original of a
 *     record sealed between a chain_start and a chain_end record; every
 *     line must parse with yajl (the string round-trips when it was
 *     valid UTF-8 without NUL) and the chain must verify cleanly.
 *
 * clang -g -O1 -fsanitize=fuzzer,address,undefined -Ilib \
 *     tests/fuzz/fuzz_audit.c lib/ig_*.c -lyajl -lpcre2-8 -lcrypto
 * ./a.out -max_total_time=120 tests/fuzz/corpus/audit
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ig_audit.h"
#include "ig_audit_verify.h"
#include "ig_json.h"


#define IG_FUZZ_CHAIN         "0123456789abcdef0123456789abcdef"
#define IG_FUZZ_KEYS                                                          \
    "k1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"  \
    "k2:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static void ig_fuzz_log(const uint8_t *data, size_t size, unsigned flags);
static ig_audit_verify_t *ig_fuzz_run(const uint8_t *data, size_t size,
    unsigned flags, int split);
static void ig_fuzz_lines(const uint8_t *data, size_t size);
static void ig_fuzz_seal(const uint8_t *data, size_t size);
static size_t ig_fuzz_record(ig_audit_chain_t *c, unsigned char *buf,
    const char *prefix, size_t len);
static int ig_fuzz_utf8(const uint8_t *s, size_t len);
static void ig_fuzz_state(const uint8_t *data, size_t size);


#define ig_fuzz_assert(c)                                                     \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "assertion failed: %s (line %d)\n", #c,           \
                    __LINE__);                                                \
            abort();                                                          \
        }                                                                     \
    } while (0)


static ig_audit_keyring_t  ig_fuzz_ring;
static int                 ig_fuzz_ready;


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  err[128];

    if (!ig_fuzz_ready) {
        ig_fuzz_assert(ig_audit_keyring_parse(&ig_fuzz_ring, IG_FUZZ_KEYS,
                                              sizeof(IG_FUZZ_KEYS) - 1, err,
                                              sizeof(err)) == 0);
        ig_fuzz_ready = 1;
    }

    if (size == 0) {
        return 0;
    }

    if ((data[0] & 0x1d) == 0x1c) {
        ig_fuzz_state(data + 1, size - 1);

    } else if (data[0] & 1) {
        ig_fuzz_seal(data + 1, size - 1);

    } else {
        ig_fuzz_log(data + 1, size - 1,
                    (data[0] & 2) ? IG_AUDIT_VERIFY_LIVE : 0);
    }

    return 0;
}


/* ---- verifier ---------------------------------------------------------- */


static void
ig_fuzz_log(const uint8_t *data, size_t size, unsigned flags)
{
    size_t                      i;
    ig_audit_verify_t          *a, *b;
    ig_audit_chain_info_t       ca, cb;
    const ig_audit_problem_t   *pa, *pb;

    a = ig_fuzz_run(data, size, flags, 0);
    b = ig_fuzz_run(data, size, flags, 1);

    ig_fuzz_assert(ig_audit_verify_nproblems(a)
                   == ig_audit_verify_nproblems(b));
    ig_fuzz_assert(ig_audit_verify_nlines(a) == ig_audit_verify_nlines(b));
    ig_fuzz_assert(ig_audit_verify_nrecords(a)
                   == ig_audit_verify_nrecords(b));
    ig_fuzz_assert(ig_audit_verify_nverified(a)
                   == ig_audit_verify_nverified(b));
    ig_fuzz_assert(ig_audit_verify_nstored(a) == ig_audit_verify_nstored(b));
    ig_fuzz_assert(ig_audit_verify_nchains(a) == ig_audit_verify_nchains(b));
    ig_fuzz_assert(ig_audit_verify_nverified(a)
                   <= ig_audit_verify_nrecords(a));
    ig_fuzz_assert(ig_audit_verify_nrecords(a) <= ig_audit_verify_nlines(a));

    for (i = 0; i < ig_audit_verify_nstored(a); i++) {
        pa = ig_audit_verify_problem(a, i);
        pb = ig_audit_verify_problem(b, i);

        ig_fuzz_assert(pa->type == pb->type && pa->line == pb->line);
        ig_fuzz_assert(strcmp(pa->text, pb->text) == 0);
        ig_fuzz_assert(pa->line >= 1
                       && pa->line <= ig_audit_verify_nlines(a));
        ig_fuzz_assert(pa->text[0] != '\0');
    }

    for (i = 0; i < ig_audit_verify_nchains(a); i++) {
        ig_fuzz_assert(ig_audit_verify_chain(a, i, &ca) == 0);
        ig_fuzz_assert(ig_audit_verify_chain(b, i, &cb) == 0);
        ig_fuzz_assert(memcmp(&ca, &cb, sizeof(ca)) == 0);
        ig_fuzz_assert(ca.first <= ca.last);
        ig_fuzz_assert(ca.nrecords >= 1);
    }

    /* a clean verdict means every line was a verified record */

    if (ig_audit_verify_nproblems(a) == 0) {
        ig_fuzz_assert(ig_audit_verify_nverified(a)
                       == ig_audit_verify_nlines(a));
    }

    ig_audit_verify_free(a);
    ig_audit_verify_free(b);

    ig_fuzz_lines(data, size);
}


static ig_audit_verify_t *
ig_fuzz_run(const uint8_t *data, size_t size, unsigned flags, int split)
{
    size_t              off, n;
    uint8_t            *copy;
    ig_audit_verify_t  *v;

    v = ig_audit_verify_new(&ig_fuzz_ring, flags);
    ig_fuzz_assert(v != NULL);
    ig_fuzz_assert(ig_audit_verify_file(v, "fuzz.log") == 0);

    /* exact-size heap copies, so ASan sees any read past the end */

    for (off = 0; off < size; off += n) {
        n = split ? 1 + (data[off] % 61) : size;

        if (n > size - off) {
            n = size - off;
        }

        copy = malloc(n);
        ig_fuzz_assert(copy != NULL);
        memcpy(copy, data + off, n);
        ig_fuzz_assert(ig_audit_verify_feed(v, copy, n) == 0);
        free(copy);
    }

    ig_audit_verify_finish(v);

    return v;
}


/* the line parser alone, on each line */

static void
ig_fuzz_lines(const uint8_t *data, size_t size)
{
    size_t              i, len;
    uint8_t            *line;
    const char         *reason;
    const uint8_t      *p, *end, *nl;
    ig_audit_record_t   rec;

    p = data;
    end = data + size;

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));
        len = nl ? (size_t) (nl - p) : (size_t) (end - p);

        line = malloc(len ? len : 1);
        ig_fuzz_assert(line != NULL);
        memcpy(line, p, len);

        reason = NULL;
        memset(&rec, 0xab, sizeof(rec));

        if (ig_audit_record_parse(line, len, &rec, &reason) == 0) {
            ig_fuzz_assert(len > IG_AUDIT_MAC_TAIL);
            ig_fuzz_assert(rec.signed_len == len - IG_AUDIT_MAC_TAIL);
            ig_fuzz_assert(line[0] == '{');
            ig_fuzz_assert(memcmp(line + rec.signed_len - 7, "\"mac\":\"", 7)
                           == 0);
            ig_fuzz_assert(memcmp(line + len - 3, "\"}}", 3) == 0);
            ig_fuzz_assert(strlen(rec.chain) == IG_AUDIT_CHAIN_ID_LEN);
            ig_fuzz_assert(ig_audit_key_id_valid(rec.key_id,
                                                 strlen(rec.key_id)));
            ig_fuzz_assert(rec.seq != UINT64_MAX);
            ig_fuzz_assert(rec.pid >= -1);
            ig_fuzz_assert(rec.action <= IG_AUDIT_ACTION_END);

            {
                char  hex[IG_AUDIT_MAC_HEX];

                ig_audit_hex(hex, rec.mac, IG_AUDIT_MAC_LEN);
                ig_fuzz_assert(memcmp(hex, line + rec.signed_len,
                                      IG_AUDIT_MAC_HEX) == 0);
            }

            for (i = 0; i < IG_AUDIT_CHAIN_ID_LEN; i++) {
                ig_fuzz_assert(strchr("0123456789abcdef", rec.chain[i])
                               != NULL);
            }

        } else {
            ig_fuzz_assert(reason != NULL && reason[0] != '\0');
        }

        free(line);

        p += len + 1;
    }
}


/* ---- escaping and sealing ---------------------------------------------- */


static void
ig_fuzz_seal(const uint8_t *data, size_t size)
{
    size_t              n, esc, i, total;
    size_t              lens[3];
    unsigned char      *buf, *lines[3], *p;
    char                err[128];
    const char         *reason;
    yajl_val            tree, v;
    ig_audit_chain_t   *c;
    ig_audit_record_t   rec;
    ig_audit_verify_t  *ver;

    static const char   *url_path[] = { "url", "original", NULL };
    static const char    prefix[] =
        "{\"@timestamp\":\"2024-05-01T12:00:00.000Z\",\"event\":{\"action\":"
        "\"request\"},\"url\":{\"original\":\"";
    static const char    suffix[] = "\"},\"infergate\":{\"pid\":42,";

    c = ig_audit_chain_open(&ig_fuzz_ring.keys[0], IG_FUZZ_CHAIN);
    ig_fuzz_assert(c != NULL);

    esc = ig_json_escape_len(data, size);
    ig_fuzz_assert(esc >= size && esc <= 6 * size);

    total = 0;

    for (i = 0; i < 3; i++) {
        lines[i] = malloc(sizeof(prefix) + esc + sizeof(suffix)
                          + IG_AUDIT_TRAILER_MAX + 128);
        ig_fuzz_assert(lines[i] != NULL);
    }

    lens[0] = ig_fuzz_record(c, lines[0], "{\"event\":{\"action\":"
                             "\"chain_start\"},\"infergate\":{\"pid\":42,",
                             0);

    buf = lines[1];
    memcpy(buf, prefix, sizeof(prefix) - 1);
    p = ig_json_escape(buf + sizeof(prefix) - 1, data, size);
    ig_fuzz_assert((size_t) (p - buf) == sizeof(prefix) - 1 + esc);
    memcpy(p, suffix, sizeof(suffix) - 1);
    p += sizeof(suffix) - 1;
    lens[1] = ig_fuzz_record(c, buf, NULL, (size_t) (p - buf));

    lens[2] = ig_fuzz_record(c, lines[2], "{\"event\":{\"action\":"
                             "\"chain_end\"},\"infergate\":{", 0);

    ig_audit_chain_close(c);

    /* the record: the parser's view, and yajl's */

    reason = NULL;
    ig_fuzz_assert(ig_audit_record_parse(lines[1], lens[1] - 1, &rec,
                                         &reason) == 0);
    ig_fuzz_assert(rec.seq == 1 && rec.pid == 42
                   && rec.action == IG_AUDIT_ACTION_OTHER);

    lines[1][lens[1] - 1] = '\0';                   /* the '\n' */
    ig_fuzz_assert(strlen((char *) lines[1]) == lens[1] - 1);

    tree = yajl_tree_parse((char *) lines[1], err, sizeof(err));
    ig_fuzz_assert(tree != NULL);

    v = yajl_tree_get(tree, url_path, yajl_t_string);
    ig_fuzz_assert(v != NULL);

    if (memchr(data, '\0', size) == NULL && ig_fuzz_utf8(data, size)) {
        n = strlen(YAJL_GET_STRING(v));
        ig_fuzz_assert(n == size && memcmp(YAJL_GET_STRING(v), data, n) == 0);
    }

    yajl_tree_free(tree);
    lines[1][lens[1] - 1] = '\n';

    /* the chain verifies, fed at once and byte by byte */

    for (i = 0; i < 2; i++) {
        ver = ig_audit_verify_new(&ig_fuzz_ring, 0);
        ig_fuzz_assert(ver != NULL);
        ig_audit_verify_file(ver, "sealed.log");

        for (n = 0; n < 3; n++) {
            if (i == 0) {
                ig_fuzz_assert(ig_audit_verify_feed(ver, lines[n], lens[n])
                               == 0);
                continue;
            }

            for (total = 0; total < lens[n]; total++) {
                ig_fuzz_assert(ig_audit_verify_feed(ver, lines[n] + total, 1)
                               == 0);
            }
        }

        ig_audit_verify_finish(ver);
        ig_fuzz_assert(ig_audit_verify_nproblems(ver) == 0);
        ig_fuzz_assert(ig_audit_verify_nverified(ver) == 3);
        ig_fuzz_assert(ig_audit_verify_nchains(ver) == 1);
        ig_audit_verify_free(ver);
    }

    for (i = 0; i < 3; i++) {
        free(lines[i]);
    }
}


/* seals prefix (or, when NULL, the len bytes already in buf) */

static size_t
ig_fuzz_record(ig_audit_chain_t *c, unsigned char *buf, const char *prefix,
    size_t len)
{
    size_t  n;

    if (prefix) {
        len = strlen(prefix);
        memcpy(buf, prefix, len);
    }

    n = ig_audit_seal(c, buf, len);
    ig_fuzz_assert(n > len && n - len <= IG_AUDIT_TRAILER_MAX);
    ig_fuzz_assert(buf[n - 1] == '\n');
    ig_fuzz_assert(memchr(buf, '\n', n - 1) == NULL);

    return n;
}


/* strict UTF-8 (RFC 3629), written apart from ig_json.c's */

static int
ig_fuzz_utf8(const uint8_t *s, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp;

    for (i = 0; i < len; i += n) {
        if (s[i] < 0x80) {
            n = 1;
            continue;
        }

        if ((s[i] & 0xe0) == 0xc0) {
            n = 2;
            cp = s[i] & 0x1f;

        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 3;
            cp = s[i] & 0x0f;

        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 4;
            cp = s[i] & 0x07;

        } else {
            return 0;
        }

        if (len - i < n) {
            return 0;
        }

        for (k = 1; k < n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            cp = cp << 6 | (s[i + k] & 0x3f);
        }

        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && cp < 0x10000) || cp > 0x10ffff
            || (cp >= 0xd800 && cp <= 0xdfff))
        {
            return 0;
        }
    }

    return 1;
}


/* ---- the chain state file ---------------------------------------------- */


/* parse; what parses formats back to the same text and parses again */

static void
ig_fuzz_state(const uint8_t *data, size_t size)
{
    char                     err[128];
    size_t                   n;
    static char              buf[IG_AUDIT_STATE_SIZE_MAX];
    static ig_audit_state_t  st, st2;

    if (ig_audit_state_parse(&st, (const char *) data, size, err,
                             sizeof(err))
        != 0)
    {
        ig_fuzz_assert(err[0] != '\0');
        return;
    }

    n = ig_audit_state_format(&st, buf, sizeof(buf));
    ig_fuzz_assert(n > 0);

    if (size) {
        ig_fuzz_assert(n == size && memcmp(buf, data, n) == 0);
    }

    ig_fuzz_assert(ig_audit_state_parse(&st2, buf, n, err, sizeof(err))
                   == 0);
    ig_fuzz_assert(st2.have_head == st.have_head && st2.nopen == st.nopen);
}
