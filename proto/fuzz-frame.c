/*
 * fuzz-frame.c: libFuzzer target for everything that reads bytes from a
 * client: proto_scan, proto_peek_msgid, proto_decode, proto_parse, the
 * argument getters and the UTF-8 helpers.
 *
 * Built with clang by `make fuzz` (mk/fuzz.am), and replayed over its
 * seeds in make check; or by hand:
 *
 *	clang -g -O1 -fsanitize=fuzzer,address,undefined -Iproto \
 *	    proto/fuzz-frame.c proto/frame.c proto/rpc.c proto/utf8.c \
 *	    -lmsgpackc -o fuzz-frame
 *	./fuzz-frame -max_total_time=20 -rss_limit_mb=512 \
 *	    -malloc_limit_mb=64 tests/corpus/proto
 *
 * The malloc limit is the point: msgpack-c only ever sees what the scanner
 * accepted, so no input may make it allocate more than a few times the
 * message's size.  Inputs are read as a stream of messages, like a socket.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

static const char *const fuzz_keys[] = {
	"session", "text", "params", "stop", "ids", "request", "code",
};

/* Run every getter on every key, as a method handler would. */
static void
fuzz_args(const msgpack_object *args)
{
	const msgpack_object	*o;
	const char		*s;
	char			 buf[32];
	size_t			 i, len;
	int64_t			 iv;
	uint64_t		 uv;
	double			 d;
	bool			 b;

	for (i = 0; i < sizeof fuzz_keys / sizeof fuzz_keys[0]; i++) {
		if (proto_arg_str(args, fuzz_keys[i], &s, &len) ==
		    PROTO_ARG_OK) {
			char	*out = malloc(3 * len + 1);

			if (out != NULL) {
				proto_utf8_repair(s, len, out, 3 * len);
				free(out);
			}
			(void)proto_utf8_valid(s, len);
			(void)proto_utf8_complete(s, len);
		}
		(void)proto_arg_cstr(args, fuzz_keys[i], buf, sizeof buf);
		(void)proto_arg_int(args, fuzz_keys[i], &iv);
		(void)proto_arg_uint(args, fuzz_keys[i], &uv);
		(void)proto_arg_double(args, fuzz_keys[i], &d);
		(void)proto_arg_bool(args, fuzz_keys[i], &b);
		if (proto_arg_map(args, fuzz_keys[i], &o) == PROTO_ARG_OK)
			(void)proto_arg_double(o, "temperature", &d);
		(void)proto_arg_array(args, fuzz_keys[i], &o);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct proto_limits	 lim = PROTO_LIMITS_DEFAULT;
	msgpack_unpacked			 u;
	struct proto_msg			 m;
	size_t					 off = 0, ml;
	uint32_t				 id;

	msgpack_unpacked_init(&u);
	while (off < size) {
		(void)proto_peek_msgid(data + off, size - off, &id);
		if (proto_scan(data + off, size - off, &lim, &ml) !=
		    PROTO_SCAN_OK)
			break;
		if (ml == 0 || ml > size - off)
			abort();	/* the scanner broke its contract */
		if (proto_decode(data + off, ml, &u) != 0)
			abort();	/* msgpack-c disagrees with the scan */
		if (proto_parse(&u.data, &m) == 0) {
			if (m.method != NULL)
				(void)proto_method_find(m.method,
				    m.method_len);
			fuzz_args(m.args);
			fuzz_args(m.error);
			fuzz_args(m.result);
		}
		off += ml;
	}
	msgpack_unpacked_destroy(&u);
	return 0;
}
