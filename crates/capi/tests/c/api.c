/* Every function of libmemvisor, with every error path a C caller can reach. */
#include <stdint.h>
#include <string.h>

#include "memvisor.h"
#include "check.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define CHUNK (64 * KIB)

static memvisor_config config_with(size_t chunk, uint32_t flags) {
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = chunk;
    c.flags = flags;
    return c;
}

/* A context over a fresh `len`-byte heap block; the block goes to `*memory`. */
static memvisor_context context_over(size_t len, size_t chunk, uint32_t flags, void **memory) {
    memvisor_config c = config_with(chunk, flags);
    memvisor_context ctx = {0};
    *memory = aligned_alloc(4096, len);
    CHECK(*memory != NULL);
    OK(memvisor_context_create(*memory, len, &c, &ctx));
    return ctx;
}

static void test_library(void) {
    const char *v = memvisor_version();
    CHECK(v != NULL && v[0] >= '0' && v[0] <= '9');
    for (int code = MEMVISOR_STATUS_OK; code <= MEMVISOR_STATUS_POISONED; code++) {
        const char *m = memvisor_status_message(code);
        CHECK(m != NULL && m[0] != '\0');
        CHECK(strcmp(m, "unknown status code") != 0);
        for (int other = MEMVISOR_STATUS_OK; other < code; other++) {
            CHECK(strcmp(m, memvisor_status_message(other)) != 0);
        }
    }
    CHECK(strcmp(memvisor_status_message(-1), "unknown status code") == 0);
    CHECK(strcmp(memvisor_status_message(MEMVISOR_STATUS_POISONED + 1), "unknown status code") == 0);
    CHECK(strcmp(memvisor_status_message(MEMVISOR_STATUS_OK), "success") == 0);

    uint32_t all = MEMVISOR_FLAG_ZERO | MEMVISOR_FLAG_DECOMMIT | MEMVISOR_FLAG_GUARD |
                   MEMVISOR_FLAG_POISON | MEMVISOR_FLAG_STATISTICS;
    CHECK(memvisor_supported_flags() == all);

    CHECK_STATUS(memvisor_config_init(NULL), MEMVISOR_STATUS_NULL_POINTER);
    memvisor_config c;
    memset(&c, 0xff, sizeof c);
    OK(memvisor_config_init(&c));
    CHECK(c.size == sizeof c);
    CHECK(c.chunk_size == MIB && c.min_block == 16 && c.alignment == 4096 && c.flags == 0);
}

static void test_context_create_errors(void) {
    size_t len = 4 * MIB;
    void *memory = aligned_alloc(4096, len);
    memvisor_context ctx = {0};
    memvisor_config c = config_with(CHUNK, 0);

    CHECK_STATUS(memvisor_context_create(memory, len, &c, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_context_create(NULL, len, &c, &ctx), MEMVISOR_STATUS_NULL_POINTER);

    memvisor_config bad = c;
    bad.size = sizeof bad - 1;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_STRUCT_SIZE);
    bad = c;
    bad.flags = 1u << 7;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_UNKNOWN_FLAGS);
    bad = c;
    bad.chunk_size = 3 * CHUNK;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_INVALID_CONFIG);
    bad = c;
    bad.chunk_size = 32 * KIB;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_INVALID_CONFIG);
    bad = c;
    bad.min_block = 24;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_INVALID_CONFIG);
    bad = c;
    bad.alignment = 8;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_INVALID_CONFIG);
    bad = c;
    bad.alignment = 2 * CHUNK;
    CHECK_STATUS(memvisor_context_create(memory, len, &bad, &ctx), MEMVISOR_STATUS_INVALID_CONFIG);
    CHECK_STATUS(memvisor_context_create(memory, CHUNK - 1, &c, &ctx),
                 MEMVISOR_STATUS_BLOCK_TOO_SMALL);
    /* No block is longer than PTRDIFF_MAX or wraps past the end of the address space: such
     * a length (say, -1) is refused before side tables are sized after it. */
    CHECK_STATUS(memvisor_context_create(memory, SIZE_MAX, &c, &ctx), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_context_create(memory, (size_t)PTRDIFF_MAX + 1, &c, &ctx),
                 MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_context_create((void *)(UINTPTR_MAX - 4095), 2 * CHUNK, &c, &ctx),
                 MEMVISOR_STATUS_TOO_LARGE);
    /* A block whose last byte is the last of the address space (its end, one past it, is
     * not an address) is refused the same way; one byte shorter it is judged as usual (too
     * small for a chunk). Neither is read. */
    CHECK_STATUS(memvisor_context_create((void *)(UINTPTR_MAX - 4095), 4096, &c, &ctx),
                 MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_context_create((void *)(UINTPTR_MAX - 4095), 4095, &c, &ctx),
                 MEMVISOR_STATUS_BLOCK_TOO_SMALL);
    /* Nothing was written on any error. */
    CHECK(ctx.id == 0);

    /* A configuration from a newer header (larger, its size says so) is read up to this
     * library's fields. */
    struct {
        memvisor_config v1;
        uint64_t later_field;
    } newer = {.v1 = c, .later_field = UINT64_MAX};
    newer.v1.size = sizeof newer;
    OK(memvisor_context_create(memory, len, &newer.v1, &ctx));
    memvisor_context_stats cs = {.size = sizeof cs};
    OK(memvisor_context_get_stats(ctx, &cs));
    CHECK(cs.chunk_size == CHUNK && cs.chunks == len / CHUNK);
    OK(memvisor_context_delete(ctx));
    ctx.id = 0;

    /* NULL configuration: the defaults (1 MiB chunks). */
    OK(memvisor_context_create(memory, len, NULL, &ctx));
    CHECK(ctx.id != 0);
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.chunk_size == MIB && s.chunks == 4);
    OK(memvisor_context_delete(ctx));
    free(memory);
}

