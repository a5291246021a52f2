/*
 * exec_drain_test.c - a draining sockgate-exec (SIGTERM with --drain): an idle connection that
 * carried a request gets EOF at once, a request in flight on another one is answered (and
 * that connection then closes), and new connections are still served until the drain ends.
 */
#include <signal.h>
#include <sys/wait.h>

#include "check.h"
#include "sockgate/error.h"
#include "xt_util.h"

/* Returns 1 while p has not exited (the drain is still on). */
static int is_running(const struct sg_proc *p)
{
    int status;
    return waitpid(p->pid, &status, WNOHANG) == 0;
}

static void run_ok(struct xt_conn *c, const char *const argv[], const char *expect)
{
    struct xt_reply r;
    xt_send_exec(c, argv, NULL, 0);
    CHECK_INT_EQ(xt_read(c, &r, 10000), SG_OK);
    xt_check_stdout(&r, expect);
    xt_reply_free(&r);
}

static void test_idle_closed_busy_answered(void)
{
    /* A long drain: every check below happens while it lasts (is_running says so), none is timed. */
    const char *const extra[] = {"--allow", "echo,sleep", "--drain", "6s", NULL};
    const char *const hello[] = {"echo", "hello", NULL};
    const char *const slow[] = {"sleep", "1", NULL};
    struct sg_proc p;
    struct xt_conn idle, busy, fresh, late;
    struct xt_reply r;

    xt_start(&p, extra);
    xt_connect(&idle, &p);
    xt_connect(&busy, &p);
    xt_connect(&fresh, &p);
    run_ok(&idle, hello, "hello\n"); /* both carried a request: the pooled connections of a gateway */
    run_ok(&busy, hello, "hello\n");
    xt_send_exec(&busy, slow, NULL, 0); /* in flight when the drain starts */
    CHECK(kill(p.pid, SIGTERM) == 0);

    /* The idle one is closed by the server, well before the drain ends. */
    CHECK_INT_EQ(xt_read(&idle, &r, 5000), SG_ERR_CLOSED);
    CHECK(is_running(&p));
    /* The one in flight gets its answer, then the server closes it too. */
    CHECK_INT_EQ(xt_read(&busy, &r, 5000), SG_OK);
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    xt_reply_free(&r);
    CHECK_INT_EQ(xt_read(&busy, &r, 5000), SG_ERR_CLOSED);
    /* A connection that never carried a request (its client may be sending one) is served, as is a new one. */
    run_ok(&fresh, hello, "hello\n");
    xt_connect(&late, &p);
    run_ok(&late, hello, "hello\n");
    CHECK(is_running(&p));
    xt_close(&idle);
    xt_close(&busy);
    xt_close(&fresh);
    xt_close(&late);
    xt_stop(&p); /* the drain ends and the server exits 0 */
}

int main(void)
{
    RUN_TEST(test_idle_closed_busy_answered);
    return TESTS_DONE();
}
