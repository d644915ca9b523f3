
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

#include <openssl/crypto.h>

#include "blog.h"
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


static const char *const  ig_reg_fields[] = {
    "#sha256=", "#sig=", "#key=", "#signer=", NULL
};


/* one "#name=value" of a --model argument, len bytes at p */
static int
ig_reg_field(ig_reg_spec_t *s, const char *p, size_t len, const char *arg,
    char *err, size_t errlen)
{
    size_t       k, vlen;
    const char  *v;
    char         buf[IG_REG_PATH_MAX];

    for (k = 0; ig_reg_fields[k]; k++) {
        if (len >= strlen(ig_reg_fields[k])
            && memcmp(p, ig_reg_fields[k], strlen(ig_reg_fields[k])) == 0)
        {
            break;
        }
    }

    if (ig_reg_fields[k] == NULL) {
        snprintf(err, errlen, "--model \"%.200s\": unknown field \"%.*s\" "
                 "(#sha256=, #sig=, #key=, #signer=)", arg,
                 (int) (len > 32 ? 32 : len), p);
        return -1;
    }

    v = p + strlen(ig_reg_fields[k]);
    vlen = len - strlen(ig_reg_fields[k]);

    if (vlen == 0 || vlen >= sizeof(buf)) {
        snprintf(err, errlen, "--model \"%.200s\": %s needs a value", arg,
                 ig_reg_fields[k]);
        return -1;
    }

    memcpy(buf, v, vlen);
    buf[vlen] = '\0';

    switch (k) {

    case 0:
        if (s->has_sha || ig_reg_hex(buf, s->sha, sizeof(s->sha)) != 0) {
            snprintf(err, errlen, "--model \"%.200s\": sha256 must be 64 "
                     "hex digits, given once", arg);
            return -1;
        }

        s->has_sha = 1;
        return 0;

    case 1:
    case 2:
        if ((k == 1 ? s->sig : s->key)[0]) {
            snprintf(err, errlen, "--model \"%.200s\": %s given twice", arg,
                     ig_reg_fields[k]);
            return -1;
        }

        ig_reg_cpy(k == 1 ? s->sig : s->key, IG_REG_PATH_MAX, buf);
        return 0;

    default:
        if (s->signer[0]
            || vlen >= sizeof(s->signer)
            || !ig_audit_key_id_valid(buf, vlen))
        {
            snprintf(err, errlen, "--model \"%.200s\": #signer= takes one "
                     "signer id ([A-Za-z0-9._-], 1 to 32)", arg);
            return -1;
        }

        ig_reg_cpy(s->signer, sizeof(s->signer), buf);
        return 0;
    }
}


