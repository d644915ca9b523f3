
/*
 * Copyright (C) infergate authors
 *
 * infergate-backend: serves models to nginx workers over the shared
 * memory ring (see lib/ig_ring.h, backend/ring_server.h).
 *
 *   infergate-backend --socket PATH --model NAME[:VERSION]=PATH[#sha256=HEX]
 *       ... [--max-batch 64] [--max-delay-us 200]
 *       [--batching continuous|window] [--inline-us 50]
 *       [--queue-timeout-us 100000] [--queue-max 1024]
 *       [--device auto|cpu|cuda:N] [--threads N] [--slots 64]
 *       [--slot-bytes 65536] [--clients 64] [--user U]
 *       [--allow-uid U,...] [--allow-gid G,...] [--clients-per-pid 2]
 *       [--clients-per-uid N] [--trust DIR] [--require-signed]
 *       [--audit PATH --audit-key FILE --audit-key-id ID]
 *   infergate-backend [--device D] [--trust DIR] [--require-signed]
 *       --check PATH[#sha256=HEX][#sig=FILE][#key=FILE][#signer=ID]
 */


#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batcher.h"
#include "baudit.h"
#include "blog.h"
#include "ig_model.h"
#include "ig_ring.h"
#include "registry.h"
#include "ring_server.h"


/* static: error exits need not free it */
static ig_registry_t  ig_registry;
static ig_mc_trust_t  ig_trust;


static void
usage(FILE *f)
{
    fprintf(f,
        "usage: infergate-backend --socket PATH "
        "--model NAME[:VERSION]=PATH[#sha256=HEX] ...\n"
        "         [--max-batch 64] [--max-delay-us 200] "
        "[--queue-timeout-us 100000]\n"
        "         [--batching continuous|window] "
        "(continuous: a request at idle runs at once)\n"
        "         [--inline-us 50] (continuous: an idle model whose runs "
        "take at most\n         this long runs on the ring thread; 0: "
        "always on the runner)\n"
        "         [--queue-max 1024] [--device auto|cpu|cuda:N] "
        "[--threads 0]\n"
        "         [--slots 64] [--slot-bytes 65536] [--clients 64] "
        "[--user USER]\n"
        "         [--allow-uid U,...] [--allow-gid G,...] "
        "[--clients-per-pid 2]\n"
        "         [--clients-per-uid N] [--trust DIR] [--require-signed]\n"
        "         [--audit PATH --audit-key FILE --audit-key-id ID]\n"
        "       infergate-backend [--device D] [--threads N] [--trust DIR] "
        "[--require-signed]\n"
        "         --check PATH[#sha256=HEX][#sig=FILE][#key=FILE]"
        "[#signer=ID]\n"
        "PATH is a model file (XGBoost JSON, ONNX), a directory of "
        "version\nsubdirectories (1/, 2/ ...), or builtin:identity:N, "
        "builtin:sleep:N:US,\nbuiltin:fail:N.  --trust DIR: one "
        "SIGNER.pub.pem public key per signer;\nan encrypted model's keys "
        "come from #key=FILE or $" IG_MC_KEYS_ENV ".\n");
}


static int
num(const char *opt, const char *v, unsigned long long min,
    unsigned long long max, unsigned long long *out)
{
    char                *end;
    unsigned long long   n;

    errno = 0;
    n = strtoull(v, &end, 10);

    if (v[0] < '0' || v[0] > '9' || errno || *end || n < min || n > max) {
        fprintf(stderr, "infergate-backend: %s \"%s\": expected an integer "
                "%llu..%llu\n", opt, v, min, max);
        return -1;
    }

    *out = n;

    return 0;
}


/*
 * A comma-separated list of user (or group) names or numbers, at most
 * IG_RS_ALLOW_MAX; names are looked up now, before --user drops root.
 */
