
/*
 * Copyright (C) infergate authors
 */

/*
 * The backend's own audit trail (--audit PATH --audit-key FILE
 * --audit-key-id ID): the same HMAC-chained ECS JSON lines as the
 * gateway's infergate_audit, sealed with lib/ig_audit's signer, so
 * `infergate-audit verify` checks both alike.
 *
 * One chain per backend start: a chain_start marker when the file is
 * opened, a record per event, a chain_end marker at exit.  The markers
 * carry the "link" member and PATH.chainstate is kept as the gateway
 * keeps it (lib/ig_audit.h), so a backend's file may even be shared with
 * nginx workers.  Records are few (starts, loads, reloads, peers): each
 * is written at once with write(2) on the calling thread.
 *
 * A write that fails (a full disk) loses that record: it is counted, a
 * line goes to the logfmt log (once a second at most), serving goes on,
 * and the chain_end states the loss, which the verifier reports (with
 * the seq gap), as the gateway does.  Every function is a no-op while
 * no audit is open; all are thread-safe.
 */

#ifndef _IG_BAUDIT_H_INCLUDED_
#define _IG_BAUDIT_H_INCLUDED_

#include <stdint.h>
#include <sys/types.h>

#include "registry.h"


/*
 * Loads the key file (lib's rule: mode 0600, 32..128-byte keys), finds
 * key_id, opens PATH (append, created 0600) and PATH.chainstate, and
 * writes the chain_start marker.  Returns 0, or -1 with err.
 */
int ig_baudit_open(const char *path, const char *key_file,
    const char *key_id, char *err, size_t errlen);

/* a "stop" record with the exit code, the chain_end marker, closed */
void ig_baudit_close(int code);

/* the records: event.action in the comment */

/* backend_start: the socket, the device, the number of model specs */
void ig_baudit_start(const char *socket, const char *device,
    unsigned nspecs);

/*
 * model_loaded (ADDED), model_reloaded (RELOADED) or model_refused
 * (REFUSED, or reason != NULL for an ADDED/RELOADED that could not be
 * put in service); name is the spec's name, id the entry's id
 * (UINT32_MAX: none).
 */
void ig_baudit_model(const ig_reg_result_t *res, const char *name,
    uint32_t id, const char *device, const char *reason);

/* model_refused at the start, before any id: the scan's error */
void ig_baudit_start_failed(const char *reason);

/* reload (SIGHUP) and reload_done */
void ig_baudit_reload(unsigned nmodels);
void ig_baudit_reload_done(unsigned nmodels, unsigned added);

/* drain (SIGTERM/SIGINT) */
void ig_baudit_drain(unsigned nmodels, int signo);

/* client_attached (reason NULL) or client_refused */
void ig_baudit_client(int index, pid_t pid, uid_t uid, gid_t gid,
    const char *reason);

#endif /* _IG_BAUDIT_H_INCLUDED_ */
