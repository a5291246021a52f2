/* wake.c - the wake-up descriptor: an eventfd written by stop(), read by the loop it wakes. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/wake.h"

int sg_wake_open(int *fd, char *err, size_t errlen)
{
    *fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (*fd < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        return SG_ERR_SYS;
    }
    return SG_OK;
}

void sg_wake_signal(int fd)
{
    uint64_t one = 1;
    ssize_t rc = write(fd, &one, sizeof one);
    (void)rc; /* see the contract: any outcome leaves fd readable or was never going to */
}

void sg_wake_drain(int fd)
{
    uint64_t count;
    if (read(fd, &count, sizeof count) < 0 && errno != EAGAIN)
        sg_warn("eventfd read: %s", strerror(errno));
}

void sg_wake_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}
