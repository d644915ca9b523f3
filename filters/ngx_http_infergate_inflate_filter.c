
/*
 * Copyright (C) infergate authors
 *
 * Request bodies sent with "Content-Encoding: gzip" or "deflate" (what
 * tritonclient.http sends with request_compression_algorithm=...): a
 * request-body filter inflates each buffer as it arrives, so every
 * reader after it (the schema's streaming validator, the infer handler,
 * the cache's body key, proxy_pass) sees the JSON, never the coding.  It
 * sits first in the body-filter chain, before the schema's filter.
 *
 * The inflated size is bounded by client_max_body_size (64m when that is
 * 0): past it the rest of the body is read and dropped and the request
 * is refused with 413, so a decompression bomb costs at most that much
 * memory.  A corrupt or truncated stream is a 400; any other coding
 * (br, zstd, a list such as "gzip, gzip") is a 415 with
 * "Accept-Encoding: gzip, deflate" (RFC 7694).  The refusals are made by
 * the body's reader: the schema stage, or the "inflate" stage, which
 * reads the body itself where no schema does.
 *
 * "infergate_inflate on|off": off passes the body and its
 * Content-Encoding through untouched (and a schema there then refuses
 * the coded body with 415).  Unset, it is on where the location reads
 * JSON bodies (infergate_schema, infergate_infer, or a limit, Bloom or
 * cache key naming a body variable) and off elsewhere, so that a plain
 * proxy_pass location keeps its bodies and codings as they came.  What
 * is passed on has "Content-Encoding: identity" and the inflated length.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <zlib.h>

#include "ngx_http_infergate.h"


#define NGX_HTTP_IG_CODING_NONE     0
#define NGX_HTTP_IG_CODING_GZIP     1
#define NGX_HTTP_IG_CODING_DEFLATE  2
#define NGX_HTTP_IG_CODING_OTHER    3

#define NGX_HTTP_IG_INFLATE_MAX     (64 * 1024 * 1024)

#define NGX_HTTP_IG_INFLATE_MODULE  ngx_http_infergate_inflate_filter_module


typedef struct {
    ngx_flag_t                  enable;
} ngx_http_ig_inflate_loc_conf_t;


typedef struct {
    z_stream                    zs;
    ngx_buf_t                  *out;         /* being filled               */
    ngx_table_elt_t            *coding_hdr;  /* Content-Encoding           */
    off_t                       total;       /* inflated bytes             */
    off_t                       limit;
    size_t                      chunk;
    ngx_uint_t                  coding;
    unsigned                    init:1;      /* inflateInit2() done        */
    unsigned                    ended:1;     /* at the end of a stream     */
    unsigned                    done:1;      /* last_buf passed on         */
} ngx_http_ig_inflate_ctx_t;


static ngx_int_t ngx_http_ig_inflate_filter_init(ngx_conf_t *cf);
static void *ngx_http_ig_inflate_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_ig_inflate_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_uint_t ngx_http_ig_inflate_enabled(ngx_http_request_t *r);
static ngx_uint_t ngx_http_ig_inflate_on(ngx_http_request_t *r,
    ngx_http_ig_loc_conf_t *lcf);
static ngx_int_t ngx_http_ig_inflate_handler(ngx_http_request_t *r,
    ngx_http_ig_ctx_t *ctx, ngx_http_ig_loc_conf_t *lcf);
static void ngx_http_ig_inflate_body_handler(ngx_http_request_t *r);
static ngx_table_elt_t *ngx_http_ig_coding_header(ngx_http_request_t *r,
    ngx_uint_t *coding);
static ngx_int_t ngx_http_ig_inflate_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_ig_inflate_start(ngx_http_request_t *r,
    ngx_http_ig_inflate_ctx_t **stp);
static ngx_int_t ngx_http_ig_inflate_buf(ngx_http_request_t *r,
    ngx_http_ig_inflate_ctx_t *st, ngx_buf_t *b, ngx_chain_t ***llp);
