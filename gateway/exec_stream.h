/* exec_stream.h - POST /api/v1/exec answered as the command runs: Server-Sent Events or NDJSON, with backpressure. */
#ifndef SOCKGATE_GATEWAY_EXEC_STREAM_H
#define SOCKGATE_GATEWAY_EXEC_STREAM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct request;

/* How a streamed run is written: nothing streamed (the JSON answer), SSE, or one JSON object per line. */
enum exec_stream_format { EXEC_STREAM_NONE, EXEC_STREAM_SSE, EXEC_STREAM_NDJSON };

/* Bytes of events the gateway holds for one slow client; past it the exec backend is not read. */
#define EXEC_STREAM_OUT_CAP (256u * 1024u)
/* A comment (SSE) or a keep-alive object (NDJSON) goes out after this much silence. */
#define EXEC_STREAM_HEARTBEAT_MS 15000

/*
 * Returns the format an Accept header asks for: the first of
 * text/event-stream and application/x-ndjson it lists (parameters and q
 * ignored), else EXEC_STREAM_NONE (also for a NULL header).
 */
enum exec_stream_format exec_stream_format(const char *accept);

/*
 * Starts a streamed run for rq: sends hdr (the exec request header, borrowed;
 * "stream": true is added to a copy) and body_len bytes of stdin to the exec
 * backend and defers rq. Once the backend says the command started, rq gets
 * a 200 whose body is the events; a refusal before that (not allowed, down,
 * busy) is answered as the JSON error it would have been. run_ms bounds the
 * wait for the start, then again the run from its start (the command's time
 * limit plus a margin). Returns SG_OK, or the error recorded in rq (request_fail).
 */
int exec_stream_start(struct request *rq, enum exec_stream_format fmt, const json_t *hdr, const void *body,
                      size_t body_len, int64_t run_ms);

#endif
