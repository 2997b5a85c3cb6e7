/*
 * gguf-write.c: the GGUF writer (version 3, little-endian), used by the
 * random-model generator in mkmodel.c and through it by the tests,
 * `make bench` and the daemon's demo model.
 *
 * DESIGN
 *
 * 1. Metadata is encoded as soon as it is set: each kv keeps its value
 *    type and value bytes exactly as they will appear in the file, so
 *    writing is concatenation and gguf_writer_set_kv() can copy a value of
 *    any type from a file being read.  Setting a key again replaces it in
 *    place (keeping its position).
 * 2. Tensors either own a copy of their bytes or have a fill callback that
 *    produces them row-chunk by row-chunk while the file is written; the
 *    writer then holds one chunk (a few MiB) at a time, so a model of many
 *    GiB is written without holding it in memory.
 * 3. Data offsets are assigned in insertion order, each rounded up to the
 *    alignment (general.alignment if set, else 32); the data section and
 *    every tensor, the last included, are padded with zero bytes, as
 *    llama.cpp writes them.
 * 4. The file is written to PATH.tmp, fsynced, renamed over PATH and the
 *    directory fsynced, so a crash leaves either the old file or the new
 *    one, never a torn one.  On failure PATH.tmp is removed.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"

#define GGUF_WRITER_VERSION	3
#define GGUF_WRITER_ALIGNMENT	32
#define GGUF_WRITER_MAX_NAME	63
#define GGUF_WRITER_CHUNK	(4u << 20)	/* bytes per fill_cb call */
#define GGUF_WRITER_OUTBUF	(1u << 20)

/* A growable byte string. */
struct gguf_bytes {
	uint8_t	*p;
	size_t	 len;
	size_t	 cap;
};

struct gguf_writer_kv {
	char			*key;
	struct gguf_bytes	 val;	/* u32 type then the value */
};

struct gguf_writer_tensor {
	char		*name;
	enum ggml_type	 type;
	uint32_t	 n_dims;
	uint64_t	 ne[GGUF_MAX_DIMS];
	uint64_t	 n_rows;	/* ne[1] * ne[2] * ne[3] */
	uint64_t	 row_size;	/* bytes */
	uint64_t	 size;		/* n_rows * row_size */
	uint64_t	 offset;	/* in the data section */
	void		*data;		/* owned copy, or NULL with fill_cb */
	int		(*fill_cb)(void *, uint64_t, uint64_t, void *);
	void		*arg;
};

struct gguf_writer {
	struct gguf_writer_kv		*kvs;
	size_t				 n_kv;
	size_t				 cap_kv;
	struct gguf_writer_tensor	*tensors;
	size_t				 n_tensors;
	size_t				 cap_tensors;
};

/* Buffered output to the temporary file; the first error sticks. */
struct gguf_out {
	int		 fd;
	uint8_t		*buf;
	size_t		 len;
	uint64_t	 pos;		/* bytes accepted so far */
	int		 err;		/* negative errno */
};

