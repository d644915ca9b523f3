
/*
 * Copyright (C) infergate authors
 *
 * The Redis response cache, access step.  After admission a request is
 * looked up under a tenant-namespaced digest key by one Lua script that
 * either returns the entry (HIT), or takes the fill lease (MISS: this
 * request goes on to the origin and its response is stored by the
 * capture filter with a compare-and-set on the lease token), or reports
 * that another request holds the lease (the request polls until the
 * entry appears, the lease is free again, or lock_timeout passes).
 * A write purges entries and their leases, so a fill that began before
 * the write never stores its stale value (Facebook's memcache leases).
 * Any Redis failure makes the request BYPASS the cache.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"
#include "ngx_http_infergate_cache.h"
#include "ngx_http_infergate_metrics.h"


#define NGX_HTTP_IG_CACHE_POLL  20      /* ms between lease polls          */


static ngx_int_t ngx_http_ig_cache_lookup(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);
static ngx_int_t ngx_http_ig_cache_digest(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, u_char *digest);
static void ngx_http_ig_cache_fill_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_ig_cache_lease(ngx_http_ig_cache_ctx_t *cc);
static void ngx_http_ig_cache_get_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_ig_cache_keep(ngx_http_ig_cache_ctx_t *cc,
    redisReply *e);
static void ngx_http_ig_cache_lookup_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_ig_cache_hit(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_http_ig_ctx_t *ctx);
static void ngx_http_ig_cache_body_handler(ngx_http_request_t *r);
static void ngx_http_ig_cache_wake_handler(ngx_event_t *ev);
static void ngx_http_ig_cache_cleanup(void *data);
static ngx_int_t ngx_http_ig_cache_sha256(ngx_http_request_t *r,
    ngx_str_t *parts, ngx_uint_t n, ngx_chain_t *body, u_char *out);


