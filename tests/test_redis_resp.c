/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_resp.c - the RESP framer (lib/redis_resp.c) without a
 * server: reply boundaries, hiredis's number rules, and the limits, which
 * must refuse a reply as soon as the header that breaks one has been read.
 * Every case is also cross-checked against hiredis's own reader: what the
 * framer accepts, hiredis parses to the same number of replies.
 */
#include "testutil.h"

#include "redis_internal.h"

#include <hiredis/hiredis.h>
#include <string.h>

/* Scans `s` in one piece and returns the bytes accepted; *n gets replies. */
static size_t scan_all(vl__resp *p, const char *s, size_t *n)
{
    return vl__resp_scan(p, s, strlen(s), (size_t)-1, n);
}

/* Counts the replies hiredis's reader gets out of buf[0..len). */
static int hiredis_count(const char *buf, size_t len)
{
    redisReader *r = redisReaderCreate();
    void *reply;
    int n = 0;

    assert_non_null(r);
    assert_int_equal(redisReaderFeed(r, buf, len), REDIS_OK);
    while (redisReaderGetReply(r, &reply) == REDIS_OK && reply != NULL) {
        freeReplyObject(reply);
        n++;
    }
    assert_int_equal(r->err, 0);
    redisReaderFree(r);
    return n;
}

/* Well-formed streams: the reply count, byte by byte and in one piece. */
static void boundaries(void **state)
{
    static const struct {
        const char *in;
        size_t replies;
    } cases[] = {
        {"+OK\r\n", 1},
        {"-ERR no\r\n+PONG\r\n", 2},
        {":0\r\n:-12\r\n:9223372036854775807\r\n:-9223372036854775808\r\n", 4},
        {"$0\r\n\r\n$-1\r\n$5\r\nhe\r\nl\r\n", 3},
        {"*-1\r\n*0\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n", 3},
        {"+a\rb\r\r\n", 1}, /* a lone \r is text */
        {"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 1}, /* 8 deep */
        {"+partial", 0},
        {"*3\r\n:1\r\n:2\r\n", 0},
    };
    size_t i, k, n, total;
    vl__resp p;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *in = cases[i].in;
        size_t len = strlen(in);

        vl__resp_init(&p, NULL);
        assert_int_equal(scan_all(&p, in, &n), len);
        assert_int_equal(p.error, 0);
        assert_int_equal(n, cases[i].replies);
        assert_int_equal(hiredis_count(in, len), (int)n);
        vl__resp_init(&p, NULL);
        for (k = 0, total = 0; k < len; k++) {
            assert_int_equal(vl__resp_scan(&p, in + k, 1, (size_t)-1, &n), 1);
            total += n;
        }
        assert_int_equal(total, cases[i].replies);
        assert_int_equal(vl__resp_mid_reply(&p), cases[i].replies == 0);
    }
}

/* The measure of each reply (items, and string bytes with a NUL each) is
 * what volley's reply block for it needs, whatever the chunking. */
static void measures(void **state)
{
    static const struct {
        const char *in;
        uint64_t nodes, text;
    } cases[] = {
        {"+OK\r\n", 1, 3},
        {"-ERR x\r\n", 1, 6},
        {":5\r\n", 1, 0},
        {"$-1\r\n", 1, 0},
        {"$0\r\n\r\n", 1, 1},
        {"+a\rb\r\r\n", 1, 5},
        {"*3\r\n$3\r\nfoo\r\n*2\r\n:1\r\n+hi\r\n*-1\r\n", 6, 7},
    };
    size_t i, k, n, len, total;
    vl__resp p;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        len = strlen(cases[i].in);
        vl__resp_init(&p, NULL);
        assert_int_equal(vl__resp_scan(&p, cases[i].in, len, 1, &n), len);
        assert_int_equal(n, 1);
        assert_int_equal(p.done_nodes, cases[i].nodes);
        assert_int_equal(p.done_text, cases[i].text);
        vl__resp_init(&p, NULL);
        for (k = 0, total = 0; k < len; k++) {
            vl__resp_scan(&p, cases[i].in + k, 1, 1, &n);
            total += n;
        }
        assert_int_equal(total, 1);
        assert_int_equal(p.done_nodes, cases[i].nodes);
        assert_int_equal(p.done_text, cases[i].text);
    }
}

