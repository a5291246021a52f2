/*
 * test_balancer.c - gateway/balancer.c alone, on fixed address lists (no DNS): power of two
 * choices by outstanding calls, the avoid set, ejection (connect failure at once, hang-ups three
 * in a row), panic when nothing is healthy, back-off doubling after a failed probe, and a probe
 * that readmits an address once something listens there. The probes are real TCP connects on
 * loopback; waits are bounded loops, never timed assertions.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "balancer.h"
#include "check.h"
#include "sockgate/error.h"

/* Returns the report entry of address addr (borrowed from report), or NULL. */
static json_t *entry(json_t *report, const char *addr)
{
    size_t i;
    json_t *one;
    json_array_foreach(report, i, one)
        if (strcmp(json_string_value(json_object_get(one, "address")), addr) == 0)
            return one;
    return NULL;
}

/* Returns the state of addr ("healthy", "ejected"...) in a static buffer. */
static const char *state_of(struct balancer *b, const char *addr)
{
    static char state[32];
    json_t *r = balancer_report(b), *e = entry(r, addr);
    snprintf(state, sizeof state, "%s", e ? json_string_value(json_object_get(e, "state")) : "absent");
    json_decref(r);
    return state;
}

/* Returns an integer field of addr's report entry, -1 when absent. */
static long long field_of(struct balancer *b, const char *addr, const char *key)
{
    json_t *r = balancer_report(b), *e = entry(r, addr), *v = e ? json_object_get(e, key) : NULL;
    long long n = v ? json_integer_value(v) : -1;
    json_decref(r);
    return n;
}

static struct balancer *make(const char *list)
{
    struct balancer *b = NULL;
    char err[256];
    CHECK_INT_EQ(balancer_create("exec", list, SOCK_STREAM, &b, err, sizeof err), SG_OK);
    CHECK_INT_EQ(balancer_count(b), 3);
    return b;
}

#define A "127.0.0.2:9"
#define B "127.0.0.3:9"
#define C "127.0.0.4:9"

/* Calls held outstanding spread evenly: each pick takes the less loaded of two. */
static void test_spread_by_outstanding(void)
{
    struct balancer *b = make(A "," B "," C);
    struct bal_pick held[60];
    long long n[3], lo, hi;
    for (int i = 0; i < 60; i++)
        CHECK_INT_EQ(balancer_pick(b, 0, &held[i]), SG_OK);
    n[0] = field_of(b, A, "outstanding");
    n[1] = field_of(b, B, "outstanding");
    n[2] = field_of(b, C, "outstanding");
    lo = hi = n[0];
    for (int i = 1; i < 3; i++) {
        lo = n[i] < lo ? n[i] : lo;
        hi = n[i] > hi ? n[i] : hi;
    }
    fprintf(stderr, "60 held picks: %lld / %lld / %lld\n", n[0], n[1], n[2]);
    CHECK_INT_EQ(n[0] + n[1] + n[2], 60);
    /*
     * The less loaded of two keeps them within 2, rarely 3 (2 runs in 150 measured; 4 needs the
     * least loaded left out of the pair 4 times running); picks that ignore the load differ by
     * about 7, and ones that always take the same address by 60.
     */
    CHECK(hi - lo <= 5);
    for (int i = 0; i < 60; i++)
        balancer_done(b, &held[i], BAL_OK);
    CHECK_INT_EQ(field_of(b, A, "outstanding") + field_of(b, B, "outstanding") + field_of(b, C, "outstanding"), 0);
    CHECK_INT_EQ(field_of(b, A, "calls") + field_of(b, B, "calls") + field_of(b, C, "calls"), 60);
    balancer_free(b);
}

/* The slots a call already failed on are never picked again while others are healthy. */
static void test_avoid(void)
{
    struct balancer *b = make(A "," B "," C);
    struct bal_pick p;
    CHECK_INT_EQ(balancer_pick(b, 0, &p), SG_OK);
    balancer_done(b, &p, BAL_NEUTRAL);
    for (int i = 0; i < 50; i++) {
        struct bal_pick q;
        CHECK_INT_EQ(balancer_pick(b, UINT64_C(1) << p.slot, &q), SG_OK);
        CHECK(q.slot != p.slot);
        CHECK(balancer_is_current(b, q.slot, q.gen));
        balancer_done(b, &q, BAL_NEUTRAL);
    }
    CHECK(!balancer_is_current(b, p.slot, p.gen + 1)); /* another generation: another address */
    balancer_free(b);
}

