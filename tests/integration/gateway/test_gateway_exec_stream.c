/*
 * test_gateway_exec_stream.c - POST /api/v1/exec streamed (SSE, NDJSON) through the real gateway
 * with libcurl and curl itself: output before the exit, stdout and stderr apart, base64 for bytes
 * that are not UTF-8, a character cut by the pipe never broken, a client that leaves kills the
 * command, a slow reader of 1 GiB keeps the gateway's memory flat, the time limit, and HTTPS.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "check.h"
#include "gwtest.h"
#include "sockgate/net.h"

#ifdef SG_TEST_SANITIZED
#define RSS_GROWTH_LIMIT_KIB (256L * 1024L)
#else
/* The gateway holds 256 KiB of events and a frame per stream; 32 MiB is room for the allocator, not for the output. */
#define RSS_GROWTH_LIMIT_KIB (32L * 1024L)
#endif

static struct gw g;
static char dir[256]; /* the test's own files: gates the commands wait for, TLS keys */
static unsigned marker_base;
static const char *https_args[16]; /* the HTTPS gateway's flags, for the last case */

/* ---- processes, by an argument only this test uses ---- */

/* Returns 1 when some process has arg as one of its arguments. */
static int proc_with_arg(const char *arg)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    if (!d)
        return 0;
    while (!found && (e = readdir(d))) {
        char path[300], buf[4096];
        ssize_t n;
        int fd;
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        for (ssize_t i = 0; n > 0 && i < n; i += (ssize_t)strlen(buf + i) + 1) {
            buf[n] = '\0';
            if (strcmp(buf + i, arg) == 0)
                found = 1;
        }
    }
    closedir(d);
    return found;
}

/* Waits (bounded) until a process with arg exists (want 1) or none does (want 0); returns 1 when it happened. */
static int wait_proc(const char *arg, int want, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    do {
        if (proc_with_arg(arg) == want)
            return 1;
        usleep(10000);
    } while (sg_now_ms() < deadline);
    return 0;
}

/* ---- reading a stream as it comes ---- */

#define MAX_EVENTS 4096

struct event {
    char name[16];
    json_t *data;
};

/* One streamed answer, parsed event by event as libcurl hands over bytes. */
struct stream {
    int is_ndjson;
    char *buf;
    size_t len, cap;
    struct event ev[MAX_EVENTS];
    int n;
    int n_comments;
    long status;
    /* Called after each event; returns 1 to abort the transfer (the client leaves). */
    int (*on_event)(struct stream *s, const struct event *e);
    void *ctx;
    int is_aborted;
};

