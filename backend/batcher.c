
/*
 * Copyright (C) infergate authors
 *
 * Per-model dynamic batcher and its runner thread (see batcher.h).
 */


#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "batcher.h"
#include "blog.h"
#include "ig_clock.h"
#include "ig_ring.h"


static ig_batch_mode_e  ig_batcher_mode = IG_BATCH_CONTINUOUS;


struct ig_batcher_s {
    pthread_mutex_t      lock;
    pthread_cond_t       cond;
    pthread_t            thread;

    ig_batch_conf_t      conf;
    ig_batch_mode_e      mode;
    ig_exec_t           *ex;
    ig_model_t          *model;       /* current                        */
    ig_model_t          *running;     /* the one a batch uses now       */
    ig_model_t          *retired;     /* swapped out while running      */
    char                 label[96];

    ig_breq_t           *q;           /* queue_max, circular            */
    uint32_t             head;
    uint32_t             n;
    uint64_t             queued_rows;
    uint32_t             busy;        /* requests in the running batch  */
    int                  claimed;     /* a caller runs one inline       */
    int                  draining;
    int                  stop;

    ig_breq_t           *batch;       /* queue_max                      */
    float               *in;
    float               *out;
    size_t               cap_rows;

    uint64_t             avg_run_ns;  /* moving averages; 0: no run yet */
    uint64_t             avg_row_ns;
    uint64_t             inline_ns;   /* conf.inline_us in ns; 0: off   */

    ig_batch_stats_t     stats;
    uint64_t             failed_log_ns;
    uint64_t             failed_unlogged;
};


static void
ig_batcher_wait_until(ig_batcher_t *b, uint64_t ns)
{
    struct timespec  ts;

    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;

    pthread_cond_timedwait(&b->cond, &b->lock, &ts);
}


static int
ig_batcher_grow(ig_batcher_t *b, size_t rows)
{
    float   *in, *out;
    size_t   nf, no;

    if (rows <= b->cap_rows) {
        return 0;
    }

    nf = b->model->meta.nfeatures;
    no = b->model->meta.noutputs;

    in = realloc(b->in, rows * nf * sizeof(float));
    if (in == NULL) {
        return -1;
    }

    b->in = in;

    out = realloc(b->out, rows * no * sizeof(float));
    if (out == NULL) {
        return -1;
    }

    b->out = out;
    b->cap_rows = rows;

    return 0;
}


