/*
 * protocol.h: the mistrald wire protocol, written down in one place.
 *
 * Transport: a Unix stream socket carrying a plain stream of msgpack
 * objects, with no extra framing, so that any standard msgpack-RPC client
 * works unchanged.  Three kinds of message (the msgpack-RPC specification):
 *
 *	request		[0, msgid, method, params]	client -> daemon
 *	response	[1, msgid, error, result]	daemon -> client
 *	notification	[2, method, params]		daemon -> client
 *
 * msgid is an unsigned 32-bit integer chosen by the client; each request
 * gets exactly one response carrying the same msgid.  Responses to
 * different requests may arrive in any order (a "chat" keeps streaming
 * while a "status" is answered).  params is an array holding one map of
 * named arguments, [{"session": "a1b2", "text": "hi"}], or the empty array
 * when there are none; a nil argument is the same as an absent one.
 * Exactly one of error and result is nil.  An error is the map
 * {"code": <int, enum proto_error>, "message": <str>}.
 *
 * Limits (struct proto_limits, defaults below): every incoming message is
 * bounds-checked by proto_scan() before msgpack-c sees it.  A message over
 * the limits, or malformed, is answered with TOO_LARGE or PARSE_ERROR
 * (carrying its msgid when one can be read) and the connection is closed.
 * So is a message that is msgpack but not a request (INVALID_REQUEST, or
 * INVALID_PARAMS when only params is not [] or [map]): that peer does not
 * speak this protocol.  Errors in a method's arguments keep the connection.
 * The daemon's own messages stay under PROTO_MAX_MESSAGE_OUT; clients
 * should accept at least that much.
 *
 * Versioning: PROTO_VERSION_MAJOR changes on every incompatible change
 * (a method, argument or field removed or changing meaning); MINOR on
 * additions.  Unknown arguments are ignored and unknown result fields must
 * be ignored by clients, so additions are compatible.
 *
 * Sessions are named in every call by "session": an id, a unique prefix
 * of an id (at least 4 characters), or a name; the daemon resolves it in
 * that order among the sessions the caller may see (an exact id, then an
 * exact name, then a unique prefix; several matches give AMBIGUOUS).
 * Ids are 32 lowercase hex digits (128 random bits).  Names are 1..64
 * bytes of [A-Za-z0-9._-] and unique per owner.  A session belongs to the
 * uid that created it; others (except root and the admin group) get
 * NO_SUCH_SESSION for it, as though it did not exist.
 *
 * Text: every string is UTF-8.  Streamed text is only ever cut between
 * whole characters, so a client may print each piece as it comes.  A
 * model can generate U+0000: what it wrote (a reply, a turn-map's text,
 * an assistant or completion message) may hold NUL bytes, so take a
 * string's length from msgpack, never from a terminator.
 */
#ifndef PROTOCOL_H
#define PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define PROTO_VERSION_MAJOR	1
#define PROTO_VERSION_MINOR	0

/* Where the daemon listens unless told otherwise (see proto_socket_path). */
#define PROTO_SOCKET_ENV	"MISTRALD_SOCKET"
#define PROTO_SOCKET_USER	"mistrald/mistrald.sock" /* $XDG_RUNTIME_DIR/ */
#define PROTO_SOCKET_STATE	"mistrald/mistrald.sock" /* without
			$XDG_RUNTIME_DIR: under $XDG_STATE_HOME, or
			~/.local/state, with the daemon's state */
#define PROTO_SOCKET_SYSTEM	"/run/mistrald/mistrald.sock"

enum proto_type {
	PROTO_REQUEST = 0,
	PROTO_RESPONSE = 1,
	PROTO_NOTIFICATION = 2,
};

