/*
 * gguf.c: the GGUF reader.  Maps a model file (or takes a caller's buffer),
 * validates every byte of its header and tensor table, and hands out
 * pointers into the mapping.
 *
 * Layout of a GGUF file (versions 2 and 3, little-endian):
 *
 *	"GGUF" u32 version, u64 n_tensors, u64 n_kv
 *	n_kv times:	string key, u32 value type, value
 *	n_tensors times: string name, u32 n_dims, u64 ne[n_dims], u32 type,
 *			u64 offset (from the start of the data section)
 *	padding to general.alignment (default 32)
 *	data section
 *
 * A string is a u64 byte count and the bytes (no NUL).  A value is the
 * scalar's bytes, a string, or for arrays a u32 element type, a u64 count
 * and the elements.  Version 1 used 32-bit counts and lengths; it is old
 * enough (August 2023) that nothing produces it any more, so it is refused.
 *
 * DESIGN
 *
 * 1. Nothing is trusted.  Every read goes through the cursor functions
 *    (gguf_rd_*), which check the bytes are there before touching them.
 *    Counts are checked against what the remaining bytes could possibly
 *    hold before anything sized by them is allocated, so a 20-byte file
 *    claiming 2^60 entries is refused without a large allocation.
 * 2. After gguf_parse() returns 0, every pointer in the kv and tensor
 *    tables points inside [base, base + size), every tensor's bytes lie in
 *    the file, are aligned and overlap no other tensor.  Callers never
 *    re-check.
 * 3. Lookups go through two index arrays (kvs and tensors sorted by name),
 *    which also find duplicate names at open time.
 * 4. Values are read with memcpy: the mapping gives no alignment guarantee
 *    for anything before the data section.
 */

#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
    "gguf.c reads little-endian values in place");

#define GGUF_MAGIC		"GGUF"
#define GGUF_DEFAULT_ALIGNMENT	32
#define GGUF_MAX_NAME		63	/* llama.cpp's GGML_MAX_NAME - 1 */

/* Smallest possible encodings, used to bound counts by remaining bytes. */
#define GGUF_MIN_KV_BYTES	(8 + 1 + 4 + 1)	/* key len, key, type, u8 */
#define GGUF_MIN_TINFO_BYTES	(8 + 1 + 4 + 8 + 4 + 8)

struct gguf_file {
	const uint8_t		*base;
	uint64_t		 size;		/* bytes */
	int			 mapped;	/* base is our mmap */
	uint32_t		 version;
	uint32_t		 alignment;
	uint64_t		 data_offset;	/* from base */

	uint64_t		 n_kv;
	struct gguf_kv		*kvs;
	uint64_t		*kv_index;	/* kvs sorted by key */

	uint64_t		 n_tensors;
	struct gguf_tensor	*tensors;
	uint64_t		*tensor_index;	/* tensors sorted by name */
};

/* Parsing state: the buffer, the read position and where errors go. */
struct gguf_cursor {
	const uint8_t	*base;
	uint64_t	 size;
	uint64_t	 off;
	const char	*name;
	char		*err;
	size_t		 errlen;
};

static const size_t gguf_scalar_sizes[] = {
	[GGUF_TYPE_UINT8] = 1,
	[GGUF_TYPE_INT8] = 1,
	[GGUF_TYPE_UINT16] = 2,
	[GGUF_TYPE_INT16] = 2,
	[GGUF_TYPE_UINT32] = 4,
	[GGUF_TYPE_INT32] = 4,
	[GGUF_TYPE_FLOAT32] = 4,
	[GGUF_TYPE_BOOL] = 1,
	[GGUF_TYPE_STRING] = 0,
	[GGUF_TYPE_ARRAY] = 0,
	[GGUF_TYPE_UINT64] = 8,
	[GGUF_TYPE_INT64] = 8,
	[GGUF_TYPE_FLOAT64] = 8,
};

static int
gguf_type_valid(uint32_t t)
{
	return t <= GGUF_TYPE_FLOAT64;
}

/* Write "NAME: message" into the caller's buffer; returns code. */
static int __attribute__((format(printf, 3, 4)))
gguf_fail(struct gguf_cursor *c, int code, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	if (c->err == NULL || c->errlen == 0)
		return code;
	n = snprintf(c->err, c->errlen, "%s: ", c->name);
	if (n >= 0 && (size_t)n < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + n, c->errlen - n, fmt, ap);
		va_end(ap);
	}
	return code;
}

