/*
 * Copyright (C) infergate authors
 *
 * ig_datetime_check: RFC 3339 section 5.6 tables.
 */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ig_datetime.h"


typedef struct {
    const char    *s;
    ig_dt_kind_e   kind;
    int            valid;
    const char    *reason;     /* expected reason when invalid, or NULL */
} dt_case_t;


#define DT   IG_DT_DATE_TIME
#define D    IG_DT_DATE
#define T    IG_DT_TIME


static const dt_case_t  cases[] = {

    /* the examples */
    { "2024-02-29", D, 1, NULL },
    { "2000-02-29", D, 1, NULL },
    { "2023-02-29", D, 0, "day out of range for month" },
    { "2100-02-29", D, 0, "day out of range for month" },
    { "2024-04-31", D, 0, "day out of range for month" },
    { "23:59:60Z", T, 1, NULL },
    { "22:59:60-01:00", T, 1, NULL },
    { "01:29:60+01:30", T, 1, NULL },
    { "23:59:60+01:00", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "12:00:60Z", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "2024-03-25T12:00:00-00:00", DT, 1, NULL },
    { "2024-03-25 12:00:00Z", DT, 0, "bad syntax" },
    { "03/25/2024", DT, 0, "bad syntax" },
    { "2024-03-25", DT, 0, "bad syntax" },
    { "12:00:00", T, 0, "missing time offset" },

    /* calendar */
    { "2024-01-31", D, 1, NULL },
    { "2024-02-30", D, 0, "day out of range for month" },
    { "2024-03-31", D, 1, NULL },
    { "2024-06-30", D, 1, NULL },
    { "2024-06-31", D, 0, "day out of range for month" },
    { "2024-09-31", D, 0, "day out of range for month" },
    { "2024-11-31", D, 0, "day out of range for month" },
    { "2024-12-31", D, 1, NULL },
    { "2024-12-32", D, 0, "day out of range for month" },
    { "2024-13-01", D, 0, "month out of range" },
    { "2024-00-15", D, 0, "month out of range" },
    { "2024-01-00", D, 0, "day out of range for month" },
    { "1900-02-29", D, 0, "day out of range for month" },
    { "1600-02-29", D, 1, NULL },
    { "0400-02-29", D, 1, NULL },
    { "0100-02-29", D, 0, "day out of range for month" },
    { "0000-01-01", D, 1, NULL },
    { "9999-12-31", D, 1, NULL },
    { "0001-01-01", D, 1, NULL },
    { "1582-10-10", D, 1, NULL },

    /* date syntax */
    { "", D, 0, "bad syntax" },
    { "20230328", D, 0, "bad syntax" },
    { "2023-W01", D, 0, "bad syntax" },
    { "2013-350", D, 0, "bad syntax" },
    { "1998-1-20", D, 0, "bad syntax" },
    { "1998-01-1", D, 0, "bad syntax" },
    { "12020-01-01", D, 0, "bad syntax" },
    { "+2020-01-01", D, 0, "bad syntax" },
    { "-2020-01-01", D, 0, "bad syntax" },
    { "20-01-01", D, 0, "bad syntax" },
    { "2020:01:01", D, 0, "bad syntax" },
    { "2020-01-0:", D, 0, "bad syntax" },
    { " 2024-01-15", D, 0, "bad syntax" },
    { "2024-01-15 ", D, 0, "bad syntax" },
    { "2020-01-01Z", D, 0, "bad syntax" },
    { "2020-11-28T23:55:45Z", D, 0, "bad syntax" },
    { "1963-06-1\xe0\xa7\xaa", D, 0, "bad syntax" },           /* Bengali 4 */
    { "\xe0\xa7\xa8" "0-01-01", D, 0, "bad syntax" },          /* Bengali 2 */
    { "2020\xe2\x80\x93" "01\xe2\x80\x93" "01", D, 0, "bad syntax" },

    /* time */
    { "08:30:06Z", T, 1, NULL },
    { "08:30:06z", T, 1, NULL },
    { "23:20:50.52Z", T, 1, NULL },
    { "08:30:06.283185Z", T, 1, NULL },
    { "08:30:06+00:20", T, 1, NULL },
    { "08:30:06-08:00", T, 1, NULL },
    { "12:34:56-00:00", T, 1, NULL },
    { "23:59:60+00:00", T, 1, NULL },
    { "23:29:60+23:30", T, 1, NULL },
    { "15:59:60-08:00", T, 1, NULL },
    { "00:29:60-23:30", T, 1, NULL },
    { "22:59:60Z", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "23:58:60Z", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "23:59:60-01:00", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "23:59:60-00:30", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "23:59:60+00:30", T, 0, "leap second only allowed at 23:59:60 UTC" },
    { "00:00:61Z", T, 0, "second out of range" },
    { "24:00:00Z", T, 0, "hour out of range" },
    { "00:60:00Z", T, 0, "minute out of range" },
    { "01:02:03+24:00", T, 0, "offset hour out of range" },
    { "01:02:03+00:60", T, 0, "offset minute out of range" },
    { "01:02:03Z+00:30", T, 0, "bad syntax" },
    { "008:030:006Z", T, 0, "bad syntax" },
    { "8:3:6Z", T, 0, "bad syntax" },
    { "08:30:06-8:000", T, 0, "bad syntax" },
    { "08:30:06 PST", T, 0, "bad syntax" },
    { "01:01:01,1111", T, 0, "bad syntax" },
    { "12:00:00.52", T, 0, "missing time offset" },
    { "12:00:00.Z", T, 0, "bad syntax" },
    { "08:30:06#00:20", T, 0, "bad syntax" },
    { "ab:cd:ef", T, 0, "bad syntax" },
    { "1\xe0\xa7\xa8:00:00Z", T, 0, "bad syntax" },
    { "2020-11-28T23:55:45Z", T, 0, "bad syntax" },
    { "12:00:00+01", T, 0, "bad syntax" },
    { "12:00:00+0100", T, 0, "bad syntax" },

    /* date-time */
    { "1963-06-19T08:30:06.283185Z", DT, 1, NULL },
    { "1963-06-19T08:30:06Z", DT, 1, NULL },
    { "1937-01-01T12:00:27.87+00:20", DT, 1, NULL },
    { "1990-12-31T15:59:50.123-08:00", DT, 1, NULL },
    { "1998-12-31T23:59:60Z", DT, 1, NULL },
    { "1998-12-31T15:59:60.123-08:00", DT, 1, NULL },
    { "1963-06-19t08:30:06.283185z", DT, 1, NULL },
    { "1985-04-12T00:59:59.999999999999999Z", DT, 1, NULL },
    { "2024-02-29T00:00:00Z", DT, 1, NULL },
    { "2023-02-29T00:00:00Z", DT, 0, "day out of range for month" },
    { "1998-12-31T23:59:61Z", DT, 0, "second out of range" },
    { "1998-12-31T23:58:60Z", DT, 0,
      "leap second only allowed at 23:59:60 UTC" },
    { "1998-12-31T22:59:60Z", DT, 0,
      "leap second only allowed at 23:59:60 UTC" },
    { "1990-02-31T15:59:59.123-08:00", DT, 0, "day out of range for month" },
    { "1990-12-31T15:59:59-24:00", DT, 0, "offset hour out of range" },
    { "1963-06-19T08:30:06.28123+01:00Z", DT, 0, "bad syntax" },
    { "1990-12-31T24:00:00Z", DT, 0, "hour out of range" },
    { "1990-12-31T15:60:00Z", DT, 0, "minute out of range" },
    { "1990-12-31T10:00:00+10:60", DT, 0, "offset minute out of range" },
    { "06/19/1963 08:30:06 PST", DT, 0, "bad syntax" },
    { "2013-350T01:01:01", DT, 0, "bad syntax" },
    { "1963-6-19T08:30:06.283185Z", DT, 0, "bad syntax" },
    { "1963-06-1T08:30:06.283185Z", DT, 0, "bad syntax" },
    { "1963-06-1\xe0\xa7\xaaT00:00:00Z", DT, 0, "bad syntax" },
    { "1963-06-11T0\xe0\xa7\xaa:00:00Z", DT, 0, "bad syntax" },
    { "+11963-06-19T08:30:06.283185Z", DT, 0, "bad syntax" },
    { "1985-04-12T23:20:50+01", DT, 0, "bad syntax" },
    { "2016-12-31T24:59:60+01:00", DT, 0, "hour out of range" },
    { "1985-04-12T23:20:50Z\n", DT, 0, "bad syntax" },
    { "1985-04-12T23:20:50", DT, 0, "missing time offset" },
    { "1985-04-12X23:20:50Z", DT, 0, "bad syntax" },
    { "1985-04-12T", DT, 0, "bad syntax" },
};


