/*
 * Copyright (C) infergate authors
 *
 * GCRA (generic cell rate algorithm) math.  One number per key, the
 * theoretical arrival time (TAT).  nginx-free; the same math runs in
 * shared memory now and in a Redis script later.
 */

#ifndef _IG_GCRA_H_INCLUDED_
#define _IG_GCRA_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


typedef struct {
    uint64_t  interval_us;    /* emission interval T = 1 s / rate       */
    uint64_t  tolerance_us;   /* burst * T                              */
    uint32_t  quota;          /* requests per window, for the headers    */
    uint32_t  window_s;       /* 1, 60 or 3600                          */
    uint32_t  burst;
} ig_gcra_policy_t;


typedef struct {
    int       allowed;
    uint64_t  tat_us;         /* new TAT to store when allowed          */
    uint32_t  remaining;      /* requests admissible at once after this */
    uint64_t  retry_after_us; /* denied: wait until one is admitted     */
    uint64_t  reset_us;       /* until the bucket is full again         */
} ig_gcra_result_t;


#define IG_GCRA_MAX_QUOTA     1000000

/*
 * The static reasons ig_gcra_parse_rate() returns (the very same
 * strings, so that callers can prefix them at compile time).
 */
#define IG_GCRA_ERR_NUMBER                                                    \
    "expected a number of requests, as in \"10r/s\""
#define IG_GCRA_ERR_RANGE                                                     \
    "number of requests must be from 1 to 1000000"
#define IG_GCRA_ERR_UNIT      "expected unit r/s, r/m or r/h"


/*
 * Parses "10r/s", "600r/m", "100r/h": decimal digits only (no sign, no
 * spaces; leading zeros allowed), 1..IG_GCRA_MAX_QUOTA, then exactly
 * one of the three units.  The string need not be NUL-terminated.
 * Returns 0, or -1 with one of the IG_GCRA_ERR_* reasons in *reason
 * (*quota and *window_s are then left alone).
 */
int ig_gcra_parse_rate(const char *s, size_t len, uint32_t *quota,
    uint32_t *window_s, const char **reason);

/*
 * Fills the policy from quota per window and burst:
 * interval_us = window_s * 1000000 / quota (integer, at least 1) and
 * tolerance_us = burst * interval_us.  A quota or window_s of 0 (not
 * something ig_gcra_parse_rate() returns) is treated as 1.
 */
void ig_gcra_policy_init(ig_gcra_policy_t *p, uint32_t quota,
    uint32_t window_s, uint32_t burst);

/*
 * One decision at now_us for a key whose stored TAT is tat_us (0 when
 * the key is new).  Denied requests consume nothing: the caller stores
 * res->tat_us only when res->allowed.
 *
 * With tat0 = max(tat_us, now_us), the request is allowed iff
 * tat0 - now_us <= tolerance_us.  Allowed: tat_us = tat0 + interval_us
 * (saturated at UINT64_MAX), retry_after_us = 0, reset_us = new TAT -
 * now_us, remaining = (tolerance_us - (tat0 - now_us)) / interval_us.
 * Denied: tat_us = the tat_us passed in, remaining = 0, retry_after_us
 * = tat0 - now_us - tolerance_us (> 0), reset_us = tat0 - now_us.
 * No intermediate value overflows, whatever now_us and tat_us are.
 */
void ig_gcra_check(const ig_gcra_policy_t *p, uint64_t now_us,
    uint64_t tat_us, ig_gcra_result_t *res);

/* Seconds, rounded up, at least 1 (Retry-After). */
uint64_t ig_gcra_ceil_seconds(uint64_t us);


#endif /* _IG_GCRA_H_INCLUDED_ */