/*
 * Copy a name from the file into buf for an error message: at most 64
 * bytes, anything that is not printable ASCII shown as '?'.
 */
static const char *
gguf_printable(struct gguf_str s, char *buf, size_t len)
{
	size_t	i, n;

	n = s.len < len - 1 ? (size_t)s.len : len - 1;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s.ptr[i];
		buf[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
	}
	buf[n] = '\0';
	return buf;
}

static uint64_t
gguf_remaining(const struct gguf_cursor *c)
{
	return c->size - c->off;
}

static int
gguf_rd_u32(struct gguf_cursor *c, uint32_t *v, const char *what)
{
	*v = 0;		/* defined even on failure */
	if (gguf_remaining(c) < 4)
		return gguf_fail(c, -EINVAL,
		    "file ends inside %s (at byte %llu)", what,
		    (unsigned long long)c->off);
	memcpy(v, c->base + c->off, 4);
	c->off += 4;
	return 0;
}

static int
gguf_rd_u64(struct gguf_cursor *c, uint64_t *v, const char *what)
{
	*v = 0;		/* defined even on failure */
	if (gguf_remaining(c) < 8)
		return gguf_fail(c, -EINVAL,
		    "file ends inside %s (at byte %llu)", what,
		    (unsigned long long)c->off);
	memcpy(v, c->base + c->off, 8);
	c->off += 8;
	return 0;
}

/* Read a string: u64 length then bytes.  where names it in messages. */
static int
gguf_rd_str(struct gguf_cursor *c, struct gguf_str *s, const char *what)
{
	uint64_t	at = c->off, len;
	int		rc;

	if ((rc = gguf_rd_u64(c, &len, what)) != 0)
		return rc;
	if (len > gguf_remaining(c))
		return gguf_fail(c, -EINVAL,
		    "%s length %llu runs past the end of the file "
		    "(at byte %llu)", what, (unsigned long long)len,
		    (unsigned long long)at);
	s->ptr = (const char *)c->base + c->off;
	s->len = len;
	c->off += len;
	return 0;
}

/* Check that n bool bytes at the cursor are 0 or 1. */
static int
gguf_check_bools(struct gguf_cursor *c, uint64_t n, const char *key)
{
	uint64_t	i;
	uint8_t		b;

	for (i = 0; i < n; i++) {
		b = c->base[c->off + i];
		if (b > 1)
			return gguf_fail(c, -EINVAL,
			    "bool value %u is neither 0 nor 1 "
			    "(at byte %llu, key %s)", b,
			    (unsigned long long)(c->off + i), key);
	}
	return 0;
}

/* Parse an array value at the cursor into kv (type already read). */
static int
gguf_parse_array(struct gguf_cursor *c, struct gguf_kv *kv, const char *key)
{
	uint64_t	at = c->off, n, i, esize;
	uint32_t	atype;
	int		rc;

	if ((rc = gguf_rd_u32(c, &atype, "array element type")) != 0)
		return rc;
	if (!gguf_type_valid(atype))
		return gguf_fail(c, -EINVAL,
		    "unknown array element type %u (at byte %llu, key %s)",
		    atype, (unsigned long long)at, key);
	if (atype == GGUF_TYPE_ARRAY)
		return gguf_fail(c, -ENOTSUP,
		    "nested arrays are not supported (at byte %llu, key %s)",
		    (unsigned long long)at, key);
	if ((rc = gguf_rd_u64(c, &n, "array length")) != 0)
		return rc;
	kv->arr_type = atype;
	kv->arr_n = n;
	kv->data = c->base + c->off;

	if (atype != GGUF_TYPE_STRING) {
		esize = gguf_scalar_sizes[atype];
		if (n > gguf_remaining(c) / esize)
			return gguf_fail(c, -EINVAL,
			    "array of %llu elements runs past the end of the "
			    "file (at byte %llu, key %s)",
			    (unsigned long long)n, (unsigned long long)at, key);
		if (atype == GGUF_TYPE_BOOL &&
		    (rc = gguf_check_bools(c, n, key)) != 0)
			return rc;
		c->off += n * esize;
		return 0;
	}

	/* Every string needs at least its 8-byte length. */
	if (n > gguf_remaining(c) / 8)
		return gguf_fail(c, -EINVAL,
		    "array of %llu strings runs past the end of the file "
		    "(at byte %llu, key %s)",
		    (unsigned long long)n, (unsigned long long)at, key);
	if (n > 0 && (kv->strs = calloc(n, sizeof *kv->strs)) == NULL)
		return gguf_fail(c, -ENOMEM,
		    "out of memory for %llu strings (key %s)",
		    (unsigned long long)n, key);
	for (i = 0; i < n; i++) {
		if ((rc = gguf_rd_str(c, &kv->strs[i], "string")) != 0)
			return gguf_fail(c, rc,
			    "string %llu runs past the end of the file "
			    "(at byte %llu, key %s)", (unsigned long long)i,
			    (unsigned long long)c->off, key);
	}
	return 0;
}

