
/*
 * Copyright (C) infergate authors
 *
 * The ring server (see ring_server.h and lib/ig_ring.h).
 *
 * Each client's region is a memfd of its own, made at accept: it holds
 * that client's queues and slots and nothing else, so a peer can read or
 * write no other worker's requests or results.  A memfd, not a named
 * POSIX shm object: it has no name another process could open or a crash
 * could leave behind, it reaches the worker only as an SCM_RIGHTS fd,
 * and it is sealed against shrinking, so a hostile worker cannot
 * truncate it under us (SIGBUS).  A reused client index gets a fresh
 * memfd: the old peer's mapping stays the old, now unused, memory.
 *
 * A peer is let in only when its SO_PEERCRED uid is in --allow-uid (by
 * default the backend's own uid and root) or its gid in --allow-gid, and
 * while its pid and its uid hold fewer live indexes than
 * --clients-per-pid and --clients-per-uid.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "baudit.h"
#include "batcher.h"
#include "blog.h"
#include "ig_clock.h"
#include "ig_cuda.h"
#include "ig_ring.h"
#include "ring_queue.h"
#include "ring_server.h"


#define IG_RS_EV_LISTEN   1
#define IG_RS_EV_SIGNAL   2
#define IG_RS_EV_CTL      3
#define IG_RS_EV_SQ       4
#define IG_RS_EV_RELOAD   5
#define IG_RS_EV_SWEEP    6

#define IG_RS_REGION_MAX  (16ULL << 30)


typedef enum {
    IG_RS_FREE = 0,
    IG_RS_LIVE,
    IG_RS_GONE                /* socket closed, requests still running */
} ig_rs_state_e;


typedef struct {
    uint32_t             gen;         /* atomic: batchers read it       */
    ig_rs_state_e        state;
    int                  sock;
    int                  sq_efd;
    int                  cq_efd;
    pid_t                pid;
    uid_t                uid;
    int                  memfd;       /* the client's own region        */
    void                *base;        /* mapped while LIVE or GONE      */
    ig_rq_cursor_t       cur;
    uint8_t             *owned;
    uint32_t             inflight;
    uint32_t             dropped;
    uint64_t             served;
    uint64_t             skipped;
} ig_rs_client_t;


/* one model id's figures: atomics, bumped by the epoll and runner threads */
typedef struct {
    uint64_t             requests;
    uint64_t             rows;
    uint64_t             batches;
    uint64_t             failures[IG_STATS_NSTATUS];
    uint64_t             run_sum_us;
    uint64_t             run_buckets[IG_STATS_BUCKETS];
    uint64_t             success;        /* the statistics extension */
    uint64_t             queue_ns;
    uint64_t             compute_ns;
    uint64_t             last_ms;
} ig_rs_mstats_t;


/* run time bounds (µs) of the per-model histogram IG_CTL_STATS carries */
static const uint64_t  ig_rs_run_bounds[IG_STATS_BUCKETS - 1] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
    100000, 250000, 1000000
};


typedef struct {
    ig_rs_conf_t        *conf;
    pthread_mutex_t      lock;        /* clients' state and cq pushes  */

    int                  epfd;
    int                  lfd;
    int                  sigfd;
    dev_t                sock_dev;
    ino_t                sock_ino;

    ig_ring_region_t     rg;          /* one client's region: nclients 1 */
    uint32_t             nclients;    /* --clients                      */
    uid_t                uid;         /* ours, after --user             */
    ig_rs_client_t      *clients;

    int                  sweep_fd;    /* timerfd: queue timeouts       */
    ig_breq_t           *expired;     /* queue_max                     */

    pthread_t            reload_tid;
    int                  reload_efd;
    int                  reloading;
    int                  reload_again;
    ig_reg_result_t     *results;     /* the reload thread's            */
    uint32_t             nresults;
    uint32_t             cap_results;

    ig_batcher_t        *batchers[IG_RING_MAX_MODELS];
    ig_rq_model_t        models[IG_RING_MAX_MODELS];
    uint32_t             nmodels;

    int                  draining;

    ig_rs_mstats_t       mstats[IG_RING_MAX_MODELS];
    uint64_t             start_ns;
    uint64_t             load_failures;   /* epoll thread only          */
    uint64_t             sig_failures;    /* epoll thread only          */
    uint64_t             reloads;         /* epoll thread only          */
} ig_rs_t;


static pid_t    ig_rs_main_tid;

/* static: an abandoned reload thread may still look at it at exit */
static ig_rs_t  ig_rs_server;


/*
 * Libraries start threads before main (OpenBLAS does in a constructor),
 * with these signals unblocked; one caught there is sent on to the
 * epoll thread, which blocks it, so that it waits for its signalfd.
 */
static void
ig_rs_forward(int signo)
{
    int  saved = errno;

    syscall(SYS_tgkill, getpid(), ig_rs_main_tid, signo);
    errno = saved;
}


/*
 * A doorbell.  Nobody reads the counters (both sides poll them
 * edge-triggered, lib/ig_ring.h): every write is an event.  EAGAIN
 * means a peer saturated its own counter; a doorbell of ours (the sq
 * self-ring) then resets it and rings again.
 */
static void
ig_rs_ring(int efd)
{
    uint64_t  one = 1, v;

    if (write(efd, &one, sizeof(one)) < 0 && errno == EAGAIN) {
        if (read(efd, &v, sizeof(v)) == sizeof(v)) {
            if (write(efd, &one, sizeof(one)) < 0) {
                /* nothing more to do */
            }
        }
    }
}


/* the completion doorbell, only when the worker asked for it */
static void
ig_rs_ring_cq(ig_rs_t *s, ig_rs_client_t *c)
{
    if (ig_ring_need_wake(ig_ring_cq(c->base, &s->rg, 0))) {
        ig_rs_ring(c->cq_efd);
    }
}


#define ig_rs_count(p, n)  __atomic_add_fetch(p, n, __ATOMIC_RELAXED)


static void
ig_rs_count_failure(ig_rs_t *s, uint32_t model, uint32_t status,
    uint32_t n)
{
    if (model < IG_RING_MAX_MODELS && status != IG_RING_OK
        && status < IG_STATS_NSTATUS)
    {
        ig_rs_count(&s->mstats[model].failures[status], n);
    }
}