/* runs one batch of k requests; called without the lock */
static void
ig_batcher_run(ig_batcher_t *b, ig_model_t *m, uint32_t k, uint64_t start)
{
    int          rc;
    size_t       rows, off, nf, no;
    uint32_t     i, status, run_us;
    uint64_t     t0, t1;
    ig_breq_t   *r;
    char         err[256];

    nf = m->meta.nfeatures;
    no = m->meta.noutputs;

    rows = 0;
    for (i = 0; i < k; i++) {
        rows += b->batch[i].rows;
    }

    err[0] = '\0';
    rc = ig_batcher_grow(b, rows);

    if (rc == 0) {
        /* gather: the rows of every request into one input */
        off = 0;
        for (i = 0; i < k; i++) {
            r = &b->batch[i];
            memcpy(b->in + off * nf, r->data, r->rows * nf * sizeof(float));
            off += r->rows;
        }

        t0 = ig_clock_ns();
        rc = ig_model_predict(m, b->ex, b->in, rows, b->out, err,
                              sizeof(err));
        t1 = ig_clock_ns();

    } else {
        snprintf(err, sizeof(err), "out of memory for %zu rows", rows);
        t0 = t1 = ig_clock_ns();
    }

    run_us = (uint32_t) ((t1 - t0) / 1000);
    status = (rc == 0) ? IG_RING_OK : IG_RING_EMODEL;

    if (rc != 0) {
        char  q[300];

        /* at most one line a second for a model that keeps failing */
        if (t1 - b->failed_log_ns >= 1000000000 || b->failed_log_ns == 0) {
            ig_blog("error", "model_failed", "model=%s rows=%zu err=%s "
                    "unlogged=%llu", b->label, rows,
                    ig_blogq(q, sizeof(q), err),
                    (unsigned long long) b->failed_unlogged);
            b->failed_log_ns = t1;
            b->failed_unlogged = 0;

        } else {
            b->failed_unlogged++;
        }
    }

    /* scatter: each request's output rows back into its slot */
    if (rc == 0) {
        off = 0;
        for (i = 0; i < k; i++) {
            r = &b->batch[i];
            memcpy(r->data, b->out + off * no, r->rows * no * sizeof(float));
            off += r->rows;
        }
    }

    b->conf.done(b->conf.data, b->batch, k, status, (uint32_t) rows, start,
                 run_us);

    pthread_mutex_lock(&b->lock);
    b->stats.batches++;
    b->stats.rows += rows;
    if (rc != 0) {
        b->stats.failed += k;
    }

    /* what inlining risks: the run's time, 1/8 of the new one each time */
    t1 -= t0;
    b->avg_run_ns = b->avg_run_ns ? (7 * b->avg_run_ns + t1) / 8 : t1 + 1;
    t1 /= rows ? rows : 1;
    b->avg_row_ns = b->avg_row_ns ? (7 * b->avg_row_ns + t1) / 8 : t1 + 1;
    pthread_mutex_unlock(&b->lock);
}


static void *
ig_batcher_thread(void *arg)
{
    ig_batcher_t  *b = arg;

    uint32_t     k, nexp;
    uint64_t     now, rows, delay_ns, tmo_ns, oldest, until;
    ig_breq_t   *r;
    ig_model_t  *m, *retired;

    delay_ns = (uint64_t) b->conf.max_delay_us * 1000;
    tmo_ns = (uint64_t) b->conf.queue_timeout_us * 1000;

    /* max-delay is µs; the default 50 µs timer slack would add to it */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);

    pthread_mutex_lock(&b->lock);

    while (!b->stop) {
        if (b->n == 0 || b->claimed) {
            /* a claim's end signals when something waits */
            pthread_cond_wait(&b->cond, &b->lock);
            continue;
        }

        now = ig_clock_ns();

        /*
         * Timed out, or its client gone: answer without running.  The
         * queue is in arrival order, so these are at its head.
         */
        nexp = 0;

        while (b->n) {
            r = &b->q[b->head];

            if (!(tmo_ns && now - r->enq_ns > tmo_ns)
                && __atomic_load_n(r->alive, __ATOMIC_ACQUIRE) == r->gen)
            {
                break;
            }

            if (__atomic_load_n(r->alive, __ATOMIC_ACQUIRE) == r->gen) {
                b->stats.timeouts++;
            }

            b->batch[nexp++] = *r;
            b->head = (b->head + 1) % b->conf.queue_max;
            b->n--;
            b->queued_rows -= r->rows;
        }

        if (nexp) {
            b->busy = nexp;
            pthread_mutex_unlock(&b->lock);

            b->conf.done(b->conf.data, b->batch, nexp,
                         IG_RING_EQUEUE_TIMEOUT, 0, now, 0);

            pthread_mutex_lock(&b->lock);
            b->busy = 0;
            continue;
        }

        oldest = b->q[b->head].enq_ns;

        /*
         * window: a partly filled batch waits for company until its
         * oldest request is max_delay old.  continuous: the runner is
         * free, so what is queued runs now; it is either a request that
         * came at idle or a batch that formed while the last one ran
         * and so has waited already, up to that batch's run time.
         */
        if (b->mode == IG_BATCH_WINDOW
            && b->queued_rows < b->conf.max_batch && !b->draining
            && now - oldest < delay_ns)
        {
            until = oldest + delay_ns;
            if (tmo_ns && oldest + tmo_ns + 1000 < until) {
                until = oldest + tmo_ns + 1000;
            }

            ig_batcher_wait_until(b, until);
            continue;
        }

        /* a batch: FIFO while it fits in max_batch rows, at least one */
        k = 0;
        rows = 0;

        while (b->n) {
            r = &b->q[b->head];

            if (k > 0 && rows + r->rows > b->conf.max_batch) {
                break;
            }

            b->batch[k++] = *r;
            rows += r->rows;
            b->head = (b->head + 1) % b->conf.queue_max;
            b->n--;
            b->queued_rows -= r->rows;
        }

        m = b->model;
        b->running = m;
        b->busy = k;
        pthread_mutex_unlock(&b->lock);

        ig_batcher_run(b, m, k, now);

        pthread_mutex_lock(&b->lock);
        b->busy = 0;
        b->running = NULL;
        retired = NULL;

        if (b->retired == m) {
            retired = m;
            b->retired = NULL;
        }

        if (retired) {
            pthread_mutex_unlock(&b->lock);
            ig_model_free(retired);
            pthread_mutex_lock(&b->lock);
        }
    }

    pthread_mutex_unlock(&b->lock);

    return NULL;
}


