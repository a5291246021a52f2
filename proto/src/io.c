/* io.c - reads and writes that wait with poll until a deadline, whatever the fd's blocking mode. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/net.h"

int sg_wait_fd(int fd, short events, int64_t deadline_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    for (;;) {
        int timeout = -1, n;
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - sg_now_ms();
            if (left <= 0)
                return SG_ERR_TIMEOUT;
            timeout = left > 1000000 ? 1000000 : (int)left;
        }
        n = poll(&p, 1, timeout);
        if (n > 0)
            return SG_OK; /* readiness, errors and hang-ups are reported by the next call */
        if (n == 0) {
            if (deadline_ms >= 0 && sg_now_ms() >= deadline_ms)
                return SG_ERR_TIMEOUT;
            continue;
        }
        if (errno != EINTR)
            return SG_ERR_SYS;
    }
}

/* Returns 1 when errno means "would block". */
static int would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK;
}

static int errno_to_err(void)
{
    return (errno == EPIPE || errno == ECONNRESET) ? SG_ERR_CLOSED : SG_ERR_SYS;
}

int sg_write_all(int fd, const void *buf, size_t len, int64_t deadline_ms)
{
    const char *p = buf;
    int is_socket = 1;
    while (len > 0) {
        ssize_t n = is_socket ? send(fd, p, len, MSG_NOSIGNAL) : write(fd, p, len);
        if (n < 0 && is_socket && errno == ENOTSOCK) {
            is_socket = 0;
            continue;
        }
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && would_block()) {
            int rc = sg_wait_fd(fd, POLLOUT, deadline_ms);
            if (rc != SG_OK)
                return rc;
            continue;
        }
        return n == 0 ? SG_ERR_CLOSED : errno_to_err();
    }
    return SG_OK;
}

int sg_read_some(int fd, void *buf, size_t cap, size_t *got, int64_t deadline_ms)
{
    *got = 0;
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n > 0) {
            *got = (size_t)n;
            return SG_OK;
        }
        if (n == 0)
            return SG_ERR_CLOSED;
        if (errno == EINTR)
            continue;
        if (would_block()) {
            int rc = sg_wait_fd(fd, POLLIN, deadline_ms);
            if (rc != SG_OK)
                return rc;
            continue;
        }
        return errno_to_err();
    }
}

void sg_set_rcvlowat(int fd, int bytes, int *mark)
{
    if (*mark != bytes && setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) == 0)
        *mark = bytes;
}

int sg_read_batched(int fd, void *buf, size_t cap, size_t batch, int64_t patience_ms, int64_t timeout_ms, int *mark,
                    size_t *got)
{
    int64_t start = sg_now_ms();
    int rc;
    /* A timeout shorter than the patience would let the low-water mark alone cut a slow peer: no batching then. */
    if (batch > 1 && (timeout_ms < 0 || timeout_ms > patience_ms)) {
        sg_set_rcvlowat(fd, batch > INT_MAX ? INT_MAX : (int)batch, mark);
        rc = sg_read_some(fd, buf, cap, got, start + patience_ms);
        if (rc != SG_ERR_TIMEOUT)
            return rc;
    }
    sg_set_rcvlowat(fd, 1, mark);
    return sg_read_some(fd, buf, cap, got, timeout_ms < 0 ? -1 : start + timeout_ms);
}

int sg_read_full(int fd, void *buf, size_t len, int64_t deadline_ms)
{
    char *p = buf;
    while (len > 0) {
        size_t got;
        int rc = sg_read_some(fd, p, len, &got, deadline_ms);
        if (rc != SG_OK)
            return rc;
        p += got;
        len -= got;
    }
    return SG_OK;
}