/* Picks until one lands on addr; returns it (outstanding). */
static struct bal_pick pick_addr(struct balancer *b, const char *addr)
{
    struct bal_pick p;
    for (int i = 0; i < 1000; i++) {
        CHECK_INT_EQ(balancer_pick(b, 0, &p), SG_OK);
        if (strcmp(p.text, addr) == 0)
            return p;
        balancer_done(b, &p, BAL_NEUTRAL);
    }
    CHECK(0);
    return p;
}

/* A connect failure ejects at once; hang-ups eject at the third in a row, and a success in between resets the count. */
static void test_ejection(void)
{
    struct balancer *b = make(A "," B "," C);
    struct bal_pick p;
    p = pick_addr(b, A);
    balancer_done(b, &p, BAL_CONNECT_FAIL);
    CHECK_STR_EQ(state_of(b, A), "ejected");
    CHECK_INT_EQ(field_of(b, A, "failures"), 1);
    CHECK_INT_EQ(field_of(b, A, "ejections"), 1);
    for (int i = 0; i < 100; i++) { /* ejected: no call goes there while the others are healthy */
        CHECK_INT_EQ(balancer_pick(b, 0, &p), SG_OK);
        CHECK(strcmp(p.text, A) != 0);
        balancer_done(b, &p, BAL_OK);
    }

    for (int k = 0; k < 2; k++) {
        p = pick_addr(b, B);
        balancer_done(b, &p, BAL_BROKE);
    }
    p = pick_addr(b, B);
    balancer_done(b, &p, BAL_OK); /* resets the run */
    for (int k = 0; k < 2; k++) {
        p = pick_addr(b, B);
        balancer_done(b, &p, BAL_BROKE);
    }
    CHECK_STR_EQ(state_of(b, B), "healthy");
    CHECK(balancer_is_current(b, p.slot, p.gen));
    p = pick_addr(b, B);
    balancer_done(b, &p, BAL_BROKE);
    CHECK_STR_EQ(state_of(b, B), "ejected");
    CHECK(!balancer_is_current(b, p.slot, p.gen)); /* its pooled connections are closed, not reused */
    CHECK_INT_EQ(field_of(b, B, "failures"), 5);

    /* A draining address is ejected without a failure counted. */
    p = pick_addr(b, C);
    balancer_done(b, &p, BAL_DRAINING);
    CHECK_STR_EQ(state_of(b, C), "ejected");
    CHECK_INT_EQ(field_of(b, C, "failures"), 0);

    /* Nothing healthy left: still an address (panic), rather than a sure failure. */
    CHECK_INT_EQ(balancer_pick(b, 0, &p), SG_OK);
    balancer_done(b, &p, BAL_NEUTRAL);
    balancer_free(b);
}

/* A probe that fails doubles the back-off; one that connects readmits the address. */
static void test_probe_backoff_and_readmission(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof sin;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char live[64], list[200];
    struct balancer *b;
    struct bal_pick p;
    long long longest = 0;

    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    CHECK(bind(lfd, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(lfd, 8) == 0);
    CHECK(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(live, sizeof live, "127.0.0.1:%u", ntohs(sin.sin_port));
    snprintf(list, sizeof list, "%s,%s,%s", live, B, C); /* B and C: nothing listens on port 9 there */
    b = make(list);

    /* B refuses every probe: its next ejection is twice as long as the first (100 ms). */
    p = pick_addr(b, B);
    balancer_done(b, &p, BAL_CONNECT_FAIL);
    CHECK(field_of(b, B, "probe_in_ms") <= 100);
    for (int i = 0; i < 500 && longest <= 150; i++) { /* a bound of about 5 s, not a timing assertion */
        long long v = field_of(b, B, "probe_in_ms");
        longest = v > longest ? v : longest;
        usleep(10 * 1000);
    }
    CHECK(longest > 150);
    CHECK_STR_EQ(state_of(b, B), "ejected");

    /* The live address, ejected, is readmitted by its probe. */
    p = pick_addr(b, live);
    balancer_done(b, &p, BAL_CONNECT_FAIL);
    CHECK_STR_EQ(state_of(b, live), "ejected");
    for (int i = 0; i < 500 && strcmp(state_of(b, live), "healthy") != 0; i++)
        usleep(10 * 1000);
    CHECK_STR_EQ(state_of(b, live), "healthy");
    balancer_free(b);
    close(lfd);
}

int main(void)
{
    balancer_configure(1000, 100);
    RUN_TEST(test_spread_by_outstanding);
    RUN_TEST(test_avoid);
    RUN_TEST(test_ejection);
    RUN_TEST(test_probe_backoff_and_readmission);
    return TESTS_DONE();
}
