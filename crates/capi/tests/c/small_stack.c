/* A client's whole life on a thread whose stack is the smallest the system allows
 * (PTHREAD_STACK_MIN, 16 KiB on Linux), as a language VM's coroutines or green threads have,
 * over a context made on the main thread: no client call of the library's release build may
 * need more stack than that. The first free of a client makes its cache bins (about 19 KiB),
 * which must not pass through the stack. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memvisor.h"
#include "check.h"

static memvisor_context ctx;

static void *life(void *arg) {
    (void)arg;
    memvisor_client client;
    void *small = NULL, *page = NULL, *run = NULL;
    size_t size = 0;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &client));
    OK(memvisor_alloc(client, 100, &small));
    OK(memvisor_alloc_aligned(client, 8192, 4096, &page));
    OK(memvisor_alloc(client, (size_t)3 << 20, &run));
    OK(memvisor_client_free(client, small, &size));
    CHECK(size >= 100);
    OK(memvisor_client_free(client, page, NULL));
    OK(memvisor_free(ctx, run, NULL));
    OK(memvisor_alloc(client, 100, &small));
    OK(memvisor_free(ctx, small, NULL));
    OK(memvisor_client_trim(client));
    memvisor_client_stats cs = {.size = sizeof cs};
    OK(memvisor_client_get_stats(client, &cs));
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    OK(memvisor_client_delete(client));
    return NULL;
}

int main(void) {
    pthread_attr_t attr;
    pthread_t thread;
    OK(memvisor_context_create_reserved((size_t)8 << 20, NULL, &ctx));
    CHECK(pthread_attr_init(&attr) == 0);
    /* MEMVISOR_TEST_STACK=min: the smallest stack; otherwise 128 KiB, as the library's debug
     * build needs (its frames are several times larger). */
    const char *given = getenv("MEMVISOR_TEST_STACK");
    size_t stack = given && strcmp(given, "min") == 0 ? (size_t)PTHREAD_STACK_MIN : (size_t)128 << 10;
    CHECK(pthread_attr_setstacksize(&attr, stack) == 0);
    CHECK(pthread_create(&thread, &attr, life, NULL) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(pthread_attr_destroy(&attr) == 0);
    OK(memvisor_context_delete(ctx));
    return finish("small_stack");
}