static int
gguf_parse_kv(struct gguf_cursor *c, struct gguf_kv *kv, uint64_t i)
{
	char		keybuf[72];
	const char	*key;
	uint64_t	at = c->off;
	uint32_t	type;
	int		rc;

	if ((rc = gguf_rd_str(c, &kv->key, "key")) != 0)
		return rc;
	if (kv->key.len == 0)
		return gguf_fail(c, -EINVAL, "empty key (at byte %llu, kv %llu)",
		    (unsigned long long)at, (unsigned long long)i);
	key = gguf_printable(kv->key, keybuf, sizeof keybuf);

	at = c->off;
	if ((rc = gguf_rd_u32(c, &type, "value type")) != 0)
		return rc;
	if (!gguf_type_valid(type))
		return gguf_fail(c, -EINVAL,
		    "unknown value type %u (at byte %llu, key %s)", type,
		    (unsigned long long)at, key);
	kv->type = type;
	kv->data = c->base + c->off;

	switch (type) {
	case GGUF_TYPE_STRING: {
		struct gguf_str s;

		if ((rc = gguf_rd_str(c, &s, "string value")) != 0)
			return gguf_fail(c, rc,
			    "string value runs past the end of the file "
			    "(at byte %llu, key %s)", (unsigned long long)at,
			    key);
		return 0;
	}
	case GGUF_TYPE_ARRAY:
		return gguf_parse_array(c, kv, key);
	default:
		if (gguf_remaining(c) < gguf_scalar_sizes[type])
			return gguf_fail(c, -EINVAL,
			    "file ends inside a value (at byte %llu, key %s)",
			    (unsigned long long)c->off, key);
		if (type == GGUF_TYPE_BOOL &&
		    (rc = gguf_check_bools(c, 1, key)) != 0)
			return rc;
		c->off += gguf_scalar_sizes[type];
		return 0;
	}
}

static int
gguf_parse_tensor_info(struct gguf_cursor *c, struct gguf_tensor *t,
    uint64_t i, int require_supported)
{
	const struct quant_traits	*tr;
	char				 namebuf[72];
	const char			*name;
	uint64_t			 at = c->off, nelem, nrows, rowbytes;
	uint32_t			 d, type;
	int				 rc;

	if ((rc = gguf_rd_str(c, &t->name, "tensor name")) != 0)
		return rc;
	name = gguf_printable(t->name, namebuf, sizeof namebuf);
	if (t->name.len == 0 || t->name.len > GGUF_MAX_NAME)
		return gguf_fail(c, -EINVAL,
		    "tensor name of %llu bytes is not 1 to %d bytes long "
		    "(at byte %llu, tensor %llu)",
		    (unsigned long long)t->name.len, GGUF_MAX_NAME,
		    (unsigned long long)at, (unsigned long long)i);

	at = c->off;
	if ((rc = gguf_rd_u32(c, &t->n_dims, "tensor dimension count")) != 0)
		return rc;
	if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
		return gguf_fail(c, -EINVAL,
		    "%u dimensions, not 1 to %d (at byte %llu, tensor %s)",
		    t->n_dims, GGUF_MAX_DIMS, (unsigned long long)at, name);
	nelem = 1;
	for (d = 0; d < GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d >= t->n_dims)
			continue;
		at = c->off;
		if ((rc = gguf_rd_u64(c, &t->ne[d], "tensor shape")) != 0)
			return rc;
		if (t->ne[d] == 0 || t->ne[d] > INT64_MAX)
			return gguf_fail(c, -EINVAL,
			    "dimension %u is %llu (at byte %llu, tensor %s)",
			    d, (unsigned long long)t->ne[d],
			    (unsigned long long)at, name);
		if (__builtin_mul_overflow(nelem, t->ne[d], &nelem) ||
		    nelem > INT64_MAX)
			return gguf_fail(c, -EINVAL,
			    "element count overflows (at byte %llu, tensor %s)",
			    (unsigned long long)at, name);
	}

	at = c->off;
	if ((rc = gguf_rd_u32(c, &type, "tensor type")) != 0)
		return rc;
	if ((tr = quant_traits(type)) == NULL)
		return gguf_fail(c, -ENOTSUP,
		    "unknown tensor type %u (at byte %llu, tensor %s)", type,
		    (unsigned long long)at, name);
	if (require_supported && !tr->supported)
		return gguf_fail(c, -ENOTSUP,
		    "tensor type %s is not supported (at byte %llu, tensor %s)",
		    tr->name, (unsigned long long)at, name);
	t->type = type;
	if (tr->block_size == 0 || t->ne[0] % tr->block_size != 0)
		return gguf_fail(c, -EINVAL,
		    "row length %llu is not a multiple of %s's block size %u "
		    "(tensor %s)", (unsigned long long)t->ne[0], tr->name,
		    tr->block_size, name);
	nrows = nelem / t->ne[0];
	rowbytes = t->ne[0] / tr->block_size * tr->type_size;
	if (__builtin_mul_overflow(rowbytes, nrows, &t->size) ||
	    t->size > INT64_MAX)
		return gguf_fail(c, -EINVAL,
		    "byte size overflows (tensor %s)", name);

	if ((rc = gguf_rd_u64(c, &t->offset, "tensor offset")) != 0)
		return rc;
	return 0;
}

