/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_options.c - what a MySQL connection is told to do: the
 * vl_mysql_options struct and the endpoint URL, checked and turned into one
 * vl__mysql_config. Nothing here calls Connector/C, so every rule can be
 * tested without a server (tests/test_mysql_config.c).
 */
#include "mysql_internal.h"
#include "url.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- vl_mysql_options ---- */

static const size_t opts_ends[] = {
    VL__END(vl_mysql_options, struct_size),
    VL__END(vl_mysql_options, connect_timeout_ms),
    VL__END(vl_mysql_options, query_timeout_ms),
    VL__END(vl_mysql_options, read_timeout_ms),
    VL__END(vl_mysql_options, max_result_bytes),
    VL__END(vl_mysql_options, max_row_bytes),
    VL__END(vl_mysql_options, multi_statements),
    VL__END(vl_mysql_options, charset),
    VL__END(vl_mysql_options, init_sql),
};
/* No padding at the end: a field appended later must start past the end of
 * every older struct, never inside its padding. */
_Static_assert(sizeof(vl_mysql_options) == VL__END(vl_mysql_options, init_sql),
               "vl_mysql_options ends with padding");
static const vl__opts_desc opts_desc = {"vl_mysql_options", sizeof(vl_mysql_options), opts_ends,
                                        sizeof(opts_ends) / sizeof(opts_ends[0])};

static void opts_defaults(vl_mysql_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->connect_timeout_ms = 5000;
    o->read_timeout_ms = VL_MYSQL_DEFAULT_READ_TIMEOUT_MS;
    o->max_result_bytes = VL_MYSQL_DEFAULT_MAX_RESULT_BYTES;
    o->max_row_bytes = VL_MYSQL_DEFAULT_MAX_ROW_BYTES;
}

void vl_mysql_options_init_sized(vl_mysql_options *o, size_t struct_size)
{
    vl_mysql_options d;

    opts_defaults(&d);
    vl__opts_init(o, struct_size, &d, &opts_desc);
}

int vl__mysql_options_read(vl_mysql_options *dst, const vl_mysql_options *src, char *why,
                           size_t whyn)
{
    opts_defaults(dst);
    return vl__opts_copy(dst, src, &opts_desc, why, whyn);
}

/* ---- URL parameters ---- */

/* Every parameter a URL may carry. A name not listed fails the connection,
 * so a typo (ssl-ca for ssl-capath, say) is never silently ignored. */
static const char *const known_params[] = {
    "connect_timeout_ms", "query_timeout_ms", "read_timeout_ms", "max_result_bytes",
    "max_row_bytes", "multi_statements", "charset", "init_sql", "socket", "user", "password",
    "db", "track_gtid", "ssl-mode", "ssl-ca", "ssl-capath", "ssl-cert", "ssl-key",
    "ssl-verify-server-cert", "ssl-cipher", "tls-version", NULL};

static int param_known(const char *k)
{
    size_t i;

    for (i = 0; known_params[i] != NULL; i++)
        if (strcmp(k, known_params[i]) == 0)
            return 1;
    return 0;
}

/* A decimal count of milliseconds or bytes. 0 on success. */
static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* "1"/"true" and "0"/"false"; -1 for anything else. */
static int parse_flag(const char *s)
{
    if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
        return 1;
    if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0)
        return 0;
    return -1;
}

/* Records the reason a configuration is refused. Always returns `status`,
 * or VL_ENOMEM when the message could not be made. */
static int refuse(char **msg, int status, const char *fmt, const char *arg)
{
    *msg = vl__asprintf(fmt, arg);
    return *msg != NULL ? status : VL_ENOMEM;
}

/* Replaces *dst by a copy of v. VL_OK or VL_ENOMEM. */
static int set_str(char **dst, const char *v)
{
    char *copy = vl__strdup(v);

    if (copy == NULL)
        return VL_ENOMEM;
    vl__free(*dst);
    *dst = copy;
    return VL_OK;
}

