/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_pubsub.c - the subscriber (volley/pubsub.h) against real
 * redis-server instances (tests/servers.sh) and against a small lying
 * server forked by the test itself.
 *
 * Messages are published from ordinary connections (vl_redis_command) and
 * counted on arrival: per channel and per pattern, with sequence numbers in
 * the payloads, so a message lost, doubled or reordered fails the test.
 * Every wait is bounded, and every test ends with the loop empty and
 * nothing leaked.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
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

/* Asserts that a confirmation reply is [word, name, count] (name NULL: nil). */
static void check_confirm(const vl_redis_reply *r, const char *word, const char *name,
                          long long count)
{
    assert_int_equal(vl_redis_reply_type(r), VL_REDIS_ARRAY);
    assert_int_equal(vl_redis_reply_count(r), 3);
    tu_check_str(vl_redis_reply_element(r, 0), word);
    if (name != NULL)
        tu_check_str(vl_redis_reply_element(r, 1), name);
    else
        assert_int_equal(vl_redis_reply_type(vl_redis_reply_element(r, 1)), VL_REDIS_NIL);
    assert_int_equal(reply_int(vl_redis_reply_element(r, 2)), count);
}

/* Runs f to completion, checks its status and its confirmation, frees it. */
static void expect_confirm(vl_loop *loop, vl_future *f, const char *word, const char *name,
                           long long count)
{
    tu_run_cmd(loop, f, VL_OK);
    check_confirm(vl_future_redis_reply(f), word, name, count);
    vl_future_free(f);
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

/* PUBLISH and the number of receivers it reports. */
static long long publish(vl_loop *loop, vl_redis *pub, const char *ch, const char *payload,
                         size_t len)
{
    vl_future *f = tu_run_cmd(loop, vl_redis_command(pub, "PUBLISH %s %b", ch, payload, len),
                              VL_OK);
    long long n = reply_int(vl_future_redis_reply(f));

    vl_future_free(f);
    return n;
}

/* ---- what the callbacks saw ---- */

#define MAXCH 10

typedef struct rx {
    vl_redis_sub *s;
    long msgs, pmsgs, smsgs, bad;
    long per_ch[MAXCH];      /* channel messages of "<prefix><i>" */
    long per_pat[2];         /* pattern messages per pattern */
    long pat_seq[2][MAXCH];  /* next sequence number per pattern and channel */
    char prefix[16];
    char pats[2][32];
    int gaps;
    uint64_t gap_ms;
    uint64_t first_ms;       /* loop ms of the first message (0: none) */
    /* The last message, copied. */
    int last_kind;
    char last_ch[128], last_pat[64];
    size_t last_ch_len;
    int last_type;
    char *last_payload;
    size_t last_len;
    size_t last_count;       /* elements of an ARRAY payload */
    char last_elem0[64];
    /* Subscriptions the server ended (on_ended), and the last of them. */
    long ended;
    int ended_kind;
    char ended_ch[64];
    /* Free the subscriber from inside the callback at this message. */
    long free_at;
    vl_future *late;         /* a future issued from the callback */
} rx;

static long seq_of(const char *p, size_t len)
{
    char buf[32];

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return strtol(buf, NULL, 10);
}

static void on_message(vl_redis_sub *s, int kind, const char *ch, size_t chlen, const char *pat,
                       size_t patlen, const vl_redis_reply *payload, void *ud)
{
    rx *x = ud;
    size_t plen = 0, pre = strlen(x->prefix);
    const char *p = vl_redis_reply_str(payload, &plen);
    long idx = -1;

    x->last_kind = kind;
    x->last_ch_len = chlen < sizeof(x->last_ch) - 1 ? chlen : sizeof(x->last_ch) - 1;
    memcpy(x->last_ch, ch, x->last_ch_len);
    x->last_ch[x->last_ch_len] = '\0';
    snprintf(x->last_pat, sizeof(x->last_pat), "%.*s", (int)patlen, pat != NULL ? pat : "");
    x->last_type = vl_redis_reply_type(payload);
    x->last_count = vl_redis_reply_count(payload);
    x->last_elem0[0] = '\0';
    if (x->last_count > 0) {
        size_t el = 0;
        const char *e = vl_redis_reply_str(vl_redis_reply_element(payload, 0), &el);
        snprintf(x->last_elem0, sizeof(x->last_elem0), "%.*s", (int)el, e != NULL ? e : "");
    }
    free(x->last_payload);
    x->last_payload = NULL;
    x->last_len = plen;
    if (p != NULL) {
        x->last_payload = malloc(plen + 1);
        assert_non_null(x->last_payload);
        memcpy(x->last_payload, p, plen);
        x->last_payload[plen] = '\0';
    }
    if (pre > 0 && chlen == pre + 1 && memcmp(ch, x->prefix, pre) == 0 && ch[pre] >= '0' &&
        ch[pre] <= '9')
        idx = ch[pre] - '0';
    if (kind == VL_REDIS_SUB_CHANNEL) {
        x->msgs++;
        if (idx >= 0) {
            if (pat != NULL || seq_of(p, plen) != x->per_ch[idx])
                x->bad++;
            x->per_ch[idx]++;
        }
    } else if (kind == VL_REDIS_SUB_PATTERN) {
        int k = -1, i;
        x->pmsgs++;
        for (i = 0; i < 2; i++)
            if (x->pats[i][0] != '\0' && patlen == strlen(x->pats[i]) &&
                memcmp(pat, x->pats[i], patlen) == 0)
                k = i;
        if (idx >= 0) {
            /* The patterns split the channels: 0-4 and 5-9. */
            if (k != (idx < 5 ? 0 : 1) || seq_of(p, plen) != x->pat_seq[k][idx])
                x->bad++;
            else
                x->pat_seq[k][idx]++;
            if (k >= 0)
                x->per_pat[k]++;
        }
    } else {
        x->smsgs++;
    }
    if (x->free_at > 0 && x->msgs + x->pmsgs + x->smsgs == x->free_at) {
        const char *other = "fm:other";
        x->late = vl_redis_subscribe(s, 1, &other);
        vl_redis_sub_free(s);
        x->s = NULL;
    }
}

/* The first-message time, kept apart from on_message's bookkeeping. */
typedef struct timed {
    rx x;
    vl_loop *loop;
} timed;

static void on_message_timed(vl_redis_sub *s, int kind, const char *ch, size_t chlen,
                             const char *pat, size_t patlen, const vl_redis_reply *payload,
                             void *ud)
{
    timed *t = ud;

    on_message(s, kind, ch, chlen, pat, patlen, payload, &t->x);
    if (t->x.first_ms == 0)
        t->x.first_ms = vl_loop_now_ms(t->loop);
}

static void on_gap(vl_redis_sub *s, uint64_t down_ms, void *ud)
{
    rx *x = ud;

    (void)s;
    x->gaps++;
    x->gap_ms = down_ms;
}

static void on_ended(vl_redis_sub *s, int kind, const char *ch, size_t len, void *ud)
{
    rx *x = ud;

    (void)s;
    x->ended++;
    x->ended_kind = kind;
    snprintf(x->ended_ch, sizeof(x->ended_ch), "%.*s", (int)len, ch);
}

static void on_gap_timed(vl_redis_sub *s, uint64_t down_ms, void *ud)
{
    on_gap(s, down_ms, &((timed *)ud)->x);
}

static void rx_clear(rx *x)
{
    free(x->last_payload);
    x->last_payload = NULL;
}

static void sub_opts(vl_redis_sub_options *o, rx *x)
{
    vl_redis_sub_options_init(o);
    o->on_message = on_message;
    o->on_gap = on_gap;
    o->ud = x;
    o->reconnect_min_ms = 10;
    o->reconnect_max_ms = 50;
}

/* A subscriber on `url` whose callbacks report to `x` (cleared first),
 * with a short backoff; keepalive_ms and reconnect as given. */
static vl_redis_sub *sub_open(vl_loop *loop, const char *url, rx *x, uint64_t keepalive_ms,
                              int reconnect)
{
    vl_redis_sub_options o;
    vl_redis_sub *s;

    memset(x, 0, sizeof(*x));
    sub_opts(&o, x);
    o.keepalive_ms = keepalive_ms;
    o.reconnect = reconnect;
    s = vl_redis_sub_new(loop, url, &o);
    assert_non_null(s);
    return s;
}

/* The end of a test: frees what it made (NULL: freed already), then the
 * loop must end empty with nothing leaked. */
static void sub_close(vl_loop *loop, vl_redis_sub *s, vl_redis *pub, rx *x)
{
    vl_redis_sub_free(s);
    vl_redis_free(pub);
    rx_clear(x);
    tu_finish(loop);
}

/* Lets the loop run until *counter reaches want, or `ms` pass. */
static void wait_count(vl_loop *loop, const long *counter, long want, uint64_t ms)
{
    uint64_t end = vl_loop_now_ms(loop) + tu_ms(ms);

    while (*counter < want && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 5);
}

/* ---- 100,000 messages over 10 channels and 2 patterns ---- */

#define FLOOD_N 100000
#define FLOOD_WINDOW 2000

typedef struct flood {
    vl_redis *pub;
    long issued, done, receivers, errors;
} flood;

static void flood_issue(flood *fl);

static void flood_cb(vl_future *f, void *ud)
{
    flood *fl = ud;

    fl->done++;
    if (vl_future_status(f) != VL_OK)
        fl->errors++;
    else
        fl->receivers += reply_int(vl_future_redis_reply(f));
    if (fl->issued < FLOOD_N)
        flood_issue(fl);
}

static void flood_issue(flood *fl)
{
    long i = fl->issued++;
    vl_future *f = vl_redis_command(fl->pub, "PUBLISH fl:%ld %ld", i % MAXCH, i / MAXCH);

    assert_non_null(f);
    assert_int_equal(vl_future_then(f, flood_cb, fl), VL_OK);
}

static void flood_100k(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *chans[MAXCH] = {"fl:0", "fl:1", "fl:2", "fl:3", "fl:4",
                                "fl:5", "fl:6", "fl:7", "fl:8", "fl:9"};
    const char *pats[2] = {"fl:[0-4]", "fl:[5-9]"};
    vl_redis_sub *s;
    flood fl;
    rx x;
    int i;

    (void)state;
    memset(&fl, 0, sizeof(fl));
    s = sub_open(loop, tu_redis_url(0), &x, 0, 1);
    strcpy(x.prefix, "fl:");
    strcpy(x.pats[0], pats[0]);
    strcpy(x.pats[1], pats[1]);
    expect_confirm(loop, vl_redis_subscribe(s, MAXCH, chans), "subscribe", "fl:9", 10);
    expect_confirm(loop, vl_redis_psubscribe(s, 2, pats), "psubscribe", "fl:[5-9]", 12);
    fl.pub = vl_redis_new(loop, tu_redis_url(0), NULL);
    for (i = 0; i < FLOOD_WINDOW; i++)
        flood_issue(&fl);
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(60000);
        while ((fl.done < FLOOD_N || x.msgs + x.pmsgs < 2 * FLOOD_N) &&
               vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 10);
    }
    printf("# flood: published %ld, receivers %ld, messages %ld, pattern messages %ld + %ld, "
           "out of order %ld, gaps %d\n",
           fl.done, fl.receivers, x.msgs, x.per_pat[0], x.per_pat[1], x.bad, x.gaps);
    assert_int_equal(fl.done, FLOOD_N);
    assert_int_equal(fl.errors, 0);
    /* Every PUBLISH reached the channel and its pattern on this one client. */
    assert_int_equal(fl.receivers, 2 * FLOOD_N);
    assert_int_equal(x.bad, 0);
    assert_int_equal(x.msgs, FLOOD_N);
    assert_int_equal(x.pmsgs, FLOOD_N);
    for (i = 0; i < MAXCH; i++) {
        assert_int_equal(x.per_ch[i], FLOOD_N / MAXCH);
        assert_int_equal(x.pat_seq[i < 5 ? 0 : 1][i], FLOOD_N / MAXCH);
    }
    assert_int_equal(x.per_pat[0], FLOOD_N / 2);
    assert_int_equal(x.per_pat[1], FLOOD_N / 2);
    assert_int_equal(x.gaps, 0);
    assert_string_equal(vl_redis_sub_error(s), "");
    sub_close(loop, s, fl.pub, &x);
}

