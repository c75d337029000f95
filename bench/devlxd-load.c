/* devlxd-load: HTTP/1.1 keep-alive load over a unix socket.
 *
 *   devlxd-load [-c CLIENTS] [-d SECONDS] [-n REQUESTS] [-i INTERVAL_MS] [-p PATH]
 *               [-t TIMEOUT_MS] SOCKET
 *
 * CLIENTS connections (default 1), each its own thread, each sending
 * "GET PATH HTTP/1.1\r\nHost: lxd\r\n\r\n" (PATH default /1.0) and reading the whole
 * response (Content-Length or chunked) before the next request, until SECONDS
 * (default 3) have passed, REQUESTS requests were made in all, or SIGTERM/SIGINT came (the
 * numbers so far are then printed). -i: a latency probe instead of a flood, each client waits
 * INTERVAL_MS between requests. Built static so it can be copied into any container.
 *
 * Prints one line:
 *   clients=C requests=N errors=E seconds=S rps=R p50_us=X p99_us=Y max_us=Z
 * Errors are counted, never tolerated silently: a connect or I/O error, a response that is
 * not "HTTP/1.x 200", a closed connection, or a request not answered within TIMEOUT_MS
 * (default 2000) each count one; the connection is then re-opened. The first error's text
 * goes to stderr. Exit status: 0 with no errors, 1 with errors, 2 bad usage,
 * 3 nothing answered at all.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *sock_path;
static const char *req_path = "/1.0";
static double duration = 3.0;
static long max_requests = 0;
static int timeout_ms = 2000;
static int interval_ms = 0;
static volatile sig_atomic_t stop_now;
static atomic_long issued;
static atomic_int first_error_printed;
static uint64_t deadline_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct worker {
    pthread_t thread;
    uint32_t *lat_us; /* one per completed request */
    size_t n, cap;
    long errors;
};

static void report_error(const char *what)
{
    if (atomic_exchange(&first_error_printed, 1) == 0)
        fprintf(stderr, "devlxd-load: first error: %s\n", what);
}

