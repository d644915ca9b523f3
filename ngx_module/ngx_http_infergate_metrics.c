
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
#include "ngx_http_infergate_metrics.h"


#define IG_M_TENANT_LEN      64
#define IG_M_BUCKETS         13
#define IG_M_ZONE_NAME       "infergate_metrics"


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
    ngx_string("other")
};

#define IG_M_NACTIONS                                                        \
    (sizeof(ngx_http_ig_m_actions) / sizeof(ngx_str_t))

#define IG_M_ACTION_REQUEST          0
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
    { "infergate_backend_requests_total", "Inference requests by outcome.",
      "result=\"ok\"" },
    { "infergate_backend_requests_total", NULL, "result=\"unavailable\"" },
    { "infergate_backend_requests_total", NULL, "result=\"timeout\"" },
    { "infergate_backend_requests_total", NULL, "result=\"shed\"" },
    { "infergate_backend_reconnects_total",
      "Reconnections to the backend's control socket.", NULL },
    { "infergate_audit_records_total", "Audit records written.", NULL },
    { "infergate_audit_bytes_total", "Audit bytes written.", NULL },
    { "infergate_audit_flush_errors_total", "Audit writes that failed.",
      NULL },
    { "infergate_audit_lost_records_total",
      "Audit records lost (disk errors, overload).", NULL }
};


static ngx_http_ig_m_desc_t  ngx_http_ig_m_gauges[IG_MG_MAX] = {
    { "infergate_redis_connections",
      "Redis connections up, all workers.", NULL },
    { "infergate_backend_connected_workers",
      "Workers attached to the inference backend.", NULL },
    { "infergate_backend_inflight",
      "Requests in the backend ring, all workers.", NULL }
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


typedef struct {
    ngx_shmtx_sh_t              lock;
    ngx_uint_t                  ntenants;    /* named slots in use        */
    ngx_uint_t                  max_tenants;
    ngx_atomic_t                counters[IG_MC_MAX];
    ngx_atomic_t                gauges[IG_MG_MAX];
    ngx_http_ig_m_hist_sh_t     hists[IG_MH_MAX];
    u_char                     *names;       /* max_tenants × TENANT_LEN  */
    u_char                     *name_lens;
    ngx_atomic_t               *requests;    /* [slot][action][status]    */
} ngx_http_ig_m_sh_t;


typedef struct {
    ngx_http_ig_m_sh_t         *sh;
    ngx_slab_pool_t            *shpool;
    ngx_shmtx_t                 mutex;
    ngx_uint_t                  max_tenants;
} ngx_http_ig_m_zone_t;


static ngx_int_t ngx_http_ig_metrics_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_ig_metrics_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ig_metrics_tenant(ngx_http_ig_key_t *key);
static u_char *ngx_http_ig_metrics_label(u_char *p, u_char *s, size_t len);


/* this worker's view of the zone; NULL when no metrics are configured */
static ngx_http_ig_m_zone_t  *ngx_http_ig_m_zone;
static ngx_uint_t             ngx_http_ig_m_used;
static ngx_uint_t             ngx_http_ig_m_max_tenants = 64;


/* tenant slots: 0 no tenant, 1..max named, max + 1 "other" */

#define ngx_http_ig_m_nslots(z)      ((z)->max_tenants + 2)
#define ngx_http_ig_m_req(sh, slot, a, s)                                    \
    (&(sh)->requests[((slot) * IG_M_NACTIONS + (a)) * IG_M_NSTATUSES + (s)])


char *
ngx_http_ig_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_ig_metrics_handler;

    ngx_http_ig_m_used = 1;

    return NGX_CONF_OK;
}


char *
ngx_http_ig_metrics_tenants_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_int_t   n;
    ngx_str_t  *value;

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n < 1 || n > 4096) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_metrics_tenants: \"%V\" is not a "
                           "number from 1 to 4096", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_http_ig_m_max_tenants = n;

    return NGX_CONF_OK;
}


/*
 * Called from postconfiguration: the zone exists only when some location
 * serves metrics, so a configuration without them pays nothing.
 */