/* ---- kill -9 and restart ---- */

static void restart_server(int n)
{
    assert_int_equal(tu_sh("%s restart-redis %s %d >/dev/null 2>&1", tu_env("VL_TEST_SERVERS"),
                           tu_env("VL_TEST_DIR"), n),
                     0);
}

static void ignore_cb(vl_future *f, void *ud)
{
    (void)f;
    (void)ud;
}

#define K9_MAX_MS 200

static void kill9_resubscribes(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "k9:ch", *pat = "k9:p*", *late = "k9:late", *gone = "k9:gone";
    vl_redis_sub_options o;
    vl_redis_options po;
    vl_redis_sub *s;
    vl_redis *pub;
    vl_future *lf, *uf;
    long long id1 = 0, id2 = 0;
    uint64_t t0, end;
    timed t;
    char payload[32];
    long i, before;

    (void)state;
    memset(&t, 0, sizeof(t));
    t.loop = loop;
    vl_redis_sub_options_init(&o);
    o.on_message = on_message_timed;
    o.on_gap = on_gap_timed;
    o.ud = &t;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = K9_MAX_MS;
    s = vl_redis_sub_new(loop, tu_redis_url(2), &o);
    vl_redis_options_init(&po);
    po.reconnect_min_ms = 10;
    po.reconnect_max_ms = 50;
    pub = vl_redis_new(loop, tu_redis_url(2), &po);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "k9:ch", 1);
    expect_confirm(loop, vl_redis_psubscribe(s, 1, &pat), "psubscribe", "k9:p*", 2);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &gone), "subscribe", "k9:gone", 3);
    assert_int_equal(vl_redis_sub_client_id(s, &id1), VL_OK);
    assert_int_equal(publish(loop, pub, ch, "x", 1), 1);
    wait_count(loop, &t.x.msgs, 1, 5000);
    assert_int_equal(t.x.msgs, 1);

    tu_kill_server("redis-3");
    end = vl_loop_now_ms(loop) + tu_ms(5000);
    while (vl_redis_sub_state(s) == VL_REDIS_READY && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 5);
    assert_int_not_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    assert_int_equal(vl_redis_sub_client_id(s, &id2), VL_ESTATE);
    /* While down: a subscribe waits for the next handshake, an unsubscribe
     * completes at once (the server forgot the subscription). */
    lf = vl_redis_subscribe(s, 1, &late);
    uf = tu_run_cmd(loop, vl_redis_unsubscribe(s, 1, &gone), VL_OK);
    assert_null(vl_future_redis_reply(uf));
    vl_future_free(uf);
    assert_false(vl_future_done(lf));
    tu_sleep_ms(loop, 300); /* the backoff reaches its ceiling meanwhile */
    assert_false(vl_future_done(lf));
    assert_int_equal(t.x.gaps, 0);

    restart_server(3);
    t0 = vl_loop_now_ms(loop);
    before = t.x.msgs;
    t.x.first_ms = 0;
    end = t0 + tu_ms(10000);
    /* Publish until the first message is back: it shows the subscription
     * was restored on the new server. */
    for (i = 0; t.x.msgs == before && vl_loop_now_ms(loop) < end; i++) {
        vl_future *f = vl_redis_command(pub, "PUBLISH %s probe-%ld", ch, i);
        assert_int_equal(vl_future_then(f, ignore_cb, NULL), VL_OK);
        tu_sleep_ms(loop, 5);
    }
    {
        uint64_t first = t.x.msgs > before ? t.x.first_ms : 0;
        printf("# kill9: first message %llu ms after the restart (backoff ceiling %d ms), "
               "gap reported %d time(s), down %llu ms\n",
               (unsigned long long)(first - t0), K9_MAX_MS, t.x.gaps,
               (unsigned long long)t.x.gap_ms);
        assert_true(t.x.msgs > before);
        assert_true(first - t0 <= K9_MAX_MS + tu_ms(1000));
    }
    /* The subscribe made while down was sent after the handshake. */
    tu_run_cmd(loop, lf, VL_OK);
    check_confirm(vl_future_redis_reply(lf), "subscribe", "k9:late", 3);
    vl_future_free(lf);
    assert_int_equal(t.x.gaps, 1);
    assert_true(t.x.gap_ms >= 300); /* it was down at least as long as we slept */
    assert_int_equal(vl_redis_sub_client_id(s, &id2), VL_OK);
    assert_true(id2 > 0);
    /* Messages published after the restart all arrive, in order, on the
     * channel, the pattern and the late channel; the unsubscribed one is
     * not subscribed to again. */
    t.x.msgs = t.x.pmsgs = 0;
    for (i = 0; i < 100; i++) {
        snprintf(payload, sizeof(payload), "%ld", i);
        vl_future *a = vl_redis_command(pub, "PUBLISH %s %s", ch, payload);
        vl_future *b = vl_redis_command(pub, "PUBLISH k9:pq %s", payload);
        vl_future *c = vl_redis_command(pub, "PUBLISH %s %s", late, payload);
        assert_int_equal(vl_future_then(a, ignore_cb, NULL), VL_OK);
        assert_int_equal(vl_future_then(b, ignore_cb, NULL), VL_OK);
        assert_int_equal(vl_future_then(c, ignore_cb, NULL), VL_OK);
    }
    wait_count(loop, &t.x.msgs, 200, 5000);
    wait_count(loop, &t.x.pmsgs, 100, 5000);
    assert_int_equal(t.x.msgs, 200);
    assert_int_equal(t.x.pmsgs, 100);
    assert_int_equal(publish(loop, pub, gone, "x", 1), 0);
    assert_int_equal(t.x.gaps, 1);
    vl_redis_sub_free(s);
    vl_redis_free(pub);
    rx_clear(&t.x);
    tu_finish(loop);
}

/* ---- confirmations, unsubscribe of all, the loop-alive rule ---- */

static void confirmations(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *abc[3] = {"cf:a", "cf:b", "cf:c"}, *b = "cf:b", *pat = "cf:p*", *sh = "cf:s";
    const char *later = "cf:later";
    vl_redis_sub *s;
    vl_redis *pub;
    vl_future *f;
    rx x;
    int calls = 0;

    (void)state;
    s = sub_open(loop, tu_redis_url(1), &x, 0, 1);
    pub = vl_redis_new(loop, tu_redis_url(1), NULL);
    /* Not subscribed yet, nothing pending: the subscriber lets the loop go. */
    vl_future_free(tu_run_cmd(loop, vl_redis_command(pub, "PING"), VL_OK));
    expect_confirm(loop, vl_redis_subscribe(s, 3, abc), "subscribe", "cf:c", 3);
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    /* Subscribed: it keeps the loop alive. */
    assert_int_not_equal(vl_loop_alive(loop), 0);
    expect_confirm(loop, vl_redis_psubscribe(s, 1, &pat), "psubscribe", "cf:p*", 4);
    expect_confirm(loop, vl_redis_ssubscribe(s, 1, &sh), "ssubscribe", "cf:s", 1);
    expect_confirm(loop, vl_redis_unsubscribe(s, 1, &b), "unsubscribe", "cf:b", 3);
    assert_int_equal(publish(loop, pub, "cf:b", "x", 1), 0);
    assert_int_equal(publish(loop, pub, "cf:a", "y", 1), 1);
    assert_int_equal(publish(loop, pub, "cf:pz", "z", 1), 1);
    {
        vl_future *sp = tu_run_cmd(loop, vl_redis_command(pub, "SPUBLISH cf:s w"), VL_OK);
        assert_int_equal(reply_int(vl_future_redis_reply(sp)), 1);
        vl_future_free(sp);
    }
    wait_count(loop, &x.smsgs, 1, 5000);
    assert_int_equal(x.smsgs, 1);
    assert_int_equal(x.last_kind, VL_REDIS_SUB_SHARD);
    assert_string_equal(x.last_ch, "cf:s");
    assert_string_equal(x.last_payload, "w");
    assert_int_equal(x.msgs, 1);
    assert_int_equal(x.pmsgs, 1);
    /* Unsubscribe of all channels: one confirmation per channel held, the
     * future completes with the last (the pattern still counts: 1). */
    f = tu_run_cmd(loop, vl_redis_unsubscribe(s, 0, NULL), VL_OK);
    {
        const vl_redis_reply *r = vl_future_redis_reply(f);
        size_t len;
        const char *name = vl_redis_reply_str(vl_redis_reply_element(r, 1), &len);
        assert_non_null(name);
        assert_true(strcmp(name, "cf:a") == 0 || strcmp(name, "cf:c") == 0);
        assert_int_equal(reply_int(vl_redis_reply_element(r, 2)), 1);
    }
    vl_future_free(f);
    assert_int_equal(publish(loop, pub, "cf:a", "y", 1), 0);
    assert_int_equal(publish(loop, pub, "cf:c", "y", 1), 0);
    /* With no channel left: one confirmation with a nil name. */
    expect_confirm(loop, vl_redis_unsubscribe(s, 0, NULL), "unsubscribe", NULL, 1);
    /* Cancelling a subscribe does not unsubscribe. */
    f = vl_redis_subscribe(s, 1, &later);
    assert_int_equal(vl_future_then(f, tu_count_cb, &calls), VL_OK);
    assert_int_equal(vl_future_cancel(f), 1);
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(5000);
        long long n = 0;
        while (n == 0 && vl_loop_now_ms(loop) < end) {
            n = publish(loop, pub, later, "l", 1);
            if (n == 0)
                tu_sleep_ms(loop, 5);
        }
        assert_int_equal(n, 1);
    }
    assert_int_equal(calls, 1);
    expect_confirm(loop, vl_redis_unsubscribe(s, 1, &later), "unsubscribe", "cf:later", 1);
    expect_confirm(loop, vl_redis_punsubscribe(s, 0, NULL), "punsubscribe", "cf:p*", 0);
    expect_confirm(loop, vl_redis_sunsubscribe(s, 0, NULL), "sunsubscribe", "cf:s", 0);
    expect_confirm(loop, vl_redis_sunsubscribe(s, 0, NULL), "sunsubscribe", NULL, 0);
    /* Nothing subscribed, nothing pending: vl_loop_run returns although the
     * subscriber is still connected. */
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    assert_int_equal(x.gaps, 0);
    sub_close(loop, s, pub, &x);
}

