
/*
 * Copyright (C) infergate authors
 *
 * Blocked Bloom filter (see ig_bloom.h).  Sizing follows Putze, Sanders
 * and Singler: keys spread over blocks as a Poisson process, so a filter
 * sized with the classic formula misses its target; the search below
 * sizes against the blocked rate itself.
 */


#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "ig_bloom.h"


#define IG_BLOOM_WORDS  (IG_BLOOM_BLOCK / 8)
#define IG_BLOOM_CHUNK  65536

static const unsigned char  ig_bloom_magic[8] = "IGBLOOM";


typedef char ig_bloom_hdr_is_64[sizeof(ig_bloom_t) == 64 ? 1 : -1];


static inline uint64_t *
ig_bloom_words(const ig_bloom_t *b)
{
    return (uint64_t *) ((unsigned char *) b + sizeof(ig_bloom_t));
}


static inline uint64_t
ig_bloom_mix(uint64_t z)
{
    /* splitmix64's finalizer */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}


/*
 * The low half of the hash picks the block (multiply-shift, no modulo);
 * the high half gives 9-bit positions, seven per 64-bit word, remixed
 * when k needs more.  Positions are independent, as the sizing assumes.
 */

static inline uint64_t *
ig_bloom_masks(const ig_bloom_t *b, const void *key, size_t len,
    uint64_t m[IG_BLOOM_WORDS])
{
    uint32_t        i, pos;
    uint64_t        w, blk;
    XXH128_hash_t   h;

    h = XXH3_128bits(key, len);
    blk = (uint64_t) (((unsigned __int128) h.low64 * b->nblocks) >> 64);

    memset(m, 0, IG_BLOOM_WORDS * sizeof(uint64_t));

    w = h.high64;

    for (i = 0; i < b->k; i++) {
        if (i && i % 7 == 0) {
            w = ig_bloom_mix(h.high64 + i * 0x9e3779b97f4a7c15ULL);
        }

        pos = (uint32_t) (w & (IG_BLOOM_BLOCK_BITS - 1));
        w >>= 9;
        m[pos >> 6] |= 1ULL << (pos & 63);
    }

    return ig_bloom_words(b) + blk * IG_BLOOM_WORDS;
}


int
ig_bloom_add(ig_bloom_t *b, const void *key, size_t len)
{
    int        fresh;
    uint32_t   j;
    uint64_t   m[IG_BLOOM_WORDS], old, *blk;

    blk = ig_bloom_masks(b, key, len, m);
    fresh = 0;

    for (j = 0; j < IG_BLOOM_WORDS; j++) {
        if (m[j] == 0) {
            continue;
        }

        if ((__atomic_load_n(&blk[j], __ATOMIC_RELAXED) & m[j]) == m[j]) {
            continue;
        }

        old = __atomic_fetch_or(&blk[j], m[j], __ATOMIC_RELAXED);
        if ((old & m[j]) != m[j]) {
            fresh = 1;
        }
    }

    if (fresh) {
        __atomic_fetch_add(&b->count, 1, __ATOMIC_RELAXED);
    }

    return fresh;
}


int
ig_bloom_test(const ig_bloom_t *b, const void *key, size_t len)
{
    uint32_t   j;
    uint64_t   m[IG_BLOOM_WORDS], miss, *blk;

    blk = ig_bloom_masks(b, key, len, m);
    miss = 0;

    for (j = 0; j < IG_BLOOM_WORDS; j++) {
        miss |= m[j] & ~__atomic_load_n(&blk[j], __ATOMIC_RELAXED);
    }

    return miss == 0;
}


/* Sizing */

