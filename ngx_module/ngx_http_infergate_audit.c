
/*
 * Copyright (C) infergate authors
 *
 * The signed audit trail: one ECS JSON line per request, sealed into a
 * per-worker HMAC-SHA256 chain (lib/ig_audit.h), buffered per worker and
 * written by nginx's thread pool so the event loop never waits on disk.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_audit.h>
#include <openssl/rand.h>
#include <ig_json.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_breaker.h"
#include "ngx_http_infergate_metrics.h"


#define NGX_HTTP_IG_AUDIT_MAX_BUFS  64

/* a record that took longer was preempted: INFERGATE_AUDIT_TSC skips it */
#define NGX_HTTP_IG_AUDIT_TSC_PREEMPTED  100000


/*
 * The cost of each part of a record, for INFERGATE_AUDIT_TSC: the time
 * stamp counter where there is one.
 */

static ngx_inline uint64_t
ngx_http_ig_audit_tsc(void)
{
#if defined(__x86_64__) || defined(__i386__)
    uint32_t  lo, hi;

    __asm__ __volatile__ ("rdtsc" : "=a" (lo), "=d" (hi));

    return ((uint64_t) hi << 32) | lo;
#else
    struct timespec  ts;

    (void) clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
#endif
}


/*
 * Nanoseconds of a clock: CLOCK_THREAD_CPUTIME_ID for the parts done once
 * a buffer, where a wake-up of the pool thread on the same CPU would put
 * other threads' time into a TSC difference; CLOCK_MONOTONIC for the TSC's
 * rate.
 */

static uint64_t
ngx_http_ig_audit_ns(clockid_t clock)
{
    struct timespec  ts;

    if (clock_gettime(clock, &ts) != 0) {
        return 0;
    }

    return (uint64_t) ts.tv_sec * 1000000000 + (uint64_t) ts.tv_nsec;
}


typedef struct {
    ngx_array_t                  logs;       /* ngx_http_ig_audit_log_t *  */
} ngx_http_ig_audit_main_conf_t;


/* A dup of the log file's descriptor, shared by the writes of one chain. */
typedef struct {
    ngx_fd_t                     fd;
    ngx_uint_t                   refs;
} ngx_http_ig_audit_fd_t;


typedef struct {
    ngx_queue_t                  queue;
    u_char                      *data;
    size_t                       len;
    size_t                       size;
    ngx_uint_t                   nrecs;
    ngx_uint_t                   oneoff;    /* freed once written         */
    ig_audit_chain_t            *end_chain; /* not a buffer: the chain    */
    uint64_t                     end_records; /* to end here, its count   */
    ngx_err_t                    err;
    ngx_http_ig_audit_fd_t      *fd;
    ngx_http_ig_audit_log_t     *log;
    ngx_thread_task_t           *task;
    uint64_t                     write_ns;  /* CPU of its write(2)s      */
} ngx_http_ig_audit_buf_t;


struct ngx_http_ig_audit_log_s {
    ngx_str_t                    path;
    ngx_open_file_t             *file;
    ig_audit_keyring_t          *ring;
    const ig_audit_key_t        *key;
    ngx_str_t                    key_id;
    size_t                       buffer_size;
    ngx_msec_t                   flush;
    ngx_str_t                    pool_name;
    ngx_thread_pool_t           *pool;
    ngx_http_ig_syslog_t        *syslog;
    ngx_int_t                    cache_var; /* $infergate_cache_status,   */
                                            /* for infergate.cache        */
    ngx_str_t                    state_path; /* PATH.chainstate           */
    ngx_fd_t                     state_fd;  /* opened by the master       */

    /* per worker, from init_process on */
    ig_audit_chain_t            *chain;
    ngx_http_ig_audit_fd_t      *fd;
    ngx_http_ig_audit_buf_t     *active;
    ngx_queue_t                  pending;   /* filled, in record order    */
    ngx_uint_t                   writing;   /* one write in flight, so    */
                                            /* pool threads keep order    */
    ngx_uint_t                   exiting;   /* the pool is gone: write    */
                                            /* on this thread             */
    ngx_queue_t                  free;
    ngx_uint_t                   nbufs;
    uint64_t                     records;
    uint64_t                     lost;
    time_t                       err_logged;
    ngx_event_t                  timer;
    ngx_log_t                   *log;

    /* INFERGATE_AUDIT_TSC set: cycles per part, logged at exit */
    ngx_uint_t                   tsc;
    uint64_t                     tsc_start;  /* TSC and CLOCK_MONOTONIC   */
    uint64_t                     tsc_start_ns; /* at the start: its rate  */
    uint64_t                     tsc_records;
    uint64_t                     tsc_skipped; /* preempted: not counted   */
    uint64_t                     tsc_build;
    uint64_t                     tsc_seal;
    uint64_t                     tsc_handoff;
    uint64_t                     tsc_post_ns; /* CPU: posting, taking back */
    uint64_t                     tsc_write_ns; /* CPU of the writes       */
    uint64_t                     tsc_written; /* records in the writes    */
    uint64_t                     tsc_writes;
};


