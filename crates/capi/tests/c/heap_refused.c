/* The process's allocator refusing the library's requests: every call returns success or a
 * status its documentation lists (never an abort of the process), and a refused call leaves
 * nothing half-done, seen once the allocator serves again: every block is still freeable,
 * every chunk comes back, and a block refused for a context is accepted for the next one.
 *
 * Linked with the static library and `-Wl,--wrap=malloc,...`, so that the library's calls of
 * malloc, calloc, realloc, posix_memalign, aligned_alloc and memalign come here first. Each
 * round refuses either every request from the n-th on or only the n-th, for n = 0, 1, ...
 * until a round makes no request past n. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "memvisor.h"

#define KIB ((size_t)1024)
#define CHUNK (64 * KIB)
#define CLIENTS 3
#define BLOCKS 120

/* Requests left before the refusals start; negative: none are refused. */
static long serve_before_refusing = -1;
/* Whether only one request is refused, the allocator serving the ones after it. */
static int refuse_one;
static long refusals;
/* Calls refused with `OS`, by kind: each kind must have been refused in some round. */
static long os_frees, os_client_creates, os_reserved_creates, os_block_creates;

static int refuse(void) {
    if (serve_before_refusing < 0) {
        return 0;
    }
    if (serve_before_refusing > 0) {
        serve_before_refusing--;
        return 0;
    }
    refusals++;
    if (refuse_one) {
        serve_before_refusing = -1;
    }
    return 1;
}

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
int __real_posix_memalign(void **out, size_t align, size_t size);
void *__real_aligned_alloc(size_t align, size_t size);
void *__real_memalign(size_t align, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
int __wrap_posix_memalign(void **out, size_t align, size_t size);
void *__wrap_aligned_alloc(size_t align, size_t size);
void *__wrap_memalign(size_t align, size_t size);

void *__wrap_malloc(size_t size) { return refuse() ? NULL : __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) { return refuse() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t size) { return refuse() ? NULL : __real_realloc(p, size); }
int __wrap_posix_memalign(void **out, size_t align, size_t size) {
    return refuse() ? ENOMEM : __real_posix_memalign(out, align, size);
}
void *__wrap_aligned_alloc(size_t align, size_t size) {
    return refuse() ? NULL : __real_aligned_alloc(align, size);
}
void *__wrap_memalign(size_t align, size_t size) {
    return refuse() ? NULL : __real_memalign(align, size);
}

static memvisor_config chunked(void) {
    memvisor_config c;
    memvisor_config_init(&c);
    c.chunk_size = CHUNK;
    c.flags = MEMVISOR_FLAG_STATISTICS;
    return c;
}

static memvisor_context_stats context_stats(memvisor_context ctx) {
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    return s;
}

/* One round: the allocator refuses as set while the calls run, then serves again. */
static void round_refusing(long n, int one, memvisor_context mine, void *memory, size_t len) {
    memvisor_config c = chunked();
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(256 * CHUNK, &c, &ctx));
    memvisor_client k[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &k[i]));
    }
    void *blocks[BLOCKS] = {0};
    int holder[BLOCKS] = {0};
    int freed[BLOCKS] = {0};

    refusals = 0;
    refuse_one = one;
    serve_before_refusing = n;

    /* Allocations: small, pages and runs of chunks, spread over the clients. */
    for (int i = 0; i < BLOCKS; i++) {
        size_t size = i % 5 == 0 ? CHUNK + 100 : i % 3 == 0 ? 5000 : 100;
        void *p = NULL;
        memvisor_status st = memvisor_alloc(k[i % CLIENTS], size, &p);
        CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
        if (st == MEMVISOR_STATUS_OK) {
            blocks[i] = p;
            holder[i] = i % CLIENTS;
        } else {
            CHECK(p == NULL);
        }
    }
    /* Frees through the context make a chunk's remote-free bits: `OS` keeps the block. */
    for (int i = 0; i < BLOCKS; i += 2) {
        if (blocks[i] == NULL) {
            continue;
        }
        size_t size = 0;
        memvisor_status st = memvisor_free(ctx, blocks[i], &size);
        CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
        if (st == MEMVISOR_STATUS_OK) {
            freed[i] = 1;
        } else {
            os_frees++;
            CHECK(size == 0);
            OK(memvisor_size_of(k[holder[i]], blocks[i], &size));
        }
    }
    /* Calls whose documentation lists no `OS`. */
    memvisor_context_stats cs = {.size = sizeof cs};
    OK(memvisor_context_get_stats(ctx, &cs));
    uint32_t flags = 0;
    OK(memvisor_context_accepted_flags(ctx, &flags));
    OK(memvisor_context_trim(ctx));
    for (int i = 1; i < BLOCKS; i += 2) {
        if (blocks[i] != NULL) {
            memvisor_client who = {0};
            OK(memvisor_context_owner(ctx, blocks[i], &who));
            CHECK(who.id == k[holder[i]].id);
            bool owns = false;
            OK(memvisor_client_owns(k[holder[i]], blocks[i], &owns));
            CHECK(owns);
        }
    }
    for (int i = 0; i < CLIENTS; i++) {
        memvisor_client_stats s = {.size = sizeof s};
        OK(memvisor_client_get_stats(k[i], &s));
        OK(memvisor_client_trim(k[i]));
    }
    /* A client, and contexts over a reservation and over a caller's block. */
    memvisor_client extra = {0};
    memvisor_status st = memvisor_client_create(ctx, 0, &extra);
    CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
    int have_extra = st == MEMVISOR_STATUS_OK;
    os_client_creates += st == MEMVISOR_STATUS_OS;
    memvisor_context reserved = {0};
    st = memvisor_context_create_reserved(16 * CHUNK, &c, &reserved);
    CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
    int have_reserved = st == MEMVISOR_STATUS_OK;
    os_reserved_creates += st == MEMVISOR_STATUS_OS;
    memvisor_context over_block = {0};
    st = memvisor_context_create(memory, len, &c, &over_block);
    CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
    int have_over_block = st == MEMVISOR_STATUS_OK;
    os_block_creates += st == MEMVISOR_STATUS_OS;
    /* Deleting needs no memory. */
    if (have_extra) {
        OK(memvisor_client_delete(extra));
    }
    if (have_reserved) {
        OK(memvisor_context_delete(reserved));
    }
    if (have_over_block) {
        OK(memvisor_context_delete(over_block));
    }
    /* A context made before the round: its client comes and goes. */
    memvisor_client visitor = {0};
    st = memvisor_client_create(mine, MEMVISOR_UNLIMITED, &visitor);
    CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
    if (st == MEMVISOR_STATUS_OK) {
        void *p = NULL;
        st = memvisor_alloc(visitor, 100, &p);
        CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_OS);
        OK(memvisor_client_delete(visitor));
    }

    serve_before_refusing = -1;

    /* Nothing was left half-done: the caller's block is free for a context again, every block
     * kept is freed, and every chunk comes back. */
    OK(memvisor_context_create(memory, len, &c, &over_block));
    OK(memvisor_context_delete(over_block));
    for (int i = 0; i < BLOCKS; i++) {
        if (blocks[i] != NULL && !freed[i]) {
            size_t size = 0;
            OK(memvisor_client_free(k[holder[i]], blocks[i], &size));
            CHECK(size > 0);
        }
    }
    cs = context_stats(ctx);
    CHECK(cs.clients == CLIENTS);
    for (int i = 0; i < CLIENTS; i++) {
        OK(memvisor_client_trim(k[i]));
        memvisor_client_stats s = {.size = sizeof s};
        OK(memvisor_client_get_stats(k[i], &s));
        CHECK(s.live_blocks == 0 && s.used_bytes == 0 && s.chunks == 0);
        OK(memvisor_client_delete(k[i]));
    }
    cs = context_stats(ctx);
    CHECK(cs.held_chunks == 0 && cs.free_chunks == cs.chunks && cs.used_bytes == 0);
    CHECK(cs.live_blocks == 0 && cs.clients == 0);
    OK(memvisor_context_delete(ctx));
    memvisor_context_stats ms = context_stats(mine);
    CHECK(ms.clients == 0 && ms.held_chunks == 0);
}

int main(void) {
    size_t len = 4 * CHUNK;
    void *memory = malloc(len);
    CHECK(memory != NULL);
    memvisor_config c = chunked();
    memvisor_context mine;
    OK(memvisor_context_create_reserved(16 * CHUNK, &c, &mine));
    long rounds = 0;
    for (int one = 0; one < 2; one++) {
        for (long n = 0; failures == 0; n++) {
            round_refusing(n, one, mine, memory, len);
            rounds++;
            if (refusals == 0) {
                break;
            }
        }
    }
    /* The refusals reached each kind of call that asks the allocator for memory. */
    CHECK(os_frees > 0 && os_client_creates > 0 && os_reserved_creates > 0);
    CHECK(os_block_creates > 0);
    printf("%ld rounds; refused with OS: %ld frees, %ld client creates, %ld context creates\n",
           rounds, os_frees, os_client_creates, os_reserved_creates + os_block_creates);
    OK(memvisor_context_delete(mine));
    free(memory);
    return finish("heap_refused");
}
