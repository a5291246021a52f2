/* main.c - sockgate-time: the tutorial's UDP time server (a datagram is a strftime format). */
#include <stdio.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

int main(int argc, char **argv)
{
    const char *drain = NULL;
    struct time_config cfg;
    const char *listen = TIME_DEFAULT_LISTEN, *utc = NULL, *log_format = "text";
    char err[256];
    void *srv = NULL;
    int rc;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_TIME_LISTEN", "HOST:PORT|unix:PATH", "UDP address (port 0: any) or UNIX datagram socket to serve", &listen, NULL, NULL},
        {"utc", "SOCKGATE_TIME_UTC", NULL, "answer in UTC instead of the local time zone (TZ)", &utc, NULL, NULL},
        {"drain", "SOCKGATE_DRAIN", "DURATION",
         "on SIGTERM keep serving this long before stopping, so balancers that resolve this replica move away first "
         "(default 0)",
         &drain, NULL, NULL},
        {"drain-ms", "SOCKGATE_DRAIN_MS", "MS", "milliseconds", &drain, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-time", "sockgate-time [--listen HOST:PORT] [--utc] [--drain DURATION] [--log-format text|json]",
                          "Answers each UDP datagram, a strftime format (empty: %Y-%m-%d %X), with the current "
                          "time in that format.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_service_set_drain("sockgate-time", drain) != 0)
        return 2;
    if (sg_log_setup("sockgate-time", log_format) != SG_OK)
        return 2;
    time_config_defaults(&cfg);
    cfg.listen = listen;
    cfg.utc = utc != NULL;
    rc = time_server_create(&cfg, &srv, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-time: %s\n", err);
        return rc == SG_ERR_INVALID ? 2 : 1; /* a bad --listen is a usage error; a busy port is not */
    }
    return sg_service_main(&time_service_ops, srv);
}