/*
 * After a GET found nothing.  KEYS: entry, lease; ARGV: token, lease ms.
 * {1, value} hit (filled meanwhile), {2} lease taken, {3} lease busy.
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_lookup_lua;
static const char  ngx_http_ig_cache_lookup_text[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then return {1, v} end\n"
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return {2}\n"
    "end\n"
    "return {3}\n";

/*
 * The fill: stores only while the lease is still ours; a purge deleted
 * it.  KEYS: entry, lease, tag sets; ARGV: token, value, ttl ms.
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_fill_lua;
static const char  ngx_http_ig_cache_fill_text[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[2])\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "for i = 3, #KEYS do\n"
    "  redis.call('SADD', KEYS[i], KEYS[1])\n"
    "  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[3]) then\n"
    "    redis.call('PEXPIRE', KEYS[i], ARGV[3])\n"
    "  end\n"
    "end\n"
    "return 1\n";

/* KEYS: lease; ARGV: token */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_release_lua;
static const char  ngx_http_ig_cache_release_text[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('DEL', KEYS[1])\n"
    "end\n"
    "return 0\n";

/*
 * KEYS: ARGV[1] entries, then tag sets; each entry goes with its lease
 * ("igl:" for "igc:"), each tag set with its members and their leases.
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_purge_lua;
static const char  ngx_http_ig_cache_purge_text[] =
    "local n = tonumber(ARGV[1])\n"
    "local d = 0\n"
    "for i = 1, #KEYS do\n"
    "  if i <= n then\n"
    "    d = d + redis.call('DEL', KEYS[i], 'igl' .. string.sub(KEYS[i], 4))\n"
    "  else\n"
    "    for _, k in ipairs(redis.call('SMEMBERS', KEYS[i])) do\n"
    "      d = d + redis.call('DEL', k, 'igl' .. string.sub(k, 4))\n"
    "    end\n"
    "    redis.call('DEL', KEYS[i])\n"
    "  end\n"
    "end\n"
    "return d\n";


ngx_int_t
ngx_http_ig_cache_init_scripts(void)
{
    ngx_http_ig_redis_script_init(&ngx_http_ig_cache_lookup_lua,
                                  ngx_http_ig_cache_lookup_text);
    ngx_http_ig_redis_script_init(&ngx_http_ig_cache_fill_lua,
                                  ngx_http_ig_cache_fill_text);
    ngx_http_ig_redis_script_init(&ngx_http_ig_cache_release_lua,
                                  ngx_http_ig_cache_release_text);
    ngx_http_ig_redis_script_init(&ngx_http_ig_cache_purge_lua,
                                  ngx_http_ig_cache_purge_text);
    return NGX_OK;
}


/* configuration */

static ngx_int_t
ngx_http_ig_cache_complex(ngx_conf_t *cf, ngx_array_t **a, u_char *data,
    size_t len)
{
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;
    ngx_str_t                          value;

    if (*a == NULL) {
        *a = ngx_array_create(cf->pool, 2, sizeof(ngx_http_complex_value_t));
        if (*a == NULL) {
            return NGX_ERROR;
        }
    }

    cv = ngx_array_push(*a);
    if (cv == NULL) {
        return NGX_ERROR;
    }

    value.data = data;
    value.len = len;

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value;
    ccv.complex_value = cv;

    return ngx_http_compile_complex_value(&ccv);
}


char *
ngx_http_ig_cache_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_cache_loc_conf_t *clcf = conf;

    ngx_int_t                  n;
    ngx_str_t                 *value, s, name;
    ngx_uint_t                 i, j, *st;
    ngx_array_t               *keys;
    ngx_http_ig_cache_conf_t  *ccf;

    static ngx_str_t  methods[] = {
        ngx_string("GET"), ngx_string("HEAD"), ngx_string("POST")
    };
    static ngx_uint_t  method_bits[] = {
        NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST
    };

    if (clcf->cache_set) {
        return "is duplicate";
    }

    value = cf->args->elts;
    clcf->cache_set = 1;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        clcf->cache = NULL;
        return NGX_CONF_OK;
    }

    ccf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_cache_conf_t));
    if (ccf == NULL) {
        return NGX_CONF_ERROR;
    }

    ccf->jitter = 10;
    ccf->max_size = 1024 * 1024;
    ccf->lock_timeout = 2000;
    ccf->ttl = NGX_CONF_UNSET_MSEC;
    keys = NULL;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            name.data = value[i].data + 6;
            name.len = value[i].len - 6;
            if (name.len == 0) {
                goto invalid;
            }

            ccf->redis = ngx_http_ig_redis_add(cf, &name);
            if (ccf->redis == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;
            ccf->ttl = ngx_parse_time(&s, 0);
            if (ccf->ttl == (ngx_msec_t) NGX_ERROR || ccf->ttl == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "ttl_jitter=", 11) == 0) {
            s.data = value[i].data + 11;
            s.len = value[i].len - 11;
            if (s.len < 2 || s.data[s.len - 1] != '%') {
                goto invalid;
            }

            n = ngx_atoi(s.data, s.len - 1);
            if (n == NGX_ERROR || n > 50) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_cache: \"%V\": ttl_jitter "
                                   "must be between 0%% and 50%%",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            ccf->jitter = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "lock_timeout=", 13) == 0) {
            s.data = value[i].data + 13;
            s.len = value[i].len - 13;
            ccf->lock_timeout = ngx_parse_time(&s, 0);
            if (ccf->lock_timeout == (ngx_msec_t) NGX_ERROR
                || ccf->lock_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
            n = ngx_parse_size(&s);
            if (n == NGX_ERROR || n == 0 || n > 512 * 1024 * 1024) {
                goto invalid;
            }

            ccf->max_size = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0 && value[i].len > 4)
        {
            if (ngx_http_ig_cache_complex(cf, &keys, value[i].data + 4,
                                          value[i].len - 4)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            if (keys->nelts > 1) {
                return "takes one key=";
            }

            ccf->key = keys->elts;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tag=", 4) == 0 && value[i].len > 4)
        {
            if (ngx_http_ig_cache_complex(cf, &ccf->tags, value[i].data + 4,
                                          value[i].len - 4)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "methods=", 8) == 0) {
            /* methods=GET HEAD: the words after it until the next k=v */
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            for ( ;; ) {
                for (j = 0; j < 3; j++) {
                    if (s.len == methods[j].len
                        && ngx_strncmp(s.data, methods[j].data, s.len) == 0)
                    {
                        ccf->methods |= method_bits[j];
                        break;
                    }
                }

                if (j == 3) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "infergate_cache: method \"%V\" "
                                       "cannot be cached (GET, HEAD or "
                                       "POST)", &s);
                    return NGX_CONF_ERROR;
                }

                if (i + 1 == cf->args->nelts
                    || ngx_strlchr(value[i + 1].data,
                                   value[i + 1].data + value[i + 1].len, '='))
                {
                    break;
                }

                s = value[++i];
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "statuses=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            ccf->statuses = ngx_array_create(cf->pool, 4, sizeof(ngx_uint_t));
            if (ccf->statuses == NULL) {
                return NGX_CONF_ERROR;
            }

            for ( ;; ) {
                n = ngx_atoi(s.data, s.len);
                /* only the status, type and body are stored: no 3xx */
                if (n < 200 || n > 299) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "infergate_cache: status \"%V\" "
                                       "cannot be cached (200 to 299)", &s);
                    return NGX_CONF_ERROR;
                }

                st = ngx_array_push(ccf->statuses);
                if (st == NULL) {
                    return NGX_CONF_ERROR;
                }

                *st = n;

                if (i + 1 == cf->args->nelts
                    || ngx_strlchr(value[i + 1].data,
                                   value[i + 1].data + value[i + 1].len, '='))
                {
                    break;
                }

                s = value[++i];
            }

            continue;
        }

        goto invalid;
    }

    if (ccf->redis == NULL) {
        return "needs redis=NAME";
    }

    if (ccf->ttl == NGX_CONF_UNSET_MSEC) {
        return "needs ttl=TIME";
    }

    if (ccf->methods == 0) {
        ccf->methods = NGX_HTTP_GET|NGX_HTTP_HEAD;
    }

    if (ccf->statuses == NULL) {
        ccf->statuses = ngx_array_create(cf->pool, 1, sizeof(ngx_uint_t));
        if (ccf->statuses == NULL) {
            return NGX_CONF_ERROR;
        }

        st = ngx_array_push(ccf->statuses);
        if (st == NULL) {
            return NGX_CONF_ERROR;
        }

        *st = 200;
    }

    clcf->cache = ccf;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_cache: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


