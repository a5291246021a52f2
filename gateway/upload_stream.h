/* upload_stream.h - one framed request to the file backend whose body is the HTTP request's, sent on in blocks. */
#ifndef SOCKGATE_GATEWAY_UPLOAD_STREAM_H
#define SOCKGATE_GATEWAY_UPLOAD_STREAM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "sockgate/iobuf.h"

struct request;
struct upstream_conn;

/*
 * The backend side of a tus PATCH or creation-with-upload (api_uploads*.c).
 * These four functions are all the backend I/O those routes do while a body
 * streams, so moving them onto the worker's non-blocking upload primitive
 * (the issue-15 work) changes this file only. Zeroed is a valid closed stream.
 */
struct upload_stream {
    struct upstream_conn *c; /* the backend connection while the frame is open */
    uint64_t expected;       /* the body bytes the frame header announced */
    uint64_t sent;           /* body bytes written to the backend so far */
    struct sg_iobuf block;   /* bytes gathered for the next write */
    size_t have;             /* bytes in block */
};

/*
 * Sends hdr (borrowed; total_size is set here to body_len) to the file
 * backend and gets a block ready for the body. Errors are recorded in rq.
 */
int upload_stream_open(struct request *rq, struct upload_stream *s, json_t *hdr, uint64_t body_len);

/* Passes len body bytes on, in blocks; more than announced is refused. Errors are recorded in rq. */
int upload_stream_push(struct request *rq, struct upload_stream *s, const char *data, size_t len);

/*
 * The body is complete: sends what is gathered and reads the answer into
 * *resp (new reference, set on SG_OK only). A backend error answer is
 * returned as its error, message recorded in rq. Closes s either way.
 */
int upload_stream_close(struct request *rq, struct upload_stream *s, json_t **resp);

/*
 * The client went away mid-body: sends what is gathered (within a short
 * deadline), then cuts the backend connection, which keeps every byte that
 * reached it (docs/protocol.md, "A cut connection keeps its bytes"). Safe on
 * a closed stream.
 */
void upload_stream_abandon(struct request *rq, struct upload_stream *s);

#endif