static void stream_free(struct stream *s)
{
    for (int i = 0; i < s->n; i++)
        json_decref(s->ev[i].data);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* Parses one SSE block (lines, no blank one) or one NDJSON line into an event; comments are counted. */
static void take_block(struct stream *s, char *block)
{
    struct event e = {"", NULL};
    json_error_t jerr;
    if (s->is_ndjson) {
        e.data = json_loads(block, 0, &jerr);
        if (!e.data) {
            fprintf(stderr, "not JSON: %s (%s)\n", block, jerr.text);
            CHECK(0);
        }
        CHECK(json_is_string(json_object_get(e.data, "type")));
        snprintf(e.name, sizeof e.name, "%s", json_string_value(json_object_get(e.data, "type")));
        if (strcmp(e.name, "keep-alive") == 0) {
            s->n_comments++;
            json_decref(e.data);
            return;
        }
    } else {
        int is_comment = 1;
        for (char *line = strtok(block, "\n"); line; line = strtok(NULL, "\n")) {
            if (line[0] == ':')
                continue;
            is_comment = 0;
            if (strncmp(line, "event: ", 7) == 0) {
                snprintf(e.name, sizeof e.name, "%s", line + 7);
            } else if (strncmp(line, "data: ", 6) == 0) {
                CHECK(!e.data); /* one data line an event: compact JSON */
                e.data = json_loads(line + 6, 0, &jerr);
                if (!e.data)
                    fprintf(stderr, "not JSON: %s (%s)\n", line + 6, jerr.text);
                CHECK(e.data);
            } else {
                fprintf(stderr, "unexpected SSE line: %s\n", line);
                CHECK(0);
            }
        }
        if (is_comment) {
            s->n_comments++;
            return;
        }
        CHECK(e.name[0] && e.data);
    }
    CHECK(s->n < MAX_EVENTS);
    s->ev[s->n++] = e;
}

static size_t on_bytes(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    struct stream *s = ctx;
    size_t n = size * nmemb;
    const char *sep = s->is_ndjson ? "\n" : "\n\n";
    char *end;
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->buf = realloc(s->buf, s->cap);
        CHECK(s->buf);
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->buf[s->len] = '\0';
    while ((end = strstr(s->buf, sep))) {
        size_t used = (size_t)(end - s->buf) + strlen(sep);
        int before = s->n;
        *end = '\0';
        take_block(s, s->buf);
        memmove(s->buf, s->buf + used, s->len - used + 1);
        s->len -= used;
        if (s->n > before && s->on_event && s->on_event(s, &s->ev[s->n - 1])) {
            s->is_aborted = 1;
            return 0; /* libcurl aborts the transfer and closes the connection */
        }
    }
    return n;
}

/* POSTs body to /api/v1/exec with accept, reading the answer as a stream into s; returns libcurl's result. */
static CURLcode run_stream(struct stream *s, const char *accept, const char *body)
{
    char url[256], acc[128];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();
    CURLcode rc;
    CHECK(c);
    snprintf(url, sizeof url, "%s/api/v1/exec", g.base);
    snprintf(acc, sizeof acc, "Accept: %s", accept);
    s->is_ndjson = strstr(accept, "ndjson") != NULL;
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, acc);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_bytes);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (gw_ca_file[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, gw_ca_file);
    rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    return rc;
}

static const char *data_of(const struct event *e)
{
    return json_string_value(json_object_get(e->data, "data"));
}

/* Checks the stream ends with exactly one exit event and returns it. */
static const struct event *exit_of(const struct stream *s)
{
    CHECK(s->n >= 2);
    CHECK_STR_EQ(s->ev[0].name, "start");
    CHECK_STR_EQ(s->ev[s->n - 1].name, "exit");
    for (int i = 1; i < s->n - 1; i++)
        CHECK(strcmp(s->ev[i].name, "stdout") == 0 || strcmp(s->ev[i].name, "stderr") == 0);
    return &s->ev[s->n - 1];
}

/* Concatenates the text of one stream's events (data only; base64 ones fail the check unless allowed). */
static void text_of(const struct stream *s, const char *name, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < s->n; i++) {
        const char *d;
        if (strcmp(s->ev[i].name, name) != 0)
            continue;
        d = data_of(&s->ev[i]);
        CHECK(d);
        CHECK(len + strlen(d) < cap);
        memcpy(out + len, d, strlen(d) + 1);
        len += strlen(d);
    }
}

/* ---- the cases ---- */

/*
 * The command writes "one", then waits for a file the test creates only once
 * it has read "one": without streaming it would never write "two" (and the
 * time limit would end it, timed out).
 */
static int gate_on_one(struct stream *s, const struct event *e)
{
    const char *gate = s->ctx;
    if (strcmp(e->name, "stdout") == 0 && data_of(e) && strcmp(data_of(e), "one\n") == 0) {
        FILE *f = fopen(gate, "w");
        CHECK(f);
        fclose(f);
    }
    return 0;
}

