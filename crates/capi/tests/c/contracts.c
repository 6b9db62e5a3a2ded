/* The promises of memvisor.h a C caller leans on beyond single error codes: refused calls
 * change no statistic, room freed through the context serves its client again, blocks are aligned, disjoint and as large as `memvisor_size_of` says in
 * every configuration, `MEMVISOR_FLAG_ZERO` and `MEMVISOR_FLAG_POISON` hold over reused and
 * dirty memory, the context's totals equal the sums of its clients' at every step, and no two
 * live contexts share memory; a chunk commit the system refuses is `OS` and changes nothing the
 * header does not allow. */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS under -std=c11 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "memvisor.h"
#include "check.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define CHUNK (64 * KIB)

static memvisor_config config_with(size_t chunk, size_t min_block, size_t alignment,
                                   uint32_t flags) {
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = chunk;
    c.min_block = min_block;
    c.alignment = alignment;
    c.flags = flags;
    return c;
}

static memvisor_client_stats client_stats(memvisor_client client) {
    memvisor_client_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    OK(memvisor_client_get_stats(client, &s));
    return s;
}

static memvisor_context_stats context_stats(memvisor_context ctx) {
    memvisor_context_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    OK(memvisor_context_get_stats(ctx, &s));
    return s;
}

/* Writes a byte in every page of the `size` bytes at `p`, and their last byte. */
static void touch_pages(void *p, size_t size) {
    unsigned char *c = p;
    for (size_t i = 0; i < size; i += 4096) {
        c[i] = 0x3c;
    }
    c[size - 1] = 0x3c;
}

/* Both statistics are as they were (the structures are filled byte for byte, padding
 * included, so `memcmp` compares them). */
#define UNCHANGED(client, ctx, before, ctx_before)                                  \
    do {                                                                            \
        memvisor_client_stats after_ = client_stats(client);                        \
        memvisor_context_stats ctx_after_ = context_stats(ctx);                     \
        CHECK(memcmp(&(before), &after_, sizeof after_) == 0);                      \
        CHECK(memcmp(&(ctx_before), &ctx_after_, sizeof ctx_after_) == 0);          \
    } while (0)

/* Calls refused for their arguments change nothing, even with blocks freed through the
 * context waiting to be taken in and a trim requested (work only a call refused for lack of
 * room may do first). */