/* ---- a subscribe before the first connect completes ---- */

static void subscribe_before_connect(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "early:ch";
    vl_redis_sub *s;
    vl_redis *pub;
    vl_future *f;
    long long id = 0;
    rx x;

    (void)state;
    s = sub_open(loop, tu_redis_url(0), &x, 0, 1);
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_CONNECTING);
    assert_int_equal(vl_redis_sub_client_id(s, &id), VL_ESTATE);
    f = vl_redis_subscribe(s, 1, &ch);
    assert_non_null(f);
    assert_false(vl_future_done(f));
    expect_confirm(loop, f, "subscribe", "early:ch", 1);
    /* CLIENT ID was answered before the subscription was. */
    assert_int_equal(vl_redis_sub_client_id(s, &id), VL_OK);
    assert_true(id > 0);
    pub = vl_redis_new(loop, tu_redis_url(0), NULL);
    assert_int_equal(publish(loop, pub, ch, "hello", 5), 1);
    wait_count(loop, &x.msgs, 1, 5000);
    assert_int_equal(x.msgs, 1);
    assert_string_equal(x.last_ch, "early:ch");
    assert_string_equal(x.last_payload, "hello");
    assert_int_equal(x.last_kind, VL_REDIS_SUB_CHANNEL);
    assert_string_equal(x.last_pat, "");
    {
        /* The id is the server's: CLIENT LIST shows it subscribed. */
        char want[64];
        vl_future *cl = tu_run_cmd(loop, vl_redis_command(pub, "CLIENT LIST ID %lld", id),
                                   VL_OK);
        snprintf(want, sizeof(want), "id=%lld ", id);
        assert_non_null(strstr(vl_redis_reply_str(vl_future_redis_reply(cl), NULL), want));
        assert_non_null(strstr(vl_redis_reply_str(vl_future_redis_reply(cl), NULL), "sub=1"));
        vl_future_free(cl);
    }
    sub_close(loop, s, pub, &x);
}

/* ---- AUTH, SELECT and unix sockets: the handshake of volley/redis.h ---- */

static void auth_select_and_unix(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "au:ch";
    char url[512], bad[512];
    vl_redis_sub *s, *u;
    vl_redis *pub;
    rx x, y;

    (void)state;
    snprintf(url, sizeof(url), "redis://:%s@127.0.0.1:%s/3", tu_env("VL_TEST_REDIS_PASSWORD"),
             tu_env("VL_TEST_REDIS_AUTH_PORT"));
    s = sub_open(loop, url, &x, 0, 1);
    pub = vl_redis_new(loop, url, NULL);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "au:ch", 1);
    /* Over a unix socket, on a plain server. */
    snprintf(bad, sizeof(bad), "unix://%s?db=2", tu_env_item("VL_TEST_REDIS_SOCKS", 0));
    u = sub_open(loop, bad, &y, 0, 1);
    expect_confirm(loop, vl_redis_subscribe(u, 1, &ch), "subscribe", "au:ch", 1);
    assert_int_equal(publish(loop, pub, ch, "pw", 2), 1);
    wait_count(loop, &x.msgs, 1, 5000);
    assert_string_equal(x.last_payload, "pw");
    vl_redis_free(pub);
    pub = vl_redis_new(loop, tu_redis_url(0), NULL);
    assert_int_equal(publish(loop, pub, ch, "sock", 4), 1);
    wait_count(loop, &y.msgs, 1, 5000);
    assert_string_equal(y.last_payload, "sock");
    vl_redis_sub_free(u);
    rx_clear(&y);
    sub_close(loop, s, pub, &x);
}

/* A wrong password never gets there, attempt after attempt: the call
 * waits, and the error says why without the password. */
static void wrong_password_waits(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "au:ch";
    char bad[512];
    vl_redis_sub *s;
    vl_future *f;
    rx x;

    (void)state;
    snprintf(bad, sizeof(bad), "redis://:not-%s@127.0.0.1:%s/3",
             tu_env("VL_TEST_REDIS_PASSWORD"), tu_env("VL_TEST_REDIS_AUTH_PORT"));
    s = sub_open(loop, bad, &x, 0, 1);
    f = vl_future_timeout(vl_redis_subscribe(s, 1, &ch), 300);
    tu_run_cmd(loop, f, VL_ETIMEDOUT);
    vl_future_free(f);
    printf("# wrong password: %s\n", vl_redis_sub_error(s));
    assert_non_null(strstr(vl_redis_sub_error(s), "WRONGPASS"));
    assert_null(strstr(vl_redis_sub_error(s), tu_env("VL_TEST_REDIS_PASSWORD")));
    sub_close(loop, s, NULL, &x);
}

/* ---- freeing with futures pending ---- */

typedef struct seen {
    int calls;
    int status;
} seen;

static void seen_cb(vl_future *f, void *ud)
{
    seen *s = ud;

    s->calls++;
    s->status = vl_future_status(f);
}

static void free_with_pending(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *a = "fp:a", *p = "fp:*";
    char url[64];
    vl_redis_sub *s, *live;
    uint64_t made, made_after, since;
    seen w[5];
    int i;

    (void)state;
    memset(w, 0, sizeof(w));
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed_port());
    made = vl_loop_now_ms(loop);
    s = vl_redis_sub_new(loop, url, NULL);
    made_after = vl_loop_now_ms(loop);
    assert_int_equal(vl_future_then(vl_redis_subscribe(s, 1, &a), seen_cb, &w[0]), VL_OK);
    assert_int_equal(vl_future_then(vl_redis_psubscribe(s, 1, &p), seen_cb, &w[1]), VL_OK);
    assert_int_equal(vl_future_then(vl_redis_ssubscribe(s, 1, &a), seen_cb, &w[2]), VL_OK);
    /* Let it fail a few connects: the futures wait. */
    tu_sleep_ms(loop, 100);
    for (i = 0; i < 3; i++)
        assert_int_equal(w[i].calls, 0);
    assert_int_not_equal(vl_redis_sub_error(s)[0], '\0');
    /* Never connected: down since it was made, whatever the attempts. */
    since = vl_redis_sub_down_since_ms(s);
    assert_true(since >= made && since <= made_after);
    assert_int_equal(vl_redis_sub_down_since_ms(NULL), 0);
    /* A live one, freed before the server confirmed. */
    live = vl_redis_sub_new(loop, tu_redis_url(0), NULL);
    assert_int_equal(vl_future_then(vl_redis_subscribe(live, 1, &a), seen_cb, &w[3]), VL_OK);
    assert_int_equal(vl_future_then(vl_redis_psubscribe(live, 1, &p), seen_cb, &w[4]), VL_OK);
    vl_redis_sub_free(s);
    vl_redis_sub_free(live);
    for (i = 0; i < 5; i++)
        assert_int_equal(w[i].calls, 0); /* rule 2: from the loop, later */
    vl_loop_run(loop);
    for (i = 0; i < 5; i++) {
        assert_int_equal(w[i].calls, 1);
        assert_int_equal(w[i].status, VL_ECANCELED);
    }
    tu_finish(loop);
}

/* vl_loop_free frees the subscriber: its futures complete with
 * VL_ECANCELED, and a call made from their callbacks, while the loop is
 * being freed, fails with VL_ECLOSED. */
typedef struct teardown {
    vl_redis_sub *s;
    seen first, nested;
} teardown;

static void teardown_cb(vl_future *f, void *ud)
{
    teardown *t = ud;
    const char *again = "td:again";

    seen_cb(f, &t->first);
    assert_int_equal(vl_future_then(vl_redis_subscribe(t->s, 1, &again), seen_cb, &t->nested),
                     VL_OK);
}

