/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for ig_datetime_check: all three kinds on the input,
 * plus the structural identity
 *   date-time(s) <=> len >= 11, s[10] in "Tt", date(s[0..10]),
 *                    time(s[11..])
 * and a second, naive calendar for full-date.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ig_datetime.h"


static int
fz_reference_date(const char *s, size_t len)
{
    int  i, y, m, d, leap, mdays;

    static const int  days[12] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (len != 10 || s[4] != '-' || s[7] != '-') {
        return 0;
    }

    for (i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) {
            return 0;
        }
    }

    y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10
        + (s[3] - '0');
    m = (s[5] - '0') * 10 + (s[6] - '0');
    d = (s[8] - '0') * 10 + (s[9] - '0');

    if (m < 1 || m > 12) {
        return 0;
    }

    leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    mdays = days[m - 1] + (m == 2 && leap);

    return d >= 1 && d <= mdays;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          dt, d, t, expect;
    char        *s;
    const char  *r;

    /* an exact-size copy so ASan catches reads past the length */
    s = malloc(size ? size : 1);
    if (s == NULL) {
        return 0;
    }

    memcpy(s, data, size);

    dt = ig_datetime_check(s, size, IG_DT_DATE_TIME) == NULL;
    d = ig_datetime_check(s, size, IG_DT_DATE) == NULL;
    t = ig_datetime_check(s, size, IG_DT_TIME) == NULL;

    if (d != fz_reference_date(s, size)) {
        abort();
    }

    expect = size >= 11 && (s[10] == 'T' || s[10] == 't')
             && ig_datetime_check(s, 10, IG_DT_DATE) == NULL
             && ig_datetime_check(s + 11, size - 11, IG_DT_TIME) == NULL;

    if (dt != expect) {
        abort();
    }

    /* a string cannot be two kinds at once */
    if ((dt && d) || (dt && t) || (d && t)) {
        abort();
    }

    r = ig_datetime_check(s, size, (ig_dt_kind_e) 7);
    if (r == NULL) {
        abort();
    }

    free(s);

    return 0;
}
