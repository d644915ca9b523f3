
/*
 * Copyright (C) infergate authors
 */

/*
 * The backend's side of one client's queue pair, trusting nothing in
 * the region: it keeps its own sq head and cq tail (a worker scribbling
 * on them changes nothing), copies a slot's header before checking it
 * and checks every index, count and model id.  No threads, no fds: the
 * ring server calls it under its lock and the fuzzer calls it alone.
 */

#ifndef _IG_RING_QUEUE_H_INCLUDED_
#define _IG_RING_QUEUE_H_INCLUDED_

#include <stdint.h>

#include "ig_ring.h"


typedef struct {
    uint32_t             sq_head;     /* next sq entry to take          */
    uint32_t             cq_tail;     /* next cq entry to write         */
} ig_rq_cursor_t;


/* what the checks need to know of a model id */
typedef struct {
    uint32_t             nfeatures;
    uint32_t             noutputs;
    uint32_t             ready;
} ig_rq_model_t;


typedef struct {
    uint64_t             tag;
    uint32_t             slot;
    uint32_t             model_id;
    uint32_t             rows;
    uint32_t             in_floats;
    uint32_t             out_floats;
} ig_rq_req_t;


typedef enum {
    IG_RQ_EMPTY = 0,          /* nothing on sq                           */
    IG_RQ_TAKEN,              /* req filled; *status says if it may run  */
    IG_RQ_SKIPPED,            /* entry names no slot we may answer       */
    IG_RQ_CORRUPT = -1        /* queue indexes impossible: drop client   */
} ig_rq_rc_e;


/*
 * Takes one sq entry of client.  owned[nslots]: 1 while the backend
 * holds the slot.  TAKEN marks the slot owned; status is IG_RING_OK or
 * the error to answer the slot with at once.
 */
int ig_rq_take(ig_rq_cursor_t *c, void *base, const ig_ring_region_t *rg,
    uint32_t client, uint8_t *owned, const ig_rq_model_t *models,
    uint32_t nmodels, ig_rq_req_t *req, uint32_t *status);

/*
 * Answers an owned slot: writes the result fields, pushes its index on
 * cq and releases it.  Returns -1 when cq's indexes are impossible (the
 * client is corrupt), -2 when the slot is not owned.
 */
int ig_rq_complete(ig_rq_cursor_t *c, void *base, const ig_ring_region_t *rg,
    uint32_t client, uint8_t *owned, uint32_t slot, uint32_t status,
    uint32_t out_floats, uint32_t batch_rows, uint32_t queue_us,
    uint32_t run_us);

/* zeroes a client's queue indexes for a new connection */
void ig_rq_reset(ig_rq_cursor_t *c, void *base, const ig_ring_region_t *rg,
    uint32_t client);

#endif /* _IG_RING_QUEUE_H_INCLUDED_ */