/* 1 when `list` names only TLS versions Connector/C knows, comma-separated.
 * It looks for the names anywhere in the text and ignores the rest, so a
 * typo would otherwise leave every version allowed. */
static int tls_versions_known(const char *list)
{
    static const char *const names[] = {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
    const char *p = list;

    for (;;) {
        size_t n = strcspn(p, ","), i;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (n == strlen(names[i]) && strncmp(p, names[i], n) == 0)
                break;
        if (i == sizeof(names) / sizeof(names[0]))
            return 0;
        if (p[n] == '\0')
            return 1;
        p += n + 1;
    }
}

/* The ssl-* parameters: TLS on when any is given (ssl-mode=disabled aside),
 * verification on unless the URL turns it off in so many words. */
static int read_tls(vl__mysql_config *cfg, const vl__url *u, char **msg)
{
    static const char *const paths[] = {"ssl-ca", "ssl-capath", "ssl-cert", "ssl-key",
                                        "ssl-cipher", "tls-version"};
    char **fields[] = {&cfg->ssl_ca, &cfg->ssl_capath, &cfg->ssl_cert, &cfg->ssl_key,
                       &cfg->ssl_cipher, &cfg->tls_version};
    const char *v;
    size_t i;
    int any = 0;

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        if ((v = vl__url_param(u, paths[i])) == NULL)
            continue;
        if (v[0] == '\0')
            return refuse(msg, VL_EINVAL, "bad MySQL URL: %s is empty", paths[i]);
        if (set_str(fields[i], v) != VL_OK)
            return VL_ENOMEM;
        any = 1;
    }
    cfg->tls = any ? VL__MYSQL_TLS_VERIFY_IDENTITY : VL__MYSQL_TLS_OFF;
    if ((v = vl__url_param(u, "ssl-verify-server-cert")) != NULL) {
        int on = parse_flag(v);
        if (on < 0)
            return refuse(msg, VL_EINVAL,
                          "bad MySQL URL: ssl-verify-server-cert must be 0 or 1, not '%s'", v);
        cfg->tls = on ? VL__MYSQL_TLS_VERIFY_IDENTITY : VL__MYSQL_TLS_REQUIRED;
    }
    if ((v = vl__url_param(u, "ssl-mode")) != NULL) {
        if (strcmp(v, "disabled") == 0 || strcmp(v, "DISABLED") == 0)
            cfg->tls = VL__MYSQL_TLS_OFF;
        else if (strcmp(v, "required") == 0 || strcmp(v, "REQUIRED") == 0)
            cfg->tls = VL__MYSQL_TLS_REQUIRED;
        else if (strcmp(v, "verify-ca") == 0 || strcmp(v, "VERIFY_CA") == 0)
            cfg->tls = VL__MYSQL_TLS_VERIFY_CA;
        else if (strcmp(v, "verify-identity") == 0 || strcmp(v, "VERIFY_IDENTITY") == 0)
            cfg->tls = VL__MYSQL_TLS_VERIFY_IDENTITY;
        else if (strcmp(v, "preferred") == 0 || strcmp(v, "PREFERRED") == 0)
            return refuse(msg, VL_EINVAL,
                          "bad MySQL URL: ssl-mode=%s is not offered: it falls back to clear "
                          "text without a word; use required or verify-identity",
                          v);
        else
            return refuse(msg, VL_EINVAL,
                          "bad MySQL URL: ssl-mode must be disabled, required, verify-ca or "
                          "verify-identity, not '%s'",
                          v);
    }
    if (cfg->tls_version != NULL && !tls_versions_known(cfg->tls_version))
        return refuse(msg, VL_EINVAL,
                      "bad MySQL URL: tls-version must list TLSv1.0, TLSv1.1, TLSv1.2 or "
                      "TLSv1.3 (comma-separated), not '%s'",
                      cfg->tls_version);
    if (cfg->tls == VL__MYSQL_TLS_OFF && any)
        return refuse(msg, VL_EINVAL, "bad MySQL URL: %s with ssl-mode=disabled",
                      "ssl-* parameters");
    if ((cfg->ssl_cert == NULL) != (cfg->ssl_key == NULL))
        return refuse(msg, VL_EINVAL, "bad MySQL URL: %s", "ssl-cert and ssl-key go together");
    if (cfg->tls != VL__MYSQL_TLS_OFF && cfg->socket_path != NULL)
        return refuse(msg, VL_EINVAL, "bad MySQL URL: %s",
                      "TLS over a unix socket is not offered (the socket is local already)");
    /* Connector/C checks the chain without the name only against CAs it was
     * given: with the system's store it would check nothing at all. */
    if (cfg->tls == VL__MYSQL_TLS_VERIFY_CA && cfg->ssl_ca == NULL && cfg->ssl_capath == NULL)
        return refuse(msg, VL_EINVAL, "bad MySQL URL: %s",
                      "ssl-mode=verify-ca needs ssl-ca or ssl-capath (the CAs to check the "
                      "chain against); use verify-identity for the system's store");
    /* With TLS the host name goes to Connector/C as written, which would
     * read a comma as a list of hosts. */
    if (cfg->tls != VL__MYSQL_TLS_OFF && cfg->host != NULL && strchr(cfg->host, ',') != NULL)
        return refuse(msg, VL_EINVAL, "bad MySQL URL: %s", "a ',' in the host name");
    return VL_OK;
}

