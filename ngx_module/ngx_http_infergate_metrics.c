
/*
 * Copyright (C) infergate authors
 *
 * Prometheus metrics: counters, gauges and histograms in one shared zone
 * (so every worker's figures are summed), served in the text exposition
 * format by "infergate_metrics".  Tenant labels are bounded: the first
 * infergate_metrics_tenants tenants seen get their own label, later ones
 * are counted under tenant="other".
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_breaker.h"
#include "ngx_http_infergate_metrics.h"


#define IG_M_TENANT_LEN      64
#define IG_M_BUCKETS         13
#define IG_M_ZONE_NAME       "infergate_metrics"
#define IG_M_BACKENDS        8           /* backend areas in the zone   */
#define IG_M_BACKEND_NAME    64
#define IG_M_FRESH_MS        3000        /* up: figures younger than it */


static ngx_str_t  ngx_http_ig_m_actions[] = {
    ngx_string("request"),
    ngx_string("infer"),
    ngx_string("cache_hit"),
    ngx_string("unauthorized"),
    ngx_string("forbidden"),
    ngx_string("rate_limited"),
    ngx_string("schema_rejected"),
    ngx_string("unknown_id"),
    ngx_string("backend_unavailable"),
    ngx_string("circuit_open"),
    ngx_string("other")
};

#define IG_M_NACTIONS                                                        \
    (sizeof(ngx_http_ig_m_actions) / sizeof(ngx_str_t))

#define IG_M_ACTION_REQUEST          0
#define IG_M_ACTION_INFER            1
#define IG_M_ACTION_BACKEND_UNAVAILABLE  8
#define IG_M_ACTION_RATE_LIMITED     5
#define IG_M_ACTION_SCHEMA_REJECTED  6
#define IG_M_ACTION_UNKNOWN_ID       7
#define IG_M_ACTION_OTHER            (IG_M_NACTIONS - 1)


static ngx_uint_t  ngx_http_ig_m_statuses[] = {
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409,
    413, 415, 429, 499, 500, 502, 503, 504, 0 /* other */
};

#define IG_M_NSTATUSES                                                       \
    (sizeof(ngx_http_ig_m_statuses) / sizeof(ngx_uint_t))


typedef struct {
    const char                 *name;
    const char                 *help;
    const char                 *labels;      /* NULL or one label pair    */
} ngx_http_ig_m_desc_t;


static ngx_http_ig_m_desc_t  ngx_http_ig_m_counters[IG_MC_MAX] = {
    { "infergate_cache_requests_total", "Response cache lookups.",
      "result=\"hit\"" },
    { "infergate_cache_requests_total", NULL, "result=\"miss\"" },
    { "infergate_cache_requests_total", NULL, "result=\"bypass\"" },
    { "infergate_cache_requests_total", NULL, "result=\"stale\"" },
    { "infergate_cache_fills_total", "Responses stored in the cache.", NULL },
    { "infergate_cache_purges_total",
      "Cache purges after successful writes.", NULL },
    { "infergate_rate_limited_total", "Requests refused by a rate limit.",
      NULL },
    { "infergate_bloom_rejects_total",
      "Requests refused by the Bloom filter (unknown id).", NULL },
    { "infergate_schema_rejects_total",
      "Requests refused by schema validation.", NULL },
    { "infergate_redis_reconnects_total", "Redis reconnection attempts.",
      NULL },
    { "infergate_redis_errors_total",
      "Redis commands that failed or timed out.", NULL },
    { "infergate_redis_redirects_total",
      "Redis Cluster redirects followed.", "kind=\"moved\"" },
    { "infergate_redis_redirects_total", NULL, "kind=\"ask\"" },
    { "infergate_backend_requests_total", "Inference requests by outcome.",
      "result=\"ok\"" },
    { "infergate_backend_requests_total", NULL, "result=\"unavailable\"" },
    { "infergate_backend_requests_total", NULL, "result=\"timeout\"" },
    { "infergate_backend_requests_total", NULL, "result=\"shed\"" },
    { "infergate_backend_reconnects_total",
      "Reconnections to the backend's control socket.", NULL },
    { "infergate_backend_retries_total",
      "Requests moved to another pool member after theirs died.", NULL },
    { "infergate_audit_records_total", "Audit records written.", NULL },
    { "infergate_audit_bytes_total", "Audit bytes written.", NULL },
    { "infergate_audit_flush_errors_total", "Audit writes that failed.",
      NULL },
    { "infergate_audit_lost_records_total",
      "Audit records lost (disk errors, overload).", NULL },
    { "infergate_breaker_transitions_total",
      "Circuit breaker state changes, by the state entered.", "to=\"open\"" },
    { "infergate_breaker_transitions_total", NULL, "to=\"half_open\"" },
    { "infergate_breaker_transitions_total", NULL, "to=\"closed\"" },
    { "infergate_breaker_rejected_total",
      "Requests failed fast by an open circuit breaker.", NULL }
};


static ngx_http_ig_m_desc_t  ngx_http_ig_m_gauges[IG_MG_MAX] = {
    { "infergate_redis_connections",
      "Redis connections up, all workers.", NULL },
    { "infergate_backend_connected_workers",
      "Workers attached to the inference backend.", NULL },
    { "infergate_backend_inflight",
      "Requests in the backend ring, all workers.", NULL  },
    { "infergate_breakers_open",
      "Circuit breaker keys open now (all zones).", NULL }
};


typedef struct {
    const char                 *name;
    const char                 *help;
    double                      scale;       /* value / scale = unit      */
    uint64_t                    bounds[IG_M_BUCKETS];
} ngx_http_ig_m_hist_t;


static ngx_http_ig_m_hist_t  ngx_http_ig_m_hists[IG_MH_MAX] = {
    { "infergate_request_duration_seconds",
      "End-to-end request time in nginx.", 1e6,
      { 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
        500000, 1000000, 2500000, 5000000 } },
    { "infergate_backend_duration_seconds",
      "Backend round trip of inference requests.", 1e6,
      { 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
        100000, 250000, 1000000 } },
    { "infergate_backend_batch_size",
      "Rows in the batch an inference request ran in.", 1,
      { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096 } }
};


