/* A context's and its clients' whole life on a thread whose stack is the smallest the system
 * allows (PTHREAD_STACK_MIN, 16 KiB on Linux), as a language VM's coroutines or green threads
 * have: no call of the library's release build may need more stack than that, making the
 * process's first contexts (over a caller's block and reserved) and deleting them included,
 * and every other function of the header is called there too. The first free of a client
 * makes its cache bins (about 19 KiB), which must not pass through the stack; an allocation that finds no chunk left while blocks
 * are cached works out whether giving them back makes room, which must not copy the bins
 * (12 KiB) onto the stack either. */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memvisor.h"
#include "check.h"

static memvisor_context ctx;
/* Two chunks of 64 KiB over a caller's block. */
static memvisor_context small_ctx;
static char small_block[3 << 16];

static void *life(void *arg) {
    (void)arg;
    OK(memvisor_context_create_reserved((size_t)8 << 20, NULL, &ctx));
    memvisor_config config;
    OK(memvisor_config_init(&config));
    config.chunk_size = (size_t)64 << 10;
    OK(memvisor_context_create(small_block, sizeof small_block, &config, &small_ctx));
    memvisor_client client;
    void *small = NULL, *page = NULL, *run = NULL;
    size_t size = 0;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &client));
    OK(memvisor_alloc(client, 100, &small));
    OK(memvisor_alloc_aligned(client, 8192, 4096, &page));
    OK(memvisor_alloc(client, (size_t)3 << 20, &run));
    bool owns = false;
    OK(memvisor_client_owns(client, small, &owns));
    CHECK(owns);
    OK(memvisor_size_of(client, page, &size));
    CHECK(size >= 8192);
    memvisor_client who = {0};
    OK(memvisor_context_owner(ctx, run, &who));
    CHECK(who.id == client.id);
    uint32_t flags = 0;
    OK(memvisor_context_accepted_flags(ctx, &flags));
    CHECK((flags & ~memvisor_supported_flags()) == 0);
    OK(memvisor_context_trim(ctx));
    CHECK(memvisor_version()[0] != '\0');
    CHECK(memvisor_status_message(MEMVISOR_STATUS_BLOCK_IN_USE)[0] != '\0');
    /* A refusal: a block of a live context makes no context. */
    memvisor_context nested;
    CHECK_STATUS(memvisor_context_create(run, (size_t)1 << 20, NULL, &nested),
                 MEMVISOR_STATUS_BLOCK_IN_USE);
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

    /* A context out of chunks while the client keeps cached blocks: the allocation that finds
     * no chunk left looks whether giving the cached blocks back would make room. */
    memvisor_client tight;
    OK(memvisor_client_create(small_ctx, MEMVISOR_UNLIMITED, &tight));
    void *blocks[64];
    size_t n = 0;
    for (size_t class = 16; class <= 2048 && n < 32; class += class / 2, n++) {
        OK(memvisor_alloc(tight, class, &blocks[n]));
    }
    for (size_t i = 0; i < n; i += 2) {
        OK(memvisor_client_free(tight, blocks[i], NULL));
    }
    memvisor_status st = MEMVISOR_STATUS_OK;
    while (n < 64 && (st = memvisor_alloc(tight, 12u << 10, &blocks[n])) == MEMVISOR_STATUS_OK) {
        n++;
    }
    CHECK_STATUS(st, MEMVISOR_STATUS_OUT_OF_MEMORY);
    OK(memvisor_client_delete(tight));
    OK(memvisor_context_delete(ctx));
    OK(memvisor_context_delete(small_ctx));
    return NULL;
}

int main(void) {
    pthread_attr_t attr;
    pthread_t thread;
    CHECK(pthread_attr_init(&attr) == 0);
    /* MEMVISOR_TEST_STACK=min: the smallest stack; otherwise 128 KiB, as the library's debug
     * build needs (its frames are several times larger). */
    const char *given = getenv("MEMVISOR_TEST_STACK");
    size_t stack = given && strcmp(given, "min") == 0 ? (size_t)PTHREAD_STACK_MIN : (size_t)128 << 10;
    CHECK(pthread_attr_setstacksize(&attr, stack) == 0);
    CHECK(pthread_create(&thread, &attr, life, NULL) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(pthread_attr_destroy(&attr) == 0);
    return finish("small_stack");
}
