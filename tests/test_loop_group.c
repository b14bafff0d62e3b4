/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_loop_group.c - contract tests for volley/loop_group.h: worker
 * loops on threads of their own, jobs handed to them from the home loop and
 * their results handed back; against the harness's Redis where a job needs
 * a value (a Redis pool opened on each worker loop by the init callback).
 *
 * The worker loops allocate on their own threads at the same time as the
 * home loop, so these tests count live allocations with an allocator of
 * their own whose counter is atomic: testutil's counting allocator keeps
 * plain counters, which two threads would corrupt. tu_finish still checks
 * the loop and testutil's count (nothing goes through it here), and
 * finish() adds this file's count.
 */
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every test here stops by itself well within this; a hang fails it. */
#define WATCHDOG_S 90

#define KEY "volley:test_loop_group:k"
#define NKEYS 100

static void on_watchdog(int sig)
{
    static const char msg[] = "# watchdog: the loop group test hung\n";
    ssize_t n;

    (void)sig;
    n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
    (void)n;
    _exit(124);
}

/* ---- a thread-safe counting allocator ---- */

static atomic_long live;

static void *ts_malloc(size_t n, void *ud)
{
    void *p = malloc(n);

    (void)ud;
    if (p != NULL)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *ts_realloc(void *p, size_t n, void *ud)
{
    void *q = realloc(p, n);

    (void)ud;
    if (q != NULL && p == NULL)
        atomic_fetch_add(&live, 1);
    return q;
}

static void ts_free(void *p, void *ud)
{
    (void)ud;
    if (p != NULL)
        atomic_fetch_sub(&live, 1);
    free(p);
}

static int g_setup(void **state)
{
    static const vl_allocator a = {ts_malloc, ts_realloc, ts_free, NULL};

    signal(SIGALRM, on_watchdog);
    alarm(WATCHDOG_S);
    tu_setup(state);
    atomic_store(&live, 0);
    return vl_allocator_set(&a) == VL_OK ? 0 : -1;
}

/* The end of every test: the home loop is empty, freed, nothing leaked on
 * any thread, and the worker threads are gone. */
static void finish(vl_loop *loop)
{
    tu_finish(loop);
    assert_int_equal(atomic_load(&live), 0);
#if !defined(__SANITIZE_THREAD__)
    tu_workers_gone(); /* ThreadSanitizer keeps a thread of its own */
#endif
}

/* ---- per-loop state: a Redis pool on each worker loop ---- */

typedef struct loopstate {
    size_t index;
    vl_redis_pool *pool; /* NULL in tests without a server */
    vl_mysql_pool *mpool;
} loopstate;

typedef struct groupctx {
    const char *url;       /* NULL: no pool */
    const char *mysql_url; /* NULL: no MySQL pool */
    atomic_int inits;
    atomic_int finis;
    long fail_index;       /* init fails for this index; -1: none */
    loopstate ls[8];
} groupctx;

static int ctx_init(vl_loop *loop, size_t index, void **loop_ud, void *ud)
{
    groupctx *c = ud;

    atomic_fetch_add(&c->inits, 1);
    if ((long)index == c->fail_index)
        return VL_ECONN;
    c->ls[index].index = index;
    if (c->url != NULL) {
        c->ls[index].pool = vl_redis_pool_new(loop, c->url, NULL);
        if (c->ls[index].pool == NULL)
            return VL_ENOMEM;
    }
    if (c->mysql_url != NULL) {
        c->ls[index].mpool = vl_mysql_pool_new(loop, c->mysql_url, NULL);
        if (c->ls[index].mpool == NULL)
            return VL_ENOMEM;
    }
    *loop_ud = &c->ls[index];
    return VL_OK;
}

static void ctx_fini(vl_loop *loop, size_t index, void *loop_ud, void *ud)
{
    groupctx *c = ud;
    loopstate *ls = loop_ud;

    (void)loop;
    if (ls == &c->ls[index]) /* no assert off the test's thread: counted instead */
        atomic_fetch_add(&c->finis, 1);
    vl_redis_pool_free(ls->pool);
    vl_mysql_pool_free(ls->mpool);
    ls->pool = NULL;
    ls->mpool = NULL;
}

static vl_loop_group *group_make(vl_loop *loop, size_t n, groupctx *c, const char *url)
{
    vl_loop_group_options o;
    vl_loop_group *g;

    memset(c, 0, sizeof(*c));
    c->url = url;
    c->fail_index = -1;
    vl_loop_group_options_init(&o);
    o.init = ctx_init;
    o.fini = ctx_fini;
    o.ud = c;
    g = vl_loop_group_new(loop, n, &o);
    assert_non_null(g);
    assert_int_equal(vl_loop_group_size(g), n);
    assert_int_equal(atomic_load(&c->inits), (int)n); /* every init ran before new returned */
    return g;
}

/* ---- jobs ---- */

/* A job's record, written on the worker (ran_on) and on home (the rest). */
typedef struct rec {
    int i;
    int calls;
    int status;
    int after;           /* set once submit returned */
    int ran_inside;
    int take;            /* take the value in the callback */
    atomic_int ran;      /* the job function ran (worker) */
    atomic_long ran_on;  /* index of the loop it ran on (worker) */
    char str[64];
    char msg[160];
} rec;

static void rec_cb(vl_future *f, void *ud)
{
    rec *r = ud;
    const vl_redis_reply *reply = vl_future_redis_reply(f);

    r->calls++;
    r->status = vl_future_status(f);
    if (!r->after)
        r->ran_inside = 1;
    snprintf(r->msg, sizeof(r->msg), "%s", vl_future_error(f));
    if (reply != NULL)
        snprintf(r->str, sizeof(r->str), "%s", vl_redis_reply_str(reply, NULL));
    if (r->take) {
        vl_redis_reply *mine = vl_future_take(f);
        assert_ptr_equal(mine, reply);
        assert_null(vl_future_value(f));
        vl_redis_reply_free(mine);
    }
}

static void watch(vl_future *f, rec *r)
{
    assert_non_null(f);
    assert_int_equal(vl_future_then(f, rec_cb, r), VL_OK);
    r->after = 1;
}

static void mark(rec *r, void *loop_ud)
{
    atomic_store(&r->ran, 1);
    atomic_store(&r->ran_on, loop_ud != NULL ? (long)((loopstate *)loop_ud)->index : -1);
}

static vl_future *resolved(vl_loop *loop)
{
    vl_promise *p = vl_promise_new(loop);
    vl_future *f;

    if (p == NULL)
        return NULL;
    f = vl_promise_future(p);
    vl_promise_resolve(p, NULL, NULL);
    return f;
}

static vl_future *echo_job(vl_loop *loop, void *loop_ud, void *arg)
{
    rec *r = arg;
    loopstate *ls = loop_ud;

    (void)loop;
    mark(r, loop_ud);
    return vl_redis_pool_command(ls->pool, "ECHO e%d", r->i);
}

static vl_future *get_job(vl_loop *loop, void *loop_ud, void *arg)
{
    rec *r = arg;
    loopstate *ls = loop_ud;

    (void)loop;
    mark(r, loop_ud);
    return vl_redis_pool_command(ls->pool, "GET " KEY "%d", r->i % NKEYS);
}

static vl_future *select_job(vl_loop *loop, void *loop_ud, void *arg)
{
    rec *r = arg;
    loopstate *ls = loop_ud;
    char sql[64];

    (void)loop;
    mark(r, loop_ud);
    snprintf(sql, sizeof(sql), "SELECT %d", r->i);
    return vl_mysql_pool_query(ls->mpool, sql);
}

static vl_future *noop_job(vl_loop *loop, void *loop_ud, void *arg)
{
    mark(arg, loop_ud);
    return resolved(loop);
}

static vl_future *sleep_job(vl_loop *loop, void *loop_ud, void *arg)
{
    mark(arg, loop_ud);
    return vl_loop_sleep(loop, 60000);
}

static atomic_int unblock;

/* Holds its worker loop's thread until the test says so (20 s at most). */
static vl_future *block_job(vl_loop *loop, void *loop_ud, void *arg)
{
    uint64_t start = vl_loop_now_ms(loop);

    mark(arg, loop_ud);
    while (!atomic_load(&unblock) && vl_loop_now_ms(loop) - start < 20000)
        usleep(1000);
    return resolved(loop);
}

static vl_future *null_job(vl_loop *loop, void *loop_ud, void *arg)
{
    (void)loop;
    mark(arg, loop_ud);
    return NULL;
}

static vl_future *failed_job(vl_loop *loop, void *loop_ud, void *arg)
{
    vl_promise *p = vl_promise_new(loop);
    vl_future *f;

    mark(arg, loop_ud);
    if (p == NULL)
        return NULL;
    f = vl_promise_future(p);
    vl_promise_fail(p, VL_ESERVER, "the worker said no");
    return f;
}

static atomic_int user_frees;

static void user_free(void *v)
{
    atomic_fetch_add(&user_frees, 1);
    free(v);
}

static vl_future *user_value_job(vl_loop *loop, void *loop_ud, void *arg)
{
    vl_promise *p = vl_promise_new(loop);
    vl_future *f;

    mark(arg, loop_ud);
    if (p == NULL)
        return NULL;
    f = vl_promise_future(p);
    vl_promise_resolve(p, malloc(16), user_free);
    return f;
}

/* A step after a short sleep: the job's own result, an int made on the
 * worker, given to the home loop with its free function. */
static vl_future *own_value_step(vl_future *done, void *ud)
{
    rec *r = ud;
    int *v = malloc(sizeof(*v));

    if (v == NULL)
        return NULL;
    *v = r->i * 2;
    return vl_loop_group_value(vl_future_loop(done), v, user_free);
}

static vl_future *own_value_job(vl_loop *loop, void *loop_ud, void *arg)
{
    mark(arg, loop_ud);
    return vl_future_chain(vl_loop_sleep(loop, 1), own_value_step, arg);
}

/* Lets the home loop run until loop `index` has no unfinished job. */
static void wait_idle(vl_loop *loop, vl_loop_group *g, size_t index)
{
    int rounds;

    for (rounds = 0; vl_loop_group_pending(g, index) > 0 && rounds < 2000; rounds++)
        tu_sleep_ms(loop, 5);
    assert_int_equal(vl_loop_group_pending(g, index), 0);
}

/* ---- tests ---- */

/* Rules 2 and 3: each home future completes once, from the home loop and
 * never inside submit, with the worker's reply; a reply taken is the
 * caller's, one left is freed with the future (the allocation count and
 * ASan tell a leak or a double free). An idle group does not hold the
 * home loop. */
static void contract_once_values_move(void **state)
{
    enum { N = 200 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, tu_redis_url(0));
    static rec r[N];
    int i;
    uint64_t done = 0;

    (void)state;
    assert_int_equal(vl_loop_alive(loop), 0); /* an idle group holds nothing */
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].i = i;
        r[i].take = i % 2;
        watch(vl_loop_group_submit(g, echo_job, &r[i]), &r[i]);
    }
    assert_int_equal(vl_loop_group_pending(g, 0) + vl_loop_group_pending(g, 1), N);
    assert_int_equal(vl_loop_run(loop), VL_OK); /* returns: the jobs held it, nothing else */
    for (i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "e%d", i);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].ran_inside, 0);
        assert_int_equal(r[i].status, VL_OK);
        assert_string_equal(r[i].str, want);
    }
    for (i = 0; i < 2; i++) {
        assert_int_equal(vl_loop_group_pending(g, (size_t)i), 0);
        assert_true(vl_loop_group_completed(g, (size_t)i) > 0); /* ties alternate */
        done += vl_loop_group_completed(g, (size_t)i);
    }
    assert_int_equal(done, N);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_loop_group_free(g);
    assert_int_equal(atomic_load(&c.finis), 2);
    finish(loop);
}

