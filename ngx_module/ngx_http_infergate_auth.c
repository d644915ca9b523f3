
/*
 * Copyright (C) infergate authors
 *
 * API key authentication: the key comes from "Authorization: Bearer" or
 * "X-API-Key", maps to a tenant through its SHA-256 digest, and is
 * stripped from the request so it never reaches the upstream.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


typedef struct {
    ngx_flag_t                  auth;
} ngx_http_ig_auth_loc_conf_t;


static ngx_int_t ngx_http_ig_access_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_subrequest_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_auth(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf, ngx_uint_t final);
static ngx_int_t ngx_http_ig_auth_subrequest(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_auth_subrequest_strip(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);
static void *ngx_http_ig_auth_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ig_auth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_auth_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_auth_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_auth_key(ngx_http_request_t *r,
    ngx_str_t *key);
static void ngx_http_ig_auth_lookup(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);
static ngx_int_t ngx_http_ig_auth_model_allowed(ngx_http_request_t *r,
    ngx_http_ig_key_t *k, ngx_str_t *model);
static ngx_int_t ngx_http_ig_auth_forbid(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_key_t *k, ngx_str_t *model,
    ngx_uint_t final);
static ngx_int_t ngx_http_ig_model_value(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf, ngx_str_t *model);
static ngx_uint_t ngx_http_ig_is_credential(ngx_table_elt_t *h);
static ngx_int_t ngx_http_ig_auth_strip(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_auth_strip_copy(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_auth_refuse(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_uint_t final);


static ngx_command_t  ngx_http_ig_auth_commands[] = {

    { ngx_string("infergate_keys"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_ig_keys_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_auth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ig_auth_loc_conf_t, auth),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_auth_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_auth_init,                 /* postconfiguration */

    ngx_http_ig_auth_create_main_conf,     /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_auth_create_loc_conf,      /* create location configuration */
    ngx_http_ig_auth_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_auth_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_auth_module_ctx,   /* module context */
    ngx_http_ig_auth_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/*
 * The access phase: authentication only, so that it combines with
 * "satisfy" as allow/deny and auth_basic do.  NGX_OK admits (under
 * "satisfy any" that is enough), a refusal is a 401/403.
 */

static ngx_int_t
ngx_http_ig_access_handler(ngx_http_request_t *r)
{
    ngx_uint_t                    final;
    ngx_http_ig_ctx_t            *ctx;
    ngx_http_ig_loc_conf_t       *lcf;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_ig_auth_loc_conf_t  *alcf;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_auth_module);

    if (!alcf->auth) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * Under "satisfy any" a refusal is ours to send only when no access
     * handler follows (this one is registered to run last); otherwise the
     * 401/403 goes back to the phase engine, and a later module may still
     * admit the request.
     */

    final = 1;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->satisfy == NGX_HTTP_SATISFY_ANY) {
        cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);
        final = (cmcf->phase_engine.handlers[r->phase_handler + 1].checker
                 == ngx_http_core_post_access_phase);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_module);

    return ngx_http_ig_auth(r, ctx, lcf, final);
}


/*
 * Subrequests (auth_request, mirror, SSI) skip the access phase: in a
 * location with "infergate_auth on" they are checked in the rewrite
 * phase instead, before the location's own "return" could answer.
 */

static ngx_int_t
ngx_http_ig_subrequest_handler(ngx_http_request_t *r)
{
    ngx_http_ig_ctx_t            *ctx;
    ngx_http_ig_loc_conf_t       *lcf;
    ngx_http_ig_auth_loc_conf_t  *alcf, *malcf;

    if (r == r->main) {
        return NGX_DECLINED;
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_auth_module);
    malcf = ngx_http_get_module_loc_conf(r->main,
                                         ngx_http_infergate_auth_module);

    if (!alcf->auth && !malcf->auth) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!alcf->auth) {
        /* a subrequest of an authenticated location: no key of ours */
        return ngx_http_ig_auth_subrequest_strip(r, ctx);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_module);

    return ngx_http_ig_auth_subrequest(r, ctx, lcf);
}


/*
 * The key is looked up once per request (the result survives internal
 * redirects, the headers do not come back once stripped); every location
 * with "infergate_auth on" then decides on it and on its own model.
 * Returns NGX_OK to admit, NGX_DONE once a refusal was sent, or, when
 * final is 0 ("satisfy any" with access handlers after this one), the
 * bare 401/403 for the phase engine.
 */

