/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis.c - the Redis connection against real redis-server
 * instances started by tests/servers.sh: replies, pipelining, timeouts,
 * cancellation, reconnection, endpoint errors and out-of-memory paths.
 */
#include "testutil.h"
#include "redis_internal.h"

#include <arpa/inet.h>
#include <ev.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The integer of an INTEGER reply; LLONG_MIN (which no test expects) when
 * the reply is not one. */
static long long reply_int(const vl_redis_reply *r)
{
    long long v = LLONG_MIN;

    if (vl_redis_reply_integer(r, &v) != VL_OK)
        return LLONG_MIN;
    return v;
}

/* A loopback port nothing listens on: bound, then closed. */
static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- replies ---- */

static void basic_replies(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future *f;
    const vl_redis_reply *r;

    (void)state;
    assert_non_null(c);
    f = tu_run_cmd(loop, vl_redis_command(c, "SET %s %s", "basic:k", "hello"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_type(r), VL_REDIS_STATUS);
    tu_check_str(r, "OK");
    vl_future_free(f);
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);

    f = tu_run_cmd(loop, vl_redis_command(c, "GET basic:k"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_type(r), VL_REDIS_STRING);
    tu_check_str(r, "hello");
    vl_future_free(f);

    f = tu_run_cmd(loop, vl_redis_command(c, "DEL basic:n"), VL_OK);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "INCRBY basic:n %d", 41), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_type(r), VL_REDIS_INTEGER);
    assert_int_equal(reply_int(r), 41);
    assert_null(vl_redis_reply_str(r, NULL));
    vl_future_free(f);

    f = tu_run_cmd(loop, vl_redis_command(c, "GET basic:missing"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_type(r), VL_REDIS_NIL);
    assert_int_equal(vl_redis_reply_count(r), 0);
    assert_null(vl_redis_reply_element(r, 0));
    vl_future_free(f);

    assert_int_equal(vl_redis_pending(c), 0);
    assert_string_equal(vl_redis_error(c), "");
    vl_redis_free(c);
    tu_finish(loop);
}

/* A -ERR reply is data: VL_ESERVER with the server's text, reply readable,
 * and takeable. */
static void server_error_is_data(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future *f;
    vl_redis_reply *taken;
    size_t len;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SET err:k v"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "LPUSH err:k x"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "WRONGTYPE"));
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_ERROR);
    taken = vl_future_take(f);
    assert_non_null(taken);
    assert_null(vl_future_redis_reply(f));
    assert_non_null(strstr(vl_redis_reply_str(taken, &len), "WRONGTYPE"));
    assert_true(len > 9);
    vl_future_free(f);
    vl_redis_reply_free(taken);
    /* The connection is fine afterwards. */
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
}

static void nested_arrays(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(1), NULL);
    const vl_redis_reply *r, *e1, *e11;
    vl_future *f;

    (void)state;
    f = tu_run_cmd(loop,
                vl_redis_command(c, "EVAL %s 0", "return {1, {2, {'a', 'bc'}}, 'x', {}}"),
                VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_type(r), VL_REDIS_ARRAY);
    assert_int_equal(vl_redis_reply_count(r), 4);
    assert_int_equal(reply_int(vl_redis_reply_element(r, 0)), 1);
    e1 = vl_redis_reply_element(r, 1);
    assert_int_equal(vl_redis_reply_count(e1), 2);
    assert_int_equal(reply_int(vl_redis_reply_element(e1, 0)), 2);
    e11 = vl_redis_reply_element(e1, 1);
    assert_int_equal(vl_redis_reply_count(e11), 2);
    tu_check_str(vl_redis_reply_element(e11, 0), "a");
    tu_check_str(vl_redis_reply_element(e11, 1), "bc");
    tu_check_str(vl_redis_reply_element(r, 2), "x");
    assert_int_equal(vl_redis_reply_type(vl_redis_reply_element(r, 3)), VL_REDIS_ARRAY);
    assert_int_equal(vl_redis_reply_count(vl_redis_reply_element(r, 3)), 0);
    assert_null(vl_redis_reply_element(r, 4));
    vl_future_free(f);

    /* COMMAND INFO get: [[ "get", 2, [flags...], 1, 1, 1, ... ]] */
    f = tu_run_cmd(loop, vl_redis_command(c, "COMMAND INFO get"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_count(r), 1);
    e1 = vl_redis_reply_element(r, 0);
    assert_true(vl_redis_reply_count(e1) >= 6);
    tu_check_str(vl_redis_reply_element(e1, 0), "get");
    assert_int_equal(reply_int(vl_redis_reply_element(e1, 1)), 2);
    assert_int_equal(vl_redis_reply_type(vl_redis_reply_element(e1, 2)), VL_REDIS_ARRAY);
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

static void binary_safe_argv(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(2), NULL);
    const char key[] = "bin\0key";
    const char val[] = "a\0b\r\n\0c";
    const char *argv[3] = {"SET", key, val};
    size_t lens[3] = {3, sizeof(key) - 1, sizeof(val) - 1};
    const char *gargv[2] = {"GET", key};
    size_t glens[2] = {3, sizeof(key) - 1};
    const vl_redis_reply *r;
    vl_future *f;
    size_t len;
    const char *s;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command_argv(c, 3, argv, lens), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command_argv(c, 2, gargv, glens), VL_OK);
    r = vl_future_redis_reply(f);
    s = vl_redis_reply_str(r, &len);
    assert_int_equal(len, sizeof(val) - 1);
    assert_memory_equal(s, val, len);
    vl_future_free(f);
    /* The same through %b. */
    f = tu_run_cmd(loop, vl_redis_command(c, "GET %b", key, sizeof(key) - 1), VL_OK);
    s = vl_redis_reply_str(vl_future_redis_reply(f), &len);
    assert_int_equal(len, sizeof(val) - 1);
    assert_memory_equal(s, val, len);
    vl_future_free(f);
    /* Arguments that are C strings need no lengths. */
    argv[1] = "bin:plain";
    argv[2] = "plain";
    vl_future_free(tu_run_cmd(loop, vl_redis_command_argv(c, 3, argv, NULL), VL_OK));
    /* Empty and NULL commands fail through the future. */
    vl_future_free(tu_run_cmd(loop, vl_redis_command_argv(c, 0, argv, NULL), VL_EINVAL));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, ""), VL_EINVAL));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, NULL), VL_EINVAL));
    f = tu_run_cmd(loop, vl_redis_command(c, "SUBSCRIBE chan"), VL_EUNSUPPORTED);
    assert_non_null(strstr(vl_future_error(f), "SUBSCRIBE"));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "monitor"), VL_EUNSUPPORTED));
    assert_null(vl_redis_command(NULL, "PING"));
    vl_redis_free(c);
    tu_finish(loop);
}

/* CLIENT REPLY OFF|SKIP would leave later commands without their replies,
 * and HELLO may switch to RESP3: refused, so replies keep matching their
 * commands. CLIENT REPLY ON and other CLIENT subcommands go through. */