void
ig_batcher_set_mode(ig_batch_mode_e mode)
{
    ig_batcher_mode = mode;
}


ig_batcher_t *
ig_batcher_create(ig_model_t *model, ig_exec_t *ex, const char *label,
    const ig_batch_conf_t *conf)
{
    ig_batcher_t        *b;
    pthread_condattr_t   ca;

    b = calloc(1, sizeof(ig_batcher_t));
    if (b == NULL) {
        return NULL;
    }

    b->conf = *conf;
    b->mode = ig_batcher_mode;
    b->inline_ns = (b->mode == IG_BATCH_CONTINUOUS)
                   ? (uint64_t) conf->inline_us * 1000 : 0;
    b->ex = ex;
    b->model = model;
    snprintf(b->label, sizeof(b->label), "%s", label);

    b->q = calloc(conf->queue_max, sizeof(ig_breq_t));
    b->batch = calloc(conf->queue_max, sizeof(ig_breq_t));

    if (b->q == NULL || b->batch == NULL
        || ig_batcher_grow(b, conf->max_batch) != 0)
    {
        goto failed;
    }

    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cond, &ca);
    pthread_condattr_destroy(&ca);

    if (pthread_create(&b->thread, NULL, ig_batcher_thread, b) != 0) {
        goto failed;
    }

    return b;

failed:

    free(b->q);
    free(b->batch);
    free(b->in);
    free(b->out);
    free(b);

    return NULL;
}


int
ig_batcher_submit(ig_batcher_t *b, const ig_breq_t *r)
{
    int  wake;

    pthread_mutex_lock(&b->lock);

    if (b->n == b->conf.queue_max) {
        b->stats.full++;
        pthread_mutex_unlock(&b->lock);
        return -1;
    }

    b->q[(b->head + b->n) % b->conf.queue_max] = *r;
    b->n++;
    b->queued_rows += r->rows;

    /*
     * The runner needs a wake only for a first request or a full batch,
     * and none while a claim holds the model: its end wakes it.
     */
    wake = !b->claimed
           && (b->n == 1 || b->queued_rows >= b->conf.max_batch);

    pthread_mutex_unlock(&b->lock);

    if (wake) {
        pthread_cond_signal(&b->cond);
    }

    return 0;
}