static void loop_free_with_subscriber(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "td:ch";
    char url[64];
    teardown t;

    (void)state;
    memset(&t, 0, sizeof(t));
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed_port());
    t.s = vl_redis_sub_new(loop, url, NULL);
    assert_int_equal(vl_future_then(vl_redis_subscribe(t.s, 1, &ch), teardown_cb, &t), VL_OK);
    tu_sleep_ms(loop, 20);
    vl_loop_free(loop); /* the subscriber with it */
    assert_int_equal(t.first.calls, 1);
    assert_int_equal(t.first.status, VL_ECANCELED);
    assert_int_equal(t.nested.calls, 1);
    assert_int_equal(t.nested.status, VL_ECLOSED);
    assert_int_equal(tu_alloc_live(), 0);
}

/* ---- freeing from inside the message callback ---- */

static void free_inside_message(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "fm:ch";
    vl_redis_sub *s;
    vl_redis *pub;
    seen late;
    rx x;
    int i, done = 0;

    (void)state;
    memset(&late, 0, sizeof(late));
    s = sub_open(loop, tu_redis_url(0), &x, 0, 1);
    x.free_at = 3;
    x.s = s;
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "fm:ch", 1);
    pub = vl_redis_new(loop, tu_redis_url(0), NULL);
    /* Pipelined, so that several messages arrive in one read: the ones
     * after the free must not reach the callback. */
    for (i = 0; i < 50; i++) {
        vl_future *f = vl_redis_command(pub, "PUBLISH %s %d", ch, i);
        assert_int_equal(vl_future_then(f, tu_count_cb, &done), VL_OK);
    }
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(5000);
        while ((done < 50 || x.s != NULL) && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_null(x.s);
    assert_non_null(x.late);
    assert_int_equal(vl_future_then(x.late, seen_cb, &late), VL_OK);
    tu_sleep_ms(loop, 50);
    assert_int_equal(x.msgs, 3);
    assert_int_equal(late.calls, 1);
    assert_int_equal(late.status, VL_ECANCELED);
    sub_close(loop, NULL, pub, &x);
}

/* ---- binary payloads ---- */

static void binary_payload(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "bin:ch";
    static char big[1 << 20];
    const char small[] = "a\0b\r\n\0c";
    vl_redis_sub *s;
    vl_redis *pub;
    size_t i;
    rx x;

    (void)state;
    s = sub_open(loop, tu_redis_url(1), &x, 0, 1);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "bin:ch", 1);
    pub = vl_redis_new(loop, tu_redis_url(1), NULL);
    assert_int_equal(publish(loop, pub, ch, small, sizeof(small) - 1), 1);
    wait_count(loop, &x.msgs, 1, 5000);
    assert_int_equal(x.last_type, VL_REDIS_STRING);
    assert_int_equal(x.last_len, sizeof(small) - 1);
    assert_memory_equal(x.last_payload, small, sizeof(small) - 1);
    for (i = 0; i < sizeof(big); i++)
        big[i] = (char)((i * 2654435761u) >> 13);
    big[0] = '\0';
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(publish(loop, pub, ch, big, sizeof(big)), 1);
    wait_count(loop, &x.msgs, 2, 5000);
    assert_int_equal(x.last_len, sizeof(big));
    assert_memory_equal(x.last_payload, big, sizeof(big));
    assert_int_equal(publish(loop, pub, ch, "", 0), 1);
    wait_count(loop, &x.msgs, 3, 5000);
    assert_int_equal(x.last_type, VL_REDIS_STRING);
    assert_int_equal(x.last_len, 0);
    sub_close(loop, s, pub, &x);
}

/* ---- keyspace notifications ---- */

static char saved_events[64];
static int saved_port_set;

static int restore_keyspace(void **state)
{
    (void)state;
    if (saved_port_set)
        (void)tu_sh("redis-cli -h 127.0.0.1 -p %s CONFIG SET notify-keyspace-events '%s' "
                    ">/dev/null 2>&1",
                    tu_env_item("VL_TEST_REDIS_PORTS", 1), saved_events);
    saved_port_set = 0;
    return 0;
}

static void keyspace_notifications(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *pat = "__keyspace@0__:ksn:*";
    vl_redis_sub *s;
    vl_redis *ctl;
    vl_future *f;
    rx x;

    (void)state;
    ctl = vl_redis_new(loop, tu_redis_url(1), NULL);
    f = tu_run_cmd(loop, vl_redis_command(ctl, "CONFIG GET notify-keyspace-events"), VL_OK);
    {
        const vl_redis_reply *v = vl_redis_reply_map_get(vl_future_redis_reply(f),
                                                         "notify-keyspace-events", 22);
        assert_non_null(v);
        snprintf(saved_events, sizeof(saved_events), "%s", vl_redis_reply_str(v, NULL));
        saved_port_set = 1;
    }
    vl_future_free(f);
    vl_future_free(tu_run_cmd(
        loop, vl_redis_command(ctl, "CONFIG SET notify-keyspace-events KEA"), VL_OK));
    s = sub_open(loop, tu_redis_url(1), &x, 0, 1);
    expect_confirm(loop, vl_redis_psubscribe(s, 1, &pat), "psubscribe", pat, 1);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(ctl, "SET ksn:k v"), VL_OK));
    wait_count(loop, &x.pmsgs, 1, 5000);
    assert_int_equal(x.pmsgs, 1);
    assert_int_equal(x.last_kind, VL_REDIS_SUB_PATTERN);
    assert_string_equal(x.last_pat, pat);
    assert_string_equal(x.last_ch, "__keyspace@0__:ksn:k");
    assert_string_equal(x.last_payload, "set");
    vl_future_free(tu_run_cmd(loop, vl_redis_command(ctl, "DEL ksn:k"), VL_OK));
    wait_count(loop, &x.pmsgs, 2, 5000);
    assert_string_equal(x.last_payload, "del");
    vl_future_free(tu_run_cmd(
        loop, vl_redis_command(ctl, "CONFIG SET notify-keyspace-events %s", saved_events),
        VL_OK));
    saved_port_set = 0;
    sub_close(loop, s, ctl, &x);
}

/* ---- client tracking with REDIRECT to the subscriber ---- */

static void tracking_redirect(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *inv = "__redis__:invalidate";
    char url[160];
    vl_redis_sub *s;
    vl_redis *data, *writer;
    long long id = 0;
    vl_future *f;
    rx x;

    (void)state;
    s = sub_open(loop, tu_redis_url(2), &x, 0, 1);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &inv), "subscribe", inv, 1);
    assert_int_equal(vl_redis_sub_client_id(s, &id), VL_OK);
    /* A database of its own, so that its FLUSHDB touches no other test. */
    snprintf(url, sizeof(url), "%s/5", tu_redis_url(2));
    data = vl_redis_new(loop, url, NULL);
    writer = vl_redis_new(loop, url, NULL);
    vl_future_free(
        tu_run_cmd(loop, vl_redis_command(data, "CLIENT TRACKING on REDIRECT %lld", id), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(data, "GET tk:k1"), VL_OK));
    vl_future_free(tu_run_cmd(loop, vl_redis_command(writer, "SET tk:k1 v"), VL_OK));
    wait_count(loop, &x.msgs, 1, 5000);
    assert_int_equal(x.msgs, 1);
    assert_string_equal(x.last_ch, inv);
    assert_int_equal(x.last_type, VL_REDIS_ARRAY);
    assert_int_equal(x.last_count, 1);
    assert_string_equal(x.last_elem0, "tk:k1");
    /* A flush invalidates everything: a nil payload. */
    f = tu_run_cmd(loop, vl_redis_command(data, "GET tk:k1"), VL_OK);
    vl_future_free(f);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(writer, "FLUSHDB"), VL_OK));
    wait_count(loop, &x.msgs, 2, 5000);
    assert_int_equal(x.msgs, 2);
    assert_int_equal(x.last_type, VL_REDIS_NIL);
    vl_redis_free(writer);
    sub_close(loop, s, data, &x);
}

/* ---- a server that refuses: -NOPERM is data ---- */

static int drop_acl_user(void **state)
{
    (void)state;
    (void)tu_sh("redis-cli -h 127.0.0.1 -p %s ACL DELUSER vlsub >/dev/null 2>&1",
                tu_env_item("VL_TEST_REDIS_PORTS", 1));
    return 0;
}

static void acl_refusal(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *mixed[2] = {"ok:1", "no:1"}, *ok = "ok:1";
    char url[160];
    vl_redis_sub *s;
    vl_redis *ctl;
    vl_future *f;
    rx x;

    (void)state;
    ctl = vl_redis_new(loop, tu_redis_url(1), NULL);
    vl_future_free(tu_run_cmd(
        loop,
        vl_redis_command(ctl, "ACL SETUSER vlsub on >pw resetchannels &ok:* +@all ~*"), VL_OK));
    snprintf(url, sizeof(url), "redis://vlsub:pw@127.0.0.1:%s",
             tu_env_item("VL_TEST_REDIS_PORTS", 1));
    s = sub_open(loop, url, &x, 0, 1);
    f = tu_run_cmd(loop, vl_redis_subscribe(s, 2, mixed), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "NOPERM"));
    assert_non_null(strstr(vl_future_error(f), "SUBSCRIBE"));
    assert_null(strstr(vl_future_error(f), "pw@"));
    assert_int_equal(vl_redis_reply_type(vl_future_redis_reply(f)), VL_REDIS_ERROR);
    vl_future_free(f);
    /* The connection is fine: the next command is answered in turn. */
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ok), "subscribe", "ok:1", 1);
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    vl_redis_sub_free(s);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(ctl, "ACL DELUSER vlsub"), VL_OK));
    sub_close(loop, NULL, ctl, &x);
}

/* ---- bad URL and options ---- */

