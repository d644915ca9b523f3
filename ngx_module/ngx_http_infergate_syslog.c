
/*
 * Copyright (C) infergate authors
 *
 * Audit delivery to a SIEM over syslog: RFC 5424 messages whose MSG is
 * the signed JSON record, over UDP (one datagram each) or TCP with
 * octet-counted framing (RFC 6587).  Never blocks: UDP drops what the
 * socket refuses, TCP queues up to a bound and reconnects with backoff;
 * whatever is dropped is counted.  The file stays the record of truth.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_infergate.h"


#define NGX_HTTP_IG_SYSLOG_QUEUE      (1024 * 1024)
#define NGX_HTTP_IG_SYSLOG_PRI        "<110>1 "    /* log audit, info */
#define NGX_HTTP_IG_SYSLOG_BACKOFF    100
#define NGX_HTTP_IG_SYSLOG_MAX_DELAY  5000


struct ngx_http_ig_syslog_s {
    ngx_str_t                    url;
    ngx_addr_t                   addr;
    ngx_uint_t                   tcp;

    /* per worker */
    ngx_connection_t            *c;
    ngx_uint_t                   connected;
    u_char                      *queue;
    size_t                       start;
    size_t                       end;
    ngx_msec_t                   delay;
    ngx_event_t                  retry;
    ngx_log_t                   *log;
    uint64_t                     dropped;
    time_t                       err_logged;
};


static ngx_int_t ngx_http_ig_syslog_connect(ngx_http_ig_syslog_t *sl);
static void ngx_http_ig_syslog_close(ngx_http_ig_syslog_t *sl,
    ngx_err_t err, const char *what);
static void ngx_http_ig_syslog_flush(ngx_http_ig_syslog_t *sl);
static void ngx_http_ig_syslog_write_handler(ngx_event_t *wev);
static void ngx_http_ig_syslog_read_handler(ngx_event_t *rev);
static void ngx_http_ig_syslog_retry(ngx_event_t *ev);
static void ngx_http_ig_syslog_drop(ngx_http_ig_syslog_t *sl, ngx_err_t err);


ngx_http_ig_syslog_t *
ngx_http_ig_syslog_create(ngx_conf_t *cf, ngx_str_t *url)
{
    u_char                *p;
    size_t                 len;
    ngx_http_ig_syslog_t  *sl;

    sl = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_syslog_t));
    if (sl == NULL) {
        return NULL;
    }

    sl->url = *url;
    p = url->data;
    len = url->len;

    if (len > 6 && ngx_strncmp(p, "udp://", 6) == 0) {
        sl->tcp = 0;

    } else if (len > 6 && ngx_strncmp(p, "tcp://", 6) == 0) {
        sl->tcp = 1;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: syslog target \"%V\" must be "
                           "udp://ip:port or tcp://ip:port", url);
        return NULL;
    }

    /* an address, never a name: no resolver may block a worker */

    if (ngx_parse_addr_port(cf->pool, &sl->addr, p + 6, len - 6) != NGX_OK
        || ngx_inet_get_port(sl->addr.sockaddr) == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "infergate_audit: syslog target \"%V\" needs an "
                           "IP address and a port", url);
        return NULL;
    }

    return sl;
}


