
/*
 * Copyright (C) infergate authors
 *
 * The response cache's module: the infergate_redis, infergate_cache and
 * infergate_cache_purge directives, and the filters that label every
 * response (X-Cache-Status), capture a cacheable miss (stored after the
 * last buffer has gone to the client) and purge after a 2xx write.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"
#include "ngx_http_infergate_cache.h"


static ngx_int_t ngx_http_ig_cache_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_cache_filter_init(ngx_conf_t *cf);
static void *ngx_http_ig_cache_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ig_cache_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_ig_cache_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_cache_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_cache_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_cache_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_uint_t ngx_http_ig_cache_cacheable(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);


static ngx_command_t  ngx_http_ig_cache_commands[] = {

    { ngx_string("infergate_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ig_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ig_cache_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_cache_purge"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_ANY,
      ngx_http_ig_cache_purge_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_cache_module_ctx = {
    ngx_http_ig_cache_preconfiguration,    /* preconfiguration */
    ngx_http_ig_cache_filter_init,         /* postconfiguration */

    ngx_http_ig_cache_create_main_conf,    /* create main configuration */
    ngx_http_ig_cache_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_cache_create_loc_conf,     /* create location configuration */
    ngx_http_ig_cache_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_cache_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_cache_module_ctx,  /* module context */
    ngx_http_ig_cache_commands,            /* module directives */
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


static ngx_http_variable_t  ngx_http_ig_cache_vars[] = {

    { ngx_string("infergate_cache_status"), NULL,
      ngx_http_ig_cache_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_str_t  ngx_http_ig_cache_statuses[] = {
    ngx_null_string,
    ngx_string("MISS"),
    ngx_string("HIT"),
    ngx_string("BYPASS")
};


static ngx_int_t
ngx_http_ig_cache_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                     *st;
    ngx_http_ig_cache_ctx_t       *cc;
    ngx_http_ig_cache_loc_conf_t  *clcf;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_cache_module);
    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);

    /* delete-after-write: the write's response does not wait for Redis */

    if (clcf->purge
        && (r->method & (NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH
                         |NGX_HTTP_DELETE))
        && r->headers_out.status >= 200 && r->headers_out.status < 300)
    {
        ngx_http_ig_cache_purge(r, clcf->purge, clcf->cache);
    }

    if (cc == NULL || cc->header_done || cc->status == NGX_HTTP_IG_CST_NONE)
    {
        return ngx_http_next_header_filter(r);
    }

    cc->header_done = 1;

    if (cc->status == NGX_HTTP_IG_CST_MISS && cc->leased) {

        if (ngx_http_ig_cache_cacheable(r, cc)) {
            cc->capture = 1;
            cc->resp_status = r->headers_out.status;
            cc->resp_type = r->headers_out.content_type;
            cc->last = &cc->body;
            r->filter_need_in_memory = 1;

        } else {
            cc->status = NGX_HTTP_IG_CST_BYPASS;
            ngx_http_ig_cache_release(cc);
        }
    }

    if (cc->status != NGX_HTTP_IG_CST_HIT) {
        st = &ngx_http_ig_cache_statuses[cc->status];

        if (ngx_http_ig_add_header(r, "X-Cache-Status", st->data, st->len)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


static ngx_uint_t
ngx_http_ig_cache_cacheable(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc)
{
    ngx_uint_t        i, *st, ok;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ok = 0;
    st = cc->conf->statuses->elts;

    for (i = 0; i < cc->conf->statuses->nelts; i++) {
        if (st[i] == r->headers_out.status) {
            ok = 1;
            break;
        }
    }

    if (!ok || r->header_only) {
        return 0;
    }

    if (r->headers_out.content_length_n > (off_t) cc->conf->max_size) {
        return 0;
    }

    if (r->headers_out.content_encoding
        && r->headers_out.content_encoding->hash)
    {
        return 0;
    }

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

        if (h[i].hash == 0) {
            continue;
        }

        if (h[i].key.len == 10
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Set-Cookie", 10)
               == 0)
        {
            return 0;
        }

        if (h[i].key.len == 13
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Cache-Control",
                               13) == 0
            && (ngx_strlcasestrn(h[i].value.data,
                                 h[i].value.data + h[i].value.len,
                                 (u_char *) "private", 7 - 1)
                || ngx_strlcasestrn(h[i].value.data,
                                    h[i].value.data + h[i].value.len,
                                    (u_char *) "no-store", 8 - 1)))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_ig_cache_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    size_t                    n;
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_uint_t                last;
    ngx_chain_t              *cl, *nl;
    ngx_http_ig_cache_ctx_t  *cc;

    if (r != r->main) {
        return ngx_http_next_body_filter(r, in);
    }

    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);

    if (cc == NULL || !cc->capture || in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* a copy of each buffer; the client's output goes on unchanged */

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (b->last_buf) {
            last = 1;
        }

        if (ngx_buf_special(b)) {
            continue;
        }

        if (!ngx_buf_in_memory(b)) {
            goto abort;
        }

        n = b->last - b->pos;
        if (n == 0) {
            continue;
        }

        if (cc->size + n > cc->conf->max_size) {
            goto abort;
        }

        nl = ngx_alloc_chain_link(r->pool);
        if (nl == NULL) {
            goto abort;
        }

        nl->buf = ngx_create_temp_buf(r->pool, n);
        if (nl->buf == NULL) {
            goto abort;
        }

        nl->buf->last = ngx_cpymem(nl->buf->pos, b->pos, n);
        nl->next = NULL;
        *cc->last = nl;
        cc->last = &nl->next;
        cc->size += n;
    }

    rc = ngx_http_next_body_filter(r, in);

    if (last) {
        cc->capture = 0;

        if (rc != NGX_ERROR
            && r->headers_out.status == cc->resp_status
            && (r->headers_out.content_length_n < 0
                || r->headers_out.content_length_n == (off_t) cc->size))
        {
            ngx_http_ig_cache_store(r, cc);

        } else {
            ngx_http_ig_cache_release(cc);
        }
    }

    return rc;

abort:

    cc->capture = 0;
    ngx_http_ig_cache_release(cc);

    return ngx_http_next_body_filter(r, in);
}


