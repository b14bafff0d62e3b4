/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_hostile.c - Redis connections against a server that lies
 * (tests/fixtures/redis_hostile.py): garbage, truncated replies, huge length
 * prefixes, deep nesting, replies nobody asked for, a stall mid-reply, a
 * refusal at maxclients, and a peer that hangs up while we write.
 *
 * Each case asserts a clear error (status, message naming the endpoint and
 * what went wrong), that the hostile connection was closed, and that a
 * healthy connection to a real harness redis-server on the same loop got
 * every one of its replies right meanwhile. Every wait is bounded, and every
 * test ends with the loop empty and nothing leaked.
 */
#include "testutil.h"
#include "fixture.h"
#include "redis_internal.h"

#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

/* The longest a hostile case may wait for its outcome. */
#define WAIT_MS ((int)tu_ms(5000)) /* a hang guard: stretched under valgrind */
/* Commands the healthy connection runs during each case. */
#define HEALTHY_N 200

/* ---- the healthy neighbour ---- */

typedef struct healthy {
    vl_redis *c;
    char key[64];
    vl_future *f[HEALTHY_N];
} healthy;

static void healthy_start(vl_loop *loop, healthy *h, const char *tag)
{
    h->c = vl_redis_new(loop, tu_redis_url(0), NULL);
    snprintf(h->key, sizeof(h->key), "hostile:%s:%ld", tag, (long)getpid());
    vl_future_free(tu_run_cmd(loop, vl_redis_command(h->c, "SET %s 0", h->key), VL_OK));
}

/* Pipelines INCRs, to be answered while the hostile connection misbehaves. */
static void healthy_burst(healthy *h)
{
    int i;

    for (i = 0; i < HEALTHY_N; i++)
        h->f[i] = vl_redis_command(h->c, "INCR %s", h->key);
}

/* Every INCR got its own reply: 1, 2, 3... in order. */
static void healthy_check(vl_loop *loop, healthy *h)
{
    int i;

    for (i = 0; i < HEALTHY_N; i++) {
        assert_int_equal(tu_await(loop, vl_future_timeout(h->f[i], WAIT_MS)), VL_OK);
        assert_int_equal(reply_int(vl_future_redis_reply(h->f[i])), i + 1);
        vl_future_free(h->f[i]);
    }
    assert_int_equal(vl_redis_state(h->c), VL_REDIS_READY);
    vl_redis_free(h->c);
}

/* ---- helpers ---- */

static vl_redis *hostile_new(vl_loop *loop, const tu_fixture *fx, uint32_t timeout_ms)
{
    vl_redis_options o;
    char url[96];

    vl_redis_options_init(&o);
    o.reconnect = 0; /* once closed it stays down, so "closed" is observable */
    if (timeout_ms != 0)
        o.command_timeout_ms = timeout_ms;
    snprintf(url, sizeof(url), "redis://%s", fx->url);
    return vl_redis_new(loop, url, &o);
}

/* Waits (bounded) until `c` is down: its connection was closed. */
static void wait_down(vl_loop *loop, vl_redis *c)
{
    int i;

    for (i = 0; i < WAIT_MS / 10 && vl_redis_state(c) != VL_REDIS_DOWN; i++)
        tu_sleep_ms(loop, 10);
    assert_int_equal(vl_redis_state(c), VL_REDIS_DOWN);
}

static void expect_text(const char *got, const char *want)
{
    if (strstr(got, want) == NULL)
        fail_msg("message '%s' does not contain '%s'", got, want);
}

/* One request to the fixture's `scenario`: it must fail with `status` and a
 * message containing `what` and the endpoint; the connection ends up closed,
 * the healthy one unaffected. */
