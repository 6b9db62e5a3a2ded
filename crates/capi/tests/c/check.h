/* A tiny test harness for the C suite: CHECK counts failures and tells where. */
#ifndef MEMVISOR_TEST_CHECK_H
#define MEMVISOR_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                                \
        }                                                                              \
    } while (0)

#define CHECK_STATUS(call, expected)                                                     \
    do {                                                                                 \
        memvisor_status got_ = (call);                                                   \
        if (got_ != (expected)) {                                                        \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %s\n", __FILE__,       \
                    __LINE__, #call, (int)got_, memvisor_status_message(got_), #expected); \
            failures++;                                                                  \
        }                                                                                \
    } while (0)

#define OK(call) CHECK_STATUS(call, MEMVISOR_STATUS_OK)

/* Whether each of the `n` bytes at `p` is `value`. */
static inline int all_bytes(const void *p, size_t n, unsigned char value) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        if (c[i] != value) {
            return 0;
        }
    }
    return 1;
}

static int finish(const char *name) {
    if (failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#endif
