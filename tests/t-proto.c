/*
 * t-proto.c: the wire protocol's framing, limits, parsing and packing.
 *
 * The scanner is what stands between a socket and msgpack-c, so most of
 * this checks that it agrees with msgpack-c on every valid message (split
 * anywhere), refuses PLATFORM.md's allocation bombs from their headers
 * alone, and never crashes or over-reads on garbage.
 */
#include <sys/resource.h>
#include <sys/wait.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "protocol.h"
#include "tap.h"

static const struct proto_limits defl = PROTO_LIMITS_DEFAULT;

/* A request exercising every type the protocol uses. */
static void
pack_sample(msgpack_sbuffer *sb, uint32_t msgid)
{
	msgpack_packer	pk;

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	proto_pack_request(&pk, msgid, "chat", 5);
	proto_pack_kv_str(&pk, "session", "a1b2c3d4");
	proto_pack_kv_str(&pk, "text", "Bonjour, \xc3\xa7" "a va ?");
	proto_pack_cstr(&pk, "params");
	msgpack_pack_map(&pk, 4);
	proto_pack_kv_double(&pk, "temperature", 0.25);
	proto_pack_kv_int(&pk, "top_k", -1);
	proto_pack_kv_uint(&pk, "seed", UINT64_MAX);
	proto_pack_cstr(&pk, "stop");
	msgpack_pack_array(&pk, 2);
	proto_pack_cstr(&pk, "\n\n");
	proto_pack_cstr(&pk, "User:");
	proto_pack_kv_bool(&pk, "stream", true);
	proto_pack_cstr(&pk, "blob");
	msgpack_pack_bin_with_body(&pk, "\0\1\2", 3);
}

static void
test_roundtrip(void)
{
	msgpack_sbuffer		 sb;
	msgpack_unpacked	 u;
	struct proto_msg	 m;
	const msgpack_object	*params, *stop;
	const char		*s;
	size_t			 len, ml;
	double			 d;
	int64_t			 i;
	uint64_t		 seed;
	bool			 b;
	char			 buf[64];

	msgpack_sbuffer_init(&sb);
	pack_sample(&sb, 77);
	tap_ok(proto_scan((uint8_t *)sb.data, sb.size, &defl, &ml) ==
	    PROTO_SCAN_OK && ml == sb.size,
	    "sample request scans OK, %zu bytes", sb.size);
	msgpack_unpacked_init(&u);
	tap_ok(proto_decode((uint8_t *)sb.data, sb.size, &u) == 0,
	    "sample request decodes");
	tap_ok(proto_parse(&u.data, &m) == 0 && m.type == PROTO_REQUEST &&
	    m.msgid == 77 && m.args != NULL, "parsed as request 77");
	tap_ok(proto_method_find(m.method, m.method_len) == PROTO_M_CHAT,
	    "method is chat");
	tap_ok(proto_arg_str(m.args, "text", &s, &len) == PROTO_ARG_OK &&
	    len == strlen("Bonjour, \xc3\xa7" "a va ?") &&
	    memcmp(s, "Bonjour, \xc3\xa7", 11) == 0, "text round-trips");
	tap_ok(proto_arg_cstr(m.args, "session", buf, sizeof buf) ==
	    PROTO_ARG_OK && strcmp(buf, "a1b2c3d4") == 0,
	    "session as C string");
	tap_ok(proto_arg_cstr(m.args, "session", buf, 8) == PROTO_ARG_RANGE,
	    "C string that does not fit is RANGE");
	tap_ok(proto_arg_map(m.args, "params", &params) == PROTO_ARG_OK,
	    "params is a map");
	tap_ok(proto_arg_double(params, "temperature", &d) == PROTO_ARG_OK &&
	    d == 0.25, "temperature 0.25");
	tap_ok(proto_arg_double(params, "top_k", &d) == PROTO_ARG_OK &&
	    d == -1.0, "an integer is accepted as a double");
	tap_ok(proto_arg_int(params, "top_k", &i) == PROTO_ARG_OK && i == -1,
	    "top_k -1");
	tap_ok(proto_arg_uint(params, "top_k", &seed) == PROTO_ARG_RANGE,
	    "negative as uint is RANGE");
	tap_ok(proto_arg_uint(params, "seed", &seed) == PROTO_ARG_OK &&
	    seed == UINT64_MAX, "seed UINT64_MAX");
	tap_ok(proto_arg_int(params, "seed", &i) == PROTO_ARG_RANGE,
	    "UINT64_MAX as int64 is RANGE");
	tap_ok(proto_arg_array(params, "stop", &stop) == PROTO_ARG_OK &&
	    stop->via.array.size == 2, "stop is an array of 2");
	tap_ok(proto_arg_bool(m.args, "stream", &b) == PROTO_ARG_OK && b,
	    "stream true");
	tap_ok(proto_arg_str(m.args, "blob", &s, &len) ==
	    PROTO_ARG_WRONG_TYPE, "bin is not a str");
	tap_ok(proto_arg_int(m.args, "text", &i) == PROTO_ARG_WRONG_TYPE &&
	    proto_arg_bool(m.args, "text", &b) == PROTO_ARG_WRONG_TYPE &&
	    proto_arg_double(m.args, "text", &d) == PROTO_ARG_WRONG_TYPE &&
	    proto_arg_map(m.args, "text", &params) == PROTO_ARG_WRONG_TYPE &&
	    proto_arg_array(m.args, "text", &stop) == PROTO_ARG_WRONG_TYPE,
	    "every getter refuses a str of the wrong type");
	tap_ok(proto_arg_str(m.args, "nope", &s, &len) == PROTO_ARG_MISSING &&
	    proto_arg_int(NULL, "x", &i) == PROTO_ARG_MISSING,
	    "absent argument and NULL map are MISSING");
	tap_ok(strcmp(proto_arg_explain("text", PROTO_ARG_WRONG_TYPE, buf,
	    sizeof buf), "argument 'text' has the wrong type") == 0,
	    "explain: %s", buf);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
}

