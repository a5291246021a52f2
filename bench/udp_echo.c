/*
 * udp_echo.c - sockgate-udp-echo: the peer of the UDP time benchmark, a bare
 * blocking recvfrom-and-sendto loop with nothing around it, so sockgate-time's
 * round trips per second have a ceiling to be compared with in the same run.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

#define DEFAULT_LISTEN "127.0.0.1:9102"
#define MAX_DATAGRAM 65536
/* The receive timeout only bounds how late a stop is seen if shutdown() did not wake the loop. */
#define STOP_POLL_MS 500

struct udp_echo {
    int fd;
    atomic_int stopping;
    unsigned char buf[MAX_DATAGRAM];
};

/* Port 0 cannot be answered and is the mark of a reflection attempt; everything else is echoed. */
static int is_answerable(const struct sockaddr_storage *from)
{
    if (from->ss_family == AF_INET)
        return ((const struct sockaddr_in *)from)->sin_port != 0;
    if (from->ss_family == AF_INET6)
        return ((const struct sockaddr_in6 *)from)->sin6_port != 0;
    return 0;
}

static int echo_run(void *p)
{
    struct udp_echo *e = p;
    while (!atomic_load(&e->stopping)) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n = recvfrom(e->fd, e->buf, sizeof e->buf, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNREFUSED)
                continue;
            if (atomic_load(&e->stopping))
                break;
            sg_error("recvfrom: %s", strerror(errno));
            return SG_ERR_SYS;
        }
        /* After stop()'s shutdown a receive returns an empty datagram with no sender. */
        if (atomic_load(&e->stopping))
            break;
        if (fromlen == 0 || !is_answerable(&from))
            continue;
        /* best effort: a lost reply is what UDP allows, and the load driver counts it */
        (void)sendto(e->fd, e->buf, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&from, fromlen);
    }
    return SG_OK;
}

static void echo_stop(void *p)
{
    struct udp_echo *e = p;
    atomic_store(&e->stopping, 1);
    /* Linux wakes a blocked receive on shutdown() even for an unconnected UDP socket. */
    (void)shutdown(e->fd, SHUT_RD);
}

static void echo_destroy(void *p)
{
    struct udp_echo *e = p;
    if (!e)
        return;
    if (e->fd >= 0)
        close(e->fd);
    free(e);
}

static int echo_listen_fd(void *p)
{
    return ((struct udp_echo *)p)->fd;
}

static const struct sg_service_ops udp_echo_ops = {
    .name = "udp-echo",
    .run = echo_run,
    .stop = echo_stop,
    .destroy = echo_destroy,
    .listen_fd = echo_listen_fd,
};

/* Binds a blocking UDP socket on text; returns SG_OK with *out owned by the caller. */
static int udp_echo_create(const char *text, struct udp_echo **out, char *err, size_t errlen)
{
    struct udp_echo *e = NULL;
    struct sg_addr addr;
    struct timeval tv = {.tv_sec = 0, .tv_usec = STOP_POLL_MS * 1000};
    int rc;

    *out = NULL;
    rc = sg_addr_parse(text, &addr, err, errlen);
    if (rc != SG_OK)
        return rc;
    e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    e->fd = -1;
    atomic_init(&e->stopping, 0);
    rc = sg_listen(&addr, SOCK_DGRAM, &e->fd, err, errlen);
    if (rc != SG_OK)
        goto out;
    /* Blocking, as the bare loop of every textbook: one system call per receive and per send. */
    if (sg_set_nonblock(e->fd, 0) != SG_OK || setsockopt(e->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
        snprintf(err, errlen, "socket set-up: %s", strerror(errno));
        rc = SG_ERR_SYS;
        goto out;
    }
    rc = SG_OK;
out:
    if (rc != SG_OK)
        echo_destroy(e);
    else
        *out = e;
    return rc;
}

int main(int argc, char **argv)
{
    const char *listen = DEFAULT_LISTEN, *log_format = "text";
    struct udp_echo *e = NULL;
    char err[256];
    int rc;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_UDP_ECHO_LISTEN", "HOST:PORT", "UDP address to serve (port 0: any)", &listen, NULL,
         NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-udp-echo", "sockgate-udp-echo [--listen HOST:PORT]",
                          "Sends every UDP datagram back unchanged with a bare blocking recvfrom/sendto loop: the "
                          "peer sockgate-time is benchmarked against.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_log_setup("sockgate-udp-echo", log_format) != SG_OK)
        return 2;
    rc = udp_echo_create(listen, &e, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-udp-echo: %s\n", err);
        return rc == SG_ERR_INVALID ? 2 : 1;
    }
    return sg_service_main(&udp_echo_ops, e);
}
