
/*
 * Copyright (C) infergate authors
 *
 * Cache-penetration guard: a blocked Bloom filter (lib/ig_bloom.c) in
 * shared memory.  A request whose id is surely absent gets 404 before any
 * cache, origin or backend work; ids created through the gateway are
 * added by the header filter, so they count before the client can see
 * the 201; the filter is saved atomically every save_every and when a
 * worker exits (reload, quit), and loaded when the zone is created.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_bloom.h>

#if (NGX_THREADS)
#include <pthread.h>
#include <signal.h>
#endif

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_bloom.h"


static char *ngx_http_ig_bloom_zone_directive(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_ig_bloom_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_ig_bloom_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_bloom_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_bloom_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_bloom_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_ig_bloom_init_process(ngx_cycle_t *cycle);
static void ngx_http_ig_bloom_exit_process(ngx_cycle_t *cycle);
static ngx_uint_t ngx_http_ig_bloom_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_bloom_check(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_bloom_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_ig_bloom_inherit(ngx_shm_zone_t *shm_zone,
    ngx_http_ig_bloom_zone_t *zone);
static void ngx_http_ig_bloom_save_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_ig_bloom_save_lock(ngx_http_ig_bloom_zone_t *zone,
    ngx_uint_t exiting);
static void ngx_http_ig_bloom_save_done(ngx_http_ig_bloom_zone_t *zone);
#if (NGX_THREADS)
static void *ngx_http_ig_bloom_save_thread(void *data);
#endif
static ngx_int_t ngx_http_ig_bloom_add_status(ngx_conf_t *cf,
    ngx_http_ig_bloom_conf_t *bc, u_char *p, size_t len);
static ngx_int_t ngx_http_ig_bloom_add_method(ngx_conf_t *cf,
    ngx_http_ig_bloom_conf_t *bc, u_char *p, size_t len);


static ngx_conf_bitmask_t  ngx_http_ig_bloom_methods[] = {
    { ngx_string("GET"), NGX_HTTP_GET },
    { ngx_string("HEAD"), NGX_HTTP_HEAD },
    { ngx_string("POST"), NGX_HTTP_POST },
    { ngx_string("PUT"), NGX_HTTP_PUT },
    { ngx_string("DELETE"), NGX_HTTP_DELETE },
    { ngx_string("PATCH"), NGX_HTTP_PATCH },
    { ngx_string("OPTIONS"), NGX_HTTP_OPTIONS },
    { ngx_null_string, 0 }
};


static ngx_str_t  ngx_http_ig_bloom_values[] = {
    ngx_null_string,
    ngx_string("hit"),
    ngx_string("miss")
};


static ngx_command_t  ngx_http_ig_bloom_commands[] = {

    { ngx_string("infergate_bloom_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ig_bloom_zone_directive,
      0,
      0,
      NULL },

    { ngx_string("infergate_bloom"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ig_bloom_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_bloom_module_ctx = {
    ngx_http_ig_bloom_add_variables,       /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_bloom_create_loc_conf,     /* create location configuration */
    ngx_http_ig_bloom_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_bloom_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_bloom_module_ctx,  /* module context */
    ngx_http_ig_bloom_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ig_bloom_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ig_bloom_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_ig_bloom_vars[] = {

    { ngx_string("infergate_bloom"), NULL,
      ngx_http_ig_bloom_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static char *
ngx_http_ig_bloom_zone_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    char                      *end, buf[32], err[512];
    double                     error;
    size_t                     need, pages;
    ssize_t                    size;
    uint64_t                   capacity;
    ngx_int_t                  n;
    ngx_str_t                 *value, s;
    ngx_uint_t                 i;
    const char                *reason;
    ig_bloom_hdr_t             h;
    ngx_shm_zone_t            *shm_zone;
    ngx_file_info_t            fi;
    ngx_http_ig_bloom_zone_t  *zone;

    value = cf->args->elts;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_bloom_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];
    zone->save_every = 60;
    capacity = 0;
    error = 0;

    if (value[1].len == 0) {
        return "needs a zone name";
    }

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom_zone: invalid size \"%V\"",
                           &value[2]);
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "capacity=", 9) == 0) {
            n = ngx_atoi(value[i].data + 9, value[i].len - 9);
            if (n <= 0) {
                goto invalid;
            }

            capacity = (uint64_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "error=", 6) == 0) {
            s.len = value[i].len - 6;
            if (s.len == 0 || s.len >= sizeof(buf)) {
                goto invalid;
            }

            ngx_memcpy(buf, value[i].data + 6, s.len);
            buf[s.len] = '\0';
            error = strtod(buf, &end);

            if (*end != '\0' || end == buf) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "file=", 5) == 0) {
            zone->file.data = value[i].data + 5;
            zone->file.len = value[i].len - 5;

            if (zone->file.len == 0) {
                goto invalid;
            }

            if (ngx_conf_full_name(cf->cycle, &zone->file, 1) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "save_every=", 11) == 0) {
            s.data = value[i].data + 11;
            s.len = value[i].len - 11;

            if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                zone->save_every = 0;
                continue;
            }

            zone->save_every = ngx_parse_time(&s, 1);
            if (zone->save_every == (time_t) NGX_ERROR
                || zone->save_every < 1)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_bloom_zone: invalid "
                                   "\"%V\": at least 1s, or off",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        goto invalid;
    }

    if (capacity == 0 || error == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom_zone: \"capacity=\" and "
                           "\"error=\" are required");
        return NGX_CONF_ERROR;
    }

    if (ig_bloom_geometry(capacity, error, &zone->geom, &reason) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom_zone: zone \"%V\": %s",
                           &value[1], reason);
        return NGX_CONF_ERROR;
    }

    /* the filter is one slab allocation of whole pages; count the slab's
     * own page descriptors, its header and one page of alignment */

    pages = (ig_bloom_mem_size(&zone->geom) + ngx_pagesize - 1)
            / ngx_pagesize;
    need = (pages + 2) * (ngx_pagesize + sizeof(ngx_slab_page_t))
           + sizeof(ngx_slab_pool_t)
           + 16 * (sizeof(ngx_slab_page_t) + sizeof(ngx_slab_stat_t));
    need = ngx_align(need, 1024);

    if ((size_t) size < need) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom_zone: zone \"%V\" of %V is too "
                           "small for capacity=%uL error=%s (k=%uD, %uL "
                           "blocks), it needs at least %uzk",
                           &value[1], &value[2], capacity, buf,
                           zone->geom.k, zone->geom.nblocks, need / 1024);
        return NGX_CONF_ERROR;
    }

    /* a corrupt or mismatched file fails here, so "nginx -t" tells */

    if (zone->file.len) {
        if (ngx_file_info(zone->file.data, &fi) == NGX_FILE_ERROR) {
            if (ngx_errno != NGX_ENOENT) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                                   "infergate_bloom_zone: cannot stat "
                                   "\"%V\"", &zone->file);
                return NGX_CONF_ERROR;
            }

            ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                               "infergate_bloom_zone: \"%V\" does not "
                               "exist: zone \"%V\" starts empty and is "
                               "saved there", &zone->file, &value[1]);

        } else if (ig_bloom_load_path(NULL, (char *) zone->file.data,
                                      &zone->geom, &h, err, sizeof(err))
                   != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_bloom_zone: \"%V\": %s",
                               &zone->file, err);
            return NGX_CONF_ERROR;
        }
    }

    shm_zone = ngx_shared_memory_add(cf, &value[1], size,
                                     &ngx_http_infergate_module);
    if (shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom_zone: duplicate zone \"%V\"",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    zone->shm_zone = shm_zone;
    shm_zone->init = ngx_http_ig_bloom_init_zone;
    shm_zone->data = zone;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_bloom_zone: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_ig_bloom_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_ig_bloom_zone_t  *ozone = data;

    char                       err[512];
    ig_bloom_hdr_t             h;
    ngx_slab_pool_t           *shpool;
    ngx_file_info_t            fi;
    ngx_http_ig_bloom_zone_t  *zone;

    zone = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    /* a reload keeps the filter and the ids added since the last save */

    if (ozone) {
        if (ozone->bloom == NULL
            || !ig_bloom_same_geometry(ozone->bloom, &zone->geom))
        {
            ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                          "infergate_bloom_zone \"%V\": capacity or error "
                          "changed; that needs a restart (or a new zone "
                          "size)", &shm_zone->shm.name);
            return NGX_ERROR;
        }

        zone->bloom = ozone->bloom;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        zone->bloom = shpool->data;
        return NGX_OK;
    }

    zone->bloom = ngx_slab_alloc(shpool, ig_bloom_mem_size(&zone->geom));
    if (zone->bloom == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "infergate_bloom_zone \"%V\": zone is too small",
                      &shm_zone->shm.name);
        return NGX_ERROR;
    }

    ig_bloom_init(zone->bloom, &zone->geom);
    shpool->data = zone->bloom;

    ngx_sprintf(shpool->log_ctx, " in infergate_bloom_zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a reload that resized the zone: take the ids of the old one, which
     * holds the adds since the last save */

    if (ngx_http_ig_bloom_inherit(shm_zone, zone) == NGX_OK) {
        return NGX_OK;
    }

    if (zone->file.len == 0
        || (ngx_file_info(zone->file.data, &fi) == NGX_FILE_ERROR
            && ngx_errno == NGX_ENOENT))
    {
        return NGX_OK;
    }

    if (ig_bloom_load_path(zone->bloom, (char *) zone->file.data,
                           &zone->geom, &h, err, sizeof(err))
        != 0)
    {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "infergate_bloom_zone \"%V\": \"%V\": %s",
                      &shm_zone->shm.name, &zone->file, err);
        return NGX_ERROR;
    }

    __atomic_store_n(&zone->bloom->saved_at, (uint64_t) ngx_time(),
                     __ATOMIC_RELAXED);

    ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                  "infergate_bloom_zone \"%V\": loaded %uL ids from \"%V\"",
                  &shm_zone->shm.name, h.count, &zone->file);

    return NGX_OK;
}


