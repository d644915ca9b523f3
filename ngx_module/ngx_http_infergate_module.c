
/*
 * Copyright (C) infergate authors
 *
 * The core: after authentication (ngx_http_infergate_auth.c, access
 * phase), a precontent-phase handler runs the stage table: the rate
 * limits, the streaming schema validation of the body, the Bloom guard
 * and the cache lookup, so a refused request is never parsed; infer is
 * the content handler.  Every location a request reaches (internal
 * redirects included) runs its own stages.  Also here: the redirect-safe
 * request ctx, infergate_model, and the core's helpers.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


static ngx_int_t ngx_http_ig_precontent_handler(ngx_http_request_t *r);
static void ngx_http_ig_ctx_cleanup(void *data);
static void *ngx_http_ig_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_postconfiguration(ngx_conf_t *cf);


/*
 * The request path, in order.  auth runs in the access phase
 * (ngx_http_infergate_auth.c, so that it combines with "satisfy"), and
 * infer is the content handler "infergate_infer" sets
 * (ngx_http_infergate_infer.c); between them, the
 * precontent phase runs these stages in this order.  A new stage is one
 * line here (see docs/architecture.md, "Who owns what").
 */

#define NGX_HTTP_IG_STAGES(stage)                                             \
    stage(schema_early)                    /* a limit key= reads the body */  \
    stage(limit)                           /* auth -> [limit] */              \
    stage(schema)                                                             \
    stage(inflate)                         /* a coded body schema left */     \
    stage(bloom)                                                              \
    stage(cache)                                                              \
    stage(breaker)                         /* [breaker] -> infer */

/* each stage file exports const ngx_http_ig_stage_t ngx_http_ig_NAME_stage */

#define NGX_HTTP_IG_STAGE_EXTERN(name)                                        \
    extern const ngx_http_ig_stage_t  ngx_http_ig_##name##_stage;
#define NGX_HTTP_IG_STAGE_REF(name)  &ngx_http_ig_##name##_stage,

NGX_HTTP_IG_STAGES(NGX_HTTP_IG_STAGE_EXTERN)

static const ngx_http_ig_stage_t  *ngx_http_ig_stages[] = {
    NGX_HTTP_IG_STAGES(NGX_HTTP_IG_STAGE_REF)
};

#define NGX_HTTP_IG_NSTAGES                                                   \
    (sizeof(ngx_http_ig_stages) / sizeof(ngx_http_ig_stages[0]))


static ngx_command_t  ngx_http_infergate_commands[] = {

    { ngx_string("infergate_model"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ig_loc_conf_t, model),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_module_ctx = {
    ngx_http_ig_preconfiguration,          /* preconfiguration */
    ngx_http_ig_postconfiguration,         /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_create_loc_conf,           /* create location configuration */
    ngx_http_ig_merge_loc_conf             /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_module_ctx,        /* module context */
    ngx_http_infergate_commands,           /* module directives */
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
 * After access (the precontent phase, before try_files and mirror): the
 * stages of ngx_http_ig_stages[] in order.  These are not access control,
 * so "satisfy any" does not skip them.  The phase engine re-enters this
 * handler after every asynchronous step (Redis reply, body read, cache
 * lookup); ctx->step says which stage it left off in.  An internal
 * redirect starts again from the first stage (ngx_http_ig_find_ctx()
 * resets it), and each stage skips what already ran with the same
 * configuration.  Returns NGX_DECLINED on pass: NGX_OK would skip
 * try_files and mirror.
 */

static ngx_int_t
ngx_http_ig_precontent_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_http_ig_ctx_t           *ctx;
    ngx_http_ig_loc_conf_t      *lcf;
    const ngx_http_ig_stage_t   *stage;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_module);

    if (r != r->main) {
        /* decided by the main request */
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_infergate_module);

    if (ctx && ctx->auth_deferred) {
        /* refused by auth, admitted by another module (satisfy any) */
        ctx->auth_deferred = 0;
        ngx_str_null(&ctx->action);
    }

    for (i = 0; i < NGX_HTTP_IG_NSTAGES; i++) {
        if (ngx_http_ig_stages[i]->on(r, lcf)) {
            break;
        }
    }

    if (i == NGX_HTTP_IG_NSTAGES) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a refusal may free the request: nothing is touched after one */

    for ( /* void */ ; ctx->step < NGX_HTTP_IG_NSTAGES; ctx->step++) {
        stage = ngx_http_ig_stages[ctx->step];

        if (stage->on(r, lcf)) {
            rc = stage->handler(r, ctx, lcf);
            if (rc != NGX_DECLINED) {
                return rc;
            }
        }
    }

    return NGX_DECLINED;
}


ngx_http_ig_ctx_t *
ngx_http_ig_find_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;
    ngx_http_ig_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_infergate_module);
    if (ctx) {
        return ctx;
    }

    /*
     * ngx_http_internal_redirect() and named locations zero r->ctx: find
     * ours again.  For the main request that means a new location, whose
     * steps run from the start; a subrequest (same pool) shares the main
     * request's state.
     */

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_ig_ctx_cleanup) {
            ctx = cln->data;

            if (r == r->main) {
                ctx->step = 0;
                ctx->model_done = 0;
                ctx->auth_deferred = 0;
            }

            ngx_http_set_ctx(r, ctx, ngx_http_infergate_module);
            return ctx;
        }
    }

    return NULL;
}