ngx_int_t
ngx_http_ig_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *st;
    ngx_http_ig_cache_ctx_t  *cc;

    cc = ngx_http_get_module_ctx(r->main, ngx_http_infergate_cache_module);

    if (cc == NULL || cc->status == NGX_HTTP_IG_CST_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    st = &ngx_http_ig_cache_statuses[cc->status];

    v->data = st->data;
    v->len = st->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_cache_preconfiguration(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_ig_cache_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_cache_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ig_cache_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_ig_cache_body_filter;

    return ngx_http_ig_cache_init_scripts();
}


static void *
ngx_http_ig_cache_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ig_redis_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_redis_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->servers, cf->pool, 2,
                       sizeof(ngx_http_ig_redis_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


static char *
ngx_http_ig_cache_init_main_conf(ngx_conf_t *cf, void *conf)
{
    return ngx_http_ig_redis_check(cf, conf);
}


static void *
ngx_http_ig_cache_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_cache_loc_conf_t));
}


static char *
ngx_http_ig_cache_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_cache_loc_conf_t *prev = parent;
    ngx_http_ig_cache_loc_conf_t *conf = child;

    if (!conf->cache_set) {
        conf->cache = prev->cache;
        conf->cache_set = prev->cache_set;
    }

    if (!conf->purge_set) {
        conf->purge = prev->purge;
        conf->purge_set = prev->purge_set;
    }

    if (conf->purge && conf->purge->redis == NULL) {
        if (conf->cache == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"infergate_cache_purge\" needs redis=NAME "
                               "or \"infergate_cache\" in the same "
                               "location");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}
