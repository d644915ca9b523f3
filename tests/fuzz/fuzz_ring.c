
/*
 * Copyright (C) infergate authors
 *
 * libFuzzer target for the backend's ring consumer (backend/ring_queue.c):
 * random queue indexes, entries and slot headers, as a hostile worker
 * could write them, fed to ig_rq_take / ig_rq_complete.  Whatever the
 * region holds, a request taken as OK must fit its slot both ways, and
 * nothing may read or write outside the region (ASan: the region is a
 * heap block of exactly region_bytes).
 *
 * The region is one client's own (ring version 2: nclients 1, area 0),
 * as the backend maps it.  The worker owns every byte of it, the mapped
 * header included, and writes while the backend works: the input also
 * overwrites the mapped header (the consumer must use its own copy of
 * the layout) and rewrites a taken slot's header, the sq tail and sq
 * entries between take and complete (the checks must hold on the copy
 * taken once).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ig_ring.h"
#include "ring_queue.h"


#define FUZZ_MODELS  4


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t             off, n;
    uint8_t           *base, *area, owned[16];
    uint32_t           nslots, status, i, k, slot, cap;
    uint64_t           bytes;
    ig_rq_req_t        req;
    ig_rq_model_t      models[FUZZ_MODELS];
    ig_rq_cursor_t     cur;
    ig_ring_region_t   rg;

    if (size < 2 + FUZZ_MODELS * 2) {
        return 0;
    }

    nslots = 1u << (data[0] % 5);                 /* 1 .. 16 */
    bytes = ig_ring_layout(&rg, 1, nslots, 64 + (data[1] % 4) * 64, 1);
    if (bytes == 0) {
        abort();
    }

    for (i = 0; i < FUZZ_MODELS; i++) {
        models[i].nfeatures = data[2 + 2 * i] % 40 + 1;
        models[i].noutputs = data[3 + 2 * i] % 40 + 1;
        models[i].ready = data[2 + 2 * i] & 0x80 ? 0 : 1;
    }

    off = 2 + FUZZ_MODELS * 2;

    base = malloc(bytes);
    if (base == NULL) {
        return 0;
    }

    memset(base, 0, bytes);
    memcpy(base, &rg, sizeof(rg));

    /* the worker's whole area (queues and slots) from the input */
    area = base + rg.client_off;
    n = size - off;
    if (n > rg.client_stride) {
        n = rg.client_stride;
    }
    memcpy(area, data + off, n);

    /* the worker may write the mapped header too: nobody reads it here */
    memcpy(base, data + off, n < sizeof(rg) ? n : sizeof(rg));

    cur.sq_head = 0;
    cur.cq_tail = 0;

    if (n >= 4) {
        /* start anywhere: the cursors wrap around 2^32 too */
        memcpy(&cur.sq_head, data + off, 4);
        cur.cq_tail = cur.sq_head;
        ig_ring_cq(base, &rg, 0)->head = cur.cq_tail;
    }

    memset(owned, 0, sizeof(owned));
    cap = (uint32_t) ig_ring_slot_floats(&rg);

    for (k = 0; k < 4 * nslots + 4; k++) {
        int  rc = ig_rq_take(&cur, base, &rg, 0, owned, models, FUZZ_MODELS,
                             &req, &status);

        if (rc == IG_RQ_EMPTY || rc == IG_RQ_CORRUPT) {
            break;
        }

        if (rc == IG_RQ_SKIPPED) {
            continue;
        }

        if (req.slot >= nslots || !owned[req.slot]) {
            abort();
        }

        if (status == IG_RING_OK) {
            const ig_rq_model_t  *m = &models[req.model_id];

            if (req.model_id >= FUZZ_MODELS || !m->ready
                || (uint64_t) req.rows * m->nfeatures != req.in_floats
                || req.in_floats > cap || req.out_floats > cap
                || req.out_floats != req.rows * m->noutputs)
            {
                abort();
            }

            /* the batcher reads the input and writes the output there */
            float  *d = ig_ring_slot(base, &rg, 0, req.slot)->data;
            volatile float  sink = 0;

            for (i = 0; i < req.in_floats; i++) {
                sink += d[i];
            }
            (void) sink;
            memset(d, 0, (size_t) req.out_floats * sizeof(float));
        }

        /* the worker rewrites what was taken, while it is in flight */
        if (k < n && (data[off + k] & 4)) {
            ig_ring_slot_t   *hs = ig_ring_slot(base, &rg, 0, req.slot);
            ig_ring_queue_t  *sq = ig_ring_sq(base, &rg, 0);
            uint32_t          junk;

            junk = data[off + k] * 0x01010101u ^ k * 0x9e3779b9u;
            hs->rows = junk;
            hs->in_floats = ~junk;
            hs->model_id = junk >> 3;
            sq->entries[junk & (nslots - 1)] = junk;

            if (data[off + k] & 8) {
                sq->tail = cur.sq_head + (junk & (2 * nslots - 1));
            }
        }

        /* the worker may have moved cq head meanwhile */
        if (k < n && (data[off + k] & 1)) {
            ig_ring_cq(base, &rg, 0)->head ^= data[off + k];
        }

        if (ig_rq_complete(&cur, base, &rg, 0, owned, req.slot, status,
                           req.out_floats, req.rows, 0, 0) == -2)
        {
            abort();
        }
    }

    /* answers for slots never taken are refused */
    for (slot = 0; slot < nslots; slot++) {
        if (!owned[slot]
            && ig_rq_complete(&cur, base, &rg, 0, owned, slot, 0, 0, 0, 0, 0)
               != -2)
        {
            abort();
        }
    }

    free(base);

    return 0;
}
