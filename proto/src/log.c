/* log.c - timestamped one-line events on stderr, one write(2) per line so threads never interleave. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"

#define LINE_MAX_BYTES 8192

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

static void timestamp(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000) % 1000);
}

static void write_line(char *line, size_t len)
{
    if (len >= LINE_MAX_BYTES - 1)
        len = LINE_MAX_BYTES - 2;
    line[len++] = '\n';
    /* best effort: a log line that cannot be written is not worth failing a request for */
    if (write(STDERR_FILENO, line, len) < 0)
        return;
}

/* Emits one event made of message, optional function name and optional extra fields. */
static void emit(enum sg_log_level level, const char *func, const char *msg, const json_t *fields)
{
    char line[LINE_MAX_BYTES], ts[64];
    size_t n;
    if (level < log_min)
        return;
    timestamp(ts, sizeof ts);
    if (log_format == SG_LOG_JSON) {
        json_t *o = fields ? json_deep_copy(fields) : json_object();
        if (!o)
            return;
        json_object_set_new(o, "ts", json_string(ts));
        json_object_set_new(o, "level", json_string(level_names[level]));
        json_object_set_new(o, "prog", json_string(log_prog));
        if (func)
            json_object_set_new(o, "func", json_string(func));
        json_object_set_new(o, "msg", json_string(msg));
        n = json_dumpb(o, line, sizeof line - 2, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (n == 0 || n > sizeof line - 2)
            return;
    } else {
        const char *key;
        json_t *value;
        int w = snprintf(line, sizeof line, "%s %-5s %s: %s%s%s", ts, level_names[level], log_prog,
                         func ? func : "", func ? ": " : "", msg);
        n = w < 0 ? 0 : ((size_t)w < sizeof line ? (size_t)w : sizeof line - 1);
        json_object_foreach((json_t *)fields, key, value)
        {
            char *v = json_is_string(value) ? NULL : json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
            w = snprintf(line + n, sizeof line - n, " %s=%s", key, v ? v : json_string_value(value));
            free(v);
            if (w < 0 || (size_t)w >= sizeof line - n) {
                n = sizeof line - 1;
                break;
            }
            n += (size_t)w;
        }
    }
    write_line(line, n);
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
