/* check.h - assertions for test binaries: a failed check prints where and why, then exits 1. */
#ifndef SOCKGATE_TEST_CHECK_H
#define SOCKGATE_TEST_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: %s: CHECK failed: %s\n", __FILE__, __LINE__, __func__, \
                    #cond);                                                               \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                  \
    do {                                                                                    \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                     \
        if (check_a_ != check_b_) {                                                         \
            fprintf(stderr, "%s:%d: %s: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, \
                    __LINE__, __func__, #a, #b, check_a_, check_b_);                        \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                     \
    do {                                                                                       \
        const char *check_a_ = (a), *check_b_ = (b);                                           \
        if (!check_a_ || !check_b_ || strcmp(check_a_, check_b_) != 0) {                       \
            fprintf(stderr, "%s:%d: %s: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__, \
                    __LINE__, __func__, #a, #b, check_a_ ? check_a_ : "(null)",                \
                    check_b_ ? check_b_ : "(null)");                                           \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

/* Runs one test function and prints its name, so a failure shows which case broke. */
#define RUN_TEST(fn)                                  \
    do {                                              \
        fprintf(stderr, "-- %s\n", #fn);              \
        fn();                                         \
        sg_tests_passed_++;                           \
    } while (0)

static int sg_tests_passed_ __attribute__((unused));

/* Prints the closing line ctest logs and returns the exit status for main(). */
#define TESTS_DONE()                                                   \
    (fprintf(stderr, "%d passed, 0 failed\n", sg_tests_passed_), 0)

#endif
