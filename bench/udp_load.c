/*
 * udp_load.c - sockgate-udp-load: UDP round trips per second with N datagrams in
 * flight, against sockgate-time or the bare sockgate-udp-echo, with the same payload
 * (a strftime format), so the two are measured by one loop in one run.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"

#define MAX_INFLIGHT 1024
#define MAX_REPLY 2048
/* With nothing back for this long, what is in flight is counted lost and sent again. */
#define LOSS_MS 100

/*
 * What is measured: the driver keeps `inflight` requests outstanding; a round
 * trip is one reply received and checked. Replies carry no sequence number (a
 * time reply cannot), so a late reply after a loss simply counts once more.
 */
struct load {
    int fd;
    const char *payload;
    size_t payload_len;
    int expect_echo;     /* the reply must equal the payload (else: a time, not an error) */
    unsigned inflight;   /* wanted outstanding */
    unsigned outstanding;
    uint64_t round_trips;
    uint64_t lost;
    uint64_t errors;
    char why[160];
    struct mmsghdr out[MAX_INFLIGHT];
    struct iovec out_iov[MAX_INFLIGHT];
    struct mmsghdr in[MAX_INFLIGHT];
    struct iovec in_iov[MAX_INFLIGHT];
    unsigned char (*replies)[MAX_REPLY];
};

/* Sends requests until `inflight` are outstanding; returns -1 (why set) when the socket fails. */
static int top_up(struct load *l)
{
    while (l->outstanding < l->inflight) {
        unsigned want = l->inflight - l->outstanding;
        int n = sendmmsg(l->fd, l->out, want, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ENOBUFS)
                return 0; /* the send queue is full: the replies will make room */
            snprintf(l->why, sizeof l->why, "send: %s", strerror(errno));
            return -1;
        }
        l->outstanding += (unsigned)n;
    }
    return 0;
}