/* Rule 1: what fails arrives through the home future. */
static void failures_arrive_through_the_future(void **state)
{
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, NULL);
    rec nul = {0}, failed = {0}, user = {0}, range = {0}, nofn = {0};

    (void)state;
    atomic_store(&user_frees, 0);
    watch(vl_loop_group_submit(g, null_job, &nul), &nul);
    watch(vl_loop_group_submit(g, failed_job, &failed), &failed);
    watch(vl_loop_group_submit(g, user_value_job, &user), &user);
    watch(vl_loop_group_submit_to(g, 2, noop_job, &range), &range);
    watch(vl_loop_group_submit(g, NULL, &nofn), &nofn);
    assert_null(vl_loop_group_submit(NULL, noop_job, NULL));
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(nul.calls, 1);
    assert_int_equal(nul.status, VL_ENOMEM);
    assert_int_equal(failed.calls, 1);
    assert_int_equal(failed.status, VL_ESERVER);
    assert_string_equal(failed.msg, "the worker said no");
    assert_int_equal(user.calls, 1);
    assert_int_equal(user.status, VL_EUNSUPPORTED);
    assert_int_equal(range.calls, 1);
    assert_int_equal(range.status, VL_EINVAL);
    assert_int_equal(atomic_load(&range.ran), 0);
    assert_int_equal(nofn.calls, 1);
    assert_int_equal(nofn.status, VL_EINVAL);
    assert_int_equal(nul.ran_inside + failed.ran_inside + user.ran_inside + range.ran_inside +
                         nofn.ran_inside,
                     0);
    vl_loop_group_free(g);
    /* Freed once, on the worker, after its future's callback handed the
     * job back: certain once the threads are joined. */
    assert_int_equal(atomic_load(&user_frees), 1);
    finish(loop);
}

