/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/test_redis_keys.c - hash slots and the key rules of commands
 * (lib/redis_keys.c). Most cases need no server: the CRC16 vectors of the
 * cluster specification, hash tags, every kind of rule, the messages, and
 * splitting a formatted command. Two cases check the rules against a real
 * server: the slot of random keys against a cluster node's CLUSTER KEYSLOT
 * (VL_TEST_CLUSTER_PORTS), and the keys found against COMMAND GETKEYS.
 */
#include "testutil.h"

#include "internal.h"
#include "redis_cluster_internal.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

/* An independent CRC16/XMODEM, bit by bit as the polynomial defines it,
 * as the oracle of the whole-key cases (lib/redis_keys.c uses a table). */
static unsigned ref_crc16(const char *s, size_t len)
{
    unsigned crc = 0;
    size_t i;
    int b;

    for (i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? ((crc << 1) ^ 0x1021u) & 0xffffu : (crc << 1) & 0xffffu;
    }
    return crc;
}

static unsigned slot_of(const char *s)
{
    return vl__redis_slot(s, strlen(s));
}

/* The specification's check value, and the oracle agrees with it. */
static void crc16_vectors(void **state)
{
    static const char *const keys[] = {"", "a", "foo", "bar", "hello", "user:1000",
                                       "\xff\xfe\x00\x01"};
    size_t i;

    (void)state;
    assert_int_equal(ref_crc16("123456789", 9), 0x31C3);
    assert_int_equal(slot_of("123456789"), 0x31C3 % 16384);
    assert_int_equal(vl_redis_cluster_slot("123456789", 9), 0x31C3 % 16384);
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        size_t len = i == 6 ? 4 : strlen(keys[i]);

        assert_int_equal(vl__redis_slot(keys[i], len), ref_crc16(keys[i], len) % 16384);
        assert_true(vl__redis_slot(keys[i], len) < VL__CLUSTER_SLOTS);
    }
    /* Every key of two bytes: each entry of the library's table, and how
     * entries combine, against the bit-by-bit oracle. */
    for (i = 0; i < 65536; i++) {
        char k[2] = {(char)(i >> 8), (char)(i & 0xff)};

        if (vl__redis_slot(k, 2) != ref_crc16(k, 2) % 16384)
            fail_msg("key %02zx%02zx: slot %u, want %u", i >> 8, i & 0xff, vl__redis_slot(k, 2),
                     ref_crc16(k, 2) % 16384);
    }
    assert_int_equal(vl_redis_cluster_slot(NULL, 0), 0);
}

