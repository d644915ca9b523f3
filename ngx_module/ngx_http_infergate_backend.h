
/*
 * Copyright (C) infergate authors
 */


#ifndef _NGX_HTTP_INFERGATE_BACKEND_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_BACKEND_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_ring.h>


typedef struct ngx_http_ig_backend_s      ngx_http_ig_backend_t;
typedef struct ngx_http_ig_backend_req_s  ngx_http_ig_backend_req_t;


/* why a request ended without a backend answer */
#define NGX_HTTP_IG_BE_DONE       0      /* the slot came back: read it   */
#define NGX_HTTP_IG_BE_DOWN       1      /* control socket lost: 503      */
#define NGX_HTTP_IG_BE_TIMEOUT    2      /* timeout= passed: 504          */


typedef void (*ngx_http_ig_backend_handler_pt)(ngx_http_ig_backend_req_t *br,
    ngx_uint_t how);


/*
 * One request's hold on a slot, in the request pool.  The handler runs
 * once: with NGX_HTTP_IG_BE_DONE while br->slot is valid (it must read
 * the output before it returns: the slot is freed after it), or with
 * DOWN or TIMEOUT.  A request finalized before that (client gone) is
 * detached by its pool cleanup, so a late completion only frees the
 * slot.
 */
struct ngx_http_ig_backend_req_s {
    ngx_http_request_t              *request;
    ngx_http_ig_backend_t           *backend;
    ngx_http_ig_backend_handler_pt   handler;
    void                            *data;

    ig_ring_slot_t                  *slot;
    uint32_t                         index;
    uint64_t                         tag;
    uint64_t                         submit_ns;
    uint64_t                         done_ns;

    ngx_event_t                      timer;

    unsigned                         reserved:1;
    unsigned                         waiting:1;
};


/* the infer module's main conf: the infergate_backend list */
typedef struct {
    ngx_array_t                     *backends; /* ngx_http_ig_backend_t * */
} ngx_http_ig_infer_main_conf_t;


extern ngx_module_t  ngx_http_infergate_infer_module;


char *ngx_http_ig_backend_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_ig_backend_t *ngx_http_ig_backend_find(ngx_conf_t *cf,
    ngx_str_t *name);
ngx_int_t ngx_http_ig_backend_init_process(ngx_cycle_t *cycle);
void ngx_http_ig_backend_exit_process(ngx_cycle_t *cycle);

/* connected, HELLO and the model list received */
ngx_uint_t ngx_http_ig_backend_ready(ngx_http_ig_backend_t *be);

/*
 * The model list (NULL before the first IG_CTL_MODELS).  Lookup: a
 * version, or (NULL) the highest numeric version of the name.
 */
const ig_ctl_models_t *ngx_http_ig_backend_models(ngx_http_ig_backend_t *be);
const ig_ctl_model_t *ngx_http_ig_backend_model(ngx_http_ig_backend_t *be,
    ngx_str_t *name, ngx_str_t *version);

/* floats a slot holds */
size_t ngx_http_ig_backend_slot_floats(ngx_http_ig_backend_t *be);

/*
 * Takes a free slot for br: NGX_OK (br->slot set), NGX_BUSY (max_inflight
 * reached or no free slot: 503 at once) or NGX_DECLINED (not connected).
 */
ngx_int_t ngx_http_ig_backend_reserve(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br, ngx_http_request_t *r);

/* gives a reserved, never submitted slot back */
void ngx_http_ig_backend_release(ngx_http_ig_backend_req_t *br);

/* pushes the slot (data written) on sq and starts the timer */
ngx_int_t ngx_http_ig_backend_submit(ngx_http_ig_backend_req_t *br,
    uint32_t model_id, uint32_t rows, uint32_t in_floats);


#endif /* _NGX_HTTP_INFERGATE_BACKEND_H_INCLUDED_ */