static void bad_url_and_options(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *a = "x";
    const char *nul[2] = {"x", NULL};
    vl_redis_sub_options o;
    vl_redis_sub *s;
    vl_future *f;
    char url[64];

    (void)state;
    assert_null(vl_redis_subscribe(NULL, 1, &a));
    assert_null(vl_redis_sub_new(NULL, "redis://127.0.0.1", NULL));
    assert_int_equal(vl_redis_sub_client_id(NULL, NULL), VL_EINVAL);
    assert_int_equal(vl_redis_sub_state(NULL), 0);
    vl_redis_sub_free(NULL);

    s = vl_redis_sub_new(loop, "redis://127.0.0.1:notaport", NULL);
    assert_non_null(s);
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_INVALID);
    assert_int_equal(vl_redis_sub_down_since_ms(s), 0);
    assert_int_not_equal(vl_redis_sub_error(s)[0], '\0');
    {
        vl_future *fs[6] = {
            vl_redis_subscribe(s, 1, &a),   vl_redis_psubscribe(s, 1, &a),
            vl_redis_ssubscribe(s, 1, &a),  vl_redis_unsubscribe(s, 1, &a),
            vl_redis_punsubscribe(s, 0, NULL), vl_redis_sunsubscribe(s, 0, NULL),
        };
        int i;
        for (i = 0; i < 6; i++) {
            tu_run_cmd(loop, fs[i], VL_EINVAL);
            assert_string_equal(vl_future_error(fs[i]), vl_redis_sub_error(s));
            vl_future_free(fs[i]);
        }
    }
    vl_redis_sub_free(s);

    /* Options built against a newer header. */
    vl_redis_sub_options_init(&o);
    o.struct_size = sizeof(o) + 8;
    s = vl_redis_sub_new(loop, tu_redis_url(0), &o);
    f = tu_run_cmd(loop, vl_redis_subscribe(s, 1, &a), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "unknown to this volley"));
    vl_future_free(f);
    vl_redis_sub_free(s);

    /* Bad arguments on a good subscriber fail through the future. */
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed_port());
    s = vl_redis_sub_new(loop, url, NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_subscribe(s, 0, NULL), VL_EINVAL));
    vl_future_free(tu_run_cmd(loop, vl_redis_psubscribe(s, 1, NULL), VL_EINVAL));
    vl_future_free(tu_run_cmd(loop, vl_redis_ssubscribe(s, 2, nul), VL_EINVAL));
    vl_future_free(tu_run_cmd(loop, vl_redis_unsubscribe(s, 2, nul), VL_EINVAL));
    /* Nothing was subscribed by them: the loop is not held. */
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    vl_redis_sub_free(s);
    tu_finish(loop);
}

/* A program built against an older header, whose options end after
 * keepalive_ms: it still works, and the fields it does not know take
 * their defaults (it reconnects: reconnect is 1). */
typedef struct old_sub_options {
    size_t struct_size;
    vl_redis_sub_message_fn on_message;
    vl_redis_sub_gap_fn on_gap;
    void *ud;
    uint64_t keepalive_ms;
} old_sub_options;

static void older_options(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "old:ch";
    old_sub_options old;
    vl_redis_sub_options full;
    vl_redis_sub *s;
    vl_redis *pub;
    vl_future *f;
    rx x;

    (void)state;
    memset(&x, 0, sizeof(x));
    memset(&full, 0xab, sizeof(full));
    vl_redis_sub_options_init_sized(&full, sizeof(old));
    assert_int_equal(full.struct_size, sizeof(old));
    assert_null(full.on_message);
    assert_int_equal(full.keepalive_ms, 0);
    assert_int_equal(full.reconnect_min_ms, 0xababababababababull); /* untouched */
    vl_redis_sub_options_init_sized((vl_redis_sub_options *)(void *)&old, sizeof(old));
    assert_int_equal(old.struct_size, sizeof(old));
    old.on_message = on_message;
    old.on_gap = on_gap;
    old.ud = &x;
    s = vl_redis_sub_new(loop, tu_redis_url(0), (const vl_redis_sub_options *)(void *)&old);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "old:ch", 1);
    pub = vl_redis_new(loop, tu_redis_url(0), NULL);
    /* CLIENT KILL of the subscriber: it reconnects by default. */
    {
        long long id = 0;
        assert_int_equal(vl_redis_sub_client_id(s, &id), VL_OK);
        f = tu_run_cmd(loop, vl_redis_command(pub, "CLIENT KILL ID %lld", id), VL_OK);
        vl_future_free(f);
    }
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(10000);
        while (x.gaps == 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(x.gaps, 1);
    assert_int_equal(publish(loop, pub, ch, "again", 5), 1);
    wait_count(loop, &x.msgs, 1, 5000);
    assert_string_equal(x.last_payload, "again");
    sub_close(loop, s, pub, &x);
}

/* ---- shard channels against a Redis Cluster node ---- */

#define CNODES 6
#define SHARDS 8

/* The cluster's nodes by plain connections, a primary ("home") and
 * another one, and SHARDS shard channels of distinct slots that home owns. */
typedef struct cnodes {
    vl_loop *loop;
    int port[CNODES];
    vl_redis *c[CNODES];
    int home, other;
    char names[SHARDS][24];
    const char *ptr[SHARDS];
    char foreign[24];        /* a shard channel home does not own */
} cnodes;

/* The channel whose slot shard_channels_on_a_node gives away, while it is
 * away ("": none), and the port of the node it belongs on, for the
 * teardown. */
static char away_ch[24];
static int away_port;

/* Waits for a command to a node, at most 3 s; the caller frees it. */
static vl_future *bounded(vl_loop *loop, vl_future *f)
{
    assert_non_null(f);
    return tu_wait_for(loop, vl_future_timeout(f, tu_ms(3000)));
}

/* Whether node i answers ROLE with "master". */
static int cnode_primary(cnodes *n, int i)
{
    vl_future *f = bounded(n->loop, vl_redis_command(n->c[i], "ROLE"));
    const char *role = vl_redis_reply_str(vl_redis_reply_element(vl_future_redis_reply(f), 0),
                                          NULL);
    int yes = vl_future_status(f) == VL_OK && role != NULL && strcmp(role, "master") == 0;

    vl_future_free(f);
    return yes;
}

/* SPUBLISH on node i: the receivers, or -1 when it refused (MOVED). */
static long long cnode_spublish(cnodes *n, int i, const char *ch, const char *payload)
{
    vl_future *f =
        bounded(n->loop, vl_redis_command(n->c[i], "SPUBLISH %s %s", ch, payload));
    long long v = vl_future_status(f) == VL_OK ? reply_int(vl_future_redis_reply(f)) : -1;

    vl_future_free(f);
    return v;
}

/* Node i's id (CLUSTER MYID) into id[48]. */
static void cnode_id(cnodes *n, int i, char *id)
{
    vl_future *f = bounded(n->loop, vl_redis_command(n->c[i], "CLUSTER MYID"));

    assert_int_equal(vl_future_status(f), VL_OK);
    snprintf(id, 48, "%s", vl_redis_reply_str(vl_future_redis_reply(f), NULL));
    vl_future_free(f);
}

/* Node i's CLUSTER SETSLOT slot <how> <id>, which must succeed. */
static void cnode_setslot(cnodes *n, int i, unsigned slot, const char *how, const char *id)
{
    vl_future *f = bounded(n->loop, vl_redis_command(n->c[i], "CLUSTER SETSLOT %u %s %s",
                                                     slot, how, id));

    if (vl_future_status(f) != VL_OK)
        fail_msg("SETSLOT %s on port %d: %s", how, n->port[i], vl_future_error(f));
    vl_future_free(f);
}

/* Gives `slot` (no keys in it) of primary `from` to primary `to` as an
 * operator does: IMPORTING and MIGRATING, so that the new owner takes a
 * new config epoch, then the owner on `to`, `from` and the other primary. */
static void cnode_give_slot(cnodes *n, unsigned slot, int from, int to)
{
    char from_id[48], to_id[48];
    int i;

    cnode_id(n, from, from_id);
    cnode_id(n, to, to_id);
    cnode_setslot(n, to, slot, "IMPORTING", from_id);
    cnode_setslot(n, from, slot, "MIGRATING", to_id);
    cnode_setslot(n, to, slot, "NODE", to_id);
    cnode_setslot(n, from, slot, "NODE", to_id);
    for (i = 0; i < CNODES; i++)
        if (i != from && i != to && cnode_primary(n, i))
            cnode_setslot(n, i, slot, "NODE", to_id);
}

static void cnodes_open(vl_loop *loop, cnodes *n)
{
    unsigned slots[SHARDS];
    char url[64];
    int i, k = 0, tries;

    memset(n, 0, sizeof(*n));
    n->loop = loop;
    n->home = n->other = -1;
    assert_int_equal(tu_env_ports("VL_TEST_CLUSTER_PORTS", n->port, CNODES), CNODES);
    for (i = 0; i < CNODES; i++) {
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", n->port[i]);
        n->c[i] = vl_redis_new(loop, url, NULL);
        assert_non_null(n->c[i]);
    }
    for (i = 0; i < CNODES; i++) {
        if (!cnode_primary(n, i))
            continue;
        if (n->home < 0)
            n->home = i;
        else if (n->other < 0)
            n->other = i;
    }
    assert_true(n->home >= 0 && n->other >= 0);
    for (tries = 0; k < SHARDS && tries < 1000; tries++) {
        char ch[24];
        unsigned slot;
        int j, dup = 0;
        snprintf(ch, sizeof(ch), "shard:%d", tries);
        slot = vl_redis_cluster_slot(ch, strlen(ch));
        for (j = 0; j < k; j++)
            dup |= slots[j] == slot;
        if (dup)
            continue;
        if (cnode_spublish(n, n->home, ch, "probe") < 0) {
            snprintf(n->foreign, sizeof(n->foreign), "%s", ch);
            continue;
        }
        slots[k] = slot;
        snprintf(n->names[k], sizeof(n->names[k]), "%s", ch);
        n->ptr[k] = n->names[k];
        k++;
    }
    assert_int_equal(k, SHARDS);
    assert_int_not_equal(n->foreign[0], '\0');
}

static void cnodes_close(cnodes *n)
{
    int i;

    for (i = 0; i < CNODES; i++)
        vl_redis_free(n->c[i]);
}

/* After shard_channels_on_a_node, whatever became of it: the slot it gave
 * away is home again and the cluster healthy. */
