
/*
 * Copyright (C) infergate authors
 *
 * The Open Inference Protocol (KServe v2, as Triton serves it) over
 * HTTP/JSON, answered from infergate-backend through the ring:
 *
 *     GET  /v2                                          server metadata
 *     GET  /v2/health/live, /v2/health/ready            200 or 400
 *     GET  /v2/models/{m}[/versions/{v}]                model metadata
 *     GET  /v2/models/{m}[/versions/{v}]/ready          200 or 400
 *     POST /v2/models/{m}[/versions/{v}]/infer          inference
 *     GET  /v2/models[/{m}[/versions/{v}]]/stats        statistics
 *
 * Inference takes and gives tensors as JSON or with Triton's binary
 * tensor data extension (Inference-Header-Content-Length).  The
 * statistics are the backend's per-model counters as the metrics zone
 * holds them (docs/metrics-backend.md), so they need infergate_metrics.
 *
 * Protocol errors are 400 {"error": ...} and an unknown model 404, as
 * the protocol has them; what is about the gateway (backend down, queue
 * full, timeout, too large) is problem+json like every other refusal.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_oip.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_backend.h"
#include "ngx_http_infergate_metrics.h"
#include "ngx_http_infergate_grpc.h"


#define NGX_HTTP_IG_R_NONE         0
#define NGX_HTTP_IG_R_SERVER       1
#define NGX_HTTP_IG_R_LIVE         2
#define NGX_HTTP_IG_R_READY        3
#define NGX_HTTP_IG_R_MODEL        4
#define NGX_HTTP_IG_R_MODEL_READY  5
#define NGX_HTTP_IG_R_INFER        6
#define NGX_HTTP_IG_R_STATS        7


typedef struct {
    ngx_http_ig_backend_req_t   br;
    ig_model_meta_t             meta;
    ig_oip_request_t            req;
    char                        model[IG_MODEL_NAME_MAX];
    char                        version[IG_RING_VERSION_MAX];
} ngx_http_ig_infer_t;


typedef struct {
    ngx_http_ig_backend_t      *backend;     /* infergate_infer backend=  */
    ngx_str_t                   backend_name;
} ngx_http_ig_infer_loc_conf_t;


static void *ngx_http_ig_infer_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ig_infer_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_infer_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_ig_infer_handler(ngx_http_request_t *r);
static void ngx_http_ig_infer_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_infer_route(ngx_http_request_t *r,
    ngx_str_t *model, ngx_str_t *version);
static ngx_int_t ngx_http_ig_infer_start(ngx_http_request_t *r,
    ngx_http_ig_backend_t *be, ngx_str_t *model, ngx_str_t *version);
static void ngx_http_ig_infer_done(ngx_http_ig_backend_req_t *br,
    ngx_uint_t how);
static ngx_int_t ngx_http_ig_infer_metadata(ngx_http_request_t *r,
    ngx_http_ig_backend_t *be, ngx_str_t *model, ngx_str_t *version);
static ngx_int_t ngx_http_ig_infer_read_body(ngx_http_request_t *r,
    u_char **body, size_t *len);
static ngx_int_t ngx_http_ig_infer_stats(ngx_http_request_t *r,
    ngx_http_ig_infer_loc_conf_t *ilcf, ngx_str_t *model,
    ngx_str_t *version);
static ngx_int_t ngx_http_ig_infer_header_len(ngx_http_request_t *r,
    size_t len, size_t *json_len);
static ngx_int_t ngx_http_ig_infer_send(ngx_http_request_t *r,
    ngx_uint_t status, u_char *p, size_t len);
static ngx_int_t ngx_http_ig_infer_send_type(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, u_char *p, size_t len);
static ngx_int_t ngx_http_ig_infer_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *fmt, ...);
static ngx_int_t ngx_http_ig_infer_unavailable(ngx_http_request_t *r,
    ngx_uint_t status, const char *detail);


static ngx_str_t  ngx_http_ig_json_type = ngx_string("application/json");
static ngx_str_t  ngx_http_ig_octet_type =
    ngx_string("application/octet-stream");