static ngx_int_t
ngx_http_ig_auth(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf, ngx_uint_t final)
{
    ngx_int_t  rc;

    if (ctx->auth == NGX_HTTP_IG_AUTH_NONE) {
        ngx_http_ig_auth_lookup(r, ctx);
    }

    if (!ctx->stripped) {
        if (ngx_http_ig_auth_strip(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->stripped = 1;
    }

    if (ctx->auth != NGX_HTTP_IG_AUTH_OK) {
        return ngx_http_ig_auth_refuse(r, ctx, final);
    }

    if (ctx->key->nmodels) {
        if (ngx_http_ig_model(r, ctx, lcf) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc = ngx_http_ig_auth_model_allowed(r, ctx->key, &ctx->model);

        if (rc != NGX_OK) {
            return ngx_http_ig_auth_forbid(r, ctx, ctx->key, &ctx->model,
                                           final);
        }
    }

    ctx->auth_deferred = 0;
    ngx_str_null(&ctx->action);

    return NGX_OK;
}


/*
 * A subrequest (auth_request, mirror, SSI) skips the access phase; in a
 * location with "infergate_auth on" the rewrite-phase handler checks the
 * key here: the main request's, or the one its headers carry.  The
 * credentials are removed from the subrequest's own copy of the header
 * list (the main request's list is left as it is).  Returns NGX_DECLINED
 * to go on.
 */

static ngx_int_t
ngx_http_ig_auth_subrequest(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    ngx_str_t  model;

    if (ctx->auth == NGX_HTTP_IG_AUTH_NONE) {
        ngx_http_ig_auth_lookup(r, ctx);
    }

    if (ngx_http_ig_auth_strip_copy(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->auth != NGX_HTTP_IG_AUTH_OK) {
        return ngx_http_ig_auth_refuse(r, NULL, 1);
    }

    if (ctx->key->nmodels) {
        if (ngx_http_ig_model_value(r, lcf, &model) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_ig_auth_model_allowed(r, ctx->key, &model) != NGX_OK) {
            return ngx_http_ig_auth_forbid(r, NULL, ctx->key, &model, 1);
        }
    }

    return NGX_DECLINED;
}


/*
 * A subrequest (auth_request, mirror, SSI) of a location with
 * "infergate_auth on", into one without: an API key of ours is removed
 * from its copy of the headers (other credentials, such as a token for
 * the auth_request server, go on).  Returns NGX_DECLINED.
 */

static ngx_int_t
ngx_http_ig_auth_subrequest_strip(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx)
{
    if (ctx->auth == NGX_HTTP_IG_AUTH_NONE) {
        ngx_http_ig_auth_lookup(r, ctx);
    }

    if (ctx->auth == NGX_HTTP_IG_AUTH_OK
        && ngx_http_ig_auth_strip_copy(r) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return NGX_DECLINED;
}


static void
ngx_http_ig_auth_lookup(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    ngx_str_t                      key;
    ngx_http_ig_auth_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_infergate_auth_module);

    if (ngx_http_ig_auth_key(r, &key) != NGX_OK) {
        ctx->auth = NGX_HTTP_IG_AUTH_MISSING;
        return;
    }

    ctx->key = ngx_http_ig_keys_find(mcf->keys, key.data, key.len);
    ctx->auth = ctx->key ? NGX_HTTP_IG_AUTH_OK : NGX_HTTP_IG_AUTH_INVALID;
}


static ngx_int_t
ngx_http_ig_auth_model_allowed(ngx_http_request_t *r, ngx_http_ig_key_t *k,
    ngx_str_t *model)
{
    ngx_uint_t  i;

    if (model->len == 0) {
        return NGX_OK;
    }

    for (i = 0; i < k->nmodels; i++) {
        if (k->models[i].len == model->len
            && ngx_strncmp(k->models[i].data, model->data, model->len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_ig_auth_forbid(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_key_t *k, ngx_str_t *model, ngx_uint_t final)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   detail, esc;
    u_char      buf[NGX_HTTP_IG_LOG_MAX];

    /* the model comes from the request: escaped for the log */

    esc = ngx_http_ig_log_escape(buf, model->data, model->len);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "infergate: tenant \"%V\" may not use model \"%V\"",
                  &k->tenant, &esc);

    if (ctx) {
        ngx_str_set(&ctx->action, "forbidden");
    }

    if (!final && ctx) {
        ctx->auth_deferred = 1;
        return NGX_HTTP_FORBIDDEN;
    }

    len = sizeof("tenant \"\" may not use model \"\"") - 1
          + k->tenant.len + model->len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* JSON-escaped by the problem writer */

    detail.data = p;
    detail.len = ngx_sprintf(p, "tenant \"%V\" may not use model \"%V\"",
                             &k->tenant, model)
                 - p;

    return ngx_http_ig_problem(r, NGX_HTTP_FORBIDDEN,
                               NGX_HTTP_IG_PROBLEM_BASE "forbidden",
                               "Forbidden", &detail, NULL);
}


/*
 * The requested model: infergate_model when set, else {m} of
 * "/v2/models/{m}[/...]" (the Open Inference Protocol's path).  Once per
 * location: an internal redirect computes it again.
 */

ngx_int_t
ngx_http_ig_model(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    if (ctx->model_done) {
        return NGX_OK;
    }

    ctx->model_done = 1;

    return ngx_http_ig_model_value(r, lcf, &ctx->model);
}


static ngx_int_t
ngx_http_ig_model_value(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf,
    ngx_str_t *model)
{
    u_char  *p, *last;

    ngx_str_null(model);

    if (lcf->model) {
        return ngx_http_complex_value(r, lcf->model, model);
    }

    if (r->uri.len <= sizeof("/v2/models/") - 1
        || ngx_strncmp(r->uri.data, "/v2/models/", sizeof("/v2/models/") - 1)
           != 0)
    {
        return NGX_OK;
    }

    p = r->uri.data + sizeof("/v2/models/") - 1;
    last = r->uri.data + r->uri.len;

    model->data = p;

    while (p < last && *p != '/') {
        p++;
    }

    model->len = p - model->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_auth_key(ngx_http_request_t *r, ngx_str_t *key)
{
    u_char           *p, *last;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    if (r->headers_in.authorization) {
        p = r->headers_in.authorization->value.data;
        last = p + r->headers_in.authorization->value.len;

        if (last - p > 7 && ngx_strncasecmp(p, (u_char *) "Bearer ", 7) == 0)
        {
            p += 7;

            while (p < last && *p == ' ') {
                p++;
            }

            while (last > p && last[-1] == ' ') {
                last--;
            }

            if (p < last) {
                key->data = p;
                key->len = last - p;
                return NGX_OK;
            }
        }
    }

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == sizeof("X-API-Key") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "X-API-Key",
                               sizeof("X-API-Key") - 1) == 0
            && h[i].value.len)
        {
            *key = h[i].value;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/*
 * Removes the credentials so that no upstream or log sees them.  Other
 * r->headers_in fields point into the list, so no element may move: a
 * part is trimmed or split around the removed element instead.  Header
 * loops in nginx assume every part after the first is non-empty, and
 * ngx_list_push() assumes the last part has nalloc slots from its elts;
 * both invariants are restored at the end.
 */

static ngx_int_t
ngx_http_ig_auth_strip(ngx_http_request_t *r)
{
    ngx_uint_t        i, removed;
    ngx_list_t       *list;
    ngx_list_part_t  *part, *prev, *rest;
    ngx_table_elt_t  *h;

    list = &r->headers_in.headers;
    part = &list->part;
    prev = NULL;
    removed = 0;

    while (part) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (ngx_http_ig_is_credential(&h[i])) {
                break;
            }
        }

        if (i == part->nelts) {
            prev = part;
            part = part->next;
            continue;
        }

        removed = 1;

        if (i == part->nelts - 1) {
            part->nelts--;

        } else if (i == 0) {
            part->elts = &h[1];
            part->nelts--;
            continue;

        } else {
            rest = ngx_palloc(r->pool, sizeof(ngx_list_part_t));
            if (rest == NULL) {
                return NGX_ERROR;
            }

            rest->elts = &h[i + 1];
            rest->nelts = part->nelts - i - 1;
            rest->next = part->next;
            part->next = rest;

            if (list->last == part) {
                list->last = rest;
            }

            part->nelts = i;
        }

        if (part->nelts == 0 && prev) {
            prev->next = part->next;

            if (list->last == part) {
                list->last = prev;
            }

            part = part->next;
            continue;
        }

        prev = part;
        part = part->next;
    }

    r->headers_in.authorization = NULL;

    if (removed) {
        /* the next push starts a new part rather than overrun a split one */
        list->nalloc = ngx_max(list->last->nelts, 1);
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_ig_is_credential(ngx_table_elt_t *h)
{
    return (h->key.len == sizeof("X-API-Key") - 1
            && ngx_strncasecmp(h->key.data, (u_char *) "X-API-Key",
                               sizeof("X-API-Key") - 1) == 0)
           || (h->key.len == sizeof("Authorization") - 1
               && ngx_strncasecmp(h->key.data, (u_char *) "Authorization",
                                  sizeof("Authorization") - 1) == 0);
}


/*
 * A subrequest's headers_in is a copy of its parent's, but the list parts
 * after the first are shared: the subrequest gets a list of its own
 * without the credentials.
 */

static ngx_int_t
ngx_http_ig_auth_strip_copy(ngx_http_request_t *r)
{
    ngx_uint_t        i, n, found;
    ngx_list_t        list;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *nh;

    n = 0;
    found = 0;

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            n++;
            found |= ngx_http_ig_is_credential(&h[i]);
        }
    }

    r->headers_in.authorization = NULL;

    if (!found) {
        return NGX_OK;
    }

    if (ngx_list_init(&list, r->pool, n, sizeof(ngx_table_elt_t)) != NGX_OK) {
        return NGX_ERROR;
    }

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (ngx_http_ig_is_credential(&h[i])) {
                continue;
            }

            nh = ngx_list_push(&list);
            if (nh == NULL) {
                return NGX_ERROR;
            }

            *nh = h[i];
        }
    }

    r->headers_in.headers = list;

    return NGX_OK;
}


/*
 * 401: no key, or a key that is not in the table.  The challenge goes into
 * headers_out.www_authenticate, which nginx hides when another module
 * admits the request under "satisfy any".  ctx is NULL for a subrequest.
 */

static ngx_int_t
ngx_http_ig_auth_refuse(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_uint_t final)
{
    ngx_table_elt_t    *h;
    ngx_http_ig_ctx_t  *main_ctx;

    main_ctx = ngx_http_ig_find_ctx(r->main);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "WWW-Authenticate");

    if (main_ctx && main_ctx->auth == NGX_HTTP_IG_AUTH_INVALID) {
        ngx_str_set(&h->value,
                    "Bearer realm=\"infergate\", error=\"invalid_token\"");

    } else {
        ngx_str_set(&h->value, "Bearer realm=\"infergate\"");
    }

    r->headers_out.www_authenticate = h;

    if (ctx) {
        ngx_str_set(&ctx->action, "unauthorized");
    }

    if (!final && ctx) {
        ctx->auth_deferred = 1;
        return NGX_HTTP_UNAUTHORIZED;
    }

    if (main_ctx && main_ctx->auth == NGX_HTTP_IG_AUTH_INVALID) {
        return ngx_http_ig_problem_cstr(r, NGX_HTTP_UNAUTHORIZED,
                                        NGX_HTTP_IG_PROBLEM_BASE
                                        "unauthorized", "Unauthorized",
                                        "the API key is not valid");
    }

    return ngx_http_ig_problem_cstr(r, NGX_HTTP_UNAUTHORIZED,
                                    NGX_HTTP_IG_PROBLEM_BASE "unauthorized",
                                    "Unauthorized",
                                    "an API key is required: send "
                                    "\"Authorization: Bearer <key>\" "
                                    "or \"X-API-Key: <key>\"");
}


static void *
ngx_http_ig_auth_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_auth_main_conf_t));
}