char *
ngx_http_ig_cache_purge_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ig_cache_loc_conf_t *clcf = conf;

    ngx_str_t                 *value, name;
    ngx_uint_t                 i;
    ngx_http_ig_purge_conf_t  *pcf;

    if (clcf->purge_set) {
        return "is duplicate";
    }

    value = cf->args->elts;
    clcf->purge_set = 1;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        clcf->purge = NULL;
        return NGX_CONF_OK;
    }

    pcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_purge_conf_t));
    if (pcf == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0
            && value[i].len > 6)
        {
            name.data = value[i].data + 6;
            name.len = value[i].len - 6;

            pcf->redis = ngx_http_ig_redis_add(cf, &name);
            if (pcf->redis == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0 && value[i].len > 4)
        {
            if (ngx_http_ig_cache_complex(cf, &pcf->keys, value[i].data + 4,
                                          value[i].len - 4)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "tag=", 4) == 0 && value[i].len > 4)
        {
            if (ngx_http_ig_cache_complex(cf, &pcf->tags, value[i].data + 4,
                                          value[i].len - 4)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_cache_purge: invalid parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    clcf->purge = pcf;

    return NGX_CONF_OK;
}


/* the access step */

ngx_int_t
ngx_http_ig_cache_on(ngx_http_request_t *r)
{
    ngx_http_ig_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_cache_module);

    return clcf->cache != NULL;
}


ngx_int_t
ngx_http_ig_cache_access(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_pool_cleanup_t            *cln;
    ngx_http_ig_cache_ctx_t       *cc;
    ngx_http_ig_cache_loc_conf_t  *clcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);

    if (cc == NULL) {
        clcf = ngx_http_get_module_loc_conf(r,
                                            ngx_http_infergate_cache_module);

        cc = ngx_pcalloc(r->pool, sizeof(ngx_http_ig_cache_ctx_t));
        if (cc == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_ig_cache_cleanup;
        cln->data = cc;

        cc->request = r;
        cc->conf = clcf->cache;
        cc->wake.handler = ngx_http_ig_cache_wake_handler;
        cc->wake.data = r;
        cc->wake.log = r->connection->log;
        cc->retry = cc->wake;

        ngx_http_set_ctx(r, cc, ngx_http_infergate_cache_module);
    }

    switch (cc->state) {

    case NGX_HTTP_IG_CACHE_NONE:

        if (!(r->method & cc->conf->methods)) {
            goto bypass;
        }

        if (!ngx_http_ig_redis_available(cc->conf->redis)) {
            ngx_http_ig_redis_warn(cc->conf->redis, r->connection->log,
                                   "not connected, cache bypassed");
            goto bypass;
        }

        if ((r->method & NGX_HTTP_POST) && cc->conf->key == NULL
            && r->request_body == NULL)
        {
            /* the default key hashes the body: read it first */

            cc->state = NGX_HTTP_IG_CACHE_BODY;

            rc = ngx_http_read_client_request_body(r,
                                             ngx_http_ig_cache_body_handler);
            if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
                return rc;
            }

            ngx_http_finalize_request(r, NGX_DONE);
            return NGX_DONE;
        }

        /* fall through */

    case NGX_HTTP_IG_CACHE_BODY_DONE:

        cc->started = ngx_current_msec;
        return ngx_http_ig_cache_lookup(r, cc);

    case NGX_HTTP_IG_CACHE_REPLIED:

        switch (cc->result) {

        case NGX_HTTP_IG_LOOKUP_HIT:
            return ngx_http_ig_cache_hit(r, cc, ctx);

        case NGX_HTTP_IG_LOOKUP_LEASED:
        case NGX_HTTP_IG_LOOKUP_MISS:
            cc->status = NGX_HTTP_IG_CST_MISS;
            cc->state = NGX_HTTP_IG_CACHE_DONE;
            return NGX_DECLINED;

        case NGX_HTTP_IG_LOOKUP_BUSY:

            if (ngx_current_msec - cc->started >= cc->conf->lock_timeout) {
                /* the filler is late: go to the origin, store nothing */
                cc->status = NGX_HTTP_IG_CST_MISS;
                cc->state = NGX_HTTP_IG_CACHE_DONE;
                return NGX_DECLINED;
            }

            cc->state = NGX_HTTP_IG_CACHE_WAITING;
            ngx_add_timer(&cc->retry, NGX_HTTP_IG_CACHE_POLL);
            return NGX_AGAIN;

        default:
            goto bypass;
        }

    case NGX_HTTP_IG_CACHE_WAITING:

        if (cc->retry.timer_set) {
            return NGX_AGAIN;
        }

        return ngx_http_ig_cache_lookup(r, cc);

    case NGX_HTTP_IG_CACHE_DONE:
        return NGX_DECLINED;

    default: /* BODY, LOOKUP: woken early */
        return NGX_AGAIN;
    }

bypass:

    cc->status = NGX_HTTP_IG_CST_BYPASS;
    cc->state = NGX_HTTP_IG_CACHE_DONE;

    return NGX_DECLINED;
}