double
ig_bloom_fpr(uint64_t n, uint64_t nblocks, uint32_t k)
{
    double   lambda, sd, lo, hi, j, logp, q, sum, mass;

    if (nblocks == 0 || k == 0) {
        return 1.0;
    }

    lambda = (double) n / (double) nblocks;

    if (lambda == 0) {
        return 0.0;
    }

    /* a block holding j keys answers yes to an absent key with
     * (1 - (1 - 1/B)^(kj))^k; j is Poisson(lambda) */

    sd = sqrt(lambda);
    lo = floor(lambda - 12 * sd - 20);
    hi = ceil(lambda + 12 * sd + 40);
    if (lo < 0) {
        lo = 0;
    }

    q = log1p(-1.0 / IG_BLOOM_BLOCK_BITS) * k;
    sum = 0;
    mass = 0;

    for (j = lo; j <= hi; j++) {
        logp = -lambda + j * log(lambda) - lgamma(j + 1);
        mass += exp(logp);
        sum += exp(logp + k * log1p(-exp(q * j) + 1e-300));
    }

    /* the tail beyond hi is all but full blocks: count it as 1 */
    if (mass < 1) {
        sum += 1 - mass;
    }

    return sum;
}


int
ig_bloom_geometry(uint64_t capacity, double error, ig_bloom_geom_t *g,
    const char **reason)
{
    uint32_t   k, best_k;
    uint64_t   lo, hi, mid, best;

    if (capacity == 0 || capacity > IG_BLOOM_MAX_CAPACITY) {
        *reason = "capacity must be between 1 and 17179869184";
        return -1;
    }

    if (!(error >= IG_BLOOM_MIN_ERROR && error <= IG_BLOOM_MAX_ERROR)) {
        *reason = "error must be between 0.000001 and 0.5";
        return -1;
    }

    best = 0;
    best_k = 0;

    for (k = 1; k <= IG_BLOOM_MAX_K; k++) {

        /* at most 64 bytes per key; the rate falls as blocks grow */

        lo = 1;
        hi = capacity * 8;

        if (ig_bloom_fpr(capacity, hi, k) > error) {
            continue;
        }

        while (lo < hi) {
            mid = lo + (hi - lo) / 2;

            if (ig_bloom_fpr(capacity, mid, k) <= error) {
                hi = mid;

            } else {
                lo = mid + 1;
            }
        }

        if (best == 0 || lo < best) {
            best = lo;
            best_k = k;
        }
    }

    if (best == 0) {
        *reason = "error is too small for a blocked filter";
        return -1;
    }

    g->capacity = capacity;
    g->error = error;
    g->k = best_k;
    g->nblocks = best;

    return 0;
}


uint64_t
ig_bloom_mem_size(const ig_bloom_geom_t *g)
{
    return sizeof(ig_bloom_t) + g->nblocks * IG_BLOOM_BLOCK;
}


ig_bloom_t *
ig_bloom_init(void *mem, const ig_bloom_geom_t *g)
{
    ig_bloom_t  *b = mem;

    memset(mem, 0, ig_bloom_mem_size(g));

    b->k = g->k;
    b->nblocks = g->nblocks;
    b->capacity = g->capacity;
    b->error = g->error;

    return b;
}


int
ig_bloom_same_geometry(const ig_bloom_t *b, const ig_bloom_geom_t *g)
{
    return b->k == g->k && b->nblocks == g->nblocks;
}


/* Files */

static void
ig_put64(unsigned char *p, uint64_t v)
{
    int  i;

    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char) (v >> (8 * i));
    }
}


static uint64_t
ig_get64(const unsigned char *p)
{
    int       i;
    uint64_t  v = 0;

    for (i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }

    return v;
}


static void
ig_put32(unsigned char *p, uint32_t v)
{
    int  i;

    for (i = 0; i < 4; i++) {
        p[i] = (unsigned char) (v >> (8 * i));
    }
}


static uint32_t
ig_get32(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


static int
ig_bloom_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
ig_bloom_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }

    return -1;
}


static void
ig_bloom_hdr_write(unsigned char *p, const ig_bloom_t *b, uint64_t count,
    uint64_t bits_sum)
{
    uint64_t  e;

    memset(p, 0, IG_BLOOM_HDR_SIZE);
    memcpy(p, ig_bloom_magic, 8);
    ig_put32(p + 8, IG_BLOOM_VERSION);
    ig_put32(p + 12, b->k);
    ig_put64(p + 16, b->nblocks);
    ig_put64(p + 24, b->capacity);
    memcpy(&e, &b->error, 8);
    ig_put64(p + 32, e);
    ig_put64(p + 40, count);
    ig_put64(p + 48, bits_sum);
    ig_put64(p + 56, XXH3_64bits(p, 56));
}


