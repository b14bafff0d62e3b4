/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_stream.c - streams (volley/stream.h) on loopback: a server
 * and its clients in the same loop, every numbered rule of the header, the
 * readers' edge cases, unix sockets, 1000 concurrent echo clients, a reader
 * that stops reading (memory stays bounded), resets, refused and timed-out
 * connects, an allocation failure sweep, and the same over TLS (an echo
 * server and client, the harness's TLS redis-server, verification
 * failures, a plain client and one without the required certificate at a
 * TLS server, back-pressure, a reset, a handshake timeout). Each test runs in its own
 * process under tu_run's timeout, and every wait has a deadline of its own,
 * so that a broken promise fails the test instead of hanging it. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* A deadline for waits that only guards against a hang. */
#define WAIT_MS 10000

typedef struct acc {
    vl_stream *s[4];
    int n;
} acc;

static void accept_keep(vl_stream_server *srv, vl_stream *s, void *ud)
{
    acc *a = ud;

    (void)srv;
    if (a->n < 4)
        a->s[a->n++] = s;
    else
        vl_stream_free(s);
}

/* Runs f (a read, drain, connect or close) to completion under a deadline. */
static vl_future *wait_f(vl_loop *loop, vl_future *f)
{
    return tu_wait_for(loop, vl_future_timeout(f, tu_ms(WAIT_MS)));
}

static void check_buf(vl_future *f, const char *want)
{
    const vl_stream_buf *b = vl_future_value(f);

    if (vl_future_status(f) != VL_OK)
        fail_msg("status %d: %s", vl_future_status(f), vl_future_error(f));
    assert_non_null(b);
    assert_int_equal(vl_stream_buf_len(b), strlen(want));
    assert_memory_equal(vl_stream_buf_data(b), want, strlen(want));
    assert_int_equal(vl_stream_buf_data(b)[strlen(want)], '\0');
}

/* Reads and checks one value, then frees the future. */
static void expect(vl_loop *loop, vl_future *f, const char *want)
{
    check_buf(wait_f(loop, f), want);
    vl_future_free(f);
}

static void expect_fail(vl_loop *loop, vl_future *f, int status)
{
    wait_f(loop, f);
    if (vl_future_status(f) != status)
        fail_msg("status %d (%s), wanted %d", vl_future_status(f), vl_future_error(f), status);
    vl_future_free(f);
}

static vl_stream *connect_ok(vl_loop *loop, const char *addr, const vl_stream_options *o)
{
    vl_future *f = wait_f(loop, vl_stream_connect(loop, addr, o));
    vl_stream *s;

    if (vl_future_status(f) != VL_OK)
        fail_msg("connect %s: %s", addr, vl_future_error(f));
    s = vl_future_take(f);
    assert_non_null(s);
    vl_future_free(f);
    return s;
}

/* A server on 127.0.0.1 (kernel's port) and one client connected to it:
 * *cli is the client's stream, a->s[0] the server's. */
static vl_stream_server *pair_open(vl_loop *loop, const vl_stream_options *o, acc *a,
                                   vl_stream **cli)
{
    vl_stream_server *srv = vl_stream_listen(loop, "tcp://127.0.0.1:0", o, accept_keep, a);
    char addr[64];
    uint64_t end;

    assert_non_null(srv);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    assert_true(vl_stream_server_port(srv) > 0);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", vl_stream_server_port(srv));
    *cli = connect_ok(loop, addr, o);
    end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);
    while (a->n == 0 && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 1);
    assert_int_equal(a->n, 1);
    return srv;
}

/* Fills s's output buffer until it stays above write_low_water with the
 * peer not reading: the kernel's buffers and the peer's read-ahead are
 * full, so a drain now stays pending. */
static void fill_output(vl_loop *loop, vl_stream *s, size_t low_water)
{
    static char chunk[65536];
    int round;

    for (round = 0; round < 1000; round++) {
        size_t before;
        while (vl_stream_write(s, chunk, sizeof(chunk)) == VL_OK)
            ;
        before = vl_stream_write_buffered(s);
        tu_sleep_ms(loop, 20);
        if (vl_stream_write_buffered(s) == before && before > low_water)
            return; /* nothing moved in 20 ms: everything on the way is full */
    }
    fail_msg("the output buffer never stayed full");
}

/* The end of a pair_open test: everything freed, the loop empty. */
static void pair_close(vl_loop *loop, vl_stream_server *srv, vl_stream *cli, acc *a)
{
    int i;

    vl_stream_free(cli);
    for (i = 0; i < a->n; i++)
        vl_stream_free(a->s[i]);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

static void write_str(vl_stream *s, const char *str)
{
    assert_int_equal(vl_stream_write(s, str, strlen(str)), VL_OK);
}

typedef struct flagged {
    int calls;
    int status;
    size_t len;
} flagged;

static void flag_cb(vl_future *f, void *ud)
{
    flagged *fl = ud;

    fl->calls++;
    fl->status = vl_future_status(f);
    fl->len = vl_stream_buf_len(vl_future_value(f));
}

static void run_until_calls(vl_loop *loop, const int *calls, int want)
{
    uint64_t end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);

    while (*calls < want && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 1);
    assert_int_equal(*calls, want);
}

/* Rule 1: a read whose bytes are buffered already still completes from the
 * loop, never inside vl_stream_read or vl_future_then; exactly once. A
 * connect likewise. */
static void rule1_never_inside_the_call(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    flagged fl = {0, 0, 0}, fc = {0, 0, 0};
    vl_future *f;
    char addr[64];

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    write_str(cli, "hello\n");
    /* Let the bytes reach the server's read buffer. */
    while (vl_stream_read_buffered(a.s[0]) < 6)
        tu_sleep_ms(loop, 1);
    f = vl_stream_read_line(a.s[0], 0);
    assert_non_null(f);
    assert_int_equal(vl_future_then(f, flag_cb, &fl), VL_OK);
    assert_int_equal(fl.calls, 0); /* set only after the calls returned */
    run_until_calls(loop, &fl.calls, 1);
    assert_int_equal(fl.status, VL_OK);
    assert_int_equal(fl.len, 5);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", vl_stream_server_port(srv));
    f = vl_stream_connect(loop, addr, NULL);
    assert_int_equal(vl_future_then(f, flag_cb, &fc), VL_OK);
    assert_int_equal(fc.calls, 0);
    run_until_calls(loop, &fc.calls, 1);
    assert_int_equal(fc.status, VL_OK);
    tu_sleep_ms(loop, 20);
    assert_int_equal(fl.calls, 1);
    assert_int_equal(fc.calls, 1);
    pair_close(loop, srv, cli, &a);
}

/* Rule 2: a second read while one is pending fails with VL_EBUSY, and the
 * pending one is not disturbed; a second drain likewise. */