/* Hash tags as the specification's examples have them. */
static void hash_tags(void **state)
{
    static const struct {
        const char *key;
        const char *hashed; /* what must be hashed */
    } cases[] = {
        {"{user1000}.following", "user1000"},
        {"{user1000}.followers", "user1000"},
        {"foo{}{bar}", "foo{}{bar}"},  /* an empty tag: the whole key */
        {"foo{{bar}}zap", "{bar"},     /* from the first '{' to the first '}' */
        {"foo{bar}{zap}", "bar"},      /* the first tag only */
        {"{}", "{}"},
        {"{", "{"},
        {"}{", "}{"},
        {"}{x}", "x"},
        {"a{b", "a{b"},
        {"a}b{c}", "c"},
        {"{a}", "a"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *h = cases[i].hashed;

        assert_int_equal(slot_of(cases[i].key), ref_crc16(h, strlen(h)) % 16384);
    }
    assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
    assert_int_not_equal(slot_of("foo{}{bar}"), slot_of("bar"));
    assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
}

/* Binary keys: a NUL is a byte like any other, and a tag may hold one. */
static void binary_keys(void **state)
{
    static const char k1[] = {'k', '\0', 'a'};
    static const char k2[] = {'k', '\0', 'b'};
    static const char t1[] = {'x', '{', 'a', '\0', 'b', '}', '1'};
    static const char t2[] = {'y', '{', 'a', '\0', 'b', '}', '2'};
    const char *argv[3] = {"DEL", k1, k2};
    size_t lens[3] = {3, 3, 3};
    vl__route r;
    char why[256];

    (void)state;
    assert_int_equal(vl__redis_slot(k1, 3), ref_crc16(k1, 3) % 16384);
    assert_int_not_equal(vl__redis_slot(k1, 3), vl__redis_slot("k", 1));
    assert_int_equal(vl__redis_slot(t1, 7), ref_crc16("a\0b", 3) % 16384);
    assert_int_equal(vl__redis_slot(t1, 7), vl__redis_slot(t2, 7));

    assert_int_not_equal(vl__redis_slot(k1, 3), vl__redis_slot(k2, 3));
    assert_int_equal(vl__redis_route(3, argv, lens, &r, why, sizeof(why)), VL__ROUTE_CROSSSLOT);
    assert_string_equal(why, "DEL: keys in different slots (CROSSSLOT): \"k\\x00a\" and \"k\\x00b\"");
    argv[1] = t1;
    argv[2] = t2;
    lens[1] = lens[2] = 7;
    assert_int_equal(vl__redis_route(3, argv, lens, &r, why, sizeof(why)), VL__ROUTE_KEY);
    assert_int_equal(r.slot, vl__redis_slot(t1, 7));
    assert_int_equal(r.nkeys, 2);
    assert_string_equal(why, "");
}

/* Routes a NULL-ended argument list of C strings. */
static int route(vl__route *r, char *why, size_t whyn, const char *const *args)
{
    int argc = 0;

    while (args[argc] != NULL)
        argc++;
    return vl__redis_route(argc, args, NULL, r, why, whyn);
}

/* The key positions of args (NULL-ended, at most 32), found by routing: the
 * first key is key_arg, and argument i is another key exactly when putting a
 * key of another slot there makes the command CROSSSLOT at i. Returns the
 * count; *kind gets the unchanged command's kind. */
static int key_positions(const char *const *args, int *pos, int *kind)
{
    const char *copy[33];
    char why[256];
    vl__route r, t;
    int argc = 0, i, n = 0;

    while (args[argc] != NULL)
        argc++;
    assert_true(argc <= 32);
    *kind = vl__redis_route(argc, args, NULL, &r, why, sizeof(why));
    if (r.nkeys == 0)
        return 0;
    pos[n++] = r.key_arg;
    for (i = 1; i < argc; i++) {
        if (i == r.key_arg)
            continue;
        memcpy(copy, args, sizeof(copy[0]) * (size_t)argc);
        /* "{k}" is in slot 7629, "{zz}" in 9405: never both the same. */
        copy[i] = vl__redis_slot(args[r.key_arg], strlen(args[r.key_arg])) == slot_of("zz")
                      ? "{k}other"
                      : "{zz}other";
        vl__redis_route(argc, copy, NULL, &t, why, sizeof(why));
        /* other_arg is set for a stateful command's keys (WATCH) too. */
        if (t.other_arg == i)
            pos[n++] = i;
    }
    assert_int_equal(n, r.nkeys);
    return n;
}

#define MAXA 16

/* Every kind of rule: where the keys are, whether it reads only. */
static void rule_kinds(void **state)
{
    static const struct {
        const char *args[MAXA];
        int kind;
        int ro;
        int pos[8];
        int npos;
    } cases[] = {
        {{"GET", "{t}a", NULL}, VL__ROUTE_KEY, 1, {1}, 1},
        {{"SET", "{t}a", "v", "EX", "10", NULL}, VL__ROUTE_KEY, 0, {1}, 1},
        {{"HSET", "{t}h", "f", "v", "g", "w", NULL}, VL__ROUTE_KEY, 0, {1}, 1},
        {{"DEL", "{t}a", "{t}b", "{t}c", NULL}, VL__ROUTE_KEY, 0, {1, 2, 3}, 3},
        {{"EXISTS", "{t}a", "{t}b", NULL}, VL__ROUTE_KEY, 1, {1, 2}, 2},
        {{"MGET", "{t}a", "{t}b", NULL}, VL__ROUTE_KEY, 1, {1, 2}, 2},
        {{"MSET", "{t}a", "1", "{t}b", "2", NULL}, VL__ROUTE_KEY, 0, {1, 3}, 2},
        {{"MSETNX", "{t}a", "1", "{t}b", "2", "{t}c", "3", NULL}, VL__ROUTE_KEY, 0, {1, 3, 5}, 3},
        {{"BLPOP", "{t}a", "{t}b", "0", NULL}, VL__ROUTE_KEY, 0, {1, 2}, 2},
        {{"BZPOPMIN", "{t}a", "1.5", NULL}, VL__ROUTE_KEY, 0, {1}, 1},
        {{"RENAME", "{t}a", "{t}b", NULL}, VL__ROUTE_KEY, 0, {1, 2}, 2},
        {{"LMOVE", "{t}a", "{t}b", "LEFT", "RIGHT", NULL}, VL__ROUTE_KEY, 0, {1, 2}, 2},
        {{"BLMOVE", "{t}a", "{t}b", "LEFT", "RIGHT", "0", NULL}, VL__ROUTE_KEY, 0, {1, 2}, 2},
        {{"COPY", "{t}a", "{t}b", "REPLACE", NULL}, VL__ROUTE_KEY, 0, {1, 2}, 2},
        {{"BITOP", "AND", "{t}d", "{t}a", "{t}b", NULL}, VL__ROUTE_KEY, 0, {2, 3, 4}, 3},
        {{"EVAL", "return 1", "2", "{t}a", "{t}b", "arg", NULL}, VL__ROUTE_KEY, 0, {3, 4}, 2},
        {{"EVALSHA_RO", "abc", "1", "{t}a", "arg", NULL}, VL__ROUTE_KEY, 1, {3}, 1},
        {{"FCALL", "f", "1", "{t}a", NULL}, VL__ROUTE_KEY, 0, {3}, 1},
        {{"EVAL", "return 1", "0", "x", NULL}, VL__ROUTE_NOKEY, 0, {0}, 0},
        {{"ZUNIONSTORE", "{t}d", "2", "{t}a", "{t}b", "WEIGHTS", "1", "2", NULL},
         VL__ROUTE_KEY, 0, {1, 3, 4}, 3},
        {{"ZINTER", "2", "{t}a", "{t}b", "WITHSCORES", NULL}, VL__ROUTE_KEY, 1, {2, 3}, 2},
        {{"SINTERCARD", "2", "{t}a", "{t}b", "LIMIT", "3", NULL}, VL__ROUTE_KEY, 1, {2, 3}, 2},
        {{"LMPOP", "2", "{t}a", "{t}b", "LEFT", NULL}, VL__ROUTE_KEY, 0, {2, 3}, 2},
        {{"BLMPOP", "0", "2", "{t}a", "{t}b", "LEFT", NULL}, VL__ROUTE_KEY, 0, {3, 4}, 2},
        {{"BZMPOP", "1", "1", "{t}a", "MIN", NULL}, VL__ROUTE_KEY, 0, {3}, 1},
        {{"XREAD", "COUNT", "2", "STREAMS", "{t}a", "{t}b", "0", "0", NULL},
         VL__ROUTE_KEY, 1, {4, 5}, 2},
        {{"XREADGROUP", "GROUP", "streams", "c", "STREAMS", "{t}a", ">", NULL},
         VL__ROUTE_KEY, 0, {5}, 1},
        {{"GEORADIUS", "{t}g", "1", "2", "3", "km", "STORE", "{t}d", NULL},
         VL__ROUTE_KEY, 0, {1, 7}, 2},
        {{"GEORADIUS_RO", "{t}g", "1", "2", "3", "km", NULL}, VL__ROUTE_KEY, 1, {1}, 1},
        {{"SORT", "{t}a", "BY", "store", "GET", "store", "STORE", "{t}d", NULL},
         VL__ROUTE_KEY, 0, {1, 7}, 2},
        {{"SORT_RO", "{t}a", "ALPHA", NULL}, VL__ROUTE_KEY, 1, {1}, 1},
        {{"OBJECT", "ENCODING", "{t}a", NULL}, VL__ROUTE_KEY, 1, {2}, 1},
        {{"MEMORY", "USAGE", "{t}a", "SAMPLES", "5", NULL}, VL__ROUTE_KEY, 1, {2}, 1},
        {{"XINFO", "STREAM", "{t}a", "FULL", NULL}, VL__ROUTE_KEY, 1, {2}, 1},
        {{"XGROUP", "CREATE", "{t}a", "g", "$", NULL}, VL__ROUTE_KEY, 0, {2}, 1},
        {{"SPUBLISH", "{t}ch", "hi", NULL}, VL__ROUTE_KEY, 0, {1}, 1},
        {{"SSUBSCRIBE", "{t}a", "{t}b", NULL}, VL__ROUTE_KEY, 0, {1, 2}, 2},
        {{"WATCH", "{t}a", "{t}b", NULL}, VL__ROUTE_STATEFUL, 0, {1, 2}, 2},
        {{"PUBLISH", "ch", "hi", NULL}, VL__ROUTE_NOKEY, 0, {0}, 0},
        {{"CLIENT", "LIST", NULL}, VL__ROUTE_NOKEY, 0, {0}, 0},
        {{"CLIENT", "TRACKING", "on", NULL}, VL__ROUTE_STATEFUL, 0, {0}, 0},
        {{"OBJECT", "HELP", NULL}, VL__ROUTE_NOKEY, 0, {0}, 0},
        {{"OBJECT", "FOO", "{t}a", NULL}, VL__ROUTE_UNKNOWN, 0, {0}, 0},
    };
    int pos[MAXA], kind, n, k;
    size_t i;
    vl__route r;
    char why[256];

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("%s %s\n", cases[i].args[0], cases[i].args[1]);
        n = key_positions(cases[i].args, pos, &kind);
        assert_int_equal(kind, cases[i].kind);
        assert_int_equal(n, cases[i].npos);
        for (k = 0; k < n; k++)
            assert_int_equal(pos[k], cases[i].pos[k]);
        assert_int_equal(route(&r, why, sizeof(why), cases[i].args), cases[i].kind);
        assert_int_equal(r.kind, cases[i].kind);
        assert_int_equal(r.readonly, cases[i].ro);
        if (kind == VL__ROUTE_KEY) {
            assert_int_equal(r.slot, slot_of("t"));
            assert_int_equal(r.other_arg, -1);
            assert_string_equal(why, "");
        } else {
            assert_true(why[0] != '\0');
        }
    }
}