ngx_int_t
ngx_http_ig_syslog_init_process(ngx_http_ig_syslog_t *sl, ngx_cycle_t *cycle)
{
    sl->log = cycle->log;
    sl->delay = NGX_HTTP_IG_SYSLOG_BACKOFF;

    sl->retry.handler = ngx_http_ig_syslog_retry;
    sl->retry.data = sl;
    sl->retry.log = cycle->log;
    sl->retry.cancelable = 1;

    if (sl->tcp) {
        sl->queue = ngx_alloc(NGX_HTTP_IG_SYSLOG_QUEUE, cycle->log);
        if (sl->queue == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_ig_syslog_connect(sl) != NGX_OK) {
        ngx_add_timer(&sl->retry, sl->delay);
    }

    return NGX_OK;
}


void
ngx_http_ig_syslog_exit_process(ngx_http_ig_syslog_t *sl)
{
    if (sl->c && sl->connected) {
        ngx_http_ig_syslog_flush(sl);
    }

    if (sl->c) {
        ngx_close_connection(sl->c);
        sl->c = NULL;
    }

    if (sl->retry.timer_set) {
        ngx_del_timer(&sl->retry);
    }

    ngx_free(sl->queue);
    sl->queue = NULL;
}


/* Sends one record (its JSON text, without the newline). */

void
ngx_http_ig_syslog_send(ngx_http_ig_syslog_t *sl, u_char *json, size_t len)
{
    u_char      *p, *msg;
    u_char       head[2 * NGX_INT_T_LEN + 96 + NGX_MAXHOSTNAMELEN];
    size_t       hlen, total;
    ssize_t      n;
    ngx_tm_t     tm;
    ngx_time_t  *tp;
    struct iovec iov[2];

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    msg = head + NGX_INT_T_LEN + 1;

    p = ngx_sprintf(msg, NGX_HTTP_IG_SYSLOG_PRI
                    "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ %V infergate %P "
                    "audit - ",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec, tp->msec,
                    &ngx_cycle->hostname, ngx_pid);

    hlen = p - msg;

    if (!sl->tcp) {
        if (sl->c == NULL) {
            sl->dropped++;
            return;
        }

        iov[0].iov_base = msg;
        iov[0].iov_len = hlen;
        iov[1].iov_base = json;
        iov[1].iov_len = len;

        n = writev(sl->c->fd, iov, 2);
        if (n == -1) {
            ngx_http_ig_syslog_drop(sl, ngx_errno);
        }

        return;
    }

    /* octet counting: "MSG-LEN SP SYSLOG-MSG" */

    p = ngx_sprintf(head, "%uz ", hlen + len);
    total = (p - head) + hlen + len;

    if (sl->queue == NULL
        || NGX_HTTP_IG_SYSLOG_QUEUE - (sl->end - sl->start) < total)
    {
        ngx_http_ig_syslog_drop(sl, 0);
        return;
    }

    if (NGX_HTTP_IG_SYSLOG_QUEUE - sl->end < total) {
        ngx_memmove(sl->queue, sl->queue + sl->start, sl->end - sl->start);
        sl->end -= sl->start;
        sl->start = 0;
    }

    p = ngx_cpymem(sl->queue + sl->end, head, p - head);
    p = ngx_cpymem(p, msg, hlen);
    p = ngx_cpymem(p, json, len);
    sl->end = p - sl->queue;

    if (sl->connected) {
        ngx_http_ig_syslog_flush(sl);
    }
}


static ngx_int_t
ngx_http_ig_syslog_connect(ngx_http_ig_syslog_t *sl)
{
    int                rc;
    ngx_err_t          err;
    ngx_socket_t       s;
    ngx_connection_t  *c;

    s = ngx_socket(sl->addr.sockaddr->sa_family,
                   sl->tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
    if (s == (ngx_socket_t) -1) {
        ngx_log_error(NGX_LOG_ALERT, sl->log, ngx_socket_errno,
                      "infergate_audit: syslog socket() failed");
        return NGX_ERROR;
    }

    c = ngx_get_connection(s, sl->log);
    if (c == NULL) {
        (void) ngx_close_socket(s);
        return NGX_ERROR;
    }

    if (ngx_nonblocking(s) == -1) {
        ngx_close_connection(c);
        return NGX_ERROR;
    }

    c->data = sl;
    c->read->handler = ngx_http_ig_syslog_read_handler;
    c->write->handler = ngx_http_ig_syslog_write_handler;
    c->read->log = sl->log;
    c->write->log = sl->log;

    sl->c = c;
    sl->connected = 0;

    rc = connect(s, sl->addr.sockaddr, sl->addr.socklen);

    if (rc == -1) {
        err = ngx_socket_errno;

        if (err != NGX_EINPROGRESS) {
            ngx_http_ig_syslog_close(sl, err, "connect()");
            return NGX_ERROR;
        }
    }

    if (!sl->tcp) {
        /* a connected UDP socket: send() and ICMP errors, no events */
        sl->connected = 1;
        return NGX_OK;
    }

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            ngx_http_ig_syslog_close(sl, 0, "add_conn");
            return NGX_ERROR;
        }

    } else if (ngx_add_event(c->read, NGX_READ_EVENT, NGX_CLEAR_EVENT)
               != NGX_OK
               || ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_CLEAR_EVENT)
                  != NGX_OK)
    {
        ngx_http_ig_syslog_close(sl, 0, "add_event");
        return NGX_ERROR;
    }

    if (rc == 0) {
        sl->connected = 1;
        sl->delay = NGX_HTTP_IG_SYSLOG_BACKOFF;
        ngx_http_ig_syslog_flush(sl);
    }

    return NGX_OK;
}


