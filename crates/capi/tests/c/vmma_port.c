/* A libvmma program moved to libmemvisor: every step of libvmma's description (a context over
 * a caller's block, its flags, clients made and deleted out of the order they were made in
 * (another order in each context of three clients), blocks allocated,
 * tested for ownership, sized and freed through the context, statistics read after each step)
 * in libmemvisor's terms, over blocks of every kind a C program has: on the stack, static,
 * mmap'd, with an unaligned start, an odd length, too small, and of exactly one chunk. The
 * statistics are checked against what the program knows after each step. */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <memvisor.h>

#include "check.h"

#define KIB ((size_t)1 << 10)
#define CHUNK (64 * KIB)
#define MAX_BLOCKS 64

/* What the program knows of one client. */
typedef struct {
    memvisor_client handle;
    void *blocks[MAX_BLOCKS];
    size_t sizes[MAX_BLOCKS];
    size_t live;
    uint64_t allocations;
    uint64_t frees;
} client_model;

static size_t used_of(const client_model *m) {
    size_t used = 0;
    for (size_t i = 0; i < m->live; i++) {
        used += m->sizes[i];
    }
    return used;
}

/* The client's statistics agree with what the program allocated and freed through it. */
static void check_client(const client_model *m) {
    memvisor_client_stats cs = {.size = sizeof cs};
    OK(memvisor_client_get_stats(m->handle, &cs));
    CHECK(cs.size == sizeof cs);
    CHECK(cs.live_blocks == m->live);
    CHECK(cs.used_bytes == used_of(m));
    CHECK(cs.allocations == m->allocations);
    CHECK(cs.frees == m->frees);
    CHECK(cs.total_bytes == cs.chunks * CHUNK);
    CHECK(cs.free_bytes == cs.total_bytes - cs.used_bytes);
    CHECK(cs.cached_bytes <= cs.free_bytes);
    /* libvmma's vmma_populate_cached_blocks: a count of freed blocks kept, apart from the
     * live ones, each of at least 16 bytes. */
    CHECK((cs.cached_blocks == 0) == (cs.cached_bytes == 0));
    CHECK(cs.cached_blocks * MEMVISOR_MIN_ALIGN <= cs.cached_bytes);
    CHECK(cs.peak_used_bytes >= cs.used_bytes);
    CHECK(cs.pinned_chunks <= 1 && cs.cached_chunks <= cs.pinned_chunks);
    CHECK(cs.pinned_bytes == cs.pinned_chunks * CHUNK);
    CHECK(cs.largest_free_block <= cs.free_bytes);
    CHECK(cs.quota == MEMVISOR_UNLIMITED);
    CHECK((cs.live_blocks == 0) == (cs.used_bytes == 0));
}

/* The context's statistics agree with its clients' and with what the program knows. */
static void check_context(memvisor_context ctx, size_t chunks, const client_model *clients,
                          size_t n, uint32_t flags) {
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.size == sizeof s);
    CHECK(s.chunk_size == CHUNK);
    CHECK(s.chunks == chunks);
    CHECK(s.total_bytes == chunks * CHUNK);
    CHECK(s.held_chunks + s.free_chunks == s.chunks);
    CHECK(s.free_bytes == s.free_chunks * CHUNK);
    CHECK(s.cached_chunks <= s.free_chunks);
    CHECK(s.clients == n);
    CHECK(s.accepted_flags == flags);
    CHECK(s.max_block_size == chunks * CHUNK);
    CHECK(s.largest_free_block <= s.free_bytes);
    size_t held = 0, used = 0, live = 0, cached = 0, pinned = 0;
    for (size_t i = 0; i < n; i++) {
        memvisor_client_stats cs = {.size = sizeof cs};
        OK(memvisor_client_get_stats(clients[i].handle, &cs));
        held += cs.chunks;
        used += cs.used_bytes;
        live += cs.live_blocks;
        cached += cs.cached_bytes;
        pinned += cs.pinned_chunks;
    }
    CHECK(s.held_chunks == held);
    if (flags & MEMVISOR_FLAG_STATISTICS) {
        CHECK(s.used_bytes == used);
        CHECK(s.live_blocks == live);
        CHECK(s.cached_bytes == cached);
        CHECK(s.pinned_chunks == pinned);
    } else {
        CHECK(s.used_bytes == MEMVISOR_UNLIMITED);
        CHECK(s.live_blocks == MEMVISOR_UNLIMITED);
        CHECK(s.cached_bytes == MEMVISOR_UNLIMITED);
        CHECK(s.pinned_chunks == MEMVISOR_UNLIMITED);
    }
    if (n == 0) {
        CHECK(s.held_chunks == 0);
        CHECK(s.largest_free_block == s.max_block_size);
    }
}

