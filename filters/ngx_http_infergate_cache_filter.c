
/*
 * Copyright (C) infergate authors
 *
 * The response cache's module: the infergate_cache and
 * infergate_cache_purge directives, and the filters that label every
 * response (X-Cache-Status), capture a cacheable miss (stored after the
 * last buffer has gone to the client) and purge after a 2xx write (the
 * purge before it is in the access step).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"
#include "ngx_http_infergate_cache.h"
#include "ngx_http_infergate_grpc.h"


static ngx_int_t ngx_http_ig_cache_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_cache_filter_init(ngx_conf_t *cf);
static void *ngx_http_ig_cache_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_cache_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_cache_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_cache_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_uint_t ngx_http_ig_cache_cacheable(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);
static ngx_uint_t ngx_http_ig_cache_is(ngx_table_elt_t *h, const char *name,
    size_t len);
static ngx_uint_t ngx_http_ig_cache_named(ngx_str_t *name, const char *s);
static ngx_int_t ngx_http_ig_cache_delta(u_char *p, size_t len);
static ngx_int_t ngx_http_ig_cache_swap_body(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_chain_t *in);
static void ngx_http_ig_cache_consume(ngx_chain_t *in);


static ngx_command_t  ngx_http_ig_cache_commands[] = {

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

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

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
    ngx_string("BYPASS"),
    ngx_string("STALE")
};


static ngx_int_t
ngx_http_ig_cache_header_filter(ngx_http_request_t *r)
{
    u_char                         md[32];
    ngx_int_t                      rc;
    ngx_str_t                     *st;
    ngx_http_ig_cache_ctx_t       *cc;
    ngx_http_ig_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_cache_module);
    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);

    if (r != r->main) {
        /* a background refresh (stale-while-revalidate) is captured */

        if (cc == NULL || !cc->refresh || cc->header_done) {
            return ngx_http_next_header_filter(r);
        }

        cc->header_done = 1;

        if (cc->leased && ngx_http_ig_cache_cacheable(r, cc)) {

            if (cc->resp_vary.len) {
                if (ngx_http_ig_cache_variant(r, cc, &cc->resp_vary, md)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                ngx_http_ig_cache_make_key(cc->entry, 'c', cc->tenant, md);
            }

            cc->capture = 1;
            cc->resp_status = r->headers_out.status;
            cc->resp_type = r->headers_out.content_type;
            cc->last = &cc->body;
            r->filter_need_in_memory = 1;

        } else {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "infergate_cache: background refresh got %ui, "
                          "not stored", r->headers_out.status);
            ngx_http_ig_cache_release(cc);
        }

        return ngx_http_next_header_filter(r);
    }

    /*
     * delete-after-write: the purge before the write (the access step)
     * had its reply before the write went to the origin; this one drops
     * what a concurrent reader filled meanwhile, and is not waited for
     */

    if (clcf->purge && (r->method & NGX_HTTP_IG_CACHE_WRITES)) {

        if (r->headers_out.status >= 200 && r->headers_out.status < 300) {
            ngx_http_ig_cache_purge(r, clcf->purge, clcf->cache);

        } else if (cc) {
            /* a failed write: the readers need not wait any longer */
            ngx_http_ig_cache_unlease(cc);
        }
    }

    if (cc == NULL || cc->header_done || cc->status == NGX_HTTP_IG_CST_NONE)
    {
        return ngx_http_next_header_filter(r);
    }

    cc->header_done = 1;

    if (cc->status == NGX_HTTP_IG_CST_MISS) {
        /* a failure (or the breaker's 503) with a stale entry at hand */

        rc = ngx_http_ig_cache_stale_swap(r, cc);
        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (rc == NGX_OK) {
            ngx_http_ig_cache_release(cc);
        }
    }

    if (cc->status == NGX_HTTP_IG_CST_MISS && cc->leased) {

        if (ngx_http_ig_cache_cacheable(r, cc)) {

            if (ngx_http_ig_grpc_request(r)) {
                /*
                 * no stale answers for gRPC: a failure swapped for a
                 * stale message would keep the failure's trailers
                 */
                cc->resp_sie = 0;
                cc->resp_swr = 0;
            }

            if (cc->resp_vary.len) {
                /* the variant of this request's values of those fields */

                if (ngx_http_ig_cache_variant(r, cc, &cc->resp_vary, md)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                ngx_http_ig_cache_make_key(cc->entry, 'c', cc->tenant, md);
            }

            cc->capture = 1;
            cc->resp_status = r->headers_out.status;
            cc->resp_type = r->headers_out.content_type;
            cc->last = &cc->body;
            r->filter_need_in_memory = 1;

        } else {
            cc->status = NGX_HTTP_IG_CST_BYPASS;
            cc->bypass = NGX_HTTP_IG_BYP_RESPONSE;
            ngx_http_ig_cache_release(cc);
        }
    }

    if (cc->direct && ngx_http_ig_grpc_request(r)
        && r->headers_out.status == NGX_HTTP_OK)
    {
        /* a gRPC hit: the stored message, then grpc-status: 0 */

        if (ngx_http_ig_grpc_cache_replay(r) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (!cc->direct) {
        /* a hit or a stale answer from the lookup has its own */

        st = &ngx_http_ig_cache_statuses[cc->status];

        if (ngx_http_ig_add_header(r, "X-Cache-Status", st->data, st->len)
            != NGX_OK
            || ngx_http_ig_cache_status_header(r, cc) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return ngx_http_next_header_filter(r);
}


/*
 * RFC 9111 for a shared cache: not stored with response no-store,
 * no-cache (in any form: the cache cannot revalidate), private (in any
 * form), Vary: *, Set-Cookie, a freshness lifetime (s-maxage, else
 * max-age, else Expires) of 0, already used up by the response's Age, or
 * invalid; a shorter lifetime than ttl= becomes the entry's.
 */

static ngx_uint_t
ngx_http_ig_cache_cacheable(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc)
{
    u_char           *p, *last;
    time_t            expires, date, t;
    ngx_int_t         smax, max, age, lifetime, rc, sie, swr;
    ngx_str_t         name, arg;
    ngx_uint_t        i, *st, ok;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *exp, *dt;

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

    smax = -1;
    max = -1;
    sie = -1;
    swr = -1;
    age = 0;
    exp = NULL;
    dt = NULL;

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

        if (ngx_http_ig_cache_is(&h[i], "Set-Cookie", 10)) {
            return 0;
        }

        if (ngx_http_ig_cache_is(&h[i], "Expires", 7)) {
            if (exp == NULL) {
                exp = &h[i];
            }

            continue;
        }

        if (ngx_http_ig_cache_is(&h[i], "Date", 4)) {
            dt = &h[i];
            continue;
        }

        if (ngx_http_ig_cache_is(&h[i], "Age", 3)) {
            age = ngx_http_ig_cache_delta(h[i].value.data, h[i].value.len);
            if (age < 0) {
                age = 0;
            }

            continue;
        }

        if (!ngx_http_ig_cache_is(&h[i], "Cache-Control", 13)) {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while ((p = ngx_http_ig_cache_directive_next(p, last, &name, &arg))) {

            if (ngx_http_ig_cache_named(&name, "no-store")
                || ngx_http_ig_cache_named(&name, "no-cache")
                || ngx_http_ig_cache_named(&name, "private"))
            {
                return 0;
            }

            /* the first occurrence counts; an invalid one makes it stale */

            if (ngx_http_ig_cache_named(&name, "s-maxage")) {
                if (smax == -1) {
                    smax = ngx_http_ig_cache_delta(arg.data, arg.len);
                    if (smax < 0) {
                        return 0;
                    }
                }

                continue;
            }

            if (ngx_http_ig_cache_named(&name, "stale-if-error")) {
                if (sie == -1) {
                    sie = ngx_http_ig_cache_delta(arg.data, arg.len);
                    if (sie < 0) {
                        sie = 0;
                    }
                }

                continue;
            }

            if (ngx_http_ig_cache_named(&name, "stale-while-revalidate")) {
                if (swr == -1) {
                    swr = ngx_http_ig_cache_delta(arg.data, arg.len);
                    if (swr < 0) {
                        swr = 0;
                    }
                }

                continue;
            }

            if (ngx_http_ig_cache_named(&name, "max-age")) {
                if (max == -1) {
                    max = ngx_http_ig_cache_delta(arg.data, arg.len);
                    if (max < 0) {
                        return 0;
                    }
                }
            }
        }
    }

    rc = ngx_http_ig_cache_vary_names(r, &r->headers_out.headers.part,
                                      &cc->resp_vary);
    if (rc != NGX_OK) {
        return 0;
    }

    if (smax >= 0) {
        lifetime = smax;

    } else if (max >= 0) {
        lifetime = max;

    } else if (exp) {
        expires = ngx_parse_http_time(exp->value.data, exp->value.len);
        if (expires == NGX_ERROR) {
            return 0;
        }

        date = dt ? ngx_parse_http_time(dt->value.data, dt->value.len)
                  : NGX_ERROR;
        if (date == NGX_ERROR) {
            date = ngx_time();
        }

        t = expires - date;
        lifetime = t > 0 ? (ngx_int_t) ngx_min(t, (time_t) 2147483648LL)
                         : 0;

    } else {
        lifetime = -1;      /* none: ttl= */
    }

    cc->resp_age = age;
    cc->resp_ttl = 0;
    cc->resp_sie = sie;
    cc->resp_swr = swr;

    if (lifetime >= 0) {
        if (lifetime <= age) {
            return 0;
        }

        lifetime -= age;

        if ((ngx_msec_t) lifetime < cc->conf->ttl / 1000 + 1) {
            cc->resp_ttl = (ngx_msec_t) lifetime * 1000;
        }
    }

    return 1;
}


static ngx_uint_t
ngx_http_ig_cache_is(ngx_table_elt_t *h, const char *name, size_t len)
{
    return h->key.len == len
           && ngx_strncasecmp(h->key.data, (u_char *) name, len) == 0;
}


static ngx_uint_t
ngx_http_ig_cache_named(ngx_str_t *name, const char *s)
{
    size_t  len;

    len = ngx_strlen(s);

    return name->len == len
           && ngx_strncasecmp(name->data, (u_char *) s, len) == 0;
}


/* delta-seconds (RFC 9111 1.2.2): -1 if invalid, at most 2^31 */

static ngx_int_t
ngx_http_ig_cache_delta(u_char *p, size_t len)
{
    ngx_int_t  v;

    if (p == NULL || len == 0) {
        return -1;
    }

    v = 0;

    while (len--) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        if (v < 2147483648LL) {
            v = v * 10 + (*p - '0');
        }

        p++;
    }

    return ngx_min(v, 2147483648LL);
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

    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);

    if (r != r->main && (cc == NULL || !cc->refresh)) {
        return ngx_http_next_body_filter(r, in);
    }

    if (cc && cc->swap) {
        return ngx_http_ig_cache_swap_body(r, cc, in);
    }

    if (cc && cc->refresh && !cc->capture) {
        ngx_http_ig_cache_consume(in);
        return NGX_OK;
    }

    if (cc == NULL || !cc->capture || in == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* a copy of each buffer; the client's output goes on unchanged */

    last = 0;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        /* a subrequest's (a refresh's) last buffer: last_in_chain */
        if (b->last_buf || (cc->refresh && b->last_in_chain)) {
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

    if (cc->refresh) {
        /* nobody receives a background refresh's body */
        ngx_http_ig_cache_consume(in);
        rc = NGX_OK;

    } else {
        rc = ngx_http_next_body_filter(r, in);
    }

    if (last) {
        cc->capture = 0;

        if (rc != NGX_ERROR
            && r->headers_out.status == cc->resp_status
            && (r != r->main || !ngx_http_ig_grpc_request(r)
                || ngx_http_ig_grpc_reply_ok(r))
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

    if (cc->refresh) {
        ngx_http_ig_cache_consume(in);
        return NGX_OK;
    }

    return ngx_http_next_body_filter(r, in);
}


static void
ngx_http_ig_cache_consume(ngx_chain_t *in)
{
    ngx_chain_t  *cl;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;

        if (cl->buf->in_file) {
            cl->buf->file_pos = cl->buf->file_last;
        }
    }
}


/*
 * A failure answered with a stale entry: the failure's body is consumed
 * and the entry's goes out in its place, once.
 */

static ngx_int_t
ngx_http_ig_cache_swap_body(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_chain_t *in)
{
    ngx_buf_t    *b;
    ngx_chain_t   out;

    ngx_http_ig_cache_consume(in);

    if (cc->swap_sent) {
        return NGX_OK;
    }

    cc->swap_sent = 1;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    if (!r->header_only) {
        b->pos = cc->e_body.data;
        b->last = cc->e_body.data + cc->e_body.len;
        b->memory = (b->last > b->pos);
    }

    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
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
    return ngx_http_ig_add_variables(cf, ngx_http_ig_cache_vars);
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