static void own_value_cb(vl_future *f, void *ud)
{
    rec *r = ud;
    int *v = vl_future_value(f);

    r->calls++;
    r->status = vl_future_status(f);
    if (v != NULL)
        snprintf(r->str, sizeof(r->str), "%d", *v);
    if (r->take) {
        assert_ptr_equal(vl_future_take(f), v);
        user_free(v);
    }
}

/* vl_loop_group_value: a job's own result, made at the end of a chain on
 * the worker, reaches home with its free function; taken or not, each is
 * freed once (on home: the count is complete when the run returns). */
static void own_values_travel(void **state)
{
    enum { N = 300 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, NULL);
    static rec r[N];
    int i;

    (void)state;
    atomic_store(&user_frees, 0);
    assert_null(vl_loop_group_value(NULL, NULL, NULL));
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].i = i;
        r[i].take = i % 2;
        assert_int_equal(vl_future_then(vl_loop_group_submit(g, own_value_job, &r[i]),
                                        own_value_cb, &r[i]),
                         VL_OK);
    }
    assert_int_equal(vl_loop_run(loop), VL_OK);
    for (i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i * 2);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, VL_OK);
        assert_string_equal(r[i].str, want);
    }
    assert_int_equal(atomic_load(&user_frees), N);
    vl_loop_group_free(g);
    assert_int_equal(atomic_load(&user_frees), N);
    finish(loop);
}