/* The parameters every scheme shares. */
static int read_params(vl__mysql_config *cfg, const vl__url *u, char **msg)
{
    static const char *const nums[] = {"connect_timeout_ms", "query_timeout_ms",
                                       "read_timeout_ms", "max_result_bytes", "max_row_bytes"};
    uint64_t *fields[] = {&cfg->connect_timeout_ms, &cfg->query_timeout_ms,
                          &cfg->read_timeout_ms, &cfg->max_result_bytes, &cfg->max_row_bytes};
    const char *v;
    size_t i;

    for (i = 0; i < u->nparams; i++)
        if (!param_known(u->keys[i])) {
            char *m = vl__asprintf("%s: unknown URL parameter '%s'", cfg->display, u->keys[i]);
            if (m == NULL)
                return VL_ENOMEM;
            *msg = m;
            return VL_EINVAL;
        }
    for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        if ((v = vl__url_param(u, nums[i])) != NULL && parse_u64(v, fields[i]) != 0)
            return refuse(msg, VL_EINVAL, "bad MySQL URL: %s", nums[i]);
    if ((v = vl__url_param(u, "multi_statements")) != NULL)
        cfg->multi = strcmp(v, "1") == 0 || strcmp(v, "true") == 0;
    if ((v = vl__url_param(u, "track_gtid")) != NULL) {
        int on = parse_flag(v);
        if (on < 0)
            return refuse(msg, VL_EINVAL, "bad MySQL URL: track_gtid must be 0 or 1, not '%s'",
                          v);
        cfg->track_gtid = on;
    }
    if ((v = vl__url_param(u, "charset")) != NULL && set_str(&cfg->charset, v) != VL_OK)
        return VL_ENOMEM;
    if ((v = vl__url_param(u, "init_sql")) != NULL && set_str(&cfg->init_sql, v) != VL_OK)
        return VL_ENOMEM;
    return VL_OK;
}

/* Where to connect and as whom: unix:// carries them as parameters,
 * mysql:// in the authority and path. */
