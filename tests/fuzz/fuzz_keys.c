/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the keys file line parser (and the rate parser
 * it calls, and the GCRA check it feeds).  Checks the parser's
 * invariants, not just the absence of crashes.
 *
 * clang -g -O1 -fsanitize=fuzzer,address,undefined -Ilib \
 *     tests/fuzz/fuzz_keys.c lib/ig_keys.c lib/ig_gcra.c -lcrypto
 * ./a.out -max_total_time=60 tests/fuzz/corpus/keys
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ig_gcra.h"
#include "ig_keys.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
static int ig_fuzz_name(ig_str_t s, const char *line, size_t len);
static void ig_fuzz_gcra(const ig_key_entry_t *e);


#define ig_fuzz_assert(c)                                                     \
    do {                                                                      \
        if (!(c)) {                                                           \
            abort();                                                          \
        }                                                                     \
    } while (0)


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int              rc, rc2, rc3;
    char            *line, msg[96];
    size_t           i, blen;
    uint32_t         quota, window;
    const char      *reason, *reason2;
    ig_key_entry_t   e, e2, e3;

    /* an exact-size heap copy, so ASan catches any read past len */

    line = malloc(size ? size : 1);
    if (line == NULL) {
        return 0;
    }

    memcpy(line, data, size);

    reason = NULL;
    memset(&e, 0xab, sizeof(e));
    memcpy(&e2, &e, sizeof(e));

    rc = ig_keys_parse_line(line, size, &e, &reason);

    ig_fuzz_assert(rc == -1 || rc == 0 || rc == 1);

    if (rc == -1) {
        ig_fuzz_assert(reason != NULL && reason[0] != '\0');
    }

    if (rc != 1) {
        ig_fuzz_assert(memcmp(&e, &e2, sizeof(e)) == 0);
    }

    if (rc == 1) {
        ig_fuzz_assert(ig_fuzz_name(e.tenant, line, size));
        ig_fuzz_assert(e.nmodels <= IG_KEYS_MAX_MODELS);

        for (i = 0; i < e.nmodels; i++) {
            ig_fuzz_assert(ig_fuzz_name(e.models[i], line, size));
        }

        ig_fuzz_assert(e.burst >= -1 && e.burst <= IG_KEYS_MAX_BURST);

        if (e.quota) {
            ig_fuzz_assert(e.quota <= IG_GCRA_MAX_QUOTA);
            ig_fuzz_assert(e.window_s == 1 || e.window_s == 60
                           || e.window_s == 3600);

        } else {
            ig_fuzz_assert(e.window_s == 0);
        }

        for (i = 0; i < 32 && e.digest[i] == 0; i++) { /* void */ }
        ig_fuzz_assert(i < 32);

        ig_fuzz_gcra(&e);
    }

    /* the message variant agrees, whatever the buffer size */

    blen = size % sizeof(msg);
    memset(msg, 'Z', sizeof(msg));
    reason2 = NULL;

    rc2 = ig_keys_parse_line_msg(line, size, &e3, &reason2,
                                 blen ? msg : NULL, blen);
    ig_fuzz_assert(rc2 == rc);

    if (rc == -1) {
        ig_fuzz_assert(reason2 == reason);

        if (blen) {
            ig_fuzz_assert(memchr(msg, '\0', blen) != NULL);

            for (i = 0; msg[i]; i++) {
                ig_fuzz_assert(msg[i] >= 0x20 && msg[i] < 0x7f);
            }
        }
    }

    for (i = blen; i < sizeof(msg); i++) {
        ig_fuzz_assert(msg[i] == 'Z');
    }

    /* the trailing '\r' is ignored */

    if (size && line[size - 1] != '\r') {
        char  *cr;

        cr = malloc(size + 1);
        if (cr != NULL) {
            memcpy(cr, line, size);
            cr[size] = '\r';
            rc3 = ig_keys_parse_line(cr, size + 1, &e3, &reason2);
            ig_fuzz_assert(rc3 == rc);
            free(cr);
        }
    }

    /* the rate parser on its own */

    if (ig_gcra_parse_rate(line, size, &quota, &window, &reason) == 0) {
        ig_fuzz_assert(quota >= 1 && quota <= IG_GCRA_MAX_QUOTA);
        ig_fuzz_assert(window == 1 || window == 60 || window == 3600);

    } else {
        ig_fuzz_assert(reason != NULL);
    }

    free(line);

    return 0;
}


static int
ig_fuzz_name(ig_str_t s, const char *line, size_t len)
{
    size_t  i;
    char    c;

    if (s.len == 0 || s.len > IG_KEYS_MAX_NAME) {
        return 0;
    }

    if (s.data < line || s.data + s.len > line + len) {
        return 0;
    }

    for (i = 0; i < s.len; i++) {
        c = s.data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static void
ig_fuzz_gcra(const ig_key_entry_t *e)
{
    int               i;
    uint64_t          now, tat;
    ig_gcra_policy_t  p;
    ig_gcra_result_t  r;

    if (e->quota == 0) {
        return;
    }

    ig_gcra_policy_init(&p, e->quota, e->window_s,
                        e->burst < 0 ? 0 : (uint32_t) e->burst);

    ig_fuzz_assert(p.interval_us >= 1);

    /* digest bytes as clock values, including huge ones */

    memcpy(&now, e->digest, 8);
    memcpy(&tat, e->digest + 8, 8);

    for (i = 0; i < 3; i++) {
        ig_gcra_check(&p, now, tat, &r);

        if (r.allowed) {
            ig_fuzz_assert(r.tat_us >= now && r.tat_us >= tat);
            ig_fuzz_assert(r.remaining <= p.burst);
            ig_fuzz_assert(r.retry_after_us == 0);
            tat = r.tat_us;

        } else {
            ig_fuzz_assert(r.tat_us == tat && r.remaining == 0);
            ig_fuzz_assert(r.retry_after_us > 0);
            ig_fuzz_assert(r.reset_us == tat - now);
        }

        ig_fuzz_assert(ig_gcra_ceil_seconds(r.retry_after_us) >= 1);
    }
}
