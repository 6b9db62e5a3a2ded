/* Contexts are shared between threads; each client is used by one thread at a time. */
#define _POSIX_C_SOURCE 200809L /* pthread barriers under -std=c11 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "memvisor.h"
#include "check.h"

#define THREADS 4
#define ROUNDS 20
#define BLOCKS 200

static memvisor_context shared_ctx;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int thread_failures;

static void fail_locked(void) {
    pthread_mutex_lock(&lock);
    thread_failures++;
    pthread_mutex_unlock(&lock);
}

/* Each round: a client of the shared context, blocks filled with a pattern, checked, and the
 * client deleted with half of them leaked. */
static void *program(void *arg) {
    unsigned char tag = (unsigned char)(uintptr_t)arg;
    void *blocks[BLOCKS];
    for (int round = 0; round < ROUNDS; round++) {
        memvisor_client cl;
        if (memvisor_client_create(shared_ctx, MEMVISOR_UNLIMITED, &cl) != MEMVISOR_STATUS_OK) {
            fail_locked();
            return NULL;
        }
        for (int i = 0; i < BLOCKS; i++) {
            size_t size = 16 + (size_t)((i * 37 + round) % 900);
            if (memvisor_alloc(cl, size, &blocks[i]) != MEMVISOR_STATUS_OK) {
                fail_locked();
                blocks[i] = NULL;
                continue;
            }
            memset(blocks[i], tag, 16);
        }
        for (int i = 0; i < BLOCKS; i += 2) {
            const unsigned char *b = blocks[i];
            if (b == NULL || b[0] != tag || b[15] != tag) {
                fail_locked();
            }
            if (b != NULL && memvisor_client_free(cl, blocks[i], NULL) != MEMVISOR_STATUS_OK) {
                fail_locked();
            }
        }
        if (memvisor_client_delete(cl) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
    }
    return NULL;
}

/* Context functions from another thread while the programs run. */
static void *observer(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        memvisor_context_stats s = {.size = sizeof s};
        uint32_t flags;
        if (memvisor_context_get_stats(shared_ctx, &s) != MEMVISOR_STATUS_OK ||
            s.held_chunks + s.free_chunks != s.chunks ||
            memvisor_context_accepted_flags(shared_ctx, &flags) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
        /* Deleting a context in use is refused, never done. */
        memvisor_status st = memvisor_context_delete(shared_ctx);
        if (st != MEMVISOR_STATUS_CONTEXT_BUSY && st != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
        if (st == MEMVISOR_STATUS_OK) {
            /* Only possible between rounds with no client: make it again is not allowed
             * here, so count it as a failure of the test's assumptions. */
            fail_locked();
            return NULL;
        }
    }
    return NULL;
}

/* A client handed from one thread to another (with the join as the synchronisation). */
static memvisor_client handed;
static void *second_owner(void *arg) {
    void *p = arg;
    size_t size = 0;
    if (memvisor_size_of(handed, p, &size) != MEMVISOR_STATUS_OK || size != 112 ||
        memvisor_client_free(handed, p, NULL) != MEMVISOR_STATUS_OK) {
        fail_locked();
    }
    return NULL;
}

/* Frees through the context on one thread while the blocks' client allocates on another. */
#define REMOTE 2000
static void *remote_blocks[REMOTE];
static void *remote_freer(void *arg) {
    (void)arg;
    for (int i = 0; i < REMOTE; i += 2) {
        size_t size = 0;
        if (memvisor_free(shared_ctx, remote_blocks[i], &size) != MEMVISOR_STATUS_OK || size < 16) {
            fail_locked();
        }
    }
    return NULL;
}

static void test_remote_frees(void) {
    memvisor_client cl;
    OK(memvisor_client_create(shared_ctx, MEMVISOR_UNLIMITED, &cl));
    for (int i = 0; i < REMOTE; i++) {
        OK(memvisor_alloc(cl, 16 + (size_t)(i % 500), &remote_blocks[i]));
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, remote_freer, NULL) == 0);
    for (int round = 0; round < 50; round++) {
        void *p[20];
        for (int i = 0; i < 20; i++) {
            OK(memvisor_alloc(cl, 48, &p[i]));
        }
        for (int i = 0; i < 20; i++) {
            OK(memvisor_client_free(cl, p[i], NULL));
        }
    }
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(thread_failures == 0);
    for (int i = 1; i < REMOTE; i += 2) {
        OK(memvisor_client_free(cl, remote_blocks[i], NULL));
    }
    OK(memvisor_client_trim(cl));
    memvisor_client_stats cs = {.size = sizeof cs};
    OK(memvisor_client_get_stats(cl, &cs));
    CHECK(cs.live_blocks == 0 && cs.used_bytes == 0 && cs.chunks == 0);
    OK(memvisor_client_delete(cl));
}

/* A client deleted while another thread frees its blocks through the context: the delete
 * waits for the free in flight, and later frees are refused. */
static memvisor_client doomed;
static void *doomed_deleter(void *arg) {
    (void)arg;
    if (memvisor_client_delete(doomed) != MEMVISOR_STATUS_OK) {
        fail_locked();
    }
    return NULL;
}

static void test_delete_during_remote_frees(void) {
    OK(memvisor_client_create(shared_ctx, MEMVISOR_UNLIMITED, &doomed));
    for (int i = 0; i < REMOTE; i++) {
        OK(memvisor_alloc(doomed, 64, &remote_blocks[i]));
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, doomed_deleter, NULL) == 0);
    for (int i = 0; i < REMOTE; i++) {
        memvisor_status st = memvisor_free(shared_ctx, remote_blocks[i], NULL);
        CHECK(st == MEMVISOR_STATUS_OK || st == MEMVISOR_STATUS_NOT_OWNED ||
              st == MEMVISOR_STATUS_NOT_A_BLOCK);
    }
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(thread_failures == 0);
}