/* max_replies stops right after a reply: the rest is not consumed. */
static void stops_after_owed_replies(void **state)
{
    const char *in = "+one\r\n$3\r\ntwo\r\n:3\r\n";
    vl__resp p;
    size_t n, used;

    (void)state;
    vl__resp_init(&p, NULL);
    used = vl__resp_scan(&p, in, strlen(in), 2, &n);
    assert_int_equal(n, 2);
    assert_int_equal(used, strlen("+one\r\n$3\r\ntwo\r\n"));
    assert_int_equal(vl__resp_scan(&p, in + used, strlen(in) - used, 0, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(vl__resp_scan(&p, in + used, strlen(in) - used, 1, &n), 4);
    assert_int_equal(n, 1);
}

/* Everything hiredis refuses, the framer refuses first, with a message. */
static void malformed(void **state)
{
    static const char *cases[] = {
        "!x\r\n",      ":\r\n",       ":01\r\n",   ":-0\r\n",      ":+1\r\n",
        ":1x\r\n",     ":1\rx",       "$-2\r\n",   "$01\r\nab\r\n", "*-2\r\n",
        "$2\r\nabc\r\n", "$1\r\nab",  ":9223372036854775808\r\n",
        ":-9223372036854775809\r\n",  "*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*0\r\n",
    };
    size_t i, n;
    vl__resp p;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        vl__resp_init(&p, NULL);
        assert_int_equal(scan_all(&p, cases[i], &n), 0);
        assert_int_equal(n, 0);
        if (!p.error)
            fail_msg("case %zu '%s' accepted", i, cases[i]);
        assert_true(p.msg[0] != '\0');
        /* Sticky. */
        assert_int_equal(vl__resp_scan(&p, "+OK\r\n", 5, 1, &n), 0);
    }
}

/* The replies before a broken one are still handed over. */
static void good_replies_before_an_error(void **state)
{
    const char *in = "+OK\r\n:1\r\n?bad\r\n";
    vl__resp p;
    size_t n;

    (void)state;
    vl__resp_init(&p, NULL);
    assert_int_equal(scan_all(&p, in, &n), 9);
    assert_int_equal(n, 2);
    assert_int_equal(p.error, 1);
    assert_non_null(strstr(p.msg, "0x3f"));
}

/* The framer's limits from the defaults of vl_redis_options. */
static void default_limits(vl__resp_limits *lim)
{
    vl_redis_options o;

    vl_redis_options_init(&o);
    lim->max_bulk_len = o.max_bulk_len;
    lim->max_elements = o.max_elements;
    lim->max_reply_bytes = o.max_reply_bytes;
    lim->max_depth = o.max_depth;
    lim->max_reply_mem = o.max_reply_mem;
}

/* Limits: refused at the header, before any payload; the defaults of
 * volley/redis.h refuse the two headers. */
static void limits(void **state)
{
    vl_redis_options o;
    vl__resp_limits lim;
    vl__resp p;
    size_t n;

    (void)state;
    vl_redis_options_init(&o);
    default_limits(&lim);
    assert_int_equal(o.max_bulk_len, 512u * 1024 * 1024);

    vl__resp_init(&p, &lim);
    assert_int_equal(vl__resp_scan(&p, "*777777770", 10, 1, &n), 0);
    assert_int_equal(p.error, 1);
    assert_non_null(strstr(p.msg, "max_elements 16777216"));

    vl__resp_init(&p, &lim);
    assert_int_equal(vl__resp_scan(&p, "$2000000000", 11, 1, &n), 0);
    assert_int_equal(p.error, 1);
    assert_non_null(strstr(p.msg, "max_bulk_len 536870912"));

    lim.max_bulk_len = 4;
    lim.max_elements = 2;
    lim.max_depth = 2;
    lim.max_reply_bytes = 20;
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "$4\r\nabcd\r\n", &n), 10);
    assert_int_equal(n, 1);
    assert_int_equal(scan_all(&p, "$5\r", &n), 0);
    assert_non_null(strstr(p.msg, "max_bulk_len 4"));

    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n", &n), 20);
    assert_int_equal(n, 1);
    assert_int_equal(scan_all(&p, "*3", &n), 0);
    assert_non_null(strstr(p.msg, "max_elements 2"));

    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*1\r\n*1\r\n*", &n), 0);
    assert_non_null(strstr(p.msg, "max_depth 2"));

    /* 20 bytes per reply: a bulk whose header says it would not fit is
     * refused at the header; a status line is cut off when it passes. */
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*2\r\n$4\r\nabcd\r\n$4\r\n", &n), 0);
    assert_non_null(strstr(p.msg, "max_reply_bytes 20"));
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "+0123456789012345678901234", &n), 0);
    assert_non_null(strstr(p.msg, "max_reply_bytes 20"));
    /* Many small replies are each within it. */
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "+0123456789\r\n+0123456789\r\n+0123456789\r\n", &n), 39);
    assert_int_equal(n, 3);
}

