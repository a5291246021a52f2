/* exec_protocol_test.c - sockgate-exec's wire behaviour: the tutorial's exchange, framed requests, errors. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/hash.h"
#include "sockgate/net.h"
#include "xt_util.h"

static struct sg_proc server;

/* The output of `seq 1 n`, built here to compare with what the server sends. */
static char *seq_text(unsigned n, size_t *len)
{
    size_t cap = (size_t)n * 8 + 16, used = 0;
    char *s = malloc(cap);
    CHECK(s != NULL);
    for (unsigned i = 1; i <= n; i++)
        used += (size_t)snprintf(s + used, cap - used, "%u\n", i);
    *len = used;
    return s;
}

static void md5_of(const void *buf, size_t len, char hex[SG_MD5_HEX])
{
    struct sg_hash h;
    char sha[SG_SHA256_HEX];
    CHECK_INT_EQ(sg_hash_init(&h, 1), SG_OK);
    sg_hash_update(&h, buf, len);
    sg_hash_final(&h, sha, hex);
}

/* The tutorial's client, step by step: raw command out; 4-byte size, JSON header, body in. */
static void test_tutorial_exchange_several_mib(void)
{
    struct xt_conn c;
    uint8_t len_bytes[4];
    uint32_t header_len;
    char *header_text, *body, md5[SG_MD5_HEX];
    size_t want_len;
    char *want = seq_text(1000000, &want_len);
    json_t *hdr;
    json_error_t jerr;
    int64_t deadline = sg_now_ms() + 60000;

    CHECK(want_len > 6 * 1024 * 1024);
    xt_connect(&c, &server);
    xt_send_raw(&c, "seq 1 1000000", 13);
    CHECK_INT_EQ(sg_read_full(c.fd, len_bytes, 4, deadline), SG_OK);
    header_len = (uint32_t)len_bytes[0] | (uint32_t)len_bytes[1] << 8 | (uint32_t)len_bytes[2] << 16 |
                 (uint32_t)len_bytes[3] << 24;
    CHECK(header_len >= 2 && header_len < 65536);
    header_text = malloc(header_len);
    CHECK(header_text != NULL);
    CHECK_INT_EQ(sg_read_full(c.fd, header_text, header_len, deadline), SG_OK);
    hdr = json_loadb(header_text, header_len, 0, &jerr);
    CHECK(hdr != NULL);
    CHECK_INT_EQ(json_integer_value(json_object_get(hdr, "total_size")), want_len);
    CHECK_INT_EQ(json_integer_value(json_object_get(hdr, "stdout_size")), want_len);
    CHECK_INT_EQ(json_integer_value(json_object_get(hdr, "stderr_size")), 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(hdr, "exit_code")), 0);
    CHECK(json_is_false(json_object_get(hdr, "truncated")));
    CHECK(json_is_false(json_object_get(hdr, "timed_out")));
    CHECK(json_object_get(hdr, "signal") == NULL);
    CHECK(json_is_integer(json_object_get(hdr, "duration_ms")));
    body = malloc(want_len);
    CHECK(body != NULL);
    CHECK_INT_EQ(sg_read_full(c.fd, body, want_len, deadline), SG_OK);
    CHECK(memcmp(body, want, want_len) == 0);
    md5_of(body, want_len, md5);
    CHECK_STR_EQ(json_string_value(json_object_get(hdr, "md5")), md5);
    json_decref(hdr);
    free(header_text);
    free(body);
    free(want);
    xt_close(&c);
}

/* Several requests, raw and framed, take turns on one connection. */
static void test_many_requests_one_connection(void)
{
    struct xt_conn c;
    struct xt_reply r;
    const char *const framed[] = {"echo", "framed", "one", NULL};
    xt_connect(&c, &server);
    for (int round = 0; round < 3; round++) {
        xt_send_raw(&c, "echo raw 'two words'", 20);
        CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
        xt_check_stdout(&r, "raw two words\n");
        xt_reply_free(&r);
        xt_send_exec(&c, framed, NULL, 0);
        CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
        xt_check_stdout(&r, "framed one\n");
        xt_reply_free(&r);
    }
    /* A two-byte raw line could be the start of a frame: the server waits briefly, then runs it. */
    xt_send_raw(&c, "ls", 2);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    xt_reply_free(&r);
    /* A netcat-style line ends with a newline that is not part of the last argument. */
    xt_send_raw(&c, "echo end\r\n", 10);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    xt_check_stdout(&r, "end\n");
    xt_reply_free(&r);
    xt_close(&c);
}

