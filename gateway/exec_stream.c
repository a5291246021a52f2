/* exec_stream.c - a command's output as Server-Sent Events or NDJSON, read from the exec backend only as fast as the client takes it. */
#include "exec_stream.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/log.h"
#include "sockgate/text.h"
#include "upcall_stream.h"
#include "worker.h"

/* The exec service sends at most 64 KiB of output a frame (protocol.md). */
#define FRAME_MAX (64u * 1024u)
/* Raw output bytes per event: the most one event may cost is 6 times this (every byte a \u00XX escape). */
#define PIECE 16384u
/* Base64 pieces are a multiple of 3 bytes, so no event but the last carries padding. */
#define PIECE_B64 12288u
/* Kept free in the output for the small events (exit, error, a held-back byte sequence, heartbeats). */
#define RESERVE 2048u
/* libmicrohttpd asks for at most this much per call. */
#define BLOCK_SIZE (32u * 1024u)

enum kind { OUT_STDOUT, OUT_STDERR };
static const char *const kind_name[] = {"stdout", "stderr"};

/*
 * One streamed run. Shared by the request (its state, until it ends) and by
 * libmicrohttpd's response (until it releases it): freed when both let go.
 * Everything runs on the worker's thread that owns the connection.
 */
struct exec_stream {
    int refs;
    struct request *rq;           /* NULL once the request ended */
    struct MHD_Connection *conn;  /* the response's connection, NULL once released */
    struct worker *wk;
    struct upcall_stream *us;     /* NULL once closed */
    enum exec_stream_format fmt;
    json_t *argv;
    int has_started;              /* the backend said the command runs */
    int is_answered;              /* the 200 is queued */
    int is_ended;                 /* no event follows what is in out */
    int is_suspended;             /* our content callback parked the connection */
    int end_rc;                   /* why the stream ended before the command started */
    int64_t run_ms;               /* the stream's deadline once the command started: its time limit and a margin */
    char end_err[384];
    struct wk_timer heartbeat;
    int64_t last_out_ms;
    char *out;                    /* events not yet taken by libmicrohttpd, EXEC_STREAM_OUT_CAP at most */
    size_t out_off, out_len;
    uint8_t pend[FRAME_MAX + 4];  /* one frame's output not yet turned into events */
    size_t pend_off, pend_len;
    enum kind pend_kind;
    int pend_is_b64;
    uint8_t carry[2][4];          /* the start of a UTF-8 character cut by the pipe, per stream */
    size_t carry_len[2];
};

enum exec_stream_format exec_stream_format(const char *accept)
{
    const char *p = accept;
    while (p && *p) {
        size_t n;
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        n = strcspn(p, ",; \t");
        if (n == strlen("text/event-stream") && strncasecmp(p, "text/event-stream", n) == 0)
            return EXEC_STREAM_SSE;
        if (n == strlen("application/x-ndjson") && strncasecmp(p, "application/x-ndjson", n) == 0)
            return EXEC_STREAM_NDJSON;
        p += strcspn(p, ",");
    }
    return EXEC_STREAM_NONE;
}

static void es_drop(struct exec_stream *es)
{
    if (--es->refs > 0)
        return;
    upcall_stream_close(es->us);
    worker_timer_cancel(es->wk, &es->heartbeat);
    json_decref(es->argv);
    free(es->out);
    free(es);
}

/* Lets libmicrohttpd call the content callback again when it is parked. */
static void es_wake(struct exec_stream *es)
{
    if (!es->is_suspended || !es->conn)
        return;
    es->is_suspended = 0;
    worker_resume(es->conn);
}

static size_t queued(const struct exec_stream *es)
{
    return es->out_len - es->out_off;
}

/* Makes room for need bytes at the end of out; returns 0 when they do not fit below EXEC_STREAM_OUT_CAP. */
static int out_room(struct exec_stream *es, size_t need)
{
    if (queued(es) + need > EXEC_STREAM_OUT_CAP)
        return 0;
    if (es->out_len + need > EXEC_STREAM_OUT_CAP) {
        memmove(es->out, es->out + es->out_off, queued(es));
        es->out_len -= es->out_off;
        es->out_off = 0;
    }
    return 1;
}

