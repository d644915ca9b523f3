
/*
 * Copyright (C) infergate authors
 *
 * infergate-ringbench: a ring client like an nginx worker.  It connects
 * to infergate-backend, keeps --concurrency requests in flight on a
 * model and measures each one's submit → complete round trip.
 *
 *   infergate-ringbench --socket PATH --model-id N [--requests 100000]
 *       [--concurrency 1] [--rows 1] [--spin] [--timeout-ms 5000]
 *   infergate-ringbench --pingpong [--cross] [--requests 100000]
 *
 * Prints one JSON line: percentiles in µs, req/s, status counts, the
 * largest batch seen, how many identity outputs differed from their
 * input (for the identity model; --no-verify for others) and the
 * syscalls it made per request.  It drives the ring as an nginx worker
 * does (lib/ig_ring.h): the submission doorbell only when the backend's
 * word asks for it, the completion eventfd edge-triggered in epoll and
 * never read.
 *
 * --pingpong: the floor under any eventfd ring.  Two processes pass a
 * token back and forth over two eventfds (write, then a blocking read),
 * both on the first CPU this process may use, or with --cross the child
 * on the second; one JSON line of round trip percentiles.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ig_clock.h"
#include "ig_ring.h"


#define IG_RB_STATUSES  8


static void
die(const char *what)
{
    fprintf(stderr, "infergate-ringbench: %s: %s\n", what,
            errno ? strerror(errno) : "failed");
    exit(1);
}


static int
cmp_u64(const void *a, const void *b)
{
    uint64_t  x = *(const uint64_t *) a, y = *(const uint64_t *) b;

    return x < y ? -1 : x > y;
}


/* the n-th CPU (0-based) of our affinity mask; -1 when there is none */
static int
nth_cpu(int n)
{
    int        cpu;
    cpu_set_t  set;

    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
        return -1;
    }

    for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set) && n-- == 0) {
            return cpu;
        }
    }

    return -1;
}


static void
pin(int cpu)
{
    cpu_set_t  set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);

    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        die("sched_setaffinity");
    }
}


/*
 * The floor: an eventfd round trip between two processes, each blocking
 * in read() as a thread sleeping on its doorbell does.
 */
static int
pingpong(unsigned long requests, int cross)
{
    int        a, b, cpu0, cpu1, status;
    pid_t      pid;
    uint64_t   v, one, t0, t1, start, *lat;
    unsigned long  i, warm;

    cpu0 = nth_cpu(0);
    cpu1 = cross ? nth_cpu(1) : cpu0;

    if (cpu0 < 0 || cpu1 < 0) {
        fprintf(stderr, "infergate-ringbench: --pingpong%s needs %d CPUs "
                "in the affinity mask\n", cross ? " --cross" : "",
                cross ? 2 : 1);
        return 1;
    }

    a = eventfd(0, EFD_CLOEXEC);          /* parent → child */
    b = eventfd(0, EFD_CLOEXEC);          /* child → parent */
    lat = calloc(requests, sizeof(uint64_t));

    if (a < 0 || b < 0 || lat == NULL) {
        die("eventfd");
    }

    warm = requests / 10 + 100;
    one = 1;

    pid = fork();
    if (pid < 0) {
        die("fork");
    }

    if (pid == 0) {
        pin(cpu1);

        for (i = 0; i < requests + warm; i++) {
            if (read(a, &v, sizeof(v)) != sizeof(v)
                || write(b, &one, sizeof(one)) != sizeof(one))
            {
                _exit(1);
            }
        }

        _exit(0);
    }

    pin(cpu0);

    start = ig_clock_ns();

    for (i = 0; i < requests + warm; i++) {
        t0 = ig_clock_ns();

        if (write(a, &one, sizeof(one)) != sizeof(one)
            || read(b, &v, sizeof(v)) != sizeof(v))
        {
            die("pingpong");
        }

        t1 = ig_clock_ns();

        if (i >= warm) {
            lat[i - warm] = t1 - t0;
        }
    }

    t1 = ig_clock_ns();

    waitpid(pid, &status, 0);
    qsort(lat, requests, sizeof(uint64_t), cmp_u64);

    printf("{\"pingpong\":\"%s\",\"cpus\":[%d,%d],\"requests\":%lu,"
           "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
           "\"max_us\":%.2f,\"rt_s\":%.0f}\n",
           cross ? "cross_cpu" : "same_cpu", cpu0, cpu1, requests,
           lat[requests / 2] / 1e3, lat[requests * 9 / 10] / 1e3,
           lat[requests * 99 / 100] / 1e3, lat[requests - 1] / 1e3,
           (requests + warm) * 1e9 / (double) (t1 - start));

    free(lat);

    return 0;
}