/* Commands without a key, and those that change the connection. */
static void nokey_and_stateful(void **state)
{
    static const char *const nokey[] = {
        "PING", "INFO", "DBSIZE", "CONFIG", "SCAN", "KEYS", "FLUSHALL", "FLUSHDB", "CLUSTER",
        "READONLY", "TIME", "LASTSAVE", "SAVE", "BGSAVE", "COMMAND", "FUNCTION", "SCRIPT",
        "PUBLISH", "RANDOMKEY", "ECHO", "WAIT", "ROLE"};
    static const char *const stateful[] = {"MULTI", "EXEC", "DISCARD", "UNWATCH", "SELECT",
                                           "RESET", "AUTH", "SWAPDB", "SUBSCRIBE", "HELLO"};
    const char *argv[3];
    char why[256], want[256];
    vl__route r;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(nokey) / sizeof(nokey[0]); i++) {
        argv[0] = nokey[i];
        argv[1] = "x";
        argv[2] = "y";
        assert_int_equal(vl__redis_route(3, argv, NULL, &r, why, sizeof(why)), VL__ROUTE_NOKEY);
        assert_int_equal(r.nkeys, 0);
        assert_int_equal(r.key_arg, -1);
        snprintf(want, sizeof(want),
                 "%s has no key: use vl_redis_cluster_each or vl_redis_cluster_command_key",
                 nokey[i]);
        assert_string_equal(why, want);
    }
    assert_int_equal(vl__redis_route(1, (const char *[]){"INFO"}, NULL, &r, why, sizeof(why)),
                     VL__ROUTE_NOKEY);
    assert_string_equal(why,
                        "INFO has no key: use vl_redis_cluster_each or vl_redis_cluster_command_key");
    for (i = 0; i < sizeof(stateful) / sizeof(stateful[0]); i++) {
        argv[0] = stateful[i];
        argv[1] = "0";
        argv[2] = "1";
        assert_int_equal(vl__redis_route(3, argv, NULL, &r, why, sizeof(why)),
                         VL__ROUTE_STATEFUL);
        snprintf(want, sizeof(want), "%s needs a lease (vl_redis_cluster_lease)", stateful[i]);
        assert_string_equal(why, want);
    }
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"CLIENT", "SETNAME", "n", NULL}),
                     VL__ROUTE_NOKEY);
    assert_string_equal(
        why, "CLIENT SETNAME has no key: use vl_redis_cluster_each or vl_redis_cluster_command_key");
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"client", "tracking", "on", NULL}),
                     VL__ROUTE_STATEFUL);
    assert_string_equal(why, "CLIENT TRACKING needs a lease (vl_redis_cluster_lease)");
}

