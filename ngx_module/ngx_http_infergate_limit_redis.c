
/*
 * Copyright (C) infergate authors
 *
 * Cluster-wide limits: infergate_limit ... redis=NAME runs the GCRA of
 * lib/ig_gcra.c in one Lua script against Redis, with the time taken
 * from Redis TIME, so every gateway instance sharing the server shares
 * the limit.  The script returns the stored TAT before the decision and
 * Redis's clock; ig_gcra_check() on the same inputs gives the decision
 * (the same arithmetic) and the numbers for the RateLimit headers.
 * Redis unreachable or late: fail=open admits ($infergate_limit_status
 * FAIL_OPEN), fail=closed answers 503; no request waits longer than the
 * server's timeout.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/evp.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"


#define NGX_HTTP_IG_LRK_LEN  (4 + 64)      /* "igr:" hex(sha256(zone, key)) */


typedef struct {
    ngx_http_ig_limit_redis_t  *owner;
    ngx_uint_t                  index;       /* into ctx->limits           */
    u_char                      key[NGX_HTTP_IG_LRK_LEN];
    ngx_http_ig_redis_cmd_t    *cmd;
    unsigned                    ok:1;
    uint64_t                    tat_us;
    uint64_t                    now_us;
} ngx_http_ig_limit_item_t;


struct ngx_http_ig_limit_redis_s {
    ngx_http_request_t         *request;
    ngx_http_ig_ctx_t          *ctx;
    ngx_uint_t                  n;
    ngx_uint_t                  pending;
    ngx_uint_t                  dry;
    ngx_uint_t                  sent;
    ngx_event_t                 wake;
    ngx_http_ig_limit_item_t    items[NGX_HTTP_IG_MAX_LIMITS];
};


static void ngx_http_ig_limit_redis_done(redisReply *reply, void *data);
static void ngx_http_ig_limit_redis_wake(ngx_event_t *ev);
static void ngx_http_ig_limit_redis_cleanup(void *data);


/*
 * KEYS: the TAT key; ARGV: interval us, tolerance us.  Returns
 * {allowed, old TAT, now} as strings (microseconds do not fit Redis's
 * Lua-to-integer conversion without loss above 2^53 in general; here
 * they are below, but strings keep it exact).
 */