/* request number tag into client 0's slot, pushed; returns when sent */

static uint64_t
submit(void *base, const ig_ring_region_t *rg, ig_ring_queue_t *sq,
    uint32_t slot, uint64_t tag, uint32_t model_id, uint32_t rows,
    uint32_t nf)
{
    uint32_t         j;
    uint64_t         now;
    ig_ring_slot_t  *s;

    s = ig_ring_slot(base, rg, 0, slot);
    s->tag = tag;
    s->model_id = model_id;
    s->rows = rows;
    s->in_floats = rows * nf;
    for (j = 0; j < rows * nf; j++) {
        s->data[j] = (float) (tag + j);
    }
    now = ig_clock_ns();
    s->submit_ns = now;
    ig_ring_push(sq, rg->nslots, slot);

    return now;
}


static void
usage(void)
{
    fprintf(stderr, "usage: infergate-ringbench --socket PATH --model-id N "
            "[--requests N] [--concurrency C] [--rows R] [--spin] "
            "[--no-verify] [--timeout-ms MS]\n"
            "       infergate-ringbench --pingpong [--cross] "
            "[--requests N]\n");
    exit(2);
}


int
main(int argc, char **argv)
{
    int                  c, fd, nfds, *fdp, spin, verify, timeout_ms;
    int                  region_fd, sq_efd, cq_efd, ep, pp, cross;
    void                *base;
    char                 buf[65536];
    ssize_t              n;
    uint64_t             one, *lat, t0, t1, nlat, submitted, done;
    uint64_t            *sent, counts[IG_RB_STATUSES], mismatches;
    uint64_t             rings, waits;
    uint32_t             model_id, concurrency, rows, i, slot, nf, no;
    uint32_t             max_batch_seen, j;
    struct epoll_event   ev;
    struct iovec         iov;
    struct msghdr        mh;
    struct cmsghdr      *cm;
    struct sockaddr_un   sa;
    ig_ring_region_t     rg;
    ig_ctl_hello_t       hello;
    ig_ctl_models_t     *models;
    ig_ring_slot_t      *s;
    ig_ring_queue_t     *sq, *cq;
    const char          *path;
    unsigned long        requests;
    union {
        char             b[CMSG_SPACE(3 * sizeof(int))];
        struct cmsghdr   align;
    } ctl;

    static const struct option  opts[] = {
        { "socket",      required_argument, NULL, 's' },
        { "model-id",    required_argument, NULL, 'm' },
        { "requests",    required_argument, NULL, 'n' },
        { "concurrency", required_argument, NULL, 'c' },
        { "rows",        required_argument, NULL, 'r' },
        { "spin",        no_argument,       NULL, 'S' },
        { "no-verify",   no_argument,       NULL, 'V' },
        { "timeout-ms",  required_argument, NULL, 't' },
        { "pingpong",    no_argument,       NULL, 'P' },
        { "cross",       no_argument,       NULL, 'X' },
        { NULL, 0, NULL, 0 }
    };

    path = NULL;
    model_id = 0;
    requests = 100000;
    concurrency = 1;
    rows = 1;
    spin = 0;
    verify = 1;
    timeout_ms = 5000;
    pp = 0;
    cross = 0;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {

        case 's':
            path = optarg;
            break;

        case 'm':
            model_id = (uint32_t) strtoul(optarg, NULL, 10);
            break;

        case 'n':
            requests = strtoul(optarg, NULL, 10);
            break;

        case 'c':
            concurrency = (uint32_t) strtoul(optarg, NULL, 10);
            break;

        case 'r':
            rows = (uint32_t) strtoul(optarg, NULL, 10);
            break;

        case 'S':
            spin = 1;
            break;

        case 'V':
            verify = 0;
            break;

        case 't':
            timeout_ms = atoi(optarg);
            break;

        case 'P':
            pp = 1;
            break;

        case 'X':
            cross = 1;
            break;

        default:
            usage();
        }
    }

    if (pp && requests) {
        return pingpong(requests, cross);
    }

    if (path == NULL || requests == 0 || concurrency == 0 || rows == 0) {
        usage();
    }

    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);

    if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        die("connect");
    }

    /* HELLO with the region and the doorbells */
    memset(&mh, 0, sizeof(mh));
    iov.iov_base = &hello;
    iov.iov_len = sizeof(hello);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctl.b;
    mh.msg_controllen = sizeof(ctl.b);

    n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    cm = CMSG_FIRSTHDR(&mh);

    if (n >= 8 && hello.type == IG_CTL_HELLO
        && hello.version != IG_RING_VERSION)
    {
        ig_ctl_stats_req_t  nak;

        /* tell the backend, so that both sides log the mismatch */
        nak.type = IG_CTL_VERSION;
        nak.version = IG_RING_VERSION;
        if (send(fd, &nak, sizeof(nak), MSG_NOSIGNAL) < 0) {
            /* it learns from the EOF alone */
        }

        fprintf(stderr, "infergate-ringbench: the backend speaks ring "
                "version %u, this tool %u: use one build of both\n",
                hello.version, IG_RING_VERSION);
        return 1;
    }

    if (n != (ssize_t) sizeof(hello) || hello.type != IG_CTL_HELLO
        || cm == NULL || cm->cmsg_type != SCM_RIGHTS)
    {
        errno = 0;
        die("bad HELLO");
    }

    nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    if (nfds != 3) {
        errno = 0;
        die("HELLO without 3 fds");
    }

    fdp = (int *) CMSG_DATA(cm);
    region_fd = fdp[0];
    sq_efd = fdp[1];
    cq_efd = fdp[2];

    n = recv(fd, buf, sizeof(buf), 0);
    models = (ig_ctl_models_t *) buf;

    if (n < (ssize_t) sizeof(ig_ctl_models_t) || models->type != IG_CTL_MODELS
        || (size_t) n < sizeof(ig_ctl_models_t)
                        + models->nmodels * sizeof(ig_ctl_model_t))
    {
        errno = 0;
        die("bad MODELS");
    }

    if (model_id >= models->nmodels) {
        fprintf(stderr, "infergate-ringbench: model id %u of %u\n", model_id,
                models->nmodels);
        return 1;
    }

    nf = models->models[model_id].meta.nfeatures;
    no = models->models[model_id].meta.noutputs;

    base = mmap(NULL, hello.region.region_bytes, PROT_READ | PROT_WRITE,
                MAP_SHARED, region_fd, 0);
    if (base == MAP_FAILED) {
        die("mmap");
    }

    memcpy(&rg, base, sizeof(rg));   /* the mapped header wins */

    if (rg.magic != IG_RING_MAGIC || rg.generation != hello.generation
        || rg.nclients != 1)
    {
        errno = 0;
        die("region header");
    }

    if (concurrency > rg.nslots) {
        concurrency = rg.nslots;
    }

    if ((uint64_t) rows * (nf > no ? nf : no) > ig_ring_slot_floats(&rg)) {
        fprintf(stderr, "infergate-ringbench: %u rows do not fit a slot\n",
                rows);
        return 1;
    }

    /* version 2: the region holds our area alone, at index 0 */
    sq = ig_ring_sq(base, &rg, 0);
    cq = ig_ring_cq(base, &rg, 0);

    lat = calloc(requests, sizeof(uint64_t));
    sent = calloc(rg.nslots, sizeof(uint64_t));
    if (lat == NULL || sent == NULL) {
        die("calloc");
    }

    memset(counts, 0, sizeof(counts));
    nlat = 0;
    submitted = 0;
    done = 0;
    mismatches = 0;
    max_batch_seen = 0;
    one = 1;
    rings = 0;
    waits = 0;

    /* as nginx: the completion doorbell edge-triggered, never read */
    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.u64 = 0;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, cq_efd, &ev) != 0) {
        die("epoll");
    }

    t0 = ig_clock_ns();

    /* the first window: slots 0 .. concurrency-1 */
    for (i = 0; i < concurrency && submitted < requests; i++) {
        sent[i] = submit(base, &rg, sq, i, submitted, model_id, rows, nf);
        submitted++;
    }

    if (ig_ring_need_wake(sq)) {
        rings++;
        if (write(sq_efd, &one, sizeof(one)) < 0) {
            die("doorbell");
        }
    }

    c = 1;

    while (done < submitted) {
        /* drained it and found it empty: ask for a doorbell, look again */
        if (!c && !spin && !ig_ring_sleep(cq, cq->head)) {
            waits++;
            c = epoll_wait(ep, &ev, 1, timeout_ms);
            if (c == 0) {
                fprintf(stderr, "infergate-ringbench: no answer in %d ms "
                        "(%llu of %llu done)\n", timeout_ms,
                        (unsigned long long) done,
                        (unsigned long long) submitted);
                return 1;
            }

            if (c < 0 && errno != EINTR) {
                die("epoll_wait");
            }
        }

        ig_ring_awake(cq);
        c = 0;

        while (ig_ring_pop(cq, rg.nslots, &slot) == 0) {
            t1 = ig_clock_ns();

            if (slot >= rg.nslots) {
                errno = 0;
                die("cq slot out of range");
            }

            s = ig_ring_slot(base, &rg, 0, slot);
            lat[nlat++] = t1 - sent[slot];
            counts[s->status < IG_RB_STATUSES ? s->status : 7]++;
            done++;

            if (s->batch_rows > max_batch_seen) {
                max_batch_seen = s->batch_rows;
            }

            if (verify && s->status == IG_RING_OK) {
                for (j = 0; j < rows * no; j++) {
                    if (s->data[j] != (float) (s->tag + j)) {
                        mismatches++;
                        break;
                    }
                }
            }

            if (submitted < requests) {
                sent[slot] = submit(base, &rg, sq, slot, submitted, model_id,
                                    rows, nf);
                submitted++;
                c = 1;
            }
        }

        if (c && ig_ring_need_wake(sq)) {
            rings++;
            if (write(sq_efd, &one, sizeof(one)) < 0) {
                die("doorbell");
            }
        }

        c = 0;
    }

    t1 = ig_clock_ns();

    qsort(lat, nlat, sizeof(uint64_t), cmp_u64);

    printf("{\"requests\":%llu,\"concurrency\":%u,\"rows\":%u,"
           "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
           "\"max_us\":%.2f,\"req_s\":%.0f,\"ok\":%llu,\"errors\":{",
           (unsigned long long) nlat, concurrency, rows,
           lat[nlat / 2] / 1e3, lat[nlat * 9 / 10] / 1e3,
           lat[nlat * 99 / 100] / 1e3, lat[nlat - 1] / 1e3,
           nlat * 1e9 / (double) (t1 - t0),
           (unsigned long long) counts[IG_RING_OK]);

    for (i = 1, c = 0; i < IG_RB_STATUSES; i++) {
        if (counts[i]) {
            printf("%s\"%u\":%llu", c++ ? "," : "", i,
                   (unsigned long long) counts[i]);
        }
    }

    printf("},\"max_batch_rows\":%u,\"mismatches\":%llu,\"client\":%u,"
           "\"doorbells_per_req\":%.3f,\"waits_per_req\":%.3f}\n",
           max_batch_seen, (unsigned long long) mismatches, hello.client,
           rings / (double) nlat, waits / (double) nlat);

    free(lat);
    free(sent);
    munmap(base, hello.region.region_bytes);
    close(fd);

    return mismatches ? 3 : 0;
}