static void
ngx_http_ig_syslog_write_handler(ngx_event_t *wev)
{
    int                    err;
    socklen_t              len;
    ngx_connection_t      *c;
    ngx_http_ig_syslog_t  *sl;

    c = wev->data;
    sl = c->data;

    if (!sl->connected) {
        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_http_ig_syslog_close(sl, err, "connect()");
            return;
        }

        sl->connected = 1;
        sl->delay = NGX_HTTP_IG_SYSLOG_BACKOFF;
    }

    ngx_http_ig_syslog_flush(sl);
}


/* The collector never talks back: readable means it went away. */

static void
ngx_http_ig_syslog_read_handler(ngx_event_t *rev)
{
    u_char                 buf[256];
    ssize_t                n;
    ngx_connection_t      *c;
    ngx_http_ig_syslog_t  *sl;

    c = rev->data;
    sl = c->data;

    for ( ;; ) {
        n = recv(c->fd, buf, sizeof(buf), 0);

        if (n > 0) {
            continue;
        }

        if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
            return;
        }

        ngx_http_ig_syslog_close(sl, n == 0 ? 0 : ngx_socket_errno,
                                 "the collector closed the connection");
        return;
    }
}


static void
ngx_http_ig_syslog_flush(ngx_http_ig_syslog_t *sl)
{
    ssize_t  n;

    while (sl->start < sl->end) {
        n = send(sl->c->fd, sl->queue + sl->start, sl->end - sl->start, 0);

        if (n > 0) {
            sl->start += n;
            continue;
        }

        if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
            return;
        }

        ngx_http_ig_syslog_close(sl, ngx_socket_errno, "send()");
        return;
    }

    sl->start = 0;
    sl->end = 0;
}


/*
 * What the collector did not acknowledge may be lost with the socket, and
 * a frame cut mid-way cannot be resent: the queue is dropped and the
 * next connection starts on a frame boundary.  The file holds every
 * record regardless.
 */

static void
ngx_http_ig_syslog_close(ngx_http_ig_syslog_t *sl, ngx_err_t err,
    const char *what)
{
    if (sl->c) {
        ngx_close_connection(sl->c);
        sl->c = NULL;
    }

    sl->connected = 0;

    if (sl->end > sl->start) {
        sl->dropped++;
    }

    sl->start = 0;
    sl->end = 0;

    if (ngx_time() != sl->err_logged) {
        sl->err_logged = ngx_time();
        ngx_log_error(NGX_LOG_WARN, sl->log, err,
                      "infergate_audit: syslog \"%V\": %s, retrying in "
                      "%Mms", &sl->url, what, sl->delay);
    }

    if (!ngx_exiting && !ngx_quit && !ngx_terminate
        && !sl->retry.timer_set)
    {
        ngx_add_timer(&sl->retry, sl->delay);
    }
}


static void
ngx_http_ig_syslog_retry(ngx_event_t *ev)
{
    ngx_http_ig_syslog_t *sl = ev->data;

    /* 100ms doubling up to 5s, with jitter so workers do not stampede */

    sl->delay = ngx_min(sl->delay * 2, NGX_HTTP_IG_SYSLOG_MAX_DELAY);
    sl->delay += ngx_random() % (sl->delay / 4 + 1);

    if (sl->c == NULL && ngx_http_ig_syslog_connect(sl) != NGX_OK
        && !sl->retry.timer_set)
    {
        ngx_add_timer(&sl->retry, sl->delay);
    }
}


static void
ngx_http_ig_syslog_drop(ngx_http_ig_syslog_t *sl, ngx_err_t err)
{
    sl->dropped++;

    if (ngx_time() != sl->err_logged) {
        sl->err_logged = ngx_time();
        ngx_log_error(NGX_LOG_WARN, sl->log, err,
                      "infergate_audit: syslog \"%V\" dropped a record, "
                      "%uL dropped so far", &sl->url, sl->dropped);
    }
}