static ngx_http_ig_redis_script_t  ngx_http_ig_limit_lua;
static const char  ngx_http_ig_limit_text[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local interval = tonumber(ARGV[1])\n"
    "local tol = tonumber(ARGV[2])\n"
    "local tat0 = math.max(tat, now)\n"
    "if tat0 - now <= tol then\n"
    "  local new = tat0 + interval\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX',\n"
    "             math.ceil((new - now) / 1000) + 1000)\n"
    "  return {1, string.format('%.0f', tat), string.format('%.0f', now)}\n"
    "end\n"
    "return {0, string.format('%.0f', tat), string.format('%.0f', now)}\n";


/* from the limit module's postconfiguration, never from a directive */

void
ngx_http_ig_limit_redis_init(void)
{
    ngx_http_ig_redis_script_init(&ngx_http_ig_limit_lua,
                                  ngx_http_ig_limit_text);
}


ngx_http_ig_redis_t *
ngx_http_ig_limit_redis_conf(ngx_conf_t *cf, ngx_str_t *name)
{
    return ngx_http_ig_redis_add(cf, name);
}


ngx_int_t
ngx_http_ig_limit_redis_add(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_uint_t index, ngx_str_t *key)
{
    u_char                      md[32];
    EVP_MD_CTX                 *mdc;
    ngx_pool_cleanup_t         *cln;
    ngx_http_ig_limit_item_t   *it;
    ngx_http_ig_limit_redis_t  *lr;
    ngx_http_ig_limit_state_t  *st;

    lr = ctx->limit_redis;

    if (lr == NULL) {
        lr = ngx_pcalloc(r->pool, sizeof(ngx_http_ig_limit_redis_t));
        if (lr == NULL) {
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_ig_limit_redis_cleanup;
        cln->data = lr;

        lr->request = r;
        lr->ctx = ctx;
        lr->wake.handler = ngx_http_ig_limit_redis_wake;
        lr->wake.data = lr;
        lr->wake.log = r->connection->log;

        ctx->limit_redis = lr;
    }

    st = &ctx->limits[index];
    it = &lr->items[lr->n++];
    it->owner = lr;
    it->index = index;
    it->ok = 0;

    /* no raw request byte reaches Redis: zone and key are hashed */

    mdc = EVP_MD_CTX_new();
    if (mdc == NULL
        || EVP_DigestInit_ex(mdc, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(mdc, st->conf->name.data, st->conf->name.len)
           != 1
        || EVP_DigestUpdate(mdc, "\0", 1) != 1
        || EVP_DigestUpdate(mdc, key->data, key->len) != 1
        || EVP_DigestFinal_ex(mdc, md, NULL) != 1)
    {
        EVP_MD_CTX_free(mdc);
        return NGX_ERROR;
    }

    EVP_MD_CTX_free(mdc);

    ngx_memcpy(it->key, "igr:", 4);
    ngx_hex_dump(it->key + 4, md, 32);

    return NGX_OK;
}


/* A new location's limits: forget the items of an earlier one. */

void
ngx_http_ig_limit_redis_reset(ngx_http_ig_ctx_t *ctx)
{
    ngx_http_ig_limit_redis_t  *lr = ctx->limit_redis;

    if (lr && lr->pending == 0) {
        lr->n = 0;
    }
}


ngx_int_t
ngx_http_ig_limit_redis_send(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_uint_t dry)
{
    u_char                      iv[NGX_INT64_LEN], tol[NGX_INT64_LEN];
    size_t                      argvlen[6];
    ngx_uint_t                  i;
    const char                 *argv[6];
    ngx_http_ig_limit_item_t   *it;
    ngx_http_ig_limit_redis_t  *lr = ctx->limit_redis;
    ngx_http_ig_limit_state_t  *st;

    lr->dry = dry;
    lr->sent = 1;
    ctx->limit_wait = 1;

    for (i = 0; i < lr->n; i++) {
        it = &lr->items[i];
        st = &ctx->limits[it->index];

        argv[2] = "1";
        argvlen[2] = 1;
        argv[3] = (char *) it->key;
        argvlen[3] = NGX_HTTP_IG_LRK_LEN;
        argv[4] = (char *) iv;
        argvlen[4] = ngx_sprintf(iv, "%uL", st->policy.interval_us) - iv;
        argv[5] = (char *) tol;
        argvlen[5] = ngx_sprintf(tol, "%uL", st->policy.tolerance_us) - tol;

        it->cmd = ngx_http_ig_redis_eval(st->conf->redis,
                                         &ngx_http_ig_limit_lua, 6, argv,
                                         argvlen, ngx_http_ig_limit_redis_done,
                                         it);
        if (it->cmd) {
            lr->pending++;
        }
    }

    if (lr->pending) {
        return NGX_AGAIN;
    }

    /* nothing could be sent: decide now */
    return ngx_http_ig_limit_redis_finish(r, ctx);
}


static void
ngx_http_ig_limit_redis_done(redisReply *reply, void *data)
{
    ngx_http_ig_limit_item_t  *it = data;

    redisReply                 *e;
    ngx_http_ig_limit_redis_t  *lr = it->owner;

    it->cmd = NULL;
    lr->pending--;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && reply->element[1]->type == REDIS_REPLY_STRING
        && reply->element[2]->type == REDIS_REPLY_STRING)
    {
        e = reply->element[1];
        it->tat_us = (uint64_t) ngx_atoof((u_char *) e->str, e->len);
        e = reply->element[2];
        it->now_us = (uint64_t) ngx_atoof((u_char *) e->str, e->len);

        it->ok = ((off_t) it->tat_us != NGX_ERROR
                  && (off_t) it->now_us != NGX_ERROR);

    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_http_ig_redis_warn(lr->ctx->limits[it->index].conf->redis,
                               lr->request->connection->log, reply->str);
    }

    if (lr->pending == 0) {
        /* out of hiredis's stack: the request runs from the posted queue */
        ngx_post_event(&lr->wake, &ngx_posted_events);
    }
}


static void
ngx_http_ig_limit_redis_wake(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_request_t         *r;
    ngx_http_ig_limit_redis_t  *lr = ev->data;

    r = lr->request;
    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


ngx_int_t
ngx_http_ig_limit_redis_finish(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    uint64_t                    retry;
    ngx_uint_t                  i, j, refused, dry, failed, closed;
    ngx_http_ig_limit_item_t   *it;
    ngx_http_ig_limit_redis_t  *lr = ctx->limit_redis;
    ngx_http_ig_limit_state_t  *st;

    if (lr->pending) {
        /* woken early */
        return NGX_AGAIN;
    }

    ctx->limit_wait = 0;

    refused = 0;
    failed = 0;
    closed = 0;
    dry = lr->dry;
    retry = 0;

    for (i = 0; i < lr->n; i++) {
        it = &lr->items[i];
        st = &ctx->limits[it->index];

        if (!it->ok) {
            failed = 1;
            closed |= st->conf->fail_closed;
            st->conf = NULL;        /* no headers from a limit not known */
            continue;
        }

        ig_gcra_check(&st->policy, it->now_us, it->tat_us, &st->result);

        if (!st->result.allowed) {
            if (st->conf->dry_run) {
                dry = 1;

            } else {
                refused = 1;
                retry = ngx_max(retry, st->result.retry_after_us);
            }

            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "infergate: limit \"%V\" exceeded (redis)%s",
                          &st->conf->name,
                          st->conf->dry_run ? " (dry run)" : "");
        }
    }

    if (!refused && !(failed && closed)) {

        /* charged: a redirect to the same limit and key does not count */

        for (i = 0; i < lr->n; i++) {
            it = &lr->items[i];

            if (it->ok) {
                st = &ctx->limits[it->index];
                st->charged = st->result.allowed;
            }
        }
    }

    /* drop the states of limits Redis could not decide */

    for (i = 0, j = 0; i < ctx->nlimits; i++) {
        if (ctx->limits[i].conf) {
            ctx->limits[j++] = ctx->limits[i];
        }
    }

    ctx->nlimits = j;

    /* decided once: an internal redirect does not count again */
    lr->n = 0;

    if (failed && closed) {
        ctx->limit_status = NGX_HTTP_IG_LIMIT_REJECTED;
        ngx_str_set(&ctx->action, "rate_limit_unavailable");

        if (ngx_http_ig_add_header(r, "Retry-After", (u_char *) "1", 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_ig_problem_cstr(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        NGX_HTTP_IG_PROBLEM_BASE
                                        "limit-unavailable",
                                        "Service Unavailable",
                                        "the rate limit cannot be checked "
                                        "now; retry in 1 s");
    }

    if (refused) {
        ctx->limit_status = NGX_HTTP_IG_LIMIT_REJECTED;
        ngx_str_set(&ctx->action, "rate_limited");
        return ngx_http_ig_limit_refuse(r, ctx, retry);
    }

    ctx->limit_status = failed ? NGX_HTTP_IG_LIMIT_FAIL_OPEN
                        : dry ? NGX_HTTP_IG_LIMIT_DRY_RUN
                        : NGX_HTTP_IG_LIMIT_PASSED;

    return NGX_DECLINED;
}


static void
ngx_http_ig_limit_redis_cleanup(void *data)
{
    ngx_http_ig_limit_redis_t  *lr = data;

    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_IG_MAX_LIMITS; i++) {
        if (lr->items[i].cmd) {
            ngx_http_ig_redis_cancel(lr->items[i].cmd);
            lr->items[i].cmd = NULL;
        }
    }

    if (lr->wake.posted) {
        ngx_delete_posted_event(&lr->wake);
    }
}