/* Rule 4: a cancel from home completes the home future once with
 * VL_ECANCELED, cancels the worker's (a 60 s sleep, which then comes back
 * at once), and a job cancelled before its loop took it never runs. */
static void cancel_from_home(void **state)
{
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, NULL);
    rec sleeper = {0}, blocker = {0}, queued = {0};
    vl_future *f;
    uint64_t t0;

    (void)state;
    atomic_store(&unblock, 0);
    f = vl_loop_group_submit_to(g, 1, sleep_job, &sleeper);
    watch(f, &sleeper);
    while (!atomic_load(&sleeper.ran))
        tu_sleep_ms(loop, 2);
    t0 = vl_loop_now_ms(loop);
    assert_int_equal(vl_future_cancel(f), 1);
    assert_int_equal(vl_future_cancel(f), 0);
    assert_int_equal(vl_loop_group_pending(g, 1), 1); /* still on its loop */
    assert_int_equal(vl_loop_run(loop), VL_OK);      /* the cancelled job does not hold it */
    assert_int_equal(sleeper.calls, 1);
    assert_int_equal(sleeper.status, VL_ECANCELED);
    wait_idle(loop, g, 1); /* the worker's sleep was cancelled, not waited for */
    assert_true(vl_loop_now_ms(loop) - t0 < 30000);
    assert_int_equal(vl_loop_group_completed(g, 1), 1);

    watch(vl_loop_group_submit_to(g, 0, block_job, &blocker), &blocker);
    while (!atomic_load(&blocker.ran))
        tu_sleep_ms(loop, 2);
    f = vl_loop_group_submit_to(g, 0, noop_job, &queued);
    watch(f, &queued);
    assert_int_equal(vl_future_cancel(f), 1);
    atomic_store(&unblock, 1);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    wait_idle(loop, g, 0);
    assert_int_equal(blocker.calls, 1);
    assert_int_equal(blocker.status, VL_OK);
    assert_int_equal(queued.calls, 1);
    assert_int_equal(queued.status, VL_ECANCELED);
    assert_int_equal(atomic_load(&queued.ran), 0);
    vl_loop_group_free(g);
    finish(loop);
}

