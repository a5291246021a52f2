/*
 * test_gateway_unix.c - every standalone backend on `--listen unix:PATH`, the gateway in front
 * of them with unix:PATH addresses: REST calls reach each one, native clients talk to the
 * sockets directly (a UNIX datagram to time), a socket file left by a killed server is
 * replaced while a live one is refused, and a clean stop removes the files.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "gwtest.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

static char dir[256];
static struct sg_proc echo_p, time_p, exec_p, file_p, chat_p;
static struct gw g;

/* Writes dir/name into buf and returns buf. */
static const char *path_in(char *buf, size_t cap, const char *name)
{
    CHECK((size_t)snprintf(buf, cap, "%s/%s", dir, name) < cap);
    return buf;
}

static int is_socket(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Starts prog --listen unix:DIR/name plus extra args; checks it says where and the socket is there. */
static void start_on_unix(struct sg_proc *p, const char *prog, const char *name, const char *extra1,
                          const char *extra2)
{
    char addr[300], sock[300];
    const char *argv[] = {prog, "--listen", addr, extra1, extra2, NULL};
    snprintf(addr, sizeof addr, "unix:%s", path_in(sock, sizeof sock, name));
    CHECK(sg_proc_start(p, argv, 10000) == 0);
    CHECK_STR_EQ(p->addr, addr);
    CHECK(is_socket(sock));
}

static void test_backends_listen_on_unix(void)
{
    char root[300], sock[300];
    start_on_unix(&echo_p, "sockgate-echo", "echo.sock", NULL, NULL);
    start_on_unix(&time_p, "sockgate-time", "time.sock", NULL, NULL);
    start_on_unix(&exec_p, "sockgate-exec", "exec.sock", "--allow=echo", NULL);
    start_on_unix(&file_p, "sockgate-file", "file.sock", "--root", path_in(root, sizeof root, "files"));
    start_on_unix(&chat_p, "sockgate-chat", "chat.sock", NULL, NULL);
    /* Services that also speak UDP put their datagram side next to the stream socket. */
    CHECK(is_socket(path_in(sock, sizeof sock, "echo.sock.dgram")));
    CHECK(is_socket(path_in(sock, sizeof sock, "chat.sock.dgram")));
}

static void test_gateway_reaches_unix_backends(void)
{
    const char *args[] = {"--echo", echo_p.addr, "--time", time_p.addr, "--exec", exec_p.addr,
                          "--file", file_p.addr, "--chat", chat_p.addr, NULL};
    const char *names[] = {"echo", "time", "exec", "file", "chat"};
    const struct sg_proc *procs[] = {&echo_p, &time_p, &exec_p, &file_p, &chat_p};
    json_t *j, *b;
    struct http_resp *r;
    gw_start(&g, args);
    j = gw_expect_json(&g, "GET", "/readyz", NULL, NULL, 200);
    b = json_object_get(j, "backends");
    for (size_t i = 0; i < 5; i++) {
        json_t *one = json_object_get(b, names[i]);
        CHECK(json_is_true(json_object_get(one, "ok")));
        CHECK(json_is_false(json_object_get(one, "embedded")));
        CHECK_STR_EQ(json_string_value(json_object_get(one, "address")), procs[i]->addr);
    }
    json_decref(j);

    r = gw_post_json(&g, "/api/v1/echo", "{\"message\": \"over unix\"}");
    j = http_ok_json(r, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "reply")), "OVER UNIX");
    json_decref(j);
    http_free(r);

    j = gw_expect_json(&g, "GET", "/api/v1/time?format=%25Y", NULL, NULL, 200);
    CHECK(json_string_value(json_object_get(j, "time")) && strlen(json_string_value(json_object_get(j, "time"))) == 4);
    json_decref(j);

    r = gw_post_json(&g, "/api/v1/exec", "{\"argv\": [\"echo\", \"ran\"]}");
    j = http_ok_json(r, 200);
    CHECK_STR_EQ(json_string_value(json_object_get(j, "stdout")), "ran\n");
    json_decref(j);
    http_free(r);

    r = gw_do(&g, "PUT", "/api/v1/files/u.txt", NULL, "unix body");
    CHECK_INT_EQ(r->status, 201);
    http_free(r);
    r = gw_do(&g, "GET", "/api/v1/files/u.txt", NULL, NULL);
    CHECK_INT_EQ(r->status, 200);
    CHECK(r->len == 9 && memcmp(r->body, "unix body", 9) == 0);
    http_free(r);
}