static int
gguf_bytes_put(struct gguf_bytes *b, const void *p, size_t n)
{
	uint8_t	*np;
	size_t	 cap;

	if (n > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	if (b->len + n > b->cap) {
		cap = b->cap ? b->cap : 64;
		while (cap < b->len + n)
			cap *= 2;
		if ((np = realloc(b->p, cap)) == NULL)
			return -ENOMEM;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

static int
gguf_bytes_u32(struct gguf_bytes *b, uint32_t v)
{
	return gguf_bytes_put(b, &v, 4);
}

static int
gguf_bytes_u64(struct gguf_bytes *b, uint64_t v)
{
	return gguf_bytes_put(b, &v, 8);
}

static int
gguf_bytes_str(struct gguf_bytes *b, const char *s, size_t len)
{
	int	rc;

	if ((rc = gguf_bytes_u64(b, len)) != 0)
		return rc;
	return gguf_bytes_put(b, s, len);
}

struct gguf_writer *
gguf_writer_create(void)
{
	return calloc(1, sizeof(struct gguf_writer));
}

void
gguf_writer_free(struct gguf_writer *w)
{
	size_t	i;

	if (w == NULL)
		return;
	for (i = 0; i < w->n_kv; i++) {
		free(w->kvs[i].key);
		free(w->kvs[i].val.p);
	}
	free(w->kvs);
	for (i = 0; i < w->n_tensors; i++) {
		free(w->tensors[i].name);
		free(w->tensors[i].data);
	}
	free(w->tensors);
	free(w);
}

/*
 * Store key with its encoded value, replacing an existing key.  Takes
 * ownership of val's bytes in every case.
 */
static int
gguf_writer_put(struct gguf_writer *w, const char *key, struct gguf_bytes *val)
{
	struct gguf_writer_kv	*kv;
	size_t			 i, cap;
	char			*k;

	if (key == NULL || *key == '\0') {
		free(val->p);
		return -EINVAL;
	}
	for (i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kvs[i].key, key) == 0) {
			free(w->kvs[i].val.p);
			w->kvs[i].val = *val;
			return 0;
		}
	}
	if (w->n_kv == w->cap_kv) {
		cap = w->cap_kv ? w->cap_kv * 2 : 32;
		if ((kv = realloc(w->kvs, cap * sizeof *kv)) == NULL) {
			free(val->p);
			return -ENOMEM;
		}
		w->kvs = kv;
		w->cap_kv = cap;
	}
	if ((k = strdup(key)) == NULL) {
		free(val->p);
		return -ENOMEM;
	}
	w->kvs[w->n_kv].key = k;
	w->kvs[w->n_kv].val = *val;
	w->n_kv++;
	return 0;
}

/* Encode a scalar of type t (n bytes at p) and store it under key. */
static int
gguf_writer_set_scalar(struct gguf_writer *w, const char *key,
    enum gguf_type t, const void *p, size_t n)
{
	struct gguf_bytes	b = { 0 };

	if (gguf_bytes_u32(&b, t) != 0 || gguf_bytes_put(&b, p, n) != 0) {
		free(b.p);
		return -ENOMEM;
	}
	return gguf_writer_put(w, key, &b);
}

int
gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
	return gguf_writer_set_scalar(w, key, GGUF_TYPE_UINT32, &v, 4);
}

int
gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v)
{
	return gguf_writer_set_scalar(w, key, GGUF_TYPE_INT32, &v, 4);
}

int
gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v)
{
	return gguf_writer_set_scalar(w, key, GGUF_TYPE_FLOAT32, &v, 4);
}

int
gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v)
{
	uint8_t	b = v != 0;

	return gguf_writer_set_scalar(w, key, GGUF_TYPE_BOOL, &b, 1);
}

int
gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *v)
{
	struct gguf_bytes	b = { 0 };

	if (v == NULL)
		return -EINVAL;
	if (gguf_bytes_u32(&b, GGUF_TYPE_STRING) != 0 ||
	    gguf_bytes_str(&b, v, strlen(v)) != 0) {
		free(b.p);
		return -ENOMEM;
	}
	return gguf_writer_put(w, key, &b);
}

int
gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
    const char *const *v, uint64_t n)
{
	struct gguf_bytes	b = { 0 };
	uint64_t		i;

	if (v == NULL && n > 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (v[i] == NULL)
			return -EINVAL;
	}
	if (gguf_bytes_u32(&b, GGUF_TYPE_ARRAY) != 0 ||
	    gguf_bytes_u32(&b, GGUF_TYPE_STRING) != 0 ||
	    gguf_bytes_u64(&b, n) != 0)
		goto nomem;
	for (i = 0; i < n; i++) {
		if (gguf_bytes_str(&b, v[i], strlen(v[i])) != 0)
			goto nomem;
	}
	return gguf_writer_put(w, key, &b);

nomem:
	free(b.p);
	return -ENOMEM;
}