/* Rule 4 again: freeing the group with 1,000 jobs pending (running on the
 * workers or still in their inboxes) completes each home future once with
 * VL_ECANCELED, and fini runs on every loop. */
static void free_with_1000_pending(void **state)
{
    enum { N = 1000 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, NULL);
    static rec r[N];
    int i;

    (void)state;
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        watch(vl_loop_group_submit(g, sleep_job, &r[i]), &r[i]);
    }
    tu_sleep_ms(loop, 20); /* some start, some may still wait */
    vl_loop_group_free(g);
    assert_int_equal(atomic_load(&c.finis), 2);
    for (i = 0; i < N; i++)
        assert_int_equal(r[i].calls, 0); /* never inside the free */
    assert_int_equal(vl_loop_run(loop), VL_OK);
    for (i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, VL_ECANCELED);
    }
    finish(loop);
}

typedef struct freer {
    vl_loop_group *g;
    rec r;
} freer;

static void free_group_cb(vl_future *f, void *ud)
{
    freer *fr = ud;

    rec_cb(f, &fr->r);
    vl_loop_group_free(fr->g);
}

/* Rule 5: vl_loop_group_free from inside a home-loop callback. */
static void free_from_callback(void **state)
{
    enum { N = 100 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, NULL);
    static rec r[N];
    freer fr = {0};
    int i;

    (void)state;
    fr.g = g;
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        watch(vl_loop_group_submit_to(g, 1, sleep_job, &r[i]), &r[i]);
    }
    assert_int_equal(vl_future_then(vl_loop_group_submit_to(g, 0, noop_job, &fr.r),
                                    free_group_cb, &fr),
                     VL_OK);
    fr.r.after = 1;
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(fr.r.calls, 1);
    assert_int_equal(fr.r.status, VL_OK);
    for (i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, VL_ECANCELED);
    }
    assert_int_equal(atomic_load(&c.finis), 2);
    finish(loop);
}

/* vl_loop_free(home) frees a group still open: its pending home futures
 * complete once with VL_ECANCELED, fini runs on every loop, and a
 * vl_loop_group_free made from one of those callbacks is harmless. */
typedef struct late {
    vl_loop_group *g;
    int calls;
    int status;
} late;

static void late_free_cb(vl_future *f, void *ud)
{
    late *l = ud;

    l->calls++;
    l->status = vl_future_status(f);
    vl_loop_group_free(l->g); /* the loop already freed it: a no-op */
}

static void loop_free_frees_group(void **state)
{
    enum { N = 50 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 2, &c, NULL);
    late l[N];
    static rec r[N];
    int i;

    (void)state;
    for (i = 0; i < N; i++) {
        l[i] = (late){g, 0, 0};
        memset(&r[i], 0, sizeof(r[i]));
        assert_int_equal(vl_future_then(vl_loop_group_submit(g, sleep_job, &r[i]),
                                        late_free_cb, &l[i]),
                         VL_OK);
    }
    vl_loop_free(loop);
    for (i = 0; i < N; i++) {
        assert_int_equal(l[i].calls, 1);
        assert_int_equal(l[i].status, VL_ECANCELED);
    }
    assert_int_equal(atomic_load(&c.finis), 2);
    assert_int_equal(atomic_load(&live), 0);
    assert_int_equal(tu_alloc_live(), 0);
}

