/*
 * client.h: the mistral client's internal interfaces, as a table of
 * contents: shared state, then each file's functions under its name.
 *
 * The client is thin: it speaks proto/protocol.h over a blocking Unix
 * socket (poll-based, one request in flight plus an optional cancel) and
 * formats what comes back.  It never loads a model.
 */
#ifndef CLIENT_H
#define CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

#include "protocol.h"

/* Exit statuses (mistral(1), EXIT STATUS). */
#define CLIENT_EXIT_OK		0
#define CLIENT_EXIT_DAEMON	1	/* the daemon reported an error */
#define CLIENT_EXIT_USAGE	2
#define CLIENT_EXIT_UNREACHABLE	3	/* cannot reach, or lost, the daemon */
#define CLIENT_EXIT_INTERRUPTED	130

struct conn;

/* Process-wide settings, filled by main() from the global options. */
struct client {
	char		 socket[108];
	bool		 json;		/* --json */
	bool		 quiet;		/* -q */
	bool		 tty_in;	/* stdin is a terminal */
	bool		 tty_out;	/* stdout is a terminal */
	bool		 tty_err;	/* stderr is a terminal */
	bool		 color;		/* decorate stdout/stderr */
	struct conn	*conn;		/* opened lazily by client_conn() */
};
extern struct client client;

/* The outcome of one call (conn_call). */
struct call {
	uint32_t		 msgid;
	const msgpack_object	*result;	/* valid until the next call */
	int			 code;		/* daemon error code, or 0 */
	char			 message[512];	/* daemon or local error */
};

/* Notification callback: a notification about the call in progress. */
typedef void conn_notify_cb(const struct proto_msg *m, void *arg);

/* A list of sampling parameters from --set or /set. */
struct params {
	struct param {
		char		 key[32];
		int		 type;		/* PARAM_* */
		double		 d;
		int64_t		 i;
		uint64_t	 u;
		char		*s;		/* stop: one string */
		bool		 clear;		/* send nil */
	}		*v;
	size_t		 n;
};

/* Decoded "usage" and the rest of a turn-map. */
struct turn_result {
	char		 finish[16];
	uint64_t	 prompt_tokens;
	uint64_t	 completion_tokens;
	uint64_t	 prefill_ms;
	uint64_t	 decode_ms;
	uint64_t	 evicted;
	char		 mode[16];
	bool		 rebuilt;
};

/* conn.c */
int	 conn_open(const char *path, struct conn **out, char *cause,
	     size_t cap);
void	 conn_close(struct conn *c);
bool	 conn_alive(const struct conn *c);
/* Start a request: returns the packer to pack nargs key/value pairs. */
msgpack_packer *conn_request(struct conn *c, const char *method,
	     uint32_t nargs);
/*
 * Send the request begun by conn_request() and wait for its response.
 * Notifications for it go to cb (if not NULL).  SIGINT during the wait:
 * with cb set, a "cancel" is sent once and the wait goes on (a second
 * SIGINT gives up); without, the wait stops at once.  Returns one of the
 * CLIENT_EXIT_* values; call->result is set on CLIENT_EXIT_OK.
 */
int	 conn_call(struct conn *c, struct call *call, conn_notify_cb *cb,
	     void *arg);
/* Was SIGINT received (and not yet cleared)? */
bool	 conn_interrupted(void);
void	 conn_clear_interrupt(void);
void	 conn_signals(void);

/* mistral.c */
/* The open connection (after hello), or NULL after printing the reason;
 * *status is then CLIENT_EXIT_UNREACHABLE (or DAEMON for a refusal). */
struct conn *client_conn(int *status);
/* Report a failed call on stderr; returns status unchanged. */
int	 client_fail(int status, const struct call *call);
void	 client_error(const char *fmt, ...)
	     __attribute__((format(printf, 1, 2)));
void	 client_info(const char *fmt, ...)
	     __attribute__((format(printf, 1, 2)));
