
/*
 * Copyright (C) infergate authors
 *
 * The Redis response cache: shared between the access step
 * (ngx_http_infergate_cache.c) and the capture filters
 * (filters/ngx_http_infergate_cache_filter.c).
 */


#ifndef _NGX_HTTP_INFERGATE_CACHE_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_CACHE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"


/*
 * Redis key layout: "igc:" T ":" D (an entry, or the Vary spec of D),
 * "igl:" T ":" D (lease), "igv:" T ":" D (D's variants), "igt:" T ":" H
 */
#define NGX_HTTP_IG_CACHE_TLEN      16       /* hex of sha256(tenant)     */
#define NGX_HTTP_IG_CACHE_KEYLEN    (4 + NGX_HTTP_IG_CACHE_TLEN + 1 + 64)

#define NGX_HTTP_IG_CACHE_NONE      0
#define NGX_HTTP_IG_CACHE_BODY      1        /* reading the request body  */
#define NGX_HTTP_IG_CACHE_BODY_DONE 2
#define NGX_HTTP_IG_CACHE_LOOKUP    3        /* lookup sent               */
#define NGX_HTTP_IG_CACHE_REPLIED   4
#define NGX_HTTP_IG_CACHE_WAITING   5        /* another request fills     */
#define NGX_HTTP_IG_CACHE_DONE      6

#define NGX_HTTP_IG_CST_NONE        0
#define NGX_HTTP_IG_CST_MISS        1
#define NGX_HTTP_IG_CST_HIT         2
#define NGX_HTTP_IG_CST_BYPASS      3
#define NGX_HTTP_IG_CST_STALE       4

/* why a request bypassed the cache (Cache-Status "fwd=") */
#define NGX_HTTP_IG_BYP_CONF        0        /* Redis down, bad entry     */
#define NGX_HTTP_IG_BYP_METHOD      1
#define NGX_HTTP_IG_BYP_REQUEST     2        /* the request's directives  */
#define NGX_HTTP_IG_BYP_RESPONSE    3        /* the response not storable */

/* the purge before a write goes to the origin */
#define NGX_HTTP_IG_PREPURGE_NONE   0
#define NGX_HTTP_IG_PREPURGE_SENT   1        /* the script's reply awaited */
#define NGX_HTTP_IG_PREPURGE_DONE   2        /* replied, failed or unsent  */

/* a write lease's lifetime where the location has no infergate_cache */
#define NGX_HTTP_IG_CACHE_WLEASE    2000     /* ms, lock_timeout's default */

/* the methods whose 2xx purges (infergate_cache_purge) */
#define NGX_HTTP_IG_CACHE_WRITES                                          \
    (NGX_HTTP_POST|NGX_HTTP_PUT|NGX_HTTP_PATCH|NGX_HTTP_DELETE)

#define NGX_HTTP_IG_LOOKUP_ERROR    (-1)
#define NGX_HTTP_IG_LOOKUP_MISS     0        /* no lease wanted (HEAD)    */
#define NGX_HTTP_IG_LOOKUP_HIT      1
#define NGX_HTTP_IG_LOOKUP_LEASED   2
#define NGX_HTTP_IG_LOOKUP_BUSY     3


typedef struct {
    ngx_http_ig_redis_t        *redis;
    ngx_msec_t                  ttl;
    ngx_uint_t                  jitter;      /* percent                    */
    ngx_http_complex_value_t   *key;
    ngx_array_t                *tags;        /* ngx_http_complex_value_t   */
    ngx_uint_t                  methods;     /* NGX_HTTP_GET|...           */
    ngx_array_t                *statuses;    /* ngx_uint_t                 */
    size_t                      max_size;
    ngx_msec_t                  lock_timeout;
    ngx_msec_t                  stale_if_error;
    ngx_msec_t                  stale_while_revalidate;
    unsigned                    key_cookie:1;   /* key= names a cookie    */
    unsigned                    key_auth:1;     /* key= names credentials */
} ngx_http_ig_cache_conf_t;


/* a Vary spec: at most 16 names, 256 bytes ("V " then "a,b,c") */
#define NGX_HTTP_IG_CACHE_VARY_MAX    16
#define NGX_HTTP_IG_CACHE_VARY_LEN    256


typedef struct {
    ngx_http_ig_redis_t        *redis;       /* NULL: the cache's          */
    ngx_array_t                *keys;        /* ngx_http_complex_value_t   */
    ngx_array_t                *tags;        /* ngx_http_complex_value_t   */
} ngx_http_ig_purge_conf_t;


typedef struct {
    ngx_http_ig_cache_conf_t   *cache;       /* NULL: off                  */
    ngx_http_ig_purge_conf_t   *purge;       /* NULL: off                  */
    unsigned                    cache_set:1;
    unsigned                    purge_set:1;
} ngx_http_ig_cache_loc_conf_t;


