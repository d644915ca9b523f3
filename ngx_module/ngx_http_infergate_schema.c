
/*
 * Copyright (C) infergate authors
 *
 * Streaming JSON-schema validation of the request body.  This stage
 * starts the body read; the request body filter
 * (filters/ngx_http_infergate_schema_filter.c) feeds each buffer to the
 * validator as it arrives, before nginx spools it to a temp file, so no
 * second copy of the body is ever assembled.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


#define NGX_HTTP_IG_ALLOC_HDR  16


typedef struct {
    ig_schema_t                *schema;
    ngx_str_t                   schema_file;
    ngx_uint_t                  max_depth;
    unsigned                    schema_set:1;
    unsigned                    body_keys:1; /* a limit key reads the body */
    unsigned                    body_vars:1; /* a Bloom or cache key does  */
} ngx_http_ig_schema_loc_conf_t;


/* infergate_json_var: the pointers, and the variables' names */

typedef struct {
    ngx_array_t                 watches;     /* ig_watch_t                 */
    ngx_array_t                 names;       /* ngx_str_t, without "$"     */
    ngx_array_t                 limit_vars;  /* ngx_http_ig_limit_var_t    */
    ig_schema_t                *any;         /* "{}": no schema, body keys */
} ngx_http_ig_schema_main_conf_t;


/* a variable a key= names, the directive's kind, and where */

typedef struct {
    ngx_str_t                   name;
    void                       *slcf;        /* schema loc conf there      */
    ngx_uint_t                  limit;       /* infergate_limit            */
} ngx_http_ig_limit_var_t;


static ngx_uint_t ngx_http_ig_schema_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static ngx_uint_t ngx_http_ig_schema_early_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static char *ngx_http_ig_json_var_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_ig_json_var_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static void ngx_http_ig_on_value(void *data, size_t index,
    const unsigned char *value, size_t value_len);
