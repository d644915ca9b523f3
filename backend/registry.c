
/*
 * Copyright (C) infergate authors
 *
 * Model specs, SHA-256 pinning, version directories and reloads.
 */


#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "model_identity.h"
#include "registry.h"


#define IG_REG_BUILTIN_FILE_MAX  256
#define IG_REG_DIR_VERSIONS_MAX  IG_RING_MAX_MODELS


/* bounded string copy (always terminated, truncates) */
static void
ig_reg_cpy(char *dst, size_t len, const char *src)
{
    size_t  n;

    n = strnlen(src, len - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}


static int
ig_reg_name_ok(const char *s, size_t max)
{
    size_t  n;

    for (n = 0; s[n]; n++) {
        if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z')
              || (s[n] >= '0' && s[n] <= '9') || s[n] == '_' || s[n] == '-'
              || s[n] == '.'))
        {
            return 0;
        }
    }

    return n > 0 && n < max;
}


static int
ig_reg_hex(const char *s, uint8_t *out, size_t n)
{
    size_t  i;
    int     hi, lo;

    if (strlen(s) != 2 * n) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        hi = s[2 * i];
        lo = s[2 * i + 1];
        hi = (hi >= '0' && hi <= '9') ? hi - '0'
             : (hi >= 'a' && hi <= 'f') ? hi - 'a' + 10
             : (hi >= 'A' && hi <= 'F') ? hi - 'A' + 10 : -1;
        lo = (lo >= '0' && lo <= '9') ? lo - '0'
             : (lo >= 'a' && lo <= 'f') ? lo - 'a' + 10
             : (lo >= 'A' && lo <= 'F') ? lo - 'A' + 10 : -1;
        if (hi < 0 || lo < 0) {
            return -1;
        }

        out[i] = (uint8_t) (hi << 4 | lo);
    }

    return 0;
}


int
ig_reg_parse(ig_registry_t *r, const char *arg, char *err, size_t errlen)
{
    size_t          n;
    const char     *eq, *colon, *hash;
    ig_reg_spec_t  *s;
    uint32_t        i;

    if (r->nspecs == IG_RING_MAX_MODELS) {
        snprintf(err, errlen, "--model: at most %d models",
                 IG_RING_MAX_MODELS);
        return -1;
    }

    s = &r->specs[r->nspecs];
    memset(s, 0, sizeof(*s));

    eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || eq[1] == '\0') {
        snprintf(err, errlen, "--model \"%.200s\": expected "
                 "NAME[:VERSION]=PATH[#sha256=HEX]", arg);
        return -1;
    }

    colon = memchr(arg, ':', eq - arg);
    n = (colon ? colon : eq) - arg;

    if (n >= sizeof(s->name)) {
        snprintf(err, errlen, "--model \"%.200s\": name too long", arg);
        return -1;
    }

    memcpy(s->name, arg, n);

    if (!ig_reg_name_ok(s->name, sizeof(s->name))) {
        snprintf(err, errlen, "--model \"%.200s\": bad name (letters, "
                 "digits, '_', '-', '.')", arg);
        return -1;
    }

    if (colon) {
        n = eq - colon - 1;
        if (n >= sizeof(s->version)) {
            snprintf(err, errlen, "--model \"%.200s\": version too long",
                     arg);
            return -1;
        }

        memcpy(s->version, colon + 1, n);

        if (!ig_reg_name_ok(s->version, sizeof(s->version))) {
            snprintf(err, errlen, "--model \"%.200s\": bad version", arg);
            return -1;
        }
    }

    hash = strstr(eq + 1, "#sha256=");
    n = (hash ? hash : eq + 1 + strlen(eq + 1)) - (eq + 1);

    if (n == 0 || n >= sizeof(s->path)) {
        snprintf(err, errlen, "--model \"%.200s\": bad path", arg);
        return -1;
    }

    memcpy(s->path, eq + 1, n);

    if (hash) {
        if (ig_reg_hex(hash + 8, s->sha, sizeof(s->sha)) != 0) {
            snprintf(err, errlen, "--model \"%.200s\": sha256 must be 64 "
                     "hex digits", arg);
            return -1;
        }

        if (ig_builtin_is(s->path)) {
            snprintf(err, errlen, "--model \"%.200s\": a builtin model has "
                     "no sha256", arg);
            return -1;
        }

        s->has_sha = 1;
    }

    for (i = 0; i < r->nspecs; i++) {
        if (strcmp(r->specs[i].name, s->name) == 0
            && (strcmp(r->specs[i].version, s->version) == 0
                || r->specs[i].version[0] == '\0' || s->version[0] == '\0'))
        {
            snprintf(err, errlen, "--model \"%.200s\": \"%s\" given twice",
                     arg, s->name);
            return -1;
        }
    }

    r->nspecs++;

    return 0;
}


