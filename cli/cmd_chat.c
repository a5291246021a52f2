/* cmd_chat.c - `sockgate-cli chat`: the tutorial's UDP "QQ" chat client, usable from a terminal or a pipe. */
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
#include "sockgate/text.h"

#define CHAT_MAX_DATAGRAM 1024u /* the tutorial's BUFSIZE: the chat server drops longer messages */
#define REPLY_CAP 65536u        /* replies are read whole; the server sends at most 1024 bytes */

/* Shown only when a person is at the terminal. */
#define PROMPT_MSG "message (q ends): "

struct chat_session {
    const char *addr;
    int fd;
    int timeout_ms;       /* how long to wait for a reply after each message; 0: until one comes */
    int interactive;      /* prompts only when a person is at the terminal */
    int color;            /* the tutorial's colours only on a terminal */
    char *line;           /* getline buffer */
    size_t line_cap;
    unsigned char reply[REPLY_CAP];
};

/* Reads one stdin line with the surrounding whitespace removed (Python's strip()); returns NULL at EOF. */
static char *read_line(struct chat_session *s, const char *prompt)
{
    ssize_t n;
    char *p;
    if (s->interactive) {
        fputs(prompt, stderr);
        fflush(stderr);
    }
    n = getline(&s->line, &s->line_cap, stdin);
    if (n < 0)
        return NULL;
    while (n > 0 && strchr(" \t\r\n\v\f", s->line[n - 1]))
        s->line[--n] = '\0';
    for (p = s->line; *p && strchr(" \t\r\n\v\f", *p); p++)
        ;
    return p;
}