static void
ngx_http_ig_cache_body_handler(ngx_http_request_t *r)
{
    ngx_http_ig_cache_ctx_t  *cc;

    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);
    if (cc == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cc->state = NGX_HTTP_IG_CACHE_BODY_DONE;

    /* proxy_pass sends the same body on */
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_ig_cache_lookup(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc)
{
    u_char       digest[32];
    const char  *argv[2];
    size_t       argvlen[2];

    if (cc->token[0] == '\0') {
        if (ngx_http_ig_cache_digest(r, cc, digest) != NGX_OK) {
            cc->status = NGX_HTTP_IG_CST_BYPASS;
            cc->state = NGX_HTTP_IG_CACHE_DONE;
            return NGX_DECLINED;
        }

        ngx_http_ig_cache_make_key(cc->entry, 'c', cc->tenant, digest);
        ngx_http_ig_cache_make_key(cc->lease, 'l', cc->tenant, digest);

        /* a lease token nobody else holds */
        ngx_sprintf(cc->token, "%08xD%08xD%08xD%08xD",
                    (uint32_t) ngx_random(), (uint32_t) ngx_random(),
                    (uint32_t) ngx_pid, (uint32_t) ngx_current_msec);
    }

    /* a plain GET first: a hit costs Redis no script run */

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = (char *) cc->entry;
    argvlen[1] = NGX_HTTP_IG_CACHE_KEYLEN;

    cc->cmd = ngx_http_ig_redis_command(cc->conf->redis, 2, argv, argvlen,
                                        ngx_http_ig_cache_get_done, cc);
    if (cc->cmd == NULL) {
        cc->status = NGX_HTTP_IG_CST_BYPASS;
        cc->state = NGX_HTTP_IG_CACHE_DONE;
        return NGX_DECLINED;
    }

    cc->state = NGX_HTTP_IG_CACHE_LOOKUP;

    return NGX_AGAIN;
}


/* a miss: the script looks again and takes the lease atomically */

static ngx_int_t
ngx_http_ig_cache_lease(ngx_http_ig_cache_ctx_t *cc)
{
    u_char       lease_ms[NGX_INT_T_LEN];
    const char  *argv[7];
    size_t       argvlen[7];

    argv[2] = "2";
    argvlen[2] = 1;
    argv[3] = (char *) cc->entry;
    argvlen[3] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[4] = (char *) cc->lease;
    argvlen[4] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[5] = (char *) cc->token;
    argvlen[5] = sizeof(cc->token);
    argv[6] = (char *) lease_ms;
    argvlen[6] = ngx_sprintf(lease_ms, "%M", cc->conf->lock_timeout)
                 - lease_ms;

    cc->cmd = ngx_http_ig_redis_eval(cc->conf->redis,
                                     &ngx_http_ig_cache_lookup_lua, 7, argv,
                                     argvlen, ngx_http_ig_cache_lookup_done,
                                     cc);

    return cc->cmd ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_ig_cache_get_done(redisReply *reply, void *data)
{
    ngx_http_ig_cache_ctx_t  *cc = data;

    cc->cmd = NULL;
    cc->state = NGX_HTTP_IG_CACHE_REPLIED;
    cc->result = NGX_HTTP_IG_LOOKUP_ERROR;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_ig_redis_warn(cc->conf->redis, cc->request->connection->log,
                               reply ? reply->str
                                     : "lookup failed, cache bypassed");
        goto wake;
    }

    if (reply->type == REDIS_REPLY_STRING) {
        if (ngx_http_ig_cache_keep(cc, reply) == NGX_OK) {
            cc->result = NGX_HTTP_IG_LOOKUP_HIT;
        }

        goto wake;
    }

    if (reply->type != REDIS_REPLY_NIL) {
        goto wake;
    }

    if (cc->request->method & NGX_HTTP_HEAD) {
        /* a HEAD response has no body to fill the entry with */
        cc->result = NGX_HTTP_IG_LOOKUP_MISS;
        goto wake;
    }

    cc->state = NGX_HTTP_IG_CACHE_LOOKUP;

    if (ngx_http_ig_cache_lease(cc) == NGX_OK) {
        return;
    }

    cc->state = NGX_HTTP_IG_CACHE_REPLIED;

wake:

    /* out of hiredis's stack: the request runs from the posted queue */
    ngx_post_event(&cc->wake, &ngx_posted_events);
}


/* the reply is freed when the handler returns: copy the value */

static ngx_int_t
ngx_http_ig_cache_keep(ngx_http_ig_cache_ctx_t *cc, redisReply *e)
{
    cc->value.data = ngx_pnalloc(cc->request->pool, e->len);
    if (cc->value.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(cc->value.data, e->str, e->len);
    cc->value.len = e->len;

    return NGX_OK;
}


static void
ngx_http_ig_cache_lookup_done(redisReply *reply, void *data)
{
    ngx_http_ig_cache_ctx_t  *cc = data;

    redisReply  *e;

    cc->cmd = NULL;
    cc->state = NGX_HTTP_IG_CACHE_REPLIED;
    cc->result = NGX_HTTP_IG_LOOKUP_ERROR;

    if (reply == NULL) {
        ngx_http_ig_redis_warn(cc->conf->redis, cc->request->connection->log,
                               "lookup failed, cache bypassed");
        goto wake;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        ngx_http_ig_redis_warn(cc->conf->redis, cc->request->connection->log,
                               reply->type == REDIS_REPLY_ERROR
                               ? reply->str : "unexpected lookup reply");
        goto wake;
    }

    cc->result = (ngx_int_t) reply->element[0]->integer;

    if (cc->result == NGX_HTTP_IG_LOOKUP_LEASED) {
        /* at once: the pool cleanup gives it back if the request ends */
        cc->leased = 1;
    }

    if (cc->result == NGX_HTTP_IG_LOOKUP_HIT) {
        if (reply->elements != 2
            || reply->element[1]->type != REDIS_REPLY_STRING)
        {
            cc->result = NGX_HTTP_IG_LOOKUP_ERROR;
            goto wake;
        }

        e = reply->element[1];

        if (ngx_http_ig_cache_keep(cc, e) != NGX_OK) {
            cc->result = NGX_HTTP_IG_LOOKUP_ERROR;
        }
    }

wake:

    /* out of hiredis's stack: the request runs from the posted queue */
    ngx_post_event(&cc->wake, &ngx_posted_events);
}


static void
ngx_http_ig_cache_wake_handler(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ev->data;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/*
 * A stored value: "STATUS AGE_BASE CTLEN CONTENT_TYPE" then the body,
 * e.g. "200 1700000000 16 application/json{...}".
 */

static ngx_int_t
ngx_http_ig_cache_hit(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    ngx_http_ig_ctx_t *ctx)
{
    u_char       *p, *last, *age;
    time_t        stored;
    ngx_int_t     rc, status, ctlen;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    p = cc->value.data;
    last = p + cc->value.len;

    if (cc->value.len < 10 || p[3] != ' ') {
        goto bad;
    }

    status = ngx_atoi(p, 3);
    p += 4;

    last = ngx_strlchr(p, cc->value.data + cc->value.len, ' ');
    if (last == NULL) {
        goto bad;
    }

    stored = ngx_atotm(p, last - p);
    p = last + 1;

    last = ngx_strlchr(p, cc->value.data + cc->value.len, ' ');
    if (last == NULL) {
        goto bad;
    }

    ctlen = ngx_atoi(p, last - p);
    p = last + 1;

    if (status < 200 || status > 299 || stored == NGX_ERROR
        || ctlen == NGX_ERROR
        || ctlen > cc->value.data + cc->value.len - p)
    {
        goto bad;
    }

    cc->status = NGX_HTTP_IG_CST_HIT;
    cc->state = NGX_HTTP_IG_CACHE_DONE;

    if (ctx) {
        ngx_str_set(&ctx->action, "cache_hit");
    }

    if (r->request_body == NULL) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    r->headers_out.status = status;
    r->headers_out.content_type.data = p;
    r->headers_out.content_type.len = ctlen;
    r->headers_out.content_type_len = ctlen;
    p += ctlen;
    r->headers_out.content_length_n = cc->value.data + cc->value.len - p;

    age = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (age == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ig_add_header(r, "X-Cache-Status", (u_char *) "HIT", 3)
        != NGX_OK
        || ngx_http_ig_add_header(r, "Age", age,
                                  ngx_sprintf(age, "%T",
                                              ngx_max(ngx_time() - stored, 0))
                                  - age)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return NGX_DONE;
    }

    b->pos = p;
    b->last = cc->value.data + cc->value.len;
    b->memory = (b->last > b->pos);
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
    return NGX_DONE;

bad:

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "infergate_cache: malformed entry, cache bypassed");

    cc->status = NGX_HTTP_IG_CST_BYPASS;
    cc->state = NGX_HTTP_IG_CACHE_DONE;

    return NGX_DECLINED;
}


/* keys */

void
ngx_http_ig_cache_tenant(ngx_http_request_t *r, u_char *out)
{
    u_char              md[32];
    ngx_str_t           t;
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r);

    if (ctx && ctx->key) {
        t = ctx->key->tenant;

    } else {
        ngx_str_set(&t, "-");       /* no auth: one anonymous namespace */
    }

    (void) ngx_http_ig_cache_sha256(r, &t, 1, NULL, md);
    ngx_hex_dump(out, md, NGX_HTTP_IG_CACHE_TLEN / 2);
}


void
ngx_http_ig_cache_make_key(u_char *out, char kind, u_char *tenant,
    u_char *digest)
{
    out[0] = 'i';
    out[1] = 'g';
    out[2] = (u_char) kind;
    out[3] = ':';
    ngx_memcpy(out + 4, tenant, NGX_HTTP_IG_CACHE_TLEN);
    out[4 + NGX_HTTP_IG_CACHE_TLEN] = ':';
    ngx_hex_dump(out + 5 + NGX_HTTP_IG_CACHE_TLEN, digest, 32);
}


/*
 * key=: sha256("k", tenant, value).  Default: sha256("d", tenant,
 * method (HEAD as GET), URI, "?", args, and for POST the body).
 */

static ngx_int_t
ngx_http_ig_cache_digest(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    u_char *digest)
{
    ngx_str_t           parts[6];
    ngx_http_ig_ctx_t  *ctx;

    ngx_http_ig_cache_tenant(r, cc->tenant);

    ctx = ngx_http_ig_find_ctx(r);

    parts[1].data = cc->tenant;
    parts[1].len = NGX_HTTP_IG_CACHE_TLEN;

    if (ctx && ctx->key) {
        /* the full tenant name, not only its short hash */
        parts[1] = ctx->key->tenant;
    }

    if (cc->conf->key) {
        ngx_str_set(&parts[0], "k");

        if (ngx_http_complex_value(r, cc->conf->key, &parts[2]) != NGX_OK) {
            return NGX_ERROR;
        }

        return ngx_http_ig_cache_sha256(r, parts, 3, NULL, digest);
    }

    ngx_str_set(&parts[0], "d");

    if (r->method & NGX_HTTP_HEAD) {
        ngx_str_set(&parts[2], "GET");

    } else {
        parts[2] = r->method_name;
    }

    parts[3] = r->uri;
    ngx_str_set(&parts[4], "?");
    parts[5] = r->args;

    return ngx_http_ig_cache_sha256(r, parts, 6,
                                    (r->method & NGX_HTTP_POST)
                                    && r->request_body
                                    ? r->request_body->bufs : NULL,
                                    digest);
}


/* parts are length-prefixed so that no two inputs hash alike */

static ngx_int_t
ngx_http_ig_cache_sha256(ngx_http_request_t *r, ngx_str_t *parts,
    ngx_uint_t n, ngx_chain_t *body, u_char *out)
{
    u_char       buf[4096], len[NGX_SIZE_T_LEN + 1];
    ssize_t      got;
    off_t        off;
    ngx_int_t    rc;
    ngx_uint_t   i;
    ngx_buf_t   *b;
    EVP_MD_CTX  *md;

    md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        EVP_DigestUpdate(md, len, ngx_sprintf(len, "%uz:", parts[i].len)
                                  - len);
        EVP_DigestUpdate(md, parts[i].data, parts[i].len);
    }

    rc = NGX_OK;

    for ( /* void */ ; body; body = body->next) {
        b = body->buf;

        if (ngx_buf_in_memory(b)) {
            EVP_DigestUpdate(md, b->pos, b->last - b->pos);
            continue;
        }

        if (!b->in_file) {
            continue;
        }

        /* a spooled body: the temp file nginx wrote, read back */

        for (off = b->file_pos; off < b->file_last; off += got) {
            got = ngx_read_file(b->file, buf,
                                ngx_min((off_t) sizeof(buf),
                                        b->file_last - off), off);
            if (got <= 0) {
                rc = NGX_ERROR;
                break;
            }

            EVP_DigestUpdate(md, buf, got);
        }
    }

    if (EVP_DigestFinal_ex(md, out, NULL) != 1) {
        goto failed;
    }

    EVP_MD_CTX_free(md);
    return rc;

failed:

    EVP_MD_CTX_free(md);
    ngx_memzero(out, 32);
    return NGX_ERROR;
}


