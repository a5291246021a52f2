/* net.c - addresses, listening and connecting sockets (all close-on-exec and non-blocking). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/net.h"

int64_t sg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sg_deadline_after(int64_t timeout_ms)
{
    return timeout_ms < 0 ? -1 : sg_now_ms() + timeout_ms;
}

/* "unix:PATH": a path name in the file system (abstract names are refused: no permissions guard them). */
static int parse_unix(const char *path, struct sg_addr *out, char *err, size_t errlen)
{
    struct sockaddr_un *un = (struct sockaddr_un *)(void *)&out->ss;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof un->sun_path) {
        snprintf(err, errlen, "bad address 'unix:%s' (expected unix:PATH, 1 to %zu bytes)", path,
                 sizeof un->sun_path - 1);
        return SG_ERR_INVALID;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, n + 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return SG_OK;
}

int sg_addr_parse(const char *text, struct sg_addr *out, char *err, size_t errlen)
{
    char host[256];
    const char *port_text;
    char *end;
    long port;
    struct addrinfo hints, *res = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if (!text || !*text) {
        snprintf(err, errlen, "empty address (expected HOST:PORT)");
        return SG_ERR_INVALID;
    }
    if (strncmp(text, SG_UNIX_PREFIX, strlen(SG_UNIX_PREFIX)) == 0)
        return parse_unix(text + strlen(SG_UNIX_PREFIX), out, err, errlen);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host) {
            snprintf(err, errlen, "bad address '%s' (expected [IPV6]:PORT)", text);
            return SG_ERR_INVALID;
        }
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_text = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host || strchr(text, ':') != colon) {
            snprintf(err, errlen, "bad address '%s' (expected HOST:PORT or [IPV6]:PORT)", text);
            return SG_ERR_INVALID;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port_text = colon + 1;
    }
    errno = 0;
    port = strtol(port_text, &end, 10);
    if (!*port_text || *end || errno || port < 0 || port > 65535) {
        snprintf(err, errlen, "bad port in '%s' (expected 0..65535)", text);
        return SG_ERR_INVALID;
    }
    if (!host[0])
        snprintf(host, sizeof host, "127.0.0.1");
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = AI_NUMERICSERV;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(host, port_text, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return SG_ERR_INVALID;
    }
    memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
    out->len = res->ai_addrlen;
    freeaddrinfo(res);
    return SG_OK;
}

void sg_addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(buf, buflen, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(buf, buflen, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;
        size_t n = len > offsetof(struct sockaddr_un, sun_path) ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n == 0 || un->sun_path[0] == '\0')
            snprintf(buf, buflen, SG_UNIX_PREFIX "(unnamed)"); /* autobound or abstract: no path to print */
        else
            snprintf(buf, buflen, SG_UNIX_PREFIX "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
    } else {
        snprintf(buf, buflen, "unknown");
    }
}

uint16_t sg_addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

static void set_port(struct sg_addr *a, uint16_t port)
{
    if (a->ss.ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)&a->ss)->sin_port = htons(port);
    else if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)(void *)&a->ss)->sin6_port = htons(port);
}

/*
 * A UNIX socket file left by a process that died without unlinking it makes
 * bind fail with EADDRINUSE. Removed only when it is a socket nobody accepts
 * on (connect refused); a live one stays, and bind reports "in use".
 */
static int unix_remove_stale(const struct sg_addr *addr, int type)
{
    const struct sockaddr_un *un = (const void *)&addr->ss;
    struct stat st;
    int probe, refused;
    if (addr->ss.ss_family != AF_UNIX || lstat(un->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode))
        goto in_use;
    probe = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (probe < 0)
        goto in_use;
    refused = connect(probe, (const struct sockaddr *)&addr->ss, addr->len) != 0 && errno == ECONNREFUSED;
    close(probe);
    if (refused && unlink(un->sun_path) == 0)
        return 0;
in_use:
    errno = EADDRINUSE;
    return -1;
}