static void
test_table(void **state)
{
    size_t       i, failed;
    const char  *r;

    static const char  *kinds[] = { "date-time", "date", "time" };

    (void) state;
    failed = 0;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        r = ig_datetime_check(cases[i].s, strlen(cases[i].s), cases[i].kind);

        if ((r == NULL) != cases[i].valid
            || (r != NULL && cases[i].reason != NULL
                && strcmp(r, cases[i].reason) != 0))
        {
            print_error("%s \"%s\": expected %s, got %s\n",
                        kinds[cases[i].kind], cases[i].s,
                        cases[i].valid ? "valid"
                                       : (cases[i].reason ? cases[i].reason
                                                          : "invalid"),
                        r ? r : "valid");
            failed++;
        }
    }

    assert_int_equal(failed, 0);
}


/* the length is honoured: no reads past it, embedded NUL rejected */

static void
test_lengths(void **state)
{
    char  buf[64];

    (void) state;

    memcpy(buf, "2024-02-29T12:00:00Zgarbage", 27);
    assert_null(ig_datetime_check(buf, 20, IG_DT_DATE_TIME));
    assert_non_null(ig_datetime_check(buf, 21, IG_DT_DATE_TIME));
    assert_non_null(ig_datetime_check(buf, 19, IG_DT_DATE_TIME));
    assert_null(ig_datetime_check(buf, 10, IG_DT_DATE));
    assert_non_null(ig_datetime_check(buf, 9, IG_DT_DATE));
    assert_null(ig_datetime_check(buf + 11, 9, IG_DT_TIME));

    assert_non_null(ig_datetime_check("2020-01-01\0", 11, IG_DT_DATE));
    assert_non_null(ig_datetime_check("12:00:00Z\0", 10, IG_DT_TIME));
    assert_non_null(ig_datetime_check("", 0, IG_DT_TIME));
    assert_non_null(ig_datetime_check("", 0, IG_DT_DATE_TIME));
    assert_non_null(ig_datetime_check(NULL, 0, IG_DT_DATE));
}