static int
ig_reg_sha256(const char *path, uint8_t *md, char *err, size_t errlen)
{
    int          fd, rc;
    ssize_t      n;
    unsigned     mdlen;
    EVP_MD_CTX  *ctx;
    uint8_t      buf[65536];

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%.300s: %s", path, strerror(errno));
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    rc = (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) ? 0 : -1;

    while (rc == 0 && (n = read(fd, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }

            snprintf(err, errlen, "%.300s: %s", path, strerror(errno));
            rc = -1;
            break;
        }

        if (!EVP_DigestUpdate(ctx, buf, n)) {
            rc = -1;
        }
    }

    if (rc == 0 && !EVP_DigestFinal_ex(ctx, md, &mdlen)) {
        rc = -1;
    }

    if (rc != 0 && err[0] == '\0') {
        snprintf(err, errlen, "%.300s: sha256 failed", path);
    }

    EVP_MD_CTX_free(ctx);
    close(fd);

    return rc;
}


/* a file that holds a builtin spec: a test fixture for version dirs */
static ig_model_t *
ig_reg_builtin_file(const char *path, int *is, char *err, size_t errlen)
{
    int      fd;
    ssize_t  n;
    char     buf[IG_REG_BUILTIN_FILE_MAX];

    *is = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return NULL;                     /* the loader says why */
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n < (ssize_t) sizeof(IG_BUILTIN_PREFIX) - 1) {
        return NULL;
    }

    buf[n] = '\0';

    if (!ig_builtin_is(buf)) {
        return NULL;
    }

    *is = 1;

    return ig_builtin_load(buf, err, errlen);
}


ig_model_t *
ig_reg_load(const char *path, const uint8_t *sha, ig_exec_t *ex, char *err,
    size_t errlen)
{
    int          is;
    uint8_t      md[32];
    ig_model_t  *m;

    err[0] = '\0';

    if (ig_builtin_is(path)) {
        return ig_builtin_load(path, err, errlen);
    }

    if (sha) {
        if (ig_reg_sha256(path, md, err, errlen) != 0) {
            return NULL;
        }

        if (memcmp(md, sha, sizeof(md)) != 0) {
            snprintf(err, errlen, "%.300s: sha256 does not match the one "
                     "given", path);
            return NULL;
        }
    }

    m = ig_reg_builtin_file(path, &is, err, errlen);

    if (!is) {
        m = ig_model_load(path, ex, err, errlen);
    }

    if (m == NULL) {
        return NULL;
    }

    if (sha) {
        /* the file must not have changed while it was being loaded */
        if (ig_reg_sha256(path, md, err, errlen) != 0
            || memcmp(md, sha, sizeof(md)) != 0)
        {
            snprintf(err, errlen, "%.300s: changed while loading", path);
            ig_model_free(m);
            return NULL;
        }
    }

    if (m->meta.nfeatures == 0 || m->meta.noutputs == 0) {
        snprintf(err, errlen, "%.300s: model has no features or outputs",
                 path);
        ig_model_free(m);
        return NULL;
    }

    return m;
}


typedef struct {
    char      version[IG_RING_VERSION_MAX];
    char      path[IG_REG_PATH_MAX];
} ig_reg_ver_t;


static int
ig_reg_cmp_ver(const void *a, const void *b)
{
    const ig_reg_ver_t  *x = a, *y = b;
    size_t               lx = strlen(x->version), ly = strlen(y->version);

    return (lx != ly) ? (lx < ly ? -1 : 1) : strcmp(x->version, y->version);
}


