
/*
 * Copyright (C) infergate authors
 *
 * Circuit breakers.  "infergate_breaker_zone NAME SIZE" holds one node
 * per key (an rbtree and an LRU queue in a slab pool, as limit_req does),
 * shared by all workers and kept across reloads.  "infergate_breaker"
 * puts a location behind one:
 *
 *   closed     requests pass; the header filter counts each admitted
 *              request's outcome in a bucketed sliding window (10
 *              buckets of window/10).  With at least min_requests in the
 *              window and a failure share >= failures, the key opens.
 *   open       requests fail fast in the precontent stage (after the
 *              cache lookup, before any backend or upstream work): 503
 *              problem+json "#circuit-open" with Retry-After = the time
 *              until half-open (the cache's filter answers with a stale
 *              entry instead when it holds one).  The open time doubles
 *              with each trip in a row, up to max_open, less up to 10%
 *              jitter.
 *   half_open  after the open time: half_open probe requests pass; the
 *              others fail fast (Retry-After: 1).  A failed probe opens
 *              the key again; half_open successful probes close it.
 *
 * A failure is what "on=" names: 5xx (any 500..599), timeout (504),
 * unavailable (502, 503).  4xx never count; the breaker's own 503 does
 * not either.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_breaker.h"
#include "ngx_http_infergate_grpc.h"
#include "ngx_http_infergate_metrics.h"


#define NGX_HTTP_IG_BRK_BUCKETS    10
#define NGX_HTTP_IG_BRK_KEY_MAX    256


typedef struct {
    u_char                      color;
    u_char                      state;
    u_short                     len;
    ngx_queue_t                 queue;
    ngx_msec_t                  last;        /* last use, for eviction     */
    ngx_msec_t                  until;       /* open: half-open from then  */
    uint32_t                    gen;         /* bumped on each transition  */
    uint32_t                    trips;       /* trips in a row             */
    uint32_t                    probes;      /* half-open: admitted        */
    uint32_t                    probe_ok;    /* half-open: succeeded       */
    uint32_t                    epoch[NGX_HTTP_IG_BRK_BUCKETS];
    uint32_t                    total[NGX_HTTP_IG_BRK_BUCKETS];
    uint32_t                    fail[NGX_HTTP_IG_BRK_BUCKETS];
    u_char                      data[1];
} ngx_http_ig_brk_node_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 queue;
} ngx_http_ig_brk_shctx_t;


typedef struct {
    ngx_http_ig_brk_shctx_t    *sh;
    ngx_slab_pool_t            *shpool;
} ngx_http_ig_brk_zone_t;


typedef struct {
    ngx_shm_zone_t             *shm_zone;
    ngx_http_complex_value_t   *key;         /* NULL: model, or location  */
    ngx_uint_t                  failures;    /* percent                    */
    ngx_uint_t                  min_requests;
    ngx_msec_t                  window;
    ngx_msec_t                  open;
    ngx_msec_t                  max_open;
    ngx_uint_t                  half_open;
    ngx_uint_t                  on;          /* NGX_HTTP_IG_BRK_ON_*       */
} ngx_http_ig_brk_conf_t;


typedef struct {
    ngx_http_ig_brk_conf_t     *breaker;     /* NULL: off                  */
    unsigned                    set:1;
} ngx_http_ig_brk_loc_conf_t;


typedef struct {
    ngx_http_ig_brk_conf_t     *conf;
    ngx_str_t                   key;         /* request memory             */
    uint32_t                    hash;
    uint32_t                    gen;         /* the node's, when admitted  */
    ngx_uint_t                  seen;        /* NGX_HTTP_IG_BRK_*          */
    unsigned                    admitted:1;
    unsigned                    probe:1;
    unsigned                    refused:1;   /* our own 503                */
    unsigned                    reported:1;
} ngx_http_ig_brk_ctx_t;