/* Encode an array of n fixed-size elements (esize bytes each). */
static int
gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_type t,
    const void *v, uint64_t n, size_t esize)
{
	struct gguf_bytes	b = { 0 };

	if (v == NULL && n > 0)
		return -EINVAL;
	if (n > SIZE_MAX / esize)
		return -ENOMEM;
	if (gguf_bytes_u32(&b, GGUF_TYPE_ARRAY) != 0 ||
	    gguf_bytes_u32(&b, t) != 0 || gguf_bytes_u64(&b, n) != 0 ||
	    gguf_bytes_put(&b, v, n * esize) != 0) {
		free(b.p);
		return -ENOMEM;
	}
	return gguf_writer_put(w, key, &b);
}

int
gguf_writer_set_arr_f32(struct gguf_writer *w, const char *key,
    const float *v, uint64_t n)
{
	return gguf_writer_set_arr(w, key, GGUF_TYPE_FLOAT32, v, n, 4);
}

int
gguf_writer_set_arr_i32(struct gguf_writer *w, const char *key,
    const int32_t *v, uint64_t n)
{
	return gguf_writer_set_arr(w, key, GGUF_TYPE_INT32, v, n, 4);
}

/* Bytes of one element of a scalar type, 0 for strings and arrays. */
static size_t
gguf_writer_scalar_size(enum gguf_type t)
{
	switch (t) {
	case GGUF_TYPE_UINT8:
	case GGUF_TYPE_INT8:
	case GGUF_TYPE_BOOL:
		return 1;
	case GGUF_TYPE_UINT16:
	case GGUF_TYPE_INT16:
		return 2;
	case GGUF_TYPE_UINT32:
	case GGUF_TYPE_INT32:
	case GGUF_TYPE_FLOAT32:
		return 4;
	case GGUF_TYPE_UINT64:
	case GGUF_TYPE_INT64:
	case GGUF_TYPE_FLOAT64:
		return 8;
	default:
		return 0;
	}
}

/*
 * The kv came from gguf.c, which validated it, so its value bytes are
 * contiguous in the mapping: a scalar, a string (length and bytes), or an
 * array's elements from kv->data up to the end of the last one.
 */
int
gguf_writer_set_kv(struct gguf_writer *w, const struct gguf_kv *kv)
{
	struct gguf_bytes	 b = { 0 };
	const uint8_t		*p = kv->data;
	uint64_t		 len, n;
	char			*key;
	int			 rc;

	if ((key = strndup(kv->key.ptr, kv->key.len)) == NULL)
		return -ENOMEM;
	if (strlen(key) != kv->key.len) {
		free(key);
		return -EINVAL;	/* a NUL inside the key */
	}
	if (gguf_bytes_u32(&b, kv->type) != 0)
		goto nomem;
	switch (kv->type) {
	case GGUF_TYPE_STRING:
		memcpy(&len, p, 8);
		rc = gguf_bytes_put(&b, p, 8 + len);
		break;
	case GGUF_TYPE_ARRAY:
		n = kv->arr_n;
		if (gguf_bytes_u32(&b, kv->arr_type) != 0 ||
		    gguf_bytes_u64(&b, n) != 0)
			goto nomem;
		if (kv->arr_type == GGUF_TYPE_STRING)
			len = n == 0 ? 0 : (uint64_t)((const uint8_t *)
			    kv->strs[n - 1].ptr + kv->strs[n - 1].len - p);
		else
			len = n * gguf_writer_scalar_size(kv->arr_type);
		rc = gguf_bytes_put(&b, p, len);
		break;
	default:
		rc = gguf_bytes_put(&b, p, gguf_writer_scalar_size(kv->type));
		break;
	}
	if (rc != 0)
		goto nomem;
	rc = gguf_writer_put(w, key, &b);
	free(key);
	return rc;

nomem:
	free(b.p);
	free(key);
	return -ENOMEM;
}