static ngx_command_t  ngx_http_ig_infer_commands[] = {

    { ngx_string("infergate_backend"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ig_backend_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_infer"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ig_infer_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_infer_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_ig_infer_create_main_conf,    /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_infer_create_loc_conf,     /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_infer_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_infer_module_ctx,  /* module context */
    ngx_http_ig_infer_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ig_backend_init_process,      /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ig_backend_exit_process,      /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_ig_infer_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_infer_main_conf_t));
}


/* not merged: infergate_infer sets the location's content handler */

static void *
ngx_http_ig_infer_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_infer_loc_conf_t));
}


static char *
ngx_http_ig_infer_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_infer_loc_conf_t *lcf = conf;

    ngx_str_t                 *value, name;
    ngx_http_ig_backend_t     *be;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->backend) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len <= 8 || ngx_strncmp(value[1].data, "backend=", 8) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_infer: expected \"backend=NAME\", "
                           "not \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data + 8;
    name.len = value[1].len - 8;

    be = ngx_http_ig_backend_find(cf, &name);
    if (be == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_infer: unknown backend \"%V\" (an "
                           "\"infergate_backend %V ...\" must come first "
                           "in the http block)", &name, &name);
        return NGX_CONF_ERROR;
    }

    lcf->backend = be;
    lcf->backend_name = name;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_ig_infer_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ig_infer_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_http_ig_infer_loc_conf_t  *ilcf;

    if (ngx_http_ig_grpc_request(r)) {
        /* gRPC: ngx_http_infergate_grpc.c */
        ilcf = ngx_http_get_module_loc_conf(r,
                                            ngx_http_infergate_infer_module);
        return ngx_http_ig_grpc_handler(r, ilcf->backend);
    }

    if (r->request_body == NULL) {
        /* the codec wants the body in one piece */
        r->request_body_in_single_buf = 1;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_ig_infer_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* runs once the body is read (at once when there is none) */

static void
ngx_http_ig_infer_body(ngx_http_request_t *r)
{
    ngx_int_t                      rc, route;
    ngx_str_t                      model, version;
    ngx_uint_t                     ok, i;
    ngx_http_ig_backend_t         *be;
    const ig_ctl_models_t         *ms;
    ngx_http_ig_infer_loc_conf_t  *ilcf;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_infer_module);
    be = ilcf->backend;

    route = ngx_http_ig_infer_route(r, &model, &version);

    if (route == NGX_HTTP_IG_R_NONE) {
        rc = ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                     "no such Open Inference Protocol "
                                     "endpoint");
        goto done;
    }

    if (route == NGX_HTTP_IG_R_INFER) {
        if (r->method != NGX_HTTP_POST) {
            rc = ngx_http_ig_infer_error(r, NGX_HTTP_NOT_ALLOWED,
                                         "inference takes POST");
            goto done;
        }

        rc = ngx_http_ig_infer_start(r, be, &model, &version);

        if (rc == NGX_DONE) {
            return;                   /* waiting for the backend */
        }

        goto done;
    }

    if (!(r->method & (NGX_HTTP_GET | NGX_HTTP_HEAD))) {
        rc = ngx_http_ig_infer_error(r, NGX_HTTP_NOT_ALLOWED,
                                     "this endpoint takes GET");
        goto done;
    }

    switch (route) {

    case NGX_HTTP_IG_R_SERVER:
        /* statistics come through the metrics zone: only with one */
        if (ngx_http_ig_metrics_on()) {
            rc = ngx_http_ig_infer_send(r, NGX_HTTP_OK, (u_char *)
                     "{\"name\":\"infergate\",\"version\":\"1.0\","
                     "\"extensions\":[\"binary_tensor_data\","
                     "\"statistics\"]}",
                     sizeof("{\"name\":\"infergate\",\"version\":\"1.0\","
                            "\"extensions\":[\"binary_tensor_data\","
                            "\"statistics\"]}") - 1);

        } else {
            rc = ngx_http_ig_infer_send(r, NGX_HTTP_OK, (u_char *)
                     "{\"name\":\"infergate\",\"version\":\"1.0\","
                     "\"extensions\":[\"binary_tensor_data\"]}",
                     sizeof("{\"name\":\"infergate\",\"version\":\"1.0\","
                            "\"extensions\":[\"binary_tensor_data\"]}")
                     - 1);
        }

        break;

    case NGX_HTTP_IG_R_STATS:
        rc = ngx_http_ig_infer_stats(r, ilcf, &model, &version);
        break;

    case NGX_HTTP_IG_R_LIVE:
        rc = ngx_http_ig_infer_send(r, NGX_HTTP_OK, NULL, 0);
        break;

    case NGX_HTTP_IG_R_READY:
        /* every model of the pool ready, as model-ready says */
        ms = ngx_http_ig_backend_models(be);
        ok = (ms != NULL && ms->nmodels > 0);

        for (i = 0; ok && i < ms->nmodels; i++) {
            if (ms->models[i].name[0] == '\0') {
                continue;
            }

            model.data = (u_char *) ms->models[i].name;
            model.len = ngx_strnlen(model.data, IG_MODEL_NAME_MAX);
            version.data = (u_char *) ms->models[i].version;
            version.len = ngx_strnlen(version.data, IG_RING_VERSION_MAX);

            ok = ngx_http_ig_backend_model_ready(r, be, &model, &version);
        }

        rc = ngx_http_ig_infer_send(r, ok ? NGX_HTTP_OK
                                          : NGX_HTTP_BAD_REQUEST, NULL, 0);
        break;

    case NGX_HTTP_IG_R_MODEL_READY:
        /* pool: a member serves it, its breaker not open (backend.c) */
        ok = ngx_http_ig_backend_model_ready(r, be, &model, &version);
        rc = ngx_http_ig_infer_send(r, ok ? NGX_HTTP_OK
                                          : NGX_HTTP_BAD_REQUEST, NULL, 0);
        break;

    default: /* NGX_HTTP_IG_R_MODEL */
        rc = ngx_http_ig_infer_metadata(r, be, &model, &version);
        break;
    }