int
ig_bloom_hdr_parse(const unsigned char *buf, size_t len, uint64_t file_size,
    ig_bloom_hdr_t *h, char *err, size_t errlen)
{
    uint64_t  e, want;

    if (len < IG_BLOOM_HDR_SIZE) {
        return ig_bloom_fail(err, errlen, "truncated header (%zu bytes, "
                             "a header is %d)", len, IG_BLOOM_HDR_SIZE);
    }

    if (memcmp(buf, ig_bloom_magic, 8) != 0) {
        return ig_bloom_fail(err, errlen,
                             "not an infergate Bloom filter (bad magic)");
    }

    h->version = ig_get32(buf + 8);

    if (h->version != IG_BLOOM_VERSION) {
        return ig_bloom_fail(err, errlen, "unsupported version %u "
                             "(this build reads version %d)",
                             h->version, IG_BLOOM_VERSION);
    }

    if (ig_get64(buf + 56) != XXH3_64bits(buf, 56)) {
        return ig_bloom_fail(err, errlen, "header checksum mismatch "
                             "(corrupt header)");
    }

    h->k = ig_get32(buf + 12);
    h->nblocks = ig_get64(buf + 16);
    h->capacity = ig_get64(buf + 24);
    e = ig_get64(buf + 32);
    memcpy(&h->error, &e, 8);
    h->count = ig_get64(buf + 40);
    h->bits_sum = ig_get64(buf + 48);

    if (h->k == 0 || h->k > IG_BLOOM_MAX_K) {
        return ig_bloom_fail(err, errlen, "invalid k %u (1..%d)",
                             h->k, IG_BLOOM_MAX_K);
    }

    if (h->nblocks == 0 || h->nblocks > IG_BLOOM_MAX_BLOCKS) {
        return ig_bloom_fail(err, errlen, "invalid block count %llu",
                             (unsigned long long) h->nblocks);
    }

    want = IG_BLOOM_HDR_SIZE + h->nblocks * IG_BLOOM_BLOCK;

    if (file_size != want) {
        return ig_bloom_fail(err, errlen, "%s: %llu bytes, the header's "
                             "%llu blocks need %llu",
                             file_size < want ? "truncated" : "trailing data",
                             (unsigned long long) file_size,
                             (unsigned long long) h->nblocks,
                             (unsigned long long) want);
    }

    return 0;
}


int
ig_bloom_hdr_match(const ig_bloom_hdr_t *h, const ig_bloom_geom_t *g,
    char *err, size_t errlen)
{
    if (h->k == g->k && h->nblocks == g->nblocks) {
        return 0;
    }

    return ig_bloom_fail(err, errlen, "mismatched geometry: the file was "
                         "built for capacity=%llu error=%g (k=%u, %llu "
                         "blocks), the zone is configured for capacity=%llu "
                         "error=%g (k=%u, %llu blocks)",
                         (unsigned long long) h->capacity, h->error, h->k,
                         (unsigned long long) h->nblocks,
                         (unsigned long long) g->capacity, g->error, g->k,
                         (unsigned long long) g->nblocks);
}


/* Copies words in, as the atomic loads of a reader would see them. */

static void
ig_bloom_copy_in(uint64_t *dst, const unsigned char *src, size_t n)
{
    size_t  i;

    for (i = 0; i < n / 8; i++) {
        __atomic_store_n(&dst[i], ig_get64(src + 8 * i), __ATOMIC_RELAXED);
    }
}