static void refused_request(const char *scenario, int status, const char *what,
                            uint32_t timeout_ms)
{
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    healthy h;
    vl_redis *x;
    vl_future *f;
    int rc;

    tu_fixture_start(&fx, "redis_hostile.py", scenario);
    healthy_start(loop, &h, scenario);
    x = hostile_new(loop, &fx, timeout_ms);
    healthy_burst(&h);
    f = vl_redis_command(x, "GET hostile:k");
    rc = tu_await(loop, vl_future_timeout(f, (uint64_t)timeout_ms + (uint64_t)WAIT_MS));
    if (rc != status)
        fail_msg("%s: status %d (%s), wanted %d", scenario, rc, vl_future_error(f), status);
    expect_text(vl_future_error(f), what);
    expect_text(vl_future_error(f), fx.url);
    assert_null(vl_future_redis_reply(f));
    vl_future_free(f);
    wait_down(loop, x);
    expect_text(vl_redis_error(x), fx.url);
    healthy_check(loop, &h);
    vl_redis_free(x);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* ---- the cases ---- */

static void garbage(void **state)
{
    (void)state;
    refused_request("garbage", VL_EPROTO, "bad reply type byte 0x21", 0);
}

static void truncated_then_close(void **state)
{
    (void)state;
    refused_request("truncated", VL_ECONN, "closed the connection in the middle of a reply", 0);
}

/* A header that promises gigabytes is refused before anything is
 * allocated for it: no allocation of 64 MiB or more, and the process's
 * peak RSS grows by less than that while it is refused. */
static void refused_without_memory(const char *scenario, const char *what)
{
    long before = tu_rss_kb(), peak;

    tu_rss_peak_reset();
    refused_request(scenario, VL_EPROTO, what, 0);
    peak = tu_rss_peak_kb();
    if (before >= 0 && peak >= 0) {
        print_message("# %s: peak RSS %ld KiB, %ld KiB before; largest allocation %zu bytes\n",
                      scenario, peak, before, tu_alloc_largest());
        assert_true(peak - before < 64 * 1024);
    }
    assert_true(tu_alloc_largest() < 64u * 1024 * 1024);
}

/* 12 bytes that made hiredis 0.14 allocate 6 GB: refused at the header. */
static void huge_array_header(void **state)
{
    (void)state;
    refused_without_memory("huge_array", "exceeds max_elements 16777216");
}

/* "$2000000000": 2 GB promised, refused before its "\r\n". */
static void huge_bulk_header(void **state)
{
    (void)state;
    refused_without_memory("huge_bulk", "exceeds max_bulk_len 536870912");
}

static void deep_nesting(void **state)
{
    (void)state;
    refused_request("deep", VL_EPROTO, "nested deeper than max_depth 8", 0);
}

/* A reply stalls half-way: the command times out and, its reply being the
 * oldest due, the connection is closed instead of left stuck. */
static void stall_mid_reply(void **state)
{
    (void)state;
    refused_request("stall", VL_ETIMEDOUT, "command timed out after 300 ms", 300);
}

/* The same with the default options: a stalled server never hangs a caller
 * forever, the default command timeout ends the wait. */
static void stall_with_defaults(void **state)
{
    vl_redis_options o;
    char want[64];

    (void)state;
    vl_redis_options_init(&o);
    assert_true(o.command_timeout_ms > 0);
    snprintf(want, sizeof(want), "command timed out after %u ms", (unsigned)o.command_timeout_ms);
    refused_request("stall", VL_ETIMEDOUT, want, o.command_timeout_ms);
}

/* "-ERR max number of clients reached" on connect is a failed connect, not
 * the answer to the first command. */
static void maxclients_on_connect(void **state)
{
    (void)state;
    refused_request("maxclients", VL_ECONN, "max number of clients reached", 0);
}

/* A reply before any request fails the handshake; it never becomes the
 * answer to the request. */
static void reply_before_request(void **state)
{
    (void)state;
    refused_request("early", VL_EPROTO, "unexpected reply", 0);
}

/* One reply too many: the request got the first one, the second closes the
 * connection with a protocol error and reaches nobody. */
static void more_replies_than_requests(void **state)
{
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    healthy h;
    vl_redis *x;
    vl_future *f;

    (void)state;
    tu_fixture_start(&fx, "redis_hostile.py", "extra");
    healthy_start(loop, &h, "extra");
    x = hostile_new(loop, &fx, 0);
    healthy_burst(&h);
    f = vl_redis_command(x, "GET hostile:k");
    assert_int_equal(tu_await(loop, vl_future_timeout(f, WAIT_MS)), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "v1");
    vl_future_free(f);
    wait_down(loop, x);
    expect_text(vl_redis_error(x), "unexpected reply");
    expect_text(vl_redis_error(x), fx.url);
    /* Closed: a later command fails fast instead of getting the extra. */
    f = vl_redis_command(x, "GET hostile:k");
    assert_int_equal(tu_await(loop, f), VL_ECONN);
    vl_future_free(f);
    healthy_check(loop, &h);
    vl_redis_free(x);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* ---- SIGPIPE ---- */

typedef struct load {
    vl_redis *c;
    long issued, done, ok, conn, other, wrong;
    long cap;
} load;

static void load_cb(vl_future *f, void *ud);

static void load_issue(load *l)
{
    l->issued++;
    assert_int_equal(vl_future_then(vl_redis_command(l->c, "PING"), load_cb, l), VL_OK);
}

static void load_cb(vl_future *f, void *ud)
{
    load *l = ud;
    int rc = vl_future_status(f);

    l->done++;
    if (rc == VL_OK) {
        size_t len;
        const char *s = vl_redis_reply_str(vl_future_redis_reply(f), &len);
        if (s == NULL || len != 4 || memcmp(s, "PONG", 4) != 0)
            l->wrong++;
        l->ok++;
        /* Keep writing while the replies the peer sent before hanging up
         * are still being read: the moment SIGPIPE used to strike. */
        if (l->issued < l->cap)
            load_issue(l);
    } else if (rc == VL_ECONN) {
        l->conn++;
    } else {
        l->other++;
    }
}

/* The peer hangs up while thousands of commands are pipelined and more are
 * being written: with SIGPIPE at its default disposition (which volley must
 * neither need changed nor change), the process survives, every future
 * completes exactly once, and the disposition and mask are as they were. */
static void peer_hangs_up_while_writing(void **state)
{
    vl_loop *loop = vl_loop_new();
    struct sigaction sa;
    sigset_t mask, pending;
    tu_fixture fx;
    load l;
    int i;

    (void)state;
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_DFL);
    assert_int_equal(sigprocmask(SIG_SETMASK, NULL, &mask), 0);
    assert_false(sigismember(&mask, SIGPIPE));
    tu_fixture_start(&fx, "redis_hostile.py", "flood_close");
    memset(&l, 0, sizeof(l));
    l.c = hostile_new(loop, &fx, 0);
    l.cap = 50000;
    for (i = 0; i < 3000; i++)
        load_issue(&l);
    for (i = 0; i < WAIT_MS / 10 && l.done < l.issued; i++)
        tu_sleep_ms(loop, 10);
    fprintf(stdout, "# hangup: requests %ld completions %ld ok %ld conn %ld other %ld wrong %ld\n",
            l.issued, l.done, l.ok, l.conn, l.other, l.wrong);
    assert_int_equal(l.done, l.issued);
    assert_int_equal(l.ok + l.conn, l.done);
    assert_true(l.ok > 0);
    assert_true(l.conn > 0);
    assert_int_equal(l.wrong, 0);
    wait_down(loop, l.c);
    assert_int_equal(sigaction(SIGPIPE, NULL, &sa), 0);
    assert_true(sa.sa_handler == SIG_DFL);
    assert_int_equal(sigprocmask(SIG_SETMASK, NULL, &mask), 0);
    assert_false(sigismember(&mask, SIGPIPE));
    assert_int_equal(sigpending(&pending), 0);
    assert_false(sigismember(&pending, SIGPIPE));
    vl_redis_free(l.c);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* The peer answers 3000 pipelined commands at once and closes: far more
 * replies than one loop iteration takes (the rest wait for the connection's
 * next turn), with the close right behind them in the socket. Every reply
 * that arrived is delivered, none is failed as "connection lost", each
 * future completes once, and only then is the connection down. */
static void replies_then_close_all_delivered(void **state)
{
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    load l;
    int i;

    (void)state;
    tu_fixture_start(&fx, "redis_hostile.py", "flood_close");
    memset(&l, 0, sizeof(l));
    l.c = hostile_new(loop, &fx, 0);
    l.cap = 3000; /* no command beyond the 3000 the peer answers */
    for (i = 0; i < 3000; i++)
        load_issue(&l);
    for (i = 0; i < WAIT_MS / 10 && l.done < l.issued; i++)
        tu_sleep_ms(loop, 10);
    fprintf(stdout, "# replies then close: requests %ld completions %ld ok %ld conn %ld\n",
            l.issued, l.done, l.ok, l.conn);
    assert_int_equal(l.issued, 3000);
    assert_int_equal(l.done, 3000);
    assert_int_equal(l.ok, 3000);
    assert_int_equal(l.wrong, 0);
    wait_down(loop, l.c);
    vl_redis_free(l.c);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* ---- dead peers ---- */

/* The socket connected to `port`, or -1. */
static int socket_to(int port)
{
    int fd;

    for (fd = 3; fd < 4096; fd++) {
        struct sockaddr_in a;
        socklen_t len = sizeof(a);
        if (getpeername(fd, (struct sockaddr *)&a, &len) == 0 && a.sin_family == AF_INET &&
            ntohs(a.sin_port) == port)
            return fd;
    }
    return -1;
}

/* Keepalive and TCP_USER_TIMEOUT are set with the documented defaults, so a
 * peer that vanishes without a reset is noticed. */
static void tcp_keepalive_and_user_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    vl_redis *x;
    int fd, v;
    unsigned ut;
    socklen_t len;

    (void)state;
    tu_fixture_start(&fx, "redis_hostile.py", "echo");
    x = hostile_new(loop, &fx, 0);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(x, "GET k"), VL_OK));
    fd = socket_to(fx.port);
    assert_true(fd >= 0);
    len = sizeof(v);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
    assert_int_equal(v, 1);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
    assert_int_equal(v, 15);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &len), 0);
    assert_int_equal(v, 5);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &len), 0);
    assert_int_equal(v, 3);
    len = sizeof(ut);
    assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &len), 0);
    assert_int_equal(ut, 30000);
    vl_redis_free(x);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* ---- memory ---- */