static char *ngx_http_ig_audit_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static void *ngx_http_ig_audit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_ig_audit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_audit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_ig_audit_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_ig_audit_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_ig_audit_init_process(ngx_cycle_t *cycle);
static void ngx_http_ig_audit_exit_process(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_ig_audit_load_keys(ngx_conf_t *cf,
    ngx_http_ig_audit_log_t *al, ngx_str_t *file);
static ngx_int_t ngx_http_ig_audit_chain_start(ngx_http_ig_audit_log_t *al);
static void ngx_http_ig_audit_chain_end(ngx_http_ig_audit_log_t *al,
    ngx_uint_t sync);
static u_char *ngx_http_ig_audit_reserve(ngx_http_ig_audit_log_t *al,
    size_t len);
static void ngx_http_ig_audit_commit(ngx_http_ig_audit_log_t *al,
    size_t len);
static void ngx_http_ig_audit_submit(ngx_http_ig_audit_log_t *al,
    ngx_uint_t sync);
static void ngx_http_ig_audit_write(void *data, ngx_log_t *log);
static void ngx_http_ig_audit_kick(ngx_http_ig_audit_log_t *al);
static void ngx_http_ig_audit_written(ngx_event_t *ev);
static void ngx_http_ig_audit_tsc_report(ngx_http_ig_audit_log_t *al);
static void ngx_http_ig_audit_release(ngx_http_ig_audit_log_t *al,
    ngx_http_ig_audit_buf_t *b);
static void ngx_http_ig_audit_fd_unref(ngx_http_ig_audit_fd_t *fd);
static void ngx_http_ig_audit_timer(ngx_event_t *ev);
static void ngx_http_ig_audit_reopen(ngx_open_file_t *file, ngx_log_t *log);
static u_char *ngx_http_ig_audit_timestamp(u_char *p);
static ngx_int_t ngx_http_ig_audit_marker(ngx_http_ig_audit_log_t *al,
    ig_audit_chain_t *chain, ngx_fd_t fd, ngx_uint_t start,
    uint64_t records);
static void ngx_http_ig_audit_end_entry(ngx_http_ig_audit_log_t *al,
    ngx_http_ig_audit_buf_t *b);
static ngx_int_t ngx_http_ig_audit_open_state(ngx_conf_t *cf,
    ngx_http_ig_audit_log_t *al);
static u_char *ngx_http_ig_audit_str(u_char *p, const char *name,
    ngx_str_t *value);


/*
 * Request ids: nginx's $request_id draws 16 bytes from OpenSSL's DRBG per
 * request (about 1 us here).  Ours is a per-worker random prefix and a
 * counter scrambled by a bijection under a random key: unique, unguessable
 * enough for correlation, and a few nanoseconds.
 */
/*
 * The record is built with copies and these two formatters rather than
 * ngx_sprintf(): the format interpreter was the largest single cost of a
 * record after the seal.
 */

static u_char *
ngx_http_ig_audit_u64(u_char *p, uint64_t v)
{
    u_char   buf[20], *b;

    b = buf + sizeof(buf);

    do {
        *--b = (u_char) ('0' + v % 10);
        v /= 10;
    } while (v);

    return ngx_cpymem(p, b, buf + sizeof(buf) - b);
}


static u_char *
ngx_http_ig_audit_hex64(u_char *p, uint64_t v)
{
    ngx_int_t  i;

    static const u_char  hex[] = "0123456789abcdef";

    for (i = 60; i >= 0; i -= 4) {
        *p++ = hex[(v >> i) & 0xf];
    }

    return p;
}


#define ngx_http_ig_audit_lit(p, s)  ngx_cpymem(p, s, sizeof(s) - 1)


static uint64_t  ngx_http_ig_reqid_prefix;
static uint64_t  ngx_http_ig_reqid_key;
static uint64_t  ngx_http_ig_reqid_next;


static ngx_command_t  ngx_http_ig_audit_commands[] = {

    { ngx_string("infergate_audit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_ig_audit_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_audit_module_ctx = {
    NULL,                              /* preconfiguration */
    ngx_http_ig_audit_init,            /* postconfiguration */

    ngx_http_ig_audit_create_main_conf, /* create main configuration */
    NULL,                              /* init main configuration */

    NULL,                              /* create server configuration */
    NULL,                              /* merge server configuration */

    ngx_http_ig_audit_create_loc_conf, /* create location configuration */
    ngx_http_ig_audit_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_audit_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_audit_module_ctx, /* module context */
    ngx_http_ig_audit_commands,        /* module directives */
    NGX_HTTP_MODULE,                   /* module type */
    NULL,                              /* init master */
    NULL,                              /* init module */
    ngx_http_ig_audit_init_process,    /* init process */
    NULL,                              /* init thread */
    NULL,                              /* exit thread */
    ngx_http_ig_audit_exit_process,    /* exit process */
    NULL,                              /* exit master */
    NGX_MODULE_V1_PADDING
};


static char *
ngx_http_ig_audit_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_ig_audit_loc_conf_t *lcf = conf;

    ssize_t                         size;
    ngx_str_t                      *value, s, key_file;
    ngx_uint_t                      i;
    ngx_http_ig_audit_log_t        *al, **alp;
    ngx_http_ig_audit_main_conf_t  *mcf;

    if (lcf->log != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts != 2) {
            return "takes no parameters after \"off\"";
        }

        lcf->log = NULL;
        return NGX_CONF_OK;
    }

    al = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_audit_log_t));
    if (al == NULL) {
        return NGX_CONF_ERROR;
    }

    s.len = sizeof("infergate_cache_status") - 1;
    s.data = (u_char *) "infergate_cache_status";

    al->cache_var = ngx_http_get_variable_index(cf, &s);
    if (al->cache_var == NGX_ERROR) {
        return NGX_CONF_ERROR;
    }

    al->path = value[1];
    al->buffer_size = 256 * 1024;

    /*
     * A measuring aid, read here because nginx clears the workers'
     * environment: the cycles of each part of a record, logged at exit.
     */
    al->tsc = (getenv("INFERGATE_AUDIT_TSC") != NULL);
    al->flush = 1000;
    ngx_str_set(&al->pool_name, "default");
    ngx_str_null(&key_file);

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            key_file.data = value[i].data + 4;
            key_file.len = value[i].len - 4;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key_id=", 7) == 0) {
            al->key_id.data = value[i].data + 7;
            al->key_id.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "buffer=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;
            size = ngx_parse_size(&s);

            if (size < 4096 || size > 64 * 1024 * 1024) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_audit: invalid \"%V\": the "
                                   "buffer must be 4k..64m", &value[i]);
                return NGX_CONF_ERROR;
            }

            al->buffer_size = size;
            continue;
        }

        if (ngx_strncmp(value[i].data, "flush=", 6) == 0) {
            s.data = value[i].data + 6;
            s.len = value[i].len - 6;
            al->flush = ngx_parse_time(&s, 0);

            if (al->flush == (ngx_msec_t) NGX_ERROR || al->flush == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_audit: invalid \"%V\"",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "syslog=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            al->syslog = ngx_http_ig_syslog_create(cf, &s);
            if (al->syslog == NULL) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "thread_pool=", 12) == 0) {
            al->pool_name.data = value[i].data + 12;
            al->pool_name.len = value[i].len - 12;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: invalid parameter \"%V\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    if (key_file.len == 0 || al->key_id.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: \"key=\" and \"key_id=\" are "
                           "required");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_ig_audit_load_keys(cf, al, &key_file) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf,
                                             ngx_http_infergate_audit_module);

    /* one chain per file per worker, however many locations share it */

    alp = mcf->logs.elts;

    for (i = 0; i < mcf->logs.nelts; i++) {
        if (alp[i]->path.len == al->path.len
            && ngx_strncmp(alp[i]->path.data, al->path.data, al->path.len)
               == 0)
        {
            if (alp[i]->key != al->key
                && ngx_strcmp(alp[i]->key->id, al->key->id) != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_audit: \"%V\" is already "
                                   "signed with key id \"%s\"",
                                   &al->path, alp[i]->key->id);
                return NGX_CONF_ERROR;
            }

            lcf->log = alp[i];
            return NGX_CONF_OK;
        }
    }

    al->file = ngx_conf_open_file(cf->cycle, &al->path);
    if (al->file == NULL) {
        return NGX_CONF_ERROR;
    }

    al->file->flush = ngx_http_ig_audit_reopen;
    al->file->data = al;

    if (ngx_http_ig_audit_open_state(cf, al) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    al->pool = ngx_thread_pool_add(cf, &al->pool_name);
    if (al->pool == NULL) {
        return NGX_CONF_ERROR;
    }

    alp = ngx_array_push(&mcf->logs);
    if (alp == NULL) {
        return NGX_CONF_ERROR;
    }

    *alp = al;
    lcf->log = al;

    return NGX_CONF_OK;
}