static void test_output_before_exit(const char *accept)
{
    char gate[300], body[1024];
    struct stream s = {0};
    const struct event *x;
    snprintf(gate, sizeof gate, "%s/gate-%s", dir, strstr(accept, "ndjson") ? "nd" : "sse");
    unlink(gate);
    snprintf(body, sizeof body,
             "{\"argv\":[\"sh\",\"-c\",\"echo one; while [ ! -e %s ]; do sleep 0.05; done; echo two\"],"
             "\"timeout_ms\":30000}",
             gate);
    s.on_event = gate_on_one;
    s.ctx = gate;
    CHECK_INT_EQ(run_stream(&s, accept, body), CURLE_OK);
    CHECK_INT_EQ(s.status, 200);
    x = exit_of(&s);
    CHECK_INT_EQ(s.n, 4);
    CHECK_STR_EQ(data_of(&s.ev[1]), "one\n");
    CHECK_STR_EQ(data_of(&s.ev[2]), "two\n");
    CHECK_INT_EQ(json_integer_value(json_object_get(x->data, "exit_code")), 0);
    CHECK(json_is_null(json_object_get(x->data, "signal")));
    CHECK(json_is_false(json_object_get(x->data, "timed_out")));
    CHECK(json_is_integer(json_object_get(x->data, "duration_ms")));
    /* start says which command runs, under the request's id */
    CHECK(json_is_string(json_object_get(s.ev[0].data, "id")));
    CHECK_STR_EQ(json_string_value(json_array_get(json_object_get(s.ev[0].data, "argv"), 0)), "sh");
    stream_free(&s);
}

static void test_sse_output_before_exit(void)
{
    test_output_before_exit("text/event-stream");
}

static void test_ndjson_output_before_exit(void)
{
    test_output_before_exit("application/x-ndjson");
}

/* A line a second is a line an event, in order, each before the exit (no line buffering of ours). */
static void test_line_a_second(void)
{
    struct stream s = {0};
    CHECK_INT_EQ(run_stream(&s, "text/event-stream",
                            "{\"argv\":[\"sh\",\"-c\",\"for i in 1 2 3; do echo line$i; sleep 1; done\"]}"),
                 CURLE_OK);
    exit_of(&s);
    CHECK_INT_EQ(s.n, 5);
    CHECK_STR_EQ(data_of(&s.ev[1]), "line1\n");
    CHECK_STR_EQ(data_of(&s.ev[2]), "line2\n");
    CHECK_STR_EQ(data_of(&s.ev[3]), "line3\n");
    stream_free(&s);
}

/* stdout and stderr are separate events; bytes that are not UTF-8 come as data_base64. */
static void test_stderr_and_base64(void)
{
    struct stream s = {0};
    char out[256], err[256];
    char b64[64] = "";
    CHECK_INT_EQ(run_stream(&s, "text/event-stream",
                            "{\"argv\":[\"sh\",\"-c\",\"echo to-out; echo to-err >&2; sleep 0.2; printf '\\\\377\\\\376x'; exit 3\"]}"),
                 CURLE_OK);
    CHECK_INT_EQ(json_integer_value(json_object_get(exit_of(&s)->data, "exit_code")), 3);
    for (int i = 0; i < s.n; i++) {
        if (strcmp(s.ev[i].name, "stdout") == 0 && json_object_get(s.ev[i].data, "data_base64")) {
            CHECK(!json_object_get(s.ev[i].data, "data"));
            snprintf(b64, sizeof b64, "%s", json_string_value(json_object_get(s.ev[i].data, "data_base64")));
            json_object_del(s.ev[i].data, "data_base64");
            json_object_set_new(s.ev[i].data, "data", json_string("")); /* so text_of reads the rest */
        }
    }
    CHECK_STR_EQ(b64, "//54"); /* ff fe 'x' */
    text_of(&s, "stdout", out, sizeof out);
    text_of(&s, "stderr", err, sizeof err);
    CHECK_STR_EQ(out, "to-out\n");
    CHECK_STR_EQ(err, "to-err\n");
    stream_free(&s);
}

/*
 * "é" is c3 a9: the command writes c3, waits, then a9: two reads of the pipe,
 * two frames. The gateway holds c3 back until its rest comes, so every event
 * is text and none holds half a character. A cut character at the end (a
 * lone c3) is not text: base64.
 */