static void test_refused_calls_change_no_statistic(void) {
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS);
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(2 * MIB, &c, &ctx));
    memvisor_client a, b;
    OK(memvisor_client_create(ctx, 512 * KIB, &a));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &b));
    void *p[8], *run, *other;
    for (int i = 0; i < 8; i++) {
        OK(memvisor_alloc(a, i < 4 ? 100 : 5000, &p[i]));
    }
    OK(memvisor_alloc(a, 2 * CHUNK, &run));
    OK(memvisor_alloc(b, 100, &other));
    OK(memvisor_client_free(a, p[0], NULL));
    OK(memvisor_client_free(a, p[4], NULL));
    OK(memvisor_free(ctx, p[1], NULL));
    OK(memvisor_free(ctx, p[5], NULL));
    OK(memvisor_free(ctx, run, NULL));
    OK(memvisor_context_trim(ctx));

    memvisor_client_stats before = client_stats(a);
    memvisor_context_stats ctx_before = context_stats(ctx);
    void *out = NULL;
    size_t size = 3;
    bool owns = true;
    memvisor_client who = {0};
    int local;
    CHECK_STATUS(memvisor_alloc(a, ctx_before.max_block_size + 1, &out),
                 MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc(a, SIZE_MAX - 100, &out), MEMVISOR_STATUS_TOO_LARGE);
    CHECK_STATUS(memvisor_alloc_aligned(a, 100, 8192, &out),
                 MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, 5000, 8192, &out),
                 MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, 3 * CHUNK, 8192, &out),
                 MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc_aligned(a, 100, 48, &out), MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
    CHECK_STATUS(memvisor_alloc(a, 100, NULL), MEMVISOR_STATUS_NULL_POINTER);
    CHECK_STATUS(memvisor_client_free(a, p[1], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_client_free(a, p[0], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_client_free(a, (char *)p[2] + 16, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_client_free(a, other, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_client_free(a, &local, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_free(ctx, p[1], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_free(ctx, p[0], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_free(ctx, (char *)p[6] + 1, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_free(ctx, &local, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_size_of(a, p[1], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_size_of(a, other, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_context_owner(ctx, p[1], &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_context_owner(ctx, (char *)p[2] + 16, &who),
                 MEMVISOR_STATUS_NOT_A_BLOCK);
    OK(memvisor_client_owns(a, p[1], &owns));
    CHECK(!owns);
    OK(memvisor_client_owns(a, other, &owns));
    CHECK(!owns);
    CHECK(out == NULL && size == 3 && who.id == 0);
    UNCHANGED(a, ctx, before, ctx_before);

    /* A second context refuses the first one's blocks as foreign. */
    memvisor_context elsewhere;
    OK(memvisor_context_create_reserved(2 * CHUNK, &c, &elsewhere));
    CHECK_STATUS(memvisor_free(elsewhere, p[2], &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_context_owner(elsewhere, p[2], &who), MEMVISOR_STATUS_FOREIGN_POINTER);
    UNCHANGED(a, ctx, before, ctx_before);
    OK(memvisor_context_delete(elsewhere));

    /* A fresh client's refusals for quota or room take no chunk. */
    memvisor_client fresh;
    OK(memvisor_client_create(ctx, 1000, &fresh));
    memvisor_client_stats fresh_before = client_stats(fresh);
    ctx_before = context_stats(ctx);
    CHECK_STATUS(memvisor_alloc(fresh, 1000, &out), MEMVISOR_STATUS_QUOTA_EXCEEDED);
    CHECK_STATUS(memvisor_alloc(fresh, 3 * CHUNK, &out), MEMVISOR_STATUS_QUOTA_EXCEEDED);
    UNCHANGED(fresh, ctx, fresh_before, ctx_before);
    OK(memvisor_client_delete(fresh));

    OK(memvisor_client_delete(a));
    OK(memvisor_client_delete(b));
    OK(memvisor_context_delete(ctx));
}

/* A run of chunks takes chunks no client holds, and the empty chunk its own client keeps
 * (given back to the context first); a chunk another client holds stays its, and a run
 * that would need it is refused with nothing changed. */
static void test_run_needs_chunks_no_client_holds(void) {
    size_t len = 6 * CHUNK;
    void *memory = aligned_alloc(CHUNK, len);
    CHECK(memory != NULL);
    memvisor_config c = config_with(CHUNK, 16, 4096, 0);
    memvisor_context ctx;
    OK(memvisor_context_create(memory, len, &c, &ctx));
    memvisor_client cl, other;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &other));
    void *p = NULL;
    OK(memvisor_alloc(cl, 100, &p));
    OK(memvisor_client_free(cl, p, NULL));
    void *held = NULL;
    OK(memvisor_alloc(other, 100, &held));
    memvisor_client_stats before = client_stats(cl);
    memvisor_context_stats ctx_before = context_stats(ctx);
    CHECK(before.live_blocks == 0 && before.chunks == 1 && before.pinned_chunks == 1);
    CHECK(ctx_before.max_block_size == len && ctx_before.largest_free_block == len - 2 * CHUNK);
    p = NULL;
    CHECK_STATUS(memvisor_alloc(cl, len, &p), MEMVISOR_STATUS_OUT_OF_MEMORY);
    CHECK(p == NULL);
    UNCHANGED(cl, ctx, before, ctx_before);
    OK(memvisor_client_delete(other));
    /* Every chunk but the one `cl` keeps is free: the run takes that one too. */
    OK(memvisor_alloc(cl, len, &p));
    memset(p, 0x5a, len);
    memvisor_client_stats after = client_stats(cl);
    CHECK(after.live_blocks == 1 && after.chunks == 6 && after.pinned_chunks == 0);
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

/* Every size and alignment in every kind of configuration: the block is aligned, at least as
 * large as asked (and as the minimum block), writable over its `memvisor_size_of` bytes,
 * and freed with that size; the largest block with the largest alignment fits a fresh client;
 * just past either limit is refused with its own code. */
static void test_blocks_fit_every_configuration(void) {
    static const size_t chunks[] = {64 * KIB, MIB};
    static const size_t min_blocks[] = {16, 256};
    static const uint32_t flags[] = {
        0,
        MEMVISOR_FLAG_GUARD | MEMVISOR_FLAG_DECOMMIT,
        MEMVISOR_FLAG_ZERO | MEMVISOR_FLAG_POISON | MEMVISOR_FLAG_STATISTICS,
    };
    for (int ci = 0; ci < 2; ci++) {
        for (int mi = 0; mi < 2; mi++) {
            for (int fi = 0; fi < 3; fi++) {
                for (size_t align = 16; align <= chunks[ci]; align *= 16) {
                    memvisor_config c = config_with(chunks[ci], min_blocks[mi], align, flags[fi]);
                    memvisor_context ctx;
                    OK(memvisor_context_create_reserved(2 * chunks[ci], &c, &ctx));
                    memvisor_context_stats x = context_stats(ctx);
                    memvisor_client cl;
                    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
                    void *p = NULL;
                    OK(memvisor_alloc_aligned(cl, x.max_block_size, x.max_alignment, &p));
                    CHECK((uintptr_t)p % x.max_alignment == 0);
                    size_t size = 0;
                    OK(memvisor_size_of(cl, p, &size));
                    CHECK(size >= x.max_block_size);
                    OK(memvisor_client_free(cl, p, NULL));
                    OK(memvisor_client_trim(cl));
                    CHECK_STATUS(memvisor_alloc(cl, x.max_block_size + 1, &p),
                                 MEMVISOR_STATUS_TOO_LARGE);
                    CHECK_STATUS(memvisor_alloc_aligned(cl, 16, x.max_alignment * 2, &p),
                                 MEMVISOR_STATUS_UNSUPPORTED_ALIGNMENT);
                    size_t one_chunk =
                        x.chunk_size < x.max_block_size ? x.chunk_size : x.max_block_size;
                    const size_t sizes[] = {0,    1,    min_blocks[mi],          100,
                                            2048, 2049, x.max_block_size / 4, one_chunk};
                    for (size_t al = 1; al <= x.max_alignment; al *= 4) {
                        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                            OK(memvisor_alloc_aligned(cl, sizes[si], al, &p));
                            CHECK((uintptr_t)p % al == 0);
                            OK(memvisor_size_of(cl, p, &size));
                            CHECK(size >= sizes[si] && size >= min_blocks[mi]);
                            touch_pages(p, size);
                            size_t freed = 0;
                            OK(memvisor_client_free(cl, p, &freed));
                            CHECK(freed == size);
                        }
                    }
                    OK(memvisor_client_delete(cl));
                    OK(memvisor_context_delete(ctx));
                }
            }
        }
    }
}

/* `MEMVISOR_FLAG_ZERO` over a caller's block full of garbage, for blocks reused after frees of
 * either kind and after a leaky client's delete; the bytes before chunk 0 are not touched. */
static void test_zero_flag_over_dirty_and_reused_memory(void) {
    size_t len = 48 * CHUNK + 4096;
    unsigned char *memory = aligned_alloc(4096, len);
    CHECK(memory != NULL);
    memset(memory, 0xcc, len);
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_ZERO);
    memvisor_context ctx;
    OK(memvisor_context_create(memory + 8, len - 8, &c, &ctx));
    static const size_t sizes[] = {0,    16,    100,   2048,      2049,
                                   4096, 30000, CHUNK, CHUNK + 1, 3 * CHUNK};
    for (int round = 0; round < 3; round++) {
        memvisor_client cl;
        OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
        for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
            for (size_t align = 16; align <= 4096; align *= 4) {
                void *p;
                size_t size;
                OK(memvisor_alloc_aligned(cl, sizes[i], align, &p));
                OK(memvisor_size_of(cl, p, &size));
                CHECK(all_bytes(p, size, 0));
                CHECK((uintptr_t)p % align == 0);
                memset(p, 0xdd, size);
                if (round == 2) {
                    continue; /* leaked: the delete takes it back */
                }
                if ((i + round) % 2) {
                    OK(memvisor_free(ctx, p, NULL));
                } else {
                    OK(memvisor_client_free(cl, p, NULL));
                }
            }
        }
        OK(memvisor_client_delete(cl));
    }
    CHECK(all_bytes(memory, 4096, 0xcc));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

/* `MEMVISOR_FLAG_POISON`: a freed block reads as the poison byte but for the free-list link of
 * small blocks; one freed through the context once its client has taken it in. */
static void test_poison_flag_fills_freed_blocks(void) {
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_POISON);
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(2 * MIB, &c, &ctx));
    memvisor_client cl;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &cl));
    static const size_t sizes[] = {16, 100, 2048, 2049, 30000, CHUNK};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        for (int remote = 0; remote < 2; remote++) {
            void *p, *keep;
            size_t size;
            OK(memvisor_alloc(cl, sizes[i], &p));
            OK(memvisor_alloc(cl, 16, &keep)); /* keeps the chunk held */
            OK(memvisor_size_of(cl, p, &size));
            memset(p, 0x11, size);
            if (remote) {
                OK(memvisor_free(ctx, p, NULL));
                OK(memvisor_client_free(cl, keep, NULL)); /* takes the block in */
            } else {
                OK(memvisor_client_free(cl, p, NULL));
            }
            size_t link = size <= 2048 ? 2 : 0;
            CHECK(all_bytes((unsigned char *)p + link, size - link, MEMVISOR_POISON_BYTE));
            if (!remote) {
                OK(memvisor_client_free(cl, keep, NULL));
            }
        }
    }
    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(ctx));
}

/* The context's totals with `MEMVISOR_FLAG_STATISTICS` against its clients' statistics, and
 * each structure's own relations, after every step of a fixed random run of every call. */
#define CLIENTS 3
#define BLOCKS 64
static void check_totals(memvisor_context ctx, const memvisor_client *cl, const int *alive) {
    size_t used = 0, live = 0, cached = 0, pinned = 0, chunks = 0, clients = 0;
    for (int i = 0; i < CLIENTS; i++) {
        if (!alive[i]) {
            continue;
        }
        memvisor_client_stats s = client_stats(cl[i]);
        CHECK(s.total_bytes == s.chunks * CHUNK && s.free_bytes == s.total_bytes - s.used_bytes);
        CHECK(s.pinned_chunks <= 1 && s.cached_chunks <= s.pinned_chunks);
        CHECK(s.pinned_bytes == s.pinned_chunks * CHUNK);
        CHECK(s.peak_used_bytes >= s.used_bytes && s.cached_bytes <= s.free_bytes);
        CHECK(s.largest_free_block <= s.free_bytes);
        CHECK(s.quota == MEMVISOR_UNLIMITED || s.used_bytes <= s.quota);
        CHECK(s.frees <= s.allocations && s.allocations - s.frees >= s.live_blocks);
        used += s.used_bytes;
        live += s.live_blocks;
        cached += s.cached_bytes;
        pinned += s.pinned_chunks;
        chunks += s.chunks;
        clients++;
    }
    memvisor_context_stats x = context_stats(ctx);
    CHECK(x.used_bytes == used && x.live_blocks == live && x.cached_bytes == cached);
    CHECK(x.pinned_chunks == pinned && x.held_chunks == chunks && x.clients == clients);
    CHECK(x.free_chunks + x.held_chunks == x.chunks && x.free_bytes == x.free_chunks * CHUNK);
    CHECK(x.total_bytes == x.chunks * CHUNK && x.largest_free_block <= x.free_bytes);
}

static void test_context_totals_equal_client_sums(void) {
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS);
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(2 * MIB, &c, &ctx));
    memvisor_client cl[CLIENTS];
    int alive[CLIENTS] = {0};
    void *blocks[CLIENTS][BLOCKS];
    int count[CLIENTS] = {0};
    static const size_t sizes[] = {10, 100, 700, 2048, 3000, 20000, 70000};
    unsigned seed = 7;
    int before = failures;
    for (int step = 0; step < 800 && failures == before; step++) {
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 8;
        int i = (int)(r % CLIENTS);
        r /= CLIENTS;
        if (!alive[i]) {
            OK(memvisor_client_create(ctx, (r & 1) ? MEMVISOR_UNLIMITED : 300 * KIB, &cl[i]));
            alive[i] = 1;
            count[i] = 0;
        } else if (r % 10 < 4) {
            void *p;
            if (count[i] < BLOCKS && memvisor_alloc(cl[i], sizes[(r / 10) % 7], &p) == 0) {
                blocks[i][count[i]++] = p;
            }
        } else if (r % 10 < 8 && count[i] > 0) {
            int k = (int)((r / 10) % (unsigned)count[i]);
            if (r % 10 < 6) {
                OK(memvisor_client_free(cl[i], blocks[i][k], NULL));
            } else {
                OK(memvisor_free(ctx, blocks[i][k], NULL));
            }
            blocks[i][k] = blocks[i][--count[i]];
        } else if (r % 10 == 8) {
            switch ((r / 10) % 4) {
            case 0:
                OK(memvisor_client_delete(cl[i]));
                alive[i] = 0;
                break;
            case 1:
                OK(memvisor_client_trim(cl[i]));
                break;
            default:
                OK(memvisor_context_trim(ctx));
                break;
            }
        }
        check_totals(ctx, cl, alive);
    }
    for (int i = 0; i < CLIENTS; i++) {
        if (alive[i]) {
            OK(memvisor_client_delete(cl[i]));
        }
    }
    memvisor_context_stats x = context_stats(ctx);
    CHECK(x.used_bytes == 0 && x.live_blocks == 0 && x.cached_bytes == 0);
    CHECK(x.pinned_chunks == 0 && x.held_chunks == 0 && x.clients == 0);
    OK(memvisor_context_delete(ctx));
}

/* The bytes of a caller's block outside its chunks (before chunk 0, which starts at the block
 * rounded up to the alignment, and a tail shorter than a chunk) are not the context's memory:
 * every function calls an address there foreign, and none reads it (both are unreadable
 * here, so a read would end the program). */
static void test_block_head_and_tail_are_foreign_and_never_read(void) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (page == 0 || page >= CHUNK) {
        return; /* no page fits before a chunk boundary without being a chunk's */
    }
    size_t span = 5 * CHUNK;
    unsigned char *map = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED) {
        return;
    }
    unsigned char *aligned = map + (CHUNK - (uintptr_t)map % CHUNK) % CHUNK;
    /* One page of head, two chunks, one page of tail. */
    unsigned char *head = aligned + CHUNK - page;
    unsigned char *tail = aligned + 3 * CHUNK;
    CHECK(mprotect(head, page, PROT_NONE) == 0);
    CHECK(mprotect(tail, page, PROT_NONE) == 0);

    memvisor_config c = config_with(CHUNK, 16, CHUNK, MEMVISOR_FLAG_STATISTICS);
    memvisor_context ctx;
    OK(memvisor_context_create(head, 2 * CHUNK + 2 * page, &c, &ctx));
    CHECK(context_stats(ctx).chunks == 2);
    memvisor_client a;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    void *block = NULL;
    OK(memvisor_alloc(a, 100, &block));
    CHECK((unsigned char *)block >= aligned + CHUNK && (unsigned char *)block < tail);
    memvisor_context_stats before = context_stats(ctx);

    unsigned char *outside[] = {head, head + page / 2, head + page - 16, tail, tail + 16,
                                tail + page - 1};
    for (size_t i = 0; i < sizeof outside / sizeof outside[0]; i++) {
        void *p = outside[i];
        size_t size = 7;
        bool yes = true;
        memvisor_client who = {0};
        CHECK_STATUS(memvisor_free(ctx, p, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
        CHECK_STATUS(memvisor_client_free(a, p, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
        CHECK_STATUS(memvisor_size_of(a, p, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
        CHECK_STATUS(memvisor_context_owner(ctx, p, &who), MEMVISOR_STATUS_FOREIGN_POINTER);
        OK(memvisor_client_owns(a, p, &yes));
        CHECK(size == 7 && who.id == 0 && !yes);
    }
    memvisor_context_stats after = context_stats(ctx);
    CHECK(memcmp(&before, &after, sizeof before) == 0);

    OK(memvisor_client_free(a, block, NULL));
    OK(memvisor_client_delete(a));
    OK(memvisor_context_delete(ctx));
    CHECK(munmap(map, span) == 0);
}

/* Two live contexts never share memory: a block that shares a byte with a live context's
 * (a caller's block, a block allocated from it, or a reservation's) is refused with
 * `BLOCK_IN_USE`, writing nothing and changing nothing; blocks beside it are accepted, and
 * once the context is deleted its memory is the caller's to use again. */
static void test_overlapping_blocks_refused(void) {
    size_t len = 4 * CHUNK;
    unsigned char *memory = aligned_alloc(CHUNK, 3 * len);
    CHECK(memory != NULL);
    if (memory == NULL) {
        return;
    }
    unsigned char *middle = memory + len;
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS);
    memvisor_context live;
    OK(memvisor_context_create(middle, len, &c, &live));
    memvisor_client cl;
    OK(memvisor_client_create(live, MEMVISOR_UNLIMITED, &cl));
    void *block = NULL;
    OK(memvisor_alloc(cl, 2 * CHUNK, &block));
    memvisor_context_stats before = context_stats(live);

    struct {
        void *at;
        size_t len;
    } overlapping[] = {
        {middle, len},           {middle, 1},           {middle + len - 1, len},
        {middle + CHUNK, CHUNK}, {memory, len + 1},     {memory, 3 * len},
        {block, 2 * CHUNK},      {memory + 1, 3 * len - 2},
    };
    for (size_t i = 0; i < sizeof overlapping / sizeof overlapping[0]; i++) {
        memvisor_context ctx = {0};
        CHECK_STATUS(memvisor_context_create(overlapping[i].at, overlapping[i].len, &c, &ctx),
                     MEMVISOR_STATUS_BLOCK_IN_USE);
        CHECK(ctx.id == 0);
    }
    memvisor_context_stats after = context_stats(live);
    CHECK(memcmp(&before, &after, sizeof before) == 0);

    /* The blocks beside it touch it without sharing a byte. */
    unsigned char *beside[] = {memory, middle + len};
    for (size_t i = 0; i < 2; i++) {
        memvisor_context ctx;
        OK(memvisor_context_create(beside[i], len, &c, &ctx));
        OK(memvisor_context_delete(ctx));
    }

    /* A reservation-backed context's memory is refused too. */
    memvisor_context reserved;
    OK(memvisor_context_create_reserved(len, &c, &reserved));
    memvisor_client rc;
    OK(memvisor_client_create(reserved, MEMVISOR_UNLIMITED, &rc));
    void *inside = NULL;
    OK(memvisor_alloc(rc, 2 * CHUNK, &inside));
    memvisor_context ctx = {0};
    CHECK_STATUS(memvisor_context_create(inside, 2 * CHUNK, &c, &ctx), MEMVISOR_STATUS_BLOCK_IN_USE);
    CHECK(ctx.id == 0);
    OK(memvisor_client_delete(rc));
    OK(memvisor_context_delete(reserved));

    OK(memvisor_client_delete(cl));
    OK(memvisor_context_delete(live));
    OK(memvisor_context_create(memory, 3 * len, &c, &ctx));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

/* An allocation refused for want of a chunk asks every client of the context to trim, as
 * `memvisor_context_trim` does: another client's cached blocks and empty chunk go back to the
 * context at its next free or allocation that misses its caches. */
static void test_out_of_memory_asks_every_client_to_trim(void) {
    size_t len = 4 * CHUNK;
    void *memory = aligned_alloc(CHUNK, len);
    CHECK(memory != NULL);
    if (memory == NULL) {
        return;
    }
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS);
    memvisor_context ctx;
    OK(memvisor_context_create(memory, len, &c, &ctx));
    memvisor_client a, b;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &b));
    void *x = NULL, *y = NULL, *p = NULL;
    OK(memvisor_alloc(a, 100, &x));
    OK(memvisor_alloc(a, 100, &y));
    OK(memvisor_client_free(a, x, NULL));
    memvisor_client_stats kept = client_stats(a);
    CHECK(kept.chunks == 1 && kept.cached_bytes > 0);
    while (memvisor_alloc(b, CHUNK, &p) == MEMVISOR_STATUS_OK) {
    }
    CHECK_STATUS(memvisor_alloc(b, CHUNK, &p), MEMVISOR_STATUS_OUT_OF_MEMORY);
    /* `a` takes the request in at its next free: it gives back its cache and its chunk. */
    OK(memvisor_client_free(a, y, NULL));
    memvisor_client_stats after = client_stats(a);
    CHECK(after.chunks == 0 && after.cached_bytes == 0);
    CHECK(context_stats(ctx).free_chunks == 1);
    OK(memvisor_client_delete(a));
    OK(memvisor_client_delete(b));
    OK(memvisor_context_delete(ctx));
    free(memory);
}

/* Bytes of private writable memory the process maps (`VmData`), 0 if unknown. */
static size_t data_bytes(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) {
        return 0;
    }
    char line[256];
    size_t kib = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "VmData: %zu kB", &kib) == 1) {
            break;
        }
    }
    fclose(f);
    return kib * KIB;
}

