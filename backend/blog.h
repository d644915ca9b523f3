
/*
 * Copyright (C) infergate authors
 */

/*
 * The daemon's structured log: one logfmt line per event on stderr,
 *
 *     ts=2026-01-01T00:00:00.123Z level=info event=model_loaded name=m ...
 *
 * written with one write(2) so lines from threads never interleave.
 */

#ifndef _IG_BLOG_H_INCLUDED_
#define _IG_BLOG_H_INCLUDED_

#include <stddef.h>


/* fmt carries the event's own key=value fields (may be "") */
void ig_blog(const char *level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* s as a logfmt value: quoted and escaped; returns buf */
const char *ig_blogq(char *buf, size_t len, const char *s);

#endif /* _IG_BLOG_H_INCLUDED_ */