/* max_reply_mem bounds the block the reply will be built in (a node per
 * item, strings with a NUL), counted as the reply arrives: an array header
 * counts all its elements at once, a bulk header its payload, a status
 * line its bytes as they come. */
static void memory_limit(void **state)
{
    vl_redis_options o;
    vl__resp_limits lim;
    uint64_t ns = vl__redis_reply_node_size();
    vl__resp p;
    size_t n;
    char line[512];

    (void)state;
    vl_redis_options_init(&o);
    default_limits(&lim);
    lim.max_reply_mem = 5 * ns; /* five nodes, no strings */

    /* Exactly five nodes fit, nested or not. */
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*4\r\n:1\r\n:2\r\n$-1\r\n*0\r\n", &n), 21);
    assert_int_equal(n, 1);
    assert_int_equal(p.done_nodes, 5);
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n", &n), 20);
    assert_int_equal(n, 1);

    /* Six are refused at the header that promises them. */
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*5\r\n", &n), 0);
    assert_int_equal(p.error, 1);
    snprintf(line, sizeof(line), "array of 5 elements takes the reply past max_reply_mem %llu",
             (unsigned long long)lim.max_reply_mem);
    assert_non_null(strstr(p.msg, line));
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n", &n), 0);
    assert_non_null(strstr(p.msg, "array of 1 elements takes the reply past max_reply_mem"));

    /* A bulk whose payload cannot fit is refused before the payload. */
    lim.max_reply_mem = ns + 100;
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "$99\r\n", &n), 5);
    assert_int_equal(p.error, 0); /* 99 bytes and a NUL fit */
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "$100\r\n", &n), 0);
    assert_non_null(strstr(p.msg, "bulk string of 100 bytes takes the reply past max_reply_mem"));

    /* A status line is refused while it arrives. */
    memset(line, 'a', sizeof(line));
    line[0] = '+';
    line[sizeof(line) - 1] = '\0';
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, line, &n), 0);
    assert_non_null(strstr(p.msg, "in memory exceeds max_reply_mem"));

    /* The default is 1 GiB: an array of max_elements fits, one of 27 Mi
     * elements (nested arrays of 16 Mi can add up to that) does not. */
    assert_int_equal(o.max_reply_mem, 1024u * 1024 * 1024);
    lim.max_reply_mem = o.max_reply_mem;
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*2\r\n*16777216\r\n", &n), 15);
    assert_int_equal(p.error, 0);
    lim.max_elements = 0;
    vl__resp_init(&p, &lim);
    assert_int_equal(scan_all(&p, "*28311552\r\n", &n), 0);
    assert_non_null(strstr(p.msg, "past max_reply_mem 1073741824"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(boundaries, tu_setup),
        cmocka_unit_test_setup(measures, tu_setup),
        cmocka_unit_test_setup(stops_after_owed_replies, tu_setup),
        cmocka_unit_test_setup(malformed, tu_setup),
        cmocka_unit_test_setup(good_replies_before_an_error, tu_setup),
        cmocka_unit_test_setup(limits, tu_setup),
        cmocka_unit_test_setup(memory_limit, tu_setup),
    };

    return tu_run("redis_resp", tests, sizeof(tests) / sizeof(tests[0]));
}