static void out_put(struct exec_stream *es, const char *text, size_t len)
{
    memcpy(es->out + es->out_len, text, len);
    es->out_len += len;
}

/*
 * Appends one event whose data is the JSON object json (compact, one line):
 * SSE "event: NAME" + "data: JSON", or NDJSON with "type": NAME first.
 * Returns 0 when it did not fit (dropped).
 */
static int put_event(struct exec_stream *es, const char *name, const char *json)
{
    char head[64];
    size_t jlen = strlen(json), hlen;
    if (es->fmt == EXEC_STREAM_SSE) {
        hlen = (size_t)snprintf(head, sizeof head, "event: %s\ndata: ", name);
        if (!out_room(es, hlen + jlen + 2))
            return 0;
        out_put(es, head, hlen);
        out_put(es, json, jlen);
        out_put(es, "\n\n", 2);
    } else {
        /* {"type":"NAME", then the object's own members (json starts with '{'). */
        int is_empty = strcmp(json, "{}") == 0;
        hlen = (size_t)snprintf(head, sizeof head, "{\"type\":\"%s\"%s", name, is_empty ? "" : ",");
        if (!out_room(es, hlen + jlen + 1))
            return 0;
        out_put(es, head, hlen);
        out_put(es, json + 1, jlen - 1);
        out_put(es, "\n", 1);
    }
    es->last_out_ms = sg_now_ms();
    return 1;
}

/* Appends a jansson object as an event (stolen); 0 when it did not fit or could not be encoded. */
static int put_event_json(struct exec_stream *es, const char *name, json_t *obj)
{
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    int ok = text ? put_event(es, name, text) : 0;
    free(text);
    json_decref(obj);
    return ok;
}

/* Returns 1 when c stands for itself inside a JSON string (the common case, tested first). */
static inline int is_plain(uint8_t c)
{
    return c >= 0x20 && c != '"' && c != '\\' && c != 0x7f;
}

/* Returns the length of buf[0..len) as the inside of a JSON string. */
static size_t escaped_len(const uint8_t *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = buf[i];
        if (is_plain(c))
            n += 1;
        else if (c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f')
            n += 2;
        else
            n += 6;
    }
    return n;
}

/* Writes buf[0..len) escaped at the end of out (room checked by the caller): runs of plain bytes in one copy. */
static void put_escaped(struct exec_stream *es, const uint8_t *buf, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *o = es->out + es->out_len;
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        uint8_t c;
        while (j < len && is_plain(buf[j]))
            j++;
        memcpy(o, buf + i, j - i);
        o += j - i;
        if (j == len)
            break;
        c = buf[j];
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
        i = j + 1;
    }
    es->out_len = (size_t)(o - es->out);
}

/*
 * Appends one output event for buf[0..len): {"data": text} when is_b64 is 0
 * (buf is valid UTF-8), else {"data_base64": ...}, when the events queued
 * then stay within limit bytes. Returns 0 when it does not fit now (nothing appended).
 */
static int put_output(struct exec_stream *es, enum kind kind, const uint8_t *buf, size_t len, int is_b64,
                      size_t limit)
{
    char head[64], *o;
    /* The most the event can take (every byte \u00XX); its exact size is counted only when that does not fit. */
    size_t hlen, blen = is_b64 ? 4 * ((len + 2) / 3) : 6 * len;
    const char *key = is_b64 ? "data_base64" : "data";
    if (es->fmt == EXEC_STREAM_SSE)
        hlen = (size_t)snprintf(head, sizeof head, "event: %s\ndata: {\"%s\":\"", kind_name[kind], key);
    else
        hlen = (size_t)snprintf(head, sizeof head, "{\"type\":\"%s\",\"%s\":\"", kind_name[kind], key);
    if (!is_b64 && queued(es) + hlen + blen + 4 > limit)
        blen = escaped_len(buf, len);
    if (queued(es) + hlen + blen + 4 > limit || !out_room(es, hlen + blen + 4))
        return 0;
    out_put(es, head, hlen);
    if (is_b64) {
        o = es->out + es->out_len;
        es->out_len += (size_t)EVP_EncodeBlock((unsigned char *)o, buf, (int)len);
    } else {
        put_escaped(es, buf, len);
    }
    out_put(es, es->fmt == EXEC_STREAM_SSE ? "\"}\n\n" : "\"}\n", es->fmt == EXEC_STREAM_SSE ? 4 : 3);
    es->last_out_ms = sg_now_ms();
    return 1;
}

