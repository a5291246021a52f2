/* log.c - timestamped one-line events on stderr, whole lines per write(2) so threads never interleave. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"

#define LINE_MAX_BYTES 8192
/* A worker's batch of lines: room for a round's worth of access lines, and always for one line. */
#define LOG_BATCH_BYTES (8 * LINE_MAX_BYTES)

static const char *log_prog = "sockgate";
static enum sg_log_format log_format = SG_LOG_TEXT;
static enum sg_log_level log_min = SG_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sg_log_init(const char *prog, enum sg_log_format format, enum sg_log_level min_level)
{
    log_prog = prog;
    log_format = format;
    log_min = min_level;
}

int sg_log_format_parse(const char *text, enum sg_log_format *out)
{
    if (strcmp(text, "text") == 0)
        *out = SG_LOG_TEXT;
    else if (strcmp(text, "json") == 0)
        *out = SG_LOG_JSON;
    else
        return SG_ERR_INVALID;
    return SG_OK;
}

int sg_log_setup(const char *prog, const char *format_text)
{
    enum sg_log_format format;
    if (sg_log_format_parse(format_text, &format) != SG_OK) {
        fprintf(stderr, "%s: --log-format must be text or json, not '%s'\n", prog, format_text);
        return SG_ERR_INVALID;
    }
    sg_log_init(prog, format, SG_LOG_INFO);
    return SG_OK;
}

/* Length of "YYYY-MM-DDTHH:MM:SS.", the part of a timestamp that changes once a second. */
#define TS_SECONDS_LEN 20
/* Length of a whole timestamp: the seconds part, milliseconds and "Z". */
#define TS_LEN (TS_SECONDS_LEN + 4)

/* Writes the UTC time as "YYYY-MM-DDTHH:MM:SS.mmmZ" and a NUL into buf (TS_LEN + 1 bytes). */
static void timestamp(char *buf)
{
    /* Per thread, the calendar part of the current second: gmtime_r takes a process-wide lock. */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[64]; /* room for any year snprintf could be asked to write */
    struct timespec now;
    unsigned ms;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&now.tv_sec, &tm);
        snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_sec = now.tv_sec;
    }
    memcpy(buf, cached, TS_SECONDS_LEN);
    ms = (unsigned)(now.tv_nsec / 1000000) % 1000;
    buf[TS_SECONDS_LEN] = (char)('0' + ms / 100);
    buf[TS_SECONDS_LEN + 1] = (char)('0' + ms / 10 % 10);
    buf[TS_SECONDS_LEN + 2] = (char)('0' + ms % 10);
    buf[TS_SECONDS_LEN + 3] = 'Z';
    buf[TS_LEN] = '\0';
}

/* A text line being built: appends past its end are cut off, and room for the newline is kept. */
struct line {
    char buf[LINE_MAX_BYTES];
    size_t n;
};

static void put(struct line *l, const char *s, size_t len)
{
    size_t room = sizeof l->buf - 1 - l->n;
    if (len > room)
        len = room;
    memcpy(l->buf + l->n, s, len);
    l->n += len;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* Appends a field's value with control bytes as \xNN: a value (a request's path) cannot start a false line. */
static void put_value(struct line *l, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != 0x7f)
            continue;
        put(l, s + from, i - from);
        put(l, "\\x", 2);
        put(l, &hex[ch >> 4], 1);
        put(l, &hex[ch & 15], 1);
        from = i + 1;
    }
    put(l, s + from, len - from);
}

static void put_int(struct line *l, long long v)
{
    char digits[24];
    size_t i = sizeof digits;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        digits[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        digits[--i] = '-';
    put(l, digits + i, sizeof digits - i);
}

/* Per thread, once sg_log_batch_begin asked for it: whole lines gathered until sg_log_batch_flush. */
static _Thread_local struct {
    char *buf;
    size_t n, cap;
} batch;

/* Writes len bytes of whole lines to stderr; best effort: a lost log line is not worth failing a request for. */
static void write_out(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        buf += w;
        len -= (size_t)w;
    }
}

/* Hands a finished line to this thread's batch, or to stderr at once (no batch, or a warning or worse). */
static void put_out(enum sg_log_level level, const char *buf, size_t len)
{
    if (!batch.buf || level >= SG_LOG_WARN) {
        sg_log_batch_flush(); /* what came before goes first */
        write_out(buf, len);
        return;
    }
    if (batch.n + len > batch.cap)
        sg_log_batch_flush();
    memcpy(batch.buf + batch.n, buf, len); /* a line is never longer than the batch */
    batch.n += len;
}

void sg_log_batch_begin(void)
{
    if (batch.buf)
        return;
    batch.buf = malloc(LOG_BATCH_BYTES);
    batch.cap = batch.buf ? LOG_BATCH_BYTES : 0;
    batch.n = 0;
}

void sg_log_batch_flush(void)
{
    size_t from = 0;
    /*
     * In pieces of whole lines no longer than PIPE_BUF: a pipe (a container's
     * log) keeps a write that size in one piece whatever other threads write.
     */
    while (from < batch.n) {
        size_t end = from, next;
        do {
            const char *nl = memchr(batch.buf + end, '\n', batch.n - end);
            next = nl ? (size_t)(nl - batch.buf) + 1 : batch.n;
            if (end > from && next - from > PIPE_BUF)
                break;
            end = next;
        } while (end < batch.n);
        write_out(batch.buf + from, end - from);
        from = end;
    }
    batch.n = 0;
}