static void test_character_cut_by_the_pipe(void)
{
    struct stream s = {0};
    char out[256];
    int n_b64 = 0;
    CHECK_INT_EQ(run_stream(&s, "application/x-ndjson",
                            "{\"argv\":[\"sh\",\"-c\",\"printf 'caf\\\\303'; sleep 0.3; printf '\\\\251!'; sleep 0.3; "
                            "printf '\\\\303'\"]}"),
                 CURLE_OK);
    exit_of(&s);
    for (int i = 1; i < s.n - 1; i++) {
        const char *b64 = json_string_value(json_object_get(s.ev[i].data, "data_base64"));
        if (b64) {
            CHECK_STR_EQ(b64, "ww=="); /* the lone c3 at the end */
            CHECK(i == s.n - 2);
            n_b64++;
            json_object_del(s.ev[i].data, "data_base64");
            json_object_set_new(s.ev[i].data, "data", json_string(""));
        }
    }
    CHECK_INT_EQ(n_b64, 1);
    text_of(&s, "stdout", out, sizeof out);
    CHECK_STR_EQ(out, "caf\xc3\xa9!");
    CHECK(s.n >= 4); /* start, "caf", "é!", the lone byte, exit: at least two text events */
    stream_free(&s);
}

/* Quotes, backslashes, control characters and DEL are escaped so the event is still one line of JSON. */
static void test_escapes(void)
{
    struct stream s = {0};
    char out[64];
    CHECK_INT_EQ(run_stream(&s, "text/event-stream",
                            "{\"argv\":[\"head\",\"-c\",\"100\"],"
                            "\"stdin\":\"q\\\"b\\\\c\\u0001\\t\\u007f\\u00e9\\r\\n\"}"),
                 CURLE_OK);
    exit_of(&s);
    text_of(&s, "stdout", out, sizeof out);
    CHECK_STR_EQ(out, "q\"b\\c\001\t\177\xc3\xa9\r\n");
    stream_free(&s);
}