/* Turns pending output into events while they fit; returns 1 when nothing is left pending. */
static int flush_pending(struct exec_stream *es)
{
    while (es->pend_off < es->pend_len) {
        const uint8_t *p = es->pend + es->pend_off;
        size_t n = es->pend_len - es->pend_off;
        if (es->pend_is_b64 && n > PIECE_B64) {
            n = PIECE_B64;
        } else if (!es->pend_is_b64 && n > PIECE) {
            n = PIECE;
            while (n > 0 && (p[n] & 0xC0) == 0x80) /* never cut a character: back up to its first byte */
                n--;
        }
        if (!put_output(es, es->pend_kind, p, n, es->pend_is_b64, EXEC_STREAM_OUT_CAP - RESERVE))
            return 0;
        es->pend_off += n;
    }
    es->pend_off = es->pend_len = 0;
    return 1;
}

/* Returns how many bytes at the end of buf[0..len) begin a UTF-8 character that is not complete (0 to 3). */
static size_t utf8_cut_tail(const uint8_t *buf, size_t len)
{
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        uint8_t c = buf[len - k];
        size_t need;
        if ((c & 0xC0) == 0x80)
            continue;
        need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > k ? k : 0;
    }
    return 0;
}

/*
 * Takes one frame of output: text when it is UTF-8 (a character the pipe cut
 * in two waits for its rest in carry), base64 otherwise. Events that do not
 * fit now stay pending, and the backend is paused until they went out.
 */
static void take_output(struct exec_stream *es, enum kind kind, const uint8_t *body, size_t len)
{
    size_t total, tail;
    memcpy(es->pend, es->carry[kind], es->carry_len[kind]);
    memcpy(es->pend + es->carry_len[kind], body, len);
    total = es->carry_len[kind] + len;
    es->carry_len[kind] = 0;
    tail = utf8_cut_tail(es->pend, total);
    es->pend_kind = kind;
    es->pend_off = 0;
    if (sg_utf8_valid(es->pend, total - tail)) {
        es->pend_is_b64 = 0;
        es->pend_len = total - tail;
        memcpy(es->carry[kind], es->pend + total - tail, tail);
        es->carry_len[kind] = tail;
    } else {
        es->pend_is_b64 = 1;
        es->pend_len = total;
    }
    if (!flush_pending(es))
        upcall_stream_pause(es->us);
}

/* A character still cut when the command ended is not text: it goes as base64 (from the reserve: it always fits). */
static void flush_carries(struct exec_stream *es)
{
    for (int k = OUT_STDOUT; k <= OUT_STDERR; k++) {
        if (es->carry_len[k] && put_output(es, (enum kind)k, es->carry[k], es->carry_len[k], 1, EXEC_STREAM_OUT_CAP))
            es->carry_len[k] = 0;
    }
}

static int64_t header_int(const json_t *h, const char *name)
{
    return json_integer_value(json_object_get(h, name));
}