void sg_log_batch_end(void)
{
    sg_log_batch_flush();
    free(batch.buf);
    batch.buf = NULL;
    batch.cap = 0;
}

static void write_line(enum sg_log_level level, struct line *l)
{
    l->buf[l->n++] = '\n'; /* put always leaves this byte free */
    put_out(level, l->buf, l->n);
}

/* Starts a text line: "TIMESTAMP LEVEL PROG: [FUNC: ]MSG". */
static void text_head(struct line *l, enum sg_log_level level, const char *func, const char *msg)
{
    static const char pad[] = "     ";
    char ts[TS_LEN + 1];
    size_t level_len = strlen(level_names[level]);
    timestamp(ts);
    l->n = 0;
    put(l, ts, TS_LEN);
    put(l, " ", 1);
    put(l, level_names[level], level_len);
    put(l, pad, level_len < 5 ? 6 - level_len : 1); /* the level padded to 5, then a space */
    put_str(l, log_prog);
    put(l, ": ", 2);
    if (func) {
        put_str(l, func);
        put(l, ": ", 2);
    }
    put_str(l, msg);
}

/* Adds " key=VALUE" to a text line: strings as they are, anything else as JSON. */
static void text_field(struct line *l, const char *key, const json_t *value)
{
    put(l, " ", 1);
    put_str(l, key);
    put(l, "=", 1);
    if (json_is_string(value)) {
        put_value(l, json_string_value(value), json_string_length(value));
    } else if (json_is_integer(value)) {
        put_int(l, (long long)json_integer_value(value));
    } else if (json_is_boolean(value)) {
        put_str(l, json_is_true(value) ? "true" : "false");
    } else {
        char *v = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        if (v)
            put_str(l, v);
        free(v);
    }
}

/* Writes one JSON line made of o's fields and the event's own; takes o. */
static void emit_json(enum sg_log_level level, const char *func, const char *msg, json_t *o)
{
    char line[LINE_MAX_BYTES], ts[TS_LEN + 1];
    size_t n;
    if (!o)
        return;
    timestamp(ts);
    json_object_set_new(o, "ts", json_string(ts));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "prog", json_string(log_prog));
    if (func)
        json_object_set_new(o, "func", json_string(func));
    json_object_set_new(o, "msg", json_string(msg));
    n = json_dumpb(o, line, sizeof line - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (n == 0 || n > sizeof line - 1)
        return;
    line[n++] = '\n';
    put_out(level, line, n);
}

/* Emits one event made of message, optional function name and optional extra fields. */
static void emit(enum sg_log_level level, const char *func, const char *msg, const json_t *fields)
{
    const char *key;
    json_t *value;
    struct line l;
    if (level < log_min)
        return;
    if (log_format == SG_LOG_JSON) {
        emit_json(level, func, msg, fields ? json_deep_copy(fields) : json_object());
        return;
    }
    text_head(&l, level, func, msg);
    json_object_foreach((json_t *)fields, key, value)
    {
        text_field(&l, key, value);
    }
    write_line(level, &l);
}

void sg_log_record(enum sg_log_level level, const char *msg, const struct sg_log_field *fields, size_t n)
{
    struct line l;
    if (level < log_min)
        return;
    if (log_format == SG_LOG_JSON) {
        json_t *o = json_object();
        for (size_t i = 0; o && i < n; i++) {
            const struct sg_log_field *f = &fields[i];
            if (f->kind == SG_LOG_STR && f->str)
                json_object_set_new(o, f->key, json_string(f->str)); /* not UTF-8: left out */
            else if (f->kind == SG_LOG_INT)
                json_object_set_new(o, f->key, json_integer((json_int_t)f->num));
            else if (f->kind == SG_LOG_BOOL)
                json_object_set_new(o, f->key, json_boolean(f->num));
        }
        emit_json(level, NULL, msg, o);
        return;
    }
    text_head(&l, level, NULL, msg);
    for (size_t i = 0; i < n; i++) {
        const struct sg_log_field *f = &fields[i];
        if (f->kind == SG_LOG_STR && !f->str)
            continue;
        put(&l, " ", 1);
        put_str(&l, f->key);
        put(&l, "=", 1);
        if (f->kind == SG_LOG_STR)
            put_value(&l, f->str, strlen(f->str));
        else if (f->kind == SG_LOG_INT)
            put_int(&l, f->num);
        else
            put_str(&l, f->num ? "true" : "false");
    }
    write_line(level, &l);
}

void sg_log(enum sg_log_level level, const char *func, const char *fmt, ...)
{
    char msg[LINE_MAX_BYTES / 2];
    va_list ap;
    if (level < log_min)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(level, func, msg, NULL);
}

void sg_log_fields(enum sg_log_level level, const char *msg, const json_t *fields)
{
    emit(level, NULL, msg, fields);
}

void sg_log_listening(int fd)
{
    sg_log_listening_scheme(fd, "");
}

void sg_log_listening_scheme(int fd, const char *scheme)
{
    char addr[SG_ADDR_STRLEN], msg[SG_ADDR_STRLEN + 48];
    sg_local_addr(fd, addr, sizeof addr);
    snprintf(msg, sizeof msg, "listening on %s%s", scheme, addr);
    /* Always printed, whatever the level: scripts and tests wait for this line. */
    emit(log_min > SG_LOG_INFO ? log_min : SG_LOG_INFO, NULL, msg, NULL);
}
