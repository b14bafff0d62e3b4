/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_connect.c - a host name with several addresses: each is
 * tried in turn within the connect timeout.
 *
 * The machine's resolver gives one address per name, so this test stands
 * in front of getaddrinfo (the library is linked in statically): the name
 * "two.volley.test" resolves to 127.0.0.2 then 127.0.0.1, and
 * "none.volley.test" to 127.0.0.2 and 127.0.0.3, where nothing listens,
 * and "slow.volley.test" to 127.0.0.4 (a listener whose backlog is full:
 * the connect is never answered) then 127.0.0.1.
 * Every other name goes to the C library's resolver.
 *
 * Also readonly=1, READONLY in the handshake: refused by a server without
 * cluster support, and on a cluster replica (VL_TEST_CLUSTER_PORTS) what
 * lets it answer reads of its primary's slots itself. */
#include "testutil.h"

#include <dlfcn.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Our own lists are marked by their canonical name, so freeaddrinfo knows
 * which to free itself. */
static char fake_mark[] = "volley-test-fake";

static struct addrinfo *fake_list(const char *const *ips, int n)
{
    struct addrinfo *head = NULL, **tail = &head;
    int i;

    for (i = 0; i < n; i++) {
        struct addrinfo *ai = calloc(1, sizeof(*ai) + sizeof(struct sockaddr_in));
        struct sockaddr_in *sa = (struct sockaddr_in *)(void *)(ai + 1);
        sa->sin_family = AF_INET;
        inet_pton(AF_INET, ips[i], &sa->sin_addr);
        ai->ai_family = AF_INET;
        ai->ai_socktype = SOCK_STREAM;
        ai->ai_addr = (struct sockaddr *)sa;
        ai->ai_addrlen = sizeof(*sa);
        ai->ai_canonname = fake_mark;
        *tail = ai;
        tail = &ai->ai_next;
    }
    return head;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static const char *two[] = {"127.0.0.2", "127.0.0.1"};
    static const char *none[] = {"127.0.0.2", "127.0.0.3"};
    static const char *slow[] = {"127.0.0.4", "127.0.0.1"};
    int (*real)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

    if (node != NULL && strcmp(node, "two.volley.test") == 0) {
        *res = fake_list(two, 2);
        return 0;
    }
    if (node != NULL && strcmp(node, "none.volley.test") == 0) {
        *res = fake_list(none, 2);
        return 0;
    }
    if (node != NULL && strcmp(node, "slow.volley.test") == 0) {
        *res = fake_list(slow, 2);
        return 0;
    }
    *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, res);
}

void freeaddrinfo(struct addrinfo *res)
{
    void (*real)(struct addrinfo *);

    if (res != NULL && res->ai_canonname == fake_mark) {
        while (res != NULL) {
            struct addrinfo *next = res->ai_next;
            free(res);
            res = next;
        }
        return;
    }
    *(void **)&real = dlsym(RTLD_NEXT, "freeaddrinfo");
    real(res);
}

/* The second address answers: the connection is up, through it. */
static void second_address(void **state)
{
    vl_loop *loop = vl_loop_new();
    char url[128];
    vl_redis *c;
    vl_future *f;

    (void)state;
    snprintf(url, sizeof(url), "redis://two.volley.test:%s", tu_env_item("VL_TEST_REDIS_PORTS", 0));
    c = vl_redis_new(loop, url, NULL);
    f = tu_run_cmd(loop, vl_redis_command(c, "CLIENT INFO"), VL_OK);
    /* The server saw us come from the second address. */
    assert_non_null(strstr(vl_redis_reply_str(vl_future_redis_reply(f), NULL), "addr=127.0.0.1:"));
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* No address answers: one failure, with the last address's reason. */
static void no_address(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    char url[128];
    vl_redis *c;
    vl_future *f;

    (void)state;
    vl_redis_options_init(&o);
    o.reconnect = 0;
    snprintf(url, sizeof(url), "redis://none.volley.test:%s", tu_env_item("VL_TEST_REDIS_PORTS", 0));
    c = vl_redis_new(loop, url, &o);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "connect redis://none.volley.test:"));
    assert_non_null(strstr(vl_future_error(f), "Connection refused"));
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* An address that never answers gets its share of the connect timeout,
 * then the next one is tried: the connect succeeds well before the whole
 * timeout. */
