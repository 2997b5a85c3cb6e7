/*
 * fuzz-config.c: libFuzzer target for the configuration file parser
 * (config_parse_buf), which reads /etc/mistrald.conf and files named with
 * -c: any bytes must give either settings or one "file:line: why" error,
 * never a crash, a leak or undefined behaviour.
 *
 * Not part of the default build.  Build and run by hand from the source
 * directory (BUILD is a configured build directory, for config.h):
 *
 *	clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
 *	    -IBUILD -Idaemon -Ilib -Iproto daemon/fuzz-config.c \
 *	    daemon/config.c daemon/log.c daemon/xmalloc.c -o fuzz-config
 *	./fuzz-config -max_total_time=20 -rss_limit_mb=512
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mistrald.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c;
	char *cause = NULL;

	config_defaults(&c);
	if (config_parse_buf(&c, "fuzz.conf", (const char *)data, size,
	    &cause) != 0 && cause == NULL)
		abort();
	free(cause);
	config_free(&c);
	return 0;
}