/* one request answered OK: the statistics extension's figures */
static void
ig_rs_count_ok(ig_rs_t *s, uint32_t model, uint64_t queue_ns,
    uint32_t run_us)
{
    struct timespec  ts;
    ig_rs_mstats_t  *ms;

    ms = &s->mstats[model];

    ig_rs_count(&ms->success, 1);
    ig_rs_count(&ms->queue_ns, queue_ns);
    ig_rs_count(&ms->compute_ns, (uint64_t) run_us * 1000);

    clock_gettime(CLOCK_REALTIME, &ts);
    __atomic_store_n(&ms->last_ms, (uint64_t) ts.tv_sec * 1000
                                   + ts.tv_nsec / 1000000, __ATOMIC_RELAXED);
}


/* one model run, from its runner thread */
static void
ig_rs_count_run(ig_rs_t *s, uint32_t model, uint32_t run_us)
{
    uint32_t         b;
    ig_rs_mstats_t  *ms;

    if (model >= IG_RING_MAX_MODELS) {
        return;
    }

    ms = &s->mstats[model];

    for (b = 0; b < IG_STATS_BUCKETS - 1; b++) {
        if (run_us <= ig_rs_run_bounds[b]) {
            break;
        }
    }

    ig_rs_count(&ms->run_buckets[b], 1);
    ig_rs_count(&ms->run_sum_us, run_us);
    ig_rs_count(&ms->batches, 1);
}


/* answers a slot; the lock is held */
static void
ig_rs_answer_locked(ig_rs_t *s, uint32_t i, uint32_t slot, uint32_t status,
    uint32_t out_floats, uint32_t batch_rows, uint32_t queue_us,
    uint32_t run_us)
{
    ig_rs_client_t  *c = &s->clients[i];

    c->inflight--;

    if (ig_rq_complete(&c->cur, c->base, &s->rg, 0, c->owned, slot, status,
                       out_floats, batch_rows, queue_us, run_us)
        == -1)
    {
        /* the epoll thread sees the hang-up and drops the client */
        ig_blog("warn", "client_corrupt", "client=%u pid=%d queue=cq", i,
                (int) c->pid);
        shutdown(c->sock, SHUT_RDWR);
        return;
    }

    c->served++;
}


/*
 * The client's region goes once nothing of it is held: the batchers
 * write results into it until their requests are answered or dropped.
 */
static void
ig_rs_release(ig_rs_t *s, ig_rs_client_t *c)
{
    if (c->base != NULL) {
        munmap(c->base, s->rg.region_bytes);
        c->base = NULL;
    }

    if (c->memfd >= 0) {
        close(c->memfd);
        c->memfd = -1;
    }
}


/* a request whose client is gone: its slot comes back to the pool */
static void
ig_rs_drop_locked(ig_rs_t *s, uint32_t i, uint32_t slot)
{
    ig_rs_client_t  *c = &s->clients[i];

    c->owned[slot] = 0;
    c->inflight--;
    c->dropped++;

    if (c->state == IG_RS_GONE && c->inflight == 0) {
        ig_rs_release(s, c);
        c->state = IG_RS_FREE;
        ig_blog("info", "client_reclaimed", "client=%u dropped=%u", i,
                c->dropped);
    }
}


/*
 * The batchers' completion callback (runner threads): one lock and one
 * completion doorbell per client for a whole batch.
 */
static void
ig_rs_done(void *data, const ig_breq_t *r, uint32_t n, uint32_t status,
    uint32_t batch_rows, uint64_t start_ns, uint32_t run_us)
{
    ig_rs_t  *s = data;

    uint32_t         i, j, nring, ring[IG_RING_MAX_CLIENTS];
    ig_rs_client_t  *c;
    uint8_t          marked[IG_RING_MAX_CLIENTS];

    memset(marked, 0, sizeof(marked));
    nring = 0;

    /* a batcher serves one model: every request here is of r[0].model */
    if (n && (status == IG_RING_OK || status == IG_RING_EMODEL)) {
        ig_rs_count_run(s, r[0].model, run_us);
    }

    pthread_mutex_lock(&s->lock);

    for (i = 0; i < n; i++) {
        c = &s->clients[r[i].client];

        if (c->gen != r[i].gen) {
            ig_rs_drop_locked(s, r[i].client, r[i].slot);
            continue;
        }

        /* failures count answers: a gone client's request is dropped */
        ig_rs_count_failure(s, r[i].model, status, 1);

        if (status == IG_RING_OK && r[i].model < IG_RING_MAX_MODELS) {
            ig_rs_count_ok(s, r[i].model, start_ns - r[i].enq_ns, run_us);
        }

        ig_rs_answer_locked(s, r[i].client, r[i].slot, status,
                            r[i].out_floats, batch_rows,
                            (uint32_t) ((start_ns - r[i].enq_ns) / 1000),
                            run_us);

        if (!marked[r[i].client]) {
            marked[r[i].client] = 1;
            ring[nring++] = r[i].client;
        }
    }

    for (j = 0; j < nring; j++) {
        ig_rs_ring_cq(s, &s->clients[ring[j]]);
    }

    pthread_mutex_unlock(&s->lock);
}


static int
ig_rs_epoll_add(ig_rs_t *s, int fd, uint32_t events, uint32_t type,
    uint32_t idx, uint32_t gen)
{
    struct epoll_event  ev;

    ev.events = events;

    /*
     * The client's generation rides along: an event still in the array
     * after its client was dropped and its index reused is ignored.
     */
    ev.data.u64 = (uint64_t) type << 56
                  | (uint64_t) (gen & 0xffffff) << 32 | idx;

    return epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
}


