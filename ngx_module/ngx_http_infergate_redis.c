
/*
 * Copyright (C) infergate authors
 *
 * Redis connections.  Per worker and server a few persistent connections
 * carry pipelined commands.  nginx owns each socket: it is opened with
 * ngx_event_connect_peer(), wrapped in TLS by nginx's OpenSSL layer when
 * configured, and driven by the worker's (edge-triggered) events and
 * timers.  hiredis is used only as a RESP formatter
 * (redisFormatCommandArgv) and parser (redisReader).
 *
 * AUTH, SELECT and SCRIPT LOAD go first on every connection; a command
 * unanswered within the timeout drops its connection (replies are
 * ordered, so one late reply blocks all behind it) and every pending
 * command gets a NULL reply; reconnects back off from 100 ms to 5 s with
 * jitter.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <netinet/tcp.h>
#include <openssl/sha.h>
#if (NGX_SSL)
#include <openssl/x509v3.h>
#endif

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"
#include "ngx_http_infergate_metrics.h"


#define NGX_HTTP_IG_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_IG_REDIS_BACKOFF_MAX  5000
#define NGX_HTTP_IG_REDIS_READ_SIZE    16384
#define NGX_HTTP_IG_REDIS_SENTINEL_POLL  1000
#define NGX_HTTP_IG_REDIS_ASK_EVERY    100   /* ms, triggered re-asks    */
#define NGX_HTTP_IG_REDIS_MAX_NODES    64
#define NGX_HTTP_IG_REDIS_SLOTS        16384
#define NGX_HTTP_IG_REDIS_NO_NODE      0xff
#define NGX_HTTP_IG_REDIS_REDIRECTS    3


struct ngx_http_ig_redis_node_s {
    ngx_addr_t                  addr;
    struct sockaddr_storage     sa;
    u_char                      text[NGX_SOCKADDR_STRLEN];
    ngx_http_ig_redis_conn_t   *conns;       /* srv->nconns, on first use  */
    ngx_uint_t                  next;
    unsigned                    used:1;      /* in the last slot map      */
};


struct ngx_http_ig_redis_conn_s {
    ngx_http_ig_redis_t        *srv;
    ngx_addr_t                 *addr;        /* of this connection's peer */
    ngx_http_ig_redis_node_t   *node;        /* cluster: its node         */
    ngx_peer_connection_t       peer;
    ngx_connection_t           *c;
    redisReader                *reader;

    /* formatted commands not yet written: obuf[opos..olast) */
    u_char                     *obuf;
    size_t                      osize;
    size_t                      opos;
    size_t                      olast;

    ngx_uint_t                  state;
    ngx_uint_t                  gen;         /* bumped when c is closed    */
    ngx_msec_t                  backoff;
    ngx_event_t                 reconnect;   /* also the connect timeout   */
    ngx_event_t                 timer;       /* oldest command's deadline  */
    ngx_queue_t                 pending;
    ngx_log_t                  *log;
    ngx_log_t                   quiet;       /* for a retry's connect()   */
    unsigned                    counted:1;   /* in the connections gauge  */
    unsigned                    sentinel:1;  /* to a sentinel, not data   */
    unsigned                    subscriber:1;  /* to +switch-master      */
};


struct ngx_http_ig_redis_cmd_s {
    ngx_queue_t                 queue;
    ngx_http_ig_redis_conn_t   *conn;
    ngx_http_ig_redis_handler_pt  handler;
    void                       *data;
    ngx_msec_t                  deadline;
    const char                 *internal;    /* AUTH, SELECT, SCRIPT LOAD  */
    ngx_uint_t                  redirects;   /* MOVED and ASK followed    */

    /*
     * an EVALSHA keeps its arguments to be sent again as EVAL, a plain
     * command under cluster= to be sent again after MOVED or ASK
     */
    ngx_http_ig_redis_script_t *script;
    int                         argc;
    const char                **argv;
    size_t                     *argvlen;
};


