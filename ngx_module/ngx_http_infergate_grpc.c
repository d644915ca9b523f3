
/*
 * Copyright (C) infergate authors
 *
 * The Open Inference Protocol's gRPC service, inference.
 * GRPCInferenceService, from the same "infergate_infer backend=NAME"
 * location as the HTTP/JSON protocol: a request over HTTP/2 whose
 * content type is application/grpc comes here from the infer content
 * handler (ngx_http_infergate_infer.c), after the whole admission chain
 * (auth, limits, Bloom, the audit and metrics in the log phase).
 *
 *     ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
 *     ModelInfer, ModelStatistics                           (all unary)
 *
 * A reply is one length-prefixed message and the trailers grpc-status
 * and grpc-message; a refusal is Trailers-Only (one HEADERS frame with
 * :status 200 and grpc-status), admission refusals included
 * (ngx_http_ig_grpc_problem(), from ngx_http_infergate_problem.c).
 * Messages are decoded by protobuf-c on the request pool
 * (ngx_http_infergate_grpc.proto, ngx_http_infergate_grpc_codec.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_backend.h"
#include "ngx_http_infergate_metrics.h"
#include "ngx_http_infergate_grpc.h"
#include "ngx_http_infergate_grpc_codec.h"


#define NGX_HTTP_IG_GRPC_PATH  "/inference.GRPCInferenceService/"

#define NGX_HTTP_IG_GRPC_NONE              0
#define NGX_HTTP_IG_GRPC_SERVER_LIVE       1
#define NGX_HTTP_IG_GRPC_SERVER_READY      2
#define NGX_HTTP_IG_GRPC_MODEL_READY       3
#define NGX_HTTP_IG_GRPC_SERVER_METADATA   4
#define NGX_HTTP_IG_GRPC_MODEL_METADATA    5
#define NGX_HTTP_IG_GRPC_MODEL_INFER       6
#define NGX_HTTP_IG_GRPC_MODEL_STATISTICS  7


typedef struct {
    ngx_http_ig_backend_req_t   br;
    ngx_http_ig_backend_t      *backend;
    ngx_uint_t                  method;
    ProtobufCAllocator          alloc;

    ngx_msec_t                  deadline;    /* grpc-timeout, absolute    */
    ngx_event_t                 timer;

    ig_model_meta_t             meta;
    char                        model[IG_MODEL_NAME_MAX];
    char                        version[IG_RING_VERSION_MAX];
    char                       *id;
    size_t                      rows;
    int                         raw;

    ngx_str_t                  *bad_timeout; /* a malformed grpc-timeout */
    int                         encoding;    /* IG_GRPC_ENC_*             */
    ngx_str_t                   encoding_name;

    unsigned                    has_deadline:1;
    unsigned                    finished:1;  /* answered: ignore the rest */
} ngx_http_ig_grpc_t;


static void ngx_http_ig_grpc_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_grpc_dispatch(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g);
static ngx_int_t ngx_http_ig_grpc_inflate(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g, const uint8_t **msg, size_t *len, ngx_int_t *rc);
static ngx_int_t ngx_http_ig_grpc_model_allowed(ngx_http_request_t *r,
    const char *model);
static ngx_int_t ngx_http_ig_grpc_model_ready(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g, const uint8_t *msg, size_t len);
static ngx_int_t ngx_http_ig_grpc_server_ready(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g);
static ngx_int_t ngx_http_ig_grpc_metadata(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g, const uint8_t *msg, size_t len);
static ngx_int_t ngx_http_ig_grpc_statistics(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g, const uint8_t *msg, size_t len);
static ngx_int_t ngx_http_ig_grpc_infer(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g, const uint8_t *msg, size_t len);
static void ngx_http_ig_grpc_infer_done(ngx_http_ig_backend_req_t *br,
    ngx_uint_t how);
static void ngx_http_ig_grpc_deadline(ngx_event_t *ev);
static void ngx_http_ig_grpc_cleanup(void *data);
static ngx_int_t ngx_http_ig_grpc_unknown_model(ngx_http_request_t *r,
    ngx_http_ig_grpc_t *g, const char *name, const char *version);
static ngx_int_t ngx_http_ig_grpc_read_body(ngx_http_request_t *r,
    u_char **body, size_t *len);
static ngx_int_t ngx_http_ig_grpc_reply(ngx_http_request_t *r,
    const ProtobufCMessage *msg);
static ngx_int_t ngx_http_ig_grpc_status(ngx_http_request_t *r,
    ngx_uint_t code, ngx_int_t pushback_ms, const char *fmt, ...);
static ngx_int_t ngx_http_ig_grpc_trailers_only(ngx_http_request_t *r,
    ngx_uint_t code, ngx_int_t pushback_ms, u_char *msg, size_t len);
static ngx_int_t ngx_http_ig_grpc_trailers_only_headers(
    ngx_http_request_t *r, ngx_uint_t code, ngx_int_t pushback_ms,
    u_char *msg, size_t len);
static ngx_table_elt_t *ngx_http_ig_grpc_push(ngx_list_t *list,
    const char *key, u_char *value, size_t len);
static ngx_uint_t ngx_http_ig_grpc_code(ngx_uint_t status);
static ngx_int_t ngx_http_ig_grpc_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_grpc_init(ngx_conf_t *cf);
static void *ngx_http_ig_grpc_palloc(void *data, size_t size);
static void ngx_http_ig_grpc_pfree(void *data, void *p);


static ngx_str_t  ngx_http_ig_grpc_type = ngx_string("application/grpc");