static int
id_list(const char *opt, const char *v, int group, uint32_t *ids,
    uint32_t *n)
{
    char                *end;
    size_t               len;
    const char          *p, *e;
    struct group        *gr;
    struct passwd       *pw;
    unsigned long long   x;
    char                 name[256];

    *n = 0;
    p = v;

    for ( ;; ) {
        e = strchr(p, ',');
        len = e ? (size_t) (e - p) : strlen(p);

        if (len == 0 || len >= sizeof(name) || *n == IG_RS_ALLOW_MAX) {
            fprintf(stderr, "infergate-backend: %s \"%s\": expected up to "
                    "%d %s names or numbers, separated by commas\n", opt, v,
                    IG_RS_ALLOW_MAX, group ? "group" : "user");
            return -1;
        }

        memcpy(name, p, len);
        name[len] = '\0';

        errno = 0;
        x = strtoull(name, &end, 10);

        if (name[0] >= '0' && name[0] <= '9' && *end == '\0' && errno == 0
            && x < 0xffffffffULL)
        {
            ids[(*n)++] = (uint32_t) x;

        } else if (group && (gr = getgrnam(name)) != NULL) {
            ids[(*n)++] = (uint32_t) gr->gr_gid;

        } else if (!group && (pw = getpwnam(name)) != NULL) {
            ids[(*n)++] = (uint32_t) pw->pw_uid;

        } else {
            fprintf(stderr, "infergate-backend: %s \"%s\": no such %s "
                    "\"%s\"\n", opt, v, group ? "group" : "user", name);
            return -1;
        }

        if (e == NULL) {
            return 0;
        }

        p = e + 1;
    }
}


static void
print_tensor(const char *key, const ig_tensor_desc_t *t)
{
    uint32_t  i;
    static const char  *dt[] = { "?", "BOOL", "INT32", "INT64", "FP32",
                                 "FP64" };

    printf("\"%s\":{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[", key,
           t->name, t->dtype <= IG_DT_FP64 ? dt[t->dtype] : "?");

    for (i = 0; i < t->ndims && i < IG_MODEL_MAX_DIMS; i++) {
        printf("%s%lld", i ? "," : "", (long long) t->dims[i]);
    }

    printf("]}");
}


static int
check(const char *arg, ig_exec_t *ex)
{
    int             i, sigref;
    char            path[IG_REG_PATH_MAX], err[512];
    char            signer[IG_REG_SIGNER_MAX];
    uint8_t         sha[32];
    ig_model_t     *m;
    ig_registry_t  *r;

    /* the same parser as --model, for the sha256 suffix */
    r = calloc(1, sizeof(ig_registry_t));
    if (r == NULL) {
        return 1;
    }

    r->trust = ig_registry.trust;
    r->trust_dir = ig_registry.trust_dir;
    r->require_signed = ig_registry.require_signed;

    if (snprintf(path, sizeof(path), "check=%s", arg) >= (int) sizeof(path)
        || ig_reg_parse(r, path, err, sizeof(err)) != 0)
    {
        fprintf(stderr, "infergate-backend: --check %s: %s\n", arg,
                err[0] ? err : "bad path");
        free(r);
        return 1;
    }

    m = ig_reg_load(r, &r->specs[0], r->specs[0].path, 0, ex, sha, signer,
                    sizeof(signer), &sigref, err, sizeof(err));
    free(r);

    if (m == NULL) {
        fprintf(stderr, "infergate-backend: --check %s: %s\n", arg, err);
        return 1;
    }

    printf("{\"platform\":\"%s\",", m->meta.platform);
    print_tensor("input", &m->meta.input);
    printf(",");
    print_tensor("output", &m->meta.output);
    printf(",\"nfeatures\":%u,\"noutputs\":%u,\"device\":\"%s\","
           "\"sha256\":\"", m->meta.nfeatures, m->meta.noutputs, ex->name);

    for (i = 0; i < 32; i++) {
        printf("%02x", sha[i]);
    }

    printf("\",\"signer\":\"%s\"}\n", signer);

    ig_model_free(m);

    return 0;
}