/*
 * During a reload ngx_cycle is still the old cycle: a Bloom zone of the
 * same name and geometry there is copied, word by word as readers see it.
 */

static ngx_int_t
ngx_http_ig_bloom_inherit(ngx_shm_zone_t *shm_zone,
    ngx_http_ig_bloom_zone_t *zone)
{
    uint64_t                  *src, *dst, i, n;
    ngx_uint_t                 j;
    ngx_shm_zone_t            *oshm;
    ngx_list_part_t           *part;
    ngx_http_ig_bloom_zone_t  *ozone;

    if (ngx_cycle == NULL || ngx_cycle->shared_memory.part.elts == NULL) {
        return NGX_DECLINED;
    }

    part = (ngx_list_part_t *) &ngx_cycle->shared_memory.part;
    oshm = part->elts;

    for (j = 0; /* void */; j++) {

        if (j >= part->nelts) {
            if (part->next == NULL) {
                return NGX_DECLINED;
            }

            part = part->next;
            oshm = part->elts;
            j = 0;
        }

        if (oshm[j].init != ngx_http_ig_bloom_init_zone
            || &oshm[j] == shm_zone
            || oshm[j].shm.name.len != shm_zone->shm.name.len
            || ngx_strncmp(oshm[j].shm.name.data, shm_zone->shm.name.data,
                           shm_zone->shm.name.len) != 0)
        {
            continue;
        }

        ozone = oshm[j].data;

        if (ozone == NULL || ozone->bloom == NULL
            || !ig_bloom_same_geometry(ozone->bloom, &zone->geom))
        {
            return NGX_DECLINED;
        }

        src = (uint64_t *) (ozone->bloom + 1);
        dst = (uint64_t *) (zone->bloom + 1);
        n = zone->geom.nblocks * (IG_BLOOM_BLOCK / 8);

        for (i = 0; i < n; i++) {
            dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
        }

        zone->bloom->count = __atomic_load_n(&ozone->bloom->count,
                                             __ATOMIC_RELAXED);
        zone->bloom->saved = __atomic_load_n(&ozone->bloom->saved,
                                             __ATOMIC_RELAXED);
        zone->bloom->saved_at = __atomic_load_n(&ozone->bloom->saved_at,
                                                __ATOMIC_RELAXED);

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "infergate_bloom_zone \"%V\": resized, %uL ids taken "
                      "from the old zone", &shm_zone->shm.name,
                      zone->bloom->count);
        return NGX_OK;
    }
}


