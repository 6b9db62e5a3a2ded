/* fork() with live contexts: a child of a process with no call of the library in flight gets
 * its own copies of the contexts and clients, under the same handles, over its own copy of
 * their memory; what it does with them leaves the parent's alone. */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "memvisor.h"
#include "check.h"

#define KIB ((size_t)1 << 10)
#define MIB ((size_t)1 << 20)
#define BLOCKS 24

static memvisor_context_stats context_stats(memvisor_context ctx) {
    memvisor_context_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    OK(memvisor_context_get_stats(ctx, &s));
    return s;
}

static memvisor_client_stats client_stats(memvisor_client client) {
    memvisor_client_stats s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    OK(memvisor_client_get_stats(client, &s));
    return s;
}

/* The size of block `i`: small, page-sized and larger than a chunk. */
static size_t block_size(int i) {
    static const size_t sizes[] = {24, 100, 2000, 5000, 70 * KIB, 200 * KIB};
    return sizes[i % 6];
}

/* Block `i` of a context filled with a byte of its own. */
static unsigned char fill_of(int ctx, int i) {
    return (unsigned char)(0x10 + ctx * 0x40 + i);
}

/* What the child does with its copies: checks them, frees through the client and through the
 * context, allocates and writes, deletes every client and context, makes a context of its
 * own. Returns the number of failed checks (its exit status). */
static int child(memvisor_context *ctx, memvisor_client *cl, void *blocks[][BLOCKS],
                 void *memory) {
    for (int c = 0; c < 2; c++) {
        for (int i = 0; i < BLOCKS; i++) {
            CHECK(all_bytes(blocks[c][i], block_size(i), fill_of(c, i)));
            memvisor_client owner = {0};
            OK(memvisor_context_owner(ctx[c], blocks[c][i], &owner));
            CHECK(owner.id == cl[c].id);
            size_t size = 0;
            if (i % 2) {
                OK(memvisor_free(ctx[c], blocks[c][i], &size));
            } else {
                OK(memvisor_client_free(cl[c], blocks[c][i], &size));
            }
            CHECK(size >= block_size(i));
        }
        for (int i = 0; i < BLOCKS; i++) {
            void *p = NULL;
            OK(memvisor_alloc(cl[c], block_size(i), &p));
            if (p != NULL) {
                memset(p, 0xee, block_size(i));
            }
        }
        OK(memvisor_client_trim(cl[c]));
        OK(memvisor_context_trim(ctx[c]));
        OK(memvisor_client_delete(cl[c]));
        OK(memvisor_context_delete(ctx[c]));
    }
    /* Its copy of the caller's block is its own to reuse, for a context of its own. */
    memvisor_context own;
    OK(memvisor_context_create(memory, 2 * MIB, NULL, &own));
    OK(memvisor_context_delete(own));
    free(memory);
    return failures;
}

static void test_child_uses_its_copies_parent_unchanged(uint32_t reserved_flags) {
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = 64 * KIB;
    c.flags = MEMVISOR_FLAG_STATISTICS;
    size_t len = 2 * MIB;
    void *memory = aligned_alloc(4096, len);
    CHECK(memory != NULL);
    memvisor_context ctx[2];
    OK(memvisor_context_create(memory, len, &c, &ctx[0]));
    c.flags = MEMVISOR_FLAG_STATISTICS | reserved_flags;
    OK(memvisor_context_create_reserved(len, &c, &ctx[1]));

    memvisor_client cl[2];
    void *blocks[2][BLOCKS];
    for (int k = 0; k < 2; k++) {
        OK(memvisor_client_create(ctx[k], MEMVISOR_UNLIMITED, &cl[k]));
        for (int i = 0; i < BLOCKS; i++) {
            blocks[k][i] = NULL;
            OK(memvisor_alloc(cl[k], block_size(i), &blocks[k][i]));
            if (blocks[k][i] != NULL) {
                memset(blocks[k][i], fill_of(k, i), block_size(i));
            }
        }
    }
    memvisor_context_stats before[2] = {context_stats(ctx[0]), context_stats(ctx[1])};
    memvisor_client_stats client_before[2] = {client_stats(cl[0]), client_stats(cl[1])};

    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        exit(child(ctx, cl, blocks, memory));
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    for (int k = 0; k < 2; k++) {
        memvisor_context_stats after = context_stats(ctx[k]);
        CHECK(memcmp(&before[k], &after, sizeof after) == 0);
        memvisor_client_stats client_after = client_stats(cl[k]);
        CHECK(memcmp(&client_before[k], &client_after, sizeof client_after) == 0);
        for (int i = 0; i < BLOCKS; i++) {
            CHECK(all_bytes(blocks[k][i], block_size(i), fill_of(k, i)));
            OK(memvisor_client_free(cl[k], blocks[k][i], NULL));
        }
        OK(memvisor_client_delete(cl[k]));
        OK(memvisor_context_delete(ctx[k]));
    }
    free(memory);
}

int main(void) {
    test_child_uses_its_copies_parent_unchanged(0);
    test_child_uses_its_copies_parent_unchanged(MEMVISOR_FLAG_DECOMMIT);
    return finish("fork");
}
