/* chat_stream.h - chat subscriptions as Server-Sent Events, read on the worker's loop with backpressure. */
#ifndef SOCKGATE_GATEWAY_CHAT_STREAM_H
#define SOCKGATE_GATEWAY_CHAT_STREAM_H

#include <stdint.h>

struct request;

/* Event streams open at once (waiting for their acknowledgement included); one more is refused with 503 (busy). */
#define CHAT_STREAMS_MAX 256
/* With nothing else to send, a comment line goes out this often, so dead clients and idle proxies are noticed. */
#define CHAT_HEARTBEAT_MS 15000

/*
 * Subscribes rq to the chat (messages after seq after) on the calling
 * worker's loop and defers it: once the chat service acknowledged, rq gets a
 * 200 whose body is the events ("subscribed" first); a refusal, a down
 * service or the deadline before that is answered as a JSON error. Returns
 * SG_OK, or the error recorded in rq (request_fail).
 */
int chat_stream_start(struct request *rq, uint64_t after);

/*
 * The first step of shutdown, on each worker's thread (when it quiesces):
 * every stream of this thread sends what it holds and ends, one waiting for
 * its acknowledgement is answered 503, and new streams here are refused.
 */
void chat_streams_close_here(void);

/* Returns the number of event streams open now, in every worker (for /metrics). */
long chat_streams_open(void);

#endif
