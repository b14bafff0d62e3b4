/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_keys.c - which keys a Redis command has, and their hash slot.
 *
 * The cluster routes a command by the slot of its keys, so it must know
 * where the keys are in each command's arguments. The rules here follow
 * the key specifications Redis 7.0 publishes through COMMAND for the common
 * commands: a range (first key, last key, step), a count of keys in the
 * arguments (numkeys), the keys after a keyword (STREAMS, STORE), or
 * subcommands with their own rules (OBJECT ENCODING key, XINFO STREAM key).
 * Everything here is a pure function: no allocation, no I/O, so the routing
 * of a command costs one binary search and a pass over its keys.
 */
#include "redis_cluster_internal.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* ---- slots ---- */

/* CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection), the
 * variant the cluster specification names. crc_table[b] is the CRC of the byte b followed by eight zero bits:
 * what one byte shifted through the register adds, so that a key costs a
 * lookup per byte instead of eight conditional shifts. It was made from
 * the polynomial by the bit-at-a-time loop (tests/test_redis_keys.c checks
 * every entry against that loop). */
static const uint16_t crc_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0,
};

static unsigned crc16(const unsigned char *p, size_t len)
{
    unsigned crc = 0;
    size_t i;

    for (i = 0; i < len; i++)
        crc = ((crc << 8) ^ crc_table[((crc >> 8) ^ p[i]) & 0xffu]) & 0xffffu;
    return crc;
}

unsigned vl__redis_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    const char *close;

    /* A hash tag is what lies between the first '{' and the first '}'
     * after it, when that is not empty; "{}" or an unclosed '{' leave the
     * whole key hashed. */
    if (open != NULL) {
        size_t rest = len - (size_t)(open + 1 - key);

        close = memchr(open + 1, '}', rest);
        if (close != NULL && close > open + 1)
            return crc16((const unsigned char *)open + 1, (size_t)(close - open - 1)) &
                   (VL__CLUSTER_SLOTS - 1);
    }
    return crc16((const unsigned char *)key, len) & (VL__CLUSTER_SLOTS - 1);
}

unsigned vl_redis_cluster_slot(const char *key, size_t keylen)
{
    return vl__redis_slot(key != NULL ? key : "", key != NULL ? keylen : 0);
}

/* ---- rules ---- */

enum {
    K_RANGE = 1,    /* keys a..b step c; b < 0 counts from the end */
    K_NUMKEYS = 2,  /* argv[a] keys from argv[a + 1]; argv[c] too when c > 0 */
    K_STREAMS = 3,  /* the keys after STREAMS, searched from argv[a] */
    K_STORE = 4,    /* argv[1], and the argument after STORE or STOREDIST from argv[a] */
    K_SORT = 5,     /* argv[1], and SORT's STORE destination */
    K_NOKEY = 6,
    K_STATEFUL = 7,
    K_SUB = 8,      /* look argv[1] up in subs; `a` is the kind of an unknown one */
    K_UNKNOWN = 9
};

typedef struct rule {
    const char *name;       /* upper case */
    unsigned char kind;     /* K_* */
    signed char a, b, c;
    unsigned char ro;       /* only reads */
    unsigned char min_argc; /* arguments (the name included) its keys need */
    const struct rule *subs; /* K_SUB: sorted by name */
    size_t nsubs;
} rule;

#define R(n, first, last, step, ro, min) {n, K_RANGE, first, last, step, ro, min, NULL, 0}
#define ONE(n, ro, min) R(n, 1, 1, 1, ro, min)
#define NUMK(n, pos, fixed, ro, min) {n, K_NUMKEYS, pos, 0, fixed, ro, min, NULL, 0}
#define NOKEY(n) {n, K_NOKEY, 0, 0, 0, 0, 1, NULL, 0}
#define STATEFUL(n) {n, K_STATEFUL, 0, 0, 0, 0, 1, NULL, 0}
#define SUB(n, t, dflt, min) {n, K_SUB, dflt, 0, 0, 0, min, t, sizeof(t) / sizeof(t[0])}