/* Every prefix is MORE with a sane lower bound; the whole is OK. */
static void
test_split(void)
{
	msgpack_sbuffer	sb;
	size_t		k, ml;
	int		bad = 0, badbound = 0;

	msgpack_sbuffer_init(&sb);
	pack_sample(&sb, 123456);
	for (k = 0; k < sb.size; k++) {
		if (proto_scan((uint8_t *)sb.data, k, &defl, &ml) !=
		    PROTO_SCAN_MORE)
			bad++;
		else if (ml <= k || ml > sb.size)
			badbound++;
	}
	tap_ok(bad == 0, "every one of %zu prefixes is MORE", sb.size);
	tap_ok(badbound == 0, "MORE's lower bound is in (len, total]");
	msgpack_sbuffer_destroy(&sb);
}

static void
test_concat(void)
{
	msgpack_sbuffer	sb;
	msgpack_packer	pk;
	size_t		off = 0, ml, lens[3], n = 0;
	int		ok = 1;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_request(&pk, 1, "status", 0);
	lens[0] = sb.size;
	proto_pack_token(&pk, 1, "h\xc3\xa9", 3, (const int32_t[]){ 5, 6 }, 2);
	lens[1] = sb.size - lens[0];
	proto_pack_response_error(&pk, 9, PROTO_E_BUSY, NULL);
	lens[2] = sb.size - lens[0] - lens[1];
	while (off < sb.size && n < 3) {
		if (proto_scan((uint8_t *)sb.data + off, sb.size - off, &defl,
		    &ml) != PROTO_SCAN_OK || ml != lens[n])
			ok = 0;
		off += ml;
		n++;
	}
	tap_ok(ok && n == 3 && off == sb.size,
	    "three concatenated messages scan one by one");
	msgpack_sbuffer_destroy(&sb);
}

struct bomb {
	const char	*name;
	const uint8_t	*bytes;
	size_t		 len;
	int		 want;
};

static uint8_t deep[1000];

