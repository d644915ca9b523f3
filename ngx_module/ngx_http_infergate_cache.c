
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
 * the write never stores its stale value (Facebook's memcache leases):
 * once before it goes to the origin, waiting for the script's reply (so
 * that the write's response cannot overtake it), and again after a 2xx
 * (what a concurrent reader filled while the write ran).
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
#include "ngx_http_infergate_grpc.h"


#define NGX_HTTP_IG_CACHE_POLL  20      /* ms between lease polls          */


static ngx_uint_t ngx_http_ig_cache_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_cache_access(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static u_char *ngx_http_ig_cache_list_next(u_char *p, u_char *last,
    ngx_str_t *elt);
static ngx_int_t ngx_http_ig_cache_lookup(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);
static ngx_int_t ngx_http_ig_cache_digest(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, u_char *digest);
static void ngx_http_ig_cache_fill_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_ig_cache_prepurge(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_http_ig_cache_loc_conf_t *clcf);
static void ngx_http_ig_cache_prepurge_done(redisReply *reply, void *data);
static ngx_http_ig_redis_cmd_t *ngx_http_ig_cache_purge_issue(
    ngx_http_request_t *r, ngx_http_ig_purge_conf_t *pcf,
    ngx_http_ig_cache_conf_t *ccf, ngx_http_ig_cache_ctx_t *wcc,
    ngx_http_ig_redis_handler_pt handler, void *data);
static ngx_http_ig_redis_cmd_t *ngx_http_ig_cache_purge_send(
    ngx_http_ig_redis_t *redis, const char **argv, size_t *argvlen,
    ngx_uint_t nkeys, ngx_uint_t nent, ngx_http_ig_cache_ctx_t *wcc,
    ngx_http_ig_redis_handler_pt handler, void *data);
static void ngx_http_ig_cache_purge_keys(u_char *p, u_char *entry);
static ngx_int_t ngx_http_ig_cache_lease(ngx_http_ig_cache_ctx_t *cc);
static void ngx_http_ig_cache_get_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_ig_cache_keep(ngx_http_ig_cache_ctx_t *cc,
    redisReply *e);
static void ngx_http_ig_cache_lookup_done(redisReply *reply, void *data);
static ngx_int_t ngx_http_ig_cache_hit(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_http_ig_ctx_t *ctx);
static ngx_uint_t ngx_http_ig_cache_revalidating(ngx_http_ig_cache_ctx_t *cc);
static ngx_uint_t ngx_http_ig_cache_stale_usable(ngx_http_ig_cache_ctx_t *cc);
static ngx_int_t ngx_http_ig_cache_swr(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_http_ig_ctx_t *ctx);
static void ngx_http_ig_cache_body_handler(ngx_http_request_t *r);
static void ngx_http_ig_cache_wake_handler(ngx_event_t *ev);
static void ngx_http_ig_cache_cleanup(void *data);
static ngx_int_t ngx_http_ig_cache_sha256(ngx_http_request_t *r,
    ngx_str_t *parts, ngx_uint_t n, ngx_chain_t *body, u_char *out);
static void ngx_http_ig_cache_key_names(ngx_http_ig_cache_conf_t *ccf,
    ngx_str_t *v);
static ngx_int_t ngx_http_ig_cache_request_bypass(ngx_http_request_t *r,
    ngx_http_ig_cache_conf_t *ccf);
static ngx_int_t ngx_http_ig_cache_origin(ngx_http_request_t *r,
    ngx_str_t *parts);
static u_char *ngx_http_ig_cache_trim(u_char *dst, u_char *p, u_char *last,
    ngx_uint_t low);
static ngx_int_t ngx_http_ig_cache_spec(ngx_http_ig_cache_ctx_t *cc,
    redisReply *e);
static ngx_uint_t ngx_http_ig_cache_header_is(ngx_table_elt_t *h,
    const char *name, size_t len);


/*
 * After a GET found nothing fresh.  KEYS: entry, lease and, for a
 * variant, the primary's variant set (so that a purge finds the
 * variant's lease); ARGV: token, lease ms, now (epoch ms).  {1, value}
 * hit (filled meanwhile; an entry past its freshness, kept for stale
 * answers, is no hit), {2} lease taken, {3} lease busy.
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_lookup_lua;
static const char  ngx_http_ig_cache_lookup_text[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then\n"
    "  local x = string.match(v, '^%d+ %d+ x(%d+):')\n"
    "  if not x or tonumber(x) > tonumber(ARGV[3]) then return {1, v} end\n"
    "end\n"
    "if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  if KEYS[3] then\n"
    "    redis.call('SADD', KEYS[3], KEYS[1])\n"
    "    if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then\n"
    "      redis.call('PEXPIRE', KEYS[3], ARGV[2])\n"
    "    end\n"
    "  end\n"
    "  return {2}\n"
    "end\n"
    "return {3}\n";

/*
 * The fill: stores only while the lease is still ours; a purge deleted
 * it.  KEYS: entry, lease, primary, the primary's variant set, tag sets;
 * ARGV: token, value, ttl ms, Vary spec ("" for none).  A variant (entry
 * other than the primary) joins the variant set; a spec is written to the
 * primary and outlives its variants.
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_fill_lua;
static const char  ngx_http_ig_cache_fill_text[] =
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[2])\n"
    "local ttl = tonumber(ARGV[3])\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)\n"
    "if ARGV[4] ~= '' then\n"
    "  local t = redis.call('PTTL', KEYS[3])\n"
    "  if t < ttl then t = ttl end\n"
    "  redis.call('SET', KEYS[3], ARGV[4], 'PX', t)\n"
    "end\n"
    "if KEYS[1] ~= KEYS[3] then\n"
    "  redis.call('SADD', KEYS[4], KEYS[1])\n"
    "  if redis.call('PTTL', KEYS[4]) < ttl then\n"
    "    redis.call('PEXPIRE', KEYS[4], ttl)\n"
    "  end\n"
    "end\n"
    "for i = 5, #KEYS do\n"
    "  redis.call('SADD', KEYS[i], KEYS[1])\n"
    "  if redis.call('PTTL', KEYS[i]) < ttl then\n"
    "    redis.call('PEXPIRE', KEYS[i], ttl)\n"
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
 * The purge, one script, so that a write's entries, their variants and
 * the tagged entries are gone together before the write's response.
 * KEYS: ARGV[1] entries, each followed by its lease ("igl:" for "igc:")
 * and its variant set ("igv:"), then tag sets: every key a write names is
 * declared.  The members of the variant and tag sets (variants, tagged
 * entries) and their leases and variant sets are known only inside
 * Redis: they are dropped here too, and share their set's hash tag (the
 * tenant), so the script still touches one slot (issue 15).  ARGV[2],
 * when not empty, is the token of a write lease left on each entry's
 * lease key for ARGV[3] ms (the purge before a write): no fill can take
 * the lease until the write is done (the purge after it, or a release).
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_cache_purge_lua;
static const char  ngx_http_ig_cache_purge_text[] =
    "local function drop(k)\n"
    "  if string.sub(k, 1, 4) ~= 'igc:' then return end\n"
    "  local s = string.sub(k, 4)\n"
    "  redis.call('DEL', k, 'igl' .. s)\n"
    "  local m = redis.pcall('SMEMBERS', 'igv' .. s)\n"
    "  if type(m) == 'table' then\n"
    "    for _, v in ipairs(m) do\n"
    "      if string.sub(v, 1, 4) == 'igc:' then\n"
    "        redis.call('DEL', v, 'igl' .. string.sub(v, 4))\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  redis.call('DEL', 'igv' .. s)\n"
    "end\n"
    "local n = tonumber(ARGV[1]) * 3\n"
    "for i = 1, #KEYS do\n"
    "  if i > n or i % 3 == 0 then\n"
    "    local m = redis.pcall('SMEMBERS', KEYS[i])\n"
    "    if type(m) == 'table' then\n"
    "      for _, k in ipairs(m) do drop(k) end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', unpack(KEYS))\n"
    "if ARGV[2] ~= '' then\n"
    "  for i = 1, tonumber(ARGV[1]) do\n"
    "    redis.call('SET', KEYS[3 * i - 1], ARGV[2], 'PX', ARGV[3])\n"
    "  end\n"
    "end\n"
    "return {}\n";

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

    if (ngx_http_ig_check_var_case(cf, &value) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value;
    ccv.complex_value = cv;

    return ngx_http_compile_complex_value(&ccv);
}


/*
 * Whether key= names the request's cookies or credentials: a request
 * carrying them bypasses the cache unless the key covers them.
 */

static void
ngx_http_ig_cache_key_names(ngx_http_ig_cache_conf_t *ccf, ngx_str_t *v)
{
    u_char      *p, *last;
    size_t       n;
    ngx_uint_t   i;

    static struct {
        ngx_str_t   prefix;
        ngx_uint_t  auth;
    } names[] = {
        { ngx_string("cookie_"), 0 },
        { ngx_string("http_cookie"), 0 },
        { ngx_string("http_authorization"), 1 },
        { ngx_string("remote_user"), 1 },
    };

    last = v->data + v->len;

    for (p = v->data; p < last; p++) {
        if (*p != '$') {
            continue;
        }

        if (p + 1 < last && p[1] == '{') {
            p++;
        }

        n = last - (p + 1);

        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (n >= names[i].prefix.len
                && ngx_strncasecmp(p + 1, names[i].prefix.data,
                                   names[i].prefix.len) == 0)
            {
                if (names[i].auth) {
                    ccf->key_auth = 1;

                } else {
                    ccf->key_cookie = 1;
                }
            }
        }
    }
}


char *
ngx_http_ig_cache_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_cache_loc_conf_t *clcf = conf;

    ngx_int_t                  n;
    ngx_str_t                 *value, s, name;
    ngx_uint_t                 i, j, *st;
    ngx_msec_t                 ms;
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

        if (ngx_strncmp(value[i].data, "stale_if_error=", 15) == 0
            || ngx_strncmp(value[i].data, "stale_while_revalidate=", 23)
               == 0)
        {
            n = (value[i].data[6] == 'i') ? 15 : 23;
            s.data = value[i].data + n;
            s.len = value[i].len - n;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms > 7 * 86400000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_cache: \"%V\": a time from "
                                   "0 to 7d", &value[i]);
                return NGX_CONF_ERROR;
            }

            if (n == 15) {
                ccf->stale_if_error = ms;

            } else {
                ccf->stale_while_revalidate = ms;
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
            ngx_http_ig_cache_key_names(ccf, &value[i]);
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


/* the last stage before the content handler: the cache lookup */

const ngx_http_ig_stage_t  ngx_http_ig_cache_stage = {
    ngx_string("cache"),
    ngx_http_ig_cache_on,
    ngx_http_ig_cache_access
};


/* a cached location, or a write through infergate_cache_purge */

static ngx_uint_t
ngx_http_ig_cache_on(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_cache_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_cache_module);

    return clcf->cache != NULL
           || (clcf->purge != NULL
               && (r->method & NGX_HTTP_IG_CACHE_WRITES));
}