static void reply_stream_changers_refused(void **state)
{
    static const char *skip[] = {"client", "reply", "skip"};
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future *f, *get;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SET rs:k v1"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "CLIENT REPLY OFF"), VL_EUNSUPPORTED);
    assert_non_null(strstr(vl_future_error(f), "CLIENT REPLY"));
    vl_future_free(f);
    /* Pipelined, the refused command must not shift the next reply. */
    f = vl_redis_command_argv(c, 3, skip, NULL);
    get = vl_redis_command(c, "GET rs:k");
    assert_int_equal(tu_await(loop, f), VL_EUNSUPPORTED);
    tu_check_str(vl_future_redis_reply(tu_run_cmd(loop, get, VL_OK)), "v1");
    vl_future_free(f);
    vl_future_free(get);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "HELLO 3"), VL_EUNSUPPORTED));
    f = tu_run_cmd(loop, vl_redis_command(c, "hello"), VL_EUNSUPPORTED);
    assert_non_null(strstr(vl_future_error(f), "hello"));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "CLIENT REPLY ON"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "CLIENT ID"), VL_OK);
    assert_true(reply_int(vl_future_redis_reply(f)) > 0);
    vl_future_free(f);
    tu_check_str(vl_future_redis_reply(f = tu_run_cmd(loop, vl_redis_command(c, "GET rs:k"), VL_OK)),
                 "v1");
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* ---- pipelining and gather ---- */

typedef struct seq {
    long long next;
    int bad;
    int calls;
} seq;

static void seq_cb(vl_future *f, void *ud)
{
    seq *s = ud;

    s->calls++;
    if (vl_future_status(f) != VL_OK ||
        reply_int(vl_future_redis_reply(f)) != ++s->next)
        s->bad++;
}

static void pipelining_in_order(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    seq s = {0, 0, 0};
    int i, n = 20000;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL pipe:n"), VL_OK));
    for (i = 0; i < n; i++)
        assert_int_equal(vl_future_then(vl_redis_command(c, "INCR pipe:n"), seq_cb, &s), VL_OK);
    assert_int_equal(vl_redis_pending(c), (size_t)n);
    assert_int_equal(s.calls, 0);
    while (s.calls < n)
        tu_sleep_ms(loop, 1);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.next, n);
    assert_int_equal(vl_redis_pending(c), 0);
    vl_redis_free(c);
    tu_finish(loop);
}

/* ---- sharing the loop ---- */

/* What the callbacks of one connection's commands saw: their order, and
 * how many ran in each loop iteration (libev's iteration count). */
typedef struct share {
    struct ev_loop *ev;
    long long next;   /* the INCR value expected next */
    long calls, bad;
    unsigned iter;    /* the iteration of the last callback */
    long in_iter;     /* callbacks in it so far */
    long most;        /* the most callbacks any iteration ran */
    long iters;       /* iterations that ran at least one */
} share;

static void share_count(share *s)
{
    unsigned it = ev_iteration(s->ev);

    if (s->calls == 0 || it != s->iter) {
        s->iter = it;
        s->in_iter = 0;
        s->iters++;
    }
    if (++s->in_iter > s->most)
        s->most = s->in_iter;
    s->calls++;
}

static void share_incr_cb(vl_future *f, void *ud)
{
    share *s = ud;

    share_count(s);
    if (vl_future_status(f) != VL_OK || reply_int(vl_future_redis_reply(f)) != ++s->next)
        s->bad++;
}

/* Resets s, then pipelines n INCR of `key` (deleted first) on c, each
 * completing into cb(s). */
static void share_start(vl_loop *loop, vl_redis *c, share *s, const char *key, int n,
                        vl_future_cb cb)
{
    int i;

    memset(s, 0, sizeof(*s));
    s->ev = vl_loop_ev(loop);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL %s", key), VL_OK));
    for (i = 0; i < n; i++)
        assert_int_equal(vl_future_then(vl_redis_command(c, "INCR %s", key), cb, s), VL_OK);
}

/* 20,000 replies pipelined on one connection arrive far faster than they
 * are handled, yet no loop iteration handles more than its budget of them
 * (VL__TURN_BUDGET): the rest wait for the connection's next turn, so a
 * timer or another connection waits for at most one budget's worth of
 * work. Every reply arrives once, in order. */
static void an_iteration_takes_a_bounded_share(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    share s;
    int i, n = 20000;

    (void)state;
    share_start(loop, c, &s, "share:n", n, share_incr_cb);
    for (i = 0; i < 10000 && s.calls < n; i++)
        tu_sleep_ms(loop, 1);
    print_message("# %d replies in %ld iterations, at most %ld in one (budget %d)\n", n, s.iters,
                  s.most, VL__TURN_BUDGET);
    assert_int_equal(s.calls, n);
    assert_int_equal(s.bad, 0);
    assert_true(s.most <= VL__TURN_BUDGET);
    assert_true(s.iters >= n / VL__TURN_BUDGET);
    vl_redis_free(c);
    tu_finish(loop);
}

/* Burns `us` microseconds of the loop's thread. */
static void spin_us(unsigned us)
{
    struct timespec a, b;

    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000 < (long)us);
}

static void slow_cb(vl_future *f, void *ud)
{
    share *s = ud;

    share_count(s);
    if (vl_future_status(f) != VL_OK || reply_int(vl_future_redis_reply(f)) != ++s->next)
        s->bad++;
    spin_us(40);
}

/* The server answers 40,000 pipelined commands in some tens of
 * milliseconds, but their callbacks take 40 us each (1.6 s in all): the
 * replies wait in the connection for their turns far longer than the
 * 800 ms command timeout. A reply that came
 * in time is never judged late: when the timeout fires, what arrived is
 * taken first, and every command succeeds, in order, on one connection. */
static void replies_waiting_their_turn_are_not_late(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c;
    share s;
    uint64_t connects, reconnects, errors;
    int i, n = 40000;

    (void)state;
    vl_redis_options_init(&o);
    o.command_timeout_ms = 800;
    c = vl_redis_new(loop, tu_redis_url(0), &o);
    share_start(loop, c, &s, "share:slow", n, slow_cb);
    for (i = 0; i < 30000 && s.calls < n; i++)
        tu_sleep_ms(loop, 1);
    vl__redis_counters(c, &connects, &reconnects, &errors);
    print_message("# %ld of %d callbacks, %ld wrong, in %ld iterations; %" PRIu64
                  " reconnects\n",
                  s.calls, n, s.bad, s.iters, reconnects);
    assert_int_equal(s.calls, n);
    assert_int_equal(s.bad, 0);
    assert_int_equal(reconnects, 0);
    vl_redis_free(c);
    tu_finish(loop);
}

/* Connection B's chain of commands, one after the other. */
typedef struct chain {
    vl_redis *c;
    const share *other;
    int left, failed;
    long other_done_at; /* how many of the other's replies had run then */
} chain;