/* Unknown commands, and the message's form. */
static void unknown(void **state)
{
    vl__route r;
    char why[256];

    (void)state;
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"FOO", "a", NULL}),
                     VL__ROUTE_UNKNOWN);
    assert_string_equal(why, "FOO: unknown command: route it with vl_redis_cluster_command_key");
    assert_int_equal(r.nkeys, 0);
    /* Names that sort next to known ones, or share their prefix. */
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"GE", "a", NULL}),
                     VL__ROUTE_UNKNOWN);
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"GETT", "a", NULL}),
                     VL__ROUTE_UNKNOWN);
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"", "a", NULL}),
                     VL__ROUTE_UNKNOWN);
    assert_string_equal(why, "\"\": unknown command: route it with vl_redis_cluster_command_key");
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"XINFO", "NOPE", "s", NULL}),
                     VL__ROUTE_UNKNOWN);
    assert_string_equal(why,
                        "XINFO NOPE: unknown command: route it with vl_redis_cluster_command_key");
    assert_int_equal(vl__redis_route(0, NULL, NULL, &r, why, sizeof(why)), VL__ROUTE_ARITY);
}

/* Keys in different slots: refused, with both keys named. */
static void crossslot(void **state)
{
    char longkey[100], why[256];
    vl__route r;

    (void)state;
    assert_int_not_equal(slot_of("a"), slot_of("b"));
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"MSET", "a", "1", "b", "2", NULL}),
                     VL__ROUTE_CROSSSLOT);
    assert_string_equal(why, "MSET: keys in different slots (CROSSSLOT): a and b");
    assert_int_equal(r.key_arg, 1);
    assert_int_equal(r.other_arg, 3);
    assert_int_equal(r.slot, slot_of("a"));
    assert_int_equal(r.nkeys, 2);
    /* The first key of another slot is named, not the last. */
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"del", "a", "{a}x", "b", "c", NULL}),
                     VL__ROUTE_CROSSSLOT);
    assert_int_equal(r.other_arg, 3);
    assert_string_equal(why, "DEL: keys in different slots (CROSSSLOT): a and b");
    /* Keys that need quotes get redis-cli's, and long ones are cut. */
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(route(&r, why, sizeof(why),
                           (const char *[]){"RENAME", "a b\"\n\\", longkey, NULL}),
                     VL__ROUTE_CROSSSLOT);
    assert_string_equal(why, "RENAME: keys in different slots (CROSSSLOT): \"a b\\\"\\n\\\\\" and "
                             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...");
    /* A short buffer gets a cut message, NUL-terminated. */
    memset(why, 'X', sizeof(why));
    assert_int_equal(vl__redis_route(3, (const char *[]){"RENAME", "a", "b"}, NULL, &r, why, 10),
                     VL__ROUTE_CROSSSLOT);
    assert_string_equal(why, "RENAME: k");
    assert_int_equal(vl__redis_route(3, (const char *[]){"RENAME", "a", "b"}, NULL, &r, NULL, 0),
                     VL__ROUTE_CROSSSLOT);
}

/* Too few arguments for a rule. */
static void arity(void **state)
{
    static const struct {
        const char *args[MAXA];
        const char *why;
    } cases[] = {
        {{"GET", NULL}, "GET: wrong number of arguments for its keys (0 arguments)"},
        {{"MSET", "a", "1", "b", NULL}, "MSET: wrong number of arguments for its keys (3 arguments)"},
        {{"BLPOP", "a", NULL}, "BLPOP: wrong number of arguments for its keys (1 argument)"},
        {{"RENAME", "a", NULL}, NULL},
        {{"EVAL", "s", "2", "a", NULL},
         "EVAL: wrong number of arguments for its keys (3 arguments, numkeys is more than the "
         "arguments)"},
        {{"EVAL", "s", "x", NULL},
         "EVAL: wrong number of arguments for its keys (2 arguments, numkeys is not a count)"},
        {{"EVAL", "s", "-1", NULL}, NULL},
        {{"ZUNIONSTORE", "d", "3", "a", "b", NULL}, NULL},
        {{"XREAD", "STREAMS", "a", "b", "0", NULL},
         "XREAD: wrong number of arguments for its keys (4 arguments, unbalanced STREAMS)"},
        {{"XREAD", "COUNT", "1", "a", NULL},
         "XREAD: wrong number of arguments for its keys (3 arguments, no STREAMS)"},
        {{"OBJECT", NULL}, "OBJECT: wrong number of arguments for its keys (0 arguments)"},
        {{"OBJECT", "ENCODING", NULL},
         "OBJECT ENCODING: wrong number of arguments for its keys (1 argument)"},
        {{"XGROUP", "CREATE", "s", "g", NULL}, NULL},
        {{"GEORADIUS", "g", "1", "2", "3", NULL}, NULL},
    };
    size_t i;
    vl__route r;
    char why[256];

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        print_message("%s\n", cases[i].args[0]);
        assert_int_equal(route(&r, why, sizeof(why), cases[i].args), VL__ROUTE_ARITY);
        assert_int_equal(r.kind, VL__ROUTE_ARITY);
        if (cases[i].why != NULL)
            assert_string_equal(why, cases[i].why);
        else
            assert_non_null(strstr(why, ": wrong number of arguments for its keys ("));
    }
}