static const rule client_subs[] = {
    STATEFUL("REPLY"), /* OFF or SKIP would make the connection's replies lie */
    STATEFUL("TRACKING"),
};
static const rule memory_subs[] = {
    R("USAGE", 2, 2, 1, 1, 3),
};
static const rule object_subs[] = {
    R("ENCODING", 2, 2, 1, 1, 3), R("FREQ", 2, 2, 1, 1, 3),     NOKEY("HELP"),
    R("IDLETIME", 2, 2, 1, 1, 3), R("REFCOUNT", 2, 2, 1, 1, 3),
};
static const rule xgroup_subs[] = {
    R("CREATE", 2, 2, 1, 0, 5),      R("CREATECONSUMER", 2, 2, 1, 0, 5),
    R("DELCONSUMER", 2, 2, 1, 0, 5), R("DESTROY", 2, 2, 1, 0, 4),
    NOKEY("HELP"),                   R("SETID", 2, 2, 1, 0, 5),
};
static const rule xinfo_subs[] = {
    R("CONSUMERS", 2, 2, 1, 1, 4),
    R("GROUPS", 2, 2, 1, 1, 3),
    NOKEY("HELP"),
    R("STREAM", 2, 2, 1, 1, 3),
};

/* Sorted by name (strcmp order: '_' sorts after the capital letters), so
 * that a lookup is a binary search; tests/test_redis_keys.c routes every
 * command a Redis 7 server lists, which a misplaced entry would fail. Every
 * one of those is here but DEBUG, MIGRATE (its keys sit after a KEYS
 * keyword or in an argument that may be empty) and RESTORE-ASKING (the
 * cluster's own): route those with vl_redis_cluster_command_key. */