static void chain_cb(vl_future *f, void *ud)
{
    chain *ch = ud;

    if (vl_future_status(f) != VL_OK)
        ch->failed++;
    if (--ch->left == 0) {
        ch->other_done_at = ch->other->calls;
        return;
    }
    assert_int_equal(vl_future_then(vl_redis_command(ch->c, "PING"), chain_cb, ch), VL_OK);
}

/* While connection A's 100,000 pipelined replies take their share of
 * iteration after iteration, connection B's 10 round trips one after the
 * other (to another server, so that the servers' own scheduling is not
 * what is measured) still get their turns: B is not starved until A has
 * drained. */
static void a_busy_connection_does_not_starve_another(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *a = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_redis *b = vl_redis_new(loop, tu_redis_url(1), NULL);
    share s;
    chain ch;
    int i, n = 100000;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(b, "PING"), VL_OK));
    memset(&ch, 0, sizeof(ch));
    ch.c = b;
    ch.other = &s;
    ch.left = 10;
    ch.other_done_at = -1;
    share_start(loop, a, &s, "share:a", n, share_incr_cb);
    assert_int_equal(vl_future_then(vl_redis_command(b, "PING"), chain_cb, &ch), VL_OK);
    for (i = 0; i < 20000 && (s.calls < n || ch.left > 0); i++)
        tu_sleep_ms(loop, 1);
    print_message("# B's 10 round trips ended after %ld of A's %d replies (%ld iterations)\n",
                  ch.other_done_at, n, s.iters);
    assert_int_equal(s.calls, n);
    assert_int_equal(s.bad, 0);
    assert_int_equal(ch.left, 0);
    assert_int_equal(ch.failed, 0);
    assert_true(ch.other_done_at >= 0 && ch.other_done_at < n);
    vl_redis_free(a);
    vl_redis_free(b);
    tu_finish(loop);
}

/* asyncio.gather of 1,000 SET/GET over the three instances. */
static void gather_1000_across_three(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c[3];
    vl_future *fs[1000], *all;
    char key[32], val[32];
    int i;

    (void)state;
    for (i = 0; i < 3; i++)
        c[i] = vl_redis_new(loop, tu_redis_url(i), NULL);
    /* Issued before any connection is up: they wait for their handshake. */
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "gather:%d", i);
        snprintf(val, sizeof(val), "value-%d", i * 7);
        fs[i] = vl_redis_command(c[i % 3], "SET %s %s", key, val);
        assert_non_null(fs[i]);
    }
    for (i = 0; i < 500; i++) {
        snprintf(key, sizeof(key), "gather:%d", i);
        fs[500 + i] = vl_redis_command(c[i % 3], "GET %s", key);
        assert_non_null(fs[500 + i]);
    }
    all = vl_future_all(loop, fs, 1000);
    assert_int_equal(tu_await(loop, all), VL_OK);
    assert_int_equal(vl_future_count(all), 1000);
    for (i = 0; i < 500; i++) {
        const vl_redis_reply *r = vl_future_redis_reply(vl_future_child(all, (size_t)i));
        assert_int_equal(vl_redis_reply_type(r), VL_REDIS_STATUS);
        tu_check_str(r, "OK");
        snprintf(val, sizeof(val), "value-%d", i * 7);
        tu_check_str(vl_future_redis_reply(vl_future_child(all, (size_t)(500 + i))), val);
    }
    vl_future_free(all);
    for (i = 0; i < 3; i++)
        vl_redis_free(c[i]);
    tu_finish(loop);
}

/* ---- timeouts and cancellation ---- */

/* The server is paused by CLIENT PAUSE from another connection: the oldest
 * reply is overdue, so the command times out and the connection is closed
 * (what was behind it fails with VL_ECONN); it reconnects, and the late
 * reply never reaches another command. */
static void command_timeout_late_reply_dropped(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *a, *b;
    vl_future *f;

    (void)state;
    vl_redis_options_init(&o);
    o.command_timeout_ms = 100;
    a = vl_redis_new(loop, tu_redis_url(1), &o);
    b = vl_redis_new(loop, tu_redis_url(1), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(a, "SET late:1 one"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(a, "SET late:2 two"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(b, "CLIENT PAUSE 400"), VL_OK));
    {
        vl_future *first = vl_redis_command(a, "GET late:1");
        vl_future *behind;

        tu_sleep_ms(loop, 30);
        behind = vl_redis_command(a, "GET late:2");
        assert_int_equal(tu_await(loop, first), VL_ETIMEDOUT);
        assert_non_null(strstr(vl_future_error(first), "timed out after 100 ms"));
        assert_null(vl_future_redis_reply(first));
        /* Closed with the first, not 30 ms later with its own deadline. */
        assert_true(vl_future_done(behind));
        assert_int_equal(vl_future_status(behind), VL_ECONN);
        assert_non_null(strstr(vl_future_error(behind), "a reply was overdue"));
        vl_future_free(first);
        vl_future_free(behind);
    }
    assert_int_equal(vl_redis_pending(a), 0);
    assert_int_not_equal(vl_redis_state(a), VL_REDIS_READY);
    /* Let the pause end; the reconnected connection answers correctly. */
    tu_sleep_ms(loop, 450);
    f = tu_run_cmd(loop, vl_redis_command(a, "GET late:2"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "two");
    vl_future_free(f);
    assert_int_equal(vl_redis_pending(a), 0);
    vl_redis_free(a);
    vl_redis_free(b);
    tu_finish(loop);
}

/* Blocking commands wait as long as they asked: their own timeout is added
 * to the command timeout, a timeout of 0 (forever) is exempt, and neither
 * closes the connection. */
static void blocking_commands_keep_their_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c, *pusher;
    const vl_redis_reply *r;
    vl_future *f, *g;

    (void)state;
    vl_redis_options_init(&o);
    o.command_timeout_ms = 200;
    c = vl_redis_new(loop, tu_redis_url(1), &o);
    pusher = vl_redis_new(loop, tu_redis_url(1), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL bl:a bl:b bl:s"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "BLPOP bl:a 0.6"), VL_OK);
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_NIL);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "XREAD BLOCK 400 STREAMS bl:s $"), VL_OK);
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_NIL);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "WAIT 1 300"), VL_OK);
    assert_int_equal(reply_int(vl_future_redis_reply(f)), 0);
    vl_future_free(f);
    /* Forever: still waiting well past the command timeout. */
    g = vl_redis_command(c, "BLPOP bl:b 0");
    tu_sleep_ms(loop, 500);
    assert_false(vl_future_done(g));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(pusher, "RPUSH bl:b x"), VL_OK));
    assert_int_equal(tu_await(loop, g), VL_OK);
    r = vl_future_redis_reply(g);
    assert_int_equal(vl_redis_reply_count(r), 2);
    tu_check_str(vl_redis_reply_element(r, 1), "x");
    vl_future_free(g);
    /* A plain command still gets the 200 ms. */
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK);
    vl_future_free(f);
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    vl_redis_free(c);
    vl_redis_free(pusher);
    tu_finish(loop);
}