static void ngx_http_ig_redis_connect(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_connect_done(ngx_http_ig_redis_conn_t *rc);
#if (NGX_SSL)
static void ngx_http_ig_redis_ssl_handshaked(ngx_connection_t *c);
#endif
static void ngx_http_ig_redis_established(ngx_http_ig_redis_conn_t *rc);
static ngx_int_t ngx_http_ig_redis_send_handshake(
    ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_handshake(ngx_http_ig_redis_conn_t *rc,
    const char *what, redisReply *reply);
static void ngx_http_ig_redis_close(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_fail_pending(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_lost(ngx_http_ig_redis_conn_t *rc,
    const char *why);
static void ngx_http_ig_redis_schedule(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_down(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_ig_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_ig_redis_reply(ngx_http_ig_redis_conn_t *rc,
    redisReply *reply);
static ngx_int_t ngx_http_ig_redis_append(ngx_http_ig_redis_conn_t *rc,
    int argc, const char **argv, const size_t *argvlen);
static ngx_int_t ngx_http_ig_redis_send(ngx_http_ig_redis_conn_t *rc,
    ngx_http_ig_redis_cmd_t *cmd, int argc, const char **argv,
    const size_t *argvlen);
static ngx_int_t ngx_http_ig_redis_write(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_read_handler(ngx_event_t *ev);
static void ngx_http_ig_redis_write_handler(ngx_event_t *ev);
static ngx_http_ig_redis_cmd_t *ngx_http_ig_redis_conn_command(
    ngx_http_ig_redis_conn_t *rc, int argc, const char **argv,
    const size_t *argvlen, ngx_http_ig_redis_handler_pt handler, void *data);
static void ngx_http_ig_redis_conn_init(ngx_http_ig_redis_t *srv,
    ngx_http_ig_redis_conn_t *rc, ngx_log_t *log);
static void ngx_http_ig_redis_sentinel_ask(ngx_http_ig_redis_t *srv);
static void ngx_http_ig_redis_sentinel_done(redisReply *reply, void *data);
static void ngx_http_ig_redis_sentinel_poll(ngx_event_t *ev);
static void ngx_http_ig_redis_switch_master(ngx_http_ig_redis_conn_t *rc,
    redisReply *reply);
static void ngx_http_ig_redis_restart(ngx_http_ig_redis_t *srv,
    const char *why);
static ngx_array_t *ngx_http_ig_redis_ctl_addrs(ngx_http_ig_redis_t *srv);
static void ngx_http_ig_redis_cluster_done(redisReply *reply, void *data);
static ngx_http_ig_redis_node_t *ngx_http_ig_redis_node(
    ngx_http_ig_redis_t *srv, const char *ip, size_t len, ngx_int_t port,
    ngx_http_ig_redis_conn_t *from);
static ngx_http_ig_redis_conn_t *ngx_http_ig_redis_node_conn(
    ngx_http_ig_redis_t *srv, ngx_http_ig_redis_node_t *node);
static ngx_http_ig_redis_conn_t *ngx_http_ig_redis_route(
    ngx_http_ig_redis_t *srv, const char *key, size_t len, ngx_uint_t read);
static ngx_int_t ngx_http_ig_redis_redirect(ngx_http_ig_redis_conn_t *rc,
    ngx_http_ig_redis_cmd_t *cmd, redisReply *reply);
static void *ngx_http_ig_redis_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ig_redis_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_ig_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_ig_redis_tls(ngx_conf_t *cf, ngx_http_ig_redis_t *srv,
    ngx_str_t *ca, ngx_str_t *cert, ngx_str_t *key);
static char *ngx_http_ig_redis_addr_list(ngx_conf_t *cf, ngx_str_t *v,
    size_t skip, ngx_array_t **list);
static ngx_int_t ngx_http_ig_redis_init_process(ngx_cycle_t *cycle);
static void ngx_http_ig_redis_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_ig_redis_commands[] = {

    { ngx_string("infergate_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_ig_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_redis_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_ig_redis_create_main_conf,    /* create main configuration */
    ngx_http_ig_redis_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_redis_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_redis_module_ctx,  /* module context */
    ngx_http_ig_redis_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_ig_redis_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_ig_redis_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* set in exit_process: NULL replies then reach no request */
static ngx_uint_t  ngx_http_ig_redis_exiting;

/* every script, loaded on each new connection so EVALSHA finds it */
#define NGX_HTTP_IG_REDIS_MAX_SCRIPTS  16
static ngx_http_ig_redis_script_t  *ngx_http_ig_redis_scripts[
                                       NGX_HTTP_IG_REDIS_MAX_SCRIPTS];
static ngx_uint_t                   ngx_http_ig_redis_nscripts;


/* configuration */

ngx_http_ig_redis_t *
ngx_http_ig_redis_add(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                      i;
    ngx_http_ig_redis_t            *srv, **srvp;
    ngx_http_ig_redis_main_conf_t  *rmcf;

    rmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_infergate_redis_module);

    srvp = rmcf->servers.elts;
    for (i = 0; i < rmcf->servers.nelts; i++) {
        if (srvp[i]->name.len == name->len
            && ngx_strncmp(srvp[i]->name.data, name->data, name->len) == 0)
        {
            return srvp[i];
        }
    }

    srv = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_redis_t));
    if (srv == NULL) {
        return NULL;
    }

    srvp = ngx_array_push(&rmcf->servers);
    if (srvp == NULL) {
        return NULL;
    }

    *srvp = srv;
    srv->name = *name;
    srv->file = cf->conf_file->file.name.data;
    srv->line = cf->conf_file->line;

    return srv;
}


static char *
ngx_http_ig_redis_password(ngx_conf_t *cf, ngx_http_ig_redis_t *srv,
    ngx_str_t *v)
{
    u_char     *p, *env;
    ngx_str_t   file, text;

    if (ngx_strncmp(v->data, "password_env=", 13) == 0) {
        env = (u_char *) getenv((char *) v->data + 13);
        if (env == NULL || *env == '\0') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_redis: environment variable "
                               "\"%s\" is not set", v->data + 13);
            return NGX_CONF_ERROR;
        }

        text.data = env;
        text.len = ngx_strlen(env);

    } else {
        file.data = v->data + 14;
        file.len = v->len - 14;

        if (ngx_http_ig_read_conf_file(cf, "infergate_redis", &file, 4096,
                                       &text, NULL)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* one line: trailing CR/LF and blanks are not part of the password */

    while (text.len && (text.data[text.len - 1] == '\n'
                        || text.data[text.len - 1] == '\r'
                        || text.data[text.len - 1] == ' '))
    {
        text.len--;
    }

    if (text.len == 0) {
        return "has an empty password";
    }

    p = ngx_pnalloc(cf->pool, text.len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, text.data, text.len);
    p[text.len] = '\0';

    srv->password.data = p;
    srv->password.len = text.len;

    return NGX_CONF_OK;
}


static char *
ngx_http_ig_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                 *rv;
    u_char               *p, *end, *last;
    ngx_int_t             n;
    ngx_str_t            *value, s, ca, cert, key;
    ngx_uint_t            i, tls, first;
    ngx_http_ig_redis_t  *srv;
#if (NGX_HAVE_UNIX_DOMAIN)
    struct sockaddr_un   *sun;
#endif

    value = cf->args->elts;

    srv = ngx_http_ig_redis_add(cf, &value[1]);
    if (srv == NULL) {
        return NGX_CONF_ERROR;
    }

    if (srv->defined) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_redis \"%V\" is duplicate", &value[1]);
        return NGX_CONF_ERROR;
    }

    srv->defined = 1;
    srv->address = value[2];
    srv->connect_timeout = 100;
    srv->timeout = 50;
    srv->nconns = 2;
    srv->tls_verify = 1;
    tls = 0;
    ngx_str_null(&ca);
    ngx_str_null(&cert);
    ngx_str_null(&key);

    /* no DNS in a worker: an IP literal and a port, or a unix socket */

    first = 3;

    if (ngx_strncmp(value[2].data, "sentinel=", 9) == 0
        || ngx_strncmp(value[2].data, "cluster=", 8) == 0)
    {
        /* the primary is asked of the sentinels, the slots of a node */
        first = 2;
        srv->port = 1;

    } else if (value[2].len > 5
               && ngx_strncmp(value[2].data, "unix:", 5) == 0)
    {
        srv->host.len = value[2].len - 5;
        srv->host.data = ngx_pnalloc(cf->pool, srv->host.len + 1);
        if (srv->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(srv->host.data, value[2].data + 5, srv->host.len + 1);

#if (NGX_HAVE_UNIX_DOMAIN)
        sun = ngx_pcalloc(cf->pool, sizeof(struct sockaddr_un));
        if (sun == NULL) {
            return NGX_CONF_ERROR;
        }

        if (srv->host.len + 1 > sizeof(sun->sun_path)) {
            goto bad_address;
        }

        sun->sun_family = AF_UNIX;
        ngx_memcpy(sun->sun_path, srv->host.data, srv->host.len);
        srv->addr.sockaddr = (struct sockaddr *) sun;
        srv->addr.socklen = sizeof(struct sockaddr_un);
        srv->addr.name = value[2];
#else
        goto bad_address;
#endif

    } else {
        last = value[2].data + value[2].len;

        if (value[2].data[0] == '[') {
            /* [v6]:port */
            end = ngx_strlchr(value[2].data, last, ']');
            if (end == NULL || end + 1 == last || end[1] != ':') {
                goto bad_address;
            }

            s.data = value[2].data + 1;
            s.len = end - s.data;
            p = end + 1;

        } else {
            p = ngx_strlchr(value[2].data, last, ':');
            if (p == NULL) {
                goto bad_address;
            }

            s.data = value[2].data;
            s.len = p - s.data;
        }

        n = ngx_atoi(p + 1, value[2].data + value[2].len - p - 1);
        if (n < 1 || n > 65535) {
            goto bad_address;
        }

        srv->port = n;
        srv->host.data = ngx_pnalloc(cf->pool, s.len + 1);
        if (srv->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(srv->host.data, s.data, s.len + 1);
        srv->host.len = s.len;

        if (ngx_parse_addr(cf->pool, &srv->addr, srv->host.data,
                           srv->host.len)
            != NGX_OK)
        {
            goto bad_address;
        }

        ngx_inet_set_port(srv->addr.sockaddr, (in_port_t) n);
        srv->addr.name = value[2];
    }

    for (i = first; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "sentinel=", 9) == 0
            && value[i].len > 9)
        {
            if (first != 2 || srv->sentinels || srv->seeds) {
                goto once;
            }

            rv = ngx_http_ig_redis_addr_list(cf, &value[i], 9,
                                             &srv->sentinels);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "cluster=", 8) == 0
            && value[i].len > 8)
        {
            if (first != 2 || srv->sentinels || srv->seeds) {
                goto once;
            }

            rv = ngx_http_ig_redis_addr_list(cf, &value[i], 8, &srv->seeds);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "master=", 7) == 0
            && value[i].len > 7)
        {
            srv->master.data = value[i].data + 7;
            srv->master.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "user=", 5) == 0
            && value[i].len > 5)
        {
            srv->user.data = value[i].data + 5;
            srv->user.len = value[i].len - 5;
            continue;
        }

        if ((ngx_strncmp(value[i].data, "password_file=", 14) == 0
             && value[i].len > 14)
            || (ngx_strncmp(value[i].data, "password_env=", 13) == 0
                && value[i].len > 13))
        {
            if (srv->password.len) {
                return "takes one of password_file= and password_env=";
            }

            rv = ngx_http_ig_redis_password(cf, srv, &value[i]);
            if (rv != NGX_CONF_OK) {
                return rv;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            srv->db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (srv->db == NGX_ERROR || srv->db > 65535) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            s.data = value[i].data + 16;
            s.len = value[i].len - 16;
            srv->connect_timeout = ngx_parse_time(&s, 0);
            if (srv->connect_timeout == (ngx_msec_t) NGX_ERROR
                || srv->connect_timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;
            srv->timeout = ngx_parse_time(&s, 0);
            if (srv->timeout == (ngx_msec_t) NGX_ERROR || srv->timeout == 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strcmp(value[i].data, "read_from=primary") == 0) {
            srv->read_replica = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "read_from=replica") == 0) {
            srv->read_replica = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "connections=", 12) == 0) {
            n = ngx_atoi(value[i].data + 12, value[i].len - 12);
            if (n < 1 || n > 64) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "infergate_redis: \"%V\": connections "
                                   "must be between 1 and 64", &value[i]);
                return NGX_CONF_ERROR;
            }

            srv->nconns = n;
            continue;
        }

        if (ngx_strcmp(value[i].data, "tls=on") == 0) {
            tls = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "tls=off") == 0) {
            tls = 0;
            continue;
        }

        if (ngx_strcmp(value[i].data, "tls_verify=on") == 0) {
            srv->tls_verify = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "tls_verify=off") == 0) {
            srv->tls_verify = 0;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tls_ca=", 7) == 0
            && value[i].len > 7)
        {
            ca.data = value[i].data + 7;
            ca.len = value[i].len - 7;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tls_cert=", 9) == 0
            && value[i].len > 9)
        {
            cert.data = value[i].data + 9;
            cert.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tls_key=", 8) == 0
            && value[i].len > 8)
        {
            key.data = value[i].data + 8;
            key.len = value[i].len - 8;
            continue;
        }

        if (ngx_strncmp(value[i].data, "tls_server_name=", 16) == 0
            && value[i].len > 16)
        {
            srv->tls_name.data = value[i].data + 16;
            srv->tls_name.len = value[i].len - 16;
            continue;
        }

        goto invalid;
    }

    if (srv->user.len && srv->password.len == 0) {
        return "has user= without password_file= or password_env=";
    }

    if ((srv->sentinels == NULL) != (srv->master.len == 0)) {
        return "takes sentinel= and master= together";
    }

    if (srv->seeds && srv->db) {
        return "has db= with cluster= (a cluster has only database 0)";
    }

    if (srv->read_replica && srv->seeds == NULL) {
        return "has read_from=replica without cluster=";
    }

    if (!tls) {
        if (ca.len || cert.len || key.len || srv->tls_name.len) {
            return "has tls_ca=, tls_cert=, tls_key= or tls_server_name= "
                   "without tls=on";
        }

        return NGX_CONF_OK;
    }

    return ngx_http_ig_redis_tls(cf, srv, &ca, &cert, &key);

once:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_redis: \"%V\": sentinel= or cluster= "
                       "replaces the address and is given once", &value[i]);
    return NGX_CONF_ERROR;

bad_address:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_redis: invalid address \"%V\" (an IP "
                       "literal with a port, or unix:/path; no host names)",
                       &value[2]);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "infergate_redis: invalid parameter \"%V\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


