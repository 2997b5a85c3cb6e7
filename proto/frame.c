/*
 * frame.c: finding whole msgpack messages in a byte stream, safely.
 *
 * msgpack-c trusts every length it reads: an array32 header makes it
 * allocate count * 24 bytes before a single element has arrived, and a
 * str32 header makes it wait for 4 GiB (PLATFORM.md 1a).  So bytes from a
 * socket are first walked by proto_scan(), which reads only headers, keeps
 * no state between calls and allocates nothing, and msgpack-c is only
 * handed a buffer that holds exactly one complete object within limits.
 *
 * DESIGN
 *  1. The scan is iterative, with a fixed stack of "elements still to read"
 *     per open container, so hostile nesting costs no C stack.
 *  2. Every element takes at least one byte.  "pending" counts the elements
 *     declared but not yet read, so pos + pending is a lower bound on the
 *     message's length; it is checked against max_message at every header,
 *     which is how a 5-byte array32 header announcing 16 M elements is
 *     refused at once, and it is what MORE reports so that a caller can
 *     wait for that many bytes instead of rescanning after every read.
 *  3. Each call does O(min(len, max_message)) work.
 */
#include <errno.h>
#include <string.h>

#include "protocol.h"

/* msgpack-c's parser cannot go deeper than this (MSGPACK_EMBED_STACK_SIZE). */
#define FRAME_STACK	32

