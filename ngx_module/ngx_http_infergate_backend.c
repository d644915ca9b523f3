
/*
 * Copyright (C) infergate authors
 *
 * The ring client: each worker connects to infergate-backend's control
 * socket, maps the shared region it is handed (SCM_RIGHTS), submits
 * requests through its own submission queue and takes completions from
 * its completion queue, woken by an eventfd registered in the event
 * loop.  The control socket is the liveness channel: when it closes,
 * every in-flight request fails at once and the worker reconnects with
 * backoff, picking up a restarted backend (a new region and generation)
 * without a reload.  See lib/ig_ring.h for the protocol.
 *
 * An infergate_backend lists one or more sockets (a pool: one daemon per
 * GPU or NUMA node).  Each socket is a member with its own connection,
 * region and slots; the named backend only holds the members, the union
 * of their model lists and the choice of a member per request: the ready
 * member that serves the model with the fewest rows in flight, weighted
 * by slow start (nginx's least_conn: rows * weight compared crosswise,
 * ties by smooth weighted round robin).  A member that dies moves each of
 * its in-flight requests once to another member (the rows are copied out
 * of its still mapped region) before the region is unmapped.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <poll.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <time.h>

#include <ig_clock.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_backend.h"
#include "ngx_http_infergate_breaker.h"
#include "ngx_http_infergate_metrics.h"


#define NGX_HTTP_IG_SLOT_FREE       0
#define NGX_HTTP_IG_SLOT_RESERVED   1
#define NGX_HTTP_IG_SLOT_SUBMITTED  2

#define NGX_HTTP_IG_BACKOFF_MIN     20
#define NGX_HTTP_IG_READY_WAIT      1000   /* ms a new worker waits for HELLO */
#define NGX_HTTP_IG_BACKOFF_MAX     1000

#define NGX_HTTP_IG_MODELS_MAX                                                \
    (sizeof(ig_ctl_models_t) + IG_RING_MAX_MODELS * sizeof(ig_ctl_model_t))

/* the receive buffer: the larger of the model list and IG_CTL_STATS */
#define NGX_HTTP_IG_MSG_MAX                                                   \
    (ngx_max(NGX_HTTP_IG_MODELS_MAX, IG_CTL_STATS_MAX) + 64)

#define NGX_HTTP_IG_STATS_EVERY     1000            /* ms */

#define NGX_HTTP_IG_WEIGHT          100             /* a member's full weight */


struct ngx_http_ig_backend_s {
    ngx_str_t                    name;           /* NAME, or NAME/i      */
    ngx_str_t                    path;

    /* the named backend (a pool): its members; NULL in a member */
    ngx_http_ig_backend_t      **peers;
    ngx_uint_t                   npeers;
    ngx_msec_t                   slow_start;     /* 0: off               */
    ig_ctl_models_t             *pool_models;    /* the union, per worker */
    ngx_uint_t                   pool_ready;

    /* a member: its pool (itself never) */
    ngx_http_ig_backend_t       *pool;
    ngx_uint_t                   rows;           /* rows in flight       */
    uint32_t                    *slot_rows;      /* by slot              */
    ngx_msec_t                   ready_since;    /* 0: full weight       */
    ngx_int_t                    current;        /* smooth WRR           */
    ngx_uint_t                   credit;         /* slow start offers    */
    ngx_uint_t                   initial;        /* in init_process      */

    struct sockaddr_un           sun;
    socklen_t                    sun_len;
    ngx_msec_t                   timeout;
    ngx_uint_t                   max_inflight;   /* 0: the slot count    */

    /* per worker, from init_process on */
    ngx_log_t                   *log;
    ngx_connection_t            *ctl;
    ngx_connection_t            *cqc;            /* completion doorbell  */
    ngx_fd_t                     sq_fd;          /* submission doorbell  */
    ngx_event_t                  bell;           /* posted: rings sq_fd  */
    void                        *base;
    size_t                       map_len;
    ig_ring_region_t             rg;
    uint32_t                     client;
    ig_ring_queue_t             *sq;
    ig_ring_queue_t             *cq;
    uint64_t                     slot_floats;

    ngx_http_ig_backend_req_t  **waiters;        /* by slot              */
    uint64_t                    *tags;
    uint8_t                     *state;
    uint32_t                    *free;
    ngx_uint_t                   nfree;
    ngx_uint_t                   limit;
    uint64_t                     next_tag;

    u_char                      *msg;            /* receive buffer       */
    ig_ctl_models_t             *models;
    ngx_uint_t                   have_models;
    ngx_uint_t                   listed;         /* models holds a list  */

    ngx_event_t                  reconnect;
    ngx_event_t                  stats;           /* IG_CTL_STATS_REQ    */
    ngx_msec_t                   backoff;
    ngx_uint_t                   failures;
    ngx_uint_t                   exiting;

    unsigned                     mapped:1;
    unsigned                     attached:1;      /* in the gauge        */
};


static ngx_int_t ngx_http_ig_backend_init_member(ngx_cycle_t *cycle,
    ngx_http_ig_backend_t *be);
static ngx_int_t ngx_http_ig_backend_connect(ngx_http_ig_backend_t *be);
static void ngx_http_ig_backend_retry(ngx_http_ig_backend_t *be);
static void ngx_http_ig_backend_wait_ready(ngx_http_ig_backend_t *be);
static void ngx_http_ig_backend_reconnect_handler(ngx_event_t *ev);
static void ngx_http_ig_backend_ctl_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_ig_backend_hello(ngx_http_ig_backend_t *be,
    u_char *msg, size_t len, int *fds, ngx_uint_t nfds);
static ngx_int_t ngx_http_ig_backend_models_msg(ngx_http_ig_backend_t *be,
    u_char *msg, size_t len);
static void ngx_http_ig_backend_cq_handler(ngx_event_t *ev);
static void ngx_http_ig_backend_bell_handler(ngx_event_t *ev);
static void ngx_http_ig_backend_down(ngx_http_ig_backend_t *be,
    const char *why, ngx_err_t err);
static void ngx_http_ig_backend_timeout(ngx_event_t *ev);
static void ngx_http_ig_backend_req_cleanup(void *data);
static void ngx_http_ig_backend_finish(ngx_http_ig_backend_req_t *br,
    ngx_uint_t how);
static void ngx_http_ig_backend_dummy(ngx_event_t *ev);
static void ngx_http_ig_backend_stats_handler(ngx_event_t *ev);
static void ngx_http_ig_backend_stats_req(ngx_http_ig_backend_t *be);
static void ngx_http_ig_backend_stats_msg(ngx_http_ig_backend_t *be,
    u_char *msg, size_t len);
static void ngx_http_ig_backend_shed(ngx_http_request_t *r);
static const ig_ctl_model_t *ngx_http_ig_backend_lookup(
    const ig_ctl_models_t *ms, ngx_str_t *name, ngx_str_t *version);
static void ngx_http_ig_backend_pool_update(ngx_http_ig_backend_t *pool);
static const ig_ctl_model_t *ngx_http_ig_backend_serves(
    ngx_http_ig_backend_t *be, const char *name, const char *version,
    uint32_t nfeatures, uint32_t noutputs);
static ngx_http_ig_backend_t *ngx_http_ig_backend_pick(
    ngx_http_ig_backend_t *pool, ngx_http_ig_backend_req_t *br,
    ngx_http_ig_backend_t *except, size_t need, ngx_uint_t *busy);
static ngx_int_t ngx_http_ig_backend_take(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br);
static ngx_int_t ngx_http_ig_backend_push(ngx_http_ig_backend_req_t *br,
    uint32_t model_id);
static ngx_int_t ngx_http_ig_backend_move(ngx_http_ig_backend_req_t *br,
    ig_ring_slot_t *from, ngx_http_ig_backend_t *to);
static ngx_int_t ngx_http_ig_backend_failover(ngx_http_ig_backend_req_t *br,
    ig_ring_slot_t *from);
static void ngx_http_ig_backend_slot_done(ngx_http_ig_backend_t *be,
    uint32_t index);
static ngx_uint_t ngx_http_ig_backend_breaker_open(ngx_http_request_t *r,
    ngx_http_ig_backend_t *pool, ngx_str_t *name, ngx_str_t *version);