/*
 * PATH.chainstate: the newest chain marker of the log and its open
 * chains (lib/ig_audit.h).  The master opens it, read-write, so that the
 * workers need no right on the directory; they lock it with fcntl().
 */

static void
ngx_http_ig_audit_close_state(void *data)
{
    ngx_http_ig_audit_log_t *al = data;

    if (al->state_fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(al->state_fd);
        al->state_fd = NGX_INVALID_FILE;
    }
}


static ngx_int_t
ngx_http_ig_audit_open_state(ngx_conf_t *cf, ngx_http_ig_audit_log_t *al)
{
    u_char                   *p;
    ngx_pool_cleanup_t       *cln;

    al->state_path.len = al->file->name.len
                         + sizeof(IG_AUDIT_STATE_SUFFIX) - 1;
    al->state_path.data = ngx_pnalloc(cf->pool, al->state_path.len + 1);
    if (al->state_path.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(al->state_path.data, al->file->name.data,
                   al->file->name.len);
    ngx_memcpy(p, IG_AUDIT_STATE_SUFFIX, sizeof(IG_AUDIT_STATE_SUFFIX));

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    al->state_fd = ngx_open_file(al->state_path.data, NGX_FILE_RDWR,
                                 NGX_FILE_CREATE_OR_OPEN, 0600);

    if (al->state_fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "infergate_audit: cannot open the chain state "
                           "file \"%V\"", &al->state_path);
        return NGX_ERROR;
    }

    /* not ngx_pool_cleanup_file(): cf->log is the previous cycle's log */
    cln->handler = ngx_http_ig_audit_close_state;
    cln->data = al;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_audit_load_keys(ngx_conf_t *cf, ngx_http_ig_audit_log_t *al,
    ngx_str_t *name)
{
    char             err[256];
    u_char          *data;
    size_t           size;
    ngx_str_t        file, text;
    ngx_file_info_t  fi;

    file = *name;

    if (ngx_http_ig_read_conf_file(cf, "infergate_audit", &file, 64 * 1024,
                                   &text, &fi)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    data = text.data;
    size = text.len;

    /* a signing key others can read signs nothing anyone can trust */

    if (!ig_audit_key_file_mode_ok(fi.st_mode)) {
        ngx_explicit_memzero(data, size);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: key file \"%V\" is accessible "
                           "by group or others (mode %03o): chmod 600 it",
                           &file, (unsigned) (fi.st_mode & 0777));
        return NGX_ERROR;
    }

    al->ring = ngx_palloc(cf->pool, sizeof(ig_audit_keyring_t));
    if (al->ring == NULL) {
        return NGX_ERROR;
    }

    if (ig_audit_keyring_parse(al->ring, (char *) data, size, err,
                               sizeof(err))
        != 0)
    {
        ngx_explicit_memzero(data, size);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: key file \"%V\": %s",
                           &file, err);
        return NGX_ERROR;
    }

    ngx_explicit_memzero(data, size);

    al->key = ig_audit_keyring_find(al->ring, (char *) al->key_id.data,
                                    al->key_id.len);
    if (al->key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: key id \"%V\" is not in \"%V\"",
                           &al->key_id, &file);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_audit_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_ig_audit_log_t       **alp, *al;
    ngx_http_ig_audit_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_infergate_audit_module);
    if (mcf == NULL) {
        return NGX_OK;
    }

    alp = mcf->logs.elts;

    for (i = 0; i < mcf->logs.nelts; i++) {
        al = alp[i];

        al->log = cycle->log;

        if (al->tsc) {
            al->tsc_start = ngx_http_ig_audit_tsc();
            al->tsc_start_ns = ngx_http_ig_audit_ns(CLOCK_MONOTONIC);
        }

        ngx_queue_init(&al->free);
        ngx_queue_init(&al->pending);

        al->timer.handler = ngx_http_ig_audit_timer;
        al->timer.data = al;
        al->timer.log = cycle->log;
        al->timer.cancelable = 1;

        if (al->syslog
            && ngx_http_ig_syslog_init_process(al->syslog, cycle) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_http_ig_audit_chain_start(al) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_add_timer(&al->timer, al->flush);
    }

    return NGX_OK;
}


static void
ngx_http_ig_audit_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_ig_audit_log_t       **alp;
    ngx_http_ig_audit_main_conf_t  *mcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_infergate_audit_module);
    if (mcf == NULL) {
        return;
    }

    /* the thread pools have exited by now: write what is left ourselves */

    alp = mcf->logs.elts;

    for (i = 0; i < mcf->logs.nelts; i++) {
        alp[i]->exiting = 1;
        ngx_http_ig_audit_chain_end(alp[i], 1);

        if (alp[i]->tsc) {
            ngx_http_ig_audit_tsc_report(alp[i]);
        }

        if (alp[i]->syslog) {
            ngx_http_ig_syslog_exit_process(alp[i]->syslog);
        }
    }
}


static ngx_int_t
ngx_http_ig_audit_chain_start(ngx_http_ig_audit_log_t *al)
{
    char     id[IG_AUDIT_CHAIN_ID_LEN + 1];

    if (ig_audit_chain_id(id) != 0) {
        ngx_log_error(NGX_LOG_ALERT, al->log, 0,
                      "infergate_audit: no random chain id");
        return NGX_ERROR;
    }

    al->chain = ig_audit_chain_open(al->key, id);
    if (al->chain == NULL) {
        ngx_log_error(NGX_LOG_ALERT, al->log, 0,
                      "infergate_audit: cannot open a chain");
        return NGX_ERROR;
    }

    al->fd = ngx_calloc(sizeof(ngx_http_ig_audit_fd_t), al->log);
    if (al->fd == NULL) {
        return NGX_ERROR;
    }

    al->fd->fd = dup(al->file->fd);
    al->fd->refs = 1;

    if (al->fd->fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, al->log, ngx_errno,
                      "infergate_audit: dup() of \"%V\" failed", &al->path);
        return NGX_ERROR;
    }

    al->records = 0;

    /* written at once, linked to the log's newest marker */

    return ngx_http_ig_audit_marker(al, al->chain, al->fd->fd, 1, 0);
}