static struct {
    ngx_str_t    name;
    ngx_uint_t   method;
} ngx_http_ig_grpc_methods[] = {
    { ngx_string("ServerLive"), NGX_HTTP_IG_GRPC_SERVER_LIVE },
    { ngx_string("ServerReady"), NGX_HTTP_IG_GRPC_SERVER_READY },
    { ngx_string("ModelReady"), NGX_HTTP_IG_GRPC_MODEL_READY },
    { ngx_string("ServerMetadata"), NGX_HTTP_IG_GRPC_SERVER_METADATA },
    { ngx_string("ModelMetadata"), NGX_HTTP_IG_GRPC_MODEL_METADATA },
    { ngx_string("ModelInfer"), NGX_HTTP_IG_GRPC_MODEL_INFER },
    { ngx_string("ModelStatistics"), NGX_HTTP_IG_GRPC_MODEL_STATISTICS },
    { ngx_null_string, 0 }
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_http_module_t  ngx_http_infergate_grpc_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_grpc_init,                 /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


/*
 * A module for its request ctx and its header filter: no directives, no
 * configuration.
 */

ngx_module_t  ngx_http_infergate_grpc_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_grpc_module_ctx,   /* module context */
    NULL,                                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * A gRPC call: HTTP/2 and a content type of application/grpc, alone or
 * with a "+suffix" or parameters.  gRPC is defined over HTTP/2 only: the
 * same content type over HTTP/1.x is left to the HTTP protocol.
 */

ngx_uint_t
ngx_http_ig_grpc_request(ngx_http_request_t *r)
{
    u_char  *p;
    size_t   len, n;

    if (r->http_version < NGX_HTTP_VERSION_20
        || r->headers_in.content_type == NULL)
    {
        return 0;
    }

    p = r->headers_in.content_type->value.data;
    len = r->headers_in.content_type->value.len;
    n = sizeof("application/grpc") - 1;

    if (len < n || ngx_strncasecmp(p, (u_char *) "application/grpc", n) != 0)
    {
        return 0;
    }

    return len == n || p[n] == '+' || p[n] == ';';
}


/* a gRPC call whose successful reply the cache may keep: ModelInfer */

ngx_uint_t
ngx_http_ig_grpc_cacheable(ngx_http_request_t *r)
{
    return r->uri.len == sizeof(NGX_HTTP_IG_GRPC_PATH "ModelInfer") - 1
           && ngx_strncmp(r->uri.data, NGX_HTTP_IG_GRPC_PATH "ModelInfer",
                          r->uri.len) == 0;
}


/*
 * The key's models= list for the cache key of a gRPC call ("N:" then
 * "len:name" each; "0:" for none).  The model is inside the message, so
 * models= is checked by the content handler, after the lookup: keys of
 * one tenant with different lists never share an entry, and a hit needs
 * no check.
 */

ngx_int_t
ngx_http_ig_grpc_cache_models(ngx_http_request_t *r, ngx_str_t *out)
{
    u_char             *p;
    size_t              size;
    ngx_uint_t          i;
    ngx_http_ig_ctx_t  *ctx;
    ngx_http_ig_key_t  *k;

    ctx = ngx_http_ig_find_ctx(r);
    k = (ctx && ctx->key) ? ctx->key : NULL;

    size = NGX_INT_T_LEN + 1;

    for (i = 0; k && i < k->nmodels; i++) {
        size += NGX_SIZE_T_LEN + 1 + k->models[i].len;
    }

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;
    p = ngx_sprintf(p, "%ui:", k ? k->nmodels : 0);

    for (i = 0; k && i < k->nmodels; i++) {
        p = ngx_sprintf(p, "%uz:%V", k->models[i].len, &k->models[i]);
    }

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * What the default cache key hashes of a gRPC call's body: the key's
 * models= list, then the message without its 5-byte prefix (new links
 * and buffer headers over the same memory or file).
 */

ngx_int_t
ngx_http_ig_grpc_cache_body(ngx_http_request_t *r, ngx_chain_t *in,
    ngx_chain_t **out)
{
    off_t         skip, n;
    ngx_str_t     models;
    ngx_buf_t    *b;
    ngx_chain_t  *cl, **ll;

    if (ngx_http_ig_grpc_cache_models(r, &models) != NGX_OK) {
        return NGX_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = models.data;
    b->last = models.data + models.len;
    b->memory = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;
    *out = cl;
    ll = &cl->next;

    skip = IG_GRPC_PREFIX;

    for ( /* void */ ; in; in = in->next) {
        n = ngx_buf_size(in->buf);

        if (skip >= n) {
            skip -= n;
            continue;
        }

        b = ngx_alloc_buf(r->pool);
        if (b == NULL) {
            return NGX_ERROR;
        }

        *b = *in->buf;

        if (ngx_buf_in_memory(b)) {
            b->pos += skip;

        } else {
            b->file_pos += skip;
        }

        skip = 0;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        cl->buf = b;
        cl->next = NULL;
        *ll = cl;
        ll = &cl->next;
    }

    return NGX_OK;
}


/*
 * A cache hit (or a stale answer) of a gRPC call, from the cache filter:
 * the stored message goes out as a reply does, ended by grpc-status: 0.
 */

ngx_int_t
ngx_http_ig_grpc_cache_replay(ngx_http_request_t *r)
{
    if (ngx_http_ig_grpc_push(&r->headers_out.trailers, "grpc-status",
                              (u_char *) "0", 1) == NULL)
    {
        return NGX_ERROR;
    }

    r->headers_out.content_length_n = -1;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    r->expect_trailers = 1;

    return NGX_OK;
}


/* a reply the cache may store: grpc-status 0 in its trailers */

ngx_uint_t
ngx_http_ig_grpc_reply_ok(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->header_only || !r->expect_trailers) {
        return 0;
    }

    part = &r->headers_out.trailers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0
            && h[i].key.len == sizeof("grpc-status") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "grpc-status",
                               sizeof("grpc-status") - 1) == 0)
        {
            return h[i].value.len == 1 && h[i].value.data[0] == '0';
        }
    }

    return 0;
}


/* the infer content handler's branch for a gRPC call */