/* Placement: with loop 0 held by a long job, jobs submitted one after the
 * other go to the two others, in turn; two at once go one to each. */
static void least_loaded_placement(void **state)
{
    enum { N = 20 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g = group_make(loop, 3, &c, NULL);
    rec blocker = {0}, r[N], a = {0}, b = {0};
    long last = -1;
    int i;

    (void)state;
    atomic_store(&unblock, 0);
    watch(vl_loop_group_submit_to(g, 0, block_job, &blocker), &blocker);
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        watch(vl_loop_group_submit(g, noop_job, &r[i]), &r[i]);
        while (r[i].calls == 0)
            tu_sleep_ms(loop, 1);
        assert_int_equal(r[i].status, VL_OK);
        assert_true(atomic_load(&r[i].ran_on) != 0);
        assert_true(atomic_load(&r[i].ran_on) != last); /* ties in turn */
        last = atomic_load(&r[i].ran_on);
    }
    assert_int_equal(vl_loop_group_pending(g, 0), 1);
    watch(vl_loop_group_submit(g, noop_job, &a), &a);
    watch(vl_loop_group_submit(g, noop_job, &b), &b);
    while (a.calls == 0 || b.calls == 0)
        tu_sleep_ms(loop, 1);
    assert_true(atomic_load(&a.ran_on) != 0 && atomic_load(&b.ran_on) != 0);
    assert_true(atomic_load(&a.ran_on) != atomic_load(&b.ran_on));
    assert_int_equal(blocker.calls, 0);
    atomic_store(&unblock, 1);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(blocker.calls, 1);
    assert_int_equal(vl_loop_group_completed(g, 0), 1);
    assert_int_equal(vl_loop_group_completed(g, 1) + vl_loop_group_completed(g, 2), N + 2);
    vl_loop_group_free(g);
    finish(loop);
}

/* Each worker loop has its own Redis pool, opened by init; 10,000 GETs
 * spread over the loops each complete once with their key's value. */
static void redis_pool_per_loop_10000_gets(void **state)
{
    enum { N = 10000 };
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group *g;
    vl_redis_pool *home_pool = vl_redis_pool_new(loop, tu_redis_url(0), NULL);
    static rec r[N];
    int i;

    (void)state;
    for (i = 0; i < NKEYS; i++)
        vl_future_free(tu_run_cmd(loop, vl_redis_pool_command(home_pool, "SET " KEY "%d v%d", i, i),
                                  VL_OK));
    vl_redis_pool_free(home_pool);
    g = group_make(loop, 2, &c, tu_redis_url(0));
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].i = i;
        r[i].take = i % 3 == 0;
        watch(vl_loop_group_submit(g, get_job, &r[i]), &r[i]);
    }
    assert_int_equal(vl_loop_run(loop), VL_OK);
    for (i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "v%d", i % NKEYS);
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, VL_OK);
        assert_string_equal(r[i].str, want);
    }
    assert_true(vl_loop_group_completed(g, 0) > 0 && vl_loop_group_completed(g, 1) > 0);
    assert_int_equal(vl_loop_group_completed(g, 0) + vl_loop_group_completed(g, 1), N);
    vl_loop_group_free(g);
    assert_int_equal(atomic_load(&c.finis), 2);
    finish(loop);
}

static void mysql_cb(vl_future *f, void *ud)
{
    rec *r = ud;
    const vl_mysql_result *res = vl_future_mysql_result(f);

    r->calls++;
    r->status = vl_future_status(f);
    snprintf(r->msg, sizeof(r->msg), "%s", vl_future_error(f));
    if (res != NULL && vl_mysql_result_rows(res) == 1)
        snprintf(r->str, sizeof(r->str), "%s", vl_mysql_result_value(res, 0, 0, NULL));
    if (r->take)
        vl_mysql_result_free(vl_future_take(f));
}

/* A MySQL result travels too: a pool on each worker loop, 200 SELECTs,
 * each result read on home, a third of them taken and freed there. */
