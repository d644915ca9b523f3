
/*
 * Copyright (C) infergate authors
 *
 * The tenant keys file: loaded at configuration time (so "nginx -s
 * reload" re-reads it) into an open-addressing table keyed by the
 * SHA-256 digest of the key.  Plain keys are never stored.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


static ngx_int_t ngx_http_ig_keys_insert(ngx_http_ig_keys_t *keys,
    ngx_http_ig_key_t *key);
static void ngx_http_ig_keys_cleanup(void *data);


char *
ngx_http_ig_keys_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_auth_main_conf_t *mcf = conf;

    char                 msg[256];
    u_char              *data, *p, *last, *eol;
    size_t               size, n;
    ngx_str_t           *value, file, text;
    ngx_uint_t           line, i, nlines;
    ig_key_entry_t       e;
    ngx_http_ig_key_t    key;
    ngx_http_ig_keys_t  *keys;
    ngx_pool_cleanup_t  *cln;

    if (mcf->keys) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_http_ig_read_conf_file(cf, "infergate_keys", &file,
                                   64 * 1024 * 1024, &text, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    data = text.data;
    size = text.len;
    last = data + size;

    nlines = 0;
    for (p = data; p < last; p++) {
        if (*p == '\n') {
            nlines++;
        }
    }

    keys = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_keys_t));
    if (keys == NULL) {
        return NGX_CONF_ERROR;
    }

    /* load factor at most 1/2 keeps probe sequences short */

    n = 16;
    while (n < 2 * (nlines + 1)) {
        n *= 2;
    }

    keys->slots = ngx_pcalloc(cf->pool, n * sizeof(ngx_http_ig_key_t));
    if (keys->slots == NULL) {
        return NGX_CONF_ERROR;
    }

    keys->mask = n - 1;
    keys->file = file;

    keys->sha = ig_sha256_new();
    if (keys->sha == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_keys: SHA-256 is not available");
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ig_sha256_free(keys->sha);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_ig_keys_cleanup;
    cln->data = keys->sha;

    line = 0;

    for (p = data; p < last; p = eol + 1) {
        line++;

        eol = ngx_strlchr(p, last, '\n');
        if (eol == NULL) {
            eol = last;
        }

        switch (ig_keys_parse_line_msg((char *) p, eol - p, &e, NULL,
                                       msg, sizeof(msg)))
        {

        case 0:
            continue;

        case 1:
            break;

        default:
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_keys: %V:%ui: %s",
                               &file, line, msg);
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&key, sizeof(ngx_http_ig_key_t));
        ngx_memcpy(key.digest, e.digest, 32);

        key.tenant.len = e.tenant.len;
        key.tenant.data = ngx_pnalloc(cf->pool, e.tenant.len);
        if (key.tenant.data == NULL) {
            return NGX_CONF_ERROR;
        }
        ngx_memcpy(key.tenant.data, e.tenant.data, e.tenant.len);

        if (e.nmodels) {
            key.models = ngx_palloc(cf->pool, e.nmodels * sizeof(ngx_str_t));
            if (key.models == NULL) {
                return NGX_CONF_ERROR;
            }

            for (i = 0; i < e.nmodels; i++) {
                key.models[i].len = e.models[i].len;
                key.models[i].data = ngx_pnalloc(cf->pool, e.models[i].len);
                if (key.models[i].data == NULL) {
                    return NGX_CONF_ERROR;
                }
                ngx_memcpy(key.models[i].data, e.models[i].data,
                           e.models[i].len);
            }

            key.nmodels = e.nmodels;
        }

        if (e.quota) {
            key.has_rate = 1;
            key.quota = e.quota;
            key.window_s = e.window_s;
        }

        if (e.burst >= 0) {
            key.has_burst = 1;
            key.burst = (uint32_t) e.burst;
        }

        if (ngx_http_ig_keys_insert(keys, &key) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_keys: %V:%ui: duplicate key",
                               &file, line);
            return NGX_CONF_ERROR;
        }
    }

    mcf->keys = keys;

    return NGX_CONF_OK;
}


static void
ngx_http_ig_keys_cleanup(void *data)
{
    ig_sha256_free(data);
}


static ngx_int_t
ngx_http_ig_keys_insert(ngx_http_ig_keys_t *keys, ngx_http_ig_key_t *key)
{
    uint64_t    h;
    ngx_uint_t  i;

    ngx_memcpy(&h, key->digest, sizeof(uint64_t));

    for (i = h & keys->mask; keys->slots[i].tenant.len;
         i = (i + 1) & keys->mask)
    {
        if (ngx_memcmp(keys->slots[i].digest, key->digest, 32) == 0) {
            return NGX_DECLINED;
        }
    }

    keys->slots[i] = *key;
    keys->nkeys++;

    return NGX_OK;
}


/*
 * The digest of the presented key picks the slot, so the probe sequence
 * reveals nothing about stored keys; the final comparison is constant
 * time.
 */

ngx_http_ig_key_t *
ngx_http_ig_keys_find(ngx_http_ig_keys_t *keys, const u_char *key,
    size_t len)
{
    uint8_t     digest[32];
    uint64_t    h;
    ngx_uint_t  i;

    (void) ig_sha256(keys->sha, key, len, digest);
    ngx_memcpy(&h, digest, sizeof(uint64_t));

    for (i = h & keys->mask; keys->slots[i].tenant.len;
         i = (i + 1) & keys->mask)
    {
        if (ig_keys_digest_eq(keys->slots[i].digest, digest)) {
            return &keys->slots[i];
        }
    }

    return NULL;
}