/*
 * Closes the chain with an end record that states what was lost, after
 * every record of the chain: at once when sync (worker exit), else queued
 * behind the chain's buffers (reopen), written when their turn comes.
 */

static void
ngx_http_ig_audit_chain_end(ngx_http_ig_audit_log_t *al, ngx_uint_t sync)
{
    ngx_http_ig_audit_buf_t  *b;

    if (al->chain == NULL) {
        if (sync) {
            /* an exit after a reopen: the old chain's end is queued */
            ngx_http_ig_audit_submit(al, 1);
        }

        return;
    }

    ngx_http_ig_audit_submit(al, sync);

    if (sync || al->exiting) {
        (void) ngx_http_ig_audit_marker(al, al->chain, al->fd->fd, 0,
                                        al->records);
        ig_audit_chain_close(al->chain);
        al->chain = NULL;

        ngx_http_ig_audit_fd_unref(al->fd);
        al->fd = NULL;
        return;
    }

    b = ngx_calloc(sizeof(ngx_http_ig_audit_buf_t), al->log);

    if (b == NULL) {
        /* no room to wait: the chain stays without end, as if crashed */
        ig_audit_chain_close(al->chain);
        al->chain = NULL;
        ngx_http_ig_audit_fd_unref(al->fd);
        al->fd = NULL;
        return;
    }

    b->end_chain = al->chain;
    b->end_records = al->records;
    b->fd = al->fd;                     /* the chain's reference moves */
    b->log = al;
    b->oneoff = 1;

    al->chain = NULL;
    al->fd = NULL;

    ngx_queue_insert_tail(&al->pending, &b->queue);

    ngx_http_ig_audit_kick(al);
}


/* A queued chain end, its chain's records all written: write it now. */

static void
ngx_http_ig_audit_end_entry(ngx_http_ig_audit_log_t *al,
    ngx_http_ig_audit_buf_t *b)
{
    (void) ngx_http_ig_audit_marker(al, b->end_chain, b->fd->fd, 0,
                                    b->end_records);
    ig_audit_chain_close(b->end_chain);
    ngx_http_ig_audit_fd_unref(b->fd);
    ngx_free(b);
}