static void mysql_results_travel(void **state)
{
    enum { N = 200 };
    vl_loop *loop = vl_loop_new();
    vl_loop_group_options o;
    vl_loop_group *g;
    groupctx c;
    static rec r[N];
    char url[512];
    int i;

    (void)state;
    snprintf(url, sizeof(url), "mysql://%s:%s@127.0.0.1:%s/%s", tu_env("VL_TEST_MYSQL_USER"),
             tu_env("VL_TEST_MYSQL_PASSWORD"), tu_env("VL_TEST_MYSQL_PORT"),
             tu_env("VL_TEST_MYSQL_DB"));
    memset(&c, 0, sizeof(c));
    c.fail_index = -1;
    c.mysql_url = url;
    vl_loop_group_options_init(&o);
    o.init = ctx_init;
    o.fini = ctx_fini;
    o.ud = &c;
    g = vl_loop_group_new(loop, 2, &o);
    assert_non_null(g);
    for (i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].i = i;
        r[i].take = i % 3 == 0;
        assert_int_equal(vl_future_then(vl_loop_group_submit(g, select_job, &r[i]), mysql_cb,
                                        &r[i]),
                         VL_OK);
    }
    assert_int_equal(vl_loop_run(loop), VL_OK);
    for (i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof(want), "%d", i);
        assert_int_equal(r[i].calls, 1);
        if (r[i].status != VL_OK)
            fail_msg("job %d: %s", i, r[i].msg);
        assert_string_equal(r[i].str, want);
    }
    vl_loop_group_free(g);
    assert_int_equal(atomic_load(&c.finis), 2);
    finish(loop);
}

/* An init that fails makes vl_loop_group_new fail; fini runs for the loops
 * whose init succeeded, and every thread is gone. */
static void init_failure(void **state)
{
    vl_loop *loop = vl_loop_new();
    groupctx c;
    vl_loop_group_options o;

    (void)state;
    memset(&c, 0, sizeof(c));
    c.fail_index = 1;
    vl_loop_group_options_init(&o);
    o.init = ctx_init;
    o.fini = ctx_fini;
    o.ud = &c;
    assert_null(vl_loop_group_new(loop, 3, &o));
    assert_int_equal(atomic_load(&c.inits), 3);
    assert_int_equal(atomic_load(&c.finis), 2);
    assert_null(vl_loop_group_new(NULL, 1, NULL));
    assert_null(vl_loop_group_new(loop, 257, NULL));
    finish(loop);
}

typedef struct other {
    vl_loop_group *g;
    vl_future *f;
} other;

static void *submit_from_other_thread(void *arg)
{
    other *o = arg;

    o->f = vl_loop_group_submit(o->g, noop_job, NULL);
    return NULL;
}

/* Only the home thread may submit; n 0 is one loop per online CPU. */
static void other_thread_refused(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_loop_group *g = vl_loop_group_new(loop, 0, NULL);
    other o = {g, (vl_future *)&o};
    pthread_t t;

    (void)state;
    assert_non_null(g);
    assert_int_equal(vl_loop_group_size(g), (size_t)sysconf(_SC_NPROCESSORS_ONLN));
    assert_int_equal(pthread_create(&t, NULL, submit_from_other_thread, &o), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_null(o.f);
    assert_int_equal(vl_loop_group_pending(g, 0), 0);
    vl_loop_group_free(g);
    finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(contract_once_values_move, g_setup),
        cmocka_unit_test_setup(failures_arrive_through_the_future, g_setup),
        cmocka_unit_test_setup(own_values_travel, g_setup),
        cmocka_unit_test_setup(cancel_from_home, g_setup),
        cmocka_unit_test_setup(free_with_1000_pending, g_setup),
        cmocka_unit_test_setup(free_from_callback, g_setup),
        cmocka_unit_test_setup(loop_free_frees_group, g_setup),
        cmocka_unit_test_setup(least_loaded_placement, g_setup),
        cmocka_unit_test_setup(redis_pool_per_loop_10000_gets, g_setup),
        cmocka_unit_test_setup(mysql_results_travel, g_setup),
        cmocka_unit_test_setup(init_failure, g_setup),
        cmocka_unit_test_setup(other_thread_refused, g_setup),
    };

    return tu_run("loop_group", tests, sizeof(tests) / sizeof(tests[0]));
}
