
/*
 * Copyright (C) infergate authors
 */

/*
 * The daemon's models: --model NAME[:VERSION]=PATH[#FIELD=VALUE...]
 * specs and the (name, version) entries loaded from them.  The fields,
 * in any order: #sha256=HEX (pin the file's bytes), #sig=FILE (its
 * detached signature; default PATH.sig, or model.sig in a version
 * directory), #key=FILE (the "ID:HEX" key file of an encrypted model;
 * default $INFERGATE_MODEL_KEYS), #signer=ID (only this trusted
 * signer).  An entry's index is its model id on the ring; ids stay
 * stable across reloads and new versions get new ids.
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
#include "ig_modelcrypt.h"     /* lib/ */
#include "ig_ring.h"


#define IG_REG_PATH_MAX    1024
#define IG_REG_SIGNER_MAX  64


typedef struct {
    char                 name[IG_MODEL_NAME_MAX];
    char                 version[IG_RING_VERSION_MAX];  /* "" from a dir */
    char                 path[IG_REG_PATH_MAX];
    int                  has_sha;
    uint8_t              sha[32];
    char                 sig[IG_REG_PATH_MAX];      /* "": PATH.sig      */
    char                 key[IG_REG_PATH_MAX];      /* "": the env var   */
    char                 signer[IG_REG_SIGNER_MAX]; /* "": any trusted   */
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
    int                  sig_refused;   /* REFUSED for its signature    */
    char                 err[512];
} ig_reg_result_t;


typedef void (*ig_reg_result_pt)(void *data, ig_reg_result_t *res);


typedef struct {
    ig_reg_spec_t        specs[IG_RING_MAX_MODELS];
    uint32_t             nspecs;
    ig_reg_entry_t       entries[IG_RING_MAX_MODELS];
    uint32_t             nentries;

    /* --trust DIR (NULL: signatures are not checked), --require-signed */
    const ig_mc_trust_t *trust;
    const char          *trust_dir;
    int                  require_signed;
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

/*
 * Loads one file or builtin spec of spec s: reads the file once, checks
 * its SHA-256 pin and its signature over the bytes read (the ciphertext
 * when encrypted), decrypts in memory, builds the model from memory and
 * wipes the plaintext.  in_dir: path is a version directory's file (its
 * signature may be model.sig).  Fills file_sha (32 bytes, the file's
 * SHA-256), signer ("" when unsigned) and *sig_refused (1: refused for
 * its signature: invalid, another signer, or missing where required).
 */
ig_model_t *ig_reg_load(const ig_registry_t *r, const ig_reg_spec_t *s,
    const char *path, int in_dir, ig_exec_t *ex, uint8_t *file_sha,
    char *signer, size_t signerlen, int *sig_refused, char *err,
    size_t errlen);

#endif /* _IG_REGISTRY_H_INCLUDED_ */