static int
ngx_http_ig_audit_alive(int64_t pid)
{
    return kill((pid_t) pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}


/*
 * Seals a chain marker and writes it straight to fd, holding the state
 * file's lock: the marker names the log's newest marker (read from the
 * state), then becomes it.  So every marker of the file, from all
 * workers, across reloads and restarts, is in one list, and the state
 * never names a marker that is not on disk.  Blocking I/O on the event
 * loop: only at a worker's start and exit and at reopen.
 */

static ngx_int_t
ngx_http_ig_audit_marker(ngx_http_ig_audit_log_t *al, ig_audit_chain_t *chain,
    ngx_fd_t fd, ngx_uint_t start, uint64_t records)
{
    char               *text;
    u_char              buf[1024], *p;
    ig_audit_state_t   *st;
    ig_audit_marker_t   mk;

    mk.len = 0;

    st = ngx_alloc(sizeof(ig_audit_state_t), al->log);
    text = ngx_alloc(IG_AUDIT_STATE_SIZE_MAX + 1, al->log);

    if (st == NULL || text == NULL) {
        goto lost;
    }

    p = ngx_cpymem(buf, "{\"@timestamp\":\"",
                   sizeof("{\"@timestamp\":\"") - 1);
    p = ngx_http_ig_audit_timestamp(p);
    p = ngx_sprintf(p, "\",\"event\":{\"kind\":\"event\",\"category\":"
                    "[\"api\"],\"action\":\"%s\",\"outcome\":\"success\"},"
                    "\"infergate\":{\"pid\":%P,\"records\":%uL,"
                    "\"lost\":%uL,",
                    start ? "chain_start" : "chain_end", ngx_pid, records,
                    al->lost);

    /* lib/: lock the state, link, seal, write, advance the state */

    (void) ig_audit_marker_write(al->state_fd, fd, chain, buf, p - buf,
                                 start, ngx_pid, ngx_http_ig_audit_alive,
                                 st, text, &mk);

    if (mk.lock_errno) {
        ngx_log_error(NGX_LOG_ALERT, al->log, mk.lock_errno,
                      "infergate_audit: fcntl(F_WRLCK) on \"%V\" failed",
                      &al->state_path);
    }

    if (mk.damaged) {
        /* the verifier will report the new genesis as a reset */
        ngx_log_error(NGX_LOG_ALERT, al->log, 0,
                      "infergate_audit: chain state file \"%V\" is "
                      "damaged (%s): starting a new genesis",
                      &al->state_path, mk.damage);
    }

    if (mk.write_errno && ngx_time() != al->err_logged) {
        /* as for buffers: a full disk logs once a second */
        al->err_logged = ngx_time();
        ngx_log_error(NGX_LOG_ERR, al->log, mk.write_errno,
                      "infergate_audit: write to \"%V\" failed, "
                      "chain marker lost", &al->path);
    }

    if (mk.state_failed) {
        ngx_log_error(NGX_LOG_ALERT, al->log, mk.state_errno,
                      "infergate_audit: cannot write the chain state file "
                      "\"%V\"", &al->state_path);
    }

    if (mk.len) {
        if (al->syslog) {
            ngx_http_ig_syslog_send(al->syslog, buf, mk.len - 1);
        }

        ngx_http_ig_metrics_add(IG_MC_AUDIT_RECORDS, 1);
        ngx_http_ig_metrics_add(IG_MC_AUDIT_BYTES, mk.len);

        if (chain == al->chain) {
            al->records++;
        }
    }

lost:

    if (st == NULL || text == NULL || mk.len == 0) {
        al->lost++;
        ngx_http_ig_metrics_add(IG_MC_AUDIT_LOST, 1);
    }

    ngx_free(st);
    ngx_free(text);

    return NGX_OK;
}


/*
 * A pointer to len + trailer bytes of room in the active buffer.  A record
 * larger than a buffer (hostile URIs escape to six times their size) gets
 * a buffer of its own.  NULL when every buffer is on its way to a slow
 * disk: the caller counts the record lost, unsealed, so the chain stays
 * whole.
 */

static u_char *
ngx_http_ig_audit_reserve(ngx_http_ig_audit_log_t *al, size_t len)
{
    size_t                    size;
    ngx_queue_t              *q;
    ngx_http_ig_audit_buf_t  *b;

    len += IG_AUDIT_TRAILER_MAX;

    b = al->active;

    if (b && b->len + len <= b->size) {
        return b->data + b->len;
    }

    if (b && b->len) {
        ngx_http_ig_audit_submit(al, 0);
    }

    b = al->active;

    if (b && len <= b->size) {
        return b->data + b->len;
    }

    size = al->buffer_size;

    if (len > size) {
        size = len;
        b = NULL;

    } else if (!ngx_queue_empty(&al->free)) {
        q = ngx_queue_head(&al->free);
        ngx_queue_remove(q);
        b = ngx_queue_data(q, ngx_http_ig_audit_buf_t, queue);

    } else if (al->nbufs >= NGX_HTTP_IG_AUDIT_MAX_BUFS) {
        return NULL;
    }

    if (b == NULL) {
        b = ngx_calloc(sizeof(ngx_http_ig_audit_buf_t), al->log);
        if (b == NULL) {
            return NULL;
        }

        b->data = ngx_alloc(size, al->log);
        b->task = ngx_calloc(sizeof(ngx_thread_task_t), al->log);

        if (b->data == NULL || b->task == NULL) {
            ngx_free(b->data);
            ngx_free(b->task);
            ngx_free(b);
            return NULL;
        }

        b->size = size;
        b->oneoff = (size != al->buffer_size);
        b->task->ctx = b;
        b->task->handler = ngx_http_ig_audit_write;
        b->task->event.handler = ngx_http_ig_audit_written;
        b->task->event.data = b;
        b->task->event.log = al->log;
        b->log = al;

        if (!b->oneoff) {
            al->nbufs++;
        }
    }

    b->len = 0;
    b->nrecs = 0;
    b->err = 0;
    al->active = b;

    return b->data;
}


static void
ngx_http_ig_audit_commit(ngx_http_ig_audit_log_t *al, size_t len)
{
    if (al->syslog) {
        /* the same signed bytes, without the newline */
        ngx_http_ig_syslog_send(al->syslog, al->active->data
                                            + al->active->len, len - 1);
    }

    al->active->len += len;
    al->active->nrecs++;
    al->records++;
}


/*
 * Queues the active buffer behind those already filled.  Pool threads
 * would write concurrent buffers in any order, so only the oldest is ever
 * in the pool; sync writes them all here (worker exit, when the pool's
 * threads are gone).
 */

static void
ngx_http_ig_audit_submit(ngx_http_ig_audit_log_t *al, ngx_uint_t sync)
{
    ngx_queue_t              *q;
    ngx_http_ig_audit_buf_t  *b;

    b = al->active;

    if (b && b->len) {
        al->active = NULL;

        b->fd = al->fd;
        b->fd->refs++;

        ngx_queue_insert_tail(&al->pending, &b->queue);
    }

    if (sync || al->exiting) {
        al->writing = 0;

        while (!ngx_queue_empty(&al->pending)) {
            q = ngx_queue_head(&al->pending);
            ngx_queue_remove(q);
            b = ngx_queue_data(q, ngx_http_ig_audit_buf_t, queue);

            if (b->end_chain) {
                ngx_http_ig_audit_end_entry(al, b);
                continue;
            }

            ngx_http_ig_audit_write(b, al->log);
            ngx_http_ig_audit_release(al, b);
        }

        return;
    }

    ngx_http_ig_audit_kick(al);
}


/* Hands the oldest filled buffer to the pool unless one is being written. */

static void
ngx_http_ig_audit_kick(ngx_http_ig_audit_log_t *al)
{
    uint64_t                  t;
    ngx_int_t                 rc;
    ngx_queue_t              *q;
    ngx_http_ig_audit_buf_t  *b;

    for ( ;; ) {
        if (al->writing || ngx_queue_empty(&al->pending)) {
            return;
        }

        q = ngx_queue_head(&al->pending);
        ngx_queue_remove(q);
        b = ngx_queue_data(q, ngx_http_ig_audit_buf_t, queue);

        if (b->end_chain == NULL) {
            break;
        }

        /* the chain's buffers before it are written and released */
        ngx_http_ig_audit_end_entry(al, b);
    }

    al->writing = 1;

    t = al->tsc ? ngx_http_ig_audit_ns(CLOCK_THREAD_CPUTIME_ID) : 0;
    rc = ngx_thread_task_post(al->pool, b->task);

    if (al->tsc) {
        al->tsc_post_ns += ngx_http_ig_audit_ns(CLOCK_THREAD_CPUTIME_ID) - t;
    }

    if (rc != NGX_OK) {
        /* the pool's queue is full: better late on this thread than lost */
        ngx_http_ig_audit_write(b, al->log);
        ngx_http_ig_audit_written(&b->task->event);
    }
}


/* Runs in a pool thread: no nginx event structures are touched. */

static void
ngx_http_ig_audit_write(void *data, ngx_log_t *log)
{
    ngx_http_ig_audit_buf_t *b = data;

    u_char    *p;
    size_t     left;
    ssize_t    n;
    uint64_t   t;

    p = b->data;
    left = b->len;
    b->err = 0;
    t = b->log->tsc ? ngx_http_ig_audit_ns(CLOCK_THREAD_CPUTIME_ID) : 0;

    while (left) {
        n = write(b->fd->fd, p, left);

        if (n == -1) {
            if (ngx_errno == NGX_EINTR) {
                continue;
            }

            b->err = ngx_errno;

            if (left != b->len && write(b->fd->fd, "\n", 1) != 1) {
                /* the half line stays: the verifier names it malformed */
                return;
            }

            return;
        }

        p += n;
        left -= n;
    }

    if (b->log->tsc) {
        b->write_ns = ngx_http_ig_audit_ns(CLOCK_THREAD_CPUTIME_ID) - t;
    }
}


static void
ngx_http_ig_audit_written(ngx_event_t *ev)
{
    ngx_http_ig_audit_buf_t *b = ev->data;

    uint64_t                  t;
    ngx_http_ig_audit_log_t  *al;

    al = b->log;
    al->writing = 0;
    t = al->tsc ? ngx_http_ig_audit_ns(CLOCK_THREAD_CPUTIME_ID) : 0;

    ngx_http_ig_audit_release(al, b);

    if (al->tsc) {
        al->tsc_post_ns += ngx_http_ig_audit_ns(CLOCK_THREAD_CPUTIME_ID) - t;
    }

    /* the next filled buffer in line, if any; never the one being filled */
    ngx_http_ig_audit_kick(al);
}


static void
ngx_http_ig_audit_release(ngx_http_ig_audit_log_t *al,
    ngx_http_ig_audit_buf_t *b)
{
    if (b->err) {
        al->lost += b->nrecs;
        ngx_http_ig_metrics_add(IG_MC_AUDIT_FLUSH_ERRORS, 1);
        ngx_http_ig_metrics_add(IG_MC_AUDIT_LOST, b->nrecs);

    } else {
        ngx_http_ig_metrics_add(IG_MC_AUDIT_RECORDS, b->nrecs);
        ngx_http_ig_metrics_add(IG_MC_AUDIT_BYTES, b->len);
    }

    if (b->err) {

        /* a full disk must not flood the error log: once a second */

        if (ngx_time() != al->err_logged) {
            al->err_logged = ngx_time();
            ngx_log_error(NGX_LOG_ERR, al->log, b->err,
                          "infergate_audit: write to \"%V\" failed, "
                          "%uL records lost so far", &al->path, al->lost);
        }
    }

    if (al->tsc) {
        al->tsc_write_ns += b->write_ns;
        al->tsc_written += b->nrecs;
        al->tsc_writes++;
        b->write_ns = 0;
    }

    ngx_http_ig_audit_fd_unref(b->fd);
    b->fd = NULL;
    b->len = 0;
    b->nrecs = 0;

    if (b->oneoff) {
        ngx_free(b->data);
        ngx_free(b->task);
        ngx_free(b);
        return;
    }

    ngx_queue_insert_tail(&al->free, &b->queue);
}


static void
ngx_http_ig_audit_fd_unref(ngx_http_ig_audit_fd_t *fd)
{
    if (fd == NULL || --fd->refs) {
        return;
    }

    if (fd->fd != NGX_INVALID_FILE) {
        (void) close(fd->fd);
    }

    ngx_free(fd);
}


static void
ngx_http_ig_audit_timer(ngx_event_t *ev)
{
    ngx_http_ig_audit_log_t *al = ev->data;

    ngx_http_ig_audit_submit(al, 0);

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(ev, al->flush);
    }
}