static char *
ngx_http_ig_bloom_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_bloom_loc_conf_t *lcf = conf;

    u_char                            *p, *q, *last;
    ngx_str_t                         *value, s;
    ngx_uint_t                         i, in_status, in_methods, have_key;
    ngx_uint_t                         status_set;
    ngx_http_ig_bloom_conf_t          *bc;
    ngx_http_compile_complex_value_t   ccv;

    if (lcf->bloom) {
        return "is duplicate";
    }

    bc = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_bloom_conf_t));
    if (bc == NULL) {
        return NGX_CONF_ERROR;
    }

    bc->check = 1;
    value = cf->args->elts;
    in_status = 0;
    in_methods = 0;
    have_key = 0;
    status_set = 0;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            in_status = 0;
            in_methods = 0;
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 0) {
                goto invalid;
            }

            bc->zone_name = s;
            bc->shm_zone = ngx_shared_memory_add(cf, &s, 0,
                                                 &ngx_http_infergate_module);
            if (bc->shm_zone == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            in_status = 0;
            in_methods = 0;
            s.data = value[i].data + 4;
            s.len = value[i].len - 4;

            if (s.len == 0) {
                goto invalid;
            }

            if (ngx_http_ig_check_var_case(cf, &s) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = &bc->key;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            have_key = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "check=on") == 0
            || ngx_strcmp(value[i].data, "check=off") == 0)
        {
            in_status = 0;
            in_methods = 0;
            bc->check = (value[i].data[7] == 'n');
            continue;
        }

        if (ngx_strncmp(value[i].data, "methods=", 8) == 0
            || (in_methods && !in_status))
        {
            /* methods=GET HEAD or methods=GET,HEAD */

            p = value[i].data;
            last = p + value[i].len;

            if (ngx_strncmp(p, "methods=", 8) == 0) {
                p += 8;
                in_methods = 1;
                in_status = 0;
                bc->methods = 0;

                if (p == last) {
                    goto invalid;
                }
            }

            while (p < last) {
                q = ngx_strlchr(p, last, ',');
                if (q == NULL) {
                    q = last;
                }

                if (ngx_http_ig_bloom_add_method(cf, bc, p, q - p) != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }

                p = q + 1;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "add_on=", 7) == 0) {
            status_set = 1;
            in_methods = 0;

            if (ngx_strcmp(value[i].data, "add_on=off") == 0) {
                bc->nstatus = 0;
                in_status = 0;
                continue;
            }

            p = value[i].data + 7;
            in_status = 1;

        } else if (in_status) {
            p = value[i].data;             /* add_on=201 202 */

        } else {
            goto invalid;
        }

        /* a comma-separated list, or a lone status */

        last = value[i].data + value[i].len;

        while (p < last) {
            q = ngx_strlchr(p, last, ',');
            if (q == NULL) {
                q = last;
            }

            if (ngx_http_ig_bloom_add_status(cf, bc, p, q - p) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            p = q + 1;
        }
    }

    if (bc->shm_zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom: \"zone=\" is required");
        return NGX_CONF_ERROR;
    }

    if (!have_key) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom: \"key=\" is required");
        return NGX_CONF_ERROR;
    }

    if (!status_set) {
        bc->status[0] = NGX_HTTP_CREATED;
        bc->nstatus = 1;
    }

    if (bc->methods == 0) {
        bc->methods = NGX_HTTP_GET|NGX_HTTP_HEAD;
    }

    lcf->bloom = bc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_bloom: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_ig_bloom_add_status(ngx_conf_t *cf, ngx_http_ig_bloom_conf_t *bc,
    u_char *p, size_t len)
{
    ngx_int_t  n;

    n = ngx_atoi(p, len);

    if (n < 100 || n > 599) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom: invalid add_on status \"%*s\"",
                           len, p);
        return NGX_ERROR;
    }

    if (bc->nstatus == NGX_HTTP_IG_BLOOM_MAX_STATUS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom: at most %d add_on statuses",
                           NGX_HTTP_IG_BLOOM_MAX_STATUS);
        return NGX_ERROR;
    }

    bc->status[bc->nstatus++] = (ngx_uint_t) n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_bloom_add_method(ngx_conf_t *cf, ngx_http_ig_bloom_conf_t *bc,
    u_char *p, size_t len)
{
    ngx_conf_bitmask_t  *m;

    for (m = ngx_http_ig_bloom_methods; m->name.len; m++) {
        if (m->name.len == len && ngx_strncmp(m->name.data, p, len) == 0) {
            bc->methods |= m->mask;
            return NGX_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_bloom: unknown method \"%*s\" in "
                       "\"methods=\" (GET, HEAD, POST, PUT, DELETE, PATCH, "
                       "OPTIONS)", len, p);
    return NGX_ERROR;
}


static void *
ngx_http_ig_bloom_create_loc_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_bloom_loc_conf_t));
}


