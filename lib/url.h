/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/url.h - endpoint URLs shared by the Redis and MySQL adapters (private).
 *
 *   scheme://[user[:password]@]host[:port][/path][?k=v&k=v]
 *   scheme://[user[:password]@][ipv6]:port/...
 *   unix:///path/to.sock?db=2          (host is empty, path is the socket)
 *   mysql://user:pw@localhost/db?socket=/run/mysqld.sock
 *
 * Every part is percent-decoded. The userinfo ends at the last '@' before
 * the query, so a password may hold '/', ':' and '@' as typed; '?' and '#'
 * must be percent-encoded (%3F, %23). `display` is what may be printed: the
 * URL without user and password, e.g. "redis://127.0.0.1:6390/2".
 */
#ifndef VOLLEY_URL_H
#define VOLLEY_URL_H

#include <stddef.h>

typedef struct vl__url {
    char *scheme;    /* lower case: "redis", "mysql", "unix" ... */
    char *user;      /* NULL when absent */
    char *password;  /* NULL when absent; never print it */
    char *host;      /* "" for unix:// */
    int port;        /* 0 when absent */
    char *path;      /* without the leading '/' for network URLs; NULL when absent */
    char **keys;     /* query parameters, decoded */
    char **values;
    size_t nparams;
    char *display;   /* printable form, no password */
} vl__url;

/* Parses `s`. Returns VL_OK, VL_ENOMEM, or VL_EINVAL with a reason in err
 * (which never quotes the password). */
int vl__url_parse(const char *s, vl__url *u, char *err, size_t errlen);
void vl__url_clear(vl__url *u);
/* The value of query parameter `key`, or NULL. */
const char *vl__url_param(const vl__url *u, const char *key);
/* 1 when `host` is an IPv4 or IPv6 literal (no DNS needed). */
int vl__host_is_ip(const char *host);

/* Resolves `host` off the loop (getaddrinfo on a worker thread) and completes
 * with a value that is a NUL-terminated numeric address (char *, freed with
 * vl__free). An IP literal completes at once (still from the loop). */
struct vl_future *vl__resolve(struct vl_loop *loop, const char *host);
/* The same with every address of `host`, IPv4 ones first, one per line
 * ("127.0.0.1\n::1"): a client tries each in turn. */
struct vl_future *vl__resolve_all(struct vl_loop *loop, const char *host);

/* Splits a URL whose authority lists several hosts, as in
 * "mysql://u:pw@h1:1,h2:2,[::1]:3/db?x=1", into one URL per host, each with
 * the same scheme, userinfo, path and query ("mysql://u:pw@h1:1/db?x=1").
 * The userinfo ends where vl__url_parse says (the last '@' before the
 * query). A URL with one host (or none, as unix:///path) gives one copy.
 * Returns VL_OK with *urls (n strings, freed with vl__url_list_free),
 * VL_ENOMEM, or VL_EINVAL with the reason in err (never the password): an
 * empty item, or more than `max` hosts. */
int vl__url_split_hosts(const char *s, size_t max, char ***urls, size_t *n, char *err,
                        size_t errlen);
void vl__url_list_free(char **urls, size_t n);
/* A copy of `url` without the query parameters whose (raw) key is one of
 * keys[0..nkeys); the query's '?' goes too when nothing is left. NULL when
 * out of memory. */
char *vl__url_drop_params(const char *url, const char *const *keys, size_t nkeys);

#endif
