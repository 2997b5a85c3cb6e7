/*
 * xmalloc.c: allocation wrappers for the daemon's small bookkeeping.
 *
 * Allocation policy (STYLE.md): structures whose size does not depend on a
 * request or a model (clients, sessions' metadata, events, replies) come
 * from these wrappers, which abort the daemon when memory is exhausted,
 * since nothing sensible can continue then.  Anything sized by a request
 * or a model (caches, prompts, snapshots) is allocated with plain malloc
 * and its failure is answered with an error.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mistrald.h"

static void
xmalloc_fail(size_t n)
{
	log_warnx("out of memory allocating %zu bytes", n);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n != 0 ? n : 1);

	if (p == NULL)
		xmalloc_fail(n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n != 0 ? n : 1, size != 0 ? size : 1);

	if (p == NULL)
		xmalloc_fail(n * size);
	return p;
}

void *
xrealloc(void *old, size_t n)
{
	void *p = realloc(old, n != 0 ? n : 1);

	if (p == NULL)
		xmalloc_fail(n);
	return p;
}

void *
xreallocarray(void *old, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		xmalloc_fail(SIZE_MAX);
	return xrealloc(old, n * size);
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p;

	n = strnlen(s, n);
	p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

int
xvasprintf(char **out, const char *fmt, va_list ap)
{
	int n = vasprintf(out, fmt, ap);

	if (n < 0)
		xmalloc_fail(strlen(fmt));
	return n;
}

int
xasprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = xvasprintf(out, fmt, ap);
	va_end(ap);
	return n;
}

uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