/* Inherit, and check the zone exists. */

static char *
ngx_http_ig_bloom_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_bloom_loc_conf_t *prev = parent;
    ngx_http_ig_bloom_loc_conf_t *conf = child;

    ngx_http_ig_bloom_conf_t  *bc;

    if (conf->bloom == NULL) {
        conf->bloom = prev->bloom;
    }

    bc = conf->bloom;

    if (bc == NULL) {
        return NGX_CONF_OK;
    }

    if (bc->shm_zone->data == NULL
        || bc->shm_zone->init != ngx_http_ig_bloom_init_zone)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_bloom: unknown zone \"%V\": no "
                           "\"infergate_bloom_zone %V ...\" in the http "
                           "block", &bc->zone_name, &bc->zone_name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


const ngx_http_ig_stage_t  ngx_http_ig_bloom_stage = {
    ngx_string("bloom"),
    ngx_http_ig_bloom_on,
    ngx_http_ig_bloom_check
};


static ngx_uint_t
ngx_http_ig_bloom_on(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf)
{
    ngx_http_ig_bloom_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_bloom_module);

    return blcf->bloom != NULL;
}


/*
 * The step after the body check (the key may name a JSON member) and
 * before the cache: a surely absent id ends here.  An empty key passes:
 * the schema, not the guard, says whether the id is required.  Only the
 * methods= methods are checked (GET HEAD by default), so that a PUT or
 * POST may create the id the guard would refuse.
 */