static void rule2_one_read_at_a_time(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_future *first, *second, *d1, *d2;
    vl_stream_options o;

    (void)state;
    vl_stream_options_init(&o);
    o.write_buffer_max = 4 * 1024 * 1024;
    o.write_low_water = 1024;
    srv = pair_open(loop, &o, &a, &cli);
    first = vl_stream_read_line(a.s[0], 0);
    second = vl_stream_read(a.s[0], 0);
    expect_fail(loop, second, VL_EBUSY);
    assert_false(vl_future_done(first));
    write_str(cli, "one\n");
    expect(loop, first, "one");
    fill_output(loop, cli, o.write_low_water);
    d1 = vl_stream_drain(cli);
    d2 = vl_stream_drain(cli);
    expect_fail(loop, d2, VL_EBUSY);
    assert_false(vl_future_done(d1));
    /* The server reads it all: the drain completes. */
    while (!vl_future_done(d1)) {
        vl_future *r = wait_f(loop, vl_stream_read(a.s[0], 0));
        assert_int_equal(vl_future_status(r), VL_OK);
        vl_future_free(r);
    }
    assert_int_equal(vl_future_status(d1), VL_OK);
    assert_true(vl_stream_write_buffered(cli) <= o.write_low_water);
    vl_future_free(d1);
    pair_close(loop, srv, cli, &a);
}

/* Rule 3: cancelling (or timing out) a pending read consumes nothing: the
 * 5 bytes it had waited on come first in the next read, and the stream
 * goes on. */
static void rule3_cancelled_read_loses_nothing(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    flagged fl = {0, 0, 0};
    vl_future *f;

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    f = vl_stream_read_exactly(a.s[0], 10);
    assert_int_equal(vl_future_then(f, flag_cb, &fl), VL_OK);
    write_str(cli, "01234");
    while (vl_stream_read_buffered(a.s[0]) < 5)
        tu_sleep_ms(loop, 1);
    assert_int_equal(vl_future_cancel(f), 1);
    run_until_calls(loop, &fl.calls, 1);
    assert_int_equal(fl.status, VL_ECANCELED);
    /* A deadline is a cancel too. */
    f = vl_future_timeout(vl_stream_read_exactly(a.s[0], 10), 20);
    assert_int_equal(tu_await(loop, f), VL_ETIMEDOUT);
    vl_future_free(f);
    assert_int_equal(vl_stream_read_buffered(a.s[0]), 5);
    write_str(cli, "56789tail\n");
    expect(loop, vl_stream_read_exactly(a.s[0], 10), "0123456789");
    expect(loop, vl_stream_read_line(a.s[0], 0), "tail");
    assert_int_equal(fl.calls, 1);
    pair_close(loop, srv, cli, &a);
}

/* The line reader: partial lines split across writes, "\r\n" and "\n",
 * a last line without "\n" at EOF, then VL_ECLOSED. */
static void line_reader_partial_lines(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_future *f;
    const char *parts[] = {"ab", "c\r", "\nde", "f\n\n", "x\ry\n", "tail"};
    size_t i;

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    f = vl_stream_read_line(a.s[0], 0);
    for (i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        write_str(cli, parts[i]);
        tu_sleep_ms(loop, 5); /* each part its own segment */
    }
    expect(loop, f, "abc");
    expect(loop, vl_stream_read_line(a.s[0], 0), "def");
    expect(loop, vl_stream_read_line(a.s[0], 0), "");
    expect(loop, vl_stream_read_line(a.s[0], 0), "x\ry");
    f = vl_stream_close(cli);
    assert_int_equal(tu_await(loop, f), VL_OK);
    vl_future_free(f);
    expect(loop, vl_stream_read_line(a.s[0], 0), "tail");
    expect_fail(loop, vl_stream_read_line(a.s[0], 0), VL_ECLOSED);
    /* EOF for read(): an empty buffer, VL_OK. */
    expect(loop, vl_stream_read(a.s[0], 0), "");
    pair_close(loop, srv, NULL, &a);
}

/* max_len: a longer line fails with VL_EPROTO and consumes nothing; a line
 * of exactly max_len passes, also with "\r\n". */
static void line_reader_max_len(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_future *f;

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    write_str(cli, "0123456789\r\n0123456789A\n");
    expect(loop, vl_stream_read_line(a.s[0], 10), "0123456789");
    f = wait_f(loop, vl_stream_read_line(a.s[0], 10));
    assert_int_equal(vl_future_status(f), VL_EPROTO);
    assert_non_null(strstr(vl_future_error(f), "longer than 10"));
    vl_future_free(f);
    /* Nothing was consumed: skip the long line by hand. */
    expect(loop, vl_stream_read_exactly(a.s[0], 12), "0123456789A\n");
    /* No "\n" at all: refused once max_len + 2 bytes are in. */
    write_str(cli, "abcdefghijkl");
    expect_fail(loop, vl_stream_read_line(a.s[0], 10), VL_EPROTO);
    expect(loop, vl_stream_read_exactly(a.s[0], 12), "abcdefghijkl");
    pair_close(loop, srv, cli, &a);
}