/* A command pipelined behind a blocking one keeps its own deadline, also
 * when the blocking one's deadline is later (its own 5 s are added). */
static void deadline_behind_blocking_in_flight(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c;
    vl_future *b, *f;

    (void)state;
    vl_redis_options_init(&o);
    o.command_timeout_ms = 300;
    c = vl_redis_new(loop, tu_redis_url(1), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL bl:late"), VL_OK));
    b = vl_redis_command(c, "BLPOP bl:late 5");
    f = vl_redis_command(c, "GET bl:late");
    /* Far below the BLPOP's deadline (5.3 s). */
    assert_int_equal(tu_await(loop, vl_future_timeout(f, 3000)), VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "command timed out after 300 ms"));
    vl_future_free(f);
    assert_false(vl_future_done(b));
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    vl_redis_free(c);
    assert_int_equal(tu_await(loop, b), VL_ECANCELED);
    vl_future_free(b);
    tu_finish(loop);
}

/* An ACL user allowed only GET and SET: the handshake PING gets -NOPERM,
 * which answers it in turn, so the user connects and runs what it may;
 * what it may not fails as data. */
static void acl_user_without_ping(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *admin = vl_redis_new(loop, tu_redis_url(0), NULL);
    char user[64], hostport[128], url[256];
    vl_redis *c;
    vl_future *f;
    long long n = 0;

    (void)state;
    snprintf(hostport, sizeof(hostport), "%s", tu_redis_url(0) + strlen("redis://"));
    snprintf(user, sizeof(user), "volley_noping_%ld", (long)getpid());
    vl_future_free(tu_run_cmd(
        loop, vl_redis_command(admin, "ACL SETUSER %s reset on >pw ~* +get +set", user), VL_OK));
    snprintf(url, sizeof(url), "redis://%s:pw@%s", user, hostport);
    c = vl_redis_new(loop, url, NULL);
    f = vl_redis_command(c, "SET acl:%s v", user);
    if (tu_await(loop, f) != VL_OK)
        fail_msg("SET as %s: %s", user, vl_future_error(f));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "GET acl:%s", user), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "v");
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "NOPERM"));
    vl_future_free(f);
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    vl_redis_free(c);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(admin, "DEL acl:%s", user), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(admin, "ACL DELUSER %s", user), VL_OK);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &n), VL_OK);
    assert_int_equal(n, 1);
    vl_future_free(f);
    vl_redis_free(admin);
    tu_finish(loop);
}

/* Waits (bounded) until a PING on `c` succeeds again. */
static void wait_ping(vl_loop *loop, vl_redis *c)
{
    int i, ok = 0;

    for (i = 0; i < 300 && !ok; i++) {
        vl_future *f = vl_redis_command(c, "PING");
        ok = tu_await(loop, f) == VL_OK;
        vl_future_free(f);
        if (!ok)
            tu_sleep_ms(loop, 10);
    }
    assert_true(ok);
}

/* The reply limits are options: a real server's reply over one fails its
 * command with VL_EPROTO naming the limit, closes the connection, and the
 * reconnected connection serves replies within the limits. */
static void reply_limits_are_configurable(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c, *setup;
    vl_future *f;

    (void)state;
    setup = vl_redis_new(loop, tu_redis_url(1), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(setup, "DEL lim:list"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(setup, "SET lim:big 0123456789"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(setup, "RPUSH lim:list a b c d"), VL_OK));
    vl_redis_options_init(&o);
    o.max_bulk_len = 8;
    o.max_elements = 3;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 20;
    c = vl_redis_new(loop, tu_redis_url(1), &o);
    f = tu_run_cmd(loop, vl_redis_command(c, "GET lim:big"), VL_EPROTO);
    assert_non_null(strstr(vl_future_error(f), "exceeds max_bulk_len 8"));
    assert_non_null(strstr(vl_future_error(f), "redis://127.0.0.1:"));
    vl_future_free(f);
    assert_int_not_equal(vl_redis_state(c), VL_REDIS_READY);
    wait_ping(loop, c);
    f = tu_run_cmd(loop, vl_redis_command(c, "LRANGE lim:list 0 -1"), VL_EPROTO);
    assert_non_null(strstr(vl_future_error(f), "exceeds max_elements 3"));
    vl_future_free(f);
    wait_ping(loop, c);
    f = tu_run_cmd(loop, vl_redis_command(c, "LRANGE lim:list 0 2"), VL_OK);
    assert_int_equal(vl_redis_reply_count(vl_future_redis_reply(f)), 3);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "GETRANGE lim:big 0 7"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "01234567");
    vl_future_free(f);
    vl_redis_free(c);
    vl_redis_free(setup);
    tu_finish(loop);
}

/* What volley/redis.h promises about a cancelled write: issued while the
 * connection is still connecting, it is never sent; issued on a ready
 * connection, it is already in hiredis's buffer and runs anyway, only its
 * reply is dropped. */
static void cancelled_write_sent_only_once_ready(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(2), NULL);
    vl_future *f;

    (void)state;
    assert_int_equal(vl_redis_state(c), VL_REDIS_CONNECTING);
    f = vl_redis_command(c, "SET cancel:early written");
    assert_int_equal(vl_future_cancel(f), 1);
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL cancel:ready"), VL_OK));
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    f = vl_redis_command(c, "SET cancel:ready written");
    assert_int_equal(vl_future_cancel(f), 1);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "GET cancel:early"), VL_OK);
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_NIL);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "GET cancel:ready"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "written");
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* vl_future_timeout and vl_future_cancel work on any command future through
 * the cancel hook; the connection stays usable and replies stay matched. */
static void cancel_and_wait_for(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *a = vl_redis_new(loop, tu_redis_url(2), NULL);
    vl_redis *b = vl_redis_new(loop, tu_redis_url(2), NULL);
    vl_future *t, *x, *y;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(a, "SET cw:1 one"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(a, "SET cw:2 two"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(b, "CLIENT PAUSE 300"), VL_OK));
    t = vl_future_timeout(vl_redis_command(a, "GET cw:1"), 50);
    x = vl_redis_command(a, "GET cw:1");
    y = vl_redis_command(a, "GET cw:2");
    assert_int_equal(vl_future_cancel(x), 1);
    assert_int_equal(vl_future_status(x), VL_ECANCELED);
    assert_int_equal(vl_future_cancel(x), 0);
    assert_int_equal(tu_await(loop, t), VL_ETIMEDOUT);
    assert_int_equal(tu_await(loop, y), VL_OK);
    tu_check_str(vl_future_redis_reply(y), "two");
    vl_future_free(t);
    vl_future_free(x);
    vl_future_free(y);
    /* Freeing a pending command future cancels it too. */
    vl_future_free(vl_redis_command(a, "GET cw:1"));
    y = tu_run_cmd(loop, vl_redis_command(a, "GET cw:2"), VL_OK);
    tu_check_str(vl_future_redis_reply(y), "two");
    vl_future_free(y);
    vl_redis_free(a);
    vl_redis_free(b);
    tu_finish(loop);
}

