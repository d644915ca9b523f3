
/*
 * Copyright (C) infergate authors
 */

/*
 * The monotonic clock, in nanoseconds.  The gateway stamps a ring slot's
 * submit_ns with it and the backend measures queueing against it
 * (ig_ring.h): both sides must read the same clock, so both take it from
 * here.
 */

#ifndef _IG_CLOCK_H_INCLUDED_
#define _IG_CLOCK_H_INCLUDED_

#include <stdint.h>
#include <time.h>


static inline uint64_t
ig_clock_ns(void)
{
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}

#endif /* _IG_CLOCK_H_INCLUDED_ */