typedef struct {
    ngx_http_request_t         *request;
    ngx_http_ig_cache_conf_t   *conf;        /* NULL: a purge location    */
    ngx_uint_t                  state;
    ngx_uint_t                  status;      /* NGX_HTTP_IG_CST_*          */
    ngx_uint_t                  prepurge;    /* NGX_HTTP_IG_PREPURGE_*     */
    ngx_http_ig_redis_cmd_t    *cmd;         /* in flight                  */

    u_char                      entry[NGX_HTTP_IG_CACHE_KEYLEN];
    u_char                      lease[NGX_HTTP_IG_CACHE_KEYLEN];
    u_char                      primary[NGX_HTTP_IG_CACHE_KEYLEN];
    u_char                      variants[NGX_HTTP_IG_CACHE_KEYLEN];
    u_char                      digest[32];  /* D of the primary key      */
    ngx_str_t                   vary;        /* names of the stored spec  */
    u_char                      token[32];
    u_char                      wtoken[32];  /* a write's lease token     */
    u_char                     *wkeys;       /* its purge's entry triples */
    ngx_uint_t                  nwkeys;
    ngx_http_ig_redis_t        *wredis;
    u_char                      tenant[NGX_HTTP_IG_CACHE_TLEN];

    ngx_int_t                   result;      /* NGX_HTTP_IG_LOOKUP_*       */
    ngx_str_t                   value;       /* a hit's stored value       */

    /* a stored value, parsed (ngx_http_ig_cache_parse()) */
    ngx_uint_t                  e_status;
    time_t                      e_stored;    /* Age base                   */
    int64_t                     e_fresh;     /* fresh until, epoch ms      */
    ngx_msec_t                  e_sie;       /* stale-if-error             */
    ngx_msec_t                  e_swr;       /* stale-while-revalidate     */
    ngx_str_t                   e_type;
    ngx_str_t                   e_body;
    ngx_str_t                   stale;       /* an expired entry, kept     */
    ngx_uint_t                  fwd_status;  /* what the origin answered   */
    ngx_msec_t                  started;     /* first lookup, for waiting  */
    ngx_event_t                 wake;        /* posted after a reply       */
    ngx_event_t                 retry;       /* polls a busy lease         */

    /* capture of a miss */
    ngx_uint_t                  resp_status;
    ngx_str_t                   resp_type;
    ngx_str_t                   resp_vary;   /* canonical Vary names      */
    ngx_msec_t                  resp_ttl;    /* the origin's, 0: none     */
    time_t                      resp_age;    /* the origin's Age          */
    ngx_int_t                   resp_sie;    /* RFC 5861, s; -1: none     */
    ngx_int_t                   resp_swr;
    ngx_chain_t                *body;
    ngx_chain_t               **last;
    size_t                      size;

    unsigned                    leased:1;    /* we hold the fill lease     */
    unsigned                    capture:1;
    unsigned                    header_done:1;
    unsigned                    purge_done:1;
    unsigned                    varied:1;    /* entry, lease: a variant's */
    unsigned                    bypass:2;    /* NGX_HTTP_IG_BYP_*          */
    unsigned                    direct:1;    /* answered from the entry    */
    unsigned                    swap:1;      /* the failure becomes stale  */
    unsigned                    swap_sent:1;
    unsigned                    refresh:1;   /* a background refresh       */
    unsigned                    wlease:1;    /* write leases may be held   */
} ngx_http_ig_cache_ctx_t;



char *ngx_http_ig_cache_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_ig_cache_purge_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* a digest key "igX:T:D" of the request's tenant */
void ngx_http_ig_cache_tenant(ngx_http_request_t *r, u_char *out);
void ngx_http_ig_cache_make_key(u_char *out, char kind, u_char *tenant,
    u_char *digest);

void ngx_http_ig_cache_store(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);
void ngx_http_ig_cache_release(ngx_http_ig_cache_ctx_t *cc);
void ngx_http_ig_cache_unlease(ngx_http_ig_cache_ctx_t *cc);
void ngx_http_ig_cache_purge(ngx_http_request_t *r,
    ngx_http_ig_purge_conf_t *pcf, ngx_http_ig_cache_conf_t *ccf);

ngx_int_t ngx_http_ig_cache_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

ngx_int_t ngx_http_ig_cache_init_scripts(void);

/* stale answers (RFC 5861) and Cache-Status (RFC 9211) */
int64_t ngx_http_ig_cache_now_ms(void);
ngx_int_t ngx_http_ig_cache_parse(ngx_http_ig_cache_ctx_t *cc,
    ngx_str_t *value);
ngx_int_t ngx_http_ig_cache_stale_swap(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);
ngx_int_t ngx_http_ig_cache_status_header(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc);

/* RFC 9111 field parsing, shared with the capture filter */
u_char *ngx_http_ig_cache_directive_next(u_char *p, u_char *last,
    ngx_str_t *name, ngx_str_t *arg);
ngx_int_t ngx_http_ig_cache_vary_names(ngx_http_request_t *r,
    ngx_list_part_t *part, ngx_str_t *out);
ngx_int_t ngx_http_ig_cache_variant(ngx_http_request_t *r,
    ngx_http_ig_cache_ctx_t *cc, ngx_str_t *names, u_char *out);


extern ngx_module_t  ngx_http_infergate_cache_module;


#endif /* _NGX_HTTP_INFERGATE_CACHE_H_INCLUDED_ */