static const rule rules[] = {
    NOKEY("ACL"),
    ONE("APPEND", 0, 3),
    NOKEY("ASKING"),
    STATEFUL("AUTH"),
    NOKEY("BGREWRITEAOF"),
    NOKEY("BGSAVE"),
    ONE("BITCOUNT", 1, 2),
    ONE("BITFIELD", 0, 2),
    ONE("BITFIELD_RO", 1, 2),
    R("BITOP", 2, -1, 1, 0, 4),
    ONE("BITPOS", 1, 3),
    R("BLMOVE", 1, 2, 1, 0, 6),
    NUMK("BLMPOP", 2, 0, 0, 5),
    R("BLPOP", 1, -2, 1, 0, 3),
    R("BRPOP", 1, -2, 1, 0, 3),
    R("BRPOPLPUSH", 1, 2, 1, 0, 4),
    NUMK("BZMPOP", 2, 0, 0, 5),
    R("BZPOPMAX", 1, -2, 1, 0, 3),
    R("BZPOPMIN", 1, -2, 1, 0, 3),
    SUB("CLIENT", client_subs, K_NOKEY, 1),
    NOKEY("CLUSTER"),
    NOKEY("COMMAND"),
    NOKEY("CONFIG"),
    R("COPY", 1, 2, 1, 0, 3),
    NOKEY("DBSIZE"),
    ONE("DECR", 0, 2),
    ONE("DECRBY", 0, 3),
    R("DEL", 1, -1, 1, 0, 2),
    STATEFUL("DISCARD"),
    ONE("DUMP", 1, 2),
    NOKEY("ECHO"),
    NUMK("EVAL", 2, 0, 0, 3),
    NUMK("EVALSHA", 2, 0, 0, 3),
    NUMK("EVALSHA_RO", 2, 0, 1, 3),
    NUMK("EVAL_RO", 2, 0, 1, 3),
    STATEFUL("EXEC"),
    R("EXISTS", 1, -1, 1, 1, 2),
    ONE("EXPIRE", 0, 3),
    ONE("EXPIREAT", 0, 3),
    ONE("EXPIRETIME", 1, 2),
    NOKEY("FAILOVER"),
    NUMK("FCALL", 2, 0, 0, 3),
    NUMK("FCALL_RO", 2, 0, 1, 3),
    NOKEY("FLUSHALL"),
    NOKEY("FLUSHDB"),
    NOKEY("FUNCTION"),
    ONE("GEOADD", 0, 5),
    ONE("GEODIST", 1, 4),
    ONE("GEOHASH", 1, 2),
    ONE("GEOPOS", 1, 2),
    {"GEORADIUS", K_STORE, 6, 0, 0, 0, 6, NULL, 0},
    {"GEORADIUSBYMEMBER", K_STORE, 5, 0, 0, 0, 5, NULL, 0},
    ONE("GEORADIUSBYMEMBER_RO", 1, 5),
    ONE("GEORADIUS_RO", 1, 6),
    ONE("GEOSEARCH", 1, 7),
    R("GEOSEARCHSTORE", 1, 2, 1, 0, 8),
    ONE("GET", 1, 2),
    ONE("GETBIT", 1, 3),
    ONE("GETDEL", 0, 2),
    ONE("GETEX", 0, 2),
    ONE("GETRANGE", 1, 4),
    ONE("GETSET", 0, 3),
    ONE("HDEL", 0, 3),
    STATEFUL("HELLO"),
    ONE("HEXISTS", 1, 3),
    ONE("HGET", 1, 3),
    ONE("HGETALL", 1, 2),
    ONE("HINCRBY", 0, 4),
    ONE("HINCRBYFLOAT", 0, 4),
    ONE("HKEYS", 1, 2),
    ONE("HLEN", 1, 2),
    ONE("HMGET", 1, 3),
    ONE("HMSET", 0, 4),
    ONE("HRANDFIELD", 1, 2),
    ONE("HSCAN", 1, 3),
    ONE("HSET", 0, 4),
    ONE("HSETNX", 0, 4),
    ONE("HSTRLEN", 1, 3),
    ONE("HVALS", 1, 2),
    ONE("INCR", 0, 2),
    ONE("INCRBY", 0, 3),
    ONE("INCRBYFLOAT", 0, 3),
    NOKEY("INFO"),
    NOKEY("KEYS"),
    NOKEY("LASTSAVE"),
    NOKEY("LATENCY"),
    R("LCS", 1, 2, 1, 1, 3),
    ONE("LINDEX", 1, 3),
    ONE("LINSERT", 0, 5),
    ONE("LLEN", 1, 2),
    R("LMOVE", 1, 2, 1, 0, 5),
    NUMK("LMPOP", 1, 0, 0, 4),
    NOKEY("LOLWUT"),
    ONE("LPOP", 0, 2),
    ONE("LPOS", 1, 3),
    ONE("LPUSH", 0, 3),
    ONE("LPUSHX", 0, 3),
    ONE("LRANGE", 1, 4),
    ONE("LREM", 0, 4),
    ONE("LSET", 0, 4),
    ONE("LTRIM", 0, 4),
    SUB("MEMORY", memory_subs, K_NOKEY, 1),
    R("MGET", 1, -1, 1, 1, 2),
    NOKEY("MODULE"),
    STATEFUL("MONITOR"),
    ONE("MOVE", 0, 3), /* a cluster refuses it; its node says so */
    R("MSET", 1, -1, 2, 0, 3),
    R("MSETNX", 1, -1, 2, 0, 3),
    STATEFUL("MULTI"),
    SUB("OBJECT", object_subs, K_UNKNOWN, 2),
    ONE("PERSIST", 0, 2),
    ONE("PEXPIRE", 0, 3),
    ONE("PEXPIREAT", 0, 3),
    ONE("PEXPIRETIME", 1, 2),
    ONE("PFADD", 0, 2),
    R("PFCOUNT", 1, -1, 1, 1, 2),
    R("PFDEBUG", 2, 2, 1, 0, 3),
    R("PFMERGE", 1, -1, 1, 0, 2),
    NOKEY("PFSELFTEST"),
    NOKEY("PING"),
    ONE("PSETEX", 0, 4),
    STATEFUL("PSUBSCRIBE"),
    STATEFUL("PSYNC"), /* replication takes the connection over */
    ONE("PTTL", 1, 2),
    NOKEY("PUBLISH"),
    NOKEY("PUBSUB"),
    STATEFUL("PUNSUBSCRIBE"),
    STATEFUL("QUIT"),
    NOKEY("RANDOMKEY"),
    NOKEY("READONLY"),
    NOKEY("READWRITE"),
    R("RENAME", 1, 2, 1, 0, 3),
    R("RENAMENX", 1, 2, 1, 0, 3),
    STATEFUL("REPLCONF"),
    NOKEY("REPLICAOF"),
    STATEFUL("RESET"),
    ONE("RESTORE", 0, 4),
    NOKEY("ROLE"),
    ONE("RPOP", 0, 2),
    R("RPOPLPUSH", 1, 2, 1, 0, 3),
    ONE("RPUSH", 0, 3),
    ONE("RPUSHX", 0, 3),
    ONE("SADD", 0, 3),
    NOKEY("SAVE"),
    NOKEY("SCAN"),
    ONE("SCARD", 1, 2),
    NOKEY("SCRIPT"),
    R("SDIFF", 1, -1, 1, 1, 2),
    R("SDIFFSTORE", 1, -1, 1, 0, 3),
    STATEFUL("SELECT"),
    ONE("SET", 0, 3),
    ONE("SETBIT", 0, 4),
    ONE("SETEX", 0, 4),
    ONE("SETNX", 0, 3),
    ONE("SETRANGE", 0, 4),
    NOKEY("SHUTDOWN"),
    R("SINTER", 1, -1, 1, 1, 2),
    NUMK("SINTERCARD", 1, 0, 1, 3),
    R("SINTERSTORE", 1, -1, 1, 0, 3),
    ONE("SISMEMBER", 1, 3),
    NOKEY("SLAVEOF"),
    NOKEY("SLOWLOG"),
    ONE("SMEMBERS", 1, 2),
    ONE("SMISMEMBER", 1, 3),
    R("SMOVE", 1, 2, 1, 0, 4),
    {"SORT", K_SORT, 0, 0, 0, 0, 2, NULL, 0},
    ONE("SORT_RO", 1, 2),
    ONE("SPOP", 0, 2),
    ONE("SPUBLISH", 0, 3),
    ONE("SRANDMEMBER", 1, 2),
    ONE("SREM", 0, 3),
    ONE("SSCAN", 1, 3),
    R("SSUBSCRIBE", 1, -1, 1, 0, 2),
    ONE("STRLEN", 1, 2),
    STATEFUL("SUBSCRIBE"),
    ONE("SUBSTR", 1, 4),
    R("SUNION", 1, -1, 1, 1, 2),
    R("SUNIONSTORE", 1, -1, 1, 0, 3),
    R("SUNSUBSCRIBE", 1, -1, 1, 0, 1),
    STATEFUL("SWAPDB"),
    STATEFUL("SYNC"),
    NOKEY("TIME"),
    R("TOUCH", 1, -1, 1, 1, 2),
    ONE("TTL", 1, 2),
    ONE("TYPE", 1, 2),
    R("UNLINK", 1, -1, 1, 0, 2),
    STATEFUL("UNSUBSCRIBE"),
    STATEFUL("UNWATCH"),
    NOKEY("WAIT"),
    R("WATCH", 1, -1, 1, 1, 2), /* stateful: see route_rule */
    ONE("XACK", 0, 4),
    ONE("XADD", 0, 5),
    ONE("XAUTOCLAIM", 0, 6),
    ONE("XCLAIM", 0, 6),
    ONE("XDEL", 0, 3),
    SUB("XGROUP", xgroup_subs, K_UNKNOWN, 2),
    SUB("XINFO", xinfo_subs, K_UNKNOWN, 2),
    ONE("XLEN", 1, 2),
    ONE("XPENDING", 1, 3),
    ONE("XRANGE", 1, 4),
    {"XREAD", K_STREAMS, 1, 0, 0, 1, 4, NULL, 0},
    {"XREADGROUP", K_STREAMS, 4, 0, 0, 0, 7, NULL, 0},
    ONE("XREVRANGE", 1, 4),
    ONE("XSETID", 0, 3),
    ONE("XTRIM", 0, 4),
    ONE("ZADD", 0, 4),
    ONE("ZCARD", 1, 2),
    ONE("ZCOUNT", 1, 4),
    NUMK("ZDIFF", 1, 0, 1, 3),
    NUMK("ZDIFFSTORE", 2, 1, 0, 4),
    ONE("ZINCRBY", 0, 4),
    NUMK("ZINTER", 1, 0, 1, 3),
    NUMK("ZINTERCARD", 1, 0, 1, 3),
    NUMK("ZINTERSTORE", 2, 1, 0, 4),
    ONE("ZLEXCOUNT", 1, 4),
    NUMK("ZMPOP", 1, 0, 0, 4),
    ONE("ZMSCORE", 1, 3),
    ONE("ZPOPMAX", 0, 2),
    ONE("ZPOPMIN", 0, 2),
    ONE("ZRANDMEMBER", 1, 2),
    ONE("ZRANGE", 1, 4),
    ONE("ZRANGEBYLEX", 1, 4),
    ONE("ZRANGEBYSCORE", 1, 4),
    R("ZRANGESTORE", 1, 2, 1, 0, 5),
    ONE("ZRANK", 1, 3),
    ONE("ZREM", 0, 3),
    ONE("ZREMRANGEBYLEX", 0, 4),
    ONE("ZREMRANGEBYRANK", 0, 4),
    ONE("ZREMRANGEBYSCORE", 0, 4),
    ONE("ZREVRANGE", 1, 4),
    ONE("ZREVRANGEBYLEX", 1, 4),
    ONE("ZREVRANGEBYSCORE", 1, 4),
    ONE("ZREVRANK", 1, 3),
    ONE("ZSCAN", 1, 3),
    ONE("ZSCORE", 1, 3),
    NUMK("ZUNION", 1, 0, 1, 3),
    NUMK("ZUNIONSTORE", 2, 1, 0, 4),
};

