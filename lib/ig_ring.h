
/*
 * Copyright (C) infergate authors
 */

/*
 * The ring protocol between nginx workers and infergate-backend: the one
 * header both sides build from.  nginx-free and CUDA-free.
 *
 * Control channel.  The backend listens on a unix SOCK_SEQPACKET socket.
 * A worker connects at init_process and receives IG_CTL_HELLO carrying,
 * as SCM_RIGHTS, three fds: its own region (0600), its submission
 * doorbell and its completion doorbell (eventfds).  The backend lets a
 * peer in only if its SO_PEERCRED uid or gid is allowed, and bounds the
 * connections one pid and one uid may hold; a refused peer's socket is
 * closed before any message.  Then IG_CTL_MODELS
 * lists the models; it is sent again after every model reload.  The
 * socket is the liveness channel: EOF on either side means the peer is
 * gone.  The backend then reclaims the worker's slots; the worker fails
 * its in-flight requests and reconnects with backoff.  A restarted
 * backend has a new generation, so stale slots are never confused.
 *
 * Region (version 2 on).  Every connection gets a region of its own, a fresh
 * memfd holding one ig_ring_region_t header (nclients == 1), then that
 * client's one area at client_off (area index 0, whatever the client
 * index in IG_CTL_HELLO, which is the backend's number for logs) holding
 * its queue pair and its slots; a peer can map no other client's memory:
 *
 *     ig_ring_queue_t sq   (worker produces slot indexes, backend consumes)
 *     ig_ring_queue_t cq   (backend produces slot indexes, worker consumes)
 *     slots[nslots]        (slot_bytes each: ig_ring_slot_t + data)
 *
 * Each queue has one producer and one consumer (io_uring ordering): the
 * producer writes the entry, then publishes tail with a release store;
 * the consumer reads tail with an acquire load, reads entries, then
 * publishes head with a release store.  A slot belongs to the worker
 * until its index is pushed on sq, then to the backend until its index
 * comes back on cq.
 *
 * Doorbells (version 3).  The consumer of a queue owns its "sleeping"
 * word, beside head: 1 asks the producer to write 1 to the queue's
 * eventfd after its next push, 0 says "I am draining, I will see it".
 * The consumer stores 0 when it starts to drain (ig_ring_awake), and
 * when it finds the queue empty it stores 1, issues a full fence and
 * loads tail once more (ig_ring_sleep); only if that tail is still its
 * head may it block on the eventfd.  The producer stores tail (release),
 * issues a full fence and loads sleeping (ig_ring_need_wake); it rings
 * only if it reads 1.  That is Dekker's pattern: with a seq_cst fence
 * between each side's store and load, at least one side sees the
 * other's store, so either the consumer sees the new tail and does not
 * block, or the producer sees 1 and rings: no wake-up is lost.  A stale
 * 1 only costs a spare doorbell; both sides start at 1.  The eventfds
 * are edge-triggered in epoll on both sides (nginx's EPOLLET, the
 * backend's EPOLLET), so neither reads the counter: every write is an
 * event, and a write that would overflow the counter (2^64 - 2 writes)
 * only fails with EAGAIN.  A worker that writes the word wrong (0 for
 * ever) only stops its own doorbells: its own requests wait; the
 * backend reads the cq word as a hint and writes the sq word for its
 * own use, and trusts neither.
 *
 * Version.  IG_RING_VERSION names the layout of the region and of every
 * control message; it changes with any of them.  A worker that reads a
 * HELLO of another version logs it, sends IG_CTL_VERSION (its own
 * version) and closes; the backend logs "ring_version_mismatch" for any
 * control message whose version is not its own.
 *
 * The backend trusts nothing in the region: it copies a slot's header
 * before checking it, and checks every index, count and model id.
 */

#ifndef _IG_RING_H_INCLUDED_
#define _IG_RING_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>

#include "ig_tensor.h"


#define IG_RING_MAGIC          0x31474e4952474955ULL   /* "UIGRING1" */
#define IG_RING_VERSION        3       /* 3: doorbell words, STATS grew */
#define IG_RING_CACHELINE      64

#define IG_RING_MAX_CLIENTS    256
#define IG_RING_MAX_SLOTS      4096                    /* per client, pow2 */
#define IG_RING_MAX_MODELS     64
#define IG_RING_VERSION_MAX    16


