/*
 * tap.h: a minimal Test Anything Protocol producer for the C unit tests.
 *
 * Each test program prints "1..N" (or a trailing plan via tap_done()), one
 * "ok"/"not ok" line per check, and exits non-zero if any check failed, so
 * automake's tap-driver.sh can count them.  Tests that need the shared
 * fixtures call tap_fixture(), which returns NULL (after printing why) when
 * ../shared/fixtures is absent so the caller can skip.
 */
#ifndef TAP_H
#define TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tap_n __attribute__((unused));
static int tap_failed __attribute__((unused));

__attribute__((unused)) static void
tap_ok(int cond, const char *fmt, ...)
{
	va_list ap;

	tap_n++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

__attribute__((unused)) static void
tap_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

__attribute__((unused)) static void
tap_skip(const char *why)
{
	tap_n++;
	printf("ok %d # SKIP %s\n", tap_n, why);
	fflush(stdout);
}

/* Skip the whole program: prints a plan of 0 with the reason. */
__attribute__((unused)) static void
tap_skip_all(const char *why)
{
	printf("1..0 # SKIP %s\n", why);
	exit(0);
}

__attribute__((unused)) static int
tap_done(void)
{
	printf("1..%d\n", tap_n);
	fflush(stdout);
	return tap_failed ? 1 : 0;
}

/* Arm a watchdog so a hung test fails instead of stalling the suite. */
__attribute__((unused)) static void
tap_timeout(unsigned int seconds)
{
	alarm(seconds);
}

/*
 * The path of a file under the shared fixtures, or NULL (with a diagnostic)
 * when the fixtures directory is not present.  Returns a static buffer.
 */
__attribute__((unused)) static const char *
tap_fixture(const char *rel)
{
	static char path[4096];
	const char *dir = getenv("MISTRAL_FIXTURES");

	if (dir == NULL || *dir == '\0')
		dir = "../shared/fixtures";
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	if (access(path, R_OK) != 0) {
		tap_diag("fixture %s not found (../shared/fixtures is absent)", path);
		return NULL;
	}
	return path;
}

#endif /* TAP_H */