static int connect_sock(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof sa.sun_path)
        return -1;
    strcpy(sa.sun_path, sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Read more bytes into buf[*len..cap); 1 = got some, 0 = EOF, -1 = error/timeout. */
static int fill(int fd, char *buf, size_t *len, size_t cap, const char **why)
{
    if (*len >= cap) {
        *why = "response too large";
        return -1;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, timeout_ms);
    if (r == 0) {
        *why = "timeout waiting for a response";
        return -1;
    }
    if (r < 0) {
        *why = strerror(errno);
        return -1;
    }
    ssize_t k = read(fd, buf + *len, cap - *len);
    if (k < 0) {
        *why = strerror(errno);
        return -1;
    }
    if (k == 0) {
        *why = "connection closed by the server";
        return 0;
    }
    *len += (size_t)k;
    buf[*len] = '\0'; /* callers pass cap = sizeof buf - 1 */
    return 1;
}

/* One request/response. Returns 0 on success; on failure sets *why. */
static int one_request(int fd, const char *req, size_t reqlen, const char **why)
{
    size_t off = 0;
    while (off < reqlen) {
        ssize_t k = write(fd, req + off, reqlen - off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            *why = strerror(errno);
            return -1;
        }
        off += (size_t)k;
    }
    char buf[65536];
    size_t len = 0;
    char *hdr_end = NULL;
    while (!(hdr_end = memmem(buf, len, "\r\n\r\n", 4)))
        if (fill(fd, buf, &len, sizeof buf - 1, why) <= 0)
            return -1;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0) {
        *why = "not an HTTP/1.x response";
        return -1;
    }
    if (strncmp(buf + 9, "200", 3) != 0) {
        static char msg[64];
        snprintf(msg, sizeof msg, "status %.3s", buf + 9);
        *why = msg;
        return -1;
    }
    size_t body_start = (size_t)(hdr_end + 4 - buf);
    long clen = -1;
    int chunked = 0;
    for (char *l = strstr(buf, "\r\n") + 2; l < hdr_end; l = strstr(l, "\r\n") + 2) {
        if (strncasecmp(l, "Content-Length:", 15) == 0)
            clen = strtol(l + 15, NULL, 10);
        else if (strncasecmp(l, "Transfer-Encoding:", 18) == 0 && strcasestr(l, "chunked") &&
                 strcasestr(l, "chunked") < strstr(l, "\r\n"))
            chunked = 1;
    }
    if (clen >= 0) {
        while (len - body_start < (size_t)clen)
            if (fill(fd, buf, &len, sizeof buf - 1, why) <= 0)
                return -1;
        if (len - body_start != (size_t)clen) {
            *why = "extra bytes after the body (pipelining not expected)";
            return -1;
        }
        return 0;
    }
    if (chunked) {
        size_t pos = body_start;
        for (;;) {
            char *eol;
            while (!(eol = memmem(buf + pos, len - pos, "\r\n", 2)))
                if (fill(fd, buf, &len, sizeof buf - 1, why) <= 0)
                    return -1;
            long sz = strtol(buf + pos, NULL, 16);
            pos = (size_t)(eol + 2 - buf);
            while (len - pos < (size_t)sz + 2)
                if (fill(fd, buf, &len, sizeof buf - 1, why) <= 0)
                    return -1;
            pos += (size_t)sz + 2;
            if (sz == 0)
                return 0;
        }
    }
    *why = "response has neither Content-Length nor chunked body";
    return -1;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    char req[512];
    int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: lxd\r\n\r\n", req_path);
    int fd = -1;
    for (;;) {
        if (stop_now || now_ns() >= deadline_ns)
            break;
        if (max_requests && atomic_fetch_add(&issued, 1) >= max_requests)
            break;
        const char *why = NULL;
        if (fd < 0) {
            fd = connect_sock();
            if (fd < 0) {
                w->errors++;
                report_error(strerror(errno));
                usleep(10000);
                continue;
            }
        }
        uint64_t t0 = now_ns();
        if (one_request(fd, req, (size_t)reqlen, &why) < 0) {
            w->errors++;
            report_error(why);
            close(fd);
            fd = -1;
            continue;
        }
        uint64_t us = (now_ns() - t0) / 1000;
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat_us = realloc(w->lat_us, w->cap * sizeof *w->lat_us);
            if (!w->lat_us) {
                perror("devlxd-load: realloc");
                exit(2);
            }
        }
        w->lat_us[w->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        if (interval_ms)
            usleep((useconds_t)interval_ms * 1000);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void on_stop(int sig)
{
    (void)sig;
    stop_now = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: devlxd-load [-c CLIENTS] [-d SECONDS] [-n REQUESTS] [-i INTERVAL_MS] "
                    "[-p PATH] [-t TIMEOUT_MS] SOCKET\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int clients = 1, opt;
    while ((opt = getopt(argc, argv, "c:d:n:i:p:t:h")) != -1) {
        switch (opt) {
        case 'c': clients = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'n': max_requests = atol(optarg); break;
        case 'i': interval_ms = atoi(optarg); break;
        case 'p': req_path = optarg; break;
        case 't': timeout_ms = atoi(optarg); break;
        default: usage();
        }
    }
    if (optind != argc - 1 || clients < 1 || clients > 4096 || duration <= 0 || timeout_ms < 1 ||
        interval_ms < 0)
        usage();
    sock_path = argv[optind];
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct worker *w = calloc((size_t)clients, sizeof *w);
    if (!w) {
        perror("devlxd-load: calloc");
        return 2;
    }
    uint64_t t0 = now_ns();
    deadline_ns = t0 + (uint64_t)(duration * 1e9);
    for (int i = 0; i < clients; i++)
        if (pthread_create(&w[i].thread, NULL, run, &w[i]) != 0) {
            perror("devlxd-load: pthread_create");
            return 2;
        }
    for (int i = 0; i < clients; i++)
        pthread_join(w[i].thread, NULL);
    double secs = (double)(now_ns() - t0) / 1e9;

    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < clients; i++) {
        total += w[i].n;
        errors += w[i].errors;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < clients; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof *all);
        k += w[i].n;
    }
    qsort(all, total, sizeof *all, cmp_u32);
    uint32_t p50 = total ? all[(total - 1) * 50 / 100] : 0;
    uint32_t p99 = total ? all[(total - 1) * 99 / 100] : 0;
    uint32_t mx = total ? all[total - 1] : 0;
    printf("clients=%d requests=%zu errors=%ld seconds=%.3f rps=%.0f p50_us=%u p99_us=%u "
           "max_us=%u\n",
           clients, total, errors, secs, (double)total / secs, p50, p99, mx);
    if (total == 0)
        return 3;
    return errors ? 1 : 0;
}