typedef struct tally {
    int ok, canceled, other, calls;
} tally;

static void tally_cb(vl_future *f, void *ud)
{
    tally *t = ud;

    t->calls++;
    switch (vl_future_status(f)) {
    case VL_OK: t->ok++; break;
    case VL_ECANCELED: t->canceled++; break;
    default: t->other++; break;
    }
}

static void free_with_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    tally t = {0, 0, 0, 0};
    int i;

    (void)state;
    /* Some waiting for the connection, then more in flight. */
    for (i = 0; i < 50; i++)
        vl_future_then(vl_redis_command(c, "PING"), tally_cb, &t);
    vl_redis_free(c);
    vl_loop_run(loop);
    assert_int_equal(t.calls, 50);
    assert_int_equal(t.canceled, 50);

    memset(&t, 0, sizeof(t));
    c = vl_redis_new(loop, tu_redis_url(0), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    /* A BLPOP on an empty key holds the replies of everything behind it,
     * so the PINGs are written and still in flight when the free comes. */
    vl_future_then(vl_redis_command(c, "BLPOP free_with_pending:none 5"), tally_cb, &t);
    for (i = 0; i < 200; i++)
        vl_future_then(vl_redis_command(c, "PING"), tally_cb, &t);
    tu_sleep_ms(loop, 20);
    vl_redis_free(c);
    vl_loop_run(loop);
    assert_int_equal(t.calls, 201);
    assert_int_equal(t.canceled, 201);
    tu_finish(loop);
}

typedef struct freer {
    vl_redis *c;
    tally t;
} freer;

static void free_conn_cb(vl_future *f, void *ud)
{
    freer *fr = ud;

    tally_cb(f, &fr->t);
    if (fr->c != NULL) {
        vl_redis_free(fr->c);
        fr->c = NULL;
    }
}

/* Rule 5: freeing the connection from inside a command's callback. */
static void free_from_callback(void **state)
{
    vl_loop *loop = vl_loop_new();
    freer fr;
    int i;

    (void)state;
    memset(&fr, 0, sizeof(fr));
    fr.c = vl_redis_new(loop, tu_redis_url(1), NULL);
    vl_future_then(vl_redis_command(fr.c, "PING"), free_conn_cb, &fr);
    for (i = 0; i < 100; i++)
        vl_future_then(vl_redis_command(fr.c, "PING"), tally_cb, &fr.t);
    vl_loop_run(loop);
    assert_null(fr.c);
    assert_int_equal(fr.t.calls, 101);
    assert_int_equal(fr.t.ok + fr.t.canceled, 101);
    assert_int_equal(fr.t.other, 0);
    tu_finish(loop);
}

/* vl_loop_free frees an open connection; its futures complete cancelled. */
static void loop_free_cancels(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(1), NULL);
    vl_redis *bad = vl_redis_new(loop, "nonsense", NULL);
    tally t = {0, 0, 0, 0};
    int i;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    for (i = 0; i < 10; i++)
        vl_future_then(vl_redis_command(c, "PING"), tally_cb, &t);
    assert_non_null(bad);
    vl_loop_free(loop);
    assert_int_equal(t.calls, 10);
    assert_int_equal(t.canceled, 10);
    assert_int_equal(tu_alloc_live(), 0);
}

typedef struct owner {
    vl_redis *c;
    vl_redis_pool *p;
    int calls;
    int status;
} owner;

static void free_owner_cb(vl_future *f, void *ud)
{
    owner *o = ud;

    o->calls++;
    o->status = vl_future_status(f);
    vl_redis_free(o->c);      /* the usual pattern; a no-op during teardown */
    vl_redis_pool_free(o->p);
    /* Using them is refused cleanly, through the future. */
    if (o->c != NULL)
        vl_future_free(vl_redis_command(o->c, "PING"));
}

/* A callback that vl_loop_free runs may still free its own connection and
 * pool: their memory outlives the callbacks. */
static void loop_free_callbacks_free_owner(void **state)
{
    vl_loop *loop = vl_loop_new();
    owner a = {NULL, NULL, 0, 0}, b = {NULL, NULL, 0, 0};

    (void)state;
    a.c = vl_redis_new(loop, tu_redis_url(0), NULL);
    b.p = vl_redis_pool_new(loop, tu_redis_url(1), NULL);
    vl_future_then(vl_redis_command(a.c, "BLPOP loop_free_owner:none 5"), free_owner_cb, &a);
    vl_future_then(vl_redis_pool_command(b.p, "BLPOP loop_free_owner:none 5"), free_owner_cb, &b);
    tu_sleep_ms(loop, 30);
    vl_loop_free(loop);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, VL_ECANCELED);
    assert_int_equal(b.calls, 1);
    assert_int_equal(b.status, VL_ECANCELED);
    assert_int_equal(tu_alloc_live(), 0);
}

/* ---- endpoints ---- */

static void refused_port(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[64], want[128];
    int port = closed_port();
    vl_redis_options o;
    vl_redis *c;
    vl_future *f;

    (void)state;
    vl_redis_options_init(&o);
    o.reconnect_min_ms = 5000; /* stay DOWN for the fail-fast check */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    snprintf(want, sizeof(want), "connect redis://127.0.0.1:%d: Connection refused", port);
    c = vl_redis_new(loop, url, &o);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ECONN);
    /* The command's message names it; the connection's is the connect's. */
    assert_true(strncmp(vl_future_error(f), "PING: ", 6) == 0);
    assert_string_equal(vl_future_error(f) + 6, want);
    assert_string_equal(vl_redis_error(c), want);
    vl_future_free(f);
    /* Between attempts: fail fast with the last error, never queued. */
    assert_int_equal(vl_redis_state(c), VL_REDIS_DOWN);
    f = vl_redis_command(c, "PING");
    assert_true(vl_future_done(f));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_string_equal(vl_future_error(f), want);
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

static void unknown_host(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, "redis://no-such-host.invalid:1", NULL);
    vl_future *f;

    (void)state;
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "connect redis://no-such-host.invalid:1: "));
    assert_non_null(strstr(vl_future_error(f), "resolve"));
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* A refused handshake, again and again: each attempt starts from empty
 * buffers (a reply left half-counted from the last attempt would be parsed
 * from memory that is gone), every command fails once, none hangs. */
