/*
 * method-server.c: methods about the daemon and its model rather than a
 * session: hello, status, tokenize, detokenize.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mistrald.h"

/* The model-map of protocol.h. */
void
method_pack_model(msgpack_packer *pk)
{
	const struct model_hparams *hp = model_hparams(model);
	char fp[17];
	uint32_t w;
	int exact;

	w = model_window(model, 0, cfg.window, &exact);
	snprintf(fp, sizeof fp, "%016llx",
	    (unsigned long long)model_fingerprint(model));
	msgpack_pack_map(pk, 12);
	proto_pack_kv_str(pk, "name", model_name(model));
	proto_pack_kv_str(pk, "arch", "llama");
	proto_pack_kv_str(pk, "file_type", model_file_type(model));
	proto_pack_kv_uint(pk, "params", model_n_params(model));
	proto_pack_kv_uint(pk, "layers", hp->n_layers);
	proto_pack_kv_uint(pk, "vocab", hp->n_vocab);
	proto_pack_kv_uint(pk, "window", w);
	proto_pack_kv_uint(pk, "context", hp->ctx_len);
	proto_pack_kv_str(pk, "template",
	    chat_template_name(residency_default_template(NULL)));
	proto_pack_kv_uint(pk, "experts", hp->n_experts);
	proto_pack_kv_str(pk, "fingerprint", fp);
	proto_pack_kv_bool(pk, "demo", model_is_demo);
}

static void
method_pack_version(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint32(pk, PROTO_VERSION_MAJOR);
	msgpack_pack_uint32(pk, PROTO_VERSION_MINOR);
}

int
method_hello(struct request *req)
{
	const msgpack_object *v;
	struct reply r;
	char server[64];

	if (proto_arg_array(req->args, "proto", &v) == PROTO_ARG_OK) {
		const msgpack_object *major = v->via.array.size > 0 ?
		    &v->via.array.ptr[0] : NULL;

		if (major == NULL ||
		    major->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "hello: 'proto' must be [major, minor]");
			return 0;
		}
		if (major->via.u64 != PROTO_VERSION_MAJOR) {
			reply_error(req->c, req->msgid,
			    PROTO_E_VERSION_MISMATCH, "client speaks protocol "
			    "%llu, this daemon speaks %d.%d",
			    (unsigned long long)major->via.u64,
			    PROTO_VERSION_MAJOR, PROTO_VERSION_MINOR);
			return 0;
		}
	}
	snprintf(server, sizeof server, "mistrald %s", PACKAGE_VERSION);
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 4);
	proto_pack_cstr(&r.pk, "proto");
	method_pack_version(&r.pk);
	proto_pack_kv_str(&r.pk, "server", server);
	proto_pack_cstr(&r.pk, "model");
	method_pack_model(&r.pk);
	proto_pack_kv_uint(&r.pk, "uid", req->c->uid);
	reply_send(&r, req->c);
	return 0;
}

/* Resident set size from /proc, in bytes (0 if unknown). */
static uint64_t
method_rss(void)
{
	unsigned long long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "re");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%llu %llu", &pages, &rss) != 2)
		rss = 0;
	fclose(f);
	return (uint64_t)rss * 4096;
}

int
method_status(struct request *req)
{
	struct engine_stats es;
	struct store_stats ss;
	struct session *s;
	struct reply r;
	char server[64];
	uint64_t resident = 0, active = 0, waiting = 0, lag = 0;

	engine_get_stats(engine, &es);
	residency_stats(&ss);
	TAILQ_FOREACH(s, &sessions, entry) {
		if (s->kv != NULL)
			resident++;
		if (s->state == SESSION_BUSY)
			active++;
		if (s->state == SESSION_LOADING)
			waiting++;
		if (s->persist_pending > 0)
			lag++;
	}
	snprintf(server, sizeof server, "mistrald %s", PACKAGE_VERSION);
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 12 + (watch_error() != NULL));
	if (watch_error() != NULL)
		proto_pack_kv_str(&r.pk, "model_error", watch_error());
	proto_pack_kv_str(&r.pk, "server", server);
	proto_pack_cstr(&r.pk, "proto");
	method_pack_version(&r.pk);
	proto_pack_cstr(&r.pk, "model");
	method_pack_model(&r.pk);
	proto_pack_kv_uint(&r.pk, "uptime", (now_ms() - start_time_ms) / 1000);
	proto_pack_cstr(&r.pk, "sessions");
	msgpack_pack_map(&r.pk, 3);
	proto_pack_kv_uint(&r.pk, "resident", resident);
	proto_pack_kv_uint(&r.pk, "stored", (uint64_t)ss.sessions);
	proto_pack_kv_uint(&r.pk, "active", active);
	proto_pack_kv_int(&r.pk, "connections", server_n_clients());
	proto_pack_cstr(&r.pk, "memory");
	msgpack_pack_map(&r.pk, 3);
	proto_pack_kv_uint(&r.pk, "kv_bytes", kv_resident_bytes);
	proto_pack_kv_uint(&r.pk, "kv_budget", cfg.kv_budget);
	proto_pack_kv_uint(&r.pk, "rss", method_rss());
	proto_pack_cstr(&r.pk, "disk");
	msgpack_pack_map(&r.pk, 3);
	proto_pack_kv_int(&r.pk, "bytes", ss.file_bytes);
	proto_pack_kv_uint(&r.pk, "snapshot_lag", lag);
	proto_pack_kv_int(&r.pk, "last_snapshot", ss.last_snapshot / 1000);
	proto_pack_cstr(&r.pk, "throughput");
	msgpack_pack_map(&r.pk, 2);
	proto_pack_kv_double(&r.pk, "prefill_tps", es.prefill_ms > 0 ?
	    es.prefill_tokens * 1e3 / es.prefill_ms : 0);
	proto_pack_kv_double(&r.pk, "decode_tps", es.decode_ms > 0 ?
	    es.decode_tokens * 1e3 / es.decode_ms : 0);
	proto_pack_cstr(&r.pk, "queue");
	msgpack_pack_map(&r.pk, 2);
	proto_pack_kv_uint(&r.pk, "waiting", waiting);
	proto_pack_kv_uint(&r.pk, "running", (uint64_t)es.running);
	proto_pack_kv_str(&r.pk, "kernels", blas_core != NULL ? blas_core :
	    "default");
	proto_pack_kv_str(&r.pk, "state_dir", cfg.state_dir);
	reply_send(&r, req->c);
	return 0;
}