/*
 * infergate_backend NAME unix:/path [unix:/path2 ...] [timeout=2s]
 *     [max_inflight=N] [slow_start=10s];
 *
 * The sockets come first; timeout= and max_inflight= hold for each
 * member.  One socket: the member is named NAME (as before pools); more:
 * NAME/0, NAME/1 ... in the order given (logs and the backend's series
 * in /metrics).
 */

char *
ngx_http_ig_backend_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_infer_main_conf_t *mcf = conf;

    u_char                 *p;
    ngx_int_t               n;
    ngx_str_t              *value, s, paths[NGX_HTTP_IG_POOL_MAX];
    ngx_uint_t              i, j, npaths, max_inflight;
    ngx_msec_t              timeout, slow_start;
    ngx_http_ig_backend_t  *pool, *be, **bep;

    value = cf->args->elts;

    if (mcf->backends == NULL) {
        mcf->backends = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_http_ig_backend_t *));
        if (mcf->backends == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_ig_backend_find(cf, &value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_backend: \"%V\" is duplicate",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[1].len == 0 || value[1].len > 48) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_backend: the name \"%V\" must be 1 "
                           "to 48 characters", &value[1]);
        return NGX_CONF_ERROR;
    }

    timeout = 2000;
    max_inflight = 0;
    slow_start = 10000;
    npaths = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "unix:", 5) == 0) {

            if (i != 2 + npaths) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: the socket \"%V\" "
                                   "must come before the parameters",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            if (npaths == NGX_HTTP_IG_POOL_MAX) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: more than %d "
                                   "sockets", NGX_HTTP_IG_POOL_MAX);
                return NGX_CONF_ERROR;
            }

            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: \"%V\": the address "
                                   "must be \"unix:/path/to/backend.sock\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            if (s.len >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: the socket path "
                                   "\"%V\" is too long", &s);
                return NGX_CONF_ERROR;
            }

            for (j = 0; j < npaths; j++) {
                if (paths[j].len == s.len
                    && ngx_strncmp(paths[j].data, s.data, s.len) == 0)
                {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "infergate_backend: the socket "
                                       "\"%V\" is listed twice", &s);
                    return NGX_CONF_ERROR;
                }
            }

            paths[npaths++] = s;
            continue;
        }

        if (npaths == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_backend: \"%V\": the address "
                               "must be \"unix:/path/to/backend.sock\"",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            n = ngx_parse_time(&s, 0);
            if (n == NGX_ERROR || n == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: invalid timeout "
                                   "\"%V\"", &s);
                return NGX_CONF_ERROR;
            }

            timeout = (ngx_msec_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_inflight=", 13) == 0) {
            n = ngx_atoi(value[i].data + 13, value[i].len - 13);
            if (n == NGX_ERROR || n < 1 || n > IG_RING_MAX_SLOTS) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: max_inflight must "
                                   "be between 1 and %d, not \"%V\"",
                                   IG_RING_MAX_SLOTS, &value[i]);
                return NGX_CONF_ERROR;
            }

            max_inflight = (ngx_uint_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "slow_start=", 11) == 0) {
            s.data = value[i].data + 11;
            s.len = value[i].len - 11;

            n = ngx_parse_time(&s, 0);
            if (s.len == 0 || n == NGX_ERROR || n > 3600000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_backend: invalid slow_start "
                                   "\"%V\" (0 to 1h; 0 turns it off)", &s);
                return NGX_CONF_ERROR;
            }

            slow_start = (ngx_msec_t) n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_backend: unknown parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (npaths == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_backend: \"%V\" lists no "
                           "\"unix:/path/to/backend.sock\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    pool = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_backend_t));
    if (pool == NULL) {
        return NGX_CONF_ERROR;
    }

    pool->name = value[1];
    pool->path = paths[0];
    pool->timeout = timeout;
    pool->max_inflight = max_inflight;
    pool->slow_start = slow_start;
    pool->sq_fd = NGX_INVALID_FILE;
    pool->npeers = npaths;

    pool->peers = ngx_pcalloc(cf->pool,
                              npaths * sizeof(ngx_http_ig_backend_t *));
    if (pool->peers == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < npaths; i++) {
        be = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_backend_t));
        if (be == NULL) {
            return NGX_CONF_ERROR;
        }

        if (npaths == 1) {
            be->name = value[1];

        } else {
            p = ngx_pnalloc(cf->pool, value[1].len + 1 + NGX_INT_T_LEN);
            if (p == NULL) {
                return NGX_CONF_ERROR;
            }

            be->name.data = p;
            be->name.len = ngx_sprintf(p, "%V/%ui", &value[1], i) - p;
        }

        be->path = paths[i];
        be->timeout = timeout;
        be->max_inflight = max_inflight;
        be->sq_fd = NGX_INVALID_FILE;
        be->pool = pool;

        be->sun.sun_family = AF_UNIX;
        ngx_memcpy(be->sun.sun_path, be->path.data, be->path.len);
        be->sun_len = offsetof(struct sockaddr_un, sun_path)
                      + be->path.len + 1;

        pool->peers[i] = be;
    }

    bep = ngx_array_push(mcf->backends);
    if (bep == NULL) {
        return NGX_CONF_ERROR;
    }

    *bep = pool;

    return NGX_CONF_OK;
}


ngx_http_ig_backend_t *
ngx_http_ig_backend_find(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                       i;
    ngx_http_ig_backend_t          **bep;
    ngx_http_ig_infer_main_conf_t   *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_infer_module);

    if (mcf->backends == NULL) {
        return NULL;
    }

    bep = mcf->backends->elts;

    for (i = 0; i < mcf->backends->nelts; i++) {
        if (bep[i]->name.len == name->len
            && ngx_strncmp(bep[i]->name.data, name->data, name->len) == 0)
        {
            return bep[i];
        }
    }

    return NULL;
}


