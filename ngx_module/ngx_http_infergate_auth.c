
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


static ngx_int_t ngx_http_ig_auth_key(ngx_http_request_t *r,
    ngx_str_t *key);
static ngx_int_t ngx_http_ig_auth_strip(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_auth_refuse(ngx_http_request_t *r,
    const char *challenge, const char *detail);


ngx_int_t
ngx_http_ig_auth(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    u_char                   *p;
    size_t                    len;
    ngx_str_t                 key, detail;
    ngx_uint_t                i;
    ngx_http_ig_key_t        *k;
    ngx_http_ig_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_infergate_module);

    ngx_str_set(&ctx->action, "unauthorized");

    if (ngx_http_ig_auth_key(r, &key) != NGX_OK) {
        if (ngx_http_ig_auth_strip(r) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_ig_auth_refuse(r, "Bearer realm=\"infergate\"",
                                       "an API key is required: send "
                                       "\"Authorization: Bearer <key>\" "
                                       "or \"X-API-Key: <key>\"");
    }

    k = ngx_http_ig_keys_find(mcf->keys, key.data, key.len);

    if (ngx_http_ig_auth_strip(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (k == NULL) {
        return ngx_http_ig_auth_refuse(r, "Bearer realm=\"infergate\", "
                                       "error=\"invalid_token\"",
                                       "the API key is not valid");
    }

    ctx->key = k;
    ngx_str_null(&ctx->action);

    if (k->nmodels == 0) {
        return NGX_DECLINED;
    }

    if (ngx_http_ig_model(r, ctx, lcf) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->model.len == 0) {
        return NGX_DECLINED;
    }

    for (i = 0; i < k->nmodels; i++) {
        if (k->models[i].len == ctx->model.len
            && ngx_strncmp(k->models[i].data, ctx->model.data,
                           ctx->model.len) == 0)
        {
            return NGX_DECLINED;
        }
    }

    len = sizeof("tenant \"\" may not use model \"\"") - 1
          + k->tenant.len + ctx->model.len;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    detail.data = p;
    detail.len = ngx_sprintf(p, "tenant \"%V\" may not use model \"%V\"",
                             &k->tenant, &ctx->model)
                 - p;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "infergate: %V", &detail);

    ngx_str_set(&ctx->action, "forbidden");

    return ngx_http_ig_problem(r, NGX_HTTP_FORBIDDEN,
                               NGX_HTTP_IG_PROBLEM_BASE "forbidden",
                               "Forbidden", &detail, NULL);
}


/*
 * The requested model: infergate_model when set, else {m} of
 * "/v2/models/{m}[/...]" (the Open Inference Protocol's path).
 */

ngx_int_t
ngx_http_ig_model(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    u_char  *p, *last;

    if (ctx->model_done) {
        return NGX_OK;
    }

    ctx->model_done = 1;

    if (lcf->model) {
        return ngx_http_complex_value(r, lcf->model, &ctx->model);
    }

    if (r->uri.len <= sizeof("/v2/models/") - 1
        || ngx_strncmp(r->uri.data, "/v2/models/", sizeof("/v2/models/") - 1)
           != 0)
    {
        return NGX_OK;
    }

    p = r->uri.data + sizeof("/v2/models/") - 1;
    last = r->uri.data + r->uri.len;

    ctx->model.data = p;

    while (p < last && *p != '/') {
        p++;
    }

    ctx->model.len = p - ctx->model.data;

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

            if ((h[i].key.len == sizeof("X-API-Key") - 1
                 && ngx_strncasecmp(h[i].key.data, (u_char *) "X-API-Key",
                                    sizeof("X-API-Key") - 1) == 0)
                || (h[i].key.len == sizeof("Authorization") - 1
                    && ngx_strncasecmp(h[i].key.data,
                                       (u_char *) "Authorization",
                                       sizeof("Authorization") - 1) == 0))
            {
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


static ngx_int_t
ngx_http_ig_auth_refuse(ngx_http_request_t *r, const char *challenge,
    const char *detail)
{
    if (ngx_http_ig_add_header(r, "WWW-Authenticate", (u_char *) challenge,
                               ngx_strlen(challenge))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_ig_problem_cstr(r, NGX_HTTP_UNAUTHORIZED,
                                    NGX_HTTP_IG_PROBLEM_BASE "unauthorized",
                                    "Unauthorized", detail);
}