/* Compare a gguf_str with another, as for a sorted index. */
static int
gguf_str_cmp(struct gguf_str a, struct gguf_str b)
{
	size_t	n = a.len < b.len ? a.len : b.len;
	int	r;

	if ((r = memcmp(a.ptr, b.ptr, n)) != 0)
		return r;
	return (a.len > b.len) - (a.len < b.len);
}

/* Orderings for gguf_sort_index(): a < b as <0, =0, >0. */
static int
gguf_kv_cmp(const void *tab, uint64_t a, uint64_t b)
{
	const struct gguf_kv *kvs = tab;

	return gguf_str_cmp(kvs[a].key, kvs[b].key);
}

static int
gguf_tensor_name_cmp(const void *tab, uint64_t a, uint64_t b)
{
	const struct gguf_tensor *t = tab;

	return gguf_str_cmp(t[a].name, t[b].name);
}

static int
gguf_tensor_offset_cmp(const void *tab, uint64_t a, uint64_t b)
{
	const struct gguf_tensor *t = tab;

	return (t[a].offset > t[b].offset) - (t[a].offset < t[b].offset);
}

/* Restore the max-heap property below root in idx[0..end). */
static void
gguf_sift_down(uint64_t *idx, uint64_t root, uint64_t end, const void *tab,
    int (*cmp)(const void *, uint64_t, uint64_t))
{
	uint64_t	child, tmp;

	for (; (child = 2 * root + 1) < end; root = child) {
		if (child + 1 < end && cmp(tab, idx[child], idx[child + 1]) < 0)
			child++;
		if (cmp(tab, idx[root], idx[child]) >= 0)
			break;
		tmp = idx[root];
		idx[root] = idx[child];
		idx[child] = tmp;
	}
}

/*
 * Fill idx[0..n) with 0..n-1 sorted by cmp.  A heap sort: O(n log n) even
 * for hostile input, no recursion, and no qsort_r (whose comparator
 * signature differs between libcs).
 */
static void
gguf_sort_index(uint64_t *idx, uint64_t n, const void *tab,
    int (*cmp)(const void *, uint64_t, uint64_t))
{
	uint64_t	i, end, tmp;

	for (i = 0; i < n; i++)
		idx[i] = i;
	if (n < 2)
		return;
	for (i = n / 2; i-- > 0;)
		gguf_sift_down(idx, i, n, tab, cmp);
	for (end = n - 1; end > 0; end--) {
		tmp = idx[0];
		idx[0] = idx[end];
		idx[end] = tmp;
		gguf_sift_down(idx, 0, end, tab, cmp);
	}
}

static struct gguf_str
gguf_kv_key(const void *tab, uint64_t i)
{
	return ((const struct gguf_kv *)tab)[i].key;
}

static struct gguf_str
gguf_tensor_key(const void *tab, uint64_t i)
{
	return ((const struct gguf_tensor *)tab)[i].name;
}

