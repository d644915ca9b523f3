
/*
 * Copyright (C) infergate authors
 *
 * The backend's signed audit trail: see baudit.h.  The record layout,
 * the MAC, the chain links and PATH.chainstate are lib/ig_audit's, and
 * the chain markers are written by ig_audit_marker_write(), as the
 * gateway's workers write theirs.
 */


#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "baudit.h"
#include "blog.h"
#include "ig_audit.h"
#include "ig_json.h"


/* the longest record: a path and a reason, escaped six times over */
#define IG_BA_BODY_MAX   (8 * IG_REG_PATH_MAX + 6 * 512 + 2048)
#define IG_BA_BUF_MAX    (IG_BA_BODY_MAX + IG_AUDIT_LINK_MAX                \
                          + IG_AUDIT_TRAILER_MAX)


typedef struct {
    unsigned char       *p;
    unsigned char       *end;
    int                  overflow;
} ig_ba_out_t;


typedef struct {
    pthread_mutex_t      lock;
    int                  on;
    int                  fd;
    int                  state_fd;
    char                 path[IG_REG_PATH_MAX];
    char                 state_path[IG_REG_PATH_MAX
                                    + sizeof(IG_AUDIT_STATE_SUFFIX)];
    ig_audit_keyring_t   ring;
    ig_audit_chain_t    *chain;
    uint64_t             lost;
    time_t               err_logged;
    unsigned char        buf[IG_BA_BUF_MAX];
    char                 text[IG_AUDIT_STATE_SIZE_MAX + 1];
    ig_audit_state_t     st;
} ig_ba_t;


static ig_ba_t  ig_ba = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .fd = -1,
    .state_fd = -1
};


static void
ig_ba_lit(ig_ba_out_t *o, const char *s)
{
    size_t  n = strlen(s);

    if ((size_t) (o->end - o->p) < n) {
        o->overflow = 1;
        return;
    }

    memcpy(o->p, s, n);
    o->p += n;
}


/* "s", JSON-escaped (invalid UTF-8 and control bytes included) */
static void
ig_ba_str(ig_ba_out_t *o, const char *s)
{
    size_t  n, len;

    len = strlen(s);
    n = ig_json_escape_len((const unsigned char *) s, len);

    if ((size_t) (o->end - o->p) < n + 2) {
        o->overflow = 1;
        return;
    }

    *o->p++ = '"';
    o->p = ig_json_escape(o->p, (const unsigned char *) s, len);
    *o->p++ = '"';
}


static void
ig_ba_fmt(ig_ba_out_t *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
ig_ba_fmt(ig_ba_out_t *o, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    va_start(ap, fmt);
    n = vsnprintf((char *) o->p, o->end - o->p, fmt, ap);
    va_end(ap);

    if (n < 0 || n >= o->end - o->p) {
        o->overflow = 1;
        return;
    }

    o->p += n;
}


/*
 * {"@timestamp":"…","event":{"kind":"event","category":["CAT"],
 *  "action":"ACTION","outcome":"OUTCOME"[,"reason":"…"]},
 *  "service":{"type":"infergate-backend"},
 */
static void
ig_ba_head(ig_ba_out_t *o, const char *category, const char *action,
    const char *outcome, const char *reason)
{
    struct tm        tm;
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);

    ig_ba_fmt(o, "{\"@timestamp\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\","
              "\"event\":{\"kind\":\"event\",\"category\":[\"%s\"],"
              "\"action\":\"%s\",\"outcome\":\"%s\"",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
              tm.tm_min, tm.tm_sec, (int) (ts.tv_nsec / 1000000), category,
              action, outcome);

    if (reason) {
        ig_ba_lit(o, ",\"reason\":");
        ig_ba_str(o, reason);
    }

    ig_ba_lit(o, "},\"service\":{\"type\":\"infergate-backend\"},");
}


/* writes a sealed line; 0, or -1 (counted lost, logged once a second) */
static int
ig_ba_write(const unsigned char *buf, size_t len)
{
    size_t   n;
    ssize_t  w;
    time_t   now;

    for (n = 0; n < len; n += (size_t) w) {
        w = write(ig_ba.fd, buf + n, len - n);

        if (w == -1 && errno == EINTR) {
            w = 0;
            continue;
        }

        if (w <= 0) {
            if (n != 0 && write(ig_ba.fd, "\n", 1) != 1) {
                /* the half line stays: the verifier names it malformed */
            }

            ig_ba.lost++;
            now = time(NULL);

            if (now != ig_ba.err_logged) {
                ig_ba.err_logged = now;
                ig_blog("error", "audit_write_failed", "errno=%d lost=%llu",
                        w == 0 ? 0 : errno, (unsigned long long) ig_ba.lost);
            }

            return -1;
        }
    }

    return 0;
}


