
/*
 * Copyright (C) infergate authors
 *
 * Redis connections for the response cache and cluster-wide limits:
 * nginx owns the socket (plain TCP, a unix socket, or TLS through nginx's
 * OpenSSL layer); hiredis only formats commands and parses replies.
 */


#ifndef _NGX_HTTP_INFERGATE_REDIS_H_INCLUDED_
#define _NGX_HTTP_INFERGATE_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>


#define NGX_HTTP_IG_REDIS_DOWN        0
#define NGX_HTTP_IG_REDIS_CONNECTING  1    /* TCP/TLS; AUTH/SELECT queued */
#define NGX_HTTP_IG_REDIS_AUTHING     2    /* connected, replies awaited  */
#define NGX_HTTP_IG_REDIS_READY       3


typedef struct ngx_http_ig_redis_s       ngx_http_ig_redis_t;
typedef struct ngx_http_ig_redis_conn_s  ngx_http_ig_redis_conn_t;
typedef struct ngx_http_ig_redis_cmd_s   ngx_http_ig_redis_cmd_t;
typedef struct ngx_http_ig_redis_node_s  ngx_http_ig_redis_node_t;

/*
 * reply is NULL on error, timeout or a lost connection; it is freed when
 * the handler returns.
 */
typedef void (*ngx_http_ig_redis_handler_pt)(redisReply *reply, void *data);


/* A Lua script: its text and its SHA1, for EVALSHA with EVAL fallback. */
typedef struct {
    const char                 *text;
    u_char                      sha1[41];
} ngx_http_ig_redis_script_t;


struct ngx_http_ig_redis_s {
    ngx_str_t                   name;
    ngx_str_t                   address;     /* as written, for logs       */
    ngx_str_t                   host;        /* IP literal, NUL-terminated */
    ngx_int_t                   port;        /* 0: unix socket in host     */
    ngx_addr_t                  addr;
    ngx_str_t                   user;
    ngx_str_t                   password;
    ngx_int_t                   db;
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  timeout;
    ngx_uint_t                  nconns;

#if (NGX_SSL)
    ngx_ssl_t                  *ssl;         /* NULL: cleartext            */
#endif
    ngx_str_t                   tls_name;    /* SNI and the name checked   */
    unsigned                    tls_verify:1;
    unsigned                    read_replica:1;  /* cluster: cache GETs  */

    /* sentinel=ADDRESS[,...] master=NAME: the primary is asked for */
    ngx_array_t                *sentinels;   /* ngx_addr_t                 */
    ngx_str_t                   master;

    /* cluster=ADDRESS[,...]: the slot map is asked of these, then any */
    ngx_array_t                *seeds;       /* ngx_addr_t                 */

    /* per worker */
    ngx_http_ig_redis_conn_t   *conns;
    ngx_uint_t                  next;
    time_t                      last_warn;

    ngx_http_ig_redis_conn_t   *sconn;       /* to the current sentinel   */
    ngx_http_ig_redis_conn_t   *subconn;     /* +switch-master subscriber */
    ngx_uint_t                  scur;
    ngx_event_t                 spoll;
    ngx_addr_t                  primary;
    struct sockaddr_storage     primary_sa;
    u_char                      primary_text[NGX_SOCKADDR_STRLEN];
    ngx_msec_t                  last_ask;
    unsigned                    resolved:1;  /* primary known, slots read */
    unsigned                    asking:1;
    unsigned                    want:1;
    unsigned                    connect_failed:1;  /* since the last up */

    /* cluster, per worker: the slot map's node indexes (0xff: none) */
    ngx_http_ig_redis_node_t   *nodes;
    ngx_uint_t                  nnodes;
    u_char                     *slots;
    u_char                     *rslots;      /* a replica per slot        */

    ngx_uint_t                  line;        /* first use, for errors      */
    u_char                     *file;
    unsigned                    defined:1;
};


typedef struct {
    ngx_array_t                 servers;     /* ngx_http_ig_redis_t *      */
} ngx_http_ig_redis_main_conf_t;


ngx_http_ig_redis_t *ngx_http_ig_redis_add(ngx_conf_t *cf, ngx_str_t *name);

/* 1 when a command issued now would be sent */
ngx_uint_t ngx_http_ig_redis_available(ngx_http_ig_redis_t *srv);

/*
 * Issues a command.  NULL: not sent, the handler is never called.
 * Otherwise the handler is called exactly once unless the command is
 * cancelled first.
 */
ngx_http_ig_redis_cmd_t *ngx_http_ig_redis_command(ngx_http_ig_redis_t *srv,
    int argc, const char **argv, const size_t *argvlen,
    ngx_http_ig_redis_handler_pt handler, void *data);

/* EVALSHA argv[...] (argv[0..2] are filled in), EVAL on NOSCRIPT */
ngx_http_ig_redis_cmd_t *ngx_http_ig_redis_eval(ngx_http_ig_redis_t *srv,
    ngx_http_ig_redis_script_t *script, int argc, const char **argv,
    size_t *argvlen, ngx_http_ig_redis_handler_pt handler, void *data);

/* writes buffered commands now rather than on the next loop iteration */
void ngx_http_ig_redis_flush(ngx_http_ig_redis_t *srv);

/* the handler will not be called; the reply, if any, is dropped */
void ngx_http_ig_redis_cancel(ngx_http_ig_redis_cmd_t *cmd);

void ngx_http_ig_redis_script_init(ngx_http_ig_redis_script_t *script,
    const char *text);

/* logs at most once a second per server */
void ngx_http_ig_redis_warn(ngx_http_ig_redis_t *srv, ngx_log_t *log,
    const char *what);


extern ngx_module_t  ngx_http_infergate_redis_module;


#endif /* _NGX_HTTP_INFERGATE_REDIS_H_INCLUDED_ */