ngx_int_t
ngx_http_ig_grpc_handler(ngx_http_request_t *r, ngx_http_ig_backend_t *be)
{
    size_t               len;
    int64_t              ms;
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_list_part_t     *part;
    ngx_table_elt_t     *h;
    ngx_pool_cleanup_t  *cln;
    ngx_http_ig_grpc_t  *g;

    g = ngx_http_get_module_ctx(r, ngx_http_infergate_grpc_module);

    if (g == NULL) {
        g = ngx_pcalloc(r->pool, sizeof(ngx_http_ig_grpc_t));
        if (g == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_ig_grpc_cleanup;
        cln->data = g;

        g->alloc.alloc = ngx_http_ig_grpc_palloc;
        g->alloc.free = ngx_http_ig_grpc_pfree;
        g->alloc.allocator_data = r->pool;

        g->timer.handler = ngx_http_ig_grpc_deadline;
        g->timer.data = r;
        g->timer.log = r->connection->log;

        ngx_http_set_ctx(r, g, ngx_http_infergate_grpc_module);
    }

    g->backend = be;

    len = sizeof(NGX_HTTP_IG_GRPC_PATH) - 1;

    if (r->uri.len > len
        && ngx_strncmp(r->uri.data, NGX_HTTP_IG_GRPC_PATH, len) == 0)
    {
        for (i = 0; ngx_http_ig_grpc_methods[i].name.len; i++) {
            if (ngx_http_ig_grpc_methods[i].name.len == r->uri.len - len
                && ngx_strncmp(ngx_http_ig_grpc_methods[i].name.data,
                               r->uri.data + len, r->uri.len - len) == 0)
            {
                g->method = ngx_http_ig_grpc_methods[i].method;
                break;
            }
        }
    }

    if (g->method == NGX_HTTP_IG_GRPC_NONE || r->method != NGX_HTTP_POST) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_ig_grpc_status(r, IG_GRPC_UNIMPLEMENTED, -1,
                                       "unknown method \"%V\": the gateway "
                                       "serves inference."
                                       "GRPCInferenceService's ServerLive, "
                                       "ServerReady, ModelReady, "
                                       "ServerMetadata, ModelMetadata, "
                                       "ModelInfer and ModelStatistics",
                                       &r->uri);
    }

    /* grpc-timeout: the call's deadline, from now */

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("grpc-encoding") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "grpc-encoding",
                               sizeof("grpc-encoding") - 1) == 0)
        {
            g->encoding = ig_grpc_encoding(h[i].value.data, h[i].value.len);
            g->encoding_name = h[i].value;
            continue;
        }

        if (h[i].key.len != sizeof("grpc-timeout") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "grpc-timeout",
                               sizeof("grpc-timeout") - 1) != 0)
        {
            continue;
        }

        ms = ig_grpc_timeout_ms(h[i].value.data, h[i].value.len);

        if (ms < 0) {
            /* answered once the body is read: a clean end of stream */
            g->bad_timeout = &h[i].value;
            continue;
        }

        if (ms > 86400000) {
            ms = 86400000;         /* a day: beyond it, no deadline      */
            continue;
        }

        g->has_deadline = 1;
        g->deadline = ngx_current_msec + (ngx_msec_t) ms;
    }

    if (r->request_body == NULL) {
        r->request_body_in_single_buf = 1;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_ig_grpc_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_ig_grpc_body(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_http_ig_grpc_t  *g;

    g = ngx_http_get_module_ctx(r, ngx_http_infergate_grpc_module);

    rc = ngx_http_ig_grpc_dispatch(r, g);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_ig_grpc_dispatch(ngx_http_request_t *r, ngx_http_ig_grpc_t *g)
{
    int                                 code, compressed;
    size_t                              len, mlen;
    ngx_int_t                           rc;
    u_char                             *body;
    const char                         *err;
    const uint8_t                      *msg;
    ProtobufCMessage                   *m;
    Inference__ServerLiveResponse       live;
    Inference__ServerMetadataResponse   smeta;

    if (r->connection->error) {
        return NGX_HTTP_CLIENT_CLOSED_REQUEST;
    }

    if (g->bad_timeout) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                       "malformed grpc-timeout \"%V\"",
                                       g->bad_timeout);
    }

    if (ngx_http_ig_grpc_read_body(r, &body, &len) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    code = ig_grpc_unframe(body, len, IG_GRPC_MAX_MESSAGE, &msg, &mlen,
                           &compressed, &err);

    if (code != IG_GRPC_OK) {
        return ngx_http_ig_grpc_status(r, code, -1, "%s", err);
    }

    if (compressed
        && ngx_http_ig_grpc_inflate(r, g, &msg, &mlen, &rc) != NGX_OK)
    {
        return rc;
    }

    if (g->has_deadline && (ngx_msec_int_t) (g->deadline - ngx_current_msec)
                           <= 0)
    {
        return ngx_http_ig_grpc_status(r, IG_GRPC_DEADLINE_EXCEEDED, -1,
                                       "the deadline (grpc-timeout) passed "
                                       "before the request was read");
    }

    switch (g->method) {

    case NGX_HTTP_IG_GRPC_SERVER_LIVE:
    case NGX_HTTP_IG_GRPC_SERVER_METADATA:

        /* empty requests: what they hold must still be protobuf */

        m = protobuf_c_message_unpack(
                g->method == NGX_HTTP_IG_GRPC_SERVER_LIVE
                ? &inference__server_live_request__descriptor
                : &inference__server_metadata_request__descriptor,
                &g->alloc, mlen, msg);

        if (m == NULL) {
            return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                           "malformed request message");
        }

        if (g->method == NGX_HTTP_IG_GRPC_SERVER_LIVE) {
            inference__server_live_response__init(&live);
            live.live = 1;

            return ngx_http_ig_grpc_reply(r, &live.base);
        }

        inference__server_metadata_response__init(&smeta);
        smeta.name = "infergate";
        smeta.version = "1.0";

        return ngx_http_ig_grpc_reply(r, &smeta.base);

    case NGX_HTTP_IG_GRPC_SERVER_READY:
        m = protobuf_c_message_unpack(
                &inference__server_ready_request__descriptor, &g->alloc,
                mlen, msg);

        if (m == NULL) {
            return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                           "malformed request message");
        }

        return ngx_http_ig_grpc_server_ready(r, g);

    case NGX_HTTP_IG_GRPC_MODEL_READY:
        return ngx_http_ig_grpc_model_ready(r, g, msg, mlen);

    case NGX_HTTP_IG_GRPC_MODEL_METADATA:
        return ngx_http_ig_grpc_metadata(r, g, msg, mlen);

    case NGX_HTTP_IG_GRPC_MODEL_STATISTICS:
        return ngx_http_ig_grpc_statistics(r, g, msg, mlen);

    default: /* NGX_HTTP_IG_GRPC_MODEL_INFER */
        return ngx_http_ig_grpc_infer(r, g, msg, mlen);
    }
}


/*
 * A compressed message: gzip or deflate (zlib) as grpc-encoding says,
 * inflated into the request pool, at most IG_GRPC_MAX_MESSAGE bytes.
 * NGX_OK with *msg and *len replaced, or what the request is finalized
 * with once the status was sent.
 */

static ngx_int_t
ngx_http_ig_grpc_inflate(ngx_http_request_t *r, ngx_http_ig_grpc_t *g,
    const uint8_t **msg, size_t *len, ngx_int_t *rc)
{
    int          code;
    size_t       size;
    u_char      *out;
    const char  *err;

    if (g->encoding_name.len == 0 || g->encoding == IG_GRPC_ENC_IDENTITY) {
        *rc = ngx_http_ig_grpc_status(r, IG_GRPC_INTERNAL, -1,
                                      "a compressed message without a "
                                      "grpc-encoding to inflate it");
        return NGX_DONE;
    }

    if (g->encoding == IG_GRPC_ENC_UNKNOWN) {
        if (ngx_http_ig_grpc_push(&r->headers_out.headers,
                                  "grpc-accept-encoding",
                                  (u_char *) "identity,deflate,gzip",
                                  sizeof("identity,deflate,gzip") - 1)
            == NULL)
        {
            *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return NGX_DONE;
        }

        *rc = ngx_http_ig_grpc_status(r, IG_GRPC_UNIMPLEMENTED, -1,
                                       "grpc-encoding \"%V\" is not "
                                       "supported: use identity, deflate or "
                                       "gzip", &g->encoding_name);
        return NGX_DONE;
    }

    /* measured first, then inflated into exactly that much */

    code = ig_grpc_inflate(*msg, *len, g->encoding, NULL,
                           IG_GRPC_MAX_MESSAGE, &size, &err);

    if (code != IG_GRPC_OK) {
        *rc = ngx_http_ig_grpc_status(r, code, -1, "%s", err);
        return NGX_DONE;
    }

    if (size == 0) {
        *len = 0;
        return NGX_OK;
    }

    out = ngx_pnalloc(r->pool, size);
    if (out == NULL) {
        *rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        return NGX_DONE;
    }

    code = ig_grpc_inflate(*msg, *len, g->encoding, out, size, &size, &err);

    if (code != IG_GRPC_OK) {
        *rc = ngx_http_ig_grpc_status(r, code, -1, "%s", err);
        return NGX_DONE;
    }

    *msg = out;
    *len = size;

    return NGX_OK;
}


