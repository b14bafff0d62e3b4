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
 * Every other name goes to the C library's resolver. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(second_address, tu_setup),
        cmocka_unit_test_setup(no_address, tu_setup),
        cmocka_unit_test_setup(silent_first_address, tu_setup),
    };

    return tu_run("redis_connect", tests, sizeof(tests) / sizeof(tests[0]));
}