/* Binary search of a sorted index; returns the table index or UINT64_MAX. */
static uint64_t
gguf_index_find(const uint64_t *idx, uint64_t n, const void *tab,
    struct gguf_str (*key)(const void *, uint64_t), const char *name)
{
	struct gguf_str	s = { name, strlen(name) };
	uint64_t	lo = 0, hi = n, mid;
	int		r;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		r = gguf_str_cmp(key(tab, idx[mid]), s);
		if (r == 0)
			return idx[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return UINT64_MAX;
}

/* Check general.alignment if present; sets f->alignment. */
static int
gguf_check_alignment(struct gguf_cursor *c, struct gguf_file *f)
{
	const struct gguf_kv	*kv;
	uint32_t		 a;

	f->alignment = GGUF_DEFAULT_ALIGNMENT;
	if ((kv = gguf_find_kv(f, "general.alignment")) == NULL)
		return 0;
	if (kv->type != GGUF_TYPE_UINT32)
		return gguf_fail(c, -EINVAL,
		    "general.alignment is not a uint32 (key general.alignment)");
	memcpy(&a, kv->data, 4);
	if (a == 0 || (a & (a - 1)) != 0)
		return gguf_fail(c, -EINVAL,
		    "alignment %u is not a power of two "
		    "(key general.alignment)", a);
	/* Below 4, tensor data could start at an odd address, and every
	 * kernel reads F32 elements and the 2-byte fields of quant blocks
	 * through naturally aligned pointers. */
	if (a < 4)
		return gguf_fail(c, -EINVAL, "alignment %u is below 4 "
		    "(key general.alignment)", a);
	f->alignment = a;
	return 0;
}

/* Check every tensor lies in the data section, aligned, without overlap. */
static int
gguf_check_tensor_data(struct gguf_cursor *c, struct gguf_file *f)
{
	struct gguf_tensor	*t, *prev;
	uint64_t		*order, avail, i;
	char			 n1[72], n2[72];

	if (f->n_tensors == 0)
		return 0;
	if (f->data_offset > f->size)
		return gguf_fail(c, -EINVAL,
		    "file ends before its data section (at byte %llu)",
		    (unsigned long long)f->size);
	avail = f->size - f->data_offset;
	for (i = 0; i < f->n_tensors; i++) {
		t = &f->tensors[i];
		if (t->offset % f->alignment != 0)
			return gguf_fail(c, -EINVAL,
			    "data offset %llu is not a multiple of the "
			    "alignment %u (tensor %s)",
			    (unsigned long long)t->offset, f->alignment,
			    gguf_printable(t->name, n1, sizeof n1));
		if (t->offset > avail || t->size > avail - t->offset)
			return gguf_fail(c, -EINVAL,
			    "data (%llu bytes at offset %llu) runs past the "
			    "end of the file (at byte %llu, tensor %s)",
			    (unsigned long long)t->size,
			    (unsigned long long)t->offset,
			    (unsigned long long)f->size,
			    gguf_printable(t->name, n1, sizeof n1));
		t->data = f->base + f->data_offset + t->offset;
	}

	/* In offset order, each tensor must end before the next begins. */
	if ((order = malloc(f->n_tensors * sizeof *order)) == NULL)
		return gguf_fail(c, -ENOMEM, "out of memory");
	gguf_sort_index(order, f->n_tensors, f->tensors,
	    gguf_tensor_offset_cmp);
	for (i = 1; i < f->n_tensors; i++) {
		prev = &f->tensors[order[i - 1]];
		t = &f->tensors[order[i]];
		if (prev->offset + prev->size > t->offset) {
			free(order);
			return gguf_fail(c, -EINVAL,
			    "data overlaps (tensors %s and %s)",
			    gguf_printable(prev->name, n1, sizeof n1),
			    gguf_printable(t->name, n2, sizeof n2));
		}
	}
	free(order);
	return 0;
}

static void
gguf_free_tables(struct gguf_file *f)
{
	uint64_t	i;

	if (f->kvs != NULL) {
		for (i = 0; i < f->n_kv; i++)
			free(f->kvs[i].strs);
	}
	free(f->kvs);
	free(f->kv_index);
	free(f->tensors);
	free(f->tensor_index);
}

static int
gguf_parse(struct gguf_cursor *c, struct gguf_file *f, int require_supported)
{
	char		name[72];
	uint64_t	i, n_kv, n_tensors, rem;
	uint32_t	version;
	int		rc;

	if (c->size < 4)
		return gguf_fail(c, -EINVAL,
		    "not a GGUF file: only %llu bytes long",
		    (unsigned long long)c->size);
	if (memcmp(c->base, GGUF_MAGIC, 4) != 0)
		return gguf_fail(c, -EINVAL,
		    "not a GGUF file: bad magic (at byte 0)");
	c->off = 4;
	if ((rc = gguf_rd_u32(c, &version, "version")) != 0)
		return rc;
	if (version == 1)
		return gguf_fail(c, -ENOTSUP,
		    "GGUF version 1 is not supported, only 2 and 3 "
		    "(at byte 4); convert the file again");
	if (version == 0x02000000 || version == 0x03000000)
		return gguf_fail(c, -ENOTSUP,
		    "big-endian GGUF files are not supported (at byte 4)");
	if (version != 2 && version != 3)
		return gguf_fail(c, -ENOTSUP,
		    "GGUF version %u is not supported, only 2 and 3 "
		    "(at byte 4)", version);
	f->version = version;
	if ((rc = gguf_rd_u64(c, &n_tensors, "tensor count")) != 0 ||
	    (rc = gguf_rd_u64(c, &n_kv, "key count")) != 0)
		return rc;

	rem = gguf_remaining(c);
	if (n_kv > rem / GGUF_MIN_KV_BYTES)
		return gguf_fail(c, -EINVAL,
		    "%llu keys cannot fit in the file's %llu bytes (at byte 16)",
		    (unsigned long long)n_kv, (unsigned long long)c->size);
	rem -= n_kv * GGUF_MIN_KV_BYTES;
	if (n_tensors > rem / GGUF_MIN_TINFO_BYTES)
		return gguf_fail(c, -EINVAL,
		    "%llu tensors cannot fit in the file's %llu bytes "
		    "(at byte 8)", (unsigned long long)n_tensors,
		    (unsigned long long)c->size);

	if (n_kv > 0 && ((f->kvs = calloc(n_kv, sizeof *f->kvs)) == NULL ||
	    (f->kv_index = malloc(n_kv * sizeof *f->kv_index)) == NULL))
		return gguf_fail(c, -ENOMEM, "out of memory for %llu keys",
		    (unsigned long long)n_kv);
	f->n_kv = n_kv;
	for (i = 0; i < n_kv; i++) {
		if ((rc = gguf_parse_kv(c, &f->kvs[i], i)) != 0)
			return rc;
	}
	gguf_sort_index(f->kv_index, n_kv, f->kvs, gguf_kv_cmp);
	for (i = 1; i < n_kv; i++) {
		if (gguf_str_cmp(f->kvs[f->kv_index[i - 1]].key,
		    f->kvs[f->kv_index[i]].key) == 0)
			return gguf_fail(c, -EINVAL, "duplicate key (key %s)",
			    gguf_printable(f->kvs[f->kv_index[i]].key, name,
			    sizeof name));
	}
	if ((rc = gguf_check_alignment(c, f)) != 0)
		return rc;

	if (n_tensors > 0 &&
	    ((f->tensors = calloc(n_tensors, sizeof *f->tensors)) == NULL ||
	    (f->tensor_index = malloc(n_tensors *
	    sizeof *f->tensor_index)) == NULL))
		return gguf_fail(c, -ENOMEM, "out of memory for %llu tensors",
		    (unsigned long long)n_tensors);
	f->n_tensors = n_tensors;
	for (i = 0; i < n_tensors; i++) {
		if ((rc = gguf_parse_tensor_info(c, &f->tensors[i], i,
		    require_supported)) != 0)
			return rc;
	}
	gguf_sort_index(f->tensor_index, n_tensors, f->tensors,
	    gguf_tensor_name_cmp);
	for (i = 1; i < n_tensors; i++) {
		if (gguf_str_cmp(f->tensors[f->tensor_index[i - 1]].name,
		    f->tensors[f->tensor_index[i]].name) == 0)
			return gguf_fail(c, -EINVAL,
			    "duplicate tensor name (tensor %s)",
			    gguf_printable(f->tensors[f->tensor_index[i]].name,
			    name, sizeof name));
	}

	/* c->off < 2^63 and alignment <= 2^31, so this cannot wrap. */
	f->data_offset = (c->off + f->alignment - 1) &
	    ~(uint64_t)(f->alignment - 1);
	return gguf_check_tensor_data(c, f);
}

/* Parse base/size into a new gguf_file; on success it takes no ownership. */
static int
gguf_open_common(const void *buf, uint64_t len, const char *name,
    int require_supported, struct gguf_file **out, char *err, size_t errlen)
{
	struct gguf_cursor	 c = { buf, len, 0, name, err, errlen };
	struct gguf_file	*f;
	int			 rc;

	if ((f = calloc(1, sizeof *f)) == NULL)
		return gguf_fail(&c, -ENOMEM, "out of memory");
	f->base = buf;
	f->size = len;
	if ((rc = gguf_parse(&c, f, require_supported)) != 0) {
		gguf_free_tables(f);
		free(f);
		return rc;
	}
	*out = f;
	return 0;
}

int
gguf_open_buffer(const void *buf, size_t len, const char *name,
    int require_supported, struct gguf_file **out, char *err, size_t errlen)
{
	*out = NULL;
	if (name == NULL)
		name = "(buffer)";
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (buf == NULL && len != 0) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: no buffer", name);
		return -EINVAL;
	}
	return gguf_open_common(buf, len, name, require_supported, out, err,
	    errlen);
}

