/*
 * Copyright (C) infergate authors
 *
 * A JSON Schema (2020-12) subset compiled once at configuration time and
 * a streaming validator fed buffer by buffer through ig_jsonlex (a
 * resumable JSON parser; yajl parses schemas only).  nginx-free:
 * unit tests and fuzzers link it alone.
 *
 * Supported keywords: type (string or list), required, properties,
 * additionalProperties (boolean, or a schema), enum, const, minimum,
 * maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength
 * (characters, i.e. Unicode code points), pattern (PCRE2, unanchored
 * search as ECMA-262 requires), items (single schema), minItems,
 * maxItems, format: date-time, date, time, uuid (asserted).  Boolean
 * schemas (true/false) are accepted anywhere a schema is.  Annotations
 * $schema, $id, $comment, title, description, default, examples,
 * deprecated, readOnly, writeOnly are accepted and ignored.  Any other
 * keyword is a compile error naming its JSON pointer.
 *
 * Semantics (2020-12): "integer" accepts numbers with a zero fraction
 * (1.0, 1e2); numbers compare by exact decimal value at any size or
 * precision (no rounding through double: 9007199254740993 > 2^53 and
 * 0.30000000000000001 > 0.3); enum/const compare structurally (member
 * order irrelevant, 1 == 1.0, false != 0).  Keywords apply only to
 * their instance type (minimum to numbers, pattern/format/minLength to
 * strings, items/minItems to arrays, required/properties to objects).
 * Patterns are compiled with PCRE2_UTF|PCRE2_DOLLAR_ENDONLY|ALT_BSUX
 * (so "$" and "\uXXXX" behave as in ECMA-262), JIT when available, a
 * match limit, and the ECMA-262 property names PCRE2 10.42 lacks
 * (\p{Letter}, \p{gc=Lu}, \p{Script=Greek}, ...) rewritten.  Schema
 * text: duplicate keywords, duplicate property names and duplicate
 * members inside enum/const values are compile errors; nesting is
 * limited to 128 levels.
 *
 * Instances: a member name repeated in one object, at any depth, is a
 * violation whatever the schema (I-JSON, RFC 7493 2.3), reported at the
 * pointer of the repetition as "duplicate member name \"a\"".  Names
 * are compared byte for byte after unescaping ("a" and "\u0061" are the
 * same name, "a" and "A" are not).  The names of the open objects are
 * kept (compared one by one up to 8 members, then through a hash table
 * keyed with a secret drawn at compile time), so the cost is linear in
 * the body, and the memory proportional to those names: their bytes
 * plus 16 bytes a name and 4 to 8 a bucket, each array at most twice
 * that as it grows by doubling.
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
 *   "/pattern: invalid regular expression at offset 2: missing closing
 *    parenthesis"
 *   "(root): invalid JSON at byte 17: parse error: premature EOF"
 * The root is written as "(root)" so messages stay readable; control
 * characters in the pointer are shown JSON-escaped.  The text need not
 * be NUL-terminated.  err may be NULL.  Uses malloc; free with
 * ig_schema_free().  A compiled schema is immutable and may be shared
 * by any number of validators (and threads).
 */
ig_schema_t *ig_schema_compile(const unsigned char *text, size_t len,
    char *err, size_t errlen);
void ig_schema_free(ig_schema_t *schema);


/* Called for each member of a top-level object whose value is a
 * scalar: name is the unescaped member name; value is the unescaped
 * string for strings, the literal text for numbers, "true", "false",
 * "null".  Pointers are only valid during the call.  A repeated name is
 * reported again, but then the document is not IG_VALID_OK. */
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
                                 RFC 6901 escaped (~0, ~1); the raw
                                 member names otherwise (so JSON-escape
                                 it for output; a name holding U+0000
                                 ends the C string there); longer than
                                 1024 bytes: cut, with "..." appended  */
    const char  *detail;      /* English, e.g. "expected an RFC 3339
                                 date-time, got \"03/25/2024\"",
                                 "required property \"user_id\" is
                                 missing", "expected integer, got
                                 string", "must be >= 0, got -3",
                                 "duplicate member name \"id\"",
                                 "must be one of the enumerated values";
                                 quoted values are JSON-escaped and cut
                                 to 64 bytes with "..."                 */
} ig_verror_t;