/*
 * Methods.  Arguments are listed as name:type, "?" marking optional ones;
 * "params" is a sampling map (below); "info" is a session-info map (below).
 *
 * hello		proto:[major,minor]?  client:str?
 *	-> {proto:[major,minor], server:str, model:model-map, uid:int}
 *	Optional.  A major version other than ours gives VERSION_MISMATCH.
 *	model-map: {name, arch, file_type, params:int (parameter count),
 *	layers, vocab, window, context, template, experts (0: dense),
 *	fingerprint:str (hex), demo:bool (random weights)}.
 * session.create	name:str?  system:str?  params?  window:int?
 *			n_global:int?  template:str?
 *	-> info.  window 0 or absent: the model's; n_global absent: enough for
 *	BOS and the system prompt.
 * session.list		all:bool?  (root/admin: every uid's)
 *	-> {sessions:[info, ...]}, most recently updated first.
 * session.get		session:str  messages:int? (the last N; absent: all)
 *	-> info + {messages:[{role:str, text:str, tokens:int, time:int}, ...]}
 *	roles: "system", "user", "assistant", and for raw text added by
 *	generate, "prompt" and "completion".
 * session.set		session  name:str?  system:str?  params?  window:int?
 *			n_global:int?
 *	-> info.  params are merged key by key into the session's; a key with
 *	a nil value returns it to the default.  Changing window or n_global
 *	(or the system prompt of a session that has turns) re-prefills.
 * session.delete	session
 *	-> {id:str}
 * session.fork		session  name:str?
 *	-> info of the new session (same transcript, cache and sampler).
 * session.export	session
 *	-> document: {format:"mistrald-session", version:1, name, system,
 *	   params, window, n_global, template, model:str,
 *	   messages:[{role, text}, ...]}
 *	The client writes it as JSON; it carries no cache, only text.
 * session.import	document:map  name:str?
 *	-> info.  The messages are re-prefilled (the response may take long
 *	and streams "progress" notifications).  Only assistant and
 *	completion messages may hold NUL bytes, as an export may.
 * chat			session  text:str  params?  stream:bool? (default true)
 *	Appends a user turn and streams the assistant's reply as "token"
 *	notifications, then answers with a turn-map.
 * generate		session:str?  prompt:str  params?  stream:bool?
 *			bos:bool? (one-off only; default true)
 *	Raw completion.  In a session the prompt (may be empty) is appended
 *	to the session's text and continued; the first call on an empty
 *	session starts from BOS.  Without a session: a one-off completion.
 *	Streams like chat, answers with a turn-map.
 * cancel		request:int?  session:str?
 *	-> {cancelled:bool}.  Stops this connection's request with that msgid,
 *	or the turn running in that session.  The stopped request still gets
 *	its own response, with finish "cancelled".
 * tokenize		text:str  bos:bool? (default false)
 *	-> {ids:[int, ...], pieces:[str, ...]} (a piece that is not whole
 *	UTF-8 on its own is shown as "<0xNN>" per byte).
 * detokenize		ids:[int, ...]
 *	-> {text:str}
 * status		(none)
 *	-> {server:str, proto:[major,minor], model:model-map, uptime:int,
 *	   sessions:{resident, stored, active}, connections:int,
 *	   memory:{kv_bytes, kv_budget, rss},
 *	   disk:{bytes, snapshot_lag, last_snapshot},
 *	   throughput:{prefill_tps:float, decode_tps:float},
 *	   queue:{waiting, running}, kernels:str, state_dir:str,
 *	   model_error:str? (present once the model file was damaged under
 *	   the daemon: turns are then refused with UNAVAILABLE)}
 *
 * params (sampling map; any subset; per request they override the
 * session's for that request only): temperature:float, top_k:int,
 * top_p:float, min_p:float, repeat_penalty:float, repeat_last_n:int,
 * seed:uint, max_tokens:int, stop:[str, ...].  Integers are accepted
 * where a float is expected.
 *
 * info (session-info map): {id:str, name:str (may be ""), owner:int,
 * created:int, updated:int (unix seconds), turns:int, tokens:int (in the
 * history), window:int, n_global:int, in_window:int (tokens a new query
 * sees), mode:"exact"|"evicting", state:"resident"|"stored"|"busy",
 * bytes_memory:int, bytes_disk:int, system:str, template:str, params}.
 *
 * turn-map (result of chat and generate): {finish:str (PROTO_FINISH_*),
 * text:str (the whole reply), usage:{prompt_tokens (actually prefilled
 * for this request), completion_tokens, prefill_ms, decode_ms (floats)},
 * evicted:int (tokens pushed out of the window by this turn), mode,
 * rebuilt:bool (cache rebuilt from the transcript), error:error-map?
 * (when finish is "error"), persist_error:str?}.  In a session the
 * result comes once the transaction storing the turn has committed, so
 * an answered turn survives a crash; persist_error is there instead when
 * the turn completed but could not be stored: "not stored yet: ..." (the
 * save is kept and retried; the result does not wait for the retries)
 * or "not stored: ..." (given up).  A one-off generate is answered at
 * once.  A request that fails before generating anything gets an error
 * response instead.
 */
