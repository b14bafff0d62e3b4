/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/url.c - URL parsing and name resolution off the loop. See url.h. */
#include "internal.h"
#include "url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes %XX in [s, s+n) into a new string; NULL on ENOMEM or bad escape
 * (*bad set). */
static char *decode(const char *s, size_t n, int *bad)
{
    char *d = vl__malloc(n + 1);
    size_t i, j = 0;

    if (d == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi, lo;
            hi = i + 1 < n ? hexval((unsigned char)s[i + 1]) : -1;
            lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                *bad = 1;
                vl__free(d);
                return NULL;
            }
            d[j++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            d[j++] = s[i];
        }
    }
    d[j] = '\0';
    return d;
}

void vl__url_clear(vl__url *u)
{
    size_t i;

    vl__free(u->scheme);
    vl__free(u->user);
    if (u->password != NULL) {
        memset(u->password, 0, strlen(u->password));
        vl__free(u->password);
    }
    vl__free(u->host);
    vl__free(u->path);
    for (i = 0; i < u->nparams; i++) {
        vl__free(u->keys[i]);
        vl__free(u->values[i]);
    }
    vl__free(u->keys);
    vl__free(u->values);
    vl__free(u->display);
    memset(u, 0, sizeof(*u));
}

const char *vl__url_param(const vl__url *u, const char *key)
{
    size_t i;

    for (i = 0; i < u->nparams; i++)
        if (strcmp(u->keys[i], key) == 0)
            return u->values[i];
    return NULL;
}