static int restore_away_slot(void **state)
{
    vl_loop *loop;
    cnodes n;

    (void)state;
    if (away_ch[0] == '\0')
        return 0;
    loop = vl_loop_new();
    memset(&n, 0, sizeof(n));
    n.loop = loop;
    assert_int_equal(tu_env_ports("VL_TEST_CLUSTER_PORTS", n.port, CNODES), CNODES);
    {
        char url[64];
        int i;
        for (i = 0; i < CNODES; i++) {
            snprintf(url, sizeof(url), "redis://127.0.0.1:%d", n.port[i]);
            n.c[i] = vl_redis_new(loop, url, NULL);
        }
    }
    {
        unsigned slot = vl_redis_cluster_slot(away_ch, strlen(away_ch));
        int i, owner = -1, home = -1;
        for (i = 0; i < CNODES; i++) {
            vl_future_free(
                bounded(loop, vl_redis_command(n.c[i], "CLUSTER SETSLOT %u STABLE", slot)));
            if (n.port[i] == away_port)
                home = i;
        }
        for (i = 0; i < CNODES; i++)
            if (cnode_primary(&n, i) && cnode_spublish(&n, i, away_ch, "home") >= 0)
                owner = i;
        if (owner >= 0 && home >= 0 && owner != home)
            cnode_give_slot(&n, slot, owner, home);
    }
    away_ch[0] = '\0';
    cnodes_close(&n);
    /* Not tu_finish: what the failed test left behind is still allocated. */
    vl_loop_free(loop);
    tu_cluster_wait_ok();
    return 0;
}

/* Waits (bounded) until x->gaps reaches want. */
static void wait_gaps(vl_loop *loop, const rx *x, int want)
{
    uint64_t end = vl_loop_now_ms(loop) + tu_ms(10000);

    while (x->gaps < want && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 5);
    assert_int_equal(x->gaps, want);
}

static void shard_channels_on_a_node(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_sub_options o, old;
    const char *mixed[2];
    long long id1 = 0, id2 = 0, id3 = 0, id4 = 0, oid1 = 0, oid2 = 0;
    unsigned slot;
    vl_redis_sub *s, *s_old;
    vl_future *f;
    const vl_redis_reply *r;
    char url[64];
    cnodes n;
    rx x, y;
    int i;

    (void)state;
    tu_env("VL_TEST_CLUSTER_PORTS");
    cnodes_open(loop, &n);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", n.port[n.home]);
    memset(&x, 0, sizeof(x));
    sub_opts(&o, &x);
    o.on_ended = on_ended;
    s = vl_redis_sub_new(loop, url, &o);
    assert_non_null(s);

    /* Channels of 8 slots in one call: one SSUBSCRIBE per slot, every one
     * confirmed (one command would be refused with CROSSSLOT). */
    f = tu_run_cmd(loop, vl_redis_ssubscribe(s, SHARDS, n.ptr), VL_OK);
    r = vl_future_redis_reply(f);
    tu_check_str(vl_redis_reply_element(r, 0), "ssubscribe");
    assert_int_equal(reply_int(vl_redis_reply_element(r, 2)), SHARDS);
    vl_future_free(f);
    /* One slot of a call refused: the call fails with its MOVED, the
     * other slot's channel is subscribed all the same. */
    mixed[0] = n.foreign;
    mixed[1] = n.names[0];
    f = tu_run_cmd(loop, vl_redis_ssubscribe(s, 2, mixed), VL_ESERVER);
    assert_non_null(strstr(vl_future_error(f), "MOVED"));
    vl_future_free(f);
    for (i = 0; i < SHARDS; i++)
        assert_int_equal(cnode_spublish(&n, n.home, n.names[i], "one"), 1);
    wait_count(loop, &x.smsgs, SHARDS, 5000);
    assert_int_equal(x.smsgs, SHARDS);

    /* A subscriber with the options of an older header, which end before
     * on_ended: what lies past its struct_size is never read (here: bytes
     * that are no function). */
    memset(&old, 0xab, sizeof(old));
    vl_redis_sub_options_init_sized(&old, offsetof(vl_redis_sub_options, on_ended));
    assert_int_equal(old.struct_size, offsetof(vl_redis_sub_options, on_ended));
    memset(&y, 0, sizeof(y));
    old.on_message = on_message;
    old.on_gap = on_gap;
    old.ud = &y;
    s_old = vl_redis_sub_new(loop, url, &old);
    assert_non_null(s_old);
    vl_future_free(tu_run_cmd(loop, vl_redis_ssubscribe(s_old, 2, n.ptr), VL_OK));

    /* CLIENT KILL: every channel, of every slot, is subscribed again. */
    assert_int_equal(vl_redis_sub_client_id(s, &id1), VL_OK);
    vl_future_free(bounded(loop, vl_redis_command(n.c[n.home], "CLIENT KILL ID %lld", id1)));
    wait_gaps(loop, &x, 1);
    assert_int_equal(vl_redis_sub_client_id(s, &id2), VL_OK);
    assert_true(id2 != id1);
    assert_null(strstr(vl_redis_sub_error(s), "CROSSSLOT"));
    for (i = 0; i < SHARDS; i++)
        assert_int_equal(cnode_spublish(&n, n.home, n.names[i], "two"), 2 - (i >= 2));
    wait_count(loop, &x.smsgs, 2 * SHARDS, 5000);
    assert_int_equal(x.smsgs, 2 * SHARDS);
    assert_int_equal(x.ended, 0);

    /* The slot of names[0] given to another primary: home ends that one
     * subscription unasked; it is reported, the connection stays. */
    assert_int_equal(vl_redis_sub_client_id(s_old, &oid1), VL_OK);
    slot = vl_redis_cluster_slot(n.names[0], strlen(n.names[0]));
    snprintf(away_ch, sizeof(away_ch), "%s", n.names[0]);
    away_port = n.port[n.home];
    cnode_give_slot(&n, slot, n.home, n.other);
    wait_count(loop, &x.ended, 1, 5000);
    assert_int_equal(x.ended, 1);
    assert_int_equal(x.ended_kind, VL_REDIS_SUB_SHARD);
    assert_string_equal(x.ended_ch, n.names[0]);
    tu_sleep_ms(loop, 200); /* a dropped connection would be back by now */
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    assert_int_equal(vl_redis_sub_client_id(s, &id3), VL_OK);
    assert_true(id3 == id2);
    assert_int_equal(x.gaps, 1);
    /* Without an ended callback, the same. */
    assert_int_equal(vl_redis_sub_state(s_old), VL_REDIS_READY);
    assert_int_equal(vl_redis_sub_client_id(s_old, &oid2), VL_OK);
    assert_true(oid2 == oid1);
    assert_int_equal(y.gaps, 0);
    assert_int_equal(cnode_spublish(&n, n.home, n.names[1], "three"), 2);

    /* The slot back home: the ended channel is not subscribed to again,
     * even after a reconnect. */
    cnode_give_slot(&n, slot, n.other, n.home);
    away_ch[0] = '\0';
    vl_future_free(bounded(loop, vl_redis_command(n.c[n.home], "CLIENT KILL ID %lld", id3)));
    wait_gaps(loop, &x, 2);
    assert_int_equal(vl_redis_sub_client_id(s, &id4), VL_OK);
    assert_int_equal(cnode_spublish(&n, n.home, n.names[0], "four"), 0);
    assert_int_equal(cnode_spublish(&n, n.home, n.names[1], "four"), 2);
    for (i = 2; i < SHARDS; i++)
        assert_int_equal(cnode_spublish(&n, n.home, n.names[i], "four"), 1);
    assert_int_equal(x.ended, 1);
    /* An unsubscribe of three slots' channels: one SUNSUBSCRIBE each. */
    f = tu_run_cmd(loop, vl_redis_sunsubscribe(s, 3, n.ptr + 2), VL_OK);
    r = vl_future_redis_reply(f);
    tu_check_str(vl_redis_reply_element(r, 0), "sunsubscribe");
    assert_int_equal(reply_int(vl_redis_reply_element(r, 2)), SHARDS - 4);
    vl_future_free(f);
    for (i = 2; i < SHARDS; i++)
        assert_int_equal(cnode_spublish(&n, n.home, n.names[i], "five"), i < 5 ? 0 : 1);
    assert_int_equal(vl_redis_sub_client_id(s, &id1), VL_OK);
    assert_true(id1 == id4); /* the same connection: nothing was refused */
    assert_int_equal(x.gaps, 2);

    vl_redis_sub_free(s_old);
    rx_clear(&y);
    cnodes_close(&n);
    sub_close(loop, s, NULL, &x);
    tu_cluster_wait_ok();
}

/* ---- keepalive against a real server ---- */

/* The PINGs the server has run, from INFO commandstats. */
static long long ping_calls(vl_loop *loop, vl_redis *c)
{
    vl_future *f = tu_run_cmd(loop, vl_redis_command(c, "INFO commandstats"), VL_OK);
    const char *s = strstr(vl_redis_reply_str(vl_future_redis_reply(f), NULL),
                           "cmdstat_ping:calls=");
    long long n;

    assert_non_null(s);
    n = strtoll(s + strlen("cmdstat_ping:calls="), NULL, 10);
    vl_future_free(f);
    return n;
}

static void keepalive_answered(void **state)
{
    long long before, after;
    vl_loop *loop = vl_loop_new();
    const char *ch = "ka:ch";
    vl_redis_sub *s;
    vl_redis *pub;
    vl_future *f;
    rx x;

    (void)state;
    s = sub_open(loop, tu_redis_url(0), &x, 30, 1);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "ka:ch", 1);
    pub = vl_redis_new(loop, tu_redis_url(0), NULL);
    /* Some ten PINGs, answered ["pong", ""] while subscribed: the server
     * counts them (nobody else sends PING meanwhile). */
    before = ping_calls(loop, pub);
    tu_sleep_ms(loop, 400);
    after = ping_calls(loop, pub);
    printf("# keepalive: %lld PINGs in 400 ms at keepalive_ms 30\n", after - before);
    assert_true(after - before >= 3);
    assert_int_equal(x.gaps, 0);
    assert_string_equal(vl_redis_sub_error(s), "");
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    assert_int_equal(publish(loop, pub, ch, "still", 5), 1);
    wait_count(loop, &x.msgs, 1, 5000);
    assert_int_equal(x.msgs, 1);
    /* Unsubscribed, the PING is answered "+PONG": also fine. */
    expect_confirm(loop, vl_redis_unsubscribe(s, 0, NULL), "unsubscribe", "ka:ch", 0);
    f = vl_loop_sleep(loop, 200);
    tu_run_cmd(loop, f, VL_OK);
    vl_future_free(f);
    assert_string_equal(vl_redis_sub_error(s), "");
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_READY);
    sub_close(loop, s, pub, &x);
}