/* Big-endian reads of header fields (the caller has checked the bounds). */
static uint64_t
frame_be(const uint8_t *p, size_t n)
{
	uint64_t	v = 0;
	size_t		i;

	for (i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/*
 * Classify the type byte b.  Sets *hdr to the header size in bytes, and
 * *kind: 0 scalar (whole in the header), 1 str/bin (len field of *lenw
 * bytes after b), 2 array, 3 map (count field of *lenw bytes, or the
 * count in *fixn for fix types).  Returns -1 for bytes we refuse.
 */
static int
frame_type(uint8_t b, size_t *hdr, int *kind, size_t *lenw, uint32_t *fixn)
{
	*lenw = 0;
	*fixn = 0;
	*kind = 0;
	*hdr = 1;
	if (b <= 0x7f || b >= 0xe0)
		return 0;			/* fixint */
	if (b <= 0x8f) {
		*kind = 3;
		*fixn = b & 0x0f;
		return 0;
	}
	if (b <= 0x9f) {
		*kind = 2;
		*fixn = b & 0x0f;
		return 0;
	}
	if (b <= 0xbf) {
		*kind = 1;
		*fixn = b & 0x1f;
		return 0;
	}
	switch (b) {
	case 0xc0: case 0xc2: case 0xc3:	/* nil, false, true */
		return 0;
	case 0xc4: case 0xd9:			/* bin8, str8 */
		*kind = 1;
		*lenw = 1;
		break;
	case 0xc5: case 0xda:			/* bin16, str16 */
		*kind = 1;
		*lenw = 2;
		break;
	case 0xc6: case 0xdb:			/* bin32, str32 */
		*kind = 1;
		*lenw = 4;
		break;
	case 0xcc: case 0xd0:			/* uint8, int8 */
		*hdr = 2;
		return 0;
	case 0xcd: case 0xd1:
		*hdr = 3;
		return 0;
	case 0xca: case 0xce: case 0xd2:	/* float32, (u)int32 */
		*hdr = 5;
		return 0;
	case 0xcb: case 0xcf: case 0xd3:	/* float64, (u)int64 */
		*hdr = 9;
		return 0;
	case 0xdc:				/* array16, array32 */
	case 0xdd:
		*kind = 2;
		*lenw = b == 0xdc ? 2 : 4;
		break;
	case 0xde:				/* map16, map32 */
	case 0xdf:
		*kind = 3;
		*lenw = b == 0xde ? 2 : 4;
		break;
	default:	/* 0xc1 (never used), ext8/16/32, fixext 1..16 */
		return -1;
	}
	*hdr = 1 + *lenw;
	return 0;
}

enum proto_scan_result
proto_scan(const uint8_t *buf, size_t len, const struct proto_limits *lim,
    size_t *msg_len)
{
	uint64_t	 left[FRAME_STACK];	/* elements still to read */
	uint64_t	 pending = 1;		/* the root object */
	uint64_t	 objects = 0, n, need;
	uint32_t	 depth = 0, max_depth, fixn;
	size_t		 pos = 0, hdr, lenw;
	int		 kind;

	max_depth = lim->max_depth < FRAME_STACK ? lim->max_depth : FRAME_STACK;
	*msg_len = 0;
	for (;;) {
		if (pos >= len) {
			*msg_len = pos + pending;
			return PROTO_SCAN_MORE;
		}
		if (frame_type(buf[pos], &hdr, &kind, &lenw, &fixn) != 0) {
			*msg_len = pos;
			return PROTO_SCAN_BAD;
		}
		if (++objects > lim->max_objects) {
			*msg_len = pos;
			return PROTO_SCAN_TOO_BIG;
		}
		pending--;
		if (depth > 0)
			left[depth - 1]--;
		if (pos + hdr > len) {
			*msg_len = pos + hdr + pending;
			return pos + hdr + pending > lim->max_message ?
			    PROTO_SCAN_TOO_BIG : PROTO_SCAN_MORE;
		}
		n = lenw > 0 ? frame_be(buf + pos + 1, lenw) : fixn;

		switch (kind) {
		case 1:		/* str or bin: n payload bytes */
			need = pos + hdr + n + pending;
			if (n > lim->max_str || need > lim->max_message) {
				*msg_len = need;
				return PROTO_SCAN_TOO_BIG;
			}
			if (pos + hdr + n > len) {
				*msg_len = need;
				return PROTO_SCAN_MORE;
			}
			pos += hdr + n;
			break;
		case 2:		/* array or map: n (pairs of) elements */
		case 3:
			if (n > lim->max_entries) {
				*msg_len = pos + hdr + n;
				return PROTO_SCAN_TOO_BIG;
			}
			if (kind == 3)
				n *= 2;
			pos += hdr;
			if (n == 0)
				break;
			if (depth >= max_depth) {
				*msg_len = pos - hdr;
				return PROTO_SCAN_BAD;
			}
			pending += n;
			if (pos + pending > lim->max_message ||
			    objects + pending > lim->max_objects) {
				*msg_len = pos + pending;
				return PROTO_SCAN_TOO_BIG;
			}
			left[depth++] = n;
			continue;	/* its first element comes next */
		default:
			pos += hdr;
			break;
		}
		/* An element ended: close every container it completed. */
		while (depth > 0 && left[depth - 1] == 0)
			depth--;
		if (depth == 0) {
			*msg_len = pos;
			return PROTO_SCAN_OK;
		}
	}
}

int
proto_peek_msgid(const uint8_t *buf, size_t len, uint32_t *msgid)
{
	size_t	 pos;
	uint64_t v;

	if (len >= 1 && buf[0] == 0x94)
		pos = 1;
	else if (len >= 3 && buf[0] == 0xdc && buf[1] == 0 && buf[2] == 4)
		pos = 3;
	else if (len >= 5 && buf[0] == 0xdd && frame_be(buf + 1, 4) == 4)
		pos = 5;
	else
		return -1;
	if (pos >= len || buf[pos] != PROTO_REQUEST)
		return -1;
	pos++;
	if (pos >= len)
		return -1;
	switch (buf[pos]) {
	case 0xcc:
		if (pos + 2 > len)
			return -1;
		v = buf[pos + 1];
		break;
	case 0xcd:
		if (pos + 3 > len)
			return -1;
		v = frame_be(buf + pos + 1, 2);
		break;
	case 0xce:
		if (pos + 5 > len)
			return -1;
		v = frame_be(buf + pos + 1, 4);
		break;
	case 0xcf:
		if (pos + 9 > len)
			return -1;
		v = frame_be(buf + pos + 1, 8);
		if (v > UINT32_MAX)
			return -1;
		break;
	default:
		if (buf[pos] > 0x7f)
			return -1;
		v = buf[pos];
		break;
	}
	*msgid = (uint32_t)v;
	return 0;
}

int
proto_decode(const uint8_t *buf, size_t len, msgpack_unpacked *out)
{
	msgpack_unpack_return	 r;
	size_t			 off = 0;

	msgpack_unpacked_destroy(out);
	r = msgpack_unpack_next(out, (const char *)buf, len, &off);
	if (r == MSGPACK_UNPACK_SUCCESS && off == len)
		return 0;
	msgpack_unpacked_destroy(out);
	msgpack_unpacked_init(out);
	return r == MSGPACK_UNPACK_NOMEM_ERROR ? -ENOMEM : -EBADMSG;
}