int vl__host_is_ip(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

#define FAIL(code, ...)                                                                  \
    do {                                                                                 \
        snprintf(err, errlen, __VA_ARGS__);                                              \
        rc = (code);                                                                     \
        goto fail;                                                                       \
    } while (0)

static int parse_query(const char *q, vl__url *u, int *bad)
{
    while (*q != '\0') {
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        char **k, **v;

        if (n == 0) {
            q++;
            continue;
        }
        k = vl__realloc(u->keys, (u->nparams + 1) * sizeof(char *));
        if (k == NULL)
            return VL_ENOMEM;
        u->keys = k;
        v = vl__realloc(u->values, (u->nparams + 1) * sizeof(char *));
        if (v == NULL)
            return VL_ENOMEM;
        u->values = v;
        k[u->nparams] = decode(q, eq != NULL ? (size_t)(eq - q) : n, bad);
        v[u->nparams] = eq != NULL ? decode(eq + 1, n - (size_t)(eq - q) - 1, bad)
                                   : vl__strdup("");
        u->nparams++;
        if (k[u->nparams - 1] == NULL || v[u->nparams - 1] == NULL)
            return *bad ? VL_EINVAL : VL_ENOMEM;
        q += n;
        if (*q == '&')
            q++;
    }
    return VL_OK;
}

int vl__url_parse(const char *s, vl__url *u, char *err, size_t errlen)
{
    const char *p, *auth_end, *hostport, *hp_end, *at;
    int rc = VL_EINVAL, bad = 0;
    size_t i;

    memset(u, 0, sizeof(*u));
    snprintf(err, errlen, "out of memory");
    if (s == NULL || *s == '\0')
        FAIL(VL_EINVAL, "empty URL");
    p = strstr(s, "://");
    if (p == NULL || p == s)
        FAIL(VL_EINVAL, "URL has no scheme (expected scheme://...)");
    u->scheme = vl__strndup(s, (size_t)(p - s));
    if (u->scheme == NULL)
        goto nomem;
    for (i = 0; u->scheme[i]; i++) {
        unsigned char c = (unsigned char)u->scheme[i];
        if (!isalnum(c) && c != '+' && c != '-' && c != '.')
            FAIL(VL_EINVAL, "bad character in URL scheme");
        u->scheme[i] = (char)tolower(c);
    }
    p += 3;
    /* The userinfo ends at the last '@' before the query: people paste
     * passwords with '/', ':' or '@' unescaped, and reading such a password
     * as host, port or path would print it in every message. '?' and '#'
     * in a password must be percent-encoded. A URL without authority
     * (unix:///path) has no userinfo. The authority then ends at the first
     * '/' or '?' after the userinfo. */
    at = NULL;
    if (*p != '/') {
        const char *q = p + strcspn(p, "?");
        for (hostport = p; hostport < q; hostport++)
            if (*hostport == '@')
                at = hostport;
    }
    auth_end = (at != NULL ? at + 1 : p) + strcspn(at != NULL ? at + 1 : p, "/?");
    hostport = p;
    if (at != NULL) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        u->user = decode(p, (size_t)((colon ? colon : at) - p), &bad);
        if (u->user == NULL)
            goto dec;
        if (colon != NULL) {
            u->password = decode(colon + 1, (size_t)(at - colon - 1), &bad);
            if (u->password == NULL)
                goto dec;
        }
        if (u->user[0] == '\0') {
            vl__free(u->user);
            u->user = NULL;
        }
        hostport = at + 1;
    }
    hp_end = auth_end;
    if (*hostport == '[') {
        const char *rb = memchr(hostport, ']', (size_t)(hp_end - hostport));
        if (rb == NULL)
            FAIL(VL_EINVAL, "unclosed '[' in URL host");
        u->host = vl__strndup(hostport + 1, (size_t)(rb - hostport - 1));
        hostport = rb + 1;
        if (hostport < hp_end && *hostport != ':')
            FAIL(VL_EINVAL, "junk after ']' in URL host");
    } else {
        const char *colon = memchr(hostport, ':', (size_t)(hp_end - hostport));
        u->host = decode(hostport, (size_t)((colon ? colon : hp_end) - hostport), &bad);
        if (u->host == NULL)
            goto dec;
        hostport = colon ? colon : hp_end;
    }
    if (u->host == NULL)
        goto nomem;
    if (hostport < hp_end && *hostport == ':') {
        char *end;
        long port;
        hostport++;
        if (hostport == hp_end)
            FAIL(VL_EINVAL, "empty port in URL");
        port = strtol(hostport, &end, 10);
        if (end != hp_end || port < 1 || port > 65535 || !isdigit((unsigned char)*hostport))
            FAIL(VL_EINVAL, "bad port in URL (1-65535)");
        u->port = (int)port;
    }
    for (i = 0; u->host[i]; i++)
        if (isspace((unsigned char)u->host[i]) || u->host[i] == '/' || u->host[i] == '@')
            FAIL(VL_EINVAL, "bad character in URL host");
    p = auth_end;
    if (*p == '/') {
        size_t n = strcspn(p, "?");
        /* unix:///path keeps its leading '/'; network URLs drop it. */
        if (u->host[0] == '\0')
            u->path = decode(p, n, &bad);
        else
            u->path = decode(p + 1, n - 1, &bad);
        if (u->path == NULL)
            goto dec;
        p += n;
    }
    if (*p == '?') {
        rc = parse_query(p + 1, u, &bad);
        if (rc == VL_ENOMEM)
            goto nomem;
        if (rc != VL_OK)
            goto dec;
    }
    if (u->host[0] == '\0' && (u->path == NULL || u->path[0] == '\0') &&
        vl__url_param(u, "socket") == NULL)
        FAIL(VL_EINVAL, "URL has no host");
    if (u->host[0] != '\0') {
        /* An IPv6 host keeps its brackets, with or without a port, so that
         * the display form reads back as the same endpoint. */
        int v6 = strchr(u->host, ':') != NULL;
        char port[16] = "";
        if (u->port)
            snprintf(port, sizeof(port), ":%d", u->port);
        u->display = vl__asprintf("%s://%s%s%s%s%s%s", u->scheme, v6 ? "[" : "", u->host,
                                  v6 ? "]" : "", port, u->path && u->path[0] ? "/" : "",
                                  u->path ? u->path : "");
    } else
        u->display = vl__asprintf("%s://%s", u->scheme,
                                  u->path ? u->path : vl__url_param(u, "socket"));
    if (u->display == NULL)
        goto nomem;
    return VL_OK;
dec:
    if (bad) {
        snprintf(err, errlen, "bad %%-escape in URL");
        rc = VL_EINVAL;
        goto fail;
    }
nomem:
    snprintf(err, errlen, "out of memory");
    rc = VL_ENOMEM;
fail:
    vl__url_clear(u);
    return rc;
}