static void *
ngx_http_ig_auth_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ig_auth_loc_conf_t  *conf;

    conf = ngx_palloc(cf->pool, sizeof(ngx_http_ig_auth_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->auth = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_ig_auth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_auth_loc_conf_t *prev = parent;
    ngx_http_ig_auth_loc_conf_t *conf = child;

    ngx_http_ig_auth_main_conf_t  *mcf;

    ngx_conf_merge_value(conf->auth, prev->auth, 0);

    if (conf->auth) {
        mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_auth_module);
        if (mcf->keys == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"infergate_auth on\" needs "
                               "\"infergate_keys\" in the http block");
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ig_auth_init(ngx_conf_t *cf)
{
    ngx_array_t                *handlers;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * Handlers of a phase run last-registered first; going to the front
     * of the array lets allow/deny and auth_basic refuse before a key is
     * hashed, and makes ours the last word under "satisfy any".
     */

    handlers = &cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers;

    h = ngx_array_push(handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = handlers->elts;
    ngx_memmove(&h[1], &h[0],
                (handlers->nelts - 1) * sizeof(ngx_http_handler_pt));
    h[0] = ngx_http_ig_access_handler;

    /* pushed last, so run before the rewrite module's "return" */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_REWRITE_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ig_subrequest_handler;

    return NGX_OK;
}
