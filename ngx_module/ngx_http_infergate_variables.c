
/*
 * Copyright (C) infergate authors
 *
 * $infergate_tenant, $infergate_model, $infergate_request_id and the
 * prefix family $infergate_json_<name> (top-level scalars of a validated
 * body, for the Bloom guard and the cache key of later stages).
 *
 * $infergate_json_<name> is the member whose name is exactly <name>,
 * byte for byte.  nginx treats variable names case-insensitively and
 * hands the handler the name lower-cased (ngx_http_get_variable_index()
 * stores it so), so $infergate_json_USER_ID is $infergate_json_user_id:
 * it reads the member "user_id" and never "USER_ID" or "User_Id"; a
 * member whose name holds an upper-case letter has no variable.  A body
 * that repeats a member name (at any depth) is refused by the validator
 * with 400 #invalid-body, so one name never has two values here.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


static ngx_int_t ngx_http_ig_tenant_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ig_model_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ig_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ig_json_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_ig_variables[] = {

    { ngx_string("infergate_tenant"), NULL,
      ngx_http_ig_tenant_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("infergate_model"), NULL,
      ngx_http_ig_model_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("infergate_request_id"), NULL,
      ngx_http_ig_request_id_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("infergate_json_"), NULL,
      ngx_http_ig_json_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE|NGX_HTTP_VAR_PREFIX, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_ig_core_variables(ngx_conf_t *cf)
{
    return ngx_http_ig_add_variables(cf, ngx_http_ig_variables);
}


ngx_int_t
ngx_http_ig_add_variables(ngx_conf_t *cf, ngx_http_variable_t *vars)
{
    ngx_http_variable_t  *var, *v;

    for (v = vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_tenant_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r->main);

    if (ctx == NULL || ctx->key == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_ig_set_value(v, &ctx->key->tenant);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_model_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ig_ctx_t       *ctx;
    ngx_http_ig_loc_conf_t  *lcf;

    ctx = ngx_http_ig_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_module);

    if (ngx_http_ig_model(r, ctx, lcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->model.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    ngx_http_ig_set_value(v, &ctx->model);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_request_id_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t  id;

    if (ngx_http_ig_request_id(r, &id) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_ig_set_value(v, &id);

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_json_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t *name = (ngx_str_t *) data;

    size_t                 len;
    u_char                *p;
    ngx_uint_t             i;
    ngx_http_ig_ctx_t     *ctx;
    ngx_http_ig_member_t  *m;

    ctx = ngx_http_ig_find_ctx(r->main);

    if (ctx == NULL || ctx->members.nelts == 0
        || ctx->valid_rc != IG_VALID_OK)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    p = name->data + sizeof("infergate_json_") - 1;
    len = name->len - (sizeof("infergate_json_") - 1);

    /* exact bytes; a validated body has no repeated member name */

    m = ctx->members.elts;

    for (i = 0; i < ctx->members.nelts; i++) {
        if (m[i].name.len == len && ngx_memcmp(m[i].name.data, p, len) == 0) {
            ngx_http_ig_set_value(v, &m[i].value);
            return NGX_OK;
        }
    }

    v->not_found = 1;

    return NGX_OK;
}


/*
 * nginx lower-cases variable names, so "$infergate_json_userId" would
 * silently read the member "userid".  An infergate directive argument
 * (a key= or tag= complex value) that spells an upper-case letter after
 * "$infergate_json_" is refused, naming the directive (cf->args[0]).
 * Each variable named is also shown to the schema module, which reads
 * the body before the limits where a limit's key needs it.
 */

ngx_int_t
ngx_http_ig_check_var_case(ngx_conf_t *cf, ngx_str_t *value)
{
    u_char     *p, *last, *name, *q;
    ngx_str_t  *args, var;

    static const char  prefix[] = "infergate_json_";

    args = cf->args->elts;
    p = value->data;
    last = p + value->len;

    for ( /* void */ ; p < last; p++) {
        if (*p != '$') {
            continue;
        }

        name = p + 1;

        if (name < last && *name == '{') {
            name++;
        }

        if ((size_t) (last - name) < sizeof(prefix) - 1
            || ngx_strncasecmp(name, (u_char *) prefix, sizeof(prefix) - 1)
               != 0)
        {
            continue;
        }

        for (q = name; q < last; q++) {
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')
                  || (*q >= '0' && *q <= '9') || *q == '_'))
            {
                break;
            }
        }

        var.data = name;
        var.len = q - name;

        for (q = name + sizeof(prefix) - 1; q < name + var.len; q++) {
            if (*q >= 'A' && *q <= 'Z') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V: \"$%V\" has an upper-case letter: "
                                   "nginx lower-cases variable names, so it "
                                   "would read a lower-case member; write "
                                   "it in lower case, or name the member "
                                   "with infergate_json_var",
                                   &args[0], &var);
                return NGX_ERROR;
            }
        }

        p = name + var.len - 1;
    }

    /* the other variables: does a limit's key read the body? */

    for (p = value->data; p < last; p++) {
        if (*p != '$') {
            continue;
        }

        name = p + 1;

        if (name < last && *name == '{') {
            name++;
        }

        for (q = name; q < last; q++) {
            if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')
                  || (*q >= '0' && *q <= '9') || *q == '_'))
            {
                break;
            }
        }

        var.data = name;
        var.len = q - name;

        if (var.len) {
            ngx_http_ig_schema_note_key(cf, &args[0], &var);
        }
    }

    return NGX_OK;
}


void
ngx_http_ig_set_value(ngx_http_variable_value_t *v, ngx_str_t *s)
{
    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;
}