/* seals o's record (it ends inside "infergate":{…, after a ',') */
static void
ig_ba_seal_write(ig_ba_out_t *o)
{
    size_t  len;

    if (o->overflow) {
        /* cannot happen with IG_BA_BODY_MAX; a record is never cut */
        ig_ba.lost++;
        ig_blog("error", "audit_record_too_long", "lost=%llu",
                (unsigned long long) ig_ba.lost);
        return;
    }

    len = ig_audit_seal(ig_ba.chain, ig_ba.buf, o->p - ig_ba.buf);

    if (len == 0) {
        ig_ba.lost++;
        ig_blog("error", "audit_seal_failed", "lost=%llu",
                (unsigned long long) ig_ba.lost);
        return;
    }

    (void) ig_ba_write(ig_ba.buf, len);
}


static int
ig_ba_alive(int64_t pid)
{
    return kill((pid_t) pid, 0) == 0 || errno != ESRCH;
}


/*
 * A chain marker, written by lib/ig_audit as the gateway's are: under
 * the state file's exclusive lock, the marker names the log's newest
 * marker (or "genesis"), is written, then becomes it.
 */
static void
ig_ba_marker(int start)
{
    time_t             now;
    uint64_t           seq;
    ig_ba_out_t        o;
    ig_audit_marker_t  mk;

    o.p = ig_ba.buf;
    o.end = ig_ba.buf + IG_BA_BODY_MAX;
    o.overflow = 0;

    ig_ba_head(&o, "process", start ? "chain_start" : "chain_end",
               "success", NULL);

    /* chain_end: the records sealed before it, chain_start included */
    seq = ig_audit_chain_seq(ig_ba.chain);

    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"records\":%llu,"
              "\"lost\":%llu,", (int) getpid(), (unsigned long long) seq,
              (unsigned long long) ig_ba.lost);

    if (o.overflow) {
        ig_ba.lost++;
        return;
    }

    (void) ig_audit_marker_write(ig_ba.state_fd, ig_ba.fd, ig_ba.chain,
                                 ig_ba.buf, o.p - ig_ba.buf, start,
                                 (int64_t) getpid(), ig_ba_alive,
                                 &ig_ba.st, ig_ba.text, &mk);

    if (mk.lock_errno) {
        ig_blog("error", "audit_state_lock_failed", "errno=%d",
                mk.lock_errno);
    }

    if (mk.damaged) {
        /* the verifier will report the new genesis as a reset */
        ig_blog("error", "audit_state_damaged", "reason=\"%s\" "
                "action=\"starting a new genesis\"", mk.damage);
    }

    if (mk.state_failed) {
        ig_blog("error", "audit_state_write_failed", "errno=%d",
                mk.state_errno);
    }

    if (mk.len == 0) {
        ig_ba.lost++;
        now = time(NULL);

        if (mk.seal_failed) {
            ig_blog("error", "audit_seal_failed", "lost=%llu",
                    (unsigned long long) ig_ba.lost);

        } else if (now != ig_ba.err_logged) {
            ig_ba.err_logged = now;
            ig_blog("error", "audit_write_failed", "errno=%d lost=%llu",
                    mk.write_errno, (unsigned long long) ig_ba.lost);
        }
    }
}


