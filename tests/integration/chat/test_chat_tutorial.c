/* test_chat_tutorial.c - the tutorial's exchange: its Python chat client and `sockgate-cli chat` against sockgate-chat. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "chat_util.h"
#include "check.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static struct sg_proc srv;
static struct ct_conn ctl;
static struct ct_conn sub; /* the operator's seat: every message, live */
static char server_addr[128];
static const char *const py_env[] = {"PYTHONIOENCODING=utf-8", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1",
                                     NULL};

/* Waits for the next incoming message on the subscription; checks its text; copies its sender into from. */
static void expect_incoming(const char *text, char *from, size_t cap)
{
    json_t *m = NULL;
    for (;;) {
        CHECK_INT_EQ(ct_read(&sub, 15000, &m, NULL, NULL), SG_OK);
        CHECK(ct_error_code(m) == NULL);
        if (strcmp(json_string_value(json_object_get(m, "kind")), "in") == 0)
            break;
        json_decref(m); /* our own replies come by too */
    }
    CHECK_STR_EQ(json_string_value(json_object_get(m, "text")), text);
    snprintf(from, cap, "%s", json_string_value(json_object_get(m, "from")));
    json_decref(m);
}

static void reply(const char *to, const char *text)
{
    json_t *h = ct_call(&ctl, json_pack("{s:s, s:s, s:s}", "op", "reply", "to", to, "text", text));
    CHECK(ct_error_code(h) == NULL);
    json_decref(h);
}

/* The tutorial's client, unchanged but for its port: two messages to two contacts, each answered. */
static void test_tutorial_client(void)
{
    char script[1024], port[16], from[64], line[512];
    const char *argv[] = {"python3", script, port, NULL};
    struct ct_child py;

    ct_source_file("tutorial_chat.py", script, sizeof script);
    snprintf(port, sizeof port, "%u", srv.port);
    ct_spawn(&py, argv, py_env);
    ct_child_write(&py, "nobody\ntaibai\n  hello there  \n");
    expect_incoming("发给taibai: hello there", from, sizeof from);
    reply(from, "hi 你好");
    snprintf(line, sizeof line, "来自[%s]的一条消息:\033[1;34;43mhi 你好\033[0m\n", server_addr);
    CHECK(ct_child_wait_out(&py, line, 15000));
    /* Its 'q' never ends a conversation (see tutorial_chat.py): it is sent like any message. */
    ct_child_write(&py, "q\n");
    expect_incoming("发给taibai: q", from, sizeof from);
    reply(from, "second");
    snprintf(line, sizeof line, "的一条消息:\033[1;34;43msecond\033[0m\n");
    CHECK(ct_child_wait_out(&py, line, 15000));
    ct_child_close_stdin(&py);
    /* The tutorial's client ends only on EOFError, as with its other clients. */
    CHECK_INT_EQ(ct_child_wait(&py, 15000), 1);
    if (strstr(py.err, "No such file") || strstr(py.err, "exec python3"))
        fprintf(stderr, "python3 is needed to run the tutorial's client: %s\n", py.err);
    CHECK(strstr(py.err, "EOFError") != NULL);
    CHECK(strstr(py.out, "没有这个聊天对象") != NULL);
}

/* sockgate-cli chat from a pipe: no prompts, each line sent exactly as typed, replies shown with their sender. */
static void test_cli_chat(void)
{
    char bin[512], from[64], line[512];
    const char *argv[] = {bin, "chat", "--timeout", "15000", server_addr, NULL};
    struct ct_child cli;

    sg_test_bin("sockgate-cli", bin, sizeof bin);
    ct_spawn(&cli, argv, NULL);
    ct_child_write(&cli, "你好 server\n");
    expect_incoming("你好 server", from, sizeof from);
    reply(from, "reply one");
    snprintf(line, sizeof line, "来自[%s]的一条消息:reply one\n", server_addr);
    CHECK(ct_child_wait_out(&cli, line, 15000));
    ct_child_write(&cli, "\nsecond\n");
    expect_incoming("second", from, sizeof from);
    /* The operator's text must not drive the client's terminal. */
    reply(from, "a\033[2Jb");
    CHECK(ct_child_wait_out(&cli, "的一条消息:a?[2Jb\n", 15000));
    ct_child_close_stdin(&cli);
    CHECK_INT_EQ(ct_child_wait(&cli, 15000), 0);
    CHECK(strstr(cli.err, "message (q ends)") == NULL); /* no prompts when stdin is not a terminal */
    CHECK(strstr(cli.out, "message (q ends)") == NULL);
    CHECK(strstr(cli.out, "\033") == NULL);         /* colours only on a terminal */
}

