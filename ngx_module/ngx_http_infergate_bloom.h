
/*
 * Copyright (C) infergate authors
 *
 * The Bloom guard's zone and location configuration, shared by its stage
 * (ngx_module/ngx_http_infergate_bloom.c) and its filter
 * (filters/ngx_http_infergate_bloom_filter.c).
 */


#ifndef _NGX_HTTP_INFERGATE_BLOOM_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_BLOOM_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_bloom.h>

#if (NGX_THREADS)
#include <pthread.h>
#endif

#include "ngx_http_infergate.h"


#define NGX_HTTP_IG_BLOOM_MAX_STATUS  8


typedef struct {
    int                         rc;
    int                         done;        /* atomic: the thread ended  */
    uint64_t                    count;       /* the count saved           */
    char                        err[512];
} ngx_http_ig_bloom_job_t;


typedef struct {
    ngx_str_t                   name;
    ngx_shm_zone_t             *shm_zone;
    ig_bloom_geom_t             geom;
    ig_bloom_t                 *bloom;       /* in the zone               */
    ngx_str_t                   file;        /* NUL-terminated, or empty  */
    time_t                      save_every;  /* seconds, 0: only on exit  */
    ngx_event_t                 save_ev;
    ngx_log_t                  *log;
    ngx_http_ig_bloom_job_t     job;
#if (NGX_THREADS)
    pthread_t                   thread;
#endif
    unsigned                    saving:1;    /* a save thread runs        */
} ngx_http_ig_bloom_zone_t;


typedef struct {
    ngx_shm_zone_t             *shm_zone;
    ngx_str_t                   zone_name;
    ngx_http_complex_value_t    key;
    ngx_uint_t                  check;
    ngx_uint_t                  methods;     /* checked: NGX_HTTP_GET ...  */
    ngx_uint_t                  nstatus;
    ngx_uint_t                  status[NGX_HTTP_IG_BLOOM_MAX_STATUS];
} ngx_http_ig_bloom_conf_t;


typedef struct {
    ngx_http_ig_bloom_conf_t   *bloom;       /* infergate_bloom, or NULL   */
} ngx_http_ig_bloom_loc_conf_t;


extern ngx_module_t  ngx_http_infergate_bloom_module;


#endif /* _NGX_HTTP_INFERGATE_BLOOM_H_INCLUDED_ */
