/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/volley.c - run one Redis command or SQL query on many hosts at once.
 *
 *   volley -H 127.0.0.1:[7000-7005] INFO replication
 *   volley -H mysql://app@db1,mysql://app@db2 -e 'SELECT @@version'
 *   volley --cluster -H 127.0.0.1:7000 DBSIZE
 *
 * Hosts run in parallel (up to --concurrency); a host that does not answer
 * within --timeout is reported as a timeout and never holds up the others.
 * Exit status: 0 all ok, 1 a host replied with an error, 2 a host was
 * unreachable or timed out (or --cluster found no cluster at its seeds), 64
 * usage error. Passwords never reach the output.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define CLI_NAME "volley"

typedef struct cli {
    cli_hosts hosts;
    char **urls;         /* what the library gets */
    char **shown;        /* what we print: as typed, or the URL sans password */
    const char *sql;
    const char *user;
    const char *database;
    long concurrency;
    long connect_timeout_ms;
    long timeout_ms;
    int stream;
    int group;
    int json;
    int askpass;
    int tls;             /* --tls: bare host:port means rediss:// */
    const char *cacert, *cert, *key;
    int insecure;
    char password[512];
    int have_password;
    int is_mysql;
    int cluster;         /* --cluster: the hosts are seeds of a Redis Cluster */
    int primaries;       /* --primaries: its primaries only */
    size_t printed;      /* --stream: hosts printed so far */
} cli;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: " CLI_NAME " [OPTIONS] -H HOSTS COMMAND [ARG...]\n"
            "       " CLI_NAME " [OPTIONS] -H HOSTS -e SQL\n"
            "       " CLI_NAME " [OPTIONS] --cluster [--primaries] -H SEEDS COMMAND [ARG...]\n"
            "Run one Redis command or SQL query on many hosts at once.\n"
            "\n"
            "Hosts:\n"
            "  -H, --hosts LIST         comma-separated hosts (repeatable): URLs\n"
            "                           (redis://, mysql://, unix://) or host:port\n"
            "                           (Redis, or MySQL with -e); numeric ranges\n"
            "                           like 127.0.0.1:[7000-7005] or db[01-03]:3306\n"
            "  -f, --hosts-file FILE    one host list per line, '#' comments; - = stdin\n"
            "      --cluster            the hosts are seeds of a Redis Cluster (host:port\n"
            "                           or redis:// URLs; the first one's password is\n"
            "                           the cluster's): run the command on every node\n"
            "                           of it, each named host:port and bounded by\n"
            "                           --timeout\n"
            "      --primaries          with --cluster: on its primaries only\n"
            "Command:\n"
            "  COMMAND [ARG...]         a Redis command, sent as binary-safe argv\n"
            "  -e, --execute SQL        run SQL on MySQL/MariaDB hosts instead\n"
            "  -u, --user NAME          MySQL user for hosts given as host:port\n"
            "  -D, --database NAME      MySQL database for hosts given as host:port\n"
            "Timing:\n"
            "  -c, --concurrency N      hosts in flight at once (default 64)\n"
            "      --connect-timeout MS per-host connect timeout (default 5000)\n"
            "  -t, --timeout MS         per-host timeout, connect plus reply\n"
            "                           (default 10000); a late host is a 'timeout'\n"
            "Output (in host order unless --stream):\n"
            "      --stream             print each host as soon as it finishes\n"
            "  -g, --group              merge identical outputs under one host list\n"
            "      --json               one JSON object per host per line\n"
            "Passwords (never printed): in the URL (a ',' written as %%2C), or\n"
            "REDISCLI_AUTH (Redis), MYSQL_PWD (MySQL), or --askpass to be prompted\n"
            "without echo. Those last three are safer: a password on the command line\n"
            "stays in the shell's history, and other users can read it with ps until\n"
            "volley blots it out of its arguments at start-up.\n"
            "      --askpass            prompt for a password on the terminal\n"
            "TLS (Redis): rediss:// URLs, or --tls for hosts given as host:port;\n"
            "certificates are verified against the system CAs unless --cacert:\n"
            "      --tls                connect to host:port hosts over TLS\n"
            "      --cacert FILE        trusted CA certificates (PEM)\n"
            "      --cert FILE          client certificate (PEM); --key FILE its key\n"
            "      --insecure           do not verify certificates (prints a warning)\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Exit status: 0 all ok, 1 a host replied with an error, 2 a host was\n"
            "unreachable or timed out (or --cluster found no cluster), 64 usage error.\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, CLI_NAME ": ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return CLI_EXIT_USAGE;
}