int sg_listen(const struct sg_addr *addr, int type, int *fd, char *err, size_t errlen)
{
    int s, one = 1;
    char text[SG_ADDR_STRLEN];

    *fd = -1;
    sg_addr_format((const struct sockaddr *)&addr->ss, addr->len, text, sizeof text);
    s = socket(addr->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    /* best effort: only shortens restarts after TIME_WAIT */
    if (addr->ss.ss_family != AF_UNIX)
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (addr->ss.ss_family == AF_INET6)
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s, (const struct sockaddr *)&addr->ss, addr->len) < 0 &&
        (errno != EADDRINUSE || unix_remove_stale(addr, type) != 0 ||
         bind(s, (const struct sockaddr *)&addr->ss, addr->len) < 0)) {
        snprintf(err, errlen, "bind %s: %s", text, strerror(errno));
        close(s);
        return SG_ERR_SYS;
    }
    if (type == SOCK_STREAM && listen(s, 4096) < 0) {
        snprintf(err, errlen, "listen %s: %s", text, strerror(errno));
        close(s);
        return SG_ERR_SYS;
    }
    *fd = s;
    return SG_OK;
}

/* The UNIX form of a TCP+UDP pair: the stream socket at PATH, the datagram one at PATH.dgram. */
static int listen_unix_pair(const struct sg_addr *addr, int *stream_fd, int *dgram_fd, char *err, size_t errlen)
{
    struct sg_addr d = *addr;
    struct sockaddr_un *un = (struct sockaddr_un *)(void *)&d.ss;
    size_t n = strnlen(un->sun_path, sizeof un->sun_path);
    int rc;
    if (n + sizeof SG_UNIX_DGRAM_SUFFIX > sizeof un->sun_path) {
        snprintf(err, errlen, "unix:%s is too long to add " SG_UNIX_DGRAM_SUFFIX, un->sun_path);
        return SG_ERR_INVALID;
    }
    memcpy(un->sun_path + n, SG_UNIX_DGRAM_SUFFIX, sizeof SG_UNIX_DGRAM_SUFFIX);
    d.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + sizeof SG_UNIX_DGRAM_SUFFIX);
    rc = sg_listen(addr, SOCK_STREAM, stream_fd, err, errlen);
    if (rc == SG_OK && (rc = sg_listen(&d, SOCK_DGRAM, dgram_fd, err, errlen)) != SG_OK)
        sg_close_listener(stream_fd);
    return rc;
}

int sg_listen_tcp_udp(const struct sg_addr *addr, int *tcp_fd, int *udp_fd, char *err, size_t errlen)
{
    struct sg_addr a = *addr;
    int want_any = sg_addr_port((const struct sockaddr *)&addr->ss) == 0;
    int rc = SG_ERR_SYS;

    *tcp_fd = -1;
    *udp_fd = -1;
    if (addr->ss.ss_family == AF_UNIX)
        return listen_unix_pair(addr, tcp_fd, udp_fd, err, errlen);
    /* With port 0 the kernel's TCP pick may be taken for UDP: try a few picks. */
    for (int attempt = 0; attempt < (want_any ? 20 : 1); attempt++) {
        int t = -1, u = -1;
        a = *addr;
        rc = sg_listen(&a, SOCK_STREAM, &t, err, errlen);
        if (rc != SG_OK)
            return rc;
        set_port(&a, sg_local_port(t));
        rc = sg_listen(&a, SOCK_DGRAM, &u, err, errlen);
        if (rc == SG_OK) {
            *tcp_fd = t;
            *udp_fd = u;
            return SG_OK;
        }
        close(t);
    }
    return rc;
}

void sg_close_listener(int *fd)
{
    struct sockaddr_un un;
    socklen_t len = sizeof un;
    if (*fd < 0)
        return;
    if (getsockname(*fd, (struct sockaddr *)&un, &len) == 0 && un.sun_family == AF_UNIX &&
        len > offsetof(struct sockaddr_un, sun_path) && un.sun_path[0] != '\0')
        unlink(un.sun_path); /* best effort: a stale file is also removed by the next bind */
    close(*fd);
    *fd = -1;
}

void sg_local_addr(int fd, char *buf, size_t buflen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
        snprintf(buf, buflen, "unknown");
        return;
    }
    sg_addr_format((struct sockaddr *)&ss, len, buf, buflen);
}

