
/*
 * Copyright (C) infergate authors
 *
 * The schema's request-body filter: each buffer of the body goes to the
 * validator as it arrives, before nginx spools it to a temp file, so no
 * second copy of the body is ever assembled.  The stage
 * (ngx_module/ngx_http_infergate_schema.c) starts the read and takes the
 * result; ngx_http_ig_schema_feed() there stops the validator at the end
 * of a binary request's JSON header (Inference-Header-Content-Length).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


static ngx_int_t ngx_http_ig_schema_filter_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_request_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_module_t  ngx_http_infergate_schema_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_schema_filter_init,        /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_schema_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_schema_filter_module_ctx, /* module context */
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


static ngx_http_request_body_filter_pt  ngx_http_ig_next_request_body_filter;


static ngx_int_t
ngx_http_ig_request_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t          *b;
    ngx_chain_t        *cl;
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_infergate_module);

    if (ctx == NULL || ctx->validator == NULL || ctx->body_finished) {
        return ngx_http_ig_next_request_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            ngx_http_ig_schema_feed(r, ctx, b->pos, b->last - b->pos, 0);

        } else if (ngx_buf_size(b)) {
            /* body filters see socket buffers; a file here is a bug */
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "infergate_schema: unexpected file buffer");
            ctx->valid_rc = IG_VALID_NOMEM;
        }

        if (b->last_buf) {
            ngx_http_ig_schema_feed(r, ctx, NULL, 0, 1);
            break;
        }
    }

    return ngx_http_ig_next_request_body_filter(r, in);
}


static ngx_int_t
ngx_http_ig_schema_filter_init(ngx_conf_t *cf)
{
    ngx_http_ig_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_ig_request_body_filter;

    return NGX_OK;
}
