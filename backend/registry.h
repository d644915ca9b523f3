
/*
 * Copyright (C) infergate authors
 */

/*
 * The daemon's models: --model NAME[:VERSION]=PATH[#sha256=HEX] specs
 * and the (name, version) entries loaded from them.  An entry's index
 * is its model id on the ring; ids stay stable across reloads and new
 * versions get new ids.
 *
 * PATH is a model file, a builtin spec (model_identity.h), or a
 * directory laid out as Triton's model repository: each subdirectory
 * named by digits is a version holding one model file (the first
 * regular file by name).  A reload rescans directories, so a new
 * subdirectory adds a version.  A file whose content starts with
 * "builtin:" holds a builtin spec.
 */

#ifndef _IG_REGISTRY_H_INCLUDED_
#define _IG_REGISTRY_H_INCLUDED_

#include <limits.h>
#include <stdint.h>

#include "ig_model.h"
#include "ig_ring.h"


#define IG_REG_PATH_MAX    1024
#define IG_REG_SIGNER_MAX  64


typedef struct {
    char                 name[IG_MODEL_NAME_MAX];
    char                 version[IG_RING_VERSION_MAX];  /* "" from a dir */
    char                 path[IG_REG_PATH_MAX];
    int                  has_sha;
    uint8_t              sha[32];
} ig_reg_spec_t;


typedef struct {
    uint32_t             id;
    uint32_t             spec;
    char                 name[IG_MODEL_NAME_MAX];
    char                 version[IG_RING_VERSION_MAX];
    char                 path[IG_REG_PATH_MAX];
    ig_model_meta_t      meta;
    uint8_t              file_sha[32];   /* SHA-256 of the file's bytes */
    char                 signer[IG_REG_SIGNER_MAX];  /* "": unsigned   */
} ig_reg_entry_t;


typedef enum {
    IG_REG_ADDED = 1,         /* a new (name, version): a new id        */
    IG_REG_RELOADED,          /* a new model for the id                 */
    IG_REG_REFUSED            /* no model; err says why                 */
} ig_reg_event_e;


/* one outcome of a scan; model belongs to whoever takes the result */
typedef struct {
    ig_reg_event_e       ev;
    uint32_t             spec;
    uint32_t             id;          /* RELOADED, REFUSED: or UINT32_MAX */
    char                 version[IG_RING_VERSION_MAX];
    char                 path[IG_REG_PATH_MAX];
    ig_model_t          *model;
    uint8_t              file_sha[32];   /* SHA-256 of the file's bytes */
    char                 signer[IG_REG_SIGNER_MAX];  /* "": unsigned   */
    char                 err[512];
    int                  sig_failure; /* REFUSED: a signature failed  */
} ig_reg_result_t;


typedef void (*ig_reg_result_pt)(void *data, ig_reg_result_t *res);


typedef struct {
    ig_reg_spec_t        specs[IG_RING_MAX_MODELS];
    uint32_t             nspecs;
    ig_reg_entry_t       entries[IG_RING_MAX_MODELS];
    uint32_t             nentries;
} ig_registry_t;


/* parses one --model argument */
int ig_reg_parse(ig_registry_t *r, const char *arg, char *err,
    size_t errlen);

/*
 * Loads every spec and reports each outcome through cb, in order; it
 * reads the registry but never changes it, so a reload can run on its
 * own thread while the ring server keeps serving, and the server
 * applies the results (ig_reg_apply) on its thread afterwards.
 * initial: the first failure stops the scan and returns -1 with err.
 * Reload: failures come as REFUSED and the id keeps its model; a
 * reload that would change an id's row sizes is refused.
 */
int ig_reg_scan(ig_registry_t *r, ig_exec_t *ex, int initial,
    ig_reg_result_pt cb, void *data, char *err, size_t errlen);

/*
 * Records an ADDED (a new entry, its id the next one) or RELOADED
 * result; returns the entry, or NULL for REFUSED or a full registry.
 */
ig_reg_entry_t *ig_reg_apply(ig_registry_t *r, const ig_reg_result_t *res);

/* loads one file or builtin spec; sha (32 bytes) may be NULL */
ig_model_t *ig_reg_load(const char *path, const uint8_t *sha,
    ig_exec_t *ex, char *err, size_t errlen);

#endif /* _IG_REGISTRY_H_INCLUDED_ */