static void *
ngx_http_ig_redis_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_ig_redis_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_redis_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->servers, cf->pool, 2,
                       sizeof(ngx_http_ig_redis_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


/* sentinel=IP:PORT[,IP:PORT...], cluster=IP:PORT[,IP:PORT...] */

static char *
ngx_http_ig_redis_addr_list(ngx_conf_t *cf, ngx_str_t *v, size_t skip,
    ngx_array_t **list)
{
    u_char      *p, *last, *comma;
    ngx_addr_t  *addr;

    *list = ngx_array_create(cf->pool, 3, sizeof(ngx_addr_t));
    if (*list == NULL) {
        return NGX_CONF_ERROR;
    }

    p = v->data + skip;
    last = v->data + v->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        addr = ngx_array_push(*list);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        if (comma == p
            || ngx_parse_addr_port(cf->pool, addr, p, comma - p) != NGX_OK
            || ngx_inet_get_port(addr->sockaddr) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "infergate_redis: invalid %*s address "
                               "\"%*s\" (an IP literal with a port; no "
                               "host names)", skip - 1, v->data,
                               comma - p, p);
            return NGX_CONF_ERROR;
        }

        addr->name.data = p;
        addr->name.len = comma - p;

        p = comma + 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_ig_redis_tls(ngx_conf_t *cf, ngx_http_ig_redis_t *srv, ngx_str_t *ca,
    ngx_str_t *cert, ngx_str_t *key)
{
#if (NGX_SSL)
    ngx_pool_cleanup_t  *cln;

    if ((cert->len == 0) != (key->len == 0)) {
        return "takes tls_cert= and tls_key= together";
    }

    if (srv->tls_verify && srv->port == 0 && srv->tls_name.len == 0) {
        return "needs tls_server_name= (or tls_verify=off) to verify a "
               "unix socket's certificate";
    }

    srv->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (srv->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    srv->ssl->log = cf->log;

    if (ngx_ssl_create(srv->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(srv->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = srv->ssl;

    if (cert->len
        && ngx_ssl_certificate(cf, srv->ssl, cert, key, NULL) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (!srv->tls_verify) {
        return NGX_CONF_OK;
    }

    /* verification is checked after the handshake: see ssl_handshaked() */

    if (ca->len) {
        if (ngx_ssl_trusted_certificate(cf, srv->ssl, ca, 4) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

    } else {
        if (SSL_CTX_set_default_verify_paths(srv->ssl->ctx) != 1) {
            return "cannot load the system's CA certificates: give tls_ca=";
        }

        SSL_CTX_set_verify_depth(srv->ssl->ctx, 4);
    }

    return NGX_CONF_OK;

#else
    return "has tls=on, but nginx is built without SSL";
#endif
}


/* every server named by a redis=NAME is defined by an infergate_redis */

static char *
ngx_http_ig_redis_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_ig_redis_main_conf_t *rmcf = conf;

    ngx_uint_t            i;
    ngx_http_ig_redis_t **srvp;

    srvp = rmcf->servers.elts;

    for (i = 0; i < rmcf->servers.nelts; i++) {
        if (!srvp[i]->defined) {
            ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                          "redis server \"%V\" is used in %s:%ui but not "
                          "defined by \"infergate_redis\"",
                          &srvp[i]->name, srvp[i]->file, srvp[i]->line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


void
ngx_http_ig_redis_script_init(ngx_http_ig_redis_script_t *script,
    const char *text)
{
    u_char  md[SHA_DIGEST_LENGTH];

    ngx_uint_t  i;

    script->text = text;
    SHA1((const u_char *) text, ngx_strlen(text), md);
    ngx_hex_dump(script->sha1, md, SHA_DIGEST_LENGTH);
    script->sha1[40] = '\0';

    for (i = 0; i < ngx_http_ig_redis_nscripts; i++) {
        if (ngx_http_ig_redis_scripts[i] == script) {
            return;
        }
    }

    if (i < NGX_HTTP_IG_REDIS_MAX_SCRIPTS) {
        ngx_http_ig_redis_scripts[ngx_http_ig_redis_nscripts++] = script;
    }
}


/* worker start and exit */

static ngx_int_t
ngx_http_ig_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i, j;
    ngx_http_ig_redis_t           **srvp, *srv;
    ngx_http_ig_redis_conn_t       *rc;
    ngx_http_ig_redis_main_conf_t  *rmcf;

    ngx_http_ig_redis_exiting = 0;

    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module) == NULL) {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_infergate_redis_module);
    if (rmcf == NULL) {
        return NGX_OK;
    }

    srvp = rmcf->servers.elts;

    for (i = 0; i < rmcf->servers.nelts; i++) {
        srv = srvp[i];

        srv->conns = ngx_pcalloc(cycle->pool, srv->nconns
                                 * sizeof(ngx_http_ig_redis_conn_t));
        if (srv->conns == NULL) {
            return NGX_ERROR;
        }

        srv->resolved = 0;
        srv->asking = 0;
        srv->want = 0;

        if (srv->seeds) {
            /* cluster: connections belong to nodes, made on demand */
            srv->conns = NULL;

            srv->nodes = ngx_pcalloc(cycle->pool,
                                     NGX_HTTP_IG_REDIS_MAX_NODES
                                     * sizeof(ngx_http_ig_redis_node_t));
            srv->slots = ngx_alloc(2 * NGX_HTTP_IG_REDIS_SLOTS, cycle->log);
            if (srv->nodes == NULL || srv->slots == NULL) {
                return NGX_ERROR;
            }

            srv->rslots = srv->slots + NGX_HTTP_IG_REDIS_SLOTS;
            ngx_memset(srv->slots, NGX_HTTP_IG_REDIS_NO_NODE,
                       2 * NGX_HTTP_IG_REDIS_SLOTS);
            srv->nnodes = 0;
        }

        if (srv->sentinels || srv->seeds) {
            srv->sconn = ngx_pcalloc(cycle->pool,
                                     sizeof(ngx_http_ig_redis_conn_t));
            srv->scur = 0;
            if (srv->sconn == NULL) {
                return NGX_ERROR;
            }

            srv->sconn->sentinel = 1;
            ngx_http_ig_redis_conn_init(srv, srv->sconn, cycle->log);

            srv->primary.sockaddr = (struct sockaddr *) &srv->primary_sa;
            srv->primary.name.data = srv->primary_text;

            srv->spoll.handler = ngx_http_ig_redis_sentinel_poll;
            srv->spoll.data = srv;
            srv->spoll.log = cycle->log;
            srv->spoll.cancelable = 1;
            ngx_add_timer(&srv->spoll, NGX_HTTP_IG_REDIS_SENTINEL_POLL);

            /* asks for the primary or the slots once connected */
            srv->want = 1;
            ngx_http_ig_redis_connect(srv->sconn);
        }

        if (srv->sentinels) {
            /* a speed-up only: messages can be missed, the poll stays */
            srv->subconn = ngx_pcalloc(cycle->pool,
                                       sizeof(ngx_http_ig_redis_conn_t));
            if (srv->subconn == NULL) {
                return NGX_ERROR;
            }

            srv->subconn->sentinel = 1;
            srv->subconn->subscriber = 1;
            ngx_http_ig_redis_conn_init(srv, srv->subconn, cycle->log);
            ngx_http_ig_redis_connect(srv->subconn);
        }

        if (srv->seeds) {
            continue;
        }

        for (j = 0; j < srv->nconns; j++) {
            rc = &srv->conns[j];
            ngx_http_ig_redis_conn_init(srv, rc, cycle->log);
            ngx_http_ig_redis_connect(rc);
        }
    }

    return NGX_OK;
}


static void
ngx_http_ig_redis_conn_init(ngx_http_ig_redis_t *srv,
    ngx_http_ig_redis_conn_t *rc, ngx_log_t *log)
{
    rc->srv = srv;
    rc->addr = &srv->addr;
    rc->log = log;
    rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MIN;
    ngx_queue_init(&rc->pending);

    rc->reconnect.handler = ngx_http_ig_redis_reconnect_handler;
    rc->reconnect.data = rc;
    rc->reconnect.log = log;
    rc->reconnect.cancelable = 1;

    /*
     * Not cancelable: a request waiting on a reply has no timer of its
     * own, and a graceful quit must not exit under it.  Armed only while
     * commands are pending, it holds a quit up for at most the command
     * timeout.
     */
    rc->timer.handler = ngx_http_ig_redis_timer_handler;
    rc->timer.data = rc;
    rc->timer.log = log;
}


static void
ngx_http_ig_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i, j;
    ngx_http_ig_redis_t           **srvp, *srv;
    ngx_http_ig_redis_conn_t       *rc;
    ngx_http_ig_redis_main_conf_t  *rmcf;

    ngx_http_ig_redis_exiting = 1;

    if (ngx_get_conf(cycle->conf_ctx, ngx_http_module) == NULL) {
        return;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_infergate_redis_module);
    if (rmcf == NULL) {
        return;
    }

    srvp = rmcf->servers.elts;

    for (i = 0; i < rmcf->servers.nelts; i++) {
        srv = srvp[i];

        if (srv->spoll.timer_set) {
            ngx_del_timer(&srv->spoll);
        }

        for (j = 0; j < srv->nconns + 2; j++) {
            if (j < srv->nconns) {
                rc = srv->conns ? &srv->conns[j] : NULL;

            } else {
                rc = (j == srv->nconns) ? srv->sconn : srv->subconn;
            }

            if (rc == NULL) {
                continue;
            }

            if (rc->reconnect.timer_set) {
                ngx_del_timer(&rc->reconnect);
            }

            ngx_http_ig_redis_close(rc);
            ngx_http_ig_redis_fail_pending(rc);

            if (rc->obuf) {
                ngx_free(rc->obuf);
                rc->obuf = NULL;
                rc->osize = 0;
            }
        }

        for (j = 0; srv->nodes && j < srv->nnodes * srv->nconns; j++) {
            rc = srv->nodes[j / srv->nconns].conns;
            if (rc == NULL) {
                continue;
            }

            rc += j % srv->nconns;

            if (rc->reconnect.timer_set) {
                ngx_del_timer(&rc->reconnect);
            }

            ngx_http_ig_redis_close(rc);
            ngx_http_ig_redis_fail_pending(rc);

            if (rc->obuf) {
                ngx_free(rc->obuf);
                rc->obuf = NULL;
                rc->osize = 0;
            }
        }

        if (srv->slots) {
            ngx_free(srv->slots);
            srv->slots = NULL;
            srv->rslots = NULL;
        }
    }
}


/* connecting */

static void
ngx_http_ig_redis_connect(ngx_http_ig_redis_conn_t *rc)
{
    int                   nodelay;
    ngx_err_t             err;
    ngx_int_t             rv;
    ngx_connection_t     *c;
    ngx_http_ig_redis_t  *srv = rc->srv;

    if (rc->sentinel) {
        rc->addr = (ngx_addr_t *) ngx_http_ig_redis_ctl_addrs(srv)->elts
                   + srv->scur;

    } else if (rc->node) {
        rc->addr = &rc->node->addr;

    } else if (srv->sentinels) {
        if (!srv->resolved) {
            /* connected once the sentinels name the primary */
            ngx_http_ig_redis_sentinel_ask(srv);
            return;
        }

        rc->addr = &srv->primary;
    }

    rc->reader = redisReaderCreate();
    if (rc->reader == NULL) {
        ngx_http_ig_redis_warn(srv, rc->log, "cannot allocate a reader");
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    ngx_memzero(&rc->peer, sizeof(ngx_peer_connection_t));
    rc->peer.sockaddr = rc->addr->sockaddr;
    rc->peer.socklen = rc->addr->socklen;
    rc->peer.name = &rc->addr->name;
    rc->peer.get = ngx_event_get_peer;
    rc->peer.log = rc->log;
    rc->peer.log_error = NGX_ERROR_ERR;

    if (srv->connect_failed) {
        /*
         * A retry of the same outage: nginx logs an immediate connect()
         * failure at error (crit for a unix socket gone) on the peer's
         * log, whatever log_error says; that log is muted below alert,
         * and the failure logged at info here instead.  The first
         * failure after a connection keeps nginx's line.
         */
        rc->quiet = *rc->log;
        rc->quiet.log_level = NGX_LOG_ALERT;
        rc->peer.log = &rc->quiet;
        rc->peer.log_error = NGX_ERROR_INFO;
    }

    ngx_set_socket_errno(0);

    rv = ngx_event_connect_peer(&rc->peer);

    if (rv == NGX_ERROR || rv == NGX_BUSY || rv == NGX_DECLINED) {
        err = ngx_socket_errno;

        if (rc->peer.connection) {
            ngx_close_connection(rc->peer.connection);
        }

        if (rc->peer.log == &rc->quiet) {
            ngx_log_error(NGX_LOG_INFO, rc->log, err,
                          "infergate_redis \"%V\": connect() to %V "
                          "failed, again in about %M ms", &srv->name,
                          rc->peer.name, rc->backoff);
        }

        srv->connect_failed = 1;
        redisReaderFree(rc->reader);
        rc->reader = NULL;
        ngx_http_ig_redis_warn(srv, rc->log, "cannot connect");

        if (rc->sentinel && !rc->subscriber) {
            srv->scur = (srv->scur + 1)
                        % ngx_http_ig_redis_ctl_addrs(srv)->nelts;
        }

        ngx_http_ig_redis_schedule(rc);
        return;
    }

    c = rc->peer.connection;

    c->pool = ngx_create_pool(1024, rc->log);
    if (c->pool == NULL) {
        ngx_close_connection(c);
        redisReaderFree(rc->reader);
        rc->reader = NULL;
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    c->data = rc;
    c->read->handler = ngx_http_ig_redis_read_handler;
    c->write->handler = ngx_http_ig_redis_write_handler;
    c->log = rc->log;
    c->read->log = rc->log;
    c->write->log = rc->log;
    c->log_error = NGX_ERROR_ERR;

    if (rc->addr->sockaddr->sa_family != AF_UNIX) {
        /* pipelined small writes must not wait for delayed ACKs */
        nodelay = 1;
        (void) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY,
                          (const void *) &nodelay, sizeof(int));
    }

    rc->c = c;
    rc->state = NGX_HTTP_IG_REDIS_CONNECTING;
    rc->opos = 0;
    rc->olast = 0;

    if (ngx_http_ig_redis_send_handshake(rc) != NGX_OK) {
        ngx_http_ig_redis_lost(rc, "cannot queue the handshake");
        return;
    }

    /* the connect timeout, TLS handshake included */
    ngx_add_timer(&rc->reconnect, srv->connect_timeout);

    if (rv == NGX_OK) {
        ngx_http_ig_redis_connect_done(rc);
    }
}


static void
ngx_http_ig_redis_connect_done(ngx_http_ig_redis_conn_t *rc)
{
    int                err;
    socklen_t          len;
    ngx_connection_t  *c = rc->c;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        rc->srv->connect_failed = 1;
        ngx_http_ig_redis_lost(rc, strerror(err));
        return;
    }

#if (NGX_SSL)

    if (rc->srv->ssl) {
        if (ngx_ssl_create_connection(rc->srv->ssl, c, NGX_SSL_CLIENT)
            != NGX_OK)
        {
            ngx_http_ig_redis_lost(rc, "cannot create a TLS connection");
            return;
        }

        if (rc->srv->tls_name.len
            && SSL_set_tlsext_host_name(c->ssl->connection,
                                        (char *) rc->srv->tls_name.data)
               != 1)
        {
            ngx_http_ig_redis_lost(rc, "cannot set the TLS server name");
            return;
        }

        if (ngx_ssl_handshake(c) == NGX_AGAIN) {
            c->ssl->handler = ngx_http_ig_redis_ssl_handshaked;
            return;
        }

        ngx_http_ig_redis_ssl_handshaked(c);
        return;
    }

#endif

    ngx_http_ig_redis_established(rc);
}


#if (NGX_SSL)

static void
ngx_http_ig_redis_ssl_handshaked(ngx_connection_t *c)
{
    int                        ok;
    long                       vr;
    size_t                     len;
    X509                      *cert;
    u_char                     ip[NGX_SOCKADDR_STRLEN + 1];
    ngx_http_ig_redis_t       *srv;
    ngx_http_ig_redis_conn_t  *rc = c->data;

    srv = rc->srv;

    if (!c->ssl->handshaked) {
        ngx_http_ig_redis_lost(rc, "TLS handshake failed");
        return;
    }

    if (srv->tls_verify) {
        vr = SSL_get_verify_result(c->ssl->connection);

        if (vr != X509_V_OK) {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                          "infergate_redis \"%V\" (%V): TLS certificate "
                          "verify error: (%l:%s)", &srv->name,
                          &rc->addr->name, vr,
                          X509_verify_cert_error_string(vr));
            ngx_http_ig_redis_lost(rc, "TLS certificate not trusted");
            return;
        }

        cert = SSL_get_peer_certificate(c->ssl->connection);
        if (cert == NULL) {
            ngx_http_ig_redis_lost(rc, "no TLS certificate from the server");
            return;
        }

        if (srv->tls_name.len) {
            ok = X509_check_host(cert, (char *) srv->tls_name.data,
                                 srv->tls_name.len, 0, NULL);

        } else {
            len = ngx_sock_ntop(rc->addr->sockaddr, rc->addr->socklen, ip,
                                NGX_SOCKADDR_STRLEN, 0);
            ip[len] = '\0';
            ok = X509_check_ip_asc(cert, (char *) ip, 0);
        }

        X509_free(cert);

        if (ok != 1) {
            ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                          "infergate_redis \"%V\" (%V): TLS certificate "
                          "does not match \"%s\"", &srv->name,
                          &rc->addr->name, srv->tls_name.len
                          ? srv->tls_name.data : ip);
            ngx_http_ig_redis_lost(rc, "TLS certificate name mismatch");
            return;
        }
    }

    c->read->handler = ngx_http_ig_redis_read_handler;
    c->write->handler = ngx_http_ig_redis_write_handler;

    ngx_http_ig_redis_established(rc);
}

#endif


static void
ngx_http_ig_redis_established(ngx_http_ig_redis_conn_t *rc)
{
    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    rc->state = NGX_HTTP_IG_REDIS_AUTHING;
    rc->srv->connect_failed = 0;

    if (ngx_http_ig_redis_write(rc) != NGX_OK) {
        ngx_http_ig_redis_lost(rc, "write failed");
        return;
    }

    /* a reply may already be in (TLS reads ahead) */
    if (rc->c->read->ready) {
        ngx_post_event(rc->c->read, &ngx_posted_events);
    }
}


/*
 * AUTH and SELECT are queued at once, before the connect completes, so
 * that commands issued meanwhile follow them in the same pipeline (a
 * worker's first requests need not bypass the cache).
 */

static ngx_int_t
ngx_http_ig_redis_internal(ngx_http_ig_redis_conn_t *rc, const char *what,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_http_ig_redis_cmd_t  *cmd;

    cmd = ngx_calloc(sizeof(ngx_http_ig_redis_cmd_t), rc->log);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->internal = what;

    if (ngx_http_ig_redis_send(rc, cmd, argc, argv, argvlen) != NGX_OK) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    /* the handshake has the connect timeout on top of the command's */
    cmd->deadline += rc->srv->connect_timeout;

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_redis_send_handshake(ngx_http_ig_redis_conn_t *rc)
{
    int                   argc;
    ngx_uint_t            i;
    const char           *argv[3];
    size_t                argvlen[3];
    u_char                db[NGX_INT_T_LEN];
    ngx_http_ig_redis_t  *srv = rc->srv;

    if (srv->password.len && (!rc->sentinel || srv->seeds)) {
        argc = 0;
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;

        if (srv->user.len) {
            argv[argc] = (char *) srv->user.data;
            argvlen[argc++] = srv->user.len;
        }

        argv[argc] = (char *) srv->password.data;
        argvlen[argc++] = srv->password.len;

        if (ngx_http_ig_redis_internal(rc, "AUTH", argc, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (srv->sentinels && !rc->sentinel) {
        /* the sentinels may be behind: this must be the primary */
        argv[0] = "ROLE";
        argvlen[0] = 4;

        if (ngx_http_ig_redis_internal(rc, "ROLE", 1, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (rc->sentinel || srv->seeds) {
        /* a sentinel, or a cluster (database 0 only) */
        argv[0] = "PING";
        argvlen[0] = 4;

        if (ngx_http_ig_redis_internal(rc, "PING", 1, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (rc->subscriber) {
            argv[0] = "SUBSCRIBE";
            argvlen[0] = 9;
            argv[1] = "+switch-master";
            argvlen[1] = sizeof("+switch-master") - 1;

            return ngx_http_ig_redis_internal(rc, "SUBSCRIBE", 2, argv,
                                              argvlen);
        }

        if (rc->sentinel) {
            return NGX_OK;
        }

        if (srv->read_replica) {
            /* reads on a replica; no effect on a primary */
            argv[0] = "READONLY";
            argvlen[0] = 8;

            if (ngx_http_ig_redis_internal(rc, "READONLY", 1, argv, argvlen)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

    } else {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (char *) db;
        argvlen[1] = ngx_sprintf(db, "%i", srv->db) - db;

        if (ngx_http_ig_redis_internal(rc, "SELECT", 2, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /*
     * The scripts, so that the first EVALSHA of each does not cost a
     * NOSCRIPT round trip (a purge delayed by one would let a read that
     * follows the write see the old entry).  A failure here only means
     * the EVAL fallback runs.
     */

    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;

    for (i = 0; i < ngx_http_ig_redis_nscripts; i++) {
        argv[2] = ngx_http_ig_redis_scripts[i]->text;
        argvlen[2] = ngx_strlen(argv[2]);

        if (ngx_http_ig_redis_internal(rc, "SCRIPT LOAD", 3, argv, argvlen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_ig_redis_handshake(ngx_http_ig_redis_conn_t *rc, const char *what,
    redisReply *reply)
{
    if (ngx_strcmp(what, "ASKING") == 0
        || ngx_strcmp(what, "READONLY") == 0
        || ngx_strcmp(what, "SUBSCRIBE") == 0)
    {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && ngx_strcmp(what, "SCRIPT LOAD") == 0)
    {
        ngx_http_ig_redis_warn(rc->srv, rc->log, reply->str);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "infergate_redis \"%V\": %s failed: %s",
                      &rc->srv->name, what, reply->str);

        ngx_http_ig_redis_lost(rc, "handshake failed");
        return;
    }

    if (ngx_strcmp(what, "ROLE") == 0) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
            && reply->element[0]->type == REDIS_REPLY_STRING
            && ngx_strcmp(reply->element[0]->str, "master") == 0)
        {
            return;
        }

        ngx_log_error(NGX_LOG_WARN, rc->log, 0,
                      "infergate_redis \"%V\": %V is not the primary of "
                      "\"%V\"", &rc->srv->name, &rc->addr->name,
                      &rc->srv->master);

        rc->srv->resolved = 0;
        ngx_http_ig_redis_lost(rc, "not the primary");
        return;
    }

    if (ngx_strcmp(what, "SELECT") == 0 || ngx_strcmp(what, "PING") == 0) {
        rc->state = NGX_HTTP_IG_REDIS_READY;

        if (rc->sentinel) {
            rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MIN;

            if (rc->srv->want && !rc->subscriber) {
                ngx_http_ig_redis_sentinel_ask(rc->srv);
            }

            return;
        }


        if (!rc->counted) {
            rc->counted = 1;
            ngx_http_ig_metrics_gauge_add(IG_MG_REDIS_CONNECTED, 1);
        }

        rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MIN;

        ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                      "infergate_redis \"%V\": connected to %V%s",
                      &rc->srv->name, &rc->addr->name,
                      rc->c && rc->c->ssl ? " over TLS" : "");
    }
}


/* closes the socket; the pending commands stay queued */

static void
ngx_http_ig_redis_close(ngx_http_ig_redis_conn_t *rc)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    ngx_http_ig_redis_down(rc);

    if (rc->reader) {
        redisReaderFree(rc->reader);
        rc->reader = NULL;
    }

    rc->opos = 0;
    rc->olast = 0;

    if (rc->timer.timer_set) {
        ngx_del_timer(&rc->timer);
    }

    c = rc->c;
    if (c == NULL) {
        return;
    }

    rc->c = NULL;
    rc->gen++;

    if (rc->reconnect.timer_set) {
        /* the connect timeout */
        ngx_del_timer(&rc->reconnect);
    }

#if (NGX_SSL)
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
#endif

    pool = c->pool;
    ngx_close_connection(c);

    if (pool) {
        ngx_destroy_pool(pool);
    }
}


/* every pending command gets a NULL reply (none while exiting) */

static void
ngx_http_ig_redis_fail_pending(ngx_http_ig_redis_conn_t *rc)
{
    void                      *data;
    ngx_queue_t                pending, *q;
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_handler_pt  handler;

    if (ngx_queue_empty(&rc->pending)) {
        return;
    }

    /* handlers may issue commands: they must not land on this list */

    pending = rc->pending;
    pending.next->prev = &pending;
    pending.prev->next = &pending;
    ngx_queue_init(&rc->pending);

    while (!ngx_queue_empty(&pending)) {
        q = ngx_queue_head(&pending);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_http_ig_redis_cmd_t, queue);

        handler = cmd->internal ? NULL : cmd->handler;
        data = cmd->data;

        if (!cmd->internal) {
            ngx_http_ig_metrics_add(IG_MC_REDIS_ERROR, 1);
        }

        ngx_free(cmd);

        if (handler && !ngx_http_ig_redis_exiting) {
            handler(NULL, data);
        }
    }
}


static void
ngx_http_ig_redis_lost(ngx_http_ig_redis_conn_t *rc, const char *why)
{
    u_char                buf[NGX_SOCKADDR_STRLEN + 128];
    ngx_http_ig_redis_t  *srv = rc->srv;

    if (rc->addr && rc->addr != &srv->addr) {
        /* a sentinel, a node, the primary named: which one */
        *ngx_snprintf(buf, sizeof(buf) - 1, "%V: %s", &rc->addr->name,
                      why) = '\0';
        why = (const char *) buf;
    }

    ngx_http_ig_redis_warn(srv, rc->log, why);

    ngx_http_ig_redis_close(rc);

    if (rc->sentinel && !rc->subscriber) {
        /* the next sentinel or seed; a query in flight gets NULL below */
        srv->scur = (srv->scur + 1) % ngx_http_ig_redis_ctl_addrs(srv)->nelts;
    }

    ngx_http_ig_redis_fail_pending(rc);
    ngx_http_ig_redis_schedule(rc);

    if ((srv->sentinels || srv->seeds) && !rc->sentinel) {
        /* a failover closes connections: ask again at once */
        ngx_http_ig_redis_sentinel_ask(srv);
    }
}


/* every way down leaves the connections gauge right */

static void
ngx_http_ig_redis_down(ngx_http_ig_redis_conn_t *rc)
{
    rc->state = NGX_HTTP_IG_REDIS_DOWN;

    if (rc->counted) {
        rc->counted = 0;
        ngx_http_ig_metrics_gauge_add(IG_MG_REDIS_CONNECTED, -1);
    }
}


static void
ngx_http_ig_redis_schedule(ngx_http_ig_redis_conn_t *rc)
{
    ngx_msec_t  delay;

    if (ngx_http_ig_redis_exiting || ngx_exiting || ngx_quit || ngx_terminate
        || rc->c || rc->reconnect.timer_set)
    {
        return;
    }

    /* jitter: between three quarters and all of the current backoff */

    delay = rc->backoff - (ngx_msec_t) ngx_random() % (rc->backoff / 4 + 1);

    ngx_http_ig_metrics_add(IG_MC_REDIS_RECONNECT, 1);

    rc->backoff *= 2;
    if (rc->backoff > NGX_HTTP_IG_REDIS_BACKOFF_MAX) {
        rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MAX;
    }

    ngx_add_timer(&rc->reconnect, delay);
}


static void
ngx_http_ig_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_ig_redis_conn_t  *rc = ev->data;

    if (ngx_http_ig_redis_exiting || ngx_exiting || ngx_quit) {
        return;
    }

    if (rc->c) {
        /* the connect timeout */
        if (rc->state == NGX_HTTP_IG_REDIS_CONNECTING) {
            rc->srv->connect_failed = 1;
            ngx_http_ig_redis_lost(rc, "connect timed out");
        }

        return;
    }

    if (rc->node && !rc->node->used) {
        /* out of the slot map: connected again only on demand */
        return;
    }

    ngx_http_ig_redis_connect(rc);
}


/* sentinel: which node is the primary */

static void
ngx_http_ig_redis_sentinel_ask(ngx_http_ig_redis_t *srv)
{
    const char                *argv[3];
    size_t                     argvlen[3];
    ngx_http_ig_redis_conn_t  *sc = srv->sconn;

    if (sc == NULL || srv->asking || ngx_http_ig_redis_exiting) {
        return;
    }

    if (sc->state != NGX_HTTP_IG_REDIS_READY) {
        /* asked once the sentinel connection is up */
        srv->want = 1;
        return;
    }

    /*
     * At most one question every 100 ms, unless the last one failed: a
     * lagging sentinel that names a replica (refused by ROLE) must not
     * make a loop of connects; the one-second poll asks again anyway.
     */
    if (!srv->want
        && ngx_current_msec - srv->last_ask < NGX_HTTP_IG_REDIS_ASK_EVERY)
    {
        return;
    }

    srv->last_ask = ngx_current_msec;

    if (srv->seeds) {
        argv[0] = "CLUSTER";
        argvlen[0] = 7;
        argv[1] = "SLOTS";
        argvlen[1] = 5;

        if (ngx_http_ig_redis_conn_command(sc, 2, argv, argvlen,
                                           ngx_http_ig_redis_cluster_done,
                                           srv)
            == NULL)
        {
            srv->want = 1;
            return;
        }

        srv->want = 0;
        srv->asking = 1;
        return;
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = sizeof("get-master-addr-by-name") - 1;
    argv[2] = (char *) srv->master.data;
    argvlen[2] = srv->master.len;

    if (ngx_http_ig_redis_conn_command(sc, 3, argv, argvlen,
                                       ngx_http_ig_redis_sentinel_done, srv)
        == NULL)
    {
        srv->want = 1;
        return;
    }

    srv->want = 0;
    srv->asking = 1;
}


static void
ngx_http_ig_redis_sentinel_done(redisReply *reply, void *data)
{
    ngx_http_ig_redis_t *srv = data;

    ngx_int_t             port;
    socklen_t             len;
    struct sockaddr      *sa;
    struct sockaddr_in   *sin;
    struct sockaddr_in6  *sin6;
    struct sockaddr_storage  ss;

    srv->asking = 0;

    if (reply == NULL) {
        /* the sentinel connection was lost: the next one is asked */
        srv->want = 1;
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        srv->want = 1;
        ngx_http_ig_redis_lost(srv->sconn, "the sentinel does not know "
                               "the master");
        return;
    }

    port = ngx_atoi((u_char *) reply->element[1]->str,
                    reply->element[1]->len);

    ngx_memzero(&ss, sizeof(ss));
    sa = (struct sockaddr *) &ss;
    sin = (struct sockaddr_in *) &ss;
    sin6 = (struct sockaddr_in6 *) &ss;

    if (port > 0 && port < 65536
        && inet_pton(AF_INET, reply->element[0]->str, &sin->sin_addr) == 1)
    {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((in_port_t) port);
        len = sizeof(struct sockaddr_in);

    } else if (port > 0 && port < 65536
               && inet_pton(AF_INET6, reply->element[0]->str,
                            &sin6->sin6_addr) == 1)
    {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((in_port_t) port);
        len = sizeof(struct sockaddr_in6);

    } else {
        ngx_http_ig_redis_warn(srv, srv->sconn->log, "the sentinel named "
                               "a primary that is not an IP and a port");
        return;
    }

    if (srv->resolved
        && ngx_cmp_sockaddr(sa, len, srv->primary.sockaddr,
                            srv->primary.socklen, 1)
           == NGX_OK)
    {
        if (srv->want) {
            /* a +switch-master came while this question was out */
            ngx_http_ig_redis_sentinel_ask(srv);
        }

        return;
    }

    ngx_memcpy(&srv->primary_sa, &ss, len);
    srv->primary.socklen = len;
    srv->primary.name.len = ngx_sock_ntop(srv->primary.sockaddr, len,
                                          srv->primary_text,
                                          NGX_SOCKADDR_STRLEN, 1);

    ngx_log_error(NGX_LOG_NOTICE, srv->sconn->log, 0,
                  "infergate_redis \"%V\": the primary of \"%V\" is %V",
                  &srv->name, &srv->master, &srv->primary.name);

    srv->resolved = 1;
    ngx_http_ig_redis_restart(srv, "the primary moved");
}


/* every data connection goes to the primary just named */

static void
ngx_http_ig_redis_restart(ngx_http_ig_redis_t *srv, const char *why)
{
    ngx_uint_t                 i;
    ngx_http_ig_redis_conn_t  *rc;

    for (i = 0; srv->conns && i < srv->nconns; i++) {
        rc = &srv->conns[i];

        if (rc->c) {
            ngx_http_ig_redis_warn(srv, rc->log, why);
            ngx_http_ig_redis_close(rc);
            ngx_http_ig_redis_fail_pending(rc);
        }

        if (rc->c == NULL && srv->resolved) {
            if (rc->reconnect.timer_set) {
                ngx_del_timer(&rc->reconnect);
            }

            rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MIN;
            ngx_http_ig_redis_connect(rc);
        }
    }
}


/* ["message", "+switch-master", "M old-ip old-port new-ip new-port"] */

static void
ngx_http_ig_redis_switch_master(ngx_http_ig_redis_conn_t *rc,
    redisReply *reply)
{
    redisReply           *p;
    ngx_http_ig_redis_t  *srv = rc->srv;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || ngx_strcmp(reply->element[0]->str, "message") != 0
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    p = reply->element[2];

    if (p->len <= srv->master.len || p->str[srv->master.len] != ' '
        || ngx_strncmp(p->str, srv->master.data, srv->master.len) != 0)
    {
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, rc->log, 0,
                  "infergate_redis \"%V\": sentinel %V: +switch-master %s",
                  &srv->name, &rc->addr->name, p->str);

    /* the sentinels are asked, at once: one source of truth */
    srv->want = 1;
    ngx_http_ig_redis_sentinel_ask(srv);
}


static void
ngx_http_ig_redis_sentinel_poll(ngx_event_t *ev)
{
    ngx_http_ig_redis_t  *srv = ev->data;

    if (ngx_http_ig_redis_exiting || ngx_exiting || ngx_quit) {
        return;
    }

    ngx_http_ig_redis_sentinel_ask(srv);
    ngx_add_timer(ev, NGX_HTTP_IG_REDIS_SENTINEL_POLL);
}


/* cluster: the slot map, nodes, routing and redirects */

static ngx_array_t *
ngx_http_ig_redis_ctl_addrs(ngx_http_ig_redis_t *srv)
{
    return srv->seeds ? srv->seeds : srv->sentinels;
}


/* CRC-16/XMODEM of the key's hash tag, as the cluster spec has it */

static ngx_uint_t
ngx_http_ig_redis_slot(const char *key, size_t len)
{
    size_t     i, s, e;
    uint16_t   crc;
    ngx_uint_t  b;

    for (s = 0; s < len && key[s] != '{'; s++) { /* void */ }

    if (s < len) {
        for (e = s + 1; e < len && key[e] != '}'; e++) { /* void */ }

        if (e < len && e != s + 1) {
            key += s + 1;
            len = e - s - 1;
        }
    }

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) ((u_char) key[i] << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc & (NGX_HTTP_IG_REDIS_SLOTS - 1);
}


static ngx_http_ig_redis_conn_t *
ngx_http_ig_redis_route(ngx_http_ig_redis_t *srv, const char *key,
    size_t len, ngx_uint_t read)
{
    ngx_uint_t                 slot;
    ngx_http_ig_redis_conn_t  *rc;

    if (srv->slots == NULL || ngx_http_ig_redis_exiting) {
        return NULL;
    }

    slot = ngx_http_ig_redis_slot(key, len);

    if (srv->slots[slot] == NGX_HTTP_IG_REDIS_NO_NODE) {
        /* uncovered: the map is asked for again; this command bypasses */
        ngx_http_ig_redis_sentinel_ask(srv);
        return NULL;
    }

    if (read && srv->read_replica
        && srv->rslots[slot] != NGX_HTTP_IG_REDIS_NO_NODE)
    {
        rc = ngx_http_ig_redis_node_conn(srv,
                                         &srv->nodes[srv->rslots[slot]]);
        if (rc) {
            return rc;
        }
    }

    return ngx_http_ig_redis_node_conn(srv, &srv->nodes[srv->slots[slot]]);
}


/* the node at IP:PORT, added if new; an empty IP is from's host */

static ngx_http_ig_redis_node_t *
ngx_http_ig_redis_node(ngx_http_ig_redis_t *srv, const char *ip, size_t len,
    ngx_int_t port, ngx_http_ig_redis_conn_t *from)
{
    u_char                     text[NGX_INET6_ADDRSTRLEN + 1];
    socklen_t                  socklen;
    ngx_uint_t                 i;
    struct sockaddr_in        *sin;
    struct sockaddr_in6       *sin6;
    struct sockaddr_storage    ss;
    ngx_http_ig_redis_node_t  *node;

    if (port < 1 || port > 65535) {
        return NULL;
    }

    ngx_memzero(&ss, sizeof(ss));

    if (len == 0 && from && from->addr) {
        ngx_memcpy(&ss, from->addr->sockaddr, from->addr->socklen);
        socklen = from->addr->socklen;
        ngx_inet_set_port((struct sockaddr *) &ss, (in_port_t) port);

    } else {
        if (len > NGX_INET6_ADDRSTRLEN) {
            return NULL;
        }

        ngx_memcpy(text, ip, len);
        text[len] = '\0';

        sin = (struct sockaddr_in *) &ss;
        sin6 = (struct sockaddr_in6 *) &ss;

        if (inet_pton(AF_INET, (char *) text, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            sin->sin_port = htons((in_port_t) port);
            socklen = sizeof(struct sockaddr_in);

        } else if (inet_pton(AF_INET6, (char *) text, &sin6->sin6_addr) == 1)
        {
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons((in_port_t) port);
            socklen = sizeof(struct sockaddr_in6);

        } else {
            return NULL;
        }
    }

    for (i = 0; i < srv->nnodes; i++) {
        node = &srv->nodes[i];

        if (ngx_cmp_sockaddr((struct sockaddr *) &ss, socklen,
                             node->addr.sockaddr, node->addr.socklen, 1)
            == NGX_OK)
        {
            return node;
        }
    }

    if (srv->nnodes == NGX_HTTP_IG_REDIS_MAX_NODES) {
        return NULL;
    }

    node = &srv->nodes[srv->nnodes++];
    ngx_memcpy(&node->sa, &ss, socklen);
    node->addr.sockaddr = (struct sockaddr *) &node->sa;
    node->addr.socklen = socklen;
    node->addr.name.data = node->text;
    node->addr.name.len = ngx_sock_ntop(node->addr.sockaddr, socklen,
                                        node->text, NGX_SOCKADDR_STRLEN, 1);

    return node;
}


/* a node's connection, opened on demand */

static ngx_http_ig_redis_conn_t *
ngx_http_ig_redis_node_conn(ngx_http_ig_redis_t *srv,
    ngx_http_ig_redis_node_t *node)
{
    ngx_uint_t                 i;
    ngx_http_ig_redis_conn_t  *rc;

    if (node->conns == NULL) {
        node->conns = ngx_pcalloc(ngx_cycle->pool, srv->nconns
                                  * sizeof(ngx_http_ig_redis_conn_t));
        if (node->conns == NULL) {
            return NULL;
        }

        for (i = 0; i < srv->nconns; i++) {
            rc = &node->conns[i];
            ngx_http_ig_redis_conn_init(srv, rc, ngx_cycle->log);
            rc->node = node;
        }
    }

    for (i = 0; i < srv->nconns; i++) {
        rc = &node->conns[node->next++ % srv->nconns];

        if (rc->state >= NGX_HTTP_IG_REDIS_CONNECTING && rc->c) {
            return rc;
        }
    }

    /* none up: connect one now, unless all are backing off */

    for (i = 0; i < srv->nconns; i++) {
        rc = &node->conns[i];

        if (rc->c == NULL && !rc->reconnect.timer_set) {
            ngx_http_ig_redis_connect(rc);

            if (rc->state >= NGX_HTTP_IG_REDIS_CONNECTING && rc->c) {
                return rc;
            }
        }
    }

    return NULL;
}


/*
 * -MOVED slot ip:port: the slot is another node's; the map is patched and
 * asked for again.  -ASK slot ip:port: this command only, after ASKING.
 * A script is sent again as EVAL (the copy kept for NOSCRIPT), a plain
 * command (the cache's lookup) as it was, from the copy kept under
 * cluster=, up to NGX_HTTP_IG_REDIS_REDIRECTS times; then the error.
 */

static ngx_int_t
ngx_http_ig_redis_redirect(ngx_http_ig_redis_conn_t *rc,
    ngx_http_ig_redis_cmd_t *cmd, redisReply *reply)
{
    u_char                    *p, *last, *colon, *host;
    ngx_int_t                  slot, port;
    ngx_uint_t                 ask;
    const char                *argv[1];
    size_t                     argvlen[1];
    ngx_http_ig_redis_t       *srv = rc->srv;
    ngx_http_ig_redis_node_t  *node;
    ngx_http_ig_redis_conn_t  *nrc;

    p = (u_char *) reply->str;
    last = p + reply->len;

    if (reply->len > 6 && ngx_strncmp(p, "MOVED ", 6) == 0) {
        ask = 0;
        p += 6;

    } else if (reply->len > 4 && ngx_strncmp(p, "ASK ", 4) == 0) {
        ask = 1;
        p += 4;

    } else {
        if (ngx_strncmp(p, "CLUSTERDOWN", 11) == 0
            || ngx_strncmp(p, "TRYAGAIN", 8) == 0)
        {
            ngx_http_ig_redis_sentinel_ask(srv);
        }

        return NGX_DECLINED;
    }

    ngx_http_ig_metrics_add(ask ? IG_MC_REDIS_ASK : IG_MC_REDIS_MOVED, 1);

    host = ngx_strlchr(p, last, ' ');
    if (host == NULL) {
        return NGX_DECLINED;
    }

    slot = ngx_atoi(p, host - p);
    host++;

    colon = NULL;
    for (p = host; p < last; p++) {
        if (*p == ':') {
            colon = p;
        }
    }

    if (slot < 0 || slot >= NGX_HTTP_IG_REDIS_SLOTS || colon == NULL) {
        return NGX_DECLINED;
    }

    port = ngx_atoi(colon + 1, last - colon - 1);

    node = ngx_http_ig_redis_node(srv, (char *) host, colon - host, port, rc);
    if (node == NULL) {
        return NGX_DECLINED;
    }

    if (!ask) {
        srv->slots[slot] = (u_char) (node - srv->nodes);
        node->used = 1;
        ngx_http_ig_redis_sentinel_ask(srv);
    }

    if (cmd->argv == NULL || cmd->redirects >= NGX_HTTP_IG_REDIS_REDIRECTS) {
        return NGX_DECLINED;
    }

    nrc = ngx_http_ig_redis_node_conn(srv, node);
    if (nrc == NULL) {
        return NGX_DECLINED;
    }

    if (ask) {
        argv[0] = "ASKING";
        argvlen[0] = 6;

        if (ngx_http_ig_redis_internal(nrc, "ASKING", 1, argv, argvlen)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    cmd->redirects++;
    cmd->script = NULL;

    if (ngx_http_ig_redis_send(nrc, cmd, cmd->argc, cmd->argv, cmd->argvlen)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* CLUSTER SLOTS: [[start, end, [ip, port, id, ...], replicas...], ...] */

static void
ngx_http_ig_redis_cluster_done(redisReply *reply, void *data)
{
    ngx_http_ig_redis_t *srv = data;

    ngx_int_t                  start, end;
    ngx_uint_t                 i, covered, level;
    redisReply                *e, *m;
    ngx_http_ig_redis_node_t  *node;

    srv->asking = 0;

    if (reply == NULL) {
        srv->want = 1;
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) {
        srv->want = 1;
        ngx_http_ig_redis_lost(srv->sconn, reply->type == REDIS_REPLY_ERROR
                               ? reply->str : "no slots in CLUSTER SLOTS");
        return;
    }

    ngx_memset(srv->slots, NGX_HTTP_IG_REDIS_NO_NODE,
               2 * NGX_HTTP_IG_REDIS_SLOTS);

    for (i = 0; i < srv->nnodes; i++) {
        srv->nodes[i].used = 0;
    }

    covered = 0;

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3
            || e->element[0]->type != REDIS_REPLY_INTEGER
            || e->element[1]->type != REDIS_REPLY_INTEGER
            || e->element[2]->type != REDIS_REPLY_ARRAY
            || e->element[2]->elements < 2
            || e->element[2]->element[0]->type != REDIS_REPLY_STRING
            || e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        {
            continue;
        }

        start = (ngx_int_t) e->element[0]->integer;
        end = (ngx_int_t) e->element[1]->integer;
        m = e->element[2];

        if (start < 0 || end >= NGX_HTTP_IG_REDIS_SLOTS || start > end) {
            continue;
        }

        node = ngx_http_ig_redis_node(srv, m->element[0]->str,
                                      m->element[0]->len,
                                      (ngx_int_t) m->element[1]->integer,
                                      srv->sconn);
        if (node == NULL) {
            continue;
        }

        node->used = 1;
        ngx_memset(srv->slots + start, (u_char) (node - srv->nodes),
                   end - start + 1);
        covered += end - start + 1;

        /* the first replica listed, for read_from=replica */
        m = (e->elements > 3) ? e->element[3] : NULL;

        if (srv->read_replica && m && m->type == REDIS_REPLY_ARRAY
            && m->elements >= 2
            && m->element[0]->type == REDIS_REPLY_STRING
            && m->element[1]->type == REDIS_REPLY_INTEGER)
        {
            node = ngx_http_ig_redis_node(srv, m->element[0]->str,
                                          m->element[0]->len,
                                          (ngx_int_t) m->element[1]->integer,
                                          srv->sconn);
            if (node) {
                node->used = 1;
                ngx_memset(srv->rslots + start,
                           (u_char) (node - srv->nodes), end - start + 1);
            }
        }
    }

    if (!srv->resolved || covered != NGX_HTTP_IG_REDIS_SLOTS) {
        level = (covered == NGX_HTTP_IG_REDIS_SLOTS) ? NGX_LOG_NOTICE
                                                     : NGX_LOG_WARN;

        ngx_log_error(level, srv->sconn->log, 0,
                      "infergate_redis \"%V\": slot map from %V: %ui of "
                      "16384 slots on %ui nodes", &srv->name,
                      &srv->sconn->addr->name, covered, srv->nnodes);
    }

    srv->resolved = 1;
}


/* commands */

ngx_uint_t
ngx_http_ig_redis_available(ngx_http_ig_redis_t *srv)
{
    ngx_uint_t  i;

    if (srv->seeds) {
        /* a node's connection is made on demand */
        return srv->resolved && !ngx_http_ig_redis_exiting;
    }

    for (i = 0; srv->conns && i < srv->nconns; i++) {
        if (srv->conns[i].state >= NGX_HTTP_IG_REDIS_CONNECTING) {
            return 1;
        }
    }

    return 0;
}


static ngx_http_ig_redis_conn_t *
ngx_http_ig_redis_pick(ngx_http_ig_redis_t *srv)
{
    ngx_uint_t                 i;
    ngx_http_ig_redis_conn_t  *rc;

    if (srv->conns == NULL || ngx_http_ig_redis_exiting) {
        return NULL;
    }

    for (i = 0; i < srv->nconns; i++) {
        rc = &srv->conns[srv->next++ % srv->nconns];

        /* commands queue behind the handshake while connecting */
        if (rc->state >= NGX_HTTP_IG_REDIS_CONNECTING && rc->c) {
            return rc;
        }
    }

    return NULL;
}


/* formats a command into the output buffer; written on the next loop */

static ngx_int_t
ngx_http_ig_redis_append(ngx_http_ig_redis_conn_t *rc, int argc,
    const char **argv, const size_t *argvlen)
{
    int      n;
    char    *cmd;
    size_t   size;
    u_char  *p;

    n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0) {
        return NGX_ERROR;
    }

    if (rc->olast + n > rc->osize) {

        if (rc->opos) {
            ngx_memmove(rc->obuf, rc->obuf + rc->opos, rc->olast - rc->opos);
            rc->olast -= rc->opos;
            rc->opos = 0;
        }

        if (rc->olast + n > rc->osize) {
            size = ngx_max(rc->osize * 2, 4096);
            while (size < rc->olast + n) {
                size *= 2;
            }

            p = ngx_alloc(size, rc->log);
            if (p == NULL) {
                redisFreeCommand(cmd);
                return NGX_ERROR;
            }

            if (rc->obuf) {
                ngx_memcpy(p, rc->obuf, rc->olast);
                ngx_free(rc->obuf);
            }

            rc->obuf = p;
            rc->osize = size;
        }
    }

    ngx_memcpy(rc->obuf + rc->olast, cmd, n);
    rc->olast += n;
    redisFreeCommand(cmd);

    if (rc->state >= NGX_HTTP_IG_REDIS_AUTHING && rc->c
        && !rc->c->write->posted)
    {
        ngx_post_event(rc->c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_redis_write(ngx_http_ig_redis_conn_t *rc)
{
    ssize_t            n;
    ngx_connection_t  *c = rc->c;

    while (rc->opos < rc->olast) {
        n = c->send(c, rc->obuf + rc->opos, rc->olast - rc->opos);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                return NGX_ERROR;
            }

            return NGX_OK;
        }

        rc->opos += n;
    }

    rc->opos = 0;
    rc->olast = 0;

    /* a large pipeline's buffer is not kept for ever */
    if (rc->osize > 256 * 1024) {
        ngx_free(rc->obuf);
        rc->obuf = NULL;
        rc->osize = 0;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_redis_send(ngx_http_ig_redis_conn_t *rc,
    ngx_http_ig_redis_cmd_t *cmd, int argc, const char **argv,
    const size_t *argvlen)
{
    if (ngx_http_ig_redis_append(rc, argc, argv, argvlen) != NGX_OK) {
        return NGX_ERROR;
    }

    cmd->conn = rc;
    cmd->deadline = ngx_current_msec + rc->srv->timeout;
    ngx_queue_insert_tail(&rc->pending, &cmd->queue);

    if (!rc->timer.timer_set) {
        ngx_add_timer(&rc->timer, rc->srv->timeout);
    }

    return NGX_OK;
}


ngx_http_ig_redis_cmd_t *
ngx_http_ig_redis_command(ngx_http_ig_redis_t *srv, int argc,
    const char **argv, const size_t *argvlen,
    ngx_http_ig_redis_handler_pt handler, void *data)
{
    int                        i;
    u_char                    *p;
    size_t                     size;
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_conn_t  *rc;

    if (!srv->seeds) {
        rc = ngx_http_ig_redis_pick(srv);
        if (rc == NULL) {
            return NULL;
        }

        return ngx_http_ig_redis_conn_command(rc, argc, argv, argvlen,
                                              handler, data);
    }

    /* a plain command is the cache's GET: a read */
    rc = ngx_http_ig_redis_route(srv, argc > 1 ? argv[1] : "",
                                 argc > 1 ? argvlen[1] : 0, 1);
    if (rc == NULL) {
        return NULL;
    }

    /* one block: the command and a copy of its arguments, for MOVED/ASK */

    size = sizeof(ngx_http_ig_redis_cmd_t)
           + argc * (sizeof(char *) + sizeof(size_t));

    for (i = 0; i < argc; i++) {
        size += argvlen[i];
    }

    cmd = ngx_alloc(size, rc->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_ig_redis_cmd_t));
    cmd->handler = handler;
    cmd->data = data;
    cmd->argc = argc;
    cmd->argv = (const char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + argc);
    p = (u_char *) (cmd->argvlen + argc);

    for (i = 0; i < argc; i++) {
        cmd->argv[i] = (char *) p;
        cmd->argvlen[i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    if (ngx_http_ig_redis_send(rc, cmd, argc, argv, argvlen) != NGX_OK) {
        ngx_free(cmd);
        return NULL;
    }

    return cmd;
}


static ngx_http_ig_redis_cmd_t *
ngx_http_ig_redis_conn_command(ngx_http_ig_redis_conn_t *rc, int argc,
    const char **argv, const size_t *argvlen,
    ngx_http_ig_redis_handler_pt handler, void *data)
{
    ngx_http_ig_redis_cmd_t  *cmd;

    cmd = ngx_calloc(sizeof(ngx_http_ig_redis_cmd_t), rc->log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;

    if (ngx_http_ig_redis_send(rc, cmd, argc, argv, argvlen) != NGX_OK) {
        ngx_free(cmd);
        return NULL;
    }

    return cmd;
}


ngx_http_ig_redis_cmd_t *
ngx_http_ig_redis_eval(ngx_http_ig_redis_t *srv,
    ngx_http_ig_redis_script_t *script, int argc, const char **argv,
    size_t *argvlen, ngx_http_ig_redis_handler_pt handler, void *data)
{
    int                        i;
    u_char                    *p;
    size_t                     size;
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_conn_t  *rc;

    if (srv->seeds) {
        /* the first key names the slot: every key shares its hash tag */
        rc = ngx_http_ig_redis_route(srv, argc > 3 ? argv[3] : "",
                                     argc > 3 ? argvlen[3] : 0, 0);

    } else {
        rc = ngx_http_ig_redis_pick(srv);
    }

    if (rc == NULL) {
        return NULL;
    }

    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = (char *) script->sha1;
    argvlen[1] = 40;

    /* argv[2] is numkeys, set by the caller */

    /* one block: the command, and a copy of the arguments for EVAL */

    size = sizeof(ngx_http_ig_redis_cmd_t)
           + argc * (sizeof(char *) + sizeof(size_t));

    for (i = 2; i < argc; i++) {
        size += argvlen[i];
    }

    cmd = ngx_alloc(size, rc->log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_ig_redis_cmd_t));
    cmd->handler = handler;
    cmd->data = data;
    cmd->script = script;
    cmd->argc = argc;
    cmd->argv = (const char **) (cmd + 1);
    cmd->argvlen = (size_t *) (cmd->argv + argc);
    p = (u_char *) (cmd->argvlen + argc);

    cmd->argv[0] = "EVAL";
    cmd->argvlen[0] = 4;
    cmd->argv[1] = script->text;
    cmd->argvlen[1] = ngx_strlen(script->text);

    for (i = 2; i < argc; i++) {
        cmd->argv[i] = (char *) p;
        cmd->argvlen[i] = argvlen[i];
        p = ngx_cpymem(p, argv[i], argvlen[i]);
    }

    if (ngx_http_ig_redis_send(rc, cmd, argc, argv, argvlen) != NGX_OK) {
        ngx_free(cmd);
        return NULL;
    }

    return cmd;
}


void
ngx_http_ig_redis_flush(ngx_http_ig_redis_t *srv)
{
    ngx_uint_t                 i, n;
    ngx_http_ig_redis_conn_t  *rc;

    n = srv->seeds ? srv->nnodes * srv->nconns : srv->nconns;

    for (i = 0; i < n; i++) {
        if (srv->seeds) {
            rc = srv->nodes[i / srv->nconns].conns;
            if (rc == NULL) {
                continue;
            }

            rc += i % srv->nconns;

        } else if (srv->conns) {
            rc = &srv->conns[i];

        } else {
            break;
        }

        /* an error here fails the pending commands: handlers only post */
        if (rc->c && rc->olast > rc->opos
            && rc->state >= NGX_HTTP_IG_REDIS_AUTHING
            && ngx_http_ig_redis_write(rc) != NGX_OK)
        {
            ngx_http_ig_redis_lost(rc, "write failed");
        }
    }
}


void
ngx_http_ig_redis_cancel(ngx_http_ig_redis_cmd_t *cmd)
{
    cmd->handler = NULL;
    cmd->data = NULL;
}


/* the reply to the oldest pending command */

static void
ngx_http_ig_redis_reply(ngx_http_ig_redis_conn_t *rc, redisReply *reply)
{
    void                      *data;
    ngx_uint_t                 gen, readonly;
    ngx_queue_t               *q;
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_handler_pt  handler;

    if (ngx_queue_empty(&rc->pending)) {
        if (rc->subscriber) {
            ngx_http_ig_redis_switch_master(rc, reply);
            return;
        }

        ngx_http_ig_redis_lost(rc, "a reply to no command");
        return;
    }

    q = ngx_queue_head(&rc->pending);
    ngx_queue_remove(q);
    cmd = ngx_queue_data(q, ngx_http_ig_redis_cmd_t, queue);

    if (cmd->internal) {
        data = (void *) cmd->internal;
        ngx_free(cmd);
        ngx_http_ig_redis_handshake(rc, data, reply);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && cmd->script
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && rc->state >= NGX_HTTP_IG_REDIS_AUTHING)
    {
        /* once: the EVAL caches the script on the server */
        cmd->script = NULL;

        if (ngx_http_ig_redis_send(rc, cmd, cmd->argc, cmd->argv,
                                   cmd->argvlen)
            == NGX_OK)
        {
            return;
        }

        reply = NULL;
    }

    if (reply && reply->type == REDIS_REPLY_ERROR && rc->srv->seeds) {
        if (ngx_http_ig_redis_redirect(rc, cmd, reply) == NGX_OK) {
            return;
        }
    }

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_ig_metrics_add(IG_MC_REDIS_ERROR, 1);
    }

    /* a demoted primary that kept its clients: reconnect, ask again */
    readonly = (reply && reply->type == REDIS_REPLY_ERROR
                && rc->srv->sentinels
                && ngx_strncmp(reply->str, "READONLY", 8) == 0);
    gen = rc->gen;

    handler = cmd->handler;
    data = cmd->data;
    ngx_free(cmd);

    if (handler && !ngx_http_ig_redis_exiting) {
        handler(reply, data);
    }

    if (readonly && rc->gen == gen) {
        ngx_http_ig_redis_lost(rc, "READONLY: the primary was demoted");
    }
}


/*
 * Replies come in order: when the oldest pending command is past its
 * deadline the connection is dropped.  The handshake's commands, first
 * in the queue, have a later deadline than the commands behind them.
 */

static void
ngx_http_ig_redis_timer_handler(ngx_event_t *ev)
{
    ngx_msec_t                 deadline;
    ngx_queue_t               *q;
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_conn_t  *rc = ev->data;

    if (ngx_queue_empty(&rc->pending)) {
        return;
    }

    q = ngx_queue_head(&rc->pending);
    cmd = ngx_queue_data(q, ngx_http_ig_redis_cmd_t, queue);
    deadline = cmd->deadline;

    for ( ;
         cmd->internal && q != ngx_queue_last(&rc->pending);
         q = ngx_queue_next(q))
    {
        cmd = ngx_queue_data(ngx_queue_next(q), ngx_http_ig_redis_cmd_t,
                             queue);

        if ((ngx_msec_int_t) (cmd->deadline - deadline) < 0) {
            deadline = cmd->deadline;
        }
    }

    if ((ngx_msec_int_t) (deadline - ngx_current_msec) > 0) {
        ngx_add_timer(ev, deadline - ngx_current_msec);
        return;
    }

    ngx_http_ig_redis_lost(rc, "command timed out");
}


void
ngx_http_ig_redis_warn(ngx_http_ig_redis_t *srv, ngx_log_t *log,
    const char *what)
{
    if (srv->last_warn == ngx_time()) {
        return;
    }

    srv->last_warn = ngx_time();

    ngx_log_error(NGX_LOG_WARN, log, 0, "infergate_redis \"%V\" (%V): %s",
                  &srv->name, &srv->address, what);
}


/* events: edge-triggered, so a read drains the socket */

static void
ngx_http_ig_redis_read_handler(ngx_event_t *ev)
{
    void                      *reply;
    ssize_t                    n;
    ngx_uint_t                 gen;
    ngx_connection_t          *c = ev->data;
    ngx_http_ig_redis_conn_t  *rc = c->data;
    u_char                     buf[NGX_HTTP_IG_REDIS_READ_SIZE];

    if (rc->state == NGX_HTTP_IG_REDIS_CONNECTING) {
        if (c->ssl == NULL) {
            ngx_http_ig_redis_connect_done(rc);
        }

        return;
    }

    gen = rc->gen;

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_http_ig_redis_lost(rc, "cannot arm a read event");
            }

            return;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_ig_redis_lost(rc, n == 0 ? "connection closed by the "
                                   "server" : "read failed");
            return;
        }

        if (redisReaderFeed(rc->reader, (char *) buf, n) != REDIS_OK) {
            ngx_http_ig_redis_lost(rc, "protocol error");
            return;
        }

        for ( ;; ) {
            if (redisReaderGetReply(rc->reader, &reply) != REDIS_OK) {
                ngx_http_ig_redis_lost(rc, rc->reader->errstr[0]
                                       ? rc->reader->errstr
                                       : "protocol error");
                return;
            }

            if (reply == NULL) {
                break;
            }

            ngx_http_ig_redis_reply(rc, reply);
            freeReplyObject(reply);

            /* a handler or a failed handshake dropped the connection */
            if (rc->gen != gen) {
                return;
            }
        }
    }
}


static void
ngx_http_ig_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_ig_redis_conn_t  *rc = c->data;

    if (rc->state == NGX_HTTP_IG_REDIS_CONNECTING) {
        if (c->ssl == NULL) {
            ngx_http_ig_redis_connect_done(rc);
        }

        return;
    }

    if (ngx_http_ig_redis_write(rc) != NGX_OK) {
        ngx_http_ig_redis_lost(rc, "write failed");
    }
}
