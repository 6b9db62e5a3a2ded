/* Programs built against another version of memvisor.h: structures smaller than this
 * library's (an older header) are filled and read up to their own size and never past it,
 * larger ones (a newer header) up to this library's fields, and sizes no header can have are
 * refused with nothing written. The older structures live in heap blocks of their exact size,
 * so that AddressSanitizer and valgrind see any byte written past them; a canary after a copy
 * on the stack shows it in a plain run too. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "memvisor.h"
#include "check.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define CHUNK (64 * KIB)

/* memvisor_config as an older header declared it: no `alignment`, no `flags`. */
struct config_v0 {
    size_t size;
    size_t chunk_size;
    size_t min_block;
};

/* memvisor_context_stats of an older header: up to `free_chunks`. */
struct context_stats_v0 {
    size_t size;
    size_t total_bytes;
    size_t chunk_size;
    size_t chunks;
    size_t held_chunks;
    size_t free_chunks;
};

/* memvisor_client_stats of an older header: up to `used_bytes`. */
struct client_stats_v0 {
    size_t size;
    size_t total_bytes;
    size_t used_bytes;
};

#define CANARY 0xee

/* memvisor_client_stats of the header before `cached_blocks`: up to `frees`. */
struct client_stats_v1 {
    size_t size;
    size_t total_bytes;
    size_t used_bytes;
    size_t free_bytes;
    size_t peak_used_bytes;
    size_t live_blocks;
    size_t chunks;
    size_t cached_chunks;
    size_t cached_bytes;
    size_t pinned_chunks;
    size_t pinned_bytes;
    size_t largest_free_block;
    size_t quota;
    uint64_t allocations;
    uint64_t frees;
};

static void test_config_init_older_header(void) {
    struct config_v0 *old = malloc(sizeof *old);
    CHECK(old != NULL);
    memset(old, 0xff, sizeof *old);
    OK(memvisor_config_init_sized((memvisor_config *)old, sizeof *old));
    CHECK(old->size == sizeof *old);
    CHECK(old->chunk_size == MIB && old->min_block == 16);
    free(old);

    /* The same on the stack, with a canary right after it. */
    struct {
        struct config_v0 c;
        unsigned char after[64];
    } guarded;
    memset(&guarded, CANARY, sizeof guarded);
    OK(memvisor_config_init_sized((memvisor_config *)&guarded.c, sizeof guarded.c));
    CHECK(guarded.c.size == sizeof guarded.c && guarded.c.chunk_size == MIB);
    CHECK(all_bytes(guarded.after, sizeof guarded.after, CANARY));

    /* Just the size field: nothing else is written. */
    size_t only_size = 0;
    OK(memvisor_config_init_sized((memvisor_config *)&only_size, sizeof only_size));
    CHECK(only_size == sizeof only_size);
}

static void test_config_init_refused_sizes(void) {
    CHECK_STATUS(memvisor_config_init_sized(NULL, sizeof(memvisor_config)),
                 MEMVISOR_STATUS_NULL_POINTER);
    /* Under the size field, cutting a field in half, or between a field's end and the
     * structure's next size: no header has such a size. */
    size_t bad[] = {0, 1, sizeof(size_t) - 1, sizeof(size_t) + 1, 2 * sizeof(size_t) + 3,
                    sizeof(memvisor_config) - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memvisor_config c;
        memset(&c, CANARY, sizeof c);
        CHECK_STATUS(memvisor_config_init_sized(&c, bad[i]), MEMVISOR_STATUS_STRUCT_SIZE);
        CHECK(all_bytes(&c, sizeof c, CANARY));
    }
}

static void test_config_init_newer_header(void) {
    struct {
        memvisor_config v1;
        uint64_t later_field;
    } newer;
    memset(&newer, CANARY, sizeof newer);
    OK(memvisor_config_init_sized(&newer.v1, sizeof newer));
    CHECK(newer.v1.size == sizeof(memvisor_config));
    CHECK(newer.v1.chunk_size == MIB && newer.v1.alignment == 4096 && newer.v1.flags == 0);
    CHECK(all_bytes(&newer.later_field, sizeof newer.later_field, CANARY));

    /* The macro passes the caller's own size. */
    memvisor_config c;
    memset(&c, CANARY, sizeof c);
    OK(memvisor_config_init(&c));
    CHECK(c.size == sizeof c && c.min_block == 16);
}