/* 96 MB on the wire that would build a 1.3 GB reply (32 million nodes of
 * 40 bytes): every wire limit holds (16000000 elements per array, far below
 * max_reply_bytes), so only the bound on the built reply refuses it, with
 * the default max_reply_mem, as soon as the second array header arrives. */
static void reply_memory_bounded(void **state)
{
    vl_redis_options o;
    char want[96];

    (void)state;
    vl_redis_options_init(&o);
    assert_int_equal(o.max_reply_mem, 1024u * 1024 * 1024);
    snprintf(want, sizeof(want), "past max_reply_mem %llu", (unsigned long long)o.max_reply_mem);
    refused_request("wide", VL_EPROTO, want, 0);
}

/* ---- the handshake PING ---- */

/* A server whose answer to PING says only that PING may not run (renamed
 * away, or an ACL user without +ping) answered it in turn: the connection
 * is ready, and commands work. */
static void ping_refused_alone(const char *scenario)
{
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    vl_redis *x;
    vl_future *f;

    tu_fixture_start(&fx, "redis_hostile.py", scenario);
    x = hostile_new(loop, &fx, 0);
    f = vl_redis_command(x, "GET hostile:k");
    if (tu_await(loop, vl_future_timeout(f, WAIT_MS)) != VL_OK)
        fail_msg("%s: %s", scenario, vl_future_error(f));
    tu_check_str(vl_future_redis_reply(f), "v1");
    vl_future_free(f);
    assert_int_equal(vl_redis_state(x), VL_REDIS_READY);
    vl_redis_free(x);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

static void ping_unknown_is_ready(void **state)
{
    (void)state;
    ping_refused_alone("ping_unknown");
}

static void ping_noperm_is_ready(void **state)
{
    (void)state;
    ping_refused_alone("ping_noperm");
}

/* A proxy that answers PING itself with +PONG, ignoring the argument. */
static void pong_proxy_is_ready(void **state)
{
    (void)state;
    ping_refused_alone("pong");
}

/* Other errors to the handshake PING still refuse the connection. */
static void loading_is_failed_connect(void **state)
{
    (void)state;
    refused_request("loading", VL_ECONN, "LOADING Redis is loading", 0);
}

/* ---- deadlines behind a blocking command ---- */

/* Commands issued while the handshake is under way (here forever: the
 * server never answers it, and the connect timeout is off) wait behind a
 * blocking command; the one behind it still times out on time. */
static void deadline_behind_blocking(const char *block_cmd)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    tu_fixture fx;
    char url[96];
    vl_redis *x;
    vl_future *b, *f;

    tu_fixture_start(&fx, "redis_hostile.py", "mute");
    vl_redis_options_init(&o);
    o.reconnect = 0;
    o.connect_timeout_ms = 0;
    o.command_timeout_ms = 300;
    snprintf(url, sizeof(url), "redis://%s", fx.url);
    x = vl_redis_new(loop, url, &o);
    b = vl_redis_command(x, block_cmd);
    f = vl_redis_command(x, "GET hostile:k");
    /* Far below the blocking command's own deadline (5.3 s, or none). */
    assert_int_equal(tu_await(loop, vl_future_timeout(f, 3000)), VL_ETIMEDOUT);
    expect_text(vl_future_error(f), "command timed out after 300 ms");
    vl_future_free(f);
    assert_false(vl_future_done(b));
    assert_int_equal(vl_redis_state(x), VL_REDIS_CONNECTING);
    vl_redis_free(x);
    assert_int_equal(tu_await(loop, b), VL_ECANCELED);
    vl_future_free(b);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

static void deadline_behind_blocking_forever(void **state)
{
    (void)state;
    deadline_behind_blocking("BLPOP hostile:q 0");
}

static void deadline_behind_blocking_longer(void **state)
{
    (void)state;
    deadline_behind_blocking("BLPOP hostile:q 5");
}

/* ---- keepalive ---- */

/* A server that stops answering right after a keepalive PING: the PING is
 * the oldest reply due, so once it is overdue (its command timeout, or the
 * pool's keepalive_ms, whichever comes first) the connection is closed and
 * everything behind it fails at once with VL_ECONN, instead of each command
 * timing out alone on a connection that is never closed, or never. */
static void unanswered_keepalive(uint64_t keepalive_ms, uint64_t timeout_ms, const char *why)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_pool_options o;
    vl_redis_pool *p;
    vl_pool_stats st;
    tu_fixture fx;
    char url[96];
    vl_future *f[10];
    int i;

    tu_fixture_start(&fx, "redis_hostile.py", "mute_on_ping");
    vl_pool_stats_init(&st);
    vl_redis_pool_options_init(&o);
    o.max_size = 1;
    o.min_idle = 1;
    o.keepalive_ms = keepalive_ms;
    o.command_timeout_ms = timeout_ms;
    snprintf(url, sizeof(url), "redis://%s", fx.url);
    p = vl_redis_pool_new(loop, url, &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_pool_ready(p), VL_OK));
    for (i = 0; i < WAIT_MS / 5; i++) {
        vl_redis_pool_stats_get(p, &st);
        if (st.keepalives > 0)
            break;
        tu_sleep_ms(loop, 5);
    }
    assert_int_equal(st.keepalives, 1);
    for (i = 0; i < 10; i++)
        f[i] = vl_redis_pool_command(p, "GET hostile:k");
    for (i = 0; i < 10; i++) {
        assert_int_equal(tu_await(loop, vl_future_timeout(f[i], WAIT_MS)), VL_ECONN);
        expect_text(vl_future_error(f[i]), why);
        vl_future_free(f[i]);
    }
    vl_redis_pool_stats_get(p, &st);
    assert_int_equal(st.closed_broken, 1);
    assert_int_equal(st.timeouts, 0);
    /* It reconnected by itself, and the new connection works. */
    vl_future_free(tu_run_cmd(loop, vl_future_timeout(vl_redis_pool_ready(p), WAIT_MS), VL_OK));
    f[0] = tu_run_cmd(loop, vl_future_timeout(vl_redis_pool_command(p, "GET hostile:k"), WAIT_MS),
                      VL_OK);
    tu_check_str(vl_future_redis_reply(f[0]), "v1");
    vl_future_free(f[0]);
    vl_redis_pool_free(p);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* The command timeout passes first. */