static ngx_int_t
ngx_http_ig_cache_access(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    ngx_int_t                      rc;
    ngx_pool_cleanup_t            *cln;
    ngx_http_ig_cache_ctx_t       *cc;
    ngx_http_ig_cache_loc_conf_t  *clcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_cache_module);
    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);

    if (cc == NULL) {
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

    if (clcf->purge && (r->method & NGX_HTTP_IG_CACHE_WRITES)
        && cc->prepurge != NGX_HTTP_IG_PREPURGE_DONE)
    {
        rc = ngx_http_ig_cache_prepurge(r, cc, clcf);
        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    if (cc->conf == NULL) {
        /* infergate_cache_purge without infergate_cache */
        return NGX_DECLINED;
    }

    switch (cc->state) {

    case NGX_HTTP_IG_CACHE_NONE:

        if (!(r->method & cc->conf->methods)) {
            cc->bypass = NGX_HTTP_IG_BYP_METHOD;
            goto bypass;
        }

        if (ngx_http_ig_grpc_request(r) && !ngx_http_ig_grpc_cacheable(r)) {
            /* gRPC: only ModelInfer is cached */
            cc->bypass = NGX_HTTP_IG_BYP_METHOD;
            goto bypass;
        }

        rc = ngx_http_ig_cache_request_bypass(r, cc->conf);
        if (rc) {
            cc->bypass = (rc == 2) ? NGX_HTTP_IG_BYP_REQUEST
                                   : NGX_HTTP_IG_BYP_CONF;
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
            if (ngx_http_ig_cache_revalidating(cc)) {
                return ngx_http_ig_cache_swr(r, cc, ctx);
            }

            cc->status = NGX_HTTP_IG_CST_MISS;
            cc->state = NGX_HTTP_IG_CACHE_DONE;
            return NGX_DECLINED;

        case NGX_HTTP_IG_LOOKUP_BUSY:

            if (ngx_http_ig_cache_revalidating(cc)) {
                /* another request (here or elsewhere) refreshes it */
                return ngx_http_ig_cache_swr(r, cc, ctx);
            }

            if (ngx_http_ig_cache_stale_usable(cc)) {
                /*
                 * An expired entry that may answer a failure: no waiting
                 * on the filler (which may be failing too, the backend
                 * dead or the breaker open); to the origin, storing
                 * nothing, and the stale entry if that fails.
                 */
                cc->status = NGX_HTTP_IG_CST_MISS;
                cc->state = NGX_HTTP_IG_CACHE_DONE;
                return NGX_DECLINED;
            }

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


/*
 * Delete-before-write: the write goes to the origin only after Redis has
 * run the purge (or failed to, or not answered within the server's
 * timeout=), so that its response, and the writer's next read through any
 * gateway, cannot overtake the purge.  A failure is logged and counted
 * (infergate_redis_errors_total) and the write goes on: refusing writes
 * because the cache is down would make the cache a dependency of the
 * origin.  The purge after a 2xx (the header filter) still runs.
 */

static ngx_int_t
ngx_http_ig_cache_prepurge(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    ngx_http_ig_cache_loc_conf_t *clcf)
{
    ngx_http_ig_redis_t  *redis;

    if (cc->prepurge == NGX_HTTP_IG_PREPURGE_SENT) {
        /* woken before the reply */
        return NGX_AGAIN;
    }

    redis = clcf->purge->redis ? clcf->purge->redis : clcf->cache->redis;

    /* the write lease's token: "w", then nobody else's */
    ngx_sprintf(cc->wtoken, "w%07xD%08xD%08xD%08xD",
                (uint32_t) ngx_random() & 0xfffffff, (uint32_t) ngx_random(),
                (uint32_t) ngx_pid, (uint32_t) ngx_current_msec);

    cc->cmd = ngx_http_ig_cache_purge_issue(r, clcf->purge, clcf->cache, cc,
                                            ngx_http_ig_cache_prepurge_done,
                                            cc);
    if (cc->cmd == NULL) {
        ngx_http_ig_metrics_add(IG_MC_REDIS_ERROR, 1);
        ngx_http_ig_redis_warn(redis, r->connection->log,
                               "purge before a write not sent, the write "
                               "goes on; its entries stay until the purge "
                               "after it or their expiry");
        cc->prepurge = NGX_HTTP_IG_PREPURGE_DONE;
        return NGX_DECLINED;
    }

    cc->prepurge = NGX_HTTP_IG_PREPURGE_SENT;

    /* even if no reply comes, the script may have run: release at the end */
    cc->wlease = 1;

    ngx_http_ig_redis_flush(redis);

    return NGX_AGAIN;
}


static void
ngx_http_ig_cache_prepurge_done(redisReply *reply, void *data)
{
    ngx_http_ig_cache_ctx_t  *cc = data;

    ngx_http_ig_redis_t           *redis;
    ngx_http_ig_cache_loc_conf_t  *clcf;

    cc->cmd = NULL;
    cc->prepurge = NGX_HTTP_IG_PREPURGE_DONE;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        /* counted by the Redis layer */
        clcf = ngx_http_get_module_loc_conf(cc->request,
                                            ngx_http_infergate_cache_module);
        redis = clcf->purge->redis ? clcf->purge->redis
                                   : clcf->cache->redis;

        ngx_http_ig_redis_warn(redis, cc->request->connection->log,
                               "purge before a write failed or was late, "
                               "the write goes on; its entries stay until "
                               "the purge after it or their expiry");
    }

    /* out of hiredis's stack: the request runs from the posted queue */
    ngx_post_event(&cc->wake, &ngx_posted_events);
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

        ngx_memcpy(cc->digest, digest, 32);
        ngx_http_ig_cache_make_key(cc->entry, 'c', cc->tenant, digest);
        ngx_http_ig_cache_make_key(cc->lease, 'l', cc->tenant, digest);
        ngx_http_ig_cache_make_key(cc->variants, 'v', cc->tenant, digest);
        ngx_memcpy(cc->primary, cc->entry, NGX_HTTP_IG_CACHE_KEYLEN);

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
    u_char       lease_ms[NGX_INT_T_LEN], now[NGX_INT64_LEN];
    ngx_uint_t   i;
    const char  *argv[9];
    size_t       argvlen[9];

    /* EVALSHA sha numkeys entry lease [variants] token lease_ms now */

    i = 3;
    argv[i] = (char *) cc->entry;
    argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[i] = (char *) cc->lease;
    argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;

    if (cc->varied) {
        argv[i] = (char *) cc->variants;
        argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
    }

    argv[2] = cc->varied ? "3" : "2";
    argvlen[2] = 1;

    argv[i] = (char *) cc->token;
    argvlen[i++] = sizeof(cc->token);
    argv[i] = (char *) lease_ms;
    argvlen[i++] = ngx_sprintf(lease_ms, "%M", cc->conf->lock_timeout)
                   - lease_ms;
    argv[i] = (char *) now;
    argvlen[i++] = ngx_sprintf(now, "%L", ngx_http_ig_cache_now_ms()) - now;

    cc->cmd = ngx_http_ig_redis_eval(cc->conf->redis,
                                     &ngx_http_ig_cache_lookup_lua, i, argv,
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

        switch (ngx_http_ig_cache_spec(cc, reply)) {

        case NGX_OK:
            /* a Vary spec: the variant's GET is on its way */
            return;

        case NGX_DECLINED:
            if (ngx_http_ig_cache_keep(cc, reply) != NGX_OK) {
                break;
            }

            if (ngx_http_ig_cache_parse(cc, &cc->value) != NGX_OK
                || cc->e_fresh > ngx_http_ig_cache_now_ms())
            {
                /* fresh (or malformed: the hit path says so) */
                cc->result = NGX_HTTP_IG_LOOKUP_HIT;
                break;
            }

            /* past its freshness: kept for a stale answer, else a miss */
            cc->stale = cc->value;
            ngx_str_null(&cc->value);
            goto miss;

        default:
            break;
        }

        goto wake;
    }

    if (reply->type != REDIS_REPLY_NIL) {
        goto wake;
    }

miss:

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

        switch (ngx_http_ig_cache_spec(cc, e)) {

        case NGX_OK:
            /* filled meanwhile with a Vary spec: look up the variant */
            return;

        case NGX_DECLINED:
            if (ngx_http_ig_cache_keep(cc, e) != NGX_OK) {
                cc->result = NGX_HTTP_IG_LOOKUP_ERROR;
            }

            break;

        default:
            cc->result = NGX_HTTP_IG_LOOKUP_ERROR;
            break;
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


int64_t
ngx_http_ig_cache_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (int64_t) tp->sec * 1000 + tp->msec;
}


/*
 * A stored value: "STATUS AGE_BASE xFRESH:SIE:SWR CTLEN CONTENT_TYPE"
 * then the body, e.g. "200 1700000000 x1700000060000:30000:0 16
 * application/json{...}": FRESH is when the entry stops being fresh
 * (epoch ms), SIE and SWR how long after that it may still be served
 * stale (ms).  An entry without the x field (stored before stale answers
 * existed) is fresh for as long as Redis keeps it.
 */

ngx_int_t
ngx_http_ig_cache_parse(ngx_http_ig_cache_ctx_t *cc, ngx_str_t *value)
{
    u_char     *p, *end, *last, *q;
    ngx_int_t   status, ctlen, n;

    p = value->data;
    end = p + value->len;

    if (value->len < 10 || p[3] != ' ') {
        return NGX_ERROR;
    }

    status = ngx_atoi(p, 3);
    p += 4;

    last = ngx_strlchr(p, end, ' ');
    if (last == NULL) {
        return NGX_ERROR;
    }

    cc->e_stored = ngx_atotm(p, last - p);
    p = last + 1;

    cc->e_fresh = INT64_MAX;
    cc->e_sie = 0;
    cc->e_swr = 0;

    if (p < end && *p == 'x') {
        last = ngx_strlchr(p, end, ' ');
        if (last == NULL) {
            return NGX_ERROR;
        }

        q = ngx_strlchr(p, last, ':');
        if (q == NULL) {
            return NGX_ERROR;
        }

        n = ngx_atoi(p + 1, q - p - 1);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        cc->e_fresh = n;
        p = q + 1;

        q = ngx_strlchr(p, last, ':');
        if (q == NULL) {
            return NGX_ERROR;
        }

        n = ngx_atoi(p, q - p);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        cc->e_sie = n;
        p = q + 1;

        n = ngx_atoi(p, last - p);
        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        cc->e_swr = n;
        p = last + 1;
    }

    last = ngx_strlchr(p, end, ' ');
    if (last == NULL) {
        return NGX_ERROR;
    }

    ctlen = ngx_atoi(p, last - p);
    p = last + 1;

    if (status < 200 || status > 299 || cc->e_stored == NGX_ERROR
        || ctlen == NGX_ERROR || ctlen > end - p)
    {
        return NGX_ERROR;
    }

    cc->e_status = status;
    cc->e_type.data = p;
    cc->e_type.len = ctlen;
    cc->e_body.data = p + ctlen;
    cc->e_body.len = end - p - ctlen;

    return NGX_OK;
}


/* a fresh entry, or a stale one while it is revalidated */

static ngx_int_t
ngx_http_ig_cache_hit(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    ngx_http_ig_ctx_t *ctx)
{
    u_char       *age;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_str_t    *value;
    ngx_chain_t   out;

    value = (cc->status == NGX_HTTP_IG_CST_STALE) ? &cc->stale : &cc->value;

    if (ngx_http_ig_cache_parse(cc, value) != NGX_OK) {
        goto bad;
    }

    if (cc->status != NGX_HTTP_IG_CST_STALE) {
        cc->status = NGX_HTTP_IG_CST_HIT;
    }

    cc->state = NGX_HTTP_IG_CACHE_DONE;
    cc->direct = 1;

    if (ctx) {
        ngx_str_set(&ctx->action, "cache_hit");
    }

    if (r->request_body == NULL) {
        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    r->headers_out.status = cc->e_status;
    r->headers_out.content_type = cc->e_type;
    r->headers_out.content_type_len = cc->e_type.len;
    r->headers_out.content_length_n = cc->e_body.len;

    age = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (age == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (cc->vary.len
        && ngx_http_ig_add_header(r, "Vary", cc->vary.data, cc->vary.len)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ig_add_header(r, "Age", age,
                               ngx_sprintf(age, "%T",
                                           ngx_max(ngx_time() - cc->e_stored,
                                                   0))
                               - age)
        != NGX_OK
        || ngx_http_ig_cache_status_header(r, cc) != NGX_OK)
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

    b->pos = cc->e_body.data;
    b->last = cc->e_body.data + cc->e_body.len;
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


/* an expired entry within its stale-while-revalidate time */

static ngx_uint_t
ngx_http_ig_cache_revalidating(ngx_http_ig_cache_ctx_t *cc)
{
    ngx_msec_t  swr;

    if (cc->stale.len == 0 || cc->conf->stale_while_revalidate == 0
        || ngx_http_ig_cache_parse(cc, &cc->stale) != NGX_OK
        || cc->e_fresh == INT64_MAX)
    {
        return 0;
    }

    swr = ngx_min(cc->e_swr, cc->conf->stale_while_revalidate);

    return ngx_http_ig_cache_now_ms() <= cc->e_fresh + (int64_t) swr;
}


/* an expired entry within its stale-if-error time */

static ngx_uint_t
ngx_http_ig_cache_stale_usable(ngx_http_ig_cache_ctx_t *cc)
{
    ngx_msec_t  sie;

    if (cc->stale.len == 0 || cc->conf->stale_if_error == 0
        || ngx_http_ig_cache_parse(cc, &cc->stale) != NGX_OK
        || cc->e_fresh == INT64_MAX)
    {
        return 0;
    }

    sie = ngx_min(cc->e_sie, cc->conf->stale_if_error);

    return ngx_http_ig_cache_now_ms() <= cc->e_fresh + (int64_t) sie;
}


/*
 * Stale-while-revalidate: the expired entry goes out at once.  The
 * request that took the fill lease hands it to a background subrequest
 * (a clone of this request: same method, body and location) whose
 * response the capture filter stores and nobody receives; a request
 * that found the lease taken (another worker or gateway refreshes) only
 * answers.  One refresh per key: the lease.
 */

static ngx_int_t
ngx_http_ig_cache_swr(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    ngx_http_ig_ctx_t *ctx)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_request_t       *sr;
    ngx_http_ig_cache_ctx_t  *rc;

    cc->status = NGX_HTTP_IG_CST_STALE;

    if (!cc->leased) {
        return ngx_http_ig_cache_hit(r, cc, ctx);
    }

    rc = ngx_palloc(r->pool, sizeof(ngx_http_ig_cache_ctx_t));
    if (rc == NULL) {
        goto failed;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    if (ngx_http_subrequest(r, &r->uri, &r->args, &sr, NULL,
                            NGX_HTTP_SUBREQUEST_CLONE
                            |NGX_HTTP_SUBREQUEST_BACKGROUND)
        != NGX_OK)
    {
        goto failed;
    }

    /* the lease goes with the refresh; its pool cleanup gives it back */

    *rc = *cc;
    rc->request = sr;
    rc->status = NGX_HTTP_IG_CST_MISS;
    rc->state = NGX_HTTP_IG_CACHE_DONE;
    rc->refresh = 1;
    rc->direct = 0;
    rc->cmd = NULL;
    ngx_str_null(&rc->stale);
    ngx_memzero(&rc->wake, sizeof(ngx_event_t));
    ngx_memzero(&rc->retry, sizeof(ngx_event_t));

    cln->handler = ngx_http_ig_cache_cleanup;
    cln->data = rc;

    ngx_http_set_ctx(sr, rc, ngx_http_infergate_cache_module);

    cc->leased = 0;

    return ngx_http_ig_cache_hit(r, cc, ctx);

failed:

    ngx_http_ig_cache_release(cc);

    return ngx_http_ig_cache_hit(r, cc, ctx);
}


/*
 * In the header filter: the content failed (500, 502, 503, 504: RFC
 * 5861 section 4) and an entry within its stale-if-error time is at
 * hand.  The failure's status and fields give way to the entry's; the
 * body filter sends the entry's body instead of the failure's.
 * NGX_DECLINED: no stale answer.
 */

ngx_int_t
ngx_http_ig_cache_stale_swap(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc)
{
    u_char           *age;
    int64_t           now;
    ngx_uint_t        i, status;
    ngx_msec_t        sie;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    status = r->headers_out.status;

    if (cc->stale.len == 0
        || (status != 500 && status != 502 && status != 503
            && status != 504))
    {
        return NGX_DECLINED;
    }

    if (ngx_http_ig_cache_parse(cc, &cc->stale) != NGX_OK) {
        return NGX_DECLINED;
    }

    sie = ngx_min(cc->e_sie, cc->conf->stale_if_error);
    now = ngx_http_ig_cache_now_ms();

    if (cc->e_fresh == INT64_MAX || now > cc->e_fresh + (int64_t) sie) {
        return NGX_DECLINED;
    }

    cc->fwd_status = status;
    cc->status = NGX_HTTP_IG_CST_STALE;
    cc->swap = 1;

    /* the failure's fields go: Retry-After, its Content-Length ... */

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

        h[i].hash = 0;
    }

    r->headers_out.status = cc->e_status;
    ngx_str_null(&r->headers_out.status_line);
    r->headers_out.content_type = cc->e_type;
    r->headers_out.content_type_len = cc->e_type.len;
    r->headers_out.content_type_lowcase = NULL;
    ngx_str_null(&r->headers_out.charset);
    r->headers_out.content_length = NULL;
    r->headers_out.content_length_n = cc->e_body.len;
    r->headers_out.content_encoding = NULL;
    r->headers_out.location = NULL;
    r->headers_out.refresh = NULL;
    r->headers_out.last_modified = NULL;
    r->headers_out.last_modified_time = -1;
    r->headers_out.etag = NULL;
    r->headers_out.expires = NULL;
    r->headers_out.www_authenticate = NULL;
    r->headers_out.accept_ranges = NULL;
    r->headers_out.content_range = NULL;

    age = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (age == NULL) {
        return NGX_ERROR;
    }

    if (cc->vary.len
        && ngx_http_ig_add_header(r, "Vary", cc->vary.data, cc->vary.len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_ig_add_header(r, "Age", age,
                               ngx_sprintf(age, "%T",
                                           ngx_max(ngx_time() - cc->e_stored,
                                                   0))
                               - age)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "infergate_cache: %ui from the origin, answered with a "
                  "stale entry", status);

    return NGX_OK;
}


/*
 * RFC 9211 Cache-Status, one member "infergate" with:
 *   hit; ttl=N                          a fresh entry (N s left)
 *   fwd=stale; ttl=-N; detail=stale-while-revalidate
 *                                       an expired entry, refreshed in
 *                                       the background
 *   fwd=stale; fwd-status=S; ttl=-N; detail=stale-if-error
 *                                       the origin failed with S (or the
 *                                       breaker was open: S 503)
 *   fwd=uri-miss; stored                nothing stored, the response is
 *                                       being stored
 *   fwd=uri-miss; fwd-status=S          not stored (S: the response's
 *                                       status; X-Cache-Status BYPASS
 *                                       when the response may not be
 *                                       stored, MISS otherwise)
 *   fwd=stale; stored | fwd-status=S    the same with an expired entry
 *   fwd=bypass | fwd=method | fwd=request
 *                                       cache off for this request: Redis
 *                                       down or a personalised request,
 *                                       a method not cached, the
 *                                       request's no-store
 */

ngx_int_t
ngx_http_ig_cache_status_header(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc)
{
    u_char     *p, *v;
    int64_t     ttl;
    ngx_uint_t  status;

    v = ngx_pnalloc(r->pool, 128);
    if (v == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(v, "infergate; ", sizeof("infergate; ") - 1);

    ttl = 0;

    if (cc->status == NGX_HTTP_IG_CST_HIT
        || cc->status == NGX_HTTP_IG_CST_STALE)
    {
        ttl = (cc->e_fresh == INT64_MAX)
              ? (int64_t) cc->conf->ttl / 1000
              : (cc->e_fresh - ngx_http_ig_cache_now_ms()) / 1000;
    }

    switch (cc->status) {

    case NGX_HTTP_IG_CST_HIT:
        p = ngx_sprintf(p, "hit; ttl=%L", ngx_max(ttl, 0));
        break;

    case NGX_HTTP_IG_CST_STALE:
        if (cc->swap) {
            p = ngx_sprintf(p, "fwd=stale; fwd-status=%ui; ttl=%L; "
                            "detail=stale-if-error", cc->fwd_status,
                            ngx_min(ttl, -1));

        } else {
            p = ngx_sprintf(p, "fwd=stale; ttl=%L; "
                            "detail=stale-while-revalidate",
                            ngx_min(ttl, -1));
        }

        break;

    case NGX_HTTP_IG_CST_MISS:
    miss:
        status = r->headers_out.status;
        p = ngx_sprintf(p, "fwd=%s", cc->stale.len ? "stale" : "uri-miss");

        if (cc->capture) {
            p = ngx_sprintf(p, "; stored");

        } else {
            p = ngx_sprintf(p, "; fwd-status=%ui", status);
        }

        break;

    default: /* BYPASS */
        if (cc->bypass == NGX_HTTP_IG_BYP_RESPONSE) {
            goto miss;
        }

        p = ngx_sprintf(p, "fwd=%s",
                        cc->bypass == NGX_HTTP_IG_BYP_METHOD ? "method"
                        : cc->bypass == NGX_HTTP_IG_BYP_REQUEST ? "request"
                        : "bypass");
        break;
    }

    if (ngx_http_ig_add_header(r, "Cache-Status", v, p - v) != NGX_OK) {
        return NGX_ERROR;
    }

    if (cc->direct) {
        if (cc->status == NGX_HTTP_IG_CST_HIT) {
            return ngx_http_ig_add_header(r, "X-Cache-Status",
                                          (u_char *) "HIT", 3);
        }

        return ngx_http_ig_add_header(r, "X-Cache-Status",
                                      (u_char *) "STALE", 5);
    }

    return NGX_OK;
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

    /* a hash tag: a tenant's keys share a Redis Cluster slot (redis.md) */
    out[4] = '{';
    ngx_memcpy(out + 5, tenant, NGX_HTTP_IG_CACHE_TLEN - 2);
    out[3 + NGX_HTTP_IG_CACHE_TLEN] = '}';
    out[4 + NGX_HTTP_IG_CACHE_TLEN] = ':';
    ngx_hex_dump(out + 5 + NGX_HTTP_IG_CACHE_TLEN, digest, 32);
}


/*
 * key=: sha256("k", tenant, scheme, server, host, value).  Default:
 * sha256("d", tenant, scheme, server, host, method (HEAD as GET), URI,
 * "?", args, and for POST the media type and the body).
 */

static ngx_int_t
ngx_http_ig_cache_digest(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    u_char *digest)
{
    u_char             *p, *last, *semi;
    ngx_str_t           parts[10], *ct;
    ngx_uint_t          grpc;
    ngx_chain_t        *body;
    ngx_http_ig_ctx_t  *ctx;

    ngx_http_ig_cache_tenant(r, cc->tenant);

    ctx = ngx_http_ig_find_ctx(r);

    parts[1].data = cc->tenant;
    parts[1].len = NGX_HTTP_IG_CACHE_TLEN;

    if (ctx && ctx->key) {
        /* the full tenant name, not only its short hash */
        parts[1] = ctx->key->tenant;
    }

    if (ngx_http_ig_cache_origin(r, &parts[2]) != NGX_OK) {
        return NGX_ERROR;
    }

    grpc = ngx_http_ig_grpc_request(r);

    if (cc->conf->key) {
        /* gRPC and HTTP entries apart: "K" for gRPC */
        if (grpc) {
            ngx_str_set(&parts[0], "K");

        } else {
            ngx_str_set(&parts[0], "k");
        }

        if (ngx_http_complex_value(r, cc->conf->key, &parts[5]) != NGX_OK) {
            return NGX_ERROR;
        }

        if (grpc) {
            /* the key's models=, checked after the lookup for gRPC */
            if (ngx_http_ig_grpc_cache_models(r, &parts[6]) != NGX_OK) {
                return NGX_ERROR;
            }

            return ngx_http_ig_cache_sha256(r, parts, 7, NULL, digest);
        }

        return ngx_http_ig_cache_sha256(r, parts, 6, NULL, digest);
    }

    if (grpc) {
        ngx_str_set(&parts[0], "D");

    } else {
        ngx_str_set(&parts[0], "d");
    }

    if (r->method & NGX_HTTP_HEAD) {
        ngx_str_set(&parts[5], "GET");

    } else {
        parts[5] = r->method_name;
    }

    parts[6] = r->uri;
    ngx_str_set(&parts[7], "?");
    parts[8] = r->args;

    if (!(r->method & NGX_HTTP_POST)) {
        return ngx_http_ig_cache_sha256(r, parts, 9, NULL, digest);
    }

    /*
     * the media type: "!" when absent, else "=" and the type/subtype
     * lower-cased, then the parameters as sent, blanks around trimmed
     */

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    if (ct == NULL) {
        ngx_str_set(&parts[9], "!");

    } else {
        p = ngx_pnalloc(r->pool, ct->len + 2);
        if (p == NULL) {
            return NGX_ERROR;
        }

        parts[9].data = p;
        *p++ = '=';

        last = ct->data + ct->len;
        semi = ngx_strlchr(ct->data, last, ';');
        if (semi == NULL) {
            semi = last;
        }

        p = ngx_http_ig_cache_trim(p, ct->data, semi, 1);

        if (semi < last) {
            *p++ = ';';
            p = ngx_http_ig_cache_trim(p, semi + 1, last, 0);
        }

        parts[9].len = p - parts[9].data;
    }

    body = r->request_body ? r->request_body->bufs : NULL;

    /* gRPC: the message, without its 5-byte prefix */

    if (grpc && ngx_http_ig_grpc_cache_body(r, body, &body) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_ig_cache_sha256(r, parts, 10, body, digest);
}


/* copies [p, last) without leading and trailing blanks */

static u_char *
ngx_http_ig_cache_trim(u_char *dst, u_char *p, u_char *last, ngx_uint_t low)
{
    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    if (low) {
        ngx_strlow(dst, p, last - p);
        return dst + (last - p);
    }

    return ngx_cpymem(dst, p, last - p);
}


/*
 * What the origin's answer depends on besides the URI: the scheme, the
 * matched server (its place among the configuration's server blocks and
 * its first server_name, so that two vhosts never share an entry, even
 * for the same Host) and the normalised host (nginx's $host: lower case,
 * no trailing dot) with the port of Host unless it is the scheme's
 * default.  Three parts.
 */

static ngx_int_t
ngx_http_ig_cache_origin(ngx_http_request_t *r, ngx_str_t *parts)
{
    u_char                     *p, *last, *colon;
    ngx_int_t                   port, dflt;
    ngx_uint_t                  i;
    ngx_str_t                  *host;
    ngx_http_core_srv_conf_t   *cscf, **cscfp;
    ngx_http_core_main_conf_t  *cmcf;

    dflt = 80;
    ngx_str_set(&parts[0], "http");

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        dflt = 443;
        ngx_str_set(&parts[0], "https");
    }
#endif

    cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);
    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

    cscfp = cmcf->servers.elts;

    for (i = 0; i < cmcf->servers.nelts; i++) {
        if (cscfp[i] == cscf) {
            break;
        }
    }

    p = ngx_pnalloc(r->pool, NGX_INT_T_LEN + 1 + cscf->server_name.len
                             + r->headers_in.server.len + 1 + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    parts[1].data = p;
    p = ngx_sprintf(p, "%ui %V", i, &cscf->server_name);
    parts[1].len = p - parts[1].data;

    parts[2].data = p;
    p = ngx_cpymem(p, r->headers_in.server.data, r->headers_in.server.len);

    /* the port of Host (not of an absolute request-target) */

    host = (r->headers_in.host && r->host_start == NULL)
           ? &r->headers_in.host->value : NULL;

    if (host && host->len) {
        last = host->data + host->len;
        colon = NULL;

        for (p = (host->data[0] == '[')
                 ? ngx_strlchr(host->data, last, ']') : host->data;
             p && p < last;
             p++)
        {
            if (*p == ':') {
                colon = p;
                break;
            }
        }

        p = parts[2].data + r->headers_in.server.len;

        if (colon && colon + 1 < last) {
            port = ngx_atoi(colon + 1, last - colon - 1);

            if (port > 0 && port != dflt) {
                p = ngx_sprintf(p, ":%i", port);
            }
        }
    }

    parts[2].len = p - parts[2].data;

    return NGX_OK;
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


/* the fill, the release and the purge after a write: nobody waits for
 * their replies */

void
ngx_http_ig_cache_store(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc)
{
    u_char                    *p, *val, *keys, *num, *spec, md[32];
    size_t                     len, vlen;
    ngx_int_t                  jitter;
    ngx_str_t                  tag, part[2];
    ngx_uint_t                 i, n;
    ngx_msec_t                 ms, sie, swr;
    ngx_chain_t               *cl;
    const char               **argv;
    size_t                    *argvlen;
    ngx_http_complex_value_t  *cv;

    cc->leased = 0;

    n = cc->conf->tags ? cc->conf->tags->nelts : 0;

    argv = ngx_palloc(r->pool, (n + 12) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (n + 12) * sizeof(size_t));
    keys = ngx_pnalloc(r->pool, n * NGX_HTTP_IG_CACHE_KEYLEN
                                + NGX_INT_T_LEN * 2);
    spec = ngx_pnalloc(r->pool, 2 + cc->resp_vary.len);

    len = 3 + 1 + NGX_TIME_T_LEN + 1 + 1 + 3 * NGX_INT64_LEN + 2 + 1
          + NGX_SIZE_T_LEN + 1 + cc->resp_type.len + cc->size;

    val = ngx_pnalloc(r->pool, len);

    if (argv == NULL || argvlen == NULL || keys == NULL || val == NULL
        || spec == NULL)
    {
        return;
    }

    ms = cc->conf->ttl;
    if (cc->conf->jitter) {
        jitter = (ngx_int_t) (ngx_random() % (2 * cc->conf->jitter + 1))
                 - (ngx_int_t) cc->conf->jitter;
        ms = ms + (ngx_msec_int_t) ms * jitter / 100;
        if (ms == 0) {
            ms = 1;
        }
    }

    /* a shorter freshness lifetime from the origin wins */

    if (cc->resp_ttl && cc->resp_ttl < ms) {
        ms = cc->resp_ttl;
    }

    /*
     * RFC 5861: the response's own stale-if-error= and
     * stale-while-revalidate= count when shorter than the configured
     * ones.  Redis keeps the entry for the freshness lifetime plus the
     * longer of the two.
     */

    sie = cc->conf->stale_if_error;
    swr = cc->conf->stale_while_revalidate;

    if (cc->resp_sie >= 0 && (ngx_msec_t) cc->resp_sie * 1000 < sie) {
        sie = (ngx_msec_t) cc->resp_sie * 1000;
    }

    if (cc->resp_swr >= 0 && (ngx_msec_t) cc->resp_swr * 1000 < swr) {
        swr = (ngx_msec_t) cc->resp_swr * 1000;
    }

    /* the origin's Age counts: a hit's Age is now minus this time */

    p = ngx_sprintf(val, "%03ui %T x%L:%M:%M %uz %V", cc->resp_status,
                    ngx_time() - cc->resp_age,
                    ngx_http_ig_cache_now_ms() + (int64_t) ms, sie, swr,
                    cc->resp_type.len, &cc->resp_type);

    for (cl = cc->body; cl; cl = cl->next) {
        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    vlen = p - val;

    ms += ngx_max(sie, swr);

    /*
     * EVALSHA sha numkeys entry lease primary variants tag...
     *         token value ttl spec
     */

    argv[3] = (char *) cc->entry;
    argvlen[3] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[4] = (char *) cc->lease;
    argvlen[4] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[5] = (char *) cc->primary;
    argvlen[5] = NGX_HTTP_IG_CACHE_KEYLEN;
    argv[6] = (char *) cc->variants;
    argvlen[6] = NGX_HTTP_IG_CACHE_KEYLEN;

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

        argv[7 + i] = (char *) p;
        argvlen[7 + i] = NGX_HTTP_IG_CACHE_KEYLEN;
        p += NGX_HTTP_IG_CACHE_KEYLEN;
        i++;
    }

    argv[7 + i] = (char *) cc->token;
    argvlen[7 + i] = sizeof(cc->token);
    argv[8 + i] = (char *) val;
    argvlen[8 + i] = vlen;

    num = p;
    argv[9 + i] = (char *) num;
    argvlen[9 + i] = ngx_sprintf(num, "%M", ms) - num;
    num += argvlen[9 + i];

    argv[10 + i] = (char *) spec;
    argvlen[10 + i] = 0;

    if (cc->resp_vary.len) {
        argvlen[10 + i] = ngx_sprintf(spec, "V %V", &cc->resp_vary) - spec;
    }

    argv[2] = (char *) num;
    argvlen[2] = ngx_sprintf(num, "%ui", 4 + i) - num;

    if (ngx_http_ig_redis_eval(cc->conf->redis, &ngx_http_ig_cache_fill_lua,
                               11 + i, argv, argvlen,
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


/*
 * The purge after a 2xx write (the header filter): nobody waits for its
 * reply; the purge before the write (ngx_http_ig_cache_prepurge()) made
 * sure that the write's response cannot overtake the removal of what was
 * stored before the write.  This one deletes what a concurrent reader
 * filled while the write ran (a lease taken after the first purge).
 */

void
ngx_http_ig_cache_purge(ngx_http_request_t *r, ngx_http_ig_purge_conf_t *pcf,
    ngx_http_ig_cache_conf_t *ccf)
{
    ngx_http_ig_redis_t       *redis;
    ngx_http_ig_cache_ctx_t   *cc;

    cc = ngx_http_get_module_ctx(r, ngx_http_infergate_cache_module);
    if (cc && cc->purge_done) {
        return;
    }

    redis = pcf->redis ? pcf->redis : ccf->redis;

    if (ngx_http_ig_cache_purge_issue(r, pcf, ccf, NULL, NULL, NULL)
        == NULL)
    {
        ngx_http_ig_redis_warn(redis, r->connection->log,
                               "purge not sent, entries stay until expiry");
        return;
    }

    ngx_http_ig_metrics_add(IG_MC_CACHE_PURGE, 1);

    if (cc && cc->wredis == redis) {
        /* it deletes the write leases too */
        cc->wlease = 0;
    }

    /* before the write's response reaches the client and its next read */
    ngx_http_ig_redis_flush(redis);

    if (cc) {
        cc->purge_done = 1;
    }
}


/* the purge script for this request's keys and tags; NULL: not sent */

static ngx_http_ig_redis_cmd_t *
ngx_http_ig_cache_purge_issue(ngx_http_request_t *r,
    ngx_http_ig_purge_conf_t *pcf, ngx_http_ig_cache_conf_t *ccf,
    ngx_http_ig_cache_ctx_t *wcc, ngx_http_ig_redis_handler_pt handler,
    void *data)
{
    u_char                    *p, *keys, tenant[NGX_HTTP_IG_CACHE_TLEN];
    u_char                     md[32];
    ngx_str_t                  parts[9], v;
    ngx_uint_t                 i, n, ne, nt;
    const char               **argv;
    size_t                    *argvlen;
    ngx_http_ig_redis_t       *redis;
    ngx_http_ig_ctx_t         *ctx;
    ngx_http_complex_value_t  *cv;

    redis = pcf->redis ? pcf->redis : ccf->redis;

    ne = pcf->keys ? pcf->keys->nelts : 1;
    nt = pcf->tags ? pcf->tags->nelts : 0;
    n = 3 * ne + nt;

    /* EVALSHA sha numkeys (entry lease variants)... tag... nent */

    argv = ngx_palloc(r->pool, (n + 6) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (n + 6) * sizeof(size_t));
    keys = ngx_pnalloc(r->pool, n * NGX_HTTP_IG_CACHE_KEYLEN);

    if (argv == NULL || argvlen == NULL || keys == NULL) {
        return NULL;
    }

    ngx_http_ig_cache_tenant(r, tenant);

    ctx = ngx_http_ig_find_ctx(r);

    parts[1].data = tenant;
    parts[1].len = NGX_HTTP_IG_CACHE_TLEN;

    if (ctx && ctx->key) {
        parts[1] = ctx->key->tenant;
    }

    /* the same scheme, server and host as the reads of this vhost */

    if (ngx_http_ig_cache_origin(r, &parts[2]) != NGX_OK) {
        return NULL;
    }

    p = keys;
    i = 3;

    if (pcf->keys == NULL) {
        /* the default key of a GET of the same URI, without args */
        ngx_str_set(&parts[0], "d");
        ngx_str_set(&parts[5], "GET");
        parts[6] = r->uri;
        ngx_str_set(&parts[7], "?");
        ngx_str_null(&parts[8]);

        (void) ngx_http_ig_cache_sha256(r, parts, 9, NULL, md);
        ngx_http_ig_cache_make_key(p, 'c', tenant, md);
        ngx_http_ig_cache_purge_keys(p, p);

        for (n = 0; n < 3; n++) {
            argv[i] = (char *) p;
            argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
            p += NGX_HTTP_IG_CACHE_KEYLEN;
        }

    } else {
        cv = pcf->keys->elts;
        ngx_str_set(&parts[0], "k");

        for (ne = 0; ne < pcf->keys->nelts; ne++) {
            if (ngx_http_complex_value(r, &cv[ne], &parts[5]) != NGX_OK) {
                return NULL;
            }

            (void) ngx_http_ig_cache_sha256(r, parts, 6, NULL, md);
            ngx_http_ig_cache_make_key(p, 'c', tenant, md);
            ngx_http_ig_cache_purge_keys(p, p);

            for (n = 0; n < 3; n++) {
                argv[i] = (char *) p;
                argvlen[i++] = NGX_HTTP_IG_CACHE_KEYLEN;
                p += NGX_HTTP_IG_CACHE_KEYLEN;
            }
        }
    }

    ne = (i - 3) / 3;

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

    if (wcc) {
        /* the entry triples: their lease keys are released */
        wcc->wkeys = keys;
        wcc->nwkeys = ne;
        wcc->wredis = redis;
    }

    return ngx_http_ig_cache_purge_send(redis, argv, argvlen, i - 3, ne, wcc,
                                        handler, data);
}


/* after an entry key at p: its lease and its variant set */

static void
ngx_http_ig_cache_purge_keys(u_char *p, u_char *entry)
{
    if (p != entry) {
        ngx_memcpy(p, entry, NGX_HTTP_IG_CACHE_KEYLEN);
    }

    ngx_memcpy(p + NGX_HTTP_IG_CACHE_KEYLEN, entry,
               NGX_HTTP_IG_CACHE_KEYLEN);
    p[NGX_HTTP_IG_CACHE_KEYLEN + 2] = 'l';

    ngx_memcpy(p + 2 * NGX_HTTP_IG_CACHE_KEYLEN, entry,
               NGX_HTTP_IG_CACHE_KEYLEN);
    p[2 * NGX_HTTP_IG_CACHE_KEYLEN + 2] = 'v';
}


/* argv[3 ...] holds nkeys keys, nent entry triples first, and room for
 * one more (ARGV[1]) */

static ngx_http_ig_redis_cmd_t *
ngx_http_ig_cache_purge_send(ngx_http_ig_redis_t *redis, const char **argv,
    size_t *argvlen, ngx_uint_t nkeys, ngx_uint_t nent,
    ngx_http_ig_cache_ctx_t *wcc, ngx_http_ig_redis_handler_pt handler,
    void *data)
{
    u_char      nk[NGX_INT_T_LEN], ns[NGX_INT_T_LEN], px[NGX_INT_T_LEN];
    ngx_msec_t  ms;

    argv[2] = (char *) nk;
    argvlen[2] = ngx_sprintf(nk, "%ui", nkeys) - nk;
    argv[3 + nkeys] = (char *) ns;
    argvlen[3 + nkeys] = ngx_sprintf(ns, "%ui", nent) - ns;

    /* ARGV[2], ARGV[3]: the write lease, "" for none */

    argv[4 + nkeys] = wcc ? (char *) wcc->wtoken : "";
    argvlen[4 + nkeys] = wcc ? sizeof(wcc->wtoken) : 0;

    ms = (wcc && wcc->conf) ? wcc->conf->lock_timeout
                            : NGX_HTTP_IG_CACHE_WLEASE;
    argv[5 + nkeys] = (char *) px;
    argvlen[5 + nkeys] = ngx_sprintf(px, "%M", ms) - px;

    return ngx_http_ig_redis_eval(redis, &ngx_http_ig_cache_purge_lua,
                                  6 + nkeys, argv, argvlen, handler, data);
}


/* RFC 9111 */

static ngx_uint_t
ngx_http_ig_cache_header_is(ngx_table_elt_t *h, const char *name, size_t len)
{
    return h->hash != 0 && h->key.len == len
           && ngx_strncasecmp(h->key.data, (u_char *) name, len) == 0;
}


/*
 * A request that carries Cookie or Authorization (what is left of it
 * after infergate_auth took its own key) may get a personalised answer:
 * it bypasses the cache unless key= names them (1).  A request's
 * "Cache-Control: no-store" forbids storing its response (RFC 9111
 * 5.2.1.5): it bypasses too (2).
 */

static ngx_int_t
ngx_http_ig_cache_request_bypass(ngx_http_request_t *r,
    ngx_http_ig_cache_conf_t *ccf)
{
    u_char           *p, *last;
    ngx_str_t         name, arg;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

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

        if (!ccf->key_cookie && ngx_http_ig_cache_header_is(&h[i], "Cookie",
                                                            6))
        {
            return 1;
        }

        if (!ccf->key_auth
            && ngx_http_ig_cache_header_is(&h[i], "Authorization", 13))
        {
            return 1;
        }

        if (!ngx_http_ig_cache_header_is(&h[i], "Cache-Control", 13)) {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while ((p = ngx_http_ig_cache_directive_next(p, last, &name, &arg))) {
            if (name.len == 8
                && ngx_strncasecmp(name.data, (u_char *) "no-store", 8) == 0)
            {
                return 2;
            }
        }
    }

    return 0;
}


/*
 * One cache directive of a Cache-Control field value: its name and
 * argument (a token or the inside of a quoted string; data NULL when
 * there is none).  Returns where the next one starts, NULL at the end.
 */

u_char *
ngx_http_ig_cache_directive_next(u_char *p, u_char *last, ngx_str_t *name,
    ngx_str_t *arg)
{
    while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
        p++;
    }

    if (p >= last) {
        return NULL;
    }

    name->data = p;

    while (p < last && *p != '=' && *p != ',' && *p != ' ' && *p != '\t') {
        p++;
    }

    name->len = p - name->data;

    arg->data = NULL;
    arg->len = 0;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    if (p < last && *p == '=') {
        p++;

        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p < last && *p == '"') {
            arg->data = ++p;

            while (p < last && *p != '"') {
                if (*p == '\\' && p + 1 < last) {
                    p++;
                }

                p++;
            }

            arg->len = p - arg->data;

        } else {
            arg->data = p;

            while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
                p++;
            }

            arg->len = p - arg->data;
        }
    }

    while (p < last && *p != ',') {
        p++;
    }

    return p;
}


static ngx_uint_t
ngx_http_ig_cache_tchar(u_char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
        || (c >= 'A' && c <= 'Z'))
    {
        return 1;
    }

    return ngx_strlchr((u_char *) "!#$%&'*+-.^_`|~",
                       (u_char *) "!#$%&'*+-.^_`|~" + 15, c)
           != NULL;
}


/*
 * The next element of a comma-separated field value (RFC 9110 5.6.1)
 * from p on, without the white space around it; empty elements are
 * skipped.  Returns where to go on from, or NULL at the end of the list.
 */

static u_char *
ngx_http_ig_cache_list_next(u_char *p, u_char *last, ngx_str_t *elt)
{
    u_char  *s, *e;

    while (p < last) {
        s = p;
        e = ngx_strlchr(p, last, ',');
        if (e == NULL) {
            e = last;
        }

        p = e + 1;

        while (s < e && (*s == ' ' || *s == '\t')) {
            s++;
        }

        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
            e--;
        }

        if (s != e) {
            elt->data = s;
            elt->len = e - s;
            return p;
        }
    }

    return NULL;
}


/*
 * The canonical Vary spec of a response: its field names lower-cased,
 * without duplicates, sorted, joined by ","; empty when there is no
 * Vary.  NGX_DECLINED: "*", a name that is not a token, more than 16
 * names or more than 254 bytes; such a response is not stored.
 */

ngx_int_t
ngx_http_ig_cache_vary_names(ngx_http_request_t *r, ngx_list_part_t *part,
    ngx_str_t *out)
{
    u_char           *p, *last, *s, *e;
    size_t            total;
    ngx_str_t         names[NGX_HTTP_IG_CACHE_VARY_MAX], t, v;
    ngx_int_t         c;
    ngx_uint_t        i, j, k, n;
    ngx_table_elt_t  *h;

    c = 1;
    n = 0;
    total = 0;
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

        if (!ngx_http_ig_cache_header_is(&h[i], "Vary", 4)) {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while ((p = ngx_http_ig_cache_list_next(p, last, &v)) != NULL) {
            s = v.data;
            e = v.data + v.len;

            if (e - s == 1 && *s == '*') {
                return NGX_DECLINED;
            }

            for (t.data = s; t.data < e; t.data++) {
                if (!ngx_http_ig_cache_tchar(*t.data)) {
                    return NGX_DECLINED;
                }
            }

            t.len = e - s;
            t.data = ngx_pnalloc(r->pool, t.len);
            if (t.data == NULL) {
                return NGX_ERROR;
            }

            ngx_strlow(t.data, s, t.len);

            /* insert in order, once */

            for (j = 0; j < n; j++) {
                c = ngx_memn2cmp(t.data, names[j].data, t.len, names[j].len);
                if (c <= 0) {
                    break;
                }
            }

            if (j < n && c == 0) {
                continue;
            }

            if (n == NGX_HTTP_IG_CACHE_VARY_MAX) {
                return NGX_DECLINED;
            }

            for (k = n; k > j; k--) {
                names[k] = names[k - 1];
            }

            names[j] = t;
            n++;
            total += t.len + 1;
        }
    }

    out->len = 0;

    if (n == 0) {
        return NGX_OK;
    }

    if (total - 1 > NGX_HTTP_IG_CACHE_VARY_LEN - 2) {
        return NGX_DECLINED;
    }

    out->data = ngx_pnalloc(r->pool, total);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;

    for (j = 0; j < n; j++) {
        if (j) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, names[j].data, names[j].len);
    }

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * The digest of a variant: sha256("v", D, then for each name of the
 * spec the name and "!" (the request has no such field) or "=" and its
 * field lines combined, each list member trimmed, joined by ",").
 */

ngx_int_t
ngx_http_ig_cache_variant(ngx_http_request_t *r, ngx_http_ig_cache_ctx_t *cc,
    ngx_str_t *names, u_char *out)
{
    u_char           *p, *last, *s, *e, *d;
    size_t            len;
    ngx_str_t         parts[2 + 2 * NGX_HTTP_IG_CACHE_VARY_MAX], name, v;
    ngx_uint_t        i, n, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    ngx_str_set(&parts[0], "v");
    parts[1].data = cc->digest;
    parts[1].len = 32;
    n = 2;

    p = names->data;
    last = p + names->len;

    while (p < last) {
        if (n == 2 + 2 * NGX_HTTP_IG_CACHE_VARY_MAX) {
            return NGX_ERROR;
        }

        name.data = p;
        p = ngx_strlchr(p, last, ',');
        if (p == NULL) {
            p = last;
        }

        name.len = p - name.data;
        p++;

        if (name.len == 0) {
            return NGX_ERROR;
        }

        /* the request's field lines of this name */

        len = 0;
        found = 0;

        for (part = &r->headers_in.headers.part; part; part = part->next) {
            h = part->elts;

            for (i = 0; i < part->nelts; i++) {
                if (h[i].hash != 0 && h[i].key.len == name.len
                    && ngx_strncasecmp(h[i].key.data, name.data, name.len)
                       == 0)
                {
                    len += h[i].value.len + 1;
                    found = 1;
                }
            }
        }

        parts[n++] = name;

        if (!found) {
            ngx_str_set(&parts[n], "!");
            n++;
            continue;
        }

        d = ngx_pnalloc(r->pool, len + 1);
        if (d == NULL) {
            return NGX_ERROR;
        }

        parts[n].data = d;
        *d++ = '=';

        for (part = &r->headers_in.headers.part; part; part = part->next) {
            h = part->elts;

            for (i = 0; i < part->nelts; i++) {
                if (h[i].hash == 0 || h[i].key.len != name.len
                    || ngx_strncasecmp(h[i].key.data, name.data, name.len)
                       != 0)
                {
                    continue;
                }

                s = h[i].value.data;
                e = s + h[i].value.len;

                while ((s = ngx_http_ig_cache_list_next(s, e, &v)) != NULL) {
                    if (d > parts[n].data + 1) {
                        *d++ = ',';
                    }

                    d = ngx_cpymem(d, v.data, v.len);
                }
            }
        }

        parts[n].len = d - parts[n].data;
        n++;
    }

    return ngx_http_ig_cache_sha256(r, parts, n, NULL, out);
}


/*
 * A value found under the primary key: NGX_DECLINED an entry; NGX_OK a
 * Vary spec, the variant's keys made and its GET sent; NGX_ERROR
 * otherwise (a spec where a variant was expected, or malformed).
 */

static ngx_int_t
ngx_http_ig_cache_spec(ngx_http_ig_cache_ctx_t *cc, redisReply *e)
{
    u_char       *p, digest[32];
    size_t        i;
    const char   *argv[2];
    size_t        argvlen[2];

    if (e->len < 2 || e->str[0] != 'V' || e->str[1] != ' ') {
        return NGX_DECLINED;
    }

    if (cc->varied || e->len > NGX_HTTP_IG_CACHE_VARY_LEN || e->len == 2) {
        return NGX_ERROR;
    }

    for (i = 2; i < e->len; i++) {
        if (e->str[i] != ',' && !ngx_http_ig_cache_tchar(e->str[i])) {
            return NGX_ERROR;
        }
    }

    p = ngx_pnalloc(cc->request->pool, e->len - 2);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, e->str + 2, e->len - 2);
    cc->vary.data = p;
    cc->vary.len = e->len - 2;

    if (ngx_http_ig_cache_variant(cc->request, cc, &cc->vary, digest)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_ig_cache_make_key(cc->entry, 'c', cc->tenant, digest);
    ngx_http_ig_cache_make_key(cc->lease, 'l', cc->tenant, digest);
    cc->varied = 1;

    argv[0] = "GET";
    argvlen[0] = 3;
    argv[1] = (char *) cc->entry;
    argvlen[1] = NGX_HTTP_IG_CACHE_KEYLEN;

    cc->cmd = ngx_http_ig_redis_command(cc->conf->redis, 2, argv, argvlen,
                                        ngx_http_ig_cache_get_done, cc);
    if (cc->cmd == NULL) {
        return NGX_ERROR;
    }

    cc->state = NGX_HTTP_IG_CACHE_LOOKUP;

    return NGX_OK;
}


/*
 * A write that got no 2xx (or none through this location), or ended
 * without a response: its write leases go at once (compare-and-delete),
 * so that readers do not wait them out.
 */

void
ngx_http_ig_cache_unlease(ngx_http_ig_cache_ctx_t *cc)
{
    ngx_uint_t   i;
    const char  *argv[5];
    size_t       argvlen[5];

    if (!cc->wlease) {
        return;
    }

    cc->wlease = 0;

    for (i = 0; i < cc->nwkeys; i++) {
        argv[2] = "1";
        argvlen[2] = 1;
        argv[3] = (char *) cc->wkeys + (3 * i + 1) * NGX_HTTP_IG_CACHE_KEYLEN;
        argvlen[3] = NGX_HTTP_IG_CACHE_KEYLEN;
        argv[4] = (char *) cc->wtoken;
        argvlen[4] = sizeof(cc->wtoken);

        (void) ngx_http_ig_redis_eval(cc->wredis,
                                      &ngx_http_ig_cache_release_lua, 5,
                                      argv, argvlen, NULL, NULL);
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

    /* a write that ended without the purge after it */
    ngx_http_ig_cache_unlease(cc);
}
