
/*
 * Copyright (C) infergate authors
 */


#ifndef _NGX_HTTP_INFERGATE_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <ig_gcra.h>
#include <ig_keys.h>
#include <ig_schema.h>
#include <yajl/yajl_common.h>


#define NGX_HTTP_IG_MAX_LIMITS        8
#define NGX_HTTP_IG_LOG_MAX           256    /* escaped request bytes logged */

#define NGX_HTTP_IG_HEADERS_OFF       0
#define NGX_HTTP_IG_HEADERS_DRAFT     1
#define NGX_HTTP_IG_HEADERS_LEGACY    2
#define NGX_HTTP_IG_HEADERS_BOTH      3

#define NGX_HTTP_IG_LIMIT_NONE        0
#define NGX_HTTP_IG_LIMIT_PASSED      1
#define NGX_HTTP_IG_LIMIT_REJECTED    2
#define NGX_HTTP_IG_LIMIT_DRY_RUN     3
#define NGX_HTTP_IG_LIMIT_FAIL_OPEN   4
#define NGX_HTTP_IG_LIMIT_NSTATUSES   5

/*
 * The names of the statuses above, for $infergate_limit_status and the
 * audit record: the one table, in ngx_http_infergate_limit.c.
 */
extern ngx_str_t  ngx_http_ig_limit_statuses[NGX_HTTP_IG_LIMIT_NSTATUSES];

#define NGX_HTTP_IG_BODY_NONE         0
#define NGX_HTTP_IG_BODY_READING      1
#define NGX_HTTP_IG_BODY_DONE         2      /* read, result not taken     */
#define NGX_HTTP_IG_BODY_CHECKED      3      /* result taken               */

#define NGX_HTTP_IG_BLOOM_HIT         1
#define NGX_HTTP_IG_BLOOM_MISS        2

#define NGX_HTTP_IG_PROBLEM_BASE      "https://infergate.dev/problems#"
#define NGX_HTTP_IG_QUOTA_EXCEEDED                                            \
    "https://iana.org/assignments/http-problem-types#quota-exceeded"


/* A tenant key as loaded from infergate_keys, in the cycle's pool. */
typedef struct {
    uint8_t                     digest[32];
    ngx_str_t                   tenant;
    ngx_uint_t                  nmodels;
    ngx_str_t                  *models;
    unsigned                    has_rate:1;
    unsigned                    has_burst:1;
    uint32_t                    quota;
    uint32_t                    window_s;
    uint32_t                    burst;
    ngx_uint_t                  metrics_slot; /* tenant label, per worker */
} ngx_http_ig_key_t;


typedef struct {
    ngx_http_ig_key_t          *slots;       /* open addressing, pow2      */
    ngx_uint_t                  mask;
    ngx_uint_t                  nkeys;
    ngx_str_t                   file;
    ig_sha256_t                *sha;         /* one per worker after fork  */
} ngx_http_ig_keys_t;


/* the auth module's main conf: the keys table (keys.c fills it) */
typedef struct {
    ngx_http_ig_keys_t         *keys;
} ngx_http_ig_auth_main_conf_t;


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 queue;
} ngx_http_ig_limit_shctx_t;


typedef struct {
    ngx_http_ig_limit_shctx_t  *sh;
    ngx_slab_pool_t            *shpool;
} ngx_http_ig_limit_zone_t;


typedef struct {
    ngx_shm_zone_t             *shm_zone;
    ngx_str_t                   name;
    ngx_http_complex_value_t   *key;         /* NULL: tenant or address    */
    uint32_t                    quota;
    uint32_t                    window_s;
    uint32_t                    burst;
    ngx_uint_t                  dry_run;
    struct ngx_http_ig_redis_s *redis;       /* cluster-wide: a server     */
    ngx_uint_t                  fail_closed;
    ngx_uint_t                  tenant_keyed; /* a key's rate= applies    */
} ngx_http_ig_limit_conf_t;


typedef struct ngx_http_ig_audit_log_s  ngx_http_ig_audit_log_t;


/* the audit module's location conf; the request id filter reads it */
typedef struct {
    ngx_http_ig_audit_log_t    *log;         /* infergate_audit, or NULL   */
} ngx_http_ig_audit_loc_conf_t;


typedef struct {
    ngx_http_complex_value_t   *model;
} ngx_http_ig_loc_conf_t;


