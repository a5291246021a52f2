/* upcall_stream.h - one framed request answered by many frames, read on the worker's loop with backpressure. */
#ifndef SOCKGATE_GATEWAY_UPCALL_STREAM_H
#define SOCKGATE_GATEWAY_UPCALL_STREAM_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "upstream.h"

struct upcall_stream;

/*
 * Runs on the loop's thread for each answer frame, in order: header and the
 * frame's whole body (both borrowed, valid during the call). Returns 0 when
 * more frames follow, 1 when this one was the last (the stream then ends
 * with SG_OK). It may call upcall_stream_pause, never upcall_stream_close.
 */
typedef int (*upcall_stream_frame_fn)(struct upcall_stream *s, const json_t *header, const uint8_t *body,
                                      size_t len, void *arg);

/*
 * Runs once on the loop's thread when the stream ended: SG_OK after the last
 * frame, else a transport error, the deadline, or a backend error frame's
 * error, with why in err (borrowed). The stream stays the caller's until
 * upcall_stream_close. Never runs from inside upcall_stream_open or _close.
 */
typedef void (*upcall_stream_end_fn)(struct upcall_stream *s, int rc, const char *err, void *arg);

/*
 * Opens a connection of its own to up on the calling worker's loop, sends
 * header and body_len bytes of body (copied), then hands each answer frame to
 * on_frame as it is complete. A frame's body over max_frame_body bytes, a
 * frame that does not carry the request's id, or the deadline ends the
 * stream. Never replayed: what the backend started may have run. Returns
 * SG_OK and *out, or an error with why in err (callbacks never run then).
 */
int upcall_stream_open(struct upstream *up, const json_t *header, const void *body, size_t body_len,
                       size_t max_frame_body, int64_t deadline_ms, upcall_stream_frame_fn on_frame,
                       upcall_stream_end_fn on_end, void *arg, struct upcall_stream **out, char *err,
                       size_t errlen);

/*
 * Stops handing frames over (and reading the socket once what was read is
 * used up), so the backend's writes block: backpressure. Idempotent.
 */
void upcall_stream_pause(struct upcall_stream *s);

/*
 * Moves the deadline of an open stream to deadline_ms (from on_frame too: a
 * backend that queued the request before starting it); 0: no deadline any
 * more (a subscription, once acknowledged, lasts as long as its reader).
 */
void upcall_stream_set_deadline(struct upcall_stream *s, int64_t deadline_ms);

/*
 * Says the backend pushes frames after the first (a chat subscription): the
 * first must answer first_op with the request's id (reply_check.c), later
 * ones carry no id. Call right after upcall_stream_open.
 */
void upcall_stream_expect_pushed(struct upcall_stream *s, const char *first_op);

/* Hands frames over again, from the loop's next round (never from inside this call). Idempotent. */
void upcall_stream_resume(struct upcall_stream *s);

/*
 * Ends s and frees it: closes its connection (a backend mid-answer sees the
 * hang-up; the exec service then kills the command's process group). on_end
 * does not run. NULL is harmless.
 */
void upcall_stream_close(struct upcall_stream *s);

#endif