done:

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/* /v2 routes, on the normalized URI */

static ngx_int_t
ngx_http_ig_infer_route(ngx_http_request_t *r, ngx_str_t *model,
    ngx_str_t *version)
{
    u_char     *p, *last, *q;
    ngx_str_t   rest;

    ngx_str_null(model);
    ngx_str_null(version);

    p = r->uri.data;
    last = p + r->uri.len;

    if (last - p < 3 || ngx_strncmp(p, "/v2", 3) != 0) {
        return NGX_HTTP_IG_R_NONE;
    }

    p += 3;

    if (p == last || (p + 1 == last && *p == '/')) {
        return NGX_HTTP_IG_R_SERVER;
    }

    rest.data = p;
    rest.len = last - p;

    if (rest.len == sizeof("/health/live") - 1
        && ngx_strncmp(p, "/health/live", rest.len) == 0)
    {
        return NGX_HTTP_IG_R_LIVE;
    }

    if (rest.len == sizeof("/health/ready") - 1
        && ngx_strncmp(p, "/health/ready", rest.len) == 0)
    {
        return NGX_HTTP_IG_R_READY;
    }

    if (rest.len <= sizeof("/models/") - 1
        || ngx_strncmp(p, "/models/", sizeof("/models/") - 1) != 0)
    {
        return NGX_HTTP_IG_R_NONE;
    }

    p += sizeof("/models/") - 1;

    /* Triton's "all models": a model named "stats" is shadowed */
    if (last - p == sizeof("stats") - 1
        && ngx_strncmp(p, "stats", last - p) == 0)
    {
        return NGX_HTTP_IG_R_STATS;
    }

    for (q = p; q < last && *q != '/'; q++) { /* void */ }

    model->data = p;
    model->len = q - p;

    if (model->len == 0) {
        return NGX_HTTP_IG_R_NONE;
    }

    p = q;

    if (last - p > (ssize_t) sizeof("/versions/") - 1
        && ngx_strncmp(p, "/versions/", sizeof("/versions/") - 1) == 0)
    {
        p += sizeof("/versions/") - 1;

        for (q = p; q < last && *q != '/'; q++) { /* void */ }

        version->data = p;
        version->len = q - p;

        if (version->len == 0) {
            return NGX_HTTP_IG_R_NONE;
        }

        p = q;
    }

    if (p == last) {
        return NGX_HTTP_IG_R_MODEL;
    }

    if (last - p == sizeof("/ready") - 1
        && ngx_strncmp(p, "/ready", last - p) == 0)
    {
        return NGX_HTTP_IG_R_MODEL_READY;
    }

    if (last - p == sizeof("/infer") - 1
        && ngx_strncmp(p, "/infer", last - p) == 0)
    {
        return NGX_HTTP_IG_R_INFER;
    }

    if (last - p == sizeof("/stats") - 1
        && ngx_strncmp(p, "/stats", last - p) == 0)
    {
        return NGX_HTTP_IG_R_STATS;
    }

    return NGX_HTTP_IG_R_NONE;
}