enum proto_method {
	PROTO_M_HELLO,
	PROTO_M_SESSION_CREATE,
	PROTO_M_SESSION_LIST,
	PROTO_M_SESSION_GET,
	PROTO_M_SESSION_SET,
	PROTO_M_SESSION_DELETE,
	PROTO_M_SESSION_FORK,
	PROTO_M_SESSION_EXPORT,
	PROTO_M_SESSION_IMPORT,
	PROTO_M_CHAT,
	PROTO_M_GENERATE,
	PROTO_M_CANCEL,
	PROTO_M_TOKENIZE,
	PROTO_M_DETOKENIZE,
	PROTO_M_STATUS,
	PROTO_M_COUNT
};

/*
 * Notifications (daemon -> client), always about one request of the same
 * connection and always sent before that request's response:
 *
 * token	{request:int (msgid), text:str, ids:[int, ...]}
 *	Generated text; text may be "" while a UTF-8 character or a possible
 *	stop string is still incomplete.  Stop strings are never streamed.
 * progress	{request:int, done:int, total:int}
 *	Prompt tokens prefilled so far (sent for long prompts only).
 */
#define PROTO_N_TOKEN		"token"
#define PROTO_N_PROGRESS	"progress"

/* Why a turn ended: the "finish" field of a turn-map. */
enum proto_finish {
	PROTO_FINISH_STOP,	/* "stop": EOS or a stop string */
	PROTO_FINISH_LENGTH,	/* "length": max_tokens reached */
	PROTO_FINISH_CANCELLED,	/* "cancelled": cancel or client gone */
	PROTO_FINISH_ERROR,	/* "error": see the turn-map's error */
};

/* Error codes: the "code" of an error map.  Never renumber. */
enum proto_error {
	PROTO_E_PARSE = 1,		/* malformed msgpack */
	PROTO_E_INVALID_REQUEST = 2,	/* not [0, msgid, method, params] */
	PROTO_E_METHOD_NOT_FOUND = 3,	/* unknown method */
	PROTO_E_INVALID_PARAMS = 4,	/* missing or wrongly typed argument */
	PROTO_E_TOO_LARGE = 5,		/* over a size or nesting limit */
	PROTO_E_VERSION_MISMATCH = 6,	/* hello: incompatible major version */
	PROTO_E_NO_SUCH_SESSION = 7,	/* unknown (or not yours) */
	PROTO_E_AMBIGUOUS = 8,		/* prefix matches several sessions */
	PROTO_E_EXISTS = 9,		/* name already taken */
	PROTO_E_PERMISSION_DENIED = 10,	/* not allowed for this uid */
	PROTO_E_BUSY = 11,		/* session is running another turn */
	PROTO_E_LIMIT_EXCEEDED = 12,	/* too many sessions, prompt too long */
	PROTO_E_NO_MEMORY = 13,		/* memory budget cannot fit it */
	PROTO_E_CANCELLED = 14,		/* cancelled before it started */
	PROTO_E_NO_SUCH_REQUEST = 15,	/* cancel: nothing to cancel */
	PROTO_E_UNAVAILABLE = 16,	/* shutting down, model not loaded */
	PROTO_E_STORAGE = 17,		/* the session store failed */
	PROTO_E_INTERNAL = 18,		/* a bug: see the daemon's log */
	PROTO_E_MAX = 18
};

/*
 * Limits on incoming messages, checked by proto_scan() from headers alone,
 * before any payload arrives.  Depth counts containers: a request whose
 * argument map holds a params map holding a stop array is depth 5.
 * max_objects bounds what msgpack-c allocates while unpacking (about 24
 * bytes per object), since a message of one-byte elements would otherwise
 * cost 24 times its size.  Depths over 32 (msgpack-c's own) are clamped.
 */