/* read_exactly, read_until_eof (its max, then everything) and read. */
static void exact_until_eof_and_read(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_future *f;
    enum { BIG = 300000 };
    char *big = malloc(BIG);
    int i;

    (void)state;
    assert_non_null(big);
    for (i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    srv = pair_open(loop, NULL, &a, &cli);
    expect(loop, vl_stream_read_exactly(a.s[0], 0), "");
    write_str(cli, "hello world");
    expect(loop, vl_stream_read_exactly(a.s[0], 5), "hello");
    expect(loop, vl_stream_read(a.s[0], 3), " wo");
    expect(loop, vl_stream_read(a.s[0], 100), "rld");
    /* More than read_buffer_max (256 KiB) for one read_exactly. */
    assert_int_equal(vl_stream_write(cli, big, BIG), VL_OK);
    f = wait_f(loop, vl_stream_read_exactly(a.s[0], BIG));
    assert_int_equal(vl_future_status(f), VL_OK);
    assert_int_equal(vl_stream_buf_len(vl_future_value(f)), BIG);
    assert_memory_equal(vl_stream_buf_data(vl_future_value(f)), big, BIG);
    vl_future_free(f);
    /* until_eof: more than max before EOF fails, consuming nothing. */
    write_str(cli, "0123456789");
    expect_fail(loop, vl_stream_read_until_eof(a.s[0], 9), VL_EPROTO);
    write_str(cli, "end");
    f = vl_stream_close(cli);
    assert_int_equal(tu_await(loop, f), VL_OK);
    vl_future_free(f);
    expect(loop, vl_stream_read_until_eof(a.s[0], 13), "0123456789end");
    /* read_exactly at EOF with too few: VL_ECLOSED. */
    expect_fail(loop, vl_stream_read_exactly(a.s[0], 1), VL_ECLOSED);
    free(big);
    pair_close(loop, srv, NULL, &a);
}

/* Rule 6: freeing a stream with a read and a drain pending completes both
 * with VL_ECANCELED, once; freeing it from inside its own read's callback
 * is legal and cancels the drain pending then. */
typedef struct freer {
    vl_stream *s;
    flagged drain;
    int calls;
} freer;

static void free_in_cb(vl_future *f, void *ud)
{
    freer *fr = ud;

    (void)f;
    fr->calls++;
    vl_stream_free(fr->s);
}

static void rule6_free_with_pending_ops(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    flagged r = {0, 0, 0}, d = {0, 0, 0};
    freer fr;
    vl_stream_options o;
    char *chunk;
    int rc;

    (void)state;
    vl_stream_options_init(&o);
    o.write_buffer_max = 4 * 1024 * 1024;
    o.write_low_water = 1024;
    chunk = calloc(1, 65536);
    assert_non_null(chunk);
    srv = pair_open(loop, &o, &a, &cli);
    /* Fill the client's output so a drain stays pending: nobody reads the
     * server side. */
    fill_output(loop, cli, o.write_low_water);
    assert_int_equal(vl_future_then(vl_stream_read(cli, 0), flag_cb, &r), VL_OK);
    assert_int_equal(vl_future_then(vl_stream_drain(cli), flag_cb, &d), VL_OK);
    tu_sleep_ms(loop, 20);
    assert_int_equal(r.calls + d.calls, 0);
    vl_stream_free(cli);
    assert_int_equal(r.calls + d.calls, 0); /* from the loop, not inside free */
    tu_sleep_ms(loop, 20);
    assert_int_equal(r.calls, 1);
    assert_int_equal(d.calls, 1);
    assert_int_equal(r.status, VL_ECANCELED);
    assert_int_equal(d.status, VL_ECANCELED);
    /* The server's stream frees itself from its read's callback while its
     * own drain is pending. */
    memset(&fr, 0, sizeof(fr));
    fr.s = a.s[0];
    do
        rc = vl_stream_write(fr.s, chunk, 65536);
    while (rc == VL_OK);
    assert_int_equal(rc, VL_EBUSY);
    assert_int_equal(vl_future_then(vl_stream_drain(fr.s), flag_cb, &fr.drain), VL_OK);
    assert_int_equal(vl_future_then(vl_stream_read(fr.s, 0), free_in_cb, &fr), VL_OK);
    run_until_calls(loop, &fr.calls, 1); /* EOF from the freed client */
    run_until_calls(loop, &fr.drain.calls, 1);
    /* Cancelled by the free, unless the freed client's reset reached the
     * server's writes first: once either way. */
    assert_true(fr.drain.status == VL_ECANCELED || fr.drain.status == VL_ECONN);
    tu_sleep_ms(loop, 20);
    assert_int_equal(fr.calls, 1);
    assert_int_equal(fr.drain.calls, 1);
    free(chunk);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

/* Close with a read pending: the read completes with VL_ECLOSED, the
 * output still goes out in full, then the peer sees EOF. */
static void close_with_pending_ops(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    flagged r = {0, 0, 0};
    vl_future *f, *all;
    enum { N = 600000 };
    char *data = malloc(N);
    int i;

    (void)state;
    assert_non_null(data);
    for (i = 0; i < N; i++)
        data[i] = (char)(i * 7);
    srv = pair_open(loop, NULL, &a, &cli);
    assert_int_equal(vl_future_then(vl_stream_read_line(cli, 0), flag_cb, &r), VL_OK);
    assert_int_equal(vl_stream_write(cli, data, N), VL_OK);
    f = vl_stream_close(cli);
    assert_non_null(f);
    all = vl_stream_read_until_eof(a.s[0], N);
    wait_f(loop, all);
    assert_int_equal(vl_future_status(all), VL_OK);
    assert_int_equal(vl_stream_buf_len(vl_future_value(all)), N);
    assert_memory_equal(vl_stream_buf_data(vl_future_value(all)), data, N);
    vl_future_free(all);
    assert_int_equal(tu_await(loop, f), VL_OK);
    vl_future_free(f);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ECLOSED);
    free(data);
    pair_close(loop, srv, NULL, &a);
}

/* Unix sockets: listen, connect, a line each way, and the socket file is
 * removed on close. */
static void unix_socket_echo(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    char path[64], addr[96];

    (void)state;
    snprintf(path, sizeof(path), "/tmp/vl-stream-%ld.sock", (long)getpid());
    snprintf(addr, sizeof(addr), "unix://%s", path);
    srv = vl_stream_listen(loop, addr, NULL, accept_keep, &a);
    assert_non_null(srv);
    if (vl_stream_server_status(srv) != VL_OK)
        fail_msg("%s", vl_stream_server_error(srv));
    assert_int_equal(vl_stream_server_port(srv), 0);
    cli = connect_ok(loop, addr, NULL);
    write_str(cli, "ping\n");
    while (a.n == 0)
        tu_sleep_ms(loop, 1);
    expect(loop, vl_stream_read_line(a.s[0], 0), "ping");
    write_str(a.s[0], "pong\n");
    expect(loop, vl_stream_read_line(cli, 0), "pong");
    vl_stream_server_close(srv);
    assert_int_equal(access(path, F_OK), -1);
    pair_close(loop, NULL, cli, &a);
}

/* ---- 1000 echo clients ---- */

typedef struct echo_srv_conn {
    vl_stream *s;
    int *open;
} echo_srv_conn;

static void echo_srv_read(vl_future *f, void *ud);

static void echo_srv_closed(vl_future *f, void *ud)
{
    assert_int_equal(vl_future_status(f), VL_OK);
    (*(int *)ud)--;
}

static void echo_srv_next(echo_srv_conn *c)
{
    vl_future *f = vl_stream_read_line(c->s, 1024);

    assert_non_null(f);
    vl_future_then(f, echo_srv_read, c);
}

static void echo_srv_read(vl_future *f, void *ud)
{
    echo_srv_conn *c = ud;
    const vl_stream_buf *b = vl_future_value(f);

    if (vl_future_status(f) != VL_OK) {
        /* The client closed: close gracefully. (Freeing the close's future
         * instead would cancel the close, dropping what is unsent.) */
        assert_int_equal(vl_future_status(f), VL_ECLOSED);
        vl_future_then(vl_stream_close(c->s), echo_srv_closed, c->open);
        free(c);
        return;
    }
    /* Two writes, one send: both go out before the loop next waits. */
    assert_int_equal(vl_stream_write(c->s, vl_stream_buf_data(b), vl_stream_buf_len(b)), VL_OK);
    assert_int_equal(vl_stream_write(c->s, "\n", 1), VL_OK);
    echo_srv_next(c);
}

static void echo_accept(vl_stream_server *srv, vl_stream *s, void *ud)
{
    echo_srv_conn *c = calloc(1, sizeof(*c));

    (void)srv;
    assert_non_null(c);
    c->s = s;
    c->open = ud;
    (*c->open)++;
    echo_srv_next(c);
}

typedef struct echo_cli {
    vl_loop *loop;
    vl_stream *s;
    int id, next, lines;
    int *done, *bad;
} echo_cli;

static void echo_cli_read(vl_future *f, void *ud);

static void echo_cli_line(echo_cli *c)
{
    vl_future_then(vl_stream_read_line(c->s, 64), echo_cli_read, c);
}

/* All 100 lines at once (pipelined), in pieces that split lines. */
static void echo_cli_send(echo_cli *c)
{
    char all[100 * 32];
    size_t len = 0, off;
    int i;

    for (i = 0; i < 100; i++)
        len += (size_t)snprintf(all + len, sizeof(all) - len, "client %d line %d\n", c->id, i);
    for (off = 0; off < len; off += 700) {
        size_t n = len - off < 700 ? len - off : 700;
        assert_int_equal(vl_stream_write(c->s, all + off, n), VL_OK);
    }
}

static void echo_cli_read(vl_future *f, void *ud)
{
    echo_cli *c = ud;
    char want[64];

    snprintf(want, sizeof(want), "client %d line %d", c->id, c->next);
    if (vl_future_status(f) != VL_OK ||
        strcmp(vl_stream_buf_data(vl_future_value(f)), want) != 0) {
        (*c->bad)++;
        (*c->done)++;
        return;
    }
    c->lines++;
    if (++c->next == 100) {
        (*c->done)++;
        return;
    }
    echo_cli_line(c);
}

static void echo_cli_connected(vl_future *f, void *ud)
{
    echo_cli *c = ud;

    if (vl_future_status(f) != VL_OK) {
        fprintf(stderr, "client %d: %s\n", c->id, vl_future_error(f));
        (*c->bad)++;
        (*c->done)++;
        return;
    }
    c->s = vl_future_take(f);
    echo_cli_send(c);
    echo_cli_line(c);
}

static void echo_thousand_clients(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    struct rlimit rl;
    int nclients = getenv("VL_STREAM_CLIENTS") ? atoi(getenv("VL_STREAM_CLIENTS")) : 1000;
    int open = 0, done = 0, bad = 0, i, total = 0;
    echo_cli *cl;
    char addr[64];
    vl_stream_options o;

    (void)state;
    /* Two descriptors per client (both ends live in this process), plus
     * some for the loop and the harness. */
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < (rlim_t)(2 * nclients + 64)) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)(2 * nclients + 64) ? rl.rlim_max
                                                                 : (rlim_t)(2 * nclients + 64);
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    if (rl.rlim_cur < (rlim_t)(2 * nclients + 64)) {
        nclients = (int)((rl.rlim_cur - 64) / 2);
        fprintf(stderr, "RLIMIT_NOFILE hard limit %lu: scaled down to %d clients\n",
                (unsigned long)rl.rlim_max, nclients);
        assert_true(nclients >= 50);
    }
    vl_stream_options_init(&o);
    o.backlog = 1024;
    srv = vl_stream_listen(loop, "tcp://127.0.0.1:0", &o, echo_accept, &open);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", vl_stream_server_port(srv));
    cl = calloc((size_t)nclients, sizeof(*cl));
    assert_non_null(cl);
    for (i = 0; i < nclients; i++) {
        cl[i].loop = loop;
        cl[i].id = i;
        cl[i].done = &done;
        cl[i].bad = &bad;
        assert_int_equal(vl_future_then(vl_stream_connect(loop, addr, &o), echo_cli_connected,
                                        &cl[i]),
                         VL_OK);
    }
    {
        /* A generous guard: the machine may be shared and slow. */
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(90000);
        while (done < nclients && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(done, nclients);
    assert_int_equal(bad, 0);
    for (i = 0; i < nclients; i++) {
        total += cl[i].lines;
        vl_stream_free(cl[i].s);
    }
    assert_int_equal(total, nclients * 100);
    {
        /* The server's side closes as each client's EOF arrives. */
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(30000);
        while (open > 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 1);
        assert_int_equal(open, 0);
    }
    vl_stream_server_close(srv);
    free(cl);
    tu_finish(loop);
}

/* A client that stops reading while the server writes: the server's write
 * returns VL_EBUSY at write_buffer_max, its buffer never passes the bound,
 * and the process's memory stays near where it started. Then the client
 * reads everything, and nothing was lost. */
static void slow_reader_bounded_memory(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_stream_options o;
    char chunk[4096];
    uint64_t written = 0, got = 0;
    long rss0, rss1;
    int i, busy = 0;
    vl_future *f;

    (void)state;
    vl_stream_options_init(&o);
    o.write_buffer_max = 1024 * 1024;
    o.read_buffer_max = 64 * 1024;
    srv = pair_open(loop, &o, &a, &cli);
    rss0 = tu_rss_kb();
    /* Write until refused, let the loop run, and again, until nothing
     * moves any more: the client's read-ahead, both kernels' buffers and
     * our output buffer are full. Each round tries more than could fit. */
    for (i = 0; i < 2000; i++) {
        size_t before;
        int rc;
        for (;;) {
            memset(chunk, 'a' + (int)(written / sizeof(chunk)) % 26, sizeof(chunk));
            rc = vl_stream_write(a.s[0], chunk, sizeof(chunk));
            if (rc != VL_OK)
                break;
            written += sizeof(chunk);
            assert_true(vl_stream_write_buffered(a.s[0]) <= o.write_buffer_max);
        }
        assert_int_equal(rc, VL_EBUSY);
        assert_true(vl_stream_write_buffered(a.s[0]) + sizeof(chunk) > o.write_buffer_max);
        busy++;
        before = vl_stream_write_buffered(a.s[0]);
        tu_sleep_ms(loop, 20);
        if (vl_stream_write_buffered(a.s[0]) == before && busy > 3)
            break;
    }
    assert_true(i < 2000);
    fprintf(stderr, "wrote %llu bytes before the writer stalled (%d rounds)\n",
            (unsigned long long)written, busy);
    assert_true(busy > 0);
    assert_true(vl_stream_read_buffered(cli) <= o.read_buffer_max);
    rss1 = tu_rss_kb();
    if (rss0 > 0 && rss1 > 0) {
        fprintf(stderr, "RSS grew by %ld KiB\n", rss1 - rss0);
        assert_true(rss1 - rss0 < 1024 + 8 * 1024); /* write bound + 8 MiB */
    }
    /* Now read it all back. */
    f = vl_stream_close(a.s[0]);
    while (got < written) {
        vl_future *r = wait_f(loop, vl_stream_read(cli, 0));
        const vl_stream_buf *b = vl_future_value(r);
        assert_int_equal(vl_future_status(r), VL_OK);
        assert_true(vl_stream_buf_len(b) > 0);
        assert_int_equal(vl_stream_buf_data(b)[0], 'a' + (int)(got / sizeof(chunk)) % 26);
        got += vl_stream_buf_len(b);
        vl_future_free(r);
    }
    assert_int_equal(got, written);
    expect(loop, vl_stream_read(cli, 0), ""); /* then EOF */
    assert_int_equal(tu_await(loop, f), VL_OK);
    vl_future_free(f);
    a.n = 0; /* the server's stream was closed: consumed */
    pair_close(loop, srv, cli, &a);
}

/* Peer reset: the client aborts; the server's pending read and its later
 * writes fail with VL_ECONN; the aborted side refuses with VL_ECLOSED. */
static void peer_reset(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_future *f;
    int rc = VL_OK, i;

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    write_str(a.s[0], "unread\n"); /* unread data: the reset is certain */
    tu_sleep_ms(loop, 10);
    f = vl_stream_read_line(a.s[0], 0);
    vl_stream_abort(cli);
    assert_int_equal(vl_stream_write(cli, "x", 1), VL_ECLOSED);
    expect_fail(loop, vl_stream_read(cli, 0), VL_ECLOSED);
    wait_f(loop, f);
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "reset"));
    vl_future_free(f);
    for (i = 0; i < 3 && rc == VL_OK; i++)
        rc = vl_stream_write(a.s[0], "y", 1);
    assert_int_equal(rc, VL_ECONN);
    expect_fail(loop, vl_stream_drain(a.s[0]), VL_ECONN);
    expect_fail(loop, vl_stream_close(a.s[0]), VL_ECONN);
    a.n = 0; /* closed: consumed */
    pair_close(loop, srv, cli, &a);
}