/* slot status, written by the backend before the slot goes on cq */
typedef enum {
    IG_RING_OK = 0,
    IG_RING_EBADREQ,          /* header failed a check: bad ids, counts  */
    IG_RING_ENOMODEL,         /* model id unknown or unloaded            */
    IG_RING_EQUEUE_FULL,      /* load shedding: 503                      */
    IG_RING_EQUEUE_TIMEOUT,   /* older than --queue-timeout-us: 503      */
    IG_RING_EMODEL,           /* the model failed: 500                   */
    IG_RING_ESHUTDOWN         /* draining for exit: 503                  */
} ig_ring_status_e;


typedef struct {
    uint32_t                    head;        /* consumer's line           */
    uint32_t                    sleeping;    /* consumer's: 1 ring me     */
    uint8_t                     pad0[IG_RING_CACHELINE - 8];
    uint32_t                    tail;
    uint8_t                     pad1[IG_RING_CACHELINE - 4];
    uint32_t                    entries[];   /* nslots, mask = nslots - 1 */
} ig_ring_queue_t;


typedef struct {
    /* written by the worker before the push on sq */
    uint64_t                    tag;         /* worker's request number   */
    uint32_t                    model_id;    /* index in IG_CTL_MODELS    */
    uint32_t                    rows;
    uint32_t                    in_floats;   /* rows * nfeatures          */
    uint32_t                    reserved0;
    uint64_t                    submit_ns;   /* ig_clock_ns() (ig_clock.h) */

    /* written by the backend before the push on cq */
    uint32_t                    status;      /* ig_ring_status_e          */
    uint32_t                    out_floats;  /* rows * noutputs           */
    uint32_t                    batch_rows;  /* rows in the batch it ran  */
    uint32_t                    queue_us;    /* waited before the batch   */
    uint32_t                    run_us;      /* the batch's model time    */
    uint32_t                    reserved1;

    /*
     * data: in_floats input floats; the backend writes out_floats output
     * floats over them, from the start of data.
     */
    float                       data[];
} ig_ring_slot_t;


typedef struct {
    uint64_t                    magic;       /* IG_RING_MAGIC             */
    uint32_t                    version;     /* IG_RING_VERSION           */
    uint32_t                    header_bytes;
    uint64_t                    generation;  /* new at every backend start */
    uint64_t                    region_bytes;
    uint32_t                    nclients;
    uint32_t                    nslots;      /* per client, power of two  */
    uint64_t                    slot_bytes;  /* header + data, 64-aligned */
    uint64_t                    client_off;
    uint64_t                    client_stride;
    uint64_t                    sq_off;      /* within a client's area    */
    uint64_t                    cq_off;
    uint64_t                    slots_off;
} ig_ring_region_t;


/* control messages; the socket is SOCK_SEQPACKET, one message per send */

typedef enum {
    IG_CTL_HELLO = 1,         /* backend → worker, with 3 fds             */
    IG_CTL_MODELS,            /* backend → worker                         */
    IG_CTL_STATS_REQ,         /* worker → backend (metrics)               */
    IG_CTL_STATS,             /* backend → worker                         */
    IG_CTL_VERSION            /* worker → backend: HELLO's version refused */
} ig_ctl_type_e;


typedef struct {
    uint32_t                    type;        /* IG_CTL_HELLO              */
    uint32_t                    version;     /* IG_RING_VERSION           */
    uint64_t                    generation;
    uint32_t                    client;      /* backend's index, for logs */
    uint32_t                    pid;         /* backend pid, for logs     */
    ig_ring_region_t            region;      /* copy; mapped one wins     */
} ig_ctl_hello_t;


typedef struct {
    uint32_t                    id;          /* model_id in slots         */
    uint32_t                    ready;
    char                        name[IG_MODEL_NAME_MAX];
    char                        version[IG_RING_VERSION_MAX];
    ig_model_meta_t             meta;
} ig_ctl_model_t;


typedef struct {
    uint32_t                    type;        /* IG_CTL_MODELS             */
    uint32_t                    nmodels;     /* ≤ IG_RING_MAX_MODELS      */
    uint32_t                    max_batch;
    uint32_t                    reserved;
    char                        device[IG_DEVICE_NAME_MAX]; /* ig_exec_t name */
    ig_ctl_model_t              models[];
} ig_ctl_models_t;