/* every leap second offset: valid exactly when it is 23:59 UTC */

static void
test_leap_exhaustive(void **state)
{
    int          h, m, oh, om, sign, utc, valid;
    char         buf[32];
    const char  *r;

    (void) state;

    for (h = 0; h < 24; h++) {
        for (m = 0; m < 60; m++) {
            for (oh = 0; oh < 24; oh++) {
                for (om = 0; om < 60; om += 15) {
                    for (sign = -1; sign <= 1; sign += 2) {
                        snprintf(buf, sizeof(buf), "%02d:%02d:60%c%02d:%02d",
                                 h, m, sign > 0 ? '+' : '-', oh, om);

                        utc = h * 60 + m - sign * (oh * 60 + om);
                        utc = ((utc % 1440) + 1440) % 1440;
                        valid = (utc == 23 * 60 + 59);

                        r = ig_datetime_check(buf, strlen(buf), IG_DT_TIME);
                        assert_int_equal(r == NULL, valid);
                    }
                }
            }
        }
    }
}


/* every day of 400 years against a reference calendar */

static void
test_calendar_exhaustive(void **state)
{
    int          y, mo, d, leap, mdays, valid;
    char         buf[16];
    const char  *r;

    static const int  days[12] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    (void) state;

    for (y = 1800; y < 2200; y++) {
        leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

        for (mo = 0; mo <= 13; mo++) {
            mdays = (mo >= 1 && mo <= 12) ? days[mo - 1] : 0;

            if (mo == 2 && leap) {
                mdays = 29;
            }

            for (d = 0; d <= 32; d++) {
                snprintf(buf, sizeof(buf), "%04d-%02d-%02d", y, mo, d);
                valid = (d >= 1 && d <= mdays);

                r = ig_datetime_check(buf, 10, IG_DT_DATE);
                assert_int_equal(r == NULL, valid);
            }
        }
    }
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_leap_exhaustive),
        cmocka_unit_test(test_calendar_exhaustive),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