int
main(int argc, char **argv)
{
    int                  c, rc, threads;
    const char          *device, *check_path;
    const char          *audit, *audit_key, *audit_key_id;
    ig_exec_t           *ex;
    ig_rs_conf_t         conf;
    sigset_t             sigs;
    ig_registry_t       *reg;
    unsigned long long   v;
    uint32_t             ids[IG_RS_ALLOW_MAX], nids, k;
    char                 err[512], q[600];

    enum {
        O_SOCKET = 256, O_MODEL, O_MAX_BATCH, O_MAX_DELAY, O_QTIMEOUT,
        O_QMAX, O_DEVICE, O_THREADS, O_SLOTS, O_SLOT_BYTES, O_CLIENTS,
        O_USER, O_CHECK, O_HELP, O_ALLOW_UID, O_ALLOW_GID, O_PER_PID,
        O_PER_UID, O_AUDIT, O_AUDIT_KEY, O_AUDIT_KEY_ID, O_TRUST,
        O_REQUIRE_SIGNED, O_BATCHING, O_INLINE
    };

    static const struct option  opts[] = {
        { "socket",           required_argument, NULL, O_SOCKET },
        { "model",            required_argument, NULL, O_MODEL },
        { "max-batch",        required_argument, NULL, O_MAX_BATCH },
        { "max-delay-us",     required_argument, NULL, O_MAX_DELAY },
        { "batching",         required_argument, NULL, O_BATCHING },
        { "inline-us",        required_argument, NULL, O_INLINE },
        { "queue-timeout-us", required_argument, NULL, O_QTIMEOUT },
        { "queue-max",        required_argument, NULL, O_QMAX },
        { "device",           required_argument, NULL, O_DEVICE },
        { "threads",          required_argument, NULL, O_THREADS },
        { "slots",            required_argument, NULL, O_SLOTS },
        { "slot-bytes",       required_argument, NULL, O_SLOT_BYTES },
        { "clients",          required_argument, NULL, O_CLIENTS },
        { "user",             required_argument, NULL, O_USER },
        { "allow-uid",        required_argument, NULL, O_ALLOW_UID },
        { "allow-gid",        required_argument, NULL, O_ALLOW_GID },
        { "clients-per-pid",  required_argument, NULL, O_PER_PID },
        { "clients-per-uid",  required_argument, NULL, O_PER_UID },
        { "audit",            required_argument, NULL, O_AUDIT },
        { "audit-key",        required_argument, NULL, O_AUDIT_KEY },
        { "audit-key-id",     required_argument, NULL, O_AUDIT_KEY_ID },
        { "check",            required_argument, NULL, O_CHECK },
        { "trust",            required_argument, NULL, O_TRUST },
        { "require-signed",   no_argument,       NULL, O_REQUIRE_SIGNED },
        { "help",             no_argument,       NULL, O_HELP },
        { NULL, 0, NULL, 0 }
    };

    /*
     * Before anything can start a thread (the CUDA runtime, OpenMP, the
     * sanitizers): every thread inherits the mask, so the signals reach
     * only the ring server's signalfd.
     */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);

    reg = &ig_registry;

    memset(&conf, 0, sizeof(conf));
    conf.clients = 64;
    conf.clients_per_pid = 2;
    conf.slots = 64;
    conf.slot_bytes = 65536;
    conf.max_batch = 64;
    conf.max_delay_us = 200;
    conf.queue_timeout_us = 100000;
    conf.queue_max = 1024;
    conf.inline_us = 50;
    device = "auto";
    check_path = NULL;
    audit = audit_key = audit_key_id = NULL;
    v = 0;
    threads = 0;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {

        case O_SOCKET:
            conf.socket_path = optarg;
            break;

        case O_MODEL:
            if (ig_reg_parse(reg, optarg, err, sizeof(err)) != 0) {
                fprintf(stderr, "infergate-backend: %s\n", err);
                return 2;
            }
            break;

        case O_MAX_BATCH:
            if (num("--max-batch", optarg, 1, 65536, &v)) {
                return 2;
            }
            conf.max_batch = (uint32_t) v;
            break;

        case O_MAX_DELAY:
            if (num("--max-delay-us", optarg, 0, 1000000, &v)) {
                return 2;
            }
            conf.max_delay_us = (uint32_t) v;
            break;

        case O_BATCHING:
            if (strcmp(optarg, "continuous") == 0) {
                ig_batcher_set_mode(IG_BATCH_CONTINUOUS);

            } else if (strcmp(optarg, "window") == 0) {
                ig_batcher_set_mode(IG_BATCH_WINDOW);

            } else {
                fprintf(stderr, "infergate-backend: --batching \"%s\": "
                        "expected continuous or window\n", optarg);
                return 2;
            }
            break;

        case O_INLINE:
            if (num("--inline-us", optarg, 0, 1000000, &v)) {
                return 2;
            }
            conf.inline_us = (uint32_t) v;
            break;

        case O_QTIMEOUT:
            if (num("--queue-timeout-us", optarg, 0, 60000000, &v)) {
                return 2;
            }
            conf.queue_timeout_us = (uint32_t) v;
            break;

        case O_QMAX:
            if (num("--queue-max", optarg, 1, 1 << 20, &v)) {
                return 2;
            }
            conf.queue_max = (uint32_t) v;
            break;

        case O_DEVICE:
            device = optarg;
            break;

        case O_THREADS:
            if (num("--threads", optarg, 0, 1024, &v)) {
                return 2;
            }
            threads = (int) v;
            break;

        case O_SLOTS:
            if (num("--slots", optarg, 1, IG_RING_MAX_SLOTS, &v)) {
                return 2;
            }
            if (v & (v - 1)) {
                fprintf(stderr, "infergate-backend: --slots \"%s\": must "
                        "be a power of two\n", optarg);
                return 2;
            }
            conf.slots = (uint32_t) v;
            break;

        case O_SLOT_BYTES:
            if (num("--slot-bytes", optarg, sizeof(ig_ring_slot_t) + 64,
                    64ULL << 20, &v))
            {
                return 2;
            }
            conf.slot_bytes = v;
            break;

        case O_CLIENTS:
            if (num("--clients", optarg, 1, IG_RING_MAX_CLIENTS, &v)) {
                return 2;
            }
            conf.clients = (uint32_t) v;
            break;

        case O_USER:
            conf.user = optarg;
            break;

        case O_ALLOW_UID:
            if (id_list("--allow-uid", optarg, 0, ids, &nids)) {
                return 2;
            }
            for (k = 0; k < nids; k++) {
                conf.allow_uid[k] = (uid_t) ids[k];
            }
            conf.nallow_uid = nids;
            break;

        case O_ALLOW_GID:
            if (id_list("--allow-gid", optarg, 1, ids, &nids)) {
                return 2;
            }
            for (k = 0; k < nids; k++) {
                conf.allow_gid[k] = (gid_t) ids[k];
            }
            conf.nallow_gid = nids;
            break;

        case O_PER_PID:
            if (num("--clients-per-pid", optarg, 1, IG_RING_MAX_CLIENTS,
                    &v))
            {
                return 2;
            }
            conf.clients_per_pid = (uint32_t) v;
            break;

        case O_PER_UID:
            if (num("--clients-per-uid", optarg, 1, IG_RING_MAX_CLIENTS,
                    &v))
            {
                return 2;
            }
            conf.clients_per_uid = (uint32_t) v;
            break;

        case O_AUDIT:
            audit = optarg;
            break;

        case O_AUDIT_KEY:
            audit_key = optarg;
            break;

        case O_AUDIT_KEY_ID:
            audit_key_id = optarg;
            break;

        case O_CHECK:
            check_path = optarg;
            break;

        case O_TRUST:
            if (reg->trust) {
                fprintf(stderr, "infergate-backend: --trust given twice\n");
                return 2;
            }
            if (ig_mc_trust_load(&ig_trust, optarg, err, sizeof(err)) != 0) {
                fprintf(stderr, "infergate-backend: %s\n", err);
                return 2;
            }
            reg->trust = &ig_trust;
            reg->trust_dir = optarg;
            break;

        case O_REQUIRE_SIGNED:
            reg->require_signed = 1;
            break;

        case O_HELP:
            usage(stdout);
            return 0;

        default:
            usage(stderr);
            return 2;
        }
    }

    if (optind != argc) {
        fprintf(stderr, "infergate-backend: unexpected argument \"%s\"\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }

    if (check_path == NULL) {
        if (conf.socket_path == NULL || reg->nspecs == 0) {
            fprintf(stderr, "infergate-backend: --socket and at least one "
                    "--model are required\n");
            usage(stderr);
            return 2;
        }
    }

    if ((audit != NULL) != (audit_key != NULL)
        || (audit != NULL) != (audit_key_id != NULL))
    {
        fprintf(stderr, "infergate-backend: --audit, --audit-key and "
                "--audit-key-id go together\n");
        return 2;
    }

    if (audit && check_path) {
        fprintf(stderr, "infergate-backend: --audit does not apply to "
                "--check\n");
        return 2;
    }

    if (reg->require_signed && reg->trust == NULL) {
        fprintf(stderr, "infergate-backend: --require-signed needs --trust "
                "DIR\n");
        return 2;
    }

    for (k = 0; k < reg->nspecs; k++) {
        if ((reg->specs[k].sig[0] || reg->specs[k].signer[0])
            && reg->trust == NULL)
        {
            fprintf(stderr, "infergate-backend: --model %s: #sig= and "
                    "#signer= need --trust DIR\n", reg->specs[k].name);
            return 2;
        }
    }

    /* no bound of its own: --clients */
    if (conf.clients_per_uid == 0) {
        conf.clients_per_uid = conf.clients;
    }

    /* a request alone would always time out waiting for company */
    if (conf.queue_timeout_us != 0
        && conf.max_delay_us >= conf.queue_timeout_us)
    {
        fprintf(stderr, "infergate-backend: --max-delay-us %u must be "
                "below --queue-timeout-us %u (or --queue-timeout-us 0)\n",
                conf.max_delay_us, conf.queue_timeout_us);
        return 2;
    }

    ex = ig_exec_create(device, threads, err, sizeof(err));
    if (ex == NULL) {
        fprintf(stderr, "infergate-backend: %s\n", err);
        return 2;
    }

    if (check_path) {
        rc = check(check_path, ex);
        ig_exec_destroy(ex);
        return rc;
    }

    ig_blog("info", "start", "pid=%d socket=%s models=%u", (int) getpid(),
            ig_blogq(q, sizeof(q), conf.socket_path), reg->nspecs);
    ig_blog("info", "device", "requested=%s name=%s threads=%d", device,
            ig_blogq(q, sizeof(q), ex->name), ex->threads);
    ig_blog("info", "trust", "dir=%s signers=%u require_signed=%s",
            ig_blogq(q, sizeof(q), reg->trust_dir ? reg->trust_dir : ""),
            reg->trust ? ig_trust.n : 0,
            reg->require_signed ? "yes" : "no");

    /* opened before --user drops root, as the socket is */
    if (audit) {
        if (ig_baudit_open(audit, audit_key, audit_key_id, err, sizeof(err))
            != 0)
        {
            fprintf(stderr, "infergate-backend: %s\n", err);
            ig_exec_destroy(ex);
            return 2;
        }

        ig_baudit_start(conf.socket_path, ex->name, reg->nspecs);
    }

    conf.ex = ex;
    conf.reg = reg;

    rc = ig_rs_run(&conf);

    ig_baudit_close(rc);

    ig_exec_destroy(ex);

    return rc;
}