/*
 * The model is named in the message, not in the path, so the key's
 * model list (infergate_keys models=) is checked here: the access phase
 * saw no model.  The model becomes the request's ($infergate_model, the
 * audit record).  NGX_OK, or NGX_DECLINED once PERMISSION_DENIED was
 * sent.
 */

static ngx_int_t
ngx_http_ig_grpc_model_allowed(ngx_http_request_t *r, const char *model)
{
    size_t                   len;
    ngx_uint_t               i;
    ngx_http_ig_ctx_t       *ctx;
    ngx_http_ig_key_t       *k;
    ngx_http_ig_loc_conf_t  *lcf;

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_module);

    if (ngx_http_ig_model(r, ctx, lcf) != NGX_OK) {
        return NGX_ERROR;
    }

    len = ngx_strlen(model);

    if (ctx->model.len == 0) {
        ctx->model.data = (u_char *) model;
        ctx->model.len = len;
    }

    k = ctx->key;

    if (k == NULL || k->nmodels == 0 || len == 0) {
        return NGX_OK;
    }

    for (i = 0; i < k->nmodels; i++) {
        if (k->models[i].len == len
            && ngx_strncmp(k->models[i].data, model, len) == 0)
        {
            return NGX_OK;
        }
    }

    ngx_str_set(&ctx->action, "forbidden");

    return NGX_DECLINED;
}


#define ngx_http_ig_grpc_check_model(r, name)                                 \
    switch (ngx_http_ig_grpc_model_allowed(r, name)) {                        \
    case NGX_OK:                                                              \
        break;                                                                \
    case NGX_DECLINED:                                                        \
        return ngx_http_ig_grpc_status(r, IG_GRPC_PERMISSION_DENIED, -1,     \
                                       "this key may not use model \"%s\"",   \
                                       name);                                 \
    default:                                                                  \
        return NGX_HTTP_INTERNAL_SERVER_ERROR;                                \
    }


static ngx_int_t
ngx_http_ig_grpc_server_ready(ngx_http_request_t *r, ngx_http_ig_grpc_t *g)
{
    ngx_str_t                       name, version;
    ngx_uint_t                      ok, i;
    const ig_ctl_models_t          *ms;
    Inference__ServerReadyResponse  resp;

    ms = ngx_http_ig_backend_models(g->backend);
    ok = (ms != NULL && ms->nmodels > 0
          && ngx_http_ig_backend_ready(g->backend));

    /* as GET /v2/health/ready: every model ready, breakers included */

    for (i = 0; ok && i < ms->nmodels; i++) {
        if (ms->models[i].name[0] == '\0') {
            continue;
        }

        name.data = (u_char *) ms->models[i].name;
        name.len = ngx_strnlen(name.data, IG_MODEL_NAME_MAX);
        version.data = (u_char *) ms->models[i].version;
        version.len = ngx_strnlen(version.data, IG_RING_VERSION_MAX);

        if (!ngx_http_ig_backend_model_ready(r, g->backend, &name,
                                             &version))
        {
            ok = 0;
        }
    }

    inference__server_ready_response__init(&resp);
    resp.ready = ok;

    return ngx_http_ig_grpc_reply(r, &resp.base);
}


static ngx_str_t *
ngx_http_ig_grpc_str(ngx_str_t *s, const char *p)
{
    s->data = (u_char *) p;
    s->len = ngx_strlen(p);

    return s;
}


static ngx_int_t
ngx_http_ig_grpc_model_ready(ngx_http_request_t *r, ngx_http_ig_grpc_t *g,
    const uint8_t *msg, size_t len)
{
    ngx_str_t                       name, version, *vp;
    Inference__ModelReadyRequest   *req;
    Inference__ModelReadyResponse   resp;

    req = inference__model_ready_request__unpack(&g->alloc, len, msg);

    if (req == NULL) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                       "malformed ModelReadyRequest");
    }

    ngx_http_ig_grpc_check_model(r, req->name);

    vp = req->version[0] ? ngx_http_ig_grpc_str(&version, req->version)
                         : NULL;

    inference__model_ready_response__init(&resp);

    /* as GET /v2/models/{m}/ready: the pool, and the model's breaker */
    resp.ready = ngx_http_ig_backend_ready(g->backend)
                 && ngx_http_ig_backend_model_ready(r, g->backend,
                        ngx_http_ig_grpc_str(&name, req->name), vp);

    return ngx_http_ig_grpc_reply(r, &resp.base);
}


static void
ngx_http_ig_grpc_tensor(ngx_pool_t *pool,
    Inference__ModelMetadataResponse__TensorMetadata *tm,
    const ig_tensor_desc_t *t)
{
    const char  *dt;

    inference__model_metadata_response__tensor_metadata__init(tm);

    tm->name = (char *) t->name;
    dt = ig_grpc_dtype_name(t->dtype);
    tm->datatype = (char *) (dt ? dt : "FP32");
    tm->n_shape = t->ndims > IG_MODEL_MAX_DIMS ? IG_MODEL_MAX_DIMS
                                                : t->ndims;
    tm->shape = (int64_t *) t->dims;
}


static ngx_int_t
ngx_http_ig_grpc_metadata(ngx_http_request_t *r, ngx_http_ig_grpc_t *g,
    const uint8_t *msg, size_t len)
{
    uint32_t                                            i;
    ngx_str_t                                           name, version;
    const ig_ctl_model_t                               *m;
    const ig_ctl_models_t                              *ms;
    Inference__ModelMetadataRequest                    *req;
    Inference__ModelMetadataResponse                    resp;
    Inference__ModelMetadataResponse__TensorMetadata    in, out, *pin, *pout;
    char                                               *versions[
                                                        IG_RING_MAX_MODELS];
    ig_ctl_model_t                                      copy;

    req = inference__model_metadata_request__unpack(&g->alloc, len, msg);

    if (req == NULL) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                       "malformed ModelMetadataRequest");
    }

    ngx_http_ig_grpc_check_model(r, req->name);

    m = ngx_http_ig_backend_model(g->backend,
                                  ngx_http_ig_grpc_str(&name, req->name),
                                  req->version[0]
                                  ? ngx_http_ig_grpc_str(&version,
                                                         req->version)
                                  : NULL);

    if (m == NULL) {
        return ngx_http_ig_grpc_unknown_model(r, g, req->name, req->version);
    }

    copy = *m;

    inference__model_metadata_response__init(&resp);
    resp.name = copy.name;
    resp.platform = copy.meta.platform;

    ms = ngx_http_ig_backend_models(g->backend);

    for (i = 0; i < ms->nmodels; i++) {
        if (ngx_strcmp(ms->models[i].name, copy.name) == 0
            && ms->models[i].version[0])
        {
            versions[resp.n_versions++] = (char *) ms->models[i].version;
        }
    }

    resp.versions = versions;

    ngx_http_ig_grpc_tensor(r->pool, &in, &copy.meta.input);
    ngx_http_ig_grpc_tensor(r->pool, &out, &copy.meta.output);

    pin = &in;
    pout = &out;
    resp.n_inputs = 1;
    resp.inputs = &pin;
    resp.n_outputs = 1;
    resp.outputs = &pout;

    return ngx_http_ig_grpc_reply(r, &resp.base);
}