/* Prints one reply as the tutorial does: 来自[HOST:PORT]的一条消息:TEXT, with control characters made visible. */
static int show_reply(struct chat_session *s, size_t len, const struct sockaddr *from, socklen_t fromlen)
{
    char addr[SG_ADDR_STRLEN];
    sg_addr_format(from, fromlen, addr, sizeof addr);
    /* The text comes from whoever operates the server: it must not drive this terminal. */
    for (size_t i = 0; i < len; i++)
        if (s->reply[i] < 0x20 || s->reply[i] == 0x7f)
            s->reply[i] = '?';
    printf("来自[%s]的一条消息:%s", addr, s->color ? "\033[1;34;43m" : "");
    fwrite(s->reply, 1, len, stdout);
    printf("%s\n", s->color ? "\033[0m" : "");
    if (fflush(stdout) != 0) {
        cli_error("writing the reply: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/*
 * Receives one datagram, waiting up to wait_ms (-1: no limit, 0: only what
 * is queued). Returns 1 after printing it, 0 when none came, -1 on failure.
 */
static int receive_reply(struct chat_session *s, int wait_ms)
{
    int64_t deadline = wait_ms < 0 ? -1 : sg_now_ms() + wait_ms;
    for (;;) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof from;
        ssize_t n;
        int rc = sg_wait_fd(s->fd, POLLIN, deadline);
        if (rc == SG_ERR_TIMEOUT)
            return 0;
        if (rc != SG_OK) {
            cli_error("poll: %s", strerror(errno));
            return -1;
        }
        n = recvfrom(s->fd, s->reply, sizeof s->reply, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
        if (n >= 0)
            return show_reply(s, (size_t)n, (struct sockaddr *)&from, fromlen) < 0 ? -1 : 1;
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
            continue;
        if (errno == ECONNREFUSED)
            cli_error("%s: refused (nothing listens on that UDP port)", s->addr);
        else
            cli_error("%s: recv: %s", s->addr, strerror(errno));
        return -1;
    }
}

/* Sends text exactly as typed and waits for the reply; returns 0, or -1 when the chat cannot go on. */
static int send_message(struct chat_session *s, const char *text)
{
    const char *msg = text;
    size_t len = strlen(text);
    int rc;

    if (len > CHAT_MAX_DATAGRAM) {
        cli_error("chat: message not sent: it is %zu bytes, more than the chat's %u", len, CHAT_MAX_DATAGRAM);
        return 0;
    }
    if (!sg_utf8_valid(msg, len)) {
        cli_error("chat: message not sent: it is not valid UTF-8");
        return 0;
    }
    /* Replies that came after an earlier wait gave up are shown first, in order. */
    while ((rc = receive_reply(s, 0)) > 0)
        ;
    if (rc < 0)
        return -1;
    if (send(s->fd, msg, len, MSG_NOSIGNAL) < 0) {
        if (errno == ECONNREFUSED)
            cli_error("%s: refused (nothing listens on that UDP port)", s->addr);
        else
            cli_error("%s: send: %s", s->addr, strerror(errno));
        return -1;
    }
    rc = receive_reply(s, s->timeout_ms > 0 ? s->timeout_ms : -1);
    if (rc == 0)
        cli_error("chat: no reply within %d ms; going on", s->timeout_ms);
    return rc < 0 ? -1 : 0;
}

/* Sends each line typed until 'q' or EOF (returns 0); -1 when the chat cannot go on. */
static int converse(struct chat_session *s)
{
    for (;;) {
        char *text = read_line(s, PROMPT_MSG);
        if (!text || strcmp(text, "q") == 0)
            return 0;
        if (!*text)
            continue;
        if (send_message(s, text) < 0)
            return -1;
    }
}

static int parse_flags(int argc, char **argv, struct chat_session *s, int *first)
{
    const char *timeout = "0", *color = "auto";
    int rc;
    const struct sg_option opts[] = {
        {"timeout", "SOCKGATE_CLI_CHAT_TIMEOUT_MS", "DURATION",
         "wait at most this long for each reply (0: until it comes; a bare number: milliseconds)",
         &timeout, NULL, NULL},
        {"color", "SOCKGATE_CLI_CHAT_COLOR", "auto|always|never", "the tutorial's colours for replies", &color, NULL,
         NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-cli chat", "sockgate-cli chat [--timeout DURATION] [--color auto|always|never] ADDR",
                          "The tutorial's UDP chat client: each line typed is sent to the chat server at ADDR "
                          "exactly as typed (q ends), and each reply is shown as the tutorial shows it, "
                          "\"来自[SENDER]的一条消息:TEXT\". Reads stdin; prompts only on a terminal.",
                          opts, argc, argv, first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (*first >= argc || *first + 1 < argc) {
        cli_error("chat: expected exactly one ADDR (see sockgate-cli chat --help)");
        return CLI_EXIT_USAGE;
    }
    if (cli_parse_duration("chat", "timeout", timeout, 0, 86400 * 1000, &s->timeout_ms) != 0)
        return CLI_EXIT_USAGE;
    if (strcmp(color, "auto") == 0) {
        s->color = isatty(STDOUT_FILENO);
    } else if (strcmp(color, "always") == 0 || strcmp(color, "never") == 0) {
        s->color = color[0] == 'a';
    } else {
        cli_error("chat: --color must be auto, always or never, not '%s'", color);
        return CLI_EXIT_USAGE;
    }
    return -1;
}

int cmd_chat(int argc, char **argv)
{
    struct chat_session *s = calloc(1, sizeof *s);
    int first = 0, rc, status = CLI_EXIT_FAIL;

    if (!s) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    s->fd = -1;
    rc = parse_flags(argc, argv, s, &first);
    if (rc >= 0) {
        status = rc;
        goto out;
    }
    s->addr = argv[first];
    s->interactive = cli_interactive();
    s->fd = cli_connect(s->addr, SOCK_DGRAM, 5000);
    if (s->fd < 0)
        goto out;
    if (converse(s) < 0)
        goto out;
    status = 0;
out:
    if (s->fd >= 0)
        close(s->fd);
    free(s->line);
    free(s);
    return status;
}
