
/*
 * Copyright (C) infergate authors
 */

/*
 * Dynamic batching for one model.  Two schedulers (--batching):
 *
 * continuous (the default): batching is free when idle.  A request that
 *   finds the model's queue empty and no batch of it running is run at
 *   once, alone; requests that arrive while a batch runs form the next
 *   one, which starts as soon as the running one ends (Triton's rule with
 *   max_queue_delay 0: wait for the executor, then take what is queued).
 *   A batch waits for more only while the model is busy, never once it is
 *   free: max_delay is not used (a wait after the run, bounded by it, was
 *   measured and cost throughput at every concurrency; docs/backend.md).
 *
 * window: Triton's dynamic batcher with max_queue_delay: a batch runs as
 *   soon as max_batch rows wait, else when the oldest request has waited
 *   max_delay, even alone at idle.
 *
 * In both, a request older than queue_timeout is failed, not run; a full
 * queue refuses at once (load shedding).  One runner thread per model
 * executes it, so a model is called by one thread at a time.
 *
 * Inline (continuous only): the idle case needs no runner at all.  When
 * the model's queue is empty, no batch of it runs and its recent runs
 * took at most inline_us, ig_batcher_claim hands the model to the
 * caller (the ring server's epoll thread), which runs the request on its
 * own thread at once: no hand-off, no second wake-up.  Requests that
 * arrive meanwhile queue and wait for the runner as they would behind
 * any batch; the runner starts them when the claim ends.  The estimate
 * is a moving average of the model's run times, so a model that turns
 * slow (or load that makes batches long) goes back to the runner and the
 * epoll thread is never held longer than about inline_us.
 */

#ifndef _IG_BATCHER_H_INCLUDED_
#define _IG_BATCHER_H_INCLUDED_

#include <stdint.h>

#include "ig_model.h"


typedef struct ig_batcher_s  ig_batcher_t;


typedef enum {
    IG_BATCH_CONTINUOUS = 0,
    IG_BATCH_WINDOW
} ig_batch_mode_e;


typedef struct {
    float               *data;        /* slot data: rows in, rows out   */
    const uint32_t      *alive;       /* the client's generation now    */
    uint64_t             enq_ns;      /* CLOCK_MONOTONIC at intake      */
    uint32_t             gen;         /* the client's generation then   */
    uint32_t             client;
    uint32_t             model;       /* model id, for the figures      */
    uint32_t             slot;
    uint32_t             rows;
    uint32_t             out_floats;
} ig_breq_t;


/*
 * Called from the runner thread without the batcher's lock, once for
 * the n requests of a batch (or n timed out ones); status is an
 * ig_ring_status_e, queue time is start_ns - enq_ns.
 */
typedef void (*ig_batch_done_pt)(void *data, const ig_breq_t *r, uint32_t n,
    uint32_t status, uint32_t batch_rows, uint64_t start_ns,
    uint32_t run_us);


typedef struct {
    uint32_t             max_batch;        /* rows                      */
    uint32_t             max_delay_us;
    uint32_t             queue_timeout_us; /* 0: none                   */
    uint32_t             queue_max;        /* requests                  */
    uint32_t             inline_us;        /* 0: never run inline       */
    ig_batch_done_pt     done;
    void                *data;
} ig_batch_conf_t;


typedef struct {
    uint64_t             batches;
    uint64_t             rows;
    uint64_t             timeouts;
    uint64_t             full;
    uint64_t             failed;
    uint64_t             inlined;          /* runs on the caller's thread */
} ig_batch_stats_t;


/*
 * The scheduler of the batchers created from now on; main sets it once,
 * from --batching, before any batcher (or thread) exists.
 */
void ig_batcher_set_mode(ig_batch_mode_e mode);

/* takes ownership of model; label names it in logs */
ig_batcher_t *ig_batcher_create(ig_model_t *model, ig_exec_t *ex,
    const char *label, const ig_batch_conf_t *conf);

/* 0 queued, -1 queue full (the caller answers IG_RING_EQUEUE_FULL) */
int ig_batcher_submit(ig_batcher_t *b, const ig_breq_t *r);

/*
 * The idle case (see the top): 1 when the caller now holds the model and
 * must call ig_batcher_run_claimed(b, r) next, holding no lock the done
 * callback takes; 0: submit r as usual.
 */
int ig_batcher_claim(ig_batcher_t *b, const ig_breq_t *r);

/* runs r alone on the calling thread, answers it, ends the claim */
void ig_batcher_run_claimed(ig_batcher_t *b, const ig_breq_t *r);

/* a reloaded model with the same row sizes; the old one is freed once
 * no batch uses it */
void ig_batcher_swap(ig_batcher_t *b, ig_model_t *model);

/* from now on run what waits without waiting for more */
void ig_batcher_drain(ig_batcher_t *b);

/*
 * Takes up to max queued requests older than the queue timeout into
 * out (for the caller to answer IG_RING_EQUEUE_TIMEOUT); lets timeouts
 * be answered on time while the runner is busy with a long batch.
 */
uint32_t ig_batcher_expire(ig_batcher_t *b, uint64_t now_ns, ig_breq_t *out,
    uint32_t max);

/* requests queued or running */
uint32_t ig_batcher_pending(ig_batcher_t *b);

void ig_batcher_stats(ig_batcher_t *b, ig_batch_stats_t *st);

/* stops the runner (what is queued is dropped) and frees the model */
void ig_batcher_destroy(ig_batcher_t *b);

#endif /* _IG_BATCHER_H_INCLUDED_ */
