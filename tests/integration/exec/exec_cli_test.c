/* exec_cli_test.c - the clients of sockgate-exec: `sockgate-cli exec` and the tutorial's own Python client. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "xt_util.h"

static struct sg_proc server;
static char cli[512];

/* Runs sockgate-cli exec with args (NULL-terminated) and stdin text, capturing both streams. */
static int run_cli(const char *const args[], const char *in, struct xt_run_result *r)
{
    const char *argv[32] = {cli, "exec"};
    int n = 2;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return xt_run(argv, in, in ? strlen(in) : 0, 60000, r);
}

/* Runs the tutorial's client with the port and the given commands (or stdin when none). */
static int run_tutorial(const char *const cmds[], const char *in, struct xt_run_result *r)
{
    char script[512], port[16];
    const char *argv[16] = {"python3", xt_source_file("tutorial_client.py", script, sizeof script), port};
    int n = 3;
    snprintf(port, sizeof port, "%u", server.port);
    for (int i = 0; cmds && cmds[i] && n < 15; i++)
        argv[n++] = cmds[i];
    argv[n] = NULL;
    xt_run(argv, in, in ? strlen(in) : 0, 120000, r);
    if (r->status != 0)
        fprintf(stderr, "tutorial client failed (%d): %s\n", r->status, r->err);
    return r->status;
}

/* The tutorial's client prints several MiB of a command's output, exactly. */
static void test_tutorial_client_large_output(void)
{
    const char *const cmds[] = {"seq 1 700000", "echo after", NULL};
    struct xt_run_result r;
    size_t cap = 700000u * 8 + 64, used = 0;
    char *want = malloc(cap);
    CHECK(want != NULL);
    for (unsigned i = 1; i <= 700000; i++)
        used += (size_t)snprintf(want + used, cap - used, "%u\n", i);
    CHECK(used > 4 * 1024 * 1024);
    used += (size_t)snprintf(want + used, cap - used, "\nafter\n\n"); /* print() adds a newline to each */
    CHECK_INT_EQ(run_tutorial(cmds, NULL, &r), 0);
    CHECK_INT_EQ(r.out_len, used);
    CHECK(memcmp(r.out, want, used) == 0);
    xt_run_free(&r);
    free(want);
}

/* Commands typed into the tutorial's client: refusals print their reason and the session goes on. */
static void test_tutorial_client_session(void)
{
    struct xt_run_result r;
    CHECK_INT_EQ(run_tutorial(NULL, "echo one\n\nrm -rf /\necho 'two  words' ; ls\n", &r), 0);
    CHECK_STR_EQ(r.out, "one\n\ncommand not allowed: 'rm'\n\ntwo  words ; ls\n\n");
    xt_run_free(&r);
}

/* stdout and stderr land on their own streams and the exit status is the command's. */
static void test_cli_streams_and_status(void)
{
    const char *const args[] = {server.addr, "ls", "/usr", "/no-such-dir-for-sockgate", NULL};
    struct xt_run_result r;
    CHECK_INT_EQ(run_cli(args, NULL, &r), 2);
    CHECK(strstr(r.out, "bin\n") != NULL); /* /usr: commands may list the system's directories */
    CHECK(strstr(r.out, "no-such-dir") == NULL);
    CHECK(strstr(r.err, "no-such-dir-for-sockgate") != NULL);
    xt_run_free(&r);
}

static void test_cli_exit_codes(void)
{
    const char *const ok[] = {server.addr, "echo", "hello", "world", NULL};
    const char *const fails[] = {server.addr, "false", NULL};
    const char *const refused[] = {server.addr, "rm", "-rf", "/", NULL};
    const char *const dashes[] = {server.addr, "echo", "--not-a-cli-flag", NULL};
    struct xt_run_result r;
    CHECK_INT_EQ(run_cli(ok, NULL, &r), 0);
    CHECK_STR_EQ(r.out, "hello world\n");
    CHECK_STR_EQ(r.err, "");
    xt_run_free(&r);
    CHECK_INT_EQ(run_cli(fails, NULL, &r), 1);
    xt_run_free(&r);
    CHECK_INT_EQ(run_cli(refused, NULL, &r), 127);
    CHECK(strstr(r.err, "command not allowed: 'rm'") != NULL);
    CHECK_STR_EQ(r.out, "");
    xt_run_free(&r);
    /* Everything after the command name belongs to the command, flags included. */
    CHECK_INT_EQ(run_cli(dashes, NULL, &r), 0);
    CHECK_STR_EQ(r.out, "--not-a-cli-flag\n");
    xt_run_free(&r);
}