/* Refused before it starts: the JSON error of the plain route, not a stream. Without Accept: the JSON answer. */
static void test_refusal_and_plain_json(void)
{
    const char *sse[] = {"Content-Type: application/json", "Accept: text/event-stream", NULL};
    const char *plain[] = {"Content-Type: application/json", "Accept: application/json", NULL};
    json_t *j;
    gw_expect_error(&g, "POST", "/api/v1/exec", sse, "{\"argv\":[\"rm\",\"-rf\",\"x\"]}", 403, "command_not_allowed");
    gw_expect_error(&g, "POST", "/api/v1/exec", sse, "{\"argv\":[]}", 400, "invalid_request");
    const char *near[] = {"Content-Type: application/json", "Accept: text/event-streams, application/ndjson", NULL};
    const char *listed[] = {"Content-Type: application/json", "Accept: application/json;q=0.9, TEXT/Event-Stream; q=0.1",
                            NULL};
    struct http_resp *r;
    j = gw_expect_json(&g, "POST", "/api/v1/exec", plain, "{\"argv\":[\"echo\",\"plain\"]}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "plain\n");
    json_decref(j);
    /* Only the two media types themselves ask for a stream, in any case, wherever they are listed. */
    j = gw_expect_json(&g, "POST", "/api/v1/exec", near, "{\"argv\":[\"echo\",\"near\"]}", 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "near\n");
    json_decref(j);
    r = gw_do(&g, "POST", "/api/v1/exec", listed, "{\"argv\":[\"echo\",\"listed\"]}");
    CHECK_INT_EQ(r->status, 200);
    check_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    CHECK(strstr(r->body, "event: stdout\ndata: {\"data\":\"listed\\n\"}\n\n"));
    CHECK(strstr(r->body, "event: exit\n"));
    http_free(r);
}

/* The client leaves mid-run: the command's group is gone (even a child that ignores SIGTERM). */
static int leave_on_up(struct stream *s, const struct event *e)
{
    (void)s;
    return strcmp(e->name, "stdout") == 0 && data_of(e) && strstr(data_of(e), "up");
}

static void test_client_leaving_kills(void)
{
    char m1[32], m2[32], body[512];
    struct stream s = {0};
    snprintf(m1, sizeof m1, "%u1", marker_base);
    snprintf(m2, sizeof m2, "%u2", marker_base);
    snprintf(body, sizeof body,
             "{\"argv\":[\"sh\",\"-c\",\"trap '' TERM; sleep %s & echo up; sleep %s; wait\"],\"timeout_ms\":60000}", m1,
             m2);
    s.on_event = leave_on_up;
    CHECK_INT_EQ(run_stream(&s, "text/event-stream", body), CURLE_WRITE_ERROR);
    CHECK(s.is_aborted);
    /* Bounded waits, not timings: SIGTERM at the close, SIGKILL a second later. */
    CHECK(wait_proc(m1, 0, 10000));
    CHECK(wait_proc(m2, 0, 10000));
    stream_free(&s);
}

/* The time limit still ends a streamed command, and the exit event says so. */
static void test_timeout(void)
{
    struct stream s = {0};
    const struct event *x;
    CHECK_INT_EQ(run_stream(&s, "text/event-stream",
                            "{\"argv\":[\"sh\",\"-c\",\"echo started; exec sleep 60\"],\"timeout_ms\":500}"),
                 CURLE_OK);
    x = exit_of(&s);
    CHECK(json_is_true(json_object_get(x->data, "timed_out")));
    CHECK(json_integer_value(json_object_get(x->data, "signal")) > 0);
    CHECK_STR_EQ(data_of(&s.ev[1]), "started\n");
    stream_free(&s);
}

/* A command silent for 15 s: the stream carries a comment meanwhile, so proxies keep it. */
static void test_keep_alive_comment(void)
{
    struct stream s = {0};
    char out[64];
    CHECK_INT_EQ(run_stream(&s, "text/event-stream",
                            "{\"argv\":[\"sh\",\"-c\",\"sleep 16; echo awake\"],\"timeout_ms\":30000}"),
                 CURLE_OK);
    exit_of(&s);
    CHECK(s.n_comments >= 1);
    text_of(&s, "stdout", out, sizeof out);
    CHECK_STR_EQ(out, "awake\n");
    stream_free(&s);
}

/* ---- a slow reader of a big output ---- */

struct slow {
    const char *marker;
    int was_running; /* the command still ran when the reader left */
    uint64_t got;
    long base_kib, peak_kib;
    int64_t until, last_sample;
};

static size_t slow_bytes(char *ptr, size_t size, size_t nmemb, void *ctx)
{
    struct slow *sl = ctx;
    (void)ptr;
    sl->got += size * nmemb;
    return size * nmemb;
}

static int slow_progress(void *ctx, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    struct slow *sl = ctx;
    int64_t now = sg_now_ms();
    (void)dt, (void)dn, (void)ut, (void)un;
    if (now - sl->last_sample >= 100) {
        long kib = sg_proc_rss_kib(g.proc.pid);
        sl->last_sample = now;
        if (kib > sl->peak_kib)
            sl->peak_kib = kib;
    }
    if (now < sl->until)
        return 0;
    sl->was_running = proc_with_arg(sl->marker); /* held: 1 GiB at 1 MiB/s is far from done */
    return 1; /* the reader leaves: libcurl aborts and closes the connection */
}

static const char *big_body(char *buf, size_t cap, const char *marker)
{
    /* 1 GiB of "y\n"; the marker is the shell's $0, an argument of its own for the process check. */
    snprintf(buf, cap, "{\"argv\":[\"sh\",\"-c\",\"yes | head -c 1073741824\",\"%s\"],\"timeout_ms\":120000}",
             marker);
    return buf;
}

/*
 * A reader taking 1 MiB/s for 4 s of a 1 GiB output: the gateway's RSS stays
 * within RSS_GROWTH_LIMIT_KIB of where it started (nothing piles up), the
 * command is held (still running when the reader leaves), then killed.
 */
static void test_slow_reader_libcurl(void)
{
    char url[256], body[512], marker[32];
    struct curl_slist *h = NULL;
    struct slow sl = {0};
    CURL *c = curl_easy_init();
    CURLcode rc;
    snprintf(marker, sizeof marker, "%u3", marker_base);
    snprintf(url, sizeof url, "%s/api/v1/exec", g.base);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: text/event-stream");
    sl.base_kib = sl.peak_kib = sg_proc_rss_kib(g.proc.pid);
    sl.until = sg_now_ms() + 4000;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, big_body(body, sizeof body, marker));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, slow_bytes);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sl);
    curl_easy_setopt(c, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)(1 << 20));
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 16384L);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, slow_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &sl);
    if (gw_ca_file[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, gw_ca_file);
    sl.marker = marker;
    rc = curl_easy_perform(c);
    CHECK(sl.was_running); /* held: 1 GiB at 1 MiB/s is far from done */
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    fprintf(stderr, "slow libcurl reader: %llu bytes read, gateway RSS %ld KiB -> peak %ld KiB\n",
            (unsigned long long)sl.got, sl.base_kib, sl.peak_kib);
    CHECK_INT_EQ(rc, CURLE_ABORTED_BY_CALLBACK);
    CHECK(sl.got > 0 && sl.got < (uint64_t)64 << 20);
    CHECK(sl.peak_kib - sl.base_kib < RSS_GROWTH_LIMIT_KIB);
    CHECK(wait_proc(marker, 0, 10000)); /* the reader left: the command is killed */
}

