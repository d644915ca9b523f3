/*
 * Copyright (C) infergate authors
 *
 * infergate-keys: mints API keys, hashes existing ones and checks keys
 * files, with the very parser the module uses.
 *
 *   infergate-keys new TENANT [rate=R] [burst=N] [models=a,b]
 *   infergate-keys hash KEY|-
 *   infergate-keys check FILE|-
 *
 * Exit status: 0 fine, 1 bad keys file or runtime failure, 2 usage or
 * bad arguments.
 */


#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "ig_gcra.h"
#include "ig_keys.h"


#define IG_TOOL               "infergate-keys"
#define IG_KEY_BYTES          32
#define IG_KEY_B64_LEN        43      /* base64url of 32 bytes, no '='  */
#define IG_KEY_LEN            (sizeof(IG_KEY_PREFIX) - 1 + IG_KEY_B64_LEN)
#define IG_MSG_LEN            256


typedef struct {
    uint8_t       digest[32];
    size_t        line;
} ig_tool_digest_t;


typedef struct {
    size_t        line;
    size_t        first;
} ig_tool_dup_t;


static void ig_tool_usage(void);
static int ig_tool_new(int argc, char **argv);
static int ig_tool_hash(const char *key);
static int ig_tool_check(const char *file);
static int ig_tool_token(const char *s);
static void ig_tool_base64url(const uint8_t *in, size_t len, char *out);
static int ig_tool_cmp_digest(const void *a, const void *b);
static int ig_tool_cmp_dup(const void *a, const void *b);


int
main(int argc, char **argv)
{
    int  i;

    if (argc < 2) {
        ig_tool_usage();
        return 2;
    }

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            ig_tool_usage();
            return 2;
        }
    }

    if (strcmp(argv[1], "new") == 0 && argc >= 3) {
        return ig_tool_new(argc - 2, argv + 2);
    }

    if (strcmp(argv[1], "hash") == 0 && argc == 3) {
        return ig_tool_hash(argv[2]);
    }

    if (strcmp(argv[1], "check") == 0 && argc == 3) {
        return ig_tool_check(argv[2]);
    }

    ig_tool_usage();

    return 2;
}


static void
ig_tool_usage(void)
{
    fprintf(stderr,
        "usage:\n"
        "  " IG_TOOL " new TENANT [rate=R] [burst=N] [models=a,b]\n"
        "      mint a key; prints \"key: igk_...\" (shown only once) and\n"
        "      \"line: ...\" to append to the keys file\n"
        "  " IG_TOOL " hash KEY\n"
        "      print the SHA-256 hex of KEY (\"-\": read it from stdin,\n"
        "      which keeps it out of the process list)\n"
        "  " IG_TOOL " check FILE\n"
        "      validate a keys file (\"-\": stdin)\n"
        "\n"
        "R is Nr/s, Nr/m or Nr/h (N 1..%d), burst 0..%d, at most %d "
        "models.\n", IG_GCRA_MAX_QUOTA, IG_KEYS_MAX_BURST,
        IG_KEYS_MAX_MODELS);
}