/* Linux counts private writable memory against `RLIMIT_DATA`, and `mprotect` making pages
 * writable past it fails with `ENOMEM`: with the limit lowered to what the process maps, the
 * commit of the chunk a client takes for its first block is refused by the system. The
 * allocation is `OS`, the client and the context are as before, and once the limit is lifted
 * the same request succeeds. With `MEMVISOR_FLAG_GUARD` the chunk's guard page is set first;
 * with `MEMVISOR_FLAG_DECOMMIT` the chunk was committed, given back and decommitted before.
 * With `run` over 1 the block is a run of `run` chunks and the limit leaves room for all but
 * the last one's commit: the chunks committed before the refusal are decommitted again, so
 * the context's statistics are as before too. (Where the limit does not bind, as under valgrind, there is
 * nothing to test.) */
static void test_commit_refused_by_the_system_is_os(uint32_t flags, size_t run) {
    size_t size = run > 1 ? run * CHUNK : 100;
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS | flags);
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(16 * CHUNK, &c, &ctx));
    memvisor_client a, b;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &b));
    void *small = NULL, *p = NULL;
    OK(memvisor_alloc(a, 100, &small));
    touch_pages(small, 100);
    if (flags & MEMVISOR_FLAG_DECOMMIT) {
        /* `b`'s chunk is committed, given back and decommitted. */
        OK(memvisor_alloc(b, size, &p));
        OK(memvisor_client_free(b, p, NULL));
        OK(memvisor_client_trim(b));
        CHECK(client_stats(b).chunks == 0);
        CHECK(context_stats(ctx).cached_chunks == 0);
        p = NULL;
    }
    memvisor_client_stats before = client_stats(b);
    memvisor_client_stats a_before = client_stats(a);
    memvisor_context_stats ctx_before = context_stats(ctx);
    struct rlimit old;
    size_t data = data_bytes();
    if (data == 0 || getrlimit(RLIMIT_DATA, &old) != 0) {
        OK(memvisor_client_free(a, small, NULL));
        OK(memvisor_client_delete(a));
        OK(memvisor_client_delete(b));
        OK(memvisor_context_delete(ctx));
        return;
    }
    struct rlimit tight = old;
    tight.rlim_cur = data + (run - 1) * CHUNK;
    CHECK(setrlimit(RLIMIT_DATA, &tight) == 0);
    /* Does the limit bind? Writable memory past the room it leaves must be refused. */
    size_t over = (run - 1) * CHUNK + 4096;
    void *probe = mmap(NULL, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int binds = probe == MAP_FAILED;
    if (!binds) {
        munmap(probe, over);
    }
    memvisor_status refused = MEMVISOR_STATUS_OK;
    memvisor_status again = MEMVISOR_STATUS_OK;
    memvisor_client_stats during;
    memset(&during, 0, sizeof during);
    if (binds) {
        /* `b` holds no chunk: its first block needs one. */
        refused = memvisor_alloc(b, size, &p);
        during = client_stats(b);
        /* Still refused while the limit stands: nothing was half taken. */
        again = memvisor_alloc(b, size, &p);
    }
    CHECK(setrlimit(RLIMIT_DATA, &old) == 0);
    if (binds) {
        CHECK_STATUS(refused, MEMVISOR_STATUS_OS);
        CHECK_STATUS(again, MEMVISOR_STATUS_OS);
        CHECK(p == NULL);
        CHECK(memcmp(&before, &during, sizeof during) == 0);
        memvisor_client_stats b_after = client_stats(b);
        CHECK(memcmp(&before, &b_after, sizeof b_after) == 0);
        memvisor_context_stats ctx_after = context_stats(ctx);
        CHECK(memcmp(&ctx_before, &ctx_after, sizeof ctx_after) == 0);
        memvisor_client_stats a_after = client_stats(a);
        CHECK(memcmp(&a_before, &a_after, sizeof a_after) == 0);
        /* The refusal is over: the same request succeeds, in memory that can be written. */
        OK(memvisor_alloc(b, size, &p));
        CHECK(p != NULL);
        if (p != NULL) {
            touch_pages(p, size);
        }
        memvisor_client_stats after = client_stats(b);
        CHECK(after.chunks == before.chunks + run);
        CHECK(after.live_blocks == before.live_blocks + 1);
        CHECK(after.allocations == before.allocations + 1);
        CHECK(context_stats(ctx).held_chunks == ctx_before.held_chunks + run);
        OK(memvisor_client_free(b, p, NULL));
    } else if (flags == 0 && run == 1) {
        printf("contracts: RLIMIT_DATA does not bind here; commit refusal not tested\n");
    }
    OK(memvisor_client_free(a, small, NULL));
    OK(memvisor_client_delete(a));
    OK(memvisor_client_delete(b));
    OK(memvisor_context_delete(ctx));
}