/* IG_CTL_MODELS for one client; the message is built per send */
static int
ig_rs_send_models(ig_rs_t *s, int fd)
{
    size_t             len;
    ssize_t            n;
    uint32_t           i;
    ig_reg_entry_t    *e;
    ig_ctl_models_t   *msg;
    ig_ctl_model_t    *cm;

    len = sizeof(ig_ctl_models_t) + s->nmodels * sizeof(ig_ctl_model_t);

    msg = calloc(1, len);
    if (msg == NULL) {
        return -1;
    }

    msg->type = IG_CTL_MODELS;
    msg->nmodels = s->nmodels;
    msg->max_batch = s->conf->max_batch;
    snprintf(msg->device, sizeof(msg->device), "%s", s->conf->ex->name);

    for (i = 0; i < s->nmodels; i++) {
        e = &s->conf->reg->entries[i];
        cm = &msg->models[i];
        cm->id = i;
        cm->ready = s->models[i].ready;
        snprintf(cm->name, sizeof(cm->name), "%s", e->name);
        snprintf(cm->version, sizeof(cm->version), "%s", e->version);
        cm->meta = e->meta;
    }

    n = send(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    free(msg);

    return (n == (ssize_t) len) ? 0 : -1;
}


static int
ig_rs_send_hello(ig_rs_t *s, uint32_t i)
{
    int              *fds;
    ssize_t           n;
    struct iovec      iov;
    struct msghdr     mh;
    struct cmsghdr   *cm;
    ig_ctl_hello_t    hello;
    ig_rs_client_t   *c = &s->clients[i];
    union {
        char            buf[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr  align;
    } ctl;

    memset(&hello, 0, sizeof(hello));
    hello.type = IG_CTL_HELLO;
    hello.version = IG_RING_VERSION;
    hello.generation = s->rg.generation;
    hello.client = i;
    hello.pid = (uint32_t) getpid();
    hello.region = s->rg;

    memset(&mh, 0, sizeof(mh));
    memset(&ctl, 0, sizeof(ctl));
    iov.iov_base = &hello;
    iov.iov_len = sizeof(hello);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);

    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
    fds = (int *) CMSG_DATA(cm);
    fds[0] = c->memfd;
    fds[1] = c->sq_efd;
    fds[2] = c->cq_efd;

    n = sendmsg(c->sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

    return (n == (ssize_t) sizeof(hello)) ? 0 : -1;
}


/* 1 when the peer's uid or gid is in the allow lists */
static int
ig_rs_allowed(ig_rs_t *s, const struct ucred *cred)
{
    uint32_t       k;
    ig_rs_conf_t  *cf = s->conf;

    if (cf->nallow_uid == 0) {
        if (cred->uid == 0 || cred->uid == s->uid) {
            return 1;
        }

    } else {
        for (k = 0; k < cf->nallow_uid; k++) {
            if (cred->uid == cf->allow_uid[k]) {
                return 1;
            }
        }
    }

    for (k = 0; k < cf->nallow_gid; k++) {
        if (cred->gid == cf->allow_gid[k]) {
            return 1;
        }
    }

    return 0;
}


/* a fresh region for one client: its queues and slots, nothing else */
static int
ig_rs_client_region(ig_rs_t *s, ig_rs_client_t *c)
{
    void  *base;
    int    fd;

    fd = memfd_create("infergate-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        return -1;
    }

    /* created after --user took effect: owned by it, 0600 */
    if (ftruncate(fd, (off_t) s->rg.region_bytes) != 0
        || fchmod(fd, 0600) != 0
        || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
           != 0)
    {
        close(fd);
        return -1;
    }

    base = mmap(NULL, s->rg.region_bytes, PROT_READ | PROT_WRITE,
                MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        close(fd);
        return -1;
    }

    memcpy(base, &s->rg, sizeof(s->rg));

    c->memfd = fd;
    c->base = base;

    return 0;
}


static void
ig_rs_refuse(int fd, const struct ucred *cred, const char *level,
    const char *reason)
{
    ig_blog(level, "client_refused", "pid=%d uid=%u gid=%u reason=\"%s\"",
            (int) cred->pid, (unsigned) cred->uid, (unsigned) cred->gid,
            reason);
    ig_baudit_client(-1, cred->pid, cred->uid, cred->gid, reason);
    close(fd);
}


static void
ig_rs_accept(ig_rs_t *s)
{
    int              fd;
    uint32_t         i, npid, nuid;
    socklen_t        len;
    struct ucred     cred;
    ig_rs_client_t  *c, *cl;
    char             why[128];

    for ( ;; ) {
        fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                ig_blog("error", "accept_failed", "errno=%d", errno);
            }
            return;
        }

        memset(&cred, 0, sizeof(cred));
        len = sizeof(cred);

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0
            || len != sizeof(cred))
        {
            cred.pid = 0;
            cred.uid = (uid_t) -1;
            cred.gid = (gid_t) -1;
            ig_rs_refuse(fd, &cred, "warn", "no peer credentials");
            continue;
        }

        if (!ig_rs_allowed(s, &cred)) {
            ig_rs_refuse(fd, &cred, "warn", s->conf->nallow_uid
                         ? "uid and gid not allowed (--allow-uid, "
                           "--allow-gid)"
                         : "uid not the backend's own or root, gid not "
                           "allowed (--allow-uid, --allow-gid)");
            continue;
        }

        pthread_mutex_lock(&s->lock);

        c = NULL;
        npid = 0;
        nuid = 0;

        for (i = 0; i < s->nclients; i++) {
            cl = &s->clients[i];

            if (cl->state == IG_RS_FREE) {
                if (c == NULL) {
                    c = cl;
                }
                continue;
            }

            /*
             * an index whose socket closed still holds its region and
             * its requests (GONE): it counts against its pid and uid, or
             * a peer that connects, submits and hangs up in a loop could
             * hold every index
             */
            if (cl->state == IG_RS_LIVE || cl->state == IG_RS_GONE) {
                npid += (cl->pid == cred.pid);
                nuid += (cl->uid == cred.uid);
            }
        }

        pthread_mutex_unlock(&s->lock);

        /*
         * Only this thread makes an index LIVE; the runners only turn
         * GONE into FREE: a FREE index found here stays ours.
         */
        if (npid >= s->conf->clients_per_pid) {
            snprintf(why, sizeof(why), "the pid holds --clients-per-pid "
                     "%u indexes", s->conf->clients_per_pid);
            ig_rs_refuse(fd, &cred, "warn", why);
            continue;
        }

        if (nuid >= s->conf->clients_per_uid) {
            snprintf(why, sizeof(why), "the uid holds --clients-per-uid "
                     "%u indexes", s->conf->clients_per_uid);
            ig_rs_refuse(fd, &cred, "warn", why);
            continue;
        }

        if (c == NULL) {
            snprintf(why, sizeof(why), "no free client index (--clients "
                     "%u)", s->nclients);
            ig_rs_refuse(fd, &cred, "warn", why);
            continue;
        }

        i = (uint32_t) (c - s->clients);

        if (ig_rs_client_region(s, c) != 0) {
            snprintf(why, sizeof(why), "region: errno %d", errno);
            ig_rs_refuse(fd, &cred, "error", why);
            continue;
        }

        c->sq_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        c->cq_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

        if (c->sq_efd < 0 || c->cq_efd < 0) {
            snprintf(why, sizeof(why), "eventfd: errno %d", errno);
            if (c->sq_efd >= 0) {
                close(c->sq_efd);
            }
            if (c->cq_efd >= 0) {
                close(c->cq_efd);
            }
            ig_rs_release(s, c);
            ig_rs_refuse(fd, &cred, "error", why);
            continue;
        }

        pthread_mutex_lock(&s->lock);

        c->sock = fd;
        c->pid = cred.pid;
        c->uid = cred.uid;
        c->inflight = 0;
        c->dropped = 0;
        c->served = 0;
        c->skipped = 0;
        memset(c->owned, 0, s->rg.nslots);
        ig_rq_reset(&c->cur, c->base, &s->rg, 0);
        c->state = IG_RS_LIVE;

        pthread_mutex_unlock(&s->lock);

        if (ig_rs_send_hello(s, i) != 0 || ig_rs_send_models(s, fd) != 0
            || ig_rs_epoll_add(s, fd, EPOLLIN | EPOLLRDHUP, IG_RS_EV_CTL, i,
                               c->gen) != 0
            || ig_rs_epoll_add(s, c->sq_efd, EPOLLIN | EPOLLET, IG_RS_EV_SQ,
                               i, c->gen)
               != 0)
        {
            ig_blog("warn", "client_refused", "client=%u pid=%d uid=%u "
                    "gid=%u reason=\"hello failed\" errno=%d", i,
                    (int) cred.pid, (unsigned) cred.uid,
                    (unsigned) cred.gid, errno);
            ig_baudit_client((int) i, cred.pid, cred.uid, cred.gid,
                             "hello failed");
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
            epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->sq_efd, NULL);
            pthread_mutex_lock(&s->lock);
            close(c->sq_efd);
            close(c->cq_efd);
            close(fd);
            c->sock = c->sq_efd = c->cq_efd = -1;
            __atomic_add_fetch(&c->gen, 1, __ATOMIC_RELEASE);
            ig_rs_release(s, c);
            c->state = IG_RS_FREE;
            pthread_mutex_unlock(&s->lock);
            continue;
        }

        ig_blog("info", "client_connected", "client=%u pid=%d uid=%u "
                "gid=%u", i, (int) cred.pid, (unsigned) cred.uid,
                (unsigned) cred.gid);
        ig_baudit_client((int) i, cred.pid, cred.uid, cred.gid, NULL);
    }
}