/* Names, subcommands and keywords in any case. */
static void case_insensitive(void **state)
{
    static const char *const spellings[] = {"get", "GET", "Get", "gEt"};
    vl__route r, u;
    char why[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(spellings) / sizeof(spellings[0]); i++) {
        assert_int_equal(route(&r, why, sizeof(why), (const char *[]){spellings[i], "k", NULL}),
                         VL__ROUTE_KEY);
        assert_int_equal(r.slot, slot_of("k"));
        assert_int_equal(r.readonly, 1);
    }
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"object", "encoding", "k", NULL}),
                     VL__ROUTE_KEY);
    assert_int_equal(r.key_arg, 2);
    assert_int_equal(route(&u, why, sizeof(why),
                           (const char *[]){"xread", "count", "1", "streams", "k", "0", NULL}),
                     VL__ROUTE_KEY);
    assert_int_equal(u.key_arg, 4);
    assert_int_equal(route(&u, why, sizeof(why), (const char *[]){"eval_ro", "s", "1", "k", NULL}),
                     VL__ROUTE_KEY);
    assert_int_equal(u.key_arg, 3);
    assert_int_equal(u.readonly, 1);
    /* The key itself is case-sensitive. */
    assert_int_equal(route(&u, why, sizeof(why), (const char *[]){"get", "K", NULL}), VL__ROUTE_KEY);
    assert_int_not_equal(u.slot, r.slot);
    /* The message names the command in upper case. */
    assert_int_equal(route(&r, why, sizeof(why), (const char *[]){"mset", "a", "1", "b", "2", NULL}),
                     VL__ROUTE_CROSSSLOT);
    assert_string_equal(why, "MSET: keys in different slots (CROSSSLOT): a and b");
}

/* Lengths given: arguments need not be NUL-terminated. */
static void explicit_lengths(void **state)
{
    const char buf[] = "GETXkeyY";
    const char *argv[2] = {buf, buf + 4};
    size_t lens[2] = {3, 3};
    vl__route r;
    char why[64];

    (void)state;
    assert_int_equal(vl__redis_route(2, argv, lens, &r, why, sizeof(why)), VL__ROUTE_KEY);
    assert_int_equal(r.slot, slot_of("key"));
}

static long long format(char **cmd, const char *fmt, ...)
{
    char why[128];
    va_list ap;
    long long n;

    va_start(ap, fmt);
    n = vl__redis_formatv(cmd, fmt, ap, why, sizeof(why));
    va_end(ap);
    return n;
}

/* What vl__redis_format_argv and vl__redis_formatv make, split back. */
static void cmd_split(void **state)
{
    static const char bin[] = {'a', '\0', '\r', '\n', 'b'};
    const char *in[5] = {"SET", bin, "", "x\r\ny", "$3"};
    size_t inlens[5] = {3, sizeof(bin), 0, 4, 2};
    const char *argv[8];
    size_t lens[8], i;
    char *cmd;
    long long len;

    (void)state;
    len = vl__redis_format_argv(&cmd, 5, in, inlens);
    assert_true(len > 0);
    assert_int_equal(vl__redis_cmd_split(cmd, (size_t)len, argv, lens, 8), 5);
    for (i = 0; i < 5; i++) {
        assert_int_equal(lens[i], inlens[i]);
        assert_memory_equal(argv[i], in[i], lens[i]);
        assert_true(argv[i] >= cmd && argv[i] + lens[i] <= cmd + len); /* no copy */
    }
    assert_int_equal(vl__redis_cmd_split(cmd, (size_t)len, argv, lens, 5), 5);
    assert_int_equal(vl__redis_cmd_split(cmd, (size_t)len, argv, lens, 4), -1);
    /* Cut anywhere, it is not a whole command. */
    for (i = 0; i < (size_t)len; i++)
        assert_int_equal(vl__redis_cmd_split(cmd, i, argv, lens, 8), -1);
    /* Trailing bytes are not part of one command either. */
    cmd[len] = '*';
    assert_int_equal(vl__redis_cmd_split(cmd, (size_t)len + 1, argv, lens, 8), -1);
    vl__free(cmd);

    len = format(&cmd, "MSET %s %b k2 %d", "k1", "v\0v", (size_t)3, 42);
    assert_true(len > 0);
    assert_int_equal(vl__redis_cmd_split(cmd, (size_t)len, argv, lens, 8), 5);
    assert_int_equal(lens[2], 3);
    assert_memory_equal(argv[2], "v\0v", 3);
    assert_int_equal(lens[4], 2);
    assert_memory_equal(argv[4], "42", 2);
    {
        vl__route r;
        char why[128];

        assert_int_equal(vl__redis_route(5, argv, lens, &r, why, sizeof(why)),
                         slot_of("k1") == slot_of("k2") ? VL__ROUTE_KEY : VL__ROUTE_CROSSSLOT);
    }
    vl__free(cmd);

    len = vl__redis_format_argv(&cmd, 0, in, inlens);
    assert_int_equal(vl__redis_cmd_split(cmd, (size_t)len, argv, lens, 8), 0);
    vl__free(cmd);

    /* Not an array of bulk strings. */
    {
        static const char *const bad[] = {"", "*", "*1\r\n", "+OK\r\n", "*1\r\n:1\r\n",
                                          "*1\r\n$-1\r\n", "*1\r\n$2\r\nab", "*1\r\n$2\r\nabc\r\n",
                                          "*-1\r\n", "*1\n$1\r\na\r\n", "*1\r\n$1\r\na\n\n",
                                          "*99999999999999999999\r\n",
                                          "*1\r\n$99999999999999999999\r\na\r\n"};

        for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
            assert_int_equal(vl__redis_cmd_split(bad[i], strlen(bad[i]), argv, lens, 8), -1);
    }
    assert_int_equal(tu_alloc_live(), 0);
}

