
/*
 * Copyright (C) infergate authors
 *
 * Circuit breakers (ngx_http_infergate_breaker.c): per-key state in a
 * shared zone, a precontent stage that fails fast while a key is open,
 * and a header filter that counts what the content produced.
 */


#ifndef _NGX_HTTP_INFERGATE_BREAKER_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_BREAKER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_IG_BRK_CLOSED        0
#define NGX_HTTP_IG_BRK_OPEN          1
#define NGX_HTTP_IG_BRK_HALF_OPEN     2

#define NGX_HTTP_IG_BRK_ON_5XX        0x01   /* any 500..599              */
#define NGX_HTTP_IG_BRK_ON_TIMEOUT    0x02   /* 504                       */
#define NGX_HTTP_IG_BRK_ON_UNAVAIL    0x04   /* 502, 503                  */


/*
 * The state the request saw ("closed", "open", "half_open"), or NULL
 * when no breaker applied: for $infergate_breaker and the audit record.
 */
ngx_str_t *ngx_http_ig_breaker_state(ngx_http_request_t *r);

/*
 * Whether the request's location's breaker holds a key open, for the
 * pool's readiness (ngx_http_ig_backend_model_ready()): the key is
 * "model" (the default key), or the location's key= evaluated for this
 * request.  Read-only: no key is created, refreshed or moved along.
 * Half-open, and open past its open time, are not open: the probes need
 * traffic.  0 without a breaker.
 */
ngx_uint_t ngx_http_ig_breaker_open(ngx_http_request_t *r, ngx_str_t *model);

/* infergate_breaker_state{zone,key} for infergate_metrics */
ngx_chain_t *ngx_http_ig_breaker_metrics(ngx_http_request_t *r);


extern ngx_module_t  ngx_http_infergate_breaker_module;


#endif /* _NGX_HTTP_INFERGATE_BREAKER_H_INCLUDED_ */