typedef struct {
    ngx_http_ig_limit_conf_t   *conf;
    ig_gcra_policy_t            policy;
    ig_gcra_result_t            result;
    ngx_str_t                   key;         /* request memory             */
    ngx_uint_t                  charged;     /* counted for this request   */
} ngx_http_ig_limit_state_t;


typedef struct {
    ngx_str_t                   name;
    ngx_str_t                   value;
} ngx_http_ig_member_t;


/* Redis limits in flight: ngx_http_infergate_limit_redis.c */
typedef struct ngx_http_ig_limit_redis_s  ngx_http_ig_limit_redis_t;


#define NGX_HTTP_IG_AUTH_NONE         0      /* no key looked up yet       */
#define NGX_HTTP_IG_AUTH_OK           1
#define NGX_HTTP_IG_AUTH_MISSING      2
#define NGX_HTTP_IG_AUTH_INVALID      3


/*
 * Per-request state; survives internal redirects through a pool cleanup.
 * Every location a request reaches applies its own checks; what survives
 * a redirect are the results they can reuse: the key looked up (auth),
 * the limits charged (zone, key), the schema the body passed.  Fields
 * marked "per pass" are reset when a redirect is seen.
 */
typedef struct {
    ngx_http_ig_key_t          *key;
    ngx_str_t                   model;
    ngx_str_t                   action;      /* audit event.action         */
    ngx_str_t                   request_id;  /* X-Request-ID, event.id     */

    ngx_uint_t                  nlimits;
    ngx_http_ig_limit_state_t  *limits;
    ngx_uint_t                  limit_status;
    ngx_uint_t                  limit_headers;
    ngx_http_ig_limit_redis_t  *limit_redis; /* Redis limits in flight     */

    ig_validator_t             *validator;
    yajl_alloc_funcs            alloc;       /* yajl on the request pool   */
    ngx_pool_t                 *pool;
    ig_valid_rc_e               valid_rc;
    ngx_array_t                 members;     /* ngx_http_ig_member_t       */
    off_t                       body_bytes;
    ngx_str_t                  *json_vars;   /* infergate_json_var values  */
    ngx_uint_t                  inflate_status; /* 400, 413: body coding   */
    const char                 *inflate_error;

    ngx_uint_t                  batch_rows;  /* rows in the backend batch  */
    ngx_uint_t                  backend_us;  /* submit to completion       */

    ig_schema_t                *schema_ok;   /* the body passed this...    */
    ngx_uint_t                  schema_depth; /* ...at this max depth      */

    ngx_array_t                 charged;     /* states of earlier locations */

    unsigned                    auth:2;      /* NGX_HTTP_IG_AUTH_*         */
    unsigned                    stripped:1;  /* credentials removed        */
    unsigned                    auth_deferred:1; /* 401/403 to satisfy any */
    unsigned                    step:4;      /* per pass: the next stage    */
    unsigned                    limit_wait:1; /* Redis limits in flight    */
    unsigned                    body_state:2;
    unsigned                    body_finished:1;
    unsigned                    model_done:1;
    unsigned                    headers_done:1;
    unsigned                    bloom:2;     /* NGX_HTTP_IG_BLOOM_*        */
    unsigned                    bloom_added:1;
    unsigned                    backend_shed:1; /* 503: queue or max_inflight */
} ngx_http_ig_ctx_t;


extern ngx_module_t  ngx_http_infergate_module;
extern ngx_module_t  ngx_http_infergate_audit_module;


/*
 * A stage of admission after access (the precontent phase), exported by
 * its file and listed once in the core's stage table
 * (ngx_http_infergate_module.c).  "on" says whether the location uses the
 * stage: a location that uses none gets no request ctx.  "handler" runs
 * it: NGX_DECLINED passes to the next stage; anything else goes back to
 * the phase engine, and NGX_AGAIN or NGX_DONE re-enter the same stage
 * when the phase engine runs again.
 */

typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                (*on)(ngx_http_request_t *r,
                                    ngx_http_ig_loc_conf_t *lcf);
    ngx_int_t                 (*handler)(ngx_http_request_t *r,
                                         ngx_http_ig_ctx_t *ctx,
                                         ngx_http_ig_loc_conf_t *lcf);
} ngx_http_ig_stage_t;