/* A native client on the sockets themselves: bytes over the echo stream, a datagram to time. */
static void test_native_clients(void)
{
    struct sg_addr a;
    char err[256], buf[64];
    size_t got = 0;
    int fd;
    CHECK(sg_addr_parse(echo_p.addr, &a, err, sizeof err) == SG_OK);
    CHECK(sg_connect(&a, SOCK_STREAM, 5000, &fd, err, sizeof err) == SG_OK);
    CHECK(sg_write_all(fd, "abc", 3, sg_deadline_after(5000)) == SG_OK);
    CHECK(sg_read_full(fd, buf, 3, sg_deadline_after(5000)) == SG_OK);
    CHECK(memcmp(buf, "ABC", 3) == 0);
    close(fd);

    /* sg_connect autobinds a UNIX datagram socket, so the server has somewhere to answer. */
    CHECK(sg_addr_parse(time_p.addr, &a, err, sizeof err) == SG_OK);
    CHECK(sg_connect(&a, SOCK_DGRAM, 5000, &fd, err, sizeof err) == SG_OK);
    CHECK(send(fd, "%Y", 2, 0) == 2);
    CHECK(sg_read_some(fd, buf, sizeof buf - 1, &got, sg_deadline_after(5000)) == SG_OK);
    buf[got] = '\0';
    CHECK_INT_EQ(got, 4);
    CHECK(buf[0] == '2');
    close(fd);
}

/* A socket file nobody accepts on (SIGKILLed server) is replaced; a live one is refused. */
static void test_stale_and_live_sockets(void)
{
    char sock[300], addr[300];
    const char *argv[] = {"sockgate-echo", "--listen", addr, NULL};
    struct sg_proc again, second;
    kill(echo_p.pid, SIGKILL);
    waitpid(echo_p.pid, NULL, 0);
    sg_test_forget(echo_p.pid);
    CHECK(is_socket(path_in(sock, sizeof sock, "echo.sock"))); /* left behind */
    start_on_unix(&again, "sockgate-echo", "echo.sock", NULL, NULL);
    snprintf(addr, sizeof addr, "%s", again.addr);
    CHECK(sg_proc_start(&second, argv, 3000) != 0); /* "bind ...: Address already in use" */
    CHECK_INT_EQ(sg_proc_stop(&again, 10000), 0);
}

/* SIGTERM: every program exits 0 and removes its socket files. */
static void test_clean_stop_removes_sockets(void)
{
    const char *files[] = {"echo.sock", "echo.sock.dgram", "time.sock", "exec.sock", "file.sock", "chat.sock",
                           "chat.sock.dgram"};
    char sock[300];
    gw_stop(&g);
    CHECK_INT_EQ(sg_proc_stop(&time_p, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&exec_p, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&file_p, 10000), 0);
    CHECK_INT_EQ(sg_proc_stop(&chat_p, 10000), 0);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        CHECK(access(path_in(sock, sizeof sock, files[i]), F_OK) != 0 && errno == ENOENT);
}

int main(void)
{
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    CHECK(chmod(dir, 0700) == 0);
    RUN_TEST(test_backends_listen_on_unix);
    RUN_TEST(test_gateway_reaches_unix_backends);
    RUN_TEST(test_native_clients);
    RUN_TEST(test_stale_and_live_sockets);
    RUN_TEST(test_clean_stop_removes_sockets);
    sg_test_rmtree(dir);
    return 0;
}