int
ig_reg_parse(ig_registry_t *r, const char *arg, char *err, size_t errlen)
{
    size_t          n;
    const char     *eq, *colon, *hash, *p, *const *f;
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
                 "NAME[:VERSION]=PATH[#sha256=HEX][#sig=FILE][#key=FILE]"
                 "[#signer=ID]", arg);
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

    /* PATH ends at the first known #FIELD= */
    hash = NULL;

    for (f = ig_reg_fields; *f; f++) {
        p = strstr(eq + 1, *f);
        if (p && (hash == NULL || p < hash)) {
            hash = p;
        }
    }

    n = (hash ? hash : eq + 1 + strlen(eq + 1)) - (eq + 1);

    if (n == 0 || n >= sizeof(s->path)) {
        snprintf(err, errlen, "--model \"%.200s\": bad path", arg);
        return -1;
    }

    memcpy(s->path, eq + 1, n);

    while (hash) {
        p = strchr(hash + 1, '#');
        n = (p ? p : hash + strlen(hash)) - hash;

        if (ig_reg_field(s, hash, n, arg, err, errlen) != 0) {
            return -1;
        }

        hash = p;
    }

    if (ig_builtin_is(s->path)
        && (s->has_sha || s->sig[0] || s->key[0] || s->signer[0]))
    {
        snprintf(err, errlen, "--model \"%.200s\": a builtin model has no "
                 "sha256, sig, key or signer", arg);
        return -1;
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


/*
 * The signature of a file's bytes: #sig=FILE, else PATH.sig, else (a
 * version directory's file) model.sig beside it.  0: verified or
 * legitimately unsigned (signer ""), -1: refused with err.
 */
static int
ig_reg_signature(const ig_registry_t *r, const ig_reg_spec_t *s,
    const char *path, int in_dir, const uint8_t *data, size_t len,
    char *signer, size_t signerlen, char *err, size_t errlen)
{
    int          rc;
    size_t       siglen;
    uint8_t     *sig;
    const char  *slash;
    char         sp[IG_REG_PATH_MAX + 8], q[600], lerr[512];

    signer[0] = '\0';
    sig = NULL;
    siglen = 0;

    if (s->sig[0]) {
        snprintf(sp, sizeof(sp), "%s", s->sig);
        rc = ig_mc_read_file(sp, IG_MC_SIG_MAX, &sig, &siglen, lerr,
                             sizeof(lerr));
        if (rc != 0) {
            snprintf(err, errlen, "%.300s: signature %s", path, lerr);
            return -1;
        }

    } else {
        snprintf(sp, sizeof(sp), "%s.sig", path);
        rc = ig_mc_read_file(sp, IG_MC_SIG_MAX, &sig, &siglen, lerr,
                             sizeof(lerr));

        if (rc == -2 && in_dir) {
            slash = strrchr(path, '/');
            snprintf(sp, sizeof(sp), "%.*s/model.sig",
                     slash ? (int) (slash - path) : 1,
                     slash ? path : ".");
            rc = ig_mc_read_file(sp, IG_MC_SIG_MAX, &sig, &siglen, lerr,
                                 sizeof(lerr));
        }

        if (rc == -1) {
            snprintf(err, errlen, "%.300s: signature %s", path, lerr);
            return -1;
        }
    }

    if (rc == -2) {
        if (r->require_signed) {
            snprintf(err, errlen, "%.300s: no signature (%.300s.sig) and "
                     "--require-signed", path, path);
            return -1;
        }

        if (s->signer[0]) {
            snprintf(err, errlen, "%.300s: no signature (%.300s.sig), but "
                     "#signer=%s", path, path, s->signer);
            return -1;
        }

        ig_blog("warn", "model_unsigned", "path=%s signer=\"\" "
                "msg=\"no signature; loaded because --require-signed is "
                "not given\"", ig_blogq(q, sizeof(q), path));
        return 0;
    }

    if (r->trust == NULL) {
        free(sig);
        ig_blog("warn", "model_unsigned", "path=%s signer=\"\" "
                "msg=\"signature not checked: no --trust\"",
                ig_blogq(q, sizeof(q), path));
        return 0;
    }

    rc = ig_mc_trust_verify(r->trust, data, len, sig, siglen, signer,
                            signerlen);
    free(sig);

    if (rc != 0) {
        snprintf(err, errlen, "%.300s: signature %.300s does not verify "
                 "with any key of --trust %.200s (the model or the "
                 "signature was modified, or the signer is not trusted)",
                 path, sp, r->trust_dir ? r->trust_dir : "");
        signer[0] = '\0';
        return -1;
    }

    if (s->signer[0] && strcmp(s->signer, signer) != 0) {
        snprintf(err, errlen, "%.300s: signed by \"%s\", but #signer= "
                 "requires \"%s\"", path, signer, s->signer);
        signer[0] = '\0';
        return -1;
    }

    return 0;
}


/* the keys of an encrypted model: #key=FILE or the environment */
static int
ig_reg_keyring(const ig_reg_spec_t *s, const char *path,
    ig_audit_keyring_t *ring, char *err, size_t errlen)
{
    const char  *env;
    char         lerr[512];

    if (s->key[0]) {
        if (ig_audit_keyring_load(ring, s->key, lerr, sizeof(lerr)) != 0) {
            snprintf(err, errlen, "%.300s: #key=%s", path, lerr);
            return -1;
        }

        return 0;
    }

    env = getenv(IG_MC_KEYS_ENV);

    if (env == NULL || env[0] == '\0') {
        snprintf(err, errlen, "%.300s: an encrypted model, but no #key=FILE "
                 "and no $%s", path, IG_MC_KEYS_ENV);
        return -1;
    }

    if (ig_audit_keyring_parse(ring, env, strlen(env), lerr, sizeof(lerr))
        != 0)
    {
        snprintf(err, errlen, "%.300s: $%s: %s", path, IG_MC_KEYS_ENV,
                 lerr);
        return -1;
    }

    return 0;
}


/* a model from a whole (plaintext, NUL-terminated) file in memory */
static ig_model_t *
ig_reg_build(const uint8_t *data, size_t len, ig_exec_t *ex, char *err,
    size_t errlen)
{
    /* a file that holds a builtin spec: a test fixture for version dirs */
    if (len < IG_REG_BUILTIN_FILE_MAX && ig_builtin_is((const char *) data)
        && strlen((const char *) data) == len)
    {
        return ig_builtin_load((const char *) data, err, errlen);
    }

    return ig_model_load_mem(data, len, ex, err, errlen);
}


ig_model_t *
ig_reg_load(const ig_registry_t *r, const ig_reg_spec_t *s,
    const char *path, int in_dir, ig_exec_t *ex, uint8_t *file_sha,
    char *signer, size_t signerlen, int *sig_refused, char *err,
    size_t errlen)
{
    int                  rc;
    size_t               len, ptlen;
    uint8_t             *data, *pt, md[32];
    unsigned             mdlen;
    ig_model_t          *m;
    ig_audit_keyring_t  *ring;
    char                 lerr[512];

    err[0] = '\0';
    signer[0] = '\0';
    memset(file_sha, 0, 32);
    *sig_refused = 0;

    if (ig_builtin_is(path)) {
        if (r->require_signed) {
            *sig_refused = 1;
            snprintf(err, errlen, "%.300s: a builtin model has no "
                     "signature (--require-signed)", path);
            return NULL;
        }

        return ig_builtin_load(path, err, errlen);
    }

    /* read once: the bytes hashed and verified are the bytes parsed */
    rc = ig_mc_read_file(path, IG_MC_FILE_MAX + IG_MC_HDR_LEN
                               + IG_MC_TAG_LEN,
                         &data, &len, err, errlen);
    if (rc != 0) {
        return NULL;
    }

    m = NULL;

    if (len == 0) {
        snprintf(err, errlen, "%.300s: empty file", path);
        goto done;
    }

    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1) {
        snprintf(err, errlen, "%.300s: sha256 failed", path);
        goto done;
    }

    memcpy(file_sha, md, 32);

    if (s->has_sha && CRYPTO_memcmp(md, s->sha, sizeof(md)) != 0) {
        snprintf(err, errlen, "%.300s: sha256 does not match the one "
                 "given", path);
        goto done;
    }

    if (ig_reg_signature(r, s, path, in_dir, data, len, signer, signerlen,
                         err, errlen)
        != 0)
    {
        *sig_refused = 1;
        goto done;
    }

    if (!ig_mc_is_encrypted(data, len)) {
        if (s->key[0]) {
            snprintf(err, errlen, "%.300s: #key= was given, but this is not "
                     "an encrypted model (no \"%s\" magic)", path,
                     IG_MC_MAGIC);
            goto done;
        }

        m = ig_reg_build(data, len, ex, err, errlen);
        goto done;
    }

    ring = malloc(sizeof(ig_audit_keyring_t));
    if (ring == NULL) {
        snprintf(err, errlen, "%.300s: out of memory", path);
        goto done;
    }

    memset(ring, 0, sizeof(ig_audit_keyring_t));

    rc = ig_reg_keyring(s, path, ring, err, errlen);

    if (rc == 0) {
        rc = ig_mc_decrypt(ring, data, len, &pt, &ptlen, lerr, sizeof(lerr));
        if (rc != 0) {
            snprintf(err, errlen, "%.300s: %s", path, lerr);
        }
    }

    ig_audit_keyring_cleanse(ring);
    free(ring);

    if (rc != 0) {
        goto done;
    }

    m = ig_reg_build(pt, ptlen, ex, err, errlen);

    /* the weights never stay readable in this process either */
    ig_mc_free_clear(pt, ptlen + 1);

done:

    free(data);

    if (m == NULL) {
        signer[0] = '\0';
        return NULL;
    }

    if (m->meta.nfeatures == 0 || m->meta.noutputs == 0) {
        snprintf(err, errlen, "%.300s: model has no features or outputs",
                 path);
        ig_model_free(m);
        signer[0] = '\0';
        return NULL;
    }

    return m;
}