static void test_context_from_older_config(void) {
    size_t len = 2 * MIB;
    void *memory = aligned_alloc(4096, len);
    CHECK(memory != NULL);
    struct config_v0 *old = malloc(sizeof *old);
    CHECK(old != NULL);
    OK(memvisor_config_init_sized((memvisor_config *)old, sizeof *old));
    old->chunk_size = CHUNK;
    old->min_block = 32;
    memvisor_context ctx = {0};
    /* `alignment` and `flags` lie past the caller's structure: they take their defaults. */
    OK(memvisor_context_create(memory, len, (const memvisor_config *)old, &ctx));
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.chunk_size == CHUNK && s.chunks == len / CHUNK);
    CHECK(s.max_alignment == 4096 && s.accepted_flags == 0);
    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    void *p;
    size_t size = 0;
    OK(memvisor_alloc(cl, 1, &p));
    OK(memvisor_size_of(cl, p, &size));
    CHECK(size == 32);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));

    /* A size that cuts a field is refused, and nothing is made. */
    memvisor_context none = {0};
    old->size = sizeof *old - 1;
    CHECK_STATUS(memvisor_context_create(memory, len, (const memvisor_config *)old, &none),
                 MEMVISOR_STATUS_STRUCT_SIZE);
    CHECK_STATUS(memvisor_context_create_reserved(len, (const memvisor_config *)old, &none),
                 MEMVISOR_STATUS_STRUCT_SIZE);
    CHECK(none.id == 0);
    /* Only the size field: every field takes its default. */
    size_t only_size = sizeof only_size;
    OK(memvisor_context_create(memory, len, (const memvisor_config *)&only_size, &ctx));
    OK(memvisor_context_get_stats(ctx, &s));
    CHECK(s.chunk_size == MIB && s.chunks == 2);
    OK(memvisor_context_delete(ctx));
    free(old);
    free(memory);
}