/*
 * ModelStatistics, Triton's shape, from the backend's per-model counters
 * the metrics zone keeps (IG_CTL_STATS, about a second old): the models
 * of this location's backend, all of them or those of one name (and
 * version).  What the counters hold: inference_count (rows),
 * execution_count (model runs), success and fail counts, compute_infer
 * (runs and their time).  Durations the backend does not measure
 * (queue, compute_input/output), last_inference and batch_stats stay 0.
 * Needs a metrics zone ("infergate_metrics;" somewhere).
 */

static ngx_int_t
ngx_http_ig_grpc_statistics(ngx_http_request_t *r, ngx_http_ig_grpc_t *g,
    const uint8_t *msg, size_t len)
{
    u_char                              *buf;
    size_t                               n;
    uint32_t                             i, j, f, nm;
    uint64_t                             fails;
    ngx_uint_t                           k;
    ngx_http_ig_ctx_t                   *ctx;
    ig_ctl_stats_t                      *st;
    const ig_ctl_model_t                *m;
    const ig_ctl_models_t               *ms;
    ig_ctl_model_stats_t                *mst;
    ig_ctl_model_stats_t               **found;
    Inference__ModelStatistics          *out, **outs;
    Inference__InferStatistics          *is;
    Inference__StatisticDuration        *d;
    Inference__ModelStatisticsRequest   *req;
    Inference__ModelStatisticsResponse   resp;

    req = inference__model_statistics_request__unpack(&g->alloc, len, msg);

    if (req == NULL) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                       "malformed ModelStatisticsRequest");
    }

    ngx_http_ig_grpc_check_model(r, req->name);

    ms = ngx_http_ig_backend_models(g->backend);

    if (ms == NULL || !ngx_http_ig_backend_ready(g->backend)) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000,
                                       "the inference backend is not "
                                       "connected");
    }

    if (!ngx_http_ig_metrics_on()) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_FAILED_PRECONDITION, -1,
                                       "ModelStatistics reads the metrics "
                                       "zone: configure \"infergate_metrics;"
                                       "\" in a location");
    }

    nm = ngx_min(ms->nmodels, IG_RING_MAX_MODELS);

    buf = ngx_palloc(r->pool, IG_CTL_STATS_MAX);
    found = ngx_pcalloc(r->pool, (nm + 1) * sizeof(ig_ctl_model_stats_t *));
    outs = ngx_palloc(r->pool, (nm + 1) * sizeof(Inference__ModelStatistics *));

    if (buf == NULL || found == NULL || outs == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* this backend's figures (a pool's summed) by model name and version */

    n = ngx_http_ig_metrics_backend_copy(ngx_http_ig_backend_name(g->backend),
                                         buf, IG_CTL_STATS_MAX);
    st = (ig_ctl_stats_t *) buf;

    for (i = 0; n && i < st->nmodels; i++) {
        mst = &st->models[i];

        for (j = 0; j < nm; j++) {
            m = &ms->models[j];

            if (found[j] == NULL
                && ngx_strncmp(mst->name, m->name, IG_MODEL_NAME_MAX) == 0
                && ngx_strncmp(mst->version, m->version,
                               IG_RING_VERSION_MAX) == 0)
            {
                found[j] = mst;
            }
        }
    }

    ctx = ngx_http_ig_find_ctx(r);

    inference__model_statistics_response__init(&resp);
    resp.model_stats = outs;

    for (j = 0; j < nm; j++) {
        m = &ms->models[j];

        if (m->name[0] == '\0'
            || (req->name[0] && ngx_strncmp(req->name, m->name,
                                            IG_MODEL_NAME_MAX) != 0)
            || (req->version[0] && ngx_strncmp(req->version, m->version,
                                               IG_RING_VERSION_MAX) != 0))
        {
            continue;
        }

        if (req->name[0] == '\0' && ctx && ctx->key && ctx->key->nmodels) {
            for (k = 0; k < ctx->key->nmodels; k++) {
                if (ctx->key->models[k].len
                    == ngx_strnlen((u_char *) m->name, IG_MODEL_NAME_MAX)
                    && ngx_strncmp(ctx->key->models[k].data, m->name,
                                   ctx->key->models[k].len) == 0)
                {
                    break;
                }
            }

            if (k == ctx->key->nmodels) {
                continue;             /* a model this key may not use */
            }
        }

        out = ngx_pcalloc(r->pool, sizeof(Inference__ModelStatistics));
        is = ngx_pcalloc(r->pool, sizeof(Inference__InferStatistics));
        d = ngx_pcalloc(r->pool, 3 * sizeof(Inference__StatisticDuration));

        if (out == NULL || is == NULL || d == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        inference__model_statistics__init(out);
        inference__infer_statistics__init(is);

        for (i = 0; i < 3; i++) {
            inference__statistic_duration__init(&d[i]);
        }

        out->name = ngx_pnalloc(r->pool, IG_MODEL_NAME_MAX
                                         + IG_RING_VERSION_MAX);
        if (out->name == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(out->name, m->name, IG_MODEL_NAME_MAX);
        out->name[IG_MODEL_NAME_MAX - 1] = '\0';
        out->version = out->name + IG_MODEL_NAME_MAX;
        ngx_memcpy(out->version, m->version, IG_RING_VERSION_MAX);
        out->version[IG_RING_VERSION_MAX - 1] = '\0';

        mst = found[j];

        if (mst) {
            fails = 0;

            for (f = 0; f < IG_STATS_NSTATUS; f++) {
                fails += mst->failures[f];
            }

            out->inference_count = mst->rows;
            out->execution_count = mst->batches;
            d[0].count = mst->requests > fails ? mst->requests - fails : 0;
            d[1].count = fails;
            d[2].count = mst->run_count;
            d[2].ns = mst->run_sum_us * 1000;
        }

        is->success = &d[0];
        is->fail = &d[1];
        is->compute_infer = &d[2];
        out->inference_stats = is;

        outs[resp.n_model_stats++] = out;
    }

    if (resp.n_model_stats == 0 && req->name[0]) {
        return ngx_http_ig_grpc_unknown_model(r, g, req->name,
                                              req->version);
    }

    return ngx_http_ig_grpc_reply(r, &resp.base);
}


static ngx_int_t
ngx_http_ig_grpc_unknown_model(ngx_http_request_t *r, ngx_http_ig_grpc_t *g,
    const char *name, const char *version)
{
    if (!ngx_http_ig_backend_ready(g->backend)) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000,
                                       "the inference backend is not "
                                       "connected");
    }

    if (version[0]) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_NOT_FOUND, -1,
                                       "unknown model \"%s\" version \"%s\"",
                                       name, version);
    }

    return ngx_http_ig_grpc_status(r, IG_GRPC_NOT_FOUND, -1,
                                   "unknown model \"%s\"", name);
}