/* A context deleted by two threads at once while a third makes contexts of its own and uses
 * them: one delete succeeds and the other is refused, and the third thread's contexts (which
 * may take the deleted one's slot) answer every call and are deleted at the first try. */
#define DOUBLE_DELETE_ROUNDS 300
static memvisor_context victim;
static pthread_barrier_t round_start;
static memvisor_status delete_status[2];
static atomic_int bystander_done;

static void *double_deleter(void *arg) {
    int me = (int)(uintptr_t)arg;
    for (int round = 0; round < DOUBLE_DELETE_ROUNDS; round++) {
        pthread_barrier_wait(&round_start);
        delete_status[me] = memvisor_context_delete(victim);
        pthread_barrier_wait(&round_start);
    }
    return NULL;
}

static void *bystander(void *arg) {
    void *memory = arg;
    while (!atomic_load(&bystander_done)) {
        memvisor_context own;
        if (memvisor_context_create(memory, 1u << 20, NULL, &own) != MEMVISOR_STATUS_OK) {
            fail_locked();
            return NULL;
        }
        memvisor_context_stats s = {.size = sizeof s};
        memvisor_client cl;
        if (memvisor_context_get_stats(own, &s) != MEMVISOR_STATUS_OK ||
            memvisor_client_create(own, MEMVISOR_UNLIMITED, &cl) != MEMVISOR_STATUS_OK ||
            memvisor_client_delete(cl) != MEMVISOR_STATUS_OK ||
            memvisor_context_delete(own) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
    }
    return NULL;
}

static void test_double_delete_beside_other_contexts(void) {
    void *victim_memory = aligned_alloc(4096, 1u << 20);
    void *own_memory = aligned_alloc(4096, 1u << 20);
    CHECK(pthread_barrier_init(&round_start, NULL, 3) == 0);
    pthread_t deleters[2], other;
    CHECK(pthread_create(&other, NULL, bystander, own_memory) == 0);
    for (uintptr_t i = 0; i < 2; i++) {
        CHECK(pthread_create(&deleters[i], NULL, double_deleter, (void *)i) == 0);
    }
    for (int round = 0; round < DOUBLE_DELETE_ROUNDS; round++) {
        OK(memvisor_context_create(victim_memory, 1u << 20, NULL, &victim));
        pthread_barrier_wait(&round_start);
        pthread_barrier_wait(&round_start);
        int ok = (delete_status[0] == MEMVISOR_STATUS_OK) + (delete_status[1] == MEMVISOR_STATUS_OK);
        int refused = (delete_status[0] == MEMVISOR_STATUS_INVALID_HANDLE) +
                      (delete_status[1] == MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(ok == 1 && refused == 1);
    }
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_join(deleters[i], NULL) == 0);
    }
    atomic_store(&bystander_done, 1);
    CHECK(pthread_join(other, NULL) == 0);
    CHECK(pthread_barrier_destroy(&round_start) == 0);
    CHECK(thread_failures == 0);
    free(victim_memory);
    free(own_memory);
}

