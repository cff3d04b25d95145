/*
 * util.c - the shared helpers declared in util.h. Nothing here allocates on a
 * hot path; the histogram is updated with relaxed atomics because exactness of
 * a single bucket under contention matters less than never taking a lock on
 * the request path.
 */
#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ethermem.h"

int em_log_threshold = EM_LOG_INFO;

void em_log(enum em_log_level lvl, const char *fmt, ...)
{
	static const char *names[] = { "error", "warn", "info", "debug" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if ((int)lvl > __atomic_load_n(&em_log_threshold, __ATOMIC_RELAXED))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
		     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
		     names[lvl]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	line[n++] = '\n';
	/* One write per line so lines from several threads never interleave. */
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
}

int em_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;
	uint64_t mult = 1;

	if (!s || !out || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case 0:
		break;
	case 'K':
		mult = 1ull << 10;
		end++;
		break;
	case 'M':
		mult = 1ull << 20;
		end++;
		break;
	case 'G':
		mult = 1ull << 30;
		end++;
		break;
	case 'T':
		mult = 1ull << 40;
		end++;
		break;
	case 'P':
		mult = 1ull << 50;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		return -EINVAL;
	if (v * (double)mult >= 18446744073709551615.0)
		return -EINVAL;
	*out = (uint64_t)(v * (double)mult);
	return 0;
}

int em_parse_addr(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *p = s, *colon;
	size_t hl;
	char *end;
	unsigned long v;

	if (!strncmp(p, "tcp://", 6))
		p += 6;
	else if (strstr(p, "://"))
		return -EPROTONOSUPPORT;
	if (*p == '[') {
		const char *rb = strchr(p, ']');
		if (!rb || rb[1] != ':')
			return -EINVAL;
		hl = (size_t)(rb - p - 1);
		colon = rb + 1;
		p++;
	} else {
		colon = strrchr(p, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - p);
	}
	if (hl == 0 || hl >= hostlen)
		return -EINVAL;
	memcpy(host, p, hl);
	host[hl] = 0;
	errno = 0;
	v = strtoul(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int em_read_small_file(const char *path, void *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got < cap) {
		ssize_t n = read(fd, (char *)buf + got, cap - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			n = -errno;
			close(fd);
			return (int)n;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	return (int)got;
}

int em_send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int em_recv_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_WAITALL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

ssize_t em_recv_spin(int fd, void *buf, size_t len, struct em_spin *s)
{
	for (;;) {
		ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);

		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		if (!em_spin_again(s, em_now_ns()))
			return -EAGAIN;
	}
}

int em_pressure_total(int fd, uint64_t *stall_us)
{
	char buf[256], *p;
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n < 0)
		return -errno;
	buf[n] = 0;
	/* "some avg10=0.00 avg60=0.00 avg300=0.00 total=N" is the first line */
	if (strncmp(buf, "some ", 5) != 0)
		return -EINVAL;
	p = strstr(buf, " total=");
	if (!p || (p - buf) > (ptrdiff_t)(strcspn(buf, "\n")))
		return -EINVAL;
	p += 7;
	if (!isdigit((unsigned char)*p))
		return -EINVAL;
	*stall_us = strtoull(p, NULL, 10);
	return 0;
}

int em_recv_all_poll(int fd, void *buf, size_t len, int poll_us)
{
	struct em_spin s = { .budget_ns = (uint64_t)(poll_us > 0 ? poll_us : 0) * 1000 };

	em_spin_begin(&s, em_now_ns());
	while (s.budget_ns && len) {
		ssize_t n = em_recv_spin(fd, buf, len, &s);

		if (n == -EAGAIN)
			break;
		if (n == 0)
			return -ECONNRESET;
		if (n < 0)
			return (int)n;
		buf = (char *)buf + n;
		len -= (size_t)n;
	}
	return len ? em_recv_all(fd, buf, len) : 0;
}

static unsigned hist_bucket(uint64_t v)
{
	unsigned msb, sub;

	if (v < EM_HIST_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	sub = (unsigned)(v >> (msb - 4)) & (EM_HIST_SUB - 1);
	return (msb - 3) * EM_HIST_SUB + sub;
}

static uint64_t hist_value(unsigned b)
{
	unsigned msb, sub;

	if (b < EM_HIST_SUB)
		return b;
	msb = b / EM_HIST_SUB + 3;
	sub = b % EM_HIST_SUB;
	/* midpoint of the bucket */
	return ((uint64_t)(EM_HIST_SUB + sub) << (msb - 4)) + ((1ull << (msb - 4)) >> 1);
}

uint64_t em_hist_bucket_max(unsigned b)
{
	unsigned msb, sub;

	if (b < EM_HIST_SUB)
		return b;
	if (b >= EM_HIST_BUCKETS - EM_HIST_SUB)
		return UINT64_MAX; /* the top buckets also take what overflows */
	msb = b / EM_HIST_SUB + 3;
	sub = b % EM_HIST_SUB;
	return ((uint64_t)(EM_HIST_SUB + sub + 1) << (msb - 4)) - 1;
}

void em_hist_add(struct em_hist *h, uint64_t v)
{
	unsigned b = hist_bucket(v);

	if (b >= EM_HIST_BUCKETS)
		b = EM_HIST_BUCKETS - 1;
	__atomic_fetch_add(&h->count[b], 1, __ATOMIC_RELAXED);
}

uint64_t em_hist_total(const struct em_hist *h)
{
	uint64_t t = 0;

	for (unsigned i = 0; i < EM_HIST_BUCKETS; i++)
		t += __atomic_load_n(&h->count[i], __ATOMIC_RELAXED);
	return t;
}

uint64_t em_hist_quantile(const struct em_hist *h, double q)
{
	uint64_t total = em_hist_total(h), seen = 0, want;

	if (!total)
		return 0;
	want = (uint64_t)(q * (double)total);
	if (want >= total)
		want = total - 1;
	for (unsigned i = 0; i < EM_HIST_BUCKETS; i++) {
		seen += __atomic_load_n(&h->count[i], __ATOMIC_RELAXED);
		if (seen > want)
			return hist_value(i);
	}
	return hist_value(EM_HIST_BUCKETS - 1);
}

int em_config_parse(const char *path,
		    int (*cb)(void *arg, const char *key, const char *val, int line), void *arg)
{
	FILE *f = fopen(path, "re");
	char buf[1024];
	int line = 0, rc = 0;

	if (!f)
		return -errno;
	while (fgets(buf, sizeof(buf), f)) {
		char *k = buf, *v, *e;

		line++;
		if ((e = strchr(k, '#')))
			*e = 0;
		while (isspace((unsigned char)*k))
			k++;
		if (!*k)
			continue;
		v = strchr(k, '=');
		if (!v) {
			rc = -EINVAL;
			em_log(EM_LOG_ERR, "%s:%d: expected key = value", path, line);
			break;
		}
		*v++ = 0;
		for (e = v - 2; e >= k && isspace((unsigned char)*e); e--)
			*e = 0;
		while (isspace((unsigned char)*v))
			v++;
		for (e = v + strlen(v) - 1; e >= v && isspace((unsigned char)*e); e--)
			*e = 0;
		rc = cb(arg, k, v, line);
		if (rc)
			break;
	}
	fclose(f);
	return rc;
}
