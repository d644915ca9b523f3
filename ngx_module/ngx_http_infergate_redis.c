
/*
 * Copyright (C) infergate authors
 *
 * Redis connections: hiredis 0.14 async contexts driven by the worker's
 * event loop.  Per worker and server a few persistent connections carry
 * pipelined commands; AUTH and SELECT go first on every connection; a
 * command unanswered within the timeout drops its connection (replies are
 * ordered, so one late reply blocks all behind it) and every pending
 * command gets a NULL reply; reconnects back off from 100 ms to 5 s with
 * jitter.
 *
 * hiredis owns the fd and closes it in redisFree(); the nginx connection
 * around it is released without close() in the cleanup hook.  Events are
 * registered level-triggered, as hiredis expects: it reads only 16 KiB at
 * a time and re-arms reads itself.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <openssl/sha.h>

#include "ngx_http_infergate.h"
#include "ngx_http_infergate_redis.h"
#include "ngx_http_infergate_metrics.h"


#define NGX_HTTP_IG_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_IG_REDIS_BACKOFF_MAX  5000


struct ngx_http_ig_redis_conn_s {
    ngx_http_ig_redis_t        *srv;
    redisAsyncContext          *ac;
    ngx_connection_t           *c;
    ngx_uint_t                  state;
    ngx_msec_t                  backoff;
    ngx_event_t                 reconnect;   /* also the connect timeout   */
    ngx_event_t                 timer;       /* oldest command's deadline  */
    ngx_queue_t                 pending;
    ngx_log_t                  *log;
    unsigned                    counted:1;   /* in the connections gauge  */
};


struct ngx_http_ig_redis_cmd_s {
    ngx_queue_t                 queue;
    ngx_http_ig_redis_conn_t   *conn;
    ngx_http_ig_redis_handler_pt  handler;
    void                       *data;
    ngx_msec_t                  deadline;

    /* an EVALSHA keeps its arguments to be sent again as EVAL */
    ngx_http_ig_redis_script_t *script;
    int                         argc;
    const char                **argv;
    size_t                     *argvlen;
};


static void ngx_http_ig_redis_connect(ngx_http_ig_redis_conn_t *rc);
static ngx_int_t ngx_http_ig_redis_send_handshake(
    ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_ig_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_ig_redis_handshake(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_ig_redis_lost(ngx_http_ig_redis_conn_t *rc,
    const char *why);
static void ngx_http_ig_redis_schedule(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_down(ngx_http_ig_redis_conn_t *rc);
static void ngx_http_ig_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_ig_redis_timer_handler(ngx_event_t *ev);
static void ngx_http_ig_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_http_ig_redis_send(ngx_http_ig_redis_conn_t *rc,
    ngx_http_ig_redis_cmd_t *cmd, int argc, const char **argv,
    const size_t *argvlen);
static void ngx_http_ig_redis_add_read(void *data);
static void ngx_http_ig_redis_del_read(void *data);
static void ngx_http_ig_redis_add_write(void *data);
static void ngx_http_ig_redis_del_write(void *data);
static void ngx_http_ig_redis_cleanup(void *data);
static void ngx_http_ig_redis_read_handler(ngx_event_t *ev);
static void ngx_http_ig_redis_write_handler(ngx_event_t *ev);
static void *ngx_http_ig_redis_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_ig_redis_init_main_conf(ngx_conf_t *cf, void *conf);
static char *ngx_http_ig_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
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
    ngx_str_t            *value, s;
    ngx_uint_t            i;
    struct in_addr        a4;
    struct in6_addr       a6;
    ngx_http_ig_redis_t  *srv;

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

    /* no DNS in a worker: an IP literal and a port, or a unix socket */

    if (value[2].len > 5 && ngx_strncmp(value[2].data, "unix:", 5) == 0) {
        srv->host.len = value[2].len - 5;
        srv->host.data = ngx_pnalloc(cf->pool, srv->host.len + 1);
        if (srv->host.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(srv->host.data, value[2].data + 5, srv->host.len + 1);

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

        if (inet_pton(AF_INET, (char *) srv->host.data, &a4) != 1
            && inet_pton(AF_INET6, (char *) srv->host.data, &a6) != 1)
        {
            goto bad_address;
        }
    }

    for (i = 3; i < cf->args->nelts; i++) {

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

        goto invalid;
    }

    if (srv->user.len && srv->password.len == 0) {
        return "has user= without password_file= or password_env=";
    }

    return NGX_CONF_OK;

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

        for (j = 0; j < srv->nconns; j++) {
            rc = &srv->conns[j];
            rc->srv = srv;
            rc->log = cycle->log;
            rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MIN;
            ngx_queue_init(&rc->pending);

            rc->reconnect.handler = ngx_http_ig_redis_reconnect_handler;
            rc->reconnect.data = rc;
            rc->reconnect.log = cycle->log;
            rc->reconnect.cancelable = 1;

            /*
             * Not cancelable: a request waiting on a reply has no timer
             * of its own, and a graceful quit must not exit under it.
             * Armed only while commands are pending, it holds a quit up
             * for at most the command timeout.
             */
            rc->timer.handler = ngx_http_ig_redis_timer_handler;
            rc->timer.data = rc;
            rc->timer.log = cycle->log;

            ngx_http_ig_redis_connect(rc);
        }
    }

    return NGX_OK;
}


static void
ngx_http_ig_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i, j;
    redisAsyncContext              *ac;
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

        for (j = 0; srv->conns && j < srv->nconns; j++) {
            rc = &srv->conns[j];

            if (rc->reconnect.timer_set) {
                ngx_del_timer(&rc->reconnect);
            }

            if (rc->timer.timer_set) {
                ngx_del_timer(&rc->timer);
            }

            ac = rc->ac;
            if (ac) {
                rc->ac = NULL;
                ngx_http_ig_redis_down(rc);
                redisAsyncFree(ac);
            }
        }
    }
}