/* ---- against a server ---- */

/* A blocking hiredis connection to 127.0.0.1:port, reads bounded so that a
 * stalled server fails the test instead of hanging it. */
static redisContext *connect_port(const char *port)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", atoi(port), tv);

    assert_non_null(c);
    if (c->err)
        fail_msg("connect 127.0.0.1:%s: %s", port, c->errstr);
    assert_int_equal(redisSetTimeout(c, tv), REDIS_OK);
    return c;
}

/* The first cluster node's port (VL_TEST_CLUSTER_PORTS is a list separated
 * by spaces or commas), or a skip (a failure under CI=true) that says why. */
static const char *cluster_port(void)
{
    static char port[16];
    const char *v = getenv("VL_TEST_CLUSTER_PORTS");

    if (v == NULL || v[0] == '\0')
        print_message("VL_TEST_CLUSTER_PORTS is not set: no Redis Cluster to check against\n");
    v = tu_env("VL_TEST_CLUSTER_PORTS");
    v += strspn(v, " ,");
    snprintf(port, sizeof(port), "%.*s", (int)strcspn(v, " ,"), v);
    return port;
}

/* A connection to a server to ask about commands: a cluster node when the
 * harness has one, else a plain instance (COMMAND answers the same). */
static redisContext *connect_any(void)
{
    const char *v = getenv("VL_TEST_CLUSTER_PORTS");

    return connect_port(v != NULL && v[0] != '\0' ? cluster_port()
                                                   : tu_env_item("VL_TEST_REDIS_PORTS", 0));
}

/* The server's COMMAND LIST (the caller frees it). */
static redisReply *command_list(redisContext *c)
{
    redisReply *list = redisCommand(c, "COMMAND LIST");

    assert_non_null(list);
    assert_int_equal(list->type, REDIS_REPLY_ARRAY);
    assert_true(list->elements > 200);
    return list;
}

/* The slot of a few thousand random keys, binary and tagged ones among
 * them, is the cluster's own CLUSTER KEYSLOT. */
static void slots_match_cluster(void **state)
{
    enum { N = 4000 };
    static char keys[N][24];
    static size_t lens[N];
    redisContext *c = connect_port(cluster_port());
    redisReply *reply;
    unsigned seed = 12345;
    size_t i, k;

    (void)state;
    for (i = 0; i < N; i++) {
        lens[i] = (size_t)(rand_r(&seed) % 23);
        for (k = 0; k < lens[i]; k++) {
            int r = rand_r(&seed) % 10;

            /* Braces often enough that tags of every shape occur. */
            keys[i][k] = r == 0 ? '{' : r == 1 ? '}' : (char)(rand_r(&seed) % 256);
        }
        const char *argv[3] = {"CLUSTER", "KEYSLOT", keys[i]};
        size_t argl[3] = {7, 7, lens[i]};

        assert_int_equal(redisAppendCommandArgv(c, 3, argv, argl), REDIS_OK);
    }
    for (i = 0; i < N; i++) {
        assert_int_equal(redisGetReply(c, (void **)&reply), REDIS_OK);
        assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
        assert_int_equal(vl__redis_slot(keys[i], lens[i]), (unsigned)reply->integer);
        freeReplyObject(reply);
    }
    redisFree(c);
}

/* For each command, the keys found are those COMMAND GETKEYS names, in its
 * order (a server error there, "no key arguments", is no key). The keys
 * share a slot, as key_positions needs. */