static void
ig_rs_disconnect(ig_rs_t *s, uint32_t i, const char *why)
{
    uint32_t         inflight;
    ig_rs_client_t  *c = &s->clients[i];

    if (c->state != IG_RS_LIVE) {
        return;
    }

    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->sock, NULL);
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->sq_efd, NULL);

    pthread_mutex_lock(&s->lock);

    close(c->sock);
    close(c->sq_efd);
    close(c->cq_efd);
    c->sock = c->sq_efd = c->cq_efd = -1;

    /* requests still queued or running for it are dropped, not answered */
    __atomic_add_fetch(&c->gen, 1, __ATOMIC_RELEASE);
    inflight = c->inflight;
    c->state = inflight ? IG_RS_GONE : IG_RS_FREE;

    if (inflight == 0) {
        ig_rs_release(s, c);
    }

    pthread_mutex_unlock(&s->lock);

    ig_blog("info", "client_gone", "client=%u pid=%d reason=%s served=%llu "
            "inflight=%u", i, (int) c->pid, why,
            (unsigned long long) c->served, inflight);
}


/*
 * Drains one client's submission queue after a doorbell.  The doorbell
 * word (lib/ig_ring.h) is 0 while we drain, so the worker skips its
 * write(); when the queue looks empty we set it and look once more.
 * One request whose model is idle and quick runs here at once (the
 * batcher's claim), after the lock is released; the rest queue.
 */
static void
ig_rs_intake(ig_rs_t *s, uint32_t i)
{
    int               rc, answered;
    uint32_t          k, status, budget;
    uint64_t          now;
    ig_breq_t         br, inl;
    ig_rq_req_t       req;
    ig_batcher_t     *inl_b;
    ig_ring_queue_t  *sq;
    ig_rs_client_t   *c = &s->clients[i];

    now = ig_clock_ns();
    budget = 2 * s->rg.nslots;        /* one client cannot hold the loop */
    rc = IG_RQ_EMPTY;
    answered = 0;
    inl_b = NULL;
    sq = ig_ring_sq(c->base, &s->rg, 0);

    pthread_mutex_lock(&s->lock);

    ig_ring_awake(sq);

    for (k = 0; k < budget; k++) {
        rc = ig_rq_take(&c->cur, c->base, &s->rg, 0, c->owned, s->models,
                        s->nmodels, &req, &status);

        if (rc == IG_RQ_EMPTY) {
            if (ig_ring_sleep(sq, c->cur.sq_head)) {
                continue;             /* pushed meanwhile, unrung */
            }
            break;
        }

        if (rc == IG_RQ_CORRUPT) {
            break;
        }

        if (rc == IG_RQ_SKIPPED) {
            if (c->skipped++ == 0) {
                ig_blog("warn", "bad_entry", "client=%u pid=%d "
                        "reason=\"slot index out of range or in use\"",
                        i, (int) c->pid);
            }
            continue;
        }

        c->inflight++;

        if (req.model_id < s->nmodels) {
            ig_rs_count(&s->mstats[req.model_id].requests, 1);

            /* a bad header's row count is anybody's guess */
            if (status == IG_RING_OK) {
                ig_rs_count(&s->mstats[req.model_id].rows, req.rows);
            }
        }

        if (status == IG_RING_OK && s->draining) {
            status = IG_RING_ESHUTDOWN;
        }

        if (status == IG_RING_OK) {
            br.data = ig_ring_slot(c->base, &s->rg, 0, req.slot)->data;
            br.alive = &c->gen;
            br.enq_ns = now;
            br.gen = c->gen;
            br.client = i;
            br.model = req.model_id;
            br.slot = req.slot;
            br.rows = req.rows;
            br.out_floats = req.out_floats;

            if (inl_b == NULL
                && ig_batcher_claim(s->batchers[req.model_id], &br))
            {
                inl_b = s->batchers[req.model_id];
                inl = br;
                continue;
            }

            if (ig_batcher_submit(s->batchers[req.model_id], &br) == 0) {
                continue;
            }

            status = IG_RING_EQUEUE_FULL;
        }

        if (req.model_id < s->nmodels) {
            ig_rs_count_failure(s, req.model_id, status, 1);
        }

        ig_rs_answer_locked(s, i, req.slot, status, 0, 0, 0, 0);
        answered = 1;
    }

    if (answered) {
        ig_rs_ring_cq(s, c);          /* once for all refused at once */
    }

    pthread_mutex_unlock(&s->lock);

    if (inl_b) {
        /* answers through ig_rs_done, which takes the lock */
        ig_batcher_run_claimed(inl_b, &inl);
    }

    if (rc == IG_RQ_CORRUPT) {
        ig_blog("warn", "client_corrupt", "client=%u pid=%d queue=sq", i,
                (int) c->pid);
        ig_rs_disconnect(s, i, "corrupt");
        return;
    }

    if (k == budget) {
        ig_rs_ring(c->sq_efd);        /* the rest after the others */
    }
}


