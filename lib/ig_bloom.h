
/*
 * Copyright (C) infergate authors
 *
 * Blocked Bloom filter: every key sets k bits inside one 64-byte block
 * (one cache line), chosen from one XXH3-128 of the key.  Reads are plain
 * relaxed loads and adds are atomic ORs on 64-bit words, so one filter in
 * shared memory serves many processes without a lock.  nginx-free.
 *
 * File format (little-endian), IG_BLOOM_HDR_SIZE bytes of header, then
 * the blocks:
 *
 *     0  magic "IGBLOOM\0"      32  error (IEEE double)
 *     8  version (u32) = 1      40  count (u64)
 *    12  k (u32)                48  XXH3-64 of the bit array
 *    16  blocks (u64)           56  XXH3-64 of bytes 0..55
 *    24  capacity (u64)
 */


#ifndef _IG_BLOOM_H_INCLUDED_
#define _IG_BLOOM_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define IG_BLOOM_VERSION        1
#define IG_BLOOM_HDR_SIZE       64
#define IG_BLOOM_BLOCK          64          /* bytes: one cache line     */
#define IG_BLOOM_BLOCK_BITS     512
#define IG_BLOOM_MAX_K          32
#define IG_BLOOM_MAX_CAPACITY   (1ULL << 34)
#define IG_BLOOM_MIN_ERROR      1e-6
#define IG_BLOOM_MAX_ERROR      0.5
#define IG_BLOOM_MAX_BLOCKS     (1ULL << 36) /* 4 TiB: a sanity bound      */


typedef struct {
    uint64_t   capacity;
    double     error;
    uint32_t   k;
    uint64_t   nblocks;
} ig_bloom_geom_t;


/* In memory: this 64-byte header, then the blocks, 64-byte aligned. */
typedef struct {
    uint32_t   k;
    uint32_t   reserved;
    uint64_t   nblocks;
    uint64_t   capacity;
    double     error;
    uint64_t   count;        /* adds that set a new bit (atomic)        */
    uint64_t   saved;        /* count at the last save (atomic)         */
    uint64_t   lock;         /* the saver's pid, 0 when free (atomic)   */
    uint64_t   saved_at;     /* seconds, time of the last save (atomic) */
} ig_bloom_t;


/* Geometry for capacity/error: the smallest filter whose blocked FPR,
 * computed with the block load's Poisson spread, stays within error. */
int ig_bloom_geometry(uint64_t capacity, double error, ig_bloom_geom_t *g,
    const char **reason);

/* The expected false-positive rate of n keys in nblocks with k bits. */
double ig_bloom_fpr(uint64_t n, uint64_t nblocks, uint32_t k);

/* Bytes ig_bloom_init() needs: header plus blocks. */
uint64_t ig_bloom_mem_size(const ig_bloom_geom_t *g);

/* mem: ig_bloom_mem_size() bytes, 64-byte aligned; zeroes the blocks. */
ig_bloom_t *ig_bloom_init(void *mem, const ig_bloom_geom_t *g);

/* 1 when a bit was new (the key was surely absent), 0 when all were set. */
int ig_bloom_add(ig_bloom_t *b, const void *key, size_t len);

/* 1: maybe present; 0: surely absent. */
int ig_bloom_test(const ig_bloom_t *b, const void *key, size_t len);

int ig_bloom_same_geometry(const ig_bloom_t *b, const ig_bloom_geom_t *g);


/* Files.  Each function returns 0, or -1 with a message in err. */

typedef struct {
    uint32_t   version;
    uint32_t   k;
    uint64_t   nblocks;
    uint64_t   capacity;
    double     error;
    uint64_t   count;
    uint64_t   bits_sum;
} ig_bloom_hdr_t;

/* Header only: magic, version, header checksum, geometry bounds, and the
 * file size it implies against file_size. */
int ig_bloom_hdr_parse(const unsigned char *buf, size_t len,
    uint64_t file_size, ig_bloom_hdr_t *h, char *err, size_t errlen);

/* A whole file in memory; into b (same geometry) when b is not NULL. */
int ig_bloom_load_buf(ig_bloom_t *b, const unsigned char *buf, size_t len,
    ig_bloom_hdr_t *h, char *err, size_t errlen);

/* From an open file, streaming; into b when b is not NULL (geometry must
 * match b), else only checked.  expect, when not NULL, must match too. */
int ig_bloom_load_fd(ig_bloom_t *b, int fd, const ig_bloom_geom_t *expect,
    ig_bloom_hdr_t *h, char *err, size_t errlen);

int ig_bloom_load_path(ig_bloom_t *b, const char *path,
    const ig_bloom_geom_t *expect, ig_bloom_hdr_t *h, char *err,
    size_t errlen);

/* Snapshot b into path atomically: path.tmp.<pid>, fsync, rename, fsync
 * of the directory.  *count receives the count that was saved. */
int ig_bloom_save(const ig_bloom_t *b, const char *path, uint64_t *count,
    char *err, size_t errlen);

/* The geometry a file header describes must equal g. */
int ig_bloom_hdr_match(const ig_bloom_hdr_t *h, const ig_bloom_geom_t *g,
    char *err, size_t errlen);


#endif /* _IG_BLOOM_H_INCLUDED_ */
