/* chat_stream.h - chat subscriptions turned into Server-Sent Events, fed by one pump thread. */
#ifndef SOCKGATE_GATEWAY_CHAT_STREAM_H
#define SOCKGATE_GATEWAY_CHAT_STREAM_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

/* Event streams open at once; one more is refused with 503 (busy). */
#define CHAT_STREAMS_MAX 256
/* With nothing else to send, a comment line goes out this often, so dead clients and idle proxies are noticed. */
#define CHAT_HEARTBEAT_MS 15000

/*
 * Starts the pump thread that reads every subscription and wakes the
 * suspended HTTP connections. Call once, before libmicrohttpd starts.
 */
int chat_streams_start(char *err, size_t errlen);

/*
 * The first step of shutdown: every open stream sends what it holds and
 * ends, and new streams are refused, so no connection stays suspended when
 * libmicrohttpd stops (which would be undefined behaviour there).
 */
void chat_streams_close_all(void);

/* Stops the pump thread and frees what is left; call after libmicrohttpd has stopped. */
void chat_streams_stop(void);

/* Returns the number of event streams open now (for /metrics). */
long chat_streams_open(void);

/* Returns 1 when another stream would be accepted now (a hint: chat_stream_response decides). */
int chat_streams_have_room(void);

/*
 * Makes the response of one event stream. fd is a subscription connection to
 * the chat service whose acknowledgement was already read; it is taken in
 * every case (closed on failure). pending holds the bytes read past the
 * acknowledgement, first the text sent before any message (an SSE event or
 * comment, may be NULL). *bytes_out counts the bytes handed to the client; it
 * must stay valid until the request completes. The connection conn is
 * suspended whenever nothing is there to send. Returns SG_OK and *out (to
 * queue with status 200), SG_ERR_BUSY when CHAT_STREAMS_MAX are open,
 * SG_ERR_REFUSED while shutting down, with why in err.
 */
int chat_stream_response(struct MHD_Connection *conn, int fd, const void *pending, size_t pending_len,
                         const char *first, uint64_t *bytes_out, struct MHD_Response **out, char *err,
                         size_t errlen);

#endif