/*
 * IG_CTL_STATS for one client, on the epoll thread: the counters are
 * read with atomic loads, a queue depth takes its batcher's lock for a
 * moment, and the send never waits (a full socket drops this reply).
 */
static void
ig_rs_send_stats(ig_rs_t *s, uint32_t i)
{
    size_t                 len;
    uint32_t               m, k;
    ig_ctl_stats_t        *msg;
    ig_rs_mstats_t        *ms;
    ig_reg_entry_t        *e;
    ig_ctl_model_stats_t  *cm;

    len = sizeof(ig_ctl_stats_t) + s->nmodels * sizeof(ig_ctl_model_stats_t);

    msg = calloc(1, len);
    if (msg == NULL) {
        return;
    }

    msg->type = IG_CTL_STATS;
    msg->version = IG_RING_VERSION;
    msg->nmodels = s->nmodels;
    msg->nbuckets = IG_STATS_BUCKETS;
    msg->generation = s->rg.generation;
    msg->uptime_ms = (ig_clock_ns() - s->start_ns) / 1000000;
    msg->load_failures = s->load_failures;
    msg->reloads = s->reloads;
    msg->signature_failures = s->sig_failures;

    if (ig_exec_gpu_mem(s->conf->ex, &msg->gpu_mem_free, &msg->gpu_mem_total)
        != 0)
    {
        msg->gpu_mem_free = 0;
        msg->gpu_mem_total = 0;
    }
    snprintf(msg->device, sizeof(msg->device), "%s", s->conf->ex->name);
    memcpy(msg->run_bounds_us, ig_rs_run_bounds, sizeof(ig_rs_run_bounds));

    for (m = 0; m < s->nmodels; m++) {
        e = &s->conf->reg->entries[m];
        ms = &s->mstats[m];
        cm = &msg->models[m];

        cm->id = m;
        cm->ready = s->models[m].ready;
        snprintf(cm->name, sizeof(cm->name), "%s", e->name);
        snprintf(cm->version, sizeof(cm->version), "%s", e->version);
        memcpy(cm->sha256, e->file_sha, sizeof(cm->sha256));
        snprintf(cm->signer, sizeof(cm->signer), "%s", e->signer);

        cm->requests = __atomic_load_n(&ms->requests, __ATOMIC_RELAXED);
        cm->rows = __atomic_load_n(&ms->rows, __ATOMIC_RELAXED);
        cm->run_sum_us = __atomic_load_n(&ms->run_sum_us, __ATOMIC_RELAXED);
        cm->success = __atomic_load_n(&ms->success, __ATOMIC_RELAXED);
        cm->queue_ns = __atomic_load_n(&ms->queue_ns, __ATOMIC_RELAXED);
        cm->compute_ns = __atomic_load_n(&ms->compute_ns, __ATOMIC_RELAXED);
        cm->last_ms = __atomic_load_n(&ms->last_ms, __ATOMIC_RELAXED);

        for (k = 0; k < IG_STATS_NSTATUS; k++) {
            cm->failures[k] = __atomic_load_n(&ms->failures[k],
                                              __ATOMIC_RELAXED);
        }

        /* the count is the buckets' sum: consistent with them */
        cm->run_count = 0;

        for (k = 0; k < IG_STATS_BUCKETS; k++) {
            cm->run_buckets[k] = __atomic_load_n(&ms->run_buckets[k],
                                                 __ATOMIC_RELAXED);
            cm->run_count += cm->run_buckets[k];
        }

        cm->batches = cm->run_count;

        if (s->batchers[m]) {
            cm->queue_depth = ig_batcher_pending(s->batchers[m]);
        }
    }

    if (send(s->clients[i].sock, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT)
        != (ssize_t) len)
    {
        /* EAGAIN: the worker asks again; a hang-up is seen by epoll */
    }

    free(msg);
}


static void
ig_rs_ctl(ig_rs_t *s, uint32_t i, uint32_t events)
{
    int       k;
    ssize_t   n;
    uint32_t  type, version;
    char      buf[512];

    if (s->clients[i].state != IG_RS_LIVE) {
        return;
    }

    for (k = 0; ; k++) {
        if (k == 64) {
            return;                   /* a chatty worker waits its turn */
        }

        n = recv(s->clients[i].sock, buf, sizeof(buf), MSG_DONTWAIT);

        if (n >= (ssize_t) sizeof(uint32_t)) {
            memcpy(&type, buf, sizeof(uint32_t));

            /* every worker → backend message starts type, version */
            if (n >= (ssize_t) (2 * sizeof(uint32_t))) {
                memcpy(&version, buf + sizeof(uint32_t), sizeof(uint32_t));

                if (version != IG_RING_VERSION) {
                    ig_blog("error", "ring_version_mismatch",
                            "client=%u pid=%d theirs=%u ours=%u "
                            "reason=\"the worker's module and this "
                            "backend speak different ring versions: "
                            "install both from one build\"", i,
                            (int) s->clients[i].pid, version,
                            IG_RING_VERSION);
                    ig_rs_disconnect(s, i, "version");
                    return;           /* nothing it says holds */
                }
            }

            if (type == IG_CTL_STATS_REQ) {
                ig_rs_send_stats(s, i);
            }

            /* anything else: nothing to answer */
            continue;
        }

        if (n > 0) {
            continue;
        }

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
                break;
            }
            return;
        }

        break;
    }

    ig_rs_disconnect(s, i, "eof");
}


