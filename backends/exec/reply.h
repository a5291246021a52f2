/* reply.h - the one frame each exec request gets back: a result, a refusal or an error. */
#ifndef SOCKGATE_EXEC_REPLY_H
#define SOCKGATE_EXEC_REPLY_H

#include <jansson.h>
#include <stddef.h>

#include "exec_internal.h"

/*
 * Sends the frame of a finished command: header {"id", "total_size",
 * "stdout_size", "stderr_size", "exit_code", "signal" (when killed),
 * "timed_out", "truncated", "duration_ms", "md5"} then stdout then stderr.
 * Returns SG_OK, or SG_ERR_CLOSED / SG_ERR_TIMEOUT / SG_ERR_SYS when the
 * client could not take it (the connection must close).
 */
int exec_reply_result(struct exec_conn *c, const struct exec_request *rq, const struct exec_result *res);

/*
 * Sends an error frame {"id", "error": {"code", "message"}} whose body is the
 * message and a newline, counted as stderr, so a client that prints bodies
 * (the tutorial's) shows the reason. exit_code >= 0 adds "exit_code" (127
 * for a refused command, as a shell says "not found"). id is borrowed.
 */
int exec_reply_error(struct exec_conn *c, const json_t *id, int err, const char *message, int exit_code);

/*
 * The last frame of a streamed run: {"id", "event": "exit", "exit_code",
 * "signal" (when killed), "timed_out", "duration_ms"} without a body.
 */
int exec_reply_stream_exit(struct exec_conn *c, const struct exec_request *rq, const struct exec_result *res);

/*
 * Encodes the header of a streamed frame {"id", "event": event, "total_size":
 * body_len} into a new buffer (*out, *out_len; the caller frees it).
 */
int exec_stream_header(const json_t *id, const char *event, size_t body_len, uint8_t **out, size_t *out_len);

/* Answers a framed "ping" with {"id", "service": "exec"}: proof that this is the exec service (the gateway's /readyz). */
int exec_reply_ping(struct exec_conn *c, const json_t *id);

/* Writes s single-quoted for messages and logs: printable ASCII as is, other bytes as \xNN, cut to fit. */
void exec_quote(const char *s, char *out, size_t outlen);

/* Logs a finished command: timeouts and truncations at info, the rest at debug. */
void exec_log_result(const struct exec_conn *c, const struct exec_allowed *cmd, const struct exec_request *rq,
                     const struct exec_result *res);

#endif