static void ngx_http_ig_inflate_fail(ngx_http_request_t *r,
    ngx_http_ig_inflate_ctx_t *st, ngx_uint_t status, const char *error);
static void ngx_http_ig_inflate_cleanup(void *data);


static ngx_command_t  ngx_http_ig_inflate_commands[] = {

    { ngx_string("infergate_inflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_ig_inflate_loc_conf_t, enable),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_infergate_inflate_filter_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_ig_inflate_filter_init,       /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_ig_inflate_create_loc_conf,   /* create location configuration */
    ngx_http_ig_inflate_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_infergate_inflate_filter_module = {
    NGX_MODULE_V1,
    &ngx_http_infergate_inflate_filter_module_ctx, /* module context */
    ngx_http_ig_inflate_commands,          /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* after the schema stage: reads a coded body where no schema did */

const ngx_http_ig_stage_t  ngx_http_ig_inflate_stage = {
    ngx_string("inflate"),
    ngx_http_ig_inflate_on,
    ngx_http_ig_inflate_handler
};


static ngx_http_request_body_filter_pt  ngx_http_ig_next_body_filter;


static void *
ngx_http_ig_inflate_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_ig_inflate_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_ig_inflate_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->enable = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_ig_inflate_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_ig_inflate_loc_conf_t *prev = parent;
    ngx_http_ig_inflate_loc_conf_t *conf = child;

    /* unset stays unset: ngx_http_ig_inflate_enabled() decides */
    ngx_conf_merge_value(conf->enable, prev->enable, NGX_CONF_UNSET);

    return NGX_CONF_OK;
}


/*
 * "infergate_inflate" as set, or, unset, whether the location reads JSON
 * bodies: its merged confs are final by now, whatever the module order.
 */

static ngx_uint_t
ngx_http_ig_inflate_enabled(ngx_http_request_t *r)
{
    ngx_http_ig_inflate_loc_conf_t  *ilcf;

    ilcf = ngx_http_get_module_loc_conf(r, NGX_HTTP_IG_INFLATE_MODULE);

    if (ilcf->enable != NGX_CONF_UNSET) {
        return ilcf->enable;
    }

    return ngx_http_ig_infer_on(r) || ngx_http_ig_schema_reads_body(r);
}


/*
 * The request's coding: NONE (no header, "identity" or empty), GZIP
 * ("gzip", "x-gzip"), DEFLATE, or OTHER (anything else, a list, or the
 * header repeated).  Returns the header, or NULL when there is none.
 */

static ngx_table_elt_t *
ngx_http_ig_coding_header(ngx_http_request_t *r, ngx_uint_t *coding)
{
    u_char           *p, *last;
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *found;

    *coding = NGX_HTTP_IG_CODING_NONE;
    found = NULL;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Content-Encoding") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Content-Encoding",
                               sizeof("Content-Encoding") - 1)
               != 0)
        {
            continue;
        }

        if (found) {
            *coding = NGX_HTTP_IG_CODING_OTHER;
            return found;
        }

        found = &h[i];
    }

    if (found == NULL) {
        return NULL;
    }

    p = found->value.data;
    last = p + found->value.len;

    while (p < last && (*p == ' ' || *p == '\t')) {
        p++;
    }

    while (last > p && (last[-1] == ' ' || last[-1] == '\t')) {
        last--;
    }

    len = last - p;

    if (len == 0
        || (len == 8 && ngx_strncasecmp(p, (u_char *) "identity", 8) == 0))
    {
        *coding = NGX_HTTP_IG_CODING_NONE;

    } else if ((len == 4 && ngx_strncasecmp(p, (u_char *) "gzip", 4) == 0)
               || (len == 6
                   && ngx_strncasecmp(p, (u_char *) "x-gzip", 6) == 0))
    {
        *coding = NGX_HTTP_IG_CODING_GZIP;

    } else if (len == 7 && ngx_strncasecmp(p, (u_char *) "deflate", 7) == 0) {
        *coding = NGX_HTTP_IG_CODING_DEFLATE;

    } else {
        *coding = NGX_HTTP_IG_CODING_OTHER;
    }

    return found;
}


