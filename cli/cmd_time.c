/* cmd_time.c - `sockgate-cli time`: the tutorial's time client over UDP, with a timeout and retries. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "sockgate/error.h"
#include "sockgate/opts.h"
#include "udp_request.h"

#define UDP_MAX_PAYLOAD 65507u
#define REPLY_CAP 65536u

/* Replaces control characters so the server's text prints as one line. */
static void one_line(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
}

/* Joins argv[0..argc) with single spaces into buf (cap bytes); returns the length, or -1 when too long. */
static long join_args(int argc, char **argv, char *buf, size_t cap)
{
    size_t off = 0;
    for (int i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]);
        if (off + n + (i > 0) > cap)
            return -1;
        if (i > 0)
            buf[off++] = ' ';
        memcpy(buf + off, argv[i], n);
        off += n;
    }
    return (long)off;
}

/*
 * 0 when the reply cannot come from a time server: an empty one (an empty
 * format means the default one, and strftime of a conversion is never
 * empty), or the format itself when it holds a conversion (echo's answer).
 */
static int is_time_reply(const char *format, size_t len, const char *reply, size_t got)
{
    if (got == 0)
        return len > 0 && memchr(format, '%', len) == NULL; /* a format of no conversions could be blank-free text */
    return !(got == len && memchr(format, '%', len) && strncasecmp(format, reply, len) == 0);
}

int cmd_time(int argc, char **argv)
{
    const char *timeout = "1s", *retries = "2";
    char *format = NULL, *reply = NULL;
    uint64_t v;
    long len = 0;
    size_t got = 0;
    int first = 0, fd = -1, rc, timeout_ms, nretries, status = CLI_EXIT_FAIL;
    const struct sg_option opts[] = {
        {"timeout", "SOCKGATE_CLI_TIMEOUT_MS", "DURATION", "how long to wait for each reply (a bare number: milliseconds)", &timeout, NULL, NULL},
        {"retries", "SOCKGATE_CLI_RETRIES", "N", "how many times to ask again when no reply comes", &retries, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-cli time", "sockgate-cli time [--timeout DURATION] [--retries N] ADDR [FORMAT]",
                          "Asks a time server for the current time in a strftime FORMAT "
                          "(none: the server's default, %Y-%m-%d %X) over UDP.",
                          opts, argc, argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (first >= argc) {
        cli_error("time: missing ADDR (see sockgate-cli time --help)");
        return CLI_EXIT_USAGE;
    }
    if (cli_parse_duration("time", "timeout", timeout, 1, 3600 * 1000, &timeout_ms) != 0)
        return CLI_EXIT_USAGE;
    if (sg_parse_u64(retries, 0, 100, 0, &v) != SG_OK) {
        cli_error("time: --retries must be a number from 0 to 100, not '%s'", retries);
        return CLI_EXIT_USAGE;
    }
    nretries = (int)v;
    format = malloc(UDP_MAX_PAYLOAD);
    reply = malloc(REPLY_CAP + 1);
    if (!format || !reply) {
        cli_error("out of memory");
        goto out;
    }
    len = join_args(argc - first - 1, argv + first + 1, format, UDP_MAX_PAYLOAD);
    if (len < 0) {
        cli_error("time: FORMAT does not fit in one UDP datagram (%u bytes at most)", UDP_MAX_PAYLOAD);
        status = CLI_EXIT_USAGE;
        goto out;
    }
    fd = cli_connect(argv[first], SOCK_DGRAM, timeout_ms);
    if (fd < 0)
        goto out;
    rc = udp_request(fd, format, (size_t)len, reply, REPLY_CAP, &got, UDP_ANY_LENGTH, timeout_ms, nretries);
    if (rc == SG_ERR_TIMEOUT) {
        cli_error("%s: no reply after %d attempts of %d ms (timeout)", argv[first], nretries + 1, timeout_ms);
        goto out;
    }
    if (rc == SG_ERR_REFUSED) {
        cli_error("%s: refused (nothing listens on that UDP port)", argv[first]);
        goto out;
    }
    if (rc != SG_OK) {
        cli_error("%s: %s", argv[first], strerror(errno));
        goto out;
    }
    reply[got] = '\0';
    if (got >= strlen("ERROR: ") && memcmp(reply, "ERROR: ", strlen("ERROR: ")) == 0) {
        one_line(reply);
        cli_error("%s: the server says %s", argv[first], reply);
        goto out;
    }
    if (!is_time_reply(format, (size_t)len, reply, got)) {
        cli_error("%s is not a time server: %s", argv[first],
                  got == 0 ? "it answered with an empty datagram (sockgate-time always sends the time)"
                           : "it sent the format back unchanged, as sockgate-echo does");
        goto out;
    }
    fwrite(reply, 1, got, stdout);
    putchar('\n');
    if (fflush(stdout) != 0) {
        cli_error("writing the reply: %s", strerror(errno));
        goto out;
    }
    status = 0;
out:
    if (fd >= 0)
        close(fd);
    free(format);
    free(reply);
    return status;
}
