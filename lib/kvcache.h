/*
 * kvcache.h: one sequence's rolling-buffer key/value cache.
 *
 * For every layer, K and V live in a ring of W slots: the (already
 * RoPE-rotated) key and the value of absolute position p sit in slot
 * p mod W.  The first G positions of the sequence (global tokens: BOS and
 * the system prompt, for a chat) are pinned in G extra slots outside the
 * ring, and every later query may attend to them.  The cache's size is
 * fixed at creation however many tokens pass through it:
 *
 *	bytes = layers x 2 x (W + G) x kv_heads x head_dim x element size
 *
 * A query at position t attends to positions max(base, t-W+1) .. t plus
 * the global positions base .. base+G-1, where base is the sequence's
 * first position (0 unless set with kvcache_set_base()).
 *
 * Serialisation writes a versioned header (model fingerprint, layout,
 * element type, W, G, base and the positions covered) followed by the
 * slots' bytes; it can cover everything or only the slots written since a
 * given position, so snapshots can be incremental.
 */
#ifndef KVCACHE_H
#define KVCACHE_H

#include <stddef.h>
#include <stdint.h>

struct model;
struct kvcache;

enum kv_type {
	KV_TYPE_F32 = 0,
	KV_TYPE_F16 = 1,	/* the default */
	KV_TYPE_Q8_0 = 2,
};

struct kv_params {
	uint32_t	 window;	/* W; 0: model_window(m, 0, 0) */
	uint32_t	 n_global;	/* G; 0 by default */
	enum kv_type	 type;
};

const char *kv_type_name(enum kv_type t);
int	 kv_type_parse(const char *s, enum kv_type *out);	/* 0 or -EINVAL */

/* Bytes a cache with these parameters takes (without creating it). */
size_t	 kvcache_size_for(const struct model *m, const struct kv_params *p);

/* Returns 0, -EINVAL (bad parameters) or -ENOMEM. */
int	 kvcache_create(const struct model *m, const struct kv_params *p,
	     struct kvcache **out);
void	 kvcache_free(struct kvcache *kv);
/* Copy src's whole state into dst (same model and parameters). */
int	 kvcache_copy(struct kvcache *dst, const struct kvcache *src);
/* Forget every token; the next one is at position `base`. */
void	 kvcache_reset(struct kvcache *kv, int64_t base);

const struct kv_params *kvcache_params(const struct kvcache *kv);
size_t	 kvcache_bytes(const struct kvcache *kv);
int64_t	 kvcache_base(const struct kvcache *kv);
int64_t	 kvcache_pos(const struct kvcache *kv);	/* next position */
/* Tokens no longer visible to any later query (outside window and globals). */
int64_t	 kvcache_evicted(const struct kvcache *kv);

/* ---- serialisation ------------------------------------------------- */

#define KVCACHE_MAGIC	0x3156534bu	/* "KSV1" little-endian */
#define KVCACHE_VERSION	1

typedef int kvcache_write_fn(void *ctx, const void *buf, size_t len);
typedef int kvcache_read_fn(void *ctx, void *buf, size_t len);

/*
 * Stream the state: positions written at or after `since` that are still
 * held (since <= base: everything).  write returns 0 or a negative code,
 * which stops the stream and is returned.  Returns 0 on success.
 */
int	 kvcache_save(const struct kvcache *kv, int64_t since,
	     kvcache_write_fn *write, void *ctx);
/* Bytes kvcache_save() would produce for `since`. */
size_t	 kvcache_save_size(const struct kvcache *kv, int64_t since);

/*
 * Apply a stream written by kvcache_save(): a full one onto any cache of
 * the same model and parameters, an incremental one (since = p) onto a
 * cache whose position lies between p and the stream's end.  The header is
 * checked before anything is written (magic, checksum, version,
 * fingerprint, layout, type, W, G, positions): -EINVAL malformed, -ESTALE
 * written for another model, -ERANGE positions do not join, -ENOMEM; the
 * cache is then unchanged.  If the body cannot be read (-EIO) the cache is
 * reset to empty, never left half-restored.  A position's rows are written
 * and read with one call each.
 */
int	 kvcache_restore(struct kvcache *kv, kvcache_read_fn *read, void *ctx);

/* Same over memory buffers; restore_buf also checks the length exactly
 * before touching the cache. */
int	 kvcache_save_buf(const struct kvcache *kv, int64_t since, void **buf,
	     size_t *len);	/* malloc'd */
int	 kvcache_restore_buf(struct kvcache *kv, const void *buf, size_t len);

#endif /* KVCACHE_H */