/*
 * nginx calls this on "nginx -s reopen" just before it reopens the file:
 * the chain ends in the old file and a new one starts in the new file.
 */

static void
ngx_http_ig_audit_reopen(ngx_open_file_t *file, ngx_log_t *log)
{
    ngx_http_ig_audit_log_t *al = file->data;

    if (al->chain == NULL || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_http_ig_audit_chain_end(al, 0);

    /* the new file is open once this returns; start on the next record */
}


/* The log phase: one sealed record per request. */

static ngx_int_t
ngx_http_ig_audit_handler(ngx_http_request_t *r)
{
    u_char                     *p, *start;
    size_t                      len, n;
    off_t                       req_bytes, resp_bytes;
    ngx_msec_int_t              ms;
    ngx_str_t                   method, path, query, ua, tenant, trace;
    ngx_str_t                   reqid, action, addr, limit, model, cache,
                                breaker;
    ngx_uint_t                  i, status, nerr;
    ngx_time_t                 *tp;
    ngx_table_elt_t            *h;
    ngx_list_part_t            *part;
    const ig_verror_t          *errors;
    ngx_http_ig_ctx_t          *ctx;
    ngx_http_ig_audit_log_t    *al;
    ngx_http_variable_value_t  *vv;
    int                         truncated;
    uint64_t                    t[5];

    al = ((ngx_http_ig_audit_loc_conf_t *)
          ngx_http_get_module_loc_conf(r, ngx_http_infergate_audit_module))
         ->log;

    if (al == NULL || al == NGX_CONF_UNSET_PTR || al->chain == NULL) {
        if (al && al != NGX_CONF_UNSET_PTR && al->chain == NULL
            && !ngx_exiting && !ngx_quit && !ngx_terminate)
        {
            /* the first record after a reopen starts the new chain */
            if (ngx_http_ig_audit_chain_start(al) != NGX_OK) {
                return NGX_OK;
            }

        } else {
            return NGX_OK;
        }
    }

    t[0] = al->tsc ? ngx_http_ig_audit_tsc() : 0;
    t[1] = t[2] = t[3] = t[4] = 0;

    ctx = ngx_http_ig_find_ctx(r);

    status = r->err_status ? r->err_status : r->headers_out.status;

    if (ngx_http_ig_request_id(r, &reqid) != NGX_OK) {
        ngx_str_null(&reqid);
    }

    method = r->method_name;
    path = r->uri;
    query = r->args;
    addr = r->connection->addr_text;

    ngx_str_null(&ua);
    if (r->headers_in.user_agent) {
        ua = r->headers_in.user_agent->value;
    }

    /* W3C traceparent: 00-<32 hex trace id>-<16 hex>-<2 hex> */

    ngx_str_null(&trace);
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

            if (part->nelts == 0) {
                break;
            }
        }

        if (h[i].key.len == sizeof("traceparent") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "traceparent",
                               sizeof("traceparent") - 1) == 0
            && h[i].value.len >= 55 && h[i].value.data[2] == '-')
        {
            trace.data = h[i].value.data + 3;
            trace.len = 32;

            for (n = 0; n < 32; n++) {
                if (!((trace.data[n] >= '0' && trace.data[n] <= '9')
                      || (trace.data[n] >= 'a' && trace.data[n] <= 'f')))
                {
                    ngx_str_null(&trace);
                    break;
                }
            }

            break;
        }
    }

    ngx_str_null(&tenant);
    ngx_str_null(&limit);
    ngx_str_null(&model);
    ngx_str_null(&action);
    ngx_str_null(&cache);
    ngx_str_null(&breaker);

    if (ngx_http_ig_breaker_state(r)) {
        breaker = *ngx_http_ig_breaker_state(r);
    }

    if (al->cache_var != NGX_ERROR) {
        vv = ngx_http_get_indexed_variable(r, al->cache_var);

        if (vv && !vv->not_found && vv->len) {
            cache.data = vv->data;
            cache.len = vv->len;
        }
    }
    nerr = 0;
    errors = NULL;
    truncated = 0;
    req_bytes = r->headers_in.content_length_n > 0
                ? r->headers_in.content_length_n : 0;

    if (ctx) {
        if (ctx->key) {
            tenant = ctx->key->tenant;
        }

        if (ctx->limit_status < NGX_HTTP_IG_LIMIT_NSTATUSES) {
            limit = ngx_http_ig_limit_statuses[ctx->limit_status];
        }

        model = ctx->model;
        action = ctx->action;

        if (ctx->body_finished) {
            req_bytes = ctx->body_bytes;
        }

        if (ctx->validator && ctx->valid_rc != IG_VALID_OK) {
            nerr = ig_validator_errors(ctx->validator, &errors, &truncated);
        }
    }

    if (action.len == 0) {
        ngx_str_set(&action, "request");
    }

    resp_bytes = r->connection->sent - (off_t) r->header_size;
    if (resp_bytes < 0) {
        resp_bytes = 0;
    }

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    /*
     * Room for the record after escaping, where a hostile byte may grow
     * sixfold.  The usual short record takes that bound as it is, which
     * saves a pass over every string; a long one is measured exactly so
     * it does not claim a buffer of its own.
     */

    len = reqid.len + method.len + path.len + query.len + addr.len + ua.len
          + tenant.len + model.len + cache.len;

    if (1024 + 6 * len <= al->buffer_size / 8) {
        len = 1024 + 6 * len;

    } else {
        len = 1024
              + ig_json_escape_len(reqid.data, reqid.len)
              + ig_json_escape_len(method.data, method.len)
              + ig_json_escape_len(path.data, path.len)
              + ig_json_escape_len(query.data, query.len)
              + ig_json_escape_len(addr.data, addr.len)
              + ig_json_escape_len(ua.data, ua.len)
              + ig_json_escape_len(tenant.data, tenant.len)
              + ig_json_escape_len(model.data, model.len)
              + ig_json_escape_len(cache.data, cache.len);
    }

    len += trace.len + action.len + limit.len + breaker.len + 16;

    for (i = 0; i < nerr; i++) {
        len += 3 + ig_json_escape_len((u_char *) errors[i].pointer,
                                      ngx_strlen(errors[i].pointer));
    }

    if (al->tsc) {
        t[1] = ngx_http_ig_audit_tsc();
    }

    p = ngx_http_ig_audit_reserve(al, len);
    if (p == NULL) {
        al->lost++;
        ngx_http_ig_metrics_add(IG_MC_AUDIT_LOST, 1);
        return NGX_OK;
    }

    if (al->tsc) {
        t[2] = ngx_http_ig_audit_tsc();
    }

    start = p;

    p = ngx_cpymem(p, "{\"@timestamp\":\"", sizeof("{\"@timestamp\":\"") - 1);
    p = ngx_http_ig_audit_timestamp(p);
    p = ngx_cpymem(p, "\",\"event\":{", sizeof("\",\"event\":{") - 1);

    if (reqid.len) {
        p = ngx_http_ig_audit_str(p, "id", &reqid);
        *p++ = ',';
    }

    p = ngx_http_ig_audit_lit(p, "\"kind\":\"event\",\"category\":"
                              "[\"api\"],\"action\":\"");
    p = ngx_cpymem(p, action.data, action.len);

    if (status < 400) {
        p = ngx_http_ig_audit_lit(p, "\",\"outcome\":\"success\","
                                  "\"duration\":");
    } else {
        p = ngx_http_ig_audit_lit(p, "\",\"outcome\":\"failure\","
                                  "\"duration\":");
    }

    p = ngx_http_ig_audit_u64(p, (uint64_t) ms * 1000000);
    p = ngx_http_ig_audit_lit(p, "},");

    p = ngx_cpymem(p, "\"http\":{\"request\":{",
                   sizeof("\"http\":{\"request\":{") - 1);
    p = ngx_http_ig_audit_str(p, "method", &method);
    p = ngx_http_ig_audit_lit(p, ",\"body\":{\"bytes\":");
    p = ngx_http_ig_audit_u64(p, (uint64_t) req_bytes);
    p = ngx_http_ig_audit_lit(p, "}},\"response\":{\"status_code\":");
    p = ngx_http_ig_audit_u64(p, status);
    p = ngx_http_ig_audit_lit(p, ",\"body\":{\"bytes\":");
    p = ngx_http_ig_audit_u64(p, (uint64_t) resp_bytes);
    p = ngx_http_ig_audit_lit(p, "}}},");

    p = ngx_cpymem(p, "\"url\":{", sizeof("\"url\":{") - 1);
    p = ngx_http_ig_audit_str(p, "path", &path);

    if (query.len) {
        *p++ = ',';
        p = ngx_http_ig_audit_str(p, "query", &query);
    }

    p = ngx_cpymem(p, "},\"source\":{", sizeof("},\"source\":{") - 1);
    p = ngx_http_ig_audit_str(p, "ip", &addr);
    *p++ = '}';

    if (ua.len) {
        p = ngx_cpymem(p, ",\"user_agent\":{",
                       sizeof(",\"user_agent\":{") - 1);
        p = ngx_http_ig_audit_str(p, "original", &ua);
        *p++ = '}';
    }

    if (tenant.len) {
        p = ngx_cpymem(p, ",\"organization\":{",
                       sizeof(",\"organization\":{") - 1);
        p = ngx_http_ig_audit_str(p, "id", &tenant);
        *p++ = '}';
    }

    if (trace.len) {
        p = ngx_cpymem(p, ",\"trace\":{", sizeof(",\"trace\":{") - 1);
        p = ngx_http_ig_audit_str(p, "id", &trace);
        *p++ = '}';
    }

    p = ngx_cpymem(p, ",\"infergate\":{", sizeof(",\"infergate\":{") - 1);

    if (limit.len) {
        p = ngx_http_ig_audit_str(p, "limit", &limit);
        *p++ = ',';
    }

    if (model.len) {
        p = ngx_http_ig_audit_str(p, "model", &model);
        *p++ = ',';
    }

    if (cache.len) {
        p = ngx_http_ig_audit_str(p, "cache", &cache);
        *p++ = ',';
    }

    if (breaker.len) {
        p = ngx_http_ig_audit_str(p, "breaker", &breaker);
        *p++ = ',';
    }

    if (ctx && ctx->bloom) {
        if (ctx->bloom == NGX_HTTP_IG_BLOOM_HIT) {
            p = ngx_http_ig_audit_lit(p, "\"bloom\":\"hit\",");
        } else {
            p = ngx_http_ig_audit_lit(p, "\"bloom\":\"miss\",");
        }
    }

    if (ctx && ctx->batch_rows) {
        p = ngx_http_ig_audit_lit(p, "\"batch_size\":");
        p = ngx_http_ig_audit_u64(p, ctx->batch_rows);
        p = ngx_http_ig_audit_lit(p, ",\"backend_us\":");
        p = ngx_http_ig_audit_u64(p, ctx->backend_us);
        *p++ = ',';
    }

    if (nerr) {
        p = ngx_cpymem(p, "\"schema_errors\":[",
                       sizeof("\"schema_errors\":[") - 1);

        for (i = 0; i < nerr; i++) {
            if (i) {
                *p++ = ',';
            }

            *p++ = '"';
            p = ig_json_escape(p, (u_char *) errors[i].pointer,
                               ngx_strlen(errors[i].pointer));
            *p++ = '"';
        }

        p = ngx_cpymem(p, "],", 2);
    }

    p = ngx_http_ig_audit_lit(p, "\"pid\":");
    p = ngx_http_ig_audit_u64(p, (uint64_t) ngx_pid);
    *p++ = ',';

    if (al->tsc) {
        t[3] = ngx_http_ig_audit_tsc();
    }

    n = ig_audit_seal(al->chain, start, p - start);
    if (n == 0) {
        al->lost++;
        ngx_http_ig_metrics_add(IG_MC_AUDIT_LOST, 1);
        return NGX_OK;
    }

    if (al->tsc) {
        t[4] = ngx_http_ig_audit_tsc();
    }

    ngx_http_ig_audit_commit(al, n);

    if (al->tsc) {
        t[1] -= t[0];
        t[2] -= t[0];
        t[3] -= t[0];
        t[4] -= t[0];
        t[0] = ngx_http_ig_audit_tsc() - t[0];

        if (t[0] > NGX_HTTP_IG_AUDIT_TSC_PREEMPTED) {
            al->tsc_skipped++;

        } else {
            al->tsc_records++;
            al->tsc_build += t[1] + (t[3] - t[2]);
            al->tsc_seal += t[4] - t[3];
            al->tsc_handoff += (t[2] - t[1]) + (t[0] - t[4]);
        }
    }

    return NGX_OK;
}