static ngx_int_t
ngx_http_ig_bloom_check(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    ngx_str_t                      key;
    ngx_http_ig_bloom_conf_t      *bc;
    ngx_http_ig_bloom_zone_t      *zone;
    ngx_http_ig_bloom_loc_conf_t  *blcf;

    blcf = ngx_http_get_module_loc_conf(r, ngx_http_infergate_bloom_module);
    bc = blcf->bloom;

    if (!bc->check || !(r->method & bc->methods)) {
        return NGX_DECLINED;
    }

    if (ngx_http_complex_value(r, &bc->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (key.len == 0) {
        return NGX_DECLINED;
    }

    zone = bc->shm_zone->data;

    if (ig_bloom_test(zone->bloom, key.data, key.len)) {
        ctx->bloom = NGX_HTTP_IG_BLOOM_HIT;
        return NGX_DECLINED;
    }

    ctx->bloom = NGX_HTTP_IG_BLOOM_MISS;
    ngx_str_set(&ctx->action, "unknown_id");

    return ngx_http_ig_problem_cstr(r, NGX_HTTP_NOT_FOUND,
                                    NGX_HTTP_IG_PROBLEM_BASE "unknown-id",
                                    "Unknown id",
                                    "No resource has this id.");
}


/*
 * From the header filter: the id of a created resource goes into the
 * shared filter before the first byte of the 201 leaves, so a client that
 * reads the 201 and asks again at once, through any worker, is let in.
 * The key is evaluated now, so it may name response variables
 * ($upstream_http_location, $sent_http_x_id).
 */

static ngx_int_t
ngx_http_ig_bloom_add_variables(ngx_conf_t *cf)
{
    return ngx_http_ig_add_variables(cf, ngx_http_ig_bloom_vars);
}


static ngx_int_t
ngx_http_ig_bloom_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_find_ctx(r->main);

    if (ctx == NULL || ctx->bloom == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ngx_http_ig_bloom_values[ctx->bloom].len;
    v->data = ngx_http_ig_bloom_values[ctx->bloom].data;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * Saving.  Every worker runs a timer; the zone's saved_at and lock make
 * one of them, the first whose timer fires after the period, do it.  The
 * lock (the saver's pid in the zone) also orders savers, so an older
 * snapshot never renames over a newer one.
 *
 * A periodic save writes and fsyncs the whole filter: that runs on a
 * short-lived thread so the event loop never waits for the disk; the
 * timer polls for its end.  At exit the worker saves itself, waiting.
 */

static ngx_int_t
ngx_http_ig_bloom_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_msec_t                 first;
    ngx_shm_zone_t            *shm_zone;
    ngx_list_part_t           *part;
    ngx_http_ig_bloom_zone_t  *zone;

    /* workers save; the cache manager and loader leave it to them */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    part = &cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].init != ngx_http_ig_bloom_init_zone) {
            continue;
        }

        zone = shm_zone[i].data;
        zone->log = cycle->log;

        if (zone->file.len == 0 || zone->save_every == 0) {
            continue;
        }

        zone->save_ev.handler = ngx_http_ig_bloom_save_handler;
        zone->save_ev.data = zone;
        zone->save_ev.log = cycle->log;
        zone->save_ev.cancelable = 1;

        /* spread the workers' timers over the first second */
        first = (ngx_msec_t) zone->save_every * 1000
                + (ngx_msec_t) (ngx_random() % 1000);

        ngx_add_timer(&zone->save_ev, first);
    }

    return NGX_OK;
}