/*
 * Before a body is read for JSON: NGX_OK when it is not coded or will be
 * inflated here; otherwise the 415 refusal is sent and its code
 * returned.
 */

ngx_int_t
ngx_http_ig_inflate_check(ngx_http_request_t *r)
{
    ngx_uint_t        coding, enable;
    ngx_table_elt_t  *h;

    h = ngx_http_ig_coding_header(r, &coding);

    if (h == NULL || coding == NGX_HTTP_IG_CODING_NONE) {
        return NGX_OK;
    }

    enable = ngx_http_ig_inflate_enabled(r);

    if (enable && coding != NGX_HTTP_IG_CODING_OTHER) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Accept-Encoding");

    if (enable) {
        ngx_str_set(&h->value, "gzip, deflate");

    } else {
        ngx_str_set(&h->value, "identity");
    }

    return ngx_http_ig_problem_cstr(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                    NGX_HTTP_IG_PROBLEM_BASE
                                    "unsupported-content-encoding",
                                    "Unsupported Content-Encoding",
                                    enable
                                    ? "the request body's Content-Encoding "
                                      "must be gzip, deflate or identity"
                                    : "this endpoint takes request bodies "
                                      "without a Content-Encoding");
}


/* the refusal of a body that did not inflate; NGX_DECLINED when it did */

ngx_int_t
ngx_http_ig_inflate_refuse(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx)
{
    ngx_str_t  detail;

    if (ctx->inflate_status == 0) {
        return NGX_DECLINED;
    }

    /* a body refusal, as the schema's are (audit, metrics) */
    ngx_str_set(&ctx->action, "schema_rejected");

    detail.data = (u_char *) ctx->inflate_error;
    detail.len = ngx_strlen(ctx->inflate_error);

    if (ctx->inflate_status == NGX_HTTP_REQUEST_ENTITY_TOO_LARGE) {
        return ngx_http_ig_problem(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   NGX_HTTP_IG_PROBLEM_BASE "body-too-large",
                                   "Request body too large", &detail, NULL);
    }

    return ngx_http_ig_problem(r, NGX_HTTP_BAD_REQUEST,
                               NGX_HTTP_IG_PROBLEM_BASE "corrupt-encoding",
                               "Request body does not decode", &detail,
                               NULL);
}


static ngx_uint_t
ngx_http_ig_inflate_on(ngx_http_request_t *r, ngx_http_ig_loc_conf_t *lcf)
{
    ngx_uint_t  coding;

    if (r->headers_in.content_length_n <= 0 && !r->headers_in.chunked) {
        return 0;
    }

    if (!ngx_http_ig_inflate_enabled(r)) {
        return 0;
    }

    return ngx_http_ig_coding_header(r, &coding) != NULL
           && coding != NGX_HTTP_IG_CODING_NONE;
}


