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


/*
 * Parses "10r/s", "600r/m", "100r/h" (integer >= 1).  Returns 0, or -1
 * with a static reason in *reason.
 */
int ig_gcra_parse_rate(const char *s, size_t len, uint32_t *quota,
    uint32_t *window_s, const char **reason);

/* Fills the policy from quota per window and burst. */
void ig_gcra_policy_init(ig_gcra_policy_t *p, uint32_t quota,
    uint32_t window_s, uint32_t burst);

/*
 * One decision at now_us for a key whose stored TAT is tat_us (0 when
 * the key is new).  Denied requests consume nothing: the caller stores
 * res->tat_us only when res->allowed.
 */
void ig_gcra_check(const ig_gcra_policy_t *p, uint64_t now_us,
    uint64_t tat_us, ig_gcra_result_t *res);

/* Seconds, rounded up, at least 1 (Retry-After). */
uint64_t ig_gcra_ceil_seconds(uint64_t us);


#endif /* _IG_GCRA_H_INCLUDED_ */