static void test_context_reserved(void) {
    memvisor_context ctx = {0};
    memvisor_config c = config_with(CHUNK, MEMVISOR_FLAG_DECOMMIT | MEMVISOR_FLAG_GUARD);
    CHECK_STATUS(memvisor_context_create_reserved(8 * MIB, &c, NULL), MEMVISOR_STATUS_NULL_POINTER);
    memvisor_config bad = c;
    bad.size = 0;
    CHECK_STATUS(memvisor_context_create_reserved(8 * MIB, &bad, &ctx), MEMVISOR_STATUS_STRUCT_SIZE);
    bad = c;
    bad.flags = 0x80000000u;
    CHECK_STATUS(memvisor_context_create_reserved(8 * MIB, &bad, &ctx),
                 MEMVISOR_STATUS_UNKNOWN_FLAGS);
    bad = c;
    bad.min_block = 512;
    CHECK_STATUS(memvisor_context_create_reserved(8 * MIB, &bad, &ctx),
                 MEMVISOR_STATUS_INVALID_CONFIG);
#if SIZE_MAX > UINT32_MAX
    /* The operating system refuses a reservation of half the 64-bit address space (a 32-bit
     * process may get one of 2 GiB). */
    CHECK_STATUS(memvisor_context_create_reserved(SIZE_MAX / 2, &c, &ctx), MEMVISOR_STATUS_OS);
#endif
    /* Over PTRDIFF_MAX is too large, before anything is reserved, on every target. */
    CHECK_STATUS(memvisor_context_create_reserved(SIZE_MAX / 2 + 1, &c, &ctx),
                 MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_context_create_reserved(SIZE_MAX, &c, &ctx), MEMVISOR_STATUS_TOO_LARGE);
    /* Under one chunk is too small, before anything is reserved. */
    CHECK_STATUS(memvisor_context_create_reserved(0, &c, &ctx), MEMVISOR_STATUS_BLOCK_TOO_SMALL);
    CHECK_STATUS(memvisor_context_create_reserved(4096, &c, &ctx), MEMVISOR_STATUS_BLOCK_TOO_SMALL);
    CHECK(ctx.id == 0);

    OK(memvisor_context_create_reserved(8 * MIB, &c, &ctx));
    uint32_t flags = 0;
    OK(memvisor_context_accepted_flags(ctx, &flags));
    CHECK(flags == (MEMVISOR_FLAG_DECOMMIT | MEMVISOR_FLAG_GUARD));
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.max_block_size == CHUNK / 2);

    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    void *p = NULL;
    OK(memvisor_alloc(cl, 20 * KIB, &p));
    memset(p, 0x5a, 20 * KIB); /* committed on demand */
    CHECK_STATUS(memvisor_alloc(cl, CHUNK, &p), MEMVISOR_STATUS_TOO_LARGE);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));
}

