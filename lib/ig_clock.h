/*
 * Copyright (C) infergate authors
 *
 * The one monotonic clock: CLOCK_MONOTONIC, which every process on the
 * host shares (the ring's submit_ns is stamped by nginx and read by the
 * backend) and which no settimeofday() or NTP step moves.  nginx-free;
 * header-only, so that a CLI or a test need link nothing for it.
 */

#ifndef _IG_CLOCK_H_INCLUDED_
#define _IG_CLOCK_H_INCLUDED_


#include <stdint.h>
#include <time.h>


static inline uint64_t
ig_clock_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}


static inline uint64_t
ig_clock_us(void)
{
    return ig_clock_ns() / 1000;
}


/* seconds, for the CLIs' and benchmarks' elapsed times */

static inline double
ig_clock_s(void)
{
    return (double) ig_clock_ns() / 1e9;
}


#endif /* _IG_CLOCK_H_INCLUDED_ */
