
/*
 * Copyright (C) infergate authors
 *
 * RFC 9457 application/problem+json refusals.  Every refusal the module
 * makes goes through here, so each one has the same shape.  Each also
 * carries "error", the detail again: the KServe v2 / Open Inference
 * Protocol REST error body is {"error": "<message>"}, and the Triton and
 * KServe clients read that member (RFC 9457 allows extension members).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_json.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_grpc.h"


static ngx_str_t  ngx_http_ig_problem_type =
    ngx_string("application/problem+json");


size_t
ngx_http_ig_json_str_len(const u_char *s, size_t len)
{
    return ig_json_escape_len(s, len) + 2;
}


/* Writes a quoted, escaped JSON string; p must have room for it. */

u_char *
ngx_http_ig_json_str(u_char *p, const u_char *s, size_t len)
{
    *p++ = '"';
    p = ig_json_escape(p, s, len);
    *p++ = '"';

    return p;
}


ngx_int_t
ngx_http_ig_problem_cstr(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *title, const char *detail)
{
    ngx_str_t  d;

    d.data = (u_char *) detail;
    d.len = ngx_strlen(detail);

    return ngx_http_ig_problem(r, status, type, title, &d, NULL);
}


/*
 * Sends the problem and finalizes the request; the phase handler returns
 * what this returns.  extra, when given, is raw JSON members that start
 * with a comma.
 */

ngx_int_t
ngx_http_ig_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *title, ngx_str_t *detail,
    ngx_str_t *extra)
{
    size_t            len, tlen, ttlen;
    u_char           *p;
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *cc;

    if (ngx_http_ig_grpc_request(r)) {
        /* gRPC: a Trailers-Only status (ngx_http_infergate_grpc.c) */
        return ngx_http_ig_grpc_problem(r, status, detail);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    tlen = ngx_strlen(type);
    ttlen = ngx_strlen(title);

    len = sizeof("{\"type\":,\"title\":,\"status\":,\"detail\":,"
                 "\"error\":}\n") - 1
          + ngx_http_ig_json_str_len((u_char *) type, tlen)
          + ngx_http_ig_json_str_len((u_char *) title, ttlen)
          + NGX_INT_T_LEN
          + 2 * ngx_http_ig_json_str_len(detail->data, detail->len)
          + (extra ? extra->len : 0);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(b->last, "{\"type\":", sizeof("{\"type\":") - 1);
    p = ngx_http_ig_json_str(p, (u_char *) type, tlen);
    p = ngx_cpymem(p, ",\"title\":", sizeof(",\"title\":") - 1);
    p = ngx_http_ig_json_str(p, (u_char *) title, ttlen);
    p = ngx_sprintf(p, ",\"status\":%ui,\"detail\":", status);
    p = ngx_http_ig_json_str(p, detail->data, detail->len);
    p = ngx_cpymem(p, ",\"error\":", sizeof(",\"error\":") - 1);
    p = ngx_http_ig_json_str(p, detail->data, detail->len);

    if (extra) {
        p = ngx_cpymem(p, extra->data, extra->len);
    }

    *p++ = '}';
    *p++ = '\n';
    b->last = p;

    r->headers_out.status = status;
    r->headers_out.content_type = ngx_http_ig_problem_type;
    r->headers_out.content_type_len = ngx_http_ig_problem_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = b->last - b->pos;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    /* a refusal is about this request only: no cache may keep it */

    cc = ngx_list_push(&r->headers_out.headers);
    if (cc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cc->hash = 1;
    ngx_str_set(&cc->key, "Cache-Control");
    ngx_str_set(&cc->value, "no-store");

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
    return NGX_DONE;
}