/*
 * IG_CTL_STATS_REQ (worker → backend) is this header alone; the backend
 * answers on the same socket with IG_CTL_STATS.  A worker asks about
 * once a second for the metrics zone; the backend answers from counters
 * it keeps with atomics, never blocking its epoll thread (a reply that
 * does not fit the socket buffer is dropped: the next ask gets one).
 */
typedef struct {
    uint32_t                    type;        /* IG_CTL_STATS_REQ          */
    uint32_t                    version;     /* IG_RING_VERSION           */
} ig_ctl_stats_req_t;


/* model run time histogram: IG_STATS_BUCKETS - 1 bounds, then +Inf */
#define IG_STATS_BUCKETS       16
#define IG_STATS_NSTATUS       8             /* > every ig_ring_status_e  */


#define IG_RING_SIGNER_MAX     64            /* = IG_REG_SIGNER_MAX       */


/* one model id's figures since the backend started; fixed size */
typedef struct {
    uint32_t                    id;          /* model_id in slots         */
    uint32_t                    ready;
    char                        name[IG_MODEL_NAME_MAX];
    char                        version[IG_RING_VERSION_MAX];
    uint64_t                    requests;    /* taken from the ring       */
    uint64_t                    rows;        /* rows of those requests    */
    uint64_t                    batches;     /* model runs                */
    uint64_t                    failures[IG_STATS_NSTATUS];
                                             /* requests by status; [0]=0 */
    uint64_t                    queue_depth; /* requests queued, running  */
    uint64_t                    run_count;   /* = batches that ran        */
    uint64_t                    run_sum_us;
    uint64_t                    run_buckets[IG_STATS_BUCKETS];
                                             /* per bucket, not summed up */
    /* for the statistics extension (GET /v2/models/{m}/stats) */
    uint64_t                    success;     /* requests answered OK      */
    uint64_t                    queue_ns;    /* their time queued, summed */
    uint64_t                    compute_ns;  /* their batch's run, summed */
    uint64_t                    last_ms;     /* last OK answer, ms epoch  */
    uint8_t                     sha256[32];  /* the model file's SHA-256; */
                                             /* zeros: none (a builtin)   */
    char                        signer[IG_RING_SIGNER_MAX]; /* "": unsigned */
} ig_ctl_model_stats_t;


/* IG_CTL_STATS: this header, then nmodels ig_ctl_model_stats_t */
typedef struct {
    uint32_t                    type;        /* IG_CTL_STATS              */
    uint32_t                    version;     /* IG_RING_VERSION           */
    uint32_t                    nmodels;     /* ≤ IG_RING_MAX_MODELS      */
    uint32_t                    nbuckets;    /* IG_STATS_BUCKETS          */
    uint64_t                    generation;
    uint64_t                    uptime_ms;
    uint64_t                    load_failures; /* models refused, ever    */
    uint64_t                    reloads;     /* SIGHUP reloads done       */
    char                        device[IG_DEVICE_NAME_MAX]; /* ig_exec_t name */
    uint64_t                    run_bounds_us[IG_STATS_BUCKETS - 1];
    uint64_t                    reserved;
    uint64_t                    signature_failures; /* loads refused for */
                                             /* a bad or missing signature */
    uint64_t                    gpu_mem_free;  /* bytes; both 0: no GPU   */
    uint64_t                    gpu_mem_total;
    ig_ctl_model_stats_t        models[];
} ig_ctl_stats_t;


#define IG_CTL_STATS_MAX                                                     \
    (sizeof(ig_ctl_stats_t)                                                  \
     + IG_RING_MAX_MODELS * sizeof(ig_ctl_model_stats_t))


/* queue operations; n is the queue's slot count (a power of two) */

static inline int
ig_ring_push(ig_ring_queue_t *q, uint32_t n, uint32_t v)
{
    uint32_t  head, tail;

    tail = q->tail;                                    /* ours */
    head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);

    if (tail - head >= n) {
        return -1;                                     /* full */
    }

    q->entries[tail & (n - 1)] = v;
    __atomic_store_n(&q->tail, tail + 1, __ATOMIC_RELEASE);

    return 0;
}


static inline int
ig_ring_pop(ig_ring_queue_t *q, uint32_t n, uint32_t *v)
{
    uint32_t  head, tail;

    head = q->head;                                    /* ours */
    tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);

    if (head == tail) {
        return -1;                                     /* empty */
    }

    if (tail - head > n) {
        return -2;                                     /* corrupt */
    }

    *v = __atomic_load_n(&q->entries[head & (n - 1)], __ATOMIC_RELAXED);
    __atomic_store_n(&q->head, head + 1, __ATOMIC_RELEASE);

    return 0;
}