static void silent_first_address(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    struct sockaddr_in a;
    int lfd, fill[4], i, port = atoi(tu_env_item("VL_TEST_REDIS_PORTS", 0));
    char url[128];
    vl_redis *c;
    uint64_t t0, took;

    (void)state;
    /* 127.0.0.4:port: a listener that accepts nothing, its backlog full. */
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.4", &a.sin_addr);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    for (i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        (void)connect(fill[i], (struct sockaddr *)&a, sizeof(a));
    }
    vl_redis_options_init(&o);
    o.reconnect = 0;
    o.connect_timeout_ms = tu_ms(2000);
    o.command_timeout_ms = 0; /* the connect timeout decides, also under valgrind */
    snprintf(url, sizeof(url), "redis://slow.volley.test:%d", port);
    t0 = vl_loop_now_ms(loop);
    c = vl_redis_new(loop, url, &o);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK));
    took = vl_loop_now_ms(loop) - t0;
    assert_true(took + 100 >= o.connect_timeout_ms / 2); /* the silent address had its half */
    assert_true(took < o.connect_timeout_ms);           /* and not the whole timeout */
    vl_redis_free(c);
    for (i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
    tu_finish(loop);
}

/* readonly=1 against a server without cluster support: READONLY is refused,
 * so the connect fails with the server's own text, and no command is sent.
 * readonly=0 sends nothing, and any other value is a bad URL. */
static void readonly_plain_server(void **state)
{
    vl_loop *loop = vl_loop_new();
    vl_redis_options o;
    char url[128];
    vl_redis *c;
    vl_future *f;
    const char *port = tu_env_item("VL_TEST_REDIS_PORTS", 0);

    (void)state;
    vl_redis_options_init(&o);
    o.reconnect = 0;
    snprintf(url, sizeof(url), "redis://127.0.0.1:%s?readonly=1", port);
    c = vl_redis_new(loop, url, &o);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_ECONN);
    assert_non_null(strstr(vl_future_error(f), "readonly redis://127.0.0.1:"));
    assert_non_null(strstr(vl_future_error(f), "cluster support disabled"));
    vl_future_free(f);
    vl_redis_free(c);

    snprintf(url, sizeof(url), "redis://127.0.0.1:%s?readonly=0", port);
    c = vl_redis_new(loop, url, &o);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_OK);
    tu_check_str(vl_future_redis_reply(f), "PONG");
    vl_future_free(f);
    vl_redis_free(c);

    snprintf(url, sizeof(url), "redis://127.0.0.1:%s?readonly=yes", port);
    c = vl_redis_new(loop, url, &o);
    f = tu_run_cmd(loop, vl_redis_command(c, "PING"), VL_EINVAL);
    assert_non_null(strstr(vl_future_error(f), "readonly must be 0 or 1"));
    vl_future_free(f);
    vl_redis_free(c);
    tu_finish(loop);
}

/* A replica of VL_TEST_CLUSTER_PORTS: its port in *replica and its
 * primary's in *primary (ROLE). Fails the test when the cluster has none. */
static void find_replica(vl_loop *loop, int *replica, int *primary)
{
    int ports[16], n = tu_env_ports("VL_TEST_CLUSTER_PORTS", ports, 16), i;

    for (i = 0; i < n; i++) {
        char url[64];
        vl_redis *c;
        vl_future *f;
        const vl_redis_reply *r;

        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", ports[i]);
        c = vl_redis_new(loop, url, NULL);
        f = tu_run_cmd(loop, vl_redis_command(c, "ROLE"), VL_OK);
        r = vl_future_redis_reply(f);
        /* A replica's ROLE: "slave", its primary's host, port, state... */
        if (strcmp(vl_redis_reply_str(vl_redis_reply_element(r, 0), NULL), "slave") == 0) {
            long long port = 0;
            assert_int_equal(vl_redis_reply_integer(vl_redis_reply_element(r, 2), &port), VL_OK);
            *replica = ports[i];
            *primary = (int)port;
            vl_future_free(f);
            vl_redis_free(c);
            return;
        }
        vl_future_free(f);
        vl_redis_free(c);
    }
    fail_msg("no replica among VL_TEST_CLUSTER_PORTS %s", getenv("VL_TEST_CLUSTER_PORTS"));
}

/* A key whose slot the node on `port` serves as primary: the first of
 * "ro-key-N" that CLUSTER KEYSLOT puts in one of its ranges (CLUSTER
 * SLOTS), into key[0..n). */
