
/*
 * Copyright (C) infergate authors
 *
 * Taking and answering one client's ring entries without trusting the
 * shared region (see ring_queue.h).
 */


#include <string.h>

#include "ring_queue.h"


int
ig_rq_take(ig_rq_cursor_t *c, void *base, const ig_ring_region_t *rg,
    uint32_t client, uint8_t *owned, const ig_rq_model_t *models,
    uint32_t nmodels, ig_rq_req_t *req, uint32_t *status)
{
    uint32_t          tail, slot, n;
    uint64_t          cap, need;
    ig_ring_slot_t    h;
    ig_ring_queue_t  *sq;
    const ig_rq_model_t  *m;

    n = rg->nslots;
    sq = ig_ring_sq(base, rg, client);

    tail = __atomic_load_n(&sq->tail, __ATOMIC_ACQUIRE);

    if (tail == c->sq_head) {
        return IG_RQ_EMPTY;
    }

    if (tail - c->sq_head > n) {
        return IG_RQ_CORRUPT;
    }

    slot = __atomic_load_n(&sq->entries[c->sq_head & (n - 1)],
                           __ATOMIC_RELAXED);
    c->sq_head++;
    __atomic_store_n(&sq->head, c->sq_head, __ATOMIC_RELEASE);

    if (slot >= n || owned[slot]) {
        /* no slot of this client we could answer without harm */
        return IG_RQ_SKIPPED;
    }

    owned[slot] = 1;

    /* one copy; the worker may keep writing, the checks use ours */
    memcpy(&h, ig_ring_slot(base, rg, client, slot), sizeof(h));
    __atomic_signal_fence(__ATOMIC_SEQ_CST);

    memset(req, 0, sizeof(*req));
    req->tag = h.tag;
    req->slot = slot;
    req->model_id = h.model_id;
    req->rows = h.rows;
    req->in_floats = h.in_floats;

    if (h.model_id >= nmodels || !models[h.model_id].ready) {
        *status = IG_RING_ENOMODEL;
        return IG_RQ_TAKEN;
    }

    m = &models[h.model_id];
    cap = ig_ring_slot_floats(rg);
    need = (uint64_t) h.rows * m->nfeatures;

    if (h.rows == 0 || need != h.in_floats || need > cap
        || (uint64_t) h.rows * m->noutputs > cap)
    {
        *status = IG_RING_EBADREQ;
        return IG_RQ_TAKEN;
    }

    req->out_floats = h.rows * m->noutputs;
    *status = IG_RING_OK;

    return IG_RQ_TAKEN;
}


int
ig_rq_complete(ig_rq_cursor_t *c, void *base, const ig_ring_region_t *rg,
    uint32_t client, uint8_t *owned, uint32_t slot, uint32_t status,
    uint32_t out_floats, uint32_t batch_rows, uint32_t queue_us,
    uint32_t run_us)
{
    uint32_t          head, n;
    ig_ring_slot_t   *s;
    ig_ring_queue_t  *cq;

    n = rg->nslots;

    if (slot >= n || !owned[slot]) {
        return -2;
    }

    owned[slot] = 0;

    s = ig_ring_slot(base, rg, client, slot);
    s->status = status;
    s->out_floats = (status == IG_RING_OK) ? out_floats : 0;
    s->batch_rows = batch_rows;
    s->queue_us = queue_us;
    s->run_us = run_us;

    cq = ig_ring_cq(base, rg, client);
    head = __atomic_load_n(&cq->head, __ATOMIC_ACQUIRE);

    /* at most nslots answers are ever unread: "full" means corrupt */
    if (c->cq_tail - head >= n) {
        return -1;
    }

    __atomic_store_n(&cq->entries[c->cq_tail & (n - 1)], slot,
                     __ATOMIC_RELAXED);
    c->cq_tail++;
    __atomic_store_n(&cq->tail, c->cq_tail, __ATOMIC_RELEASE);

    return 0;
}


void
ig_rq_reset(ig_rq_cursor_t *c, void *base, const ig_ring_region_t *rg,
    uint32_t client)
{
    ig_ring_queue_t  *sq, *cq;

    sq = ig_ring_sq(base, rg, client);
    cq = ig_ring_cq(base, rg, client);

    __atomic_store_n(&sq->head, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&sq->tail, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&cq->head, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&cq->tail, 0, __ATOMIC_RELAXED);

    /* both consumers start asleep: the first push rings */
    __atomic_store_n(&sq->sleeping, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&cq->sleeping, 1, __ATOMIC_RELAXED);

    c->sq_head = 0;
    c->cq_tail = 0;
}