/* Compares name[0..len) case-insensitively with the upper-case `upper`,
 * as strcmp orders them. */
static int name_cmp(const char *name, size_t len, const char *upper)
{
    size_t i;

    for (i = 0; i < len && upper[i] != '\0'; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c >= 'a' && c <= 'z')
            c = (unsigned char)(c - 'a' + 'A');
        if (c != (unsigned char)upper[i])
            return c < (unsigned char)upper[i] ? -1 : 1;
    }
    if (i < len)
        return 1;
    return upper[i] == '\0' ? 0 : -1;
}

static const rule *find_rule(const rule *t, size_t n, const char *name, size_t len)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = name_cmp(name, len, t[mid].name);

        if (c == 0)
            return &t[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- messages ---- */

/* A bounded writer into the caller's message buffer. */
typedef struct msgbuf {
    char *p;
    size_t n, used;
} msgbuf;

static void put(msgbuf *m, const char *s, size_t len)
{
    size_t room;

    if (m->n == 0)
        return;
    room = m->n - 1 - m->used;
    if (len > room)
        len = room;
    memcpy(m->p + m->used, s, len);
    m->used += len;
    m->p[m->used] = '\0';
}

static void puts_(msgbuf *m, const char *s)
{
    put(m, s, strlen(s));
}

/* A key as redis-cli would show it, but bare when it needs no quotes (so
 * "a" prints as a): in double quotes, with \n \r \t \a \b \" \\ and \xHH
 * escapes, when it holds anything but printable ASCII other than a space,
 * a quote or a backslash. At most 64 bytes of it, then "...". */
static void put_key(msgbuf *m, const char *key, size_t len)
{
    size_t i, n = len > 64 ? 64 : len;
    int bare = n > 0;
    char esc[5];

    for (i = 0; i < n && bare; i++) {
        unsigned char c = (unsigned char)key[i];

        bare = c > ' ' && c < 0x7f && c != '"' && c != '\\' && c != '\'';
    }
    if (bare) {
        put(m, key, n);
    } else {
        put(m, "\"", 1);
        for (i = 0; i < n; i++) {
            unsigned char c = (unsigned char)key[i];

            switch (c) {
            case '\\': put(m, "\\\\", 2); break;
            case '"': put(m, "\\\"", 2); break;
            case '\n': put(m, "\\n", 2); break;
            case '\r': put(m, "\\r", 2); break;
            case '\t': put(m, "\\t", 2); break;
            case '\a': put(m, "\\a", 2); break;
            case '\b': put(m, "\\b", 2); break;
            default:
                if (c >= ' ' && c < 0x7f) {
                    put(m, (const char *)&key[i], 1);
                } else {
                    snprintf(esc, sizeof(esc), "\\x%02x", c);
                    put(m, esc, 4);
                }
            }
        }
        put(m, "\"", 1);
    }
    if (len > n)
        puts_(m, "...");
}

/* The command's name for a message: the rule's (upper case) when known,
 * else the caller's, quoted like a key. `sub` adds the subcommand. */
static void put_name(msgbuf *m, const rule *r, const rule *sub, const char *name, size_t len)
{
    if (r != NULL)
        puts_(m, r->name);
    else
        put_key(m, name, len);
    if (sub != NULL) {
        puts_(m, " ");
        puts_(m, sub->name);
    }
}

/* ---- finding keys ---- */

#define ARGLEN(i) (lens != NULL ? lens[i] : strlen(argv[i]))

/* Parses argv[i] as a count of keys: a decimal number without sign that
 * fits an int. -1 when it is not one. */
static int parse_count(const char *s, size_t len)
{
    long v = 0;
    size_t i;

    if (len == 0 || len > 9)
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return (int)v;
}

static int arg_is(const char *s, size_t len, const char *upper)
{
    return name_cmp(s, len, upper) == 0;
}

/* The state of a search over a command's keys. */
typedef struct keyscan {
    int argc;
    const char *const *argv;
    const size_t *lens;
    vl__route *out;
} keyscan;

/* Takes argv[i] as a key: the first sets the slot, a later one in another
 * slot makes the command CROSSSLOT (the first such is remembered). */
static void take_key(keyscan *k, int i)
{
    const char *const *argv = k->argv;
    const size_t *lens = k->lens;
    unsigned slot = vl__redis_slot(argv[i], ARGLEN(i));
    vl__route *out = k->out;

    if (out->nkeys++ == 0) {
        out->key_arg = i;
        out->slot = slot;
    } else if (slot != out->slot && out->other_arg < 0) {
        out->other_arg = i;
    }
}

/* Finds the keys of the rule `r`, starting at argument `base` (1, or 2
 * after a subcommand). Returns VL__ROUTE_KEY, VL__ROUTE_NOKEY when the
 * arguments name no key (EVAL with numkeys 0), or VL__ROUTE_ARITY with
 * *bad set to a short reason. */
static int scan_rule(keyscan *k, const rule *r, const char **bad)
{
    const char *const *argv = k->argv;
    const size_t *lens = k->lens;
    int argc = k->argc, i, n, first, last;

    *bad = NULL;
    if (argc < r->min_argc)
        return VL__ROUTE_ARITY;
    switch (r->kind) {
    case K_RANGE:
        first = r->a;
        last = r->b >= 0 ? r->b : argc + r->b;
        if (r->c > 1 && (argc - first) % r->c != 0)
            return VL__ROUTE_ARITY;
        if (last < first)
            return r->b == -1 ? VL__ROUTE_NOKEY : VL__ROUTE_ARITY;
        for (i = first; i <= last && i < argc; i += r->c)
            take_key(k, i);
        return VL__ROUTE_KEY;
    case K_NUMKEYS:
        n = parse_count(argv[r->a], ARGLEN(r->a));
        if (n < 0) {
            *bad = "numkeys is not a count";
            return VL__ROUTE_ARITY;
        }
        if (n > argc - r->a - 1) {
            *bad = "numkeys is more than the arguments";
            return VL__ROUTE_ARITY;
        }
        if (r->c > 0)
            take_key(k, r->c);
        for (i = r->a + 1; i <= r->a + n; i++)
            take_key(k, i);
        return k->out->nkeys > 0 ? VL__ROUTE_KEY : VL__ROUTE_NOKEY;
    case K_STREAMS:
        for (i = r->a; i < argc && !arg_is(argv[i], ARGLEN(i), "STREAMS"); i++)
            ;
        n = argc - i - 1;
        if (i >= argc || n <= 0 || n % 2 != 0) {
            *bad = i >= argc ? "no STREAMS" : "unbalanced STREAMS";
            return VL__ROUTE_ARITY;
        }
        for (first = i + 1; first <= i + n / 2; first++)
            take_key(k, first);
        return VL__ROUTE_KEY;
    case K_STORE:
        take_key(k, 1);
        for (i = r->a; i + 1 < argc; i++) {
            if (arg_is(argv[i], ARGLEN(i), "STORE") || arg_is(argv[i], ARGLEN(i), "STOREDIST")) {
                take_key(k, i + 1);
                break;
            }
        }
        return VL__ROUTE_KEY;
    case K_SORT:
        /* SORT key [BY pattern] [LIMIT offset count] [GET pattern ...]
         * [ASC|DESC] [ALPHA] [STORE destination]: patterns are skipped,
         * as they name no key of their own in a cluster. */
        take_key(k, 1);
        for (i = 2; i < argc; i++) {
            size_t len = ARGLEN(i);

            if (arg_is(argv[i], len, "LIMIT"))
                i += 2;
            else if (arg_is(argv[i], len, "BY") || arg_is(argv[i], len, "GET"))
                i += 1;
            else if (arg_is(argv[i], len, "STORE") && i + 1 < argc)
                take_key(k, ++i);
        }
        return VL__ROUTE_KEY;
    default:
        return VL__ROUTE_UNKNOWN;
    }
}

int vl__redis_route(int argc, const char *const *argv, const size_t *lens, vl__route *out,
                    char *why, size_t whyn)
{
    const rule *r = NULL, *sub = NULL, *use;
    const char *bad = NULL;
    msgbuf m = {why, whyn, 0};
    keyscan k = {argc, argv, lens, out};
    int kind;
    char num[32];

    out->kind = VL__ROUTE_UNKNOWN;
    out->slot = 0;
    out->readonly = 0;
    out->nkeys = 0;
    out->key_arg = -1;
    out->other_arg = -1;
    if (whyn > 0)
        why[0] = '\0';
    if (argc < 1 || argv == NULL) {
        puts_(&m, "empty command");
        return out->kind = VL__ROUTE_ARITY;
    }
    /* A service sends few distinct commands, mostly the same one in a row:
     * the last command's rule, per thread, spares the binary search (about
     * seven name comparisons) most of the time. */
    {
        static _Thread_local const rule *last;

        if (last != NULL && name_cmp(argv[0], ARGLEN(0), last->name) == 0)
            r = last;
        else if ((r = find_rule(rules, sizeof(rules) / sizeof(rules[0]), argv[0], ARGLEN(0))) !=
                 NULL)
            last = r;
    }
    use = r;
    if (r != NULL && r->kind == K_SUB) {
        if (argc < r->min_argc) {
            use = NULL;
            kind = VL__ROUTE_ARITY;
        } else {
            sub = argc >= 2 ? find_rule(r->subs, r->nsubs, argv[1], ARGLEN(1)) : NULL;
            use = sub;
            kind = sub == NULL ? (r->a == K_NOKEY ? VL__ROUTE_NOKEY : VL__ROUTE_UNKNOWN) : 0;
        }
    } else {
        kind = r == NULL ? VL__ROUTE_UNKNOWN : 0;
    }
    if (use != NULL) {
        if (use->kind == K_NOKEY)
            kind = VL__ROUTE_NOKEY;
        else if (use->kind == K_STATEFUL)
            kind = VL__ROUTE_STATEFUL;
        else
            kind = scan_rule(&k, use, &bad);
        out->readonly = use->ro;
        /* WATCH has keys (a lease goes to their slot) but changes the
         * connection: it is reported stateful, with its keys found. */
        if (kind == VL__ROUTE_KEY && strcmp(use->name, "WATCH") == 0)
            kind = VL__ROUTE_STATEFUL;
    }
    if (kind == VL__ROUTE_KEY && out->other_arg >= 0)
        kind = VL__ROUTE_CROSSSLOT;
    out->kind = kind;
    if (kind != VL__ROUTE_KEY && kind != VL__ROUTE_CROSSSLOT)
        out->readonly = 0;

    switch (kind) {
    case VL__ROUTE_KEY:
        break;
    case VL__ROUTE_CROSSSLOT:
        put_name(&m, r, sub, NULL, 0);
        puts_(&m, ": keys in different slots (CROSSSLOT): ");
        put_key(&m, argv[out->key_arg], ARGLEN(out->key_arg));
        puts_(&m, " and ");
        put_key(&m, argv[out->other_arg], ARGLEN(out->other_arg));
        break;
    case VL__ROUTE_NOKEY:
        put_name(&m, r, sub, NULL, 0);
        if (r != NULL && r->kind == K_SUB && sub == NULL && argc >= 2) {
            puts_(&m, " ");
            put_key(&m, argv[1], ARGLEN(1));
        }
        puts_(&m, " has no key: use vl_redis_cluster_each or vl_redis_cluster_command_key");
        break;
    case VL__ROUTE_UNKNOWN:
        put_name(&m, r, NULL, argv[0], ARGLEN(0));
        if (r != NULL && argc >= 2) {
            puts_(&m, " ");
            put_key(&m, argv[1], ARGLEN(1));
        }
        puts_(&m, ": unknown command: route it with vl_redis_cluster_command_key");
        break;
    case VL__ROUTE_ARITY:
        put_name(&m, r, sub, NULL, 0);
        snprintf(num, sizeof(num), "%d", argc - 1);
        puts_(&m, ": wrong number of arguments for its keys (");
        puts_(&m, num);
        puts_(&m, argc == 2 ? " argument" : " arguments");
        if (bad != NULL) {
            puts_(&m, ", ");
            puts_(&m, bad);
        }
        puts_(&m, ")");
        break;
    case VL__ROUTE_STATEFUL:
        put_name(&m, r, sub, NULL, 0);
        puts_(&m, " needs a lease (vl_redis_cluster_lease)");
        break;
    }
    return kind;
}

/* ---- splitting a formatted command ---- */

/* Reads a decimal number ended by "\r\n" at *p (before end); -1 when
 * there is none or it is out of range. */
static long long read_num(const char **p, const char *end)
{
    const char *s = *p;
    long long v = 0;

    if (s >= end || *s < '0' || *s > '9')
        return -1;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        if (v > (LLONG_MAX - 9) / 10)
            return -1; /* no buffer is that long: not a command of ours */
        v = v * 10 + (*s - '0');
    }
    if (end - s < 2 || s[0] != '\r' || s[1] != '\n')
        return -1;
    *p = s + 2;
    return v;
}

int vl__redis_cmd_split(const char *cmd, size_t len, const char **argv, size_t *lens, int max)
{
    const char *p = cmd, *end = cmd + len;
    long long n, l;
    int i;

    if (len < 1 || *p++ != '*')
        return -1;
    n = read_num(&p, end);
    if (n < 0 || n > max)
        return -1;
    for (i = 0; i < (int)n; i++) {
        if (p >= end || *p++ != '$')
            return -1;
        l = read_num(&p, end);
        if (l < 0 || (unsigned long long)l > (size_t)(end - p) ||
            (size_t)(end - p) - (size_t)l < 2 || p[l] != '\r' || p[l + 1] != '\n')
            return -1;
        argv[i] = p;
        lens[i] = (size_t)l;
        p += l + 2;
    }
    return p == end ? (int)n : -1;
}