/*
 * Looks the model up, decodes the body straight into a slot and submits
 * it.  NGX_DONE: waiting for the backend, or a refusal already sent;
 * anything else is for ngx_http_finalize_request().
 */

static ngx_int_t
ngx_http_ig_infer_start(ngx_http_request_t *r, ngx_http_ig_backend_t *be,
    ngx_str_t *model, ngx_str_t *version)
{
    int                      drc;
    char                     err[256];
    size_t                   len, floats, json_len;
    u_char                  *body;
    ngx_int_t                rc;
    ngx_http_ig_ctx_t       *ctx;
    ngx_http_ig_infer_t     *inf;
    ngx_http_ig_loc_conf_t  *lcf;
    const ig_ctl_model_t    *m;

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_module);

    if (ngx_http_ig_model(r, ctx, lcf) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->model.len == 0) {
        ctx->model = *model;
    }

    ngx_str_set(&ctx->action, "infer");

    if (!ngx_http_ig_backend_ready(be)) {
        return ngx_http_ig_infer_unavailable(r,
                                             NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "the inference backend is not "
                                             "connected");
    }

    m = ngx_http_ig_backend_model(be, model, version);

    if (m == NULL) {
        if (version->len) {
            return ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                           "unknown model \"%V\" version "
                                           "\"%V\"", model, version);
        }

        return ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                       "unknown model \"%V\"", model);
    }

    if (!m->ready) {
        return ngx_http_ig_infer_unavailable(r,
                                             NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "the model is not ready");
    }

    /*
     * Only the slot hold is zeroed: the rest is written below and by the
     * decoder (inf->req), a kilobyte less to clear on every request.
     */

    inf = ngx_palloc(r->pool, sizeof(ngx_http_ig_infer_t));
    if (inf == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&inf->br, sizeof(ngx_http_ig_backend_req_t));

    /* the model list may be replaced before the answer: keep a copy */

    inf->meta = m->meta;
    ngx_memcpy(inf->model, m->name, IG_MODEL_NAME_MAX);
    ngx_memcpy(inf->version, m->version, IG_RING_VERSION_MAX);

    if (ngx_http_ig_infer_read_body(r, &body, &len) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* pool: a member that serves m (backend.c) */
    rc = ngx_http_ig_backend_reserve_model(be, &inf->br, r, m);

    if (rc == NGX_BUSY) {
        return ngx_http_ig_infer_unavailable(r,
                                             NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "too many inference requests "
                                             "in flight");
    }

    if (rc == NGX_DECLINED) {
        return ngx_http_ig_infer_unavailable(r,
                                             NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "the inference backend is not "
                                             "connected");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    floats = ngx_http_ig_backend_slot_floats(be);

    if (ngx_http_ig_infer_header_len(r, len, &json_len) != NGX_OK) {
        ngx_http_ig_backend_release(&inf->br);

        return ngx_http_ig_infer_error(r, NGX_HTTP_BAD_REQUEST,
                                       "inference header size should be in "
                                       "range (0, %uz)", len);
    }

    drc = ig_oip_decode_infer_bin(body, len, json_len, &inf->meta,
                                  inf->br.slot->data, floats, &inf->req, err,
                                  sizeof(err));

    if (drc == 0
        && inf->req.rows * (size_t) inf->meta.noutputs > floats)
    {
        drc = -2;
    }

    if (drc != 0) {
        ngx_http_ig_backend_release(&inf->br);

        if (drc == -1) {
            return ngx_http_ig_infer_error(r, NGX_HTTP_BAD_REQUEST, "%s",
                                           err);
        }

        return ngx_http_ig_problem_cstr(r,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        NGX_HTTP_IG_PROBLEM_BASE
                                        "batch-too-large",
                                        "Payload Too Large",
                                        "the tensors do not fit in one "
                                        "backend slot: send fewer rows");
    }

    inf->br.handler = ngx_http_ig_infer_done;
    inf->br.data = inf;

    if (ngx_http_ig_backend_submit(&inf->br, m->id, (uint32_t) inf->req.rows,
                                   (uint32_t) (inf->req.rows
                                               * inf->meta.nfeatures))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a client that leaves ends the request now; the slot comes back later */
    r->read_event_handler = ngx_http_test_reading;

    return NGX_DONE;
}


static void
ngx_http_ig_infer_done(ngx_http_ig_backend_req_t *br, ngx_uint_t how)
{
    u_char               *p, *last;
    size_t                len, json_len;
    uint64_t              n;
    ngx_int_t             rc;
    ig_ring_slot_t       *slot;
    u_char                hl[NGX_SIZE_T_LEN];
    ngx_http_request_t   *r;
    ngx_http_ig_ctx_t    *ctx;
    ngx_http_ig_infer_t  *inf;

    r = br->request;
    inf = br->data;

    ctx = ngx_http_ig_find_ctx(r);

    if (how == NGX_HTTP_IG_BE_DOWN) {
        rc = ngx_http_ig_infer_unavailable(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "the inference backend went "
                                           "away");
        goto done;
    }

    if (how == NGX_HTTP_IG_BE_TIMEOUT) {
        rc = ngx_http_ig_infer_unavailable(r, NGX_HTTP_GATEWAY_TIME_OUT,
                                           "the inference backend did not "
                                           "answer in time");
        goto done;
    }

    slot = br->slot;

    if (ctx) {
        ctx->batch_rows = slot->batch_rows;
        ctx->backend_us = (br->done_ns - br->submit_ns) / 1000;
    }

    switch (slot->status) {

    case IG_RING_OK:
        break;

    case IG_RING_EQUEUE_FULL:
        rc = ngx_http_ig_infer_unavailable(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "the inference queue is full");
        goto done;

    case IG_RING_EQUEUE_TIMEOUT:
        rc = ngx_http_ig_infer_unavailable(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "the request waited too long in "
                                           "the inference queue");
        goto done;

    case IG_RING_ESHUTDOWN:
        rc = ngx_http_ig_infer_unavailable(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "the inference backend is "
                                           "shutting down");
        goto done;

    case IG_RING_ENOMODEL:
        rc = ngx_http_ig_infer_unavailable(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "the model was unloaded");
        goto done;

    default: /* IG_RING_EBADREQ, IG_RING_EMODEL */
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "infergate_infer: the backend failed the request "
                      "(status %uD)", slot->status);
        rc = ngx_http_ig_problem_cstr(r, NGX_HTTP_INTERNAL_SERVER_ERROR,
                                      NGX_HTTP_IG_PROBLEM_BASE
                                      "inference-failed",
                                      "Internal Server Error",
                                      "the model failed on this request");
        goto done;
    }

    n = (uint64_t) inf->req.rows * inf->meta.noutputs;

    if (slot->out_floats != n
        || n > ngx_http_ig_backend_slot_floats(br->backend))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "infergate_infer: the backend answered %uD floats "
                      "for %uL", slot->out_floats, n);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    len = ig_oip_encode_infer_len(inf->model, inf->version, &inf->req,
                                  &inf->meta, inf->req.rows);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    if (!inf->req.binary_output) {
        last = ig_oip_encode_infer(p, inf->model, inf->version, &inf->req,
                                   &inf->meta, slot->data, inf->req.rows);

        rc = ngx_http_ig_infer_send(r, NGX_HTTP_OK, p, last - p);
        goto done;
    }

    /* the binary tensor data extension, as Triton answers it */

    last = ig_oip_encode_infer_bin(p, inf->model, inf->version, &inf->req,
                                   &inf->meta, slot->data, inf->req.rows,
                                   &json_len);

    /*
     * infergate_cache keeps status, type and body: a stored binary answer
     * would come back without the header that splits it, so none is
     * stored.
     */

    if (ngx_http_ig_add_header(r, "Inference-Header-Content-Length", hl,
                               ngx_sprintf(hl, "%uz", json_len) - hl)
        != NGX_OK
        || ngx_http_ig_add_header(r, "Cache-Control", (u_char *) "no-store",
                                  sizeof("no-store") - 1)
           != NGX_OK)
    {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    rc = ngx_http_ig_infer_send_type(r, NGX_HTTP_OK, &ngx_http_ig_octet_type,
                                     p, last - p);

done:

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_ig_infer_metadata(ngx_http_request_t *r, ngx_http_ig_backend_t *be,
    ngx_str_t *model, ngx_str_t *version)
{
    u_char                 *p, *last;
    size_t                  len, n;
    uint32_t                i;
    const char             *versions[IG_RING_MAX_MODELS];
    const ig_ctl_model_t   *m;
    const ig_ctl_models_t  *ms;

    m = ngx_http_ig_backend_model(be, model, version);

    if (m == NULL) {
        if (!ngx_http_ig_backend_ready(be)) {
            return ngx_http_ig_infer_unavailable(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the inference backend is "
                                               "not connected");
        }

        return ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                       "unknown model \"%V\"", model);
    }

    ms = ngx_http_ig_backend_models(be);
    n = 0;

    for (i = 0; i < ms->nmodels; i++) {
        if (ngx_strcmp(ms->models[i].name, m->name) == 0
            && ms->models[i].version[0])
        {
            versions[n++] = ms->models[i].version;
        }
    }

    len = ig_oip_encode_metadata_len(m->name, versions, n, &m->meta);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ig_oip_encode_metadata(p, m->name, versions, n, &m->meta);

    return ngx_http_ig_infer_send(r, NGX_HTTP_OK, p, last - p);
}


/* the body in one piece: as it is when it fits one buffer, else copied */

static ngx_int_t
ngx_http_ig_infer_read_body(ngx_http_request_t *r, u_char **body,
    size_t *len)
{
    u_char       *p;
    size_t        size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    *body = NULL;
    *len = 0;

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        *body = cl->buf->pos;
        *len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += (size_t) ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, size ? size : 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    *body = p;
    *len = size;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            /*
             * The body outgrew client_body_buffer_size and went to a
             * temporary file it was just written to: a page-cache read.
             */
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else if (b->last > b->pos) {
            /* not an empty buffer: its pos may be NULL (a chunked
             * body's last, empty chunk) */
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_infer_send(ngx_http_request_t *r, ngx_uint_t status, u_char *p,
    size_t len)
{
    return ngx_http_ig_infer_send_type(r, status, &ngx_http_ig_json_type, p,
                                       len);
}


static ngx_int_t
ngx_http_ig_infer_send_type(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *p, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    if (len) {
        r->headers_out.content_type = *type;
        r->headers_out.content_type_len = type->len;
        r->headers_out.content_type_lowcase = NULL;

    } else {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = p;
    b->last = p + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * Inference-Header-Content-Length, parsed as Triton does: absent, the
 * body is JSON (IG_OIP_NO_BINARY); else 0 <= value <= the body's length.
 * NGX_DECLINED: not a number, out of range, or given twice.
 */

static ngx_int_t
ngx_http_ig_infer_header_len(ngx_http_request_t *r, size_t len,
    size_t *json_len)
{
    off_t  n;

    *json_len = IG_OIP_NO_BINARY;

    if (ngx_http_ig_oip_header_len(r, &n) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (n == -1) {
        return NGX_OK;
    }

    if ((uint64_t) n > len) {
        return NGX_DECLINED;
    }

    *json_len = (size_t) n;

    return NGX_OK;
}


/*
 * The header itself, for every reader of a binary request (this handler,
 * the schema stage): NGX_OK with *n = -1 when it is absent, else its
 * value; NGX_DECLINED when it is not a number or is given twice.  The
 * range check (at most the body's length) is the caller's.
 */

ngx_int_t
ngx_http_ig_oip_header_len(ngx_http_request_t *r, off_t *n)
{
    ngx_uint_t        i, found;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    static ngx_str_t  name = ngx_string("Inference-Header-Content-Length");

    *n = -1;
    found = 0;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != name.len
            || ngx_strncasecmp(h[i].key.data, name.data, name.len) != 0)
        {
            continue;
        }

        if (found++) {
            return NGX_DECLINED;
        }

        *n = ngx_atoof(h[i].value.data, h[i].value.len);

        if (*n == NGX_ERROR) {
            *n = -1;
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


/* whether the request's location serves infergate_infer */

ngx_uint_t
ngx_http_ig_infer_on(ngx_http_request_t *r)
{
    ngx_http_ig_infer_loc_conf_t  *ilcf;

    ilcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_infer_module);

    return ilcf->backend != NULL;
}


/* Triton's statistics extension from the backend's latest IG_CTL_STATS */

#define NGX_HTTP_IG_STAT_LEN  1536

static ngx_int_t
ngx_http_ig_infer_stats(ngx_http_request_t *r,
    ngx_http_ig_infer_loc_conf_t *ilcf, ngx_str_t *model, ngx_str_t *version)
{
    u_char                      *p, *start;
    size_t                       n, nlen, vlen;
    uint32_t                     i, k, first;
    uint64_t                     fail;
    ig_ctl_stats_t              *st;
    const ig_ctl_model_t        *m;
    const ig_ctl_model_stats_t  *ms;

    if (!ngx_http_ig_metrics_on()) {
        return ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                       "the statistics extension needs the "
                                       "backend's counters, which travel "
                                       "through the metrics zone: serve "
                                       "infergate_metrics in some location");
    }

    if (model->len) {
        m = ngx_http_ig_backend_model(ilcf->backend, model, version);

        if (m == NULL) {
            if (!ngx_http_ig_backend_ready(ilcf->backend)) {
                return ngx_http_ig_infer_unavailable(r,
                                               NGX_HTTP_SERVICE_UNAVAILABLE,
                                               "the inference backend is "
                                               "not connected");
            }

            if (version->len) {
                return ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                               "unknown model \"%V\" "
                                               "version \"%V\"", model,
                                               version);
            }

            return ngx_http_ig_infer_error(r, NGX_HTTP_NOT_FOUND,
                                           "unknown model \"%V\"", model);
        }
    }

    st = ngx_palloc(r->pool, IG_CTL_STATS_MAX);
    if (st == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = ngx_http_ig_metrics_backend_copy(&ilcf->backend_name, (u_char *) st,
                                         IG_CTL_STATS_MAX);

    if (n < sizeof(ig_ctl_stats_t) || st->nmodels > IG_RING_MAX_MODELS) {
        return ngx_http_ig_infer_unavailable(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                             "the backend's statistics are "
                                             "not available: it sent none in "
                                             "the last 3 s");
    }

    start = ngx_pnalloc(r->pool, sizeof("{\"model_stats\":[]}")
                                 + st->nmodels * NGX_HTTP_IG_STAT_LEN);
    if (start == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(start, "{\"model_stats\":[", sizeof("{\"model_stats\":[")
                                                 - 1);
    first = 1;

    for (i = 0; i < st->nmodels; i++) {
        ms = &st->models[i];

        nlen = ngx_strnlen((u_char *) ms->name, IG_MODEL_NAME_MAX);
        vlen = ngx_strnlen((u_char *) ms->version, IG_RING_VERSION_MAX);

        if (nlen == 0) {
            continue;                     /* an unloaded id */
        }

        if (model->len
            && (model->len != nlen
                || ngx_strncmp(model->data, ms->name, nlen) != 0))
        {
            continue;
        }

        if (version->len
            && (version->len != vlen
                || ngx_strncmp(version->data, ms->version, vlen) != 0))
        {
            continue;
        }

        fail = 0;

        for (k = 0; k < IG_STATS_NSTATUS; k++) {
            fail += ms->failures[k];
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;

        p = ngx_cpymem(p, "{\"name\":\"", sizeof("{\"name\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, (u_char *) ms->name, nlen);
        p = ngx_cpymem(p, "\",\"version\":\"", sizeof("\",\"version\":\"")
                                               - 1);
        p = (u_char *) ngx_escape_json(p, (u_char *) ms->version, vlen);

        p = ngx_sprintf(p, "\",\"last_inference\":%uL,"
                        "\"inference_count\":%uL,\"execution_count\":%uL,"
                        "\"inference_stats\":{"
                        "\"success\":{\"count\":%uL,\"ns\":%uL},"
                        "\"fail\":{\"count\":%uL,\"ns\":0},"
                        "\"queue\":{\"count\":%uL,\"ns\":%uL},"
                        "\"compute_input\":{\"count\":%uL,\"ns\":0},"
                        "\"compute_infer\":{\"count\":%uL,\"ns\":%uL},"
                        "\"compute_output\":{\"count\":%uL,\"ns\":0},"
                        "\"cache_hit\":{\"count\":0,\"ns\":0},"
                        "\"cache_miss\":{\"count\":0,\"ns\":0}},"
                        "\"response_stats\":{},\"batch_stats\":[],"
                        "\"memory_usage\":[]}",
                        ms->last_ms, ms->rows, ms->batches,
                        ms->success, ms->queue_ns + ms->compute_ns,
                        fail,
                        ms->success, ms->queue_ns,
                        ms->success,
                        ms->success, ms->compute_ns,
                        ms->success);
    }

    p = ngx_cpymem(p, "]}", 2);

    return ngx_http_ig_infer_send(r, NGX_HTTP_OK, start, p - start);
}


/* {"error": "..."} with the protocol's status */

static ngx_int_t
ngx_http_ig_infer_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *fmt, ...)
{
    u_char   *p, *last;
    size_t    len;
    va_list   args;
    u_char    msg[512];

    va_start(args, fmt);
    last = ngx_vslprintf(msg, msg + sizeof(msg) - 1, fmt, args);
    va_end(args);

    *last = '\0';

    len = ig_oip_encode_error_len((char *) msg);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ig_oip_encode_error(p, (char *) msg);

    if (status == NGX_HTTP_NOT_ALLOWED) {
        if (ngx_http_ig_add_header(r, "Allow", (u_char *) "GET, HEAD, POST",
                                   sizeof("GET, HEAD, POST") - 1)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_ig_infer_send(r, status, p, last - p);
}


/* 503/504 as problem+json, with Retry-After: load is shed, never queued */

static ngx_int_t
ngx_http_ig_infer_unavailable(ngx_http_request_t *r, ngx_uint_t status,
    const char *detail)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r);
    if (ctx) {
        ngx_str_set(&ctx->action, "backend_unavailable");
    }

    if (status == NGX_HTTP_SERVICE_UNAVAILABLE
        && ngx_http_ig_add_header(r, "Retry-After", (u_char *) "1", 1)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ig_problem_cstr(r, status,
                                    NGX_HTTP_IG_PROBLEM_BASE
                                    "backend-unavailable",
                                    status == NGX_HTTP_GATEWAY_TIME_OUT
                                    ? "Gateway Timeout"
                                    : "Service Unavailable",
                                    detail);
}