/* The same with the curl program itself: --no-buffer, --limit-rate 1M, leaving after 4 s. */
static void test_slow_reader_curl_no_buffer(void)
{
    char body[512], marker[32], url[256], cmd[2048];
    long base = sg_proc_rss_kib(g.proc.pid), peak = base;
    pid_t pid;
    int status, was_running = 0;
    int64_t deadline, started;
    snprintf(marker, sizeof marker, "%u4", marker_base);
    snprintf(url, sizeof url, "%s/api/v1/exec", g.base);
    big_body(body, sizeof body, marker);
    snprintf(cmd, sizeof cmd,
             "curl -sS --no-buffer --limit-rate 1M --max-time 4 %s%s -H 'Content-Type: application/json' "
             "-H 'Accept: text/event-stream' -d '%s' %s > /dev/null 2>&1",
             gw_ca_file[0] ? "--cacert " : "", gw_ca_file, body, url);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    deadline = sg_now_ms() + 30000;
    started = sg_now_ms();
    while (waitpid(pid, &status, WNOHANG) == 0) {
        long kib = sg_proc_rss_kib(g.proc.pid);
        if (kib > peak)
            peak = kib;
        if (sg_now_ms() - started >= 2500 && !was_running)
            was_running = proc_with_arg(marker); /* held while curl reads (it leaves at 4 s) */
        CHECK(sg_now_ms() < deadline);
        usleep(100000);
    }
    fprintf(stderr, "curl --no-buffer reader: gateway RSS %ld KiB -> peak %ld KiB\n", base, peak);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 28); /* curl's "operation timed out": it left at 4 s */
    CHECK(was_running);
    CHECK(peak - base < RSS_GROWTH_LIMIT_KIB);
    CHECK(wait_proc(marker, 0, 10000));
}

/* ---- shutdown ---- */

static int stop_gateway_on_up(struct stream *s, const struct event *e)
{
    (void)s;
    if (strcmp(e->name, "stdout") == 0 && data_of(e) && strstr(data_of(e), "up"))
        CHECK(kill(g.proc.pid, SIGTERM) == 0);
    return 0;
}

/*
 * SIGTERM while a stream runs: after the grace period the stream ends with an
 * error event (no exit: the command did not end by itself), the command is
 * killed, and the gateway exits 0 (libmicrohttpd would abort on a parked
 * connection). Stops the gateway: the last case.
 */