static const struct bomb bombs[] = {
	{ "array32 of 16M (dd 00 ff ff ff)",
	    (const uint8_t *)"\xdd\x00\xff\xff\xff", 5, PROTO_SCAN_TOO_BIG },
	{ "map32 of 268M (df 0f ff ff ff)",
	    (const uint8_t *)"\xdf\x0f\xff\xff\xff", 5, PROTO_SCAN_TOO_BIG },
	{ "array32 of 4G (dd ff ff ff ff)",
	    (const uint8_t *)"\xdd\xff\xff\xff\xff", 5, PROTO_SCAN_TOO_BIG },
	{ "str32 of 4 GiB", (const uint8_t *)"\xdb\xff\xff\xff\xff", 5,
	    PROTO_SCAN_TOO_BIG },
	{ "bin32 of 4 GiB", (const uint8_t *)"\xc6\xff\xff\xff\xff", 5,
	    PROTO_SCAN_TOO_BIG },
	{ "str32 of 2 MiB in a request",
	    (const uint8_t *)"\x94\x00\x01\xdb\x00\x20\x00\x00", 8,
	    PROTO_SCAN_TOO_BIG },
	{ "5 nested array16 of 65535 (327k objects)",
	    (const uint8_t *)"\xdc\xff\xff\xdc\xff\xff\xdc\xff\xff"
	    "\xdc\xff\xff\xdc\xff\xff", 15, PROTO_SCAN_TOO_BIG },
	{ "0xc1", (const uint8_t *)"\xc1", 1, PROTO_SCAN_BAD },
	{ "fixext1", (const uint8_t *)"\xd4\x01\x00", 3, PROTO_SCAN_BAD },
	{ "ext32 of 4 GiB", (const uint8_t *)"\xc9\xff\xff\xff\xff\x01", 6,
	    PROTO_SCAN_BAD },
	{ "1000 nested fixarray1", deep, sizeof deep, PROTO_SCAN_BAD },
};
#define NBOMBS (sizeof bombs / sizeof bombs[0])

static void
test_bombs(void)
{
	struct rlimit	rl;
	size_t		i, ml;
	pid_t		pid;
	int		status, r;

	memset(deep, 0x91, sizeof deep);
	for (i = 0; i < NBOMBS; i++) {
		r = proto_scan(bombs[i].bytes, bombs[i].len, &defl, &ml);
		tap_ok(r == bombs[i].want, "%s refused from its header (%d)",
		    bombs[i].name, r);
	}

	/*
	 * The same bombs through scan-then-decode under a 256 MiB address
	 * space: msgpack-c alone would need gigabytes for some of them.
	 */
	fflush(stdout);
	if ((pid = fork()) == 0) {
		msgpack_unpacked	u;

		rl.rlim_cur = rl.rlim_max = 256UL << 20;
		if (setrlimit(RLIMIT_AS, &rl) != 0)
			_exit(2);
		msgpack_unpacked_init(&u);
		for (i = 0; i < NBOMBS; i++) {
			if (proto_scan(bombs[i].bytes, bombs[i].len, &defl,
			    &ml) == PROTO_SCAN_OK &&
			    proto_decode(bombs[i].bytes, ml, &u) != 0)
				_exit(1);
		}
		msgpack_unpacked_destroy(&u);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	    "bombs pass through scan+decode under RLIMIT_AS 256 MiB");
}

