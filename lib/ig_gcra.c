/*
 * Copyright (C) infergate authors
 *
 * GCRA math, see ig_gcra.h.  Everything is unsigned 64-bit microseconds;
 * the decision is taken on differences to now_us, which never overflow.
 */


#include "ig_gcra.h"


#define IG_GCRA_US_PER_S  1000000ULL


int
ig_gcra_parse_rate(const char *s, size_t len, uint32_t *quota,
    uint32_t *window_s, const char **reason)
{
    size_t    i;
    uint32_t  n, w;

    n = 0;

    for (i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        n = n * 10 + (uint32_t) (s[i] - '0');

        if (n > IG_GCRA_MAX_QUOTA) {
            *reason = IG_GCRA_ERR_RANGE;
            return -1;
        }
    }

    if (i == 0) {
        *reason = IG_GCRA_ERR_NUMBER;
        return -1;
    }

    if (n == 0) {
        *reason = IG_GCRA_ERR_RANGE;
        return -1;
    }

    if (len - i != 3 || s[i] != 'r' || s[i + 1] != '/') {
        *reason = IG_GCRA_ERR_UNIT;
        return -1;
    }

    switch (s[i + 2]) {
    case 's':
        w = 1;
        break;
    case 'm':
        w = 60;
        break;
    case 'h':
        w = 3600;
        break;
    default:
        *reason = IG_GCRA_ERR_UNIT;
        return -1;
    }

    *quota = n;
    *window_s = w;

    return 0;
}


void
ig_gcra_policy_init(ig_gcra_policy_t *p, uint32_t quota, uint32_t window_s,
    uint32_t burst)
{
    uint64_t  interval;

    if (quota == 0) {
        quota = 1;
    }

    if (window_s == 0) {
        window_s = 1;
    }

    /* at most 2^32 * 10^6 / 1: fits */
    interval = (uint64_t) window_s * IG_GCRA_US_PER_S / quota;

    if (interval == 0) {
        interval = 1;
    }

    p->interval_us = interval;

    /*
     * Arbitrary uint32_t burst and window_s may overflow the product:
     * saturate so that tolerance + interval still fits.  Within the
     * documented limits (window_s <= 3600, burst <= 10^6) it is < 2^42.
     */
    if (burst != 0 && interval > (UINT64_MAX - interval) / burst) {
        p->tolerance_us = UINT64_MAX - interval;

    } else {
        p->tolerance_us = (uint64_t) burst * interval;
    }

    p->quota = quota;
    p->window_s = window_s;
    p->burst = burst;
}


void
ig_gcra_check(const ig_gcra_policy_t *p, uint64_t now_us, uint64_t tat_us,
    ig_gcra_result_t *res)
{
    uint64_t  interval, tolerance, tat0, ahead, rem;

    interval = p->interval_us ? p->interval_us : 1;
    tolerance = p->tolerance_us;

    tat0 = tat_us > now_us ? tat_us : now_us;

    /* how far the bucket is "in debt": tat0 - now_us, no overflow */
    ahead = tat0 - now_us;

    /*
     * allowed iff new_tat - now <= tolerance + interval, that is
     * (ahead + interval) <= tolerance + interval, that is ahead <= tolerance
     */

    if (ahead <= tolerance) {
        res->allowed = 1;
        res->tat_us = tat0 <= UINT64_MAX - interval ? tat0 + interval
                                                    : UINT64_MAX;
        rem = (tolerance - ahead) / interval;
        res->remaining = rem > UINT32_MAX ? UINT32_MAX : (uint32_t) rem;
        res->retry_after_us = 0;
        /* ahead <= tolerance <= UINT64_MAX - interval */
        res->reset_us = ahead + interval;
        return;
    }

    res->allowed = 0;
    res->tat_us = tat_us;
    res->remaining = 0;
    res->retry_after_us = ahead - tolerance;
    res->reset_us = ahead;
}


uint64_t
ig_gcra_ceil_seconds(uint64_t us)
{
    uint64_t  s;

    s = us / IG_GCRA_US_PER_S + (us % IG_GCRA_US_PER_S != 0);

    return s ? s : 1;
}
