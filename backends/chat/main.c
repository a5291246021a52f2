/* main.c - sockgate-chat: the tutorial's UDP chat server, with framed TCP ops on the same port for the gateway. */
#include <stdint.h>
#include <stdio.h>

#include "server.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/opts.h"
#include "sockgate/service.h"

/* Parses a count flag into *out; prints the error and returns -1 when it is not a number in min..max. */
static int parse_count(const char *flag, const char *text, unsigned min, unsigned max, unsigned *out)
{
    uint64_t n;
    if (sg_flag_count("sockgate-chat", flag, text, min, max, &n) != 0)
        return -1;
    *out = (unsigned)n;
    return 0;
}

int main(int argc, char **argv)
{
    const char *drain = NULL;
    struct chat_config cfg;
    const char *listen = CHAT_DEFAULT_LISTEN, *history = "1000", *max_peers = "1024", *max_conns = "1024";
    const char *log_format = "text";
    char err[256];
    void *srv = NULL;
    int rc;
    const struct sg_option opts[] = {
        {"listen", "SOCKGATE_CHAT_LISTEN", "HOST:PORT|unix:PATH", "UDP (chat clients) and TCP (framed ops) address (port 0: any); unix:PATH: stream at PATH, datagrams at PATH.dgram",
         &listen, NULL, NULL},
        {"history", "SOCKGATE_CHAT_HISTORY", "N", "messages kept for replay to subscribers (1..100000)", &history, NULL,
         NULL},
        {"max-peers", "SOCKGATE_CHAT_MAX_PEERS", "N", "peers remembered for replies; the least recently seen goes first",
         &max_peers, NULL, NULL},
        {"max-conns", "SOCKGATE_CHAT_MAX_CONNS", "N", "TCP connections served at once; more are closed at once",
         &max_conns, NULL, NULL},
        {"drain", "SOCKGATE_DRAIN", "DURATION",
         "on SIGTERM keep serving this long before stopping, so balancers that resolve this replica move away first "
         "(default 0)",
         &drain, NULL, NULL},
        {"drain-ms", "SOCKGATE_DRAIN_MS", "MS", "milliseconds", &drain, NULL, NULL},
        {"log-format", "SOCKGATE_LOG_FORMAT", "text|json", "log line format on stderr", &log_format, NULL, NULL},
        {NULL, NULL, NULL, NULL, NULL, NULL, NULL},
    };

    sg_signals_block();
    rc = sg_options_parse("sockgate-chat",
                          "sockgate-chat [--listen HOST:PORT] [--history N] [--max-peers N] [--max-conns N] "
                          "[--drain DURATION] [--log-format text|json]",
                          "Records the UDP chat messages of the tutorial's QQ clients and lets framed TCP clients "
                          "follow them and reply to their senders.",
                          opts, argc, argv, NULL);
    if (rc != 0)
        return rc == 1 ? 0 : 2;
    if (sg_service_set_drain("sockgate-chat", drain) != 0)
        return 2;
    if (sg_log_setup("sockgate-chat", log_format) != SG_OK)
        return 2;
    chat_config_defaults(&cfg);
    cfg.listen = listen;
    if (parse_count("history", history, 1, CHAT_MAX_HISTORY, &cfg.history) < 0 ||
        parse_count("max-peers", max_peers, 1, CHAT_MAX_PEERS, &cfg.max_peers) < 0 ||
        parse_count("max-conns", max_conns, 1, CHAT_MAX_CONNS, &cfg.max_conns) < 0)
        return 2;
    rc = chat_server_create(&cfg, &srv, err, sizeof err);
    if (rc != SG_OK) {
        fprintf(stderr, "sockgate-chat: %s\n", err);
        return rc == SG_ERR_INVALID ? 2 : 1; /* a bad --listen is a usage error; a busy port is not */
    }
    return sg_service_main(&chat_service_ops, srv);
}
