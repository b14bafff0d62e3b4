/* tests/test_loop.c - the loop's scheduling seams against a real server:
 * writes deferred to the prepare phase must go out even when the callbacks
 * that queue them run in that phase. */
#include "testutil.h"

#include <string.h>

typedef struct chain {
    vl_redis *a, *b;
    long depth, n;
    vl_promise *done;
} chain;

static void noop(vl_future *f, void *ud)
{
    (void)f;
    (void)ud;
}

static void ping_done(vl_future *f, void *ud)
{
    chain *c = ud;

    assert_int_equal(vl_future_status(f), VL_OK);
    vl_promise_resolve(c->done, NULL, NULL);
}

/* Each link is a command that fails at once (bad format), so its callback
 * runs in a later dispatch round; the last link sends a real PING. */
static void link_cb(vl_future *f, void *ud)
{
    chain *c = ud;

    (void)f;
    if (++c->depth < c->n) {
        vl_future_then(vl_redis_command(c->b, NULL), link_cb, c);
        return;
    }
    vl_future_then(vl_redis_command(c->b, "PING"), ping_done, c);
}

static void start_cb(vl_future *f, void *ud)
{
    chain *c = ud;

    (void)f;
    /* Connection a blocks the poll: without it the loop would spin. */
    vl_future_then(vl_redis_command(c->a, "BLPOP test_loop:none 5"), noop, NULL);
    vl_future_then(vl_redis_command(c->b, NULL), link_cb, c);
}

/* However long the chain of callbacks before it, a command issued from a
 * callback is written without waiting for some other event. */
static void deferred_write_after_callback_chain(void **state)
{
    long n;

    (void)state;
    for (n = 1; n <= 14; n++) {
        vl_loop *loop = vl_loop_new();
        chain c;
        vl_future *done, *f;

        memset(&c, 0, sizeof(c));
        c.n = n;
        c.a = vl_redis_new(loop, tu_redis_url(0), NULL);
        c.b = vl_redis_new(loop, tu_redis_url(0), NULL);
        vl_future_free(tu_run_cmd(loop, vl_redis_command(c.a, "PING"), VL_OK));
        vl_future_free(tu_run_cmd(loop, vl_redis_command(c.b, "PING"), VL_OK));
        c.done = vl_promise_new(loop);
        done = vl_future_timeout(vl_promise_future(c.done), 2000);
        vl_future_then(vl_loop_sleep(loop, 1), start_cb, &c);
        f = tu_wait_for(loop, done);
        if (vl_future_status(f) != VL_OK)
            fail_msg("chain of %ld: the PING was not written (%s)", n, vl_future_error(f));
        vl_future_free(f);
        vl_redis_free(c.a);
        vl_redis_free(c.b);
        tu_finish(loop);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(deferred_write_after_callback_chain, tu_setup),
    };

    return tu_run("loop", tests, sizeof(tests) / sizeof(tests[0]));
}