static void refused_handshake_retried(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    char url[256];
    vl_redis *c;
    uint64_t connects, reconnects, errors;
    int i, failed = 0;

    (void)state;
    snprintf(url, sizeof(url), "redis://:wrong-password@127.0.0.1:%s",
             tu_env("VL_TEST_REDIS_AUTH_PORT"));
    vl_redis_options_init(&o);
    o.reconnect_min_ms = 1;
    o.reconnect_max_ms = 5;
    c = vl_redis_new(loop, url, &o);
    for (i = 0; i < 40; i++) {
        vl_future *f = vl_redis_command(c, "PING");
        int st = tu_await(loop, f);
        assert_int_equal(st, VL_ECONN);
        failed += strstr(vl_future_error(f), "auth redis://127.0.0.1:") != NULL ||
                  strstr(vl_future_error(f), "WRONGPASS") != NULL;
        vl_future_free(f);
        tu_sleep_ms(loop, 3);
    }
    assert_true(failed > 0);
    vl__redis_counters(c, &connects, &reconnects, &errors);
    assert_int_equal(connects, 0);
    assert_true(errors >= 5); /* it did retry, many times */
    vl_redis_free(c);
    tu_finish(loop);
}

static void wrong_password(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *port = tu_env("VL_TEST_REDIS_AUTH_PORT");
    const char *pass = tu_env("VL_TEST_REDIS_PASSWORD");
    const char *forms[] = {"redis://:s3cr%%65t-w0rd@127.0.0.1:%s",
                           "redis://someone:s3cr%%65t-w0rd@127.0.0.1:%s/2"};
    char url[256];
    vl_redis *c;
    vl_future *f;
    int i;

    (void)state;
    for (i = 0; i < 2; i++) {
        snprintf(url, sizeof(url), forms[i], port);
        c = vl_redis_new(loop, url, NULL);
        f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ECONN);
        assert_non_null(strstr(vl_future_error(f), "auth redis://127.0.0.1:"));
        assert_null(strstr(vl_future_error(f), "s3cr"));
        assert_null(strstr(vl_redis_error(c), "s3cr"));
        assert_null(strstr(vl_redis_error(c), "w0rd"));
        vl_future_free(f);
        vl_redis_free(c);
    }
    /* No password at all: the server refuses the handshake PING with
     * NOAUTH, a failed connect that names the endpoint. */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%s", port);
    c = vl_redis_new(loop, url, NULL);
    f = tu_run_cmd(loop, vl_redis_command(c, "GET k"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "NOAUTH"));
    assert_non_null(strstr(vl_future_error(f), "connect redis://127.0.0.1:"));
    vl_future_free(f);
    vl_redis_free(c);
    /* The right one, with a db, commands issued before the handshake. */
    snprintf(url, sizeof(url), "redis://:%s@127.0.0.1:%s/2", pass, port);
    c = vl_redis_new(loop, url, NULL);
    {
        vl_future *set = vl_redis_command(c, "SET auth:k %s", "db2");
        f = tu_run_cmd(loop, vl_redis_command(c, "GET auth:k"), VL_OK);
        tu_check_str(vl_future_redis_reply(f), "db2");
        assert_int_equal(vl_future_status(set), VL_OK);
        vl_future_free(set);
        vl_future_free(f);
    }
    f = tu_run_cmd(loop, vl_redis_command(c, "CLIENT INFO"), VL_OK);
    assert_non_null(strstr(vl_redis_reply_str(vl_future_redis_reply(f), NULL), " db=2 "));
    vl_future_free(f);
    /* AUTH user pass with the default user. */
    vl_redis_free(c);
    snprintf(url, sizeof(url), "redis://default:%s@127.0.0.1:%s", pass, port);
    c = vl_redis_new(loop, url, NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
}

static void malformed_urls(void **state)
{
    static const struct {
        const char *url;
        int status;
    } cases[] = {
        {"", VL_EINVAL},
        {"nonsense", VL_EINVAL},
        {"redis://", VL_EINVAL},
        {"redis://127.0.0.1:99999", VL_EINVAL},
        {"redis://127.0.0.1:port", VL_EINVAL},
        {"http://127.0.0.1:6379", VL_EINVAL},
        {"redis://127.0.0.1:6379?cacert=/etc/ssl/ca.pem", VL_EINVAL}, /* TLS needs rediss */
        {"redis://127.0.0.1:6379?nosuch=1", VL_EINVAL},
        {"rediss://127.0.0.1:6379?insecure=yes", VL_EINVAL},
        {"rediss://127.0.0.1:6379?cacert=/nonexistent/ca.pem", VL_EINVAL},
        {"redis://127.0.0.1:6379?name=two%20words", VL_EINVAL},
        {"redis://127.0.0.1:6379/abc", VL_EINVAL},
        {"redis://127.0.0.1:6379/-1", VL_EINVAL},
        {"unix://", VL_EINVAL},
        {"unix://host/path", VL_EINVAL},
        {"redis://:hunter%zz@127.0.0.1", VL_EINVAL},
        {"redis:///no-host", VL_EINVAL},
    };
    vl_loop *loop = vl_loop_new();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vl_redis *c = vl_redis_new(loop, cases[i].url, NULL);
        vl_future *f;
        assert_non_null(c);
        assert_int_equal(vl_redis_state(c), VL_REDIS_INVALID);
        f = tu_run_cmd(loop, vl_redis_command(c, "PING"), cases[i].status);
        assert_non_null(strstr(vl_future_error(f), "URL"));
        assert_string_equal(vl_future_error(f), vl_redis_error(c));
        assert_null(strstr(vl_future_error(f), "hunter"));
        vl_future_free(f);
        vl_redis_free(c);
    }
    {
        vl_redis *c = vl_redis_new(loop, NULL, NULL);
        vl_future *f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_EINVAL);
        vl_future_free(f);
        vl_redis_free(c);
    }
    assert_null(vl_redis_new(NULL, "redis://127.0.0.1", NULL));
    tu_finish(loop);
}