int	 client_usage_error(const char *fmt, ...)
	     __attribute__((format(printf, 1, 2)));

/* util.c */
/* Map field accessors over result maps: a default when absent. */
const char *obj_str(const msgpack_object *map, const char *key,
	     char *buf, size_t cap);
int64_t	 obj_int(const msgpack_object *map, const char *key, int64_t def);
double	 obj_double(const msgpack_object *map, const char *key, double def);
bool	 obj_bool(const msgpack_object *map, const char *key, bool def);
const msgpack_object *obj_get(const msgpack_object *map, const char *key);
/* Parse KEY=VALUE (or KEY and VALUE apart): 0, or -1 after a message. */
int	 params_add(struct params *p, const char *key, const char *value);
int	 params_add_kv(struct params *p, const char *kv);
void	 params_free(struct params *p);
/* Pack as a map (the "params" argument). */
void	 params_pack(const struct params *p, msgpack_packer *pk);
/* Read all of fp (up to max bytes) into a NUL-terminated buffer. */
char	*read_all(FILE *fp, size_t max, size_t *len);
/* Human "2024-05-01 12:30" (local time) from unix seconds. */
const char *fmt_time(int64_t t, char *buf, size_t cap);
const char *fmt_bytes(uint64_t n, char *buf, size_t cap);
/* Colour escapes, or "" when not decorating. */
const char *c_dim(void);
const char *c_bold(void);
const char *c_off(void);
/* Write s with control characters made visible (for one-line cells). */
void	 put_escaped(FILE *fp, const char *s, size_t len);
/* Write model or user text: as it is, except that on a terminal the
 * control characters (C0 but newline and tab, DEL, C1) become U+FFFD so
 * that text cannot drive the terminal. */
void	 put_text(FILE *fp, const char *s, size_t len);
/* Write a whole file atomically (temporary, fsync, rename). */
int	 write_file_atomic(const char *path, const char *data, size_t len);

/* json.c */
/* Write o as JSON (one line unless pretty). */
void	 json_write(FILE *fp, const msgpack_object *o, bool pretty);
/* Parse JSON text and pack it; returns 0 or -1 with a message in err. */
int	 json_pack(const char *text, size_t len, msgpack_packer *pk,
	     char *err, size_t cap);

/* turn.c */
struct turn {
	const char		*method;	/* "chat" or "generate" */
	const char		*session;	/* NULL: one-off generate */
	const char		*text;		/* message or prompt */
	size_t			 len;
	const struct params	*params;	/* per-request, may be NULL */
	bool			 stream;	/* print tokens as they come */
};
/* Run a turn, printing the reply to stdout.  Returns CLIENT_EXIT_*. */
int	 turn_run(const struct turn *t, struct turn_result *tr);
/* The one-line notice after a turn (cancelled, length, evicted...). */
void	 turn_notice(const struct turn_result *tr);

/* cmd-session.c */
int	 cmd_sessions(int argc, char **argv);
int	 cmd_show(int argc, char **argv);
int	 cmd_new(int argc, char **argv);
int	 cmd_rm(int argc, char **argv);
int	 cmd_rename(int argc, char **argv);
int	 cmd_fork(int argc, char **argv);
int	 cmd_export(int argc, char **argv);
int	 cmd_import(int argc, char **argv);
/* Shared with the chat's slash commands. */
int	 session_list_print(void);
void	 session_info_print(const msgpack_object *info);
void	 session_messages_print(const msgpack_object *messages);
int	 session_export_to(const char *session, const char *file);

/* cmd-send.c */
int	 cmd_send(int argc, char **argv);
int	 cmd_generate(int argc, char **argv);
int	 cmd_status(int argc, char **argv);
int	 cmd_tokenize(int argc, char **argv);

/* cmd-chat.c */
int	 cmd_chat(int argc, char **argv);

#endif /* CLIENT_H */
