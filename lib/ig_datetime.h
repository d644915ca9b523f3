/*
 * Copyright (C) infergate authors
 *
 * RFC 3339 date-time, full-date and full-time checks (calendar truth,
 * not a regex).  nginx-free: links into unit tests and fuzzers alone.
 */

#ifndef _IG_DATETIME_H_INCLUDED_
#define _IG_DATETIME_H_INCLUDED_


#include <stddef.h>


typedef enum {
    IG_DT_DATE_TIME = 0,     /* full-date "T" full-time   */
    IG_DT_DATE,              /* full-date                 */
    IG_DT_TIME               /* full-time (offset needed) */
} ig_dt_kind_e;


/*
 * Returns NULL when s[0..len) is valid for the kind, otherwise a short
 * static English reason ("day 31 does not exist in April 2024" style is
 * not required: e.g. "day out of range for month", "hour out of range",
 * "leap second only allowed at 23:59:60 UTC", "bad syntax").
 *
 * The reasons are: "bad syntax", "month out of range", "day out of range
 * for month", "hour out of range", "minute out of range", "second out of
 * range", "leap second only allowed at 23:59:60 UTC", "offset hour out
 * of range", "offset minute out of range", "missing time offset".
 * Exactly 4-digit years (0000-9999), 2-digit fields, ASCII digits only,
 * "T"/"t" and "Z"/"z", "." 1*DIGIT fractions of any length, "-00:00"
 * allowed; a leap second must be 23:59:60 once the offset is removed
 * (the leap second table is not consulted).  No allocation, reentrant.
 */
const char *ig_datetime_check(const char *s, size_t len, ig_dt_kind_e kind);


#endif /* _IG_DATETIME_H_INCLUDED_ */
