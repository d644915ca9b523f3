
/*
 * Copyright (C) infergate authors
 *
 * RateLimit headers: every response to a request that went through a
 * limit, the proxied 200 as much as the 429, carries the RateLimit
 * fields (infergate_limit_headers).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


static ngx_int_t ngx_http_ig_limit_filter_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_limit_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_limit_headers(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);


static ngx_http_module_t  ngx_http_infergate_limit_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_limit_filter_init,         /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_limit_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_limit_filter_module_ctx, /* module context */
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
ngx_http_ig_limit_header_filter(ngx_http_request_t *r)
{
    ngx_http_ig_ctx_t  *ctx;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_ig_find_ctx(r);

    if (ctx && ctx->nlimits && !ctx->headers_done) {
        ctx->headers_done = 1;

        if (ngx_http_ig_limit_headers(r, ctx) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/* The RateLimit fields, added by the header filter to every response. */

static ngx_int_t
ngx_http_ig_limit_headers(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    u_char                     *pol, *rl, *pp, *rp;
    size_t                      len;
    uint64_t                    t;
    uint32_t                    remaining;
    ngx_uint_t                  i, mode;
    ngx_http_ig_limit_state_t  *st;

    mode = ctx->limit_headers;

    if (ctx->nlimits == 0 || mode == NGX_HTTP_IG_HEADERS_OFF) {
        return NGX_OK;
    }

    if (mode & NGX_HTTP_IG_HEADERS_DRAFT) {
        len = 0;

        for (i = 0; i < ctx->nlimits; i++) {
            len += ctx->limits[i].conf->name.len * 6 + 2
                   + sizeof(";q=;w=, ") - 1 + 2 * NGX_INT32_LEN;
        }

        pol = ngx_pnalloc(r->pool, len);
        rl = ngx_pnalloc(r->pool, len + ctx->nlimits * NGX_INT64_LEN);
        if (pol == NULL || rl == NULL) {
            return NGX_ERROR;
        }

        pp = pol;
        rp = rl;

        for (i = 0; i < ctx->nlimits; i++) {
            st = &ctx->limits[i];

            if (i) {
                pp = ngx_cpymem(pp, ", ", 2);
                rp = ngx_cpymem(rp, ", ", 2);
            }

            if (st->result.allowed) {
                remaining = st->result.remaining;
                t = ig_gcra_ceil_seconds(st->result.reset_us);

            } else {
                remaining = 0;
                t = ig_gcra_ceil_seconds(st->result.retry_after_us);
            }

            /* zone names are nginx tokens: no quote or backslash to escape */

            pp = ngx_sprintf(pp, "\"%V\";q=%uD;w=%uD", &st->conf->name,
                             st->policy.quota, st->policy.window_s);
            rp = ngx_sprintf(rp, "\"%V\";r=%uD;t=%uL", &st->conf->name,
                             remaining, t);
        }

        if (ngx_http_ig_add_header(r, "RateLimit-Policy", pol, pp - pol)
            != NGX_OK
            || ngx_http_ig_add_header(r, "RateLimit", rl, rp - rl) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (mode & NGX_HTTP_IG_HEADERS_LEGACY) {

        /* the most constrained limit speaks for all, as Kong does */

        st = &ctx->limits[0];

        for (i = 1; i < ctx->nlimits; i++) {
            if (ctx->limits[i].result.remaining < st->result.remaining
                || !ctx->limits[i].result.allowed)
            {
                st = &ctx->limits[i];
            }
        }

        if (st->result.allowed) {
            remaining = st->result.remaining;
            t = ig_gcra_ceil_seconds(st->result.reset_us);

        } else {
            remaining = 0;
            t = ig_gcra_ceil_seconds(st->result.retry_after_us);
        }

        pp = ngx_pnalloc(r->pool, 3 * NGX_INT64_LEN);
        if (pp == NULL) {
            return NGX_ERROR;
        }

        rp = ngx_sprintf(pp, "%uD", st->policy.quota);
        pol = ngx_sprintf(rp, "%uD", remaining);
        rl = ngx_sprintf(pol, "%uL", t);

        if (ngx_http_ig_add_header(r, "X-RateLimit-Limit", pp, rp - pp)
            != NGX_OK
            || ngx_http_ig_add_header(r, "X-RateLimit-Remaining", rp,
                                      pol - rp)
               != NGX_OK
            || ngx_http_ig_add_header(r, "X-RateLimit-Reset", pol, rl - pol)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}

static ngx_int_t
ngx_http_ig_limit_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ig_limit_header_filter;

    return NGX_OK;
}
