/*
 * utf8.c: UTF-8 checks for streamed text.
 *
 * The protocol only ever carries whole characters.  A token's bytes may
 * end in the middle of a character (byte-fallback tokens), so a sender
 * holds back the incomplete tail (proto_utf8_complete) until the next
 * token completes it, and a model that emits bytes that can never form a
 * character gets them replaced by U+FFFD (proto_utf8_repair).
 */
#include <string.h>

#include "protocol.h"

/*
 * Length of the valid character starting at s (1..4), 0 if s[0..len) is a
 * valid but incomplete start of one, or -1 if the bytes are invalid.
 * Overlong forms, surrogates and code points past U+10FFFF are invalid.
 */
static int
utf8_char(const unsigned char *s, size_t len)
{
	unsigned char	lo = 0x80, hi = 0xbf;
	int		n, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] < 0xc2)
		return -1;
	if (s[0] < 0xe0)
		n = 2;
	else if (s[0] < 0xf0) {
		n = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] < 0xf5) {
		n = 4;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;
	} else
		return -1;
	for (i = 1; i < n; i++) {
		if ((size_t)i >= len)
			return 0;
		if (s[i] < lo || s[i] > hi)
			return -1;
		lo = 0x80;
		hi = 0xbf;
	}
	return n;
}

size_t
proto_utf8_complete(const char *s, size_t len)
{
	const unsigned char	*u = (const unsigned char *)s;
	size_t			 start;

	/* Only the last (up to 3) bytes can begin an incomplete character. */
	start = len > 3 ? len - 3 : 0;
	for (; start < len; start++) {
		if ((u[start] & 0xc0) == 0x80)
			continue;
		if (utf8_char(u + start, len - start) == 0)
			return start;
	}
	return len;
}

bool
proto_utf8_valid(const char *s, size_t len)
{
	const unsigned char	*u = (const unsigned char *)s;
	size_t			 i = 0;
	int			 n;

	while (i < len) {
		if ((n = utf8_char(u + i, len - i)) <= 0)
			return false;
		i += (size_t)n;
	}
	return true;
}

size_t
proto_utf8_repair(const char *s, size_t len, char *out, size_t cap)
{
	const unsigned char	*u = (const unsigned char *)s;
	size_t			 i = 0, o = 0;
	int			 n;

	while (i < len) {
		n = utf8_char(u + i, len - i);
		if (n > 0) {
			if (o + (size_t)n > cap)
				break;
			memcpy(out + o, s + i, (size_t)n);
			o += (size_t)n;
			i += (size_t)n;
			continue;
		}
		if (o + 3 > cap)
			break;
		memcpy(out + o, "\xef\xbf\xbd", 3);
		o += 3;
		i++;
	}
	return o;
}