static void key_of_primary(vl_loop *loop, int port, char *key, size_t n)
{
    enum { TRIES = 64 };
    char url[64];
    vl_redis *c;
    vl_future *slots, *ks[TRIES];
    const vl_redis_reply *map;
    int i;
    size_t j;

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    c = vl_redis_new(loop, url, NULL);
    slots = tu_run_cmd(loop, vl_redis_command(c, "CLUSTER SLOTS"), VL_OK);
    map = vl_future_redis_reply(slots);
    for (i = 0; i < TRIES; i++)
        ks[i] = vl_redis_command(c, "CLUSTER KEYSLOT ro-key-%d", i);
    key[0] = '\0';
    for (i = 0; i < TRIES; i++) {
        long long slot = -1;
        assert_int_equal(vl_redis_reply_integer(
                             vl_future_redis_reply(tu_run_cmd(loop, ks[i], VL_OK)), &slot),
                         VL_OK);
        for (j = 0; key[0] == '\0' && j < vl_redis_reply_count(map); j++) {
            /* [start, end, [host, port, id], replicas...] */
            const vl_redis_reply *range = vl_redis_reply_element(map, j);
            long long lo = -1, hi = -1, p = -1;
            vl_redis_reply_integer(vl_redis_reply_element(range, 0), &lo);
            vl_redis_reply_integer(vl_redis_reply_element(range, 1), &hi);
            vl_redis_reply_integer(vl_redis_reply_element(vl_redis_reply_element(range, 2), 1),
                                   &p);
            if (p == port && slot >= lo && slot <= hi)
                snprintf(key, n, "ro-key-%d", i);
        }
        vl_future_free(ks[i]);
    }
    assert_true(key[0] != '\0');
    vl_future_free(slots);
    vl_redis_free(c);
}

/* A read sent to a replica: `readonly` says whether the URL asks for
 * READONLY. Through a connection, or a pool when `pooled`. Returns the
 * completed future (the caller's). */
static vl_future *replica_get(vl_loop *loop, int port, int readonly, int pooled, const char *key,
                              int want)
{
    char url[96];
    vl_future *f;

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d%s", port, readonly ? "?readonly=1" : "");
    if (pooled) {
        vl_redis_pool *p = vl_redis_pool_new(loop, url, NULL);
        f = tu_run_cmd(loop, vl_redis_pool_command(p, "GET %s", key), want);
        vl_redis_pool_free(p);
    } else {
        vl_redis *c = vl_redis_new(loop, url, NULL);
        f = tu_run_cmd(loop, vl_redis_command(c, "GET %s", key), want);
        vl_redis_free(c);
    }
    return f;
}

/* On a cluster replica, a read of its primary's slot is redirected with
 * -MOVED unless the connection sent READONLY: with readonly=1 the replica
 * answers it itself, with the value written on the primary, on a
 * connection and on each of a pool's connections alike. */
static void readonly_replica(void **state)
{
    vl_loop *loop = vl_loop_new();
    int replica = 0, primary = 0, pooled;
    char key[32], url[64], val[48];
    vl_redis *c;
    vl_future *f;
    long long acked = -1;

    (void)state;
    find_replica(loop, &replica, &primary);
    key_of_primary(loop, primary, key, sizeof(key));
    snprintf(val, sizeof(val), "v-%llx", (unsigned long long)vl_loop_now_ms(loop));
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", primary);
    c = vl_redis_new(loop, url, NULL);
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "SET %s %s", key, val), VL_OK));
    /* The replica has the write before it is read there. */
    f = tu_run_cmd(loop, vl_redis_command(c, "WAIT 1 %d", (int)tu_ms(5000)), VL_OK);
    assert_int_equal(vl_redis_reply_integer(vl_future_redis_reply(f), &acked), VL_OK);
    assert_true(acked >= 1);
    vl_future_free(f);

    for (pooled = 0; pooled <= 1; pooled++) {
        f = replica_get(loop, replica, 0, pooled, key, VL_ESERVER);
        assert_non_null(strstr(vl_future_error(f), "MOVED"));
        vl_future_free(f);
        f = replica_get(loop, replica, 1, pooled, key, VL_OK);
        tu_check_str(vl_future_redis_reply(f), val);
        vl_future_free(f);
    }
    vl_future_free(tu_run_cmd(loop, vl_redis_command(c, "DEL %s", key), VL_OK));
    vl_redis_free(c);
    tu_finish(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(second_address, tu_setup),
        cmocka_unit_test_setup(no_address, tu_setup),
        cmocka_unit_test_setup(silent_first_address, tu_setup),
        cmocka_unit_test_setup(readonly_plain_server, tu_setup),
        cmocka_unit_test_setup(readonly_replica, tu_setup),
    };

    return tu_run("redis_connect", tests, sizeof(tests) / sizeof(tests[0]));
}