ngx_http_ig_ctx_t *ngx_http_ig_get_ctx(ngx_http_request_t *r);
ngx_http_ig_ctx_t *ngx_http_ig_find_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_ig_read_conf_file(ngx_conf_t *cf, const char *directive,
    ngx_str_t *name, size_t max, ngx_str_t *out, ngx_file_info_t *fi);
ngx_int_t ngx_http_ig_add_header(ngx_http_request_t *r, const char *key,
    u_char *value, size_t len);

/* problem+json responses: each returns what the phase handler returns */
ngx_int_t ngx_http_ig_problem(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *title, ngx_str_t *detail,
    ngx_str_t *extra);
ngx_int_t ngx_http_ig_problem_cstr(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, const char *title, const char *detail);
u_char *ngx_http_ig_json_str(u_char *p, const u_char *s, size_t len);

/*
 * Request bytes for a log line: control bytes, quotes, backslashes and
 * non-ASCII as \xNN, at most NGX_HTTP_IG_LOG_MAX bytes ("..." when cut).
 * buf must hold NGX_HTTP_IG_LOG_MAX bytes; returns the escaped string.
 */
ngx_str_t ngx_http_ig_log_escape(u_char *buf, const u_char *s, size_t len);
size_t ngx_http_ig_json_str_len(const u_char *s, size_t len);

/* keys */
char *ngx_http_ig_keys_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_http_ig_key_t *ngx_http_ig_keys_find(ngx_http_ig_keys_t *keys,
    const u_char *key, size_t len);

/* auth */
ngx_int_t ngx_http_ig_model(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf);

/* limit */

/* cluster-wide limits (infergate_limit ... redis=NAME) */
ngx_int_t ngx_http_ig_limit_redis_add(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_uint_t index, ngx_str_t *key);
void ngx_http_ig_limit_redis_reset(ngx_http_ig_ctx_t *ctx);
ngx_int_t ngx_http_ig_limit_redis_send(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_uint_t dry);
ngx_int_t ngx_http_ig_limit_redis_finish(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);
struct ngx_http_ig_redis_s *ngx_http_ig_limit_redis_conf(ngx_conf_t *cf,
    ngx_str_t *name);
void ngx_http_ig_limit_redis_init(void);
ngx_int_t ngx_http_ig_limit_refuse(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, uint64_t retry_us);

/* audit */
ngx_int_t ngx_http_ig_request_id(ngx_http_request_t *r, ngx_str_t *id);

/* syslog delivery of audit records */
typedef struct ngx_http_ig_syslog_s  ngx_http_ig_syslog_t;

ngx_http_ig_syslog_t *ngx_http_ig_syslog_create(ngx_conf_t *cf,
    ngx_str_t *url);
ngx_int_t ngx_http_ig_syslog_init_process(ngx_http_ig_syslog_t *sl,
    ngx_cycle_t *cycle);
void ngx_http_ig_syslog_exit_process(ngx_http_ig_syslog_t *sl);
void ngx_http_ig_syslog_send(ngx_http_ig_syslog_t *sl, u_char *json,
    size_t len);

/* variables: a module's table, ngx_http_null_variable-terminated */
ngx_int_t ngx_http_ig_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);
ngx_int_t ngx_http_ig_core_variables(ngx_conf_t *cf);
void ngx_http_ig_set_value(ngx_http_variable_value_t *v, ngx_str_t *s);
ngx_int_t ngx_http_ig_check_var_case(ngx_conf_t *cf, ngx_str_t *value);
void ngx_http_ig_schema_note_key(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *var);

/* request bodies sent with Content-Encoding gzip or deflate */
ngx_int_t ngx_http_ig_inflate_check(ngx_http_request_t *r);
ngx_int_t ngx_http_ig_inflate_refuse(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx);

/* Triton's binary tensor extension: Inference-Header-Content-Length */
ngx_int_t ngx_http_ig_oip_header_len(ngx_http_request_t *r, off_t *n);

/* what a location does with request bodies (infergate_inflate's default) */
ngx_uint_t ngx_http_ig_infer_on(ngx_http_request_t *r);
ngx_uint_t ngx_http_ig_schema_reads_body(ngx_http_request_t *r);

/* the schema's validator takes the body, or a binary request's header */
void ngx_http_ig_schema_feed(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    u_char *p, size_t n, ngx_uint_t last);


#endif /* _NGX_HTTP_INFERGATE_H_INCLUDED_ */
