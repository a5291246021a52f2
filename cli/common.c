/* common.c - connecting and one-line errors for sockgate-cli. */
#include "common.h"

#include <stdarg.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/opts.h"

void cli_error(const char *fmt, ...)
{
    va_list ap;
    fputs("sockgate-cli: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_connect(const char *addr_text, int type, int timeout_ms)
{
    struct sg_addr addr;
    char err[256];
    int fd = -1;
    if (sg_addr_parse(addr_text, &addr, err, sizeof err) != SG_OK) {
        cli_error("%s", err);
        return -1;
    }
    if (sg_connect(&addr, type, timeout_ms, &fd, err, sizeof err) != SG_OK) {
        cli_error("%s: %s", addr_text, err);
        return -1;
    }
    return fd;
}

int cli_parse_duration(const char *cmd, const char *flag, const char *text, uint64_t min_ms, uint64_t max_ms,
                       int *out_ms)
{
    char prog[64];
    uint64_t v;
    snprintf(prog, sizeof prog, "sockgate-cli %s", cmd);
    if (sg_flag_duration(prog, flag, text, min_ms, max_ms, 1, &v) != 0)
        return CLI_EXIT_USAGE;
    *out_ms = (int)v;
    return 0;
}

int cli_interactive(void)
{
    return isatty(STDIN_FILENO) && isatty(STDERR_FILENO);
}