static void *ngx_http_ig_schema_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ig_schema_init_main_conf(ngx_conf_t *cf, void *conf);
static ngx_int_t ngx_http_ig_schema_handler(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static char *ngx_http_ig_schema_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ig_max_depth(ngx_conf_t *cf, void *post, void *data);
static void *ngx_http_ig_schema_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_schema_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_schema(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_schema_loc_conf_t *lcf);
static void ngx_http_ig_schema_cleanup(void *data);
static ngx_int_t ngx_http_ig_schema_start(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_schema_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_schema_again(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_schema_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_schema_precheck(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_validator_new(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_schema_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_schema_result(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_schema_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_is_json(ngx_http_request_t *r,
    ngx_uint_t binary);
static ngx_int_t ngx_http_ig_schema_binary(ngx_http_request_t *r,
    off_t *json);
static void ngx_http_ig_body_handler(ngx_http_request_t *r);
static void ngx_http_ig_on_member(void *data, const unsigned char *name,
    size_t name_len, const unsigned char *value, size_t value_len);
static ngx_int_t ngx_http_ig_schema_refuse(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);
static void *ngx_http_ig_pool_malloc(void *ctx, size_t size);
static void *ngx_http_ig_pool_realloc(void *ctx, void *ptr, size_t size);
static void ngx_http_ig_pool_free(void *ctx, void *ptr);


static ngx_conf_post_handler_pt  ngx_http_ig_max_depth_p =
    ngx_http_ig_max_depth;


static ngx_command_t  ngx_http_ig_schema_commands[] = {

    { ngx_string("infergate_schema"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_ig_schema_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_json_var"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_ig_json_var_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("infergate_schema_max_depth"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ig_schema_loc_conf_t, max_depth),
      &ngx_http_ig_max_depth_p },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_schema_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_ig_schema_create_main_conf,   /* create main configuration */
    ngx_http_ig_schema_init_main_conf,     /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_schema_create_loc_conf,    /* create location configuration */
    ngx_http_ig_schema_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_schema_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_schema_module_ctx, /* module context */
    ngx_http_ig_schema_commands,           /* module directives */
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


const ngx_http_ig_stage_t  ngx_http_ig_schema_stage = {
    ngx_string("schema"),
    ngx_http_ig_schema_on,
    ngx_http_ig_schema_handler
};


/*
 * Before the limits, where a limit's key= reads the body (a JSON
 * variable): the body is read and validated first, so that the key has
 * its value.  The schema stage then finds it done.
 */

const ngx_http_ig_stage_t  ngx_http_ig_schema_early_stage = {
    ngx_string("schema"),
    ngx_http_ig_schema_early_on,
    ngx_http_ig_schema_handler
};


static void *
ngx_http_ig_schema_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ig_schema_main_conf_t  *smcf;

    smcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_schema_main_conf_t));
    if (smcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&smcf->watches, cf->pool, 4, sizeof(ig_watch_t))
        != NGX_OK
        || ngx_array_init(&smcf->names, cf->pool, 4, sizeof(ngx_str_t))
           != NGX_OK
        || ngx_array_init(&smcf->limit_vars, cf->pool, 4,
                          sizeof(ngx_http_ig_limit_var_t))
           != NGX_OK)
    {
        return NULL;
    }

    return smcf;
}


/* infergate_json_var $name /json/pointer; */

static char *
ngx_http_ig_json_var_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_ig_schema_main_conf_t *smcf = conf;

    u_char               *p, *last;
    ngx_str_t            *value, *name;
    ngx_uint_t            i;
    ig_watch_t           *w;
    ngx_http_variable_t  *var;

    value = cf->args->elts;

    if (value[1].len < 2 || value[1].data[0] != '$') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_json_var: invalid variable name "
                           "\"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    value[1].data++;
    value[1].len--;

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '_'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_json_var: invalid variable name "
                               "\"$%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (value[1].len >= sizeof("infergate_") - 1
        && ngx_strncasecmp(value[1].data, (u_char *) "infergate_",
                           sizeof("infergate_") - 1)
           == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_json_var: \"$%V\": the prefix "
                           "\"infergate_\" is the module's own",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    /* RFC 6901: "/" then segments; "~" only as "~0" or "~1" */

    p = value[2].data;
    last = p + value[2].len;

    if (p == last || *p != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_json_var: \"%V\" is not a JSON "
                           "pointer to a member (it must start with \"/\")",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    for ( /* void */ ; p < last; p++) {
        if (*p == '~' && (p + 1 == last || (p[1] != '0' && p[1] != '1'))) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_json_var: \"%V\": \"~\" must be "
                               "followed by 0 or 1 (RFC 6901)", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    name = smcf->names.elts;

    for (i = 0; i < smcf->names.nelts; i++) {
        if (name[i].len == value[1].len
            && ngx_strncasecmp(name[i].data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_json_var: \"$%V\" is duplicate",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    var = ngx_http_add_variable(cf, &value[1], NGX_HTTP_VAR_NOCACHEABLE);
    if (var == NULL) {
        return NGX_CONF_ERROR;
    }

    var->get_handler = ngx_http_ig_json_var_variable;
    var->data = smcf->watches.nelts;

    w = ngx_array_push(&smcf->watches);
    name = ngx_array_push(&smcf->names);
    if (w == NULL || name == NULL) {
        return NGX_CONF_ERROR;
    }

    w->pointer = value[2].data;
    w->len = value[2].len;
    *name = value[1];

    return NGX_CONF_OK;
}


/*
 * Called by the key= parsers (ngx_http_ig_check_var_case()) for each
 * variable a key names: a limit whose key reads the body makes this
 * location validate the body before the limits.
 */

void
ngx_http_ig_schema_note_key(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *var)
{
    ngx_http_ig_limit_var_t         *lv;
    ngx_http_ig_schema_main_conf_t  *smcf;

    /* decided once the http block is read: json vars may come later */

    smcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_infergate_schema_module);

    lv = ngx_array_push(&smcf->limit_vars);
    if (lv == NULL) {
        return;
    }

    lv->name = *var;
    lv->slcf = ngx_http_conf_get_module_loc_conf(cf,
                                              ngx_http_infergate_schema_module);
    lv->limit = (directive->len == sizeof("infergate_limit") - 1
                 && ngx_strncmp(directive->data, "infergate_limit",
                                directive->len)
                    == 0);
}


/*
 * After the http block, before the merges: each place whose keys read
 * the body ($infergate_json_<name>, an infergate_json_var) has its body
 * parsed: before the limits when a limit's key does, and even without
 * infergate_schema (against "{}", any JSON).
 */

static char *
ngx_http_ig_schema_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ig_schema_main_conf_t *smcf = conf;

    char                            err[128];
    ngx_str_t                      *name, *var;
    ngx_uint_t                      i, j, body;
    ngx_pool_cleanup_t             *cln;
    ngx_http_ig_limit_var_t        *lv;
    ngx_http_ig_schema_loc_conf_t  *slcf;

    lv = smcf->limit_vars.elts;
    name = smcf->names.elts;

    for (i = 0; i < smcf->limit_vars.nelts; i++) {
        var = &lv[i].name;

        body = (var->len >= sizeof("infergate_json_") - 1
                && ngx_strncasecmp(var->data, (u_char *) "infergate_json_",
                                   sizeof("infergate_json_") - 1)
                   == 0);

        for (j = 0; !body && j < smcf->names.nelts; j++) {
            body = (name[j].len == var->len
                    && ngx_strncasecmp(name[j].data, var->data, var->len)
                       == 0);
        }

        if (!body) {
            continue;
        }

        slcf = lv[i].slcf;

        if (lv[i].limit) {
            slcf->body_keys = 1;

        } else {
            slcf->body_vars = 1;
        }

        if (smcf->any == NULL) {
            smcf->any = ig_schema_compile((u_char *) "{}", 2, err,
                                          sizeof(err));
            if (smcf->any == NULL) {
                return NGX_CONF_ERROR;
            }

            cln = ngx_pool_cleanup_add(cf->pool, 0);
            if (cln == NULL) {
                ig_schema_free(smcf->any);
                smcf->any = NULL;
                return NGX_CONF_ERROR;
            }

            cln->handler = ngx_http_ig_schema_cleanup;
            cln->data = smcf->any;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_ig_json_var_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r->main);

    if (ctx == NULL || ctx->json_vars == NULL
        || ctx->valid_rc != IG_VALID_OK
        || ctx->json_vars[data].data == NULL)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_ig_set_value(v, &ctx->json_vars[data]);

    return NGX_OK;
}


static void
ngx_http_ig_on_value(void *data, size_t index, const unsigned char *value,
    size_t value_len)
{
    ngx_http_ig_ctx_t *ctx = data;

    ngx_str_t  *s;

    s = &ctx->json_vars[index];

    s->data = ngx_pnalloc(ctx->pool, value_len + 1);
    if (s->data == NULL) {
        s->len = 0;
        return;
    }

    ngx_memcpy(s->data, value, value_len);
    s->len = value_len;
}


static char *
ngx_http_ig_schema_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_schema_loc_conf_t *lcf = conf;

    char                 err[512];
    ngx_str_t           *value, file, text;
    ig_schema_t         *schema;
    ngx_pool_cleanup_t  *cln;

    if (lcf->schema_set) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        lcf->schema = NULL;
        lcf->schema_set = 1;
        return NGX_CONF_OK;
    }

    file = value[1];

    if (ngx_http_ig_read_conf_file(cf, "infergate_schema", &file,
                                   4 * 1024 * 1024, &text, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    schema = ig_schema_compile(text.data, text.len, err, sizeof(err));

    if (schema == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_schema: \"%V\": %s", &file, err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ig_schema_free(schema);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_ig_schema_cleanup;
    cln->data = schema;

    lcf->schema = schema;
    lcf->schema_file = file;
    lcf->schema_set = 1;

    return NGX_CONF_OK;
}


static void
ngx_http_ig_schema_cleanup(void *data)
{
    ig_schema_free(data);
}


static void *
ngx_http_ig_schema_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ig_schema_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_schema_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->schema = NULL;
     *     conf->schema_set = 0;
     */

    conf->max_depth = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_ig_schema_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_schema_loc_conf_t *prev = parent;
    ngx_http_ig_schema_loc_conf_t *conf = child;

    ngx_conf_merge_uint_value(conf->max_depth, prev->max_depth, 64);

    if (prev->body_keys) {
        conf->body_keys = 1;
    }

    if (prev->body_vars) {
        conf->body_vars = 1;
    }

    if (!conf->schema_set) {
        conf->schema = prev->schema;
        conf->schema_file = prev->schema_file;
        conf->schema_set = prev->schema_set;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ig_max_depth(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *np = data;

    if (*np < 1 || *np > 4096) {
        return "must be between 1 and 4096";
    }

    return NGX_CONF_OK;
}


static ngx_uint_t
ngx_http_ig_schema_on(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_schema_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_schema_module);

    return slcf->schema != NULL || slcf->body_vars || slcf->body_keys;
}


static ngx_uint_t
ngx_http_ig_schema_early_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_schema_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_schema_module);

    return slcf->body_keys;
}


static ngx_int_t
ngx_http_ig_schema_handler(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_schema_loc_conf_t    any, *slcf;
    ngx_http_ig_schema_main_conf_t  *smcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_schema_module);

    if (slcf->schema) {
        return ngx_http_ig_schema(r, ctx, slcf);
    }

    /*
     * No schema, but a key reads the body: any JSON, parsed for its
     * values.  A request without a body has none (its keys are empty);
     * one whose body is not JSON is refused, so that no key is dodged.
     */

    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return NGX_DECLINED;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_infergate_schema_module);

    any = *slcf;
    any.schema = smcf->any;

    return ngx_http_ig_schema(r, ctx, &any);
}


/*
 * The body step of one location.  A body that passed this very schema
 * (at the same depth) before an internal redirect is not parsed again;
 * one checked against another schema, or read by another step (the
 * cache's POST key), is validated again from the buffers nginx kept.
 */

static ngx_int_t
ngx_http_ig_schema(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_schema_loc_conf_t *lcf)
{
    if (ctx->schema_ok == lcf->schema
        && ctx->schema_depth == lcf->max_depth)
    {
        return NGX_DECLINED;
    }

    switch (ctx->body_state) {

    case NGX_HTTP_IG_BODY_NONE:

        if (r->request_body || r->discard_body) {
            return ngx_http_ig_schema_again(r, ctx, lcf);
        }

        return ngx_http_ig_schema_start(r, ctx, lcf);

    case NGX_HTTP_IG_BODY_READING:
        return NGX_AGAIN;

    case NGX_HTTP_IG_BODY_DONE:
        return ngx_http_ig_schema_result(r, ctx, lcf);

    default: /* NGX_HTTP_IG_BODY_CHECKED, against another schema */
        return ngx_http_ig_schema_again(r, ctx, lcf);
    }
}


/*
 * 400 without a body, 415 unless it is JSON (no Content-Type at all is
 * taken as JSON: tritonclient.http sends none) or its Content-Encoding
 * is not one the inflate filter decodes here; NGX_OK to go on.
 */

static ngx_int_t
ngx_http_ig_schema_precheck(ngx_http_request_t *r)
{
    off_t      json;
    ngx_int_t  rc;

    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return ngx_http_ig_problem_cstr(r, NGX_HTTP_BAD_REQUEST,
                                        NGX_HTTP_IG_PROBLEM_BASE
                                        "body-required",
                                        "Request body required",
                                        "this endpoint needs a JSON "
                                        "request body");
    }

    rc = ngx_http_ig_inflate_check(r);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_ig_schema_binary(r, &json);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_ig_is_json(r, json != -1) != NGX_OK) {
        return ngx_http_ig_problem_cstr(r,
                                        NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                        NGX_HTTP_IG_PROBLEM_BASE
                                        "unsupported-media-type",
                                        "Unsupported Media Type",
                                        json == -1
                                        ? "the request body must be sent "
                                          "as \"Content-Type: "
                                          "application/json\""
                                        : "a binary request body must be "
                                          "sent as \"Content-Type: "
                                          "application/octet-stream\" "
                                          "or \"application/json\"");
    }

    return NGX_OK;
}


/*
 * Triton's binary tensor data extension: with
 * "Inference-Header-Content-Length: N" only the body's first N bytes are
 * JSON (checked here), the rest raw tensors (checked by the infer
 * handler against the model).  *json is N, or -1 without the header.
 * NGX_OK, or the 400 refusal of a header that is not one number, or
 * that is 0 (a raw request: no JSON for the schema, or a body key, to
 * read).  One longer than the (inflated) body is refused once the body
 * is read (ngx_http_ig_schema_result()).
 */

static ngx_int_t
ngx_http_ig_schema_binary(ngx_http_request_t *r, off_t *json)
{
    const char  *detail;

    detail = NULL;

    if (ngx_http_ig_oip_header_len(r, json) != NGX_OK) {
        detail = "Inference-Header-Content-Length must be given once, "
                 "as the byte length of the JSON header";

    } else if (*json == 0) {
        detail = "this endpoint checks the JSON inference header: a raw "
                 "binary request (Inference-Header-Content-Length: 0) "
                 "has none";
    }

    if (detail == NULL) {
        return NGX_OK;
    }

    return ngx_http_ig_problem_cstr(r, NGX_HTTP_BAD_REQUEST,
                                    NGX_HTTP_IG_PROBLEM_BASE
                                    "invalid-inference-header",
                                    "Invalid Inference-Header-Content-Length",
                                    detail);
}


static ngx_int_t
ngx_http_ig_validator_new(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_schema_loc_conf_t *lcf)
{
    ngx_http_ig_schema_main_conf_t  *smcf;

    if (ctx->validator) {
        ig_validator_destroy(ctx->validator);
        ctx->validator = NULL;
    }

    /* the members of the body as this schema sees it */
    ctx->members.nelts = 0;

    ctx->alloc.malloc = ngx_http_ig_pool_malloc;
    ctx->alloc.realloc = ngx_http_ig_pool_realloc;
    ctx->alloc.free = ngx_http_ig_pool_free;
    ctx->alloc.ctx = r->pool;

    ctx->validator = ig_validator_create(lcf->schema, &ctx->alloc,
                                         (unsigned) lcf->max_depth,
                                         ngx_http_ig_on_member, ctx);
    if (ctx->validator == NULL) {
        return NGX_ERROR;
    }

    smcf = ngx_http_get_module_main_conf(r, ngx_http_infergate_schema_module);

    if (smcf->watches.nelts) {
        /* the values of the body this schema checks */
        ctx->json_vars = ngx_pcalloc(r->pool,
                                     smcf->watches.nelts * sizeof(ngx_str_t));
        if (ctx->json_vars == NULL) {
            return NGX_ERROR;
        }

        ig_validator_watch(ctx->validator, smcf->watches.elts,
                           smcf->watches.nelts, ngx_http_ig_on_value);
    }

    ctx->pool = r->pool;
    ctx->valid_rc = IG_VALID_OK;
    ctx->body_bytes = 0;
    ctx->body_finished = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_schema_start(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_schema_loc_conf_t *lcf)
{
    ngx_int_t  rc;

    ngx_str_set(&ctx->action, "schema_rejected");

    rc = ngx_http_ig_schema_precheck(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_ig_validator_new(r, ctx, lcf) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->body_state = NGX_HTTP_IG_BODY_READING;

    rc = ngx_http_read_client_request_body(r, ngx_http_ig_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


/*
 * Validates a body that is already read: its buffers in memory and in the
 * temp file.  Synchronous, as nginx itself reads a spooled body when it
 * proxies it.
 */

static ngx_int_t
ngx_http_ig_schema_again(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_schema_loc_conf_t *lcf)
{
    u_char       buf[4096];
    off_t        off, json;
    size_t       size;
    ssize_t      n;
    ngx_int_t    rc;
    ngx_buf_t   *b;
    ngx_chain_t  *cl;

    ngx_str_set(&ctx->action, "schema_rejected");

    rc = ngx_http_ig_schema_precheck(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (r->request_body == NULL || r->request_body->rest
        || (r->request_body->bufs == NULL && r->discard_body))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "infergate_schema: the request body was not kept "
                      "for this location to check");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ig_validator_new(r, ctx, lcf) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_ig_oip_header_len(r, &json) != NGX_OK || json == -1) {
        json = NGX_MAX_OFF_T_VALUE;
    }

    /* every byte is counted; only JSON not yet refused is read */

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            ngx_http_ig_schema_feed(r, ctx, b->pos, b->last - b->pos, 0);
            continue;
        }

        if (!b->in_file || b->file == NULL) {
            continue;
        }

        for (off = b->file_pos; off < b->file_last; off += n) {

            if (ctx->valid_rc != IG_VALID_OK || ctx->body_bytes >= json) {
                ctx->body_bytes += b->file_last - off;
                break;
            }

            size = (size_t) ngx_min(b->file_last - off, (off_t) sizeof(buf));

            n = ngx_read_file(b->file, buf, size, off);

            if (n == NGX_ERROR || n == 0) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_http_ig_schema_feed(r, ctx, buf, n, 0);
        }
    }

    ngx_http_ig_schema_feed(r, ctx, NULL, 0, 1);

    ctx->body_state = NGX_HTTP_IG_BODY_DONE;

    return ngx_http_ig_schema_result(r, ctx, lcf);
}


/*
 * The validator's input: n bytes of the (inflated) body, at offset
 * ctx->body_bytes; "last" at its end.  Of a binary request
 * (Inference-Header-Content-Length: N) only the first N bytes are JSON:
 * the validator finishes there and the tensors after them are counted,
 * not parsed.
 */

void
ngx_http_ig_schema_feed(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    u_char *p, size_t n, ngx_uint_t last)
{
    off_t  json, off;

    if (ctx->validator == NULL || ctx->body_finished) {
        return;
    }

    if (ngx_http_ig_oip_header_len(r, &json) != NGX_OK) {
        /* refused by the precheck before the body was read */
        json = -1;
    }

    off = ctx->body_bytes;
    ctx->body_bytes += n;

    if (json != -1) {
        if (off >= json) {
            n = 0;

        } else if ((off_t) n > json - off) {
            n = (size_t) (json - off);
        }
    }

    if (n && ctx->valid_rc == IG_VALID_OK) {
        ctx->valid_rc = ig_validator_feed(ctx->validator, p, n);
    }

    if (json > 0 && off < json && ctx->body_bytes >= json) {
        /* the JSON header is complete: what follows is tensors */
        if (ctx->valid_rc == IG_VALID_OK) {
            ctx->valid_rc = ig_validator_finish(ctx->validator);
        }
    }

    if (!last) {
        return;
    }

    if ((json <= 0 || ctx->body_bytes < json)
        && ctx->valid_rc == IG_VALID_OK)
    {
        /* a JSON body, or a binary one cut inside its header */
        ctx->valid_rc = ig_validator_finish(ctx->validator);
    }

    ctx->body_finished = 1;
}


/* infergate_inflate's default: whether this location reads JSON bodies */

ngx_uint_t
ngx_http_ig_schema_reads_body(ngx_http_request_t *r)
{
    return ngx_http_ig_schema_on(r, NULL);
}


static void
ngx_http_ig_body_handler(ngx_http_request_t *r)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r);
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->body_state = NGX_HTTP_IG_BODY_DONE;

    /* the content handler (proxy_pass) reads the same body again */
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_ig_schema_result(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_schema_loc_conf_t *lcf)
{
    off_t      json;
    ngx_int_t  rc;

    if (!ctx->body_finished) {
        ngx_http_ig_schema_feed(r, ctx, NULL, 0, 1);
    }

    ctx->body_state = NGX_HTTP_IG_BODY_CHECKED;

    if (ctx->inflate_status) {
        /* the body did not inflate: what the validator saw is cut */
        return ngx_http_ig_inflate_refuse(r, ctx);
    }

    if (ngx_http_ig_oip_header_len(r, &json) == NGX_OK
        && json > ctx->body_bytes)
    {
        return ngx_http_ig_problem_cstr(r, NGX_HTTP_BAD_REQUEST,
                                        NGX_HTTP_IG_PROBLEM_BASE
                                        "invalid-inference-header",
                                        "Invalid "
                                        "Inference-Header-Content-Length",
                                        "Inference-Header-Content-Length "
                                        "is larger than the request body");
    }

    if (ctx->valid_rc != IG_VALID_OK && ctx->valid_rc != IG_VALID_NOMEM) {
        /*
         * The refusal may finalize the request and free its pool: neither
         * r nor ctx may be touched after it; the pool cleanup releases the
         * validator (the audit record reads its errors first).
         */
        return ngx_http_ig_schema_refuse(r, ctx);
    }

    rc = (ctx->valid_rc == IG_VALID_OK) ? NGX_DECLINED
                                        : NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (rc == NGX_DECLINED) {
        ngx_str_null(&ctx->action);
        ctx->schema_ok = lcf->schema;
        ctx->schema_depth = lcf->max_depth;
    }

    ig_validator_destroy(ctx->validator);
    ctx->validator = NULL;

    return rc;
}


static ngx_int_t
ngx_http_ig_schema_refuse(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    u_char             *p;
    int                 truncated;
    size_t              i, n, len;
    ngx_str_t           detail, extra;
    const char         *type, *title;
    const ig_verror_t  *errors;

    n = ig_validator_errors(ctx->validator, &errors, &truncated);

    len = sizeof(",\"errors\":[],\"errors_truncated\":true") - 1
          + NGX_SIZE_T_LEN + sizeof(" errors") + 64;

    for (i = 0; i < n; i++) {
        len += sizeof("{\"pointer\":,\"detail\":},") - 1
               + ngx_http_ig_json_str_len((u_char *) errors[i].pointer,
                                          ngx_strlen(errors[i].pointer))
               + ngx_http_ig_json_str_len((u_char *) errors[i].detail,
                                          ngx_strlen(errors[i].detail));
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    extra.data = p;
    p = ngx_cpymem(p, ",\"errors\":[", sizeof(",\"errors\":[") - 1);

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, "{\"pointer\":", sizeof("{\"pointer\":") - 1);
        p = ngx_http_ig_json_str(p, (u_char *) errors[i].pointer,
                                 ngx_strlen(errors[i].pointer));
        p = ngx_cpymem(p, ",\"detail\":", sizeof(",\"detail\":") - 1);
        p = ngx_http_ig_json_str(p, (u_char *) errors[i].detail,
                                 ngx_strlen(errors[i].detail));
        *p++ = '}';
    }

    *p++ = ']';

    if (truncated) {
        p = ngx_cpymem(p, ",\"errors_truncated\":true",
                       sizeof(",\"errors_truncated\":true") - 1);
    }

    extra.len = p - extra.data;

    switch (ctx->valid_rc) {

    case IG_VALID_SYNTAX:
        type = NGX_HTTP_IG_PROBLEM_BASE "malformed-json";
        title = "Malformed JSON";
        break;

    case IG_VALID_DEPTH:
        type = NGX_HTTP_IG_PROBLEM_BASE "nesting-too-deep";
        title = "JSON nested too deeply";
        break;

    default:
        type = NGX_HTTP_IG_PROBLEM_BASE "invalid-body";
        title = "Request body does not match the schema";
        break;
    }

    if (ctx->valid_rc == IG_VALID_INVALID || n == 0) {
        detail.data = p;
        detail.len = ngx_sprintf(p, "%uz%s error%s", n,
                                 truncated ? " or more" : "",
                                 n == 1 ? "" : "s")
                     - p;

    } else {
        detail.data = (u_char *) errors[0].detail;
        detail.len = ngx_strlen(errors[0].detail);
    }

    return ngx_http_ig_problem(r, NGX_HTTP_BAD_REQUEST, type, title,
                               &detail, &extra);
}


/*
 * JSON: no Content-Type, or application/json; a binary request (with
 * Inference-Header-Content-Length) may also be application/octet-stream.
 */

static ngx_int_t
ngx_http_ig_is_json(ngx_http_request_t *r, ngx_uint_t binary)
{
    u_char  *p, *last;
    size_t   len;

    if (r->headers_in.content_type == NULL) {
        /* none at all: JSON (tritonclient.http, curl --data-binary) */
        return NGX_OK;
    }

    p = r->headers_in.content_type->value.data;
    last = p + r->headers_in.content_type->value.len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    len = sizeof("application/json") - 1;

    if ((size_t) (last - p) < len
        || ngx_strncasecmp(p, (u_char *) "application/json", len) != 0)
    {
        len = sizeof("application/octet-stream") - 1;

        if (!binary
            || (size_t) (last - p) < len
            || ngx_strncasecmp(p, (u_char *) "application/octet-stream",
                               len)
               != 0)
        {
            return NGX_DECLINED;
        }
    }

    p += len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    return (p == last || *p == ';') ? NGX_OK : NGX_DECLINED;
}


static void
ngx_http_ig_on_member(void *data, const unsigned char *name,
    size_t name_len, const unsigned char *value, size_t value_len)
{
    ngx_http_ig_ctx_t *ctx = data;

    ngx_http_ig_member_t  *m;

    if (ctx->members.elts == NULL
        && ngx_array_init(&ctx->members, ctx->pool, 8,
                          sizeof(ngx_http_ig_member_t))
           != NGX_OK)
    {
        return;
    }

    m = ngx_array_push(&ctx->members);
    if (m == NULL) {
        return;
    }

    m->name.data = ngx_pnalloc(ctx->pool, name_len + value_len + 1);
    if (m->name.data == NULL) {
        ctx->members.nelts--;
        return;
    }

    m->name.len = name_len;
    ngx_memcpy(m->name.data, name, name_len);

    m->value.data = m->name.data + name_len;
    m->value.len = value_len;
    ngx_memcpy(m->value.data, value, value_len);
}


/*
 * yajl allocates through these: every block comes from the request pool
 * and carries its size so that realloc can copy.
 */

static void *
ngx_http_ig_pool_malloc(void *ctx, size_t size)
{
    u_char  *p;

    p = ngx_palloc(ctx, size + NGX_HTTP_IG_ALLOC_HDR);
    if (p == NULL) {
        return NULL;
    }

    *(size_t *) p = size;

    return p + NGX_HTTP_IG_ALLOC_HDR;
}


static void *
ngx_http_ig_pool_realloc(void *ctx, void *ptr, size_t size)
{
    u_char  *p;
    size_t   old;

    if (ptr == NULL) {
        return ngx_http_ig_pool_malloc(ctx, size);
    }

    old = *(size_t *) ((u_char *) ptr - NGX_HTTP_IG_ALLOC_HDR);

    if (size <= old) {
        return ptr;
    }

    p = ngx_http_ig_pool_malloc(ctx, size);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, ptr, old);
    ngx_http_ig_pool_free(ctx, ptr);

    return p;
}


static void
ngx_http_ig_pool_free(void *ctx, void *ptr)
{
    if (ptr) {
        ngx_pfree(ctx, (u_char *) ptr - NGX_HTTP_IG_ALLOC_HDR);
    }
}