int
ig_bloom_load_buf(ig_bloom_t *b, const unsigned char *buf, size_t len,
    ig_bloom_hdr_t *h, char *err, size_t errlen)
{
    ig_bloom_geom_t  g;

    if (ig_bloom_hdr_parse(buf, len, len, h, err, errlen) != 0) {
        return -1;
    }

    if (XXH3_64bits(buf + IG_BLOOM_HDR_SIZE, len - IG_BLOOM_HDR_SIZE)
        != h->bits_sum)
    {
        return ig_bloom_fail(err, errlen, "bit array checksum mismatch "
                             "(corrupt data)");
    }

    if (b == NULL) {
        return 0;
    }

    g.k = b->k;
    g.nblocks = b->nblocks;
    g.capacity = b->capacity;
    g.error = b->error;

    if (ig_bloom_hdr_match(h, &g, err, errlen) != 0) {
        return -1;
    }

    ig_bloom_copy_in(ig_bloom_words(b), buf + IG_BLOOM_HDR_SIZE,
                     len - IG_BLOOM_HDR_SIZE);
    __atomic_store_n(&b->count, h->count, __ATOMIC_RELAXED);
    __atomic_store_n(&b->saved, h->count, __ATOMIC_RELAXED);

    return 0;
}


static ssize_t
ig_read_full(int fd, unsigned char *p, size_t n)
{
    ssize_t  r;
    size_t   got = 0;

    while (got < n) {
        r = read(fd, p + got, n - got);

        if (r < 0 && errno == EINTR) {
            continue;
        }

        if (r <= 0) {
            return r < 0 ? -1 : (ssize_t) got;
        }

        got += (size_t) r;
    }

    return (ssize_t) got;
}


int
ig_bloom_load_fd(ig_bloom_t *b, int fd, const ig_bloom_geom_t *expect,
    ig_bloom_hdr_t *h, char *err, size_t errlen)
{
    ssize_t          n;
    uint64_t         left, off;
    struct stat      st;
    unsigned char    hdr[IG_BLOOM_HDR_SIZE], *chunk;
    ig_bloom_geom_t  g;
    XXH3_state_t     state;

    if (fstat(fd, &st) != 0) {
        return ig_bloom_fail(err, errlen, "stat: %s", strerror(errno));
    }

    n = ig_read_full(fd, hdr, IG_BLOOM_HDR_SIZE);
    if (n < 0) {
        return ig_bloom_fail(err, errlen, "read: %s", strerror(errno));
    }

    if (ig_bloom_hdr_parse(hdr, (size_t) n, (uint64_t) st.st_size, h,
                           err, errlen)
        != 0)
    {
        return -1;
    }

    if (expect && ig_bloom_hdr_match(h, expect, err, errlen) != 0) {
        return -1;
    }

    if (b) {
        g.k = b->k;
        g.nblocks = b->nblocks;
        g.capacity = b->capacity;
        g.error = b->error;

        if (ig_bloom_hdr_match(h, &g, err, errlen) != 0) {
            return -1;
        }
    }

    chunk = malloc(IG_BLOOM_CHUNK);
    if (chunk == NULL) {
        return ig_bloom_fail(err, errlen, "out of memory");
    }

    XXH3_64bits_reset(&state);

    left = h->nblocks * IG_BLOOM_BLOCK;
    off = 0;

    while (left) {
        n = ig_read_full(fd, chunk,
                         left < IG_BLOOM_CHUNK ? left : IG_BLOOM_CHUNK);

        if (n <= 0) {
            free(chunk);
            return ig_bloom_fail(err, errlen, "truncated while reading: %s",
                                 n < 0 ? strerror(errno) : "end of file");
        }

        XXH3_64bits_update(&state, chunk, (size_t) n);

        if (b) {
            ig_bloom_copy_in(ig_bloom_words(b) + off / 8, chunk, (size_t) n);
        }

        off += (uint64_t) n;
        left -= (uint64_t) n;
    }

    free(chunk);

    if (XXH3_64bits_digest(&state) != h->bits_sum) {
        if (b) {
            memset(ig_bloom_words(b), 0, b->nblocks * IG_BLOOM_BLOCK);
        }

        return ig_bloom_fail(err, errlen, "bit array checksum mismatch "
                             "(corrupt data)");
    }

    if (b) {
        __atomic_store_n(&b->count, h->count, __ATOMIC_RELAXED);
        __atomic_store_n(&b->saved, h->count, __ATOMIC_RELAXED);
    }

    return 0;
}