static void test_stats_older_headers(void) {
    size_t len = 2 * MIB;
    void *memory = aligned_alloc(4096, len);
    CHECK(memory != NULL);
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = CHUNK;
    memvisor_context ctx;
    OK(memvisor_context_create(memory, len, &c, &ctx));
    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    void *p;
    OK(memvisor_alloc(cl, 100, &p));

    struct context_stats_v0 *s = malloc(sizeof *s);
    CHECK(s != NULL);
    memset(s, 0xff, sizeof *s);
    s->size = sizeof *s;
    OK(memvisor_context_get_stats(ctx, (memvisor_context_stats *)s));
    CHECK(s->size == sizeof *s);
    CHECK(s->total_bytes == len && s->chunk_size == CHUNK && s->chunks == len / CHUNK);
    CHECK(s->held_chunks == 1 && s->free_chunks == len / CHUNK - 1);

    struct client_stats_v0 *k = malloc(sizeof *k);
    CHECK(k != NULL);
    memset(k, 0xff, sizeof *k);
    k->size = sizeof *k;
    OK(memvisor_client_get_stats(cl, (memvisor_client_stats *)k));
    CHECK(k->size == sizeof *k && k->total_bytes == CHUNK && k->used_bytes == 112);

    /* The header before `cached_blocks`: filled up to `frees`, in a heap block of its exact
     * size (AddressSanitizer and valgrind see a write past it), the cached block counted in
     * `cached_bytes` only. */
    OK(memvisor_client_free(cl, p, NULL));
    struct client_stats_v1 *v1 = malloc(sizeof *v1);
    CHECK(v1 != NULL);
    memset(v1, 0xff, sizeof *v1);
    v1->size = sizeof *v1;
    OK(memvisor_client_get_stats(cl, (memvisor_client_stats *)v1));
    CHECK(v1->size == sizeof *v1 && v1->live_blocks == 0 && v1->cached_bytes == 112);
    CHECK(v1->allocations == 1 && v1->frees == 1);
    memvisor_client_stats now = {.size = sizeof now};
    OK(memvisor_client_get_stats(cl, &now));
    CHECK(now.size == sizeof now && now.cached_blocks == 1 && now.cached_bytes == 112);
    CHECK(sizeof now > sizeof *v1 && offsetof(memvisor_client_stats, cached_blocks) >= sizeof *v1);
    free(v1);
    OK(memvisor_alloc(cl, 100, &p));

    /* Sizes no header has are refused, and nothing is written. */
    size_t bad[] = {0, 3, sizeof(size_t) + sizeof(size_t) / 2, sizeof *k - 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memvisor_context_stats cs;
        memset(&cs, CANARY, sizeof cs);
        cs.size = bad[i];
        CHECK_STATUS(memvisor_context_get_stats(ctx, &cs), MEMVISOR_STATUS_STRUCT_SIZE);
        CHECK(cs.size == bad[i] && all_bytes(&cs.total_bytes, sizeof cs - sizeof cs.size, CANARY));
        memvisor_client_stats ks;
        memset(&ks, CANARY, sizeof ks);
        ks.size = bad[i];
        CHECK_STATUS(memvisor_client_get_stats(cl, &ks), MEMVISOR_STATUS_STRUCT_SIZE);
        CHECK(ks.size == bad[i] && all_bytes(&ks.total_bytes, sizeof ks - sizeof ks.size, CANARY));
    }

    free(k);
    free(s);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

/* The layouts this header gives on this target are the library's: the sizes the header's
 * comments promise for 64-bit targets and for 32-bit x86 (where `uint64_t` is aligned to 4
 * in a structure), the size the library writes back for each structure, and the size of
 * the first header that the `memvisor_config_init` function fills. A caller's `size` of
 * `SIZE_MAX` (a structure of some far newer header) is filled up to this library's fields
 * only. */
static void test_layouts_of_this_target(void) {
    CHECK(sizeof(memvisor_context) == 8 && sizeof(memvisor_client) == 8);
#if SIZE_MAX > UINT32_MAX
    size_t first_config = 40;
    CHECK(sizeof(memvisor_config) == 40 && offsetof(memvisor_config, flags) == 32);
    CHECK(sizeof(memvisor_context_stats) == 144);
    CHECK(offsetof(memvisor_context_stats, accepted_flags) == 136);
    CHECK(sizeof(memvisor_client_stats) == 128);
    CHECK(offsetof(memvisor_client_stats, allocations) == 104);
    CHECK(offsetof(memvisor_client_stats, cached_blocks) == 120);
#else
    size_t first_config = 20;
    CHECK(sizeof(memvisor_config) == 20 && offsetof(memvisor_config, flags) == 16);
    CHECK(sizeof(memvisor_context_stats) == 72);
    CHECK(offsetof(memvisor_context_stats, accepted_flags) == 68);
#if defined(__i386__)
    CHECK(sizeof(memvisor_client_stats) == 72);
    CHECK(offsetof(memvisor_client_stats, allocations) == 52);
    CHECK(offsetof(memvisor_client_stats, cached_blocks) == 68);
#endif
#endif
    CHECK(offsetof(memvisor_client_stats, frees) ==
          offsetof(memvisor_client_stats, allocations) + sizeof(uint64_t));

    struct {
        memvisor_config c;
        unsigned char after[64];
    } guarded;
    memset(&guarded, CANARY, sizeof guarded);
    OK((memvisor_config_init)(&guarded.c));
    CHECK(guarded.c.size == first_config && guarded.c.chunk_size == MIB);
    CHECK(all_bytes(guarded.after, sizeof guarded.after, CANARY));
    memset(&guarded, CANARY, sizeof guarded);
    OK(memvisor_config_init_sized(&guarded.c, SIZE_MAX));
    CHECK(guarded.c.size == sizeof guarded.c && guarded.c.flags == 0);
    CHECK(all_bytes(guarded.after, sizeof guarded.after, CANARY));

    void *memory = aligned_alloc(4096, 2 * MIB);
    CHECK(memory != NULL);
    memvisor_context ctx;
    OK(memvisor_context_create(memory, 2 * MIB, NULL, &ctx));
    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    struct {
        memvisor_context_stats s;
        unsigned char after[64];
    } context_stats;
    memset(&context_stats, CANARY, sizeof context_stats);
    context_stats.s.size = SIZE_MAX;
    OK(memvisor_context_get_stats(ctx, &context_stats.s));
    CHECK(context_stats.s.size == sizeof context_stats.s && context_stats.s.clients == 1);
    CHECK(context_stats.s.accepted_flags == 0 && context_stats.s.chunks == 2);
    CHECK(all_bytes(context_stats.after, sizeof context_stats.after, CANARY));
    void *p;
    OK(memvisor_alloc(cl, 100, &p));
    OK(memvisor_client_free(cl, p, NULL));
    OK(memvisor_alloc(cl, 100, &p));
    struct {
        memvisor_client_stats s;
        unsigned char after[64];
    } client_stats;
    memset(&client_stats, CANARY, sizeof client_stats);
    client_stats.s.size = SIZE_MAX;
    OK(memvisor_client_get_stats(cl, &client_stats.s));
    CHECK(client_stats.s.size == sizeof client_stats.s && client_stats.s.quota == MEMVISOR_UNLIMITED);
    CHECK(client_stats.s.allocations == 2 && client_stats.s.frees == 1);
    CHECK(client_stats.s.live_blocks == 1 && client_stats.s.used_bytes == 112);
    CHECK(client_stats.s.cached_blocks == 0 && client_stats.s.cached_bytes == 0);
    CHECK(all_bytes(client_stats.after, sizeof client_stats.after, CANARY));
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

int main(void) {
    test_config_init_older_header();
    test_config_init_refused_sizes();
    test_config_init_newer_header();
    test_context_from_older_config();
    test_stats_older_headers();
    test_layouts_of_this_target();
    return finish("sizes");
}