static void test_context_handles(void) {
    void *memory;
    memvisor_context ctx = context_over(2 * MIB, CHUNK, 0, &memory);
    memvisor_context null_ctx = {0};
    memvisor_context forged = {ctx.id ^ ((uint64_t)2 << 32)};
    memvisor_context wild = {UINT64_MAX};
    uint32_t flags;
    memvisor_context_stats s = {.size = sizeof s};
    memvisor_client cl;

    CHECK_STATUS(memvisor_context_accepted_flags(ctx, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_context_get_stats(ctx, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, NULL), MEMVISOR_STATUS_NULL_POINTER);
    memvisor_context bad[] = {null_ctx, forged, wild};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(memvisor_context_accepted_flags(bad[i], &flags), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_context_get_stats(bad[i], &s), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_client_create(bad[i], 0, &cl), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_context_delete(bad[i]), MEMVISOR_STATUS_INVALID_HANDLE);
    }

    /* A caller's block drops the reservation-only flags. */
    OK(memvisor_context_accepted_flags(ctx, &flags));
    CHECK(flags == 0);

    /* Statistics: the size field is checked, and a larger caller structure is fine. */
    s.size = sizeof s - 1;
    CHECK_STATUS(memvisor_context_get_stats(ctx, &s), MEMVISOR_STATUS_STRUCT_SIZE);
    s.size = sizeof s;
    struct {
        memvisor_context_stats v1;
        size_t later_field;
    } bigger = {.v1 = {.size = sizeof bigger}, .later_field = 77};
    OK(memvisor_context_get_stats(ctx, &bigger.v1));
    CHECK(bigger.v1.size == sizeof(memvisor_context_stats));
    CHECK(bigger.later_field == 77);
    CHECK(bigger.v1.total_bytes == 2 * MIB && bigger.v1.chunks == 32);
    CHECK(bigger.v1.free_chunks == 32 && bigger.v1.held_chunks == 0 && bigger.v1.clients == 0);
    CHECK(bigger.v1.used_bytes == MEMVISOR_UNLIMITED && bigger.v1.live_blocks == MEMVISOR_UNLIMITED);
    CHECK(bigger.v1.cached_bytes == MEMVISOR_UNLIMITED && bigger.v1.pinned_chunks == MEMVISOR_UNLIMITED);
    /* A block larger than a chunk is a run of whole chunks: up to all of them. */
    CHECK(bigger.v1.max_block_size == 2 * MIB && bigger.v1.max_alignment == 4096);
    CHECK(bigger.v1.bookkeeping_bytes > 0);

    /* A context with a live client cannot be deleted; its handle stays good. */
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    CHECK_STATUS(memvisor_context_delete(ctx), MEMVISOR_STATUS_CONTEXT_BUSY);
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.clients == 1);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));

    /* The deleted handle is refused everywhere, also after its slot is reused. */
    CHECK_STATUS(memvisor_context_delete(ctx), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_get_stats(ctx, &s), MEMVISOR_STATUS_INVALID_HANDLE);
    /* Arguments are judged before the handle: a bad size is that, whatever the handle. */
    memvisor_context_stats odd = {.size = 1};
    CHECK_STATUS(memvisor_context_get_stats(ctx, &odd), MEMVISOR_STATUS_STRUCT_SIZE);
    CHECK(odd.size == 1);
    memvisor_context again;
    OK(memvisor_context_create(memory, 2 * MIB, NULL, &again));
    CHECK(again.id != ctx.id);
    CHECK_STATUS(memvisor_client_create(ctx, 0, &cl), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_delete(ctx), MEMVISOR_STATUS_INVALID_HANDLE);
    OK(memvisor_context_delete(again));
    free(memory);
}