/* ---- a lying server, forked by the test ----
 *
 * It listens on a loopback port the kernel picks and serves one connection
 * at a time, telling the test about each accept through a pipe. It answers
 * the handshake PING with its token, CLIENT ID with 42, other commands with
 * +OK, and SUBSCRIBE according to the scenario (names starting "hang:" it
 * never confirms; "close_first" hangs up on the first SUBSCRIBE of its
 * first connection). It exits by itself after
 * 60 s, and the test kills it at its end. */

typedef struct liar {
    pid_t pid;
    int port;
    char url[64]; /* redis://127.0.0.1:port */
    int notify; /* read end: one byte per accepted connection */
    long accepted;
} liar;

/* Splits complete RESP commands off buf; returns the bytes used and fills
 * argv with pointers into buf (argc < 0: need more). */
static size_t parse_cmd(char *buf, size_t len, int *argc, char **argv, size_t *lens, int max)
{
    size_t pos;
    long n, i;
    char *end;

    *argc = -1;
    if (len < 4 || buf[0] != '*')
        return 0;
    end = memchr(buf, '\n', len);
    if (end == NULL)
        return 0;
    n = strtol(buf + 1, NULL, 10);
    pos = (size_t)(end - buf) + 1;
    for (i = 0; i < n; i++) {
        long bl;
        char *e2;
        if (pos >= len || buf[pos] != '$')
            return 0;
        e2 = memchr(buf + pos, '\n', len - pos);
        if (e2 == NULL)
            return 0;
        bl = strtol(buf + pos + 1, NULL, 10);
        pos = (size_t)(e2 - buf) + 1;
        if (pos + (size_t)bl + 2 > len)
            return 0;
        if (i < max) {
            argv[i] = buf + pos;
            lens[i] = (size_t)bl;
        }
        pos += (size_t)bl + 2;
    }
    *argc = (int)(n < max ? n : max);
    return pos;
}

static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(int fd, const char *fmt, ...)
{
    char out[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, sizeof(out), fmt, ap);
    va_end(ap);
    if (n > 0)
        (void)send(fd, out, (size_t)n, MSG_NOSIGNAL);
}

static void liar_conn(int fd, const char *scenario, long conn)
{
    static char buf[65536];
    size_t have = 0;

    for (;;) {
        ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);
        size_t used;
        if (n <= 0)
            return;
        have += (size_t)n;
        for (;;) {
            char *argv[8];
            size_t lens[8];
            int argc, i;
            used = parse_cmd(buf, have, &argc, argv, lens, 8);
            if (argc < 0)
                break;
            if (argc >= 1 && lens[0] == 4 && strncasecmp(argv[0], "PING", 4) == 0) {
                if (argc >= 2)
                    say(fd, "$%zu\r\n%.*s\r\n", lens[1], (int)lens[1], argv[1]);
                else if (strcmp(scenario, "mute_ping") != 0)
                    say(fd, "+PONG\r\n");
            } else if (argc >= 2 && strncasecmp(argv[0], "CLIENT", 6) == 0) {
                say(fd, ":42\r\n");
            } else if (argc >= 1 && lens[0] == 9 && strncasecmp(argv[0], "SUBSCRIBE", 9) == 0) {
                if (conn == 1 && strcmp(scenario, "close_first") == 0)
                    return; /* hang up with the subscription unconfirmed */
                for (i = 1; i < argc; i++) {
                    int nl = (int)lens[i];
                    if (nl >= 5 && memcmp(argv[i], "hang:", 5) == 0)
                        continue; /* never confirmed */
                    if (strcmp(scenario, "wrong_name") == 0)
                        say(fd, "*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:1\r\n");
                    else if (strcmp(scenario, "bad_count") == 0)
                        say(fd, "*3\r\n$9\r\nsubscribe\r\n$%d\r\n%.*s\r\n$1\r\nx\r\n", nl, nl,
                            argv[i]);
                    else if (strcmp(scenario, "unknown_kind") == 0)
                        say(fd, "*3\r\n$5\r\nhello\r\n$1\r\nx\r\n:1\r\n");
                    else
                        say(fd, "*3\r\n$9\r\nsubscribe\r\n$%d\r\n%.*s\r\n:%d\r\n", nl, nl,
                            argv[i], i);
                    if (strcmp(scenario, "short_message") == 0)
                        say(fd, "*2\r\n$7\r\nmessage\r\n$%d\r\n%.*s\r\n", nl, nl, argv[i]);
                    else if (strcmp(scenario, "stray_integer") == 0)
                        say(fd, ":5\r\n");
                    else if (strcmp(scenario, "stray_sunsubscribe") == 0)
                        /* The end of a shard subscription never made. */
                        say(fd, "*3\r\n$12\r\nsunsubscribe\r\n$7\r\nmal:xyz\r\n:0\r\n");
                }
            } else {
                say(fd, "+OK\r\n");
            }
            memmove(buf, buf + used, have - used);
            have -= used;
        }
        if (have == sizeof(buf))
            return;
    }
}

static void liar_start(liar *l, const char *scenario)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0), p[2], one = 1;

    memset(l, 0, sizeof(*l));
    assert_true(lfd >= 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 16), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    l->port = ntohs(a.sin_port);
    snprintf(l->url, sizeof(l->url), "redis://127.0.0.1:%d", l->port);
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    l->pid = fork();
    assert_true(l->pid >= 0);
    if (l->pid == 0) {
        close(p[0]);
        signal(SIGPIPE, SIG_IGN);
        alarm(60); /* its own watchdog */
        long conn = 0;
        for (;;) {
            int fd = accept(lfd, NULL, NULL);
            if (fd < 0)
                _exit(0);
            if (write(p[1], "c", 1) != 1)
                _exit(0);
            liar_conn(fd, scenario, ++conn);
            close(fd);
        }
    }
    close(lfd);
    close(p[1]);
    l->notify = p[0];
    fcntl(l->notify, F_SETFL, O_NONBLOCK);
}

/* Connections accepted so far. */
static long liar_accepted(liar *l)
{
    char b[64];
    ssize_t n;

    while ((n = read(l->notify, b, sizeof(b))) > 0)
        l->accepted += n;
    return l->accepted;
}