static void keys_match_getkeys(void **state)
{
    static const char *const cmds[][MAXA] = {
        {"GET", "{k}1"},
        {"SET", "{k}1", "v", "EX", "10"},
        {"APPEND", "{k}1", "v"},
        {"GETEX", "{k}1", "PERSIST"},
        {"MGET", "{k}1", "{k}2", "{k}3"},
        {"MSET", "{k}1", "1", "{k}2", "2"},
        {"MSETNX", "{k}1", "1", "{k}2", "2"},
        {"DEL", "{k}1", "{k}2"},
        {"UNLINK", "{k}1", "{k}2"},
        {"EXISTS", "{k}1", "{k}2"},
        {"TOUCH", "{k}1", "{k}2"},
        {"TYPE", "{k}1"},
        {"TTL", "{k}1"},
        {"PEXPIREAT", "{k}1", "1"},
        {"EXPIRETIME", "{k}1"},
        {"PERSIST", "{k}1"},
        {"RENAME", "{k}1", "{k}2"},
        {"RENAMENX", "{k}1", "{k}2"},
        {"COPY", "{k}1", "{k}2", "REPLACE"},
        {"DUMP", "{k}1"},
        {"RESTORE", "{k}1", "0", "x"},
        {"OBJECT", "ENCODING", "{k}1"},
        {"OBJECT", "FREQ", "{k}1"},
        {"MEMORY", "USAGE", "{k}1"},
        {"SORT", "{k}1", "BY", "p*", "LIMIT", "0", "1", "GET", "g*", "STORE", "{k}2"},
        {"SORT_RO", "{k}1", "ALPHA"},
        {"HSET", "{k}1", "f", "v"},
        {"HMGET", "{k}1", "f", "g"},
        {"HSCAN", "{k}1", "0"},
        {"LPUSH", "{k}1", "a", "b"},
        {"LMOVE", "{k}1", "{k}2", "LEFT", "RIGHT"},
        {"RPOPLPUSH", "{k}1", "{k}2"},
        {"LMPOP", "2", "{k}1", "{k}2", "LEFT"},
        {"BLPOP", "{k}1", "{k}2", "0"},
        {"BRPOP", "{k}1", "0"},
        {"BLMOVE", "{k}1", "{k}2", "LEFT", "RIGHT", "0"},
        {"BRPOPLPUSH", "{k}1", "{k}2", "0"},
        {"BLMPOP", "0", "2", "{k}1", "{k}2", "LEFT"},
        {"SADD", "{k}1", "m"},
        {"SINTER", "{k}1", "{k}2", "{k}3"},
        {"SUNIONSTORE", "{k}1", "{k}2", "{k}3"},
        {"SMOVE", "{k}1", "{k}2", "m"},
        {"SINTERCARD", "2", "{k}1", "{k}2", "LIMIT", "1"},
        {"ZADD", "{k}1", "1", "m"},
        {"ZRANGE", "{k}1", "0", "-1"},
        {"ZRANGESTORE", "{k}1", "{k}2", "0", "-1"},
        {"ZUNIONSTORE", "{k}1", "2", "{k}2", "{k}3"},
        {"ZINTERSTORE", "{k}1", "1", "{k}2"},
        {"ZDIFFSTORE", "{k}1", "2", "{k}2", "{k}3"},
        {"ZUNION", "2", "{k}1", "{k}2"},
        {"ZINTERCARD", "2", "{k}1", "{k}2"},
        {"ZMPOP", "1", "{k}1", "MIN"},
        {"BZPOPMIN", "{k}1", "{k}2", "0"},
        {"BZPOPMAX", "{k}1", "0"},
        {"BZMPOP", "0", "2", "{k}1", "{k}2", "MAX"},
        {"XADD", "{k}1", "*", "f", "v"},
        {"XRANGE", "{k}1", "-", "+"},
        {"XREAD", "COUNT", "1", "STREAMS", "{k}1", "{k}2", "0", "0"},
        {"XREADGROUP", "GROUP", "g", "c", "STREAMS", "{k}1", ">"},
        {"XINFO", "STREAM", "{k}1"},
        {"XINFO", "GROUPS", "{k}1"},
        {"XGROUP", "CREATE", "{k}1", "g", "$"},
        {"XAUTOCLAIM", "{k}1", "g", "c", "0", "0"},
        {"SETBIT", "{k}1", "0", "1"},
        {"BITOP", "AND", "{k}1", "{k}2", "{k}3"},
        {"BITFIELD_RO", "{k}1", "GET", "u8", "0"},
        {"PFADD", "{k}1", "a"},
        {"PFCOUNT", "{k}1", "{k}2"},
        {"PFMERGE", "{k}1", "{k}2"},
        {"GEOADD", "{k}1", "1", "2", "m"},
        {"GEORADIUS", "{k}1", "1", "2", "3", "km", "STORE", "{k}2"},
        {"GEORADIUSBYMEMBER", "{k}1", "m", "3", "km", "STOREDIST", "{k}2"},
        {"GEOSEARCH", "{k}1", "FROMMEMBER", "m", "BYRADIUS", "1", "km"},
        {"GEOSEARCHSTORE", "{k}1", "{k}2", "FROMMEMBER", "m", "BYRADIUS", "1", "km"},
        {"EVAL", "return 1", "2", "{k}1", "{k}2", "a"},
        {"EVALSHA", "abc", "1", "{k}1"},
        {"EVAL_RO", "return 1", "1", "{k}1"},
        {"FCALL", "f", "2", "{k}1", "{k}2"},
        {"FCALL_RO", "f", "1", "{k}1"},
        {"WATCH", "{k}1", "{k}2"},
        {"SPUBLISH", "{k}1", "m"},
        {"SSUBSCRIBE", "{k}1", "{k}2"},
        {"LCS", "{k}1", "{k}2"},
        {"MOVE", "{k}1", "1"},
        {"PFDEBUG", "GETREG", "{k}1"},
        {"PING"},
        {"PUBLISH", "ch", "m"},
    };
    redisContext *c;
    redisReply *reply;
    int pos[MAXA], kind, n, argc, k;
    size_t i, argl[MAXA + 2];
    const char *argv[MAXA + 2];

    (void)state;
    c = connect_any();
    for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        for (argc = 0; argc < MAXA && cmds[i][argc] != NULL; argc++)
            ;
        n = key_positions(cmds[i], pos, &kind);
        argv[0] = "COMMAND";
        argv[1] = "GETKEYS";
        for (k = 0; k < argc; k++)
            argv[k + 2] = cmds[i][k];
        for (k = 0; k < argc + 2; k++)
            argl[k] = strlen(argv[k]);
        reply = redisCommandArgv(c, argc + 2, argv, argl);
        assert_non_null(reply);
        print_message("%s: %d keys, server: %s\n", cmds[i][0], n,
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "keys");
        if (strcmp(cmds[i][0], "SPUBLISH") == 0 || strcmp(cmds[i][0], "SSUBSCRIBE") == 0) {
            /* Shard channels are no keys to COMMAND GETKEYS (their key
             * specifications say "not_key"), but they hash like keys:
             * routing takes them as keys. */
            assert_int_equal(reply->type, REDIS_REPLY_ERROR);
            assert_int_equal(n, argc - 1 - (cmds[i][0][1] == 'P'));
        } else if (reply->type == REDIS_REPLY_ERROR) {
            assert_int_equal(n, 0);
        } else {
            assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
            assert_int_equal(reply->elements, (size_t)n);
            for (k = 0; k < n; k++)
                assert_string_equal(reply->element[k]->str, cmds[i][pos[k]]);
        }
        freeReplyObject(reply);
    }
    redisFree(c);
}