/* the first regular, non-hidden file of a version directory, by name */
static int
ig_reg_dir_file(const char *dir, char *out, size_t len)
{
    int             found;
    DIR            *d;
    struct stat     st;
    struct dirent  *de;
    char            best[256], p[IG_REG_PATH_MAX];

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    found = 0;

    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') {
            continue;
        }

        if (snprintf(p, sizeof(p), "%s/%s", dir, de->d_name)
            >= (int) sizeof(p)
            || stat(p, &st) != 0 || !S_ISREG(st.st_mode))
        {
            continue;
        }

        if (!found || strcmp(de->d_name, best) < 0) {
            ig_reg_cpy(best, sizeof(best), de->d_name);
            found = 1;
        }
    }

    closedir(d);

    if (!found || snprintf(out, len, "%s/%s", dir, best) >= (int) len) {
        return -1;
    }

    return 0;
}


/* (version, file) pairs of one spec */
static int
ig_reg_versions(ig_reg_spec_t *s, ig_reg_ver_t *v, char *err, size_t errlen)
{
    int             n;
    size_t          i;
    DIR            *d;
    struct stat     st;
    struct dirent  *de;
    char            sub[IG_REG_PATH_MAX];

    if (ig_builtin_is(s->path) || stat(s->path, &st) != 0
        || !S_ISDIR(st.st_mode))
    {
        ig_reg_cpy(v[0].version, sizeof(v[0].version),
                   s->version[0] ? s->version : "1");
        ig_reg_cpy(v[0].path, sizeof(v[0].path), s->path);
        return 1;
    }

    if (s->has_sha || s->version[0]) {
        snprintf(err, errlen, "%.300s: a model directory takes no version "
                 "or sha256 (they come from its subdirectories)", s->path);
        return -1;
    }

    d = opendir(s->path);
    if (d == NULL) {
        snprintf(err, errlen, "%.300s: %s", s->path, strerror(errno));
        return -1;
    }

    n = 0;

    while ((de = readdir(d)) != NULL && n < IG_REG_DIR_VERSIONS_MAX) {
        for (i = 0; de->d_name[i] >= '0' && de->d_name[i] <= '9'; i++) {
            /* digits only */
        }

        if (i == 0 || de->d_name[i] != '\0'
            || i >= sizeof(v[n].version))
        {
            continue;
        }

        if (snprintf(sub, sizeof(sub), "%s/%s", s->path, de->d_name)
            >= (int) sizeof(sub)
            || ig_reg_dir_file(sub, v[n].path, sizeof(v[n].path)) != 0)
        {
            continue;
        }

        ig_reg_cpy(v[n].version, sizeof(v[n].version), de->d_name);
        n++;
    }

    closedir(d);

    if (n == 0) {
        snprintf(err, errlen, "%.300s: no version subdirectory (1/, 2/ ...) "
                 "with a model file", s->path);
        return -1;
    }

    qsort(v, n, sizeof(ig_reg_ver_t), ig_reg_cmp_ver);

    return n;
}


static void
ig_reg_result(ig_reg_result_t *res, ig_reg_event_e ev, uint32_t spec,
    uint32_t id, const ig_reg_ver_t *v, ig_model_t *m, const char *err)
{
    memset(res, 0, sizeof(*res));
    res->ev = ev;
    res->spec = spec;
    res->id = id;
    res->model = m;

    if (v) {
        ig_reg_cpy(res->version, sizeof(res->version), v->version);
        ig_reg_cpy(res->path, sizeof(res->path), v->path);
    }

    if (err) {
        ig_reg_cpy(res->err, sizeof(res->err), err);
    }
}


