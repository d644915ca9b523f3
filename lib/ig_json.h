/*
 * Copyright (C) infergate authors
 *
 * JSON string escaping shared by problem+json bodies and (later) audit
 * records.  nginx-free.
 */

#ifndef _IG_JSON_H_INCLUDED_
#define _IG_JSON_H_INCLUDED_


#include <stddef.h>


/*
 * Bytes needed to write s[0..len) as the inside of a JSON string
 * (without the quotes): '"' and '\\' become 2 bytes, control bytes
 * \u00XX (6 bytes, \n \r \t \b \f as 2), invalid UTF-8 bytes become
 * \ufffd (6 bytes) so the output is always valid UTF-8 JSON.
 *
 * "Invalid" is strict UTF-8 (RFC 3629): overlong forms, UTF-16
 * surrogates (ED A0..BF xx), code points above U+10FFFF, stray
 * continuation bytes and truncated sequences; each such byte is
 * replaced on its own and scanning resumes at the next byte.  Hex
 * digits are lower case; '/' and DEL are not escaped.
 */
size_t ig_json_escape_len(const unsigned char *s, size_t len);

/* Writes the escaped form into dst (sized by ig_json_escape_len);
 * returns the end of what was written. */
unsigned char *ig_json_escape(unsigned char *dst, const unsigned char *s,
    size_t len);


#endif /* _IG_JSON_H_INCLUDED_ */