int
ig_baudit_open(const char *path, const char *key_file, const char *key_id,
    char *err, size_t errlen)
{
    char                   id[IG_AUDIT_CHAIN_ID_LEN + 1], e[256];
    const ig_audit_key_t  *key;

    if (strlen(path) >= sizeof(ig_ba.path)) {
        snprintf(err, errlen, "--audit: path longer than %d bytes",
                 IG_REG_PATH_MAX - 1);
        return -1;
    }

    if (ig_audit_keyring_load(&ig_ba.ring, key_file, e, sizeof(e)) != 0) {
        snprintf(err, errlen, "--audit-key: %s", e);
        return -1;
    }

    key = ig_audit_keyring_find(&ig_ba.ring, key_id, strlen(key_id));
    if (key == NULL) {
        snprintf(err, errlen, "--audit-key-id \"%s\": no such key in %s",
                 key_id, key_file);
        goto failed;
    }

    snprintf(ig_ba.path, sizeof(ig_ba.path), "%s", path);
    snprintf(ig_ba.state_path, sizeof(ig_ba.state_path), "%s%s", path,
             IG_AUDIT_STATE_SUFFIX);

    ig_ba.fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (ig_ba.fd == -1) {
        snprintf(err, errlen, "--audit %s: open() failed: %s", path,
                 strerror(errno));
        goto failed;
    }

    ig_ba.state_fd = open(ig_ba.state_path, O_RDWR | O_CREAT | O_CLOEXEC,
                          0600);
    if (ig_ba.state_fd == -1) {
        snprintf(err, errlen, "--audit: cannot open the chain state file "
                 "%s: %s", ig_ba.state_path, strerror(errno));
        goto failed;
    }

    if (ig_audit_chain_id(id) != 0
        || (ig_ba.chain = ig_audit_chain_open(key, id)) == NULL)
    {
        snprintf(err, errlen, "--audit: cannot open a chain (OpenSSL)");
        goto failed;
    }

    pthread_mutex_lock(&ig_ba.lock);
    ig_ba.on = 1;
    ig_ba_marker(1);
    pthread_mutex_unlock(&ig_ba.lock);

    ig_blog("info", "audit_open", "path=%s chain=%s key_id=%s", path,
            ig_audit_chain_get_id(ig_ba.chain), key_id);

    return 0;

failed:

    if (ig_ba.fd != -1) {
        close(ig_ba.fd);
        ig_ba.fd = -1;
    }

    if (ig_ba.state_fd != -1) {
        close(ig_ba.state_fd);
        ig_ba.state_fd = -1;
    }

    ig_audit_keyring_cleanse(&ig_ba.ring);

    return -1;
}


void
ig_baudit_close(int code)
{
    ig_ba_out_t  o;

    pthread_mutex_lock(&ig_ba.lock);

    if (!ig_ba.on) {
        pthread_mutex_unlock(&ig_ba.lock);
        return;
    }

    o.p = ig_ba.buf;
    o.end = ig_ba.buf + IG_BA_BODY_MAX;
    o.overflow = 0;

    ig_ba_head(&o, "process", "stop", code == 0 ? "success" : "failure",
               NULL);
    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"exit_code\":%d,",
              (int) getpid(), code);
    ig_ba_seal_write(&o);

    ig_ba_marker(0);

    ig_ba.on = 0;
    ig_audit_chain_close(ig_ba.chain);
    ig_ba.chain = NULL;
    close(ig_ba.fd);
    close(ig_ba.state_fd);
    ig_ba.fd = ig_ba.state_fd = -1;
    ig_audit_keyring_cleanse(&ig_ba.ring);

    pthread_mutex_unlock(&ig_ba.lock);
}


/* takes the lock; NULL (unlocked) when no audit is open */
static ig_ba_out_t *
ig_ba_begin(ig_ba_out_t *o, const char *category, const char *action,
    const char *outcome, const char *reason)
{
    pthread_mutex_lock(&ig_ba.lock);

    if (!ig_ba.on) {
        pthread_mutex_unlock(&ig_ba.lock);
        return NULL;
    }

    o->p = ig_ba.buf;
    o->end = ig_ba.buf + IG_BA_BODY_MAX;
    o->overflow = 0;

    ig_ba_head(o, category, action, outcome, reason);

    return o;
}


static void
ig_ba_end(ig_ba_out_t *o)
{
    ig_ba_seal_write(o);
    pthread_mutex_unlock(&ig_ba.lock);
}


void
ig_baudit_start(const char *socket, const char *device, unsigned nspecs)
{
    ig_ba_out_t  o;

    if (ig_ba_begin(&o, "process", "backend_start", "success", NULL)
        == NULL)
    {
        return;
    }

    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"socket\":", (int) getpid());
    ig_ba_str(&o, socket);
    ig_ba_lit(&o, ",\"device\":");
    ig_ba_str(&o, device);
    ig_ba_fmt(&o, ",\"model_specs\":%u,", nspecs);

    ig_ba_end(&o);
}