static ngx_int_t
ngx_http_ig_inflate_handler(ngx_http_request_t *r, ngx_http_ig_ctx_t *ctx,
    ngx_http_ig_loc_conf_t *lcf)
{
    ngx_int_t  rc;

    if (r->request_body) {
        if (r->request_body->rest) {
            return NGX_AGAIN;
        }

        /* read: by the schema stage, or by this one */
        return ngx_http_ig_inflate_refuse(r, ctx);
    }

    if (r->discard_body) {
        return NGX_DECLINED;
    }

    /* set first: a refusal may free the request */
    ngx_str_set(&ctx->action, "schema_rejected");

    rc = ngx_http_ig_inflate_check(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_str_null(&ctx->action);

    rc = ngx_http_read_client_request_body(r,
                                           ngx_http_ig_inflate_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    ngx_http_finalize_request(r, NGX_DONE);
    return NGX_DONE;
}


static void
ngx_http_ig_inflate_body_handler(ngx_http_request_t *r)
{
    /* the content handler (infer, proxy_pass) reads the same body again */
    r->preserve_body = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_ig_inflate_start(ngx_http_request_t *r,
    ngx_http_ig_inflate_ctx_t **stp)
{
    int                              wbits;
    ngx_uint_t                       coding;
    ngx_table_elt_t                 *h;
    ngx_pool_cleanup_t              *cln;
    ngx_http_ig_inflate_ctx_t       *st;
    ngx_http_core_loc_conf_t        *clcf;

    *stp = NULL;

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_ig_inflate_ctx_t));
    if (st == NULL) {
        return NGX_ERROR;
    }

    ngx_http_set_ctx(r, st, ngx_http_infergate_inflate_filter_module);
    *stp = st;

    /* not coded, or not here: passed through as it is */
    st->done = 1;

    if (!ngx_http_ig_inflate_enabled(r)) {
        return NGX_OK;
    }

    h = ngx_http_ig_coding_header(r, &coding);

    if (h == NULL || coding == NGX_HTTP_IG_CODING_NONE
        || coding == NGX_HTTP_IG_CODING_OTHER)
    {
        /* OTHER passes through: the reader's check refuses it */
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    /* gzip: a gzip header and trailer; deflate: the zlib format (RFC
     * 1950), as zlib.compress() and tritonclient make it */

    wbits = (coding == NGX_HTTP_IG_CODING_GZIP) ? MAX_WBITS + 16 : MAX_WBITS;

    if (inflateInit2(&st->zs, wbits) != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "infergate_inflate: inflateInit2() failed");
        return NGX_ERROR;
    }

    st->init = 1;
    cln->handler = ngx_http_ig_inflate_cleanup;
    cln->data = st;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    st->coding = coding;
    st->limit = clcf->client_max_body_size ? clcf->client_max_body_size
                                           : NGX_HTTP_IG_INFLATE_MAX;
    st->chunk = ngx_max(clcf->client_body_buffer_size, 4096);

    st->coding_hdr = h;
    st->done = 0;

    return NGX_OK;
}


static void
ngx_http_ig_inflate_cleanup(void *data)
{
    ngx_http_ig_inflate_ctx_t *st = data;

    if (st->init) {
        inflateEnd(&st->zs);
        st->init = 0;
    }
}


static void
ngx_http_ig_inflate_fail(ngx_http_request_t *r, ngx_http_ig_inflate_ctx_t *st,
    ngx_uint_t status, const char *error)
{
    ngx_http_ig_ctx_t  *ctx;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "infergate_inflate: %s", error);

    ctx = ngx_http_ig_get_ctx(r);

    if (ctx && ctx->inflate_status == 0) {
        ctx->inflate_status = status;
        ctx->inflate_error = error;
    }

    if (st->init) {
        inflateEnd(&st->zs);
        st->init = 0;
    }

    st->out = NULL;
}