/* Validate a tensor description and append it; data/fill set by caller. */
static int
gguf_writer_new_tensor(struct gguf_writer *w, const char *name,
    enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
    struct gguf_writer_tensor **out)
{
	const struct quant_traits	*tr;
	struct gguf_writer_tensor	*t;
	uint64_t			 n_rows = 1, size;
	size_t				 i, cap;
	uint32_t			 d;

	if (name == NULL || *name == '\0' ||
	    strlen(name) > GGUF_WRITER_MAX_NAME)
		return -EINVAL;
	if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || ne == NULL)
		return -EINVAL;
	if ((tr = quant_traits(type)) == NULL || tr->block_size == 0)
		return -EINVAL;
	for (d = 0; d < n_dims; d++) {
		if (ne[d] == 0 || ne[d] > INT64_MAX)
			return -EINVAL;
		if (d > 0 && (__builtin_mul_overflow(n_rows, ne[d], &n_rows) ||
		    n_rows > INT64_MAX))
			return -EINVAL;
	}
	if (ne[0] % tr->block_size != 0)
		return -EINVAL;
	if (__builtin_mul_overflow(ne[0] / tr->block_size, tr->type_size,
	    &size) || __builtin_mul_overflow(size, n_rows, &size) ||
	    size > INT64_MAX)
		return -EINVAL;
	for (i = 0; i < w->n_tensors; i++) {
		if (strcmp(w->tensors[i].name, name) == 0)
			return -EEXIST;
	}
	if (w->n_tensors == w->cap_tensors) {
		cap = w->cap_tensors ? w->cap_tensors * 2 : 64;
		if ((t = realloc(w->tensors, cap * sizeof *t)) == NULL)
			return -ENOMEM;
		w->tensors = t;
		w->cap_tensors = cap;
	}
	t = &w->tensors[w->n_tensors];
	memset(t, 0, sizeof *t);
	if ((t->name = strdup(name)) == NULL)
		return -ENOMEM;
	t->type = type;
	t->n_dims = n_dims;
	for (d = 0; d < GGUF_MAX_DIMS; d++)
		t->ne[d] = d < n_dims ? ne[d] : 1;
	t->n_rows = n_rows;
	t->row_size = size / n_rows;
	t->size = size;
	*out = t;
	return 0;
}

int
gguf_writer_add_tensor(struct gguf_writer *w, const char *name,
    enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
    const void *data, size_t size)
{
	struct gguf_writer_tensor	*t;
	int				 rc;

	if (data == NULL)
		return -EINVAL;
	if ((rc = gguf_writer_new_tensor(w, name, type, n_dims, ne, &t)) != 0)
		return rc;
	if (t->size != size) {
		free(t->name);
		return -EINVAL;
	}
	if ((t->data = malloc(size)) == NULL) {
		free(t->name);
		return -ENOMEM;
	}
	memcpy(t->data, data, size);
	w->n_tensors++;
	return 0;
}

int
gguf_writer_add_tensor_cb(struct gguf_writer *w, const char *name,
    enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
    int (*fill_cb)(void *, uint64_t, uint64_t, void *), void *arg)
{
	struct gguf_writer_tensor	*t;
	int				 rc;

	if (fill_cb == NULL)
		return -EINVAL;
	if ((rc = gguf_writer_new_tensor(w, name, type, n_dims, ne, &t)) != 0)
		return rc;
	t->fill_cb = fill_cb;
	t->arg = arg;
	w->n_tensors++;
	return 0;
}