typedef struct {
    ngx_atomic_t                count;
    ngx_atomic_t                sum;
    ngx_atomic_t                buckets[IG_M_BUCKETS + 1];
} ngx_http_ig_m_hist_sh_t;


/* a backend's latest IG_CTL_STATS, as one of its workers got it */
typedef struct {
    u_char                      name[IG_M_BACKEND_NAME];
    size_t                      name_len;    /* 0: a free area            */
    uint64_t                    updated_ms;  /* wall clock; 0: never      */
    size_t                      len;
    u_char                      msg[IG_CTL_STATS_MAX];
} ngx_http_ig_m_backend_sh_t;


typedef struct {
    ngx_uint_t                  ntenants;    /* named slots in use        */
    ngx_uint_t                  max_tenants;
    ngx_atomic_t                counters[IG_MC_MAX];
    ngx_atomic_t                gauges[IG_MG_MAX];
    ngx_http_ig_m_hist_sh_t     hists[IG_MH_MAX];
    u_char                     *names;       /* max_tenants × TENANT_LEN  */
    u_char                     *name_lens;
    ngx_atomic_t               *requests;    /* [slot][action][status]    */
    ngx_http_ig_m_backend_sh_t *backends;    /* IG_M_BACKENDS             */
} ngx_http_ig_m_sh_t;


/*
 * Tenant names and backend figures are guarded by the slab pool's mutex,
 * as nginx's own zones do: it lives in the zone, so the semaphore a
 * waiter sleeps on is the one the holder posts.  An ngx_shmtx_t in this
 * process-local struct gave each worker its own copy of the semaphore,
 * and a waiter that ran out of spins slept forever.
 */

/*
 * The metrics configuration and this worker's view of the zone, in the
 * main conf (mcf->zone) of the cycle it belongs to: created by the
 * first metrics directive, the zone added at postconfiguration when some
 * location serves metrics.  Never a static: a reload that fails after
 * parsing frees its configuration, and a worker respawned later must see
 * the cycle it runs, not the one that failed.
 */

typedef struct {
    ngx_http_ig_m_sh_t         *sh;          /* NULL: no zone            */
    ngx_slab_pool_t            *shpool;
    ngx_uint_t                  max_tenants; /* UNSET until the directive*/
    ngx_uint_t                  used;        /* some infergate_metrics;  */
    ngx_int_t                   cache_var;   /* $infergate_cache_status  */
} ngx_http_ig_m_zone_t;


static char *ngx_http_ig_metrics_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ig_metrics_tenants_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void *ngx_http_ig_metrics_create_main_conf(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_metrics_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_metrics_log(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_ig_metrics_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ig_metrics_tenant(ngx_http_ig_m_zone_t *z,
    ngx_http_ig_key_t *key);
static u_char *ngx_http_ig_metrics_label(u_char *p, u_char *s, size_t len);
static ngx_chain_t *ngx_http_ig_metrics_backends(ngx_http_request_t *r);


#define IG_M_DEFAULT_TENANTS  64


typedef struct {
    ngx_http_ig_m_zone_t       *zone;        /* created on first use       */
} ngx_http_ig_metrics_main_conf_t;


static ngx_command_t  ngx_http_ig_metrics_commands[] = {

    { ngx_string("infergate_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_ig_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_metrics_tenants"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ig_metrics_tenants_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_metrics_module_ctx = {
    NULL,                              /* preconfiguration */
    ngx_http_ig_metrics_init,          /* postconfiguration */

    ngx_http_ig_metrics_create_main_conf, /* create main configuration */
    NULL,                              /* init main configuration */

    NULL,                              /* create server configuration */
    NULL,                              /* merge server configuration */

    NULL,                              /* create location configuration */
    NULL                               /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_metrics_module_ctx, /* module context */
    ngx_http_ig_metrics_commands,      /* module directives */
    NGX_HTTP_MODULE,                   /* module type */
    NULL,                              /* init master */
    NULL,                              /* init module */
    NULL,                              /* init process */
    NULL,                              /* init thread */
    NULL,                              /* exit thread */
    NULL,                              /* exit process */
    NULL,                              /* exit master */
    NGX_MODULE_V1_PADDING
};


/* tenant slots: 0 no tenant, 1..max named, max + 1 "other" */

#define ngx_http_ig_m_nslots(z)      ((z)->max_tenants + 2)
#define ngx_http_ig_m_req(sh, slot, a, s)                                    \
    (&(sh)->requests[((slot) * IG_M_NACTIONS + (a)) * IG_M_NSTATUSES + (s)])


/* The running cycle's metrics with a zone, or NULL. */

static ngx_inline ngx_http_ig_m_zone_t *
ngx_http_ig_m_zone(void)
{
    ngx_http_ig_m_zone_t             *z;
    ngx_http_ig_metrics_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                            ngx_http_infergate_metrics_module);
    if (mcf == NULL) {
        return NULL;
    }

    z = mcf->zone;

    return (z && z->sh) ? z : NULL;
}


/* The configuration's metrics conf, created on first use. */

static ngx_http_ig_m_zone_t *
ngx_http_ig_m_conf(ngx_conf_t *cf)
{
    ngx_http_ig_m_zone_t             *z;
    ngx_http_ig_metrics_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_metrics_module);

    if (mcf->zone) {
        return mcf->zone;
    }

    z = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_m_zone_t));
    if (z == NULL) {
        return NULL;
    }

    z->max_tenants = NGX_CONF_UNSET_UINT;
    z->cache_var = NGX_ERROR;
    mcf->zone = z;

    return z;
}


static char *
ngx_http_ig_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_m_zone_t      *z;
    ngx_http_core_loc_conf_t  *clcf;

    z = ngx_http_ig_m_conf(cf);
    if (z == NULL) {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_ig_metrics_handler;

    z->used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_ig_metrics_tenants_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_int_t              n;
    ngx_str_t             *value;
    ngx_http_ig_m_zone_t  *z;

    z = ngx_http_ig_m_conf(cf);
    if (z == NULL) {
        return NGX_CONF_ERROR;
    }

    if (z->max_tenants != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n < 1 || n > 4096) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_metrics_tenants: \"%V\" is not a "
                           "number from 1 to 4096", &value[1]);
        return NGX_CONF_ERROR;
    }

    z->max_tenants = n;

    return NGX_CONF_OK;
}