/* A client deleted by two threads at once: one delete frees all it holds, the other is
 * refused, and nothing else is touched. */
#define CLIENT_DOUBLE_DELETE_ROUNDS 100
static memvisor_client doubly_doomed;
static pthread_barrier_t client_round;
static memvisor_status client_delete_status[2];

static void *client_double_deleter(void *arg) {
    int me = (int)(uintptr_t)arg;
    for (int round = 0; round < CLIENT_DOUBLE_DELETE_ROUNDS; round++) {
        pthread_barrier_wait(&client_round);
        client_delete_status[me] = memvisor_client_delete(doubly_doomed);
        pthread_barrier_wait(&client_round);
    }
    return NULL;
}

static void test_client_deleted_by_two_threads(void) {
    CHECK(pthread_barrier_init(&client_round, NULL, 3) == 0);
    pthread_t deleters[2];
    for (uintptr_t i = 0; i < 2; i++) {
        CHECK(pthread_create(&deleters[i], NULL, client_double_deleter, (void *)i) == 0);
    }
    for (int round = 0; round < CLIENT_DOUBLE_DELETE_ROUNDS; round++) {
        OK(memvisor_client_create(shared_ctx, MEMVISOR_UNLIMITED, &doubly_doomed));
        void *p = NULL;
        OK(memvisor_alloc(doubly_doomed, 100 + (size_t)round, &p));
        pthread_barrier_wait(&client_round);
        pthread_barrier_wait(&client_round);
        int ok = (client_delete_status[0] == MEMVISOR_STATUS_OK) +
                 (client_delete_status[1] == MEMVISOR_STATUS_OK);
        int refused = (client_delete_status[0] == MEMVISOR_STATUS_INVALID_HANDLE) +
                      (client_delete_status[1] == MEMVISOR_STATUS_INVALID_HANDLE);
        CHECK(ok == 1 && refused == 1);
    }
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_join(deleters[i], NULL) == 0);
    }
    CHECK(pthread_barrier_destroy(&client_round) == 0);
    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(shared_ctx, &s));
    CHECK(s.clients == 0 && s.held_chunks == 0 && s.live_blocks == 0);
}

/* The functions the header lets any thread call at any time, called on one thread while a
 * client of the same context allocates and frees on another: the owner of a block the worker
 * published (its own client's while live; a freed one is `NOT_A_BLOCK`), trims, statistics,
 * flags and clients of the observer's own. Meanwhile two threads race to make a context over
 * one block: exactly one wins each round, the other gets `BLOCK_IN_USE`. */
#define QUERY_ROUNDS 2000
static memvisor_context query_ctx;
static memvisor_client query_worker;
static _Atomic(uintptr_t) published;
static atomic_int query_done;

