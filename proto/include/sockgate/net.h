/* net.h - sockets: addresses, listen, connect, reads and writes with deadlines. */
#ifndef SOCKGATE_NET_H
#define SOCKGATE_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Longest text form of an address: "unix:" and a 107-byte path, or "[" v6 "]:" port. */
#define SG_ADDR_STRLEN 120

/* The prefix of a UNIX socket address ("unix:/run/sockgate/exec.sock"). */
#define SG_UNIX_PREFIX "unix:"

/* Where a service that speaks TCP and UDP puts its datagram socket when given unix:PATH: PATH.dgram. */
#define SG_UNIX_DGRAM_SUFFIX ".dgram"

/* A resolved socket address. */
struct sg_addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* Returns the monotonic clock in milliseconds. */
int64_t sg_now_ms(void);

/* Returns the deadline timeout_ms from now, or -1 (none) when timeout_ms < 0. */
int64_t sg_deadline_after(int64_t timeout_ms);

/*
 * Parses "HOST:PORT", "[V6]:PORT", ":PORT" (meaning 127.0.0.1) or
 * "unix:PATH" (a UNIX socket in the file system) into out, resolving HOST
 * with getaddrinfo (so container service names work). Port 0 is allowed (the
 * kernel picks one). Writes why into err on failure.
 */
int sg_addr_parse(const char *text, struct sg_addr *out, char *err, size_t errlen);

/* Writes "1.2.3.4:80", "[::1]:80" or "unix:PATH" for sa into buf (at least SG_ADDR_STRLEN bytes). */
void sg_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

/* Returns the port of sa in host order (0 when not IPv4/IPv6). */
uint16_t sg_addr_port(const struct sockaddr *sa);

/*
 * Opens a non-blocking, close-on-exec socket of type (SOCK_STREAM or
 * SOCK_DGRAM) bound to addr; stream sockets also listen with a large backlog.
 * A UNIX socket file nobody listens on any more (a crashed server's) is
 * replaced; a live one is "in use". Stores the descriptor in *fd.
 */
int sg_listen(const struct sg_addr *addr, int type, int *fd, char *err, size_t errlen);

/*
 * Binds a TCP listener and a UDP socket on the same port of addr. When the
 * port is 0, the TCP port the kernel picks is reused for UDP (retrying a few
 * times if that UDP port is taken). For unix:PATH: a stream listener at PATH
 * and a datagram socket at PATH.dgram.
 */
int sg_listen_tcp_udp(const struct sg_addr *addr, int *tcp_fd, int *udp_fd, char *err, size_t errlen);

/* Closes a listener (*fd becomes -1), removing its socket file when it is a UNIX one. */
void sg_close_listener(int *fd);

/* Writes the local address of fd as text into buf (at least SG_ADDR_STRLEN bytes). */
void sg_local_addr(int fd, char *buf, size_t buflen);

/* Returns the local port of fd, 0 on failure. */
uint16_t sg_local_port(int fd);

/*
 * Connects a non-blocking, close-on-exec socket of type to addr within
 * timeout_ms (-1: no limit). Returns SG_OK, SG_ERR_REFUSED, SG_ERR_TIMEOUT or
 * SG_ERR_SYS; TCP sockets get TCP_NODELAY; a UNIX datagram socket is
 * autobound first, so the server can answer it.
 */
int sg_connect(const struct sg_addr *addr, int type, int timeout_ms, int *fd, char *err, size_t errlen);

/*
 * Prepares a fresh client socket fd of type for addr before its connect:
 * TCP_NODELAY on TCP streams (best effort), autobind on a UNIX datagram
 * socket (so the server can answer it). Returns 0, or -1 with errno.
 */
int sg_client_socket_setup(int fd, const struct sg_addr *addr, int type);

/* Sets or clears O_NONBLOCK on fd. */
int sg_set_nonblock(int fd, int on);

/*
 * Waits until fd is ready for events (POLLIN/POLLOUT) or deadline_ms passes.
 * Returns SG_OK, SG_ERR_TIMEOUT or SG_ERR_SYS; retries on EINTR.
 */
int sg_wait_fd(int fd, short events, int64_t deadline_ms);

/*
 * The reads and writes below wait with poll(2) when the descriptor would
 * block, so their deadlines hold on non-blocking descriptors (every socket
 * proto creates is one); on a blocking descriptor the system call itself may
 * wait past the deadline.
 */

/* Writes all len bytes (send with MSG_NOSIGNAL on sockets), waiting as needed until the deadline. */
int sg_write_all(int fd, const void *buf, size_t len, int64_t deadline_ms);

/* Reads exactly len bytes; SG_ERR_CLOSED when EOF comes first. */
int sg_read_full(int fd, void *buf, size_t len, int64_t deadline_ms);

/* Reads at least 1 and at most cap bytes into buf (*got); SG_ERR_CLOSED on EOF. */
int sg_read_some(int fd, void *buf, size_t cap, size_t *got, int64_t deadline_ms);

/*
 * Sets fd's SO_RCVLOWAT to bytes unless *mark (the value last set, 0 for the
 * kernel's default) says it already is; best effort: without it reads only
 * wake more often.
 */
void sg_set_rcvlowat(int fd, int bytes, int *mark);

/*
 * Reads like sg_read_some, but first asks the kernel not to wake the reader
 * before batch bytes are queued (SO_RCVLOWAT, cached in *mark): a bulk
 * stream then costs a wake-up per batch, not per few KiB. If the batch has not
 * come within patience_ms it takes whatever arrives, so timeout_ms (-1: none)
 * still only cuts a read that makes no progress at all. The caller asks for no
 * more than the peer will send before it closes.
 */
int sg_read_batched(int fd, void *buf, size_t cap, size_t batch, int64_t patience_ms, int64_t timeout_ms, int *mark,
                    size_t *got);

#endif