static int
ig_tool_new(int argc, char **argv)
{
    int             i, rc;
    char           *line, *p;
    char            key[IG_KEY_LEN + 1];
    char            hex[IG_KEYS_DIGEST_HEX + 1];
    char            msg[IG_MSG_LEN];
    size_t          size, n;
    uint8_t         raw[IG_KEY_BYTES], digest[32];
    const char     *reason;
    ig_key_entry_t  entry;

    /*
     * Every argument must stay one field of the line: no blanks, no '#',
     * no control bytes.  The parser then checks the rest.
     */

    size = IG_KEYS_DIGEST_HEX + 1;

    for (i = 0; i < argc; i++) {
        if (!ig_tool_token(argv[i])) {
            fprintf(stderr, IG_TOOL ": bad argument \"%s\": empty, or has "
                    "blanks, '#' or control characters\n", argv[i]);
            return 2;
        }

        size += 1 + strlen(argv[i]);
    }

    line = malloc(size);
    if (line == NULL) {
        fprintf(stderr, IG_TOOL ": out of memory\n");
        return 1;
    }

    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        fprintf(stderr, IG_TOOL ": RAND_bytes() failed\n");
        free(line);
        return 1;
    }

    memcpy(key, IG_KEY_PREFIX, sizeof(IG_KEY_PREFIX) - 1);
    ig_tool_base64url(raw, sizeof(raw), key + sizeof(IG_KEY_PREFIX) - 1);
    key[IG_KEY_LEN] = '\0';
    OPENSSL_cleanse(raw, sizeof(raw));

    if (ig_keys_digest_ex((const unsigned char *) key, IG_KEY_LEN, digest)
        != 0)
    {
        fprintf(stderr, IG_TOOL ": SHA-256 failed\n");
        OPENSSL_cleanse(key, sizeof(key));
        free(line);
        return 1;
    }

    ig_keys_digest_hex(digest, hex);

    p = line;
    memcpy(p, hex, IG_KEYS_DIGEST_HEX);
    p += IG_KEYS_DIGEST_HEX;

    for (i = 0; i < argc; i++) {
        n = strlen(argv[i]);
        *p++ = ' ';
        memcpy(p, argv[i], n);
        p += n;
    }

    *p = '\0';

    /* round trip through the module's parser */

    rc = ig_keys_parse_line_msg(line, (size_t) (p - line), &entry, &reason,
                                msg, sizeof(msg));

    if (rc != 1 || !ig_keys_digest_eq(entry.digest, digest)) {
        fprintf(stderr, IG_TOOL ": %s\n", rc == -1 ? msg : "bad line");
        OPENSSL_cleanse(key, sizeof(key));
        free(line);
        return 2;
    }

    rc = 0;

    if (printf("key: %s\nline: %s\n", key, line) < 0 || fflush(stdout) != 0)
    {
        fprintf(stderr, IG_TOOL ": writing to stdout: %s\n", strerror(errno));
        rc = 1;
    }

    OPENSSL_cleanse(key, sizeof(key));
    free(line);

    return rc;
}


static int
ig_tool_hash(const char *key)
{
    int      rc;
    char    *buf;
    char     hex[IG_KEYS_DIGEST_HEX + 1];
    size_t   size;
    ssize_t  n;
    uint8_t  digest[32];

    buf = NULL;

    if (strcmp(key, "-") == 0) {
        size = 0;
        n = getline(&buf, &size, stdin);

        if (n < 0) {
            fprintf(stderr, IG_TOOL ": no key on stdin\n");
            free(buf);
            return 1;
        }

        if (n > 0 && buf[n - 1] == '\n') {
            n--;
        }

        if (n > 0 && buf[n - 1] == '\r') {
            n--;
        }

        rc = ig_keys_digest_ex((unsigned char *) buf, (size_t) n, digest);
        OPENSSL_cleanse(buf, size);
        free(buf);

    } else {
        rc = ig_keys_digest_ex((const unsigned char *) key, strlen(key),
                               digest);
    }

    if (rc != 0) {
        fprintf(stderr, IG_TOOL ": SHA-256 failed\n");
        return 1;
    }

    ig_keys_digest_hex(digest, hex);
    printf("%s\n", hex);

    return 0;
}


