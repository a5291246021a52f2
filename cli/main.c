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
    {"echo", "echo [--udp] [--timeout DURATION] [--retries N] ADDR [TEXT...]", cmd_echo},
    {"time", "time [--timeout DURATION] [--retries N] ADDR [FORMAT]", cmd_time},
    {"exec", "exec [--timeout DURATION] [--stdin FILE] ADDR [CMD [ARGS...]]", cmd_exec},
    {"put", "put [--timeout DURATION] [--quiet] ADDR FILE [NAME]", cmd_put},
    {"get", "get [--offset SIZE] [--length SIZE] [--timeout DURATION] [--quiet] ADDR NAME [OUT]", cmd_get},
    {"ls", "ls [--json] [--timeout DURATION] ADDR", cmd_ls},
    {"rm", "rm [--timeout DURATION] ADDR NAME", cmd_rm},
    {"chat", "chat [--timeout DURATION] [--color auto|always|never] ADDR", cmd_chat},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: sockgate-cli COMMAND [OPTIONS] ADDR [ARGS...]\n\n"
                 "The native client for sockgate's backends (the tutorial's clients, done right). ADDR is the\n"
                 "backend's HOST:PORT, not the gateway's: `sockgate` prints every backend's address at start-up\n"
                 "(fix them with --embedded-listen). `sockgate-cli COMMAND --help` tells more.\n\n"
                 "commands:\n");
    for (const struct cli_command *c = commands; c->name; c++)
        fprintf(out, "  sockgate-cli %s\n", c->synopsis);
    fprintf(out,
            "\ncommon options:\n"
            "  --timeout DURATION   how long to wait for the server (a bare number: milliseconds)\n"
            "  --quiet              put/get: no progress bar (it is drawn only on a terminal anyway)\n"
            "  --help, --version\n"
            "\nenvironment (a flag beats its variable):\n"
            "  SOCKGATE_CLI_TIMEOUT_MS       --timeout of echo, time, put, get, ls, rm\n"
            "  SOCKGATE_CLI_RETRIES          --retries of echo --udp and time\n"
            "  SOCKGATE_CLI_UDP              echo --udp\n"
            "  SOCKGATE_CLI_QUIET            put/get --quiet\n"
            "  SOCKGATE_CLI_EXEC_TIMEOUT     exec --timeout (old: SOCKGATE_CLI_EXEC_TIMEOUT_MS, milliseconds)\n"
            "  SOCKGATE_CLI_EXEC_STDIN       exec --stdin\n"
            "  SOCKGATE_CLI_CHAT_TIMEOUT_MS  chat --timeout\n"
            "  SOCKGATE_CLI_CHAT_COLOR       chat --color\n"
            "\nValues: " SG_UNITS_HELP ".\n"
            "\nExit status: 0 on success, 1 when the exchange fails (or ADDR is another service),\n"
            "2 on a usage error; exec exits with the remote command's status.\n");
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