static void *query_work(void *arg) {
    (void)arg;
    for (int i = 0; i < QUERY_ROUNDS; i++) {
        void *p = NULL;
        if (memvisor_alloc(query_worker, 16 + (size_t)(i % 64) * 16, &p) != MEMVISOR_STATUS_OK) {
            fail_locked();
            break;
        }
        atomic_store(&published, (uintptr_t)p);
        if (i % 3 != 0 && memvisor_client_free(query_worker, p, NULL) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
        if (i % 500 == 0 && memvisor_client_trim(query_worker) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
    }
    atomic_store(&query_done, 1);
    return NULL;
}

static void *query_observe(void *arg) {
    (void)arg;
    while (!atomic_load(&query_done)) {
        void *p = (void *)atomic_load(&published);
        if (p != NULL) {
            memvisor_client who = {0};
            memvisor_status st = memvisor_context_owner(query_ctx, p, &who);
            if (!((st == MEMVISOR_STATUS_OK && who.id == query_worker.id) ||
                  (st == MEMVISOR_STATUS_NOT_A_BLOCK && who.id == 0))) {
                fail_locked();
            }
        }
        memvisor_context_stats s = {.size = sizeof s};
        uint32_t flags = 0;
        memvisor_client mine;
        if (memvisor_context_trim(query_ctx) != MEMVISOR_STATUS_OK ||
            memvisor_context_get_stats(query_ctx, &s) != MEMVISOR_STATUS_OK ||
            memvisor_context_accepted_flags(query_ctx, &flags) != MEMVISOR_STATUS_OK ||
            memvisor_client_create(query_ctx, MEMVISOR_UNLIMITED, &mine) != MEMVISOR_STATUS_OK ||
            memvisor_client_delete(mine) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
    }
    return NULL;
}

#define CLAIM_ROUNDS 200
static void *contested;
static pthread_barrier_t claim_round;
static memvisor_status claim_status[2];
static memvisor_context claimed[2];

static void *claimer(void *arg) {
    int me = (int)(uintptr_t)arg;
    memvisor_config c;
    if (memvisor_config_init(&c) != MEMVISOR_STATUS_OK) {
        fail_locked();
    }
    c.chunk_size = 64u << 10;
    for (int round = 0; round < CLAIM_ROUNDS; round++) {
        pthread_barrier_wait(&claim_round);
        /* Overlapping halves of one block: at most one may be a context. */
        char *at = (char *)contested + (size_t)me * (256u << 10);
        claim_status[me] = memvisor_context_create(at, 512u << 10, &c, &claimed[me]);
        pthread_barrier_wait(&claim_round);
    }
    return NULL;
}

static void test_context_calls_while_a_client_works(void) {
    size_t len = 4u << 20;
    void *memory = aligned_alloc(4096, len);
    contested = aligned_alloc(4096, 1u << 20);
    CHECK(memory != NULL && contested != NULL);
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = 64u << 10;
    c.flags = MEMVISOR_FLAG_STATISTICS;
    OK(memvisor_context_create(memory, len, &c, &query_ctx));
    OK(memvisor_client_create(query_ctx, MEMVISOR_UNLIMITED, &query_worker));
    CHECK(pthread_barrier_init(&claim_round, NULL, 3) == 0);
    pthread_t worker, observer_thread, claimers[2];
    CHECK(pthread_create(&worker, NULL, query_work, NULL) == 0);
    CHECK(pthread_create(&observer_thread, NULL, query_observe, NULL) == 0);
    for (uintptr_t i = 0; i < 2; i++) {
        CHECK(pthread_create(&claimers[i], NULL, claimer, (void *)i) == 0);
    }
    for (int round = 0; round < CLAIM_ROUNDS; round++) {
        pthread_barrier_wait(&claim_round);
        pthread_barrier_wait(&claim_round);
        int won = -1, lost = 0;
        for (int i = 0; i < 2; i++) {
            if (claim_status[i] == MEMVISOR_STATUS_OK) {
                won = won == -1 ? i : 2;
            } else if (claim_status[i] == MEMVISOR_STATUS_BLOCK_IN_USE) {
                lost++;
            }
        }
        CHECK(won == 0 || won == 1);
        CHECK(lost == 1);
        if (won == 0 || won == 1) {
            OK(memvisor_context_delete(claimed[won]));
        }
    }
    for (int i = 0; i < 2; i++) {
        CHECK(pthread_join(claimers[i], NULL) == 0);
    }
    CHECK(pthread_join(worker, NULL) == 0);
    CHECK(pthread_join(observer_thread, NULL) == 0);
    CHECK(pthread_barrier_destroy(&claim_round) == 0);
    CHECK(thread_failures == 0);
    OK(memvisor_client_delete(query_worker));
    OK(memvisor_context_delete(query_ctx));
    free(contested);
    free(memory);
}

/* A context deleted while threads make clients of it, allocate, free through it (first, in
 * vain, through another context, which calls their blocks foreign) and delete the clients, and
 * call their deleted clients' stale handles: each delete is refused with `CONTEXT_BUSY` while a
 * client lives and succeeds once none does; after it every call on the context is refused;
 * and no user count is left behind, so a delete after the threads are done succeeds at once. */
#define CHURN_THREADS 3
#define CHURN_ROUNDS 300
#define CHURN_BLOCKS 8
static memvisor_context churn_ctx;
static memvisor_context churn_other;
static atomic_int churn_deleted;
static atomic_int churn_done;
static atomic_int churn_refused;

static void *churner(void *arg) {
    (void)arg;
    for (int round = 0; round < CHURN_ROUNDS; round++) {
        memvisor_client cl;
        memvisor_status st = memvisor_client_create(churn_ctx, MEMVISOR_UNLIMITED, &cl);
        if (st == MEMVISOR_STATUS_INVALID_HANDLE) {
            /* Only a successful delete of the context refuses it: checked after the join. */
            atomic_store(&churn_refused, 1);
            break;
        }
        if (st != MEMVISOR_STATUS_OK) {
            fail_locked();
            break;
        }
        void *blocks[CHURN_BLOCKS];
        for (int i = 0; i < CHURN_BLOCKS; i++) {
            if (memvisor_alloc(cl, 16 + (size_t)(i * 100 + round), &blocks[i]) !=
                MEMVISOR_STATUS_OK) {
                fail_locked();
                blocks[i] = NULL;
            }
        }
        for (int i = 0; i < CHURN_BLOCKS; i += 2) {
            size_t size = 0;
            if (blocks[i] == NULL) {
                continue;
            }
            if (memvisor_free(churn_other, blocks[i], &size) !=
                    MEMVISOR_STATUS_FOREIGN_POINTER ||
                size != 0) {
                fail_locked();
            }
            if (memvisor_free(churn_ctx, blocks[i], &size) != MEMVISOR_STATUS_OK ||
                size < 16) {
                fail_locked();
            }
            /* Freed, and ordered after the free: refused, nothing changes. */
            if (memvisor_free(churn_ctx, blocks[i], NULL) != MEMVISOR_STATUS_NOT_A_BLOCK) {
                fail_locked();
            }
        }
        if (memvisor_client_delete(cl) != MEMVISOR_STATUS_OK) {
            fail_locked();
        }
        /* The deleted client's handle, while other threads make clients that may take its
         * slot: refused, and it touches none of them. */
        void *p = NULL;
        if (memvisor_alloc(cl, 16, &p) != MEMVISOR_STATUS_INVALID_HANDLE || p != NULL ||
            memvisor_client_delete(cl) != MEMVISOR_STATUS_INVALID_HANDLE) {
            fail_locked();
        }
    }
    atomic_fetch_add(&churn_done, 1);
    return NULL;
}

static void test_context_deleted_while_clients_come_and_go(void) {
    size_t len = 4u << 20;
    void *memory = aligned_alloc(4096, len);
    void *other_memory = aligned_alloc(4096, 1u << 20);
    CHECK(memory != NULL && other_memory != NULL);
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = 64u << 10;
    OK(memvisor_context_create(memory, len, &c, &churn_ctx));
    OK(memvisor_context_create(other_memory, 1u << 20, &c, &churn_other));
    atomic_store(&churn_deleted, 0);
    atomic_store(&churn_done, 0);
    atomic_store(&churn_refused, 0);
    pthread_t threads[CHURN_THREADS];
    for (int t = 0; t < CHURN_THREADS; t++) {
        CHECK(pthread_create(&threads[t], NULL, churner, NULL) == 0);
    }
    while (atomic_load(&churn_done) < CHURN_THREADS) {
        memvisor_status st = memvisor_context_delete(churn_ctx);
        if (st == MEMVISOR_STATUS_OK) {
            atomic_store(&churn_deleted, 1);
            break;
        }
        CHECK_STATUS(st, MEMVISOR_STATUS_CONTEXT_BUSY);
        sched_yield();
    }
    for (int t = 0; t < CHURN_THREADS; t++) {
        CHECK(pthread_join(threads[t], NULL) == 0);
    }
    CHECK(thread_failures == 0);
    CHECK(!atomic_load(&churn_refused) || atomic_load(&churn_deleted));
    if (!atomic_load(&churn_deleted)) {
        /* Every client is gone: nothing holds the context any more. */
        OK(memvisor_context_delete(churn_ctx));
    }
    memvisor_client late;
    memvisor_context_stats s = {.size = sizeof s};
    CHECK_STATUS(memvisor_client_create(churn_ctx, MEMVISOR_UNLIMITED, &late),
                 MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_get_stats(churn_ctx, &s), MEMVISOR_STATUS_INVALID_HANDLE);
    CHECK_STATUS(memvisor_context_delete(churn_ctx), MEMVISOR_STATUS_INVALID_HANDLE);
    /* The other context was only refused: it is as it was made, and deleted at once. */
    OK(memvisor_context_get_stats(churn_other, &s));
    CHECK(s.clients == 0 && s.held_chunks == 0);
    OK(memvisor_context_delete(churn_other));
    free(other_memory);
    free(memory);
}

int main(void) {
    size_t len = 16u << 20;
    void *memory = aligned_alloc(4096, len);
    memvisor_config c;
    OK(memvisor_config_init(&c));
    c.chunk_size = 64u << 10;
    c.flags = MEMVISOR_FLAG_STATISTICS;
    OK(memvisor_context_create(memory, len, &c, &shared_ctx));

    /* One client that stays alive keeps the observer's deletes refused throughout. */
    memvisor_client keeper;
    OK(memvisor_client_create(shared_ctx, MEMVISOR_UNLIMITED, &keeper));

    pthread_t threads[THREADS + 1];
    for (uintptr_t t = 0; t < THREADS; t++) {
        CHECK(pthread_create(&threads[t], NULL, program, (void *)(t + 1)) == 0);
    }
    CHECK(pthread_create(&threads[THREADS], NULL, observer, NULL) == 0);
    for (int t = 0; t <= THREADS; t++) {
        CHECK(pthread_join(threads[t], NULL) == 0);
    }
    CHECK(thread_failures == 0);

    void *p = NULL;
    OK(memvisor_alloc(keeper, 100, &p));
    handed = keeper;
    pthread_t t2;
    CHECK(pthread_create(&t2, NULL, second_owner, p) == 0);
    CHECK(pthread_join(t2, NULL) == 0);
    CHECK(thread_failures == 0);
    OK(memvisor_client_delete(keeper));

    test_remote_frees();
    test_delete_during_remote_frees();
    test_double_delete_beside_other_contexts();
    test_client_deleted_by_two_threads();
    test_context_calls_while_a_client_works();
    test_context_deleted_while_clients_come_and_go();

    memvisor_context_stats s = {.size = sizeof s};
    OK(memvisor_context_get_stats(shared_ctx, &s));
    CHECK(s.held_chunks == 0 && s.clients == 0 && s.live_blocks == 0 && s.used_bytes == 0);
    OK(memvisor_context_delete(shared_ctx));
    free(memory);
    return finish("threads");
}