static void localhost_unix_and_db(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[512];
    vl_redis *tcp, *sock, *db0;
    vl_future *f;

    (void)state;
    snprintf(url, sizeof(url), "redis://localhost:%s/3", tu_env_item("VL_TEST_REDIS_PORTS", 2));
    tcp = vl_redis_new(loop, url, NULL);
    snprintf(url, sizeof(url), "unix://%s?db=3", tu_env_item("VL_TEST_REDIS_SOCKS", 2));
    sock = vl_redis_new(loop, url, NULL);
    db0 = vl_redis_new(loop, tu_redis_url(2), NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(tcp, "SET db3:key in-three"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(db0, "DEL db3:key"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(sock, "GET db3:key"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "in-three");
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(db0, "GET db3:key"), VL_OK);
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_NIL);
    vl_future_free(f);
    vl_redis_free(tcp);
    vl_redis_free(sock);
    vl_redis_free(db0);
    /* A socket that does not exist fails at once, naming the path. */
    sock = vl_redis_new(loop, "unix:///nonexistent/volley.sock", NULL);
    f = tu_run_cmd(loop, vl_redis_command(sock, "PING"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "connect unix:///nonexistent/volley.sock: "));
    vl_future_free(f);
    vl_redis_free(sock);
    tu_finish(loop);
}

/* ---- reconnection ---- */

static void restart_server(int n)
{
    assert_int_equal(tu_sh("%s restart-redis %s %d >/dev/null 2>&1", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR"), n),
                     0);
}

static void reconnect_after_restart(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c;
    tally t = {0, 0, 0, 0};
    vl_future *f;
    int i, ok = 0;

    (void)state;
    vl_redis_options_init(&o);
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    c = vl_redis_new(loop, tu_redis_url(2), &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SET rc:k before"), VL_OK));
    for (i = 0; i < 300; i++)
        vl_future_then(vl_redis_command(c, "GET rc:k"), tally_cb, &t);
    tu_kill_server("redis-3");
    while (t.calls < 300) {
        f = vl_loop_sleep(loop, 10);
        tu_await(loop, f);
        vl_future_free(f);
    }
    /* Every one completed once: those answered before the kill with OK,
     * the others with VL_ECONN; none was retried. */
    assert_int_equal(t.ok + t.other, 300);
    assert_non_null(strstr(vl_redis_error(c), "redis://127.0.0.1:"));
    restart_server(3);
    for (i = 0; i < 300 && !ok; i++) {
        f = vl_redis_command(c, "PING");
        ok = tu_await(loop, f) == VL_OK;
        if (!ok)
            assert_int_equal(vl_future_status(f), VL_ECONN);
        vl_future_free(f);
        if (!ok)
            tu_sleep_ms(loop, 20);
    }
    assert_true(ok);
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    vl_redis_free(c);
    tu_finish(loop);
}

/* With reconnection off the connection stays down and says why. */
static void no_reconnect_stays_down(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    vl_redis *c;
    vl_future *f;
    char url[64];

    (void)state;
    vl_redis_options_init(&o);
    o.reconnect = 0;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed_port());
    c = vl_redis_new(loop, url, &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ECONN));
    assert_int_equal(vl_loop_alive(loop), 0); /* no retry timer */
    assert_int_equal(vl_redis_state(c), VL_REDIS_DOWN);
    f = vl_redis_command(c, "PING");
    assert_int_equal(vl_future_status(f), VL_ECONN);
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* ---- out of memory ---- */

/* Fails each allocation in turn across connect + command: every outcome is
 * a clean status, never a crash or a leak. */
static void out_of_memory_everywhere(void **state)
{
    const char *urls[2];
    long n;
    int u;

    (void)state;
    urls[0] = tu_redis_url(0);
    {
        static char lh[128];
        snprintf(lh, sizeof(lh), "redis://localhost:%s/1", tu_env_item("VL_TEST_REDIS_PORTS", 0));
        urls[1] = lh;
    }
    for (u = 0; u < 2; u++) {
        for (n = 1; n < 400; n++) {
            vl_loop *loop;
            vl_redis *c;
            vl_future *f;
            int done;

            tu_alloc_fail_at(n);
            loop = vl_loop_new();
            if (loop == NULL) {
                assert_int_equal(tu_alloc_live(), 0);
                continue;
            }
            c = vl_redis_new(loop, urls[u], NULL);
            f = c != NULL ? vl_redis_command(c, "SET oom:%ld %s", n, "v") : NULL;
            if (f != NULL) {
                int rc = vl_loop_run_until(loop, f);
                if (rc != VL_OK && rc != VL_ENOMEM && rc != VL_ECONN)
                    fail_msg("n=%ld: status %d (%s)", n, rc, vl_future_error(f));
                vl_future_free(f);
            }
            vl_redis_free(c);
            done = tu_alloc_count() < n;
            tu_alloc_fail_at(0);
            vl_loop_run(loop);
            assert_int_equal(vl_loop_alive(loop), 0);
            vl_loop_free(loop);
            assert_int_equal(tu_alloc_live(), 0);
            if (done)
                break; /* the whole path ran without reaching allocation n */
        }
        assert_true(n < 400);
        if (getenv("VL_TEST_VERBOSE") != NULL)
            fprintf(stderr, "# %s: %ld allocation points failed in turn\n", urls[u], n - 1);
    }
}

/* ---- 0.2 API: options that grow, typed access, formats, messages ---- */

/* A program built against an older header: its struct is the current one
 * cut after reconnect_max_ms. The fields it does not know take their
 * defaults, and the connection works. */
typedef struct old_redis_options {
    size_t struct_size;
    uint64_t connect_timeout_ms;
    uint64_t command_timeout_ms;
    uint64_t reconnect_min_ms;
    uint64_t reconnect_max_ms;
} old_redis_options;

static void options_from_an_older_header(void **state)
{
    vl_loop *loop = vl_loop_new();
    old_redis_options old;
    vl_redis_options big[2];
    vl_redis *c;
    vl_future *f;

    (void)state;
    vl_redis_options_init_sized((vl_redis_options *)(void *)&old, sizeof(old));
    assert_int_equal(old.struct_size, sizeof(old));
    assert_int_equal(old.connect_timeout_ms, 5000); /* defaults inside its size */
    old.command_timeout_ms = 3000;
    c = vl_redis_new(loop, tu_redis_url(0), (const vl_redis_options *)(const void *)&old);
    assert_non_null(c);
    vl_future_free(tu_run_cmd(loop, vl_redis_ready(c), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    vl_redis_free(c);

    /* A struct from a newer header (larger) or never initialised (0) is
     * refused: every command fails with VL_EINVAL and says why. */
    memset(big, 0, sizeof(big));
    vl_redis_options_init(&big[0]);
    big[0].struct_size = sizeof(vl_redis_options) + 8;
    c = vl_redis_new(loop, tu_redis_url(0), &big[0]);
    assert_int_equal(vl_redis_state(c), VL_REDIS_INVALID);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "struct_size"));
    assert_non_null(strstr(vl_redis_error(c), "newer header"));
    vl_future_free(f);
    vl_redis_free(c);
    big[0].struct_size = 0;
    c = vl_redis_new(loop, tu_redis_url(0), &big[0]);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_EINVAL));
    vl_redis_free(c);
    tu_finish(loop);
}

/* The C99 length modifiers format what the caller passed; an unknown
 * conversion is named with its offset. */
static void format_length_modifiers(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    size_t z = (size_t)1 << 40;
    intmax_t j = -((intmax_t)1 << 50);
    ptrdiff_t t = -7;
    signed char hh = -3;
    vl_future *f;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SET fmt:z %zu", z), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "GET fmt:z"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "1099511627776");
    vl_future_free(f);
    f = tu_run_cmd(loop,
                   vl_redis_command(c, "ECHO %jd:%td:%hhd:%llu:%05.1f:%x%%", j, t, hh,
                                    (unsigned long long)18446744073709551615ull, 2.25, 255u),
                   VL_OK);
    tu_check_str(vl_future_redis_reply(f), "-1125899906842624:-7:-3:18446744073709551615:002.2:ff%");
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "ECHO %b", "a\0b", (size_t)3), VL_OK);
    {
        size_t len;
        const char *str = vl_redis_reply_str(vl_future_redis_reply(f), &len);
        assert_int_equal(len, 3);
        assert_memory_equal(str, "a\0b", 3);
    }
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "SET k %q", 1), VL_EINVAL);
    assert_string_equal(vl_future_error(f), "format: unsupported conversion '%q' at byte 6");
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "SET k %zs", 1), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "'%zs' at byte 6"));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL fmt:z"), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
}