int
ig_reg_scan(ig_registry_t *r, ig_exec_t *ex, int initial,
    ig_reg_result_pt cb, void *data, char *err, size_t errlen)
{
    int               n, k;
    uint32_t          i, j, added;
    ig_model_t       *m;
    ig_reg_entry_t   *e;
    ig_reg_spec_t    *s;
    ig_reg_result_t   res;
    char              lerr[512];
    ig_reg_ver_t      v[IG_REG_DIR_VERSIONS_MAX];

    added = 0;

    for (i = 0; i < r->nspecs; i++) {
        s = &r->specs[i];

        lerr[0] = '\0';
        n = ig_reg_versions(s, v, lerr, sizeof(lerr));

        if (n < 0) {
            if (initial) {
                snprintf(err, errlen, "%s", lerr);
                return -1;
            }

            for (j = 0; j < r->nentries; j++) {
                if (r->entries[j].spec == i) {
                    ig_reg_result(&res, IG_REG_REFUSED, i, j, NULL, NULL,
                                  lerr);
                    ig_reg_cpy(res.version, sizeof(res.version),
                               r->entries[j].version);
                    cb(data, &res);
                }
            }

            continue;
        }

        for (k = 0; k < n; k++) {
            e = NULL;

            for (j = 0; j < r->nentries; j++) {
                if (r->entries[j].spec == i
                    && strcmp(r->entries[j].version, v[k].version) == 0)
                {
                    e = &r->entries[j];
                    break;
                }
            }

            if (e == NULL && r->nentries + added == IG_RING_MAX_MODELS) {
                snprintf(lerr, sizeof(lerr), "%.64s:%.16s: more than %d "
                         "models", s->name, v[k].version, IG_RING_MAX_MODELS);
                if (initial) {
                    snprintf(err, errlen, "%s", lerr);
                    return -1;
                }

                ig_reg_result(&res, IG_REG_REFUSED, i, UINT32_MAX, &v[k],
                              NULL, lerr);
                cb(data, &res);
                continue;
            }

            m = ig_reg_load(v[k].path, s->has_sha ? s->sha : NULL, ex,
                            lerr, sizeof(lerr));

            if (m && e
                && (m->meta.nfeatures != e->meta.nfeatures
                    || m->meta.noutputs != e->meta.noutputs))
            {
                snprintf(lerr, sizeof(lerr), "%.300s: reload changes the "
                         "row sizes (%u→%u features, %u→%u outputs); give "
                         "it a new version", v[k].path, e->meta.nfeatures,
                         m->meta.nfeatures, e->meta.noutputs,
                         m->meta.noutputs);
                ig_model_free(m);
                m = NULL;
            }

            if (m == NULL) {
                if (initial) {
                    snprintf(err, errlen, "model %s:%s: %s", s->name,
                             v[k].version, lerr);
                    return -1;
                }

                ig_reg_result(&res, IG_REG_REFUSED, i,
                              e ? e->id : UINT32_MAX, &v[k], NULL, lerr);
                cb(data, &res);
                continue;
            }

            if (e) {
                ig_reg_result(&res, IG_REG_RELOADED, i, e->id, &v[k], m,
                              NULL);

            } else {
                ig_reg_result(&res, IG_REG_ADDED, i, UINT32_MAX, &v[k], m,
                              NULL);
                added++;
            }

            cb(data, &res);
        }
    }

    return 0;
}


ig_reg_entry_t *
ig_reg_apply(ig_registry_t *r, const ig_reg_result_t *res)
{
    ig_reg_entry_t  *e;

    switch (res->ev) {

    case IG_REG_RELOADED:
        if (res->id >= r->nentries) {
            return NULL;
        }

        e = &r->entries[res->id];
        break;

    case IG_REG_ADDED:
        if (r->nentries == IG_RING_MAX_MODELS) {
            return NULL;
        }

        e = &r->entries[r->nentries];
        memset(e, 0, sizeof(*e));
        e->id = r->nentries++;
        e->spec = res->spec;
        ig_reg_cpy(e->name, sizeof(e->name), r->specs[res->spec].name);
        ig_reg_cpy(e->version, sizeof(e->version), res->version);
        break;

    default:
        return NULL;
    }

    ig_reg_cpy(e->path, sizeof(e->path), res->path);
    e->meta = res->model->meta;
    memcpy(e->file_sha, res->file_sha, sizeof(e->file_sha));
    ig_reg_cpy(e->signer, sizeof(e->signer), res->signer);

    return e;
}