/* A reply that does not come in time is reported and the chat goes on; 'q' ends it. */
static void test_cli_no_reply(void)
{
    char bin[512], from[64], big[1200];
    const char *argv[] = {bin, "chat", "--timeout", "300ms", server_addr, NULL};
    long long received = ct_stat(&ctl, "received");
    struct ct_child cli;

    sg_test_bin("sockgate-cli", bin, sizeof bin);
    ct_spawn(&cli, argv, NULL);
    memset(big, 'x', sizeof big - 2);
    big[sizeof big - 2] = '\n';
    big[sizeof big - 1] = '\0';
    ct_child_write(&cli, "anyone?\n");
    ct_child_write(&cli, big); /* over the chat's 1024 bytes: refused here, never sent */
    ct_child_write(&cli, "still there?\nq\nnot sent after q\n");
    ct_child_close_stdin(&cli);
    CHECK_INT_EQ(ct_child_wait(&cli, 15000), 0);
    CHECK(strstr(cli.err, "no reply within 300 ms") != NULL);
    CHECK(strstr(cli.err, "message not sent") != NULL);
    expect_incoming("anyone?", from, sizeof from);
    expect_incoming("still there?", from, sizeof from);
    CHECK_INT_EQ(ct_stat(&ctl, "received"), received + 2);
    CHECK_STR_EQ(cli.out, "");
}

/* Usage errors exit 2; a chat server that is not there (ICMP port unreachable) exits 1. */
static void test_cli_errors(void)
{
    char bin[512], nobody[SG_ADDR_STRLEN];
    const char *no_addr[] = {bin, "chat", NULL};
    const char *bad_timeout[] = {bin, "chat", "--timeout", "soon", server_addr, NULL};
    const char *unreachable[] = {bin, "chat", "--timeout", "10000", nobody, NULL};
    struct ct_child cli;
    int u = -1;
    uint16_t port = sg_test_hold_port(SOCK_DGRAM, 0, &u);

    /* Held, not merely closed: a closed port could be handed to another test's socket meanwhile. */
    CHECK(port != 0);
    snprintf(nobody, sizeof nobody, "127.0.0.1:%u", port);

    sg_test_bin("sockgate-cli", bin, sizeof bin);
    ct_spawn(&cli, no_addr, NULL);
    CHECK_INT_EQ(ct_child_wait(&cli, 15000), 2);
    CHECK(strstr(cli.err, "ADDR") != NULL);
    ct_spawn(&cli, bad_timeout, NULL);
    CHECK_INT_EQ(ct_child_wait(&cli, 15000), 2);
    CHECK(strstr(cli.err, "--timeout") != NULL);
    ct_spawn(&cli, unreachable, NULL);
    ct_child_write(&cli, "hello?\n");
    ct_child_close_stdin(&cli);
    CHECK_INT_EQ(ct_child_wait(&cli, 15000), 1);
    CHECK(strstr(cli.err, "refused") != NULL);
    close(u);
}

int main(void)
{
    json_t *ack;
    ct_start(&srv, NULL);
    snprintf(server_addr, sizeof server_addr, "%s", srv.addr);
    ct_connect(&ctl, srv.port, 0);
    ct_connect(&sub, srv.port, 0);
    ack = ct_call(&sub, json_pack("{s:s}", "op", "subscribe"));
    CHECK(json_is_true(json_object_get(ack, "subscribed")));
    json_decref(ack);
    RUN_TEST(test_tutorial_client);
    RUN_TEST(test_cli_chat);
    RUN_TEST(test_cli_no_reply);
    RUN_TEST(test_cli_errors);
    ct_close(&sub);
    ct_close(&ctl);
    ct_stop(&srv);
    return TESTS_DONE();
}