/* a scan's result, on the epoll thread: new ids get a batcher */
static void
ig_rs_apply(ig_rs_t *s, ig_reg_result_t *res)
{
    char              label[96], q[600];
    ig_model_t       *m = res->model;
    ig_reg_entry_t   *e;
    ig_batch_conf_t   bc;

    snprintf(label, sizeof(label), "%s:%s",
             s->conf->reg->specs[res->spec].name, res->version);

    if (res->ev == IG_REG_REFUSED) {
        s->load_failures++;
        s->sig_failures += (res->sig_refused != 0);
        ig_blog("error", "model_refused", "model=%s err=%s kept=%s", label,
                ig_blogq(q, sizeof(q), res->err),
                res->id == UINT32_MAX ? "no" : "yes");
        ig_baudit_model(res, s->conf->reg->specs[res->spec].name, res->id,
                        s->conf->ex->name, NULL);
        return;
    }

    e = ig_reg_apply(s->conf->reg, res);
    if (e == NULL) {
        s->load_failures++;
        ig_blog("error", "model_refused", "model=%s err=\"registry full\"",
                label);
        ig_baudit_model(res, s->conf->reg->specs[res->spec].name,
                        UINT32_MAX, s->conf->ex->name, "registry full");
        ig_model_free(m);
        return;
    }

    if (res->ev == IG_REG_RELOADED) {
        ig_batcher_swap(s->batchers[e->id], m);
        ig_blog("info", "model_reloaded", "id=%u model=%s path=%s", e->id,
                label, ig_blogq(q, sizeof(q), e->path));
        ig_baudit_model(res, e->name, e->id, s->conf->ex->name, NULL);
        return;
    }

    bc.max_batch = s->conf->max_batch;
    bc.max_delay_us = s->conf->max_delay_us;
    bc.queue_timeout_us = s->conf->queue_timeout_us;
    bc.queue_max = s->conf->queue_max;
    bc.inline_us = s->conf->inline_us;
    bc.done = ig_rs_done;
    bc.data = s;

    s->batchers[e->id] = ig_batcher_create(m, s->conf->ex, label, &bc);

    if (s->batchers[e->id] == NULL) {
        s->load_failures++;
        ig_blog("error", "model_refused", "id=%u model=%s "
                "err=\"no runner thread\"", e->id, label);
        ig_baudit_model(res, e->name, e->id, s->conf->ex->name,
                        "no runner thread");
        ig_model_free(m);
        s->models[e->id].ready = 0;

    } else {
        s->models[e->id].ready = 1;
        ig_blog("info", "model_loaded", "id=%u model=%s platform=%s "
                "features=%u outputs=%u path=%s", e->id, label,
                e->meta.platform, e->meta.nfeatures, e->meta.noutputs,
                ig_blogq(q, sizeof(q), e->path));
        ig_baudit_model(res, e->name, e->id, s->conf->ex->name, NULL);
    }

    s->models[e->id].nfeatures = e->meta.nfeatures;
    s->models[e->id].noutputs = e->meta.noutputs;
    s->nmodels = e->id + 1;
}


static void
ig_rs_apply_now(void *data, ig_reg_result_t *res)
{
    ig_rs_apply(data, res);
}


/* the reload thread keeps the results for the epoll thread */
static void
ig_rs_keep(void *data, ig_reg_result_t *res)
{
    ig_rs_t          *s = data;
    ig_reg_result_t  *a;

    if (s->nresults == s->cap_results) {
        a = realloc(s->results, (s->cap_results * 2 + 8)
                                * sizeof(ig_reg_result_t));
        if (a == NULL) {
            ig_model_free(res->model);
            ig_blog("error", "model_refused", "err=\"out of memory\"");
            return;
        }

        s->results = a;
        s->cap_results = s->cap_results * 2 + 8;
    }

    s->results[s->nresults++] = *res;
}


/*
 * Loading may take long (a big model, a slow disk): it runs on this
 * thread so the ring keeps serving.  Reading the registry here is safe:
 * only the epoll thread changes it, and only after this thread ended.
 */
static void *
ig_rs_reload_thread(void *arg)
{
    ig_rs_t   *s = arg;
    uint64_t   one = 1;
    char       err[512];

    ig_reg_scan(s->conf->reg, s->conf->ex, 0, ig_rs_keep, s, err,
                sizeof(err));

    if (write(s->reload_efd, &one, sizeof(one)) < 0) {
        ig_blog("error", "reload_failed", "errno=%d", errno);
    }

    return NULL;
}


static void
ig_rs_reload(ig_rs_t *s)
{
    if (s->reloading) {
        s->reload_again = 1;          /* once this one is done */
        return;
    }

    ig_blog("info", "reload", "models=%u", s->nmodels);
    ig_baudit_reload(s->nmodels);

    s->nresults = 0;
    s->reloading = 1;

    if (pthread_create(&s->reload_tid, NULL, ig_rs_reload_thread, s) != 0) {
        ig_blog("error", "reload_failed", "reason=\"no thread\"");
        s->reloading = 0;
    }
}


static void
ig_rs_reload_end(ig_rs_t *s, int apply)
{
    uint32_t  i, before;
    uint64_t  v;

    if (!s->reloading) {
        return;
    }

    if (apply) {
        pthread_join(s->reload_tid, NULL);

    } else {
        struct timespec  ts;

        /* exiting: a load stuck on a dead disk must not hold us */
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 2;

        if (pthread_timedjoin_np(s->reload_tid, NULL, &ts) != 0) {
            ig_blog("warn", "reload_abandoned",
                    "reason=\"a load is still running\"");
            return;
        }
    }

    s->reloading = 0;

    if (read(s->reload_efd, &v, sizeof(v)) < 0) {
        /* already read */
    }

    before = s->nmodels;

    for (i = 0; i < s->nresults; i++) {
        if (apply) {
            ig_rs_apply(s, &s->results[i]);

        } else {
            ig_model_free(s->results[i].model);
        }
    }

    s->nresults = 0;

    if (!apply) {
        return;
    }

    s->reloads++;

    for (i = 0; i < s->nclients; i++) {
        if (s->clients[i].state == IG_RS_LIVE
            && ig_rs_send_models(s, s->clients[i].sock) != 0)
        {
            ig_rs_disconnect(s, i, "models_send_failed");
        }
    }

    ig_blog("info", "reload_done", "models=%u added=%u", s->nmodels,
            s->nmodels - before);
    ig_baudit_reload_done(s->nmodels, s->nmodels - before);

    if (s->reload_again) {
        s->reload_again = 0;
        ig_rs_reload(s);
    }
}


/*
 * Requests past their queue timeout are answered here, on time, even
 * while a model's runner is busy with a long batch (the runner would
 * answer them only when it next looks at its queue).
 */
static void
ig_rs_sweep(ig_rs_t *s)
{
    uint32_t  i, n;
    uint64_t  v, now;

    if (read(s->sweep_fd, &v, sizeof(v)) < 0) {
        /* EAGAIN */
    }

    now = ig_clock_ns();

    for (i = 0; i < s->nmodels; i++) {
        if (s->batchers[i] == NULL) {
            continue;
        }

        n = ig_batcher_expire(s->batchers[i], now, s->expired,
                              s->conf->queue_max);
        if (n) {
            ig_rs_done(s, s->expired, n, IG_RING_EQUEUE_TIMEOUT, 0, now, 0);
        }
    }
}