/* the fill, the release and the purge: nobody waits for their replies */

void
ngx_http_ig_cache_store(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc)
{
    u_char                    *p, *val, *keys, *num, md[32];
    size_t                     len, vlen;
    ngx_int_t                  jitter;
    ngx_str_t                  tag, part[2];
    ngx_uint_t                 i, n;
    ngx_msec_t                 ms;
    ngx_chain_t               *cl;
    const char               **argv;
    size_t                    *argvlen;
    ngx_http_complex_value_t  *cv;

    cc->leased = 0;

    n = cc->conf->tags ? cc->conf->tags->nelts : 0;

    argv = ngx_palloc(r->pool, (n + 8) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (n + 8) * sizeof(size_t));
    keys = ngx_pnalloc(r->pool, n * NGX_HTTP_IG_CACHE_KEYLEN
                                + NGX_INT_T_LEN * 2);

    len = 3 + 1 + NGX_TIME_T_LEN + 1 + NGX_SIZE_T_LEN + 1
          + cc->resp_type.len + cc->size;

    val = ngx_pnalloc(r->pool, len);

    if (argv == NULL || argvlen == NULL || keys == NULL || val == NULL) {
        return;
    }

    p = ngx_sprintf(val, "%03ui %T %uz %V", cc->resp_status, ngx_time(),
                    cc->resp_type.len, &cc->resp_type);

    for (cl = cc->body; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    vlen = p - val;

    ms = cc->conf->ttl;
    if (cc->conf->jitter) {
        jitter = (ngx_int_t) (ngx_random() % (2 * cc->conf->jitter + 1))
                 - (ngx_int_t) cc->conf->jitter;
        ms = ms + (ngx_msec_int_t) ms * jitter / 100;
        if (ms == 0) {
            ms = 1;
        }
    }

    /* EVALSHA sha numkeys entry lease tag... token value ttl */

    argv[3] = (char *) cc->entry;
    argvlen[3] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[4] = (char *) cc->lease;
    argvlen[4] = NGX_HTTP_IG_CACHE_KEYLEN;

    i = 0;
    p = keys;
    cv = n ? cc->conf->tags->elts : NULL;

    for (len = 0; len < n; len++) {
        if (ngx_http_complex_value(r, &cv[len], &tag) != NGX_OK
            || tag.len == 0)
        {
            continue;
        }

        ngx_str_set(&part[0], "t");
        part[1] = tag;

        (void) ngx_http_ig_cache_sha256(r, part, 2, NULL, md);
        ngx_http_ig_cache_make_key(p, 't', cc->tenant, md);

        argv[5 + i] = (char *) p;
        argvlen[5 + i] = NGX_HTTP_IG_CACHE_KEYLEN;
        p += NGX_HTTP_IG_CACHE_KEYLEN;
        i++;
    }

    argv[5 + i] = (char *) cc->token;
    argvlen[5 + i] = sizeof(cc->token);
    argv[6 + i] = (char *) val;
    argvlen[6 + i] = vlen;

    num = p;
    argv[7 + i] = (char *) num;
    argvlen[7 + i] = ngx_sprintf(num, "%M", ms) - num;
    num += argvlen[7 + i];

    argv[2] = (char *) num;
    argvlen[2] = ngx_sprintf(num, "%ui", 2 + i) - num;

    if (ngx_http_ig_redis_eval(cc->conf->redis, &ngx_http_ig_cache_fill_lua,
                               8 + i, argv, argvlen,
                               ngx_http_ig_cache_fill_done, NULL)
        == NULL)
    {
        ngx_http_ig_redis_warn(cc->conf->redis, r->connection->log,
                               "store not sent");
        return;
    }

    /* the response has been passed on; a next request should see it */
    ngx_http_ig_redis_flush(cc->conf->redis);
}


/* the fill's compare-and-set answers 1 when it stored the entry */

static void
ngx_http_ig_cache_fill_done(redisReply *reply, void *data)
{
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
        ngx_http_ig_metrics_add(IG_MC_CACHE_FILL, 1);
    }
}


