
/*
 * Copyright (C) infergate authors
 *
 * Per-tenant GCRA rate limits in shared memory: one TAT per key in an
 * rbtree with LRU eviction, as limit_req keeps its state, so all workers
 * share one limit and the state survives "nginx -s reload".
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <time.h>

#include <ig_clock.h>

#include "ngx_http_infergate.h"


typedef struct {
    u_char                       color;
    u_char                       dummy;
    u_short                      len;
    ngx_queue_t                  queue;
    uint64_t                     tat_us;
    u_char                       data[1];
} ngx_http_ig_limit_node_t;


typedef struct {
    ngx_array_t                  refs;       /* ngx_http_ig_limit_conf_t * */
} ngx_http_ig_limit_main_conf_t;


typedef struct {
    ngx_array_t                 *limits;     /* ngx_http_ig_limit_conf_t   */
    ngx_uint_t                   headers;    /* infergate_limit_headers    */
} ngx_http_ig_limit_loc_conf_t;


static char *ngx_http_ig_limit_zone_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ig_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_ig_limit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ig_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_limit_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ig_limit_init(ngx_conf_t *cf);
static ngx_uint_t ngx_http_ig_limit_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_limit(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_http_ig_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_ig_limit_lookup(ngx_http_ig_limit_conf_t *lc,
    ngx_str_t *key, uint64_t now, ngx_http_ig_limit_state_t *st,
    ngx_uint_t commit, ngx_log_t *log);
static void ngx_http_ig_limit_expire(ngx_http_ig_limit_zone_t *zone,
    uint64_t now, ngx_uint_t force);
static ngx_int_t ngx_http_ig_limit_key(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_limit_conf_t *lc, ngx_str_t *key);
static ngx_http_ig_limit_state_t *ngx_http_ig_limit_find(
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_limit_conf_t *lc, ngx_str_t *key);
static ngx_int_t ngx_http_ig_limit_archive(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);


static ngx_conf_enum_t  ngx_http_ig_limit_headers_modes[] = {
    { ngx_string("off"), NGX_HTTP_IG_HEADERS_OFF },
    { ngx_string("draft"), NGX_HTTP_IG_HEADERS_DRAFT },
    { ngx_string("legacy"), NGX_HTTP_IG_HEADERS_LEGACY },
    { ngx_string("both"), NGX_HTTP_IG_HEADERS_BOTH },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_ig_limit_commands[] = {

    { ngx_string("infergate_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_ig_limit_zone_directive,
      0,
      0,
      NULL },

    { ngx_string("infergate_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ig_limit_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ig_limit_loc_conf_t, headers),
      &ngx_http_ig_limit_headers_modes },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_limit_module_ctx = {
    ngx_http_ig_limit_add_variables,       /* preconfiguration */
    ngx_http_ig_limit_init,                /* postconfiguration */

    ngx_http_ig_limit_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_limit_create_loc_conf,     /* create location configuration */
    ngx_http_ig_limit_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_limit_module_ctx,  /* module context */
    ngx_http_ig_limit_commands,            /* module directives */
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


static ngx_http_variable_t  ngx_http_ig_limit_vars[] = {

    { ngx_string("infergate_limit_status"), NULL,
      ngx_http_ig_limit_status_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_str_t  ngx_http_ig_limit_statuses[NGX_HTTP_IG_LIMIT_NSTATUSES] = {
    ngx_null_string,
    ngx_string("PASSED"),
    ngx_string("REJECTED"),
    ngx_string("REJECTED_DRY_RUN"),
    ngx_string("FAIL_OPEN")
};


const ngx_http_ig_stage_t  ngx_http_ig_limit_stage = {
    ngx_string("limit"),
    ngx_http_ig_limit_on,
    ngx_http_ig_limit
};


static char *
ngx_http_ig_limit_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ssize_t                    size;
    ngx_str_t                 *value;
    ngx_shm_zone_t            *shm_zone;
    ngx_http_ig_limit_zone_t  *zone;

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "needs a zone name";
    }

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit_zone: invalid size \"%V\"",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    if (size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit_zone: zone \"%V\" is too small, "
                           "it needs at least %uzk",
                           &value[1], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_limit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                     &ngx_http_infergate_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit_zone: duplicate zone \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_ig_limit_init_zone;
    shm_zone->data = zone;

    return NGX_CONF_OK;
}


static char *
ngx_http_ig_limit_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_limit_loc_conf_t *lcf = conf;

    ngx_int_t                          n;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i, have_rate;
    const char                        *reason;
    ngx_http_ig_limit_conf_t          *lc, **ref;
    ngx_http_ig_limit_main_conf_t     *mcf;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (lcf->limits == NULL) {
        lcf->limits = ngx_array_create(cf->pool, 2,
                                       sizeof(ngx_http_ig_limit_conf_t));
        if (lcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (lcf->limits->nelts >= NGX_HTTP_IG_MAX_LIMITS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit: at most %d limits "
                           "per location", NGX_HTTP_IG_MAX_LIMITS);
        return NGX_CONF_ERROR;
    }

    lc = ngx_array_push(lcf->limits);
    if (lc == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(lc, sizeof(ngx_http_ig_limit_conf_t));

    /* keyed by tenant (the default): a key's rate= and burst= apply */
    lc->tenant_keyed = 1;

    have_rate = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 0) {
                goto invalid;
            }

            lc->name = s;
            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;

            if (s.len == 0) {
                goto invalid;
            }

            lc->redis = ngx_http_ig_limit_redis_conf(cf, &s);
            if (lc->redis == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "fail=open") == 0) {
            lc->fail_closed = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "fail=closed") == 0) {
            lc->fail_closed = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            if (ig_gcra_parse_rate((char *) value[i].data + 5,
                                   value[i].len - 5, &lc->quota,
                                   &lc->window_s, &reason)
                != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_limit: invalid rate \"%V\": "
                                   "%s", &value[i], reason);
                return NGX_CONF_ERROR;
            }

            have_rate = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n > 1000000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_limit: invalid burst \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            lc->burst = (uint32_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            if (s.len == 0) {
                goto invalid;
            }

            if (ngx_http_ig_check_var_case(cf, &s) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            lc->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
            if (lc->key == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = lc->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            lc->tenant_keyed =
                (s.len == sizeof("$infergate_tenant") - 1
                 && ngx_strncmp(s.data, "$infergate_tenant", s.len) == 0)
                || (s.len == sizeof("${infergate_tenant}") - 1
                    && ngx_strncmp(s.data, "${infergate_tenant}", s.len)
                       == 0);

            continue;
        }

        if (ngx_strcmp(value[i].data, "dry_run") == 0) {
            lc->dry_run = 1;
            continue;
        }

        goto invalid;
    }

    if (lc->name.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit: \"zone=\" is required");
        return NGX_CONF_ERROR;
    }

    if (lc->redis == NULL && lc->fail_closed) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit: \"fail=\" needs \"redis=\"");
        return NGX_CONF_ERROR;
    }

    if (!have_rate) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_limit: \"rate=\" is required");
        return NGX_CONF_ERROR;
    }

    if (lc->redis) {
        /* zone= only names the limit in Redis: no shared memory */
        return NGX_CONF_OK;
    }

    lc->shm_zone = ngx_shared_memory_add(cf, &lc->name, 0,
                                         &ngx_http_infergate_module);
    if (lc->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_limit_module);

    ref = ngx_array_push(&mcf->refs);
    if (ref == NULL) {
        return NGX_CONF_ERROR;
    }

    *ref = lc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_limit: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static void *
ngx_http_ig_limit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ig_limit_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_limit_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mcf->refs, cf->pool, 4,
                       sizeof(ngx_http_ig_limit_conf_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static void *
ngx_http_ig_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ig_limit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_limit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     */

    conf->headers = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_ig_limit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_limit_loc_conf_t *prev = parent;
    ngx_http_ig_limit_loc_conf_t *conf = child;

    ngx_conf_merge_uint_value(conf->headers, prev->headers,
                              NGX_HTTP_IG_HEADERS_DRAFT);

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ig_limit_add_variables(ngx_conf_t *cf)
{
    return ngx_http_ig_add_variables(cf, ngx_http_ig_limit_vars);
}


static ngx_int_t
ngx_http_ig_limit_status_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r->main);

    if (ctx == NULL || ctx->limit_status == NGX_HTTP_IG_LIMIT_NONE
        || ctx->limit_status >= NGX_HTTP_IG_LIMIT_NSTATUSES)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_ig_set_value(v, &ngx_http_ig_limit_statuses[ctx->limit_status]);

    return NGX_OK;
}


/*
 * Postconfiguration.  Zones are declared at http level, so references are
 * checked once all is read.
 */

static ngx_int_t
ngx_http_ig_limit_init(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_ig_limit_conf_t       **ref;
    ngx_http_ig_limit_main_conf_t   *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_limit_module);

    ref = mcf->refs.elts;

    for (i = 0; i < mcf->refs.nelts; i++) {
        if (ref[i]->shm_zone->data == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "infergate_limit: unknown zone \"%V\": declare it "
                          "with \"infergate_limit_zone %V SIZE;\"",
                          &ref[i]->name, &ref[i]->name);
            return NGX_ERROR;
        }
    }

    ngx_http_ig_limit_redis_init();

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ig_limit_on(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_limit_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_limit_module);

    return llcf->limits != NULL;
}