void
ig_baudit_model(const ig_reg_result_t *res, const char *name, uint32_t id,
    const char *device, const char *reason)
{
    int           refused;
    char          sha[65];
    const char   *action;
    ig_ba_out_t   o;

    refused = (res->ev == IG_REG_REFUSED || reason != NULL);

    if (refused) {
        action = "model_refused";
        if (reason == NULL) {
            reason = res->err;
        }

    } else {
        action = (res->ev == IG_REG_RELOADED) ? "model_reloaded"
                                              : "model_loaded";
    }

    if (ig_ba_begin(&o, "configuration", action,
                    refused ? "failure" : "success", reason)
        == NULL)
    {
        return;
    }

    ig_audit_hex(sha, res->file_sha, sizeof(res->file_sha));
    sha[64] = '\0';

    ig_ba_lit(&o, "\"file\":{\"path\":");
    ig_ba_str(&o, res->path);

    if (!refused) {
        ig_ba_fmt(&o, ",\"hash\":{\"sha256\":\"%s\"}", sha);
    }

    ig_ba_fmt(&o, "},\"infergate\":{\"pid\":%d,\"model\":{\"name\":",
              (int) getpid());
    ig_ba_str(&o, name);
    ig_ba_lit(&o, ",\"version\":");
    ig_ba_str(&o, res->version);

    if (id != UINT32_MAX) {
        ig_ba_fmt(&o, ",\"id\":%u", id);
    }

    if (refused) {
        ig_ba_fmt(&o, ",\"kept\":%s,\"signature_failure\":%s",
                  res->ev == IG_REG_REFUSED && res->id != UINT32_MAX
                  ? "true" : "false",
                  res->sig_refused ? "true" : "false");

    } else {
        ig_ba_fmt(&o, ",\"sha256\":\"%s\",\"signer\":", sha);
        ig_ba_str(&o, res->signer);
        ig_ba_lit(&o, ",\"device\":");
        ig_ba_str(&o, device);
    }

    ig_ba_lit(&o, "},");

    ig_ba_end(&o);
}


void
ig_baudit_start_failed(const char *reason)
{
    ig_ba_out_t  o;

    if (ig_ba_begin(&o, "configuration", "model_refused", "failure", reason)
        == NULL)
    {
        return;
    }

    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"initial\":true,",
              (int) getpid());

    ig_ba_end(&o);
}


void
ig_baudit_reload(unsigned nmodels)
{
    ig_ba_out_t  o;

    if (ig_ba_begin(&o, "configuration", "reload", "success", NULL)
        == NULL)
    {
        return;
    }

    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"models\":%u,",
              (int) getpid(), nmodels);

    ig_ba_end(&o);
}


void
ig_baudit_reload_done(unsigned nmodels, unsigned added)
{
    ig_ba_out_t  o;

    if (ig_ba_begin(&o, "configuration", "reload_done", "success", NULL)
        == NULL)
    {
        return;
    }

    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"models\":%u,\"added\":%u,",
              (int) getpid(), nmodels, added);

    ig_ba_end(&o);
}


void
ig_baudit_drain(unsigned nmodels, int signo)
{
    ig_ba_out_t  o;

    if (ig_ba_begin(&o, "process", "drain", "success", NULL) == NULL) {
        return;
    }

    ig_ba_fmt(&o, "\"infergate\":{\"pid\":%d,\"models\":%u,\"signal\":%d,",
              (int) getpid(), nmodels, signo);

    ig_ba_end(&o);
}


void
ig_baudit_client(int index, pid_t pid, uid_t uid, gid_t gid,
    const char *reason)
{
    ig_ba_out_t  o;

    if (ig_ba_begin(&o, "session",
                    reason ? "client_refused" : "client_attached",
                    reason ? "failure" : "success", reason)
        == NULL)
    {
        return;
    }

    /* ECS: the peer's ids under client.user, its pid under infergate */
    ig_ba_fmt(&o, "\"client\":{\"user\":{\"id\":\"%u\",\"group\":{\"id\":"
              "\"%u\"}}},\"infergate\":{\"pid\":%d,\"peer\":{\"pid\":%d,"
              "\"uid\":%u,\"gid\":%u", (unsigned) uid, (unsigned) gid,
              (int) getpid(), (int) pid, (unsigned) uid, (unsigned) gid);

    if (index >= 0) {
        ig_ba_fmt(&o, ",\"client\":%d", index);
    }

    ig_ba_lit(&o, "},");

    ig_ba_end(&o);
}