static void liar_stop(liar *l)
{
    if (l->pid > 0) {
        kill(l->pid, SIGKILL);
        while (waitpid(l->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    l->pid = 0;
    if (l->notify > 0)
        close(l->notify);
    l->notify = 0;
}

/* A liar with `scenario` and a subscriber of it (see sub_open). */
static vl_redis_sub *liar_open(vl_loop *loop, liar *l, const char *scenario, rx *x,
                               uint64_t keepalive_ms, int reconnect)
{
    liar_start(l, scenario);
    return sub_open(loop, l->url, x, keepalive_ms, reconnect);
}

/* Waits until the liar accepted `n` connections. */
static void liar_wait(vl_loop *loop, liar *l, long n)
{
    uint64_t end = vl_loop_now_ms(loop) + tu_ms(5000);

    while (liar_accepted(l) < n && vl_loop_now_ms(loop) < end)
        tu_sleep_ms(loop, 5);
    assert_true(liar_accepted(l) >= n);
}

/* A lie, and what the subscriber's error must say about it. */
typedef struct lie {
    const char *scenario;
    const char *want;
} lie;

static const lie lies[] = {
    {"wrong_name", "'other' when another name was due"},
    {"bad_count", "malformed subscribe confirmation"},
    {"unknown_kind", "not a pub/sub reply"},
    {"short_message", "malformed 'message' reply: 2 elements"},
    {"stray_integer", "integer reply when none was due"},
    {"stray_sunsubscribe", "sunsubscribe confirmation of 'mal:xyz' when no reply was due"},
};

/* One test per lie (its state is the lie): the connection is dropped with
 * a clear message, the subscriber reconnects, nothing crashes, and the
 * future completes once. */
static void malformed(void **state)
{
    const char *scenario = ((const lie *)*state)->scenario;
    const char *want = ((const lie *)*state)->want;
    vl_loop *loop = vl_loop_new();
    const char *ch = "mal:ch";
    vl_redis_sub *s;
    seen w;
    liar l;
    rx x;

    memset(&w, 0, sizeof(w));
    s = liar_open(loop, &l, scenario, &x, 0, 1);
    assert_int_equal(vl_future_then(vl_redis_subscribe(s, 1, &ch), seen_cb, &w), VL_OK);
    /* Dropped and reconnected (twice: the lie comes every time). */
    liar_wait(loop, &l, 3);
    printf("# %s: %s\n", scenario, vl_redis_sub_error(s));
    assert_non_null(strstr(vl_redis_sub_error(s), "protocol error"));
    assert_non_null(strstr(vl_redis_sub_error(s), want));
    assert_non_null(strstr(vl_redis_sub_error(s), l.url));
    /* The subscribe never completed on a lie: it waits for a good server,
     * and freeing the subscriber ends it once. */
    if (strcmp(scenario, "short_message") != 0 && strcmp(scenario, "stray_integer") != 0 &&
        strcmp(scenario, "stray_sunsubscribe") != 0)
        assert_int_equal(w.calls, 0);
    vl_redis_sub_free(s);
    vl_loop_run(loop);
    assert_int_equal(w.calls, 1);
    assert_true(w.status == VL_ECANCELED || w.status == VL_OK);
    assert_int_equal(x.msgs, 0);
    liar_stop(&l);
    sub_close(loop, NULL, NULL, &x);
}

/* A PING that is never answered drops the connection; it reconnects and
 * the subscription is restored (a gap). */
static void keepalive_unanswered(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "mute:ch";
    vl_redis_sub *s;
    liar l;
    rx x;

    (void)state;
    s = liar_open(loop, &l, "mute_ping", &x, 50, 1);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "mute:ch", 1);
    liar_wait(loop, &l, 2);
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(5000);
        while (x.gaps == 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    printf("# keepalive: %s\n", vl_redis_sub_error(s));
    assert_non_null(strstr(vl_redis_sub_error(s), "keepalive ping unanswered after 50 ms"));
    /* The subscription was restored on the next connection. */
    assert_true(x.gaps >= 1);
    assert_int_equal(x.msgs, 0);
    liar_stop(&l);
    sub_close(loop, s, NULL, &x);
}

/* reconnect 0: the first loss ends the subscriber; waiting calls fail
 * with VL_ECONN, and so do later ones. */
static void no_reconnect(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "nr:ch", *two = "nr:two", *hang = "hang:nr";
    vl_redis_sub *s;
    uint64_t before, since;
    seen w;
    liar l;
    rx x;

    (void)state;
    s = liar_open(loop, &l, "ok", &x, 0, 0);
    expect_confirm(loop, vl_redis_subscribe(s, 1, &ch), "subscribe", "nr:ch", 1);
    assert_int_equal(vl_redis_sub_down_since_ms(s), 0); /* READY */
    memset(&w, 0, sizeof(w));
    assert_int_equal(vl_future_then(vl_redis_subscribe(s, 1, &hang), seen_cb, &w), VL_OK);
    tu_sleep_ms(loop, 20);
    assert_int_equal(w.calls, 0);
    before = vl_loop_now_ms(loop);
    liar_stop(&l); /* the server goes away */
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(5000);
        while (vl_redis_sub_state(s) == VL_REDIS_READY && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(vl_redis_sub_state(s), VL_REDIS_DOWN);
    /* Down since the loss, and it stays so. */
    since = vl_redis_sub_down_since_ms(s);
    assert_true(since >= before && since <= vl_loop_now_ms(loop));
    tu_sleep_ms(loop, 20);
    assert_int_equal(vl_redis_sub_down_since_ms(s), since);
    /* The waiting subscribe failed once, and later ones fail at once. */
    tu_sleep_ms(loop, 1);
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, VL_ECONN);
    vl_future_free(tu_run_cmd(loop, vl_redis_subscribe(s, 1, &two), VL_ECONN));
    /* Nothing can come back: the loop is not held. */
    vl_loop_run(loop);
    assert_int_equal(vl_loop_alive(loop), 0);
    assert_int_equal(x.gaps, 0);
    sub_close(loop, s, NULL, &x);
}

/* A subscribe on the wire when the connection is lost is sent again on
 * the next one and completes once, on that confirmation. */
static void in_flight_across_reconnect(void **state)
{
    vl_loop *loop = vl_loop_new();
    const char *ch = "fly:ch";
    vl_redis_sub *s;
    vl_future *f;
    liar l;
    seen w;
    rx x;

    (void)state;
    memset(&w, 0, sizeof(w));
    s = liar_open(loop, &l, "close_first", &x, 0, 1);
    f = vl_redis_subscribe(s, 1, &ch);
    assert_int_equal(vl_future_then(f, seen_cb, &w), VL_OK);
    liar_wait(loop, &l, 2);
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(5000);
        while (w.calls == 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(w.calls, 1);
    assert_int_equal(w.status, VL_OK);
    {
        /* The loss was noted: it was wanted when the connection went. */
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(1000);
        while (x.gaps == 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(x.gaps, 1);
    tu_sleep_ms(loop, 50);
    assert_int_equal(w.calls, 1);
    liar_stop(&l);
    sub_close(loop, s, NULL, &x);
}

/* The SUBSCRIBE calls a server has run, from INFO commandstats. */
static long long subscribe_calls(vl_loop *loop, vl_redis *c)
{
    vl_future *f = tu_run_cmd(loop, vl_redis_command(c, "INFO commandstats"), VL_OK);
    const char *s = strstr(vl_redis_reply_str(vl_future_redis_reply(f), NULL),
                           "cmdstat_subscribe:calls=");
    long long n = s != NULL ? strtoll(s + strlen("cmdstat_subscribe:calls="), NULL, 10) : 0;

    vl_future_free(f);
    return n;
}

/* 2,500 channels subscribed one call each come back after a reconnect in
 * a few batched commands, every one of them. */
#define MANY 2500

static void resubscribe_batched(void **state)
{
    vl_loop *loop = vl_loop_new();
    static char names[MANY][24];
    vl_redis_sub *s;
    vl_redis *ctl;
    long long id = 0, before, after;
    vl_future *f;
    int i, pending = 0;
    rx x;

    (void)state;
    s = sub_open(loop, tu_redis_url(1), &x, 0, 1);
    ctl = vl_redis_new(loop, tu_redis_url(1), NULL);
    for (i = 0; i < MANY; i++) {
        const char *one = names[i];
        snprintf(names[i], sizeof(names[i]), "many:%d", i);
        f = vl_redis_subscribe(s, 1, &one);
        assert_int_equal(vl_future_then(f, tu_count_cb, &pending), VL_OK);
    }
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(10000);
        while (pending < MANY && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(pending, MANY);
    assert_int_equal(vl_redis_sub_client_id(s, &id), VL_OK);
    before = subscribe_calls(loop, ctl);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(ctl, "CLIENT KILL ID %lld", id), VL_OK));
    {
        uint64_t end = vl_loop_now_ms(loop) + tu_ms(10000);
        while (x.gaps == 0 && vl_loop_now_ms(loop) < end)
            tu_sleep_ms(loop, 5);
    }
    assert_int_equal(x.gaps, 1);
    after = subscribe_calls(loop, ctl);
    printf("# resubscribe: %d channels in %lld SUBSCRIBE commands\n", MANY, after - before);
    assert_int_equal(after - before, (MANY + 999) / 1000);
    /* Every one of them is back. */
    f = tu_run_cmd(loop, vl_redis_command(ctl, "PUBSUB NUMSUB many:0 many:1249 many:2499"),
                   VL_OK);
    for (i = 0; i < 3; i++)
        assert_int_equal(reply_int(vl_redis_reply_element(vl_future_redis_reply(f), 2 * i + 1)),
                         1);
    vl_future_free(f);
    f = tu_run_cmd(loop, vl_redis_command(ctl, "CLIENT LIST TYPE pubsub"), VL_OK);
    assert_non_null(strstr(vl_redis_reply_str(vl_future_redis_reply(f), NULL), " sub=2500 "));
    vl_future_free(f);
    sub_close(loop, s, ctl, &x);
}

/* Every allocation failing in turn: each future still completes once (or
 * the call returns NULL), nothing leaks, the loop ends empty. */
static int oom_ok(int rc)
{
    return rc == VL_OK || rc == VL_ENOMEM || rc == VL_ETIMEDOUT;
}

static void out_of_memory(void **state)
{
    const char *names[2] = {"oom:a", "oom:b"};
    long n;

    (void)state;
    for (n = 1; n < 1000; n++) {
        vl_loop *loop;
        vl_redis_sub *s;
        int done;

        tu_alloc_fail_at(n);
        loop = vl_loop_new();
        if (loop == NULL)
            continue;
        s = vl_redis_sub_new(loop, tu_redis_url(0), NULL);
        if (s != NULL) {
            vl_future *f = vl_future_timeout(vl_redis_subscribe(s, 2, names), 2000);
            vl_future *g;
            if (f != NULL) {
                assert_true(oom_ok(vl_loop_run_until(loop, f)));
                vl_future_free(f);
            }
            g = vl_future_timeout(vl_redis_psubscribe(s, 1, names), 2000);
            if (g != NULL) {
                assert_true(oom_ok(vl_loop_run_until(loop, g)));
                vl_future_free(g);
            }
            f = vl_future_timeout(vl_redis_unsubscribe(s, 0, NULL), 2000);
            if (f != NULL) {
                assert_true(oom_ok(vl_loop_run_until(loop, f)));
                vl_future_free(f);
            }
            vl_redis_sub_free(s);
        }
        done = tu_alloc_count() < n;
        tu_alloc_fail_at(0);
        vl_loop_run(loop);
        assert_int_equal(vl_loop_alive(loop), 0);
        vl_loop_free(loop);
        assert_int_equal(tu_alloc_live(), 0);
        if (done)
            break;
    }
    printf("# out of memory: every one of %ld allocations failed in turn\n", n - 1);
    assert_true(n < 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(flood_100k, tu_setup),
        cmocka_unit_test_setup(kill9_resubscribes, tu_setup),
        cmocka_unit_test_setup(confirmations, tu_setup),
        cmocka_unit_test_setup(subscribe_before_connect, tu_setup),
        cmocka_unit_test_setup(auth_select_and_unix, tu_setup),
        cmocka_unit_test_setup(wrong_password_waits, tu_setup),
        cmocka_unit_test_setup(free_with_pending, tu_setup),
        cmocka_unit_test_setup(loop_free_with_subscriber, tu_setup),
        cmocka_unit_test_setup(free_inside_message, tu_setup),
        cmocka_unit_test_setup(binary_payload, tu_setup),
        cmocka_unit_test_setup_teardown(keyspace_notifications, tu_setup, restore_keyspace),
        cmocka_unit_test_setup(tracking_redirect, tu_setup),
        cmocka_unit_test_setup_teardown(acl_refusal, tu_setup, drop_acl_user),
        cmocka_unit_test_setup(bad_url_and_options, tu_setup),
        cmocka_unit_test_setup(older_options, tu_setup),
        cmocka_unit_test_setup_teardown(shard_channels_on_a_node, tu_setup, restore_away_slot),
        cmocka_unit_test_setup(keepalive_answered, tu_setup),
        {"malformed_wrong_name", malformed, tu_setup, NULL, (void *)&lies[0]},
        {"malformed_bad_count", malformed, tu_setup, NULL, (void *)&lies[1]},
        {"malformed_unknown_kind", malformed, tu_setup, NULL, (void *)&lies[2]},
        {"malformed_short_message", malformed, tu_setup, NULL, (void *)&lies[3]},
        {"malformed_stray_integer", malformed, tu_setup, NULL, (void *)&lies[4]},
        {"malformed_stray_sunsubscribe", malformed, tu_setup, NULL, (void *)&lies[5]},
        cmocka_unit_test_setup(keepalive_unanswered, tu_setup),
        cmocka_unit_test_setup(no_reconnect, tu_setup),
        cmocka_unit_test_setup(in_flight_across_reconnect, tu_setup),
        cmocka_unit_test_setup(resubscribe_batched, tu_setup),
        cmocka_unit_test_setup(out_of_memory, tu_setup),
    };

    return tu_run("redis_pubsub", tests, sizeof(tests) / sizeof(tests[0]));
}