/*
 * The limits of one location.  A limit this request was already charged
 * by (same zone, same storage, same key: a server-level limit seen again
 * after try_files, error_page or an index redirect) is not charged again;
 * its earlier result still shows in the headers.  Any other limit is
 * charged, including one of the same zone under a different key.
 */

static ngx_int_t
ngx_http_ig_limit(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    u_char                         buf[NGX_HTTP_IG_LOG_MAX];
    uint32_t                       quota, window_s, burst;
    uint64_t                       now, retry;
    ngx_str_t                      key, esc, keys[NGX_HTTP_IG_MAX_LIMITS];
    ngx_uint_t                     i, n, refused, dry, fresh, commit;
    ngx_uint_t                     sidx[NGX_HTTP_IG_MAX_LIMITS], nredis;
    ngx_http_ig_limit_conf_t      *lc;
    ngx_http_ig_limit_state_t     *st, *ch;
    ngx_http_ig_limit_loc_conf_t  *llcf;

    if (ctx->limit_wait) {
        /* re-entered after the Redis replies */
        return ngx_http_ig_limit_redis_finish(r, ctx);
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_limit_module);

    lc = llcf->limits->elts;
    n = llcf->limits->nelts;

    if (ctx->limit_redis) {
        ngx_http_ig_limit_redis_reset(ctx);
    }

    if (ctx->nlimits && ngx_http_ig_limit_archive(r, ctx) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->limit_headers = llcf->headers;
    ctx->nlimits = 0;

    ctx->limits = ngx_palloc(r->pool, n * sizeof(ngx_http_ig_limit_state_t));
    if (ctx->limits == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the keys; limits charged before a redirect are shown, not counted */

    fresh = 0;

    for (i = 0; i < n; i++) {
        if (ngx_http_ig_limit_key(r, ctx, &lc[i], &keys[i]) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (keys[i].len == 0) {
            continue;
        }

        if (keys[i].len > 65535) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "infergate_limit: key is longer than 65535 bytes, "
                          "not limited");
            keys[i].len = 0;
            continue;
        }

        if (ctx->charged.nelts) {
            ch = ngx_http_ig_limit_find(ctx, &lc[i], &keys[i]);

            if (ch) {
                st = &ctx->limits[ctx->nlimits++];
                *st = *ch;
                st->charged = 0;          /* archived already */
                keys[i].len = 0;
                continue;
            }
        }

        fresh++;
    }

    now = ig_clock_us();

    refused = 0;
    dry = 0;
    retry = 0;

    /*
     * One limit decides and stores under one lock.  Several limits are
     * checked first and stored only if all admit, so that a refusal
     * consumes nothing anywhere.
     */

    commit = (fresh == 1);
    nredis = 0;

    for (i = 0; i < n; i++) {

        key = keys[i];

        if (key.len == 0) {
            continue;
        }

        quota = lc[i].quota;
        window_s = lc[i].window_s;
        burst = lc[i].burst;

        /* a key's own rate= and burst= replace only its tenant's limits */

        if (lc[i].tenant_keyed && ctx->key) {
            if (ctx->key->has_rate) {
                quota = ctx->key->quota;
                window_s = ctx->key->window_s;
            }

            if (ctx->key->has_burst) {
                burst = ctx->key->burst;
            }
        }

        sidx[i] = ctx->nlimits;
        st = &ctx->limits[ctx->nlimits++];
        st->conf = &lc[i];
        st->key = key;
        st->charged = 0;
        ig_gcra_policy_init(&st->policy, quota, window_s, burst);

        if (lc[i].redis) {
            /* decided by Redis once the local limits have passed */
            ngx_memzero(&st->result, sizeof(ig_gcra_result_t));
            st->result.allowed = 1;

            if (ngx_http_ig_limit_redis_add(r, ctx, ctx->nlimits - 1, &key)
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            nredis++;
            continue;
        }

        if (ngx_http_ig_limit_lookup(&lc[i], &key, now, st, commit,
                                     r->connection->log)
            != NGX_OK)
        {
            /* no memory for state: admit rather than refuse everyone */
            ctx->nlimits--;
            keys[i].len = 0;
            continue;
        }

        if (!st->result.allowed) {
            if (lc[i].dry_run) {
                dry = 1;

            } else {
                refused = 1;
                retry = ngx_max(retry, st->result.retry_after_us);
            }

            /* the key may be request bytes ($uri, a header): escaped */

            esc = ngx_http_ig_log_escape(buf, key.data, key.len);

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "infergate: limit \"%V\" exceeded by key \"%V\"%s",
                          &lc[i].name, &esc,
                          lc[i].dry_run ? " (dry run)" : "");
        }
    }

    if (refused) {
        ctx->limit_status = NGX_HTTP_IG_LIMIT_REJECTED;
        ngx_str_set(&ctx->action, "rate_limited");
        return ngx_http_ig_limit_refuse(r, ctx, retry);
    }

    /* all admit: store (several limits), remember what was charged */

    for (i = 0; i < n; i++) {
        if (keys[i].len == 0 || lc[i].redis) {
            continue;            /* Redis limits: once Redis has decided */
        }

        st = &ctx->limits[sidx[i]];

        if (!commit && st->result.allowed) {
            (void) ngx_http_ig_limit_lookup(&lc[i], &keys[i], now, st, 1,
                                            r->connection->log);
        }

        st->charged = st->result.allowed;
    }

    if (nredis) {
        return ngx_http_ig_limit_redis_send(r, ctx, dry);
    }

    ctx->limit_status = dry ? NGX_HTTP_IG_LIMIT_DRY_RUN
                            : NGX_HTTP_IG_LIMIT_PASSED;

    return NGX_DECLINED;
}


/*
 * A new location: the limits the last one charged join those of earlier
 * ones.  Only a request that is redirected gets here, so the request that
 * is not pays for no array.
 */

static ngx_int_t
ngx_http_ig_limit_archive(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    ngx_uint_t                  i;
    ngx_http_ig_limit_state_t  *st, *ch;

    for (i = 0; i < ctx->nlimits; i++) {
        st = &ctx->limits[i];

        if (!st->charged) {
            continue;
        }

        if (ctx->charged.elts == NULL
            && ngx_array_init(&ctx->charged, r->pool, 4,
                              sizeof(ngx_http_ig_limit_state_t))
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        ch = ngx_array_push(&ctx->charged);
        if (ch == NULL) {
            return NGX_ERROR;
        }

        *ch = *st;
        st->charged = 0;
    }

    ctx->nlimits = 0;

    return NGX_OK;
}


/* A limit (zone, storage, key) this request was charged by, or NULL. */

static ngx_http_ig_limit_state_t *
ngx_http_ig_limit_find(ngx_http_ig_ctx_t *ctx, ngx_http_ig_limit_conf_t *lc,
    ngx_str_t *key)
{
    ngx_uint_t                  i;
    ngx_http_ig_limit_state_t  *ch;
    ngx_http_ig_limit_conf_t   *c;

    ch = ctx->charged.elts;

    for (i = 0; i < ctx->charged.nelts; i++) {
        c = ch[i].conf;

        if (c->shm_zone == lc->shm_zone
            && c->redis == lc->redis
            && c->name.len == lc->name.len
            && ngx_strncmp(c->name.data, lc->name.data, lc->name.len) == 0
            && ch[i].key.len == key->len
            && ngx_strncmp(ch[i].key.data, key->data, key->len) == 0)
        {
            return &ch[i];
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_ig_limit_key(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_limit_conf_t *lc, ngx_str_t *key)
{
    if (lc->key) {
        return ngx_http_complex_value(r, lc->key, key);
    }

    if (ctx->key) {
        *key = ctx->key->tenant;
        return NGX_OK;
    }

    *key = r->connection->addr_text;
    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_limit_lookup(ngx_http_ig_limit_conf_t *lc, ngx_str_t *key,
    uint64_t now, ngx_http_ig_limit_state_t *st, ngx_uint_t commit,
    ngx_log_t *log)
{
    size_t                     size;
    uint32_t                   hash;
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_http_ig_limit_zone_t  *zone;
    ngx_http_ig_limit_node_t  *ln;

    zone = lc->shm_zone->data;
    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&zone->shpool->mutex);

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;
    ln = NULL;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        ln = (ngx_http_ig_limit_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, ln->data, key->len, (size_t) ln->len);

        if (rc == 0) {
            ngx_queue_remove(&ln->queue);
            ngx_queue_insert_head(&zone->sh->queue, &ln->queue);
            break;
        }

        ln = NULL;
        node = (rc < 0) ? node->left : node->right;
    }

    if (ln == NULL) {
        ngx_http_ig_limit_expire(zone, now, 0);

        size = offsetof(ngx_rbtree_node_t, color)
               + offsetof(ngx_http_ig_limit_node_t, data)
               + key->len;

        node = ngx_slab_alloc_locked(zone->shpool, size);

        if (node == NULL) {
            ngx_http_ig_limit_expire(zone, now, 1);

            node = ngx_slab_alloc_locked(zone->shpool, size);
            if (node == NULL) {
                ngx_shmtx_unlock(&zone->shpool->mutex);
                ngx_log_error(NGX_LOG_ALERT, log, 0,
                              "infergate_limit: zone \"%V\" is out of "
                              "memory", &lc->name);
                return NGX_ERROR;
            }
        }

        node->key = hash;

        ln = (ngx_http_ig_limit_node_t *) &node->color;
        ln->len = (u_short) key->len;
        ln->tat_us = 0;
        ngx_memcpy(ln->data, key->data, key->len);

        ngx_rbtree_insert(&zone->sh->rbtree, node);
        ngx_queue_insert_head(&zone->sh->queue, &ln->queue);
    }

    ig_gcra_check(&st->policy, now, ln->tat_us, &st->result);

    if (commit && st->result.allowed) {
        ln->tat_us = st->result.tat_us;
    }

    ngx_shmtx_unlock(&zone->shpool->mutex);

    return NGX_OK;
}


/*
 * A key whose TAT has passed is indistinguishable from a new key, so it
 * can go; when memory runs out the least recently used one goes anyway.
 */

static void
ngx_http_ig_limit_expire(ngx_http_ig_limit_zone_t *zone, uint64_t now,
    ngx_uint_t force)
{
    ngx_uint_t                 n;
    ngx_queue_t               *q;
    ngx_rbtree_node_t         *node;
    ngx_http_ig_limit_node_t  *ln;

    for (n = 0; n < 3; n++) {

        if (ngx_queue_empty(&zone->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&zone->sh->queue);
        ln = ngx_queue_data(q, ngx_http_ig_limit_node_t, queue);

        if (!force && ln->tat_us > now) {
            return;
        }

        force = 0;

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) ln - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&zone->sh->rbtree, node);
        ngx_slab_free_locked(zone->shpool, node);
    }
}


ngx_int_t
ngx_http_ig_limit_refuse(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    uint64_t retry_us)
{
    u_char                     *p;
    size_t                      len;
    uint64_t                    secs;
    ngx_str_t                   detail, extra;
    ngx_uint_t                  i;
    ngx_http_ig_limit_state_t  *st;

    secs = ig_gcra_ceil_seconds(retry_us);

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL
        || ngx_http_ig_add_header(r, "Retry-After", p,
                                  ngx_sprintf(p, "%uL", secs) - p)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the names of the refusing policies, as the IETF draft defines */

    len = sizeof(",\"violated-policies\":[]") - 1;

    for (i = 0; i < ctx->nlimits; i++) {
        st = &ctx->limits[i];
        len += ngx_http_ig_json_str_len(st->conf->name.data,
                                        st->conf->name.len) + 1;
    }

    p = ngx_pnalloc(r->pool, len + NGX_INT64_LEN
                             + sizeof("rate limit exceeded, retry in "
                                      " s") - 1);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    extra.data = p;
    p = ngx_cpymem(p, ",\"violated-policies\":[",
                   sizeof(",\"violated-policies\":[") - 1);

    for (i = 0; i < ctx->nlimits; i++) {
        st = &ctx->limits[i];

        if (st->result.allowed || st->conf->dry_run) {
            continue;
        }

        if (p[-1] != '[') {
            *p++ = ',';
        }

        p = ngx_http_ig_json_str(p, st->conf->name.data, st->conf->name.len);
    }

    *p++ = ']';
    extra.len = p - extra.data;

    detail.data = p;
    detail.len = ngx_sprintf(p, "rate limit exceeded, retry in %uL s", secs)
                 - p;

    return ngx_http_ig_problem(r, NGX_HTTP_TOO_MANY_REQUESTS,
                               NGX_HTTP_IG_QUOTA_EXCEEDED,
                               "Too Many Requests", &detail, &extra);
}


static ngx_int_t
ngx_http_ig_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ig_limit_zone_t  *ozone = data;

    size_t                     len;
    ngx_http_ig_limit_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /* reload: keep every tenant's state */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_alloc(zone->shpool,
                              sizeof(ngx_http_ig_limit_shctx_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_ig_limit_rbtree_insert_value);

    ngx_queue_init(&zone->sh->queue);

    len = sizeof(" in infergate_limit_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in infergate_limit_zone \"%V\"%Z",
                &shm_zone->shm.name);

    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_http_ig_limit_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_http_ig_limit_node_t   *ln, *lnt;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            ln = (ngx_http_ig_limit_node_t *) &node->color;
            lnt = (ngx_http_ig_limit_node_t *) &temp->color;

            p = (ngx_memn2cmp(ln->data, lnt->data, ln->len, lnt->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}

