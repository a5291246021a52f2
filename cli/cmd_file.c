/*
 * cmd_file.c - `sockgate-cli put|get|ls|rm`: the tutorial's FTP client, done
 * right. put streams a file while hashing it and checks the server stored the
 * same bytes; get writes to a temporary file next to OUT and renames it only
 * once the sha256 matches.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "common.h"
#include "file_client.h"
#include "hash_pipe.h"
#include "progress.h"
#include "sockgate/error.h"
#include "sockgate/frame.h"
#include "sockgate/hash.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"
#include "sockgate/text.h"

#define LIST_BODY_MAX (UINT64_C(256) << 20)

/* Parses the shared --timeout flag; returns 0 or CLI_EXIT_USAGE after printing why. */
static int parse_timeout(struct session *s, const char *text)
{
    return cli_parse_duration(s->cmd, "timeout", text, 1, 3600 * 1000, &s->timeout_ms);
}

/* Connects s->fd to s->addr and prepares its frame reader; 0, or -1 after printing why. */
int session_open(struct session *s)
{
    s->rd = malloc(sizeof *s->rd);
    if (!s->rd) {
        cli_error("out of memory");
        return -1;
    }
    s->fd = cli_connect(s->addr, SOCK_STREAM, s->timeout_ms);
    if (s->fd < 0) {
        free(s->rd);
        s->rd = NULL;
        return -1;
    }
    sg_frame_reader_init(s->rd, s->fd, 0);
    return 0;
}

void session_close(struct session *s)
{
    if (s->rd) {
        sg_frame_reader_free(s->rd);
        free(s->rd);
    }
    if (s->fd >= 0)
        close(s->fd);
    s->rd = NULL;
    s->fd = -1;
}

/* Prints why an exchange failed, from an sg_err value of the reader or a write. */
void report_io(const struct session *s, int rc, const char *during)
{
    if (rc == SG_ERR_TIMEOUT)
        cli_error("%s: %s: no progress within %d ms (timeout)", s->cmd, s->addr, s->timeout_ms);
    else if (rc == SG_ERR_CLOSED)
        cli_error("%s: %s: the server closed the connection %s", s->cmd, s->addr, during);
    else if (rc == SG_ERR_PROTO)
        cli_error("%s: %s: protocol error %s: %s", s->cmd, s->addr, during, sg_frame_decoder_error(&s->rd->dec));
    else
        cli_error("%s: %s: %s %s", s->cmd, s->addr, rc == SG_ERR_SYS ? strerror(errno) : sg_strerror(rc), during);
}

/*
 * Waits for the response header until deadline. Returns it (borrowed from
 * the reader, valid until the next frame) or NULL after printing why; an
 * error response is printed as "CMD: MESSAGE (code)" and NULL returned. A
 * reply without must_have, a field every file server answer to this op has,
 * comes from another service: that is said, not a confusing later symptom.
 */
json_t *read_response(struct session *s, int64_t deadline_ms, const char *must_have)
{
    enum sg_frame_event ev;
    const uint8_t *chunk;
    size_t len;
    char msg[512];
    json_t *h;
    int rc = sg_frame_reader_next(s->rd, &ev, &chunk, &len, deadline_ms);
    if (rc != SG_OK) {
        report_io(s, rc, "before answering");
        return NULL;
    }
    h = sg_frame_decoder_header(&s->rd->dec);
    rc = sg_frame_header_error(h, msg, sizeof msg);
    if (rc != SG_OK) {
        cli_error("%s: %s (%s)", s->cmd, msg, sg_err_code(rc));
        return NULL;
    }
    if (must_have && !json_object_get(h, must_have)) {
        /* sockgate-echo sends the request back upper-cased: {"OP": ...}. */
        if (json_object_get(h, "OP"))
            cli_error("%s: %s is not a file server: it sent the request back upper-cased, as sockgate-echo does",
                      s->cmd, s->addr);
        else
            cli_error("%s: %s is not a file server: its reply has no \"%s\" (another service at that address?)",
                      s->cmd, s->addr, must_have);
        return NULL;
    }
    return h;
}

