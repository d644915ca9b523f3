
/*
 * Copyright (C) infergate authors
 */


#ifndef _NGX_HTTP_INFERGATE_GRPC_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_GRPC_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate_backend.h"


/* inference.GRPCInferenceService (ngx_http_infergate_grpc.c) */

/* HTTP/2 and Content-Type: application/grpc[+...] */
ngx_uint_t ngx_http_ig_grpc_request(ngx_http_request_t *r);

/* the infer content handler's branch for such a request */
ngx_int_t ngx_http_ig_grpc_handler(ngx_http_request_t *r,
    ngx_http_ig_backend_t *be);

/*
 * The cache (ngx_http_infergate_cache.c, ngx_http_infergate_cache_filter.c):
 * only ModelInfer is cached; its key hashes the key's models= list (with
 * key= too) and the message without the 5-byte prefix (a chain over the
 * same memory or file); a stored reply
 * is replayed with the trailer grpc-status: 0; only a reply whose
 * trailers say grpc-status 0 is stored.
 */
ngx_uint_t ngx_http_ig_grpc_cacheable(ngx_http_request_t *r);
ngx_int_t ngx_http_ig_grpc_cache_models(ngx_http_request_t *r,
    ngx_str_t *out);
ngx_int_t ngx_http_ig_grpc_cache_body(ngx_http_request_t *r,
    ngx_chain_t *in, ngx_chain_t **out);
ngx_int_t ngx_http_ig_grpc_cache_replay(ngx_http_request_t *r);
ngx_uint_t ngx_http_ig_grpc_reply_ok(ngx_http_request_t *r);

/* ngx_http_ig_problem() for such a request: a Trailers-Only status */
ngx_int_t ngx_http_ig_grpc_problem(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *detail);


#endif /* _NGX_HTTP_INFERGATE_GRPC_H_INCLUDED_ */