/*
 * ModelInfer: decodes the inputs straight into a slot and submits it.
 * NGX_DONE: waiting for the backend (the deadline armed), or answered.
 */

static ngx_int_t
ngx_http_ig_grpc_infer(ngx_http_request_t *r, ngx_http_ig_grpc_t *g,
    const uint8_t *msg, size_t len)
{
    int                             code;
    char                            err[256];
    size_t                          floats;
    ngx_int_t                       rc;
    ngx_str_t                       name, version;
    ngx_http_ig_ctx_t              *ctx;
    const ig_ctl_model_t           *m;
    Inference__ModelInferRequest   *req;

    req = inference__model_infer_request__unpack(&g->alloc, len, msg);

    if (req == NULL) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_INVALID_ARGUMENT, -1,
                                       "malformed ModelInferRequest");
    }

    ngx_http_ig_grpc_check_model(r, req->model_name);

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&ctx->action, "infer");

    if (!ngx_http_ig_backend_ready(g->backend)) {
        ngx_str_set(&ctx->action, "backend_unavailable");
        return ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000,
                                       "the inference backend is not "
                                       "connected");
    }

    m = ngx_http_ig_backend_model(g->backend,
                                  ngx_http_ig_grpc_str(&name,
                                                       req->model_name),
                                  req->model_version[0]
                                  ? ngx_http_ig_grpc_str(&version,
                                                         req->model_version)
                                  : NULL);

    if (m == NULL) {
        return ngx_http_ig_grpc_unknown_model(r, g, req->model_name,
                                              req->model_version);
    }

    if (!m->ready) {
        ngx_str_set(&ctx->action, "backend_unavailable");
        return ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000,
                                       "the model is not ready");
    }

    /* the model list may be replaced before the answer: keep a copy */

    g->meta = m->meta;
    ngx_memcpy(g->model, m->name, IG_MODEL_NAME_MAX);
    ngx_memcpy(g->version, m->version, IG_RING_VERSION_MAX);
    g->model[IG_MODEL_NAME_MAX - 1] = '\0';
    g->version[IG_RING_VERSION_MAX - 1] = '\0';
    g->id = req->id;

    rc = ngx_http_ig_backend_reserve(g->backend, &g->br, r);

    if (rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_str_set(&ctx->action, "backend_unavailable");
        return ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000, "%s",
                                       rc == NGX_BUSY
                                       ? "too many inference requests in "
                                         "flight"
                                       : "the inference backend is not "
                                         "connected");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    floats = ngx_http_ig_backend_slot_floats(g->backend);

    code = ig_grpc_decode_infer(req, &g->meta, g->br.slot->data, floats,
                                &g->rows, &g->raw, err, sizeof(err));

    if (code == IG_GRPC_OK && g->rows * (size_t) g->meta.noutputs > floats) {
        code = IG_GRPC_RESOURCE_EXHAUSTED;
    }

    if (code != IG_GRPC_OK) {
        ngx_http_ig_backend_release(&g->br);

        if (code == IG_GRPC_INVALID_ARGUMENT) {
            return ngx_http_ig_grpc_status(r, code, -1, "%s", err);
        }

        return ngx_http_ig_grpc_status(r, code, -1,
                                       "the tensors do not fit in one "
                                       "backend slot: send fewer rows");
    }

    g->br.handler = ngx_http_ig_grpc_infer_done;
    g->br.data = g;

    if (ngx_http_ig_backend_submit(&g->br, m->id, (uint32_t) g->rows,
                                   (uint32_t) (g->rows * g->meta.nfeatures))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (g->has_deadline) {
        ngx_add_timer(&g->timer, (ngx_msec_int_t) (g->deadline
                                                   - ngx_current_msec) > 0
                                 ? g->deadline - ngx_current_msec : 1);
    }

    /* a client that leaves ends the request now; the slot comes back later */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


static void
ngx_http_ig_grpc_infer_done(ngx_http_ig_backend_req_t *br, ngx_uint_t how)
{
    size_t                                       n, i;
    ngx_int_t                                    rc;
    ig_ring_slot_t                              *slot;
    ngx_http_request_t                          *r;
    ngx_http_ig_ctx_t                           *ctx;
    ngx_http_ig_grpc_t                          *g;
    ProtobufCBinaryData                          raw;
    Inference__InferTensorContents               contents;
    Inference__ModelInferResponse                resp;
    Inference__ModelInferResponse__InferOutputTensor  out, *pout;
    int64_t                                      shape[IG_MODEL_MAX_DIMS];
#if !(NGX_HAVE_LITTLE_ENDIAN)
    uint32_t                                     u;
    u_char                                      *p;
#endif

    r = br->request;
    g = br->data;

    if (g->finished) {
        return;                 /* the deadline answered already */
    }

    g->finished = 1;

    if (g->timer.timer_set) {
        ngx_del_timer(&g->timer);
    }

    ctx = ngx_http_ig_find_ctx(r);

    if (how == NGX_HTTP_IG_BE_DOWN) {
        rc = ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000,
                                     "the inference backend went away");
        goto done;
    }

    if (how == NGX_HTTP_IG_BE_TIMEOUT) {
        rc = ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000,
                                     "the inference backend did not answer "
                                     "in time");
        goto done;
    }

    slot = br->slot;

    if (ctx) {
        ctx->batch_rows = slot->batch_rows;
        ctx->backend_us = (br->done_ns - br->submit_ns) / 1000;
    }

    switch (slot->status) {

    case IG_RING_OK:
        break;

    case IG_RING_EQUEUE_FULL:
    case IG_RING_EQUEUE_TIMEOUT:
    case IG_RING_ESHUTDOWN:
    case IG_RING_ENOMODEL:
        if (ctx) {
            ngx_str_set(&ctx->action, "backend_unavailable");
        }

        rc = ngx_http_ig_grpc_status(r, IG_GRPC_UNAVAILABLE, 1000, "%s",
                 slot->status == IG_RING_EQUEUE_FULL
                 ? "the inference queue is full"
                 : slot->status == IG_RING_EQUEUE_TIMEOUT
                 ? "the request waited too long in the inference queue"
                 : slot->status == IG_RING_ESHUTDOWN
                 ? "the inference backend is shutting down"
                 : "the model was unloaded");
        goto done;

    default: /* IG_RING_EBADREQ, IG_RING_EMODEL */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "infergate grpc: the backend failed the request "
                      "(status %uD)", slot->status);
        rc = ngx_http_ig_grpc_status(r, IG_GRPC_INTERNAL, -1,
                                     "the model failed on this request");
        goto done;
    }

    n = g->rows * g->meta.noutputs;

    if (slot->out_floats != n
        || n > ngx_http_ig_backend_slot_floats(br->backend))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "infergate grpc: the backend answered %uD floats "
                      "for %uz", slot->out_floats, n);
        rc = ngx_http_ig_grpc_status(r, IG_GRPC_INTERNAL, -1,
                                     "the backend's answer does not match "
                                     "the model");
        goto done;
    }

    inference__model_infer_response__init(&resp);
    resp.model_name = g->model;
    resp.model_version = g->version;
    resp.id = g->id;

    inference__model_infer_response__infer_output_tensor__init(&out);
    out.name = g->meta.output.name;
    out.datatype = "FP32";
    out.shape = shape;

    if (g->meta.output.ndims == 0 || g->meta.output.ndims > IG_MODEL_MAX_DIMS)
    {
        shape[0] = (int64_t) g->rows;
        shape[1] = g->meta.noutputs;
        out.n_shape = 2;

    } else {
        for (i = 0; i < g->meta.output.ndims; i++) {
            shape[i] = g->meta.output.dims[i];
        }

        if (shape[0] < 0) {
            shape[0] = (int64_t) g->rows;
        }

        out.n_shape = g->meta.output.ndims;
    }

    pout = &out;
    resp.n_outputs = 1;
    resp.outputs = &pout;

    /* the answer mirrors the request: raw for raw, typed for typed */

    if (g->raw) {
        raw.len = n * sizeof(float);
#if (NGX_HAVE_LITTLE_ENDIAN)
        raw.data = (uint8_t *) slot->data;
#else
        raw.data = ngx_pnalloc(r->pool, raw.len ? raw.len : 1);
        if (raw.data == NULL) {
            rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            goto done;
        }

        for (i = 0, p = raw.data; i < n; i++) {
            ngx_memcpy(&u, &slot->data[i], 4);
            *p++ = (u_char) u;
            *p++ = (u_char) (u >> 8);
            *p++ = (u_char) (u >> 16);
            *p++ = (u_char) (u >> 24);
        }
#endif
        resp.n_raw_output_contents = 1;
        resp.raw_output_contents = &raw;

    } else {
        inference__infer_tensor_contents__init(&contents);
        contents.n_fp32_contents = n;
        contents.fp32_contents = slot->data;
        out.contents = &contents;
    }

    /* packed now: the slot is freed when this handler returns */

    rc = ngx_http_ig_grpc_reply(r, &resp.base);

