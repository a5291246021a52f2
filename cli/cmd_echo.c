/* cmd_echo.c - `sockgate-cli echo`: the tutorial's echo clients (TCP and UDP), done right. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"
#include "udp_request.h"

#define UDP_MAX_PAYLOAD 65507u /* the most one IPv4 UDP datagram carries */
#define PIECE 65536u           /* a stdin line is sent in pieces of at most this many bytes */

struct echo_session {
    const char *addr;
    int fd;
    int udp;
    int timeout_ms;
    int retries;
    unsigned char reply[PIECE];
};

/*
 * Sends msg over TCP and copies exactly len reply bytes to stdout as they
 * come. Writing and reading are interleaved so a long message never
 * deadlocks against the server's backpressure. The timeout counts from the
 * last progress. Returns 0, or -1 after printing why.
 */
static int tcp_exchange(struct echo_session *s, const unsigned char *msg, size_t len)
{
    size_t sent = 0, received = 0;
    int64_t deadline = sg_now_ms() + s->timeout_ms;

    while (received < len) {
        struct pollfd p = {.fd = s->fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
        int64_t left = deadline - sg_now_ms();
        int r;
        if (left <= 0) {
            cli_error("%s: no reply within %d ms (timeout)", s->addr, s->timeout_ms);
            return -1;
        }
        r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            cli_error("poll: %s", strerror(errno));
            return -1;
        }
        if (p.revents & POLLOUT) {
            ssize_t w = send(s->fd, msg + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                cli_error("%s: send: %s", s->addr, strerror(errno));
                return -1;
            }
            if (w > 0) {
                sent += (size_t)w;
                deadline = sg_now_ms() + s->timeout_ms;
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            size_t want = len - received < sizeof s->reply ? len - received : sizeof s->reply;
            ssize_t n = recv(s->fd, s->reply, want, MSG_DONTWAIT);
            if (n == 0) {
                cli_error("%s: connection closed by the server after %zu of %zu reply bytes", s->addr, received,
                          len);
                return -1;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                cli_error("%s: recv: %s", s->addr, strerror(errno));
                return -1;
            }
            if (n > 0) {
                fwrite(s->reply, 1, (size_t)n, stdout);
                received += (size_t)n;
                deadline = sg_now_ms() + s->timeout_ms;
            }
        }
    }
    return 0;
}

/* Sends msg as one datagram and prints the reply; returns 0, or -1 after printing why. */
static int udp_exchange(struct echo_session *s, const unsigned char *msg, size_t len)
{
    size_t got = 0;
    int rc;
    if (len > UDP_MAX_PAYLOAD) {
        cli_error("%zu bytes do not fit in one UDP datagram (%u at most)", len, UDP_MAX_PAYLOAD);
        return -1;
    }
    rc = udp_request(s->fd, msg, len, s->reply, sizeof s->reply, &got, len, s->timeout_ms, s->retries);
    switch (rc) {
    case SG_OK:
        fwrite(s->reply, 1, got, stdout);
        return 0;
    case SG_ERR_TIMEOUT:
        cli_error("%s: no reply after %d attempts of %d ms (timeout)", s->addr, s->retries + 1, s->timeout_ms);
        break;
    case SG_ERR_REFUSED:
        cli_error("%s: refused (nothing listens on that UDP port)", s->addr);
        break;
    case SG_ERR_PROTO:
        cli_error("%s: protocol error: replies were not %zu bytes long like the request", s->addr, len);
        break;
    default:
        cli_error("%s: %s", s->addr, strerror(errno));
        break;
    }
    return -1;
}

static int exchange(struct echo_session *s, const unsigned char *msg, size_t len)
{
    return s->udp ? udp_exchange(s, msg, len) : tcp_exchange(s, msg, len);
}

/*
 * Reads from stdin up to cap bytes or through the next newline (kept) into
 * buf. Returns the byte count, 0 at EOF. Bytes are counted, not NUL-ended,
 * so a line may hold any byte.
 */
static size_t read_piece(unsigned char *buf, size_t cap)
{
    size_t n = 0;
    int ch;
    while (n < cap && (ch = getchar()) != EOF) {
        buf[n++] = (unsigned char)ch;
        if (ch == '\n')
            break;
    }
    return n;
}

/*
 * The tutorial's interactive client: a `>>> ` prompt on a terminal, blank
 * lines skipped, `q` ends. Each line is sent without its newline and its
 * reply printed on a line of its own. Lines longer than a piece go over TCP
 * piece by piece; over UDP a line must fit one datagram.
 */
static int line_loop(struct echo_session *s)
{
    static unsigned char line[PIECE];
    int interactive = cli_interactive();

    for (;;) {
        size_t n, len, blank = 1;
        int has_eol;
        if (interactive) {
            fputs(">>> ", stderr);
            fflush(stderr);
        }
        n = read_piece(line, s->udp ? UDP_MAX_PAYLOAD + 1 : sizeof line);
        if (n == 0)
            return 0;
        has_eol = line[n - 1] == '\n';
        len = n - (size_t)has_eol;
        if (has_eol && len > 0 && line[len - 1] == '\r')
            len--;
        if (has_eol || feof(stdin)) {
            for (size_t i = 0; i < len && blank; i++)
                blank = line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\v' || line[i] == '\f';
            if (blank)
                continue;
            if (len == 1 && line[0] == 'q')
                return 0;
        } else if (s->udp) {
            cli_error("line longer than one UDP datagram (%u bytes at most)", UDP_MAX_PAYLOAD);
            return -1;
        }
        if (exchange(s, line, len) != 0)
            return -1;
        while (!has_eol) {
            n = read_piece(line, sizeof line);
            if (n == 0)
                break;
            has_eol = line[n - 1] == '\n';
            len = n - (size_t)has_eol;
            if (has_eol && len > 0 && line[len - 1] == '\r')
                len--;
            if (len > 0 && exchange(s, line, len) != 0)
                return -1;
        }
        putchar('\n');
        fflush(stdout);
    }
}

/* Joins argv[0..argc) with single spaces into a new buffer (like echo(1)); NULL when out of memory. */
static unsigned char *join_args(int argc, char **argv, size_t *len)
{
    size_t total = 0, off = 0;
    unsigned char *buf;
    for (int i = 0; i < argc; i++)
        total += strlen(argv[i]) + 1;
    buf = malloc(total ? total : 1);
    if (!buf)
        return NULL;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]);
        if (i > 0)
            buf[off++] = ' ';
        memcpy(buf + off, argv[i], n);
        off += n;
    }
    *len = off;
    return buf;
}