static void
gguf_out_flush(struct gguf_out *o)
{
	size_t	done = 0;
	ssize_t	n;

	while (o->err == 0 && done < o->len) {
		n = write(o->fd, o->buf + done, o->len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			o->err = -errno;
		else
			done += n;
	}
	o->len = 0;
}

/* Append n bytes (p NULL: zeros) to the output. */
static void
gguf_out_write(struct gguf_out *o, const void *p, size_t n)
{
	size_t	k;

	o->pos += n;
	while (o->err == 0 && n > 0) {
		if (o->len == GGUF_WRITER_OUTBUF)
			gguf_out_flush(o);
		k = GGUF_WRITER_OUTBUF - o->len;
		if (k > n)
			k = n;
		if (p != NULL) {
			memcpy(o->buf + o->len, p, k);
			p = (const uint8_t *)p + k;
		} else
			memset(o->buf + o->len, 0, k);
		o->len += k;
		n -= k;
	}
}

static void
gguf_out_pad(struct gguf_out *o, uint32_t alignment)
{
	uint64_t	rem = o->pos % alignment;

	if (rem != 0)
		gguf_out_write(o, NULL, alignment - rem);
}

/* The alignment to write with: general.alignment if set, else 32. */
static int
gguf_writer_alignment(const struct gguf_writer *w, uint32_t *out)
{
	const struct gguf_bytes	*b;
	uint32_t		 type, a;
	size_t			 i;

	*out = GGUF_WRITER_ALIGNMENT;
	for (i = 0; i < w->n_kv; i++) {
		if (strcmp(w->kvs[i].key, "general.alignment") != 0)
			continue;
		b = &w->kvs[i].val;
		memcpy(&type, b->p, 4);
		if (type != GGUF_TYPE_UINT32)
			return -EINVAL;
		memcpy(&a, b->p + 4, 4);
		if (a == 0 || (a & (a - 1)) != 0)
			return -EINVAL;
		*out = a;
	}
	return 0;
}

/* Write one tensor's bytes, from its copy or through its callback. */
static int
gguf_writer_emit_tensor(struct gguf_out *o, struct gguf_writer_tensor *t,
    uint8_t **chunk, size_t *chunk_cap)
{
	uint64_t	row, n, per;
	size_t		need;
	int		rc;

	if (t->data != NULL) {
		gguf_out_write(o, t->data, t->size);
		return 0;
	}
	per = GGUF_WRITER_CHUNK / t->row_size;
	if (per == 0)
		per = 1;
	if (per > t->n_rows)
		per = t->n_rows;
	if (per * t->row_size > SIZE_MAX)
		return -ENOMEM;
	need = per * t->row_size;
	if (need > *chunk_cap) {
		free(*chunk);
		if ((*chunk = malloc(need)) == NULL) {
			*chunk_cap = 0;
			return -ENOMEM;
		}
		*chunk_cap = need;
	}
	for (row = 0; row < t->n_rows && o->err == 0; row += n) {
		n = t->n_rows - row < per ? t->n_rows - row : per;
		if ((rc = t->fill_cb(t->arg, row, n, *chunk)) != 0)
			return rc;
		gguf_out_write(o, *chunk, n * t->row_size);
	}
	return 0;
}

/*
 * Write header, metadata, tensor table and data to o.  When producing a
 * tensor's bytes fails, *tensor names it.
 */
static int
gguf_writer_emit(struct gguf_writer *w, struct gguf_out *o,
    uint32_t alignment, const char **tensor)
{
	struct gguf_writer_tensor	*t;
	uint8_t				*chunk = NULL;
	size_t				 i, chunk_cap = 0;
	uint64_t			 off = 0, v64;
	uint32_t			 v32, d;
	int				 rc = 0;

	*tensor = NULL;
	gguf_out_write(o, "GGUF", 4);
	v32 = GGUF_WRITER_VERSION;
	gguf_out_write(o, &v32, 4);
	v64 = w->n_tensors;
	gguf_out_write(o, &v64, 8);
	v64 = w->n_kv;
	gguf_out_write(o, &v64, 8);
	for (i = 0; i < w->n_kv; i++) {
		v64 = strlen(w->kvs[i].key);
		gguf_out_write(o, &v64, 8);
		gguf_out_write(o, w->kvs[i].key, v64);
		gguf_out_write(o, w->kvs[i].val.p, w->kvs[i].val.len);
	}
	for (i = 0; i < w->n_tensors; i++) {
		t = &w->tensors[i];
		t->offset = off;
		off += (t->size + alignment - 1) / alignment * alignment;
		v64 = strlen(t->name);
		gguf_out_write(o, &v64, 8);
		gguf_out_write(o, t->name, v64);
		gguf_out_write(o, &t->n_dims, 4);
		for (d = 0; d < t->n_dims; d++)
			gguf_out_write(o, &t->ne[d], 8);
		v32 = t->type;
		gguf_out_write(o, &v32, 4);
		gguf_out_write(o, &t->offset, 8);
	}
	if (w->n_tensors > 0)
		gguf_out_pad(o, alignment);
	for (i = 0; i < w->n_tensors && o->err == 0; i++) {
		t = &w->tensors[i];
		if ((rc = gguf_writer_emit_tensor(o, t, &chunk,
		    &chunk_cap)) != 0) {
			*tensor = t->name;
			break;
		}
		gguf_out_pad(o, alignment);
	}
	free(chunk);
	if (rc == 0)
		gguf_out_flush(o);
	return rc != 0 ? rc : o->err;
}

/* fsync the directory holding path so the rename is durable. */
static void
gguf_writer_sync_dir(const char *path)
{
	const char	*slash = strrchr(path, '/');
	char		*dir;
	int		 fd;

	if (slash == NULL)
		dir = strdup(".");
	else if (slash == path)
		dir = strdup("/");
	else
		dir = strndup(path, slash - path);
	if (dir == NULL)
		return;
	/* Best effort: some file systems refuse fsync on directories. */
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1) {
		(void)fsync(fd);
		close(fd);
	}
	free(dir);
}