uint16_t sg_local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    return sg_addr_port((struct sockaddr *)&ss);
}

int sg_set_nonblock(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return SG_ERR_SYS;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags) < 0 ? SG_ERR_SYS : SG_OK;
}

/* True when fd, connected to addr, has its peer's address as its own (a self-connection). */
static int is_self_connected(int fd, const struct sg_addr *addr)
{
    struct sockaddr_storage local, peer;
    socklen_t llen = sizeof local, plen = sizeof peer;

    /* Ports first: they differ on almost every connection, and then the peer need not be asked. */
    if (getsockname(fd, (struct sockaddr *)&local, &llen) < 0 ||
        sg_addr_port((const struct sockaddr *)&local) != sg_addr_port((const struct sockaddr *)&addr->ss) ||
        getpeername(fd, (struct sockaddr *)&peer, &plen) < 0)
        return 0;
    if (local.ss_family != peer.ss_family)
        return 0;
    if (local.ss_family == AF_INET) {
        const struct sockaddr_in *l = (const void *)&local, *p = (const void *)&peer;
        return l->sin_port == p->sin_port && l->sin_addr.s_addr == p->sin_addr.s_addr;
    }
    if (local.ss_family == AF_INET6) {
        const struct sockaddr_in6 *l = (const void *)&local, *p = (const void *)&peer;
        return l->sin6_port == p->sin6_port &&
               memcmp(&l->sin6_addr, &p->sin6_addr, sizeof l->sin6_addr) == 0;
    }
    return 0;
}

int sg_client_socket_setup(int fd, const struct sg_addr *addr, int type)
{
    int one = 1;
    if (type == SOCK_STREAM && addr->ss.ss_family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* best effort */
    if (type == SOCK_DGRAM && addr->ss.ss_family == AF_UNIX) {
        /* A UNIX datagram needs a bound sender to be answered: autobind gives an abstract name of our own. */
        sa_family_t fam = AF_UNIX;
        if (bind(fd, (const struct sockaddr *)&fam, sizeof fam) < 0)
            return -1;
    }
    return 0;
}

int sg_connect(const struct sg_addr *addr, int type, int timeout_ms, int *fd, char *err, size_t errlen)
{
    char text[SG_ADDR_STRLEN];
    int s, rc, soerr = 0;
    socklen_t slen = sizeof soerr;

    *fd = -1;
    sg_addr_format((const struct sockaddr *)&addr->ss, addr->len, text, sizeof text);
    s = socket(addr->ss.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    if (sg_client_socket_setup(s, addr, type) != 0) {
        soerr = errno;
        goto failed;
    }
    if (connect(s, (const struct sockaddr *)&addr->ss, addr->len) == 0)
        goto done;
    if (errno != EINPROGRESS && errno != EINTR) {
        soerr = errno;
        goto failed;
    }
    rc = sg_wait_fd(s, POLLOUT, sg_deadline_after(timeout_ms));
    if (rc == SG_ERR_TIMEOUT) {
        snprintf(err, errlen, "connect %s: timed out after %d ms", text, timeout_ms);
        close(s);
        return SG_ERR_TIMEOUT;
    }
    if (rc != SG_OK || getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &slen) < 0)
        soerr = errno;
    if (soerr)
        goto failed;
done:
    /* With nothing bound to a loopback port in the ephemeral range, the kernel may
     * pick that very port as our source: TCP then "connects" to itself and UDP
     * reads back its own datagrams, so a dead backend would look alive and echo
     * the request as the answer. Treat it as the refusal it really is. */
    if (is_self_connected(s, addr)) {
        soerr = ECONNREFUSED;
        goto failed;
    }
    *fd = s;
    return SG_OK;
failed:
    snprintf(err, errlen, "connect %s: %s", text, strerror(soerr));
    close(s);
    errno = soerr;
    return (soerr == ECONNREFUSED || soerr == ENETUNREACH || soerr == EHOSTUNREACH ||
            soerr == ECONNRESET)
               ? SG_ERR_REFUSED
               : SG_ERR_SYS;
}