/* _integer and _double report a type mismatch; the map view reads flat
 * key/value replies. */
static void typed_access(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    const vl_redis_reply *r, *v;
    long long i = 42;
    double d = 0;
    vl_future *f;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL typed:h typed:f"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "ECHO notanumber"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_integer(r, &i), VL_EINVAL);
    assert_int_equal(i, 42); /* untouched */
    assert_int_equal(vl_redis_reply_double(r, &d), VL_EINVAL);
    assert_int_equal(vl_redis_reply_map_count(r), 0);
    assert_null(vl_redis_reply_map_get(r, "a", 1));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "INCRBYFLOAT typed:f 2.5"), VL_OK);
    assert_int_equal(vl_redis_reply_double(vl_future_redis_reply(f), &d), VL_OK);
    assert_true(d == 2.5);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &i), VL_EINVAL);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "HSET typed:h a 1 bb 22 ccc 333"), VL_OK);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &i), VL_OK);
    assert_int_equal(i, 3);
    assert_int_equal(vl_redis_reply_double(vl_future_redis_reply(f), &d), VL_OK);
    assert_true(d == 3.0);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "HGETALL typed:h"), VL_OK);
    r = vl_future_redis_reply(f);
    assert_int_equal(vl_redis_reply_map_count(r), 3);
    v = vl_redis_reply_map_get(r, "bb", 2);
    tu_check_str(v, "22");
    assert_null(vl_redis_reply_map_get(r, "b", 1));
    assert_null(vl_redis_reply_map_key(r, 3));
    assert_non_null(vl_redis_reply_map_value(r, 2));
    tu_check_str(vl_redis_reply_map_value(r, 0),
                 vl_redis_reply_str(vl_redis_reply_map_get(
                                        r, vl_redis_reply_str(vl_redis_reply_map_key(r, 0), NULL),
                                        strlen(vl_redis_reply_str(vl_redis_reply_map_key(r, 0),
                                                                  NULL))),
                                    NULL));
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(c, "CONFIG GET maxmemory-policy"), VL_OK);
    assert_non_null(vl_redis_reply_map_get(vl_future_redis_reply(f), "maxmemory-policy", 16));
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL typed:h typed:f"), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
}

/* Messages name the command and the endpoint; the reply keeps the raw
 * server text, and a deadline names what it gave up on. */
static void messages_name_verb_and_endpoint(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    size_t len;
    vl_future *f;

    (void)state;
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SET msg:s x"), VL_OK));
    f = tu_run_cmd(loop, vl_redis_command(c, "lpush msg:s y"), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "LPUSH on redis://"));
    assert_non_null(strstr(vl_future_error(f), ": WRONGTYPE"));
    assert_true(strncmp(vl_redis_reply_str(vl_future_redis_reply(f), &len), "WRONGTYPE", 9) == 0);
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL msg:s"), VL_OK));
    /* Last: the server keeps this connection blocked after our deadline. */
    f = tu_run_cmd(loop, vl_future_timeout(vl_redis_command(c, "BLPOP msg:none 0"), 50),
                   VL_ETIMEDOUT);
    assert_non_null(strstr(vl_future_error(f), "BLPOP on redis://"));
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* The loop-alive rule: an idle connection does not keep vl_loop_run
 * running; a pending command does. */
static void idle_connection_lets_the_loop_return(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis *c = vl_redis_new(loop, tu_redis_url(0), NULL);
    int n = 0;

    (void)state;
    /* Connecting with nobody waiting: the loop returns at once. */
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    vl_future_free(tu_run_cmd(loop, vl_redis_ready(c), VL_OK));
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK); /* returns, connection still up */
    assert_int_equal(vl_redis_state(c), VL_REDIS_READY);
    /* A pending command keeps it running until its reply. */
    vl_future_then(vl_redis_command(c, "PING"), tu_count_cb, &n);
    assert_true(vl_loop_alive(loop) > 0);
    assert_int_equal(vl_loop_run(loop), VL_OK);
    assert_int_equal(n, 1);
    vl_redis_free(c);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(basic_replies, tu_setup),
        cmocka_unit_test_setup(server_error_is_data, tu_setup),
        cmocka_unit_test_setup(nested_arrays, tu_setup),
        cmocka_unit_test_setup(binary_safe_argv, tu_setup),
        cmocka_unit_test_setup(reply_stream_changers_refused, tu_setup),
        cmocka_unit_test_setup(pipelining_in_order, tu_setup),
        cmocka_unit_test_setup(an_iteration_takes_a_bounded_share, tu_setup),
        cmocka_unit_test_setup(a_busy_connection_does_not_starve_another, tu_setup),
        cmocka_unit_test_setup(replies_waiting_their_turn_are_not_late, tu_setup),
        cmocka_unit_test_setup(gather_1000_across_three, tu_setup),
        cmocka_unit_test_setup(command_timeout_late_reply_dropped, tu_setup),
        cmocka_unit_test_setup(blocking_commands_keep_their_timeout, tu_setup),
        cmocka_unit_test_setup(deadline_behind_blocking_in_flight, tu_setup),
        cmocka_unit_test_setup(acl_user_without_ping, tu_setup),
        cmocka_unit_test_setup(reply_limits_are_configurable, tu_setup),
        cmocka_unit_test_setup(cancel_and_wait_for, tu_setup),
        cmocka_unit_test_setup(cancelled_write_sent_only_once_ready, tu_setup),
        cmocka_unit_test_setup(free_with_pending, tu_setup),
        cmocka_unit_test_setup(free_from_callback, tu_setup),
        cmocka_unit_test_setup(loop_free_cancels, tu_setup),
        cmocka_unit_test_setup(loop_free_callbacks_free_owner, tu_setup),
        cmocka_unit_test_setup(refused_port, tu_setup),
        cmocka_unit_test_setup(unknown_host, tu_setup),
        cmocka_unit_test_setup(wrong_password, tu_setup),
        cmocka_unit_test_setup(refused_handshake_retried, tu_setup),
        cmocka_unit_test_setup(malformed_urls, tu_setup),
        cmocka_unit_test_setup(localhost_unix_and_db, tu_setup),
        cmocka_unit_test_setup(reconnect_after_restart, tu_setup),
        cmocka_unit_test_setup(no_reconnect_stays_down, tu_setup),
        cmocka_unit_test_setup(out_of_memory_everywhere, tu_setup),
        cmocka_unit_test_setup(options_from_an_older_header, tu_setup),
        cmocka_unit_test_setup(format_length_modifiers, tu_setup),
        cmocka_unit_test_setup(typed_access, tu_setup),
        cmocka_unit_test_setup(messages_name_verb_and_endpoint, tu_setup),
        cmocka_unit_test_setup(idle_connection_lets_the_loop_return, tu_setup),
    };

    return tu_run("redis", tests, sizeof(tests) / sizeof(tests[0]));
}