void
ngx_http_ig_cache_release(ngx_http_ig_cache_ctx_t *cc)
{
    const char  *argv[5];
    size_t       argvlen[5];

    if (!cc->leased) {
        return;
    }

    cc->leased = 0;

    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (char *) cc->lease;
    argvlen[3] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[4] = (char *) cc->token;
    argvlen[4] = sizeof(cc->token);

    (void) ngx_http_ig_redis_eval(cc->conf->redis,
                                  &ngx_http_ig_cache_release_lua, 5, argv,
                                  argvlen, NULL, NULL);
}


void
ngx_http_ig_cache_purge(ngx_http_request_t *r, ngx_http_ig_purge_conf_t *pcf,
    ngx_http_ig_cache_conf_t *ccf)
{
    u_char                    *p, *keys, tenant[NGX_HTTP_IG_CACHE_TLEN];
    u_char                     md[32], nent[NGX_INT_T_LEN],
                               nkeys[NGX_INT_T_LEN];
    ngx_str_t                  parts[6], v;
    ngx_uint_t                 i, n, ne, nt;
    const char               **argv;
    size_t                    *argvlen;
    ngx_http_ig_redis_t       *redis;
    ngx_http_ig_ctx_t         *ctx;
    ngx_http_ig_cache_ctx_t   *cc;
    ngx_http_complex_value_t  *cv;

    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);
    if (cc && cc->purge_done) {
        return;
    }

    redis = pcf->redis ? pcf->redis : ccf->redis;

    ne = pcf->keys ? pcf->keys->nelts : 1;
    nt = pcf->tags ? pcf->tags->nelts : 0;
    n = ne + nt;

    argv = ngx_palloc(r->pool, (n + 4) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (n + 4) * sizeof(size_t));
    keys = ngx_pnalloc(r->pool, n * NGX_HTTP_IG_CACHE_KEYLEN);

    if (argv == NULL || argvlen == NULL || keys == NULL) {
        return;
    }

    ngx_http_ig_cache_tenant(r, tenant);

    ctx = ngx_http_ig_find_ctx(r);

    parts[1].data = tenant;
    parts[1].len = NGX_HTTP_IG_CACHE_TLEN;

    if (ctx && ctx->key) {
        parts[1] = ctx->key->tenant;
    }

    p = keys;
    i = 3;

    if (pcf->keys == NULL) {
        /* the default key of a GET of the same URI, without args */
        ngx_str_set(&parts[0], "d");
        ngx_str_set(&parts[2], "GET");
        parts[3] = r->uri;
        ngx_str_set(&parts[4], "?");
        ngx_str_null(&parts[5]);

        (void) ngx_http_ig_cache_sha256(r, parts, 6, NULL, md);
        ngx_http_ig_cache_make_key(p, 'c', tenant, md);
        argv[i] = (char *) p;
        argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
        p += NGX_HTTP_IG_CACHE_KEYLEN;

    } else {
        cv = pcf->keys->elts;
        ngx_str_set(&parts[0], "k");

        for (n = 0; n < pcf->keys->nelts; n++) {
            if (ngx_http_complex_value(r, &cv[n], &parts[2]) != NGX_OK) {
                return;
            }

            (void) ngx_http_ig_cache_sha256(r, parts, 3, NULL, md);
            ngx_http_ig_cache_make_key(p, 'c', tenant, md);
            argv[i] = (char *) p;
            argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
            p += NGX_HTTP_IG_CACHE_KEYLEN;
        }
    }

    ne = i - 3;

    if (pcf->tags) {
        cv = pcf->tags->elts;
        ngx_str_set(&parts[0], "t");

        for (n = 0; n < pcf->tags->nelts; n++) {
            if (ngx_http_complex_value(r, &cv[n], &v) != NGX_OK
                || v.len == 0)
            {
                continue;
            }

            parts[1] = v;
            (void) ngx_http_ig_cache_sha256(r, parts, 2, NULL, md);
            ngx_http_ig_cache_make_key(p, 't', tenant, md);
            argv[i] = (char *) p;
            argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
            p += NGX_HTTP_IG_CACHE_KEYLEN;
        }
    }

    argv[2] = (char *) nkeys;
    argvlen[2] = ngx_sprintf(nkeys, "%ui", i - 3) - nkeys;
    argv[i] = (char *) nent;
    argvlen[i] = ngx_sprintf(nent, "%ui", ne) - nent;
    i++;

    if (ngx_http_ig_redis_eval(redis, &ngx_http_ig_cache_purge_lua, i, argv,
                               argvlen, NULL, NULL)
        == NULL)
    {
        ngx_http_ig_redis_warn(redis, r->connection->log,
                               "purge not sent, entries stay until expiry");
        return;
    }

    ngx_http_ig_metrics_add(IG_MC_CACHE_PURGE, 1);

    /* before the write's response reaches the client and its next read */
    ngx_http_ig_redis_flush(redis);

    if (cc) {
        cc->purge_done = 1;
    }
}


static void
ngx_http_ig_cache_cleanup(void *data)
{
    ngx_http_ig_cache_ctx_t  *cc = data;

    if (cc->cmd) {
        ngx_http_ig_redis_cancel(cc->cmd);
        cc->cmd = NULL;
    }

    if (cc->retry.timer_set) {
        ngx_del_timer(&cc->retry);
    }

    if (cc->wake.posted) {
        ngx_delete_posted_event(&cc->wake);
    }

    /* a fill that never came: let the next request take the lease */
    ngx_http_ig_cache_release(cc);
}
