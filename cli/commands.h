/* commands.h - the subcommands of sockgate-cli, one function per subcommand. */
#ifndef SOCKGATE_CLI_COMMANDS_H
#define SOCKGATE_CLI_COMMANDS_H

/* Each runs one subcommand with argv[0] the subcommand's name; returns the process exit status. */
int cmd_echo(int argc, char **argv);
int cmd_time(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_chat(int argc, char **argv);

#endif