/* Rule 5: bytes that arrived before a reset stay readable after it; the
 * read after them fails with VL_ECONN. */
static void reset_keeps_buffered_bytes(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    vl_future *f;

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    write_str(a.s[0], "unread\n");
    write_str(cli, "keep\n");
    while (vl_stream_read_buffered(a.s[0]) < 5 || vl_stream_read_buffered(cli) < 7)
        tu_sleep_ms(loop, 1);
    vl_stream_abort(cli);
    tu_sleep_ms(loop, 50); /* the server's stream sees the reset */
    expect(loop, vl_stream_read_line(a.s[0], 0), "keep");
    f = wait_f(loop, vl_stream_read_line(a.s[0], 0));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "reset"));
    vl_future_free(f);
    pair_close(loop, srv, cli, &a);
}

/* A closed port refuses: VL_ECONN naming the address. */
static void connect_refused(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    char addr[64];
    acc a = {{0}, 0};
    vl_future *f;
    int port;

    (void)state;
    srv = vl_stream_listen(loop, "tcp://127.0.0.1:0", NULL, accept_keep, &a);
    port = vl_stream_server_port(srv);
    vl_stream_server_close(srv); /* the port is closed now */
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", port);
    f = wait_f(loop, vl_stream_connect(loop, addr, NULL));
    assert_int_equal(vl_future_status(f), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "refused"));
    assert_non_null(strstr(vl_future_error(f), addr));
    vl_future_free(f);
    tu_finish(loop);
}

