
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


#define IG_REG_PATH_MAX  1024


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
} ig_reg_entry_t;


typedef enum {
    IG_REG_ADDED = 1,         /* model handed over: a new id            */
    IG_REG_RELOADED,          /* model handed over: replaces the id's   */
    IG_REG_REFUSED            /* model NULL, err says why               */
} ig_reg_event_e;


/* takes ownership of model (ADDED, RELOADED) */
typedef void (*ig_reg_event_pt)(void *data, ig_reg_event_e ev,
    ig_reg_entry_t *e, ig_model_t *model, const char *err);


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
 * Loads (initial) or reloads every spec.  initial: any failure stops
 * the scan and returns -1 with err.  Reload: failures are reported
 * through cb as REFUSED and the id keeps its model; a reload that would
 * change an id's row sizes is refused.
 */
int ig_reg_scan(ig_registry_t *r, ig_exec_t *ex, int initial,
    ig_reg_event_pt cb, void *data, char *err, size_t errlen);

/* loads one file or builtin spec; sha (32 bytes) may be NULL */
ig_model_t *ig_reg_load(const char *path, const uint8_t *sha,
    ig_exec_t *ex, char *err, size_t errlen);

#endif /* _IG_REGISTRY_H_INCLUDED_ */