int
gguf_open(const char *path, int require_supported, struct gguf_file **out,
    char *err, size_t errlen)
{
	struct stat	 st;
	void		*map = NULL;
	int		 fd, rc;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		rc = -errno;
		goto sys_fail;
	}
	if (fstat(fd, &st) == -1) {
		rc = -errno;
		close(fd);
		goto sys_fail;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: not a regular file", path);
		return rc;
	}
	if (st.st_size > 0) {
		map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			rc = -errno;
			close(fd);
			goto sys_fail;
		}
	}
	close(fd);

	rc = gguf_open_common(map, st.st_size, path, require_supported, out,
	    err, errlen);
	if (rc != 0) {
		if (map != NULL)
			munmap(map, st.st_size);
		return rc;
	}
	(*out)->mapped = map != NULL;
	return 0;

sys_fail:
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
	return rc;
}

void
gguf_close(struct gguf_file *f)
{
	if (f == NULL)
		return;
	if (f->mapped)
		munmap((void *)f->base, f->size);
	gguf_free_tables(f);
	free(f);
}

uint32_t
gguf_version(const struct gguf_file *f)
{
	return f->version;
}

uint64_t
gguf_file_size(const struct gguf_file *f)
{
	return f->size;
}

const void *
gguf_base(const struct gguf_file *f)
{
	return f->base;
}