/* Frames sent back to back in one write get their replies in order, ids included. */
static void test_pipelined_frames_and_ids(void)
{
    struct xt_conn c;
    struct xt_reply r;
    json_t *a = json_pack("{s:s, s:[s, s], s:s}", "op", "exec", "argv", "echo", "first", "id", "req-1");
    json_t *b = json_pack("{s:[s, s], s:i}", "argv", "echo", "second", "id", 42);
    uint8_t *ea = NULL, *eb = NULL, both[512];
    size_t la = 0, lb = 0;
    CHECK_INT_EQ(sg_frame_encode_header(a, 0, &ea, &la), SG_OK);
    CHECK_INT_EQ(sg_frame_encode_header(b, 0, &eb, &lb), SG_OK);
    CHECK(la + lb <= sizeof both);
    memcpy(both, ea, la);
    memcpy(both + la, eb, lb);
    xt_connect(&c, &server);
    xt_send_raw(&c, both, la + lb);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    xt_check_stdout(&r, "first\n");
    CHECK_STR_EQ(json_string_value(json_object_get(r.hdr, "id")), "req-1");
    xt_reply_free(&r);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    xt_check_stdout(&r, "second\n");
    CHECK_INT_EQ(xt_int(&r, "id"), 42);
    xt_reply_free(&r);
    xt_close(&c);
    free(ea);
    free(eb);
    json_decref(a);
    json_decref(b);
}

/* The frame body is the command's stdin, streamed: several MiB through cat come back unchanged. */
static void test_stdin_from_body(void)
{
    size_t n = 3 * 1024 * 1024;
    uint8_t *data = malloc(n);
    const char *const cat[] = {"cat", NULL}, *const wc[] = {"wc", "-c", NULL};
    struct xt_reply r;
    CHECK(data != NULL);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7 + i / 251);
    xt_exec(&server, cat, data, n, &r);
    CHECK(xt_err_code(&r) == NULL);
    CHECK_INT_EQ(xt_int(&r, "stdout_size"), n);
    CHECK_INT_EQ(r.len, n);
    CHECK(memcmp(r.body, data, n) == 0);
    xt_reply_free(&r);
    xt_exec(&server, wc, data, n, &r);
    xt_check_stdout(&r, "3145728\n");
    xt_reply_free(&r);
    free(data);
}

/* Output is bytes, not text: NUL and 0xff come through, and so does every byte value. */
static void test_binary_output(void)
{
    const char *const pf[] = {"printf", "\\000\\001\\377\\n", NULL}, *const cat[] = {"cat", NULL};
    uint8_t all[256];
    struct xt_reply r;
    xt_exec(&server, pf, NULL, 0, &r);
    CHECK_INT_EQ(xt_int(&r, "stdout_size"), 4);
    CHECK(r.len == 4 && memcmp(r.body, "\0\1\377\n", 4) == 0);
    xt_reply_free(&r);
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    xt_exec(&server, cat, all, sizeof all, &r);
    CHECK_INT_EQ(r.len, 256);
    CHECK(memcmp(r.body, all, 256) == 0);
    xt_reply_free(&r);
}

/* stdout comes first, stderr after it, each counted; the exit code is the command's. */
static void test_stderr_and_exit_code(void)
{
    const char *const ls[] = {"ls", "/usr", "/no-such-dir-for-sockgate", NULL};
    struct xt_reply r;
    long long out, err;
    xt_exec(&server, ls, NULL, 0, &r);
    CHECK(xt_err_code(&r) == NULL);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 2);
    out = xt_int(&r, "stdout_size");
    err = xt_int(&r, "stderr_size");
    CHECK(out > 0 && err > 0 && (size_t)(out + err) == r.len);
    CHECK(memmem(r.body, (size_t)out, "bin\n", 4) != NULL);
    CHECK(memmem(r.body + out, (size_t)err, "no-such-dir-for-sockgate", 24) != NULL);
    xt_reply_free(&r);
}