ngx_http_ig_ctx_t *
ngx_http_ig_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t  *cln;
    ngx_http_ig_ctx_t   *ctx;

    ctx = ngx_http_ig_find_ctx(r);
    if (ctx) {
        return ctx;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_ig_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_ig_ctx_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_infergate_module);

    return ctx;
}


static void
ngx_http_ig_ctx_cleanup(void *data)
{
    ngx_http_ig_ctx_t  *ctx = data;

    if (ctx->validator) {
        ig_validator_destroy(ctx->validator);
        ctx->validator = NULL;
    }
}


static void *
ngx_http_ig_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ig_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->model = NULL;
     */

    return conf;
}


static char *
ngx_http_ig_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_loc_conf_t *prev = parent;
    ngx_http_ig_loc_conf_t *conf = child;

    if (conf->model == NULL) {
        conf->model = prev->model;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ig_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_ig_core_variables(cf);
}


static ngx_int_t
ngx_http_ig_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * Pushed last, so run first in the precontent phase: a request is
     * limited and checked before try_files redirects it or mirror copies
     * it.
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ig_precontent_handler;

    return NGX_OK;
}


/*
 * Reads a whole configuration file (keys, schema, audit key) into the
 * temp pool, NUL-terminated; *name is resolved against the configuration
 * prefix.  Errors name the directive and the file.  fi, when given,
 * receives the file's status (the audit key's mode is checked on it).
 */

ngx_int_t
ngx_http_ig_read_conf_file(ngx_conf_t *cf, const char *directive,
    ngx_str_t *name, size_t max, ngx_str_t *out, ngx_file_info_t *fi)
{
    size_t           size;
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_file_t       f;
    ngx_file_info_t  info;

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(name->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot open \"%V\"", directive, name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &info) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot stat \"%V\"", directive, name);
        goto failed;
    }

    size = (size_t) ngx_file_size(&info);

    if (size > max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s: \"%V\" is larger than %uzk",
                           directive, name, max / 1024);
        goto failed;
    }

    out->data = ngx_pnalloc(cf->temp_pool, size + 1);
    if (out->data == NULL) {
        goto failed;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.fd = fd;
    f.name = *name;
    f.log = cf->log;

    n = ngx_read_file(&f, out->data, size, 0);
    if (n == NGX_ERROR || (size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "%s: cannot read \"%V\"", directive, name);
        goto failed;
    }

    ngx_close_file(fd);

    out->data[size] = '\0';
    out->len = size;

    if (fi) {
        *fi = info;
    }

    return NGX_OK;

failed:

    ngx_close_file(fd);
    return NGX_ERROR;
}


/* Adds an output header whose key and value outlive the request. */

ngx_int_t
ngx_http_ig_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


/*
 * Request bytes for a log line (a URI, a limit key, a model name): bytes
 * below 0x20, 0x7f and above, '"' and '\' become \xNN, so a request can
 * neither start a forged line nor close a quoted field.  The result goes
 * into buf (NGX_HTTP_IG_LOG_MAX bytes) and ends in "..." when cut.
 */

ngx_str_t
ngx_http_ig_log_escape(u_char *buf, const u_char *s, size_t len)
{
    u_char      *p, *last, c;
    ngx_str_t    out;
    static u_char  hex[] = "0123456789abcdef";

    p = buf;
    last = buf + NGX_HTTP_IG_LOG_MAX - (sizeof("...") - 1);

    while (len) {
        c = *s;

        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            if (last - p < 4) {
                break;
            }

            *p++ = '\\';
            *p++ = 'x';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 0xf];

        } else {
            if (p == last) {
                break;
            }

            *p++ = c;
        }

        s++;
        len--;
    }

    if (len) {
        p = ngx_cpymem(p, "...", sizeof("...") - 1);
    }

    out.data = buf;
    out.len = p - buf;

    return out;
}