done:

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/* grpc-timeout passed while the backend had the request */

static void
ngx_http_ig_grpc_deadline(ngx_event_t *ev)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    ngx_http_ig_ctx_t   *ctx;
    ngx_http_ig_grpc_t  *g;

    r = ev->data;
    c = r->connection;

    g = ngx_http_get_module_ctx(r, ngx_http_infergate_grpc_module);

    if (g == NULL || g->finished) {
        return;
    }

    /* the slot comes back to the backend client later, and is dropped */

    g->finished = 1;

    ctx = ngx_http_ig_find_ctx(r);
    if (ctx) {
        ngx_str_set(&ctx->action, "deadline_exceeded");
    }

    rc = ngx_http_ig_grpc_status(r, IG_GRPC_DEADLINE_EXCEEDED, -1,
                                 "the deadline (grpc-timeout) passed before "
                                 "the inference backend answered");

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_ig_grpc_cleanup(void *data)
{
    ngx_http_ig_grpc_t  *g = data;

    if (g->timer.timer_set) {
        ngx_del_timer(&g->timer);
    }
}


/* the body in one piece: as it is when it fits one buffer, else copied */

static ngx_int_t
ngx_http_ig_grpc_read_body(ngx_http_request_t *r, u_char **body, size_t *len)
{
    u_char       *p;
    size_t        size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *body = NULL;
    *len = 0;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        *body = cl->buf->pos;
        *len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += (size_t) ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, size ? size : 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *body = p;
    *len = size;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    return NGX_OK;
}


/* one message, then the trailers grpc-status: 0 */

static ngx_int_t
ngx_http_ig_grpc_reply(ngx_http_request_t *r, const ProtobufCMessage *msg)
{
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    len = protobuf_c_message_get_packed_size(msg);

    if (len > 0xffffffff) {
        return ngx_http_ig_grpc_status(r, IG_GRPC_INTERNAL, -1,
                                       "the answer is too large");
    }

    b = ngx_create_temp_buf(r->pool, IG_GRPC_PREFIX + len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ig_grpc_prefix(b->last, len);
    b->last += IG_GRPC_PREFIX;
    b->last += protobuf_c_message_pack(msg, b->last);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = ngx_http_ig_grpc_type;
    r->headers_out.content_type_len = ngx_http_ig_grpc_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = -1;

    /*
     * A ModelInfer reply may be cached (its message; the cache filter adds
     * grpc-status: 0 on a hit, and keeps no stale answers for gRPC);
     * readiness, metadata and statistics never are.
     */

    if (!ngx_http_ig_grpc_cacheable(r)
        && ngx_http_ig_grpc_push(&r->headers_out.headers, "cache-control",
                                 (u_char *) "no-store", 8) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ig_grpc_push(&r->headers_out.trailers, "grpc-status",
                              (u_char *) "0", 1) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->expect_trailers = 1;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_ig_grpc_status(ngx_http_request_t *r, ngx_uint_t code,
    ngx_int_t pushback_ms, const char *fmt, ...)
{
    u_char   *last;
    va_list   args;
    u_char    msg[512];

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg), fmt, args);
    va_end(args);

    return ngx_http_ig_grpc_trailers_only(r, code, pushback_ms, msg,
                                          last - msg);
}


/*
 * Trailers-Only: :status 200, content-type, grpc-status, grpc-message
 * (percent-encoded) and, when given, grpc-retry-pushback-ms, in the one
 * HEADERS frame that ends the stream.  Returns what the request is
 * finalized with.
 */

static ngx_int_t
ngx_http_ig_grpc_trailers_only(ngx_http_request_t *r, ngx_uint_t code,
    ngx_int_t pushback_ms, u_char *msg, size_t len)
{
    if (r->header_sent) {
        return NGX_ERROR;
    }

    if (ngx_http_ig_grpc_trailers_only_headers(r, code, pushback_ms, msg, len)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_send_header(r);
}


/* the headers of Trailers-Only, in headers_out; NGX_OK or NGX_ERROR */

static ngx_int_t
ngx_http_ig_grpc_trailers_only_headers(ngx_http_request_t *r,
    ngx_uint_t code, ngx_int_t pushback_ms, u_char *msg, size_t len)
{
    u_char  *p, *last;
    u_char   num[NGX_INT_T_LEN];

    p = ngx_pnalloc(r->pool, len * 3 + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ig_grpc_percent_encode(p, msg, len);

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = ngx_http_ig_grpc_type;
    r->headers_out.content_type_len = ngx_http_ig_grpc_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = -1;

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    if (ngx_http_ig_grpc_push(&r->headers_out.headers, "cache-control",
                              (u_char *) "no-store", 8) == NULL
        || ngx_http_ig_grpc_push(&r->headers_out.headers, "grpc-status", num,
                                 ngx_sprintf(num, "%ui", code) - num)
           == NULL
        || ngx_http_ig_grpc_push(&r->headers_out.headers, "grpc-message", p,
                                 last - p) == NULL)
    {
        return NGX_ERROR;
    }

    if (pushback_ms >= 0) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL
            || ngx_http_ig_grpc_push(&r->headers_out.headers,
                                     "grpc-retry-pushback-ms", p,
                                     ngx_sprintf(p, "%i", pushback_ms) - p)
               == NULL)
        {
            return NGX_ERROR;
        }
    }

    r->expect_trailers = 0;
    r->header_only = 1;

    return NGX_OK;
}


/* the value is copied: the caller's may be on its stack */

static ngx_table_elt_t *
ngx_http_ig_grpc_push(ngx_list_t *list, const char *key, u_char *value,
    size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NULL;
    }

    h->value.data = ngx_pnalloc(list->pool, len ? len : 1);
    if (h->value.data == NULL) {
        h->hash = 0;
        return NULL;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    ngx_memcpy(h->value.data, value, len);
    h->value.len = len;

    return h;
}


/*
 * An admission refusal (ngx_http_ig_problem()) as the gRPC status that
 * means it, with its detail as grpc-message.  A rate limit's Retry-After
 * (seconds) becomes grpc-retry-pushback-ms.  Finalizes the request and
 * returns NGX_DONE, as ngx_http_ig_problem() does.
 */

ngx_int_t
ngx_http_ig_grpc_problem(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *detail)
{
    u_char           *p;
    ngx_int_t         rc, pushback, n;
    ngx_uint_t        code, i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;
    u_char            msg[512];

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    code = ngx_http_ig_grpc_code(status);

    /* Retry-After, delta-seconds, as the limit set it */

    pushback = -1;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != sizeof("Retry-After") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Retry-After",
                               sizeof("Retry-After") - 1) != 0)
        {
            continue;
        }

        n = ngx_atoi(h[i].value.data, h[i].value.len);

        if (n != NGX_ERROR && code != IG_GRPC_UNAUTHENTICATED
            && code != IG_GRPC_PERMISSION_DENIED)
        {
            pushback = n > 2147483 ? 2147483647 : n * 1000;
        }
    }

    p = msg;

    if (code == IG_GRPC_UNIMPLEMENTED) {
        p = ngx_cpymem(p, "gRPC is not served on this location: ",
                       sizeof("gRPC is not served on this location: ") - 1);
    }

    p = ngx_cpymem(p, detail->data,
                   ngx_min(detail->len, (size_t) (msg + sizeof(msg) - p)));

    rc = ngx_http_ig_grpc_trailers_only(r, code, pushback, msg, p - msg);

    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/* the gRPC status that means an HTTP refusal */

