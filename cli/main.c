/* main.c - sockgate-cli: the native client for every sockgate backend. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "common.h"
#include "sockgate/opts.h"

struct cli_command {
    const char *name;
    const char *synopsis;
    int (*run)(int argc, char **argv);
};

static const struct cli_command commands[] = {
    /* one entry per subcommand, in the order --help lists them */
    {"echo", "echo [--udp] ADDR [TEXT...]", cmd_echo},
    {"time", "time ADDR [FORMAT]", cmd_time},
    {"exec", "exec ADDR [CMD [ARGS...]]", cmd_exec},
    {"put", "put ADDR FILE [NAME]", cmd_put},
    {"get", "get [--offset N] [--length N] ADDR NAME [OUT]", cmd_get},
    {"ls", "ls ADDR", cmd_ls},
    {"rm", "rm ADDR NAME", cmd_rm},
    {"chat", "chat ADDR", cmd_chat},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sockgate-cli COMMAND [ARGS...]\n\n"
                 "The native client for sockgate's backends (the tutorial's clients, done right).\n\n"
                 "commands:\n");
    for (const struct cli_command *c = commands; c->name; c++)
        fprintf(out, "  sockgate-cli %s\n", c->synopsis);
    fprintf(out, "\n  --help, --version\n\nExit status: 0 on success, 1 when the exchange fails, 2 on a usage error;\n"
                 "exec exits with the remote command's status.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("sockgate-cli %s\n", SG_VERSION);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN); /* a closed socket is an error to report, not a reason to die */
    for (const struct cli_command *c = commands; c->name; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->run(argc - 1, argv + 1);
    cli_error("unknown command '%s' (see sockgate-cli --help)", argv[1]);
    return CLI_EXIT_USAGE;
}