static int parse_num(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int read_password(cli *c)
{
    FILE *tty = fopen("/dev/tty", "r+");
    struct termios old, quiet;
    size_t n;

    if (tty == NULL) {
        fprintf(stderr, CLI_NAME ": --askpass needs a terminal\n");
        return -1;
    }
    fputs("Password: ", tty);
    fflush(tty);
    if (tcgetattr(fileno(tty), &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(fileno(tty), TCSAFLUSH, &quiet);
    }
    if (fgets(c->password, sizeof(c->password), tty) == NULL)
        c->password[0] = '\0';
    tcsetattr(fileno(tty), TCSAFLUSH, &old);
    fputs("\n", tty);
    fclose(tty);
    n = strlen(c->password);
    while (n > 0 && (c->password[n - 1] == '\n' || c->password[n - 1] == '\r'))
        c->password[--n] = '\0';
    c->have_password = 1;
    return 0;
}

/* Percent-encodes `s` for the userinfo or path part of a URL. */
static void url_encode(char *dst, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t j = 0;

    for (; *s != '\0' && j + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            dst[j++] = (char)ch;
        } else {
            dst[j++] = '%';
            dst[j++] = hex[ch >> 4];
            dst[j++] = hex[ch & 15];
        }
    }
    dst[j] = '\0';
}

/* 1 when the query `q` ("?a=1&b=2", or NULL) has the parameter `eq` ("b="). */
static int has_param(const char *q, const char *eq)
{
    size_t n = strlen(eq);

    while (q != NULL) {
        if (strncmp(q + 1, eq, n) == 0)
            return 1;
        q = strchr(q + 1, '&');
    }
    return 0;
}

/* Adds the TLS options to a rediss:// URL that does not set them itself.
 * 0, or -1 when the URL would not fit. */
static int tls_params(cli *c, char *buf, size_t cap)
{
    const char *names[4] = {"cacert", "cert", "key", "insecure"};
    const char *vals[4];
    size_t k, n;

    vals[0] = c->cacert;
    vals[1] = c->cert;
    vals[2] = c->key;
    vals[3] = c->insecure ? "1" : NULL;
    for (k = 0; k < 4; k++) {
        char want[16], enc[3 * 1024];
        const char *q = strchr(buf, '?');
        if (vals[k] == NULL)
            continue;
        snprintf(want, sizeof(want), "%s=", names[k]);
        if (has_param(q, want))
            continue; /* the URL says it already */
        url_encode(enc, sizeof(enc), vals[k]);
        n = strlen(buf);
        if ((size_t)snprintf(buf + n, cap - n, "%c%s%s", q != NULL ? '&' : '?', want, enc) >=
            cap - n)
            return -1;
    }
    return 0;
}

/* Turns each typed host into a URL and decides the kind of the run. */
static int build_urls(cli *c)
{
    size_t i;
    int saw_redis = 0, saw_mysql = 0;

    c->urls = calloc(c->hosts.n, sizeof(char *));
    c->shown = calloc(c->hosts.n, sizeof(char *));
    if (c->urls == NULL || c->shown == NULL)
        return -1;
    for (i = 0; i < c->hosts.n; i++) {
        const char *h = c->hosts.v[i];
        char buf[4096];
        const char *sep = strstr(h, "://");

        if (sep != NULL) {
            size_t slen = (size_t)(sep - h);
            if ((slen == 5 && strncmp(h, "mysql", 5) == 0) ||
                (slen == 7 && strncmp(h, "mariadb", 7) == 0))
                saw_mysql = 1;
            else if ((slen == 5 && strncmp(h, "redis", 5) == 0) ||
                     (slen == 6 && strncmp(h, "rediss", 6) == 0))
                saw_redis = 1;
            else if (slen == 4 && strncmp(h, "unix", 4) == 0)
                *(c->sql != NULL ? &saw_mysql : &saw_redis) = 1;
            else {
                fprintf(stderr, CLI_NAME ": unknown URL scheme in host '%.*s://...'\n", (int)slen, h);
                return CLI_EXIT_USAGE;
            }
            snprintf(buf, sizeof(buf), "%s", h);
        } else if (c->sql != NULL) {
            char user[256] = "", db[256] = "";
            if (c->user != NULL)
                url_encode(user, sizeof(user), c->user);
            if (c->database != NULL)
                url_encode(db, sizeof(db), c->database);
            snprintf(buf, sizeof(buf), "mysql://%s%s%s%s%s", user, user[0] ? "@" : "", h,
                     db[0] ? "/" : "", db);
            saw_mysql = 1;
        } else {
            snprintf(buf, sizeof(buf), "%s://%s", c->tls ? "rediss" : "redis", h);
            saw_redis = 1;
        }
        if (strncmp(buf, "rediss://", 9) == 0 && tls_params(c, buf, sizeof(buf)) != 0) {
            fprintf(stderr, CLI_NAME ": host '%s' is too long\n", h);
            return CLI_EXIT_USAGE;
        }
        c->urls[i] = strdup(buf);
        /* A typed URL, or user:password@host, may hold a password: print
         * the library's display form for those. */
        c->shown[i] = sep != NULL || strchr(h, '@') != NULL ? NULL : strdup(h);
        if (c->urls[i] == NULL)
            return -1;
    }
    if (saw_redis && saw_mysql) {
        fprintf(stderr, CLI_NAME ": the host list mixes Redis and MySQL hosts; one command "
                        "runs on one kind (see --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (c->sql != NULL && saw_redis) {
        fprintf(stderr, CLI_NAME ": -e runs SQL, but the hosts are Redis (see --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (c->sql == NULL && saw_mysql) {
        fprintf(stderr, CLI_NAME ": MySQL hosts need -e SQL (see --help)\n");
        return CLI_EXIT_USAGE;
    }
    c->is_mysql = saw_mysql;
    return 0;
}

static const char *shown(const cli *c, const vl_fanout_result *r, size_t i)
{
    /* A cluster's nodes are the map's, not the hosts typed: no shown[]. */
    return c->shown != NULL && c->shown[i] != NULL ? c->shown[i] : vl_fanout_host(r, i);
}

static void print_host(cli *c, const vl_fanout_result *r, size_t i)
{
    char *text;

    if (c->json) {
        cli_render_json(stdout, r, i);
        return;
    }
    text = cli_render_text(r, i);
    if (text == NULL)
        return;
    /* Every line carries its host, like pdsh, so output can be grepped. */
    {
        const char *p = text;
        const char *h = shown(c, r, i);
        if (*p == '\0')
            printf("%s: \n", h);
        while (*p != '\0') {
            const char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p) : strlen(p);
            printf("%s: %.*s\n", h, (int)n, p);
            p += n + (nl ? 1 : 0);
        }
    }
    free(text);
}

static void on_host(const vl_fanout_result *r, size_t i, void *ud)
{
    cli *c = ud;

    if (c->stream) {
        print_host(c, r, i);
        fflush(stdout);
    }
}

/* One host's rendered output, sorted to find the hosts that print the same. */
typedef struct cli_text {
    char *text;
    size_t idx;
} cli_text;

static int cmp_text(const void *a, const void *b)
{
    const cli_text *x = a, *y = b;
    int c = strcmp(x->text, y->text);

    return c != 0 ? c : x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Prints each distinct output once, under the hosts that gave it, in the
 * order of each output's first host. Sorting makes this O(n log n): with
 * 65,000 hosts that all fail differently, comparing every pair is slow. */
static void print_groups(cli *c, const vl_fanout_result *r)
{
    size_t n = vl_fanout_count(r), i, j, k = 0, m;
    cli_text *t = calloc(n ? n : 1, sizeof(*t));
    size_t *first = calloc(n ? n : 1, sizeof(*first)); /* host -> its group in t[], or n */
    size_t *size = calloc(n ? n : 1, sizeof(*size));
    const char **members = calloc(n ? n : 1, sizeof(char *));

    if (t == NULL || first == NULL || size == NULL || members == NULL)
        goto out;
    for (i = 0; i < n; i++) {
        char *text = cli_render_text(r, i);
        first[i] = n;
        if (text != NULL) {
            t[k].text = text;
            t[k].idx = i;
            k++;
        }
    }
    qsort(t, k, sizeof(*t), cmp_text);
    for (i = 0; i < k; i = j) {
        for (j = i + 1; j < k && strcmp(t[i].text, t[j].text) == 0; j++)
            ;
        first[t[i].idx] = i;
        size[t[i].idx] = j - i;
    }
    for (i = 0; i < n; i++) {
        const char *text;
        char *list;
        if (first[i] == n)
            continue;
        text = t[first[i]].text;
        for (m = 0; m < size[i]; m++)
            members[m] = shown(c, r, t[first[i] + m].idx);
        list = cli_hosts_compress(members, size[i]);
        printf("----------------\n%s (%zu)\n----------------\n%s", list ? list : "?", size[i], text);
        if (text[0] == '\0' || text[strlen(text) - 1] != '\n')
            printf("\n");
        free(list);
    }
out:
    if (t != NULL)
        for (i = 0; i < k; i++)
            free(t[i].text);
    free(t);
    free(first);
    free(size);
    free(members);
}

/* "6 hosts: 4 ok, 1 error (h), 1 timeout (h)" on stderr; returns the exit code. */
static int summarize(cli *c, const vl_fanout_result *r)
{
    static const struct {
        const char *name;
        int kind;
    } cats[] = {{"error", 1}, {"timeout", 2}, {"connect", 3}};
    size_t n = vl_fanout_count(r), i, k, ok = 0, count[4] = {0};
    const char **members = calloc(n ? n : 1, sizeof(char *));
    int code = CLI_EXIT_OK;

    for (i = 0; i < n; i++) {
        int st = vl_fanout_status(r, i);
        int kind = st == VL_OK ? 0 : st == VL_ESERVER ? 1 : st == VL_ETIMEDOUT ? 2 : 3;
        count[kind]++;
    }
    ok = count[0];
    fprintf(stderr, "%zu host%s: %zu ok", n, n == 1 ? "" : "s", ok);
    for (k = 0; k < 3; k++) {
        size_t m = 0;
        char *list;
        if (count[cats[k].kind] == 0)
            continue;
        for (i = 0; i < n && members != NULL; i++) {
            int st = vl_fanout_status(r, i);
            int kind = st == VL_OK ? 0 : st == VL_ESERVER ? 1 : st == VL_ETIMEDOUT ? 2 : 3;
            if (kind == cats[k].kind)
                members[m++] = shown(c, r, i);
        }
        list = members != NULL ? cli_hosts_compress(members, m) : NULL;
        fprintf(stderr, ", %zu %s (%s)", count[cats[k].kind], cats[k].name, list ? list : "?");
        free(list);
    }
    fprintf(stderr, "\n");
    free(members);
    if (count[1] > 0)
        code = CLI_EXIT_SERVER_ERROR;
    if (count[2] + count[3] > 0)
        code = CLI_EXIT_UNREACHABLE;
    return code;
}

static void cli_free(cli *c)
{
    size_t i;

    for (i = 0; i < c->hosts.n; i++) {
        if (c->urls != NULL)
            free(c->urls[i]);
        if (c->shown != NULL)
            free(c->shown[i]);
    }
    free(c->urls);
    free(c->shown);
    cli_hosts_free(&c->hosts);
    memset(c->password, 0, sizeof(c->password));
}

/* Reads the command line into c. Returns -1 to go on, or the exit status
 * once the message is printed (c is freed then). */
static int parse_args(cli *c, int argc, char **argv)
{
    enum { OPT_CONNECT_TIMEOUT = 1000, OPT_STREAM, OPT_JSON, OPT_ASKPASS, OPT_TLS, OPT_CACERT,
           OPT_CERT, OPT_KEY, OPT_INSECURE, OPT_CLUSTER, OPT_PRIMARIES };
    static const struct option longopts[] = {
        {"hosts", required_argument, NULL, 'H'},
        {"hosts-file", required_argument, NULL, 'f'},
        {"execute", required_argument, NULL, 'e'},
        {"user", required_argument, NULL, 'u'},
        {"database", required_argument, NULL, 'D'},
        {"concurrency", required_argument, NULL, 'c'},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"timeout", required_argument, NULL, 't'},
        {"stream", no_argument, NULL, OPT_STREAM},
        {"group", no_argument, NULL, 'g'},
        {"json", no_argument, NULL, OPT_JSON},
        {"askpass", no_argument, NULL, OPT_ASKPASS},
        {"tls", no_argument, NULL, OPT_TLS},
        {"cacert", required_argument, NULL, OPT_CACERT},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"cluster", no_argument, NULL, OPT_CLUSTER},
        {"primaries", no_argument, NULL, OPT_PRIMARIES},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char err[512];
    int opt, rc;

    memset(c, 0, sizeof(*c));
    c->concurrency = 64;
    c->connect_timeout_ms = 5000;
    c->timeout_ms = 10000;
    opterr = 0;
    /* '+': stop at the first non-option, so command arguments like "-1" or
     * "--foo" pass through to Redis unchanged. */
    while ((opt = getopt_long(argc, argv, "+H:f:e:u:D:c:t:gVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'H':
            rc = cli_hosts_add_list(&c->hosts, optarg, err, sizeof(err));
            /* The list is copied now: blot its passwords out of argv, where
             * ps and /proc/PID/cmdline show them to every local user. The
             * environment and --askpass never expose them like this. */
            cli_hosts_scrub(optarg);
            if (rc != 0) {
                cli_free(c);
                return usage_error("%s", err);
            }
            break;
        case 'f':
            if (cli_hosts_add_file(&c->hosts, optarg, err, sizeof(err)) != 0) {
                cli_free(c);
                return usage_error("%s", err);
            }
            break;
        case 'e':
            c->sql = optarg;
            break;
        case 'u':
            c->user = optarg;
            break;
        case 'D':
            c->database = optarg;
            break;
        case 'c':
            if (parse_num(optarg, 1, 100000, &c->concurrency) != 0)
                return cli_free(c), usage_error("bad --concurrency '%s' (1-100000)", optarg);
            break;
        case OPT_CONNECT_TIMEOUT:
            if (parse_num(optarg, 1, 86400000, &c->connect_timeout_ms) != 0)
                return cli_free(c), usage_error("bad --connect-timeout '%s' (ms)", optarg);
            break;
        case 't':
            if (parse_num(optarg, 1, 86400000, &c->timeout_ms) != 0)
                return cli_free(c), usage_error("bad --timeout '%s' (ms)", optarg);
            break;
        case OPT_STREAM:
            c->stream = 1;
            break;
        case 'g':
            c->group = 1;
            break;
        case OPT_JSON:
            c->json = 1;
            break;
        case OPT_ASKPASS:
            c->askpass = 1;
            break;
        case OPT_TLS:
            c->tls = 1;
            break;
        case OPT_CACERT:
            c->cacert = optarg;
            break;
        case OPT_CERT:
            c->cert = optarg;
            break;
        case OPT_KEY:
            c->key = optarg;
            break;
        case OPT_INSECURE:
            c->insecure = 1;
            break;
        case OPT_CLUSTER:
            c->cluster = 1;
            break;
        case OPT_PRIMARIES:
            c->primaries = 1;
            break;
        case 'V':
            printf(CLI_NAME " %s (libvolley %s)\n", VL_VERSION_STRING, vl_version());
            cli_free(c);
            return CLI_EXIT_OK;
        case 'h':
            usage(stdout);
            cli_free(c);
            return CLI_EXIT_OK;
        default:
            cli_free(c);
            if (optopt != 0 && optopt < 1000)
                snprintf(err, sizeof(err), "-%c", optopt);
            else /* "--name=value": the value could be a secret. */
                snprintf(err, sizeof(err), "%.*s", (int)strcspn(argv[optind - 1], "="),
                         argv[optind - 1]);
            return usage_error(opt == ':' || (optopt && strchr("HfeuDct", optopt))
                                   ? "option '%s' needs a value"
                                   : "unknown option '%s'",
                               err);
        }
    }
    if (c->hosts.n == 0)
        return cli_free(c), usage_error("%s", "no hosts: give -H LIST or -f FILE");
    if (c->sql == NULL && optind >= argc)
        return cli_free(c), usage_error("%s", "no command: give a Redis command or -e SQL");
    if (c->sql != NULL && optind < argc)
        return cli_free(c), usage_error("unexpected argument '%s' after -e SQL", argv[optind]);
    if (c->sql != NULL && c->sql[0] == '\0')
        return cli_free(c), usage_error("%s", "empty SQL");
    if (c->group && c->json)
        return cli_free(c), usage_error("%s", "--group and --json do not mix");
    if (c->primaries && !c->cluster)
        return cli_free(c), usage_error("%s", "--primaries needs --cluster");
    if (c->cluster && c->sql != NULL)
        return cli_free(c), usage_error("%s", "--cluster runs a Redis command, not -e SQL");
    if (c->cluster && c->stream)
        return cli_free(c), usage_error("%s", "--stream does not apply to --cluster: its "
                                              "nodes are printed once all have answered");
    return -1;
}

/* Says on stderr when some TLS host will not verify its server. */
static void warn_insecure(const cli *c)
{
    for (size_t h = 0; h < c->hosts.n; h++) {
        const char *q = strchr(c->urls[h], '?');
        if (strncmp(c->urls[h], "rediss://", 9) == 0 && has_param(q, "insecure=1")) {
            fprintf(stderr, CLI_NAME ": warning: TLS certificates are not verified (insecure): "
                            "anyone on the path can read and change the traffic\n");
            return;
        }
    }
}

/* Prints every host's outcome (unless --stream did) and the summary;
 * returns the exit status. */
static int print_result(cli *c, const vl_fanout_result *r)
{
    size_t i;

    if (!c->stream) {
        if (c->group)
            print_groups(c, r);
        else
            for (i = 0; i < vl_fanout_count(r); i++)
                print_host(c, r, i);
    }
    fflush(stdout);
    return summarize(c, r);
}

/* Appends `s` to buf (cap bytes); -1 when it does not fit. */
static int append(char *buf, size_t cap, const char *s)
{
    size_t n = strlen(buf);

    return (size_t)snprintf(buf + n, cap - n, "%s", s) >= cap - n ? -1 : 0;
}

/* Where the host part of a seed is: past "scheme://" and the last '@'
 * before any query (a password may hold '@' or '/'), up to the path or
 * query. */
static const char *seed_host(const char *h, size_t *len)
{
    const char *sep = strstr(h, "://");
    const char *p = sep != NULL ? sep + 3 : h, *q = p + strcspn(p, "?"), *at = NULL, *s;

    for (s = p; s < q; s++)
        if (*s == '@')
            at = s;
    p = at != NULL ? at + 1 : p;
    *len = strcspn(p, "/?");
    return p;
}

/* The URL of the cluster from the seeds (-H): redis:// or rediss:// URLs
 * (or their +cluster forms) or host:port seeds, joined into one
 * redis+cluster:// URL (rediss+cluster:// for rediss:// or --tls). The
 * first seed's user, password, path and parameters are the cluster's; of
 * the others only the host:port counts (a range such as
 * redis://:pw@h:[7000-7002] expands into seeds that all carry them). The
 * password of REDISCLI_AUTH or --askpass goes in when the URL has none.
 * `seeds` gets the host:port list, which may be printed. Returns 0, or an
 * exit status once the message is printed. */
static int cluster_url(cli *c, char *buf, size_t cap, char *seeds, size_t seedcap)
{
    static const struct {
        const char *typed, *cluster;
    } schemes[] = {{"redis", "redis+cluster"},
                   {"rediss", "rediss+cluster"},
                   {"redis+cluster", "redis+cluster"},
                   {"rediss+cluster", "rediss+cluster"}};
    const char *first = c->hosts.v[0], *host, *post = "";
    char userinfo[1024] = "", enc[3 * sizeof(c->password) + 1];
    const char *scheme = c->tls ? "rediss+cluster" : "redis+cluster";
    size_t i, k, len;
    int rc = CLI_EXIT_USAGE;

    buf[0] = seeds[0] = '\0';
    for (i = 0; i < c->hosts.n; i++) {
        const char *h = c->hosts.v[i], *sep = strstr(h, "://");

        if (sep == NULL)
            continue;
        for (k = 0; k < sizeof(schemes) / sizeof(schemes[0]); k++)
            if (strlen(schemes[k].typed) == (size_t)(sep - h) &&
                strncmp(h, schemes[k].typed, (size_t)(sep - h)) == 0)
                break;
        if (k == sizeof(schemes) / sizeof(schemes[0])) {
            fprintf(stderr, CLI_NAME ": --cluster needs redis:// or rediss:// seeds, not "
                            "'%.*s://...'\n", (int)(sep - h), h);
            return CLI_EXIT_USAGE;
        }
        if (i == 0)
            scheme = schemes[k].cluster;
    }
    host = seed_host(first, &len);
    {
        const char *p = strstr(first, "://") != NULL ? strstr(first, "://") + 3 : first;

        if (host > p) /* "user:password@" */
            snprintf(userinfo, sizeof(userinfo), "%.*s", (int)(host - p), p);
        post = host + len;
    }
    if (c->have_password && strchr(userinfo, ':') == NULL) {
        /* [user]@ becomes [user]:password@. */
        size_t u = strlen(userinfo);

        if (u > 0)
            userinfo[--u] = '\0';
        url_encode(enc, sizeof(enc), c->password);
        if ((size_t)snprintf(userinfo + u, sizeof(userinfo) - u, ":%s@", enc) >=
            sizeof(userinfo) - u)
            goto out;
    }
    if ((size_t)snprintf(buf, cap, "%s://%s", scheme, userinfo) >= cap)
        goto out;
    for (i = 0; i < c->hosts.n; i++) {
        char one[512];

        host = seed_host(c->hosts.v[i], &len);
        if (len == 0 || len >= sizeof(one)) {
            fprintf(stderr, CLI_NAME ": seed %zu has no host:port\n", i + 1);
            goto out;
        }
        snprintf(one, sizeof(one), "%s%.*s", i > 0 ? "," : "", (int)len, host);
        if (append(buf, cap, one) != 0 || append(seeds, seedcap, one) != 0)
            goto too_long;
    }
    if (append(buf, cap, post) != 0)
        goto too_long;
    if (strncmp(buf, "rediss+cluster://", 17) == 0 && tls_params(c, buf, cap) != 0)
        goto too_long;
    rc = 0;
    goto out;
too_long:
    fprintf(stderr, CLI_NAME ": the cluster's seeds are too long\n");
out:
    memset(userinfo, 0, sizeof(userinfo));
    memset(enc, 0, sizeof(enc));
    if (rc != 0)
        memset(buf, 0, cap);
    return rc;
}

/* After a discovery that found no cluster: asks each seed for INFO cluster,
 * to tell a seed that is no cluster node (cluster_enabled:0) from one that
 * is unreachable. Prints a line for each such seed; returns how many. */
static size_t say_not_cluster_nodes(cli *c, vl_loop *loop)
{
    const char *argv[2] = {"INFO", "cluster"};
    vl_fanout_options fo;
    const vl_fanout_result *r;
    vl_future *f;
    size_t i, n = 0;

    /* Seeds given as +cluster URLs are no plain Redis hosts to ask. */
    for (i = 0; i < c->hosts.n; i++)
        if (strstr(c->hosts.v[i], "+cluster://") != NULL)
            return 0;
    if (build_urls(c) != 0)
        return 0;
    vl_fanout_options_init(&fo);
    fo.connect_timeout_ms = (uint64_t)c->connect_timeout_ms;
    fo.timeout_ms = (uint64_t)c->timeout_ms;
    fo.password = c->have_password ? c->password : NULL;
    f = vl_fanout_redis(loop, (const char *const *)c->urls, c->hosts.n, 2, argv, NULL, &fo);
    if (f != NULL && vl_loop_run_until(loop, f) == VL_OK) {
        r = vl_future_fanout(f);
        for (i = 0; i < vl_fanout_count(r); i++) {
            const char *info = vl_fanout_status(r, i) == VL_OK
                                   ? vl_redis_reply_str(vl_fanout_redis_reply(r, i), NULL)
                                   : NULL;

            if (info != NULL && strstr(info, "cluster_enabled:0") != NULL) {
                fprintf(stderr, CLI_NAME ": %s is not a Redis Cluster node (its INFO says "
                                "cluster_enabled:0)\n", shown(c, r, i));
                n++;
            }
        }
    }
    vl_future_free(f);
    return n;
}

/* --cluster: discovers the cluster from its seeds (within --connect-timeout
 * plus --timeout), then runs the command on every node of its map, or every
 * primary, through the library's cluster fan-out: each node bounded by
 * --timeout, one line per node named host:port. */
static int run_cluster(cli *c, vl_loop *loop, int argc, char **argv)
{
    char url[8192], seeds[1024];
    vl_redis_cluster_options o;
    vl_redis_cluster *cl;
    vl_future *f;
    int rc, code;

    code = cluster_url(c, url, sizeof(url), seeds, sizeof(seeds));
    if (code != 0)
        return code;
    vl_redis_cluster_options_init(&o);
    o.connect_timeout_ms = (uint64_t)c->connect_timeout_ms;
    o.command_timeout_ms = (uint64_t)c->timeout_ms;
    o.acquire_timeout_ms = (uint64_t)c->timeout_ms;
    o.refresh_timeout_ms = (uint64_t)(c->connect_timeout_ms + c->timeout_ms);
    o.refresh_interval_ms = 0; /* one run: the map found at the start is the one used */
    cl = vl_redis_cluster_new(loop, url, &o);
    memset(url, 0, sizeof(url));
    if (cl == NULL) {
        fprintf(stderr, CLI_NAME ": out of memory\n");
        return CLI_EXIT_UNREACHABLE;
    }
    f = vl_future_timeout(vl_redis_cluster_ready(cl),
                          (uint64_t)(c->connect_timeout_ms + c->timeout_ms));
    rc = f != NULL ? vl_loop_run_until(loop, f) : VL_ENOMEM;
    if (rc != VL_OK && vl_redis_cluster_nodes(cl) == 0) {
        /* No map: a bad URL is a usage error; unreachable seeds, and seeds
         * that are no cluster nodes, leave no cluster to run on. */
        fprintf(stderr, CLI_NAME ": no Redis Cluster found at %s: %s\n", seeds,
                f != NULL ? vl_future_error(f) : "out of memory");
        code = rc == VL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_UNREACHABLE;
        vl_future_free(f);
        vl_redis_cluster_free(cl);
        if (code == CLI_EXIT_UNREACHABLE)
            say_not_cluster_nodes(c, loop);
        return code;
    }
    if (rc != VL_OK) /* a map, but not every primary is up: those fail alone below */
        fprintf(stderr, CLI_NAME ": warning: the cluster is not all up: %s\n",
                vl_future_error(f));
    vl_future_free(f);
    f = vl_redis_cluster_each(cl, c->primaries ? VL_REDIS_CLUSTER_PRIMARIES
                                               : VL_REDIS_CLUSTER_NODES,
                              argc, (const char **)argv, NULL);
    rc = f != NULL ? vl_loop_run_until(loop, f) : VL_ENOMEM;
    if (rc != VL_OK) {
        fprintf(stderr, CLI_NAME ": %s\n", f != NULL ? vl_future_error(f) : "out of memory");
        code = rc == VL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_UNREACHABLE;
    } else {
        code = print_result(c, vl_future_fanout(f));
    }
    vl_future_free(f);
    vl_redis_cluster_free(cl);
    return code;
}

int main(int argc, char **argv)
{
    cli c;
    int rc;
    vl_loop *loop;
    vl_future *f;
    vl_fanout_options fo;
    const vl_fanout_result *r;

    rc = parse_args(&c, argc, argv);
    if (rc >= 0)
        return rc;
    if (c.cluster) {
        if (c.askpass && read_password(&c) != 0)
            return cli_free(&c), CLI_EXIT_USAGE;
        if (!c.have_password) {
            const char *env = getenv("REDISCLI_AUTH");
            if (env != NULL && env[0] != '\0') {
                snprintf(c.password, sizeof(c.password), "%s", env);
                c.have_password = 1;
            }
        }
        if (c.insecure)
            fprintf(stderr, CLI_NAME ": warning: TLS certificates are not verified (insecure): "
                            "anyone on the path can read and change the traffic\n");
        loop = vl_loop_new();
        if (loop == NULL) {
            fprintf(stderr, CLI_NAME ": cannot make an event loop\n");
            cli_free(&c);
            return CLI_EXIT_UNREACHABLE;
        }
        rc = run_cluster(&c, loop, argc - optind, argv + optind);
        vl_loop_free(loop);
        cli_free(&c);
        return rc;
    }
    rc = build_urls(&c);
    if (rc != 0) {
        cli_free(&c);
        if (rc < 0) {
            fprintf(stderr, CLI_NAME ": out of memory\n");
            return CLI_EXIT_UNREACHABLE;
        }
        return rc;
    }
    warn_insecure(&c);
    if (c.askpass && read_password(&c) != 0)
        return cli_free(&c), CLI_EXIT_USAGE;
    if (!c.have_password) {
        const char *env = getenv(c.is_mysql ? "MYSQL_PWD" : "REDISCLI_AUTH");
        if (env != NULL && env[0] != '\0') {
            snprintf(c.password, sizeof(c.password), "%s", env);
            c.have_password = 1;
        }
    }

    loop = vl_loop_new();
    if (loop == NULL) {
        fprintf(stderr, CLI_NAME ": cannot make an event loop\n");
        cli_free(&c);
        return CLI_EXIT_UNREACHABLE;
    }
    vl_fanout_options_init(&fo);
    fo.connect_timeout_ms = (uint64_t)c.connect_timeout_ms;
    fo.timeout_ms = (uint64_t)c.timeout_ms;
    fo.concurrency = (size_t)c.concurrency;
    fo.password = c.have_password ? c.password : NULL;
    fo.on_host = on_host;
    fo.ud = &c;
    if (c.is_mysql)
        f = vl_fanout_mysql(loop, (const char *const *)c.urls, c.hosts.n, c.sql, &fo);
    else
        f = vl_fanout_redis(loop, (const char *const *)c.urls, c.hosts.n, argc - optind,
                            (const char *const *)argv + optind, NULL, &fo);
    rc = f != NULL ? vl_loop_run_until(loop, f) : VL_ENOMEM;
    if (rc != VL_OK) {
        fprintf(stderr, CLI_NAME ": %s\n", f ? vl_future_error(f) : "out of memory");
        vl_future_free(f);
        vl_loop_free(loop);
        cli_free(&c);
        return rc == VL_EINVAL ? CLI_EXIT_USAGE : CLI_EXIT_UNREACHABLE;
    }
    r = vl_future_fanout(f);
    rc = print_result(&c, r);
    vl_future_free(f);
    vl_loop_free(loop);
    cli_free(&c);
    return rc;
}