/* Sends a request header without a body; 0, or -1 after printing why. */
int send_request(struct session *s, json_t *req)
{
    int rc = req ? sg_frame_send(s->fd, req, NULL, 0, sg_now_ms() + s->timeout_ms) : SG_ERR_NOMEM;
    json_decref(req);
    if (rc != SG_OK) {
        report_io(s, rc, "while sending the request");
        return -1;
    }
    return 0;
}

/*
 * Sends len bytes, but stops as soon as the server answers early (it refused
 * the upload: its reply says why). Returns SG_OK, 1 when a reply is waiting,
 * or an sg_err value.
 */
static int send_watching(struct session *s, const uint8_t *p, size_t len)
{
    while (len > 0) {
        struct pollfd pfd = {.fd = s->fd, .events = POLLIN | POLLOUT};
        int n = poll(&pfd, 1, s->timeout_ms);
        ssize_t w;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return SG_ERR_SYS;
        if (n == 0)
            return SG_ERR_TIMEOUT;
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            return 1;
        w = send(s->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (w < 0)
            return errno == EPIPE || errno == ECONNRESET ? SG_ERR_CLOSED : SG_ERR_SYS;
        p += w;
        len -= (size_t)w;
    }
    return SG_OK;
}

/*
 * Streams size bytes of fd to the server while the hashing thread digests the
 * same buffers into sha (each byte is read once, so what is hashed is what was
 * sent); SG_OK, 1 (early reply) or an error.
 */
int put_body(struct session *s, int fd, uint64_t size, struct cli_progress *bar, struct hash_pipe *fed,
             char sha[SG_SHA256_HEX])
{
    struct hash_pipe *pipe = fed ? fed : hash_pipe_start(size);
    uint64_t sent = 0;
    int rc = SG_OK;
    if (!pipe)
        return SG_ERR_NOMEM;
    while (sent < size) {
        uint8_t *buf = hash_pipe_take(pipe);
        size_t want = size - sent < HASH_PIPE_SLOT_SIZE ? (size_t)(size - sent) : HASH_PIPE_SLOT_SIZE;
        ssize_t n;
        do
            n = read(fd, buf, want);
        while (n < 0 && errno == EINTR);
        if (n <= 0) {
            /* Sending fewer bytes than announced makes the server discard the upload. */
            rc = n == 0 ? SG_ERR_INVALID : SG_ERR_SYS;
            break;
        }
        hash_pipe_submit(pipe, (size_t)n);
        rc = send_watching(s, buf, (size_t)n);
        if (rc != SG_OK)
            break;
        sent += (uint64_t)n;
        cli_progress_update(bar, sent);
    }
    cli_progress_end(bar);
    if (rc == SG_OK)
        hash_pipe_finish(pipe, sha);
    else
        hash_pipe_abort(pipe);
    return rc;
}

int cmd_put(int argc, char **argv)
{
    const char *timeout = "30s", *quiet = NULL, *resume = NULL, *state_dir = NULL, *path, *name;
    struct session s = {.cmd = "put", .fd = -1};
    struct cli_progress bar;
    char sha[SG_SHA256_HEX], *path_copy = NULL;
    struct stat sb;
    int first = 0, fd = -1, status = CLI_EXIT_FAIL, rc;
    json_t *req, *resp;
    const struct sg_option opts[] = {
        {"timeout", "SOCKGATE_CLI_TIMEOUT_MS", "DURATION",
         "give up when the server makes no progress this long (a bare number: milliseconds)", &timeout,
         NULL, NULL},
        {"quiet", "SOCKGATE_CLI_QUIET", NULL, "no progress bar even on a terminal", &quiet, NULL, NULL},
        {"resume", "SOCKGATE_CLI_RESUME", NULL,
         "upload through a resumable session: an interrupted put run again continues where the server stopped",
         &resume, NULL, NULL},
        {"state-dir", "SOCKGATE_CLI_STATE_DIR", "DIR",
         "where --resume remembers unfinished uploads (default $XDG_STATE_HOME/sockgate-cli, else "
         "~/.local/state/sockgate-cli)",
         &state_dir, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-cli put",
                          "sockgate-cli put [--timeout DURATION] [--quiet] [--resume [--state-dir DIR]] ADDR FILE [NAME]",
                          "Uploads FILE to the file server at ADDR as NAME (default: FILE's base name), then checks "
                          "the server's sha256 equals the one of the bytes read. Prints \"SHA256  NAME\". With "
                          "--resume the bytes go into an upload session that keeps what arrived: when the transfer "
                          "breaks, the same command run again sends only the rest (the file must be unchanged; "
                          "sessions left unfinished expire on the server, after 24 h by default).",
                          opts, argc, argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (argc - first < 2 || argc - first > 3) {
        cli_error("put: expected ADDR FILE [NAME] (see sockgate-cli put --help)");
        return CLI_EXIT_USAGE;
    }
    if (parse_timeout(&s, timeout) != 0)
        return CLI_EXIT_USAGE;
    s.addr = argv[first];
    path = argv[first + 1];
    path_copy = strdup(path);
    if (!path_copy) {
        cli_error("out of memory");
        goto out;
    }
    name = argc - first == 3 ? argv[first + 2] : basename(path_copy);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        cli_error("put: %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        cli_error("put: %s is not a regular file (its size must be known before sending)", path);
        goto out;
    }
    if (resume) {
        status = put_resume(&s, fd, &sb, path, name, quiet != NULL, state_dir);
        goto out;
    }
    if (session_open(&s) != 0)
        goto out;
    req = json_pack("{s:s, s:s, s:I}", "op", "upload", "filename", name, "total_size", (json_int_t)sb.st_size);
    if (send_request(&s, req) != 0)
        goto out;
    cli_progress_start(&bar, name, (uint64_t)sb.st_size, quiet != NULL);
    rc = put_body(&s, fd, (uint64_t)sb.st_size, &bar, NULL, sha);
    if (rc == SG_ERR_INVALID) {
        cli_error("put: %s shrank while it was read; the server discards the partial upload", path);
        goto out;
    }
    if (rc != SG_OK && rc != 1 && rc != SG_ERR_CLOSED) {
        report_io(&s, rc, "while sending the file");
        goto out;
    }
    /* Early reply or a closed connection: the server's reply, if any, says why. */
    resp = read_response(&s, sg_now_ms() + s.timeout_ms + (int64_t)((uint64_t)sb.st_size / FSYNC_BYTES_PER_MS),
                         "sha256");
    if (!resp)
        goto out;
    if (rc != SG_OK) {
        cli_error("put: the server answered before the upload was complete");
        goto out;
    }
    if (!sg_header_str(resp, "sha256") || strcmp(sg_header_str(resp, "sha256"), sha) != 0) {
        cli_error("put: the server stored sha256 %s but %s hashed to %s while sent (did it change meanwhile?)",
                  sg_header_str(resp, "sha256") ? sg_header_str(resp, "sha256") : "(none)", path, sha);
        goto out;
    }
    cli_progress_summary(&bar, "put", name, sha);
    printf("%s  %s\n", sha, sg_header_str(resp, "name") ? sg_header_str(resp, "name") : name);
    status = fflush(stdout) == 0 ? 0 : CLI_EXIT_FAIL;
out:
    session_close(&s);
    if (fd >= 0)
        close(fd);
    free(path_copy);
    return status;
}

/* The temporary file get is writing, removed by the signal handler if the user interrupts. */
static char get_temp_path[4096];

static void get_interrupted(int sig)
{
    /* unlink(2) and _exit(2) are async-signal-safe. */
    if (get_temp_path[0])
        unlink(get_temp_path);
    _exit(128 + sig);
}

static void get_guard_signals(int on)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on ? get_interrupted : SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

/* Writes all len bytes to fd; 0 or -1 with errno set. */
static int write_all_fd(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Where get writes: OUT, OUT/NAME when OUT is a directory, NAME when OUT is absent. New string or NULL. */
static char *get_out_path(const char *name, const char *out)
{
    struct stat sb;
    char *path = NULL;
    if (!out)
        return strdup(name);
    if (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        if (asprintf(&path, "%s/%s", out, name) < 0)
            return NULL;
        return path;
    }
    return strdup(out);
}

/*
 * Creates the temporary file next to out (same directory, so the final
 * rename is atomic), named ".OUT.part-" plus 12 random hex digits; returns
 * its fd, or -1 after printing why.
 */
static int get_temp_create(const char *out)
{
    char *a = strdup(out), *b = strdup(out);
    int fd = -1;
    if (!a || !b) {
        cli_error("out of memory");
        goto out;
    }
    get_guard_signals(1);
    for (int attempt = 0; fd < 0 && attempt < 8; attempt++) {
        uint8_t rnd[6];
        char hex[2 * sizeof rnd + 1];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            break;
        sg_hex_encode(rnd, sizeof rnd, hex);
        if (snprintf(get_temp_path, sizeof get_temp_path, "%s/.%.200s.part-%s", dirname(a), basename(b), hex) >=
            (int)sizeof get_temp_path) {
            errno = ENAMETOOLONG;
            break;
        }
        /* 0666 before the umask, like any file the user creates: no chmod needed after the rename. */
        fd = open(get_temp_path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        cli_error("get: cannot create a temporary file next to %s: %s", out, strerror(errno));
        get_temp_path[0] = '\0';
        get_guard_signals(0);
    }
out:
    free(a);
    free(b);
    return fd;
}

/*
 * Decodes n input bytes of the download's frame, appending its body bytes to
 * buf at *fill (in may point there already: then nothing is copied). Sets *ev
 * to END once the frame is complete; SG_OK or SG_ERR_PROTO.
 */
static int take_body(struct session *s, const uint8_t *in, size_t n, uint8_t *buf, size_t *fill,
                     enum sg_frame_event *ev)
{
    for (;;) {
        const uint8_t *chunk;
        size_t used, len;
        *ev = sg_frame_decode(&s->rd->dec, in, n, &used, &chunk, &len);
        in += used;
        n -= used;
        if (*ev == SG_FRAME_ERROR)
            return SG_ERR_PROTO;
        if (*ev == SG_FRAME_BODY) {
            if (chunk != buf + *fill)
                memmove(buf + *fill, chunk, len);
            *fill += len;
        }
        /* Bytes after the frame's end (there should be none) are ignored, as the server sends no other frame. */
        if (*ev == SG_FRAME_END || *ev == SG_FRAME_NEED_MORE)
            return SG_OK;
    }
}

/*
 * A download's reader asks the kernel not to wake it before this many body
 * bytes are queued (SO_RCVLOWAT): woken for every few KiB, the reader's
 * wake-ups cost more than its copies on this VM (a 1 GiB get went from about
 * 1,080 to 1,180 MiB/s: docs/internals/file.md, "The hashing thread").
 */
#define GET_LOWAT (512 * 1024)
/* How long a read waits for a batch before taking what came, so a slow server is never timed out while it sends. */
#define GET_LOWAT_WAIT_MS 1000

/*
 * Fills buf (HASH_PIPE_SLOT_SIZE bytes) with body bytes until it is full or
 * the frame ends (*ev END): first what the reader buffered with the header,
 * then straight from the socket into buf. left is the body bytes not yet
 * taken before this call. *fill is set even on failure.
 */
static int fill_body(struct session *s, uint8_t *buf, size_t *fill, enum sg_frame_event *ev, uint64_t left)
{
    struct sg_frame_reader *r = s->rd;
    int rc = SG_OK;
    *fill = 0;
    while (rc == SG_OK && *ev != SG_FRAME_END && *fill < HASH_PIPE_SLOT_SIZE) {
        size_t room = HASH_PIPE_SLOT_SIZE - *fill, got = 0, batch;
        if (r->off < r->len) {
            /* The reader read past the header: those first body bytes are in its buffer. */
            got = r->len - r->off < room ? r->len - r->off : room;
            r->off += got;
            rc = take_body(s, r->buf + r->off - got, got, buf, fill, ev);
            continue;
        }
        /* Wake for a batch that fits, and never wait for more than the body has left: the server sends no more. */
        batch = left - *fill < room ? (size_t)(left - *fill) : room;
        rc = sg_read_batched(s->fd, buf + *fill, room, batch < GET_LOWAT ? batch : GET_LOWAT, GET_LOWAT_WAIT_MS,
                             s->timeout_ms, &s->lowat, &got);
        if (rc == SG_OK)
            rc = take_body(s, buf + *fill, got, buf, fill, ev);
    }
    return rc;
}

/*
 * Receives the body (total bytes) into fd while the hashing thread digests
 * each buffer as it is written; 0, or -1 after printing why.
 */
static int get_body(struct session *s, int fd, uint64_t total, struct cli_progress *bar, char sha[SG_SHA256_HEX])
{
    struct hash_pipe *pipe = hash_pipe_start(total);
    enum sg_frame_event ev = SG_FRAME_HEADER;
    uint64_t got = 0;
    uint8_t none = 0;
    size_t none_fill = 0;
    int rc, status = -1;
    if (!pipe) {
        cli_error("get: cannot start the hashing thread: out of memory");
        return -1;
    }
    /* A 0-byte body ends right after the header: one decode call with no input says so. */
    rc = take_body(s, &none, 0, &none, &none_fill, &ev);
    while (rc == SG_OK && ev != SG_FRAME_END) {
        uint8_t *buf = hash_pipe_take(pipe);
        size_t fill;
        rc = fill_body(s, buf, &fill, &ev, total - got);
        if (fill == 0)
            continue;
        hash_pipe_submit(pipe, fill);
        /* The hashing thread reads buf while it is written out: both only read it. */
        if (write_all_fd(fd, buf, fill) != 0) {
            cli_progress_end(bar);
            cli_error("get: writing: %s", strerror(errno));
            goto out;
        }
        got += fill;
        cli_progress_update(bar, got);
    }
    cli_progress_end(bar);
    if (rc != SG_OK) {
        report_io(s, rc, "in the middle of the file");
        goto out;
    }
    hash_pipe_finish(pipe, sha);
    pipe = NULL;
    status = 0;
out:
    hash_pipe_abort(pipe);
    return status;
}

/* Checks the received range against the response: whole-file sha256 when the range is the whole file. */
static int get_verify(const json_t *resp, uint64_t want_offset, const char *sha, const char *name, int to_stdout)
{
    int64_t size = -1, offset = -1, total = -1;
    const char *want = sg_header_str(resp, "sha256");
    sg_header_int(resp, "size", 0, INT64_MAX, &size);
    sg_header_int(resp, "offset", 0, INT64_MAX, &offset);
    sg_header_int(resp, "total_size", 0, INT64_MAX, &total);
    if (offset != (int64_t)want_offset || size < 0 || total < 0 || offset + total > size) {
        cli_error("get: the server's reply does not describe the range asked for");
        return -1;
    }
    if (offset == 0 && total == size && (!want || strcmp(want, sha) != 0)) {
        cli_error("get: sha256 mismatch for %s: received %s, the server said %s; %s", name, sha,
                  want ? want : "(none)", to_stdout ? "the bytes written to stdout are damaged" : "nothing written");
        return -1;
    }
    return 0;
}

int cmd_get(int argc, char **argv)
{
    const char *timeout = "30s", *quiet = NULL, *offset_text = NULL, *length_text = NULL, *name;
    struct session s = {.cmd = "get", .fd = -1};
    struct cli_progress bar;
    char sha[SG_SHA256_HEX], *out = NULL;
    uint64_t offset = 0, length = 0;
    int64_t total = 0;
    int first = 0, fd = -1, to_stdout, status = CLI_EXIT_FAIL, rc;
    json_t *req, *resp;
    const struct sg_option opts[] = {
        {"offset", NULL, "SIZE", "first byte to fetch (default 0)", &offset_text, NULL, NULL},
        {"length", NULL, "SIZE", "bytes to fetch (default: to the end)", &length_text, NULL, NULL},
        {"timeout", "SOCKGATE_CLI_TIMEOUT_MS", "DURATION",
         "give up when the server makes no progress this long (a bare number: milliseconds)", &timeout,
         NULL, NULL},
        {"quiet", "SOCKGATE_CLI_QUIET", NULL, "no progress bar even on a terminal", &quiet, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse(
        "sockgate-cli get", "sockgate-cli get [--offset SIZE] [--length SIZE] [--timeout DURATION] [--quiet] ADDR NAME [OUT]",
        "Downloads NAME from the file server at ADDR into OUT (default ./NAME; a directory means OUT/NAME; - means "
        "stdout). The bytes go to a temporary file next to OUT, renamed to OUT only once their sha256 matches the "
        "server's. With --offset/--length only that range is written to OUT, and only its length and position can "
        "be checked: the server's sha256 covers the whole file, so a partial range is not hash-verified.",
        opts, argc, argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (argc - first < 2 || argc - first > 3) {
        cli_error("get: expected ADDR NAME [OUT] (see sockgate-cli get --help)");
        return CLI_EXIT_USAGE;
    }
    if (parse_timeout(&s, timeout) != 0 ||
        (offset_text && sg_flag_size("sockgate-cli get", "offset", offset_text, 0, SG_FRAME_MAX_BODY, &offset)) ||
        (length_text && sg_flag_size("sockgate-cli get", "length", length_text, 0, SG_FRAME_MAX_BODY, &length)))
        return CLI_EXIT_USAGE;
    s.addr = argv[first];
    name = argv[first + 1];
    if (argc - first == 2 && strchr(name, '/')) {
        cli_error("get: NAME holds a '/'; give OUT to say where to write");
        return CLI_EXIT_USAGE;
    }
    to_stdout = argc - first == 3 && strcmp(argv[first + 2], "-") == 0;
    out = get_out_path(name, argc - first == 3 ? argv[first + 2] : NULL);
    if (!out) {
        cli_error("out of memory");
        goto out;
    }
    if (session_open(&s) != 0)
        goto out;
    req = json_pack("{s:s, s:s, s:I}", "op", "download", "filename", name, "offset", (json_int_t)offset);
    if (req && length_text)
        json_object_set_new(req, "length", json_integer((json_int_t)length));
    if (send_request(&s, req) != 0)
        goto out;
    resp = read_response(&s, sg_now_ms() + s.timeout_ms, "total_size");
    if (!resp)
        goto out;
    /* Nothing is created before the server said yes. */
    fd = to_stdout ? STDOUT_FILENO : get_temp_create(out);
    if (fd < 0)
        goto out;
    sg_header_int(resp, "total_size", 0, INT64_MAX, &total);
    resp = json_incref(resp); /* the reader replaces its header on the next frame; keep ours */
    cli_progress_start(&bar, name, (uint64_t)total, quiet != NULL);
    rc = get_body(&s, fd, (uint64_t)total, &bar, sha);
    if (rc == 0)
        rc = get_verify(resp, offset, sha, name, to_stdout);
    json_decref(resp);
    if (rc != 0)
        goto out;
    if (to_stdout) {
        cli_progress_summary(&bar, "got", name, sha);
        status = 0;
        goto out;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        fd = -1;
        cli_error("get: writing %s: %s", out, strerror(errno));
        goto out;
    }
    fd = -1;
    if (rename(get_temp_path, out) != 0) {
        cli_error("get: cannot rename the download to %s: %s", out, strerror(errno));
        goto out;
    }
    get_temp_path[0] = '\0';
    cli_progress_summary(&bar, "got", name, sha);
    status = 0;
out:
    if (fd >= 0 && fd != STDOUT_FILENO)
        close(fd);
    if (get_temp_path[0]) {
        unlink(get_temp_path);
        get_temp_path[0] = '\0';
    }
    get_guard_signals(0);
    session_close(&s);
    free(out);
    return status;
}

/* Reads the whole body of the current frame (at most LIST_BODY_MAX bytes) into a new buffer; NULL after printing why. */
static char *read_body(struct session *s, uint64_t size)
{
    enum sg_frame_event ev = SG_FRAME_HEADER;
    const uint8_t *chunk;
    size_t len, have = 0;
    char *buf;
    if (size > LIST_BODY_MAX) {
        cli_error("%s: the server's reply is %" PRIu64 " bytes, more than this client takes", s->cmd, size);
        return NULL;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        cli_error("out of memory");
        return NULL;
    }
    while (ev != SG_FRAME_END) {
        int rc = sg_frame_reader_next(s->rd, &ev, &chunk, &len, sg_now_ms() + s->timeout_ms);
        if (rc != SG_OK) {
            report_io(s, rc, "in the middle of the reply");
            free(buf);
            return NULL;
        }
        if (ev == SG_FRAME_BODY) {
            memcpy(buf + have, chunk, len);
            have += len;
        }
    }
    buf[have] = '\0';
    return buf;
}

/* Prints text with control characters shown as '?', so a name can never drive the terminal. */
static void print_safe(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        putchar(*p < 0x20 || *p == 0x7f ? '?' : *p);
}

/* Prints the list body as one line per file: size, mtime (UTC), sha256, name. */
static int print_listing(const char *body)
{
    json_error_t jerr;
    json_t *arr = json_loads(body, 0, &jerr), *e;
    size_t i;
    if (!json_is_array(arr)) {
        cli_error("ls: the server's list is not a JSON array: %s", jerr.text);
        json_decref(arr);
        return -1;
    }
    json_array_foreach(arr, i, e)
    {
        time_t mtime = (time_t)(json_integer_value(json_object_get(e, "mtime_ms")) / 1000);
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *sha = json_string_value(json_object_get(e, "sha256"));
        char when[32] = "?";
        struct tm tm;
        if (gmtime_r(&mtime, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        printf("%12" PRId64 "  %s  %s  ", (int64_t)json_integer_value(json_object_get(e, "size")), when,
               sha ? sha : "-");
        print_safe(name ? name : "?");
        putchar('\n');
    }
    json_decref(arr);
    return 0;
}

int cmd_ls(int argc, char **argv)
{
    const char *timeout = "30s", *as_json = NULL;
    struct session s = {.cmd = "ls", .fd = -1};
    int64_t size = 0;
    int first = 0, status = CLI_EXIT_FAIL, rc;
    char *body = NULL;
    json_t *resp;
    const struct sg_option opts[] = {
        {"json", NULL, NULL, "print the server's JSON array as it came", &as_json, NULL, NULL},
        {"timeout", "SOCKGATE_CLI_TIMEOUT_MS", "DURATION",
         "give up when the server makes no progress this long (a bare number: milliseconds)", &timeout,
         NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-cli ls", "sockgate-cli ls [--json] [--timeout DURATION] ADDR",
                          "Lists the files on the file server at ADDR, one per line: size in bytes, mtime (UTC), "
                          "sha256, name.",
                          opts, argc, argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (argc - first != 1) {
        cli_error("ls: expected ADDR (see sockgate-cli ls --help)");
        return CLI_EXIT_USAGE;
    }
    if (parse_timeout(&s, timeout) != 0)
        return CLI_EXIT_USAGE;
    s.addr = argv[first];
    if (session_open(&s) != 0 || send_request(&s, json_pack("{s:s}", "op", "list")) != 0)
        goto out;
    resp = read_response(&s, sg_now_ms() + s.timeout_ms, "count");
    if (!resp)
        goto out;
    sg_header_int(resp, "total_size", 0, INT64_MAX, &size);
    body = read_body(&s, (uint64_t)size);
    if (!body)
        goto out;
    if (as_json)
        printf("%s\n", body);
    else if (print_listing(body) != 0)
        goto out;
    status = fflush(stdout) == 0 ? 0 : CLI_EXIT_FAIL;
out:
    free(body);
    session_close(&s);
    return status;
}

int cmd_rm(int argc, char **argv)
{
    const char *timeout = "30s";
    struct session s = {.cmd = "rm", .fd = -1};
    int first = 0, status = CLI_EXIT_FAIL, rc;
    const struct sg_option opts[] = {
        {"timeout", "SOCKGATE_CLI_TIMEOUT_MS", "DURATION",
         "give up when the server makes no progress this long (a bare number: milliseconds)", &timeout,
         NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    rc = sg_options_parse("sockgate-cli rm", "sockgate-cli rm [--timeout DURATION] ADDR NAME",
                          "Deletes NAME on the file server at ADDR; fails when there is no such file.", opts, argc,
                          argv, &first);
    if (rc != 0)
        return rc == 1 ? 0 : CLI_EXIT_USAGE;
    if (argc - first != 2) {
        cli_error("rm: expected ADDR NAME (see sockgate-cli rm --help)");
        return CLI_EXIT_USAGE;
    }
    if (parse_timeout(&s, timeout) != 0)
        return CLI_EXIT_USAGE;
    s.addr = argv[first];
    if (session_open(&s) != 0 ||
        send_request(&s, json_pack("{s:s, s:s}", "op", "delete", "filename", argv[first + 1])) != 0)
        goto out;
    if (read_response(&s, sg_now_ms() + s.timeout_ms, "deleted"))
        status = 0;
out:
    session_close(&s);
    return status;
}