/* Every command a Redis 7 server lists is one the rules know (but the three
 * lib/redis_keys.c names), and so are the subcommands of OBJECT, XINFO and
 * XGROUP, whose unknown subcommands are unknown: a command missing from the
 * table, or out of its order, fails this. */
static void every_command_known(void **state)
{
    static const char *const unknown_ok[] = {"debug", "migrate", "restore-asking"};
    redisContext *c;
    redisReply *list;
    size_t i, k, checked = 0;
    vl__route r;
    char why[256];

    (void)state;
    c = connect_any();
    list = command_list(c);
    for (i = 0; i < list->elements; i++) {
        const char *name = list->element[i]->str;
        const char *bar = strchr(name, '|');
        int kind;

        if (bar != NULL) {
            /* "xinfo|stream": the containers whose unknown subcommands are
             * unknown must know all of the server's. */
            const char *argv[4] = {name, bar + 1, "k", "k"};
            size_t lens[4] = {(size_t)(bar - name), strlen(bar + 1), 1, 1};

            if (strncmp(name, "object|", 7) != 0 && strncmp(name, "xinfo|", 6) != 0 &&
                strncmp(name, "xgroup|", 7) != 0)
                continue;
            kind = vl__redis_route(4, argv, lens, &r, why, sizeof(why));
        } else {
            for (k = 0; k < sizeof(unknown_ok) / sizeof(unknown_ok[0]); k++)
                if (strcmp(name, unknown_ok[k]) == 0)
                    break;
            if (k < sizeof(unknown_ok) / sizeof(unknown_ok[0]))
                continue;
            /* The name alone: too few arguments for most, never unknown. */
            kind = vl__redis_route(1, &name, NULL, &r, why, sizeof(why));
        }
        if (kind == VL__ROUTE_UNKNOWN)
            fail_msg("%s: %s", name, why);
        checked++;
    }
    print_message("%zu commands and subcommands known\n", checked);
    freeReplyObject(list);
    redisFree(c);
}

/* Whether a command only reads is what the server's COMMAND INFO flags
 * say ("readonly"), for every command the rules route by its keys: replica
 * reads depend on it. Each is routed with arguments "1" (a count of one
 * key where a rule wants a count); XREAD and XREADGROUP, which need their
 * STREAMS keyword, are checked in rule_kinds. */
static void readonly_matches_server(void **state)
{
    static const char *const ones[9] = {NULL, "1", "1", "1", "1", "1", "1", "1", "1"};
    redisContext *c;
    redisReply *list;
    size_t i, k, checked = 0, bad = 0;
    const char *argv[9];
    vl__route r;
    char why[256];

    (void)state;
    c = connect_any();
    list = command_list(c);
    for (i = 0; i < list->elements; i++) {
        const char *name = list->element[i]->str;
        redisReply *info, *flags;
        int ro = 0;

        if (strchr(name, '|') != NULL || strcmp(name, "xread") == 0 ||
            strcmp(name, "xreadgroup") == 0)
            continue;
        memcpy(argv, ones, sizeof(argv));
        argv[0] = name;
        if (vl__redis_route(9, argv, NULL, &r, why, sizeof(why)) != VL__ROUTE_KEY)
            continue;
        info = redisCommand(c, "COMMAND INFO %s", name);
        assert_non_null(info);
        assert_int_equal(info->type, REDIS_REPLY_ARRAY);
        assert_int_equal(info->element[0]->type, REDIS_REPLY_ARRAY);
        flags = info->element[0]->element[2];
        for (k = 0; k < flags->elements; k++)
            ro |= strcmp(flags->element[k]->str, "readonly") == 0;
        if (ro != r.readonly) {
            print_message("%s: the server says %s, the rules %s\n", name,
                          ro ? "readonly" : "not readonly", r.readonly ? "readonly" : "not");
            bad++;
        }
        checked++;
        freeReplyObject(info);
    }
    print_message("%zu commands checked\n", checked);
    assert_true(checked > 150);
    assert_int_equal(bad, 0);
    freeReplyObject(list);
    redisFree(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(crc16_vectors, tu_setup),
        cmocka_unit_test_setup(hash_tags, tu_setup),
        cmocka_unit_test_setup(binary_keys, tu_setup),
        cmocka_unit_test_setup(rule_kinds, tu_setup),
        cmocka_unit_test_setup(nokey_and_stateful, tu_setup),
        cmocka_unit_test_setup(unknown, tu_setup),
        cmocka_unit_test_setup(crossslot, tu_setup),
        cmocka_unit_test_setup(arity, tu_setup),
        cmocka_unit_test_setup(case_insensitive, tu_setup),
        cmocka_unit_test_setup(explicit_lengths, tu_setup),
        cmocka_unit_test_setup(cmd_split, tu_setup),
        cmocka_unit_test_setup(slots_match_cluster, tu_setup),
        cmocka_unit_test_setup(keys_match_getkeys, tu_setup),
        cmocka_unit_test_setup(every_command_known, tu_setup),
        cmocka_unit_test_setup(readonly_matches_server, tu_setup),
    };

    return tu_run("redis_keys", tests, sizeof(tests) / sizeof(tests[0]));
}
