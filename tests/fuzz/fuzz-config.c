/*
 * fuzz-config.c: libFuzzer target for the daemon's configuration parser
 * (config_parse_buf in daemon/config.c), which reads /etc/mistrald.conf.
 *
 * Built and run by `make fuzz-smoke` (mk/fuzz.am); seeds in
 * tests/corpus/config/.  With MISTRAL_FUZZ_SEEDS=DIR in the environment
 * the program writes its seeds to DIR and exits instead.
 *
 * Each input is parsed twice: from memory, and as the -c file of
 * config_load() (through a memfd), which adds the file reader and the
 * command-line path.  Checked beyond the sanitizers:
 *   1. On success no message is set; on failure the message is one line
 *      that starts with the file's name.
 *   2. Both ways agree (inputs over the reader's 1 MiB cap excepted).
 *   3. After a success every numeric setting is inside the range
 *      mistrald.conf(5) documents for it.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mistrald.h"

#define CONFFUZZ_NAME	"fuzz.conf"

static int conffuzz_fd = -1;

/* Promise 3: the documented ranges. */
static void
conffuzz_ranges(const struct config *c)
{
	if (c->threads > 1024 || c->kv_budget < (1u << 20) ||
	    c->chunk < 1 || c->chunk > 4096 ||
	    c->max_message < 4096 || c->max_message > (1u << 30) ||
	    c->max_prompt_tokens < 1 || c->max_tokens < 1 ||
	    c->max_sessions_per_uid < 1 ||
	    c->max_requests_per_connection < 1 ||
	    c->max_requests_per_uid < 1 ||
	    c->max_connections < 1 || c->max_connections > 65536 ||
	    c->write_buffer < 4096 || c->write_buffer > (1u << 30) ||
	    c->shutdown_timeout < 1 || c->shutdown_timeout > 3600 ||
	    c->log_level < LOG_LEVEL_DEBUG || c->log_level > LOG_LEVEL_WARN)
		abort();
	if (c->kv_type == NULL || c->template == NULL ||
	    c->socket == NULL || c->state_dir == NULL)
		abort();	/* defaults the daemon relies on */
}

/* Promise 1. */
static void
conffuzz_cause(int rc, const char *cause, const char *name)
{
	if (rc == 0) {
		if (cause != NULL)
			abort();
		return;
	}
	if (rc != -1 || cause == NULL ||
	    strncmp(cause, name, strlen(name)) != 0 ||
	    strchr(cause, '\n') != NULL)
		abort();
}

/* Parse through config_load("-c /proc/self/fd/N"); -2 if not possible. */
static int
conffuzz_load(const uint8_t *data, size_t size)
{
	struct config	 c;
	char		 path[64], *argv[4], *cause = NULL;
	int		 rc;

	if (conffuzz_fd == -1 || ftruncate(conffuzz_fd, 0) != 0 ||
	    pwrite(conffuzz_fd, data, size, 0) != (ssize_t)size)
		return -2;
	snprintf(path, sizeof path, "/proc/self/fd/%d", conffuzz_fd);
	argv[0] = (char *)"mistrald";
	argv[1] = (char *)"-c";
	argv[2] = path;
	argv[3] = NULL;
	rc = config_load(&c, 3, argv, &cause);
	conffuzz_cause(rc, cause, path);
	if (rc == 0)
		conffuzz_ranges(&c);
	free(cause);
	config_free(&c);
	return rc;
}

static void
conffuzz_write_seeds(const char *dir)
{
	static const char *const seeds[] = {
		"# mistrald.conf\n"
		"model = /var/lib/mistrald/models/mistral-7b.Q4_K_M.gguf\n"
		"socket = /run/mistrald/mistrald.sock\n"
		"state-dir = /var/lib/mistrald\n"
		"threads = 2\n"
		"log-level = info\n",
		"kv-type = q8_0\nkv-budget = 6G\nwindow = 4096\nchunk = 64\n"
		"template = mistral\n",
		"max-message = 4M\nmax-prompt-tokens = 32768\n"
		"max-tokens = 4096\nmax-sessions-per-uid = 256\n"
		"max-requests-per-connection = 16\n"
		"max-requests-per-uid = 64\nmax-connections = 512\n"
		"write-buffer = 1M\nshutdown-timeout = 20\n",
		"socket-group = mistrald\nadmin-group = wheel\n"
		"log-file = /var/log/mistrald.log\n",
		"\t  # indented comment\n\n   threads=0   \r\n"
		"log-level =warning\n",
		"kv-budget = 18446744073709551615\nchunk = 4097\n",
		"max-message = 1T\n",
		"unknown-key = 1\n",
		"model = path with spaces # not a comment\n",
		"threads = -1\n",
		"= value\nkey\n",
		"foreground = yes\n",
		"config = /etc/other.conf\n",
	};
	char	 path[1024];
	FILE	*f;
	size_t	 i, n;

	for (i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
		snprintf(path, sizeof path, "%s/conf-%02zu", dir, i);
		n = strlen(seeds[i]);
		if ((f = fopen(path, "wb")) == NULL ||
		    fwrite(seeds[i], 1, n, f) != n || fclose(f) != 0) {
			perror(path);
			exit(1);
		}
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seeds = getenv("MISTRAL_FUZZ_SEEDS");

	if (seeds != NULL && *seeds != '\0') {
		conffuzz_write_seeds(seeds);
		exit(0);
	}
	conffuzz_fd = memfd_create("fuzz-config", MFD_CLOEXEC);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	 c;
	char		*cause = NULL;
	int		 rc, rc_file;

	config_defaults(&c);
	rc = config_parse_buf(&c, CONFFUZZ_NAME, (const char *)data, size,
	    &cause);
	conffuzz_cause(rc, cause, CONFFUZZ_NAME);
	if (rc == 0)
		conffuzz_ranges(&c);
	free(cause);
	config_free(&c);

	rc_file = conffuzz_load(data, size);
	if (rc_file != -2 && size <= (1u << 20) && rc_file != rc)
		abort();	/* promise 2 */
	return 0;
}
