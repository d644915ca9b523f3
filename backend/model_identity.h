
/*
 * Copyright (C) infergate authors
 */

/*
 * Built-in models for tests and the ring benchmark, selected by a model
 * path instead of a file:
 *
 *     builtin:identity:N       N features in, N out, output = input
 *     builtin:sleep:N:US       the same, sleeping US µs per batch
 *     builtin:fail:N           every batch fails (IG_RING_EMODEL)
 */

#ifndef _IG_MODEL_IDENTITY_H_INCLUDED_
#define _IG_MODEL_IDENTITY_H_INCLUDED_

#include "ig_model.h"

#define IG_BUILTIN_PREFIX  "builtin:"


int ig_builtin_is(const char *path);
ig_model_t *ig_builtin_load(const char *spec, char *err, size_t errlen);

#endif /* _IG_MODEL_IDENTITY_H_INCLUDED_ */
