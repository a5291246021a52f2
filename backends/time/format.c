/* format.c - one time request answered: checks on the format, then strftime within bounds. */
#include <stdio.h>
#include <string.h>

#include "server.h"
#include "sockgate/text.h"

/* Room for a format once its %s conversions are spelled out (their digits count as result bytes). */
#define EXPANDED_MAX (1 + TIME_MAX_FORMAT + TIME_MAX_RESULT + 1)

/* Writes "ERROR: why" into out; returns its length. */
static size_t error_reply(char out[TIME_REPLY_BUF], const char *why, int *is_error)
{
    int n = snprintf(out, TIME_REPLY_BUF, "ERROR: %s", why);
    *is_error = 1;
    return (size_t)n;
}

/*
 * Copies fmt[0..len) after dst[*at], writing each %s conversion (with any
 * flags and width) as the digits of epoch. glibc computes %s with mktime(),
 * which reads the tm as local time: under --utc with TZ set it would be off
 * by the zone's offset, so the epoch is spelled out here instead. Returns 0,
 * or -1 when the digits alone already exceed TIME_MAX_RESULT bytes.
 */
static int expand_epoch(const char *fmt, size_t len, long long epoch, char *dst, size_t *at)
{
    size_t digits_total = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i + 1, width = 0;
        char pad = '0';
        if (fmt[i] != '%') {
            dst[(*at)++] = fmt[i++];
            continue;
        }
        /* The grammar glibc accepts: flags, width, an E or O modifier, then the conversion. */
        for (; j < len && strchr("_-0^#+", fmt[j]); j++)
            pad = fmt[j] == '_' ? ' ' : fmt[j] == '-' ? '\0' : fmt[j] == '0' ? '0' : pad;
        for (; j < len && fmt[j] >= '0' && fmt[j] <= '9'; j++)
            width = width > TIME_MAX_RESULT ? width : width * 10 + (size_t)(fmt[j] - '0');
        if (j < len && (fmt[j] == 'E' || fmt[j] == 'O'))
            j++;
        if (j < len && fmt[j] == 's') {
            char num[24];
            int n = snprintf(num, sizeof num, "%lld", epoch);
            size_t fill = pad && width > (size_t)n ? width - (size_t)n : 0;
            digits_total += fill + (size_t)n;
            if (digits_total > TIME_MAX_RESULT)
                return -1;
            memset(dst + *at, pad, fill);
            memcpy(dst + *at + fill, num, (size_t)n);
            *at += fill + (size_t)n;
        } else {
            size_t end = j < len ? j + 1 : len; /* a conversion other than %s is strftime's */
            memcpy(dst + *at, fmt + i, end - i);
            *at += end - i;
        }
        i = j + 1;
    }
    return 0;
}

size_t time_reply(const uint8_t *req, size_t len, const struct tm *tm, long long epoch,
                  char out[TIME_REPLY_BUF], int *is_error)
{
    char fmt[EXPANDED_MAX];
    size_t at = 0, n;

    *is_error = 0;
    if (len > TIME_MAX_FORMAT)
        return error_reply(out, "format longer than 256 bytes", is_error);
    if (memchr(req, '\0', len))
        return error_reply(out, "format contains a NUL byte", is_error);
    if (!sg_utf8_valid(req, len))
        return error_reply(out, "format is not valid UTF-8", is_error);
    if (len == 0) {
        req = (const uint8_t *)TIME_DEFAULT_FORMAT;
        len = strlen(TIME_DEFAULT_FORMAT);
    }
    /*
     * strftime returns 0 both when the result is empty (an empty %p or %Z)
     * and when it does not fit. A one-byte prefix makes every result at
     * least one byte long, so 0 can only mean "too long": TIME_REPLY_BUF
     * bytes hold the prefix, TIME_MAX_RESULT bytes and the NUL. The prefix
     * goes first, not last, so it can never join a trailing '%' into a
     * conversion.
     */
    fmt[at++] = '#';
    if (expand_epoch((const char *)req, len, epoch, fmt, &at) != 0)
        return error_reply(out, "result longer than 1024 bytes", is_error);
    fmt[at] = '\0';
    n = strftime(out, TIME_REPLY_BUF, fmt, tm);
    if (n == 0)
        return error_reply(out, "result longer than 1024 bytes", is_error);
    memmove(out, out + 1, n); /* drops the prefix, keeps the NUL */
    return n - 1;
}
