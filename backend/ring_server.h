
/*
 * Copyright (C) infergate authors
 */

/*
 * The ring server: the shared region, the control socket, the epoll
 * loop over every client's submission doorbell and control socket, and
 * the signals (SIGHUP reload, SIGTERM drain).  See lib/ig_ring.h for
 * the protocol.
 */

#ifndef _IG_RING_SERVER_H_INCLUDED_
#define _IG_RING_SERVER_H_INCLUDED_

#include <stdint.h>

#include "ig_model.h"
#include "registry.h"


typedef struct {
    const char          *socket_path;
    const char          *user;            /* NULL: stay who we are    */
    uint32_t             clients;
    uint32_t             slots;
    uint64_t             slot_bytes;
    uint32_t             max_batch;
    uint32_t             max_delay_us;
    uint32_t             queue_timeout_us;
    uint32_t             queue_max;
    ig_exec_t           *ex;
    ig_registry_t       *reg;
} ig_rs_conf_t;


/* loads the models, serves until SIGTERM has drained; the exit code */
int ig_rs_run(ig_rs_conf_t *conf);

#endif /* _IG_RING_SERVER_H_INCLUDED_ */