/*
 * Doorbells (see the top).  The producer calls ig_ring_need_wake once
 * after its pushes and writes the eventfd if it returns 1.  The consumer
 * calls ig_ring_awake before it drains and ig_ring_sleep(head) when it
 * found the queue empty: 1 means an entry came meanwhile (drain again),
 * 0 that it may block.
 */
static inline int
ig_ring_need_wake(ig_ring_queue_t *q)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    return __atomic_load_n(&q->sleeping, __ATOMIC_RELAXED) != 0;
}


static inline void
ig_ring_awake(ig_ring_queue_t *q)
{
    __atomic_store_n(&q->sleeping, 0, __ATOMIC_RELAXED);
}


static inline int
ig_ring_sleep(ig_ring_queue_t *q, uint32_t head)
{
    __atomic_store_n(&q->sleeping, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    if (__atomic_load_n(&q->tail, __ATOMIC_ACQUIRE) != head) {
        __atomic_store_n(&q->sleeping, 0, __ATOMIC_RELAXED);
        return 1;
    }

    return 0;
}


static inline ig_ring_queue_t *
ig_ring_sq(void *base, const ig_ring_region_t *rg, uint32_t client)
{
    return (ig_ring_queue_t *) ((char *) base + rg->client_off
                                + client * rg->client_stride + rg->sq_off);
}


static inline ig_ring_queue_t *
ig_ring_cq(void *base, const ig_ring_region_t *rg, uint32_t client)
{
    return (ig_ring_queue_t *) ((char *) base + rg->client_off
                                + client * rg->client_stride + rg->cq_off);
}


static inline ig_ring_slot_t *
ig_ring_slot(void *base, const ig_ring_region_t *rg, uint32_t client,
    uint32_t slot)
{
    return (ig_ring_slot_t *) ((char *) base + rg->client_off
                               + client * rg->client_stride + rg->slots_off
                               + slot * rg->slot_bytes);
}


/* floats a slot's data holds */
static inline uint64_t
ig_ring_slot_floats(const ig_ring_region_t *rg)
{
    return (rg->slot_bytes - sizeof(ig_ring_slot_t)) / sizeof(float);
}


/*
 * Lays out a region for nclients × nslots slots of slot_bytes (rounded
 * up to the cache line); fills rg and returns the region's size, or 0
 * when the numbers are out of range.
 */
static inline uint64_t
ig_ring_layout(ig_ring_region_t *rg, uint32_t nclients, uint32_t nslots,
    uint64_t slot_bytes, uint64_t generation)
{
    uint64_t  qbytes;

    if (nclients == 0 || nclients > IG_RING_MAX_CLIENTS
        || nslots == 0 || nslots > IG_RING_MAX_SLOTS
        || (nslots & (nslots - 1)) != 0
        || slot_bytes < sizeof(ig_ring_slot_t) + sizeof(float)
        || slot_bytes > (64u << 20))
    {
        return 0;
    }

    slot_bytes = (slot_bytes + IG_RING_CACHELINE - 1)
                 & ~(uint64_t) (IG_RING_CACHELINE - 1);

    qbytes = sizeof(ig_ring_queue_t) + nslots * sizeof(uint32_t);
    qbytes = (qbytes + IG_RING_CACHELINE - 1)
             & ~(uint64_t) (IG_RING_CACHELINE - 1);

    rg->magic = IG_RING_MAGIC;
    rg->version = IG_RING_VERSION;
    rg->header_bytes = sizeof(ig_ring_region_t);
    rg->generation = generation;
    rg->nclients = nclients;
    rg->nslots = nslots;
    rg->slot_bytes = slot_bytes;
    rg->client_off = 4096;
    rg->sq_off = 0;
    rg->cq_off = qbytes;
    rg->slots_off = 2 * qbytes;
    rg->client_stride = (2 * qbytes + nslots * slot_bytes + 4095)
                        & ~(uint64_t) 4095;
    rg->region_bytes = rg->client_off + nclients * rg->client_stride;

    return rg->region_bytes;
}


#endif /* _IG_RING_H_INCLUDED_ */
