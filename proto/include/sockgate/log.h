/* log.h - one line per event on stderr, as text or JSON lines; thread-safe. */
#ifndef SOCKGATE_LOG_H
#define SOCKGATE_LOG_H

#include <jansson.h>

enum sg_log_level { SG_LOG_DEBUG, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR };
enum sg_log_format { SG_LOG_TEXT, SG_LOG_JSON };

/* Sets the program name, format and lowest level printed (defaults: "sockgate", text, info). */
void sg_log_init(const char *prog, enum sg_log_format format, enum sg_log_level min_level);

/* Parses "text" or "json" into *out; returns SG_OK or SG_ERR_INVALID. */
int sg_log_format_parse(const char *text, enum sg_log_format *out);

/*
 * What a program does with its --log-format flag: parses format_text and
 * starts logging as prog at info level. Returns SG_OK, or SG_ERR_INVALID after
 * printing "PROG: --log-format must be text or json, not 'TEXT'" to stderr.
 */
int sg_log_setup(const char *prog, const char *format_text);

/* Logs one line: timestamp, level, program, the function, and the message. */
void sg_log(enum sg_log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Logs one structured event: in JSON format the object's keys join the line;
 * in text format they follow the message as key=value. fields is borrowed.
 */
void sg_log_fields(enum sg_log_level level, const char *msg, const json_t *fields);

/* What a field of sg_log_record holds. */
enum sg_log_kind { SG_LOG_STR, SG_LOG_INT, SG_LOG_BOOL };

/* One field of a structured event: a key and a string, an integer or a boolean (num). */
struct sg_log_field {
    const char *key;
    enum sg_log_kind kind;
    const char *str; /* SG_LOG_STR; NULL leaves the field out */
    long long num;   /* SG_LOG_INT, SG_LOG_BOOL */
};

#define SG_LOG_FIELD_STR(k, v) ((struct sg_log_field){(k), SG_LOG_STR, (v), 0})
#define SG_LOG_FIELD_INT(k, v) ((struct sg_log_field){(k), SG_LOG_INT, NULL, (long long)(v)})
#define SG_LOG_FIELD_BOOL(k, v) ((struct sg_log_field){(k), SG_LOG_BOOL, NULL, (v) ? 1 : 0})

/*
 * sg_log_fields for events logged on every request: the fields are an array,
 * so the text format is written without building a JSON object first.
 */
void sg_log_record(enum sg_log_level level, const char *msg, const struct sg_log_field *fields, size_t n);

/*
 * Prints "listening on HOST:PORT" for fd's local address: the line tests and
 * scripts wait for. Call it once the program is ready to serve.
 */
void sg_log_listening(int fd);

/* sg_log_listening with a scheme before the address ("https://"; "" for none). */
void sg_log_listening_scheme(int fd, const char *scheme);

/*
 * Batching, for a thread that serves many requests per round of its event
 * loop: after sg_log_batch_begin, this thread's info and debug lines are
 * gathered and written together by sg_log_batch_flush (call it before the
 * thread sleeps), one write instead of one per line; warnings and errors
 * are written at once, after what was gathered. sg_log_batch_end flushes and
 * stops. Lines stay whole either way.
 */
void sg_log_batch_begin(void);
void sg_log_batch_flush(void);
void sg_log_batch_end(void);

#define sg_debug(...) sg_log(SG_LOG_DEBUG, __func__, __VA_ARGS__)
#define sg_info(...) sg_log(SG_LOG_INFO, __func__, __VA_ARGS__)
#define sg_warn(...) sg_log(SG_LOG_WARN, __func__, __VA_ARGS__)
#define sg_error(...) sg_log(SG_LOG_ERROR, __func__, __VA_ARGS__)

#endif