uint64_t
gguf_n_kv(const struct gguf_file *f)
{
	return f->n_kv;
}

const struct gguf_kv *
gguf_kv_at(const struct gguf_file *f, uint64_t i)
{
	return i < f->n_kv ? &f->kvs[i] : NULL;
}

const struct gguf_kv *
gguf_find_kv(const struct gguf_file *f, const char *key)
{
	uint64_t	i;

	i = gguf_index_find(f->kv_index, f->n_kv, f->kvs, gguf_kv_key, key);
	return i == UINT64_MAX ? NULL : &f->kvs[i];
}

/*
 * Read an integer value of any width as a signed 128-bit quantity so
 * callers can range-check it once.  Returns -EINVAL for non-integers.
 */
static int
gguf_int_value(enum gguf_type type, const void *p, __int128 *v)
{
	union {
		uint8_t u8; int8_t i8; uint16_t u16; int16_t i16;
		uint32_t u32; int32_t i32; uint64_t u64; int64_t i64;
	} u;

	if (!gguf_type_valid(type) || type == GGUF_TYPE_FLOAT32 ||
	    type == GGUF_TYPE_FLOAT64 || type == GGUF_TYPE_BOOL ||
	    type == GGUF_TYPE_STRING || type == GGUF_TYPE_ARRAY)
		return -EINVAL;
	memcpy(&u, p, gguf_scalar_sizes[type]);
	switch (type) {
	case GGUF_TYPE_UINT8:	*v = u.u8; break;
	case GGUF_TYPE_INT8:	*v = u.i8; break;
	case GGUF_TYPE_UINT16:	*v = u.u16; break;
	case GGUF_TYPE_INT16:	*v = u.i16; break;
	case GGUF_TYPE_UINT32:	*v = u.u32; break;
	case GGUF_TYPE_INT32:	*v = u.i32; break;
	case GGUF_TYPE_UINT64:	*v = u.u64; break;
	default:		*v = u.i64; break;
	}
	return 0;
}

/* Find key and read it as an integer within [lo, hi]. */
static int
gguf_get_int(const struct gguf_file *f, const char *key, __int128 lo,
    __int128 hi, __int128 *v)
{
	const struct gguf_kv	*kv;

	if ((kv = gguf_find_kv(f, key)) == NULL)
		return -ENOENT;
	if (gguf_int_value(kv->type, kv->data, v) != 0 || *v < lo || *v > hi)
		return -EINVAL;
	return 0;
}