static void overdue_keepalive_closes(void **state)
{
    (void)state;
    unanswered_keepalive(1000, 300, "the reply to a keepalive PING was overdue");
}

/* With no command timeout, keepalive_ms still ends it. */
static void unanswered_keepalive_closes(void **state)
{
    (void)state;
    unanswered_keepalive(200, 0, "keepalive ping unanswered after 200 ms");
}

/* ---- not ready once doomed ---- */

typedef struct done_probe {
    int dones;
    int state_at_done; /* vl_redis_state when the first DONE went out */
} done_probe;

static void probe_event(vl_redis *c, int event, int status, void *ud)
{
    done_probe *d = ud;

    (void)status;
    if (event == VL__REDIS_EV_DONE && d->dones++ == 0)
        d->state_at_done = vl_redis_state(c);
}

/* When a command fails because its connection is about to close (its reply
 * overdue, or refused by the framer), the connection no longer passes for
 * ready when that failure is reported: a pool routing from there must not
 * pick it. */
static void doomed_when_reported(const char *scenario, uint32_t timeout_ms, int status)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    done_probe d = {0, 0};
    tu_fixture fx;
    char url[96];
    vl_redis *x;
    vl_future *f;

    tu_fixture_start(&fx, "redis_hostile.py", scenario);
    vl_redis_options_init(&o);
    o.reconnect = 0;
    if (timeout_ms != 0)
        o.command_timeout_ms = timeout_ms;
    snprintf(url, sizeof(url), "redis://%s", fx.url);
    x = vl__redis_new_pooled(loop, url, &o, probe_event, &d, NULL);
    assert_non_null(x);
    f = vl_redis_command(x, "GET hostile:k");
    assert_int_equal(tu_await(loop, vl_future_timeout(f, WAIT_MS)), status);
    vl_future_free(f);
    assert_int_equal(d.dones, 1);
    assert_int_equal(d.state_at_done, VL_REDIS_DOWN);
    wait_down(loop, x);
    vl_redis_free(x);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