static void test_shutdown_ends_streams(const char *const args[])
{
    const char *with_grace[16];
    char m[32], body[512];
    struct stream s = {0};
    size_t n = 0;
    for (; args[n]; n++)
        with_grace[n] = args[n];
    with_grace[n++] = "--grace";
    with_grace[n++] = "1s";
    with_grace[n] = NULL;
    gw_stop(&g);
    gw_start(&g, with_grace);
    snprintf(m, sizeof m, "%u5", marker_base);
    snprintf(body, sizeof body, "{\"argv\":[\"sh\",\"-c\",\"echo up; sleep %s\"],\"timeout_ms\":60000}", m);
    s.on_event = stop_gateway_on_up;
    run_stream(&s, "text/event-stream", body); /* the connection closes with the gateway: how is not the point */
    CHECK_INT_EQ(s.n, 3);
    CHECK_STR_EQ(s.ev[1].name, "stdout");
    CHECK_STR_EQ(s.ev[2].name, "error");
    CHECK(strstr(json_string_value(json_object_get(s.ev[2].data, "message")), "shutting down"));
    CHECK_INT_EQ(sg_proc_stop(&g.proc, 15000), 0);
    CHECK(wait_proc(m, 0, 10000));
    sg_test_rmtree(g.dir);
    stream_free(&s);
}

/* ---- HTTPS (issue 20: streams over TLS) ---- */

static void run_sh(const char *fmt, const char *a)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, fmt, a, a, a);
    CHECK(system(cmd) == 0);
}

static void test_over_https(void)
{
    static char cert[300], key[300]; /* kept: https_args points at them */
    const char *args[6];
    run_sh("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=t-ca "
           ">/dev/null 2>&1",
           dir);
    {
        char cmd[2048];
        snprintf(cmd, sizeof cmd,
                 "cd %s && openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=localhost "
                 ">/dev/null 2>&1 && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > srv.ext && "
                 "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 "
                 "-extfile srv.ext >/dev/null 2>&1",
                 dir);
        CHECK(system(cmd) == 0);
    }
    snprintf(cert, sizeof cert, "%s/srv.pem", dir);
    snprintf(key, sizeof key, "%s/srv.key", dir);
    args[0] = "--tls-cert", args[1] = cert, args[2] = "--tls-key", args[3] = key;
    args[4] = NULL;
    {
        const char *all[16];
        size_t n = 0;
        static const char *common[] = {"--allow", "sh,echo,sleep,yes,head", "--sandbox", "best-effort", NULL};
        for (size_t i = 0; common[i]; i++)
            all[n++] = common[i];
        all[n++] = "--sandbox-read";
        all[n++] = dir;
        for (size_t i = 0; args[i]; i++)
            all[n++] = args[i];
        all[n] = NULL;
        memcpy(https_args, all, sizeof all);
        gw_stop(&g);
        gw_start(&g, all);
    }
    CHECK(strncmp(g.base, "https://", 8) == 0);
    snprintf(gw_ca_file, sizeof gw_ca_file, "%s/ca.pem", dir);
    test_sse_output_before_exit();
    test_ndjson_output_before_exit();
    test_client_leaving_kills();
    test_slow_reader_libcurl();
    test_slow_reader_curl_no_buffer();
}

int main(void)
{
    const char *args[] = {"--allow", "sh,echo,sleep,yes,head", "--sandbox", "best-effort", "--sandbox-read", dir, NULL};
    CHECK(curl_global_init(CURL_GLOBAL_DEFAULT) == 0);
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    chmod(dir, 0755); /* the sandboxed command reads its gate file here */
    marker_base = 700000000u + (unsigned)getpid() % 1000000u * 10u; /* arguments no other process has */
    signal(SIGPIPE, SIG_IGN);
    gw_start(&g, args);
    RUN_TEST(test_sse_output_before_exit);
    RUN_TEST(test_ndjson_output_before_exit);
    RUN_TEST(test_line_a_second);
    RUN_TEST(test_stderr_and_base64);
    RUN_TEST(test_character_cut_by_the_pipe);
    RUN_TEST(test_escapes);
    RUN_TEST(test_refusal_and_plain_json);
    RUN_TEST(test_client_leaving_kills);
    RUN_TEST(test_timeout);
    RUN_TEST(test_slow_reader_libcurl);
    RUN_TEST(test_slow_reader_curl_no_buffer);
    RUN_TEST(test_keep_alive_comment);
    RUN_TEST(test_over_https);
    fprintf(stderr, "-- test_shutdown_ends_streams\n");
    test_shutdown_ends_streams(https_args);
    sg_test_rmtree(dir);
    curl_global_cleanup();
    return TESTS_DONE();
}