/* The backend's frames: start, stdout, stderr, exit (protocol.md); returns 1 after exit. */
static int on_frame(struct upcall_stream *us, const json_t *h, const uint8_t *body, size_t len, void *arg)
{
    struct exec_stream *es = arg;
    const char *ev = json_string_value(json_object_get(h, "event"));
    if (!ev)
        return 0;
    if (strcmp(ev, "start") == 0) {
        if (!es->has_started) {
            es->has_started = 1;
            /* The time limit runs from here: the exec service may have queued the command behind others. */
            upcall_stream_set_deadline(us, sg_now_ms() + es->run_ms);
            put_event_json(es, "start", json_pack("{s:s,s:O}", "id", es->rq ? es->rq->id : "", "argv", es->argv));
            if (es->rq && !es->is_answered)
                request_wake(es->rq);
        }
    } else if (strcmp(ev, "stdout") == 0 || strcmp(ev, "stderr") == 0) {
        take_output(es, ev[3] == 'o' ? OUT_STDOUT : OUT_STDERR, body, len);
    } else if (strcmp(ev, "exit") == 0) {
        const json_t *sig = json_object_get(h, "signal");
        flush_carries(es);
        put_event_json(es, "exit",
                       json_pack("{s:I,s:O,s:b,s:I}", "exit_code", (json_int_t)header_int(h, "exit_code"), "signal",
                                 json_is_integer(sig) ? sig : json_null(), "timed_out",
                                 json_is_true(json_object_get(h, "timed_out")), "duration_ms",
                                 (json_int_t)header_int(h, "duration_ms")));
        es->is_ended = 1;
        es_wake(es);
        return 1;
    }
    es_wake(es);
    return 0;
}

static void on_end(struct upcall_stream *us, int rc, const char *err, void *arg)
{
    struct exec_stream *es = arg;
    (void)us;
    if (!es->has_started) {
        /* Refused before it ran: answered as the JSON error of the non-streamed route. */
        es->end_rc = rc != SG_OK ? rc : SG_ERR_PROTO;
        snprintf(es->end_err, sizeof es->end_err, "%s", rc != SG_OK ? err : "the exec backend ended without starting the command");
        if (es->rq)
            request_wake(es->rq);
        return;
    }
    if (rc != SG_OK && !es->is_ended) {
        /* Mid-run: what was sent stays sent; an error event says why nothing more comes. */
        es->pend_off = es->pend_len = 0;
        put_event_json(es, "error", json_pack("{s:s,s:s}", "code", sg_err_code(rc), "message", err));
        es->is_ended = 1;
    }
    es_wake(es);
}

static void on_heartbeat(struct wk_timer *t)
{
    struct exec_stream *es = (struct exec_stream *)((char *)t - offsetof(struct exec_stream, heartbeat));
    int64_t due = es->last_out_ms + EXEC_STREAM_HEARTBEAT_MS;
    if (es->is_ended || !es->conn)
        return;
    if (sg_now_ms() >= due && queued(es) == 0) {
        /* Proxies drop a connection that stays silent; the command may just be thinking. */
        if (es->fmt == EXEC_STREAM_SSE && out_room(es, 14)) {
            out_put(es, ": keep-alive\n\n", 14);
            es->last_out_ms = sg_now_ms();
        } else if (es->fmt == EXEC_STREAM_NDJSON) {
            put_event(es, "keep-alive", "{}");
        }
        es_wake(es);
        due = es->last_out_ms + EXEC_STREAM_HEARTBEAT_MS;
    } else if (due <= sg_now_ms()) {
        due = sg_now_ms() + EXEC_STREAM_HEARTBEAT_MS; /* bytes are still queued: the client is not silent to us */
    }
    worker_timer_arm(es->wk, &es->heartbeat, due);
}

/*
 * The worker's loop stopped (after the shutdown's grace period) with the
 * command still running: it is stopped (its connection closed: the exec
 * service kills it), and an error event says so after what was sent.
 */
static void stop_now(struct exec_stream *es)
{
    upcall_stream_close(es->us);
    es->us = NULL;
    worker_timer_cancel(es->wk, &es->heartbeat);
    es->pend_off = es->pend_len = 0;
    put_event_json(es, "error", json_pack("{s:s,s:s}", "code", sg_err_code(SG_ERR_REFUSED), "message",
                                          "the gateway is shutting down: the command was stopped"));
    es->is_ended = 1;
}

