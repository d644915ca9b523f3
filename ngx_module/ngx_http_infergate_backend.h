
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

/* sockets one infergate_backend may list (a pool) */
#define NGX_HTTP_IG_POOL_MAX      16


typedef void (*ngx_http_ig_backend_handler_pt)(ngx_http_ig_backend_req_t *br,
    ngx_uint_t how);


/*
 * One request's hold on a slot, in the request pool.  The handler runs
 * once: with NGX_HTTP_IG_BE_DONE while br->slot is valid (it must read
 * the output before it returns: the slot is freed after it), or with
 * DOWN or TIMEOUT.  A request finalized before that (client gone) is
 * detached by its pool cleanup, so a late completion only frees the
 * slot.
 *
 * br->backend is the pool member holding the slot (not the named
 * infergate_backend): pass it to ngx_http_ig_backend_slot_floats() when
 * reading the answer.  A member that dies with br in flight moves br
 * once to another member that serves the model (the rows are copied from
 * the dead member's slot, still mapped then): br->backend, br->slot and
 * br->index change and the handler is not called; the timer keeps
 * running, so the retry has the request's remaining time only.
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

    /* the model submitted, kept for a retry on another pool member */
    uint32_t                         rows;
    uint32_t                         in_floats;
    uint32_t                         nfeatures;
    uint32_t                         noutputs;
    char                             model[IG_MODEL_NAME_MAX];
    char                             version[IG_RING_VERSION_MAX];

    unsigned                         reserved:1;
    unsigned                         waiting:1;
    unsigned                         retried:1;
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

/*
 * be is the named infergate_backend (a pool of one or more sockets)
 * unless said otherwise.
 *
 * Ready: at least one member is connected, HELLO and its model list
 * received.
 */
ngx_uint_t ngx_http_ig_backend_ready(ngx_http_ig_backend_t *be);
ngx_str_t *ngx_http_ig_backend_name(ngx_http_ig_backend_t *be);

/*
 * The pool's model list (NULL while no member is ready): the union of the
 * ready members' lists by name and version, a model ready when a member
 * has it ready; m->id is an index in this list, valid for submit until
 * the event loop runs again.  Lookup: a version, or (NULL) the highest
 * numeric version of the name.
 */
const ig_ctl_models_t *ngx_http_ig_backend_models(ngx_http_ig_backend_t *be);
const ig_ctl_model_t *ngx_http_ig_backend_model(ngx_http_ig_backend_t *be,
    ngx_str_t *name, ngx_str_t *version);

/*
 * The pool's readiness of one model for /v2/health and model-ready: a
 * ready member serves it and the breaker of r's location (key: the
 * model, ngx_http_ig_breaker_open()) is not open.
 */
ngx_uint_t ngx_http_ig_backend_model_ready(ngx_http_request_t *r,
    ngx_http_ig_backend_t *be, ngx_str_t *name, ngx_str_t *version);

/*
 * Floats a slot holds: of a member (br->backend), or for a pool the
 * smallest of its ready members (what a reserved slot surely holds).
 */
size_t ngx_http_ig_backend_slot_floats(ngx_http_ig_backend_t *be);

/*
 * Takes a free slot for br on the pool member with the fewest rows in
 * flight (scaled by its slow start weight): NGX_OK (br->slot and
 * br->backend set), NGX_BUSY (every ready member at max_inflight or
 * without a free slot: 503 at once) or NGX_DECLINED (none connected).
 * ngx_http_ig_backend_reserve_model() only considers members that serve
 * m (an entry of ngx_http_ig_backend_model() of the same pool); plain
 * reserve() picks among all, and submit() moves the rows to a member
 * that serves the model when the chosen one does not.
 */
ngx_int_t ngx_http_ig_backend_reserve(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br, ngx_http_request_t *r);
ngx_int_t ngx_http_ig_backend_reserve_model(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br, ngx_http_request_t *r,
    const ig_ctl_model_t *m);

/* gives a reserved, never submitted slot back */
void ngx_http_ig_backend_release(ngx_http_ig_backend_req_t *br);

/*
 * Pushes the slot (data written) on sq and starts the timer (timeout= of
 * the infergate_backend).  model_id is the id of the pool's model list.
 */
ngx_int_t ngx_http_ig_backend_submit(ngx_http_ig_backend_req_t *br,
    uint32_t model_id, uint32_t rows, uint32_t in_floats);


#endif /* _NGX_HTTP_INFERGATE_BACKEND_H_INCLUDED_ */
