
/*
 * Copyright (C) infergate authors
 *
 * Request id: in a location with infergate_audit, the audit record's
 * event.id goes back to the client as X-Request-ID.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


static ngx_int_t ngx_http_ig_request_id_filter_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_request_id_header_filter(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_request_id_header(ngx_http_request_t *r);


static ngx_http_module_t  ngx_http_infergate_request_id_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_request_id_filter_init,    /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_request_id_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_request_id_filter_module_ctx, /* module context */
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
ngx_http_ig_request_id_header_filter(ngx_http_request_t *r)
{
    ngx_http_ig_audit_loc_conf_t  *alcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_audit_module);

    if (alcf->log && ngx_http_ig_request_id_header(r) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_next_header_filter(r);
}


/* The record's event.id goes back to the client, so either side can cite it. */

static ngx_int_t
ngx_http_ig_request_id_header(ngx_http_request_t *r)
{
    ngx_str_t  id;

    if (ngx_http_ig_request_id(r, &id) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ig_add_header(r, "X-Request-ID", id.data, id.len);
}

static ngx_int_t
ngx_http_ig_request_id_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ig_request_id_header_filter;

    return NGX_OK;
}
