/*
 * Copyright (C) infergate authors
 *
 * A resumable (push) JSON parser built for the streaming validator: the
 * document arrives buffer by buffer, split anywhere, and is reported
 * through callbacks as it goes, like yajl's push parser, only cheaper.
 * nginx-free.
 *
 * Grammar: RFC 8259.  One top-level value of any type with optional
 * whitespace (space, tab, LF, CR) around it; numbers
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? reported as their
 * literal text (never converted, any length); true, false, null;
 * strings reported unescaped, with no raw byte below 0x20, escapes
 * \" \\ \/ \b \f \n \r \t \uXXXX, and strict UTF-8 (RFC 3629).
 *
 * Results never depend on how the input is split: events, their
 * payloads, the accept/reject decision and the error offset and reason
 * are the same for one buffer and for any number of pieces.
 *
 * Payloads point into the caller's buffer whenever the token lies whole
 * inside it and holds no escape (the usual case), otherwise into a
 * scratch buffer where the token is assembled; either way they are only
 * valid during the callback.  The scratch starts inside the parser
 * (IG_JSONLEX_INLINE bytes) and grows through the allocator; nothing
 * else is allocated per token.
 *
 * Differences from yajl 2.1 with its default flags (yajl accepts these,
 * the parser rejects them, as RFC 8259 requires or allows; everything
 * else is accepted and rejected alike, with the same events):
 *
 *   - form feed and vertical tab are not whitespace (yajl skips them);
 *   - strings must be valid UTF-8 in the strict sense: no overlong
 *     forms (C0 80, E0 80 80, ...), no UTF-16 surrogates encoded in
 *     UTF-8 (ED A0 80 ... ED BF BF), nothing above U+10FFFF (F4 90 and
 *     up, F5..FF); yajl only checks the bit patterns;
 *   - \u escapes must not leave a UTF-16 surrogate unpaired: a high
 *     surrogate (\uD800-\uDBFF) must be followed at once by a low one
 *     (\uDC00-\uDFFF), and a low one must not appear alone.  yajl
 *     produces invalid UTF-8 (CESU-8) for a lone low surrogate, "?"
 *     (dropping the next character) for a lone high one, and combines
 *     a high surrogate with any following \uXXXX.  RFC 8259 leaves the
 *     meaning of such strings unpredictable; rejecting them means every
 *     string handed to a callback is valid UTF-8;
 *   - a string opened after the top-level value and never closed
 *     ("{} \"abc") is trailing garbage; yajl accepts it, since its lexer
 *     waits for more input and yajl_complete_parse() only adds a space.
 *
 * Error reasons (static strings) and where the offset points (bytes
 * from the start of the document, across all buffers):
 *   "expected a value", "expected a value or ']'", "expected a string
 *   key", "expected a string key or '}'", "expected ':'", "expected ','
 *   or '}'", "expected ',' or ']'", "trailing garbage", "invalid
 *   literal", "invalid number" (at the offending byte); "control
 *   character in string", "invalid UTF-8 in string" (at the first byte
 *   that cannot belong to a valid sequence), "invalid escape" (at the
 *   character after '\'), "invalid \u escape" (at the non-hex digit),
 *   "unpaired UTF-16 surrogate" (at the last hex digit of the escape
 *   that leaves it unpaired, or at the byte after a high surrogate
 *   escape that does not start "\u"); "nesting too deep" (at the '{' or
 *   '['); "premature end of input" (at the end of the input).
 */

#ifndef _IG_JSONLEX_H_INCLUDED_
#define _IG_JSONLEX_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_common.h>


#define IG_JSONLEX_INLINE  128


typedef struct ig_jsonlex_s  ig_jsonlex_t;


/*
 * Every callback must be set.  Returning 0 stops the parse: the call
 * that ran it and every later one return IG_JSONLEX_CANCELLED.  Keys
 * and strings are unescaped (a \u0000 is a NUL byte inside the
 * length); numbers are the literal text; boolean gets 1 or 0.
 *
 * start_map/start_array run before the level is counted: with max_depth
 * levels already open the callback runs, then the parse fails with
 * "nesting too deep" (the validator refuses in the callback instead).
 * A number is reported once the byte after it is seen, so a top-level
 * number only at ig_jsonlex_finish().
 */
typedef struct {
    int   (*null)(void *ctx);
    int   (*boolean)(void *ctx, int value);
    int   (*number)(void *ctx, const unsigned char *s, size_t len);
    int   (*string)(void *ctx, const unsigned char *s, size_t len);
    int   (*start_map)(void *ctx);
    int   (*map_key)(void *ctx, const unsigned char *s, size_t len);
    int   (*end_map)(void *ctx);
    int   (*start_array)(void *ctx);
    int   (*end_array)(void *ctx);
} ig_jsonlex_callbacks_t;


typedef enum {
    IG_JSONLEX_OK = 0,
    IG_JSONLEX_ERROR,         /* malformed: see ig_jsonlex_error()      */
    IG_JSONLEX_CANCELLED,     /* a callback returned 0                  */
    IG_JSONLEX_NOMEM          /* the scratch buffer could not grow      */
} ig_jsonlex_rc_e;


/*
 * Bytes needed for a parser allowing max_depth open arrays/objects (the
 * nesting bit stack follows the structure).
 */
size_t ig_jsonlex_size(unsigned max_depth);

/*
 * malloc, realloc and free: what a NULL af stands for, here and in
 * ig_validator_create().
 */
extern const yajl_alloc_funcs  ig_jsonlex_malloc_funcs;

/*
 * Sets up a parser in caller memory: mem holds ig_jsonlex_size() bytes
 * aligned for any type.  cb and ctx are kept by reference; af (NULL:
 * malloc/realloc/free) is copied and used for the scratch buffer only,
 * realloc keeping the old contents, free may be a no-op.  Release with
 * ig_jsonlex_cleanup().
 */
ig_jsonlex_t *ig_jsonlex_init(void *mem, unsigned max_depth,
    const ig_jsonlex_callbacks_t *cb, void *ctx, const yajl_alloc_funcs *af);
void ig_jsonlex_cleanup(ig_jsonlex_t *lx);

/* The same in memory from af; NULL when it fails. */
ig_jsonlex_t *ig_jsonlex_create(unsigned max_depth,
    const ig_jsonlex_callbacks_t *cb, void *ctx, const yajl_alloc_funcs *af);
void ig_jsonlex_destroy(ig_jsonlex_t *lx);

/*
 * Parses the next piece (len may be 0).  The bytes need not outlive the
 * call.  Once something other than IG_JSONLEX_OK is returned, every
 * later call returns it again.
 */
ig_jsonlex_rc_e ig_jsonlex_feed(ig_jsonlex_t *lx, const unsigned char *buf,
    size_t len);

/*
 * Ends the input: reports a pending top-level number, then fails with
 * "premature end of input" unless one complete value was seen.  After
 * it, feeding more than whitespace is "trailing garbage".
 */
ig_jsonlex_rc_e ig_jsonlex_finish(ig_jsonlex_t *lx);

/*
 * For IG_JSONLEX_ERROR: the reason, and in *offset (may be NULL) the
 * byte it refers to; NULL otherwise.
 */
const char *ig_jsonlex_error(const ig_jsonlex_t *lx, size_t *offset);


#endif /* _IG_JSONLEX_H_INCLUDED_ */