static int read_endpoint(vl__mysql_config *cfg, vl__url *u, char **msg)
{
    static const char *const names[] = {"user", "password", "db"};
    char **fields[] = {&cfg->user, &cfg->password, &cfg->db};
    const char *v;
    size_t i;

    if (strcmp(u->scheme, "unix") == 0) {
        if (set_str(&cfg->socket_path, u->path != NULL ? u->path : "") != VL_OK)
            return VL_ENOMEM;
        for (i = 0; i < 3; i++)
            if ((v = vl__url_param(u, names[i])) != NULL && set_str(fields[i], v) != VL_OK)
                return VL_ENOMEM;
        return VL_OK;
    }
    if (set_str(&cfg->host, u->host != NULL ? u->host : "") != VL_OK)
        return VL_ENOMEM;
    cfg->port = u->port ? u->port : 3306;
    cfg->user = u->user;
    u->user = NULL;
    cfg->password = u->password;
    u->password = NULL;
    if (u->path != NULL && u->path[0] != '\0') {
        cfg->db = u->path;
        u->path = NULL;
    }
    if ((v = vl__url_param(u, "socket")) != NULL && set_str(&cfg->socket_path, v) != VL_OK)
        return VL_ENOMEM;
    if (cfg->host[0] == '\0' && cfg->socket_path == NULL)
        return refuse(msg, VL_EINVAL, "bad MySQL URL: %s", "no host");
    return VL_OK;
}

/* A failure before the URL could be read: the endpoint shows as
 * "mysql://?". */
static int failed_early(vl__mysql_config *cfg, char **msg, int status, const char *fmt,
                        const char *arg)
{
    if (set_str(&cfg->display, "mysql://?") != VL_OK)
        return VL_ENOMEM;
    return refuse(msg, status, fmt, arg);
}

int vl__mysql_config_parse(vl__mysql_config *cfg, const char *url, const vl_mysql_options *opts,
                           char **msg)
{
    vl__url u;
    char err[256];
    vl_mysql_options o;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    *msg = NULL;
    rc = vl__mysql_options_read(&o, opts, err, sizeof(err));
    if (rc != VL_OK)
        return failed_early(cfg, msg, rc, "%s", err);
    cfg->connect_timeout_ms = o.connect_timeout_ms;
    cfg->query_timeout_ms = o.query_timeout_ms;
    cfg->read_timeout_ms = o.read_timeout_ms;
    cfg->max_result_bytes = o.max_result_bytes;
    cfg->max_row_bytes = o.max_row_bytes;
    cfg->multi = o.multi_statements != 0;
    if (set_str(&cfg->charset, o.charset != NULL ? o.charset : "utf8mb4") != VL_OK ||
        (o.init_sql != NULL && set_str(&cfg->init_sql, o.init_sql) != VL_OK))
        return VL_ENOMEM;
    if (url == NULL)
        return failed_early(cfg, msg, VL_EINVAL, "%s", "no URL given");
    rc = vl__url_parse(url, &u, err, sizeof(err));
    if (rc != VL_OK)
        return rc == VL_ENOMEM ? VL_ENOMEM
                               : failed_early(cfg, msg, VL_EINVAL, "bad MySQL URL: %s", err);
    cfg->display = u.display;
    u.display = NULL;
    if (strcmp(u.scheme, "mysql") != 0 && strcmp(u.scheme, "mariadb") != 0 &&
        strcmp(u.scheme, "unix") != 0)
        rc = refuse(msg, VL_EINVAL, "bad MySQL URL: %s",
                    "scheme must be mysql:// or unix://");
    if (rc == VL_OK)
        rc = read_params(cfg, &u, msg);
    if (rc == VL_OK)
        rc = read_endpoint(cfg, &u, msg);
    if (rc == VL_OK)
        rc = read_tls(cfg, &u, msg);
    vl__url_clear(&u);
    return rc;
}

/* Overwrites a secret before its memory goes back to the allocator. */
static void free_secret(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
        vl__free(s);
    }
}

void vl__mysql_config_clear(vl__mysql_config *cfg)
{
    char **strs[] = {&cfg->display, &cfg->host,   &cfg->user,       &cfg->db,
                     &cfg->socket_path, &cfg->charset, &cfg->init_sql, &cfg->ssl_ca,
                     &cfg->ssl_capath, &cfg->ssl_cert, &cfg->ssl_key, &cfg->ssl_cipher,
                     &cfg->tls_version};
    size_t i;

    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        vl__free(*strs[i]);
        *strs[i] = NULL;
    }
    free_secret(cfg->password);
    cfg->password = NULL;
}