static ngx_uint_t
ngx_http_ig_grpc_code(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_UNAUTHORIZED:
        return IG_GRPC_UNAUTHENTICATED;
    case NGX_HTTP_FORBIDDEN:
        return IG_GRPC_PERMISSION_DENIED;
    case NGX_HTTP_NOT_FOUND:
        return IG_GRPC_NOT_FOUND;
    case NGX_HTTP_TOO_MANY_REQUESTS:
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return IG_GRPC_RESOURCE_EXHAUSTED;
    case NGX_HTTP_UNSUPPORTED_MEDIA_TYPE:
    case NGX_HTTP_NOT_ALLOWED:
        return IG_GRPC_UNIMPLEMENTED;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
    case NGX_HTTP_BAD_GATEWAY:
        return IG_GRPC_UNAVAILABLE;
    case NGX_HTTP_GATEWAY_TIME_OUT:
    case NGX_HTTP_REQUEST_TIME_OUT:
        return IG_GRPC_DEADLINE_EXCEEDED;
    default:
        return (status >= 400 && status < 500) ? IG_GRPC_INVALID_ARGUMENT
                                               : IG_GRPC_INTERNAL;
    }
}


/*
 * An error response nginx makes itself for a gRPC call (client_max_body_size
 * exceeded mid-stream: 413; a body read that failed; a 500), or another
 * module's error on a gRPC location, would reach a gRPC client as a bare
 * HTTP status, which it maps to UNKNOWN or a retryable UNAVAILABLE: it
 * goes out as Trailers-Only with the status that means it instead, and
 * without its HTML body (nginx sends no body after a header_only header).
 * Any other answer that is not application/grpc, on a request infergate
 * took part in, becomes INTERNAL.
 */

static ngx_int_t
ngx_http_ig_grpc_header_filter(ngx_http_request_t *r)
{
    u_char             *p;
    ngx_uint_t          status;
    ngx_http_ig_ctx_t  *ctx;
    u_char              msg[128];

    status = r->headers_out.status;

    if (r != r->main || r->header_sent || !ngx_http_ig_grpc_request(r)
        || (r->headers_out.content_type.len >= ngx_http_ig_grpc_type.len
            && ngx_strncasecmp(r->headers_out.content_type.data,
                               ngx_http_ig_grpc_type.data,
                               ngx_http_ig_grpc_type.len) == 0))
    {
        return ngx_http_next_header_filter(r);
    }

    if (status < NGX_HTTP_BAD_REQUEST) {
        /*
         * Not gRPC, yet not an error, where infergate took part: an
         * origin behind a limit (the cache keeps gRPC entries apart from
         * HTTP ones, whatever its key=).  Elsewhere (no
         * precontent stage ran, no key was taken) such an answer is left
         * as it is.
         */
        ctx = ngx_http_get_module_ctx(r, ngx_http_infergate_module);

        if (ngx_http_get_module_ctx(r, ngx_http_infergate_grpc_module)
            == NULL
            && (ctx == NULL || (ctx->step == 0 && ctx->key == NULL)))
        {
            return ngx_http_next_header_filter(r);
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "infergate grpc: the location answered a gRPC call "
                      "with HTTP %ui \"%V\"", status,
                      &r->headers_out.content_type);

        p = ngx_cpymem(msg, "the location answered with a response that "
                       "is not gRPC",
                       sizeof("the location answered with a response that "
                              "is not gRPC") - 1);
        status = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else if (status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        p = ngx_cpymem(msg, "the request is larger than the location's "
                       "client_max_body_size",
                       sizeof("the request is larger than the location's "
                              "client_max_body_size") - 1);

    } else {
        p = ngx_snprintf(msg, sizeof(msg), "the gateway answered HTTP %ui",
                         status);
    }

    if (ngx_http_ig_grpc_trailers_only_headers(r,
                                               ngx_http_ig_grpc_code(status),
                                               -1, msg, p - msg)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_ig_grpc_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ig_grpc_header_filter;

    return NGX_OK;
}


static void *
ngx_http_ig_grpc_palloc(void *data, size_t size)
{
    return ngx_palloc(data, size ? size : 1);
}


/* the request pool frees it all at once */

static void
ngx_http_ig_grpc_pfree(void *data, void *p)
{
}
