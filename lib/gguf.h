/*
 * gguf.h: read-only access to GGUF model files (versions 2 and 3).
 *
 * The file is mapped read-only; metadata values and tensor data are read
 * in place, never copied.  gguf_open() validates the whole header before it
 * returns: magic, version, counts, every string length, every value type,
 * the tensor table (dims, types, offsets, sizes, alignment, overlaps) and
 * the file's end.  After a successful open every pointer handed out by this
 * module points inside the mapping and every size has been checked.
 *
 * Errors are negative errno-style codes; a human-readable cause naming the
 * path, what is wrong and where (byte offset, key or tensor name) is written
 * to the caller's buffer.  Nothing here aborts or exits.
 */
#ifndef GGUF_H
#define GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "quant.h"

enum gguf_type {
	GGUF_TYPE_UINT8 = 0,
	GGUF_TYPE_INT8 = 1,
	GGUF_TYPE_UINT16 = 2,
	GGUF_TYPE_INT16 = 3,
	GGUF_TYPE_UINT32 = 4,
	GGUF_TYPE_INT32 = 5,
	GGUF_TYPE_FLOAT32 = 6,
	GGUF_TYPE_BOOL = 7,
	GGUF_TYPE_STRING = 8,
	GGUF_TYPE_ARRAY = 9,
	GGUF_TYPE_UINT64 = 10,
	GGUF_TYPE_INT64 = 11,
	GGUF_TYPE_FLOAT64 = 12,
};

/* A string inside the mapping: not NUL-terminated. */
struct gguf_str {
	const char	*ptr;
	uint64_t	 len;
};

struct gguf_kv {
	struct gguf_str	 key;
	enum gguf_type	 type;		/* GGUF_TYPE_ARRAY for arrays */
	enum gguf_type	 arr_type;	/* element type when type is ARRAY */
	uint64_t	 arr_n;		/* element count when type is ARRAY */
	const void	*data;		/* the value (or first element) in the
					   mapping; may be unaligned */
	struct gguf_str	*strs;		/* arr_n entries for arrays of strings,
					   else NULL */
};

#define GGUF_MAX_DIMS 4

struct gguf_tensor {
	struct gguf_str	 name;
	uint32_t	 n_dims;
	uint64_t	 ne[GGUF_MAX_DIMS];	/* ne[0] is the row length; unused
						   dims are 1 */
	enum ggml_type	 type;
	uint64_t	 offset;	/* from the start of the data section */
	uint64_t	 size;		/* bytes */
	const void	*data;		/* in the mapping */
};

struct gguf_file;

/*
 * Map and validate a GGUF file.  On success *out holds the file and 0 is
 * returned; on failure a negative errno code is returned, *out is NULL and
 * err (if not NULL) holds a one-line message "PATH: what (where)".
 * Tensors of types quant.h does not support are refused here (-ENOTSUP)
 * only when require_supported is set; a vocabulary-only file has no tensors.
 */
int	 gguf_open(const char *path, int require_supported,
	     struct gguf_file **out, char *err, size_t errlen);
/* Same, over a caller-owned buffer (used by the fuzzer); buf must outlive f. */
int	 gguf_open_buffer(const void *buf, size_t len, const char *name,
	     int require_supported, struct gguf_file **out, char *err,
	     size_t errlen);
void	 gguf_close(struct gguf_file *f);

uint32_t gguf_version(const struct gguf_file *f);
uint64_t gguf_file_size(const struct gguf_file *f);
const void *gguf_base(const struct gguf_file *f);	/* start of mapping */

uint64_t gguf_n_kv(const struct gguf_file *f);
const struct gguf_kv *gguf_kv_at(const struct gguf_file *f, uint64_t i);
const struct gguf_kv *gguf_find_kv(const struct gguf_file *f, const char *key);

/*
 * Typed getters.  Each returns 0 and fills *out, -ENOENT when the key is
 * absent (out untouched), or -EINVAL when its type does not fit (integers of
 * any width are accepted if the value fits; floats accept FLOAT32/FLOAT64).
 */
int	 gguf_get_u32(const struct gguf_file *f, const char *key, uint32_t *out);
int	 gguf_get_u64(const struct gguf_file *f, const char *key, uint64_t *out);
int	 gguf_get_i32(const struct gguf_file *f, const char *key, int32_t *out);
int	 gguf_get_f32(const struct gguf_file *f, const char *key, float *out);
int	 gguf_get_bool(const struct gguf_file *f, const char *key, int *out);
int	 gguf_get_str(const struct gguf_file *f, const char *key,
	     struct gguf_str *out);
/* Arrays: element type and count; for numeric arrays read elements with
 * gguf_arr_f32()/gguf_arr_i32(), for strings use kv->strs. */
int	 gguf_get_arr(const struct gguf_file *f, const char *key,
	     const struct gguf_kv **out);
float	 gguf_arr_f32(const struct gguf_kv *kv, uint64_t i);	/* F32/F64 */
int64_t	 gguf_arr_i64(const struct gguf_kv *kv, uint64_t i);	/* any int */

uint64_t gguf_n_tensors(const struct gguf_file *f);
const struct gguf_tensor *gguf_tensor_at(const struct gguf_file *f, uint64_t i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf_file *f,
	     const char *name);

/* Compare a gguf_str with a C string. */
int	 gguf_str_eq(struct gguf_str s, const char *c);

/*
 * Writing GGUF files (v3, 32-byte alignment).  Used by the random-model
 * tool in tests/, by `make bench` and by the daemon's demo model.  The
 * writer collects metadata and tensor descriptions, then streams the file
 * to a temporary name, fsyncs and renames it into place.
 */
struct gguf_writer;

struct gguf_writer *gguf_writer_create(void);
void	 gguf_writer_free(struct gguf_writer *w);
int	 gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int	 gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int	 gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int	 gguf_writer_set_bool(struct gguf_writer *w, const char *key, int v);
int	 gguf_writer_set_str(struct gguf_writer *w, const char *key,
	     const char *v);
int	 gguf_writer_set_arr_str(struct gguf_writer *w, const char *key,
	     const char *const *v, uint64_t n);
int	 gguf_writer_set_arr_f32(struct gguf_writer *w, const char *key,
	     const float *v, uint64_t n);
int	 gguf_writer_set_arr_i32(struct gguf_writer *w, const char *key,
	     const int32_t *v, uint64_t n);
/* Adds a tensor; data (size bytes, which must equal the type's row size
 * times the row count) is copied.  ne has n_dims entries. */
int	 gguf_writer_add_tensor(struct gguf_writer *w, const char *name,
	     enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
	     const void *data, size_t size);
/*
 * Adds a tensor whose bytes are produced while the file is written, so a
 * large model never has to sit in memory: fill_cb(arg, row0, n_rows, dst)
 * must write rows [row0, row0 + n_rows) (a row is ne[0] elements encoded
 * in type, quant_row_size() bytes) to dst and return 0 or a negative errno
 * code, which aborts the write.  It is called in row order, in chunks of a
 * few MiB, from inside gguf_writer_write(); arg must live until then.
 */
int	 gguf_writer_add_tensor_cb(struct gguf_writer *w, const char *name,
	     enum ggml_type type, uint32_t n_dims, const uint64_t *ne,
	     int (*fill_cb)(void *arg, uint64_t row0, uint64_t n_rows,
	     void *dst), void *arg);
/* Copies a key and its value (any type) from an open file. */
int	 gguf_writer_set_kv(struct gguf_writer *w, const struct gguf_kv *kv);
int	 gguf_writer_write(struct gguf_writer *w, const char *path, char *err,
	     size_t errlen);

#endif /* GGUF_H */