int
method_tokenize(struct request *req)
{
	const struct tokenizer *tok = daemon_tokenizer();
	struct reply r;
	const char *text;
	size_t len;
	int32_t *ids = NULL;
	int64_t n, m;
	bool bos = false;
	char hex[8];

	proto_arg_str(req->args, "text", &text, &len);
	proto_arg_bool(req->args, "bos", &bos);
	n = tokenizer_encode(tok, text, len, bos ? TOKENIZE_ADD_BOS : 0, NULL,
	    0);
	if (n >= 0 && (ids = malloc(((size_t)n + 1) * sizeof *ids)) == NULL)
		n = -ENOMEM;
	if (n >= 0 && (m = tokenizer_encode(tok, text, len, bos ?
	    TOKENIZE_ADD_BOS : 0, ids, n)) != n)
		n = m < 0 ? m : -EIO;
	if (n < 0) {
		free(ids);
		reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
		    "cannot tokenize: %s", strerror((int)-n));
		return 0;
	}
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 2);
	proto_pack_cstr(&r.pk, "ids");
	msgpack_pack_array(&r.pk, (size_t)n);
	for (int64_t i = 0; i < n; i++)
		msgpack_pack_int32(&r.pk, ids[i]);
	proto_pack_cstr(&r.pk, "pieces");
	msgpack_pack_array(&r.pk, (size_t)n);
	for (int64_t i = 0; i < n; i++) {
		const char *p = tokenizer_piece(tok, ids[i]);
		size_t pl = p != NULL ? strlen(p) : 0;

		if (p != NULL && proto_utf8_valid(p, pl)) {
			proto_pack_str(&r.pk, p, pl);
			continue;
		}
		msgpack_pack_str(&r.pk, pl * 6);
		for (size_t k = 0; k < pl; k++) {
			snprintf(hex, sizeof hex, "<0x%02X>",
			    (unsigned char)p[k]);
			msgpack_pack_str_body(&r.pk, hex, 6);
		}
	}
	free(ids);
	reply_send(&r, req->c);
	return 0;
}

int
method_detokenize(struct request *req)
{
	const struct tokenizer *tok = daemon_tokenizer();
	const msgpack_object *arr;
	struct reply r;
	int32_t *ids;
	char *text;
	uint32_t n;

	proto_arg_array(req->args, "ids", &arr);
	n = arr->via.array.size;
	ids = malloc(((size_t)n + 1) * sizeof *ids);
	if (ids == NULL) {
		reply_error(req->c, req->msgid, PROTO_E_NO_MEMORY, NULL);
		return 0;
	}
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *o = &arr->via.array.ptr[i];

		if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
		    o->via.u64 >= (uint64_t)tokenizer_n_vocab(tok)) {
			free(ids);
			reply_error(req->c, req->msgid, PROTO_E_INVALID_PARAMS,
			    "ids[%u] is not a token id (0 to %d)", i,
			    tokenizer_n_vocab(tok) - 1);
			return 0;
		}
		ids[i] = (int32_t)o->via.u64;
	}
	text = tokenizer_decode(tok, ids, n, 0);
	free(ids);
	if (text == NULL) {
		reply_error(req->c, req->msgid, PROTO_E_NO_MEMORY, NULL);
		return 0;
	}
	reply_begin(&r, req->msgid);
	msgpack_pack_map(&r.pk, 1);
	proto_pack_kv_str(&r.pk, "text", text);
	free(text);
	reply_send(&r, req->c);
	return 0;
}
