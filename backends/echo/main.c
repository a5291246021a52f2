/* main.c - sockgate-echo: the tutorial's upper-casing echo server over TCP and UDP on one port. */
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

/* Raises the soft descriptor limit to the hard one: each client costs one descriptor. */
static void raise_fd_limit(unsigned max_conns)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl); /* best effort: the check below reports the outcome */
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_conns + 16)
        sg_warn("the descriptor limit (%llu) is below --max-conns (%u); accepts will pause when it is reached",
                (unsigned long long)rl.rlim_cur, max_conns);
}

int main(int argc, char **argv)
{
    const char *drain = NULL;
    struct echo_config cfg;
    const char *listen = ECHO_DEFAULT_LISTEN, *mode = "upper", *max_conns = "16384", *idle = "0";
    const char *log_format = "text";
    uint64_t n;
    char err[256];
    void *srv = NULL;
    int rc;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_ECHO_LISTEN", "HOST:PORT|unix:PATH", "TCP and UDP address to serve (port 0: any); unix:PATH: stream at PATH, datagrams at PATH.dgram", &listen, NULL, NULL},
        {"mode", "SOCKGATE_ECHO_MODE", "upper|plain", "upper-case ASCII letters, or echo bytes unchanged", &mode, NULL, NULL},
        {"max-conns", "SOCKGATE_ECHO_MAX_CONNS", "N", "TCP connections served at once; more are closed at once",
         &max_conns, NULL, NULL},
        {"idle-timeout", "SOCKGATE_ECHO_IDLE_TIMEOUT", "DURATION",
         "close TCP connections silent this long (0: never; a bare number: seconds)",
         &idle, NULL, NULL},
        {"drain", "SOCKGATE_DRAIN", "DURATION",
         "on SIGTERM keep serving this long before stopping, so balancers that resolve this replica move away first "
         "(default 0)",
         &drain, NULL, NULL},
        {"drain-ms", "SOCKGATE_DRAIN_MS", "MS", "milliseconds", &drain, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-echo",
                          "sockgate-echo [--listen HOST:PORT] [--mode upper|plain] [--max-conns N] [--idle-timeout DURATION]\n"
                          "                     [--drain DURATION] [--log-format text|json]",
                          "Answers every byte sent over TCP or UDP with the same byte, ASCII letters upper-cased.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_service_set_drain("sockgate-echo", drain) != 0)
        return 2;
    if (sg_log_setup("sockgate-echo", log_format) != SG_OK)
        return 2;
    echo_config_defaults(&cfg);
    cfg.listen = listen;
    if (echo_mode_parse(mode, &cfg.mode) != SG_OK) {
        fprintf(stderr, "sockgate-echo: --mode must be upper or plain, not '%s'\n", mode);
        return 2;
    }
    if (sg_flag_count("sockgate-echo", "max-conns", max_conns, 1, 1000000, &n) != 0)
        return 2;
    cfg.max_conns = (unsigned)n;
    if (sg_flag_duration("sockgate-echo", "idle-timeout", idle, 0, UINT64_C(86400000) * 365, 1000, &n) != 0)
        return 2;
    cfg.idle_timeout_s = (unsigned)((n + 999) / 1000); /* the server counts whole seconds: 500ms waits 1s */
    raise_fd_limit(cfg.max_conns);
    rc = echo_server_create(&cfg, &srv, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-echo: %s\n", err);
        return rc == SG_ERR_INVALID ? 2 : 1; /* a bad --listen is a usage error; a busy port is not */
    }
    return sg_service_main(&echo_service_ops, srv);
}
