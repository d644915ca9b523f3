
/*
 * Copyright (C) infergate authors
 */


#ifndef _NGX_HTTP_INFERGATE_METRICS_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_ring.h>


/* plain counters, summed across workers in one shared zone */
typedef enum {
    IG_MC_CACHE_HIT = 0,
    IG_MC_CACHE_MISS,
    IG_MC_CACHE_BYPASS,
    IG_MC_CACHE_STALE,
    IG_MC_CACHE_FILL,
    IG_MC_CACHE_PURGE,
    IG_MC_RATE_LIMITED,
    IG_MC_BLOOM_REJECT,
    IG_MC_SCHEMA_REJECT,
    IG_MC_REDIS_RECONNECT,
    IG_MC_REDIS_ERROR,
    IG_MC_REDIS_MOVED,
    IG_MC_REDIS_ASK,
    IG_MC_BACKEND_OK,
    IG_MC_BACKEND_UNAVAILABLE,
    IG_MC_BACKEND_TIMEOUT,
    IG_MC_BACKEND_SHED,
    IG_MC_BACKEND_RECONNECT,
    IG_MC_BACKEND_RETRY,          /* pool: moved to another member */
    IG_MC_AUDIT_RECORDS,
    IG_MC_AUDIT_BYTES,
    IG_MC_AUDIT_FLUSH_ERRORS,
    IG_MC_AUDIT_LOST,
    IG_MC_BREAKER_TO_OPEN,
    IG_MC_BREAKER_TO_HALF_OPEN,
    IG_MC_BREAKER_TO_CLOSED,
    IG_MC_BREAKER_FAST_FAIL,
    IG_MC_MAX
} ngx_http_ig_metric_e;


/* gauges: set (or moved) by whoever owns the figure */
typedef enum {
    IG_MG_REDIS_CONNECTED = 0,    /* connections up, all workers        */
    IG_MG_BACKEND_CONNECTED,      /* workers attached to the backend    */
    IG_MG_BACKEND_INFLIGHT,       /* requests in the ring, all workers  */
    IG_MG_BREAKERS_OPEN,          /* breaker keys open now              */
    IG_MG_MAX
} ngx_http_ig_gauge_e;


/* histograms */
typedef enum {
    IG_MH_REQUEST_SECONDS = 0,    /* end to end, in µs                  */
    IG_MH_BACKEND_SECONDS,        /* ring round trip, in µs             */
    IG_MH_BATCH_SIZE,             /* rows in the batch a request ran in */
    IG_MH_MAX
} ngx_http_ig_hist_e;


void ngx_http_ig_metrics_add(ngx_http_ig_metric_e m, ngx_uint_t n);
void ngx_http_ig_metrics_gauge_add(ngx_http_ig_gauge_e g, ngx_int_t n);
void ngx_http_ig_metrics_observe(ngx_http_ig_hist_e h, uint64_t value);


/* a metrics zone exists: the ring client then asks for IG_CTL_STATS */
ngx_uint_t ngx_http_ig_metrics_on(void);

/*
 * Stores a backend's latest IG_CTL_STATS (checked by the caller; len
 * bytes) in the zone's area for that backend name, last reply wins;
 * st == NULL only claims the area, so the backend shows as down.
 */
void ngx_http_ig_metrics_backend(ngx_str_t *name, const ig_ctl_stats_t *st,
    size_t len);

/*
 * Copies that backend's latest IG_CTL_STATS into buf for the statistics
 * extension; for a pool, its members' figures summed per (model, version).
 * Returns its length, or 0 when there is no zone, no reply younger than
 * 3 s, or it does not fit size.
 */
size_t ngx_http_ig_metrics_backend_copy(ngx_str_t *name, u_char *buf,
    size_t size);


#endif /* _NGX_HTTP_INFERGATE_METRICS_H_INCLUDED_ */