/* --stdin - sends our standard input as the command's. */
static void test_cli_stdin(void)
{
    const char *const args[] = {"--stdin", "-", server.addr, "wc", "-l", NULL};
    struct xt_run_result r;
    CHECK_INT_EQ(run_cli(args, "a\nb\nc\n", &r), 0);
    CHECK_STR_EQ(r.out, "3\n");
    xt_run_free(&r);
}

/* Without a command: the tutorial's loop, one raw line per command, until q. */
static void test_cli_interactive_loop(void)
{
    const char *const args[] = {server.addr, NULL};
    struct xt_run_result r;
    CHECK_INT_EQ(run_cli(args, "echo one\n\n   echo 'two  words'  \ncat /no-such-file\nq\necho three\n", &r), 0);
    CHECK_STR_EQ(r.out, "one\ntwo  words\n");
    CHECK(strstr(r.err, "/no-such-file") != NULL);
    xt_run_free(&r);
}

static void test_cli_usage(void)
{
    const char *const help[] = {"--help", NULL}, *const none[] = {NULL};
    const char *const bad_timeout[] = {"--timeout-ms", "soon", server.addr, "echo", NULL};
    const char *const unreachable[] = {"127.0.0.1:1", "echo", NULL};
    struct xt_run_result r;
    CHECK_INT_EQ(run_cli(help, NULL, &r), 0);
    CHECK(strstr(r.out, "sockgate-cli exec") != NULL);
    xt_run_free(&r);
    CHECK_INT_EQ(run_cli(none, NULL, &r), 2);
    CHECK(strstr(r.err, "ADDR") != NULL);
    xt_run_free(&r);
    CHECK_INT_EQ(run_cli(bad_timeout, NULL, &r), 2);
    xt_run_free(&r);
    CHECK_INT_EQ(run_cli(unreachable, NULL, &r), 1);
    CHECK(strstr(r.err, "127.0.0.1:1") != NULL);
    xt_run_free(&r);
}

/*
 * The cli shows output as the command writes it: the first line is read from
 * its stdout while the remote command still runs; Ctrl-C (SIGINT) then ends
 * the cli, and the remote command with it.
 */
static void test_cli_live_output_and_ctrl_c(void)
{
    int out[2];
    pid_t pid;
    char line[64] = "";
    FILE *f;
    int status;
    CHECK(pipe(out) == 0);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        execl(cli, cli, "exec", server.addr, "sh", "-c", "echo live; sleep 4343", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    f = fdopen(out[0], "r");
    CHECK(f && fgets(line, sizeof line, f) != NULL);
    CHECK_STR_EQ(line, "live\n");
    /* The line came while the command still runs: sh starts its sleep after the echo (bounded wait). */
    CHECK(xt_wait_proc("4343", 5000) > 0);
    CHECK(kill(pid, SIGINT) == 0);
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(xt_wait_gone("4343", 5000));
    fclose(f);
}

int main(void)
{
    const char *const args[] = {"--allow", "echo,seq,ls,cat,wc,false,sh", NULL};
    sg_test_bin("sockgate-cli", cli, sizeof cli);
    xt_start(&server, args);
    RUN_TEST(test_tutorial_client_large_output);
    RUN_TEST(test_tutorial_client_session);
    RUN_TEST(test_cli_streams_and_status);
    RUN_TEST(test_cli_exit_codes);
    RUN_TEST(test_cli_stdin);
    RUN_TEST(test_cli_interactive_loop);
    RUN_TEST(test_cli_usage);
    RUN_TEST(test_cli_live_output_and_ctrl_c);
    CHECK_INT_EQ(xt_zombies_of(server.pid), 0);
    xt_stop(&server);
    return TESTS_DONE();
}