/* Takes every reply already queued; returns how many, or -1 (why set) when the socket fails. */
static int drain(struct load *l)
{
    int total = 0;
    for (;;) {
        int n;
        for (unsigned i = 0; i < l->inflight; i++) {
            memset(&l->in[i].msg_hdr, 0, sizeof l->in[i].msg_hdr);
            l->in[i].msg_hdr.msg_iov = &l->in_iov[i];
            l->in[i].msg_hdr.msg_iovlen = 1;
        }
        n = recvmmsg(l->fd, l->in, l->inflight, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return total;
            snprintf(l->why, sizeof l->why, "receive: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            size_t len = l->in[i].msg_len;
            const unsigned char *r = l->replies[i];
            int ok = l->expect_echo ? len == l->payload_len && memcmp(r, l->payload, len) == 0
                                    : len > 0 && !(len >= 7 && memcmp(r, "ERROR: ", 7) == 0);
            if (!ok) {
                l->errors++;
                snprintf(l->why, sizeof l->why, "unexpected reply of %zu bytes: %.*s", len,
                         (int)(len < 60 ? len : 60), (const char *)r);
            }
            l->round_trips++;
            if (l->outstanding > 0)
                l->outstanding--;
        }
        total += n;
        if ((unsigned)n < l->inflight)
            return total;
    }
}

/* Runs the load until deadline or count round trips; returns 0, or -1 with why set. */
static int run_load(struct load *l, int64_t deadline, uint64_t count)
{
    int64_t last_reply = sg_now_ms();
    while (count == 0 || l->round_trips < count) {
        struct pollfd pfd = {.fd = l->fd, .events = POLLIN};
        int64_t now = sg_now_ms(), left = deadline - now;
        int got;
        if (left <= 0)
            break;
        if (top_up(l) < 0)
            return -1;
        if (poll(&pfd, 1, left < LOSS_MS ? (int)left : LOSS_MS) < 0 && errno != EINTR) {
            snprintf(l->why, sizeof l->why, "poll: %s", strerror(errno));
            return -1;
        }
        got = drain(l);
        if (got < 0)
            return -1;
        now = sg_now_ms();
        if (got > 0) {
            last_reply = now;
        } else if (now - last_reply >= LOSS_MS) {
            l->lost += l->outstanding;
            l->outstanding = 0;
            last_reply = now;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr_text = "127.0.0.1:9002", *payload = "%Y-%m-%d %X", *expect = "time";
    const char *inflight_text = "16", *duration_text = "5", *count_text = "0";
    struct load *l = NULL;
    struct sg_addr addr;
    uint64_t inflight, duration, count;
    int64_t start, elapsed;
    char err[256];
    int rc, status = 1, failed;
    const struct sg_option opts[] = {
        {"addr", "SOCKGATE_BENCH_ADDR", "HOST:PORT", "the UDP server", &addr_text, NULL, NULL},
        {"payload", "SOCKGATE_BENCH_PAYLOAD", "TEXT", "the datagram sent (a strftime format for sockgate-time)",
         &payload, NULL, NULL},
        {"expect", "SOCKGATE_BENCH_EXPECT", "time|echo",
         "time: any reply not starting with 'ERROR: '; echo: the payload itself", &expect, NULL, NULL},
        {"inflight", "SOCKGATE_BENCH_INFLIGHT", "N", "datagrams outstanding at once", &inflight_text, NULL, NULL},
        {"duration", "SOCKGATE_BENCH_DURATION", "DURATION", "how long to measure (a bare number: seconds)",
         &duration_text, NULL, NULL},
        {"count", "SOCKGATE_BENCH_COUNT", "N", "stop after N round trips (0: run for the duration)", &count_text,
         NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-udp-load",
                          "sockgate-udp-load [--addr HOST:PORT] [--payload TEXT] [--expect time|echo] "
                          "[--inflight N] [--duration DURATION] [--count N]",
                          "Measures UDP round trips per second against sockgate-time or a UDP echo with N "
                          "datagrams in flight; prints one JSON line.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_parse_u64(inflight_text, 1, MAX_INFLIGHT, 0, &inflight) != SG_OK ||
        sg_parse_u64(count_text, 0, UINT64_MAX, 0, &count) != SG_OK) {
        fprintf(stderr, "sockgate-udp-load: bad number in the options (see --help)\n");
        return 2;
    }
    if (sg_flag_duration("sockgate-udp-load", "duration", duration_text, 1000, 3600000, 1000, &duration) != 0)
        return 2;
    duration /= 1000; /* whole seconds from here on */
    if (strcmp(expect, "time") != 0 && strcmp(expect, "echo") != 0) {
        fprintf(stderr, "sockgate-udp-load: --expect must be time or echo\n");
        return 2;
    }
    if (strlen(payload) > MAX_REPLY) {
        fprintf(stderr, "sockgate-udp-load: --payload is over %d bytes\n", MAX_REPLY);
        return 2;
    }
    if (sg_addr_parse(addr_text, &addr, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate-udp-load: %s\n", err);
        return 2;
    }
    l = calloc(1, sizeof *l);
    if (l)
        l->replies = calloc(inflight, sizeof *l->replies);
    if (!l || !l->replies) {
        fprintf(stderr, "sockgate-udp-load: out of memory\n");
        goto out;
    }
    l->fd = -1;
    l->payload = payload;
    l->payload_len = strlen(payload);
    l->expect_echo = strcmp(expect, "echo") == 0;
    l->inflight = (unsigned)inflight;
    for (unsigned i = 0; i < l->inflight; i++) {
        l->out_iov[i].iov_base = (void *)payload;
        l->out_iov[i].iov_len = l->payload_len;
        l->out[i].msg_hdr.msg_iov = &l->out_iov[i];
        l->out[i].msg_hdr.msg_iovlen = 1;
        l->in_iov[i].iov_base = l->replies[i];
        l->in_iov[i].iov_len = MAX_REPLY;
    }
    /* A connected socket: the kernel filters out anyone but the server and reports its ICMP errors. */
    if (sg_connect(&addr, SOCK_DGRAM, 1000, &l->fd, err, sizeof err) != SG_OK) {
        fprintf(stderr, "sockgate-udp-load: %s\n", err);
        goto out;
    }
    start = sg_now_ms();
    failed = run_load(l, start + (int64_t)duration * 1000, count);
    elapsed = sg_now_ms() - start;
    if (failed)
        fprintf(stderr, "sockgate-udp-load: %s\n", l->why);
    else if (l->errors)
        fprintf(stderr, "sockgate-udp-load: %llu wrong replies; the last: %s\n", (unsigned long long)l->errors,
                l->why);
    else if (l->round_trips == 0)
        fprintf(stderr, "sockgate-udp-load: no reply from %s\n", addr_text);
    printf("{\"bench\":\"udp_load\",\"addr\":\"%s\",\"expect\":\"%s\",\"payload_size\":%zu,\"inflight\":%u,"
           "\"duration_s\":%.3f,\"round_trips\":%llu,\"round_trips_per_s\":%.1f,\"lost\":%llu,\"errors\":%llu}\n",
           addr_text, expect, l->payload_len, l->inflight, elapsed / 1000.0, (unsigned long long)l->round_trips,
           elapsed > 0 ? l->round_trips * 1000.0 / (double)elapsed : 0.0, (unsigned long long)l->lost,
           (unsigned long long)l->errors);
    status = failed || l->errors || l->round_trips == 0 ? 1 : 0;
out:
    if (l && l->fd >= 0)
        close(l->fd);
    if (l)
        free(l->replies);
    free(l);
    return status;
}