ngx_int_t
ngx_http_ig_backend_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i, k;
    ngx_http_ig_backend_t          **bep, *be, *pool;
    ngx_http_ig_infer_main_conf_t   *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_infergate_infer_module);
    if (mcf == NULL || mcf->backends == NULL) {
        return NGX_OK;
    }

    bep = mcf->backends->elts;

    for (i = 0; i < mcf->backends->nelts; i++) {
        pool = bep[i];

        pool->log = cycle->log;
        pool->pool_models = ngx_palloc(cycle->pool, NGX_HTTP_IG_MODELS_MAX);
        if (pool->pool_models == NULL) {
            return NGX_ERROR;
        }

        for (k = 0; k < pool->npeers; k++) {
            be = pool->peers[k];

            if (ngx_http_ig_backend_init_member(cycle, be) != NGX_OK) {
                return NGX_ERROR;
            }
        }

        ngx_http_ig_backend_pool_update(pool);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_backend_init_member(ngx_cycle_t *cycle, ngx_http_ig_backend_t *be)
{
    be->log = cycle->log;

    be->msg = ngx_palloc(cycle->pool, NGX_HTTP_IG_MSG_MAX);
    be->models = ngx_palloc(cycle->pool, NGX_HTTP_IG_MODELS_MAX);
    be->waiters = ngx_pcalloc(cycle->pool, IG_RING_MAX_SLOTS
                              * sizeof(ngx_http_ig_backend_req_t *));
    be->tags = ngx_pcalloc(cycle->pool,
                           IG_RING_MAX_SLOTS * sizeof(uint64_t));
    be->state = ngx_pcalloc(cycle->pool, IG_RING_MAX_SLOTS);
    be->free = ngx_palloc(cycle->pool,
                          IG_RING_MAX_SLOTS * sizeof(uint32_t));
    be->slot_rows = ngx_pcalloc(cycle->pool,
                                IG_RING_MAX_SLOTS * sizeof(uint32_t));

    if (be->msg == NULL || be->models == NULL || be->waiters == NULL
        || be->tags == NULL || be->state == NULL || be->free == NULL
        || be->slot_rows == NULL)
    {
        return NGX_ERROR;
    }

    be->reconnect.handler = ngx_http_ig_backend_reconnect_handler;
    be->reconnect.data = be;
    be->reconnect.log = cycle->log;
    be->reconnect.cancelable = 1;

    be->bell.handler = ngx_http_ig_backend_bell_handler;
    be->bell.data = be;
    be->bell.log = cycle->log;

    be->backoff = NGX_HTTP_IG_BACKOFF_MIN;

    /* the backend's own figures, for /metrics, once a second */
    if (ngx_http_ig_metrics_on()) {
        ngx_http_ig_metrics_backend(&be->name, NULL, 0);

        be->stats.handler = ngx_http_ig_backend_stats_handler;
        be->stats.data = be;
        be->stats.log = cycle->log;
        be->stats.cancelable = 1;

        ngx_add_timer(&be->stats, NGX_HTTP_IG_STATS_EVERY);
    }

    /* a member up at worker start takes its full share at once */
    be->initial = 1;

    if (ngx_http_ig_backend_connect(be) != NGX_OK) {
        ngx_http_ig_backend_retry(be);

    } else {
        ngx_http_ig_backend_wait_ready(be);
    }

    be->initial = 0;

    return NGX_OK;
}


/*
 * A worker takes no connection before its init_process returns: waiting
 * here for the backend's HELLO and model list (a backend that is up
 * answers in microseconds) keeps a new worker at a reload from answering
 * 503 "not connected" while its peers have left.  A backend that does not
 * greet within NGX_HTTP_IG_READY_WAIT is left to the event loop.
 */

static void
ngx_http_ig_backend_wait_ready(ngx_http_ig_backend_t *be)
{
    int            n;
    uint64_t       start, now, left;
    struct pollfd  pfd;

    start = ig_clock_ns();

    while (be->ctl != NULL && !ngx_http_ig_backend_ready(be)) {

        now = ig_clock_ns();
        if (now - start >= NGX_HTTP_IG_READY_WAIT * 1000000) {
            ngx_log_error(NGX_LOG_WARN, be->log, 0,
                          "infergate_backend \"%V\": no greeting within "
                          "%d ms, serving 503 until it comes",
                          &be->name, NGX_HTTP_IG_READY_WAIT);
            return;
        }

        left = NGX_HTTP_IG_READY_WAIT - (now - start) / 1000000;

        pfd.fd = be->ctl->fd;
        pfd.events = POLLIN;
        pfd.revents = 0;

        n = poll(&pfd, 1, (int) left);

        if (n == -1 && ngx_errno != NGX_EINTR) {
            return;
        }

        if (n > 0) {
            ngx_http_ig_backend_ctl_handler(be->ctl->read);
        }
    }
}


void
ngx_http_ig_backend_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                       i, k;
    ngx_http_ig_backend_t          **bep, *be;
    ngx_http_ig_infer_main_conf_t   *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_infergate_infer_module);
    if (mcf == NULL || mcf->backends == NULL) {
        return;
    }

    bep = mcf->backends->elts;

    for (i = 0; i < mcf->backends->nelts; i++) {
        for (k = 0; k < bep[i]->npeers; k++) {
            be = bep[i]->peers[k];

            if (be->log == NULL) {
                continue;
            }

            be->exiting = 1;

            if (be->reconnect.timer_set) {
                ngx_del_timer(&be->reconnect);
            }

            if (be->stats.timer_set) {
                ngx_del_timer(&be->stats);
            }

            ngx_http_ig_backend_down(be, NULL, 0);
        }
    }
}



static ngx_int_t
ngx_http_ig_backend_connect(ngx_http_ig_backend_t *be)
{
    ngx_int_t          event;
    ngx_socket_t       s;
    ngx_connection_t  *c;

    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ERR, be->log, ngx_socket_errno,
                      "infergate_backend \"%V\": socket() failed",
                      &be->name);
        return NGX_ERROR;
    }

    /* a unix socket connects at once or not at all */

    if (connect(s, (struct sockaddr *) &be->sun, be->sun_len) == -1) {
        if (be->failures++ == 0) {
            ngx_log_error(NGX_LOG_WARN, be->log, ngx_socket_errno,
                          "infergate_backend \"%V\": connect() to \"%V\" "
                          "failed, retrying", &be->name, &be->path);
        }

        close(s);
        return NGX_ERROR;
    }

    c = ngx_get_connection(s, be->log);
    if (c == NULL) {
        close(s);
        return NGX_ERROR;
    }

    c->data = be;
    c->read->handler = ngx_http_ig_backend_ctl_handler;
    c->write->handler = ngx_http_ig_backend_dummy;
    c->read->log = be->log;
    c->write->log = be->log;

    event = (ngx_event_flags & NGX_USE_CLEAR_EVENT) ? NGX_CLEAR_EVENT
                                                    : NGX_LEVEL_EVENT;

    if (ngx_add_event(c->read, NGX_READ_EVENT, event) != NGX_OK) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    be->ctl = c;

    /* HELLO may be waiting already */
    ngx_http_ig_backend_ctl_handler(c->read);

    return NGX_OK;
}


static void
ngx_http_ig_backend_retry(ngx_http_ig_backend_t *be)
{
    if (be->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!be->reconnect.timer_set) {
        ngx_add_timer(&be->reconnect, be->backoff);
    }

    be->backoff = ngx_min(be->backoff * 2, NGX_HTTP_IG_BACKOFF_MAX);
}


static void
ngx_http_ig_backend_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_ig_backend_t  *be = ev->data;

    if (be->ctl) {
        return;
    }

    ngx_http_ig_metrics_add(IG_MC_BACKEND_RECONNECT, 1);

    if (ngx_http_ig_backend_connect(be) != NGX_OK) {
        ngx_http_ig_backend_retry(be);
    }
}


static void
ngx_http_ig_backend_dummy(ngx_event_t *ev)
{
}


static void
ngx_http_ig_backend_ctl_handler(ngx_event_t *ev)
{
    ssize_t                 n;
    uint32_t                type;
    ngx_err_t               err;
    ngx_uint_t              i, nfds;
    struct iovec            iov;
    struct msghdr           mh;
    struct cmsghdr         *cm;
    ngx_connection_t       *c;
    ngx_http_ig_backend_t  *be;
    int                     fd, fds[4];

    union {
        struct cmsghdr      cm;
        char                space[CMSG_SPACE(4 * sizeof(int))];
    } cmsg;

    c = ev->data;
    be = c->data;

    for ( ;; ) {

        iov.iov_base = be->msg;
        iov.iov_len = NGX_HTTP_IG_MSG_MAX;

        ngx_memzero(&mh, sizeof(struct msghdr));
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = &cmsg;
        mh.msg_controllen = sizeof(cmsg);

        n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

        if (n == -1) {
            err = ngx_socket_errno;

            if (err == NGX_EAGAIN || err == NGX_EINTR) {
                return;
            }

            ngx_http_ig_backend_down(be, "recvmsg() failed", err);
            return;
        }

        nfds = 0;

        for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                for (i = 0;
                     i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                     i++)
                {
                    ngx_memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
                               sizeof(int));

                    if (nfds < 4) {
                        fds[nfds++] = fd;

                    } else {
                        close(fd);
                    }
                }
            }
        }

        if (n == 0) {
            for (i = 0; i < nfds; i++) {
                close(fds[i]);
            }

            ngx_http_ig_backend_down(be, "the backend closed the control "
                                     "socket", 0);
            return;
        }

        if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
            || (size_t) n < sizeof(uint32_t))
        {
            for (i = 0; i < nfds; i++) {
                close(fds[i]);
            }

            ngx_http_ig_backend_down(be, "malformed control message", 0);
            return;
        }

        ngx_memcpy(&type, be->msg, sizeof(uint32_t));

        if (type == IG_CTL_HELLO) {
            if (ngx_http_ig_backend_hello(be, be->msg, n, fds, nfds)
                != NGX_OK)
            {
                ngx_http_ig_backend_down(be, "bad HELLO", 0);
                return;
            }

            continue;
        }

        for (i = 0; i < nfds; i++) {
            close(fds[i]);
        }

        if (type == IG_CTL_MODELS) {
            if (ngx_http_ig_backend_models_msg(be, be->msg, n) != NGX_OK) {
                ngx_http_ig_backend_down(be, "bad model list", 0);
                return;
            }

            /* fresh figures at once after an attach or a reload */
            ngx_http_ig_backend_stats_req(be);

            continue;
        }

        if (type == IG_CTL_STATS) {
            ngx_http_ig_backend_stats_msg(be, be->msg, n);
            continue;
        }

        /* anything newer: not used here */
    }
}


