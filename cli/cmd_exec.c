/* cmd_exec.c - `sockgate-cli exec`: the tutorial's remote command client, done right. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"

#define CONNECT_TIMEOUT_MS 5000
#define STDIN_MAX (64u * 1024u * 1024u) /* the most stdin read into memory for one command */
#define LINE_MAX_BYTES 65536u           /* the server reads one raw line in one buffer of this size */
#define REPLY_SLACK_MS 30000            /* beyond the command's timeout: kill grace and transfer */
#define REPLY_WAIT_DEFAULT_MS 3600000   /* without --timeout-ms the server's own timeout applies */

/* How a reply turned out. */
struct exec_outcome {
    int exit_code; /* the command's, 127 when refused, or CLI_EXIT_FAIL */
    int ok;        /* 1 when a reply arrived (even a refusal), 0 when the exchange failed */
};

/* Reads all of path ("-": standard input) into a new buffer, at most STDIN_MAX bytes. */
static int read_input(const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 65536, used = 0;
    uint8_t *data = NULL;
    int rc = -1;

    if (!f) {
        cli_error("--stdin %s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        size_t n;
        if (!data || used == cap) {
            uint8_t *grown;
            if (data)
                cap *= 2;
            if (cap > STDIN_MAX + 1)
                cap = STDIN_MAX + 1;
            grown = realloc(data, cap);
            if (!grown) {
                cli_error("out of memory reading --stdin");
                goto out;
            }
            data = grown;
        }
        n = fread(data + used, 1, cap - used, f);
        used += n;
        if (used > STDIN_MAX) {
            cli_error("--stdin %s: more than %u bytes", path, STDIN_MAX);
            goto out;
        }
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        cli_error("--stdin %s: %s", path, strerror(errno));
        goto out;
    }
    *buf = data;
    *len = used;
    data = NULL;
    rc = 0;
out:
    free(data);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* Returns the integer value of key in hdr, or dflt when absent or not an integer. */
static long long header_num(const json_t *hdr, const char *key, long long dflt)
{
    const json_t *v = json_object_get(hdr, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

/* Says on stderr what the server did to the command beyond running it. */
static void report_flags(const json_t *hdr)
{
    long long sig = header_num(hdr, "signal", 0);
    if (json_is_true(json_object_get(hdr, "timed_out")))
        cli_error("exec: the command timed out and was killed%s", sig ? "" : " (it exited on its own after SIGTERM)");
    if (json_is_true(json_object_get(hdr, "truncated")))
        cli_error("exec: the output was over the server's cap: it is cut and the command was killed");
    if (sig && !json_is_true(json_object_get(hdr, "timed_out")))
        cli_error("exec: the command was killed by signal %lld", sig);
}

/*
 * Reads the reply: stdout bytes go to stdout, stderr bytes to stderr, as they
 * arrive. A streamed reply is frames "start", then "stdout" and "stderr" as
 * the command writes, then "exit"; a server without streaming sends one frame
 * whose body is stdout then stderr. An error frame becomes one line on
 * stderr. Fills out and returns 0, or -1 after printing why the exchange failed.
 */
static int read_reply(struct sg_frame_reader *r, const char *addr, int64_t deadline, struct exec_outcome *out)
{
    long long stdout_left = 0;
    int is_error = 0, is_last = 0;
    FILE *sink = NULL; /* where the current streamed frame's body goes */
    char msg[512];

    out->ok = 0;
    out->exit_code = CLI_EXIT_FAIL;
    for (;;) {
        enum sg_frame_event ev;
        const uint8_t *chunk;
        size_t len;
        int rc = sg_frame_reader_next(r, &ev, &chunk, &len, deadline);
        if (rc != SG_OK) {
            cli_error("%s: %s", addr,
                      rc == SG_ERR_PROTO ? sg_frame_decoder_error(&r->dec) : sg_strerror(rc));
            return -1;
        }
        if (ev == SG_FRAME_HEADER) {
            const json_t *hdr = sg_frame_decoder_header(&r->dec);
            const char *event = json_string_value(json_object_get(hdr, "event"));
            int err = sg_frame_header_error(hdr, msg, sizeof msg);
            sink = NULL;
            if (err != SG_OK) {
                is_error = is_last = 1;
                out->exit_code = (int)header_num(hdr, "exit_code", CLI_EXIT_FAIL);
                cli_error("exec: %s", msg);
            } else if (event && (strcmp(event, "stdout") == 0 || strcmp(event, "stderr") == 0)) {
                sink = event[3] == 'o' ? stdout : stderr;
            } else if (!event || strcmp(event, "exit") == 0) {
                is_last = 1;
                out->exit_code = (int)header_num(hdr, "exit_code", CLI_EXIT_FAIL);
                stdout_left = header_num(hdr, "stdout_size", 0);
                report_flags(hdr);
            }
            if (out->exit_code < 0 || out->exit_code > 255)
                out->exit_code = CLI_EXIT_FAIL;
        } else if (ev == SG_FRAME_BODY && sink) {
            /* Streamed output is shown as it comes: a line a second is seen a line a second. */
            fwrite(chunk, 1, len, sink);
            fflush(sink);
        } else if (ev == SG_FRAME_BODY && !is_error) {
            /* The body is stdout then stderr, as the tutorial's correct_msg + error_msg. */
            size_t to_out = stdout_left > 0 ? ((long long)len < stdout_left ? len : (size_t)stdout_left) : 0;
            fwrite(chunk, 1, to_out, stdout);
            fwrite(chunk + to_out, 1, len - to_out, stderr);
            stdout_left -= (long long)to_out;
        } else if (ev == SG_FRAME_END && is_last) {
            fflush(stdout);
            out->ok = 1;
            return 0;
        }
    }
}

/* Runs argv once as a framed request and returns the exit status for the CLI. */
static int run_once(int fd, const char *addr, char **argv, int argc, int64_t timeout_ms, const char *stdin_path)
{
    struct sg_frame_reader reader;
    struct exec_outcome res = {CLI_EXIT_FAIL, 0};
    uint8_t *body = NULL;
    size_t body_len = 0;
    /* Streamed: output shows as the command writes it, and closing the connection (Ctrl-C) stops it. */
    json_t *hdr = json_pack("{s:s, s:[], s:b}", "op", "exec", "argv", "stream", 1), *list;
    int64_t deadline = sg_now_ms() + (timeout_ms > 0 ? timeout_ms + REPLY_SLACK_MS : REPLY_WAIT_DEFAULT_MS);
    int rc;

    if (!hdr || (stdin_path && read_input(stdin_path, &body, &body_len) != 0))
        goto out;
    list = json_object_get(hdr, "argv");
    for (int i = 0; i < argc; i++) {
        json_t *s = json_string(argv[i]);
        if (!s) {
            cli_error("exec: argument %d is not valid UTF-8 (the request header is JSON)", i + 1);
            goto out;
        }
        json_array_append_new(list, s);
    }
    if (timeout_ms > 0)
        json_object_set_new(hdr, "timeout_ms", json_integer(timeout_ms));
    if (body_len > 0)
        json_object_set_new(hdr, "total_size", json_integer((json_int_t)body_len));
    rc = sg_frame_send(fd, hdr, body, body_len, deadline);
    /* A server that refuses a large stdin answers and closes early: its reply still says why. */
    if (rc != SG_OK && rc != SG_ERR_CLOSED) {
        cli_error("%s: sending the request: %s", addr, sg_strerror(rc));
        goto out;
    }
    sg_frame_reader_init(&reader, fd, 0);
    read_reply(&reader, addr, deadline, &res);
    sg_frame_reader_free(&reader);
out:
    json_decref(hdr);
    free(body);
    return res.exit_code;
}

/* Cuts blanks off both ends of line in place, as the tutorial's input().strip() does. */
static char *strip(char *line)
{
    size_t len = strlen(line);
    while (len > 0 && isspace((unsigned char)line[len - 1]))
        line[--len] = '\0';
    while (isspace((unsigned char)*line))
        line++;
    return line;
}

/* The tutorial's `>>> ` loop: each line goes out raw, as its client sends it; the server splits it. */
static int interactive(int fd, const char *addr)
{
    struct sg_frame_reader reader;
    char *line = NULL;
    size_t cap = 0;
    int prompt = isatty(STDIN_FILENO), status = 0;

    sg_frame_reader_init(&reader, fd, 0);
    for (;;) {
        struct exec_outcome res;
        char *cmd;
        ssize_t n;
        if (prompt) {
            fputs(">>> ", stdout);
            fflush(stdout);
        }
        n = getline(&line, &cap, stdin);
        if (n < 0)
            break;
        if (strlen(line) != (size_t)n) {
            cli_error("exec: a line holds a NUL byte; skipped");
            continue;
        }
        cmd = strip(line);
        if (*cmd == '\0')
            continue;
        if (strcmp(cmd, "q") == 0 || strcmp(cmd, "quit") == 0 || strcmp(cmd, "exit") == 0)
            break;
        if (strlen(cmd) >= LINE_MAX_BYTES) {
            cli_error("exec: a line must be shorter than %u bytes; skipped", LINE_MAX_BYTES);
            continue;
        }
        if (sg_write_all(fd, cmd, strlen(cmd), sg_now_ms() + REPLY_SLACK_MS) != SG_OK ||
            read_reply(&reader, addr, sg_now_ms() + REPLY_WAIT_DEFAULT_MS, &res) != 0) {
            cli_error("%s: the connection broke", addr);
            status = CLI_EXIT_FAIL;
            break;
        }
        fflush(stderr);
    }
    if (prompt && status == 0)
        fputc('\n', stdout);
    free(line);
    sg_frame_reader_free(&reader);
    return status;
}

int cmd_exec(int argc, char **argv)
{
    const char *timeout = "0", *stdin_path = NULL;
    uint64_t timeout_ms = 0;
    int first = 0, fd, status;
    const struct sg_option opts[] = {
        {"timeout-ms", "SOCKGATE_CLI_EXEC_TIMEOUT_MS", "N",
         "ask the server to kill the command after N ms (0: the server's default)", &timeout, NULL, NULL},
        {"stdin", "SOCKGATE_CLI_EXEC_STDIN", "FILE", "send FILE ('-': standard input) as the command's stdin",
         &stdin_path, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };
    int rc = sg_options_parse("sockgate-cli exec", "sockgate-cli exec [--timeout-ms N] [--stdin FILE] ADDR [CMD [ARGS...]]",
                              "Runs CMD with ARGS on a sockgate-exec server (no shell anywhere): its stdout and "
                              "stderr come out on ours and its exit status is ours. Without CMD, reads command "
                              "lines at a `>>> ` prompt like the tutorial's client.",
                              opts, argc, argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (sg_parse_u64(timeout, 0, 86400000, 0, &timeout_ms) != SG_OK) {
        cli_error("exec: --timeout-ms must be a number of milliseconds from 0 to 86400000, not '%s'", timeout);
        return CLI_EXIT_USAGE;
    }
    if (first >= argc) {
        cli_error("exec: missing ADDR (see sockgate-cli exec --help)");
        return CLI_EXIT_USAGE;
    }
    if (first + 1 == argc && stdin_path) {
        cli_error("exec: --stdin needs a command (the interactive loop reads its lines from stdin)");
        return CLI_EXIT_USAGE;
    }
    fd = cli_connect(argv[first], SOCK_STREAM, CONNECT_TIMEOUT_MS);
    if (fd < 0)
        return CLI_EXIT_FAIL;
    if (first + 1 == argc)
        status = interactive(fd, argv[first]);
    else
        status = run_once(fd, argv[first], argv + first + 1, argc - first - 1, (int64_t)timeout_ms, stdin_path);
    close(fd);
    return status;
}