/* ---- resolution off the loop ----
 *
 * resolve_work runs on a worker thread, so it uses the C library's malloc
 * and free, never volley's allocator: a caller's allocator need not be
 * thread-safe (the one in the tests is not). The loop side copies the answer
 * into volley's allocator before anyone else sees it.
 */

/* 1 when the '\n'-separated list `list` holds the line s[0..n). */
static int line_in(const char *list, const char *s, size_t n)
{
    const char *p = list;

    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (l == n && memcmp(p, s, n) == 0)
            return 1;
        if (nl == NULL)
            return 0;
        p = nl + 1;
    }
}

static void *resolve_work(void *ud)
{
    char *host = ud;
    struct addrinfo hints, *res = NULL;
    char *out = NULL;
    char buf[INET6_ADDRSTRLEN + 1];

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* Every address, IPv4 first: loopback services often listen on
     * 127.0.0.1 only. One per line, duplicates (one per socket type the
     * resolver would have listed) dropped. */
    if (getaddrinfo(host, NULL, &hints, &res) == 0) {
        struct addrinfo *ai;
        size_t len = 0, cap = 0;
        int pass;
        for (pass = 0; pass < 2; pass++) {
            for (ai = res; ai != NULL; ai = ai->ai_next) {
                size_t n;
                char *grown;
                if ((pass == 0) != (ai->ai_family == AF_INET))
                    continue;
                if (getnameinfo(ai->ai_addr, ai->ai_addrlen, buf, sizeof(buf), NULL, 0,
                                NI_NUMERICHOST) != 0)
                    continue;
                n = strlen(buf);
                if (out != NULL && line_in(out, buf, n))
                    continue;
                if (len + n + 2 > cap) {
                    cap = (len + n + 2) * 2;
                    grown = realloc(out, cap);
                    if (grown == NULL)
                        break;
                    out = grown;
                }
                if (len > 0)
                    out[len++] = '\n';
                memcpy(out + len, buf, n + 1);
                len += n;
            }
        }
        freeaddrinfo(res);
    }
    free(host);
    return out; /* NULL: not found */
}

typedef struct resolve_req {
    vl_promise *p;
    char *host;
    int all; /* every address, or the first */
} resolve_req;

static void resolve_done(vl_future *f, void *ud)
{
    resolve_req *r = ud;
    char *addr = vl_future_take(f);

    if (vl_future_status(f) != VL_OK) {
        vl_promise_fail(r->p, vl_future_status(f), vl_future_error(f));
    } else if (addr == NULL) {
        char *msg = vl__asprintf("cannot resolve host '%s'", r->host);
        vl_promise_fail(r->p, VL_ECONN, msg != NULL ? msg : "cannot resolve host");
        vl__free(msg);
    } else {
        char *copy;
        if (!r->all && strchr(addr, '\n') != NULL)
            *strchr(addr, '\n') = '\0';
        copy = vl__strdup(addr);
        free(addr);
        if (copy == NULL)
            vl_promise_fail(r->p, VL_ENOMEM, "out of memory");
        else
            vl_promise_resolve(r->p, copy, vl__free);
    }
    vl__free(r->host);
    vl__free(r);
}

static vl_future *resolve(vl_loop *loop, const char *host, int all)
{
    resolve_req *r;
    vl_future *out, *work;
    char *arg;

    if (vl__host_is_ip(host)) {
        char *copy = vl__strdup(host);
        vl_promise *p = vl_promise_new(loop);
        if (copy == NULL || p == NULL) {
            vl__free(copy);
            vl_promise_free(p);
            return NULL;
        }
        out = vl_promise_future(p);
        vl_promise_resolve(p, copy, vl__free);
        return out;
    }
    r = vl__calloc(1, sizeof(*r));
    arg = strdup(host); /* freed by the worker with free() */
    if (r == NULL || arg == NULL)
        goto nomem;
    r->host = vl__strdup(host);
    r->all = all;
    r->p = vl_promise_new(loop);
    if (r->host == NULL || r->p == NULL)
        goto nomem;
    out = vl_promise_future(r->p);
    /* The worker frees arg; if it never runs, the executor does. */
    work = vl__loop_run_in_thread_owned(loop, resolve_work, arg, free, free);
    if (work == NULL) {
        vl_future_free(out);
        goto nomem;
    }
    arg = NULL;
    vl_future_then(work, resolve_done, r);
    return out;
nomem:
    free(arg);
    if (r != NULL) {
        vl_promise_free(r->p);
        vl__free(r->host);
        vl__free(r);
    }
    return NULL;
}

