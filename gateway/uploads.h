/* uploads.h - what the tus 1.0 handlers (api_uploads.c, api_uploads_write.c) share: tus headers to session ops. */
#ifndef SOCKGATE_GATEWAY_UPLOADS_H
#define SOCKGATE_GATEWAY_UPLOADS_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>

struct request;

/* The content type of a tus body (PATCH, creation-with-upload). */
#define UPLOADS_BODY_TYPE "application/offset+octet-stream"

/*
 * SG_OK when the request says Tus-Resumable: 1.0.0; otherwise answers 412
 * with Tus-Version (tus 1.0, "Tus-Resumable") and returns SG_ERR_PRECONDITION.
 */
int uploads_check_version(struct request *rq);

/* SG_OK when rq->param is a session id as the file backend makes them (32 lower-case hex), else a 404 recorded. */
int uploads_check_id(struct request *rq);

/*
 * Reads Upload-Checksum ("sha1|sha256|md5 <base64 digest>") into hdr as the
 * session op's hex field. No header: SG_OK, nothing set. A malformed one or
 * another algorithm: 400 recorded.
 */
int uploads_checksum(struct request *rq, json_t *hdr);

/*
 * Checks Upload-Metadata (comma-separated "key" or "key base64value", keys
 * unique) and decodes its filename into name (namelen bytes), checked with
 * the rules of a PUT's name. SG_OK, or a 400 recorded.
 */
int uploads_metadata(struct request *rq, const char *metadata, char *name, size_t namelen);

/* Checks a body's Content-Type and that it has a Content-Length (a frame needs its size up front). */
int uploads_check_body(struct request *rq);

/* Adds Upload-Expires (an HTTP date) from a session answer's "expires_ms" (Unix milliseconds), when it has one. */
void uploads_add_expires(struct MHD_Response *resp, const json_t *answer);

/* Adds Upload-Offset from a session answer's "offset". */
void uploads_add_offset(struct MHD_Response *resp, const json_t *answer);

#endif