/*
 * INFERGATE_AUDIT_TSC: the mean cycles per record of building it (from
 * the log phase's start to the seal), sealing it, handing it to the
 * writer (reserving room and committing it, on the TSC; posting full
 * buffers to the thread pool and taking them back, the worker's CPU time)
 * and writing it (write(2)'s CPU time in the pool thread, divided by the
 * records written).  CPU times are converted at the TSC's rate over the
 * worker's life; records preempted half way are left out of the means.
 */

static void
ngx_http_ig_audit_tsc_report(ngx_http_ig_audit_log_t *al)
{
    double    ghz;
    uint64_t  n, w, ns;

    n = al->tsc_records ? al->tsc_records : 1;
    w = al->tsc_written ? al->tsc_written : 1;
    ns = ngx_http_ig_audit_ns(CLOCK_MONOTONIC) - al->tsc_start_ns;
    ghz = ns ? (double) (ngx_http_ig_audit_tsc() - al->tsc_start) / ns : 1;

    ngx_log_error(NGX_LOG_WARN, al->log, 0,
                  "infergate_audit \"%V\": cycles per record (TSC at "
                  "%.3f GHz) over %uL records (%uL preempted, left out): "
                  "build %uL, seal %uL, hand-off %uL (%uL reserve and "
                  "commit, %uL posting to and from the pool), write %uL "
                  "(%uL writes of %uL records)",
                  &al->path, ghz, al->tsc_records, al->tsc_skipped,
                  al->tsc_build / n, al->tsc_seal / n,
                  al->tsc_handoff / n + (uint64_t) (al->tsc_post_ns * ghz) / n,
                  al->tsc_handoff / n, (uint64_t) (al->tsc_post_ns * ghz) / n,
                  (uint64_t) (al->tsc_write_ns * ghz) / w, al->tsc_writes,
                  al->tsc_written / (al->tsc_writes ? al->tsc_writes : 1));
}