static ngx_uint_t ngx_http_ig_brk_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_brk_stage(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static ngx_http_ig_brk_node_t *ngx_http_ig_brk_find(
    ngx_http_ig_brk_zone_t *z, ngx_str_t *key, uint32_t hash);
static ngx_http_ig_brk_node_t *ngx_http_ig_brk_lookup(
    ngx_http_ig_brk_zone_t *z, ngx_str_t *key, uint32_t hash,
    ngx_uint_t create);
static void ngx_http_ig_brk_trip(ngx_http_ig_brk_conf_t *bcf,
    ngx_http_ig_brk_node_t *n);
static void ngx_http_ig_brk_set(ngx_http_ig_brk_node_t *n, ngx_uint_t state);
static void ngx_http_ig_brk_report(ngx_http_request_t *r,
    ngx_http_ig_brk_ctx_t *bc, ngx_uint_t failed);
static void ngx_http_ig_brk_cleanup(void *data);
static ngx_int_t ngx_http_ig_brk_header_filter(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ig_brk_grpc_status(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_brk_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static char *ngx_http_ig_brk_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ig_brk_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ig_brk_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void *ngx_http_ig_brk_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_brk_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_brk_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_brk_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_ig_brk_commands[] = {

    { ngx_string("infergate_breaker_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_ig_brk_zone,
      0,
      0,
      NULL },

    { ngx_string("infergate_breaker"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ig_brk_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_breaker_module_ctx = {
    ngx_http_ig_brk_preconfiguration,      /* preconfiguration */
    ngx_http_ig_brk_init,                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_brk_create_loc_conf,       /* create location configuration */
    ngx_http_ig_brk_merge_loc_conf         /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_breaker_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_breaker_module_ctx, /* module context */
    ngx_http_ig_brk_commands,              /* module directives */
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


static ngx_http_variable_t  ngx_http_ig_brk_vars[] = {

    { ngx_string("infergate_breaker"), NULL,
      ngx_http_ig_brk_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_ig_brk_states[] = {
    ngx_string("closed"),
    ngx_string("open"),
    ngx_string("half_open")
};


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* after the cache lookup (a hit never counts), before the content */

const ngx_http_ig_stage_t  ngx_http_ig_breaker_stage = {
    ngx_string("breaker"),
    ngx_http_ig_brk_on,
    ngx_http_ig_brk_stage
};


/*
 * An infergate_infer location's GET and HEAD routes (health, ready,
 * metadata, statistics) and its gRPC calls other than ModelInfer do no
 * backend work: the breaker neither counts nor refuses them, and they
 * take no half-open probe.  Readiness asks
 * ngx_http_ig_breaker_open() instead.
 */

static ngx_uint_t
ngx_http_ig_brk_on(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_brk_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_breaker_module);

    if (blcf->breaker == NULL) {
        return 0;
    }

    if (!ngx_http_ig_infer_on(r)) {
        return 1;
    }

    /* gRPC: every RPC is a POST; only ModelInfer does backend work */

    if (ngx_http_ig_grpc_request(r)) {
        return ngx_http_ig_grpc_cacheable(r);
    }

    return !(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD));
}


ngx_uint_t
ngx_http_ig_breaker_open(ngx_http_request_t *r, ngx_str_t *model)
{
    uint32_t                     hash;
    ngx_str_t                    key;
    ngx_uint_t                   open;
    ngx_http_ig_brk_conf_t      *bcf;
    ngx_http_ig_brk_node_t      *n;
    ngx_http_ig_brk_zone_t      *z;
    ngx_http_ig_brk_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_breaker_module);
    bcf = blcf->breaker;

    if (bcf == NULL) {
        return 0;
    }

    if (bcf->key) {
        if (ngx_http_complex_value(r, bcf->key, &key) != NGX_OK) {
            return 0;
        }

    } else {
        key = *model;
    }

    if (key.len > NGX_HTTP_IG_BRK_KEY_MAX) {
        key.len = NGX_HTTP_IG_BRK_KEY_MAX;
    }

    hash = ngx_crc32_short(key.data, key.len);
    z = bcf->shm_zone->data;

    ngx_shmtx_lock(&z->shpool->mutex);

    n = ngx_http_ig_brk_find(z, &key, hash);

    /* an open key past its open time is half-open for the next request */

    open = (n != NULL && n->state == NGX_HTTP_IG_BRK_OPEN
            && (ngx_msec_int_t) (ngx_current_msec - n->until) < 0);

    ngx_shmtx_unlock(&z->shpool->mutex);

    return open;
}


static ngx_int_t
ngx_http_ig_brk_stage(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    u_char                      *p;
    ngx_msec_t                   now, left;
    ngx_uint_t                   refuse;
    ngx_pool_cleanup_t          *cln;
    ngx_http_ig_brk_ctx_t       *bc;
    ngx_http_ig_brk_conf_t      *bcf;
    ngx_http_ig_brk_node_t      *n;
    ngx_http_ig_brk_zone_t      *z;
    ngx_http_core_loc_conf_t    *clcf;
    ngx_http_ig_brk_loc_conf_t  *blcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_breaker_module);
    bcf = blcf->breaker;

    bc = ngx_http_get_module_ctx(r, ngx_http_infergate_breaker_module);

    if (bc && bc->conf == bcf) {
        /* this location's breaker already decided (re-entered) */
        return NGX_DECLINED;
    }

    bc = ngx_pcalloc(r->pool, sizeof(ngx_http_ig_brk_ctx_t));
    if (bc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    bc->conf = bcf;

    if (bcf->key) {
        if (ngx_http_complex_value(r, bcf->key, &bc->key) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        if (ngx_http_ig_model(r, ctx, lcf) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        bc->key = ctx->model;

        if (bc->key.len == 0) {
            clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
            bc->key = clcf->name;
        }
    }

    if (bc->key.len > NGX_HTTP_IG_BRK_KEY_MAX) {
        bc->key.len = NGX_HTTP_IG_BRK_KEY_MAX;
    }

    bc->hash = ngx_crc32_short(bc->key.data, bc->key.len);

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_ig_brk_cleanup;
    cln->data = bc;

    ngx_http_set_ctx(r, bc, ngx_http_infergate_breaker_module);

    z = bcf->shm_zone->data;
    now = ngx_current_msec;
    refuse = 0;
    left = 0;

    ngx_shmtx_lock(&z->shpool->mutex);

    n = ngx_http_ig_brk_lookup(z, &bc->key, bc->hash, 1);

    if (n == NULL) {
        /* no room even after eviction: the breaker does not apply */
        ngx_shmtx_unlock(&z->shpool->mutex);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "infergate_breaker: zone \"%V\" is full",
                      &bcf->shm_zone->shm.name);
        return NGX_DECLINED;
    }

    n->last = now;

    if (n->state == NGX_HTTP_IG_BRK_OPEN
        && (ngx_msec_int_t) (now - n->until) >= 0)
    {
        ngx_http_ig_brk_set(n, NGX_HTTP_IG_BRK_HALF_OPEN);
    }

    bc->seen = n->state;

    switch (n->state) {

    case NGX_HTTP_IG_BRK_OPEN:
        refuse = 1;
        left = n->until - now;
        break;

    case NGX_HTTP_IG_BRK_HALF_OPEN:
        if (n->probes < bcf->half_open) {
            n->probes++;
            bc->probe = 1;
            bc->admitted = 1;
            bc->gen = n->gen;

        } else {
            refuse = 1;
            left = 1000;
        }

        break;

    default: /* closed */
        bc->admitted = 1;
        bc->gen = n->gen;
        break;
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    if (!refuse) {
        return NGX_DECLINED;
    }

    bc->refused = 1;
    ngx_http_ig_metrics_add(IG_MC_BREAKER_FAST_FAIL, 1);

    ngx_str_set(&ctx->action, "circuit_open");

    /* RFC 9110 delta-seconds, rounded up, at least 1 */

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ig_add_header(r, "Retry-After", p,
                               ngx_sprintf(p, "%M",
                                           ngx_max((left + 999) / 1000,
                                                   (ngx_msec_t) 1))
                               - p)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ig_problem_cstr(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    NGX_HTTP_IG_PROBLEM_BASE "circuit-open",
                                    "Service Unavailable",
                                    "the circuit breaker is open: requests "
                                    "fail fast until the backend recovers");
}


/* the key's node or NULL, under the zone's lock; changes nothing */

static ngx_http_ig_brk_node_t *
ngx_http_ig_brk_find(ngx_http_ig_brk_zone_t *z, ngx_str_t *key,
    uint32_t hash)
{
    ngx_int_t                rc;
    ngx_rbtree_node_t       *node, *sentinel;
    ngx_http_ig_brk_node_t  *n;

    node = z->sh->rbtree.root;
    sentinel = z->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        n = (ngx_http_ig_brk_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, n->data, key->len, (size_t) n->len);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static ngx_http_ig_brk_node_t *
ngx_http_ig_brk_lookup(ngx_http_ig_brk_zone_t *z, ngx_str_t *key,
    uint32_t hash, ngx_uint_t create)
{
    size_t                   size;
    ngx_uint_t               tries;
    ngx_queue_t             *q;
    ngx_rbtree_node_t       *node;
    ngx_http_ig_brk_node_t  *n;

    n = ngx_http_ig_brk_find(z, key, hash);

    if (n) {
        ngx_queue_remove(&n->queue);
        ngx_queue_insert_head(&z->sh->queue, &n->queue);
        return n;
    }

    if (!create) {
        return NULL;
    }

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_ig_brk_node_t, data)
           + key->len;

    for (tries = 0; /* void */; tries++) {

        node = ngx_slab_alloc_locked(z->shpool, size);
        if (node) {
            break;
        }

        /* evict the least recently used closed key */

        if (tries == 4 || ngx_queue_empty(&z->sh->queue)) {
            return NULL;
        }

        q = ngx_queue_last(&z->sh->queue);
        n = ngx_queue_data(q, ngx_http_ig_brk_node_t, queue);

        if (n->state != NGX_HTTP_IG_BRK_CLOSED) {
            return NULL;
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) n - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&z->sh->rbtree, node);
        ngx_slab_free_locked(z->shpool, node);
    }

    node->key = hash;
    n = (ngx_http_ig_brk_node_t *) &node->color;

    ngx_memzero(&n->state, offsetof(ngx_http_ig_brk_node_t, data)
                           - offsetof(ngx_http_ig_brk_node_t, state));
    n->state = NGX_HTTP_IG_BRK_CLOSED;
    n->len = (u_short) key->len;
    ngx_memcpy(n->data, key->data, key->len);

    ngx_rbtree_insert(&z->sh->rbtree, node);
    ngx_queue_insert_head(&z->sh->queue, &n->queue);

    return n;
}


/* a transition: the window and the probes start again */

static void
ngx_http_ig_brk_set(ngx_http_ig_brk_node_t *n, ngx_uint_t state)
{
    ngx_http_ig_metric_e  m;

    if (n->state == NGX_HTTP_IG_BRK_OPEN) {
        ngx_http_ig_metrics_gauge_add(IG_MG_BREAKERS_OPEN, -1);
    }

    if (state == NGX_HTTP_IG_BRK_OPEN) {
        ngx_http_ig_metrics_gauge_add(IG_MG_BREAKERS_OPEN, 1);
        m = IG_MC_BREAKER_TO_OPEN;

    } else if (state == NGX_HTTP_IG_BRK_HALF_OPEN) {
        m = IG_MC_BREAKER_TO_HALF_OPEN;

    } else {
        m = IG_MC_BREAKER_TO_CLOSED;
    }

    ngx_http_ig_metrics_add(m, 1);

    n->state = (u_char) state;
    n->gen++;
    n->probes = 0;
    n->probe_ok = 0;
    ngx_memzero(n->epoch, sizeof(n->epoch));
    ngx_memzero(n->total, sizeof(n->total));
    ngx_memzero(n->fail, sizeof(n->fail));
}


/* open: base << (trips - 1), at most max_open, less up to 10% jitter */

static void
ngx_http_ig_brk_trip(ngx_http_ig_brk_conf_t *bcf, ngx_http_ig_brk_node_t *n)
{
    ngx_msec_t  t;
    ngx_uint_t  i;

    if (n->trips < 32) {
        n->trips++;
    }

    t = bcf->open;

    for (i = 1; i < n->trips && t < bcf->max_open; i++) {
        t *= 2;
    }

    t = ngx_min(t, bcf->max_open);
    t -= t * (ngx_msec_t) (ngx_random() % 11) / 100;

    ngx_http_ig_brk_set(n, NGX_HTTP_IG_BRK_OPEN);
    n->until = ngx_current_msec + t;
}


static void
ngx_http_ig_brk_report(ngx_http_request_t *r, ngx_http_ig_brk_ctx_t *bc,
    ngx_uint_t failed)
{
    uint32_t                 epoch, total, fails;
    ngx_msec_t               now, width;
    ngx_uint_t               i, slot;
    ngx_http_ig_brk_conf_t  *bcf;
    ngx_http_ig_brk_node_t  *n;
    ngx_http_ig_brk_zone_t  *z;

    bc->reported = 1;
    bcf = bc->conf;
    z = bcf->shm_zone->data;
    now = ngx_current_msec;

    ngx_shmtx_lock(&z->shpool->mutex);

    n = ngx_http_ig_brk_lookup(z, &bc->key, bc->hash, 0);

    if (n == NULL || n->gen != bc->gen) {
        /* evicted, or admitted before a transition: no longer counts */
        goto done;
    }

    if (bc->probe) {
        if (n->state != NGX_HTTP_IG_BRK_HALF_OPEN) {
            goto done;
        }

        if (failed) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "infergate_breaker: \"%V\" probe failed, open "
                          "again", &bc->key);
            ngx_http_ig_brk_trip(bcf, n);
            goto done;
        }

        if (++n->probe_ok >= bcf->half_open) {
            ngx_log_error(NGX_LOG_NOTICE, r->connection->log, 0,
                          "infergate_breaker: \"%V\" closed", &bc->key);
            ngx_http_ig_brk_set(n, NGX_HTTP_IG_BRK_CLOSED);
            n->trips = 0;
        }

        goto done;
    }

    if (n->state != NGX_HTTP_IG_BRK_CLOSED) {
        goto done;
    }

    width = bcf->window / NGX_HTTP_IG_BRK_BUCKETS;
    if (width == 0) {
        width = 1;
    }

    /* epoch 0 marks an unused bucket */
    epoch = (uint32_t) (now / width) + 1;
    slot = epoch % NGX_HTTP_IG_BRK_BUCKETS;

    if (n->epoch[slot] != epoch) {
        n->epoch[slot] = epoch;
        n->total[slot] = 0;
        n->fail[slot] = 0;
    }

    n->total[slot]++;
    n->fail[slot] += failed ? 1 : 0;

    if (!failed) {
        goto done;
    }

    total = 0;
    fails = 0;

    for (i = 0; i < NGX_HTTP_IG_BRK_BUCKETS; i++) {
        if (n->epoch[i] && epoch - n->epoch[i] < NGX_HTTP_IG_BRK_BUCKETS) {
            total += n->total[i];
            fails += n->fail[i];
        }
    }

    if (total >= bcf->min_requests
        && (ngx_uint_t) fails * 100 >= bcf->failures * total)
    {
        ngx_http_ig_brk_trip(bcf, n);

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "infergate_breaker: \"%V\" open for %Mms "
                      "(%uD of %uD failed)", &bc->key, n->until - now,
                      fails, total);
    }

done:

    ngx_shmtx_unlock(&z->shpool->mutex);
}


/* a probe that never produced a response gives its place back */

static void
ngx_http_ig_brk_cleanup(void *data)
{
    ngx_http_ig_brk_ctx_t  *bc = data;

    ngx_http_ig_brk_node_t  *n;
    ngx_http_ig_brk_zone_t  *z;

    if (!bc->probe || bc->reported) {
        return;
    }

    bc->reported = 1;
    z = bc->conf->shm_zone->data;

    ngx_shmtx_lock(&z->shpool->mutex);

    n = ngx_http_ig_brk_lookup(z, &bc->key, bc->hash, 0);

    if (n && n->gen == bc->gen && n->probes) {
        n->probes--;
    }

    ngx_shmtx_unlock(&z->shpool->mutex);
}


/*
 * Runs before the cache's header filter (which may answer a failure with
 * a stale entry): the status seen here is what the content produced.
 */

static ngx_int_t
ngx_http_ig_brk_header_filter(ngx_http_request_t *r)
{
    ngx_uint_t              status, failed, on;
    ngx_http_ig_brk_ctx_t  *bc;

    if (r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    bc = ngx_http_get_module_ctx(r, ngx_http_infergate_breaker_module);

    if (bc == NULL || !bc->admitted || bc->reported) {
        return ngx_http_next_header_filter(r);
    }

    status = r->headers_out.status;

    if (status == NGX_HTTP_OK) {
        status = ngx_http_ig_brk_grpc_status(r);
    }

    on = bc->conf->on;

    failed = 0;

    if (status >= 500 && status <= 599 && (on & NGX_HTTP_IG_BRK_ON_5XX)) {
        failed = 1;

    } else if (status == NGX_HTTP_GATEWAY_TIME_OUT
               && (on & NGX_HTTP_IG_BRK_ON_TIMEOUT))
    {
        failed = 1;

    } else if ((status == NGX_HTTP_BAD_GATEWAY
                || status == NGX_HTTP_SERVICE_UNAVAILABLE)
               && (on & NGX_HTTP_IG_BRK_ON_UNAVAIL))
    {
        failed = 1;
    }

    ngx_http_ig_brk_report(r, bc, failed);

    return ngx_http_next_header_filter(r);
}


/*
 * A gRPC answer is HTTP 200 whatever it says; a failed call is
 * Trailers-Only, its grpc-status among the headers.  The HTTP status the
 * code means (doc/http-grpc-status-mapping.md, the other way round):
 * UNAVAILABLE 503, DEADLINE_EXCEEDED 504, UNKNOWN, INTERNAL and DATA_LOSS
 * 500; any other code is the caller's (a 4xx) and 200 stays 200.
 */

static ngx_uint_t
ngx_http_ig_brk_grpc_status(ngx_http_request_t *r)
{
    ngx_int_t         code;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_HTTP_OK;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0
            || h[i].key.len != sizeof("grpc-status") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "grpc-status",
                               sizeof("grpc-status") - 1) != 0)
        {
            continue;
        }

        code = ngx_atoi(h[i].value.data, h[i].value.len);

        switch (code) {
        case 14:                                  /* UNAVAILABLE       */
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        case 4:                                   /* DEADLINE_EXCEEDED */
            return NGX_HTTP_GATEWAY_TIME_OUT;
        case 2:                                   /* UNKNOWN           */
        case 13:                                  /* INTERNAL          */
        case 15:                                  /* DATA_LOSS         */
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        case 0:
            return NGX_HTTP_OK;
        default:
            return NGX_HTTP_BAD_REQUEST;
        }
    }
}


ngx_str_t *
ngx_http_ig_breaker_state(ngx_http_request_t *r)
{
    ngx_http_ig_brk_ctx_t  *bc;

    bc = ngx_http_get_module_ctx(r->main, ngx_http_infergate_breaker_module);

    if (bc == NULL) {
        return NULL;
    }

    return &ngx_http_ig_brk_states[bc->seen];
}


static ngx_int_t
ngx_http_ig_brk_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t  *s;

    s = ngx_http_ig_breaker_state(r);

    if (s == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_ig_set_value(v, s);

    return NGX_OK;
}


/*
 * For infergate_metrics: infergate_breaker_state{zone,key} per key of
 * every breaker zone (0 closed, 1 open, 2 half_open), in one buffer of
 * the request's pool.  Key bytes other than printable ASCII, '"' and
 * '\\' are written as '_' (a key may come from the request).
 */

ngx_chain_t *
ngx_http_ig_breaker_metrics(ngx_http_request_t *r)
{
    u_char                  *p, *k, *kl;
    size_t                   size;
    ngx_buf_t               *b;
    ngx_uint_t               i, pass;
    ngx_queue_t             *q;
    ngx_chain_t             *cl;
    ngx_list_part_t         *part;
    ngx_shm_zone_t          *shm_zone;
    ngx_http_ig_brk_node_t  *n;
    ngx_http_ig_brk_zone_t  *z;

    static u_char  head[] =
        "# HELP infergate_breaker_state Circuit breaker state per key "
        "(0 closed, 1 open, 2 half_open).\n"
        "# TYPE infergate_breaker_state gauge\n";

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->next = NULL;
    b = NULL;
    p = NULL;
    size = sizeof(head) - 1;

    /* the first pass measures, the second writes */

    for (pass = 0; pass < 2; pass++) {

        if (pass == 1) {
            b = ngx_create_temp_buf(r->pool, size);
            if (b == NULL) {
                return NULL;
            }

            p = ngx_cpymem(b->last, head, sizeof(head) - 1);
        }

        part = &((ngx_cycle_t *) ngx_cycle)->shared_memory.part;
        shm_zone = part->elts;

        for (i = 0; /* void */; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                shm_zone = part->elts;
                i = 0;
            }

            if (shm_zone[i].tag != &ngx_http_infergate_breaker_module
                || shm_zone[i].data == NULL)
            {
                continue;
            }

            z = shm_zone[i].data;

            if (z->sh == NULL) {
                continue;
            }

            ngx_shmtx_lock(&z->shpool->mutex);

            for (q = ngx_queue_head(&z->sh->queue);
                 q != ngx_queue_sentinel(&z->sh->queue);
                 q = ngx_queue_next(q))
            {
                n = ngx_queue_data(q, ngx_http_ig_brk_node_t, queue);

                if (pass == 0) {
                    size += sizeof("infergate_breaker_state{zone=\"\",key="
                                   "\"\"} 2\n") - 1
                            + shm_zone[i].shm.name.len + n->len;
                    continue;
                }

                if ((size_t) (b->end - p) < sizeof("infergate_breaker_state"
                                                   "{zone=\"\",key=\"\"} 2"
                                                   "\n") - 1
                                            + shm_zone[i].shm.name.len
                                            + n->len)
                {
                    /* keys added between the passes: left for next time */
                    break;
                }

                p = ngx_sprintf(p, "infergate_breaker_state{zone=\"%V\","
                                "key=\"", &shm_zone[i].shm.name);

                for (k = n->data, kl = n->data + n->len; k < kl; k++) {
                    *p++ = (*k < 0x20 || *k >= 0x7f || *k == '"'
                            || *k == '\\') ? '_' : *k;
                }

                p = ngx_sprintf(p, "\"} %ui\n", (ngx_uint_t) n->state);
            }

            ngx_shmtx_unlock(&z->shpool->mutex);
        }
    }

    b->last = p;
    cl->buf = b;

    return cl;
}


/* configuration */

static ngx_int_t
ngx_http_ig_brk_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ig_brk_zone_t  *oz = data;

    size_t                   len;
    ngx_http_ig_brk_zone_t  *z;

    z = shm_zone->data;

    if (oz) {
        /* a reload: the keys and their states carry over */
        z->sh = oz->sh;
        z->shpool = oz->shpool;
        return NGX_OK;
    }

    z->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        z->sh = z->shpool->data;
        return NGX_OK;
    }

    z->sh = ngx_slab_alloc(z->shpool, sizeof(ngx_http_ig_brk_shctx_t));
    if (z->sh == NULL) {
        return NGX_ERROR;
    }

    z->shpool->data = z->sh;

    ngx_rbtree_init(&z->sh->rbtree, &z->sh->sentinel,
                    ngx_rbtree_insert_value);
    ngx_queue_init(&z->sh->queue);

    len = sizeof(" in infergate_breaker_zone \"\"") + shm_zone->shm.name.len;

    z->shpool->log_ctx = ngx_slab_alloc(z->shpool, len);
    if (z->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(z->shpool->log_ctx, " in infergate_breaker_zone \"%V\"%Z",
                &shm_zone->shm.name);

    z->shpool->log_nomem = 0;

    return NGX_OK;
}


static char *
ngx_http_ig_brk_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ssize_t                  size;
    ngx_str_t               *value;
    ngx_shm_zone_t          *shm_zone;
    ngx_http_ig_brk_zone_t  *z;

    value = cf->args->elts;

    if (value[1].len == 0) {
        return "needs a zone name";
    }

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_breaker_zone: invalid size \"%V\" "
                           "(at least %uzk)", &value[2],
                           8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                     &ngx_http_infergate_breaker_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_breaker_zone \"%V\" is duplicate",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    z = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_brk_zone_t));
    if (z == NULL) {
        return NGX_CONF_ERROR;
    }

    shm_zone->init = ngx_http_ig_brk_init_zone;
    shm_zone->data = z;

    return NGX_CONF_OK;
}