ngx_int_t
ngx_http_ig_metrics_init(ngx_conf_t *cf)
{
    size_t                 size, nreq;
    ngx_str_t              name = ngx_string(IG_M_ZONE_NAME);
    ngx_shm_zone_t        *shm_zone;
    ngx_http_ig_m_zone_t  *z;

    /* a reload without metrics must not keep the old cycle's zone */
    ngx_http_ig_m_zone = NULL;

    if (!ngx_http_ig_m_used) {
        ngx_http_ig_m_max_tenants = 64;
        return NGX_OK;
    }

    ngx_http_ig_m_used = 0;

    z = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_m_zone_t));
    if (z == NULL) {
        return NGX_ERROR;
    }

    z->max_tenants = ngx_http_ig_m_max_tenants;
    ngx_http_ig_m_max_tenants = 64;

    nreq = ngx_http_ig_m_nslots(z) * IG_M_NACTIONS * IG_M_NSTATUSES;

    size = sizeof(ngx_http_ig_m_sh_t)
           + z->max_tenants * (IG_M_TENANT_LEN + 1)
           + nreq * sizeof(ngx_atomic_t);

    /* the slab allocator's own pages, and room for rounding */
    size = ngx_align(size, ngx_pagesize) + 16 * ngx_pagesize;

    shm_zone = ngx_shared_memory_add(cf, &name, size,
                                     &ngx_http_infergate_module);
    if (shm_zone == NULL) {
        return NGX_ERROR;
    }

    shm_zone->init = ngx_http_ig_metrics_init_zone;
    shm_zone->data = z;

    ngx_http_ig_m_zone = z;

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
        return ngx_shmtx_create(&z->mutex, &z->sh->lock, NULL);
    }

    z->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        z->sh = z->shpool->data;
        return ngx_shmtx_create(&z->mutex, &z->sh->lock, NULL);
    }

    nreq = ngx_http_ig_m_nslots(z) * IG_M_NACTIONS * IG_M_NSTATUSES;

    sh = ngx_slab_calloc(z->shpool, sizeof(ngx_http_ig_m_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    sh->names = ngx_slab_calloc(z->shpool,
                                z->max_tenants * (IG_M_TENANT_LEN + 1));
    sh->requests = ngx_slab_calloc(z->shpool, nreq * sizeof(ngx_atomic_t));

    if (sh->names == NULL || sh->requests == NULL) {
        return NGX_ERROR;
    }

    sh->name_lens = sh->names + z->max_tenants * IG_M_TENANT_LEN;
    sh->max_tenants = z->max_tenants;

    z->sh = sh;
    z->shpool->data = sh;

    return ngx_shmtx_create(&z->mutex, &sh->lock, NULL);
}


void
ngx_http_ig_metrics_add(ngx_http_ig_metric_e m, ngx_uint_t n)
{
    if (ngx_http_ig_m_zone && ngx_http_ig_m_zone->sh) {
        (void) ngx_atomic_fetch_add(&ngx_http_ig_m_zone->sh->counters[m], n);
    }
}


void
ngx_http_ig_metrics_gauge_add(ngx_http_ig_gauge_e g, ngx_int_t n)
{
    if (ngx_http_ig_m_zone && ngx_http_ig_m_zone->sh) {
        (void) ngx_atomic_fetch_add(&ngx_http_ig_m_zone->sh->gauges[g], n);
    }
}


void
ngx_http_ig_metrics_observe(ngx_http_ig_hist_e h, uint64_t value)
{
    ngx_uint_t                i;
    ngx_http_ig_m_hist_sh_t  *hs;

    if (ngx_http_ig_m_zone == NULL || ngx_http_ig_m_zone->sh == NULL) {
        return;
    }

    hs = &ngx_http_ig_m_zone->sh->hists[h];

    for (i = 0; i < IG_M_BUCKETS; i++) {
        if (value <= ngx_http_ig_m_hists[h].bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&hs->buckets[i], 1);
    (void) ngx_atomic_fetch_add(&hs->sum, value);
    (void) ngx_atomic_fetch_add(&hs->count, 1);
}


/*
 * A tenant's label slot, looked up in the zone once per key and worker
 * and then remembered in the key (process-local memory after fork).
 */

static ngx_uint_t
ngx_http_ig_metrics_tenant(ngx_http_ig_key_t *key)
{
    u_char                *name;
    ngx_uint_t             i, slot;
    ngx_http_ig_m_sh_t    *sh;
    ngx_http_ig_m_zone_t  *z;

    if (key == NULL) {
        return 0;
    }

    if (key->metrics_slot) {
        return key->metrics_slot;
    }

    z = ngx_http_ig_m_zone;
    sh = z->sh;
    slot = z->max_tenants + 1;                           /* "other" */

    if (key->tenant.len < IG_M_TENANT_LEN) {
        ngx_shmtx_lock(&z->mutex);

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

        ngx_shmtx_unlock(&z->mutex);
    }

    key->metrics_slot = slot;

    return slot;
}


/* The log phase: one count per request the module saw. */

ngx_int_t
ngx_http_ig_metrics_log(ngx_http_request_t *r)
{
    ngx_uint_t          a, s, status, slot;
    ngx_msec_int_t      ms;
    ngx_time_t         *tp;
    ngx_http_ig_ctx_t  *ctx;

    if (ngx_http_ig_m_zone == NULL || ngx_http_ig_m_zone->sh == NULL) {
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

    slot = ngx_http_ig_metrics_tenant(ctx->key);

    (void) ngx_atomic_fetch_add(ngx_http_ig_m_req(ngx_http_ig_m_zone->sh,
                                                  slot, a, s), 1);

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
    ngx_chain_t               out;
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

    z = ngx_http_ig_m_zone;
    if (z == NULL || z->sh == NULL) {
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
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = sizeof("text/plain") - 1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