static u_char *
ngx_http_ig_audit_str(u_char *p, const char *name, ngx_str_t *value)
{
    *p++ = '"';
    p = ngx_cpymem(p, name, ngx_strlen(name));
    p = ngx_cpymem(p, "\":\"", 3);
    p = ig_json_escape(p, value->data, value->len);
    *p++ = '"';

    return p;
}


/* RFC 3339, UTC, milliseconds. */

static u_char *
ngx_http_ig_audit_timestamp(u_char *p)
{
    ngx_tm_t     tm;
    ngx_time_t  *tp;

    /* "YYYY-MM-DDThh:mm:ss." is formatted once a second per worker */
    static time_t  sec = -1;
    static u_char  head[sizeof("1970-01-01T00:00:00.") - 1];

    tp = ngx_timeofday();

    if (tp->sec != sec) {
        ngx_gmtime(tp->sec, &tm);
        (void) ngx_sprintf(head, "%4d-%02d-%02dT%02d:%02d:%02d.",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
        sec = tp->sec;
    }

    p = ngx_cpymem(p, head, sizeof(head));
    *p++ = (u_char) ('0' + tp->msec / 100);
    *p++ = (u_char) ('0' + tp->msec / 10 % 10);
    *p++ = (u_char) ('0' + tp->msec % 10);
    *p++ = 'Z';

    return p;
}


/* The same id for the header, the record and $infergate_request_id. */

ngx_int_t
ngx_http_ig_request_id(ngx_http_request_t *r, ngx_str_t *id)
{
    uint64_t            x;
    ngx_http_ig_ctx_t  *ctx;

    ctx = ngx_http_ig_get_ctx(r->main);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (ctx->request_id.len == 0) {

        if (ngx_http_ig_reqid_key == 0) {
            if (RAND_bytes((u_char *) &ngx_http_ig_reqid_prefix, 8) != 1
                || RAND_bytes((u_char *) &ngx_http_ig_reqid_key, 8) != 1)
            {
                return NGX_ERROR;
            }

            ngx_http_ig_reqid_key |= 1;
        }

        /* splitmix64's finalizer: a bijection, so ids never repeat */

        x = ++ngx_http_ig_reqid_next ^ ngx_http_ig_reqid_key;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        x ^= x >> 31;

        ctx->request_id.data = ngx_pnalloc(r->pool, 32);
        if (ctx->request_id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_http_ig_audit_hex64(ngx_http_ig_audit_hex64(
                                    ctx->request_id.data,
                                    ngx_http_ig_reqid_prefix), x);
        ctx->request_id.len = 32;
    }

    *id = ctx->request_id;

    return NGX_OK;
}


static void *
ngx_http_ig_audit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ig_audit_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_audit_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&mcf->logs, cf->pool, 2,
                       sizeof(ngx_http_ig_audit_log_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static void *
ngx_http_ig_audit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ig_audit_loc_conf_t  *conf;

    conf = ngx_palloc(cf->pool, sizeof(ngx_http_ig_audit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->log = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_ig_audit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_audit_loc_conf_t *prev = parent;
    ngx_http_ig_audit_loc_conf_t *conf = child;

    ngx_conf_merge_ptr_value(conf->log, prev->log, NULL);

    return NGX_CONF_OK;
}


/* the record is written in the log phase, before the metrics count it */

static ngx_int_t
ngx_http_ig_audit_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_ig_audit_handler;

    return NGX_OK;
}