int cmd_echo(int argc, char **argv)
{
    const char *udp = NULL, *timeout = "2s", *retries = "2";
    struct echo_session *s = NULL;
    unsigned char *text = NULL;
    uint64_t v;
    size_t len = 0;
    int first = 0, rc, status = CLI_EXIT_FAIL;
    const struct sg_option opts[] = {
        {"udp", "SOCKGATE_CLI_UDP", NULL, "talk UDP (one datagram per message) instead of TCP", &udp, NULL, NULL},
        {"timeout", "SOCKGATE_CLI_TIMEOUT_MS", "DURATION",
         "how long to wait for the server (UDP: per attempt; a bare number: milliseconds)", &timeout, NULL, NULL},
        {"retries", "SOCKGATE_CLI_RETRIES", "N", "UDP: how many times to send again when no reply comes",
         &retries, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-cli echo", "sockgate-cli echo [--udp] [--timeout DURATION] [--retries N] ADDR [TEXT...]",
                          "Sends TEXT (or each line of stdin until EOF or q) to an echo server and prints the reply.",
                          opts, argc, argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (first >= argc) {
        cli_error("echo: missing ADDR (see sockgate-cli echo --help)");
        return CLI_EXIT_USAGE;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    s->fd = -1;
    s->addr = argv[first];
    s->udp = udp != NULL;
    if (cli_parse_duration("echo", "timeout", timeout, 1, 3600 * 1000, &s->timeout_ms) != 0) {
        status = CLI_EXIT_USAGE;
        goto out;
    }
    if (sg_parse_u64(retries, 0, 100, 0, &v) != SG_OK) {
        cli_error("echo: --retries must be a number from 0 to 100, not '%s'", retries);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    s->retries = (int)v;
    if (first + 1 < argc) {
        text = join_args(argc - first - 1, argv + first + 1, &len);
        if (!text) {
            cli_error("out of memory");
            goto out;
        }
    }
    s->fd = cli_connect(s->addr, s->udp ? SOCK_DGRAM : SOCK_STREAM, s->timeout_ms);
    if (s->fd < 0)
        goto out;
    if (text) {
        if (exchange(s, text, len) != 0)
            goto out;
        putchar('\n');
    } else if (line_loop(s) != 0) {
        goto out;
    }
    if (fflush(stdout) != 0) {
        cli_error("writing the reply: %s", strerror(errno));
        goto out;
    }
    status = 0;
out:
    if (s && s->fd >= 0)
        close(s->fd);
    free(s);
    free(text);
    return status;
}