static char *
ngx_http_ig_brk_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_brk_loc_conf_t *blcf = conf;

    u_char                            *p, *last;
    ngx_int_t                          n;
    ngx_str_t                         *value, s, w;
    ngx_uint_t                         i;
    ngx_msec_t                        *ms;
    ngx_http_ig_brk_conf_t            *bcf;
    ngx_http_compile_complex_value_t   ccv;

    if (blcf->set) {
        return "is duplicate";
    }

    blcf->set = 1;
    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        blcf->breaker = NULL;
        return NGX_CONF_OK;
    }

    bcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_brk_conf_t));
    if (bcf == NULL) {
        return NGX_CONF_ERROR;
    }

    bcf->failures = 50;
    bcf->min_requests = 20;
    bcf->window = 10000;
    bcf->open = 5000;
    bcf->max_open = 60000;
    bcf->half_open = 5;
    bcf->on = NGX_HTTP_IG_BRK_ON_5XX | NGX_HTTP_IG_BRK_ON_TIMEOUT
              | NGX_HTTP_IG_BRK_ON_UNAVAIL;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 0) {
                goto invalid;
            }

            bcf->shm_zone = ngx_shared_memory_add(cf, &s, 0,
                                          &ngx_http_infergate_breaker_module);
            if (bcf->shm_zone == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0 && value[i].len > 4) {
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            bcf->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
            if (bcf->key == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = bcf->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "failures=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            if (s.len < 2 || s.data[s.len - 1] != '%') {
                goto invalid;
            }

            n = ngx_atoi(s.data, s.len - 1);
            if (n == NGX_ERROR || n < 1 || n > 100) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_breaker: \"%V\": failures "
                                   "must be between 1%% and 100%%",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            bcf->failures = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "min_requests=", 13) == 0) {
            n = ngx_atoi(value[i].data + 13, value[i].len - 13);
            if (n == NGX_ERROR || n < 1 || n > 1000000) {
                goto invalid;
            }

            bcf->min_requests = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "half_open=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);
            if (n == NGX_ERROR || n < 1 || n > 1000) {
                goto invalid;
            }

            bcf->half_open = n;
            continue;
        }

        ms = NULL;
        s.len = 0;

        if (ngx_strncmp(value[i].data, "window=", 7) == 0) {
            ms = &bcf->window;
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

        } else if (ngx_strncmp(value[i].data, "open=", 5) == 0) {
            ms = &bcf->open;
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

        } else if (ngx_strncmp(value[i].data, "max_open=", 9) == 0) {
            ms = &bcf->max_open;
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;
        }

        if (ms) {
            *ms = ngx_parse_time(&s, 0);
            if (*ms == (ngx_msec_t) NGX_ERROR || *ms == 0
                || *ms > 86400000)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "on=", 3) == 0) {
            /* on=5xx timeout unavailable: the words until the next k=v */
            bcf->on = 0;
            s.data = value[i].data + 3;
            s.len = value[i].len - 3;

            for ( ;; ) {
                p = s.data;
                last = s.data + s.len;

                /* also on=5xx,timeout */
                while (p < last) {
                    w.data = p;
                    while (p < last && *p != ',') {
                        p++;
                    }

                    w.len = p - w.data;
                    p++;

                    if (w.len == 3 && ngx_strncmp(w.data, "5xx", 3) == 0) {
                        bcf->on |= NGX_HTTP_IG_BRK_ON_5XX;

                    } else if (w.len == 7
                               && ngx_strncmp(w.data, "timeout", 7) == 0)
                    {
                        bcf->on |= NGX_HTTP_IG_BRK_ON_TIMEOUT;

                    } else if (w.len == 11
                               && ngx_strncmp(w.data, "unavailable", 11)
                                  == 0)
                    {
                        bcf->on |= NGX_HTTP_IG_BRK_ON_UNAVAIL;

                    } else {
                        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                           "infergate_breaker: on= takes "
                                           "5xx, timeout or unavailable, "
                                           "not \"%V\"", &w);
                        return NGX_CONF_ERROR;
                    }
                }

                if (i + 1 == cf->args->nelts
                    || ngx_strlchr(value[i + 1].data,
                                   value[i + 1].data + value[i + 1].len, '='))
                {
                    break;
                }

                s = value[++i];
            }

            if (bcf->on == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    if (bcf->shm_zone == NULL) {
        return "needs zone=NAME";
    }

    if (bcf->max_open < bcf->open) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_breaker: max_open is shorter than "
                           "open");
        return NGX_CONF_ERROR;
    }

    blcf->breaker = bcf;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_breaker: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static void *
ngx_http_ig_brk_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_brk_loc_conf_t));
}


static char *
ngx_http_ig_brk_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_brk_loc_conf_t *prev = parent;
    ngx_http_ig_brk_loc_conf_t *conf = child;

    if (!conf->set) {
        conf->breaker = prev->breaker;
        conf->set = prev->set;
    }

    if (conf->breaker && conf->breaker->shm_zone->data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_breaker: unknown zone \"%V\" (declare "
                           "it with infergate_breaker_zone)",
                           &conf->breaker->shm_zone->shm.name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ig_brk_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_ig_add_variables(cf, ngx_http_ig_brk_vars);
}


static ngx_int_t
ngx_http_ig_brk_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_ig_brk_header_filter;

    return NGX_OK;
}