struct proto_limits {
	size_t		 max_message;	/* bytes in one message */
	uint32_t	 max_depth;	/* container nesting */
	uint32_t	 max_str;	/* bytes in one str or bin */
	uint32_t	 max_entries;	/* array elements, or map pairs */
	uint32_t	 max_objects;	/* objects in the whole message */
};

#define PROTO_MAX_MESSAGE	(4U << 20)
#define PROTO_MAX_DEPTH		8
#define PROTO_MAX_STR		(1U << 20)
#define PROTO_MAX_ENTRIES	65536
#define PROTO_MAX_OBJECTS	(1U << 18)
#define PROTO_MAX_MESSAGE_OUT	(16U << 20)	/* what clients must accept */
#define PROTO_LIMITS_DEFAULT \
	{ PROTO_MAX_MESSAGE, PROTO_MAX_DEPTH, PROTO_MAX_STR, \
	  PROTO_MAX_ENTRIES, PROTO_MAX_OBJECTS }
/* What a client accepts from the daemon. */
#define PROTO_LIMITS_CLIENT \
	{ PROTO_MAX_MESSAGE_OUT, PROTO_MAX_DEPTH, PROTO_MAX_MESSAGE_OUT, \
	  1U << 20, 1U << 22 }

/* frame.c */
enum proto_scan_result {
	PROTO_SCAN_OK,		/* one whole object of *msg_len bytes */
	PROTO_SCAN_MORE,	/* incomplete; *msg_len: at least this long */
	PROTO_SCAN_TOO_BIG,	/* over a size limit; *msg_len: size if known */
	PROTO_SCAN_BAD,		/* malformed or too deep; *msg_len: offset */
};
/*
 * Scan the msgpack object at the start of buf without allocating.  On
 * MORE, *msg_len is a lower bound on the object's total length (> len),
 * so a caller can wait for that many bytes before scanning again.
 * Ext types and the never-used byte 0xc1 are BAD.
 */
enum proto_scan_result proto_scan(const uint8_t *buf, size_t len,
	    const struct proto_limits *lim, size_t *msg_len);
/* Best effort: read the msgid of a request at buf (complete or not).
 * Returns 0 and sets *msgid, or -1. */
int	 proto_peek_msgid(const uint8_t *buf, size_t len, uint32_t *msgid);
/* Unpack exactly len bytes that proto_scan() accepted.  Returns 0, or
 * -EBADMSG / -ENOMEM (out is then destroyed and re-initialised). */
int	 proto_decode(const uint8_t *buf, size_t len, msgpack_unpacked *out);

/* rpc.c: a decoded message, pointing into the msgpack object tree. */
struct proto_msg {
	enum proto_type		 type;
	uint32_t		 msgid;		/* request, response */
	const char		*method;	/* request, notification; */
	size_t			 method_len;	/*  not NUL-terminated */
	const msgpack_object	*args;		/* the argument map or NULL */
	const msgpack_object	*error;		/* response: NULL if none */
	const msgpack_object	*result;	/* response: NULL if error */
};
/* Returns 0, or PROTO_E_INVALID_REQUEST (shape) or PROTO_E_INVALID_PARAMS
 * (params not [] or [map]).  msgid is filled as soon as it was read. */
int	 proto_parse(const msgpack_object *o, struct proto_msg *m);
/* Method lookup: the enum, or -1 when unknown. */
int	 proto_method_find(const char *name, size_t len);
const char *proto_method_name(enum proto_method m);
const char *proto_finish_name(enum proto_finish f);
/* Returns -1 for an unknown name. */
int	 proto_finish_find(const char *name, size_t len);
/* Short English message and upper-case name ("NO_SUCH_SESSION") for a
 * code; unknown codes give "unknown error" and "UNKNOWN". */
const char *proto_error_message(int code);
const char *proto_error_name(int code);

/*
 * Argument getters over an argument map (NULL is an empty map).  Each
 * returns PROTO_ARG_OK and fills the out-parameter, or another result and
 * leaves it untouched: MISSING (absent or nil), WRONG_TYPE, RANGE (integer
 * out of range for the C type, string with a NUL byte or too long).
 */