typedef struct {
    char      version[IG_RING_VERSION_MAX];
    char      path[IG_REG_PATH_MAX];
    int       in_dir;
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
    size_t          n;
    struct stat     st;
    struct dirent  *de;
    char            best[256], p[IG_REG_PATH_MAX];

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    found = 0;

    while ((de = readdir(d)) != NULL) {
        n = strlen(de->d_name);

        /* hidden files and signatures are not models */
        if (de->d_name[0] == '.'
            || (n > 4 && strcmp(de->d_name + n - 4, ".sig") == 0))
        {
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
        v[0].in_dir = 0;
        return 1;
    }

    if (s->has_sha || s->version[0] || s->sig[0]) {
        snprintf(err, errlen, "%.300s: a model directory takes no version, "
                 "sha256 or sig (they come from its subdirectories)",
                 s->path);
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
        v[n].in_dir = 1;
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
    int               n, k, sigref;
    uint32_t          i, j, added;
    ig_model_t       *m;
    ig_reg_entry_t   *e;
    ig_reg_spec_t    *s;
    ig_reg_result_t   res;
    uint8_t           fsha[32];
    char              lerr[512], signer[IG_REG_SIGNER_MAX];
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

            m = ig_reg_load(r, s, v[k].path, v[k].in_dir, ex, fsha, signer,
                            sizeof(signer), &sigref, lerr, sizeof(lerr));

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
                memcpy(res.file_sha, fsha, sizeof(res.file_sha));
                res.sig_refused = sigref;
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

            memcpy(res.file_sha, fsha, sizeof(res.file_sha));
            ig_reg_cpy(res.signer, sizeof(res.signer), signer);

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