static int
ig_rs_sweep_start(ig_rs_t *s)
{
    uint64_t           ns;
    struct itimerspec  its;

    s->sweep_fd = -1;

    if (s->conf->queue_timeout_us == 0) {
        return 0;
    }

    s->expired = calloc(s->conf->queue_max, sizeof(ig_breq_t));
    s->sweep_fd = timerfd_create(CLOCK_MONOTONIC,
                                 TFD_NONBLOCK | TFD_CLOEXEC);
    if (s->expired == NULL || s->sweep_fd < 0) {
        return -1;
    }

    /* a quarter of the timeout: answered within 125% of it, 1 ms apart */
    ns = (uint64_t) s->conf->queue_timeout_us * 250;
    if (ns < 1000000) {
        ns = 1000000;
    }

    its.it_interval.tv_sec = ns / 1000000000;
    its.it_interval.tv_nsec = ns % 1000000000;
    its.it_value = its.it_interval;

    if (timerfd_settime(s->sweep_fd, 0, &its, NULL) != 0) {
        return -1;
    }

    return ig_rs_epoll_add(s, s->sweep_fd, EPOLLIN, IG_RS_EV_SWEEP, 0, 0);
}


static void
ig_rs_unlink_socket(ig_rs_t *s)
{
    struct stat  st;

    /* only our own socket: another backend may have taken the path */
    if (lstat(s->conf->socket_path, &st) == 0 && st.st_dev == s->sock_dev
        && st.st_ino == s->sock_ino)
    {
        unlink(s->conf->socket_path);
    }
}


static void
ig_rs_drain(ig_rs_t *s)
{
    uint32_t  i;

    s->draining = 1;

    epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->lfd, NULL);
    close(s->lfd);
    s->lfd = -1;
    ig_rs_unlink_socket(s);

    for (i = 0; i < s->nmodels; i++) {
        if (s->batchers[i]) {
            ig_batcher_drain(s->batchers[i]);
        }
    }

    ig_blog("info", "drain", "models=%u", s->nmodels);
}


/* 1 when nothing is queued, running or held by the backend */
static int
ig_rs_drained(ig_rs_t *s)
{
    uint32_t  i, n;

    n = 0;

    for (i = 0; i < s->nmodels; i++) {
        if (s->batchers[i]) {
            n += ig_batcher_pending(s->batchers[i]);
        }
    }

    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->nclients; i++) {
        n += s->clients[i].inflight;
    }
    pthread_mutex_unlock(&s->lock);

    return n == 0;
}


static int
ig_rs_signal(ig_rs_t *s)
{
    struct signalfd_siginfo  si;

    while (read(s->sigfd, &si, sizeof(si)) == (ssize_t) sizeof(si)) {

        switch (si.ssi_signo) {

        case SIGHUP:
            ig_rs_reload(s);
            break;

        case SIGTERM:
        case SIGINT:
            if (s->draining) {
                ig_blog("warn", "drain_abort", "signal=%u", si.ssi_signo);
                return -1;
            }

            ig_rs_drain(s);
            ig_baudit_drain(s->nmodels, (int) si.ssi_signo);
            break;

        default:
            break;
        }
    }

    return 0;
}


static int
ig_rs_region(ig_rs_t *s)
{
    uint64_t  gen, size;

    if (getrandom(&gen, sizeof(gen), 0) != sizeof(gen)) {
        gen = ig_clock_ns() ^ ((uint64_t) getpid() << 32);
    }

    gen |= 1;                         /* never 0: "no backend yet" */

    /* one client's region; each client gets its own at accept */
    size = ig_ring_layout(&s->rg, 1, s->conf->slots, s->conf->slot_bytes,
                          gen);
    s->nclients = s->conf->clients;

    if (size == 0 || s->nclients == 0
        || s->nclients > IG_RING_MAX_CLIENTS
        || size * s->nclients > IG_RS_REGION_MAX)
    {
        ig_blog("error", "region_failed", "reason=\"--clients, --slots or "
                "--slot-bytes out of range\" bytes=%llu",
                (unsigned long long) size * s->nclients);
        return -1;
    }

    ig_blog("info", "region", "bytes=%llu per_client=yes clients=%u "
            "slots=%u slot_bytes=%llu generation=%016llx",
            (unsigned long long) size, s->nclients, s->rg.nslots,
            (unsigned long long) s->rg.slot_bytes,
            (unsigned long long) s->rg.generation);

    return 0;
}


static int
ig_rs_listen(ig_rs_t *s, uid_t uid, gid_t gid)
{
    int                 fd, probe;
    mode_t              um;
    struct stat         st;
    struct sockaddr_un  sa;
    char                q[600];
    const char         *path = s->conf->socket_path;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        ig_blog("error", "listen_failed", "reason=\"--socket path longer "
                "than %zu bytes\"", sizeof(sa.sun_path) - 1);
        return -1;
    }

    memcpy(sa.sun_path, path, strlen(path));

    /* a stale socket goes; a live one or any other file stays */
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            ig_blog("error", "listen_failed", "reason=\"--socket path "
                    "exists and is not a socket\"");
            return -1;
        }

        probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *) &sa,
                                  sizeof(sa)) == 0)
        {
            close(probe);
            ig_blog("error", "listen_failed", "reason=\"another backend "
                    "listens on --socket\"");
            return -1;
        }

        if (probe >= 0) {
            close(probe);
        }

        if (errno != ECONNREFUSED) {
            ig_blog("error", "listen_failed", "reason=\"--socket exists, "
                    "probe failed\" errno=%d", errno);
            return -1;
        }

        if (unlink(path) != 0) {
            ig_blog("error", "listen_failed", "reason=\"cannot remove "
                    "stale socket\" errno=%d", errno);
            return -1;
        }

        ig_blog("info", "stale_socket_removed", "socket=%s",
                ig_blogq(q, sizeof(q), path));
    }

    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }

    /* 0660 from the start: no window with a wider mode */
    um = umask(0117);
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        umask(um);
        ig_blog("error", "listen_failed", "reason=bind errno=%d", errno);
        close(fd);
        return -1;
    }
    umask(um);

    if ((uid != (uid_t) -1 && chown(path, uid, gid) != 0)
        || listen(fd, 128) != 0 || lstat(path, &st) != 0)
    {
        ig_blog("error", "listen_failed", "errno=%d", errno);
        unlink(path);
        close(fd);
        return -1;
    }

    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;
    s->lfd = fd;

    return 0;
}


static int
ig_rs_user(const char *user, uid_t *uid, gid_t *gid)
{
    struct passwd  *pw;

    *uid = (uid_t) -1;
    *gid = (gid_t) -1;

    if (user == NULL) {
        return 0;
    }

    if (geteuid() != 0) {
        ig_blog("error", "user_failed", "reason=\"--user needs root\"");
        return -1;
    }

    pw = getpwnam(user);
    if (pw == NULL) {
        ig_blog("error", "user_failed", "reason=\"no such user\"");
        return -1;
    }

    *uid = pw->pw_uid;
    *gid = pw->pw_gid;

    return 0;
}