int
gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out)
{
	__int128	v;
	int		rc;

	if ((rc = gguf_get_int(f, key, 0, UINT32_MAX, &v)) == 0)
		*out = (uint32_t)v;
	return rc;
}

int
gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out)
{
	__int128	v;
	int		rc;

	if ((rc = gguf_get_int(f, key, 0, UINT64_MAX, &v)) == 0)
		*out = (uint64_t)v;
	return rc;
}

int
gguf_get_i32(const struct gguf_file *f, const char *key, int32_t *out)
{
	__int128	v;
	int		rc;

	if ((rc = gguf_get_int(f, key, INT32_MIN, INT32_MAX, &v)) == 0)
		*out = (int32_t)v;
	return rc;
}

int
gguf_get_f32(const struct gguf_file *f, const char *key, float *out)
{
	const struct gguf_kv	*kv;
	float			 v32;
	double			 v64;

	if ((kv = gguf_find_kv(f, key)) == NULL)
		return -ENOENT;
	if (kv->type == GGUF_TYPE_FLOAT32) {
		memcpy(&v32, kv->data, 4);
		*out = v32;
	} else if (kv->type == GGUF_TYPE_FLOAT64) {
		memcpy(&v64, kv->data, 8);
		*out = (float)v64;
	} else
		return -EINVAL;
	return 0;
}

int
gguf_get_bool(const struct gguf_file *f, const char *key, int *out)
{
	const struct gguf_kv	*kv;

	if ((kv = gguf_find_kv(f, key)) == NULL)
		return -ENOENT;
	if (kv->type != GGUF_TYPE_BOOL)
		return -EINVAL;
	*out = *(const uint8_t *)kv->data;
	return 0;
}

int
gguf_get_str(const struct gguf_file *f, const char *key, struct gguf_str *out)
{
	const struct gguf_kv	*kv;
	uint64_t		 len;

	if ((kv = gguf_find_kv(f, key)) == NULL)
		return -ENOENT;
	if (kv->type != GGUF_TYPE_STRING)
		return -EINVAL;
	memcpy(&len, kv->data, 8);
	out->ptr = (const char *)kv->data + 8;
	out->len = len;
	return 0;
}

int
gguf_get_arr(const struct gguf_file *f, const char *key,
    const struct gguf_kv **out)
{
	const struct gguf_kv	*kv;

	if ((kv = gguf_find_kv(f, key)) == NULL)
		return -ENOENT;
	if (kv->type != GGUF_TYPE_ARRAY)
		return -EINVAL;
	*out = kv;
	return 0;
}

/* Element i of a float array; 0 for other types or i out of range. */
float
gguf_arr_f32(const struct gguf_kv *kv, uint64_t i)
{
	float	v32;
	double	v64;

	if (kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_n)
		return 0.0f;
	if (kv->arr_type == GGUF_TYPE_FLOAT32) {
		memcpy(&v32, (const uint8_t *)kv->data + i * 4, 4);
		return v32;
	}
	if (kv->arr_type == GGUF_TYPE_FLOAT64) {
		memcpy(&v64, (const uint8_t *)kv->data + i * 8, 8);
		return (float)v64;
	}
	return 0.0f;
}

/* Element i of an integer array; 0 for other types or i out of range
 * (UINT64 values above INT64_MAX are clamped to INT64_MAX). */
int64_t
gguf_arr_i64(const struct gguf_kv *kv, uint64_t i)
{
	__int128	v;
	size_t		esize;

	if (kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_n ||
	    !gguf_type_valid(kv->arr_type))
		return 0;
	esize = gguf_scalar_sizes[kv->arr_type];
	if (esize == 0 || gguf_int_value(kv->arr_type,
	    (const uint8_t *)kv->data + i * esize, &v) != 0)
		return 0;
	return v > INT64_MAX ? INT64_MAX : (int64_t)v;
}

uint64_t
gguf_n_tensors(const struct gguf_file *f)
{
	return f->n_tensors;
}

const struct gguf_tensor *
gguf_tensor_at(const struct gguf_file *f, uint64_t i)
{
	return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const struct gguf_tensor *
gguf_find_tensor(const struct gguf_file *f, const char *name)
{
	uint64_t	i;

	i = gguf_index_find(f->tensor_index, f->n_tensors, f->tensors,
	    gguf_tensor_key, name);
	return i == UINT64_MAX ? NULL : &f->tensors[i];
}

int
gguf_str_eq(struct gguf_str s, const char *c)
{
	size_t	n = strlen(c);

	return s.len == n && memcmp(s.ptr, c, n) == 0;
}