static int
ig_tool_check(const char *file)
{
    int                rc, bad;
    FILE              *f;
    char              *buf;
    char               msg[IG_MSG_LEN];
    size_t             size, lineno, nkeys, nalloc, ndups, i, first;
    ssize_t            n;
    const char        *reason;
    ig_tool_dup_t     *dups;
    ig_key_entry_t     entry;
    ig_tool_digest_t  *digests, *d;

    if (strcmp(file, "-") == 0) {
        f = stdin;

    } else {
        f = fopen(file, "r");
        if (f == NULL) {
            fprintf(stderr, IG_TOOL ": %s: %s\n", file, strerror(errno));
            return 1;
        }
    }

    buf = NULL;
    size = 0;
    lineno = 0;
    nkeys = 0;
    nalloc = 0;
    digests = NULL;
    bad = 0;

    for ( ;; ) {
        errno = 0;
        n = getline(&buf, &size, f);

        if (n < 0) {
            if (ferror(f)) {
                fprintf(stderr, IG_TOOL ": %s: %s\n", file,
                        strerror(errno ? errno : EIO));
                goto failed;
            }

            break;
        }

        lineno++;

        if (n > 0 && buf[n - 1] == '\n') {
            n--;
        }

        rc = ig_keys_parse_line_msg(buf, (size_t) n, &entry, &reason,
                                    msg, sizeof(msg));

        if (rc == -1) {
            printf("%s:%zu: %s\n", file, lineno, msg);
            bad = 1;
            continue;
        }

        if (rc == 0) {
            continue;
        }

        if (nkeys == nalloc) {
            nalloc = nalloc ? 2 * nalloc : 64;
            d = realloc(digests, nalloc * sizeof(ig_tool_digest_t));
            if (d == NULL) {
                fprintf(stderr, IG_TOOL ": out of memory\n");
                goto failed;
            }

            digests = d;
        }

        memcpy(digests[nkeys].digest, entry.digest, 32);
        digests[nkeys].line = lineno;
        nkeys++;
    }

    free(buf);
    buf = NULL;

    if (f != stdin) {
        fclose(f);
    }

    f = NULL;

    /* duplicate digests: sort by digest then line, report the later ones */

    if (nkeys > 1) {
        qsort(digests, nkeys, sizeof(ig_tool_digest_t), ig_tool_cmp_digest);

        dups = malloc(nkeys * sizeof(ig_tool_dup_t));
        if (dups == NULL) {
            fprintf(stderr, IG_TOOL ": out of memory\n");
            goto failed;
        }

        ndups = 0;
        first = 0;

        for (i = 1; i < nkeys; i++) {
            if (memcmp(digests[i].digest, digests[first].digest, 32) != 0) {
                first = i;
                continue;
            }

            dups[ndups].line = digests[i].line;
            dups[ndups].first = digests[first].line;
            ndups++;
        }

        qsort(dups, ndups, sizeof(ig_tool_dup_t), ig_tool_cmp_dup);

        for (i = 0; i < ndups; i++) {
            printf("%s:%zu: duplicate key digest (first on line %zu)\n",
                   file, dups[i].line, dups[i].first);
            bad = 1;
        }

        free(dups);
    }

    free(digests);

    if (bad) {
        fflush(stdout);
        return 1;
    }

    printf("%zu keys OK\n", nkeys);

    return fflush(stdout) == 0 ? 0 : 1;

failed:

    free(buf);
    free(digests);

    if (f != NULL && f != stdin) {
        fclose(f);
    }

    return 1;
}


static int
ig_tool_token(const char *s)
{
    unsigned char  c;

    if (*s == '\0') {
        return 0;
    }

    for ( /* void */ ; *s; s++) {
        c = (unsigned char) *s;

        if (c <= 0x20 || c == 0x7f || c == '#') {
            return 0;
        }
    }

    return 1;
}


static void
ig_tool_base64url(const uint8_t *in, size_t len, char *out)
{
    size_t    i;
    uint32_t  v;

    static const char  b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    for (i = 0; i + 3 <= len; i += 3) {
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        *out++ = b64[v >> 18];
        *out++ = b64[(v >> 12) & 0x3f];
        *out++ = b64[(v >> 6) & 0x3f];
        *out++ = b64[v & 0x3f];
    }

    switch (len - i) {
    case 1:
        v = (uint32_t) in[i] << 16;
        *out++ = b64[v >> 18];
        *out++ = b64[(v >> 12) & 0x3f];
        break;
    case 2:
        v = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        *out++ = b64[v >> 18];
        *out++ = b64[(v >> 12) & 0x3f];
        *out++ = b64[(v >> 6) & 0x3f];
        break;
    }
}


static int
ig_tool_cmp_digest(const void *a, const void *b)
{
    int                      rc;
    const ig_tool_digest_t  *x = a, *y = b;

    rc = memcmp(x->digest, y->digest, 32);
    if (rc != 0) {
        return rc;
    }

    return (x->line > y->line) - (x->line < y->line);
}


static int
ig_tool_cmp_dup(const void *a, const void *b)
{
    const ig_tool_dup_t  *x = a, *y = b;

    return (x->line > y->line) - (x->line < y->line);
}
