
/*
 * Copyright (C) infergate authors
 */

/*
 * The ring server: the shared region, the control socket, the epoll
 * loop over every client's submission doorbell and control socket, and
 * the signals (SIGHUP reload, SIGTERM drain).  See lib/ig_ring.h for
 * the protocol.
 *
 * Every client gets a region of its own at accept (a fresh memfd holding
 * only its queues and slots), after its SO_PEERCRED passed the allow
 * lists and the per-pid and per-uid bounds.
 */

#ifndef _IG_RING_SERVER_H_INCLUDED_
#define _IG_RING_SERVER_H_INCLUDED_

#include <stdint.h>
#include <sys/types.h>

#include "ig_model.h"
#include "registry.h"


#define IG_RS_ALLOW_MAX   16


typedef struct {
    const char          *socket_path;
    const char          *user;            /* NULL: stay who we are    */
    uint32_t             clients;
    uint32_t             clients_per_pid;  /* live indexes one pid holds */
    uint32_t             clients_per_uid;  /* live indexes one uid holds */
    uint32_t             nallow_uid;       /* 0: own uid and root       */
    uint32_t             nallow_gid;
    uid_t                allow_uid[IG_RS_ALLOW_MAX];
    gid_t                allow_gid[IG_RS_ALLOW_MAX];
    uint32_t             slots;
    uint64_t             slot_bytes;
    uint32_t             max_batch;
    uint32_t             max_delay_us;
    uint32_t             queue_timeout_us;
    uint32_t             queue_max;
    uint32_t             inline_us;   /* --inline-us; 0: off            */
    ig_exec_t           *ex;
    ig_registry_t       *reg;
} ig_rs_conf_t;


/* loads the models, serves until SIGTERM has drained; the exit code */
int ig_rs_run(ig_rs_conf_t *conf);

#endif /* _IG_RING_SERVER_H_INCLUDED_ */