/* A listener whose accept queue is full drops new SYNs: the connect hears
 * nothing and fails with VL_ETIMEDOUT after connect_timeout_ms, never
 * earlier. */
static void connect_timeout_silent(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port, lfd = tu_silent_listener(&port), fill[200], nfill = 0, i;
    struct sockaddr_in sa;
    vl_stream_options o;
    char addr[64];
    vl_future *f;
    uint64_t t0;

    (void)state;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    /* Fill its backlog (64) and the SYN queue behind it. */
    for (i = 0; i < 200; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fill[i] >= 0);
        (void)connect(fill[i], (struct sockaddr *)&sa, sizeof(sa));
        nfill++;
    }
    tu_sleep_ms(loop, 50);
    vl_stream_options_init(&o);
    o.connect_timeout_ms = 300;
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", port);
    t0 = vl_loop_now_ms(loop);
    f = wait_f(loop, vl_stream_connect(loop, addr, &o));
    assert_int_equal(vl_future_status(f), VL_ETIMEDOUT);
    assert_true(vl_loop_now_ms(loop) - t0 >= 300);
    assert_non_null(strstr(vl_future_error(f), "timed out after 300 ms"));
    vl_future_free(f);
    for (i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
    tu_finish(loop);
}

/* Listen errors arrive through the server's status; bad connects through
 * the future. */
static void bad_addresses(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv, *again;
    acc a = {{0}, 0};
    char addr[64];
    vl_stream_options o;

    (void)state;
    srv = vl_stream_listen(loop, "http://127.0.0.1:0", NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_EINVAL);
    vl_stream_server_close(srv);
    srv = vl_stream_listen(loop, "tcp://localhost:0", NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_EINVAL);
    vl_stream_server_close(srv);
    /* A TLS listener needs its certificate; a typo in a parameter is no
     * silent default. */
    srv = vl_stream_listen(loop, "tls://127.0.0.1:0", NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_EINVAL);
    assert_non_null(strstr(vl_stream_server_error(srv), "needs its certificate"));
    vl_stream_server_close(srv);
    srv = vl_stream_listen(loop, "tls://127.0.0.1:0?cert=/nonexistent/server.crt", NULL,
                           accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_EINVAL);
    assert_non_null(strstr(vl_stream_server_error(srv), "/nonexistent/server.crt"));
    vl_stream_server_close(srv);
    vl_stream_options_init(&o);
    o.write_low_water = o.write_buffer_max;
    srv = vl_stream_listen(loop, "tcp://127.0.0.1:0", &o, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_EINVAL);
    vl_stream_server_close(srv);
    /* The port in use (no SO_REUSEPORT): VL_ECONN with the reason. */
    srv = vl_stream_listen(loop, "tcp://[::1]:0", NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    snprintf(addr, sizeof(addr), "tcp://[::1]:%d", vl_stream_server_port(srv));
    again = vl_stream_listen(loop, addr, NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(again), VL_ECONN);
    assert_non_null(strstr(vl_stream_server_error(again), "in use"));
    vl_stream_server_close(again);
    /* IPv6 works end to end. */
    {
        vl_stream *c = connect_ok(loop, addr, NULL);
        vl_stream_free(c);
    }
    vl_stream_server_close(srv);
    expect_fail(loop, vl_stream_connect(loop, "tcp://127.0.0.1", NULL), VL_EINVAL);
    expect_fail(loop, vl_stream_connect(loop, "tls://127.0.0.1:1?cacer=x", NULL), VL_EINVAL);
    expect_fail(loop, vl_stream_connect(loop, "tls://127.0.0.1:1?insecure=2", NULL), VL_EINVAL);
    expect_fail(loop, vl_stream_connect(loop, "tls://127.0.0.1:1?cacert=/nonexistent/ca.pem", NULL),
                VL_EINVAL);
    expect_fail(loop, vl_stream_connect(loop, "nonsense", NULL), VL_EINVAL);
    assert_null(vl_stream_connect(NULL, "tcp://127.0.0.1:1", NULL));
    assert_null(vl_stream_listen(loop, "tcp://127.0.0.1:0", NULL, NULL, NULL));
    assert_int_equal(vl_stream_write(NULL, "x", 1), VL_EINVAL);
    tu_sleep_ms(loop, 10);
    for (int i = 0; i < a.n; i++)
        vl_stream_free(a.s[i]);
    tu_finish(loop);
}

/* accept(2) out of file descriptors: the server pauses instead of failing
 * or spinning, leaves the connections queued, and accepts them once
 * descriptors are free again. */
static void accept_out_of_descriptors(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    acc a = {{0}, 0};
    struct rlimit old, low;
    struct sockaddr_in sa;
    int fds[3], i, next;
    uint64_t end;

    (void)state;
    srv = vl_stream_listen(loop, "tcp://127.0.0.1:0", NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)vl_stream_server_port(srv));
    for (i = 0; i < 3; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fds[i] >= 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)), 0);
    }
    /* accept takes the lowest free number: with the limit there, it fails
     * with EMFILE. */
    next = dup(0);
    assert_true(next >= 0);
    close(next);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)next;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    tu_sleep_ms(loop, 250);
    assert_int_equal(a.n, 0);
    assert_true(vl_loop_alive(loop) > 0); /* still serving: paused */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);
    while (a.n < 3 && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 5);
    assert_int_equal(a.n, 3);
    for (i = 0; i < 3; i++)
        close(fds[i]);
    pair_close(loop, srv, NULL, &a);
}

/* Rule 7: a listening server holds the loop unless told not to; an idle
 * stream does not, a pending read does. A host name is resolved on a
 * worker thread. */