int
ig_bloom_load_path(ig_bloom_t *b, const char *path,
    const ig_bloom_geom_t *expect, ig_bloom_hdr_t *h, char *err,
    size_t errlen)
{
    int  fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return ig_bloom_fail(err, errlen, "cannot open: %s",
                             strerror(errno));
    }

    rc = ig_bloom_load_fd(b, fd, expect, h, err, errlen);
    close(fd);

    return rc;
}


static int
ig_write_full(int fd, const unsigned char *p, size_t n)
{
    ssize_t  w;

    while (n) {
        w = write(fd, p, n);

        if (w < 0 && errno == EINTR) {
            continue;
        }

        if (w <= 0) {
            return -1;
        }

        p += w;
        n -= (size_t) w;
    }

    return 0;
}


int
ig_bloom_save(const ig_bloom_t *b, const char *path, uint64_t *saved,
    char *err, size_t errlen)
{
    int            fd, dfd, e;
    char           tmp[PATH_MAX], dir[PATH_MAX], *slash;
    size_t         n, i;
    uint64_t       left, off, count, *words;
    unsigned char  hdr[IG_BLOOM_HDR_SIZE], *chunk;
    XXH3_state_t   state;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long) getpid())
        >= (int) sizeof(tmp))
    {
        return ig_bloom_fail(err, errlen, "path too long");
    }

    chunk = malloc(IG_BLOOM_CHUNK);
    if (chunk == NULL) {
        return ig_bloom_fail(err, errlen, "out of memory");
    }

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        e = errno;
        free(chunk);
        return ig_bloom_fail(err, errlen, "cannot create \"%s\": %s",
                             tmp, strerror(e));
    }

    /* the count first: adds racing the copy are then in the bits, and
     * the count saved is never ahead of them */

    count = __atomic_load_n(&b->count, __ATOMIC_RELAXED);

    memset(hdr, 0, sizeof(hdr));
    if (ig_write_full(fd, hdr, sizeof(hdr)) != 0) {
        goto failed;
    }

    /* copy a chunk at a time, hash the copy, write the copy: the file is
     * consistent with its checksum however the bits move meanwhile */

    XXH3_64bits_reset(&state);
    words = ig_bloom_words(b);
    left = b->nblocks * IG_BLOOM_BLOCK;
    off = 0;

    while (left) {
        n = left < IG_BLOOM_CHUNK ? (size_t) left : IG_BLOOM_CHUNK;

        for (i = 0; i < n / 8; i++) {
            ig_put64(chunk + 8 * i,
                     __atomic_load_n(&words[off / 8 + i], __ATOMIC_RELAXED));
        }

        XXH3_64bits_update(&state, chunk, n);

        if (ig_write_full(fd, chunk, n) != 0) {
            goto failed;
        }

        off += n;
        left -= n;
    }

    ig_bloom_hdr_write(hdr, b, count, XXH3_64bits_digest(&state));

    if (pwrite(fd, hdr, sizeof(hdr), 0) != (ssize_t) sizeof(hdr)) {
        goto failed;
    }

    if (fsync(fd) != 0) {
        goto failed;
    }

    if (close(fd) != 0) {
        fd = -1;
        goto failed;
    }

    fd = -1;

    if (rename(tmp, path) != 0) {
        goto failed;
    }

    free(chunk);

    /* the rename itself must reach the disk */

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash == dir) {
        slash[1] = '\0';
    } else if (slash) {
        *slash = '\0';
    } else {
        snprintf(dir, sizeof(dir), ".");
    }

    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void) fsync(dfd);
        close(dfd);
    }

    if (saved) {
        *saved = count;
    }

    return 0;

failed:

    e = errno;

    if (fd >= 0) {
        close(fd);
    }

    unlink(tmp);
    free(chunk);

    return ig_bloom_fail(err, errlen, "cannot write \"%s\": %s", tmp,
                         strerror(e));
}