int
ig_rs_run(ig_rs_conf_t *conf)
{
    int                  n, k, rc;
    uid_t                uid;
    gid_t                gid;
    uint32_t             i, type, idx, egen;
    sigset_t             sigs;
    struct sigaction     sa;
    ig_rs_t             *s;
    struct epoll_event   evs[64];
    char                 err[512], q[600];
    ig_batch_stats_t     st;

    s = &ig_rs_server;
    memset(s, 0, sizeof(*s));
    s->conf = conf;
    s->start_ns = ig_clock_ns();
    s->lfd = -1;
    pthread_mutex_init(&s->lock, NULL);

    /* before any thread starts: they all inherit the mask */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    s->sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    s->reload_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    s->sweep_fd = -1;

    ig_rs_main_tid = (pid_t) syscall(SYS_gettid);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = ig_rs_forward;
    sa.sa_flags = SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->sigfd < 0 || s->epfd < 0 || s->reload_efd < 0) {
        ig_blog("error", "start_failed", "errno=%d", errno);
        return 1;
    }

    if (ig_rs_user(conf->user, &uid, &gid) != 0) {
        goto failed;
    }

    if (ig_reg_scan(conf->reg, conf->ex, 1, ig_rs_apply_now, s, err,
                    sizeof(err))
        != 0)
    {
        ig_blog("error", "model_refused", "err=%s",
                ig_blogq(q, sizeof(q), err));
        ig_baudit_start_failed(err);
        goto failed;
    }

    if (ig_rs_region(s) != 0) {
        goto failed;
    }

    /* the uid peers are checked against: ours once --user took effect */
    s->uid = (uid != (uid_t) -1) ? uid : geteuid();

    s->clients = calloc(s->nclients, sizeof(ig_rs_client_t));
    if (s->clients == NULL) {
        goto failed;
    }

    for (i = 0; i < s->nclients; i++) {
        s->clients[i].sock = -1;
        s->clients[i].memfd = -1;
    }

    for (i = 0; i < s->nclients; i++) {
        s->clients[i].owned = calloc(s->rg.nslots, 1);
        if (s->clients[i].owned == NULL) {
            goto failed;
        }
    }

    if (ig_rs_listen(s, uid, gid) != 0) {
        goto failed;
    }

    if (uid != (uid_t) -1
        && (setgroups(0, NULL) != 0 || setgid(gid) != 0
            || setuid(uid) != 0))
    {
        ig_blog("error", "user_failed", "errno=%d", errno);
        goto failed;
    }

    if (ig_rs_epoll_add(s, s->lfd, EPOLLIN, IG_RS_EV_LISTEN, 0, 0) != 0
        || ig_rs_epoll_add(s, s->sigfd, EPOLLIN, IG_RS_EV_SIGNAL, 0, 0)
           != 0
        || ig_rs_epoll_add(s, s->reload_efd, EPOLLIN, IG_RS_EV_RELOAD, 0, 0)
           != 0
        || ig_rs_sweep_start(s) != 0)
    {
        goto failed;
    }

    ig_blog("info", "ready", "socket=%s models=%u max_batch=%u "
            "max_delay_us=%u queue_timeout_us=%u queue_max=%u "
            "inline_us=%u ring_version=%u",
            ig_blogq(q, sizeof(q), conf->socket_path), s->nmodels,
            conf->max_batch, conf->max_delay_us, conf->queue_timeout_us,
            conf->queue_max, conf->inline_us, IG_RING_VERSION);

    rc = 0;

    for ( ;; ) {
        if (s->draining && ig_rs_drained(s)) {
            break;
        }

        n = epoll_wait(s->epfd, evs, 64, s->draining ? 2 : -1);

        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            ig_blog("error", "epoll_failed", "errno=%d", errno);
            rc = 1;
            break;
        }

        for (k = 0; k < n; k++) {
            type = (uint32_t) (evs[k].data.u64 >> 56);
            egen = (uint32_t) (evs[k].data.u64 >> 32) & 0xffffff;
            idx = (uint32_t) evs[k].data.u64;

            if ((type == IG_RS_EV_SQ || type == IG_RS_EV_CTL)
                && (s->clients[idx].state != IG_RS_LIVE
                    || (s->clients[idx].gen & 0xffffff) != egen))
            {
                continue;
            }

            switch (type) {

            case IG_RS_EV_LISTEN:
                ig_rs_accept(s);
                break;

            case IG_RS_EV_SIGNAL:
                if (ig_rs_signal(s) != 0) {
                    rc = 1;
                    goto done;
                }
                break;

            case IG_RS_EV_SQ:
                ig_rs_intake(s, idx);
                break;

            case IG_RS_EV_RELOAD:
                ig_rs_reload_end(s, 1);
                break;

            case IG_RS_EV_SWEEP:
                ig_rs_sweep(s);
                break;

            case IG_RS_EV_CTL:
                ig_rs_ctl(s, idx, evs[k].events);
                break;
            }
        }
    }

    if (0) {
failed:
        rc = 1;
    }

done:

    ig_rs_reload_end(s, 0);

    if (!s->reloading) {
        free(s->results);
    }

    if (s->lfd >= 0) {
        ig_rs_unlink_socket(s);
        close(s->lfd);
    }

    for (i = 0; i < s->nmodels; i++) {
        if (s->batchers[i] == NULL) {
            continue;
        }

        ig_batcher_stats(s->batchers[i], &st);
        ig_blog("info", "model_stats", "id=%u batches=%llu rows=%llu "
                "timeouts=%llu full=%llu failed=%llu inlined=%llu", i,
                (unsigned long long) st.batches,
                (unsigned long long) st.rows,
                (unsigned long long) st.timeouts,
                (unsigned long long) st.full,
                (unsigned long long) st.failed,
                (unsigned long long) st.inlined);

        ig_batcher_destroy(s->batchers[i]);
    }

    for (i = 0; s->clients && i < s->nclients; i++) {
        if (s->clients[i].state == IG_RS_LIVE) {
            close(s->clients[i].sock);
            close(s->clients[i].sq_efd);
            close(s->clients[i].cq_efd);
        }

        ig_rs_release(s, &s->clients[i]);
        free(s->clients[i].owned);
    }

    free(s->clients);

    close(s->sigfd);
    close(s->reload_efd);

    if (s->sweep_fd >= 0) {
        close(s->sweep_fd);
    }

    free(s->expired);
    close(s->epfd);

    ig_blog("info", "exit", "code=%d", rc);

    return rc;
}