/* Every pointer a careless caller may pass to the calls that take one: misaligned, one past
 * a block or a run, from malloc, a block of a deleted client, a double free, and a deleted
 * client's handle. Each is refused with its status, writes no output and changes no
 * statistic of the context or of the client asked. */
static void test_pointers_of_every_shape_refused_and_change_nothing(void) {
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS);
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(8 * CHUNK, &c, &ctx));
    memvisor_client a, gone;
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &a));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &gone));
    void *small, *pages, *run, *lost, *twice;
    OK(memvisor_alloc(a, 100, &small));
    OK(memvisor_alloc(a, 5000, &pages));
    OK(memvisor_alloc(a, 2 * CHUNK, &run));
    OK(memvisor_alloc(a, 48, &twice));
    OK(memvisor_client_free(a, twice, NULL));
    OK(memvisor_alloc(gone, 100, &lost));
    size_t small_size = 0, pages_size = 0, run_size = 0;
    OK(memvisor_size_of(a, small, &small_size));
    OK(memvisor_size_of(a, pages, &pages_size));
    OK(memvisor_size_of(a, run, &run_size));
    memvisor_client gone_handle = gone;
    OK(memvisor_client_delete(gone));
    void *heap = malloc(256);
    CHECK(heap != NULL);

    memvisor_client_stats before = client_stats(a);
    memvisor_context_stats ctx_before = context_stats(ctx);
    size_t size = 3;
    bool owns = true;
    memvisor_client who = {0};
    /* Misaligned and interior: inside a live block, never the start of one. */
    void *inside[] = {(char *)small + 1, (char *)small + 8, (char *)pages + 16,
                      (char *)pages + 256, (char *)run + CHUNK, (char *)run + 8};
    for (size_t i = 0; i < sizeof inside / sizeof inside[0]; i++) {
        CHECK_STATUS(memvisor_client_free(a, inside[i], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK_STATUS(memvisor_free(ctx, inside[i], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK_STATUS(memvisor_size_of(a, inside[i], &size), MEMVISOR_STATUS_NOT_A_BLOCK);
        CHECK_STATUS(memvisor_context_owner(ctx, inside[i], &who), MEMVISOR_STATUS_NOT_A_BLOCK);
        OK(memvisor_client_owns(a, inside[i], &owns));
        CHECK(!owns);
        owns = true;
    }
    /* One past a block: no block starts there (the slab's next block was never handed out,
     * the pages' and the run's ends are free or no client's). */
    void *past[] = {(char *)small + small_size, (char *)pages + pages_size,
                    (char *)run + run_size};
    for (size_t i = 0; i < sizeof past / sizeof past[0]; i++) {
        memvisor_status st = memvisor_client_free(a, past[i], &size);
        CHECK(st == MEMVISOR_STATUS_NOT_A_BLOCK || st == MEMVISOR_STATUS_NOT_OWNED ||
              st == MEMVISOR_STATUS_FOREIGN_POINTER);
        st = memvisor_free(ctx, past[i], &size);
        CHECK(st == MEMVISOR_STATUS_NOT_A_BLOCK || st == MEMVISOR_STATUS_NOT_OWNED ||
              st == MEMVISOR_STATUS_FOREIGN_POINTER);
        st = memvisor_context_owner(ctx, past[i], &who);
        CHECK(st == MEMVISOR_STATUS_NOT_A_BLOCK || st == MEMVISOR_STATUS_FOREIGN_POINTER);
    }
    /* From malloc: outside the context. */
    CHECK_STATUS(memvisor_client_free(a, heap, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_free(ctx, heap, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_size_of(a, heap, &size), MEMVISOR_STATUS_FOREIGN_POINTER);
    CHECK_STATUS(memvisor_context_owner(ctx, heap, &who), MEMVISOR_STATUS_FOREIGN_POINTER);
    /* A block of a deleted client: its chunk went back to the context. */
    CHECK_STATUS(memvisor_client_free(a, lost, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_free(ctx, lost, &size), MEMVISOR_STATUS_NOT_OWNED);
    CHECK_STATUS(memvisor_context_owner(ctx, lost, &who), MEMVISOR_STATUS_NOT_A_BLOCK);
    /* A double free, by the client and through the context. */
    CHECK_STATUS(memvisor_client_free(a, twice, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    CHECK_STATUS(memvisor_free(ctx, twice, &size), MEMVISOR_STATUS_NOT_A_BLOCK);
    /* A deleted client's handle, and the null handle, with a live block of another client. */
    memvisor_client null_handle = {0};
    memvisor_client handles[] = {gone_handle, null_handle};
    for (size_t i = 0; i < 2; i++) {
        CHECK_STATUS(memvisor_client_free(handles[i], small, &size),
                     MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_size_of(handles[i], small, &size), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK_STATUS(memvisor_client_owns(handles[i], small, &owns),
                     MEMVISOR_STATUS_INVALID_HANDLE);
        void *out = NULL;
        CHECK_STATUS(memvisor_alloc(handles[i], 16, &out), MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(out == NULL);
    }
    CHECK(size == 3 && owns && who.id == 0);
    UNCHANGED(a, ctx, before, ctx_before);
    /* The blocks asked about are untouched and still the client's. */
    OK(memvisor_client_free(a, small, NULL));
    OK(memvisor_client_free(a, pages, NULL));
    OK(memvisor_client_free(a, run, NULL));
    free(heap);
    OK(memvisor_client_delete(a));
    OK(memvisor_context_delete(ctx));
}

/* Room given back with `memvisor_free` (libvmma's way of freeing: through the context) serves
 * the block's client again at once: its next allocation takes the freed blocks in before it
 * would refuse for its quota or for want of chunks, so it is not refused. */
static void test_room_freed_through_the_context_serves_the_next_allocation(void) {
    memvisor_config c = config_with(CHUNK, 16, 4096, MEMVISOR_FLAG_STATISTICS);
    memvisor_context ctx;
    OK(memvisor_context_create_reserved(4 * CHUNK, &c, &ctx));
    memvisor_client quota, whole;
    OK(memvisor_client_create(ctx, 4 * KIB, &quota));
    OK(memvisor_client_create(ctx, MEMVISOR_UNLIMITED, &whole));

    /* At its quota: a block freed through the context makes room for blocks of any size. */
    void *p = NULL, *q = NULL, *r = NULL;
    OK(memvisor_alloc(quota, 4 * KIB, &p));
    CHECK_STATUS(memvisor_alloc(quota, 16, &q), MEMVISOR_STATUS_QUOTA_EXCEEDED);
    OK(memvisor_free(ctx, p, NULL));
    OK(memvisor_alloc(quota, 2 * KIB, &q));
    OK(memvisor_alloc(quota, 2 * KIB, &r));
    CHECK_STATUS(memvisor_alloc(quota, 16, &p), MEMVISOR_STATUS_QUOTA_EXCEEDED);
    OK(memvisor_free(ctx, q, NULL));
    OK(memvisor_free(ctx, r, NULL));
    OK(memvisor_alloc(quota, 4 * KIB, &p));
    memvisor_client_stats s = client_stats(quota);
    CHECK(s.used_bytes == 4 * KIB && s.live_blocks == 1);
    OK(memvisor_client_free(quota, p, NULL));
    OK(memvisor_client_trim(quota));

    /* Every chunk of the context in one run: freed through the context, the same run again,
     * then a small block. */
    OK(memvisor_alloc(whole, 4 * CHUNK, &p));
    CHECK_STATUS(memvisor_alloc(quota, 16, &q), MEMVISOR_STATUS_OUT_OF_MEMORY);
    OK(memvisor_free(ctx, p, NULL));
    OK(memvisor_alloc(whole, 4 * CHUNK, &p));
    OK(memvisor_free(ctx, p, NULL));
    OK(memvisor_alloc(whole, 100, &q));
    s = client_stats(whole);
    CHECK(s.live_blocks == 1 && s.chunks == 1);
    /* A run of the three chunks left, freed through the context while the fourth is held:
     * the run again. */
    OK(memvisor_alloc(whole, 3 * CHUNK, &p));
    OK(memvisor_free(ctx, p, NULL));
    OK(memvisor_alloc(whole, 3 * CHUNK, &p));
    memvisor_context_stats cs = context_stats(ctx);
    CHECK(cs.held_chunks == 4 && cs.live_blocks == 2);
    OK(memvisor_client_delete(whole));
    OK(memvisor_client_delete(quota));
    OK(memvisor_context_delete(ctx));
}

int main(void) {
    test_refused_calls_change_no_statistic();
    test_room_freed_through_the_context_serves_the_next_allocation();
    test_pointers_of_every_shape_refused_and_change_nothing();
    test_run_needs_chunks_no_client_holds();
    test_blocks_fit_every_configuration();
    test_zero_flag_over_dirty_and_reused_memory();
    test_poison_flag_fills_freed_blocks();
    test_context_totals_equal_client_sums();
    test_block_head_and_tail_are_foreign_and_never_read();
    test_overlapping_blocks_refused();
    test_out_of_memory_asks_every_client_to_trim();
    test_commit_refused_by_the_system_is_os(0, 1);
    test_commit_refused_by_the_system_is_os(MEMVISOR_FLAG_GUARD, 1);
    test_commit_refused_by_the_system_is_os(MEMVISOR_FLAG_DECOMMIT, 1);
    test_commit_refused_by_the_system_is_os(MEMVISOR_FLAG_GUARD | MEMVISOR_FLAG_DECOMMIT, 1);
    test_commit_refused_by_the_system_is_os(0, 3);
    test_commit_refused_by_the_system_is_os(MEMVISOR_FLAG_DECOMMIT, 3);
    return finish("contracts");
}