static void rule7_loop_alive(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli, *c2;
    acc a = {{0}, 0};
    vl_stream_options o;
    vl_future *f;
    char addr[64];

    (void)state;
    vl_stream_options_init(&o);
    o.server_holds_loop = 0;
    srv = pair_open(loop, &o, &a, &cli);
    assert_int_equal(vl_loop_alive(loop), 0); /* idle server and streams */
    f = vl_stream_read(cli, 0);
    assert_true(vl_loop_alive(loop) > 0);
    write_str(a.s[0], "x");
    expect(loop, f, "x");
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_loop_run(loop), VL_OK); /* returns: nothing pending */
    snprintf(addr, sizeof(addr), "tcp://localhost:%d", vl_stream_server_port(srv));
    c2 = connect_ok(loop, addr, &o);
    vl_stream_free(c2);
    vl_stream_server_close(srv);
    srv = vl_stream_listen(loop, "tcp://127.0.0.1:0", NULL, accept_keep, &a);
    assert_true(vl_loop_alive(loop) > 0); /* serve_forever */
    vl_stream_server_close(srv);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_stream_free(cli);
    for (int i = 0; i < a.n; i++)
        vl_stream_free(a.s[i]);
    tu_finish(loop);
    tu_workers_gone();
}

/* Freeing the loop with a server, streams, a pending read and a connect
 * in flight cancels each future once. */
static void loop_freed_with_streams(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli;
    acc a = {{0}, 0};
    flagged r = {0, 0, 0}, c = {0, 0, 0};
    char addr[64];

    (void)state;
    srv = pair_open(loop, NULL, &a, &cli);
    assert_int_equal(vl_future_then(vl_stream_read(cli, 0), flag_cb, &r), VL_OK);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", vl_stream_server_port(srv));
    assert_int_equal(vl_future_then(vl_stream_connect(loop, addr, NULL), flag_cb, &c), VL_OK);
    vl_loop_free(loop);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.status, VL_ECANCELED);
    assert_int_equal(c.calls, 1);
    assert_int_equal(tu_alloc_live(), 0);
}

/* ---- TLS ---- */

/* A file of the harness's certificate directory (VL_TEST_TLS_DIR; the test
 * is skipped, or failed under CI, without it). Rotating static buffers. */
static const char *tls_file(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];

    snprintf(b, sizeof(bufs[0]), "%s/%s", tu_env("VL_TEST_TLS_DIR"), name);
    return b;
}

/* "tls://127.0.0.1:0?cert=...&key=..." plus `extra` ("&verify_client=1"). */
static const char *tls_server_addr(const char *extra)
{
    static char b[2048];

    snprintf(b, sizeof(b), "tls://127.0.0.1:0?cert=%s&key=%s%s", tls_file("server.crt"),
             tls_file("server.key"), extra);
    return b;
}

/* "tls://127.0.0.1:PORT?cacert=<the test CA>" plus `extra`. */
static const char *tls_client_addr(int port, const char *extra)
{
    static char b[2][2048];
    static int next;
    char *p = b[next++ % 2];

    snprintf(p, sizeof(b[0]), "tls://127.0.0.1:%d?cacert=%s%s", port, tls_file("ca.crt"), extra);
    return p;
}

/* A TLS server and one client connected to it, as pair_open. */
static vl_stream_server *tls_pair_open(vl_loop *loop, const vl_stream_options *o, acc *a,
                                       vl_stream **cli)
{
    vl_stream_server *srv = vl_stream_listen(loop, tls_server_addr(""), o, accept_keep, a);
    uint64_t end;

    assert_non_null(srv);
    if (vl_stream_server_status(srv) != VL_OK)
        fail_msg("listen: %s", vl_stream_server_error(srv));
    *cli = connect_ok(loop, tls_client_addr(vl_stream_server_port(srv), ""), o);
    end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);
    while (a->n == 0 && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 1);
    assert_int_equal(a->n, 1);
    return srv;
}

/* Waits until the server counted `n` failed handshakes. */
static void wait_hs_failures(vl_loop *loop, vl_stream_server *srv, uint64_t n)
{
    uint64_t end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);

    while (vl_stream_server_handshake_failures(srv) < n && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 1);
    assert_int_equal(vl_stream_server_handshake_failures(srv), n);
}

static void expect_connect_fail(vl_loop *loop, const char *addr, int status, const char *why)
{
    vl_future *f = wait_f(loop, vl_stream_connect(loop, addr, NULL));

    if (vl_future_status(f) != status || strstr(vl_future_error(f), why) == NULL)
        fail_msg("connect %s: %d %s; wanted %d and \"%s\"", addr, vl_future_status(f),
                 vl_future_error(f), status, why);
    vl_future_free(f);
}

/* 1,000 lines written by a TLS client, echoed by the server side line by
 * line, read back in order; the client's close sends close_notify, which
 * the server reads as the end of the stream. */