int
ig_batcher_claim(ig_batcher_t *b, const ig_breq_t *r)
{
    int       ok;
    uint64_t  est;

    if (b->inline_ns == 0) {
        return 0;
    }

    pthread_mutex_lock(&b->lock);

    /* the first run of a model goes to the runner: its time is unknown */
    est = b->avg_row_ns * r->rows;
    if (est < b->avg_run_ns) {
        est = b->avg_run_ns;
    }

    ok = (b->n == 0 && b->busy == 0 && !b->claimed && !b->stop
          && !b->draining && b->avg_run_ns != 0 && est <= b->inline_ns);

    if (ok) {
        b->claimed = 1;
        b->busy = 1;
        b->running = b->model;
        b->stats.inlined++;
    }

    pthread_mutex_unlock(&b->lock);

    return ok;
}


void
ig_batcher_run_claimed(ig_batcher_t *b, const ig_breq_t *r)
{
    int          wake;
    ig_model_t  *m, *retired;

    /* b->batch and the buffers are ours: the runner waits while claimed */
    m = b->running;
    b->batch[0] = *r;

    ig_batcher_run(b, m, 1, ig_clock_ns());

    pthread_mutex_lock(&b->lock);

    b->claimed = 0;
    b->busy = 0;
    b->running = NULL;
    retired = NULL;

    if (b->retired == m) {
        retired = m;
        b->retired = NULL;
    }

    wake = (b->n != 0);

    pthread_mutex_unlock(&b->lock);

    if (wake) {
        pthread_cond_signal(&b->cond);
    }

    ig_model_free(retired);
}


void
ig_batcher_swap(ig_batcher_t *b, ig_model_t *model)
{
    ig_model_t  *old;

    pthread_mutex_lock(&b->lock);

    old = b->model;
    b->model = model;

    if (old == b->running) {
        b->retired = old;             /* freed by the runner after use */
        old = NULL;
    }

    pthread_mutex_unlock(&b->lock);

    ig_model_free(old);
}


void
ig_batcher_drain(ig_batcher_t *b)
{
    pthread_mutex_lock(&b->lock);
    b->draining = 1;
    pthread_mutex_unlock(&b->lock);
    pthread_cond_signal(&b->cond);
}


uint32_t
ig_batcher_expire(ig_batcher_t *b, uint64_t now_ns, ig_breq_t *out,
    uint32_t max)
{
    uint32_t    n;
    uint64_t    tmo_ns;
    ig_breq_t  *r;

    tmo_ns = (uint64_t) b->conf.queue_timeout_us * 1000;
    if (tmo_ns == 0) {
        return 0;
    }

    n = 0;

    pthread_mutex_lock(&b->lock);

    while (b->n && n < max) {
        r = &b->q[b->head];

        if (now_ns - r->enq_ns <= tmo_ns) {
            break;
        }

        if (__atomic_load_n(r->alive, __ATOMIC_ACQUIRE) == r->gen) {
            b->stats.timeouts++;
        }

        out[n++] = *r;
        b->head = (b->head + 1) % b->conf.queue_max;
        b->n--;
        b->queued_rows -= r->rows;
    }

    pthread_mutex_unlock(&b->lock);

    return n;
}


uint32_t
ig_batcher_pending(ig_batcher_t *b)
{
    uint32_t  n;

    pthread_mutex_lock(&b->lock);
    n = b->n + b->busy;
    pthread_mutex_unlock(&b->lock);

    return n;
}


void
ig_batcher_stats(ig_batcher_t *b, ig_batch_stats_t *st)
{
    pthread_mutex_lock(&b->lock);
    *st = b->stats;
    pthread_mutex_unlock(&b->lock);
}


void
ig_batcher_destroy(ig_batcher_t *b)
{
    pthread_mutex_lock(&b->lock);
    b->stop = 1;
    pthread_mutex_unlock(&b->lock);
    pthread_cond_signal(&b->cond);

    pthread_join(b->thread, NULL);

    ig_model_free(b->model);
    if (b->retired && b->retired != b->model) {
        ig_model_free(b->retired);
    }

    pthread_cond_destroy(&b->cond);
    pthread_mutex_destroy(&b->lock);
    free(b->q);
    free(b->batch);
    free(b->in);
    free(b->out);
    free(b);
}