/* A refused command: 127, command_not_allowed, the message as body, and the connection goes on. */
static void test_refused_keeps_connection(void)
{
    struct xt_conn c;
    struct xt_reply r;
    const char *const rm[] = {"rm", "-rf", "/tmp/nothing", NULL}, *const ok[] = {"echo", "still here", NULL};
    static const char body[] = "0123456789abcdef";
    xt_connect(&c, &server);
    xt_send_raw(&c, "rm -rf /", 8);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "command_not_allowed");
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 127);
    CHECK_STR_EQ((char *)r.body, "command not allowed: 'rm'\n");
    CHECK_INT_EQ(xt_int(&r, "total_size"), r.len);
    xt_reply_free(&r);
    /* A refused request with a stdin body: the body is skipped, so the next request is read right. */
    xt_send_exec(&c, rm, body, sizeof body - 1);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "command_not_allowed");
    xt_reply_free(&r);
    xt_send_exec(&c, ok, NULL, 0);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    xt_check_stdout(&r, "still here\n");
    xt_reply_free(&r);
    xt_close(&c);
}

/* Malformed requests get an invalid_request error each, and the connection stays usable. */
static void test_malformed_requests(void)
{
    const char *bad[] = {
        "{\"op\":\"exec\"}",
        "{\"argv\":\"echo hi\"}",
        "{\"argv\":[]}",
        "{\"argv\":[\"\"]}",
        "{\"argv\":[\"echo\", 5]}",
        "{\"argv\":[\"echo\"], \"timeout_ms\": 0}",
        "{\"argv\":[\"echo\"], \"timeout_ms\": -5}",
        "{\"argv\":[\"echo\"], \"timeout_ms\": \"soon\"}",
        "{\"op\":\"upload\", \"argv\":[\"echo\"]}",
        "{\"op\":7, \"argv\":[\"echo\"], \"total_size\": 3}",
    };
    struct xt_conn c;
    struct xt_reply r;
    const char *const ok[] = {"echo", "ok", NULL};
    xt_connect(&c, &server);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_error_t jerr;
        json_t *h = json_loads(bad[i], 0, &jerr);
        int has_body = json_object_get(h, "total_size") != NULL;
        CHECK(h != NULL);
        xt_send_frame(&c, h, has_body ? "abc" : NULL, has_body ? 3 : 0);
        json_decref(h);
        CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
        if (!xt_err_code(&r) || strcmp(xt_err_code(&r), "invalid_request") != 0)
            fprintf(stderr, "request %s got %s\n", bad[i], xt_err_code(&r) ? xt_err_code(&r) : "a result");
        CHECK_STR_EQ(xt_err_code(&r), "invalid_request");
        CHECK(r.len > 1 && r.body[r.len - 1] == '\n');
        xt_reply_free(&r);
    }
    xt_send_raw(&c, " \t \n", 4);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "invalid_request");
    CHECK(strstr((char *)r.body, "empty") != NULL);
    xt_reply_free(&r);
    xt_send_raw(&c, "echo 'unterminated", 18);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "invalid_request");
    CHECK(strstr((char *)r.body, "unterminated single quote") != NULL);
    xt_reply_free(&r);
    xt_send_exec(&c, ok, NULL, 0);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    xt_check_stdout(&r, "ok\n");
    xt_reply_free(&r);
    xt_close(&c);
}

/* A broken frame gets a protocol_error frame, then the connection closes. */
static void test_broken_frame_closes(void)
{
    static const uint8_t broken[] = {10, 0, 0, 0, '{', 'n', 'o', 't', ' ', 'j', 's', 'o', 'n', '}'};
    struct xt_conn c;
    struct xt_reply r;
    xt_connect(&c, &server);
    xt_send_raw(&c, broken, sizeof broken);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "protocol_error");
    xt_reply_free(&r);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_ERR_CLOSED);
    xt_close(&c);
}

/* A stdin body over --max-input is refused before a byte of it is read, and the connection closes. */
static void test_stdin_over_limit(void)
{
    struct xt_conn c;
    struct xt_reply r;
    json_t *h = json_pack("{s:[s], s:I}", "argv", "cat", "total_size", (json_int_t)5 * 1024 * 1024);
    uint8_t *hb = NULL;
    size_t hl = 0;
    CHECK_INT_EQ(sg_frame_encode_header(h, 0, &hb, &hl), SG_OK);
    xt_connect(&c, &server);
    xt_send_raw(&c, hb, hl);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "too_large");
    xt_reply_free(&r);
    CHECK_INT_EQ(xt_read(&c, &r, 10000), SG_ERR_CLOSED);
    xt_close(&c);
    free(hb);
    json_decref(h);
}