enum proto_arg_result {
	PROTO_ARG_OK,
	PROTO_ARG_MISSING,
	PROTO_ARG_WRONG_TYPE,
	PROTO_ARG_RANGE,
};
const msgpack_object *proto_arg(const msgpack_object *map, const char *key);
int	 proto_arg_str(const msgpack_object *map, const char *key,
	     const char **s, size_t *len);
/* Copy a string argument into buf as a C string (RANGE if it does not fit
 * or holds a NUL). */
int	 proto_arg_cstr(const msgpack_object *map, const char *key, char *buf,
	     size_t cap);
int	 proto_arg_int(const msgpack_object *map, const char *key, int64_t *v);
int	 proto_arg_uint(const msgpack_object *map, const char *key,
	     uint64_t *v);
int	 proto_arg_double(const msgpack_object *map, const char *key,
	     double *v);
int	 proto_arg_bool(const msgpack_object *map, const char *key, bool *v);
int	 proto_arg_map(const msgpack_object *map, const char *key,
	     const msgpack_object **v);
int	 proto_arg_array(const msgpack_object *map, const char *key,
	     const msgpack_object **v);
/* "argument 'text' is missing" and so on, into buf; returns buf. */
const char *proto_arg_explain(const char *key, int result, char *buf,
	     size_t cap);

/*
 * Packing.  Every function returns 0, or -1 when the packer's write
 * failed (out of memory for an sbuffer).  The *_begin functions open a
 * message whose argument map (or result) the caller then packs: nargs
 * key/value pairs; nargs 0 packs the empty params array.
 */
int	 proto_pack_request(msgpack_packer *pk, uint32_t msgid,
	     const char *method, uint32_t nargs);
int	 proto_pack_notification(msgpack_packer *pk, const char *method,
	     uint32_t nargs);
/* [1, msgid, nil, ...: the caller packs exactly one result object. */
int	 proto_pack_response_ok(msgpack_packer *pk, uint32_t msgid);
/* A whole error response; message NULL uses proto_error_message(). */
int	 proto_pack_response_error(msgpack_packer *pk, uint32_t msgid,
	     int code, const char *message);
/* Whole "token" and "progress" notifications. */
int	 proto_pack_token(msgpack_packer *pk, uint32_t request,
	     const char *text, size_t len, const int32_t *ids, size_t n_ids);
int	 proto_pack_progress(msgpack_packer *pk, uint32_t request,
	     uint64_t done, uint64_t total);
int	 proto_pack_str(msgpack_packer *pk, const char *s, size_t len);
int	 proto_pack_cstr(msgpack_packer *pk, const char *s); /* NULL: nil */
/* One key/value pair of a map. */
int	 proto_pack_kv_str(msgpack_packer *pk, const char *key,
	     const char *value);
int	 proto_pack_kv_int(msgpack_packer *pk, const char *key, int64_t v);
int	 proto_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t v);
int	 proto_pack_kv_double(msgpack_packer *pk, const char *key, double v);
int	 proto_pack_kv_bool(msgpack_packer *pk, const char *key, bool v);
/* An error map {code, message} (message NULL: the default). */
int	 proto_pack_error_map(msgpack_packer *pk, int code,
	     const char *message);

/* utf8.c */
/* len minus a trailing incomplete (so far valid) character, i.e. what
 * can be sent now while the tail waits for its next bytes. */
size_t	 proto_utf8_complete(const char *s, size_t len);
bool	 proto_utf8_valid(const char *s, size_t len);
/* Copy s into out (cap >= 3 * len suffices), each byte that does not
 * belong to a valid character replaced by U+FFFD.  Returns the length. */
size_t	 proto_utf8_repair(const char *s, size_t len, char *out, size_t cap);

/* path.c */
/*
 * The socket a client should use, into buf: $MISTRALD_SOCKET if set, else
 * the per-user socket ($XDG_RUNTIME_DIR/mistrald/mistrald.sock, or
 * $XDG_STATE_HOME/mistrald/mistrald.sock, ~/.local/state/mistrald/
 * mistrald.sock without XDG_RUNTIME_DIR) if it exists,
 * else the system one.  Returns 0 or -ENAMETOOLONG (over sun_path).
 */
int	 proto_socket_path(char *buf, size_t cap);
/* The per-user path alone (what a daemon run by hand binds). */
int	 proto_socket_user(char *buf, size_t cap);

#endif /* PROTOCOL_H */
