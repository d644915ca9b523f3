
/*
 * Copyright (C) infergate authors
 *
 * Bloom add: an id created through the gateway (a response status listed
 * in infergate_bloom's add=) goes into the Bloom filter from the header
 * filter, so it counts before the client can see the 201.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_bloom.h"


static ngx_int_t ngx_http_ig_bloom_filter_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_bloom_header_filter(ngx_http_request_t *r);
static void ngx_http_ig_bloom_add(ngx_http_request_t *r);


static ngx_http_module_t  ngx_http_infergate_bloom_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_bloom_filter_init,         /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_bloom_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_bloom_filter_module_ctx, /* module context */
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


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_int_t
ngx_http_ig_bloom_header_filter(ngx_http_request_t *r)
{
    ngx_http_ig_bloom_loc_conf_t  *blcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_bloom_module);

    if (blcf->bloom) {
        ngx_http_ig_bloom_add(r);
    }

    return ngx_http_next_header_filter(r);
}


static void
ngx_http_ig_bloom_add(ngx_http_request_t *r)
{
    ngx_str_t                  key;
    ngx_uint_t                 i, status;
    ngx_http_ig_ctx_t         *ctx;
    ngx_http_ig_bloom_conf_t      *bc;
    ngx_http_ig_bloom_zone_t      *zone;
    ngx_http_ig_bloom_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_bloom_module);
    bc = blcf->bloom;

    if (bc == NULL || bc->nstatus == 0) {
        return;
    }

    status = r->headers_out.status;

    for (i = 0; i < bc->nstatus; i++) {
        if (bc->status[i] == status) {
            break;
        }
    }

    if (i == bc->nstatus) {
        return;
    }

    ctx = ngx_http_ig_find_ctx(r);

    /* once per request; and never the id this guard just refused */

    if (ctx && (ctx->bloom_added || ctx->bloom == NGX_HTTP_IG_BLOOM_MISS)) {
        return;
    }

    if (ngx_http_complex_value(r, &bc->key, &key) != NGX_OK) {
        return;
    }

    if (key.len == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "infergate_bloom: status %ui but the key is empty, "
                      "no id added", status);
        return;
    }

    zone = bc->shm_zone->data;

    (void) ig_bloom_add(zone->bloom, key.data, key.len);

    if (ctx) {
        ctx->bloom_added = 1;
    }

#if (NGX_DEBUG)
    {
    u_char     buf[NGX_HTTP_IG_LOG_MAX];
    ngx_str_t  esc;

    esc = ngx_http_ig_log_escape(buf, key.data, key.len);

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "infergate_bloom: added \"%V\" to \"%V\"", &esc,
                   &zone->name);
    }
#endif
}

static ngx_int_t
ngx_http_ig_bloom_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ig_bloom_header_filter;

    return NGX_OK;
}