/* Commands see PATH and LANG and nothing else of the server's environment. */
static void test_environment_scrubbed(void)
{
    const char *const env[] = {"printenv", NULL};
    struct xt_reply r;
    char *line, *save = NULL;
    int lines = 0, has_path = 0, has_lang = 0;
    xt_exec(&server, env, NULL, 0, &r);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    for (line = strtok_r((char *)r.body, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        has_path |= strcmp(line, "PATH=/usr/local/bin:/usr/bin:/bin") == 0;
        has_lang |= strncmp(line, "LANG=", 5) == 0;
    }
    CHECK_INT_EQ(lines, 2);
    CHECK(has_path && has_lang);
    xt_reply_free(&r);
}

/* Without --workdir commands run in a private directory that is gone once the server stops. */
static void test_private_workdir_removed(void)
{
    const char *const pwd[] = {"pwd", NULL};
    struct xt_reply r;
    struct stat st;
    char dir[4096];
    CHECK_INT_EQ(xt_zombies_of(server.pid), 0);
    xt_exec(&server, pwd, NULL, 0, &r);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    CHECK(r.len > 1 && r.len < sizeof dir);
    snprintf(dir, sizeof dir, "%.*s", (int)r.len - 1, (char *)r.body);
    xt_reply_free(&r);
    CHECK(strstr(dir, "/sockgate-exec-") != NULL);
    CHECK(stat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_INT_EQ(st.st_mode & 0777, 0700);
    xt_stop(&server);
    CHECK(stat(dir, &st) != 0);
}

/* Returns the private workdir of srv, asked with pwd, into dir. */
static void workdir_of(const struct sg_proc *srv, char *dir, size_t cap)
{
    const char *const pwd[] = {"pwd", NULL};
    struct xt_reply r;
    xt_exec(srv, pwd, NULL, 0, &r);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    CHECK(r.len > 1 && r.len < cap);
    snprintf(dir, cap, "%.*s", (int)r.len - 1, (char *)r.body);
    xt_reply_free(&r);
}

/* Makes tmp/name a directory last modified a minute ago; returns a descriptor of it. */
static int old_dir(const char *tmp, const char *name)
{
    char path[4096];
    struct timespec ago[2];
    int fd;
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    CHECK(mkdir(path, 0700) == 0);
    fd = open(path, O_RDONLY | O_DIRECTORY);
    CHECK(fd >= 0);
    clock_gettime(CLOCK_REALTIME, &ago[0]);
    ago[0].tv_sec -= 60;
    ago[1] = ago[0];
    CHECK(futimens(fd, ago) == 0);
    return fd;
}

/*
 * The workdir of a server killed with SIGKILL (no destroy ran) is removed by
 * the next server's start; a live server's (locked), a fresh one and other
 * names stay.
 */
static void test_killed_servers_workdir_swept(void)
{
    const char *const args[] = {"--allow", "pwd", NULL};
    char tmp[256], dead[4096], mine[4096], path[4096];
    struct timespec ago[2];
    struct sg_proc a, b;
    struct stat st;
    int held, other, status = 0;

    CHECK(sg_test_tmpdir(tmp, sizeof tmp) == 0);
    CHECK(setenv("TMPDIR", tmp, 1) == 0);
    xt_start(&a, args);
    workdir_of(&a, dead, sizeof dead);
    CHECK(strncmp(dead, tmp, strlen(tmp)) == 0);
    CHECK(kill(a.pid, SIGKILL) == 0);
    CHECK(waitpid(a.pid, &status, 0) == a.pid);
    sg_test_forget(a.pid);
    a.pid = -1;
    CHECK(stat(dead, &st) == 0); /* left behind: nothing ran at its death */
    clock_gettime(CLOCK_REALTIME, &ago[0]);
    ago[0].tv_sec -= 60;
    ago[1] = ago[0];
    CHECK(utimensat(AT_FDCWD, dead, ago, 0) == 0);

    held = old_dir(tmp, "sockgate-exec-held");
    CHECK(flock(held, LOCK_EX | LOCK_NB) == 0); /* as a living server holds its own */
    other = old_dir(tmp, "not-sockgate-exec");
    snprintf(path, sizeof path, "%s/sockgate-exec-fresh", tmp);
    CHECK(mkdir(path, 0700) == 0);

    xt_start(&b, args);
    workdir_of(&b, mine, sizeof mine);
    CHECK(stat(dead, &st) != 0 && errno == ENOENT);
    CHECK(stat(mine, &st) == 0);
    CHECK(stat(path, &st) == 0);
    snprintf(path, sizeof path, "%s/sockgate-exec-held", tmp);
    CHECK(stat(path, &st) == 0);
    snprintf(path, sizeof path, "%s/not-sockgate-exec", tmp);
    CHECK(stat(path, &st) == 0);
    xt_stop(&b);
    CHECK(stat(mine, &st) != 0);
    close(held);
    close(other);
    unsetenv("TMPDIR");
    sg_test_rmtree(tmp);
}

/* Connections past --max-conns get a busy error frame and are closed; the ones inside go on. */
static void test_busy_past_max_conns(void)
{
    struct sg_proc small;
    struct xt_conn a, b;
    struct xt_reply r;
    const char *const args[] = {"--allow", "echo", "--max-conns", "1", NULL};
    const char *const hi[] = {"echo", "hi", NULL};
    xt_start(&small, args);
    xt_connect(&a, &small);
    xt_connect(&b, &small);
    CHECK_INT_EQ(xt_read(&b, &r, 10000), SG_OK);
    CHECK_STR_EQ(xt_err_code(&r), "busy");
    xt_reply_free(&r);
    CHECK_INT_EQ(xt_read(&b, &r, 10000), SG_ERR_CLOSED);
    xt_close(&b);
    xt_send_exec(&a, hi, NULL, 0);
    CHECK_INT_EQ(xt_read(&a, &r, 10000), SG_OK);
    xt_check_stdout(&r, "hi\n");
    xt_reply_free(&r);
    xt_close(&a);
    xt_stop(&small);
}

/* An allowed program removed after start-up: not_found with exit code 127, and the server goes on. */
static void test_allowed_program_gone(void)
{
    struct sg_proc srv;
    struct xt_reply r;
    char dir[256], path[512], copy_cmd[1024];
    const char *args[] = {"--allow", path, NULL};
    const char *const argv[] = {"mytrue", NULL};
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(path, sizeof path, "%s/mytrue", dir);
    snprintf(copy_cmd, sizeof copy_cmd, "cp /bin/true '%s'", path);
    CHECK_INT_EQ(system(copy_cmd), 0);
    xt_start(&srv, args);
    xt_exec(&srv, argv, NULL, 0, &r);
    CHECK(xt_err_code(&r) == NULL);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    xt_reply_free(&r);
    CHECK(unlink(path) == 0);
    xt_exec(&srv, argv, NULL, 0, &r);
    CHECK_STR_EQ(xt_err_code(&r), "not_found");
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 127);
    xt_reply_free(&r);
    xt_stop(&srv);
    sg_test_rmtree(dir);
}

int main(void)
{
    const char *const args[] = {"--allow", "echo,seq,cat,printf,wc,ls,pwd,printenv", "--max-input", "4M", NULL};
    xt_start(&server, args);
    RUN_TEST(test_tutorial_exchange_several_mib);
    RUN_TEST(test_many_requests_one_connection);
    RUN_TEST(test_pipelined_frames_and_ids);
    RUN_TEST(test_stdin_from_body);
    RUN_TEST(test_binary_output);
    RUN_TEST(test_stderr_and_exit_code);
    RUN_TEST(test_refused_keeps_connection);
    RUN_TEST(test_malformed_requests);
    RUN_TEST(test_broken_frame_closes);
    RUN_TEST(test_stdin_over_limit);
    RUN_TEST(test_environment_scrubbed);
    RUN_TEST(test_busy_past_max_conns);
    RUN_TEST(test_allowed_program_gone);
    RUN_TEST(test_killed_servers_workdir_swept);
    RUN_TEST(test_private_workdir_removed); /* stops the server: keep it last */
    return TESTS_DONE();
}