static void
ngx_http_ig_bloom_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                 i;
    ngx_shm_zone_t            *shm_zone;
    ngx_list_part_t           *part;
    ngx_http_ig_bloom_zone_t  *zone;

    part = &cycle->shared_memory.part;
    shm_zone = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            shm_zone = part->elts;
            i = 0;
        }

        if (shm_zone[i].init != ngx_http_ig_bloom_init_zone) {
            continue;
        }

        zone = shm_zone[i].data;

        if (zone->file.len == 0 || zone->bloom == NULL
            || (ngx_process != NGX_PROCESS_WORKER
                && ngx_process != NGX_PROCESS_SINGLE))
        {
            continue;
        }

        zone->log = cycle->log;

#if (NGX_THREADS)
        if (zone->saving) {
            (void) pthread_join(zone->thread, NULL);
            ngx_http_ig_bloom_save_done(zone);
        }
#endif

        if (ngx_http_ig_bloom_save_lock(zone, 1) == NGX_OK) {
            zone->job.rc = ig_bloom_save(zone->bloom,
                                         (char *) zone->file.data,
                                         &zone->job.count, zone->job.err,
                                         sizeof(zone->job.err));
            ngx_http_ig_bloom_save_done(zone);
        }
    }
}


static void
ngx_http_ig_bloom_save_handler(ngx_event_t *ev)
{
    ngx_http_ig_bloom_zone_t  *zone = ev->data;

#if (NGX_THREADS)
    sigset_t  all, old;

    if (zone->saving) {
        if (!__atomic_load_n(&zone->job.done, __ATOMIC_ACQUIRE)) {
            ngx_add_timer(ev, 100);
            return;
        }

        (void) pthread_join(zone->thread, NULL);
        ngx_http_ig_bloom_save_done(zone);
    }
#endif

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;                          /* exit_process saves */
    }

    if (ngx_http_ig_bloom_save_lock(zone, 0) != NGX_OK) {
        ngx_add_timer(ev, (ngx_msec_t) zone->save_every * 1000);
        return;
    }

#if (NGX_THREADS)

    /* signals are for the event loop, not for the saver */

    sigfillset(&all);
    (void) pthread_sigmask(SIG_SETMASK, &all, &old);

    zone->job.done = 0;

    if (pthread_create(&zone->thread, NULL, ngx_http_ig_bloom_save_thread,
                       zone)
        == 0)
    {
        (void) pthread_sigmask(SIG_SETMASK, &old, NULL);
        zone->saving = 1;
        ngx_add_timer(ev, 100);
        return;
    }

    (void) pthread_sigmask(SIG_SETMASK, &old, NULL);

    ngx_log_error(NGX_LOG_WARN, zone->log, 0,
                  "infergate_bloom_zone \"%V\": no save thread, saving "
                  "in the worker", &zone->name);