/*
 * Postconfiguration: the log handler (after the audit module's), and the
 * zone, which exists only when some location serves metrics, so a
 * configuration without them pays nothing.
 */

static ngx_int_t
ngx_http_ig_metrics_init(ngx_conf_t *cf)
{
    size_t                 size, nreq;
    ngx_str_t              name = ngx_string(IG_M_ZONE_NAME);
    ngx_str_t              cache_var = ngx_string("infergate_cache_status");
    ngx_shm_zone_t                   *shm_zone;
    ngx_http_handler_pt              *h;
    ngx_http_ig_m_zone_t             *z;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_ig_metrics_main_conf_t  *mcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ig_metrics_log;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_metrics_module);
    z = mcf->zone;

    if (z == NULL || !z->used) {
        /* no location serves metrics: no zone, every figure a no-op */
        return NGX_OK;
    }

    if (z->max_tenants == NGX_CONF_UNSET_UINT) {
        z->max_tenants = IG_M_DEFAULT_TENANTS;
    }

    nreq = ngx_http_ig_m_nslots(z) * IG_M_NACTIONS * IG_M_NSTATUSES;

    size = sizeof(ngx_http_ig_m_sh_t)
           + z->max_tenants * (IG_M_TENANT_LEN + 1)
           + nreq * sizeof(ngx_atomic_t)
           + IG_M_BACKENDS * sizeof(ngx_http_ig_m_backend_sh_t);

    /* the slab allocator's own pages, and room for rounding */
    size = ngx_align(size, ngx_pagesize) + 16 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_infergate_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_ig_metrics_init_zone;
    shm_zone->data = z;

    z->cache_var = ngx_http_get_variable_index(cf, &cache_var);
    if (z->cache_var == NGX_ERROR) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ig_m_zone_t  *oz = data;

    size_t                 nreq;
    ngx_http_ig_m_sh_t    *sh;
    ngx_http_ig_m_zone_t  *z;

    z = shm_zone->data;

    if (oz && oz->max_tenants == z->max_tenants) {
        /* reload: the figures go on */
        z->sh = oz->sh;
        z->shpool = oz->shpool;
        return NGX_OK;
    }

    z->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        z->sh = z->shpool->data;
        return NGX_OK;
    }

    nreq = ngx_http_ig_m_nslots(z) * IG_M_NACTIONS * IG_M_NSTATUSES;

    sh = ngx_slab_calloc(z->shpool, sizeof(ngx_http_ig_m_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    sh->names = ngx_slab_calloc(z->shpool,
                                z->max_tenants * (IG_M_TENANT_LEN + 1));
    sh->requests = ngx_slab_calloc(z->shpool, nreq * sizeof(ngx_atomic_t));
    sh->backends = ngx_slab_calloc(z->shpool, IG_M_BACKENDS
                                   * sizeof(ngx_http_ig_m_backend_sh_t));

    if (sh->names == NULL || sh->requests == NULL || sh->backends == NULL) {
        return NGX_ERROR;
    }

    sh->name_lens = sh->names + z->max_tenants * IG_M_TENANT_LEN;
    sh->max_tenants = z->max_tenants;

    z->sh = sh;
    z->shpool->data = sh;

    return NGX_OK;
}


void
ngx_http_ig_metrics_add(ngx_http_ig_metric_e m, ngx_uint_t n)
{
    ngx_http_ig_m_zone_t  *z;

    z = ngx_http_ig_m_zone();

    if (z) {
        (void) ngx_atomic_fetch_add(&z->sh->counters[m], n);
    }
}


void
ngx_http_ig_metrics_gauge_add(ngx_http_ig_gauge_e g, ngx_int_t n)
{
    ngx_http_ig_m_zone_t  *z;

    z = ngx_http_ig_m_zone();

    if (z) {
        (void) ngx_atomic_fetch_add(&z->sh->gauges[g], n);
    }
}


void
ngx_http_ig_metrics_observe(ngx_http_ig_hist_e h, uint64_t value)
{
    ngx_uint_t                i;
    ngx_http_ig_m_zone_t     *z;
    ngx_http_ig_m_hist_sh_t  *hs;

    z = ngx_http_ig_m_zone();
    if (z == NULL) {
        return;
    }

    hs = &z->sh->hists[h];

    for (i = 0; i < IG_M_BUCKETS; i++) {
        if (value <= ngx_http_ig_m_hists[h].bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&hs->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&hs->sum, value);
    (void) ngx_atomic_fetch_add(&hs->count, 1);
}


ngx_uint_t
ngx_http_ig_metrics_on(void)
{
    return ngx_http_ig_m_zone() != NULL;
}


static uint64_t
ngx_http_ig_metrics_now_ms(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}


void
ngx_http_ig_metrics_backend(ngx_str_t *name, const ig_ctl_stats_t *st,
    size_t len)
{
    ngx_uint_t                   i;
    ngx_http_ig_m_zone_t        *z;
    ngx_http_ig_m_backend_sh_t  *a, *free;

    z = ngx_http_ig_m_zone();

    if (z == NULL || name->len == 0
        || name->len > IG_M_BACKEND_NAME || len > IG_CTL_STATS_MAX)
    {
        return;
    }

    free = NULL;

    ngx_shmtx_lock(&z->shpool->mutex);

    for (i = 0; i < IG_M_BACKENDS; i++) {
        a = &z->sh->backends[i];

        if (a->name_len == name->len
            && ngx_memcmp(a->name, name->data, name->len) == 0)
        {
            break;
        }

        if (a->name_len == 0 && free == NULL) {
            free = a;
        }
    }

    if (i == IG_M_BACKENDS) {
        a = free;

        if (a) {
            ngx_memcpy(a->name, name->data, name->len);
            a->name_len = name->len;
            a->updated_ms = 0;
            a->len = 0;
        }
    }

    if (a && st) {
        ngx_memcpy(a->msg, st, len);
        a->len = len;
        a->updated_ms = ngx_http_ig_metrics_now_ms();
    }

    ngx_shmtx_unlock(&z->shpool->mutex);
}


/*
 * Is the area the backend name itself or one of its pool members
 * ("NAME/0", "NAME/1" ...)?
 */

static ngx_uint_t
ngx_http_ig_m_backend_member(ngx_http_ig_m_backend_sh_t *a, ngx_str_t *name)
{
    size_t  k;

    if (a->name_len < name->len
        || ngx_memcmp(a->name, name->data, name->len) != 0)
    {
        return 0;
    }

    if (a->name_len == name->len) {
        return 1;
    }

    if (a->name[name->len] != '/' || a->name_len == name->len + 1) {
        return 0;
    }

    for (k = name->len + 1; k < a->name_len; k++) {
        if (a->name[k] < '0' || a->name[k] > '9') {
            return 0;
        }
    }

    return 1;
}


/* adds one member's figures for a model to the pool's */

static void
ngx_http_ig_m_model_add(ig_ctl_model_stats_t *to,
    const ig_ctl_model_stats_t *from)
{
    ngx_uint_t  k;

    to->ready |= from->ready;
    to->requests += from->requests;
    to->rows += from->rows;
    to->batches += from->batches;

    for (k = 0; k < IG_STATS_NSTATUS; k++) {
        to->failures[k] += from->failures[k];
    }

    to->queue_depth += from->queue_depth;
    to->run_count += from->run_count;
    to->run_sum_us += from->run_sum_us;

    for (k = 0; k < IG_STATS_BUCKETS; k++) {
        to->run_buckets[k] += from->run_buckets[k];
    }

    to->success += from->success;
    to->queue_ns += from->queue_ns;
    to->compute_ns += from->compute_ns;
    to->last_ms = ngx_max(to->last_ms, from->last_ms);
}


/*
 * The latest IG_CTL_STATS of the backend NAME into buf: for a pool, the
 * members' fresh figures summed per (model, version), the header of the
 * first member; the length, 0 when none is fresh or it does not fit.
 */

size_t
ngx_http_ig_metrics_backend_copy(ngx_str_t *name, u_char *buf, size_t size)
{
    size_t                       n;
    uint64_t                     now;
    ngx_uint_t                   i, j, k;
    ig_ctl_stats_t              *sum, *st;
    ngx_http_ig_m_zone_t        *z;
    ig_ctl_model_stats_t        *mt;
    ngx_http_ig_m_backend_sh_t  *a;

    z = ngx_http_ig_m_zone();

    if (z == NULL || name->len == 0 || name->len > IG_M_BACKEND_NAME
        || size < sizeof(ig_ctl_stats_t))
    {
        return 0;
    }

    n = 0;
    sum = (ig_ctl_stats_t *) buf;
    now = ngx_http_ig_metrics_now_ms();

    ngx_shmtx_lock(&z->shpool->mutex);

    for (i = 0; i < IG_M_BACKENDS; i++) {
        a = &z->sh->backends[i];

        if (!ngx_http_ig_m_backend_member(a, name)
            || a->len < sizeof(ig_ctl_stats_t)
            || a->updated_ms + IG_M_FRESH_MS <= now)
        {
            continue;
        }

        st = (ig_ctl_stats_t *) a->msg;

        if (st->nmodels > IG_RING_MAX_MODELS
            || a->len < sizeof(ig_ctl_stats_t)
                        + st->nmodels * sizeof(ig_ctl_model_stats_t))
        {
            continue;
        }

        if (n == 0) {
            if (a->len > size) {
                continue;
            }

            ngx_memcpy(buf, a->msg, a->len);
            n = a->len;
            continue;
        }

        for (j = 0; j < st->nmodels; j++) {
            mt = &st->models[j];

            for (k = 0; k < sum->nmodels; k++) {
                if (ngx_strncmp(sum->models[k].name, mt->name,
                                IG_MODEL_NAME_MAX) == 0
                    && ngx_strncmp(sum->models[k].version, mt->version,
                                   IG_RING_VERSION_MAX) == 0)
                {
                    break;
                }
            }

            if (k < sum->nmodels) {
                ngx_http_ig_m_model_add(&sum->models[k], mt);
                continue;
            }

            if (sum->nmodels == IG_RING_MAX_MODELS
                || n + sizeof(ig_ctl_model_stats_t) > size)
            {
                continue;
            }

            sum->models[sum->nmodels++] = *mt;
            n += sizeof(ig_ctl_model_stats_t);
        }
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    return n;
}


/*
 * A tenant's label slot, looked up in the zone once per key and worker
 * and then remembered in the key (process-local memory after fork).
 */

static ngx_uint_t
ngx_http_ig_metrics_tenant(ngx_http_ig_m_zone_t *z, ngx_http_ig_key_t *key)
{
    u_char                *name;
    ngx_uint_t             i, slot;
    ngx_http_ig_m_sh_t    *sh;

    if (key == NULL) {
        return 0;
    }

    if (key->metrics_slot) {
        return key->metrics_slot;
    }

    sh = z->sh;
    slot = z->max_tenants + 1;                           /* "other" */

    if (key->tenant.len < IG_M_TENANT_LEN) {
        ngx_shmtx_lock(&z->shpool->mutex);

        for (i = 0; i < sh->ntenants; i++) {
            name = sh->names + i * IG_M_TENANT_LEN;

            if (sh->name_lens[i] == key->tenant.len
                && ngx_memcmp(name, key->tenant.data, key->tenant.len) == 0)
            {
                slot = i + 1;
                break;
            }
        }

        if (i == sh->ntenants && i < z->max_tenants) {
            ngx_memcpy(sh->names + i * IG_M_TENANT_LEN, key->tenant.data,
                       key->tenant.len);
            sh->name_lens[i] = (u_char) key->tenant.len;
            sh->ntenants = i + 1;
            slot = i + 1;
        }

        ngx_shmtx_unlock(&z->shpool->mutex);
    }

    key->metrics_slot = slot;

    return slot;
}


/* The log phase: one count per request the module saw. */

static ngx_int_t
ngx_http_ig_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t                  a, s, status, slot;
    ngx_msec_int_t              ms;
    ngx_time_t                 *tp;
    ngx_http_ig_ctx_t          *ctx;
    ngx_http_ig_m_zone_t       *z;
    ngx_http_variable_value_t  *vv;

    z = ngx_http_ig_m_zone();
    if (z == NULL) {
        return NGX_OK;
    }

    ctx = ngx_http_ig_find_ctx(r);
    if (ctx == NULL) {
        return NGX_OK;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;
    if (r->connection->error && status < 400) {
        status = 499;
    }

    a = IG_M_ACTION_REQUEST;

    if (ctx->action.len) {
        for (a = 0; a < IG_M_ACTION_OTHER; a++) {
            if (ngx_http_ig_m_actions[a].len == ctx->action.len
                && ngx_memcmp(ngx_http_ig_m_actions[a].data,
                              ctx->action.data, ctx->action.len) == 0)
            {
                break;
            }
        }
    }

    for (s = 0; s < IG_M_NSTATUSES - 1; s++) {
        if (ngx_http_ig_m_statuses[s] == status) {
            break;
        }
    }

    slot = ngx_http_ig_metrics_tenant(z, ctx->key);

    (void) ngx_atomic_fetch_add(ngx_http_ig_m_req(z->sh, slot, a, s), 1);

    switch (a) {
    case IG_M_ACTION_RATE_LIMITED:
        ngx_http_ig_metrics_add(IG_MC_RATE_LIMITED, 1);
        break;
    case IG_M_ACTION_SCHEMA_REJECTED:
        ngx_http_ig_metrics_add(IG_MC_SCHEMA_REJECT, 1);
        break;
    case IG_M_ACTION_UNKNOWN_ID:
        ngx_http_ig_metrics_add(IG_MC_BLOOM_REJECT, 1);
        break;
    }

    if (z->cache_var != NGX_ERROR) {
        vv = ngx_http_get_indexed_variable(r, z->cache_var);

        if (vv && !vv->not_found && vv->len) {
            switch (vv->data[0]) {
            case 'H':
                ngx_http_ig_metrics_add(IG_MC_CACHE_HIT, 1);
                break;
            case 'M':
                ngx_http_ig_metrics_add(IG_MC_CACHE_MISS, 1);
                break;
            case 'B':
                ngx_http_ig_metrics_add(IG_MC_CACHE_BYPASS, 1);
                break;
            case 'S':
                ngx_http_ig_metrics_add(IG_MC_CACHE_STALE, 1);
                break;
            }
        }
    }

    /* inference: what the backend said, as the ring brought it back */

    if (ctx->batch_rows) {
        ngx_http_ig_metrics_observe(IG_MH_BATCH_SIZE, ctx->batch_rows);
        ngx_http_ig_metrics_observe(IG_MH_BACKEND_SECONDS, ctx->backend_us);
    }

    if (a == IG_M_ACTION_INFER && status < 300) {
        ngx_http_ig_metrics_add(IG_MC_BACKEND_OK, 1);

    } else if (a == IG_M_ACTION_BACKEND_UNAVAILABLE) {
        ngx_http_ig_metrics_add(ctx->backend_shed ? IG_MC_BACKEND_SHED
                                : status == NGX_HTTP_GATEWAY_TIME_OUT
                                ? IG_MC_BACKEND_TIMEOUT
                                : IG_MC_BACKEND_UNAVAILABLE, 1);
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));

    ngx_http_ig_metrics_observe(IG_MH_REQUEST_SECONDS,
                                (uint64_t) ngx_max(ms, 0) * 1000);

    return NGX_OK;
}


static u_char *
ngx_http_ig_metrics_label(u_char *p, u_char *s, size_t len)
{
    while (len--) {
        switch (*s) {
        case '\\':
            *p++ = '\\'; *p++ = '\\';
            break;
        case '"':
            *p++ = '\\'; *p++ = '"';
            break;
        case '\n':
            *p++ = '\\'; *p++ = 'n';
            break;
        default:
            *p++ = *s;
        }

        s++;
    }

    return p;
}


static u_char *
ngx_http_ig_metrics_bound(u_char *p, uint64_t bound, double scale)
{
    if (scale == 1) {
        return ngx_sprintf(p, "%uL", bound);
    }

    /* seconds from µs, without trailing zeros */
    p = ngx_sprintf(p, "%uL", bound / 1000000);

    bound %= 1000000;

    if (bound) {
        *p++ = '.';
        p = ngx_sprintf(p, "%06uL", bound);

        while (p[-1] == '0') {
            p--;
        }
    }

    return p;
}


static ngx_int_t
ngx_http_ig_metrics_handler(ngx_http_request_t *r)
{
    size_t                    size;
    u_char                   *p, *name;
    uint64_t                  v, cum;
    ngx_int_t                 rc;
    ngx_buf_t                *b;
    ngx_uint_t                i, slot, a, s, nslots, n;
    ngx_chain_t               out, *brk;
    ngx_atomic_t             *c;
    const char               *last;
    ngx_http_ig_m_sh_t       *sh;
    ngx_http_ig_m_zone_t     *z;
    ngx_http_ig_m_hist_sh_t  *hs;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    z = ngx_http_ig_m_zone();
    if (z == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    sh = z->sh;
    nslots = ngx_http_ig_m_nslots(z);

    /* an upper bound: every non-zero request series, then the rest */

    n = 0;
    for (i = 0; i < nslots * IG_M_NACTIONS * IG_M_NSTATUSES; i++) {
        if (sh->requests[i]) {
            n++;
        }
    }

    size = 512 + n * (128 + IG_M_TENANT_LEN * 2)
           + IG_MC_MAX * 256 + IG_MG_MAX * 256
           + IG_MH_MAX * (512 + (IG_M_BUCKETS + 3) * 96);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;

    p = ngx_cpymem(p, "# HELP infergate_requests_total Requests by tenant, "
                   "action and status.\n"
                   "# TYPE infergate_requests_total counter\n",
                   sizeof("# HELP infergate_requests_total Requests by "
                          "tenant, action and status.\n"
                          "# TYPE infergate_requests_total counter\n") - 1);

    for (slot = 0; slot < nslots; slot++) {
        for (a = 0; a < IG_M_NACTIONS; a++) {
            for (s = 0; s < IG_M_NSTATUSES; s++) {
                v = *ngx_http_ig_m_req(sh, slot, a, s);
                if (v == 0 || n == 0) {
                    continue;
                }

                n--;       /* never past the bound, whatever races in */

                p = ngx_cpymem(p, "infergate_requests_total{tenant=\"",
                               sizeof("infergate_requests_total{tenant=\"")
                               - 1);

                if (slot == 0) {
                    p = ngx_cpymem(p, "none", 4);

                } else if (slot == nslots - 1) {
                    p = ngx_cpymem(p, "other", 5);

                } else {
                    name = sh->names + (slot - 1) * IG_M_TENANT_LEN;
                    p = ngx_http_ig_metrics_label(p, name,
                                                  sh->name_lens[slot - 1]);
                }

                p = ngx_sprintf(p, "\",action=\"%V\",status=\"",
                                &ngx_http_ig_m_actions[a]);

                if (ngx_http_ig_m_statuses[s]) {
                    p = ngx_sprintf(p, "%ui", ngx_http_ig_m_statuses[s]);
                } else {
                    p = ngx_cpymem(p, "other", 5);
                }

                p = ngx_sprintf(p, "\"} %uL\n", v);
            }
        }
    }

    last = NULL;

    for (i = 0; i < IG_MC_MAX; i++) {
        if (last == NULL || ngx_strcmp(last, ngx_http_ig_m_counters[i].name))
        {
            last = ngx_http_ig_m_counters[i].name;
            p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s counter\n", last,
                            ngx_http_ig_m_counters[i].help, last);
        }

        c = &sh->counters[i];

        if (ngx_http_ig_m_counters[i].labels) {
            p = ngx_sprintf(p, "%s{%s} %uA\n", last,
                            ngx_http_ig_m_counters[i].labels, *c);
        } else {
            p = ngx_sprintf(p, "%s %uA\n", last, *c);
        }
    }

    for (i = 0; i < IG_MG_MAX; i++) {
        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s gauge\n%s %A\n",
                        ngx_http_ig_m_gauges[i].name,
                        ngx_http_ig_m_gauges[i].help,
                        ngx_http_ig_m_gauges[i].name,
                        ngx_http_ig_m_gauges[i].name,
                        (ngx_atomic_int_t) sh->gauges[i]);
    }

    for (i = 0; i < IG_MH_MAX; i++) {
        hs = &sh->hists[i];
        name = (u_char *) ngx_http_ig_m_hists[i].name;

        p = ngx_sprintf(p, "# HELP %s %s\n# TYPE %s histogram\n", name,
                        ngx_http_ig_m_hists[i].help, name);

        cum = 0;

        for (a = 0; a < IG_M_BUCKETS; a++) {
            cum += hs->buckets[a];
            p = ngx_sprintf(p, "%s_bucket{le=\"", name);
            p = ngx_http_ig_metrics_bound(p, ngx_http_ig_m_hists[i].bounds[a],
                                          ngx_http_ig_m_hists[i].scale);
            p = ngx_sprintf(p, "\"} %uL\n", cum);
        }

        cum += hs->buckets[IG_M_BUCKETS];
        p = ngx_sprintf(p, "%s_bucket{le=\"+Inf\"} %uL\n", name, cum);

        v = hs->sum;

        if (ngx_http_ig_m_hists[i].scale == 1) {
            p = ngx_sprintf(p, "%s_sum %uL\n", name, v);

        } else {
            p = ngx_sprintf(p, "%s_sum %uL.%06uL\n", name, v / 1000000,
                            v % 1000000);
        }

        /* the count is the +Inf bucket, read once: consistent */
        p = ngx_sprintf(p, "%s_count %uL\n", name, cum);
    }

    b->last = p;

    out.buf = b;
    out.next = ngx_http_ig_metrics_backends(r);

    if (out.next == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out.next->buf->last_buf = (r == r->main) ? 1 : 0;
    out.next->buf->last_in_chain = 1;

    /* the circuit breakers' state per key, before the backends' figures */

    brk = ngx_http_ig_breaker_metrics(r);
    if (brk == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    brk->next = out.next;
    out.next = brk;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = (b->last - b->pos)
                                      + ngx_buf_size(brk->buf)
                                      + ngx_buf_size(brk->next->buf);
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/*
 * The backends' own figures (IG_CTL_STATS, see lib/ig_ring.h): one area
 * per backend name in the zone, last reply wins.  A backend whose
 * figures are older than IG_M_FRESH_MS (dead, or no worker attached)
 * shows only infergate_backend_up 0: stale counters are not the truth.
 */

typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  fresh;
    ig_ctl_stats_t             *st;
} ngx_http_ig_m_be_t;


typedef struct {
    const char                 *name;
    const char                 *help;
    const char                 *type;
    size_t                      off;
} ngx_http_ig_m_series_t;


static ngx_http_ig_m_series_t  ngx_http_ig_m_model_series[] = {
    { "infergate_backend_model_requests_total",
      "Requests the backend took from the ring, by model.", "counter",
      offsetof(ig_ctl_model_stats_t, requests) },
    { "infergate_backend_model_rows_total",
      "Rows of well-formed requests the backend took, by model.", "counter",
      offsetof(ig_ctl_model_stats_t, rows) },
    { "infergate_backend_model_batches_total",
      "Model runs (batches), by model.", "counter",
      offsetof(ig_ctl_model_stats_t, batches) },
    { "infergate_backend_queue_depth",
      "Requests queued or running in the backend, by model.", "gauge",
      offsetof(ig_ctl_model_stats_t, queue_depth) }
};


/* by ig_ring_status_e */
static const char  *ngx_http_ig_m_reasons[IG_STATS_NSTATUS] = {
    NULL, "bad_request", "no_model", "queue_full", "queue_timeout",
    "model_error", "shutdown", NULL
};


static u_char *
ngx_http_ig_metrics_be_labels(u_char *p, ngx_http_ig_m_be_t *be,
    ig_ctl_model_stats_t *m)
{
    p = ngx_cpymem(p, "backend=\"", sizeof("backend=\"") - 1);
    p = ngx_http_ig_metrics_label(p, be->name.data, be->name.len);
    *p++ = '"';

    if (m) {
        p = ngx_cpymem(p, ",model=\"", sizeof(",model=\"") - 1);
        p = ngx_http_ig_metrics_label(p, (u_char *) m->name,
                                      ngx_strlen(m->name));
        p = ngx_cpymem(p, "\",version=\"", sizeof("\",version=\"") - 1);
        p = ngx_http_ig_metrics_label(p, (u_char *) m->version,
                                      ngx_strlen(m->version));
        *p++ = '"';
    }

    return p;
}


static u_char *
ngx_http_ig_metrics_head(u_char *p, const char *name, const char *help,
    const char *type)
{
    return ngx_sprintf(p, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                       type);
}


static ngx_chain_t *
ngx_http_ig_metrics_backends(ngx_http_request_t *r)
{
    size_t                       size, ns;
    u_char                      *p;
    uint64_t                     now, v, cum;
    ngx_buf_t                   *b;
    ngx_uint_t                   i, k, j, f, nb;
    ngx_chain_t                 *cl;
    ig_ctl_stats_t              *st;
    ngx_http_ig_m_be_t           be[IG_M_BACKENDS];
    ngx_http_ig_m_zone_t        *z;
    ig_ctl_model_stats_t        *m;
    ngx_http_ig_m_backend_sh_t  *a, *copy;

    z = ngx_http_ig_m_zone();

    copy = ngx_palloc(r->pool,
                      IG_M_BACKENDS * sizeof(ngx_http_ig_m_backend_sh_t));
    if (copy == NULL) {
        return NULL;
    }

    nb = 0;

    ngx_shmtx_lock(&z->shpool->mutex);

    for (i = 0; i < IG_M_BACKENDS; i++) {
        a = &z->sh->backends[i];

        if (a->name_len == 0 || a->len > IG_CTL_STATS_MAX) {
            continue;
        }

        ngx_memcpy(&copy[nb], a,
                   offsetof(ngx_http_ig_m_backend_sh_t, msg) + a->len);
        nb++;
    }

    ngx_shmtx_unlock(&z->shpool->mutex);

    now = ngx_http_ig_metrics_now_ms();
    size = 4096;

    for (k = 0; k < nb; k++) {
        a = &copy[k];

        be[k].name.data = a->name;
        be[k].name.len = a->name_len;
        be[k].st = NULL;
        be[k].fresh = 0;

        if (a->len < sizeof(ig_ctl_stats_t)) {
            continue;
        }

        /* checked when it was stored; the strings are ended here */
        st = (ig_ctl_stats_t *) a->msg;
        st->device[sizeof(st->device) - 1] = '\0';

        for (i = 0; i < st->nmodels; i++) {
            st->models[i].name[IG_MODEL_NAME_MAX - 1] = '\0';
            st->models[i].version[IG_RING_VERSION_MAX - 1] = '\0';
            st->models[i].signer[IG_RING_SIGNER_MAX - 1] = '\0';
        }

        be[k].st = st;
        be[k].fresh = (a->updated_ms + IG_M_FRESH_MS > now);

        /* every line below is shorter than 512 bytes */
        size += 4096 + st->nmodels * (IG_STATS_BUCKETS + 18) * 512;
    }

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NULL;
    }

    p = b->last;

    /* backend-wide */

    p = ngx_http_ig_metrics_head(p, "infergate_backend_up",
                                 "1 when the backend's own figures are "
                                 "fresher than 3 s.", "gauge");

    for (k = 0; k < nb; k++) {
        p = ngx_cpymem(p, "infergate_backend_up{",
                       sizeof("infergate_backend_up{") - 1);
        p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
        p = ngx_sprintf(p, "} %ui\n", be[k].fresh);
    }

    p = ngx_http_ig_metrics_head(p, "infergate_backend_info",
                                 "The backend's execution device.", "gauge");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        p = ngx_cpymem(p, "infergate_backend_info{",
                       sizeof("infergate_backend_info{") - 1);
        p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
        p = ngx_cpymem(p, ",device=\"", sizeof(",device=\"") - 1);
        p = ngx_http_ig_metrics_label(p, (u_char *) be[k].st->device,
                                      ngx_strlen(be[k].st->device));
        p = ngx_cpymem(p, "\"} 1\n", sizeof("\"} 1\n") - 1);
    }

    p = ngx_http_ig_metrics_head(p, "infergate_backend_uptime_seconds",
                                 "Seconds since the backend started.",
                                 "gauge");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        v = be[k].st->uptime_ms;
        p = ngx_cpymem(p, "infergate_backend_uptime_seconds{",
                       sizeof("infergate_backend_uptime_seconds{") - 1);
        p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
        p = ngx_sprintf(p, "} %uL.%03uL\n", v / 1000, v % 1000);
    }

    p = ngx_http_ig_metrics_head(p,
                                 "infergate_backend_model_load_failures_total",
                                 "Models the backend refused to load "
                                 "(start or reload).", "counter");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        p = ngx_cpymem(p, "infergate_backend_model_load_failures_total{",
                       sizeof("infergate_backend_model_load_failures_total{")
                       - 1);
        p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
        p = ngx_sprintf(p, "} %uL\n", be[k].st->load_failures);
    }

    p = ngx_http_ig_metrics_head(p, "infergate_backend_reloads_total",
                                 "Model reloads (SIGHUP) the backend "
                                 "finished.", "counter");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        p = ngx_cpymem(p, "infergate_backend_reloads_total{",
                       sizeof("infergate_backend_reloads_total{") - 1);
        p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
        p = ngx_sprintf(p, "} %uL\n", be[k].st->reloads);
    }

    p = ngx_http_ig_metrics_head(p,
                                 "infergate_backend_signature_failures_total",
                                 "Model loads refused for a bad or missing "
                                 "signature.", "counter");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        p = ngx_cpymem(p, "infergate_backend_signature_failures_total{",
                       sizeof("infergate_backend_signature_failures_total{")
                       - 1);
        p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
        p = ngx_sprintf(p, "} %uL\n", be[k].st->signature_failures);
    }

    /* only where the backend runs its models on a GPU */

    p = ngx_http_ig_metrics_head(p, "infergate_backend_gpu_memory_bytes",
                                 "Memory of the backend's GPU (free, "
                                 "total).", "gauge");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh || be[k].st->gpu_mem_total == 0) {
            continue;
        }

        for (j = 0; j < 2; j++) {
            p = ngx_cpymem(p, "infergate_backend_gpu_memory_bytes{",
                           sizeof("infergate_backend_gpu_memory_bytes{")
                           - 1);
            p = ngx_http_ig_metrics_be_labels(p, &be[k], NULL);
            p = ngx_sprintf(p, ",kind=\"%s\"} %uL\n",
                            j ? "total" : "free",
                            j ? be[k].st->gpu_mem_total
                              : be[k].st->gpu_mem_free);
        }
    }

    p = ngx_http_ig_metrics_head(p, "infergate_backend_model_info",
                                 "Always 1: the model file each id serves, "
                                 "its SHA-256 and signer.", "gauge");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        for (i = 0; i < be[k].st->nmodels; i++) {
            m = &be[k].st->models[i];

            p = ngx_cpymem(p, "infergate_backend_model_info{",
                           sizeof("infergate_backend_model_info{") - 1);
            p = ngx_http_ig_metrics_be_labels(p, &be[k], m);
            p = ngx_cpymem(p, ",sha256=\"", sizeof(",sha256=\"") - 1);
            p = ngx_hex_dump(p, m->sha256, sizeof(m->sha256));
            p = ngx_cpymem(p, "\",signer=\"", sizeof("\",signer=\"") - 1);
            p = ngx_http_ig_metrics_label(p, (u_char *) m->signer,
                                          ngx_strlen(m->signer));
            p = ngx_cpymem(p, "\"} 1\n", sizeof("\"} 1\n") - 1);
        }
    }

    /* per model */

    ns = sizeof(ngx_http_ig_m_model_series)
         / sizeof(ngx_http_ig_m_series_t);

    for (f = 0; f < ns; f++) {
        p = ngx_http_ig_metrics_head(p, ngx_http_ig_m_model_series[f].name,
                                     ngx_http_ig_m_model_series[f].help,
                                     ngx_http_ig_m_model_series[f].type);

        for (k = 0; k < nb; k++) {
            if (!be[k].fresh) {
                continue;
            }

            for (i = 0; i < be[k].st->nmodels; i++) {
                m = &be[k].st->models[i];
                ngx_memcpy(&v, (u_char *) m
                                + ngx_http_ig_m_model_series[f].off,
                           sizeof(uint64_t));

                p = ngx_sprintf(p, "%s{", ngx_http_ig_m_model_series[f].name);
                p = ngx_http_ig_metrics_be_labels(p, &be[k], m);
                p = ngx_sprintf(p, "} %uL\n", v);
            }
        }
    }

    p = ngx_http_ig_metrics_head(p, "infergate_backend_model_failures_total",
                                 "Requests the backend failed, by model and "
                                 "reason.", "counter");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        for (i = 0; i < be[k].st->nmodels; i++) {
            m = &be[k].st->models[i];

            for (j = 0; j < IG_STATS_NSTATUS; j++) {
                if (ngx_http_ig_m_reasons[j] == NULL) {
                    continue;
                }

                p = ngx_cpymem(p, "infergate_backend_model_failures_total{",
                               sizeof("infergate_backend_model_failures_"
                                      "total{") - 1);
                p = ngx_http_ig_metrics_be_labels(p, &be[k], m);
                p = ngx_sprintf(p, ",reason=\"%s\"} %uL\n",
                                ngx_http_ig_m_reasons[j], m->failures[j]);
            }
        }
    }

    p = ngx_http_ig_metrics_head(p, "infergate_backend_model_run_seconds",
                                 "Model run time of each batch, by model.",
                                 "histogram");

    for (k = 0; k < nb; k++) {
        if (!be[k].fresh) {
            continue;
        }

        st = be[k].st;

        for (i = 0; i < st->nmodels; i++) {
            m = &st->models[i];
            cum = 0;

            for (j = 0; j < IG_STATS_BUCKETS; j++) {
                cum += m->run_buckets[j];

                p = ngx_cpymem(p, "infergate_backend_model_run_seconds_"
                               "bucket{",
                               sizeof("infergate_backend_model_run_seconds_"
                                      "bucket{") - 1);
                p = ngx_http_ig_metrics_be_labels(p, &be[k], m);
                p = ngx_cpymem(p, ",le=\"", sizeof(",le=\"") - 1);

                if (j < IG_STATS_BUCKETS - 1) {
                    p = ngx_http_ig_metrics_bound(p, st->run_bounds_us[j],
                                                  1e6);
                } else {
                    p = ngx_cpymem(p, "+Inf", 4);
                }

                p = ngx_sprintf(p, "\"} %uL\n", cum);
            }

            p = ngx_cpymem(p, "infergate_backend_model_run_seconds_sum{",
                           sizeof("infergate_backend_model_run_seconds_"
                                  "sum{") - 1);
            p = ngx_http_ig_metrics_be_labels(p, &be[k], m);
            p = ngx_sprintf(p, "} %uL.%06uL\n", m->run_sum_us / 1000000,
                            m->run_sum_us % 1000000);

            p = ngx_cpymem(p, "infergate_backend_model_run_seconds_count{",
                           sizeof("infergate_backend_model_run_seconds_"
                                  "count{") - 1);
            p = ngx_http_ig_metrics_be_labels(p, &be[k], m);
            p = ngx_sprintf(p, "} %uL\n", cum);
        }
    }

    b->last = p;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NULL;
    }

    cl->buf = b;
    cl->next = NULL;

    return cl;
}


static void *
ngx_http_ig_metrics_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_metrics_main_conf_t));
}
