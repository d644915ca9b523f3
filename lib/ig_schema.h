/*
 * Copyright (C) infergate authors
 *
 * A JSON Schema (2020-12) subset compiled once at configuration time and
 * a streaming validator fed buffer by buffer through yajl.  nginx-free:
 * unit tests and fuzzers link it alone.
 *
 * Supported keywords: type (string or list), required, properties,
 * additionalProperties (boolean), enum, const, minimum, maximum,
 * exclusiveMinimum, exclusiveMaximum, minLength, maxLength (characters,
 * i.e. Unicode code points), pattern (PCRE2, unanchored search as
 * ECMA-262 requires), items (single schema), minItems, maxItems,
 * format: date-time, date, time, uuid (asserted).  Boolean schemas
 * (true/false) are accepted anywhere a schema is.  Annotations
 * $schema, $id, $comment, title, description, default, examples,
 * deprecated, readOnly, writeOnly are accepted and ignored.  Any other
 * keyword is a compile error naming its JSON pointer.
 */

#ifndef _IG_SCHEMA_H_INCLUDED_
#define _IG_SCHEMA_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_common.h>


#define IG_SCHEMA_MAX_ERRORS   32


typedef struct ig_schema_s     ig_schema_t;
typedef struct ig_validator_s  ig_validator_t;


/*
 * Compiles schema text.  On failure returns NULL and writes into err
 * (always NUL-terminated, truncated to errlen) a message of the form
 * "<json pointer>: <reason>", e.g.
 *   "/properties/age/minimum: expected a number"
 *   "/properties/x: unknown keyword \"patternProperties\""
 *   "/: invalid JSON at byte 17: ..."
 * The root is written as "(root)" so messages stay readable.
 * Uses malloc; free with ig_schema_free().
 */
ig_schema_t *ig_schema_compile(const unsigned char *text, size_t len,
    char *err, size_t errlen);
void ig_schema_free(ig_schema_t *schema);


/* Called for each member of a top-level object whose value is a
 * scalar: name is the unescaped member name; value is the unescaped
 * string for strings, the literal text for numbers, "true", "false",
 * "null".  Pointers are only valid during the call. */
typedef void (*ig_member_pt)(void *data, const unsigned char *name,
    size_t name_len, const unsigned char *value, size_t value_len);


typedef enum {
    IG_VALID_OK = 0,          /* document complete and valid           */
    IG_VALID_INVALID,         /* well-formed JSON, schema violations   */
    IG_VALID_SYNTAX,          /* malformed JSON (error 0 says where)    */
    IG_VALID_DEPTH,           /* nesting deeper than max_depth          */
    IG_VALID_NOMEM
} ig_valid_rc_e;


typedef struct {
    const char  *pointer;     /* JSON pointer of the instance, "" = root,
                                 RFC 6901 escaped (~0, ~1)              */
    const char  *detail;      /* English, e.g. "expected an RFC 3339
                                 date-time, got \"03/25/2024\"",
                                 "required property \"user_id\" is
                                 missing", "expected integer, got
                                 string", "must be >= 0, got -3",
                                 "must be one of the enumerated values"  */
} ig_verror_t;


/*
 * Creates a validator for one document.  Every allocation (the
 * validator, yajl's buffers, error strings, captured member copies)
 * goes through af so nginx can hand it its request pool (free may be a
 * no-op).  max_depth bounds array/object nesting (root value = depth 1
 * for a container).  on_member may be NULL.
 */
ig_validator_t *ig_validator_create(const ig_schema_t *schema,
    const yajl_alloc_funcs *af, unsigned max_depth,
    ig_member_pt on_member, void *data);

/* Feeds the next piece of the body.  Returns IG_VALID_OK while more may
 * follow (schema violations are collected, not returned, so that every
 * bad field is named), or IG_VALID_SYNTAX / IG_VALID_DEPTH /
 * IG_VALID_NOMEM once the document cannot go on; later calls return the
 * same code. */
ig_valid_rc_e ig_validator_feed(ig_validator_t *v, const unsigned char *buf,
    size_t len);

/* Ends the document: returns IG_VALID_OK, IG_VALID_INVALID, or a
 * terminal code.  An empty document is IG_VALID_SYNTAX. */
ig_valid_rc_e ig_validator_finish(ig_validator_t *v);

/* Errors collected so far (at most IG_SCHEMA_MAX_ERRORS; *truncated set
 * to 1 when more were found).  For IG_VALID_SYNTAX there is exactly one,
 * pointer "" and detail "malformed JSON at byte N: <yajl reason>"; for
 * IG_VALID_DEPTH one with detail "nesting deeper than N levels". */
size_t ig_validator_errors(ig_validator_t *v, const ig_verror_t **errors,
    int *truncated);

/* Releases yajl's handle; memory from af is freed through af->free. */
void ig_validator_destroy(ig_validator_t *v);


#endif /* _IG_SCHEMA_H_INCLUDED_ */