static ngx_int_t
ngx_http_ig_backend_hello(ngx_http_ig_backend_t *be, u_char *msg,
    size_t len, int *fds, ngx_uint_t nfds)
{
    void              *base;
    uint32_t           i;
    ngx_int_t          event;
    ngx_file_info_t    fi;
    ig_ctl_hello_t     hello;
    ig_ring_region_t   rg, want;
    ngx_connection_t  *c;

    /* a version of its own first: the size of the rest depends on it */
    if (len >= 2 * sizeof(uint32_t)) {
        ngx_memcpy(&i, msg + sizeof(uint32_t), sizeof(uint32_t));

        if (i != IG_RING_VERSION) {
            ig_ctl_stats_req_t  nak;

            ngx_log_error(NGX_LOG_ERR, be->log, 0,
                          "infergate_backend \"%V\": the backend speaks "
                          "ring protocol version %uD, this module %d: "
                          "install the module and infergate-backend from "
                          "one build", &be->name, i, IG_RING_VERSION);

            /* so that the backend logs it too */
            nak.type = IG_CTL_VERSION;
            nak.version = IG_RING_VERSION;

            if (be->ctl
                && send(be->ctl->fd, &nak, sizeof(nak),
                        MSG_NOSIGNAL | MSG_DONTWAIT)
                   != (ssize_t) sizeof(nak))
            {
                /* it sees the close alone */
            }

            goto failed;
        }
    }

    if (be->mapped || len != sizeof(ig_ctl_hello_t) || nfds != 3) {
        ngx_log_error(NGX_LOG_ERR, be->log, 0,
                      "infergate_backend \"%V\": unexpected HELLO (%uz "
                      "bytes, %ui fds)", &be->name, len, nfds);
        goto failed;
    }

    ngx_memcpy(&hello, msg, sizeof(ig_ctl_hello_t));

    if (hello.version != IG_RING_VERSION
        || hello.region.region_bytes < sizeof(ig_ring_region_t)
        || hello.region.region_bytes > ((uint64_t) 1 << 40))
    {
        ngx_log_error(NGX_LOG_ERR, be->log, 0,
                      "infergate_backend \"%V\": HELLO version %uD or "
                      "region size not supported", &be->name,
                      hello.version);
        goto failed;
    }

    if (ngx_fd_info(fds[0], &fi) == NGX_FILE_ERROR
        || (uint64_t) ngx_file_size(&fi) < hello.region.region_bytes)
    {
        ngx_log_error(NGX_LOG_ERR, be->log, ngx_errno,
                      "infergate_backend \"%V\": the region is smaller "
                      "than announced", &be->name);
        goto failed;
    }

    base = mmap(NULL, hello.region.region_bytes, PROT_READ | PROT_WRITE,
                MAP_SHARED, fds[0], 0);
    if (base == MAP_FAILED) {
        ngx_log_error(NGX_LOG_ERR, be->log, ngx_errno,
                      "infergate_backend \"%V\": mmap() failed", &be->name);
        goto failed;
    }

    close(fds[0]);
    fds[0] = -1;

    be->base = base;
    be->map_len = hello.region.region_bytes;
    be->mapped = 1;

    /* the mapped header wins; it must be the layout its numbers give */

    ngx_memcpy(&rg, base, sizeof(ig_ring_region_t));

    if (rg.magic != IG_RING_MAGIC
        || rg.version != IG_RING_VERSION
        || rg.header_bytes != sizeof(ig_ring_region_t)
        || rg.generation != hello.generation
        || rg.region_bytes != hello.region.region_bytes
        || rg.nclients != 1                   /* ours alone: version 2 */
        || ig_ring_layout(&want, rg.nclients, rg.nslots, rg.slot_bytes,
                          rg.generation) == 0
        || ngx_memcmp(&want, &rg, sizeof(ig_ring_region_t)) != 0)
    {
        ngx_log_error(NGX_LOG_ERR, be->log, 0,
                      "infergate_backend \"%V\": the shared region's header "
                      "does not match HELLO", &be->name);
        goto failed;
    }

    be->rg = rg;
    be->client = hello.client;          /* the backend's number, for logs */
    be->sq = ig_ring_sq(base, &be->rg, 0);
    be->cq = ig_ring_cq(base, &be->rg, 0);
    be->slot_floats = ig_ring_slot_floats(&be->rg);

    /* we start asleep on cq: the backend's first answer rings */
    __atomic_store_n(&be->cq->sleeping, 1, __ATOMIC_RELAXED);

    be->nfree = 0;

    for (i = rg.nslots; i > 0; i--) {
        be->state[i - 1] = NGX_HTTP_IG_SLOT_FREE;
        be->waiters[i - 1] = NULL;
        be->free[be->nfree++] = i - 1;
    }

    be->limit = be->max_inflight ? ngx_min(be->max_inflight, rg.nslots)
                                 : rg.nslots;

    be->sq_fd = fds[1];
    fds[1] = -1;

    c = ngx_get_connection(fds[2], be->log);
    if (c == NULL) {
        goto failed;
    }

    fds[2] = -1;

    c->data = be;
    c->read->handler = ngx_http_ig_backend_cq_handler;
    c->write->handler = ngx_http_ig_backend_dummy;
    c->read->log = be->log;
    c->write->log = be->log;

    be->cqc = c;

    if (ngx_nonblocking(c->fd) == -1) {
        goto failed;
    }

    event = (ngx_event_flags & NGX_USE_CLEAR_EVENT) ? NGX_CLEAR_EVENT
                                                    : NGX_LEVEL_EVENT;

    if (ngx_add_event(c->read, NGX_READ_EVENT, event) != NGX_OK) {
        goto failed;
    }

    be->failures = 0;
    be->backoff = NGX_HTTP_IG_BACKOFF_MIN;

    be->attached = 1;
    ngx_http_ig_metrics_gauge_add(IG_MG_BACKEND_CONNECTED, 1);

    ngx_log_error(NGX_LOG_NOTICE, be->log, 0,
                  "infergate_backend \"%V\": connected to pid %uD, "
                  "generation %uL, client %uD, %uD slots of %uL bytes",
                  &be->name, hello.pid, rg.generation, be->client,
                  rg.nslots, rg.slot_bytes);

    return NGX_OK;

failed:

    for (i = 0; i < nfds; i++) {
        if (fds[i] != -1) {
            close(fds[i]);
        }
    }

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_ig_backend_models_msg(ngx_http_ig_backend_t *be, u_char *msg,
    size_t len)
{
    uint32_t          i;
    ig_ctl_model_t   *m;
    ig_ctl_models_t   hdr;

    if (len < sizeof(ig_ctl_models_t)) {
        return NGX_ERROR;
    }

    ngx_memcpy(&hdr, msg, sizeof(ig_ctl_models_t));

    if (hdr.nmodels > IG_RING_MAX_MODELS
        || len != sizeof(ig_ctl_models_t)
                  + hdr.nmodels * sizeof(ig_ctl_model_t))
    {
        ngx_log_error(NGX_LOG_ERR, be->log, 0,
                      "infergate_backend \"%V\": model list of %uz bytes "
                      "for %uD models", &be->name, len, hdr.nmodels);
        return NGX_ERROR;
    }

    ngx_memcpy(be->models, msg, len);

    /* terminate every string and check what the codec relies on */

    be->models->device[sizeof(be->models->device) - 1] = '\0';

    for (i = 0; i < be->models->nmodels; i++) {
        m = &be->models->models[i];

        m->name[IG_MODEL_NAME_MAX - 1] = '\0';
        m->version[IG_RING_VERSION_MAX - 1] = '\0';
        m->meta.platform[sizeof(m->meta.platform) - 1] = '\0';
        m->meta.input.name[IG_MODEL_NAME_MAX - 1] = '\0';
        m->meta.output.name[IG_MODEL_NAME_MAX - 1] = '\0';

        if (m->meta.input.ndims > IG_MODEL_MAX_DIMS
            || m->meta.output.ndims > IG_MODEL_MAX_DIMS
            || m->meta.nfeatures == 0 || m->meta.noutputs == 0)
        {
            ngx_log_error(NGX_LOG_WARN, be->log, 0,
                          "infergate_backend \"%V\": model \"%s\" has bad "
                          "metadata, ignored", &be->name, m->name);
            m->ready = 0;
            m->name[0] = '\0';
        }
    }

    if (!be->have_models) {
        /* a member back (or new) after worker start: slow start */
        be->ready_since = be->initial ? 0 : ngx_current_msec;

        if (!be->initial && be->ready_since == 0) {
            be->ready_since = 1;
        }
    }

    be->have_models = 1;
    be->listed = 1;

    ngx_http_ig_backend_pool_update(be->pool);

    ngx_log_error(NGX_LOG_INFO, be->log, 0,
                  "infergate_backend \"%V\": %uD models on %s", &be->name,
                  be->models->nmodels, be->models->device);

    return NGX_OK;
}


/* the infergate_backend NAME (a pool member's is "NAME/i") */

ngx_str_t *
ngx_http_ig_backend_name(ngx_http_ig_backend_t *be)
{
    return &be->name;
}


ngx_uint_t
ngx_http_ig_backend_ready(ngx_http_ig_backend_t *be)
{
    if (be->peers) {
        return be->pool_ready;
    }

    return be->ctl != NULL && be->mapped && be->have_models;
}


const ig_ctl_models_t *
ngx_http_ig_backend_models(ngx_http_ig_backend_t *be)
{
    if (be->peers) {
        return be->pool_ready ? be->pool_models : NULL;
    }

    return ngx_http_ig_backend_ready(be) ? be->models : NULL;
}


const ig_ctl_model_t *
ngx_http_ig_backend_model(ngx_http_ig_backend_t *be, ngx_str_t *name,
    ngx_str_t *version)
{
    return ngx_http_ig_backend_lookup(ngx_http_ig_backend_models(be), name,
                                      version);
}


static const ig_ctl_model_t *
ngx_http_ig_backend_lookup(const ig_ctl_models_t *ms, ngx_str_t *name,
    ngx_str_t *version)
{
    uint32_t               i;
    ngx_int_t              v, best_v;
    const ig_ctl_model_t  *m, *best;

    if (ms == NULL) {
        return NULL;
    }

    best = NULL;
    best_v = -1;

    for (i = 0; i < ms->nmodels; i++) {
        m = &ms->models[i];

        if (ngx_strlen(m->name) != name->len
            || ngx_strncmp(m->name, name->data, name->len) != 0)
        {
            continue;
        }

        if (version && version->len) {
            if (ngx_strlen(m->version) == version->len
                && ngx_strncmp(m->version, version->data, version->len) == 0)
            {
                return m;
            }

            continue;
        }

        v = ngx_atoi((u_char *) m->version, ngx_strlen(m->version));

        if (best == NULL || v >= best_v) {
            best = m;
            best_v = v;
        }
    }

    return best;
}


/*
 * BREAKER HOOK.  The circuit breakers (ngx_http_infergate_breaker.c)
 * answer here whether the breaker of the request's location holds this
 * model open (the default key is the model); the pool's readiness
 * (ngx_http_ig_backend_model_ready()) is then false.  Half-open is not
 * open: the probes need traffic.
 */

static ngx_uint_t
ngx_http_ig_backend_breaker_open(ngx_http_request_t *r,
    ngx_http_ig_backend_t *pool, ngx_str_t *name, ngx_str_t *version)
{
    return ngx_http_ig_breaker_open(r, name);
}


ngx_uint_t
ngx_http_ig_backend_model_ready(ngx_http_request_t *r,
    ngx_http_ig_backend_t *be, ngx_str_t *name, ngx_str_t *version)
{
    const ig_ctl_model_t  *m;

    m = ngx_http_ig_backend_model(be, name, version);

    return m != NULL && m->ready
           && !ngx_http_ig_backend_breaker_open(r, be, name, version);
}


/*
 * The pool's model list: the union of the members' lists by name and
 * version.  An entry comes from the first ready member that has it ready
 * (else the first ready member that lists it); a model only a member that
 * is down listed (its last list) stays, not ready, so that it answers 503
 * "not ready" rather than 404 until that member is back.  Its id is its
 * index here.  Rebuilt whenever a member's list arrives or a member goes
 * down.
 */

static void
ngx_http_ig_backend_pool_update(ngx_http_ig_backend_t *pool)
{
    uint32_t                j, k;
    ngx_uint_t              i;
    ig_ctl_model_t         *d;
    ig_ctl_models_t        *ms;
    const ig_ctl_model_t   *m;
    ngx_http_ig_backend_t  *be;

    if (pool == NULL || pool->pool_models == NULL) {
        return;
    }

    ms = pool->pool_models;
    pool->pool_ready = 0;

    for (i = 0; i < 2 * pool->npeers; i++) {
        be = pool->peers[i % pool->npeers];

        /* the ready members first, then the last lists of the others */

        if (i < pool->npeers) {
            if (!ngx_http_ig_backend_ready(be)) {
                continue;
            }

        } else if (!pool->pool_ready || !be->listed
                   || ngx_http_ig_backend_ready(be))
        {
            continue;
        }

        if (!pool->pool_ready) {
            ngx_memcpy(ms, be->models, sizeof(ig_ctl_models_t));
            ms->nmodels = 0;
            pool->pool_ready = 1;
        }

        for (j = 0; j < be->models->nmodels; j++) {
            m = &be->models->models[j];

            if (m->name[0] == '\0') {
                continue;
            }

            for (k = 0; k < ms->nmodels; k++) {
                d = &ms->models[k];

                if (ngx_strcmp(d->name, m->name) == 0
                    && ngx_strcmp(d->version, m->version) == 0)
                {
                    break;
                }
            }

            if (k < ms->nmodels) {
                if (!d->ready && m->ready && i < pool->npeers) {
                    *d = *m;
                    d->id = k;
                }

                continue;
            }

            if (ms->nmodels == IG_RING_MAX_MODELS) {
                continue;
            }

            d = &ms->models[ms->nmodels];
            *d = *m;
            d->id = ms->nmodels++;

            if (i >= pool->npeers) {
                d->ready = 0;                   /* its member is down */
            }
        }
    }
}


/* the member's entry for exactly this model, when it can run the rows */

static const ig_ctl_model_t *
ngx_http_ig_backend_serves(ngx_http_ig_backend_t *be, const char *name,
    const char *version, uint32_t nfeatures, uint32_t noutputs)
{
    uint32_t               i;
    const ig_ctl_model_t  *m;

    if (!ngx_http_ig_backend_ready(be)) {
        return NULL;
    }

    for (i = 0; i < be->models->nmodels; i++) {
        m = &be->models->models[i];

        if (m->ready
            && ngx_strcmp(m->name, name) == 0
            && ngx_strcmp(m->version, version) == 0
            && m->meta.nfeatures == nfeatures
            && m->meta.noutputs == noutputs)
        {
            return m;
        }
    }

    return NULL;
}


/*
 * The slow start weight, 1 .. NGX_HTTP_IG_WEIGHT: it grows linearly over
 * slow_start from the moment a member that was not there at worker start
 * (or had gone) sent its model list.  A pool of one ignores it, as nginx
 * does for an upstream of one server.
 */

static ngx_uint_t
ngx_http_ig_backend_weight(ngx_http_ig_backend_t *pool,
    ngx_http_ig_backend_t *be)
{
    ngx_msec_t  elapsed;

    if (be->ready_since == 0 || pool->slow_start == 0 || pool->npeers == 1) {
        return NGX_HTTP_IG_WEIGHT;
    }

    elapsed = ngx_current_msec - be->ready_since;

    if (elapsed >= pool->slow_start) {
        be->ready_since = 0;
        return NGX_HTTP_IG_WEIGHT;
    }

    return ngx_max(1, NGX_HTTP_IG_WEIGHT * elapsed / pool->slow_start);
}


/*
 * The member for br: ready, a free slot under max_inflight, serving
 * br's model when br->model is set, with room for need floats, not
 * except.  A member in slow start (weight w < NGX_HTTP_IG_WEIGHT) is
 * offered a request only when its credit, which grows by w with each
 * request the worker routes, reaches NGX_HTTP_IG_WEIGHT (so at most
 * w / NGX_HTTP_IG_WEIGHT of them), unless no other member can take it.
 * Among those offered: the fewest rows in flight per weight (rows_a * w_b
 * < rows_b * w_a, nginx's least_conn), ties by smooth weighted round
 * robin.  *busy: a candidate was skipped for want of a slot.
 */

static ngx_http_ig_backend_t *
ngx_http_ig_backend_pick(ngx_http_ig_backend_t *pool,
    ngx_http_ig_backend_req_t *br, ngx_http_ig_backend_t *except,
    size_t need, ngx_uint_t *busy)
{
    ngx_int_t               total;
    ngx_uint_t              i, w, best_w, many, pass, gated;
    ngx_http_ig_backend_t  *be, *best;
    ngx_uint_t              weight[NGX_HTTP_IG_POOL_MAX];
    ngx_uint_t              ok[NGX_HTTP_IG_POOL_MAX];

    gated = 0;

    for (i = 0; i < pool->npeers; i++) {
        be = pool->peers[i];
        ok[i] = 0;

        if (be == except || !ngx_http_ig_backend_ready(be)) {
            continue;
        }

        if (br->model[0]
            && ngx_http_ig_backend_serves(be, br->model, br->version,
                                          br->nfeatures, br->noutputs)
               == NULL)
        {
            continue;
        }

        if (need > be->slot_floats) {
            continue;
        }

        if (be->nfree == 0 || be->rg.nslots - be->nfree >= be->limit) {
            *busy = 1;
            continue;
        }

        w = ngx_http_ig_backend_weight(pool, be);
        weight[i] = w;
        ok[i] = 1;

        if (w < NGX_HTTP_IG_WEIGHT) {
            be->credit = ngx_min(be->credit + w, NGX_HTTP_IG_WEIGHT);

            if (be->credit < NGX_HTTP_IG_WEIGHT) {
                ok[i] = 2;                     /* only if none else can */
                gated = 1;
            }
        }
    }

    best = NULL;
    best_w = 0;
    many = 0;

    for (pass = 1; pass <= 2 && best == NULL; pass++) {

        if (pass == 2 && !gated) {
            break;
        }

        for (i = 0; i < pool->npeers; i++) {
            if (ok[i] == 0 || ok[i] > pass) {
                continue;
            }

            be = pool->peers[i];
            w = weight[i];

            if (best == NULL || be->rows * best_w < best->rows * w) {
                best = be;
                best_w = w;
                many = 0;

            } else if (be->rows * best_w == best->rows * w) {
                many = 1;
            }
        }
    }

    pass--;

    if (best != NULL && many) {

        /* ties: smooth weighted round robin among the tied */

        total = 0;
        be = best;
        best = NULL;

        for (i = 0; i < pool->npeers; i++) {
            if (ok[i] == 0 || ok[i] > pass
                || pool->peers[i]->rows * best_w != be->rows * weight[i])
            {
                continue;
            }

            pool->peers[i]->current += weight[i];
            total += weight[i];

            if (best == NULL || pool->peers[i]->current > best->current) {
                best = pool->peers[i];
            }
        }

        best->current -= total;
    }

    if (best && best->credit >= NGX_HTTP_IG_WEIGHT) {
        best->credit -= NGX_HTTP_IG_WEIGHT;
    }

    return best;
}


size_t
ngx_http_ig_backend_slot_floats(ngx_http_ig_backend_t *be)
{
    size_t      n;
    ngx_uint_t  i;

    if (be->peers == NULL) {
        return be->mapped ? (size_t) be->slot_floats : 0;
    }

    n = 0;

    for (i = 0; i < be->npeers; i++) {
        if (ngx_http_ig_backend_ready(be->peers[i])
            && (n == 0 || be->peers[i]->slot_floats < n))
        {
            n = (size_t) be->peers[i]->slot_floats;
        }
    }

    return n;
}


/* a free slot of be for br (checked by the caller) */

static ngx_int_t
ngx_http_ig_backend_take(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br)
{
    uint32_t  index;

    if (be->nfree == 0) {
        return NGX_BUSY;
    }

    index = be->free[--be->nfree];

    be->state[index] = NGX_HTTP_IG_SLOT_RESERVED;
    be->waiters[index] = br;

    br->backend = be;
    br->index = index;
    br->slot = ig_ring_slot(be->base, &be->rg, 0, index);
    br->reserved = 1;
    br->waiting = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_ig_backend_reserve(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br, ngx_http_request_t *r)
{
    return ngx_http_ig_backend_reserve_model(be, br, r, NULL);
}


ngx_int_t
ngx_http_ig_backend_reserve_model(ngx_http_ig_backend_t *be,
    ngx_http_ig_backend_req_t *br, ngx_http_request_t *r,
    const ig_ctl_model_t *m)
{
    ngx_uint_t              busy;
    ngx_pool_cleanup_t     *cln;
    ngx_http_ig_backend_t  *member;

    if (!ngx_http_ig_backend_ready(be)) {
        return NGX_DECLINED;
    }

    br->model[0] = '\0';

    if (m && be->peers) {
        ngx_memcpy(br->model, m->name, IG_MODEL_NAME_MAX);
        ngx_memcpy(br->version, m->version, IG_RING_VERSION_MAX);
        br->nfeatures = m->meta.nfeatures;
        br->noutputs = m->meta.noutputs;
    }

    busy = 0;

    if (be->peers) {
        member = ngx_http_ig_backend_pick(be, br, NULL, 0, &busy);

    } else {
        member = be;

        if (be->nfree == 0 || be->rg.nslots - be->nfree >= be->limit) {
            member = NULL;
            busy = 1;
        }
    }

    if (member == NULL) {
        if (busy) {
            ngx_http_ig_backend_shed(r);
            return NGX_BUSY;
        }

        return NGX_DECLINED;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_http_ig_backend_take(member, br);

    br->request = r;
    br->retried = 0;

    cln->handler = ngx_http_ig_backend_req_cleanup;
    cln->data = br;

    return NGX_OK;
}


void
ngx_http_ig_backend_release(ngx_http_ig_backend_req_t *br)
{
    ngx_http_ig_backend_t  *be = br->backend;

    if (!br->reserved || br->waiting) {
        return;
    }

    br->reserved = 0;

    be->state[br->index] = NGX_HTTP_IG_SLOT_FREE;
    be->waiters[br->index] = NULL;
    be->free[be->nfree++] = br->index;
}


ngx_int_t
ngx_http_ig_backend_submit(ngx_http_ig_backend_req_t *br,
    uint32_t model_id, uint32_t rows, uint32_t in_floats)
{
    ngx_http_ig_backend_t  *be, *pool, *to;
    const ig_ctl_model_t   *m, *pm;
    ngx_uint_t              busy;

    be = br->backend;
    pool = be->pool;

    br->rows = rows;
    br->in_floats = in_floats;

    /* model_id is an index of the pool's list: the member's own id */

    if (pool == NULL || !pool->pool_ready
        || model_id >= pool->pool_models->nmodels)
    {
        ngx_log_error(NGX_LOG_ALERT, be->log, 0,
                      "infergate_backend \"%V\": submit of an unknown "
                      "model id %uD", &be->name, model_id);
        ngx_http_ig_backend_release(br);
        return NGX_ERROR;
    }

    pm = &pool->pool_models->models[model_id];

    ngx_memcpy(br->model, pm->name, IG_MODEL_NAME_MAX);
    ngx_memcpy(br->version, pm->version, IG_RING_VERSION_MAX);
    br->nfeatures = pm->meta.nfeatures;
    br->noutputs = pm->meta.noutputs;

    m = ngx_http_ig_backend_serves(be, br->model, br->version,
                                   br->nfeatures, br->noutputs);
    if (m) {
        return ngx_http_ig_backend_push(br, m->id);
    }

    /* reserved without the model, on a member that lacks it: move */

    busy = 0;
    to = ngx_http_ig_backend_pick(pool, br, be,
                                  ngx_max(in_floats,
                                          (size_t) rows * br->noutputs),
                                  &busy);

    if (to == NULL || ngx_http_ig_backend_move(br, br->slot, to) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, be->log, 0,
                      "infergate_backend \"%V\": no member can take model "
                      "\"%s\" now", &pool->name, br->model);
        ngx_http_ig_backend_release(br);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Takes a slot on "to" for br and copies the request out of "from" (the
 * old slot, still mapped), then submits it there.  The old slot is left
 * to the caller: released when it was only reserved, freed by the caller
 * when it was submitted.
 */

static ngx_int_t
ngx_http_ig_backend_move(ngx_http_ig_backend_req_t *br, ig_ring_slot_t *from,
    ngx_http_ig_backend_t *to)
{
    uint32_t                index;
    ngx_http_ig_backend_t  *old;
    const ig_ctl_model_t   *m;

    m = ngx_http_ig_backend_serves(to, br->model, br->version,
                                   br->nfeatures, br->noutputs);
    if (m == NULL || br->in_floats > to->slot_floats) {
        return NGX_DECLINED;
    }

    old = br->backend;

    /* an only reserved slot goes back to its member first */

    if (br->reserved && !br->waiting) {
        index = br->index;

        if (ngx_http_ig_backend_take(to, br) != NGX_OK) {
            return NGX_DECLINED;
        }

        ngx_memcpy(br->slot->data, from->data,
                   (size_t) br->in_floats * sizeof(float));

        old->state[index] = NGX_HTTP_IG_SLOT_FREE;
        old->waiters[index] = NULL;
        old->free[old->nfree++] = index;

    } else {
        if (ngx_http_ig_backend_take(to, br) != NGX_OK) {
            return NGX_DECLINED;
        }

        ngx_memcpy(br->slot->data, from->data,
                   (size_t) br->in_floats * sizeof(float));
    }

    return ngx_http_ig_backend_push(br, m->id);
}


/*
 * A member died (or is shutting down) with br in flight: br moves once to
 * another member serving its model, within the time left on its timer.
 */

static ngx_int_t
ngx_http_ig_backend_failover(ngx_http_ig_backend_req_t *br,
    ig_ring_slot_t *from)
{
    ngx_uint_t              busy;
    ngx_http_ig_backend_t  *be, *pool, *to;

    be = br->backend;
    pool = be->pool;

    if (br->retried || pool == NULL || pool->npeers < 2
        || br->model[0] == '\0' || br->request == NULL)
    {
        return NGX_DECLINED;
    }

    if (br->timer.timer_set
        && (ngx_msec_int_t) (br->timer.timer.key - ngx_current_msec) <= 0)
    {
        return NGX_DECLINED;
    }

    busy = 0;
    to = ngx_http_ig_backend_pick(pool, br, be,
                                  ngx_max(br->in_floats,
                                          (size_t) br->rows * br->noutputs),
                                  &busy);
    if (to == NULL) {
        return NGX_DECLINED;
    }

    br->retried = 1;
    br->waiting = 0;
    br->reserved = 0;

    if (ngx_http_ig_backend_move(br, from, to) != NGX_OK) {
        br->backend = be;
        return NGX_DECLINED;
    }

    ngx_http_ig_metrics_add(IG_MC_BACKEND_RETRY, 1);

    ngx_log_error(NGX_LOG_INFO, br->request->connection->log, 0,
                  "infergate_backend \"%V\": request moved to \"%V\"",
                  &be->name, &to->name);

    return NGX_OK;
}


/* pushes br's slot (data written, br->backend the member) on sq */

static ngx_int_t
ngx_http_ig_backend_push(ngx_http_ig_backend_req_t *br, uint32_t model_id)
{
    ig_ring_slot_t         *slot;
    ngx_http_ig_backend_t  *be = br->backend;

    slot = br->slot;

    br->tag = ++be->next_tag;
    br->submit_ns = ig_clock_ns();

    slot->tag = br->tag;
    slot->model_id = model_id;
    slot->rows = br->rows;
    slot->in_floats = br->in_floats;
    slot->reserved0 = 0;
    slot->submit_ns = br->submit_ns;
    slot->status = 0;
    slot->out_floats = 0;
    slot->batch_rows = 0;
    slot->queue_us = 0;
    slot->run_us = 0;

    if (ig_ring_push(be->sq, be->rg.nslots, br->index) != 0) {
        /* cannot happen: a slot is on the queue at most once */
        ngx_log_error(NGX_LOG_ALERT, be->log, 0,
                      "infergate_backend \"%V\": submission queue full",
                      &be->name);
        ngx_http_ig_backend_release(br);
        return NGX_ERROR;
    }

    be->tags[br->index] = br->tag;
    be->state[br->index] = NGX_HTTP_IG_SLOT_SUBMITTED;
    be->slot_rows[br->index] = br->rows;
    be->rows += br->rows;
    br->waiting = 1;

    ngx_http_ig_metrics_gauge_add(IG_MG_BACKEND_INFLIGHT, 1);

    /*
     * One doorbell for every push of this event loop iteration: the bell
     * is a posted event, run after the iteration's I/O handlers.
     */

    if (!be->bell.posted) {
        ngx_post_event(&be->bell, &ngx_posted_events);
    }

    /* a retry keeps the timer: it has the request's remaining time */

    if (!br->timer.timer_set) {
        br->timer.handler = ngx_http_ig_backend_timeout;
        br->timer.data = br;
        br->timer.log = br->request->connection->log;

        ngx_add_timer(&br->timer, be->timeout);
    }

    return NGX_OK;
}


/*
 * The submission doorbell, once per event loop iteration that pushed:
 * written only when the backend's word asks for it; while it drains our
 * queue it sees the pushes without one (lib/ig_ring.h).
 */

static void
ngx_http_ig_backend_bell_handler(ngx_event_t *ev)
{
    uint64_t                one;
    ngx_http_ig_backend_t  *be;

    be = ev->data;

    if (!be->mapped || be->sq_fd == NGX_INVALID_FILE
        || !ig_ring_need_wake(be->sq))
    {
        return;
    }

    one = 1;

    if (write(be->sq_fd, &one, sizeof(uint64_t)) != sizeof(uint64_t)
        && ngx_errno != NGX_EAGAIN)
    {
        ngx_log_error(NGX_LOG_ERR, be->log, ngx_errno,
                      "infergate_backend \"%V\": doorbell write() failed",
                      &be->name);
    }
}


/* a submitted slot came back (or its member is gone): free it */

static void
ngx_http_ig_backend_slot_done(ngx_http_ig_backend_t *be, uint32_t index)
{
    be->rows -= ngx_min(be->rows, be->slot_rows[index]);
    be->slot_rows[index] = 0;

    be->state[index] = NGX_HTTP_IG_SLOT_FREE;
    ngx_http_ig_metrics_gauge_add(IG_MG_BACKEND_INFLIGHT, -1);
}


static void
ngx_http_ig_backend_cq_handler(ngx_event_t *ev)
{
    ssize_t                     n;
    uint32_t                    index;
    uint64_t                    count;
    ngx_int_t                   rc;
    ngx_connection_t           *c;
    ngx_http_ig_backend_t      *be;
    ngx_http_ig_backend_req_t  *br;

    c = ev->data;
    be = c->data;

    /*
     * Edge-triggered (epoll's EPOLLET), every doorbell is an event and the
     * counter need not be read; level-triggered methods reset it first,
     * so that a push after the drain rings again.
     */

    if (!(ngx_event_flags & NGX_USE_CLEAR_EVENT)) {
        do {
            n = read(c->fd, &count, sizeof(uint64_t));
        } while (n == -1 && ngx_errno == NGX_EINTR);
    }

    if (be->mapped) {
        ig_ring_awake(be->cq);        /* draining: no doorbells needed */
    }

    for ( ;; ) {

        if (!be->mapped) {
            return;
        }

        rc = ig_ring_pop(be->cq, be->rg.nslots, &index);

        if (rc == -1) {
            /* empty: ask for a doorbell, then look once more */
            if (ig_ring_sleep(be->cq, be->cq->head)) {
                continue;
            }

            return;
        }

        if (rc == -2 || index >= be->rg.nslots
            || be->state[index] != NGX_HTTP_IG_SLOT_SUBMITTED)
        {
            ngx_http_ig_backend_down(be, "corrupt completion queue", 0);
            return;
        }

        br = be->waiters[index];

        if (br && ig_ring_slot(be->base, &be->rg, 0, index)->tag
                  != be->tags[index])
        {
            ngx_log_error(NGX_LOG_ERR, be->log, 0,
                          "infergate_backend \"%V\": slot %uD came back "
                          "with a wrong tag", &be->name, index);
            ngx_http_ig_backend_down(be, "corrupt completion", 0);
            return;
        }

        be->waiters[index] = NULL;

        if (br
            && (br->slot->status == IG_RING_ESHUTDOWN
                || br->slot->status == IG_RING_ENOMODEL)
            && ngx_http_ig_backend_failover(br, br->slot) == NGX_OK)
        {
            /* the member stops or unloaded the model: br went on */
            br = NULL;
        }

        if (br) {
            br->done_ns = ig_clock_ns();

            if (br->slot->status == IG_RING_EQUEUE_FULL) {
                ngx_http_ig_backend_shed(br->request);
            }

            ngx_http_ig_backend_finish(br, NGX_HTTP_IG_BE_DONE);
        }

        /* the handler has read the output: the slot is free again */

        if (be->mapped && be->state[index] == NGX_HTTP_IG_SLOT_SUBMITTED) {
            ngx_http_ig_backend_slot_done(be, index);
            be->free[be->nfree++] = index;
        }
    }
}


/* detaches br from its slot and runs its handler once */

static void
ngx_http_ig_backend_finish(ngx_http_ig_backend_req_t *br, ngx_uint_t how)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    br->waiting = 0;
    br->reserved = 0;

    if (br->timer.timer_set) {
        ngx_del_timer(&br->timer);
    }

    r = br->request;
    c = r->connection;

    br->handler(br, how);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_ig_backend_timeout(ngx_event_t *ev)
{
    ngx_http_ig_backend_req_t  *br = ev->data;

    /* the slot stays with the backend until it comes back on cq */

    if (br->waiting && br->backend->waiters[br->index] == br) {
        br->backend->waiters[br->index] = NULL;
    }

    ngx_http_ig_backend_finish(br, NGX_HTTP_IG_BE_TIMEOUT);
}


static void
ngx_http_ig_backend_req_cleanup(void *data)
{
    ngx_http_ig_backend_req_t  *br = data;

    ngx_http_ig_backend_t  *be = br->backend;

    if (br->timer.timer_set) {
        ngx_del_timer(&br->timer);
    }

    if (br->waiting) {
        /* finalized early: a late completion must only free the slot */
        if (be->waiters[br->index] == br) {
            be->waiters[br->index] = NULL;
        }

        br->waiting = 0;
        br->reserved = 0;
        return;
    }

    if (br->reserved) {
        ngx_http_ig_backend_release(br);
    }
}


/*
 * The control socket is gone (or the worker exits): every in-flight
 * request fails at once, the region is unmapped, and a reconnect is
 * scheduled.  why == NULL: a quiet close at exit.
 */

static void
ngx_http_ig_backend_down(ngx_http_ig_backend_t *be, const char *why,
    ngx_err_t err)
{
    uint32_t                    i, n;
    ngx_uint_t                  level;
    ngx_http_ig_backend_req_t  *br;

    if (why) {
        /* a refusal before HELLO (no free client area) repeats: quieter */
        level = be->mapped ? NGX_LOG_ERR : NGX_LOG_INFO;

        ngx_log_error(level, be->log, err,
                      "infergate_backend \"%V\": %s; failing in-flight "
                      "requests and reconnecting", &be->name, why);
    }

    if (be->ctl) {
        ngx_close_connection(be->ctl);
        be->ctl = NULL;
    }

    if (be->cqc) {
        ngx_close_connection(be->cqc);
        be->cqc = NULL;
    }

    if (be->sq_fd != NGX_INVALID_FILE) {
        close(be->sq_fd);
        be->sq_fd = NGX_INVALID_FILE;
    }

    if (be->bell.posted) {
        ngx_delete_posted_event(&be->bell);
    }

    n = be->mapped ? be->rg.nslots : 0;

    be->have_models = 0;

    if (be->attached) {
        be->attached = 0;
        ngx_http_ig_metrics_gauge_add(IG_MG_BACKEND_CONNECTED, -1);
    }

    /* requests first, while their slots are still mapped */

    for (i = 0; i < n; i++) {
        if (be->state[i] == NGX_HTTP_IG_SLOT_SUBMITTED) {
            ngx_http_ig_backend_slot_done(be, i);
        }

        br = be->waiters[i];
        be->waiters[i] = NULL;
        be->state[i] = NGX_HTTP_IG_SLOT_FREE;

        if (br == NULL || !br->waiting) {
            continue;
        }

        /* a pool: once to another member, the rows copied from here */

        if (why && ngx_http_ig_backend_failover(br,
                                   ig_ring_slot(be->base, &be->rg, 0, i))
                   == NGX_OK)
        {
            continue;
        }

        if (why == NULL) {
            /* the worker exits: no request is answered any more */
            br->waiting = 0;
            br->reserved = 0;

            if (br->timer.timer_set) {
                ngx_del_timer(&br->timer);
            }

            continue;
        }

        ngx_http_ig_backend_finish(br, NGX_HTTP_IG_BE_DOWN);
    }

    if (be->mapped) {
        munmap(be->base, be->map_len);
        be->base = NULL;
        be->mapped = 0;
        be->nfree = 0;
    }

    be->rows = 0;
    be->current = 0;
    be->credit = 0;

    ngx_http_ig_backend_pool_update(be->pool);

    if (why) {
        ngx_http_ig_backend_retry(be);
    }
}


/* a 503 for load: the log phase counts it as shed, not as down */

static void
ngx_http_ig_backend_shed(ngx_http_request_t *r)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r);
    if (ctx) {
        ctx->backend_shed = 1;
    }
}


static void
ngx_http_ig_backend_stats_handler(ngx_event_t *ev)
{
    ngx_http_ig_backend_t  *be = ev->data;

    ngx_http_ig_backend_stats_req(be);

    if (!be->exiting) {
        ngx_add_timer(&be->stats, NGX_HTTP_IG_STATS_EVERY);
    }
}


/* asks without waiting: a full socket skips this second's figures */

static void
ngx_http_ig_backend_stats_req(ngx_http_ig_backend_t *be)
{
    ig_ctl_stats_req_t  req;

    if (be->ctl == NULL || !be->mapped || !ngx_http_ig_metrics_on()) {
        return;
    }

    req.type = IG_CTL_STATS_REQ;
    req.version = IG_RING_VERSION;

    if (send(be->ctl->fd, &req, sizeof(req), MSG_NOSIGNAL | MSG_DONTWAIT)
        != (ssize_t) sizeof(req))
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, be->log, ngx_socket_errno,
                       "infergate_backend \"%V\": stats request not sent",
                       &be->name);
    }
}


/* checks an IG_CTL_STATS reply before the zone keeps it */

static void
ngx_http_ig_backend_stats_msg(ngx_http_ig_backend_t *be, u_char *msg,
    size_t len)
{
    ig_ctl_stats_t  hdr;

    if (len < sizeof(ig_ctl_stats_t)) {
        goto bad;
    }

    ngx_memcpy(&hdr, msg, sizeof(ig_ctl_stats_t));

    if (hdr.version != IG_RING_VERSION
        || hdr.nbuckets != IG_STATS_BUCKETS
        || hdr.nmodels > IG_RING_MAX_MODELS
        || len != sizeof(ig_ctl_stats_t)
                  + hdr.nmodels * sizeof(ig_ctl_model_stats_t))
    {
        goto bad;
    }

    ngx_http_ig_metrics_backend(&be->name, (ig_ctl_stats_t *) msg, len);

    return;

bad:

    ngx_log_error(NGX_LOG_WARN, be->log, 0,
                  "infergate_backend \"%V\": malformed stats reply of %uz "
                  "bytes, ignored", &be->name, len);
}