int
gguf_writer_write(struct gguf_writer *w, const char *path, char *err,
    size_t errlen)
{
	struct gguf_out	 o = { .fd = -1 };
	const char	*what, *tensor = NULL;
	char		*tmp = NULL;
	uint32_t	 alignment;
	int		 rc;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if ((rc = gguf_writer_alignment(w, &alignment)) != 0) {
		what = "general.alignment must be a uint32 power of two";
		goto fail;
	}
	if (asprintf(&tmp, "%s.tmp", path) == -1) {
		tmp = NULL;
		rc = -ENOMEM;
		what = "out of memory";
		goto fail;
	}
	if ((o.buf = malloc(GGUF_WRITER_OUTBUF)) == NULL) {
		rc = -ENOMEM;
		what = "out of memory";
		goto fail;
	}
	o.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (o.fd == -1) {
		rc = -errno;
		what = "open";
		goto fail;
	}
	what = "write";
	if ((rc = gguf_writer_emit(w, &o, alignment, &tensor)) != 0)
		goto fail_unlink;
	what = "fsync";
	if (fsync(o.fd) == -1) {
		rc = -errno;
		goto fail_unlink;
	}
	what = "close";
	rc = close(o.fd);
	o.fd = -1;
	if (rc == -1) {
		rc = -errno;
		goto fail_unlink;
	}
	what = "rename";
	if (rename(tmp, path) == -1) {
		rc = -errno;
		goto fail_unlink;
	}
	gguf_writer_sync_dir(path);
	free(o.buf);
	free(tmp);
	return 0;

fail_unlink:
	if (o.fd != -1)
		close(o.fd);
	o.fd = -1;
	unlink(tmp);
fail:
	if (o.fd != -1)
		close(o.fd);
	if (err != NULL && errlen > 0 && tensor != NULL)
		snprintf(err, errlen, "%s: producing tensor %s: %s", path,
		    tensor, strerror(-rc));
	else if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s: %s: %s", path, what, strerror(-rc));
	free(o.buf);
	free(tmp);
	return rc;
}
