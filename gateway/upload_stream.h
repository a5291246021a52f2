/* upload_stream.h - one framed request to the file backend whose body is the HTTP request's, fed on the worker loop. */
#ifndef SOCKGATE_GATEWAY_UPLOAD_STREAM_H
#define SOCKGATE_GATEWAY_UPLOAD_STREAM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct request;
struct upload_stream;

/*
 * The backend side of a tus PATCH or creation-with-upload (api_uploads*.c),
 * sent the way PUT sends its body (api_files_put.c): gathered in blocks,
 * each written on the worker loop (upcall_frame_feed), the request held
 * while the backend takes no more. Nothing here blocks the worker thread.
 */

/*
 * Makes *out for a frame hdr (borrowed; total_size is set here to body_len)
 * whose body the request's is, and starts the exchange (on the loop: the
 * connect is not waited for). Errors are recorded in rq.
 */
int upload_stream_open(struct request *rq, struct upload_stream **out, json_t *hdr, uint64_t body_len);

/* Passes len body bytes on (holding the request while the backend is full); more than announced is refused. */
int upload_stream_push(struct upload_stream *s, const char *data, size_t len);

/*
 * The body is complete: sends what is gathered; answer(rq) runs once the
 * backend answered (at once when it already did, else deferred), and reads
 * the answer with upload_stream_answer.
 */
int upload_stream_close(struct upload_stream *s, int (*answer)(struct request *rq));

/*
 * The backend's answer into *resp (new reference, set on SG_OK only); a
 * backend error answer is returned as its error, message recorded in rq.
 */
int upload_stream_answer(struct upload_stream *s, json_t **resp);

/*
 * The request ends (answered, or the client went away mid-body). A stream
 * cut short outlives its request: the bytes gathered but not yet sent go
 * on on the loop, then the backend connection is cut, which keeps every
 * byte that reached it (docs/protocol.md, "A cut connection keeps its
 * bytes"). NULL is fine.
 */
void upload_stream_abandon(struct upload_stream *s);

#endif