static void tls_echo_lines(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_stream *cli, *ss;
    acc a = {{0}, 0};
    vl_stream_server *srv;
    char line[64];
    int i;

    (void)state;
    srv = tls_pair_open(loop, NULL, &a, &cli);
    ss = a.s[0];
    for (i = 0; i < 1000; i++) {
        int n = snprintf(line, sizeof(line), "line %d of the TLS echo\n", i);
        assert_int_equal(vl_stream_write(cli, line, (size_t)n), VL_OK);
    }
    for (i = 0; i < 1000; i++) {
        vl_future *f = wait_f(loop, vl_stream_read_line(ss, 0));
        const vl_stream_buf *b;
        if (vl_future_status(f) != VL_OK)
            fail_msg("server read %d: %s", i, vl_future_error(f));
        b = vl_future_value(f);
        assert_int_equal(vl_stream_write(ss, vl_stream_buf_data(b), vl_stream_buf_len(b)), VL_OK);
        assert_int_equal(vl_stream_write(ss, "\n", 1), VL_OK);
        vl_future_free(f);
    }
    for (i = 0; i < 1000; i++) {
        snprintf(line, sizeof(line), "line %d of the TLS echo", i);
        expect(loop, vl_stream_read_line(cli, 0), line);
    }
    {
        vl_future *f = wait_f(loop, vl_stream_close(cli));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    expect_fail(loop, vl_stream_read_line(ss, 0), VL_ECLOSED);
    assert_int_equal(vl_stream_server_handshake_failures(srv), 0);
    vl_stream_free(ss);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

/* The harness's TLS redis-server answers PING over a tls:// stream;
 * verification against a wrong CA, an expired certificate and a wrong host
 * fails the connect with VL_ECONN and the reason; insecure=1 connects to
 * the wrong-host server all the same. */
static void tls_client_against_redis(void **state)
{
    vl_loop *loop = vl_loop_new();
    int port = atoi(tu_env("VL_TEST_REDIS_TLS_PORT"));
    int expired = atoi(tu_env("VL_TEST_REDIS_TLS_EXPIRED_PORT"));
    int wrong = atoi(tu_env("VL_TEST_REDIS_TLS_WRONGHOST_PORT"));
    char addr[2048];
    vl_stream *s;

    (void)state;
    s = connect_ok(loop, tls_client_addr(port, ""), NULL);
    assert_int_equal(vl_stream_write(s, "PING\r\n", 6), VL_OK);
    expect(loop, vl_stream_read_line(s, 0), "+PONG");
    {
        vl_future *f = wait_f(loop, vl_stream_close(s));
        assert_int_equal(vl_future_status(f), VL_OK);
        vl_future_free(f);
    }
    snprintf(addr, sizeof(addr), "tls://127.0.0.1:%d?cacert=%s", port, tls_file("other-ca.crt"));
    expect_connect_fail(loop, addr, VL_ECONN, "certificate verify failed");
    expect_connect_fail(loop, tls_client_addr(expired, ""), VL_ECONN, "certificate has expired");
    expect_connect_fail(loop, tls_client_addr(wrong, ""), VL_ECONN,
                        "host name mismatch: the certificate is for not-this-host.example");
    /* sni= names what the certificate must say. */
    s = connect_ok(loop, tls_client_addr(wrong, "&sni=not-this-host.example"), NULL);
    vl_stream_free(s);
    s = connect_ok(loop, tls_client_addr(wrong, "&insecure=1"), NULL);
    assert_int_equal(vl_stream_write(s, "PING\r\n", 6), VL_OK);
    expect(loop, vl_stream_read_line(s, 0), "+PONG");
    vl_stream_free(s);
    tu_finish(loop);
}

/* A plain TCP client at a TLS server: the handshake fails on the server,
 * which closes the connection and counts it; on_accept never runs. */
static void tls_server_refuses_plain_client(void **state)
{
    vl_loop *loop = vl_loop_new();
    acc a = {{0}, 0};
    vl_stream_server *srv = vl_stream_listen(loop, tls_server_addr(""), NULL, accept_keep, &a);
    char addr[64];
    vl_stream *c;
    vl_future *f;

    (void)state;
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", vl_stream_server_port(srv));
    c = connect_ok(loop, addr, NULL);
    assert_int_equal(vl_stream_write(c, "GET / HTTP/1.0\r\n\r\n", 18), VL_OK);
    wait_hs_failures(loop, srv, 1);
    assert_non_null(strstr(vl_stream_server_handshake_error(srv), "TLS: handshake"));
    /* The server closed: the client reads to the end (an alert at most). */
    f = wait_f(loop, vl_stream_read_until_eof(c, 0));
    assert_true(vl_future_status(f) == VL_OK || vl_future_status(f) == VL_ECONN);
    vl_future_free(f);
    assert_int_equal(a.n, 0);
    vl_stream_free(c);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

/* verify_client=1: a client without a certificate is refused (TLS 1.3:
 * its connect may complete, its first read then fails), on_accept never
 * runs for it; a client with the CA's certificate is accepted. */
static void tls_client_certificate_required(void **state)
{
    vl_loop *loop = vl_loop_new();
    acc a = {{0}, 0};
    char extra[1100];
    vl_stream_server *srv;
    vl_future *f;
    vl_stream *c;

    (void)state;
    snprintf(extra, sizeof(extra), "&cacert=%s&verify_client=1", tls_file("ca.crt"));
    srv = vl_stream_listen(loop, tls_server_addr(extra), NULL, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    f = wait_f(loop, vl_stream_connect(loop, tls_client_addr(vl_stream_server_port(srv), ""), NULL));
    if (vl_future_status(f) == VL_OK) {
        c = vl_future_take(f);
        expect_fail(loop, vl_stream_read_line(c, 0), VL_ECONN);
        vl_stream_free(c);
    } else {
        assert_int_equal(vl_future_status(f), VL_ECONN);
    }
    vl_future_free(f);
    wait_hs_failures(loop, srv, 1);
    assert_int_equal(a.n, 0);
    snprintf(extra, sizeof(extra), "&cert=%s&key=%s", tls_file("client.crt"),
             tls_file("client.key"));
    c = connect_ok(loop, tls_client_addr(vl_stream_server_port(srv), extra), NULL);
    assert_int_equal(vl_stream_write(c, "hello\n", 6), VL_OK);
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);
        while (a.n == 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 1);
    }
    assert_int_equal(a.n, 1);
    expect(loop, vl_stream_read_line(a.s[0], 0), "hello");
    assert_int_equal(vl_stream_server_handshake_failures(srv), 1);
    vl_stream_free(c);
    vl_stream_free(a.s[0]);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

/* A client that stops reading: the server's TLS writes fill its output
 * buffer to write_buffer_max (plaintext bytes) and are refused with
 * VL_EBUSY past it; a peer reset then fails the client's read with
 * VL_ECONN. */
static void tls_slow_reader_and_reset(void **state)
{
    static char chunk[65536];
    vl_loop *loop = vl_loop_new();
    acc a = {{0}, 0};
    vl_stream_options o;
    vl_stream_server *srv;
    vl_stream *cli;

    (void)state;
    vl_stream_options_init(&o);
    o.write_buffer_max = 256u * 1024;
    o.write_low_water = 16u * 1024;
    o.read_buffer_max = 16u * 1024;
    srv = tls_pair_open(loop, &o, &a, &cli);
    fill_output(loop, a.s[0], o.write_low_water);
    assert_true(vl_stream_write_buffered(a.s[0]) <= o.write_buffer_max);
    assert_true(vl_stream_write_buffered(a.s[0]) > o.write_low_water);
    assert_int_equal(vl_stream_write(a.s[0], chunk,
                                     o.write_buffer_max - vl_stream_write_buffered(a.s[0]) + 1),
                     VL_EBUSY);
    /* The client read ahead no more than its bound (plus one record). */
    assert_true(vl_stream_read_buffered(cli) <= o.read_buffer_max);
    vl_stream_abort(a.s[0]);
    {
        vl_future *f;
        for (;;) {
            f = wait_f(loop, vl_stream_read(cli, 0));
            if (vl_future_status(f) != VL_OK || vl_stream_buf_len(vl_future_value(f)) == 0)
                break;
            vl_future_free(f);
        }
        if (vl_future_status(f) != VL_ECONN)
            fail_msg("read after the reset: %d %s", vl_future_status(f), vl_future_error(f));
        assert_non_null(strstr(vl_future_error(f), "reset"));
        vl_future_free(f);
    }
    vl_stream_free(a.s[0]);
    vl_stream_free(cli);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

/* A TCP client that never speaks: the server gives its handshake up after
 * handshake_timeout_ms (never earlier), closes it and counts it. */
static void tls_handshake_timeout(void **state)
{
    vl_loop *loop = vl_loop_new();
    acc a = {{0}, 0};
    vl_stream_options o;
    vl_stream_server *srv;
    struct sockaddr_in sa;
    uint64_t t0;
    char byte;
    int fd;

    (void)state;
    /* A program built before handshake_timeout_ms existed passes a shorter
     * struct: accepted (the field then has its default, 10 s, which this
     * test does not wait for). */
    memset(&o, 0xff, sizeof(o));
    vl_stream_options_init_sized(&o, offsetof(vl_stream_options, handshake_timeout_ms));
    assert_int_equal(o.handshake_timeout_ms, UINT64_MAX); /* not written */
    srv = vl_stream_listen(loop, tls_server_addr(""), &o, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    vl_stream_server_close(srv);
    vl_stream_options_init(&o);
    assert_int_equal(o.handshake_timeout_ms, 10000);
    o.handshake_timeout_ms = 300;
    srv = vl_stream_listen(loop, tls_server_addr(""), &o, accept_keep, &a);
    assert_int_equal(vl_stream_server_status(srv), VL_OK);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)vl_stream_server_port(srv));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    t0 = vl_loop_now_ms(loop);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    tu_sleep_ms(loop, 100);
    assert_int_equal(vl_stream_server_handshake_failures(srv), 0);
    wait_hs_failures(loop, srv, 1);
    assert_true(vl_loop_now_ms(loop) - t0 >= 300);
    assert_non_null(strstr(vl_stream_server_handshake_error(srv), "timed out after 300 ms"));
    /* The server closed the connection. */
    assert_int_equal(recv(fd, &byte, 1, 0), 0);
    close(fd);
    assert_int_equal(a.n, 0);
    vl_stream_server_close(srv);
    tu_finish(loop);
}

/* ---- allocation failures ---- */

typedef struct sweep {
    vl_stream *srv_s;
    int accepted;
} sweep;

static void sweep_accept(vl_stream_server *srv, vl_stream *s, void *ud)
{
    sweep *sw = ud;

    (void)srv;
    if (sw->srv_s != NULL)
        vl_stream_free(s);
    else
        sw->srv_s = s;
    sw->accepted++;
}

/* One connect, write, read each way. Returns 1 when every step succeeded;
 * any step may fail with VL_ENOMEM (or see the other side fail), never
 * hang, leak or complete twice. */
static long sweep_count; /* allocations the last sweep_once made */

static int sweep_once(long fail_at, int tls)
{
    vl_loop *loop = vl_loop_new();
    vl_stream_server *srv;
    vl_stream *cli = NULL;
    sweep sw = {NULL, 0};
    vl_future *f;
    char addr[1024];
    int ok = 0, rc;

    assert_non_null(loop);
    tu_alloc_fail_at(fail_at);
    srv = vl_stream_listen(loop, tls ? tls_server_addr("") : "tcp://127.0.0.1:0", NULL,
                           sweep_accept, &sw);
    if (srv == NULL || vl_stream_server_status(srv) != VL_OK)
        goto out;
    if (tls)
        snprintf(addr, sizeof(addr), "%s", tls_client_addr(vl_stream_server_port(srv), ""));
    else
        snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%d", vl_stream_server_port(srv));
    f = vl_stream_connect(loop, addr, NULL);
    if (f == NULL)
        goto out;
    rc = tu_await(loop, vl_future_timeout(f, tu_ms(WAIT_MS)));
    /* Over TLS the server's side may run out first: its handshake ends,
     * and the client hears the connection close. */
    assert_true(rc == VL_OK || rc == VL_ENOMEM || (tls && rc == VL_ECONN));
    cli = rc == VL_OK ? vl_future_take(f) : NULL;
    vl_future_free(f);
    if (cli == NULL)
        goto out;
    if (vl_stream_write(cli, "hi\n", 3) != VL_OK)
        goto out;
    f = vl_stream_read_line(cli, 0);
    if (f == NULL)
        goto out;
    /* Wait for the server side (its stream may not be allocated: then the
     * client's read sees EOF). */
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(WAIT_MS);
        while (sw.srv_s == NULL && !vl_future_done(f) && vl_loop_now_ms(loop) < end) {
            /* The sleep's own future may be the allocation that fails
             * (a TLS server's side arrives after its handshake): again. */
            vl_future *t = vl_loop_sleep(loop, 1);
            if (t != NULL) {
                (void)tu_await(loop, t);
                vl_future_free(t);
            }
        }
    }
    if (sw.srv_s != NULL) {
        vl_future *r = vl_stream_read_line(sw.srv_s, 0);
        if (r != NULL) {
            rc = tu_await(loop, vl_future_timeout(r, tu_ms(WAIT_MS)));
            assert_true(rc == VL_OK || rc == VL_ENOMEM);
            if (rc == VL_OK)
                (void)vl_stream_write(sw.srv_s, "ho\n", 3);
            vl_future_free(r);
        }
        /* Closed, not freed: free would drop the answer not sent yet. */
        r = vl_stream_close(sw.srv_s);
        sw.srv_s = NULL;
        if (r != NULL) {
            rc = tu_await(loop, vl_future_timeout(r, tu_ms(WAIT_MS)));
            assert_true(rc == VL_OK || rc == VL_ENOMEM);
            vl_future_free(r);
        }
    }
    rc = tu_await(loop, vl_future_timeout(f, tu_ms(WAIT_MS)));
    assert_true(rc == VL_OK || rc == VL_ENOMEM || rc == VL_ECLOSED || rc == VL_ECONN);
    if (rc == VL_OK) {
        check_buf(f, "ho");
        ok = 1;
    }
    vl_future_free(f);
out:
    vl_stream_free(cli);
    vl_stream_free(sw.srv_s);
    vl_stream_server_close(srv);
    sweep_count = tu_alloc_count();
    tu_alloc_fail_at(0);
    tu_finish(loop);
    return ok;
}

static void sweep_all(int tls)
{
    long n;

    for (n = 1; n < 400; n++) {
        int ok = sweep_once(n, tls);
        if (getenv("VL_STREAM_SWEEP_TRACE"))
            fprintf(stderr, "fail at %ld: ok %d, %ld allocations\n", n, ok, sweep_count);
        if (ok && sweep_count < n)
            break; /* the whole sequence ran without reaching the failure */
    }
    assert_true(n < 400);
    assert_int_equal(sweep_once(0, tls), 1);
}

static void alloc_failure_sweep(void **state)
{
    (void)state;
    sweep_all(0);
}

/* The same over TLS (volley's allocations; OpenSSL's go through its own
 * allocator). */
static void tls_alloc_failure_sweep(void **state)
{
    (void)state;
    (void)tu_env("VL_TEST_TLS_DIR");
    sweep_all(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(rule1_never_inside_the_call, tu_setup),
        cmocka_unit_test_setup(rule2_one_read_at_a_time, tu_setup),
        cmocka_unit_test_setup(rule3_cancelled_read_loses_nothing, tu_setup),
        cmocka_unit_test_setup(line_reader_partial_lines, tu_setup),
        cmocka_unit_test_setup(line_reader_max_len, tu_setup),
        cmocka_unit_test_setup(exact_until_eof_and_read, tu_setup),
        cmocka_unit_test_setup(rule6_free_with_pending_ops, tu_setup),
        cmocka_unit_test_setup(close_with_pending_ops, tu_setup),
        cmocka_unit_test_setup(unix_socket_echo, tu_setup),
        cmocka_unit_test_setup(echo_thousand_clients, tu_setup),
        cmocka_unit_test_setup(slow_reader_bounded_memory, tu_setup),
        cmocka_unit_test_setup(peer_reset, tu_setup),
        cmocka_unit_test_setup(reset_keeps_buffered_bytes, tu_setup),
        cmocka_unit_test_setup(connect_refused, tu_setup),
        cmocka_unit_test_setup(connect_timeout_silent, tu_setup),
        cmocka_unit_test_setup(bad_addresses, tu_setup),
        cmocka_unit_test_setup(accept_out_of_descriptors, tu_setup),
        cmocka_unit_test_setup(rule7_loop_alive, tu_setup),
        cmocka_unit_test_setup(loop_freed_with_streams, tu_setup),
        cmocka_unit_test_setup(alloc_failure_sweep, tu_setup),
        cmocka_unit_test_setup(tls_echo_lines, tu_setup),
        cmocka_unit_test_setup(tls_client_against_redis, tu_setup),
        cmocka_unit_test_setup(tls_server_refuses_plain_client, tu_setup),
        cmocka_unit_test_setup(tls_client_certificate_required, tu_setup),
        cmocka_unit_test_setup(tls_slow_reader_and_reset, tu_setup),
        cmocka_unit_test_setup(tls_handshake_timeout, tu_setup),
        cmocka_unit_test_setup(tls_alloc_failure_sweep, tu_setup),
    };

    return tu_run("stream", tests, sizeof(tests) / sizeof(tests[0]));
}
