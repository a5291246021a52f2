/* api.h - the handlers the route table points at, one group per api_*.c file. */
#ifndef SOCKGATE_GATEWAY_API_H
#define SOCKGATE_GATEWAY_API_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "upcall_stream.h"

struct request;
struct upstream;

/* api_echo.c: POST /api/v1/echo through the echo backend. */
int api_echo(struct request *rq);

/* api_time.c: GET /api/v1/time through the UDP time backend. */
int api_time(struct request *rq);

/* api_exec.c: POST /api/v1/exec through the exec backend. */
int api_exec(struct request *rq);

/* api_exec.c: GET /api/v1/exec/allowed, the embedded exec backend's allowlist (null when remote). */
int api_exec_allowed(struct request *rq);

/* api_files.c: the file backend's list, stat, download and delete. */
int api_files_list(struct request *rq);
int api_files_get(struct request *rq);
int api_files_head(struct request *rq);
int api_files_delete(struct request *rq);

/* api_files_put.c: PUT /api/v1/files/{name}, the body streamed (or spooled when chunked) to the backend. */
int api_files_put_begin(struct request *rq);
int api_files_put_body(struct request *rq, const char *data, size_t len);
int api_files_put_finish(struct request *rq);

/* api_files_post.c: POST /api/v1/files, multipart/form-data with one or more files. */
int api_files_post_begin(struct request *rq);
int api_files_post_body(struct request *rq, const char *data, size_t len);
int api_files_post_finish(struct request *rq);

/* api_uploads.c: tus 1.0 discovery, an upload's state (HEAD) and termination (DELETE). */
int api_uploads_options(struct request *rq);
int api_uploads_head(struct request *rq);
int api_uploads_delete(struct request *rq);

/* api_uploads_write.c: tus 1.0 creation (POST, with or without a first body) and PATCH, streamed to the backend. */
int api_uploads_create_begin(struct request *rq);
int api_uploads_write_body(struct request *rq, const char *data, size_t len);
int api_uploads_create_finish(struct request *rq);
int api_uploads_patch_begin(struct request *rq);
int api_uploads_patch_finish(struct request *rq);

/* api_chat.c: the chat backend's messages as Server-Sent Events, replies to peers, the peer list. */
int api_chat_events(struct request *rq);
int api_chat_reply(struct request *rq);
int api_chat_peers(struct request *rq);

/*
 * Subscribes to the chat for rq (messages after seq after) on the calling
 * worker's loop: the first frame on_frame gets is the acknowledgement (checked
 * as subscribe's answer, with rq's id), then one per message, with no
 * deadline once the caller lifts it (upcall_stream_set_deadline 0). SG_OK and
 * *out, or why in err.
 */
int api_chat_subscribe(struct request *rq, uint64_t after, upcall_stream_frame_fn on_frame, upcall_stream_end_fn on_end,
                       void *arg, struct upcall_stream **out, char *err, size_t errlen);

/* api_ws_echo.c, api_ws_chat.c: WebSockets to the echo backend (a byte stream) and to the chat (JSON events). */
int api_ws_echo(struct request *rq);
int api_ws_chat(struct request *rq);

/* session.c: the token as an HttpOnly cookie (set and cleared), for the chat's EventSource. */
int api_session_create(struct request *rq);
int api_session_delete(struct request *rq);

/* api_health.c: liveness, and readiness from a real round trip to each backend. */
int api_healthz(struct request *rq);
int api_readyz(struct request *rq);

/* metrics.c: GET /metrics. */
int api_metrics(struct request *rq);

/* static.c: GET /api/v1/openapi.json, and the page at GET / and its assets. */
int api_openapi(struct request *rq);
int api_static(struct request *rq);

#endif
