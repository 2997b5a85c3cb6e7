/*
 * replay.c: run a fuzz target over its seed corpus without libFuzzer, as
 * a TAP test of `make check`.
 *
 * Linked with one tests/fuzz/fuzz-*.c (or proto/fuzz-frame.c) and the
 * gcc-built libraries (mk/fuzz.am), this gives every target's seeds, and
 * every crashing input saved next to them, a run in each ordinary build,
 * under --enable-asan too, on machines without clang.  A target reports
 * a finding by crashing, so each input that comes back is one "ok".
 *
 * FUZZ_CORPUS names the directory under $top_srcdir/tests/corpus (set at
 * compile time); arguments, if any, replace it with files or directories.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tap.h"

int	LLVMFuzzerInitialize(int *, char ***) __attribute__((weak));
int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int
replay_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read a whole file; NULL (with a failed check) if it cannot be read. */
static uint8_t *
replay_read(const char *path, size_t *len)
{
	FILE	*f;
	uint8_t	*buf = NULL, *tmp;
	size_t	 cap = 0, n;

	*len = 0;
	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	for (;;) {
		if (cap - *len < 65536) {
			cap = cap == 0 ? 65536 : 2 * cap;
			if ((tmp = realloc(buf, cap)) == NULL)
				goto fail;
			buf = tmp;
		}
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
		if (n == 0)
			break;
	}
	if (ferror(f))
		goto fail;
	fclose(f);
	return buf;
fail:
	fclose(f);
	free(buf);
	return NULL;
}

/* A path as it is shown: from "corpus/" on, if it has that. */
static const char *
replay_name(const char *path)
{
	const char *p = strstr(path, "/corpus/");

	return p != NULL ? p + 1 : path;
}

static void
replay_file(const char *path)
{
	uint8_t	*buf;
	size_t	 len;

	if ((buf = replay_read(path, &len)) == NULL) {
		tap_ok(0, "%s: %s", replay_name(path), strerror(errno));
		return;
	}
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	tap_ok(1, "%s (%zu bytes) comes back", replay_name(path), len);
}

/* Every regular file of a directory, in name order. */
static void
replay_dir(const char *dir)
{
	DIR		*d;
	struct dirent	*e;
	struct stat	 st;
	char		**names = NULL, **tmp, path[4096];
	size_t		 n = 0, i;

	if ((d = opendir(dir)) == NULL) {
		tap_ok(0, "%s: %s", dir, strerror(errno));
		return;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		if ((tmp = realloc(names, (n + 1) * sizeof *names)) == NULL ||
		    (tmp[n] = strdup(path)) == NULL) {
			tap_ok(0, "%s: out of memory", dir);
			names = tmp != NULL ? tmp : names;
			break;
		}
		names = tmp;
		n++;
	}
	closedir(d);
	if (n == 0)
		tap_ok(0, "%s: no inputs", dir);
	qsort(names, n, sizeof *names, replay_cmp);
	for (i = 0; i < n; i++) {
		replay_file(names[i]);
		free(names[i]);
	}
	free(names);
}

int
main(int argc, char **argv)
{
	const char	*top = getenv("top_srcdir");
	char		 dir[4096];
	struct stat	 st;
	int		 i;

	tap_timeout(300);
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc < 2) {
		snprintf(dir, sizeof dir, "%s/tests/corpus/%s",
		    top != NULL && *top != '\0' ? top : ".", FUZZ_CORPUS);
		replay_dir(dir);
	}
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			replay_dir(argv[i]);
		else
			replay_file(argv[i]);
	}
	return tap_done();
}
