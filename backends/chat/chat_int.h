/* chat_int.h - private to backends/chat: the server's state shared by its loop, history, peers, UDP and TCP parts. */
#ifndef SOCKGATE_CHAT_INT_H
#define SOCKGATE_CHAT_INT_H

#include <jansson.h>
#include <stdint.h>
#include <sys/socket.h>

#include "server.h"
#include "sockgate/evloop.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"

/* Size of the scratch buffer TCP reads go through. */
#define CHAT_SCRATCH 65536u

/* Encoded frames a subscriber holds in its own buffer at most (one frame may exceed it when alone). */
#define CHAT_SUB_OUT 16384u

/* Kernel send buffer asked for on subscriber sockets, so a stalled reader cannot park megabytes there. */
#define CHAT_SUB_SNDBUF 65536

/* The largest request body skipped (and refused) without closing the connection. */
#define CHAT_MAX_REQ_BODY 65536u

/* How long a connection being closed with an error frame may take to read it. */
#define CHAT_CLOSE_GRACE_MS 5000

/* ---- history.c: the ring of the last messages, each kept as its encoded frame ---- */

struct chat_entry {
    uint64_t seq;
    uint8_t *frame;    /* u32 LE length + compact JSON header: what a subscriber receives */
    size_t frame_len;
};

struct chat_history {
    struct chat_entry *ring;
    unsigned cap;
    unsigned count;
    unsigned head;     /* index of the oldest entry */
    uint64_t last_seq; /* newest sequence number assigned, 0 before the first */
};

/* Allocates an empty ring of cap entries; returns SG_OK or SG_ERR_NOMEM. */
int history_init(struct chat_history *h, unsigned cap);

/* Frees every entry and the ring. */
void history_free(struct chat_history *h);

/*
 * Sets "seq" of msg (borrowed; the key should already be there, first, so
 * frames read seq first) to the next sequence number, encodes msg as a frame
 * and appends it, evicting the oldest entry when full.
 * Returns SG_OK with the new seq in *seq and the evicted one in *evicted (0 when
 * none), or SG_ERR_NOMEM / SG_ERR_TOO_LARGE with nothing changed.
 */
int history_append(struct chat_history *h, json_t *msg, uint64_t *seq, uint64_t *evicted);

/* Returns the oldest seq held, or 0 when the history is empty. */
uint64_t history_first_seq(const struct chat_history *h);

/* Returns the entry of seq (borrowed, valid until it is evicted), or NULL when not held. */
const struct chat_entry *history_get(const struct chat_history *h, uint64_t seq);

/* ---- peers.c: who has written, for reply and the peers op ---- */

struct chat_peer {
    char addr[SG_ADDR_STRLEN];     /* the text form: the key, and the "from" of its messages */
    struct sockaddr_storage ss;    /* where replies go */
    socklen_t sslen;
    int64_t first_seen;            /* Unix ms */
    int64_t last_seen;             /* Unix ms */
    uint64_t messages;
    struct chat_peer *hnext;       /* hash chain */
    struct chat_peer *prev;        /* toward more recently seen */
    struct chat_peer *next;        /* toward less recently seen */
};

struct chat_peers {
    struct chat_peer *slots;       /* cap peers, allocated once */
    unsigned cap;
    unsigned count;
    struct chat_peer **buckets;
    unsigned nbuckets;             /* a power of two */
    struct chat_peer *newest;
    struct chat_peer *oldest;
};

/* Allocates an empty table of cap peers; returns SG_OK or SG_ERR_NOMEM. */
int peers_init(struct chat_peers *p, unsigned cap);

/* Frees the table. */
void peers_free(struct chat_peers *p);

/* Returns the peer whose address text is addr (borrowed), or NULL. */
struct chat_peer *peers_find(struct chat_peers *p, const char *addr);

/*
 * Records one message from sa (text form addr) at now_ms: refreshes its peer,
 * or adds it, evicting the least recently seen peer when the table is full.
 * Returns the peer (borrowed; never NULL).
 */
struct chat_peer *peers_touch(struct chat_peers *p, const char *addr, const struct sockaddr *sa, socklen_t salen,
                              int64_t now_ms);

/* Returns a new JSON array of the peers, most recently seen first, or NULL when out of memory. */
json_t *peers_to_json(const struct chat_peers *p);

/* ---- the server ---- */

enum conn_state {
    CONN_REQUEST,    /* framed requests, answered in order */
    CONN_SUBSCRIBER, /* a stream of message frames from a history cursor */
    CONN_CLOSING     /* flushing a last error frame, then closed */
};