/* connecting */

static void
ngx_http_ig_redis_connect(ngx_http_ig_redis_conn_t *rc)
{
    ngx_connection_t     *c;
    redisAsyncContext    *ac;
    ngx_http_ig_redis_t  *srv = rc->srv;

    if (srv->port) {
        ac = redisAsyncConnect((char *) srv->host.data, (int) srv->port);
    } else {
        ac = redisAsyncConnectUnix((char *) srv->host.data);
    }

    if (ac == NULL) {
        ngx_http_ig_redis_warn(srv, rc->log, "cannot allocate a context");
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    if (ac->err) {
        ngx_http_ig_redis_warn(srv, rc->log, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rc->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    c->data = rc;
    c->read->handler = ngx_http_ig_redis_read_handler;
    c->write->handler = ngx_http_ig_redis_write_handler;
    c->read->log = rc->log;
    c->write->log = rc->log;

    rc->c = c;
    rc->ac = ac;
    rc->state = NGX_HTTP_IG_REDIS_CONNECTING;

    ac->data = rc;

    /* the adapter first: setting the connect callback calls addWrite */

    ac->ev.data = rc;
    ac->ev.addRead = ngx_http_ig_redis_add_read;
    ac->ev.delRead = ngx_http_ig_redis_del_read;
    ac->ev.addWrite = ngx_http_ig_redis_add_write;
    ac->ev.delWrite = ngx_http_ig_redis_del_write;
    ac->ev.cleanup = ngx_http_ig_redis_cleanup;

    redisAsyncSetConnectCallback(ac, ngx_http_ig_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_ig_redis_disconnected);

    if (ngx_http_ig_redis_send_handshake(rc) != NGX_OK) {
        /* not inside a hiredis callback: freed at once */
        rc->ac = NULL;
        ngx_http_ig_redis_down(rc);
        redisAsyncFree(ac);
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    /* the connect timeout */
    ngx_add_timer(&rc->reconnect, srv->connect_timeout);
}


/*
 * AUTH and SELECT are queued at once, before the connect completes, so
 * that commands issued meanwhile follow them in the same pipeline (a
 * worker's first requests need not bypass the cache).
 */

static ngx_int_t
ngx_http_ig_redis_send_handshake(ngx_http_ig_redis_conn_t *rc)
{
    int                   argc;
    ngx_uint_t            i;
    const char           *argv[3];
    size_t                argvlen[3];
    u_char                db[NGX_INT_T_LEN];
    ngx_http_ig_redis_t  *srv = rc->srv;

    if (srv->password.len) {
        argc = 0;
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;

        if (srv->user.len) {
            argv[argc] = (char *) srv->user.data;
            argvlen[argc++] = srv->user.len;
        }

        argv[argc] = (char *) srv->password.data;
        argvlen[argc++] = srv->password.len;

        if (redisAsyncCommandArgv(rc->ac, ngx_http_ig_redis_handshake,
                                  "AUTH", argc, argv, argvlen)
            != REDIS_OK)
        {
            return NGX_ERROR;
        }
    }

    argv[0] = "SELECT";
    argvlen[0] = 6;
    argv[1] = (char *) db;
    argvlen[1] = ngx_sprintf(db, "%i", srv->db) - db;

    if (redisAsyncCommandArgv(rc->ac, ngx_http_ig_redis_handshake, "SELECT",
                              2, argv, argvlen)
        != REDIS_OK)
    {
        return NGX_ERROR;
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

        if (redisAsyncCommandArgv(rc->ac, ngx_http_ig_redis_handshake,
                                  "SCRIPT LOAD", 3, argv, argvlen)
            != REDIS_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_ig_redis_connected(const redisAsyncContext *cac, int status)
{
    redisAsyncContext         *ac = (redisAsyncContext *) cac;
    ngx_http_ig_redis_conn_t  *rc = ac->data;

    if (rc->reconnect.timer_set) {
        ngx_del_timer(&rc->reconnect);
    }

    if (status != REDIS_OK) {
        /*
         * hiredis frees the context after this, without a disconnect
         * callback; the queued commands get NULL replies
         */
        ngx_http_ig_redis_warn(rc->srv, rc->log, ac->errstr);
        rc->ac = NULL;
        ngx_http_ig_redis_down(rc);
        ngx_http_ig_redis_schedule(rc);
        return;
    }

    if (rc->state == NGX_HTTP_IG_REDIS_CONNECTING) {
        rc->state = NGX_HTTP_IG_REDIS_AUTHING;
    }
}


static void
ngx_http_ig_redis_handshake(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                *reply = r;
    ngx_http_ig_redis_conn_t  *rc = ac->data;

    if (reply == NULL || rc == NULL || rc->ac != ac) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && ngx_strcmp(privdata, "SCRIPT LOAD") == 0)
    {
        ngx_http_ig_redis_warn(rc->srv, rc->log, reply->str);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rc->log, 0,
                      "infergate_redis \"%V\": %s failed: %s",
                      &rc->srv->name, (char *) privdata, reply->str);

        /* deferred by hiredis inside a callback: pending commands fail */
        ngx_http_ig_redis_down(rc);
        redisAsyncDisconnect(ac);
        return;
    }

    if (ngx_strcmp(privdata, "SELECT") == 0) {
        rc->state = NGX_HTTP_IG_REDIS_READY;

        if (!rc->counted) {
            rc->counted = 1;
            ngx_http_ig_metrics_gauge_add(IG_MG_REDIS_CONNECTED, 1);
        }

        rc->backoff = NGX_HTTP_IG_REDIS_BACKOFF_MIN;

        ngx_log_error(NGX_LOG_INFO, rc->log, 0,
                      "infergate_redis \"%V\": connected to %V",
                      &rc->srv->name, &rc->srv->address);
    }
}


static void
ngx_http_ig_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_ig_redis_conn_t  *rc = ac->data;

    if (rc == NULL) {
        return;
    }

    if (rc->ac == ac) {
        rc->ac = NULL;
        ngx_http_ig_redis_down(rc);

        if (status != REDIS_OK) {
            ngx_http_ig_redis_warn(rc->srv, rc->log, ac->errstr[0]
                                   ? ac->errstr : "connection lost");
        }
    }

    ngx_http_ig_redis_schedule(rc);
}


/* drops a connection from outside hiredis's callbacks */

static void
ngx_http_ig_redis_lost(ngx_http_ig_redis_conn_t *rc, const char *why)
{
    redisAsyncContext  *ac = rc->ac;

    ngx_http_ig_redis_warn(rc->srv, rc->log, why);

    ngx_http_ig_redis_down(rc);

    if (ac) {
        /* pending callbacks get NULL; disconnected() schedules */
        rc->ac = NULL;
        redisAsyncFree(ac);
    }

    ngx_http_ig_redis_schedule(rc);
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
        || rc->ac || rc->reconnect.timer_set)
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

    if (rc->ac) {
        /* the connect timeout */
        if (rc->state == NGX_HTTP_IG_REDIS_CONNECTING) {
            ngx_http_ig_redis_lost(rc, "connect timed out");
        }

        return;
    }

    ngx_http_ig_redis_connect(rc);
}


/* commands */

ngx_uint_t
ngx_http_ig_redis_available(ngx_http_ig_redis_t *srv)
{
    ngx_uint_t  i;

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
        if (rc->state >= NGX_HTTP_IG_REDIS_CONNECTING && rc->ac) {
            return rc;
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_ig_redis_send(ngx_http_ig_redis_conn_t *rc,
    ngx_http_ig_redis_cmd_t *cmd, int argc, const char **argv,
    const size_t *argvlen)
{
    if (redisAsyncCommandArgv(rc->ac, ngx_http_ig_redis_reply, cmd,
                              argc, argv, argvlen)
        != REDIS_OK)
    {
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
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_conn_t  *rc;

    rc = ngx_http_ig_redis_pick(srv);
    if (rc == NULL) {
        return NULL;
    }

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

    rc = ngx_http_ig_redis_pick(srv);
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
    ngx_uint_t                 i;
    ngx_http_ig_redis_conn_t  *rc;

    for (i = 0; srv->conns && i < srv->nconns; i++) {
        rc = &srv->conns[i];

        /* an error here fails the pending commands: handlers only post */
        if (rc->ac && rc->c && rc->c->write->active
            && rc->state >= NGX_HTTP_IG_REDIS_AUTHING)
        {
            redisAsyncHandleWrite(rc->ac);
        }
    }
}


void
ngx_http_ig_redis_cancel(ngx_http_ig_redis_cmd_t *cmd)
{
    cmd->handler = NULL;
    cmd->data = NULL;
}


static void
ngx_http_ig_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply                *reply = r;
    ngx_http_ig_redis_cmd_t   *cmd = privdata;
    ngx_http_ig_redis_conn_t  *rc;
    ngx_http_ig_redis_handler_pt  handler;

    rc = cmd->conn;
    ngx_queue_remove(&cmd->queue);

    if (reply && reply->type == REDIS_REPLY_ERROR && cmd->script
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && rc->ac == ac && rc->state >= NGX_HTTP_IG_REDIS_AUTHING)
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

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_ig_metrics_add(IG_MC_REDIS_ERROR, 1);
    }

    handler = cmd->handler;
    r = cmd->data;
    ngx_free(cmd);

    if (handler && !ngx_http_ig_redis_exiting) {
        handler(reply, r);
    }
}


/*
 * Replies come in order: when the oldest pending command is past its
 * deadline the connection is dropped.
 */

static void
ngx_http_ig_redis_timer_handler(ngx_event_t *ev)
{
    ngx_queue_t               *q;
    ngx_http_ig_redis_cmd_t   *cmd;
    ngx_http_ig_redis_conn_t  *rc = ev->data;

    if (ngx_queue_empty(&rc->pending)) {
        return;
    }

    q = ngx_queue_head(&rc->pending);
    cmd = ngx_queue_data(q, ngx_http_ig_redis_cmd_t, queue);

    if ((ngx_msec_int_t) (cmd->deadline - ngx_current_msec) > 0) {
        ngx_add_timer(ev, cmd->deadline - ngx_current_msec);
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


/* the adapter: level-triggered, as hiredis's add/del semantics need */

static void
ngx_http_ig_redis_add_read(void *data)
{
    ngx_http_ig_redis_conn_t  *rc = data;

    if (rc->c && !rc->c->read->active) {
        ngx_add_event(rc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_ig_redis_del_read(void *data)
{
    ngx_http_ig_redis_conn_t  *rc = data;

    if (rc->c && rc->c->read->active) {
        ngx_del_event(rc->c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_ig_redis_add_write(void *data)
{
    ngx_http_ig_redis_conn_t  *rc = data;

    if (rc->c && !rc->c->write->active) {
        ngx_add_event(rc->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_ig_redis_del_write(void *data)
{
    ngx_http_ig_redis_conn_t  *rc = data;

    if (rc->c && rc->c->write->active) {
        ngx_del_event(rc->c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


/* hiredis closes the fd after this: release the connection without it */

static void
ngx_http_ig_redis_cleanup(void *data)
{
    ngx_connection_t          *c;
    ngx_http_ig_redis_conn_t  *rc = data;

    c = rc->c;
    if (c == NULL) {
        return;
    }

    rc->c = NULL;

    if (c->read->active) {
        ngx_del_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }

    if (c->write->active) {
        ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;

    if (rc->timer.timer_set) {
        ngx_del_timer(&rc->timer);
    }
}


static void
ngx_http_ig_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_ig_redis_conn_t  *rc = c->data;

    /* may free the context and, through cleanup, c */
    if (rc->ac) {
        redisAsyncHandleRead(rc->ac);
    }
}


static void
ngx_http_ig_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t          *c = ev->data;
    ngx_http_ig_redis_conn_t  *rc = c->data;

    if (rc->ac) {
        redisAsyncHandleWrite(rc->ac);
    }
}