/* libmicrohttpd wants more of the body: hand over what is queued, end, or park the connection. */
static ssize_t es_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct exec_stream *es = cls;
    size_t n;
    (void)pos;
    if (!es->is_ended && worker_is_stopping())
        stop_now(es);
    n = queued(es);
    if (n > 0) {
        if (n > max)
            n = max;
        memcpy(buf, es->out + es->out_off, n);
        es->out_off += n;
        if (es->out_off == es->out_len)
            es->out_off = es->out_len = 0;
        if (es->rq)
            es->rq->bytes_out += n;
        /* Room again: turn what waits into events, and read the backend again once nothing waits. */
        if (es->pend_len && flush_pending(es) && es->us)
            upcall_stream_resume(es->us);
        return (ssize_t)n;
    }
    if (es->is_ended)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (worker_client_gone(es->conn))
        return MHD_CONTENT_READER_END_WITH_ERROR; /* nobody reads: end, and closing the stream stops the command */
    /* Nothing to send: blocking would stall the worker, and returning 0 alone would spin. */
    es->is_suspended = 1;
    worker_suspend(es->conn);
    return 0;
}

/* libmicrohttpd is done with the response. */
static void es_release(void *cls)
{
    struct exec_stream *es = cls;
    es->conn = NULL;
    es->is_suspended = 0;
    upcall_stream_close(es->us); /* the exec service sees the hang-up and kills the command's group */
    es->us = NULL;
    worker_timer_cancel(es->wk, &es->heartbeat);
    es_drop(es);
}

/* The request ended (answered, or the client left first). */
static void es_state_free(struct request *rq, int is_complete)
{
    struct exec_stream *es = rq->state;
    (void)is_complete;
    rq->state = NULL;
    es->rq = NULL;
    if (!es->conn) { /* no response holds it: nothing reads the command any more */
        upcall_stream_close(es->us);
        es->us = NULL;
    }
    es_drop(es);
}

/* Runs when the backend answered the start, or failed before it: the 200 with its event stream, or the error. */
static int es_answer(struct request *rq)
{
    struct exec_stream *es = rq->state;
    struct MHD_Response *resp;
    if (!es->has_started)
        return request_fail(rq, es->end_rc, "%s", es->end_err);
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, BLOCK_SIZE, es_read, es, es_release);
    if (!resp)
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    es->refs++;
    es->conn = rq->conn;
    es->is_answered = 1;
    MHD_add_response_header(resp, "Content-Type",
                            es->fmt == EXEC_STREAM_SSE ? "text/event-stream; charset=utf-8" : "application/x-ndjson");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* nginx in front: do not hold the events */
    worker_timer_arm(es->wk, &es->heartbeat, es->last_out_ms + EXEC_STREAM_HEARTBEAT_MS);
    return respond(rq, 200, resp);
}

int exec_stream_start(struct request *rq, enum exec_stream_format fmt, const json_t *hdr, const void *body,
                      size_t body_len, int64_t run_ms)
{
    struct exec_stream *es = calloc(1, sizeof *es);
    json_t *req = json_deep_copy(hdr);
    char err[512] = "";
    int rc;

    if (!es || !req || !(es->out = malloc(EXEC_STREAM_OUT_CAP)) || json_object_set_new(req, "stream", json_true()) != 0) {
        if (es)
            free(es->out);
        free(es);
        json_decref(req);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    es->refs = 1;
    es->rq = rq;
    es->wk = worker_self();
    es->fmt = fmt;
    es->run_ms = run_ms;
    es->argv = json_incref(json_object_get(hdr, "argv"));
    es->heartbeat.fire = on_heartbeat;
    es->last_out_ms = sg_now_ms();
    rq->state = es;
    rq->state_free = es_state_free;
    rc = upcall_stream_open(&rq->gw->backends[BACKEND_EXEC], req, body, body_len, FRAME_MAX, sg_now_ms() + run_ms, on_frame,
                            on_end, es, &es->us, err, sizeof err);
    json_decref(req);
    if (rc != SG_OK)
        return request_fail(rq, rc, "%s", err);
    request_defer(rq, es_answer);
    return SG_OK;
}