static void test_client_errors(void) {
    void *memory;
    memvisor_context ctx = context_over(2 * MIB, CHUNK, 0, &memory);
    memvisor_client a, b;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(ctx, 4 * KIB, &b));
    CHECK(a.id != b.id);

    memvisor_client null_cl = {0};
    memvisor_client forged = {a.id + 1000};
    memvisor_client bad[] = {null_cl, forged};
    void *p = NULL;
    size_t size = 0;
    bool owns = true;
    memvisor_client_stats cs = {.size = sizeof cs};
    int local = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_STATUS(memvisor_alloc(bad[i], 16, &p), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_alloc_aligned(bad[i], 16, 64, &p), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_client_free(bad[i], &local, NULL), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_client_owns(bad[i], &local, &owns), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_size_of(bad[i], &local, &size), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_client_get_stats(bad[i], &cs), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_client_delete(bad[i]), MEMVISOR_STATUS_INVALID_HANDLE);
        /* A size past any context's largest block (64 TiB less 64 MiB, or 2 GiB less 64 KiB
         * with 32-bit pointers) is judged before the handle, as for a live client. */
        CHECK_STATUS(memvisor_alloc(bad[i], (size_t)PTRDIFF_MAX - 4095, &p),
                     MEMVISOR_STATUS_TOO_LARGE);
        CHECK_STATUS(memvisor_alloc_aligned(bad[i], (size_t)PTRDIFF_MAX - 4095, 64, &p),
                     MEMVISOR_STATUS_TOO_LARGE);
    }
    CHECK_STATUS(memvisor_alloc(a, (size_t)PTRDIFF_MAX - 4095, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK(p == NULL);

    /* Null outputs and pointers. */
    CHECK_STATUS(memvisor_alloc(a, 16, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_alloc_aligned(a, 16, 16, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_client_free(a, NULL, &size), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_client_owns(a, &local, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_client_owns(a, NULL, &owns), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_size_of(a, NULL, &size), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_size_of(a, &local, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_client_get_stats(a, NULL), MEMVISOR_STATUS_NULL_POINTER);
    /* Inside `total_bytes`, whatever the width of `size_t`. */
    cs.size = sizeof(size_t) + sizeof(size_t) / 2;
    CHECK_STATUS(memvisor_client_get_stats(a, &cs), MEMVISOR_STATUS_STRUCT_SIZE);
    /* Just the size field (the smallest structure a header can have): only it is written. */
    cs.size = sizeof(size_t);
    cs.total_bytes = 77;
    OK(memvisor_client_get_stats(a, &cs));
    CHECK(cs.size == sizeof(size_t) && cs.total_bytes == 77);
    cs.size = sizeof cs;

    /* Sizes and alignments. */
    CHECK_STATUS(memvisor_alloc(a, 2 * MIB + 1, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc(a, SIZE_MAX, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc_aligned(a, 2 * MIB + 1, 4096, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc_aligned(a, SIZE_MAX, 16, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc_aligned(a, 16, 0, &p), MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, 16, 48, &p), MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, 16, 8192, &p), MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    /* Not a power of two, the largest power of two, and every bit set: an alignment error
     * whatever the size, never a size computed from it. */
    CHECK_STATUS(memvisor_alloc_aligned(a, 16, 3, &p), MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, 0, (SIZE_MAX >> 1) + 1, &p),
                 MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, SIZE_MAX, SIZE_MAX, &p),
                 MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    /* A size that rounds up past PTRDIFF_MAX at a supported alignment. */
    CHECK_STATUS(memvisor_alloc_aligned(a, SIZE_MAX - 15, 16, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc_aligned(a, (SIZE_MAX >> 1) - 100, 4096, &p),
                 MEMVISOR_STATUS_TOO_LARGE);
    CHECK(p == NULL);
    for (size_t align = 16; align <= 4096; align *= 2) {
        OK(memvisor_alloc_aligned(a, 24, align, &p));
        CHECK(((uintptr_t)p & (align - 1)) == 0);
        OK(memvisor_client_free(a, p, NULL));
    }
    OK(memvisor_alloc_aligned(a, 100, 4096, &p));
    CHECK(((uintptr_t)p & 4095) == 0);
    OK(memvisor_size_of(a, p, &size));
    CHECK(size >= 100);
    OK(memvisor_client_free(a, p, &size));

    /* Quota. */
    void *q = NULL;
    OK(memvisor_alloc(b, 4 * KIB, &q));
    CHECK_STATUS(memvisor_alloc(b, 16, &p), MEMVISOR_STATUS_QUOTA_EXCEEDED);
    CHECK_STATUS(memvisor_alloc_aligned(b, 16, 4096, &p), MEMVISOR_STATUS_QUOTA_EXCEEDED);
    OK(memvisor_client_get_stats(b, &cs));
    CHECK(cs.quota == 4 * KIB && cs.used_bytes == 4 * KIB && cs.live_blocks == 1);

    /* Pointers that are not this client's live blocks. */
    void *x = NULL;
    OK(memvisor_alloc(a, 100, &x));
    CHECK_STATUS(memvisor_client_free(a, &local, NULL), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_client_free(a, q, NULL), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_client_free(b, x, NULL), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_client_free(a, (char *)x + 16, NULL), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_size_of(a, &local, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_size_of(a, q, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_size_of(a, (char *)x + 16, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    OK(memvisor_client_owns(a, x, &owns));
    CHECK(owns);
    OK(memvisor_client_owns(b, x, &owns));
    CHECK(!owns);
    OK(memvisor_client_owns(a, &local, &owns));
    CHECK(!owns);
    OK(memvisor_size_of(a, x, &size));
    CHECK(size == 112);
    size = 0;
    OK(memvisor_client_free(a, x, &size));
    CHECK(size == 112);
    CHECK_STATUS(memvisor_client_free(a, x, NULL), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_size_of(a, x, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    OK(memvisor_client_owns(a, x, &owns));
    CHECK(!owns);

    /* A zero size gets the smallest block. */
    OK(memvisor_alloc(a, 0, &p));
    OK(memvisor_size_of(a, p, &size));
    CHECK(size == 16);
    OK(memvisor_client_free(a, p, NULL));

    /* Large blocks: runs of whole chunks. */
    OK(memvisor_alloc(a, 3 * CHUNK + 1, &p));
    OK(memvisor_size_of(a, p, &size));
    CHECK(size >= 3 * CHUNK + 1);
    memset(p, 0x77, size);
    OK(memvisor_client_owns(a, p, &owns));
    CHECK(owns);
    CHECK_STATUS(memvisor_client_free(b, p, NULL), MEMVISOR_STATUS_NOT_OWNED);
    OK(memvisor_client_free(a, p, NULL));

    /* Out of memory: the other client holds a chunk, so no run of all 32 is left, and the
     * chunks run out one by one. */
    CHECK_STATUS(memvisor_alloc(a, 2 * MIB, &p), MEMVISOR_STATUS_OUT_OF_MEMORY);
    CHECK_STATUS(memvisor_alloc_aligned(a, 2 * MIB, 4096, &p), MEMVISOR_STATUS_OUT_OF_MEMORY);
    size_t n = 0;
    while (memvisor_alloc(a, CHUNK, &p) == MEMVISOR_STATUS_OK) {
        n++;
    }
    CHECK(n >= 29 && n <= 31);
    CHECK_STATUS(memvisor_alloc(a, CHUNK, &p), MEMVISOR_STATUS_OUT_OF_MEMORY);

    /* Deleting frees it all; the handle is then refused, the other client lives on. */
    OK(memvisor_client_delete(a));
    CHECK_STATUS(memvisor_client_delete(a), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_alloc(a, 16, &p), MEMVISOR_STATUS_INVALID_HANDLE);
    memvisor_client_stats odd = {.size = 1};
    CHECK_STATUS(memvisor_client_get_stats(a, &odd), MEMVISOR_STATUS_STRUCT_SIZE);
    CHECK(odd.size == 1);
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.held_chunks == 1 && s.clients == 1);
    OK(memvisor_size_of(b, q, &size));
    OK(memvisor_client_free(b, q, NULL));
    OK(memvisor_client_delete(b));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

static void test_leaky_client_and_flags(void) {
    void *memory;
    memvisor_context ctx = context_over(
        4 * MIB, CHUNK, MEMVISOR_FLAG_ZERO | MEMVISOR_FLAG_POISON | MEMVISOR_FLAG_STATISTICS,
        &memory);
    uint32_t flags = 0;
    OK(memvisor_context_accepted_flags(ctx, &flags));
    CHECK(flags == (MEMVISOR_FLAG_ZERO | MEMVISOR_FLAG_POISON | MEMVISOR_FLAG_STATISTICS));

    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    unsigned char *p = NULL;
    OK(memvisor_alloc(cl, 256, (void **)&p));
    for (int i = 0; i < 256; i++) {
        CHECK(p[i] == 0);
    }
    memset(p, 0x11, 256);
    OK(memvisor_client_free(cl, p, NULL));
    CHECK(p[255] == MEMVISOR_POISON_BYTE);
    OK(memvisor_alloc(cl, 256, (void **)&p));
    CHECK(p[0] == 0 && p[255] == 0);

    /* A program that leaks 1,000 blocks. */
    for (int i = 0; i < 1000; i++) {
        void *leak;
        OK(memvisor_alloc(cl, 200 + (size_t)i, &leak));
    }
    memvisor_client_stats cs = {.size = sizeof cs};
    OK(memvisor_client_get_stats(cl, &cs));
    CHECK(cs.size == sizeof cs);
    CHECK(cs.live_blocks == 1001 && cs.allocations == 1002 && cs.frees == 1);
    CHECK(cs.used_bytes > 200000 && cs.total_bytes >= cs.used_bytes);
    CHECK(cs.quota == MEMVISOR_UNLIMITED && cs.chunks > 0);
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.live_blocks == 1001 && s.used_bytes == cs.used_bytes && s.held_chunks == cs.chunks);

    OK(memvisor_client_delete(cl));
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.held_chunks == 0 && s.used_bytes == 0 && s.live_blocks == 0 && s.clients == 0);
    OK(memvisor_context_delete(ctx));
    free(memory);
}

static void test_context_free_owner_trim(void) {
    void *memory;
    memvisor_context ctx = context_over(2 * MIB, CHUNK, MEMVISOR_FLAG_STATISTICS, &memory);
    memvisor_context null_ctx = {0};
    memvisor_client a, b, who = {0};
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &b));
    void *pa = NULL, *pb = NULL;
    OK(memvisor_alloc(a, 300, &pa));
    OK(memvisor_alloc(b, 5000, &pb));
    int local = 0;
    size_t size = 0;

    /* Owner lookup. */
    CHECK_STATUS(memvisor_context_owner(ctx, pa, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_context_owner(null_ctx, pa, &who), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_owner(ctx, &local, &who), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_context_owner(ctx, NULL, &who), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_context_owner(ctx, (char *)pa + 16, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_context_owner(ctx, (char *)memory + 2 * MIB - 4096, &who),
                 MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK(who.id == 0);
    OK(memvisor_context_owner(ctx, pa, &who));
    CHECK(who.id == a.id);
    OK(memvisor_context_owner(ctx, pb, &who));
    CHECK(who.id == b.id);

    /* Frees through the context. */
    CHECK_STATUS(memvisor_free(ctx, NULL, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_free(null_ctx, pa, NULL), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_free(ctx, &local, NULL), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_free(ctx, (char *)memory + 2 * MIB - 4096, NULL),
                 MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_client_free(a, (char *)memory + 2 * MIB - 4096, NULL),
                 MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_size_of(a, (char *)memory + 2 * MIB - 4096, &size),
                 MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_free(ctx, (char *)pa + 16, NULL), MEMVISOR_STATUS_NOT_A_BLOCK);
    OK(memvisor_free(ctx, pa, &size));
    CHECK(size == 320);
    OK(memvisor_free(ctx, pb, NULL));
    CHECK_STATUS(memvisor_free(ctx, pa, NULL), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_client_free(a, pa, NULL), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_context_owner(ctx, pa, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    bool owns = true;
    OK(memvisor_client_owns(a, pa, &owns));
    CHECK(!owns);

    /* Trim: the client gives back what it keeps; the context asks every client. */
    CHECK_STATUS(memvisor_context_trim(null_ctx), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_client_trim((memvisor_client){0}), MEMVISOR_STATUS_INVALID_HANDLE);
    OK(memvisor_context_trim(ctx));
    OK(memvisor_client_trim(a));
    memvisor_client_stats cs = {.size = sizeof cs};
    OK(memvisor_client_get_stats(a, &cs));
    CHECK(cs.used_bytes == 0 && cs.live_blocks == 0 && cs.cached_bytes == 0 && cs.chunks == 0);
    CHECK(cs.pinned_chunks == 0 && cs.pinned_bytes == 0);
    void *p;
    OK(memvisor_alloc(b, 64, &p)); /* b takes the freed block back on its next allocation */
    OK(memvisor_client_free(b, p, NULL));
    OK(memvisor_client_trim(b));
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.used_bytes == 0 && s.live_blocks == 0 && s.held_chunks == 0);
    CHECK(s.cached_bytes == 0 && s.pinned_chunks == 0);

    /* Deleted clients are no owners. */
    OK(memvisor_alloc(a, 100, &p));
    OK(memvisor_client_delete(a));
    CHECK_STATUS(memvisor_context_owner(ctx, p, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_free(ctx, p, NULL), MEMVISOR_STATUS_NOT_OWNED);
    OK(memvisor_client_delete(b));
    OK(memvisor_context_delete(ctx));
    CHECK_STATUS(memvisor_context_trim(ctx), MEMVISOR_STATUS_INVALID_HANDLE);
    free(memory);
}

/* A `size` pointer into the block being freed: the block is no longer the caller's, so
   nothing is written there (writing would fault on a decommitted run, or overwrite the link
   of a block freed through the context). */
static void test_size_pointing_into_the_freed_block(void) {
    memvisor_context ctx = {0};
    memvisor_config c = config_with(CHUNK, MEMVISOR_FLAG_DECOMMIT);
    OK(memvisor_context_create_reserved(8 * MIB, &c, &ctx));
    memvisor_client a, b;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &b));
    /* A run of three chunks, decommitted when freed. */
    void *run = NULL;
    OK(memvisor_alloc(a, 3 * CHUNK, &run));
    OK(memvisor_client_free(a, run, (size_t *)run));
    /* Blocks freed through the context, their size pointer at their start or overlapping
       it from just before (inside a neighbour the caller still owns). */
    enum { N = 8 };
    void *blocks[N];
    for (int i = 0; i < N; i++) {
        OK(memvisor_alloc(a, 100, &blocks[i]));
    }
    for (int i = 0; i < N; i += 2) {
        OK(memvisor_free(ctx, blocks[i], (size_t *)blocks[i]));
    }
    for (int i = 1; i < N; i += 2) {
        OK(memvisor_free(ctx, blocks[i], (size_t *)((char *)blocks[i] - 4)));
    }
    /* A size pointer into another live block gets the size. */
    void *q = NULL, *r = NULL;
    OK(memvisor_alloc(b, 64, &q));
    OK(memvisor_alloc(b, 100, &r));
    OK(memvisor_client_free(b, r, (size_t *)q));
    CHECK(*(size_t *)q == 112);
    OK(memvisor_alloc(b, 100, &r));
    OK(memvisor_free(ctx, r, (size_t *)q + 1));
    CHECK(((size_t *)q)[1] == 112);
    /* Every block handed out afterwards is aligned, live and apart from the others. */
    void *again[3 * N];
    for (int i = 0; i < 3 * N; i++) {
        OK(memvisor_alloc(a, 100, &again[i]));
        CHECK(((uintptr_t)again[i] & (MEMVISOR_MIN_ALIGN - 1)) == 0);
        size_t size = 0;
        OK(memvisor_size_of(a, again[i], &size));
        CHECK(size == 112);
        for (int j = 0; j < i; j++) {
            CHECK(again[j] != again[i]);
        }
        memset(again[i], 0x33, size);
    }
    OK(memvisor_alloc(a, 3 * CHUNK, &run));
    memset(run, 0x44, 3 * CHUNK);
    OK(memvisor_client_delete(a));
    OK(memvisor_client_delete(b));
    OK(memvisor_context_delete(ctx));
}

/* Structures the library fills have every byte defined, padding included: two calls with
   equal results compare equal with memcmp, whatever the caller's bytes were before. */
static void test_filled_structures_compare_equal(void) {
    memvisor_config c1, c2;
    memset(&c1, 0xff, sizeof c1);
    memset(&c2, 0x00, sizeof c2);
    OK(memvisor_config_init(&c1));
    OK(memvisor_config_init(&c2));
    CHECK(memcmp(&c1, &c2, sizeof c1) == 0);
    void *memory;
    memvisor_context ctx = context_over(2 * MIB, CHUNK, MEMVISOR_FLAG_STATISTICS, &memory);
    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    memvisor_context_stats s1, s2;
    memset(&s1, 0xff, sizeof s1);
    memset(&s2, 0x00, sizeof s2);
    s1.size = s2.size = sizeof s1;
    OK(memvisor_context_get_stats(ctx, &s1));
    /* A refused call changes nothing, byte for byte. */
    void *p = NULL;
    CHECK_STATUS(memvisor_alloc(cl, 4 * MIB, &p), MEMVISOR_STATUS_TOO_LARGE);
    OK(memvisor_context_get_stats(ctx, &s2));
    CHECK(memcmp(&s1, &s2, sizeof s1) == 0);
    memvisor_client_stats k1, k2;
    memset(&k1, 0xff, sizeof k1);
    memset(&k2, 0x00, sizeof k2);
    k1.size = k2.size = sizeof k1;
    OK(memvisor_client_get_stats(cl, &k1));
    OK(memvisor_client_get_stats(cl, &k2));
    CHECK(memcmp(&k1, &k2, sizeof k1) == 0);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

/* A handle of one kind is refused where the other kind is expected (their values carry
 * their kind), and a client's blocks are foreign to another context and not owned by
 * another client of its own. */
static void test_handles_and_blocks_of_the_other_kind_or_context(void) {
    memvisor_config c = config_with(CHUNK, 0);
    memvisor_context x, y;
    OK(memvisor_context_create_reserved(16 * CHUNK, &c, &x));
    OK(memvisor_context_create_reserved(16 * CHUNK, &c, &y));
    memvisor_client a, b, d;
    OK(memvisor_client_create(x, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(x, MEMVISOR_UNLIMITED, &b));
    OK(memvisor_client_create(y, MEMVISOR_UNLIMITED, &d));
    void *p = NULL, *q = NULL, *out = &out;
    OK(memvisor_alloc(a, 100, &p));
    OK(memvisor_alloc(d, 100, &q));
    memvisor_context client_as_context = {a.id};
    memvisor_client context_as_client = {x.id};
    memvisor_context_stats cs;
    memset(&cs, 0, sizeof cs);
    cs.size = sizeof cs;
    CHECK_STATUS(memvisor_context_get_stats(client_as_context, &cs),
                 MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_trim(client_as_context), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_delete(client_as_context), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_alloc(context_as_client, 16, &out), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK(out == &out);
    CHECK_STATUS(memvisor_client_delete(context_as_client), MEMVISOR_STATUS_INVALID_HANDLE);
    size_t size = 0;
    CHECK_STATUS(memvisor_free(x, q, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_client_free(a, q, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_client_free(b, p, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_size_of(b, p, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK(size == 0);
    bool owns = true;
    OK(memvisor_client_owns(b, p, &owns));
    CHECK(!owns);
    CHECK_STATUS(memvisor_size_of(a, (void *)UINTPTR_MAX, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    /* Every block is still where it was. */
    OK(memvisor_client_free(a, p, NULL));
    OK(memvisor_client_free(d, q, NULL));
    OK(memvisor_client_delete(a));
    OK(memvisor_client_delete(b));
    OK(memvisor_client_delete(d));
    OK(memvisor_context_delete(x));
    OK(memvisor_context_delete(y));
    CHECK(strcmp(memvisor_status_message(INT32_MIN), "unknown status code") == 0);
    CHECK(strcmp(memvisor_status_message(INT32_MAX), "unknown status code") == 0);
}

/* A reservation of `len` bytes, if the system grants one: a block of every chunk at once is
 * served, sized and freed with sizes near `len` (on a 32-bit target, a quarter or half of
 * the address space), and one byte more is too large. Returns whether it was granted. */
static int check_reservation_in_one_block(size_t len) {
    memvisor_context ctx = {0};
    memvisor_status status = memvisor_context_create_reserved(len, NULL, &ctx);
    if (status == MEMVISOR_STATUS_OS) {
        CHECK(ctx.id == 0);
        return 0;
    }
    OK(status);
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.chunk_size == MIB && s.total_bytes == s.chunks * MIB);
    CHECK(s.total_bytes <= len && len - s.total_bytes < 2 * MIB);
    CHECK(s.max_block_size == s.total_bytes && s.largest_free_block == s.total_bytes);
    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    void *p = NULL;
    CHECK_STATUS(memvisor_alloc(cl, s.max_block_size + 1, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc_aligned(cl, SIZE_MAX - 4095, 4096, &p), MEMVISOR_STATUS_TOO_LARGE);
    CHECK(p == NULL);
    OK(memvisor_alloc_aligned(cl, s.max_block_size, 4096, &p));
    CHECK(p != NULL && ((uintptr_t)p & 4095) == 0);
    /* Its first and last bytes are the caller's; the end is an address. */
    unsigned char *bytes = p;
    bytes[0] = 1;
    bytes[s.max_block_size - 1] = 2;
    CHECK((uintptr_t)p + (s.max_block_size - 1) > (uintptr_t)p);
    size_t size = 0;
    OK(memvisor_size_of(cl, p, &size));
    CHECK(size == s.max_block_size);
    void *q = NULL;
    CHECK_STATUS(memvisor_alloc(cl, 1, &q), MEMVISOR_STATUS_OUT_OF_MEMORY);
    CHECK_STATUS(memvisor_size_of(cl, bytes + s.max_block_size - 1, &size),
                 MEMVISOR_STATUS_NOT_A_BLOCK);
    size = 0;
    OK(memvisor_free(ctx, p, &size));
    CHECK(size == s.max_block_size);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.held_chunks == 0 && s.clients == 0);
    OK(memvisor_context_delete(ctx));
    return 1;
}

/* Sizes near the top of `size_t`: a reservation of 1 GiB (a quarter of a 32-bit address
 * space, which a 32-bit process whose address space is taken up otherwise may be refused),
 * and on a 32-bit target one of PTRDIFF_MAX bytes (half of it, which such a process may
 * be granted). */
static void test_reservations_near_the_size_limits(void) {
    int quarter = check_reservation_in_one_block((size_t)1 << 30);
#if SIZE_MAX > UINT32_MAX
    CHECK(quarter);
#else
    (void)quarter;
    (void)check_reservation_in_one_block(PTRDIFF_MAX);
#endif
}

/* A deleted context's handle is refused by every function that takes a context, also once
 * its slot serves another context, and the refusal leaves that context alone. */
static void test_deleted_context_refused_everywhere(void) {
    void *memory;
    memvisor_context old = context_over(2 * MIB, CHUNK, 0, &memory);
    OK(memvisor_context_delete(old));
    memvisor_context now;
    OK(memvisor_context_create(memory, 2 * MIB, NULL, &now));
    /* The slot the deleted context had (the low half of a handle) serves the new one. */
    CHECK((uint32_t)now.id == (uint32_t)old.id && now.id != old.id);
    memvisor_client cl, who = {0};
    OK(memvisor_client_create(now, MEMVISOR_UNLIMITED, &cl));
    void *p = NULL;
    OK(memvisor_alloc(cl, 64, &p));
    uint32_t flags = 7;
    memvisor_context_stats s = {.size = sizeof s};
    memvisor_client other = {0};
    size_t size = 0;
    CHECK_STATUS(memvisor_context_delete(old), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_accepted_flags(old, &flags), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_get_stats(old, &s), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_trim(old), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_client_create(old, MEMVISOR_UNLIMITED, &other),
                 MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_owner(old, p, &who), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_free(old, p, &size), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK(flags == 7 && s.size == sizeof s && other.id == 0 && who.id == 0 && size == 0);
    /* The live context is as it was: its client, and the block, still live. */
    OK(memvisor_context_get_stats(now, &s));
    CHECK(s.clients == 1 && s.held_chunks == 1);
    OK(memvisor_context_owner(now, p, &who));
    CHECK(who.id == cl.id);
    OK(memvisor_client_free(cl, p, NULL));
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(now));
    free(memory);
}

int main(void) {
    test_library();
    test_context_create_errors();
    test_context_reserved();
    test_context_handles();
    test_client_errors();
    test_leaky_client_and_flags();
    test_context_free_owner_trim();
    test_size_pointing_into_the_freed_block();
    test_filled_structures_compare_equal();
    test_handles_and_blocks_of_the_other_kind_or_context();
    test_reservations_near_the_size_limits();
    test_deleted_context_refused_everywhere();
    return finish("api");
}
