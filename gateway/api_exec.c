/* api_exec.c - POST /api/v1/exec: an allowlisted command through the exec backend's framed protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api.h"
#include "exec_stream.h"
#include "server.h"
#include "upcall.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/text.h"
#include "validate.h"

#ifdef SG_HAVE_EXEC
#include "exec/policy.h"
#endif

/* stdout and stderr come back in one frame body; the exec service caps them (16 MiB by default). */
#define EXEC_MAX_OUTPUT (64u << 20)
/* On top of the command's own timeout: the kill grace and pipe drain of the exec service, and slack. */
#define EXEC_DEADLINE_MARGIN_MS 6000

/* Adds name (UTF-8 text) or name_base64 (anything else) for buf[0..len). */
static int add_output(json_t *out, const char *name, const char *buf, size_t len)
{
    char key[32];
    if (sg_utf8_valid(buf, len))
        return json_object_set_new(out, name, json_stringn(buf, len));
    {
        size_t b64len = 4 * ((len + 2) / 3) + 1;
        unsigned char *b64 = malloc(b64len);
        int rc;
        if (!b64)
            return -1;
        EVP_EncodeBlock(b64, (const unsigned char *)buf, (int)len);
        snprintf(key, sizeof key, "%s_base64", name);
        rc = json_object_set_new(out, key, json_string((const char *)b64));
        free(b64);
        return rc;
    }
}

/* Turns the exec service's answer (header and stdout+stderr body) into the API's JSON. */
static int make_result(struct request *rq, const json_t *resp, const char *body, size_t body_len, json_t **out)
{
    int64_t out_len = 0, err_len = 0, exit_code = 0, duration = 0, sig = 0;
    if (sg_header_int(resp, "stdout_size", 0, (int64_t)body_len, &out_len) != SG_OK ||
        sg_header_int(resp, "stderr_size", 0, (int64_t)body_len, &err_len) != SG_OK ||
        (size_t)(out_len + err_len) != body_len || sg_header_int(resp, "exit_code", INT32_MIN, INT32_MAX, &exit_code) != SG_OK)
        return request_fail(rq, upstream_failed(&rq->gw->backends[BACKEND_EXEC], SG_ERR_PROTO),
                            "the exec backend's answer has inconsistent sizes or no exit_code");
    sg_header_int(resp, "duration_ms", 0, INT64_MAX, &duration);
    *out = json_pack("{s:I,s:b,s:b,s:I}", "exit_code", (json_int_t)exit_code, "timed_out",
                     json_is_true(json_object_get(resp, "timed_out")), "truncated",
                     json_is_true(json_object_get(resp, "truncated")), "duration_ms", (json_int_t)duration);
    if (!*out || add_output(*out, "stdout", body, (size_t)out_len) != 0 ||
        add_output(*out, "stderr", body + out_len, (size_t)err_len) != 0) {
        json_decref(*out);
        *out = NULL;
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    if (sg_header_int(resp, "signal", 1, 64, &sig) == SG_OK)
        json_object_set_new(*out, "signal", json_integer(sig));
    return SG_OK;
}

/* A command waiting for its answer on the loop. */
struct exec_call {
    struct upcall *call;
    const struct upcall_result *res; /* set when the exchange ended */
};

static void exec_free(struct request *rq, int is_complete)
{
    struct exec_call *ec = rq->state;
    (void)is_complete;
    upcall_free(ec->call); /* still running when the client left: the exec service sees the hang-up */
    free(ec);
    rq->state = NULL;
}

static void exec_done(struct upcall *c, const struct upcall_result *res, void *arg)
{
    struct request *rq = arg;
    struct exec_call *ec = rq->state;
    (void)c;
    ec->res = res;
    request_wake(rq);
}

/* The answer is in: the API's JSON, or the error. */
static int exec_answer(struct request *rq)
{
    struct exec_call *ec = rq->state;
    const struct upcall_result *res = ec->res;
    json_t *out = NULL;
    int rc;
    if (res->rc != SG_OK)
        return request_fail(rq, res->rc, "%s", res->err);
    rc = make_result(rq, res->header, res->body, res->body_len, &out);
    if (rc == SG_OK)
        rc = respond_json(rq, 200, out);
    return rc;
}

int api_exec(struct request *rq)
{
    struct upstream *up = &rq->gw->backends[BACKEND_EXEC];
    json_t *in = NULL, *hdr = NULL;
    struct exec_request req = {NULL, 0, "", 0};
    struct exec_call *ec = NULL;
    int64_t timeout;
    enum exec_stream_format fmt;
    char err[512] = "";
    int rc = request_json(rq, &in);

    if (rc != SG_OK)
        goto out;
    rc = validate_exec(in, &req, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    timeout = req.timeout_ms ? req.timeout_ms : (int64_t)rq->gw->cfg.timeout_ms;
    hdr = json_pack("{s:s,s:O,s:I,s:s,s:I}", "op", "exec", "argv", req.argv, "timeout_ms", (json_int_t)timeout, "id",
                    rq->id, "total_size", (json_int_t)req.stdin_len);
    if (!hdr) {
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    fmt = exec_stream_format(request_header(rq, "Accept"));
    if (fmt != EXEC_STREAM_NONE) {
        /* Output as it is written: no output cap, only the command's time limit. */
        rc = exec_stream_start(rq, fmt, hdr, req.stdin_text, req.stdin_len, timeout + EXEC_DEADLINE_MARGIN_MS);
        goto out;
    }
    ec = calloc(1, sizeof *ec);
    if (!ec) {
        free(ec);
        rc = request_fail(rq, SG_ERR_NOMEM, "out of memory");
        goto out;
    }
    rq->state = ec;
    rq->state_free = exec_free;
    /* Never repeated: a command the service started may have run, whatever happened to the connection. */
    rc = upcall_frame(up, hdr, req.stdin_text, req.stdin_len, EXEC_MAX_OUTPUT, 0,
                      sg_now_ms() + timeout + EXEC_DEADLINE_MARGIN_MS, exec_done, rq, &ec->call, err, sizeof err);
    if (rc != SG_OK) {
        request_fail(rq, rc, "%s", err);
        goto out;
    }
    request_defer(rq, exec_answer);
out:
    json_decref(in);
    json_decref(req.argv);
    json_decref(hdr);
    return rc;
}

int api_exec_allowed(struct request *rq)
{
    const char *allow = rq->gw->cfg.allow && *rq->gw->cfg.allow ? rq->gw->cfg.allow : NULL;
    json_t *list;
    char *copy, *save = NULL;
    /* A remote exec backend keeps its list to itself: say so rather than guess. */
    if (rq->gw->cfg.backend_addr[BACKEND_EXEC])
        return respond_json(rq, 200, json_pack("{s:n,s:s}", "allowed", "why",
                                               "the exec backend is remote: its own --allow decides"));
#ifdef SG_HAVE_EXEC
    if (!allow)
        allow = EXEC_DEFAULT_ALLOW;
#endif
    if (!allow)
        return respond_json(rq, 200, json_pack("{s:n,s:s}", "allowed", "why", "this gateway has no exec backend"));
    list = json_array();
    copy = strdup(allow);
    if (!list || !copy) {
        json_decref(list);
        free(copy);
        return request_fail(rq, SG_ERR_NOMEM, "out of memory");
    }
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save))
        if (*item)
            json_array_append_new(list, json_string(item));
    free(copy);
    return respond_json(rq, 200, json_pack("{s:o}", "allowed", list));
}
