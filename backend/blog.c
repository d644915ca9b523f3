
/*
 * Copyright (C) infergate authors
 *
 * Structured logs of the daemon (logfmt on stderr).
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "blog.h"


void
ig_blog(const char *level, const char *event, const char *fmt, ...)
{
    int              n, m;
    char             line[2048];
    va_list          ap;
    struct tm        tm;
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    n = snprintf(line, sizeof(line),
                 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level, event);

    if (fmt[0] != '\0' && n < (int) sizeof(line) - 2) {
        line[n++] = ' ';
        va_start(ap, fmt);
        m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
        va_end(ap);

        if (m > 0) {
            n += m;
        }
    }

    if (n > (int) sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }

    line[n++] = '\n';

    /* one write: lines from threads never interleave */
    if (write(STDERR_FILENO, line, n) < 0) {
        /* nowhere left to say it */
    }
}


const char *
ig_blogq(char *buf, size_t len, const char *s)
{
    size_t  i;

    if (len < 3) {
        return "\"\"";
    }

    i = 0;
    buf[i++] = '"';

    for ( /* void */ ; *s && i + 3 < len; s++) {
        unsigned char  c = (unsigned char) *s;

        if (c == '"' || c == '\\') {
            buf[i++] = '\\';
            buf[i++] = c;

        } else if (c < 0x20 || c == 0x7f) {
            buf[i++] = ' ';

        } else {
            buf[i++] = c;
        }
    }

    buf[i++] = '"';
    buf[i] = '\0';

    return buf;
}
