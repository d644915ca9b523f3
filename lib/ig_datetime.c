/*
 * Copyright (C) infergate authors
 *
 * RFC 3339 section 5.6 date-time, full-date and full-time checks.
 *
 *   date-fullyear   = 4DIGIT
 *   date-month      = 2DIGIT  ; 01-12
 *   date-mday       = 2DIGIT  ; 01-28, 01-29, 01-30, 01-31 based on
 *                             ; month/year
 *   time-hour       = 2DIGIT  ; 00-23
 *   time-minute     = 2DIGIT  ; 00-59
 *   time-second     = 2DIGIT  ; 00-58, 00-59, 00-60 based on leap second
 *                             ; rules
 *   time-secfrac    = "." 1*DIGIT
 *   time-numoffset  = ("+" / "-") time-hour ":" time-minute
 *   time-offset     = "Z" / time-numoffset
 *   partial-time    = time-hour ":" time-minute ":" time-second
 *                     [time-secfrac]
 *   full-date       = date-fullyear "-" date-month "-" date-mday
 *   full-time       = partial-time time-offset
 *   date-time       = full-date "T" full-time
 *
 * "T" and "Z" may be lower case (section 5.6 note).  A leap second is
 * accepted only when the time, converted to UTC with its offset, is
 * 23:59:60; the leap second table itself is not consulted.  Only ASCII
 * digits are digits.
 */


#include "ig_datetime.h"


#define IG_DT_SYNTAX  "bad syntax"


static int ig_dt_digits2(const char *p, unsigned *out);
static const char *ig_dt_date(const char *s, size_t len);
static const char *ig_dt_time(const char *s, size_t len);


static int
ig_dt_digits2(const char *p, unsigned *out)
{
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9') {
        return -1;
    }

    *out = (unsigned) (p[0] - '0') * 10 + (unsigned) (p[1] - '0');

    return 0;
}


/* s[0..len) must be exactly a full-date */

static const char *
ig_dt_date(const char *s, size_t len)
{
    unsigned  yh, yl, year, month, day, mdays;

    static const unsigned char  days[12] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (len != 10 || s[4] != '-' || s[7] != '-') {
        return IG_DT_SYNTAX;
    }

    if (ig_dt_digits2(s, &yh) != 0
        || ig_dt_digits2(s + 2, &yl) != 0
        || ig_dt_digits2(s + 5, &month) != 0
        || ig_dt_digits2(s + 8, &day) != 0)
    {
        return IG_DT_SYNTAX;
    }

    year = yh * 100 + yl;

    if (month < 1 || month > 12) {
        return "month out of range";
    }

    mdays = days[month - 1];

    if (month == 2
        && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
    {
        mdays = 29;
    }

    if (day < 1 || day > mdays) {
        return "day out of range for month";
    }

    return NULL;
}


/* s[0..len) must be exactly a full-time */

static const char *
ig_dt_time(const char *s, size_t len)
{
    int       sign;
    size_t    i;
    unsigned  hour, minute, second, oh, om, utc;

    if (len < 8 || s[2] != ':' || s[5] != ':') {
        return IG_DT_SYNTAX;
    }

    if (ig_dt_digits2(s, &hour) != 0
        || ig_dt_digits2(s + 3, &minute) != 0
        || ig_dt_digits2(s + 6, &second) != 0)
    {
        return IG_DT_SYNTAX;
    }

    i = 8;

    if (i < len && s[i] == '.') {
        i++;

        if (i == len || s[i] < '0' || s[i] > '9') {
            return IG_DT_SYNTAX;
        }

        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    }

    if (i == len) {
        return "missing time offset";
    }

    if (s[i] == 'Z' || s[i] == 'z') {
        if (i + 1 != len) {
            return IG_DT_SYNTAX;
        }

        sign = 0;
        oh = 0;
        om = 0;

    } else if (s[i] == '+' || s[i] == '-') {
        if (len - i != 6 || s[i + 3] != ':'
            || ig_dt_digits2(s + i + 1, &oh) != 0
            || ig_dt_digits2(s + i + 4, &om) != 0)
        {
            return IG_DT_SYNTAX;
        }

        if (oh > 23) {
            return "offset hour out of range";
        }

        if (om > 59) {
            return "offset minute out of range";
        }

        sign = (s[i] == '+') ? 1 : -1;

    } else {
        return IG_DT_SYNTAX;
    }

    if (hour > 23) {
        return "hour out of range";
    }

    if (minute > 59) {
        return "minute out of range";
    }

    if (second > 60) {
        return "second out of range";
    }

    if (second == 60) {

        /* local = UTC + offset, so UTC = local - offset (mod 1 day) */

        utc = hour * 60 + minute + 24 * 60;

        if (sign > 0) {
            utc -= oh * 60 + om;

        } else {
            utc += oh * 60 + om;
        }

        if (utc % (24 * 60) != 23 * 60 + 59) {
            return "leap second only allowed at 23:59:60 UTC";
        }
    }

    return NULL;
}


const char *
ig_datetime_check(const char *s, size_t len, ig_dt_kind_e kind)
{
    const char  *rv;

    if (s == NULL) {
        return IG_DT_SYNTAX;
    }

    switch (kind) {

    case IG_DT_DATE:
        return ig_dt_date(s, len);

    case IG_DT_TIME:
        return ig_dt_time(s, len);

    case IG_DT_DATE_TIME:
        if (len < 11 || (s[10] != 'T' && s[10] != 't')) {
            return IG_DT_SYNTAX;
        }

        rv = ig_dt_date(s, 10);
        if (rv != NULL) {
            return rv;
        }

        return ig_dt_time(s + 11, len - 11);
    }

    return "unknown kind";
}