vl_future *vl__resolve(vl_loop *loop, const char *host)
{
    return resolve(loop, host, 0);
}

vl_future *vl__resolve_all(vl_loop *loop, const char *host)
{
    return resolve(loop, host, 1);
}

/* ---- host lists (a cluster's URL) ---- */

void vl__url_list_free(char **urls, size_t n)
{
    size_t i;

    if (urls == NULL)
        return;
    for (i = 0; i < n; i++) {
        if (urls[i] != NULL) {
            /* Each copy holds the password. */
            memset(urls[i], 0, strlen(urls[i]));
            vl__free(urls[i]);
        }
    }
    vl__free(urls);
}

int vl__url_split_hosts(const char *s, size_t max, char ***urls, size_t *n, char *err,
                        size_t errlen)
{
    const char *p, *q, *at = NULL, *auth, *auth_end, *item;
    char **out;
    size_t count = 1, i = 0;

    *urls = NULL;
    *n = 0;
    if (s == NULL || *s == '\0' || (p = strstr(s, "://")) == NULL || p == s) {
        snprintf(err, errlen, "URL has no scheme (expected scheme://...)");
        return VL_EINVAL;
    }
    p += 3;
    /* The same reading as vl__url_parse: the userinfo ends at the last '@'
     * before the query, the authority at the next '/' or '?'. */
    if (*p != '/') {
        const char *qe = p + strcspn(p, "?");
        for (q = p; q < qe; q++)
            if (*q == '@')
                at = q;
    }
    auth = at != NULL ? at + 1 : p;
    auth_end = auth + strcspn(auth, "/?");
    for (q = auth; q < auth_end; q++)
        if (*q == ',')
            count++;
    if (count > max) {
        snprintf(err, errlen, "URL lists %zu hosts, at most %zu allowed", count, max);
        return VL_EINVAL;
    }
    out = vl__calloc(count, sizeof(*out));
    if (out == NULL)
        return VL_ENOMEM;
    for (item = auth; i < count; i++) {
        const char *end = memchr(item, ',', (size_t)(auth_end - item));
        size_t head = (size_t)(auth - s), len, tail = strlen(auth_end);
        if (end == NULL)
            end = auth_end;
        len = (size_t)(end - item);
        if (len == 0 && count > 1) {
            snprintf(err, errlen, "empty host in the URL's host list (item %zu)", i + 1);
            vl__url_list_free(out, count);
            return VL_EINVAL;
        }
        out[i] = vl__malloc(head + len + tail + 1);
        if (out[i] == NULL) {
            vl__url_list_free(out, count);
            return VL_ENOMEM;
        }
        memcpy(out[i], s, head);
        memcpy(out[i] + head, item, len);
        memcpy(out[i] + head + len, auth_end, tail + 1);
        item = end + 1;
    }
    *urls = out;
    *n = count;
    return VL_OK;
}

char *vl__url_drop_params(const char *url, const char *const *keys, size_t nkeys)
{
    const char *qm = strchr(url, '?'), *item;
    char *out, *w;
    size_t k;

    out = vl__malloc(strlen(url) + 1);
    if (out == NULL)
        return NULL;
    if (qm == NULL) {
        memcpy(out, url, strlen(url) + 1);
        return out;
    }
    memcpy(out, url, (size_t)(qm - url));
    w = out + (qm - url);
    for (item = qm + 1; *item != '\0';) {
        size_t len = strcspn(item, "&"), klen = strcspn(item, "=&");
        int drop = len == 0;
        for (k = 0; k < nkeys && !drop; k++)
            drop = strlen(keys[k]) == klen && memcmp(keys[k], item, klen) == 0;
        if (!drop) {
            char sep = w == out + (qm - url) ? '?' : '&';
            *w++ = sep;
            memcpy(w, item, len);
            w += len;
        }
        item += len;
        if (*item == '&')
            item++;
    }
    *w = '\0';
    return out;
}