struct conn {
    int fd;
    enum conn_state state;
    uint32_t events;           /* the epoll mask registered now */
    struct sg_frame_decoder dec;
    int body_seen;             /* the current request carried a body */
    uint8_t *out;              /* bytes to send (responses, frames, a last error) */
    size_t out_off;
    size_t out_len;
    size_t out_cap;
    uint8_t *pending;          /* input not yet fed to the decoder while a response waits */
    size_t pending_off;
    size_t pending_len;
    uint64_t next_seq;         /* subscriber: the next seq to copy into out */
    int64_t close_deadline;    /* CONN_CLOSING: close even if unsent by then (monotonic ms) */
    struct conn *prev;         /* all connections */
    struct conn *next;
    struct conn *sprev;        /* subscribers and closing connections */
    struct conn *snext;
    int on_slist;
};

struct chat_stats {
    uint64_t received;
    uint64_t dropped_too_large;
    uint64_t dropped_invalid_utf8;
    uint64_t dropped_empty;
    uint64_t dropped_source;
    uint64_t replies;
    uint64_t subscribers_cut;
};

struct chat_server {
    unsigned max_conns;
    struct sg_evloop loop;      /* the epoll set; stop() wakes it */
    int tcp_fd;
    int udp_fd;
    uint16_t port;              /* our UDP port (reflection guard) */
    struct chat_history history;
    struct chat_peers peers;
    struct chat_stats stats;
    unsigned nconns;
    unsigned nsubs;             /* connections in CONN_SUBSCRIBER */
    struct conn *conns;
    struct conn *slist;         /* subscribers and closing connections */
    uint64_t pumped_seq;        /* subscribers were last pumped up to this seq */
    uint8_t *scratch;           /* CHAT_SCRATCH bytes for TCP reads */
    uint8_t *dgram;             /* CHAT_MAX_TEXT + 1 bytes for UDP reads */
    int64_t warn_ms;            /* when the last rate-limited warning went out */
};

/* Returns the wall clock in Unix milliseconds (message and peer times). */
int64_t chat_unix_ms(void);

/*
 * Records one message (kind "in" from peer, or "out" to peer) in history and
 * cuts the subscribers the eviction leaves behind. text is valid UTF-8 of
 * len bytes. Returns SG_OK with the new seq in *seq, or an sg_err.
 */
int chat_record(struct chat_server *srv, int is_in, const char *peer, const char *text, size_t len,
                int64_t time_ms, int64_t now, uint64_t *seq);

/* Logs a warning unless one went out less than 10 s ago. */
void chat_warn_limited(struct chat_server *srv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- udp.c ---- */

/* Reads and records the datagrams waiting on the UDP socket (a bounded batch per call). */
void udp_ready(struct chat_server *srv);

/* Sends text as one datagram to peer; returns SG_OK, SG_ERR_BUSY (buffer full) or SG_ERR_SYS (errno set). */
int udp_send_reply(struct chat_server *srv, const struct chat_peer *peer, const char *text, size_t len);

/* ---- conn.c ---- */

/* Accepts what the listener has queued, closing connections over max_conns at once. */
void conn_accept_ready(struct chat_server *srv, int64_t now);

/* Handles the epoll events of one connection. */
void conn_ready(struct chat_server *srv, struct conn *c, uint32_t events, int64_t now);

/* Closes and frees c. */
void conn_close(struct chat_server *srv, struct conn *c);

/* Appends one frame (header encoded, then body) to c's output; returns SG_OK or an sg_err. */
int conn_queue_frame(struct conn *c, const json_t *header, const void *body, size_t body_len);

/* Turns a request connection into a subscriber whose next frame is seq next_seq. */
void conn_make_subscriber(struct chat_server *srv, struct conn *c, uint64_t next_seq);

/* Sends new history to every subscriber that is not waiting for its socket. */
void conns_pump_all(struct chat_server *srv);

/*
 * Called before seq leaves the history: each subscriber that has not taken
 * seq into its buffer yet gets a last chance to send, else it is cut as too
 * slow (an error frame, then closed). Never frees a connection.
 */
void conns_evicting(struct chat_server *srv, uint64_t seq, int64_t now);

/* Closes connections whose closing grace has passed; returns ms until the next deadline, or -1. */
int conns_expire(struct chat_server *srv, int64_t now);

/* ---- ops.c ---- */

/*
 * Answers the request whose header is h (borrowed) on c: queues the response
 * (or makes c a subscriber). has_body tells that the request carried a body.
 * Returns SG_OK, or an sg_err when no response could be queued (close c).
 */
int ops_dispatch(struct chat_server *srv, struct conn *c, const json_t *h, int has_body, int64_t now);

/* Returns a new object of the counters (the "stats" of the peers and stats ops), or NULL. */
json_t *ops_stats_json(const struct chat_server *srv);

#endif