/* Exact edges of every limit. */
static void
test_limits(void)
{
	struct proto_limits	 lim = PROTO_LIMITS_DEFAULT;
	uint8_t			*b;
	size_t			 ml, n;
	int			 i;

	/* Depth: max_depth nested non-empty arrays pass, one more is BAD. */
	b = calloc(1, 64);
	for (i = 0; i < PROTO_MAX_DEPTH; i++)
		b[i] = 0x91;
	b[PROTO_MAX_DEPTH] = 0x01;
	tap_ok(proto_scan(b, PROTO_MAX_DEPTH + 1, &lim, &ml) == PROTO_SCAN_OK &&
	    ml == PROTO_MAX_DEPTH + 1, "depth %d accepted", PROTO_MAX_DEPTH);
	memmove(b + 1, b, PROTO_MAX_DEPTH + 1);
	b[0] = 0x91;
	tap_ok(proto_scan(b, PROTO_MAX_DEPTH + 2, &lim, &ml) == PROTO_SCAN_BAD,
	    "depth %d refused", PROTO_MAX_DEPTH + 1);
	free(b);

	/* String length: max_str passes, max_str + 1 is TOO_BIG. */
	n = PROTO_MAX_STR + 1 + 5;
	b = calloc(1, n);
	b[0] = 0xdb;
	b[1] = (PROTO_MAX_STR >> 24) & 0xff;
	b[2] = (PROTO_MAX_STR >> 16) & 0xff;
	b[3] = (PROTO_MAX_STR >> 8) & 0xff;
	b[4] = PROTO_MAX_STR & 0xff;
	tap_ok(proto_scan(b, 5 + PROTO_MAX_STR, &lim, &ml) == PROTO_SCAN_OK &&
	    ml == 5 + PROTO_MAX_STR, "str of max_str bytes accepted");
	tap_ok(proto_scan(b, 100, &lim, &ml) == PROTO_SCAN_MORE &&
	    ml == 5 + PROTO_MAX_STR,
	    "partial str: MORE knows the whole length");
	b[4] = (PROTO_MAX_STR + 1) & 0xff;
	tap_ok(proto_scan(b, 5, &lim, &ml) == PROTO_SCAN_TOO_BIG,
	    "str of max_str+1 bytes refused from its header");
	free(b);

	/* Entries: 65536 nils pass, 65537 are TOO_BIG. */
	n = 5 + PROTO_MAX_ENTRIES;
	b = calloc(1, n + 1);
	b[0] = 0xdd;
	b[2] = 0x01;	/* 0x00010000 = 65536 */
	memset(b + 5, 0xc0, PROTO_MAX_ENTRIES);
	tap_ok(proto_scan(b, n, &lim, &ml) == PROTO_SCAN_OK && ml == n,
	    "array of max_entries accepted");
	b[4] = 0x01;
	tap_ok(proto_scan(b, 5, &lim, &ml) == PROTO_SCAN_TOO_BIG,
	    "array of max_entries+1 refused");
	free(b);

	/* Message size: a small limit refuses a complete message over it. */
	lim.max_message = 16;
	tap_ok(proto_scan((const uint8_t *)"\xb1" "0123456789abcdef", 18, &lim,
	    &ml) == PROTO_SCAN_TOO_BIG, "complete message over max_message");
	tap_ok(proto_scan((const uint8_t *)"\x9f", 1, &lim, &ml) ==
	    PROTO_SCAN_MORE && ml == 16, "15 pending elements fit in 16 bytes");
	tap_ok(proto_scan((const uint8_t *)"\xdc\x00\x10", 3, &lim, &ml) ==
	    PROTO_SCAN_TOO_BIG,
	    "16 pending elements after a 3-byte header do not");
	lim = (struct proto_limits)PROTO_LIMITS_DEFAULT;
	lim.max_objects = 10;
	tap_ok(proto_scan((const uint8_t *)"\x9a", 1, &lim, &ml) ==
	    PROTO_SCAN_TOO_BIG, "11 objects over max_objects 10");
	tap_ok(proto_scan((const uint8_t *)"\x99\x01\x01\x01\x01\x01\x01\x01"
	    "\x01\x01", 10, &lim, &ml) == PROTO_SCAN_OK,
	    "10 objects within max_objects 10");
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t
rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

/*
 * Garbage and mutated messages: the scanner must not crash (ASan builds
 * would catch an over-read: each input is its own exact-size allocation),
 * and whenever it says OK msgpack-c must agree on the length.
 */
static void
test_garbage(void)
{
	msgpack_sbuffer		 sb;
	msgpack_unpacked	 u;
	uint8_t			*b;
	size_t			 len, ml, off;
	int			 i, j, oks = 0, disagree = 0, r;

	msgpack_sbuffer_init(&sb);
	pack_sample(&sb, 5);
	msgpack_unpacked_init(&u);
	for (i = 0; i < 200000; i++) {
		if (i & 1) {
			len = rnd() % 48;
			b = malloc(len + 1);
			for (j = 0; (size_t)j < len; j++)
				b[j] = (uint8_t)rnd();
		} else {
			len = sb.size - rnd() % 4;
			b = malloc(len);
			memcpy(b, sb.data, len);
			for (j = 0; j < 1 + (int)(rnd() % 3); j++)
				b[rnd() % len] = (uint8_t)rnd();
		}
		r = proto_scan(b, len, &defl, &ml);
		if (r == PROTO_SCAN_OK) {
			oks++;
			off = 0;
			if (ml > len || msgpack_unpack_next(&u, (char *)b, ml,
			    &off) != MSGPACK_UNPACK_SUCCESS || off != ml)
				disagree++;
		}
		free(b);
	}
	tap_ok(disagree == 0, "msgpack-c agrees on all %d OK scans of garbage",
	    oks);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_peek(void)
{
	msgpack_sbuffer	sb;
	msgpack_packer	pk;
	uint32_t	id = 0;
	size_t		ml;
	int		r;
	static char	big[PROTO_MAX_STR + 10];

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	proto_pack_request(&pk, 4000000000U, "chat", 1);
	proto_pack_cstr(&pk, "text");
	memset(big, 'x', sizeof big);
	proto_pack_str(&pk, big, sizeof big);
	tap_ok(proto_scan((uint8_t *)sb.data, 40, &defl, &ml) ==
	    PROTO_SCAN_TOO_BIG, "oversized request refused after 40 bytes");
	r = proto_peek_msgid((uint8_t *)sb.data, 40, &id);
	tap_ok(r == 0 && id == 4000000000U, "its msgid is still read: %u", id);
	tap_ok(proto_peek_msgid((uint8_t *)sb.data, 3, &id) != 0,
	    "no msgid from 3 bytes");
	tap_ok(proto_peek_msgid((const uint8_t *)"\x94\x00\x05", 3, &id) == 0 &&
	    id == 5, "fixint msgid");
	tap_ok(proto_peek_msgid((const uint8_t *)"\x94\x01\x05", 3, &id) != 0,
	    "a response has no request msgid");
	tap_ok(proto_peek_msgid((const uint8_t *)"\xc1\xc1", 2, &id) != 0,
	    "garbage has none");
	msgpack_sbuffer_destroy(&sb);
}

/* proto_parse on a message given as raw bytes; m points into *u. */
static int
parse_bytes(const char *bytes, size_t len, msgpack_unpacked *u,
    struct proto_msg *m)
{
	if (proto_decode((const uint8_t *)bytes, len, u) != 0)
		return -100;
	return proto_parse(&u->data, m);
}

static void
test_parse(void)
{
	struct proto_msg	m;
	msgpack_unpacked	u;

	msgpack_unpacked_init(&u);
#define P(lit) parse_bytes(lit, sizeof(lit) - 1, &u, &m)
	tap_ok(P("\x94\x00\x01\xa6status\x90") == 0 && m.args == NULL &&
	    m.msgid == 1, "request with [] params");
	tap_ok(P("\x94\x00\x01\xa6status\x91\xc0") == 0 && m.args == NULL,
	    "[nil] params are no arguments");
	tap_ok(P("\x93\x00\x01\xa6status") == PROTO_E_INVALID_REQUEST,
	    "request of 3 elements");
	tap_ok(P("\x94\x03\x01\xa6status\x90") == PROTO_E_INVALID_REQUEST,
	    "type 3");
	tap_ok(P("\x94\x00\xff\xa6status\x90") == PROTO_E_INVALID_REQUEST,
	    "negative msgid");
	tap_ok(P("\x94\x00\xcf\x00\x00\x00\x01\x00\x00\x00\x00\xa1x\x90") ==
	    PROTO_E_INVALID_REQUEST, "msgid over 32 bits");
	tap_ok(P("\x94\x00\x01\x01\x90") == PROTO_E_INVALID_REQUEST,
	    "method not a string");
	tap_ok(P("\x94\x00\x01\xa1x\x80") == PROTO_E_INVALID_PARAMS,
	    "params a bare map");
	tap_ok(P("\x94\x00\x01\xa1x\x92\x80\x80") == PROTO_E_INVALID_PARAMS,
	    "params of two maps");
	tap_ok(P("\x94\x00\x01\xa1x\x91\x01") == PROTO_E_INVALID_PARAMS,
	    "params [1]");
	tap_ok(P("\x93\x02\xa5token\x91\x81\xa1x\x01") == 0 &&
	    m.type == PROTO_NOTIFICATION && m.method_len == 5 && m.args != NULL,
	    "notification");
	tap_ok(P("\x94\x01\x07\xc0\x2a") == 0 && m.type == PROTO_RESPONSE &&
	    m.msgid == 7 && m.error == NULL && m.result != NULL &&
	    m.result->via.u64 == 42, "ok response");
	tap_ok(P("\x94\x01\x07\x81\xa4" "code\x07\xc0") == 0 &&
	    m.error != NULL && m.result == NULL, "error response");
	tap_ok(P("\x01") == PROTO_E_INVALID_REQUEST, "a bare integer");
#undef P
	msgpack_unpacked_destroy(&u);
}

static void
test_pack(void)
{
	msgpack_sbuffer		 sb;
	msgpack_packer		 pk;
	msgpack_unpacked	 u;
	struct proto_msg	 m;
	const msgpack_object	*ids;
	const char		*s;
	size_t			 len;
	int64_t			 code, v;
	int			 i, names = 1;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_unpacked_init(&u);

	proto_pack_response_error(&pk, 3, PROTO_E_NO_SUCH_SESSION, NULL);
	tap_ok(proto_decode((uint8_t *)sb.data, sb.size, &u) == 0 &&
	    proto_parse(&u.data, &m) == 0 && m.error != NULL &&
	    proto_arg_int(m.error, "code", &code) == 0 &&
	    code == PROTO_E_NO_SUCH_SESSION &&
	    proto_arg_str(m.error, "message", &s, &len) == 0 &&
	    len == strlen("no such session"), "error response packs");

	msgpack_sbuffer_clear(&sb);
	proto_pack_token(&pk, 12, "\xe2\x82\xac", 3,
	    (const int32_t[]){ 226, 130, -1 }, 3);
	tap_ok(proto_decode((uint8_t *)sb.data, sb.size, &u) == 0 &&
	    proto_parse(&u.data, &m) == 0 && m.type == PROTO_NOTIFICATION &&
	    m.method_len == 5 && memcmp(m.method, "token", 5) == 0 &&
	    proto_arg_int(m.args, "request", &v) == 0 && v == 12 &&
	    proto_arg_str(m.args, "text", &s, &len) == 0 && len == 3 &&
	    proto_arg_array(m.args, "ids", &ids) == 0 &&
	    ids->via.array.size == 3 &&
	    ids->via.array.ptr[2].via.i64 == -1, "token notification packs");

	msgpack_sbuffer_clear(&sb);
	proto_pack_progress(&pk, 12, 100, 4000);
	tap_ok(proto_decode((uint8_t *)sb.data, sb.size, &u) == 0 &&
	    proto_parse(&u.data, &m) == 0 &&
	    proto_arg_int(m.args, "done", &v) == 0 && v == 100 &&
	    proto_arg_int(m.args, "total", &v) == 0 && v == 4000,
	    "progress notification packs");

	msgpack_sbuffer_clear(&sb);
	proto_pack_response_ok(&pk, 8);
	msgpack_pack_map(&pk, 1);
	proto_pack_kv_str(&pk, "id", "0123456789abcdef");
	tap_ok(proto_decode((uint8_t *)sb.data, sb.size, &u) == 0 &&
	    proto_parse(&u.data, &m) == 0 && m.result != NULL &&
	    proto_arg_str(m.result, "id", &s, &len) == 0 && len == 16,
	    "ok response packs");

	for (i = 1; i <= PROTO_E_MAX; i++) {
		if (strcmp(proto_error_name(i), "UNKNOWN") == 0 ||
		    strcmp(proto_error_message(i), "unknown error") == 0)
			names = 0;
	}
	tap_ok(names && strcmp(proto_error_name(0), "UNKNOWN") == 0 &&
	    strcmp(proto_error_name(PROTO_E_MAX + 1), "UNKNOWN") == 0,
	    "every error code has a name and a message");
	names = 1;
	for (i = 0; i < PROTO_M_COUNT; i++) {
		s = proto_method_name(i);
		if (proto_method_find(s, strlen(s)) != i)
			names = 0;
	}
	tap_ok(names && proto_method_find("chat2", 5) == -1 &&
	    proto_method_find("cha", 3) == -1, "method names round-trip");
	tap_ok(proto_finish_find("cancelled", 9) == PROTO_FINISH_CANCELLED &&
	    strcmp(proto_finish_name(PROTO_FINISH_LENGTH), "length") == 0,
	    "finish reasons");

	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_utf8(void)
{
	/* a, e acute, euro sign, an emoji: 1 to 4 bytes. */
	const char	*s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
	size_t		 n = strlen(s), k, want;
	char		 out[64];
	int		 ok = 1;

	for (k = 0; k <= n; k++) {
		want = k < 1 ? 0 : k < 3 ? 1 : k < 6 ? 3 : k < 10 ? 6 : 10;
		if (proto_utf8_complete(s, k) != want)
			ok = 0;
	}
	tap_ok(ok, "complete() holds back a split character at every cut");
	tap_ok(proto_utf8_valid(s, n) && !proto_utf8_valid(s, n - 1),
	    "valid() refuses a truncated character");
	tap_ok(!proto_utf8_valid("\xc0\xaf", 2) &&
	    !proto_utf8_valid("\xed\xa0\x80", 3) &&
	    !proto_utf8_valid("\xf4\x90\x80\x80", 4) &&
	    !proto_utf8_valid("\x80", 1), "overlong, surrogate, >U+10FFFF, "
	    "stray continuation are invalid");
	tap_ok(proto_utf8_complete("a\xff", 2) == 2,
	    "an invalid tail is not held back forever");
	k = proto_utf8_repair("a\xffz\xe2\x82", 5, out, sizeof out);
	tap_ok(k == 11 && memcmp(out, "a\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd",
	    11) == 0, "repair() replaces bad bytes by U+FFFD");
}

static void
test_path(void)
{
	char	buf[256];

	setenv(PROTO_SOCKET_ENV, "/x/y.sock", 1);
	tap_ok(proto_socket_path(buf, sizeof buf) == 0 &&
	    strcmp(buf, "/x/y.sock") == 0, "MISTRALD_SOCKET wins");
	unsetenv(PROTO_SOCKET_ENV);
	setenv("XDG_RUNTIME_DIR", "/nonexistent-run", 1);
	tap_ok(proto_socket_user(buf, sizeof buf) == 0 &&
	    strcmp(buf, "/nonexistent-run/mistrald/mistrald.sock") == 0,
	    "per-user socket under XDG_RUNTIME_DIR");
	tap_ok(proto_socket_path(buf, sizeof buf) == 0 &&
	    strcmp(buf, PROTO_SOCKET_SYSTEM) == 0,
	    "absent per-user socket falls back to the system one");
	memset(buf, 'a', 150);
	buf[0] = '/';
	buf[150] = '\0';
	setenv("XDG_RUNTIME_DIR", buf, 1);
	tap_ok(proto_socket_user(buf, sizeof buf) == -ENAMETOOLONG,
	    "a path over sun_path is refused");
}

int
main(void)
{
	tap_timeout(120);
	test_roundtrip();
	test_split();
	test_concat();
	test_bombs();
	test_limits();
	test_garbage();
	test_peek();
	test_parse();
	test_pack();
	test_utf8();
	test_path();
	return tap_done();
}