static ngx_int_t
ngx_http_ig_inflate_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_int_t                   rc;
    ngx_buf_t                  *b;
    ngx_chain_t                *cl, *out, **ll;
    ngx_table_elt_t            *h;
    ngx_http_ig_ctx_t          *ctx;
    ngx_http_ig_inflate_ctx_t  *st;

    st = ngx_http_get_module_ctx(r, ngx_http_infergate_inflate_filter_module);

    if (st == NULL) {
        if (r != r->main || in == NULL) {
            return ngx_http_ig_next_body_filter(r, in);
        }

        /* the first buffer of the body: decide once */

        if (ngx_http_ig_inflate_start(r, &st) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (st->done) {
        return ngx_http_ig_next_body_filter(r, in);
    }

    out = NULL;
    ll = &out;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (st->init && ngx_buf_in_memory(b) && b->last > b->pos) {
            rc = ngx_http_ig_inflate_buf(r, st, b, &ll);
            if (rc != NGX_OK) {
                return rc;
            }
        }

        /* every input byte is taken: none stays busy */
        b->pos = b->last;

        if (!b->last_buf) {
            continue;
        }

        if (st->init && !st->ended) {
            ngx_http_ig_inflate_fail(r, st, NGX_HTTP_BAD_REQUEST,
                                     "the compressed request body ends "
                                     "before its stream does");
        }

        if (st->init) {
            /* zlib's window goes back now, not with the request */
            inflateEnd(&st->zs);
            st->init = 0;
        }

        /*
         * The last buffer: the one being filled, or an empty one whose
         * pointers are not NULL (readers copy from b->pos, even 0 bytes).
         */

        if (st->out && st->out->last > st->out->pos) {
            b = st->out;

        } else {
            b = ngx_create_temp_buf(r->pool, 1);
            if (b == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        st->out = NULL;
        b->last_buf = 1;

        *ll = ngx_alloc_chain_link(r->pool);
        if (*ll == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        (*ll)->buf = b;
        ll = &(*ll)->next;

        st->done = 1;

        ctx = ngx_http_ig_get_ctx(r);

        if (ctx && ctx->inflate_status == 0) {
            /* what is passed on is not coded any more */
            ngx_str_set(&st->coding_hdr->value, "identity");

            /* the length of what is passed on */
            r->headers_in.content_length_n = st->total;
            h = r->headers_in.content_length;

            if (h) {
                h->value.data = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
                if (h->value.data == NULL) {
                    return NGX_HTTP_INTERNAL_SERVER_ERROR;
                }

                h->value.len = ngx_sprintf(h->value.data, "%O", st->total)
                               - h->value.data;
            }
        }

        break;
    }

    *ll = NULL;

    return ngx_http_ig_next_body_filter(r, out);
}


/* inflates one input buffer; full output buffers are linked at *llp */

static ngx_int_t
ngx_http_ig_inflate_buf(ngx_http_request_t *r, ngx_http_ig_inflate_ctx_t *st,
    ngx_buf_t *b, ngx_chain_t ***llp)
{
    int           zrc;
    size_t        n;
    ngx_chain_t  *cl;

    st->zs.next_in = b->pos;
    st->zs.avail_in = b->last - b->pos;

    while (st->zs.avail_in > 0) {

        if (st->ended) {
            if (st->coding != NGX_HTTP_IG_CODING_GZIP) {
                ngx_http_ig_inflate_fail(r, st, NGX_HTTP_BAD_REQUEST,
                                         "data after the end of the "
                                         "deflate stream");
                return NGX_OK;
            }

            /* another gzip member (RFC 1952 2.2) */
            if (inflateReset(&st->zs) != Z_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            st->ended = 0;
        }

        if (st->out == NULL) {
            st->out = ngx_create_temp_buf(r->pool, st->chunk);
            if (st->out == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        st->zs.next_out = st->out->last;
        st->zs.avail_out = st->out->end - st->out->last;

        zrc = inflate(&st->zs, Z_NO_FLUSH);

        n = st->zs.next_out - st->out->last;
        st->out->last = st->zs.next_out;
        st->total += n;

        if (st->total > st->limit) {
            ngx_http_ig_inflate_fail(r, st,
                                     NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "the request body inflates past the "
                                     "size limit (client_max_body_size)");
            return NGX_OK;
        }

        if (zrc == Z_STREAM_END) {
            st->ended = 1;

        } else if (zrc != Z_OK && !(zrc == Z_BUF_ERROR && n == 0
                                    && st->zs.avail_out == 0))
        {
            ngx_http_ig_inflate_fail(r, st, NGX_HTTP_BAD_REQUEST,
                                     "the request body is not a valid "
                                     "gzip or deflate stream");
            return NGX_OK;
        }

        if (st->out->last == st->out->end) {
            cl = ngx_alloc_chain_link(r->pool);
            if (cl == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            cl->buf = st->out;
            **llp = cl;
            *llp = &cl->next;
            st->out = NULL;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_ig_inflate_filter_init(ngx_conf_t *cf)
{
    ngx_http_ig_next_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_ig_inflate_body_filter;

    return NGX_OK;
}