#endif

    zone->job.rc = ig_bloom_save(zone->bloom, (char *) zone->file.data,
                                 &zone->job.count, zone->job.err,
                                 sizeof(zone->job.err));
    ngx_http_ig_bloom_save_done(zone);

    ngx_add_timer(ev, (ngx_msec_t) zone->save_every * 1000);
}


#if (NGX_THREADS)

/* Touches only the filter, the file and the job: no nginx calls. */

static void *
ngx_http_ig_bloom_save_thread(void *data)
{
    ngx_http_ig_bloom_zone_t  *zone = data;

    zone->job.rc = ig_bloom_save(zone->bloom, (char *) zone->file.data,
                                 &zone->job.count, zone->job.err,
                                 sizeof(zone->job.err));

    __atomic_store_n(&zone->job.done, 1, __ATOMIC_RELEASE);

    return NULL;
}

#endif


/*
 * Takes the zone's save lock when ids were added since the last save.  A
 * periodic save that finds it taken, or a save done lately by another
 * worker, leaves the work to them; an exiting worker waits for the lock,
 * up to 2 s, since its adds may be the last.
 */

static ngx_int_t
ngx_http_ig_bloom_save_lock(ngx_http_ig_bloom_zone_t *zone,
    ngx_uint_t exiting)
{
    uint64_t     at, holder, me;
    ngx_uint_t   i;
    ig_bloom_t  *b;

    b = zone->bloom;

    if (__atomic_load_n(&b->count, __ATOMIC_RELAXED)
        == __atomic_load_n(&b->saved, __ATOMIC_RELAXED))
    {
        return NGX_DECLINED;
    }

    if (!exiting) {
        at = __atomic_load_n(&b->saved_at, __ATOMIC_RELAXED);

        if ((uint64_t) ngx_time() < at + (uint64_t) zone->save_every) {
            return NGX_DECLINED;
        }
    }

    me = (uint64_t) ngx_pid;

    for (i = 0; /* void */; i++) {
        holder = 0;

        if (__atomic_compare_exchange_n(&b->lock, &holder, me, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        {
            break;
        }

        /* a holder that died (killed mid-save) does not hold it forever */

        if (kill((pid_t) holder, 0) == -1 && ngx_errno == NGX_ESRCH
            && __atomic_compare_exchange_n(&b->lock, &holder, me, 0,
                                           __ATOMIC_ACQUIRE,
                                           __ATOMIC_RELAXED))
        {
            break;
        }

        if (!exiting) {
            return NGX_DECLINED;
        }

        if (i == 200) {
            ngx_log_error(NGX_LOG_WARN, zone->log, 0,
                          "infergate_bloom_zone \"%V\": the save lock is "
                          "held by %uL, not saving", &zone->name, holder);
            return NGX_DECLINED;
        }

        ngx_msleep(10);
    }

    if (__atomic_load_n(&b->count, __ATOMIC_RELAXED)
        == __atomic_load_n(&b->saved, __ATOMIC_RELAXED))
    {
        /* the previous holder saved it */
        __atomic_store_n(&b->lock, 0, __ATOMIC_RELEASE);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* The result of a save, in the worker; releases the lock. */

static void
ngx_http_ig_bloom_save_done(ngx_http_ig_bloom_zone_t *zone)
{
    ig_bloom_t  *b = zone->bloom;

    zone->saving = 0;

    if (zone->job.rc != 0) {
        ngx_log_error(NGX_LOG_ALERT, zone->log, 0,
                      "infergate_bloom_zone \"%V\": save failed: %s",
                      &zone->name, zone->job.err);

    } else {
        __atomic_store_n(&b->saved, zone->job.count, __ATOMIC_RELAXED);

        ngx_log_error(NGX_LOG_INFO, zone->log, 0,
                      "infergate_bloom_zone \"%V\": saved %uL ids to "
                      "\"%V\"", &zone->name, zone->job.count, &zone->file);
    }

    /* a failure retries at the next period, not at every worker's timer */
    __atomic_store_n(&b->saved_at, (uint64_t) ngx_time(), __ATOMIC_RELAXED);
    __atomic_store_n(&b->lock, 0, __ATOMIC_RELEASE);
}