static void doomed_when_overdue(void **state)
{
    (void)state;
    doomed_when_reported("stall", 300, VL_ETIMEDOUT);
}

static void doomed_when_refused(void **state)
{
    (void)state;
    doomed_when_reported("garbage", 0, VL_EPROTO);
}

/* ---- allocation failures ---- */

/* Every allocation a command needs on a ready connection (room in the
 * output buffer, its future, a formatted copy when the buffer could not
 * grow) fails in turn: the command then fails alone (NULL, or VL_ENOMEM)
 * or gets through another way, and the command issued before it still gets
 * its reply on the same connection, which never reconnects. The value is
 * big enough that the output buffer has to grow for it each time. */
static void alloc_failure_fails_one_command(void **state)
{
    enum { BIG = 300 * 1024 };
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    const char *argv[3] = {"SET", "hostile:big", NULL};
    size_t argvlen[3] = {3, 11, BIG};
    char *big = malloc(BIG);
    unsigned epoch;
    long n;
    int failed = 0;
    vl_redis *x;

    (void)state;
    assert_non_null(big);
    memset(big, 'v', BIG);
    argv[2] = big;
    tu_fixture_start(&fx, "redis_hostile.py", "echo");
    x = hostile_new(loop, &fx, 0);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(x, "GET hostile:k"), VL_OK));
    epoch = vl__redis_epoch(x);
    for (n = 1; n <= 8; n++) {
        vl_future *a = vl_redis_command(x, "GET hostile:a"), *f;
        int st;
        assert_non_null(a);
        tu_alloc_fail_at(n);
        f = vl_redis_command_argv(x, 3, argv, argvlen);
        tu_alloc_fail_at(0);
        st = f != NULL ? tu_await(loop, f) : VL_ENOMEM;
        assert_true(st == VL_OK || st == VL_ENOMEM);
        if (st == VL_ENOMEM)
            failed++;
        if (f != NULL && st == VL_ENOMEM)
            expect_text(vl_future_error(f), "out of memory");
        assert_int_equal(tu_await(loop, a), VL_OK);
        vl_future_free(a);
        vl_future_free(f);
        assert_int_equal(vl_redis_state(x), VL_REDIS_READY);
    }
    assert_true(failed >= 1); /* the future, at least */
    assert_int_equal(vl__redis_epoch(x), epoch); /* never reconnected */
    vl_redis_free(x);
    free(big);
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