static void alloc_in(client_model *m, size_t size) {
    void *p = NULL;
    OK(memvisor_alloc(m->handle, size, &p));
    if (p == NULL || m->live == MAX_BLOCKS) {
        failures++;
        return;
    }
    CHECK((uintptr_t)p % MEMVISOR_MIN_ALIGN == 0);
    size_t got = 0;
    OK(memvisor_size_of(m->handle, p, &got));
    CHECK(got >= size);
    memset(p, 0x5a, got);
    bool owns = false;
    OK(memvisor_client_owns(m->handle, p, &owns));
    CHECK(owns);
    m->blocks[m->live] = p;
    m->sizes[m->live] = got;
    m->live++;
    m->allocations++;
}

/* Frees block `i` of `m` through the context, as libvmma's vmma_free does, and takes it in at
 * once with a trim, so that the statistics count it freed. */
static void free_through_context(memvisor_context ctx, client_model *m, size_t i) {
    void *p = m->blocks[i];
    size_t size = 0;
    memvisor_context_stats before = {.size = sizeof before};
    OK(memvisor_context_get_stats(ctx, &before));
    OK(memvisor_free(ctx, p, &size));
    CHECK(size == m->sizes[i]);
    /* Not live any more: every function refuses it, and nothing is written. */
    bool owns = true;
    OK(memvisor_client_owns(m->handle, p, &owns));
    CHECK(!owns);
    size = 7;
    CHECK_STATUS(memvisor_free(ctx, p, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_client_free(m->handle, p, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_size_of(m->handle, p, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK(size == 7);
    memvisor_client who = {7};
    CHECK_STATUS(memvisor_context_owner(ctx, p, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK(who.id == 7);
    /* Until the client takes it in, its statistics count it as a live block, its bytes as
     * used, and not as a free (as the header says). */
    check_client(m);
    memvisor_context_stats after = {.size = sizeof after};
    OK(memvisor_context_get_stats(ctx, &after));
    CHECK(after.used_bytes == before.used_bytes && after.live_blocks == before.live_blocks);
    m->blocks[i] = m->blocks[m->live - 1];
    m->sizes[i] = m->sizes[m->live - 1];
    m->live--;
    m->frees++;
    OK(memvisor_client_trim(m->handle));
    check_client(m);
    OK(memvisor_client_owns(m->handle, p, &owns));
    CHECK(!owns);
    CHECK_STATUS(memvisor_free(ctx, p, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
}

/* Every kind of address asked of every function that takes one: the right client's block,
 * another client's, another context's, a pointer just past a block, inside a freed one. */
static void ownership(memvisor_context ctx, client_model *a, client_model *b,
                      memvisor_context other_ctx, client_model *other) {
    void *pa = a->blocks[0];
    void *pb = b->blocks[0];
    void *po = other->blocks[0];
    bool owns = true;
    size_t size = 7;
    memvisor_client who = {0};

    OK(memvisor_client_owns(a->handle, pa, &owns));
    CHECK(owns);
    OK(memvisor_context_owner(ctx, pa, &who));
    CHECK(who.id == a->handle.id);
    OK(memvisor_context_owner(ctx, pb, &who));
    CHECK(who.id == b->handle.id);

    /* Another client's block. */
    OK(memvisor_client_owns(a->handle, pb, &owns));
    CHECK(!owns);
    size = 7;
    CHECK_STATUS(memvisor_size_of(a->handle, pb, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK(size == 7);
    CHECK_STATUS(memvisor_client_free(a->handle, pb, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK(size == 7);

    /* Another context's block. */
    owns = true;
    OK(memvisor_client_owns(a->handle, po, &owns));
    CHECK(!owns);
    CHECK_STATUS(memvisor_size_of(a->handle, po, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_client_free(a->handle, po, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_free(ctx, po, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    who.id = 7;
    CHECK_STATUS(memvisor_context_owner(ctx, po, &who), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK(who.id == 7);
    CHECK(size == 7);
    OK(memvisor_context_owner(other_ctx, po, &who));
    CHECK(who.id == other->handle.id);

    /* Just past a block: the block after it, if one starts there, else nothing's. */
    char *past = (char *)pa + a->sizes[0];
    bool next_live = false;
    for (size_t i = 0; i < a->live; i++) {
        next_live |= a->blocks[i] == past;
    }
    OK(memvisor_client_owns(a->handle, past, &owns));
    CHECK(owns == next_live);
    if (!next_live) {
        CHECK_STATUS(memvisor_size_of(a->handle, past, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK_STATUS(memvisor_context_owner(ctx, past, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK_STATUS(memvisor_free(ctx, past, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK_STATUS(memvisor_client_free(a->handle, past, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    }
    /* Interior of a block. */
    OK(memvisor_client_owns(a->handle, (char *)pa + 16, &owns));
    CHECK(!owns);
    CHECK_STATUS(memvisor_size_of(a->handle, (char *)pa + 16, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK(size == 7);
}

/* One context's life over `len` bytes at `memory`, whose chunk 0 the program expects at
 * `first_chunk`, with `chunks` chunks. */
static void life(void *memory, size_t len, size_t align, char *first_chunk, size_t chunks,
                 memvisor_context other_ctx, client_model *other) {
    memvisor_config config;
    OK(memvisor_config_init(&config));
    config.chunk_size = CHUNK;
    config.alignment = align;
    config.flags = memvisor_supported_flags();
    memvisor_context ctx = {0};
    OK(memvisor_context_create(memory, len, &config, &ctx));
    uint32_t flags = 0;
    OK(memvisor_context_accepted_flags(ctx, &flags));
    /* A caller's block takes what it can honour: not DECOMMIT, not GUARD. */
    CHECK(flags == (memvisor_supported_flags() & ~(uint32_t)(MEMVISOR_FLAG_DECOMMIT |
                                                          MEMVISOR_FLAG_GUARD)));
    client_model clients[3];
    memset(clients, 0, sizeof clients);
    check_context(ctx, chunks, clients, 0, flags);
    /* No chunk was handed out yet: none counts as cached, though the block is committed. */
    memvisor_context_stats fresh = {.size = sizeof fresh};
    OK(memvisor_context_get_stats(ctx, &fresh));
    CHECK(fresh.cached_chunks == 0);

    /* Bytes before chunk 0 and after the last chunk are not the context's. */
    size_t size = 7;
    if (first_chunk > (char *)memory) {
        CHECK_STATUS(memvisor_free(ctx, first_chunk - 1, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    }
    char *end = first_chunk + chunks * CHUNK;
    if (end < (char *)memory + len) {
        CHECK_STATUS(memvisor_free(ctx, end, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    }
    CHECK_STATUS(memvisor_free(ctx, first_chunk, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK(size == 7);

    size_t n = chunks < 3 ? chunks : 3;
    for (size_t i = 0; i < n; i++) {
        OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &clients[i].handle));
        check_context(ctx, chunks, clients, i + 1, flags);
    }
    /* Each client gets blocks of three sizes (a context of fewer chunks has fewer clients). */
    for (size_t i = 0; i < n; i++) {
        alloc_in(&clients[i], 1);
        check_client(&clients[i]);
        alloc_in(&clients[i], 100);
        alloc_in(&clients[i], 3000);
        check_client(&clients[i]);
        check_context(ctx, chunks, clients, n, flags);
        CHECK((char *)clients[i].blocks[0] >= first_chunk &&
              (char *)clients[i].blocks[0] < end);
    }
    if (n >= 2) {
        ownership(ctx, &clients[0], &clients[1], other_ctx, other);
    }
    /* A freed block, through the context, then asked about. */
    void *freed = clients[0].blocks[1];
    free_through_context(ctx, &clients[0], 1);
    check_client(&clients[0]);
    check_context(ctx, chunks, clients, n, flags);
    memvisor_client who = {7};
    CHECK_STATUS(memvisor_context_owner(ctx, freed, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK(who.id == 7);
    size = 7;
    CHECK_STATUS(memvisor_size_of(clients[0].handle, freed, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK(size == 7);

    /* The blocks are the clients' own: no byte was overwritten by another's. */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < clients[i].live; j++) {
            CHECK(all_bytes(clients[i].blocks[j], clients[i].sizes[j], 0x5a));
        }
    }

    /* Clients deleted in the order `order` names (with three clients, another order in each
     * such context; with fewer, the last made first), the context refused until the last. */
    static const size_t orders[3][3] = {{1, 0, 2}, {2, 0, 1}, {0, 2, 1}};
    static size_t lives_of_three = 0;
    const size_t *order = orders[lives_of_three % 3];
    if (n == 3) {
        lives_of_three++;
    }
    for (size_t k = 0; k < n; k++) {
        CHECK_STATUS(memvisor_context_delete(ctx), MEMVISOR_STATUS_CONTEXT_BUSY);
        size_t i = n == 3 ? order[k] : n - 1 - k;
        void *gone = clients[i].blocks[0];
        OK(memvisor_client_delete(clients[i].handle));
        /* A deleted client's handle: refused, outputs left alone. */
        bool owns = true;
        memvisor_client_stats cs = {.size = sizeof cs, .live_blocks = 7};
        void *out = gone;
        CHECK_STATUS(memvisor_client_owns(clients[i].handle, gone, &owns),
                     MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(owns);
        size = 7;
        CHECK_STATUS(memvisor_size_of(clients[i].handle, gone, &size),
                     MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(size == 7);
        CHECK_STATUS(memvisor_client_get_stats(clients[i].handle, &cs),
                     MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(cs.size == sizeof cs && cs.live_blocks == 7);
        CHECK_STATUS(memvisor_alloc(clients[i].handle, 16, &out), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(out == gone);
        who.id = 7;
        CHECK_STATUS(memvisor_context_owner(ctx, gone, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK(who.id == 7);
        CHECK_STATUS(memvisor_free(ctx, gone, &size), MEMVISOR_STATUS_NOT_OWNED);
        CHECK(size == 7);
        CHECK_STATUS(memvisor_client_delete(clients[i].handle), MEMVISOR_STATUS_INVALID_HANDLE);
        /* The deleted one leaves the array; the statistics hold for the rest. */
        client_model rest[3];
        size_t r = 0;
        for (size_t j = 0; j < n; j++) {
            int deleted = 0;
            for (size_t d = 0; d <= k; d++) {
                size_t dj = n == 3 ? order[d] : n - 1 - d;
                deleted |= dj == j;
            }
            if (!deleted) {
                rest[r++] = clients[j];
            }
        }
        check_context(ctx, chunks, rest, r, flags);
    }
    /* A client made after all are gone gets the whole context. */
    client_model last;
    memset(&last, 0, sizeof last);
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &last.handle));
    void *whole = NULL;
    OK(memvisor_alloc(last.handle, chunks * CHUNK, &whole));
    CHECK(whole == first_chunk);
    OK(memvisor_free(ctx, whole, &size));
    CHECK(size == chunks * CHUNK);
    OK(memvisor_client_delete(last.handle));
    check_context(ctx, chunks, NULL, 0, flags);
    /* Every chunk was handed out and given back, and a caller's block stays committed: all
     * count as cached now. */
    memvisor_context_stats done = {.size = sizeof done};
    OK(memvisor_context_get_stats(ctx, &done));
    CHECK(done.cached_chunks == chunks);
    OK(memvisor_context_delete(ctx));
    CHECK_STATUS(memvisor_context_delete(ctx), MEMVISOR_STATUS_INVALID_HANDLE);
    /* A deleted context's handle: refused, outputs left alone. */
    uint32_t kept = 0xdead;
    CHECK_STATUS(memvisor_context_accepted_flags(ctx, &kept), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK(kept == 0xdead);
    memvisor_context_stats s = {.size = sizeof s, .chunks = 7};
    CHECK_STATUS(memvisor_context_get_stats(ctx, &s), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK(s.size == sizeof s && s.chunks == 7);
    memvisor_client none = {7};
    size = 7;
    CHECK_STATUS(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &none),
                 MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK(none.id == 7);
    CHECK_STATUS(memvisor_context_owner(ctx, first_chunk, &none), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_free(ctx, first_chunk, &size), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK(none.id == 7 && size == 7);
}

static char static_block[3 * CHUNK + 4096] __attribute__((aligned(4096)));

int main(void) {
    /* The other context every scenario asks about blocks of. */
    void *other_memory = mmap(NULL, 2 * CHUNK, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(other_memory != MAP_FAILED);
    memvisor_config config;
    OK(memvisor_config_init(&config));
    config.chunk_size = CHUNK;
    memvisor_context other_ctx;
    OK(memvisor_context_create(other_memory, 2 * CHUNK, &config, &other_ctx));
    client_model other;
    memset(&other, 0, sizeof other);
    OK(memvisor_client_create(other_ctx, MEMVISOR_UNLIMITED, &other.handle));
    alloc_in(&other, 64);

    /* On the stack: not aligned to a chunk. */
    {
        _Alignas(16) char stack_block[2 * CHUNK + 4096];
        char *first = (char *)(((uintptr_t)stack_block + 4095) & ~(uintptr_t)4095);
        size_t chunks = (size_t)((stack_block + sizeof stack_block) - first) / CHUNK;
        life(stack_block, sizeof stack_block, 4096, first, chunks, other_ctx, &other);
    }
    /* A static array, aligned to the alignment: exactly its chunks and a tail. */
    life(static_block, sizeof static_block, 4096, static_block, 3, other_ctx, &other);
    /* mmap'd, chunks aligned to the chunk size, an odd length. */
    {
        size_t len = 6 * CHUNK + 12345;
        char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(m != MAP_FAILED);
        char *first = (char *)(((uintptr_t)m + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1));
        size_t chunks = (size_t)(m + len - first) / CHUNK;
        life(m, len, CHUNK, first, chunks, other_ctx, &other);
        /* An unaligned start, one byte in. */
        char *u = m + 1;
        first = (char *)(((uintptr_t)u + 4095) & ~(uintptr_t)4095);
        chunks = (size_t)(m + len - first) / CHUNK;
        life(u, len - 1, 4096, first, chunks, other_ctx, &other);
        /* Exactly one chunk. */
        life(first, CHUNK, 4096, first, 1, other_ctx, &other);
        /* Too small by a byte: nothing made, nothing written. */
        memvisor_context ctx = {42};
        CHECK_STATUS(memvisor_context_create(first, CHUNK - 1, &config, &ctx),
                     MEMVISOR_STATUS_BLOCK_TOO_SMALL);
        CHECK_STATUS(memvisor_context_create(u, CHUNK, &config, &ctx),
                     MEMVISOR_STATUS_BLOCK_TOO_SMALL);
        CHECK(ctx.id == 42);
        CHECK(munmap(m, len) == 0);
    }

    OK(memvisor_client_delete(other.handle));
    OK(memvisor_context_delete(other_ctx));
    CHECK(munmap(other_memory, 2 * CHUNK) == 0);
    return finish("vmma_port");
}