/*
 * Creates a validator for one document.  Every allocation (the
 * validator, the parser's scratch buffer, error strings, captured member
 * copies) goes through af (the yajl_alloc_funcs layout) so nginx can
 * hand it its request pool (free may be a no-op).  af NULL means
 * malloc/realloc/free.  af->malloc must return memory aligned for any
 * type (ngx_palloc, not ngx_pnalloc); af->realloc(ctx, p, n) must keep
 * the old contents, so a pool version has to remember block sizes.
 * max_depth bounds array/object nesting (root value = depth 1 for a
 * container); the frame stack for it is allocated here (about 120 bytes
 * a level), so no allocation happens per event, except for the pointer
 * buffer past 256 bytes, a top-level member name past 64 bytes, the
 * member names of the open objects past 512 bytes or 32 names and their
 * hash table (objects of more than 8 members), an error record, and
 * enum/const captures of containers; nothing is allocated per object.
 * on_member may be NULL.  Returns NULL when schema is NULL or memory
 * runs out.
 */
ig_validator_t *ig_validator_create(const ig_schema_t *schema,
    const yajl_alloc_funcs *af, unsigned max_depth,
    ig_member_pt on_member, void *data);

/* A scalar found at a watched JSON pointer: index is the pointer's
 * position in the list given to ig_validator_watch(); the value is in
 * the ig_member_pt form.  Pointers are only valid during the call. */
typedef void (*ig_value_pt)(void *data, size_t index,
    const unsigned char *value, size_t value_len);

typedef struct {
    const unsigned char  *pointer;  /* RFC 6901, e.g. "/parameters/user_id",
                                       "/inputs/0/name"; not "" */
    size_t                len;
} ig_watch_t;

/*
 * Watches n JSON pointers (the array must outlive the validator): each
 * time a scalar (string, number, true, false, null) sits exactly at one
 * of them, on_value is called with its index and the data given at
 * create.  An object or array there is not reported.  Call before the
 * first ig_validator_feed().  The cost is a comparison against the open
 * containers per scalar whose depth equals a pointer's.
 */
void ig_validator_watch(ig_validator_t *v, const ig_watch_t *watch,
    size_t n, ig_value_pt on_value);

/* Feeds the next piece of the body.  Returns IG_VALID_OK while more may
 * follow (schema violations are collected, not returned, so that every
 * bad field is named), or IG_VALID_SYNTAX / IG_VALID_DEPTH /
 * IG_VALID_NOMEM once the document cannot go on; later calls return the
 * same code.  Pieces may split the body anywhere (inside a UTF-8
 * sequence, an escape, a number): the outcome, errors included, is the
 * same as for one piece.  The bytes need not outlive the call.  Input
 * after ig_validator_finish() is ignored. */
ig_valid_rc_e ig_validator_feed(ig_validator_t *v, const unsigned char *buf,
    size_t len);

/* Ends the document: returns IG_VALID_OK, IG_VALID_INVALID, or a
 * terminal code.  An empty document is IG_VALID_SYNTAX. */
ig_valid_rc_e ig_validator_finish(ig_validator_t *v);

/* Errors collected so far (at most IG_SCHEMA_MAX_ERRORS; *truncated set
 * to 1 when more were found), in document order.  For IG_VALID_SYNTAX
 * there is exactly one, pointer "" and detail "malformed JSON at byte N:
 * <reason>" (N is the offset of the offending byte from the start of the
 * body across all pieces; e.g. "malformed JSON at byte 6: expected ','
 * or '}'"); for IG_VALID_DEPTH one, pointer "",
 * detail "nesting deeper than N levels"; for IG_VALID_NOMEM one, pointer
 * "", detail "out of memory".  errors and truncated may be NULL.  The
 * strings live until ig_validator_destroy(). */
size_t ig_validator_errors(ig_validator_t *v, const ig_verror_t **errors,
    int *truncated);

/* Releases the validator; memory from af is freed through af->free. */
void ig_validator_destroy(ig_validator_t *v);


#endif /* _IG_SCHEMA_H_INCLUDED_ */