/* Commands not yet written are bounded (1 GiB): past it a command fails at
 * once with VL_EBUSY and the connection stays up. This also keeps hiredis's
 * output buffer below 2 GiB, where its sdsrange would overflow. */
static void output_buffer_bounded(void **state)
{
    enum { BIG = 400 * 1024 * 1024 };
    vl_loop *loop = vl_loop_new();
    tu_fixture fx;
    vl_redis *x;
    vl_future *f[3];
    const char *argv[3] = {"SET", "hostile:big", NULL};
    size_t argvlen[3] = {3, 11, BIG};
    char *value = malloc(BIG);
    int i;

    (void)state;
    assert_non_null(value);
    memset(value, 'x', BIG);
    argv[2] = value;
    tu_fixture_start(&fx, "redis_hostile.py", "deaf");
    x = hostile_new(loop, &fx, 0);
    for (i = 0; i < WAIT_MS / 10 && vl_redis_state(x) != VL_REDIS_READY; i++)
        tu_sleep_ms(loop, 10);
    assert_int_equal(vl_redis_state(x), VL_REDIS_READY);
    /* The server reads nothing more: all of it stays in the buffer. */
    for (i = 0; i < 3; i++)
        f[i] = vl_redis_command_argv(x, 3, argv, argvlen);
    free(value);
    assert_int_equal(tu_await(loop, vl_future_timeout(f[2], WAIT_MS)), VL_EBUSY);
    expect_text(vl_future_error(f[2]), "output buffer full");
    expect_text(vl_future_error(f[2]), fx.url);
    assert_false(vl_future_done(f[0]));
    assert_false(vl_future_done(f[1]));
    assert_int_equal(vl_redis_state(x), VL_REDIS_READY);
    vl_redis_free(x);
    for (i = 0; i < 3; i++) {
        if (i < 2)
            assert_int_equal(tu_await(loop, f[i]), VL_ECANCELED);
        vl_future_free(f[i]);
    }
    tu_fixture_stop(&fx);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(garbage, tu_setup),
        cmocka_unit_test_setup(truncated_then_close, tu_setup),
        cmocka_unit_test_setup(huge_array_header, tu_setup),
        cmocka_unit_test_setup(huge_bulk_header, tu_setup),
        cmocka_unit_test_setup(deep_nesting, tu_setup),
        cmocka_unit_test_setup(stall_mid_reply, tu_setup),
        cmocka_unit_test_setup(stall_with_defaults, tu_setup),
        cmocka_unit_test_setup(maxclients_on_connect, tu_setup),
        cmocka_unit_test_setup(reply_before_request, tu_setup),
        cmocka_unit_test_setup(more_replies_than_requests, tu_setup),
        cmocka_unit_test_setup(peer_hangs_up_while_writing, tu_setup),
        cmocka_unit_test_setup(replies_then_close_all_delivered, tu_setup),
        cmocka_unit_test_setup(tcp_keepalive_and_user_timeout, tu_setup),
        cmocka_unit_test_setup(reply_memory_bounded, tu_setup),
        cmocka_unit_test_setup(ping_unknown_is_ready, tu_setup),
        cmocka_unit_test_setup(ping_noperm_is_ready, tu_setup),
        cmocka_unit_test_setup(pong_proxy_is_ready, tu_setup),
        cmocka_unit_test_setup(loading_is_failed_connect, tu_setup),
        cmocka_unit_test_setup(deadline_behind_blocking_forever, tu_setup),
        cmocka_unit_test_setup(deadline_behind_blocking_longer, tu_setup),
        cmocka_unit_test_setup(overdue_keepalive_closes, tu_setup),
        cmocka_unit_test_setup(unanswered_keepalive_closes, tu_setup),
        cmocka_unit_test_setup(doomed_when_overdue, tu_setup),
        cmocka_unit_test_setup(doomed_when_refused, tu_setup),
        cmocka_unit_test_setup(alloc_failure_fails_one_command, tu_setup),
        cmocka_unit_test_setup(output_buffer_bounded, tu_setup),
    };

    return tu_run("redis_hostile", tests, sizeof(tests) / sizeof(tests[0]));
}
