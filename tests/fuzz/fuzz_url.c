/* SPDX-License-Identifier: BSD-3-Clause */
/* tests/fuzz/fuzz_url.c - libFuzzer target for endpoint URL parsing (lib/url.c).
 *
 * Each input is one URL (cut at its first NUL). Checked for every input:
 * - the parser returns VL_OK or VL_EINVAL, with a message on failure;
 * - the password never shapes the outcome: the same URL with every byte of
 *   its password replaced gives the same status, message and display form,
 *   so no message and no display form can hold it;
 * - a parsed URL is sane (lower-case scheme, port in range, a display form
 *   that names the scheme), and a display form made only of plain
 *   characters parses back to the same scheme, host, port and path;
 * - an allocation failure at any point gives VL_ENOMEM (or the same
 *   VL_EINVAL) and leaks nothing, and a parse leaks nothing either: every
 *   allocation goes through a counting allocator.
 */
#include "internal.h"
#include "url.h"
#include "fuzz_alloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, const char *url)
{
    if (!ok) {
        fprintf(stderr, "fuzz_url: %s: '%s'\n", what, url);
        abort();
    }
}

/* Where the password lies in s, by the rule url.h states: the userinfo
 * follows "://" unless a '/' does, ends at the last '@' before the query,
 * and its password follows its first ':'. Returns 0 when there is none. */
static int password_span(const char *s, size_t *start, size_t *len)
{
    const char *p = strstr(s, "://"), *q, *at = NULL, *colon, *c;

    if (p == NULL || p == s || p[3] == '/')
        return 0;
    p += 3;
    q = p + strcspn(p, "?");
    for (c = p; c < q; c++)
        if (*c == '@')
            at = c;
    if (at == NULL)
        return 0;
    colon = memchr(p, ':', (size_t)(at - p));
    if (colon == NULL || colon + 1 == at)
        return 0;
    *start = (size_t)(colon + 1 - s);
    *len = (size_t)(at - colon - 1);
    return 1;
}

static int plain(const char *s, const char *extra)
{
    for (; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr(extra, *s) != NULL))
            return 0;
    return 1;
}

static int same_path(const char *a, const char *b)
{
    return strcmp(a != NULL ? a : "", b != NULL ? b : "") == 0;
}

/* A display form of plain characters parses back to the same endpoint. */
static void check_display(const vl__url *u, const char *url)
{
    vl__url v;
    char err[256];

    if (u->host[0] == '\0' || !plain(u->host, ".-:") || (u->path && !plain(u->path, "._-")) ||
        !plain(u->scheme, "+-."))
        return;
    check(vl__url_parse(u->display, &v, err, sizeof(err)) == VL_OK, "display form does not parse",
          url);
    check(strcmp(v.scheme, u->scheme) == 0 && strcmp(v.host, u->host) == 0 &&
              v.port == u->port && same_path(v.path, u->path) && v.user == NULL &&
              v.password == NULL,
          "display form parses to another endpoint", url);
    vl__url_clear(&v);
}

static void check_parsed(const vl__url *u, const char *url)
{
    size_t i, n;

    check(u->scheme != NULL && u->scheme[0] != '\0' && u->host != NULL && u->display != NULL,
          "parsed URL lacks a part", url);
    for (i = 0; u->scheme[i] != '\0'; i++)
        check(!(u->scheme[i] >= 'A' && u->scheme[i] <= 'Z'), "scheme not lower case", url);
    check(u->port >= 0 && u->port <= 65535, "port out of range", url);
    n = strlen(u->scheme);
    check(strncmp(u->display, u->scheme, n) == 0 && strncmp(u->display + n, "://", 3) == 0,
          "display form does not start with the scheme", url);
    for (i = 0; i < u->nparams; i++)
        check(vl__url_param(u, u->keys[i]) != NULL, "a parsed key is not found", url);
    check_display(u, url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1), *masked, err[256], err2[256];
    vl__url u, m;
    int rc, rc2;
    long calls;
    size_t ps, pl, i;

    if (url == NULL)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    fz_alloc_reset(0);
    err[0] = '\0';
    rc = vl__url_parse(url, &u, err, sizeof(err));
    calls = fz_calls;
    check(rc == VL_OK || rc == VL_EINVAL, "status is neither VL_OK nor VL_EINVAL", url);
    check(rc == VL_OK || err[0] != '\0', "a failure without a message", url);
    if (rc == VL_OK)
        check_parsed(&u, url);

    /* Same URL, other password: nothing printable may change. */
    if (password_span(url, &ps, &pl) && memchr(url + ps, '%', pl) == NULL) {
        masked = strdup(url);
        if (masked != NULL) {
            for (i = 0; i < pl; i++)
                masked[ps + i] = masked[ps + i] == 'Z' ? 'Y' : 'Z';
            err2[0] = '\0';
            rc2 = vl__url_parse(masked, &m, err2, sizeof(err2));
            check(rc2 == rc, "the password changes the status", url);
            if (rc == VL_OK) {
                check(strcmp(m.display, u.display) == 0, "the password shows in the display form",
                      url);
                check(u.password != NULL && strlen(u.password) == pl &&
                          memcmp(u.password, url + ps, pl) == 0,
                      "the password is not the userinfo after its first ':'", url);
                vl__url_clear(&m);
            } else {
                check(strcmp(err, err2) == 0, "the password shows in the message", url);
            }
            free(masked);
        }
    }
    if (rc == VL_OK)
        vl__url_clear(&u);
    check(fz_live == 0, "the parse leaked", url);

    /* Fail one allocation of the ones the parse made, chosen by the input. */
    if (calls > 0) {
        unsigned long hsh = 5381;
        for (i = 0; i < size; i++)
            hsh = hsh * 33 + data[i];
        fz_alloc_reset((long)(hsh % (unsigned long)calls) + 1);
        rc2 = vl__url_parse(url, &m, err2, sizeof(err2));
        check(rc2 == VL_ENOMEM || rc2 == rc || (rc2 == VL_OK && fz_calls < fz_fail_at),
              "an allocation failure is not VL_ENOMEM", url);
        if (rc2 == VL_OK)
            vl__url_clear(&m);
        check(fz_live == 0, "an allocation failure leaked", url);
    }
    vl_allocator_set(NULL);
    free(url);
    return 0;
}
